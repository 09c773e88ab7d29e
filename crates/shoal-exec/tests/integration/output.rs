//! Output capture: both streams in one buffer, capped, lossily decoded.

use super::{run, spec};
use std::time::{Duration, Instant};

#[tokio::test]
async fn stdout_and_stderr_are_merged_in_arrival_order() {
    let exit = run(&spec(&[
        "sh",
        "-c",
        "echo one; sleep 0.3; echo two >&2; sleep 0.3; echo three",
    ]))
    .await;
    assert_eq!(exit.output.text, "one\ntwo\nthree\n");
    assert_eq!(exit.output.truncated_bytes, 0);
}

#[tokio::test]
async fn huge_output_is_capped_to_head_and_tail_without_blocking() {
    const CAP: u64 = 64 * 1024;
    const HALF: usize = 50_000_000;
    let script = format!("head -c {HALF} /dev/zero; head -c {HALF} /dev/zero >&2; echo END >&2");
    let mut spec = spec(&["sh", "-c", &script]);
    spec.output_cap = CAP;
    let started = Instant::now();
    let exit = run(&spec).await;
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "took {:?}",
        started.elapsed()
    );
    assert!(exit.status.success());

    let total = 2 * HALF as u64 + 4;
    assert_eq!(exit.output.truncated_bytes, total - CAP);
    let marker = format!(
        "\n[... shoal dropped {} bytes of output ...]\n",
        total - CAP
    );
    let (head, tail) = exit.output.text.split_once(&marker).expect("marker");
    assert_eq!(head, "\0".repeat(CAP as usize / 2));
    assert_eq!(tail.len(), CAP as usize / 2);
    assert!(tail.ends_with("\0END\n"), "tail is the end of the output");
}

#[tokio::test]
async fn non_utf8_output_is_decoded_lossily() {
    let exit = run(&spec(&["printf", "ok \\377\\376 end\\n"])).await;
    assert!(exit.status.success());
    assert_eq!(exit.output.text, "ok \u{fffd}\u{fffd} end\n");
}
