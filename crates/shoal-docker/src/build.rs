//! Suite images built from a Dockerfile and cached by a digest of what the
//! build sees: [`ensure_image`] builds `<repository>:<tag>` once and reuses
//! it for as long as the Dockerfile and its context stay the same.
//!
//! The digest is SHA-256 over the Dockerfile's content and every entry of the
//! context the build is sent (relative path, kind, the executable bit, the
//! content or link target), in path order. The tag is its first 16 hex
//! digits. The context honours `.dockerignore` as Docker does (see
//! [`DockerIgnore`] for the few differences). Images carry only the label
//! `org.shoal.build-digest`, not `org.shoal.managed`: they are a cache meant to
//! outlive runs, and the reaper leaves them alone.
//!
//! Files go into the build context with normalized metadata (owner root,
//! mode 0755 for directories and executables, 0644 otherwise), so that the
//! image is a function of the digest.

use crate::{DockerError, is_not_found};
use bollard::Docker;
use bollard::query_parameters::BuildImageOptionsBuilder;
use bytes::Bytes;
use globset::{GlobBuilder, GlobMatcher};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;

/// The label holding the context digest an image was built from.
pub const DIGEST_LABEL: &str = "org.shoal.build-digest";

/// Where a Dockerfile that lives outside its context is put in the context
/// sent to the engine (a context file of that name is left out then).
const OUTSIDE_DOCKERFILE: &str = ".shoal.Dockerfile";

/// How many lines of build output a failed build's error shows.
const LAST_LINES: usize = 20;

/// Bytes per chunk of the context tar streamed to the engine.
const CHUNK: usize = 256 * 1024;

/// What to build: a Dockerfile, its context directory, and the repository
/// the image is tagged in (e.g. `shoal-build/<suite>`, see
/// [`build_repository`]).
#[derive(Debug, Clone)]
pub struct BuildRequest<'a> {
    pub dockerfile: &'a Path,
    pub context: &'a Path,
    /// Repository of the image (lowercase); the tag is the digest's start.
    pub repository: &'a str,
    /// Further labels for the image, besides `org.shoal.build-digest`.
    pub labels: BTreeMap<String, String>,
}

/// The image [`ensure_image`] made or found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltImage {
    /// `repository:tag`, to create containers from.
    pub reference: String,
    /// SHA-256 (hex) of the Dockerfile and its context.
    pub digest: String,
    /// The image existed already and was not built.
    pub reused: bool,
    /// How long hashing (and building) took.
    pub duration: Duration,
}

/// A repository name for the image of `suite`: `shoal-build/<suite>` with
/// the suite name lowercased and anything outside `[a-z0-9._-]` made `-`.
pub fn build_repository(suite: &str) -> String {
    let name: String = suite
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '.' | '_' | '-') => c,
            _ => '-',
        })
        .collect();
    let name = name.trim_matches(|c| matches!(c, '.' | '_' | '-'));
    if name.is_empty() {
        "shoal-build/suite".to_owned()
    } else {
        format!("shoal-build/{name}")
    }
}

/// Returns the image for `req`: the one tagged with the context's digest if
/// the engine has it, else a new build of it. Build output goes to
/// `progress` line by line. The engine never pulls for this build (no
/// registry needs to be reachable when the base image is present).
///
/// Concurrent calls for the same image in this process build it once; across
/// processes both may build, and the engine keeps the tag of the last.
pub async fn ensure_image(
    docker: &Docker,
    req: &BuildRequest<'_>,
    progress: &mut (dyn FnMut(&str) + Send),
) -> Result<BuiltImage, DockerError> {
    let started = Instant::now();
    let (dockerfile, context) = (req.dockerfile.to_owned(), req.context.to_owned());
    let scanned = tokio::task::spawn_blocking(move || BuildContext::scan(&dockerfile, &context))
        .await
        .map_err(|e| DockerError::Io {
            action: "hash the build context".to_owned(),
            error: io::Error::other(e),
        })??;
    let digest = scanned.digest.clone();
    let reference = format!("{}:{}", req.repository, &digest[..16]);

    let lock = build_lock(&reference);
    let _guard = lock.lock().await;
    let reused = image_has_digest(docker, &reference, &digest).await?;
    if !reused {
        build(docker, req, scanned, &reference, progress).await?;
    }
    Ok(BuiltImage {
        reference,
        digest,
        reused,
        duration: started.elapsed(),
    })
}

