//! A worker process's *instance* in a cache directory that several workers
//! on one machine may share.
//!
//! The shared parts of the cache (the content-addressed `blobs/`, the
//! `setup/` markers) are safe for any number of processes. A run directory
//! is not: two workers materializing `runs/<run_id>` over each other pull
//! the tree from under each other's tests. So each process takes an
//! instance, the first index `k` whose `instances/<k>/lock` it can lock
//! exclusively (`flock`, held for the process's lifetime), and keeps its
//! run directories in `instances/<k>/runs/`. The kernel releases the lock of
//! a process that dies however it dies, so a restarted worker takes the
//! same index back (the lowest free one), as a systemd template unit would
//! expect.
//!
//! The lock file says who holds it (pid, name, start time), so that a
//! second worker asking for a name a live worker already uses on this cache
//! is refused with a message naming the holder. Workers without `--name`
//! are named after the host, with `-<k>` from instance 1 on.
//!
//! Starting is serialized by `instances/.start` (held for milliseconds) so
//! that two workers starting at once cannot both miss each other's name.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Highest instance index tried (more workers than this on one cache
/// directory is a mistake, not a deployment).
pub const MAX_INSTANCES: u32 = 1024;
/// How long a starting worker waits for another worker's start to finish.
const START_WAIT: Duration = Duration::from_secs(30);
/// First line of a lock file: the format and its version.
const HEADER: &str = "shoal-worker instance v1";

/// This process's instance of a cache directory: its index, its directory
/// (`<cache>/instances/<k>`) and the name the worker goes by. The lock is
/// held until the value is dropped.
#[derive(Debug)]
pub struct Instance {
    cache: PathBuf,
    index: u32,
    dir: PathBuf,
    name: String,
    explicit_name: bool,
    /// Locked exclusively; closing it releases the instance.
    _lock: File,
}

/// Who holds a live instance, as its lock file says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// The holder's instance directory.
    pub dir: PathBuf,
    /// Its process id.
    pub pid: u32,
    /// Its worker name.
    pub name: String,
    /// When it started (RFC 3339, UTC).
    pub started: String,
}

/// Why no instance could be taken. Messages read well after "failed to ".
#[derive(Debug, thiserror::Error)]
pub enum InstanceError {
    /// The cache directory or a lock file cannot be used.
    #[error("failed to {action} {}: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// To which path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// Another worker's start did not finish in time.
    #[error(
        "another worker has been starting on this cache directory for {}s (it holds {}); is it stopped?",
        START_WAIT.as_secs(),
        path.display()
    )]
    StartBusy {
        /// The start lock.
        path: PathBuf,
    },
    /// Every index up to [`MAX_INSTANCES`] is held.
    #[error("all {MAX_INSTANCES} worker instances of {} are in use", dir.display())]
    Full {
        /// The `instances/` directory.
        dir: PathBuf,
    },
    /// A live worker on the same cache directory already has the name.
    #[error(
        "the worker name `{name}` is already used by another worker on this cache directory (pid {}, instance {}, started {}): give each worker its own --name, or leave --name out so that each gets <host>-<instance>",
        holder.pid,
        holder.dir.display(),
        holder.started
    )]
    NameTaken {
        /// The name asked for.
        name: String,
        /// Who has it.
        holder: Holder,
    },
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> InstanceError + use<> {
    let path = path.to_owned();
    move |source| InstanceError::Io {
        action,
        path,
        source,
    }
}

