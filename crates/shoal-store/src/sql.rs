//! The SQL layer: every statement the stores run, in one portable dialect,
//! plus the row types, value codecs and median computation they share.
//!
//! Written once for SQLite and PostgreSQL: `ON CONFLICT ... DO NOTHING`,
//! plain joins and correlated subqueries, no engine-specific functions, an
//! alias on every derived table. Fixed
//! statements number their parameters (`$1`; sqlx's SQLite driver binds
//! those by number); bulk statements spell them per [`Dialect`]. Integers
//! are bound as `i64`, booleans as `bool`, timestamps and durations as `f64`
//! seconds, outcomes as text. [`SqlStore`](crate::sql_store::SqlStore)
//! binds values in the documented order and maps rows with the types below,
//! for either engine.

use crate::{
    AttemptRecord, HistoryRow, LeaseRecord, QueuedRun, RunEnd, RunRecord, RunSummary, StoreError,
};
use shoal_core::{FinalStatus, Outcome, RunCounts};
use std::collections::HashSet;

/// Most parameters one statement binds. SQLite allows 32766 and PostgreSQL
/// 65535; staying well below both keeps statements small to prepare.
const MAX_PARAMS: usize = 2_000;

/// How many rows of `columns` parameters one statement carries.
pub(crate) const fn rows_per_statement(columns: usize) -> usize {
    MAX_PARAMS / columns
}

/// How a bulk statement spells its parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    /// `?`, bound in order of appearance. SQLite finds numbered (`$7`,
    /// `?7`) and named parameters by a linear scan, both when preparing and
    /// when binding, so a statement with thousands of them costs quadratic
    /// time: seconds for 10,000 attempts instead of milliseconds.
    Sqlite,
    /// `$1`, `$2`, ...
    Postgres,
}

impl Dialect {
    /// `(p, ..), (..), ...`: `rows` tuples of `columns` parameters, the
    /// statement's parameters 1 to `rows * columns`.
    fn tuples(self, rows: usize, columns: usize) -> String {
        self.join(rows, columns, true)
    }

    /// `p, p, ...`: `rows` single parameters, without parentheses.
    fn list(self, rows: usize) -> String {
        self.join(rows, 1, false)
    }

    /// The `n`-th (1-based) parameter of a statement: `?` (bound in order
    /// of appearance, so `n` must be the order of appearance) or `$n`.
    fn param(self, n: usize) -> String {
        match self {
            Dialect::Sqlite => "?".to_owned(),
            Dialect::Postgres => format!("${n}"),
        }
    }

    fn join(self, rows: usize, columns: usize, parens: bool) -> String {
        let mut out = String::with_capacity(rows * columns * 7);
        let mut n = 0;
        for row in 0..rows {
            if row > 0 {
                out.push_str(", ");
            }
            if parens {
                out.push('(');
            }
            for col in 0..columns {
                if col > 0 {
                    out.push_str(", ");
                }
                n += 1;
                match self {
                    Dialect::Sqlite => out.push('?'),
                    Dialect::Postgres => {
                        out.push('$');
                        out.push_str(&n.to_string());
                    }
                }
            }
            if parens {
                out.push(')');
            }
        }
        out
    }
}

// ---- schema versions (see `migration`) --------------------------------------

/// Yields the newest applied migration's version (`NULL` before the first).
pub(crate) const SCHEMA_VERSION: &str = "SELECT MAX(version) FROM schema_migrations";

/// Yields an [`Applied`](crate::migration::Applied) per applied migration.
pub(crate) const APPLIED_MIGRATIONS: &str = "SELECT version, checksum FROM schema_migrations";

/// Binds: version, description, checksum, applied (now).
pub(crate) const RECORD_MIGRATION: &str = "INSERT INTO schema_migrations \
     (version, description, checksum, applied) VALUES ($1, $2, $3, $4)";

// ---- runs ---------------------------------------------------------------

/// Binds: uid, started, commit_sha, dirty, worker, selection, planned,
/// environment, seed ([`seed_param`]), kind. Affects no row when the run id
/// exists.
pub(crate) const INSERT_RUN: &str = "INSERT INTO runs \
     (uid, started, commit_sha, dirty, worker, selection, planned, environment, seed, kind) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (uid) DO NOTHING";

