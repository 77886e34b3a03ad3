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
//! # Other threads
//!
//! A [`LoopHandle`] runs closures on the loop (`call_soon_threadsafe`) and stops it; a
//! [`RemoteStream`] ([`Loop::remote_stream`]) is one transport's handle for other
//! threads, with the rules of the tokio and smol drivers' `RemoteStream`: writes wait in
//! a queue bounded at the transport's high-water mark and count in its
//! `write_buffer_size()`, so the protocol's flow control sees them. Here the waits block
//! with a timeout, and `*_async` variants work on any executor.
//!
//! ```
//! use std::cell::RefCell;
//! use std::rc::Rc;
//! use std::time::Duration;
//!
//! use aioport::{CallbackResult, Ctx, Endpoint, Protocol};
//! use aioport_poll::{Loop, ServerOptions};
//!
//! /// Keeps what it receives.
//! struct Sink(Rc<RefCell<Vec<u8>>>);
//! impl Protocol for Sink {
//!     fn data_received(&mut self, _: &mut Ctx<'_>, data: &[u8]) -> CallbackResult {
//!         self.0.borrow_mut().extend_from_slice(data);
//!         Ok(())
//!     }
//! }
//!
//! struct Quiet;
//! impl Protocol for Quiet {}
//!
//! let mut lp = Loop::new()?;
//! let got = Rc::new(RefCell::new(Vec::new()));
//! let sink = got.clone();
//! let opts = ServerOptions::default();
//! let server = lp.create_server("127.0.0.1:0", move || Box::new(Sink(sink.clone())), opts)?;
//! let h = lp.create_connection(Endpoint::Addr(server.addr()), Box::new(Quiet))?;
//! let remote = lp.remote_stream(h)?;
//! let writer = std::thread::spawn(move || {
//!     for word in ["one ", "two ", "three"] {
//!         // Waits (at most 10 s) while the queue is at high water.
//!         remote.write(word, Duration::from_secs(10))?;
//!     }
//!     Ok::<(), aioport::WriteError>(())
//! });
//! lp.run_until_timeout(|| got.borrow().len() == 13, Duration::from_secs(10))?;
//! writer.join().unwrap()?;
//! assert_eq!(&got.borrow()[..], b"one two three");
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
//! * Child processes ([`Loop::subprocess_exec`], [`Loop::subprocess_shell`]): their pipes
//!   share the readiness cache; the exit is seen through a pidfd and reaped with
//!   `waitid(P_PIDFD)` — no `SIGCHLD` handler, no `waitpid(-1)`; children still running
//!   when the loop is dropped are killed and reaped. Linux 5.3 or later.
//! * Other threads use a [`LoopHandle`]: `call_soon_threadsafe` and `stop` through a
//!   bounded queue and one `eventfd` wake-up per batch; and [`RemoteStream`]s, whose
//!   queues share that wake-up.
//! * **Servers in production.** A [`Server`] can [`close`](Server::close),
//!   [`close_clients`](Server::close_clients), [`abort_clients`](Server::abort_clients)
//!   and [`wait_closed`](Server::wait_closed) (bounded by the caller); the loop knows which
//!   server accepted which connection. With [`ServerOptions::max_connections`] a server
//!   stops calling `accept()` at its limit and resumes as soon as one of its connections
//!   ends. Out of descriptors (`EMFILE`, `ENFILE`, `ENOBUFS`, `ENOMEM`), a listener pauses
//!   for one second, as asyncio's does, and keeps serving what it has.
//! * **Unix stream sockets** ([`Loop::create_unix_server`],
//!   [`Loop::create_unix_connection`], [`UnixName`]): a stale socket file is removed
//!   before binding (never a live one, never a non-socket file), the file is removed when
//!   the server closes; abstract names on Linux.
//! * **Pipes** ([`Loop::connect_read_pipe`], [`Loop::connect_write_pipe`]) take an
//!   `OwnedFd` (pipe, FIFO, socket or tty), made non-blocking; a regular file is
//!   [`Error::NotAPipe`]. The write end is watched for reading too, so a closed read end
//!   ends the transport without a write (spec §13).
//! * **Client sockets** ([`ConnectOptions`]): `local_addr`, `SO_KEEPALIVE`,
//!   `IPV6_V6ONLY`, a connect timeout (resolution included), happy eyeballs (RFC 8305:
//!   interleaved families, staggered attempts, first success wins, losers closed);
//!   adopting sockets made elsewhere ([`Loop::create_connection_from`],
//!   [`Loop::create_server_from`]); [`Loop::socket_fd`] for options this crate does not
//!   wrap. Host names resolve on a helper thread that wakes the loop.
//! * **Foreign fds** ([`Loop::add_reader`], [`Loop::add_writer`]): callbacks with a `Ctx`,
//!   level-triggered like asyncio's (the fd is re-armed after each callback).
//! * **Signals** ([`Loop::stop_on_signals`]): SIGINT/SIGTERM stop the running loop
//!   cleanly, through signal-hook's self-pipe watched like any fd.
//! * Scaling past one core: one loop per thread, each with a server on the same port with
//!   [`ServerOptions::reuse_port`].
//!
//! This crate has no `unsafe` code: what mio lacks (`SO_REUSEPORT`, the backlog,
//! `SO_LINGER`, `RLIMIT_NOFILE`, socket options, `fstat`, non-blocking pipes, and for
//! datagrams `SO_BROADCAST`, `SO_RCVBUF`, `recvfrom` with `MSG_TRUNC`, Unix autobind, and pidfds)
//! comes from rustix's safe API, and signal handlers from signal-hook.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod clients;
mod connect;
mod datagram;
mod driver;
mod error;
mod event_loop;
mod extras;
mod eyeballs;
mod foreign;
mod lifecycle;
mod pipes;
mod process;
mod remote;
mod remote_stream;
mod sendfile;
mod server;
pub mod signal;
mod sockets;
mod sys;
#[cfg(feature = "tls")]
mod tls;
mod unix;

pub use connect::ConnectOptions;
pub use datagram::{DatagramEndpoint, DatagramOptions};
pub use error::{Error, ErrorReport};
pub use event_loop::Loop;
pub use foreign::FdCallback;
pub use process::{Stdio, SubprocessOptions};
pub use remote::{LoopHandle, REMOTE_QUEUE_CAPACITY, RemoteError};
pub use remote_stream::RemoteStream;
pub use sendfile::FileSource;
pub use server::{ProtocolFactory, Server, ServerId, ServerOptions};
pub use sys::raise_fd_limit;
pub use unix::{UnixName, UnixServer};
