#!/usr/bin/env python3
"""Differential scripts: CPython's real selector socket transport, recorded step by step.

Runs CPython's own ``asyncio.selector_events._SelectorSocketTransport`` (asserted below:
the class is taken from the stdlib module, never re-implemented) over a mock socket and a
fake event loop, through *scripts* of steps, and records after every step what the
protocol heard and what the transport looks like. The records are committed as JSON
under ``tests/asyncio_diff/``; ``tests/asyncio_diff.rs`` replays every script on
``aioport::testing::Scripted`` and compares step by step.

Usage (Python 3.13 only; on these machines ``PYENV_VERSION=3.13.0 python3``)::

    PYENV_VERSION=3.13.0 python3 tools/asyncio_diff.py            # (re)write the JSON files
    PYENV_VERSION=3.13.0 python3 tools/asyncio_diff.py --check    # exit 1 on drift

``--check`` regenerates in memory and compares with the committed files (every line but
the ``python`` header, so a different 3.13.x patch release still compares); it refuses
(exit 2) under another minor version. The Rust test ``cpython_drift`` runs it when
Python 3.13 is available and prints ``SKIPPED (reason)`` otherwise.

The harness
-----------

* **Fake loop.** ``call_soon`` appends to a FIFO that is drained after every step (a
  real loop would run it on its next iteration, before any more I/O: the same
  observable order). ``_add_reader`` / ``_remove_reader`` / ``_add_writer`` /
  ``_remove_writer`` are recorded, so "the transport wants to read / write" is exactly
  "a reader / writer is registered". Exceptions escaping a callback are caught and
  counted, as ``Handle._run`` does.
* **Mock socket.** Each step says how the socket behaves *during that step* (``sock``;
  every call of a ``seq`` step shares it): ``"all"`` (every send is taken whole),
  ``{"take": n}`` (the first send call of the step takes at most ``n`` bytes, any later
  call raises ``BlockingIOError``), ``"eagain"`` (every send raises ``BlockingIOError``)
  or ``{"error": "BrokenPipeError"}`` (every send raises that error). ``send`` and
  ``sendmsg`` share the rule; the bytes taken are appended to ``sent``. A ``readable``
  step whose reader is registered queues what the peer sent (data, EOF or an error;
  ``"eagain"`` queues nothing) and runs the reader: ``recv`` / ``recv_into`` take one
  queued item, leaving what a small buffer cannot hold for the next read, and return
  ``b""`` for ever after the EOF, as a real socket does. ``shutdown`` and ``close`` are
  counted.
* **Recording protocol.** A ``Protocol``, or (``protocol.buffer``: the size of what its
  ``get_buffer`` returns, 0 for an empty buffer) a ``BufferedProtocol`` read through
  ``recv_into``. It logs ``connection_made``, ``data_received(text)`` (a
  ``buffer_updated`` logs the bytes it got the same way), ``eof_received``,
  ``pause_writing``, ``resume_writing`` and ``connection_lost(exc type name or None)``.
  ``eof_received`` returns the ``keep_open`` of the step that delivered the EOF. Two
  optional reactions (per script): ``echo`` (data received is written back, so writes
  happen inside a callback) and ``flow_reading`` (``pause_writing`` calls
  ``pause_reading``, ``resume_writing`` calls ``resume_reading``: the relay pattern).

The code path
-------------

CPython 3.13.0 flushes with ``_write_sendmsg`` when ``socket.sendmsg`` exists (Linux,
macOS) and with ``_write_send`` otherwise. We run the **sendmsg path**, deliberately: it
is the default on every platform aioport targets, and the ``_write_send`` path loses the
head chunk when ``send`` raises ``BlockingIOError`` (gh-146507, fixed in CPython main),
which would only make the comparison record a known CPython bug. The mock socket's
``sendmsg`` sees up to ``SC_IOV_MAX`` buffers per call, like the real one; scripts keep
far fewer chunks buffered than that (and than aioport's 64-slice flush batch), so one
flush is one send call on both sides.

Other CPython 3.13.0 quirks the scripts meet on purpose (``tests/asyncio_diff.rs`` names
each one in its table of differences, with the DESIGN.md row it comes from): writes after
``close()`` are dropped or accepted depending on whether the buffer was empty
(gh-115514), ``writelines`` after ``close()`` raises ``TypeError`` after extending the
buffer, ``writelines`` never pauses (gh-127655) and keeps an empty chunk stuck at the
head (gh-155888), ``set_write_buffer_limits`` only re-checks the pause edge, and
``is_reading()`` stays true after a keep-open EOF (after which ``resume_reading`` even
re-registers the reader).

Scripts
-------

* ``tests/asyncio_diff/hand.json``: hand-written scripts, at least one per rule of spec
  §2–§9 that a socket transport exercises (see ``HAND`` below).
* ``tests/asyncio_diff/seeded.json``: ``SEEDED_COUNT`` scripts from seeds ``1..=N``,
  made by ``generate(seed)``: a splitmix64 stream (not ``random``, so the scripts do not
  depend on the Python version's ``random`` algorithms) picks the protocol (reactions; a
  buffered protocol one time in four), sometimes a call before ``connection_made``, and
  8–28 steps from a weighted table (``OP_WEIGHTS``), with sizes, limits and socket
  behaviours. It watches the live transport only to steer (see ``generate``).

Record format
-------------

A file is ``{"python": sys.version, "python_minor": "3.13", "path": "sendmsg",
"generator": ..., "scripts": [...]}``. A script is ``{"name", "seed"?, "protocol":
{"echo", "flow_reading", "buffer"}, "steps": [...]}``. Step 0 is ``{"op": {"op":
"init", "pre": [calls made before connection_made runs], "sock": ...}}``. Every step
has ``op`` (with its ``sock``), ``res`` (``"ok"`` or the exception type name of a user
call; a list for ``seq`` and ``init``; ``null`` for readiness), ``ran`` (``readable`` /
``writable`` only: a reader / writer was registered, so its callback ran) and the state
after it: ``cb`` (callbacks), ``size`` (``get_write_buffer_size()``), ``closing``,
``reading`` (``is_reading()``), ``reader``, ``writer``, ``sent`` (bytes the socket took
so far), ``crc`` (CRC-32 of those bytes), ``shut`` (``shutdown`` called), ``closed``
(``sock.close`` called), ``chunks`` / ``empty`` (buffer entries, zero-length ones),
``paused`` (``_protocol_paused``).

Write payloads are described, not stored: ``{"len": n, "fill": f}`` is the bytes
``(f + i) % 256`` for ``i`` in ``0..n``.
"""

