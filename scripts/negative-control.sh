#!/usr/bin/env bash
# Negative control of the rio.ko hardening tests: builds rio.ko with every fix undone
# (tests/negative/break-hardening.py) against the debug kernel, packs it into
# build/initramfs-broken.cpio, and runs tests/tests/rio_security.rs on it. Every test
# but the golden-bytes one must fail; the script prints the verdicts. Needs `make
# initramfs-debug` first. Not part of `make test` (it is meant to fail).
set -uo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=scripts/env.sh
. "$here/scripts/env.sh"
KBUILD="$CACHE/kbuild-debug-current"
dir="$here/build/mod-broken"
mkdir -p "$dir"
find "$dir" \( -name '*.rs' -o -name '*.c' \) -delete
(cd "$here/rio_mod" && find . \( -name '*.rs' -o -name '*.c' ! -name '*.mod.c' -o -name Kbuild \) -print0 |
    xargs -0 cp --parents -t "$dir") || exit 1
python3 "$here/tests/negative/break-hardening.py" "$dir" || exit 1
make -s -C "$KSRC_ORIG" O="$KBUILD" M="$dir" LLVM=-$LLVM_VERSION -j"$(nproc)" modules || exit 1
bash "$here/qemu/mkinitramfs.sh" "$KBUILD" -broken "$dir" || exit 1
cd "$here/tests" && RIO_KERNEL_FLAVOUR=debug RIO_INITRAMFS="$here/build/initramfs-broken.cpio" \
    timeout 1800 cargo test --test rio_security -- --test-threads=2 --nocapture 2>&1 |
    grep -E -A1 "^test |test result|^thread '.*' .*panicked at" | grep -vE '^--$|^stack backtrace'
