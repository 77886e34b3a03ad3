//! A TLS echo client and server on the built-in poll loop (`aioport-poll`, feature
//! `tls`), over 127.0.0.1, with a certificate made at run time: the app protocols are
//! ordinary stream protocols; `create_tls_server` and `create_tls_connection` put the TLS
//! engine under them. Both ends run in one loop, on one thread.
//!
//! ```text
//! cargo run --example tls_echo --features tls
//! ```
//!
//! It prints what the handshake negotiated and every echoed line, checks the echo, and
//! exits 0.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use aioport::tls::rustls::crypto::ring;
use aioport::tls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use aioport::tls::rustls::{ClientConfig, RootCertStore, ServerConfig};
use aioport::tls::{TlsClient, TlsInfo, TlsServer, TlsSession};
use aioport::{CallbackResult, ConnectionError, Ctx, Endpoint, Protocol};
use aioport_poll::{Loop, ServerOptions};

const LINES: [&str; 3] = ["hello over TLS\n", "a second line\n", "and a third\n"];

fn describe(info: &TlsInfo) -> String {
    format!(
        "{:?}, {:?}, ALPN {:?}, SNI {:?}, {} peer certificate(s)",
        info.version,
        info.cipher_suite,
        info.alpn.as_deref().map(String::from_utf8_lossy),
        info.server_name,
        info.peer_certificates.len()
    )
}

/// Echoes every byte; closes when the client closes (its close_notify is our EOF).
struct EchoServer {
    session: TlsSession,
    lost: Rc<RefCell<bool>>,
}

impl Protocol for EchoServer {
    fn connection_made(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        let peer = ctx.extra(ctx.stream())?.peername;
        println!("server: connection_made from {peer:?}");
        println!("server: {}", describe(self.session.info().expect("handshake done")));
        Ok(())
    }
    fn data_received(&mut self, ctx: &mut Ctx<'_>, data: &[u8]) -> CallbackResult {
        ctx.write_slice(ctx.stream(), data)?;
        Ok(())
    }
    fn eof_received(&mut self, _ctx: &mut Ctx<'_>) -> CallbackResult<bool> {
        println!("server: eof_received (the client's close_notify) -> close");
        Ok(false)
    }
    fn connection_lost(&mut self, _: &mut Ctx<'_>, err: Option<ConnectionError>) -> CallbackResult {
        println!("server: connection_lost({err:?})");
        *self.lost.borrow_mut() = true;
        Ok(())
    }
}

/// Sends the lines, checks the echo, then closes (close_notify, the server's answer).
struct Client {
    echoed: Rc<RefCell<Vec<u8>>>,
    lost: Rc<RefCell<bool>>,
}

impl Protocol for Client {
    fn connection_made(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        println!("client: connection_made to {:?}", ctx.extra(ctx.stream())?.peername);
        for line in LINES {
            ctx.write(ctx.stream(), line.as_bytes())?;
        }
        Ok(())
    }
    fn data_received(&mut self, ctx: &mut Ctx<'_>, data: &[u8]) -> CallbackResult {
        print!("client: echoed {}", String::from_utf8_lossy(data));
        let mut echoed = self.echoed.borrow_mut();
        echoed.extend_from_slice(data);
        if echoed.len() == LINES.concat().len() {
            println!("client: all lines echoed -> close");
            ctx.close(ctx.stream())?;
        }
        Ok(())
    }
    fn connection_lost(&mut self, _: &mut Ctx<'_>, err: Option<ConnectionError>) -> CallbackResult {
        println!("client: connection_lost({err:?})");
        *self.lost.borrow_mut() = true;
        Ok(())
    }
}

/// A CA and a "localhost" certificate it signed (Ed25519), made now.
fn pki() -> (CertificateDer<'static>, CertificateDer<'static>, PrivatePkcs8KeyDer<'static>) {
    let ca_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("CA key");
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name.push(rcgen::DnType::CommonName, "tls_echo example CA");
    let ca = rcgen::CertifiedIssuer::self_signed(ca, ca_key).expect("CA certificate");
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("key");
    let params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).expect("params");
    let leaf = params.signed_by(&key, &ca).expect("certificate");
    (ca.der().clone(), leaf.der().clone(), PrivatePkcs8KeyDer::from(key.serialize_der()))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (ca, leaf, key) = pki();
    let provider = Arc::new(ring::default_provider());
    let mut roots = RootCertStore::empty();
    roots.add(ca)?;
    let mut client = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    client.alpn_protocols = vec![b"echo".to_vec()];
    let mut server = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(vec![leaf], PrivateKeyDer::Pkcs8(key))?;
    server.alpn_protocols = vec![b"echo".to_vec()];
    let (client, server) =
        (TlsClient::new(Arc::new(client), "localhost")?, TlsServer::new(Arc::new(server)));

    let mut lp = Loop::new()?;
    let server_lost = Rc::new(RefCell::new(false));
    let lost = server_lost.clone();
    let factory = move |session: &TlsSession| -> Box<dyn Protocol> {
        Box::new(EchoServer { session: session.clone(), lost: lost.clone() })
    };
    let srv = lp.create_tls_server("127.0.0.1:0", server, factory, ServerOptions::default())?;

    let echoed = Rc::new(RefCell::new(Vec::new()));
    let client_lost = Rc::new(RefCell::new(false));
    let app = Client { echoed: echoed.clone(), lost: client_lost.clone() };
    // Returns once the handshake completed (or fails with a typed TLS error).
    let (_, session) =
        lp.create_tls_connection(Endpoint::Addr(srv.addr()), &client, Box::new(app))?;
    println!("client: {}", describe(session.info().expect("handshake done")));
    lp.run_until_timeout(
        || *client_lost.borrow() && *server_lost.borrow() && all_echoed(&echoed),
        Duration::from_secs(10),
    )?;

    // The apps are done; the TLS shutdown (close_notify both ways) closes the raw sockets.
    for _ in 0..1000 {
        if lp.is_empty() {
            break;
        }
        lp.run_once(Some(Duration::from_millis(10)))?;
    }
    assert!(lp.is_empty(), "{} transports still open after the TLS shutdown", lp.len());
    assert_eq!(session.error(), None, "the connection failed");
    assert_eq!(*echoed.borrow(), LINES.concat().as_bytes(), "the echo differs");
    println!("ok: {} bytes echoed over TLS", echoed.borrow().len());
    Ok(())
}

fn all_echoed(echoed: &Rc<RefCell<Vec<u8>>>) -> bool {
    echoed.borrow().len() == LINES.concat().len()
}
