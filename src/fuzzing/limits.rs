//! `limits`: [`WriteBufferLimits`] and [`FlowControl`] against a tiny model of their
//! documented rules, written differently: the model keeps the *history* of paused states
//! since the protocol's view last changed and derives the owed callbacks from it.

use super::decode::{Input, OpSpec, limit, size};
use crate::{FlowControl, FlowEdge, LimitsError, WriteBufferLimits, WriteError};

/// The opcode table of `limits` (format version 1).
pub const LIMITS_OPS: &[OpSpec] = &[
    OpSpec { code: 0x00, name: "poll_edge", since: 1 },
    OpSpec { code: 0x01, name: "reset_view", since: 1 },
    OpSpec { code: 0x02, name: "freeze", since: 1 },
    OpSpec { code: 0x03, name: "no_hard_limit", since: 1 },
    OpSpec { code: 0x80, name: "check", since: 1 },
    OpSpec { code: 0x81, name: "set_external_pending", since: 1 },
    OpSpec { code: 0x82, name: "set_hard_limit", since: 1 },
    OpSpec { code: 0x83, name: "admit", since: 1 },
    OpSpec { code: 0x84, name: "set_external_pending_huge", since: 1 },
    OpSpec { code: 0xC0, name: "set_limits", since: 1 },
];

/// The model: asyncio's rule (pause above high, resume at or below low) and DESIGN.md
/// §4's delivery rule (bring the view up to date; a whole pause → resume episode unseen
/// by a protocol that believed it could write is owed as both; a resume → pause unseen by
/// a paused protocol is owed nothing).
#[derive(Debug)]
struct Model {
    high: usize,
    low: usize,
    hard: Option<usize>,
    external: usize,
    queued: usize,
    frozen: bool,
    paused: bool,
    view: bool,
    /// The paused states since the view last changed, oldest first (starts with the view).
    history: Vec<bool>,
}

impl Model {
    fn new() -> Self {
        Model {
            high: 64 * 1024,
            low: 16 * 1024,
            hard: None,
            external: 0,
            queued: 0,
            frozen: false,
            paused: false,
            view: false,
            history: vec![false],
        }
    }

    fn derive(high: Option<usize>, low: Option<usize>) -> Result<(usize, usize), LimitsError> {
        let (h, l) = match (high, low) {
            (None, None) => (65_536, 16_384),
            (Some(h), None) => (h, h / 4),
            (None, Some(l)) => {
                let h = (l as u128 * 4).min(usize::MAX as u128) as usize;
                (h, l)
            }
            (Some(h), Some(l)) => (h, l),
        };
        if h < l { Err(LimitsError::HighBelowLow { high: h, low: l }) } else { Ok((h, l)) }
    }

    fn size(&self) -> usize {
        (self.queued as u128 + self.external as u128).min(usize::MAX as u128) as usize
    }

    fn recheck(&mut self) {
        if self.frozen {
            return;
        }
        let size = self.size();
        let next = if size > self.high {
            true
        } else if size <= self.low {
            false
        } else {
            self.paused
        };
        if next != self.paused {
            self.paused = next;
            self.history.push(next);
        }
    }

    fn owed(&self) -> Option<FlowEdge> {
        match (self.view, self.paused) {
            (false, true) => Some(FlowEdge::Pause),
            (true, false) => Some(FlowEdge::Resume),
            (false, false) if self.history.contains(&true) => Some(FlowEdge::Pause),
            _ => None,
        }
    }

    fn poll(&mut self) -> Option<FlowEdge> {
        let edge = self.owed()?;
        self.view = edge == FlowEdge::Pause;
        self.history = vec![self.view];
        if self.paused != self.view {
            self.history.push(self.paused);
        }
        Some(edge)
    }

    fn reset_view(&mut self) {
        self.view = false;
        self.history = vec![false];
        if self.paused {
            self.history.push(true);
        }
    }

    fn admit(&self, len: usize) -> Result<(), WriteError> {
        match self.hard {
            Some(limit) if self.size() as u128 + len as u128 > limit as u128 => {
                Err(WriteError::BufferFull { buffered: self.size(), len, limit })
            }
            _ => Ok(()),
        }
    }
}

type State = (bool, bool, usize, usize, Option<usize>, usize, usize, bool);

/// Fuzz target: `WriteBufferLimits` derivation and `FlowControl` sequences (limits
/// changes, sizes on both sides of the marks, external pending bytes up to `usize::MAX`,
/// hard limits, protocol swaps, freezing) against a tiny model (opcode table
/// [`LIMITS_OPS`]). Panics on the first disagreement.
pub fn limits(data: &[u8]) {
    let Some(mut input) = Input::new(data) else { return };
    let mut fc = FlowControl::new(WriteBufferLimits::default());
    let mut m = Model::new();
    let mut trace: Vec<String> = Vec::new();
    while let Some(op) = input.next_op(LIMITS_OPS) {
        trace.push(format!("{:02x} {:02x?}", op.code, op.operand));
        let x = op.u16(0);
        let fail = |what: String| -> ! { panic!("limits: {what}\n  after {}", trace.join(", ")) };
        match op.code {
            0x00 => {
                let (got, want) = (fc.poll_edge(), m.poll());
                if got != want {
                    fail(format!("poll_edge {got:?}, model {want:?}"));
                }
            }
            0x01 => {
                fc.reset_view();
                m.reset_view();
            }
            0x02 => {
                fc.freeze();
                m.frozen = true;
            }
            0x03 => {
                fc.set_hard_limit(None);
                m.hard = None;
            }
            0x80 => {
                m.queued = size(x);
                fc.check(m.queued);
                m.recheck();
            }
            0x81 | 0x84 => {
                m.external = if op.code == 0x84 { usize::MAX - size(x) } else { size(x) };
                fc.set_external_pending(m.external, m.queued);
                m.recheck();
            }
            0x82 => {
                m.hard = Some(size(x));
                fc.set_hard_limit(m.hard);
            }
            0x83 => {
                let len = if x == u16::MAX { usize::MAX } else { size(x) };
                let (got, want) = (fc.admit(m.queued, len), m.admit(len));
                if got != want {
                    fail(format!("admit({len}) = {got:?}, model {want:?}"));
                }
            }
            0xC0 => {
                let (hi, lo) = (limit(x), limit(op.u16(2)));
                let got = WriteBufferLimits::new(hi, lo);
                let want = Model::derive(hi, lo);
                if got.map(|l| (l.high(), l.low())) != want {
                    fail(format!(
                        "WriteBufferLimits::new({hi:?}, {lo:?}) = {got:?}, model {want:?}"
                    ));
                }
                if let (Ok(l), Ok((h, lw))) = (got, want) {
                    fc.set_limits(l, m.queued);
                    (m.high, m.low) = (h, lw);
                    m.recheck();
                }
            }
            _ => {}
        }
        let got: State = (
            fc.is_paused(),
            fc.has_edge(),
            fc.limits().high(),
            fc.limits().low(),
            fc.hard_limit(),
            fc.external_pending(),
            fc.size(m.queued),
            fc.is_frozen(),
        );
        let want: State =
            (m.paused, m.owed().is_some(), m.high, m.low, m.hard, m.external, m.size(), m.frozen);
        if got != want {
            panic!(
                "limits: (paused, has_edge, high, low, hard, external, size, frozen) {got:?}\n  \
                 model {want:?}\n  after {}",
                trace.join(", ")
            );
        }
    }
}
