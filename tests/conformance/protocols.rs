//! The protocols every scenario uses. Each records what it saw in a shared [`Seen`], so a
//! scenario can wait for and assert on it whatever the driver.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::OnceLock;

use aioport::{
    CallbackResult, ConnectionError, Ctx, Endpoint, Protocol, ProtocolError, RequestId,
    StreamHandle,
};
use bytes::Bytes;

/// What one protocol saw, in order.
#[derive(Debug, Default)]
pub struct Seen {
    pub handle: Option<StreamHandle>,
    /// Callback names in delivery order ("made", "data", "eof", "pause", "resume",
    /// "completed", "lost").
    pub events: Vec<&'static str>,
    /// The bytes received, when the protocol keeps them.
    pub data: Vec<u8>,
    pub received: usize,
    pub sent: usize,
    pub pauses: u32,
    pub resumes: u32,
    /// `Some(reason)` once `connection_lost(reason)` was delivered.
    pub lost: Option<Option<ConnectionError>>,
    /// Outcomes of `Ctx::connect` requests, with the new transport's own record.
    pub completed: Vec<(RequestId, Result<StreamHandle, ConnectionError>)>,
    /// A check in a callback failed.
    pub wrong: Option<String>,
}

pub type Shared = Rc<RefCell<Seen>>;

pub fn shared() -> Shared {
    Rc::new(RefCell::new(Seen::default()))
}

impl Seen {
    pub fn is_lost(&self) -> bool {
        self.lost.is_some()
    }

    pub fn lose(&mut self, err: Option<ConnectionError>) {
        assert!(self.lost.is_none(), "connection_lost delivered twice");
        self.events.push("lost");
        self.lost = Some(err);
    }
}

// ---------------------------------------------------------------------------------------
// The byte pattern: every stream carries it from offset 0
// ---------------------------------------------------------------------------------------

/// The pattern repeats with this prime period; a reference buffer holds a period plus the
/// longest read, so checking a read is one slice comparison.
const PERIOD: usize = 65_521;
const MAX_CHUNK: usize = 256 * 1024;

fn reference() -> &'static Bytes {
    static REF: OnceLock<Bytes> = OnceLock::new();
    REF.get_or_init(|| {
        let mut x: u32 = 0x2545_f491;
        let period: Vec<u8> = (0..PERIOD)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                (x >> 7) as u8
            })
            .collect();
        Bytes::from(period.iter().copied().cycle().take(PERIOD + 2 * MAX_CHUNK).collect::<Vec<_>>())
    })
}

/// The pattern's bytes `[offset, offset + len)`, zero-copy (`len <= 256 KiB`).
pub fn pattern(offset: usize, len: usize) -> Bytes {
    let start = offset % PERIOD;
    reference().slice(start..start + len)
}

/// True when `data` is the pattern at `offset`.
pub fn matches_pattern(offset: usize, data: &[u8]) -> bool {
    data.chunks(MAX_CHUNK).enumerate().all(|(i, chunk)| {
        let start = (offset + i * MAX_CHUNK) % PERIOD;
        chunk == &reference()[start..start + chunk.len()]
    })
}

// ---------------------------------------------------------------------------------------
// Servers
// ---------------------------------------------------------------------------------------

/// asyncio's echo server with flow control: `pause_reading()` in `pause_writing()`,
/// `resume_reading()` in `resume_writing()`. Closes when the peer half-closes.
pub struct Echo {
    pub seen: Option<Shared>,
    /// Panics in `data_received` (the panicking-protocol scenario).
    pub panic_on_data: bool,
}

impl Echo {
    pub fn boxed(seen: Option<Shared>) -> Box<dyn Protocol> {
        Box::new(Echo { seen, panic_on_data: false })
    }
}

