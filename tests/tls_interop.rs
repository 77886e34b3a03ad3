//! TLS interoperability on loopback with peers nobody here wrote (issue 15): OpenSSL's
//! `s_server` / `s_client` and Python's `ssl` through asyncio, against the poll loop's
//! TLS client and server — handshake, echo, and a clean shutdown (close_notify) started by
//! either side, TLS 1.2 and TLS 1.3.
//!
//! | peer | our side | who closes first |
//! |---|---|---|
//! | `openssl s_server -rev` (answers a line reversed) | client | we do |
//! | `openssl s_client -ign_eof` | server (echo, then close) | we do |
//! | Python asyncio server (echo a line, then close) | client | they do |
//! | Python asyncio client (send a line, read the echo, close) | server (echo) | they do |
//!
//! Certificates (a CA and a "localhost" leaf, ECDSA P-256) are made at run time with
//! rcgen and written to a temporary directory. A peer that is not installed prints
//! `SKIPPED (reason)` (`.ci/run` lists those). Every wait is bounded; every child is
//! killed and reaped when its guard drops.

use std::cell::RefCell;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use aioport::tls::rustls::crypto::ring;
use aioport::tls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use aioport::tls::rustls::{
    self, ClientConfig, ProtocolVersion, RootCertStore, ServerConfig, SupportedProtocolVersion,
};
use aioport::tls::{TlsClient, TlsServer, TlsSession};
use aioport::{CallbackResult, ConnectionError, Ctx, Endpoint, Protocol};
use aioport_poll::{Loop, ServerOptions};

/// No wait in this file is longer.
const LIMIT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------
// Versions, certificates, peers
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    Tls12,
    Tls13,
}

impl Version {
    const ALL: [Version; 2] = [Version::Tls12, Version::Tls13];

    fn rustls(self) -> &'static [&'static SupportedProtocolVersion] {
        const TLS12: &[&SupportedProtocolVersion] = &[&rustls::version::TLS12];
        const TLS13: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13];
        match self {
            Version::Tls12 => TLS12,
            Version::Tls13 => TLS13,
        }
    }

    fn protocol_version(self) -> ProtocolVersion {
        match self {
            Version::Tls12 => ProtocolVersion::TLSv1_2,
            Version::Tls13 => ProtocolVersion::TLSv1_3,
        }
    }

    fn openssl_flag(self) -> &'static str {
        match self {
            Version::Tls12 => "-tls1_2",
            Version::Tls13 => "-tls1_3",
        }
    }

    /// Python's `ssl.TLSVersion` member, and what `SSLObject.version()` reports.
    fn python(self) -> &'static str {
        match self {
            Version::Tls12 => "TLSv1_2",
            Version::Tls13 => "TLSv1_3",
        }
    }

    fn python_reported(self) -> &'static str {
        match self {
            Version::Tls12 => "TLSv1.2",
            Version::Tls13 => "TLSv1.3",
        }
    }
}

/// A CA and a "localhost" leaf it signed (ECDSA P-256, which every peer accepts), in
/// memory and as PEM files in a temporary directory removed on drop.
struct Certs {
    dir: PathBuf,
    ca: CertificateDer<'static>,
    leaf: CertificateDer<'static>,
    key: PrivatePkcs8KeyDer<'static>,
}

