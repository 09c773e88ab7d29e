//! Suites with an `environment`: every test runs in a container of a local
//! image (`scripts/test-images.sh`; no registry is reachable here), one
//! container per slot, removed after the run; leftovers of a run killed
//! with SIGKILL are reaped by the next run.

use crate::events::Events;
use crate::support::{Project, Running};
use std::process::Command;
use std::time::{Duration, Instant};

const IMAGE: &str = "shoal-test/python:1";

/// The Docker engine and the test image are here (true), or the test
/// fails saying what is missing: tests calling this are ignored unless the
/// build may use Docker (`shoal_has_docker`, see `shoal-testenv`).
pub(crate) fn docker_ready() -> bool {
    let engine = Command::new("docker").arg("info").output();
    let image = Command::new("docker")
        .args(["image", "inspect", IMAGE])
        .output();
    let problem = match (&engine, &image) {
        (Ok(e), _) if !e.status.success() => Some("the Docker engine is not reachable".to_owned()),
        (Err(e), _) => Some(format!("no docker client: {e}")),
        (_, Ok(i)) if !i.status.success() => Some(format!(
            "image {IMAGE} is missing (run scripts/test-images.sh)"
        )),
        (_, Err(e)) => Some(format!("cannot inspect {IMAGE}: {e}")),
        _ => None,
    };
    // Only tests that this build was told may use Docker get here (the
    // others are ignored, saying why): its absence is a failure.
    match problem {
        None => true,
        Some(p) => panic!(
            "SHOAL_TEST_DOCKER offered Docker, but {p} (scripts/test-images.sh makes the images)"
        ),
    }
}

/// Containers labeled with run `run_id` (running or not).
pub(crate) fn containers_of(run_id: &str) -> Vec<String> {
    let out = Command::new("docker")
        .args(["ps", "-aq", "--filter"])
        .arg(format!("label=org.shoal.run={run_id}"))
        .output()
        .expect("docker ps");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
#[cfg_attr(
    not(shoal_has_docker),
    ignore = "needs a Docker engine and the test images: set SHOAL_TEST_DOCKER=1 (scripts/test does, after scripts/test-images.sh)"
)]
fn tests_run_in_one_container_per_slot_and_nothing_is_left() {
    if !docker_ready() {
        return;
    }
    let project = Project::copy_of("container-project");
    let json = project.out("events.jsonl");
    let out = project.shoal(["run", "-j", "2", "--json"]).arg(&json).run();
    out.assert_code(1);
    let events = Events::read(&json);
    let mut finals: Vec<(String, String)> = events
        .finals()
        .into_iter()
        .map(|a| (a.test, a.final_status.unwrap_or_default()))
        .collect();
    finals.sort();
    let want = [
        (
            "tests/test_in_container.py::test_environment_reaches_the_test",
            "passed",
        ),
        (
            "tests/test_in_container.py::test_fails_on_purpose",
            "failed",
        ),
        (
            "tests/test_in_container.py::test_project_is_mounted_at_the_workdir",
            "passed",
        ),
        (
            "tests/test_in_container.py::test_runs_in_a_container",
            "passed",
        ),
        ("tests/test_in_container.py::test_sleeps", "passed"),
    ];
    let want: Vec<(String, String)> = want
        .iter()
        .map(|(t, s)| (t.to_string(), s.to_string()))
        .collect();
    assert_eq!(finals, want, "{}", out.dump());
    let run_id = events.run_finished()["run_id"]
        .as_str()
        .expect("run id")
        .to_owned();
    assert!(
        containers_of(&run_id).is_empty(),
        "the run's containers are removed"
    );
}

