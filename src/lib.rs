//! # aioport
//!
//! Python asyncio's transports and protocols as **sans-IO state machines**: buffering, EOF,
//! closing, abort and high/low-watermark flow control, with no I/O of their own.
//!
//! A protocol author implements [`Protocol`] once — asyncio's callbacks `connection_made`,
//! `data_received`, `eof_received`, `pause_writing`, `resume_writing`, `connection_lost`,
//! plus `BufferedProtocol`'s `get_buffer` / `buffer_updated` — and runs it unchanged on any
//! driver: a poll loop, an async runtime, a hand-written loop (see
//! `examples/manual_loop.rs`), or a deterministic in-memory test. Datagram endpoints
//! ([`DatagramProtocol`]) and child processes ([`SubprocessProtocol`], see
//! [`subprocess`]) work the same way.
//!
//! # The model
//!
//! * A [`Registry`] is the state of one loop: every transport with its protocol (a trait
//!   object, so one loop holds many protocol types), timers, `call_soon` / `call_later`
//!   closures and the requests protocols made of the driver.
//! * The **driver** owns the sockets and the clock. It implements [`Io`] over its sockets
//!   and reports what happened: readable, writable, time passed, a connect finished.
//! * The registry does the reads and sends through `Io` and calls protocols — **one callback
//!   at a time, never nested**. A callback acts on any transport of its loop through its
//!   [`Ctx`]; those calls change state at once and only *schedule* the callbacks they
//!   cause. After a callback returns, every transport it touched is served before the
//!   driver does more I/O.
//!
//! ```
//! use std::io::{self, IoSlice};
//! use std::time::Instant;
//! use aioport::{CallbackResult, Ctx, Extra, Handle, Io, Protocol, Registry};
//!
//! /// Replies "pong" to every message and counts write-side pauses.
//! struct Pong;
//! impl Protocol for Pong {
//!     fn data_received(&mut self, ctx: &mut Ctx<'_>, data: &[u8]) -> CallbackResult {
//!         assert_eq!(data, b"ping");
//!         ctx.write_slice(ctx.stream(), b"pong")?;
//!         Ok(())
//!     }
//! }
//!
//! /// A socket in memory: `inbox` is what the peer sent, `sent` what we sent.
//! #[derive(Default)]
//! struct Mem { inbox: Vec<u8>, sent: Vec<u8>, closed: bool }
//! impl Io for Mem {
//!     fn try_send(&mut self, _: Handle, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
//!         bufs.iter().for_each(|b| self.sent.extend_from_slice(b));
//!         Ok(bufs.iter().map(|b| b.len()).sum())
//!     }
//!     fn try_recv(&mut self, _: Handle, buf: &mut [u8]) -> io::Result<usize> {
//!         if self.inbox.is_empty() { return Err(io::ErrorKind::WouldBlock.into()) }
//!         let n = buf.len().min(self.inbox.len());
//!         buf[..n].copy_from_slice(&self.inbox[..n]);
//!         self.inbox.drain(..n);
//!         Ok(n)
//!     }
//!     fn shutdown_write(&mut self, _: Handle) -> io::Result<()> { Ok(()) }
//!     fn close(&mut self, _: Handle) { self.closed = true }
//! }
//!
//! let now = Instant::now();
//! let mut io = Mem::default();
//! let mut reg = Registry::new(now);
//! let h = reg.insert_stream(Box::new(Pong), Extra::default());
//! reg.dispatch(now, &mut io);                      // connection_made
//!
//! io.inbox.extend_from_slice(b"ping");             // the peer sends...
//! reg.on_readable(h.handle(), now, &mut io)?;      // ...the driver saw it readable
//! assert_eq!(io.sent, b"pong");                    // sent at once: asyncio's fast path
//!
//! reg.enter(now, &mut io, |ctx| ctx.close(h))?;    // user code outside callbacks
//! assert!(io.closed && reg.is_empty());            // connection_lost delivered, removed
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Testing a protocol without sockets
//!
//! With the `testing` feature, `aioport::testing` drives the same registry in memory and
//! in virtual time: `Sim` joins transports (or a transport and the test itself) with
//! links that apply seeded faults — partial sends, read chunking, stalls, latency, resets
//! — and checks the loop's invariants after every step; `Scripted` dictates every answer
//! of one socket, like CPython's mocked-socket tests. Same seed, same run.
//!
//! ```
//! # #[cfg(feature = "testing")] {
//! use std::time::Instant;
//! use aioport::{CallbackResult, Ctx, Protocol};
//! use aioport::testing::{Event, Sim, SimConfig};
//!
//! struct Echo;
//! impl Protocol for Echo {
//!     fn data_received(&mut self, ctx: &mut Ctx<'_>, data: &[u8]) -> CallbackResult {
//!         Ok(ctx.write_slice(ctx.stream(), data)?)
//!     }
//! }
//!
//! let mut sim = Sim::with_config(Instant::now(), SimConfig::new(1).max_read(2));
//! let (h, peer) = sim.open(Echo);
//! sim.peer_send(peer, b"hello");
//! sim.run_until_idle();
//! assert_eq!(sim.peer_received(peer), b"hello");
//! assert_eq!(sim.transcript(h)[1..], [Event::data(b"he"), Event::data(b"ll"), Event::data(b"o")]);
//! # }
//! ```
//!
//! # Writing a relay
//!
//! The most common real use of flow control is a relay (a proxy, a tunnel, a gateway): one
//! connection's protocol writes into another connection's transport. Both connections live
//! in one loop, so each side acts on the *other* side's transport directly through its
//! [`Ctx`] — no channel, no task, no copy beyond the transports' own queues:
//!
//! * `connection_made` of the accepted side pauses its own reading and opens the upstream
//!   with [`Ctx::connect`]; the upstream side's `connection_made` resumes it.
//! * `data_received` writes into the other side's transport.
//! * **Back-pressure end to end**: `pause_writing` on one side pauses *reading on the
//!   other*; `resume_writing` resumes it. Each write buffer then stays within its
//!   high-water mark plus one read, however slow either peer is.
//! * **Half-close**: `eof_received` forwards `write_eof` to the other side and returns
//!   `Ok(true)` (keep-open), so the other direction goes on; once both directions saw EOF,
//!   both close.
//! * **Ends**: `connection_lost(None)` closes the other side after its queue drains;
//!   `connection_lost(Some(err))` (a reset) aborts it.
//!
//! ```
//! # #[cfg(feature = "testing")] {
//! use std::cell::Cell;
//! use std::net::SocketAddr;
//! use std::rc::Rc;
//! use std::time::Instant;
//! use aioport::{CallbackResult, ConnectionError, Ctx, Endpoint, Protocol, StreamHandle};
//! use aioport::testing::Sim;
//!
//! /// The two transports of one relay.
//! #[derive(Default)]
//! struct Link { down: Cell<Option<StreamHandle>>, up: Cell<Option<StreamHandle>> }
//!
//! struct Side { link: Rc<Link>, upstream: Option<Endpoint> }
//!
//! impl Side {
//!     fn other(&self, ctx: &Ctx<'_>) -> Option<StreamHandle> {
//!         let (down, up) = (self.link.down.get(), self.link.up.get());
//!         if down == Some(ctx.stream()) { up } else { down }
//!     }
//! }
//!
//! impl Protocol for Side {
//!     fn connection_made(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
//!         if let Some(to) = self.upstream.clone() {
//!             self.link.down.set(Some(ctx.stream()));
//!             ctx.pause_reading(ctx.stream())?; // nothing to forward to yet
//!             ctx.connect(to, Box::new(Side { link: self.link.clone(), upstream: None }));
//!         } else {
//!             self.link.up.set(Some(ctx.stream()));
//!             if let Some(down) = self.link.down.get() {
//!                 ctx.resume_reading(down)?;
//!             }
//!         }
//!         Ok(())
//!     }
//!     fn data_received(&mut self, ctx: &mut Ctx<'_>, data: &[u8]) -> CallbackResult {
//!         match self.other(ctx) {
//!             Some(other) => Ok(ctx.write_slice(other, data)?),
//!             None => Ok(ctx.abort(ctx.stream())?),
//!         }
//!     }
//!     fn pause_writing(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
//!         if let Some(other) = self.other(ctx) { ctx.pause_reading(other)?; }
//!         Ok(())
//!     }
//!     fn resume_writing(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
//!         if let Some(other) = self.other(ctx) { ctx.resume_reading(other)?; }
//!         Ok(())
//!     }
//!     fn eof_received(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult<bool> {
//!         if let Some(other) = self.other(ctx) { ctx.write_eof(other)?; }
//!         Ok(true) // keep the other direction going
//!     }
//!     fn connection_lost(&mut self, ctx: &mut Ctx<'_>, err: Option<ConnectionError>) -> CallbackResult {
//!         if let Some(other) = self.other(ctx) {
//!             let _ = if err.is_some() { ctx.abort(other) } else { ctx.close(other) };
//!         }
//!         Ok(())
//!     }
//! }
//!
//! /// The upstream: echoes, and closes on EOF.
//! struct Echo;
//! impl Protocol for Echo {
//!     fn data_received(&mut self, ctx: &mut Ctx<'_>, data: &[u8]) -> CallbackResult {
//!         Ok(ctx.write_slice(ctx.stream(), data)?)
//!     }
//! }
//!
//! let upstream = Endpoint::Addr(SocketAddr::from(([127, 0, 0, 1], 7)));
//! let mut sim = Sim::new(Instant::now(), 1);
//! sim.listen(upstream.clone(), || Box::new(Echo));
//! // The harness's peer plays the client of an accepted connection.
//! let relay = Side { link: Rc::default(), upstream: Some(upstream) };
//! let (_down, client) = sim.open(relay);
//! sim.peer_send(client, b"through the relay");
//! sim.run_until_idle();
//! assert_eq!(sim.peer_received(client), b"through the relay");
//! # }
//! ```
//!
//! `examples/proxy.rs` is the complete relay on the poll loop (`examples/support/relay.rs`:
//! both EOFs, upstream connect failures, counters); the conformance suite runs it on every
//! driver — 256 MiB byte-exact, a client that stops reading while the upstream keeps
//! sending (the relay's buffers are asserted to stay within high water plus one read),
//! half-close both ways, resets, 1,000 short-lived connections — and
//! `tests/relay_property.rs` checks it on the harness under random chunking and stalls.
//!
//! # The driving contract
//!
//! 1. Insert each connected or accepted socket with [`Registry::insert_stream`] (or a pipe
//!    half), then call [`Registry::dispatch`] to deliver `connection_made`.
//! 2. Implement [`Io`] over your sockets only (not over the struct holding the registry).
//!    Return `WouldBlock` when the socket refuses; any other error ends that transport.
//! 3. Report readiness with [`Registry::on_readable`] / [`Registry::on_writable`] for the
//!    transports whose [`Registry::interest`] asks for it. With completion-based I/O use
//!    [`Registry::poll_transmit`] / [`Registry::handle_sent`] and
//!    [`Registry::handle_received`] instead.
//! 4. After every call, drain [`Registry::poll_io`] (transports whose interest changed:
//!    each reported once, so you never scan all handles), [`Registry::poll_request`]
//!    (connections protocols asked for; answer with [`Registry::handle_connected`] /
//!    [`Registry::handle_connect_failed`]) and [`Registry::poll_error`] (asyncio's
//!    exception handler: log it).
//! 5. Wait until readiness or [`Registry::poll_timeout`], then call
//!    [`Registry::handle_timeout`] with the current time. The core never reads a clock.
//! 6. Forget a transport when [`Io::close`] is called for it; every later call with its
//!    handle returns [`DriverError`], never panics.
//! 7. Child processes: [`Registry::insert_subprocess`] before spawning (it returns the
//!    pipe handles), then [`Registry::handle_spawned`] (or
//!    [`Registry::handle_spawn_failed`]); drive the pipes like any pipe; report the reaped
//!    exit with [`Registry::handle_exited`]; carry out [`Io::send_signal`].
//!
//! Any interleaving of driver calls is legal, and polling without new input yields no new
//! work: a busy loop can only come from a driver that ignores `WouldBlock`.
//!
//! # The canonical driver loop
//!
//! ```text
//! loop {
//!     let timeout = registry.poll_timeout().map(|t| t - now);     // rounded up
//!     let events = poller.wait(timeout);
//!     let now = clock.now();
//!     for (h, readiness) in events {
//!         if readiness.readable && registry.interest(h)?.read { registry.on_readable(h, now, &mut io)? }
//!         if readiness.writable && registry.interest(h)?.write { registry.on_writable(h, now, &mut io)? }
//!     }
//!     registry.handle_timeout(now, &mut io);
//!     while let Some(h) = registry.poll_io() { poller.update(h, registry.interest(h)) }
//!     while let Some(req) = registry.poll_request() { start(req) }
//!     while let Some(err) = registry.poll_error() { log(err) }
//! }
//! ```
//!
//! `examples/manual_loop.rs` is a complete, running version over blocking `TcpStream`s.
//!
//! # Callbacks are derived from state
//!
//! Nothing is queued as an event. Each transport computes its next callback from its state
//! by a fixed priority table; dispatch asks, delivers, and asks again:
//!
//! | rank | callback | when |
//! |---|---|---|
//! | 1 | `connection_made` | not yet delivered (always first, even if closed since) |
//! | 2 | `pause_writing` / `resume_writing` | the protocol's view differs from the state; strictly alternating; a whole episode that happened before delivery is delivered as both |
//! | 3 | `data_received` | held data, while reading and not closing |
//! | 4 | `eof_received` | the peer's EOF, after the data before it, while reading and not closing |
//! | 5 | `connection_lost` | the socket was closed and nothing above is pending; exactly once |
//!
//! Callback results follow asyncio: an `Err` from `data_received`, `get_buffer`,
//! `buffer_updated`, `eof_received` (and `handle_timeout`, `handle_wake`) ends the
//! connection with `connection_lost(Some(..))`; from `connection_made`, `pause_writing`,
//! `resume_writing`, `request_completed` or `connection_lost` it is reported through
//! [`Registry::poll_error`] and the connection continues.
//!
//! A **panic** in a protocol is caught (`catch_unwind`): that protocol is dropped and hears
//! nothing more, its transport is aborted, the error queue is told, and every other
//! transport keeps its pending callbacks. Building with `panic = "abort"` disables this.
//!
//! # Differences from asyncio
//!
//! aioport follows asyncio's semantics (the default limits 64 KiB / 16 KiB, pause when the
//! buffer is `> high`, resume when `<= low`, `close()` flushes, `abort()` drops, keep-open
//! EOF), and decides where CPython is inconsistent:
//!
//! | where CPython is odd or silent | aioport |
//! |---|---|
//! | writes after the connection is lost are silently dropped (warning on the 5th) | `Err(WriteError::Closed)` |
//! | writes after `close()` are accepted or dropped depending on whether the buffer was empty (gh-115514) | always `Err(WriteError::Closing)`; what was queued before `close()` is still flushed |
//! | `resume_writing` while a `close()` flush drains | delivered, as CPython does; never after `abort()` or a fatal error |
//! | a write crosses high water, then the same callback calls `close()` | `pause_writing` is still delivered, before `connection_lost` |
//! | `set_write_buffer_limits` re-checks only the pause edge | re-checks both edges |
//! | `is_reading()` stays true after a keep-open EOF | false once EOF was received |
//! | `writelines` skips flow control / loses empty chunks (gh-127655, gh-155888) | same guards as `write`, empty chunks skipped |
//! | the write pipe resumes only when fully drained | resumes at `<= low` like streams |
//! | datagram size accounting leaks 8 bytes per datagram (gh-135444) | `len + 8` on enqueue and dequeue |
//! | an unconnected datagram transport still sends after close | refused like a connected one (`WriteError::Closing`) |
//! | uvloop makes datagram send errors fatal (uvloop#601) | never fatal: `error_received`, the datagram dropped, the rest kept |
//! | unbounded write buffer | optional hard limit → `WriteError::BufferFull` (off by default) |
//! | `pause_writing` / `resume_writing` run synchronously inside `write()` | the *state* changes inside `write()` (`is_writing_paused()` is true when it returns); the callback is delivered right after the current callback |
//! | `get_buffer(-1)`: the size hint is always -1 | the hint is the loop's read size (256 KiB) |
//! | writelines behind a queue: 3.12+ `writelines` tries to send at once even with data already buffered | like `write` (and CPython's own `write`): queued behind waiting data, sent when the driver reports the socket writable (it refused the data before, so trying again is a wasted syscall) |
//! | a resume then a pause before delivery: CPython calls both synchronously | neither is delivered: callbacks bring the protocol's view up to date, and a paused protocol that is paused again is owed nothing |
//! | subprocess signals after the exit go to `os.kill(pid)` until `connection_lost` (a recycled pid can be hit, gh-87744) | nothing reaches the driver after the exit was reported (the poll loop signals through a pidfd); `Ok` until `connection_lost`, then `SignalError::ProcessLookup` |
//! | 3.13's `wait()` resolves only at `connection_lost`, so a grandchild holding stdout hangs it | `process_exited` and `Ctx::returncode` at the exit itself (3.12 and gh-119710 behaviour) |
//! | `get_pid()` is known before `connection_made` | the pid is known from the driver's `handle_spawned`, which is also what delivers `connection_made`; a signal before it is `SignalError::NotSpawned` |
//! | `get_returncode()` works after `connection_lost` | the handle is stale then; read the code in `process_exited` |
//! | SSL `write_eof()` raises `NotImplementedError` (no half-close, cpython#86366) | TLS 1.3: `close_notify`, reading continues; TLS 1.2: `can_write_eof()` false and `write_eof()` refused at the call ([`HandleError::WrongKind`]), the transport unchanged (feature `tls`) |
//! | `start_tls` on a transport paused for writing: the SSL protocol later gets `resume_writing` without a pause and asserts (gh-109051, uvloop#564) | the engine's first flow callback is `pause_writing` (the protocol swap's rule), `resume_writing` follows when the transport drains |
//! | `start_tls` takes no bytes already read: what a protocol read past the upgrade point cannot be handed over | `Ctx::start_tls(h, engine, received)` feeds `received` to the engine first |
//! | `await start_tls(...)` returns the new transport to the caller; the protocol object, unchanged, saw `connection_made` once | the app protocol (a new object) receives `connection_made` with its new transport; a controlling protocol on another transport also hears `request_completed`; the drivers' `Loop::start_tls` returns the transport |
//! | `loop.sendfile` swaps in `_SendfileFallbackProtocol` and pauses reading (zero-copy and fallback alike) | the protocol stays and keeps reading; during the fallback its `pause_writing` / `resume_writing` are held back and its view is handed back at the end (`resume_writing` if it was paused and the buffer drained, `pause_writing` if it was not and the buffer is above high) — [`stream`] sendfile docs |
//! | `write_eof()` during a sendfile is not checked (it shuts the socket down under the send) | `Ctx::write_eof` fails with `HandleError::SendfileInProgress` |
//! | `close()` during a sendfile: the awaiting coroutine sees whatever the socket does next | the sendfile ends at once with `SendfileError::Closed { sent }` (before `connection_lost`), and what the fallback queued is still flushed |
//! | the fallback reads 16 KiB blocks | 64 KiB blocks ([`stream::SENDFILE_CHUNK`]); the buffer stays within high water plus one block |
//!
//! `tests/asyncio_diff.rs` replays 341 scripts recorded from CPython 3.13's real
//! `_SelectorSocketTransport` and checks every step against aioport, applying exactly these
//! differences.
//!
//! # Architecture notes
//!
//! Transports *served by a protocol* ([`Ctx::insert_served_stream`]) are how layered
//! transports such as TLS compose: the engine is the raw transport's protocol, the app
//! sees an ordinary stream transport whose sends go synchronously into the engine's sink
//! (an [`Io`] without access to the loop, so nothing re-enters), and which wakes the engine
//! through [`Protocol::handle_wake`]. With the `tls` feature, `aioport::tls` is that
//! engine, on rustls: the app protocol runs unchanged over TLS. `Ctx::start_tls` puts
//! the engine under a connection that is already open (STARTTLS), through the protocol
//! swap ([`Ctx::set_protocol`]'s rules).
#![forbid(unsafe_code)]
#![deny(clippy::disallowed_types, clippy::disallowed_methods)]
#![warn(missing_docs)]

