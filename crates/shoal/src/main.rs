//! The `shoal` binary: parses the command line, wires the engine, reporters
//! and store together, and maps every outcome to a documented exit code.

mod backend;
mod bisect;
mod error;
mod exit_code;
mod flaky;
mod init;
mod quarantine;
mod remote;
mod serve;
mod stress;

use clap::{Args, Parser, Subcommand, ValueEnum};
use exit_code::ShoalExitCode;
use shoal_runner::project::{self, LoadError};
use shoal_runner::{EngineError, RunRequest, Selection};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Debug, Parser)]
#[command(
    name = "shoal",
    version,
    about = "Run test suites fast: in parallel, ordered by history, with flaky tests retried and named."
)]
struct Cli {
    /// Run as if started in DIR (the project root).
    #[arg(short = 'C', long = "dir", global = true, value_name = "DIR")]
    dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Discover and run tests.
    Run(RunArgs),
    /// Print the discovered tests.
    List(ListArgs),
    /// Write a commented shoal.toml for the detected project.
    Init {
        /// Overwrite an existing shoal.toml.
        #[arg(long)]
        force: bool,
    },
    /// Run a coordinator that workers and `shoal run --server` connect to.
    Serve(serve::ServeArgs),
    /// Run tests for a coordinator: lease batches, run them, report.
    Worker(serve::WorkerArgs),
    /// Manage quarantined tests: they run and are reported, but their
    /// failures do not fail the run.
    Quarantine(quarantine::QuarantineArgs),
    /// Run tests over and over until each is decided flaky or stable (SPRT),
    /// in parallel and shuffled; prints failures, runs and a 95% interval.
    Stress(stress::StressArgs),
    /// Find the first commit at which a test became flaky (runs it enough
    /// times at each step, in temporary worktrees).
    BisectFlake(bisect::BisectFlakeArgs),
    /// Name the earlier test on the same slot that made TEST fail in a run.
    BisectOrder(bisect::BisectOrderArgs),
    /// Rank tests by flake evidence in the history.
    Flaky(flaky::FlakyArgs),
    /// A test's outcomes per commit, newest first.
    History(flaky::HistoryArgs),
    /// Cancel a run on a coordinator (its tests are killed on every worker).
    Cancel {
        /// The run's id (printed by `shoal run --server`).
        run_id: String,
        #[command(flatten)]
        remote: RemoteArgs,
    },
}

/// How to reach a coordinator.
#[derive(Debug, Args, Clone)]
pub(crate) struct RemoteArgs {
    /// The coordinator, e.g. `http://ci-coordinator:7878`.
    #[arg(long, env = "SHOAL_SERVER", value_name = "URL")]
    server: Option<String>,
    /// Authentication token (prefer the SHOAL_TOKEN variable: arguments are
    /// visible to other users of the machine).
    #[arg(
        long,
        env = "SHOAL_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    token: Option<String>,
    /// CA certificate (PEM) for an https:// coordinator with a private CA.
    #[arg(long, value_name = "PATH")]
    ca: Option<PathBuf>,
}

impl RemoteArgs {
    pub(crate) fn remote(&self) -> Option<remote::Remote> {
        Some(remote::Remote {
            server: self.server.clone()?,
            token: self.token.clone().filter(|t| !t.is_empty()),
            ca: self.ca.clone(),
        })
    }
}

#[derive(Debug, Args)]
struct SelectArgs {
    /// Run only tests whose name contains one of these substrings.
    #[arg(value_name = "PATTERN")]
    patterns: Vec<String>,
    /// Run only this suite (repeatable).
    #[arg(long = "suite", value_name = "NAME")]
    suites: Vec<String>,
}

