//! Transcripts of callbacks and the invariant checker that reads them.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt;
use std::rc::Rc;

use crate::stream::SendfileError;
use crate::{ConnectionError, DatagramAddr, Handle, Registry, RequestId, StreamHandle, Trace};

/// One callback delivered to a protocol, as recorded in a transcript.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// `connection_made`.
    Made,
    /// `data_received` (or `buffer_updated`) with these bytes.
    Data(Vec<u8>),
    /// `data_received` with this many bytes, when the harness does not keep data
    /// ([`SimConfig::keep_data`](super::SimConfig::keep_data) off).
    DataLen(usize),
    /// `eof_received`.
    Eof,
    /// `pause_writing`.
    Pause,
    /// `resume_writing`.
    Resume,
    /// `connection_lost`.
    Lost(Option<ConnectionError>),
    /// `handle_timeout`.
    Timeout,
    /// `handle_wake`.
    Wake,
    /// `request_completed`.
    Request(RequestId, Result<StreamHandle, ConnectionError>),
    /// `error_received` (datagram endpoints).
    ErrorReceived(ConnectionError),
    /// `datagram_received` (datagram endpoints).
    Datagram(Vec<u8>, Option<DatagramAddr>),
    /// `pipe_data_received(fd, data)` (subprocesses).
    PipeData(u32, Vec<u8>),
    /// `pipe_connection_lost(fd, err)` (subprocesses).
    PipeLost(u32, Option<ConnectionError>),
    /// `process_exited` (subprocesses).
    Exited,
    /// `sendfile_completed` for a sendfile through this transport.
    Sendfile(StreamHandle, Result<u64, SendfileError>),
}

impl Event {
    /// Shorthand for a `Data` event in test expectations.
    pub fn data(bytes: &[u8]) -> Self {
        Event::Data(bytes.to_vec())
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::Made => f.write_str("connection_made"),
            Event::Data(d) => write!(f, "data_received({:?})", String::from_utf8_lossy(d)),
            Event::DataLen(n) => write!(f, "data_received({n} bytes)"),
            Event::Eof => f.write_str("eof_received"),
            Event::Pause => f.write_str("pause_writing"),
            Event::Resume => f.write_str("resume_writing"),
            Event::Lost(None) => f.write_str("connection_lost(None)"),
            Event::Lost(Some(e)) => write!(f, "connection_lost({e})"),
            Event::Timeout => f.write_str("handle_timeout"),
            Event::Wake => f.write_str("handle_wake"),
            Event::Request(id, Ok(h)) => write!(f, "request_completed({}, Ok({h:?}))", id.get()),
            Event::Request(id, Err(e)) => write!(f, "request_completed({}, Err({e}))", id.get()),
            Event::ErrorReceived(e) => write!(f, "error_received({e})"),
            Event::Datagram(d, a) => {
                write!(f, "datagram_received({:?}, {a:?})", String::from_utf8_lossy(d))
            }
            Event::PipeData(fd, d) => {
                write!(f, "pipe_data_received({fd}, {:?})", String::from_utf8_lossy(d))
            }
            Event::PipeLost(fd, None) => write!(f, "pipe_connection_lost({fd}, None)"),
            Event::PipeLost(fd, Some(e)) => write!(f, "pipe_connection_lost({fd}, {e})"),
            Event::Exited => f.write_str("process_exited"),
            Event::Sendfile(h, Ok(n)) => write!(f, "sendfile_completed({h:?}, Ok({n}))"),
            Event::Sendfile(h, Err(e)) => write!(f, "sendfile_completed({h:?}, Err({e}))"),
        }
    }
}

/// Every callback of a loop, in delivery order, shared with the registry's tracer.
#[derive(Debug, Default)]
pub(crate) struct Recorder {
    pub(crate) log: Vec<(Handle, Event)>,
    pub(crate) keep_data: bool,
    /// Protocol swaps, each with the length of `log` when it happened: the events from
    /// there on went to the new protocol. Kept apart so transcripts stay callbacks only.
    pub(crate) swaps: Vec<(usize, Handle)>,
}

pub(crate) type SharedRecorder = Rc<RefCell<Recorder>>;

/// Installs a tracer on `reg` that appends every callback to `rec`.
pub(crate) fn record(reg: &mut Registry, rec: &SharedRecorder) {
    let rec = rec.clone();
    reg.set_tracer(Some(Box::new(move |h, trace| {
        let mut rec = rec.borrow_mut();
        let event = match trace {
            Trace::ProtocolSwapped => {
                let at = rec.log.len();
                rec.swaps.push((at, h));
                return;
            }
            Trace::ConnectionMade => Event::Made,
            Trace::DataReceived(d) if rec.keep_data => Event::Data(d.to_vec()),
            Trace::DataReceived(d) => Event::DataLen(d.len()),
            Trace::EofReceived => Event::Eof,
            Trace::PauseWriting => Event::Pause,
            Trace::ResumeWriting => Event::Resume,
            Trace::ConnectionLost(e) => Event::Lost(e.cloned()),
            Trace::Timeout => Event::Timeout,
            Trace::Wake => Event::Wake,
            Trace::RequestCompleted(id, r) => Event::Request(id, r.map_err(Clone::clone)),
            Trace::ErrorReceived(e) => Event::ErrorReceived(e.clone()),
            Trace::DatagramReceived(d, a) => Event::Datagram(d.to_vec(), a.cloned()),
            Trace::PipeDataReceived(fd, d) => Event::PipeData(fd, d.to_vec()),
            Trace::PipeConnectionLost(fd, e) => Event::PipeLost(fd, e.cloned()),
            Trace::ProcessExited => Event::Exited,
            Trace::SendfileCompleted(sh, r) => Event::Sendfile(sh, r.map_err(Clone::clone)),
            // Trace is non-exhaustive for users; every variant the core emits is above.
            #[allow(unreachable_patterns)]
            _ => return,
        };
        rec.log.push((h, event));
    })));
}

