//! Protocols: asyncio's callbacks as an object-safe trait.

use std::time::Instant;

use crate::stream::SendfileError;
use crate::{ConnectionError, Ctx, DatagramAddr, ProtocolError, StreamHandle};

/// The result of a protocol callback. An `Err` is fatal for the connection from
/// `data_received`, `get_buffer`, `buffer_updated`, `eof_received`, `handle_timeout` and
/// `handle_wake`; from the other callbacks it goes to the loop's error queue
/// ([`Registry::poll_error`](crate::Registry::poll_error)) and the connection continues —
/// asyncio's rules (spec §3.9, §7.28, §9.49).
pub type CallbackResult<T = ()> = Result<T, ProtocolError>;

/// A stream protocol: asyncio's `Protocol` and `BufferedProtocol` in one object-safe
/// trait. Every method has a default, so a protocol implements only what it needs.
///
/// Callbacks never nest: each runs alone, with a [`Ctx`] through which it can act on
/// **any** transport of its loop (write, close, pause reading, replace a protocol, schedule
/// closures, open connections). Those calls change state at once and only *schedule* the
/// callbacks they cause, which are delivered after the current callback returns.
///
/// Protocols need not be `Send`: a loop runs on one thread.
///
/// ```
/// use aioport::{CallbackResult, Ctx, Protocol};
///
/// /// Echoes every byte back, and closes when the peer half-closes.
/// struct Echo;
///
/// impl Protocol for Echo {
///     fn data_received(&mut self, ctx: &mut Ctx<'_>, data: &[u8]) -> CallbackResult {
///         ctx.write_slice(ctx.stream(), data)?;
///         Ok(())
///     }
/// }
/// ```
///
/// # Buffered protocols
///
/// A protocol that returns `Some(buffer)` from [`get_buffer`](Protocol::get_buffer) is a
/// `BufferedProtocol`: the transport reads straight into that buffer and calls
/// [`buffer_updated`](Protocol::buffer_updated) instead of `data_received`. The choice is
/// made on every read, so a protocol swap switches between the two freely (bpo-33654).
pub trait Protocol {
    /// The connection is ready. Always the first callback, exactly once.
    fn connection_made(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        let _ = ctx;
        Ok(())
    }

    /// Bytes arrived. `data` borrows the loop's read buffer: copy what you keep.
    fn data_received(&mut self, ctx: &mut Ctx<'_>, data: &[u8]) -> CallbackResult {
        let _ = (ctx, data);
        Ok(())
    }

    /// The peer sent EOF. Return `Ok(true)` to keep the connection open for writing
    /// (half-close; call `close` later), `Ok(false)` to close it after the queue drains.
    fn eof_received(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult<bool> {
        let _ = ctx;
        Ok(false)
    }

    /// The transport's write buffer went above its high-water mark.
    fn pause_writing(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        let _ = ctx;
        Ok(())
    }

    /// The transport's write buffer drained to its low-water mark.
    fn resume_writing(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        let _ = ctx;
        Ok(())
    }

    /// The connection is gone: `None` after `close`/`abort`/EOF, `Some(err)` after an
    /// error. The last callback, exactly once; the handle is stale afterwards.
    fn connection_lost(
        &mut self,
        ctx: &mut Ctx<'_>,
        err: Option<ConnectionError>,
    ) -> CallbackResult {
        let _ = (ctx, err);
        Ok(())
    }

    /// `BufferedProtocol.get_buffer`: `Some(buf)` to receive the next read directly into
    /// `buf` (which must not be empty: that is a fatal error, as in asyncio). The default,
    /// `None`, makes this a plain protocol fed by `data_received`. `sizehint` is how many
    /// bytes the transport would like room for.
    fn get_buffer(&mut self, sizehint: usize) -> CallbackResult<Option<&mut [u8]>> {
        let _ = sizehint;
        Ok(None)
    }

    /// `BufferedProtocol.buffer_updated`: `n` bytes were written at the start of the
    /// buffer the last `get_buffer` returned.
    fn buffer_updated(&mut self, ctx: &mut Ctx<'_>, n: usize) -> CallbackResult {
        let _ = (ctx, n);
        Ok(())
    }

    /// When this protocol wants [`handle_timeout`](Protocol::handle_timeout) called.
    /// Re-read after every callback of this protocol; return the same deadline to keep it.
    fn poll_timeout(&self) -> Option<Instant> {
        None
    }

    /// The deadline from [`poll_timeout`](Protocol::poll_timeout) was reached (never
    /// before it). `ctx.now()` is the driver's current time.
    fn handle_timeout(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        let _ = ctx;
        Ok(())
    }

    /// The outcome of a request this protocol made through [`Ctx::connect`]: the new
    /// transport (whose `connection_made` was already delivered to its own protocol), or
    /// why it could not be opened.
    fn request_completed(
        &mut self,
        ctx: &mut Ctx<'_>,
        id: RequestId,
        outcome: Result<StreamHandle, ConnectionError>,
    ) -> CallbackResult {
        let _ = (ctx, id, outcome);
        Ok(())
    }

    /// A sendfile this protocol started with [`Ctx::sendfile`] on transport `h` ended:
    /// the bytes sent, or why it stopped. Delivered before `h`'s `connection_lost` when
    /// `h` is this protocol's own transport and it closed during the sendfile. An `Err`
    /// returned here goes to the loop's error hook; the transport continues.
    fn sendfile_completed(
        &mut self,
        ctx: &mut Ctx<'_>,
        h: StreamHandle,
        outcome: Result<u64, SendfileError>,
    ) -> CallbackResult {
        let _ = (ctx, h, outcome);
        Ok(())
    }

    /// A transport this protocol serves (see [`Ctx::insert_served_stream`]) has work: it
    /// wrote, shut down or closed. Called once per batch of such changes.
    fn handle_wake(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        let _ = ctx;
        Ok(())
    }
}

/// A datagram protocol: asyncio's `DatagramProtocol`, object-safe, every method defaulted.
///
/// Unlike a stream protocol's, no callback failure is fatal: an `Err` from any callback
/// goes to the loop's error queue and the transport carries on (asyncio lets
/// `datagram_received` / `error_received` exceptions escape to the loop and keeps the
/// transport open) — except `handle_timeout`, which ends it, as for streams.
///
/// ```
/// use aioport::{CallbackResult, ConnectionError, Ctx, DatagramAddr, DatagramProtocol};
///
/// /// Echoes each datagram to its sender.
/// struct UdpEcho;
///
/// impl DatagramProtocol for UdpEcho {
///     fn datagram_received(
///         &mut self,
///         ctx: &mut Ctx<'_>,
///         data: &[u8],
///         addr: Option<&DatagramAddr>,
///     ) -> CallbackResult {
///         ctx.sendto(ctx.datagram(), data, addr)?;
///         Ok(())
///     }
///     fn error_received(&mut self, _ctx: &mut Ctx<'_>, err: ConnectionError) -> CallbackResult {
///         eprintln!("send or receive failed: {err}");
///         Ok(())
///     }
/// }
/// ```
pub trait DatagramProtocol {
    /// The endpoint is ready. Always first, exactly once.
    fn connection_made(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        let _ = ctx;
        Ok(())
    }