impl Instance {
    /// Takes the first free instance of `cache_dir` and names the worker:
    /// `name` if given (refused if a live worker on this cache directory
    /// already uses it), else `host` for instance 0 and `<host>-<k>` for
    /// instance `k` (or the next `<host>-<j>` no live worker uses). Run
    /// directories the instance's previous holder left are removed.
    ///
    /// Blocking: file locks and directory removal.
    pub fn acquire(
        cache_dir: &Path,
        name: Option<&str>,
        host: &str,
    ) -> Result<Instance, InstanceError> {
        let root = cache_dir.join("instances");
        fs::create_dir_all(&root).map_err(io_error("create directory", &root))?;
        let _start = lock_start(&root)?;

        let (index, dir, mut lock) = take_free(&root)?;
        let live = live_holders(&root, index)?;
        let explicit_name = name.is_some();
        let name = match name {
            Some(name) => {
                if let Some(holder) = live.iter().find(|h| h.name == name) {
                    return Err(InstanceError::NameTaken {
                        name: name.to_owned(),
                        holder: holder.clone(),
                    });
                }
                name.to_owned()
            }
            None => default_name(host, index, &live),
        };
        let text = format!(
            "{HEADER}\npid={}\nstarted={}\nname={name}\n",
            std::process::id(),
            now_rfc3339()
        );
        let path = dir.join("lock");
        lock.set_len(0)
            .and_then(|()| lock.rewind())
            .and_then(|()| lock.write_all(text.as_bytes()))
            .and_then(|()| lock.flush())
            .map_err(io_error("write", &path))?;

        let runs = dir.join("runs");
        match fs::remove_dir_all(&runs) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error("remove the old run directories in", &runs)(e)),
        }
        fs::create_dir_all(&runs).map_err(io_error("create directory", &runs))?;
        Ok(Instance {
            cache: cache_dir.to_owned(),
            index,
            dir,
            name,
            explicit_name,
            _lock: lock,
        })
    }

    /// The cache directory the instance belongs to.
    pub fn cache_dir(&self) -> &Path {
        &self.cache
    }

    /// The instance's index `k`.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// `<cache>/instances/<k>`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where this instance's run directories live (`<dir>/runs`); no other
    /// process touches it.
    pub fn runs_dir(&self) -> PathBuf {
        self.dir.join("runs")
    }

    /// The worker's name (given, or derived from the host and the index).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the name was given (`--name`) rather than derived.
    pub fn explicit_name(&self) -> bool {
        self.explicit_name
    }
}

/// The default name of instance `index`: `host`, or `<host>-<index>`; if a
/// live worker uses it already (an explicit `--name`), the first
/// `<host>-<j>` none uses.
fn default_name(host: &str, index: u32, live: &[Holder]) -> String {
    let taken = |n: &str| live.iter().any(|h| h.name == n);
    let first = if index == 0 {
        host.to_owned()
    } else {
        format!("{host}-{index}")
    };
    if !taken(&first) {
        return first;
    }
    (1..)
        .map(|j| format!("{host}-{j}"))
        .find(|n| !taken(n))
        .unwrap_or(first)
}

/// Opens (creating, never truncating) a file to `flock`.
fn open_lock_file(path: &Path) -> Result<File, InstanceError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(io_error("open", path))
}

/// Waits for `instances/.start` (another worker may be starting) and
/// returns it locked.
fn lock_start(root: &Path) -> Result<File, InstanceError> {
    let path = root.join(".start");
    let file = open_lock_file(&path)?;
    let deadline = Instant::now() + START_WAIT;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(TryLockError::WouldBlock) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(TryLockError::WouldBlock) => return Err(InstanceError::StartBusy { path }),
            Err(TryLockError::Error(e)) => return Err(io_error("lock", &path)(e)),
        }
    }
}

/// Locks the first free `instances/<k>/lock`.
fn take_free(root: &Path) -> Result<(u32, PathBuf, File), InstanceError> {
    for index in 0..MAX_INSTANCES {
        let dir = root.join(index.to_string());
        fs::create_dir_all(&dir).map_err(io_error("create directory", &dir))?;
        let path = dir.join("lock");
        let file = open_lock_file(&path)?;
        match file.try_lock() {
            Ok(()) => return Ok((index, dir, file)),
            Err(TryLockError::WouldBlock) => continue,
            Err(TryLockError::Error(e)) => return Err(io_error("lock", &path)(e)),
        }
    }
    Err(InstanceError::Full {
        dir: root.to_owned(),
    })
}