import argparse
import collections
import json
import os
import socket
import sys
import zlib

import asyncio
from asyncio import protocols, selector_events

TRANSPORT = selector_events._SelectorSocketTransport
assert TRANSPORT.__module__ == "asyncio.selector_events", TRANSPORT.__module__
assert TRANSPORT.__qualname__ == "_SelectorSocketTransport", TRANSPORT.__qualname__
assert selector_events.__file__ == asyncio.selector_events.__file__

SEEDED_COUNT = 240
HERE = os.path.dirname(os.path.abspath(__file__))
OUT_DIR = os.path.join(HERE, "..", "tests", "asyncio_diff")
FD = 7


def payload(spec):
    n, f = spec["len"], spec["fill"]
    return bytes((f + i) % 256 for i in range(n))


# ---------------------------------------------------------------------------------------
# Fake loop, mock socket, recording protocol
# ---------------------------------------------------------------------------------------


class FakeLoop:
    def __init__(self):
        self._transports = {}
        self.soon = collections.deque()
        self.readers = {}
        self.writers = {}
        # Diagnostics only (not recorded): exception-handler calls, escaped exceptions.
        self.handler_calls = 0
        self.escaped = 0

    def call_soon(self, callback, *args, context=None):
        self.soon.append((callback, args))

    def drain(self):
        while self.soon:
            callback, args = self.soon.popleft()
            self._run(callback, *args)

    def _run(self, callback, *args):
        # asyncio.events.Handle._run: an escaping exception goes to the handler.
        try:
            callback(*args)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException:
            self.escaped += 1

    def _add_reader(self, fd, callback, *args):
        self.readers[fd] = (callback, args)

    def _remove_reader(self, fd):
        return self.readers.pop(fd, None) is not None

    def _add_writer(self, fd, callback, *args):
        self.writers[fd] = (callback, args)

    def _remove_writer(self, fd):
        return self.writers.pop(fd, None) is not None

    def get_debug(self):
        return False

    def is_closed(self):
        # Only the transport's __repr__ (from __del__ of a never-closed transport at
        # exit) asks; "closed" makes it skip inspecting a selector this loop lacks.
        return True

    def call_exception_handler(self, context):
        self.handler_calls += 1


ERRORS = {
    "BrokenPipeError": BrokenPipeError,
    "ConnectionResetError": ConnectionResetError,
    "ConnectionAbortedError": ConnectionAbortedError,
}


class MockSock:
    family = socket.AF_UNIX  # no TCP_NODELAY dance
    type = socket.SOCK_STREAM
    proto = 0

    def __init__(self):
        self.mode = "all"
        self.calls = 0
        self.sent = bytearray()
        self.shutdowns = 0
        self.closes = 0
        self.inbound = collections.deque()  # what the peer sent and was not read yet
        self.peer_eof = False

    def fileno(self):
        return FD

    def getsockname(self):
        return ("127.0.0.1", 1)

    def getpeername(self):
        return ("127.0.0.1", 2)

    def setsockopt(self, *args):
        pass

    def _take(self, total):
        self.calls += 1
        mode = self.mode
        if mode == "all":
            return total
        if mode == "eagain":
            raise BlockingIOError
        if "take" in mode:
            if self.calls > 1:
                raise BlockingIOError
            return min(mode["take"], total)
        raise ERRORS[mode["error"]]()

    def send(self, data):
        data = memoryview(data)
        n = self._take(len(data))
        self.sent += data[:n]
        return n

    def sendmsg(self, buffers, *args):
        bufs = [memoryview(b) for b in buffers]
        n = self._take(sum(len(b) for b in bufs))
        left = n
        for b in bufs:
            take = min(left, len(b))
            self.sent += b[:take]
            left -= take
        return n

    def _next(self, n):
        """The next inbound item, at most `n` bytes of it (the rest stays queued)."""
        if self.peer_eof:
            return b""
        if not self.inbound:
            raise BlockingIOError
        item = self.inbound.popleft()
        if item == "eof":
            self.peer_eof = True
            return b""
        if "error" in item:
            raise ERRORS[item["error"]]()
        data = item["data"].encode("latin-1")
        if len(data) > n:
            self.inbound.appendleft({"data": data[n:].decode("latin-1")})
        return data[:n]

    def recv(self, n):
        return self._next(n)

    def recv_into(self, buf):
        data = self._next(len(buf))
        buf[: len(data)] = data
        return len(data)

    def shutdown(self, how):
        assert how == socket.SHUT_WR
        self.shutdowns += 1

    def close(self):
        self.closes += 1


