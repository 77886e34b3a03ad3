//! `start_tls_pair`: two plaintext protocols exchange a prelude over the harness's faulty
//! links, then upgrade the same connection with [`Ctx::start_tls`] mid-stream and run
//! [`pair`](super::pair)'s pattern streams over TLS.
//!
//! Each side writes its prelude (a pattern of its own, honouring `pause_writing`; the
//! rest in one write when it switches, so its writes are queued and it is often paused at
//! the switch) and checks the other's byte by byte. A side switches once its whole
//! prelude is written and the other's whole prelude was read, handing whatever it read
//! past the prelude (the start of the other side's TLS records) to `start_tls`. Only the
//! side that switches first can hold queued plaintext then: the other one's prelude was
//! all read already. Who switches first comes from the input: the client, the server
//! (the other side writes its prelude only once it read the first one's), or whoever the
//! schedule favours (both write at once).

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use super::decode::{Input, millis};
use super::pair::{PAIR_OPS, Peer, check_delivery, run_checked, sim_config, steps, transfer};
use super::tls_pair::configs;
use crate::testing::{Event, Sim};
use crate::tls::{TlsEngine, TlsSession};
use crate::{CallbackResult, ConnectionError, Ctx, Protocol, StreamHandle};

/// The prelude's byte at `offset` from side `side`: a pattern with a prime period other
/// than the app streams' (251), so a lost, repeated or misplaced byte shows.
fn prelude_byte(side: usize, offset: usize) -> u8 {
    ((offset * 7 + 3 + side * 101) % 241) as u8
}

/// What one side's plaintext protocol saw, shared with the target.
#[derive(Debug, Default)]
struct Seen {
    /// Prelude bytes written.
    written: usize,
    /// Prelude bytes of the other side read (each checked).
    read: usize,
    /// `start_tls` was called (and returned `Ok`).
    switched: bool,
    /// `is_writing_paused` of the raw transport at the switch.
    paused_at_switch: bool,
    /// Bytes handed to `start_tls` as read past the prelude.
    early: usize,
    /// Callbacks the plaintext protocol received after its switch (none are owed).
    after_switch: Vec<&'static str>,
    /// The plaintext protocol heard `connection_lost` (before any switch).
    lost: usize,
}

/// The raw transport's protocol until the switch.
struct Prelude {
    side: usize,
    /// This side's prelude length and the other's.
    total: usize,
    expect: usize,
    chunk: usize,
    /// Writes its prelude only once the other's was read whole.
    responder: bool,
    paused: bool,
    engine: Option<TlsEngine>,
    seen: Rc<RefCell<Seen>>,
}

impl Prelude {
    fn after_switch(&self, what: &'static str) -> bool {
        let mut seen = self.seen.borrow_mut();
        if seen.switched {
            seen.after_switch.push(what);
        }
        seen.switched
    }

    /// Writes prelude chunks while not paused (everything left when `all`).
    fn write(&mut self, ctx: &mut Ctx<'_>, all: bool) -> CallbackResult {
        let h = ctx.stream();
        loop {
            let at = self.seen.borrow().written;
            if at == self.total || (self.paused && !all) {
                return Ok(());
            }
            let n = if all { self.total - at } else { self.chunk.min(self.total - at) };
            let data: Vec<u8> = (at..at + n).map(|i| prelude_byte(self.side, i)).collect();
            ctx.write(h, data)?;
            self.seen.borrow_mut().written = at + n;
        }
    }

    /// Writes what it may, and switches once both preludes are done; `rest` is what was
    /// read past the other's prelude.
    fn advance(&mut self, ctx: &mut Ctx<'_>, rest: &[u8]) -> CallbackResult {
        let h = ctx.stream();
        let all_read = self.seen.borrow().read == self.expect;
        if self.responder && !all_read {
            return Ok(());
        }
        self.write(ctx, all_read)?;
        if !all_read || self.engine.is_none() {
            return Ok(());
        }
        let paused = ctx.is_writing_paused(h)?;
        let engine = self.engine.take().expect("checked");
        ctx.start_tls(h, engine, rest)?;
        let mut seen = self.seen.borrow_mut();
        (seen.switched, seen.paused_at_switch, seen.early) = (true, paused, rest.len());
        Ok(())
    }
}

