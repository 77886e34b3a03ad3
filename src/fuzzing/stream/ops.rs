//! The opcode table of `stream_ops` / `buffered_stream_ops`, its decoder, and the targets.

use super::{StreamStep, Via, run_model};
use crate::fuzzing::decode::{Input, Op, OpSpec, limit, op_name, size};
use crate::testing::model::{MODEL_READ_SIZE, ModelOp};

/// The opcode table of `stream_ops` and `buffered_stream_ops` (format version 1).
pub const STREAM_OPS: &[OpSpec] = &[
    OpSpec { code: 0x00, name: "write_eof", since: 1 },
    OpSpec { code: 0x01, name: "close", since: 1 },
    OpSpec { code: 0x02, name: "abort", since: 1 },
    OpSpec { code: 0x03, name: "pause_reading", since: 1 },
    OpSpec { code: 0x04, name: "resume_reading", since: 1 },
    OpSpec { code: 0x05, name: "set_protocol", since: 1 },
    OpSpec { code: 0x06, name: "writable", since: 1 },
    OpSpec { code: 0x07, name: "writable_completion", since: 1 },
    OpSpec { code: 0x08, name: "readable", since: 1 },
    OpSpec { code: 0x09, name: "readable_completion", since: 1 },
    OpSpec { code: 0x0A, name: "peer_eof", since: 1 },
    OpSpec { code: 0x0B, name: "peer_reset", since: 1 },
    OpSpec { code: 0x0C, name: "keep_open", since: 1 },
    OpSpec { code: 0x0D, name: "close_on_eof", since: 1 },
    OpSpec { code: 0x0E, name: "set_protocol_plain", since: 1 },
    OpSpec { code: 0x0F, name: "set_protocol_buffered", since: 1 },
    OpSpec { code: 0x80, name: "write", since: 1 },
    OpSpec { code: 0x81, name: "write_bytes", since: 1 },
    OpSpec { code: 0x82, name: "writelines", since: 1 },
    OpSpec { code: 0x83, name: "grant", since: 1 },
    OpSpec { code: 0x84, name: "peer_send", since: 1 },
    OpSpec { code: 0xC0, name: "set_write_buffer_limits", since: 1 },
    OpSpec { code: 0xC1, name: "buffer_sizes", since: 1 },
];

/// Decodes one `STREAM_OPS` operation: a model step, or new buffer sizes.
fn decode_step(op: &Op<'_>, buffered: bool) -> Option<Result<StreamStep, Vec<usize>>> {
    let step = |op: ModelOp, via: Via| Some(Ok(StreamStep { op, via }));
    let d = Via::Default;
    match op.code {
        0x00 => step(ModelOp::WriteEof, d),
        0x01 => step(ModelOp::Close, d),
        0x02 => step(ModelOp::Abort, d),
        0x03 => step(ModelOp::PauseReading, d),
        0x04 => step(ModelOp::ResumeReading, d),
        0x05 => step(ModelOp::SwapProtocol, d),
        0x06 => step(ModelOp::Writable, d),
        0x07 => step(ModelOp::Writable, Via::Completion),
        0x08 => step(ModelOp::Readable, d),
        0x09 => step(ModelOp::Readable, Via::Completion),
        0x0A => step(ModelOp::PeerEof, d),
        0x0B => step(ModelOp::PeerReset, d),
        0x0C => step(ModelOp::KeepOpen(true), d),
        0x0D => step(ModelOp::KeepOpen(false), d),
        0x0E if buffered => step(ModelOp::SwapProtocol, Via::SwapPlain),
        0x0F if buffered => step(ModelOp::SwapProtocol, Via::SwapBuffered),
        0x0E | 0x0F => step(ModelOp::SwapProtocol, d),
        0x80 => step(ModelOp::Write(size(op.u16(0))), d),
        0x81 => step(ModelOp::Write(size(op.u16(0))), Via::WriteBytes),
        0x82 => step(ModelOp::Write(size(op.u16(0))), Via::WriteLines),
        0x83 => step(ModelOp::Grant(size(op.u16(0))), d),
        // A buffered run reads in pieces as small as one byte: keep the peer's sends
        // small enough for that to stay fast.
        0x84 if buffered => step(ModelOp::PeerSend(size(op.u16(0)).min(4096)), d),
        0x84 => step(ModelOp::PeerSend(size(op.u16(0))), d),
        0xC0 => step(ModelOp::SetLimits(limit(op.u16(0)), limit(op.u16(2))), d),
        0xC1 if buffered && !op.operand.is_empty() => {
            Some(Err(op.operand.iter().map(|&b| buffer_size(b)).collect()))
        }
        _ => None,
    }
}

/// A `get_buffer` size from one byte: `1..=64`, up to 4 KiB, up to 64 KiB, or the whole
/// loop-wide read size.
fn buffer_size(b: u8) -> usize {
    let low = usize::from(b & 63);
    match b >> 6 {
        0 => 1 + low,
        1 => 1 + low * 64,
        2 => 1 + low * 1024,
        _ => MODEL_READ_SIZE,
    }
}

/// Stop decoding once this many bytes were written or sent by the peer: beyond it, an
/// input only costs time.
const BYTE_BUDGET: usize = 16 << 20;

fn decode_steps(data: &[u8], buffered: bool) -> Vec<Result<StreamStep, Vec<usize>>> {
    let Some(mut input) = Input::new(data) else { return Vec::new() };
    let mut steps = Vec::new();
    let mut bytes = 0usize;
    while let Some(op) = input.next_op(STREAM_OPS) {
        let Some(step) = decode_step(&op, buffered) else { continue };
        if let Ok(StreamStep { op: ModelOp::Write(n) | ModelOp::PeerSend(n), .. }) = &step {
            bytes += n;
            if bytes > BYTE_BUDGET {
                break;
            }
        }
        steps.push(step);
    }
    steps
}

/// The operations an input decodes to, one per line: for reading a crash input.
pub fn describe_stream(data: &[u8]) -> Vec<String> {
    let Some(mut input) = Input::new(data) else {
        return vec!["(ignored: unknown version)".into()];
    };
    std::iter::from_fn(|| input.next_op(STREAM_OPS))
        .map(|op| format!("{} {:02x?}", op_name(STREAM_OPS, op.code), op.operand))
        .collect()
}

fn run_target(data: &[u8], buffered: bool) {
    if let Err(e) = run_model(decode_steps(data, buffered).into_iter(), buffered) {
        panic!("implementation != model {e}");
    }
}

/// Fuzz target: one transport and the reference model, step by step (opcode table
/// [`STREAM_OPS`]). Panics on the first disagreement.
pub fn stream_ops(data: &[u8]) {
    run_target(data, false);
}

/// Fuzz target: as [`stream_ops`], with a buffered protocol whose `get_buffer` returns
/// small, varying buffers (`buffer_sizes`) and swaps between plain and buffered
/// protocols; data callbacks are compared by their total length per step, and their
/// content by the pattern.
pub fn buffered_stream_ops(data: &[u8]) {
    run_target(data, true);
}
