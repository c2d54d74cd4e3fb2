"""The replicas in SQL both backends speak: the `replicas` table (migration 0011)."""

from __future__ import annotations

from typing import Any

from engine.store.replicas import Replica
from engine.store.sql.conn import Conn

_COLUMNS = "id, host, pid, address, started_at, seen_at, leader_since"


class SqlReplicas:
    """engine.store.replicas.ReplicaRepo over one transaction."""

    def __init__(self, conn: Conn) -> None:
        self.conn = conn

    def announce(self, replica: Replica) -> None:
        self.conn.execute(
            f"INSERT INTO replicas ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, NULL)"
            " ON CONFLICT (id) DO UPDATE SET host = excluded.host, pid = excluded.pid,"
            " address = excluded.address, started_at = excluded.started_at,"
            " seen_at = excluded.seen_at, leader_since = NULL",
            (
                replica.id,
                replica.host,
                replica.pid,
                replica.address,
                replica.started_at,
                replica.seen_at,
            ),
        )

    def heartbeat(self, replica_id: str, at: str, *, leading: bool) -> None:
        if leading:
            # A leader that died keeps its leader_since: the one that took over clears it.
            self.conn.execute(
                "UPDATE replicas SET leader_since = NULL"
                " WHERE id != ? AND leader_since IS NOT NULL",
                (replica_id,),
            )
            self.conn.execute(
                "UPDATE replicas SET seen_at = ?, leader_since = coalesce(leader_since, ?)"
                " WHERE id = ?",
                (at, at, replica_id),
            )
        else:
            self.conn.execute(
                "UPDATE replicas SET seen_at = ?, leader_since = NULL WHERE id = ?",
                (at, replica_id),
            )

    def leave(self, replica_id: str) -> None:
        self.conn.execute("DELETE FROM replicas WHERE id = ?", (replica_id,))

    def prune(self, seen_before: str) -> int:
        cursor = self.conn.execute("DELETE FROM replicas WHERE seen_at < ?", (seen_before,))
        return int(cursor.rowcount)

    def all(self) -> list[Replica]:
        rows = self.conn.execute(
            f"SELECT {_COLUMNS} FROM replicas"
            " ORDER BY CASE WHEN leader_since IS NULL THEN 1 ELSE 0 END, id"
        ).fetchall()
        return [_replica(row) for row in rows]

    def get(self, replica_id: str) -> Replica | None:
        row = self.conn.execute(
            f"SELECT {_COLUMNS} FROM replicas WHERE id = ?", (replica_id,)
        ).fetchone()
        return None if row is None else _replica(row)


def _replica(row: Any) -> Replica:
    rid, host, pid, address, started, seen, leader = row
    return Replica(
        str(rid),
        str(host),
        int(pid),
        None if address is None else str(address),
        str(started),
        str(seen),
        None if leader is None else str(leader),
    )
