//! One datagram endpoint against the reference model
//! ([`DatagramModel`](crate::testing::model::DatagramModel)): the runner behind
//! `datagram_ops` and the quickcheck property in `tests/properties_datagram.rs`.
//!
//! The world is the model's ([`DatagramOp`]): one endpoint (connected or not, by the
//! input's header byte) in a [`Registry`] whose protocol records callbacks, over a socket
//! that accepts a granted number of datagrams, fails a send when told, and holds the
//! peer's datagrams, receive errors and oversized datagrams. Every datagram's content
//! encodes its number and length, checked at the socket and in the protocol. After each
//! operation the runner compares the callbacks, the `sendto` result, the observable state
//! and the datagrams the socket took with the model's; then checks quiescence and that
//! every datagram `sendto` accepted is accounted for exactly once: transmitted, reported
//! through `error_received`, dropped by `abort`, or still queued.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{self, ErrorKind, IoSlice};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::rc::Rc;
use std::time::Instant;

use super::decode::{Input, Op, OpSpec, limit, op_name, size};
use crate::datagram::RecvMeta;
use crate::testing::model::{AddrArg, DatagramEvent, DatagramModel, DatagramOp, Sent};
use crate::{
    CallbackResult, ConnectionError, Ctx, DatagramAddr, DatagramHandle, DatagramProtocol, Extra,
    Handle, HandleError, Io, Registry, WriteBufferLimits, WriteError,
};

/// The opcode table of `datagram_ops` (see the [module docs](super) for the format).
pub const DATAGRAM_OPS: &[OpSpec] = &[
    OpSpec { code: 0x00, name: "close", since: 1 },
    OpSpec { code: 0x01, name: "abort", since: 1 },
    OpSpec { code: 0x02, name: "pause_reading", since: 1 },
    OpSpec { code: 0x03, name: "resume_reading", since: 1 },
    OpSpec { code: 0x04, name: "set_protocol", since: 1 },
    OpSpec { code: 0x05, name: "writable", since: 1 },
    OpSpec { code: 0x06, name: "readable", since: 1 },
    OpSpec { code: 0x07, name: "fail_next_send", since: 1 },
    OpSpec { code: 0x08, name: "peer_error", since: 1 },
    OpSpec { code: 0x09, name: "peer_oversized", since: 1 },
    OpSpec { code: 0x0A, name: "driver_error", since: 1 },
    OpSpec { code: 0x0B, name: "no_hard_limit", since: 1 },
    OpSpec { code: 0x40, name: "grant", since: 1 },
    OpSpec { code: 0x80, name: "sendto_none", since: 1 },
    OpSpec { code: 0x81, name: "sendto_remote", since: 1 },
    OpSpec { code: 0x82, name: "sendto_other", since: 1 },
    OpSpec { code: 0x83, name: "peer_send", since: 1 },
    OpSpec { code: 0x84, name: "received", since: 1 },
    OpSpec { code: 0x85, name: "hard_limit", since: 1 },
    OpSpec { code: 0xC0, name: "set_write_buffer_limits", since: 1 },
];

/// Payload bytes one input may send and receive in all (keeps each run fast).
const BYTE_BUDGET: usize = 4 << 20;

/// The connected peer and another address.
const REMOTE: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9);
const OTHER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 10);

/// Datagram `id` of `len` bytes: its number, then a pattern that depends on both, so a
/// cut, merged or swapped datagram is recognised.
fn content(id: usize, len: usize) -> Vec<u8> {
    let tag = (id as u32).to_le_bytes();
    (0..len).map(|i| if i < 4 { tag[i] } else { ((id * 7 + i) % 251) as u8 }).collect()
}

/// What the recorder logs for a datagram's identity: a hash of its content (the model's
/// events are mapped the same way before comparing), so a datagram too short to hold its
/// number is still compared whole.
fn fingerprint(data: &[u8]) -> usize {
    data.iter()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
        as usize
}

/// The model's events as the recorder logs them.
fn as_logged(events: &[DatagramEvent]) -> Vec<DatagramEvent> {
    events
        .iter()
        .map(|e| match *e {
            DatagramEvent::Datagram { id, len } => {
                DatagramEvent::Datagram { id: fingerprint(&content(id, len)), len }
            }
            ref e => e.clone(),
        })
        .collect()
}

fn addr_of(a: AddrArg) -> Option<DatagramAddr> {
    match a {
        AddrArg::None => None,
        AddrArg::Remote => Some(DatagramAddr::Inet(REMOTE)),
        AddrArg::Other => Some(DatagramAddr::Inet(OTHER)),
    }
}

