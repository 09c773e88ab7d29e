//! `shoal bisect-flake TEST --good REV --bad REV`: the first commit at
//! which a test became flaky.
//!
//! A flaky test passes most of the time, so one passing run says little
//! about a commit. The bisection first measures the failure rate at the bad
//! end (running the test until it has failed [`FAILURES_AT_BAD`] times, or
//! `--max-runs` times), then runs the test at each candidate commit
//! `n` times, with `n` the sample size at which a test failing at that rate
//! fails at least once with the asked confidence
//! (`shoal_stats::sample_size_for`). A commit with a failure is flaky; one
//! without is taken as good, which is wrong with probability at most
//! `1 - confidence` per step if the rate did not change in between. Each
//! candidate is checked out in a temporary `git worktree`, so the user's
//! tree is never touched; every run is recorded in the history store with
//! its commit.

use crate::backend::Backend;
use crate::exit_code::ShoalExitCode;
use crate::stress::Collector;
use clap::Args;
use shoal_core::TestId;
use shoal_runner::{RunRequest, Selection};
use std::path::{Path, PathBuf};
use tokio::process::Command;

/// Failures to see at the bad end before its rate is taken as measured.
const FAILURES_AT_BAD: u64 = 3;

#[derive(Debug, Args)]
pub(crate) struct BisectFlakeArgs {
    /// The test: a substring of its name that selects exactly one test.
    test: String,
    /// A commit at which the test is not flaky.
    #[arg(long, value_name = "REV")]
    good: String,
    /// A later commit at which it is.
    #[arg(long, value_name = "REV")]
    bad: String,
    /// Runs at the bad end at most, looking for failures to measure the
    /// rate from.
    #[arg(long, value_name = "N", default_value_t = 2000)]
    max_runs: u64,
    /// Probability that a flaky commit shows a failure in its sample.
    #[arg(long, value_name = "P", default_value_t = 0.95)]
    confidence: f64,
    /// Concurrent slots [default: logical cores].
    #[arg(short = 'j', long = "slots", env = "SHOAL_SLOTS", value_name = "N")]
    slots: Option<usize>,
    /// Run the samples on a coordinator (`--server URL`) instead of here.
    #[command(flatten)]
    remote: crate::RemoteArgs,
}

/// What one commit's sample showed.
#[derive(Debug, Clone)]
struct Evidence {
    commit: String,
    subject: String,
    failures: u64,
    runs: u64,
}

impl Evidence {
    fn flaky(&self) -> bool {
        self.failures > 0
    }
}

/// Where the samples run and are recorded.
struct Bench {
    repo: PathBuf,
    /// The project's directory relative to the repository's top level.
    project_dir: PathBuf,
    state_dir: PathBuf,
    backend: Backend,
    slots: usize,
    test: String,
    scratch: tempfile::TempDir,
}

pub(crate) async fn bisect_flake_cmd(root: &Path, args: BisectFlakeArgs) -> ShoalExitCode {
    if !(0.5..1.0).contains(&args.confidence) {
        return crate::fail(
            ShoalExitCode::Usage,
            format!(
                "--confidence {} must be at least 0.5 and below 1",
                args.confidence
            ),
        );
    }
    match bisect(root, &args).await {
        Ok(code) => code,
        Err((code, message)) => crate::fail(code, message),
    }
}

use crate::error::Failure;

fn usage(message: impl Into<String>) -> Failure {
    (ShoalExitCode::Usage, message.into())
}

