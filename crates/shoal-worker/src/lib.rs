//! shoal's worker agent: runs a coordinator's batches on this machine with
//! the local engine's slot code.
//!
//! [`run_worker`] registers with the coordinator (a fresh UUID v7 worker id
//! per call), heartbeats the leases it holds, and runs one lease loop per
//! slot. A batch's run is prepared once per worker ([`prepare`]: snapshot
//! blobs fetched into the cache, tree materialized, config loaded,
//! `worker_setup` run once per snapshot, tests discovered); the batch runs
//! through [`shoal_slot::SlotCtx`], and its results travel back as
//! batched `Report`s ([`report`]) retried until acknowledged.
//!
//! - [`worker`](run_worker): the agent loop, heartbeats, draining
//! - [`instance`]: this process's share of a cache directory several
//!   workers may use, and its default name
//! - [`prepare`]: preparing a run from a snapshot
//! - [`batch`]: running one batch on a slot of a prepared run
//! - [`report`]: grouping updates into `Report` requests
//! - [`client`]: the authenticated connection and how failures are described
//! - [`backoff`]: the retry schedule

pub mod backoff;
pub mod batch;
pub mod client;
pub mod instance;
pub mod prepare;
pub mod report;
mod worker;

pub use backoff::Backoff;
pub use batch::{SlotEnv, SlotRun};
pub use instance::{Instance, InstanceError};
pub use prepare::{PrepareError, PreparedRun, RunInputs, SetupStatus, WorkerCache, prepare_run};
pub use report::{LeaseRef, ReportBatcher, Update};
pub use worker::{WorkerError, WorkerOptions, host_name, run_worker};
