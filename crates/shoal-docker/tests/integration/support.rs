//! Engine and image set-up shared by the tests, and small helpers.

use shoal_docker::{BindMount, ContainerOpts, DockerExecutor, PathMap, SlotContainer, labels};
use shoal_exec::{Executor, ProcessExit, ProcessSpec};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

pub use shoal_docker::Docker;

pub const IMAGE: &str = "shoal-test/busybox:1";
pub const PYTHON_IMAGE: &str = "shoal-test/python:1";

/// The engine, with the test image present (always `Some`: a missing
/// engine fails the test).
pub async fn engine() -> Option<Docker> {
    // Only tests the build may run with Docker get here (shoal_has_docker;
    // the others are ignored, saying why): no engine is a failure.
    let docker = match shoal_docker::connect().await {
        Ok(docker) => docker,
        Err(e) => panic!("SHOAL_TEST_DOCKER offered Docker, but the engine is not reachable: {e}"),
    };
    ensure_image();
    reap_leftovers(&docker).await;
    Some(docker)
}

/// Removes, once per test process, what earlier test processes that died
/// (a panic in the last test, a Ctrl-C) left behind.
async fn reap_leftovers(docker: &Docker) {
    static DONE: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    DONE.get_or_init(|| async {
        let reaped = shoal_docker::reap(docker, &shoal_docker::ReapFilter::default())
            .await
            .expect("reap leftovers of earlier test runs");
        if reaped.total() > 0 {
            eprintln!("removed leftovers of dead runs: {reaped:?}");
        }
    })
    .await;
}

/// Runs `scripts/test-images.sh` once if a test image is missing.
fn ensure_image() {
    static CHECKED: Mutex<bool> = Mutex::new(false);
    let mut checked = CHECKED.lock().unwrap_or_else(|e| e.into_inner());
    if *checked {
        return;
    }
    let present = Command::new("docker")
        .args([
            "image",
            "inspect",
            "--format",
            "{{.Id}}",
            IMAGE,
            PYTHON_IMAGE,
        ])
        .output()
        .is_ok_and(|o| o.status.success());
    if !present {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/test-images.sh");
        let status = Command::new("bash")
            .arg(&script)
            .status()
            .expect("run scripts/test-images.sh");
        assert!(
            status.success(),
            "scripts/test-images.sh failed ({status}): cannot make {IMAGE}"
        );
    }
    *checked = true;
}

/// Container options for test `name`: the busybox image, labelled with a
/// run id unique to this test process.
pub fn opts(name: &str) -> ContainerOpts {
    let mut opts = ContainerOpts::new(IMAGE);
    opts.name_prefix = format!("shoal-test-{name}");
    opts.labels = labels::run_labels(&run_id(name), Some(0), None);
    opts
}

pub fn run_id(name: &str) -> String {
    format!("test-{name}-{}", std::process::id())
}

/// A slot container with a temporary workspace mounted at `/workspace`, and
/// an executor for it.
pub struct Slot {
    pub container: Arc<SlotContainer>,
    pub executor: DockerExecutor,
    pub workspace: tempfile::TempDir,
}

impl Slot {
    pub async fn start(docker: &Docker, mut opts: ContainerOpts) -> Slot {
        let workspace = tempfile::tempdir().expect("workspace");
        opts.mounts.push(BindMount {
            host: workspace.path().to_owned(),
            container: "/workspace".to_owned(),
            read_only: false,
        });
        opts.workdir = Some("/workspace".to_owned());
        let container = Arc::new(
            SlotContainer::start(docker, opts)
                .await
                .expect("start container"),
        );
        let executor = DockerExecutor::new(
            Arc::clone(&container),
            PathMap::new(workspace.path(), "/workspace"),
        );
        Slot {
            container,
            executor,
            workspace,
        }
    }

    pub fn root(&self) -> PathBuf {
        self.workspace.path().to_owned()
    }

    pub fn spec(&self, argv: &[&str]) -> ProcessSpec {
        ProcessSpec {
            argv: argv.iter().map(|s| s.to_string()).collect(),
            cwd: self.root(),
            env: BTreeMap::new(),
            progress_pipe: false,
            stdin_pipe: false,
            output_cap: 1 << 20,
        }
    }

    pub async fn run(&self, argv: &[&str]) -> ProcessExit {
        self.run_spec(&self.spec(argv)).await
    }

    pub async fn run_spec(&self, spec: &ProcessSpec) -> ProcessExit {
        let process = self.executor.spawn(spec).await.expect("spawn");
        process.wait().await.expect("wait")
    }

    /// How many processes in the container run exactly `args`.
    pub async fn count_processes(&self, args: &str) -> usize {
        let exit = self.run(&["ps", "-o", "args"]).await;
        exit.output
            .text
            .lines()
            .filter(|l| l.trim() == args)
            .count()
    }

    pub async fn remove(self) {
        self.container
            .stop_and_remove()
            .await
            .expect("remove container");
    }
}
