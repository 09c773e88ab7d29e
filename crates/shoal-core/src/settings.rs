//! How a run behaves beyond its config file: resolved once where the run is
//! asked for, then obeyed wherever it runs.
//!
//! The command line and environment change a run (`--timeout`,
//! `--fail-on-flaky`, the quarantine list, what kind of run it is). A local
//! run applies these to its config; a remote run sends them, versioned,
//! beside the project's `shoal.toml`, and the coordinator and every worker
//! apply the very same [`RunSettings`] with [`RunSettings::apply`]. No
//! worker guesses from the raw config file alone.

use crate::TestId;
use crate::config::{AutoQuarantine, Config};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The version of [`RunSettings`] this build writes and understands.
pub const RUN_SETTINGS_VERSION: u32 = 1;

/// A run's resolved settings (see the module docs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RunSettings {
    pub version: u32,
    /// Per-test timeout of each suite by name, milliseconds, as resolved
    /// from the config and `--timeout` / `SHOAL_TIMEOUT`; a suite missing
    /// here keeps its config's.
    pub timeouts: BTreeMap<String, u64>,
    /// Retries of a failed test as the run reports them in `run_started`
    /// (`--retries`, else the config's `[run] retries`).
    pub retries: u32,
    /// A flaky result fails the run.
    pub fail_on_flaky: bool,
    /// Tests whose failed and flaky results do not fail the run.
    pub quarantine: Vec<TestId>,
    /// `[quarantine] auto`: where the run is recorded (a coordinator), the
    /// tests its history shows flaky are added to `quarantine` there.
    pub auto_quarantine: Option<AutoQuarantine>,
    /// What the run is for, as the history records it (`run`, `stress`,
    /// `bisect`).
    pub kind: String,
    /// Run the tests in the order they were submitted, not longest first
    /// (`shoal bisect-order` replays a recorded order).
    pub keep_order: bool,
    /// Every batch of the run goes to one slot, so its tests share one
    /// runner process in order (`shoal bisect-order`).
    pub one_slot: bool,
}

impl Default for RunSettings {
    fn default() -> Self {
        RunSettings {
            version: RUN_SETTINGS_VERSION,
            timeouts: BTreeMap::new(),
            retries: 0,
            fail_on_flaky: false,
            quarantine: Vec::new(),
            auto_quarantine: None,
            kind: "run".to_owned(),
            keep_order: false,
            one_slot: false,
        }
    }
}

/// Settings written by a newer shoal than this one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the run's settings are version {0}, newer than this shoal understands ({RUN_SETTINGS_VERSION}): upgrade it"
)]
pub struct NewerSettings(pub u32);

impl RunSettings {
    /// The settings of a run of `config` (already resolved: command-line
    /// overrides applied) with this quarantine list and kind.
    pub fn of<'a>(
        config: &Config,
        retries: Option<u32>,
        quarantine: impl IntoIterator<Item = &'a TestId>,
        kind: &str,
    ) -> RunSettings {
        let mut quarantine: Vec<TestId> = quarantine.into_iter().cloned().collect();
        quarantine.sort();
        RunSettings {
            version: RUN_SETTINGS_VERSION,
            timeouts: config
                .suites
                .iter()
                .map(|s| (s.name.clone(), s.timeout.as_millis() as u64))
                .collect(),
            retries: retries.unwrap_or(config.run.retries),
            fail_on_flaky: config.run.fail_on_flaky,
            quarantine,
            auto_quarantine: config.quarantine.auto,
            kind: kind.to_owned(),
            keep_order: false,
            one_slot: false,
        }
    }

    /// Reads settings sent as JSON; empty text (an older client): the
    /// defaults.
    pub fn from_json(text: &str) -> Result<RunSettings, String> {
        if text.trim().is_empty() {
            return Ok(RunSettings::default());
        }
        let s: RunSettings =
            serde_json::from_str(text).map_err(|e| format!("unreadable run settings: {e}"))?;
        if s.version > RUN_SETTINGS_VERSION {
            return Err(NewerSettings(s.version).to_string());
        }
        Ok(s)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("run settings serialize")
    }

    /// Makes `config` say what these settings say.
    pub fn apply(&self, config: &mut Config) {
        for s in &mut config.suites {
            if let Some(&ms) = self.timeouts.get(&s.name) {
                s.timeout = std::time::Duration::from_millis(ms);
            }
        }
        config.run.fail_on_flaky = self.fail_on_flaky;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_round_trip_and_older_text_reads_as_defaults() {
        let s = RunSettings {
            timeouts: BTreeMap::from([("py".to_owned(), 2000)]),
            fail_on_flaky: true,
            quarantine: vec![TestId::new("py", "tests/test_a.py::test_x")],
            kind: "stress".into(),
            ..RunSettings::default()
        };
        assert_eq!(RunSettings::from_json(&s.to_json()).unwrap(), s);
        assert_eq!(RunSettings::from_json("").unwrap(), RunSettings::default());
        assert_eq!(
            RunSettings::from_json(r#"{"fail_on_flaky": true}"#)
                .unwrap()
                .kind,
            "run"
        );
    }

    #[test]
    fn newer_settings_are_refused_with_a_reason() {
        let err = RunSettings::from_json(r#"{"version": 99}"#).unwrap_err();
        assert!(
            err.contains("version 99") && err.contains("upgrade"),
            "{err}"
        );
    }

    #[test]
    fn settings_of_a_resolved_config_restore_it_from_the_raw_file() {
        let text = "[suites.a]\nadapter = \"pytest\"\ntimeout = \"1m\"\n[suites.b]\nadapter = \"pytest\"\n";
        let parse =
            || Config::parse("shoal.toml", text, std::path::Path::new("/p")).expect("config");
        // The client: `--timeout 2s --fail-on-flaky` on top of the file.
        let mut client = parse();
        for s in &mut client.suites {
            s.timeout = std::time::Duration::from_secs(2);
        }
        client.run.fail_on_flaky = true;
        let settings = RunSettings::of(&client, None, &[], "run");
        // A worker: the same file, then the settings.
        let mut worker = parse();
        assert!(worker.suites.iter().all(|s| s.timeout.as_secs() != 2));
        settings.apply(&mut worker);
        assert!(worker.suites.iter().all(|s| s.timeout.as_millis() == 2000));
        assert!(worker.run.fail_on_flaky);
    }
}
