//! `RemoteStream` on the poll loop: writes, `write_eof`, close, abort and reading from
//! other threads through a queue bounded at the transport's high-water mark (DESIGN.md §6).
//! The peer is a plain std socket read on its own thread; the loop runs on the test
//! thread. Loopback only; every wait bounded.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::pin::pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::JoinHandle;
use std::time::Duration;

use aioport::{
    CallbackResult, ConnectionError, Ctx, Endpoint, HandleError, Protocol, StreamHandle, WriteError,
};
use aioport_poll::{Error, Loop, LoopHandle};

const LIMIT: Duration = Duration::from_secs(10);
/// A wait meant to run out (the condition cannot hold while the loop is not running).
const SHORT: Duration = Duration::from_millis(20);

/// The client's protocol: writes come from other threads; it records flow control and
/// the end.
struct Client(Rc<Seen>);

#[derive(Default)]
struct Seen {
    paused: Cell<usize>,
    received: RefCell<Vec<u8>>,
    lost: Cell<Option<Option<ConnectionError>>>,
}

impl Protocol for Client {
    fn data_received(&mut self, _: &mut Ctx<'_>, data: &[u8]) -> CallbackResult {
        self.0.received.borrow_mut().extend_from_slice(data);
        Ok(())
    }
    fn pause_writing(&mut self, _: &mut Ctx<'_>) -> CallbackResult {
        self.0.paused.set(self.0.paused.get() + 1);
        Ok(())
    }
    fn connection_lost(&mut self, _: &mut Ctx<'_>, err: Option<ConnectionError>) -> CallbackResult {
        self.0.lost.set(Some(err));
        Ok(())
    }
}

/// A connection from the loop to a std socket (the peer).
fn connect(lp: &mut Loop) -> (StreamHandle, TcpStream, Rc<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let seen = Rc::new(Seen::default());
    let endpoint = Endpoint::Addr(listener.local_addr().unwrap());
    let h = lp.create_connection(endpoint, Box::new(Client(seen.clone()))).unwrap();
    let (peer, _) = listener.accept().unwrap();
    peer.set_read_timeout(Some(LIMIT)).unwrap();
    (h, peer, seen)
}

/// Reads `peer` to EOF (or a reset, or the read timeout) on a thread, once `go` says so.
fn reader(peer: TcpStream, go: Option<mpsc::Receiver<()>>) -> JoinHandle<Vec<u8>> {
    reader_then(peer, go, None)
}

/// As [`reader`], setting `done` at the end.
fn reader_then(
    mut peer: TcpStream,
    go: Option<mpsc::Receiver<()>>,
    done: Option<Done>,
) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let _set = done.map(SetOnDrop);
        if let Some(go) = go {
            let _ = go.recv_timeout(LIMIT);
        }
        let mut got = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match peer.read(&mut buf) {
                Ok(0) => return got,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return got,
            }
        }
    })
}

/// Sets its `Done` when dropped (also on an early return).
struct SetOnDrop(Done);

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.set();
    }
}

/// `len` bytes of the stream pattern starting at offset `at`.
fn pattern(at: usize, len: usize) -> Vec<u8> {
    (at..at + len).map(|i| (i % 251) as u8).collect()
}

fn set_limits(lp: &mut Loop, h: StreamHandle, high: usize, low: usize) {
    lp.with(|ctx| ctx.set_write_buffer_limits(h, Some(high), Some(low))).unwrap();
}

/// Set by another thread when its part is over; wakes the loop, whose run then returns.
#[derive(Clone)]
struct Done(Arc<AtomicBool>, LoopHandle);

impl Done {
    fn new(lp: &Loop) -> Done {
        Done(Arc::new(AtomicBool::new(false)), lp.handle())
    }

    fn set(&self) {
        self.0.store(true, Ordering::Release);
        self.1.stop();
    }
}

/// Runs the loop until `done` is set.
fn run_until_done(lp: &mut Loop, done: &Done) {
    lp.run_until_timeout(|| done.0.load(Ordering::Acquire), LIMIT).unwrap();
}

