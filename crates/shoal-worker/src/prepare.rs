//! Preparing a run on a worker: fetch the snapshot's missing blobs into the
//! worker's [`WorkerCache`], materialize the tree, load the config, run
//! `worker_setup` (once per cache directory and snapshot, however many
//! workers share it) and discover the tests.
//!
//! [`prepare_run`] takes the blob source as a closure, so it runs the same
//! against a coordinator (`FetchBlobs`) and against a local [`BlobStore`].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};
use shoal_core::config::{CommandLine, Config};
use shoal_core::{TestCase, TestId};
use shoal_proto::v1::RunSpec;
use shoal_slot::hooks::{HookError, run_hook};
use shoal_slot::project::{CONFIG_FILE, detect_suites};
use shoal_slot::{EngineError, SuiteRuntime};
use shoal_snapshot::{BlobStore, Digest, EntryKind, Manifest, SnapshotError, materialize};

use crate::instance::{Instance, InstanceError};
use crate::worker::host_name;

/// Blobs asked for in one fetch, at most.
pub const FETCH_CHUNK: usize = 256;
/// Bytes (as the manifest gives them) asked for in one fetch, at most
/// (a larger blob is fetched alone).
pub const FETCH_CHUNK_BYTES: u64 = 64 << 20;

/// A worker's view of a cache directory, which several worker processes on
/// one machine may share:
///
/// - `blobs/`: the [`BlobStore`] of every snapshot fetched (kept across runs,
///   so an unchanged file is fetched once); shared: writes are atomic
///   (temporary file, then rename) and blobs are immutable;
/// - `setup/<key>`: markers of `worker_setup` hooks that have run; shared:
///   `setup/<key>.lock` (flock) makes one process run a hook while the
///   others wait for its marker;
/// - `instances/<k>/runs/<run_id>/`: a run's materialized `tree/`, the
///   engine's `support/` files and one `slot-N/` scratch directory per
///   slot; private to the process holding [`Instance`] `k`.
#[derive(Debug)]
pub struct WorkerCache {
    dir: PathBuf,
    blobs: BlobStore,
    instance: Instance,
    /// Held while checking for and running `worker_setup`, so two runs of
    /// the same snapshot prepared at once in this process wait for each
    /// other without polling the file lock.
    setup_lock: tokio::sync::Mutex<()>,
}

impl WorkerCache {
    /// Opens (creating if needed) the cache in `dir` as a new instance
    /// named after the host (see [`Instance::acquire`]). Blocking.
    pub fn open(dir: &Path) -> Result<Self, PrepareError> {
        let instance = Instance::acquire(dir, None, &host_name())?;
        Self::with_instance(instance)
    }

    /// Opens the cache directory of `instance` (creating what is missing),
    /// keeping the instance (and its lock) for as long as the cache lives.
    pub fn with_instance(instance: Instance) -> Result<Self, PrepareError> {
        let dir = instance.cache_dir().to_owned();
        let setup = dir.join("setup");
        std::fs::create_dir_all(&setup).map_err(|source| PrepareError::Io {
            action: "create directory",
            path: setup,
            source,
        })?;
        let blobs = BlobStore::open(dir.join("blobs"))?;
        Ok(Self {
            dir,
            blobs,
            instance,
            setup_lock: tokio::sync::Mutex::new(()),
        })
    }

    /// This process's instance of the cache.
    pub fn instance(&self) -> &Instance {
        &self.instance
    }

    /// The cache directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The blob store in `blobs/`.
    pub fn blobs(&self) -> &BlobStore {
        &self.blobs
    }

    /// Where the run's files live (`instances/<k>/runs/<run_id>`). The id
    /// must have passed [`check_run_id`].
    pub fn run_dir(&self, run_id: &str) -> PathBuf {
        self.instance.runs_dir().join(run_id)
    }

    /// The marker of a `worker_setup` that has run, by its key.
    fn setup_marker(&self, key: &str) -> PathBuf {
        self.dir.join("setup").join(key)
    }
}

