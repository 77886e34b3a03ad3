//! The scenarios on the tokio driver (`aioport-tokio`): real sockets on 127.0.0.1, under
//! a current-thread runtime ([`TokioCt`]) and under a multi-thread runtime whose workers
//! drive I/O and timers while the loop runs on the test's thread in a `LocalSet`
//! ([`TokioMt`]).

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::marker::PhantomData;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::rc::Rc;
use std::time::Duration;

use ::tokio::runtime::{Builder, Runtime};
use ::tokio::task::LocalSet;
use aioport::{
    ConnectionError, Ctx, DatagramAddr, DatagramProtocol, Endpoint, LoopError, Protocol,
    StreamHandle, SubprocessHandle, SubprocessProtocol,
};
use aioport_tokio::{
    DatagramOptions, Error, ErrorReport, Loop, Server, ServerId, ServerOptions, Stdio,
    SubprocessOptions,
};

use crate::driver::{Bind, Bound, ChildStdio, Driver, Factory, Family, Listening, Program};

/// No scenario takes more than this; a stuck one fails instead of hanging CI.
const LIMIT: Duration = Duration::from_secs(30);

/// A runtime flavour: how it is built and how the loop future is run on it.
pub trait Flavor {
    const NAME: &'static str;
    fn build() -> Runtime;
    fn block_on<F: Future>(rt: &Runtime, f: F) -> F::Output;
}

/// A current-thread runtime: the loop's thread also runs tokio's I/O driver.
pub struct CurrentThread;

impl Flavor for CurrentThread {
    const NAME: &'static str = "tokio-ct";
    fn build() -> Runtime {
        Builder::new_current_thread().enable_all().build().expect("build a runtime")
    }
    fn block_on<F: Future>(rt: &Runtime, f: F) -> F::Output {
        rt.block_on(f)
    }
}

/// A multi-thread runtime (2 workers); the loop runs in a `LocalSet` on this thread.
pub struct MultiThread;

impl Flavor for MultiThread {
    const NAME: &'static str = "tokio-mt";
    fn build() -> Runtime {
        Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("build a runtime")
    }
    fn block_on<F: Future>(rt: &Runtime, f: F) -> F::Output {
        LocalSet::new().block_on(rt, f)
    }
}

pub type TokioCt = Tokio<CurrentThread>;
pub type TokioMt = Tokio<MultiThread>;

pub struct Tokio<F> {
    // Dropped before the runtime: its sockets deregister from a live I/O driver.
    lp: Loop,
    rt: Runtime,
    servers: HashMap<usize, Server>,
    reports: Rc<RefCell<Vec<ErrorReport>>>,
    /// Unix socket files this driver bound, removed on drop.
    unix_paths: Vec<std::path::PathBuf>,
    flavor: PhantomData<F>,
}

impl<F> Drop for Tokio<F> {
    fn drop(&mut self) {
        for p in &self.unix_paths {
            let _ = std::fs::remove_file(p);
        }
    }
}

impl<F: Flavor> Driver for Tokio<F> {
    const NAME: &'static str = F::NAME;

    fn new() -> Self {
        let mut lp = Loop::new();
        let reports = Rc::new(RefCell::new(Vec::new()));
        let sink = reports.clone();
        lp.set_error_handler(move |r| sink.borrow_mut().push(r));
        Tokio {
            lp,
            rt: F::build(),
            servers: HashMap::new(),
            reports,
            unix_paths: Vec::new(),
            flavor: PhantomData,
        }
    }

    fn listen(&mut self, mut factory: Factory) -> Listening {
        let options = ServerOptions::default().backlog(1024);
        let server =
            F::block_on(&self.rt, self.lp.create_server("127.0.0.1:0", move || factory(), options))
                .expect("listen on 127.0.0.1");
        let id = server.id().get() as usize;
        let endpoint = Endpoint::Addr(server.addr());
        self.servers.insert(id, server);
        Listening { id, endpoint }
    }

