//! What actions do: every `Ctx` call of the user face, with the result checked against
//! what the run knows about the target handle.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::world::{Action, DELIBERATE_PANIC, Kind, Known, NOWHERE, NOWHERE_CTX, World, pattern};
use crate::{
    ConnectionError, Ctx, DriverError, Endpoint, Extra, Handle, HandleError, LimitsError,
    ReadPipeHandle, StreamHandle, WriteBufferLimits, WriteError, WritePipeHandle,
};

impl World {
    fn expect_handle(&self, k: &Option<Known>, as_kind: Kind) -> Option<HandleError> {
        let Some(k) = k else { return Some(HandleError::Stale) };
        if k.stale {
            Some(HandleError::Stale)
        } else if k.poisoned {
            None // removed at the next quiescence; until then either answer is right
        } else if k.connecting {
            Some(HandleError::Connecting)
        } else if k.kind != as_kind {
            Some(HandleError::WrongKind { expected: as_kind.name(), found: k.kind.name() })
        } else {
            None
        }
    }

    /// Checks a call's handle error against what the run knows.
    fn check<T: std::fmt::Debug>(
        &self,
        what: &str,
        k: &Option<Known>,
        as_kind: Kind,
        r: &Result<T, HandleError>,
    ) {
        let want = self.expect_handle(k, as_kind);
        let bad = match (&want, r) {
            (Some(w), Err(e)) => w != e,
            (Some(_), Ok(_)) => true,
            // A live handle of the right kind: no handle error (poisoned: anything goes).
            (None, Err(_)) => !k.as_ref().is_some_and(|k| k.poisoned),
            (None, Ok(_)) => false,
        };
        if bad {
            self.fail(format!(
                "{what} on {:?}: got {r:?}, expected {want:?}",
                k.as_ref().map(|k| k.h)
            ));
        }
    }

    fn handle_of(k: &Option<Known>) -> Handle {
        k.as_ref().map_or(NOWHERE, |k| k.h)
    }

