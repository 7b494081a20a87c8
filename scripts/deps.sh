#!/usr/bin/env bash
# Installs what the demo and the integration tests need, only if missing (idempotent).
#   iproute2 iputils-ping nftables tcpdump iperf3 socat netcat-openbsd procps python3 curl,
#   systemd (systemd-analyze), systemd-container (systemd-nspawn), man-db, binutils (strip),
#   g++ (the fuzz targets build libFuzzer, which is C++), and cargo (scripts/fuzz.sh installs
#   cargo-fuzz); for the Kubernetes tests bird2 keepalived etcd-server etcd-client
#   dnsmasq-base busybox.
set -euo pipefail

# package:command-that-proves-it-is-there
wanted=(
  iproute2:ip
  iputils-ping:ping
  nftables:nft
  tcpdump:tcpdump
  iperf3:iperf3
  socat:socat
  netcat-openbsd:nc
  procps:ps
  python3:python3
  curl:curl
  systemd:systemd-analyze
  systemd-container:systemd-nspawn
  man-db:man
  binutils:strip
  g++:g++
)

# Root runs apt-get directly; others go through sudo when there is one.
as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo "$@"
  else echo "deps.sh: need root (or sudo) to run: $*" >&2; return 1
  fi
}

updated=0
apt_install() {
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "deps.sh: apt-get not found; please install manually: $*" >&2
    return 1
  fi
  if [ "$updated" -eq 0 ]; then
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
    updated=1
  fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@"
}

missing=()
for pair in "${wanted[@]}"; do
  pkg=${pair%%:*} cmd=${pair##*:}
  # PATH may lack the sbin directories for non-root users.
  if ! PATH="$PATH:/usr/sbin:/sbin" command -v "$cmd" >/dev/null 2>&1; then
    missing+=("$pkg")
  fi
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "deps.sh: installing ${missing[*]}"
  apt_install "${missing[@]}"
else
  echo "deps.sh: system tools present"
fi

# The real software the Kubernetes tests run on the overlay (integration-tests/tests/k8s_*.rs):
# bird2 (BGP), keepalived (VRRP), etcd, dnsmasq (DHCP server, without the system service),
# busybox (its udhcpc is the DHCP client). Optional: a test whose program is missing prints
# SKIPPED and says which package to install, so a failure here only warns.
optional=(
  bird2:bird
  keepalived:keepalived
  etcd-server:etcd
  etcd-client:etcdctl
  dnsmasq-base:dnsmasq
  busybox:busybox
)
missing=()
for pair in "${optional[@]}"; do
  pkg=${pair%%:*} cmd=${pair##*:}
  if ! PATH="$PATH:/usr/sbin:/sbin" command -v "$cmd" >/dev/null 2>&1; then
    missing+=("$pkg")
  fi
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "deps.sh: installing for the Kubernetes tests: ${missing[*]}"
  # The tests start these programs themselves inside network namespaces; keep the packages'
  # own services (bird, keepalived, etcd) from starting on this machine while installing.
  made_policy=0
  if [ "$(id -u)" -eq 0 ] && [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d && made_policy=1
  fi
  apt_install "${missing[@]}" || echo "deps.sh: WARNING: could not install ${missing[*]}; the tests that need them will print SKIPPED" >&2
  if [ "$made_policy" -eq 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
else
  echo "deps.sh: Kubernetes test tools present"
fi

if ! command -v cargo >/dev/null 2>&1; then
  [ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "deps.sh: WARNING: cargo not found; trying the distribution's cargo (it may be older" >&2
  echo "deps.sh: than rust-version in Cargo.toml; rustup.rs is the usual way to get a current one)" >&2
  apt_install cargo
fi
echo "deps.sh: $(cargo --version)"