/// What waits at the scripted socket's receive side.
#[derive(Debug)]
enum Arrival {
    Datagram(usize, usize),
    Error,
    Oversized,
}

/// The scripted socket: a send budget in datagrams, a failure on demand, the peer's
/// arrivals; records what it sent.
#[derive(Debug, Default)]
struct DatagramIo {
    budget: usize,
    fail_next_send: bool,
    arrivals: VecDeque<Arrival>,
    sent: Vec<(Vec<u8>, Option<DatagramAddr>)>,
    closes: u32,
}

impl Io for DatagramIo {
    fn try_send(&mut self, _: Handle, _: &[IoSlice<'_>]) -> io::Result<usize> {
        panic!("Io::try_send called for a datagram endpoint");
    }

    fn try_recv(&mut self, _: Handle, _: &mut [u8]) -> io::Result<usize> {
        panic!("Io::try_recv called for a datagram endpoint");
    }

    fn shutdown_write(&mut self, _: Handle) -> io::Result<()> {
        panic!("Io::shutdown_write called for a datagram endpoint");
    }

    fn close(&mut self, _: Handle) {
        self.closes += 1;
    }

    fn try_send_to(
        &mut self,
        _: Handle,
        data: &[u8],
        addr: Option<&DatagramAddr>,
    ) -> io::Result<usize> {
        if std::mem::take(&mut self.fail_next_send) {
            return Err(ErrorKind::ConnectionRefused.into());
        }
        if self.budget == 0 {
            return Err(ErrorKind::WouldBlock.into());
        }
        self.budget -= 1;
        self.sent.push((data.to_vec(), addr.cloned()));
        Ok(data.len())
    }

    fn try_recv_from(&mut self, _: Handle, buf: &mut [u8]) -> io::Result<RecvMeta> {
        match self.arrivals.pop_front() {
            None => Err(ErrorKind::WouldBlock.into()),
            Some(Arrival::Error) => Err(ErrorKind::ConnectionRefused.into()),
            Some(Arrival::Datagram(_, len)) if len > buf.len() => {
                buf.fill(0xAA);
                Ok(RecvMeta { len: buf.len(), addr: Some(REMOTE.into()), truncated: true })
            }
            Some(Arrival::Oversized) => {
                buf.fill(0xAA);
                Ok(RecvMeta { len: buf.len(), addr: Some(REMOTE.into()), truncated: true })
            }
            Some(Arrival::Datagram(id, len)) => {
                let data = content(id, len);
                buf[..len].copy_from_slice(&data);
                Ok(RecvMeta { len, addr: Some(REMOTE.into()), truncated: false })
            }
        }
    }
}

/// Records callbacks as the model states them; checks every datagram's content.
struct Recorder(Rc<RefCell<Vec<DatagramEvent>>>);

impl Recorder {
    fn push(&self, e: DatagramEvent) -> CallbackResult {
        self.0.borrow_mut().push(e);
        Ok(())
    }
}

impl DatagramProtocol for Recorder {
    fn connection_made(&mut self, _: &mut Ctx<'_>) -> CallbackResult {
        self.push(DatagramEvent::Made)
    }
    fn datagram_received(
        &mut self,
        _: &mut Ctx<'_>,
        data: &[u8],
        addr: Option<&DatagramAddr>,
    ) -> CallbackResult {
        // A failed assertion in a callback reaches the loop's error queue, which the
        // runner checks after every step.
        assert_eq!(addr, Some(&DatagramAddr::Inet(REMOTE)), "datagram from the wrong sender");
        self.push(DatagramEvent::Datagram { id: fingerprint(data), len: data.len() })
    }
    fn error_received(&mut self, _: &mut Ctx<'_>, err: ConnectionError) -> CallbackResult {
        self.push(DatagramEvent::Error(err.io_kind().unwrap_or(ErrorKind::Other)))
    }
    fn pause_writing(&mut self, _: &mut Ctx<'_>) -> CallbackResult {
        self.push(DatagramEvent::Pause)
    }
    fn resume_writing(&mut self, _: &mut Ctx<'_>) -> CallbackResult {
        self.push(DatagramEvent::Resume)
    }
    fn connection_lost(&mut self, _: &mut Ctx<'_>, err: Option<ConnectionError>) -> CallbackResult {
        assert!(err.is_none(), "connection_lost({err:?}): the endpoint never fails here");
        self.push(DatagramEvent::Lost)
    }
}

/// One endpoint in a registry over a [`DatagramIo`].
struct Real {
    reg: Registry,
    io: DatagramIo,
    h: DatagramHandle,
    now: Instant,
    log: Rc<RefCell<Vec<DatagramEvent>>>,
    next_id: usize,
    next_peer_id: usize,
    accepted: Vec<usize>,
    dropped: Vec<usize>,
    limits: WriteBufferLimits,
}

impl Real {
    fn new(connected: bool) -> Self {
        let now = super::base_instant();
        let log = Rc::new(RefCell::new(Vec::new()));
        let mut reg = Registry::new(now);
        let remote = connected.then_some(DatagramAddr::Inet(REMOTE));
        let h = reg.insert_datagram(Box::new(Recorder(log.clone())), remote, Extra::default());
        let mut r = Real {
            reg,
            io: DatagramIo::default(),
            h,
            now,
            log,
            next_id: 0,
            next_peer_id: 0,
            accepted: Vec::new(),
            dropped: Vec::new(),
            limits: WriteBufferLimits::default(),
        };
        r.reg.dispatch(now, &mut r.io);
        r
    }

