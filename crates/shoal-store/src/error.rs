//! [`StoreError`]: everything that can go wrong opening, migrating or using a store.

use std::path::PathBuf;

/// An error from a [`Store`](crate::Store).
///
/// Messages are lowercase, carry their context and end with the underlying
/// database or I/O error, which is also the [`source`](std::error::Error::source)
/// for callers that inspect it.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("failed to create directory {} for the store: {source}", path.display())]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("failed to open store at {location}: {source}")]
    Open {
        location: String,
        #[source]
        source: sqlx::Error,
    },

    #[error("failed to migrate store at {location}: {source}")]
    Migrate {
        location: String,
        #[source]
        source: sqlx::Error,
    },

    #[error(
        "store schema version {found} is newer than this shoal supports (up to {supported}) \
         at {location}; upgrade shoal or point it at another store"
    )]
    SchemaTooNew {
        location: String,
        found: i64,
        supported: i64,
    },

    #[error(
        "migration {version} recorded in store at {location} differs from the one this shoal \
         ships; shipped migrations must never be edited"
    )]
    MigrationChanged { location: String, version: i64 },

    #[error("run {0} already exists in the store")]
    DuplicateRun(String),

    #[error("run {0} is not in the store")]
    UnknownRun(String),

    /// A query failed; `action` reads well after "failed to".
    #[error("failed to {action}: {source}")]
    Query {
        action: &'static str,
        #[source]
        source: sqlx::Error,
    },

    /// Another process holds the store's coordinator lock
    /// ([`Store::lock_coordinator`](crate::Store::lock_coordinator)).
    #[error(
        "another coordinator is using this store ({location}); stop it first, or give this \
         coordinator a store of its own"
    )]
    Locked { location: String },

    #[error("failed to lock {} for the coordinator: {source}", path.display())]
    LockFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A store URL that [`open_store`](crate::open_store) does not accept.
    /// `url` has its password redacted.
    #[error(
        "unsupported store URL {url:?}: expected sqlite://PATH, sqlite::memory:, or \
         postgres://USER:PASSWORD@HOST[:PORT]/DATABASE (postgresql:// too)"
    )]
    UnsupportedUrl { url: String },

    /// A number the store cannot keep: stores hold integers as signed
    /// 64-bit values.
    #[error("{what} {value} is out of range for the store (at most {})", i64::MAX)]
    OutOfRange { what: &'static str, value: u64 },

    /// A stored value this version cannot interpret (edited by hand, or
    /// written by an incompatible shoal).
    #[error("unreadable value in store: {0}")]
    Corrupt(String),
}

impl StoreError {
    /// Wraps a query error with what was being done.
    pub(crate) fn query(action: &'static str) -> impl FnOnce(sqlx::Error) -> Self {
        move |source| StoreError::Query { action, source }
    }

    /// Wraps an error met while migrating the store at `location`.
    pub(crate) fn migrate(location: &str) -> impl Fn(sqlx::Error) -> Self + Copy + '_ {
        move |source| StoreError::Migrate {
            location: location.to_owned(),
            source,
        }
    }
}
