//! The main demo: an echo server on the built-in poll loop (`aioport-poll`) with asyncio's
//! flow control, and clients that push several MiB each and verify every byte.
//!
//! ```text
//! cargo run --release --example echo                      # 1 server loop, 4 clients × 8 MiB
//! cargo run --release --example echo -- --threads 2       # 2 server loops sharing the port (SO_REUSEPORT)
//! cargo run --release --example echo -- --same-loop       # clients on the server's loop
//! cargo run --release --example echo -- --clients 8 --mib 16
//! cargo run --release --example echo -- --port 25000      # only serve 127.0.0.1:25000 until SIGINT/SIGTERM (exit 0)
//! cargo run --release --example echo -- --driver tokio    # the same server protocol on aioport-tokio
//! cargo run --release --example echo -- --driver smol     # … and on aioport-smol
//! ```
//!
//! `--driver poll|tokio|tokio-mt|tokio-handle|smol` picks the server loops' driver: the
//! built-in poll loop (default); `aioport-tokio` on a current-thread runtime per loop
//! thread (`tokio`: `--threads` loops, default 1); `aioport-tokio` thread-per-core
//! (`tokio-mt`: `aioport_tokio::spawn_server`, one loop and current-thread runtime per
//! core unless `--threads` says otherwise, sharing the port with `SO_REUSEPORT`);
//! `aioport-tokio` embedded in one multi-thread runtime (`tokio-handle`: each loop in a
//! `LocalSet` on its own thread, the runtime's workers driving I/O); or `aioport-smol`
//! (`block_on` per loop thread). Only the bootstrap differs; the clients run on the poll
//! loop.
//!
//! The server's protocol stops reading while its write buffer is above the high-water mark
//! (`pause_reading()` in `pause_writing()`, `resume_reading()` in `resume_writing()`), so a
//! client that does not read cannot make it buffer more than one read past high water.
//! Each client pauses its own reading for 30 ms after connecting, so that the flow-control
//! events show: the server's write buffer fills, it pauses, the client's sends back up,
//! it pauses too, and both resume once the client reads again. Exits 0 when every byte
//! came back in order.

use std::cell::{Cell, RefCell};
use std::error::Error;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use aioport::{CallbackResult, ConnectionError, Ctx, Endpoint, Protocol};
use aioport_poll::{Loop, LoopHandle, ServerOptions, signal};
use bytes::Bytes;

/// Flow-control events of all server connections, across server threads.
#[derive(Default)]
struct ServerStats {
    pauses: AtomicU64,
    resumes: AtomicU64,
}

/// Echoes everything; stops reading while the peer does not keep up.
struct EchoServer {
    stats: Arc<ServerStats>,
}

impl Protocol for EchoServer {
    fn data_received(&mut self, ctx: &mut Ctx<'_>, data: &[u8]) -> CallbackResult {
        ctx.write_slice(ctx.stream(), data)?;
        Ok(())
    }
    fn pause_writing(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        self.stats.pauses.fetch_add(1, Ordering::Relaxed);
        Ok(ctx.pause_reading(ctx.stream())?)
    }
    fn resume_writing(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        self.stats.resumes.fetch_add(1, Ordering::Relaxed);
        Ok(ctx.resume_reading(ctx.stream())?)
    }
}

// ---------------------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------------------

/// The stream's bytes repeat with this (prime) period; a reference buffer holds one
/// period plus a maximal read, so checking a read is one slice comparison.
const PERIOD: usize = 65_521;
const CHUNK: usize = 64 * 1024;

fn reference() -> Bytes {
    let mut x: u32 = 0x9e37_79b9;
    let period: Vec<u8> = (0..PERIOD)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect();
    let len = PERIOD + 256 * 1024 + CHUNK;
    Bytes::from(period.iter().copied().cycle().take(len).collect::<Vec<u8>>())
}

#[derive(Default)]
struct ClientReport {
    elapsed: Option<Duration>,
    pauses: u32,
    resumes: u32,
    error: Option<String>,
}

struct Client {
    total: usize,
    sent: usize,
    received: usize,
    reference: Bytes,
    started: Instant,
    report: Rc<RefCell<ClientReport>>,
    finished: Rc<Cell<usize>>,
}

impl Client {
    /// Writes until the transport pauses us or everything is sent.
    fn fill(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        let h = ctx.stream();
        while self.sent < self.total && !ctx.is_writing_paused(h)? {
            let n = CHUNK.min(self.total - self.sent);
            let off = self.sent % PERIOD;
            ctx.write(h, self.reference.slice(off..off + n))?;
            self.sent += n;
        }
        Ok(())
    }

