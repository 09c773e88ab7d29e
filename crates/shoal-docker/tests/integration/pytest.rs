//! shoal's pytest plugin, unchanged, reports through the docker executor's
//! progress FIFO, in a one-shot run and in serve mode (batches on stdin).

use crate::support::{PYTHON_IMAGE, Slot, engine, opts};
use serde_json::Value;
use shoal_adapters::pytest::PytestAdapter;
use shoal_exec::{Executor, ExitStatus, RunningProcess};
use std::time::Duration;

const TESTS: &str = "\
import os

def test_passes():
    assert os.environ['SHOAL_SLOT'] == '0'

def test_fails():
    assert 1 + 1 == 3
";

/// A python slot whose workspace holds `test_sample.py` and the plugin
/// (under `.shoal/support`), and the PYTHONPATH naming the plugin's host dir.
async fn python_slot(docker: &crate::support::Docker, name: &str) -> (Slot, String) {
    let mut opts = opts(name);
    opts.image = PYTHON_IMAGE.to_owned();
    opts.env.insert("SHOAL_SLOT".into(), "0".into());
    let slot = Slot::start(docker, opts).await;
    std::fs::write(slot.root().join("test_sample.py"), TESTS).unwrap();
    let plugin_dir = PytestAdapter::install_plugin(&slot.root().join(".shoal/support")).unwrap();
    (slot, plugin_dir.display().to_string())
}

async fn next_message(process: &mut Box<dyn RunningProcess>) -> Option<Value> {
    let line = tokio::time::timeout(Duration::from_secs(60), process.next_progress())
        .await
        .expect("a progress line in time")?;
    Some(serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}")))
}

fn finish_outcomes(messages: &[Value]) -> Vec<(String, String)> {
    messages
        .iter()
        .filter(|m| m["event"] == "finish")
        .map(|m| {
            let id = m["nodeid"].as_str().unwrap_or_default().to_owned();
            (id, m["outcome"].as_str().unwrap_or_default().to_owned())
        })
        .collect()
}

#[tokio::test]
#[cfg_attr(
    not(shoal_has_docker),
    ignore = "needs a Docker engine and the test images: set SHOAL_TEST_DOCKER=1 (scripts/test does, after scripts/test-images.sh)"
)]
async fn the_pytest_plugin_reports_through_the_fifo() {
    let Some(docker) = engine().await else { return };
    let (slot, plugin_dir) = python_slot(&docker, "pytest").await;
    let mut spec = slot.spec(&[
        "python3",
        "-m",
        "pytest",
        "-p",
        "shoal_pytest_plugin",
        "-q",
        "-p",
        "no:cacheprovider",
        "test_sample.py",
    ]);
    spec.env.insert("PYTHONPATH".into(), plugin_dir);
    spec.progress_pipe = true;
    let mut process = slot.executor.spawn(&spec).await.expect("spawn");
    let mut messages = Vec::new();
    while let Some(message) = next_message(&mut process).await {
        messages.push(message);
    }
    let exit = process.wait().await.expect("wait");
    assert_eq!(exit.status, ExitStatus::Code(1), "{}", exit.output.text);
    assert_eq!(
        finish_outcomes(&messages),
        [
            ("test_sample.py::test_passes".to_owned(), "pass".to_owned()),
            ("test_sample.py::test_fails".to_owned(), "fail".to_owned()),
        ]
    );
    slot.remove().await;
}

#[tokio::test]
#[cfg_attr(
    not(shoal_has_docker),
    ignore = "needs a Docker engine and the test images: set SHOAL_TEST_DOCKER=1 (scripts/test does, after scripts/test-images.sh)"
)]
async fn a_serving_pytest_runs_batches_sent_on_stdin() {
    let Some(docker) = engine().await else { return };
    let (slot, plugin_dir) = python_slot(&docker, "pytest-serve").await;
    let mut spec = slot.spec(&[
        "python3",
        "-m",
        "pytest",
        "-p",
        "shoal_pytest_plugin",
        "-p",
        "no:cacheprovider",
        "--shoal-serve",
        "test_sample.py",
    ]);
    spec.env.insert("PYTHONPATH".into(), plugin_dir);
    spec.progress_pipe = true;
    spec.stdin_pipe = true;
    let mut process = slot.executor.spawn(&spec).await.expect("spawn");
    let ready = next_message(&mut process).await.expect("ready");
    assert_eq!(ready["event"], "ready", "{ready}");
    assert_eq!(ready["count"], 2);

    for (batch, expected) in [
        ("test_sample.py::test_fails", "fail"),
        ("test_sample.py::test_passes", "pass"),
    ] {
        let request = serde_json::json!({ "run": [batch] }).to_string();
        process.send_line(&request).await.expect("send a batch");
        let mut messages = Vec::new();
        loop {
            let message = next_message(&mut process).await.expect("batch_done");
            if message["event"] == "batch_done" {
                break;
            }
            messages.push(message);
        }
        assert_eq!(
            finish_outcomes(&messages),
            [(batch.to_owned(), expected.to_owned())]
        );
    }
    let pid = process.pid();
    assert!(pid.is_some());
    // End of input ends the session.
    let exit = tokio::time::timeout(Duration::from_secs(60), process.wait())
        .await
        .expect("pytest ends at end of input")
        .expect("wait");
    assert_eq!(exit.status, ExitStatus::Code(1), "{}", exit.output.text);
    slot.remove().await;
}
