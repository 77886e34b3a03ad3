//! Sendfile on the tokio driver: asyncio's `loop.sendfile` as [`Loop::sendfile`]. The
//! zero-copy path is `Io::try_sendfile` in `sockets.rs`; the file type is
//! [`FileSource`], shared with the other drivers.

use std::fs::File;
use std::time::Instant;

use aioport::stream::{SendfileError, SendfileFallback};
use aioport::{Handle, WriteHandle};
pub use aioport_async_kit::sendfile::FileSource;

use crate::Error;
use crate::event_loop::Loop;

impl Loop {
    /// Sends `count` bytes of `file` from `offset` through the transport `h` (`None`:
    /// to the end of the file), running the loop until it is done: asyncio's
    /// `await loop.sendfile(transport, file, offset, count, fallback)`. Returns the bytes
    /// sent. Other transports are served meanwhile.
    ///
    /// Zero-copy (`sendfile(2)`, waiting on tokio's write readiness) on TCP and Unix
    /// sockets once what was queued before is flushed; elsewhere (TLS transports, pipes),
    /// or with [`SendfileFallback::Force`], the file is read in chunks written with flow
    /// control. `fallback` takes a `bool` as asyncio does (`false`: zero-copy or
    /// [`SendfileError::NotAvailable`]). While it runs, writes to `h` from callbacks fail
    /// with `WriteError::SendfileInProgress`. The file position is left at
    /// `offset + sent` when anything was sent (asyncio's rule), unchanged otherwise.
    /// From a protocol callback use [`Ctx::sendfile`](aioport::Ctx::sendfile) with a
    /// [`FileSource`] instead.
    ///
    /// # Errors
    ///
    /// [`Error::Sendfile`] — refused at the start (a zero `count`, a closing transport,
    /// no zero-copy with `fallback = false`, a stale handle) or stopped (the transport
    /// was closed or failed, the file could not be read); [`Error::Io`] when the file
    /// cannot be duplicated or seeked.
    pub async fn sendfile<H: WriteHandle>(
        &mut self,
        h: H,
        file: &File,
        offset: u64,
        count: Option<u64>,
        fallback: impl Into<SendfileFallback>,
    ) -> Result<u64, Error> {
        let handle: Handle = h.into();
        // A duplicate shares the open file (and its position) with `file`.
        let source = Box::new(FileSource::new(file.try_clone()?));
        let now = Instant::now();
        let started = self.registry.enter(now, &mut self.io, |ctx| {
            ctx.sendfile(h, source, offset, count, fallback.into())
        });
        self.after_registry(now);
        started?;
        let mut outcome = None;
        self.run(false, |lp| {
            while let Some(done) = lp.registry.poll_sendfile_done() {
                if done.handle == handle {
                    outcome = Some(done.outcome);
                }
            }
            outcome.is_some()
        })
        .await;
        // `run` returns only once the outcome is in.
        let outcome = outcome.unwrap_or(Err(SendfileError::Closed { sent: 0 }));
        aioport_async_kit::sendfile::seek_past_sent(file, offset, &outcome)?;
        Ok(outcome?)
    }
}
