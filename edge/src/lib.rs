//! The library half of `metalvpc-edge`: the configuration loader, so that tests and the fuzz
//! targets (`fuzz/`) can reach it. The binary is `main.rs` (the command line) and one module
//! per command: `run.rs` (the daemon, over `metalvpc_common::daemon`), `check.rs`, `status.rs`.

pub mod config;
