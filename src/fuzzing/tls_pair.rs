//! `tls_pair`: [`pair`](super::pair) with a TLS engine under each side — two pattern
//! streams through a client and a server engine (rustls, ring, TLS 1.3 or 1.2 by the
//! input) over the harness's faulty links, with the same schedule of faults acting on the
//! app transports. The harness checks its invariants after every step; at the end,
//! without a fault, both handshakes completed and every byte written was delivered; with
//! one, what arrived is a prefix of what was written; each app transport that was made
//! saw exactly one `connection_lost`.
//!
//! The certificate is a fixed self-signed Ed25519 end-entity one for `localhost` (valid
//! 2026–2126),
//! checked against a virtual time inside its validity, so every run is the same apart
//! from rustls' own randomness.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rustls::crypto::{CryptoProvider, ring};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use super::decode::{Input, millis};
use super::pair::{PAIR_OPS, Peer, check_delivery, run_checked, sim_config, steps, transfer};
use crate::StreamHandle;
use crate::testing::{Event, Sim};
use crate::tls::{TlsClient, TlsOptions, TlsServer, TlsSession, VirtualTime};

/// The DER of the fixed test certificate (`CN=localhost`, Ed25519, self-signed).
const CERT: &[u8] = &[
    0x30, 0x82, 0x01, 0x79, 0x30, 0x82, 0x01, 0x2b, 0xa0, 0x03, 0x02, 0x01, 0x02, 0x02, 0x14, 0x17,
    0x0a, 0x04, 0x91, 0xdc, 0x77, 0x65, 0xd4, 0x22, 0x1a, 0x22, 0x7f, 0x07, 0xf5, 0xf9, 0x52, 0x2e,
    0x38, 0x96, 0xf3, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x30, 0x14, 0x31, 0x12, 0x30, 0x10,
    0x06, 0x03, 0x55, 0x04, 0x03, 0x0c, 0x09, 0x6c, 0x6f, 0x63, 0x61, 0x6c, 0x68, 0x6f, 0x73, 0x74,
    0x30, 0x20, 0x17, 0x0d, 0x32, 0x36, 0x31, 0x31, 0x32, 0x36, 0x30, 0x32, 0x31, 0x39, 0x31, 0x31,
    0x5a, 0x18, 0x0f, 0x32, 0x31, 0x32, 0x36, 0x31, 0x31, 0x30, 0x32, 0x30, 0x32, 0x31, 0x39, 0x31,
    0x31, 0x5a, 0x30, 0x14, 0x31, 0x12, 0x30, 0x10, 0x06, 0x03, 0x55, 0x04, 0x03, 0x0c, 0x09, 0x6c,
    0x6f, 0x63, 0x61, 0x6c, 0x68, 0x6f, 0x73, 0x74, 0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65,
    0x70, 0x03, 0x21, 0x00, 0x8b, 0xe6, 0xe9, 0xc4, 0xfd, 0x14, 0xe1, 0x9a, 0x63, 0x93, 0x4c, 0xa9,
    0x57, 0x8d, 0x81, 0x90, 0xaf, 0x38, 0x35, 0xba, 0x4b, 0x80, 0x74, 0x94, 0x1f, 0xf5, 0xc6, 0x0a,
    0x44, 0x97, 0x05, 0x22, 0xa3, 0x81, 0x8c, 0x30, 0x81, 0x89, 0x30, 0x1d, 0x06, 0x03, 0x55, 0x1d,
    0x0e, 0x04, 0x16, 0x04, 0x14, 0xb5, 0xd0, 0x80, 0xcb, 0x1f, 0x74, 0x6c, 0x65, 0xe2, 0x26, 0xb8,
    0xd0, 0x6b, 0x61, 0x5d, 0x98, 0xc3, 0x00, 0xce, 0x89, 0x30, 0x1f, 0x06, 0x03, 0x55, 0x1d, 0x23,
    0x04, 0x18, 0x30, 0x16, 0x80, 0x14, 0xb5, 0xd0, 0x80, 0xcb, 0x1f, 0x74, 0x6c, 0x65, 0xe2, 0x26,
    0xb8, 0xd0, 0x6b, 0x61, 0x5d, 0x98, 0xc3, 0x00, 0xce, 0x89, 0x30, 0x14, 0x06, 0x03, 0x55, 0x1d,
    0x11, 0x04, 0x0d, 0x30, 0x0b, 0x82, 0x09, 0x6c, 0x6f, 0x63, 0x61, 0x6c, 0x68, 0x6f, 0x73, 0x74,
    0x30, 0x0c, 0x06, 0x03, 0x55, 0x1d, 0x13, 0x01, 0x01, 0xff, 0x04, 0x02, 0x30, 0x00, 0x30, 0x0e,
    0x06, 0x03, 0x55, 0x1d, 0x0f, 0x01, 0x01, 0xff, 0x04, 0x04, 0x03, 0x02, 0x07, 0x80, 0x30, 0x13,
    0x06, 0x03, 0x55, 0x1d, 0x25, 0x04, 0x0c, 0x30, 0x0a, 0x06, 0x08, 0x2b, 0x06, 0x01, 0x05, 0x05,
    0x07, 0x03, 0x01, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x41, 0x00, 0xde, 0x93, 0xbf,
    0x86, 0xcc, 0xba, 0xc8, 0x16, 0x73, 0x11, 0x1f, 0xdf, 0xa2, 0xa4, 0x51, 0x34, 0xa3, 0x60, 0xe9,
    0x8b, 0xdf, 0x13, 0xb1, 0x02, 0xb6, 0xec, 0x4d, 0x38, 0x35, 0x32, 0x11, 0x87, 0xf7, 0x1e, 0xcc,
    0x03, 0x78, 0x3b, 0x3a, 0x07, 0x89, 0x09, 0x74, 0x8a, 0x62, 0xed, 0x33, 0xd9, 0x4d, 0xe9, 0x63,
    0x64, 0xa7, 0x07, 0x06, 0x06, 0x51, 0xee, 0xae, 0xb7, 0xaa, 0x74, 0x6b, 0x02,
];

