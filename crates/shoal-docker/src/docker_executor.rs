//! The docker executor: runs a [`ProcessSpec`] inside a [`SlotContainer`]
//! through the exec API, with the same contract as the process executor.
//!
//! **The wrapper.** argv is never interpolated into a shell script. Each
//! process runs under a fixed `/bin/sh` script ([`WRAPPER`]) that gets argv as
//! positional parameters and runs it with `(exec "$@")`, so that argv[0] is
//! always a program looked up on `PATH`, never a shell builtin. Before that the
//! wrapper opens the progress FIFO at fd 3 (if asked), writes its pid to the
//! process's scratch directory and silences its own stderr (shells report a
//! child killed by a signal there: "Terminated"), keeping the test's stderr
//! as it was; after it, it writes the exit status there
//! and kills its whole process group (`kill -KILL 0`), which takes any
//! background processes the test left behind with it, as the process executor
//! does. The image needs a POSIX `/bin/sh` with `kill` (busybox, dash, bash).
//!
//! **Process group.** runc makes every exec'd process the leader of a new
//! session, so the wrapper's pid is the group id of the test and all its
//! children. Termination runs `kill -TERM -<pid>` (later `kill -KILL -<pid>`)
//! with the shell's builtin `kill`, as root, through a second exec: that works
//! whatever user the test runs as and does not need this host to see the
//! container's processes (or be allowed to signal them). The wrapper traps
//! TERM with a no-op handler (not an ignore, which the test would inherit), so
//! it outlives a terminated test to record its status and kill the rest of the
//! group; a group that ignores TERM is killed after the grace period. Signals
//! are sent only until the exec's output stream has closed, which the engine
//! does once the wrapper has exited.
//!
//! **Exit status.** The wrapper's shell reports a test killed by signal N as
//! 128+N; such statuses (129..=192) are reported as [`ExitStatus::Signal`], as
//! the process executor would (a process that calls `exit(137)` itself reads
//! as SIGKILL). Without a recorded status (the wrapper itself was killed) the
//! exec's exit code is read the same way. An image without `/bin/sh` gets
//! exit code 126 and the engine's message as output.
//!
//! **Progress.** With [`ProcessSpec::progress_pipe`] shoal makes a FIFO in the
//! process's scratch directory on this host and reads it; the wrapper opens it
//! at fd 3 and the test gets `SHOAL_PROGRESS_FD=3`, exactly as with the
//! process executor, so the pytest plugin works unchanged. shoal holds a write
//! end itself until the exec has ended, so that a test that has not opened the
//! FIFO yet does not read as end of progress.
//!
//! **Output and stdin.** stdout and stderr come multiplexed on the exec's
//! attach stream and go into the same capped [`OutputBuffer`] as local
//! processes. With [`ProcessSpec::stdin_pipe`] the stream's write side is the
//! test's stdin; closing it half-closes the connection, which the engine passes
//! on as end of input.
//!
//! **Out of memory.** A test the kernel kills at the container's memory limit
//! exits with SIGKILL; [`ProcessExit::oom_killed`] says so, from the
//! container's OOM kill count ([`SlotContainer::oom_kills`]), which is up to
//! date for a process once its `wait` has returned (a SIGKILL that shoal did
//! not send waits up to 3 s for the engine's `oom` event, which can trail
//! the exec's death).

use crate::{PathMap, SlotContainer};
use bollard::Docker;
use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use nix::sys::stat::Mode;
use shoal_exec::{
    ExecError, Executor, ExitStatus, OutputBuffer, PROGRESS_FD, ProcessExit, ProcessSpec,
    ProgressLines, RunningProcess, Terminate, Terminator,
};
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::runtime::Handle;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio_stream::{Stream, StreamExt};

/// The fixed script every process runs under. `$1`: the process's scratch
/// directory in the container; `$2`: `1` to open the progress FIFO at fd 3;
/// the rest: argv.
pub const WRAPPER: &str = r#"d=$1 p=$2
shift 2
if [ "$p" = 1 ]; then exec 3>"$d/progress"; fi
trap : TERM
echo $$ >"$d/pid"
exec 4>&2 2>/dev/null
(exec "$@" 2>&4 4>&-)
echo $? >"$d/rc"
kill -KILL 0"#;

