//! The sendfile scenarios (issue 16): a protocol sends a file with `Ctx::sendfile` from a
//! callback, after a header it wrote itself, and hears `sendfile_completed`; the receiver
//! checks every byte against the pattern. Zero-copy where the driver can, the
//! flow-controlled fallback elsewhere (the harness, TLS) or when forced.
//!
//! The file comes from [`Driver::sendfile_file`](crate::driver::Driver::sendfile_file): a
//! temporary file on the poll loop, a `MemFile` on the harness (whose links do zero-copy
//! with the same seeded partial sends as writes); a driver without one
//! prints `SKIPPED (why)` for the zero-copy scenario. The fallback needs nothing of the
//! driver (the core reads the file and writes it with flow control), so the forced
//! fallback runs everywhere, from an in-memory file where the driver has none.

use std::any::Any;
use std::cell::RefCell;
use std::io;
use std::rc::Rc;

use aioport::stream::{SendfileError, SendfileFallback, SendfileSource};
use aioport::{CallbackResult, Ctx, Protocol, StreamHandle, WriteError};

use crate::driver::Driver;
use crate::protocols::{Recorder, Shared, pattern, shared};

/// Bytes of file sent; the header and the offset make the receiver's stream start at the
/// pattern's offset 0 all the same.
const FILE_BYTES: usize = 8 << 20;
const HEADER: usize = 1000;
/// Bytes at the start of the file that are not sent (the `offset` argument).
const SKIP: usize = 333;

/// The file: `SKIP` bytes that must not be sent, then the pattern from `HEADER` on.
fn file_data() -> Vec<u8> {
    let mut data = vec![0xEE; SKIP];
    let mut at = HEADER;
    while at < HEADER + FILE_BYTES {
        let n = (HEADER + FILE_BYTES - at).min(256 * 1024);
        data.extend_from_slice(&pattern(at, n));
        at += n;
    }
    data
}

/// A file in memory, for drivers without files of their own (the fallback only reads).
struct InMemory(Vec<u8>);

impl SendfileSource for InMemory {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let start = usize::try_from(offset).unwrap_or(usize::MAX).min(self.0.len());
        let n = buf.len().min(self.0.len() - start);
        buf[..n].copy_from_slice(&self.0[start..start + n]);
        Ok(n)
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// What the sending protocol saw.
#[derive(Debug, Default)]
struct Sent {
    outcome: Option<Result<u64, SendfileError>>,
    /// What `write` answered while the sendfile ran.
    write_during: Option<Result<(), WriteError>>,
    lost: bool,
}

/// Writes the header, sends the file, half-closes once `sendfile_completed` arrives.
struct FileSender {
    file: Option<Box<dyn SendfileSource>>,
    fallback: SendfileFallback,
    sent: Rc<RefCell<Sent>>,
}

impl Protocol for FileSender {
    fn connection_made(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        let h = ctx.stream();
        ctx.write(h, pattern(0, HEADER))?;
        let file = self.file.take().expect("one sendfile");
        ctx.sendfile(h, file, SKIP as u64, None, self.fallback)?;
        // 8 MiB cannot leave in one go (socket buffers, or the fallback's high water).
        self.sent.borrow_mut().write_during = Some(ctx.write_slice(h, b"!"));
        Ok(())
    }
    fn sendfile_completed(
        &mut self,
        ctx: &mut Ctx<'_>,
        h: StreamHandle,
        outcome: Result<u64, SendfileError>,
    ) -> CallbackResult {
        assert_eq!(h, ctx.stream());
        self.sent.borrow_mut().outcome = Some(outcome);
        ctx.write_eof(h)?;
        Ok(())
    }
    fn eof_received(&mut self, _: &mut Ctx<'_>) -> CallbackResult<bool> {
        Ok(false)
    }
    fn connection_lost(
        &mut self,
        _: &mut Ctx<'_>,
        _: Option<aioport::ConnectionError>,
    ) -> CallbackResult {
        self.sent.borrow_mut().lost = true;
        Ok(())
    }
}

fn run<D: Driver>(d: &mut D, scenario: &str, fallback: SendfileFallback) {
    let data = file_data();
    let file = match d.sendfile_file(&data) {
        Ok(f) => f,
        Err(_) if fallback == SendfileFallback::Force => Box::new(InMemory(data)),
        Err(why) => {
            println!("SKIPPED ({} {scenario}: {why})", D::NAME);
            return;
        }
    };
    let server: Shared = shared();
    let seen = server.clone();
    let l = d.listen(Box::new(move || {
        let mut r = Recorder::new(&seen);
        r.check_pattern = true;
        Box::new(r)
    }));
    let sent = Rc::new(RefCell::new(Sent::default()));
    let sender = FileSender { file: Some(file), fallback, sent: sent.clone() };
    d.connect(&l.endpoint, Box::new(sender)).expect("connect");
    d.run_until("the file sent and the peer's EOF", || {
        server.borrow().events.contains(&"eof") || server.borrow().is_lost()
    });
    let s = sent.borrow();
    assert_eq!(s.outcome, Some(Ok(FILE_BYTES as u64)), "sendfile_completed");
    assert_eq!(s.write_during, Some(Err(WriteError::SendfileInProgress)));
    let r = server.borrow();
    assert_eq!(r.wrong, None, "byte-exact");
    assert_eq!(r.received, HEADER + FILE_BYTES);
    assert!(r.events.contains(&"eof"), "EOF after the file: {:?}", r.events);
}

/// Zero-copy where the driver can (the fallback on the harness and under TLS).
pub fn sendfile_byte_exact<D: Driver>(d: &mut D) {
    run(d, "sendfile_byte_exact", SendfileFallback::Allow);
}

/// The read-and-write fallback, forced: on every driver.
pub fn sendfile_fallback_byte_exact<D: Driver>(d: &mut D) {
    run(d, "sendfile_fallback_byte_exact", SendfileFallback::Force);
}

/// A temporary file holding `data`, unlinked at once (the open descriptor keeps it): the
/// file the tokio and smol drivers send zero-copy.
pub(crate) fn unlinked_file(data: &[u8]) -> std::fs::File {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let path = std::env::temp_dir()
        .join(format!("aioport-conformance-sendfile-kit-{}-{n}", std::process::id()));
    std::fs::write(&path, data).expect("write the file to send");
    let file = std::fs::File::open(&path).expect("open the file to send");
    std::fs::remove_file(&path).expect("unlink the file to send");
    file
}
