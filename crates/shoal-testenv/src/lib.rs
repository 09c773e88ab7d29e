//! Which test environments this build's tests may use, as `cfg`s set by
//! the build scripts of the crates whose tests need them.
//!
//! A test that needs Docker, PostgreSQL or network namespaces is marked
//! `#[cfg_attr(not(shoal_has_docker), ignore = "needs ...")]` (and the like):
//! where the environment is not offered, `cargo test` reports it *ignored*
//! with the reason, never passed. `scripts/test` offers what it could set
//! up through variables; CI (`CI=true`) offers everything, so a missing
//! engine or database fails there instead of being skipped.
//!
//! | cfg | offered by |
//! | --- | --- |
//! | `shoal_has_docker` | `SHOAL_TEST_DOCKER=1` (scripts/test, once the test images are built) |
//! | `shoal_has_postgres` | `SHOAL_TEST_POSTGRES_URL` set (scripts/ci-postgres.sh prints it) |
//! | `shoal_has_netns` | `SHOAL_TEST_NETNS=1` (scripts/test, when `ip netns` works here) |

/// The cfgs and the variables that offer them.
pub const ENVIRONMENTS: [(&str, &str); 3] = [
    ("shoal_has_docker", "SHOAL_TEST_DOCKER"),
    ("shoal_has_postgres", "SHOAL_TEST_POSTGRES_URL"),
    ("shoal_has_netns", "SHOAL_TEST_NETNS"),
];

/// Whether a variable's value offers its environment.
fn offered(value: Option<&str>) -> bool {
    value.is_some_and(|v| !v.trim().is_empty() && v.trim() != "0")
}

/// The build-script lines for the environments `var` offers (a lookup of
/// the process environment, given as a function for tests).
pub fn lines(var: impl Fn(&str) -> Option<String>) -> Vec<String> {
    let ci = var("CI").is_some_and(|v| v == "true" || v == "1");
    let mut out = vec!["cargo::rerun-if-env-changed=CI".to_owned()];
    for (cfg, name) in ENVIRONMENTS {
        out.push(format!("cargo::rustc-check-cfg=cfg({cfg})"));
        out.push(format!("cargo::rerun-if-env-changed={name}"));
        if ci || offered(var(name).as_deref()) {
            out.push(format!("cargo::rustc-cfg={cfg}"));
        }
    }
    out
}

/// Prints the build-script lines for this process's environment; call it
/// from `build.rs`.
pub fn emit() {
    for line in lines(|name| std::env::var(name).ok()) {
        println!("{line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfgs(vars: &[(&str, &str)]) -> Vec<String> {
        lines(|name| {
            vars.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| (*v).to_owned())
        })
        .into_iter()
        .filter_map(|l| l.strip_prefix("cargo::rustc-cfg=").map(str::to_owned))
        .collect()
    }

    #[test]
    fn only_what_is_offered_is_enabled() {
        assert!(cfgs(&[]).is_empty());
        assert_eq!(
            cfgs(&[
                ("SHOAL_TEST_POSTGRES_URL", "postgres://x/y"),
                ("SHOAL_TEST_DOCKER", "0")
            ]),
            ["shoal_has_postgres"]
        );
    }

    #[test]
    fn ci_enables_everything_so_missing_environments_fail_there() {
        assert_eq!(cfgs(&[("CI", "true")]).len(), 3);
    }
}
