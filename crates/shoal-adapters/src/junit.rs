//! Streaming JUnit XML reader: turns a report of any common flavour (pytest,
//! nextest, surefire-style) into [`JunitCase`]s whose text is capped, so a
//! 100 MB `<system-out>` is never held in memory whole.
//!
//! quick-xml parses the markup; element text (and CDATA) is streamed past it
//! by this module, unescaped, validated as UTF-8 and kept head-and-tail up to
//! the cap. A malformed, truncated or non-UTF-8 report yields the test cases
//! completed before the problem plus a [`JunitError`].

use quick_xml::Reader;
use quick_xml::events::{BytesStart, Event};
use shoal_core::{CapturedOutput, Outcome, TestId, TestResult};
use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, BufRead, Read};
use std::path::Path;
use std::time::Duration;

/// Longest `message` attribute kept, in bytes; the full text is in `details`.
const MESSAGE_LIMIT: usize = 4096;
/// Size of the read buffer.
const CHUNK: usize = 64 * 1024;
/// Longest entity reference (`&#x10FFFF;` is 10 bytes) before a bare `&` is
/// taken literally.
const MAX_ENTITY: usize = 12;

/// How a test case ended, as the report says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JunitStatus {
    Passed,
    /// A `<failure>` element: an assertion failed.
    Failed,
    /// An `<error>` element: an unexpected error (pytest: setup or teardown).
    Errored,
    Skipped,
}

impl JunitStatus {
    fn rank(self) -> u8 {
        match self {
            JunitStatus::Passed => 0,
            JunitStatus::Skipped => 1,
            JunitStatus::Failed | JunitStatus::Errored => 2,
        }
    }
}

/// One `<testcase>` of a report.
#[derive(Debug, Clone, PartialEq)]
pub struct JunitCase {
    /// `name` of the innermost enclosing `<testsuite>`.
    pub suite: Option<String>,
    pub classname: Option<String>,
    pub name: String,
    pub file: Option<String>,
    pub time: Option<Duration>,
    pub status: JunitStatus,
    /// `message` of the first `<failure>`, `<error>` or `<skipped>` (capped).
    pub message: Option<String>,
    /// `type` of that element (pytest: `pytest.skip`, `pytest.xfail`).
    pub kind: Option<String>,
    /// Text of the `<failure>`, `<error>` and `<skipped>` elements.
    pub details: CapturedOutput,
    pub system_out: CapturedOutput,
    pub system_err: CapturedOutput,
    /// `<flakyFailure>`, `<rerunFailure>`, ... elements: earlier attempts the
    /// tool retried itself. Their content is not kept.
    pub reruns: u32,
}

/// Why a report could not be read to its end.
#[derive(Debug, thiserror::Error)]
pub enum JunitError {
    #[error("failed to read junit report: {0}")]
    Io(#[from] io::Error),
    #[error("malformed junit xml at byte {offset}: {detail}")]
    Malformed { offset: u64, detail: String },
    #[error("junit xml is not valid utf-8 (at byte {offset})")]
    InvalidUtf8 { offset: u64 },
    #[error("unsupported junit xml encoding `{0}` (only utf-8 is supported)")]
    UnsupportedEncoding(String),
    #[error("junit xml ends inside <{element}> (was the report cut short?)")]
    Truncated { element: String },
}

/// The test cases read from a report and, if it could not be read to the
/// end, why. `cases` holds every test case completed before the error.
#[derive(Debug, Default)]
pub struct JunitReport {
    pub cases: Vec<JunitCase>,
    pub error: Option<JunitError>,
}

/// Reads the report at `path`, keeping at most `output_cap` bytes of each
/// text field. Fails only if the file cannot be opened; read and parse errors
/// are in [`JunitReport::error`].
pub fn parse_file(path: &Path, output_cap: u64) -> io::Result<JunitReport> {
    let file = File::open(path)?;
    Ok(parse_reader(file, output_cap))
}

/// Reads a report from `input`, keeping at most `output_cap` bytes of each
/// text field.
pub fn parse_reader<R: Read>(input: R, output_cap: u64) -> JunitReport {
    let mut parser = Parser::new(input, output_cap);
    let error = parser.run().err();
    JunitReport {
        cases: parser.cases,
        error,
    }
}

/// `text` capped to `cap` bytes: its head and tail halves around a marker.
pub fn cap_output(text: &str, cap: u64) -> CapturedOutput {
    let mut buf = CapBuf::new(cap);
    buf.push(text.as_bytes());
    buf.finish()
}

/// `output` capped again at `cap`, keeping the count of bytes an earlier
/// cap (e.g. the runner's own) dropped.
pub fn recap_output(output: &CapturedOutput, cap: u64) -> CapturedOutput {
    let mut capped = cap_output(&output.text, cap);
    capped.truncated_bytes += output.truncated_bytes;
    capped
}

/// A byte sink that keeps the first and last `cap / 2` bytes.
#[derive(Debug)]
struct CapBuf {
    head_cap: usize,
    tail_cap: usize,
    head: Vec<u8>,
    tail: VecDeque<u8>,
    dropped: u64,
}

impl CapBuf {
    fn new(cap: u64) -> Self {
        let cap = usize::try_from(cap).unwrap_or(usize::MAX);
        let tail_cap = cap / 2;
        Self {
            head_cap: cap - tail_cap,
            tail_cap,
            head: Vec::new(),
            tail: VecDeque::new(),
            dropped: 0,
        }
    }

