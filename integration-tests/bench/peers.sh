# Sourced by run.sh: one function per system. Each starts its daemons in the rig, waits until
# a pings b through the overlay, and sets DAEMONS (pids whose CPU and RSS are measured) and
# DST (b's overlay address). Overlay networks are 10.99.N.0/24, only inside the rig's hosts.
# Each system uses an overlay MTU of 1400 where it can be set.

MTU=1400

sys_raw() {
  DAEMONS=() DST=$U_B
}

# metalvpc: supernode on the coordinator, an edge on a and b. $1: cipher, $2: "relay" to
# block the direct path so that everything goes through the supernode, or "plain" for a
# direct path without the offloads and batching (METALVPC_OFFLOAD=0), for comparison.
sys_metalvpc() {
  local cipher=$1 mode=${2:-direct} d="$WORK/metalvpc" net=10.99.1 mtu=$MTU
  # Relayed packets carry 36 more bytes; 1390 keeps them within the 1500-byte underlay.
  [ "$mode" = relay ] && mtu=1390
  local cipher_line=""
  [ "$cipher" != chacha20-poly1305 ] && cipher_line="cipher = \"$cipher\""
  rm -rf "$d"; mkdir -p "$d"; chmod 700 "$d"
  (umask 077
   "$BIN/metalvpc-supernode" genkey >"$d/sn.key"
   "$BIN/metalvpc-edge" genkey >"$d/a.key"
   "$BIN/metalvpc-edge" genkey >"$d/b.key")
  local snpub apub bpub
  snpub=$("$BIN/metalvpc-supernode" pubkey <"$d/sn.key")
  apub=$("$BIN/metalvpc-edge" pubkey <"$d/a.key")
  bpub=$("$BIN/metalvpc-edge" pubkey <"$d/b.key")
  cat >"$d/sn.toml" <<T
listen = "0.0.0.0:7654"
private_key_file = "sn.key"
management = "$d/sn.sock"
[[community]]
name = "bench"
network = "$net.0/24"
$cipher_line
[[community.node]]
name = "a"
public_key = "$apub"
address = "$net.11"
[[community.node]]
name = "b"
public_key = "$bpub"
address = "$net.12"
T
  for h in a b; do
    local ip=11; [ $h = b ] && ip=12
    cat >"$d/$h.toml" <<T
community = "bench"
private_key_file = "$h.key"
management = "$d/$h.sock"
$cipher_line
[[supernode]]
address = "$U_C:7654"
public_key = "$snpub"
[interface]
name = "mv$h"
address = "$net.$ip/24"
mtu = $mtu
T
  done
  [ "$mode" = relay ] && block_direct
  spawn mv-sn "$NS_C" "$BIN/metalvpc-supernode" run --config "$d/sn.toml"
  local sn=$SPAWNED
  local off=1
  [ "$mode" = plain ] && { off=0; mode=direct; }
  spawn mv-a "$NS_A" env METALVPC_OFFLOAD=$off "$BIN/metalvpc-edge" run --config "$d/a.toml"
  local a=$SPAWNED
  spawn mv-b "$NS_B" env METALVPC_OFFLOAD=$off "$BIN/metalvpc-edge" run --config "$d/b.toml"
  local b=$SPAWNED
  DAEMONS=("$a" "$b") DST=$net.12
  [ "$mode" = relay ] && DAEMONS+=("$sn")
  wait_ping "$NS_A" "$DST" 30
  if [ "$mode" = direct ]; then
    local end=$((SECONDS + 20))
    until inns "$NS_A" "$BIN/metalvpc-edge" status --config "$d/a.toml" --json | grep -q '"path":"direct"'; do
      [ $SECONDS -gt $end ] && { echo "bench: metalvpc never went direct" >&2; return 1; }
      sleep 0.3
    done
  fi
  MV_A_PID=$a
}