/// The digest [`ensure_image`] would tag the image of `dockerfile` and
/// `context` with (blocking: reads every file of the context).
pub fn context_digest(dockerfile: &Path, context: &Path) -> Result<String, DockerError> {
    Ok(BuildContext::scan(dockerfile, context)?.digest)
}

/// One lock per image reference, so that this process builds each once.
fn build_lock(reference: &str) -> Arc<tokio::sync::Mutex<()>> {
    static LOCKS: Mutex<Option<HashMap<String, Arc<tokio::sync::Mutex<()>>>>> = Mutex::new(None);
    let mut locks = LOCKS.lock().unwrap_or_else(PoisonError::into_inner);
    Arc::clone(
        locks
            .get_or_insert_with(HashMap::new)
            .entry(reference.to_owned())
            .or_default(),
    )
}

/// Whether the engine has `reference`, built from `digest`.
async fn image_has_digest(
    docker: &Docker,
    reference: &str,
    digest: &str,
) -> Result<bool, DockerError> {
    match docker.inspect_image(reference).await {
        Ok(image) => Ok(image
            .config
            .and_then(|c| c.labels)
            .is_some_and(|labels| labels.get(DIGEST_LABEL).is_some_and(|d| d == digest))),
        Err(e) if is_not_found(&e) => Ok(false),
        Err(error) => Err(DockerError::Api {
            action: format!("inspect image `{reference}`"),
            error,
        }),
    }
}

/// Builds `scanned` as `reference`, streaming the context to the engine.
async fn build(
    docker: &Docker,
    req: &BuildRequest<'_>,
    scanned: BuildContext,
    reference: &str,
    progress: &mut (dyn FnMut(&str) + Send),
) -> Result<(), DockerError> {
    let mut labels: HashMap<String, String> = req.labels.clone().into_iter().collect();
    labels.insert(DIGEST_LABEL.to_owned(), scanned.digest.clone());
    let options = BuildImageOptionsBuilder::default()
        .dockerfile(&scanned.dockerfile_name)
        .t(reference)
        .rm(true)
        .forcerm(true)
        .labels(&labels)
        .build();

    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(4);
    let writer = tokio::task::spawn_blocking(move || scanned.write_tar(ChannelWriter::new(tx)));
    let body = bollard::body_try_stream(ReceiverStream::new(rx));

    let mut output = BuildOutput::new(progress);
    let mut failure = None;
    {
        let mut stream = docker.build_image(options, None, Some(body));
        while let Some(item) = stream.next().await {
            match item {
                Ok(info) => {
                    if let Some(text) = info.stream {
                        output.push(&text);
                    }
                    if let Some(status) = info.status {
                        output.push_line(&status);
                    }
                }
                Err(bollard::errors::Error::DockerStreamError { error }) => {
                    failure = Some(error);
                    break;
                }
                Err(e) => {
                    failure = Some(e.to_string());
                    break;
                }
            }
        }
        // Dropping the request ends the body, so a writer still sending stops.
    }
    output.finish();

    let written = writer.await.map_err(|e| DockerError::Io {
        action: "send the build context".to_owned(),
        error: io::Error::other(e),
    })?;
    match (written, failure) {
        // A context that could not be read explains a failed build best.
        (Err(error), _) if error.kind() != io::ErrorKind::BrokenPipe => Err(DockerError::Io {
            action: format!("send the build context `{}`", req.context.display()),
            error,
        }),
        (_, Some(message)) => Err(DockerError::Build {
            dockerfile: req.dockerfile.to_owned(),
            message,
            last_lines: output.last.into(),
        }),
        (Err(error), None) => Err(DockerError::Io {
            action: format!("send the build context `{}`", req.context.display()),
            error,
        }),
        (Ok(()), None) => match docker.inspect_image(reference).await {
            Ok(_) => Ok(()),
            Err(e) => Err(DockerError::Build {
                dockerfile: req.dockerfile.to_owned(),
                message: format!("the build ended, but image `{reference}` is not there: {e}"),
                last_lines: output.last.into(),
            }),
        },
    }
}

