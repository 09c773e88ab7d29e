//! The docker executor: exit statuses, env and cwd, output capping, the
//! progress FIFO, stdin, termination of a process group, OOM detection, and
//! several processes in one container.

use crate::support::{Slot, engine, opts};
use shoal_exec::{ExecError, Executor, ExitStatus};
use std::time::{Duration, Instant};

#[tokio::test]
#[cfg_attr(
    not(shoal_has_docker),
    ignore = "needs a Docker engine and the test images: set SHOAL_TEST_DOCKER=1 (scripts/test does, after scripts/test-images.sh)"
)]
async fn echo_and_failing_commands_report_output_and_exit_codes() {
    let Some(docker) = engine().await else { return };
    let slot = Slot::start(&docker, opts("exit-codes")).await;

    let ok = slot.run(&["echo", "hi"]).await;
    assert_eq!(ok.status, ExitStatus::Code(0));
    assert_eq!(ok.output.text, "hi\n");
    assert!(!ok.terminated);

    let failed = slot
        .run(&["sh", "-c", "echo out; echo oops >&2; exit 3"])
        .await;
    assert_eq!(failed.status, ExitStatus::Code(3));
    assert!(failed.output.text.contains("out\n") && failed.output.text.contains("oops\n"));

    // argv[0] is a program, never a shell builtin: there is no `exit` program.
    let builtin = slot.run(&["exit", "4"]).await;
    assert_eq!(
        builtin.status,
        ExitStatus::Code(127),
        "{}",
        builtin.output.text
    );
    assert!(
        builtin.output.text.contains("not found"),
        "{}",
        builtin.output.text
    );

    // A test killed by a signal reads as that signal.
    let segv = slot.run(&["sh", "-c", "kill -SEGV $$"]).await;
    assert_eq!(segv.status, ExitStatus::Signal(11));

    // Arguments reach the program verbatim: nothing is interpolated.
    let verbatim = slot
        .run(&["echo", "$HOME; `id` $(id)", "a  b", "'q\""])
        .await;
    assert_eq!(verbatim.output.text, "$HOME; `id` $(id) a  b 'q\"\n");
    slot.remove().await;
}

#[tokio::test]
#[cfg_attr(
    not(shoal_has_docker),
    ignore = "needs a Docker engine and the test images: set SHOAL_TEST_DOCKER=1 (scripts/test does, after scripts/test-images.sh)"
)]
async fn env_and_cwd_are_mapped_into_the_container() {
    let Some(docker) = engine().await else { return };
    let slot = Slot::start(&docker, opts("env-cwd")).await;
    std::fs::create_dir(slot.root().join("sub dir")).unwrap();
    let mut spec = slot.spec(&[
        "sh",
        "-c",
        r#"pwd; echo "$FOO"; echo "$DATA"; echo "$PLAIN""#,
    ]);
    spec.cwd = slot.root().join("sub dir");
    spec.env.insert("FOO".into(), "bar baz".into());
    spec.env.insert(
        "DATA".into(),
        format!("{}:/usr/lib", slot.root().join("data").display()),
    );
    spec.env.insert("PLAIN".into(), "http://db:5432/x".into());
    let exit = slot.run_spec(&spec).await;
    assert_eq!(
        exit.output.text,
        "/workspace/sub dir\nbar baz\n/workspace/data:/usr/lib\nhttp://db:5432/x\n"
    );

    // A file written in the container appears in the host workspace.
    let mut spec = slot.spec(&["sh", "-c", "echo written > out.txt"]);
    spec.cwd = slot.root().join("sub dir");
    assert!(slot.run_spec(&spec).await.status.success());
    assert_eq!(
        std::fs::read_to_string(slot.root().join("sub dir/out.txt")).unwrap(),
        "written\n"
    );

    let mut outside = slot.spec(&["true"]);
    outside.cwd = std::env::temp_dir();
    match slot.executor.spawn(&outside).await.map(|_| ()) {
        Err(ExecError::Spawn { error, .. }) => {
            assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput, "{error}")
        }
        other => panic!("a cwd outside the workspace must not run: {other:?}"),
    }
    let mut missing = slot.spec(&["true"]);
    missing.cwd = slot.root().join("nope");
    assert!(matches!(
        slot.executor.spawn(&missing).await.map(|_| ()),
        Err(ExecError::MissingCwd { .. })
    ));
    assert!(matches!(
        slot.executor.spawn(&slot.spec(&[])).await.map(|_| ()),
        Err(ExecError::EmptyArgv)
    ));
    slot.remove().await;
}

