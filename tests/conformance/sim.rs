//! The scenarios on the in-memory harness (`aioport::testing::Sim`): virtual time, seeded
//! partial sends and random read chunking, and the harness's invariant checker after every
//! step.
//!
//! Subprocess scenarios run on the harness's process loop (`aioport::testing::ProcessSim`)
//! instead: the first [`Driver::spawn`] switches this driver to it (`with`, `run_until`,
//! `take_errors` and `transports` then serve that loop), and every step plays one action of
//! each child's [`Program`] (a scripted `cat`, an exit, a grandchild…).

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Instant;

use aioport::testing::{ProcessSim, Sim as Harness, SimConfig};
use aioport::{
    CallbackResult, ConnectionError, Ctx, DatagramAddr, DatagramProtocol, Endpoint, LoopError,
    Protocol, RequestId, StreamHandle, SubprocessHandle, SubprocessProtocol,
};

use crate::driver::{Bind, Bound, ChildStdio, Driver, Factory, Family, Listening, Program};

/// Steps one `run_until` may take before the scenario counts as stuck.
const STEP_LIMIT: u64 = 2_000_000;

/// What the scripted `cat` copies per step: smaller than the stdin pipe, so the loop's
/// stdin buffer drains in several steps (and resumes writing on the way).
const CAT_CHUNK: usize = 16 * 1024;

pub struct Sim {
    sim: Harness,
    next_port: u16,
    /// The process loop, once a scenario spawned a child.
    procs: Option<Procs>,
}

/// The harness's process loop and the children it plays.
struct Procs {
    sim: ProcessSim,
    children: Vec<Played>,
    /// Loop errors `take_errors` already handed out.
    errors_taken: usize,
}

/// A simulated child and how far its program got.
struct Played {
    h: SubprocessHandle,
    program: Program,
    stdio: ChildStdio,
    /// Actions of `program` done so far.
    done: u32,
}

impl Played {
    /// Plays the next action of the program, if it has one now; true if it did something.
    fn step(&mut self, sim: &mut ProcessSim) -> bool {
        let h = self.h;
        let exited = sim.exit_status(h).is_some();
        let acted = match (self.program, self.done) {
            (Program::GrandchildHoldsStdout(_), 1) if sim.is_pipe_closed(h, 0) => {
                // The grandchild's `read` saw EOF on the stdin it shares.
                sim.child_write(h, 1, b"bye\n");
                sim.grandchild_exit(h);
                true
            }
            _ if exited => false,
            (Program::Cat, _) => {
                let data = sim.child_read_stdin(h, CAT_CHUNK);
                if !data.is_empty() {
                    sim.child_write(h, 1, &data);
                    true
                } else if sim.child_stdin_eof(h) {
                    sim.child_exit(h, 0);
                    true
                } else {
                    false
                }
            }
            (Program::Exit(code), 0) => {
                sim.child_exit(h, code);
                true
            }
            (Program::CloseStdoutThenSleep, 0) => {
                sim.child_close(h, 1);
                true
            }
            (Program::GrandchildHoldsStdout(code), 0) => {
                sim.child_exit_leaving_grandchild(h, code);
                true
            }
            (Program::OutThenErr, 0) => {
                sim.child_write(h, 1, b"out\n");
                let fd = if self.stdio == ChildStdio::StderrToStdout { 1 } else { 2 };
                sim.child_write(h, fd, b"err\n");
                sim.child_exit(h, 0);
                true
            }
            _ => false,
        };
        self.done += u32::from(acted);
        acted
    }
}

impl Procs {
    fn run_until(&mut self, what: &str, mut done: impl FnMut() -> bool) {
        for _ in 0..STEP_LIMIT {
            if done() {
                return;
            }
            let mut moved = false;
            for c in &mut self.children {
                moved |= c.step(&mut self.sim);
            }
            if !moved && !done() {
                panic!("sim: every child waits, before {what}");
            }
        }
        panic!("sim: {what} did not happen in {STEP_LIMIT} steps");
    }
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
            .zero_copy_sendfile(true)
            .max_steps(STEP_LIMIT);
        Sim { sim: Harness::with_config(Instant::now(), config), next_port: 1, procs: None }
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
        match &mut self.procs {
            Some(p) => p.sim.enter(f),
            None => self.sim.enter(f),
        }
    }

    fn reset(&mut self, h: StreamHandle) {
        self.sim.reset(h);
        self.sim.enter(|ctx| ctx.abort(h)).expect("reset a live transport");
    }

    fn run_until(&mut self, what: &str, mut done: impl FnMut() -> bool) {
        if let Some(p) = &mut self.procs {
            return p.run_until(what, done);
        }
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
        match &mut self.procs {
            Some(p) => {
                let new = p.sim.errors()[p.errors_taken..].to_vec();
                p.errors_taken += new.len();
                new
            }
            None => self.sim.take_loop_errors(),
        }
    }

    fn prepare_connections(&mut self, _n: usize) {}

    /// A file in memory; the harness's links have no zero-copy, so it goes by the
    /// fallback.
    fn sendfile_file(
        &mut self,
        data: &[u8],
    ) -> Result<Box<dyn aioport::stream::SendfileSource>, String> {
        Ok(Box::new(aioport::testing::MemFile::new(data.to_vec())))
    }

    fn transports(&self) -> usize {
        match &self.procs {
            Some(p) => p.sim.registry().len(),
            None => self.sim.registry().len(),
        }
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

    fn spawn(
        &mut self,
        protocol: Box<dyn SubprocessProtocol>,
        program: Program,
        stdio: ChildStdio,
    ) -> Result<SubprocessHandle, String> {
        let p = self.procs.get_or_insert_with(|| Procs {
            sim: ProcessSim::new(Instant::now()),
            children: Vec::new(),
            errors_taken: 0,
        });
        let piped = [true, true, stdio == ChildStdio::Pipes];
        let h = p.sim.spawn(protocol, piped);
        p.children.push(Played { h, program, stdio, done: 0 });
        Ok(h)
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
