//! # aioport
//!
//! asyncio's transports and protocols as sans-IO state machines.
#![forbid(unsafe_code)]
#![deny(clippy::disallowed_types, clippy::disallowed_methods)]
#![warn(missing_docs)]

mod error;
mod extra;
mod flow;
mod handle;
mod io;
mod lifecycle;
mod limits;
mod protocol;
mod registry;
mod send_queue;
pub mod stream;

pub use error::{
    ConnectionError, DriverError, HandleError, IoError, LimitsError, ProtocolError, TimeOverflow,
    WriteError,
};
pub use extra::Extra;
pub use flow::{FlowControl, FlowEdge};
pub use handle::{
    AnyStreamHandle, Handle, ReadHandle, ReadPipeHandle, StreamHandle, WriteHandle, WritePipeHandle,
};
pub use io::{Interest, Io};
pub use lifecycle::Lifecycle;
pub use limits::WriteBufferLimits;
pub use protocol::{CallbackResult, Protocol, RequestId};
pub use registry::{Ctx, Endpoint, LoopError, Registry, Request, TimerId};
pub use send_queue::{SendPool, SendQueue};
pub use stream::{ReadPipeTransport, StreamTransport, WritePipeTransport};
