//! A container's stdout and stderr as text lines: the last N ([`tail_logs`]),
//! the ones since a moment ([`logs_since`]), and a follower from the very
//! first line on, for readiness by log line.
//!
//! The engine stores both streams interleaved, line by line; each stream's
//! lines come back in the order they were written, but the engine copies the
//! two streams on their own, so a stdout and a stderr line written at nearly
//! the same moment may swap. Invalid UTF-8 is replaced.

use crate::DockerError;
use bollard::Docker;
use bollard::container::LogOutput;
use bollard::query_parameters::{LogsOptions, LogsOptionsBuilder};
use std::collections::VecDeque;
use std::pin::Pin;
use std::time::{Duration, UNIX_EPOCH};
use tokio_stream::{Stream, StreamExt};

type LogStream = Pin<Box<dyn Stream<Item = Result<LogOutput, bollard::errors::Error>> + Send>>;

/// The last `n` lines of `container`'s (id or name) stdout and stderr.
pub async fn tail_logs(
    docker: &Docker,
    container: &str,
    n: usize,
) -> Result<Vec<String>, DockerError> {
    if n == 0 {
        return Ok(Vec::new());
    }
    let options = LogsOptionsBuilder::default()
        .stdout(true)
        .stderr(true)
        .tail(&n.to_string())
        .build();
    let lines = read_all(docker, container, options).await?;
    Ok(last(lines, n))
}

/// The last `max_lines` lines of `container`'s stdout and stderr written at
/// or after `since_unix` (seconds since the epoch, fractions included).
pub async fn logs_since(
    docker: &Docker,
    container: &str,
    since_unix: f64,
    max_lines: usize,
) -> Result<Vec<String>, DockerError> {
    if max_lines == 0 {
        return Ok(Vec::new());
    }
    // The engine filters by whole seconds (and applies `tail` before
    // `since`, which still yields the last lines since the moment); the
    // fraction is filtered here by each line's timestamp.
    let whole_seconds = i32::try_from(since_unix.max(0.0).floor() as i64).unwrap_or(i32::MAX);
    let options = LogsOptionsBuilder::default()
        .stdout(true)
        .stderr(true)
        .timestamps(true)
        .since(whole_seconds)
        .tail(&max_lines.to_string())
        .build();
    let lines = read_all(docker, container, options)
        .await?
        .into_iter()
        .filter_map(|line| {
            let (at, text) = split_timestamp(&line);
            match at {
                Some(at) if at < since_unix => None,
                _ => Some(text.to_owned()),
            }
        })
        .collect();
    Ok(last(lines, max_lines))
}

/// Follows a container's log from its first line on, line by line, until the
/// container stops (or has not started yet: then it ends at once).
pub(crate) struct LogFollower {
    stream: LogStream,
    lines: LineSplitter,
    ready: VecDeque<String>,
    ended: bool,
}

impl std::fmt::Debug for LogFollower {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogFollower")
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}

impl LogFollower {
    pub(crate) fn new(docker: &Docker, container: &str) -> Self {
        let options = LogsOptionsBuilder::default()
            .follow(true)
            .stdout(true)
            .stderr(true)
            .tail("all")
            .build();
        LogFollower {
            stream: Box::pin(docker.logs(container, Some(options))),
            lines: LineSplitter::default(),
            ready: VecDeque::new(),
            ended: false,
        }
    }

    /// The next line; `None` once the log has ended.
    pub(crate) async fn next_line(&mut self) -> Option<Result<String, bollard::errors::Error>> {
        loop {
            if let Some(line) = self.ready.pop_front() {
                return Some(Ok(line));
            }
            if self.ended {
                return None;
            }
            match self.stream.next().await {
                Some(Ok(frame)) => self.ready.extend(self.lines.push(&frame.into_bytes())),
                Some(Err(e)) => {
                    self.ended = true;
                    return Some(Err(e));
                }
                None => {
                    self.ended = true;
                    self.ready.extend(self.lines.finish());
                }
            }
        }
    }
}

/// Reads a non-following log request to its end, as lines.
async fn read_all(
    docker: &Docker,
    container: &str,
    options: LogsOptions,
) -> Result<Vec<String>, DockerError> {
    let mut stream = docker.logs(container, Some(options));
    let mut splitter = LineSplitter::default();
    let mut lines = Vec::new();
    while let Some(frame) = stream.next().await {
        let frame = frame.map_err(DockerError::api(format!(
            "read the logs of container `{container}`"
        )))?;
        lines.extend(splitter.push(&frame.into_bytes()));
    }
    lines.extend(splitter.finish());
    Ok(lines)
}

/// The last `n` of `lines`.
fn last(mut lines: Vec<String>, n: usize) -> Vec<String> {
    let excess = lines.len().saturating_sub(n);
    lines.drain(..excess);
    lines
}

/// Splits the engine's `2006-01-02T15:04:05.999999999Z ` prefix off a line:
/// `(seconds since the epoch, the rest)`; `(None, line)` without one.
fn split_timestamp(line: &str) -> (Option<f64>, &str) {
    let Some((stamp, text)) = line.split_once(' ') else {
        return (None, line);
    };
    match humantime::parse_rfc3339(stamp) {
        Ok(at) => (
            Some(
                at.duration_since(UNIX_EPOCH)
                    .unwrap_or(Duration::ZERO)
                    .as_secs_f64(),
            ),
            text,
        ),
        Err(_) => (None, line),
    }
}

/// Cuts a byte stream into lines (without `\n` or `\r\n`), keeping an
/// unterminated last line until more comes or the stream ends.
#[derive(Debug, Default)]
struct LineSplitter {
    partial: Vec<u8>,
}

impl LineSplitter {
    fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        self.partial.extend_from_slice(bytes);
        let Some(end) = self.partial.iter().rposition(|&b| b == b'\n') else {
            return Vec::new();
        };
        let rest = self.partial.split_off(end + 1);
        let complete = std::mem::replace(&mut self.partial, rest);
        complete[..end].split(|&b| b == b'\n').map(text).collect()
    }

    fn finish(&mut self) -> Option<String> {
        if self.partial.is_empty() {
            return None;
        }
        Some(text(&std::mem::take(&mut self.partial)))
    }
}

fn text(line: &[u8]) -> String {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    String::from_utf8_lossy(line).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_cut_at_newlines_across_frames() {
        let mut s = LineSplitter::default();
        assert_eq!(s.push(b"one\ntw"), vec!["one"]);
        assert_eq!(s.push(b"o\r\n\nthree"), vec!["two", ""]);
        assert_eq!(s.push(b" and"), Vec::<String>::new());
        assert_eq!(s.finish().as_deref(), Some("three and"));
        assert_eq!(s.finish(), None);
        assert_eq!(s.push(b"\xffx\n"), vec!["\u{fffd}x"]);
    }

    #[test]
    fn the_engines_timestamps_are_split_off_with_their_fraction() {
        let (at, text) = split_timestamp("2026-12-01T11:52:43.250000000Z hello world");
        assert_eq!(text, "hello world");
        let at = at.expect("a timestamp");
        assert!((at - 1_796_125_963.25).abs() < 1e-6, "{at}");
        assert_eq!(split_timestamp("no stamp here"), (None, "no stamp here"));
        assert_eq!(split_timestamp("plain"), (None, "plain"));
    }

    #[test]
    fn last_keeps_the_end() {
        let lines = || vec!["a".to_owned(), "b".to_owned(), "c".to_owned()];
        assert_eq!(last(lines(), 2), vec!["b", "c"]);
        assert_eq!(last(lines(), 5), vec!["a", "b", "c"]);
    }
}
