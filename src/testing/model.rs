//! Reference models: [`StreamModel`] here, [`DatagramModel`] for datagram endpoints,
//! [`SubprocessModel`] for subprocess transports.
//!
//! A reference model of one stream transport's documented semantics (asyncio's, with
//! DESIGN.md §5's decisions), small and obviously correct, and sharing no code with the
//! implementation: property tests and fuzz targets run the same operations on both and
//! compare.
//!
//! The world it models is the one [`ModelOp`] describes: one transport whose protocol
//! records callbacks and answers `eof_received` as told; a socket that accepts bytes up to
//! a budget the test grants; a peer that sends bytes, EOF, or resets. After every
//! operation the loop dispatches until quiescent, and the model returns the callbacks that
//! produced, in order.

mod datagram;
mod subprocess;

pub use self::datagram::{
    AddrArg, DatagramEvent, DatagramModel, DatagramOp, DatagramOutcome, DatagramState, Sent,
};
pub use self::subprocess::{
    SubprocessEvent, SubprocessModel, SubprocessOp, SubprocessOutcome, SubprocessState,
};
use super::Event;
use crate::{ConnectionError, HandleError, WriteError};

/// The size of one read (the registry's loop-wide buffer).
pub const MODEL_READ_SIZE: usize = 256 * 1024;

/// One operation on the modelled world.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelOp {
    /// The user writes `n` bytes.
    Write(usize),
    /// `write_eof()`.
    WriteEof,
    /// `close()`.
    Close,
    /// `abort()`.
    Abort,
    /// `pause_reading()`.
    PauseReading,
    /// `resume_reading()`.
    ResumeReading,
    /// `set_write_buffer_limits(high, low)`.
    SetLimits(Option<usize>, Option<usize>),
    /// `set_protocol(..)` with a fresh recording protocol (same transcript).
    SwapProtocol,
    /// The socket will accept `n` more bytes.
    Grant(usize),
    /// The driver reports the socket writable.
    Writable,
    /// The peer sends `n` bytes.
    PeerSend(usize),
    /// The peer shuts down its write side.
    PeerEof,
    /// The peer resets the connection.
    PeerReset,
    /// The driver reports the socket readable.
    Readable,
    /// The protocol's answer to the next `eof_received`: keep open?
    KeepOpen(bool),
}

/// What one operation produced: the callbacks, and the result of a write.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ModelOutcome {
    /// Callbacks delivered, in order.
    pub events: Vec<Event>,
    /// For `Write`: what `write` returned.
    pub write: Option<Result<(), WriteError>>,
}

/// The observable state after an operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelState {
    /// `write_buffer_size()` (0 once the transport is gone).
    pub write_buffer_size: usize,
    /// `is_closing()` (true once gone).
    pub is_closing: bool,
    /// `is_writing_paused()` (false once gone).
    pub is_writing_paused: bool,
    /// Read interest.
    pub wants_read: bool,
    /// Write interest.
    pub wants_write: bool,
    /// Bytes the socket accepted.
    pub sent: u64,
    /// The write side was shut down.
    pub shutdown: bool,
    /// The socket was closed.
    pub closed: bool,
}

/// The flow-control rule both models state: strictly above high pauses, at most low
/// resumes; the protocol's view kept apart from the state, with a pause it was not told
/// about while it believed it could write owed as a whole episode.
#[derive(Debug, Clone)]
struct FlowRule {
    high: usize,
    low: usize,
    paused: bool,
    told_paused: bool,
    owed_pause: bool,
    frozen: bool,
}

impl FlowRule {
    fn new() -> Self {
        FlowRule {
            high: 64 * 1024,
            low: 16 * 1024,
            paused: false,
            told_paused: false,
            owed_pause: false,
            frozen: false,
        }
    }