impl Protocol for Prelude {
    fn connection_made(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        self.advance(ctx, &[])
    }
    fn data_received(&mut self, ctx: &mut Ctx<'_>, data: &[u8]) -> CallbackResult {
        if self.after_switch("data_received") {
            return Ok(());
        }
        let (side, expect) = (1 - self.side, self.expect);
        let n = {
            let mut seen = self.seen.borrow_mut();
            let n = data.len().min(expect - seen.read);
            for (i, &b) in data[..n].iter().enumerate() {
                let at = seen.read + i;
                assert_eq!(
                    b,
                    prelude_byte(side, at),
                    "start_tls_pair: side {} read prelude byte {at} wrong",
                    self.side
                );
            }
            seen.read += n;
            n
        };
        if self.seen.borrow().read < expect {
            return Ok(());
        }
        // Past the prelude: only the side that switched first sends records this early,
        // and it switches once it read our whole prelude — which we wrote already.
        if n < data.len() {
            assert_eq!(self.seen.borrow().written, self.total, "start_tls_pair: records early");
        }
        self.advance(ctx, &data[n..])
    }
    fn eof_received(&mut self, _: &mut Ctx<'_>) -> CallbackResult<bool> {
        self.after_switch("eof_received");
        Ok(false)
    }
    fn pause_writing(&mut self, _: &mut Ctx<'_>) -> CallbackResult {
        if !self.after_switch("pause_writing") {
            assert!(!self.paused, "start_tls_pair: side {} paused twice", self.side);
            self.paused = true;
        }
        Ok(())
    }
    fn resume_writing(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        if self.after_switch("resume_writing") {
            return Ok(());
        }
        assert!(self.paused, "start_tls_pair: side {} resumed unpaused", self.side);
        self.paused = false;
        self.advance(ctx, &[])
    }
    fn connection_lost(&mut self, _: &mut Ctx<'_>, _: Option<ConnectionError>) -> CallbackResult {
        if !self.after_switch("connection_lost") {
            self.seen.borrow_mut().lost += 1;
        }
        Ok(())
    }
}

/// Fuzz target: a plaintext prelude on both sides, then `start_tls` on the same
/// connection mid-stream and [`pair`](super::pair)'s pattern streams over TLS (the
/// `start_tls_pair` row of the [fuzzing docs](super)). After the version byte: the
/// [`sim_config`] header; the two prelude sizes, the two app transfer sizes (as `pair`'s
/// transfers); the write size; a flags byte (bit 0: TLS 1.2; bits 1–2: who switches
/// first — 1 the client, 2 the server, else both write at once). Then [`PAIR_OPS`]:
/// `abort`, `close`, `pause_reading`, `resume_reading`, `write_eof` and
/// `set_write_buffer_limits` act on a side's app transport once it exists, on its raw one
/// before the switch, and are skipped during the handshake; `reset` and `stall` act on
/// the raw transport.
///
/// Checks, besides the harness's invariants after every step: every prelude byte is read
/// once, in order, as plaintext, and nothing of the TLS records is; the plaintext
/// protocol hears nothing after its switch, and pause/resume alternate for it; without a
/// fault both sides switch, both handshakes complete and every app byte arrives once, in
/// order; with one, a prefix; unless user code ended a transport (abort, close,
/// `write_eof`), a side that switched either has its app transport or a
/// [`TlsError`](crate::tls::TlsError) in its session once the run is idle;
/// `connection_lost` exactly once per app transport and per raw transport; no transport
/// left.
pub fn start_tls_pair(data: &[u8]) {
    run(data);
}

