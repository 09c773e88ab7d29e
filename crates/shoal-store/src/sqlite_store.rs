//! [`SqliteStore`]: the embedded store (`.shoal/history.db`), one file per
//! repository, safe to share between concurrent shoal processes.

use crate::migration::{self, Applied};
use crate::sql::{self, Dialect, Names, distinct, interned};
use crate::store::DEFAULT_ESTIMATE_WINDOW;
use crate::{
    AttemptRecord, CoordinatorLock, LeaseRecord, QueuedRun, RunRecord, RunSummary, Store,
    StoreError,
};
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use shoal_core::{RunCounts, TestId};
use sqlx::Executor;
use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use std::collections::HashMap;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Migrations embedded at build time from `migrations/sqlite/`.
static MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite");

/// How long a writer waits for another process's write transaction before
/// giving up. Writes are short (10,000 attempts take well under a second),
/// so only a wedged process makes this expire.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// Connections per file store: one writer at a time (SQLite's rule) plus
/// readers, which WAL lets run alongside it.
const MAX_CONNECTIONS: u32 = 4;

/// Write transactions take the write lock up front (`BEGIN IMMEDIATE`): a
/// deferred transaction that reads and then writes fails at once with
/// `SQLITE_BUSY` when another process committed meanwhile, instead of waiting.
const BEGIN_WRITE: &str = "BEGIN IMMEDIATE";

const CREATE_SCHEMA_TABLE: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (\
     version INTEGER PRIMARY KEY, description TEXT NOT NULL, \
     checksum BLOB NOT NULL, applied REAL NOT NULL)";

/// A [`Store`] in an SQLite database: a file in WAL mode, or memory.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// The path, or `:memory:`, for error messages.
    location: String,
    /// The database file; `None` in memory.
    path: Option<PathBuf>,
    window: usize,
}

impl SqliteStore {
    /// Opens the store at `path`, creating its directory and file if needed
    /// and bringing its schema up to date.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        let location = path.display().to_string();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(|source| StoreError::CreateDir {
                    path: dir.to_owned(),
                    source,
                })?;
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // With WAL, NORMAL loses at most the last transactions on power
            // loss and never corrupts; FULL would fsync every commit.
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .connect_with(options)
            .await
            .map_err(|source| StoreError::Open {
                location: location.clone(),
                source,
            })?;
        Self::init(pool, location, Some(path.to_owned())).await
    }

    /// Opens a fresh store that lives in memory until dropped (tests,
    /// `--no-history` runs).
    pub async fn open_in_memory() -> Result<Self, StoreError> {
        let location = ":memory:".to_owned();
        let options = SqliteConnectOptions::new()
            .in_memory(true)
            .foreign_keys(true);
        // Each connection to `:memory:` is its own database: keep exactly one,
        // forever.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options)
            .await
            .map_err(|source| StoreError::Open {
                location: location.clone(),
                source,
            })?;
        Self::init(pool, location, None).await
    }

    async fn init(
        pool: SqlitePool,
        location: String,
        path: Option<PathBuf>,
    ) -> Result<Self, StoreError> {
        migrate(&pool, &location).await?;
        Ok(Self {
            pool,
            location,
            path,
            window: DEFAULT_ESTIMATE_WINDOW,
        })
    }

    /// Uses the last `window` timed attempts (at least 1) for duration
    /// estimates instead of [`DEFAULT_ESTIMATE_WINDOW`].
    pub fn with_estimate_window(mut self, window: usize) -> Self {
        self.window = window.max(1);
        self
    }

    /// The database path, or `:memory:`.
    pub fn location(&self) -> &str {
        &self.location
    }

    /// The schema version of the store (the newest applied migration).
    pub async fn schema_version(&self) -> Result<i64, StoreError> {
        sqlx::query_scalar::<_, Option<i64>>("SELECT MAX(version) FROM schema_migrations")
            .fetch_one(&self.pool)
            .await
            .map(Option::unwrap_or_default)
            .map_err(StoreError::query("read the schema version"))
    }

    /// Closes every connection, checkpointing the WAL into the database file.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Applies pending migrations in one write transaction (see [`migration`]).
