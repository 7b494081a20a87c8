# Sourced by run.sh: the namespace rig and the measurements.
#
# Rig: a "switch" namespace holding a bridge, and three hosts attached to it by veth pairs:
#   coordinator 198.18.0.1, host a 198.18.0.11, host b 198.18.0.12 (underlay MTU 1500).
# Every name starts with $P (unique per run); everything is removed by rig_down, which run.sh
# calls from an EXIT trap, so an interrupted run leaves nothing behind.

NS_SW="${P}sw" NS_C="${P}c" NS_A="${P}a" NS_B="${P}b"
U_C=198.18.0.1 U_A=198.18.0.11 U_B=198.18.0.12
PIDS=()   # every daemon this run started (killed by pid, never by name)

inns() { local ns=$1; shift; ip netns exec "$ns" "$@"; }

rig_up() {
  ip netns add "$NS_SW"
  inns "$NS_SW" ip link add br0 type bridge
  inns "$NS_SW" ip link set br0 up
  inns "$NS_SW" ip link set lo up
  local ns ip i=0
  for pair in "$NS_C:$U_C" "$NS_A:$U_A" "$NS_B:$U_B"; do
    ns=${pair%%:*} ip=${pair##*:}
    ip netns add "$ns"
    inns "$NS_SW" ip link add "p$i" type veth peer name u0 netns "$ns"
    inns "$NS_SW" ip link set "p$i" master br0 up
    inns "$ns" ip link set lo up
    inns "$ns" ip addr add "$ip/15" dev u0
    inns "$ns" ip link set u0 up
    i=$((i + 1))
  done
  # Bridges in a fresh namespace may pass the frames through netfilter; keep it plain.
  inns "$NS_SW" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 || true
  inns "$NS_A" ping -c1 -W2 "$U_B" >/dev/null
}

# Kills one daemon by pid (TERM, then KILL after 3 s) and reaps it.
kill_pid() {
  local pid=$1 i
  kill -TERM "$pid" 2>/dev/null || return 0
  for i in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

stop_all() {
  local pid
  for pid in "${PIDS[@]}"; do kill_pid "$pid"; done
  PIDS=()
  for ns in "$NS_A" "$NS_B" "$NS_C"; do inns "$ns" nft delete table inet mvbench 2>/dev/null || true; done
}

rig_down() {
  stop_all
  for ns in "$NS_A" "$NS_B" "$NS_C" "$NS_SW"; do ip netns del "$ns" 2>/dev/null || true; done
}

# spawn NAME NS CMD...: starts a daemon in NS with its output in $WORK/NAME.log; sets SPAWNED.
spawn() {
  local name=$1 ns=$2; shift 2
  ip netns exec "$ns" "$@" >"$WORK/$name.log" 2>&1 &
  SPAWNED=$!
  PIDS+=("$SPAWNED")
}

# Drops UDP between hosts a and b (both directions), so metalvpc must relay.
block_direct() {
  local me other
  for pair in "$NS_A:$U_B" "$NS_B:$U_A"; do
    me=${pair%%:*} other=${pair##*:}
    inns "$me" nft -f - <<NFT
table inet mvbench {
  chain out { type filter hook output priority 0; ip daddr $other meta l4proto udp drop; }
  chain in { type filter hook input priority 0; ip saddr $other meta l4proto udp drop; }
}
NFT
  done
}

# wait_ping NS IP SECONDS
wait_ping() {
  local ns=$1 ip=$2 end=$((SECONDS + $3))
  while [ $SECONDS -lt $end ]; do
    inns "$ns" ping -c1 -W1 "$ip" >/dev/null 2>&1 && return 0
    sleep 0.3
  done
  echo "bench: no ping from $ns to $ip within $3 s" >&2
  return 1
}

cpu_ticks() { # sum of utime+stime (clock ticks) of the given pids
  local t=0 pid f
  for pid in "$@"; do
    f=$(cut -d')' -f2 "/proc/$pid/stat" 2>/dev/null) || continue
    set -- $f
    t=$((t + ${12} + ${13}))
  done
  echo "$t"
}
hwm_mb() { awk '/VmHWM/ {printf "%.1f", $2/1024}' "/proc/$1/status" 2>/dev/null; }
rss_mb() { awk '/VmRSS/ {printf "%.1f", $2/1024}' "/proc/$1/status" 2>/dev/null; }

record() { printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$RESULTS"; }

# measure SYSTEM A_IP B_IP PIDS...: every figure for one system, a -> b through its overlay.
# DAEMON_PIDS: the daemons whose CPU is counted (both hosts' daemons; plus the supernode
# when relayed). Set TCP_ONLY=1 to skip UDP and ping.
measure() {
  local sys=$1 dst=$2; shift 2
  local pids=("$@") i tck
  tck=$(getconf CLK_TCK)
  echo "bench: measuring $sys"
  spawn "$sys-iperf3" "$NS_B" iperf3 -s -B "$dst"
  local srv=$SPAWNED
  sleep 0.5
  for p in 1 4; do
    local vals=() bytes=0 c0 c1
    c0=$(cpu_ticks "${pids[@]}")
    for i in $(seq "$RUNS"); do
      inns "$NS_A" timeout $((SECS + 20)) iperf3 -c "$dst" -t "$SECS" -P "$p" -J >"$WORK/$sys-tcp$p-$i.json" || true
      read -r bps b < <(python3 "$HERE/report.py" iperf-tcp "$WORK/$sys-tcp$p-$i.json")
      vals+=("$bps"); bytes=$((bytes + b))
    done
    c1=$(cpu_ticks "${pids[@]}")
    record "$sys" "tcp$p" "$(python3 "$HERE/report.py" median "${vals[@]}")"
    record "$sys" "cpu_tcp$p" "$(python3 -c "print(f'{($c1-$c0)/$tck:.2f} {$bytes}')")"
  done
  if [ "${TCP_ONLY:-0}" != 1 ]; then
    inns "$NS_A" timeout $((SECS + 20)) iperf3 -c "$dst" -u -l 64 -b 0 -t "$SECS" -J >"$WORK/$sys-udp.json" || true
    record "$sys" "udp64_pps" "$(python3 "$HERE/report.py" iperf-udp "$WORK/$sys-udp.json")"
    inns "$NS_A" ping -c 100 -i 0.01 -W 1 "$dst" >"$WORK/$sys-ping.txt" 2>&1 || true
    record "$sys" "ping" "$(python3 "$HERE/report.py" ping "$WORK/$sys-ping.txt")"
  fi
  local rss=() pid
  for pid in "${pids[@]}"; do rss+=("$(hwm_mb "$pid")"); done
  record "$sys" "hwm_mb" "${rss[*]}"
  kill_pid "$srv"
}
