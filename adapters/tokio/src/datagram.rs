//! Datagram endpoints on tokio: UDP over IPv4 and IPv6, and Unix datagram sockets
//! (asyncio's `create_datagram_endpoint`), with the poll loop's semantics.
//!
//! The socket is opened by `aioport_async_kit::datagram` and registered with tokio; each
//! `sendto` / `recvfrom` runs inside tokio's `try_io`, so the readiness is cleared only
//! when the socket says `WouldBlock` (a short datagram says nothing about the queue).
//! Receives go into the core's loop-wide 256 KiB buffer with `MSG_TRUNC`: a larger Unix
//! datagram reaches `error_received` as truncated, never delivered cut.
//!
//! tokio wakes a reader only for readability, and a pending ICMP error on a UDP socket is
//! `EPOLLERR` alone; so every endpoint also keeps a watcher on tokio's
//! `ready(Interest::ERROR)`, and a pending error (`SO_ERROR`) reaches `error_received`
//! at once, paused or not, as on the poll loop. The endpoint stays usable.

use std::future::Future;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use aioport::datagram::RecvMeta;
use aioport::{DatagramAddr, DatagramProtocol, DriverError, Extra, Handle};
use aioport_async_kit::datagram::{self as kit, DatagramEndpoint, DatagramOptions};
use aioport_async_kit::wake::{Key, KeyWaker, Shared};
use tokio::io::Interest;
use tokio::net::{UdpSocket, UnixDatagram};

use crate::event_loop::Loop;
use crate::{Error, ErrorReport};

/// Datagrams read per endpoint per turn before the loop serves others; the rest waits in
/// the ready list. One datagram per read, so this is larger than the stream budget.
const READ_BUDGET: u32 = 64;

/// A datagram socket registered with tokio (shared with its error watcher).
#[derive(Debug, Clone)]
enum Sock {
    Udp(Rc<UdpSocket>),
    Unix(Rc<UnixDatagram>),
}

impl Sock {
    fn fd(&self) -> BorrowedFd<'_> {
        match self {
            Sock::Udp(s) => s.as_fd(),
            Sock::Unix(s) => s.as_fd(),
        }
    }

    fn is_unix(&self) -> bool {
        matches!(self, Sock::Unix(_))
    }

    /// `f` on the socket under tokio's readiness for `interest`: `WouldBlock` without a
    /// syscall when tokio knows it is not ready; a `WouldBlock` from `f` clears it.
    fn try_io<R>(&self, interest: Interest, f: impl FnOnce() -> io::Result<R>) -> io::Result<R> {
        match self {
            Sock::Udp(s) => s.try_io(interest, f),
            Sock::Unix(s) => s.try_io(interest, f),
        }
    }

    fn poll_recv_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Sock::Udp(s) => s.poll_recv_ready(cx),
            Sock::Unix(s) => s.poll_recv_ready(cx),
        }
    }

    fn poll_send_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Sock::Udp(s) => s.poll_send_ready(cx),
            Sock::Unix(s) => s.poll_send_ready(cx),
        }
    }

    fn watch(&self) -> Watch {
        match self.clone() {
            Sock::Udp(s) => Box::pin(async move { s.ready(Interest::ERROR).await.map(drop) }),
            Sock::Unix(s) => Box::pin(async move { s.ready(Interest::ERROR).await.map(drop) }),
        }
    }
}

/// tokio's `ready(Interest::ERROR)`: completes on `EPOLLERR`.
type Watch = Pin<Box<dyn Future<Output = io::Result<()>>>>;

/// One datagram endpoint of the table.
struct Dgram {
    handle: Handle,
    sock: Sock,
    /// The endpoint's wake-up state and the waker tokio stores.
    wake: Arc<KeyWaker>,
    waker: Waker,
    /// In the loop's local ready list.
    queued: bool,
    watch: Watch,
}

/// The loop's datagram endpoints, indexed by [`Handle::index`] (the registry's slots are
/// shared with streams, so an index is in at most one of the two tables).
#[derive(Default)]
pub(crate) struct DatagramSockets {
    slots: Vec<Option<Dgram>>,
}

fn not_open() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "aioport-tokio: no open datagram socket")
}

impl DatagramSockets {
    fn get_mut(&mut self, h: Handle) -> Option<&mut Dgram> {
        self.slots.get_mut(h.index() as usize)?.as_mut().filter(|c| c.handle == h)
    }

    /// `h` is an open endpoint of this table.
    pub(crate) fn contains(&self, h: Handle) -> bool {
        self.slots.get(h.index() as usize).and_then(Option::as_ref).is_some_and(|c| c.handle == h)
    }