    fn fail(&mut self, ctx: &mut Ctx<'_>, why: String) -> CallbackResult {
        self.report.borrow_mut().error.get_or_insert(why);
        ctx.abort(ctx.stream())?;
        Ok(())
    }
}

impl Protocol for Client {
    fn connection_made(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        self.started = ctx.now();
        let h = ctx.stream();
        // Not reading for a moment makes the server's (and then our) flow control act.
        ctx.pause_reading(h)?;
        ctx.call_later(Duration::from_millis(30), move |ctx| {
            let _ = ctx.resume_reading(h);
        })?;
        self.fill(ctx)
    }
    fn data_received(&mut self, ctx: &mut Ctx<'_>, data: &[u8]) -> CallbackResult {
        let off = self.received % PERIOD;
        if self.received + data.len() > self.total || data != &self.reference[off..off + data.len()]
        {
            let at = self.received;
            return self.fail(ctx, format!("wrong bytes in the echo at offset {at}"));
        }
        self.received += data.len();
        if self.received == self.total {
            self.report.borrow_mut().elapsed = Some(ctx.now() - self.started);
            ctx.close(ctx.stream())?;
        }
        Ok(())
    }
    fn pause_writing(&mut self, _ctx: &mut Ctx<'_>) -> CallbackResult {
        self.report.borrow_mut().pauses += 1;
        Ok(())
    }
    fn resume_writing(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        self.report.borrow_mut().resumes += 1;
        self.fill(ctx)
    }
    fn connection_lost(
        &mut self,
        ctx: &mut Ctx<'_>,
        err: Option<ConnectionError>,
    ) -> CallbackResult {
        if self.received != self.total {
            let why = format!("lost after {} of {} bytes: {err:?}", self.received, self.total);
            self.report.borrow_mut().error.get_or_insert(why);
        }
        let _ = ctx;
        self.finished.set(self.finished.get() + 1);
        Ok(())
    }
}

/// Runs `clients` clients on `lp` against `addr`; returns their reports.
fn run_clients(
    lp: &mut Loop,
    addr: SocketAddr,
    clients: usize,
    bytes: usize,
) -> Result<(Vec<ClientReport>, Duration), Box<dyn Error>> {
    let reference = reference();
    let finished = Rc::new(Cell::new(0));
    let reports: Vec<_> =
        (0..clients).map(|_| Rc::new(RefCell::new(ClientReport::default()))).collect();
    let t0 = Instant::now();
    for report in &reports {
        let client = Client {
            total: bytes,
            sent: 0,
            received: 0,
            reference: reference.clone(),
            started: t0,
            report: report.clone(),
            finished: finished.clone(),
        };
        lp.create_connection(Endpoint::Addr(addr), Box::new(client))?;
    }
    let limit = Duration::from_secs(120);
    lp.run_until_timeout(|| finished.get() == clients, limit)?;
    let elapsed = t0.elapsed();
    let reports = reports.into_iter().map(|r| r.take()).collect();
    Ok((reports, elapsed))
}

// ---------------------------------------------------------------------------------------
// Servers
// ---------------------------------------------------------------------------------------

fn serve(
    lp: &mut Loop,
    addr: SocketAddr,
    reuse_port: bool,
    stats: &Arc<ServerStats>,
) -> Result<SocketAddr, Box<dyn Error>> {
    let stats = stats.clone();
    let factory = move || -> Box<dyn Protocol> { Box::new(EchoServer { stats: stats.clone() }) };
    let options = ServerOptions::default().backlog(4096).reuse_port(reuse_port);
    Ok(lp.create_server(addr, factory, options)?.addr())
}

/// A server loop's thread and the handle that stops it.
type ServerThread = (LoopHandle, thread::JoinHandle<()>);

/// Starts `threads` server loops on `addr` (the first picks the port if it is 0).
fn spawn_servers(
    threads: usize,
    addr: SocketAddr,
    stats: &Arc<ServerStats>,
) -> Result<(SocketAddr, Vec<ServerThread>), Box<dyn Error>> {
    let mut addr = addr;
    let mut servers = Vec::new();
    for _ in 0..threads {
        let (tx, rx) = std::sync::mpsc::channel();
        let stats = stats.clone();
        let t = thread::spawn(move || {
            let setup = Loop::new().map_err(|e| e.to_string()).and_then(|mut lp| {
                let bound = serve(&mut lp, addr, threads > 1, &stats).map_err(|e| e.to_string())?;
                Ok((lp, bound))
            });
            match setup {
                Ok((mut lp, bound)) => {
                    let _ = tx.send(Ok((lp.handle(), bound)));
                    if let Err(e) = lp.run_forever() {
                        eprintln!("server loop failed: {e}");
                    }
                }
                Err(e) => drop(tx.send(Err(e))),
            }
        });
        let (handle, bound) = rx.recv()??;
        addr = bound;
        servers.push((handle, t));
    }
    Ok((addr, servers))
}

