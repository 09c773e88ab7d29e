//! JUnit reports (shoal's and pytest's) read back as test cases and the
//! counts their `<testsuite>` elements claim.

use quick_xml::events::{BytesStart, Event as XmlEvent};
use std::path::Path;

/// The status a JUnit test case stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Status {
    Passed,
    Failed,
    Skipped,
}

impl Status {
    /// From a `final_status` of the event log; `flaky` counts as passed.
    pub fn from_final(s: &str) -> Status {
        match s {
            "passed" | "flaky" => Status::Passed,
            "failed" => Status::Failed,
            "skipped" => Status::Skipped,
            other => panic!("unknown final status {other:?}"),
        }
    }
}

/// One `<testcase>` of a JUnit report and the result elements it holds.
#[derive(Debug, Clone, Default)]
pub struct JunitCase {
    pub classname: String,
    pub name: String,
    pub failures: usize,
    pub errors: usize,
    pub skipped: usize,
    pub flaky_failures: usize,
    pub rerun_failures: usize,
}

impl JunitCase {
    /// What a CI tool reads from the case: failed if it holds a failure or
    /// an error, else skipped if it holds `<skipped>`, else passed.
    pub fn status(&self) -> Status {
        if self.failures + self.errors > 0 {
            Status::Failed
        } else if self.skipped > 0 {
            Status::Skipped
        } else {
            Status::Passed
        }
    }
}

/// A parsed JUnit report: its test cases and the counts its `<testsuite>`
/// elements claim.
#[derive(Debug, Clone, Default)]
pub struct Junit {
    pub cases: Vec<JunitCase>,
    pub claimed_tests: usize,
    pub claimed_failures_and_errors: usize,
}

impl Junit {
    pub fn read(path: &Path) -> Junit {
        let mut reader = quick_xml::Reader::from_file(path)
            .unwrap_or_else(|e| panic!("open JUnit report {}: {e}", path.display()));
        let mut buf = Vec::new();
        let mut junit = Junit::default();
        let mut current: Option<JunitCase> = None;
        // Depth below the current <testcase>: result elements are its
        // direct children; <system-out> inside a rerun is not a result.
        let mut depth = 0usize;
        loop {
            let ev = reader
                .read_event_into(&mut buf)
                .unwrap_or_else(|e| panic!("{} is not valid XML: {e}", path.display()));
            match ev {
                XmlEvent::Eof => break,
                XmlEvent::Start(ref e) | XmlEvent::Empty(ref e) => {
                    let empty = matches!(ev, XmlEvent::Empty(_));
                    match (e.name().as_ref(), current.as_mut()) {
                        (b"testsuite", None) => {
                            junit.claimed_tests += attr_count(e, "tests");
                            junit.claimed_failures_and_errors +=
                                attr_count(e, "failures") + attr_count(e, "errors");
                        }
                        (b"testcase", None) => {
                            let case = JunitCase {
                                classname: attr(e, "classname").unwrap_or_default(),
                                name: attr(e, "name").expect("testcase has a name"),
                                ..JunitCase::default()
                            };
                            if empty {
                                junit.cases.push(case);
                            } else {
                                current = Some(case);
                                depth = 0;
                            }
                        }
                        (tag, Some(case)) => {
                            if depth == 0 {
                                match tag {
                                    b"failure" => case.failures += 1,
                                    b"error" => case.errors += 1,
                                    b"skipped" => case.skipped += 1,
                                    b"flakyFailure" | b"flakyError" => case.flaky_failures += 1,
                                    b"rerunFailure" | b"rerunError" => case.rerun_failures += 1,
                                    _ => {}
                                }
                            }
                            if !empty {
                                depth += 1;
                            }
                        }
                        _ => {}
                    }
                }
                XmlEvent::End(ref e) if current.is_some() => {
                    if depth == 0 {
                        assert_eq!(e.name().as_ref(), b"testcase");
                        junit.cases.extend(current.take());
                    } else {
                        depth -= 1;
                    }
                }
                _ => {}
            }
            buf.clear();
        }
        junit
    }

    /// Asserts the `<testsuite>` counts agree with the cases listed.
    #[track_caller]
    pub fn assert_self_consistent(&self) {
        assert_eq!(
            self.claimed_tests,
            self.cases.len(),
            "`tests` attributes vs <testcase> elements"
        );
        let failing = self
            .cases
            .iter()
            .map(|c| c.failures + c.errors)
            .sum::<usize>();
        assert_eq!(
            self.claimed_failures_and_errors, failing,
            "`failures` + `errors` attributes vs failure elements"
        );
    }

    /// The case named `name`; panics unless there is exactly one.
    pub fn case(&self, name: &str) -> &JunitCase {
        let cases: Vec<_> = self.cases.iter().filter(|c| c.name == name).collect();
        assert_eq!(cases.len(), 1, "JUnit cases named {name:?}");
        cases[0]
    }

    /// (passed, failed, skipped) over the cases.
    pub fn totals(&self) -> Totals {
        Totals::of(self.cases.iter().map(JunitCase::status))
    }
}

fn attr(e: &BytesStart<'_>, name: &str) -> Option<String> {
    e.try_get_attribute(name)
        .expect("well-formed attributes")
        .map(|a| a.unescape_value().expect("attribute value").into_owned())
}

fn attr_count(e: &BytesStart<'_>, name: &str) -> usize {
    attr(e, name).map_or(0, |v| {
        v.parse()
            .unwrap_or_else(|_| panic!("attribute {name}={v:?} is not a count"))
    })
}

/// Result totals, the unit every comparison with a tool's own runner uses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
}

impl Totals {
    pub fn of(statuses: impl IntoIterator<Item = Status>) -> Totals {
        let mut t = Totals::default();
        for s in statuses {
            match s {
                Status::Passed => t.passed += 1,
                Status::Failed => t.failed += 1,
                Status::Skipped => t.skipped += 1,
            }
        }
        t
    }
}