    fn is_empty(&self) -> bool {
        self.head.is_empty() && self.tail.is_empty() && self.dropped == 0
    }

    fn push(&mut self, mut bytes: &[u8]) {
        if self.head.len() < self.head_cap {
            let take = bytes.len().min(self.head_cap - self.head.len());
            self.head.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
        }
        if bytes.is_empty() {
            return;
        }
        if bytes.len() >= self.tail_cap {
            self.dropped += (self.tail.len() + bytes.len() - self.tail_cap) as u64;
            self.tail.clear();
            self.tail.extend(&bytes[bytes.len() - self.tail_cap..]);
        } else {
            let overflow = (self.tail.len() + bytes.len()).saturating_sub(self.tail_cap);
            self.tail.drain(..overflow);
            self.dropped += overflow as u64;
            self.tail.extend(bytes);
        }
    }

    fn finish(self) -> CapturedOutput {
        let mut head = self.head;
        let mut tail: Vec<u8> = self.tail.into();
        if self.dropped == 0 {
            head.extend_from_slice(&tail);
            return CapturedOutput {
                text: String::from_utf8_lossy(&head).into_owned(),
                truncated_bytes: 0,
            };
        }
        // Cut at character boundaries so the halves decode cleanly.
        let mut dropped = self.dropped;
        if let Err(e) = std::str::from_utf8(&head) {
            if e.error_len().is_none() {
                dropped += (head.len() - e.valid_up_to()) as u64;
                head.truncate(e.valid_up_to());
            }
        }
        let lead = tail.iter().take_while(|&&b| b & 0xC0 == 0x80).count();
        dropped += lead as u64;
        tail.drain(..lead);
        let text = format!(
            "{}\n[... {dropped} bytes truncated ...]\n{}",
            String::from_utf8_lossy(&head),
            String::from_utf8_lossy(&tail)
        );
        CapturedOutput {
            text,
            truncated_bytes: dropped,
        }
    }
}

/// A buffered reader that can look a few bytes ahead and counts what was consumed.
#[derive(Debug)]
struct PeekReader<R> {
    inner: R,
    buf: Box<[u8]>,
    pos: usize,
    end: usize,
    consumed: u64,
}

impl<R: Read> PeekReader<R> {
    fn new(inner: R) -> Self {
        Self {
            inner,
            buf: vec![0; CHUNK].into_boxed_slice(),
            pos: 0,
            end: 0,
            consumed: 0,
        }
    }