#[tokio::test]
#[cfg_attr(
    not(shoal_has_docker),
    ignore = "needs a Docker engine and the test images: set SHOAL_TEST_DOCKER=1 (scripts/test does, after scripts/test-images.sh)"
)]
async fn a_flood_of_output_is_capped_to_head_and_tail() {
    let Some(docker) = engine().await else { return };
    let slot = Slot::start(&docker, opts("flood")).await;
    let mut spec = slot.spec(&[
        "sh",
        "-c",
        "echo START; head -c 20000000 /dev/zero | tr '\\000' x; echo; echo END",
    ]);
    spec.output_cap = 1000;
    let exit = slot.run_spec(&spec).await;
    assert!(exit.status.success());
    let total = 6 + 20_000_000 + 1 + 4;
    assert_eq!(exit.output.truncated_bytes, total - 1000);
    assert!(
        exit.output.text.starts_with("START\nxxx"),
        "{}",
        &exit.output.text[..20]
    );
    assert!(exit.output.text.ends_with("xxx\nEND\n"));
    assert!(
        exit.output
            .text
            .contains(&format!("[... shoal dropped {} bytes", total - 1000))
    );
    slot.remove().await;
}

#[tokio::test]
#[cfg_attr(
    not(shoal_has_docker),
    ignore = "needs a Docker engine and the test images: set SHOAL_TEST_DOCKER=1 (scripts/test does, after scripts/test-images.sh)"
)]
async fn progress_lines_come_through_the_fifo_at_fd_3() {
    let Some(docker) = engine().await else { return };
    let slot = Slot::start(&docker, opts("progress")).await;
    let mut spec = slot.spec(&[
        "sh",
        "-c",
        r#"echo "fd=$SHOAL_PROGRESS_FD"; echo one >&"$SHOAL_PROGRESS_FD"; sleep 0.3; printf 'two\nthree' >&3; echo done"#,
    ]);
    spec.progress_pipe = true;
    let mut process = slot.executor.spawn(&spec).await.expect("spawn");
    let mut lines = Vec::new();
    let read_all = async {
        while let Some(line) = process.next_progress().await {
            lines.push(line);
        }
    };
    tokio::time::timeout(Duration::from_secs(20), read_all)
        .await
        .expect("progress ends when the process does");
    assert_eq!(lines, ["one", "two", "three"]);
    let exit = process.wait().await.expect("wait");
    assert_eq!(exit.output.text, "fd=3\ndone\n");

    // A process that never opens its progress pipe ends its progress too.
    let mut spec = slot.spec(&["sleep", "0.2"]);
    spec.progress_pipe = true;
    let mut process = slot.executor.spawn(&spec).await.expect("spawn");
    let next = tokio::time::timeout(Duration::from_secs(20), process.next_progress()).await;
    assert_eq!(next.expect("progress ends"), None);
    assert!(process.wait().await.expect("wait").status.success());

    // Without a pipe there is no fd 3 and no variable.
    let exit = slot
        .run(&["sh", "-c", r#"echo "[$SHOAL_PROGRESS_FD]"; echo x >&3"#])
        .await;
    // (stdout and stderr reach the engine on separate pipes, so their
    // relative order is not kept.)
    assert!(exit.output.text.contains("[]\n"), "{}", exit.output.text);
    assert!(!exit.status.success());
    slot.remove().await;
}

#[tokio::test]
#[cfg_attr(
    not(shoal_has_docker),
    ignore = "needs a Docker engine and the test images: set SHOAL_TEST_DOCKER=1 (scripts/test does, after scripts/test-images.sh)"
)]
async fn stdin_lines_reach_the_process_and_closing_ends_its_input() {
    let Some(docker) = engine().await else { return };
    let slot = Slot::start(&docker, opts("stdin")).await;
    let mut spec = slot.spec(&[
        "sh",
        "-c",
        r#"while read -r l; do echo "got $l"; done; echo eof"#,
    ]);
    spec.stdin_pipe = true;
    let mut process = slot.executor.spawn(&spec).await.expect("spawn");
    process.send_line("a b").await.expect("send");
    process.send_line("c").await.expect("send");
    let err = process.send_line("x\ny").await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    let exit = tokio::time::timeout(Duration::from_secs(20), process.wait())
        .await
        .expect("closing stdin ends the loop")
        .expect("wait");
    assert_eq!(exit.output.text, "got a b\ngot c\neof\n");

    // Without a stdin pipe, stdin is empty and send_line is refused.
    let mut process = slot
        .executor
        .spawn(&slot.spec(&["cat"]))
        .await
        .expect("spawn");
    let err = process.send_line("x").await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::NotConnected);
    let exit = tokio::time::timeout(Duration::from_secs(20), process.wait())
        .await
        .expect("cat reads end of input at once")
        .expect("wait");
    assert_eq!(exit.status, ExitStatus::Code(0));
    assert_eq!(exit.output.text, "");
    slot.remove().await;
}

