//! [`Fanout`]: one event stream fed to several reporters, so a failing one
//! (a full disk under the JSON log) does not silence the others.

use crate::{ReportError, Reporter};
use shoal_core::Event;
use std::fmt;

/// Forwards every event to each of its reporters.
///
/// A reporter that returns an error is reported once and then dropped: it
/// receives no further events and is not finished (its output is already
/// broken, and repeating the same error for every event helps nobody). The
/// others carry on.
#[derive(Default)]
pub struct Fanout {
    reporters: Vec<Box<dyn Reporter>>,
}

impl Fanout {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a reporter; it sees events from now on.
    pub fn push(&mut self, reporter: impl Reporter + 'static) {
        self.reporters.push(Box::new(reporter));
    }

    /// Builder form of [`Fanout::push`].
    #[must_use]
    pub fn with(mut self, reporter: impl Reporter + 'static) -> Self {
        self.push(reporter);
        self
    }

    /// Reporters still receiving events.
    pub fn len(&self) -> usize {
        self.reporters.len()
    }

    pub fn is_empty(&self) -> bool {
        self.reporters.is_empty()
    }

    /// Calls `f` on every reporter, drops the ones that fail and returns
    /// their errors.
    fn each(
        &mut self,
        mut f: impl FnMut(&mut dyn Reporter) -> Result<(), ReportError>,
    ) -> Result<(), ReportError> {
        let mut errors = Vec::new();
        self.reporters.retain_mut(|r| match f(r.as_mut()) {
            Ok(()) => true,
            Err(e) => {
                errors.push(e);
                false
            }
        });
        match errors.len() {
            0 => Ok(()),
            1 => Err(errors.remove(0)),
            _ => Err(ReportError::Several(errors)),
        }
    }
}

impl fmt::Debug for Fanout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fanout")
            .field("reporters", &self.reporters.len())
            .finish()
    }
}

impl Reporter for Fanout {
    fn on_event(&mut self, event: &Event) -> Result<(), ReportError> {
        self.each(|r| r.on_event(event))
    }

    fn finish(&mut self) -> Result<(), ReportError> {
        self.each(|r| r.finish())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_core::event::{Notice, NoticeLevel};
    use std::io;
    use std::sync::{Arc, Mutex};

    /// Records what it receives; fails on the event numbers in `fail_on`.
    struct Probe {
        seen: Arc<Mutex<Vec<String>>>,
        fail_on: Vec<usize>,
        count: usize,
    }

    impl Probe {
        fn new(fail_on: &[usize]) -> (Self, Arc<Mutex<Vec<String>>>) {
            let seen = Arc::new(Mutex::new(Vec::new()));
            let probe = Probe {
                seen: seen.clone(),
                fail_on: fail_on.to_vec(),
                count: 0,
            };
            (probe, seen)
        }
    }

    impl Reporter for Probe {
        fn on_event(&mut self, event: &Event) -> Result<(), ReportError> {
            self.count += 1;
            if self.fail_on.contains(&self.count) {
                return Err(ReportError::terminal(io::Error::other(format!(
                    "boom {}",
                    self.count
                ))));
            }
            if let Event::Notice(n) = event {
                self.seen.lock().unwrap().push(n.message.clone());
            }
            Ok(())
        }

        fn finish(&mut self) -> Result<(), ReportError> {
            self.seen.lock().unwrap().push("finished".into());
            Ok(())
        }
    }

    fn notice(message: &str) -> Event {
        Event::Notice(Notice {
            level: NoticeLevel::Info,
            message: message.into(),
        })
    }

    #[test]
    fn failing_reporter_does_not_stop_the_others() {
        let (ok, ok_seen) = Probe::new(&[]);
        let (bad, bad_seen) = Probe::new(&[2]);
        let mut fanout = Fanout::new().with(bad).with(ok);

        fanout.on_event(&notice("one")).unwrap();
        let err = fanout.on_event(&notice("two")).unwrap_err();
        assert_eq!(err.to_string(), "failed to write to the terminal: boom 2");
        assert_eq!(fanout.len(), 1);
        fanout.on_event(&notice("three")).unwrap();
        fanout.finish().unwrap();

        assert_eq!(
            *ok_seen.lock().unwrap(),
            ["one", "two", "three", "finished"]
        );
        assert_eq!(*bad_seen.lock().unwrap(), ["one"]);
    }

    #[test]
    fn several_failures_are_collected() {
        let (a, _) = Probe::new(&[1]);
        let (b, _) = Probe::new(&[1]);
        let (c, c_seen) = Probe::new(&[]);
        let mut fanout = Fanout::new().with(a).with(b).with(c);
        match fanout.on_event(&notice("x")) {
            Err(ReportError::Several(errors)) => assert_eq!(errors.len(), 2),
            other => panic!("expected two errors, got {other:?}"),
        }
        assert_eq!(*c_seen.lock().unwrap(), ["x"]);
        assert!(!fanout.is_empty());
    }
}
