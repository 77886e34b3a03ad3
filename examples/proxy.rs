//! A TCP proxy with end-to-end back-pressure, on the built-in poll loop: each accepted
//! connection opens its upstream connection from `connection_made` and relays both ways
//! (`examples/support/relay.rs`: `pause_writing` on one side pauses reading on the other,
//! half-close is forwarded, a reset on either side aborts both).
//!
//! ```text
//! cargo run --release --example proxy                         # self-test: echo upstream, proxy, clients
//! cargo run --release --example proxy -- --clients 8 --mib 32
//! cargo run --release --example proxy -- --driver tokio         # the proxy on aioport-tokio
//! cargo run --release --example proxy -- --driver smol          # the proxy on aioport-smol
//! cargo run --release --example proxy -- --listen 127.0.0.1:8080 --upstream 127.0.0.1:9000
//! ```
//!
//! Switching driver changes the bootstrap only: the relay protocol is the same code.
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

/// Writes `total` bytes of the pattern as flow control allows.
struct PatternWriter {
    total: usize,
    sent: usize,
    chunk: Bytes,
}

impl PatternWriter {
    fn new(total: usize) -> Self {
        // 64 KiB of the pattern and 251 bytes more, so that each write can start where
        // the last one ended (offset `sent % 251`).
        let chunk: Vec<u8> = (0..64 * 1024 + 251).map(pattern_byte).collect();
        PatternWriter { total, sent: 0, chunk: Bytes::from(chunk) }
    }

    /// Writes until paused or done; true once everything was written.
    fn pump(&mut self, ctx: &mut Ctx<'_>) -> Result<bool, aioport::ProtocolError> {
        let h = ctx.stream();
        while self.sent < self.total && !ctx.is_writing_paused(h)? {
            let start = self.sent % 251;
            let n = (self.total - self.sent).min(64 * 1024);
            ctx.write(h, self.chunk.slice(start..start + n))?;
            self.sent += n;
        }
        Ok(self.sent == self.total)
    }
}

#[derive(Debug, Default)]
struct ClientState {
    received: usize,
    wrong_at: Option<usize>,
    lost: Option<Option<ConnectionError>>,
}

impl ClientState {
    /// Counts `data`, remembering where it first differs from the pattern.
    fn take(&mut self, data: &[u8]) {
        if self.wrong_at.is_none()
            && let Some(i) =
                data.iter().enumerate().position(|(i, &b)| b != pattern_byte(self.received + i))
        {
            self.wrong_at = Some(self.received + i);
        }
        self.received += data.len();
    }
}

/// Writes `total` bytes of the pattern, checks the echo, and closes once everything came
/// back.
struct Pusher {
    out: PatternWriter,
    state: Rc<RefCell<ClientState>>,
}

impl Protocol for Pusher {
    fn connection_made(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        self.out.pump(ctx).map(drop)
    }
    fn resume_writing(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        self.out.pump(ctx).map(drop)
    }
    fn data_received(&mut self, ctx: &mut Ctx<'_>, data: &[u8]) -> CallbackResult {
        let mut s = self.state.borrow_mut();
        s.take(data);
        if s.received >= self.out.total {
            ctx.close(ctx.stream())?;
        }
        Ok(())
    }
    fn connection_lost(&mut self, _: &mut Ctx<'_>, err: Option<ConnectionError>) -> CallbackResult {
        self.state.borrow_mut().lost = Some(err);
        Ok(())
    }
}

/// The upstream of the slow-client phase: sends its pattern, then closes.
struct Source(PatternWriter);

impl Source {
    fn pump(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        if self.0.pump(ctx)? {
            ctx.close(ctx.stream())?;
        }
        Ok(())
    }
}

impl Protocol for Source {
    fn connection_made(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        self.pump(ctx)
    }
    fn resume_writing(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        self.pump(ctx)
    }
}

/// Reads and checks the pattern; starts with reading paused.
struct SlowReader(Rc<RefCell<ClientState>>);

impl Protocol for SlowReader {
    fn connection_made(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        Ok(ctx.pause_reading(ctx.stream())?)
    }
    fn data_received(&mut self, _: &mut Ctx<'_>, data: &[u8]) -> CallbackResult {
        self.0.borrow_mut().take(data);
        Ok(())
    }
    fn connection_lost(&mut self, _: &mut Ctx<'_>, err: Option<ConnectionError>) -> CallbackResult {
        self.0.borrow_mut().lost = Some(err);
        Ok(())
    }
}

