//! A test that fails the first time it runs in each shoal run and passes on
//! the retry, to show how shoal names flaky tests. Outside shoal it passes.

#[test]
fn sometimes_fails() {
    let Ok(run) = std::env::var("SHOAL_RUN_ID") else { return };
    let marker = std::path::Path::new("/tmp").join(format!("shoal-quickstart-{run}"));
    if std::fs::create_dir(&marker).is_ok() {
        panic!("first attempt in run {run} fails (run with --retries 1 to see it retried)");
    }
}

#[test]
fn steady() {
    for i in 0..1000 {
        assert!(i < 1000);
    }
}
