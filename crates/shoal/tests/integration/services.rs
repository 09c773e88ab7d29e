//! Per-slot services (issue 5) end to end: the real `shoal` binary on copies
//! of `fixtures/services-project`, whose tests talk to two key-value servers
//! (`alpha`, `beta`) that shoal starts for every slot, from service tables
//! or as a compose project per slot. Checked by what the tests saw (their
//! `seen.txt`), by the output of failures, and by what the engine still
//! holds after the run.

use crate::containers::{containers_of, docker_ready};
use crate::events::Events;
use crate::support::{Output, Project};
use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const FIXTURE: &str = "services-project";

/// The fixture's tests: one sync test and six isolation tests.
const FIXTURE_TESTS: usize = 7;

/// A name no other test (or concurrent test binary) uses.
fn unique(what: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .subsec_nanos();
    format!("{what}-{}-{nanos}", std::process::id())
}

/// `config` with the first `old` after service `service`'s table header
/// replaced by `new`.
fn edit_service(config: &str, service: &str, old: &str, new: &str) -> String {
    let header = format!("[suites.sync.services.{service}]");
    let table = config
        .find(&header)
        .unwrap_or_else(|| panic!("the fixture's shoal.toml has no {header}"));
    let at = table
        + config[table..]
            .find(old)
            .unwrap_or_else(|| panic!("{header} has no {old:?}"));
    format!("{}{new}{}", &config[..at], &config[at + old.len()..])
}

/// Ids of the engine's objects of `kind` (`container`, `network`,
/// `volume`) that carry `label` (`KEY=VALUE`).
fn labeled(kind: &str, label: &str) -> Vec<String> {
    let mut cmd = Command::new("docker");
    match kind {
        "container" => cmd.args(["ps", "-aq"]),
        "network" => cmd.args(["network", "ls", "-q"]),
        "volume" => cmd.args(["volume", "ls", "-q"]),
        other => panic!("no such kind of docker object: {other}"),
    };
    let out = cmd
        .arg("--filter")
        .arg(format!("label={label}"))
        .output()
        .expect("run docker");
    assert!(
        out.status.success(),
        "docker could not list {kind}s: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Asserts no container, network or volume carries `label`.
#[track_caller]
fn assert_nothing_left(label: &str) {
    for kind in ["container", "network", "volume"] {
        let left = labeled(kind, label);
        assert!(left.is_empty(), "{kind}s with {label} remain: {left:?}");
    }
}

/// The run id of a finished run's event log.
fn run_id(events: &Events) -> String {
    events.run_finished()["run_id"]
        .as_str()
        .expect("run id")
        .to_owned()
}

/// Asserts the run had `count` tests, each finally passed.
#[track_caller]
fn assert_all_passed(events: &Events, count: usize, out: &Output) {
    let finals = events.finals();
    let failed: Vec<_> = finals
        .iter()
        .filter(|a| a.final_status.as_deref() != Some("passed"))
        .map(|a| (&a.test, &a.output_text))
        .collect();
    assert!(failed.is_empty(), "failed: {failed:#?}\n{}", out.dump());
    assert_eq!(finals.len(), count, "{}", out.dump());
}

/// Reads the fixture's `seen.txt` (`SLOT ALPHA_HOST BETA_HOST` per test)
/// and asserts what per-slot services promise: `lines` lines from 2 slots,
/// each slot always talking to one alpha and one beta, and 4 distinct
/// servers in all (no server shared by two slots, alpha never beta).
#[track_caller]
fn assert_each_slot_had_its_own_pair(project: &Project, lines: usize) {
    let text = std::fs::read_to_string(project.root().join("seen.txt")).expect("seen.txt");
    let mut by_slot: BTreeMap<&str, (BTreeSet<&str>, BTreeSet<&str>)> = BTreeMap::new();
    for line in text.lines() {
        let [slot, alpha, beta] = line.split(' ').collect::<Vec<_>>()[..] else {
            panic!("seen.txt line {line:?} is not `SLOT ALPHA BETA`");
        };
        let (alphas, betas) = by_slot.entry(slot).or_default();
        alphas.insert(alpha);
        betas.insert(beta);
    }
    assert_eq!(text.lines().count(), lines, "one line per test:\n{text}");
    assert_eq!(
        by_slot.keys().copied().collect::<Vec<_>>(),
        ["0", "1"],
        "both slots ran tests:\n{text}"
    );
    let mut servers: BTreeSet<&str> = BTreeSet::new();
    for (slot, (alphas, betas)) in &by_slot {
        assert_eq!(alphas.len(), 1, "slot {slot} saw one alpha:\n{text}");
        assert_eq!(betas.len(), 1, "slot {slot} saw one beta:\n{text}");
        servers.extend(alphas.iter().chain(betas).copied());
    }
    assert_eq!(
        servers.len(),
        4,
        "2 slots x (alpha, beta) are 4 distinct servers:\n{text}"
    );
}

#[test]
#[cfg_attr(
    not(shoal_has_docker),
    ignore = "needs a Docker engine and the test images: set SHOAL_TEST_DOCKER=1 (scripts/test does, after scripts/test-images.sh)"
)]
fn two_slots_each_get_their_own_pair_of_servers() {
    if !docker_ready() {
        return;
    }
    let project = Project::copy_of(FIXTURE);
    let json = project.out("events.jsonl");
    let out = project.shoal(["run", "-j", "2", "--json"]).arg(&json).run();
    out.assert_code(0);
    let events = Events::read(&json);
    assert_all_passed(&events, FIXTURE_TESTS, &out);
    assert_each_slot_had_its_own_pair(&project, FIXTURE_TESTS);
    let run = run_id(&events);
    assert!(
        containers_of(&run).is_empty(),
        "the run's containers remain"
    );
    assert_nothing_left(&format!("org.shoal.run={run}"));
}

