//! The harness: throwaway copies of the fixture projects, and the `shoal`
//! binary (or a tool) run as a subprocess under a watchdog, with leftover
//! processes found by an environment marker.

use std::ffi::OsStr;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

/// The binary under test.
pub const SHOAL: &str = env!("CARGO_BIN_EXE_shoal");

/// How long any one command may take before the watchdog kills it.
pub const WATCHDOG: Duration = Duration::from_secs(180);

/// The output cap of the built-in config (`run.output_cap = "1MiB"`).
pub const DEFAULT_OUTPUT_CAP: usize = 1024 * 1024;

/// The environment variable that tags every process a test starts, so
/// leftovers can be found (and cleaned up) without guessing at names.
const MARKER_VAR: &str = "SHOAL_E2E_MARKER";

/// `fixtures/` in the repository. Read only: tests work on copies.
pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures")
        .canonicalize()
        .expect("fixtures/ exists")
}

/// Where the cargo fixture is built: one target dir for every test of this
/// binary (cargo's lock serializes builds), outside the repository.
pub fn cargo_target_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("cargo-fixture")
}

/// Fails (never skips) when python3 cannot import pytest.
pub fn require_pytest() {
    static CHECK: OnceLock<Result<(), String>> = OnceLock::new();
    let check = CHECK.get_or_init(|| {
        match Command::new("python3")
            .args(["-c", "import pytest; print(pytest.__version__)"])
            .output()
        {
            Ok(out) if out.status.success() => Ok(()),
            Ok(out) => Err(format!(
                "python3 cannot import pytest (install it: `pip install pytest`, or run scripts/test):\n{}",
                String::from_utf8_lossy(&out.stderr)
            )),
            Err(e) => Err(format!(
                "python3 is not runnable ({e}); these tests need python3 with pytest"
            )),
        }
    });
    if let Err(e) = check {
        panic!("{e}");
    }
}

/// A private copy of a fixture project in a temporary directory, with a
/// sibling `out/` directory for reports. Processes started through it carry
/// a marker; any still alive when it is dropped are killed.
#[derive(Debug)]
pub struct Project {
    dir: tempfile::TempDir,
    root: PathBuf,
    marker: String,
}

impl Project {
    /// A copy of `fixtures/pytest-project`.
    pub fn pytest() -> Project {
        require_pytest();
        Project::copy_of("pytest-project")
    }

    /// A copy of `fixtures/cargo-project` (without any `target/`).
    pub fn cargo() -> Project {
        Project::copy_of("cargo-project")
    }

    /// A copy of `fixtures/command-project`.
    pub fn command() -> Project {
        require_pytest();
        Project::copy_of("command-project")
    }

    /// A copy of `fixtures/NAME`, leaving out build output, caches and
    /// shoal's own state from any run someone made in the repository.
    pub fn copy_of(name: &str) -> Project {
        let dir = tempfile::Builder::new()
            .prefix("shoal-e2e-")
            .tempdir()
            .expect("create a temp dir");
        let root = dir.path().join(name);
        copy_tree(&fixtures_dir().join(name), &root);
        fs::create_dir(dir.path().join("out")).expect("create out/");
        let marker = dir.path().display().to_string();
        Project { dir, root, marker }
    }

    /// The project root (what `-C` points at).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A path for reports and state outside the project root.
    pub fn out(&self, name: &str) -> PathBuf {
        self.dir.path().join("out").join(name)
    }

