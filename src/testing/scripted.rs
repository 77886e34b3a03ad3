//! `Scripted`: one transport over a socket whose every answer the test dictates — the
//! shape of CPython's mocked-socket tests.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{self, ErrorKind, IoSlice};
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::transcript::{Checker, Event, Recorder, SharedRecorder, record};
use crate::stream::{SendfileDone, SendfileSource};
use crate::{Ctx, Extra, Handle, Interest, Io, Protocol, Registry, StreamHandle, StreamTransport};

/// What the scripted socket answers to the next `try_send`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Send {
    Accept(usize),
    WouldBlock,
    Fail(ErrorKind),
}

/// What the scripted socket answers to the next `try_recv`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Recv {
    Data(Vec<u8>),
    Eof,
    Fail(ErrorKind),
}

#[derive(Debug)]
struct ScriptIo {
    sends: VecDeque<Send>,
    /// When the script is exhausted: accept everything (a fresh socket) or nothing.
    accept_rest: bool,
    recvs: VecDeque<Recv>,
    sent: Vec<u8>,
    send_calls: usize,
    shutdown: bool,
    closed: bool,
    /// `Io::sendfile_supported`: the socket does zero-copy sendfile.
    zero_copy: bool,
    sendfile_calls: usize,
}

impl Io for ScriptIo {
    fn sendfile_supported(&mut self, _: Handle) -> bool {
        self.zero_copy
    }

    /// A zero-copy send answers from the same script as `try_send`; the bytes "sent"
    /// are read from the file, as the kernel would.
    fn try_sendfile(
        &mut self,
        _: Handle,
        file: &dyn SendfileSource,
        offset: u64,
        count: usize,
    ) -> io::Result<usize> {
        self.sendfile_calls += 1;
        let step = self.sends.pop_front().unwrap_or(if self.accept_rest {
            Send::Accept(usize::MAX)
        } else {
            Send::WouldBlock
        });
        let n = match step {
            Send::Accept(n) => n.min(count),
            Send::WouldBlock => return Err(ErrorKind::WouldBlock.into()),
            Send::Fail(kind) => return Err(kind.into()),
        };
        let mut buf = vec![0; n.min(1 << 20)];
        let n = file.read_at(offset, &mut buf)?;
        self.sent.extend_from_slice(&buf[..n]);
        Ok(n)
    }

    fn try_send(&mut self, _: Handle, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.send_calls += 1;
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        let step = self.sends.pop_front().unwrap_or(if self.accept_rest {
            Send::Accept(usize::MAX)
        } else {
            Send::WouldBlock
        });
        let n = match step {
            Send::Accept(n) => n.min(total),
            Send::WouldBlock => return Err(ErrorKind::WouldBlock.into()),
            Send::Fail(kind) => return Err(kind.into()),
        };
        let mut left = n;
        for b in bufs {
            let take = left.min(b.len());
            self.sent.extend_from_slice(&b[..take]);
            left -= take;
        }
        Ok(n)
    }

    fn try_recv(&mut self, _: Handle, buf: &mut [u8]) -> io::Result<usize> {
        match self.recvs.pop_front() {
            None => Err(ErrorKind::WouldBlock.into()),
            Some(Recv::Eof) => Ok(0),
            Some(Recv::Fail(kind)) => Err(kind.into()),
            Some(Recv::Data(mut data)) => {
                let n = data.len().min(buf.len());
                buf[..n].copy_from_slice(&data[..n]);
                if n < data.len() {
                    // A small buffer reads the rest next time, as a socket would.
                    self.recvs.push_front(Recv::Data(data.split_off(n)));
                }
                Ok(n)
            }
        }
    }

    fn shutdown_write(&mut self, _: Handle) -> io::Result<()> {
        self.shutdown = true;
        Ok(())
    }

    fn close(&mut self, _: Handle) {
        self.closed = true;
    }
}

