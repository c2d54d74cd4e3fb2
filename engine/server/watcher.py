"""The model-directory watcher: files dropped into models/ are validated and registered once.

File events (watchfiles) are hints, never the truth: the directory is rescanned in full when
the watcher starts, every `rescan_every_s`, and the files an event names are looked at. A
file is registered only when it has stopped changing — two reads `settle_s` apart agree on
size, mtime and sha256 — and it is judged in a validator child (a warm one, so a new
artifact is visible in well under a second). A verdict of "invalid" is recorded only for a
file that has been unchanged for `quiet_s`: a file written slowly is half a model for a
while, and that must never be recorded as a rejection. Registration is by content hash, so
50 rewrites of one file register one version. Temp and dot files are not models yet.

The directory itself may go away and come back: the watch is re-armed on the new one. When
inotify cannot be used (no instances or watches left, or none at all) the watcher falls back
to polling, with a warning; the periodic rescan catches anything either way missed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import watchfiles

from engine.core.background import BackgroundThread
from engine.core.errors import ArtifactRejected, BeastError, StateBusy
from engine.core.workspace import Workspace
from engine.facade import Engine
from engine.registry import artifacts
from engine.registry.warm_validator import WarmValidator

log = logging.getLogger("beast.watcher")

ACTOR = "beast-engine (watcher)"
# Names editors, downloaders and atomic writers use while a file is not finished.
TEMP_SUFFIXES = (".tmp", ".temp", ".part", ".partial", ".crdownload", ".swp", ".swx", "~")
# Not models: a retraining run's sidecar describes one.
OTHER_SUFFIXES = (".lineage",)
_MAX_REMEMBERED_VERDICTS = 256


@dataclass(frozen=True)
class WatchOptions:
    """How the watcher looks; the defaults are the daemon's."""

    rescan_every_s: float = 30.0
    settle_s: float = 0.05  # two reads this far apart must agree before a file is judged
    quiet_s: float = 2.0  # an invalid verdict counts only for a file unchanged this long
    tick_s: float = 0.1  # how often files waiting to settle are looked at again
    debounce_ms: int = 50
    step_ms: int = 20
    force_polling: bool = False
    poll_delay_ms: int = 300