/// The process's peak resident set size (`VmHWM`), in KiB; 0 where unknown.
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// A client that does not read for a second while the upstream sends `bytes` through a
/// proxy: the relay pauses the upstream instead of buffering, so the process's peak RSS
/// stays flat however much is sent. Returns the relay's peak write buffer.
fn slow_client(lp: &mut Loop, bytes: usize) -> Result<usize, Box<dyn Error>> {
    let source = lp.create_server(
        "127.0.0.1:0",
        move || Box::new(Source(PatternWriter::new(bytes))),
        ServerOptions::default(),
    )?;
    let stats = Rc::new(RelayStats::default());
    let (to, s) = (Endpoint::Addr(source.addr()), stats.clone());
    let proxy =
        lp.create_server("127.0.0.1:0", move || relay(to.clone(), &s), ServerOptions::default())?;
    let state = Rc::new(RefCell::new(ClientState::default()));
    let h =
        lp.create_connection(Endpoint::Addr(proxy.addr()), Box::new(SlowReader(state.clone())))?;
    // A second of not reading: everything the upstream sends meanwhile backs up.
    let until = Instant::now() + Duration::from_secs(1);
    while Instant::now() < until {
        lp.run_once(Some(Duration::from_millis(20)))?;
    }
    let paused_at = state.borrow().received;
    lp.with(|ctx| ctx.resume_reading(h))?;
    lp.run_until_timeout(|| state.borrow().lost.is_some(), Duration::from_secs(120))?;
    lp.run_until_timeout(|| stats.open.get() == 0, Duration::from_secs(10))?;
    let s = state.borrow();
    if paused_at != 0
        || s.received != bytes
        || s.wrong_at.is_some()
        || !matches!(s.lost, Some(None))
    {
        return Err(format!("slow client: {} of {bytes} bytes, {:?}", s.received, s.lost).into());
    }
    source.close(lp);
    proxy.close(lp);
    Ok(stats.peak_buffered.get())
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
        let pusher = Pusher { out: PatternWriter::new(bytes), state: s.clone() };
        lp.create_connection(to.clone(), Box::new(pusher))?;
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
    driver: Driver,
}

/// Which driver runs the proxy (the clients always run on the poll loop).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Driver {
    Poll,
    Tokio,
    Smol,
}

/// What the proxy's loop reports once the clients are done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Summary {
    started: usize,
    open: usize,
    up_bytes: u64,
    down_bytes: u64,
    peak_buffered: usize,
    transports_left: usize,
}

impl Summary {
    fn of(stats: &RelayStats, transports_left: usize) -> Self {
        Summary {
            started: stats.started.get(),
            open: stats.open.get(),
            up_bytes: stats.up_bytes.get(),
            down_bytes: stats.down_bytes.get(),
            peak_buffered: stats.peak_buffered.get(),
            transports_left,
        }
    }
}

fn parse_args() -> Result<Args, Box<dyn Error>> {
    let mut a = Args { clients: 4, mib: 16, listen: None, upstream: None, driver: Driver::Poll };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--clients" => a.clients = value()?.parse()?,
            "--mib" => a.mib = value()?.parse()?,
            "--listen" => a.listen = Some(value()?),
            "--upstream" => a.upstream = Some(value()?),
            "--driver" => match value()?.as_str() {
                "poll" => a.driver = Driver::Poll,
                "tokio" => a.driver = Driver::Tokio,
                "smol" => a.driver = Driver::Smol,
                d => return Err(format!("--driver {d}: `poll`, `tokio` or `smol`").into()),
            },
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    Ok(a)
}

fn main() -> Result<(), Box<dyn Error>> {
    let args = parse_args()?;
    if let (Some(listen), Some(upstream)) = (&args.listen, &args.upstream) {
        return serve(listen, upstream.parse()?, &args);
    }
    // The clients always run on the poll loop of this thread.
    let mut lp = Loop::new()?;

    // First, while the process is small: a client that stops reading must not make the
    // relay buffer what the upstream sends.
    let slow_mib = 4 * args.mib.max(16);
    let rss_before = peak_rss_kib();
    let peak = slow_client(&mut lp, slow_mib << 20)?;
    println!(
        "slow client (poll loop proxy): {slow_mib} MiB sent through while it did not read for 1 s: \
         peak relay write buffer {} KiB; peak RSS {} KiB before, {} KiB after",
        peak >> 10,
        rss_before,
        peak_rss_kib()
    );
    if peak > HIGH_WATER + READ_SIZE {
        return Err("slow client: a relay write buffer went past high water plus one read".into());
    }

    // Then throughput through the proxy (on the chosen driver) against a direct echo.
    let bytes = args.mib << 20;
    let total_mib = (args.clients * bytes) as f64 / f64::from(1 << 20);
    let (through, direct, summary) = if args.driver != Driver::Poll {
        on_thread::self_test(&mut lp, &args)?
    } else {
        let stats = Rc::new(RelayStats::default());
        let (echo, proxy) = start_poll(&mut lp, &stats)?;
        println!(
            "proxy {proxy} → echo {echo} (poll loop): {} clients × {} MiB each way",
            args.clients, args.mib
        );
        let through = push_through(&mut lp, Endpoint::Addr(proxy), args.clients, bytes)?;
        let direct = push_through(&mut lp, Endpoint::Addr(echo), args.clients, bytes)?;
        lp.run_until_timeout(|| stats.open.get() == 0, Duration::from_secs(10))?;
        // Let the upstream connections' closes finish too.
        for _ in 0..100 {
            if lp.is_empty() {
                break;
            }
            lp.run_once(Some(Duration::from_millis(10)))?;
        }
        (through, direct, Summary::of(&stats, lp.len()))
    };
    report(&args, total_mib, through, direct, summary)
}

