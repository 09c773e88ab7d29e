//! The process executor: runs a [`ProcessSpec`] as a child of this process,
//! leader of its own process group, so that the whole tree can be signalled.
//!
//! The child gets `PR_SET_PDEATHSIG(SIGKILL)`, so it dies with shoal. Linux
//! ties that signal to the *thread* that forked, so spawn from a long-lived
//! thread (any tokio worker; not `spawn_blocking`).
//!
//! Group signals are only sent while the child is unreaped: its pid, which is
//! the group id, cannot be reused before that. `wait` sees the exit through a
//! pidfd, kills the leftovers of the group, seals it against later signals
//! (a pending SIGKILL after `grace`, say), and only then reaps the child.

use crate::executor::Terminate;
use crate::output::Capture;
use crate::progress::ProgressLines;
use crate::{
    ExecError, Executor, ExitStatus, PROGRESS_FD, ProcessExit, ProcessSpec, RunningProcess,
    Terminator,
};
use nix::errno::Errno;
use nix::fcntl::{FcntlArg, FdFlag, OFlag, fcntl};
use nix::libc;
use nix::sys::prctl;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::{Pid, dup2, getpid, getppid, pipe2};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::net::unix::pipe;
use tokio::process::{Child, ChildStdin, Command};

/// Environment variable telling the child where its progress pipe is.
const PROGRESS_ENV: &str = "SHOAL_PROGRESS_FD";

/// How long `wait` keeps reading output after the process group is gone,
/// for pipes held open by a process that left the group.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// Runs processes on this machine (Linux).
#[derive(Debug, Default, Clone, Copy)]
pub struct ProcessExecutor;

#[async_trait::async_trait]
impl Executor for ProcessExecutor {
    async fn spawn(&self, spec: &ProcessSpec) -> Result<Box<dyn RunningProcess>, ExecError> {
        Ok(Box::new(LocalProcess::spawn(spec)?))
    }
}

#[derive(Debug)]
struct LocalProcess {
    child: Child,
    program: String,
    group: Arc<ProcessGroup>,
    /// Readable once the child has exited, before it is reaped.
    exit_fd: Option<AsyncFd<OwnedFd>>,
    /// Taken by `wait`.
    capture: Option<Capture>,
    progress: Option<ProgressLines<pipe::Receiver>>,
    /// `None` without a stdin pipe or once closed.
    stdin: Option<ChildStdin>,
    started: Instant,
}

impl LocalProcess {
    fn spawn(spec: &ProcessSpec) -> Result<Self, ExecError> {
        let (program, args) = spec.argv.split_first().ok_or(ExecError::EmptyArgv)?;
        if !spec.cwd.is_dir() {
            return Err(ExecError::MissingCwd {
                dir: spec.cwd.clone(),
            });
        }
        let spawn_error = |error| ExecError::Spawn {
            program: program.clone(),
            error,
        };

        let mut cmd = Command::new(program);
        cmd.args(args)
            .current_dir(&spec.cwd)
            .envs(&spec.env)
            .stdin(if spec.stdin_pipe {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);

        // Both ends are close-on-exec; the child gets its own copy at fd 3.
        let (progress, progress_writer) = if spec.progress_pipe {
            let (read, write) = pipe2(OFlag::O_CLOEXEC).map_err(|e| spawn_error(e.into()))?;
            let read = pipe::Receiver::from_owned_fd(read).map_err(spawn_error)?;
            cmd.env(PROGRESS_ENV, PROGRESS_FD.to_string());
            (Some(ProgressLines::new(read)), Some(write))
        } else {
            // An inherited value would point at an unrelated descriptor.
            cmd.env_remove(PROGRESS_ENV);
            (None, None)
        };

        let parent = getpid();
        let writer_fd = progress_writer.as_ref().map(AsRawFd::as_raw_fd);
        // SAFETY: `prepare_child` only makes async-signal-safe system calls
        // and does not allocate, as required between fork and exec.
        unsafe { cmd.pre_exec(move || prepare_child(parent, writer_fd)) };

        let mut child = cmd.spawn().map_err(spawn_error)?;
        let started = Instant::now();
        // Our copy of the write end must go, or the pipe never reaches EOF.
        drop(progress_writer);

        // Unreaped until `wait`, so the id is always there.
        let pid = child
            .id()
            .and_then(|id| libc::pid_t::try_from(id).ok())
            .map(Pid::from_raw)
            .ok_or_else(|| spawn_error(io::Error::other("child vanished")))?;
        Ok(LocalProcess {
            capture: Some(Capture::start(
                child.stdout.take(),
                child.stderr.take(),
                spec.output_cap,
            )),
            stdin: child.stdin.take(),
            exit_fd: open_pidfd(pid),
            child,
            program: program.clone(),
            group: Arc::new(ProcessGroup::new(pid)),
            progress,
            started,
        })
    }
}

/// Runs in the forked child before exec: async-signal-safe calls only.
fn prepare_child(parent: Pid, progress_writer: Option<RawFd>) -> io::Result<()> {
    prctl::set_pdeathsig(Signal::SIGKILL)?;
    // If shoal died before the line above, nothing would ever kill us.
    if getppid() != parent {
        return Err(Errno::ESRCH.into());
    }
    match progress_writer {
        // dup2 onto itself would keep close-on-exec set.
        Some(PROGRESS_FD) => {
            fcntl(PROGRESS_FD, FcntlArg::F_SETFD(FdFlag::empty()))?;
        }
        Some(fd) => {
            dup2(fd, PROGRESS_FD)?;
        }
        None => {}
    }
    Ok(())
}

/// A pidfd for `pid` (Linux 5.3+), or `None` if the kernel has none.
fn open_pidfd(pid: Pid) -> Option<AsyncFd<OwnedFd>> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    let Ok(fd) = RawFd::try_from(fd) else {
        return None;
    };
    if fd < 0 {
        tracing::debug!("pidfd_open failed: {}", io::Error::last_os_error());
        return None;
    }
    // SAFETY: the descriptor was just created and nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: an `OwnedFd` keeps its descriptor open and unchanged until dropped.
    unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }.ok()
}

