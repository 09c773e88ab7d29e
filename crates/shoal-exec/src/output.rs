//! Output capture: stdout and stderr read concurrently into one buffer that
//! keeps the first and the last half of a byte cap and counts the rest.

use shoal_core::CapturedOutput;
use std::collections::VecDeque;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{ChildStderr, ChildStdout};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const CHUNK: usize = 64 * 1024;

/// A background task reading a child's stdout and stderr until both close.
#[derive(Debug)]
pub(crate) struct Capture {
    task: JoinHandle<OutputBuffer>,
    /// Dropping it tells the task to stop reading.
    stop: oneshot::Sender<()>,
}

impl Capture {
    pub(crate) fn start(
        stdout: Option<ChildStdout>,
        stderr: Option<ChildStderr>,
        cap: u64,
    ) -> Self {
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(read_both(stdout, stderr, OutputBuffer::new(cap), stopped));
        Capture { task, stop }
    }

    /// Waits up to `drain` for both pipes to close, then abandons them and
    /// returns what was read.
    pub(crate) async fn finish(self, drain: Duration) -> CapturedOutput {
        let Capture { mut task, stop } = self;
        let joined = match tokio::time::timeout(drain, &mut task).await {
            Ok(joined) => joined,
            Err(_) => {
                tracing::debug!(
                    "output pipes still open after the process group ended; abandoning them"
                );
                drop(stop);
                task.await
            }
        };
        match joined {
            Ok(buffer) => buffer.finish(),
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => {
                tracing::warn!("output capture task did not finish: {e}");
                CapturedOutput::default()
            }
        }
    }
}

async fn read_both(
    mut stdout: Option<ChildStdout>,
    mut stderr: Option<ChildStderr>,
    mut buffer: OutputBuffer,
    mut stop: oneshot::Receiver<()>,
) -> OutputBuffer {
    let (mut out_chunk, mut err_chunk) = (vec![0; CHUNK], vec![0; CHUNK]);
    while stdout.is_some() || stderr.is_some() {
        tokio::select! {
            n = read_chunk(&mut stdout, &mut out_chunk) => buffer.push(&out_chunk[..n]),
            n = read_chunk(&mut stderr, &mut err_chunk) => buffer.push(&err_chunk[..n]),
            _ = &mut stop => break,
        }
    }
    buffer
}

/// Reads one chunk. At end of stream (or on a read error) clears `stream`
/// and returns 0; never resolves if `stream` is already `None`.
async fn read_chunk<R: AsyncRead + Unpin>(stream: &mut Option<R>, chunk: &mut [u8]) -> usize {
    let Some(reader) = stream else {
        return std::future::pending().await;
    };
    match reader.read(chunk).await {
        Ok(n) if n > 0 => n,
        Ok(_) => {
            *stream = None;
            0
        }
        Err(e) => {
            tracing::debug!("stopped reading child output: {e}");
            *stream = None;
            0
        }
    }
}

/// Keeps the first `cap / 2` bytes and the last `cap - cap / 2` bytes pushed
/// into it, counting the bytes dropped in between. Memory stays within `cap`.
///
/// Public for executors in other crates (the docker executor feeds it from
/// the engine's output stream), so that every executor caps output alike.
#[derive(Debug)]
pub struct OutputBuffer {
    head: Vec<u8>,
    head_cap: usize,
    tail: VecDeque<u8>,
    tail_cap: usize,
    dropped: u64,
}

impl OutputBuffer {
    /// An empty buffer keeping at most `cap` bytes.
    pub fn new(cap: u64) -> Self {
        let cap = usize::try_from(cap).unwrap_or(usize::MAX);
        let head_cap = cap / 2;
        OutputBuffer {
            head: Vec::new(),
            head_cap,
            tail: VecDeque::new(),
            tail_cap: cap - head_cap,
            dropped: 0,
        }
    }

    /// Appends output as it arrives, dropping what falls between head and tail.
    pub fn push(&mut self, bytes: &[u8]) {
        let to_head = bytes.len().min(self.head_cap - self.head.len());
        let (head_part, rest) = bytes.split_at(to_head);
        self.head.extend_from_slice(head_part);

        // Only the last `tail_cap` bytes of `rest` can survive.
        let rest = &rest[rest.len().saturating_sub(self.tail_cap)..];
        let overflow = (self.tail.len() + rest.len()).saturating_sub(self.tail_cap);
        self.tail.drain(..overflow);
        self.tail.extend(rest);
        self.dropped += (bytes.len() - to_head - rest.len() + overflow) as u64;
    }

    /// The kept text (lossily decoded), with a marker where bytes were dropped.
    pub fn finish(self) -> CapturedOutput {
        let mut text = String::from_utf8_lossy(&self.head).into_owned();
        if self.dropped > 0 {
            text.push_str(&format!(
                "\n[... shoal dropped {} bytes of output ...]\n",
                self.dropped
            ));
        }
        let (a, b) = self.tail.as_slices();
        text.push_str(&String::from_utf8_lossy(&[a, b].concat()));
        CapturedOutput {
            text,
            truncated_bytes: self.dropped,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn capped(cap: u64, input: &[u8], chunk: usize) -> CapturedOutput {
        let mut buffer = OutputBuffer::new(cap);
        input.chunks(chunk).for_each(|c| buffer.push(c));
        buffer.finish()
    }

    #[test]
    fn output_under_the_cap_is_kept_whole() {
        let out = capped(100, b"hello\nworld\n", 3);
        assert_eq!(out.text, "hello\nworld\n");
        assert_eq!(out.truncated_bytes, 0);
    }

    #[test]
    fn output_exactly_at_the_cap_is_kept_whole() {
        let out = capped(10, b"0123456789", 4);
        assert_eq!(out.text, "0123456789");
        assert_eq!(out.truncated_bytes, 0);
    }

    #[test]
    fn overflow_keeps_head_and_tail_for_every_chunking() {
        let input = b"0123456789abcdefghijklmnopqrstuvwxyz";
        for chunk in 1..=input.len() {
            let out = capped(10, input, chunk);
            assert_eq!(
                out.text, "01234\n[... shoal dropped 26 bytes of output ...]\nvwxyz",
                "chunk size {chunk}"
            );
            assert_eq!(out.truncated_bytes, 26, "chunk size {chunk}");
        }
    }

    #[test]
    fn odd_cap_gives_the_extra_byte_to_the_tail() {
        let out = capped(5, b"abcdefghij", 10);
        assert_eq!(
            out.text,
            "ab\n[... shoal dropped 5 bytes of output ...]\nhij"
        );
        assert_eq!(out.truncated_bytes, 5);
    }

    #[test]
    fn zero_cap_drops_everything() {
        let out = capped(0, b"abc", 2);
        assert_eq!(out.truncated_bytes, 3);
        assert_eq!(out.text, "\n[... shoal dropped 3 bytes of output ...]\n");
    }

    #[test]
    fn invalid_utf8_is_decoded_lossily() {
        let out = capped(100, b"ok \xff\xfe end", 4);
        assert_eq!(out.text, "ok \u{fffd}\u{fffd} end");
    }
}
