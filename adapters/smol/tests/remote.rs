//! Cross-task handles (`RemoteStream`, DESIGN.md §6): a queue bounded in bytes at the
//! transport's high-water mark, counted as external pending bytes; `drain`,
//! `wait_closed`, `abort` from another thread; `spawn_loop`. The same cases as the tokio
//! driver's, with writer threads (each `async_io::block_on`) in place of local tasks.
//! Loopback only; every wait is bounded.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use aioport::{CallbackResult, ConnectionError, Ctx, Endpoint, Protocol, StreamHandle, WriteError};
use aioport_smol::{Loop, ServerOptions, spawn_loop};
use async_io::block_on;
use bytes::Bytes;

const LIMIT: Duration = Duration::from_secs(20);
const CHUNK: usize = 16 * 1024;
const HIGH: usize = 64 * 1024;
/// Far more than loopback's socket buffers hold, so the writer must wait.
const TOTAL: usize = 64 << 20;

/// Byte `k` of the stream is `k % 251`; a chunk at offset `off` is a slice of this.
fn reference() -> Bytes {
    Bytes::from((0..251 + CHUNK).map(|k| (k % 251) as u8).collect::<Vec<u8>>())
}

/// The server side: starts not reading; checks every byte it gets.
struct Sink {
    handle: Rc<Cell<Option<StreamHandle>>>,
    received: Rc<Cell<usize>>,
    wrong: Rc<Cell<bool>>,
    lost: Rc<Cell<bool>>,
}

impl Protocol for Sink {
    fn connection_made(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        self.handle.set(Some(ctx.stream()));
        Ok(ctx.pause_reading(ctx.stream())?)
    }
    fn data_received(&mut self, _: &mut Ctx<'_>, data: &[u8]) -> CallbackResult {
        let at = self.received.get();
        if data.iter().enumerate().any(|(i, &b)| b != ((at + i) % 251) as u8) {
            self.wrong.set(true);
        }
        self.received.set(at + data.len());
        Ok(())
    }
    fn connection_lost(&mut self, _: &mut Ctx<'_>, _: Option<ConnectionError>) -> CallbackResult {
        self.lost.set(true);
        Ok(())
    }
}

/// The client side: its protocol only records flow control and the end.
#[derive(Clone, Default)]
struct Seen {
    paused: Rc<Cell<u32>>,
    resumed: Rc<Cell<u32>>,
    lost: Rc<RefCell<Option<Option<ConnectionError>>>>,
}

impl Protocol for Seen {
    fn connection_made(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        Ok(ctx.set_write_buffer_limits(ctx.stream(), Some(HIGH), None)?)
    }
    fn pause_writing(&mut self, _: &mut Ctx<'_>) -> CallbackResult {
        self.paused.set(self.paused.get() + 1);
        Ok(())
    }
    fn resume_writing(&mut self, _: &mut Ctx<'_>) -> CallbackResult {
        self.resumed.set(self.resumed.get() + 1);
        Ok(())
    }
    fn connection_lost(&mut self, _: &mut Ctx<'_>, err: Option<ConnectionError>) -> CallbackResult {
        *self.lost.borrow_mut() = Some(err);
        Ok(())
    }
}

struct Pair {
    lp: Loop,
    client: StreamHandle,
    server: Rc<Cell<Option<StreamHandle>>>,
    received: Rc<Cell<usize>>,
    wrong: Rc<Cell<bool>>,
    server_lost: Rc<Cell<bool>>,
    seen: Seen,
}

async fn pair() -> Pair {
    let mut lp = Loop::new();
    let server = Rc::new(Cell::new(None));
    let received = Rc::new(Cell::new(0));
    let wrong = Rc::new(Cell::new(false));
    let server_lost = Rc::new(Cell::new(false));
    let (s, r, w, l) = (server.clone(), received.clone(), wrong.clone(), server_lost.clone());
    let factory = move || -> Box<dyn Protocol> {
        Box::new(Sink { handle: s.clone(), received: r.clone(), wrong: w.clone(), lost: l.clone() })
    };
    let listening =
        lp.create_server("127.0.0.1:0", factory, ServerOptions::default()).await.expect("listen");
    let seen = Seen::default();
    let to = Endpoint::Addr(listening.addr());
    let client = lp.create_connection(to, Box::new(seen.clone())).await.expect("connect");
    lp.run_until_timeout(|| server.get().is_some(), LIMIT).await.expect("accepted");
    Pair { lp, client, server, received, wrong, server_lost, seen }
}