class RecordingProtocol(protocols.Protocol):
    def __init__(self, echo, flow_reading):
        self.log = []
        self.tr = None
        self.keep_open = False
        self.echo = echo
        self.flow_reading = flow_reading

    def connection_made(self, transport):
        self.log.append(["connection_made"])
        self.tr = transport

    def data_received(self, data):
        self.log.append(["data_received", bytes(data).decode("latin-1")])
        if self.echo:
            self.tr.write(bytes(data))

    def eof_received(self):
        self.log.append(["eof_received"])
        return self.keep_open

    def pause_writing(self):
        self.log.append(["pause_writing"])
        if self.flow_reading:
            self.tr.pause_reading()

    def resume_writing(self):
        self.log.append(["resume_writing"])
        if self.flow_reading:
            self.tr.resume_reading()

    def connection_lost(self, exc):
        self.log.append(["connection_lost", None if exc is None else type(exc).__name__])


class RecordingBufferedProtocol(RecordingProtocol, protocols.BufferedProtocol):
    """The same, as a BufferedProtocol whose get_buffer returns `size` bytes."""

    def __init__(self, echo, flow_reading, size):
        super().__init__(echo, flow_reading)
        self.buf = bytearray(size)

    def get_buffer(self, sizehint):
        return self.buf

    def buffer_updated(self, nbytes):
        self.data_received(bytes(self.buf[:nbytes]))


# ---------------------------------------------------------------------------------------
# Running a script
# ---------------------------------------------------------------------------------------


class Run:
    def __init__(self, protocol_cfg):
        self.loop = FakeLoop()
        self.sock = MockSock()
        if protocol_cfg.get("buffer") is None:
            self.proto = RecordingProtocol(protocol_cfg["echo"], protocol_cfg["flow_reading"])
        else:
            self.proto = RecordingBufferedProtocol(
                protocol_cfg["echo"], protocol_cfg["flow_reading"], protocol_cfg["buffer"]
            )
        self.seen = 0
        self.tr = None

    def user_call(self, op):
        """One user call on the transport: "ok" or the exception's type name."""
        tr, kind = self.tr, op["op"]
        try:
            if kind == "write":
                tr.write(payload(op))
            elif kind == "writelines":
                tr.writelines([payload(c) for c in op["chunks"]])
            elif kind == "limits":
                tr.set_write_buffer_limits(high=op["high"], low=op["low"])
            elif kind == "write_eof":
                tr.write_eof()
            elif kind == "close":
                tr.close()
            elif kind == "abort":
                tr.abort()
            elif kind == "pause_reading":
                tr.pause_reading()
            elif kind == "resume_reading":
                tr.resume_reading()
            else:
                raise AssertionError(f"not a user call: {kind}")
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:  # noqa: BLE001 - the record says which
            return type(exc).__name__
        return "ok"

    def step(self, op):
        kind = op["op"]
        rec = {"op": op, "res": None}
        # The socket's behaviour holds for the whole step (every call of a `seq`).
        self.sock.mode, self.sock.calls = op.get("sock", "all"), 0
        if kind == "init":
            self.tr = TRANSPORT(self.loop, self.sock, self.proto)
            rec["res"] = [self.user_call(o) for o in op.get("pre", [])]
        elif kind == "seq":
            rec["res"] = [self.user_call(o) for o in op["ops"]]
        elif kind == "writable":
            entry = self.loop.writers.get(FD)
            rec["ran"] = entry is not None
            if entry is not None:
                self.loop._run(entry[0], *entry[1])
        elif kind == "readable":
            self.proto.keep_open = op.get("keep_open", False)
            entry = self.loop.readers.get(FD)
            rec["ran"] = entry is not None
            if entry is not None:
                if op["recv"] != "eagain":
                    self.sock.inbound.append(op["recv"])
                self.loop._run(entry[0], *entry[1])
        else:
            rec["res"] = self.user_call(op)
        self.loop.drain()
        tr, sock = self.tr, self.sock
        rec["cb"] = self.proto.log[self.seen:]
        self.seen = len(self.proto.log)
        rec.update(
            size=tr.get_write_buffer_size(),
            closing=tr.is_closing(),
            reading=tr.is_reading(),
            reader=FD in self.loop.readers,
            writer=FD in self.loop.writers,
            sent=len(sock.sent),
            crc=zlib.crc32(sock.sent),
            shut=sock.shutdowns > 0,
            closed=sock.closes > 0,
            chunks=len(tr._buffer),
            empty=sum(1 for b in tr._buffer if len(b) == 0),
            paused=tr._protocol_paused,
        )
        return rec

    def lost(self):
        return any(c[0] == "connection_lost" for c in self.proto.log)


def init_op(pre):
    init = {"op": "init"}
    if pre:
        init["pre"], sock = hoist_sock(pre)
        if sock != "all":
            init["sock"] = sock
    return init