#[test]
#[cfg_attr(
    not(shoal_has_docker),
    ignore = "needs a Docker engine and the test images: set SHOAL_TEST_DOCKER=1 (scripts/test does, after scripts/test-images.sh)"
)]
fn a_readiness_timeout_names_the_service_and_shows_its_log() {
    if !docker_ready() {
        return;
    }
    let project = Project::copy_of(FIXTURE);
    let config = std::fs::read_to_string(project.root().join("shoal.toml")).expect("config");
    // Nothing listens on port 9. The run's id is not known before its
    // containers start, so a suite name of its own finds what it left.
    let suite = unique("sync");
    let config = edit_service(
        &config,
        "alpha",
        "ready = { http = \"/health\", port = 8080 }",
        "ready = { tcp = 9, timeout = \"3s\" }",
    )
    .replace("[suites.sync", &format!("[suites.{suite}"));
    project.write("shoal.toml", &config);
    let started = Instant::now();
    let out = project.shoal(["run", "-j", "2"]).run();
    let took = started.elapsed();
    out.assert_code(3);
    assert!(
        took < Duration::from_secs(60),
        "gave up after {took:?}\n{}",
        out.dump()
    );
    assert!(!out.stderr.contains("panicked"), "{}", out.dump());
    assert!(
        out.stderr
            .contains("service `alpha` did not become ready: tcp port 9"),
        "{}",
        out.dump()
    );
    assert!(
        out.stderr.contains("kv alpha listening on 8080"),
        "the error shows the service's log\n{}",
        out.dump()
    );
    assert_nothing_left(&format!("org.shoal.suite={suite}"));
}

#[test]
#[cfg_attr(
    not(shoal_has_docker),
    ignore = "needs a Docker engine and the test images: set SHOAL_TEST_DOCKER=1 (scripts/test does, after scripts/test-images.sh)"
)]
fn a_failing_test_carries_its_services_log_lines() {
    if !docker_ready() {
        return;
    }
    let project = Project::copy_of(FIXTURE);
    let needle = unique("needle");
    project.write(
        "tests/test_needle.py",
        &format!(
            "import os, urllib.error, urllib.request\n\n\n\
             def test_asks_alpha_for_a_needle_then_fails():\n    \
             host = os.environ['SHOAL_SERVICE_ALPHA_HOST']\n    \
             port = os.environ['SHOAL_SERVICE_ALPHA_PORT']\n    \
             try:\n        \
             urllib.request.urlopen(f'http://{{host}}:{{port}}/kv/{needle}', timeout=10)\n    \
             except urllib.error.HTTPError as e:\n        \
             assert e.code == 404\n    \
             assert False, 'failing on purpose'\n"
        ),
    );
    let json = project.out("needle.jsonl");
    let out = project
        .shoal(["run", "-j", "1", "--json"])
        .arg(&json)
        .arg("tests/test_needle.py")
        .run();
    out.assert_code(1);
    let failed = Events::read(&json)
        .final_of("tests/test_needle.py::test_asks_alpha_for_a_needle_then_fails");
    assert_eq!(failed.outcome, "fail", "{}", out.dump());
    let text = &failed.output_text;
    let header = "--- service `alpha` (slot 0), its log since the batch started ---";
    let alpha_log = text
        .split_once(header)
        .unwrap_or_else(|| panic!("no {header:?} in the output:\n{text}"))
        .1;
    // Up to the next service's section: the line is alpha's, not beta's.
    let alpha_log = alpha_log.split("\n--- service ").next().unwrap_or_default();
    assert!(
        alpha_log.contains(&format!("alpha: GET /kv/{needle}")),
        "alpha's log carries the request:\n{text}"
    );
    assert!(
        text.contains("--- service `beta` (slot 0)"),
        "beta's section is there too:\n{text}"
    );
}

