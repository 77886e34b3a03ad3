//! TLS echo benchmark: request/response round trips of 1 KiB and 64 KiB messages over TLS
//! 1.3, on the poll loop and on the tokio driver, against a plain tokio + rustls
//! (tokio-rustls) echo server and client, in the same run.
//!
//! ```text
//! cargo run --release --example bench_tls_echo --features tls             # 7 rounds
//! cargo run --release --example bench_tls_echo --features tls -- --quick  # CI smoke
//! ```
//!
//! # What is measured
//!
//! Each contestant runs both ends of one TLS 1.3 connection on one thread, on
//! 127.0.0.1 with `TCP_NODELAY`, with the same rustls configurations (ring,
//! AES-256-GCM, an Ed25519 certificate made at run time):
//!
//! * **poll**: an `aioport-poll` loop; an echo protocol under `create_tls_server`, a
//!   ping-pong protocol under `create_tls_connection`;
//! * **tokio**: the same two protocols on an `aioport-tokio` loop (current-thread
//!   runtime);
//! * **plain**: a tokio current-thread runtime with two tasks on tokio-rustls — an echo
//!   server (`read`, `write_all`, `flush`) and a client (`write_all`, `flush`,
//!   `read_exact`): what a hand-written tokio TLS service does.
//!
//! The client sends one message, waits for its whole echo, and repeats; the time covers
//! the round trips only (the connection and its handshake are made before). A round runs
//! the three contestants back to back, in an order that rotates from round to round; the
//! report gives medians of round trips per second and the ratios ours / plain, with their
//! spread over the rounds.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aioport::tls::rustls::crypto::ring;
use aioport::tls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use aioport::tls::rustls::{ClientConfig, RootCertStore, ServerConfig};
use aioport::tls::{TlsClient, TlsServer};
use aioport::{CallbackResult, Ctx, Endpoint, Protocol};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Echoes; stops reading while its own writes are paused.
struct Echo;

impl Protocol for Echo {
    fn data_received(&mut self, ctx: &mut Ctx<'_>, data: &[u8]) -> CallbackResult {
        Ok(ctx.write_slice(ctx.stream(), data)?)
    }
    fn pause_writing(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        Ok(ctx.pause_reading(ctx.stream())?)
    }
    fn resume_writing(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        Ok(ctx.resume_reading(ctx.stream())?)
    }
}

/// What a ping-pong client reports: round trips done, and when the measured ones began
/// and ended.
#[derive(Default)]
struct Progress {
    done: Cell<usize>,
    start: Cell<Option<Instant>>,
    end: Cell<Option<Instant>>,
}

/// Sends `message`, waits for its whole echo, `rounds` times (after one warm-up round
/// trip, so the handshake's tail is not timed), then closes.
struct PingPong {
    message: Rc<[u8]>,
    rounds: usize,
    got: usize,
    progress: Rc<Progress>,
}

impl Protocol for PingPong {
    fn connection_made(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        Ok(ctx.write_slice(ctx.stream(), &self.message)?)
    }
    fn data_received(&mut self, ctx: &mut Ctx<'_>, data: &[u8]) -> CallbackResult {
        self.got += data.len();
        if self.got < self.message.len() {
            return Ok(());
        }
        self.got = 0;
        let p = &self.progress;
        if p.start.get().is_none() {
            p.start.set(Some(Instant::now()));
        } else {
            p.done.set(p.done.get() + 1);
        }
        if p.done.get() == self.rounds {
            p.end.set(Some(Instant::now()));
            return Ok(ctx.close(ctx.stream())?);
        }
        Ok(ctx.write_slice(ctx.stream(), &self.message)?)
    }
}

struct Configs {
    client: Arc<ClientConfig>,
    server: Arc<ServerConfig>,
}

fn configs() -> Configs {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("key");
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .expect("params")
        .self_signed(&key)
        .expect("certificate");
    let cert = cert.der().clone();
    let key = PrivatePkcs8KeyDer::from(key.serialize_der());
    let provider = Arc::new(ring::default_provider());
    let mut roots = RootCertStore::empty();
    roots.add(cert.clone()).expect("root");
    let client = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let server = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(vec![cert], PrivateKeyDer::Pkcs8(key))
        .expect("server config");
    Configs { client: Arc::new(client), server: Arc::new(server) }
}

fn elapsed(p: &Progress) -> Duration {
    p.end.get().expect("finished") - p.start.get().expect("started")
}

const LIMIT: Duration = Duration::from_secs(300);

/// Round trips per second on the poll loop.
fn on_poll(c: &Configs, size: usize, rounds: usize) -> f64 {
    use aioport_poll::{Loop, ServerOptions};
    let mut lp = Loop::new().expect("loop");
    let server = TlsServer::new(c.server.clone());
    let srv = lp
        .create_tls_server("127.0.0.1:0", server, |_| Box::new(Echo), ServerOptions::default())
        .expect("listen");
    let progress = Rc::new(Progress::default());
    let client =
        PingPong { message: vec![0x5a; size].into(), rounds, got: 0, progress: progress.clone() };
    let tls = TlsClient::new(c.client.clone(), "localhost").expect("name");
    lp.create_tls_connection(Endpoint::Addr(srv.addr()), &tls, Box::new(client)).expect("connect");
    lp.run_until_timeout(|| progress.end.get().is_some(), LIMIT).expect("round trips");
    rounds as f64 / elapsed(&progress).as_secs_f64()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
}