/// What a worker needs to know about a run to prepare it (a [`RunSpec`]'s
/// fields).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunInputs {
    /// The run's id (a directory name in the cache).
    pub run_id: String,
    /// The snapshot manifest's digest (64 lowercase hex digits).
    pub manifest_digest: String,
    /// The project's `shoal.toml` text; empty: detect the suites.
    pub config_toml: String,
    /// The project's directory in the snapshot, `/`-separated; empty for
    /// the snapshot root.
    pub project_dir: String,
    /// Per suite, the paths its discovery and runners are limited to
    /// (absent: the whole suite), as the client's selection narrowed them.
    pub scopes: BTreeMap<String, Vec<String>>,
    /// The run's resolved settings as the client sent them (JSON of
    /// [`shoal_core::RunSettings`]; empty: the defaults), applied to the
    /// config.
    pub settings_json: String,
}

impl From<RunSpec> for RunInputs {
    fn from(spec: RunSpec) -> Self {
        Self {
            run_id: spec.run_id,
            manifest_digest: spec.manifest_digest,
            config_toml: spec.config_toml,
            project_dir: spec.project_dir,
            scopes: spec
                .scopes
                .into_iter()
                .map(|s| (s.suite, s.paths))
                .collect(),
            settings_json: spec.settings_json,
        }
    }
}

/// What running `worker_setup` amounted to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetupStatus {
    /// The config has no `worker_setup` hook.
    NoHook,
    /// The hook ran (and succeeded).
    Ran,
    /// The hook had already run for this snapshot in this cache directory
    /// (by this worker or another one sharing the cache).
    Cached,
}

/// A run ready for its batches.
#[derive(Debug)]
pub struct PreparedRun {
    /// The run's id.
    pub run_id: String,
    /// `instances/<k>/runs/<run_id>` in the cache.
    pub run_dir: PathBuf,
    /// The project root inside the materialized tree.
    pub project_root: PathBuf,
    /// The engine's support files (`<run_dir>/support`).
    pub support_dir: PathBuf,
    /// The run's config (from its `shoal.toml` text, or detected).
    pub config: Config,
    /// The discovered suites, by name.
    pub suites: Arc<HashMap<String, SuiteRuntime>>,
    /// The discovered tests, with the runner data this worker's discovery
    /// produced.
    pub tests: HashMap<TestId, TestCase>,
    /// Blobs fetched from the source (the manifest included).
    pub blobs_fetched: usize,
    /// Blobs of the snapshot already in the cache.
    pub blobs_cached: usize,
    /// Whether `worker_setup` ran.
    pub setup: SetupStatus,
    /// How long preparing took.
    pub took: Duration,
}

impl PreparedRun {
    /// The discovered test `name` of suite `suite`, if any.
    pub fn test(&self, suite: &str, name: &str) -> Option<&TestCase> {
        self.tests.get(&TestId::new(suite, name))
    }
}

