//! A STARTTLS protocol for `Ctx::start_tls` tests (the harness test `tls_start.rs` and the
//! conformance scenarios): a plaintext prelude, the line `STARTTLS\r\n`, then TLS.
//!
//! The side that goes **first** writes its whole prelude and the line, then switches in
//! the same callback — with most of the prelude still queued, so it is paused for writing
//! at the switch, and its TLS records queue behind the plaintext. The **second** side
//! reads the prelude (checking every byte) and the line, and switches with whatever it
//! read past the line (the start of the first side's TLS records, when they came in the
//! same read) as `start_tls`'s `received`. Only the first side can be paused at its
//! switch: whatever the second side still had queued would reach a peer already speaking
//! TLS.

use std::cell::RefCell;
use std::rc::Rc;

use aioport::tls::{TlsClient, TlsServer, TlsSession};
use aioport::{CallbackResult, ConnectionError, Ctx, Protocol, StreamHandle};

pub const MARKER: &[u8] = b"STARTTLS\r\n";

/// The prelude's byte at `offset`: a pattern with a prime period, so a lost or repeated
/// byte shows.
pub fn prelude_byte(offset: usize) -> u8 {
    (offset % 251) as u8
}

/// Which TLS side a connection upgrades to.
pub enum TlsSide {
    Client(TlsClient),
    Server(TlsServer),
}

/// What one side saw, for the test's assertions.
#[derive(Default, Debug)]
pub struct UpgradeSeen {
    /// The raw (plaintext) transport.
    pub raw: Option<StreamHandle>,
    /// `is_writing_paused()` of the raw transport when `start_tls` was called.
    pub paused_at_switch: Option<bool>,
    /// Plaintext bytes read before the switch, prelude and line included.
    pub plaintext_read: usize,
    /// The first prelude offset whose byte was wrong, or where the line was not found.
    pub wrong_at: Option<usize>,
    /// Bytes read past the line and handed to `start_tls` as `received`.
    pub early: usize,
    /// The engine's session, once switched.
    pub session: Option<TlsSession>,
    /// The plaintext phase ended before the switch (the raw transport was lost).
    pub lost_before_switch: Option<Option<ConnectionError>>,
}

pub type UpgradeShared = Rc<RefCell<UpgradeSeen>>;

/// The raw transport's protocol until the switch; `app` runs over TLS after it.
pub struct Upgrader {
    pub tls: Option<TlsSide>,
    pub first: bool,
    pub prelude: usize,
    pub app: Option<Box<dyn Protocol>>,
    pub seen: UpgradeShared,
    /// The first side switches in its `pause_writing` (after the pause edge reached this
    /// protocol) rather than right after writing.
    pub switch_on_pause: bool,
}

impl Upgrader {
    pub fn new(
        tls: TlsSide,
        first: bool,
        prelude: usize,
        app: Box<dyn Protocol>,
    ) -> (Self, UpgradeShared) {
        let seen = UpgradeShared::default();
        let app = Some(app);
        let switch_on_pause = false;
        (Upgrader { tls: Some(tls), first, prelude, app, seen: seen.clone(), switch_on_pause }, seen)
    }

    fn upgrade(&mut self, ctx: &mut Ctx<'_>, received: &[u8]) -> CallbackResult {
        let h = ctx.stream();
        let (Some(tls), Some(app)) = (self.tls.take(), self.app.take()) else {
            return Ok(());
        };
        let engine = match tls {
            TlsSide::Client(c) => c.engine_with(move |_| app)?,
            TlsSide::Server(s) => s.engine_with(move |_| app)?,
        };
        {
            let mut seen = self.seen.borrow_mut();
            seen.paused_at_switch = Some(ctx.is_writing_paused(h)?);
            seen.early = received.len();
            seen.session = Some(engine.session());
        }
        ctx.start_tls(h, engine, received)?;
        Ok(())
    }
}

impl Protocol for Upgrader {
    fn connection_made(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        let h = ctx.stream();
        self.seen.borrow_mut().raw = Some(h);
        if self.first {
            let mut prelude: Vec<u8> = (0..self.prelude).map(prelude_byte).collect();
            prelude.extend_from_slice(MARKER);
            ctx.write(h, prelude)?;
            if !self.switch_on_pause {
                self.upgrade(ctx, &[])?;
            }
        }
        Ok(())
    }

    fn pause_writing(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        if self.first && self.switch_on_pause {
            self.upgrade(ctx, &[])?;
        }
        Ok(())
    }

    fn data_received(&mut self, ctx: &mut Ctx<'_>, data: &[u8]) -> CallbackResult {
        let end = self.prelude + MARKER.len();
        let at = self.seen.borrow().plaintext_read;
        let take = data.len().min(end - at);
        {
            let mut seen = self.seen.borrow_mut();
            for (i, &b) in data[..take].iter().enumerate() {
                let offset = at + i;
                let want =
                    if offset < self.prelude { prelude_byte(offset) } else { MARKER[offset - self.prelude] };
                if b != want && seen.wrong_at.is_none() {
                    seen.wrong_at = Some(offset);
                }
            }
            seen.plaintext_read += take;
        }
        if at + take == end {
            self.upgrade(ctx, &data[take..])?;
        }
        Ok(())
    }

    fn connection_lost(&mut self, _: &mut Ctx<'_>, err: Option<ConnectionError>) -> CallbackResult {
        self.seen.borrow_mut().lost_before_switch = Some(err);
        Ok(())
    }
}