#[derive(Debug, Args)]
struct RunArgs {
    #[command(flatten)]
    select: SelectArgs,
    /// Concurrent slots [default: logical cores].
    #[arg(short = 'j', long = "slots", env = "SHOAL_SLOTS", value_name = "N")]
    slots: Option<usize>,
    /// Retry a failed test up to N times (on a different slot).
    #[arg(long, env = "SHOAL_RETRIES", value_name = "N")]
    retries: Option<u32>,
    /// Run every selected test N times.
    #[arg(long, env = "SHOAL_REPEAT", value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    repeat: Option<u32>,
    /// Run the tests in a shuffled order (to expose order dependence); the
    /// seed is printed, and `--shuffle=SEED` replays that order.
    #[arg(long, value_name = "SEED", num_args = 0..=1, require_equals = true)]
    shuffle: Option<Option<u64>>,
    /// Per-test timeout for every suite, e.g. "30s" or "2m".
    #[arg(long, env = "SHOAL_TIMEOUT", value_name = "DURATION", value_parser = parse_duration)]
    timeout: Option<std::time::Duration>,
    /// Write a JUnit XML report to PATH.
    #[arg(long, value_name = "PATH")]
    junit: Option<PathBuf>,
    /// Write the event stream as JSON lines to PATH.
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,
    /// Exit with 1 when a test passed only on retry.
    #[arg(long)]
    fail_on_flaky: bool,
    /// Print a line for every test, passes included.
    #[arg(short, long)]
    verbose: bool,
    /// Colored output.
    #[arg(long, value_enum, default_value_t = ColorChoice::Auto, env = "SHOAL_COLOR")]
    color: ColorChoice,
    /// Keep each slot's scratch directory under .shoal/runs/ after the run.
    #[arg(long)]
    keep_scratch: bool,
    /// Discover tests afresh even when the cached list's inputs are unchanged.
    #[arg(long)]
    no_discovery_cache: bool,
    /// Run on a coordinator's workers instead of locally.
    #[command(flatten)]
    remote: RemoteArgs,
}

#[derive(Debug, Args)]
struct ListArgs {
    #[command(flatten)]
    select: SelectArgs,
    /// Output format.
    #[arg(long, value_enum, default_value_t = ListFormat::Text)]
    format: ListFormat,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ColorChoice {
    Auto,
    Always,
    Never,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ListFormat {
    Text,
    Json,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ShoalExitCode::Usage.into()
            } else {
                ShoalExitCode::Success.into()
            };
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SHOAL_LOG").unwrap_or_else(|_| {
                // `serve` and `worker` are services: say what they do.
                match cli.command {
                    Command::Serve(_) | Command::Worker(_) => "info".into(),
                    _ => "warn".into(),
                }
            }),
        )
        .with_writer(std::io::stderr)
        // Escape codes only for a person at a terminal, never in CI logs.
        .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: failed to start the async runtime: {e}");
            return ShoalExitCode::Infrastructure.into();
        }
    };
    runtime.block_on(real_main(cli)).into()
}

async fn real_main(cli: Cli) -> ShoalExitCode {
    let root = match &cli.dir {
        Some(d) => d.clone(),
        None => match std::env::current_dir() {
            Ok(d) => d,
            Err(e) => {
                return fail(
                    ShoalExitCode::Infrastructure,
                    format!("cannot read the current directory: {e}"),
                );
            }
        },
    };
    let root = match std::fs::canonicalize(&root) {
        Ok(r) => r,
        Err(e) => {
            return fail(
                ShoalExitCode::Usage,
                format!("cannot use {} as the project root: {e}", root.display()),
            );
        }
    };
    match cli.command {
        Command::Init { force } => init_cmd(&root, force),
        Command::List(args) => list_cmd(&root, args).await,
        Command::Run(args) => run_cmd(&root, args).await,
        Command::Stress(args) => stress::stress_cmd(&root, args).await,
        Command::BisectFlake(args) => bisect::bisect_flake_cmd(&root, args).await,
        Command::BisectOrder(args) => bisect::bisect_order_cmd(&root, args).await,
        Command::Flaky(args) => flaky::flaky_cmd(&root, args).await,
        Command::History(args) => flaky::history_cmd(&root, args).await,
        Command::Serve(args) => serve::serve_cmd(&root, args).await,
        Command::Worker(args) => serve::worker_cmd(args).await,
        Command::Quarantine(args) => quarantine::quarantine_cmd(&root, args).await,
        Command::Cancel { run_id, remote } => {
            let Some(r) = remote.remote() else {
                return fail(
                    ShoalExitCode::Usage,
                    "give the coordinator with --server URL",
                );
            };
            match remote::cancel(&r, &run_id).await {
                Ok(true) => {
                    eprintln!("cancelled run {run_id}");
                    ShoalExitCode::Success
                }
                Ok(false) => fail(
                    ShoalExitCode::Usage,
                    format!("the coordinator has no active run {run_id}"),
                ),
                Err(e) => fail(ShoalExitCode::Infrastructure, format!("{e:#}")),
            }
        }
    }
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("invalid duration {s:?}: {e}"))
}

fn fail(code: ShoalExitCode, message: impl std::fmt::Display) -> ShoalExitCode {
    eprintln!("error: {message}");
    code
}