    fn user<R>(&mut self, f: impl FnOnce(&mut Ctx<'_>) -> R) -> R {
        self.reg.enter(self.now, &mut self.io, f)
    }

    fn queued_datagrams(&self) -> usize {
        self.reg.datagram(self.h.handle()).map_or(0, |t| t.queued_datagrams())
    }

    fn apply(&mut self, op: &DatagramOp) -> Option<Result<(), WriteError>> {
        let (h, now) = (self.h, self.now);
        let handle = h.handle();
        match *op {
            DatagramOp::SendTo(len, addr) => {
                let id = self.next_id;
                self.next_id += 1;
                let data = content(id, len);
                let to = addr_of(addr);
                let r = self.user(|ctx| ctx.sendto(h, &data, to.as_ref()));
                if r.is_ok() {
                    self.accepted.push(id);
                }
                return Some(r);
            }
            DatagramOp::Close => self.user(|ctx| {
                let _ = ctx.close(h);
            }),
            DatagramOp::Abort => {
                // What abort drops: the queue as it is now, in order.
                let queued = self.queued_datagrams();
                let lost = self.reg.datagram(handle).is_ok_and(|t| t.is_socket_closed());
                if !lost {
                    let first = self.accepted.len() - queued;
                    self.dropped.extend_from_slice(&self.accepted[first..]);
                }
                self.user(|ctx| {
                    let _ = ctx.abort(h);
                });
            }
            DatagramOp::PauseReading => self.user(|ctx| {
                let _ = ctx.pause_reading(h);
            }),
            DatagramOp::ResumeReading => self.user(|ctx| {
                let _ = ctx.resume_reading(h);
            }),
            DatagramOp::SetLimits(hi, lo) => {
                if self.user(|ctx| ctx.set_write_buffer_limits(h, hi, lo)).is_ok() {
                    self.limits = WriteBufferLimits::new(hi, lo).expect("accepted limits");
                }
            }
            DatagramOp::SetHardLimit(limit) => self.user(|ctx| {
                let _ = ctx.set_write_buffer_hard_limit(h, limit);
            }),
            DatagramOp::SwapProtocol => {
                let p = Box::new(Recorder(self.log.clone()));
                self.user(|ctx| {
                    let _ = ctx.set_datagram_protocol(h, p);
                });
            }
            DatagramOp::Grant(n) => self.io.budget += n,
            DatagramOp::FailNextSend => self.io.fail_next_send = true,
            // Any interleaving of driver calls is legal: with or without interest.
            DatagramOp::Writable => {
                let _ = self.reg.on_writable(handle, now, &mut self.io);
            }
            DatagramOp::PeerSend(len) => {
                let id = self.peer_id();
                self.io.arrivals.push_back(Arrival::Datagram(id, len));
            }
            DatagramOp::PeerError => self.io.arrivals.push_back(Arrival::Error),
            DatagramOp::PeerOversized => self.io.arrivals.push_back(Arrival::Oversized),
            DatagramOp::Readable => {
                let _ = self.reg.on_readable(handle, now, &mut self.io);
            }
            DatagramOp::Received(len) => {
                let id = self.peer_id();
                let data = content(id, len);
                let from = Some(DatagramAddr::Inet(REMOTE));
                let _ = self.reg.handle_datagram(handle, &data, from, now, &mut self.io);
            }
            DatagramOp::DriverError => {
                let err = ConnectionError::from(ErrorKind::ConnectionRefused);
                let _ = self.reg.handle_error(handle, err, now, &mut self.io);
            }
        }
        None
    }

    fn peer_id(&mut self) -> usize {
        self.next_peer_id += 1;
        self.next_peer_id - 1
    }
}

/// `sendto` results compared by meaning: the addresses inside `AddressMismatch` are
/// formatted for people, not for the model.
fn normalise(r: Option<Result<(), WriteError>>) -> Option<Result<(), WriteError>> {
    r.map(|r| {
        r.map_err(|e| match e {
            WriteError::AddressMismatch { .. } => {
                WriteError::AddressMismatch { expected: String::new(), given: String::new() }
            }
            e => e,
        })
    })
}

/// Runs `ops` on a datagram endpoint (connected to a peer when `connected`) and on the
/// reference model side by side; the first disagreement is returned with the operations
/// that led to it.
///
/// # Errors
///
/// A readable description of the first disagreement.
pub fn check_datagram_against_model(connected: bool, ops: &[DatagramOp]) -> Result<(), String> {
    let mut real = Real::new(connected);
    let (mut model, first) = DatagramModel::new(connected);
    let got: Vec<DatagramEvent> = real.log.borrow_mut().drain(..).collect();
    if got != first.events {
        return Err(format!("connection_made: {got:?} vs {:?}", first.events));
    }
    let mut trace = vec![format!("connected: {connected}")];
    for op in ops {
        trace.push(format!("{op:?}"));
        let fail = |what: String| Err(format!("after {}:\n  {what}", trace.join(", ")));
        let sendto = normalise(real.apply(op));
        let expect = model.apply(op);
        let got: Vec<DatagramEvent> = real.log.borrow_mut().drain(..).collect();
        let want = as_logged(&expect.events);
        if got != want {
            return fail(format!("callbacks {got:?}\n  expected {want:?}"));
        }
        if let Some(e) = real.reg.poll_error() {
            return fail(format!("a callback failed: {e}"));
        }
        if sendto != expect.sendto {
            return fail(format!("sendto returned {sendto:?}, expected {:?}", expect.sendto));
        }
        if let Err(e) = check_state(&mut real, &model) {
            return fail(e);
        }
    }
    check_accounting(&real, &model).map_err(|e| format!("after {}:\n  {e}", trace.join(", ")))
}

/// The state, the user-face queries, the socket's datagrams and quiescence.
fn check_state(real: &mut Real, model: &DatagramModel) -> Result<(), String> {
    let want = model.state();
    let h = real.h;
    let interest = real.reg.interest(h.handle()).unwrap_or_default();
    let got_interest = (interest.read, interest.write);
    if got_interest != (want.wants_read, want.wants_write) {
        return Err(format!("interest {got_interest:?}, model {want:?}"));
    }
    let gone = want.gone;
    let limits = real.limits;
    let got = real.user(|ctx| {
        (
            ctx.write_buffer_size(h),
            ctx.write_buffer_limits(h),
            ctx.is_writing_paused(h),
            ctx.is_closing(h),
            ctx.is_reading(h),
        )
    });
    let expect = if gone {
        let s = HandleError::Stale;
        (Err(s), Err(s), Err(s), Err(s), Err(s))
    } else {
        (
            Ok(want.write_buffer_size),
            Ok(limits),
            Ok(want.is_writing_paused),
            Ok(want.is_closing),
            Ok(want.is_reading),
        )
    };
    if got != expect {
        return Err(format!("user-face queries {got:?}\n  expected {expect:?}"));
    }
    if !gone && real.queued_datagrams() != want.queued_datagrams {
        return Err(format!(
            "{} datagrams queued, model {}",
            real.queued_datagrams(),
            want.queued_datagrams
        ));
    }
    check_sent(&real.io.sent, model.sent())?;
    if real.io.closes != u32::from(want.closed) {
        return Err(format!(
            "Io::close called {} times, socket closed: {}",
            real.io.closes, want.closed
        ));
    }
    if let Ok(t) = real.reg.datagram(h.handle())
        && t.has_callback()
    {
        return Err("a live endpoint owes a callback at quiescence".into());
    }
    Ok(())
}

/// Every datagram the socket took is one the model sent: same number, whole, in order,
/// to the right address.
fn check_sent(got: &[(Vec<u8>, Option<DatagramAddr>)], want: &[Sent]) -> Result<(), String> {
    if got.len() != want.len() {
        return Err(format!("the socket took {} datagrams, model {}", got.len(), want.len()));
    }
    for ((data, addr), s) in got.iter().zip(want) {
        if *data != content(s.id, s.len) {
            return Err(format!("datagram {} not sent whole ({} bytes)", s.id, data.len()));
        }
        if *addr != addr_of(s.addr) {
            return Err(format!("datagram {} sent to {addr:?}, expected {:?}", s.id, s.addr));
        }
    }
    Ok(())
}

/// Every accepted datagram exactly once: transmitted, failed, dropped or queued.
fn check_accounting(real: &Real, model: &DatagramModel) -> Result<(), String> {
    let mut seen: Vec<usize> = model.sent().iter().map(|s| s.id).collect();
    seen.extend_from_slice(model.failed());
    seen.extend_from_slice(&real.dropped);
    seen.extend(model.queued());
    seen.sort_unstable();
    if seen != real.accepted {
        return Err(format!(
            "sendto accepted {:?}; transmitted, failed, dropped or queued: {seen:?}",
            real.accepted
        ));
    }
    if real.dropped != model.dropped() {
        return Err(format!("abort dropped {:?}, model {:?}", real.dropped, model.dropped()));
    }
    Ok(())
}

fn decode(op: &Op<'_>) -> DatagramOp {
    match op.code {
        0x00 => DatagramOp::Close,
        0x01 => DatagramOp::Abort,
        0x02 => DatagramOp::PauseReading,
        0x03 => DatagramOp::ResumeReading,
        0x04 => DatagramOp::SwapProtocol,
        0x05 => DatagramOp::Writable,
        0x06 => DatagramOp::Readable,
        0x07 => DatagramOp::FailNextSend,
        0x08 => DatagramOp::PeerError,
        0x09 => DatagramOp::PeerOversized,
        0x0A => DatagramOp::DriverError,
        0x0B => DatagramOp::SetHardLimit(None),
        0x40 => DatagramOp::Grant(usize::from(op.byte(0) % 16)),
        0x80 => DatagramOp::SendTo(size(op.u16(0)), AddrArg::None),
        0x81 => DatagramOp::SendTo(size(op.u16(0)), AddrArg::Remote),
        0x82 => DatagramOp::SendTo(size(op.u16(0)), AddrArg::Other),
        0x83 => DatagramOp::PeerSend(size(op.u16(0))),
        0x84 => DatagramOp::Received(size(op.u16(0))),
        0x85 => DatagramOp::SetHardLimit(Some(size(op.u16(0)))),
        _ => DatagramOp::SetLimits(limit(op.u16(0)), limit(op.u16(2))),
    }
}

/// The header (connected?) and operations an input decodes to, cut at the byte budget.
fn decode_ops(data: &[u8]) -> Option<(bool, Vec<DatagramOp>)> {
    let mut input = Input::new(data)?;
    let connected = input.byte() & 1 == 1;
    let mut ops = Vec::new();
    let mut bytes = 0usize;
    while let Some(op) = input.next_op(DATAGRAM_OPS) {
        let op = decode(&op);
        if let DatagramOp::SendTo(n, _) | DatagramOp::PeerSend(n) | DatagramOp::Received(n) = op {
            bytes += n;
            if bytes > BYTE_BUDGET {
                break;
            }
        }
        ops.push(op);
    }
    Some((connected, ops))
}

/// The operations an input decodes to, one per line: for reading a crash input.
pub fn describe_datagram(data: &[u8]) -> Vec<String> {
    let Some(mut input) = Input::new(data) else {
        return vec!["(ignored: unknown version)".into()];
    };
    let connected = input.byte() & 1 == 1;
    std::iter::once(format!("connected: {connected}"))
        .chain(
            std::iter::from_fn(|| input.next_op(DATAGRAM_OPS))
                .map(|op| format!("{} {:02x?}", op_name(DATAGRAM_OPS, op.code), op.operand)),
        )
        .collect()
}

/// Fuzz target: one datagram endpoint and the reference model, step by step (opcode
/// table [`DATAGRAM_OPS`]; after the version byte, a header byte whose bit 0 makes the
/// endpoint connected). Panics on the first disagreement.
pub fn datagram_ops(data: &[u8]) {
    let Some((connected, ops)) = decode_ops(data) else { return };
    if let Err(e) = check_datagram_against_model(connected, &ops) {
        panic!("implementation != model {e}");
    }
}
