//! # aioport-tokio
//!
//! The tokio driver for [`aioport`]: asyncio's loop — `create_server`,
//! `create_connection`, `create_unix_server`, `connect_read_pipe` / `connect_write_pipe`,
//! `create_datagram_endpoint`, `subprocess_exec` / `subprocess_shell`, `call_soon`,
//! `call_later`, `run_forever`, `stop` — as one future per loop on tokio. Protocols written against [`aioport::Protocol`] run on it unchanged:
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
//!   (whose workers then run tokio's I/O driver and timers). See [Multi-core](#multi-core).
//! * **Errors and hang-ups while idle.** A transport that wants neither to read nor to
//!   write (paused for reading, nothing queued) keeps a watcher on tokio's
//!   `ready(Interest::ERROR)`: a reset reaches `connection_lost` at once, as `EPOLLERR`
//!   does on the poll loop. The same watcher tells the write end of a pipe that its read
//!   end closed, and a datagram endpoint of a pending ICMP error (`error_received`).
//! * **Children** are spawned with std (`aioport_async_kit::process`) and watched through
//!   their pidfd with tokio's fd readiness; reaped with `waitid(P_PIDFD)`, signalled with
//!   `pidfd_send_signal`, killed and reaped if the loop is dropped first. Linux 5.3 or
//!   later; elsewhere the spawn fails.
//! * Other tasks and threads use a [`LoopHandle`] (`call_soon_threadsafe`,
//!   `close_server`, `stop`, through a bounded queue) and, per transport, a
//!   [`RemoteStream`]: writes through a queue bounded in bytes at the transport's
//!   high-water mark (`write().await` waits, `try_write` returns `BufferFull`), counted
//!   in its `write_buffer_size()` as external pending bytes; `drain().await`,
//!   `wait_closed().await`, close, abort, pause and resume reading.
//!
//! # Multi-core
//!
//! A loop is one thread's worth of work; a server scales past one core with N loops. The
//! driver has two ways to run them, and they are not the same thing:
//!
//! * **Thread-per-core** ([`spawn_server`], [`spawn_loops`]): N threads, each with its own
//!   current-thread runtime and one loop, each loop listening on the same port with
//!   `SO_REUSEPORT` so the kernel spreads connections. Nothing is shared: every wake-up
//!   stays on its thread. This is the mode for a dedicated server, and the one
//!   `examples/echo.rs --driver tokio-mt` runs. It is *not* tokio's work-stealing
//!   scheduler: a connection stays on the loop that accepted it, so a loop whose
//!   connections are busier than the others' is not relieved by idle threads.
//! * **Embedded in a multi-thread runtime** ([`spawn_loop`] with [`Runtime::Handle`]):
//!   the loop runs in a `LocalSet` on a thread of its own, and the runtime's workers run
//!   tokio's I/O driver and timers. Use it to share an existing runtime with other tasks.
//!   Its price: every I/O wake-up crosses threads (a worker wakes the loop thread), which
//!   costs about twice the server CPU per request of a current-thread loop in the echo
//!   benchmark (see the README's table).
//!
//! This crate has no `unsafe` code: what tokio lacks (`SO_REUSEPORT`, the backlog,
//! `SO_LINGER`, `shutdown(SHUT_WR)` on a borrowed socket) comes from rustix's safe API.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod datagram;
mod driver;
mod event_loop;
mod lifecycle;
mod loops;
mod pipes;
mod process;
mod sendfile;
mod server;
mod sockets;
mod thread;
#[cfg(feature = "tls")]
mod tls;

pub use aioport_async_kit::RemoteStream;
pub use aioport_async_kit::datagram::{DatagramEndpoint, DatagramOptions};
pub use aioport_async_kit::{
    Error, ErrorReport, LoopHandle, REMOTE_QUEUE_CAPACITY, RemoteError, ServerId, ServerOptions,
};
pub use event_loop::Loop;
pub use loops::{LoopGroup, ServerGroup, loops_per_core, spawn_loops, spawn_server};
pub use process::{Stdio, SubprocessOptions};
pub use sendfile::FileSource;
pub use server::{ProtocolFactory, Server};
pub use thread::{LoopThread, Runtime, spawn_loop};
