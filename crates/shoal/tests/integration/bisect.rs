//! `shoal bisect-flake` on a git history made here: a test that never
//! fails becomes flaky (20%) at a known commit, between unrelated commits.

use crate::support::{Project, git, require_pytest};

/// Writes `file` and commits everything; returns the new commit.
pub(crate) fn commit(project: &Project, file: &str, text: &str, message: &str) -> String {
    project.write(file, text);
    git(project.root(), &["add", "-A"]);
    git(project.root(), &["commit", "-q", "-m", message]);
    git(project.root(), &["rev-parse", "HEAD"])
}

/// `test_flips`, failing with probability `p` (the fixture's seeded hash).
pub(crate) fn flip(p: &str) -> String {
    format!(
        "from conftest import fails\n\n\ndef test_flips():\n    assert not fails(\"test_flips\", {p})\n"
    )
}

#[test]
fn bisect_flake_names_the_commit_that_made_a_test_flaky() {
    require_pytest();
    let project = Project::copy_of("flaky-project");
    git(project.root(), &["init", "-q", "-b", "main"]);
    let good = commit(
        &project,
        "tests/test_flip.py",
        &flip("0.0"),
        "add test_flips",
    );
    commit(&project, "notes.txt", "one\n", "unrelated: notes");
    let culprit = commit(
        &project,
        "tests/test_flip.py",
        &flip("0.2"),
        "make test_flips flaky",
    );
    commit(&project, "notes.txt", "two\n", "unrelated: more notes");
    commit(
        &project,
        "notes.txt",
        "three\n",
        "unrelated: even more notes",
    );
    let bad = git(project.root(), &["rev-parse", "HEAD"]);

    let out = project
        .shoal([
            "bisect-flake",
            "test_flips",
            "--good",
            &good,
            "--bad",
            &bad,
            "-j",
            "2",
        ])
        .run();
    out.assert_code(0);
    assert!(
        out.stdout.contains(&format!(
            "first flaky commit: {culprit} make test_flips flaky"
        )),
        "{}",
        out.dump()
    );
    // The evidence names the culprit flaky and its parent good.
    let line_of = |sha: &str| {
        out.stdout
            .lines()
            .find(|l| l.trim_start().starts_with(&sha[..10]))
            .unwrap_or_else(|| panic!("no evidence line for {sha}:\n{}", out.stdout))
            .to_owned()
    };
    assert!(line_of(&culprit).contains("flaky"), "{}", out.stdout);
    assert!(line_of(&good).contains("good"), "{}", out.stdout);
    // The user's tree is untouched and no worktree is left.
    assert_eq!(git(project.root(), &["rev-parse", "HEAD"]), bad);
    assert_eq!(
        git(project.root(), &["worktree", "list"]).lines().count(),
        1
    );
}

#[test]
fn bisect_flake_refuses_a_test_that_is_not_flaky_at_the_bad_end() {
    require_pytest();
    let project = Project::copy_of("flaky-project");
    git(project.root(), &["init", "-q", "-b", "main"]);
    let good = commit(
        &project,
        "tests/test_flip.py",
        &flip("0.0"),
        "add test_flips",
    );
    let bad = commit(&project, "notes.txt", "one\n", "unrelated");
    let out = project
        .shoal([
            "bisect-flake",
            "test_never_fails_either",
            "--good",
            &good,
            "--bad",
            &bad,
            "-j",
            "2",
            "--max-runs",
            "100",
        ])
        .run();
    out.assert_code(2);
    assert!(
        out.stderr.contains("not measurably flaky"),
        "{}",
        out.dump()
    );
}