/// The run behind [`start_tls_pair`]: what each side's plaintext protocol saw (`None`
/// for an input of an unknown version).
fn run(data: &[u8]) -> Option<[Seen; 2]> {
    let mut input = Input::new(data)?;
    let config = sim_config(&mut input);
    let preludes = [transfer(input.u16()), transfer(input.u16())];
    let (total_a, total_b) = (transfer(input.u16()), transfer(input.u16()));
    let chunk = 16 + usize::from(input.byte()) * 64;
    let flags = input.byte();
    let (client, server) = &configs()[usize::from(flags & 1)];
    let first = match (flags >> 1) & 3 {
        1 => Some(0),
        2 => Some(1),
        _ => None,
    };
    let sides = [
        (total_a, Rc::new(Cell::new(0)), Rc::new(Cell::new(0u64))),
        (total_b, Rc::default(), Rc::default()),
    ];
    let peer = |i: usize| {
        Peer::new((sides[i].0, sides[1 - i].0), chunk, sides[i].1.clone(), sides[i].2.clone())
    };
    let (pa, pb) = (peer(0), peer(1));
    let engines = [
        client.engine_with(move |_| Box::new(pa)).expect("a client engine"),
        server.engine_with(move |_| Box::new(pb)).expect("a server engine"),
    ];
    let sessions: [TlsSession; 2] = [engines[0].session(), engines[1].session()];
    let seen: [Rc<RefCell<Seen>>; 2] = Default::default();
    let [ea, eb] = engines;
    let prelude = |side: usize, engine| Prelude {
        side,
        total: preludes[side],
        expect: preludes[1 - side],
        chunk,
        // The responder writes second, so it completes both preludes first.
        responder: first == Some(side),
        paused: false,
        engine: Some(engine),
        seen: seen[side].clone(),
    };
    let mut sim = Sim::with_config(super::base_instant(), config);
    let (raw_a, raw_b) = sim.pair(prelude(0, ea), prelude(1, eb));
    let raws = [raw_a, raw_b];
    // The transport a user action on side `s` goes to: the app's, the raw one before the
    // switch, none during the handshake.
    let target = |s: u8| {
        let i = usize::from(s & 1);
        sessions[i].app().or_else(|| (!seen[i].borrow().switched).then_some(raws[i]))
    };
    let mut faulted = false;
    // A fault from user code (abort, close, early write_eof), as opposed to a reset link.
    let mut user_fault = false;
    // Per side: reading paused on this transport.
    let mut paused_reading: [Option<StreamHandle>; 2] = [None; 2];
    while let Some(op) = input.next_op(PAIR_OPS) {
        let s = op.byte(0);
        match op.code {
            0x00 => steps(&mut sim, 1),
            0x01 => run_checked(&mut sim, "start_tls_pair"),
            0x40 => steps(&mut sim, s),
            0x41 => sim.advance(Duration::from_millis(millis(s))),
            0x44 => {
                faulted = true;
                sim.reset(raws[usize::from(s & 1)]);
            }
            0x80 => sim.stall(raws[usize::from(s & 1)], Duration::from_millis(millis(op.byte(1)))),
            code => {
                let Some(h) = target(s) else { continue };
                match code {
                    0x42 => {
                        (faulted, user_fault) = (true, true);
                        let _ = sim.enter(|ctx| ctx.abort(h));
                    }
                    0x43 => {
                        (faulted, user_fault) = (true, true);
                        let _ = sim.enter(|ctx| ctx.close(h));
                    }
                    0x45 | 0x46 => {
                        let pause = code == 0x45;
                        paused_reading[usize::from(s & 1)] = pause.then_some(h);
                        let _ = sim.enter(|ctx| {
                            if pause { ctx.pause_reading(h) } else { ctx.resume_reading(h) }
                        });
                    }
                    0x47 => {
                        (faulted, user_fault) = (true, true);
                        let _ = sim.enter(|ctx| ctx.write_eof(h));
                    }
                    0x81 => {
                        let high = usize::from(op.byte(1)) * 64;
                        let _ = sim.enter(|ctx| ctx.set_write_buffer_limits(h, Some(high), None));
                    }
                    _ => {}
                }
            }
        }
    }
    // Undo the read pauses still in force (`start_tls` resumed a raw one already), then
    // finish what is in flight before an hour passes (ending stalls).
    for (i, h) in paused_reading.into_iter().enumerate() {
        let Some(h) = h else { continue };
        let raw_switched = h == raws[i] && seen[i].borrow().switched;
        if !raw_switched {
            let _ = sim.enter(|ctx| ctx.resume_reading(h));
        }
    }
    run_checked(&mut sim, "start_tls_pair");
    sim.advance(Duration::from_secs(3600));
    run_checked(&mut sim, "start_tls_pair");
    let unfinished = !sim.registry().is_empty();
    if !user_fault {
        // Only the links failed (if anything): a side that switched either completed its
        // handshake or holds the typed reason it failed.
        for (i, session) in sessions.iter().enumerate() {
            if seen[i].borrow().switched && session.app().is_none() {
                assert!(
                    session.error().is_some(),
                    "start_tls_pair: side {i} switched, has no app transport and no error \
                     (faulted: {faulted}; seen: {:?}; raw transcript: {:?}; {} transports left)",
                    seen[i].borrow(),
                    sim.transcript(raws[i]),
                    sim.registry().len()
                );
            }
        }
    }
    if faulted {
        // As in `tls_pair`: the application gives up with abort().
        for i in 0..2 {
            let h = sessions[i].app().unwrap_or(raws[i]);
            for h in [h, raws[i]] {
                if sim.registry().transport(h.handle()).is_ok() {
                    let _ = sim.enter(|ctx| ctx.abort(h));
                }
            }
        }
        run_checked(&mut sim, "start_tls_pair");
    }
    for (i, seen) in seen.iter().enumerate() {
        let seen = seen.borrow();
        let what = format!("start_tls_pair: side {i}");
        assert!(
            seen.after_switch.is_empty(),
            "{what}'s old protocol heard {:?}",
            seen.after_switch
        );
        assert!(seen.lost <= 1, "{what}'s old protocol heard connection_lost twice");
        assert!(!seen.switched || seen.lost == 0, "{what} lost before switching yet switched");
        if !faulted {
            assert!(!unfinished, "{what}: transports left without a fault");
            assert!(seen.switched, "{what} did not switch without a fault");
            assert_eq!(seen.written, preludes[i], "{what} wrote part of its prelude");
            assert_eq!(seen.read, preludes[1 - i], "{what} read part of the other's prelude");
            assert!(
                sessions[i].app().is_some(),
                "{what}'s handshake did not complete without a fault: {:?}",
                sessions[i].error()
            );
        }
    }
    check_delivery(&sides, faulted, "start_tls_pair");
    for (i, session) in sessions.iter().enumerate() {
        let what = format!("start_tls_pair: side {i}");
        if let Some(app) = session.app() {
            let lost = sim.transcript(app).iter().filter(|e| matches!(e, Event::Lost(_))).count();
            assert_eq!(lost, 1, "{what}'s app received connection_lost {lost} times");
        }
        let lost = sim.transcript(raws[i]).iter().filter(|e| matches!(e, Event::Lost(_))).count();
        assert_eq!(lost, 1, "{what}'s raw transport received connection_lost {lost} times");
    }
    assert!(sim.registry().is_empty(), "start_tls_pair: {} transports left", sim.registry().len());
    Some(seen.map(|s| s.take()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `version, sim_config (seed 1, whole sends and reads, 4 * 64 + 64 B buffers, 1 ms),
    /// preludes, app transfers, write size, flags`.
    fn input(preludes: [u16; 2], flags: u8) -> Vec<u8> {
        let mut v = vec![1, 1, 0, 0, 0, 4, 1, 0, 0];
        for x in [preludes[0], preludes[1], 0x4000 | 900, 0x4000 | 1100] {
            v.extend_from_slice(&x.to_le_bytes());
        }
        v.extend_from_slice(&[4, flags]);
        v
    }

    /// The side that switches first wrote a prelude past the default high-water mark: it
    /// switches paused, its plaintext queued; the other side reads all of it and hands
    /// what it read past it (the start of the records, or nothing) to `start_tls`.
    #[test]
    fn the_first_side_switches_paused_with_its_prelude_queued() {
        for tls12 in [0, 1] {
            for (first, flags) in [(0, 2), (1, 4)] {
                let mut preludes = [5; 2];
                preludes[first] = 0xC000 | 6_000; // 66 000 bytes
                let seen = run(&input(preludes, flags | tls12)).expect("version 1");
                let (a, b) = (&seen[first], &seen[1 - first]);
                assert!(a.switched && b.switched, "{seen:?}");
                assert!(a.paused_at_switch, "{seen:?}");
                assert!(!b.paused_at_switch, "{seen:?}");
                assert_eq!((a.written, b.read), (66_000, 66_000));
                assert_eq!((b.written, a.read), (5, 5));
                assert_eq!(a.early, 0, "nothing follows the prelude of the side that goes second");
            }
        }
    }

    /// Both sides write at once, small preludes: both switch, neither paused.
    #[test]
    fn both_sides_at_once() {
        for flags in [0, 1, 6, 7] {
            let seen = run(&input([0x4000 | 500, 0x4000 | 700], flags)).expect("version 1");
            for s in &seen {
                assert!(s.switched && !s.paused_at_switch && s.lost == 0, "{seen:?}");
            }
            assert_eq!((seen[0].written, seen[1].read), (500, 500));
            assert_eq!((seen[1].written, seen[0].read), (700, 700));
        }
    }
}
