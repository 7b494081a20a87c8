#!/usr/bin/env bash
# metalvpc demo, entirely inside throw-away network namespaces on this machine:
#
#   supernode 198.18.0.1 ─┐
#   edge A    198.18.0.11 ├─ bridge (private "underlay", 198.18.0.0/24)
#   edge B    198.18.0.12 │
#   edge C    198.18.0.13 ┘    overlay 10.99.0.0/24: A=.1 B=.2 C=.3
#
# Direct UDP between A and C is blocked with nftables, so A<->C is relayed by the
# supernode while A<->B and B<->C go direct. The script builds the daemons, starts them,
# waits for registration, pings every pair, runs iperf3 A->B (direct) and A->C (relayed)
# for a few seconds, and prints a summary from `status --json`. Everything is removed on
# exit, failure or Ctrl-C. Needs root.
#
#   scripts/demo.sh           run the demo and clean up
#   scripts/demo.sh --hold    keep the lab running until Ctrl-C (to poke at it)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

HOLD=0
[ "${1:-}" = "--hold" ] && HOLD=1
IPERF_SECS=${IPERF_SECS:-5}

if [ "$(id -u)" -ne 0 ]; then
  echo "demo.sh: needs root (network namespaces, TAP devices). Try: sudo $0" >&2
  exit 1
fi

