//! The loop: dispatch order, no nesting, cross-transport calls, timers, swaps, panics,
//! requests, `poll_io`, served transports, stale handles.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io::{self, ErrorKind, IoSlice};
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::*;

// ---------------------------------------------------------------------------------------
// An in-memory socket table
// ---------------------------------------------------------------------------------------

#[derive(Default)]
struct Sock {
    inbox: Vec<u8>,
    eof: bool,
    sent: Vec<u8>,
    /// Bytes try_send still accepts; None = unlimited.
    budget: Option<usize>,
    shutdown: bool,
    closed: bool,
}

#[derive(Default)]
struct Net {
    socks: HashMap<Handle, Sock>,
}

impl Net {
    fn sock(&mut self, h: impl Into<Handle>) -> &mut Sock {
        self.socks.entry(h.into()).or_default()
    }
}

impl Io for Net {
    fn try_send(&mut self, h: Handle, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let s = self.sock(h);
        let mut n = 0;
        for b in bufs {
            let take = s.budget.map_or(b.len(), |left| left.min(b.len()));
            s.sent.extend_from_slice(&b[..take]);
            n += take;
            if let Some(left) = s.budget.as_mut() {
                *left -= take;
            }
            if take < b.len() {
                break;
            }
        }
        if n == 0 && bufs.iter().any(|b| !b.is_empty()) {
            return Err(ErrorKind::WouldBlock.into());
        }
        Ok(n)
    }
    fn try_recv(&mut self, h: Handle, buf: &mut [u8]) -> io::Result<usize> {
        let s = self.sock(h);
        if s.inbox.is_empty() {
            return if s.eof { Ok(0) } else { Err(ErrorKind::WouldBlock.into()) };
        }
        let n = buf.len().min(s.inbox.len());
        buf[..n].copy_from_slice(&s.inbox[..n]);
        s.inbox.drain(..n);
        Ok(n)
    }
    fn shutdown_write(&mut self, h: Handle) -> io::Result<()> {
        self.sock(h).shutdown = true;
        Ok(())
    }
    fn close(&mut self, h: Handle) {
        let s = self.sock(h);
        assert!(!s.closed, "Io::close called twice for {h:?}");
        s.closed = true;
    }
}

// ---------------------------------------------------------------------------------------
// A recording protocol with hooks
// ---------------------------------------------------------------------------------------

