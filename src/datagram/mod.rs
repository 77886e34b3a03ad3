//! `DatagramTransport`: asyncio's `DatagramTransport` as a state machine (spec §12).
//!
//! Built on the shared [`FlowControl`] and [`Lifecycle`], not on the stream machinery:
//! whole datagrams with addresses, never split or merged, no partial consume. Each queued
//! datagram counts `len + 8` toward the write buffer, on enqueue and on dequeue alike
//! (CPython 3.13.0 leaks the 8 on dequeue: gh-135444).
//!
//! Errors are not fatal: a failed send or receive (an ICMP port-unreachable surfacing as
//! `ConnectionRefused`, say) is reported with `error_received`, the failed datagram is
//! dropped, and the transport stays usable. Callbacks are derived from state by the same
//! priority table as streams, with `error_received` and `datagram_received` in place of
//! data and EOF:
//!
//! | rank | callback | when |
//! |---|---|---|
//! | 1 | `connection_made` | not yet delivered |
//! | 2 | `pause_writing` / `resume_writing` | the protocol's view differs from the state |
//! | 3 | `error_received` | a send or receive failed (oldest first) |
//! | 4 | `datagram_received` | held datagrams, while reading and not closing |
//! | 5 | `connection_lost` | the socket was closed and nothing above is pending |

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

use bytes::Bytes;

use crate::{
    ConnectionError, DriverError, Extra, FlowControl, FlowEdge, Handle, Interest, Io, IoError,
    Lifecycle, LimitsError, WriteBufferLimits, WriteError,
};

#[cfg(test)]
mod tests;

/// Bytes each queued datagram adds to the write buffer size on top of its payload
/// (asyncio's `_header_size`): an empty datagram still counts, so a queue of them can
/// cross the high-water mark (gh-113812).
pub const DATAGRAM_OVERHEAD: usize = 8;

/// How many datagrams one `on_writable` sends at most before returning, so one busy
/// transport cannot starve the loop.
const FLUSH_LIMIT: usize = 1024;

/// A datagram address: an IP socket address (UDP) or a Unix datagram socket path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DatagramAddr {
    /// An IPv4 or IPv6 address and port.
    Inet(SocketAddr),
    /// A Unix datagram socket: its path, or `None` for an unnamed (unbound) socket.
    Unix(Option<PathBuf>),
}

impl From<SocketAddr> for DatagramAddr {
    fn from(a: SocketAddr) -> Self {
        DatagramAddr::Inet(a)
    }
}

/// What one `Io::try_recv_from` produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecvMeta {
    /// Bytes written into the buffer.
    pub len: usize,
    /// The sender, when the socket reports one.
    pub addr: Option<DatagramAddr>,
    /// The datagram did not fit the buffer and was cut to `len` bytes.
    pub truncated: bool,
}

/// A callback the datagram protocol is owed, from [`DatagramTransport::next_callback`].
#[derive(Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DatagramCallback {
    /// Deliver `connection_made`.
    ConnectionMade,
    /// Deliver `pause_writing`.
    PauseWriting,
    /// Deliver `resume_writing`.
    ResumeWriting,
    /// Deliver `error_received`.
    ErrorReceived(ConnectionError),
    /// Deliver `datagram_received` (a datagram held because reading was paused, or
    /// reported by a completion-based driver).
    DatagramReceived(Vec<u8>, Option<DatagramAddr>),
    /// Deliver `connection_lost`: the last callback.
    ConnectionLost(Option<ConnectionError>),
}

/// What [`DatagramTransport::read`] produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatagramRead {
    /// A datagram of `len` bytes from `addr` is in the buffer: deliver it now.
    Datagram(usize, Option<DatagramAddr>),
    /// Nothing to read, or the transport does not want to read.
    Idle,
    /// The receive failed or was truncated: `error_received` is now pending.
    Error,
}

/// A datagram transport (UDP, Unix datagram): asyncio's `sendto` / `error_received`
/// semantics with no I/O of its own.
#[derive(Debug)]
pub struct DatagramTransport {
    handle: Handle,
    lifecycle: Lifecycle,
    flow: FlowControl,
    queue: VecDeque<(Bytes, Option<DatagramAddr>)>,
    /// Payload bytes queued plus `DATAGRAM_OVERHEAD` per datagram.
    queued: usize,
    /// The connected peer (`remote_addr`), if any.
    remote: Option<DatagramAddr>,
    errors: VecDeque<ConnectionError>,
    held: VecDeque<(Vec<u8>, Option<DatagramAddr>)>,
    read_paused: bool,
    extra: Extra,
}

