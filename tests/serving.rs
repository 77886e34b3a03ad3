//! The core's API for protocols that serve other transports or answer for them, without
//! TLS: `Ctx::hold_request` / `complete_request`, a served transport's graceful close
//! waiting for `served_closed`, and `set_served_half_close`. (The TLS engine is their
//! user; `tests/tls.rs` covers them through it.)

use std::cell::RefCell;
use std::io::{self, IoSlice};
use std::rc::Rc;
use std::time::Instant;

use aioport::testing::{Event, Sim};
use aioport::{
    CallbackResult, ConnectionError, Ctx, Endpoint, Extra, Handle, HeldRequest, Io, Protocol,
    RequestId, StreamHandle,
};

fn endpoint() -> Endpoint {
    Endpoint::Addr("127.0.0.1:7".parse().unwrap())
}

type Answers = Rc<RefCell<Vec<(RequestId, Result<StreamHandle, ConnectionError>)>>>;

/// Connects from its `connection_made` and records `request_completed`.
struct Asker {
    protocol: Option<Box<dyn Protocol>>,
    answers: Answers,
}

impl Protocol for Asker {
    fn connection_made(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        ctx.connect(endpoint(), self.protocol.take().expect("once"));
        Ok(())
    }
    fn request_completed(
        &mut self,
        _: &mut Ctx<'_>,
        id: RequestId,
        outcome: Result<StreamHandle, ConnectionError>,
    ) -> CallbackResult {
        self.answers.borrow_mut().push((id, outcome));
        Ok(())
    }
}

/// Holds the answer to the connect that opened it until the peer says "ready" (or fails
/// it on "no").
#[derive(Default)]
struct Gate {
    held: Option<HeldRequest>,
    second_hold: Rc<RefCell<Option<bool>>>,
}

impl Protocol for Gate {
    fn connection_made(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        self.held = ctx.hold_request();
        *self.second_hold.borrow_mut() = Some(ctx.hold_request().is_some());
        Ok(())
    }
    fn data_received(&mut self, ctx: &mut Ctx<'_>, data: &[u8]) -> CallbackResult {
        if let Some(held) = self.held.take() {
            let outcome = match data {
                b"ready" => Ok(ctx.stream()),
                _ => Err(ConnectionError::Tls("refused by the gate".into())),
            };
            ctx.complete_request(held, outcome);
        }
        Ok(())
    }
}

