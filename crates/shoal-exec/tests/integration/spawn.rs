//! Starting processes: argv, environment, working directory, exit statuses, errors.

use super::{run, spec, start};
use nix::sys::signal::Signal;
use shoal_exec::{ExecError, Executor, ExitStatus, ProcessExecutor};

#[tokio::test]
async fn exit_code_is_reported() {
    let exit = run(&spec(&["sh", "-c", "exit 7"])).await;
    assert_eq!(exit.status, ExitStatus::Code(7));
    assert!(!exit.status.success());
    assert!(!exit.terminated);
    assert!(run(&spec(&["true"])).await.status.success());
}

#[tokio::test]
async fn death_by_signal_is_reported() {
    let exit = run(&spec(&["sh", "-c", "kill -SEGV $$"])).await;
    assert_eq!(exit.status, ExitStatus::Signal(Signal::SIGSEGV as i32));
    assert!(!exit.terminated);
}

#[tokio::test]
async fn argv_is_passed_literally_without_a_shell() {
    let dir = tempfile::tempdir().expect("tempdir");
    let subst = dir.path().join("subst");
    let backtick = dir.path().join("backtick");
    let args = [
        "two words".to_string(),
        r#"it's "quoted""#.to_string(),
        format!("$(touch {})", subst.display()),
        format!("`touch {}`", backtick.display()),
        "*".to_string(),
        "$HOME;|&>".to_string(),
        String::new(),
    ];
    let mut argv = vec!["printf", "%s\\n"];
    argv.extend(args.iter().map(String::as_str));
    let exit = run(&spec(&argv)).await;
    assert!(exit.status.success());
    assert_eq!(exit.output.text, args.map(|a| a + "\n").concat());
    assert!(!subst.exists(), "$(...) was executed");
    assert!(!backtick.exists(), "`...` was executed");
}

#[tokio::test]
async fn env_is_added_to_the_inherited_one_and_cwd_is_set() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut spec = spec(&[
        "sh",
        "-c",
        r#"printf '%s\n' "$SHOAL_TEST_VALUE" "$HOME" "${PATH:+inherited}"; pwd -P"#,
    ]);
    spec.cwd = dir.path().to_path_buf();
    spec.env.insert("SHOAL_TEST_VALUE".into(), "a b 'c'".into());
    spec.env.insert("HOME".into(), "/overridden".into());
    let exit = run(&spec).await;
    let cwd = dir.path().canonicalize().expect("canonicalize");
    assert_eq!(
        exit.output.text,
        format!("a b 'c'\n/overridden\ninherited\n{}\n", cwd.display())
    );
}

#[tokio::test]
async fn stdin_is_empty() {
    let exit = run(&spec(&["sh", "-c", "wc -c"])).await;
    assert_eq!(exit.output.text.trim(), "0");
}

#[tokio::test]
async fn pid_is_known_while_running() {
    let mut process = start(&spec(&["sleep", "10"])).await;
    assert!(process.pid().is_some_and(|pid| pid > 0));
    process.kill();
    process.wait().await.expect("wait");
}

#[tokio::test]
async fn missing_program_error_names_the_program() {
    let err = ProcessExecutor
        .spawn(&spec(&["shoal-no-such-program", "arg"]))
        .await
        .map(|_| ())
        .expect_err("spawned a missing program");
    assert!(matches!(err, ExecError::Spawn { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.starts_with("failed to start `shoal-no-such-program`: No such file or directory"),
        "{message}"
    );
}

#[tokio::test]
async fn missing_cwd_error_names_the_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("gone");
    let mut spec = spec(&["true"]);
    spec.cwd = missing.clone();
    let err = ProcessExecutor
        .spawn(&spec)
        .await
        .map(|_| ())
        .expect_err("spawned in a missing dir");
    assert_eq!(
        err.to_string(),
        format!("working directory `{}` does not exist", missing.display())
    );
}

#[tokio::test]
async fn empty_argv_is_an_error() {
    let err = ProcessExecutor
        .spawn(&spec(&[]))
        .await
        .map(|_| ())
        .expect_err("spawned nothing");
    assert!(matches!(err, ExecError::EmptyArgv), "{err:?}");
}
