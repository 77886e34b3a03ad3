//! `MemFile`: a file in memory for sendfile tests.

use std::any::Any;
use std::io;

use crate::stream::SendfileSource;

/// A file in memory to send with [`Ctx::sendfile`](crate::Ctx::sendfile) on the test
/// drivers: [`Scripted`](super::Scripted) reads zero-copy sends from it, and the fallback
/// reads it through [`SendfileSource::read_at`]. Reads from
/// [`fail_from`](Self::fail_from) on fail, to test a file that cannot be read.
///
/// ```
/// use aioport::stream::SendfileSource;
/// use aioport::testing::MemFile;
///
/// let f = MemFile::new(b"abcdef".to_vec()).fail_from(4);
/// let mut buf = [0; 8];
/// assert_eq!(f.read_at(1, &mut buf).unwrap(), 3); // stops before the bad part
/// assert_eq!(&buf[..3], b"bcd");
/// assert!(f.read_at(4, &mut buf).is_err());
/// assert_eq!(MemFile::new(b"ab".to_vec()).read_at(9, &mut buf).unwrap(), 0); // past the end
/// ```
#[derive(Debug, Clone)]
pub struct MemFile {
    data: Vec<u8>,
    fail_from: Option<u64>,
}

impl MemFile {
    /// A file holding `data`.
    pub fn new(data: Vec<u8>) -> Self {
        MemFile { data, fail_from: None }
    }

    /// Reads at or after `offset` fail with an I/O error (a bad sector, a truncated
    /// network file).
    #[must_use]
    pub fn fail_from(mut self, offset: u64) -> Self {
        self.fail_from = Some(offset);
        self
    }

    /// The file's bytes.
    pub fn data(&self) -> &[u8] {
        &self.data
    }
}

impl SendfileSource for MemFile {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let mut end = self.data.len() as u64;
        if let Some(bad) = self.fail_from {
            if offset >= bad {
                return Err(io::Error::other("MemFile: scripted read failure"));
            }
            end = end.min(bad);
        }
        if offset >= end {
            return Ok(0);
        }
        let start = offset as usize;
        let n = buf.len().min(end as usize - start);
        buf[..n].copy_from_slice(&self.data[start..start + n]);
        Ok(n)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
