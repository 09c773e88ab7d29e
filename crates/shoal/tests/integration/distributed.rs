//! Distributed runs: a real coordinator (`shoal serve`) and real workers
//! (`shoal worker`) as separate processes on loopback, a client
//! (`shoal run --server`), and the failures the issue names: a worker
//! killed mid-batch, the coordinator killed and restarted mid-run, a worker
//! cut off (stopped) and healed, two runs at once, a bad token, several
//! workers with default options on one host (issue 11). Every test
//! checks in the coordinator's store that each test has exactly one final
//! result. Each runs against SQLite and, when `SHOAL_TEST_POSTGRES_URL` is
//! set (CI sets it), against PostgreSQL.

use crate::events::Events;
use crate::support::{Output, Project, Running};
use std::collections::BTreeMap;
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

const TOKEN: &str = "e2e-secret-token-7d1c";

/// The PostgreSQL server of `SHOAL_TEST_POSTGRES_URL`; the `postgres`
/// variant of a [`per_store!`] test runs only where it is set (or in CI,
/// where its absence fails).
fn postgres() -> Backend {
    match std::env::var("SHOAL_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => Backend::Postgres(url),
        _ => panic!("PostgreSQL is needed: set SHOAL_TEST_POSTGRES_URL (scripts/test does)"),
    }
}

/// A test once per store: module `NAME` with tests `sqlite` and
/// `postgres`, each running the body with `BACKEND: &Backend`. The
/// `postgres` one is reported ignored, with the reason, where this build may
/// not use PostgreSQL (see `shoal-testenv`), never passed.
macro_rules! per_store {
    ($(#[$m:meta])* fn $name:ident($backend:ident) $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            fn body($backend: &crate::distributed::Backend) $body

            $(#[$m])*
            #[test]
            fn sqlite() {
                body(&crate::distributed::Backend::Sqlite)
            }

            $(#[$m])*
            #[test]
            #[cfg_attr(
                not(shoal_has_postgres),
                ignore = "needs PostgreSQL: set SHOAL_TEST_POSTGRES_URL (scripts/test does)"
            )]
            fn postgres() {
                body(&crate::distributed::postgres())
            }
        }
    };
}

mod backends;
mod parity;

#[derive(Debug, Clone)]
enum Backend {
    Sqlite,
    Postgres(String),
}

/// A coordinator, its workers and a project, torn down on drop.
struct Cluster {
    project: Project,
    port: u16,
    store_url: String,
    pg_db: Option<(String, String)>,
    coordinator: Option<Running>,
    workers: Vec<Running>,
    lease_timeout: &'static str,
    host: String,
    /// Serve https with this certificate (its own CA) and key.
    tls: Option<(std::path::PathBuf, std::path::PathBuf)>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn psql(url: &str, sql: &str) {
    let out = Command::new("psql")
        .args([url, "-v", "ON_ERROR_STOP=1", "-qc", sql])
        .output()
        .expect("run psql");
    assert!(
        out.status.success(),
        "psql {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Cluster {
    fn new(backend: &Backend, lease_timeout: &'static str) -> Cluster {
        Cluster::listening_on(backend, lease_timeout, "127.0.0.1")
    }

    /// A coordinator listening on `host` (loopback, or the host side of a
    /// test network namespace's link).
    fn listening_on(backend: &Backend, lease_timeout: &'static str, host: &str) -> Cluster {
        Cluster::of_fixture("distributed-project", backend, lease_timeout, host)
    }

    fn of_fixture(
        fixture: &str,
        backend: &Backend,
        lease_timeout: &'static str,
        host: &str,
    ) -> Cluster {
        crate::support::require_pytest();
        let project = Project::copy_of(fixture);
        let (store_url, pg_db) = match backend {
            Backend::Sqlite => (
                format!("sqlite://{}", project.out("coordinator.db").display()),
                None,
            ),
            Backend::Postgres(admin) => {
                let name = format!("shoal_e2e_{}", free_port());
                psql(admin, &format!("DROP DATABASE IF EXISTS {name}"));
                psql(admin, &format!("CREATE DATABASE {name}"));
                let (base, _) = admin
                    .rsplit_once('/')
                    .expect("postgres URL with a database");
                (format!("{base}/{name}"), Some((admin.clone(), name)))
            }
        };
        let mut c = Cluster {
            project,
            port: free_port(),
            store_url,
            pg_db,
            coordinator: None,
            workers: Vec::new(),
            lease_timeout,
            host: host.to_owned(),
            tls: None,
        };
        c.start_coordinator();
        c
    }

    /// A coordinator serving https with a fresh self-signed certificate.
    fn with_tls(backend: &Backend) -> Cluster {
        let mut c = Cluster::new(backend, "10s");
        c.kill_coordinator();
        let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()])
            .expect("generate a certificate");
        let (cert, key) = (c.project.out("server.crt"), c.project.out("server.key"));
        std::fs::write(&cert, certified.cert.pem()).expect("write cert");
        std::fs::write(&key, certified.signing_key.serialize_pem()).expect("write key");
        c.tls = Some((cert, key));
        c.start_coordinator();
        c
    }

    /// `--ca CERT` for clients and workers of a TLS coordinator.
    fn ca_args(&self) -> Vec<std::ffi::OsString> {
        match &self.tls {
            Some((cert, _)) => vec!["--ca".into(), cert.into()],
            None => Vec::new(),
        }
    }

    fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}:{}", self.host, self.port)
    }

    fn start_coordinator(&mut self) {
        let data = self.project.out("coordinator-data");
        let running = self
            .project
            .shoal(["serve", "--listen"])
            .arg(format!("{}:{}", self.host, self.port))
            .args([
                "--store",
                &self.store_url,
                "--lease-timeout",
                self.lease_timeout,
            ])
            .arg("--data-dir")
            .arg(&data)
            .args(match &self.tls {
                Some((cert, key)) => vec![
                    std::ffi::OsString::from("--tls-cert"),
                    cert.into(),
                    "--tls-key".into(),
                    key.into(),
                ],
                None => Vec::new(),
            })
            .env("SHOAL_TOKEN", TOKEN)
            .spawn();
        self.coordinator = Some(running);
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect((self.host.as_str(), self.port)).is_err() {
            if let Some(status) = self
                .coordinator
                .as_mut()
                .and_then(|c| c.wait_for(Duration::ZERO))
            {
                panic!(
                    "the coordinator exited ({status}):\n{}",
                    self.coordinator
                        .as_ref()
                        .map(|c| c.stderr())
                        .unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "the coordinator did not start listening"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn kill_coordinator(&mut self) {
        if let Some(mut c) = self.coordinator.take() {
            signal(c.pid(), nix::sys::signal::Signal::SIGKILL);
            let _ = c.wait_for(Duration::from_secs(10));
        }
    }

    fn start_worker(&mut self, name: &str, slots: u32) -> usize {
        self.start_worker_with(name, slots, "0.3")
    }

    /// A worker inside network namespace `ns` (`ip netns exec`).
    fn start_worker_in(&mut self, ns: &str, name: &str, slots: u32) -> usize {
        let cmd = self
            .project
            .tool("ip", ["netns", "exec", ns, crate::support::SHOAL]);
        self.launch_worker(cmd, name, slots, "0.3")
    }

    /// A worker whose tests sleep `sleep` seconds each.
    fn start_worker_with(&mut self, name: &str, slots: u32, sleep: &str) -> usize {
        let cmd = self.project.shoal(std::iter::empty::<&str>());
        self.launch_worker(cmd, name, slots, sleep)
    }

    /// `CMD worker ...` against this cluster's coordinator.
    fn launch_worker(
        &mut self,
        cmd: crate::support::Cmd,
        name: &str,
        slots: u32,
        sleep: &str,
    ) -> usize {
        let cache = self.project.out(&format!("worker-{name}"));
        let running = cmd
            .args(["worker", "--server", &self.url(), "--name", name])
            .arg("--slots")
            .arg(slots.to_string())
            .arg("--cache-dir")
            .arg(&cache)
            .args(self.ca_args())
            .env("SHOAL_TOKEN", TOKEN)
            .env(
                "SHOAL_FIXTURE_SLOT_FILE",
                self.project.out("executions.txt"),
            )
            .env("SHOAL_FIXTURE_SLEEP", sleep)
            .spawn();
        self.workers.push(running);
        self.workers.len() - 1
    }

    /// `shoal worker` with neither `--name` nor `--cache-dir`, its `HOME`
    /// set to `home`: workers given the same `home` share the default cache
    /// directory `home/.cache/shoal-worker`, as workers of one user on one
    /// host do.
    fn start_default_worker(&mut self, home: &std::path::Path, slots: u32) -> usize {
        let running = self
            .project
            .shoal(["worker", "--server", &self.url()])
            .arg("--slots")
            .arg(slots.to_string())
            .args(self.ca_args())
            .env("HOME", home)
            .env("SHOAL_TOKEN", TOKEN)
            .env(
                "SHOAL_FIXTURE_SLOT_FILE",
                self.project.out("executions.txt"),
            )
            .env("SHOAL_FIXTURE_SLEEP", "0.3")
            .spawn();
        self.workers.push(running);
        self.workers.len() - 1
    }

    /// `shoal worker --name NAME --cache-dir DIR` (not waited for).
    fn worker_cmd(&self, name: &str, cache: &std::path::Path) -> crate::support::Cmd {
        self.project
            .shoal(["worker", "--server", &self.url(), "--name", name])
            .arg("--cache-dir")
            .arg(cache)
            .args(["--slots", "1"])
            .args(self.ca_args())
            .env("SHOAL_TOKEN", TOKEN)
            .env(
                "SHOAL_FIXTURE_SLOT_FILE",
                self.project.out("executions.txt"),
            )
    }

    fn worker_pid(&self, i: usize) -> i32 {
        self.workers[i].pid()
    }

    /// `shoal run --server` on the project, events to `name.jsonl`.
    fn client(&self, name: &str) -> crate::support::Cmd {
        self.client_in(self.project.root(), name)
    }

    fn client_in(&self, root: &std::path::Path, name: &str) -> crate::support::Cmd {
        self.project
            .shoal_at(root, ["run", "--server", &self.url(), "--json"])
            .arg(self.project.out(&format!("{name}.jsonl")))
            .args(self.ca_args())
            .env("SHOAL_TOKEN", TOKEN)
    }

    fn events(&self, name: &str) -> Events {
        Events::read(&self.project.out(&format!("{name}.jsonl")))
    }

    /// Every stored attempt of the run in `name.jsonl`.
    fn stored_attempts(&self, name: &str) -> usize {
        let run_id = self.events(name).run_finished()["run_id"]
            .as_str()
            .expect("run id")
            .to_owned();
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        rt.block_on(async {
            let store = shoal_store::open_store(&self.store_url)
                .await
                .expect("open store");
            store
                .attempts_of_run(&run_id)
                .await
                .expect("attempts")
                .len()
        })
    }

    /// Final results per test of `run_id` in the coordinator's store.
    fn stored_finals(&self, run_id: &str) -> BTreeMap<String, usize> {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        rt.block_on(async {
            let store = shoal_store::open_store(&self.store_url)
                .await
                .expect("open store");
            let attempts = store.attempts_of_run(run_id).await.expect("attempts");
            let mut finals = BTreeMap::new();
            for a in attempts {
                if a.final_status.is_some() {
                    *finals.entry(a.test).or_insert(0) += 1;
                }
            }
            finals
        })
    }

    /// Asserts that the run's 30 tests each have exactly one final result,
    /// in the client's events and in the store.
    #[track_caller]
    fn assert_complete(&self, name: &str, out: &Output) {
        out.assert_code(0);
        let events = self.events(name);
        let finished = events.run_finished();
        assert_eq!(finished["counts"]["passed"], 30, "{}", out.dump());
        let finals = events.finals();
        assert_eq!(finals.len(), 30, "one final event per test");
        let run_id = finished["run_id"].as_str().expect("run id").to_owned();
        let stored = self.stored_finals(&run_id);
        assert_eq!(
            stored.len(),
            30,
            "every test has a stored final: {stored:?}"
        );
        assert!(
            stored.values().all(|&n| n == 1),
            "a test has more than one stored final result: {stored:?}"
        );
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for w in &mut self.workers {
            w.kill();
        }
        if let Some(c) = &mut self.coordinator {
            c.kill();
        }
        if let Some((admin, name)) = &self.pg_db {
            let _ = Command::new("psql")
                .args([
                    admin.as_str(),
                    "-qc",
                    &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
                ])
                .output();
        }
    }
}

fn signal(pid: i32, sig: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
}

/// Waits until the client's event file has at least `n` final results.
fn wait_for_finals(c: &Cluster, name: &str, n: usize) {
    let path = c.project.out(&format!("{name}.jsonl"));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let count = std::fs::read_to_string(&path)
            .map(|s| {
                s.lines()
                    .filter(|l| l.contains("\"final_status\":\""))
                    .count()
            })
            .unwrap_or(0);
        if count >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the run did not reach {n} results"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

per_store! {
    fn a_run_on_two_workers_completes_with_every_result_recorded_once(backend) {
        let mut c = Cluster::new(backend, "10s");
        c.start_worker("w1", 2);
        c.start_worker("w2", 2);
        let out = c.client("run").run();
        c.assert_complete("run", &out);
        let workers: std::collections::BTreeSet<String> = c
            .events("run")
            .finals()
            .into_iter()
            .map(|a| a.worker)
            .collect();
        assert_eq!(workers.len(), 2, "both workers ran tests: {workers:?}");
    }
}

per_store! {
    fn a_worker_killed_mid_batch_loses_no_test(backend) {
        let mut c = Cluster::new(backend, "2s");
        let doomed = c.start_worker("doomed", 2);
        let client = c.client("run").spawn();
        wait_for_finals(&c, "run", 3);
        signal(c.worker_pid(doomed), nix::sys::signal::Signal::SIGKILL);
        c.start_worker("survivor", 2);
        let out = finish(client);
        c.assert_complete("run", &out);
    }
}

per_store! {
    fn the_coordinator_killed_and_restarted_resumes_the_run(backend) {
        let mut c = Cluster::new(backend, "3s");
        c.start_worker("w1", 2);
        let client = c.client("run").spawn();
        wait_for_finals(&c, "run", 5);
        c.kill_coordinator();
        std::thread::sleep(Duration::from_millis(500));
        c.start_coordinator();
        let out = finish(client);
        c.assert_complete("run", &out);
        let notices = c.events("run").notices();
        assert!(
            notices
                .iter()
                .any(|(_, m)| m.contains("coordinator restarted")),
            "the client heard of the restart: {notices:?}"
        );
        // What the worker finished while the coordinator was down was
        // accepted on the leases the new coordinator took over, not rerun.
        assert_eq!(c.stored_attempts("run"), 30);
        let ran = std::fs::read_to_string(c.project.out("executions.txt")).expect("executions");
        assert_eq!(ran.lines().count(), 30, "no test ran twice:\n{ran}");
    }
}

per_store! {
    fn a_cut_off_worker_is_replaced_and_its_late_results_are_fenced(backend) {
        let mut c = Cluster::new(backend, "2s");
        let cut = c.start_worker("cut", 1);
        let client = c.client("run").spawn();
        wait_for_finals(&c, "run", 2);
        // Stopped: no heartbeats, no reports, as if the network were cut.
        signal(c.worker_pid(cut), nix::sys::signal::Signal::SIGSTOP);
        c.start_worker("other", 2);
        std::thread::sleep(Duration::from_secs(4));
        // Healed: it sends what it finished meanwhile, on expired leases.
        signal(c.worker_pid(cut), nix::sys::signal::Signal::SIGCONT);
        let out = finish(client);
        c.assert_complete("run", &out);
        std::thread::sleep(Duration::from_secs(1));
        c.workers[cut].kill();
        let log = c.workers[cut].stderr();
        assert!(
            log.contains("stopping lease"),
            "the healed worker was told its lease is gone:\n{log}"
        );
    }
}

per_store! {
    fn two_runs_at_once_both_progress_and_do_not_share_directories(backend) {
        let mut c = Cluster::new(backend, "10s");
        let second = c.project.out("second-project");
        copy_dir(c.project.root(), &second);
        let a = c.client("a").spawn();
        let b = c.client_in(&second, "b").spawn();
        // Both runs queued before any worker comes, so that fair share, not
        // which client was quicker to discover and upload, decides the
        // order (under load one client could otherwise finish first).
        wait_for_line(&c, "a", "run_started");
        wait_for_line(&c, "b", "run_started");
        c.start_worker("w1", 2);
        c.start_worker("w2", 2);
        let (a, b) = (finish(a), finish(b));
        c.assert_complete("a", &a);
        c.assert_complete("b", &b);
        // Fair share: each run had results before the other finished.
        let (ea, eb) = (c.events("a"), c.events("b"));
        let first = |e: &Events| e.finals().iter().map(|a| a.end).fold(f64::MAX, f64::min);
        let last = |e: &Events| e.finals().iter().map(|a| a.end).fold(0.0, f64::max);
        // Each run ran in its own directory on every worker.
        let ran = std::fs::read_to_string(c.project.out("executions.txt")).expect("executions");
        let run_of = |e: &Events| e.run_finished()["run_id"].as_str().expect("id").to_owned();
        let (ra, rb) = (run_of(&ea), run_of(&eb));
        for line in ran.lines() {
            let cwd = line.split(' ').next().unwrap_or_default();
            assert!(
                cwd.contains(&ra) != cwd.contains(&rb),
                "a test ran outside its run's own directory: {line}"
            );
        }
        assert_eq!(ran.lines().count(), 60);
        assert!(
            first(&ea) < last(&eb) && first(&eb) < last(&ea),
            "neither run starved"
        );
    }
}

per_store! {
    fn a_bad_token_is_refused_with_a_clear_error(backend) {
        let c = Cluster::new(backend, "10s");
        let out = c
            .project
            .shoal(["run", "--server", &c.url()])
            .env("SHOAL_TOKEN", "wrong-token")
            .run();
        out.assert_code(3);
        assert!(out.stderr.contains("token"), "{}", out.dump());
        assert!(!out.stderr.contains(TOKEN) && !out.stderr.contains("wrong-token"));
        let out = c
            .project
            .shoal(["run", "--server", &c.url()])
            .env_remove("SHOAL_TOKEN")
            .run();
        out.assert_code(3);
        // A worker with a wrong token says so and keeps trying.
        let mut worker = c
            .project
            .shoal(["worker", "--server", &c.url(), "--cache-dir"])
            .arg(c.project.out("bad-worker"))
            .env("SHOAL_TOKEN", "wrong-token")
            .spawn();
        std::thread::sleep(Duration::from_secs(3));
        assert!(
            worker.wait_for(Duration::ZERO).is_none(),
            "it keeps retrying"
        );
        worker.kill();
        let log = worker.stderr();
        assert!(log.contains("token"), "the worker said why:\n{log}");
        assert!(!log.contains("wrong-token"), "the token is not logged");
    }
}

fn finish(mut r: Running) -> Output {
    let status = r.wait_for(Duration::from_secs(120)).unwrap_or_else(|| {
        r.kill();
        panic!("the client did not finish:\n{}", r.stderr())
    });
    Output::from_parts(status, r.stdout(), r.stderr())
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            if entry.file_name() != ".shoal" {
                copy_dir(&entry.path(), &target);
            }
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// The test processes (pytest) this cluster's workers started, still alive.
fn live_tests(c: &Cluster) -> Vec<String> {
    c.project
        .live_processes()
        .into_iter()
        .filter(|p| p.contains("pytest") || p.contains("python"))
        .collect()
}

/// Waits until the events file of `name` has a line containing `needle`;
/// returns that line.
fn wait_for_line(c: &Cluster, name: &str, needle: &str) -> String {
    let path = c.project.out(&format!("{name}.jsonl"));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(line) = std::fs::read_to_string(&path)
            .ok()
            .and_then(|s| s.lines().find(|l| l.contains(needle)).map(str::to_owned))
        {
            return line;
        }
        assert!(Instant::now() < deadline, "no {needle} in {name}.jsonl");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn cancelling_a_run_kills_its_tests_on_every_worker_within_seconds() {
    let mut c = Cluster::new(&Backend::Sqlite, "10s");
    c.start_worker_with("w1", 2, "60");
    c.start_worker_with("w2", 2, "60");
    // `shoal cancel RUN`.
    let client = c.client("cancelled").spawn();
    let started = wait_for_line(&c, "cancelled", "\"run_started\"");
    let run_id = serde_json::from_str::<serde_json::Value>(&started).expect("json")["run_id"]
        .as_str()
        .expect("run id")
        .to_owned();
    wait_for_line(&c, "cancelled", "\"attempt_started\"");
    let deadline = Instant::now() + Duration::from_secs(30);
    while live_tests(&c).len() < 4 {
        assert!(
            Instant::now() < deadline,
            "tests did not start on both workers"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let t0 = Instant::now();
    c.project
        .shoal(["cancel", &run_id, "--server", &c.url()])
        .env("SHOAL_TOKEN", TOKEN)
        .run()
        .assert_code(0);
    let out = finish(client);
    out.assert_code(130);
    while !live_tests(&c).is_empty() {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "tests still running {:?} after the cancel: {:?}",
            t0.elapsed(),
            live_tests(&c)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let finished = c.events("cancelled");
    assert_eq!(finished.run_finished()["interrupted"], true);

    // Ctrl-C of the client does the same.
    let mut client = c.client("interrupted").spawn();
    wait_for_line(&c, "interrupted", "\"attempt_started\"");
    while live_tests(&c).len() < 4 {
        assert!(
            Instant::now() < deadline + Duration::from_secs(30),
            "tests did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let t0 = Instant::now();
    signal(client.pid(), nix::sys::signal::Signal::SIGINT);
    let status = client
        .wait_for(Duration::from_secs(30))
        .expect("the client exits");
    assert_eq!(status.code(), Some(130), "{}", client.stderr());
    while !live_tests(&c).is_empty() {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "tests outlived Ctrl-C"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_worker_started_before_its_coordinator_says_so_and_joins_when_it_comes() {
    let mut c = Cluster::new(&Backend::Sqlite, "10s");
    c.kill_coordinator();
    let w = c.start_worker("early", 2);
    std::thread::sleep(Duration::from_secs(2));
    c.start_coordinator();
    let out = c.client("run").run();
    c.assert_complete("run", &out);
    c.workers[w].kill();
    let log = c.workers[w].stderr();
    assert!(
        log.contains("cannot reach the coordinator"),
        "the worker said why it waited:\n{log}"
    );
    assert!(!log.contains(TOKEN), "the token never reaches the logs");
}

#[test]
fn a_worker_sent_sigterm_finishes_its_batch_and_leaves() {
    let mut c = Cluster::new(&Backend::Sqlite, "10s");
    let leaving = c.start_worker("leaving", 2);
    let client = c.client("run").spawn();
    wait_for_finals(&c, "run", 2);
    let t0 = Instant::now();
    signal(c.worker_pid(leaving), nix::sys::signal::Signal::SIGTERM);
    c.start_worker("staying", 2);
    let status = c.workers[leaving]
        .wait_for(Duration::from_secs(60))
        .expect("the worker drains and exits");
    assert!(status.success(), "drained worker exit: {status}");
    let out = finish(client);
    c.assert_complete("run", &out);
    // Its batch finished (no requeue waiting for a lease timeout).
    assert!(t0.elapsed() < Duration::from_secs(30));
    assert!(c.workers[leaving].stderr().contains("shutting down"));
}

/// A network namespace with a veth link to the host: `host_ip` on the host
/// side, `ns_ip` inside. Cutting the host side's link partitions it.
struct NetNs {
    name: String,
    host_if: String,
    host_ip: String,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl NetNs {
    fn create() -> Result<NetNs, String> {
        // Unique per process and per namespace in it (a test's store
        // variants run at once in one process).
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let k = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let n = (std::process::id() * 4 + k) % 60_000 + 1;
        let (a, b) = (n / 250 % 250, n % 250);
        let name = format!("shoal-e2e-{n}");
        let (host_if, ns_if) = (format!("sh{n}h"), format!("sh{n}n"));
        let host_ip = format!("10.213.{a}.{}", 1 + (b % 63) * 4);
        let ns_ip = format!("10.213.{a}.{}", 2 + (b % 63) * 4);
        ip(&["netns", "add", &name])?;
        let ns = NetNs {
            name: name.clone(),
            host_if: host_if.clone(),
            host_ip: host_ip.clone(),
        };
        ip(&[
            "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if,
        ])?;
        ip(&["link", "set", &ns_if, "netns", &name])?;
        ip(&["addr", "add", &format!("{host_ip}/30"), "dev", &host_if])?;
        ip(&["link", "set", &host_if, "up"])?;
        ip(&[
            "netns",
            "exec",
            &name,
            "ip",
            "addr",
            "add",
            &format!("{ns_ip}/30"),
            "dev",
            &ns_if,
        ])?;
        ip(&["netns", "exec", &name, "ip", "link", "set", &ns_if, "up"])?;
        ip(&["netns", "exec", &name, "ip", "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    fn cut(&self) {
        ip(&["link", "set", &self.host_if, "down"]).expect("cut the link");
    }

    fn heal(&self) {
        ip(&["link", "set", &self.host_if, "up"]).expect("restore the link");
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = ip(&["link", "del", &self.host_if]);
        let _ = ip(&["netns", "del", &self.name]);
    }
}

mod a_worker_in_a_network_namespace_partitioned_and_healed_is_fenced {
    use super::*;

    #[test]
    #[cfg_attr(
        not(shoal_has_netns),
        ignore = "needs network namespaces (root and `ip netns`): set SHOAL_TEST_NETNS=1 (scripts/test does where it can)"
    )]
    fn sqlite() {
        partition_in_a_namespace(&Backend::Sqlite);
    }

    #[test]
    #[cfg_attr(
        not(all(shoal_has_netns, shoal_has_postgres)),
        ignore = "needs network namespaces and PostgreSQL: set SHOAL_TEST_NETNS=1 and SHOAL_TEST_POSTGRES_URL (scripts/test does where it can)"
    )]
    fn postgres() {
        partition_in_a_namespace(&super::postgres());
    }
}

fn partition_in_a_namespace(backend: &Backend) {
    // Runs only where the build was told namespaces work (shoal_has_netns).
    let ns = NetNs::create().unwrap_or_else(|e| {
        panic!("SHOAL_TEST_NETNS offered network namespaces, but one cannot be created: {e}")
    });
    let mut c = Cluster::listening_on(backend, "2s", &ns.host_ip);
    let cut = c.start_worker_in(&ns.name, "netns", 1);
    let client = c.client("run").spawn();
    wait_for_finals(&c, "run", 2);
    ns.cut();
    c.start_worker("other", 2);
    std::thread::sleep(Duration::from_secs(4));
    ns.heal();
    let out = finish(client);
    c.assert_complete("run", &out);
    std::thread::sleep(Duration::from_secs(3));
    c.workers[cut].kill();
    let log = c.workers[cut].stderr();
    assert!(
        log.contains("stopping lease"),
        "after the partition healed, the worker learned its lease was gone:\n{log}"
    );
}

#[test]
fn a_run_over_tls_with_a_private_ca() {
    let mut c = Cluster::with_tls(&Backend::Sqlite);
    c.start_worker("tls", 2);
    let out = c.client("run").run();
    c.assert_complete("run", &out);
    // Without the CA the client refuses the coordinator's certificate.
    let out = c
        .project
        .shoal(["run", "--server", &c.url()])
        .env("SHOAL_TOKEN", TOKEN)
        .run();
    out.assert_code(3);
}

/// What each test ended as: (final status, outcome).
fn final_statuses(e: &Events) -> BTreeMap<String, (String, String)> {
    e.finals()
        .into_iter()
        .map(|a| (a.test, (a.final_status.unwrap_or_default(), a.outcome)))
        .collect()
}

#[test]
fn a_remote_run_reports_what_a_local_run_reports() {
    let mut c = Cluster::of_fixture("pytest-project", &Backend::Sqlite, "10s", "127.0.0.1");
    c.start_worker("w1", 2);
    let local = c
        .project
        .shoal(["run", "-j", "2", "--json"])
        .arg(c.project.out("local.jsonl"))
        .run();
    local.assert_code(1);
    let remote = c.client("remote").run();
    remote.assert_code(1);
    let (l, r) = (
        final_statuses(&c.events("local")),
        final_statuses(&c.events("remote")),
    );
    assert!(!l.is_empty());
    assert_eq!(r, l, "remote and local runs agree test for test");
    // The summary line is the same kind of line as locally.
    assert!(remote.stdout.contains("Summary:"), "{}", remote.dump());
    // A second run uploads nothing new: the coordinator has every blob.
    let again = c.client("again").run();
    again.assert_code(1);
    assert!(
        again.stderr.contains("uploaded 0 of"),
        "only missing blobs are uploaded:\n{}",
        again.stderr
    );
}

/// A test that kills the worker running it: requeued with every new
/// worker, then reported as a crash, not retried forever.
#[test]
fn a_test_that_kills_its_worker_is_a_crash_after_a_few_tries() {
    let mut c = Cluster::new(&Backend::Sqlite, "1s");
    c.project.write(
        "tests/test_killer.py",
        "import os, signal\n\n\ndef test_kills_its_worker():\n    pid = os.getppid()\n    while pid > 1:\n        cmd = open(f'/proc/{pid}/cmdline', 'rb').read().split(b'\\0')\n        if cmd[0].endswith(b'shoal') and b'worker' in cmd:\n            os.kill(pid, signal.SIGKILL)\n        pid = int(open(f'/proc/{pid}/stat').read().rsplit(')', 1)[1].split()[1])\n",
    );
    c.start_worker("w0", 2);
    let mut client = c.client("run").spawn();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut started = 1;
    let status = loop {
        if let Some(status) = client.wait_for(Duration::from_millis(200)) {
            break status;
        }
        // Replace dead workers, as a supervisor would.
        let dead = c
            .workers
            .iter_mut()
            .filter_map(|w| w.wait_for(Duration::ZERO))
            .count();
        let alive = c.workers.len() - dead;
        if alive == 0 && started < 8 {
            c.start_worker(&format!("w{started}"), 2);
            started += 1;
        }
        assert!(Instant::now() < deadline, "the run did not end");
    };
    assert_eq!(status.code(), Some(1), "{}", client.stderr());
    let events = c.events("run");
    let killer = events
        .finals()
        .into_iter()
        .find(|a| a.test.ends_with("test_kills_its_worker"))
        .expect("the killer has a final result");
    assert_eq!(killer.outcome, "crash", "{killer:?}");
    assert!(
        killer
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("tries"),
        "{killer:?}"
    );
    assert_eq!(events.run_finished()["counts"]["passed"], 30);
    assert!(
        started >= 4,
        "the test was retried on new workers ({started})"
    );
}

/// A suite with an `environment` on a remote worker: the worker starts the
/// slot containers on its own engine and removes them when the run ends.
#[test]
#[cfg_attr(
    not(shoal_has_docker),
    ignore = "needs a Docker engine and the test images: set SHOAL_TEST_DOCKER=1 (scripts/test does, after scripts/test-images.sh)"
)]
fn a_container_suite_runs_in_containers_on_a_remote_worker() {
    if !crate::containers::docker_ready() {
        return;
    }
    let mut c = Cluster::of_fixture("container-project", &Backend::Sqlite, "10s", "127.0.0.1");
    c.start_worker("w1", 2);
    let out = c.client("remote").run();
    out.assert_code(1);
    let events = c.events("remote");
    let finals = final_statuses(&events);
    let status = |name: &str| {
        finals
            .get(&format!("tests/test_in_container.py::{name}"))
            .map(|(s, _)| s.clone())
    };
    assert_eq!(
        status("test_runs_in_a_container").as_deref(),
        Some("passed"),
        "{}",
        out.dump()
    );
    assert_eq!(
        status("test_environment_reaches_the_test").as_deref(),
        Some("passed")
    );
    assert_eq!(status("test_fails_on_purpose").as_deref(), Some("failed"));
    assert!(events.finals().iter().all(|a| a.worker == "w1"));
    let run_id = events.run_finished()["run_id"]
        .as_str()
        .expect("run id")
        .to_owned();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !crate::containers::containers_of(&run_id).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the worker removes the run's containers once the run is over"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The coordinator knows nothing of quarantine (it gets no list): the
/// client applies its own to the results, so a quarantined failure does
/// not fail a remote run either, and an unlisted one still does.
#[test]
fn a_remote_run_applies_the_clients_quarantine() {
    const QUARANTINED: &str = "tests/test_outcomes.py::test_fail_assert";
    let mut c = Cluster::of_fixture("pytest-project", &Backend::Sqlite, "10s", "127.0.0.1");
    c.project.write(
        "shoal.toml",
        &format!(
            "[suites.pytest]\nadapter = \"pytest\"\n\n[quarantine]\ntests = [\"pytest::{QUARANTINED}\"]\n"
        ),
    );
    c.start_worker("w1", 2);
    let out = c
        .client("quarantined")
        .args([QUARANTINED, "tests/test_outcomes.py::test_pass"])
        .run();
    out.assert_code(0);
    let events = c.events("quarantined");
    let failed = events
        .of_type("attempt_finished")
        .find(|e| e["test"] == QUARANTINED)
        .expect("the quarantined test ran");
    assert_eq!(failed["final_status"], "failed", "{failed}");
    assert_eq!(failed["quarantined"], true, "{failed}");
    let fin = events.run_finished();
    assert_eq!(fin["quarantined"]["failed"], 1, "{fin}");
    assert_eq!(fin["exit_code"], 0, "{fin}");
    assert!(
        out.stdout.contains("1 failed (1 quarantined)"),
        "{}",
        out.dump()
    );

    let out = c
        .client("unlisted")
        .args([QUARANTINED, "tests/test_outcomes.py::test_fail_exception"])
        .run();
    out.assert_code(1);
    assert_eq!(c.events("unlisted").run_finished()["exit_code"], 1);
}

/// A remote run of one directory collects only it: on the client, in the
/// worker's discovery and in the worker's long-lived runners.
#[test]
fn a_remote_directory_run_imports_nothing_outside_the_directory() {
    let mut c = Cluster::of_fixture("scoped-project", &Backend::Sqlite, "10s", "127.0.0.1");
    let log = c.project.out("imports.log");
    let worker = c
        .project
        .shoal(std::iter::empty::<&str>())
        .env("SCOPED_IMPORT_LOG", &log);
    c.launch_worker(worker, "w1", 2, "0");
    let out = c
        .client("remote")
        .arg("scopedpkg/alpha")
        .env("SCOPED_IMPORT_LOG", &log)
        .run();
    out.assert_code(0);
    let events = c.events("remote");
    assert_eq!(events.finals().len(), 3, "{}", out.dump());
    assert!(events.finals().iter().all(|a| a.outcome == "pass"));
    assert_eq!(crate::selection::imported(&log), ["alpha"]);
    // Both sides imported it: the client to list, the worker to run.
    let pids: std::collections::HashSet<String> = std::fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1).map(str::to_owned))
        .collect();
    assert!(
        pids.len() >= 2,
        "imports by the client and the worker: {pids:?}"
    );
}

/// The host name as `shoal worker` reads it for its default name.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .expect("read the host name")
}

/// Waits until the lock file of instance `k` of `cache` names process `pid`
/// (the worker has taken its instance), and returns the file's text.
fn wait_for_instance(cache: &std::path::Path, k: u32, pid: i32) -> String {
    let lock = cache.join(format!("instances/{k}/lock"));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(&lock).unwrap_or_default();
        if text.lines().any(|l| l == format!("pid={pid}")) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "process {pid} did not take instance {k} of {}: {text:?}",
            cache.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

per_store! {
    /// Issue 11: three `shoal worker --server URL` on one host with default
    /// options shared the host name and `~/.cache/shoal-worker`, materialized
    /// the same run directory over each other, and every test crashed
    /// (`getcwd: cannot access parent directories`). Each now takes its own
    /// instance of the shared cache directory and its own default name.
    fn three_workers_with_default_options_on_one_host_run_a_suite_without_clashing(backend) {
        let mut c = Cluster::new(backend, "10s");
        let home = c.project.out("home");
        std::fs::create_dir_all(&home).expect("create HOME");
        let cache = home.join(".cache/shoal-worker");
        let pids: Vec<i32> = (0..3)
            .map(|_| {
                let w = c.start_default_worker(&home, 1);
                c.worker_pid(w)
            })
            .collect();
        let mut taken = BTreeMap::new();
        for k in 0..3u32 {
            let deadline = Instant::now() + Duration::from_secs(30);
            let holder = loop {
                let text = std::fs::read_to_string(cache.join(format!("instances/{k}/lock")))
                    .unwrap_or_default();
                if let Some(pid) = pids.iter().find(|p| text.contains(&format!("pid={p}\n"))) {
                    break (*pid, text);
                }
                assert!(Instant::now() < deadline, "instance {k} was not taken");
                std::thread::sleep(Duration::from_millis(50));
            };
            taken.insert(k, holder);
        }
        let holders: std::collections::BTreeSet<i32> = taken.values().map(|(p, _)| *p).collect();
        assert_eq!(holders.len(), 3, "one instance per worker: {taken:?}");

        let out = c.client("run").run();
        c.assert_complete("run", &out);

        // Each ran in its own instance's run directory...
        let ran = std::fs::read_to_string(c.project.out("executions.txt")).expect("executions");
        let instances_dir = cache.join("instances");
        for line in ran.lines() {
            let cwd = line.split(' ').next().unwrap_or_default();
            assert!(
                cwd.starts_with(instances_dir.to_str().expect("utf-8 path")),
                "a test ran outside an instance's run directory: {line}"
            );
        }
        // ...under its own name: the host's, then <host>-1, <host>-2.
        let host = host_name();
        let expected: std::collections::BTreeSet<String> =
            [host.clone(), format!("{host}-1"), format!("{host}-2")].into();
        let shown: std::collections::BTreeSet<String> = c
            .events("run")
            .finals()
            .into_iter()
            .map(|a| a.worker)
            .collect();
        assert!(
            shown.is_subset(&expected) && shown.len() >= 2,
            "workers are told apart by their default names: {shown:?}"
        );
        for (k, name) in [
            (0, host.clone()),
            (1, format!("{host}-1")),
            (2, format!("{host}-2")),
        ] {
            assert!(
                taken[&k].1.contains(&format!("name={name}\n")),
                "instance {k} is named {name}: {:?}",
                taken[&k].1
            );
        }
    }
}

/// Two workers given the same `--name` on one cache directory: the second
/// is refused at start (exit 2), naming the live holder, instead of
/// sharing the name (and so SHOAL_WORKER) with it. Only the workers' own
/// cache directory is involved, not the store: SQLite alone.
#[test]
fn a_second_worker_with_a_taken_name_on_the_same_cache_directory_is_refused() {
    let mut c = Cluster::new(&Backend::Sqlite, "10s");
    let cache = c.project.out("shared-cache");
    let first = c.worker_cmd("dup", &cache).spawn();
    let pid = first.pid();
    c.workers.push(first);
    let lock = wait_for_instance(&cache, 0, pid);
    assert!(lock.contains("name=dup\n"), "{lock}");

    let refused = c.worker_cmd("dup", &cache).run();
    refused.assert_code(2);
    let err = &refused.stderr;
    for part in [
        "`dup`".to_owned(),
        format!("pid {pid}"),
        cache.join("instances/0").display().to_string(),
        "--name".to_owned(),
    ] {
        assert!(err.contains(&part), "the error names {part}:\n{err}");
    }

    // Another name on the same cache directory is fine: the next instance.
    let other = c.worker_cmd("other", &cache).spawn();
    let other_pid = other.pid();
    c.workers.push(other);
    wait_for_instance(&cache, 1, other_pid);
    let out = c.client("run").run();
    c.assert_complete("run", &out);
}

per_store! {
    /// A worker killed (SIGKILL) and restarted at once with the same --name
    /// and cache directory: the kernel released its instance lock, so it takes
    /// the same instance back; the coordinator, which still counts the old
    /// registration as live (heartbeat within the lease timeout), accepts the
    /// new process and shows it as `NAME#2` rather than refusing it.
    fn a_worker_restarted_after_sigkill_with_its_name_is_accepted_at_once(backend) {
        // A long lease timeout keeps the dead registration live throughout.
        let mut c = Cluster::new(backend, "30s");
        let cache = c.project.out("restart-cache");
        let first = c.worker_cmd("steady", &cache).spawn();
        c.workers.push(first);
        let out = c.client("before").run();
        c.assert_complete("before", &out);

        signal(c.worker_pid(0), nix::sys::signal::Signal::SIGKILL);
        let _ = c.workers[0].wait_for(Duration::from_secs(10));
        let again = c.worker_cmd("steady", &cache).spawn();
        let pid = again.pid();
        c.workers.push(again);
        wait_for_instance(&cache, 0, pid);

        let out = c.client("after").run();
        c.assert_complete("after", &out);
        let shown: std::collections::BTreeSet<String> = c
            .events("after")
            .finals()
            .into_iter()
            .map(|a| a.worker)
            .collect();
        assert_eq!(
            shown,
            ["steady#2".to_owned()].into(),
            "the restarted worker is accepted and told apart from its old registration"
        );
        c.workers[1].kill();
        let log = c.workers[1].stderr();
        assert!(log.contains("instance 0"), "{log}");
        assert!(log.contains("steady#2"), "{log}");
    }
}