async fn bisect(root: &Path, args: &BisectFlakeArgs) -> Result<ShoalExitCode, Failure> {
    let config = crate::load(root).map_err(|code| (code, "no usable shoal.toml".to_owned()))?;
    let repo = PathBuf::from(git(root, &["rev-parse", "--show-toplevel"]).await?.trim());
    let root = std::fs::canonicalize(root).map_err(|e| usage(crate::error::chain(&e)))?;
    let project_dir = root
        .strip_prefix(&repo)
        .map_err(|_| usage(format!("{} is not inside its repository", root.display())))?
        .to_owned();
    let good = rev(root.as_path(), &args.good).await?;
    let bad = rev(root.as_path(), &args.bad).await?;
    // Candidates: the commits after `good` up to `bad`, oldest first, on
    // the first-parent line (a merge is judged as one step).
    let list = git(
        &root,
        &[
            "rev-list",
            "--first-parent",
            "--reverse",
            &format!("{good}..{bad}"),
        ],
    )
    .await?;
    let candidates: Vec<String> = list.lines().map(str::to_owned).collect();
    if candidates.last() != Some(&bad) {
        return Err(usage(format!(
            "{} is not an ancestor of {} on its first-parent line",
            args.good, args.bad
        )));
    }
    let (state_dir, store) = crate::open_state(&root).await?;
    let bench = Bench {
        repo,
        project_dir,
        state_dir,
        backend: Backend::new(args.remote.remote(), store),
        slots: crate::resolve_slots(args.slots, &config),
        test: args.test.clone(),
        scratch: tempfile::Builder::new()
            .prefix("shoal-bisect-")
            .tempdir()
            .map_err(|e| crate::error::failure(ShoalExitCode::Infrastructure, &e))?,
    };

    eprintln!(
        "Bisecting {} commits between {} and {} for when `{}` became flaky",
        candidates.len(),
        short(&good),
        short(&bad),
        args.test
    );
    // The rate at the bad end decides every later sample size.
    let at_bad = bench.sample_until_failures(&bad, args.max_runs).await?;
    report(&at_bad);
    if !at_bad.flaky() {
        return Err(usage(format!(
            "`{}` did not fail in {} runs at {}: it is not measurably flaky there",
            args.test,
            at_bad.runs,
            short(&bad)
        )));
    }
    let rate = at_bad.failures as f64 / at_bad.runs as f64;
    let n = shoal_stats::sample_size_for(rate, args.confidence);
    eprintln!(
        "failure rate at {}: {}/{} = {:.2}%; {n} runs per commit show a failure of a commit that flaky with probability {:.0}%",
        short(&bad),
        at_bad.failures,
        at_bad.runs,
        rate * 100.0,
        args.confidence * 100.0
    );
    let at_good = bench.sample(&good, n).await?;
    report(&at_good);
    if at_good.flaky() {
        return Err(usage(format!(
            "`{}` failed {} of {} runs at --good {}: it is flaky there too",
            args.test,
            at_good.failures,
            at_good.runs,
            short(&good)
        )));
    }
    // Invariant: candidates[..lo] are good, candidates[hi] is flaky.
    let (mut lo, mut hi) = (0usize, candidates.len() - 1);
    let mut evidence = vec![at_good, at_bad];
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        let e = bench.sample(&candidates[mid], n).await?;
        report(&e);
        if e.flaky() {
            hi = mid;
        } else {
            lo = mid + 1;
        }
        evidence.push(e);
    }
    let first = &candidates[hi];
    let subject = subject(&root, first).await;
    println!("first flaky commit: {first} {subject}");
    println!(
        "evidence ({n} runs per commit, {:.0}% confidence per good verdict):",
        args.confidence * 100.0
    );
    evidence.sort_by_key(|e| candidates.iter().position(|c| *c == e.commit));
    for e in &evidence {
        println!(
            "  {} {:>5}/{:<5} {:<6} {}",
            short(&e.commit),
            e.failures,
            e.runs,
            if e.flaky() { "flaky" } else { "good" },
            e.subject
        );
    }
    Ok(ShoalExitCode::Success)
}

fn report(e: &Evidence) {
    eprintln!(
        "  {} {}/{} failed: {}",
        short(&e.commit),
        e.failures,
        e.runs,
        if e.flaky() { "flaky" } else { "good" }
    );
}

impl Bench {
    /// Runs the test `n` times at `commit`.
    async fn sample(&self, commit: &str, n: u64) -> Result<Evidence, Failure> {
        let tree = self.checkout(commit).await?;
        let result = self.run_at(&tree, n).await;
        self.remove(&tree).await;
        let (failures, runs) = result?;
        Ok(Evidence {
            commit: commit.to_owned(),
            subject: subject(&self.repo, commit).await,
            failures,
            runs,
        })
    }

    /// Runs the test at `commit` in growing rounds until it failed
    /// [`FAILURES_AT_BAD`] times or ran `max_runs` times.
    async fn sample_until_failures(
        &self,
        commit: &str,
        max_runs: u64,
    ) -> Result<Evidence, Failure> {
        let tree = self.checkout(commit).await?;
        let (mut failures, mut runs, mut chunk) = (0, 0, 20u64);
        let mut outcome = Ok(());
        while failures < FAILURES_AT_BAD && runs < max_runs {
            match self.run_at(&tree, chunk.min(max_runs - runs)).await {
                Ok((k, n)) => {
                    failures += k;
                    runs += n;
                }
                Err(e) => {
                    outcome = Err(e);
                    break;
                }
            }
            chunk *= 2;
        }
        self.remove(&tree).await;
        outcome?;
        Ok(Evidence {
            commit: commit.to_owned(),
            subject: subject(&self.repo, commit).await,
            failures,
            runs,
        })
    }

