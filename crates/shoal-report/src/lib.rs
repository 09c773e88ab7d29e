//! shoal's reporters: everything that turns the one [`Event`] stream into
//! output a person or a tool reads — the terminal, a JUnit XML file and a
//! JSON-lines event log — plus [`Fanout`], which feeds one stream to several.
//!
//! Every reporter implements [`Reporter`]: the engine calls
//! [`Reporter::on_event`] for each event in order and [`Reporter::finish`]
//! once at the end, also after an interrupted run.

mod error;
mod fanout;
pub mod json;
pub mod junit;
pub mod terminal;
#[cfg(test)]
mod testing;
mod text;

pub use error::ReportError;
pub use fanout::Fanout;
pub use json::JsonLinesReporter;
pub use junit::JunitReporter;
pub use terminal::{TerminalOptions, TerminalReporter};

use shoal_core::Event;

/// A consumer of the run's event stream.
pub trait Reporter: Send {
    /// Handles one event. Events arrive in the order the engine emitted them.
    fn on_event(&mut self, event: &Event) -> Result<(), ReportError>;

    /// Flushes or writes everything. Called once at the end, also after an
    /// interrupted run: whatever was written must then be complete and valid.
    fn finish(&mut self) -> Result<(), ReportError>;
}

impl<R: Reporter + ?Sized> Reporter for Box<R> {
    fn on_event(&mut self, event: &Event) -> Result<(), ReportError> {
        (**self).on_event(event)
    }

    fn finish(&mut self) -> Result<(), ReportError> {
        (**self).finish()
    }
}
