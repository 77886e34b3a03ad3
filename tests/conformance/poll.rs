//! The scenarios on the built-in poll loop (`aioport-poll`): real sockets on 127.0.0.1.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::rc::Rc;
use std::time::Duration;

use aioport::{ConnectionError, Ctx, Endpoint, LoopError, Protocol, StreamHandle};
use aioport_poll::{Error, ErrorReport, Loop, Server, ServerId, ServerOptions, UnixServer};

use crate::driver::{Driver, Factory, Listening};

/// No scenario takes more than this; a stuck one fails instead of hanging CI.
const LIMIT: Duration = Duration::from_secs(30);

pub struct Poll {
    lp: Loop,
    servers: HashMap<usize, Server>,
    reports: Rc<RefCell<Vec<ErrorReport>>>,
    /// Every server's id, closed or not (lifecycle scenarios), and the Unix servers.
    ids: HashMap<usize, ServerId>,
    unix: HashMap<usize, UnixServer>,
    unix_dir: Option<std::path::PathBuf>,
}

impl Drop for Poll {
    fn drop(&mut self) {
        if let Some(dir) = &self.unix_dir {
            // Socket files go with their servers; the directory is ours.
            let _ = std::fs::remove_dir_all(dir);
        }
    }
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
}

fn id_key(id: aioport_poll::ServerId) -> usize {
    id.get() as usize
}
