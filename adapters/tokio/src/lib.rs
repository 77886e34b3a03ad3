//! # aioport-tokio
//!
//! The tokio driver for [`aioport`]: asyncio's loop — `create_server`,
//! `create_connection`, `call_soon`, `call_later`, `run_forever`, `stop` — as one future
//! per loop on tokio. Protocols written against [`aioport::Protocol`] run on it unchanged:
//! switching from the built-in poll loop (`aioport-poll`) changes the bootstrap (an async
//! runtime, `.await` on the loop's methods), never the protocol code.
//!
//! ```
//! use std::cell::RefCell;
//! use std::rc::Rc;
//! use std::time::Duration;
//!
//! use aioport::{CallbackResult, Ctx, Endpoint, Protocol};
//! use aioport_tokio::{Loop, ServerOptions};
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
//! let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
//! rt.block_on(async {
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
//! * **One future per loop, not a task per transport.** A [`Loop`] owns a
//!   [`Registry`](aioport::Registry) and all its sockets; whichever of its async methods is
//!   awaited (`run_forever`, `run_until`, `create_connection`) drives it. Cross-transport
//!   calls (a relay) are therefore synchronous, exactly as on the poll loop.
//! * **O(ready) wake-ups.** Every socket has its own waker: its key plus an atomic
//!   "queued" flag. When tokio's I/O driver wakes it, it pushes the key onto the loop's
//!   ready queue (once) and wakes the loop's task. A turn serves exactly the keys in that
//!   queue, the ones [`Registry::poll_io`](aioport::Registry::poll_io) reports (interest
//!   changed), and its own ready list — it never walks all connections, and it asks
//!   tokio for readiness (`poll_read_ready` / `poll_write_ready`) only for those.
//! * **The core does the I/O decisions, tokio the syscalls.** Reads go through
//!   [`Registry::on_readable`](aioport::Registry::on_readable) into the loop-wide buffer
//!   (or a buffered protocol's memory), with tokio's `poll_read` — `try_read` plus
//!   clearing the readiness on a short read, so no confirming `EAGAIN` call; sends go
//!   straight from the caller's bytes with `poll_write` (one buffer) or
//!   `poll_write_vectored`. A `Pending` is the core's `WouldBlock` and leaves the
//!   connection's waker with tokio.
//! * **Timers** are one tokio `Sleep`, reset to
//!   [`Registry::poll_timeout`](aioport::Registry::poll_timeout); the core decides what
//!   is due, so nothing fires early.
//! * **Fairness.** A connection is read at most 8 times (8 × 256 KiB) per turn, a listener
//!   accepts at most 128 connections per turn; the loop yields to the runtime every 16
//!   turns. Tokio's cooperative budget is off inside the loop future (its own budget
//!   would make sockets look not ready in the middle of a turn).
//! * **Threads.** Protocols need not be `Send`: a loop stays on the thread that made it —
//!   a current-thread runtime, or `block_on` / a `LocalSet` with a multi-thread runtime
//!   (whose workers then run tokio's I/O driver and timers). Scaling past one core is one
//!   loop per thread, each with a server on the same port
//!   ([`ServerOptions::reuse_port`]), its protocols built on that thread from a `Send`
//!   factory: see [`spawn_loop`].
//! * Other tasks and threads use a [`LoopHandle`] (`call_soon_threadsafe`,
//!   `close_server`, `stop`, through a bounded queue) and, per transport, a
//!   [`RemoteStream`]: writes through a queue bounded in bytes at the transport's
//!   high-water mark (`write().await` waits, `try_write` returns `BufferFull`), counted
//!   in its `write_buffer_size()` as external pending bytes; `drain().await`,
//!   `wait_closed().await`, close, abort, pause and resume reading.
//!
//! This crate has no `unsafe` code: what tokio lacks (`SO_REUSEPORT`, the backlog,
//! `SO_LINGER`, `shutdown(SHUT_WR)` on a borrowed socket) comes from rustix's safe API.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod driver;
mod event_loop;
mod remote_stream;
mod server;
mod sockets;
mod thread;
#[cfg(feature = "tls")]
mod tls;

pub use aioport_async_kit::{
    Error, ErrorReport, LoopHandle, REMOTE_QUEUE_CAPACITY, RemoteError, ServerId, ServerOptions,
};
pub use event_loop::Loop;
pub use remote_stream::RemoteStream;
pub use server::{ProtocolFactory, Server};
pub use thread::{LoopThread, Runtime, spawn_loop};
