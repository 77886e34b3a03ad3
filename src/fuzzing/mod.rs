//! Fuzz targets with semantic oracles (feature `fuzzing`, which enables `testing`; no
//! dependency).
//!
//! Each target is a function `fn(&[u8])` that decodes the bytes into a sequence of
//! operations, runs them against the real [`Registry`](crate::Registry) and checks an
//! oracle after every step — the reference model, the transcript grammar, byte
//! conservation, the driver contract — not only "no panic". A broken invariant panics with
//! a readable transcript; that is what libFuzzer reports. The same functions serve three
//! callers:
//!
//! * `fuzz/` (cargo-fuzz, its own workspace): each `fuzz_targets/<target>.rs` is one line,
//!   `fuzz_target!(|data: &[u8]| aioport::fuzzing::<target>(data))`. Run one with
//!   `cargo fuzz run -s none <target>` (stable works with `-s none`).
//! * `tests/corpus_replay.rs`: every committed input (`fuzz/corpus/<target>/`, and
//!   `fuzz/regressions/<target>/` for inputs that once found a bug) under plain
//!   `cargo test --all-features`, on stable.
//! * `tests/properties.rs`: the quickcheck property "implementation == model" runs
//!   [`check_against_model`], the runner behind `stream_ops`: one runner, two generators.
//!
//! # The targets
//!
//! | target | world | oracle |
//! |---|---|---|
//! | [`stream_ops`] | one stream transport over a socket that accepts a granted budget; a peer that sends, half-closes, resets | the reference model ([`StreamModel`](crate::testing::model::StreamModel)): callbacks, write results and state after every step; user-face queries through `Ctx`; quiescence; an idle transport holds no heap |
//! | [`buffered_stream_ops`] | the same with a `BufferedProtocol` whose `get_buffer` returns small, varying buffers, and swaps between plain and buffered protocols | the model, data compared by total length per step and by content (a byte pattern) |
//! | [`registry_ops`] | several transports (sockets, pipes, connecting, served) in one registry; protocols that write / close / abort / pause / resume / swap protocols on *other* handles from inside their callbacks, closures, timers; stale handles; driver misuse; a lying `Io` | the transcript grammar, no nesting, `Io::close` once, stale ⇔ removed, typed errors, `DriverError` for misuse with no effect, `poll_io` / `poll_timeout` contracts (see [`registry_ops`]) |
//! | [`limits`] | [`WriteBufferLimits`](crate::WriteBufferLimits) and [`FlowControl`](crate::FlowControl): limits, sizes at the marks, external pending bytes up to `usize::MAX`, hard limits, swaps, freezing | a tiny model written differently (the history of states since the view changed) |
//! | [`pair`] | two protocols streaming to each other over [`Sim`](crate::testing::Sim) links with decoded faults (partial sends and reads, refusals, latency, small buffers, stalls) and a decoded schedule (abort, close, reset, early `write_eof`, read pauses, limit changes) | the harness's invariant checker after every step; bytes delivered == bytes written (a prefix after a fault); one `connection_lost` each |
//! | `tls_pair` (feature `tls`) | `pair` with a TLS client and server engine under the two sides (TLS 1.3 or 1.2 by the input; a fixed Ed25519 certificate checked in virtual time); the schedule acts on the app transports, resets and stalls on the raw ones | the harness's checker after every step; without a fault both handshakes complete and every byte arrives; with one, a prefix; one `connection_lost` per app transport that was made; no transport left |
//! | `start_tls_pair` (feature `tls`) | a plaintext prelude each way (own patterns, honouring `pause_writing`, the rest queued at the switch), then `Ctx::start_tls` on the same connection — client first, server first or both at once, with the bytes read past the prelude handed over — and `tls_pair`'s streams over TLS; the schedule acts on the app transport, or on the raw one before the switch | the harness's checker after every step; every prelude byte read once, in order, as plaintext; the plaintext protocol hears nothing after its switch and alternates pause/resume; without a fault both sides switch, both handshakes complete and every app byte arrives; with one, a prefix; unless user code ended a transport, a side that switched has its app transport or a typed `TlsError`; one `connection_lost` per app and per raw transport; no transport left |
//! | [`datagram_ops`] | one datagram endpoint (connected or not) over a socket that accepts a granted number of datagrams, fails a send on demand, and holds the peer's datagrams, receive errors and oversized datagrams; completion-style delivery and `EPOLLERR` | the datagram reference model ([`DatagramModel`](crate::testing::model::DatagramModel)): callbacks, `sendto` results, state, user-face queries and the datagrams the socket took (whole, in order, to the right address) after every step; quiescence; every accepted datagram transmitted, reported, dropped by `abort` or queued — exactly once |
//! | [`subprocess_ops`] | one child whose stdin, stdout and stderr are piped as the header says, over a scripted child: stdin accepts a granted budget, then `WouldBlock`, or `BrokenPipe` once the child closed its end; stdout and stderr hold what the child wrote and its EOF; the spawn and the exit (a code or a signal, before or after the pipes' EOF) reported when told | the subprocess reference model ([`SubprocessModel`](crate::testing::model::SubprocessModel)): callbacks per channel (process, each fd) and how the channels relate, write and signal results, the signals that reached the driver (never one after the exit was reported), the return code, pid and pipe getters, state, interest, `Io::close` per pipe, every byte checked where it arrives |
//!
//! Datagram endpoints and subprocesses are not yet kinds of `registry_ops`' world: adding them means
//! growing its `Kind` (`registry/world.rs`) and new opcodes (`since: 2`, with
//! [`FORMAT_VERSION`] bumped to 2) for their calls — so today's corpus keeps its meaning.
//!
//! # The input format
//!
//! The first byte is the **format version** ([`FORMAT_VERSION`], now 1); an input with
//! version 0 or a newer version than this build knows is ignored. Then come operations,
//! each an opcode byte and an operand whose length the opcode's two high bits give:
//! `00` none, `01` one byte, `10` two bytes (little-endian where they form a number),
//! `11` a length byte `L` then `L` bytes. A decoder therefore steps over an opcode it does
//! not know — operand and all — and stays in step. Every table entry records the version
//! that introduced it, and an opcode newer than the input's version byte is skipped as
//! unknown, so a saved corpus file means the same thing forever: add an opcode by bumping
//! [`FORMAT_VERSION`] and giving the new entry `since: FORMAT_VERSION`; never renumber
//! or reinterpret an existing one. (`derive(Arbitrary)` on a growing enum would silently
//! reinterpret the saved corpus whenever a variant is added.)
//!
//! Operand encodings shared by the tables: *size* (2 bytes; the two high bits pick
//! `0..8`, `0..300`, `0..5000` or `60_000..~390_000`, so sizes land on small limits and
//! cross the default 64 KiB), *limit* (2 bytes; `None`, `0..16`, `0..16384` or
//! `0..131072`), *small size* (1 byte; `0..64`, then steps of 64 B, 1 KiB, 16 KiB),
//! *ms* (1 byte; `0..64` ms, then steps of 10 ms, 100 ms, 1 s), *t* (1 byte; a target
//! selector: an index into every handle the run has seen, stale ones included; `0xFF` a
//! handle that never existed), *s* (1 byte; bit 0 picks a side of the pair).
//!
//! ## `stream_ops` and `buffered_stream_ops` ([`STREAM_OPS`])
//!
//! | code | name | operand | operation |
//! |---|---|---|---|
//! | `0x00` | write_eof | | `Ctx::write_eof` |
//! | `0x01` | close | | `Ctx::close` |
//! | `0x02` | abort | | `Ctx::abort` |
//! | `0x03` | pause_reading | | `Ctx::pause_reading` |
//! | `0x04` | resume_reading | | `Ctx::resume_reading` |
//! | `0x05` | set_protocol | | `Ctx::set_protocol`, a fresh recorder of the run's kind |
//! | `0x06` | writable | | `Registry::on_writable` when write interest |
//! | `0x07` | writable_completion | | `poll_transmit` + `handle_sent` until drained or out of budget; `handle_error` on reset |
//! | `0x08` | readable | | `Registry::on_readable` (a buffered run: until one model read arrived) |
//! | `0x09` | readable_completion | | `handle_received` (data, or empty for EOF); `handle_error` on reset |
//! | `0x0A` | peer_eof | | the peer half-closes |
//! | `0x0B` | peer_reset | | the peer resets |
//! | `0x0C` | keep_open | | the next `eof_received` answers true |
//! | `0x0D` | close_on_eof | | … answers false |
//! | `0x0E` | set_protocol_plain | | buffered run: swap to a plain protocol (else as `0x05`) |
//! | `0x0F` | set_protocol_buffered | | buffered run: swap to a buffered protocol (else as `0x05`) |
//! | `0x80` | write | size | `Ctx::write_slice` |
//! | `0x81` | write_bytes | size | `Ctx::write` (zero-copy `Bytes`) |
//! | `0x82` | writelines | size | `Ctx::writelines`, in chunks with an empty one |
//! | `0x83` | grant | size | the socket accepts that many more bytes |
//! | `0x84` | peer_send | size | the peer sends (a buffered run: at most 4096) |
//! | `0xC0` | set_write_buffer_limits | limit, limit | `Ctx::set_write_buffer_limits(high, low)` |
//! | `0xC1` | buffer_sizes | `L` bytes | buffered run: the sizes `get_buffer` returns in turn (`1..=64`, steps of 64 B / 1 KiB, or 256 KiB) |
//!
//! ## `datagram_ops` ([`DATAGRAM_OPS`])
//!
//! After the version byte, one header byte: bit 0 makes the endpoint connected (to
//! `127.0.0.1:9`; the "other" address is port 10). Then:
//!
//! | code | name | operand | operation |
//! |---|---|---|---|
//! | `0x00` | close | | `Ctx::close` |
//! | `0x01` | abort | | `Ctx::abort` |
//! | `0x02` | pause_reading | | `Ctx::pause_reading` |
//! | `0x03` | resume_reading | | `Ctx::resume_reading` |
//! | `0x04` | set_protocol | | `Ctx::set_datagram_protocol`, a fresh recorder |
//! | `0x05` | writable | | `Registry::on_writable` (with or without write interest) |
//! | `0x06` | readable | | `Registry::on_readable` (one `Io::try_recv_from`) |
//! | `0x07` | fail_next_send | | the socket's next send fails with `ConnectionRefused` |
//! | `0x08` | peer_error | | the socket's next receive fails with `ConnectionRefused` |
//! | `0x09` | peer_oversized | | the next receive is truncated |
//! | `0x0A` | driver_error | | `Registry::handle_error` (`EPOLLERR`): `error_received` |
//! | `0x0B` | no_hard_limit | | `Ctx::set_write_buffer_hard_limit(None)` |
//! | `0x40` | grant | n | the socket accepts `n % 16` more datagrams |
//! | `0x80` | sendto_none | size | `Ctx::sendto(data, None)` |
//! | `0x81` | sendto_remote | size | `Ctx::sendto(data, Some(peer))` |
//! | `0x82` | sendto_other | size | `Ctx::sendto(data, Some(other))` |
//! | `0x83` | peer_send | size | a datagram from the peer reaches the socket |
//! | `0x84` | received | size | `Registry::handle_datagram` (completion-based delivery) |
//! | `0x85` | hard_limit | size | `Ctx::set_write_buffer_hard_limit(Some(size))` |
//! | `0xC0` | set_write_buffer_limits | limit, limit | `Ctx::set_write_buffer_limits(high, low)` |
//!
//! ## `subprocess_ops` ([`SUBPROCESS_OPS`])
//!
//! After the version byte, one header byte: bits 0, 1 and 2 pipe stdin, stdout and
//! stderr. The child starts unspawned; before `spawned` the user holds the process
//! handle only (close, abort, signals and a protocol swap reach it; pipe calls are not
//! made). Then:
//!
//! | code | name | operand | operation |
//! |---|---|---|---|
//! | `0x00` | spawned | | `Registry::handle_spawned` (again: `DriverError`, no effect) |
//! | `0x01` | write_eof | | `Ctx::write_eof` on stdin (closes it) |
//! | `0x02` | close | | `Ctx::close` on the process |
//! | `0x03` | kill | | `Ctx::kill` |
//! | `0x04` | terminate | | `Ctx::terminate` |
//! | `0x05` | writable | | `Registry::on_writable` on stdin (with or without write interest) |
//! | `0x06` | stdin_broken | | the child closes its end of stdin: sends fail with `BrokenPipe` |
//! | `0x07` | stdin_readable | | `Registry::on_readable` on stdin, once the child closed its end |
//! | `0x08` | abort | | `Ctx::abort` on the process |
//! | `0x09` | set_protocol | | `Ctx::set_subprocess_protocol`, a fresh recorder |
//! | `0x40` | exit_code | n | `Registry::handle_exited(Exited(n))` |
//! | `0x41` | exit_signal | n | `Registry::handle_exited(Signaled(1 + n % 31))` |
//! | `0x42` | send_signal | n | `Ctx::send_signal(n % 32)` |
//! | `0x43` | close_pipe | n | `Ctx::close` on the pipe for fd `n % 3` |
//! | `0x44` | pause_reading | n | `Ctx::pause_reading` on fd `1 + n % 2` |
//! | `0x45` | resume_reading | n | `Ctx::resume_reading` on fd `1 + n % 2` |
//! | `0x46` | child_eof | n | the child closes fd `1 + n % 2` |
//! | `0x47` | readable | n | `Registry::on_readable` on fd `1 + n % 2` (one `Io::try_recv`; before the spawn too) |
//! | `0x80` | write | size | `Ctx::write_slice` on stdin |
//! | `0x81` | grant | size | stdin accepts that many more bytes |
//! | `0x82` | child_write_stdout | size | the child writes to stdout |
//! | `0x83` | child_write_stderr | size | the child writes to stderr |
//! | `0xC0` | set_write_buffer_limits | limit, limit | `Ctx::set_write_buffer_limits` on stdin |
//!
//! ## `registry_ops` ([`REGISTRY_OPS`])
//!
//! Driver operations act at once. *Actions* run as user code (`Registry::enter`) unless
//! prefixed: `inside t` mails the next action to `t`'s protocol, which performs it in its
//! next callback; `soon`, `later ms` and `at ms` wrap the next action in a `call_soon` /
//! `call_later` / `call_at` closure (prefixes nest).
//!
//! | code | name | operand | operation |
//! |---|---|---|---|
//! | `0x00` | dispatch | | `Registry::dispatch` |
//! | `0x01` | registry_connect | | `Registry::connect` (a transport waits for the outcome) |
//! | `0x02` | connect_succeeded | | the oldest waiting connect: `handle_connected` |
//! | `0x03` | connect_failed | | … `handle_connect_failed` |
//! | `0x04` | soon | | prefix: `Ctx::call_soon` |
//! | `0x05` | panic | | action: the protocol (or closure) panics |
//! | `0x06` | fail | | action: the callback returns `Err` |
//! | `0x07` | connect | | action: `Ctx::connect` |
//! | `0x08` | insert_served | | action: `Ctx::insert_served_stream` |
//! | `0x09` | cancel | | action: `Ctx::cancel` of the latest closure timer |
//! | `0x0A` | keep_open | | action: the protocol's `eof_received` answers true |
//! | `0x0B` | close_on_eof | | … answers false |
//! | `0x40` | insert | kind | `insert_stream` / `insert_read_pipe` / `insert_write_pipe` (kind % 3; bit 2: buffered) |
//! | `0x41` | inside | t | prefix: mail the next action to `t`'s protocol |
//! | `0x42` | readable | t | `Registry::on_readable` |
//! | `0x43` | writable | t | `Registry::on_writable` |
//! | `0x44` | handle_error | t | `Registry::handle_error` |
//! | `0x45` | peer_eof | t | the peer half-closes |
//! | `0x46` | peer_reset | t | the peer resets |
//! | `0x47` | lie_send | t | the next `Io::try_send` claims one byte more than offered |
//! | `0x48` | lie_recv | t | the next `Io::try_recv` claims one byte more than its buffer |
//! | `0x49` | received_eof | t | `Registry::handle_received(&[])` |
//! | `0x4A` | connected_misuse | t | `handle_connected` for a transport not connecting |
//! | `0x4B` | probe | t | every driver-face query, and the user-face queries through `enter` |
//! | `0x4C` | advance | ms | `Registry::handle_timeout(now + ms)` |
//! | `0x4D` | later | ms | prefix: `Ctx::call_later` |
//! | `0x4E` | at | ms | prefix: `Ctx::call_at(now + ms)` |
//! | `0x4F` | arm_timer | ms | action: the protocol's `poll_timeout` becomes `now + ms` |
//! | `0x50` | write_eof | t | action: `Ctx::write_eof` |
//! | `0x51` | close | t | action: `Ctx::close` |
//! | `0x52` | abort | t | action: `Ctx::abort` |
//! | `0x53` | pause_reading | t | action: `Ctx::pause_reading` |
//! | `0x54` | resume_reading | t | action: `Ctx::resume_reading` |
//! | `0x55` | set_protocol | t | action: `Ctx::set_protocol`, a plain protocol |
//! | `0x56` | set_protocol_buffered | t | action: … a buffered protocol |
//! | `0x57` | query | t | action: every user-face query (`extra`, `is_closing`, `is_reading`, `write_buffer_size`, `write_buffer_limits`, `is_writing_paused`, `can_write_eof`) |
//! | `0x58` | wrong_kind | t | action: a call with the typed handle of the wrong kind |
//! | `0x59` | feed_eof | t | action: `Ctx::feed_eof` |
//! | `0x5A` | served_writable | t | action: `Ctx::served_writable` |
//! | `0x5B` | served_closed | t | action: `Ctx::served_closed` |
//! | `0x5C` | buffer_mode | b | action: the protocol's `get_buffer`: plain (0), empty (0xFF), or `b` bytes |
//! | `0x80` | write | t, small size | action: `Ctx::write_slice` |
//! | `0x81` | write_bytes | t, small size | action: `Ctx::write` |
//! | `0x82` | writelines | t, small size | action: `Ctx::writelines` |
//! | `0x83` | grant | t, small size | the socket accepts that many more bytes |
//! | `0x84` | peer_send | t, small size | the peer sends |
//! | `0x85` | received | t, small size | `Registry::handle_received` (at least 1 byte) |
//! | `0x86` | transmit | t, b | `poll_transmit` + `handle_sent(min(small size, offered))`; with bit 7, `handle_sent` of more than the queue |
//! | `0x87` | feed_data | t, small size | action: `Ctx::feed_data` |
//! | `0x88` | set_served_pending | t, small size | action: `Ctx::set_served_pending` |
//! | `0x89` | hard_limit | t, small size | action: `Ctx::set_write_buffer_hard_limit` (0: none) |
//! | `0xC0` | set_write_buffer_limits | t, limit, limit | action: `Ctx::set_write_buffer_limits` |
//!
//! ## `limits` ([`LIMITS_OPS`])
//!
//! | code | name | operand | operation |
//! |---|---|---|---|
//! | `0x00` | poll_edge | | `FlowControl::poll_edge`, compared with the model's |
//! | `0x01` | reset_view | | `FlowControl::reset_view` (a protocol swap) |
//! | `0x02` | freeze | | `FlowControl::freeze` (the connection is gone) |
//! | `0x03` | no_hard_limit | | `set_hard_limit(None)` |
//! | `0x80` | check | size | the queue now holds that many bytes: `FlowControl::check` |
//! | `0x81` | set_external_pending | size | `FlowControl::set_external_pending` |
//! | `0x82` | set_hard_limit | size | `FlowControl::set_hard_limit(Some(size))` |
//! | `0x83` | admit | size | `FlowControl::admit(len)` (`0xFFFF`: `usize::MAX`) |
//! | `0x84` | set_external_pending_huge | size | … `usize::MAX - size` (saturation) |
//! | `0xC0` | set_limits | limit, limit | `WriteBufferLimits::new(high, low)`, then `FlowControl::set_limits` |
//!
//! ## `pair` ([`PAIR_OPS`]) and `drive_peer` ([`PEER_OPS`])
//!
//! Both start with the 8-byte link header of [`sim_config`] after the version byte;
//! `pair` then reads two 2-byte transfer sizes (mostly small, a quarter of them 60–70 KB)
//! and a byte for the size of its writes (`16 + b * 64`).
//!
//! | code | name | operand | `pair` operation |
//! |---|---|---|---|
//! | `0x00` | step | | one harness step |
//! | `0x01` | run_until_idle | | run until idle (livelock-checked) |
//! | `0x40` | steps | n | up to `n` steps |
//! | `0x41` | advance | ms | virtual time passes |
//! | `0x42` | abort | s | `Ctx::abort` |
//! | `0x43` | close | s | `Ctx::close` |
//! | `0x44` | reset | s | the link is reset |
//! | `0x45` | pause_reading | s | `Ctx::pause_reading` (undone at the end) |
//! | `0x46` | resume_reading | s | `Ctx::resume_reading` |
//! | `0x47` | write_eof | s | `Ctx::write_eof` before the side is done writing |
//! | `0x80` | stall | s, ms | the side stops reading its socket for a while |
//! | `0x81` | set_write_buffer_limits | s, b | `high = b * 64` |
//!
//! | code | name | operand | `drive_peer` operation |
//! |---|---|---|---|
//! | `0x00` | peer_eof | | the peer half-closes |
//! | `0x01` | peer_pause_reading | | the peer stops reading |
//! | `0x02` | peer_resume_reading | | … reads again |
//! | `0x03` | reset | | the link is reset |
//! | `0x04` | run_until_idle | | run until idle |
//! | `0x40` | steps | n | up to `n` steps |
//! | `0x41` | advance | ms | virtual time passes |
//! | `0x42` | stall | ms | the protocol's transport stops reading for a while |
//! | `0xC0` | peer_send | `L` bytes | the peer sends these bytes |
//!
//! # What reaches what
//!
//! Every public method of the user face and the driver face, and every `Io` answer, is
//! reached by at least one target:
//!
//! | API | targets |
//! |---|---|
//! | `Ctx::write_slice`, `write`, `writelines`, `write_eof`, `close`, `abort`, `pause_reading`, `resume_reading`, `set_write_buffer_limits`, `set_protocol` | `stream_ops`, `buffered_stream_ops`, `registry_ops` (also on stale, wrong-kind and connecting handles), `pair` |
//! | `Ctx::can_write_eof`, `write_buffer_size`, `write_buffer_limits`, `is_writing_paused`, `is_reading`, `is_closing`, `extra` | `stream_ops` (after every step), `registry_ops` (`query`, `wrong_kind`, `probe`) |
//! | `Ctx::set_write_buffer_hard_limit` | `registry_ops` (`hard_limit`); the rule itself in `limits` (`admit`) |
//! | `Ctx::call_soon`, `call_later`, `call_at`, `cancel`, `connect`, `insert_served_stream`, `feed_data`, `feed_eof`, `served_writable`, `set_served_pending`, `served_closed` | `registry_ops` |
//! | `Ctx::now`, `handle`, `stream`, `read_pipe`, `write_pipe` | `registry_ops` (every callback), `pair` |
//! | `Registry::new`, `insert_stream`, `enter`, `dispatch`, `on_readable`, `on_writable`, `handle_error`, `handle_received`, `poll_transmit`, `handle_sent`, `transport`, `interest` | `stream_ops`, `buffered_stream_ops`, `registry_ops` |
//! | `Registry::insert_read_pipe`, `insert_write_pipe`, `connect`, `handle_connected`, `handle_connect_failed`, `poll_io`, `poll_request`, `poll_error`, `errors_dropped`, `poll_timeout`, `handle_timeout`, `set_tracer`, `pending_soon`, `timer_entries`, `len`, `is_empty` | `registry_ops`; `pair` through [`Sim`](crate::testing::Sim) |
//! | `StreamTransport`'s user face (`write`, `write_slice`, `writelines`, `write_eof`, `can_write_eof`, `close`, `abort`, `is_closing`, `pause_reading`, `resume_reading`, `is_reading`, `set_write_buffer_limits`, `set_write_buffer_hard_limit`, `write_buffer_size`, `write_buffer_limits`, `is_writing_paused`, `set_external_pending`, `extra`) | through the `Ctx` call that wraps each (`set_external_pending`: `set_served_pending`) |
//! | `StreamTransport`'s driver face (`read`, `handle_data`, `handle_eof`, `handle_error`, `on_writable`, `handle_closed`, `handle_read_end_closed`, `poll_transmit`, `handle_sent`, `next_callback`, `handle_eof_answer`, `fail`, `protocol_swapped`, `set_extra`) and queries (`handle`, `kind`, `interest`, `has_callback`, `is_finished`, `is_socket_closed`, `heap_bytes`) | through the registry calls that wrap them (`readable`, `received`, `feed_data` / `feed_eof`, `handle_error`, `writable` / `served_writable`, `served_closed`, `readable` on a write pipe, `transmit`, every dispatch, `keep_open`, fatal errors, `set_protocol`, `connect_succeeded`); queries in `stream_ops` and `probe` |
//! | `WriteBufferLimits::new`, `high`, `low`; `FlowControl`'s whole API | `limits` |
//! | `Io::try_send`: accepts all / some / none (`WouldBlock`), `ConnectionReset`, `BrokenPipe` (peer gone), more than offered | `stream_ops`, `registry_ops` (`lie_send`), `pair` |
//! | `Io::try_recv`: data, `WouldBlock`, EOF, `ConnectionReset`, more than the buffer | `stream_ops`, `registry_ops` (`lie_recv`), `pair` |
//! | `Io::shutdown_write`, `Io::close` | every target (counted: at most once / exactly once) |
//! | `Ctx::sendto`, `set_datagram_protocol`, `datagram`; the flow and reading calls on a `DatagramHandle`; `Registry::insert_datagram`, `handle_datagram`, `datagram`, and `on_readable` / `on_writable` / `handle_error` on an endpoint | `datagram_ops` |
//! | `Io::try_send_to`: sent, `WouldBlock`, `ConnectionRefused`; `Io::try_recv_from`: a datagram, `WouldBlock`, `ConnectionRefused`, truncated | `datagram_ops` |
//! | `Ctx::kill`, `terminate`, `send_signal`, `pid`, `returncode`, `stdin`, `stdout`, `stderr`, `subprocess`, `set_subprocess_protocol`; `close`, `abort`, `is_closing` on a `SubprocessHandle`; the stream calls on its pipes; `Registry::insert_subprocess`, `handle_spawned`, `handle_exited`, `subprocess`, and `on_readable` / `on_writable` on its pipes (held before the spawn, stdin's read end closing) | `subprocess_ops` |
//! | `Io::send_signal`; `Io::try_send` on stdin: some, none, `BrokenPipe`; `Io::try_recv` on stdout / stderr: data, `WouldBlock`, EOF | `subprocess_ops` |
//!
//! Not reached: `Registry::handle_spawn_failed` (tested in `src/subprocess/tests.rs`), the standalone pipe wrappers `ReadPipeTransport` / `WritePipeTransport`
//! (the registry drives pipes as `StreamTransport`s of those kinds), and `Io` answering
//! `Interrupted` (treated as `WouldBlock`).
//!
//! # Fuzzing your own protocol
//!
//! [`drive_peer`] runs **your** [`Protocol`](crate::Protocol) over a faulty in-memory link
//! against a peer the fuzzer scripts — the bytes it sends reach your parser, with EOF,
//! read pauses, resets, stalls and time jumps in between — checks the loop's invariants
//! after every step, runs to idle, and hands back the run for your own assertions:
//!
//! ```
//! use aioport::{CallbackResult, Ctx, Protocol};
//! use aioport::fuzzing::drive_peer;
//!
//! /// Your protocol: answers each line in upper case.
//! #[derive(Default)]
//! struct Upper { line: Vec<u8> }
//!
//! impl Protocol for Upper {
//!     fn data_received(&mut self, ctx: &mut Ctx<'_>, data: &[u8]) -> CallbackResult {
//!         for &b in data {
//!             self.line.push(b.to_ascii_uppercase());
//!             if b == b'\n' {
//!                 ctx.write(ctx.stream(), std::mem::take(&mut self.line))?;
//!             }
//!         }
//!         Ok(())
//!     }
//! }
//!
//! /// The body of your fuzz target: `fuzz_target!(|data: &[u8]| check(data));`
//! fn check(data: &[u8]) {
//!     let Some(run) = drive_peer(data, Upper::default()) else { return };
//!     let lines = run.sent.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
//!     let replies = run.sim.peer_received(run.peer);
//!     // Your property: the replies are the upper-cased complete lines, in order…
//!     assert!(run.sent[..lines].to_ascii_uppercase().starts_with(replies));
//!     // …all of them, unless the connection was reset.
//!     if !run.reset {
//!         assert_eq!(replies.len(), lines);
//!     }
//! }
//!
//! // One input by hand: version 1; the link (seed 7, sends of up to 64 bytes, reads of
//! // up to 32, 1 KiB of socket buffer, 5 ms latency, 10% of sends refused); then the
//! // peer sends "hello\nwo", the harness takes 3 steps, the peer sends "rld\n", EOF.
//! let mut input = vec![1, 7, 0, 1, 2, 15, 5, 10, 0];
//! input.extend([0xC0, 8]);
//! input.extend(b"hello\nwo");
//! input.extend([0x40, 3, 0xC0, 4]);
//! input.extend(b"rld\n");
//! input.push(0x00);
//! check(&input);
//!
//! // The fuzzer's inputs are anything at all; most decode to something runnable.
//! for seed in 0..64u8 {
//!     let junk: Vec<u8> = (0..40u8).map(|i| seed.wrapping_mul(31).wrapping_add(i.wrapping_mul(7))).collect();
//!     check(&[&[1u8][..], &junk].concat());
//! }
//! ```
//!
//! As a cargo-fuzz target (`fuzz/fuzz_targets/user_protocol.rs` is a complete one, with a
//! line protocol that also pauses reading under back-pressure and closes when idle):
//!
//! ```text
//! # fuzz/Cargo.toml
//! [dependencies]
//! libfuzzer-sys = "0.4"
//! aioport = { version = "…", features = ["fuzzing"] }
//!
//! // fuzz/fuzz_targets/my_protocol.rs
//! #![no_main]
//! libfuzzer_sys::fuzz_target!(|data: &[u8]| check(data));
//! ```
//!
//! `cargo fuzz run -s none my_protocol`, then keep the minimised corpus
//! (`cargo fuzz cmin -s none my_protocol`) and replay it in a plain `#[test]`, as
//! `tests/corpus_replay.rs` does here. For a protocol talking to another of yours, build
//! the pair yourself on [`Sim`](crate::testing::Sim) with a [`SimConfig`](crate::testing::SimConfig)
//! from [`sim_config`], as [`pair`] does.