impl DatagramTransport {
    /// A transport named `handle`; `remote` makes it connected.
    pub fn new(handle: Handle, remote: Option<DatagramAddr>, extra: Extra) -> Self {
        DatagramTransport {
            handle,
            lifecycle: Lifecycle::new(),
            flow: FlowControl::new(WriteBufferLimits::default()),
            queue: VecDeque::new(),
            queued: 0,
            remote,
            errors: VecDeque::new(),
            held: VecDeque::new(),
            read_paused: false,
            extra,
        }
    }

    /// The handle this transport passes to [`Io`].
    pub fn handle(&self) -> Handle {
        self.handle
    }

    /// The connected peer, if the transport is connected.
    pub fn remote(&self) -> Option<&DatagramAddr> {
        self.remote.as_ref()
    }

    /// The endpoint information the driver provided.
    pub fn extra(&self) -> &Extra {
        &self.extra
    }

    // ----------------------------------------------------------------------------------
    // User face
    // ----------------------------------------------------------------------------------

    /// Sends one datagram (asyncio's `sendto`). On a connected transport `addr` must be
    /// `None` or the remote address; on an unconnected one it is required. An empty
    /// datagram is sent (gh-113812). With nothing queued it goes to the socket at once;
    /// otherwise — or if the socket would block — it is queued whole, counting
    /// `len + 8`. A send error goes to `error_received` and the datagram is dropped; the
    /// call itself still returns `Ok`.
    ///
    /// # Errors
    ///
    /// [`WriteError::AddressMismatch`], [`WriteError::AddressRequired`],
    /// [`WriteError::Closing`], [`WriteError::Closed`], [`WriteError::BufferFull`].
    pub fn sendto(
        &mut self,
        data: &[u8],
        addr: Option<&DatagramAddr>,
        io: &mut dyn Io,
    ) -> Result<(), WriteError> {
        if self.lifecycle.is_close_requested() {
            return Err(WriteError::Closing);
        }
        if self.lifecycle.is_lost() {
            return Err(WriteError::Closed);
        }
        let addr = match (&self.remote, addr) {
            (Some(remote), Some(a)) if a != remote => {
                return Err(WriteError::AddressMismatch {
                    expected: format!("{remote:?}"),
                    given: format!("{a:?}"),
                });
            }
            (Some(_), _) => None,
            (None, None) => return Err(WriteError::AddressRequired),
            (None, Some(a)) => Some(a),
        };
        self.flow.admit(self.queued, data.len() + DATAGRAM_OVERHEAD)?;
        if self.queue.is_empty() {
            match io.try_send_to(self.handle, data, addr) {
                Ok(_) => return Ok(()),
                Err(e) if is_transient(&e) => {}
                Err(e) => {
                    self.errors.push_back(e.into());
                    return Ok(());
                }
            }
        }
        self.queue.push_back((Bytes::copy_from_slice(data), addr.cloned()));
        self.queued += data.len() + DATAGRAM_OVERHEAD;
        self.flow.check(self.queued);
        Ok(())
    }

    /// Closes after sending what is queued; `connection_lost(None)` follows. Idempotent.
    pub fn close(&mut self, io: &mut dyn Io) {
        if !self.lifecycle.start_closing() || self.lifecycle.is_lost() {
            return;
        }
        self.held.clear();
        if self.queue.is_empty() {
            self.lose(None, true, io);
        }
    }

    /// Closes at once, dropping what is queued; `connection_lost(None)` follows.
    pub fn abort(&mut self, io: &mut dyn Io) {
        self.lifecycle.start_closing();
        self.lose(None, false, io);
    }

    /// True once `close()`, `abort()` or a fatal error happened.
    pub fn is_closing(&self) -> bool {
        self.lifecycle.is_closing()
    }

    /// Stops delivering datagrams until `resume_reading`. Idempotent.
    pub fn pause_reading(&mut self) {
        if !self.is_closing() {
            self.read_paused = true;
        }
    }

