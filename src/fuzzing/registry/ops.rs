//! The opcode table of `registry_ops` and its decoder.

use super::world::Action;
use crate::fuzzing::decode::{Input, Op, OpSpec, limit, millis, op_name};

/// The opcode table of `registry_ops` (format version 1). `t` is a target selector: an
/// index into every handle the run has seen, stale ones included (0xFF: one that never
/// existed).
pub const REGISTRY_OPS: &[OpSpec] = &[
    OpSpec { code: 0x00, name: "dispatch", since: 1 },
    OpSpec { code: 0x01, name: "registry_connect", since: 1 },
    OpSpec { code: 0x02, name: "connect_succeeded", since: 1 },
    OpSpec { code: 0x03, name: "connect_failed", since: 1 },
    OpSpec { code: 0x04, name: "soon", since: 1 },
    OpSpec { code: 0x05, name: "panic", since: 1 },
    OpSpec { code: 0x06, name: "fail", since: 1 },
    OpSpec { code: 0x07, name: "connect", since: 1 },
    OpSpec { code: 0x08, name: "insert_served", since: 1 },
    OpSpec { code: 0x09, name: "cancel", since: 1 },
    OpSpec { code: 0x0A, name: "keep_open", since: 1 },
    OpSpec { code: 0x0B, name: "close_on_eof", since: 1 },
    OpSpec { code: 0x40, name: "insert", since: 1 },
    OpSpec { code: 0x41, name: "inside", since: 1 },
    OpSpec { code: 0x42, name: "readable", since: 1 },
    OpSpec { code: 0x43, name: "writable", since: 1 },
    OpSpec { code: 0x44, name: "handle_error", since: 1 },
    OpSpec { code: 0x45, name: "peer_eof", since: 1 },
    OpSpec { code: 0x46, name: "peer_reset", since: 1 },
    OpSpec { code: 0x47, name: "lie_send", since: 1 },
    OpSpec { code: 0x48, name: "lie_recv", since: 1 },
    OpSpec { code: 0x49, name: "received_eof", since: 1 },
    OpSpec { code: 0x4A, name: "connected_misuse", since: 1 },
    OpSpec { code: 0x4B, name: "probe", since: 1 },
    OpSpec { code: 0x4C, name: "advance", since: 1 },
    OpSpec { code: 0x4D, name: "later", since: 1 },
    OpSpec { code: 0x4E, name: "at", since: 1 },
    OpSpec { code: 0x4F, name: "arm_timer", since: 1 },
    OpSpec { code: 0x50, name: "write_eof", since: 1 },
    OpSpec { code: 0x51, name: "close", since: 1 },
    OpSpec { code: 0x52, name: "abort", since: 1 },
    OpSpec { code: 0x53, name: "pause_reading", since: 1 },
    OpSpec { code: 0x54, name: "resume_reading", since: 1 },
    OpSpec { code: 0x55, name: "set_protocol", since: 1 },
    OpSpec { code: 0x56, name: "set_protocol_buffered", since: 1 },
    OpSpec { code: 0x57, name: "query", since: 1 },
    OpSpec { code: 0x58, name: "wrong_kind", since: 1 },
    OpSpec { code: 0x59, name: "feed_eof", since: 1 },
    OpSpec { code: 0x5A, name: "served_writable", since: 1 },
    OpSpec { code: 0x5B, name: "served_closed", since: 1 },
    OpSpec { code: 0x5C, name: "buffer_mode", since: 1 },
    OpSpec { code: 0x80, name: "write", since: 1 },
    OpSpec { code: 0x81, name: "write_bytes", since: 1 },
    OpSpec { code: 0x82, name: "writelines", since: 1 },
    OpSpec { code: 0x83, name: "grant", since: 1 },
    OpSpec { code: 0x84, name: "peer_send", since: 1 },
    OpSpec { code: 0x85, name: "received", since: 1 },
    OpSpec { code: 0x86, name: "transmit", since: 1 },
    OpSpec { code: 0x87, name: "feed_data", since: 1 },
    OpSpec { code: 0x88, name: "set_served_pending", since: 1 },
    OpSpec { code: 0x89, name: "hard_limit", since: 1 },
    OpSpec { code: 0xC0, name: "set_write_buffer_limits", since: 1 },
];

/// A size from one byte: `0..64`, then steps of 64 B, 1 KiB and 16 KiB (up to ~1 MiB).
pub(super) fn small_size(b: u8) -> usize {
    let low = usize::from(b & 63);
    match b >> 6 {
        0 => low,
        1 => low * 64,
        2 => low * 1024,
        _ => low * 16 * 1024,
    }
}

/// What the driver does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum DriverOp {
    Dispatch,
    RegistryConnect,
    ConnectDone(bool),
    Insert(u8),
    Readable(u8),
    Writable(u8),
    HandleError(u8),
    PeerEof(u8),
    PeerReset(u8),
    LieSend(u8),
    LieRecv(u8),
    Received(u8, usize),
    ConnectedMisuse(u8),
    Probe(u8),
    Advance(u64),
    Grant(u8, usize),
    PeerSend(u8, usize),
    Transmit(u8, u8),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Step {
    Driver(DriverOp),
    /// User code: `Registry::enter`.
    Enter(Action),
    /// Mailed to a transport's protocol, performed in its next callback.
    Mail(u8, Action),
}