    /// Everything buffered, reading more until at least `n` bytes are
    /// available or the input ends.
    fn peek(&mut self, n: usize) -> io::Result<&[u8]> {
        debug_assert!(n <= self.buf.len());
        while self.end - self.pos < n {
            if self.pos > 0 {
                self.buf.copy_within(self.pos..self.end, 0);
                self.end -= self.pos;
                self.pos = 0;
            }
            match self.inner.read(&mut self.buf[self.end..]) {
                Ok(0) => break,
                Ok(k) => self.end += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(&self.buf[self.pos..self.end])
    }
}

impl<R: Read> Read for PeekReader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let available = self.fill_buf()?;
        let n = available.len().min(out.len());
        out[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl<R: Read> BufRead for PeekReader<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.pos == self.end {
            self.pos = 0;
            self.end = 0;
            loop {
                match self.inner.read(&mut self.buf) {
                    Ok(k) => {
                        self.end = k;
                        break;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(&self.buf[self.pos..self.end])
    }

    fn consume(&mut self, n: usize) {
        self.pos = (self.pos + n).min(self.end);
        self.consumed += n as u64;
    }
}

/// Incremental UTF-8 validation across chunk boundaries.
#[derive(Debug, Default)]
struct Utf8Check {
    carry: [u8; 4],
    len: usize,
}

impl Utf8Check {
    fn width(lead: u8) -> usize {
        match lead {
            0xF0..=0xF7 => 4,
            0xE0..=0xEF => 3,
            _ => 2,
        }
    }

    /// Validates `bytes`, which start at byte `offset` of the input.
    fn feed(&mut self, mut bytes: &[u8], mut offset: u64) -> Result<(), JunitError> {
        if self.len > 0 {
            let need = Self::width(self.carry[0]);
            let start = offset - self.len as u64;
            while self.len < need && !bytes.is_empty() {
                self.carry[self.len] = bytes[0];
                self.len += 1;
                bytes = &bytes[1..];
                offset += 1;
            }
            if self.len < need {
                return Ok(());
            }
            if std::str::from_utf8(&self.carry[..need]).is_err() {
                return Err(JunitError::InvalidUtf8 { offset: start });
            }
            self.len = 0;
        }
        match std::str::from_utf8(bytes) {
            Ok(_) => Ok(()),
            Err(e) if e.error_len().is_none() => {
                let rest = &bytes[e.valid_up_to()..];
                self.carry[..rest.len()].copy_from_slice(rest);
                self.len = rest.len();
                Ok(())
            }
            Err(e) => Err(JunitError::InvalidUtf8 {
                offset: offset + e.valid_up_to() as u64,
            }),
        }
    }

    /// A text run ended (at markup or the end of input): no character may be open.
    fn end(&mut self, offset: u64) -> Result<(), JunitError> {
        if self.len > 0 {
            let start = offset - self.len as u64;
            self.len = 0;
            return Err(JunitError::InvalidUtf8 { offset: start });
        }
        Ok(())
    }
}

/// Decodes entity references in streamed text. Unknown or malformed
/// references are kept literally rather than failing the whole report.
#[derive(Debug, Default)]
struct Unescaper {
    /// An entity reference (from its `&`) cut by a chunk boundary.
    pending: Vec<u8>,
}

impl Unescaper {
    fn feed(&mut self, mut bytes: &[u8], out: &mut CapBuf) {
        if !self.pending.is_empty() {
            let take = bytes.len().min(MAX_ENTITY);
            let mut joined = std::mem::take(&mut self.pending);
            let before = joined.len();
            joined.extend_from_slice(&bytes[..take]);
            match joined.iter().position(|&b| b == b';') {
                Some(semi) if semi < MAX_ENTITY => {
                    push_entity(&joined[..=semi], out);
                    bytes = &bytes[semi + 1 - before..];
                }
                None if joined.len() < MAX_ENTITY => {
                    self.pending = joined;
                    return;
                }
                _ => {
                    out.push(&joined[..before]);
                }
            }
        }
        while let Some(amp) = bytes.iter().position(|&b| b == b'&') {
            out.push(&bytes[..amp]);
            let rest = &bytes[amp..];
            let window = &rest[..rest.len().min(MAX_ENTITY)];
            match window.iter().position(|&b| b == b';') {
                Some(semi) => {
                    push_entity(&rest[..=semi], out);
                    bytes = &rest[semi + 1..];
                }
                None if rest.len() < MAX_ENTITY => {
                    self.pending = rest.to_vec();
                    return;
                }
                None => {
                    out.push(b"&");
                    bytes = &rest[1..];
                }
            }
        }
        out.push(bytes);
    }

    fn end(&mut self, out: Option<&mut CapBuf>) {
        if let Some(out) = out {
            out.push(&self.pending);
        }
        self.pending.clear();
    }
}

/// Pushes the decoding of `entity` (`&...;`), or the entity itself if unknown.
fn push_entity(entity: &[u8], out: &mut CapBuf) {
    let body = &entity[1..entity.len() - 1];
    let decoded = match body {
        b"lt" => Some('<'),
        b"gt" => Some('>'),
        b"amp" => Some('&'),
        b"quot" => Some('"'),
        b"apos" => Some('\''),
        [b'#', b'x' | b'X', hex @ ..] => std::str::from_utf8(hex)
            .ok()
            .and_then(|h| u32::from_str_radix(h, 16).ok())
            .and_then(char::from_u32),
        [b'#', dec @ ..] => std::str::from_utf8(dec)
            .ok()
            .and_then(|d| d.parse::<u32>().ok())
            .and_then(char::from_u32),
        _ => None,
    };
    match decoded {
        Some(c) => out.push(c.encode_utf8(&mut [0; 4]).as_bytes()),
        None => out.push(entity),
    }
}

/// What an open element is, for deciding where its text goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Frame {
    Suite,
    Case,
    /// `<failure>`, `<error>` or `<skipped>` directly inside a test case.
    Result,
    Out,
    Err,
    /// A retried attempt (`<flakyFailure>`, `<rerunError>`, ...): ignored.
    Rerun,
    Other,
}

/// Where streamed text goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Discard,
    Details,
    Out,
    Err,
}

#[derive(Debug)]
struct CaseBuilder {
    case: JunitCase,
    details: CapBuf,
    out: CapBuf,
    err: CapBuf,
}

impl CaseBuilder {
    fn sink(&mut self, target: Target) -> Option<&mut CapBuf> {
        match target {
            Target::Discard => None,
            Target::Details => Some(&mut self.details),
            Target::Out => Some(&mut self.out),
            Target::Err => Some(&mut self.err),
        }
    }

    fn finish(self) -> JunitCase {
        JunitCase {
            details: self.details.finish(),
            system_out: self.out.finish(),
            system_err: self.err.finish(),
            ..self.case
        }
    }
}

struct Parser<R: Read> {
    reader: Reader<PeekReader<R>>,
    cap: u64,
    cases: Vec<JunitCase>,
    stack: Vec<(Frame, String)>,
    suites: Vec<Option<String>>,
    case: Option<CaseBuilder>,
    utf8: Utf8Check,
    unescape: Unescaper,
}

impl<R: Read> Parser<R> {
    fn new(input: R, cap: u64) -> Self {
        let mut reader = Reader::from_reader(PeekReader::new(input));
        reader.config_mut().check_end_names = true;
        Self {
            reader,
            cap,
            cases: Vec::new(),
            stack: Vec::new(),
            suites: Vec::new(),
            case: None,
            utf8: Utf8Check::default(),
            unescape: Unescaper::default(),
        }
    }

    fn offset(&self) -> u64 {
        self.reader.get_ref().consumed
    }

    fn run(&mut self) -> Result<(), JunitError> {
        self.skip_bom()?;
        let mut buf = Vec::new();
        loop {
            self.stream_text()?;
            buf.clear();
            let event = match self.reader.read_event_into(&mut buf) {
                Ok(event) => event,
                Err(e) => return Err(self.xml_error(e)),
            };
            match event {
                Event::Decl(decl) => {
                    if let Some(Ok(encoding)) = decl.encoding() {
                        let encoding = String::from_utf8_lossy(&encoding).to_ascii_lowercase();
                        if !matches!(encoding.as_str(), "utf-8" | "utf8" | "us-ascii" | "ascii") {
                            return Err(JunitError::UnsupportedEncoding(encoding));
                        }
                    }
                }
                Event::Start(start) => self.open(&start)?,
                Event::Empty(start) => {
                    self.open(&start)?;
                    self.close();
                }
                Event::End(_) => self.close(),
                // Text and CDATA are streamed by `stream_text`; these arms
                // only guard against quick-xml handing some over anyway.
                Event::Text(text) => {
                    let offset = self.offset();
                    self.utf8.feed(&text, offset)?;
                    self.utf8.end(offset)?;
                    if let Some(sink) = self.sink() {
                        let mut unescape = Unescaper::default();
                        unescape.feed(&text, sink);
                        unescape.end(Some(sink));
                    }
                }
                Event::CData(data) => {
                    let offset = self.offset();
                    self.utf8.feed(&data, offset)?;
                    self.utf8.end(offset)?;
                    if let Some(sink) = self.sink() {
                        sink.push(&data);
                    }
                }
                Event::Eof => {
                    return match self.stack.pop() {
                        Some((_, element)) => Err(JunitError::Truncated { element }),
                        None => Ok(()),
                    };
                }
                Event::Comment(_) | Event::PI(_) | Event::DocType(_) => {}
            }
        }
    }

    fn skip_bom(&mut self) -> Result<(), JunitError> {
        let source = self.reader.get_mut();
        let head = source.peek(3)?;
        if head.starts_with(&[0xEF, 0xBB, 0xBF]) {
            source.consume(3);
        } else if head.starts_with(&[0xFF, 0xFE]) || head.starts_with(&[0xFE, 0xFF]) {
            return Err(JunitError::UnsupportedEncoding("utf-16".into()));
        }
        Ok(())
    }

    fn xml_error(&self, error: quick_xml::Error) -> JunitError {
        let offset = self.offset();
        match error {
            quick_xml::Error::Io(e) => JunitError::Io(io::Error::new(e.kind(), e.to_string())),
            quick_xml::Error::Encoding(_) => JunitError::InvalidUtf8 { offset },
            other => JunitError::Malformed {
                offset,
                detail: other.to_string(),
            },
        }
    }

    fn target(&self) -> Target {
        match self.stack.last() {
            Some((Frame::Result, _)) => Target::Details,
            Some((Frame::Out, _)) => Target::Out,
            Some((Frame::Err, _)) => Target::Err,
            _ => Target::Discard,
        }
    }

    fn sink(&mut self) -> Option<&mut CapBuf> {
        let target = self.target();
        self.case.as_mut().and_then(|c| c.sink(target))
    }

    /// Consumes text, CDATA sections and comments up to the next markup.
    fn stream_text(&mut self) -> Result<(), JunitError> {
        let target = self.target();
        loop {
            let source = self.reader.get_mut();
            let offset = source.consumed;
            let available = source.fill_buf()?;
            if available.is_empty() {
                return self.end_text(target);
            }
            if available[0] == b'<' {
                let head = source.peek(9)?;
                if head.starts_with(b"<![CDATA[") {
                    source.consume(9);
                    self.end_text(target)?;
                    self.stream_until(b"]]>", target, "CDATA")?;
                    continue;
                }
                if head.starts_with(b"<!--") {
                    source.consume(4);
                    self.end_text(target)?;
                    self.stream_until(b"-->", Target::Discard, "comment")?;
                    continue;
                }
                return self.end_text(target);
            }
            let n = available
                .iter()
                .position(|&b| b == b'<')
                .unwrap_or(available.len());
            let text = &available[..n];
            self.utf8.feed(text, offset)?;
            if let Some(sink) = self.case.as_mut().and_then(|c| c.sink(target)) {
                self.unescape.feed(text, sink);
            }
            self.reader.get_mut().consume(n);
        }
    }

    fn end_text(&mut self, target: Target) -> Result<(), JunitError> {
        let sink = self.case.as_mut().and_then(|c| c.sink(target));
        self.unescape.end(sink);
        let offset = self.offset();
        self.utf8.end(offset)
    }

    /// Streams raw bytes to `target` up to and past `terminator`.
    fn stream_until(
        &mut self,
        terminator: &[u8],
        target: Target,
        what: &str,
    ) -> Result<(), JunitError> {
        let check_utf8 = target != Target::Discard;
        loop {
            let source = self.reader.get_mut();
            let offset = source.consumed;
            let available = source.peek(terminator.len())?;
            if available.len() < terminator.len() {
                return Err(JunitError::Truncated {
                    element: what.to_owned(),
                });
            }
            let (keep, skip, done) = match available
                .windows(terminator.len())
                .position(|w| w == terminator)
            {
                Some(at) => (at, at + terminator.len(), true),
                None => {
                    let keep = available.len() - (terminator.len() - 1);
                    (keep, keep, false)
                }
            };
            let bytes = &available[..keep];
            if check_utf8 {
                self.utf8.feed(bytes, offset)?;
            }
            if let Some(sink) = self.case.as_mut().and_then(|c| c.sink(target)) {
                sink.push(bytes);
            }
            self.reader.get_mut().consume(skip);
            if done {
                let offset = self.offset();
                return if check_utf8 {
                    self.utf8.end(offset)
                } else {
                    Ok(())
                };
            }
        }
    }

    fn open(&mut self, start: &BytesStart) -> Result<(), JunitError> {
        let local = start.local_name();
        let tag = local.as_ref();
        let name = String::from_utf8_lossy(tag).into_owned();
        let parent = self.stack.last().map(|(f, _)| *f);
        let in_case = parent == Some(Frame::Case);
        let frame = match tag {
            b"testsuite" if self.case.is_none() => {
                let suite_name = self.attributes(start, &[b"name"])?.pop().flatten();
                self.suites.push(suite_name);
                Frame::Suite
            }
            b"testcase" if self.case.is_none() => {
                let mut attrs = self
                    .attributes(start, &[b"classname", b"name", b"file", b"time"])?
                    .into_iter();
                let mut next = || attrs.next().flatten();
                let (classname, name, file, time) = (next(), next(), next(), next());
                let case = JunitCase {
                    suite: self.suites.last().cloned().flatten(),
                    classname,
                    name: name.unwrap_or_default(),
                    file,
                    time: time.as_deref().and_then(parse_time),
                    status: JunitStatus::Passed,
                    message: None,
                    kind: None,
                    details: CapturedOutput::default(),
                    system_out: CapturedOutput::default(),
                    system_err: CapturedOutput::default(),
                    reruns: 0,
                };
                self.case = Some(CaseBuilder {
                    case,
                    details: CapBuf::new(self.cap),
                    out: CapBuf::new(self.cap),
                    err: CapBuf::new(self.cap),
                });
                Frame::Case
            }
            b"failure" | b"error" | b"skipped" if in_case => {
                let status = match tag {
                    b"failure" => JunitStatus::Failed,
                    b"error" => JunitStatus::Errored,
                    _ => JunitStatus::Skipped,
                };
                let mut attrs = self.attributes(start, &[b"message", b"type"])?.into_iter();
                let message = attrs.next().flatten();
                let kind = attrs.next().flatten();
                if let Some(builder) = self.case.as_mut() {
                    if status.rank() > builder.case.status.rank() {
                        builder.case.status = status;
                        builder.case.message = message
                            .filter(|m| !m.is_empty())
                            .map(|m| truncate_message(&m));
                        builder.case.kind = kind;
                    }
                    if !builder.details.is_empty() {
                        builder.details.push(b"\n");
                    }
                }
                Frame::Result
            }
            b"flakyFailure" | b"flakyError" | b"rerunFailure" | b"rerunError" if in_case => {
                if let Some(builder) = self.case.as_mut() {
                    builder.case.reruns += 1;
                }
                Frame::Rerun
            }
            b"system-out" if in_case => Frame::Out,
            b"system-err" if in_case => Frame::Err,
            _ => Frame::Other,
        };
        self.stack.push((frame, name));
        Ok(())
    }

    fn close(&mut self) {
        match self.stack.pop() {
            Some((Frame::Suite, _)) => {
                self.suites.pop();
            }
            Some((Frame::Case, _)) => {
                if let Some(builder) = self.case.take() {
                    self.cases.push(builder.finish());
                }
            }
            _ => {}
        }
    }

    /// The unescaped values of the attributes `wanted`, in that order.
    fn attributes(
        &self,
        start: &BytesStart,
        wanted: &[&[u8]],
    ) -> Result<Vec<Option<String>>, JunitError> {
        let mut values = vec![None; wanted.len()];
        for attr in start.attributes().with_checks(false) {
            let attr = attr.map_err(|e| JunitError::Malformed {
                offset: self.offset(),
                detail: e.to_string(),
            })?;
            let key = attr.key.local_name();
            let Some(slot) = wanted.iter().position(|w| *w == key.as_ref()) else {
                continue;
            };
            let value = match attr.unescape_value() {
                Ok(v) => v.into_owned(),
                Err(quick_xml::Error::Escape(_)) => match std::str::from_utf8(&attr.value) {
                    Ok(raw) => raw.to_owned(),
                    Err(_) => {
                        return Err(JunitError::InvalidUtf8 {
                            offset: self.offset(),
                        });
                    }
                },
                Err(e) => return Err(self.xml_error(e)),
            };
            values[slot] = Some(value);
        }
        Ok(values)
    }
}

/// Seconds as JUnit writes them (`"1.5"`, `"1,234.5"`).
fn parse_time(raw: &str) -> Option<Duration> {
    let secs: f64 = raw.trim().replace(',', "").parse().ok()?;
    Duration::try_from_secs_f64(secs).ok()
}

fn truncate_message(message: &str) -> String {
    if message.len() <= MESSAGE_LIMIT {
        return message.to_owned();
    }
    let mut end = MESSAGE_LIMIT;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &message[..end])
}

/// The engine's outcome for a JUnit status.
pub fn outcome_of(status: JunitStatus) -> Outcome {
    match status {
        JunitStatus::Passed => Outcome::Pass,
        JunitStatus::Failed | JunitStatus::Errored => Outcome::Fail,
        JunitStatus::Skipped => Outcome::Skip,
    }
}

/// Folds the test cases a report holds for one test (pytest writes two for a
/// test that fails in its call and again in teardown) into a [`TestResult`].
#[derive(Debug)]
pub(crate) struct ResultBuilder {
    outcome: Outcome,
    duration: Duration,
    message: Option<String>,
    sections: Vec<String>,
    truncated_bytes: u64,
}

impl ResultBuilder {
    fn new() -> Self {
        Self {
            outcome: Outcome::Pass,
            duration: Duration::ZERO,
            message: None,
            sections: Vec::new(),
            truncated_bytes: 0,
        }
    }

    fn add(&mut self, case: &JunitCase) {
        let outcome = outcome_of(case.status);
        let rank = |o: Outcome| match o {
            Outcome::Pass => 0,
            Outcome::Skip => 1,
            _ => 2,
        };
        if rank(outcome) > rank(self.outcome) {
            self.outcome = outcome;
            self.message = case_message(case);
        }
        self.duration += case.time.unwrap_or_default();
        for part in [&case.details, &case.system_out, &case.system_err] {
            if !part.text.is_empty() {
                self.sections.push(part.text.clone());
            }
            self.truncated_bytes += part.truncated_bytes;
        }
    }

    fn finish(self, id: TestId, output_cap: u64) -> TestResult {
        let mut output = cap_output(&self.sections.join("\n"), output_cap);
        output.truncated_bytes += self.truncated_bytes;
        TestResult {
            id,
            outcome: self.outcome,
            duration: self.duration,
            message: self.message,
            output,
        }
    }
}

/// The short message of a case: its `message` attribute, else the first line
/// of its text. xfails (pytest) say so.
fn case_message(case: &JunitCase) -> Option<String> {
    let message = case.message.clone().or_else(|| {
        case.details
            .text
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .map(str::to_owned)
    });
    if case.kind.as_deref() == Some("pytest.xfail") {
        return Some(match message {
            Some(reason) => format!("xfail: {reason}"),
            None => "xfail".to_owned(),
        });
    }
    message
}

/// Assigns report cases to the tests of an invocation and builds their results.
#[derive(Debug)]
pub(crate) struct Assignment {
    builders: Vec<Option<ResultBuilder>>,
}

impl Assignment {
    pub(crate) fn new(tests: usize) -> Self {
        Self {
            builders: (0..tests).map(|_| None).collect(),
        }
    }

    pub(crate) fn is_assigned(&self, index: usize) -> bool {
        self.builders.get(index).is_some_and(Option::is_some)
    }

    /// Records `case` for one of `candidates` (indices of tests with the
    /// same expected name): the first without a result yet, else the last one
    /// (a second case for the same test, as pytest writes for a teardown error).
    pub(crate) fn assign(&mut self, candidates: &[usize], case: &JunitCase) -> bool {
        let index = candidates
            .iter()
            .copied()
            .find(|&i| !self.is_assigned(i))
            .or_else(|| candidates.last().copied());
        let Some(slot) = index.and_then(|i| self.builders.get_mut(i)) else {
            return false;
        };
        slot.get_or_insert_with(ResultBuilder::new).add(case);
        true
    }

    /// The result of test `index`, if a case was assigned to it.
    pub(crate) fn take(&mut self, index: usize, id: TestId, output_cap: u64) -> Option<TestResult> {
        self.builders
            .get_mut(index)?
            .take()
            .map(|b| b.finish(id, output_cap))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAP: u64 = 1 << 20;

    fn parse(xml: &str) -> JunitReport {
        parse_reader(xml.as_bytes(), CAP)
    }

    /// Yields one byte per read, to put every chunk boundary everywhere.
    struct OneByte<'a>(&'a [u8]);

    impl Read for OneByte<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            match (self.0.split_first(), out.first_mut()) {
                (Some((&b, rest)), Some(slot)) => {
                    *slot = b;
                    self.0 = rest;
                    Ok(1)
                }
                _ => Ok(0),
            }
        }
    }

