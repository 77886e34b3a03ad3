//! The socket and the recording protocol of the stream runner.

use std::cell::{Cell, RefCell};
use std::io::{self, ErrorKind, IoSlice};
use std::rc::Rc;

use crate::testing::Event;
use crate::{CallbackResult, ConnectionError, Ctx, Handle, Io, Protocol};

/// The bytes of the shared pattern from offset `from`.
pub(super) fn pattern(from: u64, n: usize) -> Vec<u8> {
    (from..from + n as u64).map(|i| (i % 251) as u8).collect()
}

/// The scripted socket of the model: accepts up to a granted budget; the peer's bytes,
/// EOF and reset. Sent and received bytes follow the pattern `i % 251`, checked here.
#[derive(Debug, Default)]
pub(super) struct BudgetIo {
    pub(super) budget: usize,
    pub(super) sent: u64,
    pub(super) peer: u64,
    pub(super) peer_read: u64,
    pub(super) peer_eof: bool,
    pub(super) reset: bool,
    pub(super) shutdown: bool,
    pub(super) closed: bool,
    /// At most this many more bytes may be read (a buffered run reads one model
    /// `Readable` in several `on_readable` calls).
    pub(super) recv_cap: Option<usize>,
}

impl BudgetIo {
    pub(super) fn take_sent(&mut self, bytes: impl Iterator<Item = u8>) {
        for b in bytes {
            assert_eq!(b, (self.sent % 251) as u8, "byte {} sent out of order", self.sent);
            self.sent += 1;
        }
    }
}

impl Io for BudgetIo {
    fn try_send(&mut self, _: Handle, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        if self.reset {
            return Err(ErrorKind::ConnectionReset.into());
        }
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        let n = total.min(self.budget);
        if n == 0 {
            return Err(ErrorKind::WouldBlock.into());
        }
        self.take_sent(bufs.iter().flat_map(|b| b.iter().copied()).take(n));
        self.budget -= n;
        Ok(n)
    }

    fn try_recv(&mut self, _: Handle, buf: &mut [u8]) -> io::Result<usize> {
        if self.reset {
            return Err(ErrorKind::ConnectionReset.into());
        }
        let avail = (self.peer - self.peer_read) as usize;
        if avail == 0 {
            return if self.peer_eof { Ok(0) } else { Err(ErrorKind::WouldBlock.into()) };
        }
        let n = avail.min(buf.len()).min(self.recv_cap.unwrap_or(usize::MAX));
        if n == 0 {
            return Err(ErrorKind::WouldBlock.into());
        }
        buf[..n].copy_from_slice(&pattern(self.peer_read, n));
        self.peer_read += n as u64;
        if let Some(cap) = &mut self.recv_cap {
            *cap -= n;
        }
        Ok(n)
    }

    fn shutdown_write(&mut self, _: Handle) -> io::Result<()> {
        assert!(!self.shutdown, "Io::shutdown_write twice");
        self.shutdown = true;
        Ok(())
    }

    fn close(&mut self, _: Handle) {
        assert!(!self.closed, "Io::close twice");
        self.closed = true;
    }
}

/// What every recorder of one run shares.
#[derive(Debug, Default)]
pub(super) struct Shared {
    pub(super) log: RefCell<Vec<Event>>,
    pub(super) keep_open: Cell<bool>,
    pub(super) received: Cell<u64>,
    /// `get_buffer` sizes, used in turn.
    pub(super) sizes: RefCell<Vec<usize>>,
    pub(super) next_size: Cell<usize>,
}

/// Records callbacks (data as lengths, checked against the pattern) into the shared log;
/// answers `eof_received` as the shared flag says. A buffered recorder hands out buffers
/// of the shared sizes in turn.
pub(super) struct Recorder {
    pub(super) shared: Rc<Shared>,
    /// `Some` for a buffered protocol: the memory `get_buffer` lends.
    pub(super) buf: Option<Vec<u8>>,
}

impl Recorder {
    fn push(&self, e: Event) -> CallbackResult {
        self.shared.log.borrow_mut().push(e);
        Ok(())
    }

    fn check(&self, data: &[u8]) {
        let r = &self.shared.received;
        for &b in data {
            assert_eq!(b, (r.get() % 251) as u8, "received byte {} out of order", r.get());
            r.set(r.get() + 1);
        }
    }
}

impl Protocol for Recorder {
    fn connection_made(&mut self, _: &mut Ctx<'_>) -> CallbackResult {
        self.push(Event::Made)
    }
    fn data_received(&mut self, _: &mut Ctx<'_>, data: &[u8]) -> CallbackResult {
        self.check(data);
        self.push(Event::DataLen(data.len()))
    }
    fn get_buffer(&mut self, _sizehint: usize) -> CallbackResult<Option<&mut [u8]>> {
        let Some(buf) = self.buf.as_mut() else { return Ok(None) };
        let sizes = self.shared.sizes.borrow();
        let i = self.shared.next_size.get();
        self.shared.next_size.set(i.wrapping_add(1));
        let n = sizes.get(i % sizes.len().max(1)).copied().unwrap_or(1).max(1);
        if buf.len() < n {
            buf.resize(n, 0);
        }
        Ok(Some(&mut buf[..n]))
    }
    fn buffer_updated(&mut self, _: &mut Ctx<'_>, n: usize) -> CallbackResult {
        let data = std::mem::take(&mut self.buf).unwrap_or_default();
        self.check(&data[..n]);
        self.buf = Some(data);
        self.push(Event::DataLen(n))
    }
    fn eof_received(&mut self, _: &mut Ctx<'_>) -> CallbackResult<bool> {
        self.push(Event::Eof)?;
        Ok(self.shared.keep_open.get())
    }
    fn pause_writing(&mut self, _: &mut Ctx<'_>) -> CallbackResult {
        self.push(Event::Pause)
    }
    fn resume_writing(&mut self, _: &mut Ctx<'_>) -> CallbackResult {
        self.push(Event::Resume)
    }
    fn connection_lost(&mut self, _: &mut Ctx<'_>, e: Option<ConnectionError>) -> CallbackResult {
        self.push(Event::Lost(e))
    }
}
