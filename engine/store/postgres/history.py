"""History in PostgreSQL: the shared SQL (engine.store.sql.history); PostgreSQL writes the
export's JSON itself."""

from __future__ import annotations

from engine.store.sql.history import SqlHistory

# row_to_json of the stored columns, the JSON ones cast to JSON (which keeps their text as
# stored): 46 ms for 5,000 rows, as SQLite's json_object (50 ms), where parsing and dumping
# each row in Python took 418 ms (the export is rewritten after every change). JSONB would
# reorder the keys and took 106 ms. Same rows as SQLite's export, parsed; the nested objects
# keep the stored text's spacing.
_EXPORT_SQL = """
SELECT row_to_json(h)::text FROM (
    SELECT id, line, at, actor, action, version, experiment,
        CAST(from_state AS JSON) AS from_state, CAST(to_state AS JSON) AS to_state,
        CAST(undoes AS JSON) AS undoes, note, forced <> 0 AS forced,
        CAST(evidence AS JSON) AS evidence
    FROM history ORDER BY id
) AS h
"""


class PostgresHistory(SqlHistory):
    """engine.store.history.HistoryRepo over one PostgreSQL transaction."""

    export_sql = _EXPORT_SQL
