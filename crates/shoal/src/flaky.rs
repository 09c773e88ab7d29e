//! `shoal flaky` and `shoal history`: what the history store says about
//! flakiness.
//!
//! `flaky` ranks tests by flake evidence (`shoal_stats::classify`): only a
//! failure contradicted by a pass of the same test on the same commit and
//! environment counts, runs in which most tests failed are dropped as
//! infrastructure failures, and below a minimum sample there is no verdict.
//! `history` shows one test's outcomes per commit, newest first, with rates
//! and Wilson intervals. Both read whatever store runs wrote to, local
//! (`.shoal/history.db`) or a coordinator's (`--store URL`), so local,
//! remote and stress runs count alike.

use crate::exit_code::ShoalExitCode;
use clap::{Args, ValueEnum};
use serde::Serialize;
use shoal_stats::{FlakyConfig, TestEvidence, wilson};
use shoal_store::{HistoryQuery, HistoryRow, Store};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum Format {
    Text,
    Json,
}

/// Where the history is.
#[derive(Debug, Args)]
pub(crate) struct StoreArgs {
    /// The store to read: `sqlite://PATH` or `postgres://...` (a
    /// coordinator's); default: this project's `.shoal/history.db`.
    #[arg(long, env = "SHOAL_STORE", value_name = "URL", hide_env_values = true)]
    store: Option<String>,
    /// Only results of the last DURATION, e.g. `30d` or `12h`.
    #[arg(long, value_name = "DURATION", value_parser = crate::parse_duration)]
    since: Option<std::time::Duration>,
}

#[derive(Debug, Args)]
pub(crate) struct FlakyArgs {
    /// Only tests whose name contains this text.
    #[arg(value_name = "PATTERN")]
    pattern: Option<String>,
    /// Only this suite.
    #[arg(long, value_name = "NAME")]
    suite: Option<String>,
    /// No verdict for a test with fewer results than this.
    #[arg(long, value_name = "N", default_value_t = 10)]
    min_runs: u64,
    /// A run in which more than this fraction of tests failed is taken as
    /// an infrastructure failure and ignored.
    #[arg(long, value_name = "FRACTION", default_value_t = 0.5)]
    infra_fraction: f64,
    /// Also list stable and undecided tests.
    #[arg(long)]
    all: bool,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    #[command(flatten)]
    store: StoreArgs,
}

#[derive(Debug, Args)]
pub(crate) struct HistoryArgs {
    /// The test: a substring of its name that selects one test.
    test: String,
    /// Only this suite.
    #[arg(long, value_name = "NAME")]
    suite: Option<String>,
    /// At most this many commits.
    #[arg(long, value_name = "N", default_value_t = 20)]
    limit: usize,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    #[command(flatten)]
    store: StoreArgs,
}

async fn open(root: &Path, args: &StoreArgs) -> Result<Arc<dyn Store>, ShoalExitCode> {
    let url = match &args.store {
        Some(url) => url.clone(),
        None => {
            let path = root.join(".shoal").join("history.db");
            if !path.exists() {
                return Err(crate::fail(
                    ShoalExitCode::Usage,
                    format!(
                        "no history yet: {} does not exist (run tests first, or give --store)",
                        path.display()
                    ),
                ));
            }
            format!("sqlite://{}", path.display())
        }
    };
    shoal_store::open_store(&url)
        .await
        .map_err(|e| crate::fail_err(ShoalExitCode::Infrastructure, &e))
}

fn since(args: &StoreArgs) -> Option<f64> {
    args.since
        .map(|d| shoal_core::now_epoch() - d.as_secs_f64())
}

pub(crate) async fn flaky_cmd(root: &Path, args: FlakyArgs) -> ShoalExitCode {
    let store = match open(root, &args.store).await {
        Ok(s) => s,
        Err(code) => return code,
    };
    let cfg = FlakyConfig {
        min_runs: args.min_runs,
        infra_fraction: args.infra_fraction,
        ..FlakyConfig::default()
    };
    if let Err(e) = cfg.validate() {
        return crate::fail_err(ShoalExitCode::Usage, &e);
    }
    let (mut evidence, (results, runs)) = match evidence(
        store.as_ref(),
        args.suite.clone(),
        args.pattern.clone(),
        since(&args.store),
        &cfg,
    )
    .await
    {
        Ok(e) => e,
        Err(e) => return crate::fail_err(ShoalExitCode::Infrastructure, &e),
    };
    if !args.all {
        evidence.retain(|e| {
            matches!(
                e.verdict,
                shoal_stats::Verdict::Flaky | shoal_stats::Verdict::Broken
            )
        });
    }
    match args.format {
        Format::Json => match serde_json::to_string_pretty(&evidence) {
            Ok(json) => println!("{json}"),
            Err(e) => return crate::fail_err(ShoalExitCode::Infrastructure, &e),
        },
        Format::Text => {
            if evidence.is_empty() {
                println!(
                    "no flaky or broken tests in {results} results of {runs} runs{}",
                    if args.all {
                        ""
                    } else {
                        " (--all lists every test)"
                    }
                );
            } else {
                print!("{}", render_evidence(&evidence));
            }
        }
    }
    ShoalExitCode::Success
}

