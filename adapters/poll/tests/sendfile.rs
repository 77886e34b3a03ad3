//! Sendfile on the poll loop over real loopback sockets (issue 16): zero-copy byte-exact
//! over TCP and a Unix socket (checksum on the receiving side), the forced fallback
//! byte-exact, a peer that stops reading pauses the fallback within high water plus one
//! chunk, writes during a sendfile refused, offsets and counts with the file position
//! left where asyncio leaves it, pipes (fallback only), TLS (feature `tls`: fallback
//! only, byte-exact). The 1 GiB run is `examples/sendfile.rs --bytes 1G` in release
//! (`.ci/run`). Every wait bounded; 127.0.0.1 only.

use std::cell::RefCell;
use std::fs::File;
use std::io::{Seek, Write};
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use aioport::stream::{SENDFILE_CHUNK, SendfileError, SendfileFallback};
use aioport::{CallbackResult, Ctx, Endpoint, Protocol, StreamHandle, WriteError};
use aioport_poll::{Error, FileSource, Loop, ServerOptions};

/// No wait in this file is longer.
const LIMIT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------
// Files and checksums
// ---------------------------------------------------------------------------------------

/// The byte at `i` of every test file: position-dependent, so a lost, repeated or
/// reordered piece changes the checksum.
fn pattern(i: u64) -> u8 {
    let x = (i >> 3).wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (x >> ((i & 7) * 8)) as u8
}

/// FNV-1a over a stream, in pieces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fnv(u64);