impl LocalProcess {
    /// Resolves once the child has exited, leaving it unreaped if possible.
    async fn exited(&mut self) {
        if let Some(exit_fd) = &self.exit_fd {
            match exit_fd.readable().await {
                Ok(_) => return,
                Err(e) => tracing::debug!("waiting on the pidfd failed: {e}"),
            }
        }
        // Without a pidfd this reaps the child, after which group signals
        // could in theory hit a reused pid. `wait` reports any error.
        let _ = self.child.wait().await;
    }
}

#[async_trait::async_trait]
impl RunningProcess for LocalProcess {
    async fn next_progress(&mut self) -> Option<String> {
        self.progress.as_mut()?.next_line().await
    }

    async fn send_line(&mut self, line: &str) -> io::Result<()> {
        let stdin = self.stdin.as_mut().ok_or_else(|| {
            io::Error::new(io::ErrorKind::NotConnected, "the child has no stdin pipe")
        })?;
        crate::write_line(stdin, line).await
    }

    fn close_stdin(&mut self) {
        self.stdin = None;
    }

    fn terminator(&self) -> Terminator {
        Terminator::new(Arc::clone(&self.group) as Arc<dyn Terminate>)
    }

    async fn wait(mut self: Box<Self>) -> Result<ProcessExit, ExecError> {
        // A child reading its stdin to the end would otherwise never exit.
        self.close_stdin();
        self.exited().await;
        // The child is a zombie at worst, so the group id is still ours.
        let terminated = self.group.kill_leftovers_and_seal();
        let status = self.child.wait().await.map_err(|error| ExecError::Wait {
            program: self.program.clone(),
            error,
        })?;
        let wall = self.started.elapsed();
        let output = match self.capture.take() {
            Some(capture) => capture.finish(DRAIN_TIMEOUT).await,
            None => Default::default(),
        };
        Ok(ProcessExit {
            status: match status.code() {
                Some(code) => ExitStatus::Code(code),
                None => ExitStatus::Signal(status.signal().unwrap_or_default()),
            },
            output,
            wall,
            terminated,
            oom_killed: false,
        })
    }

    fn pid(&self) -> Option<u32> {
        self.child.id()
    }
}

impl Drop for LocalProcess {
    /// A process dropped without `wait` takes its whole group with it.
    fn drop(&mut self) {
        self.group.kill_leftovers_and_seal();
    }
}

/// The child's process group. Signals go out only until the group is sealed,
/// just before the child is reaped.
#[derive(Debug)]
struct ProcessGroup {
    pgid: Pid,
    state: Mutex<GroupState>,
}

#[derive(Debug, Default)]
struct GroupState {
    sealed: bool,
    terminated: bool,
    terminating: bool,
}

impl ProcessGroup {
    fn new(pgid: Pid) -> Self {
        ProcessGroup {
            pgid,
            state: Mutex::default(),
        }
    }

    /// The lock is held across each kill so that sealing cannot slip in between.
    fn lock(&self) -> MutexGuard<'_, GroupState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn send(&self, state: &GroupState, signal: Signal) {
        if state.sealed {
            return;
        }
        match killpg(self.pgid, signal) {
            Ok(()) | Err(Errno::ESRCH) => {}
            Err(e) => {
                tracing::warn!(pgid = %self.pgid, ?signal, "failed to signal process group: {e}")
            }
        }
    }

    /// SIGKILLs what is left of the group and stops all later signals.
    /// Returns whether the process was terminated.
    fn kill_leftovers_and_seal(&self) -> bool {
        let mut state = self.lock();
        self.send(&state, Signal::SIGKILL);
        state.sealed = true;
        state.terminated
    }
}

impl Terminate for ProcessGroup {
    fn terminate(self: Arc<Self>, grace: Duration) {
        let mut state = self.lock();
        if state.sealed || std::mem::replace(&mut state.terminating, true) {
            return;
        }
        state.terminated = true;
        self.send(&state, Signal::SIGTERM);
        drop(state);
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            let state = self.lock();
            self.send(&state, Signal::SIGKILL);
        });
    }

    fn kill(self: Arc<Self>) {
        let mut state = self.lock();
        if !state.sealed {
            state.terminated = true;
            self.send(&state, Signal::SIGKILL);
        }
    }
}
