//! Dispatch: the only place a protocol is ever called. One callback at a time, each with
//! its protocol taken out of its slot (so its `Ctx` can borrow the whole loop state), each
//! inside `catch_unwind`, never nested.

use std::panic::{AssertUnwindSafe, catch_unwind};

use super::state::{Closure, Core, Entry, NO_HANDLE, Notice, READ_BUFFER_SIZE, panic_message};
use super::transport::{AnyProtocol, Transport};
use super::{LoopError, Trace};
use crate::datagram::{DatagramCallback, DatagramRead};
use crate::stream::{ReadOutcome, SendfileDone, SendfileError, StreamCallback, StreamKind};
use crate::subprocess::SubprocessCallback;
use crate::{
    CallbackResult, ConnectionError, Ctx, DriverError, Handle, Io, Protocol, ProtocolError,
    StreamHandle, StreamTransport,
};

/// The next callback of a slot, whatever its kind.
enum Next {
    Stream(StreamCallback),
    Datagram(DatagramCallback),
    Subprocess(SubprocessCallback),
}

/// Calls a stream-only callback; a datagram protocol (which a stream slot never holds:
/// `set_protocol` checks the kind) answers with the default.
fn on_stream<T: Default>(
    p: &mut AnyProtocol,
    f: impl FnOnce(&mut dyn Protocol) -> CallbackResult<T>,
) -> CallbackResult<T> {
    p.stream().map_or(Ok(T::default()), f)
}

/// What a protocol call produced: its result, or the panic message.
type Invoked<T> = Result<Result<T, ProtocolError>, String>;

impl Core {
    /// Runs the first `n` waiting `call_soon` closures — those queued before the current
    /// driver call (later ones run on the next call: asyncio's rule) — serving transports
    /// to quiescence after each.
    pub(crate) fn run_soon(&mut self, n: usize, io: &mut dyn Io) {
        for _ in 0..n {
            let Some(f) = self.soon.pop_front() else { break };
            self.run_closure(f, io);
            self.drain(io);
        }
    }

    pub(super) fn run_closure(&mut self, f: Closure, io: &mut dyn Io) {
        let now = self.now;
        let mut ctx = Ctx::new(self, io, NO_HANDLE, now);
        if let Err(payload) = catch_unwind(AssertUnwindSafe(|| f(&mut ctx))) {
            self.report(LoopError::Panicked {
                handle: None,
                callback: "call_soon/call_later closure",
                message: panic_message(payload),
            });
        }
    }

    /// Serves every transport with work until none has any: the quiescence guarantee of
    /// DESIGN.md §3.3 rule 1.
    pub(crate) fn drain(&mut self, io: &mut dyn Io) {
        loop {
            if let Some(index) = self.dirty.pop_front() {
                if let Some(slot) = self.slots.get_mut(index as usize) {
                    slot.queued = false;
                }
                self.serve(index, io);
            } else if let Some(n) = self.notices.pop_front() {
                self.deliver_notice(n, io);
            } else if let Some((requester, done)) = self.sendfile_notices.pop_front() {
                self.deliver_sendfile_done(requester, done, io);
            } else {
                break;
            }
        }
    }

    /// Delivers every callback one transport is owed, one at a time.
    fn serve(&mut self, index: u32, io: &mut dyn Io) {
        loop {
            let Some(slot) = self.slots.get_mut(index as usize) else { return };
            let h = Handle::from_raw(index, slot.generation);
            let Some(entry) = slot.entry.as_mut() else { return };
            if entry.is_connecting() || entry.pipe_of.is_some_and(|l| l.held) {
                // A held pipe is served again when its subprocess's connection_made is
                // delivered (`release_pipes`).
                return;
            }
            if entry.swap.is_some() {
                self.apply_swap(h, io);
                continue;
            }
            if let Some((requester, outcome)) =
                entry.stream().and_then(StreamTransport::take_sendfile_done)
            {
                let requester = requester.unwrap_or(NO_HANDLE);
                self.sendfile_finished(h, requester, outcome, io);
                continue;
            }
            let Ok(entry) = self.entry_mut(h) else { return };
            let next = match &mut entry.transport {
                Transport::Stream(t) => t.next_callback().map(Next::Stream),
                Transport::Datagram(t) => t.next_callback().map(Next::Datagram),
                Transport::Subprocess(t) => t.next_callback().map(Next::Subprocess),
            };
            let Some(next) = next else {
                if std::mem::take(&mut entry.wake) && !entry.poisoned {
                    self.deliver_wake(h, io);
                    continue;
                }
                return;
            };
            let lost = matches!(
                next,
                Next::Stream(StreamCallback::ConnectionLost(_))
                    | Next::Datagram(DatagramCallback::ConnectionLost(_))
                    | Next::Subprocess(SubprocessCallback::ConnectionLost(_))
            );
            match next {
                Next::Stream(cb) => self.deliver(h, cb, io),
                Next::Datagram(cb) => self.deliver_datagram(h, cb, io),
                Next::Subprocess(cb) => self.deliver_subprocess(h, cb, io),
            }
            if lost {
                self.remove(index);
                return;
            }
        }
    }