/// Binds: uid, ended, passed, failed, flaky, skipped, attempts, interrupted,
/// exit_code. Affects no row when the run does not exist.
pub(crate) const FINISH_RUN: &str = "UPDATE runs SET ended = $2, passed = $3, failed = $4, \
     flaky = $5, skipped = $6, attempts = $7, interrupted = $8, exit_code = $9 WHERE uid = $1";

/// Binds: uid. Yields the run's key (`i64`).
pub(crate) const RUN_KEY: &str = "SELECT id FROM runs WHERE uid = $1";

/// Binds: limit. Yields [`RunRow`]s, newest first.
pub(crate) const RECENT_RUNS: &str = "SELECT uid, started, commit_sha, dirty, worker, selection, \
     planned, environment, seed, kind, ended, passed, failed, flaky, skipped, attempts, \
     interrupted, exit_code FROM runs ORDER BY started DESC, id DESC LIMIT $1";

/// A run's seed as stored: the `i64` with the same bits, so that every
/// `u64` fits (those above `i64::MAX` are negative in SQL).
pub(crate) fn seed_param(seed: Option<u64>) -> Option<i64> {
    seed.map(|s| i64::from_ne_bytes(s.to_ne_bytes()))
}

/// The `u64` seed whose bits a stored seed holds ([`seed_param`] reversed).
fn seed_value(stored: Option<i64>) -> Option<u64> {
    stored.map(|s| u64::from_ne_bytes(s.to_ne_bytes()))
}

// ---- interned names: tests, workers, commits ------------------------------

/// Parameters per test in [`insert_tests`] and [`select_tests`].
pub(crate) const TEST_COLUMNS: usize = 2;

/// Binds: suite, name per test. Adds the tests not yet known.
pub(crate) fn insert_tests(dialect: Dialect, tests: usize) -> String {
    format!(
        "INSERT INTO tests (suite, name) VALUES {} ON CONFLICT (suite, name) DO NOTHING",
        dialect.tuples(tests, TEST_COLUMNS)
    )
}

/// Binds: suite, name per test. Yields `(id, suite, name)` of the known ones.
pub(crate) fn select_tests(dialect: Dialect, tests: usize) -> String {
    format!(
        "WITH wanted (suite, name) AS (VALUES {}) \
         SELECT t.id, t.suite, t.name FROM wanted w \
         JOIN tests t ON t.suite = w.suite AND t.name = w.name",
        dialect.tuples(tests, TEST_COLUMNS)
    )
}

/// A single-column table of interned names.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Names {
    Workers,
    Commits,
}

impl Names {
    fn table_and_column(self) -> (&'static str, &'static str) {
        match self {
            Names::Workers => ("workers", "name"),
            Names::Commits => ("commits", "sha"),
        }
    }

    /// Binds: one name per row. Adds the names not yet known.
    pub(crate) fn insert(self, dialect: Dialect, names: usize) -> String {
        let (table, column) = self.table_and_column();
        format!(
            "INSERT INTO {table} ({column}) VALUES {} ON CONFLICT ({column}) DO NOTHING",
            dialect.tuples(names, 1)
        )
    }

    /// Binds: one name per row. Yields `(id, name)` of the known ones.
    pub(crate) fn select(self, dialect: Dialect, names: usize) -> String {
        let (table, column) = self.table_and_column();
        format!(
            "SELECT id, {column} FROM {table} WHERE {column} IN ({})",
            dialect.list(names)
        )
    }
}

// ---- attempts -------------------------------------------------------------

/// Parameters per attempt row in [`insert_attempts`].
pub(crate) const ATTEMPT_COLUMNS: usize = 14;

/// Binds per attempt: run_id, test_id, repetition, attempt, outcome,
/// final_status, slot, worker_id, started, ended, duration, message,
/// commit_id, dirty. Attempts already recorded are skipped.
pub(crate) fn insert_attempts(dialect: Dialect, attempts: usize) -> String {
    format!(
        "INSERT INTO attempts (run_id, test_id, repetition, attempt, outcome, final_status, \
         slot, worker_id, started, ended, duration, message, commit_id, dirty) VALUES {} \
         ON CONFLICT (run_id, test_id, repetition, attempt) DO NOTHING",
        dialect.tuples(attempts, ATTEMPT_COLUMNS)
    )
}

