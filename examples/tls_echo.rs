//! A TLS echo client and server over real `TcpStream`s on 127.0.0.1, with a certificate
//! made at run time: the app protocols are ordinary stream protocols, the TLS engine is
//! the raw transport's protocol. Each side runs its own `Registry` in a thread with the
//! hand-written blocking loop of `examples/manual_loop.rs` (it moves onto the poll loop
//! once that loop accepts TLS configuration).
//!
//! ```text
//! cargo run --example tls_echo --features tls
//! ```
//!
//! It prints what the handshake negotiated and every echoed line, checks the echo, and
//! exits 0.

use std::cell::RefCell;
use std::io;
use std::net::{TcpListener, TcpStream};
use std::rc::Rc;
use std::sync::Arc;
use std::thread;

use aioport::tls::rustls::crypto::ring;
use aioport::tls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use aioport::tls::rustls::{ClientConfig, RootCertStore, ServerConfig};
use aioport::tls::{TlsClient, TlsInfo, TlsServer, TlsSession};
use aioport::{CallbackResult, ConnectionError, Ctx, Protocol};

#[path = "support/blocking.rs"]
mod blocking;

use blocking::run;

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
        Ok(())
    }
}

/// Sends the lines, checks the echo, then closes (close_notify, the server's answer).
struct Client {
    session: TlsSession,
    echoed: Rc<RefCell<Vec<u8>>>,
}

impl Protocol for Client {
    fn connection_made(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        println!("client: connection_made to {:?}", ctx.extra(ctx.stream())?.peername);
        println!("client: {}", describe(self.session.info().expect("handshake done")));
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

    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let server_thread = thread::spawn(move || -> io::Result<()> {
        let (stream, _) = listener.accept()?;
        let engine = server
            .engine_with(|session| Box::new(EchoServer { session: session.clone() }))
            .map_err(io::Error::other)?;
        run("server", stream, Box::new(engine))
    });

    let echoed = Rc::new(RefCell::new(Vec::new()));
    let e = echoed.clone();
    let engine = client
        .engine_with(move |session| Box::new(Client { session: session.clone(), echoed: e }))?;
    let session = engine.session();
    run("client", TcpStream::connect(addr)?, Box::new(engine))?;
    server_thread.join().expect("server thread")?;

    assert!(session.is_established(), "handshake failed: {:?}", session.error());
    assert_eq!(session.error(), None, "the connection failed");
    assert_eq!(*echoed.borrow(), LINES.concat().as_bytes(), "the echo differs");
    println!("ok: {} bytes echoed over TLS", echoed.borrow().len());
    Ok(())
}
