//! `workdir = "slot"`: each slot runs a suite in a directory of its own
//! (links to the suite root's entries), so a suite that writes files into
//! its working directory with no worker awareness at all runs on several
//! slots. The fixture makes the two slots' sessions overlap and detects a
//! shared directory, so both verdicts are deterministic.

use crate::events::Events;
use crate::support::{Project, require_pytest};

fn run(project: &Project, name: &str) -> (crate::support::Output, Events) {
    let json = project.out(&format!("{name}.jsonl"));
    let out = project
        .shoal(["run", "-j", "2", "--json"])
        .arg(&json)
        .env("CWD_FIXTURE_OUT", project.out(name))
        .run();
    let events = Events::read(&json);
    (out, events)
}

#[test]
fn a_slot_workdir_keeps_files_written_in_the_working_directory_apart() {
    require_pytest();
    let project = Project::copy_of("cwd-writer-project");
    // Shared (the default): the fixture finds the other slot's session.
    let (shared, events) = run(&project, "shared");
    shared.assert_code(1);
    assert!(
        events.finals().iter().any(|a| a
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("collision")),
        "{}",
        shared.dump()
    );
    // The shared run left its files in the project's directory; a slot's
    // directory copies top-level files, so even they do not collide.
    assert!(project.root().join("session.lock").exists());
    // A directory per slot: every test passes.
    project.write(
        "shoal.toml",
        "[suites.py]\nadapter = \"pytest\"\nworkdir = \"slot\"\n",
    );
    std::fs::remove_file(project.root().join("scratch.txt")).expect("remove scratch.txt");
    let (own, events) = run(&project, "own");
    own.assert_code(0);
    assert_eq!(events.finals().len(), 6, "{}", own.dump());
    assert!(
        !project.root().join("scratch.txt").exists(),
        "the tests wrote into their slots' directories"
    );
}
