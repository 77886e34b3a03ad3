//! TLS stream benchmark: echo throughput on the poll loop over TLS against the same echo
//! over plain TCP, in the same run.
//!
//! ```text
//! cargo run --release --example bench_tls --features tls             # 7 rounds of 256 MiB
//! cargo run --release --example bench_tls --features tls -- --quick  # 3 rounds of 16 MiB
//! ```
//!
//! # What is measured
//!
//! One `Loop` on one thread holds both ends on 127.0.0.1: an echo server (pausing its
//! reading while its writes are paused) and a client that pushes the bytes with flow
//! control and counts the echo. A round times one connection each way — plain TCP
//! (`create_server` / `create_connection`) and TLS 1.3 (`create_tls_server` /
//! `create_tls_connection`, AES-256-GCM with ring, an Ed25519 certificate) — back to
//! back, in an order that alternates from round to round. The timing includes the
//! connect and, for TLS, the handshake (about a millisecond on loopback, against hundreds
//! for the transfer). Throughput is payload bytes per second in one direction; over TLS every byte
//! is encrypted and decrypted twice on this one thread (there and back), which is what
//! the ratio (TLS / plain) shows.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aioport::tls::rustls::crypto::ring;
use aioport::tls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use aioport::tls::rustls::{ClientConfig, RootCertStore, ServerConfig};
use aioport::tls::{TlsClient, TlsServer};
use aioport::{CallbackResult, Ctx, Endpoint, Protocol, StreamHandle};
use aioport_poll::{Loop, ServerOptions};

static CHUNK: [u8; 64 * 1024] = [0x5a; 64 * 1024];

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

/// Pushes `total` bytes with flow control from `connection_made`, counts the echo, closes.
struct Pusher {
    total: usize,
    sent: usize,
    echoed: Rc<Cell<usize>>,
}

impl Pusher {
    fn push(&mut self, ctx: &mut Ctx<'_>, h: StreamHandle) -> CallbackResult {
        while self.sent < self.total && !ctx.is_writing_paused(h)? {
            let n = CHUNK.len().min(self.total - self.sent);
            ctx.write(h, &CHUNK[..n])?;
            self.sent += n;
        }
        Ok(())
    }
}

impl Protocol for Pusher {
    fn connection_made(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        self.push(ctx, ctx.stream())
    }
    fn resume_writing(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        self.push(ctx, ctx.stream())
    }
    fn data_received(&mut self, ctx: &mut Ctx<'_>, data: &[u8]) -> CallbackResult {
        self.echoed.set(self.echoed.get() + data.len());
        if self.echoed.get() == self.total {
            ctx.close(ctx.stream())?;
        }
        Ok(())
    }
}

struct Setup {
    lp: Loop,
    plain: Endpoint,
    tls: Endpoint,
    client: TlsClient,
}

fn setup() -> Setup {
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

    let mut lp = Loop::new().expect("loop");
    let opts = ServerOptions::default();
    let plain = lp.create_server("127.0.0.1:0", || Box::new(Echo), opts).expect("listen");
    let tls = lp
        .create_tls_server(
            "127.0.0.1:0",
            TlsServer::new(Arc::new(server)),
            |_| Box::new(Echo),
            opts,
        )
        .expect("listen");
    let client = TlsClient::new(Arc::new(client), "localhost").expect("name");
    Setup { lp, plain: Endpoint::Addr(plain.addr()), tls: Endpoint::Addr(tls.addr()), client }
}

/// One connection pushing `total` bytes through the echo: payload MiB/s one way.
fn measure(s: &mut Setup, tls: bool, total: usize) -> f64 {
    let echoed = Rc::new(Cell::new(0));
    let pusher = Box::new(Pusher { total, sent: 0, echoed: echoed.clone() });
    let t0 = Instant::now();
    if tls {
        s.lp.create_tls_connection(s.tls.clone(), &s.client, pusher).expect("TLS connect");
    } else {
        s.lp.create_connection(s.plain.clone(), pusher).expect("connect");
    }
    s.lp.run_until_timeout(|| echoed.get() == total, Duration::from_secs(120)).expect("echoed");
    let secs = t0.elapsed().as_secs_f64();
    // Let both ends finish closing (TLS: close_notify both ways) before the next round.
    for _ in 0..1000 {
        if s.lp.is_empty() {
            break;
        }
        s.lp.run_once(Some(Duration::from_millis(10))).expect("run");
    }
    assert!(s.lp.is_empty(), "a connection did not close");
    total as f64 / (1024.0 * 1024.0) / secs
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let mut quick = false;
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--quick" => quick = true,
            other => {
                eprintln!("usage: bench_tls [--quick]   (unknown argument {other:?})");
                std::process::exit(2);
            }
        }
    }
    let (rounds, total) = if quick { (3, 16 << 20) } else { (7, 256 << 20) };
    if cfg!(debug_assertions) {
        eprintln!("warning: debug build; run with --release for meaningful numbers");
    }
    let mut s = setup();
    let (mut plain, mut tls, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        let (p, t) = if round % 2 == 0 {
            let p = measure(&mut s, false, total);
            (p, measure(&mut s, true, total))
        } else {
            let t = measure(&mut s, true, total);
            (measure(&mut s, false, total), t)
        };
        plain.push(p);
        tls.push(t);
        ratios.push(t / p);
    }
    println!(
        "bench_tls: {rounds} rounds of {} MiB echoed through one connection, both ends in one loop",
        total >> 20
    );
    println!("{:<22} {:>10}", "", "MiB/s");
    println!("{:<22} {:>10.0}", "plain TCP (median)", median(&mut plain));
    println!("{:<22} {:>10.0}", "TLS 1.3 (median)", median(&mut tls));
    let (lo, hi) = ratios.iter().fold((f64::MAX, 0f64), |(l, h), &r| (l.min(r), h.max(r)));
    println!("TLS / plain: median {:.2} (min {lo:.2}, max {hi:.2})", median(&mut ratios));
}
