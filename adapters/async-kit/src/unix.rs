//! [`BoundFile`]: the socket file a Unix listener created, removed when the server closes
//! (asyncio 3.13's `cleanup_socket`) unless the file was replaced meanwhile — as the poll
//! loop does.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The socket file a Unix listener created, identified by device and inode so that
/// removing it never removes a file someone else put at the path since. Removed when
/// dropped: a driver keeps it beside the listener, so closing the server or dropping the
/// loop removes it.
///
/// ```
/// use aioport_async_kit::unix::BoundFile;
/// let dir = std::env::temp_dir().join(format!("aioport-kit-doc-{}", std::process::id()));
/// std::fs::create_dir_all(&dir)?;
/// let path = dir.join("s.sock");
/// let listener = std::os::unix::net::UnixListener::bind(&path)?;
/// let file = BoundFile::of(&path).expect("the file was just made");
/// drop(listener);
/// assert!(path.exists(), "closing the socket leaves the file");
/// drop(file);
/// assert!(!path.exists(), "dropping the BoundFile removes it");
/// # std::fs::remove_dir(&dir)?;
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct BoundFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl BoundFile {
    /// The file now at `path` (call right after `bind`); `None` when there is none (an
    /// abstract name, or the file is already gone).
    pub fn of(path: &Path) -> Option<BoundFile> {
        let m = std::fs::symlink_metadata(path).ok()?;
        Some(BoundFile { path: path.to_owned(), dev: m.dev(), ino: m.ino() })
    }

    /// The path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for BoundFile {
    /// Removes the file if it is still the one bound (same device and inode).
    fn drop(&mut self) {
        if std::fs::symlink_metadata(&self.path)
            .is_ok_and(|m| m.dev() == self.dev && m.ino() == self.ino)
        {
            // Nobody to tell if this fails (permissions changed): the file stays, as
            // asyncio leaves it.
            let _ = std::fs::remove_file(&self.path);
        }
    }
}