#[test]
#[cfg_attr(
    not(shoal_has_docker),
    ignore = "needs a Docker engine and the test images: set SHOAL_TEST_DOCKER=1 (scripts/test does, after scripts/test-images.sh)"
)]
fn a_run_killed_with_sigkill_leaves_containers_the_next_run_reaps() {
    if !docker_ready() {
        return;
    }
    let project = Project::copy_of("container-project");
    let config = std::fs::read_to_string(project.root().join("shoal.toml")).expect("config");
    project.write(
        "shoal.toml",
        &config.replace(
            "FIXTURE_IN_CONTAINER = \"yes\"",
            "FIXTURE_IN_CONTAINER = \"yes\", FIXTURE_SLEEP = \"60\"",
        ),
    );
    let json = project.out("killed.jsonl");
    let mut run: Running = project
        .shoal(["run", "-j", "2", "--json"])
        .arg(&json)
        .spawn();
    let deadline = Instant::now() + Duration::from_secs(60);
    let run_id = loop {
        let text = std::fs::read_to_string(&json).unwrap_or_default();
        let started = text.lines().find(|l| l.contains("\"run_started\""));
        if let (Some(line), true) = (started, text.contains("attempt_started")) {
            let v: serde_json::Value = serde_json::from_str(line).expect("json");
            break v["run_id"].as_str().expect("run id").to_owned();
        }
        assert!(Instant::now() < deadline, "the run did not start a test");
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(run.pid()),
        nix::sys::signal::Signal::SIGKILL,
    );
    let _ = run.wait_for(Duration::from_secs(10));
    assert_eq!(
        containers_of(&run_id).len(),
        2,
        "killed with SIGKILL, it removed nothing"
    );

    project.write("shoal.toml", &config);
    project
        .shoal(["run", "-j", "2", "runs_in_a_container"])
        .run()
        .assert_code(0);
    assert!(
        containers_of(&run_id).is_empty(),
        "the next run reaped the dead run's containers"
    );
}

#[test]
#[cfg_attr(
    not(shoal_has_docker),
    ignore = "needs a Docker engine and the test images: set SHOAL_TEST_DOCKER=1 (scripts/test does, after scripts/test-images.sh)"
)]
fn a_test_killed_at_the_memory_limit_is_reported_as_such() {
    if !docker_ready() {
        return;
    }
    let project = Project::copy_of("container-project");
    let config = std::fs::read_to_string(project.root().join("shoal.toml")).expect("config");
    project.write(
        "shoal.toml",
        &config.replace(
            "workdir = \"/work\"",
            "workdir = \"/work\"\nmemory = \"96MiB\"",
        ),
    );
    project.write(
        "tests/test_memory.py",
        "def test_hogs_memory():\n    hog = []\n    while True:\n        hog.append(bytearray(8 << 20))\n\n\
         def test_modest():\n    assert len(bytearray(1 << 20)) == 1 << 20\n",
    );
    let json = project.out("oom.jsonl");
    let out = project
        .shoal(["run", "-j", "1", "--json"])
        .arg(&json)
        .arg("tests/test_memory.py")
        .run();
    out.assert_code(1);
    let events = Events::read(&json);
    let hog = events.final_of("tests/test_memory.py::test_hogs_memory");
    assert_eq!(hog.outcome, "crash", "{}", out.dump());
    let message = hog.message.unwrap_or_default();
    assert!(message.contains("killed for memory"), "{message}");
    // The slot's container survived: the other test ran and passed.
    let modest = events.final_of("tests/test_memory.py::test_modest");
    assert_eq!(
        modest.final_status.as_deref(),
        Some("passed"),
        "{}",
        out.dump()
    );
}