    /// Runs the test `n` times in the project at `tree`: (failures, runs).
    async fn run_at(&self, tree: &Path, n: u64) -> Result<(u64, u64), Failure> {
        let root = tree.join(&self.project_dir);
        let config = shoal_runner::project::load_config(&root)
            .map_err(|e| usage(format!("the project at this commit: {e}")))?;
        let req = RunRequest {
            selection: Selection {
                patterns: vec![self.test.clone()],
                ..Selection::default()
            },
            slots: self.slots,
            repeat: u32::try_from(n).unwrap_or(u32::MAX),
            retries: Some(0),
            state_dir: self.state_dir.clone(),
            worker: "local".into(),
            keep_scratch: false,
            discovery_cache: false,
            shuffle: None,
            kind: shoal_store::KIND_BISECT,
            order: None,
            // Bisection counts failures itself; quarantine only changes exit codes.
            quarantine: Default::default(),
            config,
        };
        let mut collector = Collector::default();
        self.backend
            .run(req, &mut collector, shoal_runner::Cancel::new())
            .await?;
        let tests: std::collections::HashSet<&TestId> =
            collector.seen.iter().map(|(_, id, _)| id).collect();
        if tests.len() > 1 {
            let mut names: Vec<String> = tests.iter().map(|t| t.to_string()).collect();
            names.sort();
            return Err(usage(format!(
                "`{}` selects {} tests, not one: {}",
                self.test,
                names.len(),
                names.join(", ")
            )));
        }
        let failures = collector.seen.iter().filter(|(_, _, f)| *f).count() as u64;
        Ok((failures, collector.seen.len() as u64))
    }

    async fn checkout(&self, commit: &str) -> Result<PathBuf, Failure> {
        let tree = self.scratch.path().join(short(commit));
        let path = tree.to_string_lossy().into_owned();
        git(
            &self.repo,
            &["worktree", "add", "--detach", "--quiet", &path, commit],
        )
        .await?;
        Ok(tree)
    }

    async fn remove(&self, tree: &Path) {
        let path = tree.to_string_lossy().into_owned();
        if let Err((_, e)) = git(&self.repo, &["worktree", "remove", "--force", &path]).await {
            tracing::warn!("could not remove worktree {path}: {e}");
        }
    }
}

