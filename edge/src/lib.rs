//! The library half of `metalvpc-edge`: the configuration loader, so that tests and the fuzz
//! targets (`fuzz/`) can reach it. The daemon itself is `main.rs`.

pub mod config;
