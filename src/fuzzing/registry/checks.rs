//! The checks `registry_ops` runs after every step and at the end.

use std::io::ErrorKind;

use super::Run;
use super::world::{DELIBERATE_ERROR, DELIBERATE_PANIC, Heard, Kind, Known};
use crate::{ConnectionError, Extra, Handle, LoopError, Request, StreamHandle};

/// One traced callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Traced {
    Made,
    Data,
    Eof,
    Pause,
    Resume,
    Lost,
    Other,
}

/// Per-transport grammar state, from the tracer.
#[derive(Debug, Default, Clone)]
pub(super) struct Grammar {
    pub(super) made: bool,
    pub(super) eof: bool,
    pub(super) lost: bool,
}

impl Run {
    /// The checks after every step.
    pub(super) fn settle(&mut self) {
        // New transports: connects (from the driver's queue) and served ones.
        while let Some(req) = self.reg.poll_request() {
            let Request::Connect { handle, .. } = req;
            self.pending.push_back(handle);
            if !self.world.known.borrow().iter().any(|k| k.h == handle.handle()) {
                let mut k = Known::new(handle.handle(), Kind::Socket, Extra::default());
                k.connecting = true;
                self.world.known.borrow_mut().push(k);
            }
        }
        let lost_traced = |run: &Self, h: Handle| {
            run.trace.borrow().iter().any(|&(x, t)| x == h && t == Traced::Lost)
        };
        for (h, server, extra) in std::mem::take(&mut *self.world.new_served.borrow_mut()) {
            let mut k = Known::new(h, Kind::Socket, extra);
            k.server = Some(server);
            k.stale = lost_traced(self, h);
            self.world.known.borrow_mut().push(k);
        }
        // Poisoned transports are gone once the loop is quiescent.
        for k in self.world.known.borrow_mut().iter_mut() {
            if k.poisoned {
                k.stale = true;
            }
        }
        let failures = std::mem::take(&mut *self.world.failures.borrow_mut());
        if let Some(f) = failures.first() {
            self.fail(f);
        }
        let violations = std::mem::take(&mut *self.world.socks.violations.borrow_mut());
        if let Some(v) = violations.first() {
            self.fail(v);
        }
        self.check_grammar();
        self.check_errors();
        // Stale exactly when expected.
        for k in self.world.known.borrow().iter() {
            let gone = self.reg.transport(k.h).is_err();
            if gone != k.stale {
                self.fail(format!(
                    "{:?}: removed = {gone}, but the run expected stale = {}",
                    k.h, k.stale
                ));
            }
            let (closes, shutdowns) = self.world.socks.with(k.h, |s| (s.closes, s.shutdowns));
            if closes > 1 || shutdowns > 1 {
                self.fail(format!("{:?}: Io::close x{closes}, shutdown_write x{shutdowns}", k.h));
            }
        }
        // poll_io: live, driver-owned transports, each reported once; then nothing.
        let bound = self.world.known.borrow().len() + 1;
        let mut reported = 0;
        while let Some(h) = self.reg.poll_io() {
            reported += 1;
            let owned = self.world.known.borrow().iter().any(|k| k.h == h && k.server.is_none());
            if reported > bound || !owned || self.reg.transport(h).is_err() {
                self.fail(format!("poll_io reported {h:?} (#{reported}, owned {owned})"));
            }
        }
        // Timer entries: one per transport at most, plus the closures still waiting.
        let waiting = self.world.timers.borrow().iter().filter(|(_, ran)| !ran.get()).count();
        if self.reg.timer_entries() > self.reg.len() + waiting {
            self.fail(format!(
                "{} timer entries for {} transports and {waiting} closures",
                self.reg.timer_entries(),
                self.reg.len()
            ));
        }
        // No work without new input (inserted transports wait for a dispatch to be made).
        let undelivered =
            self.world.known.borrow().iter().any(|k| {
                !k.stale && !k.connecting && !self.grammar.get(&k.h).is_some_and(|g| g.made)
            });
        if !undelivered && self.reg.pending_soon() == 0 {
            let before = self.trace.borrow().len();
            let mut io = self.world.socks.clone();
            self.reg.dispatch(self.now, &mut io);
            if self.trace.borrow().len() != before {
                self.fail("dispatch without new input delivered callbacks");
            }
            self.check_grammar();
        }
    }

