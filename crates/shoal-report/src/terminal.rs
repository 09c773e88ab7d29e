//! The terminal reporter: status lines for failures as they happen, an
//! optional progress bar with an ETA from the run's estimates, notices, and
//! the end-of-run summary.
//!
//! A status line looks like nextest's:
//!
//! ```text
//!    FAIL [   0.050s] (1/2) py tests/test_a.py::test_fail, retrying
//! ```
//!
//! the label (`PASS`, `SKIP`, `FAIL`, `TIMEOUT`, `CRASH`, `LOST`, `FLAKY`),
//! the attempt's duration, `(attempt/max attempts)` when the test is retried,
//! then suite and test (` (repeat N)` for repetitions after the first, and
//! ` (quarantined)` for a quarantined test, whose failures do not fail the
//! run; the summary then says e.g. `4 failed (1 quarantined)`). Failed
//! attempts are followed by their message and captured output, indented under
//! a `--- output: suite test ---` header. Passes and skips get a line only
//! when verbose. In progress-bar mode the same lines are printed above the
//! bar, which is drawn on stderr.

use crate::text::{test_label, truncation_note};
use crate::{ReportError, Reporter};
use console::Style;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};
use shoal_core::event::{
    AttemptFinished, Notice, NoticeLevel, RunFinished, RunStarted, SuiteDiscovered,
};
use shoal_core::{Event, FinalStatus, Outcome, QuarantinedCounts, RunCounts};
use std::collections::HashMap;
use std::fmt::{self, Write as _};
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// How the terminal reporter renders.
#[derive(Debug, Clone, PartialEq)]
pub struct TerminalOptions {
    /// Draw a progress bar on stderr. The caller decides (stdout is a tty).
    pub progress_bar: bool,
    /// Color labels and headers with ANSI escapes.
    pub color: bool,
    /// Also print a line for every pass, skip and discovered suite.
    pub verbose: bool,
    /// Tests slower than this are listed in the summary (`Duration::ZERO`
    /// turns the list off).
    pub slow_threshold: Duration,
    /// The output cap, named in the note on truncated output.
    pub output_cap: Option<u64>,
}

impl Default for TerminalOptions {
    /// Plain, uncolored, quiet; threshold and cap as in the default config.
    fn default() -> Self {
        Self {
            progress_bar: false,
            color: false,
            verbose: false,
            slow_threshold: Duration::from_secs(5),
            output_cap: Some(1 << 20),
        }
    }
}

/// Slow tests listed in the summary, at most.
const MAX_SLOW: usize = 10;

/// Renders the event stream for a person.
pub struct TerminalReporter {
    opts: TerminalOptions,
    styles: Styles,
    out: Box<dyn Write + Send>,
    bar_target: fn() -> ProgressDrawTarget,
    bar: Option<Bar>,
    run: Option<RunStarted>,
    /// Failed attempts so far of each (suite, test, repeat) not yet final.
    failures: HashMap<(String, String, u32), u32>,
    /// Final results, as the reporter counted them.
    counts: RunCounts,
    /// Of `counts`, those of quarantined tests.
    quarantined: QuarantinedCounts,
    failed: Vec<Listed>,
    flaky: Vec<Listed>,
    slow: Vec<Listed>,
    summarized: bool,
}

/// A final result named in the summary.
#[derive(Debug)]
struct Listed {
    suite: String,
    test: String,
    repeat: u32,
    outcome: Outcome,
    duration: f64,
    failed_attempts: u32,
    attempts: u32,
    quarantined: bool,
}

impl Listed {
    fn key(&self) -> (&str, &str, u32) {
        (&self.suite, &self.test, self.repeat)
    }
}

impl TerminalReporter {
    /// Writes status lines and the summary to `out` (normally stdout).
    pub fn new(opts: TerminalOptions, out: Box<dyn Write + Send>) -> Self {
        Self::with_bar_target(opts, out, ProgressDrawTarget::stderr)
    }

    fn with_bar_target(
        opts: TerminalOptions,
        out: Box<dyn Write + Send>,
        bar_target: fn() -> ProgressDrawTarget,
    ) -> Self {
        Self {
            styles: Styles::new(opts.color),
            opts,
            out,
            bar_target,
            bar: None,
            run: None,
            failures: HashMap::new(),
            counts: RunCounts::default(),
            quarantined: QuarantinedCounts::default(),
            failed: Vec::new(),
            flaky: Vec::new(),
            slow: Vec::new(),
            summarized: false,
        }
    }

