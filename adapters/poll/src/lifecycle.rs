//! Server lifecycle (asyncio's `Server`): `is_serving`, `close_clients`,
//! `abort_clients`, `wait_closed`, and resuming a server that was at its connection limit.

use std::time::{Duration, Instant};

use aioport::StreamHandle;

use crate::event_loop::RunGuard;
use crate::{Error, Loop, ServerId};

impl Loop {
    /// True until [`close_server`](Self::close_server) (asyncio's `is_serving`).
    pub fn is_serving(&self, id: ServerId) -> bool {
        self.servers.get(id).is_some()
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
            let Some(entry) = self.servers.get(id) else { continue };
            let indices = entry.listeners.clone();
            for index in indices {
                self.queue_listener(index);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::net::TcpStream;
    use std::rc::Rc;
    use std::time::Duration;

    use aioport::{CallbackResult, Ctx, Protocol};

    use crate::{Loop, ServerOptions};

    const LIMIT: Duration = Duration::from_secs(10);

    /// Counts its connections.
    struct Counted(Rc<Cell<usize>>);
    impl Protocol for Counted {
        fn connection_made(&mut self, _: &mut Ctx<'_>) -> CallbackResult {
            self.0.set(self.0.get() + 1);
            Ok(())
        }
    }

    /// The loop's per-server state: open servers, listener slots, client tables.
    fn bookkeeping(lp: &Loop) -> (usize, usize, usize) {
        (lp.servers.len(), lp.listeners.len(), lp.io.clients.servers())
    }

    #[test]
    fn closed_servers_leave_no_bookkeeping_behind() {
        let mut lp = Loop::new().unwrap();
        let opts = ServerOptions::default();
        let made = Rc::new(Cell::new(0));
        let m = made.clone();
        let factory = move || -> Box<dyn Protocol> { Box::new(Counted(m.clone())) };
        let kept = lp.create_server("127.0.0.1:0", factory.clone(), opts).unwrap();
        let mut last = None;
        for _ in 0..1000 {
            let s = lp.create_server("127.0.0.1:0", factory.clone(), opts).unwrap();
            assert!(last.is_none_or(|id| s.id() > id), "ids are never reused");
            last = Some(s.id());
            assert!(s.close(&mut lp));
            assert!(!s.is_serving(&lp));
        }
        assert_eq!(bookkeeping(&lp), (1, 2, 1));
        assert!(kept.is_serving(&lp));

        // A closed server with a connection keeps its client table until that ends.
        let s = lp.create_server("127.0.0.1:0", factory, opts).unwrap();
        let client = TcpStream::connect(s.addr()).unwrap();
        lp.run_until_timeout(|| made.get() == 1, LIMIT).unwrap();
        assert_eq!(bookkeeping(&lp), (2, 2, 2));
        assert!(s.close(&mut lp));
        assert_eq!(bookkeeping(&lp), (1, 2, 2));
        drop(client);
        s.wait_closed(&mut lp, LIMIT).unwrap();
        assert_eq!(bookkeeping(&lp), (1, 2, 1));
    }
}
