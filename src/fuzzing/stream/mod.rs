//! One stream transport against the reference model: the runner behind `stream_ops`,
//! `buffered_stream_ops` and the quickcheck property `implementation == model`
//! (`tests/properties.rs`).
//!
//! The world is the model's ([`ModelOp`]): one transport in a [`Registry`] whose protocol
//! records callbacks and answers `eof_received` as told, over a socket that accepts bytes
//! up to a budget the input grants. Every byte sent and received follows the pattern
//! `i % 251`, checked on both sides. After each operation the runner compares the
//! callbacks, the write result and the observable state with the model's, then checks
//! that dispatching again delivers nothing (no work without new input).

mod ops;
mod recorder;

use std::io::{ErrorKind, IoSlice};
use std::rc::Rc;
use std::time::Instant;

use bytes::Bytes;

pub use self::ops::{STREAM_OPS, buffered_stream_ops, describe_stream, stream_ops};
use self::recorder::{BudgetIo, Recorder, Shared, pattern};
use crate::testing::Event;
use crate::testing::model::{MODEL_READ_SIZE, ModelOp, StreamModel};
use crate::{
    ConnectionError, Ctx, Extra, HandleError, Protocol, Registry, StreamHandle, WriteBufferLimits,
    WriteError,
};

/// How an operation reaches the registry. The model sees only the [`ModelOp`]; the
/// implementation must behave the same whichever way is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Via {
    /// The property's way: `write_slice`; `on_readable` / `on_writable`; a swap to a
    /// protocol of the runner's kind.
    #[default]
    Default,
    /// `Write` through the zero-copy `Ctx::write`.
    WriteBytes,
    /// `Write` through `Ctx::writelines`, split into chunks with an empty one among them.
    WriteLines,
    /// `Readable` / `Writable` as a completion-based driver: `handle_received` (an empty
    /// slice for EOF) or `handle_error`; `poll_transmit` + `handle_sent`.
    Completion,
    /// `SwapProtocol` to a plain (`data_received`) protocol.
    SwapPlain,
    /// `SwapProtocol` to a buffered (`get_buffer`) protocol.
    SwapBuffered,
}

/// One operation of a stream run: what the model sees and how it reaches the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamStep {
    /// The operation.
    pub op: ModelOp,
    /// How it is carried out.
    pub via: Via,
}

impl From<ModelOp> for StreamStep {
    fn from(op: ModelOp) -> Self {
        StreamStep { op, via: Via::Default }
    }
}

/// The observable state, in the order the model reports it: write_buffer_size,
/// is_closing, is_writing_paused, read interest, write interest, bytes sent, shut down,
/// closed.
type StateTuple = (usize, bool, bool, bool, bool, u64, bool, bool);

fn model_state(m: &StreamModel) -> StateTuple {
    let s = m.state();
    (
        s.write_buffer_size,
        s.is_closing,
        s.is_writing_paused,
        s.wants_read,
        s.wants_write,
        s.sent,
        s.shutdown,
        s.closed,
    )
}

/// One transport in a registry over a [`BudgetIo`], driven by [`StreamStep`]s.
struct Real {
    reg: Registry,
    io: BudgetIo,
    h: StreamHandle,
    now: Instant,
    shared: Rc<Shared>,
    /// The runner's protocols are buffered (`buffered_stream_ops`).
    buffered: bool,
    written: u64,
    /// What `write_buffer_limits()` must return: the last accepted limits.
    limits: WriteBufferLimits,
}

impl Real {
    fn new(buffered: bool) -> Self {
        let now = crate::fuzzing::base_instant();
        let shared = Rc::new(Shared::default());
        *shared.sizes.borrow_mut() = vec![7, 1, 64, 3];
        let mut reg = Registry::new(now);
        let first = Box::new(Recorder { shared: shared.clone(), buf: buffered.then(Vec::new) });
        let h = reg.insert_stream(first, Extra::default());
        let mut r = Real {
            reg,
            io: BudgetIo::default(),
            h,
            now,
            shared,
            buffered,
            written: 0,
            limits: WriteBufferLimits::default(),
        };
        r.reg.dispatch(now, &mut r.io);
        r
    }

