//! Integration tests of the process executor, against real processes.

mod output;
mod progress;
mod spawn;
mod stdin;
mod termination;

use nix::errno::Errno;
use nix::sys::signal::kill;
use nix::unistd::Pid;
use shoal_exec::{Executor, ProcessExecutor, ProcessExit, ProcessSpec, RunningProcess};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// A spec running `argv` in the temp dir with a 1 MiB output cap.
fn spec(argv: &[&str]) -> ProcessSpec {
    ProcessSpec {
        argv: argv.iter().map(|a| a.to_string()).collect(),
        cwd: std::env::temp_dir(),
        env: BTreeMap::new(),
        progress_pipe: false,
        stdin_pipe: false,
        output_cap: 1 << 20,
    }
}

fn with_progress(argv: &[&str]) -> ProcessSpec {
    ProcessSpec {
        progress_pipe: true,
        ..spec(argv)
    }
}

async fn start(spec: &ProcessSpec) -> Box<dyn RunningProcess> {
    ProcessExecutor.spawn(spec).await.expect("spawn")
}

async fn run(spec: &ProcessSpec) -> ProcessExit {
    start(spec).await.wait().await.expect("wait")
}

/// Whether `pid` is gone or a zombie (this container's init may never reap
/// orphans, and a zombie runs nothing).
fn is_dead(pid: i32) -> bool {
    if kill(Pid::from_raw(pid), None) == Err(Errno::ESRCH) {
        return true;
    }
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            stat.rsplit_once(") ")
                .is_some_and(|(_, rest)| rest.starts_with('Z'))
        })
        .unwrap_or(true)
}

/// Waits up to 5 s for `pid` to die.
async fn dies_soon(pid: i32) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if is_dead(pid) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

fn parse_pid(text: &str) -> i32 {
    text.trim()
        .parse()
        .unwrap_or_else(|_| panic!("not a pid: {text:?}"))
}
