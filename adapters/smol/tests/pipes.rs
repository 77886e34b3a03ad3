//! Pipe transports on smol (spec §13), the poll loop's cases: reading and writing real
//! pipes and socket pairs, the write pipe noticing that its read end closed (with and
//! without bytes queued), flow control on a full pipe, a tty, and the clear errors for a
//! regular file and for `/dev/null`. Every run bounded.

use std::cell::{Cell, RefCell};
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::rc::Rc;
use std::time::Duration;

use aioport::{CallbackResult, ConnectionError, Ctx, Protocol};
use aioport_smol::{Error, Loop};
use async_io::block_on;

const LIMIT: Duration = Duration::from_secs(10);

/// Records everything a pipe protocol sees.
#[derive(Default)]
struct Seen {
    made: Cell<bool>,
    data: RefCell<Vec<u8>>,
    eof: Cell<bool>,
    paused: Cell<u32>,
    resumed: Cell<u32>,
    lost: RefCell<Option<Option<ConnectionError>>>,
}

struct Recorder(Rc<Seen>);
impl Protocol for Recorder {
    fn connection_made(&mut self, _: &mut Ctx<'_>) -> CallbackResult {
        self.0.made.set(true);
        Ok(())
    }
    fn data_received(&mut self, _: &mut Ctx<'_>, data: &[u8]) -> CallbackResult {
        self.0.data.borrow_mut().extend_from_slice(data);
        Ok(())
    }
    fn eof_received(&mut self, _: &mut Ctx<'_>) -> CallbackResult<bool> {
        self.0.eof.set(true);
        Ok(false)
    }
    fn pause_writing(&mut self, _: &mut Ctx<'_>) -> CallbackResult {
        self.0.paused.set(self.0.paused.get() + 1);
        Ok(())
    }
    fn resume_writing(&mut self, _: &mut Ctx<'_>) -> CallbackResult {
        self.0.resumed.set(self.0.resumed.get() + 1);
        Ok(())
    }
    fn connection_lost(&mut self, _: &mut Ctx<'_>, err: Option<ConnectionError>) -> CallbackResult {
        *self.0.lost.borrow_mut() = Some(err);
        Ok(())
    }
}

fn recorder() -> (Box<Recorder>, Rc<Seen>) {
    let seen = Rc::new(Seen::default());
    (Box::new(Recorder(seen.clone())), seen)
}

#[test]
fn read_pipe_delivers_data_then_eof_then_lost() {
    block_on(async {
        let (reader, mut writer) = std::io::pipe().unwrap();
        let mut lp = Loop::new();
        let (p, seen) = recorder();
        let h = lp.connect_read_pipe(reader.into(), p).unwrap();
        assert!(seen.made.get(), "connection_made before connect_read_pipe returns");
        assert!(lp.with(|ctx| ctx.extra(h).unwrap().fd.is_some()), "extra carries the fd");
        writer.write_all(b"hello ").unwrap();
        lp.run_until_timeout(|| seen.data.borrow().len() == 6, LIMIT).await.unwrap();
        writer.write_all(b"world").unwrap();
        drop(writer);
        lp.run_until_timeout(|| seen.lost.borrow().is_some(), LIMIT).await.unwrap();
        assert_eq!(&seen.data.borrow()[..], b"hello world");
        assert!(seen.eof.get());
        assert_eq!(*seen.lost.borrow(), Some(None));
        assert!(lp.is_empty());
    });
}

#[test]
fn write_pipe_writes_and_write_eof_closes() {
    block_on(async {
        let (mut reader, writer) = std::io::pipe().unwrap();
        let mut lp = Loop::new();
        let (p, seen) = recorder();
        let h = lp.connect_write_pipe(writer.into(), p).unwrap();
        lp.with(|ctx| {
            ctx.write_slice(h, b"through the pipe").unwrap();
            ctx.write_eof(h).unwrap();
        });
        lp.run_until_timeout(|| seen.lost.borrow().is_some(), LIMIT).await.unwrap();
        assert_eq!(*seen.lost.borrow(), Some(None));
        let mut all = Vec::new();
        reader.read_to_end(&mut all).unwrap();
        assert_eq!(all, b"through the pipe");
    });
}

#[test]
fn write_pipe_flow_control_on_a_full_pipe() {
    block_on(async {
        let (mut reader, writer) = std::io::pipe().unwrap();
        let mut lp = Loop::new();
        let (p, seen) = recorder();
        let h = lp.connect_write_pipe(writer.into(), p).unwrap();
        const N: usize = 1 << 20;
        // A pipe holds 64 KiB by default: most of this is queued and pauses the protocol.
        lp.with(|ctx| ctx.write_slice(h, &vec![1u8; N]).unwrap());
        assert_eq!(seen.paused.get(), 1);
        let drained = std::thread::spawn(move || {
            let mut buf = vec![0u8; 1 << 16];
            let mut total = 0;
            while total < N {
                match reader.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => total += n,
                }
            }
            // Kept open until joined: closing the read end would end the transport
            // (connection_lost(None), as the drained queue is empty) before close().
            (total, reader)
        });
        lp.run_until_timeout(|| seen.resumed.get() == 1, LIMIT).await.unwrap();
        // close() flushes the rest, then connection_lost(None).
        lp.with(|ctx| ctx.close(h).unwrap());
        lp.run_until_timeout(|| seen.lost.borrow().is_some(), LIMIT).await.unwrap();
        assert_eq!(drained.join().unwrap().0, N);
        assert_eq!(*seen.lost.borrow(), Some(None));
    });
}

