//! A TCP proxy with end-to-end back-pressure, on the built-in poll loop: each accepted
//! connection opens its upstream connection from `connection_made` and relays both ways
//! (`examples/support/relay.rs`: `pause_writing` on one side pauses reading on the other,
//! half-close is forwarded, a reset on either side aborts both).
//!
//! ```text
//! cargo run --release --example proxy                         # self-test: echo upstream, proxy, clients
//! cargo run --release --example proxy -- --clients 8 --mib 32
//! cargo run --release --example proxy -- --listen 127.0.0.1:8080 --upstream 127.0.0.1:9000
//! ```
//!
//! The self-test starts an echo server and the proxy on one loop, then has clients push a
//! byte pattern through the proxy and check every echoed byte; then the same clients talk
//! to the echo server directly, in the same run, for the throughput ratio. Exits 0 when
//! every byte came back in order and the proxy's buffers stayed within their bound.

#[path = "support/relay.rs"]
mod relay;

use std::cell::RefCell;
use std::error::Error;
use std::rc::Rc;
use std::time::{Duration, Instant};

use aioport::{CallbackResult, ConnectionError, Ctx, Endpoint, Protocol};
use aioport_poll::{Loop, ServerOptions};
use bytes::Bytes;

use relay::{RelayStats, relay};

/// The default high-water mark and the core's read size: the bound on one side's buffer.
const HIGH_WATER: usize = 64 * 1024;
const READ_SIZE: usize = 256 * 1024;

/// Echoes everything; stops reading while its peer does not keep up.
struct Echo;

impl Protocol for Echo {
    fn data_received(&mut self, ctx: &mut Ctx<'_>, data: &[u8]) -> CallbackResult {
        Ok(ctx.write_slice(ctx.stream(), data)?)
    }
    fn pause_writing(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        Ok(ctx.pause_reading(ctx.stream())?)
    }
    fn resume_writing(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        Ok(ctx.resume_reading(ctx.stream())?)
    }
}

fn pattern_byte(i: usize) -> u8 {
    (i % 251) as u8
}

/// Writes `total` bytes of the pattern as flow control allows, checks the echo, and
/// closes once everything came back.
struct Pusher {
    total: usize,
    chunk: Bytes,
    sent: usize,
    state: Rc<RefCell<ClientState>>,
}

#[derive(Debug, Default)]
struct ClientState {
    received: usize,
    wrong_at: Option<usize>,
    lost: Option<Option<ConnectionError>>,
}

impl Pusher {
    fn new(total: usize, state: Rc<RefCell<ClientState>>) -> Self {
        // 64 KiB of the pattern; 251 divides neither, so each write starts where the
        // last one ended (offset `sent`).
        let chunk: Vec<u8> = (0..64 * 1024 + 251).map(pattern_byte).collect();
        Pusher { total, chunk: Bytes::from(chunk), sent: 0, state }
    }

    fn pump(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        let h = ctx.stream();
        while self.sent < self.total && !ctx.is_writing_paused(h)? {
            let start = self.sent % 251;
            let n = (self.total - self.sent).min(64 * 1024);
            ctx.write(h, self.chunk.slice(start..start + n))?;
            self.sent += n;
        }
        Ok(())
    }
}

impl Protocol for Pusher {
    fn connection_made(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        self.pump(ctx)
    }
    fn resume_writing(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        self.pump(ctx)
    }
    fn data_received(&mut self, ctx: &mut Ctx<'_>, data: &[u8]) -> CallbackResult {
        let mut s = self.state.borrow_mut();
        if s.wrong_at.is_none()
            && let Some(i) =
                data.iter().enumerate().position(|(i, &b)| b != pattern_byte(s.received + i))
        {
            s.wrong_at = Some(s.received + i);
        }
        s.received += data.len();
        if s.received >= self.total {
            ctx.close(ctx.stream())?;
        }
        Ok(())
    }
    fn connection_lost(&mut self, _: &mut Ctx<'_>, err: Option<ConnectionError>) -> CallbackResult {
        self.state.borrow_mut().lost = Some(err);
        Ok(())
    }
}

