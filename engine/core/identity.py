"""Who is acting: the OS user, and the SSH client when there is one."""

from __future__ import annotations

import getpass
import os

from engine.core import text


def current_actor() -> str:
    """`alice` locally, `alice via 203.0.113.5` over SSH (the seed's history wants who).

    Both come from the environment (`getpass` reads `$LOGNAME`/`$USER` first), so they are
    escaped and capped rather than trusted: the actor is never refused — a command must run
    whoever runs it — but it can neither forge a history row nor drive a terminal.
    """
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers)
        user = f"uid:{os.getuid()}"
    ssh = os.environ.get("SSH_CLIENT") or os.environ.get("SSH_CONNECTION")
    actor = f"{user} via {ssh.split()[0]}" if ssh and ssh.split() else user
    return text.escape(actor)[: text.MAX_NAME_CHARS]
