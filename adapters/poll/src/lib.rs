//! # aioport-poll
//!
//! The built-in event loop for [`aioport`]: asyncio's loop — `create_server`,
//! `create_connection`, `call_soon`, `call_later`, `run_forever`, `stop` — on **mio**
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
//!   bounded queue and one `eventfd` wake-up per batch.
//! * Scaling past one core: one loop per thread, each with a server on the same port with
//!   [`ServerOptions::reuse_port`].
//!
//! This crate has no `unsafe` code: what mio lacks (`SO_REUSEPORT`, the backlog,
//! `SO_LINGER`, `RLIMIT_NOFILE`, pidfds) comes from rustix's safe API.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod driver;
mod error;
mod event_loop;
mod process;
mod remote;
mod server;
mod sockets;
mod sys;

pub use error::{Error, ErrorReport};
pub use event_loop::Loop;
pub use process::{Stdio, SubprocessOptions};
pub use remote::{LoopHandle, REMOTE_QUEUE_CAPACITY, RemoteError};
pub use server::{ProtocolFactory, Server, ServerId, ServerOptions};
pub use sys::raise_fd_limit;
