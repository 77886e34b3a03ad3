//! Embedding the core by hand: two protocols over real `std::net::TcpStream`s on
//! 127.0.0.1, one thread per side, each with its own `Registry` and a hand-written
//! blocking loop — no async runtime, no poll crate. Timeouts come from
//! `Registry::poll_timeout()` through `set_read_timeout`, so the loop never spins.
//!
//! ```text
//! cargo run --example manual_loop
//! ```
//!
//! It prints every callback in order and exits 0.

use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use aioport::{CallbackResult, ConnectionError, Ctx, Extra, Handle, Io, Protocol, Registry};

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

/// The canonical driver loop, for one transport over a blocking socket.
fn run(side: &str, stream: TcpStream, protocol: Box<dyn Protocol>) -> io::Result<()> {
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
        // Writes first: the registry sends what it can at once; the rest waits for us.
        if !io.closed && reg.interest(h).is_ok_and(|i| i.write) {
            reg.on_writable(h, now, &mut io).ok();
            continue;
        }
        // Block in read() until data or the next timer (never zero: that means "forever").
        let wait = reg.poll_timeout().map(|t| t.saturating_duration_since(now));
        let wait = wait.map(|w| w.max(Duration::from_millis(1)));
        if !io.closed && reg.interest(h).is_ok_and(|i| i.read) {
            io.stream.set_read_timeout(wait.or(Some(Duration::from_secs(1))))?;
            reg.on_readable(h, Instant::now(), &mut io).ok();
        } else if let Some(w) = wait {
            thread::sleep(w);
        }
        reg.handle_timeout(Instant::now(), &mut io);
        while let Some(e) = reg.poll_error() {
            eprintln!("{side}: loop error: {e}");
        }
    }
    Ok(())
}

/// Echoes everything; closes when the client half-closes.
struct EchoServer;

impl Protocol for EchoServer {
    fn connection_made(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        println!("server: connection_made from {:?}", ctx.extra(ctx.stream())?.peername);
        Ok(())
    }
    fn data_received(&mut self, ctx: &mut Ctx<'_>, data: &[u8]) -> CallbackResult {
        println!("server: data_received {:?}", String::from_utf8_lossy(data));
        ctx.write_slice(ctx.stream(), data)?;
        Ok(())
    }
    fn eof_received(&mut self, _ctx: &mut Ctx<'_>) -> CallbackResult<bool> {
        println!("server: eof_received -> close after flushing");
        Ok(false)
    }
    fn connection_lost(
        &mut self,
        _ctx: &mut Ctx<'_>,
        err: Option<ConnectionError>,
    ) -> CallbackResult {
        println!("server: connection_lost({err:?})");
        Ok(())
    }
}

/// Sends three lines, one every 50 ms (a protocol timer), checks
/// the echoes, then half-closes and waits for the server to close.
struct Client {
    sent: u32,
    echoed: Vec<u8>,
    next_send: Option<Instant>,
}

const LINES: u32 = 3;

impl Protocol for Client {
    fn connection_made(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        println!("client: connection_made to {:?}", ctx.extra(ctx.stream())?.peername);
        self.next_send = Some(ctx.now() + Duration::from_millis(50));
        Ok(())
    }
    fn poll_timeout(&self) -> Option<Instant> {
        self.next_send
    }
    fn handle_timeout(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        self.sent += 1;
        let line = format!("line {}\n", self.sent);
        println!("client: handle_timeout -> write {:?}", line);
        ctx.write(ctx.stream(), line.into_bytes())?;
        self.next_send = (self.sent < LINES).then(|| ctx.now() + Duration::from_millis(50));
        Ok(())
    }
    fn data_received(&mut self, ctx: &mut Ctx<'_>, data: &[u8]) -> CallbackResult {
        println!("client: data_received {:?}", String::from_utf8_lossy(data));
        self.echoed.extend_from_slice(data);
        if self.echoed.iter().filter(|&&b| b == b'\n').count() == LINES as usize {
            println!("client: all {LINES} lines echoed -> write_eof");
            ctx.write_eof(ctx.stream())?;
        }
        Ok(())
    }
    fn eof_received(&mut self, _ctx: &mut Ctx<'_>) -> CallbackResult<bool> {
        println!("client: eof_received");
        Ok(false)
    }
    fn connection_lost(
        &mut self,
        _ctx: &mut Ctx<'_>,
        err: Option<ConnectionError>,
    ) -> CallbackResult {
        println!("client: connection_lost({err:?})");
        let want: String = (1..=LINES).map(|i| format!("line {i}\n")).collect();
        assert_eq!(self.echoed, want.as_bytes(), "every byte echoed, in order");
        Ok(())
    }
}

fn main() -> io::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let server = thread::spawn(move || -> io::Result<()> {
        let (stream, _) = listener.accept()?;
        run("server", stream, Box::new(EchoServer))
    });
    let stream = TcpStream::connect(addr)?;
    run("client", stream, Box::new(Client { sent: 0, echoed: Vec::new(), next_send: None }))?;
    server.join().expect("server thread panicked")?;
    println!("done: both loops finished");
    Ok(())
}
