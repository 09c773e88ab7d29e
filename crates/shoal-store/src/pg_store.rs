//! [`PgStore`]: the shared store, a PostgreSQL database that a fleet of
//! shoal processes (coordinators, CLIs) reads and writes at once.

use crate::migration::{self, Applied};
use crate::open::redact_url;
use crate::sql::{self, Dialect, Names, distinct, interned};
use crate::store::DEFAULT_ESTIMATE_WINDOW;
use crate::{
    AttemptRecord, CoordinatorLock, LeaseRecord, QueuedRun, RunRecord, RunSummary, Store,
    StoreError,
};
use shoal_core::{RunCounts, TestId};
use sqlx::Connection;
use sqlx::Executor;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

/// Migrations embedded at build time from `migrations/postgres/`.
static MIGRATOR: Migrator = sqlx::migrate!("./migrations/postgres");

/// Connections per store. Statements are short; more connections than this
/// would only queue on the server's locks.
const MAX_CONNECTIONS: u32 = 8;

/// How long to wait for a pooled connection (or a new one) before failing.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(30);

/// Advisory lock (transaction scope) that serializes migrations, so that
/// concurrent first opens of a fresh database apply each migration once.
/// Advisory lock keys are per database; these spell "shoal" and a number.
const MIGRATION_LOCK_KEY: i64 = 0x7368_6f61_6c00_0001;

/// Advisory lock (session scope) held by the store's one coordinator.
const COORDINATOR_LOCK_KEY: i64 = 0x7368_6f61_6c00_0002;

/// Reads run in one snapshot: every chunk of a lookup sees the same data.
const BEGIN_READ: &str = "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY";

const CREATE_SCHEMA_TABLE: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (\
     version BIGINT PRIMARY KEY, description TEXT NOT NULL, \
     checksum BYTEA NOT NULL, applied DOUBLE PRECISION NOT NULL)";

/// A [`Store`] in a PostgreSQL database.
#[derive(Clone)]
pub struct PgStore {
    pool: PgPool,
    /// For the coordinator lock's dedicated connection. Holds the password:
    /// never printed.
    options: PgConnectOptions,
    /// The URL with its password redacted, for messages.
    location: String,
    window: usize,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("location", &self.location)
            .field("window", &self.window)
            .finish_non_exhaustive()
    }
}

impl PgStore {
    /// Connects to the database at `url` (`postgres://USER:PASSWORD@HOST[:PORT]/DATABASE`,
    /// which must exist) and brings its schema up to date. Errors name the
    /// URL with its password redacted.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let location = redact_url(url);
        let open_err = |source| StoreError::Open {
            location: location.clone(),
            source: scrub(source, url),
        };
        let options = PgConnectOptions::from_str(url)
            .map_err(open_err)?
            .application_name("shoal");
        // One plain connection first: an unreachable server or a refused
        // login fails at once (a pool would retry until its timeout), and it
        // applies the migrations.
        let mut conn = PgConnection::connect_with(&options)
            .await
            .map_err(open_err)?;
        migrate(&mut conn, &location).await?;
        let _ = conn.close().await;
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_lazy_with(options.clone());
        Ok(Self {
            pool,
            options,
            location,
            window: DEFAULT_ESTIMATE_WINDOW,
        })
    }

    /// Uses the last `window` timed attempts (at least 1) for duration
    /// estimates instead of [`DEFAULT_ESTIMATE_WINDOW`].
    pub fn with_estimate_window(mut self, window: usize) -> Self {
        self.window = window.max(1);
        self
    }

    /// The database URL, its password redacted.
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

    /// Closes every pooled connection (a held coordinator lock keeps its own).
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// `err`, unless its message shows the URL's password, in which case an
/// error with the same message and the password redacted. (sqlx's messages
/// do not quote passwords today; this keeps it so.) A password that the
/// redacted URL shows anyway (one equal to the user or database name) is
/// left alone: replacing it would only mangle those names.
fn scrub(err: sqlx::Error, url: &str) -> sqlx::Error {
    let Some(password) = url_password(url) else {
        return err;
    };
    if redact_url(url).contains(&password) {
        return err;
    }
    let msg = err.to_string();
    let decoded = percent_decode(&password);
    if msg.contains(&password) || msg.contains(&decoded) {
        let clean = msg.replace(&password, "***").replace(&decoded, "***");
        return sqlx::Error::Configuration(clean.into());
    }
    err
}

/// The password in a URL's user info, as written (percent-encoded).
fn url_password(url: &str) -> Option<String> {
    let rest = &url[url.find("://")? + 3..];
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    let userinfo = &authority[..authority.rfind('@')?];
    let (_, password) = userinfo.split_once(':')?;
    (!password.is_empty()).then(|| password.to_owned())
}