    fn listen_unix(&mut self, mut factory: Factory) -> Option<Listening> {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir()
            .join(format!("aioport-conf-tokio-{}-{n}.sock", std::process::id()));
        let server = F::block_on(&self.rt, self.lp.create_unix_server(&path, move || factory()))
            .expect("listen on a Unix socket");
        self.unix_paths.push(path.clone());
        let id = server.id().get() as usize;
        self.servers.insert(id, server);
        Some(Listening { id, endpoint: Endpoint::Unix(path) })
    }

    fn close_listener(&mut self, id: usize) -> bool {
        let server = self.servers.remove(&id).expect("a listener of this loop");
        assert!(server.close(&mut self.lp), "closed once");
        true
    }

    fn close_clients(&mut self, id: usize) -> Option<usize> {
        let _runtime = self.rt.enter();
        Some(self.lp.close_clients(ServerId::from_raw(id as u32)))
    }

    fn wait_closed(&mut self, id: usize) -> bool {
        match F::block_on(&self.rt, self.lp.wait_closed(ServerId::from_raw(id as u32), LIMIT)) {
            Ok(()) => true,
            Err(e) => panic!("{}: wait_closed: {e}", F::NAME),
        }
    }

    fn connect(
        &mut self,
        to: &Endpoint,
        protocol: Box<dyn Protocol>,
    ) -> Result<StreamHandle, ConnectionError> {
        match F::block_on(&self.rt, self.lp.create_connection(to.clone(), protocol)) {
            Ok(h) => Ok(h),
            Err(Error::Connect { error, .. }) => Err(error),
            Err(e) => panic!("{}: create_connection failed in the loop itself: {e}", F::NAME),
        }
    }

    fn unused_endpoint(&mut self) -> Endpoint {
        // Bound then closed: nothing listens there (as on the poll loop).
        let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr: SocketAddr = l.local_addr().expect("local address");
        drop(l);
        Endpoint::Addr(addr)
    }