/// Says `word` as soon as it is connected.
struct Say(&'static [u8]);

impl Protocol for Say {
    fn connection_made(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        Ok(ctx.write(ctx.stream(), self.0)?)
    }
}

fn gate_run(word: &'static [u8]) -> (Sim, Answers, Option<bool>) {
    let mut sim = Sim::new(Instant::now(), 7);
    sim.listen(endpoint(), move || Box::new(Say(word)));
    let answers: Answers = Rc::new(RefCell::new(Vec::new()));
    let gate = Gate::default();
    let second = gate.second_hold.clone();
    sim.open(Asker { protocol: Some(Box::new(gate)), answers: answers.clone() });
    sim.run_until_idle();
    let second = *second.borrow();
    (sim, answers, second)
}

#[test]
fn a_held_connect_answer_arrives_when_the_new_protocol_completes_it() {
    let (sim, answers, second_hold) = gate_run(b"ready");
    assert_eq!(second_hold, Some(false), "an answer is held once");
    let answers = answers.borrow();
    let [(_, Ok(h))] = answers.as_slice() else { panic!("one Ok answer: {answers:?}") };
    // Answered after the peer's data reached the gate, not at connect time.
    let log = sim.log();
    let data_at = log.iter().position(|(x, e)| *x == h.handle() && matches!(e, Event::Data(_)));
    let answer_at = log.iter().position(|(_, e)| matches!(e, Event::Request(..)));
    assert!(data_at < answer_at, "{log:?}");
}

#[test]
fn a_held_connect_answer_can_be_a_failure() {
    let (_, answers, _) = gate_run(b"no");
    let answers = answers.borrow();
    assert!(
        matches!(answers.as_slice(), [(_, Err(ConnectionError::Tls(m)))] if m == "refused by the gate"),
        "{answers:?}"
    );
}

#[test]
fn hold_request_is_none_for_a_transport_nobody_asked_for() {
    let mut sim = Sim::new(Instant::now(), 8);
    let gate = Gate::default();
    let first = gate.second_hold.clone();
    struct First(Gate);
    impl Protocol for First {
        fn connection_made(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
            *self.0.second_hold.borrow_mut() = Some(ctx.hold_request().is_some());
            Ok(())
        }
    }
    sim.open(First(gate));
    sim.run_until_idle();
    assert_eq!(*first.borrow(), Some(false));
}

// ---------------------------------------------------------------------------------------
// Served transports
// ---------------------------------------------------------------------------------------

/// A sink that takes everything and remembers whether it was closed or aborted.
#[derive(Clone, Default)]
struct Sink(Rc<RefCell<(Vec<u8>, Option<&'static str>)>>);

impl Io for Sink {
    fn try_send(&mut self, _: Handle, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let mut s = self.0.borrow_mut();
        bufs.iter().for_each(|b| s.0.extend_from_slice(b));
        Ok(bufs.iter().map(|b| b.len()).sum())
    }
    fn try_recv(&mut self, _: Handle, _: &mut [u8]) -> io::Result<usize> {
        Err(io::ErrorKind::WouldBlock.into())
    }
    fn shutdown_write(&mut self, _: Handle) -> io::Result<()> {
        Ok(())
    }
    fn close(&mut self, _: Handle) {
        self.0.borrow_mut().1 = Some("close");
    }
    fn abort(&mut self, _: Handle) {
        self.0.borrow_mut().1 = Some("abort");
    }
}

/// Serves one transport for a keep-open app with `sink`; `half_close` as given; feeds it
/// EOF at once if `eof`. Once the sink is closed it ends the transport one (virtual)
/// second later with `Timeout`, as a TLS engine whose shutdown timed out.
struct Server {
    sink: Sink,
    half_close: bool,
    eof: bool,
    served: Rc<RefCell<Option<StreamHandle>>>,
    deadline: Option<Instant>,
}

impl Protocol for Server {
    fn connection_made(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        let h = ctx.insert_served_stream(
            Box::new(KeepOpen),
            Extra::default(),
            Box::new(self.sink.clone()),
        )?;
        ctx.set_served_half_close(h, self.half_close)?;
        if self.eof {
            ctx.feed_eof(h)?;
        }
        *self.served.borrow_mut() = Some(h);
        Ok(())
    }
    fn handle_wake(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        if self.deadline.is_none() && self.sink.0.borrow().1.is_some() {
            self.deadline = Some(ctx.now() + std::time::Duration::from_secs(1));
        }
        Ok(())
    }
    fn poll_timeout(&self) -> Option<Instant> {
        self.deadline
    }
    fn handle_timeout(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        self.deadline = None;
        let h = self.served.borrow().expect("served");
        ctx.served_closed(h, Some(timeout()))?;
        Ok(())
    }
}

fn timeout() -> ConnectionError {
    ConnectionError::Timeout("shutdown took too long".into())
}

struct KeepOpen;
impl Protocol for KeepOpen {
    fn eof_received(&mut self, _: &mut Ctx<'_>) -> CallbackResult<bool> {
        Ok(true)
    }
}

fn serve(half_close: bool, eof: bool) -> (Sim, Sink, StreamHandle) {
    let mut sim = Sim::new(Instant::now(), 9);
    let sink = Sink::default();
    let served = Rc::new(RefCell::new(None));
    let server =
        Server { sink: sink.clone(), half_close, eof, served: served.clone(), deadline: None };
    sim.open(server);
    sim.run_until_idle();
    let h = served.borrow().expect("the served transport");
    (sim, sink, h)
}

#[test]
fn a_served_close_waits_for_served_closed_then_loses_with_its_reason() {
    let (mut sim, sink, app) = serve(true, false);
    let start = sim.now();
    sim.enter(|ctx| {
        ctx.write(app, &b"bye"[..]).unwrap();
        ctx.close(app).unwrap();
        assert_eq!(ctx.is_closing(app), Ok(true));
        // Only the serving protocol may end it.
        assert!(ctx.served_closed(app, None).is_err());
    });
    sim.run_until_idle();
    // The sink was flushed and closed (not aborted); connection_lost came only when the
    // server ended the transport, a second later, with its reason.
    assert_eq!(*sink.0.borrow(), (b"bye".to_vec(), Some("close")));
    assert_eq!(sim.transcript(app), [Event::Made, Event::Lost(Some(timeout()))]);
    assert_eq!(sim.now() - start, std::time::Duration::from_secs(1));
}

#[test]
fn a_served_abort_is_lost_at_once() {
    let (mut sim, sink, app) = serve(true, false);
    sim.enter(|ctx| ctx.abort(app)).unwrap();
    sim.run_until_idle();
    assert_eq!(sink.0.borrow().1, Some("abort"));
    assert_eq!(sim.transcript(app), [Event::Made, Event::Lost(None)]);
}

#[test]
fn without_half_close_can_write_eof_is_false_and_keep_open_is_ignored() {
    let (mut sim, _, app) = serve(false, false);
    sim.enter(|ctx| assert_eq!(ctx.can_write_eof(app), Ok(false)));
    let (sim, sink, app) = serve(false, true);
    // The app answered EOF with keep-open; the transport closed anyway.
    assert_eq!(sink.0.borrow().1, Some("close"));
    assert_eq!(sim.transcript(app), [Event::Made, Event::Eof, Event::Lost(Some(timeout()))]);

    let (mut sim, sink, app) = serve(true, true);
    sim.enter(|ctx| assert_eq!(ctx.can_write_eof(app), Ok(true)));
    assert_eq!(sink.0.borrow().1, None, "keep-open honoured");
    assert_eq!(sim.transcript(app), [Event::Made, Event::Eof]);
}
