//! The served sink: the [`Io`] the app's transport sends into. App writes are encrypted
//! synchronously, inside the app's own `write`, into ciphertext the engine hands to the raw
//! transport right after the app's callback returns.

use std::cell::RefCell;
use std::io::{self, IoSlice, Write};
use std::rc::Rc;

use rustls::Connection;

use crate::{Handle, Io};

/// How the app's transport ended, as far as the engine can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AppClosed {
    /// `close()` after its queue drained (or an EOF answered "close"): run the TLS shutdown.
    Graceful,
    /// `abort()`, a fatal error or a panic (`Io::abort`): drop everything and abort the
    /// raw transport.
    Abort,
}

/// The state the engine and its sink share.
pub(super) struct Shared {
    pub(super) conn: Connection,
    /// Ciphertext not yet handed to the raw transport: counted in the app transport's
    /// `write_buffer_size()` (spec §15.4 ¶96).
    pub(super) out: Vec<u8>,
    /// The raw transport is paused for writing: the sink refuses plaintext, so the app's
    /// transport queues it and pauses its protocol in turn.
    pub(super) blocked: bool,
    /// Bytes the raw transport takes before reaching its high-water mark, as of the
    /// engine's last hand-over: how much ciphertext the sink lets pile up in `out` between
    /// two hand-overs.
    pub(super) room: usize,
    /// The last send offered more than the sink took: the app transport's queue holds
    /// bytes (it only queues what the sink refused, and drains only through the sink).
    pub(super) queued: bool,
    /// `write_eof()` completed: our `close_notify` is queued.
    pub(super) eof_sent: bool,
    /// The negotiated version has no half-close (TLS 1.2).
    pub(super) no_half_close: bool,
    pub(super) closed: Option<AppClosed>,
}

impl Shared {
    pub(super) fn new(conn: Connection) -> Self {
        Shared {
            conn,
            out: Vec::new(),
            blocked: false,
            room: 0,
            queued: false,
            eof_sent: false,
            no_half_close: false,
            closed: None,
        }
    }

    /// Moves every record rustls has ready into `out`.
    pub(super) fn drain_tls(&mut self) -> io::Result<()> {
        while self.conn.wants_write() {
            self.conn.write_tls(&mut self.out)?;
        }
        Ok(())
    }
}

/// The `Io` of the app's transport.
pub(super) struct Sink {
    pub(super) shared: Rc<RefCell<Shared>>,
}

impl Io for Sink {
    /// Encrypts what it can, like a socket whose buffer is the raw transport's room: a
    /// write is taken whole when no ciphertext waits for the hand-over (so a large write
    /// never pauses the app by itself: asyncio's fast path), later ones up to the room the
    /// raw transport had left below its high-water mark, nothing while it is paused. So a
    /// protocol that writes until `is_writing_paused()` stops after high water plus one
    /// write, as over plain TCP. During a handshake (later: start_tls) rustls buffers up
    /// to its limit (64 KiB) of plaintext and the rest waits in the app's queue.
    fn try_send(&mut self, _h: Handle, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let mut s = self.shared.borrow_mut();
        if s.closed.is_some() || s.eof_sent {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        let budget = if s.blocked {
            0
        } else if s.out.is_empty() {
            total
        } else {
            s.room.saturating_sub(s.out.len())
        };
        let mut taken = 0;
        'bufs: for buf in bufs {
            let mut rest: &[u8] = &buf[..buf.len().min(budget - taken)];
            while !rest.is_empty() {
                let n = s.conn.writer().write(rest)?;
                if n == 0 {
                    break 'bufs;
                }
                taken += n;
                rest = &rest[n..];
                // rustls bounds its own buffer (64 KiB): move the records out as they come.
                s.drain_tls()?;
            }
            if taken == budget {
                break;
            }
        }
        s.queued = taken < total;
        if taken == 0 && total > 0 { Err(io::ErrorKind::WouldBlock.into()) } else { Ok(taken) }
    }

    fn try_recv(&mut self, _h: Handle, _buf: &mut [u8]) -> io::Result<usize> {
        // The engine feeds the app's transport (`Ctx::feed_data`); it never reads.
        Err(io::ErrorKind::WouldBlock.into())
    }

    /// `write_eof()` after the queue drained: TLS 1.3 sends `close_notify` and keeps
    /// reading (half-close). TLS 1.2 has no half-close (RFC 5246 §7.2.1: the peer answers
    /// `close_notify` by closing): `Ctx::write_eof` refuses the call and the transport
    /// never asks, so this `Unsupported` only guards against a caller bypassing both.
    fn shutdown_write(&mut self, _h: Handle) -> io::Result<()> {
        let mut s = self.shared.borrow_mut();
        if s.no_half_close {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "write_eof() is not supported over TLS 1.2 (no half-close); \
                 check TlsInfo::supports_half_close() and use close()",
            ));
        }
        if !s.eof_sent {
            s.eof_sent = true;
            s.conn.send_close_notify();
            s.drain_tls()?;
        }
        Ok(())
    }

    fn close(&mut self, _h: Handle) {
        self.shared.borrow_mut().closed = Some(AppClosed::Graceful);
    }

    fn abort(&mut self, _h: Handle) {
        self.shared.borrow_mut().closed = Some(AppClosed::Abort);
    }
}