    /// Performs `a` with `ctx` (inside a callback, a closure or `enter`).
    pub(crate) fn act(self: &Rc<Self>, ctx: &mut Ctx<'_>, a: &Action) {
        match a {
            Action::Write { t, n, via } => self.write(ctx, *t, *n, *via),
            Action::WriteEof(t) => {
                self.on_stream(ctx, *t, "write_eof", |ctx, h, kind| match kind {
                    Kind::WritePipe => ctx.write_eof(WritePipeHandle::from_handle(h)),
                    Kind::ReadPipe => ctx.write_eof(StreamHandle::from_handle(h)),
                    Kind::Socket => ctx.write_eof(StreamHandle::from_handle(h)),
                })
            }
            Action::Close(t) => self.on_any(ctx, *t, "close", |ctx, h, kind| match kind {
                Kind::Socket => ctx.close(StreamHandle::from_handle(h)),
                Kind::ReadPipe => ctx.close(ReadPipeHandle::from_handle(h)),
                Kind::WritePipe => ctx.close(WritePipeHandle::from_handle(h)),
            }),
            Action::Abort(t) => self.on_any(ctx, *t, "abort", |ctx, h, kind| match kind {
                Kind::Socket => ctx.abort(StreamHandle::from_handle(h)),
                Kind::ReadPipe => ctx.abort(ReadPipeHandle::from_handle(h)),
                Kind::WritePipe => ctx.abort(WritePipeHandle::from_handle(h)),
            }),
            Action::PauseReading(t) => self.on_read(ctx, *t, "pause_reading", |ctx, h, kind| {
                if kind == Kind::ReadPipe {
                    ctx.pause_reading(ReadPipeHandle::from_handle(h))
                } else {
                    ctx.pause_reading(StreamHandle::from_handle(h))
                }
            }),
            Action::ResumeReading(t) => self.on_read(ctx, *t, "resume_reading", |ctx, h, kind| {
                if kind == Kind::ReadPipe {
                    ctx.resume_reading(ReadPipeHandle::from_handle(h))
                } else {
                    ctx.resume_reading(StreamHandle::from_handle(h))
                }
            }),
            Action::SetLimits(t, hi, lo) => self.set_limits(ctx, *t, *hi, *lo),
            Action::HardLimit(t, lim) => self.on_stream(ctx, *t, "hard_limit", |ctx, h, kind| {
                if kind == Kind::WritePipe {
                    ctx.set_write_buffer_hard_limit(WritePipeHandle::from_handle(h), *lim)
                } else {
                    ctx.set_write_buffer_hard_limit(StreamHandle::from_handle(h), *lim)
                }
            }),
            Action::SetProtocol { t, buffered } => {
                let k = self.target(*t);
                let h = Self::handle_of(&k);
                let p = self.actor(Some(h), *buffered);
                let kind = k.as_ref().map_or(Kind::Socket, |k| k.kind);
                let r = match kind {
                    Kind::Socket => ctx.set_protocol(StreamHandle::from_handle(h), p),
                    Kind::ReadPipe => ctx.set_protocol(ReadPipeHandle::from_handle(h), p),
                    Kind::WritePipe => ctx.set_protocol(WritePipeHandle::from_handle(h), p),
                };
                self.check("set_protocol", &k, kind, &r);
            }
            Action::Query(t) => self.query(ctx, *t),
            Action::WrongKind(t) => {
                let k = self.target(*t);
                let h = Self::handle_of(&k);
                // The typed handle of the wrong kind, built by hand from the untyped one.
                match k.as_ref().map_or(Kind::Socket, |k| k.kind) {
                    Kind::Socket => {
                        let r = ctx.is_reading(ReadPipeHandle::from_handle(h));
                        self.check("is_reading as read pipe", &k, Kind::ReadPipe, &r);
                    }
                    Kind::ReadPipe | Kind::WritePipe => {
                        let r = ctx.is_closing(StreamHandle::from_handle(h));
                        self.check("is_closing as stream", &k, Kind::Socket, &r);
                    }
                }
            }
            Action::Connect => {
                let endpoint = Endpoint::Host { host: "fuzz.invalid".into(), port: 1 };
                let p = self.actor(None, false);
                let id = ctx.connect(endpoint, p);
                if self.in_callback.get() && ctx.handle() != NOWHERE_CTX {
                    self.requests.borrow_mut().insert(id, ctx.handle());
                }
            }
            Action::InsertServed => {
                let fd = self.fd();
                let extra = Extra::default().with_fd(fd);
                let p = self.actor(None, false);
                match ctx.insert_served_stream(p, extra.clone(), Box::new(self.socks.clone())) {
                    Ok(h) => self.new_served.borrow_mut().push((h.handle(), ctx.handle(), extra)),
                    Err(e) if self.is_live_callback(ctx) => {
                        self.fail(format!("insert_served_stream in a callback: {e}"));
                    }
                    Err(_) => {}
                }
            }
            Action::FeedData(t, n) => self.serve(ctx, *t, "feed_data", |ctx, h, world| {
                let data = world.socks.with(h, |s| pattern(s.peer_read, *n));
                let r = ctx.feed_data(StreamHandle::from_handle(h), &data);
                if r.is_ok() {
                    world.socks.with(h, |s| {
                        s.peer_read += *n as u64;
                        s.peer = s.peer.max(s.peer_read);
                    });
                }
                r
            }),
            Action::FeedEof(t) => self
                .serve(ctx, *t, "feed_eof", |ctx, h, _| ctx.feed_eof(StreamHandle::from_handle(h))),
            Action::ServedWritable(t) => self.serve(ctx, *t, "served_writable", |ctx, h, _| {
                ctx.served_writable(StreamHandle::from_handle(h))
            }),
            Action::SetServedPending(t, n) => {
                self.serve(ctx, *t, "set_served_pending", |ctx, h, _| {
                    ctx.set_served_pending(StreamHandle::from_handle(h), *n)
                })
            }
            Action::ServedClosed(t) => self.serve(ctx, *t, "served_closed", |ctx, h, _| {
                let reason = ConnectionError::Tls("fuzz: the serving side ended".into());
                ctx.served_closed(StreamHandle::from_handle(h), Some(reason))
            }),
            Action::CancelTimer => {
                let last = self.timers.borrow_mut().pop();
                if let Some((id, ran)) = last {
                    let cancelled = ctx.cancel(id);
                    if cancelled == ran.get() {
                        self.fail(format!("cancel({id:?}) = {cancelled} but ran = {}", ran.get()));
                    }
                    ran.set(true);
                }
            }
            Action::Soon(inner) => {
                let (world, inner) = (self.clone(), (**inner).clone());
                ctx.call_soon(move |ctx| world.closure(ctx, &inner, None));
            }
            Action::Later(ms, inner) | Action::At(ms, inner) => {
                let (world, inner) = (self.clone(), (**inner).clone());
                let ran = Rc::new(Cell::new(false));
                let flag = ran.clone();
                let due = ctx.now() + Duration::from_millis(*ms);
                let f = move |ctx: &mut Ctx<'_>| world.closure(ctx, &inner, Some((due, flag)));
                let id = if matches!(a, Action::Later(..)) {
                    match ctx.call_later(Duration::from_millis(*ms), f) {
                        Ok(id) => id,
                        Err(e) => return self.fail(format!("call_later({ms} ms): {e}")),
                    }
                } else {
                    ctx.call_at(due, f)
                };
                if id.when() != due {
                    self.fail(format!("call_later/call_at due {:?}, asked {due:?}", id.when()));
                }
                self.timers.borrow_mut().push((id, ran));
            }
            // Only meaningful to the actor running them (see `Actor::run_mail`).
            Action::ArmTimer(_)
            | Action::KeepOpen(_)
            | Action::BufferMode(_)
            | Action::Panic
            | Action::Fail => {}
        }
    }

