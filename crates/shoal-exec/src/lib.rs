//! Executors: run one process for the engine, in its own process group, with
//! captured and capped output, an optional progress pipe, and a
//! SIGTERM → grace → SIGKILL termination of the whole group.
//!
//! [`ProcessSpec`] says what to run; an [`Executor`] starts it and hands back
//! a [`RunningProcess`]. The [`ProcessExecutor`] (local processes, Linux) is
//! the only adapter today; a docker executor will implement the same traits.

mod error;
mod executor;
mod output;
mod process_executor;
mod progress;
mod spec;

pub use error::ExecError;
pub use executor::{Executor, RunningProcess, Terminator};
pub use process_executor::ProcessExecutor;
pub use spec::*;
