//! Set-up hooks from config: `worker_setup` once per run, `slot_setup` once
//! per slot before its first test. Hooks are the user's own commands (a
//! string runs through `sh -c`); their failure stops the run.

use shoal_core::config::CommandLine;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use tokio::process::Command;

/// A hook that could not run or exited non-zero.
#[derive(Debug, thiserror::Error)]
#[error("{which} hook `{command}` {problem}\n{output}")]
pub struct HookError {
    pub which: &'static str,
    pub command: String,
    pub problem: String,
    pub output: String,
}

/// Runs a hook to completion, returning its combined output.
pub async fn run_hook(
    which: &'static str,
    cmd: &CommandLine,
    cwd: &Path,
    env: &BTreeMap<String, String>,
) -> Result<String, HookError> {
    let argv = cmd.argv();
    let shown = match cmd {
        CommandLine::Shell(s) => s.clone(),
        CommandLine::Argv(v) => v.join(" "),
    };
    let out = Command::new(&argv[0])
        .args(&argv[1..])
        .current_dir(cwd)
        .envs(env)
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| HookError {
            which,
            command: shown.clone(),
            problem: format!("could not start: {e}"),
            output: String::new(),
        })?;
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    if out.status.success() {
        Ok(text)
    } else {
        Err(HookError {
            which,
            command: shown,
            problem: format!("failed ({})", out.status),
            output: match tail(&text, 4000) {
                t if t.len() < text.trim_end().len() => format!("[...]{t}"),
                t => t.to_owned(),
            },
        })
    }
}

/// The last `max` bytes of `s` (at a character boundary).
pub(crate) fn tail(s: &str, max: usize) -> &str {
    let s = s.trim_end();
    let mut start = s.len().saturating_sub(max);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hook_sees_env_and_failure_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let env = BTreeMap::from([("SHOAL_SLOT".to_owned(), "3".to_owned())]);
        let out = run_hook(
            "slot_setup",
            &CommandLine::Shell("echo slot=$SHOAL_SLOT".into()),
            dir.path(),
            &env,
        )
        .await
        .unwrap();
        assert_eq!(out.trim(), "slot=3");
        let err = run_hook(
            "worker_setup",
            &CommandLine::Argv(vec!["sh".into(), "-c".into(), "echo boom; exit 4".into()]),
            dir.path(),
            &env,
        )
        .await
        .unwrap_err();
        assert!(err.to_string().contains("failed"), "{err}");
        assert!(err.output.contains("boom"));
    }
}
