//! Name resolution stays off the loop thread: a `localhost` connect asked for from a
//! callback returns at once, and another connection keeps being served until (and after)
//! the resolved connect completes.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use aioport::{CallbackResult, ConnectionError, Ctx, Endpoint, Protocol, RequestId, StreamHandle};
use aioport_poll::{Loop, ServerOptions};

const LIMIT: Duration = Duration::from_secs(10);

struct Echo;
impl Protocol for Echo {
    fn data_received(&mut self, ctx: &mut Ctx<'_>, data: &[u8]) -> CallbackResult {
        ctx.write_slice(ctx.stream(), data)?;
        Ok(())
    }
}

/// Bounces one byte off an echo server forever, counting round trips.
struct PingPong(Rc<Cell<u64>>);
impl Protocol for PingPong {
    fn connection_made(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        ctx.write_slice(ctx.stream(), b"x")?;
        Ok(())
    }
    fn data_received(&mut self, ctx: &mut Ctx<'_>, _: &[u8]) -> CallbackResult {
        self.0.set(self.0.get() + 1);
        ctx.write_slice(ctx.stream(), b"x")?;
        Ok(())
    }
}

/// What the asking protocol heard.
#[derive(Default)]
struct Outcome {
    completed: Cell<bool>,
    ok: RefCell<Option<Result<StreamHandle, ConnectionError>>>,
    rounds_when_done: Cell<u64>,
}

/// Asks for a `localhost` connection from a callback.
struct Asker {
    port: u16,
    outcome: Rc<Outcome>,
    rounds: Rc<Cell<u64>>,
}
impl Protocol for Asker {
    fn connection_made(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        let host = Endpoint::Host { host: "localhost".into(), port: self.port };
        ctx.connect(host, Box::new(Echo));
        // connect() returned without resolving: nothing is known yet.
        assert!(!self.outcome.completed.get());
        Ok(())
    }
    fn request_completed(
        &mut self,
        _: &mut Ctx<'_>,
        _: RequestId,
        result: Result<StreamHandle, ConnectionError>,
    ) -> CallbackResult {
        self.outcome.completed.set(true);
        self.outcome.rounds_when_done.set(self.rounds.get());
        *self.outcome.ok.borrow_mut() = Some(result);
        Ok(())
    }
}

#[test]
fn resolving_localhost_does_not_stall_another_connection() {
    let mut lp = Loop::new().unwrap();
    let srv = lp.create_server("127.0.0.1:0", || Box::new(Echo), ServerOptions::default()).unwrap();
    let rounds = Rc::new(Cell::new(0));
    lp.create_connection(Endpoint::Addr(srv.addr()), Box::new(PingPong(rounds.clone()))).unwrap();
    lp.run_until_timeout(|| rounds.get() >= 10, LIMIT).unwrap();

    let outcome = Rc::new(Outcome::default());
    let asker = Asker { port: srv.addr().port(), outcome: outcome.clone(), rounds: rounds.clone() };
    let started = rounds.get();
    // The asker itself is a connection to the server; its connection_made asks.
    lp.create_connection(Endpoint::Addr(srv.addr()), Box::new(asker)).unwrap();
    lp.run_until_timeout(|| outcome.completed.get(), LIMIT).unwrap();
    let resolved = outcome.ok.borrow_mut().take().unwrap();
    assert!(resolved.is_ok(), "localhost resolves and connects: {resolved:?}");
    // The ping-pong went on meanwhile and goes on after.
    assert!(outcome.rounds_when_done.get() >= started);
    let after = rounds.get();
    lp.run_until_timeout(|| rounds.get() >= after + 10, LIMIT).unwrap();
    println!(
        "ping-pong round trips while localhost resolved and connected: {}",
        outcome.rounds_when_done.get() - started
    );
}