#[test]
fn write_pipe_sees_the_read_end_close_with_nothing_queued() {
    block_on(async {
        let (reader, writer) = std::io::pipe().unwrap();
        let mut lp = Loop::new();
        let (p, seen) = recorder();
        lp.connect_write_pipe(writer.into(), p).unwrap();
        drop(reader);
        // No write is needed: the loop watches the write end for the hang-up (spec §13.68).
        lp.run_until_timeout(|| seen.lost.borrow().is_some(), LIMIT).await.unwrap();
        assert_eq!(*seen.lost.borrow(), Some(None));
    });
}

#[test]
fn write_pipe_sees_the_read_end_close_with_bytes_queued() {
    block_on(async {
        let (reader, writer) = std::io::pipe().unwrap();
        let mut lp = Loop::new();
        let (p, seen) = recorder();
        let h = lp.connect_write_pipe(writer.into(), p).unwrap();
        lp.with(|ctx| ctx.write_slice(h, &vec![0u8; 1 << 20]).unwrap());
        drop(reader);
        lp.run_until_timeout(|| seen.lost.borrow().is_some(), LIMIT).await.unwrap();
        let lost = seen.lost.borrow().clone().unwrap();
        let err = lost.expect("an error: bytes were still queued");
        assert_eq!(err.io_kind(), Some(std::io::ErrorKind::BrokenPipe), "{err}");
    });
}

#[test]
fn socket_pairs_work_as_pipes_both_ways() {
    block_on(async {
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let mut lp = Loop::new();
        let (pr, read_seen) = recorder();
        let (pw, write_seen) = recorder();
        lp.connect_read_pipe(OwnedFd::from(a), pr).unwrap();
        let w = lp.connect_write_pipe(OwnedFd::from(b), pw).unwrap();
        lp.with(|ctx| {
            ctx.write_slice(w, b"over a socket").unwrap();
            ctx.write_eof(w).unwrap();
        });
        lp.run_until_timeout(|| read_seen.lost.borrow().is_some(), LIMIT).await.unwrap();
        assert_eq!(&read_seen.data.borrow()[..], b"over a socket");
        assert!(read_seen.eof.get());
        assert_eq!(*write_seen.lost.borrow(), Some(None));
    });
}

#[test]
fn write_to_a_socket_pipe_whose_peer_closed() {
    block_on(async {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        let mut lp = Loop::new();
        let (p, seen) = recorder();
        lp.connect_write_pipe(OwnedFd::from(ours), p).unwrap();
        drop(theirs);
        lp.run_until_timeout(|| seen.lost.borrow().is_some(), LIMIT).await.unwrap();
        assert_eq!(*seen.lost.borrow(), Some(None));
    });
}

#[test]
fn a_regular_file_is_a_clear_error() {
    block_on(async {
        let path = std::env::temp_dir().join(format!("aioport-pipe-{}", std::process::id()));
        std::fs::write(&path, b"x").unwrap();
        let mut lp = Loop::new();
        for write in [false, true] {
            let f = std::fs::OpenOptions::new().read(true).write(true).open(&path).unwrap();
            let (p, seen) = recorder();
            let r = if write {
                lp.connect_write_pipe(f.into(), p).map(|_| ())
            } else {
                lp.connect_read_pipe(f.into(), p).map(|_| ())
            };
            match r {
                Err(e @ Error::NotAPipe { kind: "a regular file" }) => {
                    assert!(e.to_string().contains("only for pipes, sockets and character devices"))
                }
                other => panic!("expected NotAPipe, got {other:?}"),
            }
            assert!(!seen.made.get());
        }
        assert!(lp.is_empty());
        std::fs::remove_file(&path).unwrap();
    });
}

#[test]
fn a_character_device_epoll_refuses_is_an_io_error() {
    block_on(async {
        // /dev/null passes the type check (a character device) but cannot be polled.
        let null = std::fs::OpenOptions::new().write(true).open("/dev/null").unwrap();
        let mut lp = Loop::new();
        let (p, seen) = recorder();
        let r = lp.connect_write_pipe(null.into(), p);
        assert!(matches!(r, Err(Error::Io(_))), "{r:?}");
        assert!(!seen.made.get());
        assert!(lp.is_empty());
    });
}

#[test]
fn a_tty_works_as_a_read_pipe() {
    block_on(async {
        use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};
        let master = match openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY) {
            Ok(m) => m,
            Err(e) => return println!("SKIPPED (a_tty_works_as_a_read_pipe: no pty here: {e})"),
        };
        grantpt(&master).unwrap();
        unlockpt(&master).unwrap();
        let name = ptsname(&master, Vec::new()).unwrap();
        let mut slave = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(name.to_str().unwrap())
            .unwrap();
        let mut lp = Loop::new();
        let (p, seen) = recorder();
        lp.connect_read_pipe(master, p).unwrap();
        slave.write_all(b"typed\n").unwrap();
        // The terminal's line discipline turns "\n" into "\r\n".
        lp.run_until_timeout(|| seen.data.borrow().ends_with(b"\r\n"), LIMIT).await.unwrap();
        assert_eq!(&seen.data.borrow()[..], b"typed\r\n");
    });
}