type Log = Rc<RefCell<Vec<String>>>;
type Hook<A> = Box<dyn FnMut(&mut Ctx<'_>, A) -> CallbackResult>;

struct Rec {
    name: &'static str,
    log: Log,
    depth: Rc<Cell<u32>>,
    keep_open: bool,
    on_made: Option<Hook<()>>,
    on_data: Option<Hook<&'static [u8]>>,
    on_pause: Option<Hook<()>>,
    on_resume: Option<Hook<()>>,
    deadline: Option<Instant>,
    on_timeout: Option<Hook<()>>,
}

impl Rec {
    fn new(name: &'static str, log: &Log) -> Self {
        Rec {
            name,
            log: log.clone(),
            depth: Rc::new(Cell::new(0)),
            keep_open: false,
            on_made: None,
            on_data: None,
            on_pause: None,
            on_resume: None,
            deadline: None,
            on_timeout: None,
        }
    }
    fn depth(mut self, d: &Rc<Cell<u32>>) -> Self {
        self.depth = d.clone();
        self
    }
    fn enter(&self, what: String) {
        assert_eq!(self.depth.get(), 0, "callback {what} nested inside another");
        self.depth.set(1);
        self.log.borrow_mut().push(format!("{}:{what}", self.name));
    }
    fn leave(&self) {
        self.depth.set(0);
    }
    fn boxed(self) -> Box<dyn Protocol> {
        Box::new(self)
    }
}

fn run<A>(hook: &mut Option<Hook<A>>, ctx: &mut Ctx<'_>, a: A) -> CallbackResult {
    match hook {
        Some(f) => f(ctx, a),
        None => Ok(()),
    }
}

impl Protocol for Rec {
    fn connection_made(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        self.enter("made".into());
        let r = run(&mut self.on_made, ctx, ());
        self.leave();
        r
    }
    fn data_received(&mut self, ctx: &mut Ctx<'_>, data: &[u8]) -> CallbackResult {
        self.enter(format!("data {:?}", String::from_utf8_lossy(data)));
        // The hook sees a 'static copy; fine for tests.
        let data: &'static [u8] = Box::leak(data.to_vec().into_boxed_slice());
        let r = run(&mut self.on_data, ctx, data);
        self.leave();
        r
    }
    fn eof_received(&mut self, _ctx: &mut Ctx<'_>) -> CallbackResult<bool> {
        self.enter("eof".into());
        self.leave();
        Ok(self.keep_open)
    }
    fn pause_writing(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        self.enter("pause".into());
        let r = run(&mut self.on_pause, ctx, ());
        self.leave();
        r
    }
    fn resume_writing(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        self.enter("resume".into());
        let r = run(&mut self.on_resume, ctx, ());
        self.leave();
        r
    }
    fn connection_lost(
        &mut self,
        _ctx: &mut Ctx<'_>,
        err: Option<ConnectionError>,
    ) -> CallbackResult {
        self.enter(match err {
            None => "lost".into(),
            Some(e) => format!("lost {e}"),
        });
        self.leave();
        Ok(())
    }
    fn poll_timeout(&self) -> Option<Instant> {
        self.deadline
    }
    fn handle_timeout(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        self.enter("timeout".into());
        self.deadline = None;
        let r = run(&mut self.on_timeout, ctx, ());
        self.leave();
        r
    }
    fn request_completed(
        &mut self,
        _ctx: &mut Ctx<'_>,
        id: RequestId,
        outcome: Result<StreamHandle, ConnectionError>,
    ) -> CallbackResult {
        self.enter(match outcome {
            Ok(_) => format!("request {} ok", id.get()),
            Err(e) => format!("request {} failed: {e}", id.get()),
        });
        self.leave();
        Ok(())
    }
}

fn t0() -> Instant {
    #[allow(clippy::disallowed_methods)] // test base time; the core itself never reads it
    Instant::now()
}

fn take(log: &Log) -> Vec<String> {
    std::mem::take(&mut *log.borrow_mut())
}

struct World {
    reg: Registry,
    net: Net,
    now: Instant,
    log: Log,
}

impl World {
    fn new() -> Self {
        let now = t0();
        World { reg: Registry::new(now), net: Net::default(), now, log: Log::default() }
    }
    fn add(&mut self, p: Rec) -> StreamHandle {
        let h = self.reg.insert_stream(p.boxed(), Extra::default());
        self.reg.dispatch(self.now, &mut self.net);
        h
    }
    fn recv(&mut self, h: StreamHandle, data: &[u8]) {
        self.net.sock(h).inbox.extend_from_slice(data);
        self.reg.on_readable(h.handle(), self.now, &mut self.net).unwrap();
    }
    fn writable(&mut self, h: StreamHandle) {
        self.reg.on_writable(h.handle(), self.now, &mut self.net).unwrap();
    }
    fn enter<R>(&mut self, f: impl FnOnce(&mut Ctx<'_>) -> R) -> R {
        self.reg.enter(self.now, &mut self.net, f)
    }
    fn log(&self) -> Vec<String> {
        take(&self.log)
    }
}

// ---------------------------------------------------------------------------------------
// Dispatch
// ---------------------------------------------------------------------------------------

#[test]
fn connection_made_delivered_on_dispatch_then_data() {
    let mut w = World::new();
    let h = w.add(Rec::new("a", &w.log));
    assert_eq!(w.log(), ["a:made"]);
    w.recv(h, b"hello");
    assert_eq!(w.log(), ["a:data \"hello\""]);
    w.net.sock(h).eof = true;
    w.reg.on_readable(h.handle(), w.now, &mut w.net).unwrap();
    assert_eq!(w.log(), ["a:eof", "a:lost"]);
    assert!(w.net.sock(h).closed);
    assert!(w.reg.is_empty());
}

#[test]
fn no_callback_ever_nested() {
    // A protocol that writes, closes, swaps protocols and touches a second transport
    // from every callback: every callback still runs alone (DESIGN.md §3.1).
    let mut w = World::new();
    let depth = Rc::new(Cell::new(0));
    let b = w.add(Rec::new("b", &w.log).depth(&depth));
    let mut a = Rec::new("a", &w.log).depth(&depth);
    a.on_made = Some(Box::new(move |ctx, ()| {
        ctx.set_write_buffer_limits(ctx.stream(), Some(16), None)?;
        ctx.write_slice(ctx.stream(), &[0u8; 100])?; // mostly refused: pauses at once
        ctx.write_slice(b, b"to b")?;
        ctx.pause_reading(b)?;
        ctx.resume_reading(b)?;
        Ok(())
    }));
    a.on_pause = Some(Box::new(move |ctx, ()| {
        ctx.set_write_buffer_limits(b, Some(0), None)?;
        ctx.write_slice(b, b"more")?;
        let mut swapped = Rec::new("a2", &Log::default());
        swapped.depth = Rc::new(Cell::new(0));
        ctx.call_soon(move |ctx| {
            let _ = ctx.abort(b);
        });
        let _ = swapped;
        Ok(())
    }));
    let a_log = w.log.clone();
    let depth2 = depth.clone();
    a.on_resume = Some(Box::new(move |ctx, ()| {
        ctx.set_protocol(ctx.stream(), Rec::new("a2", &a_log).depth(&depth2).boxed())?;
        ctx.close(ctx.stream())?;
        Ok(())
    }));
    w.net.sock(b).budget = Some(0);
    let ah = w.reg.insert_stream(a.boxed(), Extra::default());
    w.net.sock(ah).budget = Some(10);
    w.reg.dispatch(w.now, &mut w.net);
    assert_eq!(w.log(), ["b:made", "a:made", "a:pause", "b:pause"]);
    w.net.sock(ah).budget = None;
    w.writable(ah);
    // resume swaps to a2 and closes; a2 gets connection_lost, never connection_made.
    assert_eq!(w.log(), ["a:resume", "a2:lost"]);
    w.reg.dispatch(w.now, &mut w.net); // the call_soon closure aborts b
    assert_eq!(w.log(), ["b:lost"]);
    assert!(w.reg.is_empty());
}

#[test]
fn relay_sees_exact_write_buffer_size_of_the_other_side() {
    // A relay: a's data goes to b; inside the callback b's size is already exact and its
    // pause is decided (DESIGN.md §3.1, §3.2).
    let mut w = World::new();
    let b = w.add(Rec::new("b", &w.log));
    w.enter(|ctx| ctx.set_write_buffer_limits(b, Some(8), Some(2))).unwrap();
    w.net.sock(b).budget = Some(3);
    let seen = Rc::new(RefCell::new(Vec::new()));
    let mut a = Rec::new("a", &w.log);
    let seen2 = seen.clone();
    a.on_data = Some(Box::new(move |ctx, data| {
        ctx.write_slice(b, data)?;
        seen2.borrow_mut().push((ctx.write_buffer_size(b)?, ctx.is_writing_paused(b)?));
        Ok(())
    }));
    let a = w.add(a);
    w.log();
    w.recv(a, b"0123456"); // 3 sent, 4 queued
    w.recv(a, b"789ab"); // 9 queued: above high
    assert_eq!(*seen.borrow(), [(4, false), (9, true)]);
    assert_eq!(w.log(), ["a:data \"0123456\"", "a:data \"789ab\"", "b:pause"]);
}

#[test]
fn fast_path_from_data_received() {
    // A reply the socket takes whole never pauses; one it refuses pauses at once, and
    // is_writing_paused says so before write returns (DESIGN.md §3.2).
    let mut w = World::new();
    let paused_after_write = Rc::new(Cell::new(None));
    let p2 = paused_after_write.clone();
    let mut echo = Rec::new("e", &w.log);
    echo.on_data = Some(Box::new(move |ctx, data| {
        let big = vec![b'x'; 100 * 1024];
        ctx.write(ctx.stream(), Bytes::from(big))?;
        p2.set(Some(ctx.is_writing_paused(ctx.stream())?));
        let _ = data;
        Ok(())
    }));
    let h = w.add(echo);
    w.recv(h, b"go");
    assert_eq!(paused_after_write.get(), Some(false));
    assert_eq!(w.net.sock(h).sent.len(), 100 * 1024);
    w.net.sock(h).budget = Some(1000);
    w.recv(h, b"go");
    assert_eq!(paused_after_write.get(), Some(true));
    assert_eq!(w.log(), ["e:made", "e:data \"go\"", "e:data \"go\"", "e:pause"]);
}

#[test]
fn call_soon_queued_during_dispatch_runs_on_the_next() {
    // asyncio's rule: callbacks scheduled while running run on the next iteration.
    let mut w = World::new();
    let order = Rc::new(RefCell::new(Vec::new()));
    let o = order.clone();
    w.enter(|ctx| {
        let o2 = o.clone();
        ctx.call_soon(move |ctx| {
            o2.borrow_mut().push("first");
            let o3 = o2.clone();
            ctx.call_soon(move |_| o3.borrow_mut().push("second"));
        });
    });
    assert_eq!(w.reg.poll_timeout(), Some(w.now), "closures wait: poll_timeout is now");
    w.reg.dispatch(w.now, &mut w.net);
    assert_eq!(*order.borrow(), ["first"]);
    w.reg.dispatch(w.now, &mut w.net);
    assert_eq!(*order.borrow(), ["first", "second"]);
    assert_eq!(w.reg.poll_timeout(), None);
}

// ---------------------------------------------------------------------------------------
// Callback results and panics (DESIGN.md §4)
// ---------------------------------------------------------------------------------------

#[test]
fn data_received_error_is_fatal_connection_made_error_is_reported() {
    let mut w = World::new();
    let mut p = Rec::new("p", &w.log);
    p.on_made = Some(Box::new(|_, ()| Err(ProtocolError::msg("made failed"))));
    p.on_data = Some(Box::new(|_, _| Err(ProtocolError::msg("bad frame"))));
    let h = w.add(p);
    assert_eq!(
        w.reg.poll_error(),
        Some(LoopError::CallbackFailed {
            handle: Some(h.handle()),
            callback: "connection_made",
            error: ProtocolError::msg("made failed"),
        })
    );
    w.recv(h, b"x");
    assert_eq!(
        w.log(),
        ["p:made", "p:data \"x\"", "p:lost protocol error in data_received: bad frame"]
    );
}

#[test]
fn panicking_protocol_beside_healthy_ones() {
    struct Bomb;
    impl Protocol for Bomb {
        fn data_received(&mut self, _: &mut Ctx<'_>, _: &[u8]) -> CallbackResult {
            panic!("boom");
        }
        fn connection_lost(
            &mut self,
            _: &mut Ctx<'_>,
            _: Option<ConnectionError>,
        ) -> CallbackResult {
            panic!("must not be called after a panic");
        }
    }
    let mut w = World::new();
    let healthy = w.add(Rec::new("ok", &w.log));
    w.net.sock(healthy).budget = Some(0);
    w.enter(|ctx| ctx.write_slice(healthy, b"queued")).unwrap();
    let bomb = w.reg.insert_stream(Box::new(Bomb), Extra::default());
    w.reg.dispatch(w.now, &mut w.net);
    w.recv(bomb, b"x");
    let err = w.reg.poll_error().unwrap();
    assert!(
        matches!(&err, LoopError::Panicked { callback: "data_received", message, .. } if message == "boom"),
        "{err:?}"
    );
    assert_eq!(w.reg.poll_error(), None, "connection_lost is not delivered to it");
    assert!(w.net.sock(bomb).closed, "its transport was aborted");
    assert_eq!(w.reg.len(), 1);
    // The healthy transport keeps its queue and its callbacks.
    w.net.sock(healthy).budget = None;
    w.writable(healthy);
    assert_eq!(w.net.sock(healthy).sent, b"queued");
    w.recv(healthy, b"still here");
    assert_eq!(w.log(), ["ok:made", "ok:data \"still here\""]);
}

// ---------------------------------------------------------------------------------------
// Buffered protocols (spec §8.38, §1.8)
// ---------------------------------------------------------------------------------------

struct Buffered {
    buf: Vec<u8>,
    got: Rc<RefCell<Vec<u8>>>,
    calls: Rc<Cell<u32>>,
}

impl Protocol for Buffered {
    fn get_buffer(&mut self, _sizehint: usize) -> CallbackResult<Option<&mut [u8]>> {
        Ok(Some(&mut self.buf))
    }
    fn buffer_updated(&mut self, _: &mut Ctx<'_>, n: usize) -> CallbackResult {
        self.calls.set(self.calls.get() + 1);
        self.got.borrow_mut().extend_from_slice(&self.buf[..n]);
        Ok(())
    }
}

#[test]
fn buffered_protocol_reads_into_its_own_buffer() {
    let mut w = World::new();
    let got = Rc::new(RefCell::new(Vec::new()));
    let calls = Rc::new(Cell::new(0));
    let p = Buffered { buf: vec![0; 4], got: got.clone(), calls: calls.clone() };
    let h = w.reg.insert_stream(Box::new(p), Extra::default());
    w.reg.dispatch(w.now, &mut w.net);
    w.recv(h, b"abcdef");
    assert_eq!(*got.borrow(), b"abcd", "one read of at most the buffer's size");
    w.reg.on_readable(h.handle(), w.now, &mut w.net).unwrap();
    assert_eq!(*got.borrow(), b"abcdef");
    assert_eq!(calls.get(), 2);
}

#[test]
fn empty_get_buffer_is_fatal() {
    struct Empty(Log);
    impl Protocol for Empty {
        fn get_buffer(&mut self, _: usize) -> CallbackResult<Option<&mut [u8]>> {
            Ok(Some(&mut []))
        }
        fn connection_lost(
            &mut self,
            _: &mut Ctx<'_>,
            e: Option<ConnectionError>,
        ) -> CallbackResult {
            self.0.borrow_mut().push(format!("{e:?}"));
            Ok(())
        }
    }
    let mut w = World::new();
    let h = w.reg.insert_stream(Box::new(Empty(w.log.clone())), Extra::default());
    w.reg.dispatch(w.now, &mut w.net);
    w.recv(h, b"x");
    assert_eq!(w.log(), [format!("{:?}", Some(ConnectionError::EmptyBuffer))]);
}

#[test]
fn swap_between_plain_and_buffered_switches_the_read_path() {
    // bpo-33654: switching Protocol <-> BufferedProtocol at runtime.
    let mut w = World::new();
    let got = Rc::new(RefCell::new(Vec::new()));
    let calls = Rc::new(Cell::new(0));
    let next = RefCell::new(Some(Box::new(Buffered {
        buf: vec![0; 64],
        got: got.clone(),
        calls: calls.clone(),
    }) as Box<dyn Protocol>));
    let mut p = Rec::new("plain", &w.log);
    p.on_data = Some(Box::new(move |ctx, _| {
        if let Some(b) = next.borrow_mut().take() {
            ctx.set_protocol(ctx.stream(), b)?;
        }
        Ok(())
    }));
    let h = w.add(p);
    w.recv(h, b"one");
    w.recv(h, b"two");
    assert_eq!(w.log(), ["plain:made", "plain:data \"one\""]);
    assert_eq!(*got.borrow(), b"two");
}

// ---------------------------------------------------------------------------------------
// Protocol swap (DESIGN.md §4)
// ---------------------------------------------------------------------------------------

#[test]
fn gh_109051_swap_while_paused_gives_the_new_protocol_pause_first() {
    let mut w = World::new();
    let h = w.add(Rec::new("old", &w.log));
    w.log();
    w.net.sock(h).budget = Some(0);
    w.enter(|ctx| ctx.write(h, vec![0u8; 70_000])).unwrap();
    assert_eq!(w.log(), ["old:pause"]);
    let new_log = w.log.clone();
    w.enter(|ctx| ctx.set_protocol(h, Rec::new("new", &new_log).boxed())).unwrap();
    w.net.sock(h).budget = None;
    w.writable(h);
    w.recv(h, b"data");
    assert_eq!(w.log(), ["new:pause", "new:resume", "new:data \"data\""]);
}

#[test]
fn held_data_and_eof_go_to_the_new_protocol() {
    let mut w = World::new();
    let h = w.add(Rec::new("old", &w.log));
    w.enter(|ctx| ctx.pause_reading(h)).unwrap();
    w.reg.handle_received(h.handle(), b"held", w.now, &mut w.net).unwrap();
    w.reg.handle_received(h.handle(), b"", w.now, &mut w.net).unwrap();
    let log = w.log.clone();
    w.enter(|ctx| {
        ctx.set_protocol(h, Rec::new("new", &log).boxed()).unwrap();
        ctx.resume_reading(h).unwrap();
    });
    assert_eq!(w.log(), ["old:made", "new:data \"held\"", "new:eof", "new:lost"]);
}

// ---------------------------------------------------------------------------------------
// Timers (DESIGN.md §4)
// ---------------------------------------------------------------------------------------

#[test]
fn timers_are_reread_after_each_callback_without_stale_entries() {
    // An idle timer reset on every data_received, 100,000 times: the timer structure
    // stays at one entry.
    let mut w = World::new();
    let base = w.now;
    let mut p = Rec::new("idle", &Log::default());
    p.deadline = Some(base + Duration::from_secs(10));
    let count = Rc::new(Cell::new(0u64));
    let c = count.clone();
    p.on_data = Some(Box::new(move |_, _| {
        c.set(c.get() + 1);
        Ok(())
    }));
    struct Idle(Rec, Instant);
    impl Protocol for Idle {
        fn data_received(&mut self, ctx: &mut Ctx<'_>, d: &[u8]) -> CallbackResult {
            self.1 += Duration::from_millis(1);
            self.0.data_received(ctx, d)
        }
        fn poll_timeout(&self) -> Option<Instant> {
            Some(self.1 + Duration::from_secs(10))
        }
    }
    let h = w.reg.insert_stream(Box::new(Idle(p, base)), Extra::default());
    w.reg.dispatch(w.now, &mut w.net);
    for _ in 0..100_000 {
        w.recv(h, b"x");
        assert!(w.reg.timer_entries() <= 1);
    }
    assert_eq!(count.get(), 100_000);
    assert_eq!(
        w.reg.poll_timeout(),
        Some(base + Duration::from_millis(100_000) + Duration::from_secs(10))
    );
}

#[test]
fn no_timer_fires_early_and_handle_timeout_leaves_the_future() {
    let mut w = World::new();
    let base = w.now;
    let mut p = Rec::new("t", &w.log);
    p.deadline = Some(base + Duration::from_secs(5));
    let h = w.add(p);
    w.enter(|ctx| ctx.call_later(Duration::from_secs(3), |_| ())).unwrap();
    assert_eq!(w.reg.poll_timeout(), Some(base + Duration::from_secs(3)));
    w.reg.handle_timeout(base + Duration::from_secs(4), &mut w.net);
    assert_eq!(w.log(), ["t:made"], "the 5 s timer did not fire at 4 s");
    assert!(w.reg.poll_timeout().unwrap() > base + Duration::from_secs(4));
    w.reg.handle_timeout(base + Duration::from_secs(5), &mut w.net);
    assert_eq!(w.log(), ["t:timeout"]);
    assert_eq!(w.reg.poll_timeout(), None);
    let _ = h;
}

#[test]
fn call_later_checks_time_arithmetic_and_can_cancel() {
    let mut w = World::new();
    let r = w.enter(|ctx| ctx.call_later(Duration::MAX, |_| ()));
    assert_eq!(r, Err(TimeOverflow));
    assert_eq!(w.reg.timer_entries(), 0);
    let fired = Rc::new(Cell::new(false));
    let f = fired.clone();
    let id = w.enter(|ctx| ctx.call_later(Duration::from_secs(1), move |_| f.set(true))).unwrap();
    assert!(w.enter(|ctx| ctx.cancel(id)));
    w.reg.handle_timeout(w.now + Duration::from_secs(2), &mut w.net);
    assert!(!fired.get());
}

#[test]
fn timers_fire_in_deadline_order() {
    let mut w = World::new();
    let order = Rc::new(RefCell::new(Vec::new()));
    for (name, secs) in [("c", 3), ("a", 1), ("b", 2)] {
        let o = order.clone();
        w.enter(|ctx| {
            ctx.call_later(Duration::from_secs(secs), move |_| o.borrow_mut().push(name))
        })
        .unwrap();
    }
    w.reg.handle_timeout(w.now + Duration::from_secs(10), &mut w.net);
    assert_eq!(*order.borrow(), ["a", "b", "c"]);
}

// ---------------------------------------------------------------------------------------
// Requests (connect)
// ---------------------------------------------------------------------------------------

#[test]
fn connect_from_a_callback_reports_the_outcome_to_the_asker() {
    let mut w = World::new();
    let log = w.log.clone();
    let mut asker = Rec::new("asker", &w.log);
    asker.on_made = Some(Box::new(move |ctx, ()| {
        let addr = "127.0.0.1:1".parse().unwrap();
        ctx.connect(Endpoint::Addr(addr), Rec::new("up", &log).boxed());
        ctx.connect(
            Endpoint::Host { host: "nowhere".into(), port: 2 },
            Rec::new("x", &log).boxed(),
        );
        Ok(())
    }));
    w.add(asker);
    let (Some(Request::Connect { handle: up, .. }), Some(Request::Connect { handle: bad, .. })) =
        (w.reg.poll_request(), w.reg.poll_request())
    else {
        panic!("two connect requests expected");
    };
    assert_eq!(w.reg.interest(up.handle()), Ok(Interest { read: false, write: true }));
    assert_eq!(
        w.enter(|ctx| ctx.write_slice(up, b"early")),
        Err(WriteError::Handle(HandleError::Connecting))
    );
    w.reg.handle_connected(up, Extra::default(), w.now, &mut w.net).unwrap();
    let refused = ConnectionError::from(ErrorKind::ConnectionRefused);
    w.reg.handle_connect_failed(bad, refused.clone(), w.now, &mut w.net).unwrap();
    assert_eq!(
        w.log(),
        [
            "asker:made".to_string(),
            "up:made".into(),
            "asker:request 1 ok".into(),
            format!("asker:request 2 failed: {refused}"),
        ]
    );
    assert_eq!(
        w.reg.handle_connected(up, Extra::default(), w.now, &mut w.net),
        Err(DriverError::NotConnecting)
    );
    assert_eq!(
        w.reg.handle_connected(bad, Extra::default(), w.now, &mut w.net),
        Err(DriverError::StaleHandle)
    );
}

// ---------------------------------------------------------------------------------------
// poll_io (DESIGN.md §3.3)
// ---------------------------------------------------------------------------------------

#[test]
fn poll_io_reports_exactly_the_transports_that_changed() {
    let mut w = World::new();
    let hs: Vec<StreamHandle> = (0..5).map(|_| w.add(Rec::new("t", &Log::default()))).collect();
    let drained: Vec<Handle> = std::iter::from_fn(|| w.reg.poll_io()).collect();
    assert_eq!(drained, hs.iter().map(|h| h.handle()).collect::<Vec<_>>(), "new transports");
    assert_eq!(w.reg.poll_io(), None);
    w.net.sock(hs[3]).budget = Some(0);
    w.enter(|ctx| {
        ctx.pause_reading(hs[1]).unwrap();
        ctx.write_slice(hs[3], b"queued").unwrap();
        ctx.write_slice(hs[4], b"sent at once").unwrap(); // no interest change
        let _ = ctx.is_reading(hs[0]).unwrap();
    });
    let changed: Vec<Handle> = std::iter::from_fn(|| w.reg.poll_io()).collect();
    assert_eq!(changed, [hs[1].handle(), hs[3].handle()]);
    assert_eq!(w.reg.interest(hs[1].handle()), Ok(Interest { read: false, write: false }));
    assert_eq!(w.reg.interest(hs[3].handle()), Ok(Interest { read: true, write: true }));
}

// ---------------------------------------------------------------------------------------
// Stale handles, on every user and driver call
// ---------------------------------------------------------------------------------------

#[test]
fn stale_handle_on_every_user_and_driver_call() {
    let mut w = World::new();
    let h = w.add(Rec::new("gone", &w.log));
    w.enter(|ctx| ctx.abort(h)).unwrap();
    assert!(w.reg.is_empty());
    // The slot is reused by a new transport with a new generation.
    let fresh = w.add(Rec::new("fresh", &w.log));
    assert_eq!(fresh.handle().index(), h.handle().index());
    assert_ne!(fresh, h);
    let stale = HandleError::Stale;
    w.enter(|ctx| {
        assert_eq!(ctx.write(h, Bytes::from_static(b"x")), Err(WriteError::Handle(stale)));
        assert_eq!(ctx.write_slice(h, b"x"), Err(WriteError::Handle(stale)));
        assert_eq!(ctx.writelines(h, &[]), Err(WriteError::Handle(stale)));
        assert_eq!(ctx.write_eof(h), Err(stale));
        assert_eq!(ctx.can_write_eof(h), Err(stale));
        assert_eq!(ctx.close(h), Err(stale));
        assert_eq!(ctx.abort(h), Err(stale));
        assert_eq!(ctx.is_closing(h), Err(stale));
        assert_eq!(ctx.pause_reading(h), Err(stale));
        assert_eq!(ctx.resume_reading(h), Err(stale));
        assert_eq!(ctx.is_reading(h), Err(stale));
        assert_eq!(ctx.write_buffer_size(h), Err(stale));
        assert_eq!(ctx.write_buffer_limits(h), Err(stale));
        assert_eq!(ctx.set_write_buffer_limits(h, None, None), Err(LimitsError::Handle(stale)));
        assert_eq!(ctx.set_write_buffer_hard_limit(h, None), Err(stale));
        assert_eq!(ctx.is_writing_paused(h), Err(stale));
        assert_eq!(ctx.extra(h).map(|_| ()), Err(stale));
        assert_eq!(ctx.set_protocol(h, Rec::new("x", &Log::default()).boxed()), Err(stale));
        assert_eq!(ctx.feed_data(h, b"x"), Err(DriverError::StaleHandle));
        // `enter` has no transport of its own.
        assert_eq!(ctx.close(ctx.stream()), Err(stale));
    });
    let raw = h.handle();
    let d = DriverError::StaleHandle;
    assert_eq!(w.reg.on_readable(raw, w.now, &mut w.net), Err(d.clone()));
    assert_eq!(w.reg.on_writable(raw, w.now, &mut w.net), Err(d.clone()));
    assert_eq!(w.reg.handle_error(raw, ErrorKind::Other.into(), w.now, &mut w.net), Err(d.clone()));
    assert_eq!(w.reg.handle_received(raw, b"x", w.now, &mut w.net), Err(d.clone()));
    assert_eq!(w.reg.handle_sent(raw, 1, w.now, &mut w.net), Err(d.clone()));
    assert_eq!(w.reg.interest(raw), Err(d.clone()));
    assert_eq!(w.reg.poll_transmit(raw, &mut []), Err(d.clone()));
    assert_eq!(w.reg.handle_connected(h, Extra::default(), w.now, &mut w.net), Err(d.clone()));
    assert_eq!(w.reg.handle_connect_failed(h, ErrorKind::Other.into(), w.now, &mut w.net), Err(d));
    // Nothing reached the fresh transport.
    assert_eq!(w.log(), ["gone:made", "gone:lost", "fresh:made"]);
}

#[test]
fn typed_handles_check_the_kind() {
    let mut w = World::new();
    let rp = w.reg.insert_read_pipe(Rec::new("r", &w.log).boxed(), Extra::default());
    w.reg.dispatch(w.now, &mut w.net);
    let forged = StreamHandle::from_handle(rp.handle());
    w.enter(|ctx| {
        assert_eq!(
            ctx.write_slice(forged, b"x"),
            Err(WriteError::Handle(HandleError::WrongKind {
                expected: "stream",
                found: "read pipe"
            }))
        );
        assert_eq!(ctx.is_reading(rp), Ok(true));
    });
}

// ---------------------------------------------------------------------------------------
// Transports served by a protocol (DESIGN.md §3)
// ---------------------------------------------------------------------------------------

/// What the inner transport's sends go into: shared with the engine protocol.
#[derive(Default)]
struct Pending {
    out: Vec<u8>,
    /// The sink refuses more than this many unframed bytes (back-pressure toward the app).
    cap: usize,
    closed: bool,
}

struct Sink(Rc<RefCell<Pending>>);

impl Io for Sink {
    fn try_send(&mut self, _: Handle, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let mut p = self.0.borrow_mut();
        let room = p.cap.saturating_sub(p.out.len());
        let mut n = 0;
        for b in bufs {
            let take = b.len().min(room - n);
            p.out.extend_from_slice(&b[..take]);
            n += take;
        }
        if n == 0 { Err(ErrorKind::WouldBlock.into()) } else { Ok(n) }
    }
    fn try_recv(&mut self, _: Handle, _: &mut [u8]) -> io::Result<usize> {
        Err(ErrorKind::WouldBlock.into())
    }
    fn shutdown_write(&mut self, _: Handle) -> io::Result<()> {
        Ok(())
    }
    fn close(&mut self, _: Handle) {
        self.0.borrow_mut().closed = true;
    }
}

/// Frames the app's bytes as `[len u8][payload]` on the raw transport and unframes what
/// arrives: a miniature of the TLS engine's shape.
struct Framer {
    app: Option<Box<dyn Protocol>>,
    inner: Option<StreamHandle>,
    pending: Rc<RefCell<Pending>>,
    partial: Vec<u8>,
}

impl Framer {
    fn pump(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        let Some(inner) = self.inner else { return Ok(()) };
        let raw = ctx.stream();
        loop {
            let (out, closed) = {
                let mut p = self.pending.borrow_mut();
                (std::mem::take(&mut p.out), p.closed)
            };
            for chunk in out.chunks(255) {
                ctx.write_slice(raw, &[chunk.len() as u8])?;
                ctx.write_slice(raw, chunk)?;
            }
            if closed {
                return Ok(ctx.close(raw)?);
            }
            if out.is_empty() {
                return Ok(());
            }
            // The sink has room again: let the served transport flush into it.
            ctx.served_writable(inner)?;
        }
    }
}

impl Protocol for Framer {
    fn connection_made(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        let app = self.app.take().expect("app protocol");
        let sink = Box::new(Sink(self.pending.clone()));
        self.inner = Some(ctx.insert_served_stream(app, Extra::default(), sink)?);
        Ok(())
    }
    fn data_received(&mut self, ctx: &mut Ctx<'_>, data: &[u8]) -> CallbackResult {
        self.partial.extend_from_slice(data);
        while let Some(&len) = self.partial.first() {
            let len = len as usize;
            if self.partial.len() < 1 + len {
                break;
            }
            let frame: Vec<u8> = self.partial.drain(..1 + len).skip(1).collect();
            ctx.feed_data(self.inner.unwrap(), &frame)?;
        }
        Ok(())
    }
    fn eof_received(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult<bool> {
        ctx.feed_eof(self.inner.unwrap())?;
        Ok(true)
    }
    fn handle_wake(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        self.pump(ctx)
    }
    fn connection_lost(
        &mut self,
        ctx: &mut Ctx<'_>,
        err: Option<ConnectionError>,
    ) -> CallbackResult {
        if let Some(inner) = self.inner {
            let _ = ctx.served_closed(inner, err);
        }
        Ok(())
    }
}

#[test]
fn a_served_transport_is_framed_by_its_engine() {
    let mut w = World::new();
    let pending = Rc::new(RefCell::new(Pending { cap: 1 << 20, ..Pending::default() }));
    let mut app = Rec::new("app", &w.log);
    app.keep_open = true;
    app.on_made = Some(Box::new(|ctx, ()| {
        ctx.write_slice(ctx.stream(), b"hi")?;
        Ok(())
    }));
    app.on_data = Some(Box::new(|ctx, data| {
        ctx.write_slice(ctx.stream(), data)?;
        assert_eq!(ctx.write_buffer_size(ctx.stream())?, 0, "sent synchronously into the sink");
        Ok(())
    }));
    let framer = Framer { app: Some(app.boxed()), inner: None, pending, partial: Vec::new() };
    let raw = w.reg.insert_stream(Box::new(framer), Extra::default());
    w.reg.dispatch(w.now, &mut w.net);
    assert_eq!(w.net.sock(raw).sent, b"\x02hi");
    // Two frames arriving split across reads.
    w.recv(raw, b"\x03ab");
    w.recv(raw, b"c\x01z");
    // Both replies were written before the engine's wake-up: framed together.
    assert_eq!(w.net.sock(raw).sent, b"\x02hi\x04abcz");
    // Fed in one engine callback: one delivery (a stream has no message boundaries).
    assert_eq!(w.log(), ["app:made", "app:data \"abcz\""]);
    // The driver never sees the served transport.
    let seen: Vec<Handle> = std::iter::from_fn(|| w.reg.poll_io()).collect();
    assert!(seen.iter().all(|h| *h == raw.handle()), "{seen:?}");
    // EOF on the raw side reaches the app; the raw side ends, and so does the app's.
    w.net.sock(raw).eof = true;
    w.reg.on_readable(raw.handle(), w.now, &mut w.net).unwrap();
    assert_eq!(w.log(), ["app:eof"]);
    w.enter(|ctx| ctx.abort(raw)).unwrap();
    assert_eq!(w.log(), ["app:lost"]);
    assert!(w.reg.is_empty());
}

#[test]
fn served_transport_back_pressure_and_external_pending() {
    let mut w = World::new();
    let pending = Rc::new(RefCell::new(Pending { cap: 4, ..Pending::default() }));
    let inner_cell = Rc::new(Cell::new(None));
    let ic = inner_cell.clone();
    let mut app = Rec::new("app", &w.log);
    app.on_made = Some(Box::new(move |ctx, ()| {
        ic.set(Some(ctx.stream()));
        ctx.set_write_buffer_limits(ctx.stream(), Some(4), Some(0))?;
        ctx.write_slice(ctx.stream(), b"0123456789")?;
        Ok(())
    }));
    let framer = Framer {
        app: Some(app.boxed()),
        inner: None,
        pending: pending.clone(),
        partial: Vec::new(),
    };
    let raw = w.reg.insert_stream(Box::new(framer), Extra::default());
    w.net.sock(raw).budget = Some(0);
    w.reg.dispatch(w.now, &mut w.net);
    // The sink took 4 bytes, the engine framed them into the raw queue; the rest flows as
    // the engine asks for more, so everything reaches the raw transport's queue.
    assert_eq!(w.log(), ["app:made", "app:pause", "app:resume"]);
    let inner = inner_cell.get().unwrap();
    w.enter(|ctx| {
        assert_eq!(ctx.write_buffer_size(inner).unwrap(), 0);
        assert_eq!(
            ctx.set_served_pending(inner, 9),
            Err(DriverError::WrongKind { expected: "transport served by this protocol" })
        );
    });
    w.net.sock(raw).budget = None;
    w.writable(raw);
    assert_eq!(w.net.sock(raw).sent, b"\x040123\x044567\x0289");
}

#[test]
fn driver_external_pending_counts_in_size_and_drives_both_edges() {
    // Bytes a cross-task queue holds for a transport (DESIGN.md §6): they count in
    // write_buffer_size() and pause / resume the protocol like its own queue.
    let mut w = World::new();
    let h = w.add(Rec::new("a", &w.log));
    w.enter(|ctx| ctx.set_write_buffer_limits(h, Some(8), Some(2))).unwrap();
    w.log();
    w.net.sock(h).budget = Some(0);
    w.enter(|ctx| ctx.write_slice(h, b"0123")).unwrap();
    w.reg.set_external_pending(h.handle(), 5, w.now, &mut w.net).unwrap();
    assert_eq!(w.enter(|ctx| ctx.write_buffer_size(h)).unwrap(), 9);
    assert_eq!(w.log(), ["a:pause"]);
    w.reg.set_external_pending(h.handle(), 0, w.now, &mut w.net).unwrap();
    assert_eq!(w.log(), [] as [&str; 0], "4 > low: still paused");
    w.net.sock(h).budget = None;
    w.writable(h);
    assert_eq!(w.log(), ["a:resume"]);
    assert_eq!(
        w.reg.set_external_pending(Handle::from_raw(99, 0), 1, w.now, &mut w.net),
        Err(DriverError::StaleHandle)
    );
}

#[test]
fn abort_and_fatal_errors_use_io_abort_close_uses_io_close() {
    #[derive(Default)]
    struct Calls(Vec<&'static str>);
    impl Io for Calls {
        fn try_send(&mut self, _: Handle, b: &[IoSlice<'_>]) -> io::Result<usize> {
            Ok(b.iter().map(|b| b.len()).sum())
        }
        fn try_recv(&mut self, _: Handle, _: &mut [u8]) -> io::Result<usize> {
            Err(ErrorKind::WouldBlock.into())
        }
        fn shutdown_write(&mut self, _: Handle) -> io::Result<()> {
            Ok(())
        }
        fn close(&mut self, _: Handle) {
            self.0.push("close");
        }
        fn abort(&mut self, _: Handle) {
            self.0.push("abort");
        }
    }
    let now = t0();
    let mut reg = Registry::new(now);
    let mut io = Calls::default();
    let log = Log::default();
    let (a, b) = (
        reg.insert_stream(Rec::new("a", &log).boxed(), Extra::default()),
        reg.insert_stream(Rec::new("b", &log).boxed(), Extra::default()),
    );
    reg.dispatch(now, &mut io);
    reg.enter(now, &mut io, |ctx| {
        ctx.close(a).unwrap();
        ctx.abort(b).unwrap();
    });
    assert_eq!(io.0, ["close", "abort"]);
}

#[test]
fn report_error_reaches_the_error_queue() {
    let mut w = World::new();
    let mut p = Rec::new("p", &w.log);
    p.on_made = Some(Box::new(|ctx, ()| {
        ctx.report_error(ProtocolError::msg("handshake failed"));
        Ok(())
    }));
    let h = w.add(p);
    assert_eq!(
        w.reg.poll_error(),
        Some(LoopError::Reported {
            handle: Some(h.handle()),
            error: ProtocolError::msg("handshake failed")
        })
    );
}

#[test]
fn a_served_transport_closed_by_its_eof_answer_wakes_its_engine() {
    // The app answers the engine's EOF with "close": no Ctx call of the engine's did it,
    // yet the engine must hear of it (to send its own close_notify, say).
    let mut w = World::new();
    let pending = Rc::new(RefCell::new(Pending { cap: 1 << 20, ..Pending::default() }));
    let app = Rec::new("app", &w.log); // keep_open false: EOF closes
    let framer = Framer {
        app: Some(app.boxed()),
        inner: None,
        pending: pending.clone(),
        partial: Vec::new(),
    };
    let raw = w.reg.insert_stream(Box::new(framer), Extra::default());
    w.reg.dispatch(w.now, &mut w.net);
    w.net.sock(raw).eof = true;
    w.reg.on_readable(raw.handle(), w.now, &mut w.net).unwrap();
    // The engine's wake saw the sink closed and closed the raw transport in turn.
    assert!(pending.borrow().closed);
    assert!(w.net.sock(raw).closed, "the engine closed the raw side when woken");
    assert_eq!(w.log(), ["app:made", "app:eof", "app:lost"]);
}
