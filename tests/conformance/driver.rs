//! The scenario API: what a scenario needs from a driver. Implement [`Driver`] for a new
//! driver (tokio, smol, …) and add one `conformance!` line in `main.rs`; the scenarios
//! and protocols stay as they are.

use std::rc::Rc;

use aioport::{
    ConnectionError, Ctx, DatagramAddr, DatagramHandle, DatagramProtocol, Endpoint, LoopError,
    Protocol, StreamHandle, SubprocessHandle, SubprocessProtocol,
};

/// Wraps an app protocol for `Ctx::connect`: see [`Driver::client_wrap`].
pub type ClientWrap = Rc<dyn Fn(Box<dyn Protocol>) -> Box<dyn Protocol>>;

/// Builds the protocol of each connection a listener accepts.
pub type Factory = Box<dyn FnMut() -> Box<dyn Protocol>>;

/// A listening endpoint.
pub struct Listening {
    pub id: usize,
    pub endpoint: Endpoint,
}

/// One loop of some driver, with its listeners.
pub trait Driver {
    /// For messages.
    const NAME: &'static str;

    /// A fresh loop.
    fn new() -> Self;

    /// Accepts connections on a new (loopback) endpoint.
    fn listen(&mut self, factory: Factory) -> Listening;

    /// Stops accepting on a listener; connections already accepted go on. `false` if the
    /// driver cannot (the scenario is then skipped).
    fn close_listener(&mut self, id: usize) -> bool;

    /// Connects `protocol` to `to`, running the loop until `connection_made` was delivered
    /// or the connect failed.
    fn connect(
        &mut self,
        to: &Endpoint,
        protocol: Box<dyn Protocol>,
    ) -> Result<StreamHandle, ConnectionError>;

    /// What turns an app protocol into the one a protocol hands `Ctx::connect` for it:
    /// the app itself, or (the TLS axis) a TLS engine serving it. A closure, so protocols
    /// that connect from their callbacks (the relay) can keep it.
    fn client_wrap(&mut self) -> ClientWrap {
        Rc::new(|app| app)
    }

    /// An endpoint nobody listens on.
    fn unused_endpoint(&mut self) -> Endpoint;

