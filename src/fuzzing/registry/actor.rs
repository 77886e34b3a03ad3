//! The scripted protocol of `registry_ops`.

use std::collections::VecDeque;
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::actions::CallbackGuard;
use super::world::{Action, DELIBERATE_ERROR, DELIBERATE_PANIC, Heard, NOWHERE, World, pattern};
use crate::{
    CallbackResult, ConnectionError, Ctx, Handle, Protocol, ProtocolError, RequestId, StreamHandle,
};

/// The scripted protocol: records what it hears, then performs the actions mailed to its
/// transport.
pub(super) struct Actor {
    pub(super) world: Rc<World>,
    pub(super) id: usize,
    pub(super) deadline: Option<Instant>,
    pub(super) keep_open: bool,
    pub(super) buffer: Option<Vec<u8>>,
    pub(super) empty_buffer: bool,
}

impl Actor {
    /// Records `e` for this actor; checks the callback comes from its own transport.
    fn hear(&self, ctx: &Ctx<'_>, e: Heard) {
        let h = ctx.handle();
        if ctx.stream().handle() != h
            || ctx.read_pipe().handle() != h
            || ctx.write_pipe().handle() != h
        {
            self.world.fail(format!("{h:?}: ctx.stream() / read_pipe() / write_pipe() disagree"));
        }
        let mut heard = self.world.heard.borrow_mut();
        let (h, log) = &mut heard[self.id];
        if *h == NOWHERE {
            *h = ctx.handle();
        } else if *h != ctx.handle() {
            let msg = format!("actor of {h:?} called for {:?}", ctx.handle());
            drop(heard);
            return self.world.fail(msg);
        }
        log.push(e);
    }

    fn data(&self, h: Handle, data: &[u8]) {
        let mut received = self.world.received.borrow_mut();
        let at = received.entry(h).or_default();
        if pattern(*at, data.len()) != data {
            let msg =
                format!("{h:?}: {} bytes delivered at {at} are not the peer's bytes", data.len());
            drop(received);
            return self.world.fail(msg);
        }
        *at += data.len() as u64;
    }

    /// Performs the mail of this transport. `Err` for a deliberate failure.
    fn run_mail(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        let mut failed = Ok(());
        loop {
            let next =
                self.world.mail.borrow_mut().get_mut(&ctx.handle()).and_then(VecDeque::pop_front);
            let Some(a) = next else { break };
            match a {
                Action::ArmTimer(ms) => self.deadline = Some(ctx.now() + Duration::from_millis(ms)),
                Action::KeepOpen(k) => self.keep_open = k,
                Action::BufferMode(b) => {
                    self.empty_buffer = b == 0xFF;
                    self.buffer = (b != 0).then(|| vec![0; usize::from(b)]);
                }
                Action::Panic => {
                    self.world.deliberate_panics.set(self.world.deliberate_panics.get() + 1);
                    let h = ctx.handle();
                    if let Some(k) = self.world.known.borrow_mut().iter_mut().find(|k| k.h == h) {
                        k.poisoned = true;
                    }
                    std::panic::panic_any(DELIBERATE_PANIC);
                }
                Action::Fail => failed = Err(ProtocolError::msg(DELIBERATE_ERROR)),
                a => self.world.act(ctx, &a),
            }
        }
        failed
    }

    fn callback(&mut self, ctx: &mut Ctx<'_>, e: Heard) -> CallbackResult {
        let world = self.world.clone();
        let _guard = CallbackGuard::enter(&world);
        let lost = e == Heard::Lost;
        self.hear(ctx, e);
        let r = self.run_mail(ctx);
        if lost {
            // Removed when this returns: from now on every call must say stale.
            let h = ctx.handle();
            if let Some(k) = world.known.borrow_mut().iter_mut().find(|k| k.h == h) {
                k.stale = true;
            }
        }
        r
    }
}

impl Protocol for Actor {
    fn connection_made(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        self.callback(ctx, Heard::Made)
    }
    fn data_received(&mut self, ctx: &mut Ctx<'_>, data: &[u8]) -> CallbackResult {
        self.data(ctx.handle(), data);
        self.callback(ctx, Heard::Data(data.len()))
    }
    fn get_buffer(&mut self, _sizehint: usize) -> CallbackResult<Option<&mut [u8]>> {
        if self.empty_buffer {
            return Ok(Some(&mut []));
        }
        Ok(self.buffer.as_deref_mut())
    }
    fn buffer_updated(&mut self, ctx: &mut Ctx<'_>, n: usize) -> CallbackResult {
        let buf = self.buffer.take().unwrap_or_default();
        if n > buf.len() {
            self.world.fail(format!("buffer_updated({n}) beyond a {}-byte buffer", buf.len()));
        } else {
            self.data(ctx.handle(), &buf[..n]);
        }
        self.buffer = Some(buf);
        self.callback(ctx, Heard::Data(n))
    }
    fn eof_received(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult<bool> {
        self.callback(ctx, Heard::Eof)?;
        Ok(self.keep_open)
    }
    fn pause_writing(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        self.callback(ctx, Heard::Pause)
    }
    fn resume_writing(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        self.callback(ctx, Heard::Resume)
    }
    fn connection_lost(&mut self, ctx: &mut Ctx<'_>, _: Option<ConnectionError>) -> CallbackResult {
        self.callback(ctx, Heard::Lost)
    }
    fn poll_timeout(&self) -> Option<Instant> {
        self.deadline
    }
    fn handle_timeout(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        match self.deadline.take() {
            Some(d) if ctx.now() < d => {
                self.world.fail(format!("handle_timeout {:?} early", d - ctx.now()));
            }
            None => self.world.fail("handle_timeout without a deadline".into()),
            Some(_) => {}
        }
        self.callback(ctx, Heard::Timeout)
    }
    fn request_completed(
        &mut self,
        ctx: &mut Ctx<'_>,
        id: RequestId,
        _outcome: Result<StreamHandle, ConnectionError>,
    ) -> CallbackResult {
        let requester = self.world.requests.borrow_mut().remove(&id);
        if requester != Some(ctx.handle()) {
            self.world.fail(format!(
                "request_completed({id:?}) for {:?}, asked by {requester:?}",
                ctx.handle()
            ));
        }
        self.callback(ctx, Heard::Request)
    }
    fn handle_wake(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        self.callback(ctx, Heard::Wake)
    }
}
