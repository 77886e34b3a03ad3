//! Thread-per-core: `spawn_server` (N loops, each on its own current-thread runtime,
//! sharing a port with `SO_REUSEPORT`) and `spawn_loops`. Loopback only; every wait is
//! bounded.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use aioport::{CallbackResult, Ctx, Protocol};
use aioport_tokio::{Error, ServerOptions, spawn_loops, spawn_server};

const LIMIT: Duration = Duration::from_secs(20);

/// Echoes; counts the connections it was made for, per loop.
struct Echo;
impl Protocol for Echo {
    fn data_received(&mut self, ctx: &mut Ctx<'_>, data: &[u8]) -> CallbackResult {
        Ok(ctx.write_slice(ctx.stream(), data)?)
    }
}

fn echo_once(addr: SocketAddr, message: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(LIMIT)).expect("timeout");
    s.write_all(message).expect("write");
    let mut back = vec![0; message.len()];
    s.read_exact(&mut back).expect("echo");
    back
}

#[test]
fn three_loops_share_one_port_and_every_connection_is_served() {
    let made = Arc::new(AtomicUsize::new(0));
    let counter = made.clone();
    let factory = move || -> Box<dyn Protocol> {
        counter.fetch_add(1, Ordering::Relaxed);
        Box::new(Echo)
    };
    let n = NonZeroUsize::new(3).expect("3");
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    let server = spawn_server(any, n, ServerOptions::default(), factory).expect("listen");
    assert_eq!(server.loops().len(), 3);
    assert_ne!(server.addr().port(), 0, "the first loop picked the port, the others joined");
    for i in 0..30u8 {
        assert_eq!(echo_once(server.addr(), &[i; 100]), [i; 100]);
    }
    assert_eq!(made.load(Ordering::Relaxed), 30, "one protocol per connection");
    server.stop();
    server.join().expect("no loop panicked");
}

#[test]
fn a_port_in_use_is_a_bind_error() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let at = taken.local_addr().expect("addr");
    let n = NonZeroUsize::new(2).expect("2");
    // `taken` has no SO_REUSEPORT, so even the loops' reuse_port cannot share it.
    match spawn_server(at, n, ServerOptions::default(), || Box::new(Echo)) {
        Err(Error::Bind { addr, .. }) => assert_eq!(addr, at),
        other => panic!("expected Error::Bind, got {other:?}"),
    }
}

#[test]
fn spawn_loops_runs_main_once_per_loop_with_its_index() {
    let (tx, rx) = std::sync::mpsc::channel();
    let n = NonZeroUsize::new(4).expect("4");
    let loops = spawn_loops(n, move |i, mut lp| {
        let tx = tx.clone();
        async move {
            lp.call_soon(move |_| tx.send((i, std::thread::current().id())).expect("send"));
            lp.run_forever().await;
        }
    })
    .expect("spawn");
    let mut seen: Vec<_> = (0..4).map(|_| rx.recv_timeout(LIMIT).expect("each loop ran")).collect();
    seen.sort_by_key(|(i, _)| *i);
    assert_eq!(seen.iter().map(|(i, _)| *i).collect::<Vec<_>>(), [0, 1, 2, 3]);
    let threads: std::collections::HashSet<_> = seen.iter().map(|(_, t)| *t).collect();
    assert_eq!(threads.len(), 4, "a thread per loop");
    assert_eq!(loops.handles().count(), 4);
    loops.stop();
    loops.join().expect("no loop panicked");
}