/// Its PKCS#8 private key.
const KEY: &[u8] = &[
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
    0x92, 0xe5, 0x66, 0x08, 0x1d, 0x73, 0xf6, 0xe5, 0x90, 0xc4, 0x57, 0xf8, 0x78, 0x51, 0x21, 0x96,
    0x78, 0xc3, 0x0b, 0x4e, 0x4c, 0x4b, 0xb7, 0x1e, 0xb6, 0xc3, 0x6c, 0x6e, 0x2b, 0xd3, 0x96, 0x86,
];

/// 2027-01-15, inside the certificate's validity.
const NOW_UNIX: u64 = 1_800_000_000;

/// Client and server configurations for TLS 1.3 (`[0]`) and TLS 1.2 (`[1]`), built once.
pub(super) fn configs() -> &'static [(TlsClient, TlsServer); 2] {
    static CONFIGS: OnceLock<[(TlsClient, TlsServer); 2]> = OnceLock::new();
    CONFIGS.get_or_init(|| {
        let build = |version: &'static rustls::SupportedProtocolVersion| {
            let provider = Arc::new(CryptoProvider {
                kx_groups: vec![ring::kx_group::X25519],
                ..ring::default_provider()
            });
            let time = Arc::new(VirtualTime::from_unix_secs(NOW_UNIX));
            let cert = CertificateDer::from(CERT.to_vec());
            let mut roots = RootCertStore::empty();
            roots.add(cert.clone()).expect("the fixed certificate is a valid root");
            let client = ClientConfig::builder_with_details(provider.clone(), time.clone())
                .with_protocol_versions(&[version])
                .expect("a protocol version ring supports")
                .with_root_certificates(roots)
                .with_no_client_auth();
            let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(KEY.to_vec()));
            let server = ServerConfig::builder_with_details(provider, time)
                .with_protocol_versions(&[version])
                .expect("a protocol version ring supports")
                .with_no_client_auth()
                .with_single_cert(vec![cert], key)
                .expect("the fixed key matches the certificate");
            // No timeouts: a link with half a minute of latency and a 64-byte buffer takes
            // hours of virtual time to move 64 KB, so any timeout could fire legitimately.
            // Without them, a handshake or shutdown that does not finish is a bug. (The
            // timeouts themselves are tested in virtual time in `tests/tls.rs`.)
            let options =
                TlsOptions::default().with_handshake_timeout(None).with_shutdown_timeout(None);
            let client = TlsClient::new(Arc::new(client), "localhost").expect("a DNS name");
            (client.with_options(options), TlsServer::new(Arc::new(server)).with_options(options))
        };
        [build(&rustls::version::TLS13), build(&rustls::version::TLS12)]
    })
}

