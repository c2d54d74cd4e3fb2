"""The prediction log written by a process of its own (`[log] writer = "process"`).

The serving process keeps only the hand-over: `submit` appends to the same deque as the
thread writer's (engine.serving.prediction_log), and a feeder thread pickles what waits in
one C call every `interval` (150 rows: ~17 µs of GIL; a shared-memory ring would pack each
row in Python in the request's own thread, ~1.5–4.5 µs a row) and writes it to a pipe. Row
building, the rollups and the SQLite/PostgreSQL transactions run in the writer process
(`python -m engine.serving.log_process`), a `PredictionLog` without its thread, where they
never hold the serving process's GIL; one bad row is still quarantined there alone.

Acknowledged = logged: the serving process keeps every row it sent until the writer says
it is resolved (written, quarantined, or counted as dropped: the writer acknowledges only
when its own queue is empty after a flush). If the writer dies (killed, crashed), the
feeder sees it, counts it (`restarts` in the stats: `log_writer_restarts` on /healthz and
/metrics), starts another one and sends it every row not acknowledged, marked as replayed:
the new writer skips those an earlier one committed (or quarantined) before it could say
so, by their ids, so a row is never logged twice. The writer ignores SIGTERM and SIGINT (a
signal to the whole process group must not lose its queue): it ends when its input closes,
after flushing everything it received — `close` here, or the serving process's death.

Frames on the pipe: a 4-byte little-endian length, one kind byte, then a pickle — to the
writer a list of `Record`s and `Chunk`s (`ROWS`, or `REPLAY`); back from it the tuple
(units resolved so far, its `LogStats`).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import logging
import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import asdict, replace
from pathlib import Path

from engine.core.config import LogSettings
from engine.core.predictions import Chunk, Record
from engine.serving.prediction_log import LogStats, PredictionLog, _workspace_settings

log = logging.getLogger("beast.predlog")

SETTINGS_ENV = "BEAST_LOG_WRITER_SETTINGS"  # the writer's [log] settings, as JSON
ROWS = b"R"
REPLAY = b"P"
FLUSH = b"F"  # write what you hold now (`flush`, its number), not at your next interval
ACK = b"A"
HEADER = struct.Struct("<Ic")
FRAME_UNITS = 5000  # at most this many records or chunks a frame (the pickle holds the GIL)
PIPE_BYTES = 1 << 20  # room for ~5,000 rows in the pipe (Linux F_SETPIPE_SZ; 64 KiB else)
RESTART_PAUSE_S = 1.0  # a writer that dies again at once is restarted after this pause
CLOSE_RESTARTS = 3  # writers started at close to finish the rows one that died left
FLUSH_WAIT_S = 30.0  # how long `flush` waits for the writer to acknowledge everything

_Units = tuple[list[Chunk], list[Record]]  # what one frame carries
_new_record = functools.partial(tuple.__new__, Record)


def _rows(units: _Units) -> int:
    return sum(c.rows for c in units[0]) + len(units[1])


def _count(units: _Units) -> int:
    return len(units[0]) + len(units[1])


def _frame(kind: bytes, payload: object) -> bytes:
    blob = pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)
    return HEADER.pack(len(blob), kind) + blob


def rows_frame(kind: bytes, units: _Units) -> bytes:
    """A frame of rows. Records go as plain tuples: a NamedTuple pickles by its class, a
    tuple 4.4× faster (1,344 vs 308 µs for 150 rows, measured on this loaded machine)."""
    return _frame(kind, (units[0], [tuple(r) for r in units[1]]))


def read_rows(payload: bytes) -> _Units:
    """The rows of a frame `rows_frame` made."""
    chunks, records = pickle.loads(payload)
    return chunks, [_new_record(r) for r in records]


def _frames(buffer: bytearray) -> list[tuple[bytes, bytes]]:
    """Take the whole frames off the front of `buffer`: (kind, payload) each."""
    out: list[tuple[bytes, bytes]] = []
    start = 0
    while len(buffer) - start >= HEADER.size:
        size, kind = HEADER.unpack_from(buffer, start)
        end = start + HEADER.size + size
        if len(buffer) < end:
            break
        out.append((kind, bytes(buffer[start + HEADER.size : end])))
        start = end
    del buffer[:start]
    return out


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _widen(fd: int) -> None:
    with contextlib.suppress(OSError, AttributeError):  # Linux only; 64 KiB is enough too
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)


def _add(a: LogStats, b: LogStats) -> LogStats:
    """Counters of two writers one after the other (the later one's errors win)."""
    return LogStats(
        queued=0,
        written=a.written + b.written,
        dropped=a.dropped + b.dropped,
        last_error=b.last_error,
        batches=a.batches + b.batches,
        last_drop=b.last_drop or a.last_drop,
        quarantined=a.quarantined + b.quarantined,
        pruned=a.pruned + b.pruned,
    )


ZERO = LogStats(0, 0, 0, None)


class _Sent:
    """What one writer was sent and has not acknowledged yet, oldest first."""

    def __init__(self) -> None:
        self.frames: deque[_Units] = deque()
        self.units = 0  # units sent to the current writer
        self.acked = 0  # of them, acknowledged
        self.rows = 0  # rows not acknowledged

    def add(self, units: _Units) -> None:
        self.frames.append(units)
        self.units += _count(units)
        self.rows += _rows(units)

    def ack(self, resolved: int) -> None:
        """The writer resolved its first `resolved` units: forget the frames they fill."""
        while self.frames and self.acked + _count(self.frames[0]) <= resolved:
            units = self.frames.popleft()
            self.acked += _count(units)
            self.rows -= _rows(units)

    def again(self) -> list[_Units]:
        """Every frame not acknowledged, for a new writer (which counts from zero)."""
        self.units = self.acked = 0
        return list(self.frames)


class ProcessLog(PredictionLog):
    """A `PredictionLog` whose rows are written by a child process (see the module)."""

    def __init__(
        self,
        db_path: Path,
        *,
        tolerance: float,
        interval: float = 0.05,
        batch: int = 5000,
        max_queue: int = 500_000,
        settings: LogSettings | None = None,
    ) -> None:
        super().__init__(
            db_path,
            tolerance=tolerance,
            interval=interval,
            batch=batch,
            max_queue=max_queue,
            settings=settings,
        )
        self.db_path = db_path
        self._child: subprocess.Popen[bytes] | None = None
        self._acks = bytearray()
        self._sent = _Sent()
        self._base = ZERO  # the counters of writers that ended
        self._current = ZERO  # the current writer's, as it last said
        self._own_error: str | None = None  # a writer's death, until the next one writes
        self.restarts = 0
        self._last_start = -1e9
        self._acked = threading.Condition()
        self._flush_asked = 0  # `flush` calls, numbered
        self._flush_sent = 0  # the last one the current writer was sent
        self._flush_done = 0  # the last one the current writer answered

    # -- the writer process --------------------------------------------------------------

    def _spawn(self) -> None:
        since = time.monotonic() - self._last_start
        if since < RESTART_PAUSE_S:
            time.sleep(RESTART_PAUSE_S - since)
        self._last_start = time.monotonic()
        args = [str(self.db_path), repr(self.tolerance), repr(self.interval), str(self.batch)]
        child = subprocess.Popen(
            [sys.executable, "-m", "engine.serving.log_process", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env={**os.environ, SETTINGS_ENV: json.dumps(asdict(self.settings))},
            # Out of the server's process group: a Ctrl-C or a signal to the group (before
            # it ignores them, while it imports) reaches the server, which closes it in order.
            start_new_session=True,
        )
        assert child.stdin is not None and child.stdout is not None
        _widen(child.stdin.fileno())
        os.set_blocking(child.stdout.fileno(), False)
        self._child = child
        self._acks.clear()

    def start(self) -> ProcessLog:
        self.store.migrate()  # before the writer opens it: it never migrates
        if self._thread is None and not self._closed:
            self._spawn()
            self._thread = threading.Thread(target=self._run, name="beast-predlog", daemon=True)
            self._thread.start()
        return self

    def pid(self) -> int | None:
        """The writer process's pid (None before start and after close)."""
        return None if self._child is None else self._child.pid

    # -- the feeder thread ---------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.interval)
            self._wake.clear()
            try:
                self._pump()
            except Exception:  # never let the feeder die: serving depends on it
                log.exception("feeding the prediction log writer failed")

    def _pump(self) -> None:
        """Read the writer's acknowledgements, send what waits; restart a dead writer."""
        if not self._read_acks() or not self._send_waiting():
            self._restart()
        elif self._flush_asked > self._flush_sent:
            self._flush_sent = asked = self._flush_asked
            if not self._put(_frame(FLUSH, asked)):
                self._restart()

    def _send_waiting(self) -> bool:
        """Send the queued rows, a frame at a time; False if the writer is gone."""
        while True:
            units = self._take_units()
            if not _count(units):
                return True
            self._sent.add(units)
            if not self._send(ROWS, units):
                return False

    def _take_units(self) -> tuple[list[Chunk], list[Record]]:
        with self._count_lock:
            chunks = list(self._chunks)[:FRAME_UNITS]
            for _ in chunks:
                self._chunks.popleft()
            self._chunk_rows -= sum(c.rows for c in chunks)
        queue = self._queue
        records = [queue.popleft() for _ in range(min(len(queue), FRAME_UNITS - len(chunks)))]
        return chunks, records

    def _send(self, kind: bytes, units: _Units) -> bool:
        return self._put(rows_frame(kind, units))

    def _put(self, frame: bytes) -> bool:
        child = self._child
        if child is None or child.stdin is None or child.poll() is not None:
            return False
        try:
            _write_all(child.stdin.fileno(), frame)
        except OSError:  # a broken pipe: the writer died
            return False
        return True

    def _read_acks(self) -> bool:
        """Take what the writer said; False once it has ended."""
        child = self._child
        if child is None or child.stdout is None:
            return False
        while True:
            try:
                data = os.read(child.stdout.fileno(), 1 << 16)
            except BlockingIOError:
                break
            if not data:
                return False
            self._acks += data
        self._take_acks()
        return child.poll() is None

    def _take_acks(self) -> None:
        for _kind, payload in _frames(self._acks):
            resolved, stats, flushed = pickle.loads(payload)
            with self._count_lock:
                self._sent.ack(resolved)
                self._current = stats
                self._flush_done = max(self._flush_done, flushed)
                if stats.batches and stats.last_error is None:
                    self._own_error = None
        with self._acked:
            self._acked.notify_all()

    def _restart(self) -> None:
        """The writer died: count it, start another, send it everything unacknowledged."""
        child = self._child
        code = child.wait() if child is not None else None
        self._read_leftover_acks()
        with self._count_lock:
            self.restarts += 1
            self._base = _add(self._base, self._current)
            self._current = ZERO
            self._own_error = f"the log writer process exited ({code}); restarted"
            self._flush_sent = self._flush_done  # a flush asked of it: asked again
        log.warning(
            "prediction log writer exited (%s); restarting it, %d rows to send again",
            code,
            self._sent.rows,
        )
        self._close_pipes()
        self._spawn()
        for units in self._sent.again():
            self._sent.units += _count(units)
            if not self._send(REPLAY, units):
                return  # the next round restarts it again

    def _read_leftover_acks(self) -> None:
        child = self._child
        if child is None or child.stdout is None:
            return
        with contextlib.suppress(OSError):
            while data := os.read(child.stdout.fileno(), 1 << 16):
                self._acks += data
        self._take_acks()

    def _close_pipes(self) -> None:
        child = self._child
        if child is not None:
            for pipe in (child.stdin, child.stdout):
                if pipe is not None:
                    with contextlib.suppress(OSError):
                        pipe.close()
        self._child = None

    # -- what the serving process asks ---------------------------------------------------

    @property
    def _queued(self) -> int:
        return len(self._queue) + self._chunk_rows + self._sent.rows

    def stats(self) -> LogStats:
        with self._count_lock:
            both = _add(self._base, self._current)
            return replace(
                both,
                queued=self._queued,
                dropped=both.dropped + self.dropped,
                last_error=self._own_error or both.last_error or self.last_error,
                last_drop=both.last_drop or self.last_drop,
                restarts=self.restarts,
            )

    def flush(self) -> int:
        """Hand everything queued to the writer and wait (up to FLUSH_WAIT_S) until it is
        resolved; the rows written meanwhile."""
        before = self.stats().written
        with self._acked:
            self._flush_asked += 1
            asked = self._flush_asked
        deadline = time.monotonic() + FLUSH_WAIT_S
        while self._queued and time.monotonic() < deadline and self._thread is not None:
            self._wake.set()
            with self._acked:
                if self._flush_done >= asked:  # it flushed: what is left waits (busy)
                    break
                self._acked.wait(min(self.interval, 0.05))
        return self.stats().written - before

    def close(self) -> None:
        """Send everything, let the writer flush and end; count what no writer could write."""
        if self._closed:
            return
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        with self._count_lock:
            self._closed = True
        for attempt in range(CLOSE_RESTARTS + 1):
            if self._finish():
                break
            if attempt < CLOSE_RESTARTS:
                self._restart()
        self._close_pipes()
        left = self._queued
        if left:
            self._queue.clear()
            self._chunks.clear()
            self._chunk_rows = 0
            self._sent = _Sent()
            self._lose(left, f"{left} rows could not be written before close")
        with self._count_lock:
            self._base = _add(self._base, self._current)
            self._current = ZERO
        self.store.close()

    def _finish(self) -> bool:
        """Send what is left and close the writer's input; True when it acknowledged all."""
        sent = self._read_acks() and self._send_waiting()
        child = self._child
        if child is not None and child.stdin is not None:
            with contextlib.suppress(OSError):
                child.stdin.close()
        if child is not None:
            child.wait()
        self._read_leftover_acks()
        clean = sent and child is not None and child.returncode == 0 and not self._sent.rows
        if clean:
            self._close_pipes()
        return clean and not self._queued


def open_prediction_log(
    db_path: Path, *, tolerance: float, interval: float = 0.05
) -> PredictionLog:
    """The serving process's prediction log, started: the writer `[log] writer` names
    (a thread of this process, or a process of its own)."""
    settings = _workspace_settings(db_path)
    kind = ProcessLog if settings.writer == "process" else PredictionLog
    return kind(db_path, tolerance=tolerance, interval=interval, settings=settings).start()


# -- the writer process ------------------------------------------------------------------


class _Writer:
    """The child's side: frames in, a PredictionLog's flushes, acknowledgements out."""

    def __init__(self, plog: PredictionLog, fd_in: int, fd_out: int) -> None:
        self.plog = plog
        self.fd_in = fd_in
        self.fd_out = fd_out
        self.received = 0  # units taken off the pipe (records and chunks)
        self.said: tuple[int, LogStats, int] | None = None
        self.flush_asked = 0  # the last `flush` the serving process asked for
        self.flushed = 0  # the last one done
        self.resolved: tuple[int, LogStats] = (0, ZERO)  # at the last time nothing waited

    def run(self) -> None:
        plog, buffer, ended = self.plog, bytearray(), False
        next_flush = time.monotonic() + plog.interval
        while not ended:
            wait = max(0.0, next_flush - time.monotonic())
            if select.select([self.fd_in], [], [], wait)[0]:
                data = os.read(self.fd_in, 1 << 20)
                ended = not data
                buffer += data
                for kind, payload in _frames(buffer):
                    if kind == FLUSH:
                        self.flush_asked = pickle.loads(payload)
                    else:
                        self.take(kind, read_rows(payload))
            due = ended or self.flush_asked > self.flushed or time.monotonic() >= next_flush
            if due or plog._queued >= plog.batch:
                asked = self.flush_asked
                plog.flush()
                self.flushed = asked
                next_flush = time.monotonic() + plog.interval
                if time.monotonic() >= plog._next_prune:
                    plog.prune()
                self.say()
        plog.close()  # flushes (busy: retried), counts what is left as dropped
        self.say()

    def take(self, kind: bytes, units: _Units) -> None:
        self.received += _count(units)
        if kind == REPLAY:
            units = self.not_yet_logged(units)
        chunks, records = units
        for chunk in chunks:
            self.plog.submit_chunk(chunk)
        if records:
            self.plog.submit_many(records)

    def not_yet_logged(self, units: _Units) -> _Units:
        """Of the rows a dead writer left, those it did not write or quarantine (by id);
        what it did is counted here, as it could not say so."""
        done = {"written": 0, "quarantined": 0}
        with self.plog.store.read() as tx:

            def new(pid: str, rows: int) -> bool:
                if tx.feedback.is_logged(pid):
                    done["written"] += rows
                elif tx.feedback.quarantine_reason(pid) is not None:
                    done["quarantined"] += rows
                else:
                    return True
                return False

            chunks = [c for c in units[0] if new(c.prefix + "00000", c.rows)]
            records = [r for r in units[1] if new(r.pid, 1)]
        plog = self.plog
        with plog._count_lock:
            plog.written += done["written"]
            plog.quarantined += done["quarantined"]
            plog.dropped += done["quarantined"]
        return chunks, records

    def say(self) -> None:
        """Acknowledge what is resolved: everything received, once nothing waits here.

        While rows wait (a busy store), the counters stay those of the last acknowledgement,
        so that the serving process, which still counts those rows as queued, never counts
        one twice (written + dropped + queued = submitted); only the error is news.
        """
        plog = self.plog
        stats = plog.stats()
        if not plog._queued:
            self.resolved = (self.received, stats)
        resolved, counted = self.resolved
        now = (resolved, replace(counted, last_error=stats.last_error), self.flushed)
        if now != self.said:
            _write_all(self.fd_out, _frame(ACK, now))
            self.said = now


def main(argv: list[str]) -> int:
    """`python -m engine.serving.log_process DB TOLERANCE INTERVAL BATCH`: the writer."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # ends when its input closes, not before
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format=f"%(asctime)s %(levelname)s beast log writer {os.getpid()}: %(message)s",
    )
    db_path, tolerance, interval, batch = (
        Path(argv[0]),
        float(argv[1]),
        float(argv[2]),
        int(argv[3]),
    )
    raw = os.environ.get(SETTINGS_ENV)
    settings = LogSettings(**json.loads(raw)) if raw else None
    plog = PredictionLog(
        db_path, tolerance=tolerance, interval=interval, batch=batch, settings=settings
    )
    plog._next_prune = time.monotonic() + 60.0  # as `start` does: not at once
    # The acknowledgements get a descriptor of their own; fd 1 becomes stderr, so nothing a
    # library prints can corrupt the frames.
    fd_in, fd_out = sys.stdin.fileno(), os.dup(sys.stdout.fileno())
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    _Writer(plog, fd_in, fd_out).run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
