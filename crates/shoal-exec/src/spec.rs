//! What to run and what came back: the types every executor shares.

use shoal_core::CapturedOutput;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// File descriptor number at which a child finds the write end of the
/// progress pipe, when [`ProcessSpec::progress_pipe`] is set. The child also
/// gets `SHOAL_PROGRESS_FD=3` in its environment.
pub const PROGRESS_FD: i32 = 3;

/// One process to run. argv is executed directly: nothing goes through a shell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessSpec {
    pub argv: Vec<String>,
    pub cwd: PathBuf,
    /// Added to (and overriding) the inherited environment.
    pub env: BTreeMap<String, String>,
    /// Give the child a pipe at fd 3 for line-oriented progress messages.
    pub progress_pipe: bool,
    /// Give the child a pipe as its stdin, fed by [`RunningProcess::send_line`]
    /// (otherwise stdin is `/dev/null`).
    ///
    /// [`RunningProcess::send_line`]: crate::RunningProcess::send_line
    pub stdin_pipe: bool,
    /// Bytes of combined stdout+stderr kept (head and tail halves).
    pub output_cap: u64,
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    Code(i32),
    Signal(i32),
}

impl ExitStatus {
    pub fn success(self) -> bool {
        self == ExitStatus::Code(0)
    }
}

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitStatus::Code(c) => write!(f, "exit code {c}"),
            ExitStatus::Signal(s) => write!(f, "killed by signal {s}"),
        }
    }
}

/// The result of a finished process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessExit {
    pub status: ExitStatus,
    /// Combined stdout and stderr in arrival order, lossily decoded, capped.
    pub output: CapturedOutput,
    pub wall: Duration,
    /// shoal terminated the process (timeout or cancellation).
    pub terminated: bool,
    /// The kernel's OOM killer killed the process (or one of its children)
    /// at a memory limit: a container's `memory`. Only executors that can
    /// tell set it.
    pub oom_killed: bool,
}
