//! Server lifecycle (asyncio's `Server`): `is_serving`, `close`, `close_clients`,
//! `abort_clients`, `wait_closed`, and the max-connections limit. Loopback only; every run
//! bounded.

use std::cell::{Cell, RefCell};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::rc::Rc;
use std::time::Duration;

use aioport::{CallbackResult, ConnectionError, Ctx, Protocol};
use aioport_poll::{Error, Loop, ServerOptions};

const LIMIT: Duration = Duration::from_secs(10);

/// Echoes; counts accepted and lost connections.
struct Echo(Rc<Counts>);

#[derive(Default)]
struct Counts {
    made: Cell<usize>,
    lost: Cell<usize>,
    errors: RefCell<Vec<Option<ConnectionError>>>,
}

impl Protocol for Echo {
    fn connection_made(&mut self, _: &mut Ctx<'_>) -> CallbackResult {
        self.0.made.set(self.0.made.get() + 1);
        Ok(())
    }
    fn data_received(&mut self, ctx: &mut Ctx<'_>, data: &[u8]) -> CallbackResult {
        ctx.write_slice(ctx.stream(), data)?;
        Ok(())
    }
    fn connection_lost(&mut self, _: &mut Ctx<'_>, err: Option<ConnectionError>) -> CallbackResult {
        self.0.lost.set(self.0.lost.get() + 1);
        self.0.errors.borrow_mut().push(err);
        Ok(())
    }
}

fn server(lp: &mut Loop, options: ServerOptions) -> (aioport_poll::Server, Rc<Counts>) {
    let counts = Rc::new(Counts::default());
    let c = counts.clone();
    let s = lp.create_server("127.0.0.1:0", move || Box::new(Echo(c.clone())), options).unwrap();
    (s, counts)
}

fn client(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(LIMIT)).unwrap();
    s
}

/// Sends `msg` on `s` while the loop runs, and checks the echo.
fn echo(lp: &mut Loop, s: &mut TcpStream, msg: &[u8]) {
    s.write_all(msg).unwrap();
    expect(lp, s, msg);
}

/// Runs the loop until `msg` was read from `s`.
fn expect(lp: &mut Loop, s: &mut TcpStream, msg: &[u8]) {
    s.set_nonblocking(true).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    lp.run_until_timeout(
        || {
            if let Ok(n) = s.read(&mut buf) {
                got.extend_from_slice(&buf[..n]);
            }
            got.len() >= msg.len()
        },
        LIMIT,
    )
    .unwrap();
    s.set_nonblocking(false).unwrap();
    assert_eq!(got, msg);
}

#[test]
fn close_stops_listening_and_keeps_accepted_connections() {
    let mut lp = Loop::new().unwrap();
    let (srv, counts) = server(&mut lp, ServerOptions::default());
    let mut a = client(srv.addr());
    lp.run_until_timeout(|| counts.made.get() == 1, LIMIT).unwrap();
    assert!(srv.is_serving(&lp));
    assert!(srv.close(&mut lp));
    assert!(!srv.is_serving(&lp));
    assert!(TcpStream::connect(srv.addr()).is_err(), "a closed server refuses");
    echo(&mut lp, &mut a, b"still served");
    assert_eq!(srv.connections(&lp), 1);
}

#[test]
fn wait_closed_returns_once_every_accepted_connection_ended() {
    let mut lp = Loop::new().unwrap();
    let (srv, counts) = server(&mut lp, ServerOptions::default());
    let a = client(srv.addr());
    let mut b = client(srv.addr());
    lp.run_until_timeout(|| counts.made.get() == 2, LIMIT).unwrap();
    srv.close(&mut lp);
    // Both still open: wait_closed gives up after its bound.
    assert!(matches!(srv.wait_closed(&mut lp, Duration::from_millis(50)), Err(Error::TimedOut)));
    drop(a);
    echo(&mut lp, &mut b, b"b is alive");
    drop(b);
    srv.wait_closed(&mut lp, LIMIT).unwrap();
    assert_eq!(counts.lost.get(), 2);
    assert_eq!(srv.connections(&lp), 0);
}

