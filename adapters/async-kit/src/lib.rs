//! # aioport-async-kit
//!
//! What the drivers for async runtimes — `aioport-tokio` and `aioport-smol` — share, so
//! that each driver crate holds only what differs: how it waits for readiness, reads,
//! writes and sleeps. Users reach these types through a driver crate's re-exports.
//!
//! * [`wake`]: the loop's ready queue and the per-socket wakers that fill it (DESIGN.md
//!   §6): each socket's waker pushes its key once until the loop takes it, so a wake-up
//!   costs O(ready), never O(sockets).
//! * [`LoopHandle`]: the `Send` face of a loop (`call_soon_threadsafe`, `close_server`,
//!   `stop`) through a bounded queue.
//! * [`RemoteStream`]: the `Send` handle to one stream transport (writes through a queue
//!   bounded in bytes at its high-water mark, counted as external pending bytes; `drain`,
//!   `wait_closed`), and [`RemoteStreams`], the loop's side of them.
//! * [`LoopThread`]: a loop on a thread of its own (what the drivers' `spawn_loop`
//!   return).
//! * [`Error`], [`ErrorReport`], [`ServerId`]: the loop's errors and server names;
//!   [`ServerOptions`]: how servers listen.
//! * [`datagram`]: opening datagram sockets and one `sendto` / `recvfrom` (`MSG_TRUNC`)
//!   on them, for the drivers' `create_datagram_endpoint`.
//! * [`pipe`]: what a descriptor must be to become a pipe transport.
//! * [`process`]: spawning children with the loop's pipes, watching and reaping them
//!   through a pidfd.
//! * [`sys`]: listeners with a chosen backlog, `SO_REUSEPORT`, `IPV6_V6ONLY`, and
//!   `SO_LINGER 0` for resets.
//! * [`unix::BoundFile`]: a Unix server's socket file, removed when the server closes
//!   unless it was replaced meanwhile.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod datagram;
mod error;
pub mod pipe;
pub mod process;
mod remote;
mod remote_stream;
pub mod sendfile;
mod server;
pub mod sys;
mod thread;
#[cfg(feature = "tls")]
pub mod tls;
pub mod unix;
pub mod wake;

pub use error::{Error, ErrorReport, ServerId};
pub use remote::{Command, LoopHandle, REMOTE_QUEUE_CAPACITY, RemoteCall, RemoteError};
pub use remote_stream::{RemoteStream, RemoteStreams};
pub use server::ServerOptions;
pub use thread::{LoopThread, Started};
