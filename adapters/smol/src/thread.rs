//! [`spawn_loop`]: a loop on a thread of its own — how a server scales past one core (one
//! loop per thread, `SO_REUSEPORT`), with protocols that need not be `Send`.

use std::future::Future;
use std::io;

use aioport_async_kit::LoopThread;

use crate::Loop;

/// Starts a thread that makes a [`Loop`] and runs `main(loop)` on it with
/// `async_io::block_on` (smol's reactor is global, so there is no runtime to choose).
/// `main` is `Send` (it crosses to the new thread); the future it returns, the loop and
/// every protocol it makes stay on that thread and need not be `Send`.
///
/// ```
/// use aioport::{CallbackResult, Ctx, Protocol};
/// use aioport_smol::{Loop, ServerOptions, spawn_loop};
///
/// struct Echo;
/// impl Protocol for Echo {
///     fn data_received(&mut self, ctx: &mut Ctx<'_>, data: &[u8]) -> CallbackResult {
///         Ok(ctx.write_slice(ctx.stream(), data)?)
///     }
/// }
///
/// let (tx, rx) = std::sync::mpsc::channel();
/// let server = spawn_loop(move |mut lp: Loop| async move {
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
/// Spawning the thread failed.
pub fn spawn_loop<F, Fut>(main: F) -> io::Result<LoopThread>
where
    F: FnOnce(Loop) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + 'static,
{
    LoopThread::spawn("aioport-smol-loop", move |started| {
        let lp = Loop::new();
        if started.ready(lp.handle()) {
            async_io::block_on(main(lp));
        }
    })
}