    /// Prints `text` (whole lines), above the progress bar when there is one.
    fn emit(&mut self, text: &str) -> Result<(), ReportError> {
        if text.is_empty() {
            return Ok(());
        }
        let out = &mut self.out;
        let write = |out: &mut Box<dyn Write + Send>| {
            out.write_all(text.as_bytes())?;
            out.flush()
        };
        match &self.bar {
            Some(bar) => bar.bar.suspend(|| write(out)),
            None => write(out),
        }
        .map_err(ReportError::terminal)
    }

    fn on_run_started(&mut self, run: &RunStarted) -> String {
        let mut extras = Vec::new();
        if run.repeat > 1 {
            extras.push(format!("repeat {}", run.repeat));
        }
        if run.retries > 0 {
            extras.push(plural(run.retries as usize, "retry", "retries"));
        }
        if let Some(seed) = run.seed {
            // What it takes to replay the order.
            extras.push(format!("shuffled: --shuffle={seed}"));
        }
        let mut line = format!(
            "{} {} on {}",
            self.styles.header.apply_to("Starting"),
            plural(run.planned, "test", "tests"),
            plural(run.slots, "slot", "slots"),
        );
        if !extras.is_empty() {
            let _ = write!(line, " ({})", extras.join(", "));
        }
        line.push('\n');
        if self.opts.progress_bar {
            self.bar = Some(Bar::new(run, (self.bar_target)(), self.opts.color));
        }
        self.run = Some(run.clone());
        line
    }

    fn on_suite_discovered(&self, s: &SuiteDiscovered) -> String {
        // A collection limited to paths is worth a line even when quiet:
        // it says why tests elsewhere are not in the run.
        let scope = if s.scope.is_empty() {
            String::new()
        } else {
            format!(" in {}", s.scope.join(", "))
        };
        if !self.opts.verbose && scope.is_empty() {
            return String::new();
        }
        format!(
            "{:>7} {}: {} of {} selected{scope} ({}, listed in {:.3}s)\n",
            self.styles.header.apply_to("SUITE"),
            self.styles.suite.apply_to(&s.suite),
            s.selected,
            plural(s.discovered, "test", "tests"),
            s.adapter,
            s.duration,
        )
    }

    fn on_attempt_finished(&mut self, a: &AttemptFinished) -> String {
        let key = (a.suite.clone(), a.test.clone(), a.repeat);
        let failed_so_far = {
            let n = self.failures.entry(key.clone()).or_default();
            *n += u32::from(a.outcome.is_failure());
            *n
        };
        if let Some(status) = a.final_status {
            self.failures.remove(&key);
            self.record_final(a, status, failed_so_far);
        }
        if let Some(bar) = &mut self.bar {
            bar.attempt_finished(a);
        }

        let (label, style) = match (a.will_retry, a.final_status) {
            (false, Some(FinalStatus::Passed)) => ("PASS", &self.styles.pass),
            (false, Some(FinalStatus::Skipped)) => ("SKIP", &self.styles.skip),
            (false, Some(FinalStatus::Flaky)) => ("FLAKY", &self.styles.flaky),
            _ => (outcome_label(a.outcome), self.outcome_style(a.outcome)),
        };
        let noteworthy =
            a.will_retry || a.outcome.is_failure() || a.final_status == Some(FinalStatus::Flaky);
        if !noteworthy && !self.opts.verbose {
            return String::new();
        }
        let mut text = format!("{:>7} [{:>7.3}s] ", style.apply_to(label), a.duration);
        if a.attempt > 1 || a.will_retry {
            let max = self.max_attempts().max(a.attempt);
            let _ = write!(text, "({}/{max}) ", a.attempt);
        }
        let _ = write!(
            text,
            "{} {}",
            self.styles.suite.apply_to(&a.suite),
            self.styles.test.apply_to(test_label(&a.test, a.repeat)),
        );
        if a.quarantined {
            let _ = write!(text, " {}", self.styles.dim.apply_to(QUARANTINED));
        }
        if a.will_retry {
            text.push_str(", retrying");
        }
        text.push('\n');
        if a.outcome.is_failure() {
            self.output_block(a, &mut text);
        }
        text
    }

