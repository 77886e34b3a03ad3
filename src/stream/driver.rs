//! The driver face of [`StreamTransport`]: readiness in, reads and sends through `Io`,
//! completions for completion-based drivers.

use std::io::{self, IoSlice};

use super::{ReadOutcome, Serving, StreamKind, StreamTransport, is_transient};
use crate::{ConnectionError, DriverError, Extra, Interest, Io, SendPool};

impl StreamTransport {
    /// What the transport wants from the readiness source now.
    pub fn interest(&self) -> Interest {
        if self.lifecycle.is_lost() {
            return Interest::default();
        }
        let read = match self.kind {
            // The write end of a pipe watches for the read end closing (spec §13.68).
            StreamKind::WritePipe => true,
            _ => self.delivering_reads() && !self.peer_eof && self.inbound.is_empty(),
        };
        Interest { read, write: !self.queue.is_empty() || self.wants_sendfile_write() }
    }

    /// Reads once through [`Io::try_recv`] into `buf` if the transport wants to read. On
    /// [`ReadOutcome::Data`] the caller delivers `buf[..n]` to `data_received` at once (or
    /// hands it back with [`handle_data`](Self::handle_data) if it cannot).
    ///
    /// # Errors
    ///
    /// [`DriverError::Closed`] once the socket is closed;
    /// [`DriverError::ReceivedMoreThanCapacity`] if `Io::try_recv` claims too much (the
    /// transport is then failed with that error).
    pub fn read(
        &mut self,
        buf: &mut [u8],
        io: &mut dyn Io,
        pool: &mut SendPool,
    ) -> Result<ReadOutcome, DriverError> {
        self.check_open()?;
        if !self.interest().read || self.kind == StreamKind::WritePipe || buf.is_empty() {
            return Ok(ReadOutcome::Idle);
        }
        match io.try_recv(self.handle, buf) {
            Ok(0) => {
                self.peer_eof = true;
                Ok(ReadOutcome::Eof)
            }
            Ok(n) if n <= buf.len() => Ok(ReadOutcome::Data(n)),
            Ok(n) => {
                let err =
                    DriverError::ReceivedMoreThanCapacity { capacity: buf.len(), received: n };
                self.fail(ConnectionError::Driver(err.clone()), io, pool);
                Err(err)
            }
            Err(e) if is_transient(&e) => Ok(ReadOutcome::Idle),
            Err(e) => {
                self.fail(e.into(), io, pool);
                Ok(ReadOutcome::Failed)
            }
        }
    }

    /// Hands over bytes the driver received but that were not delivered at once
    /// (completion-based drivers, or a read the caller could not deliver). They are copied
    /// and delivered by [`next_callback`](Self::next_callback) when reading allows. Bytes
    /// arriving after `close()` are discarded, as asyncio stops reading at close.
    ///
    /// # Errors
    ///
    /// [`DriverError::Closed`], [`DriverError::DataAfterEof`].
    pub fn handle_data(&mut self, data: &[u8]) -> Result<(), DriverError> {
        self.check_open()?;
        if self.peer_eof {
            return Err(DriverError::DataAfterEof);
        }
        if !self.lifecycle.is_closing() {
            self.inbound.extend_from_slice(data);
        }
        Ok(())
    }

    /// The peer's EOF, for drivers that learn of it outside [`read`](Self::read).
    ///
    /// # Errors
    ///
    /// [`DriverError::Closed`], [`DriverError::DataAfterEof`] for a second EOF.
    pub fn handle_eof(&mut self) -> Result<(), DriverError> {
        self.check_open()?;
        if self.peer_eof {
            return Err(DriverError::DataAfterEof);
        }
        self.peer_eof = true;
        Ok(())
    }

    /// A fatal error the driver observed outside `Io` calls (for example `EPOLLERR`): the
    /// connection ends with `connection_lost(Some(err))`.
    ///
    /// # Errors
    ///
    /// [`DriverError::Closed`] once the socket is closed.
    pub fn handle_error(
        &mut self,
        err: ConnectionError,
        io: &mut dyn Io,
        pool: &mut SendPool,
    ) -> Result<(), DriverError> {
        self.check_open()?;
        self.fail(err, io, pool);
        Ok(())
    }

