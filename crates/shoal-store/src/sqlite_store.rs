//! [`SqliteStore`]: the embedded store (`.shoal/history.db`), one file per
//! repository, safe to share between concurrent shoal processes.

use crate::sql::{self, Dialect};
use crate::sql_store::{Adapter, Engine, SqlStore, impl_store};
use crate::store::DEFAULT_ESTIMATE_WINDOW;
use crate::{CoordinatorLock, StoreError};
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use sqlx::migrate::{Migration, Migrator};
use sqlx::sqlite::{
    Sqlite, SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteQueryResult, SqliteSynchronous,
};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Migrations embedded at build time from `migrations/sqlite/`.
static MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite");

/// Tries at opening a file another process is opening at the same time.
const OPEN_ATTEMPTS: u64 = 10;

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

/// A [`Store`](crate::Store) in an SQLite database: a file in WAL mode, or memory.
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
        Self::open_migrated(path, MIGRATOR.iter().as_slice()).await
    }

    /// [`open`](Self::open), applying `migrations` (all embedded ones, or
    /// fewer in tests that build an old store) as far as the file lacks them.
    async fn open_migrated(path: &Path, migrations: &[Migration]) -> Result<Self, StoreError> {
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
        // Two processes opening a new file at once race to switch it to WAL;
        // SQLite answers the loser SQLITE_BUSY without calling the busy
        // handler, so the open is retried briefly.
        let mut attempt = 0;
        let pool = loop {
            attempt += 1;
            match SqlitePoolOptions::new()
                .max_connections(MAX_CONNECTIONS)
                .connect_with(options.clone())
                .await
            {
                Ok(pool) => break pool,
                Err(sqlx::Error::Database(e))
                    if e.code().as_deref() == Some("5") && attempt < OPEN_ATTEMPTS =>
                {
                    tokio::time::sleep(std::time::Duration::from_millis(20 * attempt)).await;
                }
                Err(source) => {
                    return Err(StoreError::Open {
                        location: location.clone(),
                        source,
                    });
                }
            }
        };
        Self::init(pool, location, Some(path.to_owned()), migrations).await
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
        Self::init(pool, location, None, MIGRATOR.iter().as_slice()).await
    }

    async fn init(
        pool: SqlitePool,
        location: String,
        path: Option<PathBuf>,
        migrations: &[Migration],
    ) -> Result<Self, StoreError> {
        migrate(&pool, &location, migrations).await?;
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
        self.sql().schema_version().await
    }

    /// Closes every connection, checkpointing the WAL into the database file.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Applies pending migrations in one write transaction, which keeps other
/// processes opening the same file out (see [`migration`](crate::migration)).
async fn migrate(
    pool: &SqlitePool,
    location: &str,
    migrations: &[Migration],
) -> Result<(), StoreError> {
    let err = StoreError::migrate(location);
    let mut tx = pool.begin_with(BEGIN_WRITE).await.map_err(err)?;
    SqlStore::apply_migrations(&mut tx, migrations, CREATE_SCHEMA_TABLE, location).await?;
    tx.commit().await.map_err(err)
}

impl Engine for Sqlite {
    /// See [`Dialect::Sqlite`] for why not numbered parameters.
    const DIALECT: Dialect = Dialect::Sqlite;
    const BEGIN_WRITE: Option<&'static str> = Some(BEGIN_WRITE);
    /// A deferred transaction: in WAL mode its first read fixes the
    /// snapshot that the rest of it reads.
    const BEGIN_READ: Option<&'static str> = None;
    /// No row locks: the write transaction (`BEGIN IMMEDIATE`) already
    /// keeps every other writer out until it ends.
    const LOCK_QUEUED_RUN: &'static str = sql::QUEUED_RUN_IS_OPEN;

    fn rows_affected(done: &SqliteQueryResult) -> u64 {
        done.rows_affected()
    }
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

impl Adapter for SqliteStore {
    type Engine = Sqlite;

    fn sql(&self) -> SqlStore<'_, Sqlite> {
        SqlStore::new(&self.pool, self.window)
    }