    /// The message and captured output of a failed attempt, indented under
    /// a header; nothing when there is neither.
    fn output_block(&self, a: &AttemptFinished, text: &mut String) {
        let output = &a.output;
        let message = a
            .message
            .as_deref()
            .filter(|m| !m.is_empty() && !output.text.contains(*m));
        if message.is_none() && output.text.is_empty() && output.truncated_bytes == 0 {
            return;
        }
        let header = format!(
            "--- output: {} {} ---",
            a.suite,
            test_label(&a.test, a.repeat)
        );
        let _ = writeln!(text, "{}", self.outcome_style(a.outcome).apply_to(header));
        let lines = message
            .into_iter()
            .flat_map(str::lines)
            .chain(output.text.lines());
        for line in lines {
            let _ = writeln!(text, "    {line}");
        }
        if output.truncated_bytes > 0 {
            let note = truncation_note(output.truncated_bytes, self.opts.output_cap);
            let _ = writeln!(text, "    {}", self.styles.dim.apply_to(note));
        }
    }

    fn record_final(&mut self, a: &AttemptFinished, status: FinalStatus, failed_attempts: u32) {
        self.counts.add(status);
        if a.quarantined {
            self.quarantined.add(status);
        }
        let listed = || Listed {
            suite: a.suite.clone(),
            test: a.test.clone(),
            repeat: a.repeat,
            outcome: a.outcome,
            duration: a.duration,
            failed_attempts,
            attempts: a.attempt,
            quarantined: a.quarantined,
        };
        match status {
            FinalStatus::Failed => self.failed.push(listed()),
            FinalStatus::Flaky => self.flaky.push(listed()),
            FinalStatus::Passed | FinalStatus::Skipped => {}
        }
        let threshold = self.opts.slow_threshold.as_secs_f64();
        if threshold > 0.0 && a.duration > threshold {
            self.slow.push(listed());
        }
    }

    fn on_notice(&self, n: &Notice) -> String {
        let (label, style) = match n.level {
            NoticeLevel::Info => ("info", &self.styles.info),
            NoticeLevel::Warn => ("warning", &self.styles.flaky),
            NoticeLevel::Error => ("error", &self.styles.fail),
        };
        let mut lines = n.message.lines();
        let mut text = format!(
            "{}: {}\n",
            style.apply_to(label),
            lines.next().unwrap_or("")
        );
        for line in lines {
            let _ = writeln!(text, "  {line}");
        }
        text
    }

    /// The end-of-run summary. Without a [`RunFinished`] (the engine stopped
    /// short) it is built from what the reporter saw.
    fn summary(&mut self, finished: Option<&RunFinished>) -> String {
        self.summarized = true;
        let s = &self.styles;
        let counts = finished.map_or(&self.counts, |f| &f.counts);
        let quarantined = finished.map_or(self.quarantined, |f| f.quarantined);
        let excused = |n: usize| match n {
            0 => String::new(),
            n => format!(" ({n} quarantined)"),
        };
        let mut text = String::from("------------\n");
        let _ = write!(
            text,
            "{} {} passed, {} failed{}, {} flaky{}, {} skipped",
            s.header.apply_to("Summary:"),
            counts.passed,
            counts.failed,
            excused(quarantined.failed),
            counts.flaky,
            excused(quarantined.flaky),
            counts.skipped,
        );
        if let Some(f) = finished {
            let _ = write!(text, " in {}", wall_time(f.end - f.start));
        }
        text.push('\n');

        for list in [&mut self.failed, &mut self.flaky] {
            list.sort_by(|a, b| a.key().cmp(&b.key()));
        }
        for t in &self.failed {
            let style = outcome_style(s, t.outcome);
            let _ = writeln!(
                text,
                "{:>7} [{:>7.3}s] {}",
                style.apply_to(outcome_label(t.outcome)),
                t.duration,
                marked_name(s, t)
            );
        }
        for t in &self.flaky {
            let _ = writeln!(
                text,
                "{:>7} [{:>7.3}s] {}: failed {} of {} attempts",
                s.flaky.apply_to("FLAKY"),
                t.duration,
                marked_name(s, t),
                t.failed_attempts,
                t.attempts,
            );
        }
        self.slow.sort_by(|a, b| {
            b.duration
                .total_cmp(&a.duration)
                .then(a.key().cmp(&b.key()))
        });
        for t in self.slow.iter().take(MAX_SLOW) {
            let _ = writeln!(
                text,
                "{:>7} [{:>7.3}s] {}",
                s.slow.apply_to("SLOW"),
                t.duration,
                name(s, t)
            );
        }
        if self.slow.len() > MAX_SLOW {
            let more = self.slow.len() - MAX_SLOW;
            let _ = writeln!(
                text,
                "{:>7} ... and {} over {}",
                "",
                plural(more, "more slow test", "more slow tests"),
                wall_time(self.opts.slow_threshold.as_secs_f64()),
            );
        }

        let not_run = match finished {
            Some(f) if f.interrupted => Some(f.not_run),
            Some(_) => None,
            None => {
                let planned = self.run.as_ref().map_or(0, |r| r.planned);
                Some(planned.saturating_sub(self.counts.total()))
            }
        };
        if let Some(n) = not_run {
            let _ = writeln!(
                text,
                "{}: {} did not run",
                s.fail.apply_to("interrupted"),
                plural(n, "test", "tests"),
            );
        }
        text
    }