impl Certs {
    fn new() -> Certs {
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let alg = &rcgen::PKCS_ECDSA_P256_SHA256;
        let ca_key = rcgen::KeyPair::generate_for(alg).unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(rcgen::DnType::CommonName, "aioport interop CA");
        ca_params.key_usages =
            vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
        let key = rcgen::KeyPair::generate_for(alg).unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, "localhost");
        // Python 3.13 verifies strictly (VERIFY_X509_STRICT): the leaf names its issuer's key.
        params.use_authority_key_identifier_extension = true;
        params.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let leaf = params.signed_by(&key, &ca).unwrap();
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("aioport-interop-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
        std::fs::write(dir.join("leaf.pem"), leaf.pem()).unwrap();
        std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
        Certs {
            dir,
            ca: ca.der().clone(),
            leaf: leaf.der().clone(),
            key: PrivatePkcs8KeyDer::from(key.serialize_der()),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn client(&self, version: Version) -> TlsClient {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca.clone()).unwrap();
        let config = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
            .with_protocol_versions(version.rustls())
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        TlsClient::new(Arc::new(config), "localhost").unwrap()
    }

    fn server(&self, version: Version) -> TlsServer {
        let config = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
            .with_protocol_versions(version.rustls())
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![self.leaf.clone()], PrivateKeyDer::Pkcs8(self.key.clone_key()))
            .unwrap();
        TlsServer::new(Arc::new(config))
    }
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A child process, killed (if still running) and reaped when dropped; its stdout lines
/// arrive on a channel (read by a thread, so waits on them are bounded).
struct Peer {
    child: Child,
    lines: Receiver<String>,
    name: &'static str,
}

impl Peer {
    fn spawn(name: &'static str, mut cmd: Command) -> Peer {
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("{name}: cannot start: {e}"));
        let (tx, lines) = channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Peer { child, lines, name }
    }

    /// The first stdout line starting with `prefix`, within [`LIMIT`].
    fn line(&self, prefix: &str) -> String {
        let deadline = Instant::now() + LIMIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.starts_with(prefix) => return line,
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => panic!("{}: no {prefix:?} line", self.name),
                Err(RecvTimeoutError::Disconnected) => {
                    panic!("{}: exited before {prefix:?}", self.name)
                }
            }
        }
    }

    /// Every stdout line until the child closes its stdout, within [`LIMIT`].
    fn rest(&self) -> Vec<String> {
        let deadline = Instant::now() + LIMIT;
        let mut out = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => out.push(line),
                Err(RecvTimeoutError::Disconnected) => return out,
                Err(RecvTimeoutError::Timeout) => panic!("{}: stdout still open", self.name),
            }
        }
    }

    /// Waits (bounded) for the child to exit; its status and stderr.
    fn exit(&mut self) -> (std::process::ExitStatus, String) {
        let deadline = Instant::now() + LIMIT;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "{}: did not exit", self.name);
            std::thread::sleep(Duration::from_millis(10));
        };
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        (status, err)
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `openssl`, or why the OpenSSL cases cannot run.
fn openssl() -> Result<(), String> {
    match Command::new("openssl").arg("version").output() {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(format!("`openssl version` failed: {}", o.status)),
        Err(e) => Err(format!("no openssl binary: {e}")),
    }
}

/// A Python with asyncio and ssl: 3.13 through pyenv when installed, else `python3`.
fn python() -> Result<Command, String> {
    let probe = "import asyncio, ssl, sys; print(sys.version_info[:2] >= (3, 11))";
    let candidates: [(&str, Option<&str>); 2] = [("python3", Some("3.13.0")), ("python3", None)];
    for (bin, pyenv) in candidates {
        let mut cmd = Command::new(bin);
        if let Some(v) = pyenv {
            cmd.env("PYENV_VERSION", v);
        }
        let ok = cmd
            .args(["-c", probe])
            .output()
            .is_ok_and(|o| o.status.success() && o.stdout.starts_with(b"True"));
        if ok {
            let mut cmd = Command::new(bin);
            if let Some(v) = pyenv {
                cmd.env("PYENV_VERSION", v);
            }
            return Ok(cmd);
        }
    }
    Err("no python3 (>= 3.11) with asyncio and ssl".into())
}

fn skipped(case: &str, why: &str) {
    println!("SKIPPED (tls_interop {case}: {why})");
}

/// The Python peer: `server VERSION CA LEAF KEY` echoes one line and closes first;
/// `client VERSION CA PORT` sends a line, reads the echo and closes first. Both print
/// `DONE <negotiated version>` after a clean close.
const PYTHON_PEER: &str = r#"
import asyncio, ssl, sys

mode, version = sys.argv[1], getattr(ssl.TLSVersion, sys.argv[2])
LINE = b"hello from python\n"

