//! [`PgStore`]: the shared store, a PostgreSQL database that a fleet of
//! shoal processes (coordinators, CLIs) reads and writes at once.

use crate::open::redact_url;
use crate::sql::Dialect;
use crate::sql_store::{Adapter, Engine, SqlStore, impl_store};
use crate::store::DEFAULT_ESTIMATE_WINDOW;
use crate::{CoordinatorLock, StoreError};
use sqlx::Connection;
use sqlx::migrate::{Migration, Migrator};
use sqlx::postgres::{
    PgConnectOptions, PgConnection, PgPool, PgPoolOptions, PgQueryResult, Postgres,
};
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

/// A [`Store`](crate::Store) in a PostgreSQL database.
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
        Self::open_migrated(url, MIGRATOR.iter().as_slice()).await
    }

    /// [`open`](Self::open), applying `migrations` (all embedded ones, or
    /// fewer in tests that build an old store) as far as the database lacks
    /// them.
    async fn open_migrated(url: &str, migrations: &[Migration]) -> Result<Self, StoreError> {
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
        migrate(&mut conn, &location, migrations).await?;
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
        self.sql().schema_version().await
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
/// advisory lock (see [`migration`](crate::migration)); PostgreSQL's DDL is transactional, so
/// a failed migration leaves nothing behind.
async fn migrate(
    conn: &mut PgConnection,
    location: &str,
    migrations: &[Migration],
) -> Result<(), StoreError> {
    let err = StoreError::migrate(location);
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
    SqlStore::apply_migrations(&mut tx, migrations, CREATE_SCHEMA_TABLE, location).await?;
    tx.commit().await.map_err(err)
}

impl Engine for Postgres {
    const DIALECT: Dialect = Dialect::Postgres;
    /// READ COMMITTED: writers are ordered by the row locks they take.
    const BEGIN_WRITE: Option<&'static str> = None;
    const BEGIN_READ: Option<&'static str> = Some(BEGIN_READ);
    /// Locks the run's row against a concurrent close, whose update then
    /// waits for the lease's transaction, so that its delete sees the lease.
    const LOCK_QUEUED_RUN: &'static str =
        "SELECT closed IS NULL FROM queued_runs WHERE run_id = $1 FOR SHARE";

    fn rows_affected(done: &PgQueryResult) -> u64 {
        done.rows_affected()
    }
}

impl Adapter for PgStore {
    type Engine = Postgres;

    fn sql(&self) -> SqlStore<'_, Postgres> {
        SqlStore::new(&self.pool, self.window)
    }

    async fn reserve_token_range(&self, n: u64) -> Result<u64, StoreError> {
        // No transaction: the one update's row lock serializes concurrent
        // reservations.
        let mut conn = self
            .pool
            .acquire()
            .await
            .map_err(StoreError::query("reserve fencing tokens"))?;
        SqlStore::<Postgres>::reserve_tokens_on(&mut conn, n).await
    }

    async fn take_coordinator_lock(&self) -> Result<CoordinatorLock, StoreError> {
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

impl_store!(PgStore);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_pg::with_database;
    use crate::{AttemptRecord, QueuedRun, RunRecord, Store};
    use shoal_core::TestId;
    use std::sync::Arc;
    use std::time::Duration;

    async fn count(store: &PgStore, sql: &str) -> i64 {
        sqlx::query_scalar(sql)
            .fetch_one(&store.pool)
            .await
            .unwrap()
    }

    #[tokio::test]
    #[cfg_attr(
        not(shoal_has_postgres),
        ignore = "needs PostgreSQL: set SHOAL_TEST_POSTGRES_URL (scripts/test does)"
    )]
    async fn conformance() {
        with_database("pg_store::tests::conformance", |url| async move {
            let store = PgStore::open(&url).await.unwrap();
            crate::conformance::run_all(&store).await;
        })
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[cfg_attr(
        not(shoal_has_postgres),
        ignore = "needs PostgreSQL: set SHOAL_TEST_POSTGRES_URL (scripts/test does)"
    )]
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
    #[cfg_attr(
        not(shoal_has_postgres),
        ignore = "needs PostgreSQL: set SHOAL_TEST_POSTGRES_URL (scripts/test does)"
    )]
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

    /// A database created at schema version 2 and reopened keeps its runs
    /// and attempts, which read back with the new columns' defaults.
    #[tokio::test]
    #[cfg_attr(
        not(shoal_has_postgres),
        ignore = "needs PostgreSQL: set SHOAL_TEST_POSTGRES_URL (scripts/test does)"
    )]
    async fn schema_v2_store_is_migrated_keeping_runs() {
        with_database(
            "pg_store::tests::schema_v2_store_is_migrated_keeping_runs",
            |url| async move {
                let v2: Vec<Migration> = MIGRATOR
                    .iter()
                    .filter(|m| m.version <= 2)
                    .cloned()
                    .collect();
                let old = PgStore::open_migrated(&url, &v2).await.unwrap();
                assert_eq!(old.schema_version().await.unwrap(), 2);
                old.sql()
                    .begin_run_at_schema_v2(&crate::conformance::schema_v2_run())
                    .await
                    .unwrap();
                old.record_attempts(&crate::conformance::schema_v2_attempts())
                    .await
                    .unwrap();
                old.close().await;

                let store = PgStore::open(&url).await.unwrap();
                assert_eq!(store.schema_version().await.unwrap(), 3);
                crate::conformance::schema_v2_runs_survive_migration(&store).await;
            },
        )
        .await;
    }

    #[tokio::test]
    #[cfg_attr(
        not(shoal_has_postgres),
        ignore = "needs PostgreSQL: set SHOAL_TEST_POSTGRES_URL (scripts/test does)"
    )]
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
    #[cfg_attr(
        not(shoal_has_postgres),
        ignore = "needs PostgreSQL: set SHOAL_TEST_POSTGRES_URL (scripts/test does)"
    )]
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
                        environment: crate::default_environment(),
                        seed: None,
                        kind: crate::KIND_RUN.to_owned(),
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
    #[cfg_attr(
        not(shoal_has_postgres),
        ignore = "needs PostgreSQL: set SHOAL_TEST_POSTGRES_URL (scripts/test does)"
    )]
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
