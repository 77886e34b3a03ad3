//! Server lifecycle (asyncio's `Server`): `is_serving`, `close_clients`,
//! `abort_clients`, `wait_closed`, and resuming a server that was at its connection limit.

use std::time::{Duration, Instant};

use aioport::StreamHandle;

use crate::event_loop::RunGuard;
use crate::{Error, Loop, ServerId};

impl Loop {
    /// True until [`close_server`](Self::close_server) (asyncio's `is_serving`).
    pub fn is_serving(&self, id: ServerId) -> bool {
        self.servers.get(id.0 as usize).is_some_and(Option::is_some)
    }

    /// How many connections server `id` accepted that are still open (their socket not yet
    /// closed).
    pub fn server_connections(&self, id: ServerId) -> usize {
        self.io.clients.count(id)
    }

    /// Closes every connection server `id` accepted (asyncio 3.13's
    /// `Server.close_clients`): each flushes what it has queued, then
    /// `connection_lost(None)`. The server keeps listening unless closed too. Returns how
    /// many connections were asked to close.
    pub fn close_clients(&mut self, id: ServerId) -> usize {
        let handles = self.io.clients.of(id);
        self.with(|ctx| {
            handles.iter().filter(|&&h| ctx.close(StreamHandle::from_handle(h)).is_ok()).count()
        })
    }

    /// Aborts every connection server `id` accepted (asyncio 3.13's
    /// `Server.abort_clients`): queued bytes are dropped, `connection_lost(None)` is
    /// delivered before this returns. Returns how many connections were aborted.
    pub fn abort_clients(&mut self, id: ServerId) -> usize {
        let handles = self.io.clients.of(id);
        self.with(|ctx| {
            handles.iter().filter(|&&h| ctx.abort(StreamHandle::from_handle(h)).is_ok()).count()
        })
    }

    /// Runs the loop until server `id` is closed and every connection it accepted has
    /// ended (asyncio's `await server.wait_closed()`), serving everything else meanwhile;
    /// at most `timeout` (asyncio leaves the bound to `wait_for`).
    ///
    /// # Errors
    ///
    /// [`Error::TimedOut`] when connections are still open (or the server still listens)
    /// after `timeout`; [`Error::AlreadyRunning`]; [`Error::Io`] if the poller failed.
    pub fn wait_closed(&mut self, id: ServerId, timeout: Duration) -> Result<(), Error> {
        let _guard = RunGuard::enter()?;
        let deadline = Instant::now() + timeout;
        self.after_registry(Instant::now());
        while self.is_serving(id) || self.io.clients.count(id) > 0 {
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::TimedOut);
            }
            self.turn(Some(deadline - now))?;
        }
        Ok(())
    }

    /// Queues the listeners of servers that dropped below their connection limit.
    pub(crate) fn resume_servers(&mut self) {
        for id in std::mem::take(&mut self.io.clients.resume) {
            let indices = match self.servers.get(id.0 as usize) {
                Some(Some(entry)) => entry.listeners.clone(),
                _ => continue,
            };
            for index in indices {
                self.queue_listener(index);
            }
        }
    }
}