/// `git ARGS` in `dir` (argv, no shell); its stdout, or its stderr as error.
async fn git(dir: &Path, args: &[&str]) -> Result<String, Failure> {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|e| usage(format!("cannot run git: {e}")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(usage(format!(
            "git {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// The full sha of `rev`.
async fn rev(dir: &Path, rev: &str) -> Result<String, Failure> {
    let spec = format!("{rev}^{{commit}}");
    Ok(git(dir, &["rev-parse", "--verify", "--quiet", &spec])
        .await
        .map_err(|_| usage(format!("`{rev}` is not a commit")))?
        .trim()
        .to_owned())
}

async fn subject(dir: &Path, commit: &str) -> String {
    git(dir, &["log", "-1", "--format=%s", commit])
        .await
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

fn short(sha: &str) -> &str {
    &sha[..sha.len().min(10)]
}

#[derive(Debug, Args)]
pub(crate) struct BisectOrderArgs {
    /// The test that failed: a substring of its name selecting one test
    /// that failed in the run.
    test: String,
    /// The run in which it failed after other tests ran on its slot.
    #[arg(long, value_name = "RUN_ID")]
    run: String,
    /// Read the run's results from this store (`sqlite://PATH` or
    /// `postgres://...`: a coordinator's, for a run made with `--server`)
    /// instead of the project's `.shoal/history.db`.
    #[arg(long, env = "SHOAL_STORE", value_name = "URL")]
    store: Option<String>,
    /// Replay on a coordinator (`--server URL`) instead of here.
    #[command(flatten)]
    remote: crate::RemoteArgs,
}

/// `shoal bisect-order TEST --run ID`: which earlier test on the same slot
/// made TEST fail.
///
/// The store knows what ran on the failing test's slot before it, in
/// order. Replaying that order in one runner (one slot, kept order) must
/// reproduce the failure, and running TEST alone must not; then halving
/// the prefix (keeping the recorded order) finds the one test whose
/// presence makes TEST fail. That assumes one polluter; with several, the
/// one found is the last needed, and the final check says whether it
/// suffices alone.
pub(crate) async fn bisect_order_cmd(root: &Path, args: BisectOrderArgs) -> ShoalExitCode {
    match bisect_order(root, &args).await {
        Ok(code) => code,
        Err((code, message)) => crate::fail(code, message),
    }
}

async fn bisect_order(root: &Path, args: &BisectOrderArgs) -> Result<ShoalExitCode, Failure> {
    let config = crate::load(root).map_err(|code| (code, "no usable shoal.toml".to_owned()))?;
    let (state_dir, local) = crate::open_state(root).await?;
    let store = match &args.store {
        Some(url) => shoal_store::open_store(url).await.map_err(|e| {
            (
                ShoalExitCode::Infrastructure,
                format!("cannot open the store {url}: {e}"),
            )
        })?,
        None => local.clone(),
    };
    // Which test: among those that failed in the run.
    let rows = store
        .attempts_of_run(&args.run)
        .await
        .map_err(|e| usage(crate::error::chain(&e)))?;
    if rows.is_empty() {
        return Err(usage(format!("run `{}` has no recorded results", args.run)));
    }
    let mut failed: Vec<TestId> = rows
        .iter()
        .filter(|a| a.outcome.is_failure() && a.test.contains(&args.test))
        .map(|a| TestId::new(a.suite.clone(), a.test.clone()))
        .collect();
    failed.sort();
    failed.dedup();
    let victim = match failed.as_slice() {
        [one] => one.clone(),
        [] => {
            return Err(usage(format!(
                "no test matching `{}` failed in run {}",
                args.test, args.run
            )));
        }
        many => {
            return Err(usage(format!(
                "`{}` matches {} tests that failed in run {}: {}",
                args.test,
                many.len(),
                args.run,
                many.iter()
                    .map(|t| t.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
    };
    let order = store
        .slot_order(&args.run, &victim)
        .await
        .map_err(|e| usage(crate::error::chain(&e)))?
        .ok_or_else(|| usage(format!("{victim} did not fail in run {}", args.run)))?;
    let mut before: Vec<TestId> = Vec::new();
    for r in &order.before {
        let id = TestId::new(r.suite.clone(), r.test.clone());
        if id != victim && !before.contains(&id) {
            before.push(id);
        }
    }
    eprintln!(
        "{victim} failed on slot {} of worker {} after {} other tests; replaying that order in one runner",
        order.slot,
        order.worker,
        before.len()
    );
    let replay = Replay {
        config,
        state_dir,
        backend: Backend::new(args.remote.remote(), local),
        victim: victim.clone(),
    };
    if replay.fails_after(&[]).await? {
        return Err(usage(format!(
            "{victim} fails when run alone: it is not an order dependence"
        )));
    }
    if !replay.fails_after(&before).await? {
        return Err(usage(format!(
            "{victim} passes after the recorded order of {} tests: the failure does not follow from the order alone (flaky, or depends on timing or on another slot)",
            before.len()
        )));
    }
    // Invariant: running `candidates` (in recorded order) before the victim
    // makes it fail; the polluter is among them.
    let mut candidates = before.clone();
    let mut steps = 0;
    while candidates.len() > 1 {
        let (first, second) = candidates.split_at(candidates.len() / 2);
        steps += 1;
        let fails = replay.fails_after(first).await?;
        eprintln!(
            "  step {steps}: {} tests before it: {}",
            first.len(),
            if fails { "fails" } else { "passes" }
        );
        candidates = if fails {
            first.to_vec()
        } else {
            second.to_vec()
        };
    }
    let polluter = candidates[0].clone();
    let alone = replay.fails_after(std::slice::from_ref(&polluter)).await?;
    println!("polluter: {polluter}");
    println!(
        "evidence: {victim} passes alone, fails after the recorded {} tests, and {} right after {polluter} ({steps} bisection steps)",
        before.len(),
        if alone { "fails" } else { "does NOT fail" }
    );
    if !alone {
        println!(
            "note: {polluter} alone is not enough; the failure needs it together with earlier tests"
        );
    }
    Ok(ShoalExitCode::Success)
}

/// Replays test orders on one slot.
struct Replay {
    config: shoal_core::config::Config,
    state_dir: PathBuf,
    backend: Backend,
    victim: TestId,
}

impl Replay {
    /// Runs `before` then the victim, in that order, in one runner;
    /// whether the victim failed.
    async fn fails_after(&self, before: &[TestId]) -> Result<bool, Failure> {
        let mut order = before.to_vec();
        order.push(self.victim.clone());
        let req = RunRequest {
            selection: Selection {
                ids: order.iter().cloned().collect(),
                ..Selection::default()
            },
            slots: 1,
            repeat: 1,
            retries: Some(0),
            state_dir: self.state_dir.clone(),
            worker: "local".into(),
            keep_scratch: false,
            discovery_cache: true,
            shuffle: None,
            kind: shoal_store::KIND_BISECT,
            order: Some(order),
            quarantine: Default::default(),
            config: self.config.clone(),
        };
        let mut collector = Collector::default();
        self.backend
            .run(req, &mut collector, shoal_runner::Cancel::new())
            .await?;
        let victim = collector
            .seen
            .iter()
            .find(|(_, id, _)| *id == self.victim)
            .ok_or_else(|| usage(format!("{} did not run in the replay", self.victim)))?;
        Ok(victim.2)
    }
}
