//! Datagram endpoints on smol: UDP over IPv4 and IPv6, and Unix datagram sockets
//! (asyncio's `create_datagram_endpoint`), with the poll loop's semantics.
//!
//! The socket is an async-io `Async<OwnedFd>` in the loop's socket table beside the
//! streams, served the same way (readiness asked of async-io only when the transport wants
//! a direction and the last call found nothing), except that reading goes on until
//! `WouldBlock` — a short datagram says nothing about the queue — at most 64 datagrams per
//! turn. Opening the socket, `sendto` and `recvfrom` (`MSG_TRUNC`: a datagram larger than
//! the buffer reaches `error_received` as `InvalidData`, never cut) are
//! [`aioport_async_kit::datagram`]'s. ICMP errors on a connected socket surface as
//! `ECONNREFUSED` from a receive or send and reach `error_received`; the endpoint stays
//! usable, as in asyncio.

use std::os::fd::AsRawFd;

use aioport::{DatagramAddr, DatagramProtocol, Extra};
use aioport_async_kit::datagram::{self, DatagramEndpoint, DatagramOptions, Opened};
use async_io::Async;

use crate::sockets::Sock;
use crate::{Error, Loop};

impl Loop {
    /// Opens a datagram endpoint for `protocol` (asyncio's `create_datagram_endpoint`):
    /// UDP over IPv4 or IPv6 for [`DatagramAddr::Inet`], a Unix datagram socket for
    /// [`DatagramAddr::Unix`]. Addresses and options are the poll loop's (see
    /// [`datagram::open`]): port 0 picks a free port, `Unix(None)` autobinds, a
    /// `remote_addr` connects the socket (then `sendto` takes `None` or that address, and
    /// ICMP errors reach `error_received`).
    ///
    /// `connection_made` has run when this returns (it may already have queued datagrams);
    /// they are sent when the loop runs.
    ///
    /// ```
    /// use std::net::SocketAddr;
    /// use aioport::{DatagramAddr, DatagramProtocol};
    /// use aioport_smol::{DatagramOptions, Loop};
    ///
    /// struct Quiet;
    /// impl DatagramProtocol for Quiet {}
    ///
    /// let mut lp = Loop::new();
    /// let local = DatagramAddr::Inet(SocketAddr::from(([127, 0, 0, 1], 0)));
    /// let ep = lp.create_datagram_endpoint(Box::new(Quiet), Some(local), None, DatagramOptions::default())?;
    /// assert!(matches!(ep.local_addr(), DatagramAddr::Inet(a) if a.port() != 0));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::DatagramAddress`] when the addresses do not make an endpoint (neither
    /// given, families differ, UDP options on a Unix socket); [`Error::Datagram`] when the
    /// socket could not be created, configured, bound, connected or registered with
    /// async-io. `protocol` is then dropped without a callback.
    pub fn create_datagram_endpoint(
        &mut self,
        protocol: Box<dyn DatagramProtocol>,
        local_addr: Option<DatagramAddr>,
        remote_addr: Option<DatagramAddr>,
        options: DatagramOptions,
    ) -> Result<DatagramEndpoint, Error> {
        let Opened { fd, unix, local, recv_buffer_size } =
            datagram::open(local_addr.as_ref(), remote_addr.as_ref(), options)?;
        let mut extra = Extra::default().with_fd(fd.as_raw_fd());
        if let DatagramAddr::Inet(a) = &local {
            extra = extra.with_sockname(*a);
        }
        if let Some(DatagramAddr::Inet(a)) = &remote_addr {
            extra = extra.with_peername(*a);
        }
        let sock = Async::new(fd).map_err(|error| Error::Datagram {
            local: local_addr.clone(),
            remote: remote_addr.clone(),
            error,
        })?;
        let h = self.registry.insert_datagram(protocol, remote_addr, extra);
        self.io.insert(h.handle(), Sock::Datagram { sock, unix }, None);
        // Delivers connection_made now, as asyncio's awaited endpoint has; the first serve
        // sends what it queued and arms the socket's waker.
        self.with(|_| ());
        self.queue(h.handle());
        Ok(DatagramEndpoint::new(h, local, recv_buffer_size))
    }
}
