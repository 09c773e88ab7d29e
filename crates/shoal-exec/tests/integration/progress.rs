//! The progress pipe at fd 3.

use super::{spec, start, with_progress};

#[tokio::test]
async fn child_writes_progress_lines_on_fd_3_until_eof() {
    let mut process = start(&with_progress(&[
        "sh",
        "-c",
        "echo \"start $SHOAL_PROGRESS_FD\" >&3; echo out; printf 'done\\nno newline' >&3",
    ]))
    .await;
    assert_eq!(process.next_progress().await.as_deref(), Some("start 3"));
    assert_eq!(process.next_progress().await.as_deref(), Some("done"));
    assert_eq!(process.next_progress().await.as_deref(), Some("no newline"));
    assert_eq!(process.next_progress().await, None);
    assert_eq!(process.next_progress().await, None);
    let exit = process.wait().await.expect("wait");
    assert!(exit.status.success());
    assert_eq!(
        exit.output.text, "out\n",
        "progress lines stay out of the output"
    );
}

#[tokio::test]
async fn progress_fd_is_found_through_the_environment() {
    let script = "import os\n\
        with os.fdopen(int(os.environ['SHOAL_PROGRESS_FD']), 'w') as f:\n    \
        print('hello', file=f)";
    let mut process = start(&with_progress(&["python3", "-c", script])).await;
    assert_eq!(process.next_progress().await.as_deref(), Some("hello"));
    assert_eq!(process.next_progress().await, None);
    assert!(process.wait().await.expect("wait").status.success());
}

#[tokio::test]
async fn without_a_progress_pipe_there_is_no_fd_3() {
    let mut process = start(&spec(&["sh", "-c", "echo x >&3"])).await;
    assert_eq!(process.next_progress().await, None);
    let exit = process.wait().await.expect("wait");
    assert!(
        !exit.status.success(),
        "fd 3 was open: {}",
        exit.output.text
    );
}