#[test]
#[cfg_attr(
    not(shoal_has_docker),
    ignore = "needs a Docker engine and the test images: set SHOAL_TEST_DOCKER=1 (scripts/test does, after scripts/test-images.sh)"
)]
fn isolation_batch_gives_every_batch_a_fresh_container() {
    if !docker_ready() {
        return;
    }
    let project = Project::copy_of("container-project");
    let config = std::fs::read_to_string(project.root().join("shoal.toml")).expect("config");
    project.write(
        "shoal.toml",
        &config
            .replace(
                "adapter = \"pytest\"",
                "adapter = \"pytest\"\nmax_batch = 1",
            )
            .replace(
                "workdir = \"/work\"",
                "workdir = \"/work\"\nisolation = \"batch\"",
            ),
    );
    // Each test records the container it ran in and whether it found state
    // an earlier test left in the container's own filesystem.
    let mut text = String::from("import os, socket\n\n");
    for i in 0..4 {
        text.push_str(&format!(
            "def test_fresh_{i}():\n    seen = os.path.exists('/tmp/left-behind')\n    open('/tmp/left-behind', 'w').close()\n    \
             with open('/work/hosts.txt', 'a') as f:\n        f.write(socket.gethostname() + ' ' + str(seen) + '\\n')\n    assert not seen\n\n"
        ));
    }
    project.write("tests/test_fresh.py", &text);
    let json = project.out("batch.jsonl");
    let out = project
        .shoal(["run", "-j", "2", "--json"])
        .arg(&json)
        .arg("tests/test_fresh.py")
        .run();
    out.assert_code(0);
    let hosts = std::fs::read_to_string(project.root().join("hosts.txt")).expect("hosts");
    let mut names: Vec<&str> = hosts
        .lines()
        .map(|l| l.split(' ').next().unwrap_or(""))
        .collect();
    assert_eq!(names.len(), 4, "{hosts}");
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), 4, "one container per batch: {hosts}");
    let run_id = Events::read(&json).run_finished()["run_id"]
        .as_str()
        .expect("run id")
        .to_owned();
    assert!(
        containers_of(&run_id).is_empty(),
        "per-batch containers are removed"
    );
}

#[test]
#[cfg_attr(
    not(shoal_has_docker),
    ignore = "needs a Docker engine and the test images: set SHOAL_TEST_DOCKER=1 (scripts/test does, after scripts/test-images.sh)"
)]
fn a_dockerfile_suite_builds_its_image_once_and_runs_in_it() {
    if !docker_ready() {
        return;
    }
    let project = Project::copy_of("container-project");
    let config = std::fs::read_to_string(project.root().join("shoal.toml")).expect("config");
    // A suite name of its own, so the image tag is this test's alone.
    let suite = format!("df{}", std::process::id());
    project.write(
        "shoal.toml",
        &config
            .replace("[suites.py]", &format!("[suites.{suite}]"))
            .replace(
                "[suites.py.environment]",
                &format!("[suites.{suite}.environment]"),
            )
            .replace(
                "image = \"shoal-test/python:1\"",
                "dockerfile = \"ci/test.Dockerfile\"\ncontext = \"ci\"",
            ),
    );
    project.write(
        "ci/test.Dockerfile",
        "FROM shoal-test/python:1\nCOPY marker.txt /built-by-shoal\n",
    );
    project.write("ci/marker.txt", "from the build context\n");
    project.write(
        "tests/test_built.py",
        "def test_runs_in_the_built_image():\n    assert open('/built-by-shoal').read() == 'from the build context\\n'\n",
    );
    // The image's tags (one per context digest): a build of a context that
    // differs only slightly may share layers, never a tag.
    let images = || {
        let out = Command::new("docker")
            .args([
                "images",
                "--format",
                "{{.Tag}}",
                &format!("shoal-build/{suite}"),
            ])
            .output()
            .expect("docker images");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let first = project
        .shoal(["run", "-j", "1", "tests/test_built.py"])
        .run();
    first.assert_code(0);
    let built = images();
    assert_eq!(
        built.len(),
        1,
        "one image built: {built:?}\n{}",
        first.dump()
    );
    // Unchanged context: the same image, not a new build.
    project
        .shoal(["run", "-j", "1", "tests/test_built.py"])
        .run()
        .assert_code(0);
    assert_eq!(images(), built);
    // A changed context file: a new image.
    project.write("ci/marker.txt", "changed\n");
    let changed = project
        .shoal(["run", "-j", "1", "tests/test_built.py"])
        .run();
    changed.assert_code(1);
    // It failed because it ran in the new image (it read the new file), not
    // because something else went wrong.
    assert!(
        changed.stdout.contains("changed"),
        "the test saw the changed context:\n{}",
        changed.dump()
    );
    let now = images();
    assert_eq!(now.len(), 2, "{now:?}\n{}", changed.dump());
    assert!(now.contains(&built[0]), "{now:?}");
    let _ = Command::new("docker")
        .args(["rmi", "-f"])
        .args(now.iter().map(|tag| format!("shoal-build/{suite}:{tag}")))
        .output();
}