def run_script(name, protocol_cfg, steps, pre=()):
    run = Run(protocol_cfg)
    init = init_op(pre)
    records = [run.step(init)]
    for op in steps:
        records.append(run.step(op))
    return {"name": name, "protocol": protocol_cfg, "steps": records}


# ---------------------------------------------------------------------------------------
# Hand-written scripts: one or more per rule
# ---------------------------------------------------------------------------------------

_fill = [0]


def W(n, sock="all"):
    _fill[0] = (_fill[0] + 41) % 256
    return {"op": "write", "len": n, "fill": _fill[0], "sock": sock}


def WL(lens, sock="all"):
    chunks = []
    for n in lens:
        _fill[0] = (_fill[0] + 41) % 256
        chunks.append({"len": n, "fill": _fill[0]})
    return {"op": "writelines", "chunks": chunks, "sock": sock}


def LIM(high=None, low=None):
    return {"op": "limits", "high": high, "low": low}


def OP(kind):
    return {"op": kind}


def WR(sock="all"):
    return {"op": "writable", "sock": sock}


def RD(recv, keep_open=False, sock="all"):
    if isinstance(recv, str) and recv not in ("eof", "eagain"):
        recv = {"data": recv}
    return {"op": "readable", "recv": recv, "keep_open": keep_open, "sock": sock}


def hoist_sock(ops):
    """Several calls in one step share the step's socket: hoist it out of the calls."""
    socks = {json.dumps(o["sock"]) for o in ops if o.get("sock", "all") != "all"}
    assert len(socks) <= 1, socks
    inner = [{k: v for k, v in o.items() if k != "sock"} for o in ops]
    return inner, (json.loads(socks.pop()) if socks else "all")


def SEQ(*ops):
    inner, sock = hoist_sock(ops)
    return {"op": "seq", "ops": inner, "sock": sock}


def take(n):
    return {"take": n}


def err(name):
    return {"error": name}


EAGAIN = "eagain"
CLOSE, ABORT, EOFW = OP("close"), OP("abort"), OP("write_eof")
PR, RR = OP("pause_reading"), OP("resume_reading")
PLAIN = {"echo": False, "flow_reading": False, "buffer": None}
ECHO = {"echo": True, "flow_reading": False, "buffer": None}
RELAY = {"echo": True, "flow_reading": True, "buffer": None}
FLOWREAD = {"echo": False, "flow_reading": True, "buffer": None}


def BUF(size, echo=False, flow_reading=False):
    """A BufferedProtocol whose get_buffer returns `size` bytes (0: an empty buffer)."""
    return {"echo": echo, "flow_reading": flow_reading, "buffer": size}