/// Sends signal `$1` to process group `$2`.
const KILL_SCRIPT: &str = r#"kill -"$1" -"$2" 2>/dev/null || :"#;

/// Environment variable telling the test where its progress pipe is.
const PROGRESS_ENV: &str = "SHOAL_PROGRESS_FD";

/// How long `wait` waits for the engine's `exec_die` event (after which the
/// process's OOM kills are counted) and for the exec to read as not running.
const EVENT_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a process killed by SIGKILL (not by shoal) waits for the
/// engine's `oom` event before its exit is reported without one: the event
/// and the exec's death arrive separately (seen late under load). Only such
/// kills pay it.
const OOM_EVENT_GRACE: Duration = Duration::from_secs(3);

/// How often a pending signal looks for the wrapper's pid file.
const PID_POLL: Duration = Duration::from_millis(5);

/// Largest output frame read from the engine at once.
const FRAME_CAPACITY: usize = 64 * 1024;

type OutputStream = Pin<Box<dyn Stream<Item = Result<LogOutput, bollard::errors::Error>> + Send>>;
type StdinWriter = Pin<Box<dyn AsyncWrite + Send>>;

/// Runs processes in one slot's container; paths in a [`ProcessSpec`] (the
/// working directory, path lists in the environment) are host paths,
/// translated through a [`PathMap`]. Cheap to clone.
#[derive(Debug, Clone)]
pub struct DockerExecutor {
    container: Arc<SlotContainer>,
    paths: PathMap,
}

impl DockerExecutor {
    /// Runs processes in `container`, whose mounts `paths` describes.
    pub fn new(container: Arc<SlotContainer>, paths: PathMap) -> Self {
        DockerExecutor { container, paths }
    }

    /// The container the processes run in (for its OOM kill count).
    pub fn container(&self) -> &Arc<SlotContainer> {
        &self.container
    }

    /// How host paths are translated.
    pub fn paths(&self) -> &PathMap {
        &self.paths
    }
}

#[async_trait::async_trait]
impl Executor for DockerExecutor {
    async fn spawn(&self, spec: &ProcessSpec) -> Result<Box<dyn RunningProcess>, ExecError> {
        Ok(Box::new(DockerProcess::spawn(self, spec).await?))
    }
}

/// A process's scratch directory on this host, removed when the last user
/// (the process, a pending signal) lets go of it.
#[derive(Debug)]
struct SpawnDir(PathBuf);

impl SpawnDir {
    fn read_number(&self, file: &str) -> Option<i64> {
        std::fs::read_to_string(self.0.join(file))
            .ok()?
            .trim()
            .parse()
            .ok()
    }
}

impl Drop for SpawnDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            tracing::debug!(dir = %self.0.display(), "failed to remove a scratch directory: {e}");
        }
    }
}

struct DockerProcess {
    docker: Docker,
    exec_id: String,
    program: String,
    group: Arc<ExecGroup>,
    /// Taken by `wait`.
    pump: Option<JoinHandle<OutputBuffer>>,
    progress: Option<ProgressLines<pipe::Receiver>>,
    /// `None` without a stdin pipe or once closed.
    stdin: Option<StdinWriter>,
    /// Taken by `wait`.
    exec_died: Option<oneshot::Receiver<()>>,
    started: Instant,
    /// For its OOM kill count.
    container: Arc<SlotContainer>,
    /// The container's OOM kills before this process started.
    oom_before: u64,
}

