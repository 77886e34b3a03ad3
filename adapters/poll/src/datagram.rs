//! Datagram endpoints on the loop: UDP over IPv4 and IPv6, and Unix datagram sockets
//! (asyncio's `create_datagram_endpoint`).
//!
//! The socket table here sits beside the stream table of `sockets.rs` and shares its
//! readiness-cache discipline (one edge-triggered registration for read and write; a flag
//! cleared only when the socket says `WouldBlock`), with one difference: a datagram read
//! that comes back shorter than the buffer says nothing about the queue, so only
//! `WouldBlock` clears `readable`.
//!
//! Opening the socket and one `sendto` / `recvfrom` are
//! [`aioport_async_kit::datagram`]'s, shared with the tokio and smol drivers.
//!
//! Receives go into the core's loop-wide 256 KiB buffer with `MSG_TRUNC`, so any UDP
//! datagram (at most 65,535 bytes) fits whole, and a larger Unix datagram is reported as
//! truncated — `error_received` with [`InvalidData`](std::io::ErrorKind::InvalidData),
//! never delivered cut. Send and receive errors (an ICMP port-unreachable surfacing as
//! `ECONNREFUSED` on a connected socket) reach `error_received` and the endpoint stays
//! usable, as in asyncio.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::time::Instant;

use aioport::datagram::RecvMeta;
use aioport::{DatagramAddr, DatagramProtocol, Extra, Handle};
use aioport_async_kit::datagram as kit;
pub use aioport_async_kit::datagram::{DatagramEndpoint, DatagramOptions};
use mio::event::Event;
use mio::net::{UdpSocket, UnixDatagram};
use mio::{Interest, Token};

use crate::event_loop::Loop;
use crate::sockets::token;
use crate::{Error, ErrorReport};

/// Datagrams read per endpoint per iteration before the loop serves others; the rest
/// waits in the ready list. One datagram per read, so this is larger than the stream
/// budget (which counts reads of up to 256 KiB).
const READ_BUDGET: u32 = 64;

/// A datagram socket of the loop.
#[derive(Debug)]
enum Sock {
    Udp(UdpSocket),
    Unix(UnixDatagram),
}

impl Sock {
    fn source(&mut self) -> &mut dyn mio::event::Source {
        match self {
            Sock::Udp(s) => s,
            Sock::Unix(s) => s,
        }
    }

    fn fd(&self) -> BorrowedFd<'_> {
        match self {
            Sock::Udp(s) => s.as_fd(),
            Sock::Unix(s) => s.as_fd(),
        }
    }
}

/// One socket of the table, with its readiness cache.
#[derive(Debug)]
pub(crate) struct DgramConn {
    handle: Handle,
    sock: Sock,
    readable: bool,
    writable: bool,
    /// `EPOLLERR` was seen (a pending ICMP error).
    error: bool,
    /// In the loop's ready list.
    queued: bool,
}

/// The loop's datagram sockets, indexed by [`Handle::index`] (the registry's slots are
/// shared with streams, so an index is in at most one of the two tables).
#[derive(Debug, Default)]
pub(crate) struct DatagramSockets {
    slots: Vec<Option<DgramConn>>,
}

impl DatagramSockets {
    fn get_mut(&mut self, h: Handle) -> Option<&mut DgramConn> {
        self.slots.get_mut(h.index() as usize)?.as_mut().filter(|c| c.handle == h)
    }

    fn by_token(&mut self, t: Token) -> Option<&mut DgramConn> {
        let index = t.0 & 0xffff_ffff;
        self.slots.get_mut(index)?.as_mut().filter(|c| token(c.handle) == t)
    }

    fn insert(&mut self, registry: &mio::Registry, h: Handle, mut sock: Sock) -> io::Result<()> {
        registry.register(sock.source(), token(h), Interest::READABLE | Interest::WRITABLE)?;
        let index = h.index() as usize;
        if self.slots.len() <= index {
            self.slots.resize_with(index + 1, || None);
        }
        let conn = DgramConn {
            handle: h,
            sock,
            readable: false,
            writable: true,
            error: false,
            queued: false,
        };
        self.slots[index] = Some(conn);
        Ok(())
    }

    /// Deregisters and closes `h`'s socket; false if `h` is not a datagram socket here.
    pub(crate) fn remove(&mut self, registry: &mio::Registry, h: Handle) -> bool {
        let Some(slot) = self.slots.get_mut(h.index() as usize) else { return false };
        if slot.as_ref().is_none_or(|c| c.handle != h) {
            return false;
        }
        if let Some(mut conn) = slot.take() {
            let _ = registry.deregister(conn.sock.source());
        }
        true
    }