/// A writer the peer does not keep up with: the transport pauses, the cross-task queue
/// fills to high water and its bytes count in `write_buffer_size()`, `try_write` says
/// `BufferFull` and `write().await` (on another thread) waits; once the peer reads, every
/// byte arrives in order, `drain` and `close` and `wait_closed` complete. The queue is
/// filled from the loop's thread first, so that the checks see a writer that cannot race
/// them; the thread then goes on from there.
#[test]
fn writer_waits_at_high_water_and_queued_bytes_count_as_external_pending() {
    block_on(async {
        let mut p = pair().await;
        let remote = p.lp.remote_stream(p.client).expect("remote handle");
        let pattern = reference();
        let chunk = |at: usize| pattern.slice(at % 251..at % 251 + CHUNK);
        let mut written = 0;
        // Fill: queue what fits, let the loop move it into the transport, until the
        // transport is paused and the queue stays full after a turn (bounded).
        let mut full = None;
        for _ in 0..10_000 {
            match remote.try_write(chunk(written)) {
                Ok(()) => written += CHUNK,
                Err(WriteError::BufferFull { limit, .. }) if p.seen.paused.get() > 0 => {
                    full = Some(limit);
                    break;
                }
                Err(WriteError::BufferFull { .. }) => p.lp.run_once().await,
                Err(e) => panic!("try_write: {e}"),
            }
        }
        assert_eq!(full, Some(HIGH), "BufferFull at the transport's high-water mark");
        // A turn or more later the loop has moved what fits, counted the rest as external
        // pending and published the size.
        let mut size = 0;
        for _ in 0..1000 {
            p.lp.run_once().await;
            size = p.lp.with(|ctx| ctx.write_buffer_size(p.client)).expect("live");
            if size == remote.write_buffer_size() {
                break;
            }
        }
        assert_eq!(size, remote.write_buffer_size(), "the loop's size is the remote's");
        // The transport's own queue is above high (paused), and the cross-task queue holds
        // more than high - CHUNK: only counting it as external pending makes the size
        // exceed 2 × high - CHUNK.
        assert!(size > 2 * HIGH - CHUNK, "the queued bytes count: {size}");
        assert!(p.lp.with(|ctx| ctx.is_writing_paused(p.client)).expect("live"));
        match remote.try_write(vec![0u8; CHUNK]) {
            Err(WriteError::BufferFull { limit, .. }) => assert_eq!(limit, HIGH),
            other => panic!("expected BufferFull, got {other:?}"),
        }

        let (r, wake) = (remote.clone(), p.lp.handle());
        let writer = std::thread::spawn(move || {
            let result = block_on(async move {
                let reference = reference();
                let mut at = written;
                while at < TOTAL {
                    r.write(reference.slice(at % 251..at % 251 + CHUNK)).await?;
                    at += CHUNK;
                }
                r.drain().await;
                r.close();
                r.wait_closed().await;
                Ok::<(), WriteError>(())
            });
            // The loop checks `writer.is_finished()` when it turns: make it turn.
            let _ = wake.call_soon_threadsafe(|_| {});
            result
        });
        for _ in 0..10 {
            p.lp.run_once().await;
        }
        assert!(!writer.is_finished(), "the writer waits while the peer does not read");

        let server = p.server.get().expect("server side");
        p.lp.with(|ctx| ctx.resume_reading(server)).expect("resume the peer");
        p.lp.run_until_timeout(|| writer.is_finished() && p.server_lost.get(), LIMIT)
            .await
            .expect("everything flows, then both ends close");
        writer.join().expect("writer thread").expect("every write taken");
        assert_eq!(p.received.get(), TOTAL);
        assert!(!p.wrong.get(), "every byte in order");
        assert!(p.seen.resumed.get() >= 1, "resume_writing after the pause");
        assert_eq!(*p.seen.lost.borrow(), Some(None), "closed cleanly");
        assert_eq!(remote.try_write(&b"late"[..]), Err(WriteError::Closed));
    });
}

/// `abort` from another thread drops what is queued and ends the connection at once.
#[test]
fn abort_from_another_thread() {
    block_on(async {
        let mut p = pair().await;
        let remote = p.lp.remote_stream(p.client).expect("remote handle");
        remote.try_write(vec![7u8; 1000]).expect("queued");
        std::thread::spawn(move || remote.abort()).join().expect("aborting thread");
        p.lp.run_until_timeout(|| p.seen.lost.borrow().is_some(), LIMIT).await.expect("lost");
        assert_eq!(*p.seen.lost.borrow(), Some(None), "abort: connection_lost(None)");
        let remote = p.lp.remote_stream(p.client);
        assert!(remote.is_err(), "the transport is gone");
    });
}

/// Waiters on a loop that is dropped wake instead of waiting forever.
#[test]
fn dropping_the_loop_wakes_wait_closed() {
    block_on(async {
        let mut p = pair().await;
        let remote = p.lp.remote_stream(p.client).expect("remote handle");
        drop(p);
        // On another thread, so a missed wake-up fails the test instead of hanging it.
        let waiter = std::thread::spawn(move || {
            block_on(remote.wait_closed());
            remote
        });
        let mut waited = 0;
        while !waiter.is_finished() && waited < LIMIT.as_millis() {
            std::thread::sleep(Duration::from_millis(10));
            waited += 10;
        }
        assert!(waiter.is_finished(), "woken by the drop");
        let remote = waiter.join().expect("waiting thread");
        assert!(remote.is_closing());
        assert_eq!(remote.try_write(&b"x"[..]), Err(WriteError::Closed));
    });
}