/// Build output cut into lines for `progress`, keeping the last few.
struct BuildOutput<'p> {
    progress: &'p mut (dyn FnMut(&str) + Send),
    partial: String,
    last: VecDeque<String>,
}

impl<'p> BuildOutput<'p> {
    fn new(progress: &'p mut (dyn FnMut(&str) + Send)) -> Self {
        BuildOutput {
            progress,
            partial: String::new(),
            last: VecDeque::new(),
        }
    }

    /// Text that may hold several lines or end mid-line.
    fn push(&mut self, text: &str) {
        self.partial.push_str(text);
        while let Some(end) = self.partial.find('\n') {
            let line: String = self.partial.drain(..=end).collect();
            self.push_line(&line);
        }
    }

    fn push_line(&mut self, line: &str) {
        let line = line.trim_end_matches(['\n', '\r']);
        (self.progress)(line);
        if self.last.len() == LAST_LINES {
            self.last.pop_front();
        }
        self.last.push_back(line.to_owned());
    }

    fn finish(&mut self) {
        if !self.partial.is_empty() {
            let rest = std::mem::take(&mut self.partial);
            self.push_line(&rest);
        }
    }
}

/// A `Write` that sends what it is given, in chunks, into a channel; a
/// closed channel (the request ended) is a `BrokenPipe` error.
struct ChannelWriter {
    tx: mpsc::Sender<io::Result<Bytes>>,
    buffer: Vec<u8>,
}

impl ChannelWriter {
    fn new(tx: mpsc::Sender<io::Result<Bytes>>) -> Self {
        ChannelWriter {
            tx,
            buffer: Vec::with_capacity(CHUNK),
        }
    }

    fn send_buffer(&mut self) -> io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(
            &mut self.buffer,
            Vec::with_capacity(CHUNK),
        ));
        self.tx.blocking_send(Ok(chunk)).map_err(|_| {
            io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the engine stopped reading the context",
            )
        })
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buffer.extend_from_slice(data);
        if self.buffer.len() >= CHUNK {
            self.send_buffer()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send_buffer()
    }
}

/// What a build is sent: the context's entries after `.dockerignore`, the
/// Dockerfile, and their digest.
#[derive(Debug)]
struct BuildContext {
    root: PathBuf,
    /// Sorted by path.
    entries: Vec<Entry>,
    dockerfile: Vec<u8>,
    /// The Dockerfile's path in the tar (`/`-separated).
    dockerfile_name: String,
    /// Whether `entries` holds the Dockerfile already.
    dockerfile_in_entries: bool,
    digest: String,
}

#[derive(Debug)]
struct Entry {
    /// Relative to the context root, `/`-separated.
    rel: PathBuf,
    kind: EntryKind,
}

#[derive(Debug)]
enum EntryKind {
    Dir,
    File { executable: bool },
    Symlink { target: PathBuf },
}

impl BuildContext {
    fn scan(dockerfile: &Path, context: &Path) -> Result<BuildContext, DockerError> {
        let root = context.canonicalize().map_err(DockerError::io(format!(
            "open the build context `{}`",
            context.display()
        )))?;
        let dockerfile_path = dockerfile.canonicalize().map_err(DockerError::io(format!(
            "open the Dockerfile `{}`",
            dockerfile.display()
        )))?;
        let content = std::fs::read(&dockerfile_path).map_err(DockerError::io(format!(
            "read the Dockerfile `{}`",
            dockerfile.display()
        )))?;
        let ignore = DockerIgnore::load(&root)?;

        let mut entries = Vec::new();
        walk(&root, Path::new(""), &ignore, &mut entries)?;
        let inside = dockerfile_path
            .strip_prefix(&root)
            .ok()
            .and_then(|rel| rel.to_str())
            .map(str::to_owned);
        let dockerfile_name = match inside {
            Some(rel) => rel,
            None => {
                entries.retain(|e| e.rel != Path::new(OUTSIDE_DOCKERFILE));
                OUTSIDE_DOCKERFILE.to_owned()
            }
        };
        let dockerfile_in_entries = entries.iter().any(|e| e.rel == Path::new(&dockerfile_name));

        let mut hasher = Sha256::new();
        hasher.update(b"shoal build context v1\0");
        hasher.update(dockerfile_name.as_bytes());
        hasher.update([0]);
        hasher.update(Sha256::digest(&content));
        for entry in &entries {
            let (tag, extra): (&[u8], Vec<u8>) = match &entry.kind {
                EntryKind::Dir => (b"d", Vec::new()),
                EntryKind::File { executable } => (
                    if *executable { b"x" } else { b"f" },
                    hash_file(&root.join(&entry.rel))?.to_vec(),
                ),
                EntryKind::Symlink { target } => (b"l", target.as_os_str().as_bytes().to_vec()),
            };
            hasher.update(tag);
            hasher.update(entry.rel.as_os_str().as_bytes());
            hasher.update([0]);
            hasher.update((extra.len() as u64).to_le_bytes());
            hasher.update(&extra);
        }
        Ok(BuildContext {
            root,
            entries,
            dockerfile: content,
            dockerfile_name,
            dockerfile_in_entries,
            digest: hex::encode(hasher.finalize()),
        })
    }

