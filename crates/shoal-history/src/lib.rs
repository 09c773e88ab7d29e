//! Reading a store's history: flake evidence per test (what `shoal flaky`
//! ranks) and the tests `[quarantine] auto` selects from it. Used by the
//! binary for local runs and by the coordinator for runs recorded in its
//! store, so both select from the history where the run is recorded.

use shoal_core::config::AutoQuarantine;
use shoal_core::{Outcome, TestId};
use shoal_stats::{
    FlakyConfig, Observation, QuarantinePolicy, RunHealth, TestEvidence, classify,
    should_quarantine,
};
use shoal_store::{HistoryQuery, HistoryRow, Store, StoreError};
use std::collections::BTreeSet;
use std::time::Duration;

/// How far back auto-quarantine looks for flake evidence: recent enough to
/// reflect the code as it is, long enough to hold a few hundred runs.
pub const AUTO_WINDOW: Duration = Duration::from_secs(30 * 24 * 3600);

/// The history rows as the statistics see them (skips left out; results of
/// uncommitted changes compared only within their run).
pub fn observations(rows: &[HistoryRow]) -> Vec<Observation> {
    rows.iter()
        .filter(|r| r.outcome != Outcome::Skip)
        .map(|r| Observation {
            test: r.test.clone(),
            suite: r.suite.clone(),
            commit: r.commit.clone().filter(|_| !r.dirty),
            environment: r.environment.clone(),
            run_id: r.run_id.clone(),
            failed: r.outcome.is_failure(),
        })
        .collect()
}

/// Flake evidence over the store's history (optionally of one suite,
/// names containing `pattern`, since a time), ranked; with the number of
/// results and runs it was computed from.
pub async fn evidence(
    store: &dyn Store,
    suite: Option<String>,
    pattern: Option<String>,
    since: Option<f64>,
    cfg: &FlakyConfig,
) -> Result<(Vec<TestEvidence>, (usize, usize)), StoreError> {
    let query = HistoryQuery {
        suite,
        name_contains: pattern,
        since,
        ..HistoryQuery::default()
    };
    let rows = store.history(&query).await?;
    let run_ids: Vec<String> = rows
        .iter()
        .map(|r| r.run_id.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let health: Vec<RunHealth> = store
        .run_health(&run_ids)
        .await?
        .into_iter()
        .map(|h| RunHealth {
            run_id: h.run_id,
            tests: h.executions,
            failed: h.failed,
        })
        .collect();
    let evidence = classify(&observations(&rows), &health, cfg);
    Ok((evidence, (rows.len(), run_ids.len())))
}

/// `[quarantine] auto` as the statistics crate's policy.
pub fn policy(auto: &AutoQuarantine) -> QuarantinePolicy {
    QuarantinePolicy {
        min_runs: auto.min_runs,
        min_rate: auto.min_rate,
        max_rate: auto.max_rate,
    }
}

/// The tests `evidence` warrants quarantining under `policy`: flaky ones
/// within its thresholds, never a broken (consistently failing) one.
pub fn select_auto(evidence: &[TestEvidence], policy: &QuarantinePolicy) -> Vec<TestId> {
    evidence
        .iter()
        .filter(|e| should_quarantine(e, policy))
        .map(|e| TestId::new(e.suite.clone(), e.test.clone()))
        .collect()
}

/// The tests `auto` quarantines at time `now` (epoch seconds): those the
/// store's history of the last [`AUTO_WINDOW`] shows flaky, within the
/// policy's bounds and sample size.
pub async fn auto_quarantined(
    auto: &AutoQuarantine,
    store: &dyn Store,
    now: f64,
) -> Result<Vec<TestId>, StoreError> {
    let flaky = FlakyConfig {
        min_runs: auto.min_runs,
        ..FlakyConfig::default()
    };
    let since = now - AUTO_WINDOW.as_secs_f64();
    let (evidence, _) = evidence(store, None, None, Some(since), &flaky).await?;
    Ok(select_auto(&evidence, &policy(auto)))
}
