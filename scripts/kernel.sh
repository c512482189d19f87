#!/usr/bin/env bash
# make kernel: build the Rust-enabled test kernel out of tree, cached outside the checkout.
# kernel.sh [fast|debug]: `fast` (the default) is tinyconfig + qemu/kernel.config; `debug`
# adds qemu/kernel-debug.config (lockdep, KASAN, ...). Each flavour has its own cache
# directory and link ($CACHE/kbuild-current, $CACHE/kbuild-debug-current).
# The cache key covers the kernel version, the config fragments and the toolchain, so a
# second run rebuilds nothing and a changed config rebuilds. A failed build fails loudly and
# marks nothing built.
# Prints the path of the build directory on its last line.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=scripts/env.sh
. "$here/scripts/env.sh"

log() { printf '[kernel] %s\n' "$*" >&2; }
die() { printf '[kernel] error: %s\n' "$*" >&2; exit 1; }

[ -d "$KSRC_ORIG" ] || die "no kernel source at $KSRC_ORIG: run 'make setup'"
flavour=${1:-fast}
case "$flavour" in
fast) fragments=("$here/qemu/kernel.config"); prefix=kbuild; link=kbuild-current ;;
debug) fragments=("$here/qemu/kernel.config" "$here/qemu/kernel-debug.config"); prefix=kbuild-debug; link=kbuild-debug-current ;;
*) die "unknown kernel flavour '$flavour' (fast or debug)" ;;
esac
kver=$(make -s -C "$KSRC_ORIG" kernelversion 2>/dev/null)
toolchain=$( { rustc --version; clang-$LLVM_VERSION --version | head -n1; bindgen --version; } )
key=$( { echo "$kver"; cat "${fragments[@]}"; echo "$toolchain"; } | sha256sum | cut -c1-16)
B="$CACHE/$prefix-$kver-$key"
prev=$(readlink "$CACHE/$link" || true)
# A changed config fragment with the same kernel and toolchain: start from the previous
# build of this flavour, so that make rebuilds only what the changed options touch.
if [ ! -d "$B" ] && [ -n "$prev" ] && [ -f "$prev/.rio-built" ] && [ "$prev" != "$B" ] \
    && [ "$(cat "$prev/.rio-toolchain" 2>/dev/null)" = "$kver $toolchain" ]; then
    log "starting from the previous $flavour build ($prev): only what the config change touches is rebuilt"
    cp -a "$prev" "$B.tmp" && rm -f "$B.tmp/.rio-built" && mv "$B.tmp" "$B"
fi
ln -sfn "$B" "$CACHE/$link"

if [ -f "$B/.rio-built" ] && [ -f "$B/arch/x86/boot/bzImage" ]; then
    log "kernel $kver cached ($B)"
    echo "$B"
    exit 0
fi

log "building the $flavour Linux $kver with CONFIG_RUST=y in $B (fast: 6-10 minutes on 2 cores; debug: about twice that)"
mkdir -p "$B"
rm -f "$B/.rio-built"
MK=(make -C "$KSRC_ORIG" O="$B" LLVM=-$LLVM_VERSION -j"$(nproc)")
"${MK[@]}" -s tinyconfig >/dev/null
"$KSRC_ORIG/scripts/kconfig/merge_config.sh" -m -O "$B" "$B/.config" "${fragments[@]}" >/dev/null
"${MK[@]}" -s olddefconfig >/dev/null
if ! grep -q '^CONFIG_RUST=y' "$B/.config"; then
    "${MK[@]}" rustavailable || true
    die "CONFIG_RUST did not stick in $B/.config (see 'make rustavailable' above)"
fi
# Report fragment options that Kconfig dropped, so a silent config change is visible.
while IFS= read -r line; do
    case "$line" in CONFIG_*=n|'#'*|'') continue ;; esac
    grep -qxF "$line" "$B/.config" || log "note: '$line' not in the final config"
done < <(cat "${fragments[@]}")
start=$(date +%s)
set +e
"${MK[@]}" all 2>&1 | grep -vE '^\s+(CC|LD|AR|AS|RUSTC|BINDGEN|EXPORTS|CALL|GEN|HOSTCC|HOSTLD|UPD|SYNC|WRAP|OBJCOPY|VDSO|RELOCS|MKPIGGY|ZOFFSET|VOFFSET|DESCEND|POLICY|CHKSHA1|HOSTRUSTC|RUSTDOC|CPUS|SYSHDR|SYSTBL|KSYMS|MODPOST|MODINFO|SORTTAB|TEXTREL)\b' >&2
rc=${PIPESTATUS[0]}
set -e
[ "$rc" -eq 0 ] || die "the $flavour kernel build failed (make exited $rc); see the errors above"
[ -f "$B/arch/x86/boot/bzImage" ] || die "the build did not produce a bzImage"
[ -f "$B/rust/libkernel.rmeta" ] || [ -n "$(ls "$B"/rust/libkernel* 2>/dev/null)" ] || die "no Rust kernel crate metadata in $B/rust"
log "built in $(( $(date +%s) - start )) s"
echo "$kver $toolchain" > "$B/.rio-toolchain"
touch "$B/.rio-built"
# Keep the cache to one kernel: remove builds of other configurations.
for old in "$CACHE/$prefix"-[0-9]*; do
    [ -d "$old" ] && [ ! -L "$old" ] && [ "$old" != "$B" ] && { log "removing stale build $old"; rm -rf "$old"; }
done
echo "$B"
