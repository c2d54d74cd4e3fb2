"""Who is acting: the OS user, and the SSH client when there is one."""

from __future__ import annotations

import getpass
import os


def current_actor() -> str:
    """`alice` locally, `alice via 203.0.113.5` over SSH (the seed's history wants who)."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers)
        user = f"uid:{os.getuid()}"
    ssh = os.environ.get("SSH_CLIENT") or os.environ.get("SSH_CONNECTION")
    if ssh:
        return f"{user} via {ssh.split()[0]}"
    return user