# (name, protocol, pre-connection_made calls, steps). Rules cite asyncio-spec.md.
HAND = [
    # §2.1 write: fast path, partial, refused, queued behind, empty, errors
    ("write_taken_whole", PLAIN, [], [W(10), W(3)]),
    ("write_partial_then_flush", PLAIN, [], [W(10, take(4)), WR(take(2)), WR()]),
    ("write_refused_then_flush", PLAIN, [], [W(10, EAGAIN), WR(EAGAIN), WR(take(3)), WR()]),
    ("write_send_returns_zero", PLAIN, [], [W(10, take(0)), WR(take(0)), WR()]),
    ("write_queued_behind_buffer", PLAIN, [], [W(10, EAGAIN), W(5), W(7), WR(take(12)), WR()]),
    ("write_empty_is_noop", PLAIN, [], [W(0), W(0, EAGAIN), W(4, EAGAIN), W(0), WR()]),
    ("write_fast_path_error", PLAIN, [], [W(10, err("BrokenPipeError")), W(5)]),
    ("write_fast_path_reset", PLAIN, [], [W(10, take(3)), WR(err("ConnectionResetError"))]),
    ("flush_error_drops_buffer", PLAIN, [], [W(10, EAGAIN), W(5), WR(err("BrokenPipeError"))]),
    ("flush_error_while_paused", PLAIN, [], [LIM(4), W(10, EAGAIN), WR(err("ConnectionResetError"))]),
    # §3 flow control
    ("pause_only_above_high", PLAIN, [], [LIM(4, 2), W(4, EAGAIN), W(1), WR(take(2)), WR(take(1)), WR()]),
    ("one_pause_per_episode", PLAIN, [], [LIM(4), W(10, EAGAIN), W(10), W(10), WR(take(29)), WR()]),
    ("resume_at_low_partial_drain", PLAIN, [], [LIM(10, 5), W(20, EAGAIN), WR(take(10)), WR(take(5)), WR()]),
    ("high_zero_pauses_any_byte", PLAIN, [], [LIM(0), W(1, EAGAIN), WR(), W(1), W(2, EAGAIN), WR(take(1)), WR()]),
    ("limits_lowering_pauses", PLAIN, [], [W(100, EAGAIN), LIM(50), LIM(40), WR(take(88)), WR()]),
    ("limits_raising_does_not_resume", PLAIN, [], [W(100, EAGAIN), LIM(50, 10), LIM(1000, 200), WR(take(1)), WR()]),
    ("limits_raising_then_refill", PLAIN, [], [W(100, EAGAIN), LIM(50, 10), LIM(1000, 200), W(1000), WR(take(900)), WR()]),
    ("limits_raising_then_lowering", PLAIN, [], [W(100, EAGAIN), LIM(50, 10), LIM(1000, 200), LIM(50, 10), WR()]),
    ("limits_value_error", PLAIN, [], [LIM(10, 11), LIM(0, 1), W(5, EAGAIN), LIM(4, 5), W(1), LIM(None, 1), WR()]),
    ("limits_derivation", PLAIN, [], [LIM(None, 10), W(40, EAGAIN), W(1), WR(take(31)), WR(), LIM(100), W(101, EAGAIN), WR(take(76)), WR()]),
    ("default_limits_pause_and_resume", PLAIN, [], [W(65536, EAGAIN), W(1), WR(take(49153)), WR(take(1)), WR()]),
    ("default_limits_big_write_taken", PLAIN, [], [W(200000), W(70000, take(1000)), WR()]),
    ("pause_resume_pause_again", PLAIN, [], [LIM(8, 2), W(20, EAGAIN), WR(take(18)), W(20, EAGAIN), WR()]),
    ("resume_reading_reaction", FLOWREAD, [], [LIM(4), W(10, EAGAIN), RD("x"), WR(), RD("y")]),
    # §2.3 writelines
    ("writelines_taken_whole", PLAIN, [], [WL([3, 4, 5]), WL([1])]),
    ("writelines_partial", PLAIN, [], [WL([3, 4, 5], take(5)), WR(take(1)), WR()]),
    ("writelines_refused", PLAIN, [], [WL([3, 4], EAGAIN), WR()]),
    ("writelines_empty_list", PLAIN, [], [WL([]), W(3, EAGAIN), WL([]), WR()]),
    ("writelines_does_not_pause", PLAIN, [], [LIM(4), WL([5, 5], EAGAIN), WR(take(8)), WR()]),
    ("writelines_over_high_then_write", PLAIN, [], [LIM(4), WL([5, 5], EAGAIN), W(1), WR()]),
    ("writelines_behind_buffer", PLAIN, [], [W(5, EAGAIN), WL([3, 3], take(4)), WR()]),
    ("writelines_behind_buffer_refused", PLAIN, [], [W(5, EAGAIN), WL([3, 3], EAGAIN), WR()]),
    ("writelines_flush_resumes_then_write_pauses", PLAIN, [], [LIM(8, 4), W(10, EAGAIN), SEQ(WL([2], take(12)), W(20)), WR()]),
    ("writelines_after_write_eof", PLAIN, [], [EOFW, WL([3])]),
    ("writelines_empty_chunk_at_tail", PLAIN, [], [WL([5, 0])]),
    ("writelines_empty_chunk_at_head", PLAIN, [], [WL([0, 5]), W(2)]),
    ("writelines_flush_error", PLAIN, [], [WL([3, 4], err("BrokenPipeError"))]),
    # §4.1 write_eof
    ("write_eof_empty_buffer", PLAIN, [], [EOFW, EOFW, W(3), W(0), RD("still reading"), RD("eof", keep_open=False)]),
    ("write_eof_after_drain", PLAIN, [], [W(10, EAGAIN), EOFW, WR(take(5)), WR(), EOFW]),
    ("write_eof_after_close", PLAIN, [], [W(10, EAGAIN), CLOSE, EOFW, WR()]),
    ("write_eof_then_peer_eof_keep_open", PLAIN, [], [EOFW, RD("eof", keep_open=True), CLOSE]),
    # §4.2 eof_received
    ("eof_falsy_closes", PLAIN, [], [RD("hello"), RD("eof", keep_open=False)]),
    ("eof_falsy_flushes_first", PLAIN, [], [W(10, EAGAIN), RD("eof", keep_open=False), W(2), WR(take(4)), WR()]),
    ("eof_keep_open_half_close", PLAIN, [], [RD("eof", keep_open=True), W(5), W(5, EAGAIN), EOFW, WR(), CLOSE]),
    ("eof_keep_open_pause_resume_reading", PLAIN, [], [RD("eof", keep_open=True), PR, RR, W(2), CLOSE]),
    ("eof_keep_open_reader_readded", PLAIN, [], [RD("eof", keep_open=True), PR, RR, RD("eof", keep_open=False)]),
    ("eof_while_paused_for_writing", PLAIN, [], [LIM(4), W(10, EAGAIN), RD("eof"), WR(take(6)), WR()]),
    # §5 close
    ("close_empty_buffer", PLAIN, [], [CLOSE]),
    ("close_twice_in_one_step", PLAIN, [], [SEQ(CLOSE, CLOSE)]),
    ("close_flushes_then_lost", PLAIN, [], [W(10, EAGAIN), CLOSE, CLOSE, WR(take(3)), WR(EAGAIN), WR()]),
    ("close_stops_reading", PLAIN, [], [W(10, EAGAIN), CLOSE, RD("ignored"), PR, RR, WR()]),
    ("close_while_paused_resumes_on_drain", PLAIN, [], [LIM(4), W(10, EAGAIN), CLOSE, WR(take(6)), WR()]),
    ("close_while_paused_partial_resume", PLAIN, [], [LIM(8, 4), W(10, EAGAIN), CLOSE, WR(take(6)), WR()]),
    ("close_then_flush_error", PLAIN, [], [W(10, EAGAIN), CLOSE, WR(err("BrokenPipeError"))]),
    ("write_after_close_empty_buffer", PLAIN, [], [SEQ(CLOSE, W(5), W(0), W(3))]),
    ("write_after_close_pending_buffer", PLAIN, [], [W(10, EAGAIN), CLOSE, W(5), WR()]),
    ("write_after_close_pending_crosses_high", PLAIN, [], [LIM(12), W(10, EAGAIN), CLOSE, W(5), WR()]),
    ("write_after_close_flushed", PLAIN, [], [W(10, EAGAIN), CLOSE, WR(), W(5)]),
    ("writelines_after_close_pending", PLAIN, [], [W(10, EAGAIN), CLOSE, WL([3]), WR()]),
    ("writelines_after_close_empty", PLAIN, [], [SEQ(CLOSE, WL([3]))]),
    ("calls_after_lost", PLAIN, [], [CLOSE, W(5), W(0), WL([2]), CLOSE, ABORT, EOFW, PR, RR, LIM(10), LIM(1, 2)]),
    ("calls_after_drained_close", PLAIN, [], [W(4, EAGAIN), CLOSE, WR(), W(3), ABORT, LIM(8)]),
    # §6 abort
    ("abort_drops_buffer", PLAIN, [], [W(10, EAGAIN), W(4), ABORT, ABORT]),
    ("abort_twice_in_one_step", PLAIN, [], [W(10, EAGAIN), SEQ(ABORT, ABORT)]),
    ("abort_while_paused_no_resume", PLAIN, [], [LIM(4), W(10, EAGAIN), ABORT]),
    ("abort_during_close_flush", PLAIN, [], [LIM(4), W(10, EAGAIN), CLOSE, WR(take(2)), ABORT]),
    ("write_after_abort_same_step", PLAIN, [], [SEQ(ABORT, W(5), WL([2]), EOFW, CLOSE)]),
    # §7 fatal errors on read
    ("read_reset", PLAIN, [], [RD("abc"), RD(err("ConnectionResetError"))]),
    ("read_reset_paused_with_buffer", PLAIN, [], [LIM(4), W(10, EAGAIN), RD(err("ConnectionResetError"))]),
    ("read_aborted", PLAIN, [], [W(3, EAGAIN), RD(err("ConnectionAbortedError"))]),
    ("read_eagain_ignored", PLAIN, [], [RD(EAGAIN), RD("x"), RD(EAGAIN)]),
    ("echo_after_write_eof_fails", ECHO, [], [EOFW, RD("boom")]),
    ("echo_write_error", ECHO, [], [RD("abc", sock=err("BrokenPipeError"))]),
    # §8 read side
    ("pause_resume_reading", PLAIN, [], [PR, PR, RD("skipped"), RR, RR, RD("delivered")]),
    ("pause_reading_then_close", PLAIN, [], [PR, CLOSE, RR]),
    ("resume_reading_after_close", PLAIN, [], [W(4, EAGAIN), PR, CLOSE, RR, WR()]),
    # §9 ordering before connection_made
    ("pause_reading_before_made", PLAIN, [PR], [RD("skipped"), RR, RD("now")]),
    ("close_before_made", PLAIN, [CLOSE], []),
    ("abort_before_made", PLAIN, [ABORT], []),
    ("write_before_made", PLAIN, [W(10, take(4))], [WR()]),
    ("limits_before_made", PLAIN, [LIM(4), W(10, EAGAIN)], [WR()]),
    ("flow_reading_pause_before_made", FLOWREAD, [LIM(4), W(10, EAGAIN)], [RD("x"), WR()]),
    # one step, several calls: callbacks from several calls in order
    ("cross_high_then_close_same_step", PLAIN, [], [LIM(4), SEQ(W(10, EAGAIN), CLOSE), WR()]),
    ("cross_high_then_abort_same_step", PLAIN, [], [LIM(4), SEQ(W(10, EAGAIN), ABORT)]),
    ("write_then_limits_same_step", PLAIN, [], [SEQ(W(10, EAGAIN), LIM(4), LIM(100, 20)), WR()]),
    # echo / relay
    ("echo_fast_path", ECHO, [], [RD("ping"), RD("pong", sock=take(2)), WR(), RD("eof")]),
    ("relay_backpressure", RELAY, [], [LIM(4), RD("0123456789", sock=EAGAIN), RD("skipped"), WR(take(6)), RD("more"), WR()]),
    ("relay_close_on_eof_while_paused", RELAY, [], [LIM(4), RD("0123456789", sock=EAGAIN), CLOSE, WR()]),
    ("pause_reaction_then_resume_reading_same_step", FLOWREAD, [], [LIM(4), SEQ(W(10, EAGAIN), RR), WR(), SEQ(W(10, EAGAIN), PR), WR()]),
    ("write_eof_then_close_pending", PLAIN, [], [W(10, EAGAIN), EOFW, CLOSE, WR(take(4)), WR()]),
    ("write_then_abort_before_made", PLAIN, [W(10, take(3)), ABORT], [W(2)]),
    ("limits_resume_with_flow_reading", FLOWREAD, [], [W(100, EAGAIN), LIM(50, 10), RD("skipped"), LIM(1000, 200), RD("now"), WR()]),
    ("writelines_pause_with_flow_reading", FLOWREAD, [], [LIM(4), WL([5, 5], EAGAIN), RD("x"), WR()]),
    ("eof_close_while_paused_flow_reading", RELAY, [], [LIM(4), RD("0123456789", sock=take(2)), WR(take(4)), WR()]),
    # §8.38 BufferedProtocol: get_buffer / recv_into / buffer_updated
    ("buffered_small_buffer", BUF(3), [], [RD("abcdefgh"), RD(EAGAIN), RD("xy"), RD(EAGAIN), RD(EAGAIN)]),
    ("buffered_eof_keep_open", BUF(4), [], [RD("ab"), RD("eof", keep_open=True), W(3), CLOSE]),
    ("buffered_eof_after_leftover", BUF(2), [], [RD("abcde"), RD("eof"), RD(EAGAIN), RD(EAGAIN)]),
    ("buffered_empty_buffer_is_fatal", BUF(0), [], [RD("abc")]),
    ("buffered_read_reset", BUF(8), [], [RD("abc"), RD(err("ConnectionResetError"))]),
    ("buffered_echo_backpressure", BUF(4, echo=True, flow_reading=True), [], [LIM(4), RD("0123456789", sock=EAGAIN), RD(EAGAIN), WR(take(3)), WR(), RD(EAGAIN), WR()]),
    ("buffered_echo_after_write_eof", BUF(4, echo=True), [], [EOFW, RD("boom")]),
]