@dataclass(frozen=True)
class Fingerprint:
    """What `stat` says about a file's content: any write changes it."""

    device: int
    inode: int
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, path: Path) -> Fingerprint | None:
        try:
            st = path.stat()
        except OSError:
            return None
        if not stat.S_ISREG(st.st_mode):
            return None
        return cls(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


class _WatchFailed(Exception):
    """The file watch itself failed (not the work done on what it reported)."""

    def __init__(self, error: OSError) -> None:
        super().__init__(str(error))
        self.error = error


class Unsettled(Exception):
    """A file judged invalid that may still be being written: look again once it is quiet."""


def is_ignored(path: Path) -> bool:
    """Dot files and temp files are never models; nor are retraining sidecars."""
    name = path.name
    return name.startswith(".") or name.endswith(TEMP_SUFFIXES + OTHER_SUFFIXES)


class ModelWatcher(BackgroundThread):
    """Watches a workspace's models/ in a thread and registers what settles there."""

    thread_name = "beast-watcher"

    def __init__(self, workspace: Workspace, options: WatchOptions | None = None) -> None:
        super().__init__()
        self.workspace = workspace
        self.options = options or WatchOptions()
        self.polling = self.options.force_polling
        self._engine = Engine(workspace, actor=ACTOR)
        self._validator = WarmValidator()
        self._decided: dict[Path, Fingerprint] = {}  # outcome final for this content
        self._seen: dict[Path, tuple[Fingerprint, float]] = {}  # first seen (monotonic)
        self._pending: dict[Path, float] = {}  # look again at (monotonic)
        self._known: dict[str, str] = {}  # sha256 -> registry status
        self._invalid: dict[str, artifacts.Validation] = {}  # sha256 -> verdict on those bytes
        self._next_rescan = 0.0

    # -- running ----------------------------------------------------------------------------

    def start(self) -> Self:
        """Warm the validator child first: it starts up while the thread arms its first watch."""
        self._validator.start()
        return super().start()

    def stop(self) -> None:
        """Join the thread, then close what it used: the validator child and the engine."""
        super().stop()
        self._validator.close()
        self._engine.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        models = self.workspace.models_dir
        log.info("watching %s%s", models, " (polling)" if self.polling else "")
        while not self._stop.is_set():
            try:
                if not models.is_dir():
                    self._forget_all()
                    self._stop.wait(self.options.tick_s * 5)
                    continue
                self._next_rescan = 0.0  # in full once the watch is armed: nothing slips between
                self._watch(models)
            except _WatchFailed as failed:
                if self._fall_back_to_polling(failed.error):
                    continue
                log.error("watching %s failed (%s); starting over", models, failed.error)
                self._stop.wait(1.0)
            except Exception:  # a bad moment (store busy, a race): never stop watching
                log.exception("watching %s failed; starting over", models)
                self._stop.wait(1.0)

    def _fall_back_to_polling(self, exc: OSError) -> bool:
        if isinstance(exc, FileNotFoundError):
            self._stop.wait(self.options.tick_s)
            return True  # models/ (or a folder in it) vanished while being armed: re-arm
        if self.polling:
            return False  # polling failing is a real error
        log.warning(
            "file events unavailable (%s): polling %s every %d ms instead "
            "(raise fs.inotify.max_user_instances / max_user_watches to get events back)",
            exc,
            self.workspace.models_dir,
            self.options.poll_delay_ms,
        )
        self.polling = True
        return True

    def _watch(self, models: Path) -> None:
        """Follow events until models/ is replaced or removed (then the caller re-arms)."""
        armed = _dir_identity(models)
        for changes in self._events(models):
            touched = {Path(p) for _, p in changes}
            if armed is None or _dir_identity(models) != armed:
                log.info("%s was removed or replaced; watching it again", models)
                return
            self.consider(touched)
            self.consider(p for p, when in list(self._pending.items()) if when <= _now())
            if _now() >= self._next_rescan:
                self.rescan()

    def _events(self, models: Path) -> Iterator[set[tuple[watchfiles.Change, str]]]:
        """watchfiles' batches (an empty one every tick); its own failures as `_WatchFailed`.

        Only errors of the watch itself (inotify_init, add_watch) may switch to polling, never
        an error of the work done between two batches.
        """
        try:
            events = watchfiles.watch(
                models,
                watch_filter=None,
                debounce=self.options.debounce_ms,
                step=self.options.step_ms,
                rust_timeout=max(1, int(self.options.tick_s * 1000)),
                yield_on_timeout=True,
                stop_event=self._stop,
                force_polling=self.polling,
                poll_delay_ms=self.options.poll_delay_ms,
            )
        except OSError as exc:
            raise _WatchFailed(exc) from exc
        try:
            while True:
                try:
                    batch = next(events)
                except StopIteration:
                    return
                except OSError as exc:
                    raise _WatchFailed(exc) from exc
                yield batch
        finally:
            events.close()  # releases the inotify instance now, not at garbage collection

    # -- deciding ---------------------------------------------------------------------------

    def rescan(self) -> None:
        """Look at every file in models/ (the truth events only hint at)."""
        models = self.workspace.models_dir
        self._next_rescan = _now() + self.options.rescan_every_s
        self._known = {a.sha256: a.status for a in self._engine.models().artifacts}
        files = [p for p in models.rglob("*") if p.is_file()] if models.is_dir() else []
        present = set(files)
        for gone in [p for p in self._decided if p not in present]:
            self._forget(gone)
        self.consider(files)

    def consider(self, paths: Iterable[Path]) -> None:
        """Judge the given files that settled; files still changing are looked at later."""
        fresh = []
        for path in paths:
            if is_ignored(path):
                continue
            fingerprint = Fingerprint.of(path)
            if fingerprint is None:
                self._forget(path)
            elif self._decided.get(path) != fingerprint:
                fresh.append(path)
        if fresh:
            log.debug("looking at %s", ", ".join(p.name for p in fresh))
        for path, sha in self._settled(fresh):
            self._decide(path, sha)

    def _settled(self, paths: list[Path]) -> list[tuple[Path, str | None]]:
        """The files whose size, mtime and sha256 agree across two reads `settle_s` apart."""
        if not paths:
            return []
        first = {p: self._read(p) for p in paths}
        self._stop.wait(self.options.settle_s)
        out = []
        for path, before in first.items():
            after = self._read(path)
            if before is not None and before == after:
                out.append((path, after[1]))
            elif after is not None:
                self._pending[path] = _now() + self.options.tick_s  # still moving
        return out

    def _read(self, path: Path) -> tuple[Fingerprint, str | None] | None:
        fingerprint = Fingerprint.of(path)
        if fingerprint is None:
            return None
        if fingerprint.size > self._engine.config.registry.max_artifact_bytes:
            sha = None  # refused by its size before a byte is read
        else:
            try:
                sha = artifacts.sha256_of(path)
            except OSError:
                return None
        seen = self._seen.get(path)
        if seen is None or seen[0] != fingerprint:
            self._seen[path] = (fingerprint, _now())
        return fingerprint, sha

    def _decide(self, path: Path, sha: str | None) -> None:
        self._pending.pop(path, None)
        fingerprint = self._seen[path][0]
        relative = _relative(path, self.workspace.models_dir)
        if sha is not None and sha in self._known:
            self._decided[path] = fingerprint  # registered (or rejected) by its bytes already
            return
        try:
            registration = self._engine.register(path, validator=self._validate)
        except Unsettled as exc:
            self._pending[path] = self._seen[path][1] + self.options.quiet_s
            log.debug("%s is not a model yet (%s); looking again when it is quiet", relative, exc)
            return
        except StateBusy:  # nothing was decided: looked at again until the store is free
            self._pending[path] = _now() + self.options.tick_s
            log.debug("%s waits for a busy store", relative)
            return
        except ArtifactRejected as exc:
            log.warning("rejected %s: %s", relative, _without_name(str(exc), path))
            if sha is not None and sha in self._invalid:  # a verdict on these bytes, recorded
                self._known[sha] = "rejected"
        except BeastError as exc:
            log.warning("not registered %s: %s", relative, exc)
        except OSError as exc:  # gone or unreadable between the reads and now
            log.info("skipped %s: %s", relative, exc.strerror or exc)
            return
        else:
            artifact, ref = registration.artifact, registration.version
            name = f"{artifact.line}/{ref.name}" if ref else str(artifact.line)
            log.info(
                "%s %s as %s (sha256 %s…, %s features)",
                "registered" if registration.new else "already registered",
                relative,
                name,
                artifact.sha256[:12],
                artifact.n_features,
            )
            self._known[artifact.sha256] = "valid"
        self._decided[path] = fingerprint

    def _validate(
        self,
        path: Path,
        fmt: str,
        timeout_s: float,
        *,
        expected_sha256: str | None = None,
        compile_into: Path | None = None,
    ) -> artifacts.Validation:
        """The warm child's verdict; an invalid one only once the file has been quiet."""
        verdict = self._invalid.get(expected_sha256 or "")
        if verdict is None:
            verdict = self._validator(
                path, fmt, timeout_s, expected_sha256=expected_sha256, compile_into=compile_into
            )
        if verdict.ok:
            return verdict
        if expected_sha256 is not None and verdict.sha256 == expected_sha256:
            self._remember_invalid(expected_sha256, verdict)
        if not self._quiet(path):
            raise Unsettled(verdict.reason or "invalid")
        return verdict

    def _quiet(self, path: Path) -> bool:
        """Unchanged for `quiet_s`: by its mtime, or since this watcher first saw it so."""
        fingerprint = Fingerprint.of(path)
        seen = self._seen.get(path)
        if fingerprint is None or seen is None or seen[0] != fingerprint:
            return False
        untouched_s = time.time() - fingerprint.mtime_ns / 1e9
        return max(untouched_s, _now() - seen[1]) >= self.options.quiet_s

    def _remember_invalid(self, sha: str, verdict: artifacts.Validation) -> None:
        if len(self._invalid) >= _MAX_REMEMBERED_VERDICTS:
            self._invalid.pop(next(iter(self._invalid)))
        self._invalid[sha] = verdict

    def _forget(self, path: Path) -> None:
        for table in (self._decided, self._seen, self._pending):
            table.pop(path, None)

    def _forget_all(self) -> None:
        for table in (self._decided, self._seen, self._pending):
            table.clear()


def _dir_identity(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _relative(path: Path, models: Path) -> str:
    with contextlib.suppress(ValueError):
        return path.relative_to(models).as_posix()
    return str(path)


def _without_name(message: str, path: Path) -> str:
    """`rejected x.json: x.json rejected: why` reads better as `rejected x.json: why`."""
    for prefix in (f"{path.name} rejected: ", f"{path.name}: "):
        if message.startswith(prefix):
            return message[len(prefix) :]
    return message


def _now() -> float:
    return time.monotonic()
