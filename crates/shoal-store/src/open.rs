//! [`open_store`]: a store from a URL (`sqlite://PATH`, `sqlite::memory:`,
//! `postgres://...`), and [`redact_url`], which keeps passwords out of
//! messages and logs.

use crate::{PgStore, SqliteStore, Store, StoreError};
use std::path::Path;
use std::sync::Arc;

/// Opens the store a URL names, creating and migrating it as needed:
///
/// - `sqlite://PATH`: an SQLite file at `PATH`, relative to the working
///   directory (`sqlite://.shoal/history.db`) or absolute
///   (`sqlite:///var/lib/shoal/history.db`); the file and its parent
///   directories are created.
/// - `sqlite::memory:`: an SQLite store in memory, gone when dropped.
/// - `postgres://USER:PASSWORD@HOST[:PORT]/DATABASE` (or `postgresql://`):
///   a PostgreSQL database, which must exist.
///
/// Anything else fails with [`StoreError::UnsupportedUrl`]. No error names
/// the URL's password.
pub async fn open_store(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    if url == "sqlite::memory:" {
        return Ok(Arc::new(SqliteStore::open_in_memory().await?));
    }
    if let Some(path) = url.strip_prefix("sqlite://") {
        if path.is_empty() {
            return Err(StoreError::UnsupportedUrl {
                url: url.to_owned(),
            });
        }
        return Ok(Arc::new(SqliteStore::open(Path::new(path)).await?));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(Arc::new(PgStore::open(url).await?));
    }
    Err(StoreError::UnsupportedUrl {
        url: redact_url(url),
    })
}

/// `url` with its password replaced by `***`: the one in the user info
/// (`postgres://user:***@host/db`) and any `password=` query parameter.
/// Everything else, including URLs without a password, is unchanged.
pub fn redact_url(url: &str) -> String {
    let mut out = String::with_capacity(url.len());
    let (scheme, rest) = match url.find("://") {
        Some(i) => url.split_at(i + 3),
        None => ("", url),
    };
    out.push_str(scheme);
    // The authority ends at the first '/', '?' or '#' after the scheme; its
    // user info ends at its last '@' (a password may contain '@' unescaped).
    let authority_end = if scheme.is_empty() {
        0
    } else {
        rest.find(['/', '?', '#']).unwrap_or(rest.len())
    };
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rfind('@') {
        Some(at) => {
            let (userinfo, host) = authority.split_at(at);
            match userinfo.find(':') {
                Some(colon) => {
                    out.push_str(&userinfo[..colon]);
                    out.push_str(":***");
                }
                None => out.push_str(userinfo),
            }
            out.push_str(host);
        }
        None => out.push_str(authority),
    }
    out.push_str(&redact_password_params(tail));
    out
}

/// Replaces the value of every `password=` parameter in a query string.
fn redact_password_params(tail: &str) -> String {
    let Some(q) = tail.find('?') else {
        return tail.to_owned();
    };
    let (path, query) = tail.split_at(q + 1);
    let (query, fragment) = match query.find('#') {
        Some(h) => query.split_at(h),
        None => (query, ""),
    };
    let params: Vec<String> = query
        .split('&')
        .map(|param| match param.split_once('=') {
            Some((key, _)) if key.eq_ignore_ascii_case("password") => format!("{key}=***"),
            _ => param.to_owned(),
        })
        .collect();
    format!("{path}{}{fragment}", params.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        for (url, redacted) in [
            (
                "postgres://shoal:s3cret@127.0.0.1:5432/shoal",
                "postgres://shoal:***@127.0.0.1:5432/shoal",
            ),
            (
                "postgresql://u:p@ss:w@rd@db.example/x?sslmode=require",
                "postgresql://u:***@db.example/x?sslmode=require",
            ),
            (
                "postgres://u@host/db?password=hunter2&application_name=a",
                "postgres://u@host/db?password=***&application_name=a",
            ),
            ("postgres://host/db", "postgres://host/db"),
            ("postgres://u:@host", "postgres://u:***@host"),
            (
                "sqlite:///tmp/a@b:c/history.db",
                "sqlite:///tmp/a@b:c/history.db",
            ),
            ("sqlite::memory:", "sqlite::memory:"),
            ("mysql://root:pw@h/d", "mysql://root:***@h/d"),
            ("", ""),
        ] {
            assert_eq!(redact_url(url), redacted, "{url}");
        }
    }

    #[tokio::test]
    async fn sqlite_urls_open_relative_and_absolute_paths() {
        let dir = tempfile::tempdir().unwrap();
        let absolute = dir.path().join("a/b/history.db");
        let store = open_store(&format!("sqlite://{}", absolute.display()))
            .await
            .unwrap();
        assert!(absolute.is_file(), "file and parent directories created");
        assert!(format!("{store:?}").contains(&absolute.display().to_string()));

        // A relative path resolves against the working directory; the test
        // names one inside the temporary directory through a relative path
        // from the current directory.
        let cwd = std::env::current_dir().unwrap();
        let relative = pathdiff(&dir.path().join("rel/history.db"), &cwd);
        assert!(relative.is_relative());
        open_store(&format!("sqlite://{}", relative.display()))
            .await
            .unwrap();
        assert!(dir.path().join("rel/history.db").is_file());

        let memory = open_store("sqlite::memory:").await.unwrap();
        assert!(memory.runs(1).await.unwrap().is_empty());
    }

    /// `path` relative to `base` (both absolute), through `..` components.
    fn pathdiff(path: &Path, base: &Path) -> std::path::PathBuf {
        let up = base.components().count() - 1;
        let mut out = std::path::PathBuf::new();
        for _ in 0..up {
            out.push("..");
        }
        out.join(path.strip_prefix("/").unwrap())
    }

    #[tokio::test]
    async fn other_urls_are_refused_by_name_without_their_password() {
        for url in [
            "mysql://root:hunter2@localhost/db",
            "sqlite:history.db",
            "sqlite://",
            "/var/lib/history.db",
            "postgres:/nohost",
        ] {
            let err = open_store(url).await.expect_err(url);
            assert!(
                matches!(err, StoreError::UnsupportedUrl { .. }),
                "{url}: {err:?}"
            );
            let msg = err.to_string();
            assert!(!msg.contains("hunter2"), "{msg}");
            assert!(
                msg.contains("sqlite://PATH")
                    && msg.contains("sqlite::memory:")
                    && msg.contains("postgres://"),
                "the message names the accepted forms: {msg}"
            );
        }
    }

    #[tokio::test]
    async fn postgres_errors_never_show_the_password() {
        // Nothing listens on port 1; the error must name the URL redacted.
        let err = open_store("postgres://shoal:hunter2@127.0.0.1:1/shoal")
            .await
            .expect_err("nothing listens on port 1");
        let msg = err.to_string();
        assert!(matches!(err, StoreError::Open { .. }), "{err:?}");
        assert!(
            msg.contains("postgres://shoal:***@127.0.0.1:1/shoal"),
            "{msg}"
        );
        assert!(!msg.contains("hunter2"), "{msg}");
        assert!(!format!("{err:?}").contains("hunter2"), "{err:?}");

        let err = open_store("postgres://shoal:hunter2@127.0.0.1:notaport/shoal")
            .await
            .expect_err("a malformed URL");
        assert!(!format!("{err} {err:?}").contains("hunter2"), "{err:?}");
    }
}
