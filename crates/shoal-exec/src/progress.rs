//! Progress pipe reading: `\n`-separated lines, decoded lossily, each
//! bounded in length so a misbehaving child cannot exhaust memory.

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

/// Longest progress line kept; the rest of a longer line is dropped.
pub(crate) const MAX_LINE: usize = 1 << 20;

/// Reads progress lines from a pipe; public for executors in other crates.
#[derive(Debug)]
pub struct ProgressLines<R> {
    reader: BufReader<R>,
    /// The line read so far; kept here so that `next_line` is cancel safe.
    line: Vec<u8>,
    eof: bool,
}

impl<R: AsyncRead + Unpin> ProgressLines<R> {
    /// Reads lines from `reader`.
    pub fn new(reader: R) -> Self {
        ProgressLines {
            reader: BufReader::new(reader),
            line: Vec::new(),
            eof: false,
        }
    }

    /// The next line without its newline (the last line may lack one), or
    /// `None` at end of input. Cancel safe.
    pub async fn next_line(&mut self) -> Option<String> {
        while !self.eof {
            let available = match self.reader.fill_buf().await {
                Ok(bytes) => bytes,
                Err(e) => {
                    tracing::debug!("stopped reading the progress pipe: {e}");
                    &[]
                }
            };
            if available.is_empty() {
                self.eof = true;
                break;
            }
            let newline = available.iter().position(|&b| b == b'\n');
            let end = newline.unwrap_or(available.len());
            let room = MAX_LINE.saturating_sub(self.line.len());
            self.line.extend_from_slice(&available[..end.min(room)]);
            self.reader.consume(newline.map_or(end, |i| i + 1));
            if newline.is_some() {
                return Some(self.take_line());
            }
        }
        (!self.line.is_empty()).then(|| self.take_line())
    }

    fn take_line(&mut self) -> String {
        String::from_utf8(std::mem::take(&mut self.line))
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn lines(input: &[u8]) -> Vec<String> {
        let mut reader = ProgressLines::new(input);
        let mut lines = Vec::new();
        while let Some(line) = reader.next_line().await {
            lines.push(line);
        }
        assert_eq!(reader.next_line().await, None, "stays at end of input");
        lines
    }

    #[tokio::test]
    async fn splits_on_newlines_and_keeps_a_final_unterminated_line() {
        assert_eq!(lines(b"a\n\nb c\nlast").await, ["a", "", "b c", "last"]);
        assert_eq!(lines(b"a\n").await, ["a"]);
        assert!(lines(b"").await.is_empty());
    }

    #[tokio::test]
    async fn decodes_invalid_utf8_lossily() {
        assert_eq!(lines(b"x\xffy\n").await, ["x\u{fffd}y"]);
    }

    #[tokio::test]
    async fn bounds_long_lines_and_resumes_at_the_next_one() {
        let mut input = vec![b'x'; 3 * MAX_LINE];
        input.extend_from_slice(b"\nnext\n");
        let lines = lines(&input).await;
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].len(), MAX_LINE);
        assert_eq!(lines[1], "next");
    }
}
