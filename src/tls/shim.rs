//! [`AppShim`]: what the engine puts between the app protocol and its transport.

use std::time::Instant;

use crate::{CallbackResult, ConnectionError, Ctx, Protocol, RequestId, StreamHandle};

/// Wraps the app protocol; every callback is forwarded unchanged, except that on TLS 1.2
/// (`no_half_close`) `eof_received` always answers "close": TLS 1.2 has no half-close, so
/// a keep-open answer is ignored (as asyncio ignores it for every TLS version; bpo-38737).
///
/// A protocol installed later with `set_protocol` replaces the wrapper: its keep-open
/// answer is then honoured on TLS 1.2 too (its `write_eof()` still fails there).
pub(super) struct AppShim {
    pub(super) app: Box<dyn Protocol>,
    pub(super) no_half_close: bool,
}

impl Protocol for AppShim {
    fn connection_made(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        self.app.connection_made(ctx)
    }
    fn data_received(&mut self, ctx: &mut Ctx<'_>, data: &[u8]) -> CallbackResult {
        self.app.data_received(ctx, data)
    }
    fn eof_received(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult<bool> {
        let keep_open = self.app.eof_received(ctx)?;
        Ok(keep_open && !self.no_half_close)
    }
    fn pause_writing(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        self.app.pause_writing(ctx)
    }
    fn resume_writing(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        self.app.resume_writing(ctx)
    }
    fn connection_lost(
        &mut self,
        ctx: &mut Ctx<'_>,
        err: Option<ConnectionError>,
    ) -> CallbackResult {
        self.app.connection_lost(ctx, err)
    }
    fn get_buffer(&mut self, sizehint: usize) -> CallbackResult<Option<&mut [u8]>> {
        self.app.get_buffer(sizehint)
    }
    fn buffer_updated(&mut self, ctx: &mut Ctx<'_>, n: usize) -> CallbackResult {
        self.app.buffer_updated(ctx, n)
    }
    fn poll_timeout(&self) -> Option<Instant> {
        self.app.poll_timeout()
    }
    fn handle_timeout(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        self.app.handle_timeout(ctx)
    }
    fn request_completed(
        &mut self,
        ctx: &mut Ctx<'_>,
        id: RequestId,
        outcome: Result<StreamHandle, ConnectionError>,
    ) -> CallbackResult {
        self.app.request_completed(ctx, id, outcome)
    }
    fn handle_wake(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        self.app.handle_wake(ctx)
    }
}
