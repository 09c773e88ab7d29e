//! `shoal stress`: run tests over and over, in parallel and in shuffled
//! order, until a sequential probability ratio test decides for each one
//! whether it is flaky, and print per test the verdict, k failures of n runs
//! and the failure rate with its Wilson interval.
//!
//! The runs go in rounds. Each round is an ordinary run (local, or on a
//! coordinator's workers) of the tests still undecided, repeated `chunk`
//! times with a fresh shuffle seed derived from the stress seed; rounds grow
//! (16, 32, ... up to 512 repeats, but never more than the straight passes
//! the slowest open test needs to be decided stable) so that quickly
//! decided tests stop early and slow decisions do not pay a round's
//! start-up over and over. Within a
//! round every repetition runs, so a test may be observed past the point
//! where it was decided; those runs still count in k and n (the decision
//! itself is the first crossing, see `shoal_stats::Sprt`). A test that
//! failed every run so far is run until [`BROKEN_CONFIRM`] runs before it
//! is called broken, since two failures in a row already decide "flaky".
//! Every round is recorded in the history store like any run.

use crate::exit_code::ShoalExitCode;
use crate::{RemoteArgs, SelectArgs};
use clap::{Args, ValueEnum};
use serde::Serialize;
use shoal_core::{Event, Outcome, TestId};
use shoal_report::{ReportError, Reporter};
use shoal_runner::{RunRequest, Selection};
use shoal_stats::{Decision, Sprt, SprtConfig, Verdict, wilson};
use std::collections::{BTreeMap, HashSet};
use std::path::Path;

/// A test that failed every run is run at least this often before it is
/// called broken: two straight failures decide H1, and a test failing half
/// the time does that a quarter of the time.
pub const BROKEN_CONFIRM: u64 = 10;
/// The first round's repeats; each next round doubles, up to [`MAX_CHUNK`].
const FIRST_CHUNK: u64 = 16;
const MAX_CHUNK: u64 = 512;

#[derive(Debug, Args)]
pub(crate) struct StressArgs {
    #[command(flatten)]
    select: SelectArgs,
    /// Run each test at most N times (tests are decided earlier when the
    /// evidence allows).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..), conflicts_with = "until_decided")]
    runs: Option<u64>,
    /// Keep going until every test is decided (at most --max-runs each).
    #[arg(long)]
    until_decided: bool,
    /// With --until-decided: give up on a test after N runs (undecided).
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    max_runs: u64,
    /// Failure probability a stable test has at most (H0).
    #[arg(long, value_name = "P", default_value_t = 0.001)]
    p0: f64,
    /// Failure probability a flaky test has at least (H1).
    #[arg(long, value_name = "P", default_value_t = 0.01)]
    p1: f64,
    /// Probability of calling a stable test flaky.
    #[arg(long, value_name = "P", default_value_t = 0.05)]
    alpha: f64,
    /// Probability of calling a flaky test stable.
    #[arg(long, value_name = "P", default_value_t = 0.05)]
    beta: f64,
    /// Seed of the shuffled orders (printed; rerun with it to replay).
    #[arg(long, value_name = "SEED")]
    seed: Option<u64>,
    /// Concurrent slots [default: logical cores].
    #[arg(short = 'j', long = "slots", env = "SHOAL_SLOTS", value_name = "N")]
    slots: Option<usize>,
    /// Output format of the verdicts.
    #[arg(long, value_enum, default_value_t = StressFormat::Text)]
    format: StressFormat,
    #[command(flatten)]
    remote: RemoteArgs,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum StressFormat {
    Text,
    Json,
}

/// What stress concluded about one test.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct StressResult {
    pub test: String,
    pub suite: String,
    pub verdict: Verdict,
    pub failures: u64,
    pub runs: u64,
    pub rate: f64,
    pub ci_low: f64,
    pub ci_high: f64,
    /// Runs after which the SPRT decided (absent: undecided).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decided_after: Option<u64>,
}