    /// Writes the context as a tar to `out` (blocking).
    fn write_tar(self, out: ChannelWriter) -> io::Result<()> {
        let mut tar = tar::Builder::new(out);
        for entry in &self.entries {
            let path = self.root.join(&entry.rel);
            let mut header = tar::Header::new_gnu();
            header.set_uid(0);
            header.set_gid(0);
            header.set_mtime(mtime(&path));
            match &entry.kind {
                EntryKind::Dir => {
                    header.set_entry_type(tar::EntryType::Directory);
                    header.set_mode(0o755);
                    header.set_size(0);
                    tar.append_data(&mut header, &entry.rel, io::empty())?;
                }
                EntryKind::File { executable } => {
                    let file = std::fs::File::open(&path)?;
                    let size = file.metadata()?.len();
                    header.set_entry_type(tar::EntryType::Regular);
                    header.set_mode(if *executable { 0o755 } else { 0o644 });
                    header.set_size(size);
                    let mut data = file.take(size);
                    tar.append_data(&mut header, &entry.rel, &mut data)?;
                    if data.limit() != 0 {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            format!("`{}` shrank while it was sent", path.display()),
                        ));
                    }
                }
                EntryKind::Symlink { target } => {
                    header.set_entry_type(tar::EntryType::Symlink);
                    header.set_mode(0o777);
                    header.set_size(0);
                    tar.append_link(&mut header, &entry.rel, target)?;
                }
            }
        }
        if !self.dockerfile_in_entries {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(tar::EntryType::Regular);
            header.set_mode(0o644);
            header.set_size(self.dockerfile.len() as u64);
            tar.append_data(
                &mut header,
                &self.dockerfile_name,
                self.dockerfile.as_slice(),
            )?;
        }
        let mut out = tar.into_inner()?;
        out.flush()
    }
}

fn mtime(path: &Path) -> u64 {
    std::fs::symlink_metadata(path)
        .ok()
        .and_then(|m| m.modified().ok())
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs())
}

fn hash_file(path: &Path) -> Result<[u8; 32], DockerError> {
    let read = || -> io::Result<[u8; 32]> {
        let mut file = std::fs::File::open(path)?;
        let mut hasher = Sha256::new();
        io::copy(&mut file, &mut hasher)?;
        Ok(hasher.finalize().into())
    };
    read().map_err(DockerError::io(format!(
        "read `{}` of the build context",
        path.display()
    )))
}