/// A plain action from one op, or `None` for a prefix / driver op.
fn action(op: &Op<'_>) -> Option<Action> {
    let (t, b) = (op.byte(0), op.byte(1));
    Some(match op.code {
        0x05 => Action::Panic,
        0x06 => Action::Fail,
        0x07 => Action::Connect,
        0x08 => Action::InsertServed,
        0x09 => Action::CancelTimer,
        0x0A => Action::KeepOpen(true),
        0x0B => Action::KeepOpen(false),
        0x4F => Action::ArmTimer(millis(t)),
        0x50 => Action::WriteEof(t),
        0x51 => Action::Close(t),
        0x52 => Action::Abort(t),
        0x53 => Action::PauseReading(t),
        0x54 => Action::ResumeReading(t),
        0x55 => Action::SetProtocol { t, buffered: false },
        0x56 => Action::SetProtocol { t, buffered: true },
        0x57 => Action::Query(t),
        0x58 => Action::WrongKind(t),
        0x59 => Action::FeedEof(t),
        0x5A => Action::ServedWritable(t),
        0x5B => Action::ServedClosed(t),
        0x5C => Action::BufferMode(t),
        0x80..=0x82 => Action::Write { t, n: small_size(b), via: op.code - 0x80 },
        0x87 => Action::FeedData(t, small_size(b)),
        0x88 => Action::SetServedPending(t, small_size(b)),
        0x89 => Action::HardLimit(t, (b != 0).then(|| small_size(b))),
        0xC0 => Action::SetLimits(t, limit(op.u16(1)), limit(op.u16(3))),
        _ => return None,
    })
}

/// An action, possibly behind `soon` / `later` / `at` prefixes.
fn wrapped_action(input: &mut Input<'_>, depth: u8) -> Option<Action> {
    let op = input.next_op(REGISTRY_OPS)?;
    let inner = |input: &mut Input<'_>| {
        if depth < 4 { wrapped_action(input, depth + 1).map(Box::new) } else { None }
    };
    match op.code {
        0x04 => Some(Action::Soon(inner(input)?)),
        0x4D => Some(Action::Later(millis(op.byte(0)), inner(input)?)),
        0x4E => Some(Action::At(millis(op.byte(0)), inner(input)?)),
        _ => action(&op),
    }
}

pub(super) fn decode(data: &[u8]) -> Vec<Step> {
    let Some(mut input) = Input::new(data) else { return Vec::new() };
    let mut steps = Vec::new();
    while !input.is_empty() {
        let before = input.clone();
        let Some(op) = input.next_op(REGISTRY_OPS) else { break };
        let (t, b) = (op.byte(0), op.byte(1));
        let driver = match op.code {
            0x00 => Some(DriverOp::Dispatch),
            0x01 => Some(DriverOp::RegistryConnect),
            0x02 => Some(DriverOp::ConnectDone(true)),
            0x03 => Some(DriverOp::ConnectDone(false)),
            0x40 => Some(DriverOp::Insert(t)),
            0x42 => Some(DriverOp::Readable(t)),
            0x43 => Some(DriverOp::Writable(t)),
            0x44 => Some(DriverOp::HandleError(t)),
            0x45 => Some(DriverOp::PeerEof(t)),
            0x46 => Some(DriverOp::PeerReset(t)),
            0x47 => Some(DriverOp::LieSend(t)),
            0x48 => Some(DriverOp::LieRecv(t)),
            0x49 => Some(DriverOp::Received(t, 0)),
            0x4A => Some(DriverOp::ConnectedMisuse(t)),
            0x4B => Some(DriverOp::Probe(t)),
            0x4C => Some(DriverOp::Advance(millis(t))),
            0x83 => Some(DriverOp::Grant(t, small_size(b))),
            0x84 => Some(DriverOp::PeerSend(t, small_size(b))),
            0x85 => Some(DriverOp::Received(t, small_size(b).max(1))),
            0x86 => Some(DriverOp::Transmit(t, b)),
            _ => None,
        };
        if let Some(d) = driver {
            steps.push(Step::Driver(d));
        } else if op.code == 0x41 {
            if let Some(a) = wrapped_action(&mut input, 0) {
                steps.push(Step::Mail(t, a));
            }
        } else {
            input = before;
            if let Some(a) = wrapped_action(&mut input, 0) {
                steps.push(Step::Enter(a));
            }
        }
    }
    steps
}

/// The operations an input decodes to, one per line: for reading a crash input.
pub fn describe_registry(data: &[u8]) -> Vec<String> {
    let Some(mut input) = Input::new(data) else {
        return vec!["(ignored: unknown version)".into()];
    };
    std::iter::from_fn(|| input.next_op(REGISTRY_OPS))
        .map(|op| format!("{} {:02x?}", op_name(REGISTRY_OPS, op.code), op.operand))
        .collect()
}
