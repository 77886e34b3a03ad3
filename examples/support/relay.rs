//! A relay: two stream connections joined so that what one receives the other sends,
//! with end-to-end back-pressure, half-close forwarding and abort propagation. The
//! pattern of `examples/proxy.rs` (and of the crate docs' "Writing a relay"); the
//! conformance suite's relay scenarios include this file, so the tested code is the
//! example's code.
//!
//! * **Back-pressure.** When one side's transport pauses writing (its write buffer went
//!   above high water because its peer reads slowly), the relay pauses reading on the
//!   other side; `resume_writing` resumes it. Each write buffer therefore stays within its
//!   high-water mark plus one read.
//! * **Half-close.** `eof_received` on one side becomes `write_eof` on the other, and the
//!   side stays open (keep-open) so the other direction goes on; once both directions saw
//!   EOF both sides close.
//! * **Ends.** A clean `connection_lost(None)` on one side closes the other after its
//!   queue drains; an error (a reset) aborts the other at once.
//!
//! Both sides live in one loop, so each protocol acts on the *other* side's transport
//! directly through its `Ctx` — no channel, no copy beyond the transport's own queue.

use std::cell::Cell;
use std::rc::Rc;

use aioport::{CallbackResult, ConnectionError, Ctx, Endpoint, Protocol, RequestId, StreamHandle};

/// Counters every relay of a proxy shares.
#[derive(Debug, Default)]
pub struct RelayStats {
    /// Relay connections open (both sides of every relay count).
    pub open: Cell<usize>,
    /// Relays started (downstream connections accepted).
    pub started: Cell<usize>,
    /// Bytes forwarded from clients to the upstream.
    pub up_bytes: Cell<u64>,
    /// Bytes forwarded from the upstream to clients.
    pub down_bytes: Cell<u64>,
    /// The largest write buffer either side reached right after a forward.
    pub peak_buffered: Cell<usize>,
    /// Sides aborted because the other side failed.
    pub aborted: Cell<usize>,
    /// Upstream connections that could not be opened.
    pub connect_failures: Cell<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    /// The accepted client connection.
    Down,
    /// The connection the relay opened to the upstream.
    Up,
}

/// What both sides of one relay share.
#[derive(Debug)]
struct Pair {
    down: Cell<Option<StreamHandle>>,
    up: Cell<Option<StreamHandle>>,
    /// EOF seen on the downstream / upstream side.
    eof: [Cell<bool>; 2],
    stats: Rc<RelayStats>,
}

impl Pair {
    fn handle(&self, side: Side) -> Option<StreamHandle> {
        match side {
            Side::Down => self.down.get(),
            Side::Up => self.up.get(),
        }
    }

    fn set(&self, side: Side, h: Option<StreamHandle>) {
        match side {
            Side::Down => self.down.set(h),
            Side::Up => self.up.set(h),
        }
    }
}

/// Wraps the upstream side's protocol before it connects — for example in a TLS client
/// engine, so that the relay originates TLS.
pub type UpstreamWrap = Rc<dyn Fn(Box<dyn Protocol>) -> Box<dyn Protocol>>;

/// One side of a relay. Make the downstream side with [`relay`]; it opens the upstream
/// side itself.
pub struct RelaySide {
    pair: Rc<Pair>,
    side: Side,
    /// Where the downstream side connects, and how (taken when it does).
    upstream: Option<(Endpoint, Option<UpstreamWrap>)>,
}

/// The protocol for an accepted connection: it connects to `upstream` and relays both
/// ways. Use it in a server's protocol factory.
pub fn relay(upstream: Endpoint, stats: &Rc<RelayStats>) -> Box<dyn Protocol> {
    relay_with(upstream, stats, None)
}

/// As [`relay`], with the upstream side's protocol wrapped by `wrap`.
pub fn relay_with(
    upstream: Endpoint,
    stats: &Rc<RelayStats>,
    wrap: Option<UpstreamWrap>,
) -> Box<dyn Protocol> {
    let pair = Pair {
        down: Cell::new(None),
        up: Cell::new(None),
        eof: [Cell::new(false), Cell::new(false)],
        stats: stats.clone(),
    };
    Box::new(RelaySide { pair: Rc::new(pair), side: Side::Down, upstream: Some((upstream, wrap)) })
}