async def server(ca, leaf, key):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ctx.maximum_version = version
    ctx.load_cert_chain(leaf, key)
    done = asyncio.get_running_loop().create_future()
    async def handle(reader, writer):
        line = await reader.readline()
        writer.write(line)
        await writer.drain()
        tls = writer.get_extra_info("ssl_object").version()
        writer.close()
        await writer.wait_closed()
        done.set_result((line, tls))
    srv = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=ctx)
    print("READY", srv.sockets[0].getsockname()[1], flush=True)
    line, tls = await asyncio.wait_for(done, 20)
    print("GOT", line.decode().strip(), flush=True)
    print("DONE", tls, flush=True)
    srv.close()

async def client(ca, port):
    ctx = ssl.create_default_context(cafile=ca)
    ctx.minimum_version = ctx.maximum_version = version
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", int(port), ssl=ctx, server_hostname="localhost")
    writer.write(LINE)
    await writer.drain()
    echo = await asyncio.wait_for(reader.readexactly(len(LINE)), 20)
    print("ECHO", echo.decode().strip(), flush=True)
    tls = writer.get_extra_info("ssl_object").version()
    writer.close()
    await asyncio.wait_for(writer.wait_closed(), 20)
    print("DONE", tls, flush=True)

if mode == "server":
    asyncio.run(server(*sys.argv[3:6]))
else:
    asyncio.run(client(*sys.argv[3:5]))
"#;

// ---------------------------------------------------------------------------------------
// Our side: app protocols and what they saw
// ---------------------------------------------------------------------------------------

#[derive(Default, Debug)]
struct Seen {
    data: Vec<u8>,
    eof: bool,
    lost: Option<Option<ConnectionError>>,
}

type Shared = Rc<RefCell<Seen>>;

/// Our client app: sends `line`; once `expect` bytes came back, closes first (`close_first`)
/// or waits for the peer's close.
struct LineClient {
    seen: Shared,
    line: &'static [u8],
    expect: usize,
    close_first: bool,
}

impl Protocol for LineClient {
    fn connection_made(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        Ok(ctx.write_slice(ctx.stream(), self.line)?)
    }
    fn data_received(&mut self, ctx: &mut Ctx<'_>, data: &[u8]) -> CallbackResult {
        let mut s = self.seen.borrow_mut();
        s.data.extend_from_slice(data);
        if self.close_first && s.data.len() >= self.expect {
            ctx.close(ctx.stream())?;
        }
        Ok(())
    }
    fn eof_received(&mut self, _: &mut Ctx<'_>) -> CallbackResult<bool> {
        self.seen.borrow_mut().eof = true;
        Ok(false)
    }
    fn connection_lost(&mut self, _: &mut Ctx<'_>, err: Option<ConnectionError>) -> CallbackResult {
        self.seen.borrow_mut().lost = Some(err);
        Ok(())
    }
}

/// Our server app: echoes; after a whole line, closes first when `close_first`.
struct LineEcho {
    seen: Shared,
    close_first: bool,
}

impl Protocol for LineEcho {
    fn data_received(&mut self, ctx: &mut Ctx<'_>, data: &[u8]) -> CallbackResult {
        self.seen.borrow_mut().data.extend_from_slice(data);
        ctx.write_slice(ctx.stream(), data)?;
        if self.close_first && data.ends_with(b"\n") {
            ctx.close(ctx.stream())?;
        }
        Ok(())
    }
    fn eof_received(&mut self, _: &mut Ctx<'_>) -> CallbackResult<bool> {
        self.seen.borrow_mut().eof = true;
        Ok(false)
    }
    fn connection_lost(&mut self, _: &mut Ctx<'_>, err: Option<ConnectionError>) -> CallbackResult {
        self.seen.borrow_mut().lost = Some(err);
        Ok(())
    }
}

/// A TLS server on the poll loop whose one connection's app and session are kept.
fn our_server(
    lp: &mut Loop,
    tls: TlsServer,
    close_first: bool,
) -> (u16, Shared, Rc<RefCell<Option<TlsSession>>>) {
    let seen = Shared::default();
    let session = Rc::new(RefCell::new(None));
    let (s, sess) = (seen.clone(), session.clone());
    let server = lp
        .create_tls_server(
            "127.0.0.1:0",
            tls,
            move |session| {
                *sess.borrow_mut() = Some(session.clone());
                Box::new(LineEcho { seen: s.clone(), close_first })
            },
            ServerOptions::default(),
        )
        .unwrap();
    (server.addr().port(), seen, session)
}