    fn check_grammar(&mut self) {
        let trace = self.trace.clone();
        let trace = trace.borrow();
        for &(h, t) in &trace[self.checked..] {
            let g = self.grammar.entry(h).or_default();
            let bad = match t {
                _ if g.lost => Some("callback after connection_lost"),
                Traced::Made if g.made => Some("connection_made twice"),
                Traced::Made => {
                    g.made = true;
                    None
                }
                _ if !g.made => Some("callback before connection_made"),
                Traced::Data if g.eof => Some("data after eof_received"),
                Traced::Eof if g.eof => Some("eof_received twice"),
                Traced::Eof => {
                    g.eof = true;
                    None
                }
                Traced::Lost => {
                    g.lost = true;
                    None
                }
                _ => None,
            };
            if let Some(m) = bad {
                self.fail(format!("{h:?}: {m} ({t:?})"));
            }
        }
        self.checked = trace.len();
        let heard = self.world.heard.borrow();
        self.heard_checked.resize(heard.len(), (0, false));
        for (i, (h, log)) in heard.iter().enumerate() {
            let (at, mut paused) = self.heard_checked[i];
            for e in &log[at..] {
                match e {
                    Heard::Pause if paused => {
                        self.fail(format!("{h:?}: pause_writing twice (protocol #{i})"))
                    }
                    Heard::Resume if !paused => {
                        self.fail(format!("{h:?}: resume_writing without pause (protocol #{i})"))
                    }
                    Heard::Pause | Heard::Resume => paused = !paused,
                    _ => {}
                }
            }
            self.heard_checked[i] = (log.len(), paused);
        }
    }

    fn check_errors(&mut self) {
        while let Some(e) = self.reg.poll_error() {
            match &e {
                LoopError::Panicked { message, .. } if message == DELIBERATE_PANIC => {
                    self.panics_reported += 1;
                }
                LoopError::CallbackFailed { error, .. }
                    if error.to_string() == DELIBERATE_ERROR => {}
                _ => self.fail(format!("unexpected loop error: {e}")),
            }
        }
        if self.panics_reported != self.world.deliberate_panics.get() {
            self.fail(format!(
                "{} deliberate panics, {} reported",
                self.world.deliberate_panics.get(),
                self.panics_reported
            ));
        }
    }

    /// Ends every transport and checks what must hold at the end of any run.
    pub(super) fn finish(&mut self) {
        self.world.mail.borrow_mut().clear();
        let mut io = self.world.socks.clone();
        for _ in 0..8 {
            while let Some(h) = self.pending.pop_front() {
                self.update(h.handle(), |k| (k.stale, k.connect_failed) = (true, true));
                let err = ConnectionError::from(ErrorKind::ConnectionRefused);
                let _ = self.reg.handle_connect_failed(h, err, self.now, &mut io);
            }
            let live: Vec<Known> =
                self.world.known.borrow().iter().filter(|k| !k.stale).cloned().collect();
            for k in live {
                let world = self.world.clone();
                self.reg.enter(self.now, &mut io, |ctx| {
                    // Through the typed handle of its kind: user code ending everything.
                    let r = match k.kind {
                        Kind::Socket => ctx.abort(StreamHandle::from_handle(k.h)),
                        Kind::ReadPipe => ctx.abort(crate::ReadPipeHandle::from_handle(k.h)),
                        Kind::WritePipe => ctx.abort(crate::WritePipeHandle::from_handle(k.h)),
                    };
                    if let Err(e) = r {
                        world.fail(format!("abort({:?}) at the end: {e}", k.h));
                    }
                });
            }
            self.settle();
            if self.reg.is_empty() {
                break;
            }
        }
        if !self.reg.is_empty() {
            self.fail(format!("{} transports left after aborting all", self.reg.len()));
        }
        for k in self.world.known.borrow().iter() {
            let closes = self.world.socks.with(k.h, |s| s.closes);
            let lost = self.grammar.get(&k.h).is_some_and(|g| g.lost);
            if !k.connect_failed && closes != 1 {
                self.fail(format!("{:?}: Io::close called {closes} times in its life", k.h));
            }
            if !k.connect_failed && !k.poisoned && !lost {
                self.fail(format!("{:?}: ended without connection_lost", k.h));
            }
        }
        if self.reg.errors_dropped() != 0 {
            self.fail("loop errors were dropped");
        }
    }
}
