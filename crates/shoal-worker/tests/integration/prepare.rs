//! Preparing runs from a packed copy of the pytest fixture: fetching,
//! caching, materializing, config, discovery and `worker_setup`.

use std::fs;

use shoal_snapshot::{Digest, Manifest, SnapshotError};
use shoal_worker::prepare::FETCH_CHUNK;
use shoal_worker::{PrepareError, SetupStatus, prepare_run};

use crate::support::{Asked, Setup, inputs, prepare, source, test_named};

#[tokio::test]
async fn a_packed_pytest_project_is_fetched_materialized_and_discovered() {
    let setup = Setup::pytest();
    let manifest_digest = setup.upload();
    let manifest = Manifest::from_json(&setup.upstream.read(&manifest_digest).unwrap()).unwrap();
    let blobs = manifest.blobs().count();

    let (run, asked) = prepare(
        &setup.cache,
        &setup.upstream,
        &inputs("run-1", &manifest_digest, "", ""),
    )
    .await;
    let run = run.unwrap();
    // The manifest first, then every blob once, in chunks of at most 256.
    assert_eq!(asked[0], vec![manifest_digest]);
    assert!(asked.iter().all(|a| a.len() <= FETCH_CHUNK));
    assert_eq!(asked[1..].iter().map(Vec::len).sum::<usize>(), blobs);
    assert_eq!((run.blobs_fetched, run.blobs_cached), (blobs + 1, 0));
    assert_eq!(run.setup, SetupStatus::NoHook);

    // The tree is the source's, in the cache's run directory.
    assert_eq!(
        run.run_dir,
        setup.cache.dir().join("instances/0/runs/run-1")
    );
    assert_eq!(run.project_root, run.run_dir.join("tree"));
    assert_eq!(
        fs::read(run.project_root.join("tests/test_outcomes.py")).unwrap(),
        fs::read(setup.source.join("tests/test_outcomes.py")).unwrap()
    );

    // Zero config found the pytest suite, and discovery its tests.
    assert_eq!(run.suites.keys().collect::<Vec<_>>(), ["pytest"]);
    let pass = test_named(&run, "test_outcomes.py::test_pass");
    let case = run.test("pytest", &pass).unwrap();
    assert_eq!(case.id.suite, "pytest");
    assert!(case.group.ends_with("test_outcomes.py"), "{}", case.group);
    test_named(&run, "deep/nested/test_x.py::test_nested_pass");
    assert!(run.tests.len() > 30, "{}", run.tests.len());
    assert!(run.support_dir.starts_with(&run.run_dir));

    // A second run of the same snapshot fetches only nothing new.
    let (again, asked) = prepare(
        &setup.cache,
        &setup.upstream,
        &inputs("run-2", &manifest_digest, "", ""),
    )
    .await;
    let again = again.unwrap();
    assert!(asked.is_empty(), "{asked:?}");
    assert_eq!((again.blobs_fetched, again.blobs_cached), (0, blobs));
    assert_eq!(again.tests.len(), run.tests.len());

    // A changed file is the only blob fetched for the next snapshot.
    setup.write("tests/test_new.py", "def test_added():\n    pass\n");
    let changed = setup.upload();
    let (third, asked) = prepare(
        &setup.cache,
        &setup.upstream,
        &inputs("run-3", &changed, "", ""),
    )
    .await;
    let third = third.unwrap();
    assert_eq!(asked.len(), 2, "{asked:?}");
    assert_eq!(asked[1].len(), 1);
    assert_eq!(third.blobs_fetched, 2);
    test_named(&third, "test_new.py::test_added");
}

#[tokio::test]
async fn a_leftover_run_directory_is_replaced() {
    let setup = Setup::pytest();
    let digest = setup.upload();
    let stale = setup.cache.run_dir("run-x").join("tree/stale.txt");
    fs::create_dir_all(stale.parent().unwrap()).unwrap();
    fs::write(&stale, "from a worker that died").unwrap();
    let (run, _) = prepare(
        &setup.cache,
        &setup.upstream,
        &inputs("run-x", &digest, "", ""),
    )
    .await;
    run.unwrap();
    assert!(!stale.exists());
}

