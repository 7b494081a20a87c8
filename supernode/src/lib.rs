//! The library half of `metalvpc-supernode`: the configuration loader, so that tests and the
//! fuzz targets (`fuzz/`) can reach it. The binary is `main.rs` (the command line) and one
//! module per command: `run.rs` (the daemon, over `metalvpc_common::daemon`), `check.rs`,
//! `status.rs`, `enrolled.rs`, `admin.rs`.

pub mod config;

/// The enrolment store (used by the config loader and the daemon).
pub mod enrol;

/// The daemon's background writer of the enrolment store.
pub mod enrol_writer;

/// Which key owns which MAC (other than keys' derived ones), kept across restarts.
pub mod macs_file;
