//! The labels shoal puts on every container, network and volume it creates,
//! and the owner check the reaper uses to tell leftovers of dead runs.
//!
//! Every object carries `org.shoal.managed=1`; the caller adds run, slot and
//! worker labels ([`run_labels`]); shoal adds the owner: this host's name, this
//! process's pid and the pid's start time (so that a recycled pid does not
//! make a dead owner look alive).

use nix::errno::Errno;
use nix::sys::signal::kill;
use nix::unistd::Pid;
use std::collections::{BTreeMap, HashMap};

/// Present (value `1`) on everything shoal creates.
pub const MANAGED: &str = "org.shoal.managed";
/// The run id that created the object.
pub const RUN: &str = "org.shoal.run";
/// The slot (0-based) the object serves.
pub const SLOT: &str = "org.shoal.slot";
/// The worker the object serves (distributed mode).
pub const WORKER: &str = "org.shoal.worker";
/// The per-slot service a container runs (its name on the slot's network).
pub const SERVICE: &str = "org.shoal.service";
/// The pid of the shoal process that created the object.
pub const PID: &str = "org.shoal.pid";
/// The start time of that process (clock ticks since boot, `/proc/PID/stat`).
pub const PID_START: &str = "org.shoal.pid-start";
/// The host name of the machine that process runs on.
pub const HOST: &str = "org.shoal.host";

/// `org.shoal.run`, and `org.shoal.slot` / `org.shoal.worker` when given.
pub fn run_labels(run: &str, slot: Option<u32>, worker: Option<&str>) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::from([(RUN.to_owned(), run.to_owned())]);
    if let Some(slot) = slot {
        labels.insert(SLOT.to_owned(), slot.to_string());
    }
    if let Some(worker) = worker {
        labels.insert(WORKER.to_owned(), worker.to_owned());
    }
    labels
}

/// The owner labels of this process: host, pid and pid start time.
pub fn owner_labels() -> BTreeMap<String, String> {
    let pid = std::process::id();
    let mut labels = BTreeMap::from([
        (HOST.to_owned(), this_host()),
        (PID.to_owned(), pid.to_string()),
    ]);
    if let Some(start) = process_start(pid) {
        labels.insert(PID_START.to_owned(), start.to_string());
    }
    labels
}

/// `labels` plus `org.shoal.managed=1` and the owner labels it does not set.
pub(crate) fn complete(labels: &BTreeMap<String, String>) -> HashMap<String, String> {
    let mut all: HashMap<String, String> = owner_labels().into_iter().collect();
    all.extend(labels.iter().map(|(k, v)| (k.clone(), v.clone())));
    all.insert(MANAGED.to_owned(), "1".to_owned());
    all
}

/// This machine's host name (empty if it cannot be read).
pub fn this_host() -> String {
    nix::unistd::gethostname()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Whether the owner named by `labels` is known to be dead: it ran on this
/// host, and its pid is gone or now belongs to a process started at another
/// time. Objects from other hosts, or without owner labels, are not known dead.
pub(crate) fn owner_is_dead(labels: &HashMap<String, String>) -> bool {
    let Some(host) = labels.get(HOST) else {
        return false;
    };
    let Some(pid) = labels.get(PID).and_then(|p| p.parse::<u32>().ok()) else {
        return false;
    };
    if *host != this_host() {
        return false;
    }
    let Ok(raw) = i32::try_from(pid) else {
        return false;
    };
    if kill(Pid::from_raw(raw), None) == Err(Errno::ESRCH) {
        return true;
    }
    // The pid is in use: by the owner, unless it was recycled.
    match (
        labels.get(PID_START).and_then(|s| s.parse::<u64>().ok()),
        process_start(pid),
    ) {
        (Some(recorded), Some(now)) => recorded != now,
        _ => false,
    }
}

/// Start time of process `pid` in clock ticks since boot (field 22 of
/// `/proc/PID/stat`), if it can be read.
fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_start_time(&stat)
}

/// Field 22 of a `/proc/PID/stat` line. The command name (field 2) is in
/// parentheses and may itself contain spaces and parentheses, so fields are
/// counted from the last `)`.
fn parse_start_time(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // `rest` starts at field 3 (state); field 22 is the 20th from there.
    rest.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_is_field_22_even_with_odd_command_names() {
        let stat =
            "4242 (a) b) (c) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10";
        assert_eq!(parse_start_time(stat), Some(987654));
        assert_eq!(parse_start_time("12 (x) S 1"), None);
    }

    #[test]
    fn this_process_is_a_live_owner() {
        let labels: HashMap<_, _> = owner_labels().into_iter().collect();
        assert!(labels.contains_key(PID_START), "{labels:?}");
        assert!(!owner_is_dead(&labels));
    }

    #[test]
    fn an_exited_process_is_a_dead_owner() {
        let mut child = std::process::Command::new("true")
            .spawn()
            .expect("spawn true");
        let pid = child.id();
        child.wait().expect("wait");
        let labels = HashMap::from([
            (HOST.to_owned(), this_host()),
            (PID.to_owned(), pid.to_string()),
        ]);
        assert!(owner_is_dead(&labels));
    }

    #[test]
    fn a_recycled_pid_is_a_dead_owner() {
        let mut labels: HashMap<_, _> = owner_labels().into_iter().collect();
        labels.insert(PID_START.to_owned(), "1".to_owned());
        assert!(owner_is_dead(&labels));
    }

    #[test]
    fn owners_on_other_hosts_or_unlabelled_are_not_known_dead() {
        let mut labels: HashMap<_, _> = owner_labels().into_iter().collect();
        labels.insert(HOST.to_owned(), format!("{}-elsewhere", this_host()));
        labels.insert(PID_START.to_owned(), "1".to_owned());
        assert!(!owner_is_dead(&labels));
        assert!(!owner_is_dead(&HashMap::new()));
    }

    #[test]
    fn completed_labels_keep_the_callers_and_mark_managed() {
        let labels = complete(&run_labels("r1", Some(3), Some("w")));
        assert_eq!(labels[MANAGED], "1");
        assert_eq!(labels[RUN], "r1");
        assert_eq!(labels[SLOT], "3");
        assert_eq!(labels[WORKER], "w");
        assert_eq!(labels[PID], std::process::id().to_string());
    }
}
