//! The hand-written blocking driver of `manual_loop.rs`: one
//! `Registry` per thread over one blocking `TcpStream`, timeouts from `poll_timeout()`
//! through `set_read_timeout`, so the loop never spins.

use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use aioport::{Extra, Handle, Io, Protocol, Registry};

/// The driver's `Io`: one blocking socket whose reads time out (a timeout is `WouldBlock`).
struct Blocking {
    stream: TcpStream,
    closed: bool,
}

fn would_block(e: io::Error) -> io::Error {
    match e.kind() {
        io::ErrorKind::TimedOut => io::ErrorKind::WouldBlock.into(),
        _ => e,
    }
}

impl Io for Blocking {
    fn try_send(&mut self, _h: Handle, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.stream.write_vectored(bufs).map_err(would_block)
    }
    fn try_recv(&mut self, _h: Handle, buf: &mut [u8]) -> io::Result<usize> {
        self.stream.read(buf).map_err(would_block)
    }
    fn shutdown_write(&mut self, _h: Handle) -> io::Result<()> {
        self.stream.shutdown(Shutdown::Write)
    }
    fn close(&mut self, _h: Handle) {
        let _ = self.stream.shutdown(Shutdown::Both);
        self.closed = true;
    }
}

/// The canonical driver loop for one transport over a blocking socket. Transports served
/// by a protocol (the TLS engine's app transport) live in the same registry; the driver
/// never sees them, and their last callbacks are delivered by `dispatch`.
pub fn run(side: &str, stream: TcpStream, protocol: Box<dyn Protocol>) -> io::Result<()> {
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    let extra =
        Extra::default().with_peername(stream.peer_addr()?).with_sockname(stream.local_addr()?);
    let mut io = Blocking { stream, closed: false };
    let mut reg = Registry::new(Instant::now());
    let h = reg.insert_stream(protocol, extra).handle();
    reg.dispatch(Instant::now(), &mut io);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !reg.is_empty() {
        let now = Instant::now();
        assert!(now < deadline, "{side}: the exchange did not finish in 10 s");
        if !io.closed && reg.interest(h).is_ok_and(|i| i.write) {
            reg.on_writable(h, now, &mut io).ok();
            continue;
        }
        let wait = reg.poll_timeout().map(|t| t.saturating_duration_since(now));
        let wait = wait.map(|w| w.max(Duration::from_millis(1)));
        if !io.closed && reg.interest(h).is_ok_and(|i| i.read) {
            io.stream.set_read_timeout(wait.or(Some(Duration::from_secs(1))))?;
            reg.on_readable(h, Instant::now(), &mut io).ok();
        } else if let Some(w) = wait {
            thread::sleep(w);
        } else if io.closed {
            // Only the app transport's last callbacks remain: dispatch delivers them.
            reg.dispatch(Instant::now(), &mut io);
        }
        reg.handle_timeout(Instant::now(), &mut io);
        while let Some(e) = reg.poll_error() {
            eprintln!("{side}: loop error: {e}");
        }
    }
    Ok(())
}