impl DockerProcess {
    async fn spawn(executor: &DockerExecutor, spec: &ProcessSpec) -> Result<Self, ExecError> {
        let program = spec.argv.first().ok_or(ExecError::EmptyArgv)?.clone();
        if !spec.cwd.is_dir() {
            return Err(ExecError::MissingCwd {
                dir: spec.cwd.clone(),
            });
        }
        let fail = |error: io::Error| ExecError::Spawn {
            program: program.clone(),
            error,
        };
        let cwd = executor
            .paths
            .to_container(&spec.cwd)
            .map_err(|e| fail(io::Error::new(io::ErrorKind::InvalidInput, e.to_string())))?;
        let mut env = executor.paths.map_env(&spec.env);
        let container = &executor.container;
        let (host_dir, container_dir) = container
            .new_spawn_dir()
            .map_err(|e| fail(io::Error::other(e.to_string())))?;
        let dir = Arc::new(SpawnDir(host_dir));

        let (progress, fifo_writer) = if spec.progress_pipe {
            let (reader, writer) = make_fifo(&dir.0.join("progress")).map_err(fail)?;
            env.insert(PROGRESS_ENV.to_owned(), PROGRESS_FD.to_string());
            (Some(ProgressLines::new(reader)), Some(writer))
        } else {
            (None, None)
        };

        let mut cmd = vec![
            "/bin/sh".to_owned(),
            "-c".to_owned(),
            WRAPPER.to_owned(),
            "shoal-exec".to_owned(),
            container_dir,
            if spec.progress_pipe { "1" } else { "0" }.to_owned(),
        ];
        cmd.extend(spec.argv.iter().map(|a| executor.paths.map_arg(a)));
        let options = CreateExecOptions {
            attach_stdin: Some(spec.stdin_pipe),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            tty: Some(false),
            env: Some(env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
            cmd: Some(cmd),
            working_dir: Some(cwd),
            ..Default::default()
        };
        let docker = container.docker();
        let engine_error =
            |e: bollard::errors::Error| fail(io::Error::other(format!("docker: {e}")));
        let exec = docker
            .create_exec(container.id(), options)
            .await
            .map_err(engine_error)?;
        let exec_died = container.events().exec_died(&exec.id);
        let oom_before = container.oom_kills();
        let started = Instant::now();
        let start_options = StartExecOptions {
            detach: false,
            tty: false,
            output_capacity: Some(FRAME_CAPACITY),
        };
        let (output, input) = match docker.start_exec(&exec.id, Some(start_options)).await {
            Ok(StartExecResults::Attached { output, input }) => (output, input),
            Ok(StartExecResults::Detached) => {
                container.events().forget(&exec.id);
                return Err(fail(io::Error::other(
                    "the engine did not attach to the process",
                )));
            }
            Err(e) => {
                container.events().forget(&exec.id);
                return Err(engine_error(e));
            }
        };

        let (done_tx, done_rx) = watch::channel(false);
        let pump = tokio::spawn(pump(
            output,
            OutputBuffer::new(spec.output_cap),
            fifo_writer,
            done_tx,
        ));
        let group = Arc::new(ExecGroup {
            docker: docker.clone(),
            container: container.id().to_owned(),
            dir,
            done: done_rx,
            runtime: Handle::current(),
            state: Mutex::default(),
        });
        Ok(DockerProcess {
            docker: docker.clone(),
            exec_id: exec.id,
            program,
            group,
            pump: Some(pump),
            progress,
            stdin: spec.stdin_pipe.then_some(input),
            exec_died: Some(exec_died),
            started,
            container: Arc::clone(container),
            oom_before,
        })
    }
}

/// The exec's exit code, once the engine reads it as not running.
async fn exec_exit_code(
    docker: &Docker,
    exec_id: &str,
    program: &str,
) -> Result<Option<i64>, ExecError> {
    let deadline = Instant::now() + EVENT_TIMEOUT;
    loop {
        let inspect = docker
            .inspect_exec(exec_id)
            .await
            .map_err(|e| ExecError::Wait {
                program: program.to_owned(),
                error: io::Error::other(format!("docker: {e}")),
            })?;
        if inspect.running != Some(true) || Instant::now() >= deadline {
            return Ok(inspect.exit_code);
        }
        tokio::time::sleep(PID_POLL).await;
    }
}

/// A FIFO at `path` that any user may write, opened for reading, plus a
/// write end that keeps the reader from seeing end of input too early.
fn make_fifo(path: &std::path::Path) -> io::Result<(pipe::Receiver, pipe::Sender)> {
    nix::unistd::mkfifo(path, Mode::from_bits_truncate(0o666))?;
    // mkfifo applies the umask.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))?;
    let reader = pipe::OpenOptions::new().open_receiver(path)?;
    let writer = pipe::OpenOptions::new().open_sender(path)?;
    Ok((reader, writer))
}

/// Reads the exec's output into `buffer` until the engine closes the stream
/// (the wrapper has exited), then lets the progress FIFO reach end of input
/// and tells the process group it is gone.
async fn pump(
    mut output: OutputStream,
    mut buffer: OutputBuffer,
    fifo_writer: Option<pipe::Sender>,
    done: watch::Sender<bool>,
) -> OutputBuffer {
    while let Some(frame) = output.next().await {
        match frame {
            Ok(LogOutput::StdOut { message })
            | Ok(LogOutput::StdErr { message })
            | Ok(LogOutput::Console { message }) => buffer.push(&message),
            Ok(LogOutput::StdIn { .. }) => {}
            Err(e) => {
                tracing::debug!("stopped reading the exec's output: {e}");
                break;
            }
        }
    }
    drop(fifo_writer);
    done.send_replace(true);
    buffer
}

#[async_trait::async_trait]
impl RunningProcess for DockerProcess {
    async fn next_progress(&mut self) -> Option<String> {
        self.progress.as_mut()?.next_line().await
    }

