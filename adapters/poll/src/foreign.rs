//! Foreign file descriptors (asyncio's `add_reader` / `add_writer`): callbacks run with a
//! [`Ctx`] while an fd the loop does not own is readable or writable.
//!
//! asyncio's readers are level-triggered; mio is edge-triggered. After each callback the
//! fd is re-armed (`EPOLL_CTL_MOD`, which re-checks readiness), so a callback that leaves
//! data unread runs again on the next iteration — level-triggered behaviour at one
//! syscall per callback, paid only by foreign fds.

use std::ops::ControlFlow;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Instant;

use aioport::{Ctx, LoopError};
use mio::event::Event;
use mio::unix::SourceFd;
use mio::{Interest, Token};

use crate::sockets::FOREIGN_BIT;
use crate::{ErrorReport, Loop};

/// A reader or writer callback: [`ControlFlow::Continue`] keeps watching,
/// [`ControlFlow::Break`] removes it (as `remove_reader` from inside the callback would in
/// asyncio).
pub type FdCallback = Box<dyn FnMut(&mut Ctx<'_>) -> ControlFlow<()>>;

/// The callbacks watching one fd.
#[derive(Default)]
pub(crate) struct Watch {
    reader: Option<FdCallback>,
    writer: Option<FdCallback>,
}

impl Watch {
    fn interest(&self) -> Option<Interest> {
        match (self.reader.is_some(), self.writer.is_some()) {
            (true, true) => Some(Interest::READABLE | Interest::WRITABLE),
            (true, false) => Some(Interest::READABLE),
            (false, true) => Some(Interest::WRITABLE),
            (false, false) => None,
        }
    }
}

fn token(fd: RawFd) -> Token {
    Token(FOREIGN_BIT | fd as usize)
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".to_owned())
}

impl Loop {
    /// Calls `callback` whenever `fd` is readable (asyncio's `add_reader`), replacing a
    /// reader already set for it. The loop does not own `fd`: remove the reader before
    /// closing it. A panic in the callback removes it and goes to the error hook.
    ///
    /// ```
    /// # use std::cell::Cell; use std::rc::Rc; use std::time::Duration;
    /// use std::io::{Read, Write};
    /// use std::ops::ControlFlow;
    /// let (mut reader, mut writer) = std::io::pipe()?;
    /// let mut lp = aioport_poll::Loop::new()?;
    /// let seen = Rc::new(Cell::new(0));
    /// let s = seen.clone();
    /// let fd = reader.try_clone()?;
    /// lp.add_reader(&fd, move |_ctx| {
    ///     let mut buf = [0; 16];
    ///     s.set(s.get() + reader.read(&mut buf).unwrap_or(0));
    ///     ControlFlow::Break(()) // one read is all we wanted
    /// })?;
    /// writer.write_all(b"ping")?;
    /// lp.run_until_timeout(|| seen.get() == 4, Duration::from_secs(10))?;
    /// assert!(!lp.remove_reader(&fd)); // already removed by Break
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// The poller refused the fd (closed, or a regular file, which epoll cannot watch).
    pub fn add_reader(
        &mut self,
        fd: &impl AsFd,
        callback: impl FnMut(&mut Ctx<'_>) -> ControlFlow<()> + 'static,
    ) -> std::io::Result<()> {
        self.watch(fd.as_fd().as_raw_fd(), Some(Box::new(callback)), None)
    }

    /// Calls `callback` whenever `fd` is writable (asyncio's `add_writer`); see
    /// [`add_reader`](Self::add_reader).
    ///
    /// # Errors
    ///
    /// As [`add_reader`](Self::add_reader).
    pub fn add_writer(
        &mut self,
        fd: &impl AsFd,
        callback: impl FnMut(&mut Ctx<'_>) -> ControlFlow<()> + 'static,
    ) -> std::io::Result<()> {
        self.watch(fd.as_fd().as_raw_fd(), None, Some(Box::new(callback)))
    }

    /// Stops watching `fd` for reading (asyncio's `remove_reader`); false if no reader
    /// was set.
    pub fn remove_reader(&mut self, fd: &impl AsFd) -> bool {
        self.unwatch(fd.as_fd().as_raw_fd(), true)
    }

    /// Stops watching `fd` for writing (asyncio's `remove_writer`); false if no writer
    /// was set.
    pub fn remove_writer(&mut self, fd: &impl AsFd) -> bool {
        self.unwatch(fd.as_fd().as_raw_fd(), false)
    }

    fn watch(
        &mut self,
        fd: RawFd,
        reader: Option<FdCallback>,
        writer: Option<FdCallback>,
    ) -> std::io::Result<()> {
        let watch = self.extras.foreign.entry(fd).or_default();
        let existed = watch.interest().is_some();
        // The callback given replaces its kind; the other kind is kept.
        let (new_reader, new_writer) = (reader.is_some(), writer.is_some());
        let mut next = Watch { reader, writer };
        if !new_reader {
            next.reader = watch.reader.take();
        }
        if !new_writer {
            next.writer = watch.writer.take();
        }
        let interest = next.interest().expect("one callback was given");
        let registry = self.poll.registry();
        let r = if existed {
            registry.reregister(&mut SourceFd(&fd), token(fd), interest)
        } else {
            registry.register(&mut SourceFd(&fd), token(fd), interest)
        };
        match r {
            Ok(()) => {
                self.extras.foreign.insert(fd, next);
                Ok(())
            }
            Err(e) => {
                if !existed {
                    self.extras.foreign.remove(&fd);
                } else {
                    // Keep what was there before.
                    let w = self.extras.foreign.entry(fd).or_default();
                    if !new_reader {
                        w.reader = next.reader;
                    }
                    if !new_writer {
                        w.writer = next.writer;
                    }
                }
                Err(e)
            }
        }
    }

    fn unwatch(&mut self, fd: RawFd, reader: bool) -> bool {
        let Some(watch) = self.extras.foreign.get_mut(&fd) else { return false };
        let had = if reader { watch.reader.take() } else { watch.writer.take() }.is_some();
        self.rearm(fd);
        had
    }

    /// Re-registers `fd` for what is still watched (re-checking readiness), or forgets it.
    fn rearm(&mut self, fd: RawFd) {
        let interest = self.extras.foreign.get(&fd).and_then(Watch::interest);
        let registry = self.poll.registry();
        let r = match interest {
            Some(i) => registry.reregister(&mut SourceFd(&fd), token(fd), i),
            None => {
                self.extras.foreign.remove(&fd);
                // Fails harmlessly if the fd was already closed.
                let _ = registry.deregister(&mut SourceFd(&fd));
                return;
            }
        };
        if let Err(error) = r {
            // Closed without remove_reader/remove_writer: nothing more can be watched.
            self.extras.foreign.remove(&fd);
            (self.hook)(ErrorReport::Watch { fd, error });
        }
    }

    /// A foreign fd is ready: runs its reader and/or writer, then re-arms it.
    pub(crate) fn on_foreign(&mut self, t: usize, ev: &Event, now: Instant) {
        let fd = (t & !FOREIGN_BIT) as RawFd;
        let readable = ev.is_readable() || ev.is_read_closed() || ev.is_error();
        let writable = ev.is_writable() || ev.is_write_closed() || ev.is_error();
        for (ready, is_reader) in [(readable, true), (writable, false)] {
            let Some(watch) = self.extras.foreign.get_mut(&fd) else { return };
            let slot = if is_reader { &mut watch.reader } else { &mut watch.writer };
            if !ready || slot.is_none() {
                continue;
            }
            let Some(mut cb) = slot.take() else { continue };
            let r = self
                .registry
                .enter(now, &mut self.io, |ctx| catch_unwind(AssertUnwindSafe(|| cb(ctx))));
            self.after_registry(now);
            match r {
                Ok(ControlFlow::Continue(())) => {
                    if let Some(w) = self.extras.foreign.get_mut(&fd) {
                        let slot = if is_reader { &mut w.reader } else { &mut w.writer };
                        slot.get_or_insert(cb);
                    }
                }
                Ok(ControlFlow::Break(())) => {}
                Err(payload) => {
                    let callback =
                        if is_reader { "add_reader callback" } else { "add_writer callback" };
                    let message = panic_message(&*payload);
                    let e = LoopError::Panicked { handle: None, callback, message };
                    (self.hook)(ErrorReport::Callback(e));
                }
            }
        }
        if self.extras.foreign.contains_key(&fd) {
            self.rearm(fd);
        }
    }
}
