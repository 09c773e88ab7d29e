//! [`SqlStore`]: the logic of every [`Store`](crate::Store) method, written
//! once for SQLite and PostgreSQL, and [`impl_store!`], which builds each
//! adapter's `Store` impl from it.
//!
//! Why generics and not a macro that pastes the method bodies into each
//! adapter: the bodies stay plain Rust that rustfmt, clippy and
//! rust-analyzer see, they are type-checked once for every engine, and what
//! an engine must support is written down in one place, the `where` clause
//! of `SqlStore`'s one `impl` block (long, but stated once). The one macro,
//! [`impl_store!`], holds no logic: it spells out the `Store` trait's
//! signatures, each a one-line call into `SqlStore` or into the adapter's
//! [`Adapter`] methods, so that they are not written twice either.
//!
//! What differs by engine stays in its adapter: parameter spelling, how
//! transactions begin and the statement that locks a queued run (its
//! [`Engine`] impl), migrations around [`SqlStore::apply_migrations`],
//! connection setup, what guards the fencing-token counter around
//! [`SqlStore::reserve_tokens_on`], and the coordinator lock.

use crate::migration::{self, Applied};
use crate::sql::{self, Dialect, Names, distinct, interned, sorted};
use crate::{
    AttemptRecord, CoordinatorLock, HistoryQuery, HistoryRow, LeaseRecord, QueuedRun, RunHealthRow,
    RunRecord, RunSummary, SlotOrder, StoreError,
};
use shoal_core::{RunCounts, TestId};
use sqlx::database::HasStatementCache;
use sqlx::migrate::Migration;
use sqlx::{
    ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Pool, Transaction, Type,
};
use std::collections::HashMap;
use std::time::Duration;

/// A database engine as the shared logic uses it: an sqlx driver plus the
/// choices its adapter makes. Implemented in each adapter's module.
pub(crate) trait Engine: Database + HasStatementCache {
    /// How bulk statements spell their parameters.
    const DIALECT: Dialect;

    /// Begins a transaction that writes; `None` for the driver's `BEGIN`.
    const BEGIN_WRITE: Option<&'static str>;

    /// Begins a transaction that only reads, in which every chunk of a
    /// lookup sees the same data; `None` for the driver's `BEGIN`.
    const BEGIN_READ: Option<&'static str>;

    /// Binds: run_id. Yields `true` for an open queued run, `false` for a
    /// closed one, no row for an unknown one; and, inside a transaction
    /// begun with [`BEGIN_WRITE`](Self::BEGIN_WRITE), keeps the run from
    /// being closed until that transaction ends.
    const LOCK_QUEUED_RUN: &'static str;

    /// How many rows a statement changed.
    fn rows_affected(done: &Self::QueryResult) -> u64;
}

/// What an adapter adds to [`SqlStore`] to make a [`Store`](crate::Store)
/// with [`impl_store!`]: where its `SqlStore` is, and the two methods whose
/// logic differs by engine.
pub(crate) trait Adapter {
    /// The adapter's engine.
    type Engine: Engine;

    /// The shared logic over this store's pool.
    fn sql(&self) -> SqlStore<'_, Self::Engine>;

    /// [`Store::reserve_tokens`](crate::Store::reserve_tokens).
    async fn reserve_token_range(&self, n: u64) -> Result<u64, StoreError>;

    /// [`Store::lock_coordinator`](crate::Store::lock_coordinator).
    async fn take_coordinator_lock(&self) -> Result<CoordinatorLock, StoreError>;
}