/// One transport over a scripted socket: the test says what each `try_send` and
/// `try_recv` returns, reports readiness itself, and reads back the exact callbacks,
/// buffer size and interest after every step.
///
/// ```
/// use std::io::ErrorKind;
/// use std::time::Instant;
/// use aioport::{CallbackResult, Ctx, Interest, Protocol};
/// use aioport::testing::{Event, Scripted};
///
/// struct Greeter;
/// impl Protocol for Greeter {
///     fn connection_made(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
///         ctx.set_write_buffer_limits(ctx.stream(), Some(4), None)?;
///         ctx.write_slice(ctx.stream(), b"hello world")?;
///         Ok(())
///     }
/// }
///
/// // try_send accepts 3 bytes, then WouldBlock.
/// let mut s = Scripted::new_with(Instant::now(), Greeter, |s| {
///     s.send_accepts(3).send_would_block();
/// });
/// assert_eq!(s.events(), [Event::Made, Event::Pause]);
/// assert_eq!(s.sent(), b"hel");
/// assert_eq!(s.write_buffer_size(), 8);
/// assert_eq!(s.interest(), Interest { read: true, write: true });
///
/// // The socket drains; then the peer sends EOF.
/// s.send_accepts_all();
/// assert_eq!(s.writable(), [Event::Resume]);
/// s.recv_eof();
/// assert_eq!(s.readable(), [Event::Eof, Event::Lost(None)]);
/// assert!(s.is_closed());
/// ```
#[derive(Debug)]
pub struct Scripted {
    reg: Registry,
    io: ScriptIo,
    h: StreamHandle,
    now: Instant,
    rec: SharedRecorder,
    checker: Checker,
    seen: usize,
}

impl Scripted {
    /// A connected transport running `protocol` over a socket that accepts every send;
    /// `connection_made` is delivered (read it with [`events`](Self::events)).
    pub fn new(now: Instant, protocol: impl Protocol + 'static) -> Self {
        Self::new_with(now, protocol, |_| {})
    }

    /// Like [`new`](Self::new), but `script` sets up the socket's answers before
    /// `connection_made` runs (so the protocol's first writes meet them).
    pub fn new_with(
        now: Instant,
        protocol: impl Protocol + 'static,
        script: impl FnOnce(&mut Scripted),
    ) -> Self {
        let mut reg = Registry::new(now);
        let rec = Rc::new(RefCell::new(Recorder { keep_data: true, ..Recorder::default() }));
        record(&mut reg, &rec);
        let h = reg.insert_stream(Box::new(protocol), Extra::default());
        let io = ScriptIo {
            sends: VecDeque::new(),
            accept_rest: true,
            recvs: VecDeque::new(),
            sent: Vec::new(),
            send_calls: 0,
            shutdown: false,
            closed: false,
            zero_copy: false,
            sendfile_calls: 0,
        };
        let mut s = Scripted { reg, io, h, now, rec, checker: Checker::default(), seen: 0 };
        script(&mut s);
        s.reg.dispatch(now, &mut s.io);
        s.check();
        s
    }

    /// The transport's handle.
    pub fn handle(&self) -> StreamHandle {
        self.h
    }

    // ----------------------------------------------------------------------------------
    // The script
    // ----------------------------------------------------------------------------------

    /// The next `try_send` accepts at most `n` bytes.
    pub fn send_accepts(&mut self, n: usize) -> &mut Self {
        self.io.sends.push_back(Send::Accept(n));
        self
    }

    /// The next `try_send` fails with `WouldBlock`.
    pub fn send_would_block(&mut self) -> &mut Self {
        self.io.sends.push_back(Send::WouldBlock);
        self
    }

    /// The next `try_send` fails with `kind` (fatal unless `WouldBlock`/`Interrupted`).
    pub fn send_fails(&mut self, kind: ErrorKind) -> &mut Self {
        self.io.sends.push_back(Send::Fail(kind));
        self
    }

    /// Once the scripted sends are used up, every send is accepted whole (the default).
    pub fn send_accepts_all(&mut self) -> &mut Self {
        self.io.sends.clear();
        self.io.accept_rest = true;
        self
    }

    /// Whether the socket does zero-copy sendfile ([`Io::sendfile_supported`]; off by
    /// default, so a sendfile uses the fallback). Zero-copy sends answer from the same
    /// script as `try_send` and read what they send from the file.
    pub fn set_zero_copy(&mut self, on: bool) -> &mut Self {
        self.io.zero_copy = on;
        self
    }

    /// Once the scripted sends are used up, every send is refused with `WouldBlock`.
    pub fn send_refuses_all(&mut self) -> &mut Self {
        self.io.accept_rest = false;
        self
    }

    /// The peer sent `data`: the next `try_recv` returns it (in pieces if the read buffer
    /// is smaller).
    pub fn recv(&mut self, data: &[u8]) -> &mut Self {
        self.io.recvs.push_back(Recv::Data(data.to_vec()));
        self
    }

    /// The peer sent EOF: a `try_recv` returns 0.
    pub fn recv_eof(&mut self) -> &mut Self {
        self.io.recvs.push_back(Recv::Eof);
        self
    }