/// An echo server and a proxy relaying to it, on the poll loop; their addresses.
fn start_poll(
    lp: &mut Loop,
    stats: &Rc<RelayStats>,
) -> Result<(std::net::SocketAddr, std::net::SocketAddr), Box<dyn Error>> {
    let echo = lp.create_server("127.0.0.1:0", || Box::new(Echo), ServerOptions::default())?;
    let upstream = Endpoint::Addr(echo.addr());
    let s = stats.clone();
    let proxy = lp.create_server(
        "127.0.0.1:0",
        move || relay(upstream.clone(), &s),
        ServerOptions::default(),
    )?;
    Ok((echo.addr(), proxy.addr()))
}

/// `--listen` / `--upstream`: relays until SIGINT or SIGTERM.
fn serve(listen: &str, upstream: std::net::SocketAddr, args: &Args) -> Result<(), Box<dyn Error>> {
    if args.driver != Driver::Poll {
        return on_thread::serve(args.driver, listen, upstream);
    }
    let mut lp = Loop::new()?;
    let stats = Rc::new(RelayStats::default());
    let server = lp.create_server(
        listen,
        move || relay(Endpoint::Addr(upstream), &stats),
        ServerOptions::default(),
    )?;
    lp.stop_on_signals(&[aioport_poll::signal::SIGINT, aioport_poll::signal::SIGTERM])?;
    println!("proxy: {} → {upstream} (poll loop) until SIGINT/SIGTERM", server.addr());
    lp.run_forever()?;
    Ok(())
}

fn report(
    args: &Args,
    total_mib: f64,
    through: f64,
    direct: f64,
    s: Summary,
) -> Result<(), Box<dyn Error>> {
    let bound = HIGH_WATER + READ_SIZE;
    println!("through the proxy: {through:.2} s, {:.0} MiB/s echoed", total_mib / through);
    println!("direct to echo:    {direct:.2} s, {:.0} MiB/s echoed", total_mib / direct);
    println!("proxy / direct throughput: {:.2}", direct / through);
    println!(
        "relays: {} started, {} open; forwarded {} MiB up, {} MiB down; peak write buffer {} KiB (bound {} KiB)",
        s.started,
        s.open,
        s.up_bytes >> 20,
        s.down_bytes >> 20,
        s.peak_buffered >> 10,
        bound >> 10
    );
    let total = (args.clients * (args.mib << 20)) as u64;
    if s.transports_left != 0 || s.open != 0 {
        return Err(
            format!("{} transports left after every client closed", s.transports_left).into()
        );
    }
    if s.peak_buffered > bound {
        return Err("a proxy write buffer went past high water plus one read".into());
    }
    if s.up_bytes != total || s.down_bytes != total || s.started != args.clients {
        return Err("the proxy did not forward every byte".into());
    }
    Ok(())
}

/// The proxy and its echo upstream on a loop thread of another driver: `aioport-tokio`
/// (current-thread runtime) or `aioport-smol` (`block_on`). The relay and echo protocols
/// are the poll loop's, unchanged; only this bootstrap differs.
mod on_thread {
    use super::*;
    use std::net::SocketAddr;
    use std::sync::mpsc;

    type Started = Result<(SocketAddr, SocketAddr), String>;