    fn max_attempts(&self) -> u32 {
        self.run.as_ref().map_or(1, |r| r.retries.saturating_add(1))
    }

    fn outcome_style(&self, outcome: Outcome) -> &Style {
        outcome_style(&self.styles, outcome)
    }
}

impl fmt::Debug for TerminalReporter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TerminalReporter")
            .field("opts", &self.opts)
            .field("counts", &self.counts)
            .finish_non_exhaustive()
    }
}

impl Reporter for TerminalReporter {
    fn on_event(&mut self, event: &Event) -> Result<(), ReportError> {
        let text = match event {
            Event::RunStarted(r) => self.on_run_started(r),
            Event::SuiteDiscovered(s) => self.on_suite_discovered(s),
            Event::AttemptStarted(_) => {
                if let Some(bar) = &mut self.bar {
                    bar.attempt_started();
                }
                String::new()
            }
            Event::AttemptFinished(a) => self.on_attempt_finished(a),
            Event::Notice(n) => self.on_notice(n),
            Event::RunFinished(f) => {
                if let Some(bar) = self.bar.take() {
                    bar.bar.finish_and_clear();
                }
                self.summary(Some(f))
            }
        };
        self.emit(&text)
    }

    fn finish(&mut self) -> Result<(), ReportError> {
        if let Some(bar) = self.bar.take() {
            bar.bar.finish_and_clear();
        }
        if !self.summarized && self.run.is_some() {
            let text = self.summary(None);
            self.emit(&text)?;
        }
        self.out.flush().map_err(ReportError::terminal)
    }
}

/// The progress bar and what it shows.
struct Bar {
    bar: ProgressBar,
    /// When the run should end, in seconds since the bar started, as f64
    /// bits; NaN when the estimates cannot say.
    finish_at: Arc<AtomicU64>,
    estimated_work: f64,
    slots: usize,
    /// Measured duration of the first attempts finished so far: the work the
    /// estimate covered that is done.
    consumed: f64,
    running: usize,
    counts: RunCounts,
}

impl Bar {
    fn new(run: &RunStarted, target: ProgressDrawTarget, color: bool) -> Self {
        let finish_at = Arc::new(AtomicU64::new(f64::NAN.to_bits()));
        let template = if color {
            "{spinner:.green} {elapsed_precise} [{bar:30.cyan/blue}] {pos}/{len} {msg}, ETA {shoal_eta}"
        } else {
            "{spinner} {elapsed_precise} [{bar:30}] {pos}/{len} {msg}, ETA {shoal_eta}"
        };
        let eta_cell = Arc::clone(&finish_at);
        let eta_key = move |state: &ProgressState, w: &mut dyn fmt::Write| {
            let finish_at = f64::from_bits(eta_cell.load(Ordering::Relaxed));
            let secs = if finish_at.is_finite() {
                (finish_at - state.elapsed().as_secs_f64()).max(0.0)
            } else {
                state.eta().as_secs_f64()
            };
            let _ = w.write_str(&eta_text(secs));
        };
        let style = ProgressStyle::with_template(template)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .with_key("shoal_eta", eta_key)
            .progress_chars("=> ");
        let bar = ProgressBar::with_draw_target(Some(run.planned as u64), target).with_style(style);
        bar.enable_steady_tick(Duration::from_millis(200));
        let this = Self {
            bar,
            finish_at,
            estimated_work: run.estimated_work,
            slots: run.slots,
            consumed: 0.0,
            running: 0,
            counts: RunCounts::default(),
        };
        this.update();
        this
    }

