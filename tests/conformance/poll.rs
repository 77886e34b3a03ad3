//! The scenarios on the built-in poll loop (`aioport-poll`): real sockets on 127.0.0.1.

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
use aioport_poll::{
    DatagramOptions, Error, ErrorReport, Loop, Server, ServerId, ServerOptions, Stdio,
    SubprocessOptions, UnixServer,
};

use crate::driver::{Bind, Bound, ChildStdio, Driver, Factory, Family, Listening, Program};

/// No scenario takes more than this; a stuck one fails instead of hanging CI.
const LIMIT: Duration = Duration::from_secs(30);

pub struct Poll {
    lp: Loop,
    servers: HashMap<usize, Server>,
    reports: Rc<RefCell<Vec<ErrorReport>>>,
    /// Unix datagram socket paths this loop bound, removed on drop.
    unix_paths: Vec<PathBuf>,
    /// Every server's id, closed or not (lifecycle scenarios), and the Unix servers.
    ids: HashMap<usize, ServerId>,
    unix: HashMap<usize, UnixServer>,
    unix_dir: Option<std::path::PathBuf>,
}

impl Driver for Poll {
    const NAME: &'static str = "poll";

    fn new() -> Self {
        let mut lp = Loop::new().expect("create the poll loop");
        let reports = Rc::new(RefCell::new(Vec::new()));
        let sink = reports.clone();
        lp.set_error_handler(move |r| sink.borrow_mut().push(r));
        Poll {
            lp,
            servers: HashMap::new(),
            reports,
            unix_paths: Vec::new(),
            ids: HashMap::new(),
            unix: HashMap::new(),
            unix_dir: None,
        }
    }

    fn listen(&mut self, mut factory: Factory) -> Listening {
        let options = ServerOptions::default().backlog(1024);
        let server = self
            .lp
            .create_server("127.0.0.1:0", move || factory(), options)
            .expect("listen on 127.0.0.1");
        let id = server.id();
        let endpoint = Endpoint::Addr(server.addr());
        self.servers.insert(id_key(id), server);
        self.ids.insert(id_key(id), id);
        Listening { id: id_key(id), endpoint }
    }

    fn close_listener(&mut self, id: usize) -> bool {
        if let Some(server) = self.unix.remove(&id) {
            assert!(server.close(&mut self.lp), "closed once");
            return true;
        }
        let server = self.servers.remove(&id).expect("a listener of this loop");
        assert!(server.close(&mut self.lp), "closed once");
        true
    }

    fn connect(
        &mut self,
        to: &Endpoint,
        protocol: Box<dyn Protocol>,
    ) -> Result<StreamHandle, ConnectionError> {
        match self.lp.create_connection(to.clone(), protocol) {
            Ok(h) => Ok(h),
            Err(Error::Connect { error, .. }) => Err(error),
            Err(e) => panic!("create_connection failed in the loop itself: {e}"),
        }
    }

    fn unused_endpoint(&mut self) -> Endpoint {
        // Bound then closed: nothing listens there (another test could take the port in
        // between, but the kernel hands out ephemeral ports in sequence).
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
        match self.lp.run_until_timeout(done, LIMIT) {
            Ok(()) => {}
            Err(Error::TimedOut) => panic!("poll: {what} did not happen within {LIMIT:?}"),
            Err(e) => panic!("poll: the loop failed while waiting for {what}: {e}"),
        }
    }