    fn with<R>(&mut self, f: impl FnOnce(&mut Ctx<'_>) -> R) -> R {
        let _runtime = self.rt.enter();
        self.lp.with(f)
    }

    fn reset(&mut self, h: StreamHandle) {
        let _runtime = self.rt.enter();
        self.lp.reset(h).expect("reset a live transport");
    }

    fn run_until(&mut self, what: &str, done: impl FnMut() -> bool) {
        match F::block_on(&self.rt, self.lp.run_until_timeout(done, LIMIT)) {
            Ok(()) => {}
            Err(Error::TimedOut) => panic!("{}: {what} did not happen within {LIMIT:?}", F::NAME),
            Err(e) => panic!("{}: the loop failed while waiting for {what}: {e}", F::NAME),
        }
    }

    fn take_errors(&mut self) -> Vec<LoopError> {
        self.reports
            .borrow_mut()
            .drain(..)
            .map(|r| match r {
                ErrorReport::Callback(e) => e,
                other => panic!("{}: unexpected loop error: {other}", F::NAME),
            })
            .collect()
    }

    fn prepare_connections(&mut self, n: usize) {
        // Both ends live in this process, plus the test harness's own descriptors.
        let needed = 2 * n as u64 + 64;
        if let Err(e) = aioport_poll::raise_fd_limit(needed) {
            panic!("{n} concurrent connections need {needed} file descriptors: {e}");
        }
    }

    fn transports(&self) -> usize {
        self.lp.len()
    }

    /// A temporary file, sent zero-copy by the driver's `Io::try_sendfile`.
    fn sendfile_file(
        &mut self,
        data: &[u8],
    ) -> Result<Box<dyn aioport::stream::SendfileSource>, String> {
        let file = crate::sendfile::unlinked_file(data);
        Ok(Box::new(aioport_tokio::FileSource::new(file)))
    }

    fn datagram_endpoint(
        &mut self,
        protocol: Box<dyn DatagramProtocol>,
        bind: Bind,
        remote: Option<DatagramAddr>,
        recv_buffer: Option<usize>,
    ) -> Result<Bound, String> {
        let local = match bind {
            Bind::Loopback(Family::V4) => DatagramAddr::Inet(SocketAddr::from(([127, 0, 0, 1], 0))),
            Bind::Loopback(Family::V6) => {
                if UdpSocket::bind("[::1]:0").is_err() {
                    return Err(format!("{}: ::1 is not available on this host", F::NAME));
                }
                DatagramAddr::Inet("[::1]:0".parse().expect("an IPv6 address"))
            }
            Bind::Loopback(Family::Unix) => DatagramAddr::Unix(Some(self.unix_path())),
            Bind::Autobind => DatagramAddr::Unix(None),
            Bind::At(addr) => addr,
        };
        let mut options = DatagramOptions::default();
        if let Some(bytes) = recv_buffer {
            options = options.recv_buffer_size(bytes);
        }
        let opened =
            self.lp.create_datagram_endpoint(protocol, Some(local.clone()), remote, options);
        let ep = F::block_on(&self.rt, opened)
            .unwrap_or_else(|e| panic!("{}: datagram endpoint at {local:?}: {e}", F::NAME));
        if let Some(bytes) = recv_buffer
            && ep.recv_buffer_size() < bytes
        {
            // Without CAP_NET_ADMIN the kernel caps SO_RCVBUF at net.core.rmem_max.
            return Err(format!(
                "{}: SO_RCVBUF is {} bytes, below the {bytes} asked; raise net.core.rmem_max",
                F::NAME,
                ep.recv_buffer_size()
            ));
        }
        Ok(Bound { handle: ep.handle(), addr: ep.local_addr().clone() })
    }

    fn spawn(
        &mut self,
        protocol: Box<dyn SubprocessProtocol>,
        program: Program,
        stdio: ChildStdio,
    ) -> Result<SubprocessHandle, String> {
        let mut options = SubprocessOptions::default();
        if stdio == ChildStdio::StderrToStdout {
            options = options.stderr(Stdio::Stdout);
        }
        // As on the poll loop: `exec` where the child is to be signalled; a child still
        // running when the loop is dropped (a failed scenario) is killed and reaped.
        let cmd = match program {
            Program::Cat => {
                let spawn = self.lp.subprocess_exec(protocol, "cat", [] as [&str; 0], options);
                let r = F::block_on(&self.rt, spawn);
                return Ok(r.unwrap_or_else(|e| panic!("{}: spawn cat: {e}", F::NAME)));
            }
            Program::Exit(code) => format!("exit {code}"),
            Program::Sleep => "exec sleep 30".to_owned(),
            Program::CloseStdoutThenSleep => "exec >&-; exec sleep 30".to_owned(),
            Program::GrandchildHoldsStdout(code) => {
                format!("exec 3<&0; (read x <&3; echo bye) & exit {code}")
            }
            Program::OutThenErr => "echo out; echo err >&2".to_owned(),
        };
        let r = F::block_on(&self.rt, self.lp.subprocess_shell(protocol, &cmd, options));
        Ok(r.unwrap_or_else(|e| panic!("{}: spawn sh -c {cmd:?}: {e}", F::NAME)))
    }

    fn unused_datagram_addr(&mut self, family: Family) -> DatagramAddr {
        match family {
            Family::Unix => DatagramAddr::Unix(Some(self.unix_path())),
            Family::V4 | Family::V6 => {
                let at = if family == Family::V4 { "127.0.0.1:0" } else { "[::1]:0" };
                // Bound then closed: nothing is bound there.
                let s = UdpSocket::bind(at).expect("bind a loopback UDP port");
                DatagramAddr::Inet(s.local_addr().expect("local address"))
            }
        }
    }
}

impl<F> Tokio<F> {
    /// A fresh socket path in the temporary directory, removed when the driver is dropped.
    fn unix_path(&mut self) -> std::path::PathBuf {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir()
            .join(format!("aioport-conf-tokio-dgram-{}-{n}.sock", std::process::id()));
        self.unix_paths.push(path.clone());
        path
    }
}
