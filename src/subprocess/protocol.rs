//! `SubprocessProtocol`: asyncio's callbacks for a child process.

use crate::{CallbackResult, ConnectionError, Ctx};

/// A subprocess protocol: asyncio's `SubprocessProtocol`, object-safe, every method
/// defaulted. `ctx.subprocess()` names the process in every callback.
///
/// Ordering (spec §14): `connection_made` first; per fd, `pipe_data_received` then that
/// fd's `pipe_connection_lost`; `process_exited` when the child exits, before or after
/// the pipe callbacks; `connection_lost` exactly once and last, after `process_exited`
/// **and** every `pipe_connection_lost`.
///
/// No callback failure is fatal: an `Err` goes to the loop's error queue
/// ([`Registry::poll_error`](crate::Registry::poll_error)) and the process carries on
/// (asyncio, DESIGN.md §4). A panic drops the protocol, closes the pipes and kills a
/// running child.
///
/// ```
/// use aioport::{CallbackResult, Ctx, SubprocessProtocol};
///
/// /// Collects the child's stdout and its exit status.
/// #[derive(Default)]
/// struct Collect { out: Vec<u8>, returncode: Option<i32> }
///
/// impl SubprocessProtocol for Collect {
///     fn pipe_data_received(&mut self, _: &mut Ctx<'_>, fd: u32, data: &[u8]) -> CallbackResult {
///         if fd == 1 { self.out.extend_from_slice(data) }
///         Ok(())
///     }
///     fn process_exited(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
///         self.returncode = ctx.returncode(ctx.subprocess())?;
///         Ok(())
///     }
/// }
/// ```
pub trait SubprocessProtocol {
    /// The process runs and its pipes are connected. Always first, exactly once.
    fn connection_made(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        let _ = ctx;
        Ok(())
    }

    /// The child wrote `data` to fd 1 (stdout) or 2 (stderr). `data` borrows the loop's
    /// read buffer.
    fn pipe_data_received(&mut self, ctx: &mut Ctx<'_>, fd: u32, data: &[u8]) -> CallbackResult {
        let _ = (ctx, fd, data);
        Ok(())
    }

    /// The pipe for `fd` closed: EOF from the child, closed by the user, or an error
    /// (`Some(BrokenPipe)` for stdin when the child stopped reading with data pending).
    fn pipe_connection_lost(
        &mut self,
        ctx: &mut Ctx<'_>,
        fd: u32,
        err: Option<ConnectionError>,
    ) -> CallbackResult {
        let _ = (ctx, fd, err);
        Ok(())
    }

    /// The child exited; `ctx.returncode(ctx.subprocess())` is known. Delivered at the
    /// exit, even while a grandchild keeps a pipe open.
    fn process_exited(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        let _ = ctx;
        Ok(())
    }

    /// The stdin pipe's buffer went above its high-water mark (no fd argument, as in
    /// asyncio).
    fn pause_writing(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        let _ = ctx;
        Ok(())
    }

    /// The stdin pipe's buffer drained to its low-water mark.
    fn resume_writing(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        let _ = ctx;
        Ok(())
    }

    /// The process exited and every pipe is closed. The last callback, exactly once; the
    /// handle is stale afterwards (signals then fail with `ProcessLookup`).
    fn connection_lost(
        &mut self,
        ctx: &mut Ctx<'_>,
        err: Option<ConnectionError>,
    ) -> CallbackResult {
        let _ = (ctx, err);
        Ok(())
    }
}

/// A boxed subprocess protocol is a subprocess protocol.
impl<P: SubprocessProtocol + ?Sized> SubprocessProtocol for Box<P> {
    fn connection_made(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        (**self).connection_made(ctx)
    }
    fn pipe_data_received(&mut self, ctx: &mut Ctx<'_>, fd: u32, data: &[u8]) -> CallbackResult {
        (**self).pipe_data_received(ctx, fd, data)
    }
    fn pipe_connection_lost(
        &mut self,
        ctx: &mut Ctx<'_>,
        fd: u32,
        err: Option<ConnectionError>,
    ) -> CallbackResult {
        (**self).pipe_connection_lost(ctx, fd, err)
    }
    fn process_exited(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        (**self).process_exited(ctx)
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
}