    /// A datagram arrived (possibly empty). `data` borrows the loop's read buffer.
    fn datagram_received(
        &mut self,
        ctx: &mut Ctx<'_>,
        data: &[u8],
        addr: Option<&DatagramAddr>,
    ) -> CallbackResult {
        let _ = (ctx, data, addr);
        Ok(())
    }

    /// A send or receive failed (for example `ConnectionRefused` from an ICMP
    /// port-unreachable). Not fatal: the transport stays usable.
    fn error_received(&mut self, ctx: &mut Ctx<'_>, err: ConnectionError) -> CallbackResult {
        let _ = (ctx, err);
        Ok(())
    }

    /// The write buffer went above its high-water mark.
    fn pause_writing(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        let _ = ctx;
        Ok(())
    }

    /// The write buffer drained to its low-water mark.
    fn resume_writing(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        let _ = ctx;
        Ok(())
    }

    /// The endpoint is closed. The last callback, exactly once.
    fn connection_lost(
        &mut self,
        ctx: &mut Ctx<'_>,
        err: Option<ConnectionError>,
    ) -> CallbackResult {
        let _ = (ctx, err);
        Ok(())
    }

    /// When this protocol wants `handle_timeout`; re-read after every callback.
    fn poll_timeout(&self) -> Option<Instant> {
        None
    }

    /// The deadline from `poll_timeout` was reached.
    fn handle_timeout(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        let _ = ctx;
        Ok(())
    }
}

/// A boxed protocol is a protocol, so APIs generic over `impl Protocol` also take
/// `Box<dyn Protocol>`.
impl<P: Protocol + ?Sized> Protocol for Box<P> {
    fn connection_made(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        (**self).connection_made(ctx)
    }
    fn data_received(&mut self, ctx: &mut Ctx<'_>, data: &[u8]) -> CallbackResult {
        (**self).data_received(ctx, data)
    }
    fn eof_received(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult<bool> {
        (**self).eof_received(ctx)
    }
    fn pause_writing(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        (**self).pause_writing(ctx)
    }
    fn resume_writing(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        (**self).resume_writing(ctx)
    }
    fn connection_lost(
        &mut self,
        ctx: &mut Ctx<'_>,
        err: Option<ConnectionError>,
    ) -> CallbackResult {
        (**self).connection_lost(ctx, err)
    }
    fn get_buffer(&mut self, sizehint: usize) -> CallbackResult<Option<&mut [u8]>> {
        (**self).get_buffer(sizehint)
    }
    fn buffer_updated(&mut self, ctx: &mut Ctx<'_>, n: usize) -> CallbackResult {
        (**self).buffer_updated(ctx, n)
    }
    fn poll_timeout(&self) -> Option<Instant> {
        (**self).poll_timeout()
    }
    fn handle_timeout(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        (**self).handle_timeout(ctx)
    }
    fn request_completed(
        &mut self,
        ctx: &mut Ctx<'_>,
        id: RequestId,
        outcome: Result<StreamHandle, ConnectionError>,
    ) -> CallbackResult {
        (**self).request_completed(ctx, id, outcome)
    }
    fn sendfile_completed(
        &mut self,
        ctx: &mut Ctx<'_>,
        h: StreamHandle,
        outcome: Result<u64, SendfileError>,
    ) -> CallbackResult {
        (**self).sendfile_completed(ctx, h, outcome)
    }
    fn handle_wake(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        (**self).handle_wake(ctx)
    }
}

/// Names a request made through [`Ctx::connect`]; the answer arrives in
/// [`Protocol::request_completed`] with the same id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub(crate) u64);

impl RequestId {
    /// The raw number (unique per loop).
    pub fn get(self) -> u64 {
        self.0
    }
}