/// Binds: run uid. Yields [`AttemptRow`]s in start order.
pub(crate) const ATTEMPTS_OF_RUN: &str = "SELECT r.uid AS run_uid, t.suite, t.name AS test, \
     a.attempt, a.repetition, a.outcome, a.slot, w.name AS worker, a.started, a.ended, \
     a.duration, a.final_status, a.message, c.sha AS commit_sha, a.dirty \
     FROM attempts a \
     JOIN runs r ON r.id = a.run_id \
     JOIN tests t ON t.id = a.test_id \
     JOIN workers w ON w.id = a.worker_id \
     LEFT JOIN commits c ON c.id = a.commit_id \
     WHERE r.uid = $1 ORDER BY a.started, a.id";

/// Parameters per asked test in [`recent_timings`].
pub(crate) const TIMING_COLUMNS: usize = 3;

/// Binds per asked test: its index in the caller's list (`i64`), suite,
/// name. Yields `(index, started, duration)` for each test's newest
/// `window` timed (pass or fail) attempts, possibly a few more when start
/// times tie; [`RecentDurations`] keeps the right ones.
///
/// Per test, the subquery finds the start of its `window`-th newest timed
/// attempt (one short backwards walk of the covering `attempts_timing`
/// index) and the join reads the attempts from there on, so the cost
/// follows the number of tests asked, never the length of their history.
/// (A median computed in SQL with window functions per test was several
/// times slower on SQLite.) `window` is an integer written into the text.
pub(crate) fn recent_timings(dialect: Dialect, tests: usize, window: usize) -> String {
    format!(
        "WITH wanted (i, suite, name) AS (VALUES {tuples}) \
         SELECT w.i, a.started, a.duration FROM wanted w \
         JOIN tests t ON t.suite = w.suite AND t.name = w.name \
         JOIN attempts a ON a.test_id = t.id AND a.outcome IN ('pass', 'fail') \
             AND a.started >= COALESCE(( \
                 SELECT b.started FROM attempts b \
                 WHERE b.test_id = t.id AND b.outcome IN ('pass', 'fail') \
                 ORDER BY b.started DESC LIMIT 1 OFFSET {skip} \
             ), -1.0e300)",
        tuples = dialect.tuples(tests, TIMING_COLUMNS),
        skip = window.max(1) - 1,
    )
}

/// Collects the rows of [`recent_timings`] and turns them into medians.
#[derive(Debug)]
pub(crate) struct RecentDurations {
    window: usize,
    /// `(started, duration)` per asked test, by index.
    timings: Vec<Vec<(f64, f64)>>,
}

impl RecentDurations {
    pub(crate) fn new(tests: usize, window: usize) -> Self {
        Self {
            window: window.max(1),
            timings: vec![Vec::new(); tests],
        }
    }

    /// Adds a row; an index outside the asked list means a broken query.
    pub(crate) fn add(
        &mut self,
        index: i64,
        started: f64,
        duration: f64,
    ) -> Result<(), StoreError> {
        let slot = usize::try_from(index)
            .ok()
            .and_then(|i| self.timings.get_mut(i));
        let slot =
            slot.ok_or_else(|| StoreError::Corrupt(format!("test index {index} in timings")))?;
        slot.push((started, duration));
        Ok(())
    }

    /// `(index, median)` of every asked test with a timed attempt: the
    /// median of its newest `window` durations (the mean of the middle two
    /// for an even count).
    pub(crate) fn medians(self) -> impl Iterator<Item = (usize, f64)> {
        let window = self.window;
        self.timings
            .into_iter()
            .enumerate()
            .filter_map(move |(i, mut timings)| {
                timings.sort_by(|a, b| b.0.total_cmp(&a.0));
                timings.truncate(window);
                let mut durations: Vec<f64> = timings.into_iter().map(|(_, d)| d).collect();
                median(&mut durations).map(|m| (i, m))
            })
    }
}

/// The median of `values` (reordered), or `None` if there are none.
fn median(values: &mut [f64]) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(values[n / 2]),
        _ => Some((values[n / 2 - 1] + values[n / 2]) / 2.0),
    }
}

// ---- flaky statistics: history, run health, slot order ----------------------

