//! Client sockets beyond the defaults: adopted sockets (asyncio's `sock=`) for clients and
//! servers, `ConnectOptions` (`local_addr`, `SO_KEEPALIVE`, `IPV6_V6ONLY`, connect timeout),
//! typed fd access. Loopback only: the connect timeout uses a local listener whose backlog
//! is full and which never accepts.

use std::cell::RefCell;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::rc::Rc;
use std::time::Duration;

use aioport::{CallbackResult, ConnectionError, Ctx, Endpoint, Protocol};
use aioport_poll::{ConnectOptions, Error, Loop, ServerOptions};
use rustix::net::sockopt;

const LIMIT: Duration = Duration::from_secs(10);

struct Echo;
impl Protocol for Echo {
    fn data_received(&mut self, ctx: &mut Ctx<'_>, data: &[u8]) -> CallbackResult {
        ctx.write_slice(ctx.stream(), data)?;
        Ok(())
    }
}

struct Ping(Rc<RefCell<Vec<u8>>>);
impl Protocol for Ping {
    fn connection_made(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        ctx.write(ctx.stream(), &b"ping"[..])?;
        Ok(())
    }
    fn data_received(&mut self, _: &mut Ctx<'_>, data: &[u8]) -> CallbackResult {
        self.0.borrow_mut().extend_from_slice(data);
        Ok(())
    }
}

fn ping_with(lp: &mut Loop, to: SocketAddr, options: ConnectOptions) -> aioport::StreamHandle {
    let got = Rc::new(RefCell::new(Vec::new()));
    let h = lp
        .create_connection_with(Endpoint::Addr(to), Box::new(Ping(got.clone())), options)
        .expect("connect");
    lp.run_until_timeout(|| got.borrow().len() == 4, LIMIT).expect("echo");
    assert_eq!(&got.borrow()[..], b"ping");
    h
}

#[test]
fn adopted_client_socket() {
    let mut lp = Loop::new().unwrap();
    let srv = lp.create_server("127.0.0.1:0", || Box::new(Echo), ServerOptions::default()).unwrap();
    // Connected with blocking std code before the loop sees it.
    let sock = TcpStream::connect(srv.addr()).unwrap();
    let local = sock.local_addr().unwrap();
    let got = Rc::new(RefCell::new(Vec::new()));
    let h = lp.create_connection_from(sock, Box::new(Ping(got.clone()))).unwrap();
    let extra = lp.with(|ctx| ctx.extra(h).unwrap().clone());
    assert_eq!(extra.peername, Some(srv.addr()));
    assert_eq!(extra.sockname, Some(local));
    lp.run_until_timeout(|| got.borrow().len() == 4, LIMIT).unwrap();
    assert_eq!(&got.borrow()[..], b"ping");
}

#[test]
fn adopted_listening_socket() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let mut lp = Loop::new().unwrap();
    let srv = lp.create_server_from(listener, || Box::new(Echo), ServerOptions::default()).unwrap();
    assert_eq!(srv.addr(), addr);
    ping_with(&mut lp, addr, ConnectOptions::default());
    assert!(srv.close(&mut lp));
    assert!(TcpStream::connect(addr).is_err(), "closing the server closed the adopted socket");
}

