//! Quarantine from the command line: `shoal quarantine add|rm|ls` edit the
//! `[quarantine] tests` list of `shoal.toml` in place (through `toml_edit`,
//! so comments and formatting survive), and [`run_quarantine`] is the set a
//! run excuses: that list plus automatically quarantined tests.

use crate::exit_code::ShoalExitCode;
use crate::{ListFormat, fail, print_stdout};
use clap::{Args, Subcommand};
use shoal_core::TestId;
use shoal_core::config::{Config, TestEntryError, parse_test_entry, test_entry};
use shoal_runner::Selection;
use shoal_runner::project::CONFIG_FILE;
use std::collections::{BTreeSet, HashSet};
use std::path::Path;
use toml_edit::{Array, DocumentMut, Item, Table, Value};

/// `shoal quarantine`.
#[derive(Debug, Args)]
pub struct QuarantineArgs {
    #[command(subcommand)]
    command: QuarantineCommand,
}

#[derive(Debug, Subcommand)]
enum QuarantineCommand {
    /// Quarantine tests: they still run and are reported, but their
    /// failures no longer fail the run.
    Add {
        /// `SUITE::NAME`, the name as `shoal list` prints it (a `shoal list`
        /// line, `SUITE NAME`, is accepted too).
        #[arg(value_name = "TEST", required = true)]
        tests: Vec<String>,
    },
    /// Take tests out of quarantine.
    Rm {
        /// `SUITE::NAME` entries of the quarantine list.
        #[arg(value_name = "TEST", required = true)]
        tests: Vec<String>,
    },
    /// Print the quarantined tests.
    Ls {
        /// Discover the tests and say which entries match none.
        #[arg(long)]
        check: bool,
        /// Output format.
        #[arg(long, value_enum, default_value_t = ListFormat::Text)]
        format: ListFormat,
    },
}

pub(crate) async fn quarantine_cmd(root: &Path, args: QuarantineArgs) -> ShoalExitCode {
    match args.command {
        QuarantineCommand::Add { tests } => add(root, &tests).await,
        QuarantineCommand::Rm { tests } => rm(root, &tests),
        QuarantineCommand::Ls { check, format } => ls(root, check, format).await,
    }
}

/// The tests a run quarantines: `[quarantine] tests` plus the
/// [`auto_quarantined`] ones, which are also returned on their own (to be
/// announced).
pub(crate) async fn run_quarantine(
    config: &Config,
    store: &dyn shoal_store::Store,
) -> (HashSet<TestId>, Vec<TestId>) {
    let auto: Vec<TestId> = auto_quarantined(config, store)
        .await
        .into_iter()
        .filter(|id| !config.quarantine.tests.contains(id))
        .collect();
    let all = config
        .quarantine
        .tests
        .iter()
        .chain(&auto)
        .cloned()
        .collect();
    (all, auto)
}

pub(crate) use shoal_history::AUTO_WINDOW;

/// The tests `[quarantine] auto` quarantines: those the store's history of
/// the last [`AUTO_WINDOW`] shows flaky (the evidence `shoal flaky` prints),
/// within the configured rate bounds and sample size; never a broken one.
/// Empty without `auto` in the config, or when the history cannot be read
/// (a warning says so: quarantining nothing is the safe side).
pub(crate) async fn auto_quarantined(
    config: &Config,
    store: &dyn shoal_store::Store,
) -> Vec<TestId> {
    let Some(auto) = &config.quarantine.auto else {
        return Vec::new();
    };
    match shoal_history::auto_quarantined(auto, store, shoal_core::now_epoch()).await {
        Ok(tests) => tests,
        Err(e) => {
            eprintln!(
                "warning: auto-quarantine could not read the history ({e}); quarantining none"
            );
            Vec::new()
        }
    }
}

