//! The pipe halves as distinct types, so that writing to a read pipe does not compile.
//!
//! Each wraps a [`StreamTransport`] of the matching [`StreamKind`] and exposes only the
//! operations asyncio's `_UnixReadPipeTransport` / `_UnixWritePipeTransport` have (spec
//! §13). The loop's typed handles ([`ReadPipeHandle`](crate::ReadPipeHandle),
//! [`WritePipeHandle`](crate::WritePipeHandle)) give the same guarantee through `Ctx`.

use std::io::IoSlice;

use bytes::Bytes;

use super::{ReadOutcome, StreamCallback, StreamKind, StreamTransport};
use crate::{
    ConnectionError, DriverError, Extra, Handle, Interest, Io, LimitsError, SendPool,
    WriteBufferLimits, WriteError,
};

/// The read end of a pipe: delivers data and EOF, cannot be written to.
///
/// EOF makes it closing at once; `eof_received` is delivered and its answer ignored, then
/// `connection_lost(None)` (spec §4.10, §13.67).
#[derive(Debug)]
pub struct ReadPipeTransport(StreamTransport);

/// The write end of a pipe: buffered writes with flow control, no reading.
///
/// `write_eof()` closes the pipe after the flush; the read end closing is reported with
/// [`handle_read_end_closed`](WritePipeTransport::handle_read_end_closed) (spec §13.68).
/// Resume happens at the low-water mark, as for sockets (asyncio waits for an empty
/// buffer; DESIGN.md §5).
#[derive(Debug)]
pub struct WritePipeTransport(StreamTransport);

macro_rules! common {
    () => {
        /// The handle this transport passes to [`Io`].
        pub fn handle(&self) -> Handle {
            self.0.handle()
        }
        /// The endpoint information the driver provided.
        pub fn extra(&self) -> &Extra {
            self.0.extra()
        }
        /// Closes the pipe (see [`StreamTransport::close`]).
        pub fn close(&mut self, io: &mut dyn Io, pool: &mut SendPool) {
            self.0.close(io, pool)
        }
        /// Closes at once, dropping anything queued (see [`StreamTransport::abort`]).
        pub fn abort(&mut self, io: &mut dyn Io, pool: &mut SendPool) {
            self.0.abort(io, pool)
        }
        /// True once closing (see [`StreamTransport::is_closing`]).
        pub fn is_closing(&self) -> bool {
            self.0.is_closing()
        }
        /// The next callback owed (see [`StreamTransport::next_callback`]).
        #[must_use]
        pub fn next_callback(&mut self) -> Option<StreamCallback> {
            self.0.next_callback()
        }
        /// What the transport wants from the readiness source.
        pub fn interest(&self) -> Interest {
            self.0.interest()
        }
        /// Ends the pipe with `err` (see [`StreamTransport::fail`]).
        pub fn fail(&mut self, err: ConnectionError, io: &mut dyn Io, pool: &mut SendPool) {
            self.0.fail(err, io, pool)
        }
        /// The shared stream machinery, read-only.
        pub fn as_stream(&self) -> &StreamTransport {
            &self.0
        }
    };
}

impl ReadPipeTransport {
    /// A read pipe named `handle`.
    pub fn new(handle: Handle, extra: Extra) -> Self {
        ReadPipeTransport(StreamTransport::with_kind(handle, StreamKind::ReadPipe, extra))
    }

    common!();

    /// See [`StreamTransport::pause_reading`].
    pub fn pause_reading(&mut self) {
        self.0.pause_reading()
    }
    /// See [`StreamTransport::resume_reading`].
    pub fn resume_reading(&mut self) {
        self.0.resume_reading()
    }
    /// See [`StreamTransport::is_reading`].
    pub fn is_reading(&self) -> bool {
        self.0.is_reading()
    }
    /// Reports the protocol's `eof_received` answer; a read pipe closes whatever it is.
    pub fn handle_eof_answer(&mut self, io: &mut dyn Io, pool: &mut SendPool) {
        self.0.handle_eof_answer(false, io, pool)
    }
    /// See [`StreamTransport::read`].
    ///
    /// # Errors
    ///
    /// As [`StreamTransport::read`].
    pub fn read(
        &mut self,
        buf: &mut [u8],
        io: &mut dyn Io,
        pool: &mut SendPool,
    ) -> Result<ReadOutcome, DriverError> {
        self.0.read(buf, io, pool)
    }
    /// See [`StreamTransport::handle_data`].
    ///
    /// # Errors
    ///
    /// As [`StreamTransport::handle_data`].
    pub fn handle_data(&mut self, data: &[u8]) -> Result<(), DriverError> {
        self.0.handle_data(data)
    }
    /// See [`StreamTransport::handle_eof`].
    ///
    /// # Errors
    ///
    /// As [`StreamTransport::handle_eof`].
    pub fn handle_eof(&mut self) -> Result<(), DriverError> {
        self.0.handle_eof()
    }
}