    /// asyncio's derivation; refused (no change) when high < low.
    fn set_limits(&mut self, high: Option<usize>, low: Option<usize>, queued: usize) {
        let (h, l) = match (high, low) {
            (None, None) => (64 * 1024, 16 * 1024),
            (Some(h), None) => (h, h / 4),
            (None, Some(l)) => (l.saturating_mul(4), l),
            (Some(h), Some(l)) => (h, l),
        };
        if h >= l {
            (self.high, self.low) = (h, l);
            self.edges(queued);
        }
    }

    fn edges(&mut self, queued: usize) {
        if self.frozen {
            return;
        }
        if !self.paused && queued > self.high {
            self.paused = true;
            if !self.told_paused {
                self.owed_pause = true;
            }
        } else if self.paused && queued <= self.low {
            self.paused = false;
        }
    }

    /// A new protocol knows nothing: if paused, it is told first.
    fn reset_view(&mut self) {
        self.told_paused = false;
        self.owed_pause = false;
    }

    /// The next `pause_writing` / `resume_writing` the protocol is owed.
    fn next_edge(&mut self) -> Option<Event> {
        if self.told_paused != self.paused {
            self.told_paused = self.paused;
            if self.paused {
                self.owed_pause = false;
            }
            Some(if self.paused { Event::Pause } else { Event::Resume })
        } else if self.owed_pause {
            // A whole episode happened unseen: the pause, then (next turn) the resume.
            self.owed_pause = false;
            self.told_paused = true;
            Some(Event::Pause)
        } else {
            None
        }
    }
}

/// The reference model. See the module docs.
#[derive(Debug, Clone)]
pub struct StreamModel {
    flow: FlowRule,
    queued: usize,
    budget: usize,
    sent: u64,
    // Lifecycle.
    close_requested: bool,
    eof_requested: bool,
    shutdown: bool,
    lost: bool,
    gone: bool,
    lost_reason: Option<ConnectionError>,
    lost_pending: bool,
    // Reading.
    read_paused: bool,
    peer_bytes: usize,
    peer_eof: bool,
    reset: bool,
    eof_seen: bool,
    eof_pending: bool,
    keep_open: bool,
}

impl StreamModel {
    /// A transport with the default limits whose `connection_made` was delivered (the
    /// model's first outcome), over a socket with no budget.
    pub fn new() -> (Self, ModelOutcome) {
        let m = StreamModel {
            flow: FlowRule::new(),
            queued: 0,
            budget: 0,
            sent: 0,
            close_requested: false,
            eof_requested: false,
            shutdown: false,
            lost: false,
            gone: false,
            lost_reason: None,
            lost_pending: false,
            read_paused: false,
            peer_bytes: 0,
            peer_eof: false,
            reset: false,
            eof_seen: false,
            eof_pending: false,
            keep_open: false,
        };
        (m, ModelOutcome { events: vec![Event::Made], write: None })
    }

    /// Applies one operation; returns what it produced.
    pub fn apply(&mut self, op: &ModelOp) -> ModelOutcome {
        let mut out = ModelOutcome::default();
        match *op {
            ModelOp::Write(n) => out.write = Some(self.write(n)),
            ModelOp::WriteEof if !self.gone && !self.closing() && !self.eof_requested => {
                self.eof_requested = true;
                if self.queued == 0 {
                    self.shutdown = true;
                }
            }
            ModelOp::Close if !self.gone && !self.close_requested && !self.lost => {
                self.close_requested = true;
                if self.queued == 0 {
                    self.lose(None);
                }
            }
            ModelOp::Abort if !self.gone => {
                self.close_requested = true;
                self.lose(None);
            }
            ModelOp::PauseReading if !self.gone && !self.closing() => self.read_paused = true,
            ModelOp::ResumeReading if !self.gone && !self.closing() => self.read_paused = false,
            ModelOp::SetLimits(high, low) if !self.gone => {
                self.flow.set_limits(high, low, self.queued);
            }
            ModelOp::SwapProtocol if !self.gone => self.flow.reset_view(),
            ModelOp::Grant(n) => self.budget += n,
            ModelOp::Writable if !self.gone && !self.lost && self.queued > 0 => self.flush(),
            ModelOp::PeerSend(n) => self.peer_bytes += n,
            ModelOp::PeerEof => self.peer_eof = true,
            ModelOp::PeerReset => self.reset = true,
            ModelOp::Readable if !self.gone => {
                // What ranks above data is delivered before the read.
                self.deliver(&mut out.events);
                if self.wants_read() {
                    self.read(&mut out.events);
                }
            }
            ModelOp::KeepOpen(k) => self.keep_open = k,
            _ => {}
        }
        self.deliver(&mut out.events);
        out
    }

