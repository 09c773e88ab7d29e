//! The fixtures' chaos tests (`SHOAL_FIXTURE_CHAOS=1`): a hang is a
//! `timeout`, a dying runner a `crash`, each pinned on the test that caused
//! it while every other test keeps its normal result; a flood of output is
//! capped, invalid UTF-8 survives, and nothing outlives the run.

use crate::cargo::test_path;
use crate::events::Events;
use crate::junit::{Junit, Status};
use crate::reference::{cargo_truth, pytest_truth};
use crate::support::{DEFAULT_OUTPUT_CAP, Project, listed_names};
use std::collections::BTreeMap;
use std::time::Duration;

/// The chaos tests hang for an hour; a run that waited for them would blow
/// far past this.
const FAR_LESS_THAN_THE_HANG: Duration = Duration::from_secs(120);

/// Room for the note the output cap inserts where it cut.
const CAP_MARKER_ROOM: usize = 4096;

/// The outcome of each attempt of a test that broke its runner, by test.
fn broken_runners(events: &Events) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for a in events.attempts() {
        if a.outcome == "timeout" || a.outcome == "crash" {
            out.entry(a.test.clone()).or_default().push(a.outcome);
        }
    }
    out
}

#[test]
fn pytest_hang_and_crashes_are_attributed_and_contained() {
    let project = Project::pytest();
    let list = project.shoal(["list"]).run();
    list.assert_code(0);
    let all = listed_names(&list, "pytest");
    let id = |suffix: &str| -> String {
        all.iter()
            .find(|n| n.ends_with(suffix))
            .unwrap_or_else(|| panic!("no test ends with {suffix:?}"))
            .clone()
    };
    let (hang, exit, segfault, non_utf8) = (
        id("::test_chaos_hang"),
        id("::test_chaos_exit"),
        id("::test_chaos_segfault"),
        id("::test_chaos_non_utf8"),
    );
    // Every test but the 100 MB one, which can take longer than this short
    // timeout on a loaded machine: it has its own test below. Full ids as
    // patterns select exactly these.
    let big = id("::test_chaos_big_output");
    let selected: Vec<String> = all.iter().filter(|n| **n != big).cloned().collect();

    let (junit, json) = (project.out("junit.xml"), project.out("events.jsonl"));
    let run = project
        .shoal(["run", "-j", "2", "--timeout", "3s", "--junit"])
        .arg(&junit)
        .arg("--json")
        .arg(&json)
        .args(&selected)
        .env("SHOAL_FIXTURE_CHAOS", "1")
        .run();
    run.assert_code(1);
    assert!(
        run.elapsed < FAR_LESS_THAN_THE_HANG,
        "the run took {:?}",
        run.elapsed
    );
    project.assert_no_leftover_processes();

    let events = Events::read(&json);
    events.assert_one_final_each("pytest", &selected);
    assert_eq!(events.final_of(&hang).outcome, "timeout");
    assert_eq!(events.final_of(&exit).outcome, "crash");
    assert_eq!(events.final_of(&segfault).outcome, "crash");
    for t in [&hang, &exit, &segfault] {
        assert_eq!(events.final_of(t).final_status.as_deref(), Some("failed"));
    }
    // Blame lands on the culprits only (no retries: one attempt each).
    assert_eq!(
        broken_runners(&events),
        BTreeMap::from([
            (hang.clone(), vec!["timeout".to_owned()]),
            (exit.clone(), vec!["crash".to_owned()]),
            (segfault.clone(), vec!["crash".to_owned()]),
        ])
    );
    let timeout = events.final_of(&hang);
    assert!(
        timeout.end - timeout.start < 60.0,
        "the hang was stopped: {timeout:?}"
    );

    // Non-UTF-8 output arrives (replaced), with the test's own failure.
    let bad = events.final_of(&non_utf8);
    assert_eq!(bad.outcome, "fail");
    assert!(
        bad.output_text.contains("bad bytes") && bad.output_text.contains('\u{FFFD}'),
        "output of {non_utf8}: {:?}",
        bad.output_text
    );

    // Every other test ends as pytest says it does without chaos.
    let truth = pytest_truth();
    for a in events.finals() {
        if [&hang, &exit, &segfault, &non_utf8].contains(&&a.test) {
            continue;
        }
        assert_eq!(
            Status::from_final(a.final_status.as_deref().expect("final")),
            truth.status_of(&a.test),
            "{a:?}"
        );
    }

    let report = Junit::read(&junit);
    report.assert_self_consistent();
    assert_eq!(report.cases.len(), selected.len());
}

#[test]
fn pytest_flood_of_output_is_capped() {
    let project = Project::pytest();
    let list = project.shoal(["list", "test_chaos_big_output"]).run();
    list.assert_code(0);
    let big = listed_names(&list, "pytest");
    assert_eq!(big.len(), 1, "{big:?}");
    let big = &big[0];
    let (junit, json) = (project.out("junit.xml"), project.out("events.jsonl"));
    // A batch-mate shares the pytest process with the flood.
    let mate = "tests/test_outcomes.py::test_pass";
    let run = project
        .shoal(["run", "-j", "1", "--junit"])
        .arg(&junit)
        .arg("--json")
        .arg(&json)
        .args([big.as_str(), mate])
        .env("SHOAL_FIXTURE_CHAOS", "1")
        .run();
    run.assert_code(1);
    project.assert_no_leftover_processes();

    let events = Events::read(&json);
    let flood = events.final_of(big);
    assert_eq!(flood.outcome, "fail", "it fails after printing: {flood:?}");
    assert!(flood.truncated_bytes > 0, "nothing was cut: {flood:?}");
    assert!(
        flood.output_text.len() <= DEFAULT_OUTPUT_CAP + CAP_MARKER_ROOM,
        "kept {} bytes",
        flood.output_text.len()
    );
    assert!(
        flood.output_text.len() as u64 + flood.truncated_bytes >= 100 * 1024 * 1024,
        "kept + dropped bytes account for the 100 MiB printed"
    );
    assert_eq!(
        events.final_of(mate).final_status.as_deref(),
        Some("passed")
    );

    // The report carries the capped text, not 100 MB.
    let size = std::fs::metadata(&junit).expect("JUnit report").len();
    assert!(size < 8 * 1024 * 1024, "JUnit report is {size} bytes");
    Junit::read(&junit).assert_self_consistent();
}

