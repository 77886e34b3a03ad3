//! Zero-copy sendfile for every driver: the file type a driver's `Io::try_sendfile`
//! recognizes ([`FileSource`]) and the `sendfile(2)` call on a socket
//! ([`try_sendfile_fd`]). Readiness stays with each driver: a `WouldBlock` from
//! [`try_sendfile_fd`] means what it means after the driver's own `try_send`.

use std::any::Any;
use std::fs::File;
use std::io::{self, Seek, SeekFrom};
use std::os::fd::BorrowedFd;
use std::os::unix::fs::FileExt;

use aioport::stream::{SendfileError, SendfileSource};

/// A file to send with [`Ctx::sendfile`](aioport::Ctx::sendfile): zero-copy through
/// `sendfile(2)` to a TCP or Unix socket on the drivers that have it (the poll loop,
/// tokio, smol), read with `pread` for the fallback. The file position is never used or
/// moved.
///
/// ```
/// # fn main() -> std::io::Result<()> {
/// use aioport::stream::SendfileSource;
/// use aioport_async_kit::sendfile::FileSource;
///
/// let path = std::env::temp_dir().join(format!("aioport-kit-doc-{}", std::process::id()));
/// std::fs::write(&path, b"hello, file")?;
/// let source = FileSource::new(std::fs::File::open(&path)?);
/// let mut buf = [0; 4];
/// assert_eq!(source.read_at(7, &mut buf)?, 4);
/// assert_eq!(&buf, b"file");
/// std::fs::remove_file(&path)?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct FileSource {
    file: File,
}

impl FileSource {
    /// Wraps an open file (readable; its position does not matter).
    pub fn new(file: File) -> Self {
        FileSource { file }
    }

    /// The file.
    pub fn file(&self) -> &File {
        &self.file
    }
}

impl From<File> for FileSource {
    fn from(file: File) -> Self {
        FileSource::new(file)
    }
}

impl SendfileSource for FileSource {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        self.file.read_at(buf, offset)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// One `sendfile(2)` of up to `count` bytes of `file` from `offset` to the socket `fd`
/// (retried on `EINTR`): how many went out, `Ok(0)` at the end of the file. `file` must
/// be a [`FileSource`] (otherwise `Unsupported`); `WouldBlock` when the socket's buffer
/// is full.
///
/// # Errors
///
/// `Unsupported` for another [`SendfileSource`]; the system call's error otherwise.
pub fn try_sendfile_fd(
    fd: BorrowedFd<'_>,
    file: &dyn SendfileSource,
    offset: u64,
    count: usize,
) -> io::Result<usize> {
    let Some(source) = file.as_any().downcast_ref::<FileSource>() else {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "aioport: zero-copy sendfile needs an aioport_async_kit::sendfile::FileSource",
        ));
    };
    let mut off = offset;
    loop {
        match rustix::fs::sendfile(fd, &source.file, Some(&mut off), count) {
            Ok(n) => return Ok(n),
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// Leaves `file`'s position where asyncio's `loop.sendfile` does: at `offset` plus the
/// bytes sent when any were sent, unchanged otherwise. Shared by the drivers'
/// `Loop::sendfile`.
///
/// # Errors
///
/// The seek's.
pub fn seek_past_sent(
    file: &File,
    offset: u64,
    outcome: &Result<u64, SendfileError>,
) -> io::Result<()> {
    let sent = match outcome {
        Ok(n) => *n,
        Err(e) => e.sent(),
    };
    if sent > 0 {
        let mut f = file;
        f.seek(SeekFrom::Start(offset.saturating_add(sent)))?;
    }
    Ok(())
}