/// Implements [`Store`](crate::Store) for a type that implements
/// [`Adapter`]: every method but two goes to [`SqlStore`], those two to the
/// adapter.
macro_rules! impl_store {
    ($adapter:ty) => {
        #[async_trait::async_trait]
        impl $crate::Store for $adapter {
            async fn begin_run(&self, run: &$crate::RunRecord) -> Result<(), $crate::StoreError> {
                $crate::sql_store::Adapter::sql(self).begin_run(run).await
            }

            async fn record_attempts(
                &self,
                attempts: &[$crate::AttemptRecord],
            ) -> Result<(), $crate::StoreError> {
                $crate::sql_store::Adapter::sql(self)
                    .record_attempts(attempts)
                    .await
            }

            async fn finish_run(
                &self,
                run_id: &str,
                end: f64,
                counts: &shoal_core::RunCounts,
                interrupted: bool,
                exit_code: i32,
            ) -> Result<(), $crate::StoreError> {
                $crate::sql_store::Adapter::sql(self)
                    .finish_run(run_id, end, counts, interrupted, exit_code)
                    .await
            }

            async fn duration_estimates(
                &self,
                tests: &[shoal_core::TestId],
            ) -> Result<
                std::collections::HashMap<shoal_core::TestId, std::time::Duration>,
                $crate::StoreError,
            > {
                $crate::sql_store::Adapter::sql(self)
                    .duration_estimates(tests)
                    .await
            }

            async fn runs(
                &self,
                limit: usize,
            ) -> Result<Vec<$crate::RunSummary>, $crate::StoreError> {
                $crate::sql_store::Adapter::sql(self).runs(limit).await
            }

            async fn attempts_of_run(
                &self,
                run_id: &str,
            ) -> Result<Vec<$crate::AttemptRecord>, $crate::StoreError> {
                $crate::sql_store::Adapter::sql(self)
                    .attempts_of_run(run_id)
                    .await
            }

            async fn history(
                &self,
                query: &$crate::HistoryQuery,
            ) -> Result<Vec<$crate::HistoryRow>, $crate::StoreError> {
                $crate::sql_store::Adapter::sql(self).history(query).await
            }

            async fn run_health(
                &self,
                run_ids: &[String],
            ) -> Result<Vec<$crate::RunHealthRow>, $crate::StoreError> {
                $crate::sql_store::Adapter::sql(self)
                    .run_health(run_ids)
                    .await
            }

            async fn slot_order(
                &self,
                run_id: &str,
                test: &shoal_core::TestId,
            ) -> Result<Option<$crate::SlotOrder>, $crate::StoreError> {
                $crate::sql_store::Adapter::sql(self)
                    .slot_order(run_id, test)
                    .await
            }

            async fn save_queued_run(
                &self,
                run: &$crate::QueuedRun,
            ) -> Result<(), $crate::StoreError> {
                $crate::sql_store::Adapter::sql(self)
                    .save_queued_run(run)
                    .await
            }

            async fn close_queued_run(&self, run_id: &str) -> Result<(), $crate::StoreError> {
                $crate::sql_store::Adapter::sql(self)
                    .close_queued_run(run_id)
                    .await
            }

            async fn open_queued_runs(&self) -> Result<Vec<$crate::QueuedRun>, $crate::StoreError> {
                $crate::sql_store::Adapter::sql(self)
                    .open_queued_runs()
                    .await
            }

            async fn save_lease(
                &self,
                lease: &$crate::LeaseRecord,
            ) -> Result<(), $crate::StoreError> {
                $crate::sql_store::Adapter::sql(self)
                    .save_lease(lease)
                    .await
            }

            async fn drop_lease(
                &self,
                run_id: &str,
                lease_id: u64,
            ) -> Result<(), $crate::StoreError> {
                $crate::sql_store::Adapter::sql(self)
                    .drop_lease(run_id, lease_id)
                    .await
            }

            async fn leases(
                &self,
                run_id: Option<&str>,
            ) -> Result<Vec<$crate::LeaseRecord>, $crate::StoreError> {
                $crate::sql_store::Adapter::sql(self).leases(run_id).await
            }

            async fn reserve_tokens(&self, n: u64) -> Result<u64, $crate::StoreError> {
                $crate::sql_store::Adapter::reserve_token_range(self, n).await
            }

            async fn lock_coordinator(
                &self,
            ) -> Result<$crate::CoordinatorLock, $crate::StoreError> {
                $crate::sql_store::Adapter::take_coordinator_lock(self).await
            }
        }
    };
}
pub(crate) use impl_store;

