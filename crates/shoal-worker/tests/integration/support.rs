//! Shared set-up: a source tree packed into a "coordinator-side" blob
//! store, a blob source closure reading from it (recording what was asked),
//! and a worker cache to prepare into.

use std::cell::RefCell;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::rc::Rc;
use std::sync::OnceLock;

use shoal_snapshot::{BlobStore, Digest, pack};
use shoal_worker::{PreparedRun, RunInputs, WorkerCache, prepare_run};

/// Fails (never skips) when python3 cannot import pytest.
pub fn require_pytest() {
    static CHECK: OnceLock<Result<(), String>> = OnceLock::new();
    let check = CHECK.get_or_init(|| {
        match Command::new("python3").args(["-c", "import pytest"]).output() {
            Ok(out) if out.status.success() => Ok(()),
            Ok(out) => Err(format!(
                "python3 cannot import pytest (python3 -m pip install -r scripts/requirements-test.txt):\n{}",
                String::from_utf8_lossy(&out.stderr)
            )),
            Err(e) => Err(format!("python3 is not runnable ({e})")),
        }
    });
    if let Err(e) = check {
        panic!("{e}");
    }
}

/// `fixtures/` in the repository (read only).
fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures")
        .canonicalize()
        .expect("fixtures/ exists")
}

/// Copies a tree, leaving out caches a local run may have left.
fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if matches!(
            name.to_str(),
            Some("__pycache__" | ".pytest_cache" | ".shoal" | "target")
        ) {
            continue;
        }
        let kind = entry.file_type().unwrap();
        let dest = to.join(&name);
        if kind.is_dir() {
            copy_tree(&entry.path(), &dest);
        } else if kind.is_file() {
            fs::copy(entry.path(), &dest).unwrap();
        }
    }
}

/// A client's working tree (a copy of the pytest fixture, possibly under
/// a subdirectory), the coordinator's blob store it is uploaded to, and a
/// worker cache.
pub struct Setup {
    pub tmp: tempfile::TempDir,
    /// The tree that gets packed.
    pub source: PathBuf,
    /// What the coordinator holds.
    pub upstream: BlobStore,
    pub cache: WorkerCache,
}

impl Setup {
    /// The pytest fixture at the root of the packed tree.
    pub fn pytest() -> Setup {
        Setup::pytest_in("")
    }

    /// The pytest fixture at `project_dir` inside the packed tree.
    pub fn pytest_in(project_dir: &str) -> Setup {
        require_pytest();
        let tmp = tempfile::tempdir().unwrap();
        let source = tmp.path().join("source");
        copy_tree(
            &fixtures_dir().join("pytest-project"),
            &source.join(project_dir),
        );
        let upstream = BlobStore::open(tmp.path().join("upstream")).unwrap();
        let cache = WorkerCache::open(&tmp.path().join("cache")).unwrap();
        Setup {
            tmp,
            source,
            upstream,
            cache,
        }
    }

    /// Another worker on the same cache directory as `cache` (the next
    /// instance).
    pub fn shared_cache(&self) -> WorkerCache {
        WorkerCache::open(&self.tmp.path().join("cache")).unwrap()
    }

    /// A second worker cache, empty.
    pub fn other_cache(&self, name: &str) -> WorkerCache {
        WorkerCache::open(&self.tmp.path().join(name)).unwrap()
    }

    /// Packs the source tree and uploads it (blobs and manifest); returns
    /// the manifest digest.
    pub fn upload(&self) -> Digest {
        let packed = pack(&self.source).unwrap();
        for (digest, path) in &packed.sources {
            assert_eq!(self.upstream.put_file(path).unwrap(), *digest);
        }
        self.upstream.put_bytes(&packed.manifest.to_json()).unwrap()
    }

    /// Writes `contents` to `rel` in the source tree.
    pub fn write(&self, rel: &str, contents: &str) {
        let path = self.source.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, contents).unwrap();
    }
}

/// Run inputs for `run_id` of the snapshot `manifest`.
pub fn inputs(run_id: &str, manifest: &Digest, config_toml: &str, project_dir: &str) -> RunInputs {
    RunInputs {
        run_id: run_id.to_owned(),
        manifest_digest: manifest.to_hex(),
        config_toml: config_toml.to_owned(),
        project_dir: project_dir.to_owned(),
        scopes: Default::default(),
        settings_json: String::new(),
    }
}

/// The digests each fetch asked for.
pub type Asked = Rc<RefCell<Vec<Vec<Digest>>>>;

/// What the test blob sources return.
pub type Fetched = std::future::Ready<Result<Vec<(Digest, Vec<u8>)>, String>>;

/// A blob source reading from `store`, recording every request in `asked`.
pub fn source(store: &BlobStore, asked: &Asked) -> impl FnMut(Vec<Digest>) -> Fetched + use<> {
    let store = store.clone();
    let asked = asked.clone();
    move |digests: Vec<Digest>| {
        asked.borrow_mut().push(digests.clone());
        let result = digests
            .iter()
            .map(|d| {
                store
                    .read(d)
                    .map(|bytes| (*d, bytes))
                    .map_err(|e| e.to_string())
            })
            .collect();
        std::future::ready(result)
    }
}

/// Prepares `inputs` in `cache` from `upstream`; returns the run and what
/// was fetched.
pub async fn prepare(
    cache: &WorkerCache,
    upstream: &BlobStore,
    inputs: &RunInputs,
) -> (
    Result<PreparedRun, shoal_worker::PrepareError>,
    Vec<Vec<Digest>>,
) {
    let asked = Asked::default();
    let result = prepare_run(cache, inputs, "test-worker", source(upstream, &asked)).await;
    let asked = asked.borrow().clone();
    (result, asked)
}

/// The name of the discovered test whose node id ends with `suffix`.
pub fn test_named(run: &PreparedRun, suffix: &str) -> String {
    let mut names: Vec<&str> = run
        .tests
        .keys()
        .map(|id| id.name.as_str())
        .filter(|n| n.ends_with(suffix))
        .collect();
    names.sort();
    assert_eq!(names.len(), 1, "tests ending with {suffix}: {names:?}");
    names[0].to_owned()
}
