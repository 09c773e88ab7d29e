//! Run history for shoal, and a distributed coordinator's state: the
//! [`Store`] trait, its SQLite ([`SqliteStore`]) and PostgreSQL
//! ([`PgStore`]) adapters, [`open_store`] to pick one by URL, the shared SQL
//! layer and versioned migrations, and the conformance suite every adapter
//! must pass (feature `conformance`).
//!
//! The store keeps runs and attempts (not captured output) and answers the
//! scheduler's one hot question: how long does each test usually take. For
//! flaky statistics it reads a test's history with where (environment,
//! commit) and why (run kind) each attempt ran, how whole runs went, and
//! the order in which a slot ran its tests before a failure. For
//! a coordinator it keeps queued runs, outstanding leases and the
//! fencing-token counter, and guards them with a one-coordinator lock.

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
mod coordinator;
mod error;
mod history;
mod migration;
mod open;
mod pg_store;
mod record;
mod sql;
mod sql_store;
mod sqlite_store;
mod store;
#[cfg(test)]
mod test_pg;

pub use coordinator::{CoordinatorLock, LeaseRecord, QueuedRun};
pub use error::StoreError;
pub use history::{HistoryQuery, HistoryRow, RunHealthRow, SlotOrder};
pub use open::{open_store, redact_url};
pub use pg_store::PgStore;
pub use record::{
    AttemptRecord, KIND_BISECT, KIND_RUN, KIND_STRESS, RunEnd, RunRecord, RunSummary,
    default_environment,
};
pub use sqlite_store::SqliteStore;
pub use store::{DEFAULT_ESTIMATE_WINDOW, Store};