    fn attempt_started(&mut self) {
        self.running += 1;
        self.update();
    }

    fn attempt_finished(&mut self, a: &AttemptFinished) {
        self.running = self.running.saturating_sub(1);
        if a.attempt == 1 {
            self.consumed += a.duration.max(0.0);
        }
        if let Some(status) = a.final_status {
            self.counts.add(status);
            self.bar.inc(1);
        }
        self.update();
    }

    fn update(&self) {
        let remaining = remaining_secs(self.estimated_work, self.consumed, self.slots);
        let at = remaining.map_or(f64::NAN, |r| self.bar.elapsed().as_secs_f64() + r);
        self.finish_at.store(at.to_bits(), Ordering::Relaxed);
        let c = &self.counts;
        let mut msg = format!(
            "{} running, {} passed, {} failed",
            self.running, c.passed, c.failed
        );
        if c.flaky > 0 {
            let _ = write!(msg, ", {} flaky", c.flaky);
        }
        if c.skipped > 0 {
            let _ = write!(msg, ", {} skipped", c.skipped);
        }
        self.bar.set_message(msg);
    }
}

/// Seconds of wall time left by the estimates: the estimated work not yet
/// done, spread over the slots. `None` when there is no estimate or the
/// estimate is used up (the bar then falls back to indicatif's rate-based
/// ETA).
fn remaining_secs(estimated_work: f64, consumed: f64, slots: usize) -> Option<f64> {
    let remaining = estimated_work - consumed;
    (estimated_work > 0.0 && slots > 0 && remaining > 0.0).then(|| remaining / slots as f64)
}

/// `42s`, `3m 05s`, `1h 02m`.
fn eta_text(secs: f64) -> String {
    let secs = secs.max(0.0).round() as u64;
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m {:02}s", secs / 60, secs % 60),
        _ => format!("{}h {:02}m", secs / 3600, secs % 3600 / 60),
    }
}

/// A run's wall time: `4.21s`, `2m 03.50s`, `1h 02m 03s`.
fn wall_time(secs: f64) -> String {
    let secs = secs.max(0.0);
    if secs < 60.0 {
        format!("{secs:.2}s")
    } else if secs < 3600.0 {
        let minutes = (secs / 60.0).floor();
        format!("{}m {:05.2}s", minutes as u64, secs - minutes * 60.0)
    } else {
        let whole = secs.round() as u64;
        format!(
            "{}h {:02}m {:02}s",
            whole / 3600,
            whole % 3600 / 60,
            whole % 60
        )
    }
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn outcome_label(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Pass => "PASS",
        Outcome::Fail => "FAIL",
        Outcome::Skip => "SKIP",
        Outcome::Timeout => "TIMEOUT",
        Outcome::Crash => "CRASH",
        Outcome::Lost => "LOST",
    }
}

fn outcome_style(styles: &Styles, outcome: Outcome) -> &Style {
    match outcome {
        Outcome::Pass => &styles.pass,
        Outcome::Skip => &styles.skip,
        Outcome::Fail | Outcome::Timeout | Outcome::Crash | Outcome::Lost => &styles.fail,
    }
}

fn name(s: &Styles, t: &Listed) -> String {
    format!(
        "{} {}",
        s.suite.apply_to(&t.suite),
        s.test.apply_to(test_label(&t.test, t.repeat))
    )
}

/// What follows the name of a quarantined test.
const QUARANTINED: &str = "(quarantined)";

/// [`name`], marked when the test is quarantined.
fn marked_name(s: &Styles, t: &Listed) -> String {
    let mut text = name(s, t);
    if t.quarantined {
        let _ = write!(text, " {}", s.dim.apply_to(QUARANTINED));
    }
    text
}

/// Every style the reporter uses; all plain when color is off.
#[derive(Debug)]
struct Styles {
    pass: Style,
    fail: Style,
    flaky: Style,
    skip: Style,
    slow: Style,
    info: Style,
    header: Style,
    suite: Style,
    test: Style,
    dim: Style,
}

