//! End-to-end tests of the `shoal` binary: it runs as a subprocess on
//! copies of the real fixture projects (pytest, Cargo, command), and what it
//! reports is checked against what the tools' own runners report.

mod bisect;
mod cargo;
mod chaos;
mod command;
mod config_errors;
mod containers;
mod discovery_cache;
mod distributed;
mod events;
mod flaky;
mod history;
mod init;
mod interrupt;
mod junit;
mod persistent;
mod pytest;
mod quarantine;
mod reference;
mod retries;
mod selection;
mod services;
mod stress;
mod support;
mod workdir;
mod xdist;
