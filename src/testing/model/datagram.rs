//! The datagram half of the reference model: one `DatagramTransport`'s documented
//! semantics (asyncio-spec §12 with DESIGN.md §5's decisions), written from the rules,
//! not from the implementation.
//!
//! The world: one endpoint, connected or not, whose protocol records callbacks; a socket
//! that accepts a granted number of datagrams (then `WouldBlock`) and can be told to fail
//! the next send; a peer whose datagrams, receive errors and oversized datagrams queue at
//! the socket. After every operation the loop dispatches until quiescent.
//!
//! Datagrams carry identities: the `n`th `sendto` call is datagram `n` (whether or not it
//! is accepted), the `n`th datagram from the peer is peer datagram `n`. The model reports
//! which datagrams left through the socket, which were reported through `error_received`
//! and which were dropped, so a runner can check that every accepted datagram is
//! accounted for exactly once.

use std::collections::VecDeque;
use std::io::ErrorKind;

use super::{Event, FlowRule, MODEL_READ_SIZE};
use crate::WriteError;

/// Bytes each queued datagram counts on top of its payload.
const OVERHEAD: usize = 8;

/// The address argument of a `sendto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddrArg {
    /// `None`.
    None,
    /// The connected peer's address (the remote of a connected endpoint; any address
    /// for an unconnected one).
    Remote,
    /// Another address.
    Other,
}

/// One operation on the modelled datagram world.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatagramOp {
    /// `sendto(data of len, addr)`.
    SendTo(usize, AddrArg),
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
    /// `set_write_buffer_hard_limit(limit)`.
    SetHardLimit(Option<usize>),
    /// `set_datagram_protocol(..)` with a fresh recording protocol.
    SwapProtocol,
    /// The socket will accept `n` more datagrams.
    Grant(usize),
    /// The socket's next send fails (`ConnectionRefused`, as a pending ICMP error).
    FailNextSend,
    /// The driver reports the socket writable.
    Writable,
    /// A datagram of `len` bytes from the peer reaches the socket.
    PeerSend(usize),
    /// The socket's next receive fails (`ConnectionRefused`).
    PeerError,
    /// A datagram larger than the receive buffer reaches the socket.
    PeerOversized,
    /// The driver reports the socket readable.
    Readable,
    /// A completion-based driver delivers a datagram of `len` bytes from the peer.
    Received(usize),
    /// The driver reports an error observed outside `Io` (`EPOLLERR`): `ConnectionRefused`.
    DriverError,
}

/// A callback as the model states it. Data is identified, not copied: a received
/// datagram is the peer's datagram number `id`, of `len` bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatagramEvent {
    /// `connection_made`.
    Made,
    /// `pause_writing`.
    Pause,
    /// `resume_writing`.
    Resume,
    /// `error_received` with an error of this kind.
    Error(ErrorKind),
    /// `datagram_received` of the peer's datagram `id`, `len` bytes long.
    Datagram {
        /// The peer datagram's number.
        id: usize,
        /// Its length.
        len: usize,
    },
    /// `connection_lost(None)` (the model's endpoint never ends with an error).
    Lost,
}

/// What one operation produced.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DatagramOutcome {
    /// Callbacks delivered, in order.
    pub events: Vec<DatagramEvent>,
    /// For `SendTo`: what `sendto` returned.
    pub sendto: Option<Result<(), WriteError>>,
}

/// Where a datagram went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    /// The `sendto` call's number.
    pub id: usize,
    /// Its length.
    pub len: usize,
    /// The address given to the socket (`None` on a connected endpoint, which sends to
    /// its peer).
    pub addr: AddrArg,
}

/// The observable state after an operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatagramState {
    /// `write_buffer_size()`: payload plus 8 per queued datagram (0 once gone).
    pub write_buffer_size: usize,
    /// Datagrams waiting in the queue.
    pub queued_datagrams: usize,
    /// `is_closing()`.
    pub is_closing: bool,
    /// `is_writing_paused()`.
    pub is_writing_paused: bool,
    /// `is_reading()`.
    pub is_reading: bool,
    /// Read interest.
    pub wants_read: bool,
    /// Write interest.
    pub wants_write: bool,
    /// The socket was closed.
    pub closed: bool,
    /// `connection_lost` was delivered: the handle is stale.
    pub gone: bool,
}

/// Something waiting at the socket's receive side.
#[derive(Debug, Clone, Copy)]
enum Arrival {
    Datagram { id: usize, len: usize },
    Error,
    Oversized,
}