fn assert_clean(case: &str, seen: &Seen) {
    assert!(matches!(seen.lost, Some(None)), "{case}: lost with {:?}", seen.lost);
}

fn assert_version(case: &str, session: &TlsSession, version: Version) {
    let info = session.info().unwrap_or_else(|| panic!("{case}: no handshake"));
    assert_eq!(info.version, version.protocol_version(), "{case}");
    assert!(session.error().is_none(), "{case}: {:?}", session.error());
}

// ---------------------------------------------------------------------------------------
// OpenSSL
// ---------------------------------------------------------------------------------------

/// A free loopback port for `s_server` (which cannot report the one it bound).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn our_client_with_openssl_s_server_we_close_first() {
    if let Err(why) = openssl() {
        return skipped("our client with openssl s_server", &why);
    }
    for version in Version::ALL {
        let case = format!("our client with openssl s_server, {version:?}");
        let certs = Certs::new();
        let port = free_port();
        let mut cmd = Command::new("openssl");
        cmd.args(["s_server", "-accept", &format!("127.0.0.1:{port}"), "-naccept", "1", "-rev"])
            .arg(version.openssl_flag())
            .arg("-cert")
            .arg(certs.path("leaf.pem"))
            .arg("-key")
            .arg(certs.path("key.pem"));
        let mut peer = Peer::spawn("openssl s_server", cmd);
        peer.line("ACCEPT");

        let mut lp = Loop::new().unwrap();
        let seen = Shared::default();
        let line = b"hello interop\n";
        let app = LineClient { seen: seen.clone(), line, expect: line.len(), close_first: true };
        let endpoint = Endpoint::Addr(([127, 0, 0, 1], port).into());
        let (_, session) = lp
            .create_tls_connection(endpoint, &certs.client(version), Box::new(app))
            .unwrap_or_else(|e| panic!("{case}: {e}"));
        assert_version(&case, &session, version);
        let s = seen.clone();
        lp.run_until_timeout(|| s.borrow().lost.is_some(), LIMIT).unwrap();
        // s_server -rev answers each line reversed.
        assert_eq!(seen.borrow().data, b"poretni olleh\n", "{case}");
        assert_clean(&case, &seen.borrow());
        // -naccept 1: s_server exits once our connection ended, 0 when it ended cleanly.
        let (status, err) = peer.exit();
        assert!(status.success(), "{case}: s_server {status}: {err}");
    }
}

#[test]
fn openssl_s_client_with_our_server_we_close_first() {
    if let Err(why) = openssl() {
        return skipped("openssl s_client with our server", &why);
    }
    for version in Version::ALL {
        let case = format!("openssl s_client with our server, {version:?}");
        let certs = Certs::new();
        let mut lp = Loop::new().unwrap();
        let (port, seen, session) = our_server(&mut lp, certs.server(version), true);
        let mut cmd = Command::new("openssl");
        cmd.args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
            .args(["-servername", "localhost", "-verify_return_error", "-quiet", "-ign_eof"])
            .arg(version.openssl_flag())
            .arg("-CAfile")
            .arg(certs.path("ca.pem"));
        let mut peer = Peer::spawn("openssl s_client", cmd);
        {
            use std::io::Write;
            let mut stdin = peer.child.stdin.take().unwrap();
            stdin.write_all(b"hello from openssl\n").unwrap();
            // stdin stays open until dropped here; -ign_eof keeps s_client reading.
        }
        let s = seen.clone();
        lp.run_until_timeout(|| s.borrow().lost.is_some(), LIMIT).unwrap();
        assert_eq!(seen.borrow().data, b"hello from openssl\n", "{case}");
        assert_clean(&case, &seen.borrow());
        assert_version(&case, session.borrow().as_ref().unwrap(), version);
        // Our close_notify ends s_client: the echo, then a clean exit.
        let out = peer.rest();
        let (status, err) = peer.exit();
        assert!(out.iter().any(|l| l == "hello from openssl"), "{case}: {out:?} {err}");
        assert!(status.success(), "{case}: s_client {status}: {err}");
    }
}