# wireguard-go and boringtun: the same kernel-less WireGuard configured with `wg`.
wg_common() {
  local impl=$1 d="$WORK/$1" net=$2
  rm -rf "$d"; mkdir -p "$d"
  local h pid
  for h in a b; do (umask 077; wg genkey >"$d/$h.key"); wg pubkey <"$d/$h.key" >"$d/$h.pub"; done
  DAEMONS=()
  for h in a b; do
    local ns=$NS_A dev="${P}w$h" me=11 peer=b other=$U_B
    [ $h = b ] && { ns=$NS_B me=12 peer=a other=$U_A; }
    if [ "$impl" = wireguard-go ]; then
      spawn "wg-$h" "$ns" env WG_PROCESS_FOREGROUND=1 wireguard-go -f "$dev"
    else
      # --threads: boringtun's documented knob for using more than one core.
      spawn "bt-$h" "$ns" env WG_SUDO=1 "$BORINGTUN" -f --disable-drop-privileges --threads 2 "$dev"
    fi
    pid=$SPAWNED; DAEMONS+=("$pid")
    local end=$((SECONDS + 10))
    until inns "$ns" ip link show "$dev" >/dev/null 2>&1; do
      [ $SECONDS -gt $end ] && { echo "bench: $impl made no $dev" >&2; return 1; }
      sleep 0.1
    done
    sleep 0.3
    inns "$ns" wg set "$dev" private-key "$d/$h.key" listen-port 51820 \
      peer "$(cat "$d/$peer.pub")" endpoint "$other:51820" allowed-ips "$net.0/24"
    inns "$ns" ip addr add "$net.$me/24" dev "$dev"
    inns "$ns" ip link set "$dev" mtu $MTU up
  done
  DST=$net.12
  wait_ping "$NS_A" "$DST" 20
}
sys_wireguard_go() { wg_common wireguard-go 10.99.2; }
sys_boringtun() { wg_common boringtun 10.99.3; }

# Nebula: a lighthouse on the coordinator; AES-GCM, routines = 2 and multi-queue TUN (its
# documented performance settings on Linux).
sys_nebula() {
  local d="$WORK/nebula" net=10.99.4
  rm -rf "$d"; mkdir -p "$d"
  (cd "$d" && nebula-cert ca -name bench -out-crt ca.crt -out-key ca.key >/dev/null
   for n in c:1 a:11 b:12; do
     nebula-cert sign -name "${n%%:*}" -ip "$net.${n##*:}/24" -ca-crt ca.crt -ca-key ca.key \
       -out-crt "${n%%:*}.crt" -out-key "${n%%:*}.key" >/dev/null
   done)
  DAEMONS=()
  for n in c a b; do
    local ns=$NS_C lh=true hosts="[]"
    [ $n = a ] && ns=$NS_A; [ $n = b ] && ns=$NS_B
    [ $n != c ] && { lh=false hosts="[\"$net.1\"]"; }
    cat >"$d/$n.yml" <<Y
pki: { ca: $d/ca.crt, cert: $d/$n.crt, key: $d/$n.key }
static_host_map: { "$net.1": ["$U_C:4242"] }
lighthouse: { am_lighthouse: $lh, interval: 60, hosts: $hosts }
listen: { host: 0.0.0.0, port: 4242, read_buffer: 10485760, write_buffer: 10485760 }
punchy: { punch: true }
cipher: aes
routines: 2
tun: { dev: ${P}n$n, mtu: $MTU, tx_queue: 5000, multiqueue: true }
logging: { level: warning }
firewall:
  outbound: [ { port: any, proto: any, host: any } ]
  inbound: [ { port: any, proto: any, host: any } ]
Y
    spawn "nebula-$n" "$ns" nebula -config "$d/$n.yml"
    [ $n != c ] && DAEMONS+=("$SPAWNED")
  done
  DST=$net.12
  wait_ping "$NS_A" "$DST" 30
}

# tinc 1.0 in switch mode (L2, like metalvpc); a connects to b.
sys_tinc() {
  local d="$WORK/tinc" net=10.99.5
  rm -rf "$d"
  for h in a b; do
    local me=11; [ $h = b ] && me=12
    mkdir -p "$d/$h/hosts"
    cat >"$d/$h/tinc.conf" <<C
Name = $h
Mode = switch
DeviceType = tap
Interface = ${P}t$h
AddressFamily = ipv4
$( [ $h = a ] && echo "ConnectTo = b" )
C
    printf '#!/bin/sh\nip addr add %s/24 dev $INTERFACE\nip link set $INTERFACE mtu %s up\n' \
      "$net.$me" "$MTU" >"$d/$h/tinc-up"
    chmod +x "$d/$h/tinc-up"
    local addr=$U_A; [ $h = b ] && addr=$U_B
    printf 'Address = %s\nCipher = aes-256-cbc\nDigest = sha256\nCompression = 0\n' "$addr" >"$d/$h/hosts/$h"
    tincd -c "$d/$h" -K2048 </dev/null >/dev/null 2>&1
  done
  cp "$d/a/hosts/a" "$d/b/hosts/a"; cp "$d/b/hosts/b" "$d/a/hosts/b"
  DAEMONS=()
  for h in b a; do
    local ns=$NS_A; [ $h = b ] && ns=$NS_B
    spawn "tinc-$h" "$ns" tincd -c "$d/$h" -D --pidfile="$d/$h.pid" --logfile="$d/$h.log"
    DAEMONS+=("$SPAWNED")
  done
  DST=$net.12
  wait_ping "$NS_A" "$DST" 30
}