#[tokio::test]
async fn project_dir_and_config_text_are_used() {
    let setup = Setup::pytest_in("services/api");
    let digest = setup.upload();
    let config = r#"
[suites.unit]
adapter = "pytest"
"#;
    let (run, _) = prepare(
        &setup.cache,
        &setup.upstream,
        &inputs("run-1", &digest, config, "services/api"),
    )
    .await;
    let run = run.unwrap();
    assert!(
        run.project_root.ends_with("tree/services/api"),
        "{}",
        run.project_root.display()
    );
    assert_eq!(run.suites.keys().collect::<Vec<_>>(), ["unit"]);
    test_named(&run, "test_outcomes.py::test_pass");
    assert!(run.tests.keys().all(|id| id.suite == "unit"));

    for bad in [
        "services/missing",
        "../outside",
        "services/api/pyproject.toml",
    ] {
        let (err, _) = prepare(
            &setup.cache,
            &setup.upstream,
            &inputs("run-2", &digest, config, bad),
        )
        .await;
        let err = err.unwrap_err();
        assert!(
            matches!(
                err,
                PrepareError::ProjectDir(_)
                    | PrepareError::Snapshot(SnapshotError::UnsafePath { .. })
            ),
            "{bad}: {err}"
        );
    }

    let (err, _) = prepare(
        &setup.cache,
        &setup.upstream,
        &inputs(
            "run-3",
            &digest,
            "[suites.x]\nadapter = \"nope\"\n",
            "services/api",
        ),
    )
    .await;
    let err = err.unwrap_err();
    assert!(matches!(err, PrepareError::Config(_)), "{err}");
    assert!(err.to_string().starts_with("invalid shoal.toml"), "{err}");

    // No config at the snapshot root: zero config finds the test files
    // below it (services/api/tests), as a client at that root would.
    let (run, _) = prepare(
        &setup.cache,
        &setup.upstream,
        &inputs("run-4", &digest, "", ""),
    )
    .await;
    let run = run.expect("zero config detects the tests below the root");
    assert_eq!(run.suites.keys().collect::<Vec<_>>(), ["pytest"]);
}

