//! The smol driver's own entry points, beyond the cross-driver conformance suite: Unix
//! sockets, host names, loop threads with `SO_REUSEPORT`, the `Send` handle, the error
//! hook, a run future dropped half-way, and async-io's readiness and timers after a
//! pause and after a timer fired. Loopback only; every wait is bounded.

use std::cell::RefCell;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use aioport::{CallbackResult, ConnectionError, Ctx, Endpoint, LoopError, Protocol, StreamHandle};
use aioport_smol::{Error, ErrorReport, Loop, RemoteError, ServerOptions};
use async_io::block_on;

const LIMIT: Duration = Duration::from_secs(20);

struct Echo;
impl Protocol for Echo {
    fn data_received(&mut self, ctx: &mut Ctx<'_>, data: &[u8]) -> CallbackResult {
        Ok(ctx.write_slice(ctx.stream(), data)?)
    }
}

/// `Some(reason)` once `connection_lost(reason)` ran.
type Lost = Rc<RefCell<Option<Option<ConnectionError>>>>;

/// Sends `message`, keeps what comes back, closes once it all came back.
struct Client {
    message: &'static [u8],
    got: Rc<RefCell<Vec<u8>>>,
    lost: Lost,
}

impl Client {
    fn new(message: &'static [u8]) -> (Client, Rc<RefCell<Vec<u8>>>, Lost) {
        let got = Rc::new(RefCell::new(Vec::new()));
        let lost = Rc::new(RefCell::new(None));
        (Client { message, got: got.clone(), lost: lost.clone() }, got, lost)
    }
}

impl Protocol for Client {
    fn connection_made(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        Ok(ctx.write(ctx.stream(), self.message)?)
    }
    fn data_received(&mut self, ctx: &mut Ctx<'_>, data: &[u8]) -> CallbackResult {
        self.got.borrow_mut().extend_from_slice(data);
        if self.got.borrow().len() == self.message.len() {
            ctx.close(ctx.stream())?;
        }
        Ok(())
    }
    fn connection_lost(&mut self, _: &mut Ctx<'_>, err: Option<ConnectionError>) -> CallbackResult {
        *self.lost.borrow_mut() = Some(err);
        Ok(())
    }
}

