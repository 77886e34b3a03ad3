//! The world of `registry_ops`: the driver's socket table, what the run knows about every
//! handle, and what the actors, closures and the driver share.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::io::{self, ErrorKind, IoSlice};
use std::rc::Rc;

use crate::{Extra, Handle, Io, Protocol, RequestId, TimerId, WriteBufferLimits};

/// The message of every deliberate panic: the panic hook stays silent for it, and the
/// loop error it becomes is expected.
pub(crate) const DELIBERATE_PANIC: &str = "aioport-fuzz: deliberate panic";
/// The message of every deliberate callback error.
pub(crate) const DELIBERATE_ERROR: &str = "aioport-fuzz: deliberate error";

pub(crate) fn pattern(from: u64, n: usize) -> Vec<u8> {
    (from..from + n as u64).map(|i| (i % 251) as u8).collect()
}

/// One socket of the driver (or the sink of a served transport).
#[derive(Debug, Default)]
pub(crate) struct Sock {
    pub(crate) budget: usize,
    pub(crate) sent: u64,
    /// Peer bytes made available to `try_recv` (a prefix of the peer's pattern stream).
    pub(crate) peer: u64,
    /// Peer bytes handed to the transport, by `try_recv` or `handle_received` / `feed_data`.
    pub(crate) peer_read: u64,
    pub(crate) peer_eof: bool,
    /// The transport was told about the peer's EOF (read 0, or an empty `handle_received`).
    pub(crate) eof_told: bool,
    pub(crate) reset: bool,
    pub(crate) shutdowns: u32,
    pub(crate) closes: u32,
    pub(crate) lie_send: bool,
    pub(crate) lie_recv: bool,
    /// `try_recv` lied: (buffer size, claimed).
    pub(crate) lied_recv: Option<(usize, usize)>,
}

/// The socket table, shared by the driver's `Io` and every served transport's sink: handles
/// are never reused, so one table keyed by handle serves both. Contract violations seen
/// from the socket side (bytes out of order, I/O after `Io::close`) are collected in
/// `violations`.
#[derive(Clone, Default)]
pub(crate) struct Sockets {
    pub(crate) map: Rc<RefCell<BTreeMap<Handle, Sock>>>,
    pub(crate) violations: Rc<RefCell<Vec<String>>>,
}

impl Sockets {
    pub(crate) fn with<R>(&self, h: Handle, f: impl FnOnce(&mut Sock) -> R) -> R {
        f(self.map.borrow_mut().entry(h).or_default())
    }

    fn violation(&self, what: String) {
        self.violations.borrow_mut().push(what);
    }
}

impl Io for Sockets {
    fn try_send(&mut self, h: Handle, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.with(h, |s| {
            let total: usize = bufs.iter().map(|b| b.len()).sum();
            if s.closes > 0 {
                self.violation(format!("{h:?}: Io::try_send after Io::close"));
            }
            if std::mem::take(&mut s.lie_send) {
                return Ok(total + 1);
            }
            if s.reset {
                return Err(ErrorKind::ConnectionReset.into());
            }
            let n = total.min(s.budget);
            if n == 0 {
                return Err(ErrorKind::WouldBlock.into());
            }
            let want = pattern(s.sent, n);
            if !bufs.iter().flat_map(|b| b.iter()).take(n).eq(want.iter()) {
                self.violation(format!(
                    "{h:?}: bytes {}..{} sent out of order",
                    s.sent,
                    s.sent + n as u64
                ));
            }
            s.sent += n as u64;
            s.budget -= n;
            Ok(n)
        })
    }

    fn try_recv(&mut self, h: Handle, buf: &mut [u8]) -> io::Result<usize> {
        self.with(h, |s| {
            if s.closes > 0 {
                self.violation(format!("{h:?}: Io::try_recv after Io::close"));
            }
            if std::mem::take(&mut s.lie_recv) {
                s.lied_recv = Some((buf.len(), buf.len() + 1));
                return Ok(buf.len() + 1);
            }
            if s.reset {
                return Err(ErrorKind::ConnectionReset.into());
            }
            let avail = s.peer.saturating_sub(s.peer_read) as usize;
            if avail == 0 {
                if s.peer_eof && !buf.is_empty() {
                    s.eof_told = true;
                    return Ok(0);
                }
                return Err(ErrorKind::WouldBlock.into());
            }
            let n = avail.min(buf.len());
            buf[..n].copy_from_slice(&pattern(s.peer_read, n));
            s.peer_read += n as u64;
            Ok(n)
        })
    }

    fn shutdown_write(&mut self, h: Handle) -> io::Result<()> {
        let (shutdowns, closes) = self.with(h, |s| {
            s.shutdowns += 1;
            (s.shutdowns, s.closes)
        });
        if shutdowns > 1 || closes > 0 {
            self.violation(format!("{h:?}: Io::shutdown_write #{shutdowns} after {closes} closes"));
        }
        Ok(())
    }

    fn close(&mut self, h: Handle) {
        self.with(h, |s| s.closes += 1);
    }
}

/// Which transport a handle names, as the run knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Socket,
    ReadPipe,
    WritePipe,
}

impl Kind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Socket => "stream",
            Kind::ReadPipe => "read pipe",
            Kind::WritePipe => "write pipe",
        }
    }
}

