//! Coordinator state: the queued runs and outstanding leases a distributed
//! coordinator keeps in the store so that a restarted coordinator resumes
//! every unfinished run, and the [`CoordinatorLock`] that makes it the
//! store's only coordinator.

use nix::fcntl::Flock;
use sqlx::Connection;
use sqlx::postgres::PgConnection;
use std::fs::File;
use std::path::PathBuf;

/// A distributed run as its coordinator keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct QueuedRun {
    pub run_id: String,
    /// Opaque JSON owned by the coordinator.
    pub spec: String,
    /// Seconds since the Unix epoch.
    pub submitted: f64,
}

/// A batch handed to a worker's slot and not yet released.
#[derive(Debug, Clone, PartialEq)]
pub struct LeaseRecord {
    pub run_id: String,
    pub lease_id: u64,
    /// The fencing token the batch was handed out with.
    pub token: u64,
    pub worker_id: String,
    pub slot: u32,
    /// Opaque JSON.
    pub items: String,
    /// Seconds since the Unix epoch when the lease expires unless renewed.
    pub deadline: f64,
}

/// Proof that this process is the store's only coordinator, from
/// [`Store::lock_coordinator`](crate::Store::lock_coordinator). The lock is
/// held until this guard is dropped (or [`released`](Self::release)), or
/// the process dies.
pub struct CoordinatorLock {
    held: Held,
}

/// What keeps the lock.
enum Held {
    /// An in-memory store has no other users.
    Nothing,
    /// An exclusive `flock` on `<db path>.coordinator.lock`; the kernel
    /// drops it with the file descriptor, also when the process dies.
    File { _lock: Flock<File>, path: PathBuf },
    /// A session-level advisory lock, held as long as this connection's
    /// session lives; the server drops it when the connection closes, also
    /// when the process dies. `None` once released.
    Postgres {
        conn: Option<PgConnection>,
        key: i64,
    },
}

impl CoordinatorLock {
    pub(crate) fn nothing() -> Self {
        Self {
            held: Held::Nothing,
        }
    }

    pub(crate) fn file(lock: Flock<File>, path: PathBuf) -> Self {
        Self {
            held: Held::File { _lock: lock, path },
        }
    }

    pub(crate) fn postgres(conn: PgConnection, key: i64) -> Self {
        Self {
            held: Held::Postgres {
                conn: Some(conn),
                key,
            },
        }
    }

    /// Releases the lock now, so that the next `lock_coordinator` (from
    /// this process or another) succeeds at once. Dropping the guard
    /// releases it too, but a PostgreSQL server notices the closed
    /// connection a moment later.
    pub async fn release(mut self) {
        if let Held::Postgres { conn, key } = &mut self.held {
            if let Some(mut conn) = conn.take() {
                // Failing to unlock or to close cleanly still ends the
                // session (the connection is dropped), which frees the lock.
                let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
                    .bind(*key)
                    .execute(&mut conn)
                    .await;
                let _ = conn.close().await;
            }
        }
        // The file lock goes with `self`.
    }
}

impl std::fmt::Debug for CoordinatorLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.held {
            Held::Nothing => f.write_str("CoordinatorLock(in-memory store)"),
            Held::File { path, .. } => f
                .debug_tuple("CoordinatorLock")
                .field(&format_args!("flock {}", path.display()))
                .finish(),
            Held::Postgres { conn, key } => f
                .debug_tuple("CoordinatorLock")
                .field(&format_args!(
                    "advisory lock {key}{}",
                    if conn.is_some() { "" } else { " (released)" }
                ))
                .finish(),
        }
    }
}

impl Drop for CoordinatorLock {
    fn drop(&mut self) {
        // A graceful close where a runtime is at hand: the server then ends
        // the session (and the lock) without waiting to notice a dead socket.
        if let Held::Postgres { conn, .. } = &mut self.held {
            if let (Some(conn), Ok(rt)) = (conn.take(), tokio::runtime::Handle::try_current()) {
                rt.spawn(async move {
                    let _ = conn.close().await;
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::{StoreError, open_store};
    use std::io::{BufRead, BufReader, Write};
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    /// Tells [`lock_holder_process`] which store to lock.
    const HOLDER_VAR: &str = "SHOAL_TEST_LOCK_HOLDER_URL";
    /// What [`lock_holder_process`] prints once it holds the lock.
    const HELD: &str = "SHOAL-TEST-LOCK-HELD";

    /// Not a test of its own: the coordinator process that
    /// [`killed_holder_frees_the_lock`] starts, then kills with SIGKILL.
    #[test]
    #[ignore = "helper process for the killed_*_holder_frees_the_lock tests"]
    fn lock_holder_process() {
        let Ok(url) = std::env::var(HOLDER_VAR) else {
            return;
        };
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        rt.block_on(async {
            let store = open_store(&url).await.expect("open the store");
            let _lock = store.lock_coordinator().await.expect("lock the store");
            let mut out = std::io::stdout();
            writeln!(out, "{HELD}")
                .and_then(|()| out.flush())
                .expect("stdout");
            tokio::time::sleep(Duration::from_secs(120)).await;
        });
    }

    /// A coordinator killed with SIGKILL while holding the lock frees it:
    /// its successor takes the lock without waiting for any timeout.
    async fn killed_holder_frees_the_lock(url: &str) {
        let store = open_store(url).await.expect("open the store");
        let mut child = Command::new(std::env::current_exe().expect("test binary"))
            .args([
                "coordinator::tests::lock_holder_process",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(HOLDER_VAR, url)
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the lock holder");
        let stdout = child.stdout.take().expect("piped stdout");
        let held = tokio::task::spawn_blocking(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .any(|line| line.contains(HELD))
        });
        let held = tokio::time::timeout(Duration::from_secs(60), held).await;
        if !matches!(held, Ok(Ok(true))) {
            let _ = child.kill();
            panic!("the lock holder never said it held the lock: {held:?}");
        }

        let err = store
            .lock_coordinator()
            .await
            .expect_err("another process holds the lock");
        assert!(matches!(err, StoreError::Locked { .. }), "{err:?}");

        child.kill().expect("SIGKILL the lock holder");
        child.wait().expect("reap the lock holder");
        let killed = Instant::now();
        let lock = loop {
            match store.lock_coordinator().await {
                Ok(lock) => break lock,
                Err(StoreError::Locked { .. }) if killed.elapsed() < Duration::from_secs(10) => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("the killed holder's lock is still held: {e}"),
            }
        };
        eprintln!("lock free {:?} after SIGKILL", killed.elapsed());
        lock.release().await;
    }

    #[tokio::test]
    async fn killed_sqlite_holder_frees_the_lock() {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}", dir.path().join("history.db").display());
        killed_holder_frees_the_lock(&url).await;
    }

    #[tokio::test]
    #[cfg_attr(
        not(shoal_has_postgres),
        ignore = "needs PostgreSQL: set SHOAL_TEST_POSTGRES_URL (scripts/test does)"
    )]
    async fn killed_postgres_holder_frees_the_lock() {
        crate::test_pg::with_database(
            "coordinator::tests::killed_postgres_holder_frees_the_lock",
            |url| async move {
                killed_holder_frees_the_lock(&url).await;
            },
        )
        .await;
    }
}
