#!/usr/bin/env bash
# Installs what the demo and the integration tests need, only if missing (idempotent).
#   iproute2 iputils-ping nftables tcpdump iperf3 socat netcat-openbsd procps python3 curl,
#   systemd (systemd-analyze), systemd-container (systemd-nspawn), man-db, binutils (strip),
#   g++ (the fuzz targets build libFuzzer, which is C++), and cargo. scripts/fuzz.sh installs
#   cargo-fuzz.
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

if ! command -v cargo >/dev/null 2>&1; then
  [ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "deps.sh: WARNING: cargo not found; trying the distribution's cargo (it may be older" >&2
  echo "deps.sh: than rust-version in Cargo.toml; rustup.rs is the usual way to get a current one)" >&2
  apt_install cargo
fi
echo "deps.sh: $(cargo --version)"
