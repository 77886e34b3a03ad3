//! The loop state behind [`Registry`](super::Registry) and [`Ctx`]: the slab of
//! transports, the dirty list, timers, closures, requests — and dispatch, the only place a
//! protocol is ever called.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Instant;

pub(crate) use super::transport::{AnyProtocol, Transport};
use super::{Endpoint, LoopError, Request, Tracer};
use crate::datagram::{DatagramAddr, DatagramTransport};
use crate::stream::{SendfileDone, StreamKind};
use crate::{
    ConnectionError, Ctx, DriverError, Extra, Handle, HandleError, Interest, Io, Protocol,
    RequestId, SendPool, StreamHandle, StreamTransport,
};

/// A closure scheduled with `call_soon` / `call_later`.
pub(crate) type Closure = Box<dyn FnOnce(&mut Ctx<'_>)>;

/// The loop-wide read buffer's size: asyncio's `max_size` (spec §0.3).
pub(crate) const READ_BUFFER_SIZE: usize = 256 * 1024;

/// At most this many errors wait in the error queue; older ones are dropped and counted.
const ERROR_QUEUE_CAP: usize = 1024;

/// The handle closures and `enter` run with: never valid, so calls on `ctx.stream()`
/// outside a transport callback fail with a stale-handle error instead of acting on some
/// transport.
pub(crate) const NO_HANDLE: Handle = Handle::from_raw(u32::MAX, u32::MAX);

pub(crate) struct Entry {
    pub(crate) transport: Transport,
    /// `None` while one of its callbacks runs, or after it panicked.
    pub(super) protocol: Option<AnyProtocol>,
    /// A replacement protocol, installed before the next callback. Boxed: swaps are
    /// rare, and every idle connection pays for this field.
    pub(super) swap: Option<Box<AnyProtocol>>,
    /// The protocol's timer, mirrored in `Core::timers`.
    pub(super) deadline: Option<Instant>,
    /// For a transport served by another slot's protocol: its I/O.
    pub(crate) sink: Option<Box<dyn Io>>,
    /// The slot whose protocol serves this transport.
    pub(crate) server: Option<Handle>,
    /// This slot's protocol serves transports that have work: `handle_wake` is owed.
    pub(super) wake: bool,
    /// Waiting for the driver's connect outcome; who asked.
    pub(super) connecting: Option<Option<(Handle, RequestId)>>,
    /// The protocol panicked: nothing more is delivered to it.
    pub(super) poisoned: bool,
    /// This slot is a pipe of a subprocess: its callbacks go to the subprocess's protocol.
    pub(crate) pipe_of: Option<super::subprocess::PipeOf>,
}

impl Entry {
    pub(super) fn new(transport: Transport, protocol: AnyProtocol) -> Self {
        Entry {
            transport,
            protocol: Some(protocol),
            swap: None,
            deadline: None,
            sink: None,
            server: None,
            wake: false,
            connecting: None,
            poisoned: false,
            pipe_of: None,
        }
    }

    pub(crate) fn stream(&mut self) -> Option<&mut StreamTransport> {
        self.transport.stream()
    }

    pub(crate) fn stream_ref(&self) -> Option<&StreamTransport> {
        self.transport.stream_ref()
    }

    pub(crate) fn is_connecting(&self) -> bool {
        self.connecting.is_some()
    }

    pub(crate) fn interest(&self) -> Interest {
        if self.is_connecting() {
            return Interest { read: false, write: true };
        }
        let interest = self.transport.common_ref().interest();
        match self.pipe_of {
            // A pipe reads nothing before its subprocess's connection_made.
            Some(link) if link.held => Interest { read: false, ..interest },
            _ => interest,
        }
    }
}

#[derive(Default)]
pub(crate) struct Slot {
    pub(super) generation: u32,
    /// In `Core::dirty`.
    pub(super) queued: bool,
    /// In `Core::io_changed`.
    pub(super) io_queued: bool,
    /// What `poll_io` last reported (interest and queued bytes), to report changes only.
    pub(super) reported: (Interest, usize),
    pub(crate) entry: Option<Entry>,
}

pub(crate) struct Notice {
    pub(super) requester: Handle,
    pub(super) id: RequestId,
    pub(super) outcome: Result<StreamHandle, ConnectionError>,
}

pub(crate) struct Core {
    pub(crate) slots: Vec<Slot>,
    pub(super) free: Vec<u32>,
    pub(super) live: usize,
    pub(super) dirty: VecDeque<u32>,
    pub(super) io_changed: VecDeque<u32>,
    pub(super) timers: BTreeSet<(Instant, u32)>,
    pub(super) due: Vec<u32>,
    pub(super) due_later: Vec<(Instant, u64)>,
    pub(crate) soon: VecDeque<Closure>,
    pub(crate) later: BTreeMap<(Instant, u64), Closure>,
    pub(crate) seq: u64,
    pub(super) requests: VecDeque<Request>,
    pub(super) notices: VecDeque<Notice>,
    /// Finished sendfiles whose requesting protocol hears `sendfile_completed`: (who
    /// asked, the outcome).
    pub(super) sendfile_notices: VecDeque<(Handle, SendfileDone)>,
    /// Finished sendfiles started outside a callback: for the driver
    /// (`Registry::poll_sendfile_done`).
    pub(super) sendfile_done: VecDeque<SendfileDone>,
    pub(super) errors: VecDeque<LoopError>,
    pub(super) errors_dropped: u64,
    pub(super) read_buf: Vec<u8>,
    pub(crate) pool: SendPool,
    pub(super) tracer: Option<Tracer>,
    /// The driver's time at its latest call.
    pub(crate) now: Instant,
}

impl Core {
    pub(crate) fn new(now: Instant) -> Self {
        Core {
            slots: Vec::new(),
            free: Vec::new(),
            live: 0,
            dirty: VecDeque::new(),
            io_changed: VecDeque::new(),
            timers: BTreeSet::new(),
            due: Vec::new(),
            due_later: Vec::new(),
            soon: VecDeque::new(),
            later: BTreeMap::new(),
            seq: 0,
            requests: VecDeque::new(),
            notices: VecDeque::new(),
            sendfile_notices: VecDeque::new(),
            sendfile_done: VecDeque::new(),
            errors: VecDeque::new(),
            errors_dropped: 0,
            read_buf: Vec::new(),
            pool: SendPool::default(),
            tracer: None,
            now,
        }
    }

    // ----------------------------------------------------------------------------------
    // The slab
    // ----------------------------------------------------------------------------------

    pub(crate) fn insert(&mut self, entry: Entry) -> Handle {
        let index = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(Slot::default());
                (self.slots.len() - 1) as u32
            }
        };
        let slot = &mut self.slots[index as usize];
        slot.entry = Some(entry);
        slot.reported = (Interest::default(), 0);
        self.live += 1;
        let h = Handle::from_raw(index, slot.generation);
        self.touch(index);
        h
    }

    pub(crate) fn insert_stream(
        &mut self,
        kind: StreamKind,
        protocol: Box<dyn Protocol>,
        extra: Extra,
    ) -> Handle {
        let next = self.next_handle();
        let t = StreamTransport::with_kind(next, kind, extra);
        let h = self.insert(Entry::new(Transport::Stream(t), AnyProtocol::Stream(protocol)));
        debug_assert_eq!(h, next);
        h
    }

    pub(crate) fn insert_datagram(
        &mut self,
        protocol: Box<dyn crate::DatagramProtocol>,
        remote: Option<DatagramAddr>,
        extra: Extra,
    ) -> Handle {
        let h = self.next_handle();
        let t = DatagramTransport::new(h, remote, extra);
        self.insert(Entry::new(Transport::Datagram(Box::new(t)), AnyProtocol::Datagram(protocol)))
    }

    /// The handle the next `insert` will return (transports store their own handle).
    pub(super) fn next_handle(&self) -> Handle {
        let index = self.free.last().copied().unwrap_or(self.slots.len() as u32);
        let generation = self.slots.get(index as usize).map_or(0, |s| s.generation);
        Handle::from_raw(index, generation)
    }

    pub(crate) fn entry(&self, h: Handle) -> Result<&Entry, HandleError> {
        self.slots
            .get(h.index() as usize)
            .filter(|s| s.generation == h.generation())
            .and_then(|s| s.entry.as_ref())
            .ok_or(HandleError::Stale)
    }

    pub(crate) fn entry_mut(&mut self, h: Handle) -> Result<&mut Entry, HandleError> {
        self.slots
            .get_mut(h.index() as usize)
            .filter(|s| s.generation == h.generation())
            .and_then(|s| s.entry.as_mut())
            .ok_or(HandleError::Stale)
    }

    pub(super) fn remove(&mut self, index: u32) {
        let Some(slot) = self.slots.get_mut(index as usize) else { return };
        let Some(mut entry) = slot.entry.take() else { return };
        let h = Handle::from_raw(index, slot.generation);
        slot.generation = slot.generation.wrapping_add(1);
        self.free.push(index);
        self.live -= 1;
        if let Some(d) = entry.deadline.take() {
            self.timers.remove(&(d, index));
        }
        for p in [entry.protocol.take(), entry.swap.take().map(|b| *b)].into_iter().flatten() {
            self.drop_protocol(h, p);
        }
        if let Some(link) = entry.pipe_of {
            self.pipe_removed(link);
        }
    }

    /// True when some live transport is served by `h`'s protocol. A scan: only for rare
    /// calls (`start_tls`).
    #[cfg(feature = "tls")]
    pub(crate) fn serves_any(&self, h: Handle) -> bool {
        self.slots.iter().any(|s| s.entry.as_ref().is_some_and(|e| e.server == Some(h)))
    }

    /// True when a replacement protocol waits to be installed on `h`.
    #[cfg(feature = "tls")]
    pub(crate) fn swap_pending(&self, h: Handle) -> bool {
        self.entry(h).is_ok_and(|e| e.swap.is_some())
    }

    /// Installs `p` as `h`'s protocol before its next callback.
    pub(crate) fn set_swap(&mut self, h: Handle, p: AnyProtocol) {
        let Ok(entry) = self.entry_mut(h) else { return self.drop_protocol(h, p) };
        if let Some(old) = entry.swap.replace(Box::new(p)) {
            self.drop_protocol(h, *old);
        }
        self.touch(h.index());
    }

    pub(crate) fn live(&self) -> usize {
        self.live
    }

    /// The transport changed: serve it before control returns to the driver, and report
    /// it from `poll_io`.
    pub(crate) fn touch(&mut self, index: u32) {
        let Some(slot) = self.slots.get_mut(index as usize) else { return };
        if !slot.queued {
            slot.queued = true;
            self.dirty.push_back(index);
        }
        if !slot.io_queued {
            slot.io_queued = true;
            self.io_changed.push_back(index);
        }
    }

    /// A transport served by `server` has work: `handle_wake` is owed to its protocol.
    pub(crate) fn wake(&mut self, server: Handle) {
        if let Ok(e) = self.entry_mut(server) {
            e.wake = true;
            self.touch(server.index());
        }
    }

    // ----------------------------------------------------------------------------------
    // Driver-facing pieces
    // ----------------------------------------------------------------------------------

    pub(crate) fn poll_io(&mut self) -> Option<Handle> {
        while let Some(index) = self.io_changed.pop_front() {
            let slot = &mut self.slots[index as usize];
            slot.io_queued = false;
            let Some(entry) = slot.entry.as_ref() else { continue };
            if entry.server.is_some() {
                continue;
            }
            let common = entry.transport.common_ref();
            let now = (entry.interest(), common.write_buffer_size());
            let changed = now.0 != slot.reported.0
                || (now.0.write && now.1 != slot.reported.1)
                || common.is_closing();
            slot.reported = now;
            if changed {
                return Some(Handle::from_raw(index, slot.generation));
            }
        }
        None
    }

    pub(crate) fn push_request(&mut self, r: Request) {
        self.requests.push_back(r);
    }

    pub(crate) fn poll_request(&mut self) -> Option<Request> {
        self.requests.pop_front()
    }

    pub(crate) fn poll_error(&mut self) -> Option<LoopError> {
        self.errors.pop_front()
    }

    pub(crate) fn errors_dropped(&self) -> u64 {
        self.errors_dropped
    }

    pub(crate) fn report(&mut self, e: LoopError) {
        if self.errors.len() == ERROR_QUEUE_CAP {
            self.errors.pop_front();
            self.errors_dropped += 1;
        }
        self.errors.push_back(e);
    }

    pub(crate) fn start_connect(
        &mut self,
        protocol: Box<dyn Protocol>,
        endpoint: Endpoint,
        requester: Option<Handle>,
        id: RequestId,
    ) -> StreamHandle {
        let h = self.insert_stream(StreamKind::Socket, protocol, Extra::default());
        if let Ok(e) = self.entry_mut(h) {
            e.connecting = Some(requester.map(|r| (r, id)));
        }
        let handle = StreamHandle::from_handle(h);
        self.push_request(Request::Connect { id, handle, endpoint });
        handle
    }

    pub(crate) fn connect_outcome(
        &mut self,
        h: Handle,
        outcome: Result<Extra, ConnectionError>,
    ) -> Result<(), DriverError> {
        let entry = self.entry_mut(h).map_err(|_| DriverError::StaleHandle)?;
        let requester = entry.connecting.take().ok_or(DriverError::NotConnecting)?;
        let outcome = match outcome {
            Ok(extra) => {
                if let Some(t) = entry.stream() {
                    t.set_extra(extra);
                }
                self.touch(h.index());
                Ok(StreamHandle::from_handle(h))
            }
            Err(err) => {
                self.remove(h.index());
                Err(err)
            }
        };
        if let Some((requester, id)) = requester {
            self.notices.push_back(Notice { requester, id, outcome });
        }
        Ok(())
    }

    // ----------------------------------------------------------------------------------
    // Time
    // ----------------------------------------------------------------------------------

    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        if !self.soon.is_empty() {
            return Some(self.now);
        }
        let t = self.timers.first().map(|&(d, _)| d);
        let c = self.later.first_key_value().map(|(&(d, _), _)| d);
        match (t, c) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Fires what is due at `now`: protocol timers, then `call_later` closures. Timers
    /// re-armed at or before `now` while firing wait for the next call, so this is bounded.
    pub(crate) fn fire_timers(&mut self, now: Instant, io: &mut dyn Io) {
        let mut due = std::mem::take(&mut self.due);
        while let Some(&(d, index)) = self.timers.first() {
            if d > now {
                break;
            }
            self.timers.pop_first();
            due.push(index);
        }
        for &index in &due {
            let Some(slot) = self.slots.get_mut(index as usize) else { continue };
            let h = Handle::from_raw(index, slot.generation);
            if let Some(e) = slot.entry.as_mut() {
                e.deadline = None;
            }
            self.deliver_timeout(h, io);
            self.drain(io);
        }
        due.clear();
        self.due = due;

        // Closures scheduled while these run wait for the next call, even if already due.
        let horizon = self.seq;
        let mut due = std::mem::take(&mut self.due_later);
        due.extend(self.later.range(..(now, u64::MAX)).map(|(&k, _)| k).filter(|k| k.1 <= horizon));
        for key in &due {
            // A closure that ran earlier in this pass may have cancelled this one.
            if let Some(f) = self.later.remove(key) {
                self.run_closure(f, io);
                self.drain(io);
            }
        }
        due.clear();
        self.due_later = due;
    }

    /// Runs `f` on a stream transport with the right `Io`: the driver's, or the serving
    /// protocol's sink.
    pub(crate) fn with_stream_io<R>(
        &mut self,
        h: Handle,
        ext: &mut dyn Io,
        f: impl FnOnce(&mut StreamTransport, &mut dyn Io, &mut SendPool) -> R,
    ) -> Option<R> {
        self.with_transport_io(h, ext, |t, io, pool| t.stream().map(|t| f(t, io, pool))).flatten()
    }

    /// Runs `f` on any transport with the right `Io`, and marks it changed.
    pub(crate) fn with_transport_io<R>(
        &mut self,
        h: Handle,
        ext: &mut dyn Io,
        f: impl FnOnce(&mut Transport, &mut dyn Io, &mut SendPool) -> R,
    ) -> Option<R> {
        let slot = self.slots.get_mut(h.index() as usize)?;
        if slot.generation != h.generation() {
            return None;
        }
        let entry = slot.entry.as_mut()?;
        let served = entry.sink.is_some();
        let io: &mut dyn Io = match entry.sink.as_deref_mut() {
            Some(sink) => sink,
            None => ext,
        };
        let r = f(&mut entry.transport, io, &mut self.pool);
        if served && let Transport::Stream(t) = &mut entry.transport {
            // A served transport's buffer also drains when its serving protocol hands
            // the bytes it holds on (`set_served_pending`): a sendfile fallback in
            // progress moves on then. (A driver's transport moves on in `on_writable`.)
            t.pump_sendfile(io, &mut self.pool);
        }
        self.touch(h.index());
        Some(r)
    }

    pub(super) fn drop_protocol(&mut self, h: Handle, p: AnyProtocol) {
        if let Err(payload) = catch_unwind(AssertUnwindSafe(move || drop(p))) {
            self.report(LoopError::Panicked {
                handle: Some(h),
                callback: "drop",
                message: panic_message(payload),
            });
        }
    }

    /// Re-reads the protocol's timer after a callback (DESIGN.md §4: one deadline per
    /// slot, no stale entries).
    pub(super) fn reread_timer(&mut self, h: Handle, io: &mut dyn Io) {
        let Ok(entry) = self.entry_mut(h) else { return };
        let Some(p) = entry.protocol.as_ref() else { return };
        match catch_unwind(AssertUnwindSafe(|| p.poll_timeout())) {
            Ok(d) => self.set_deadline(h, d),
            Err(payload) => self.poison(h, "poll_timeout", panic_message(payload), io),
        }
    }

    pub(super) fn set_deadline(&mut self, h: Handle, d: Option<Instant>) {
        let Ok(entry) = self.entry_mut(h) else { return };
        if entry.deadline == d {
            return;
        }
        let old = std::mem::replace(&mut entry.deadline, d);
        if let Some(old) = old {
            self.timers.remove(&(old, h.index()));
        }
        if let Some(d) = d {
            self.timers.insert((d, h.index()));
        }
    }

    pub(crate) fn timer_entries(&self) -> usize {
        self.timers.len() + self.later.len()
    }
}

pub(crate) fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}
