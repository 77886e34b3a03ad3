//! # aioport-poll
//!
//! The built-in event loop for [`aioport`]: asyncio's loop — `create_server`,
//! `create_connection`, `create_datagram_endpoint`, `call_soon`, `call_later`,
//! `run_forever`, `stop` — on **mio**
//! (epoll on Linux), one thread, no async runtime. Protocols written against
//! [`aioport::Protocol`] run on it unchanged.
//!
//! ```
//! use std::cell::RefCell;
//! use std::rc::Rc;
//! use std::time::Duration;
//!
//! use aioport::{CallbackResult, Ctx, Endpoint, Protocol};
//! use aioport_poll::{Loop, ServerOptions};
//!
//! /// Echoes every byte; stops reading while the peer does not keep up.
//! struct Echo;
//! impl Protocol for Echo {
//!     fn data_received(&mut self, ctx: &mut Ctx<'_>, data: &[u8]) -> CallbackResult {
//!         ctx.write_slice(ctx.stream(), data)?;
//!         Ok(())
//!     }
//!     fn pause_writing(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
//!         Ok(ctx.pause_reading(ctx.stream())?)
//!     }
//!     fn resume_writing(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
//!         Ok(ctx.resume_reading(ctx.stream())?)
//!     }
//! }
//!
//! /// Sends a greeting and keeps the echo.
//! struct Client(Rc<RefCell<Vec<u8>>>);
//! impl Protocol for Client {
//!     fn connection_made(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
//!         ctx.write(ctx.stream(), &b"hello"[..])?;
//!         Ok(())
//!     }
//!     fn data_received(&mut self, ctx: &mut Ctx<'_>, data: &[u8]) -> CallbackResult {
//!         self.0.borrow_mut().extend_from_slice(data);
//!         if self.0.borrow().len() == 5 {
//!             ctx.close(ctx.stream())?;
//!         }
//!         Ok(())
//!     }
//! }
//!
//! let mut lp = Loop::new()?;
//! let server = lp.create_server("127.0.0.1:0", || Box::new(Echo), ServerOptions::default())?;
//! let echoed = Rc::new(RefCell::new(Vec::new()));
//! let client = Client(echoed.clone());
//! lp.create_connection(Endpoint::Addr(server.addr()), Box::new(client))?;
//! lp.run_until_timeout(|| echoed.borrow().len() == 5, Duration::from_secs(10))?;
//! assert_eq!(&echoed.borrow()[..], b"hello");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Datagrams
//!
//! [`Loop::create_datagram_endpoint`] opens a UDP socket (IPv4 or IPv6) or a Unix datagram
//! socket (a path, an autobound abstract name, or unbound) for a
//! [`DatagramProtocol`](aioport::DatagramProtocol), with [`DatagramOptions`]
//! (`SO_REUSEPORT`, `SO_BROADCAST`, `SO_RCVBUF`). A `remote_addr` connects it: `sendto`
//! then takes `None` or that address (another is a typed
//! [`WriteError::AddressMismatch`](aioport::WriteError::AddressMismatch)), and ICMP errors
//! arrive as `error_received` — never fatal, as in asyncio. Datagrams are received whole
//! into the loop's 256 KiB buffer (any UDP datagram fits); a larger Unix datagram is
//! reported to `error_received` as truncated, never delivered cut.
//!
//! ```
//! use std::cell::RefCell;
//! use std::net::SocketAddr;
//! use std::rc::Rc;
//! use std::time::Duration;
//!
//! use aioport::{CallbackResult, Ctx, DatagramAddr, DatagramProtocol};
//! use aioport_poll::{DatagramOptions, Loop};
//!
//! /// Echoes each datagram to its sender.
//! struct Echo;
//! impl DatagramProtocol for Echo {
//!     fn datagram_received(
//!         &mut self,
//!         ctx: &mut Ctx<'_>,
//!         data: &[u8],
//!         addr: Option<&DatagramAddr>,
//!     ) -> CallbackResult {
//!         ctx.sendto(ctx.datagram(), data, addr)?;
//!         Ok(())
//!     }
//! }
//!
//! /// Sends "ping" to its peer and keeps the reply.
//! struct Ping(Rc<RefCell<Vec<u8>>>);
//! impl DatagramProtocol for Ping {
//!     fn connection_made(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
//!         ctx.sendto(ctx.datagram(), b"ping", None)?;
//!         Ok(())
//!     }
//!     fn datagram_received(
//!         &mut self,
//!         _: &mut Ctx<'_>,
//!         data: &[u8],
//!         _: Option<&DatagramAddr>,
//!     ) -> CallbackResult {
//!         self.0.borrow_mut().extend_from_slice(data);
//!         Ok(())
//!     }
//! }
//!
//! let mut lp = Loop::new()?;
//! let any = DatagramAddr::Inet(SocketAddr::from(([127, 0, 0, 1], 0)));
//! let opts = DatagramOptions::default();
//! let server = lp.create_datagram_endpoint(Box::new(Echo), Some(any.clone()), None, opts)?;
//! let reply = Rc::new(RefCell::new(Vec::new()));
//! let remote = Some(server.local_addr().clone());
//! lp.create_datagram_endpoint(Box::new(Ping(reply.clone())), Some(any), remote, opts)?;
//! lp.run_until_timeout(|| !reply.borrow().is_empty(), Duration::from_secs(10))?;
//! assert_eq!(&reply.borrow()[..], b"ping");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # TLS
//!
//! With the feature `tls`, `Loop::create_tls_connection` and `Loop::create_tls_server`
//! run the core's TLS engine (`aioport::tls`, rustls with ring) under the app
//! protocol: asyncio's `create_connection(ssl=...)` / `create_server(ssl=...)`. The client
//! call returns once the handshake completed, or fails with a typed TLS error
//! (`Error::Tls`: bad certificate, wrong name, peer EOF, handshake timeout); a server's
//! failed handshakes go to the error hook. TCP and Unix endpoints alike.
//!
//! # Design
//!
//! * **One `epoll_wait` per iteration.** Every socket is registered once, for read and
//!   write, edge-triggered. A per-connection readiness cache remembers the edges; it is
//!   cleared only when the socket refuses (`WouldBlock`) or a read or write comes back
//!   short (the kernel raises a new edge when more arrives, so the confirming `EAGAIN`
//!   call is skipped). Pausing reading or queueing bytes therefore costs no syscall —
//!   the loop asks the registry's [`interest`](aioport::Registry::interest) instead of
//!   re-arming the fd — and a wait's timeout is rounded up to the next millisecond.
//! * **Only what changed is touched.** The loop serves the connections named by
//!   readiness events, by [`Registry::poll_io`](aioport::Registry::poll_io) (interest
//!   changed while the cache says ready, for example `resume_reading` with unread data)
//!   and by its ready list; it never walks all connections.
//! * **Fairness.** A connection is read at most 8 times (8 × 256 KiB) per iteration;
//!   if it is still readable it goes to the ready list, which makes the next wait
//!   non-blocking, and other connections are served first. Listeners accept at most 128
//!   connections per iteration, the same way.
//! * **The core does the I/O decisions.** Reads go through
//!   [`Registry::on_readable`](aioport::Registry::on_readable) (one read into the loop-wide
//!   256 KiB buffer, or into a buffered protocol's own memory); the write fast path and
//!   vectored flushes go through this crate's `Io::try_send` (`writev`). `EINTR` is
//!   retried; reset and `EPIPE` end the connection with `connection_lost(Some(..))`.
//! * `abort()` closes without flushing (the peer sees EOF, or a reset if unread data
//!   remained); [`Loop::reset`] forces a reset with `SO_LINGER` 0.
//! * Other threads use a [`LoopHandle`]: `call_soon_threadsafe` and `stop` through a
//!   bounded queue and one `eventfd` wake-up per batch.
//! * Scaling past one core: one loop per thread, each with a server on the same port with
//!   [`ServerOptions::reuse_port`].
//!
//! This crate has no `unsafe` code: what mio lacks (`SO_REUSEPORT`, the backlog,
//! `SO_LINGER`, `RLIMIT_NOFILE`, `SO_BROADCAST`, `SO_RCVBUF`, `recvfrom` with `MSG_TRUNC`,
//! Unix autobind) comes from rustix's safe API.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod datagram;
mod driver;
mod error;
mod event_loop;
mod remote;
mod server;
mod sockets;
mod sys;
#[cfg(feature = "tls")]
mod tls;

pub use datagram::{DatagramEndpoint, DatagramOptions};
pub use error::{Error, ErrorReport};
pub use event_loop::Loop;
pub use remote::{LoopHandle, REMOTE_QUEUE_CAPACITY, RemoteError};
pub use server::{ProtocolFactory, Server, ServerId, ServerOptions};
pub use sys::raise_fd_limit;