pub mod datagram;
mod error;
mod extra;
mod flow;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
mod handle;
mod io;
mod lifecycle;
mod limits;
mod protocol;
mod registry;
mod send_queue;
pub mod stream;
pub mod subprocess;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
#[cfg(feature = "tls")]
pub mod tls;

pub use datagram::{DatagramAddr, DatagramTransport};
pub use error::{
    ConnectionError, DriverError, HandleError, IoError, LimitsError, ProtocolError, TimeOverflow,
    WriteError,
};
pub use extra::Extra;
pub use flow::{FlowControl, FlowEdge};
pub use handle::{
    AnyStreamHandle, DatagramHandle, FlowHandle, Handle, ReadHandle, ReadPipeHandle, StreamHandle,
    SubprocessHandle, TransportHandle, WriteHandle, WritePipeHandle,
};
pub use io::{Interest, Io};
pub use lifecycle::Lifecycle;
pub use limits::WriteBufferLimits;
pub use protocol::{CallbackResult, DatagramProtocol, Protocol, RequestId};
pub use registry::{
    Ctx, Endpoint, HeldRequest, LoopError, Registry, Request, TimerId, Trace, Tracer, TransportKind,
};
pub use send_queue::{SendPool, SendQueue};
pub use stream::{ReadPipeTransport, StreamTransport, WritePipeTransport};
pub use subprocess::{
    ExitStatus, SignalError, SubprocessPipes, SubprocessProtocol, SubprocessTransport, signal,
};
