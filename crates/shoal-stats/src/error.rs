//! The one error type: a statistical parameter outside its valid range.

/// A parameter of [`SprtConfig`](crate::SprtConfig),
/// [`FlakyConfig`](crate::FlakyConfig) or
/// [`QuarantinePolicy`](crate::QuarantinePolicy) is out of range.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StatsError {
    /// `name` is the parameter as the user writes it (`sprt.p0`), `value`
    /// what was given, `expected` the range it must lie in.
    #[error("invalid {name} = {value}: must be {expected}; fix the setting")]
    OutOfRange {
        name: &'static str,
        value: f64,
        expected: String,
    },
}

impl StatsError {
    pub(crate) fn out_of_range(
        name: &'static str,
        value: f64,
        expected: impl Into<String>,
    ) -> Self {
        Self::OutOfRange {
            name,
            value,
            expected: expected.into(),
        }
    }
}