#[test]
fn unix_server_and_connection_echo() {
    let dir = std::env::temp_dir().join(format!("aioport-smol-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("echo.sock");
    let _ = std::fs::remove_file(&path);
    block_on(async {
        let mut lp = Loop::new();
        let server = lp.create_unix_server(&path, || Box::new(Echo)).await.expect("listen");
        assert!(server.addrs().is_empty(), "a Unix server has no socket address");
        let (client, got, lost) = Client::new(b"over a unix socket");
        let h = lp.create_connection(Endpoint::Unix(path.clone()), Box::new(client)).await;
        h.expect("connect to the unix socket");
        lp.run_until_timeout(|| lost.borrow().is_some(), LIMIT).await.expect("echo and close");
        assert_eq!(&got.borrow()[..], b"over a unix socket");
        assert_eq!(*lost.borrow(), Some(None), "closed cleanly");
    });
    assert!(!path.exists(), "dropping the loop removed the socket file");
    let _ = std::fs::remove_dir(&dir);
}

/// "localhost" may resolve to ::1 before 127.0.0.1; the server listens on 127.0.0.1 only,
/// so every resolved address is tried in turn until one accepts.
#[test]
fn host_name_tries_every_address() {
    block_on(async {
        let mut lp = Loop::new();
        let opts = ServerOptions::default();
        let server =
            lp.create_server("127.0.0.1:0", || Box::new(Echo), opts).await.expect("listen");
        let (client, got, lost) = Client::new(b"by name");
        let to = Endpoint::Host { host: "localhost".into(), port: server.addr().port() };
        lp.create_connection(to, Box::new(client)).await.expect("connect by name");
        lp.run_until_timeout(|| lost.borrow().is_some(), LIMIT).await.expect("echo and close");
        assert_eq!(&got.borrow()[..], b"by name");
    });
}

#[test]
fn connect_refused_is_a_typed_error() {
    let free = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = free.local_addr().expect("addr");
    drop(free);
    block_on(async {
        let mut lp = Loop::new();
        let (client, _, lost) = Client::new(b"x");
        match lp.create_connection(Endpoint::Addr(addr), Box::new(client)).await {
            Err(Error::Connect { error, .. }) => {
                assert_eq!(error.io_kind(), Some(std::io::ErrorKind::ConnectionRefused));
            }
            other => panic!("expected a refused connect, got {other:?}"),
        }
        assert!(lost.borrow().is_none(), "the protocol heard nothing");
        assert!(lp.is_empty());
    });
}

/// Two loops on their own threads (each under `block_on`) share one port (SO_REUSEPORT);
/// protocols are built on the loop threads from a `Send` factory. Every client gets its
/// echo, and the connections were served (counted) by the loops.
#[test]
fn loop_threads_share_a_port() {
    let served = Arc::new(AtomicUsize::new(0));
    let mut addr = SocketAddr::from(([127, 0, 0, 1], 0));
    let mut loops = Vec::new();
    for _ in 0..2 {
        let (tx, rx) = std::sync::mpsc::channel();
        let served = served.clone();
        let t = std::thread::spawn(move || {
            block_on(async move {
                let mut lp = Loop::new();
                struct Counted(Arc<AtomicUsize>);
                impl Protocol for Counted {
                    fn connection_made(&mut self, _: &mut Ctx<'_>) -> CallbackResult {
                        self.0.fetch_add(1, Ordering::Relaxed);
                        Ok(())
                    }
                    fn data_received(&mut self, ctx: &mut Ctx<'_>, data: &[u8]) -> CallbackResult {
                        Ok(ctx.write_slice(ctx.stream(), data)?)
                    }
                }
                let factory = move || -> Box<dyn Protocol> { Box::new(Counted(served.clone())) };
                let opts = ServerOptions::default().reuse_port(true);
                let server = lp.create_server(addr, factory, opts).await.expect("listen");
                tx.send((server.addr(), lp.handle())).expect("report the address");
                lp.run_forever().await;
            })
        });
        let (bound, handle) = rx.recv_timeout(LIMIT).expect("the loop listens");
        addr = bound;
        loops.push((handle, t));
    }
    for i in 0..20u8 {
        let mut s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(LIMIT)).expect("timeout");
        s.write_all(&[i; 100]).expect("send");
        let mut back = [0u8; 100];
        s.read_exact(&mut back).expect("echo");
        assert_eq!(back, [i; 100]);
    }
    assert_eq!(served.load(Ordering::Relaxed), 20);
    for (handle, _) in &loops {
        handle.stop();
    }
    for (_, t) in loops {
        t.join().expect("loop thread ends after stop");
    }
}

#[test]
fn handle_runs_closures_from_other_threads_and_stops() {
    let ran = Arc::new(AtomicUsize::new(0));
    block_on(async {
        let mut lp = Loop::new();
        let handle = lp.handle();
        let ran2 = ran.clone();
        let t = std::thread::spawn(move || {
            for _ in 0..10 {
                let ran = ran2.clone();
                handle
                    .call_soon_threadsafe(move |_| {
                        ran.fetch_add(1, Ordering::Relaxed);
                    })
                    .expect("queued");
            }
            handle.stop();
        });
        t.join().expect("sender thread");
        lp.run_until_timeout(|| false, LIMIT).await.expect("stop ends the run");
        assert_eq!(ran.load(Ordering::Relaxed), 10);
        let handle = lp.handle();
        drop(lp);
        assert_eq!(handle.call_soon_threadsafe(|_| {}), Err(RemoteError::Closed));
    });
}

#[test]
fn factory_panic_goes_to_the_error_hook() {
    block_on(async {
        let mut lp = Loop::new();
        let reports = Rc::new(RefCell::new(Vec::new()));
        let sink = reports.clone();
        lp.set_error_handler(move |r| sink.borrow_mut().push(r));
        let server = lp
            .create_server("127.0.0.1:0", || panic!("no protocol today"), ServerOptions::default())
            .await
            .expect("listen");
        let s = TcpStream::connect(server.addr()).expect("connect");
        lp.run_until_timeout(|| !reports.borrow().is_empty(), LIMIT).await.expect("reported");
        match &reports.borrow()[0] {
            ErrorReport::Callback(LoopError::Panicked { callback, message, .. }) => {
                assert_eq!(*callback, "protocol factory");
                assert_eq!(message, "no protocol today");
            }
            other => panic!("expected a factory panic, got {other:?}"),
        }
        assert!(lp.is_empty(), "no transport for the refused connection");
        drop(s);
    });
}

/// A run future dropped half-way (a timeout) leaves the loop whole: the next run picks up
/// the timer and the connection where they were.
#[test]
fn dropped_run_future_leaves_the_loop_intact() {
    block_on(async {
        let mut lp = Loop::new();
        let fired = Rc::new(RefCell::new(false));
        let flag = fired.clone();
        lp.call_later(Duration::from_millis(50), move |_| *flag.borrow_mut() = true)
            .expect("schedule");
        let early = lp.run_until_timeout(|| false, Duration::from_millis(1)).await;
        assert!(matches!(early, Err(Error::TimedOut)));
        lp.run_until_timeout(|| *fired.borrow(), LIMIT).await.expect("fires on the next run");
    });
}

/// `LoopHandle::close_server` from another thread: new connections are refused; one
/// accepted before goes on.
#[test]
fn handle_closes_a_server_from_another_thread() {
    block_on(async {
        let mut lp = Loop::new();
        let opts = ServerOptions::default();
        let server =
            lp.create_server("127.0.0.1:0", || Box::new(Echo), opts).await.expect("listen");
        let to = Endpoint::Addr(server.addr());
        let (client, got, lost) = Client::new(b"before");
        lp.create_connection(to.clone(), Box::new(client)).await.expect("connect");
        lp.run_until_timeout(|| lp_accepted(&got), LIMIT).await.expect("accepted and echoing");
        let handle = lp.handle();
        let id = server.id();
        std::thread::spawn(move || handle.close_server(id))
            .join()
            .expect("thread")
            .expect("queued");
        lp.run_once().await;
        assert!(!lp.close_server(id), "already closed by the handle");
        let (late, _, _) = Client::new(b"after");
        match lp.create_connection(to, Box::new(late)).await {
            Err(Error::Connect { error, .. }) => {
                assert_eq!(error.io_kind(), Some(std::io::ErrorKind::ConnectionRefused));
            }
            other => panic!("expected a refused connect, got {other:?}"),
        }
        lp.run_until_timeout(|| lost.borrow().is_some(), LIMIT).await.expect("echo and close");
        assert_eq!(&got.borrow()[..], b"before", "the accepted connection went on");
        assert_eq!(*lost.borrow(), Some(None));
    });
}

/// The server echoed at least one byte: it accepted the connection.
fn lp_accepted(got: &Rc<RefCell<Vec<u8>>>) -> bool {
    !got.borrow().is_empty()
}

/// Pauses reading when its first chunk arrives and tells its handle.
struct Pausing {
    got: Rc<RefCell<Vec<u8>>>,
    handle: Rc<RefCell<Option<StreamHandle>>>,
}

impl Protocol for Pausing {
    fn connection_made(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        *self.handle.borrow_mut() = Some(ctx.stream());
        Ok(())
    }
    fn data_received(&mut self, ctx: &mut Ctx<'_>, data: &[u8]) -> CallbackResult {
        self.got.borrow_mut().extend_from_slice(data);
        Ok(ctx.pause_reading(ctx.stream())?)
    }
}

/// Data that arrived while reading was paused is read after `resume_reading`, although
/// async-io already reported (and the loop consumed) the socket's readiness while
/// paused: re-arming the oneshot interest reports data that is already there.
#[test]
fn resume_reading_gets_data_that_arrived_while_paused() {
    block_on(async {
        let mut lp = Loop::new();
        let got = Rc::new(RefCell::new(Vec::new()));
        let handle = Rc::new(RefCell::new(None));
        let (sink, slot) = (got.clone(), handle.clone());
        let factory = move || -> Box<dyn Protocol> {
            Box::new(Pausing { got: sink.clone(), handle: slot.clone() })
        };
        let server = lp
            .create_server("127.0.0.1:0", factory, ServerOptions::default())
            .await
            .expect("listen");
        let mut peer = TcpStream::connect(server.addr()).expect("connect");
        peer.write_all(b"first").expect("send");
        lp.run_until_timeout(|| got.borrow().len() == 5, LIMIT).await.expect("first chunk");
        let h = handle.borrow().expect("the accepted transport");
        peer.write_all(b"second").expect("send while paused");
        // Turns while paused: the readiness event (if any) is served without reading.
        let early = lp.run_until_timeout(|| false, Duration::from_millis(50)).await;
        assert!(matches!(early, Err(Error::TimedOut)));
        assert_eq!(&got.borrow()[..], b"first", "nothing read while paused");
        lp.with(|ctx| ctx.resume_reading(h)).expect("resume");
        lp.run_until_timeout(|| got.borrow().len() == 11, LIMIT).await.expect("second chunk");
        assert_eq!(&got.borrow()[..], b"firstsecond");
    });
}
/// async-io's timer stays idle once it fired, even when set again to the same deadline;
/// the loop sets it anew, so a closure scheduled from a firing closure runs too, and
/// timers run in deadline order.
#[test]
fn timers_fire_in_order_and_again_after_firing() {
    block_on(async {
        let mut lp = Loop::new();
        let order = Rc::new(RefCell::new(Vec::new()));
        for (delay, tag) in [(30u64, 'c'), (10, 'a'), (20, 'b')] {
            let order = order.clone();
            lp.call_later(Duration::from_millis(delay), move |ctx| {
                order.borrow_mut().push(tag);
                if tag == 'c' {
                    let order = order.clone();
                    ctx.call_later(Duration::from_millis(5), move |_| order.borrow_mut().push('d'))
                        .expect("schedule");
                }
            })
            .expect("schedule");
        }
        lp.run_until_timeout(|| order.borrow().len() == 4, LIMIT).await.expect("all fired");
        assert_eq!(&order.borrow()[..], ['a', 'b', 'c', 'd']);
    });
}