#[test]
fn writers_on_several_threads_keep_their_order() {
    const WRITERS: u8 = 4;
    const RECORDS: u16 = 500;
    const RECORD: usize = 64;
    let mut lp = Loop::new().unwrap();
    let (h, peer, seen) = connect(&mut lp);
    // A small high-water mark, so writers wait for each other.
    set_limits(&mut lp, h, 4096, 1024);
    let remote = lp.remote_stream(h).unwrap();
    let got = reader(peer, None);
    let done = Done::new(&lp);
    let finished = done.clone();
    let coordinator = std::thread::spawn(move || {
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let remote = remote.clone();
                std::thread::spawn(move || {
                    for seq in 0..RECORDS {
                        let mut rec = vec![w; RECORD];
                        rec[1..3].copy_from_slice(&seq.to_be_bytes());
                        rec[3..].fill((usize::from(w) * 31 + usize::from(seq)) as u8);
                        remote.write(rec, LIMIT).unwrap();
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        remote.close();
        let closed = remote.wait_closed(LIMIT);
        finished.set();
        closed
    });
    run_until_done(&mut lp, &done);
    coordinator.join().unwrap().unwrap();
    let got = got.join().unwrap();

    assert_eq!(got.len(), usize::from(WRITERS) * usize::from(RECORDS) * RECORD);
    let mut next = [0u16; WRITERS as usize];
    for rec in got.chunks(RECORD) {
        let w = rec[0];
        let seq = u16::from_be_bytes([rec[1], rec[2]]);
        assert_eq!(seq, next[usize::from(w)], "writer {w}: records out of order");
        let fill = (usize::from(w) * 31 + usize::from(seq)) as u8;
        assert!(rec[3..].iter().all(|&b| b == fill), "writer {w} record {seq} torn");
        next[usize::from(w)] += 1;
    }
    assert_eq!(next, [RECORDS; WRITERS as usize]);
    assert!(matches!(seen.lost.take(), Some(None)));
}

#[test]
fn slow_reader_keeps_the_queue_at_high_water() {
    const HIGH: usize = 64 * 1024;
    const LOW: usize = 16 * 1024;
    const CHUNK: usize = 4096;
    /// Enough to fill the loopback socket buffers several times over.
    const TOTAL: usize = 64 * 1024 * 1024;
    let mut lp = Loop::new().unwrap();
    let (h, peer, seen) = connect(&mut lp);
    set_limits(&mut lp, h, HIGH, LOW);
    let remote = lp.remote_stream(h).unwrap();
    let (go, wait) = mpsc::channel();
    let got = reader(peer, Some(wait));

    // Phase 1: nobody reads; the writer fills the socket, the transport and the queue.
    let blocked = Done::new(&lp);
    let flag = blocked.clone();
    let r = remote.clone();
    let writer = std::thread::spawn(move || {
        let mut at = 0;
        let mut full = None;
        let mut largest = 0;
        while at < TOTAL {
            match r.write(pattern(at, CHUNK), Duration::from_millis(200)) {
                Ok(()) => at += CHUNK,
                Err(WriteError::BufferFull { buffered, limit, .. }) => {
                    full = Some((buffered, limit));
                    break;
                }
                Err(e) => panic!("{e}"),
            }
            largest = largest.max(r.write_buffer_size());
        }
        flag.set();
        (at, full, largest)
    });
    run_until_done(&mut lp, &blocked);
    let (written, full, largest) = writer.join().unwrap();
    let Some((buffered, limit)) = full else { panic!("{written} bytes went out unread") };
    assert_eq!(limit, HIGH);
    assert!(buffered <= HIGH && buffered > HIGH - CHUNK, "queue holds {buffered}");
    // The transport stopped taking writes at high water; what waits in the queue counts
    // in its buffer size (otherwise it could not exceed HIGH + CHUNK).
    let size = lp.with(|ctx| ctx.write_buffer_size(h)).unwrap();
    assert!(size >= HIGH + buffered, "write_buffer_size {size}, queued {buffered}");
    assert!(size < 2 * HIGH + CHUNK, "write_buffer_size {size}");
    assert_eq!(remote.write_buffer_size(), size);
    assert!(largest < 2 * HIGH + CHUNK, "largest size seen {largest}");
    assert_eq!(seen.paused.get(), 1);
    assert!(matches!(remote.drain(SHORT), Err(Error::TimedOut)));

    // Phase 2: the reader starts; the rest goes out in order, then the buffer drains.
    go.send(()).unwrap();
    let done = Done::new(&lp);
    let finished = done.clone();
    let r = remote.clone();
    let rest = std::thread::spawn(move || {
        let mut at = written;
        let mut largest = 0;
        while at < written + 4 * 1024 * 1024 {
            r.write(pattern(at, CHUNK), LIMIT).unwrap();
            at += CHUNK;
            largest = largest.max(r.write_buffer_size());
        }
        r.drain(LIMIT).unwrap();
        let drained = r.write_buffer_size();
        r.close();
        r.wait_closed(LIMIT).unwrap();
        finished.set();
        (at, drained, largest)
    });
    run_until_done(&mut lp, &done);
    let (total, drained, largest) = rest.join().unwrap();
    assert!(drained <= LOW, "drain returned at {drained}");
    assert!(largest < 2 * HIGH + CHUNK, "largest size seen {largest}");
    let got = got.join().unwrap();
    assert_eq!(got.len(), total);
    assert!(got == pattern(0, total), "bytes differ from what was written");
}

#[test]
fn try_write_on_a_full_queue_is_buffer_full() {
    let mut lp = Loop::new().unwrap();
    let (h, peer, _seen) = connect(&mut lp);
    set_limits(&mut lp, h, 1000, 100);
    let remote = lp.remote_stream(h).unwrap();
    // The loop does not run: nothing leaves the queue.
    remote.try_write(pattern(0, 600)).unwrap();
    assert_eq!(
        remote.try_write(pattern(600, 600)),
        Err(WriteError::BufferFull { buffered: 600, len: 600, limit: 1000 })
    );
    remote.try_write(pattern(600, 400)).unwrap();
    assert_eq!(remote.write_buffer_size(), 1000);
    // `write` waits for room, then gives up with the same error.
    assert!(matches!(remote.write(pattern(1000, 1), SHORT), Err(WriteError::BufferFull { .. })));
    assert_eq!(remote.write_buffer_size(), 1000);

    let got = reader(peer, None);
    let done = Done::new(&lp);
    let finished = done.clone();
    let r = remote.clone();
    let closer = std::thread::spawn(move || {
        // An empty queue takes a write of any size.
        r.write(pattern(1000, 5000), LIMIT).unwrap();
        r.close();
        let closed = r.wait_closed(LIMIT);
        finished.set();
        closed
    });
    run_until_done(&mut lp, &done);
    closer.join().unwrap().unwrap();
    assert!(got.join().unwrap() == pattern(0, 6000));
}

#[test]
fn close_from_another_thread_flushes_then_wait_closed() {
    let mut lp = Loop::new().unwrap();
    let (h, peer, seen) = connect(&mut lp);
    let remote = lp.remote_stream(h).unwrap();
    let got = reader(peer, None);
    let done = Done::new(&lp);
    let finished = done.clone();
    let t = std::thread::spawn(move || {
        for i in 0..25 {
            remote.write(pattern(i * 4096, 4096), LIMIT).unwrap();
        }
        remote.close();
        assert!(remote.is_closing());
        assert_eq!(remote.try_write(&b"late"[..]), Err(WriteError::Closing));
        remote.wait_closed(LIMIT).unwrap();
        assert_eq!(remote.try_write(&b"later"[..]), Err(WriteError::Closed));
        finished.set();
    });
    run_until_done(&mut lp, &done);
    t.join().unwrap();
    assert!(got.join().unwrap() == pattern(0, 25 * 4096));
    assert!(matches!(seen.lost.take(), Some(None)));
    assert_eq!(lp.remote_stream(h).unwrap_err(), HandleError::Stale);
}

#[test]
fn write_eof_from_another_thread_half_closes() {
    let mut lp = Loop::new().unwrap();
    let (h, mut peer, seen) = connect(&mut lp);
    let remote = lp.remote_stream(h).unwrap();
    // The peer reads to EOF, then answers on the still open other half.
    let done = Done::new(&lp);
    let finished = done.clone();
    let got = std::thread::spawn(move || {
        let mut got = Vec::new();
        let read = peer.read_to_end(&mut got);
        let answered = peer.write_all(b"bye");
        finished.set();
        (got, read.is_ok() && answered.is_ok())
    });
    let r = remote.clone();
    let t = std::thread::spawn(move || {
        r.write(pattern(0, 10_000), LIMIT).unwrap();
        r.write_eof();
        r.try_write(&b"x"[..])
    });
    assert_eq!(t.join().unwrap(), Err(WriteError::AfterEof));
    run_until_done(&mut lp, &done);
    let (bytes, answered) = got.join().unwrap();
    assert!(bytes == pattern(0, 10_000) && answered);
    // The answer arrives, then the peer's close ends the connection.
    lp.run_until_timeout(|| seen.received.borrow().len() == 3, LIMIT).unwrap();
    assert_eq!(&seen.received.borrow()[..], b"bye");
    lp.run_until_timeout(|| remote.wait_closed(Duration::ZERO).is_ok(), LIMIT).unwrap();
    assert!(matches!(seen.lost.take(), Some(None)));
}

#[test]
fn abort_from_another_thread_drops_what_is_queued() {
    const CHUNK: usize = 64 * 1024;
    let mut lp = Loop::new().unwrap();
    let (h, peer, seen) = connect(&mut lp);
    let remote = lp.remote_stream(h).unwrap();
    let (go, wait) = mpsc::channel();
    let got = reader(peer, Some(wait));
    let done = Done::new(&lp);
    let finished = done.clone();
    let t = std::thread::spawn(move || {
        let mut at = 0;
        // Until the queue is full: the peer does not read.
        while at < 64 * 1024 * 1024 {
            match remote.write(pattern(at, CHUNK), Duration::from_millis(200)) {
                Ok(()) => at += CHUNK,
                Err(WriteError::BufferFull { .. }) => break,
                Err(e) => panic!("{e}"),
            }
        }
        remote.abort();
        remote.wait_closed(LIMIT).unwrap();
        let after = remote.try_write(&b"x"[..]);
        finished.set();
        (at, after)
    });
    run_until_done(&mut lp, &done);
    let (written, after) = t.join().unwrap();
    go.send(()).unwrap();
    assert_eq!(after, Err(WriteError::Closed));
    assert!(matches!(seen.lost.take(), Some(None)));
    let got = got.join().unwrap();
    assert!(got.len() < written, "{} of {written} bytes arrived after abort", got.len());
    assert!(got == pattern(0, got.len()));
}

#[test]
fn pause_and_resume_reading_from_another_thread() {
    let mut lp = Loop::new().unwrap();
    let (h, _peer, _seen) = connect(&mut lp);
    let remote = lp.remote_stream(h).unwrap();
    let r = remote.clone();
    std::thread::spawn(move || r.pause_reading()).join().unwrap();
    // The command woke the loop: its next iteration applies it.
    lp.run_once(Some(LIMIT)).unwrap();
    assert!(!lp.with(|ctx| ctx.is_reading(h)).unwrap());
    std::thread::spawn(move || remote.resume_reading()).join().unwrap();
    lp.run_once(Some(LIMIT)).unwrap();
    assert!(lp.with(|ctx| ctx.is_reading(h)).unwrap());
}

#[test]
fn a_dropped_loop_wakes_every_waiter() {
    let mut lp = Loop::new().unwrap();
    let (h, _peer, _seen) = connect(&mut lp);
    set_limits(&mut lp, h, 1000, 100);
    let remote = lp.remote_stream(h).unwrap();
    remote.try_write(pattern(0, 1000)).unwrap();
    let waiters: Vec<JoinHandle<String>> = (0..3)
        .map(|i| {
            let r = remote.clone();
            std::thread::spawn(move || match i {
                0 => format!("{:?}", r.write(pattern(0, 10), LIMIT)),
                1 => format!("{:?}", r.drain(LIMIT)),
                _ => format!("{:?}", r.wait_closed(LIMIT)),
            })
        })
        .collect();
    // Gives the waiters time to park (they return the same either way).
    std::thread::sleep(Duration::from_millis(100));
    drop(lp);
    let results: Vec<String> = waiters.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(results, ["Err(Closed)", "Ok(())", "Ok(())"]);
    assert_eq!(remote.try_write(&b"x"[..]), Err(WriteError::Closed));
    assert!(remote.is_closing());
}

/// A minimal executor: polls `f` on this thread, parking between wake-ups.
fn block_on<F: Future>(f: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut f = pin!(f);
    for _ in 0..1_000_000 {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park_timeout(LIMIT);
    }
    panic!("the future never completed");
}

#[test]
fn async_methods_need_no_runtime() {
    let mut lp = Loop::new().unwrap();
    let (h, peer, _seen) = connect(&mut lp);
    set_limits(&mut lp, h, 8192, 1024);
    let remote = lp.remote_stream(h).unwrap();
    let got = reader(peer, None);
    let done = Done::new(&lp);
    let finished = done.clone();
    let steps = Arc::new(Mutex::new(Vec::new()));
    let log = steps.clone();
    let t = std::thread::spawn(move || {
        block_on(async {
            for i in 0..100 {
                remote.write_async(pattern(i * 1000, 1000)).await.unwrap();
            }
            log.lock().unwrap().push("written");
            remote.drain_async().await;
            log.lock().unwrap().push("drained");
            remote.close();
            remote.wait_closed_async().await;
            log.lock().unwrap().push("closed");
        });
        finished.set();
    });
    run_until_done(&mut lp, &done);
    t.join().unwrap();
    assert_eq!(*steps.lock().unwrap(), ["written", "drained", "closed"]);
    assert!(got.join().unwrap() == pattern(0, 100_000));
}