/// Spawns `script` with a progress pipe and waits for its first progress line.
async fn started(slot: &Slot, script: &str) -> Box<dyn shoal_exec::RunningProcess> {
    let mut spec = slot.spec(&["sh", "-c", script]);
    spec.progress_pipe = true;
    let mut process = slot.executor.spawn(&spec).await.expect("spawn");
    let line = tokio::time::timeout(Duration::from_secs(20), process.next_progress()).await;
    assert_eq!(line.expect("started in time").as_deref(), Some("started"));
    process
}

#[tokio::test]
#[cfg_attr(
    not(shoal_has_docker),
    ignore = "needs a Docker engine and the test images: set SHOAL_TEST_DOCKER=1 (scripts/test does, after scripts/test-images.sh)"
)]
async fn terminate_stops_the_process_and_its_children_within_grace() {
    let Some(docker) = engine().await else { return };
    let slot = Slot::start(&docker, opts("terminate")).await;

    let process = started(&slot, "sleep 1000 & echo started >&3; wait").await;
    assert!(process.pid().is_some());
    let begun = Instant::now();
    process.terminator().terminate(Duration::from_secs(30));
    let exit = process.wait().await.expect("wait");
    let took = begun.elapsed();
    assert!(exit.terminated);
    assert_eq!(exit.status, ExitStatus::Signal(15));
    assert!(took < Duration::from_secs(5), "TERM took {took:?}");
    // The wrapper's shell does not add its own "Terminated" report.
    assert_eq!(exit.output.text, "");
    assert_eq!(
        slot.count_processes("sleep 1000").await,
        0,
        "the child was killed too"
    );

    // A group that ignores TERM is killed after the grace period.
    let process = started(&slot, "trap '' TERM; sleep 1001 & echo started >&3; wait").await;
    let begun = Instant::now();
    process.terminator().terminate(Duration::from_millis(700));
    let exit = process.wait().await.expect("wait");
    let took = begun.elapsed();
    assert!(exit.terminated);
    assert_eq!(exit.status, ExitStatus::Signal(9));
    assert!(
        took >= Duration::from_millis(700) && took < Duration::from_secs(6),
        "KILL after grace took {took:?}"
    );
    assert_eq!(slot.count_processes("sleep 1001").await, 0);

    // kill() is immediate.
    let mut process = started(&slot, "sleep 1002 & echo started >&3; wait").await;
    process.kill();
    let exit = process.wait().await.expect("wait");
    assert!(exit.terminated);
    assert_eq!(exit.status, ExitStatus::Signal(9));
    assert_eq!(slot.count_processes("sleep 1002").await, 0);

    // Terminating a finished process does nothing and is not reported.
    let process = slot
        .executor
        .spawn(&slot.spec(&["true"]))
        .await
        .expect("spawn");
    let terminator = process.terminator();
    let exit = process.wait().await.expect("wait");
    terminator.terminate(Duration::ZERO);
    assert!(!exit.terminated);
    slot.remove().await;
}