#[test]
fn cargo_hang_and_crashes_are_attributed_and_contained() {
    cargo_chaos(false);
}

/// Tests of one binary sharing libtest processes (`share_processes =
/// "always"`; "auto" does so for tests history says are tiny): a hang or
/// crash is still pinned on its test, and the tests after it still run.
#[test]
fn cargo_shared_processes_keep_hangs_and_crashes_attributed() {
    cargo_chaos(true);
}

fn cargo_chaos(shared: bool) {
    let project = Project::cargo();
    if shared {
        project.write(
            "shoal.toml",
            "[suites.cargo]\nadapter = \"cargo\"\nshare_processes = \"always\"\n",
        );
    }
    let list = project.shoal(["list"]).run();
    list.assert_code(0);
    let all = listed_names(&list, "cargo");
    let chaos = |path: &str| -> String {
        // The binary of tests/chaos.rs has the id `PACKAGE::chaos`.
        all.iter()
            .find(|n| {
                n.split_once(' ')
                    .is_some_and(|(binary, p)| binary.ends_with("::chaos") && p == path)
            })
            .unwrap_or_else(|| panic!("no chaos test {path:?} in {all:?}"))
            .clone()
    };
    let (hang, abort, segfault, flood, non_utf8) = (
        chaos("hang"),
        chaos("abort"),
        chaos("segfault"),
        chaos("prints_100_mb"),
        chaos("prints_non_utf8"),
    );
    let (junit, json) = (project.out("junit.xml"), project.out("events.jsonl"));
    let run = project
        .shoal(["run", "-j", "2", "--timeout", "5s", "--junit"])
        .arg(&junit)
        .arg("--json")
        .arg(&json)
        .env("SHOAL_FIXTURE_CHAOS", "1")
        .run();
    run.assert_code(1);
    assert!(
        run.elapsed < FAR_LESS_THAN_THE_HANG,
        "the run took {:?}",
        run.elapsed
    );
    project.assert_no_leftover_processes();

    let events = Events::read(&json);
    events.assert_one_final_each("cargo", &all);
    assert_eq!(
        shared_starts(&events) > 0,
        shared,
        "tests of one binary share processes only when configured to"
    );
    assert_eq!(
        broken_runners(&events),
        BTreeMap::from([
            (hang.clone(), vec!["timeout".to_owned()]),
            (abort.clone(), vec!["crash".to_owned()]),
            (segfault.clone(), vec!["crash".to_owned()]),
        ])
    );
    for t in [&hang, &abort, &segfault] {
        assert_eq!(events.final_of(t).final_status.as_deref(), Some("failed"));
    }

    let flooded = events.final_of(&flood);
    assert_eq!(flooded.outcome, "pass", "{flooded:?}");
    assert!(flooded.truncated_bytes > 0, "nothing was cut: {flooded:?}");
    assert!(
        flooded.output_text.len() <= DEFAULT_OUTPUT_CAP + CAP_MARKER_ROOM,
        "kept {} bytes",
        flooded.output_text.len()
    );
    assert!(
        flooded.output_text.len() as u64 + flooded.truncated_bytes >= 100 * 1024 * 1024,
        "kept + dropped bytes account for the 100 MiB printed"
    );
    let bad = events.final_of(&non_utf8);
    assert_eq!(bad.outcome, "pass");
    assert!(
        bad.output_text.contains("not utf-8") && bad.output_text.contains('\u{FFFD}'),
        "output of {non_utf8}: {:?}",
        bad.output_text
    );

    // The rest: what `cargo test` says without chaos.
    let chaos_paths: Vec<&str> = [&hang, &abort, &segfault, &flood, &non_utf8]
        .into_iter()
        .map(|n| test_path(n))
        .collect();
    let mut ours: Vec<(String, Status)> = events
        .finals()
        .into_iter()
        .filter(|a| !chaos_paths.contains(&test_path(&a.test)))
        .map(|a| {
            let status = Status::from_final(a.final_status.as_deref().expect("final"));
            (test_path(&a.test).to_owned(), status)
        })
        .collect();
    ours.sort();
    let want: Vec<(String, Status)> = cargo_truth()
        .tests
        .iter()
        .filter(|(path, _)| !chaos_paths.contains(&path.as_str()))
        .cloned()
        .collect();
    assert_eq!(ours, want);

    let report = Junit::read(&junit);
    report.assert_self_consistent();
    assert_eq!(report.cases.len(), all.len());
}

/// First attempts that started at the same instant as another first attempt
/// of the same binary on the same slot: tests that shared one process.
fn shared_starts(events: &Events) -> usize {
    let mut seen = std::collections::HashMap::new();
    for a in events.attempts().into_iter().filter(|a| a.attempt == 1) {
        let binary = a.test.split_once(' ').map_or("", |(b, _)| b).to_owned();
        *seen
            .entry((binary, a.slot, a.start.to_bits()))
            .or_insert(0usize) += 1;
    }
    seen.values().filter(|n| **n > 1).map(|n| n - 1).sum()
}