/// Why a run could not be prepared. Messages read well after "could not
/// prepare the run: ".
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    /// The coordinator gave a run id that cannot be a directory name.
    #[error("the run id `{0}` is not a safe directory name")]
    BadRunId(String),
    /// The blob source failed.
    #[error("failed to fetch blobs of the snapshot: {0}")]
    Fetch(String),
    /// The blob source did not send a blob it was asked for.
    #[error("the coordinator did not send blob {0}")]
    BlobNotSent(Digest),
    /// The blob source sent a blob no one asked for.
    #[error("the coordinator sent blob {0}, which was not asked for")]
    BlobNotAsked(Digest),
    /// A snapshot operation failed (bad digest, manifest, blob, tree).
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    /// The project directory is not in the snapshot.
    #[error("the project directory `{0}` is not a directory of the snapshot")]
    ProjectDir(String),
    /// The run's `shoal.toml` text is invalid.
    #[error("invalid {CONFIG_FILE}: {0}")]
    Config(String),
    /// Without a config, no suite could be detected.
    #[error("the run has no {CONFIG_FILE} and no pytest or Cargo project was detected in it")]
    NothingDetected,
    /// `worker_setup` failed.
    #[error(transparent)]
    Hook(#[from] HookError),
    /// Discovery failed.
    #[error(transparent)]
    Discovery(#[from] EngineError),
    /// A file-system operation failed.
    #[error("failed to {action} {}: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// To which path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// No instance of the cache directory could be taken.
    #[error(transparent)]
    Instance(#[from] InstanceError),
    /// A blocking task died.
    #[error("a background task failed: {0}")]
    Task(String),
}

/// Checks that a run id can name a directory: letters, digits, `-`, `_`
/// and `.`, not `.` or `..`, at most 128 characters.
pub fn check_run_id(run_id: &str) -> Result<(), PrepareError> {
    let ok = !run_id.is_empty()
        && run_id.len() <= 128
        && run_id != "."
        && run_id != ".."
        && run_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(PrepareError::BadRunId(run_id.chars().take(80).collect()))
    }
}

/// Prepares a run in `cache`: fetches the manifest and the blobs the cache
/// lacks through `fetch` (called with at most [`FETCH_CHUNK`] digests at a
/// time; it returns the blobs as (digest, bytes), each verified here),
/// materializes the tree in the run directory's `tree/` (removing what a previous
/// attempt left there), loads the config, runs `worker_setup` unless it
/// already ran for this snapshot (see [`setup_key`]) and discovers the
/// tests. `worker` is the `SHOAL_WORKER` the hook sees.
pub async fn prepare_run<F, Fut>(
    cache: &WorkerCache,
    inputs: &RunInputs,
    worker: &str,
    mut fetch: F,
) -> Result<PreparedRun, PrepareError>
where
    F: FnMut(Vec<Digest>) -> Fut,
    Fut: Future<Output = Result<Vec<(Digest, Vec<u8>)>, String>>,
{
    let t0 = Instant::now();
    check_run_id(&inputs.run_id)?;
    let manifest_digest = Digest::parse(&inputs.manifest_digest).map_err(SnapshotError::from)?;
    let blobs = cache.blobs().clone();

    let mut fetched = 0;
    if !blobs.has(&manifest_digest) {
        fetched += fetch_into(&blobs, vec![manifest_digest], &mut fetch).await?;
    }
    let manifest_bytes = blocking({
        let blobs = blobs.clone();
        move || blobs.read(&manifest_digest)
    })
    .await??;
    let manifest = Manifest::from_json(&manifest_bytes)?;

    let sizes: BTreeMap<Digest, u64> = manifest
        .entries
        .iter()
        .filter_map(|e| match &e.kind {
            EntryKind::File { digest, size, .. } => Some((*digest, *size)),
            EntryKind::Symlink { .. } => None,
        })
        .collect();
    let all: Vec<Digest> = sizes.keys().copied().collect();
    let missing = blocking({
        let blobs = blobs.clone();
        move || blobs.missing(&all)
    })
    .await?;
    let cached = sizes.len() - missing.len();
    for chunk in chunks(&missing, &sizes) {
        fetched += fetch_into(&blobs, chunk, &mut fetch).await?;
    }

    let run_dir = cache.run_dir(&inputs.run_id);
    let tree = run_dir.join("tree");
    let support_dir = run_dir.join("support");
    blocking({
        let (run_dir, tree, blobs) = (run_dir.clone(), tree.clone(), blobs.clone());
        move || -> Result<(), PrepareError> {
            remove_dir_if_present(&run_dir)?;
            materialize(&manifest, &blobs, &tree)?;
            Ok(())
        }
    })
    .await??;

    let project_root = project_root(&tree, &inputs.project_dir)?;
    let mut config = load_config(&project_root, &inputs.config_toml)?;
    shoal_core::RunSettings::from_json(&inputs.settings_json)
        .map_err(PrepareError::Config)?
        .apply(&mut config);
    let setup = match &config.hooks.worker_setup {
        None => SetupStatus::NoHook,
        Some(hook) => {
            let key = setup_key(hook, &manifest_digest, &inputs.project_dir);
            worker_setup(cache, hook, &key, &project_root, &inputs.run_id, worker).await?
        }
    };

    let discovered = shoal_slot::list_scoped(&config, &inputs.scopes, &support_dir).await?;
    let mut suites = HashMap::new();
    let mut tests = HashMap::new();
    for d in discovered {
        for case in d.selected {
            tests.insert(case.id.clone(), case);
        }
        suites.insert(d.suite.config.name.clone(), d.suite);
    }
    Ok(PreparedRun {
        run_id: inputs.run_id.clone(),
        run_dir,
        project_root,
        support_dir,
        config,
        suites: Arc::new(suites),
        tests,
        blobs_fetched: fetched,
        blobs_cached: cached,
        setup,
        took: t0.elapsed(),
    })
}

/// Splits `digests` into fetches of at most [`FETCH_CHUNK`] blobs and
/// about [`FETCH_CHUNK_BYTES`] (a larger blob alone), in order.
pub fn chunks(digests: &[Digest], sizes: &BTreeMap<Digest, u64>) -> Vec<Vec<Digest>> {
    let mut out: Vec<Vec<Digest>> = Vec::new();
    let mut bytes = 0u64;
    for digest in digests {
        let size = sizes.get(digest).copied().unwrap_or(0);
        let full = out.last().is_none_or(|c| {
            c.len() >= FETCH_CHUNK || (!c.is_empty() && bytes + size > FETCH_CHUNK_BYTES)
        });
        if full {
            out.push(Vec::new());
            bytes = 0;
        }
        bytes += size;
        if let Some(chunk) = out.last_mut() {
            chunk.push(*digest);
        }
    }
    out
}

/// Fetches `wanted` and stores each blob, verified; every blob asked for
/// must come, and nothing else. Returns how many were stored.
async fn fetch_into<F, Fut>(
    blobs: &BlobStore,
    wanted: Vec<Digest>,
    fetch: &mut F,
) -> Result<usize, PrepareError>
where
    F: FnMut(Vec<Digest>) -> Fut,
    Fut: Future<Output = Result<Vec<(Digest, Vec<u8>)>, String>>,
{
    let got = fetch(wanted.clone()).await.map_err(PrepareError::Fetch)?;
    let asked: HashSet<Digest> = wanted.iter().copied().collect();
    if let Some((digest, _)) = got.iter().find(|(d, _)| !asked.contains(d)) {
        return Err(PrepareError::BlobNotAsked(*digest));
    }
    let count = wanted.len();
    blocking({
        let blobs = blobs.clone();
        move || -> Result<(), PrepareError> {
            for (digest, bytes) in &got {
                blobs.put_verified(digest, bytes)?;
            }
            if let Some(digest) = wanted.iter().find(|d| !blobs.has(d)) {
                return Err(PrepareError::BlobNotSent(*digest));
            }
            Ok(())
        }
    })
    .await??;
    Ok(count)
}

/// The project root: the tree, or `project_dir` inside it.
fn project_root(tree: &Path, project_dir: &str) -> Result<PathBuf, PrepareError> {
    let dir = project_dir.trim_matches('/');
    if dir.is_empty() {
        return Ok(tree.to_owned());
    }
    shoal_snapshot::validate_path(dir)?;
    let root = tree.join(dir);
    // Not through a symlink: the project must be a real directory of the tree.
    match std::fs::symlink_metadata(&root) {
        Ok(meta) if meta.is_dir() => Ok(root),
        _ => Err(PrepareError::ProjectDir(dir.to_owned())),
    }
}

/// The run's config: its `shoal.toml` text, or zero config from the
/// suites detected in `root` when the text is empty.
pub fn load_config(root: &Path, config_toml: &str) -> Result<Config, PrepareError> {
    if config_toml.trim().is_empty() {
        let suites = detect_suites(root);
        if suites.is_empty() {
            return Err(PrepareError::NothingDetected);
        }
        return Ok(Config::zero_config(root, suites));
    }
    Config::parse(CONFIG_FILE, config_toml, root).map_err(|e| {
        let mut text = e.message.clone();
        if let Some(help) = &e.help {
            text.push_str(&format!(" ({help})"));
        }
        PrepareError::Config(text)
    })
}

/// The key of a `worker_setup` run: the SHA-256 of the hook's command line,
/// the snapshot's manifest digest and the project directory. The hook runs
/// again when any of them changes.
pub fn setup_key(hook: &CommandLine, manifest: &Digest, project_dir: &str) -> String {
    let mut hasher = Sha256::new();
    let kind = match hook {
        CommandLine::Shell(_) => "shell",
        CommandLine::Argv(_) => "argv",
    };
    hasher.update(kind.as_bytes());
    for arg in hook.argv() {
        hasher.update([0u8]);
        hasher.update(arg.as_bytes());
    }
    hasher.update(b"\n");
    hasher.update(manifest.to_hex().as_bytes());
    hasher.update(b"\n");
    hasher.update(project_dir.as_bytes());
    hex::encode(hasher.finalize())
}

/// Runs `worker_setup` in `root` unless its marker `setup/<key>` exists;
/// writes the marker when it succeeds. Holds `setup/<key>.lock` meanwhile,
/// so that of several workers sharing the cache directory one runs the hook
/// and the others wait for it, then find its marker.
async fn worker_setup(
    cache: &WorkerCache,
    hook: &CommandLine,
    key: &str,
    root: &Path,
    run_id: &str,
    worker: &str,
) -> Result<SetupStatus, PrepareError> {
    let _guard = cache.setup_lock.lock().await;
    let marker = cache.setup_marker(key);
    if marker.is_file() {
        return Ok(SetupStatus::Cached);
    }
    let _file_lock = lock_file(&marker.with_extension("lock"), "worker_setup").await?;
    if marker.is_file() {
        return Ok(SetupStatus::Cached);
    }
    let env = BTreeMap::from([
        ("SHOAL_RUN_ID".to_owned(), run_id.to_owned()),
        ("SHOAL_WORKER".to_owned(), worker.to_owned()),
    ]);
    let output = run_hook("worker_setup", hook, root, &env).await?;
    tracing::debug!(run = run_id, output = %output, "worker_setup finished");
    let shown = match hook {
        CommandLine::Shell(s) => s.clone(),
        CommandLine::Argv(v) => v.join(" "),
    };
    // Written aside and renamed: a marker is whole or absent.
    let temp = marker.with_extension(format!("tmp-{}", std::process::id()));
    std::fs::write(
        &temp,
        format!("{shown}\nfirst run: {run_id}\nworker: {worker}\n"),
    )
    .and_then(|()| std::fs::rename(&temp, &marker))
    .map_err(|source| PrepareError::Io {
        action: "write",
        path: marker.clone(),
        source,
    })?;
    Ok(SetupStatus::Ran)
}

/// Locks `path` (created if missing) exclusively with `flock`, waiting as
/// long as another process holds it (polling, so a cancelled preparation
/// stops waiting); the lock lasts as long as the returned file.
async fn lock_file(path: &Path, what: &str) -> Result<std::fs::File, PrepareError> {
    let io = |action| {
        move |source| PrepareError::Io {
            action,
            path: path.to_owned(),
            source,
        }
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(io("open"))?;
    let mut told = false;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(std::fs::TryLockError::WouldBlock) => {
                if !told {
                    tracing::info!(
                        "another worker on this cache directory is running {what}; waiting for it ({})",
                        path.display()
                    );
                    told = true;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io("lock")(e)),
        }
    }
}

/// Removes `dir` and everything in it, if it exists.
pub(crate) fn remove_dir_if_present(dir: &Path) -> Result<(), PrepareError> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(PrepareError::Io {
            action: "remove",
            path: dir.to_owned(),
            source,
        }),
    }
}