#[tokio::test]
#[cfg_attr(
    not(shoal_has_docker),
    ignore = "needs a Docker engine and the test images: set SHOAL_TEST_DOCKER=1 (scripts/test does, after scripts/test-images.sh)"
)]
async fn background_children_die_with_the_process_and_dropping_kills_the_group() {
    let Some(docker) = engine().await else { return };
    let slot = Slot::start(&docker, opts("leftovers")).await;
    let begun = Instant::now();
    let exit = slot.run(&["sh", "-c", "sleep 1003 & echo bg"]).await;
    assert_eq!(exit.output.text, "bg\n");
    // The engine would hold the stream for 2 s for a child keeping stdout open.
    assert!(
        begun.elapsed() < Duration::from_millis(1900),
        "{:?}",
        begun.elapsed()
    );
    assert_eq!(slot.count_processes("sleep 1003").await, 0);

    let process = started(&slot, "sleep 1004 & echo started >&3; wait").await;
    drop(process);
    let deadline = Instant::now() + Duration::from_secs(10);
    while slot.count_processes("sleep 1004").await > 0 {
        assert!(
            Instant::now() < deadline,
            "a dropped process's group must be killed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    slot.remove().await;
}

#[tokio::test]
#[cfg_attr(
    not(shoal_has_docker),
    ignore = "needs a Docker engine and the test images: set SHOAL_TEST_DOCKER=1 (scripts/test does, after scripts/test-images.sh)"
)]
async fn a_process_killed_at_the_memory_limit_is_reported_as_oom() {
    let Some(docker) = engine().await else { return };
    let mut opts = opts("oom");
    opts.memory = Some(16 << 20);
    let slot = Slot::start(&docker, opts).await;

    // A normal process first: no OOM kill.
    let fine = slot.run(&["true"]).await;
    assert!(fine.status.success() && !fine.oom_killed);
    assert_eq!(slot.container.oom_kills(), 0);

    // A shell string doubling until the 16 MiB limit.
    let exit = slot
        .run(&["sh", "-c", "x=0123456789abcdef; while :; do x=$x$x; done"])
        .await;
    assert_eq!(exit.status, ExitStatus::Signal(9), "{}", exit.output.text);
    assert!(!exit.terminated);
    assert!(exit.oom_killed);
    assert_eq!(slot.container.oom_kills(), 1);
    assert!(slot.container.oom_killed());

    // The slot's container survives and runs the next batch.
    assert!(slot.container.state().await.expect("state").running);
    let next = slot.run(&["echo", "still here"]).await;
    assert_eq!(next.output.text, "still here\n");
    assert!(!next.oom_killed);
    assert_eq!(slot.container.oom_kills(), 1);

    // A kill that is not the OOM killer's is not counted.
    let killed = slot.run(&["sh", "-c", "kill -KILL $$"]).await;
    assert_eq!(killed.status, ExitStatus::Signal(9));
    assert!(!killed.oom_killed);
    assert_eq!(slot.container.oom_kills(), 1);
    slot.remove().await;
}

