//! The scenarios on the in-memory harness (`aioport::testing::Sim`): virtual time, seeded
//! partial sends and random read chunking, and the harness's invariant checker after every
//! step.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Instant;

use aioport::testing::{Sim as Harness, SimConfig};
use aioport::{
    CallbackResult, ConnectionError, Ctx, Endpoint, LoopError, Protocol, RequestId, StreamHandle,
};

use crate::driver::{Driver, Factory, Listening};

/// Steps one `run_until` may take before the scenario counts as stuck.
const STEP_LIMIT: u64 = 2_000_000;

pub struct Sim {
    sim: Harness,
    next_port: u16,
}

type Outcome = Rc<RefCell<Option<Result<StreamHandle, ConnectionError>>>>;

/// Opens one connection from a callback (the harness serves `Ctx::connect`) and reports
/// the outcome; then it closes itself.
struct Connector {
    to: Endpoint,
    protocol: Option<Box<dyn Protocol>>,
    outcome: Outcome,
}

impl Protocol for Connector {
    fn connection_made(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        if let Some(p) = self.protocol.take() {
            ctx.connect(self.to.clone(), p);
        }
        Ok(())
    }
    fn request_completed(
        &mut self,
        ctx: &mut Ctx<'_>,
        _: RequestId,
        outcome: Result<StreamHandle, ConnectionError>,
    ) -> CallbackResult {
        *self.outcome.borrow_mut() = Some(outcome);
        ctx.abort(ctx.stream())?;
        Ok(())
    }
}

impl Driver for Sim {
    const NAME: &'static str = "sim";

    fn new() -> Self {
        // Partial sends and random read sizes exercise framing; the write-buffer bound
        // catches a protocol that ignores pause_writing (high water + one read + a write).
        let config = SimConfig::new(0x5eed)
            .max_send(48 * 1024)
            .max_read(40 * 1024)
            .keep_data(false)
            .max_write_buffer(512 * 1024)
            .max_steps(STEP_LIMIT);
        Sim { sim: Harness::with_config(Instant::now(), config), next_port: 1 }
    }

    fn listen(&mut self, factory: Factory) -> Listening {
        let port = self.next_port;
        self.next_port += 1;
        let endpoint = Endpoint::Addr(SocketAddr::from(([127, 0, 0, 1], port)));
        self.sim.listen(endpoint.clone(), factory);
        Listening { id: port as usize, endpoint }
    }

    fn close_listener(&mut self, _id: usize) -> bool {
        false
    }

    fn connect(
        &mut self,
        to: &Endpoint,
        protocol: Box<dyn Protocol>,
    ) -> Result<StreamHandle, ConnectionError> {
        let outcome: Outcome = Rc::new(RefCell::new(None));
        let connector =
            Connector { to: to.clone(), protocol: Some(protocol), outcome: outcome.clone() };
        self.sim.open(connector);
        self.run_until("the connect outcome", || outcome.borrow().is_some());
        outcome.take().expect("the outcome arrived")
    }

    fn unused_endpoint(&mut self) -> Endpoint {
        Endpoint::Addr(SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    fn with<R>(&mut self, f: impl FnOnce(&mut Ctx<'_>) -> R) -> R {
        self.sim.enter(f)
    }

    fn reset(&mut self, h: StreamHandle) {
        self.sim.reset(h);
        self.sim.enter(|ctx| ctx.abort(h)).expect("reset a live transport");
    }

    fn run_until(&mut self, what: &str, mut done: impl FnMut() -> bool) {
        for _ in 0..STEP_LIMIT {
            if done() {
                return;
            }
            match self.sim.try_step() {
                Ok(true) => {}
                Ok(false) if done() => return,
                Ok(false) => panic!("sim (seed {}): idle before {what}", self.sim.seed()),
                Err(v) => panic!("sim: invariant violated while waiting for {what}: {v}"),
            }
        }
        panic!("sim (seed {}): {what} did not happen in {STEP_LIMIT} steps", self.sim.seed());
    }

    fn take_errors(&mut self) -> Vec<LoopError> {
        self.sim.take_loop_errors()
    }

    fn prepare_connections(&mut self, _n: usize) {}

    fn transports(&self) -> usize {
        self.sim.registry().len()
    }
}
