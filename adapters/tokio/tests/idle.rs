//! A transport that wants no I/O (paused for reading, nothing queued) still hears of a
//! reset at once, as on the poll loop (`EPOLLERR`): `connection_lost` with the error, not
//! at the next `resume_reading`. Both runtimes; loopback only; every wait is bounded.

use std::cell::RefCell;
use std::future::Future;
use std::io::Write;
use std::net::TcpStream;
use std::os::fd::AsFd;
use std::rc::Rc;
use std::time::Duration;

use aioport::{CallbackResult, ConnectionError, Ctx, Protocol, StreamHandle};
use aioport_tokio::{Loop, ServerOptions};

const LIMIT: Duration = Duration::from_secs(20);

/// Runs `f` on a current-thread runtime, then in a `LocalSet` of a multi-thread one.
fn on_both_runtimes<F: Future<Output = ()>>(f: impl Fn() -> F) {
    let ct = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt");
    ct.block_on(f());
    let mt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("rt");
    tokio::task::LocalSet::new().block_on(&mt, f());
}

/// What the server side saw.
#[derive(Default)]
struct Seen {
    handle: Option<StreamHandle>,
    data: Vec<u8>,
    lost: Option<Option<ConnectionError>>,
}

/// Pauses its reading as soon as it is connected.
struct PausedAtOnce(Rc<RefCell<Seen>>);

impl Protocol for PausedAtOnce {
    fn connection_made(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        self.0.borrow_mut().handle = Some(ctx.stream());
        Ok(ctx.pause_reading(ctx.stream())?)
    }
    fn data_received(&mut self, _: &mut Ctx<'_>, data: &[u8]) -> CallbackResult {
        self.0.borrow_mut().data.extend_from_slice(data);
        Ok(())
    }
    fn connection_lost(&mut self, _: &mut Ctx<'_>, err: Option<ConnectionError>) -> CallbackResult {
        self.0.borrow_mut().lost = Some(err);
        Ok(())
    }
}

/// A server whose one connection pauses at once, and a blocking client connected to it.
async fn paused_connection(lp: &mut Loop) -> (Rc<RefCell<Seen>>, TcpStream) {
    let seen = Rc::new(RefCell::new(Seen::default()));
    let s = seen.clone();
    let factory = move || -> Box<dyn Protocol> { Box::new(PausedAtOnce(s.clone())) };
    let server =
        lp.create_server("127.0.0.1:0", factory, ServerOptions::default()).await.expect("listen");
    let client = TcpStream::connect(server.addr()).expect("connect");
    lp.run_until_timeout(|| seen.borrow().handle.is_some(), LIMIT).await.expect("accepted");
    (seen, client)
}

/// Serves whatever comes for a while (the bytes reach the server's socket meanwhile).
async fn let_the_loop_run(lp: &mut Loop) {
    let _ = tokio::time::timeout(Duration::from_millis(100), lp.run_until(|| false)).await;
}

#[test]
fn reset_while_paused_for_reading_reaches_connection_lost() {
    on_both_runtimes(|| async {
        let mut lp = Loop::new();
        let (seen, mut client) = paused_connection(&mut lp).await;
        // Data waiting while paused is not an error: the transport stays open.
        client.write_all(b"unread").expect("write");
        let_the_loop_run(&mut lp).await;
        assert!(seen.borrow().lost.is_none(), "data while paused ended the connection");
        rustix::net::sockopt::set_socket_linger(client.as_fd(), Some(Duration::ZERO))
            .expect("SO_LINGER 0");
        drop(client);
        lp.run_until_timeout(|| seen.borrow().lost.is_some(), LIMIT)
            .await
            .expect("the reset reaches the paused transport without resume_reading");
        let seen = seen.borrow();
        let err = seen.lost.clone().flatten().expect("connection_lost with the error");
        assert_eq!(err.io_kind(), Some(std::io::ErrorKind::ConnectionReset), "{err}");
        assert!(seen.data.is_empty(), "nothing was delivered while paused");
        assert_eq!(lp.len(), 0, "the transport left the loop");
    });
}

#[test]
fn data_that_arrived_while_paused_is_read_on_resume() {
    on_both_runtimes(|| async {
        let mut lp = Loop::new();
        let (seen, mut client) = paused_connection(&mut lp).await;
        client.write_all(b"waited").expect("write");
        let_the_loop_run(&mut lp).await;
        let h = seen.borrow().handle.expect("connected");
        lp.with(|ctx| ctx.resume_reading(h)).expect("resume");
        lp.run_until_timeout(|| seen.borrow().data.len() == 6, LIMIT)
            .await
            .expect("the bytes that waited are delivered after resume_reading");
        assert_eq!(&seen.borrow().data[..], b"waited");
        // A clean close while reading is EOF, then connection_lost(None).
        drop(client);
        lp.run_until_timeout(|| seen.borrow().lost.is_some(), LIMIT).await.expect("lost");
        assert_eq!(seen.borrow().lost, Some(None));
    });
}

#[test]
fn run_once_on_an_idle_loop_returns_without_waiting() {
    on_both_runtimes(|| async {
        let mut lp = Loop::new();
        let (seen, _client) = paused_connection(&mut lp).await;
        // Nothing to do: one turn, and back (it used to wait for a wake-up that never came).
        tokio::time::timeout(LIMIT, lp.run_once()).await.expect("run_once returns");
        assert!(seen.borrow().lost.is_none());
    });
}
