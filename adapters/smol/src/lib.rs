//! # aioport-smol
//!
//! The smol driver for [`aioport`]: asyncio's loop — `create_server`,
//! `create_connection`, `call_soon`, `call_later`, `run_forever`, `stop` — as one future
//! per loop on smol's reactor (async-io). Protocols written against
//! [`aioport::Protocol`] run on it unchanged: switching from the built-in poll loop
//! (`aioport-poll`) or the tokio driver changes the bootstrap (`smol::block_on`, `.await`
//! on the loop's methods), never the protocol code.
//!
//! ```
//! use std::cell::RefCell;
//! use std::rc::Rc;
//! use std::time::Duration;
//!
//! use aioport::{CallbackResult, Ctx, Endpoint, Protocol};
//! use aioport_smol::{Loop, ServerOptions};
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
//! // `smol::block_on` is this function.
//! async_io::block_on(async {
//!     let mut lp = Loop::new();
//!     let server = lp.create_server("127.0.0.1:0", || Box::new(Echo), ServerOptions::default()).await?;
//!     let echoed = Rc::new(RefCell::new(Vec::new()));
//!     let client = Client(echoed.clone());
//!     lp.create_connection(Endpoint::Addr(server.addr()), Box::new(client)).await?;
//!     lp.run_until_timeout(|| echoed.borrow().len() == 5, Duration::from_secs(10)).await?;
//!     assert_eq!(&echoed.borrow()[..], b"hello");
//!     Ok::<(), Box<dyn std::error::Error>>(())
//! })?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Design
//!
//! The tokio driver's shape (`aioport-tokio`), over async-io's `Async<T>` and `Timer`:
//!
//! * **One future per loop, not a task per transport.** A [`Loop`] owns a
//!   [`Registry`](aioport::Registry) and all its sockets; whichever of its async methods is
//!   awaited (`run_forever`, `run_until`, `create_connection`) drives it. Cross-transport
//!   calls (a relay) are therefore synchronous, exactly as on the poll loop.
//! * **O(ready) wake-ups.** Every socket has its own waker: its key plus an atomic
//!   "queued" flag. When smol's reactor wakes it, it pushes the key onto the loop's ready
//!   queue (once) and wakes the loop's task. A turn serves exactly the keys in that queue,
//!   the ones [`Registry::poll_io`](aioport::Registry::poll_io) reports (interest
//!   changed), and its own ready list — it never walks all connections, and it asks
//!   async-io for readiness (`poll_readable` / `poll_writable`) only for those, after
//!   their I/O found nothing more to do.
//! * **The core does the I/O decisions, async-io the readiness.** Reads are one
//!   non-blocking `read` into the loop-wide buffer (or a buffered protocol's memory)
//!   through [`Registry::on_readable`](aioport::Registry::on_readable), repeated only
//!   while a read filled the buffer; sends go straight from the caller's bytes (`send`
//!   for one buffer, `writev` for several). async-io's interest is oneshot and
//!   level-triggered: arming a waker re-arms it with one `epoll_ctl` (async-io's cost on
//!   every wait, as for any smol program), which also reports data already waiting, so a
//!   short read needs no confirming `EAGAIN` call.
//! * **Timers** are one async-io [`Timer`](async_io::Timer), set to
//!   [`Registry::poll_timeout`](aioport::Registry::poll_timeout); the core decides what
//!   is due, so nothing fires early.
//! * **Fairness.** A connection is read at most 8 times (8 × 256 KiB) per turn, a listener
//!   accepts at most 128 connections per turn; the loop yields to the executor every 16
//!   turns.
//! * **Threads.** Protocols need not be `Send`: a loop stays on the thread that made it
//!   (`smol::block_on`, or a `LocalExecutor` run on that thread). Scaling past one core
//!   is one loop per thread, each with a server on the same port
//!   ([`ServerOptions::reuse_port`]); [`spawn_loop`] starts a loop on a thread of its
//!   own.
//! * Other tasks and threads use a [`LoopHandle`] (`call_soon_threadsafe`,
//!   `close_server`, `stop`, through a bounded queue) and, per transport, a
//!   [`RemoteStream`] ([`Loop::remote_stream`]): writes through a queue bounded in bytes
//!   at the transport's high-water mark (`write().await` waits, `try_write` returns
//!   `BufferFull`), counted in its `write_buffer_size()` as external pending bytes;
//!   `drain().await`, `wait_closed().await`, close, abort, pause and resume reading.
//! * A server's life after `close` is asyncio 3.13's: [`Loop::close_clients`],
//!   [`Loop::abort_clients`], [`Loop::wait_closed`]; a Unix server's socket file is
//!   removed when it closes (unless replaced meanwhile).
//! * Beyond streams, as on the poll loop: pipe transports
//!   ([`Loop::connect_read_pipe`], [`Loop::connect_write_pipe`]), datagram endpoints
//!   ([`Loop::create_datagram_endpoint`]: UDP over IPv4 and IPv6, Unix datagram sockets)
//!   and child processes ([`Loop::subprocess_exec`], [`Loop::subprocess_shell`],
//!   [`Loop::wait_subprocess`]: the exit seen through the child's pidfd with async-io's
//!   readiness, reaped with `waitid`, signals through the pidfd, children killed and
//!   reaped when the loop is dropped). Every socket, pipe end and pidfd is one entry of
//!   the same table, served by the same wake-ups.
//!
//! This crate has no `unsafe` code: what async-io lacks (`SO_REUSEPORT`, the backlog,
//! `SO_LINGER`, `shutdown(SHUT_WR)`) comes from rustix's safe API; what is not specific
//! to smol (datagram sockets, child processes, the remote handles) from
//! `aioport-async-kit`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod datagram;
mod driver;
mod event_loop;
mod lifecycle;
mod pipes;
mod process;
mod sendfile;
mod server;
mod sockets;
mod thread;
#[cfg(feature = "tls")]
mod tls;

pub use aioport_async_kit::datagram::{DatagramEndpoint, DatagramOptions};
pub use aioport_async_kit::{
    Error, ErrorReport, LoopHandle, LoopThread, REMOTE_QUEUE_CAPACITY, RemoteError, RemoteStream,
    ServerId, ServerOptions,
};
pub use event_loop::Loop;
pub use process::{Stdio, SubprocessOptions};
pub use sendfile::FileSource;
pub use server::{ProtocolFactory, Server};
pub use thread::spawn_loop;
