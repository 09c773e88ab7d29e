//! Terminating, killing and cleaning up whole process groups.

use super::{dies_soon, parse_pid, run, spec, start, with_progress};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use shoal_exec::ExitStatus;
use std::time::{Duration, Instant};

const SIGKILL: ExitStatus = ExitStatus::Signal(Signal::SIGKILL as i32);
const SIGTERM: ExitStatus = ExitStatus::Signal(Signal::SIGTERM as i32);

#[tokio::test]
async fn terminate_escalates_to_sigkill_of_the_whole_group_after_grace() {
    let mut process = start(&with_progress(&[
        "sh",
        "-c",
        r#"trap "" TERM; sleep 100 & echo $! >&3; wait"#,
    ]))
    .await;
    let grandchild = parse_pid(&process.next_progress().await.expect("grandchild pid"));
    let grace = Duration::from_millis(500);
    let started = Instant::now();
    process.terminate(grace);
    process.terminate(grace);
    let exit = process.wait().await.expect("wait");
    assert_eq!(exit.status, SIGKILL);
    assert!(exit.terminated);
    assert!(
        started.elapsed() >= grace,
        "killed before the grace period ended"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(
        dies_soon(grandchild).await,
        "grandchild {grandchild} survived"
    );
}

#[tokio::test]
async fn terminate_lets_a_cooperative_child_exit_before_grace() {
    let mut process = start(&spec(&["sleep", "100"])).await;
    let started = Instant::now();
    process.terminate(Duration::from_secs(30));
    let exit = process.wait().await.expect("wait");
    assert_eq!(exit.status, SIGTERM);
    assert!(exit.terminated);
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn kill_is_immediate() {
    let mut process = start(&spec(&["sleep", "100"])).await;
    process.kill();
    let exit = process.wait().await.expect("wait");
    assert_eq!(exit.status, SIGKILL);
    assert!(exit.terminated);
}

#[tokio::test]
async fn terminator_stops_a_process_while_wait_owns_it() {
    let process = start(&spec(&["sleep", "100"])).await;
    let terminator = process.terminator();
    let wait = process.wait();
    tokio::pin!(wait);
    let early = tokio::time::timeout(Duration::from_millis(200), &mut wait).await;
    assert!(early.is_err(), "sleep 100 exited early");
    terminator.terminate(Duration::from_secs(5));
    let exit = wait.await.expect("wait");
    assert_eq!(exit.status, SIGTERM);
    assert!(exit.terminated);
    terminator.kill(); // after the exit: a no-op, not a stray signal
}

#[tokio::test]
async fn a_process_that_ends_by_itself_is_not_terminated() {
    let exit = run(&spec(&["sh", "-c", "exit 3"])).await;
    assert_eq!(exit.status, ExitStatus::Code(3));
    assert!(!exit.terminated);
}

#[tokio::test]
async fn leftover_grandchildren_are_killed_when_the_child_exits() {
    // The background sleep holds stdout open: without the group kill, wait()
    // would only return after the drain timeout, with the sleep alive.
    let exit = run(&spec(&["sh", "-c", "sleep 100 & echo $!"])).await;
    assert!(exit.status.success());
    let grandchild = parse_pid(&exit.output.text);
    assert!(
        dies_soon(grandchild).await,
        "grandchild {grandchild} survived"
    );
}

#[tokio::test]
async fn output_held_open_outside_the_group_does_not_hang_wait() {
    let script = "import subprocess\n\
        p = subprocess.Popen(['sleep', '100'], start_new_session=True)\n\
        print(p.pid, flush=True)";
    let started = Instant::now();
    let exit = run(&spec(&["python3", "-c", script])).await;
    let escaped = parse_pid(&exit.output.text);
    let _ = kill(Pid::from_raw(escaped), Signal::SIGKILL);
    assert!(exit.status.success());
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn dropping_a_process_kills_its_group() {
    let mut process = start(&with_progress(&[
        "sh",
        "-c",
        "sleep 100 & echo $! >&3; wait",
    ]))
    .await;
    let grandchild = parse_pid(&process.next_progress().await.expect("grandchild pid"));
    let child = process.pid().expect("pid") as i32;
    drop(process);
    assert!(dies_soon(child).await, "child {child} survived");
    assert!(
        dies_soon(grandchild).await,
        "grandchild {grandchild} survived"
    );
}