/// Which driver runs the server loops.
#[derive(Clone, Copy, PartialEq, Eq)]
enum DriverKind {
    Poll,
    Tokio,
    TokioMt,
    TokioHandle,
    Smol,
}

struct Args {
    driver: DriverKind,
    threads: usize,
    /// `--threads` was given (`tokio-mt` otherwise runs one loop per core).
    threads_given: bool,
    clients: usize,
    mib: usize,
    port: Option<u16>,
    same_loop: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        driver: DriverKind::Poll,
        threads: 1,
        threads_given: false,
        clients: 4,
        mib: 8,
        port: None,
        same_loop: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = |name: &str| -> Result<usize, String> {
            it.next().and_then(|v| v.parse().ok()).ok_or(format!("{name} needs a number"))
        };
        match a.as_str() {
            "--threads" => {
                args.threads = value("--threads")?.max(1);
                args.threads_given = true;
            }
            "--clients" => args.clients = value("--clients")?.max(1),
            "--mib" => args.mib = value("--mib")?.max(1),
            "--port" => {
                args.port = Some(u16::try_from(value("--port")?).map_err(|e| e.to_string())?)
            }
            "--same-loop" => args.same_loop = true,
            "--driver" => {
                args.driver = match it.next().as_deref() {
                    Some("poll") => DriverKind::Poll,
                    Some("tokio") => DriverKind::Tokio,
                    Some("tokio-mt") => DriverKind::TokioMt,
                    Some("tokio-handle") => DriverKind::TokioHandle,
                    Some("smol") => DriverKind::Smol,
                    _ => {
                        return Err(
                            "--driver needs poll, tokio, tokio-mt, tokio-handle or smol".into()
                        );
                    }
                }
            }
            _ => {
                return Err(format!(
                    "unknown argument {a:?}\nusage: echo [--threads N] [--clients N] [--mib N] \
                     [--same-loop] [--port PORT] [--driver poll|tokio|tokio-mt|tokio-handle|smol]"
                ));
            }
        }
    }
    Ok(args)
}

fn main() -> Result<(), Box<dyn Error>> {
    let args = parse_args()?;
    let stats = Arc::new(ServerStats::default());
    if args.driver != DriverKind::Poll && args.port.is_some() {
        return run_elsewhere(&args, &stats).map(drop);
    }

    if let Some(port) = args.port {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        eprintln!("echo: {} loop(s) serving {addr} until SIGINT/SIGTERM", args.threads);
        // SIGINT/SIGTERM stop the loop cleanly: main returns and the process exits 0.
        let stop_on = [signal::SIGINT, signal::SIGTERM];
        if args.threads == 1 {
            let mut lp = Loop::new()?;
            serve(&mut lp, addr, false, &stats)?;
            lp.stop_on_signals(&stop_on)?;
            lp.run_forever()?;
        } else {
            let (_, servers) = spawn_servers(args.threads, addr, &stats)?;
            // The main thread's loop only waits for the signal, then stops the others.
            let mut lp = Loop::new()?;
            lp.stop_on_signals(&stop_on)?;
            lp.run_forever()?;
            for (handle, _) in &servers {
                handle.stop();
            }
            for (_, t) in servers {
                t.join().map_err(|_| "server thread panicked")?;
            }
        }
        eprintln!("echo: stopped by signal");
        return Ok(());
    }

    let bytes = args.mib << 20;
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    let mut lp = Loop::new()?;
    let (reports, elapsed) = if args.driver != DriverKind::Poll {
        run_elsewhere(&args, &stats)?.ok_or("no clients ran")?
    } else if args.same_loop {
        let addr = serve(&mut lp, any, false, &stats)?;
        println!("echo server on {addr}; {} clients on the same loop", args.clients);
        run_clients(&mut lp, addr, args.clients, bytes)?
    } else {
        let (addr, servers) = spawn_servers(args.threads, any, &stats)?;
        println!(
            "echo server on {addr} ({} loop thread{}{}); {} clients on the main thread's loop",
            args.threads,
            if args.threads == 1 { "" } else { "s" },
            if args.threads == 1 { "" } else { ", SO_REUSEPORT" },
            args.clients
        );
        let result = run_clients(&mut lp, addr, args.clients, bytes);
        for (handle, _) in &servers {
            handle.stop();
        }
        for (_, t) in servers {
            t.join().map_err(|_| "server thread panicked")?;
        }
        result?
    };

    let mut failed = false;
    for (i, r) in reports.iter().enumerate() {
        match (&r.error, r.elapsed) {
            (None, Some(t)) => println!(
                "client {i}: {} MiB echoed and verified in {:.0} ms ({:.0} MiB/s); \
                 pause_writing ×{}, resume_writing ×{}",
                args.mib,
                t.as_secs_f64() * 1e3,
                args.mib as f64 / t.as_secs_f64(),
                r.pauses,
                r.resumes
            ),
            (error, _) => {
                failed = true;
                println!("client {i}: FAILED: {}", error.as_deref().unwrap_or("did not finish"));
            }
        }
    }
    let total = (bytes * args.clients) as f64 / (1 << 20) as f64;
    println!(
        "total: {total:.0} MiB echoed in {:.2} s: {:.0} MiB/s each way",
        elapsed.as_secs_f64(),
        total / elapsed.as_secs_f64()
    );
    println!(
        "server flow control: pause_writing → pause_reading ×{}, resume_writing → resume_reading ×{}",
        stats.pauses.load(Ordering::Relaxed),
        stats.resumes.load(Ordering::Relaxed)
    );
    if failed {
        return Err("some clients failed".into());
    }
    println!("ok: every byte came back in order");
    Ok(())
}