    /// [`Io::try_send_to`](aioport::Io::try_send_to): one `send` (connected, `addr` is
    /// `None`) or `sendto`, whole.
    pub(crate) fn send_to(
        &mut self,
        h: Handle,
        data: &[u8],
        addr: Option<&DatagramAddr>,
    ) -> io::Result<usize> {
        let c = self.get_mut(h).ok_or_else(not_open)?;
        if !c.writable {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let r = kit::send_to(c.sock.fd(), matches!(c.sock, Sock::Unix(_)), data, addr);
        if r.as_ref().is_err_and(|e| e.kind() == io::ErrorKind::WouldBlock) {
            c.writable = false;
        }
        r
    }

    /// [`Io::try_recv_from`](aioport::Io::try_recv_from): one `recvfrom` with `MSG_TRUNC`,
    /// so a datagram larger than `buf` is reported as truncated.
    pub(crate) fn recv_from(&mut self, h: Handle, buf: &mut [u8]) -> io::Result<RecvMeta> {
        let c = self.get_mut(h).ok_or_else(not_open)?;
        if !c.readable {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        c.error = false;
        let r = kit::recv_from(c.sock.fd(), matches!(c.sock, Sock::Unix(_)), buf);
        if r.as_ref().is_err_and(|e| e.kind() == io::ErrorKind::WouldBlock) {
            c.readable = false;
        }
        r
    }
}

/// The kit's opening errors as this loop's.
fn from_kit(e: aioport_async_kit::Error) -> Error {
    match e {
        aioport_async_kit::Error::Datagram { local, remote, error } => {
            Error::Datagram { local, remote, error }
        }
        aioport_async_kit::Error::DatagramAddress { local, remote, why } => {
            Error::DatagramAddress { local, remote, why }
        }
        other => Error::Io(io::Error::other(other)),
    }
}

fn not_open() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "aioport-poll: no open datagram socket")
}

