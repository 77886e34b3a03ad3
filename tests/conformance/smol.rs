//! The scenarios on the smol driver (`aioport-smol`): real sockets on 127.0.0.1 and Unix
//! sockets, the loop future run by `async_io::block_on` (`smol::block_on`) on the test's
//! thread.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use aioport::{
    ConnectionError, Ctx, DatagramAddr, DatagramProtocol, Endpoint, LoopError, Protocol,
    StreamHandle, SubprocessHandle, SubprocessProtocol,
};
use aioport_smol::{
    DatagramOptions, Error, ErrorReport, Loop, Server, ServerId, ServerOptions, Stdio,
    SubprocessOptions,
};
use async_io::block_on;

use crate::driver::{Bind, Bound, ChildStdio, Driver, Factory, Family, Listening, Program};

/// No scenario takes more than this; a stuck one fails instead of hanging CI.
const LIMIT: Duration = Duration::from_secs(30);

pub struct Smol {
    lp: Loop,
    servers: HashMap<usize, Server>,
    /// Every listener's server, closed or not.
    ids: HashMap<usize, ServerId>,
    reports: Rc<RefCell<Vec<ErrorReport>>>,
    /// Unix socket paths this loop listens on or binds datagram sockets to, removed on
    /// drop.
    paths: Vec<PathBuf>,
}

impl Driver for Smol {
    const NAME: &'static str = "smol";

    fn new() -> Self {
        let mut lp = Loop::new();
        let reports = Rc::new(RefCell::new(Vec::new()));
        let sink = reports.clone();
        lp.set_error_handler(move |r| sink.borrow_mut().push(r));
        Smol { lp, servers: HashMap::new(), ids: HashMap::new(), reports, paths: Vec::new() }
    }

    fn listen(&mut self, mut factory: Factory) -> Listening {
        let options = ServerOptions::default().backlog(1024);
        let server = block_on(self.lp.create_server("127.0.0.1:0", move || factory(), options))
            .expect("listen on 127.0.0.1");
        let id = server.id().get() as usize;
        let endpoint = Endpoint::Addr(server.addr());
        self.ids.insert(id, server.id());
        self.servers.insert(id, server);
        Listening { id, endpoint }
    }

    fn listen_unix(&mut self, mut factory: Factory) -> Option<Listening> {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir()
            .join(format!("aioport-smol-conformance-{}-{n}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let server = block_on(self.lp.create_unix_server(&path, move || factory()))
            .expect("listen on a Unix socket in the temp dir");
        self.paths.push(path.clone());
        let id = server.id().get() as usize;
        self.ids.insert(id, server.id());
        self.servers.insert(id, server);
        Some(Listening { id, endpoint: Endpoint::Unix(path) })
    }

    fn close_listener(&mut self, id: usize) -> bool {
        let server = self.servers.remove(&id).expect("a listener of this loop");
        assert!(server.close(&mut self.lp), "closed once");
        true
    }

    fn close_clients(&mut self, id: usize) -> Option<usize> {
        Some(self.lp.close_clients(self.ids[&id]))
    }

    fn wait_closed(&mut self, id: usize) -> bool {
        match block_on(self.lp.wait_closed(self.ids[&id], LIMIT)) {
            Ok(()) => true,
            Err(e) => panic!("smol: wait_closed: {e}"),
        }
    }

    fn connect(
        &mut self,
        to: &Endpoint,
        protocol: Box<dyn Protocol>,
    ) -> Result<StreamHandle, ConnectionError> {
        match block_on(self.lp.create_connection(to.clone(), protocol)) {
            Ok(h) => Ok(h),
            Err(Error::Connect { error, .. }) => Err(error),
            Err(e) => panic!("smol: create_connection failed in the loop itself: {e}"),
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
        self.lp.with(f)
    }

    fn reset(&mut self, h: StreamHandle) {
        self.lp.reset(h).expect("reset a live transport");
    }

    fn run_until(&mut self, what: &str, done: impl FnMut() -> bool) {
        match block_on(self.lp.run_until_timeout(done, LIMIT)) {
            Ok(()) => {}
            Err(Error::TimedOut) => panic!("smol: {what} did not happen within {LIMIT:?}"),
            Err(e) => panic!("smol: the loop failed while waiting for {what}: {e}"),
        }
    }

    fn take_errors(&mut self) -> Vec<LoopError> {
        self.reports
            .borrow_mut()
            .drain(..)
            .map(|r| match r {
                ErrorReport::Callback(e) => e,
                other => panic!("smol: unexpected loop error: {other}"),
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
        Ok(Box::new(aioport_smol::FileSource::new(file)))
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
                    return Err("smol: ::1 is not available on this host".into());
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
        let ep = self
            .lp
            .create_datagram_endpoint(protocol, Some(local.clone()), remote, options)
            .unwrap_or_else(|e| panic!("smol: datagram endpoint at {local:?}: {e}"));
        if let Some(bytes) = recv_buffer
            && ep.recv_buffer_size() < bytes
        {
            // Without CAP_NET_ADMIN the kernel caps SO_RCVBUF at net.core.rmem_max.
            return Err(format!(
                "smol: SO_RCVBUF is {} bytes, below the {bytes} asked; raise net.core.rmem_max",
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
        // As on the poll loop: `exec` where the child is to be signalled, so the signal
        // reaches `sleep` itself; the loop kills and reaps a child still running when it
        // is dropped (a failed scenario), so `sleep 30` never outlives the test.
        let cmd = match program {
            Program::Cat => {
                let r = self.lp.subprocess_exec(protocol, "cat", [] as [&str; 0], options);
                return Ok(r.unwrap_or_else(|e| panic!("smol: spawn cat: {e}")));
            }
            Program::Exit(code) => format!("exit {code}"),
            Program::Sleep => "exec sleep 30".to_owned(),
            Program::CloseStdoutThenSleep => "exec >&-; exec sleep 30".to_owned(),
            // A background job's stdin is /dev/null, hence the copy on fd 3: the
            // grandchild's `read` ends when the loop closes the child's stdin.
            Program::GrandchildHoldsStdout(code) => {
                format!("exec 3<&0; (read x <&3; echo bye) & exit {code}")
            }
            Program::OutThenErr => "echo out; echo err >&2".to_owned(),
        };
        let r = self.lp.subprocess_shell(protocol, &cmd, options);
        Ok(r.unwrap_or_else(|e| panic!("smol: spawn sh -c {cmd:?}: {e}")))
    }

    fn unused_datagram_addr(&mut self, family: Family) -> DatagramAddr {
        match family {
            Family::Unix => DatagramAddr::Unix(Some(self.unix_path())),
            Family::V4 | Family::V6 => {
                let at = if family == Family::V4 { "127.0.0.1:0" } else { "[::1]:0" };
                // Bound then closed: nothing is bound there (as on the poll loop).
                let s = UdpSocket::bind(at).expect("bind a loopback UDP port");
                DatagramAddr::Inet(s.local_addr().expect("local address"))
            }
        }
    }
}

impl Smol {
    /// A fresh socket path in the temporary directory, removed when the driver is dropped.
    fn unix_path(&mut self) -> PathBuf {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir()
            .join(format!("aioport-smol-dgram-{}-{n}.sock", std::process::id()));
        self.paths.push(path.clone());
        path
    }
}

impl Drop for Smol {
    fn drop(&mut self) {
        for path in &self.paths {
            let _ = std::fs::remove_file(path);
        }
    }
}
