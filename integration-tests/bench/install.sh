#!/usr/bin/env bash
# Installs what integration-tests/bench/run.sh compares against, only what is missing:
# iperf3, python3, nftables (scripts/deps.sh), and the peers: Debian's wireguard-go,
# wireguard-tools, nebula, tinc and n2n, and boringtun-cli from crates.io.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
"$HERE/../../scripts/deps.sh"
export PATH="$PATH:/usr/sbin:/sbin:$HOME/.cargo/bin"
missing=()
for pair in wireguard-go:wireguard-go wireguard-tools:wg nebula:nebula tinc:tincd n2n:edge; do
  command -v "${pair##*:}" >/dev/null 2>&1 || missing+=("${pair%%:*}")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install.sh: installing ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get update -q
  # A package this Debian release lacks is skipped; run.sh reports that peer as not run.
  for p in "${missing[@]}"; do
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$p" ||
      echo "install.sh: WARNING: could not install $p; its row will be missing" >&2
  done
fi
if ! command -v boringtun-cli >/dev/null 2>&1; then
  echo "install.sh: cargo install boringtun-cli --locked (a few minutes of compiling)"
  cargo install boringtun-cli --locked ||
    echo "install.sh: WARNING: boringtun-cli did not build; its row will be missing" >&2
fi