    /// Runs user code with a `Ctx` outside callbacks.
    fn with<R>(&mut self, f: impl FnOnce(&mut Ctx<'_>) -> R) -> R;

    /// Resets `h`'s connection: the peer sees `ECONNRESET` (or an equivalent error).
    fn reset(&mut self, h: StreamHandle);

    /// Runs the loop until `done()`. Bounded: panics, naming `what`, when the driver's
    /// limit (real time or steps) is reached first.
    fn run_until(&mut self, what: &str, done: impl FnMut() -> bool);

    /// Errors the loop reported (its error hook), taken. Driver-level failures that are not
    /// a [`LoopError`] fail the test at once.
    fn take_errors(&mut self) -> Vec<LoopError>;

    /// Makes room for `n` concurrent connections (file descriptors) or panics with a
    /// message saying what limit to raise.
    fn prepare_connections(&mut self, n: usize);

    /// Transports in the loop.
    fn transports(&self) -> usize;

    /// Accepts connections on a new Unix stream socket (an [`Endpoint::Unix`] path);
    /// `None` if the driver has none (the scenario is then skipped).
    fn listen_unix(&mut self, _factory: Factory) -> Option<Listening> {
        None
    }

    /// Closes every connection listener `id` accepted, each after flushing (asyncio's
    /// `Server.close_clients`); `None` if the driver cannot. The listener may already be
    /// closed.
    fn close_clients(&mut self, _id: usize) -> Option<usize> {
        None
    }

    /// Runs the loop until listener `id` is closed and every connection it accepted has
    /// ended (asyncio's `Server.wait_closed`); bounded like `run_until`. False if the
    /// driver cannot.
    fn wait_closed(&mut self, _id: usize) -> bool {
        false
    }

    /// Opens a datagram endpoint bound as `bind` says, connected to `remote` if given, with
    /// `SO_RCVBUF` at least `recv_buffer` where the driver has sockets. `Err(why)` when
    /// the driver cannot (the scenario prints `SKIPPED (why)`): the default says the
    /// driver lacks datagrams; a driver also says so when the family is unavailable on
    /// this host (IPv6). Other failures panic.
    fn datagram_endpoint(
        &mut self,
        protocol: Box<dyn DatagramProtocol>,
        bind: Bind,
        remote: Option<DatagramAddr>,
        recv_buffer: Option<usize>,
    ) -> Result<Bound, String> {
        let _ = (protocol, bind, remote, recv_buffer);
        Err(format!("the {} driver has no datagram endpoints", Self::NAME))
    }

    /// A datagram address of `family` nobody is bound to (a closed port).
    fn unused_datagram_addr(&mut self, family: Family) -> DatagramAddr {
        let _ = family;
        panic!("the {} driver has no datagram endpoints", Self::NAME)
    }

    /// Starts a child running `program` with `protocol`, its stdio as `stdio` says;
    /// `connection_made` has been delivered when this returns. `Err(why)` when the driver
    /// cannot (the scenario prints `SKIPPED (why)`): the default says the driver has no
    /// subprocesses; a driver also says so for a behaviour it cannot play. Other failures
    /// panic. The driver reaps every child it started, at the latest when it is dropped.
    fn spawn(
        &mut self,
        protocol: Box<dyn SubprocessProtocol>,
        program: Program,
        stdio: ChildStdio,
    ) -> Result<SubprocessHandle, String> {
        let _ = (protocol, program, stdio);
        Err(format!("the {} driver has no subprocesses", Self::NAME))
    }

    /// A file holding `data`, as this driver sends files with `Ctx::sendfile` (zero-copy
    /// where it can). `Err(why)` when the driver has no sendfile support of its own (the
    /// scenario prints `SKIPPED (why)`).
    fn sendfile_file(
        &mut self,
        data: &[u8],
    ) -> Result<Box<dyn aioport::stream::SendfileSource>, String> {
        let _ = data;
        Err(format!("the {} driver has no zero-copy sendfile (not yet)", Self::NAME))
    }
}

/// What a child of a subprocess scenario does: portable behaviours, played by a real
/// program (`cat`, `sh -c`) on real drivers and scripted on the harness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Program {
    /// Copies stdin to stdout until EOF, then exits 0 (`cat`).
    Cat,
    /// Exits at once with this code, reading nothing.
    Exit(i32),
    /// Runs until a signal kills it (`exec sleep 30`).
    Sleep,
    /// Closes its stdout, then runs until a signal kills it.
    CloseStdoutThenSleep,
    /// Exits with this code at once, while a grandchild keeps stdout open; the grandchild
    /// writes `bye\n` to stdout and exits when the child's stdin is closed.
    GrandchildHoldsStdout(i32),
    /// Writes `out\n` to stdout, then `err\n` to stderr, then exits 0.
    OutThenErr,
}

/// How a scenario's child is connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildStdio {
    /// stdin, stdout and stderr are pipes to the loop.
    Pipes,
    /// stdin and stdout are pipes; stderr goes where stdout goes (`subprocess.STDOUT`).
    StderrToStdout,
}

/// The address family of a datagram scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
    Unix,
}

/// Where a datagram endpoint binds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bind {
    /// A fresh loopback address of the family: port 0 on 127.0.0.1 or ::1, a new path for
    /// Unix.
    Loopback(Family),
    /// A Unix socket named by the system (Linux autobind), so replies reach a client
    /// that chose no path.
    Autobind,
    /// This address.
    At(DatagramAddr),
}

/// A datagram endpoint a driver opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bound {
    pub handle: DatagramHandle,
    /// The bound address, as peers reach it.
    pub addr: DatagramAddr,
}