/// Pause and resume of reading from another thread apply on the loop's next turn; a
/// write queued before the loop runs goes out once it does.
#[test]
fn reading_paused_and_resumed_from_another_thread() {
    block_on(async {
        let mut lp = Loop::new();
        let server = Rc::new(Cell::new(None));
        let received = Rc::new(Cell::new(0));
        let (s, r) = (server.clone(), received.clone());
        let factory = move || -> Box<dyn Protocol> {
            Box::new(Sink {
                handle: s.clone(),
                received: r.clone(),
                wrong: Rc::new(Cell::new(false)),
                lost: Rc::new(Cell::new(false)),
            })
        };
        let listening = lp
            .create_server("127.0.0.1:0", factory, ServerOptions::default())
            .await
            .expect("listen");
        let seen = Seen::default();
        let to = Endpoint::Addr(listening.addr());
        let client = lp.create_connection(to, Box::new(seen.clone())).await.expect("connect");
        let remote = lp.remote_stream(client).expect("remote handle");
        lp.run_until_timeout(|| server.get().is_some(), LIMIT).await.expect("accepted");
        let peer = server.get().expect("server side");
        let remote_peer = lp.remote_stream(peer).expect("the server side's handle");
        let r = remote.clone();
        std::thread::spawn(move || r.try_write(&b"early"[..]))
            .join()
            .expect("thread")
            .expect("queued");
        lp.run_until_timeout(|| remote.write_buffer_size() == 0, LIMIT).await.expect("sent");
        assert_eq!(received.get(), 0, "the server side starts paused (Sink)");
        let rp = remote_peer.clone();
        std::thread::spawn(move || rp.resume_reading()).join().expect("thread");
        lp.run_until_timeout(|| received.get() == 5, LIMIT).await.expect("the early bytes");
        assert!(lp.with(|ctx| ctx.is_reading(peer)).expect("live"), "resumed remotely");
        let rp = remote_peer.clone();
        std::thread::spawn(move || rp.pause_reading()).join().expect("thread");
        let paused = |lp: &mut Loop| !lp.with(|ctx| ctx.is_reading(peer)).expect("live");
        for _ in 0..100 {
            if paused(&mut lp) {
                break;
            }
            lp.run_once().await;
        }
        assert!(paused(&mut lp), "paused remotely");
        remote.close();
        lp.run_until_timeout(|| seen.lost.borrow().is_some(), LIMIT).await.expect("closed");
        assert_eq!(*seen.lost.borrow(), Some(None));
        assert!(remote.is_closing());
        assert_eq!(remote.try_write(&b"late"[..]), Err(WriteError::Closed));
    });
}

/// `spawn_loop`: two loop threads share a port (`SO_REUSEPORT`); clients are served by
/// both, and a closure sent through the first one's handle runs there.
#[test]
fn spawn_loop_threads_serve_and_stop() {
    struct Echo;
    impl Protocol for Echo {
        fn data_received(&mut self, ctx: &mut Ctx<'_>, data: &[u8]) -> CallbackResult {
            Ok(ctx.write_slice(ctx.stream(), data)?)
        }
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let first = spawn_loop(move |mut lp: Loop| async move {
        let opts = ServerOptions::default().reuse_port(true);
        let server = lp.create_server("127.0.0.1:0", || Box::new(Echo), opts).await;
        let _ = tx.send(server.map(|s| s.addr()).map_err(|e| e.to_string()));
        lp.run_forever().await;
    })
    .expect("first loop thread");
    let addr = rx.recv_timeout(LIMIT).expect("first loop started").expect("listens");
    let (tx, rx) = std::sync::mpsc::channel();
    let second = spawn_loop(move |mut lp: Loop| async move {
        let opts = ServerOptions::default().reuse_port(true);
        let server = lp.create_server(addr, || Box::new(Echo), opts).await;
        let _ = tx.send(server.map(|s| s.addr()).map_err(|e| e.to_string()));
        lp.run_forever().await;
    })
    .expect("second loop thread");
    assert_eq!(rx.recv_timeout(LIMIT).expect("second loop started"), Ok(addr), "same port");
    for i in 0..20u8 {
        let mut s = std::net::TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(LIMIT)).expect("timeout");
        std::io::Write::write_all(&mut s, &[i; 100]).expect("write");
        let mut buf = [0; 100];
        std::io::Read::read_exact(&mut s, &mut buf).expect("echo");
        assert_eq!(buf, [i; 100]);
    }
    // A closure sent to the first loop runs on its thread.
    let done = Arc::new(AtomicUsize::new(0));
    let d = done.clone();
    first
        .handle()
        .call_soon_threadsafe(move |_| {
            d.store(1, Ordering::Release);
        })
        .expect("queued");
    for _ in 0..2000 {
        if done.load(Ordering::Acquire) == 1 {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(done.load(Ordering::Acquire), 1, "the closure ran on the loop thread");
    first.stop();
    second.stop();
    first.join().expect("first thread");
    second.join().expect("second thread");
    assert!(std::net::TcpStream::connect(addr).is_err(), "both loops ended: nobody listens");
}