    const PYTEST: &str = r#"<?xml version="1.0" encoding="utf-8"?><testsuites name="pytest tests"><testsuite name="pytest" errors="1" failures="1" skipped="2" tests="5" time="0.1"><testcase classname="tests.test_a" name="test_pass" file="tests/test_a.py" line="3" time="0.001" /><testcase classname="tests.test_a.TestK" name="test_fail[a b-&lt;x&gt;]" file="tests/test_a.py" line="7" time="1.250"><failure message="assert [1] == [2]&#10;  At index 0">def test_fail():
&gt;       assert [1] == [2]
E       AssertionError</failure><system-out>--- Captured Out ---
hello &amp; bye
</system-out><system-err>warn</system-err></testcase><testcase classname="tests.test_a" name="test_setup" time="0.002"><error message="failed on setup with &quot;RuntimeError: x&quot;">trace</error></testcase><testcase classname="tests.test_a" name="test_skip" time="0"><skipped type="pytest.skip" message="nope">tests/test_a.py:9: nope</skipped></testcase><testcase classname="tests.test_a" name="test_xfail" time="0"><skipped type="pytest.xfail" message="known bug" /></testcase></testsuite></testsuites>"#;

    #[test]
    fn reads_pytest_report() {
        let report = parse(PYTEST);
        assert!(report.error.is_none(), "{:?}", report.error);
        let cases = &report.cases;
        assert_eq!(cases.len(), 5);
        assert_eq!(cases[0].status, JunitStatus::Passed);
        assert_eq!(cases[0].suite.as_deref(), Some("pytest"));
        assert_eq!(cases[0].file.as_deref(), Some("tests/test_a.py"));
        assert_eq!(cases[0].time, Some(Duration::from_millis(1)));

        let fail = &cases[1];
        assert_eq!(fail.classname.as_deref(), Some("tests.test_a.TestK"));
        assert_eq!(fail.name, "test_fail[a b-<x>]");
        assert_eq!(fail.status, JunitStatus::Failed);
        assert_eq!(
            fail.message.as_deref(),
            Some("assert [1] == [2]\n  At index 0")
        );
        assert_eq!(
            fail.details.text,
            "def test_fail():\n>       assert [1] == [2]\nE       AssertionError"
        );
        assert_eq!(fail.system_out.text, "--- Captured Out ---\nhello & bye\n");
        assert_eq!(fail.system_err.text, "warn");
        assert_eq!(fail.time, Some(Duration::from_millis(1250)));

        assert_eq!(cases[2].status, JunitStatus::Errored);
        assert_eq!(
            cases[2].message.as_deref(),
            Some("failed on setup with \"RuntimeError: x\"")
        );
        assert_eq!(cases[3].status, JunitStatus::Skipped);
        assert_eq!(cases[3].kind.as_deref(), Some("pytest.skip"));
        assert_eq!(cases[3].details.text, "tests/test_a.py:9: nope");
        assert_eq!(cases[4].status, JunitStatus::Skipped);
        assert_eq!(cases[4].kind.as_deref(), Some("pytest.xfail"));
    }

