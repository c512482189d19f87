#!/usr/bin/env bash
# make kernel: build the Rust-enabled test kernel out of tree, cached outside the checkout.
# The cache key covers the kernel version, the config fragment and the toolchain, so a
# second run rebuilds nothing and a changed config rebuilds.
# Prints the path of the build directory on its last line.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=scripts/env.sh
. "$here/scripts/env.sh"

log() { printf '[kernel] %s\n' "$*" >&2; }
die() { printf '[kernel] error: %s\n' "$*" >&2; exit 1; }

[ -d "$KSRC_ORIG" ] || die "no kernel source at $KSRC_ORIG: run 'make setup'"
kver=$(make -s -C "$KSRC_ORIG" kernelversion 2>/dev/null)
key=$( { echo "$kver"; cat "$here/qemu/kernel.config"; rustc --version; clang-19 --version | head -n1;
         bindgen --version; } | sha256sum | cut -c1-16)
B="$CACHE/kbuild-$kver-$key"
ln -sfn "$B" "$CACHE/kbuild-current"

if [ -f "$B/.rio-built" ] && [ -f "$B/arch/x86/boot/bzImage" ]; then
    log "kernel $kver cached ($B)"
    echo "$B"
    exit 0
fi

log "building Linux $kver with CONFIG_RUST=y in $B (6-10 minutes on 2 cores)"
mkdir -p "$B"
MK=(make -C "$KSRC_ORIG" O="$B" LLVM=-19 -j"$(nproc)")
"${MK[@]}" -s tinyconfig >/dev/null
"$KSRC_ORIG/scripts/kconfig/merge_config.sh" -m -O "$B" "$B/.config" "$here/qemu/kernel.config" >/dev/null
"${MK[@]}" -s olddefconfig >/dev/null
if ! grep -q '^CONFIG_RUST=y' "$B/.config"; then
    "${MK[@]}" rustavailable || true
    die "CONFIG_RUST did not stick in $B/.config (see 'make rustavailable' above)"
fi
# Report fragment options that Kconfig dropped, so a silent config change is visible.
while IFS= read -r line; do
    case "$line" in CONFIG_*=n|'#'*|'') continue ;; esac
    grep -qxF "$line" "$B/.config" || log "note: '$line' not in the final config"
done < "$here/qemu/kernel.config"
start=$(date +%s)
"${MK[@]}" all 2>&1 | grep -vE '^\s+(CC|LD|AR|AS|RUSTC|BINDGEN|EXPORTS|CALL|GEN|HOSTCC|HOSTLD|UPD|SYNC|WRAP|OBJCOPY|VDSO|RELOCS|MKPIGGY|ZOFFSET|VOFFSET|DESCEND|POLICY|CHKSHA1|HOSTRUSTC|RUSTDOC|CPUS|SYSHDR|SYSTBL|KSYMS|MODPOST|MODINFO|SORTTAB|TEXTREL)\b' >&2 \
    || true
[ -f "$B/arch/x86/boot/bzImage" ] || die "the build did not produce a bzImage"
[ -f "$B/rust/libkernel.rmeta" ] || [ -n "$(ls "$B"/rust/libkernel* 2>/dev/null)" ] || die "no Rust kernel crate metadata in $B/rust"
log "built in $(( $(date +%s) - start )) s"
touch "$B/.rio-built"
# Keep the cache to one kernel: remove builds of other configurations.
for old in "$CACHE"/kbuild-*; do
    [ -d "$old" ] && [ ! -L "$old" ] && [ "$old" != "$B" ] && { log "removing stale build $old"; rm -rf "$old"; }
done
echo "$B"
