//! Unix stream sockets: echo over a path and an abstract name, stale-file cleanup (never a
//! live socket, never a non-socket file), the file removed on close, adopted Unix sockets.

use std::cell::RefCell;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use aioport::{CallbackResult, Ctx, Endpoint, Protocol};
use aioport_poll::{Error, Loop, ServerOptions, UnixName};

const LIMIT: Duration = Duration::from_secs(10);

struct Echo;
impl Protocol for Echo {
    fn data_received(&mut self, ctx: &mut Ctx<'_>, data: &[u8]) -> CallbackResult {
        ctx.write_slice(ctx.stream(), data)?;
        Ok(())
    }
}

/// Sends "ping" and keeps the echo.
struct Ping(Rc<RefCell<Vec<u8>>>);
impl Protocol for Ping {
    fn connection_made(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        ctx.write(ctx.stream(), &b"ping"[..])?;
        Ok(())
    }
    fn data_received(&mut self, _: &mut Ctx<'_>, data: &[u8]) -> CallbackResult {
        self.0.borrow_mut().extend_from_slice(data);
        Ok(())
    }
}

/// A fresh directory for one test, removed when dropped.
struct TempDir(PathBuf);
impl TempDir {
    fn new(test: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("aioport-unix-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn ping(lp: &mut Loop, name: UnixName) {
    let got = Rc::new(RefCell::new(Vec::new()));
    lp.create_unix_connection(name, Box::new(Ping(got.clone()))).expect("connect");
    lp.run_until_timeout(|| got.borrow().len() == 4, LIMIT).expect("echo within the limit");
    assert_eq!(&got.borrow()[..], b"ping");
}

#[test]
fn echo_over_a_path_and_the_file_is_removed_on_close() {
    let dir = TempDir::new("echo");
    let path = dir.0.join("echo.sock");
    let mut lp = Loop::new().unwrap();
    let srv =
        lp.create_unix_server(path.as_path(), || Box::new(Echo), ServerOptions::default()).unwrap();
    assert_eq!(srv.name(), &UnixName::Path(path.clone()));
    ping(&mut lp, UnixName::Path(path.clone()));
    // The path also works through the generic entry point.
    let got = Rc::new(RefCell::new(Vec::new()));
    lp.create_connection(Endpoint::Unix(path.clone()), Box::new(Ping(got.clone()))).unwrap();
    lp.run_until_timeout(|| got.borrow().len() == 4, LIMIT).unwrap();
    assert!(srv.close(&mut lp));
    assert!(!path.exists(), "closing the server removes its socket file");
}

#[test]
fn a_stale_socket_file_is_removed_on_bind() {
    let dir = TempDir::new("stale");
    let path = dir.0.join("stale.sock");
    // A socket file nobody listens on any more (its listener was dropped without cleanup).
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let mut lp = Loop::new().unwrap();
    lp.create_unix_server(path.as_path(), || Box::new(Echo), ServerOptions::default()).unwrap();
    ping(&mut lp, UnixName::Path(path));
}

#[test]
fn a_live_socket_is_never_removed() {
    let dir = TempDir::new("live");
    let path = dir.0.join("live.sock");
    let live = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let mut lp = Loop::new().unwrap();
    let r = lp.create_unix_server(path.as_path(), || Box::new(Echo), ServerOptions::default());
    match r {
        Err(Error::UnixBind { error, .. }) => {
            assert_eq!(error.kind(), std::io::ErrorKind::AddrInUse, "{error}")
        }
        other => panic!("expected AddrInUse, got {other:?}"),
    }
    // The live server still owns its file and accepts.
    let _c = std::os::unix::net::UnixStream::connect(&path).unwrap();
    live.accept().unwrap();
}

#[test]
fn a_file_that_is_not_a_socket_is_never_removed() {
    let dir = TempDir::new("regular");
    let path = dir.0.join("data.txt");
    std::fs::write(&path, b"precious").unwrap();
    let mut lp = Loop::new().unwrap();
    let r = lp.create_unix_server(path.as_path(), || Box::new(Echo), ServerOptions::default());
    assert!(matches!(r, Err(Error::UnixBind { .. })), "{r:?}");
    assert_eq!(std::fs::read(&path).unwrap(), b"precious");
}

#[test]
fn a_replaced_file_is_not_removed_on_close() {
    let dir = TempDir::new("replaced");
    let path = dir.0.join("s.sock");
    let mut lp = Loop::new().unwrap();
    let srv =
        lp.create_unix_server(path.as_path(), || Box::new(Echo), ServerOptions::default()).unwrap();
    std::fs::remove_file(&path).unwrap();
    std::fs::write(&path, b"someone else's").unwrap();
    srv.close(&mut lp);
    assert_eq!(std::fs::read(&path).unwrap(), b"someone else's");
}

#[test]
fn connecting_to_nobody_is_an_error() {
    let dir = TempDir::new("nobody");
    let mut lp = Loop::new().unwrap();
    let r = lp.create_unix_connection(dir.0.join("missing.sock").as_path(), Box::new(Echo));
    assert!(matches!(r, Err(Error::Io(_))), "{r:?}");
    assert!(lp.is_empty());
}

#[cfg(target_os = "linux")]
#[test]
fn abstract_names_on_linux() {
    let name = UnixName::Abstract(format!("aioport-test-{}", std::process::id()).into_bytes());
    let mut lp = Loop::new().unwrap();
    let srv =
        lp.create_unix_server(name.clone(), || Box::new(Echo), ServerOptions::default()).unwrap();
    ping(&mut lp, name.clone());
    // Taken while the server lives; free again once it is closed.
    let again = lp.create_unix_server(name.clone(), || Box::new(Echo), ServerOptions::default());
    assert!(matches!(again, Err(Error::UnixBind { .. })), "{again:?}");
    srv.close(&mut lp);
    let srv =
        lp.create_unix_server(name.clone(), || Box::new(Echo), ServerOptions::default()).unwrap();
    ping(&mut lp, name);
    srv.close(&mut lp);
}

#[test]
fn an_adopted_unix_socket_pair() {
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    let mut lp = Loop::new().unwrap();
    lp.create_unix_connection_from(theirs, Box::new(Echo)).unwrap();
    let got = Rc::new(RefCell::new(Vec::new()));
    lp.create_unix_connection_from(ours, Box::new(Ping(got.clone()))).unwrap();
    lp.run_until_timeout(|| got.borrow().len() == 4, LIMIT).unwrap();
    assert_eq!(&got.borrow()[..], b"ping");
}