/// Collects the entries under `root/dir` that `ignore` keeps, sorted.
/// Excluded directories are entered only when an exception may re-include
/// something below them; sockets, FIFOs and devices are skipped.
fn walk(
    root: &Path,
    dir: &Path,
    ignore: &DockerIgnore,
    entries: &mut Vec<Entry>,
) -> Result<(), DockerError> {
    let full = root.join(dir);
    let io_error = || DockerError::io(format!("list `{}` of the build context", full.display()));
    let mut names: Vec<(OsString, std::fs::FileType)> = std::fs::read_dir(&full)
        .map_err(io_error())?
        .map(|e| e.and_then(|e| Ok((e.file_name(), e.file_type()?))))
        .collect::<io::Result<_>>()
        .map_err(io_error())?;
    names.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    for (name, file_type) in names {
        let rel = dir.join(&name);
        let excluded = ignore.excludes(&rel);
        if file_type.is_dir() {
            if !excluded {
                entries.push(Entry {
                    rel: rel.clone(),
                    kind: EntryKind::Dir,
                });
            }
            if !excluded || ignore.has_exceptions {
                walk(root, &rel, ignore, entries)?;
            }
        } else if excluded {
            continue;
        } else if file_type.is_symlink() {
            let target = std::fs::read_link(root.join(&rel)).map_err(DockerError::io(format!(
                "read link `{}` of the build context",
                rel.display()
            )))?;
            entries.push(Entry {
                rel,
                kind: EntryKind::Symlink { target },
            });
        } else if file_type.is_file() {
            let mode = std::fs::metadata(root.join(&rel))
                .map_err(DockerError::io(format!(
                    "read `{}` of the build context",
                    rel.display()
                )))?
                .permissions()
                .mode();
            entries.push(Entry {
                rel,
                kind: EntryKind::File {
                    executable: mode & 0o111 != 0,
                },
            });
        }
    }
    Ok(())
}

/// The patterns of a context's `.dockerignore`, matched as Docker does: each
/// line is trimmed and cleaned (`/` prefix, `.` and `..` removed), `#` starts
/// a comment line, `!` makes an exception; `*` and `?` do not match `/`, `**`
/// matches any number of directories; a pattern that matches a directory
/// matches everything below it; the last matching pattern decides.
///
/// Differences from Docker: patterns are compiled by `globset`, so `**` is
/// special only as a whole path component (`a**b` is `a*b`), and a malformed
/// pattern is an error here rather than matching nothing. (The `ignore`
/// crate's gitignore matcher is not used: gitignore matches `*.log` at any
/// depth and cannot re-include files of an excluded directory; Docker does
/// neither.)
#[derive(Debug, Default)]
struct DockerIgnore {
    patterns: Vec<(GlobMatcher, bool)>,
    has_exceptions: bool,
}

impl DockerIgnore {
    fn load(root: &Path) -> Result<DockerIgnore, DockerError> {
        let path = root.join(".dockerignore");
        match std::fs::read_to_string(&path) {
            Ok(text) => DockerIgnore::parse(&text).map_err(|error| DockerError::Io {
                action: format!("read `{}`", path.display()),
                error,
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(DockerIgnore::default()),
            Err(error) => Err(DockerError::Io {
                action: format!("read `{}`", path.display()),
                error,
            }),
        }
    }

    fn parse(text: &str) -> io::Result<DockerIgnore> {
        let mut ignore = DockerIgnore::default();
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        for line in text.lines() {
            if line.starts_with('#') {
                continue;
            }
            let mut pattern = line.trim();
            let exception = pattern.starts_with('!');
            if exception {
                pattern = pattern[1..].trim();
            }
            let pattern = clean(pattern);
            if pattern.is_empty() {
                continue;
            }
            let glob = GlobBuilder::new(&pattern)
                .literal_separator(true)
                .backslash_escape(true)
                .build()
                .map_err(|e| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("bad pattern `{line}`: {e}"),
                    )
                })?;
            ignore.patterns.push((glob.compile_matcher(), exception));
            ignore.has_exceptions |= exception;
        }
        Ok(ignore)
    }

    /// Whether `rel` (relative to the context root) is left out.
    fn excludes(&self, rel: &Path) -> bool {
        let mut excluded = false;
        for (glob, exception) in &self.patterns {
            if rel
                .ancestors()
                .any(|p| !p.as_os_str().is_empty() && glob.is_match(p))
            {
                excluded = !exception;
            }
        }
        excluded
    }
}