    fn insert(&mut self, h: Handle, sock: Sock, shared: &Arc<Shared>) {
        let index = h.index() as usize;
        if self.slots.len() <= index {
            self.slots.resize_with(index + 1, || None);
        }
        let (wake, waker) = KeyWaker::new(Key::Conn(h), shared);
        let watch = sock.watch();
        self.slots[index] = Some(Dgram { handle: h, sock, wake, waker, queued: false, watch });
    }

    /// Drops `h`'s socket (tokio deregisters and closes it); false if `h` is not here.
    pub(crate) fn remove(&mut self, h: Handle) -> bool {
        let Some(slot) = self.slots.get_mut(h.index() as usize) else { return false };
        if slot.as_ref().is_none_or(|c| c.handle != h) {
            return false;
        }
        *slot = None;
        true
    }

    /// [`Io::try_send_to`](aioport::Io::try_send_to).
    pub(crate) fn send_to(
        &mut self,
        h: Handle,
        data: &[u8],
        addr: Option<&DatagramAddr>,
    ) -> io::Result<usize> {
        let c = self.get_mut(h).ok_or_else(not_open)?;
        // Sent at once, as asyncio's `sendto` on an empty buffer does, even before tokio
        // has seen the socket's first writable edge; a refusal (`EACCES`, a full queue)
        // is known now. `WouldBlock` clears tokio's readiness, so the loop waits for the
        // next edge.
        let r = kit::send_to(c.sock.fd(), c.sock.is_unix(), data, addr);
        if matches!(&r, Err(e) if e.kind() == io::ErrorKind::WouldBlock) {
            return c.sock.try_io(Interest::WRITABLE, || r);
        }
        r
    }

    /// [`Io::try_recv_from`](aioport::Io::try_recv_from).
    pub(crate) fn recv_from(&mut self, h: Handle, buf: &mut [u8]) -> io::Result<RecvMeta> {
        let c = self.get_mut(h).ok_or_else(not_open)?;
        let unix = c.sock.is_unix();
        let fd = c.sock.fd();
        c.sock.try_io(Interest::READABLE, || kit::recv_from(fd, unix, buf))
    }
}

impl Loop {
    /// Opens a datagram endpoint for `protocol` (asyncio's `create_datagram_endpoint`),
    /// with the poll loop's rules: UDP over IPv4 or IPv6 for [`DatagramAddr::Inet`], a
    /// Unix datagram socket for [`DatagramAddr::Unix`].
    ///
    /// * `local_addr`: where to bind — port 0 picks a free port; `Unix(Some(path))` binds a
    ///   path (a stale socket file there is removed first, as asyncio does; a path
    ///   starting with a NUL byte is an abstract name); `Unix(None)` autobinds to a
    ///   kernel-chosen abstract name. `None`: a UDP socket binds on its first send, a Unix
    ///   socket stays unbound.
    /// * `remote_addr`: connects the socket: `sendto` then takes `None` or this address,
    ///   only this peer's datagrams arrive, and ICMP errors reach `error_received`.
    ///
    /// `connection_made` has run when this returns. Call it inside the loop's runtime.
    ///
    /// ```
    /// use std::net::SocketAddr;
    /// use aioport::{DatagramAddr, DatagramProtocol};
    /// use aioport_tokio::{DatagramOptions, Loop};
    ///
    /// struct Quiet;
    /// impl DatagramProtocol for Quiet {}
    ///
    /// let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    /// rt.block_on(async {
    ///     let mut lp = Loop::new();
    ///     let local = DatagramAddr::Inet(SocketAddr::from(([127, 0, 0, 1], 0)));
    ///     let opts = DatagramOptions::default();
    ///     let ep = lp.create_datagram_endpoint(Box::new(Quiet), Some(local), None, opts).await?;
    ///     assert!(matches!(ep.local_addr(), DatagramAddr::Inet(a) if a.port() != 0));
    ///     Ok::<(), Box<dyn std::error::Error>>(())
    /// })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::DatagramAddress`] when the addresses do not make an endpoint (neither
    /// given, families differ, UDP options on a Unix socket); [`Error::Datagram`] when
    /// the socket could not be created, configured, bound, connected or registered.
    pub async fn create_datagram_endpoint(
        &mut self,
        protocol: Box<dyn DatagramProtocol>,
        local_addr: Option<DatagramAddr>,
        remote_addr: Option<DatagramAddr>,
        options: DatagramOptions,
    ) -> Result<DatagramEndpoint, Error> {
        let opened = kit::open(local_addr.as_ref(), remote_addr.as_ref(), options)?;
        let failed = |error| Error::Datagram {
            local: local_addr.clone(),
            remote: remote_addr.clone(),
            error,
        };
        let sock = if opened.unix {
            Sock::Unix(Rc::new(UnixDatagram::from_std(opened.fd.into()).map_err(failed)?))
        } else {
            Sock::Udp(Rc::new(UdpSocket::from_std(opened.fd.into()).map_err(failed)?))
        };
        let mut extra = Extra::default().with_fd(sock.fd().as_raw_fd());
        if let DatagramAddr::Inet(a) = &opened.local {
            extra = extra.with_sockname(*a);
        }
        if let Some(DatagramAddr::Inet(a)) = &remote_addr {
            extra = extra.with_peername(*a);
        }
        let h = self.registry.insert_datagram(protocol, remote_addr.clone(), extra);
        self.io.dgram.insert(h.handle(), sock, &self.shared);
        // Delivers connection_made now, as asyncio's awaited endpoint has; the first
        // serve arms the wakers.
        self.with(|_| ());
        self.queue_datagram(h.handle());
        Ok(DatagramEndpoint::new(h, opened.local, opened.recv_buffer_size))
    }