    #[test]
    fn chunk_boundaries_do_not_change_the_result() {
        let xml = format!(
            "\u{feff}<?xml version=\"1.0\"?>\n<testsuites><testsuite name=\"s\"><testcase name=\"t\"><failure message=\"m\">{}<![CDATA[<raw> & ü]]>&#x1F600;&#65;&unknown;</failure><system-out>日本語 &lt;&amp;&gt;<!-- a comment --> π</system-out></testcase></testsuite></testsuites>",
            "ünïcödé &lt;tag&gt; &quot;q&quot; &apos;a&apos; ".repeat(50)
        );
        let whole = parse(&xml);
        let bytewise = parse_reader(OneByte(xml.as_bytes()), CAP);
        assert!(whole.error.is_none(), "{:?}", whole.error);
        assert!(bytewise.error.is_none(), "{:?}", bytewise.error);
        assert_eq!(whole.cases, bytewise.cases);
        let case = &whole.cases[0];
        assert!(
            case.details
                .text
                .starts_with("ünïcödé <tag> \"q\" 'a' ünïcödé")
        );
        assert!(
            case.details.text.ends_with("<raw> & ü😀A&unknown;"),
            "{}",
            case.details.text
        );
        assert_eq!(case.system_out.text, "日本語 <&> π");
    }