/// The columns of a [`HistoryDbRow`] and the joins that supply them, `a`
/// being the attempt and `r` its run; a statement adds `WHERE ...`.
macro_rules! history_select {
    () => {
        "SELECT a.id AS attempt_key, a.run_id AS run_key, a.worker_id AS worker_key, \
         r.uid AS run_uid, t.suite, t.name AS test, c.sha AS commit_sha, a.dirty, \
         r.environment, r.kind, a.outcome, a.final_status, a.attempt, a.repetition, a.slot, \
         w.name AS worker, a.started, a.ended \
         FROM attempts a \
         JOIN runs r ON r.id = a.run_id \
         JOIN tests t ON t.id = a.test_id \
         JOIN workers w ON w.id = a.worker_id \
         LEFT JOIN commits c ON c.id = a.commit_id"
    };
}

/// Binds: suite. Yields `(id, suite, name)` of the suite's tests.
pub(crate) const TESTS_OF_SUITE: &str = "SELECT id, suite, name FROM tests WHERE suite = $1";

/// Yields `(id, suite, name)` of every test.
pub(crate) const ALL_TESTS: &str = "SELECT id, suite, name FROM tests";

/// How much earlier than `since` a run may have ended and still hold an
/// attempt that started at `since` or later: attempts are timed by the
/// clocks of the workers that ran them, runs' ends by the coordinator's.
pub(crate) const CLOCK_SKEW_MARGIN: f64 = 86_400.0;

/// The filters a [`history`] statement applies, which decide its
/// parameters.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HistoryShape {
    /// How many test keys `a.test_id` must be among; `None` for any test.
    pub(crate) tests: Option<usize>,
    /// Whether attempts must start at or after a time.
    pub(crate) since: bool,
    /// How many run kinds the run's kind must be among; `None` for any.
    pub(crate) kinds: Option<usize>,
    /// Whether only the newest rows up to a limit are wanted.
    pub(crate) limit: bool,
}

/// Binds, in this order: each test key (`i64`) if `shape.tests`; `since`
/// if `shape.since`; `since - `[`CLOCK_SKEW_MARGIN`] if `shape.since` and
/// not `shape.tests`; each kind if `shape.kinds`; the limit if
/// `shape.limit`. Yields [`HistoryDbRow`]s by start (ties by attempt key),
/// oldest first, or with a limit the newest first.
///
/// With test keys, the attempts come from `attempts_by_test (test_id,
/// started)`, a range per test. Without, the runs that could hold a
/// matching attempt (ended at `since` or later, less the margin, or not
/// ended; of the wanted kinds) are chosen first and their attempts read by
/// run, so the cost follows the recent runs, not the whole history.
pub(crate) fn history(dialect: Dialect, shape: HistoryShape) -> String {
    let mut n = 0;
    let mut next = || {
        n += 1;
        dialect.param(n)
    };
    let mut conditions = Vec::new();
    if let Some(tests) = shape.tests {
        let keys: Vec<String> = (0..tests).map(|_| next()).collect();
        conditions.push(format!("a.test_id IN ({})", keys.join(", ")));
    }
    if shape.since {
        conditions.push(format!("a.started >= {}", next()));
    }
    let mut run_conditions = Vec::new();
    if shape.since && shape.tests.is_none() {
        run_conditions.push(format!("(q.ended IS NULL OR q.ended >= {})", next()));
    }
    if let Some(kinds) = shape.kinds {
        let kinds: Vec<String> = (0..kinds).map(|_| next()).collect();
        run_conditions.push(format!("q.kind IN ({})", kinds.join(", ")));
    }
    if !run_conditions.is_empty() {
        conditions.push(format!(
            "a.run_id IN (SELECT q.id FROM runs q WHERE {})",
            run_conditions.join(" AND ")
        ));
    }
    let filter = if conditions.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", conditions.join(" AND "))
    };
    let order = if shape.limit {
        format!(" ORDER BY a.started DESC, a.id DESC LIMIT {}", next())
    } else {
        " ORDER BY a.started, a.id".to_owned()
    };
    format!("{}{filter}{order}", history_select!())
}

