//! A server's life after `close`: asyncio 3.13's `Server.close_clients`,
//! `Server.abort_clients` and `Server.wait_closed`.

use std::time::Duration;

use aioport::StreamHandle;

use crate::{Error, Loop, Server, ServerId};

impl Loop {
    /// Closes every connection server `id` accepted (asyncio 3.13's
    /// `Server.close_clients`): each flushes what it has queued, then
    /// `connection_lost(None)`. The server keeps listening unless closed too. Returns how
    /// many connections were asked to close.
    pub fn close_clients(&mut self, id: ServerId) -> usize {
        let handles = self.io.clients_of(id);
        self.with(|ctx| {
            handles.iter().filter(|&&h| ctx.close(StreamHandle::from_handle(h)).is_ok()).count()
        })
    }

    /// Aborts every connection server `id` accepted (asyncio 3.13's
    /// `Server.abort_clients`): queued bytes are dropped, `connection_lost(None)` is
    /// delivered before this returns. Returns how many connections were aborted.
    pub fn abort_clients(&mut self, id: ServerId) -> usize {
        let handles = self.io.clients_of(id);
        self.with(|ctx| {
            handles.iter().filter(|&&h| ctx.abort(StreamHandle::from_handle(h)).is_ok()).count()
        })
    }

    /// How many connections server `id` accepted are still open.
    pub fn server_connections(&self, id: ServerId) -> usize {
        self.io.client_count(id)
    }

    /// Runs the loop until server `id` is closed and every connection it accepted has
    /// ended (asyncio's `await server.wait_closed()`), serving everything else meanwhile;
    /// at most `timeout` (asyncio leaves the bound to `wait_for`). A `stop()` does not
    /// end it.
    ///
    /// # Errors
    ///
    /// [`Error::TimedOut`] when connections are still open (or the server still listens)
    /// after `timeout`.
    pub async fn wait_closed(&mut self, id: ServerId, timeout: Duration) -> Result<(), Error> {
        let ended = move |lp: &mut Loop| !lp.is_serving(id) && lp.io.client_count(id) == 0;
        self.run_bounded(false, ended, timeout).await
    }

    /// The server still listens.
    pub fn is_serving(&self, id: ServerId) -> bool {
        self.servers.get(id.get() as usize).is_some_and(Option::is_some)
    }
}

impl Server {
    /// See [`Loop::close_clients`].
    pub fn close_clients(&self, lp: &mut Loop) -> usize {
        lp.close_clients(self.id)
    }

    /// See [`Loop::abort_clients`].
    pub fn abort_clients(&self, lp: &mut Loop) -> usize {
        lp.abort_clients(self.id)
    }

    /// See [`Loop::wait_closed`].
    ///
    /// # Errors
    ///
    /// As [`Loop::wait_closed`].
    pub async fn wait_closed(&self, lp: &mut Loop, timeout: Duration) -> Result<(), Error> {
        lp.wait_closed(self.id, timeout).await
    }

    /// How many connections this server accepted are still open.
    pub fn connections(&self, lp: &Loop) -> usize {
        lp.server_connections(self.id)
    }
}
