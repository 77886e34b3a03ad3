//! Unit tests of the loop side: its tables are freed.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use aioport::{CallbackResult, ConnectionError, Ctx, Endpoint, Protocol};

use crate::{Loop, ServerOptions};

/// Counts ended connections.
struct Counted(Rc<Cell<usize>>);
impl Protocol for Counted {
    fn connection_lost(&mut self, _: &mut Ctx<'_>, _: Option<ConnectionError>) -> CallbackResult {
        self.0.set(self.0.get() + 1);
        Ok(())
    }
}

#[test]
fn ended_transports_leave_no_remote_state_behind() {
    const CONNECTIONS: usize = 200;
    let mut lp = Loop::new().unwrap();
    let server = lp
        .create_server("127.0.0.1:0", || Box::new(Counted(Rc::default())), ServerOptions::default())
        .unwrap();
    let lost = Rc::new(Cell::new(0));
    let mut remotes = Vec::new();
    for _ in 0..CONNECTIONS {
        let p = Box::new(Counted(lost.clone()));
        let h = lp.create_connection(Endpoint::Addr(server.addr()), p).unwrap();
        remotes.push(lp.remote_stream(h).unwrap());
    }
    assert_eq!(lp.remotes.streams.len(), CONNECTIONS);
    // Half close from here, half from the peer's side (the server's clients).
    for r in &remotes[..CONNECTIONS / 2] {
        r.close();
    }
    lp.close_clients(server.id());
    lp.run_until_timeout(|| lost.get() == CONNECTIONS, Duration::from_secs(10)).unwrap();
    assert!(remotes.iter().all(|r| r.wait_closed(Duration::ZERO).is_ok()));
    assert!(lp.remotes.streams.is_empty());
    assert!(lp.io.closed.is_empty());
}