/// The SQL half of a store, for one call: its pool and estimate window,
/// borrowed from the adapter.
#[derive(Debug)]
pub(crate) struct SqlStore<'a, DB: Database> {
    pool: &'a Pool<DB>,
    window: usize,
}

/// Interned test keys: suite → name → id.
type TestKeys = HashMap<String, HashMap<String, i64>>;

// What an engine must support: executing on a pool or a connection, and
// the value types the statements in `sql` bind and read.
impl<'a, DB> SqlStore<'a, DB>
where
    DB: Engine,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'v> i64: Type<DB> + Encode<'v, DB> + Decode<'v, DB>,
    for<'v> f64: Type<DB> + Encode<'v, DB> + Decode<'v, DB>,
    for<'v> bool: Type<DB> + Encode<'v, DB> + Decode<'v, DB>,
    for<'v> &'v str: Type<DB> + Encode<'v, DB>,
    for<'v> &'v [u8]: Type<DB> + Encode<'v, DB>,
    for<'v> Option<i64>: Encode<'v, DB>,
    for<'v> Option<&'v str>: Encode<'v, DB>,
    for<'v> String: Type<DB> + Decode<'v, DB>,
    for<'v> Vec<u8>: Type<DB> + Decode<'v, DB>,
    for<'n> &'n str: ColumnIndex<DB::Row>,
    usize: ColumnIndex<DB::Row>,
{
    /// The shared logic over `pool`, estimating durations from the newest
    /// `window` timed attempts.
    pub(crate) fn new(pool: &'a Pool<DB>, window: usize) -> Self {
        Self { pool, window }
    }

    /// A transaction begun with `statement` (`None`: the driver's `BEGIN`).
    async fn begin(
        &self,
        statement: Option<&'static str>,
        action: &'static str,
    ) -> Result<Transaction<'static, DB>, StoreError> {
        match statement {
            None => self.pool.begin().await,
            Some(statement) => self.pool.begin_with(statement).await,
        }
        .map_err(StoreError::query(action))
    }

    /// `Ok` if the statement changed a row, `otherwise()` if not.
    fn changed_a_row(
        done: &DB::QueryResult,
        otherwise: impl FnOnce() -> StoreError,
    ) -> Result<(), StoreError> {
        if DB::rows_affected(done) == 0 {
            return Err(otherwise());
        }
        Ok(())
    }

    /// The newest applied migration's version (0 for none).
    pub(crate) async fn schema_version(&self) -> Result<i64, StoreError> {
        sqlx::query_scalar::<_, Option<i64>>(sql::SCHEMA_VERSION)
            .fetch_one(self.pool)
            .await
            .map(Option::unwrap_or_default)
            .map_err(StoreError::query("read the schema version"))
    }

    /// Creates the `schema_migrations` table with `create_table` if it is
    /// missing, then applies and records the `migrations` (the adapter's
    /// embedded ones; fewer in tests that build an old store) that the
    /// store lacks (see [`migration`]), all in `tx`. The adapter begins
    /// `tx` (holding whatever lock keeps concurrent openers out) and
    /// commits it.
    pub(crate) async fn apply_migrations(
        tx: &mut Transaction<'_, DB>,
        migrations: &[Migration],
        create_table: &str,
        location: &str,
    ) -> Result<(), StoreError> {
        let err = StoreError::migrate(location);
        sqlx::query(create_table)
            .execute(&mut **tx)
            .await
            .map_err(err)?;
        let applied: Vec<Applied> = sqlx::query_as(sql::APPLIED_MIGRATIONS)
            .fetch_all(&mut **tx)
            .await
            .map_err(err)?;
        for m in migration::pending(migrations, &applied, location)? {
            // A query without arguments runs as a simple query: several
            // statements at once. (`sqlx::raw_sql` does the same but its future
            // is not provably `Send`: sqlx issue #3150.)
            (&mut **tx).execute(&*m.sql).await.map_err(err)?;
            sqlx::query(sql::RECORD_MIGRATION)
                .bind(m.version)
                .bind(&*m.description)
                .bind(&*m.checksum)
                .bind(shoal_core::now_epoch())
                .execute(&mut **tx)
                .await
                .map_err(err)?;
        }
        Ok(())
    }

    /// Adds the tests not yet known and returns the keys of all of them.
    /// `tests` should be [`sorted`].
    async fn intern_tests(
        conn: &mut DB::Connection,
        tests: &[(&str, &str)],
    ) -> Result<TestKeys, StoreError> {
        let action = "record test names";
        let mut keys = TestKeys::new();
        let full = sql::rows_per_statement(sql::TEST_COLUMNS);
        for chunk in tests.chunks(full) {
            let insert = sql::insert_tests(DB::DIALECT, chunk.len());
            let mut q = sqlx::query(&insert).persistent(chunk.len() == full);
            for (suite, name) in chunk {
                q = q.bind(*suite).bind(*name);
            }
            q.execute(&mut *conn)
                .await
                .map_err(StoreError::query(action))?;

            let select = sql::select_tests(DB::DIALECT, chunk.len());
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

    /// Adds the `names` (which should be [`sorted`]) not yet in table `kind`
    /// and returns the keys of all.
    async fn intern_names(
        conn: &mut DB::Connection,
        kind: Names,
        names: &[&str],
    ) -> Result<HashMap<String, i64>, StoreError> {
        let action = "record worker and commit names";
        let mut keys = HashMap::new();
        for chunk in names.chunks(sql::rows_per_statement(1)) {
            let insert = kind.insert(DB::DIALECT, chunk.len());
            let mut q = sqlx::query(&insert).persistent(false);
            for name in chunk {
                q = q.bind(*name);
            }
            q.execute(&mut *conn)
                .await
                .map_err(StoreError::query(action))?;

            let select = kind.select(DB::DIALECT, chunk.len());
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

    /// [`Store::begin_run`](crate::Store::begin_run).
    pub(crate) async fn begin_run(&self, run: &RunRecord) -> Result<(), StoreError> {
        let done = sqlx::query(sql::INSERT_RUN)
            .bind(run.run_id.as_str())
            .bind(run.started)
            .bind(run.commit.as_deref())
            .bind(run.dirty)
            .bind(run.worker.as_str())
            .bind(run.selection.as_str())
            .bind(sql::count_param(run.planned))
            .bind(run.environment.as_str())
            .bind(sql::seed_param(run.seed))
            .bind(run.kind.as_str())
            .execute(self.pool)
            .await
            .map_err(StoreError::query("record the start of a run"))?;
        Self::changed_a_row(&done, || StoreError::DuplicateRun(run.run_id.clone()))
    }

    /// Test support: records the start of `run` as a store at schema
    /// version 2 did, without an environment, a seed or a kind.
    #[cfg(test)]
    pub(crate) async fn begin_run_at_schema_v2(&self, run: &RunRecord) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO runs (uid, started, commit_sha, dirty, worker, selection, planned) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(run.run_id.as_str())
        .bind(run.started)
        .bind(run.commit.as_deref())
        .bind(run.dirty)
        .bind(run.worker.as_str())
        .bind(run.selection.as_str())
        .bind(sql::count_param(run.planned))
        .execute(self.pool)
        .await
        .map_err(StoreError::query("record the start of a version 2 run"))?;
        Ok(())
    }

    /// [`Store::record_attempts`](crate::Store::record_attempts).
    pub(crate) async fn record_attempts(
        &self,
        attempts: &[AttemptRecord],
    ) -> Result<(), StoreError> {
        if attempts.is_empty() {
            return Ok(());
        }
        let action = "record attempts";
        let mut tx = self.begin(DB::BEGIN_WRITE, action).await?;

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
        let tests = Self::intern_tests(&mut tx, &tests).await?;
        let workers = sorted(attempts.iter().map(|a| a.worker.as_str()));
        let workers = Self::intern_names(&mut tx, Names::Workers, &workers).await?;
        let commits = sorted(attempts.iter().filter_map(|a| a.commit.as_deref()));
        let commits = Self::intern_names(&mut tx, Names::Commits, &commits).await?;

        let full = sql::rows_per_statement(sql::ATTEMPT_COLUMNS);
        for chunk in attempts.chunks(full) {
            let insert = sql::insert_attempts(DB::DIALECT, chunk.len());
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

    /// [`Store::finish_run`](crate::Store::finish_run).
    pub(crate) async fn finish_run(
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
            .execute(self.pool)
            .await
            .map_err(StoreError::query("record the end of a run"))?;
        Self::changed_a_row(&done, || StoreError::UnknownRun(run_id.to_owned()))
    }

    /// [`Store::duration_estimates`](crate::Store::duration_estimates).
    pub(crate) async fn duration_estimates(
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
        let mut tx = self.begin(DB::BEGIN_READ, action).await?;
        let full = sql::rows_per_statement(sql::TIMING_COLUMNS);
        for (n, chunk) in tests.chunks(full).enumerate() {
            let select = sql::recent_timings(DB::DIALECT, chunk.len(), self.window);
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

    /// [`Store::runs`](crate::Store::runs).
    pub(crate) async fn runs(&self, limit: usize) -> Result<Vec<RunSummary>, StoreError> {
        sqlx::query_as::<_, sql::RunRow>(sql::RECENT_RUNS)
            .bind(sql::count_param(limit))
            .fetch_all(self.pool)
            .await
            .map_err(StoreError::query("list runs"))?
            .into_iter()
            .map(sql::RunRow::into_summary)
            .collect()
    }

    /// [`Store::attempts_of_run`](crate::Store::attempts_of_run).
    pub(crate) async fn attempts_of_run(
        &self,
        run_id: &str,
    ) -> Result<Vec<AttemptRecord>, StoreError> {
        let action = "read the attempts of a run";
        let mut tx = self.begin(DB::BEGIN_READ, action).await?;
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

    /// The keys of the tests that `query`'s `tests`, `suite` and
    /// `name_contains` allow, or `None` when they allow every test.
    async fn history_tests(
        conn: &mut DB::Connection,
        query: &HistoryQuery,
    ) -> Result<Option<Vec<i64>>, StoreError> {
        let action = "find the tests of a history query";
        let found: Vec<(i64, String, String)> = match (&query.tests, &query.suite) {
            (Some(tests), _) => {
                let tests = sorted(tests.iter().map(|t| (t.suite.as_str(), t.name.as_str())));
                let full = sql::rows_per_statement(sql::TEST_COLUMNS);
                let mut found = Vec::with_capacity(tests.len());
                for chunk in tests.chunks(full) {
                    let select = sql::select_tests(DB::DIALECT, chunk.len());
                    let mut q = sqlx::query_as(&select).persistent(chunk.len() == full);
                    for (suite, name) in chunk {
                        q = q.bind(*suite).bind(*name);
                    }
                    found.extend(
                        q.fetch_all(&mut *conn)
                            .await
                            .map_err(StoreError::query(action))?,
                    );
                }
                found
            }
            (None, Some(suite)) => sqlx::query_as(sql::TESTS_OF_SUITE)
                .bind(suite.as_str())
                .fetch_all(&mut *conn)
                .await
                .map_err(StoreError::query(action))?,
            (None, None) if query.name_contains.is_some() => sqlx::query_as(sql::ALL_TESTS)
                .fetch_all(&mut *conn)
                .await
                .map_err(StoreError::query(action))?,
            (None, None) => return Ok(None),
        };
        let wanted = |suite: &str, name: &str| {
            query.suite.as_deref().is_none_or(|s| s == suite)
                && query
                    .name_contains
                    .as_deref()
                    .is_none_or(|n| name.contains(n))
        };
        Ok(Some(
            found
                .into_iter()
                .filter(|(_, suite, name)| wanted(suite, name))
                .map(|(key, _, _)| key)
                .collect(),
        ))
    }

    /// [`Store::history`](crate::Store::history).
    pub(crate) async fn history(
        &self,
        query: &HistoryQuery,
    ) -> Result<Vec<HistoryRow>, StoreError> {
        let action = "read test history";
        let matches_nothing = query.limit == Some(0)
            || query.tests.as_ref().is_some_and(Vec::is_empty)
            || query.kinds.as_ref().is_some_and(Vec::is_empty);
        if matches_nothing {
            return Ok(Vec::new());
        }
        let kinds = query
            .kinds
            .as_ref()
            .map(|kinds| sorted(kinds.iter().map(String::as_str)));
        let limit = query.limit.map(sql::count_param);
        let mut tx = self.begin(DB::BEGIN_READ, action).await?;
        let tests = Self::history_tests(&mut tx, query).await?;

        // Statements of up to `full` test keys, with room for the other
        // parameters.
        let others = 3 + kinds.as_ref().map_or(0, Vec::len);
        let full = sql::rows_per_statement(1).saturating_sub(others).max(1);
        let chunks: Vec<Option<&[i64]>> = match &tests {
            None => vec![None],
            Some(keys) => keys.chunks(full).map(Some).collect(),
        };
        let mut rows: Vec<sql::HistoryDbRow> = Vec::new();
        for chunk in chunks {
            let shape = sql::HistoryShape {
                tests: chunk.map(<[i64]>::len),
                since: query.since.is_some(),
                kinds: kinds.as_ref().map(Vec::len),
                limit: limit.is_some(),
            };
            let select = sql::history(DB::DIALECT, shape);
            let mut q = sqlx::query_as::<_, sql::HistoryDbRow>(&select)
                .persistent(chunk.is_none_or(|c| c.len() == full));
            for key in chunk.into_iter().flatten() {
                q = q.bind(*key);
            }
            if let Some(since) = query.since {
                q = q.bind(since);
                if chunk.is_none() {
                    q = q.bind(since - sql::CLOCK_SKEW_MARGIN);
                }
            }
            for kind in kinds.iter().flatten() {
                q = q.bind(*kind);
            }
            if let Some(limit) = limit {
                q = q.bind(limit);
            }
            rows.extend(
                q.fetch_all(&mut *tx)
                    .await
                    .map_err(StoreError::query(action))?,
            );
        }
        tx.commit().await.map_err(StoreError::query(action))?;

        rows.sort_by(sql::HistoryDbRow::chronological);
        if let Some(limit) = query.limit {
            // Each chunk brought its newest `limit`; keep the newest overall.
            rows.drain(..rows.len().saturating_sub(limit));
        }
        rows.into_iter().map(sql::HistoryDbRow::into_row).collect()
    }

    /// [`Store::run_health`](crate::Store::run_health).
    pub(crate) async fn run_health(
        &self,
        run_ids: &[String],
    ) -> Result<Vec<RunHealthRow>, StoreError> {
        let action = "read the health of runs";
        let run_ids = distinct(run_ids.iter().map(String::as_str));
        if run_ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut counts: HashMap<String, (i64, i64)> = HashMap::with_capacity(run_ids.len());
        let mut tx = self.begin(DB::BEGIN_READ, action).await?;
        let full = sql::rows_per_statement(1);
        for chunk in run_ids.chunks(full) {
            let select = sql::run_health(DB::DIALECT, chunk.len());
            let mut q =
                sqlx::query_as::<_, (String, i64, i64)>(&select).persistent(chunk.len() == full);
            for run_id in chunk {
                q = q.bind(*run_id);
            }
            for (run_id, executions, failed) in q
                .fetch_all(&mut *tx)
                .await
                .map_err(StoreError::query(action))?
            {
                counts.insert(run_id, (executions, failed));
            }
        }
        tx.commit().await.map_err(StoreError::query(action))?;
        let mut health = Vec::with_capacity(counts.len());
        for run_id in run_ids {
            if let Some((executions, failed)) = counts.remove(run_id) {
                health.push(RunHealthRow {
                    run_id: run_id.to_owned(),
                    executions: sql::to_u64(executions, "execution count")?,
                    failed: sql::to_u64(failed, "failure count")?,
                });
            }
        }
        Ok(health)
    }

    /// [`Store::slot_order`](crate::Store::slot_order).
    pub(crate) async fn slot_order(
        &self,
        run_id: &str,
        test: &TestId,
    ) -> Result<Option<SlotOrder>, StoreError> {
        let action = "read the order of a slot";
        let mut tx = self.begin(DB::BEGIN_READ, action).await?;
        let failed: Option<sql::HistoryDbRow> = sqlx::query_as(sql::FIRST_FAILURE)
            .bind(run_id)
            .bind(test.suite.as_str())
            .bind(test.name.as_str())
            .fetch_optional(&mut *tx)
            .await
            .map_err(StoreError::query(action))?;
        let Some(failed) = failed else {
            let exists: Option<i64> = sqlx::query_scalar(sql::RUN_KEY)
                .bind(run_id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(StoreError::query(action))?;
            tx.commit().await.map_err(StoreError::query(action))?;
            return match exists {
                None => Err(StoreError::UnknownRun(run_id.to_owned())),
                Some(_) => Ok(None),
            };
        };
        let before: Vec<sql::HistoryDbRow> = sqlx::query_as(sql::SLOT_BEFORE)
            .bind(failed.run_key)
            .bind(failed.worker_key)
            .bind(failed.slot)
            .bind(failed.started)
            .bind(failed.attempt_key)
            .fetch_all(&mut *tx)
            .await
            .map_err(StoreError::query(action))?;
        tx.commit().await.map_err(StoreError::query(action))?;
        let failed = failed.into_row()?;
        Ok(Some(SlotOrder {
            worker: failed.worker.clone(),
            slot: failed.slot,
            failed,
            before: before
                .into_iter()
                .map(sql::HistoryDbRow::into_row)
                .collect::<Result<_, _>>()?,
        }))
    }

    /// [`Store::save_queued_run`](crate::Store::save_queued_run).
    pub(crate) async fn save_queued_run(&self, run: &QueuedRun) -> Result<(), StoreError> {
        let done = sqlx::query(sql::INSERT_QUEUED_RUN)
            .bind(run.run_id.as_str())
            .bind(run.spec.as_str())
            .bind(run.submitted)
            .execute(self.pool)
            .await
            .map_err(StoreError::query("save a queued run"))?;
        Self::changed_a_row(&done, || StoreError::DuplicateRun(run.run_id.clone()))
    }

    /// [`Store::close_queued_run`](crate::Store::close_queued_run).
    pub(crate) async fn close_queued_run(&self, run_id: &str) -> Result<(), StoreError> {
        let action = "close a queued run";
        let mut tx = self.begin(DB::BEGIN_WRITE, action).await?;
        let closed = sqlx::query(sql::CLOSE_QUEUED_RUN)
            .bind(run_id)
            .bind(shoal_core::now_epoch())
            .execute(&mut *tx)
            .await
            .map_err(StoreError::query(action))?;
        if DB::rows_affected(&closed) == 0 {
            // Closed before (and so without leases), or unknown.
            let open: Option<bool> = sqlx::query_scalar(sql::QUEUED_RUN_IS_OPEN)
                .bind(run_id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(StoreError::query(action))?;
            if open.is_none() {
                return Err(StoreError::UnknownRun(run_id.to_owned()));
            }
        }
        // The write transaction (on PostgreSQL, the run's row lock, taken by
        // the update or released by the transaction that closed it) orders
        // this after any lease saved while the run was open.
        sqlx::query(sql::DELETE_RUN_LEASES)
            .bind(run_id)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::query(action))?;
        tx.commit().await.map_err(StoreError::query(action))
    }

    /// [`Store::open_queued_runs`](crate::Store::open_queued_runs).
    pub(crate) async fn open_queued_runs(&self) -> Result<Vec<QueuedRun>, StoreError> {
        let rows = sqlx::query_as::<_, sql::QueuedRunRow>(sql::OPEN_QUEUED_RUNS)
            .fetch_all(self.pool)
            .await
            .map_err(StoreError::query("list open queued runs"))?;
        Ok(rows.into_iter().map(QueuedRun::from).collect())
    }

    /// [`Store::save_lease`](crate::Store::save_lease).
    pub(crate) async fn save_lease(&self, lease: &LeaseRecord) -> Result<(), StoreError> {
        let action = "save a lease";
        let mut tx = self.begin(DB::BEGIN_WRITE, action).await?;
        // Keeps the run from being closed until this commits, and reads
        // whether it is open.
        let open: Option<bool> = sqlx::query_scalar(DB::LOCK_QUEUED_RUN)
            .bind(lease.run_id.as_str())
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
            .bind(lease.run_id.as_str())
            .bind(sql::to_i64(lease.lease_id, "lease id")?)
            .bind(sql::to_i64(lease.token, "fencing token")?)
            .bind(lease.worker_id.as_str())
            .bind(i64::from(lease.slot))
            .bind(lease.items.as_str())
            .bind(lease.deadline)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::query(action))?;
        tx.commit().await.map_err(StoreError::query(action))
    }

    /// [`Store::drop_lease`](crate::Store::drop_lease).
    pub(crate) async fn drop_lease(&self, run_id: &str, lease_id: u64) -> Result<(), StoreError> {
        let Ok(lease_id) = i64::try_from(lease_id) else {
            // No such lease could have been saved.
            return Ok(());
        };
        sqlx::query(sql::DROP_LEASE)
            .bind(run_id)
            .bind(lease_id)
            .execute(self.pool)
            .await
            .map_err(StoreError::query("drop a lease"))?;
        Ok(())
    }

    /// [`Store::leases`](crate::Store::leases).
    pub(crate) async fn leases(
        &self,
        run_id: Option<&str>,
    ) -> Result<Vec<LeaseRecord>, StoreError> {
        let select = sql::leases(run_id.is_some());
        let mut q = sqlx::query_as::<_, sql::LeaseRow>(&select);
        if let Some(run_id) = run_id {
            q = q.bind(run_id);
        }
        q.fetch_all(self.pool)
            .await
            .map_err(StoreError::query("list leases"))?
            .into_iter()
            .map(sql::LeaseRow::into_record)
            .collect()
    }

    /// Reserves `n` fencing tokens on `conn`, as
    /// [`Store::reserve_tokens`](crate::Store::reserve_tokens) promises.
    /// What keeps concurrent reservations apart is the adapter's choice: it
    /// passes a connection in a transaction (and commits it), or a bare one
    /// on which the single update's row lock serializes them.
    pub(crate) async fn reserve_tokens_on(
        conn: &mut DB::Connection,
        n: u64,
    ) -> Result<u64, StoreError> {
        let action = "reserve fencing tokens";
        let (count, limit) = sql::reserve_params(n)?;
        let next: Option<i64> = sqlx::query_scalar(sql::RESERVE_TOKENS)
            .bind(count)
            .bind(limit)
            .fetch_optional(&mut *conn)
            .await
            .map_err(StoreError::query(action))?;
        let current = match next {
            Some(_) => None,
            None => sqlx::query_scalar(sql::NEXT_TOKEN)
                .fetch_optional(&mut *conn)
                .await
                .map_err(StoreError::query(action))?,
        };
        sql::reserved_base(n, next, current)
    }
}
