//! Test support for PostgreSQL: a fresh database per test on the server that
//! `SHOAL_TEST_POSTGRES_URL` names, dropped when the test ends, so tests run
//! in parallel without seeing each other's rows or advisory locks.
//!
//! Tests using it are ignored (saying why) unless the build may use
//! PostgreSQL (`shoal-testenv`); where they run, a missing server fails.

use crate::redact_url;
use sqlx::{Connection, PgConnection};
use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};

/// The variable naming the test server (a database the user may connect
/// to, with the right to create databases).
pub(crate) const URL_VAR: &str = "SHOAL_TEST_POSTGRES_URL";

/// The server's URL. Tests that call this are ignored unless the build may
/// use PostgreSQL (`shoal_has_postgres`, see `shoal-testenv`), so a missing
/// variable here is a failure, never a silent pass.
pub(crate) fn server_url(test: &str) -> Option<String> {
    match std::env::var(URL_VAR) {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ => panic!(
            "{test}: {URL_VAR} is not set: run scripts/ci-postgres.sh (scripts/test does) \
             and export the URL it prints"
        ),
    }
}

/// `url` naming database `name` instead of its own.
pub(crate) fn with_database_name(url: &str, name: &str) -> String {
    let start = url.find("://").map_or(0, |i| i + 3);
    let rest = &url[start..];
    let path = rest.find(['/', '?', '#']).map_or(url.len(), |i| start + i);
    let after_db = url[path..].find(['?', '#']).map_or(url.len(), |i| path + i);
    format!("{}/{name}{}", &url[..path], &url[after_db..])
}

/// A database name no other test (in this or another process) uses.
fn unique_name() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "shoal_t_{}_{}_{nanos:x}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Runs `body` with the URL of a fresh, empty database, then drops the
/// database (also when `body` panics, whose panic then continues). Returns
/// without running `body` when `test` must skip (see [`server_url`]).
pub(crate) async fn with_database<F, Fut>(test: &str, body: F)
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let Some(server) = server_url(test) else {
        return;
    };
    let mut admin = PgConnection::connect(&server)
        .await
        .unwrap_or_else(|e| panic!("connect to {URL_VAR} ({}): {e}", redact_url(&server)));
    let name = unique_name();
    sqlx::raw_sql(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .unwrap_or_else(|e| panic!("create test database {name}: {e}"));
    let outcome = tokio::spawn(body(with_database_name(&server, &name))).await;
    sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&mut admin)
        .await
        .unwrap_or_else(|e| panic!("drop test database {name}: {e}"));
    let _ = admin.close().await;
    match outcome {
        Ok(()) => {}
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => panic!("{test}: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_names_are_replaced() {
        assert_eq!(
            with_database_name("postgres://u:p@h:5432/shoal", "t1"),
            "postgres://u:p@h:5432/t1"
        );
        assert_eq!(
            with_database_name("postgres://u:p@h/shoal?sslmode=disable", "t1"),
            "postgres://u:p@h/t1?sslmode=disable"
        );
        assert_eq!(with_database_name("postgres://h", "t1"), "postgres://h/t1");
        assert_eq!(
            with_database_name("postgresql://h?x=1", "t1"),
            "postgresql://h/t1?x=1"
        );
        assert_ne!(unique_name(), unique_name());
    }
}