    fn take_errors(&mut self) -> Vec<LoopError> {
        self.reports
            .borrow_mut()
            .drain(..)
            .map(|r| match r {
                ErrorReport::Callback(e) => e,
                other => panic!("poll: unexpected loop error: {other}"),
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

    /// A temporary file, unlinked at once (the open descriptor keeps it).
    fn sendfile_file(
        &mut self,
        data: &[u8],
    ) -> Result<Box<dyn aioport::stream::SendfileSource>, String> {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir()
            .join(format!("aioport-conformance-sendfile-{}-{n}", std::process::id()));
        std::fs::write(&path, data).expect("write the file to send");
        let file = std::fs::File::open(&path).expect("open the file to send");
        std::fs::remove_file(&path).expect("unlink the file to send");
        Ok(Box::new(aioport_poll::FileSource::new(file)))
    }

    fn listen_unix(&mut self, mut factory: Factory) -> Option<Listening> {
        let dir = self.unix_dir.get_or_insert_with(|| {
            static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
            let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let dir = std::env::temp_dir().join(format!("aioport-conf-{}-{n}", std::process::id()));
            std::fs::create_dir_all(&dir).expect("a temporary directory");
            dir
        });
        let path = dir.join(format!("s{}.sock", self.unix.len()));
        let server = self
            .lp
            .create_unix_server(path.as_path(), move || factory(), ServerOptions::default())
            .expect("listen on a Unix socket");
        let id = server.id();
        self.ids.insert(id_key(id), id);
        self.unix.insert(id_key(id), server);
        Some(Listening { id: id_key(id), endpoint: Endpoint::Unix(path) })
    }

    fn close_clients(&mut self, id: usize) -> Option<usize> {
        Some(self.lp.close_clients(self.ids[&id]))
    }

    fn wait_closed(&mut self, id: usize) -> bool {
        match self.lp.wait_closed(self.ids[&id], LIMIT) {
            Ok(()) => true,
            Err(e) => panic!("poll: wait_closed: {e}"),
        }
    }

    fn datagram_endpoint(
        &mut self,
        protocol: Box<dyn DatagramProtocol>,
        bind: Bind,
        remote: Option<DatagramAddr>,
        recv_buffer: Option<usize>,
    ) -> Result<crate::driver::Bound, String> {
        let local = match bind {
            Bind::Loopback(Family::V4) => DatagramAddr::Inet(SocketAddr::from(([127, 0, 0, 1], 0))),
            Bind::Loopback(Family::V6) => {
                if UdpSocket::bind("[::1]:0").is_err() {
                    return Err("poll: ::1 is not available on this host".into());
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
            .unwrap_or_else(|e| panic!("poll: datagram endpoint at {local:?}: {e}"));
        if let Some(bytes) = recv_buffer
            && ep.recv_buffer_size() < bytes
        {
            // Without CAP_NET_ADMIN the kernel caps SO_RCVBUF at net.core.rmem_max.
            return Err(format!(
                "poll: SO_RCVBUF is {} bytes, below the {bytes} asked; raise net.core.rmem_max",
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
        // `exec` where the child is to be signalled, so the signal reaches `sleep` itself
        // and not a shell waiting for it. The loop kills and reaps a child still running
        // when it is dropped (a failed scenario), so `sleep 30` never outlives the test.
        let cmd = match program {
            Program::Cat => {
                let r = self.lp.subprocess_exec(protocol, "cat", [] as [&str; 0], options);
                return Ok(r.unwrap_or_else(|e| panic!("poll: spawn cat: {e}")));
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
        Ok(r.unwrap_or_else(|e| panic!("poll: spawn sh -c {cmd:?}: {e}")))
    }

    fn unused_datagram_addr(&mut self, family: Family) -> DatagramAddr {
        match family {
            Family::Unix => DatagramAddr::Unix(Some(self.unix_path())),
            Family::V4 | Family::V6 => {
                let at = if family == Family::V4 { "127.0.0.1:0" } else { "[::1]:0" };
                // Bound then closed: nothing is bound there (the kernel hands out
                // ephemeral ports in sequence, so another test taking it is unlikely).
                let s = UdpSocket::bind(at).expect("bind a loopback UDP port");
                DatagramAddr::Inet(s.local_addr().expect("local address"))
            }
        }
    }
}

impl Poll {
    /// A fresh socket path in the temporary directory, removed when the driver is dropped.
    fn unix_path(&mut self) -> PathBuf {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir()
            .join(format!("aioport-conformance-{}-{n}.sock", std::process::id()));
        self.unix_paths.push(path.clone());
        path
    }
}

impl Drop for Poll {
    fn drop(&mut self) {
        for p in &self.unix_paths {
            let _ = std::fs::remove_file(p);
        }
        if let Some(dir) = &self.unix_dir {
            // Stream socket files go with their servers; the directory is ours.
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn id_key(id: aioport_poll::ServerId) -> usize {
    id.get() as usize
}
