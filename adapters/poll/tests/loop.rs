//! The loop's own entry points, beyond what the conformance suite (root `tests/`) covers:
//! running inside a callback, other threads, name resolution, Unix sockets, IPv6,
//! `SO_REUSEPORT`, timer rounding. Loopback only; every run bounded.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use aioport::{CallbackResult, Ctx, Endpoint, Protocol};
use aioport_poll::{Error, Loop, REMOTE_QUEUE_CAPACITY, RemoteError, ServerOptions};

const LIMIT: Duration = Duration::from_secs(10);

/// Echoes; closes on EOF.
struct Echo;
impl Protocol for Echo {
    fn data_received(&mut self, ctx: &mut Ctx<'_>, data: &[u8]) -> CallbackResult {
        ctx.write_slice(ctx.stream(), data)?;
        Ok(())
    }
}

/// Sends "ping" and records the echo.
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

fn echo_server(lp: &mut Loop, addr: &str) -> SocketAddr {
    lp.create_server(addr, || Box::new(Echo), ServerOptions::default()).expect("listen").addr()
}

fn ping(lp: &mut Loop, to: Endpoint) {
    let got = Rc::new(RefCell::new(Vec::new()));
    lp.create_connection(to, Box::new(Ping(got.clone()))).expect("connect");
    lp.run_until_timeout(|| got.borrow().len() == 4, LIMIT).expect("echo within the limit");
    assert_eq!(&got.borrow()[..], b"ping");
}

#[test]
fn running_a_loop_inside_a_callback_is_an_error() {
    let mut lp = Loop::new().unwrap();
    let addr = echo_server(&mut lp, "127.0.0.1:0");
    let checked = Rc::new(Cell::new(false));
    let c = checked.clone();
    lp.call_soon(move |_ctx| {
        // A second loop on this thread would block the running one.
        let mut other = Loop::new().unwrap();
        let r = other.create_connection(Endpoint::Addr(addr), Box::new(Echo));
        assert!(matches!(r, Err(Error::AlreadyRunning)), "{r:?}");
        assert!(matches!(other.run_once(Some(Duration::ZERO)), Err(Error::AlreadyRunning)));
        c.set(true);
    });
    lp.run_until_timeout(|| checked.get(), LIMIT).unwrap();
    // Outside callbacks, both work again.
    ping(&mut lp, Endpoint::Addr(addr));
}

#[test]
fn other_threads_call_soon_threadsafe_and_stop() {
    let mut lp = Loop::new().unwrap();
    let ran = Arc::new(AtomicUsize::new(0));
    let handle = lp.handle();
    let r = ran.clone();
    let t = std::thread::spawn(move || {
        for _ in 0..10 {
            let r = r.clone();
            handle
                .call_soon_threadsafe(move |_| {
                    r.fetch_add(1, Ordering::SeqCst);
                })
                .unwrap();
        }
        handle.stop();
    });
    t.join().unwrap();
    // Bounded by the stop; the timeout guards against a lost wake-up.
    lp.run_until_timeout(|| false, LIMIT).unwrap();
    lp.run_until_timeout(|| ran.load(Ordering::SeqCst) == 10, LIMIT).unwrap();
}

#[test]
fn the_threadsafe_queue_is_bounded() {
    let mut lp = Loop::new().unwrap();
    let handle = lp.handle();
    let count = Arc::new(AtomicUsize::new(0));
    for _ in 0..REMOTE_QUEUE_CAPACITY {
        let c = count.clone();
        handle
            .call_soon_threadsafe(move |_| {
                c.fetch_add(1, Ordering::SeqCst);
            })
            .unwrap();
    }
    assert_eq!(handle.call_soon_threadsafe(|_| {}), Err(RemoteError::Full));
    lp.run_until_timeout(|| count.load(Ordering::SeqCst) == REMOTE_QUEUE_CAPACITY, LIMIT).unwrap();
    handle.call_soon_threadsafe(|_| {}).expect("room again");
    drop(lp);
    assert_eq!(handle.call_soon_threadsafe(|_| {}), Err(RemoteError::Closed));
}

#[test]
fn host_names_resolve_off_the_loop_thread() {
    let mut lp = Loop::new().unwrap();
    let addr = echo_server(&mut lp, "127.0.0.1:0");
    ping(&mut lp, Endpoint::Host { host: "localhost".into(), port: addr.port() });
    ping(&mut lp, Endpoint::Host { host: "127.0.0.1".into(), port: addr.port() });
}

#[test]
fn unix_stream_sockets_connect() {
    let dir = std::env::temp_dir().join(format!("aioport-poll-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("echo.sock");
    let _ = std::fs::remove_file(&path);
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let server = std::thread::spawn(move || {
        use std::io::{Read, Write};
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).unwrap();
        s.write_all(&buf).unwrap();
    });
    let mut lp = Loop::new().unwrap();
    ping(&mut lp, Endpoint::Unix(path.clone()));
    server.join().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn ipv6_loopback_when_available() {
    let mut lp = Loop::new().unwrap();
    match lp.create_server("[::1]:0", || Box::new(Echo), ServerOptions::default()) {
        Ok(server) => {
            assert!(server.addr().is_ipv6());
            ping(&mut lp, Endpoint::Addr(server.addr()));
        }
        Err(e) => println!("SKIPPED (ipv6_loopback_when_available: no ::1 here: {e})"),
    }
}

#[test]
fn reuse_port_shares_a_port_between_loops() {
    let mut a = Loop::new().unwrap();
    let mut b = Loop::new().unwrap();
    let opts = ServerOptions::default().reuse_port(true);
    let first = a.create_server("127.0.0.1:0", || Box::new(Echo), opts).unwrap();
    let second = b.create_server(first.addr(), || Box::new(Echo), opts).unwrap();
    assert_eq!(first.addr(), second.addr());
    // Without SO_REUSEPORT the port is taken.
    let r = b.create_server(first.addr(), || Box::new(Echo), ServerOptions::default());
    assert!(matches!(r, Err(Error::Bind { .. })), "{r:?}");
    assert!(second.close(&mut b));
    assert!(!second.close(&mut b), "closing twice reports false");
    ping(&mut a, Endpoint::Addr(first.addr()));
}

#[test]
fn timers_round_up_and_never_fire_early() {
    let mut lp = Loop::new().unwrap();
    let fired = Rc::new(RefCell::new(Vec::new()));
    let t0 = Instant::now();
    for us in [300u64, 1_000, 1_700, 2_500] {
        let f = fired.clone();
        let when = t0 + Duration::from_micros(us);
        lp.call_at(when, move |ctx| f.borrow_mut().push((when, ctx.now())));
    }
    lp.run_until_timeout(|| fired.borrow().len() == 4, LIMIT).unwrap();
    for &(when, now) in fired.borrow().iter() {
        assert!(now >= when, "fired {:?} early", when - now);
    }
    // Nothing scheduled: run_once returns after its timeout instead of spinning.
    let t = Instant::now();
    lp.run_once(Some(Duration::from_millis(5))).unwrap();
    assert!(t.elapsed() >= Duration::from_millis(5));
}