    /// Writes `contents` to `rel` under the project root.
    pub fn write(&self, rel: &str, contents: &str) {
        let path = self.root.join(rel);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).expect("create parent dir");
        }
        fs::write(&path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }

    /// `shoal -C ROOT ARGS...` with a clean environment.
    pub fn shoal<I, S>(&self, args: I) -> Cmd
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = self.command_in_root(SHOAL);
        cmd.arg("-C").arg(&self.root).args(args);
        Cmd::new(cmd)
    }

    /// `shoal -C DIR ARGS...` for another project directory, with this
    /// project's environment and process marker.
    pub fn shoal_at<I, S>(&self, dir: &Path, args: I) -> Cmd
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = self.command_in_root(SHOAL);
        cmd.arg("-C").arg(dir).args(args);
        Cmd::new(cmd)
    }

    /// Any program, run in the project root with the same clean environment.
    pub fn tool<I, S>(&self, program: &str, args: I) -> Cmd
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = self.command_in_root(program);
        cmd.args(args);
        Cmd::new(cmd)
    }

    fn command_in_root(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.current_dir(&self.root);
        clean_env(&mut cmd);
        cmd.env(MARKER_VAR, &self.marker);
        cmd
    }

    /// Processes started by this project's commands that are still alive.
    pub fn live_processes(&self) -> Vec<String> {
        marked_processes(&self.marker)
            .into_iter()
            .map(|(pid, cmdline)| format!("{pid}: {cmdline}"))
            .collect()
    }

    /// Asserts that nothing this project started is still running. Reaping
    /// by init can lag a moment behind the parent's exit, so this waits up to
    /// two seconds before failing.
    pub fn assert_no_leftover_processes(&self) {
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let live = self.live_processes();
            if live.is_empty() {
                return;
            }
            if Instant::now() > deadline {
                panic!("processes outlived the run:\n{}", live.join("\n"));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        // A failed assertion must not leave an hour-long sleep behind.
        for (pid, _) in marked_processes(&self.marker) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// Removes what could change the fixtures' or shoal's behaviour: every
/// `SHOAL_*` variable (including those of an enclosing shoal run), pytest's
/// extra options and color settings.
fn clean_env(cmd: &mut Command) {
    for (key, _) in std::env::vars_os() {
        let k = key.to_string_lossy();
        if k.starts_with("SHOAL_") || k == "PYTEST_ADDOPTS" || k == "CLICOLOR_FORCE" {
            cmd.env_remove(&key);
        }
    }
    cmd.env("NO_COLOR", "1")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("CARGO_TARGET_DIR", cargo_target_dir())
        .stdin(Stdio::null());
}

fn copy_tree(from: &Path, to: &Path) {
    const SKIP: [&str; 4] = ["target", ".shoal", "__pycache__", ".pytest_cache"];
    fs::create_dir_all(to).unwrap_or_else(|e| panic!("create {}: {e}", to.display()));
    for entry in fs::read_dir(from).unwrap_or_else(|e| panic!("read {}: {e}", from.display())) {
        let entry = entry.expect("dir entry");
        let name = entry.file_name();
        if SKIP.iter().any(|s| OsStr::new(s) == name) {
            continue;
        }
        let (src, dst) = (entry.path(), to.join(&name));
        if entry.file_type().expect("file type").is_dir() {
            copy_tree(&src, &dst);
        } else {
            fs::copy(&src, &dst).unwrap_or_else(|e| panic!("copy {}: {e}", src.display()));
        }
    }
}

/// (pid, command line) of every process whose environment carries `marker`.
fn marked_processes(marker: &str) -> Vec<(i32, String)> {
    let needle = format!("{MARKER_VAR}={marker}\0");
    let mut found = Vec::new();
    let Ok(entries) = fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(environ) = fs::read(entry.path().join("environ")) else {
            continue;
        };
        if environ
            .windows(needle.len())
            .any(|w| w == needle.as_bytes())
        {
            let cmdline = fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            found.push((pid, cmdline.trim_end().to_owned()));
        }
    }
    found
}

/// A command to run under the watchdog.
#[derive(Debug)]
pub struct Cmd {
    cmd: Command,
    timeout: Duration,
}

impl Cmd {
    fn new(cmd: Command) -> Cmd {
        Cmd {
            cmd,
            timeout: WATCHDOG,
        }
    }

    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Cmd {
        self.cmd.arg(arg);
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Cmd
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.cmd.args(args);
        self
    }

    pub fn env(mut self, key: &str, value: impl AsRef<OsStr>) -> Cmd {
        self.cmd.env(key, value);
        self
    }

    pub fn env_remove(mut self, key: &str) -> Cmd {
        self.cmd.env_remove(key);
        self
    }

    /// Runs to completion, capturing stdout and stderr; panics if the
    /// command outlives the watchdog.
    pub fn run(mut self) -> Output {
        let what = format!("{:?}", self.cmd);
        let start = Instant::now();
        let child = self
            .cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("failed to start {what}: {e}"));
        let mut running = Running::new(child);
        let status = running.wait_for(self.timeout).unwrap_or_else(|| {
            running.kill();
            panic!(
                "{what} did not finish within {:?}\nstdout:\n{}\nstderr:\n{}",
                self.timeout,
                running.stdout(),
                running.stderr()
            )
        });
        Output {
            status,
            stdout: running.stdout(),
            stderr: running.stderr(),
            elapsed: start.elapsed(),
            what,
        }
    }

    /// Starts the command in the background (for signalling it).
    pub fn spawn(mut self) -> Running {
        let what = format!("{:?}", self.cmd);
        let child = self
            .cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("failed to start {what}: {e}"));
        Running::new(child)
    }
}

