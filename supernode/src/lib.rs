//! The library half of `metalvpc-supernode`: the configuration loader, so that tests and the
//! fuzz targets (`fuzz/`) can reach it. The daemon itself is `main.rs`.

pub mod config;

/// The enrolment store (used by the config loader and the daemon).
pub mod enrol;