# ---------------------------------------------------------------------------------------
# Seeded scripts
# ---------------------------------------------------------------------------------------


class SplitMix64:
    """splitmix64: a fixed, version-independent stream (Python's `random` may change)."""

    def __init__(self, seed):
        self.state = seed & 0xFFFFFFFFFFFFFFFF

    def next(self):
        self.state = (self.state + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
        return z ^ (z >> 31)

    def below(self, n):
        return self.next() % n

    def chance(self, percent):
        return self.below(100) < percent

    def weighted(self, table):
        total = sum(w for _, w in table)
        r = self.below(total)
        for item, w in table:
            if r < w:
                return item
            r -= w
        raise AssertionError


OP_WEIGHTS = [
    ("write", 26),
    ("writable", 22),
    ("readable", 16),
    ("limits", 8),
    ("writelines", 7),
    ("pause_reading", 4),
    ("resume_reading", 4),
    ("write_eof", 3),
    ("close", 4),
    ("abort", 1),
    ("seq", 3),
]
LETTERS = "abcdefghijklmnopqrstuvwxyz0123456789"


def gen_sock(rng, size_hint, errors=True):
    kind = rng.weighted([("all", 40), ("take", 35), ("eagain", 20), ("error", 5 if errors else 0)])
    if kind == "take":
        return {"take": rng.below(max(size_hint, 1) + 2)}
    if kind == "error":
        return {"error": rng.weighted([("BrokenPipeError", 1), ("ConnectionResetError", 1)])}
    return kind


def gen_len(rng):
    r = rng.below(100)
    if r < 6:
        return 0
    if r < 90:
        return 1 + rng.below(24)
    if r < 96:
        return 25 + rng.below(200)
    return 60000 + rng.below(20000)  # crosses the default high-water mark


def gen_limits(rng):
    form = rng.weighted([("both", 5), ("high", 3), ("low", 1), ("default", 1), ("bad", 1)])
    high = rng.below(48)
    if form == "both":
        return LIM(high, rng.below(high + 1))
    if form == "high":
        return LIM(high, None)
    if form == "low":
        return LIM(None, rng.below(12))
    if form == "bad":
        return LIM(high, high + 1 + rng.below(4))
    return LIM(None, None)


def gen_user_op(rng, kind, fill):
    """One user call; write/writelines carry a socket behaviour (hoisted out of `seq`)."""
    if kind == "write":
        n = gen_len(rng)
        return {"op": "write", "len": n, "fill": fill, "sock": gen_sock(rng, n)}
    if kind == "writelines":
        count = rng.below(4)  # an empty list sometimes
        chunks = [{"len": 1 + rng.below(12), "fill": (fill + 17 * i) % 256} for i in range(count)]
        return {"op": "writelines", "chunks": chunks, "sock": gen_sock(rng, sum(c["len"] for c in chunks))}
    if kind == "limits":
        return gen_limits(rng)
    return OP(kind)


def without_sock(op):
    return {k: v for k, v in op.items() if k != "sock"}


def generate(seed):
    """Seeded script `seed`: reactions, optional calls before connection_made, 8-28 steps.

    Steering (from the live CPython transport, so still a pure function of the seed):
    after ``close()`` with data pending, writes mostly become ``writable`` steps (a write
    there is accepted by CPython and refused by aioport by design, which ends the
    comparison of that script); after ``connection_lost``, ``writelines`` becomes
    ``write`` (CPython 3.13.0 crashes half-way through it, gh-136234) and the script stops
    two steps later; ``writelines`` is skipped while 36+ chunks are buffered.
    """
    rng = SplitMix64(seed)
    cfg = {"echo": rng.chance(20), "flow_reading": rng.chance(30), "buffer": None}
    if rng.chance(25):
        cfg["buffer"] = rng.weighted([(0, 1), (1, 4), (3, 6), (8, 6), (64, 6)])
    run = Run(cfg)
    init = {"op": "init"}
    if rng.chance(8):
        kind = rng.weighted([("pause_reading", 2), ("limits", 2), ("write", 2), ("close", 1)])
        init["pre"] = [without_sock(gen_user_op(rng, kind, 3))]
        init["sock"] = gen_sock(rng, 24, errors=False)
    records = [run.step(init)]
    want = 8 + rng.below(21)
    after_lost = 0
    peer_eof = False
    user_kinds = [(k, w) for k, w in OP_WEIGHTS if k not in ("writable", "readable", "seq")]
    for i in range(want):
        lost = run.lost()
        if lost:
            after_lost += 1
            if after_lost > 2:
                break
        kind = rng.weighted(OP_WEIGHTS)
        if kind == "writelines" and len(run.tr._buffer) > 36:
            kind = "writable"
        closing_with_data = run.tr.is_closing() and not lost and run.tr.get_write_buffer_size() > 0
        if kind in ("write", "writelines", "seq") and closing_with_data and rng.chance(85):
            kind = "writable"
        if kind == "writelines" and lost:
            kind = "write"
        fill = (seed * 7 + i * 41) % 256
        if kind == "writable":
            op = WR(gen_sock(rng, run.tr.get_write_buffer_size()))
        elif kind == "readable":
            r = rng.weighted([("data", 65), ("eof", 20), ("eagain", 8), ("error", 7)])
            if peer_eof:
                r = "eof"  # a socket keeps returning b"" after EOF
            if r == "data":
                recv = {"data": "".join(LETTERS[rng.below(len(LETTERS))] for _ in range(1 + rng.below(16)))}
            elif r == "error":
                recv = {"error": rng.weighted([("ConnectionResetError", 3), ("ConnectionAbortedError", 1)])}
            else:
                recv = r
            op = {"op": "readable", "recv": recv, "keep_open": rng.chance(50), "sock": gen_sock(rng, 16)}
            peer_eof = peer_eof or (r == "eof" and FD in run.loop.readers)
        elif kind == "seq":
            count = 2 + rng.below(2)
            ops = []
            for j in range(count):
                k = rng.weighted(user_kinds)
                if k == "writelines" and lost:
                    k = "write"
                ops.append(without_sock(gen_user_op(rng, k, fill + j)))
            op = {"op": "seq", "ops": ops, "sock": gen_sock(rng, 24, errors=False)}
        else:
            op = gen_user_op(rng, kind, fill)
        records.append(run.step(op))
    return {"name": f"seed_{seed}", "seed": seed, "protocol": cfg, "steps": records}


# ---------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------


def dumps_file(scripts):
    """One JSON document, one line per step, so diffs of the committed files read well."""
    out = ["{"]
    out.append(f'"python": {json.dumps(sys.version)},')
    out.append(f'"python_minor": "{sys.version_info[0]}.{sys.version_info[1]}",')
    out.append('"path": "sendmsg",')
    out.append('"generator": "tools/asyncio_diff.py",')
    out.append('"scripts": [')
    for si, s in enumerate(scripts):
        head = {k: v for k, v in s.items() if k != "steps"}
        out.append(json.dumps(head, separators=(",", ":"))[:-1] + ',"steps":[')
        for i, st in enumerate(s["steps"]):
            tail = "," if i + 1 < len(s["steps"]) else ""
            out.append(json.dumps(st, separators=(",", ":")) + tail)
        out.append("]}" + ("," if si + 1 < len(scripts) else ""))
    out.append("]}")
    return "\n".join(out) + "\n"


def build(seeds=SEEDED_COUNT):
    hand = []
    names = set()
    for name, cfg, pre, steps in HAND:
        assert name not in names, name
        names.add(name)
        hand.append(run_script(name, cfg, steps, pre))
    seeded = [generate(seed) for seed in range(1, seeds + 1)]
    return {"hand.json": dumps_file(hand), "seeded.json": dumps_file(seeded)}


def strip_header(text):
    return [line for line in text.splitlines() if not line.startswith('"python": ')]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true", help="compare with the committed files; exit 1 on drift")
    ap.add_argument("--out", default=OUT_DIR, help="directory of the JSON files")
    ap.add_argument(
        "--seeds",
        type=int,
        default=SEEDED_COUNT,
        help=f"seeded scripts to make (committed: {SEEDED_COUNT}; more for an exploratory run into another --out)",
    )
    args = ap.parse_args()
    if sys.version_info[:2] != (3, 13):
        print(f"asyncio_diff.py: needs Python 3.13, this is {sys.version.split()[0]}", file=sys.stderr)
        return 2
    files = build(args.seeds)
    if args.check:
        drift = False
        for name, text in files.items():
            path = os.path.join(args.out, name)
            try:
                with open(path, encoding="utf-8") as f:
                    old = f.read()
            except FileNotFoundError:
                print(f"DRIFT: {path} is missing")
                drift = True
                continue
            a, b = strip_header(old), strip_header(text)
            if a != b:
                drift = True
                for i, (x, y) in enumerate(zip(a, b)):
                    if x != y:
                        print(f"DRIFT: {path} line {i + 1}:\n  committed:   {x}\n  regenerated: {y}")
                        break
                else:
                    print(f"DRIFT: {path}: {len(a)} lines committed, {len(b)} regenerated")
        if not drift:
            print(f"no drift: {', '.join(files)} match CPython {sys.version.split()[0]}")
        return 1 if drift else 0
    os.makedirs(args.out, exist_ok=True)
    for name, text in files.items():
        with open(os.path.join(args.out, name), "w", encoding="utf-8") as f:
            f.write(text)
    total = sum(t.count('"name":') for t in files.values())
    print(f"wrote {total} scripts to {os.path.normpath(args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