/// The holders of the live instances of `root` other than `own`: those
/// whose lock file is locked by another process.
fn live_holders(root: &Path, own: u32) -> Result<Vec<Holder>, InstanceError> {
    let mut out = Vec::new();
    let entries = fs::read_dir(root).map_err(io_error("read directory", root))?;
    for entry in entries {
        let entry = entry.map_err(io_error("read directory", root))?;
        let index = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok());
        if index.is_none() || index == Some(own) {
            continue;
        }
        if let Some(holder) = holder_of(&entry.path())? {
            out.push(holder);
        }
    }
    out.sort_by(|a, b| a.dir.cmp(&b.dir));
    Ok(out)
}

/// Who holds the instance in `dir`, or `None` when no live process does.
/// A free lock is taken (shared) for an instant to find out.
pub fn holder_of(dir: &Path) -> Result<Option<Holder>, InstanceError> {
    let path = dir.join("lock");
    let mut file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error("open", &path)(e)),
    };
    match file.try_lock_shared() {
        Ok(()) => return Ok(None),
        Err(TryLockError::WouldBlock) => {}
        Err(TryLockError::Error(e)) => return Err(io_error("lock", &path)(e)),
    }
    let mut text = String::new();
    file.read_to_string(&mut text)
        .map_err(io_error("read", &path))?;
    Ok(Some(parse_holder(dir, &text)))
}

/// Reads a lock file's text (unknown or missing fields stay empty).
fn parse_holder(dir: &Path, text: &str) -> Holder {
    let mut holder = Holder {
        dir: dir.to_owned(),
        pid: 0,
        name: String::new(),
        started: String::new(),
    };
    for line in text.lines().skip_while(|l| *l == HEADER) {
        match line.split_once('=') {
            Some(("pid", v)) => holder.pid = v.parse().unwrap_or(0),
            Some(("started", v)) => v.clone_into(&mut holder.started),
            Some(("name", v)) => v.clone_into(&mut holder.name),
            _ => {}
        }
    }
    holder
}

fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    i64::try_from(secs)
        .ok()
        .and_then(|s| chrono::DateTime::<chrono::Utc>::from_timestamp(s, 0))
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acquire(dir: &Path, name: Option<&str>) -> Result<Instance, InstanceError> {
        Instance::acquire(dir, name, "box")
    }

    #[test]
    fn instances_are_taken_in_order_and_named_after_the_host() {
        let tmp = tempfile::tempdir().unwrap();
        let a = acquire(tmp.path(), None).unwrap();
        let b = acquire(tmp.path(), None).unwrap();
        let c = acquire(tmp.path(), None).unwrap();
        assert_eq!([a.index(), b.index(), c.index()], [0, 1, 2]);
        assert_eq!([a.name(), b.name(), c.name()], ["box", "box-1", "box-2"]);
        assert_eq!(b.dir(), tmp.path().join("instances/1"));
        assert_eq!(b.runs_dir(), tmp.path().join("instances/1/runs"));
        assert!(b.runs_dir().is_dir());
        assert!(!a.explicit_name());
    }

    #[test]
    fn a_released_instance_is_taken_again_and_its_old_runs_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let a = acquire(tmp.path(), None).unwrap();
        let b = acquire(tmp.path(), None).unwrap();
        let leftover = b.runs_dir().join("run-1/tree/file.txt");
        fs::create_dir_all(leftover.parent().unwrap()).unwrap();
        fs::write(&leftover, "x").unwrap();
        let kept = a.runs_dir().join("run-1/tree/file.txt");
        fs::create_dir_all(kept.parent().unwrap()).unwrap();
        fs::write(&kept, "x").unwrap();
        drop(b);
        // As a worker restarted after SIGKILL: the same index, the same
        // default name, and only its own run directories are cleaned.
        let again = acquire(tmp.path(), None).unwrap();
        assert_eq!((again.index(), again.name()), (1, "box-1"));
        assert!(!leftover.exists());
        assert!(kept.exists(), "another instance's runs are not touched");
    }

    #[test]
    fn the_lock_file_names_the_holder() {
        let tmp = tempfile::tempdir().unwrap();
        let a = acquire(tmp.path(), Some("alpha")).unwrap();
        assert!(a.explicit_name());
        let holder = holder_of(a.dir()).unwrap().expect("held");
        assert_eq!(holder.pid, std::process::id());
        assert_eq!(holder.name, "alpha");
        assert!(holder.started.ends_with('Z'), "{}", holder.started);
        // Probing does not take the instance away.
        let b = acquire(tmp.path(), None).unwrap();
        assert_eq!(b.index(), 1);
        drop(a);
        assert_eq!(holder_of(&tmp.path().join("instances/0")).unwrap(), None);
    }

    #[test]
    fn a_name_held_by_a_live_worker_is_refused_with_the_holder() {
        let tmp = tempfile::tempdir().unwrap();
        let first = acquire(tmp.path(), Some("ci")).unwrap();
        let err = acquire(tmp.path(), Some("ci")).unwrap_err();
        let InstanceError::NameTaken { name, holder } = &err else {
            panic!("{err}");
        };
        assert_eq!(name, "ci");
        assert_eq!(holder.dir, first.dir());
        assert_eq!(holder.pid, std::process::id());
        let text = err.to_string();
        assert!(
            text.contains("--name") && text.contains("instances/0"),
            "{text}"
        );
        // The refused worker released what it took.
        assert_eq!(acquire(tmp.path(), Some("other")).unwrap().index(), 1);
        // Once the holder is gone, the name is free.
        drop(first);
        assert_eq!(acquire(tmp.path(), Some("ci")).unwrap().index(), 0);
    }

    #[test]
    fn a_default_name_steps_around_an_explicit_one() {
        let tmp = tempfile::tempdir().unwrap();
        let _a = acquire(tmp.path(), Some("box-1")).unwrap();
        let b = acquire(tmp.path(), None).unwrap();
        assert_eq!((b.index(), b.name()), (1, "box-2"));
        let c = acquire(tmp.path(), Some("box")).unwrap();
        assert_eq!(c.index(), 2);
        let d = acquire(tmp.path(), None).unwrap();
        assert_eq!((d.index(), d.name()), (3, "box-3"));
    }

    #[test]
    fn a_lock_held_by_another_process_counts_as_live() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("instances/0");
        fs::create_dir_all(&dir).unwrap();
        let lock = dir.join("lock");
        fs::write(
            &lock,
            format!("{HEADER}\npid=1\nstarted=2026-01-01T00:00:00Z\nname=elsewhere\n"),
        )
        .unwrap();
        // Another process (the shell, then `sleep` in its place, keeping
        // fd 9) holds the lock until it is killed.
        let mut child = std::process::Command::new("sh")
            .args([
                "-c",
                r#"exec 9>>"$0" && flock --exclusive 9 && exec sleep 30"#,
            ])
            .arg(&lock)
            .spawn()
            .expect("run sh and flock(1)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while holder_of(&dir).unwrap().is_none() {
            assert!(Instant::now() < deadline, "the child never locked");
            std::thread::sleep(Duration::from_millis(20));
        }
        let err = acquire(tmp.path(), Some("elsewhere")).unwrap_err();
        assert!(matches!(err, InstanceError::NameTaken { .. }), "{err}");
        let mine = acquire(tmp.path(), None).unwrap();
        assert_eq!(mine.index(), 1);
        child.kill().unwrap();
        child.wait().unwrap();
        // The kernel released the dead process's lock.
        drop(mine);
        assert_eq!(acquire(tmp.path(), None).unwrap().index(), 0);
    }
}
