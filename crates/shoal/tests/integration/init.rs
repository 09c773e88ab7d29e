//! `shoal init` writes a config that shoal itself accepts, and never
//! overwrites one unasked.

use crate::support::{Project, listed_names};

#[test]
fn init_writes_a_config_list_accepts_and_keeps_it() {
    let project = Project::pytest();
    let config = project.root().join("shoal.toml");
    assert!(!config.exists());
    let zero_config = project.shoal(["list"]).run();
    zero_config.assert_code(0);

    project.shoal(["init"]).run().assert_code(0);
    let written = std::fs::read_to_string(&config).expect("init wrote shoal.toml");

    // The written file is what is loaded now, and it finds the same tests.
    let list = project.shoal(["list"]).run();
    list.assert_code(0);
    let suite = written
        .lines()
        .find_map(|l| l.strip_prefix("[suites.")?.strip_suffix(']'))
        .expect("a [suites.NAME] table");
    assert_eq!(
        listed_names(&list, suite),
        listed_names(&zero_config, suite)
    );

    // A second init refuses, and leaves the file alone.
    project.write("shoal.toml", &format!("{written}\n# edited by hand\n"));
    let again = project.shoal(["init"]).run();
    again.assert_code(2);
    assert!(again.stderr.contains("--force"), "{}", again.stderr);
    let kept = std::fs::read_to_string(&config).expect("shoal.toml");
    assert!(
        kept.ends_with("# edited by hand\n"),
        "init overwrote the file"
    );

    project.shoal(["init", "--force"]).run().assert_code(0);
    let forced = std::fs::read_to_string(&config).expect("shoal.toml");
    assert_eq!(forced, written, "--force writes the detected config again");
}
