//! `shoal init`: writes the detected config as a commented `shoal.toml`.

use shoal_core::config::{AdapterConfig, DEFAULT_CONFIG};
use std::fmt::Write;
use std::path::{Path, PathBuf};

/// The text of a `shoal.toml` for the detected suites.
pub fn render(root: &Path, suites: &[(String, AdapterConfig, PathBuf)]) -> String {
    let mut out = String::from(
        "# shoal.toml, written by `shoal init`. Every key is documented in docs/config.md.\n\n",
    );
    // The built-in defaults, commented out: uncomment a line to change it.
    for line in DEFAULT_CONFIG
        .lines()
        .skip_while(|l| l.starts_with('#') || l.is_empty())
    {
        if line.starts_with('[') || line.starts_with('#') || line.is_empty() {
            let _ = writeln!(out, "{line}");
        } else {
            let _ = writeln!(out, "# {line}");
        }
    }
    out.push_str("\n[hooks]\n# Once per run, before discovery (e.g. install dependencies):\n# worker_setup = \"pip install -r requirements.txt\"\n# Once per slot, before its first test; SHOAL_SLOT is set (e.g. a database per slot):\n# slot_setup = \"createdb test_$SHOAL_SLOT\"\n");
    for (name, adapter, suite_root) in suites {
        let rel = suite_root.strip_prefix(root).unwrap_or(suite_root);
        let rel = if rel.as_os_str().is_empty() {
            ".".to_owned()
        } else {
            rel.display().to_string()
        };
        let _ = writeln!(
            out,
            "\n[suites.{name}]\nadapter = \"{}\"\nroot = {}",
            adapter.name(),
            toml_str(&rel)
        );
        match adapter {
            AdapterConfig::Pytest { python, args, .. } => {
                let _ = writeln!(
                    out,
                    "python = {}\n# Extra pytest arguments:\nargs = {}",
                    toml_str(python),
                    toml_list(args)
                );
            }
            AdapterConfig::Cargo { args, .. } => {
                let _ = writeln!(
                    out,
                    "# Extra `cargo test --no-run` arguments (features, packages):\nargs = {}",
                    toml_list(args)
                );
            }
            AdapterConfig::Command { .. } => {}
        }
        out.push_str("# timeout = \"5m\"\n# retries = 0\n# env = { KEY = \"value\" }\n");
    }
    out
}

fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

fn toml_list(v: &[String]) -> String {
    toml::Value::Array(v.iter().map(|s| toml::Value::String(s.clone())).collect()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_core::config::Config;

    #[test]
    fn rendered_config_parses_back_to_the_detected_suites() {
        let root = Path::new("/p");
        let suites = vec![
            (
                "pytest".to_owned(),
                AdapterConfig::Pytest {
                    python: "python3".into(),
                    args: vec![],
                    persistent: true,
                },
                root.to_owned(),
            ),
            (
                "cargo".to_owned(),
                AdapterConfig::Cargo {
                    args: vec!["--workspace".into()],
                    share: Default::default(),
                },
                root.join("rust"),
            ),
        ];
        let text = render(root, &suites);
        let cfg = Config::parse("shoal.toml", &text, root).unwrap();
        assert_eq!(cfg.suites.len(), 2);
        assert_eq!(cfg.run, Config::default_run());
        let cargo = cfg.suites.iter().find(|s| s.name == "cargo").unwrap();
        assert_eq!(cargo.root, root.join("rust"));
        assert_eq!(cargo.adapter, suites[1].1);
    }
}