/// One test's evidence so far.
#[derive(Debug)]
struct Tracker {
    sprt: Sprt,
}

impl Tracker {
    /// Whether it needs more runs.
    fn open(&self) -> bool {
        match self.sprt.decision() {
            Decision::Continue => true,
            // Failed every time so far: confirm before calling it broken.
            Decision::Flaky => self.sprt.passes() == 0 && self.sprt.runs() < BROKEN_CONFIRM,
            Decision::Stable | Decision::Truncated => false,
        }
    }

    /// Runs that could decide it at the soonest: straight passes down to
    /// "stable", or the runs left to confirm "broken".
    fn runs_to_decide(&self) -> u64 {
        if self.sprt.decision() == Decision::Flaky {
            return BROKEN_CONFIRM.saturating_sub(self.sprt.runs());
        }
        let cfg = self.sprt.config();
        let pass_step = ((1.0 - cfg.p1) / (1.0 - cfg.p0)).ln();
        let (lower, _) = self.sprt.bounds();
        ((self.sprt.llr() - lower) / -pass_step).ceil().max(1.0) as u64
    }

    fn verdict(&self) -> Verdict {
        match shoal_stats::verdict(&self.sprt) {
            // Not yet confirmed as broken.
            Verdict::Broken if self.sprt.runs() < BROKEN_CONFIRM => Verdict::Undecided,
            v => v,
        }
    }
}

/// Collects every final attempt's outcome (with its start time, to feed
/// them in the order they ran) and prints one line per round.
#[derive(Debug, Default)]
pub(crate) struct Collector {
    pub(crate) seen: Vec<(f64, TestId, bool)>,
    pub(crate) interrupted: bool,
}