/// Fuzz target: [`pair`](super::pair) with a TLS client and server engine under the two
/// sides (the `tls_pair` row of the [fuzzing docs](super)). After the version byte: the
/// [`sim_config`] header, two transfer sizes, the write size (as `pair`), then one byte
/// whose bit 0 picks TLS 1.2; then [`PAIR_OPS`], with `abort`, `close`, `pause_reading`,
/// `resume_reading`, `write_eof` and `set_write_buffer_limits` acting on a side's app
/// transport (skipped before its handshake completed), and `reset` and `stall` on its raw
/// transport.
pub fn tls_pair(data: &[u8]) {
    let Some(mut input) = Input::new(data) else { return };
    let config = sim_config(&mut input);
    let (total_a, total_b) = (transfer(input.u16()), transfer(input.u16()));
    let chunk = 16 + usize::from(input.byte()) * 64;
    let (client, server) = &configs()[usize::from(input.byte() & 1)];
    let mut sim = Sim::with_config(super::base_instant(), config);
    let sides = [
        (total_a, Rc::new(Cell::new(0)), Rc::new(Cell::new(0u64))),
        (total_b, Rc::default(), Rc::default()),
    ];
    let peer = |i: usize| {
        Peer::new((sides[i].0, sides[1 - i].0), chunk, sides[i].1.clone(), sides[i].2.clone())
    };
    let (pa, pb) = (peer(0), peer(1));
    let a = client.engine_with(move |_| Box::new(pa)).expect("a client engine");
    let b = server.engine_with(move |_| Box::new(pb)).expect("a server engine");
    let sessions: [TlsSession; 2] = [a.session(), b.session()];
    let (raw_a, raw_b) = sim.pair(a, b);
    let raw = |s: u8| if s & 1 == 0 { raw_a } else { raw_b };
    let app = |s: u8| sessions[usize::from(s & 1)].app();
    let mut faulted = false;
    let mut paused_reading = [false; 2];
    while let Some(op) = input.next_op(PAIR_OPS) {
        let s = op.byte(0);
        match op.code {
            0x00 => steps(&mut sim, 1),
            0x01 => run_checked(&mut sim, "tls_pair"),
            0x40 => steps(&mut sim, s),
            0x41 => sim.advance(Duration::from_millis(millis(s))),
            0x44 => {
                faulted = true;
                sim.reset(raw(s));
            }
            0x80 => sim.stall(raw(s), Duration::from_millis(millis(op.byte(1)))),
            code => {
                let Some(h) = app(s) else { continue };
                match code {
                    0x42 => {
                        faulted = true;
                        let _ = sim.enter(|ctx| ctx.abort(h));
                    }
                    0x43 => {
                        faulted = true;
                        let _ = sim.enter(|ctx| ctx.close(h));
                    }
                    0x45 | 0x46 => {
                        let pause = code == 0x45;
                        paused_reading[usize::from(s & 1)] = pause;
                        let _ = sim.enter(|ctx| {
                            if pause { ctx.pause_reading(h) } else { ctx.resume_reading(h) }
                        });
                    }
                    0x47 => {
                        faulted = true;
                        let _ = sim.enter(|ctx| ctx.write_eof(h));
                    }
                    0x81 => {
                        let high = usize::from(op.byte(1)) * 64;
                        let _ = sim.enter(|ctx| ctx.set_write_buffer_limits(h, Some(high), None));
                    }
                    _ => {}
                }
            }
        }
    }
    // Undo what would leave bytes undelivered without a fault: read pauses and stalls.
    for (i, paused) in paused_reading.into_iter().enumerate() {
        if let (true, Some(h)) = (paused, sessions[i].app()) {
            let _ = sim.enter(|ctx| ctx.resume_reading(h));
        }
    }
    // Finish what is in flight (handshakes included) before letting an hour pass: the
    // jump ends stalls, and fires the timeouts of whatever is stuck.
    run_checked(&mut sim, "tls_pair");
    sim.advance(Duration::from_secs(3600));
    run_checked(&mut sim, "tls_pair");
    if faulted {
        // As in `pair`: both sides closing towards a peer that stopped reading wait
        // forever; the application gives up with abort().
        for s in &sessions {
            if let Some(h) = s.app().filter(|h| sim.registry().transport(h.handle()).is_ok()) {
                let _ = sim.enter(|ctx| ctx.abort(h));
            }
        }
        for h in [raw_a, raw_b] {
            if sim.registry().transport(h.handle()).is_ok() {
                let _ = sim.enter(|ctx| ctx.abort(h));
            }
        }
        run_checked(&mut sim, "tls_pair");
    }
    let apps: Vec<Option<StreamHandle>> = sessions.iter().map(TlsSession::app).collect();
    if !faulted {
        for (i, s) in sessions.iter().enumerate() {
            assert!(
                s.app().is_some(),
                "tls_pair: side {i}'s handshake did not complete without a fault: {:?}",
                s.error()
            );
        }
    }
    check_delivery(&sides, faulted, "tls_pair");
    for (i, h) in apps.into_iter().enumerate() {
        let Some(h) = h else { continue };
        let lost = sim.transcript(h).iter().filter(|e| matches!(e, Event::Lost(_))).count();
        assert_eq!(lost, 1, "tls_pair: side {i}'s app received connection_lost {lost} times");
    }
    assert!(sim.registry().is_empty(), "tls_pair: {} transports left", sim.registry().len());
}
