"""The SQLite backend (the embedded default): one file in WAL mode, opened the same way by
every process; the numbered migrations; SQLite's backup API; and the repositories of
engine.store.base, each one module of SQL.
"""