    /// The observable state.
    pub fn state(&self) -> ModelState {
        ModelState {
            write_buffer_size: if self.gone { 0 } else { self.queued },
            is_closing: self.gone || self.closing(),
            is_writing_paused: !self.gone && self.flow.paused,
            wants_read: !self.gone && self.wants_read(),
            wants_write: !self.gone && !self.lost && self.queued > 0,
            sent: self.sent,
            shutdown: self.shutdown,
            closed: self.lost,
        }
    }

    fn closing(&self) -> bool {
        self.close_requested || self.lost
    }

    fn wants_read(&self) -> bool {
        !self.read_paused && !self.closing() && !self.eof_seen
    }

    fn write(&mut self, n: usize) -> Result<(), WriteError> {
        if self.gone {
            return Err(WriteError::Handle(HandleError::Stale));
        }
        if self.close_requested {
            return Err(WriteError::Closing);
        }
        if self.lost {
            return Err(WriteError::Closed);
        }
        if self.eof_requested {
            return Err(WriteError::AfterEof);
        }
        if n == 0 {
            return Ok(());
        }
        let mut rest = n;
        if self.queued == 0 {
            if self.reset {
                self.lose(Some(std::io::ErrorKind::ConnectionReset.into()));
                return Ok(());
            }
            let now = rest.min(self.budget);
            self.send(now);
            rest -= now;
        }
        self.queued += rest;
        self.edges();
        Ok(())
    }

    fn send(&mut self, n: usize) {
        self.budget -= n;
        self.sent += n as u64;
    }

    fn flush(&mut self) {
        if self.reset {
            return self.lose(Some(std::io::ErrorKind::ConnectionReset.into()));
        }
        let n = self.queued.min(self.budget);
        self.send(n);
        self.queued -= n;
        self.edges();
        if self.queued == 0 {
            if self.close_requested {
                self.lose(None);
            } else if self.eof_requested {
                self.shutdown = true;
            }
        }
    }

    fn read(&mut self, events: &mut Vec<Event>) {
        if self.reset {
            return self.lose(Some(std::io::ErrorKind::ConnectionReset.into()));
        }
        if self.peer_bytes > 0 {
            let n = self.peer_bytes.min(MODEL_READ_SIZE);
            self.peer_bytes -= n;
            events.push(Event::DataLen(n));
        } else if self.peer_eof {
            self.eof_seen = true;
            self.eof_pending = true;
        }
    }

    fn edges(&mut self) {
        self.flow.edges(self.queued);
    }

    fn lose(&mut self, reason: Option<ConnectionError>) {
        if self.lost {
            return;
        }
        self.flow.frozen = true;
        self.queued = 0;
        self.lost = true;
        self.lost_reason = reason;
        self.lost_pending = true;
    }

    /// Delivers callbacks until quiescent, by the priority table: flow edges, data, EOF,
    /// connection_lost.
    fn deliver(&mut self, events: &mut Vec<Event>) {
        loop {
            if let Some(edge) = self.flow.next_edge() {
                events.push(edge);
            } else if self.eof_pending && !self.closing() && !self.read_paused {
                self.eof_pending = false;
                events.push(Event::Eof);
                if !self.keep_open {
                    self.close_requested = true;
                    if self.queued == 0 {
                        self.lose(None);
                    }
                }
            } else if self.lost_pending {
                self.lost_pending = false;
                self.gone = true;
                events.push(Event::Lost(self.lost_reason.take()));
            } else {
                return;
            }
        }
    }
}
