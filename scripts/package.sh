#!/usr/bin/env bash
# Builds the Debian package `metalvpc` from this workspace: both daemons (release), their man
# pages (rendered from the clap definitions by the hidden `man` command), then `cargo deb`
# with the [package.metadata.deb] of edge/Cargo.toml. Installs cargo-deb if missing.
# Prints the path of the .deb on the last line:
#
#   scripts/package.sh          # -> target/debian/metalvpc_<version>-1_<arch>.deb
#   dpkg -i target/debian/metalvpc_*.deb
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"

if ! cargo deb --version >/dev/null 2>&1; then
  echo "package.sh: installing cargo-deb (cargo install cargo-deb --locked)" >&2
  cargo install cargo-deb --locked
fi

cargo build --release -p metalvpc-edge -p metalvpc-supernode
rm -rf target/man
target/release/metalvpc-edge man --dir target/man >/dev/null
target/release/metalvpc-supernode man --dir target/man >/dev/null

# --no-build: the binaries above are the ones packaged (cargo deb alone would build only
# the edge's package); --strip: the debug info of the release profile stays out of it.
out=$(cargo deb -p metalvpc-edge --no-build --strip 2>&1) || { echo "$out" >&2; exit 1; }
echo "$out" | grep -v '^/' >&2 || true
deb=$(echo "$out" | grep '\.deb$' | tail -n 1)
[ -f "$deb" ] || { echo "package.sh: cargo deb produced no .deb: $out" >&2; exit 1; }
echo "$deb"