/// Binds: one run uid per run. Yields `(uid, executions, failed)` of the
/// known runs: attempts with a final status, and those whose final status
/// is failed.
pub(crate) fn run_health(dialect: Dialect, runs: usize) -> String {
    format!(
        "SELECT r.uid, COUNT(a.final_status), \
         COALESCE(SUM(CASE WHEN a.final_status = 'failed' THEN 1 ELSE 0 END), 0) \
         FROM runs r LEFT JOIN attempts a ON a.run_id = r.id \
         WHERE r.uid IN ({}) GROUP BY r.uid",
        dialect.list(runs)
    )
}

/// Binds: run uid, suite, name. Yields the test's first failing attempt
/// (outcome other than pass or skip) in the run as a [`HistoryDbRow`], if
/// any.
pub(crate) const FIRST_FAILURE: &str = concat!(
    history_select!(),
    " WHERE r.uid = $1 AND t.suite = $2 AND t.name = $3 \
     AND a.outcome NOT IN ('pass', 'skip') ORDER BY a.started, a.id LIMIT 1"
);

/// Binds: run key, worker key, slot, started, attempt key of an attempt.
/// Yields the [`HistoryDbRow`]s of the attempts that ran before it on the
/// same worker and slot of its run, by start (ties by attempt key): a walk
/// of `attempts_slot_order (run_id, worker_id, slot, started)`.
pub(crate) const SLOT_BEFORE: &str = concat!(
    history_select!(),
    " WHERE a.run_id = $1 AND a.worker_id = $2 AND a.slot = $3 \
     AND (a.started < $4 OR (a.started = $4 AND a.id < $5)) ORDER BY a.started, a.id"
);

// ---- coordinator state -----------------------------------------------------

/// Binds: run_id, spec, submitted. Affects no row when the id exists.
pub(crate) const INSERT_QUEUED_RUN: &str = "INSERT INTO queued_runs (run_id, spec, submitted) \
     VALUES ($1, $2, $3) ON CONFLICT (run_id) DO NOTHING";

/// Binds: run_id, closed (now). Affects no row when the run is unknown or
/// already closed.
pub(crate) const CLOSE_QUEUED_RUN: &str =
    "UPDATE queued_runs SET closed = $2 WHERE run_id = $1 AND closed IS NULL";

/// Binds: run_id. Yields `true` for an open run, `false` for a closed one,
/// no row for an unknown one.
pub(crate) const QUEUED_RUN_IS_OPEN: &str =
    "SELECT closed IS NULL FROM queued_runs WHERE run_id = $1";

/// Binds: run_id. Deletes every lease of the run.
pub(crate) const DELETE_RUN_LEASES: &str = "DELETE FROM leases WHERE run_id = $1";

/// Yields [`QueuedRunRow`]s of open runs, oldest submitted first.
pub(crate) const OPEN_QUEUED_RUNS: &str = "SELECT run_id, spec, submitted FROM queued_runs \
     WHERE closed IS NULL ORDER BY submitted, run_id";

/// Binds: run_id, lease_id, token, worker_id, slot, items, deadline.
/// Inserts or replaces the lease, if its run is open (no row otherwise).
pub(crate) const SAVE_LEASE: &str = "INSERT INTO leases \
     (run_id, lease_id, token, worker_id, slot, items, deadline) \
     SELECT $1, $2, $3, $4, $5, $6, $7 FROM queued_runs WHERE run_id = $1 AND closed IS NULL \
     ON CONFLICT (run_id, lease_id) DO UPDATE SET token = excluded.token, \
     worker_id = excluded.worker_id, slot = excluded.slot, items = excluded.items, \
     deadline = excluded.deadline";

/// Binds: run_id, lease_id.
pub(crate) const DROP_LEASE: &str = "DELETE FROM leases WHERE run_id = $1 AND lease_id = $2";

const LEASE_COLUMNS: &str = "SELECT l.run_id, l.lease_id, l.token, l.worker_id, l.slot, \
     l.items, l.deadline FROM leases l JOIN queued_runs r ON r.run_id = l.run_id \
     WHERE r.closed IS NULL";

/// Binds: nothing, or the run id (`one_run`). Yields [`LeaseRow`]s by run
/// (oldest submitted first), then lease id.
pub(crate) fn leases(one_run: bool) -> String {
    format!(
        "{LEASE_COLUMNS}{} ORDER BY r.submitted, r.run_id, l.lease_id",
        if one_run { " AND l.run_id = $1" } else { "" }
    )
}