#[test]
fn adopting_a_socket_that_does_not_listen_is_refused() {
    let mut lp = Loop::new().unwrap();
    // Bound, but listen() never called.
    let fd = rustix::net::socket(
        rustix::net::AddressFamily::INET,
        rustix::net::SocketType::STREAM,
        None,
    )
    .unwrap();
    rustix::net::bind(&fd, &SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
    let bound = TcpListener::from(fd);
    let r = lp.create_server_from(bound, || Box::new(Echo), ServerOptions::default());
    assert!(matches!(r, Err(Error::NotListening)), "{r:?}");
    // A connected socket passed as a listener.
    let listening = TcpListener::bind("127.0.0.1:0").unwrap();
    let connected = TcpStream::connect(listening.local_addr().unwrap()).unwrap();
    let fake = TcpListener::from(std::os::fd::OwnedFd::from(connected));
    let r = lp.create_server_from(fake, || Box::new(Echo), ServerOptions::default());
    assert!(matches!(r, Err(Error::NotListening)), "{r:?}");
    // The real one is taken.
    assert!(lp.create_server_from(listening, || Box::new(Echo), ServerOptions::default()).is_ok());
}

#[test]
fn local_addr_and_keepalive() {
    let mut lp = Loop::new().unwrap();
    let srv = lp.create_server("127.0.0.1:0", || Box::new(Echo), ServerOptions::default()).unwrap();
    // Pick a free local port first, so the assertion names it.
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let local: SocketAddr = ([127, 0, 0, 1], port).into();
    let opts = ConnectOptions::default().local_addr(local).keepalive(true);
    let h = ping_with(&mut lp, srv.addr(), opts);
    assert_eq!(lp.with(|ctx| ctx.extra(h).unwrap().sockname), Some(local));
    let fd = lp.socket_fd(h.handle()).expect("open");
    assert!(sockopt::socket_keepalive(fd).unwrap());
    // Without the option, no keep-alive (asyncio's default).
    let h = ping_with(&mut lp, srv.addr(), ConnectOptions::default());
    assert!(!sockopt::socket_keepalive(lp.socket_fd(h.handle()).unwrap()).unwrap());
}

#[test]
fn ipv6_only_is_applied_to_ipv6_sockets() {
    let mut lp = Loop::new().unwrap();
    let srv = match lp.create_server("[::1]:0", || Box::new(Echo), ServerOptions::default()) {
        Ok(s) => s,
        Err(e) => return println!("SKIPPED (ipv6_only_is_applied_to_ipv6_sockets: no ::1: {e})"),
    };
    for on in [true, false] {
        let h = ping_with(&mut lp, srv.addr(), ConnectOptions::default().ipv6_only(on));
        assert_eq!(sockopt::ipv6_v6only(lp.socket_fd(h.handle()).unwrap()).unwrap(), on);
    }
}

#[test]
fn a_local_addr_of_the_wrong_family_fails_the_connect() {
    let mut lp = Loop::new().unwrap();
    let srv = lp.create_server("127.0.0.1:0", || Box::new(Echo), ServerOptions::default()).unwrap();
    let opts = ConnectOptions::default().local_addr("[::1]:0".parse().unwrap());
    let r = lp.create_connection_with(Endpoint::Addr(srv.addr()), Box::new(Echo), opts);
    assert!(matches!(r, Err(Error::Connect { .. })), "{r:?}");
    assert!(lp.is_empty());
}

/// A loopback listener (backlog 0) whose queue is full and which never accepts: further
/// connects get no answer to their SYN. Returns the listener and the connections that
/// filled it (kept open).
fn full_listener() -> Option<(TcpListener, Vec<TcpStream>)> {
    let listener = {
        let fd = rustix::net::socket(
            rustix::net::AddressFamily::INET,
            rustix::net::SocketType::STREAM,
            None,
        )
        .ok()?;
        rustix::net::bind(&fd, &SocketAddr::from(([127, 0, 0, 1], 0))).ok()?;
        rustix::net::listen(&fd, 0).ok()?;
        TcpListener::from(fd)
    };
    let addr = listener.local_addr().ok()?;
    let mut filled = Vec::new();
    for _ in 0..16 {
        match TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            Ok(s) => filled.push(s),
            Err(_) => return Some((listener, filled)),
        }
    }
    None
}

#[test]
fn connect_timeout_against_a_full_backlog() {
    let Some((listener, _filled)) = full_listener() else {
        return println!(
            "SKIPPED (connect_timeout_against_a_full_backlog: the backlog never filled)"
        );
    };
    let mut lp = Loop::new().unwrap();
    let opts = ConnectOptions::default().timeout(Duration::from_millis(200));
    let to = Endpoint::Addr(listener.local_addr().unwrap());
    let r = lp.create_connection_with(to, Box::new(Echo), opts);
    match r {
        Err(Error::Connect { error: ConnectionError::Timeout(_), .. }) => {}
        other => panic!("expected a connect timeout, got {other:?}"),
    }
    assert!(lp.is_empty(), "the attempt's transport is gone");
    // The loop is still usable afterwards, and the timer does not linger.
    assert_eq!(lp.registry().poll_timeout(), None);
}

#[test]
fn a_connect_that_succeeds_in_time_keeps_no_deadline() {
    let mut lp = Loop::new().unwrap();
    let srv = lp.create_server("127.0.0.1:0", || Box::new(Echo), ServerOptions::default()).unwrap();
    ping_with(&mut lp, srv.addr(), ConnectOptions::default().timeout(Duration::from_millis(100)));
    // Past the timeout the connection is still alive (its deadline was dropped on success).
    std::thread::sleep(Duration::from_millis(150));
    ping_with(&mut lp, srv.addr(), ConnectOptions::default());
    assert_eq!(lp.len(), 4);
}

/// An address nobody listens on (connects are refused).
fn refused_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