/// A test named on the command line: `SUITE::NAME`, or a line of
/// `shoal list` (`SUITE NAME`).
fn parse_arg(arg: &str, config: &Config) -> Result<TestId, TestEntryError> {
    let suites = || config.suites.iter().map(|s| s.name.as_str());
    parse_test_entry(arg, suites()).or_else(|e| {
        suites()
            .filter(|s| {
                arg.strip_prefix(s)
                    .and_then(|rest| rest.strip_prefix(' '))
                    .is_some_and(|name| !name.is_empty())
            })
            .max_by_key(|s| s.len())
            .map(|s| TestId::new(s, &arg[s.len() + 1..]))
            .ok_or(e)
    })
}

fn parse_args(args: &[String], config: &Config) -> Result<Vec<TestId>, ShoalExitCode> {
    let mut ids = Vec::new();
    for arg in args {
        match parse_arg(arg, config) {
            Ok(id) if !ids.contains(&id) => ids.push(id),
            Ok(_) => {}
            Err(e) => return Err(fail(ShoalExitCode::Usage, format!("{e} ({})", e.help()))),
        }
    }
    Ok(ids)
}

/// `shoal.toml`'s text and the config it parses to. Quarantine lives in the
/// file, so there must be one.
fn read_config(root: &Path) -> Result<(String, Config), ShoalExitCode> {
    let path = root.join(CONFIG_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(fail(
                ShoalExitCode::Usage,
                format!(
                    "no {CONFIG_FILE} in {}: the quarantine list lives there (`shoal init` writes one)",
                    root.display()
                ),
            ));
        }
        Err(e) => {
            return Err(fail(
                ShoalExitCode::Infrastructure,
                format!("failed to read {}: {e}", path.display()),
            ));
        }
    };
    let config = parse_or_report(&text, root)?;
    Ok((text, config))
}

fn parse_or_report(text: &str, root: &Path) -> Result<Config, ShoalExitCode> {
    Config::parse(CONFIG_FILE, text, root).map_err(|diag| {
        eprintln!("{:?}", miette::Report::new(*diag));
        ShoalExitCode::Usage
    })
}

/// Checks the new text still loads, then replaces `shoal.toml` with it
/// atomically (a file beside it renamed over it).
fn write_config(root: &Path, text: &str) -> Result<(), ShoalExitCode> {
    parse_or_report(text, root)?;
    let path = root.join(CONFIG_FILE);
    let tmp = root.join(format!(".{CONFIG_FILE}.{}.tmp", std::process::id()));
    let write = || -> std::io::Result<()> {
        std::fs::write(&tmp, text)?;
        if let Ok(meta) = std::fs::metadata(&path) {
            std::fs::set_permissions(&tmp, meta.permissions())?;
        }
        std::fs::rename(&tmp, &path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        fail(
            ShoalExitCode::Infrastructure,
            format!("failed to write {}: {e}", path.display()),
        )
    })
}

async fn add(root: &Path, args: &[String]) -> ShoalExitCode {
    let (text, config) = match read_config(root) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let ids = match parse_args(args, &config) {
        Ok(ids) => ids,
        Err(code) => return code,
    };
    let (new, old): (Vec<&TestId>, Vec<&TestId>) = ids
        .iter()
        .partition(|id| !config.quarantine.tests.contains(id));
    for id in &old {
        println!("already quarantined: {}", test_entry(id));
    }
    if new.is_empty() {
        return ShoalExitCode::Success;
    }
    // An unknown test is quarantined all the same: it may exist on another
    // branch, or its suite may not list it here (a missing tool).
    let suites: BTreeSet<&str> = new.iter().map(|id| id.suite.as_str()).collect();
    match discover(
        root,
        &config,
        suites.into_iter().map(str::to_owned).collect(),
    )
    .await
    {
        Ok(found) => {
            for id in new.iter().filter(|id| !found.contains(*id)) {
                eprintln!(
                    "warning: no test {} was discovered here; quarantining it anyway (it may exist on another branch)",
                    test_entry(id)
                );
            }
        }
        Err(e) => eprintln!("warning: could not check that the tests exist: {e}"),
    }
    let entries: Vec<String> = new.iter().map(|id| test_entry(id)).collect();
    let edited = match edit_tests(&text, |tests| push_entries(tests, &entries)) {
        Ok(t) => t,
        Err(e) => return crate::fail_err(ShoalExitCode::Usage, &e),
    };
    if let Err(code) = write_config(root, &edited) {
        return code;
    }
    for entry in &entries {
        println!("quarantined: {entry}");
    }
    ShoalExitCode::Success
}

