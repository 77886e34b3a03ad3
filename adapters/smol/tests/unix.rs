//! A smol Unix server's socket file: removed when the server closes and when its loop is
//! dropped, but never when another file was put at the path meanwhile (device and inode
//! differ). Loopback only; every wait is bounded.

use std::cell::Cell;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use aioport::{CallbackResult, Ctx, Protocol};
use aioport_smol::Loop;
use async_io::block_on;

const LIMIT: Duration = Duration::from_secs(20);

struct Echo;
impl Protocol for Echo {
    fn data_received(&mut self, ctx: &mut Ctx<'_>, data: &[u8]) -> CallbackResult {
        Ok(ctx.write_slice(ctx.stream(), data)?)
    }
}

/// A directory of its own per test, removed (with what is left in it) when dropped.
struct Dir(PathBuf);

impl Dir {
    fn new(test: &str) -> Dir {
        let dir =
            std::env::temp_dir().join(format!("aioport-smol-unix-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        Dir(dir)
    }

    fn sock(&self) -> PathBuf {
        self.0.join("s.sock")
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A factory that counts the connections its server accepted.
fn counting(accepted: &Rc<Cell<usize>>) -> impl FnMut() -> Box<dyn Protocol> + 'static {
    let accepted = accepted.clone();
    move || {
        accepted.set(accepted.get() + 1);
        Box::new(Echo)
    }
}

/// Connects to `path` and runs `lp` until its server accepted (the count grew).
async fn accepts(lp: &mut Loop, path: &Path, accepted: &Rc<Cell<usize>>) {
    let _peer = UnixStream::connect(path).expect("connect to the server");
    let before = accepted.get();
    lp.run_until_timeout(|| accepted.get() > before, LIMIT).await.expect("accepted");
}

#[test]
fn closing_the_server_removes_its_socket_file() {
    let dir = Dir::new("close");
    let path = dir.sock();
    block_on(async {
        let mut lp = Loop::new();
        let accepted = Rc::new(Cell::new(0));
        let server = lp.create_unix_server(&path, counting(&accepted)).await.expect("listen");
        accepts(&mut lp, &path, &accepted).await;
        assert!(path.exists(), "the socket file exists while the server listens");
        assert!(server.close(&mut lp));
        assert!(!path.exists(), "close removed the socket file");
        assert!(!server.close(&mut lp), "closing twice is a no-op");
        // The path is free again: a new server binds it.
        let again = lp.create_unix_server(&path, counting(&accepted)).await.expect("listen again");
        accepts(&mut lp, &path, &accepted).await;
        lp.wait_closed(again.id(), Duration::ZERO).await.expect_err("still listening");
    });
    assert!(!path.exists(), "dropping the loop removed the second server's file");
}

#[test]
fn dropping_the_loop_removes_the_socket_file() {
    let dir = Dir::new("drop");
    let path = dir.sock();
    block_on(async {
        let mut lp = Loop::new();
        lp.create_unix_server(&path, || Box::new(Echo)).await.expect("listen");
        assert!(path.exists());
        drop(lp);
    });
    assert!(!path.exists(), "the loop's drop removed the socket file");
}

#[test]
fn a_file_replaced_meanwhile_is_left_alone() {
    let dir = Dir::new("replaced");
    let path = dir.sock();
    block_on(async {
        let mut lp = Loop::new();
        let server = lp.create_unix_server(&path, || Box::new(Echo)).await.expect("listen");
        // Someone else removes the file and binds their own socket at the same path.
        std::fs::remove_file(&path).expect("remove");
        let theirs = UnixListener::bind(&path).expect("bind a new socket at the path");
        assert!(server.close(&mut lp));
        assert!(path.exists(), "the other socket's file (another inode) stays");
        UnixStream::connect(&path).expect("the other listener still answers");
        drop(theirs);
        lp.run_until_timeout(|| true, LIMIT).await.expect("one turn");
    });
    assert!(path.exists(), "nor does dropping the loop remove it");

    // A regular file put there is not removed either.
    let path = dir.0.join("f.sock");
    block_on(async {
        let mut lp = Loop::new();
        let server = lp.create_unix_server(&path, || Box::new(Echo)).await.expect("listen");
        std::fs::remove_file(&path).expect("remove");
        std::fs::write(&path, b"not a socket").expect("write a file");
        assert!(server.close(&mut lp));
    });
    assert_eq!(std::fs::read(&path).expect("still there"), b"not a socket");
}