    /// The loop body, the same for both drivers (their `Loop`s have the same async API):
    /// echo (unless serving) and proxy, run until stopped, then finish the relays' closes
    /// and report.
    macro_rules! body {
        ($lp:ident, $options:expr, $sleep:expr, $listen:ident, $started:ident, $done:ident) => {{
            let stats = Rc::new(RelayStats::default());
            let (echo_addr, listen_at) = match $listen {
                Some((at, upstream)) => (upstream, at),
                None => match $lp.create_server("127.0.0.1:0", || Box::new(Echo), $options).await {
                    Ok(echo) => (echo.addr(), "127.0.0.1:0".to_owned()),
                    Err(e) => return drop($started.send(Err(e.to_string()))),
                },
            };
            let s = stats.clone();
            let factory = move || relay(Endpoint::Addr(echo_addr), &s);
            let at: SocketAddr = match listen_at.parse() {
                Ok(at) => at,
                Err(e) => return drop($started.send(Err(format!("{listen_at}: {e}")))),
            };
            match $lp.create_server(at, factory, $options).await {
                Ok(proxy) => drop($started.send(Ok((echo_addr, proxy.addr())))),
                Err(e) => return drop($started.send(Err(e.to_string()))),
            }
            $lp.run_forever().await;
            // Stopped once the clients are done: let the relays' last closes finish.
            let _ = $lp.run_until_timeout(|| stats.open.get() == 0, Duration::from_secs(10)).await;
            for _ in 0..100 {
                if $lp.is_empty() {
                    break;
                }
                $sleep.await;
                $lp.run_once().await;
            }
            let _ = $done.send(Summary::of(&stats, $lp.len()));
        }};
    }

    /// A running loop thread.
    enum Thread {
        Tokio(aioport_tokio::LoopThread),
        Smol(aioport_smol::LoopHandle, std::thread::JoinHandle<()>),
    }

    impl Thread {
        fn stop(&self) {
            match self {
                Thread::Tokio(t) => t.stop(),
                Thread::Smol(h, _) => h.stop(),
            }
        }

        fn join(self) -> Result<(), Box<dyn Error>> {
            let r = match self {
                Thread::Tokio(t) => t.join(),
                Thread::Smol(_, t) => t.join(),
            };
            r.map_err(|_| "the proxy thread panicked".into())
        }
    }

    fn start(
        driver: Driver,
        listen: Option<(String, SocketAddr)>,
        started: mpsc::Sender<Started>,
        done: mpsc::Sender<Summary>,
    ) -> Result<Thread, Box<dyn Error>> {
        let pause = Duration::from_millis(10);
        match driver {
            Driver::Poll => Err("the poll loop runs on the main thread".into()),
            Driver::Tokio => {
                let runtime = aioport_tokio::Runtime::CurrentThread;
                let main = move |mut lp: aioport_tokio::Loop| async move {
                    let options = aioport_tokio::ServerOptions::default;
                    body!(lp, options(), tokio::time::sleep(pause), listen, started, done)
                };
                Ok(Thread::Tokio(aioport_tokio::spawn_loop(runtime, main)?))
            }
            Driver::Smol => {
                let (handle_tx, handle_rx) = mpsc::channel();
                let run = move || {
                    async_io::block_on(async move {
                        let mut lp = aioport_smol::Loop::new();
                        let _ = handle_tx.send(lp.handle());
                        let options = aioport_smol::ServerOptions::default;
                        body!(lp, options(), async_io::Timer::after(pause), listen, started, done)
                    })
                };
                let thread =
                    std::thread::Builder::new().name("aioport-smol loop".into()).spawn(run)?;
                Ok(Thread::Smol(handle_rx.recv()?, thread))
            }
        }
    }

    pub(super) fn self_test(
        lp: &mut Loop,
        args: &Args,
    ) -> Result<(f64, f64, Summary), Box<dyn Error>> {
        let (started_tx, started) = mpsc::channel();
        let (done_tx, done) = mpsc::channel();
        let thread = start(args.driver, None, started_tx, done_tx)?;
        let (echo, proxy) = started.recv()??;
        println!(
            "proxy {proxy} → echo {echo} ({:?} loop thread): {} clients × {} MiB each way",
            args.driver, args.clients, args.mib
        );
        let bytes = args.mib << 20;
        let through = push_through(lp, Endpoint::Addr(proxy), args.clients, bytes)?;
        let direct = push_through(lp, Endpoint::Addr(echo), args.clients, bytes)?;
        // The clients are done: the loop finishes its closes, then reports.
        thread.stop();
        let summary = done.recv_timeout(Duration::from_secs(30))?;
        thread.join()?;
        Ok((through, direct, summary))
    }

    pub(super) fn serve(
        driver: Driver,
        listen: &str,
        upstream: SocketAddr,
    ) -> Result<(), Box<dyn Error>> {
        let (started_tx, started) = mpsc::channel();
        let (done_tx, _done) = mpsc::channel();
        let thread = start(driver, Some((listen.to_owned(), upstream)), started_tx, done_tx)?;
        let (_, proxy) = started.recv()??;
        println!("proxy: {proxy} → {upstream} ({driver:?}) until killed");
        thread.join()
    }
}
