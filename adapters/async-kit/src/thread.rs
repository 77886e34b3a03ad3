//! [`LoopThread`]: a loop running on a thread of its own, as the drivers' `spawn_loop`
//! start it — how a server scales past one core (one loop per thread, `SO_REUSEPORT`),
//! with protocols that need not be `Send`.

use std::io;
use std::sync::mpsc::{SyncSender, sync_channel};
use std::thread::JoinHandle;

use crate::LoopHandle;

/// A loop running on its own thread: its [`LoopHandle`] and the thread. Made by a
/// driver's `spawn_loop`, whose docs have a running example.
#[derive(Debug)]
pub struct LoopThread {
    handle: LoopHandle,
    thread: JoinHandle<()>,
}

/// Given to the body of [`LoopThread::spawn`]: reports that the thread's loop exists (or
/// could not be made), which `spawn` waits for.
#[derive(Debug)]
pub struct Started(SyncSender<io::Result<LoopHandle>>);

impl Started {
    /// The loop exists: `spawn` returns with `handle`. False if `spawn` is no longer
    /// waiting (then the body should return without running the loop).
    pub fn ready(self, handle: LoopHandle) -> bool {
        self.0.send(Ok(handle)).is_ok()
    }

    /// Making the loop's runtime failed: `spawn` returns `error`.
    pub fn failed(self, error: io::Error) {
        // Nobody to tell if `spawn` stopped waiting.
        let _ = self.0.send(Err(error));
    }
}

impl LoopThread {
    /// Starts a thread named `name` that runs `body`, and waits until the body reported
    /// its loop with [`Started::ready`] (or a failure).
    ///
    /// # Errors
    ///
    /// Spawning the thread failed, the body reported [`Started::failed`], or it ended (or
    /// panicked) before reporting.
    pub fn spawn(
        name: &str,
        body: impl FnOnce(Started) + Send + 'static,
    ) -> io::Result<LoopThread> {
        let (tx, rx) = sync_channel(1);
        let thread =
            std::thread::Builder::new().name(name.into()).spawn(move || body(Started(tx)))?;
        match rx.recv() {
            Ok(Ok(handle)) => Ok(LoopThread { handle, thread }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => Err(match thread.join() {
                Ok(()) => io::Error::other("the loop thread ended before its loop was made"),
                Err(_) => io::Error::other("the loop thread panicked before its loop was made"),
            }),
        }
    }

    /// The loop's handle (`call_soon_threadsafe`, `close_server`, `stop`).
    pub fn handle(&self) -> &LoopHandle {
        &self.handle
    }

    /// Stops the loop (see [`LoopHandle::stop`]); the thread's body decides what
    /// stopping means.
    pub fn stop(&self) {
        self.handle.stop();
    }

    /// Waits for the thread to finish.
    ///
    /// # Errors
    ///
    /// The thread panicked (the panic payload).
    pub fn join(self) -> std::thread::Result<()> {
        self.thread.join()
    }
}
