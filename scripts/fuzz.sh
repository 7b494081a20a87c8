#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for a bounded time each (docs/fuzzing.md).
#   scripts/fuzz.sh [seconds-per-target] [target ...]     default: 15 s, every target
# Installs cargo-fuzz if missing, builds on the stable toolchain (RUSTC_BOOTSTRAP=1 lets
# cargo-fuzz pass its -Z flags), runs each target over its seed corpus fuzz/corpus/<target>
# (read only: new inputs go to fuzz/work/<target>, which git ignores), and exits non-zero
# if any target crashed, naming the input that did it and how to replay it.
set -euo pipefail
cd "$(dirname "$0")/.."

secs=${1:-15}
shift || true
case $secs in '' | *[!0-9]*) echo "fuzz.sh: seconds must be a number, got '$secs'" >&2; exit 2 ;; esac

[ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz.sh: installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi
export RUSTC_BOOTSTRAP=1

# No sanitizer (the fuzzed code is safe Rust; ASan would halve the executions), debug
# assertions on (integer overflow panics instead of wrapping).
flags=(--sanitizer none --debug-assertions)
# Inputs up to 4 KiB; a target using more than 2 GiB counts as a crash (unbounded memory),
# and so does one input taking more than 10 s (a hang).
limits=(-max_len=4096 -rss_limit_mb=2048 -timeout=10 -print_final_stats=1)

cd fuzz
start=$(date +%s)
cargo fuzz build "${flags[@]}"
echo "fuzz.sh: built in $(($(date +%s) - start)) s"

if [ "$#" -gt 0 ]; then targets=("$@"); else mapfile -t targets < <(cargo fuzz list); fi
failed=()
for t in "${targets[@]}"; do
  mkdir -p "work/$t" "corpus/$t"
  log="work/$t.log"
  if cargo fuzz run "${flags[@]}" "$t" "work/$t" "corpus/$t" -- \
    -max_total_time="$secs" "${limits[@]}" >"$log" 2>&1; then
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    echo "fuzz.sh: $t: ok, ${runs:-?} inputs in ${secs} s"
  else
    failed+=("$t")
    echo "fuzz.sh: $t: CRASH (log: fuzz/$log)" >&2
    grep -E "panicked at|^thread|SUMMARY|out-of-memory|timeout" "$log" | head -n 8 >&2 || true
    grep -E "Test unit written to|Reproduce with|cargo fuzz run" "$log" | sed 's/^/fuzz.sh:   /' >&2 || true
  fi
done

echo "fuzz.sh: ${#targets[@]} targets, $((${#targets[@]} - ${#failed[@]})) passed, ${#failed[@]} crashed, $(($(date +%s) - start)) s in all"
if [ "${#failed[@]}" -gt 0 ]; then
  echo "fuzz.sh: crashing inputs are in fuzz/artifacts/<target>/; replay one with" >&2
  echo "fuzz.sh:   cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run ${flags[*]} <target> artifacts/<target>/<file>" >&2
  exit 1
fi
