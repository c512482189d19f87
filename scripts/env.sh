# Sourced by the build scripts: where the cache is and what setup found.
CACHE=${RIO_CACHE:-/var/cache/rio-build}
if [ ! -f "$CACHE/env.mk" ]; then
    echo "error: $CACHE/env.mk is missing: run 'make setup'" >&2
    exit 1
fi
eval "$(sed -n 's/^\([A-Z_]*\) := \(.*\)$/\1="\2"/p' "$CACHE/env.mk")"
# shellcheck source=scripts/toolchain.sh
. "$(dirname "${BASH_SOURCE[0]}")/toolchain.sh"
export RUST_LIB_SRC LIBCLANG_PATH=/usr/lib/llvm-$LLVM_VERSION/lib
KBUILD="$CACHE/kbuild-current"
