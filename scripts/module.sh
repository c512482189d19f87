#!/usr/bin/env bash
# make module: build rio.ko out of tree against the cached kernel build.
# module.sh [fast|debug]: `fast` builds in rio_mod/ against $CACHE/kbuild-current; `debug`
# builds a copy of the sources in build/mod-debug/ against $CACHE/kbuild-debug-current (a
# module must be built against the very kernel it loads into).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=scripts/env.sh
. "$here/scripts/env.sh"
flavour=${1:-fast}
case "$flavour" in
fast) dir="$here/rio_mod" ;;
debug)
    KBUILD="$CACHE/kbuild-debug-current"
    dir="$here/build/mod-debug"
    mkdir -p "$dir"
    # Sources only, every subdirectory (sys/, store/, riofs/, ...); stale copies of removed
    # files go.
    find "$dir" \( -name '*.rs' -o -name '*.c' \) -delete
    (cd "$here/rio_mod" && find . \( -name '*.rs' -o -name '*.c' ! -name '*.mod.c' -o -name Kbuild \) -print0 |
        xargs -0 cp --parents -t "$dir")
    ;;
*) echo "[module] error: unknown flavour '$flavour' (fast or debug)" >&2; exit 1 ;;
esac
[ -f "$KBUILD/.rio-built" ] || { echo "[module] error: no built $flavour kernel at $KBUILD: run 'make kernel'" >&2; exit 1; }
make -s -C "$KSRC_ORIG" O="$KBUILD" M="$dir" LLVM=-$LLVM_VERSION -j"$(nproc)" modules
[ -f "$dir/rio.ko" ] || { echo "[module] error: no rio.ko produced in $dir" >&2; exit 1; }
echo "[module] $dir/rio.ko"
