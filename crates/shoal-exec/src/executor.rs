//! The executor traits: start a [`ProcessSpec`], then follow, stop and collect it.

use crate::{ExecError, ProcessExit, ProcessSpec};
use std::time::Duration;

/// Starts processes somewhere (this machine, a container, ...).
#[async_trait::async_trait]
pub trait Executor: Send + Sync + std::fmt::Debug {
    async fn spawn(&self, spec: &ProcessSpec) -> Result<Box<dyn RunningProcess>, ExecError>;
}

/// A started process and its process group. Dropping it without [`wait`]
/// kills the group.
///
/// [`wait`]: RunningProcess::wait
#[async_trait::async_trait]
pub trait RunningProcess: Send {
    /// Next line written by the child on its progress pipe (without the
    /// newline); `None` once the pipe is closed (or if there is no pipe).
    /// Cancel safe.
    async fn next_progress(&mut self) -> Option<String>;

    /// Resolves once the main child has exited (its group may live on).
    /// Cancel safe and repeatable; lets a caller race a deadline before
    /// [`wait`](RunningProcess::wait), which owns the process.
    async fn exited(&mut self);

    /// SIGTERM to the whole process group now; SIGKILL to the group after
    /// `grace` if anything in it is still alive. Idempotent. Marks the exit
    /// as terminated. Call within a tokio runtime.
    fn terminate(&mut self, grace: Duration);

    /// SIGKILL the whole group immediately. Marks the exit as terminated.
    fn kill(&mut self);

    /// Waits for the process to exit, kills whatever is left of its group,
    /// and collects its output (abandoning pipes still held open by a process
    /// that left the group after a short drain timeout).
    async fn wait(self: Box<Self>) -> Result<ProcessExit, ExecError>;

    /// The child's pid, until it has been reaped.
    fn pid(&self) -> Option<u32>;
}
