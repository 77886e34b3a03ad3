//! `Loop::sendfile` on the smol driver (issue 16): zero-copy `sendfile(2)` to TCP and
//! Unix sockets (asked with `fallback = false`, so success means zero-copy ran), byte
//! exact, with offset, count and the file position; a pipe with the fallback denied is a
//! typed error. Loopback only; every wait is bounded (read timeouts on
//! the reader threads, `LIMIT` on the loop).

use std::fs::File;
use std::future::{Future, poll_fn};
use std::io::{Read, Seek};
use std::net::TcpListener;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::pin::{Pin, pin};
use std::task::Poll;
use std::thread::JoinHandle;
use std::time::Duration;

use aioport::stream::SendfileError;
use aioport::{Endpoint, Protocol, StreamHandle};
use aioport_smol::{Error, Loop};

const LIMIT: Duration = Duration::from_secs(20);

/// Runs `f` on smol's reactor.
fn on_smol<F: Future<Output = ()>>(f: impl FnOnce() -> F) {
    async_io::block_on(f());
}

/// `f`, or `None` once `limit` has passed.
async fn timeout<T>(limit: Duration, f: impl Future<Output = T>) -> Option<T> {
    let mut f = pin!(f);
    let mut timer = async_io::Timer::after(limit);
    poll_fn(|cx| {
        if let Poll::Ready(v) = f.as_mut().poll(cx) {
            Poll::Ready(Some(v))
        } else if Pin::new(&mut timer).poll(cx).is_ready() {
            Poll::Ready(None)
        } else {
            Poll::Pending
        }
    })
    .await
}

/// Hears nothing it needs to act on.
struct Quiet;

impl Protocol for Quiet {}

fn temp_path(what: &str) -> PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("aioport-smol-sendfile-{what}-{}-{n}", std::process::id()))
}

/// Bytes no two offsets (within 251) agree on, so a skipped or repeated chunk shows.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8 ^ (i / 251) as u8).collect()
}

/// A temporary file holding `data`, unlinked at once (the descriptor keeps it).
fn file_with(data: &[u8]) -> File {
    let path = temp_path("file");
    std::fs::write(&path, data).expect("write the file");
    let file = File::open(&path).expect("open the file");
    std::fs::remove_file(&path).expect("unlink the file");
    file
}

/// FNV-1a, a checksum of what arrived.
fn checksum(data: &[u8]) -> u64 {
    data.iter()
        .fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
}

/// Accepts one connection on a std listener and reads it to EOF (bounded by a read
/// timeout): everything that arrived.
fn tcp_reader() -> (std::net::SocketAddr, JoinHandle<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let reader = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        s.set_read_timeout(Some(LIMIT)).expect("timeout");
        let mut got = Vec::new();
        s.read_to_end(&mut got).expect("read to EOF");
        got
    });
    (addr, reader)
}

/// Closes `h` (nothing is queued after a sendfile: the socket closes at once).
async fn close(lp: &mut Loop, h: StreamHandle) {
    lp.with(|ctx| ctx.close(h)).expect("close");
    lp.run_once().await;
}

#[test]
fn sixteen_mib_zero_copy_to_a_tcp_reader_byte_exact() {
    const LEN: usize = 16 << 20;
    let data = pattern(LEN);
    let want = checksum(&data);
    on_smol(|| async {
        let (addr, reader) = tcp_reader();
        let mut lp = Loop::new();
        let h = lp.create_connection(Endpoint::Addr(addr), Box::new(Quiet)).await.expect("connect");
        let mut file = file_with(&data);
        let sent = timeout(LIMIT, lp.sendfile(h, &file, 0, None, false))
            .await
            .expect("sendfile within the limit")
            .expect("zero-copy sendfile");
        assert_eq!(sent, LEN as u64);
        assert_eq!(file.stream_position().expect("position"), LEN as u64);
        close(&mut lp, h).await;
        let got = reader.join().expect("reader");
        assert_eq!(got.len(), LEN);
        assert_eq!(checksum(&got), want);
    });
}

#[test]
fn offset_and_count_leave_the_file_position_after_the_bytes_sent() {
    let data = pattern(100_000);
    on_smol(|| async {
        let (addr, reader) = tcp_reader();
        let mut lp = Loop::new();
        let h = lp.create_connection(Endpoint::Addr(addr), Box::new(Quiet)).await.expect("connect");
        let mut file = file_with(&data);
        let sent = timeout(LIMIT, lp.sendfile(h, &file, 1000, Some(5000), false))
            .await
            .expect("sendfile within the limit")
            .expect("zero-copy sendfile");
        assert_eq!(sent, 5000);
        assert_eq!(file.stream_position().expect("position"), 6000);
        // Past the end: only what the file holds.
        let sent = timeout(LIMIT, lp.sendfile(h, &file, 99_000, Some(5000), false))
            .await
            .expect("sendfile within the limit")
            .expect("zero-copy sendfile");
        assert_eq!(sent, 1000);
        assert_eq!(file.stream_position().expect("position"), 100_000);
        // At or past the end: nothing sent, the position left alone.
        let sent = timeout(LIMIT, lp.sendfile(h, &file, 200_000, None, false))
            .await
            .expect("sendfile within the limit")
            .expect("zero-copy sendfile");
        assert_eq!(sent, 0);
        assert_eq!(file.stream_position().expect("position"), 100_000);
        // A zero count is refused (asyncio's `ValueError`).
        let r = lp.sendfile(h, &file, 0, Some(0), false).await;
        assert!(
            matches!(r, Err(Error::Sendfile(SendfileError::ZeroCount))),
            "expected ZeroCount, got {r:?}"
        );
        close(&mut lp, h).await;
        let got = reader.join().expect("reader");
        let mut want = data[1000..6000].to_vec();
        want.extend_from_slice(&data[99_000..]);
        assert_eq!(got, want);
    });
}

#[test]
fn zero_copy_to_a_unix_socket() {
    const LEN: usize = 1 << 20;
    let data = pattern(LEN);
    on_smol(|| async {
        let path = temp_path("sock");
        let listener = UnixListener::bind(&path).expect("bind");
        let reader = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().expect("accept");
            s.set_read_timeout(Some(LIMIT)).expect("timeout");
            let mut got = Vec::new();
            s.read_to_end(&mut got).expect("read to EOF");
            got
        });
        let mut lp = Loop::new();
        let h = lp
            .create_connection(Endpoint::Unix(path.clone()), Box::new(Quiet))
            .await
            .expect("connect");
        let file = file_with(&data);
        let sent = timeout(LIMIT, lp.sendfile(h, &file, 0, None, false))
            .await
            .expect("sendfile within the limit")
            .expect("zero-copy sendfile");
        assert_eq!(sent, LEN as u64);
        close(&mut lp, h).await;
        let got = reader.join().expect("reader");
        std::fs::remove_file(&path).expect("unlink the socket");
        assert!(got == data, "the Unix socket's bytes differ ({} of {LEN})", got.len());
    });
}

#[test]
fn a_pipe_with_the_fallback_denied_is_a_typed_error() {
    on_smol(|| async {
        let (_reader, writer) = std::io::pipe().expect("pipe");
        let mut lp = Loop::new();
        let h = lp.connect_write_pipe(writer.into(), Box::new(Quiet)).expect("pipe");
        let mut file = file_with(b"not sent");
        let r = lp.sendfile(h, &file, 0, None, false).await;
        assert!(
            matches!(r, Err(Error::Sendfile(SendfileError::NotAvailable))),
            "expected NotAvailable, got {r:?}"
        );
        assert_eq!(file.stream_position().expect("position"), 0);
    });
}
