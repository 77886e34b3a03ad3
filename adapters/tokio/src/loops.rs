//! Thread-per-core: [`spawn_loops`] runs N loops, each on a thread of its own with its own
//! current-thread runtime, and [`spawn_server`] puts one listener per loop on the same
//! port (`SO_REUSEPORT`), so the kernel spreads connections among them. This is the
//! driver's multi-core mode: no wake-up crosses threads, no connection moves between
//! loops, and protocols need not be `Send`.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::sync::Arc;

use aioport::Protocol;

use crate::{Error, Loop, LoopHandle, LoopThread, Runtime, ServerOptions, spawn_loop};

/// N loops on N threads, from [`spawn_loops`] or [`spawn_server`].
#[derive(Debug)]
pub struct LoopGroup {
    threads: Vec<LoopThread>,
}

impl LoopGroup {
    /// How many loops run.
    pub fn len(&self) -> usize {
        self.threads.len()
    }

    /// Always false: a group has at least one loop.
    pub fn is_empty(&self) -> bool {
        self.threads.is_empty()
    }

    /// The loops' handles, in the order they were started (index `i` ran `main(i, ..)`).
    pub fn handles(&self) -> impl Iterator<Item = &LoopHandle> {
        self.threads.iter().map(LoopThread::handle)
    }

    /// Stops every loop (see [`LoopHandle::stop`]).
    pub fn stop(&self) {
        for t in &self.threads {
            t.stop();
        }
    }

    /// Waits for every thread to finish.
    ///
    /// # Errors
    ///
    /// A thread panicked (the first panic payload; the other threads are still joined).
    pub fn join(self) -> std::thread::Result<()> {
        let mut result = Ok(());
        for t in self.threads {
            if let Err(panic) = t.join()
                && result.is_ok()
            {
                result = Err(panic);
            }
        }
        result
    }
}

/// How many loops a thread-per-core server runs by default: one per CPU this process may
/// use (`std::thread::available_parallelism`, which honours the CPU affinity mask), at
/// least one.
pub fn loops_per_core() -> NonZeroUsize {
    std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN)
}

/// Starts `n` loops, each on a thread of its own under its own current-thread runtime
/// ([`Runtime::CurrentThread`]), and runs `main(i, loop)` on loop `i`. `main` is shared by
/// the threads (`Send + Sync`); the futures it returns, the loops and their protocols stay
/// on their threads and need not be `Send`.
///
/// Compared with one multi-thread runtime ([`Runtime::Handle`]), nothing is shared between
/// the loops: each thread runs its own tokio I/O driver and timers, so a socket's wake-up
/// never crosses threads. A connection stays on the loop that accepted or made it; loops
/// talk through their [`LoopHandle`]s.
///
/// ```
/// use std::num::NonZeroUsize;
/// use aioport_tokio::spawn_loops;
///
/// let (tx, rx) = std::sync::mpsc::channel();
/// let loops = spawn_loops(NonZeroUsize::new(2).unwrap(), move |i, mut lp| {
///     let tx = tx.clone();
///     async move {
///         lp.call_soon(move |_| tx.send(i).unwrap());
///         lp.run_forever().await;
///     }
/// })?;
/// let mut ran = [rx.recv()?, rx.recv()?];
/// ran.sort();
/// assert_eq!(ran, [0, 1]);
/// loops.stop();
/// loops.join().unwrap();
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
///
/// Spawning a thread or building its runtime failed; the loops already started are stopped
/// and joined first.
pub fn spawn_loops<F, Fut>(n: NonZeroUsize, main: F) -> io::Result<LoopGroup>
where
    F: Fn(usize, Loop) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let main = Arc::new(main);
    let mut group = LoopGroup { threads: Vec::with_capacity(n.get()) };
    for i in 0..n.get() {
        let main = main.clone();
        match spawn_loop(Runtime::CurrentThread, move |lp| main(i, lp)) {
            Ok(t) => group.threads.push(t),
            Err(e) => {
                group.stop();
                let _ = group.join();
                return Err(e);
            }
        }
    }
    Ok(group)
}

/// A thread-per-core server from [`spawn_server`]: its address and its loops.
#[derive(Debug)]
pub struct ServerGroup {
    addr: SocketAddr,
    loops: LoopGroup,
}

impl ServerGroup {
    /// The address every loop listens on (the port the kernel chose for port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The loops.
    pub fn loops(&self) -> &LoopGroup {
        &self.loops
    }

    /// Stops every loop; their connections are closed when the loops are dropped.
    pub fn stop(&self) {
        self.loops.stop();
    }

    /// Waits for every loop thread to finish (after [`stop`](Self::stop)).
    ///
    /// # Errors
    ///
    /// A thread panicked.
    pub fn join(self) -> std::thread::Result<()> {
        self.loops.join()
    }
}

/// Serves `addr` from `n` loops ([`spawn_loops`]): each loop listens on the same port
/// with `SO_REUSEPORT` (forced on when `n > 1`) and builds each accepted connection's
/// protocol on its own thread with `factory`, then runs until stopped. The kernel spreads
/// new connections among the listeners. With port 0 the first loop picks the port and the
/// others join it.
///
/// ```
/// use std::io::{Read, Write};
/// use aioport::{CallbackResult, Ctx, Protocol};
/// use aioport_tokio::{ServerOptions, loops_per_core, spawn_server};
///
/// struct Echo;
/// impl Protocol for Echo {
///     fn data_received(&mut self, ctx: &mut Ctx<'_>, data: &[u8]) -> CallbackResult {
///         Ok(ctx.write_slice(ctx.stream(), data)?)
///     }
/// }
///
/// let addr = "127.0.0.1:0".parse()?;
/// let server = spawn_server(addr, loops_per_core(), ServerOptions::default(), || Box::new(Echo))?;
/// let mut s = std::net::TcpStream::connect(server.addr())?;
/// s.write_all(b"ping")?;
/// let mut buf = [0; 4];
/// s.read_exact(&mut buf)?;
/// assert_eq!(&buf, b"ping");
/// server.stop();
/// server.join().unwrap();
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
///
/// [`Error::Bind`] when a loop cannot listen (the loops already started are stopped and
/// joined); [`Error::Io`] when a thread or runtime cannot be made.
pub fn spawn_server<P>(
    addr: SocketAddr,
    n: NonZeroUsize,
    options: ServerOptions,
    factory: P,
) -> Result<ServerGroup, Error>
where
    P: Fn() -> Box<dyn Protocol> + Send + Sync + 'static,
{
    let options = if n.get() > 1 { options.reuse_port(true) } else { options };
    let factory = Arc::new(factory);
    let mut group = LoopGroup { threads: Vec::with_capacity(n.get()) };
    let mut addr = addr;
    for _ in 0..n.get() {
        // Loops start one after the other, so that port 0 is chosen once.
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let factory = factory.clone();
        let started = spawn_loop(Runtime::CurrentThread, move |mut lp: Loop| async move {
            let listening = lp.create_server(addr, move || factory(), options).await;
            let ok = listening.is_ok();
            let _ = tx.send(listening.map(|s| s.addr()));
            if ok {
                lp.run_forever().await;
            }
        });
        let bound = match started {
            Ok(t) => {
                group.threads.push(t);
                rx.recv().unwrap_or_else(|_| {
                    Err(Error::Io(io::Error::other("a server loop ended before it listened")))
                })
            }
            Err(e) => Err(Error::Io(e)),
        };
        match bound {
            Ok(local) => addr = local,
            Err(e) => {
                group.stop();
                let _ = group.join();
                return Err(e);
            }
        }
    }
    Ok(ServerGroup { addr, loops: group })
}
