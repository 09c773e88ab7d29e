//! The stdin pipe: lines sent to a long-lived child, and end of input.

use super::{spec, start, with_progress};
use shoal_exec::ProcessSpec;
use std::io::ErrorKind;
use std::time::Duration;

/// A child that answers every stdin line on its progress pipe until EOF.
fn echo_server() -> ProcessSpec {
    ProcessSpec {
        stdin_pipe: true,
        ..with_progress(&[
            "sh",
            "-c",
            "while read -r l; do echo \"got $l\" >&3; done; echo eof >&3",
        ])
    }
}

#[tokio::test]
async fn lines_sent_on_stdin_reach_a_live_child_one_at_a_time() {
    let mut process = start(&echo_server()).await;
    let pid = process.pid();
    for line in ["first", "second one", "{\"run\": [\"a b\"]}"] {
        process.send_line(line).await.expect("send");
        let answer = tokio::time::timeout(Duration::from_secs(5), process.next_progress())
            .await
            .expect("answer in time");
        assert_eq!(answer, Some(format!("got {line}")));
        assert_eq!(process.pid(), pid, "the same process answers");
    }
    process.close_stdin();
    process.close_stdin();
    assert_eq!(process.next_progress().await.as_deref(), Some("eof"));
    assert_eq!(process.next_progress().await, None);
    let error = process
        .send_line("late")
        .await
        .expect_err("stdin is closed");
    assert_eq!(error.kind(), ErrorKind::NotConnected);
    let exit = process.wait().await.expect("wait");
    assert!(exit.status.success(), "{}", exit.status);
    assert!(!exit.terminated);
}

#[tokio::test]
async fn wait_closes_stdin_so_a_reading_child_exits() {
    let mut process = start(&echo_server()).await;
    process.send_line("x").await.expect("send");
    let exit = tokio::time::timeout(Duration::from_secs(5), process.wait())
        .await
        .expect("the child saw end of input")
        .expect("wait");
    assert!(exit.status.success(), "{}", exit.status);
}

#[tokio::test]
async fn sending_to_a_child_that_closed_stdin_is_a_broken_pipe() {
    let mut process = start(&ProcessSpec {
        stdin_pipe: true,
        ..with_progress(&["sh", "-c", "exec 0<&-; echo closed >&3; sleep 5"])
    })
    .await;
    assert_eq!(process.next_progress().await.as_deref(), Some("closed"));
    let error = process.send_line("x").await.expect_err("nobody reads");
    assert_eq!(error.kind(), ErrorKind::BrokenPipe);
    process.kill();
    assert!(process.wait().await.expect("wait").terminated);
}

#[tokio::test]
async fn without_a_stdin_pipe_stdin_is_empty_and_send_fails() {
    let mut process = start(&spec(&["sh", "-c", "cat; echo end"])).await;
    let error = process.send_line("x").await.expect_err("no pipe");
    assert_eq!(error.kind(), ErrorKind::NotConnected);
    let exit = process.wait().await.expect("wait");
    assert_eq!(exit.output.text, "end\n");
}

#[tokio::test]
async fn a_line_with_a_newline_is_refused() {
    let mut process = start(&echo_server()).await;
    let error = process.send_line("a\nb").await.expect_err("two lines");
    assert_eq!(error.kind(), ErrorKind::InvalidInput);
    process.send_line("ok").await.expect("send");
    assert_eq!(process.next_progress().await.as_deref(), Some("got ok"));
}