/// Binds: n, the largest `next_token` that can take `n` more. Advances the
/// counter by `n` and yields its new value, or no row if it would pass
/// `i64::MAX`.
pub(crate) const RESERVE_TOKENS: &str = "UPDATE coordinator_tokens \
     SET next_token = next_token + $1 WHERE id = 1 AND next_token <= $2 RETURNING next_token";

/// Yields the next unreserved token.
pub(crate) const NEXT_TOKEN: &str = "SELECT next_token FROM coordinator_tokens WHERE id = 1";

/// The parameters of [`RESERVE_TOKENS`] for `n` tokens.
pub(crate) fn reserve_params(n: u64) -> Result<(i64, i64), StoreError> {
    let n = to_i64(n, "fencing token count")?;
    Ok((n, i64::MAX - n))
}

/// The first token of the range [`RESERVE_TOKENS`] reserved: its result is
/// the new `next_token`, or `None` when the counter would overflow, in which
/// case `current` (from [`NEXT_TOKEN`]) says where it stands.
pub(crate) fn reserved_base(
    n: u64,
    next: Option<i64>,
    current: Option<i64>,
) -> Result<u64, StoreError> {
    match (next, current) {
        (Some(next), _) => {
            let base = next - to_i64(n, "fencing token count")?;
            u64::try_from(base)
                .ok()
                .filter(|&b| b >= 1)
                .ok_or_else(|| StoreError::Corrupt(format!("fencing token counter {base}")))
        }
        (None, Some(current)) => Err(StoreError::OutOfRange {
            what: "fencing token counter",
            value: u64::try_from(current).unwrap_or(0).saturating_add(n),
        }),
        (None, None) => Err(StoreError::Corrupt(
            "the fencing token counter is missing".to_owned(),
        )),
    }
}

/// A `u64` as a bindable integer, or [`StoreError::OutOfRange`].
pub(crate) fn to_i64(v: u64, what: &'static str) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| StoreError::OutOfRange { what, value: v })
}

/// The distinct items of `items`, in first-seen order (so ids are assigned
/// deterministically).
pub(crate) fn distinct<T: Eq + std::hash::Hash + Copy>(items: impl Iterator<Item = T>) -> Vec<T> {
    let mut seen = HashSet::new();
    items.filter(|item| seen.insert(*item)).collect()
}

/// The distinct items of `items`, sorted: concurrent transactions that
/// intern them take the unique indexes' row locks in one order and so cannot
/// deadlock.
pub(crate) fn sorted<T: Ord + std::hash::Hash + Copy>(items: impl Iterator<Item = T>) -> Vec<T> {
    let mut items = distinct(items);
    items.sort_unstable();
    items
}

/// A key interned moments ago in the same transaction; missing means the
/// database changed under us.
pub(crate) fn interned(key: Option<&i64>, what: &str) -> Result<i64, StoreError> {
    key.copied()
        .ok_or_else(|| StoreError::Corrupt(format!("{what} vanished while recording")))
}

// ---- rows and codecs --------------------------------------------------------

/// A row of [`OPEN_QUEUED_RUNS`].
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct QueuedRunRow {
    run_id: String,
    spec: String,
    submitted: f64,
}

impl From<QueuedRunRow> for QueuedRun {
    fn from(row: QueuedRunRow) -> Self {
        QueuedRun {
            run_id: row.run_id,
            spec: row.spec,
            submitted: row.submitted,
        }
    }
}

/// A row of [`leases`].
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct LeaseRow {
    run_id: String,
    lease_id: i64,
    token: i64,
    worker_id: String,
    slot: i64,
    items: String,
    deadline: f64,
}

impl LeaseRow {
    pub(crate) fn into_record(self) -> Result<LeaseRecord, StoreError> {
        Ok(LeaseRecord {
            run_id: self.run_id,
            lease_id: to_u64(self.lease_id, "lease id")?,
            token: to_u64(self.token, "fencing token")?,
            worker_id: self.worker_id,
            slot: to_u32(self.slot, "slot")?,
            items: self.items,
            deadline: self.deadline,
        })
    }
}

