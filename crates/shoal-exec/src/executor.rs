//! The executor traits: start a [`ProcessSpec`], then follow, stop and collect it.

use crate::{ExecError, ProcessExit, ProcessSpec};
use std::sync::Arc;
use std::time::Duration;

/// Writes `line` and a newline to a runner's stdin and flushes: the one
/// implementation of [`RunningProcess::send_line`] for every executor. A
/// line holding a newline is refused (it would read as two requests).
pub async fn write_line<W>(stdin: &mut W, line: &str) -> std::io::Result<()>
where
    W: tokio::io::AsyncWrite + Unpin + ?Sized,
{
    use tokio::io::AsyncWriteExt;
    if line.contains('\n') {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "a stdin line cannot contain a newline",
        ));
    }
    let mut bytes = Vec::with_capacity(line.len() + 1);
    bytes.extend_from_slice(line.as_bytes());
    bytes.push(b'\n');
    stdin.write_all(&bytes).await?;
    stdin.flush().await
}

/// Starts processes somewhere (this machine, a container, ...).
#[async_trait::async_trait]
pub trait Executor: Send + Sync + std::fmt::Debug {
    async fn spawn(&self, spec: &ProcessSpec) -> Result<Box<dyn RunningProcess>, ExecError>;

    /// Whether every process starts in a fresh environment (a container per
    /// batch). Long-lived runners serving several batches would defeat
    /// that, so callers start one process per batch instead.
    fn fresh_per_process(&self) -> bool {
        false
    }
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

    /// Writes `line` and a newline to the child's stdin and flushes. Fails
    /// with `NotConnected` without a stdin pipe (or after [`close_stdin`]),
    /// `BrokenPipe` once the child has closed its end, and `InvalidInput` if
    /// `line` contains a newline. Not cancel safe: a cancelled call may leave
    /// a partial line behind.
    ///
    /// [`close_stdin`]: RunningProcess::close_stdin
    async fn send_line(&mut self, line: &str) -> std::io::Result<()>;

    /// Closes the child's stdin, so that it reads end of input. Idempotent;
    /// [`wait`] does it too.
    ///
    /// [`wait`]: RunningProcess::wait
    fn close_stdin(&mut self);

    /// A handle that stops this process, usable while [`wait`] owns it.
    ///
    /// [`wait`]: RunningProcess::wait
    fn terminator(&self) -> Terminator;

    /// See [`Terminator::terminate`].
    fn terminate(&mut self, grace: Duration) {
        self.terminator().terminate(grace);
    }

    /// See [`Terminator::kill`].
    fn kill(&mut self) {
        self.terminator().kill();
    }

    /// Closes stdin, waits for the process to exit, kills whatever is left
    /// of its group, and collects its output (abandoning pipes still held
    /// open by a process that left the group after a short drain timeout).
    async fn wait(self: Box<Self>) -> Result<ProcessExit, ExecError>;

    /// The child's pid, until it has been reaped.
    fn pid(&self) -> Option<u32>;
}

/// Stops a running process from anywhere (a timeout, a cancellation), also
/// while [`RunningProcess::wait`] owns it. Cheap to clone. Stopping marks the
/// exit as `terminated`; once the process has been reaped it does nothing.
#[derive(Debug, Clone)]
pub struct Terminator(Arc<dyn Terminate>);

impl Terminator {
    /// A terminator stopping `target`; for executors in other crates.
    pub fn new(target: Arc<dyn Terminate>) -> Self {
        Terminator(target)
    }

    /// SIGTERM to the whole process group now; SIGKILL to the group after
    /// `grace` if anything in it is still alive. Idempotent. Call within a
    /// tokio runtime.
    pub fn terminate(&self, grace: Duration) {
        Arc::clone(&self.0).terminate(grace);
    }

    /// SIGKILL to the whole process group now.
    pub fn kill(&self) {
        Arc::clone(&self.0).kill();
    }
}

/// What each executor implements behind a [`Terminator`], with the
/// semantics documented there (idempotent, marks the exit `terminated`, does
/// nothing once the process has been reaped).
pub trait Terminate: Send + Sync + std::fmt::Debug {
    /// Asks the process group to stop now and kills it after `grace`.
    fn terminate(self: Arc<Self>, grace: Duration);
    /// Kills the process group now.
    fn kill(self: Arc<Self>);
}