#[test]
fn happy_eyeballs_skips_an_address_that_never_answers() {
    let Some((blackhole, _filled)) = full_listener() else {
        return println!(
            "SKIPPED (happy_eyeballs_skips_an_address_that_never_answers: backlog never filled)"
        );
    };
    let mut lp = Loop::new().unwrap();
    let srv = lp.create_server("127.0.0.1:0", || Box::new(Echo), ServerOptions::default()).unwrap();
    let addrs = [blackhole.local_addr().unwrap(), srv.addr()];
    // The first attempt gets no answer; the second starts 20 ms later and wins. The
    // timeout only bounds the test.
    let opts =
        ConnectOptions::default().happy_eyeballs_delay(Duration::from_millis(20)).timeout(LIMIT);
    let got = Rc::new(RefCell::new(Vec::new()));
    let h = lp.create_connection_to_any(&addrs, Box::new(Ping(got.clone())), opts).unwrap();
    assert_eq!(lp.with(|ctx| ctx.extra(h).unwrap().peername), Some(srv.addr()));
    lp.run_until_timeout(|| got.borrow().len() == 4, LIMIT).unwrap();
    assert_eq!(lp.len(), 2, "the winner and its accepted peer; the loser is gone");

    // Tried one after another instead, the first address stalls until the timeout.
    let opts = ConnectOptions::default().timeout(Duration::from_millis(200));
    let r = lp.create_connection_to_any(&addrs, Box::new(Echo), opts);
    assert!(matches!(r, Err(Error::Connect { error: ConnectionError::Timeout(_), .. })), "{r:?}");
}

#[test]
fn happy_eyeballs_starts_the_next_attempt_when_one_fails() {
    let mut lp = Loop::new().unwrap();
    let srv = lp.create_server("127.0.0.1:0", || Box::new(Echo), ServerOptions::default()).unwrap();
    // The stagger delay is longer than the test's bound: only the refusal of the first
    // address can start the second attempt in time.
    let opts =
        ConnectOptions::default().happy_eyeballs_delay(Duration::from_secs(3600)).timeout(LIMIT);
    let addrs = [refused_addr(), srv.addr()];
    let h = lp.create_connection_to_any(&addrs, Box::new(Echo), opts).unwrap();
    assert_eq!(lp.with(|ctx| ctx.extra(h).unwrap().peername), Some(srv.addr()));
}

#[test]
fn every_address_failing_reports_the_last_error() {
    let mut lp = Loop::new().unwrap();
    for opts in [
        ConnectOptions::default(),
        ConnectOptions::default().happy_eyeballs_delay(Duration::from_millis(10)),
    ] {
        let addrs = [refused_addr(), refused_addr()];
        let r = lp.create_connection_to_any(&addrs, Box::new(Echo), opts);
        match r {
            Err(Error::Connect { error, .. }) => {
                assert_eq!(error.io_kind(), Some(std::io::ErrorKind::ConnectionRefused), "{error}")
            }
            other => panic!("expected refused, got {other:?}"),
        }
        assert!(lp.is_empty());
    }
    let r = lp.create_connection_to_any(&[], Box::new(Echo), ConnectOptions::default());
    assert!(matches!(r, Err(Error::NoAddress)), "{r:?}");
}

#[test]
fn a_dual_stack_server_accepts_ipv4_clients() {
    // Loopback only: IPv4 clients reach an IPv6 socket through the IPv4-mapped address,
    // which only a socket without IPV6_V6ONLY may bind.
    let mapped = "[::ffff:127.0.0.1]:0";
    let mut lp = Loop::new().unwrap();
    let opts = ServerOptions::default().ipv6_only(false);
    let srv = match lp.create_server(mapped, || Box::new(Echo), opts) {
        Ok(s) => s,
        Err(e) => {
            return println!("SKIPPED (a_dual_stack_server_accepts_ipv4_clients: no IPv6: {e})");
        }
    };
    assert!(srv.addr().is_ipv6());
    let v4: SocketAddr = ([127, 0, 0, 1], srv.addr().port()).into();
    ping_with(&mut lp, v4, ConnectOptions::default());
    // The default (IPV6_V6ONLY on, as asyncio) refuses the mapped address...
    let r = lp.create_server(mapped, || Box::new(Echo), ServerOptions::default());
    assert!(matches!(r, Err(Error::Bind { .. })), "{r:?}");
    // ...and leaves the IPv4 port free for another server.
    let v6 = lp.create_server("[::1]:0", || Box::new(Echo), ServerOptions::default()).unwrap();
    let v4_server = lp.create_server(
        ("127.0.0.1", v6.addr().port()),
        || Box::new(Echo),
        ServerOptions::default(),
    );
    assert!(v4_server.is_ok(), "{v4_server:?}");
}