#[tokio::test]
async fn worker_setup_runs_once_per_snapshot() {
    let setup = Setup::pytest();
    let log = setup.tmp.path().join("setup.log");
    let config = format!(
        r#"
[hooks]
worker_setup = "echo \"$SHOAL_RUN_ID $SHOAL_WORKER $(basename \"$PWD\")\" >> '{}'"

[suites.pytest]
adapter = "pytest"
"#,
        log.display()
    );
    let lines = || {
        fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let digest = setup.upload();

    let (first, _) = prepare(
        &setup.cache,
        &setup.upstream,
        &inputs("run-1", &digest, &config, ""),
    )
    .await;
    assert_eq!(first.unwrap().setup, SetupStatus::Ran);
    // In the project root, with the run and worker in the environment.
    assert_eq!(lines(), ["run-1 test-worker tree"]);

    let (second, _) = prepare(
        &setup.cache,
        &setup.upstream,
        &inputs("run-2", &digest, &config, ""),
    )
    .await;
    assert_eq!(second.unwrap().setup, SetupStatus::Cached);
    assert_eq!(lines().len(), 1);

    // Another worker (another cache) runs it for itself.
    let other = setup.other_cache("cache-2");
    let (elsewhere, _) = prepare(
        &other,
        &setup.upstream,
        &inputs("run-2", &digest, &config, ""),
    )
    .await;
    assert_eq!(elsewhere.unwrap().setup, SetupStatus::Ran);
    assert_eq!(lines().len(), 2);

    // A changed snapshot runs it again.
    setup.write("tests/conftest_extra.txt", "changed\n");
    let changed = setup.upload();
    let (third, _) = prepare(
        &setup.cache,
        &setup.upstream,
        &inputs("run-3", &changed, &config, ""),
    )
    .await;
    assert_eq!(third.unwrap().setup, SetupStatus::Ran);
    assert_eq!(
        lines().last().map(String::as_str),
        Some("run-3 test-worker tree")
    );
    assert_eq!(lines().len(), 3);
}

#[tokio::test]
async fn a_failing_worker_setup_fails_the_preparation_and_is_not_remembered() {
    let setup = Setup::pytest();
    let flag = setup.tmp.path().join("fixed");
    let config = format!(
        r#"
[hooks]
worker_setup = "test -e '{}' || {{ echo 'pip exploded'; exit 3; }}"

[suites.pytest]
adapter = "pytest"
"#,
        flag.display()
    );
    let digest = setup.upload();
    let (err, _) = prepare(
        &setup.cache,
        &setup.upstream,
        &inputs("run-1", &digest, &config, ""),
    )
    .await;
    let err = err.unwrap_err();
    assert!(matches!(err, PrepareError::Hook(_)), "{err}");
    assert!(err.to_string().contains("pip exploded"), "{err}");

    fs::write(&flag, "").unwrap();
    let (run, _) = prepare(
        &setup.cache,
        &setup.upstream,
        &inputs("run-1", &digest, &config, ""),
    )
    .await;
    assert_eq!(run.unwrap().setup, SetupStatus::Ran);
}

#[tokio::test]
async fn blobs_that_do_not_come_or_do_not_match_are_refused() {
    let setup = Setup::pytest();
    let digest = setup.upload();
    let upstream = setup.upstream.clone();

    // A source that leaves one blob out.
    let asked = Asked::default();
    let mut inner = source(&upstream, &asked);
    let dropping = move |digests: Vec<Digest>| {
        let fut = inner(digests);
        async move {
            let mut blobs = fut.await?;
            if blobs.len() > 1 {
                blobs.pop();
            }
            Ok(blobs)
        }
    };
    let err = prepare_run(
        &setup.cache,
        &inputs("run-1", &digest, "", ""),
        "w",
        dropping,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, PrepareError::BlobNotSent(_)), "{err}");

    // A source that sends other bytes under a blob's name.
    let other = setup.other_cache("cache-2");
    let lying = move |digests: Vec<Digest>| {
        let blobs = digests
            .into_iter()
            .map(|d| {
                let bytes = if d == digest {
                    upstream.read(&d).unwrap()
                } else {
                    b"forged".to_vec()
                };
                (d, bytes)
            })
            .collect();
        std::future::ready(Ok(blobs))
    };
    let err = prepare_run(&other, &inputs("run-1", &digest, "", ""), "w", lying)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            PrepareError::Snapshot(SnapshotError::BlobMismatch { .. })
        ),
        "{err}"
    );
    assert!(!other.blobs().has(&Digest::of(b"forged")));

    // A source that fails says why.
    let third = setup.other_cache("cache-3");
    let failing = |_: Vec<Digest>| std::future::ready(Err("the coordinator is gone".to_owned()));
    let err = prepare_run(&third, &inputs("run-1", &digest, "", ""), "w", failing)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "failed to fetch blobs of the snapshot: the coordinator is gone"
    );

    // A run id that is not a directory name is refused before anything.
    let (err, asked) = prepare(
        &third,
        &setup.upstream,
        &inputs("../../etc", &digest, "", ""),
    )
    .await;
    assert!(matches!(err.unwrap_err(), PrepareError::BadRunId(_)));
    assert!(asked.is_empty());
}

/// Issue 11: workers sharing one cache directory (three `shoal worker` on
/// one machine with default options) each materialize a run in their own
/// instance's directory, and run `worker_setup` once between them. Each
/// cache holds its own lock file handles, so `flock` sees them as it would
/// see separate processes.
#[tokio::test]
async fn workers_sharing_a_cache_directory_use_their_own_run_directories_and_set_up_once() {
    let setup = Setup::pytest();
    let log = setup.tmp.path().join("setup.log");
    let config = format!(
        r#"
[hooks]
worker_setup = "sleep 1; echo \"$SHOAL_WORKER\" >> '{}'"

[suites.pytest]
adapter = "pytest"
"#,
        log.display()
    );
    let digest = setup.upload();
    let second = setup.shared_cache();
    assert_eq!(
        (setup.cache.instance().index(), second.instance().index()),
        (0, 1)
    );
    let run = inputs("run-1", &digest, &config, "");
    let ((a, _), (b, _)) = tokio::join!(
        prepare(&setup.cache, &setup.upstream, &run),
        prepare(&second, &setup.upstream, &run),
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    let mut statuses = [a.setup, b.setup].map(|s| format!("{s:?}"));
    statuses.sort();
    assert_eq!(statuses, ["Cached", "Ran"], "worker_setup ran once");
    assert_eq!(fs::read_to_string(&log).unwrap().lines().count(), 1);

    assert_eq!(a.run_dir, setup.cache.dir().join("instances/0/runs/run-1"));
    assert_eq!(b.run_dir, setup.cache.dir().join("instances/1/runs/run-1"));
    for run in [&a, &b] {
        assert!(
            run.project_root.join("tests/test_outcomes.py").is_file(),
            "{} was left intact",
            run.run_dir.display()
        );
    }
}
