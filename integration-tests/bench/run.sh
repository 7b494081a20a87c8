#!/usr/bin/env bash
# The side-by-side benchmark of issue 5: raw underlay, metalvpc (direct with each cipher, and
# relayed) and its peers (boringtun, wireguard-go, Nebula, tinc, n2n), one after the other in
# one namespace rig, on this machine. See docs/performance.md.
#
#   integration-tests/bench/run.sh            # full: iperf3 10 s, median of 3 (about 15 min)
#   integration-tests/bench/run.sh --quick    # 1 run of 3 s each, for iterating
#   integration-tests/bench/run.sh --only metalvpc,boringtun   # a subset (raw is always run)
#   integration-tests/bench/run.sh --no-install                # use what is installed
#
# Needs root (namespaces). Prints one table and writes it to
# integration-tests/bench/results/latest.md (--out FILE to change). Traffic stays inside the
# namespaces this script creates (underlay 198.18.0.0/15, overlays 10.99.N.0/24); all of them
# and every daemon it started are removed on exit, also on Ctrl-C or failure.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
RUNS=3 SECS=10 ONLY="" INSTALL=1 OUT="$HERE/results/latest.md"
while [ $# -gt 0 ]; do
  case $1 in
    --quick) RUNS=1 SECS=3 ;;
    --only) ONLY=$2; shift ;;
    --no-install) INSTALL=0 ;;
    --out) OUT=$2; shift ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "run.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
  esac
  shift
done
[ "$(id -u)" -eq 0 ] || { echo "run.sh: needs root (network namespaces)" >&2; exit 1; }
export PATH="$PATH:/usr/sbin:/sbin:$HOME/.cargo/bin"

if [ "$INSTALL" = 1 ]; then
  "$HERE/install.sh"
fi
BORINGTUN=$(command -v boringtun-cli || echo "$HOME/.cargo/bin/boringtun-cli")

echo "bench: building the release daemons"
(cd "$ROOT" && cargo build --release -q -p metalvpc-edge -p metalvpc-supernode &&
  cargo build --release -q -p metalvpc-integration-tests --example fake_members)
BIN="$ROOT/target/release"
FAKE="$BIN/examples/fake_members"

P="mvb$(printf '%04x' $((RANDOM % 65536)))"
WORK=$(mktemp -d "/tmp/$P.XXXX")
RESULTS="$WORK/results.tsv"
: >"$RESULTS"
source "$HERE/rig.sh"
source "$HERE/peers.sh"
trap 'rig_down; echo "bench: work files in $WORK"' EXIT
trap 'exit 130' INT TERM
rig_up

wanted() { [ -z "$ONLY" ] || [[ ",$ONLY," == *",$1,"* ]]; }
# run_system NAME SETUP-FUNCTION ARGS...: set up, measure, tear down; a system that fails to
# come up is reported and skipped, the others still run.
run_system() {
  local name=$1; shift
  wanted "$name" || [ "$name" = raw ] || return 0
  echo "bench: === $name ==="
  if "$@"; then
    measure "$name" "$DST" "${DAEMONS[@]}"
    [ "$name" = metalvpc ] && metalvpc_memory
  else
    echo "bench: $name did not come up; skipped (logs in $WORK)" >&2
    record "$name" "error" "did not come up"
  fi
  stop_all
  sleep 1
}

# metalvpc's own memory figures: the edge's RSS after the transfers, and an idle edge's.
metalvpc_memory() {
  record metalvpc rss_after_load_edge_a "$(rss_mb "$MV_A_PID")"
}

run_system raw sys_raw
run_system metalvpc sys_metalvpc chacha20-poly1305
run_system metalvpc-aes sys_metalvpc aes-256-gcm
run_system metalvpc-plain sys_metalvpc chacha20-poly1305 plain
TCP_ONLY=1 run_system metalvpc-relay sys_metalvpc chacha20-poly1305 relay
if wanted metalvpc-memory; then
  echo "bench: === metalvpc-memory ==="
  mv_memory || echo "bench: the memory measurement did not complete (logs in $WORK)" >&2
  stop_all
fi
run_system boringtun sys_boringtun
run_system wireguard-go sys_wireguard_go
run_system nebula sys_nebula
run_system tinc sys_tinc
run_system n2n sys_n2n

cpu=$(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)
machine="Machine: $cpu, $(nproc) cores, Linux $(uname -r); $(date -u +%Y-%m-%d); iperf3 ${SECS} s, median of ${RUNS}; overlay MTU $MTU."
mkdir -p "$(dirname "$OUT")"
python3 "$HERE/report.py" table "$RESULTS" "$OUT" "$machine"
cp "$RESULTS" "${OUT%.md}.tsv"
echo "bench: table written to $OUT"
