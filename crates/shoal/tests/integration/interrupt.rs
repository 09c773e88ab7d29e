//! Ctrl-C: shoal stops promptly with exit 130, kills what is running and
//! still writes complete reports.

use crate::events::Events;
use crate::junit::Junit;
use crate::support::{Project, listed_names};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

/// Whether the (possibly half-written) event log shows `test` started.
fn has_started(json: &Path, test: &str) -> bool {
    let Ok(text) = std::fs::read_to_string(json) else {
        return false;
    };
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .any(|e| e["type"] == "attempt_started" && e["test"] == test)
}

#[test]
fn ctrl_c_stops_the_run_and_keeps_the_reports() {
    let project = Project::pytest();
    let list = project.shoal(["list", "test_chaos_hang"]).run();
    list.assert_code(0);
    let hang = listed_names(&list, "pytest").pop().expect("the hang test");
    let (junit, json) = (project.out("junit.xml"), project.out("events.jsonl"));
    let mut shoal = project
        .shoal(["run", "-j", "2", "--timeout", "10m", "--junit"])
        .arg(&junit)
        .arg("--json")
        .arg(&json)
        .args([hang.as_str(), "tests/test_outcomes.py"])
        .env("SHOAL_FIXTURE_CHAOS", "1")
        .spawn();

    let deadline = Instant::now() + Duration::from_secs(90);
    while !has_started(&json, &hang) {
        if let Some(status) = shoal.wait_for(Duration::ZERO) {
            panic!(
                "shoal exited ({status}) before the hang started:\n{}",
                shoal.stderr()
            );
        }
        assert!(
            Instant::now() < deadline,
            "the hang test never started:\n{}",
            std::fs::read_to_string(&json).unwrap_or_default()
        );
        thread::sleep(Duration::from_millis(50));
    }
    assert!(!project.live_processes().is_empty(), "the hang is running");

    let interrupted = Instant::now();
    kill(Pid::from_raw(shoal.pid()), Signal::SIGINT).expect("send SIGINT");
    let Some(status) = shoal.wait_for(Duration::from_secs(15)) else {
        shoal.kill();
        panic!("shoal ignored SIGINT for 15 s:\n{}", shoal.stderr());
    };
    let took = interrupted.elapsed();
    assert_eq!(status.code(), Some(130), "{status}:\n{}", shoal.stderr());
    assert!(took < Duration::from_secs(10), "took {took:?} to stop");
    project.assert_no_leftover_processes();

    let events = Events::read(&json);
    let finished = events.run_finished();
    assert_eq!(finished["interrupted"], true);
    assert_eq!(finished["exit_code"], 130);
    let not_run = finished["not_run"].as_u64().expect("not_run");
    assert!(not_run >= 1, "the hang never finished: {finished}");
    assert!(
        events.finals().iter().all(|a| a.test != hang),
        "the interrupted test has no final result"
    );
    let planned = events.run_started()["planned"].as_u64().expect("planned");
    assert_eq!(
        events.finals().len() as u64 + not_run,
        planned,
        "every planned test either finished or is counted as not run"
    );

    let report = Junit::read(&junit);
    report.assert_self_consistent();
    assert_eq!(report.cases.len(), events.finals().len());
    assert!(report.cases.iter().all(|c| c.name != hang));
}