    fn is_live_callback(&self, ctx: &Ctx<'_>) -> bool {
        self.in_callback.get()
            && ctx.handle() != NOWHERE_CTX
            && self.known.borrow().iter().any(|k| k.h == ctx.handle() && !k.stale && !k.poisoned)
    }

    fn closure(
        self: &Rc<Self>,
        ctx: &mut Ctx<'_>,
        a: &Action,
        timer: Option<(Instant, Rc<Cell<bool>>)>,
    ) {
        let _guard = CallbackGuard::enter(self);
        self.closures_run.set(self.closures_run.get() + 1);
        if let Some((due, ran)) = timer {
            if ctx.now() < due {
                self.fail(format!("a call_later closure ran {:?} early", due - ctx.now()));
            }
            if ran.replace(true) {
                self.fail("a cancelled or finished closure ran".into());
            }
        }
        if *a == Action::Panic {
            self.deliberate_panics.set(self.deliberate_panics.get() + 1);
            std::panic::panic_any(DELIBERATE_PANIC);
        }
        self.act(ctx, a);
    }

    fn write(self: &Rc<Self>, ctx: &mut Ctx<'_>, t: u8, n: usize, via: u8) {
        let k = self.target(t);
        let h = Self::handle_of(&k);
        let kind = k.as_ref().map_or(Kind::Socket, |k| k.kind);
        let at = self.written.borrow().get(&h).copied().unwrap_or(0);
        let data = pattern(at, n);
        let r = match (kind, via % 3) {
            (Kind::WritePipe, 0) => ctx.write_slice(WritePipeHandle::from_handle(h), &data),
            (Kind::WritePipe, 1) => ctx.write(WritePipeHandle::from_handle(h), data),
            (Kind::WritePipe, _) => {
                let data = Bytes::from(data);
                ctx.writelines(
                    WritePipeHandle::from_handle(h),
                    &[data.slice(..n / 2), Bytes::new(), data.slice(n / 2..)],
                )
            }
            (_, 0) => ctx.write_slice(StreamHandle::from_handle(h), &data),
            (_, 1) => ctx.write(StreamHandle::from_handle(h), data),
            (_, _) => {
                let data = Bytes::from(data);
                ctx.writelines(
                    StreamHandle::from_handle(h),
                    &[data.slice(..n / 2), Bytes::new(), data.slice(n / 2..)],
                )
            }
        };
        if r.is_ok() {
            *self.written.borrow_mut().entry(h).or_default() += n as u64;
        }
        let as_kind = if kind == Kind::WritePipe { Kind::WritePipe } else { Kind::Socket };
        let handle_result = match &r {
            Err(WriteError::Handle(e)) => Err(*e),
            _ => Ok(()),
        };
        self.check("write", &k, as_kind, &handle_result);
    }