impl Fnv {
    fn new() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
    fn update(&mut self, data: &[u8]) {
        for &b in data {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

fn checksum_of(data: impl Iterator<Item = u8>) -> Fnv {
    let mut f = Fnv::new();
    for b in data {
        f.update(&[b]);
    }
    f
}

/// A temporary file of `len` pattern bytes, removed on drop.
struct TempFile {
    path: PathBuf,
    file: File,
}

impl TempFile {
    fn new(tag: &str, len: u64) -> Self {
        let path = std::env::temp_dir()
            .join(format!("aioport-sendfile-{tag}-{}-{len}", std::process::id()));
        let mut file =
            File::options().read(true).write(true).create(true).truncate(true).open(&path).unwrap();
        let mut block = Vec::with_capacity(1 << 20);
        let mut at = 0;
        while at < len {
            let n = (len - at).min(1 << 20);
            block.clear();
            block.extend((at..at + n).map(pattern));
            file.write_all(&block).unwrap();
            at += n;
        }
        file.rewind().unwrap();
        TempFile { path, file }
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

// ---------------------------------------------------------------------------------------
// Protocols
// ---------------------------------------------------------------------------------------

/// What a receiving protocol saw.
#[derive(Debug)]
struct Received {
    /// The receiving transport.
    handle: Option<StreamHandle>,
    bytes: u64,
    sum: Fnv,
    eof: bool,
    lost: bool,
}

type Shared = Rc<RefCell<Received>>;

/// Checksums everything it receives; pauses reading at first if `stalled` (resumed by
/// the test).
struct Receiver {
    seen: Shared,
    stalled: bool,
}

impl Protocol for Receiver {
    fn connection_made(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        self.seen.borrow_mut().handle = Some(ctx.stream());
        if self.stalled {
            ctx.pause_reading(ctx.stream())?;
        }
        Ok(())
    }
    fn data_received(&mut self, _: &mut Ctx<'_>, data: &[u8]) -> CallbackResult {
        let mut s = self.seen.borrow_mut();
        s.bytes += data.len() as u64;
        s.sum.update(data);
        Ok(())
    }
    fn eof_received(&mut self, _: &mut Ctx<'_>) -> CallbackResult<bool> {
        self.seen.borrow_mut().eof = true;
        Ok(false)
    }
    fn connection_lost(
        &mut self,
        _: &mut Ctx<'_>,
        _: Option<aioport::ConnectionError>,
    ) -> CallbackResult {
        self.seen.borrow_mut().lost = true;
        Ok(())
    }
}

struct Quiet;
impl Protocol for Quiet {}

fn received() -> Shared {
    Rc::new(RefCell::new(Received {
        handle: None,
        bytes: 0,
        sum: Fnv::new(),
        eof: false,
        lost: false,
    }))
}

/// A TCP server on 127.0.0.1 whose connections checksum what they receive; the list
/// gets one entry per accepted connection, with its handle.
fn tcp_receiver(lp: &mut Loop, stalled: bool) -> (Endpoint, Rc<RefCell<Vec<Shared>>>) {
    let all = Rc::new(RefCell::new(Vec::new()));
    let list = all.clone();
    let server = lp
        .create_server(
            "127.0.0.1:0",
            move || {
                let seen = received();
                list.borrow_mut().push(seen.clone());
                Box::new(Receiver { seen, stalled })
            },
            ServerOptions::default(),
        )
        .unwrap();
    (Endpoint::Addr(server.addr()), all)
}

/// Half-closes `h` and runs until the receiver saw the EOF.
fn finish(lp: &mut Loop, h: StreamHandle, seen: &Shared) {
    lp.with(|ctx| ctx.write_eof(h)).unwrap();
    let s = seen.clone();
    lp.run_until_timeout(move || s.borrow().eof, LIMIT).unwrap();
}

fn connect_tcp(lp: &mut Loop, stalled: bool) -> (StreamHandle, Shared) {
    let (endpoint, all) = tcp_receiver(lp, stalled);
    let h = lp.create_connection(endpoint, Box::new(Quiet)).unwrap();
    let a = all.clone();
    lp.run_until_timeout(move || !a.borrow().is_empty(), LIMIT).unwrap();
    let seen = all.borrow()[0].clone();
    (h, seen)
}

// ---------------------------------------------------------------------------------------
// Zero-copy
// ---------------------------------------------------------------------------------------

#[test]
fn zero_copy_64_mib_over_tcp_is_byte_exact() {
    const LEN: u64 = 64 << 20;
    let tmp = TempFile::new("tcp", LEN);
    let mut lp = Loop::new().unwrap();
    let (h, seen) = connect_tcp(&mut lp, false);
    // fallback = false: zero-copy or an error, so this is sendfile(2) at work.
    let sent = lp.sendfile(h, &tmp.file, 0, None, false).unwrap();
    assert_eq!(sent, LEN);
    assert_eq!(tmp.file.try_clone().unwrap().stream_position().unwrap(), LEN);
    finish(&mut lp, h, &seen);
    let s = seen.borrow();
    assert_eq!(s.bytes, LEN);
    assert_eq!(s.sum, checksum_of((0..LEN).map(pattern)));
}

#[test]
fn zero_copy_over_a_unix_socket_after_queued_bytes() {
    const LEN: u64 = 8 << 20;
    let tmp = TempFile::new("unix", LEN);
    let dir = std::env::temp_dir().join(format!("aioport-sendfile-sock-{}", std::process::id()));
    let _ = std::fs::remove_file(&dir);
    let mut lp = Loop::new().unwrap();
    let all = Rc::new(RefCell::new(Vec::new()));
    let list = all.clone();
    let server = lp
        .create_unix_server(
            dir.as_path(),
            move || {
                let seen = received();
                list.borrow_mut().push(seen.clone());
                Box::new(Receiver { seen, stalled: false })
            },
            ServerOptions::default(),
        )
        .unwrap();
    let h = lp.create_unix_connection(dir.as_path(), Box::new(Quiet)).unwrap();
    let a = all.clone();
    lp.run_until_timeout(move || !a.borrow().is_empty(), LIMIT).unwrap();
    let seen = all.borrow()[0].clone();
    // A header written first goes out first (asyncio flushes before the native send).
    let header: Vec<u8> = (0..1000u64).map(|i| pattern(i + 7)).collect();
    lp.with(|ctx| ctx.write_slice(h, &header)).unwrap();
    let sent = lp.sendfile(h, &tmp.file, 1000, Some(LEN), false).unwrap();
    assert_eq!(sent, LEN - 1000, "a count beyond the end stops at the end");
    finish(&mut lp, h, &seen);
    let want = (0..1000u64).map(|i| pattern(i + 7)).chain((1000..LEN).map(pattern));
    assert_eq!(seen.borrow().sum, checksum_of(want));
    assert_eq!(seen.borrow().bytes, LEN);
    server.close(&mut lp);
}

#[test]
fn offsets_counts_and_the_file_position() {
    // asyncio: count 0 is a ValueError; the position moves to offset + sent only when
    // something was sent.
    let tmp = TempFile::new("edges", 1000);
    let mut lp = Loop::new().unwrap();
    let (h, seen) = connect_tcp(&mut lp, false);
    let pos = |f: &File| f.try_clone().unwrap().stream_position().unwrap();
    for fallback in [SendfileFallback::Allow, SendfileFallback::Force] {
        match lp.sendfile(h, &tmp.file, 0, Some(0), fallback) {
            Err(Error::Sendfile(SendfileError::ZeroCount)) => {}
            other => panic!("count 0: {other:?}"),
        }
        assert_eq!(lp.sendfile(h, &tmp.file, 5000, None, fallback).unwrap(), 0);
        assert_eq!(pos(&tmp.file), 0, "nothing sent: position unchanged");
        assert_eq!(lp.sendfile(h, &tmp.file, 1000, Some(3), fallback).unwrap(), 0);
        assert_eq!(lp.sendfile(h, &tmp.file, 990, Some(100), fallback).unwrap(), 10);
        assert_eq!(pos(&tmp.file), 1000);
        assert_eq!(lp.sendfile(h, &tmp.file, 10, Some(20), fallback).unwrap(), 20);
        assert_eq!(pos(&tmp.file), 30);
        assert_eq!(lp.sendfile(h, &tmp.file, 500, None, fallback).unwrap(), 500);
        assert_eq!(pos(&tmp.file), 1000);
        tmp.file.try_clone().unwrap().rewind().unwrap();
    }
    finish(&mut lp, h, &seen);
    let one = (990..1000).chain(10..30).chain(500..1000);
    let want = checksum_of(one.clone().chain(one).map(pattern));
    assert_eq!(seen.borrow().bytes, 2 * 530);
    assert_eq!(seen.borrow().sum, want);
}

// ---------------------------------------------------------------------------------------
// The fallback
// ---------------------------------------------------------------------------------------

#[test]
fn forced_fallback_over_tcp_is_byte_exact() {
    const LEN: u64 = 16 << 20;
    let tmp = TempFile::new("fallback", LEN);
    let mut lp = Loop::new().unwrap();
    let (h, seen) = connect_tcp(&mut lp, false);
    assert_eq!(lp.sendfile(h, &tmp.file, 3, None, SendfileFallback::Force).unwrap(), LEN - 3);
    finish(&mut lp, h, &seen);
    assert_eq!(seen.borrow().sum, checksum_of((3..LEN).map(pattern)));
}

/// Starts a forced-fallback sendfile from a callback, then samples its transport's
/// buffer and tries to write while the sendfile runs.
#[derive(Default)]
struct Sampler {
    max_buffer: usize,
    samples: usize,
    paused_samples: usize,
    write_error: Option<WriteError>,
    eof_error: Option<aioport::HandleError>,
    stop: bool,
}

#[test]
fn a_peer_that_stops_reading_pauses_the_fallback_within_one_chunk() {
    const LEN: u64 = 64 << 20;
    // Samples taken while the transport was paused, before the peer reads again.
    const PAUSED_SAMPLES: usize = 50;
    let tmp = TempFile::new("stall", LEN);
    let mut lp = Loop::new().unwrap();
    let (h, seen) = connect_tcp(&mut lp, true);
    let high = 64 * 1024;
    let state = Rc::new(RefCell::new(Sampler::default()));
    let source = Box::new(FileSource::new(tmp.file.try_clone().unwrap()));
    lp.with(|ctx| ctx.sendfile(h, source, 0, None, SendfileFallback::Force)).unwrap();

    // A timer samples the buffer every millisecond while the peer reads nothing.
    fn sample(ctx: &mut Ctx<'_>, h: StreamHandle, st: Rc<RefCell<Sampler>>) {
        {
            let mut s = st.borrow_mut();
            let size = ctx.write_buffer_size(h).unwrap();
            s.max_buffer = s.max_buffer.max(size);
            s.samples += 1;
            if ctx.is_writing_paused(h).unwrap() {
                s.paused_samples += 1;
            }
            if s.write_error.is_none() {
                s.write_error = ctx.write_slice(h, b"x").err();
                s.eof_error = ctx.write_eof(h).err();
            }
            if s.stop {
                return;
            }
        }
        let _ = ctx.call_later(Duration::from_millis(1), move |ctx| sample(ctx, h, st));
    }
    let st = state.clone();
    lp.call_soon(move |ctx| sample(ctx, h, st));
    // Until the transport was seen paused many times (bounded by LIMIT).
    let st = state.clone();
    lp.run_until_timeout(move || st.borrow().paused_samples >= PAUSED_SAMPLES, LIMIT).unwrap();
    {
        let mut s = state.borrow_mut();
        s.stop = true;
        assert!(s.max_buffer <= high + SENDFILE_CHUNK, "buffer grew to {}", s.max_buffer);
        assert!(s.max_buffer > high, "paused without crossing high water?");
        assert_eq!(s.write_error, Some(WriteError::SendfileInProgress));
        assert_eq!(s.eof_error, Some(aioport::HandleError::SendfileInProgress));
        assert_eq!(seen.borrow().bytes, 0);
    }
    // The peer reads again: everything arrives, and the sendfile ends (its outcome goes
    // to the driver: it was started outside a callback); write_eof is accepted again.
    let server_side = seen.borrow().handle.unwrap();
    lp.with(|ctx| ctx.resume_reading(server_side)).unwrap();
    let s2 = seen.clone();
    lp.run_until_timeout(move || s2.borrow().bytes >= LEN, LIMIT).unwrap();
    finish(&mut lp, h, &seen);
    assert_eq!(seen.borrow().sum, checksum_of((0..LEN).map(pattern)));
}

/// Sends a file from `connection_made` and records `sendfile_completed`.
struct CallbackSender {
    file: Option<File>,
    outcome: Rc<RefCell<Option<Result<u64, SendfileError>>>>,
}

impl Protocol for CallbackSender {
    fn connection_made(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        let file = Box::new(FileSource::new(self.file.take().unwrap()));
        ctx.sendfile(ctx.stream(), file, 0, None, SendfileFallback::Allow)?;
        Ok(())
    }
    fn sendfile_completed(
        &mut self,
        ctx: &mut Ctx<'_>,
        h: StreamHandle,
        outcome: Result<u64, SendfileError>,
    ) -> CallbackResult {
        assert_eq!(h, ctx.stream());
        *self.outcome.borrow_mut() = Some(outcome);
        ctx.write_eof(h)?;
        Ok(())
    }
}

#[test]
fn a_protocol_sends_a_file_from_a_callback() {
    const LEN: u64 = 4 << 20;
    let tmp = TempFile::new("callback", LEN);
    let mut lp = Loop::new().unwrap();
    let (endpoint, all) = tcp_receiver(&mut lp, false);
    let outcome = Rc::new(RefCell::new(None));
    let proto =
        CallbackSender { file: Some(tmp.file.try_clone().unwrap()), outcome: outcome.clone() };
    lp.create_connection(endpoint, Box::new(proto)).unwrap();
    let a = all.clone();
    lp.run_until_timeout(move || a.borrow().first().is_some_and(|s| s.borrow().eof), LIMIT)
        .unwrap();
    assert_eq!(*outcome.borrow(), Some(Ok(LEN)));
    let seen = all.borrow()[0].clone();
    assert_eq!(seen.borrow().sum, checksum_of((0..LEN).map(pattern)));
    // Ctx::sendfile leaves the file position alone (positional reads).
    assert_eq!(tmp.file.try_clone().unwrap().stream_position().unwrap(), 0);
}

#[test]
fn close_during_a_sendfile_is_an_error_for_the_caller() {
    let tmp = TempFile::new("close", 32 << 20);
    let mut lp = Loop::new().unwrap();
    let (h, _seen) = connect_tcp(&mut lp, true);
    // The peer reads nothing: the send stalls, then a timer closes the transport.
    let _ = lp.call_later(Duration::from_millis(50), move |ctx| {
        let _ = ctx.close(h);
    });
    match lp.sendfile(h, &tmp.file, 0, None, true) {
        Err(Error::Sendfile(SendfileError::Closed { sent })) => {
            assert!(sent > 0 && sent < 32 << 20, "sent {sent}");
            let pos = tmp.file.try_clone().unwrap().stream_position().unwrap();
            assert_eq!(pos, sent, "the position follows what was sent");
        }
        other => panic!("expected Closed, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------
// Pipes
// ---------------------------------------------------------------------------------------

#[test]
fn pipes_use_the_fallback_and_refuse_zero_copy_only() {
    const LEN: u64 = 2 << 20;
    let tmp = TempFile::new("pipe", LEN);
    let mut lp = Loop::new().unwrap();
    let (w, r) = std::os::unix::net::UnixStream::pair().unwrap();
    let seen = received();
    lp.connect_read_pipe(r.into(), Box::new(Receiver { seen: seen.clone(), stalled: false }))
        .unwrap();
    let wh = lp.connect_write_pipe(w.into(), Box::new(Quiet)).unwrap();
    match lp.sendfile(wh, &tmp.file, 0, None, false) {
        Err(Error::Sendfile(SendfileError::NotAvailable)) => {}
        other => panic!("fallback=false on a pipe: {other:?}"),
    }
    assert_eq!(lp.sendfile(wh, &tmp.file, 0, None, true).unwrap(), LEN);
    lp.with(|ctx| ctx.write_eof(wh)).unwrap();
    let s = seen.clone();
    lp.run_until_timeout(move || s.borrow().eof || s.borrow().lost, LIMIT).unwrap();
    assert_eq!(seen.borrow().bytes, LEN);
    assert_eq!(seen.borrow().sum, checksum_of((0..LEN).map(pattern)));
}

// ---------------------------------------------------------------------------------------
// TLS
// ---------------------------------------------------------------------------------------

#[cfg(feature = "tls")]
mod tls {
    use std::sync::Arc;

    use aioport::tls::rustls::crypto::ring;
    use aioport::tls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
    use aioport::tls::rustls::{ClientConfig, RootCertStore, ServerConfig};
    use aioport::tls::{TlsClient, TlsServer, TlsSession};

    use super::*;

    /// A server and a client config for "localhost", signed by a fresh CA.
    fn configs() -> (TlsServer, TlsClient) {
        let ca_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        let leaf = params.signed_by(&key, &ca).unwrap();
        let server = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![leaf.der().clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )
            .unwrap();
        let mut roots = RootCertStore::empty();
        roots.add(ca.der().clone()).unwrap();
        let client = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        (TlsServer::new(Arc::new(server)), TlsClient::new(Arc::new(client), "localhost").unwrap())
    }

    #[test]
    fn the_fallback_over_tls_is_byte_exact() {
        const LEN: u64 = 16 << 20;
        let tmp = TempFile::new("tls", LEN);
        let mut lp = Loop::new().unwrap();
        let (server_tls, client_tls) = configs();
        let all = Rc::new(RefCell::new(Vec::new()));
        let list = all.clone();
        let server = lp
            .create_tls_server(
                "127.0.0.1:0",
                server_tls,
                move |_: &TlsSession| {
                    let seen = received();
                    list.borrow_mut().push(seen.clone());
                    Box::new(Receiver { seen, stalled: false })
                },
                ServerOptions::default(),
            )
            .unwrap();
        let (app, _session) = lp
            .create_tls_connection(Endpoint::Addr(server.addr()), &client_tls, Box::new(Quiet))
            .unwrap();
        // No zero-copy through TLS: fallback = false is asyncio's SendfileNotAvailableError.
        match lp.sendfile(app, &tmp.file, 0, None, false) {
            Err(Error::Sendfile(SendfileError::NotAvailable)) => {}
            other => panic!("fallback=false over TLS: {other:?}"),
        }
        let sent = lp.sendfile(app, &tmp.file, 11, None, true).unwrap();
        assert_eq!(sent, LEN - 11);
        assert_eq!(tmp.file.try_clone().unwrap().stream_position().unwrap(), LEN);
        let a = all.clone();
        lp.run_until_timeout(move || !a.borrow().is_empty(), LIMIT).unwrap();
        let seen = all.borrow()[0].clone();
        finish(&mut lp, app, &seen);
        assert_eq!(seen.borrow().bytes, LEN - 11);
        assert_eq!(seen.borrow().sum, checksum_of((11..LEN).map(pattern)));
    }
}