mod datagram;
mod decode;
mod limits;
mod pair;
mod registry;
#[cfg(feature = "tls")]
mod start_tls_pair;
mod stream;
mod subprocess;
#[cfg(test)]
mod tests;
#[cfg(feature = "tls")]
mod tls_pair;

use std::sync::{Once, OnceLock};
use std::time::Instant;

pub use datagram::{DATAGRAM_OPS, check_datagram_against_model, datagram_ops, describe_datagram};
pub use decode::{FORMAT_VERSION, Input, Op, OpSpec};
pub use limits::{LIMITS_OPS, limits};
pub use pair::{PAIR_OPS, PEER_OPS, PeerRun, drive_peer, pair, sim_config};
pub use registry::{REGISTRY_OPS, describe_registry, registry_ops};
#[cfg(feature = "tls")]
pub use start_tls_pair::start_tls_pair;
pub use stream::{
    STREAM_OPS, StreamStep, Via, buffered_stream_ops, check_against_model, describe_stream,
    stream_ops,
};
pub use subprocess::{
    SUBPROCESS_OPS, check_subprocess_against_model, describe_subprocess, subprocess_ops,
};
#[cfg(feature = "tls")]
pub use tls_pair::tls_pair;

/// The base of virtual time: the one clock read of the fuzzing module (the core never
/// reads a clock; fuzz runs only compare instants derived from this one).
#[allow(clippy::disallowed_methods)]
pub(crate) fn base_instant() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

/// Keeps the panic hook quiet for the deliberate panics `registry_ops` makes protocols
/// throw (the loop catches them); every other panic goes to the previous hook — under
/// libFuzzer, the one that aborts and saves the input.
pub(crate) fn quiet_deliberate_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if info.payload().downcast_ref::<&str>() != Some(&registry::DELIBERATE_PANIC) {
                previous(info);
            }
        }));
    });
}