    #[test]
    fn nextest_flaky_and_rerun_elements() {
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<testsuites name="nextest-run" tests="2" failures="1" errors="0">
  <testsuite name="my-crate::tests" tests="2">
    <testcase name="tests::flaky" classname="my-crate::tests" timestamp="2024-01-01T00:00:00Z" time="0.010">
      <flakyFailure type="test failure" message="first try">
        <stackTrace>panic</stackTrace>
        <system-out>attempt 1 output</system-out>
      </flakyFailure>
      <system-out>final output</system-out>
    </testcase>
    <testcase name="tests::broken" classname="my-crate::tests" time="0.020">
      <failure type="test failure">thread panicked</failure>
      <rerunFailure type="test failure"><system-out>retry out</system-out></rerunFailure>
      <system-out>last attempt</system-out>
    </testcase>
    <system-out>suite-level output is not a test's</system-out>
  </testsuite>
</testsuites>"#;
        let report = parse(xml);
        assert!(report.error.is_none(), "{:?}", report.error);
        let [flaky, broken] = &report.cases[..] else {
            panic!("{:?}", report.cases)
        };
        assert_eq!(flaky.status, JunitStatus::Passed);
        assert_eq!(flaky.reruns, 1);
        assert_eq!(flaky.system_out.text, "final output");
        assert_eq!(flaky.classname.as_deref(), Some("my-crate::tests"));
        assert_eq!(broken.status, JunitStatus::Failed);
        assert_eq!(broken.message, None);
        assert_eq!(broken.details.text, "thread panicked");
        assert_eq!(broken.reruns, 1);
        assert_eq!(broken.system_out.text, "last attempt");
    }

