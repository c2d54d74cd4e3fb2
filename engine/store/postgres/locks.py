"""The advisory lock keys of this schema (any bigint, fixed here so every module agrees)."""

from __future__ import annotations

WRITE_LOCK = 0x6265_6173_7401  # "beast" 1: the writers' lock (connection.PostgresStore.write)
MIGRATE_LOCK = 0x6265_6173_7402  # "beast" 2: one migrator at a time
LEADER_LOCK = 0x6265_6173_7403  # "beast" 3: the leader's, held on a connection of its own
PRUNE_LOCK = 0x6265_6173_7410  # "beast" 0x10: one replica's log writer prunes at a time