impl Reporter for Collector {
    fn on_event(&mut self, event: &Event) -> Result<(), ReportError> {
        match event {
            Event::AttemptFinished(a) if a.outcome != Outcome::Skip => {
                self.seen.push((
                    a.start,
                    TestId::new(a.suite.clone(), a.test.clone()),
                    a.outcome.is_failure(),
                ));
            }
            Event::RunFinished(f) => self.interrupted = f.interrupted,
            _ => {}
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(), ReportError> {
        Ok(())
    }
}

pub(crate) async fn stress_cmd(root: &Path, args: StressArgs) -> ShoalExitCode {
    let config = match crate::load(root) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let cap = match (args.runs, args.until_decided) {
        (Some(n), _) => n,
        (None, true) => args.max_runs,
        (None, false) => 1000,
    };
    let sprt_config = SprtConfig {
        p0: args.p0,
        p1: args.p1,
        alpha: args.alpha,
        beta: args.beta,
        max_runs: Some(cap),
    };
    if let Err(e) = sprt_config.validate() {
        return crate::fail_err(ShoalExitCode::Usage, &e);
    }
    let selection = Selection {
        patterns: args.select.patterns,
        suites: args.select.suites,
        ..Selection::default()
    };
    if let Err(e) = selection.check(&config) {
        return crate::fail(crate::engine_exit(&e), e);
    }
    let (state_dir, store) = match crate::open_state(root).await {
        Ok(s) => s,
        Err((code, e)) => return crate::fail(code, e),
    };
    let slots = crate::resolve_slots(args.slots, &config);
    let backend = crate::backend::Backend::new(args.remote.remote(), store);
    let seed = args.seed.unwrap_or_else(crate::random_seed);
    let cancel = shoal_runner::Cancel::new();
    tokio::spawn(crate::watch_signals(cancel.clone(), || {
        eprintln!("\ninterrupted: stopping after the running tests; the verdicts so far follow")
    }));
    eprintln!(
        "Stressing (H0: p <= {} against H1: p >= {}, alpha {}, beta {}, at most {cap} runs per test, seed {seed})",
        args.p0, args.p1, args.alpha, args.beta
    );

    let mut trackers: BTreeMap<TestId, Tracker> = BTreeMap::new();
    let mut chunk = FIRST_CHUNK;
    let mut round = 0u64;
    loop {
        let open: HashSet<TestId> = trackers
            .iter()
            .filter(|(_, t)| t.open())
            .map(|(id, _)| id.clone())
            .collect();
        if round > 0 && open.is_empty() {
            break;
        }
        let most = trackers
            .values()
            .filter(|t| t.open())
            .map(|t| t.sprt.runs())
            .max()
            .unwrap_or(0);
        // No more repeats than the slowest open test could need to decide:
        // a round past every decision is wasted.
        let needed = trackers
            .values()
            .filter(|t| t.open())
            .map(Tracker::runs_to_decide)
            .max()
            .unwrap_or(chunk);
        let repeat = chunk.min(needed).min(cap.saturating_sub(most)).max(1);
        let req = RunRequest {
            selection: Selection {
                ids: open.clone(),
                ..selection.clone()
            },
            slots,
            repeat: u32::try_from(repeat).unwrap_or(u32::MAX),
            retries: Some(0),
            state_dir: state_dir.clone(),
            worker: "local".into(),
            keep_scratch: false,
            discovery_cache: true,
            shuffle: Some(seed.wrapping_add(round)),
            kind: shoal_store::KIND_STRESS,
            order: None,
            // Stress measures outcomes; quarantine only changes exit codes.
            quarantine: Default::default(),
            config: config.clone(),
        };
        let mut collector = Collector::default();
        let result = backend.run(req, &mut collector, cancel.clone()).await;
        if let Err((code, e)) = result {
            return crate::fail(code, e);
        }
        // Feed the outcomes in the order the runs started.
        collector.seen.sort_by(|a, b| a.0.total_cmp(&b.0));
        let mut failures = 0;
        for (_, id, failed) in collector.seen.drain(..) {
            failures += u64::from(failed);
            let tracker = match trackers.entry(id) {
                std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::btree_map::Entry::Vacant(e) => e.insert(Tracker {
                    sprt: Sprt::new(sprt_config).expect("validated above"),
                }),
            };
            tracker.sprt.observe(failed);
        }
        round += 1;
        let still = trackers.values().filter(|t| t.open()).count();
        eprintln!(
            "round {round}: {} × {repeat} runs, {failures} failed; {} decided, {still} to go",
            if round == 1 {
                trackers.len()
            } else {
                open.len()
            },
            trackers.len() - still
        );
        if collector.interrupted || cancel.is_cancelled() || trackers.is_empty() {
            break;
        }
        chunk = (chunk * 2).min(MAX_CHUNK);
    }

    let results: Vec<StressResult> = trackers.iter().map(|(id, t)| result(id, t)).collect();
    match args.format {
        StressFormat::Json => match serde_json::to_string_pretty(&results) {
            Ok(json) => println!("{json}"),
            Err(e) => return crate::fail_err(ShoalExitCode::Infrastructure, &e),
        },
        StressFormat::Text => print!("{}", render(&results)),
    }
    let decided: Vec<u64> = results.iter().filter_map(|r| r.decided_after).collect();
    if !decided.is_empty() {
        eprintln!(
            "{} of {} tests decided, after {:.1} runs on average (seed {seed})",
            decided.len(),
            results.len(),
            decided.iter().sum::<u64>() as f64 / decided.len() as f64
        );
    }
    if cancel.is_cancelled() {
        ShoalExitCode::Interrupted
    } else if results
        .iter()
        .any(|r| matches!(r.verdict, Verdict::Flaky | Verdict::Broken))
    {
        ShoalExitCode::TestsFailed
    } else {
        ShoalExitCode::Success
    }
}

fn result(id: &TestId, t: &Tracker) -> StressResult {
    let (k, n) = (t.sprt.failures(), t.sprt.runs());
    let ci = wilson(k, n, shoal_stats::DEFAULT_CONFIDENCE);
    StressResult {
        test: id.name.clone(),
        suite: id.suite.clone(),
        verdict: t.verdict(),
        failures: k,
        runs: n,
        rate: if n == 0 { 0.0 } else { k as f64 / n as f64 },
        ci_low: ci.low,
        ci_high: ci.high,
        decided_after: t.sprt.decided_at(),
    }
}

/// The verdict table: the most worrying first.
pub(crate) fn render(results: &[StressResult]) -> String {
    let rank = |v: Verdict| match v {
        Verdict::Flaky => 0,
        Verdict::Broken => 1,
        Verdict::Undecided => 2,
        Verdict::Stable => 3,
    };
    let mut rows: Vec<&StressResult> = results.iter().collect();
    rows.sort_by(|a, b| {
        rank(a.verdict)
            .cmp(&rank(b.verdict))
            .then(b.rate.total_cmp(&a.rate))
            .then(a.test.cmp(&b.test))
    });
    let mut out = format!(
        "{:<9} {:>13} {:>7}  {:<17}  {}\n",
        "VERDICT", "FAILED/RUNS", "RATE", "95% CI", "TEST"
    );
    for r in rows {
        out.push_str(&format!(
            "{:<9} {:>13} {:>6.2}%  [{:>5.2}%, {:>6.2}%]  {}::{}\n",
            r.verdict.as_str(),
            format!("{}/{}", r.failures, r.runs),
            r.rate * 100.0,
            r.ci_low * 100.0,
            r.ci_high * 100.0,
            r.suite,
            r.test
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracker(outcomes: &[bool]) -> Tracker {
        let mut t = Tracker {
            sprt: Sprt::new(SprtConfig::default()).expect("default config"),
        };
        for &failed in outcomes {
            t.sprt.observe(failed);
        }
        t
    }

    #[test]
    fn two_failures_are_not_yet_broken_ten_are() {
        let t = tracker(&[true, true]);
        assert!(t.open());
        assert_eq!(t.verdict(), Verdict::Undecided);
        let t = tracker(&[true; BROKEN_CONFIRM as usize]);
        assert!(!t.open());
        assert_eq!(t.verdict(), Verdict::Broken);
        let mut outcomes = vec![true, true];
        outcomes.push(false);
        let t = tracker(&outcomes);
        assert!(!t.open());
        assert_eq!(t.verdict(), Verdict::Flaky);
    }

    #[test]
    fn a_clean_test_needs_exactly_the_passes_left_to_stable() {
        let t = tracker(&[]);
        let all = shoal_stats::runs_to_accept_h0_without_failures(&SprtConfig::default());
        assert_eq!(t.runs_to_decide(), all);
        let t = tracker(&[false; 100]);
        assert_eq!(t.runs_to_decide(), all - 100);
        // Feeding exactly that many passes decides it.
        let mut t = tracker(&[false; 100]);
        for _ in 0..t.runs_to_decide() {
            t.sprt.observe(false);
        }
        assert_eq!(t.sprt.decision(), Decision::Stable);
        assert_eq!(tracker(&[true, true]).runs_to_decide(), BROKEN_CONFIRM - 2);
    }

    #[test]
    fn the_table_puts_flaky_tests_first_with_their_interval() {
        let results = vec![
            result(&TestId::new("py", "t_stable"), &tracker(&[false; 400])),
            result(
                &TestId::new("py", "t_flaky"),
                &tracker(&[false, true, false, true]),
            ),
        ];
        let table = render(&results);
        let lines: Vec<&str> = table.lines().collect();
        assert!(
            lines[1].starts_with("flaky") && lines[1].ends_with("py::t_flaky"),
            "{table}"
        );
        assert!(
            lines[1].contains("2/4") && lines[1].contains("50.00%"),
            "{table}"
        );
        assert!(
            lines[2].starts_with("stable") && lines[2].contains("0/400"),
            "{table}"
        );
        // The Wilson interval of 0/400 at 95%: [0, 0.95%].
        assert!(lines[2].contains("[ 0.00%,   0.95%]"), "{table}");
    }
}