/// Round trips per second on the tokio driver (current-thread runtime).
fn on_tokio(c: &Configs, size: usize, rounds: usize) -> f64 {
    use aioport_tokio::{Loop, ServerOptions};
    runtime().block_on(async {
        let mut lp = Loop::new();
        let server = TlsServer::new(c.server.clone());
        let srv = lp
            .create_tls_server("127.0.0.1:0", server, |_| Box::new(Echo), ServerOptions::default())
            .await
            .expect("listen");
        let progress = Rc::new(Progress::default());
        let client = PingPong {
            message: vec![0x5a; size].into(),
            rounds,
            got: 0,
            progress: progress.clone(),
        };
        let tls = TlsClient::new(c.client.clone(), "localhost").expect("name");
        lp.create_tls_connection(Endpoint::Addr(srv.addr()), &tls, Box::new(client))
            .await
            .expect("connect");
        lp.run_until_timeout(|| progress.end.get().is_some(), LIMIT).await.expect("round trips");
        rounds as f64 / elapsed(&progress).as_secs_f64()
    })
}

/// Round trips per second with tokio + tokio-rustls, both tasks on one thread.
fn plain(c: &Configs, size: usize, rounds: usize) -> f64 {
    let rt = runtime();
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("listen");
        let addr = listener.local_addr().expect("addr");
        let acceptor = tokio_rustls::TlsAcceptor::from(c.server.clone());
        let server = tokio::task::spawn_local(async move {
            let (sock, _) = listener.accept().await.expect("accept");
            sock.set_nodelay(true).expect("nodelay");
            let mut tls = acceptor.accept(sock).await.expect("handshake");
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = tls.read(&mut buf).await.expect("read");
                if n == 0 {
                    break;
                }
                tls.write_all(&buf[..n]).await.expect("write");
                tls.flush().await.expect("flush");
            }
            let _ = tls.shutdown().await;
        });
        let sock = tokio::net::TcpStream::connect(addr).await.expect("connect");
        sock.set_nodelay(true).expect("nodelay");
        let connector = tokio_rustls::TlsConnector::from(c.client.clone());
        let name = ServerName::try_from("localhost").expect("name");
        let mut tls = connector.connect(name, sock).await.expect("handshake");
        let message = vec![0x5a; size];
        let mut echo = vec![0u8; size];
        let mut start = None;
        for _ in 0..=rounds {
            tls.write_all(&message).await.expect("write");
            tls.flush().await.expect("flush");
            tls.read_exact(&mut echo).await.expect("read");
            // The first round trip is the warm-up, as in PingPong.
            start.get_or_insert_with(Instant::now);
        }
        let secs = start.expect("started").elapsed().as_secs_f64();
        tls.shutdown().await.expect("close_notify");
        server.await.expect("server task");
        rounds as f64 / secs
    })
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn spread(v: &[f64]) -> (f64, f64) {
    v.iter().fold((f64::MAX, 0f64), |(l, h), &r| (l.min(r), h.max(r)))
}

fn main() {
    let mut quick = false;
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--quick" => quick = true,
            other => {
                eprintln!("usage: bench_tls_echo [--quick]   (unknown argument {other:?})");
                std::process::exit(2);
            }
        }
    }
    if cfg!(debug_assertions) {
        eprintln!("warning: debug build; run with --release for meaningful numbers");
    }
    let rounds = if quick { 2 } else { 7 };
    // (message size, round trips per measurement)
    let sizes: [(usize, usize); 2] = if quick {
        [(1024, 2_000), (64 * 1024, 200)]
    } else {
        [(1024, 100_000), (64 * 1024, 10_000)]
    };
    let c = configs();
    println!(
        "bench_tls_echo: TLS 1.3 request/response echo, both ends on one thread, {rounds} rounds"
    );
    println!(
        "{:>8} {:>10} {:>12} {:>12} {:>12} {:>22} {:>22}",
        "message",
        "trips",
        "poll /s",
        "tokio /s",
        "plain /s",
        "poll/plain (min-max)",
        "tokio/plain (min-max)"
    );
    for (size, trips) in sizes {
        let (mut p, mut t, mut b) = (Vec::new(), Vec::new(), Vec::new());
        let (mut rp, mut rt) = (Vec::new(), Vec::new());
        for round in 0..rounds {
            let mut got = [0.0; 3];
            for k in 0..3 {
                let which = (round + k) % 3;
                got[which] = match which {
                    0 => on_poll(&c, size, trips),
                    1 => on_tokio(&c, size, trips),
                    _ => plain(&c, size, trips),
                };
            }
            p.push(got[0]);
            t.push(got[1]);
            b.push(got[2]);
            rp.push(got[0] / got[2]);
            rt.push(got[1] / got[2]);
        }
        let ((pl, ph), (tl, th)) = (spread(&rp), spread(&rt));
        println!(
            "{:>7}K {:>10} {:>12.0} {:>12.0} {:>12.0} {:>10.2} ({pl:.2}-{ph:.2}) {:>10.2} ({tl:.2}-{th:.2})",
            size / 1024,
            trips,
            median(&mut p),
            median(&mut t),
            median(&mut b),
            median(&mut rp),
            median(&mut rt),
        );
    }
}
