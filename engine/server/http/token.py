"""The API token: `$BEAST_API_TOKEN`, else `<workspace>/api-token` (created 0600, never logged).

Mutations always need it; every request does when the engine listens beyond loopback or
`[api] require_token = "always"` (engine.server.http.guard decides which routes, this module only
finds or creates the token).
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from engine.core.errors import BeastError
from engine.core.workspace import Workspace

TOKEN_ENV = "BEAST_API_TOKEN"
TOKEN_FILE = "api-token"


def token_path(workspace: Workspace) -> Path:
    """Where the workspace keeps its token."""
    return workspace.root / TOKEN_FILE


def configured_token(workspace: Workspace) -> str | None:
    """`$BEAST_API_TOKEN`, else `<workspace>/api-token`, else None. Never logged."""
    from_env = os.environ.get(TOKEN_ENV)
    if from_env is not None:
        if not from_env.strip():
            raise BeastError(f"{TOKEN_ENV} is set but empty: unset it or give it a token")
        return from_env.strip()
    path = token_path(workspace)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise BeastError(f"cannot read the API token {path}: {exc.strerror or exc}") from None
    with os.fdopen(fd, encoding="utf-8") as handle:
        mode = os.fstat(handle.fileno()).st_mode
        if mode & 0o077:
            raise BeastError(
                f"the API token {path} is readable by others (mode {mode & 0o777:o}): "
                f"run `chmod 600 {path}`"
            )
        text = handle.read().strip()
    if not text:
        raise BeastError(f"the API token {path} is empty: delete it and start the engine again")
    return text


def ensure_token(workspace: Workspace) -> tuple[str, bool]:
    """The configured token, or a new one written to `<workspace>/api-token` (mode 0600).

    Returns the token and whether it was created now. `O_EXCL` makes two engines starting
    at once agree on one token.
    """
    existing = configured_token(workspace)
    if existing is not None:
        return existing, False
    path = token_path(workspace)
    token = secrets.token_urlsafe(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        again = configured_token(workspace)
        if again is None:  # pragma: no cover - deleted between the two opens
            raise BeastError(f"{path} vanished while it was being created; retry") from None
        return again, False
    except OSError as exc:
        raise BeastError(f"cannot create the API token {path}: {exc.strerror or exc}") from None
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(token + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    return token, True