/// The datagram reference model. See the module docs.
#[derive(Debug, Clone)]
pub struct DatagramModel {
    connected: bool,
    flow: FlowRule,
    hard_limit: Option<usize>,
    queue: VecDeque<Sent>,
    queued: usize,
    budget: usize,
    fail_next_send: bool,
    next_id: usize,
    next_peer_id: usize,
    sent: Vec<Sent>,
    failed: Vec<usize>,
    dropped: Vec<usize>,
    errors: VecDeque<ErrorKind>,
    arrivals: VecDeque<Arrival>,
    held: VecDeque<(usize, usize)>,
    read_paused: bool,
    close_requested: bool,
    lost: bool,
    lost_pending: bool,
    gone: bool,
}

impl DatagramModel {
    /// An endpoint (connected to a peer, or not) with default limits whose
    /// `connection_made` was delivered (the first outcome), over a socket with no budget.
    pub fn new(connected: bool) -> (Self, DatagramOutcome) {
        let m = DatagramModel {
            connected,
            flow: FlowRule::new(),
            hard_limit: None,
            queue: VecDeque::new(),
            queued: 0,
            budget: 0,
            fail_next_send: false,
            next_id: 0,
            next_peer_id: 0,
            sent: Vec::new(),
            failed: Vec::new(),
            dropped: Vec::new(),
            errors: VecDeque::new(),
            arrivals: VecDeque::new(),
            held: VecDeque::new(),
            read_paused: false,
            close_requested: false,
            lost: false,
            lost_pending: false,
            gone: false,
        };
        (m, DatagramOutcome { events: vec![DatagramEvent::Made], sendto: None })
    }

    /// Applies one operation; returns what it produced.
    pub fn apply(&mut self, op: &DatagramOp) -> DatagramOutcome {
        let mut out = DatagramOutcome::default();
        match *op {
            DatagramOp::SendTo(len, addr) => out.sendto = Some(self.sendto(len, addr)),
            DatagramOp::Close if !self.gone && !self.close_requested && !self.lost => {
                self.close_requested = true;
                self.held.clear();
                if self.queue.is_empty() {
                    self.lose();
                }
            }
            DatagramOp::Abort if !self.gone => {
                self.close_requested = true;
                self.lose();
            }
            DatagramOp::PauseReading if !self.gone && !self.closing() => self.read_paused = true,
            DatagramOp::ResumeReading if !self.gone && !self.closing() => {
                self.read_paused = false;
            }
            DatagramOp::SetLimits(high, low) if !self.gone => {
                self.flow.set_limits(high, low, self.queued);
            }
            DatagramOp::SetHardLimit(limit) if !self.gone => self.hard_limit = limit,
            DatagramOp::SwapProtocol if !self.gone => self.flow.reset_view(),
            DatagramOp::Grant(n) => self.budget += n,
            DatagramOp::FailNextSend => self.fail_next_send = true,
            DatagramOp::Writable if !self.lost => self.flush(),
            DatagramOp::PeerSend(len) => {
                let id = self.peer_id();
                self.arrivals.push_back(Arrival::Datagram { id, len });
            }
            DatagramOp::PeerError => self.arrivals.push_back(Arrival::Error),
            DatagramOp::PeerOversized => self.arrivals.push_back(Arrival::Oversized),
            DatagramOp::Readable if !self.lost => {
                // What ranks above data is delivered before the read.
                self.deliver(&mut out.events);
                if self.wants_read() {
                    self.receive(&mut out.events);
                }
            }
            DatagramOp::Received(len) => {
                let id = self.peer_id();
                if !self.lost && !self.close_requested {
                    self.held.push_back((id, len));
                }
            }
            DatagramOp::DriverError if !self.lost => {
                self.errors.push_back(ErrorKind::ConnectionRefused);
            }
            _ => {}
        }
        self.deliver(&mut out.events);
        out
    }

    /// The observable state.
    pub fn state(&self) -> DatagramState {
        DatagramState {
            write_buffer_size: if self.gone { 0 } else { self.queued },
            queued_datagrams: self.queue.len(),
            is_closing: self.gone || self.closing(),
            is_writing_paused: !self.gone && self.flow.paused,
            is_reading: !self.gone && !self.read_paused && !self.closing(),
            wants_read: !self.lost && self.wants_read(),
            wants_write: !self.lost && !self.queue.is_empty(),
            closed: self.lost,
            gone: self.gone,
        }
    }

    /// The datagrams the socket accepted, in order.
    pub fn sent(&self) -> &[Sent] {
        &self.sent
    }

    /// The `sendto` numbers of accepted datagrams whose send failed (reported through
    /// `error_received`).
    pub fn failed(&self) -> &[usize] {
        &self.failed
    }

    /// The `sendto` numbers of accepted datagrams dropped by `abort`.
    pub fn dropped(&self) -> &[usize] {
        &self.dropped
    }

