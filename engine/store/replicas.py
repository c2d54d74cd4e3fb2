"""Replicas: the engine processes serving one state store, which of them leads, and how a
change made by any of them reaches the others.

Several `beast engine` processes may share one PostgreSQL database (one per host, behind a
load balancer). Every one serves predictions; exactly one at a time — the leader — runs the
periodic work that must not run twice (alerts and auto-pull, the retraining scheduler, the
reaping of lost jobs). On SQLite the one engine of a workspace always leads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class Replica:
    """One engine process as the `replicas` table records it."""

    id: str  # host/pid
    host: str
    pid: int
    address: str | None  # its HTTP API, host:port
    started_at: str
    seen_at: str  # renewed by its heartbeat
    leader_since: str | None  # set while it leads

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "host": self.host,
            "pid": self.pid,
            "address": self.address,
            "started_at": self.started_at,
            "seen_at": self.seen_at,
            "leader_since": self.leader_since,
        }


class ReplicaRepo(Protocol):
    """The `replicas` table."""

    def announce(self, replica: Replica) -> None:
        """Record a replica starting (a restarted one with the same id starts afresh)."""
        ...

    def heartbeat(self, replica_id: str, at: str, *, leading: bool) -> None:
        """Renew `seen_at`; a replica that leads now is the only one with `leader_since`."""
        ...

    def leave(self, replica_id: str) -> None:
        """Forget a replica that stopped cleanly."""
        ...

    def prune(self, seen_before: str) -> int:
        """Forget replicas not seen since `seen_before` (killed, never to come back)."""
        ...

    def all(self) -> list[Replica]:
        """Every recorded replica, the leader first, then by id."""
        ...

    def get(self, replica_id: str) -> Replica | None: ...


class ArtifactBytesRepo(Protocol):
    """The validated bytes of registered model files, by sha256, where every replica reaches
    them (PostgreSQL: the `artifact_bytes` table). On SQLite there is one workspace and its
    models/ holds the files: nothing is kept and nothing can be fetched."""

    keeps: bool  # whether this backend keeps bytes at all (read a file for it only then)

    def put(self, sha256: str, data: bytes) -> None:
        """Keep the bytes of an artifact (its row must exist; a second put is a no-op)."""
        ...

    def get(self, sha256: str) -> bytes | None:
        """The kept bytes, or None."""
        ...

    def has(self, sha256: str) -> bool: ...


class Leadership(Protocol):
    """Who runs the work that must run once: a lock the database holds for one process.

    PostgreSQL: a session advisory lock on a connection of its own (not the pool's), so the
    server releases it the moment that connection drops (the process died, the network
    went); SQLite: one engine per workspace, always the leader.
    """

    def try_lead(self) -> bool:
        """Take the leadership if it is free, or check it is still held: True while it is.
        Never raises for an unreachable database: it answers False (and retries next call)."""
        ...

    def release(self) -> None:
        """Give the leadership up (another replica takes it at its next try)."""
        ...


class ChangeFeed(Protocol):
    """Word that another process changed the deployment state (PostgreSQL: LISTEN/NOTIFY on
    a connection of its own; SQLite: none, the router's poll of its change counter is it)."""

    def wait(self, timeout_s: float) -> bool:
        """Block up to `timeout_s`: True when a change was notified meanwhile."""
        ...

    def close(self) -> None: ...


STALE_S = 10.0  # a replica not seen for this long is taken for gone (it beats every 2 s)


def live_leader(replicas: list[Replica], now_ms: int) -> Replica | None:
    """The replica that leads, if it is still seen (a leader killed before anyone took over
    keeps its `leader_since` until then: it is not named as leading)."""
    for replica in replicas:
        if replica.leader_since is not None and now_ms - _ms(replica.seen_at) <= STALE_S * 1000:
            return replica
    return None


def _ms(stamp: str) -> int:
    from datetime import datetime  # only where a leader is looked for

    return int(datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() * 1000)