# n2n as packaged by Debian (v1: twofish, a supernode for discovery).
sys_n2n() {
  local net=10.99.6
  spawn n2n-sn "$NS_C" supernode -l 7654
  DAEMONS=()
  for h in a b; do
    local ns=$NS_A me=11; [ $h = b ] && { ns=$NS_B me=12; }
    spawn "n2n-$h" "$ns" edge -d "${P}e$h" -a "$net.$me" -c bench -k benchkey \
      -l "$U_C:7654" -M $MTU -m "02:00:00:00:00:$me"
    DAEMONS+=("$SPAWNED")
  done
  DST=$net.12
  wait_ping "$NS_A" "$DST" 30
}

# metalvpc's memory: an edge's RSS idle (registered, no traffic), and after it learned 1,000
# peers (fake members registered by fake_members from the coordinator host). Records
# rss_idle, rss_1000_peers (VmRSS) and hwm_1000_peers (VmHWM) of edge a, in MB.
mv_memory() {
  local d="$WORK/mvmem" n=1000
  rm -rf "$d"; mkdir -p "$d"; chmod 700 "$d"
  (umask 077
   "$BIN/metalvpc-supernode" genkey >"$d/sn.key"
   "$BIN/metalvpc-edge" genkey >"$d/a.key")
  local snpub apub
  snpub=$("$BIN/metalvpc-supernode" pubkey <"$d/sn.key")
  apub=$("$BIN/metalvpc-edge" pubkey <"$d/a.key")
  "$FAKE" gen $n 10.98 "$d"
  cat >"$d/sn.toml" <<T
listen = "0.0.0.0:7654"
private_key_file = "sn.key"
management = "$d/sn.sock"
register_interval = 60
[[community]]
name = "mem"
network = "10.98.0.0/16"
[[community.node]]
name = "a"
public_key = "$apub"
address = "10.98.0.11"
$(cat "$d/nodes.toml")
T
  cat >"$d/a.toml" <<T
community = "mem"
private_key_file = "a.key"
management = "$d/a.sock"
[[supernode]]
address = "$U_C:7654"
public_key = "$snpub"
[interface]
name = "mvm"
address = "10.98.0.11/16"
T
  spawn mvmem-sn "$NS_C" "$BIN/metalvpc-supernode" run --config "$d/sn.toml"
  local sn=$SPAWNED
  spawn mvmem-a "$NS_A" "$BIN/metalvpc-edge" run --config "$d/a.toml"
  local a=$SPAWNED end=$((SECONDS + 20))
  until inns "$NS_A" "$BIN/metalvpc-edge" status --config "$d/a.toml" --json 2>/dev/null | grep -q '"registered":true'; do
    [ $SECONDS -gt $end ] && { echo "bench: memory edge never registered" >&2; return 1; }
    sleep 0.3
  done
  sleep 2
  record metalvpc rss_idle "$(rss_mb "$a")"
  spawn mvmem-fake "$NS_C" "$FAKE" run "$d" "$U_C:7654" "$snpub" mem 10.98 "$U_C" $((${MEM_SECS:-120} + 60))
  local fake=$SPAWNED c0 f0
  c0=$(cpu_ticks "$sn"); f0=$(cpu_ticks "$fake")
  end=$((SECONDS + ${MEM_SECS:-120}))
  local peers=0 t0=$SECONDS
  while [ "$peers" -lt $n ] && [ $SECONDS -lt $end ]; do
    sleep 1
    peers=$(inns "$NS_A" "$BIN/metalvpc-edge" status --config "$d/a.toml" --json 2>/dev/null |
      python3 -c 'import json,sys; print(len(json.load(sys.stdin)["peers"]))' 2>/dev/null || echo 0)
  done
  local sn_ticks=$(( $(cpu_ticks "$sn") - c0 ))
  echo "bench: memory edge knows $peers peers after $((SECONDS - t0)) s; CPU ticks: supernode $sn_ticks, fake members $(( $(cpu_ticks "$fake") - f0 ))"
  record metalvpc peers_known "$peers"
  [ "$peers" -ge $n ] && record metalvpc peers_secs "$((SECONDS - t0))"
  record metalvpc sn_cpu_secs "$(python3 -c "print(round($sn_ticks / $(getconf CLK_TCK), 1))")"
  record metalvpc rss_1000_peers "$(rss_mb "$a")"
  record metalvpc hwm_1000_peers "$(hwm_mb "$a")"
  [ "$peers" -ge $n ]
}