/// A broken invariant: what, where, and how to reproduce it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The harness step at which it was detected.
    pub step: u64,
    /// The seed that reproduces the run.
    pub seed: u64,
    /// The transport concerned, if one.
    pub handle: Option<Handle>,
    /// What was violated.
    pub message: String,
    /// The last callbacks of that transport (or of the loop), oldest first.
    pub recent: Vec<String>,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invariant violated at step {} (seed {}): {}",
            self.step, self.seed, self.message
        )?;
        if let Some(h) = self.handle {
            write!(f, " [transport {h:?}]")?;
        }
        if !self.recent.is_empty() {
            write!(f, "\n  recent callbacks:\n    {}", self.recent.join("\n    "))?;
        }
        Ok(())
    }
}

impl std::error::Error for Violation {}

/// Per-transport view the checker keeps: where it is in asyncio's protocol grammar
/// `CM [DR* | pause/resume]* [ER] CL` (spec §1.5).
#[derive(Debug, Default, Clone)]
struct Grammar {
    made: bool,
    eof: bool,
    lost: bool,
    paused: bool,
    /// Subprocess pipes (by fd) whose `pipe_connection_lost` was delivered.
    pipes_lost: [bool; 3],
    exited: bool,
}

/// Checks DESIGN.md §3.3 and §4 from the transcript, step by step: `connection_made`
/// first and once, `connection_lost` once and last, pause/resume strictly alternating
/// from a pause per protocol instance (after `set_protocol` the new protocol hears
/// `pause_writing` again while the transport is paused, gh-109051), nothing but
/// `connection_lost` after EOF's data, nothing at all after `connection_lost`.
#[derive(Debug, Default)]
pub(crate) struct Checker {
    seen: usize,
    /// How many of the recorder's swaps were applied.
    swaps_seen: usize,
    grammar: BTreeMap<Handle, Grammar>,
}

impl Checker {
    /// Checks the events recorded since the last call. `data_ok` verifies a delivery's
    /// bytes against what the link carried (byte conservation).
    pub(crate) fn check(
        &mut self,
        rec: &Recorder,
        mut data_ok: impl FnMut(Handle, &Event) -> Result<(), String>,
    ) -> Result<(), (Handle, String)> {
        let log = &rec.log;
        for (i, (h, event)) in log.iter().enumerate().skip(self.seen) {
            self.apply_swaps(&rec.swaps, i);
            let g = self.grammar.entry(*h).or_default();
            let fail = |m: &str| Err((*h, format!("{m}: {event}")));
            if g.lost {
                return fail("callback after connection_lost");
            }
            match event {
                Event::Made if g.made => return fail("connection_made twice"),
                Event::Made => g.made = true,
                _ if !g.made => return fail("callback before connection_made"),
                Event::Pause if g.paused => return fail("pause_writing twice without resume"),
                Event::Pause => g.paused = true,
                Event::Resume if !g.paused => return fail("resume_writing without pause"),
                Event::Resume => g.paused = false,
                Event::Data(_) | Event::DataLen(_) if g.eof => return fail("data after eof"),
                Event::Data(_) | Event::DataLen(_) => {
                    data_ok(*h, event).map_err(|m| (*h, m))?;
                }
                Event::Eof if g.eof => return fail("eof_received twice"),
                Event::Eof => g.eof = true,
                Event::PipeData(fd, _) | Event::PipeLost(fd, _)
                    if g.pipes_lost.get(*fd as usize) != Some(&false) =>
                {
                    return fail("pipe callback after that pipe's pipe_connection_lost");
                }
                Event::PipeLost(fd, _) => g.pipes_lost[*fd as usize] = true,
                Event::Exited if g.exited => return fail("process_exited twice"),
                Event::Exited => g.exited = true,
                Event::Lost(_) => g.lost = true,
                _ => {}
            }
        }
        self.apply_swaps(&rec.swaps, log.len());
        self.seen = log.len();
        Ok(())
    }

    /// Applies the swaps made before event `before`: the new protocol has heard no flow
    /// callback yet.
    fn apply_swaps(&mut self, swaps: &[(usize, Handle)], before: usize) {
        while let Some(&(at, h)) = swaps.get(self.swaps_seen)
            && at <= before
        {
            if let Some(g) = self.grammar.get_mut(&h) {
                g.paused = false;
            }
            self.swaps_seen += 1;
        }
    }

    /// True once `h` received `connection_lost`.
    pub(crate) fn is_lost(&self, h: Handle) -> bool {
        self.grammar.get(&h).is_some_and(|g| g.lost)
    }
}
