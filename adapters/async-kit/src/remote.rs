//! [`LoopHandle`]: the `Send` face of a loop for other tasks and threads: asyncio's
//! `call_soon_threadsafe`, closing a server, and `stop`, through a bounded queue.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use aioport::Ctx;

use crate::ServerId;
use crate::wake::Shared;

/// How many commands from other tasks and threads may wait for the loop.
pub const REMOTE_QUEUE_CAPACITY: usize = 1024;

/// A closure sent from another task or thread.
pub type RemoteCall = Box<dyn FnOnce(&mut Ctx<'_>) + Send>;

/// What a [`LoopHandle`] queues for its loop.
pub enum Command {
    /// Run this closure with a `Ctx` (as a `call_soon` closure).
    Call(RemoteCall),
    /// Close this server.
    CloseServer(ServerId),
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

/// A `Send + Clone` handle to a loop, for other tasks and threads: run a
/// closure on the loop (asyncio's `call_soon_threadsafe`), close a server, or stop the
/// loop. Protocol callbacks can use it too (to stop their own loop).
#[derive(Clone)]
pub struct LoopHandle {
    shared: Arc<Shared>,
}

impl LoopHandle {
    /// The handle of the loop that owns `shared`.
    pub fn new(shared: Arc<Shared>) -> LoopHandle {
        LoopHandle { shared }
    }

    /// Runs `f` on the loop with a [`Ctx`] (outside any callback) when the loop next
    /// turns. Never blocks.
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

    /// Closes a server of the loop (as the loop's `close_server`).
    ///
    /// # Errors
    ///
    /// As [`call_soon_threadsafe`](Self::call_soon_threadsafe).
    pub fn close_server(&self, id: ServerId) -> Result<(), RemoteError> {
        self.send(Command::CloseServer(id))
    }

    /// Makes the running `run_forever` / `run_until` return after the current turn
    /// (asyncio's `stop`); if the loop is not running, the next run returns after one
    /// turn. Never fails: the request is a flag, not a queued command.
    pub fn stop(&self) {
        self.shared.stop.store(true, Ordering::Release);
        self.shared.wake();
    }

    fn send(&self, c: Command) -> Result<(), RemoteError> {
        // The loop holds one reference; handles and socket wakers the others. Only the
        // loop's own Drop marks it gone.
        {
            let mut inner = self.shared.lock();
            if inner.closed {
                return Err(RemoteError::Closed);
            }
            if inner.commands.len() >= REMOTE_QUEUE_CAPACITY {
                return Err(RemoteError::Full);
            }
            inner.commands.push(c);
        }
        self.shared.wake();
        Ok(())
    }
}

impl fmt::Debug for LoopHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoopHandle").finish_non_exhaustive()
    }
}