    #[test]
    fn nested_suites_name_the_innermost() {
        let xml = r#"<testsuites><testsuite name="outer"><testsuite name="inner"><testcase name="a"/></testsuite><testcase name="b"/></testsuite><testcase name="loose"/></testsuites>"#;
        let report = parse(xml);
        assert!(report.error.is_none());
        let suites: Vec<_> = report
            .cases
            .iter()
            .map(|c| (c.name.as_str(), c.suite.as_deref()))
            .collect();
        assert_eq!(
            suites,
            [("a", Some("inner")), ("b", Some("outer")), ("loose", None)]
        );
    }

    #[test]
    fn failure_outranks_skip_and_keeps_first_message() {
        let xml = r#"<testsuite><testcase name="t" time="1,000.5"><skipped message="s"/><failure message="first">one</failure><error message="second">two</error></testcase></testsuite>"#;
        let case = &parse(xml).cases[0];
        assert_eq!(case.status, JunitStatus::Failed);
        assert_eq!(case.message.as_deref(), Some("first"));
        assert_eq!(case.details.text, "one\ntwo");
        assert_eq!(case.time, Some(Duration::from_secs_f64(1000.5)));
    }

    #[test]
    fn huge_output_is_capped_head_and_tail() {
        /// Generates `<system-out>` of `len` bytes without materializing it.
        struct Huge {
            prefix: Vec<u8>,
            body_left: u64,
            suffix: Vec<u8>,
            pos: usize,
        }
        impl Read for Huge {
            fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
                if self.pos < self.prefix.len() {
                    let n = out.len().min(self.prefix.len() - self.pos);
                    out[..n].copy_from_slice(&self.prefix[self.pos..self.pos + n]);
                    self.pos += n;
                    return Ok(n);
                }
                if self.body_left > 0 {
                    let n = out
                        .len()
                        .min(usize::try_from(self.body_left).unwrap_or(usize::MAX));
                    out[..n].fill(b'x');
                    self.body_left -= n as u64;
                    return Ok(n);
                }
                let n = out.len().min(self.suffix.len());
                out[..n].copy_from_slice(&self.suffix[..n]);
                self.suffix.drain(..n);
                Ok(n)
            }
        }
        let body = 20u64 << 20;
        let input = Huge {
            prefix: b"<testsuite><testcase name=\"big\"><system-out>HEAD".to_vec(),
            body_left: body,
            suffix: b"TAIL</system-out></testcase><testcase name=\"after\"/></testsuite>".to_vec(),
            pos: 0,
        };
        let report = parse_reader(input, 1000);
        assert!(report.error.is_none(), "{:?}", report.error);
        let out = &report.cases[0].system_out;
        assert!(out.text.starts_with("HEADxxx"), "{}", &out.text[..20]);
        assert!(out.text.ends_with("xxxTAIL"));
        assert!(out.text.contains("bytes truncated"));
        assert_eq!(out.truncated_bytes, body + 8 - 1000);
        assert_eq!(report.cases[1].name, "after");
    }

