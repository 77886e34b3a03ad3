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

use std::io;
use std::net::{TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use aioport::{CallbackResult, ConnectionError, Ctx, Protocol};

#[path = "support/blocking.rs"]
mod blocking;

use blocking::run;

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