fn rm(root: &Path, args: &[String]) -> ShoalExitCode {
    let (text, config) = match read_config(root) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let ids = match parse_args(args, &config) {
        Ok(ids) => ids,
        Err(code) => return code,
    };
    let missing: Vec<String> = ids
        .iter()
        .filter(|id| !config.quarantine.tests.contains(id))
        .map(test_entry)
        .collect();
    if !missing.is_empty() {
        return fail(
            ShoalExitCode::Usage,
            format!(
                "not in the quarantine list: {} (`shoal quarantine ls` prints it); nothing was changed",
                missing.join(", ")
            ),
        );
    }
    let suites: Vec<&str> = config.suites.iter().map(|s| s.name.as_str()).collect();
    let remove: HashSet<&TestId> = ids.iter().collect();
    let edited = edit_tests(&text, |tests| {
        tests.retain(|v| {
            let id = v
                .as_str()
                .and_then(|s| parse_test_entry(s, suites.iter().copied()).ok());
            !id.is_some_and(|id| remove.contains(&id))
        });
        if tests.is_empty() {
            tests.set_trailing("");
            tests.set_trailing_comma(false);
        }
    });
    let edited = match edited {
        Ok(t) => t,
        Err(e) => return crate::fail_err(ShoalExitCode::Usage, &e),
    };
    if let Err(code) = write_config(root, &edited) {
        return code;
    }
    for id in &ids {
        println!("unquarantined: {}", test_entry(id));
    }
    ShoalExitCode::Success
}

async fn ls(root: &Path, check: bool, format: ListFormat) -> ShoalExitCode {
    let config = match crate::load(root) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let mut entries: Vec<(TestId, &str)> = config
        .quarantine
        .tests
        .iter()
        .map(|id| (id.clone(), "config"))
        .collect();
    let state = root.join(".shoal").join("history.db");
    let auto = match state.exists() {
        true => match shoal_store::SqliteStore::open(&state).await {
            Ok(store) => auto_quarantined(&config, &store).await,
            Err(e) => return crate::fail_err(ShoalExitCode::Infrastructure, &e),
        },
        false => Vec::new(),
    };
    for id in auto {
        if !config.quarantine.tests.contains(&id) {
            entries.push((id, "auto"));
        }
    }
    let found = if check && !entries.is_empty() {
        let suites: BTreeSet<String> = entries.iter().map(|(id, _)| id.suite.clone()).collect();
        match discover(root, &config, suites.into_iter().collect()).await {
            Ok(found) => Some(found),
            Err(e) => return crate::fail_err(ShoalExitCode::Infrastructure, &e),
        }
    } else {
        None
    };
    let mut out = String::new();
    match format {
        ListFormat::Text => {
            for (id, source) in &entries {
                if let Some(found) = &found {
                    out.push_str(if found.contains(id) {
                        "found    "
                    } else {
                        "missing  "
                    });
                }
                out.push_str(&test_entry(id));
                if *source == "auto" {
                    out.push_str("  (auto)");
                }
                out.push('\n');
            }
        }
        ListFormat::Json => {
            let v: Vec<_> = entries
                .iter()
                .map(|(id, source)| {
                    let mut o = serde_json::json!({
                        "entry": test_entry(id),
                        "suite": id.suite,
                        "test": id.name,
                        "source": source,
                    });
                    if let Some(found) = &found {
                        o["found"] = found.contains(id).into();
                    }
                    o
                })
                .collect();
            out = serde_json::to_string_pretty(&v).unwrap_or_default();
            out.push('\n');
        }
    }
    print_stdout(&out);
    ShoalExitCode::Success
}