/// What the run knows about one handle.
#[derive(Debug, Clone)]
pub(crate) struct Known {
    pub(crate) h: Handle,
    pub(crate) kind: Kind,
    pub(crate) extra: Extra,
    /// The serving transport, for a served one.
    pub(crate) server: Option<Handle>,
    pub(crate) connecting: bool,
    /// `connection_lost` was traced, or its connect failed: every call must say stale.
    pub(crate) stale: bool,
    /// Its protocol panicked deliberately: stale once the loop is quiescent.
    pub(crate) poisoned: bool,
    pub(crate) connect_failed: bool,
    pub(crate) limits: WriteBufferLimits,
}

impl Known {
    pub(crate) fn new(h: Handle, kind: Kind, extra: Extra) -> Self {
        Known {
            h,
            kind,
            extra,
            server: None,
            connecting: false,
            stale: false,
            poisoned: false,
            connect_failed: false,
            limits: WriteBufferLimits::default(),
        }
    }
}

/// Something a protocol, a closure or user code does with a `Ctx`. Targets are selectors
/// into the list of known handles (see [`World::target`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Action {
    Write {
        t: u8,
        n: usize,
        via: u8,
    },
    WriteEof(u8),
    Close(u8),
    Abort(u8),
    PauseReading(u8),
    ResumeReading(u8),
    SetLimits(u8, Option<usize>, Option<usize>),
    HardLimit(u8, Option<usize>),
    SetProtocol {
        t: u8,
        buffered: bool,
    },
    Query(u8),
    WrongKind(u8),
    Connect,
    InsertServed,
    FeedData(u8, usize),
    FeedEof(u8),
    ServedWritable(u8),
    SetServedPending(u8, usize),
    ServedClosed(u8),
    ArmTimer(u64),
    CancelTimer,
    KeepOpen(bool),
    BufferMode(u8),
    Panic,
    Fail,
    /// Run the inner action in a `call_soon` closure.
    Soon(Box<Action>),
    /// Run the inner action in a `call_later` closure after this many ms.
    Later(u64, Box<Action>),
    /// Run the inner action in a `call_at(now + ms)` closure.
    At(u64, Box<Action>),
}

/// One callback an actor received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Heard {
    Made,
    Data(usize),
    Eof,
    Pause,
    Resume,
    Lost,
    Timeout,
    Wake,
    Request,
}

/// Everything the actors, closures and the driver share.
pub(crate) struct World {
    pub(crate) socks: Sockets,
    pub(crate) known: RefCell<Vec<Known>>,
    /// Actions each transport's protocol performs in its next callback.
    pub(crate) mail: RefCell<BTreeMap<Handle, VecDeque<Action>>>,
    /// Per actor: its handle and what it heard.
    pub(crate) heard: RefCell<Vec<(Handle, Vec<Heard>)>>,
    /// Data delivered per transport (the peer's pattern stream, checked in order).
    pub(crate) received: RefCell<BTreeMap<Handle, u64>>,
    /// Data written per transport (the pattern stream its socket must see in order).
    pub(crate) written: RefCell<BTreeMap<Handle, u64>>,
    pub(crate) in_callback: Cell<bool>,
    pub(crate) failures: RefCell<Vec<String>>,
    pub(crate) timers: RefCell<Vec<(TimerId, Rc<Cell<bool>>)>>,
    pub(crate) closures_run: Cell<u64>,
    pub(crate) deliberate_panics: Cell<u64>,
    /// Requests made from callbacks: id → requester.
    pub(crate) requests: RefCell<BTreeMap<RequestId, Handle>>,
    /// Handles of served transports created in the current callback, to register.
    pub(crate) new_served: RefCell<Vec<(Handle, Handle, Extra)>>,
    pub(crate) next_fd: Cell<i32>,
}

impl World {
    pub(crate) fn new() -> Rc<World> {
        Rc::new(World {
            socks: Sockets::default(),
            known: RefCell::default(),
            mail: RefCell::default(),
            heard: RefCell::default(),
            received: RefCell::default(),
            written: RefCell::default(),
            in_callback: Cell::new(false),
            failures: RefCell::default(),
            timers: RefCell::default(),
            closures_run: Cell::new(0),
            deliberate_panics: Cell::new(0),
            requests: RefCell::default(),
            new_served: RefCell::default(),
            next_fd: Cell::new(3),
        })
    }

    pub(crate) fn fail(&self, what: String) {
        self.failures.borrow_mut().push(what);
    }

    pub(crate) fn fd(&self) -> i32 {
        let fd = self.next_fd.get();
        self.next_fd.set(fd + 1);
        fd
    }

    /// The handle a selector names: 0xFF is a handle that never existed, anything else
    /// picks among every handle the run has seen (stale ones included).
    pub(crate) fn target(&self, t: u8) -> Option<Known> {
        let known = self.known.borrow();
        if t == 0xFF || known.is_empty() {
            return None;
        }
        Some(known[usize::from(t) % known.len()].clone())
    }

    /// A fresh actor whose first callback must come from `h` (if known).
    pub(crate) fn actor(self: &Rc<Self>, h: Option<Handle>, buffered: bool) -> Box<dyn Protocol> {
        let id = {
            let mut heard = self.heard.borrow_mut();
            heard.push((h.unwrap_or(NOWHERE), Vec::new()));
            heard.len() - 1
        };
        Box::new(super::actor::Actor {
            world: self.clone(),
            id,
            deadline: None,
            keep_open: false,
            buffer: buffered.then(|| vec![0; 64]),
            empty_buffer: false,
        })
    }
}

/// A handle that names nothing: the target of selector 0xFF.
pub(crate) const NOWHERE: Handle = Handle::from_raw(4000, 7);
/// The handle `Ctx::handle()` reports outside callbacks (closures, `enter`).
pub(crate) const NOWHERE_CTX: Handle = Handle::from_raw(u32::MAX, u32::MAX);