impl Protocol for Echo {
    fn connection_made(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        if let Some(s) = &self.seen {
            let mut s = s.borrow_mut();
            s.handle = Some(ctx.stream());
            s.events.push("made");
        }
        Ok(())
    }
    fn data_received(&mut self, ctx: &mut Ctx<'_>, data: &[u8]) -> CallbackResult {
        assert!(!self.panic_on_data, "boom: this protocol panics on data");
        if let Some(s) = &self.seen {
            s.borrow_mut().received += data.len();
        }
        ctx.write_slice(ctx.stream(), data)?;
        Ok(())
    }
    fn pause_writing(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        if let Some(s) = &self.seen {
            s.borrow_mut().pauses += 1;
        }
        Ok(ctx.pause_reading(ctx.stream())?)
    }
    fn resume_writing(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        if let Some(s) = &self.seen {
            s.borrow_mut().resumes += 1;
        }
        Ok(ctx.resume_reading(ctx.stream())?)
    }
    fn connection_lost(&mut self, _: &mut Ctx<'_>, err: Option<ConnectionError>) -> CallbackResult {
        if let Some(s) = &self.seen {
            s.borrow_mut().lose(err);
        }
        Ok(())
    }
}

/// Records everything and keeps the bytes; optionally starts with reading paused (a peer
/// that does not read) and checks that what arrives is the pattern.
pub struct Recorder {
    pub seen: Shared,
    pub start_paused: bool,
    pub check_pattern: bool,
    /// `eof_received`'s answer: keep the write side open.
    pub keep_open: bool,
}

impl Recorder {
    pub fn new(seen: &Shared) -> Self {
        Recorder { seen: seen.clone(), start_paused: false, check_pattern: false, keep_open: false }
    }
}