    #[test]
    fn cap_splits_on_character_boundaries() {
        let out = cap_output(&"ü".repeat(100), 11);
        assert!(!out.text.contains('\u{FFFD}'), "{}", out.text);
        let kept = out.text.matches('ü').count() as u64;
        assert_eq!(kept * 2 + out.truncated_bytes, 200);
        assert_eq!(cap_output("short", 100).text, "short");
        assert_eq!(cap_output("short", 100).truncated_bytes, 0);
        assert_eq!(cap_output("abc", 0).truncated_bytes, 3);
    }

    #[test]
    fn malformed_xml_keeps_earlier_cases() {
        let xml = r#"<testsuite><testcase name="one"/><testcase name="two"><failure>x</failure></testcase><testcase name="three"></testsuite>"#;
        let report = parse(xml);
        assert_eq!(
            report
                .cases
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>(),
            ["one", "two"]
        );
        let err = report.error.expect("mismatched end tag is an error");
        assert!(matches!(err, JunitError::Malformed { .. }), "{err:?}");
        assert!(
            err.to_string().starts_with("malformed junit xml at byte"),
            "{err}"
        );
    }

    #[test]
    fn truncated_report_is_reported() {
        let full = r#"<testsuites><testsuite name="s"><testcase name="one"/><testcase name="two"><system-out>partial output"#;
        let report = parse(full);
        assert_eq!(report.cases.len(), 1);
        assert!(
            matches!(report.error, Some(JunitError::Truncated { ref element }) if element == "system-out"),
            "{:?}",
            report.error
        );

        let cut_in_tag = parse(r#"<testsuite><testcase name="one"/><testcase na"#);
        assert_eq!(cut_in_tag.cases.len(), 1);
        assert!(cut_in_tag.error.is_some());

        let cut_in_cdata = parse(
            "<testsuite><testcase name=\"one\"/><testcase name=\"two\"><system-out><![CDATA[abc",
        );
        assert_eq!(cut_in_cdata.cases.len(), 1);
        assert!(matches!(
            cut_in_cdata.error,
            Some(JunitError::Truncated { .. })
        ));
    }

    #[test]
    fn invalid_utf8_is_an_error_not_a_panic() {
        let mut xml =
            b"<testsuite><testcase name=\"ok\"/><testcase name=\"bad\"><system-out>abc".to_vec();
        xml.extend_from_slice(b"\xff\xfe\x80");
        xml.extend_from_slice(b"</system-out></testcase></testsuite>");
        for report in [
            parse_reader(&xml[..], CAP),
            parse_reader(OneByte(&xml), CAP),
        ] {
            assert_eq!(report.cases.len(), 1);
            assert!(
                matches!(report.error, Some(JunitError::InvalidUtf8 { offset: 68 })),
                "{:?}",
                report.error
            );
        }

        let truncated_char =
            b"<testsuite><testcase name=\"t\"><system-out>\xc3</system-out></testcase></testsuite>";
        assert!(matches!(
            parse_reader(&truncated_char[..], CAP).error,
            Some(JunitError::InvalidUtf8 { .. })
        ));

        let bad_attr = b"<testsuite><testcase name=\"\xff\"/></testsuite>";
        assert!(matches!(
            parse_reader(&bad_attr[..], CAP).error,
            Some(JunitError::InvalidUtf8 { .. })
        ));
    }

    #[test]
    fn other_encodings_are_refused_clearly() {
        let latin1 = parse(r#"<?xml version="1.0" encoding="ISO-8859-1"?><testsuite/>"#);
        let err = latin1.error.expect("latin-1 is refused");
        assert_eq!(
            err.to_string(),
            "unsupported junit xml encoding `iso-8859-1` (only utf-8 is supported)"
        );
        let utf16 = parse_reader(&b"\xff\xfe<\x00"[..], CAP);
        assert!(matches!(
            utf16.error,
            Some(JunitError::UnsupportedEncoding(_))
        ));
    }

    #[test]
    fn missing_file_is_an_io_error() {
        let err = parse_file(Path::new("/nonexistent/shoal/junit.xml"), CAP).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn empty_and_garbage_inputs() {
        let empty = parse("");
        assert!(empty.cases.is_empty() && empty.error.is_none());
        let garbage = parse("this is not xml at all");
        assert!(garbage.cases.is_empty());
        let half = parse("<<<>>>");
        assert!(half.cases.is_empty() && half.error.is_some());
    }
}