    fn set_limits(self: &Rc<Self>, ctx: &mut Ctx<'_>, t: u8, hi: Option<usize>, lo: Option<usize>) {
        let k = self.target(t);
        let h = Self::handle_of(&k);
        let kind = k.as_ref().map_or(Kind::Socket, |k| k.kind);
        let (r, as_kind) = if kind == Kind::WritePipe {
            (ctx.set_write_buffer_limits(WritePipeHandle::from_handle(h), hi, lo), Kind::WritePipe)
        } else {
            (ctx.set_write_buffer_limits(StreamHandle::from_handle(h), hi, lo), Kind::Socket)
        };
        let want = WriteBufferLimits::new(hi, lo);
        match (&r, &want) {
            (Ok(()), Ok(l)) => {
                let mut known = self.known.borrow_mut();
                if let Some(k) = known.iter_mut().find(|k| k.h == h) {
                    k.limits = *l;
                }
            }
            (Err(LimitsError::Handle(_)), _) => {}
            (Err(e), Err(w)) if e == w => {}
            _ => self.fail(format!(
                "set_write_buffer_limits({hi:?}, {lo:?}) = {r:?}, expected {want:?}"
            )),
        }
        let handle_result = match r {
            Err(LimitsError::Handle(e)) => Err(e),
            _ => Ok(()),
        };
        self.check("set_write_buffer_limits", &k, as_kind, &handle_result);
    }

    fn query(self: &Rc<Self>, ctx: &mut Ctx<'_>, t: u8) {
        let k = self.target(t);
        let h = Self::handle_of(&k);
        let kind = k.as_ref().map_or(Kind::Socket, |k| k.kind);
        let extra = match kind {
            Kind::Socket => ctx.extra(StreamHandle::from_handle(h)).cloned(),
            Kind::ReadPipe => ctx.extra(ReadPipeHandle::from_handle(h)).cloned(),
            Kind::WritePipe => ctx.extra(WritePipeHandle::from_handle(h)).cloned(),
        };
        self.check("extra", &k, kind, &extra);
        if let (Ok(e), Some(k)) = (&extra, &k)
            && *e != k.extra
        {
            self.fail(format!("extra({:?}) = {e:?}, expected {:?}", k.h, k.extra));
        }
        let closing = match kind {
            Kind::Socket => ctx.is_closing(StreamHandle::from_handle(h)),
            Kind::ReadPipe => ctx.is_closing(ReadPipeHandle::from_handle(h)),
            Kind::WritePipe => ctx.is_closing(WritePipeHandle::from_handle(h)),
        };
        self.check("is_closing", &k, kind, &closing);
        let reading = match kind {
            Kind::ReadPipe => Some(ctx.is_reading(ReadPipeHandle::from_handle(h))),
            Kind::Socket => Some(ctx.is_reading(StreamHandle::from_handle(h))),
            Kind::WritePipe => None,
        };
        if let Some(r) = reading {
            self.check("is_reading", &k, kind, &r);
            if r == Ok(true) && closing == Ok(true) {
                self.fail(format!("{h:?} is reading while closing"));
            }
        }
        let (limits, size, paused, eof) = match kind {
            Kind::WritePipe => {
                let w = WritePipeHandle::from_handle(h);
                (
                    ctx.write_buffer_limits(w),
                    ctx.write_buffer_size(w),
                    ctx.is_writing_paused(w),
                    ctx.can_write_eof(w),
                )
            }
            _ => {
                let s = StreamHandle::from_handle(h);
                (
                    ctx.write_buffer_limits(s),
                    ctx.write_buffer_size(s),
                    ctx.is_writing_paused(s),
                    ctx.can_write_eof(s),
                )
            }
        };
        let as_kind = if kind == Kind::WritePipe { Kind::WritePipe } else { Kind::Socket };
        self.check("write_buffer_limits", &k, as_kind, &limits);
        self.check("write_buffer_size", &k, as_kind, &size);
        self.check("is_writing_paused", &k, as_kind, &paused);
        self.check("can_write_eof", &k, as_kind, &eof);
        if let (Ok(l), Some(k)) = (limits, &k)
            && l != k.limits
        {
            self.fail(format!("write_buffer_limits({:?}) = {l:?}, expected {:?}", k.h, k.limits));
        }
        if let (Ok(l), Ok(size), Ok(paused)) = (limits, size, paused) {
            // The pause edge is decided at once: above high is paused, at most low is not.
            if (size > l.high() && !paused) || (size <= l.low() && paused) {
                // A frozen (lost) transport keeps its state: only judge open ones.
                if closing == Ok(false) {
                    self.fail(format!("{h:?}: size {size}, limits {l:?}, paused {paused}"));
                }
            }
        }
    }

