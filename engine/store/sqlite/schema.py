"""Numbered schema migrations. Applied by `store.migrate` through sqlite-utils' Migrations.

Each entry is (name, SQL). Names are numbered so that order is visible in the file that records
them (`_sqlite_migrations`). Never edit a released migration: add the next number. (So the
module names in a migration's comments are those of the release that wrote it: `engine.jobs`
is now engine/retrain/jobs.py for the rules and engine/store/sqlite/jobs.py for the SQL.)

Invariants (DESIGN.md §5) that SQLite can enforce live here:
- one row of `line_state` per model line holds the production version NOT NULL and at most one
  candidate; production traffic is derived (10000 − candidate_bp), so weights sum to 100% by
  construction;
- a partial UNIQUE index allows one running test per line;
- history is append-only (triggers refuse UPDATE and DELETE);
- a version can only name a valid artifact; a valid artifact cannot be demoted while named;
- (0002) versions and A/B test records are never deleted (history names them: a rollback to a
  deleted version would be impossible), and traffic is stored as whole basis points (an INTEGER
  column takes 2000.5 as REAL, and a CHECK on NULL passes).
"""

from __future__ import annotations


def _hex_int(column: str, start: int, offset: int = 0) -> str:
    """SQL for the integer value of 16 hex digits of `column` from `start` (1-based), less
    `offset` × 16**15: four lookups of four digits in `temp.hex4` (SQLite has no unhex
    before 3.41, nor a base-16 CAST; digit by digit was 3.5x slower)."""
    terms = [
        f"((SELECT v FROM temp.hex4 WHERE k = substr({column}, {start + 4 * i}, 4))"
        f"{f' - {offset << 12}' if i == 0 and offset else ''}) * {65536 ** (3 - i)}"
        for i in range(4)
    ]
    return "(" + " + ".join(terms) + ")"


_PID_HI = _hex_int("pid", 1)  # engine.core.ids.key: the id's first 64 bits
_PID_LO = _hex_int("pid", 17, offset=8)  # and its last 64 less the variant's top bit

