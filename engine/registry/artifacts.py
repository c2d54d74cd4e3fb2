"""Model files before they are trusted: where they are, how big, what bytes, do they load.

Paths are checked by resolved location (symlinks followed) against `models/`, never by string
filters. Size is capped before a byte is parsed. Loading and a test prediction happen in a
child process with a timeout; its crash or hang rejects the file and nothing else.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from engine.core.errors import ArtifactRejected, BeastError

FORMATS = {".json": "json", ".ubj": "ubj"}
MAX_PATH_CHARS = 4096
_CHUNK = 1 << 20


@dataclass(frozen=True)
class CheckedFile:
    """A file inside models/ that passed the cheap checks (no parsing yet)."""

    path: Path
    relative: str
    size: int
    format: str


@dataclass(frozen=True)
class Validation:
    ok: bool
    reason: str | None = None
    n_features: int | None = None
    feature_names: tuple[str, ...] | None = None
    xgboost_version: str | None = None
    sha256: str | None = None  # of the bytes the child judged, when it got as far as reading
    objective: str | None = None  # learner.objective.name, when the model saved it


def resolve_in_models(raw: str | os.PathLike[str], models_dir: Path) -> Path:
    """The resolved path of a user-given file, refused unless it lies inside models/."""
    text = os.fspath(raw)
    if "\x00" in text:
        raise BeastError("refused path: it contains a NUL byte")
    if len(text) > MAX_PATH_CHARS:
        raise BeastError(f"refused path: {len(text)} characters is longer than {MAX_PATH_CHARS}")
    if "://" in text:
        raise BeastError(f"refused path {text[:80]!r}: give a file path, not a URL")
    candidate = Path(text).expanduser()
    try:
        resolved = candidate.resolve(strict=True)
    except FileNotFoundError:
        raise BeastError(f"no such file: {text}") from None
    except (OSError, RuntimeError) as exc:  # name too long, symlink loop
        raise BeastError(f"refused path {text[:80]!r}: {exc}") from None
    root = models_dir.resolve()
    if not resolved.is_relative_to(root):
        raise BeastError(
            f"refused path {text[:200]}: it resolves to {resolved}, outside {root} "
            "(copy the model into the workspace's models/ first)"
        )
    return resolved


def check_file(resolved: Path, models_dir: Path, max_bytes: int) -> CheckedFile:
    """Cheap checks in order: a regular file, a known extension, under the size cap."""
    if not resolved.is_file():
        raise ArtifactRejected(f"{resolved.name}: not a regular file")
    fmt = FORMATS.get(resolved.suffix.lower())
    if fmt is None:
        raise ArtifactRejected(
            f"{resolved.name}: unsupported extension {resolved.suffix or '(none)'} "
            "(XGBoost .json or .ubj only; pickle is never loaded)"
        )
    size = resolved.stat().st_size
    if size > max_bytes:
        raise ArtifactRejected(
            f"{resolved.name}: {_human(size)} is over the {_human(max_bytes)} cap "
            "(registry.max_artifact_mb)"
        )
    relative = resolved.relative_to(models_dir.resolve()).as_posix()
    return CheckedFile(resolved, relative, size, fmt)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def validated_bytes(path: Path, sha256: str) -> bytes:
    """The file's bytes, refused unless they still are the ones hashed and validated."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ArtifactRejected(f"{path.name}: cannot read it: {exc.strerror or exc}") from None
    if hashlib.sha256(data).hexdigest() != sha256:
        raise ArtifactRejected(
            f"{path.name}: the file changed while it was being registered; register it again "
            "once it is complete"
        )
    return data


class Validator(Protocol):
    """How `Engine.register` judges a file: `validate_in_child`, or a warm child's pool.

    `compile_into`: where the child compiles a valid model's trees, after its verdict and
    without being waited for (engine.registry.compiled); None: not compiled.
    """

    def __call__(
        self,
        path: Path,
        fmt: str,
        timeout_s: float,
        *,
        expected_sha256: str | None = None,
        compile_into: Path | None = None,
    ) -> Validation: ...


def child_command(*args: str) -> tuple[list[str], dict[str, str]]:
    """The validator child's argv and environment (one OpenMP thread, this project importable)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="passive")
    project_root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [project_root, env.get("PYTHONPATH")]))
    return [sys.executable, "-m", "engine.registry.validator_child", *args], env


def start_child(
    *args: str, stdin: int = subprocess.DEVNULL, stderr: int = subprocess.PIPE
) -> subprocess.Popen[bytes]:
    """Start a validator child in its own process group (a timeout kills all of it)."""
    command, env = child_command(*args)
    return subprocess.Popen(
        command,
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=stderr,
        env=env,
        start_new_session=True,
    )


def validate_in_child(
    path: Path,
    fmt: str,
    timeout_s: float,
    *,
    expected_sha256: str | None = None,
    compile_into: Path | None = None,
) -> Validation:
    """Load the model and predict two rows in a child process; never raises for bad files.

    With `expected_sha256` (the digest the caller recorded), a file whose bytes changed
    between hashing and validation is refused: the verdict must be about the hashed bytes.
    """
    proc = start_child(str(path), fmt, *([str(compile_into)] if compile_into else []))
    return judge_child(proc, timeout_s, expected_sha256=expected_sha256)


def judge_child(
    proc: subprocess.Popen[bytes], timeout_s: float, *, expected_sha256: str | None = None
) -> Validation:
    """Wait for a one-shot validator child's verdict (its exit, then its one JSON line)."""
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        return Validation(False, f"validation timed out after {timeout_s:g}s")
    if proc.returncode < 0:
        return verdict({"signal": -proc.returncode}, expected_sha256)
    if proc.returncode != 0:
        last = (err.decode("utf-8", "replace").strip().splitlines() or ["no output"])[-1]
        return verdict({"exit": proc.returncode, "error": last}, expected_sha256)
    try:
        result = json.loads(out.decode("utf-8").strip().splitlines()[-1])
    except (ValueError, IndexError):
        result = None
    return verdict(result, expected_sha256)


def verdict(result: object, expected_sha256: str | None) -> Validation:
    """A validator's JSON answer as a Validation (it may be a crash or failure report)."""
    if not isinstance(result, dict):
        return Validation(False, "validator gave no readable answer")
    if "signal" in result:
        return Validation(
            False,
            f"the model crashed XGBoost ({_signal_name(int(result['signal']))}) "
            "while loading or predicting",
        )
    if "exit" in result:
        last = str(result.get("error") or "no output")
        return Validation(False, f"validator failed (exit {result['exit']}): {last[:300]}")
    judged = result.get("sha256")
    if expected_sha256 is not None and judged != expected_sha256:
        return Validation(
            False,
            "the file changed while it was being validated; register it again once it is complete",
            sha256=judged,
        )
    if not result.get("ok"):
        return Validation(False, str(result.get("reason") or "invalid model"), sha256=judged)
    names = result.get("feature_names")
    return Validation(
        ok=True,
        n_features=int(result["n_features"]),
        feature_names=tuple(names) if names else None,
        xgboost_version=result.get("xgboost_version"),
        sha256=judged,
        objective=result.get("objective") if isinstance(result.get("objective"), str) else None,
    )


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:  # real-time and other unnamed signals
        return f"signal {number}"


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL a child's whole process group and reap it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()


def _human(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"