    async fn send_line(&mut self, line: &str) -> io::Result<()> {
        let stdin = self.stdin.as_mut().ok_or_else(|| {
            io::Error::new(io::ErrorKind::NotConnected, "the process has no stdin pipe")
        })?;
        if *self.group.done.borrow() {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the process has exited",
            ));
        }
        shoal_exec::write_line(stdin, line).await
    }

    fn close_stdin(&mut self) {
        if let Some(mut stdin) = self.stdin.take() {
            // Half-closes the connection: the engine closes the test's stdin.
            self.group.runtime.spawn(async move {
                if let Err(e) = stdin.shutdown().await {
                    tracing::debug!("failed to close the exec's stdin: {e}");
                }
            });
        }
    }

    fn terminator(&self) -> Terminator {
        Terminator::new(Arc::clone(&self.group) as Arc<dyn Terminate>)
    }

    async fn wait(mut self: Box<Self>) -> Result<ProcessExit, ExecError> {
        self.close_stdin();
        let buffer = match self.pump.take() {
            Some(task) => match task.await {
                Ok(buffer) => buffer,
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Err(e) => {
                    tracing::warn!("exec output task did not finish: {e}");
                    OutputBuffer::new(0)
                }
            },
            None => OutputBuffer::new(0),
        };
        let wall = self.started.elapsed();
        let terminated = self.group.lock().terminated;
        let recorded = self.group.dir.read_number("rc");
        if recorded.is_none() {
            // The wrapper was killed before it could kill its group.
            if let Some(pid) = self.group.recorded_pid() {
                let _ = send_signal(&self.docker, &self.group.container, "KILL", pid).await;
            }
        }
        // An exec whose wrapper never ran (no `/bin/sh`) gets no `exec_die`.
        let ran = self.group.recorded_pid().is_some();
        if let (Some(died), true) = (self.exec_died.take(), ran) {
            let _ = tokio::time::timeout(EVENT_TIMEOUT, died).await;
        }
        let status = match recorded {
            Some(code) => decode_status(code),
            None => match exec_exit_code(&self.docker, &self.exec_id, &self.program).await? {
                Some(code) => decode_status(code),
                None => {
                    return Err(ExecError::Wait {
                        program: self.program.clone(),
                        error: io::Error::other("the engine reported no exit code"),
                    });
                }
            },
        };
        // One process runs in a slot's container at a time, so a kill since
        // it started was of it or of one of its children.
        let mut oom_killed = self.container.oom_kills() > self.oom_before;
        if !oom_killed && status == ExitStatus::Signal(9) && !terminated {
            // A SIGKILL shoal did not send: the engine's `oom` event travels
            // apart from the exec's death and, under load, can come after it.
            // Give it a moment rather than call an OOM kill a plain crash.
            let deadline = Instant::now() + OOM_EVENT_GRACE;
            while !oom_killed && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
                oom_killed = self.container.oom_kills() > self.oom_before;
            }
        }
        Ok(ProcessExit {
            status,
            output: buffer.finish(),
            wall,
            terminated,
            oom_killed,
        })
    }

    /// The process group id inside the container (the wrapper's pid), once
    /// the wrapper has recorded it and until it has exited.
    fn pid(&self) -> Option<u32> {
        if *self.group.done.borrow() {
            return None;
        }
        self.group.recorded_pid()
    }
}

impl Drop for DockerProcess {
    /// A process dropped without `wait` takes its whole group with it.
    fn drop(&mut self) {
        self.close_stdin();
        if !*self.group.done.borrow() {
            let group = Arc::clone(&self.group);
            self.group
                .runtime
                .spawn(async move { group.signal("KILL").await });
        }
    }
}

