//! A STARTTLS protocol for `Ctx::start_tls` tests (the harness test `tls_start.rs` and the
//! conformance scenarios): a plaintext prelude, the line `STARTTLS\r\n`, then TLS.
//!
//! The side that goes **first** writes its prelude in 64 KiB pieces until its transport
//! pauses for writing (at most `max_prelude` bytes), then the line, then switches in the
//! same callback — paused, with its TLS records queued behind the plaintext. The
//! **second** side reads the prelude (checking every byte; the pattern never contains the
//! line's first byte, so the line ends it) and the line, and switches with whatever it
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
/// byte shows; never `S`, the line's first byte.
pub fn prelude_byte(offset: usize) -> u8 {
    match (offset % 251) as u8 {
        b'S' => b'.',
        b => b,
    }
}

const PIECE: usize = 64 * 1024;

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
    /// Prelude bytes written (the first side).
    pub prelude_written: usize,
    /// Plaintext bytes read before the switch, prelude and line included (the second side).
    pub plaintext_read: usize,
    /// Where the line started (the second side): the prelude's length.
    pub line_at: Option<usize>,
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
    pub max_prelude: usize,
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
        max_prelude: usize,
        app: Box<dyn Protocol>,
    ) -> (Self, UpgradeShared) {
        let seen = UpgradeShared::default();
        let app = Some(app);
        let switch_on_pause = false;
        let p = Upgrader { tls: Some(tls), first, max_prelude, app, seen: seen.clone(), switch_on_pause };
        (p, seen)
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
        if !self.first {
            return Ok(());
        }
        let mut written = 0;
        while written < self.max_prelude && !ctx.is_writing_paused(h)? {
            let n = PIECE.min(self.max_prelude - written);
            ctx.write(h, (written..written + n).map(prelude_byte).collect::<Vec<u8>>())?;
            written += n;
        }
        self.seen.borrow_mut().prelude_written = written;
        if !self.switch_on_pause {
            ctx.write_slice(h, MARKER)?;
            self.upgrade(ctx, &[])?;
        }
        Ok(())
    }

    fn pause_writing(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        if self.first && self.switch_on_pause {
            ctx.write_slice(ctx.stream(), MARKER)?;
            self.upgrade(ctx, &[])?;
        }
        Ok(())
    }

    fn data_received(&mut self, ctx: &mut Ctx<'_>, data: &[u8]) -> CallbackResult {
        let mut line_end = None;
        {
            let mut seen = self.seen.borrow_mut();
            for (i, &b) in data.iter().enumerate() {
                let offset = seen.plaintext_read;
                seen.plaintext_read += 1;
                let ok = match seen.line_at {
                    None if b == MARKER[0] => {
                        seen.line_at = Some(offset);
                        true
                    }
                    None => b == prelude_byte(offset),
                    Some(at) => b == MARKER[offset - at],
                };
                if !ok && seen.wrong_at.is_none() {
                    seen.wrong_at = Some(offset);
                }
                if seen.line_at.is_some_and(|at| offset + 1 == at + MARKER.len()) {
                    line_end = Some(i + 1);
                    break;
                }
            }
        }
        match line_end {
            Some(n) => self.upgrade(ctx, &data[n..]),
            None => Ok(()),
        }
    }

    fn connection_lost(&mut self, _: &mut Ctx<'_>, err: Option<ConnectionError>) -> CallbackResult {
        self.seen.borrow_mut().lost_before_switch = Some(err);
        Ok(())
    }
}
