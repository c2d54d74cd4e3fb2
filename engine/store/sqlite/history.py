"""History in SQLite: the shared SQL (engine.store.sql.history); SQLite writes the export's
JSON itself."""

from __future__ import annotations

from engine.store.sql.history import SqlHistory

# SQLite builds each row's JSON itself: rewriting the export after every change stays cheap
# with thousands of rows (Python dataclass round-trips made it 0.3 s at 1,000 rows).
_EXPORT_SQL = """
SELECT json_object(
    'id', id, 'line', line, 'at', at, 'actor', actor, 'action', action, 'version', version,
    'experiment', experiment, 'from_state', json(from_state), 'to_state', json(to_state),
    'undoes', json(undoes), 'note', note,
    'forced', json(CASE WHEN forced THEN 'true' ELSE 'false' END),
    'evidence', json(evidence)
) FROM history ORDER BY id
"""


class SqliteHistory(SqlHistory):
    """engine.store.history.HistoryRepo over one SQLite transaction."""

    export_sql = _EXPORT_SQL