pub(crate) use shoal_history::evidence;

/// The evidence table, in `classify`'s ranking.
pub(crate) fn render_evidence(evidence: &[TestEvidence]) -> String {
    let mut out = format!(
        "{:<9} {:>11} {:>7}  {:<17} {:>14}  {}\n",
        "VERDICT", "FAILED/RUNS", "RATE", "95% CI", "FLAKY COMMITS", "TEST"
    );
    for e in evidence {
        out.push_str(&format!(
            "{:<9} {:>11} {:>6.2}%  [{:>5.2}%, {:>6.2}%] {:>14}  {}::{}\n",
            e.verdict.as_str(),
            format!("{}/{}", e.failures, e.runs),
            e.rate * 100.0,
            e.ci_low * 100.0,
            e.ci_high * 100.0,
            format!("{}/{}", e.flaky_groups, e.groups),
            e.suite,
            e.test
        ));
    }
    out
}

/// One commit's results of a test.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct CommitHistory {
    /// `None`: results of runs outside a repository.
    pub commit: Option<String>,
    /// Some results were of a working tree with uncommitted changes.
    pub dirty: bool,
    pub runs: u64,
    pub failures: u64,
    pub rate: f64,
    pub ci_low: f64,
    pub ci_high: f64,
    /// Both outcomes under the same commit (and clean tree).
    pub flaky: bool,
    pub environments: Vec<String>,
    pub first_seen: f64,
    pub last_seen: f64,
}

pub(crate) async fn history_cmd(root: &Path, args: HistoryArgs) -> ShoalExitCode {
    let store = match open(root, &args.store).await {
        Ok(s) => s,
        Err(code) => return code,
    };
    let query = HistoryQuery {
        suite: args.suite.clone(),
        name_contains: Some(args.test.clone()),
        since: since(&args.store),
        ..HistoryQuery::default()
    };
    let rows = match store.history(&query).await {
        Ok(rows) => rows,
        Err(e) => return crate::fail_err(ShoalExitCode::Infrastructure, &e),
    };
    let tests: BTreeSet<(String, String)> = rows
        .iter()
        .map(|r| (r.suite.clone(), r.test.clone()))
        .collect();
    // An exact name wins over names that merely contain it.
    let exact: Vec<&(String, String)> = tests.iter().filter(|(_, t)| *t == args.test).collect();
    let chosen = match (exact.as_slice(), tests.len()) {
        ([one], _) => (*one).clone(),
        (_, 0) => {
            return crate::fail(
                ShoalExitCode::Usage,
                format!("no results of a test matching `{}`", args.test),
            );
        }
        (_, 1) => tests.iter().next().cloned().unwrap_or_default(),
        _ => {
            let names: Vec<String> = tests.iter().map(|(s, t)| format!("{s}::{t}")).collect();
            return crate::fail(
                ShoalExitCode::Usage,
                format!(
                    "`{}` matches {} tests; name one:\n  {}",
                    args.test,
                    names.len(),
                    names.join("\n  ")
                ),
            );
        }
    };
    let rows: Vec<&HistoryRow> = rows
        .iter()
        .filter(|r| (r.suite.as_str(), r.test.as_str()) == (chosen.0.as_str(), chosen.1.as_str()))
        .filter(|r| r.outcome != shoal_core::Outcome::Skip)
        .collect();
    let commits = per_commit(&rows, args.limit);
    match args.format {
        Format::Json => match serde_json::to_string_pretty(&commits) {
            Ok(json) => println!("{json}"),
            Err(e) => return crate::fail_err(ShoalExitCode::Infrastructure, &e),
        },
        Format::Text => {
            println!("{}::{}", chosen.0, chosen.1);
            print!("{}", render_history(&commits));
        }
    }
    ShoalExitCode::Success
}