/// `s` with `%XX` escapes decoded (invalid ones kept as written).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Applies pending migrations in one transaction that holds the migration
/// advisory lock (see [`migration`]); PostgreSQL's DDL is transactional, so
/// a failed migration leaves nothing behind.
async fn migrate(conn: &mut PgConnection, location: &str) -> Result<(), StoreError> {
    let err = |source| StoreError::Migrate {
        location: location.to_owned(),
        source,
    };
    let mut tx = conn.begin().await.map_err(err)?;
    // Without the notice "relation schema_migrations already exists,
    // skipping", which sqlx would log on every open.
    sqlx::query("SET LOCAL client_min_messages = warning")
        .execute(&mut *tx)
        .await
        .map_err(err)?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(MIGRATION_LOCK_KEY)
        .execute(&mut *tx)
        .await
        .map_err(err)?;
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
/// `tests` must be sorted: concurrent transactions then take the unique
/// index's row locks in one order and cannot deadlock.
async fn intern_tests(
    conn: &mut PgConnection,
    tests: &[(&str, &str)],
) -> Result<TestKeys, StoreError> {
    let action = "record test names";
    let mut keys = TestKeys::new();
    let full = sql::rows_per_statement(sql::TEST_COLUMNS);
    for chunk in tests.chunks(full) {
        let insert = sql::insert_tests(Dialect::Postgres, chunk.len());
        let mut q = sqlx::query(&insert).persistent(chunk.len() == full);
        for (suite, name) in chunk {
            q = q.bind(*suite).bind(*name);
        }
        q.execute(&mut *conn)
            .await
            .map_err(StoreError::query(action))?;

        let select = sql::select_tests(Dialect::Postgres, chunk.len());
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

/// Adds the `names` (sorted, as for [`intern_tests`]) not yet in table
/// `kind` and returns the keys of all.
async fn intern_names(
    conn: &mut PgConnection,
    kind: Names,
    names: &[&str],
) -> Result<HashMap<String, i64>, StoreError> {
    let action = "record worker and commit names";
    let mut keys = HashMap::new();
    for chunk in names.chunks(sql::rows_per_statement(1)) {
        let insert = kind.insert(Dialect::Postgres, chunk.len());
        let mut q = sqlx::query(&insert).persistent(false);
        for name in chunk {
            q = q.bind(*name);
        }
        q.execute(&mut *conn)
            .await
            .map_err(StoreError::query(action))?;

        let select = kind.select(Dialect::Postgres, chunk.len());
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

/// The distinct items, sorted.
fn sorted<T: Ord + Eq + std::hash::Hash + Copy>(items: impl Iterator<Item = T>) -> Vec<T> {
    let mut items = distinct(items);
    items.sort_unstable();
    items
}

#[async_trait::async_trait]
impl Store for PgStore {
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
        let mut tx = self.pool.begin().await.map_err(StoreError::query(action))?;

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
        let tests = sorted(attempts.iter().map(|a| (a.suite.as_str(), a.test.as_str())));
        let tests = intern_tests(&mut tx, &tests).await?;
        let workers = sorted(attempts.iter().map(|a| a.worker.as_str()));
        let workers = intern_names(&mut tx, Names::Workers, &workers).await?;
        let commits = sorted(attempts.iter().filter_map(|a| a.commit.as_deref()));
        let commits = intern_names(&mut tx, Names::Commits, &commits).await?;

        let full = sql::rows_per_statement(sql::ATTEMPT_COLUMNS);
        for chunk in attempts.chunks(full) {
            let insert = sql::insert_attempts(Dialect::Postgres, chunk.len());
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
        let mut tx = self
            .pool
            .begin_with(BEGIN_READ)
            .await
            .map_err(StoreError::query(action))?;
        let full = sql::rows_per_statement(sql::TIMING_COLUMNS);
        for (n, chunk) in tests.chunks(full).enumerate() {
            let select = sql::recent_timings(Dialect::Postgres, chunk.len(), self.window);
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
            if let Ok(duration) = Duration::try_from_secs_f64(median) {
                estimates.insert(tests[index].clone(), duration);
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
        let mut tx = self
            .pool
            .begin_with(BEGIN_READ)
            .await
            .map_err(StoreError::query(action))?;
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
        let mut tx = self.pool.begin().await.map_err(StoreError::query(action))?;
        let closed = sqlx::query(sql::CLOSE_QUEUED_RUN)
            .bind(run_id)
            .bind(shoal_core::now_epoch())
            .execute(&mut *tx)
            .await
            .map_err(StoreError::query(action))?;
        if closed.rows_affected() == 0 {
            let open: Option<bool> = sqlx::query_scalar(sql::QUEUED_RUN_IS_OPEN)
                .bind(run_id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(StoreError::query(action))?;
            if open.is_none() {
                return Err(StoreError::UnknownRun(run_id.to_owned()));
            }
        }
        // The run's row lock (taken by the update, or already released by
        // the transaction that closed it) orders this after any lease saved
        // while it was open.
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
        let mut tx = self.pool.begin().await.map_err(StoreError::query(action))?;
        // Locks the run's row (against a concurrent close) and reads whether
        // it is open.
        let open: Option<bool> = sqlx::query_scalar(
            "SELECT closed IS NULL FROM queued_runs WHERE run_id = $1 FOR SHARE",
        )
        .bind(&lease.run_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(StoreError::query(action))?;
        match open {
            None => return Err(StoreError::UnknownRun(lease.run_id.clone())),
            // Closing deleted the run's leases for good.
            Some(false) => return Ok(()),
            Some(true) => {}
        }
        sqlx::query(sql::SAVE_LEASE)
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
        // One statement: the row lock serializes concurrent reservations.
        let next: Option<i64> = sqlx::query_scalar(sql::RESERVE_TOKENS)
            .bind(count)
            .bind(limit)
            .fetch_optional(&self.pool)
            .await
            .map_err(StoreError::query(action))?;
        let current = match next {
            Some(_) => None,
            None => sqlx::query_scalar(sql::NEXT_TOKEN)
                .fetch_optional(&self.pool)
                .await
                .map_err(StoreError::query(action))?,
        };
        sql::reserved_base(n, next, current)
    }

    async fn lock_coordinator(&self) -> Result<CoordinatorLock, StoreError> {
        // A connection of its own, outside the pool: the lock lives as long
        // as this session, which ends with the guard or the process.
        let mut conn = PgConnection::connect_with(&self.options)
            .await
            .map_err(|source| StoreError::Open {
                location: self.location.clone(),
                source,
            })?;
        let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(COORDINATOR_LOCK_KEY)
            .fetch_one(&mut conn)
            .await
            .map_err(StoreError::query("take the coordinator lock"))?;
        if !locked {
            let _ = conn.close().await;
            return Err(StoreError::Locked {
                location: self.location.clone(),
            });
        }
        Ok(CoordinatorLock::postgres(conn, COORDINATOR_LOCK_KEY))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_pg::with_database;
    use std::sync::Arc;

    async fn count(store: &PgStore, sql: &str) -> i64 {
        sqlx::query_scalar(sql)
            .fetch_one(&store.pool)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn conformance() {
        with_database("pg_store::tests::conformance", |url| async move {
            let store = PgStore::open(&url).await.unwrap();
            crate::conformance::run_all(&store).await;
        })
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn conformance_shared_between_two_stores() {
        with_database(
            "pg_store::tests::conformance_shared_between_two_stores",
            |url| async move {
                let a = PgStore::open(&url).await.unwrap();
                let b = PgStore::open(&url).await.unwrap();
                crate::conformance::run_shared(Arc::new(a), Arc::new(b)).await;
            },
        )
        .await;
    }

    /// Two processes opening a fresh database at once apply each migration
    /// once; reopening keeps data and the token counter.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_first_opens_and_reopening() {
        with_database(
            "pg_store::tests::concurrent_first_opens_and_reopening",
            |url| async move {
                let (a, b, c) = tokio::join!(
                    PgStore::open(&url),
                    PgStore::open(&url),
                    PgStore::open(&url)
                );
                let (a, b, c) = (a.unwrap(), b.unwrap(), c.unwrap());
                let latest = MIGRATOR.iter().map(|m| m.version).max().unwrap();
                assert_eq!(b.schema_version().await.unwrap(), latest);
                assert_eq!(
                    count(&a, "SELECT COUNT(*) FROM schema_migrations").await,
                    MIGRATOR.iter().count() as i64
                );
                let base = a.reserve_tokens(50).await.unwrap();
                a.save_queued_run(&QueuedRun {
                    run_id: "kept".to_owned(),
                    spec: "{}".to_owned(),
                    submitted: 1.0,
                })
                .await
                .unwrap();
                for store in [a, b, c] {
                    store.close().await;
                }

                let store = PgStore::open(&url).await.unwrap();
                assert!(store.reserve_tokens(1).await.unwrap() >= base + 50);
                assert_eq!(store.open_queued_runs().await.unwrap()[0].run_id, "kept");
                assert_eq!(
                    count(&store, "SELECT COUNT(*) FROM schema_migrations").await,
                    MIGRATOR.iter().count() as i64
                );
            },
        )
        .await;
    }

    #[tokio::test]
    async fn store_from_a_newer_shoal_is_refused() {
        with_database(
            "pg_store::tests::store_from_a_newer_shoal_is_refused",
            |url| async move {
                let store = PgStore::open(&url).await.unwrap();
                sqlx::query("INSERT INTO schema_migrations VALUES (9999, 'future', '\\x00', 0)")
                    .execute(&store.pool)
                    .await
                    .unwrap();
                store.close().await;
                let err = PgStore::open(&url).await.unwrap_err();
                assert!(
                    matches!(err, StoreError::SchemaTooNew { found: 9999, .. }),
                    "{err:?}"
                );
            },
        )
        .await;
    }

    #[tokio::test]
    async fn estimate_window_is_configurable() {
        with_database(
            "pg_store::tests::estimate_window_is_configurable",
            |url| async move {
                let store = PgStore::open(&url).await.unwrap().with_estimate_window(3);
                store
                    .begin_run(&RunRecord {
                        run_id: "w".to_owned(),
                        started: 0.0,
                        commit: None,
                        dirty: false,
                        worker: "local".to_owned(),
                        selection: "all".to_owned(),
                        planned: 4,
                    })
                    .await
                    .unwrap();
                let batch: Vec<_> = [100.0, 1.0, 2.0, 9.0]
                    .into_iter()
                    .enumerate()
                    .map(|(i, d)| AttemptRecord {
                        run_id: "w".to_owned(),
                        suite: "s".to_owned(),
                        test: "t".to_owned(),
                        attempt: i as u32 + 1,
                        repeat: 0,
                        outcome: shoal_core::Outcome::Pass,
                        slot: 0,
                        worker: "local".to_owned(),
                        start: i as f64,
                        end: i as f64 + d,
                        duration: d,
                        final_status: None,
                        message: None,
                        commit: None,
                        dirty: false,
                    })
                    .collect();
                store.record_attempts(&batch).await.unwrap();
                let id = TestId::new("s", "t");
                let estimates = store
                    .duration_estimates(std::slice::from_ref(&id))
                    .await
                    .unwrap();
                assert_eq!(estimates[&id], Duration::from_secs(2), "median of 1, 2, 9");
            },
        )
        .await;
    }

    #[tokio::test]
    async fn debug_and_errors_hide_the_password() {
        with_database(
            "pg_store::tests::debug_and_errors_hide_the_password",
            |url| async move {
                let store = PgStore::open(&url).await.unwrap();
                let shown = format!("{store:?} {}", store.location());
                if let Some(password) = url_password(&url) {
                    assert!(!shown.contains(&format!(":{password}@")), "{shown}");
                    assert!(shown.contains(":***@"), "{shown}");
                }
                // A database that does not exist: the error names the URL,
                // redacted.
                let missing = crate::test_pg::with_database_name(&url, "shoal_t_missing");
                let err = PgStore::open(&missing).await.unwrap_err();
                let msg = format!("{err} {err:?}");
                assert!(msg.contains("shoal_t_missing"), "{msg}");
                if let Some(password) = url_password(&url) {
                    assert!(!msg.contains(&format!(":{password}@")), "{msg}");
                }
            },
        )
        .await;
    }

    #[test]
    fn passwords_are_found_and_scrubbed_from_messages() {
        let url = "postgres://u:p%40ss@h/db";
        assert_eq!(url_password(url).as_deref(), Some("p%40ss"));
        assert_eq!(percent_decode("p%40ss%zz%4"), "p@ss%zz%4");
        assert_eq!(url_password("postgres://u@h/db"), None);
        assert_eq!(url_password("postgres://u:@h/db"), None);
        let err = sqlx::Error::Configuration("bad password p@ss for u".into());
        let scrubbed = scrub(err, url).to_string();
        assert!(!scrubbed.contains("p@ss"), "{scrubbed}");
        assert!(scrubbed.contains("bad password *** for u"), "{scrubbed}");
        let err = sqlx::Error::Configuration("unrelated".into());
        assert_eq!(
            scrub(err, url).to_string(),
            "error with configuration: unrelated"
        );
        // A password equal to the user name is shown by the redacted URL
        // anyway; the user name is not mangled.
        let err = sqlx::Error::Configuration("role shoal does not exist".into());
        let same = "postgres://shoal:shoal@h/db";
        assert!(scrub(err, same).to_string().contains("role shoal"));
    }
}