    /// Puts the endpoint `h` in the local ready list (once); false if `h` is not one.
    pub(crate) fn queue_datagram(&mut self, h: Handle) -> bool {
        let Some(c) = self.io.dgram.get_mut(h) else { return false };
        if !c.queued {
            c.queued = true;
            self.ready.push_back(Key::Conn(h));
        }
        true
    }

    /// Serves one datagram endpoint: flush, receive while wanted (at most `READ_BUDGET`
    /// datagrams), report a pending error, then arm the wakers. False if `h` is not one.
    pub(crate) fn serve_datagram(&mut self, h: Handle, now: Instant, woken: bool) -> bool {
        let Some(c) = self.io.dgram.get_mut(h) else { return false };
        if woken {
            c.wake.taken();
        } else {
            c.queued = false;
        }
        let Ok(interest) = self.registry.interest(h) else { return true };
        if interest.write {
            let r = self.registry.on_writable(h, now, &mut self.io);
            self.report_datagram(h, r);
        }
        let mut budget_left = true;
        for n in 0..=READ_BUDGET {
            if !self.io.dgram.contains(h) || !self.registry.interest(h).is_ok_and(|i| i.read) {
                break;
            }
            if n == READ_BUDGET {
                budget_left = false;
                break;
            }
            let r = self.registry.on_readable(h, now, &mut self.io);
            let failed = r.is_err();
            self.report_datagram(h, r);
            // Nothing left to read: tokio cleared the readiness (`WouldBlock`).
            let ready = self.io.dgram.get_mut(h).is_some_and(|c| {
                let mut cx = Context::from_waker(&c.waker);
                c.sock.poll_recv_ready(&mut cx).is_ready()
            });
            if failed || !ready {
                break;
            }
        }
        if !budget_left {
            self.queue_datagram(h);
        }
        self.check_datagram_error(h, now);
        self.arm_datagram(h);
        self.after_registry(now);
        true
    }

    /// `EPOLLERR` (a pending ICMP error) reaches `error_received` now, whether or not the
    /// endpoint reads; the watcher is then armed again for the next one.
    fn check_datagram_error(&mut self, h: Handle, now: Instant) {
        let Some(c) = self.io.dgram.get_mut(h) else { return };
        let mut cx = Context::from_waker(&c.waker);
        if c.watch.as_mut().poll(&mut cx).is_pending() {
            return;
        }
        let pending = kit::take_error(c.sock.fd()).unwrap_or_else(Some);
        // tokio keeps the error readiness until told: clear it, so the next watcher waits
        // for a new edge.
        let _ = c.sock.try_io(Interest::ERROR, || Err::<(), _>(io::ErrorKind::WouldBlock.into()));
        c.watch = c.sock.watch();
        if c.watch.as_mut().poll(&mut cx).is_ready() {
            self.queue_datagram(h);
        }
        if let Some(e) = pending {
            let r = self.registry.handle_error(h, e.into(), now, &mut self.io);
            self.report_datagram(h, r);
        }
    }

    /// Asks tokio for readiness in each direction the endpoint wants; already ready queues
    /// it for the next turn.
    fn arm_datagram(&mut self, h: Handle) {
        let Ok(interest) = self.registry.interest(h) else { return };
        let Some(c) = self.io.dgram.get_mut(h) else { return };
        if c.queued {
            return;
        }
        let mut cx = Context::from_waker(&c.waker);
        let ready = (interest.read && c.sock.poll_recv_ready(&mut cx).is_ready())
            || (interest.write && c.sock.poll_send_ready(&mut cx).is_ready());
        if ready {
            self.queue_datagram(h);
        }
    }

    fn report_datagram(&mut self, h: Handle, r: Result<(), DriverError>) {
        if let Err(error) = r {
            (self.hook)(ErrorReport::Driver { handle: h, error });
        }
    }
}