/// Results grouped by commit, the most recently tested commit first.
pub(crate) fn per_commit(rows: &[&HistoryRow], limit: usize) -> Vec<CommitHistory> {
    let mut by: BTreeMap<Option<String>, Vec<&HistoryRow>> = BTreeMap::new();
    for r in rows {
        by.entry(r.commit.clone()).or_default().push(r);
    }
    let mut out: Vec<CommitHistory> = by
        .into_iter()
        .map(|(commit, rs)| {
            let runs = rs.len() as u64;
            let failures = rs.iter().filter(|r| r.outcome.is_failure()).count() as u64;
            let clean: Vec<&&HistoryRow> = rs.iter().filter(|r| !r.dirty).collect();
            let flaky = commit.is_some()
                && clean.iter().any(|r| r.outcome.is_failure())
                && clean.iter().any(|r| !r.outcome.is_failure());
            let ci = wilson(failures, runs, shoal_stats::DEFAULT_CONFIDENCE);
            CommitHistory {
                commit,
                dirty: rs.iter().any(|r| r.dirty),
                runs,
                failures,
                rate: failures as f64 / runs.max(1) as f64,
                ci_low: ci.low,
                ci_high: ci.high,
                flaky,
                environments: rs
                    .iter()
                    .map(|r| r.environment.clone())
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .collect(),
                first_seen: rs.iter().map(|r| r.start).fold(f64::INFINITY, f64::min),
                last_seen: rs.iter().map(|r| r.start).fold(0.0, f64::max),
            }
        })
        .collect();
    out.sort_by(|a, b| b.last_seen.total_cmp(&a.last_seen));
    out.truncate(limit);
    out
}

fn render_history(commits: &[CommitHistory]) -> String {
    let mut out = format!(
        "{:<12} {:>11} {:>7}  {:<17}  {:<6} {}\n",
        "COMMIT", "FAILED/RUNS", "RATE", "95% CI", "", "LAST RUN"
    );
    for c in commits {
        let commit = match &c.commit {
            Some(sha) => format!(
                "{}{}",
                &sha[..sha.len().min(10)],
                if c.dirty { "+" } else { "" }
            ),
            None => "(no commit)".to_owned(),
        };
        out.push_str(&format!(
            "{:<12} {:>11} {:>6.2}%  [{:>5.2}%, {:>6.2}%]  {:<6} {}\n",
            commit,
            format!("{}/{}", c.failures, c.runs),
            c.rate * 100.0,
            c.ci_low * 100.0,
            c.ci_high * 100.0,
            if c.flaky { "flaky" } else { "" },
            humantime::format_rfc3339_seconds(
                std::time::UNIX_EPOCH + std::time::Duration::from_secs_f64(c.last_seen.max(0.0))
            )
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_core::Outcome;

    fn row(commit: Option<&str>, dirty: bool, outcome: Outcome, start: f64) -> HistoryRow {
        HistoryRow {
            run_id: format!("r{start}"),
            suite: "py".into(),
            test: "t".into(),
            commit: commit.map(str::to_owned),
            dirty,
            environment: "linux-x86_64".into(),
            kind: "run".into(),
            outcome,
            final_status: None,
            attempt: 1,
            repeat: 0,
            slot: 0,
            worker: "local".into(),
            start,
            end: start + 1.0,
        }
    }

    #[test]
    fn history_groups_by_commit_newest_first_and_marks_contradictions() {
        let rows = [
            row(Some("aaaa"), false, Outcome::Pass, 1.0),
            row(Some("aaaa"), false, Outcome::Pass, 2.0),
            row(Some("bbbb"), false, Outcome::Pass, 3.0),
            row(Some("bbbb"), false, Outcome::Fail, 4.0),
            // A failure with uncommitted changes does not contradict a pass.
            row(Some("cccc"), true, Outcome::Fail, 5.0),
            row(Some("cccc"), false, Outcome::Pass, 6.0),
        ];
        let refs: Vec<&HistoryRow> = rows.iter().collect();
        let got = per_commit(&refs, 10);
        let summary: Vec<(Option<&str>, u64, u64, bool)> = got
            .iter()
            .map(|c| (c.commit.as_deref(), c.failures, c.runs, c.flaky))
            .collect();
        assert_eq!(
            summary,
            [
                (Some("cccc"), 1, 2, false),
                (Some("bbbb"), 1, 2, true),
                (Some("aaaa"), 0, 2, false)
            ]
        );
        assert!(got[0].dirty && !got[1].dirty);
        assert_eq!(per_commit(&refs, 1).len(), 1);
    }

    #[test]
    fn dirty_results_are_compared_only_within_their_run() {
        let rows = [row(Some("aaaa"), true, Outcome::Fail, 1.0)];
        let obs = shoal_history::observations(&rows);
        assert_eq!(obs[0].commit, None);
        assert!(obs[0].failed);
    }
}