    /// The `sendto` numbers of datagrams still queued.
    pub fn queued(&self) -> impl Iterator<Item = usize> + '_ {
        self.queue.iter().map(|s| s.id)
    }

    fn peer_id(&mut self) -> usize {
        self.next_peer_id += 1;
        self.next_peer_id - 1
    }

    fn closing(&self) -> bool {
        self.close_requested || self.lost
    }

    fn wants_read(&self) -> bool {
        !self.read_paused && !self.closing() && self.held.is_empty()
    }

    fn sendto(&mut self, len: usize, addr: AddrArg) -> Result<(), WriteError> {
        let id = self.next_id;
        self.next_id += 1;
        if self.gone {
            return Err(WriteError::Handle(crate::HandleError::Stale));
        }
        if self.close_requested {
            return Err(WriteError::Closing);
        }
        if self.lost {
            return Err(WriteError::Closed);
        }
        let addr = match (self.connected, addr) {
            (true, AddrArg::Other) => {
                // The runner compares the variant, not the formatted addresses.
                return Err(WriteError::AddressMismatch {
                    expected: String::new(),
                    given: String::new(),
                });
            }
            (true, _) => AddrArg::None,
            (false, AddrArg::None) => return Err(WriteError::AddressRequired),
            (false, a) => a,
        };
        let size = self.queued;
        if let Some(limit) = self.hard_limit
            && size.saturating_add(len + OVERHEAD) > limit
        {
            return Err(WriteError::BufferFull { buffered: size, len: len + OVERHEAD, limit });
        }
        let d = Sent { id, len, addr };
        if self.queue.is_empty() {
            if std::mem::take(&mut self.fail_next_send) {
                self.failed.push(id);
                self.errors.push_back(ErrorKind::ConnectionRefused);
                return Ok(());
            }
            if self.budget > 0 {
                self.budget -= 1;
                self.sent.push(d);
                return Ok(());
            }
        }
        self.queue.push_back(d);
        self.queued += len + OVERHEAD;
        self.flow.edges(self.queued);
        Ok(())
    }

    /// Sends from the head until the queue is empty, the socket refuses (the head stays)
    /// or a send fails (the head is dropped and reported; the rest stay).
    fn flush(&mut self) {
        while let Some(&d) = self.queue.front() {
            if std::mem::take(&mut self.fail_next_send) {
                self.pop();
                self.failed.push(d.id);
                self.errors.push_back(ErrorKind::ConnectionRefused);
                break;
            }
            if self.budget == 0 {
                break;
            }
            self.budget -= 1;
            self.pop();
            self.sent.push(d);
        }
        self.flow.edges(self.queued);
        if self.queue.is_empty() && self.close_requested {
            self.lose();
        }
    }

    fn pop(&mut self) {
        if let Some(d) = self.queue.pop_front() {
            self.queued -= d.len + OVERHEAD;
        }
    }

    /// One receive: a datagram is delivered at once; an error or an oversized datagram
    /// (never delivered cut) becomes `error_received`.
    fn receive(&mut self, events: &mut Vec<DatagramEvent>) {
        match self.arrivals.pop_front() {
            Some(Arrival::Datagram { id, len }) if len <= MODEL_READ_SIZE => {
                events.push(DatagramEvent::Datagram { id, len });
            }
            // Larger than the loop's receive buffer: truncated, so reported.
            Some(Arrival::Datagram { .. } | Arrival::Oversized) => {
                self.errors.push_back(ErrorKind::InvalidData);
            }
            Some(Arrival::Error) => self.errors.push_back(ErrorKind::ConnectionRefused),
            None => {}
        }
    }

    fn lose(&mut self) {
        if self.lost {
            return;
        }
        self.flow.frozen = true;
        self.dropped.extend(self.queue.drain(..).map(|d| d.id));
        self.queued = 0;
        self.held.clear();
        self.lost = true;
        self.lost_pending = true;
    }

    /// Delivers callbacks until quiescent, by the priority table: flow edges, errors,
    /// held datagrams, connection_lost.
    fn deliver(&mut self, events: &mut Vec<DatagramEvent>) {
        loop {
            if let Some(edge) = self.flow.next_edge() {
                events.push(if edge == Event::Pause {
                    DatagramEvent::Pause
                } else {
                    DatagramEvent::Resume
                });
            } else if let Some(kind) = self.errors.pop_front() {
                // Reported even after an abort: the error happened before it.
                events.push(DatagramEvent::Error(kind));
            } else if !self.read_paused
                && !self.closing()
                && let Some((id, len)) = self.held.pop_front()
            {
                events.push(DatagramEvent::Datagram { id, len });
            } else if self.lost_pending {
                self.lost_pending = false;
                self.gone = true;
                events.push(DatagramEvent::Lost);
            } else {
                return;
            }
        }
    }
}