/// Connects `clients` pushers to `to`, runs until all are done, returns the seconds taken.
fn push_through(
    lp: &mut Loop,
    to: Endpoint,
    clients: usize,
    bytes: usize,
) -> Result<f64, Box<dyn Error>> {
    let states: Vec<_> =
        (0..clients).map(|_| Rc::new(RefCell::new(ClientState::default()))).collect();
    let start = Instant::now();
    for s in &states {
        lp.create_connection(to.clone(), Box::new(Pusher::new(bytes, s.clone())))?;
    }
    lp.run_until_timeout(
        || states.iter().all(|s| s.borrow().lost.is_some()),
        Duration::from_secs(300),
    )?;
    let secs = start.elapsed().as_secs_f64();
    for (i, s) in states.iter().enumerate() {
        let s = s.borrow();
        if let Some(at) = s.wrong_at {
            return Err(format!("client {i}: wrong byte at offset {at}").into());
        }
        if s.received != bytes || !matches!(s.lost, Some(None)) {
            return Err(format!(
                "client {i}: {} of {bytes} bytes back, lost {:?}",
                s.received, s.lost
            )
            .into());
        }
    }
    Ok(secs)
}

struct Args {
    clients: usize,
    mib: usize,
    listen: Option<String>,
    upstream: Option<String>,
}

fn parse_args() -> Result<Args, Box<dyn Error>> {
    let mut a = Args { clients: 4, mib: 16, listen: None, upstream: None };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--clients" => a.clients = value()?.parse()?,
            "--mib" => a.mib = value()?.parse()?,
            "--listen" => a.listen = Some(value()?),
            "--upstream" => a.upstream = Some(value()?),
            "--driver" => {
                let d = value()?;
                if d != "poll" {
                    return Err(format!("--driver {d}: this build's proxy runs on `poll`").into());
                }
            }
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    Ok(a)
}

fn main() -> Result<(), Box<dyn Error>> {
    let args = parse_args()?;
    let mut lp = Loop::new()?;
    let stats = Rc::new(RelayStats::default());

    if let (Some(listen), Some(upstream)) = (&args.listen, &args.upstream) {
        let upstream: std::net::SocketAddr = upstream.parse()?;
        let s = stats.clone();
        let server = lp.create_server(
            listen.as_str(),
            move || relay(Endpoint::Addr(upstream), &s),
            ServerOptions::default(),
        )?;
        println!("proxy: {} → {upstream}", server.addr());
        lp.run_forever()?;
        return Ok(());
    }

    let echo = lp.create_server("127.0.0.1:0", || Box::new(Echo), ServerOptions::default())?;
    let upstream = Endpoint::Addr(echo.addr());
    let s = stats.clone();
    let proxy = lp.create_server(
        "127.0.0.1:0",
        move || relay(upstream.clone(), &s),
        ServerOptions::default(),
    )?;
    let bytes = args.mib << 20;
    let total_mib = (args.clients * bytes) as f64 / f64::from(1 << 20);
    println!(
        "proxy {} → echo {}: {} clients × {} MiB each way",
        proxy.addr(),
        echo.addr(),
        args.clients,
        args.mib
    );

    let through = push_through(&mut lp, Endpoint::Addr(proxy.addr()), args.clients, bytes)?;
    let direct = push_through(&mut lp, Endpoint::Addr(echo.addr()), args.clients, bytes)?;
    lp.run_until_timeout(|| stats.open.get() == 0, Duration::from_secs(10))?;
    // Let the upstream sides' closes finish too.
    for _ in 0..100 {
        if lp.is_empty() {
            break;
        }
        lp.run_once(Some(Duration::from_millis(10)))?;
    }

    let bound = HIGH_WATER + READ_SIZE;
    println!("through the proxy: {:.1} s, {:.0} MiB/s echoed", through, total_mib / through);
    println!("direct to echo:    {:.1} s, {:.0} MiB/s echoed", direct, total_mib / direct);
    println!("proxy / direct throughput: {:.2}", direct / through);
    println!(
        "relays: {} started, {} open; forwarded {} MiB up, {} MiB down; peak write buffer {} KiB (bound {} KiB)",
        stats.started.get(),
        stats.open.get(),
        stats.up_bytes.get() >> 20,
        stats.down_bytes.get() >> 20,
        stats.peak_buffered.get() >> 10,
        bound >> 10
    );
    if !lp.is_empty() {
        return Err(format!("{} transports left after every client closed", lp.len()).into());
    }
    if stats.peak_buffered.get() > bound {
        return Err("a proxy write buffer went past high water plus one read".into());
    }
    if stats.up_bytes.get() != (args.clients * bytes) as u64
        || stats.down_bytes.get() != (args.clients * bytes) as u64
    {
        return Err("the proxy did not forward every byte".into());
    }
    Ok(())
}
