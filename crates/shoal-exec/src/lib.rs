//! Executors: run one process for the engine, in its own process group, with
//! captured and capped output, an optional progress pipe, and a
//! SIGTERM → grace → SIGKILL termination of the whole group.
//!
//! [`ProcessSpec`] says what to run; an [`Executor`] starts it and hands back
//! a [`RunningProcess`]. The process executor is the only adapter today; a
//! docker executor will implement the same trait.

mod spec;
pub use spec::*;