/// A shell status to an exit status: 129..=192 is death by signal 1..=64.
fn decode_status(code: i64) -> ExitStatus {
    match code {
        129..=192 => ExitStatus::Signal((code - 128) as i32),
        _ => ExitStatus::Code(i32::try_from(code).unwrap_or(i32::MAX)),
    }
}

/// The process group of one exec: signalled through further execs until the
/// exec's output stream has closed.
#[derive(Debug)]
struct ExecGroup {
    docker: Docker,
    container: String,
    dir: Arc<SpawnDir>,
    /// Becomes `true` once the wrapper has exited and the stream closed.
    done: watch::Receiver<bool>,
    runtime: Handle,
    state: Mutex<GroupState>,
}

#[derive(Debug, Default)]
struct GroupState {
    terminated: bool,
    terminating: bool,
}

impl ExecGroup {
    fn lock(&self) -> std::sync::MutexGuard<'_, GroupState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn recorded_pid(&self) -> Option<u32> {
        u32::try_from(self.dir.read_number("pid")?).ok()
    }

    /// The group id, once recorded; `None` if the exec ends first.
    async fn pid(&self) -> Option<u32> {
        let mut done = self.done.clone();
        loop {
            if let Some(pid) = self.recorded_pid() {
                return Some(pid);
            }
            if *done.borrow_and_update() {
                return None;
            }
            tokio::select! {
                () = tokio::time::sleep(PID_POLL) => {}
                changed = done.changed() => if changed.is_err() { return None },
            }
        }
    }

    async fn exited(&self) {
        let mut done = self.done.clone();
        let _ = done.wait_for(|done| *done).await;
    }

    /// Sends `signal` to the group unless the exec has ended.
    async fn signal(&self, signal: &str) {
        let Some(pid) = self.pid().await else {
            return;
        };
        if *self.done.borrow() {
            return;
        }
        if let Err(e) = send_signal(&self.docker, &self.container, signal, pid).await {
            tracing::warn!(container = %self.container, pid, signal, "failed to signal a process group: {e}");
        }
    }
}

impl Terminate for ExecGroup {
    fn terminate(self: Arc<Self>, grace: Duration) {
        {
            let mut state = self.lock();
            if *self.done.borrow() || std::mem::replace(&mut state.terminating, true) {
                return;
            }
            state.terminated = true;
        }
        let runtime = self.runtime.clone();
        runtime.spawn(async move {
            self.signal("TERM").await;
            tokio::select! {
                () = tokio::time::sleep(grace) => self.signal("KILL").await,
                () = self.exited() => {}
            }
        });
    }

    fn kill(self: Arc<Self>) {
        {
            let mut state = self.lock();
            if *self.done.borrow() {
                return;
            }
            state.terminated = true;
        }
        let runtime = self.runtime.clone();
        runtime.spawn(async move { self.signal("KILL").await });
    }
}

/// Runs the shell's `kill -SIGNAL -PID` in the container as root.
async fn send_signal(
    docker: &Docker,
    container: &str,
    signal: &str,
    pid: u32,
) -> Result<(), bollard::errors::Error> {
    let options = CreateExecOptions {
        cmd: Some(vec![
            "/bin/sh".to_owned(),
            "-c".to_owned(),
            KILL_SCRIPT.to_owned(),
            "shoal-kill".to_owned(),
            signal.to_owned(),
            pid.to_string(),
        ]),
        user: Some("0".to_owned()),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        ..Default::default()
    };
    let exec = docker.create_exec(container, options).await?;
    if let StartExecResults::Attached { mut output, .. } = docker.start_exec(&exec.id, None).await?
    {
        while let Some(frame) = output.next().await {
            frame?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_statuses_above_128_are_signals() {
        assert_eq!(decode_status(0), ExitStatus::Code(0));
        assert_eq!(decode_status(1), ExitStatus::Code(1));
        assert_eq!(decode_status(127), ExitStatus::Code(127));
        assert_eq!(decode_status(128), ExitStatus::Code(128));
        assert_eq!(decode_status(137), ExitStatus::Signal(9));
        assert_eq!(decode_status(143), ExitStatus::Signal(15));
        assert_eq!(decode_status(192), ExitStatus::Signal(64));
        assert_eq!(decode_status(255), ExitStatus::Code(255));
    }
}