MIGRATIONS: list[tuple[str, str]] = [
    (
        "0001_initial",
        """
CREATE TABLE model_lines (
    name TEXT PRIMARY KEY CHECK (length(name) BETWEEN 1 AND 100),
    n_features INTEGER NOT NULL CHECK (n_features >= 1),
    feature_names TEXT,
    created_at TEXT NOT NULL
);

CREATE TABLE artifacts (
    id INTEGER PRIMARY KEY,
    sha256 TEXT NOT NULL UNIQUE CHECK (length(sha256) = 64),
    path TEXT NOT NULL,
    size INTEGER NOT NULL CHECK (size >= 0),
    format TEXT CHECK (format IS NULL OR format IN ('json', 'ubj')),
    status TEXT NOT NULL CHECK (status IN ('valid', 'rejected')),
    reason TEXT,
    line TEXT REFERENCES model_lines(name),
    n_features INTEGER,
    feature_names TEXT,
    xgboost_version TEXT,
    registered_at TEXT NOT NULL,
    registered_by TEXT NOT NULL,
    CHECK ((status = 'valid') = (reason IS NULL)),
    CHECK (status = 'rejected' OR (line IS NOT NULL AND n_features IS NOT NULL))
);

CREATE TABLE versions (
    id INTEGER PRIMARY KEY,
    line TEXT NOT NULL REFERENCES model_lines(name),
    name TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    artifact_id INTEGER NOT NULL REFERENCES artifacts(id),
    kind TEXT NOT NULL CHECK (kind IN ('version', 'alias')),
    created_at TEXT NOT NULL,
    created_by TEXT NOT NULL,
    UNIQUE (line, name)
);

CREATE TRIGGER versions_name_valid_artifact BEFORE INSERT ON versions
WHEN (SELECT status FROM artifacts WHERE id = NEW.artifact_id) IS NOT 'valid'
  OR (SELECT line FROM artifacts WHERE id = NEW.artifact_id) IS NOT NEW.line
BEGIN
    SELECT RAISE(ABORT, 'a version must name a valid artifact of its own line');
END;

CREATE TRIGGER versions_immutable BEFORE UPDATE ON versions
BEGIN
    SELECT RAISE(ABORT, 'versions are immutable');
END;

CREATE TRIGGER artifacts_keep_named_valid BEFORE UPDATE OF status, line ON artifacts
WHEN OLD.status = 'valid' AND (NEW.status IS NOT 'valid' OR NEW.line IS NOT OLD.line)
  AND EXISTS (SELECT 1 FROM versions WHERE artifact_id = OLD.id)
BEGIN
    SELECT RAISE(ABORT, 'a named artifact cannot be rejected or moved');
END;

CREATE TABLE experiments (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 100),
    line TEXT NOT NULL REFERENCES model_lines(name),
    control_id INTEGER NOT NULL REFERENCES versions(id),
    candidate_id INTEGER NOT NULL REFERENCES versions(id),
    traffic_bp INTEGER NOT NULL CHECK (traffic_bp BETWEEN 100 AND 9900),
    status TEXT NOT NULL CHECK (status IN ('running', 'promoted', 'aborted')),
    started_at TEXT NOT NULL,
    started_by TEXT NOT NULL,
    ended_at TEXT,
    ended_by TEXT,
    end_reason TEXT,
    forced INTEGER NOT NULL DEFAULT 0 CHECK (forced IN (0, 1)),
    CHECK ((status = 'running') = (ended_at IS NULL)),
    CHECK (control_id != candidate_id)
);

CREATE UNIQUE INDEX experiments_one_running_per_line ON experiments(line)
WHERE status = 'running';

CREATE TRIGGER experiments_end_once BEFORE UPDATE ON experiments
WHEN OLD.status != 'running'
BEGIN
    SELECT RAISE(ABORT, 'an ended test cannot change');
END;

CREATE TABLE history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    line TEXT NOT NULL REFERENCES model_lines(name),
    at TEXT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL CHECK (action IN ('deploy', 'ab_start', 'promote', 'abort', 'rollback')),
    version TEXT,
    experiment TEXT,
    from_state TEXT NOT NULL CHECK (json_valid(from_state)),
    to_state TEXT NOT NULL CHECK (json_valid(to_state)),
    undoes TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(undoes)),
    note TEXT,
    forced INTEGER NOT NULL DEFAULT 0 CHECK (forced IN (0, 1))
);

CREATE INDEX history_line ON history(line, id);

CREATE TRIGGER history_append_only_update BEFORE UPDATE ON history
BEGIN
    SELECT RAISE(ABORT, 'history is append-only');
END;

CREATE TRIGGER history_append_only_delete BEFORE DELETE ON history
BEGIN
    SELECT RAISE(ABORT, 'history is append-only');
END;

CREATE TABLE line_state (
    line TEXT PRIMARY KEY REFERENCES model_lines(name),
    production_id INTEGER NOT NULL REFERENCES versions(id),
    production_since TEXT NOT NULL,
    production_by TEXT NOT NULL,
    candidate_id INTEGER REFERENCES versions(id),
    candidate_bp INTEGER NOT NULL DEFAULT 0,
    candidate_since TEXT,
    candidate_by TEXT,
    experiment_id INTEGER REFERENCES experiments(id),
    revision INTEGER NOT NULL REFERENCES history(id),
    CHECK (candidate_id IS NULL OR candidate_bp BETWEEN 100 AND 9900),
    CHECK (candidate_id IS NOT NULL OR candidate_bp = 0),
    CHECK ((candidate_id IS NULL) = (experiment_id IS NULL)),
    CHECK ((candidate_id IS NULL) = (candidate_since IS NULL)),
    CHECK (candidate_id IS NULL OR candidate_id != production_id)
);

CREATE TRIGGER line_state_arms_insert BEFORE INSERT ON line_state
WHEN (SELECT line FROM versions WHERE id = NEW.production_id) IS NOT NEW.line
  OR (NEW.candidate_id IS NOT NULL
      AND (SELECT line FROM versions WHERE id = NEW.candidate_id) IS NOT NEW.line)
  OR (NEW.experiment_id IS NOT NULL AND NOT EXISTS (
      SELECT 1 FROM experiments WHERE id = NEW.experiment_id AND status = 'running'
        AND line = NEW.line AND control_id = NEW.production_id
        AND candidate_id = NEW.candidate_id AND traffic_bp = NEW.candidate_bp))
BEGIN
    SELECT RAISE(ABORT, 'deployed versions must belong to the line and match its running test');
END;

CREATE TRIGGER line_state_arms_update BEFORE UPDATE ON line_state
WHEN (SELECT line FROM versions WHERE id = NEW.production_id) IS NOT NEW.line
  OR (NEW.candidate_id IS NOT NULL
      AND (SELECT line FROM versions WHERE id = NEW.candidate_id) IS NOT NEW.line)
  OR (NEW.experiment_id IS NOT NULL AND NOT EXISTS (
      SELECT 1 FROM experiments WHERE id = NEW.experiment_id AND status = 'running'
        AND line = NEW.line AND control_id = NEW.production_id
        AND candidate_id = NEW.candidate_id AND traffic_bp = NEW.candidate_bp))
  OR NEW.revision <= OLD.revision
BEGIN
    SELECT RAISE(ABORT, 'deployed versions must belong to the line and match its running test');
END;

CREATE TRIGGER line_state_no_delete BEFORE DELETE ON line_state
BEGIN
    SELECT RAISE(ABORT, 'a deployed line cannot be deleted');
END;
""",
    ),
    (
        "0002_keep_versions_and_tests_whole_bp",
        """
CREATE TRIGGER versions_no_delete BEFORE DELETE ON versions
BEGIN
    SELECT RAISE(ABORT, 'versions are immutable');
END;

CREATE TRIGGER experiments_no_delete BEFORE DELETE ON experiments
BEGIN
    SELECT RAISE(ABORT, 'A/B test records are kept');
END;

CREATE TRIGGER experiments_bp_integer_insert BEFORE INSERT ON experiments
WHEN typeof(NEW.traffic_bp) IS NOT 'integer'
BEGIN
    SELECT RAISE(ABORT, 'traffic is stored in whole basis points');
END;

CREATE TRIGGER experiments_bp_integer_update BEFORE UPDATE ON experiments
WHEN typeof(NEW.traffic_bp) IS NOT 'integer'
BEGIN
    SELECT RAISE(ABORT, 'traffic is stored in whole basis points');
END;

CREATE TRIGGER line_state_bp_integer_insert BEFORE INSERT ON line_state
WHEN typeof(NEW.candidate_bp) IS NOT 'integer'
BEGIN
    SELECT RAISE(ABORT, 'traffic is stored in whole basis points');
END;

CREATE TRIGGER line_state_bp_integer_update BEFORE UPDATE ON line_state
WHEN typeof(NEW.candidate_bp) IS NOT 'integer'
BEGIN
    SELECT RAISE(ABORT, 'traffic is stored in whole basis points');
END;
""",
    ),
    (
        "0003_serving_and_monitoring",
        """
-- Every prediction, one row, written by the batched prediction-log writer.
CREATE TABLE predictions (
    id INTEGER PRIMARY KEY,
    pid TEXT NOT NULL UNIQUE CHECK (length(pid) = 32),
    at_ms INTEGER NOT NULL,
    line TEXT NOT NULL,
    version_id INTEGER NOT NULL REFERENCES versions(id),
    arm TEXT NOT NULL CHECK (arm IN ('production', 'candidate')),
    experiment TEXT NOT NULL DEFAULT '',
    key TEXT,
    features BLOB,
    score REAL,
    latency_us INTEGER NOT NULL CHECK (latency_us >= 0),
    error TEXT,
    actual REAL,
    labelled_at_ms INTEGER,
    CHECK ((score IS NULL) = (error IS NOT NULL)),
    CHECK ((actual IS NULL) = (labelled_at_ms IS NULL))
);

CREATE INDEX predictions_version_time ON predictions(version_id, at_ms);

-- Per version, test and minute: what metrics are read from (never a scan of predictions).
-- Histograms are little-endian int64 arrays: latency buckets (engine.latency), and the
-- features and score binned on the version's drift reference.
CREATE TABLE rollups (
    version_id INTEGER NOT NULL REFERENCES versions(id),
    experiment TEXT NOT NULL DEFAULT '',
    minute INTEGER NOT NULL,
    n INTEGER NOT NULL DEFAULT 0 CHECK (n >= 0),
    errors INTEGER NOT NULL DEFAULT 0 CHECK (errors BETWEEN 0 AND n),
    score_sum REAL NOT NULL DEFAULT 0,
    latency_hist BLOB NOT NULL,
    labelled INTEGER NOT NULL DEFAULT 0 CHECK (labelled >= 0),
    within INTEGER NOT NULL DEFAULT 0 CHECK (within BETWEEN 0 AND labelled),
    abs_err_sum REAL NOT NULL DEFAULT 0,
    abs_err_sq_sum REAL NOT NULL DEFAULT 0,
    drift_n INTEGER NOT NULL DEFAULT 0,
    feature_hist BLOB,
    score_hist BLOB,
    PRIMARY KEY (version_id, experiment, minute)
) WITHOUT ROWID;

CREATE INDEX rollups_minute ON rollups(minute);

-- Feedback that arrived before its prediction's row was flushed; matched by the writer.
CREATE TABLE pending_feedback (
    pid TEXT PRIMARY KEY CHECK (length(pid) = 32),
    actual REAL NOT NULL,
    received_ms INTEGER NOT NULL
);

-- What "normal" looks like for an artifact: the drift reference (feature and score bins)
-- and the baseline accuracy / MAE that model drift is measured against.
CREATE TABLE baselines (
    artifact_id INTEGER PRIMARY KEY REFERENCES artifacts(id),
    source TEXT NOT NULL CHECK (source IN ('training', 'first_predictions')),
    reference TEXT CHECK (reference IS NULL OR json_valid(reference)),
    accuracy REAL CHECK (accuracy IS NULL OR accuracy BETWEEN 0 AND 1),
    mae REAL CHECK (mae IS NULL OR mae >= 0),
    created_at TEXT NOT NULL
);

CREATE TABLE alerts (
    id INTEGER PRIMARY KEY,
    line TEXT NOT NULL,
    version TEXT NOT NULL,
    metric TEXT NOT NULL,
    severity TEXT NOT NULL CHECK (severity IN ('warning', 'critical')),
    value REAL,
    threshold REAL,
    message TEXT NOT NULL,
    first_seen TEXT NOT NULL,
    last_seen TEXT NOT NULL,
    resolved_at TEXT
);

CREATE UNIQUE INDEX alerts_one_firing ON alerts(line, version, metric)
WHERE resolved_at IS NULL;
""",
    ),
    (
        "0004_jobs",
        """
-- Background retraining jobs (engine.jobs). A worker process claims a queued job, renews its
-- lease on CLOCK_MONOTONIC (system-wide on Linux; boot_id says which boot the clock belongs
-- to, so a reboot expires every lease) and finishes it; a job whose lease expired is failed
-- by whoever reaps. One queued or running job per line (partial UNIQUE index).
CREATE TABLE jobs (
    id INTEGER PRIMARY KEY,
    line TEXT NOT NULL REFERENCES model_lines(name),
    kind TEXT NOT NULL DEFAULT 'retrain' CHECK (kind IN ('retrain')),
    trigger TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('queued', 'running', 'succeeded', 'failed')),
    progress REAL NOT NULL DEFAULT 0 CHECK (progress BETWEEN 0 AND 1),
    message TEXT NOT NULL DEFAULT '',
    force INTEGER NOT NULL DEFAULT 0 CHECK (force IN (0, 1)),
    deploy INTEGER NOT NULL DEFAULT 0 CHECK (deploy IN (0, 1)),
    created_at TEXT NOT NULL,
    created_by TEXT NOT NULL,
    started_at TEXT,
    finished_at TEXT,
    pid INTEGER,
    pgid INTEGER,
    boot_id TEXT NOT NULL,
    lease_expires REAL NOT NULL,
    deadline REAL,
    timeout_s REAL NOT NULL CHECK (timeout_s > 0),
    version TEXT,
    deployed INTEGER NOT NULL DEFAULT 0 CHECK (deployed IN (0, 1)),
    reason TEXT,
    error TEXT,
    CHECK ((status IN ('succeeded', 'failed')) = (finished_at IS NOT NULL)),
    CHECK (status != 'failed' OR error IS NOT NULL),
    CHECK (deployed = 0 OR version IS NOT NULL)
);

CREATE UNIQUE INDEX jobs_one_active_per_line ON jobs(line)
WHERE status IN ('queued', 'running');

CREATE INDEX jobs_line_id ON jobs(line, id);

CREATE TRIGGER jobs_finish_once BEFORE UPDATE ON jobs
WHEN OLD.status IN ('succeeded', 'failed')
BEGIN
    SELECT RAISE(ABORT, 'a finished job cannot change');
END;

CREATE TABLE job_log (
    job_id INTEGER NOT NULL REFERENCES jobs(id),
    seq INTEGER NOT NULL,
    at TEXT NOT NULL,
    line TEXT NOT NULL,
    PRIMARY KEY (job_id, seq)
) WITHOUT ROWID;
""",
    ),
    (
        "0005_lean_prediction_log_hourly_rollups",
        """
-- The prediction log is the hot table: every index is paid on every logged row. The
-- (version_id, at_ms) index only served the first-predictions reference scan, which now
-- starts at the version's first logged row (below) and walks the rowid instead.
DROP INDEX IF EXISTS predictions_version_time;

-- Where each version's logged rows begin (a lower bound of the rowid of its first row),
-- recorded by the writer while a version has no drift reference.
CREATE TABLE first_predictions (
    version_id INTEGER PRIMARY KEY REFERENCES versions(id),
    from_id INTEGER NOT NULL
);

-- Minutes older than about two hours are compacted into hours (engine.metrics.compact):
-- the same columns as rollups, per hour. A minute lives in exactly one of the two tables.
CREATE TABLE rollups_hourly (
    version_id INTEGER NOT NULL REFERENCES versions(id),
    experiment TEXT NOT NULL DEFAULT '',
    hour INTEGER NOT NULL,
    n INTEGER NOT NULL DEFAULT 0 CHECK (n >= 0),
    errors INTEGER NOT NULL DEFAULT 0 CHECK (errors BETWEEN 0 AND n),
    score_sum REAL NOT NULL DEFAULT 0,
    latency_hist BLOB NOT NULL,
    labelled INTEGER NOT NULL DEFAULT 0 CHECK (labelled >= 0),
    within INTEGER NOT NULL DEFAULT 0 CHECK (within BETWEEN 0 AND labelled),
    abs_err_sum REAL NOT NULL DEFAULT 0,
    abs_err_sq_sum REAL NOT NULL DEFAULT 0,
    drift_n INTEGER NOT NULL DEFAULT 0,
    feature_hist BLOB,
    score_hist BLOB,
    PRIMARY KEY (version_id, experiment, hour)
) WITHOUT ROWID;

-- Early feedback whose prediction never reached the log (its row was dropped, say, or the id
-- was never served): moved here from pending_feedback after engine.labels.PENDING_EXPIRY_MS,
-- counted by `beast monitor`, never silently kept or thrown away.
CREATE TABLE unmatched_feedback (
    pid TEXT PRIMARY KEY CHECK (length(pid) = 32),
    actual REAL NOT NULL,
    received_ms INTEGER NOT NULL,
    expired_ms INTEGER NOT NULL
);
""",
    ),
    (
        "0006_prediction_batches",
        """
-- A served batch is logged as one record, its columns side by side (engine.predlog): one row
-- per prediction cost the writer a B-tree insert in the table and one in the pid index each,
-- which bounded batch throughput. Its rows' ids are the prefix and a 5-hex-digit row number
-- (engine.ids), so any row is still found by id through the prefix's index.
CREATE TABLE prediction_batches (
    id INTEGER PRIMARY KEY,
    prefix TEXT NOT NULL UNIQUE CHECK (length(prefix) = 27),
    at_ms INTEGER NOT NULL,
    line TEXT NOT NULL,
    experiment TEXT NOT NULL DEFAULT '',
    rows INTEGER NOT NULL CHECK (rows > 0),
    width INTEGER NOT NULL CHECK (width > 0),
    version_ids BLOB NOT NULL CHECK (length(version_ids) = 8 * rows),  -- int64 LE per row
    arms BLOB NOT NULL CHECK (length(arms) = rows),  -- 0 production, 1 candidate
    features BLOB NOT NULL CHECK (length(features) = 4 * rows * width),  -- float32 rows
    scores BLOB NOT NULL CHECK (length(scores) = 8 * rows),  -- float64 LE, NaN: failed
    keys TEXT,  -- JSON array of the rows' keys (null where none); NULL when no row had one
    errors TEXT,  -- JSON array of the rows' errors (null where none); NULL when none failed
    latency_us INTEGER NOT NULL CHECK (latency_us >= 0)  -- per row: the batch's time shared
);

-- The actuals of batch rows, as predictions.actual holds a single prediction's.
CREATE TABLE batch_labels (
    batch_id INTEGER NOT NULL REFERENCES prediction_batches(id),
    row INTEGER NOT NULL CHECK (row >= 0),
    actual REAL NOT NULL,
    labelled_at_ms INTEGER NOT NULL,
    PRIMARY KEY (batch_id, row)
) WITHOUT ROWID;

-- Where a version's first batches begin, beside the first single predictions.
ALTER TABLE first_predictions ADD COLUMN from_batch INTEGER NOT NULL DEFAULT 0;
""",
    ),
    (
        "0007_workspace_identity",
        """
-- Which workspace this database is: a random id made with the schema (or on upgrade), also
-- kept in the workspace's `workspace-id` file. A database that is lost, emptied or swapped
-- for another is then told apart from a workspace that was never used (engine.workspace).
CREATE TABLE workspace (
    singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
    id TEXT NOT NULL CHECK (length(id) = 32 AND id NOT GLOB '*[^0-9a-f]*'),
    created_at TEXT NOT NULL
);
INSERT INTO workspace (singleton, id, created_at)
VALUES (1, lower(hex(randomblob(16))), strftime('%Y-%m-%dT%H:%M:%fZ', 'now'));
""",
    ),
    (
        "0008_compact_prediction_rows",
        f"""
-- A single prediction cost ~255 B: 32 characters of id in the row and again in its unique
-- index, the line's, the arm's and the A/B test's names as text. The table is now keyed by the
-- id itself, as two integers (engine.ids.key: its first 64 bits, time first, and its last 62
-- random bits), WITHOUT ROWID: the table is the id's index, so feedback finds a row in one
-- B-tree descent and the log keeps no second index. The line is the version's; the arm is 0
-- or 1; the test is its id (NULL: none; tests are never deleted, names never reused); at_ms is
-- NULL when it is the id's own millisecond (always, for the router's rows). ~142 B a row.
CREATE TEMP TABLE hex4 (k TEXT PRIMARY KEY, v INTEGER NOT NULL) WITHOUT ROWID;
WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 65535)
INSERT INTO temp.hex4 SELECT printf('%04x', i), i FROM n;

CREATE TABLE predictions_0008 (
    hi INTEGER NOT NULL,
    lo INTEGER NOT NULL CHECK (lo BETWEEN 0 AND 4611686018427387903),
    at_ms INTEGER,  -- NULL: the id's time (hi >> 16)
    version_id INTEGER NOT NULL REFERENCES versions(id),
    arm INTEGER NOT NULL CHECK (arm IN (0, 1)),  -- 0 production, 1 candidate
    -- experiments(id), NULL: none. No FOREIGN KEY: it would cost a lookup per logged row,
    -- and A/B test records are never deleted (0002). Below, a name no test has (the router
    -- never logged one) becomes NULL.
    experiment_id INTEGER,
    key TEXT,
    features BLOB,
    score REAL,
    latency_us INTEGER NOT NULL CHECK (latency_us >= 0),
    error TEXT,
    actual REAL,
    labelled_at_ms INTEGER,
    CHECK ((score IS NULL) = (error IS NOT NULL)),
    CHECK ((actual IS NULL) = (labelled_at_ms IS NULL)),
    PRIMARY KEY (hi, lo)
) WITHOUT ROWID;

INSERT INTO predictions_0008 (hi, lo, at_ms, version_id, arm, experiment_id, key, features,
    score, latency_us, error, actual, labelled_at_ms)
SELECT hi, lo, CASE WHEN at_ms = hi >> 16 THEN NULL ELSE at_ms END, version_id,
    arm = 'candidate',
    CASE WHEN experiment != '' THEN (SELECT e.id FROM experiments e WHERE e.name = experiment) END,
    key,
    features, score, latency_us, error, actual, labelled_at_ms
FROM (SELECT {_PID_HI} AS hi, {_PID_LO} AS lo, * FROM predictions) AS old;

-- A version's first single predictions are found by key from here on (hi >= from_key): from
-- the time of its first row logged after the old rowid bound (less the writer's margin for
-- rows another writer still held: engine.predlog.FIRST_ROWS_MARGIN_MS), or after every row
-- logged so far.
ALTER TABLE first_predictions RENAME COLUMN from_id TO from_key;
UPDATE first_predictions SET from_key = coalesce(
    (SELECT (min(p.at_ms) - 120000) << 16 FROM predictions p
     WHERE p.id >= first_predictions.from_key AND p.version_id = first_predictions.version_id),
    (SELECT max(hi) + 1 FROM predictions_0008),
    0
);

DROP TABLE predictions;
DROP TABLE temp.hex4;
ALTER TABLE predictions_0008 RENAME TO predictions;

-- Rows the log writer could not write although the rest of their flush could (engine.predlog:
-- the failing row is isolated, never its neighbours). A single prediction's id, or a batch's
-- prefix with its row count; feedback for them is refused with the reason.
CREATE TABLE quarantined_predictions (
    pid TEXT PRIMARY KEY CHECK (length(pid) IN (27, 32)),
    rows INTEGER NOT NULL DEFAULT 1 CHECK (rows >= 1),
    at_ms INTEGER NOT NULL,
    reason TEXT NOT NULL,
    quarantined_ms INTEGER NOT NULL
);

-- How far retention ([log] retention_days) has pruned the log (engine.predlog.prune), so
-- feedback for a pruned id says so, and pruning resumes where it stopped: unlabelled single
-- rows with a key below unlabelled_key, all single rows below labelled_key, batches up to
-- batch_id are gone (bar the rows retention keeps).
CREATE TABLE log_retention (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    unlabelled_key INTEGER NOT NULL DEFAULT 0,
    labelled_key INTEGER NOT NULL DEFAULT 0,
    batch_id INTEGER NOT NULL DEFAULT 0,
    pruned_before_ms INTEGER NOT NULL DEFAULT 0,
    days REAL NOT NULL DEFAULT 0
);
""",
    ),
    (
        "0009_line_tasks",
        """
-- A line's task (engine.core.tasks): binary lines need more than within / |error| / error².
-- What each label adds besides them: its log loss, whether the score predicted class 1 at the
-- line's decision threshold, whether the label is 1, both (true positives), and the labelled
-- score's bin by class (class_hist: engine.core.rollups' sparse blob), from which ROC AUC is
-- read without a scan. For a regression label they stay 0 / NULL.
ALTER TABLE rollups ADD COLUMN log_loss_sum REAL NOT NULL DEFAULT 0;
ALTER TABLE rollups ADD COLUMN pred_pos INTEGER NOT NULL DEFAULT 0;
ALTER TABLE rollups ADD COLUMN actual_pos INTEGER NOT NULL DEFAULT 0;
ALTER TABLE rollups ADD COLUMN true_pos INTEGER NOT NULL DEFAULT 0;
ALTER TABLE rollups ADD COLUMN class_hist BLOB;
ALTER TABLE rollups_hourly ADD COLUMN log_loss_sum REAL NOT NULL DEFAULT 0;
ALTER TABLE rollups_hourly ADD COLUMN pred_pos INTEGER NOT NULL DEFAULT 0;
ALTER TABLE rollups_hourly ADD COLUMN actual_pos INTEGER NOT NULL DEFAULT 0;
ALTER TABLE rollups_hourly ADD COLUMN true_pos INTEGER NOT NULL DEFAULT 0;
ALTER TABLE rollups_hourly ADD COLUMN class_hist BLOB;

-- Baselines of models trained anywhere: a labelled reference file (`beast register --reference`)
-- is a source of its own, named (source_detail: the file and its rows), and a baseline holds
-- any task's metrics (metrics: a JSON object of engine.core.tasks.METRICS keys).
CREATE TABLE baselines_0009 (
    artifact_id INTEGER PRIMARY KEY REFERENCES artifacts(id),
    source TEXT NOT NULL CHECK (source IN ('training', 'first_predictions', 'reference')),
    reference TEXT CHECK (reference IS NULL OR json_valid(reference)),
    accuracy REAL CHECK (accuracy IS NULL OR accuracy BETWEEN 0 AND 1),
    mae REAL CHECK (mae IS NULL OR mae >= 0),
    created_at TEXT NOT NULL,
    metrics TEXT CHECK (metrics IS NULL OR json_valid(metrics)),
    source_detail TEXT
);
INSERT INTO baselines_0009 (artifact_id, source, reference, accuracy, mae, created_at)
SELECT artifact_id, source, reference, accuracy, mae, created_at FROM baselines;
DROP TABLE baselines;
ALTER TABLE baselines_0009 RENAME TO baselines;

-- The XGBoost objective a model file declares (learner.objective.name), NULL when it does not
-- say: registration holds it to the line's task.
ALTER TABLE artifacts ADD COLUMN objective TEXT;

-- What a retraining job trained on: a hash of its training rows and settings, so a job with
-- nothing new registers nothing ("no new data since v4.0").
ALTER TABLE jobs ADD COLUMN input_hash TEXT;
""",
    ),
    (
        "0010_evidence",
        """
-- The figures a change was decided on (health, firing alerts, the verdict with n and p,
-- drift by feature), as one JSON object on its history row: `enter` on a history entry and
-- `beast history --json` show them. NULL for rows written before, or a change decided on
-- nothing measured (a first deployment).
ALTER TABLE history ADD COLUMN evidence TEXT CHECK (evidence IS NULL OR json_valid(evidence));

-- How a test ended, kept with it: the verdict it ended with ('candidate wins', …; NULL when
-- none was read) and the way it ended.
ALTER TABLE experiments ADD COLUMN verdict TEXT;
ALTER TABLE experiments ADD COLUMN ending TEXT CHECK (
    ending IS NULL OR ending IN ('promoted on verdict', 'forced', 'aborted', 'auto-pulled')
);
""",
    ),
    (
        "0011_replicas",
        """
-- The engine processes serving this state (several on PostgreSQL; one per workspace on
-- SQLite), each renewing seen_at while it runs; leader_since is set while it holds the
-- leadership (PostgreSQL: an advisory lock), which runs alerts, auto-pull, the retraining
-- scheduler and the reaping of lost jobs. `beast status` names the leader from here.
CREATE TABLE replicas (
    id TEXT PRIMARY KEY CHECK (length(id) BETWEEN 1 AND 200),
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    address TEXT,  -- its HTTP API (host:port); NULL when it serves none
    started_at TEXT NOT NULL,
    seen_at TEXT NOT NULL,
    leader_since TEXT
);
""",
    ),
    (
        "0012_change_notices",
        """
-- Change notices (PostgreSQL: a NOTIFY from a trigger on history, so several replicas serve a
-- deployment change within a second). Nothing on SQLite: one engine per workspace, whose
-- router sees another process's commit through PRAGMA data_version. The step keeps the
-- numbering the same on both backends.
SELECT 1;
""",
    ),
    (
        "0013_decisions",
        """
-- Decisions you can watch. History records the changes that come with them: a shadow started
-- or ended (the served state is unchanged, from_state = to_state), a progressive rollout's
-- step (the candidate's share moves) and its pause and resume. SQLite cannot change a CHECK,
-- so history is rebuilt, ids and rows as they were (the migration runs with foreign keys off:
-- line_state.revision points at history's ids, which do not move; foreign_key_check runs
-- before the commit).
CREATE TABLE history_0013 (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    line TEXT NOT NULL REFERENCES model_lines(name),
    at TEXT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL CHECK (action IN (
        'deploy', 'ab_start', 'promote', 'abort', 'rollback',
        'shadow_start', 'shadow_end', 'rollout_step', 'rollout_pause', 'rollout_resume'
    )),
    version TEXT,
    experiment TEXT,
    from_state TEXT NOT NULL CHECK (json_valid(from_state)),
    to_state TEXT NOT NULL CHECK (json_valid(to_state)),
    undoes TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(undoes)),
    note TEXT,
    forced INTEGER NOT NULL DEFAULT 0 CHECK (forced IN (0, 1)),
    evidence TEXT CHECK (evidence IS NULL OR json_valid(evidence))
);
INSERT INTO history_0013 (
    id, line, at, actor, action, version, experiment, from_state, to_state, undoes, note,
    forced, evidence
)
SELECT id, line, at, actor, action, version, experiment, from_state, to_state, undoes, note,
    forced, evidence
FROM history ORDER BY id;
DROP TABLE history;
ALTER TABLE history_0013 RENAME TO history;
CREATE INDEX history_line ON history(line, id);

CREATE TRIGGER history_append_only_update BEFORE UPDATE ON history
BEGIN
    SELECT RAISE(ABORT, 'history is append-only');
END;

CREATE TRIGGER history_append_only_delete BEFORE DELETE ON history
BEGIN
    SELECT RAISE(ABORT, 'history is append-only');
END;

-- An alert someone has seen and taken responsibility for: an `srm` alert blocks promotion
-- until it is acknowledged (`beast alerts ack ID`).
ALTER TABLE alerts ADD COLUMN acknowledged_at TEXT;
ALTER TABLE alerts ADD COLUMN acknowledged_by TEXT;
ALTER TABLE alerts ADD COLUMN acknowledged_note TEXT;

-- A progressive rollout (`beast deploy … --ab-test NAME --rollout 5,25,50,100`): the test's
-- candidate share steps up through `steps` (basis points, rising; the last 10000 promotes),
-- `step` is the index of the share serving now, `step_since` when it began. One per test.
CREATE TABLE rollouts (
    experiment_id INTEGER PRIMARY KEY REFERENCES experiments(id),
    steps TEXT NOT NULL CHECK (json_valid(steps)),
    step INTEGER NOT NULL CHECK (step >= 0),
    state TEXT NOT NULL CHECK (
        state IN ('running', 'paused', 'completed', 'rolled back', 'aborted')
    ),
    step_since TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
""",
    ),
    (
        "0014_shadows",
        """
-- A shadow (`beast deploy … --shadow`): a version scored on `share_bp` of its line's production
-- requests, never served. One running per line; an ended one keeps its scores. `dropped`
-- counts the requests its scorer skipped (over the time budget, or its queue full).
CREATE TABLE shadows (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    line TEXT NOT NULL REFERENCES model_lines(name),
    version_id INTEGER NOT NULL REFERENCES versions(id),
    share_bp INTEGER NOT NULL CHECK (share_bp BETWEEN 1 AND 10000),
    started_at TEXT NOT NULL,
    started_by TEXT NOT NULL,
    ended_at TEXT,
    ended_by TEXT,
    dropped INTEGER NOT NULL DEFAULT 0 CHECK (dropped >= 0),
    CHECK ((ended_at IS NULL) = (ended_by IS NULL))
);
CREATE UNIQUE INDEX shadows_running ON shadows(line) WHERE ended_at IS NULL;

-- A shadow's score of one logged prediction, keyed as the log keys it (engine.ids.key: hi, lo);
-- a batch row also names its batch's prefix and row (the log keeps batches as one record).
-- `control` is production's score of the same request (the pair's other half), `control_id`
-- the production version that answered it.
CREATE TABLE shadow_scores (
    shadow_id INTEGER NOT NULL REFERENCES shadows(id),
    hi INTEGER NOT NULL,
    lo INTEGER NOT NULL,
    prefix TEXT CHECK (prefix IS NULL OR length(prefix) = 27),
    row INTEGER CHECK ((prefix IS NULL) = (row IS NULL)),
    control_id INTEGER NOT NULL REFERENCES versions(id),
    control REAL NOT NULL,
    score REAL,
    error TEXT,
    latency_us INTEGER NOT NULL CHECK (latency_us >= 0),
    CHECK ((score IS NULL) = (error IS NOT NULL)),
    PRIMARY KEY (shadow_id, hi, lo)
) WITHOUT ROWID;
""",
    ),
]

MIGRATION_SET = "beast"