    fn on_any(
        self: &Rc<Self>,
        ctx: &mut Ctx<'_>,
        t: u8,
        what: &str,
        f: impl FnOnce(&mut Ctx<'_>, Handle, Kind) -> Result<(), HandleError>,
    ) {
        let k = self.target(t);
        let kind = k.as_ref().map_or(Kind::Socket, |k| k.kind);
        let r = f(ctx, Self::handle_of(&k), kind);
        self.check(what, &k, kind, &r);
    }

    /// Calls that need a writable kind: a read pipe is called as a stream (a wrong kind).
    fn on_stream(
        self: &Rc<Self>,
        ctx: &mut Ctx<'_>,
        t: u8,
        what: &str,
        f: impl FnOnce(&mut Ctx<'_>, Handle, Kind) -> Result<(), HandleError>,
    ) {
        let k = self.target(t);
        let kind = k.as_ref().map_or(Kind::Socket, |k| k.kind);
        let r = f(ctx, Self::handle_of(&k), kind);
        let as_kind = if kind == Kind::WritePipe { Kind::WritePipe } else { Kind::Socket };
        self.check(what, &k, as_kind, &r);
    }

    /// Calls that need a readable kind: a write pipe is called as a stream (a wrong kind).
    fn on_read(
        self: &Rc<Self>,
        ctx: &mut Ctx<'_>,
        t: u8,
        what: &str,
        f: impl FnOnce(&mut Ctx<'_>, Handle, Kind) -> Result<(), HandleError>,
    ) {
        let k = self.target(t);
        let kind = k.as_ref().map_or(Kind::Socket, |k| k.kind);
        let r = f(ctx, Self::handle_of(&k), kind);
        let as_kind = if kind == Kind::ReadPipe { Kind::ReadPipe } else { Kind::Socket };
        self.check(what, &k, as_kind, &r);
    }

    /// The serving face: only the serving protocol may feed its transport.
    fn serve(
        self: &Rc<Self>,
        ctx: &mut Ctx<'_>,
        t: u8,
        what: &str,
        f: impl FnOnce(&mut Ctx<'_>, Handle, &Rc<World>) -> Result<(), DriverError>,
    ) {
        let k = self.target(t);
        let h = Self::handle_of(&k);
        let r = f(ctx, h, self);
        let want = match &k {
            None => Some(DriverError::StaleHandle),
            Some(k) if k.stale => Some(DriverError::StaleHandle),
            Some(k) if k.poisoned || k.connecting => None,
            Some(k) if k.server != Some(ctx.handle()) => {
                Some(DriverError::WrongKind { expected: "transport served by this protocol" })
            }
            // Closed or DataAfterEof are legitimate answers for a live served transport.
            Some(_) => None,
        };
        let bad = match (&want, &r) {
            (Some(w), Err(e)) => w != e,
            (Some(_), Ok(())) => true,
            (None, Err(DriverError::Closed | DriverError::DataAfterEof)) | (None, Ok(())) => false,
            (None, Err(_)) => !k.as_ref().is_some_and(|k| k.poisoned || k.connecting),
        };
        if bad {
            self.fail(format!(
                "{what} on {h:?} from {:?}: got {r:?}, expected {want:?}",
                ctx.handle()
            ));
        }
    }
}

/// Marks "a callback is running"; a second one at the same time is a nested callback.
pub(super) struct CallbackGuard<'a>(&'a World);

impl<'a> CallbackGuard<'a> {
    pub(super) fn enter(world: &'a World) -> Self {
        if world.in_callback.replace(true) {
            world.fail("a callback ran inside another (re-entrancy)".into());
        }
        CallbackGuard(world)
    }
}

impl Drop for CallbackGuard<'_> {
    fn drop(&mut self) {
        self.0.in_callback.set(false);
    }
}

/// Runs user code (`Registry::enter`) under the same re-entrancy guard as callbacks.
pub(crate) fn user_code(world: &Rc<World>, ctx: &mut Ctx<'_>, a: &Action) {
    let _guard = CallbackGuard::enter(world);
    world.act(ctx, a);
}