#[test]
#[cfg_attr(
    not(shoal_has_docker),
    ignore = "needs a Docker engine and the test images: set SHOAL_TEST_DOCKER=1 (scripts/test does, after scripts/test-images.sh)"
)]
fn slot_setup_runs_after_readiness_and_reaches_services_from_the_host() {
    if !docker_ready() {
        return;
    }
    let project = Project::copy_of(FIXTURE);
    let config = std::fs::read_to_string(project.root().join("shoal.toml")).expect("config");
    // On this host, alpha is 127.0.0.1 at its published readiness port. A
    // hook run before alpha answered would fail, and the run with it.
    let hook = "import os, urllib.request as u; \
                slot = os.environ['SHOAL_SLOT']; \
                assert os.environ['SHOAL_SERVICE_ALPHA_HOST'] == '127.0.0.1', os.environ['SHOAL_SERVICE_ALPHA_HOST']; \
                url = 'http://127.0.0.1:' + os.environ['SHOAL_SERVICE_ALPHA_PORT'] + '/kv/seeded'; \
                u.urlopen(u.Request(url, data=slot.encode(), method='PUT'), timeout=10).read()";
    project.write(
        "shoal.toml",
        &format!("[hooks]\nslot_setup = [\"python3\", \"-c\", \"{hook}\"]\n\n{config}"),
    );
    // In the test container, alpha is its name and container port.
    project.write(
        "tests/test_seeded.py",
        "import os, urllib.request\n\nimport pytest\n\n\n\
         @pytest.mark.parametrize('n', range(4))\n\
         def test_alpha_was_seeded_by_this_slots_setup(n):\n    \
         assert os.environ['SHOAL_SERVICE_ALPHA_HOST'] == 'alpha'\n    \
         assert os.environ['SHOAL_SERVICE_ALPHA_PORT'] == '8080'\n    \
         with urllib.request.urlopen('http://alpha:8080/kv/seeded', timeout=10) as r:\n        \
         assert r.read().decode() == os.environ['SHOAL_SLOT']\n",
    );
    let json = project.out("seeded.jsonl");
    let out = project.shoal(["run", "-j", "2", "--json"]).arg(&json).run();
    out.assert_code(0);
    let events = Events::read(&json);
    assert_all_passed(&events, FIXTURE_TESTS + 4, &out);
}

#[test]
#[cfg_attr(
    not(shoal_has_docker),
    ignore = "needs a Docker engine and the test images: set SHOAL_TEST_DOCKER=1 (scripts/test does, after scripts/test-images.sh)"
)]
fn a_compose_file_suite_runs_one_project_per_slot() {
    if !docker_ready() {
        return;
    }
    let project = Project::copy_of(FIXTURE);
    let config = std::fs::read_to_string(project.root().join("shoal.toml")).expect("config");
    let tables = config
        .find("[suites.sync.services.alpha]")
        .expect("the fixture's service tables");
    project.write(
        "shoal.toml",
        &format!(
            "{}[suites.sync.services]\ncompose = \"compose.yml\"\n",
            &config[..tables]
        ),
    );
    let json = project.out("compose.jsonl");
    let out = project.shoal(["run", "-j", "2", "--json"]).arg(&json).run();
    out.assert_code(0);
    let events = Events::read(&json);
    assert_all_passed(&events, FIXTURE_TESTS, &out);
    assert_each_slot_had_its_own_pair(&project, FIXTURE_TESTS);
    let run = run_id(&events);
    assert!(
        containers_of(&run).is_empty(),
        "the run's containers remain"
    );
    assert_nothing_left(&format!("org.shoal.run={run}"));
}