/// A child process whose stdout and stderr are drained by threads (so it
/// never blocks on a full pipe).
#[derive(Debug)]
pub struct Running {
    child: Child,
    stdout: Option<thread::JoinHandle<Vec<u8>>>,
    stderr: Option<thread::JoinHandle<Vec<u8>>>,
    out: Vec<u8>,
    err: Vec<u8>,
}

impl Running {
    fn new(mut child: Child) -> Running {
        fn drain(mut r: impl Read + Send + 'static) -> thread::JoinHandle<Vec<u8>> {
            thread::spawn(move || {
                let mut buf = Vec::new();
                let _ = r.read_to_end(&mut buf);
                buf
            })
        }
        let stdout = child.stdout.take().map(drain);
        let stderr = child.stderr.take().map(drain);
        Running {
            child,
            stdout,
            stderr,
            out: Vec::new(),
            err: Vec::new(),
        }
    }

    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).expect("pid fits in i32")
    }

    /// Waits up to `timeout`; `None` if the process is still running.
    pub fn wait_for(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for child") {
                self.collect();
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the process (not its children: `Project`'s drop does that).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.collect();
    }

    fn collect(&mut self) {
        if let Some(h) = self.stdout.take() {
            self.out = h.join().unwrap_or_default();
        }
        if let Some(h) = self.stderr.take() {
            self.err = h.join().unwrap_or_default();
        }
    }

    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.out).into_owned()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.err).into_owned()
    }
}

/// What a finished command did.
#[derive(Debug)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
    what: String,
}

impl Output {
    /// The output of a process run with [`Cmd::spawn`] and waited for.
    pub fn from_parts(status: ExitStatus, stdout: String, stderr: String) -> Output {
        Output {
            status,
            stdout,
            stderr,
            elapsed: Duration::ZERO,
            what: "background shoal".into(),
        }
    }

    /// The exit code; panics if the process was killed by a signal.
    pub fn code(&self) -> i32 {
        self.status
            .code()
            .unwrap_or_else(|| panic!("{} died: {}\n{}", self.what, self.status, self.dump()))
    }

    /// Asserts the exit code, showing the output when it differs.
    #[track_caller]
    pub fn assert_code(&self, expected: i32) -> &Output {
        assert_eq!(
            self.code(),
            expected,
            "unexpected exit code from {}\n{}",
            self.what,
            self.dump()
        );
        self
    }

    pub fn dump(&self) -> String {
        format!(
            "--- stdout ---\n{}\n--- stderr ---\n{}",
            tail(&self.stdout, 8000),
            tail(&self.stderr, 8000)
        )
    }
}

fn tail(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut at = s.len() - max;
    while !s.is_char_boundary(at) {
        at += 1;
    }
    &s[at..]
}

/// The `suite name` lines of `shoal list` (text format), as test names.
pub fn listed_names(out: &Output, suite: &str) -> Vec<String> {
    out.stdout
        .lines()
        .map(|l| {
            l.strip_prefix(suite)
                .and_then(|rest| rest.strip_prefix(' '))
                .unwrap_or_else(|| panic!("`shoal list` line {l:?} is not `{suite} NAME`"))
                .to_owned()
        })
        .collect()
}

/// `git ARGS` in `dir` with a fixed identity; its trimmed stdout. Panics
/// (with git's stderr) when git fails.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "shoal e2e")
        .env("GIT_AUTHOR_EMAIL", "e2e@shoal.invalid")
        .env("GIT_COMMITTER_NAME", "shoal e2e")
        .env("GIT_COMMITTER_EMAIL", "e2e@shoal.invalid")
        .output()
        .expect("run git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}