    fn recorder(&self, buffered: bool) -> Box<dyn Protocol> {
        Box::new(Recorder { shared: self.shared.clone(), buf: buffered.then(Vec::new) })
    }

    /// User code whose result the model does not predict (it predicts its effects).
    fn user(&mut self, f: impl FnOnce(&mut Ctx<'_>)) {
        self.reg.enter(self.now, &mut self.io, f);
    }

    fn interest(&self) -> crate::Interest {
        self.reg.interest(self.h.handle()).unwrap_or_default()
    }

    fn write(&mut self, n: usize, via: Via) -> Result<(), WriteError> {
        let h = self.h;
        let data = pattern(self.written, n);
        let r = match via {
            Via::WriteBytes => self.reg.enter(self.now, &mut self.io, |ctx| ctx.write(h, data)),
            Via::WriteLines => {
                let data = Bytes::from(data);
                let third = n / 3;
                let chunks = [
                    data.slice(..third),
                    Bytes::new(),
                    data.slice(third..2 * third),
                    data.slice(2 * third..),
                ];
                self.reg.enter(self.now, &mut self.io, |ctx| ctx.writelines(h, &chunks))
            }
            _ => self.reg.enter(self.now, &mut self.io, |ctx| ctx.write_slice(h, &data)),
        };
        if r.is_ok() {
            self.written += n as u64;
        }
        r
    }

    /// A completion-based flush: offer, send what the budget allows, report it; until the
    /// queue drains or the budget runs out.
    fn writable_completion(&mut self) -> Result<(), String> {
        let (h, now) = (self.h.handle(), self.now);
        for _ in 0..1_000_000 {
            if !self.interest().write {
                return Ok(());
            }
            if self.io.reset {
                let err = ConnectionError::from(ErrorKind::ConnectionReset);
                return self.reg.handle_error(h, err, now, &mut self.io).map_err(|e| e.to_string());
            }
            let n = {
                let mut slices = [IoSlice::new(&[]); 3];
                let count = self.reg.poll_transmit(h, &mut slices).map_err(|e| e.to_string())?;
                let offered: usize = slices[..count].iter().map(|s| s.len()).sum();
                if offered == 0 {
                    return Err("write interest but poll_transmit offered nothing".into());
                }
                let n = offered.min(self.io.budget);
                self.io.take_sent(slices[..count].iter().flat_map(|s| s.iter().copied()).take(n));
                n
            };
            if n == 0 {
                return Ok(());
            }
            self.io.budget -= n;
            self.reg.handle_sent(h, n, now, &mut self.io).map_err(|e| e.to_string())?;
        }
        Err("poll_transmit / handle_sent did not drain".into())
    }

    fn readable_completion(&mut self) -> Result<(), String> {
        let (h, now) = (self.h.handle(), self.now);
        if !self.interest().read {
            return Ok(());
        }
        let r = if self.io.reset {
            self.reg.handle_error(h, ErrorKind::ConnectionReset.into(), now, &mut self.io)
        } else if self.io.peer > self.io.peer_read {
            let n = ((self.io.peer - self.io.peer_read) as usize).min(MODEL_READ_SIZE);
            let data = pattern(self.io.peer_read, n);
            self.io.peer_read += n as u64;
            self.reg.handle_received(h, &data, now, &mut self.io)
        } else if self.io.peer_eof {
            self.reg.handle_received(h, &[], now, &mut self.io)
        } else {
            Ok(())
        };
        r.map_err(|e| e.to_string())
    }

    /// `on_readable` until one model read's worth of bytes arrived: a buffered protocol
    /// takes them in pieces of its buffers' sizes.
    fn readable(&mut self) {
        let (h, now) = (self.h.handle(), self.now);
        let avail = (self.io.peer - self.io.peer_read) as usize;
        if !self.buffered || avail == 0 || self.io.reset {
            // Any interleaving of driver calls is legal: with or without read interest.
            let _ = self.reg.on_readable(h, now, &mut self.io);
            return;
        }
        self.io.recv_cap = Some(avail.min(MODEL_READ_SIZE));
        loop {
            let _ = self.reg.on_readable(h, now, &mut self.io);
            if self.io.recv_cap.is_none_or(|c| c == 0) || !self.interest().read {
                break;
            }
        }
        self.io.recv_cap = None;
    }

    fn apply(&mut self, step: &StreamStep) -> Result<Option<Result<(), WriteError>>, String> {
        let (h, now) = (self.h, self.now);
        let mut write = None;
        match step.op {
            ModelOp::Write(n) => write = Some(self.write(n, step.via)),
            ModelOp::WriteEof => self.user(|ctx| {
                let _ = ctx.write_eof(h);
            }),
            ModelOp::Close => self.user(|ctx| {
                let _ = ctx.close(h);
            }),
            ModelOp::Abort => self.user(|ctx| {
                let _ = ctx.abort(h);
            }),
            ModelOp::PauseReading => self.user(|ctx| {
                let _ = ctx.pause_reading(h);
            }),
            ModelOp::ResumeReading => self.user(|ctx| {
                let _ = ctx.resume_reading(h);
            }),
            ModelOp::SetLimits(hi, lo) => {
                let mut accepted = false;
                self.user(|ctx| accepted = ctx.set_write_buffer_limits(h, hi, lo).is_ok());
                if accepted {
                    self.limits = WriteBufferLimits::new(hi, lo).map_err(|e| e.to_string())?;
                }
            }
            ModelOp::SwapProtocol => {
                let buffered = match step.via {
                    Via::SwapPlain => false,
                    Via::SwapBuffered => true,
                    _ => self.buffered,
                };
                let p = self.recorder(buffered);
                self.user(|ctx| {
                    let _ = ctx.set_protocol(h, p);
                });
            }
            ModelOp::Grant(n) => self.io.budget += n,
            ModelOp::Writable if step.via == Via::Completion => self.writable_completion()?,
            ModelOp::Writable => {
                if self.interest().write {
                    self.reg
                        .on_writable(h.handle(), now, &mut self.io)
                        .map_err(|e| e.to_string())?;
                }
            }
            ModelOp::PeerSend(n) => self.io.peer += n as u64,
            ModelOp::PeerEof => self.io.peer_eof = true,
            ModelOp::PeerReset => self.io.reset = true,
            ModelOp::Readable if step.via == Via::Completion => self.readable_completion()?,
            ModelOp::Readable => self.readable(),
            ModelOp::KeepOpen(k) => self.shared.keep_open.set(k),
        }
        Ok(write)
    }

    /// The user-face queries through a `Ctx`, against the model's state.
    fn check_queries(&mut self, state: &StateTuple, gone: bool) -> Result<(), String> {
        let h = self.h;
        let limits = self.limits;
        let reading = state.3;
        self.reg.enter(self.now, &mut self.io, |ctx| {
            let got = (
                ctx.can_write_eof(h),
                ctx.write_buffer_size(h),
                ctx.write_buffer_limits(h),
                ctx.is_writing_paused(h),
                ctx.is_closing(h),
                ctx.is_reading(h),
                ctx.extra(h).cloned(),
            );
            let want = if gone {
                let s = HandleError::Stale;
                (Err(s), Err(s), Err(s), Err(s), Err(s), Err(s), Err(s))
            } else {
                (
                    Ok(true),
                    Ok(state.0),
                    Ok(limits),
                    Ok(state.2),
                    Ok(state.1),
                    Ok(reading),
                    Ok(Extra::default()),
                )
            };
            if got == want {
                Ok(())
            } else {
                Err(format!("user-face queries {got:?}\n  expected {want:?}"))
            }
        })?;
        if let Ok(t) = self.reg.transport(h.handle()) {
            if t.has_callback() || t.is_finished() {
                return Err("a live transport owes a callback at quiescence".into());
            }
            if t.write_buffer_size() == 0 && t.heap_bytes() != 0 {
                return Err(format!("an idle transport holds {} heap bytes", t.heap_bytes()));
            }
        }
        Ok(())
    }
}

/// Folds consecutive data events into one (a buffered protocol receives one read in
/// several `buffer_updated` calls).
fn coalesce(events: Vec<Event>) -> Vec<Event> {
    let mut out: Vec<Event> = Vec::with_capacity(events.len());
    for e in events {
        match (out.last_mut(), e) {
            (Some(Event::DataLen(a)), Event::DataLen(b)) => *a += b,
            (_, e) => out.push(e),
        }
    }
    out
}

/// Runs `steps` on the implementation and the reference model side by side; the first
/// disagreement is returned with the operations that led to it. With `buffered`, the
/// transport's protocols read through `get_buffer` (sizes set by `buffer_sizes`), and
/// data callbacks are compared by their total per step.
///
/// # Errors
///
/// A readable description of the first disagreement: the operations so far, the
/// callbacks of both sides, and both states.
pub fn check_against_model(steps: &[StreamStep], buffered: bool) -> Result<(), String> {
    run_model(steps.iter().cloned().map(Ok), buffered)
}

/// The runner with an extra step kind: `Err(sizes)` changes the buffer sizes.
pub(super) fn run_model(
    steps: impl Iterator<Item = Result<StreamStep, Vec<usize>>>,
    buffered: bool,
) -> Result<(), String> {
    let mut real = Real::new(buffered);
    let (mut model, first) = StreamModel::new();
    let mut trace: Vec<String> = Vec::new();
    let got: Vec<Event> = real.shared.log.borrow_mut().drain(..).collect();
    if got != first.events {
        return Err(format!("connection_made: {got:?} vs {:?}", first.events));
    }
    for step in steps {
        let step = match step {
            Ok(step) => step,
            Err(sizes) => {
                trace.push(format!("buffer_sizes({sizes:?})"));
                *real.shared.sizes.borrow_mut() = sizes;
                continue;
            }
        };
        trace.push(if step.via == Via::Default {
            format!("{:?}", step.op)
        } else {
            format!("{:?} via {:?}", step.op, step.via)
        });
        let fail =
            |trace: &[String], what: String| Err(format!("after {}:\n  {what}", trace.join(", ")));
        let write = match real.apply(&step) {
            Ok(w) => w,
            Err(e) => return fail(&trace, e),
        };
        let expect = model.apply(&step.op);
        let mut got: Vec<Event> = real.shared.log.borrow_mut().drain(..).collect();
        if buffered {
            got = coalesce(got);
        }
        // No work without new input: dispatching again delivers nothing.
        real.reg.dispatch(real.now, &mut real.io);
        let extra: Vec<Event> = real.shared.log.borrow_mut().drain(..).collect();
        let t = real.reg.transport(real.h.handle()).ok();
        let interest = real.interest();
        let state = model_state(&model);
        let actual = (
            t.map_or(0, |t| t.write_buffer_size()),
            t.is_none_or(|t| t.is_closing()),
            t.is_some_and(|t| t.is_writing_paused()),
            interest.read,
            interest.write,
            real.io.sent,
            real.io.shutdown,
            real.io.closed,
        );
        if got != expect.events || write != expect.write || actual != state || !extra.is_empty() {
            return fail(
                &trace,
                format!(
                    "callbacks {got:?}\n  model     {:?}\n  write {write:?} vs {:?}\n  \
                     state (size, closing, paused, read, write, sent, shutdown, closed) \
                     {actual:?}\n  model {state:?}\n  extra dispatch {extra:?}",
                    expect.events, expect.write
                ),
            );
        }
        let gone = t.is_none();
        if let Err(e) = real.check_queries(&state, gone) {
            return fail(&trace, e);
        }
    }
    Ok(())
}