/// A row of [`RECENT_RUNS`].
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct RunRow {
    uid: String,
    started: f64,
    commit_sha: Option<String>,
    dirty: bool,
    worker: String,
    selection: String,
    planned: i64,
    environment: String,
    seed: Option<i64>,
    kind: String,
    ended: Option<f64>,
    passed: Option<i64>,
    failed: Option<i64>,
    flaky: Option<i64>,
    skipped: Option<i64>,
    attempts: Option<i64>,
    interrupted: Option<bool>,
    exit_code: Option<i64>,
}

impl RunRow {
    pub(crate) fn into_summary(self) -> Result<RunSummary, StoreError> {
        let end = match self.ended {
            None => None,
            Some(end) => {
                let count = |v: Option<i64>| to_usize(v.unwrap_or(0), "run count");
                Some(RunEnd {
                    end,
                    counts: RunCounts {
                        passed: count(self.passed)?,
                        failed: count(self.failed)?,
                        flaky: count(self.flaky)?,
                        skipped: count(self.skipped)?,
                        attempts: count(self.attempts)?,
                    },
                    interrupted: self.interrupted.unwrap_or(false),
                    exit_code: i32::try_from(self.exit_code.unwrap_or(0)).map_err(|_| {
                        StoreError::Corrupt(format!("exit code {:?}", self.exit_code))
                    })?,
                })
            }
        };
        Ok(RunSummary {
            run: RunRecord {
                run_id: self.uid,
                started: self.started,
                commit: self.commit_sha,
                dirty: self.dirty,
                worker: self.worker,
                selection: self.selection,
                planned: to_usize(self.planned, "planned count")?,
                environment: self.environment,
                seed: seed_value(self.seed),
                kind: self.kind,
            },
            end,
        })
    }
}

/// A row of [`ATTEMPTS_OF_RUN`].
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct AttemptRow {
    run_uid: String,
    suite: String,
    test: String,
    attempt: i64,
    repetition: i64,
    outcome: String,
    slot: i64,
    worker: String,
    started: f64,
    ended: f64,
    duration: f64,
    final_status: Option<String>,
    message: Option<String>,
    commit_sha: Option<String>,
    dirty: bool,
}

impl AttemptRow {
    pub(crate) fn into_record(self) -> Result<AttemptRecord, StoreError> {
        Ok(AttemptRecord {
            run_id: self.run_uid,
            suite: self.suite,
            test: self.test,
            attempt: to_u32(self.attempt, "attempt number")?,
            repeat: to_u32(self.repetition, "repetition")?,
            outcome: parse_outcome(&self.outcome)?,
            slot: to_u32(self.slot, "slot")?,
            worker: self.worker,
            start: self.started,
            end: self.ended,
            duration: self.duration,
            final_status: self
                .final_status
                .as_deref()
                .map(parse_final_status)
                .transpose()?,
            message: self.message,
            commit: self.commit_sha,
            dirty: self.dirty,
        })
    }
}

/// A row of [`history`], [`FIRST_FAILURE`] and [`SLOT_BEFORE`]: a
/// [`HistoryRow`] plus the keys that order rows and find a slot's attempts.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct HistoryDbRow {
    /// The attempt's key: its order of recording, which breaks ties of
    /// start times.
    pub(crate) attempt_key: i64,
    pub(crate) run_key: i64,
    pub(crate) worker_key: i64,
    run_uid: String,
    suite: String,
    test: String,
    commit_sha: Option<String>,
    dirty: bool,
    environment: String,
    kind: String,
    outcome: String,
    final_status: Option<String>,
    attempt: i64,
    repetition: i64,
    pub(crate) slot: i64,
    worker: String,
    pub(crate) started: f64,
    ended: f64,
}

impl HistoryDbRow {
    /// Oldest first, ties in the order they were recorded.
    pub(crate) fn chronological(a: &Self, b: &Self) -> std::cmp::Ordering {
        a.started
            .total_cmp(&b.started)
            .then(a.attempt_key.cmp(&b.attempt_key))
    }

