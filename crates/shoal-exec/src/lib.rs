//! Executors: run one process for the engine, in its own process group, with
//! captured and capped output, an optional progress pipe, and a
//! SIGTERM → grace → SIGKILL termination of the whole group.
//!
//! [`ProcessSpec`] says what to run; an [`Executor`] starts it and hands back
//! a [`RunningProcess`]. The [`ProcessExecutor`] (local processes, Linux) is
//! one adapter; the docker executor (crate `shoal-docker`) implements the same
//! traits, reusing [`OutputBuffer`] and [`ProgressLines`] so that output caps
//! and progress lines behave alike.

mod error;
mod executor;
mod output;
mod process_executor;
mod progress;
mod spec;

pub use error::ExecError;
pub use executor::{Executor, RunningProcess, Terminate, Terminator, write_line};
pub use output::OutputBuffer;
pub use process_executor::ProcessExecutor;
pub use progress::ProgressLines;
pub use spec::*;