bash scripts/deps.sh
[ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
echo "== cargo build --release"
cargo build --release
BIN=${METALVPC_BIN_DIR:-$ROOT/target/release}
EDGE=$BIN/metalvpc-edge
SN=$BIN/metalvpc-supernode

# Unique names for this run (interface names must stay <= 15 characters).
P=mvd$$
WORK=$(mktemp -d /tmp/mvdemo.XXXXXX)
NSES=()
PIDS=()
OK=0

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  set +e
  if [ "$OK" -ne 1 ] && [ -d "$WORK" ]; then
    echo "== demo failed (exit $rc); last lines of the daemon logs:" >&2
    for f in "$WORK"/*.log; do [ -f "$f" ] && { echo "--- $f" >&2; tail -n 30 "$f" >&2; }; done
  fi
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null; done
  for pid in "${PIDS[@]}"; do
    for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -9 "$pid" 2>/dev/null
  done
  # Anything else still inside our namespaces was started by this script.
  for ns in "${NSES[@]}"; do
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null; done
    ip netns del "$ns" 2>/dev/null
  done
  rm -rf "$WORK"
  echo "== cleaned up (namespaces ${P}-*, $WORK)"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

in_ns() { local ns=$1; shift; ip netns exec "$ns" "$@"; }

# --- underlay ---------------------------------------------------------------------
echo "== building namespaces ($P-*)"
ip netns add "$P-sw"; NSES+=("$P-sw")
in_ns "$P-sw" ip link set lo up
ip -n "$P-sw" link add "${P}br" type bridge
ip -n "$P-sw" link set "${P}br" up
i=0
add_host() { # role underlay-ip
  local ns=$P-$1
  ip netns add "$ns"; NSES+=("$ns")
  in_ns "$ns" ip link set lo up
  in_ns "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1 || true
  ip -n "$P-sw" link add "${P}p$i" type veth peer name "${P}h$i" netns "$ns"
  ip -n "$P-sw" link set "${P}p$i" master "${P}br" up
  ip -n "$ns" addr add "$2/24" dev "${P}h$i"
  ip -n "$ns" link set "${P}h$i" up
  i=$((i + 1))
}
add_host sn 198.18.0.1
add_host a 198.18.0.11
add_host b 198.18.0.12
add_host c 198.18.0.13

# Block direct UDP between A and C (both directions, in both namespaces): A<->C must relay.
block() { # ns other-ip
  in_ns "$1" nft -f - <<NFT
table inet mvpc_demo_block {
  chain out { type filter hook output priority 0; ip daddr $2 meta l4proto udp drop; }
  chain in { type filter hook input priority 0; ip saddr $2 meta l4proto udp drop; }
}
NFT
}
block "$P-a" 198.18.0.13
block "$P-c" 198.18.0.11

# --- keys and configs ---------------------------------------------------------------
echo "== keys and configs in $WORK"
(umask 077; "$SN" genkey >"$WORK/supernode.key")
SN_PUB=$("$SN" pubkey <"$WORK/supernode.key")
# Signed membership (docs/signed-membership.md): the edges accept only the peers on a list the
# administrator key signed, so the supernode cannot slip in a key of its own.
ADMIN_PUB=$("$SN" admin-genkey --out "$WORK/admin.key" 2>/dev/null)
declare -A PUB ADDR
ADDR[a]=10.99.0.1 ADDR[b]=10.99.0.2 ADDR[c]=10.99.0.3
for e in a b c; do
  (umask 077; "$EDGE" genkey >"$WORK/$e.key")
  PUB[$e]=$("$EDGE" pubkey <"$WORK/$e.key")
  cat >"$WORK/$e.toml" <<TOML
community = "demo"
private_key_file = "$e.key"
management = "$WORK/$e.sock"
admin_key = "$ADMIN_PUB"

[[supernode]]
address = "198.18.0.1:7654"
public_key = "$SN_PUB"

[interface]
name = "${P}t$e"
address = "${ADDR[$e]}/24"
TOML
done
{
  cat <<TOML
listen = "198.18.0.1:7654"
private_key_file = "supernode.key"
management = "$WORK/sn.sock"

[[community]]
name = "demo"
network = "10.99.0.0/24"
signed_membership = "demo.members"
admin_key = "$ADMIN_PUB"
TOML
  for e in a b c; do
    printf '[[community.node]]\nname = "edge-%s"\npublic_key = "%s"\naddress = "%s"\n' "$e" "${PUB[$e]}" "${ADDR[$e]}"
  done
} >"$WORK/supernode.toml"
"$SN" sign --key "$WORK/admin.key" --config "$WORK/supernode.toml" >/dev/null

# --- daemons ----------------------------------------------------------------------------
echo "== starting supernode and edges"
in_ns "$P-sn" "$SN" run --config "$WORK/supernode.toml" >"$WORK/supernode.log" 2>&1 &
PIDS+=($!)
sleep 0.3
for e in a b c; do
  in_ns "$P-$e" "$EDGE" run --config "$WORK/$e.toml" >"$WORK/$e.log" 2>&1 &
  PIDS+=($!)
done

status() { # edge -> JSON
  in_ns "$P-$1" timeout 10 "$EDGE" status --config "$WORK/$1.toml" --json
}
# jq-free JSON queries.
py() { python3 -c "import json,sys; s=json.load(sys.stdin); $1"; }

start=$(date +%s%3N)
for e in a b c; do
  for _ in $(seq 1 100); do
    if status "$e" 2>/dev/null | py 'sys.exit(0 if any(x.get("registered") for x in s["supernodes"]) else 1)'; then
      break
    fi
    sleep 0.1
  done
  status "$e" | py 'sys.exit(0 if any(x.get("registered") for x in s["supernodes"]) else 1)' ||
    { echo "edge $e did not register within 10 s" >&2; exit 1; }
  echo "   edge $e registered ($(( $(date +%s%3N) - start )) ms after the edges were started)"
done

# --- traffic ------------------------------------------------------------------------------
declare -A RTT BW
pairs=("a b" "a c" "b c")
echo "== ping across the overlay"
for pair in "${pairs[@]}"; do
  set -- $pair
  # The first packets may go to handshakes and ARP: warm up, then measure.
  for _ in $(seq 1 20); do in_ns "$P-$1" ping -n -q -c 1 -W 1 "${ADDR[$2]}" >/dev/null 2>&1 && break; done
  out=$(in_ns "$P-$1" timeout 20 ping -n -q -c 5 -i 0.2 -W 1 "${ADDR[$2]}") ||
    { echo "$out"; echo "ping $1 -> $2 failed" >&2; exit 1; }
  RTT[$pair]=$(echo "$out" | awk -F/ '/min\/avg/ {print $5 " ms"}')
  echo "   $1 -> $2 (${ADDR[$2]}): ${RTT[$pair]}"
done

iperf() { # from to
  local port=5201
  in_ns "$P-$2" timeout $((IPERF_SECS + 15)) iperf3 -s -1 -B "${ADDR[$2]}" -p $port >/dev/null 2>&1 &
  local srv=$!
  PIDS+=("$srv")
  sleep 0.5
  local json
  json=$(in_ns "$P-$1" timeout $((IPERF_SECS + 10)) iperf3 -c "${ADDR[$2]}" -p $port -t "$IPERF_SECS" -J) ||
    { echo "iperf3 $1 -> $2 failed" >&2; wait "$srv" || true; return 1; }
  wait "$srv" || true
  echo "$json" | py 'print("%.0f Mbit/s" % (s["end"]["sum_received"]["bits_per_second"] / 1e6))'
}
echo "== iperf3 for ${IPERF_SECS} s: a -> b (direct) and a -> c (relayed)"
BW["a b"]=$(iperf a b)
echo "   a -> b: ${BW["a b"]}"
BW["a c"]=$(iperf a c)
echo "   a -> c: ${BW["a c"]}"

# --- summary --------------------------------------------------------------------------------
echo
echo "== summary (from status --json)"
printf '   %-8s %-7s %-12s %s\n' pair path RTT throughput
for pair in "${pairs[@]}"; do
  set -- $pair
  path=$(status "$1" | py "print(next((p.get('path') for p in s['peers'] if p.get('public_key') == '${PUB[$2]}'), 'unknown'))")
  printf '   %-8s %-7s %-12s %s\n' "$1<->$2" "$path" "${RTT[$pair]}" "${BW[$pair]:--}"
done
relay=$(in_ns "$P-sn" timeout 10 "$SN" status --config "$WORK/supernode.toml" --json |
  py 'print("%d packets, %d bytes" % (s["relay"]["packets"], s["relay"]["bytes"]))')
echo "   supernode relayed: $relay"
OK=1

if [ "$HOLD" -eq 1 ]; then
  echo
  echo "== holding; try e.g.: ip netns exec $P-a ping ${ADDR[c]}"
  echo "   ip netns exec $P-a $EDGE status --config $WORK/a.toml"
  echo "   Ctrl-C to clean up."
  while true; do sleep 3600 & wait $!; done
fi