    pub(crate) fn into_row(self) -> Result<HistoryRow, StoreError> {
        Ok(HistoryRow {
            run_id: self.run_uid,
            suite: self.suite,
            test: self.test,
            commit: self.commit_sha,
            dirty: self.dirty,
            environment: self.environment,
            kind: self.kind,
            outcome: parse_outcome(&self.outcome)?,
            final_status: self
                .final_status
                .as_deref()
                .map(parse_final_status)
                .transpose()?,
            attempt: to_u32(self.attempt, "attempt number")?,
            repeat: to_u32(self.repetition, "repetition")?,
            slot: to_u32(self.slot, "slot")?,
            worker: self.worker,
            start: self.started,
            end: self.ended,
        })
    }
}

fn parse_outcome(s: &str) -> Result<Outcome, StoreError> {
    Outcome::parse(s).ok_or_else(|| StoreError::Corrupt(format!("outcome {s:?}")))
}

fn parse_final_status(s: &str) -> Result<FinalStatus, StoreError> {
    [
        FinalStatus::Passed,
        FinalStatus::Flaky,
        FinalStatus::Failed,
        FinalStatus::Skipped,
    ]
    .into_iter()
    .find(|status| status.as_str() == s)
    .ok_or_else(|| StoreError::Corrupt(format!("final status {s:?}")))
}

fn to_u32(v: i64, what: &str) -> Result<u32, StoreError> {
    u32::try_from(v).map_err(|_| StoreError::Corrupt(format!("{what} {v}")))
}

/// A stored count as a `u64`; negative means a broken store.
pub(crate) fn to_u64(v: i64, what: &str) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| StoreError::Corrupt(format!("{what} {v}")))
}

fn to_usize(v: i64, what: &str) -> Result<usize, StoreError> {
    usize::try_from(v).map_err(|_| StoreError::Corrupt(format!("{what} {v}")))
}

/// A count as a bindable integer (counts never approach `i64::MAX`).
pub(crate) fn count_param(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tuples_spell_parameters_per_dialect() {
        assert_eq!(Dialect::Postgres.tuples(2, 3), "($1, $2, $3), ($4, $5, $6)");
        assert_eq!(Dialect::Sqlite.tuples(2, 2), "(?, ?), (?, ?)");
    }

    #[test]
    fn name_lists_are_flat() {
        assert_eq!(
            Names::Commits.select(Dialect::Postgres, 3),
            "SELECT id, sha FROM commits WHERE sha IN ($1, $2, $3)"
        );
        assert_eq!(
            Names::Workers.select(Dialect::Sqlite, 2),
            "SELECT id, name FROM workers WHERE name IN (?, ?)"
        );
    }

    #[test]
    fn full_statements_stay_within_the_parameter_limit() {
        let rows = rows_per_statement(ATTEMPT_COLUMNS);
        let sql = insert_attempts(Dialect::Postgres, rows);
        assert!(sql.contains(&format!("${}", rows * ATTEMPT_COLUMNS)));
        assert!(!sql.contains(&format!("${}", rows * ATTEMPT_COLUMNS + 1)));
        assert!(rows * ATTEMPT_COLUMNS <= MAX_PARAMS);
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&mut []), None);
        assert_eq!(median(&mut [4.0]), Some(4.0));
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&mut [10.0, 1.0, 3.0, 2.0]), Some(2.5));
    }

    #[test]
    fn recent_durations_keep_the_newest_window() {
        let mut recent = RecentDurations::new(3, 3);
        // Test 0: five timings, the two oldest (100s) fall out of the window.
        for (started, duration) in [
            (5.0, 1.0),
            (1.0, 100.0),
            (4.0, 9.0),
            (2.0, 100.0),
            (3.0, 2.0),
        ] {
            recent.add(0, started, duration).unwrap();
        }
        recent.add(2, 1.0, 7.0).unwrap();
        assert!(matches!(
            recent.add(3, 0.0, 0.0),
            Err(StoreError::Corrupt(_))
        ));
        assert!(recent.add(-1, 0.0, 0.0).is_err());
        let medians: Vec<_> = recent.medians().collect();
        assert_eq!(medians, [(0, 2.0), (2, 7.0)]);
    }

    #[test]
    fn final_status_round_trips() {
        for s in [
            FinalStatus::Passed,
            FinalStatus::Flaky,
            FinalStatus::Failed,
            FinalStatus::Skipped,
        ] {
            assert_eq!(parse_final_status(s.as_str()).unwrap(), s);
        }
        assert!(matches!(
            parse_final_status("maybe"),
            Err(StoreError::Corrupt(_))
        ));
    }
}