    /// Installs the replacement protocol `set_protocol` left for `h`, if any.
    fn apply_swap(&mut self, h: Handle, io: &mut dyn Io) {
        let Ok(entry) = self.entry_mut(h) else { return };
        let Some(new) = entry.swap.take() else { return };
        let old = entry.protocol.replace(*new);
        let mut stdin = None;
        match &mut entry.transport {
            Transport::Stream(t) => t.protocol_swapped(),
            Transport::Datagram(t) => t.protocol_swapped(),
            // The stdin pipe's flow callbacks go to the new protocol: it hears
            // pause_writing first if stdin is paused (gh-109051).
            Transport::Subprocess(t) => stdin = t.pipe(0),
        }
        if let Some(old) = old {
            self.drop_protocol(h, old);
        }
        if let Some(p) = stdin
            && let Ok(Some(t)) = self.entry_mut(p).map(Entry::stream)
        {
            t.protocol_swapped();
            self.touch(p.index());
        }
        self.trace(h, Trace::ProtocolSwapped);
        self.reread_timer(h, io);
    }

    /// Takes the protocol out of its slot, calls it with a `Ctx`, puts it back.
    fn invoke<T>(
        &mut self,
        h: Handle,
        io: &mut dyn Io,
        trace: Option<Trace<'_>>,
        call: impl FnOnce(&mut AnyProtocol, &mut Ctx<'_>) -> Result<T, ProtocolError>,
    ) -> Option<Invoked<T>> {
        let entry = self.entry_mut(h).ok()?;
        if entry.poisoned {
            return None;
        }
        if let Some(link) = entry.pipe_of {
            return self.invoke_routed(link.owner, link.fd, io, trace, call);
        }
        let mut proto = entry.protocol.take()?;
        if let Some(trace) = trace {
            self.trace(h, trace);
        }
        let now = self.now;
        let result = {
            let mut ctx = Ctx::new(self, io, h, now);
            catch_unwind(AssertUnwindSafe(|| call(&mut proto, &mut ctx))).map_err(panic_message)
        };
        match self.entry_mut(h) {
            Ok(entry) => entry.protocol = Some(proto),
            Err(_) => self.drop_protocol(h, proto),
        }
        if result.is_ok() {
            self.reread_timer(h, io);
        }
        Some(result)
    }

    /// A pipe's callback, delivered to its subprocess's protocol (lent as
    /// `AnyProtocol::Routed`) with the subprocess's handle in its `Ctx` and its trace:
    /// asyncio's `ReadSubprocessPipeProto` / `WriteSubprocessPipeProto`.
    fn invoke_routed<T>(
        &mut self,
        owner: Handle,
        fd: u32,
        io: &mut dyn Io,
        trace: Option<Trace<'_>>,
        call: impl FnOnce(&mut AnyProtocol, &mut Ctx<'_>) -> Result<T, ProtocolError>,
    ) -> Option<Invoked<T>> {
        if self.entry(owner).ok()?.swap.is_some() {
            // A replacement the subprocess's protocol asked for applies to its pipes' next
            // callback too.
            self.apply_swap(owner, io);
        }
        let entry = self.entry_mut(owner).ok()?;
        if entry.poisoned {
            return None;
        }
        let proto = match entry.protocol.take()? {
            AnyProtocol::Subprocess(p) => p,
            other => {
                entry.protocol = Some(other);
                return None;
            }
        };
        let trace = trace.and_then(|t| match t {
            Trace::DataReceived(d) => Some(Trace::PipeDataReceived(fd, d)),
            Trace::ConnectionLost(e) => Some(Trace::PipeConnectionLost(fd, e)),
            Trace::PauseWriting | Trace::ResumeWriting => Some(t),
            // The pipe's own connection_made and EOF are internal.
            _ => None,
        });
        if let Some(trace) = trace {
            self.trace(owner, trace);
        }
        let now = self.now;
        let mut routed = AnyProtocol::Routed(fd, proto);
        let result = {
            let mut ctx = Ctx::new(self, io, owner, now);
            catch_unwind(AssertUnwindSafe(|| call(&mut routed, &mut ctx))).map_err(panic_message)
        };
        let AnyProtocol::Routed(_, proto) = routed else { return Some(result) };
        match self.entry_mut(owner) {
            Ok(entry) => entry.protocol = Some(AnyProtocol::Subprocess(proto)),
            Err(_) => self.drop_protocol(owner, AnyProtocol::Subprocess(proto)),
        }
        Some(result)
    }

    /// The slot whose protocol answers `h`'s callbacks: a pipe's subprocess, or `h`.
    fn callee(&self, h: Handle) -> Option<Handle> {
        self.entry(h).ok().and_then(|e| e.pipe_of).map(|l| l.owner)
    }

    pub(super) fn trace(&mut self, h: Handle, trace: Trace<'_>) {
        if let Some(tracer) = self.tracer.as_mut() {
            tracer(h, trace);
        }
    }

    fn deliver(&mut self, h: Handle, cb: StreamCallback, io: &mut dyn Io) {
        match cb {
            StreamCallback::ConnectionMade => {
                let r = self
                    .invoke(h, io, Some(Trace::ConnectionMade), |p, ctx| p.connection_made(ctx));
                self.settle(h, "connection_made", r, false, io);
            }
            StreamCallback::PauseWriting => {
                let r =
                    self.invoke(h, io, Some(Trace::PauseWriting), |p, ctx| p.pause_writing(ctx));
                self.settle(h, "pause_writing", r, false, io);
            }
            StreamCallback::ResumeWriting => {
                let r =
                    self.invoke(h, io, Some(Trace::ResumeWriting), |p, ctx| p.resume_writing(ctx));
                self.settle(h, "resume_writing", r, false, io);
            }
            StreamCallback::DataReceived(data) => self.deliver_held_data(h, &data, io),
            StreamCallback::EofReceived => {
                let r = self.invoke(h, io, Some(Trace::EofReceived), |p, ctx| {
                    on_stream(p, |p| p.eof_received(ctx))
                });
                if let Some(keep_open) = self.settle(h, "eof_received", r, true, io) {
                    self.with_stream_io(h, io, |t, io, pool| {
                        t.handle_eof_answer(keep_open, io, pool)
                    });
                    self.wake_server_of(h);
                }
            }
            StreamCallback::ConnectionLost(err) => self.deliver_lost(h, err, io),
        }
    }

    /// A subprocess's own callbacks: none is fatal (asyncio, DESIGN.md §4).
    fn deliver_subprocess(&mut self, h: Handle, cb: SubprocessCallback, io: &mut dyn Io) {
        match cb {
            SubprocessCallback::ConnectionMade => {
                let r = self
                    .invoke(h, io, Some(Trace::ConnectionMade), |p, ctx| p.connection_made(ctx));
                self.settle(h, "connection_made", r, false, io);
                self.release_pipes(h);
            }
            SubprocessCallback::ProcessExited => {
                let r =
                    self.invoke(h, io, Some(Trace::ProcessExited), |p, ctx| p.process_exited(ctx));
                self.settle(h, "process_exited", r, false, io);
            }
            SubprocessCallback::ConnectionLost(err) => {
                // The child was reaped and every pipe closed: the driver forgets it.
                io.close(h);
                self.deliver_lost(h, err, io);
            }
        }
    }

    /// A datagram endpoint's callbacks: none is fatal (asyncio lets `datagram_received`
    /// and `error_received` exceptions escape to the loop; the transport stays open).
    fn deliver_datagram(&mut self, h: Handle, cb: DatagramCallback, io: &mut dyn Io) {
        match cb {
            DatagramCallback::ConnectionMade => {
                let r = self
                    .invoke(h, io, Some(Trace::ConnectionMade), |p, ctx| p.connection_made(ctx));
                self.settle(h, "connection_made", r, false, io);
            }
            DatagramCallback::PauseWriting => {
                let r =
                    self.invoke(h, io, Some(Trace::PauseWriting), |p, ctx| p.pause_writing(ctx));
                self.settle(h, "pause_writing", r, false, io);
            }
            DatagramCallback::ResumeWriting => {
                let r =
                    self.invoke(h, io, Some(Trace::ResumeWriting), |p, ctx| p.resume_writing(ctx));
                self.settle(h, "resume_writing", r, false, io);
            }
            DatagramCallback::ErrorReceived(err) => {
                let r = self.invoke(h, io, Some(Trace::ErrorReceived(&err)), |p, ctx| {
                    p.datagram().map_or(Ok(()), |p| p.error_received(ctx, err.clone()))
                });
                self.settle(h, "error_received", r, false, io);
            }
            DatagramCallback::DatagramReceived(data, addr) => {
                let trace = Trace::DatagramReceived(&data, addr.as_ref());
                let r = self.invoke(h, io, Some(trace), |p, ctx| {
                    p.datagram().map_or(Ok(()), |p| p.datagram_received(ctx, &data, addr.as_ref()))
                });
                self.settle(h, "datagram_received", r, false, io);
            }
            DatagramCallback::ConnectionLost(err) => self.deliver_lost(h, err, io),
        }
    }

    fn deliver_lost(&mut self, h: Handle, err: Option<ConnectionError>, io: &mut dyn Io) {
        let r = self.invoke(h, io, Some(Trace::ConnectionLost(err.as_ref())), |p, ctx| {
            p.connection_lost(ctx, err.clone())
        });
        // Only reported: there is nothing left to end.
        self.settle(h, "connection_lost", r, false, io);
    }

    pub(super) fn deliver_timeout(&mut self, h: Handle, io: &mut dyn Io) {
        let r = self.invoke(h, io, Some(Trace::Timeout), |p, ctx| p.handle_timeout(ctx));
        self.settle(h, "handle_timeout", r, true, io);
    }

    fn deliver_wake(&mut self, h: Handle, io: &mut dyn Io) {
        let r =
            self.invoke(h, io, Some(Trace::Wake), |p, ctx| on_stream(p, |p| p.handle_wake(ctx)));
        self.settle(h, "handle_wake", r, true, io);
    }

    /// A sendfile on `h` ended: its requester hears it — at once when that is `h`'s own
    /// protocol (before a `connection_lost` that may follow), after the current
    /// transport's callbacks for another protocol, through the driver's queue when it
    /// was started outside a callback.
    fn sendfile_finished(
        &mut self,
        h: Handle,
        requester: Handle,
        outcome: Result<u64, SendfileError>,
        io: &mut dyn Io,
    ) {
        let done = SendfileDone { handle: h, outcome };
        if requester == NO_HANDLE {
            self.sendfile_done.push_back(done);
        } else if requester == h {
            self.deliver_sendfile_done(h, done, io);
        } else {
            self.sendfile_notices.push_back((requester, done));
        }
    }

    fn deliver_sendfile_done(&mut self, requester: Handle, done: SendfileDone, io: &mut dyn Io) {
        let SendfileDone { handle, outcome } = done;
        let handle = StreamHandle::from_handle(handle);
        let trace = Trace::SendfileCompleted(handle, outcome.as_ref().map(|n| *n));
        let r = self.invoke(requester, io, Some(trace), |p, ctx| {
            on_stream(p, |p| p.sendfile_completed(ctx, handle, outcome.clone()))
        });
        self.settle(requester, "sendfile_completed", r, false, io);
    }

    fn deliver_notice(&mut self, n: Notice, io: &mut dyn Io) {
        let Notice { requester, id, outcome } = n;
        let trace = Trace::RequestCompleted(id, outcome.as_ref().map(|h| *h));
        let r = self.invoke(requester, io, Some(trace), |p, ctx| {
            on_stream(p, |p| p.request_completed(ctx, id, outcome.clone()))
        });
        self.settle(requester, "request_completed", r, false, io);
    }

    /// Held data (reading was paused between the read and its delivery, or a driver
    /// reported it): fed through `data_received`, or through `get_buffer` /
    /// `buffer_updated` as asyncio's `_feed_data_to_buffered_proto` does (spec §1.8).
    fn deliver_held_data(&mut self, h: Handle, data: &[u8], io: &mut dyn Io) {
        let mut rest = data;
        // Traced once, whole: a buffered protocol may take it in several pieces.
        let mut trace = Some(Trace::DataReceived(data));
        while !rest.is_empty() {
            // Ok(None): get_buffer returned an empty buffer.
            let r = self.invoke(h, io, trace.take(), |p, ctx| {
                if let AnyProtocol::Routed(..) = p {
                    return p.pipe_data(ctx, rest).map(|()| Some(rest.len()));
                }
                let Some(p) = p.stream() else { return Ok(Some(rest.len())) };
                match p.get_buffer(rest.len())? {
                    None => p.data_received(ctx, rest).map(|()| Some(rest.len())),
                    Some([]) => Ok(None),
                    Some(buf) => {
                        let n = buf.len().min(rest.len());
                        buf[..n].copy_from_slice(&rest[..n]);
                        p.buffer_updated(ctx, n).map(|()| Some(n))
                    }
                }
            });
            match self.settle(h, "data_received", r, true, io) {
                Some(Some(n)) => rest = &rest[n..],
                Some(None) => return self.fail_transport(h, ConnectionError::EmptyBuffer, io),
                None => return,
            }
        }
    }

    /// One read for the driver's `on_readable`: into the protocol's buffer for a buffered
    /// protocol, otherwise into the loop-wide buffer, delivered from there without a copy.
    pub(crate) fn read_once(&mut self, h: Handle, io: &mut dyn Io) -> Result<(), DriverError> {
        let entry = self.entry_mut(h).map_err(|_| DriverError::StaleHandle)?;
        if entry.is_connecting() || entry.poisoned {
            return Ok(());
        }
        let t = match &mut entry.transport {
            Transport::Stream(t) => t,
            Transport::Datagram(_) => return self.read_datagram(h, io),
            Transport::Subprocess(_) => {
                return Err(DriverError::WrongKind { expected: "pipe or socket" });
            }
        };
        if t.is_socket_closed() {
            return Err(DriverError::Closed);
        }
        if t.kind() == StreamKind::WritePipe {
            // Readability on the write end of a pipe means the read end closed.
            return self
                .with_stream_io(h, io, |t, io, pool| t.handle_read_end_closed(io, pool))
                .unwrap_or(Err(DriverError::StaleHandle));
        }
        if !entry.interest().read {
            return Ok(());
        }
        if entry.pipe_of.is_some() {
            return self.read_pipe(h, io);
        }
        let Some(mut proto) = entry.protocol.take() else { return Ok(()) };
        let result = match proto.stream() {
            Some(p) => self.read_with(h, p, io),
            None => Ok(()),
        };
        self.put_back(h, proto);
        self.touch(h.index());
        result
    }

    /// One read of a subprocess's stdout or stderr, delivered from the loop-wide buffer
    /// as `pipe_data_received`.
    fn read_pipe(&mut self, h: Handle, io: &mut dyn Io) -> Result<(), DriverError> {
        if self.read_buf.is_empty() {
            self.read_buf = vec![0; READ_BUFFER_SIZE];
        }
        let mut buf = std::mem::take(&mut self.read_buf);
        let outcome = match self.slots[h.index() as usize].entry.as_mut() {
            Some(Entry { transport: Transport::Stream(t), .. }) => {
                t.read(&mut buf, io, &mut self.pool)
            }
            _ => Ok(ReadOutcome::Idle),
        };
        if let Ok(ReadOutcome::Data(n)) = outcome {
            let data = &buf[..n];
            let r = self
                .invoke(h, io, Some(Trace::DataReceived(data)), |p, ctx| p.pipe_data(ctx, data));
            self.settle(h, "pipe_data_received", r, false, io);
        }
        self.read_buf = buf;
        self.touch(h.index());
        outcome.map(|_| ())
    }

    fn read_with(
        &mut self,
        h: Handle,
        proto: &mut dyn Protocol,
        io: &mut dyn Io,
    ) -> Result<(), DriverError> {
        enum Step {
            Plain,
            Empty,
            Read(Result<ReadOutcome, DriverError>),
        }
        let now = self.now;
        let Some(entry) = self.slots[h.index() as usize].entry.as_mut() else { return Ok(()) };
        let Some(t) = entry.stream() else { return Ok(()) };
        let (pool, tracer) = (&mut self.pool, &mut self.tracer);
        // get_buffer's slice borrows the protocol, so the read (and its trace) happens
        // inside the same unwind guard.
        let step = catch_unwind(AssertUnwindSafe(|| -> Result<Step, ProtocolError> {
            Ok(match proto.get_buffer(READ_BUFFER_SIZE)? {
                None => Step::Plain,
                Some([]) => Step::Empty,
                Some(buf) => {
                    let outcome = t.read(buf, io, pool);
                    if let (Ok(ReadOutcome::Data(n)), Some(tracer)) = (&outcome, tracer) {
                        tracer(h, Trace::DataReceived(&buf[..*n]));
                    }
                    Step::Read(outcome)
                }
            })
        }));
        let delivered = match step {
            Err(payload) => {
                self.poison(h, "get_buffer", panic_message(payload), io);
                return Ok(());
            }
            Ok(Err(e)) => {
                self.fatal(h, "get_buffer", e, io);
                return Ok(());
            }
            // asyncio: RuntimeError('get_buffer() returned an empty buffer'), fatal.
            Ok(Ok(Step::Empty)) => {
                self.fail_transport(h, ConnectionError::EmptyBuffer, io);
                return Ok(());
            }
            Ok(Ok(Step::Read(outcome))) => match outcome? {
                ReadOutcome::Data(n) => {
                    let mut ctx = Ctx::new(self, io, h, now);
                    let r = catch_unwind(AssertUnwindSafe(|| proto.buffer_updated(&mut ctx, n)));
                    Some(("buffer_updated", r.map_err(panic_message)))
                }
                _ => None,
            },
            Ok(Ok(Step::Plain)) => {
                if self.read_buf.is_empty() {
                    self.read_buf = vec![0; READ_BUFFER_SIZE];
                }
                // Moved out for the callback, whose Ctx borrows the whole loop state.
                let mut buf = std::mem::take(&mut self.read_buf);
                let outcome = match self.slots[h.index() as usize].entry.as_mut() {
                    Some(Entry { transport: Transport::Stream(t), .. }) => {
                        t.read(&mut buf, io, &mut self.pool)
                    }
                    _ => Ok(ReadOutcome::Idle),
                };
                let r = outcome.map(|outcome| match outcome {
                    ReadOutcome::Data(n) => {
                        self.trace(h, Trace::DataReceived(&buf[..n]));
                        let mut ctx = Ctx::new(self, io, h, now);
                        let r = catch_unwind(AssertUnwindSafe(|| {
                            proto.data_received(&mut ctx, &buf[..n])
                        }));
                        Some(("data_received", r.map_err(panic_message)))
                    }
                    _ => None,
                });
                self.read_buf = buf;
                r?
            }
        };
        match delivered {
            Some((_, Ok(Ok(())))) | None => {}
            Some((callback, Ok(Err(e)))) => self.fatal(h, callback, e, io),
            Some((callback, Err(message))) => self.poison(h, callback, message, io),
        }
        if self.entry(h).is_ok_and(|e| !e.poisoned) {
            match catch_unwind(AssertUnwindSafe(|| proto.poll_timeout())) {
                Ok(d) => self.set_deadline(h, d),
                Err(payload) => self.poison(h, "poll_timeout", panic_message(payload), io),
            }
        }
        Ok(())
    }

    /// Applies asyncio's rule for a callback's result: `fatal` callbacks end the
    /// connection on `Err`, the others report it to the error queue; a panic aborts the
    /// transport either way. Returns the value on success.
    fn settle<T>(
        &mut self,
        h: Handle,
        callback: &'static str,
        r: Option<Invoked<T>>,
        fatal: bool,
        io: &mut dyn Io,
    ) -> Option<T> {
        let r = r?;
        if let Ok(Ok(v)) = r {
            return Some(v);
        }
        // A pipe's callbacks belong to its subprocess's protocol: never fatal to the pipe.
        let (h, fatal) = match self.callee(h) {
            Some(owner) => (owner, false),
            None => (h, fatal),
        };
        match r {
            Ok(Ok(_)) => None,
            Ok(Err(e)) if fatal => {
                self.fatal(h, callback, e, io);
                None
            }
            Ok(Err(error)) => {
                self.report(LoopError::CallbackFailed { handle: Some(h), callback, error });
                None
            }
            Err(message) => {
                self.poison(h, callback, message, io);
                None
            }
        }
    }

    fn fatal(&mut self, h: Handle, callback: &'static str, e: ProtocolError, io: &mut dyn Io) {
        self.fail_transport(h, ConnectionError::Protocol { callback, error: e }, io);
    }

    pub(crate) fn fail_transport(&mut self, h: Handle, err: ConnectionError, io: &mut dyn Io) {
        if self.entry(h).is_ok_and(|e| matches!(e.transport, Transport::Subprocess(_))) {
            // Its pipes are aborted and a running child killed; connection_lost still
            // waits for the exit.
            let _ = self.close_subprocess(h, true, io);
            return;
        }
        self.with_transport_io(h, io, |t, io, pool| t.common().fail(err, io, pool));
        self.wake_server_of(h);
    }

    /// A served transport changed outside any `Ctx` call (its EOF answer closed it, a
    /// callback failed or panicked): its serving protocol must hear of it.
    fn wake_server_of(&mut self, h: Handle) {
        if let Some(server) = self.entry(h).ok().and_then(|e| e.server) {
            self.wake(server);
        }
    }

    /// One datagram for the driver's `on_readable`, into the loop-wide buffer and
    /// delivered from there; a failed or truncated receive becomes `error_received`.
    fn read_datagram(&mut self, h: Handle, io: &mut dyn Io) -> Result<(), DriverError> {
        let Ok(Entry { transport: Transport::Datagram(t), protocol, .. }) = self.entry_mut(h)
        else {
            return Ok(());
        };
        if t.is_socket_closed() {
            return Err(DriverError::Closed);
        }
        if !t.interest().read {
            return Ok(());
        }
        let Some(mut proto) = protocol.take() else { return Ok(()) };
        if self.read_buf.is_empty() {
            self.read_buf = vec![0; READ_BUFFER_SIZE];
        }
        let mut buf = std::mem::take(&mut self.read_buf);
        let outcome = match self.entry_mut(h) {
            Ok(Entry { transport: Transport::Datagram(t), .. }) => t.read(&mut buf, io),
            _ => Ok(DatagramRead::Idle),
        };
        let result = match outcome {
            Ok(DatagramRead::Datagram(n, addr)) => {
                self.trace(h, Trace::DatagramReceived(&buf[..n], addr.as_ref()));
                let now = self.now;
                let mut ctx = Ctx::new(self, io, h, now);
                let r = catch_unwind(AssertUnwindSafe(|| {
                    proto
                        .datagram()
                        .map_or(Ok(()), |p| p.datagram_received(&mut ctx, &buf[..n], addr.as_ref()))
                }));
                Some(r.map_err(panic_message))
            }
            Ok(_) => None,
            Err(e) => {
                self.read_buf = buf;
                self.put_back(h, proto);
                return Err(e);
            }
        };
        self.read_buf = buf;
        self.put_back(h, proto);
        if let Some(r) = result {
            self.settle(h, "datagram_received", Some(r), false, io);
            self.reread_timer(h, io);
        }
        self.touch(h.index());
        Ok(())
    }

    /// Returns a protocol taken out for a call to its slot (or drops it if the slot is
    /// gone or poisoned meanwhile).
    fn put_back(&mut self, h: Handle, proto: AnyProtocol) {
        match self.entry_mut(h) {
            Ok(entry) if !entry.poisoned => entry.protocol = Some(proto),
            _ => self.drop_protocol(h, proto),
        }
    }

    /// A protocol panicked: it is dropped and hears nothing more; its transport is
    /// aborted; every other transport carries on.
    pub(super) fn poison(
        &mut self,
        h: Handle,
        callback: &'static str,
        message: String,
        io: &mut dyn Io,
    ) {
        self.report(LoopError::Panicked { handle: Some(h), callback, message: message.clone() });
        let Ok(entry) = self.entry_mut(h) else { return };
        entry.poisoned = true;
        let protos = [entry.protocol.take(), entry.swap.take().map(|b| *b)];
        for p in protos.into_iter().flatten() {
            self.drop_protocol(h, p);
        }
        self.set_deadline(h, None);
        self.fail_transport(h, ConnectionError::Panic { callback, message }, io);
    }
}
