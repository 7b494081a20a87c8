#!/usr/bin/env bash
# Builds everything and runs the whole test suite (unit, simulator, and the network-
# namespace integration tests, which need root; without root they print SKIPPED unless
# METALVPC_REQUIRE_NETNS=1). Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/deps.sh
[ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"

# The integration tests run the release daemons from target/release (optimised, as users
# run them); the test binaries themselves build in the faster dev profile.
cargo build --release -p metalvpc-edge -p metalvpc-supernode

# --show-output prints each passing test's figures (RTT, throughput, timings) after it;
# two threads keep timing-sensitive tests from starving each other on small machines.
cargo test --workspace --no-fail-fast -- --test-threads=2 --show-output

# Every fuzz target for a bounded time (docs/fuzzing.md); non-zero on any crash.
bash scripts/fuzz.sh "${METALVPC_FUZZ_SECONDS:-15}"
