-- Flaky statistics, version 3: what `shoal flaky`, `shoal history` and
-- `shoal bisect-order` need to judge a test's observations.
--
-- Append-only: never edit a migration that has shipped; add 0004_*.sql.
-- Runs recorded before this migration keep their rows: their environment
-- is '' (unknown), their seed NULL and their kind 'run'.

-- Where the run ran, as "{os}-{arch}" (shoal_store::default_environment) or
-- a name the user chose: a test that fails on one environment only is not
-- flaky, it is broken there.
ALTER TABLE runs ADD COLUMN environment TEXT NOT NULL DEFAULT '';

-- The seed that shuffled the run's test order, if any: a u64 stored as the
-- i64 with the same bits (values above i64::MAX read back negative in SQL).
ALTER TABLE runs ADD COLUMN seed INTEGER;

-- Why the run happened: 'run' (an ordinary run), 'stress' (repeating tests
-- to measure flakiness), 'bisect' (replaying a slot's order). Free text,
-- so that statistics can tell deliberate repetition from ordinary runs.
ALTER TABLE runs ADD COLUMN kind TEXT NOT NULL DEFAULT 'run';

-- The order in which one slot ran its tests in a run (slot_order): the
-- attempts of a (run, worker, slot), by start.
CREATE INDEX attempts_slot_order ON attempts (run_id, worker_id, slot, started);