impl Loop {
    /// Opens a datagram endpoint for `protocol` (asyncio's `create_datagram_endpoint`):
    /// UDP over IPv4 or IPv6 for [`DatagramAddr::Inet`], a Unix datagram socket for
    /// [`DatagramAddr::Unix`].
    ///
    /// * `local_addr`: where to bind — port 0 picks a free port; `Unix(Some(path))` binds a
    ///   path (a stale socket file there is removed first, as asyncio does; a path
    ///   starting with a NUL byte is an abstract name); `Unix(None)` autobinds to a
    ///   kernel-chosen abstract name. `None`: a UDP socket binds on its first send, a Unix
    ///   socket stays unbound (it can send, but no reply can reach it).
    /// * `remote_addr`: connects the socket, as asyncio does: `sendto` then takes `None`
    ///   or this address (any other is
    ///   [`WriteError::AddressMismatch`](aioport::WriteError::AddressMismatch)), only this
    ///   peer's datagrams arrive, and ICMP errors reach `error_received`.
    ///
    /// `connection_made` has run when this returns (it may already have sent).
    ///
    /// # Errors
    ///
    /// [`Error::DatagramAddress`] when the addresses do not make an endpoint (neither
    /// given, families differ, UDP options on a Unix socket); [`Error::Datagram`] when
    /// the socket could not be created, configured, bound or connected.
    ///
    /// ```
    /// use std::net::SocketAddr;
    /// use aioport::{CallbackResult, Ctx, DatagramAddr, DatagramProtocol};
    /// use aioport_poll::{DatagramOptions, Loop};
    ///
    /// struct Quiet;
    /// impl DatagramProtocol for Quiet {}
    ///
    /// let mut lp = Loop::new()?;
    /// let local = DatagramAddr::Inet(SocketAddr::from(([127, 0, 0, 1], 0)));
    /// let ep = lp.create_datagram_endpoint(Box::new(Quiet), Some(local), None, DatagramOptions::default())?;
    /// assert!(matches!(ep.local_addr(), DatagramAddr::Inet(a) if a.port() != 0));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn create_datagram_endpoint(
        &mut self,
        protocol: Box<dyn DatagramProtocol>,
        local_addr: Option<DatagramAddr>,
        remote_addr: Option<DatagramAddr>,
        options: DatagramOptions,
    ) -> Result<DatagramEndpoint, Error> {
        let kit::Opened { fd, unix, local, recv_buffer_size } =
            kit::open(local_addr.as_ref(), remote_addr.as_ref(), options).map_err(from_kit)?;
        let sock = if unix {
            Sock::Unix(UnixDatagram::from_std(std::os::unix::net::UnixDatagram::from(fd)))
        } else {
            Sock::Udp(UdpSocket::from_std(std::net::UdpSocket::from(fd)))
        };
        let mut extra = Extra::default().with_fd(sock.fd().as_raw_fd());
        if let DatagramAddr::Inet(a) = &local {
            extra = extra.with_sockname(*a);
        }
        if let Some(DatagramAddr::Inet(a)) = &remote_addr {
            extra = extra.with_peername(*a);
        }
        let h = self.registry.insert_datagram(protocol, remote_addr.clone(), extra);
        if let Err(error) = self.io.dgram.insert(self.poll.registry(), h.handle(), sock) {
            // The transport never had a socket: end it without a callback reaching I/O.
            self.with(|ctx| {
                let _ = ctx.abort(h);
            });
            return Err(Error::Datagram { local: local_addr, remote: remote_addr, error });
        }
        // Delivers connection_made now, as asyncio's awaited endpoint has.
        self.with(|_| ());
        Ok(DatagramEndpoint::new(h, local, recv_buffer_size))
    }

    /// A readiness event for a token the stream table does not know: a datagram socket's
    /// (or one closed meanwhile).
    pub(crate) fn on_datagram_event(&mut self, t: Token, ev: &Event, now: Instant) {
        let Some(c) = self.io.dgram.by_token(t) else { return };
        if ev.is_readable() || ev.is_error() {
            c.readable = true;
        }
        if ev.is_writable() || ev.is_error() {
            c.writable = true;
        }
        c.error |= ev.is_error();
        let h = c.handle;
        self.serve_datagram(h, now);
    }

    /// After a registry call: if `h` is a datagram endpoint whose interest the cache can
    /// serve, queue it. True when `h` is a datagram endpoint (handled here).
    pub(crate) fn queue_datagram(&mut self, h: Handle) -> bool {
        let Some(c) = self.io.dgram.get_mut(h) else { return false };
        if !c.queued
            && let Ok(i) = self.registry.interest(h)
            && ((c.readable && i.read) || (c.writable && i.write) || c.error)
        {
            c.queued = true;
            self.ready.push_back(h);
        }
        true
    }

    /// Serves one datagram endpoint: flush, then receive while readable and wanted (at most
    /// `READ_BUDGET` datagrams), then a pending error no I/O call revealed. False if `h`
    /// is not a datagram endpoint.
    pub(crate) fn serve_datagram(&mut self, h: Handle, now: Instant) -> bool {
        let Some(c) = self.io.dgram.get_mut(h) else { return false };
        c.queued = false;
        let writable = c.writable;
        let Ok(interest) = self.registry.interest(h) else { return true };
        if writable && interest.write {
            let r = self.registry.on_writable(h, now, &mut self.io);
            self.report_datagram(h, r);
        }
        let mut budget_left = true;
        for n in 0..=READ_BUDGET {
            let Some(c) = self.io.dgram.get_mut(h) else { break };
            if !c.readable || !self.registry.interest(h).is_ok_and(|i| i.read) {
                break;
            }
            if n == READ_BUDGET {
                budget_left = false;
                break;
            }
            let r = self.registry.on_readable(h, now, &mut self.io);
            let failed = r.is_err();
            self.report_datagram(h, r);
            if failed {
                break;
            }
        }
        if let Some(c) = self.io.dgram.get_mut(h) {
            if !budget_left && !c.queued {
                c.queued = true;
                self.ready.push_back(h);
            } else if c.error {
                // EPOLLERR while not reading (paused, or nothing wanted): fetch the
                // pending error (SO_ERROR) so it reaches error_received now.
                c.error = false;
                let pending = kit::take_error(c.sock.fd()).unwrap_or_else(Some);
                if let Some(e) = pending {
                    let r = self.registry.handle_error(h, e.into(), now, &mut self.io);
                    self.report_datagram(h, r);
                }
            }
        }
        self.after_registry(now);
        true
    }

    fn report_datagram(&mut self, h: Handle, r: Result<(), aioport::DriverError>) {
        if let Err(error) = r {
            (self.hook)(ErrorReport::Driver { handle: h, error });
        }
    }
}