/// The clients' reports and how long they took.
type ClientsRun = (Vec<ClientReport>, Duration);

/// The servers on another driver than the poll loop: see [`tokio_servers::run`].
fn run_elsewhere(
    args: &Args,
    stats: &Arc<ServerStats>,
) -> Result<Option<ClientsRun>, Box<dyn Error>> {
    match args.driver {
        DriverKind::Smol => smol_servers::run(args, stats),
        _ => tokio_servers::run(args, stats),
    }
}

// ---------------------------------------------------------------------------------------
// The same servers on aioport-tokio (only the bootstrap differs)
// ---------------------------------------------------------------------------------------

mod tokio_servers {
    use super::*;
    use aioport_tokio::{LoopThread, Runtime, ServerOptions, loops_per_core, spawn_loop};

    /// The clients' reports and how long they took.
    type ClientsRun = (Vec<ClientReport>, Duration);

    /// Running servers: a thread-per-core group, or loops embedded in a multi-thread
    /// runtime (`--driver tokio-handle`).
    enum Servers {
        Group(aioport_tokio::ServerGroup),
        Embedded(Vec<LoopThread>, tokio::runtime::Runtime),
    }

    impl Servers {
        fn stop(&self) {
            match self {
                Servers::Group(g) => g.stop(),
                Servers::Embedded(loops, _) => loops.iter().for_each(LoopThread::stop),
            }
        }

        fn join(self) -> Result<(), Box<dyn Error>> {
            match self {
                Servers::Group(g) => g.join().map_err(|_| "server thread panicked")?,
                Servers::Embedded(loops, _runtime) => {
                    for t in loops {
                        t.join().map_err(|_| "server thread panicked")?;
                    }
                }
            }
            Ok(())
        }
    }

    /// How many loops serve: `--threads` if given; for `tokio-mt` one per core.
    fn loops(args: &Args) -> usize {
        match args.driver {
            DriverKind::TokioMt if !args.threads_given => loops_per_core().get(),
            _ => args.threads,
        }
    }

    /// Starts the server loops on `addr` (the first picks the port if it is 0).
    fn spawn(
        args: &Args,
        addr: SocketAddr,
        stats: &Arc<ServerStats>,
    ) -> Result<(SocketAddr, Servers), Box<dyn Error>> {
        let n = loops(args);
        let options = ServerOptions::default().backlog(4096).reuse_port(n > 1);
        let stats = stats.clone();
        let factory =
            move || -> Box<dyn Protocol> { Box::new(EchoServer { stats: stats.clone() }) };
        if args.driver != DriverKind::TokioHandle {
            // tokio and tokio-mt: thread-per-core, a current-thread runtime per loop.
            let n = std::num::NonZeroUsize::new(n).unwrap_or(std::num::NonZeroUsize::MIN);
            let group = aioport_tokio::spawn_server(addr, n, options, factory)?;
            return Ok((group.addr(), Servers::Group(group)));
        }
        // tokio-handle: one multi-thread runtime (a worker per core) drives I/O and
        // timers; each loop runs in a LocalSet on a thread of its own.
        let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
        let factory = Arc::new(factory);
        let mut addr = addr;
        let mut loops = Vec::new();
        for _ in 0..n {
            let (tx, rx) = std::sync::mpsc::channel();
            let factory = factory.clone();
            let main = move |mut lp: aioport_tokio::Loop| async move {
                match lp.create_server(addr, move || factory(), options).await {
                    Ok(server) => {
                        let _ = tx.send(Ok(server.addr()));
                        lp.run_forever().await;
                    }
                    Err(e) => drop(tx.send(Err(e.to_string()))),
                }
            };
            loops.push(spawn_loop(Runtime::Handle(rt.handle().clone()), main)?);
            addr = rx.recv()??;
        }
        Ok((addr, Servers::Embedded(loops, rt)))
    }