/// Runs file-system work off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, PrepareError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| PrepareError::Task(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_must_be_plain_names() {
        for ok in ["0192f0c4-7b1e-7000-8000-000000000000", "run_1.a"] {
            assert!(check_run_id(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".", "..", "a/b", "../x", "a b", "é", &"x".repeat(129)] {
            assert!(check_run_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn chunks_respect_count_and_bytes() {
        let digests: Vec<Digest> = (0..600u32).map(|i| Digest::of(&i.to_le_bytes())).collect();
        let mut sizes: BTreeMap<Digest, u64> = digests.iter().map(|d| (*d, 10)).collect();
        let lens: Vec<usize> = chunks(&digests, &sizes).iter().map(Vec::len).collect();
        assert_eq!(lens, [256, 256, 88]);

        // A blob over the byte limit goes alone; the limit splits the rest.
        sizes.insert(digests[1], FETCH_CHUNK_BYTES + 1);
        sizes.insert(digests[3], FETCH_CHUNK_BYTES / 2);
        sizes.insert(digests[4], FETCH_CHUNK_BYTES / 2);
        let split = chunks(&digests[..6], &sizes);
        let lens: Vec<usize> = split.iter().map(Vec::len).collect();
        assert_eq!(lens, [1, 1, 2, 2]);
        assert_eq!(split.concat(), digests[..6]);
        assert!(chunks(&[], &sizes).is_empty());
    }

    #[test]
    fn setup_key_changes_with_each_input() {
        let hook = CommandLine::Shell("make deps".into());
        let a = Digest::of(b"a");
        let base = setup_key(&hook, &a, "");
        assert_eq!(base, setup_key(&hook, &a, ""));
        assert_ne!(base, setup_key(&hook, &Digest::of(b"b"), ""));
        assert_ne!(base, setup_key(&hook, &a, "sub"));
        assert_ne!(
            base,
            setup_key(&CommandLine::Shell("make all".into()), &a, "")
        );
        let argv = CommandLine::Argv(vec!["sh".into(), "-c".into(), "make deps".into()]);
        assert_ne!(base, setup_key(&argv, &a, ""));
        assert_eq!(base.len(), 64);
    }
}