/// Every test of `suites`, discovered afresh (as `shoal list` does).
async fn discover(
    root: &Path,
    config: &Config,
    suites: Vec<String>,
) -> Result<HashSet<TestId>, shoal_runner::EngineError> {
    let selection = Selection {
        suites: suites
            .into_iter()
            .filter(|s| config.suites.iter().any(|c| &c.name == s))
            .collect(),
        ..Selection::default()
    };
    let support = crate::tempdir_in_state(root);
    let found = shoal_runner::list(config, &selection, &support).await;
    let _ = std::fs::remove_dir_all(&support);
    if let Some(runs) = support.parent() {
        let _ = std::fs::remove_dir(runs);
        let _ = runs.parent().map(std::fs::remove_dir);
    }
    Ok(found?
        .into_iter()
        .flat_map(|d| d.selected.into_iter().map(|t| t.id))
        .collect())
}

/// Editing the quarantine list failed.
#[derive(Debug, thiserror::Error)]
enum EditError {
    #[error("cannot edit {CONFIG_FILE}: {0}")]
    Parse(#[from] toml_edit::TomlError),
    #[error("cannot edit {CONFIG_FILE}: `{0}` is not an array of strings; fix it by hand")]
    Shape(&'static str),
}

/// Applies `f` to the `[quarantine] tests` array of `text` (created when
/// missing), leaving everything else as written.
fn edit_tests(text: &str, f: impl FnOnce(&mut Array)) -> Result<String, EditError> {
    let mut doc: DocumentMut = text.parse()?;
    if doc.get("quarantine").is_none() {
        let mut table = Table::new();
        if !text.is_empty() {
            table.decor_mut().set_prefix("\n");
        }
        doc.insert("quarantine", Item::Table(table));
    }
    let section = doc["quarantine"]
        .as_table_like_mut()
        .ok_or(EditError::Shape("quarantine"))?;
    if section.get("tests").is_none() {
        section.insert("tests", Item::Value(Value::Array(Array::new())));
    }
    let tests = section
        .get_mut("tests")
        .and_then(Item::as_array_mut)
        .ok_or(EditError::Shape("quarantine.tests"))?;
    f(tests);
    Ok(doc.to_string())
}

/// Appends `entries` in the array's own layout: one per line when it has
/// one per line (or is empty: a list tends to grow), else inline.
fn push_entries(tests: &mut Array, entries: &[String]) {
    let multiline = tests.is_empty()
        || tests.iter().any(|v| {
            v.decor()
                .prefix()
                .and_then(|p| p.as_str())
                .is_some_and(|p| p.contains('\n'))
        });
    // The last entry's indentation (not the comments above it).
    let indent = tests
        .iter()
        .last()
        .and_then(|v| v.decor().prefix())
        .and_then(|p| p.as_str())
        .and_then(|p| p.rsplit_once('\n'))
        .map(|(_, indent)| indent)
        .filter(|i| i.chars().all(|c| c == ' ' || c == '\t'))
        .unwrap_or("    ");
    let prefix = if multiline {
        format!("\n{indent}")
    } else {
        " ".to_owned()
    };
    if tests.is_empty() {
        tests.set_trailing("\n");
        tests.set_trailing_comma(true);
    }
    for entry in entries {
        let mut v = Value::from(entry.as_str());
        v.decor_mut().set_prefix(prefix.as_str());
        v.decor_mut().set_suffix("");
        tests.push_formatted(v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_core::config::AutoQuarantine;
    use shoal_history::{policy, select_auto};
    use shoal_stats::{QuarantinePolicy, TestEvidence, Verdict};

    fn add_to(text: &str, entries: &[&str]) -> String {
        let entries: Vec<String> = entries.iter().map(|s| (*s).to_owned()).collect();
        edit_tests(text, |t| push_entries(t, &entries)).unwrap()
    }

    #[test]
    fn adding_creates_the_section_and_keeps_the_rest() {
        let text = "# my suites\n[suites.py]\nadapter = \"pytest\" # the unit tests\n";
        let edited = add_to(text, &["py::tests/a.py::t", "py::tests/b.py::u[x y]"]);
        assert_eq!(
            edited,
            "# my suites\n[suites.py]\nadapter = \"pytest\" # the unit tests\n\n[quarantine]\ntests = [\n    \"py::tests/a.py::t\",\n    \"py::tests/b.py::u[x y]\",\n]\n"
        );
    }

    #[test]
    fn adding_follows_the_array_layout() {
        let multi = "[quarantine]\ntests = [\n  # flaky since the DB upgrade\n  \"py::a\",\n]\n";
        assert_eq!(
            add_to(multi, &["py::b"]),
            "[quarantine]\ntests = [\n  # flaky since the DB upgrade\n  \"py::a\",\n  \"py::b\",\n]\n"
        );
        let inline = "[quarantine]\ntests = [\"py::a\"] # inline\n";
        assert_eq!(
            add_to(inline, &["py::b"]),
            "[quarantine]\ntests = [\"py::a\", \"py::b\"] # inline\n"
        );
        let empty = "[quarantine]\ntests = []\nauto = { min_runs = 30 }\n";
        assert_eq!(
            add_to(empty, &["py::a"]),
            "[quarantine]\ntests = [\n    \"py::a\",\n]\nauto = { min_runs = 30 }\n"
        );
        // Quotes and backslashes in a name are escaped, not pasted.
        let odd = add_to("", &["py::t[\"q\"\\]"]);
        let doc: DocumentMut = odd.parse().unwrap();
        assert_eq!(
            doc["quarantine"]["tests"][0].as_str(),
            Some("py::t[\"q\"\\]")
        );
    }

    #[test]
    fn adding_works_whatever_shape_the_section_has() {
        let suite = "[suites.py]\nadapter = \"pytest\"\n";
        for section in [
            "[quarantine.auto]\nmin_runs = 30\n",
            "quarantine = { auto = { min_runs = 30 } }\n",
            "[quarantine]\nauto.min_runs = 30\n",
        ] {
            let text = if section.starts_with('[') {
                format!("{suite}{section}")
            } else {
                format!("{section}{suite}")
            };
            let edited = add_to(&text, &["py::a"]);
            let c = Config::parse("shoal.toml", &edited, Path::new("/p"))
                .unwrap_or_else(|e| panic!("{e:?}\n{edited}"));
            assert_eq!(c.quarantine.tests, [TestId::new("py", "a")], "{edited}");
            assert_eq!(c.quarantine.auto.map(|a| a.min_runs), Some(30), "{edited}");
        }
    }

    #[test]
    fn a_malformed_file_is_not_edited() {
        let e = edit_tests("[quarantine\n", |_| {}).unwrap_err();
        assert!(e.to_string().starts_with("cannot edit shoal.toml"), "{e}");
        let e = edit_tests("quarantine = 3\n", |_| {}).unwrap_err();
        assert!(e.to_string().contains("`quarantine`"), "{e}");
    }

    fn config() -> Config {
        Config::parse(
            "shoal.toml",
            "[suites.py]\nadapter = \"pytest\"\n[suites.rs]\nadapter = \"cargo\"\n",
            Path::new("/p"),
        )
        .unwrap()
    }

    #[test]
    fn arguments_take_both_spellings() {
        let c = config();
        let want = TestId::new("rs", "shoal-core config::tests::x");
        assert_eq!(
            parse_arg("rs::shoal-core config::tests::x", &c).unwrap(),
            want
        );
        assert_eq!(
            parse_arg("rs shoal-core config::tests::x", &c).unwrap(),
            want
        );
        assert!(matches!(
            parse_arg("go::x", &c),
            Err(TestEntryError::UnknownSuite { .. })
        ));
        assert!(parse_arg("py ", &c).is_err());
        assert!(parse_arg("test_x", &c).is_err());
    }

    fn evidence(
        suite: &str,
        test: &str,
        verdict: Verdict,
        failures: u64,
        runs: u64,
    ) -> TestEvidence {
        TestEvidence {
            test: test.into(),
            suite: suite.into(),
            verdict,
            failures,
            runs,
            rate: failures as f64 / runs as f64,
            ci_low: 0.0,
            ci_high: 1.0,
            flaky_failures: failures,
            flaky_groups: 1,
            groups: runs,
            first_flaky_commit: None,
        }
    }

    #[test]
    fn auto_quarantine_takes_flaky_tests_never_broken_ones() {
        let policy = policy(&AutoQuarantine::default());
        let picked = select_auto(
            &[
                evidence("py", "flaky", Verdict::Flaky, 5, 100),
                evidence("py", "broken", Verdict::Broken, 100, 100),
                evidence("py", "rare", Verdict::Flaky, 1, 1000),
                evidence("py", "young", Verdict::Flaky, 3, 10),
            ],
            &policy,
        );
        assert_eq!(picked, [TestId::new("py", "flaky")]);
    }

    #[test]
    fn config_defaults_are_the_statistics_defaults() {
        let policy = policy(&AutoQuarantine::default());
        assert_eq!(policy, QuarantinePolicy::default());
        assert!(policy.validate().is_ok());
    }

    #[tokio::test]
    async fn a_run_quarantines_the_config_list_and_flaky_history() {
        use shoal_store::Store as _;
        let dir = tempfile::tempdir().expect("tempdir");
        let store = shoal_store::SqliteStore::open(&dir.path().join("h.db"))
            .await
            .expect("store");
        let mut c = config();
        c.quarantine.tests = vec![TestId::new("py", "a"), TestId::new("rs", "b")];
        let (all, auto) = run_quarantine(&c, &store).await;
        assert_eq!(all, c.quarantine.tests.iter().cloned().collect());
        assert!(auto.is_empty());
        // One run on a commit in which `py::flaky` failed 5 of 25 times and
        // `py::broken` failed every time.
        let run = shoal_store::RunRecord {
            run_id: "r1".into(),
            started: shoal_core::now_epoch(),
            commit: Some("c1".into()),
            dirty: false,
            worker: "local".into(),
            selection: String::new(),
            planned: 50,
            environment: "linux".into(),
            seed: None,
            kind: shoal_store::KIND_RUN.into(),
        };
        store.begin_run(&run).await.expect("begin");
        let attempts: Vec<shoal_store::AttemptRecord> = (0..25u32)
            .flat_map(|i| {
                let at = |name: &str, fail: bool| shoal_store::AttemptRecord {
                    run_id: "r1".into(),
                    suite: "py".into(),
                    test: name.into(),
                    attempt: 1,
                    repeat: i,
                    outcome: if fail {
                        shoal_core::Outcome::Fail
                    } else {
                        shoal_core::Outcome::Pass
                    },
                    slot: 0,
                    worker: "local".into(),
                    start: run.started + f64::from(i),
                    end: run.started + f64::from(i) + 0.5,
                    duration: 0.5,
                    final_status: None,
                    message: None,
                    commit: Some("c1".into()),
                    dirty: false,
                };
                [
                    at("flaky", i % 5 == 0),
                    at("broken", true),
                    at("fine", false),
                ]
            })
            .collect();
        store.record_attempts(&attempts).await.expect("record");
        c.quarantine.auto = Some(AutoQuarantine::default());
        let (all, auto) = run_quarantine(&c, &store).await;
        assert_eq!(auto, [TestId::new("py", "flaky")], "never the broken one");
        assert_eq!(all.len(), 3);
    }
}
