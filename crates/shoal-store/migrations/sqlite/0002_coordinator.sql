-- Coordinator state, version 2: what a distributed coordinator keeps so that
-- a coordinator killed and restarted resumes every unfinished run.
--
-- Append-only: never edit a migration that has shipped; add 0003_*.sql.
-- Kept apart from the history tables: a queued run's id is the
-- coordinator's, and its spec and lease items are opaque JSON it owns.

-- One row per run submitted to the coordinator.
CREATE TABLE queued_runs (
    run_id    TEXT PRIMARY KEY,
    -- Opaque JSON owned by the coordinator.
    spec      TEXT NOT NULL,
    submitted REAL NOT NULL,
    -- Set by close_queued_run; NULL while the run is open.
    closed    REAL
);

-- Open runs, oldest first: what a restarted coordinator reads.
CREATE INDEX queued_runs_open ON queued_runs (submitted, run_id) WHERE closed IS NULL;

-- Batches handed to a worker's slot and not yet released. Closing a run
-- deletes its leases.
CREATE TABLE leases (
    run_id    TEXT    NOT NULL REFERENCES queued_runs (run_id),
    lease_id  INTEGER NOT NULL,
    -- The fencing token the batch was handed out with.
    token     INTEGER NOT NULL,
    worker_id TEXT    NOT NULL,
    slot      INTEGER NOT NULL,
    -- Opaque JSON owned by the coordinator.
    items     TEXT    NOT NULL,
    deadline  REAL    NOT NULL,
    PRIMARY KEY (run_id, lease_id)
);

-- The fencing-token counter: one row, the next token not yet reserved.
-- Coordinators reserve ranges of tokens (reserve_tokens) so that tokens
-- never repeat across restarts without a write per lease.
CREATE TABLE coordinator_tokens (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    next_token INTEGER NOT NULL CHECK (next_token >= 1)
);

INSERT INTO coordinator_tokens (id, next_token) VALUES (1, 1);