/// Go's `filepath.Clean` of a pattern, made relative: no empty, `.` or
/// leading `/` components, `..` dropping the one before.
fn clean(pattern: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in pattern.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            part => parts.push(part),
        }
    }
    parts.join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ignore(text: &str) -> DockerIgnore {
        DockerIgnore::parse(text).expect("patterns")
    }

    #[test]
    fn patterns_are_anchored_at_the_root_and_cover_what_is_below() {
        let i = ignore("# comment\n*.log\n/build/\n  tmp  \n");
        assert!(i.excludes(Path::new("a.log")));
        assert!(!i.excludes(Path::new("sub/a.log")), "unlike gitignore");
        assert!(i.excludes(Path::new("build")));
        assert!(i.excludes(Path::new("build/out/x.o")));
        assert!(i.excludes(Path::new("tmp/x")));
        assert!(!i.excludes(Path::new("src/tmp")));
        assert!(!i.excludes(Path::new("# comment")));
    }

    #[test]
    fn double_star_crosses_directories() {
        let i = ignore("**/*.pyc\ndocs/**/draft.md\n");
        assert!(i.excludes(Path::new("a.pyc")));
        assert!(i.excludes(Path::new("a/b/c.pyc")));
        assert!(i.excludes(Path::new("docs/draft.md")));
        assert!(i.excludes(Path::new("docs/x/y/draft.md")));
        assert!(!i.excludes(Path::new("draft.md")));
    }

    #[test]
    fn the_last_matching_pattern_decides_and_exceptions_reach_into_excluded_dirs() {
        let i = ignore("logs\n!logs/keep.log\n*.md\n!README.md\nREADME.md\n");
        assert!(i.excludes(Path::new("logs")));
        assert!(i.excludes(Path::new("logs/a.log")));
        assert!(!i.excludes(Path::new("logs/keep.log")));
        assert!(i.excludes(Path::new("README.md")));
        assert!(i.has_exceptions);
    }

    #[test]
    fn patterns_are_cleaned_like_go_filepath_clean() {
        assert_eq!(clean("/a//b/./c/"), "a/b/c");
        assert_eq!(clean("a/../b"), "b");
        assert_eq!(clean("."), "");
        let i = ignore("./secret/\n");
        assert!(i.excludes(Path::new("secret/key")));
    }

    #[test]
    fn repositories_are_valid_docker_names() {
        assert_eq!(build_repository("api"), "shoal-build/api");
        assert_eq!(build_repository("Unit Tests!"), "shoal-build/unit-tests");
        assert_eq!(build_repository("__"), "shoal-build/suite");
    }

    #[test]
    fn build_output_is_cut_into_lines_and_the_last_ones_kept() {
        let mut seen = Vec::new();
        let mut progress = |line: &str| seen.push(line.to_owned());
        let mut output = BuildOutput::new(&mut progress);
        output.push("Step 1/2 : FROM x\n ---> ab");
        output.push("c\r\n");
        for i in 0..30 {
            output.push(&format!("line {i}\n"));
        }
        output.push("tail");
        output.finish();
        let last: Vec<String> = output.last.iter().cloned().collect();
        assert_eq!(last.len(), LAST_LINES);
        assert_eq!(last.last().map(String::as_str), Some("tail"));
        assert_eq!(&seen[..2], ["Step 1/2 : FROM x", " ---> abc"]);
        assert_eq!(seen.len(), 33);
    }

    #[test]
    fn the_digest_covers_content_paths_and_the_executable_bit_but_not_ignored_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        let write = |rel: &str, text: &str| {
            let path = root.join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        };
        write("Dockerfile", "FROM scratch\n");
        write("src/a.txt", "a");
        write(".dockerignore", "cache\n");
        let dockerfile = root.join("Dockerfile");
        let digest = || context_digest(&dockerfile, root).expect("digest");
        let first = digest();
        assert_eq!(first.len(), 64);
        assert_eq!(digest(), first, "stable");

        write("cache/big.bin", "ignored");
        assert_eq!(digest(), first, "ignored files do not count");

        write("src/a.txt", "b");
        let changed = digest();
        assert_ne!(changed, first);

        let script = root.join("src/a.txt");
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let executable = digest();
        assert_ne!(executable, changed);

        std::fs::rename(root.join("src"), root.join("lib")).unwrap();
        assert_ne!(digest(), executable, "paths count");

        write("Dockerfile", "FROM scratch\nCOPY . /\n");
        let other_dockerfile = digest();
        assert_ne!(other_dockerfile, executable);
    }
}