async fn migrate(pool: &SqlitePool, location: &str) -> Result<(), StoreError> {
    let err = |source| StoreError::Migrate {
        location: location.to_owned(),
        source,
    };
    let mut tx = pool.begin_with(BEGIN_WRITE).await.map_err(err)?;
    sqlx::query(CREATE_SCHEMA_TABLE)
        .execute(&mut *tx)
        .await
        .map_err(err)?;
    let applied: Vec<Applied> = sqlx::query_as("SELECT version, checksum FROM schema_migrations")
        .fetch_all(&mut *tx)
        .await
        .map_err(err)?;
    for m in migration::pending(MIGRATOR.iter().as_slice(), &applied, location)? {
        // A query without arguments runs as a simple query: several
        // statements at once. (`sqlx::raw_sql` does the same but its future
        // is not provably `Send`: sqlx issue #3150.)
        (&mut *tx).execute(&*m.sql).await.map_err(err)?;
        sqlx::query(
            "INSERT INTO schema_migrations (version, description, checksum, applied) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(m.version)
        .bind(&*m.description)
        .bind(&*m.checksum)
        .bind(shoal_core::now_epoch())
        .execute(&mut *tx)
        .await
        .map_err(err)?;
    }
    tx.commit().await.map_err(err)
}

/// Interned test keys: suite → name → id.
type TestKeys = HashMap<String, HashMap<String, i64>>;

/// Adds the tests not yet known and returns the keys of all of them.
async fn intern_tests(
    conn: &mut SqliteConnection,
    tests: &[(&str, &str)],
) -> Result<TestKeys, StoreError> {
    let action = "record test names";
    let mut keys = TestKeys::new();
    let full = sql::rows_per_statement(sql::TEST_COLUMNS);
    for chunk in tests.chunks(full) {
        let insert = sql::insert_tests(Dialect::Sqlite, chunk.len());
        let mut q = sqlx::query(&insert).persistent(chunk.len() == full);
        for (suite, name) in chunk {
            q = q.bind(*suite).bind(*name);
        }
        q.execute(&mut *conn)
            .await
            .map_err(StoreError::query(action))?;

        let select = sql::select_tests(Dialect::Sqlite, chunk.len());
        let mut q =
            sqlx::query_as::<_, (i64, String, String)>(&select).persistent(chunk.len() == full);
        for (suite, name) in chunk {
            q = q.bind(*suite).bind(*name);
        }
        for (id, suite, name) in q
            .fetch_all(&mut *conn)
            .await
            .map_err(StoreError::query(action))?
        {
            keys.entry(suite).or_default().insert(name, id);
        }
    }
    Ok(keys)
}

/// Adds the `names` not yet in table `kind` and returns the keys of all.
async fn intern_names(
    conn: &mut SqliteConnection,
    kind: Names,
    names: &[&str],
) -> Result<HashMap<String, i64>, StoreError> {
    let action = "record worker and commit names";
    let mut keys = HashMap::new();
    for chunk in names.chunks(sql::rows_per_statement(1)) {
        let insert = kind.insert(Dialect::Sqlite, chunk.len());
        let mut q = sqlx::query(&insert).persistent(false);
        for name in chunk {
            q = q.bind(*name);
        }
        q.execute(&mut *conn)
            .await
            .map_err(StoreError::query(action))?;

        let select = kind.select(Dialect::Sqlite, chunk.len());
        let mut q = sqlx::query_as::<_, (i64, String)>(&select).persistent(false);
        for name in chunk {
            q = q.bind(*name);
        }
        keys.extend(
            q.fetch_all(&mut *conn)
                .await
                .map_err(StoreError::query(action))?
                .into_iter()
                .map(|(id, name)| (name, id)),
        );
    }
    Ok(keys)
}

/// The coordinator lock file of the database at `db`.
fn lock_path(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(".coordinator.lock");
    PathBuf::from(name)
}

/// Takes an exclusive `flock` on `<db>.coordinator.lock` without waiting,
/// and writes this process's id into it for whoever finds it locked.
fn lock_file(db: &Path) -> Result<CoordinatorLock, StoreError> {
    let path = lock_path(db);
    let io_err = |source| StoreError::LockFile {
        path: path.clone(),
        source,
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io_err)?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(mut lock) => {
            let pid = std::process::id();
            lock.set_len(0)
                .and_then(|()| lock.rewind())
                .and_then(|()| writeln!(lock, "{pid}"))
                .map_err(io_err)?;
            Ok(CoordinatorLock::file(lock, path))
        }
        Err((mut file, Errno::EWOULDBLOCK)) => {
            let mut holder = String::new();
            let holder = match file.read_to_string(&mut holder) {
                Ok(_) if !holder.trim().is_empty() => {
                    format!(", held by process {}", holder.trim())
                }
                _ => String::new(),
            };
            Err(StoreError::Locked {
                location: format!("{}; lock file {}{holder}", db.display(), path.display()),
            })
        }
        Err((_, errno)) => Err(io_err(std::io::Error::from(errno))),
    }
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    async fn begin_run(&self, run: &RunRecord) -> Result<(), StoreError> {
        let done = sqlx::query(sql::INSERT_RUN)
            .bind(&run.run_id)
            .bind(run.started)
            .bind(run.commit.as_deref())
            .bind(run.dirty)
            .bind(&run.worker)
            .bind(&run.selection)
            .bind(sql::count_param(run.planned))
            .execute(&self.pool)
            .await
            .map_err(StoreError::query("record the start of a run"))?;
        if done.rows_affected() == 0 {
            return Err(StoreError::DuplicateRun(run.run_id.clone()));
        }
        Ok(())
    }

    async fn record_attempts(&self, attempts: &[AttemptRecord]) -> Result<(), StoreError> {
        if attempts.is_empty() {
            return Ok(());
        }
        let action = "record attempts";
        let mut tx = self
            .pool
            .begin_with(BEGIN_WRITE)
            .await
            .map_err(StoreError::query(action))?;

        let mut runs = HashMap::new();
        for run_id in distinct(attempts.iter().map(|a| a.run_id.as_str())) {
            let key: Option<i64> = sqlx::query_scalar(sql::RUN_KEY)
                .bind(run_id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(StoreError::query(action))?;
            let key = key.ok_or_else(|| StoreError::UnknownRun(run_id.to_owned()))?;
            runs.insert(run_id, key);
        }
        let tests = distinct(attempts.iter().map(|a| (a.suite.as_str(), a.test.as_str())));
        let tests = intern_tests(&mut tx, &tests).await?;
        let workers = distinct(attempts.iter().map(|a| a.worker.as_str()));
        let workers = intern_names(&mut tx, Names::Workers, &workers).await?;
        let commits = distinct(attempts.iter().filter_map(|a| a.commit.as_deref()));
        let commits = intern_names(&mut tx, Names::Commits, &commits).await?;

        let full = sql::rows_per_statement(sql::ATTEMPT_COLUMNS);
        for chunk in attempts.chunks(full) {
            let insert = sql::insert_attempts(Dialect::Sqlite, chunk.len());
            let mut q = sqlx::query(&insert).persistent(chunk.len() == full);
            for a in chunk {
                let test = tests.get(&a.suite).and_then(|names| names.get(&a.test));
                let commit = match &a.commit {
                    Some(sha) => Some(interned(commits.get(sha), "commit")?),
                    None => None,
                };
                q = q
                    .bind(interned(runs.get(a.run_id.as_str()), "run")?)
                    .bind(interned(test, "test")?)
                    .bind(i64::from(a.repeat))
                    .bind(i64::from(a.attempt))
                    .bind(a.outcome.as_str())
                    .bind(a.final_status.map(|s| s.as_str()))
                    .bind(i64::from(a.slot))
                    .bind(interned(workers.get(&a.worker), "worker")?)
                    .bind(a.start)
                    .bind(a.end)
                    .bind(a.duration)
                    .bind(a.message.as_deref())
                    .bind(commit)
                    .bind(a.dirty);
            }
            q.execute(&mut *tx)
                .await
                .map_err(StoreError::query(action))?;
        }
        tx.commit().await.map_err(StoreError::query(action))
    }

    async fn finish_run(
        &self,
        run_id: &str,
        end: f64,
        counts: &RunCounts,
        interrupted: bool,
        exit_code: i32,
    ) -> Result<(), StoreError> {
        let done = sqlx::query(sql::FINISH_RUN)
            .bind(run_id)
            .bind(end)
            .bind(sql::count_param(counts.passed))
            .bind(sql::count_param(counts.failed))
            .bind(sql::count_param(counts.flaky))
            .bind(sql::count_param(counts.skipped))
            .bind(sql::count_param(counts.attempts))
            .bind(interrupted)
            .bind(i64::from(exit_code))
            .execute(&self.pool)
            .await
            .map_err(StoreError::query("record the end of a run"))?;
        if done.rows_affected() == 0 {
            return Err(StoreError::UnknownRun(run_id.to_owned()));
        }
        Ok(())
    }

    async fn duration_estimates(
        &self,
        tests: &[TestId],
    ) -> Result<HashMap<TestId, Duration>, StoreError> {
        let action = "read duration estimates";
        let mut estimates = HashMap::with_capacity(tests.len());
        if tests.is_empty() {
            return Ok(estimates);
        }
        let tests = distinct(tests.iter());
        let mut recent = sql::RecentDurations::new(tests.len(), self.window);
        // One read transaction: every chunk sees the same snapshot.
        let mut tx = self.pool.begin().await.map_err(StoreError::query(action))?;
        let full = sql::rows_per_statement(sql::TIMING_COLUMNS);
        for (n, chunk) in tests.chunks(full).enumerate() {
            let select = sql::recent_timings(Dialect::Sqlite, chunk.len(), self.window);
            let mut q =
                sqlx::query_as::<_, (i64, f64, f64)>(&select).persistent(chunk.len() == full);
            for (i, test) in chunk.iter().enumerate() {
                q = q
                    .bind(sql::count_param(n * full + i))
                    .bind(test.suite.as_str())
                    .bind(test.name.as_str());
            }
            for (index, started, duration) in q
                .fetch_all(&mut *tx)
                .await
                .map_err(StoreError::query(action))?
            {
                recent.add(index, started, duration)?;
            }
        }
        tx.commit().await.map_err(StoreError::query(action))?;
        for (index, median) in recent.medians() {
            if let Ok(median) = Duration::try_from_secs_f64(median) {
                estimates.insert(tests[index].clone(), median);
            }
        }
        Ok(estimates)
    }

    async fn runs(&self, limit: usize) -> Result<Vec<RunSummary>, StoreError> {
        sqlx::query_as::<_, sql::RunRow>(sql::RECENT_RUNS)
            .bind(sql::count_param(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::query("list runs"))?
            .into_iter()
            .map(sql::RunRow::into_summary)
            .collect()
    }

    async fn attempts_of_run(&self, run_id: &str) -> Result<Vec<AttemptRecord>, StoreError> {
        let action = "read the attempts of a run";
        let mut tx = self.pool.begin().await.map_err(StoreError::query(action))?;
        let rows = sqlx::query_as::<_, sql::AttemptRow>(sql::ATTEMPTS_OF_RUN)
            .bind(run_id)
            .fetch_all(&mut *tx)
            .await
            .map_err(StoreError::query(action))?;
        if rows.is_empty() {
            let exists: Option<i64> = sqlx::query_scalar(sql::RUN_KEY)
                .bind(run_id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(StoreError::query(action))?;
            if exists.is_none() {
                return Err(StoreError::UnknownRun(run_id.to_owned()));
            }
        }
        tx.commit().await.map_err(StoreError::query(action))?;
        rows.into_iter().map(sql::AttemptRow::into_record).collect()
    }

    async fn save_queued_run(&self, run: &QueuedRun) -> Result<(), StoreError> {
        let done = sqlx::query(sql::INSERT_QUEUED_RUN)
            .bind(&run.run_id)
            .bind(&run.spec)
            .bind(run.submitted)
            .execute(&self.pool)
            .await
            .map_err(StoreError::query("save a queued run"))?;
        if done.rows_affected() == 0 {
            return Err(StoreError::DuplicateRun(run.run_id.clone()));
        }
        Ok(())
    }

    async fn close_queued_run(&self, run_id: &str) -> Result<(), StoreError> {
        let action = "close a queued run";
        let mut tx = self
            .pool
            .begin_with(BEGIN_WRITE)
            .await
            .map_err(StoreError::query(action))?;
        let open: Option<bool> = sqlx::query_scalar(sql::QUEUED_RUN_IS_OPEN)
            .bind(run_id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(StoreError::query(action))?;
        if open.is_none() {
            return Err(StoreError::UnknownRun(run_id.to_owned()));
        }
        sqlx::query(sql::CLOSE_QUEUED_RUN)
            .bind(run_id)
            .bind(shoal_core::now_epoch())
            .execute(&mut *tx)
            .await
            .map_err(StoreError::query(action))?;
        sqlx::query(sql::DELETE_RUN_LEASES)
            .bind(run_id)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::query(action))?;
        tx.commit().await.map_err(StoreError::query(action))
    }

    async fn open_queued_runs(&self) -> Result<Vec<QueuedRun>, StoreError> {
        let rows = sqlx::query_as::<_, sql::QueuedRunRow>(sql::OPEN_QUEUED_RUNS)
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::query("list open queued runs"))?;
        Ok(rows.into_iter().map(QueuedRun::from).collect())
    }

    async fn save_lease(&self, lease: &LeaseRecord) -> Result<(), StoreError> {
        let action = "save a lease";
        let mut tx = self
            .pool
            .begin_with(BEGIN_WRITE)
            .await
            .map_err(StoreError::query(action))?;
        let done = sqlx::query(sql::SAVE_LEASE)
            .bind(&lease.run_id)
            .bind(sql::to_i64(lease.lease_id, "lease id")?)
            .bind(sql::to_i64(lease.token, "fencing token")?)
            .bind(&lease.worker_id)
            .bind(i64::from(lease.slot))
            .bind(&lease.items)
            .bind(lease.deadline)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::query(action))?;
        if done.rows_affected() == 0 {
            let open: Option<bool> = sqlx::query_scalar(sql::QUEUED_RUN_IS_OPEN)
                .bind(&lease.run_id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(StoreError::query(action))?;
            if open.is_none() {
                return Err(StoreError::UnknownRun(lease.run_id.clone()));
            }
        }
        tx.commit().await.map_err(StoreError::query(action))
    }

    async fn drop_lease(&self, run_id: &str, lease_id: u64) -> Result<(), StoreError> {
        let Ok(lease_id) = i64::try_from(lease_id) else {
            // No such lease could have been saved.
            return Ok(());
        };
        sqlx::query(sql::DROP_LEASE)
            .bind(run_id)
            .bind(lease_id)
            .execute(&self.pool)
            .await
            .map_err(StoreError::query("drop a lease"))?;
        Ok(())
    }

    async fn leases(&self, run_id: Option<&str>) -> Result<Vec<LeaseRecord>, StoreError> {
        let select = sql::leases(run_id.is_some());
        let mut q = sqlx::query_as::<_, sql::LeaseRow>(&select);
        if let Some(run_id) = run_id {
            q = q.bind(run_id);
        }
        q.fetch_all(&self.pool)
            .await
            .map_err(StoreError::query("list leases"))?
            .into_iter()
            .map(sql::LeaseRow::into_record)
            .collect()
    }

    async fn reserve_tokens(&self, n: u64) -> Result<u64, StoreError> {
        let action = "reserve fencing tokens";
        let (count, limit) = sql::reserve_params(n)?;
        let mut tx = self
            .pool
            .begin_with(BEGIN_WRITE)
            .await
            .map_err(StoreError::query(action))?;
        let next: Option<i64> = sqlx::query_scalar(sql::RESERVE_TOKENS)
            .bind(count)
            .bind(limit)
            .fetch_optional(&mut *tx)
            .await
            .map_err(StoreError::query(action))?;
        let current = match next {
            Some(_) => None,
            None => sqlx::query_scalar(sql::NEXT_TOKEN)
                .fetch_optional(&mut *tx)
                .await
                .map_err(StoreError::query(action))?,
        };
        let base = sql::reserved_base(n, next, current)?;
        tx.commit().await.map_err(StoreError::query(action))?;
        Ok(base)
    }

    async fn lock_coordinator(&self) -> Result<CoordinatorLock, StoreError> {
        match &self.path {
            // Nothing outside this process can open an in-memory store.
            None => Ok(CoordinatorLock::nothing()),
            Some(path) => lock_file(path),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_core::Outcome;
    use std::sync::Arc;
    use std::time::Instant;

    fn run(run_id: &str, started: f64) -> RunRecord {
        RunRecord {
            run_id: run_id.to_owned(),
            started,
            commit: Some("c0ffee".to_owned()),
            dirty: false,
            worker: "local".to_owned(),
            selection: "all".to_owned(),
            planned: 0,
        }
    }

    fn attempts(run_id: &str, tests: usize, start: f64, duration: f64) -> Vec<AttemptRecord> {
        (0..tests)
            .map(|i| AttemptRecord {
                run_id: run_id.to_owned(),
                suite: format!("suite{}", i % 3),
                test: format!("tests/test_mod_{}.py::test_case_{i}", i / 50),
                attempt: 1,
                repeat: 0,
                outcome: if i % 10 == 0 {
                    Outcome::Fail
                } else {
                    Outcome::Pass
                },
                slot: (i % 8) as u32,
                worker: "local".to_owned(),
                start: start + i as f64 * 1e-3,
                end: start + i as f64 * 1e-3 + duration,
                duration,
                final_status: None,
                message: (i % 10 == 0).then(|| "assert 1 == 2".to_owned()),
                commit: Some("c0ffee".to_owned()),
                dirty: false,
            })
            .collect()
    }

    async fn count(store: &SqliteStore, sql: &str) -> i64 {
        sqlx::query_scalar(sql)
            .fetch_one(&store.pool)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn conformance_in_memory() {
        let store = SqliteStore::open_in_memory().await.unwrap();
        crate::conformance::run_all(&store).await;
    }

    #[tokio::test]
    async fn conformance_on_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("history.db"))
            .await
            .unwrap();
        crate::conformance::run_all(&store).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn conformance_shared_between_two_handles_on_one_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.db");
        let a = SqliteStore::open(&path).await.unwrap();
        let b = SqliteStore::open(&path).await.unwrap();
        crate::conformance::run_shared(Arc::new(a), Arc::new(b)).await;
    }

    #[tokio::test]
    async fn in_memory_stores_lock_without_a_file() {
        let store = SqliteStore::open_in_memory().await.unwrap();
        let first = store.lock_coordinator().await.unwrap();
        assert!(format!("{first:?}").contains("in-memory"), "{first:?}");
        // Nothing else can reach an in-memory store.
        store.lock_coordinator().await.unwrap();
    }

    #[tokio::test]
    async fn locked_store_names_the_lock_file_and_holder() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.db");
        let store = SqliteStore::open(&path).await.unwrap();
        let held = store.lock_coordinator().await.unwrap();
        let lock_file = dir.path().join("history.db.coordinator.lock");
        assert_eq!(
            std::fs::read_to_string(&lock_file).unwrap(),
            format!("{}\n", std::process::id())
        );
        let err = SqliteStore::open(&path)
            .await
            .unwrap()
            .lock_coordinator()
            .await
            .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains(&lock_file.display().to_string())
                && msg.contains(&format!("held by process {}", std::process::id())),
            "{msg}"
        );
        drop(held);
        // The file stays (unlinking it would race with a new locker); the
        // lock is gone.
        assert!(lock_file.is_file());
        store.lock_coordinator().await.unwrap();
    }

    #[tokio::test]
    async fn tokens_and_queued_runs_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.db");
        let store = SqliteStore::open(&path).await.unwrap();
        let base = store.reserve_tokens(100).await.unwrap();
        let run = QueuedRun {
            run_id: "r".to_owned(),
            spec: "{}".to_owned(),
            submitted: 5.0,
        };
        store.save_queued_run(&run).await.unwrap();
        let lease = LeaseRecord {
            run_id: "r".to_owned(),
            lease_id: 1,
            token: base,
            worker_id: "w".to_owned(),
            slot: 0,
            items: "[]".to_owned(),
            deadline: 6.0,
        };
        store.save_lease(&lease).await.unwrap();
        store.close().await;

        let store = SqliteStore::open(&path).await.unwrap();
        assert!(store.reserve_tokens(1).await.unwrap() >= base + 100);
        assert_eq!(store.open_queued_runs().await.unwrap(), [run]);
        assert_eq!(store.leases(None).await.unwrap(), [lease]);
    }

    #[tokio::test]
    async fn open_creates_parent_directories_and_uses_wal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("repo/.shoal/history.db");
        let store = SqliteStore::open(&path).await.unwrap();
        assert!(path.is_file());
        assert_eq!(store.location(), path.display().to_string());
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert_eq!(mode, "wal");
        let timeout: i64 = sqlx::query_scalar("PRAGMA busy_timeout")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert_eq!(timeout, BUSY_TIMEOUT.as_millis() as i64);
    }

    #[tokio::test]
    async fn reopening_keeps_data_and_applies_migrations_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.db");
        let store = SqliteStore::open(&path).await.unwrap();
        let latest = MIGRATOR.iter().map(|m| m.version).max().unwrap();
        assert_eq!(store.schema_version().await.unwrap(), latest);
        store.begin_run(&run("kept", 1.0)).await.unwrap();
        store
            .record_attempts(&attempts("kept", 3, 1.0, 2.0))
            .await
            .unwrap();
        store.close().await;

        for _ in 0..2 {
            let store = SqliteStore::open(&path).await.unwrap();
            assert_eq!(store.schema_version().await.unwrap(), latest);
            let applied = count(&store, "SELECT COUNT(*) FROM schema_migrations").await;
            assert_eq!(applied, MIGRATOR.iter().count() as i64);
            assert_eq!(store.runs(10).await.unwrap()[0].run.run_id, "kept");
            assert_eq!(store.attempts_of_run("kept").await.unwrap().len(), 3);
            store.close().await;
        }
    }

    #[tokio::test]
    async fn store_from_a_newer_shoal_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.db");
        let store = SqliteStore::open(&path).await.unwrap();
        sqlx::query("INSERT INTO schema_migrations VALUES (9999, 'future', x'00', 0)")
            .execute(&store.pool)
            .await
            .unwrap();
        store.close().await;

        let err = SqliteStore::open(&path).await.unwrap_err();
        assert!(
            matches!(err, StoreError::SchemaTooNew { found: 9999, .. }),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(
            msg.starts_with("store schema version 9999 is newer than this shoal supports"),
            "{msg}"
        );
        assert!(msg.contains(&path.display().to_string()), "{msg}");
    }

    #[tokio::test]
    async fn edited_migration_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.db");
        let store = SqliteStore::open(&path).await.unwrap();
        sqlx::query("UPDATE schema_migrations SET checksum = x'00' WHERE version = 1")
            .execute(&store.pool)
            .await
            .unwrap();
        store.close().await;
        let err = SqliteStore::open(&path).await.unwrap_err();
        assert!(
            matches!(err, StoreError::MigrationChanged { version: 1, .. }),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn open_errors_name_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-dir");
        std::fs::write(&file, "x").unwrap();
        let err = SqliteStore::open(&file.join("history.db"))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::CreateDir { .. }), "{err:?}");
        assert!(err.to_string().contains("not-a-dir"), "{err}");

        let err = SqliteStore::open(dir.path()).await.unwrap_err();
        assert!(matches!(err, StoreError::Open { .. }), "{err:?}");
        let msg = err.to_string();
        let prefix = format!("failed to open store at {}: ", dir.path().display());
        assert!(
            msg.starts_with(&prefix) && msg.len() > prefix.len(),
            "{msg}"
        );
        assert!(
            std::error::Error::source(&err).is_some(),
            "the database error is the source"
        );
    }

    #[tokio::test]
    async fn estimate_window_is_configurable() {
        let store = SqliteStore::open_in_memory()
            .await
            .unwrap()
            .with_estimate_window(3);
        store.begin_run(&run("w", 0.0)).await.unwrap();
        let batch: Vec<_> = [100.0, 1.0, 2.0, 9.0]
            .into_iter()
            .enumerate()
            .map(|(i, d)| {
                let mut a = attempts("w", 1, i as f64, d).remove(0);
                a.attempt = i as u32 + 1;
                a
            })
            .collect();
        store.record_attempts(&batch).await.unwrap();
        let id = batch[0].test_id();
        let estimates = store
            .duration_estimates(std::slice::from_ref(&id))
            .await
            .unwrap();
        assert_eq!(
            estimates[&id],
            Duration::from_secs(2),
            "median of the newest 3 (1, 2, 9)"
        );
    }

    #[tokio::test]
    async fn estimates_read_the_partial_timing_index() {
        let store = SqliteStore::open_in_memory().await.unwrap();
        let plan: Vec<(i64, i64, i64, String)> = sqlx::query_as(&format!(
            "EXPLAIN QUERY PLAN {}",
            sql::recent_timings(Dialect::Sqlite, 2, 10)
        ))
        .fetch_all(&store.pool)
        .await
        .unwrap();
        let plan: Vec<&str> = plan.iter().map(|row| row.3.as_str()).collect();
        assert!(
            plan.iter()
                .any(|step| step.contains("COVERING INDEX attempts_timing")),
            "estimates must not scan whole test histories: {plan:#?}"
        );
        assert!(
            !plan.iter().any(|step| step.starts_with("SCAN a")),
            "{plan:#?}"
        );
    }

    /// Two handles on one file (as two shoal processes would have) write and
    /// read at once: nothing is lost, nothing deadlocks.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn two_handles_on_one_file_write_concurrently() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.db");
        let (a, b) = tokio::join!(SqliteStore::open(&path), SqliteStore::open(&path));
        let (a, b) = (a.unwrap(), b.unwrap());
        assert_eq!(
            count(&a, "SELECT COUNT(*) FROM schema_migrations").await,
            MIGRATOR.iter().count() as i64
        );

        let writer = |store: SqliteStore, run_id: &'static str| {
            tokio::spawn(async move {
                store.begin_run(&run(run_id, 10.0)).await.unwrap();
                // Both runs share test names, so both intern the same tests.
                let all = attempts(run_id, 2_000, 10.0, 1.0);
                for batch in all.chunks(100) {
                    store.record_attempts(batch).await.unwrap();
                    let ids: Vec<_> = batch.iter().map(AttemptRecord::test_id).collect();
                    assert_eq!(
                        store.duration_estimates(&ids).await.unwrap().len(),
                        ids.len()
                    );
                }
                store
                    .finish_run(run_id, 20.0, &RunCounts::default(), false, 0)
                    .await
                    .unwrap();
            })
        };
        let (ra, rb) = tokio::join!(writer(a.clone(), "run-a"), writer(b.clone(), "run-b"));
        ra.unwrap();
        rb.unwrap();

        for (store, run_id) in [(&a, "run-a"), (&b, "run-b")] {
            assert_eq!(store.attempts_of_run(run_id).await.unwrap().len(), 2_000);
        }
        assert_eq!(count(&a, "SELECT COUNT(*) FROM tests").await, 2_000);
        assert_eq!(
            b.runs(10)
                .await
                .unwrap()
                .iter()
                .filter(|r| r.end.is_some())
                .count(),
            2
        );
        let integrity: String = sqlx::query_scalar("PRAGMA integrity_check")
            .fetch_one(&a.pool)
            .await
            .unwrap();
        assert_eq!(integrity, "ok");
    }

    /// CPU time (user + system) this process has used, where Linux's
    /// `/proc` says so; other tests running at once inflate it.
    fn process_cpu() -> Option<Duration> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // After "pid (comm) " come the state (field 3) ... utime (14), stime (15).
        let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
        let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
        // USER_HZ is 100 on every Linux shoal runs on.
        Some(Duration::from_millis(ticks * 10))
    }

    /// Runs `fut`, returning its output, wall time and process CPU time.
    async fn timed<T>(
        fut: impl std::future::Future<Output = T>,
    ) -> (T, (Duration, Option<Duration>)) {
        let (wall, cpu) = (Instant::now(), process_cpu());
        let out = fut.await;
        let cpu = cpu
            .zip(process_cpu())
            .map(|(before, after)| after.saturating_sub(before));
        (out, (wall.elapsed(), cpu))
    }

    /// Guards the hot paths against accidental per-row work: 10,000 attempts
    /// recorded and 10,000 estimates read, each far below a second in
    /// release builds (the bound here is loose for debug builds on a busy
    /// machine; the figures are printed).
    #[tokio::test]
    async fn ten_thousand_attempts_record_and_estimate_quickly() {
        const N: usize = 10_000;
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("history.db"))
            .await
            .unwrap();
        // Some history first, so estimates walk real indexes.
        for r in 0..5 {
            let run_id = format!("history-{r}");
            store.begin_run(&run(&run_id, f64::from(r))).await.unwrap();
            store
                .record_attempts(&attempts(&run_id, N, f64::from(r) * 100.0, 1.0))
                .await
                .unwrap();
        }
        store.begin_run(&run("timed", 1000.0)).await.unwrap();
        let batch = attempts("timed", N, 1000.0, 2.0);

        let (record, record_time) = timed(store.record_attempts(&batch)).await;
        record.unwrap();
        let ids: Vec<_> = batch.iter().map(AttemptRecord::test_id).collect();
        let (estimates, estimate_time) = timed(store.duration_estimates(&ids)).await;
        let estimates = estimates.unwrap();

        assert_eq!(estimates.len(), N);
        assert!(
            estimates.values().all(|d| *d == Duration::from_secs(1)),
            "median of five 1s and one 2s"
        );
        let (record, estimate) = (record_time.0, estimate_time.0);
        eprintln!(
            "record_attempts({N}): {record:?} wall, {:?} process cpu; \
             duration_estimates({N}): {estimate:?} wall, {:?} process cpu",
            record_time.1, estimate_time.1
        );
        let bound = if cfg!(debug_assertions) {
            Duration::from_secs(5)
        } else {
            Duration::from_secs(1)
        };
        assert!(
            record < bound && estimate < bound,
            "record {record:?}, estimate {estimate:?}"
        );
    }
}