#[test]
fn wait_closed_waits_for_close_too() {
    let mut lp = Loop::new().unwrap();
    let (srv, _) = server(&mut lp, ServerOptions::default());
    // No connection, but still serving (asyncio 3.12+: wait_closed waits for close()).
    assert!(matches!(srv.wait_closed(&mut lp, Duration::from_millis(20)), Err(Error::TimedOut)));
    srv.close(&mut lp);
    srv.wait_closed(&mut lp, LIMIT).unwrap();
}

/// Queues `BIG` bytes as soon as it is connected.
struct Big(Rc<Counts>);
const BIG: usize = 2 << 20;
impl Protocol for Big {
    fn connection_made(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        self.0.made.set(self.0.made.get() + 1);
        ctx.write_slice(ctx.stream(), &vec![7u8; BIG])?;
        Ok(())
    }
    fn connection_lost(&mut self, _: &mut Ctx<'_>, err: Option<ConnectionError>) -> CallbackResult {
        self.0.errors.borrow_mut().push(err);
        Ok(())
    }
}

#[test]
fn close_clients_flushes_then_closes() {
    let mut lp = Loop::new().unwrap();
    let counts = Rc::new(Counts::default());
    let c = counts.clone();
    let srv = lp
        .create_server("127.0.0.1:0", move || Box::new(Big(c.clone())), ServerOptions::default())
        .unwrap();
    let clients: Vec<TcpStream> = (0..2).map(|_| client(srv.addr())).collect();
    lp.run_until_timeout(|| counts.made.get() == 2, LIMIT).unwrap();
    // Megabytes are still queued on the server side: nobody has read yet.
    assert_eq!(srv.close_clients(&mut lp), 2);
    srv.close(&mut lp);
    let readers: Vec<_> = clients
        .into_iter()
        .map(|mut s| {
            std::thread::spawn(move || {
                let mut all = Vec::new();
                s.read_to_end(&mut all).map(|_| all.len())
            })
        })
        .collect();
    srv.wait_closed(&mut lp, LIMIT).unwrap();
    for r in readers {
        assert_eq!(r.join().unwrap().unwrap(), BIG, "every queued byte, then EOF");
    }
    assert_eq!(&counts.errors.borrow()[..], &[None, None]);
}

#[test]
fn abort_clients_ends_them_at_once() {
    let mut lp = Loop::new().unwrap();
    let (srv, counts) = server(&mut lp, ServerOptions::default());
    let _a = client(srv.addr());
    let _b = client(srv.addr());
    let _c = client(srv.addr());
    lp.run_until_timeout(|| counts.made.get() == 3, LIMIT).unwrap();
    assert_eq!(srv.abort_clients(&mut lp), 3);
    // connection_lost is delivered before abort_clients returns.
    assert_eq!(counts.lost.get(), 3);
    assert_eq!(srv.connections(&lp), 0);
    // Still serving: aborting clients does not close the server.
    assert!(srv.is_serving(&lp));
    let mut d = client(srv.addr());
    echo(&mut lp, &mut d, b"new client");
}

#[test]
fn max_connections_stops_accepting_at_the_limit_and_resumes_below_it() {
    let mut lp = Loop::new().unwrap();
    let (srv, counts) = server(&mut lp, ServerOptions::default().max_connections(Some(2)));
    let a = client(srv.addr());
    let mut b = client(srv.addr());
    // The kernel completes the handshake (backlog); the loop does not accept it.
    let mut c = client(srv.addr());
    lp.run_until_timeout(|| counts.made.get() == 2, LIMIT).unwrap();
    c.write_all(b"waiting").unwrap();
    echo(&mut lp, &mut b, b"b served");
    assert_eq!(counts.made.get(), 2, "the third connection waits in the backlog");
    assert_eq!(srv.connections(&lp), 2);
    drop(a);
    lp.run_until_timeout(|| counts.made.get() == 3, LIMIT).unwrap();
    expect(&mut lp, &mut c, b"waiting");
    assert_eq!(srv.connections(&lp), 2);
}
