//! `Loop::sendfile` on the tokio driver (issue 16): zero-copy `sendfile(2)` to TCP and
//! Unix sockets (asked with `fallback = false`, so success means zero-copy ran), byte
//! exact, with offset, count and the file position; a pipe with the fallback denied is a
//! typed error. Both runtimes; loopback only; every wait is bounded (read timeouts on
//! the reader threads, `LIMIT` on the loop).

use std::fs::File;
use std::future::Future;
use std::io::{Read, Seek};
use std::net::TcpListener;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::thread::JoinHandle;
use std::time::Duration;

use aioport::stream::SendfileError;
use aioport::{Endpoint, Protocol, StreamHandle};
use aioport_tokio::{Error, Loop};

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

/// Hears nothing it needs to act on.
struct Quiet;

impl Protocol for Quiet {}

fn temp_path(what: &str) -> PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("aioport-tokio-sendfile-{what}-{}-{n}", std::process::id()))
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
    on_both_runtimes(|| async {
        let (addr, reader) = tcp_reader();
        let mut lp = Loop::new();
        let h = lp.create_connection(Endpoint::Addr(addr), Box::new(Quiet)).await.expect("connect");
        let mut file = file_with(&data);
        let sent = tokio::time::timeout(LIMIT, lp.sendfile(h, &file, 0, None, false))
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
    on_both_runtimes(|| async {
        let (addr, reader) = tcp_reader();
        let mut lp = Loop::new();
        let h = lp.create_connection(Endpoint::Addr(addr), Box::new(Quiet)).await.expect("connect");
        let mut file = file_with(&data);
        let sent = tokio::time::timeout(LIMIT, lp.sendfile(h, &file, 1000, Some(5000), false))
            .await
            .expect("sendfile within the limit")
            .expect("zero-copy sendfile");
        assert_eq!(sent, 5000);
        assert_eq!(file.stream_position().expect("position"), 6000);
        // Past the end: only what the file holds.
        let sent = tokio::time::timeout(LIMIT, lp.sendfile(h, &file, 99_000, Some(5000), false))
            .await
            .expect("sendfile within the limit")
            .expect("zero-copy sendfile");
        assert_eq!(sent, 1000);
        assert_eq!(file.stream_position().expect("position"), 100_000);
        // At or past the end: nothing sent, the position left alone.
        let sent = tokio::time::timeout(LIMIT, lp.sendfile(h, &file, 200_000, None, false))
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
    on_both_runtimes(|| async {
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
        let sent = tokio::time::timeout(LIMIT, lp.sendfile(h, &file, 0, None, false))
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
    on_both_runtimes(|| async {
        let (_reader, writer) = std::io::pipe().expect("pipe");
        let mut lp = Loop::new();
        let h = lp.connect_write_pipe(writer.into(), Box::new(Quiet)).await.expect("pipe");
        let mut file = file_with(b"not sent");
        let r = lp.sendfile(h, &file, 0, None, false).await;
        assert!(
            matches!(r, Err(Error::Sendfile(SendfileError::NotAvailable))),
            "expected NotAvailable, got {r:?}"
        );
        assert_eq!(file.stream_position().expect("position"), 0);
    });
}