    /// With `--port`: serves until killed (`None`); otherwise runs the clients on a poll
    /// loop against the tokio servers and returns their reports.
    pub(super) fn run(
        args: &Args,
        stats: &Arc<ServerStats>,
    ) -> Result<Option<ClientsRun>, Box<dyn Error>> {
        let n = loops(args);
        if let Some(port) = args.port {
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            eprintln!("echo: {n} aioport-tokio loop(s) serving {addr} until killed");
            let (_, servers) = spawn(args, addr, stats)?;
            return servers.join().map(|()| None);
        }
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        let (addr, servers) = spawn(args, any, stats)?;
        println!(
            "echo server on {addr} ({n} aioport-tokio loop thread{}); {} clients on the main \
             thread's poll loop",
            if n == 1 { "" } else { "s" },
            args.clients
        );
        let mut lp = Loop::new()?;
        let result = run_clients(&mut lp, addr, args.clients, args.mib << 20);
        servers.stop();
        servers.join()?;
        Ok(Some(result?))
    }
}

// ---------------------------------------------------------------------------------------
// The same servers on aioport-smol (only the bootstrap differs)
// ---------------------------------------------------------------------------------------

mod smol_servers {
    use super::*;
    use aioport_smol::LoopHandle;

    type Servers = Vec<(LoopHandle, std::thread::JoinHandle<()>)>;

    /// Starts `threads` server loops on `addr` (the first picks the port if it is 0), each
    /// on its own thread under `block_on` (smol's reactor is shared).
    fn spawn(
        threads: usize,
        addr: SocketAddr,
        stats: &Arc<ServerStats>,
    ) -> Result<(SocketAddr, Servers), Box<dyn Error>> {
        let mut addr = addr;
        let mut servers = Vec::new();
        for _ in 0..threads {
            let (tx, rx) = std::sync::mpsc::channel();
            let stats = stats.clone();
            let serve = move || {
                async_io::block_on(async move {
                    let mut lp = aioport_smol::Loop::new();
                    let factory = move || -> Box<dyn Protocol> {
                        Box::new(EchoServer { stats: stats.clone() })
                    };
                    let options = aioport_smol::ServerOptions::default()
                        .backlog(4096)
                        .reuse_port(threads > 1);
                    match lp.create_server(addr, factory, options).await {
                        Ok(server) => {
                            let _ = tx.send(Ok((server.addr(), lp.handle())));
                            lp.run_forever().await;
                        }
                        Err(e) => drop(tx.send(Err(e.to_string()))),
                    }
                })
            };
            let thread =
                std::thread::Builder::new().name("aioport-smol loop".into()).spawn(serve)?;
            let (bound, handle) = rx.recv()??;
            addr = bound;
            servers.push((handle, thread));
        }
        Ok((addr, servers))
    }

    /// With `--port`: serves until killed (`None`); otherwise runs the clients on a poll
    /// loop against the smol servers and returns their reports.
    pub(super) fn run(
        args: &Args,
        stats: &Arc<ServerStats>,
    ) -> Result<Option<ClientsRun>, Box<dyn Error>> {
        if let Some(port) = args.port {
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            eprintln!("echo: {} aioport-smol loop(s) serving {addr} until killed", args.threads);
            let (_, servers) = spawn(args.threads, addr, stats)?;
            for (_, t) in servers {
                t.join().map_err(|_| "server thread panicked")?;
            }
            return Ok(None);
        }
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        let (addr, servers) = spawn(args.threads, any, stats)?;
        println!(
            "echo server on {addr} ({} aioport-smol loop thread{}); {} clients on the main \
             thread's poll loop",
            args.threads,
            if args.threads == 1 { "" } else { "s" },
            args.clients
        );
        let mut lp = Loop::new()?;
        let result = run_clients(&mut lp, addr, args.clients, args.mib << 20);
        for (handle, _) in &servers {
            handle.stop();
        }
        for (_, t) in servers {
            t.join().map_err(|_| "server thread panicked")?;
        }
        Ok(Some(result?))
    }
}
