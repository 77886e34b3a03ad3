//! [`LoopHandle`]: the `Send` face of a loop for other threads (DESIGN.md §6):
//! `call_soon_threadsafe` and `stop` through a bounded queue and a mio `Waker`.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};

use aioport::Ctx;

use crate::ServerId;

/// How many commands from other threads may wait for the loop.
pub const REMOTE_QUEUE_CAPACITY: usize = 1024;

/// A closure sent from another thread.
pub(crate) type RemoteCall = Box<dyn FnOnce(&mut Ctx<'_>) + Send>;

pub(crate) enum Command {
    Call(RemoteCall),
    CloseServer(ServerId),
}

/// State shared between a loop and its handles.
pub(crate) struct Shared {
    waker: mio::Waker,
    /// A wake-up is on its way: later senders skip the `eventfd` write.
    woken: AtomicBool,
    /// `stop()` was asked for.
    pub(crate) stop: AtomicBool,
}

impl Shared {
    fn wake(&self) {
        if !self.woken.swap(true, Ordering::AcqRel) {
            // A failed eventfd write leaves the command queued for the next wake-up.
            let _ = self.waker.wake();
        }
    }

    /// The loop saw the wake-up; it drains the queue right after this.
    pub(crate) fn rearm(&self) {
        self.woken.store(false, Ordering::Release);
    }
}

pub(crate) fn channel(waker: mio::Waker) -> (LoopHandle, Receiver<Command>) {
    let (tx, rx) = sync_channel(REMOTE_QUEUE_CAPACITY);
    let shared =
        Arc::new(Shared { waker, woken: AtomicBool::new(false), stop: AtomicBool::new(false) });
    (LoopHandle { shared, tx }, rx)
}

/// A command could not be queued for the loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RemoteError {
    /// [`REMOTE_QUEUE_CAPACITY`] commands are already waiting; try again once the loop has
    /// run (the queue is bounded so a stalled loop cannot grow memory without limit).
    #[error("the loop's command queue is full ({REMOTE_QUEUE_CAPACITY} waiting); retry later")]
    Full,
    /// The loop was dropped.
    #[error("the loop is gone")]
    Closed,
}

/// A `Send + Clone` handle to a [`Loop`](crate::Loop), for other threads: schedule a
/// closure on the loop's thread (asyncio's `call_soon_threadsafe`), close a server, or
/// stop the loop. Protocol callbacks can use it too (to stop their own loop).
///
/// ```
/// use std::time::Duration;
/// let mut lp = aioport_poll::Loop::new()?;
/// let handle = lp.handle();
/// let t = std::thread::spawn(move || handle.call_soon_threadsafe(|_ctx| println!("on the loop")));
/// t.join().unwrap()?;
/// let remote = lp.handle();
/// lp.call_soon(move |_ctx| remote.stop());
/// lp.run_forever()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct LoopHandle {
    pub(crate) shared: Arc<Shared>,
    tx: SyncSender<Command>,
}

impl LoopHandle {
    /// Runs `f` on the loop's thread with a [`Ctx`] (outside any callback), as soon as the
    /// loop wakes up. Never blocks.
    ///
    /// # Errors
    ///
    /// [`RemoteError::Full`] when the bounded queue is full, [`RemoteError::Closed`] when
    /// the loop is gone; `f` is dropped.
    pub fn call_soon_threadsafe(
        &self,
        f: impl FnOnce(&mut Ctx<'_>) + Send + 'static,
    ) -> Result<(), RemoteError> {
        self.send(Command::Call(Box::new(f)))
    }

    /// Closes a server of the loop (see [`Server::close`](crate::Server::close)).
    ///
    /// # Errors
    ///
    /// As [`call_soon_threadsafe`](Self::call_soon_threadsafe).
    pub fn close_server(&self, id: ServerId) -> Result<(), RemoteError> {
        self.send(Command::CloseServer(id))
    }

    /// Makes the running `run_forever` / `run_until` return after the current iteration
    /// (asyncio's `stop`); if the loop is not running, the next run returns after one
    /// iteration. Never fails: the request is a flag, not a queued command.
    pub fn stop(&self) {
        self.shared.stop.store(true, Ordering::Release);
        self.shared.wake();
    }

    /// Wakes the loop without a command (resolver threads, a queue drained in part).
    pub(crate) fn wake(&self) {
        self.shared.wake();
    }

    fn send(&self, c: Command) -> Result<(), RemoteError> {
        match self.tx.try_send(c) {
            Ok(()) => {
                self.shared.wake();
                Ok(())
            }
            Err(TrySendError::Full(_)) => Err(RemoteError::Full),
            Err(TrySendError::Disconnected(_)) => Err(RemoteError::Closed),
        }
    }
}

impl fmt::Debug for LoopHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoopHandle").finish_non_exhaustive()
    }
}
