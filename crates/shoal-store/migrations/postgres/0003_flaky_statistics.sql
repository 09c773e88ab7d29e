-- Flaky statistics, version 3 (PostgreSQL): the same columns and index as
-- migrations/sqlite/0003_flaky_statistics.sql, which says why.
--
-- Append-only: never edit a migration that has shipped; add 0004_*.sql.
-- Runs recorded before this migration keep their rows: their environment
-- is '' (unknown), their seed NULL and their kind 'run'.

-- "{os}-{arch}" (shoal_store::default_environment) or a name the user chose.
ALTER TABLE runs ADD COLUMN environment TEXT NOT NULL DEFAULT '';

-- A u64 stored as the BIGINT with the same bits (values above i64::MAX read
-- back negative in SQL).
ALTER TABLE runs ADD COLUMN seed BIGINT;

-- 'run', 'stress' or 'bisect'; free text.
ALTER TABLE runs ADD COLUMN kind TEXT NOT NULL DEFAULT 'run';

-- The order in which one slot ran its tests in a run (slot_order).
CREATE INDEX attempts_slot_order ON attempts (run_id, worker_id, slot, started);