impl WritePipeTransport {
    /// A write pipe named `handle`.
    pub fn new(handle: Handle, extra: Extra) -> Self {
        WritePipeTransport(StreamTransport::with_kind(handle, StreamKind::WritePipe, extra))
    }

    common!();

    /// See [`StreamTransport::write`].
    ///
    /// # Errors
    ///
    /// As [`StreamTransport::write`].
    pub fn write(
        &mut self,
        data: Bytes,
        io: &mut dyn Io,
        pool: &mut SendPool,
    ) -> Result<(), WriteError> {
        self.0.write(data, io, pool)
    }
    /// See [`StreamTransport::write_slice`].
    ///
    /// # Errors
    ///
    /// As [`StreamTransport::write`].
    pub fn write_slice(
        &mut self,
        data: &[u8],
        io: &mut dyn Io,
        pool: &mut SendPool,
    ) -> Result<(), WriteError> {
        self.0.write_slice(data, io, pool)
    }
    /// Closes the pipe once the queue drains (spec §4.4: a write pipe's `write_eof` is
    /// `close`).
    pub fn write_eof(&mut self, io: &mut dyn Io, pool: &mut SendPool) {
        self.0.write_eof(io, pool)
    }
    /// Always true for a write pipe.
    pub fn can_write_eof(&self) -> bool {
        true
    }
    /// See [`StreamTransport::write_buffer_size`].
    pub fn write_buffer_size(&self) -> usize {
        self.0.write_buffer_size()
    }
    /// See [`StreamTransport::write_buffer_limits`].
    pub fn write_buffer_limits(&self) -> WriteBufferLimits {
        self.0.write_buffer_limits()
    }
    /// See [`StreamTransport::set_write_buffer_limits`].
    ///
    /// # Errors
    ///
    /// As [`StreamTransport::set_write_buffer_limits`].
    pub fn set_write_buffer_limits(
        &mut self,
        high: Option<usize>,
        low: Option<usize>,
    ) -> Result<(), LimitsError> {
        self.0.set_write_buffer_limits(high, low)
    }
    /// See [`StreamTransport::is_writing_paused`].
    pub fn is_writing_paused(&self) -> bool {
        self.0.is_writing_paused()
    }
    /// See [`StreamTransport::on_writable`].
    ///
    /// # Errors
    ///
    /// As [`StreamTransport::on_writable`].
    pub fn on_writable(&mut self, io: &mut dyn Io, pool: &mut SendPool) -> Result<(), DriverError> {
        self.0.on_writable(io, pool)
    }
    /// See [`StreamTransport::handle_read_end_closed`].
    ///
    /// # Errors
    ///
    /// As [`StreamTransport::handle_read_end_closed`].
    pub fn handle_read_end_closed(
        &mut self,
        io: &mut dyn Io,
        pool: &mut SendPool,
    ) -> Result<(), DriverError> {
        self.0.handle_read_end_closed(io, pool)
    }
    /// See [`StreamTransport::poll_transmit`].
    #[must_use]
    pub fn poll_transmit<'a>(&'a self, out: &mut [IoSlice<'a>]) -> usize {
        self.0.poll_transmit(out)
    }
    /// See [`StreamTransport::handle_sent`].
    ///
    /// # Errors
    ///
    /// As [`StreamTransport::handle_sent`].
    pub fn handle_sent(
        &mut self,
        n: usize,
        io: &mut dyn Io,
        pool: &mut SendPool,
    ) -> Result<(), DriverError> {
        self.0.handle_sent(n, io, pool)
    }
}