impl Styles {
    fn new(color: bool) -> Self {
        let style = |s: Style| {
            if color {
                s.force_styling(true)
            } else {
                Style::new()
            }
        };
        Self {
            pass: style(Style::new().green().bold()),
            fail: style(Style::new().red().bold()),
            flaky: style(Style::new().yellow().bold()),
            skip: style(Style::new().yellow()),
            slow: style(Style::new().yellow()),
            info: style(Style::new().cyan().bold()),
            header: style(Style::new().bold()),
            suite: style(Style::new().magenta()),
            test: style(Style::new().cyan()),
            dim: style(Style::new().dim()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{Attempt, Shared, interrupted_run, run_started, scripted_run};
    use std::io;

    fn render(opts: TerminalOptions, events: &[Event]) -> String {
        let out = Shared::default();
        let mut reporter = TerminalReporter::with_bar_target(
            opts,
            Box::new(out.clone()),
            ProgressDrawTarget::hidden,
        );
        for event in events {
            reporter.on_event(event).unwrap();
        }
        reporter.finish().unwrap();
        out.text()
    }

    fn plain() -> TerminalOptions {
        TerminalOptions {
            slow_threshold: Duration::from_secs(1),
            ..TerminalOptions::default()
        }
    }

    #[test]
    fn a_shuffled_run_says_how_to_replay_its_order() {
        let mut events = scripted_run();
        if let Event::RunStarted(r) = &mut events[0] {
            r.seed = Some(4242);
        }
        let out = render(plain(), &events);
        assert!(
            out.lines()
                .next()
                .unwrap_or("")
                .contains("shuffled: --shuffle=4242"),
            "{out}"
        );
        assert!(!render(plain(), &scripted_run()).contains("shuffle"));
    }

    #[test]
    fn plain_run_snapshot() {
        insta::assert_snapshot!(render(plain(), &scripted_run()));
    }

    #[test]
    fn verbose_run_snapshot() {
        let opts = TerminalOptions {
            verbose: true,
            ..plain()
        };
        insta::assert_snapshot!(render(opts, &scripted_run()));
    }

    #[test]
    fn interrupted_run_snapshot() {
        insta::assert_snapshot!(render(plain(), &interrupted_run()));
    }

    #[test]
    fn summary_line_has_the_shape_ci_looks_for() {
        let text = render(plain(), &scripted_run());
        let line = text.lines().find(|l| l.starts_with("Summary: ")).unwrap();
        assert_eq!(
            line,
            "Summary: 2 passed, 4 failed (1 quarantined), 1 flaky (1 quarantined), 1 skipped in 4.21s"
        );
    }

    #[test]
    fn quarantine_is_named_only_when_there_is_some() {
        let text = render(plain(), &interrupted_run());
        assert!(
            text.contains("Summary: 1 passed, 0 failed, 0 flaky, 0 skipped in 1.50s\n"),
            "{text}"
        );
        assert!(!text.contains("quarantined"), "{text}");
        let text = render(plain(), &scripted_run());
        assert!(
            text.contains("  CRASH [  0.700s] rs net::tests::crashes (quarantined)\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "   FAIL [  0.300s] (1/2) py tests/test_b.py::test_flaky (quarantined), retrying\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("   FAIL [  0.051s] py tests/test_a.py::test_fail\n"),
            "a failure that is not quarantined is not marked: {text}"
        );
    }

    #[test]
    fn color_only_when_asked() {
        let plain_text = render(plain(), &scripted_run());
        assert!(!plain_text.contains('\u{1b}'));
        let colored = render(
            TerminalOptions {
                color: true,
                ..plain()
            },
            &scripted_run(),
        );
        assert!(
            colored.contains("\u{1b}[31m\u{1b}[1m   FAIL\u{1b}[0m"),
            "{colored}"
        );
        assert_eq!(console::strip_ansi_codes(&colored), plain_text);
        // The counts stay contiguous for log readers even in color.
        assert!(colored.contains(
            "2 passed, 4 failed (1 quarantined), 1 flaky (1 quarantined), 1 skipped in 4.21s"
        ));
    }

    #[test]
    fn progress_bar_mode_prints_the_same_lines() {
        let bar = TerminalOptions {
            progress_bar: true,
            ..plain()
        };
        assert_eq!(
            render(bar, &scripted_run()),
            render(plain(), &scripted_run())
        );
    }

    #[test]
    fn summary_without_run_finished_counts_what_was_seen() {
        let mut events = scripted_run();
        events.pop();
        let text = render(plain(), &events);
        assert!(
            text.contains(
                "Summary: 2 passed, 4 failed (1 quarantined), 1 flaky (1 quarantined), 1 skipped\n"
            ),
            "{text}"
        );
        assert!(text.contains("interrupted: 0 tests did not run"), "{text}");
    }

    #[test]
    fn slow_list_is_capped_and_sorted() {
        let mut events = vec![run_started(12, 0, 0.0)];
        let names: Vec<String> = (0..12).map(|i| format!("t{i:02}")).collect();
        for (i, name) in names.iter().enumerate() {
            let duration = 2.0 + i as f64;
            events.extend(
                Attempt::once("s", name, Outcome::Pass, FinalStatus::Passed, 0.0, duration)
                    .events(),
            );
        }
        let text = render(plain(), &events);
        let slow: Vec<&str> = text
            .lines()
            .filter(|l| l.trim_start().starts_with("SLOW"))
            .collect();
        assert_eq!(slow.len(), MAX_SLOW);
        assert!(slow[0].ends_with("s t11"), "{}", slow[0]);
        assert!(slow[9].ends_with("s t02"), "{}", slow[9]);
        assert!(
            text.contains("... and 2 more slow tests over 1.00s"),
            "{text}"
        );
    }

    #[test]
    fn remaining_time_comes_from_estimates() {
        assert_eq!(remaining_secs(100.0, 20.0, 4), Some(20.0));
        assert_eq!(remaining_secs(100.0, 120.0, 4), None, "estimate used up");
        assert_eq!(remaining_secs(0.0, 0.0, 4), None, "no estimate");
        assert_eq!(remaining_secs(10.0, 0.0, 0), None);
    }

    #[test]
    fn bar_tracks_consumed_work_and_running_tests() {
        let run = match run_started(3, 1, 10.0) {
            Event::RunStarted(r) => r,
            _ => unreachable!(),
        };
        let mut bar = Bar::new(&run, ProgressDrawTarget::hidden(), false);
        let attempts = [
            Attempt {
                will_retry: true,
                final_status: None,
                ..Attempt::once("s", "a", Outcome::Fail, FinalStatus::Failed, 0.0, 3.0)
            },
            Attempt {
                attempt: 2,
                ..Attempt::once("s", "a", Outcome::Pass, FinalStatus::Flaky, 3.0, 5.0)
            },
        ];
        for attempt in &attempts {
            bar.attempt_started();
            if let Event::AttemptFinished(a) = &attempt.events()[1] {
                bar.attempt_finished(a);
            }
        }
        assert_eq!(bar.consumed, 3.0, "retries are not in the estimate");
        assert_eq!(bar.running, 0);
        assert_eq!(bar.bar.position(), 1);
        assert_eq!(bar.counts.flaky, 1);
        let finish_at = f64::from_bits(bar.finish_at.load(Ordering::Relaxed));
        assert!(
            (3.5..4.0).contains(&finish_at),
            "7s of work left on 2 slots: {finish_at}"
        );
        assert_eq!(bar.bar.message(), "0 running, 0 passed, 0 failed, 1 flaky");
    }

    #[test]
    fn times_read_well() {
        assert_eq!(wall_time(4.214), "4.21s");
        assert_eq!(wall_time(123.5), "2m 03.50s");
        assert_eq!(wall_time(3723.0), "1h 02m 03s");
        assert_eq!(eta_text(42.4), "42s");
        assert_eq!(eta_text(185.0), "3m 05s");
        assert_eq!(eta_text(3720.0), "1h 02m");
    }

    #[test]
    fn broken_writer_is_a_terminal_error() {
        struct Broken;
        impl Write for Broken {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::new(io::ErrorKind::BrokenPipe, "closed"))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut reporter = TerminalReporter::new(plain(), Box::new(Broken));
        let err = reporter.on_event(&run_started(1, 0, 0.0)).unwrap_err();
        assert_eq!(err.to_string(), "failed to write to the terminal: closed");
    }
}