/// [`fail`] with an error: the message shows its whole cause chain.
fn fail_err(code: ShoalExitCode, e: &(dyn std::error::Error + 'static)) -> ShoalExitCode {
    fail(code, error::chain(e))
}

fn load(root: &Path) -> Result<shoal_core::config::Config, ShoalExitCode> {
    project::load_config(root).map_err(|e| match e {
        LoadError::Config(diag) => {
            eprintln!("{:?}", miette::Report::new(*diag));
            ShoalExitCode::Usage
        }
        other => fail_err(ShoalExitCode::Usage, &other),
    })
}

fn engine_exit(e: &EngineError) -> ShoalExitCode {
    match e {
        EngineError::UnknownSuite(..) | EngineError::NoTests | EngineError::Unsupported(_) => {
            ShoalExitCode::Usage
        }
        _ => ShoalExitCode::Infrastructure,
    }
}

fn init_cmd(root: &Path, force: bool) -> ShoalExitCode {
    let path = root.join(project::CONFIG_FILE);
    if path.exists() && !force {
        return fail(
            ShoalExitCode::Usage,
            format!("{} exists (use --force to overwrite)", path.display()),
        );
    }
    let suites = project::detect_suites(root);
    if suites.is_empty() {
        return fail(
            ShoalExitCode::Usage,
            format!("no pytest or Cargo project detected in {}", root.display()),
        );
    }
    let text = init::render(root, &suites);
    if let Err(e) = std::fs::write(&path, text) {
        return fail(
            ShoalExitCode::Infrastructure,
            format!("failed to write {}: {e}", path.display()),
        );
    }
    let names: Vec<_> = suites
        .iter()
        .map(|s| format!("{} ({})", s.0, s.1.name()))
        .collect();
    println!("wrote {} with suites: {}", path.display(), names.join(", "));
    ShoalExitCode::Success
}

async fn list_cmd(root: &Path, args: ListArgs) -> ShoalExitCode {
    let config = match load(root) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let selection = Selection {
        patterns: args.select.patterns,
        suites: args.select.suites,
        ..Selection::default()
    };
    let support = tempdir_in_state(root);
    let found = shoal_runner::list(&config, &selection, &support).await;
    let _ = std::fs::remove_dir_all(&support);
    // Leave no empty scratch directories behind (fails harmlessly when a
    // concurrent run is using them).
    if let Some(runs) = support.parent() {
        let _ = std::fs::remove_dir(runs);
        let _ = runs.parent().map(std::fs::remove_dir);
    }
    let found = match found {
        Ok(f) => f,
        Err(e) => return fail_err(engine_exit(&e), &e),
    };
    let mut out = String::new();
    match args.format {
        ListFormat::Text => {
            for d in &found {
                for t in &d.selected {
                    out.push_str(&format!("{} {}\n", t.id.suite, t.id.name));
                }
            }
        }
        ListFormat::Json => {
            let v: Vec<_> = found
                .iter()
                .flat_map(|d| d.selected.iter().map(|t| serde_json::json!({"suite": t.id.suite, "test": t.id.name, "group": t.group})))
                .collect();
            out = serde_json::to_string_pretty(&v).unwrap_or_default();
            out.push('\n');
        }
    }
    print_stdout(&out);
    ShoalExitCode::Success
}

/// Writes to stdout; a closed pipe (`shoal list | head`) is not an error.
fn print_stdout(s: &str) {
    use std::io::Write;
    let _ = std::io::stdout().lock().write_all(s.as_bytes());
}

fn tempdir_in_state(root: &Path) -> PathBuf {
    root.join(".shoal")
        .join("runs")
        .join(format!("list-{}", std::process::id()))
}

async fn run_cmd(root: &Path, args: RunArgs) -> ShoalExitCode {
    let mut config = match load(root) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if args.fail_on_flaky {
        config.run.fail_on_flaky = true;
    }
    if let Some(t) = args.timeout {
        config.run.timeout = t;
        for s in &mut config.suites {
            s.timeout = t;
        }
    }
    let selection = Selection {
        patterns: args.select.patterns,
        suites: args.select.suites,
        ..Selection::default()
    };
    if let Err(e) = selection.check(&config) {
        return fail_err(engine_exit(&e), &e);
    }
    let (state_dir, store) = match open_state(root).await {
        Ok(s) => s,
        Err((code, e)) => return fail(code, e),
    };
    let slots = resolve_slots(args.slots, &config);
    let color = match args.color {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => {
            std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none()
        }
    };
    let mut fanout = shoal_report::Fanout::new();
    fanout.push(shoal_report::terminal::TerminalReporter::new(
        shoal_report::terminal::TerminalOptions {
            progress_bar: std::io::stderr().is_terminal(),
            color,
            verbose: args.verbose,
            slow_threshold: config.run.slow_threshold,
            output_cap: Some(config.run.output_cap),
        },
        Box::new(std::io::stdout()),
    ));
    if let Some(path) = &args.junit {
        fanout.push(shoal_report::junit::JunitReporter::new(path.clone()));
    }
    if let Some(path) = &args.json {
        match shoal_report::json::JsonLinesReporter::create(path) {
            Ok(r) => fanout.push(r),
            Err(e) => return fail_err(ShoalExitCode::Usage, &e),
        }
    }
    let cancel = shoal_runner::Cancel::new();
    tokio::spawn(watch_signals(cancel.clone(), || {
        eprintln!(
            "\ninterrupted: stopping running tests and writing reports (press Ctrl-C again to exit at once)"
        )
    }));
    // Discovery can take a while (cargo compiles the tests): say what is
    // going on before the first event.
    let suites: Vec<&shoal_core::config::SuiteConfig> = config
        .suites
        .iter()
        .filter(|s| selection.suites.is_empty() || selection.suites.contains(&s.name))
        .collect();
    let names: Vec<&str> = suites.iter().map(|s| s.name.as_str()).collect();
    // Containers and services start first (and may fail): say so.
    if suites
        .iter()
        .any(|s| s.environment.is_some() || !s.services.is_empty())
    {
        eprintln!(
            "Starting containers and services, then discovering tests ({})...",
            names.join(", ")
        );
    } else {
        eprintln!("Discovering tests ({})...", names.join(", "));
    }
    let remote = args.remote.remote();
    let (quarantine, auto) = match remote {
        // A coordinator selects automatic quarantine from its own history
        // (the run settings carry the policy), never from this machine's.
        Some(_) => (
            config.quarantine.tests.iter().cloned().collect(),
            Vec::new(),
        ),
        None => quarantine::run_quarantine(&config, store.as_ref()).await,
    };
    if !auto.is_empty() {
        let names: Vec<String> = auto.iter().map(shoal_core::config::test_entry).collect();
        eprintln!(
            "auto-quarantined (flaky in the last {} days of history): {}",
            quarantine::AUTO_WINDOW.as_secs() / 86_400,
            names.join(", ")
        );
    }
    let req = RunRequest {
        selection,
        quarantine,
        slots,
        repeat: args.repeat.unwrap_or(config.run.repeat),
        retries: args.retries,
        state_dir,
        worker: "local".into(),
        keep_scratch: args.keep_scratch,
        discovery_cache: !args.no_discovery_cache,
        shuffle: args.shuffle.map(|seed| seed.unwrap_or_else(random_seed)),
        kind: shoal_store::KIND_RUN,
        order: None,
        config,
    };
    let backend = backend::Backend::new(remote, store);
    let result = backend.run(req, &mut fanout, cancel).await;
    let finish_errors = shoal_report::Reporter::finish(&mut fanout);
    let report = match result {
        Ok(r) => r,
        Err((code, e)) => return fail(code, e),
    };
    for w in &report.warnings {
        eprintln!("warning: {w}");
    }
    if let Err(e) = finish_errors {
        eprintln!("error: {e}");
        return ShoalExitCode::Infrastructure;
    }
    ShoalExitCode::from_run(report.exit_code)
}

/// The project's state directory (`.shoal`, created if needed) and the
/// history store in it, which every command that runs tests records to.
async fn open_state(
    root: &Path,
) -> Result<(PathBuf, Arc<dyn shoal_store::Store>), (ShoalExitCode, String)> {
    let state_dir = root.join(".shoal");
    std::fs::create_dir_all(&state_dir).map_err(|e| {
        (
            ShoalExitCode::Infrastructure,
            format!("failed to create {}: {e}", state_dir.display()),
        )
    })?;
    let store = shoal_store::SqliteStore::open(&state_dir.join("history.db"))
        .await
        .map_err(|e| crate::error::failure(ShoalExitCode::Infrastructure, &e))?;
    Ok((state_dir, Arc::new(store)))
}

/// `-j N`, else the config's `slots`, else the machine's logical cores.
fn resolve_slots(arg: Option<usize>, config: &shoal_core::config::Config) -> usize {
    match arg.or(Some(config.run.slots).filter(|s| *s > 0)) {
        Some(n) => n,
        None => std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
    }
}

/// A seed for `--shuffle` without one: different on every run.
pub(crate) fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    // Short enough to type back in.
    h.finish() % 1_000_000_000
}

/// First Ctrl-C or SIGTERM: `announce` it and cancel `cancel` (the caller
/// stops gracefully: a run kills its tests and writes partial reports, a
/// service drains). A second one exits at once.
pub(crate) async fn watch_signals(cancel: shoal_runner::Cancel, announce: fn()) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        return;
    };
    let mut seen = 0;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        seen += 1;
        if seen == 1 {
            announce();
            cancel.cancel();
        } else {
            std::process::exit(ShoalExitCode::Interrupted as i32);
        }
    }
}