    /// A `try_recv` fails with `kind`.
    pub fn recv_fails(&mut self, kind: ErrorKind) -> &mut Self {
        self.io.recvs.push_back(Recv::Fail(kind));
        self
    }

    // ----------------------------------------------------------------------------------
    // Steps: each returns the callbacks it caused
    // ----------------------------------------------------------------------------------

    /// The driver reports the socket readable (one read). Ignored if the transport does not
    /// want to read (as a real driver would not report it).
    pub fn readable(&mut self) -> Vec<Event> {
        if self.interest().read {
            let _ = self.reg.on_readable(self.h.handle(), self.now, &mut self.io);
        }
        self.events()
    }

    /// The driver reports the socket writable (a flush). Ignored without write interest.
    pub fn writable(&mut self) -> Vec<Event> {
        if self.interest().write {
            let _ = self.reg.on_writable(self.h.handle(), self.now, &mut self.io);
        }
        self.events()
    }

    /// Runs user code with a [`Ctx`] (its own handle is [`handle`](Self::handle)), then
    /// dispatches; read the callbacks with [`events`](Self::events).
    pub fn enter<R>(&mut self, f: impl FnOnce(&mut Ctx<'_>, StreamHandle) -> R) -> R {
        let h = self.h;
        let r = self.reg.enter(self.now, &mut self.io, |ctx| f(ctx, h));
        self.check();
        r
    }

    /// Advances virtual time by `d` and fires what is due.
    pub fn advance(&mut self, d: Duration) -> Vec<Event> {
        self.now += d;
        self.reg.handle_timeout(self.now, &mut self.io);
        self.events()
    }

    /// Runs waiting `call_soon` closures.
    pub fn dispatch(&mut self) -> Vec<Event> {
        self.reg.dispatch(self.now, &mut self.io);
        self.events()
    }

    /// The callbacks delivered since the last call.
    pub fn events(&mut self) -> Vec<Event> {
        self.check();
        let rec = self.rec.borrow();
        let new = rec.log[self.seen..].iter().map(|(_, e)| e.clone()).collect();
        self.seen = rec.log.len();
        new
    }

    fn check(&mut self) {
        let rec = self.rec.borrow();
        if let Err((h, m)) = self.checker.check(&rec, |_, _| Ok(())) {
            panic!("invariant violated on {h:?}: {m}");
        }
    }

    // ----------------------------------------------------------------------------------
    // State after a step
    // ----------------------------------------------------------------------------------

    /// Everything the socket accepted so far.
    pub fn sent(&self) -> &[u8] {
        &self.io.sent
    }

    /// Takes what the socket accepted so far.
    pub fn take_sent(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.io.sent)
    }

    /// How many times `try_send` was called.
    pub fn send_calls(&self) -> usize {
        self.io.send_calls
    }

    /// The outcome of a sendfile started through [`enter`](Self::enter) that ended
    /// (one started by the protocol is in its transcript instead:
    /// [`Event::Sendfile`]).
    pub fn poll_sendfile_done(&mut self) -> Option<SendfileDone> {
        self.reg.poll_sendfile_done()
    }

    /// How many times `Io::try_sendfile` was called (zero-copy sends).
    pub fn sendfile_calls(&self) -> usize {
        self.io.sendfile_calls
    }

    /// The transport, read-only (`None` once removed after `connection_lost`).
    pub fn transport(&self) -> Option<&StreamTransport> {
        self.reg.transport(self.h.handle()).ok()
    }

    /// `write_buffer_size()` (0 once the transport is gone).
    pub fn write_buffer_size(&self) -> usize {
        self.transport().map_or(0, StreamTransport::write_buffer_size)
    }

    /// `is_writing_paused()`.
    pub fn is_writing_paused(&self) -> bool {
        self.transport().is_some_and(StreamTransport::is_writing_paused)
    }

    /// `is_closing()` (true once the transport is gone).
    pub fn is_closing(&self) -> bool {
        self.transport().is_none_or(StreamTransport::is_closing)
    }

    /// What the transport wants from the driver (nothing once it is gone).
    pub fn interest(&self) -> Interest {
        self.reg.interest(self.h.handle()).unwrap_or_default()
    }

    /// True once the write side was shut down (`Io::shutdown_write`).
    pub fn is_shutdown(&self) -> bool {
        self.io.shutdown
    }

    /// True once the socket was closed (`Io::close`).
    pub fn is_closed(&self) -> bool {
        self.io.closed
    }
}