impl RelaySide {
    fn other(&self) -> Side {
        match self.side {
            Side::Down => Side::Up,
            Side::Up => Side::Down,
        }
    }

    fn peer(&self) -> Option<StreamHandle> {
        self.pair.handle(self.other())
    }
}

impl Protocol for RelaySide {
    fn connection_made(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        let me = ctx.stream();
        self.pair.set(self.side, Some(me));
        let stats = &self.pair.stats;
        stats.open.set(stats.open.get() + 1);
        match self.side {
            Side::Down => {
                stats.started.set(stats.started.get() + 1);
                // Nothing to forward to until the upstream is connected.
                ctx.pause_reading(me)?;
                let (upstream, wrap) =
                    self.upstream.take().expect("the downstream side connects once");
                let up: Box<dyn Protocol> =
                    Box::new(RelaySide { pair: self.pair.clone(), side: Side::Up, upstream: None });
                let up = match wrap {
                    Some(wrap) => wrap(up),
                    None => up,
                };
                ctx.connect(upstream, up);
            }
            Side::Up => match self.peer() {
                Some(down) => {
                    // The client may have gone meanwhile: then this side is not needed.
                    if ctx.resume_reading(down).is_err() {
                        ctx.close(me)?;
                    }
                }
                None => ctx.close(me)?,
            },
        }
        Ok(())
    }

    fn request_completed(
        &mut self,
        ctx: &mut Ctx<'_>,
        _: RequestId,
        outcome: Result<StreamHandle, ConnectionError>,
    ) -> CallbackResult {
        if outcome.is_err() {
            let stats = &self.pair.stats;
            stats.connect_failures.set(stats.connect_failures.get() + 1);
            ctx.close(ctx.stream())?;
        }
        Ok(())
    }

    fn data_received(&mut self, ctx: &mut Ctx<'_>, data: &[u8]) -> CallbackResult {
        let Some(peer) = self.peer() else {
            // The other side is gone: nobody to forward to.
            return Ok(ctx.abort(ctx.stream())?);
        };
        if ctx.write_slice(peer, data).is_err() {
            // The other side is closing: what it cannot take is lost, so end this side.
            return Ok(ctx.abort(ctx.stream())?);
        }
        let stats = &self.pair.stats;
        let bytes = match self.side {
            Side::Down => &stats.up_bytes,
            Side::Up => &stats.down_bytes,
        };
        bytes.set(bytes.get() + data.len() as u64);
        let buffered = ctx.write_buffer_size(peer)?;
        stats.peak_buffered.set(stats.peak_buffered.get().max(buffered));
        Ok(())
    }

    fn eof_received(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult<bool> {
        let mine = self.side as usize;
        self.pair.eof[mine].set(true);
        let Some(peer) = self.peer() else { return Ok(false) };
        if self.pair.eof[1 - mine].get() {
            // Both directions are done: close both after their queues drain.
            ctx.close(peer)?;
            return Ok(false);
        }
        // Forward the half-close and keep this side open for the other direction.
        if ctx.write_eof(peer).is_err() {
            ctx.close(peer)?;
            return Ok(false);
        }
        Ok(true)
    }

    fn pause_writing(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        if let Some(peer) = self.peer() {
            let _ = ctx.pause_reading(peer);
        }
        Ok(())
    }

    fn resume_writing(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        if let Some(peer) = self.peer() {
            let _ = ctx.resume_reading(peer);
        }
        Ok(())
    }

    fn connection_lost(
        &mut self,
        ctx: &mut Ctx<'_>,
        err: Option<ConnectionError>,
    ) -> CallbackResult {
        self.pair.set(self.side, None);
        let stats = &self.pair.stats;
        stats.open.set(stats.open.get() - 1);
        if let Some(peer) = self.peer() {
            if err.is_some() {
                stats.aborted.set(stats.aborted.get() + 1);
                let _ = ctx.abort(peer);
            } else {
                let _ = ctx.close(peer);
            }
        }
        Ok(())
    }
}