    /// Resumes delivery. Idempotent; a no-op once closing.
    pub fn resume_reading(&mut self) {
        if !self.is_closing() {
            self.read_paused = false;
        }
    }

    /// True while datagrams would be delivered.
    pub fn is_reading(&self) -> bool {
        !self.read_paused && !self.is_closing()
    }

    /// Queued payload bytes plus 8 per queued datagram. O(1).
    pub fn write_buffer_size(&self) -> usize {
        self.flow.size(self.queued)
    }

    /// The current limits.
    pub fn write_buffer_limits(&self) -> WriteBufferLimits {
        self.flow.limits()
    }

    /// Sets the limits (asyncio's derivation) and re-checks both edges.
    ///
    /// # Errors
    ///
    /// [`LimitsError::HighBelowLow`].
    pub fn set_write_buffer_limits(
        &mut self,
        high: Option<usize>,
        low: Option<usize>,
    ) -> Result<(), LimitsError> {
        self.flow.set_limits(WriteBufferLimits::new(high, low)?, self.queued);
        Ok(())
    }

    /// Sets or removes a hard cap on the write buffer.
    pub fn set_write_buffer_hard_limit(&mut self, limit: Option<usize>) {
        self.flow.set_hard_limit(limit);
    }

    /// True from the moment the buffer exceeded high water until it drained to low water.
    pub fn is_writing_paused(&self) -> bool {
        self.flow.is_paused()
    }

    /// How many datagrams wait in the queue.
    pub fn queued_datagrams(&self) -> usize {
        self.queue.len()
    }

    // ----------------------------------------------------------------------------------
    // Callbacks
    // ----------------------------------------------------------------------------------

    /// The next callback the protocol is owed, by the priority table in the module docs,
    /// marked as delivered.
    #[must_use]
    pub fn next_callback(&mut self) -> Option<DatagramCallback> {
        if self.lifecycle.is_finished() {
            return None;
        }
        if self.lifecycle.poll_made() {
            return Some(DatagramCallback::ConnectionMade);
        }
        if let Some(edge) = self.flow.poll_edge() {
            return Some(match edge {
                FlowEdge::Pause => DatagramCallback::PauseWriting,
                FlowEdge::Resume => DatagramCallback::ResumeWriting,
            });
        }
        if let Some(e) = self.errors.pop_front() {
            return Some(DatagramCallback::ErrorReceived(e));
        }
        if self.is_reading()
            && let Some((data, addr)) = self.held.pop_front()
        {
            return Some(DatagramCallback::DatagramReceived(data, addr));
        }
        self.lifecycle.poll_lost().map(DatagramCallback::ConnectionLost)
    }

    /// True when [`next_callback`](Self::next_callback) would return `Some`.
    pub fn has_callback(&self) -> bool {
        !self.lifecycle.is_finished()
            && (!self.lifecycle.is_made()
                || self.flow.has_edge()
                || !self.errors.is_empty()
                || (self.is_reading() && !self.held.is_empty())
                || self.lifecycle.has_lost_pending())
    }

    /// The protocol was replaced: if paused for writing, the new one first receives
    /// `pause_writing` (gh-109051).
    pub fn protocol_swapped(&mut self) {
        self.flow.reset_view();
    }

    /// True once `connection_lost` was delivered.
    pub fn is_finished(&self) -> bool {
        self.lifecycle.is_finished()
    }

    /// Ends the transport with `err` (a failing protocol callback whose failure is fatal).
    pub fn fail(&mut self, err: ConnectionError, io: &mut dyn Io) {
        self.lose(Some(err), false, io);
    }

    // ----------------------------------------------------------------------------------
    // Driver face
    // ----------------------------------------------------------------------------------

    /// What the transport wants from the readiness source.
    pub fn interest(&self) -> Interest {
        if self.lifecycle.is_lost() {
            return Interest::default();
        }
        Interest {
            read: self.lifecycle.is_made() && self.is_reading() && self.held.is_empty(),
            write: !self.queue.is_empty(),
        }
    }

    /// True once the socket was closed (`Io::close` was called).
    pub fn is_socket_closed(&self) -> bool {
        self.lifecycle.is_lost()
    }

