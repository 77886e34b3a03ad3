//! The scenarios on the built-in poll loop (`aioport-poll`): real sockets on 127.0.0.1.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::rc::Rc;
use std::time::Duration;

use aioport::{ConnectionError, Ctx, Endpoint, LoopError, Protocol, StreamHandle};
use aioport_poll::{Error, ErrorReport, Loop, Server, ServerOptions};

use crate::driver::{Driver, Factory, Listening};

/// No scenario takes more than this; a stuck one fails instead of hanging CI.
const LIMIT: Duration = Duration::from_secs(30);

pub struct Poll {
    lp: Loop,
    servers: HashMap<usize, Server>,
    reports: Rc<RefCell<Vec<ErrorReport>>>,
}

impl Driver for Poll {
    const NAME: &'static str = "poll";

    fn new() -> Self {
        let mut lp = Loop::new().expect("create the poll loop");
        let reports = Rc::new(RefCell::new(Vec::new()));
        let sink = reports.clone();
        lp.set_error_handler(move |r| sink.borrow_mut().push(r));
        Poll { lp, servers: HashMap::new(), reports }
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
        Listening { id: id_key(id), endpoint }
    }

    fn close_listener(&mut self, id: usize) -> bool {
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
}

fn id_key(id: aioport_poll::ServerId) -> usize {
    id.get() as usize
}