impl Protocol for Recorder {
    fn connection_made(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        let mut s = self.seen.borrow_mut();
        s.handle = Some(ctx.stream());
        s.events.push("made");
        if self.start_paused {
            ctx.pause_reading(ctx.stream())?;
        }
        Ok(())
    }
    fn data_received(&mut self, _: &mut Ctx<'_>, data: &[u8]) -> CallbackResult {
        let mut s = self.seen.borrow_mut();
        if s.events.last() != Some(&"data") {
            s.events.push("data");
        }
        if self.check_pattern {
            if !matches_pattern(s.received, data) && s.wrong.is_none() {
                s.wrong = Some(format!("wrong bytes at offset {}", s.received));
            }
        } else {
            s.data.extend_from_slice(data);
        }
        s.received += data.len();
        Ok(())
    }
    fn eof_received(&mut self, _: &mut Ctx<'_>) -> CallbackResult<bool> {
        self.seen.borrow_mut().events.push("eof");
        Ok(self.keep_open)
    }
    fn pause_writing(&mut self, _: &mut Ctx<'_>) -> CallbackResult {
        let mut s = self.seen.borrow_mut();
        s.pauses += 1;
        s.events.push("pause");
        Ok(())
    }
    fn resume_writing(&mut self, _: &mut Ctx<'_>) -> CallbackResult {
        let mut s = self.seen.borrow_mut();
        s.resumes += 1;
        s.events.push("resume");
        Ok(())
    }
    fn connection_lost(&mut self, _: &mut Ctx<'_>, err: Option<ConnectionError>) -> CallbackResult {
        self.seen.borrow_mut().lose(err);
        Ok(())
    }
    fn request_completed(
        &mut self,
        _: &mut Ctx<'_>,
        id: RequestId,
        outcome: Result<StreamHandle, ConnectionError>,
    ) -> CallbackResult {
        let mut s = self.seen.borrow_mut();
        s.events.push("completed");
        s.completed.push((id, outcome));
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------------------

/// What a [`Pusher`] does once it has written everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenSent {
    /// Wait for the echo of every byte (checked against the pattern), then close.
    CloseAfterEcho,
    /// Close at once (`close()` flushes what is queued).
    Close,
    /// Do nothing: the scenario decides.
    Stay,
}

/// Writes `total` bytes of the pattern as fast as flow control allows — 64 KiB writes
/// until `is_writing_paused()`, more on `resume_writing` — and checks any echo.
pub struct Pusher {
    pub seen: Shared,
    pub total: usize,
    pub when_sent: WhenSent,
}

impl Pusher {
    fn fill(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        let h = ctx.stream();
        let mut sent = self.seen.borrow().sent;
        while sent < self.total && !ctx.is_writing_paused(h)? {
            let n = (64 * 1024).min(self.total - sent);
            ctx.write(h, pattern(sent, n))?;
            sent += n;
        }
        self.seen.borrow_mut().sent = sent;
        if sent == self.total && self.when_sent == WhenSent::Close {
            ctx.close(h)?;
        }
        Ok(())
    }
}

impl Protocol for Pusher {
    fn connection_made(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        {
            let mut s = self.seen.borrow_mut();
            s.handle = Some(ctx.stream());
            s.events.push("made");
        }
        self.fill(ctx)
    }
    fn data_received(&mut self, ctx: &mut Ctx<'_>, data: &[u8]) -> CallbackResult {
        let mut s = self.seen.borrow_mut();
        if !matches_pattern(s.received, data) || s.received + data.len() > self.total {
            let why = format!("wrong echo at offset {}", s.received);
            s.wrong.get_or_insert(why.clone());
            return Err(ProtocolError::msg(why));
        }
        s.received += data.len();
        if s.received == self.total && self.when_sent == WhenSent::CloseAfterEcho {
            ctx.close(ctx.stream())?;
        }
        Ok(())
    }
    fn pause_writing(&mut self, _: &mut Ctx<'_>) -> CallbackResult {
        let mut s = self.seen.borrow_mut();
        s.pauses += 1;
        s.events.push("pause");
        Ok(())
    }
    fn resume_writing(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        {
            let mut s = self.seen.borrow_mut();
            s.resumes += 1;
            s.events.push("resume");
        }
        self.fill(ctx)
    }
    fn connection_lost(&mut self, _: &mut Ctx<'_>, err: Option<ConnectionError>) -> CallbackResult {
        self.seen.borrow_mut().lose(err);
        Ok(())
    }
}

/// Sends `message` on `connection_made`, keeps what comes back, and closes once `expect`
/// bytes arrived.
pub struct Client {
    pub seen: Shared,
    pub message: Vec<u8>,
    pub expect: usize,
}

impl Protocol for Client {
    fn connection_made(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        {
            let mut s = self.seen.borrow_mut();
            s.handle = Some(ctx.stream());
            s.events.push("made");
            s.sent = self.message.len();
        }
        // Three writes: the echo must not depend on message boundaries.
        let third = self.message.len() / 3;
        let (a, rest) = self.message.split_at(third);
        let (b, c) = rest.split_at(third);
        for part in [a, b, c] {
            ctx.write_slice(ctx.stream(), part)?;
        }
        Ok(())
    }
    fn data_received(&mut self, ctx: &mut Ctx<'_>, data: &[u8]) -> CallbackResult {
        let mut s = self.seen.borrow_mut();
        s.data.extend_from_slice(data);
        s.received += data.len();
        if s.received >= self.expect {
            ctx.close(ctx.stream())?;
        }
        Ok(())
    }
    fn eof_received(&mut self, _: &mut Ctx<'_>) -> CallbackResult<bool> {
        self.seen.borrow_mut().events.push("eof");
        Ok(false)
    }
    fn connection_lost(&mut self, _: &mut Ctx<'_>, err: Option<ConnectionError>) -> CallbackResult {
        self.seen.borrow_mut().lose(err);
        Ok(())
    }
}

/// Opens connections from a callback with `Ctx::connect` (never blocking) as soon as it
/// is connected itself; outcomes arrive in `request_completed`.
pub struct Asker {
    pub seen: Shared,
    pub targets: Vec<(Endpoint, Box<dyn Protocol>)>,
}

impl Protocol for Asker {
    fn connection_made(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        self.seen.borrow_mut().events.push("made");
        for (endpoint, protocol) in self.targets.drain(..) {
            ctx.connect(endpoint, protocol);
        }
        Ok(())
    }
    fn request_completed(
        &mut self,
        _: &mut Ctx<'_>,
        id: RequestId,
        outcome: Result<StreamHandle, ConnectionError>,
    ) -> CallbackResult {
        let mut s = self.seen.borrow_mut();
        s.events.push("completed");
        s.completed.push((id, outcome));
        Ok(())
    }
    fn connection_lost(&mut self, _: &mut Ctx<'_>, err: Option<ConnectionError>) -> CallbackResult {
        self.seen.borrow_mut().lose(err);
        Ok(())
    }
}