    /// Receives one datagram through [`Io::try_recv_from`] into `buf` if the transport
    /// wants to read. A receive error or a truncated datagram queues `error_received`
    /// (not fatal; a truncated datagram is dropped, never delivered cut).
    ///
    /// # Errors
    ///
    /// [`DriverError::Closed`]; [`DriverError::ReceivedMoreThanCapacity`].
    pub fn read(&mut self, buf: &mut [u8], io: &mut dyn Io) -> Result<DatagramRead, DriverError> {
        self.check_open()?;
        if !self.interest().read {
            return Ok(DatagramRead::Idle);
        }
        match io.try_recv_from(self.handle, buf) {
            Ok(meta) if meta.len > buf.len() => Err(DriverError::ReceivedMoreThanCapacity {
                capacity: buf.len(),
                received: meta.len,
            }),
            Ok(RecvMeta { truncated: true, len, .. }) => {
                let msg =
                    format!("datagram truncated to {len} bytes: it was larger than the buffer");
                self.errors
                    .push_back(ConnectionError::Io(IoError::new(io::ErrorKind::InvalidData, msg)));
                Ok(DatagramRead::Error)
            }
            Ok(RecvMeta { len, addr, .. }) => Ok(DatagramRead::Datagram(len, addr)),
            Err(e) if is_transient(&e) => Ok(DatagramRead::Idle),
            Err(e) => {
                self.errors.push_back(e.into());
                Ok(DatagramRead::Error)
            }
        }
    }

    /// A datagram the driver received outside [`read`](Self::read) (completion-based
    /// drivers): copied and delivered when reading allows. Dropped after `close()`.
    ///
    /// # Errors
    ///
    /// [`DriverError::Closed`].
    pub fn handle_datagram(
        &mut self,
        data: &[u8],
        addr: Option<DatagramAddr>,
    ) -> Result<(), DriverError> {
        self.check_open()?;
        if !self.lifecycle.is_closing() {
            self.held.push_back((data.to_vec(), addr));
        }
        Ok(())
    }

    /// A non-fatal error the driver observed outside `Io` calls: `error_received(err)`.
    ///
    /// # Errors
    ///
    /// [`DriverError::Closed`].
    pub fn handle_error_received(&mut self, err: ConnectionError) -> Result<(), DriverError> {
        self.check_open()?;
        self.errors.push_back(err);
        Ok(())
    }

    /// The socket is writable: sends queued datagrams in order until the queue is empty,
    /// the socket would block (the datagram stays at the head), or a send fails (that
    /// datagram is dropped and reported; the rest stay queued — spec §12.60).
    ///
    /// # Errors
    ///
    /// [`DriverError::Closed`].
    pub fn on_writable(&mut self, io: &mut dyn Io) -> Result<(), DriverError> {
        self.check_open()?;
        for _ in 0..FLUSH_LIMIT {
            let Some((data, addr)) = self.queue.front() else { break };
            let addr = if self.remote.is_some() { None } else { addr.as_ref() };
            let result = io.try_send_to(self.handle, data, addr);
            match result {
                Err(e) if is_transient(&e) => break,
                Err(e) => {
                    self.pop_front();
                    self.errors.push_back(e.into());
                    break;
                }
                Ok(_) => self.pop_front(),
            }
        }
        self.flow.check(self.queued);
        if self.queue.is_empty() && self.lifecycle.is_close_requested() {
            self.lose(None, true, io);
        }
        Ok(())
    }

    fn pop_front(&mut self) {
        if let Some((data, _)) = self.queue.pop_front() {
            self.queued -= data.len() + DATAGRAM_OVERHEAD;
        }
    }

    fn check_open(&self) -> Result<(), DriverError> {
        if self.lifecycle.is_lost() { Err(DriverError::Closed) } else { Ok(()) }
    }

    fn lose(&mut self, reason: Option<ConnectionError>, graceful: bool, io: &mut dyn Io) {
        if self.lifecycle.is_lost() {
            return;
        }
        self.flow.freeze();
        self.queue = VecDeque::new();
        self.queued = 0;
        self.held = VecDeque::new();
        if graceful {
            io.close(self.handle);
        } else {
            io.abort(self.handle);
        }
        self.lifecycle.set_lost(reason);
    }
}

fn is_transient(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted)
}
