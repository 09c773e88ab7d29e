-- shoal history store, version 1.
--
-- Append-only: never edit a migration that has shipped; add 0002_*.sql.
-- Test identity, workers and commits are interned so that an attempt row is
-- a handful of integers and reals. Captured output is not stored; only the
-- short failure message is.

-- One row per invocation of `shoal run` (or a remote run).
CREATE TABLE runs (
    id          INTEGER PRIMARY KEY,
    -- The run id users see (RunRecord::run_id).
    uid         TEXT    NOT NULL UNIQUE,
    started     REAL    NOT NULL,
    commit_sha  TEXT,
    dirty       INTEGER NOT NULL CHECK (dirty IN (0, 1)),
    worker      TEXT    NOT NULL,
    selection   TEXT    NOT NULL,
    planned     INTEGER NOT NULL,
    -- Set by finish_run; NULL while the run is in progress (or was abandoned).
    ended       REAL,
    passed      INTEGER,
    failed      INTEGER,
    flaky       INTEGER,
    skipped     INTEGER,
    attempts    INTEGER,
    interrupted INTEGER CHECK (interrupted IN (0, 1)),
    exit_code   INTEGER
);

CREATE INDEX runs_by_start ON runs (started);

CREATE TABLE tests (
    id    INTEGER PRIMARY KEY,
    suite TEXT NOT NULL,
    name  TEXT NOT NULL,
    UNIQUE (suite, name)
);

CREATE TABLE workers (
    id   INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE
);

CREATE TABLE commits (
    id  INTEGER PRIMARY KEY,
    sha TEXT NOT NULL UNIQUE
);

-- One row per execution of one test. (run_id, test_id, repetition, attempt)
-- is unique: a result delivered twice is recorded once.
CREATE TABLE attempts (
    id           INTEGER PRIMARY KEY,
    run_id       INTEGER NOT NULL REFERENCES runs (id),
    test_id      INTEGER NOT NULL REFERENCES tests (id),
    repetition   INTEGER NOT NULL,
    attempt      INTEGER NOT NULL,
    outcome      TEXT    NOT NULL
        CHECK (outcome IN ('pass', 'fail', 'skip', 'timeout', 'crash', 'lost')),
    final_status TEXT
        CHECK (final_status IN ('passed', 'flaky', 'failed', 'skipped')),
    slot         INTEGER NOT NULL,
    worker_id    INTEGER NOT NULL REFERENCES workers (id),
    started      REAL    NOT NULL,
    ended        REAL    NOT NULL,
    duration     REAL    NOT NULL,
    message      TEXT,
    commit_id    INTEGER REFERENCES commits (id),
    dirty        INTEGER NOT NULL CHECK (dirty IN (0, 1)),
    UNIQUE (run_id, test_id, repetition, attempt)
);

-- A test's history, newest last (history, flakiness queries).
CREATE INDEX attempts_by_test ON attempts (test_id, started);

-- Duration estimates read the last few timed attempts of each test; this
-- covering partial index makes that a short backwards index scan no matter
-- how long the history is or how often the test was skipped.
-- (outcome is a column too so that SQLite need not read the table to check
-- the index's own condition.)
CREATE INDEX attempts_timing ON attempts (test_id, started, duration, outcome)
    WHERE outcome IN ('pass', 'fail');