#[tokio::test]
#[cfg_attr(
    not(shoal_has_docker),
    ignore = "needs a Docker engine and the test images: set SHOAL_TEST_DOCKER=1 (scripts/test does, after scripts/test-images.sh)"
)]
async fn one_container_serves_every_process_of_its_slot() {
    let Some(docker) = engine().await else { return };
    let slot = Slot::start(&docker, opts("reuse")).await;
    let first = slot
        .run(&["sh", "-c", "echo kept > /tmp/marker; hostname"])
        .await;
    let second = slot.run(&["sh", "-c", "cat /tmp/marker; hostname"]).await;
    assert!(first.status.success() && second.status.success());
    let host = first.output.text.trim();
    assert_eq!(second.output.text, format!("kept\n{host}\n"));
    assert!(
        slot.container.id().starts_with(host),
        "{host} vs {}",
        slot.container.id()
    );

    // Concurrent processes in one container keep their output apart.
    let mut tasks = Vec::new();
    for i in 0..8 {
        let executor = slot.executor.clone();
        let spec = slot.spec(&["sh", "-c", &format!("for n in 1 2 3; do echo {i}-$n; done")]);
        tasks.push(tokio::spawn(async move {
            executor
                .spawn(&spec)
                .await
                .expect("spawn")
                .wait()
                .await
                .expect("wait")
        }));
    }
    for (i, task) in tasks.into_iter().enumerate() {
        let exit = task.await.expect("task");
        assert_eq!(exit.output.text, format!("{i}-1\n{i}-2\n{i}-3\n"));
    }
    // Scratch directories do not pile up.
    let left = std::fs::read_dir(slot.container.scratch()).unwrap().count();
    assert_eq!(left, 0, "per-process scratch directories are removed");
    slot.remove().await;
}

#[tokio::test]
#[cfg_attr(
    not(shoal_has_docker),
    ignore = "needs a Docker engine and the test images: set SHOAL_TEST_DOCKER=1 (scripts/test does, after scripts/test-images.sh)"
)]
async fn processes_run_as_the_containers_user() {
    let Some(docker) = engine().await else { return };
    let mut opts = opts("user");
    opts.user = Some("1000:1000".to_owned());
    let slot = Slot::start(&docker, opts).await;
    let process = started(&slot, "id -u; sleep 1005 & echo started >&3; wait").await;
    process.terminator().terminate(Duration::from_secs(30));
    let exit = process.wait().await.expect("wait");
    assert_eq!(exit.output.text, "1000\n");
    assert_eq!(exit.status, ExitStatus::Signal(15));
    assert_eq!(slot.count_processes("sleep 1005").await, 0);
    let status = slot.run(&["sh", "-c", "exit 7"]).await.status;
    assert_eq!(
        status,
        ExitStatus::Code(7),
        "the status is recorded as any user"
    );
    slot.remove().await;
}

#[tokio::test]
#[cfg_attr(
    not(shoal_has_docker),
    ignore = "needs a Docker engine and the test images: set SHOAL_TEST_DOCKER=1 (scripts/test does, after scripts/test-images.sh)"
)]
async fn an_image_without_a_shell_fails_with_the_engines_message() {
    let Some(docker) = engine().await else { return };
    let slot = Slot::start(&docker, opts("no-shell")).await;
    assert!(slot.run(&["rm", "/bin/sh"]).await.status.success());
    let begun = Instant::now();
    let process = slot.executor.spawn(&slot.spec(&["true"])).await;
    let exit = tokio::time::timeout(Duration::from_secs(20), process.expect("spawn").wait())
        .await
        .expect("no hang")
        .expect("wait");
    assert!(
        begun.elapsed() < Duration::from_secs(1),
        "{:?}",
        begun.elapsed()
    );
    assert_eq!(exit.status, ExitStatus::Code(126), "{}", exit.output.text);
    assert!(exit.output.text.contains("/bin/sh"), "{}", exit.output.text);
    slot.remove().await;
}
