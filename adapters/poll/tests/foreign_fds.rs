//! `add_reader` / `add_writer` on fds the loop does not own, with level-triggered
//! behaviour (asyncio's), and `call_soon_threadsafe` from another thread waking a loop
//! blocked in its wait.

use std::cell::{Cell, RefCell};
use std::io::{Read, Write};
use std::ops::ControlFlow;
use std::os::unix::net::UnixStream;
use std::rc::Rc;
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use aioport::{CallbackResult, Ctx, Endpoint, Protocol};
use aioport_poll::{Loop, ServerOptions};

const LIMIT: Duration = Duration::from_secs(10);

#[test]
fn a_reader_runs_while_data_is_left_unread() {
    let (a, mut b) = UnixStream::pair().unwrap();
    a.set_nonblocking(true).unwrap();
    let mut lp = Loop::new().unwrap();
    let chunks = Rc::new(RefCell::new(Vec::new()));
    let c = chunks.clone();
    let mut reader = a.try_clone().unwrap();
    // Reads 2 bytes per call: the rest must bring the callback back (level-triggered).
    lp.add_reader(&a, move |_ctx| {
        let mut buf = [0u8; 2];
        if let Ok(n) = reader.read(&mut buf) {
            c.borrow_mut().push(buf[..n].to_vec());
        }
        ControlFlow::Continue(())
    })
    .unwrap();
    b.write_all(b"abcdef").unwrap();
    lp.run_until_timeout(|| chunks.borrow().len() == 3, LIMIT).unwrap();
    assert_eq!(chunks.borrow().concat(), b"abcdef");
    assert!(lp.remove_reader(&a));
    assert!(!lp.remove_reader(&a), "already removed");
    b.write_all(b"gh").unwrap();
    lp.run_once(Some(Duration::from_millis(20))).unwrap();
    assert_eq!(chunks.borrow().len(), 3, "no callback after remove_reader");
}

#[test]
fn a_writer_and_a_reader_on_one_fd_and_break_removes() {
    let (a, mut b) = UnixStream::pair().unwrap();
    a.set_nonblocking(true).unwrap();
    let mut lp = Loop::new().unwrap();
    let wrote = Rc::new(Cell::new(0));
    let read = Rc::new(Cell::new(0));
    let (w, r) = (wrote.clone(), read.clone());
    let mut writer = a.try_clone().unwrap();
    lp.add_writer(&a, move |_ctx| {
        writer.write_all(b"x").unwrap();
        w.set(w.get() + 1);
        // Three writes, then the writer removes itself.
        if w.get() == 3 { ControlFlow::Break(()) } else { ControlFlow::Continue(()) }
    })
    .unwrap();
    let mut reader = a.try_clone().unwrap();
    lp.add_reader(&a, move |_ctx| {
        let mut buf = [0u8; 8];
        r.set(r.get() + reader.read(&mut buf).unwrap_or(0));
        ControlFlow::Continue(())
    })
    .unwrap();
    b.write_all(b"yy").unwrap();
    lp.run_until_timeout(|| wrote.get() == 3 && read.get() == 2, LIMIT).unwrap();
    lp.run_once(Some(Duration::from_millis(20))).unwrap();
    assert_eq!(wrote.get(), 3, "Break removed the writer");
    assert!(!lp.remove_writer(&a));
    assert!(lp.remove_reader(&a));
    let mut got = [0u8; 3];
    b.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"xxx");
}

#[test]
fn callbacks_get_a_ctx_for_the_loops_transports() {
    struct Echo;
    impl Protocol for Echo {
        fn data_received(&mut self, ctx: &mut Ctx<'_>, data: &[u8]) -> CallbackResult {
            ctx.write_slice(ctx.stream(), data)?;
            Ok(())
        }
    }
    struct Keep(Rc<RefCell<Vec<u8>>>);
    impl Protocol for Keep {
        fn data_received(&mut self, _: &mut Ctx<'_>, data: &[u8]) -> CallbackResult {
            self.0.borrow_mut().extend_from_slice(data);
            Ok(())
        }
    }
    let mut lp = Loop::new().unwrap();
    let srv = lp.create_server("127.0.0.1:0", || Box::new(Echo), ServerOptions::default()).unwrap();
    let got = Rc::new(RefCell::new(Vec::new()));
    let h = lp.create_connection(Endpoint::Addr(srv.addr()), Box::new(Keep(got.clone()))).unwrap();
    // A foreign fd (a control pipe) drives a transport of the loop.
    let (a, mut b) = UnixStream::pair().unwrap();
    a.set_nonblocking(true).unwrap();
    let mut control = a.try_clone().unwrap();
    lp.add_reader(&a, move |ctx| {
        let mut buf = [0u8; 16];
        if let Ok(n) = control.read(&mut buf) {
            ctx.write_slice(h, &buf[..n]).unwrap();
        }
        ControlFlow::Continue(())
    })
    .unwrap();
    b.write_all(b"relayed").unwrap();
    lp.run_until_timeout(|| got.borrow().len() == 7, LIMIT).unwrap();
    assert_eq!(&got.borrow()[..], b"relayed");
}

#[test]
fn a_panicking_callback_is_removed_and_reported() {
    let (a, mut b) = UnixStream::pair().unwrap();
    let mut lp = Loop::new().unwrap();
    let reports = Rc::new(RefCell::new(Vec::new()));
    let r = reports.clone();
    lp.set_error_handler(move |e| r.borrow_mut().push(e.to_string()));
    lp.add_reader(&a, |_ctx| panic!("reader failed")).unwrap();
    b.write_all(b"x").unwrap();
    lp.run_until_timeout(|| !reports.borrow().is_empty(), LIMIT).unwrap();
    assert!(reports.borrow()[0].contains("reader failed"), "{:?}", reports.borrow());
    assert!(!lp.remove_reader(&a), "the panicking reader was removed");
}

#[test]
fn a_regular_file_cannot_be_watched() {
    let path = std::env::temp_dir().join(format!("aioport-foreign-{}", std::process::id()));
    std::fs::write(&path, b"x").unwrap();
    let f = std::fs::File::open(&path).unwrap();
    let mut lp = Loop::new().unwrap();
    assert!(lp.add_reader(&f, |_| ControlFlow::Continue(())).is_err());
    assert!(!lp.remove_reader(&f));
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn call_soon_threadsafe_wakes_a_blocked_loop() {
    let mut lp = Loop::new().unwrap();
    let handle = lp.handle();
    let ran_on = Arc::new(Mutex::new(None));
    let (tx, rx) = mpsc::channel();
    let r = ran_on.clone();
    let t = std::thread::spawn(move || {
        // Sent once the loop runs; nothing else is scheduled, so the loop is (or soon is)
        // blocked in its wait, which only this call can end before the limit.
        rx.recv().unwrap();
        handle.call_soon_threadsafe(move |_ctx| {
            *r.lock().unwrap() = Some(std::thread::current().id());
        })
    });
    lp.call_soon(move |_| tx.send(()).unwrap());
    lp.run_until_timeout(|| ran_on.lock().unwrap().is_some(), LIMIT).unwrap();
    t.join().unwrap().unwrap();
    assert_eq!(
        *ran_on.lock().unwrap(),
        Some(std::thread::current().id()),
        "ran on the loop's thread"
    );
}