// ---------------------------------------------------------------------------------------
// Python asyncio
// ---------------------------------------------------------------------------------------

fn python_peer(certs: &Certs, mut cmd: Command, args: &[&dyn AsRef<std::ffi::OsStr>]) -> Peer {
    let script = certs.path("peer.py");
    std::fs::write(&script, PYTHON_PEER).unwrap();
    cmd.arg(&script);
    for a in args {
        cmd.arg(a);
    }
    Peer::spawn("python asyncio peer", cmd)
}

#[test]
fn our_client_with_python_asyncio_server_they_close_first() {
    if let Err(why) = python() {
        return skipped("our client with a Python asyncio server", &why);
    }
    for version in Version::ALL {
        let case = format!("our client with a Python asyncio server, {version:?}");
        let certs = Certs::new();
        let cmd = python().unwrap();
        let (ca, leaf, key) = (certs.path("ca.pem"), certs.path("leaf.pem"), certs.path("key.pem"));
        let mut peer =
            python_peer(&certs, cmd, &[&"server", &version.python(), &ca, &leaf, &key]);
        let ready = peer.line("READY ");
        let port: u16 = ready["READY ".len()..].trim().parse().unwrap();

        let mut lp = Loop::new().unwrap();
        let seen = Shared::default();
        let line = b"hello from aioport\n";
        let app = LineClient { seen: seen.clone(), line, expect: line.len(), close_first: false };
        let endpoint = Endpoint::Addr(([127, 0, 0, 1], port).into());
        let (_, session) = lp
            .create_tls_connection(endpoint, &certs.client(version), Box::new(app))
            .unwrap_or_else(|e| panic!("{case}: {e}"));
        assert_version(&case, &session, version);
        let s = seen.clone();
        lp.run_until_timeout(|| s.borrow().lost.is_some(), LIMIT).unwrap();
        // The echo, then the server's close_notify as EOF, then a clean end.
        let s = seen.borrow();
        assert_eq!(s.data, line, "{case}");
        assert!(s.eof, "{case}: the server's close_notify is our EOF");
        assert_clean(&case, &s);
        assert_eq!(peer.line("GOT "), "GOT hello from aioport", "{case}");
        assert_eq!(peer.line("DONE "), format!("DONE {}", version.python_reported()), "{case}");
        let (status, err) = peer.exit();
        assert!(status.success(), "{case}: python {status}: {err}");
    }
}

#[test]
fn python_asyncio_client_with_our_server_they_close_first() {
    if let Err(why) = python() {
        return skipped("a Python asyncio client with our server", &why);
    }
    for version in Version::ALL {
        let case = format!("a Python asyncio client with our server, {version:?}");
        let certs = Certs::new();
        let mut lp = Loop::new().unwrap();
        let (port, seen, session) = our_server(&mut lp, certs.server(version), false);
        let cmd = python().unwrap();
        let ca = certs.path("ca.pem");
        let port = port.to_string();
        let mut peer = python_peer(&certs, cmd, &[&"client", &version.python(), &ca, &port]);
        let s = seen.clone();
        lp.run_until_timeout(|| s.borrow().lost.is_some(), LIMIT).unwrap();
        let s = seen.borrow();
        assert_eq!(s.data, b"hello from python\n", "{case}");
        assert!(s.eof, "{case}: the client's close_notify is our EOF");
        assert_clean(&case, &s);
        assert_version(&case, session.borrow().as_ref().unwrap(), version);
        assert_eq!(peer.line("ECHO "), "ECHO hello from python", "{case}");
        assert_eq!(peer.line("DONE "), format!("DONE {}", version.python_reported()), "{case}");
        let (status, err) = peer.exit();
        assert!(status.success(), "{case}: python {status}: {err}");
    }
}

/// The temporary directory goes with the certificates.
#[test]
fn certificates_live_in_a_temporary_directory_removed_on_drop() {
    let certs = Certs::new();
    let dir: PathBuf = certs.dir.clone();
    for f in ["ca.pem", "leaf.pem", "key.pem"] {
        assert!(Path::new(&dir).join(f).is_file());
    }
    drop(certs);
    assert!(!dir.exists());
}
