//! The loop's ready queue and the per-socket wakers that fill it (DESIGN.md §6).
//!
//! Every socket (connection, connecting socket, listener) has one [`KeyWaker`]: its key
//! plus an atomic "queued" flag. the runtime's reactor wakes it when the socket becomes ready;
//! the waker pushes its key onto the shared queue (once, until the loop takes it) and wakes
//! the loop's task. The loop then serves exactly the keys it finds there, so the cost of a
//! wake-up is O(ready), never O(sockets).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Wake, Waker};

use aioport::Handle;

use crate::remote::Command;

/// What a wake-up names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    /// A connection (or a connect in progress) by its transport's handle.
    Conn(Handle),
    /// A listening socket by its index in the listener table.
    Listener(usize),
}

/// State shared by a loop, its socket wakers and its [`LoopHandle`](crate::LoopHandle)s.
pub struct Shared {
    inner: Mutex<Inner>,
    /// Something was queued in `inner` since the loop last took it: lets an idle turn skip
    /// the lock.
    pub pending: AtomicBool,
    /// `stop()` was asked for.
    pub stop: AtomicBool,
}

/// What the lock of [`Shared`] guards.
#[derive(Default)]
pub struct Inner {
    /// Keys woken since the loop last looked.
    pub ready: Vec<Key>,
    /// Commands from other tasks and threads (bounded by `REMOTE_QUEUE_CAPACITY`).
    pub commands: Vec<Command>,
    /// The loop task's waker while it waits; taken by the first wake-up.
    waker: Option<Waker>,
    /// The loop was dropped: commands are refused.
    pub closed: bool,
}

impl Shared {
    /// A loop's state, with nothing queued.
    pub fn new() -> Arc<Shared> {
        Arc::new(Shared {
            inner: Mutex::new(Inner::default()),
            pending: AtomicBool::new(false),
            stop: AtomicBool::new(false),
        })
    }

    /// The queues, locked.
    pub fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding this lock cannot leave the queue half-updated (push and
        // swap only), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The loop is about to look at the queue: wake-ups from now on wake `waker`.
    pub fn set_waker(&self, waker: &Waker) {
        let mut inner = self.lock();
        match &inner.waker {
            Some(w) if w.will_wake(waker) => {}
            _ => inner.waker = Some(waker.clone()),
        }
    }

    /// Queues `key` and wakes the loop.
    fn push(&self, key: Key) {
        let waker = {
            let mut inner = self.lock();
            inner.ready.push(key);
            self.pending.store(true, Ordering::Release);
            inner.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Wakes the loop without a key (after queueing a command; `stop`).
    pub fn wake(&self) {
        self.pending.store(true, Ordering::Release);
        let waker = self.lock().waker.take();
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// The waker of one socket: its key and whether the key already waits in the queue.
pub struct KeyWaker {
    key: Key,
    queued: AtomicBool,
    shared: Arc<Shared>,
}

impl KeyWaker {
    /// A socket's waker, as the `Arc` (to clear its flag) and the `Waker` the runtime stores.
    pub fn new(key: Key, shared: &Arc<Shared>) -> (Arc<KeyWaker>, Waker) {
        let state =
            Arc::new(KeyWaker { key, queued: AtomicBool::new(false), shared: shared.clone() });
        let waker = Waker::from(state.clone());
        (state, waker)
    }

    /// The loop took the key from the queue: the next wake-up queues it again.
    pub fn taken(&self) {
        self.queued.store(false, Ordering::Release);
    }
}

impl Wake for KeyWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if !self.queued.swap(true, Ordering::AcqRel) {
            self.shared.push(self.key);
        }
    }
}
