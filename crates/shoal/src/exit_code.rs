//! Every exit code shoal returns, in one place (documented in docs/cli.md).

/// The process exit codes of `shoal`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShoalExitCode {
    /// Every test passed (a test that passed on retry counts as passed
    /// unless `--fail-on-flaky`; a quarantined test's failure is excused).
    Success = 0,
    /// At least one test that is not quarantined failed, timed out, crashed
    /// or was lost.
    TestsFailed = 1,
    /// Bad command line or config; nothing was run.
    Usage = 2,
    /// shoal could not do its job: discovery, a hook, the store, the executor.
    Infrastructure = 3,
    /// Interrupted (Ctrl-C / SIGTERM); partial reports were written.
    Interrupted = 130,
}

impl ShoalExitCode {
    pub fn from_run(code: i32) -> Self {
        match code {
            0 => ShoalExitCode::Success,
            130 => ShoalExitCode::Interrupted,
            _ => ShoalExitCode::TestsFailed,
        }
    }
}

impl From<ShoalExitCode> for std::process::ExitCode {
    fn from(c: ShoalExitCode) -> Self {
        std::process::ExitCode::from(c as u8)
    }
}
