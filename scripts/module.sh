#!/usr/bin/env bash
# make module: build rio.ko out of tree against the cached kernel build.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=scripts/env.sh
. "$here/scripts/env.sh"
[ -f "$KBUILD/.rio-built" ] || { echo "[module] error: no built kernel at $KBUILD: run 'make kernel'" >&2; exit 1; }
make -s -C "$KSRC_ORIG" O="$KBUILD" M="$here" LLVM=-19 -j"$(nproc)" modules
[ -f "$here/rio_mod/rio.ko" ] || { echo "[module] error: no rio.ko produced" >&2; exit 1; }
echo "[module] $here/rio_mod/rio.ko"
