//! [`spawn_loop`]: a loop on a thread of its own — how a server scales past one core (one
//! loop per thread, `SO_REUSEPORT`), with protocols that need not be `Send`.

use std::future::Future;
use std::io;

pub use aioport_async_kit::LoopThread;

use crate::Loop;

/// Which runtime a loop thread from [`spawn_loop`] runs under.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Runtime {
    /// A current-thread runtime of its own (I/O and time enabled): the loop thread does
    /// everything, tokio's I/O driver included.
    CurrentThread,
    /// The loop runs on its own thread inside a `LocalSet` with this (multi-thread)
    /// runtime's handle: the runtime's workers drive I/O and timers, and wake the loop.
    /// Every wake-up then crosses threads (a futex wake of the loop's thread), which
    /// costs about twice the server CPU per request of [`CurrentThread`](Self::CurrentThread)
    /// in the echo benchmark; use it to share a runtime with other tasks, and
    /// `CurrentThread` loops for a dedicated server.
    Handle(tokio::runtime::Handle),
}

/// Starts a thread that makes a [`Loop`] and runs `main(loop)` on it under `runtime`.
/// `main` is `Send` (it crosses to the new thread); the future it returns, the loop and
/// every protocol it makes stay on that thread and need not be `Send`.
///
/// ```
/// use aioport::{CallbackResult, Ctx, Endpoint, Protocol};
/// use aioport_tokio::{Loop, Runtime, ServerOptions, spawn_loop};
///
/// struct Echo;
/// impl Protocol for Echo {
///     fn data_received(&mut self, ctx: &mut Ctx<'_>, data: &[u8]) -> CallbackResult {
///         Ok(ctx.write_slice(ctx.stream(), data)?)
///     }
/// }
///
/// let (tx, rx) = std::sync::mpsc::channel();
/// let server = spawn_loop(Runtime::CurrentThread, move |mut lp: Loop| async move {
///     let opts = ServerOptions::default().reuse_port(true);
///     let server = lp.create_server("127.0.0.1:0", || Box::new(Echo), opts).await.unwrap();
///     tx.send(server.addr()).unwrap();
///     lp.run_forever().await;
/// })?;
/// let addr = rx.recv()?;
/// let mut s = std::net::TcpStream::connect(addr)?;
/// std::io::Write::write_all(&mut s, b"ping")?;
/// let mut buf = [0; 4];
/// std::io::Read::read_exact(&mut s, &mut buf)?;
/// assert_eq!(&buf, b"ping");
/// server.stop();
/// server.join().unwrap();
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
///
/// Spawning the thread or building its current-thread runtime failed.
pub fn spawn_loop<F, Fut>(runtime: Runtime, main: F) -> io::Result<LoopThread>
where
    F: FnOnce(Loop) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + 'static,
{
    LoopThread::spawn("aioport-tokio-loop", move |started| {
        // A current-thread runtime drives I/O only from its own `block_on`, not from a
        // handle's: keep the runtime itself.
        let own = match runtime {
            Runtime::CurrentThread => {
                match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(rt) => Ok(rt),
                    Err(e) => return started.failed(e),
                }
            }
            Runtime::Handle(h) => Err(h),
        };
        let lp = Loop::new();
        if !started.ready(lp.handle()) {
            return;
        }
        let local = tokio::task::LocalSet::new();
        match own {
            Ok(rt) => rt.block_on(local.run_until(main(lp))),
            Err(h) => h.block_on(local.run_until(main(lp))),
        }
    })
}
