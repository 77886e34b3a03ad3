//! What the async drivers check before a descriptor becomes a pipe transport (asyncio's
//! `connect_read_pipe` / `connect_write_pipe`, spec §13), as the poll loop does.

use std::os::fd::AsFd;

use rustix::fs::FileType;

use crate::Error;

/// Refuses what a loop cannot wait on (regular files, directories, block devices), then
/// makes `fd` non-blocking (shared with whoever else holds a duplicate of the open file
/// description, as in asyncio). Pipes and FIFOs, sockets and character devices pass; a
/// character device epoll refuses (`/dev/null`) fails later, when the driver registers
/// it.
///
/// ```
/// use aioport_async_kit::{Error, pipe::prepare};
/// let (reader, _writer) = std::io::pipe()?;
/// prepare(&reader)?;
/// let file = std::fs::File::open("Cargo.toml")?;
/// assert!(matches!(prepare(&file), Err(Error::NotAPipe { kind: "a regular file" })));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
///
/// [`Error::NotAPipe`] for a descriptor of the wrong kind; [`Error::Io`] when `fstat` or
/// making it non-blocking fails.
pub fn prepare(fd: impl AsFd) -> Result<(), Error> {
    let stat = rustix::fs::fstat(&fd).map_err(std::io::Error::from)?;
    let kind = match FileType::from_raw_mode(stat.st_mode) {
        FileType::Fifo | FileType::Socket | FileType::CharacterDevice => None,
        FileType::RegularFile => Some("a regular file"),
        FileType::Directory => Some("a directory"),
        FileType::BlockDevice => Some("a block device"),
        FileType::Symlink => Some("a symbolic link"),
        _ => Some("an unknown kind of file"),
    };
    if let Some(kind) = kind {
        return Err(Error::NotAPipe { kind });
    }
    rustix::io::ioctl_fionbio(&fd, true).map_err(std::io::Error::from)?;
    Ok(())
}
