//! The scenarios on the in-memory harness (`aioport::testing::Sim`): virtual time, seeded
//! partial sends and random read chunking, and the harness's invariant checker after every
//! step.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Instant;

use aioport::testing::{Sim as Harness, SimConfig};
use aioport::{
    CallbackResult, ConnectionError, Ctx, DatagramAddr, DatagramProtocol, Endpoint, LoopError,
    Protocol, RequestId, StreamHandle,
};

use crate::driver::{Bind, Bound, Driver, Factory, Family, Listening};

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

    fn datagram_endpoint(
        &mut self,
        protocol: Box<dyn DatagramProtocol>,
        bind: Bind,
        remote: Option<DatagramAddr>,
        _recv_buffer: Option<usize>,
    ) -> Result<Bound, String> {
        let addr = match bind {
            Bind::Loopback(family) => self.unused_datagram_addr(family),
            Bind::Autobind => {
                let n = self.fresh();
                DatagramAddr::Unix(Some(format!("\0sim-{n}").into()))
            }
            Bind::At(addr) => addr,
        };
        let handle = self.sim.datagram_endpoint(Boxed(protocol), addr.clone(), remote);
        Ok(Bound { handle, addr })
    }

    fn unused_datagram_addr(&mut self, family: Family) -> DatagramAddr {
        let n = self.fresh();
        match family {
            Family::V4 => DatagramAddr::Inet(SocketAddr::from(([127, 0, 0, 1], n))),
            Family::V6 => DatagramAddr::Inet(SocketAddr::from(([0, 0, 0, 0, 0, 0, 0, 1], n))),
            Family::Unix => DatagramAddr::Unix(Some(format!("/sim/dgram-{n}").into())),
        }
    }
}

impl Sim {
    /// A port (or name suffix) no listener or endpoint of this simulation uses.
    fn fresh(&mut self) -> u16 {
        let n = self.next_port;
        self.next_port += 1;
        n
    }
}

/// A boxed datagram protocol as the harness's `impl DatagramProtocol`.
struct Boxed(Box<dyn DatagramProtocol>);

impl DatagramProtocol for Boxed {
    fn connection_made(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        self.0.connection_made(ctx)
    }
    fn datagram_received(
        &mut self,
        ctx: &mut Ctx<'_>,
        data: &[u8],
        addr: Option<&DatagramAddr>,
    ) -> CallbackResult {
        self.0.datagram_received(ctx, data, addr)
    }
    fn error_received(&mut self, ctx: &mut Ctx<'_>, err: ConnectionError) -> CallbackResult {
        self.0.error_received(ctx, err)
    }
    fn pause_writing(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        self.0.pause_writing(ctx)
    }
    fn resume_writing(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        self.0.resume_writing(ctx)
    }
    fn connection_lost(
        &mut self,
        ctx: &mut Ctx<'_>,
        err: Option<ConnectionError>,
    ) -> CallbackResult {
        self.0.connection_lost(ctx, err)
    }
    fn poll_timeout(&self) -> Option<Instant> {
        self.0.poll_timeout()
    }
    fn handle_timeout(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        self.0.handle_timeout(ctx)
    }
}