    /// The socket is writable: flush the queue through [`Io::try_send`] (vectored, until
    /// it is empty or the socket refuses), then shut down or close if that was waiting
    /// for the drain.
    ///
    /// # Errors
    ///
    /// [`DriverError::Closed`] once the socket is closed.
    pub fn on_writable(&mut self, io: &mut dyn Io, pool: &mut SendPool) -> Result<(), DriverError> {
        self.check_open()?;
        self.flush(io, pool);
        self.pump_sendfile(io, pool);
        Ok(())
    }

    /// The driver found the socket dead (or, for a transport served by another protocol,
    /// the serving side ended — also after a graceful `close()`, whose
    /// `connection_lost` waits for this): the connection ends with
    /// `connection_lost(reason)`.
    ///
    /// # Errors
    ///
    /// [`DriverError::Closed`] once the socket is closed.
    pub fn handle_closed(
        &mut self,
        reason: Option<ConnectionError>,
        io: &mut dyn Io,
        pool: &mut SendPool,
    ) -> Result<(), DriverError> {
        self.check_open()?;
        // The serving side ended: nothing more to wait for.
        self.serving = match self.serving {
            Serving::SinkClosed | Serving::Ended => Serving::Ended,
            Serving::Served | Serving::Driver => Serving::Driver,
        };
        self.lose(reason, true, io, pool);
        Ok(())
    }

    /// The protocol was replaced: the new one has seen no flow callback yet, so if the
    /// transport is paused for writing it first receives `pause_writing` (gh-109051).
    pub fn protocol_swapped(&mut self) {
        self.flow.reset_view();
    }

    /// Replaces the endpoint information (for example once a connect completes).
    pub fn set_extra(&mut self, extra: Extra) {
        self.extra = extra;
    }

    /// The read end of a write pipe closed (the driver saw it readable or hung up): with
    /// nothing queued the pipe closes quietly, otherwise the queue is dropped and
    /// `connection_lost(BrokenPipe)` follows (spec §13.68).
    ///
    /// # Errors
    ///
    /// [`DriverError::WrongKind`] unless this is a write pipe; [`DriverError::Closed`].
    pub fn handle_read_end_closed(
        &mut self,
        io: &mut dyn Io,
        pool: &mut SendPool,
    ) -> Result<(), DriverError> {
        if self.kind != StreamKind::WritePipe {
            return Err(DriverError::WrongKind { expected: "write pipe" });
        }
        self.check_open()?;
        let reason = if self.queue.is_empty() {
            None
        } else {
            Some(ConnectionError::from(io::ErrorKind::BrokenPipe))
        };
        self.lifecycle.start_closing();
        self.lose(reason, true, io, pool);
        Ok(())
    }

    /// For completion-based drivers: fills `out` with the queued bytes, in order, and
    /// returns how many entries were filled. Offers the same bytes until
    /// [`handle_sent`](Self::handle_sent) reports progress.
    #[must_use]
    pub fn poll_transmit<'a>(&'a self, out: &mut [IoSlice<'a>]) -> usize {
        if self.lifecycle.is_lost() {
            return 0;
        }
        self.queue.fill_io_slices(out)
    }

    /// For completion-based drivers: `n` bytes of what [`poll_transmit`](Self::poll_transmit)
    /// offered were sent.
    ///
    /// # Errors
    ///
    /// [`DriverError::Closed`]; [`DriverError::SentMoreThanOffered`] when `n` exceeds the
    /// queue (nothing is consumed).
    pub fn handle_sent(
        &mut self,
        n: usize,
        io: &mut dyn Io,
        pool: &mut SendPool,
    ) -> Result<(), DriverError> {
        self.check_open()?;
        if n > self.queue.len() {
            return Err(DriverError::SentMoreThanOffered { offered: self.queue.len(), sent: n });
        }
        self.queue.consume(n, pool);
        self.after_progress(io, pool);
        self.pump_sendfile(io, pool);
        Ok(())
    }

    /// Heap bytes this transport holds (queue buffers and held inbound data).
    pub fn heap_bytes(&self) -> usize {
        self.queue.heap_bytes() + self.inbound.capacity()
    }
}
