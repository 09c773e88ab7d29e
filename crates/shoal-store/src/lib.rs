//! Run history for shoal: the [`Store`] trait, its SQLite adapter
//! ([`SqliteStore`]), the shared SQL layer and versioned migrations, and the
//! conformance suite every adapter must pass (feature `conformance`).
//!
//! The store keeps runs and attempts (not captured output) and answers the
//! scheduler's one hot question: how long does each test usually take.

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
mod error;
mod migration;
mod record;
mod sql;
mod sqlite_store;
mod store;

pub use error::StoreError;
pub use record::{AttemptRecord, RunEnd, RunRecord, RunSummary};
pub use sqlite_store::SqliteStore;
pub use store::{DEFAULT_ESTIMATE_WINDOW, Store};