    async fn reserve_token_range(&self, n: u64) -> Result<u64, StoreError> {
        // The counter's update and, when it would overflow, its read happen
        // in one write transaction.
        let action = "reserve fencing tokens";
        let mut tx = self
            .pool
            .begin_with(BEGIN_WRITE)
            .await
            .map_err(StoreError::query(action))?;
        let base = SqlStore::<Sqlite>::reserve_tokens_on(&mut tx, n).await?;
        tx.commit().await.map_err(StoreError::query(action))?;
        Ok(base)
    }

    async fn take_coordinator_lock(&self) -> Result<CoordinatorLock, StoreError> {
        match &self.path {
            // Nothing outside this process can open an in-memory store.
            None => Ok(CoordinatorLock::nothing()),
            Some(path) => lock_file(path),
        }
    }
}

impl_store!(SqliteStore);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AttemptRecord, LeaseRecord, QueuedRun, RunRecord, Store};
    use shoal_core::{Outcome, RunCounts};
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
            environment: crate::default_environment(),
            seed: None,
            kind: crate::KIND_RUN.to_owned(),
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

    /// A fresh store in `history.db` in a new temporary directory, which
    /// lives as long as the returned guard, and the file's path.
    async fn file_store() -> (tempfile::TempDir, PathBuf, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.db");
        let store = SqliteStore::open(&path).await.unwrap();
        (dir, path, store)
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
        let (_dir, _, store) = file_store().await;
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
        let (dir, path, store) = file_store().await;
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
        let (_dir, path, store) = file_store().await;
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
        let (_dir, path, store) = file_store().await;
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

    /// A store created at schema version 2 and reopened keeps its runs and
    /// attempts, which read back with the new columns' defaults.
    #[tokio::test]
    async fn schema_v2_store_is_migrated_keeping_runs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.db");
        let v2: Vec<Migration> = MIGRATOR
            .iter()
            .filter(|m| m.version <= 2)
            .cloned()
            .collect();
        let old = SqliteStore::open_migrated(&path, &v2).await.unwrap();
        assert_eq!(old.schema_version().await.unwrap(), 2);
        old.sql()
            .begin_run_at_schema_v2(&crate::conformance::schema_v2_run())
            .await
            .unwrap();
        old.record_attempts(&crate::conformance::schema_v2_attempts())
            .await
            .unwrap();
        old.close().await;

        let store = SqliteStore::open(&path).await.unwrap();
        assert_eq!(store.schema_version().await.unwrap(), 3);
        crate::conformance::schema_v2_runs_survive_migration(&store).await;
    }

    /// The flaky-statistics reads walk indexes, never a whole table of
    /// attempts: by test when tests are asked, by run otherwise, and a
    /// slot's order by (run, worker, slot).
    #[tokio::test]
    async fn history_and_slot_order_read_indexes() {
        let store = SqliteStore::open_in_memory().await.unwrap();
        let plan = |statement: String| {
            let store = store.clone();
            async move {
                let rows: Vec<(i64, i64, i64, String)> =
                    sqlx::query_as(&format!("EXPLAIN QUERY PLAN {statement}"))
                        .fetch_all(&store.pool)
                        .await
                        .unwrap();
                rows.into_iter().map(|r| r.3).collect::<Vec<_>>()
            }
        };
        let shape = |tests: Option<usize>| sql::HistoryShape {
            tests,
            since: true,
            kinds: Some(2),
            limit: true,
        };
        let by_test = plan(sql::history(Dialect::Sqlite, shape(Some(3)))).await;
        assert!(
            by_test.iter().any(|s| s.contains("INDEX attempts_by_test")),
            "{by_test:#?}"
        );
        let by_run = plan(sql::history(Dialect::Sqlite, shape(None))).await;
        assert!(
            by_run.iter().any(|s| s.starts_with("SEARCH a USING INDEX")),
            "{by_run:#?}"
        );
        let slot = plan(sql::SLOT_BEFORE.to_owned()).await;
        assert!(
            slot.iter().any(|s| s.contains("INDEX attempts_slot_order")),
            "{slot:#?}"
        );
        for p in [&by_test, &by_run, &slot] {
            assert!(!p.iter().any(|s| s.starts_with("SCAN a")), "{p:#?}");
        }
    }

    #[tokio::test]
    async fn store_from_a_newer_shoal_is_refused() {
        let (_dir, path, store) = file_store().await;
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
        let (_dir, path, store) = file_store().await;
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
        let (_dir, _, store) = file_store().await;
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
