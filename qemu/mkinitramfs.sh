#!/usr/bin/env bash
# make initramfs: busybox-static, rio.ko and the static guest programs, packed with the
# kernel's own gen_init_cpio (no root needed) into build/initramfs.cpio, uncompressed: under
# TCG the kernel took about a second of every boot to inflate a gzipped one (the add-on
# archives, used by few tests, and the crash kernel's small one stay gzipped).
# mkinitramfs.sh KBUILD_DIR [SUFFIX MODULE_DIR]: the debug flavour passes SUFFIX "-debug"
# (build/initramfs-debug.cpio) and the directory its rio.ko was built in.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
KBUILD=${1:?usage: mkinitramfs.sh KBUILD_DIR [SUFFIX MODULE_DIR]}
suffix=${2:-}
moddir=${3:-$root/rio_mod}
out="$root/build/initramfs$suffix.cpio"
rm -f "$root/build/initramfs$suffix.cpio.gz" # the gzipped one earlier versions made
guest="$root/userlib/target/x86_64-unknown-linux-gnu/release"
list="$root/build/initramfs$suffix.list"
mkdir -p "$root/build"

busybox=$(command -v busybox || true)
[ -n "$busybox" ] && file -L "$busybox" 2>/dev/null | grep -q 'statically linked' || busybox=/bin/busybox
[ -x "$busybox" ] || { echo "mkinitramfs: busybox-static is not installed: run 'make setup'" >&2; exit 1; }
# The static guest programs (built by `make guest`). dc-kv and dc-compute are Discount
# Checking demos: static builds work (the libc interposition replaces glibc's weak symbols).
GUEST_BINS="rio-agent rio rio-check rio-bench fs-bench vista-rio dc-kv dc-compute rio-fuzz riofs-fsck riofs-torture vistagram-demo"
for f in "$moddir/rio.ko" $(for b in $GUEST_BINS; do echo "$guest/$b"; done); do
    [ -f "$f" ] || { echo "mkinitramfs: missing $f: run 'make module guest'" >&2; exit 1; }
done

# lib_entries LIB...: cpio list entries for shared libraries: their directories (each
# level once), then the files (the real file behind each symlink, at the linked name).
lib_entries() {
    for lib in "$@"; do dirname "$lib"; done | sort -u | while read -r d; do
        p=""; for c in ${d//\// }; do p="$p/$c"; echo "dir $p 0755 0 0"; done
    done | awk '!seen[$0]++'
    for lib in "$@"; do echo "file $lib $(readlink -f "$lib") 0755 0 0"; done
}

{
    echo "dir /dev 0755 0 0"
    echo "nod /dev/console 0600 0 0 c 5 1"
    echo "nod /dev/null 0666 0 0 c 1 3"
    for d in /bin /sbin /usr /usr/bin /usr/sbin /proc /sys /tmp /mnt /run /root /etc /lib /lib/modules; do
        echo "dir $d 0755 0 0"
    done
    echo "file /bin/busybox $busybox 0755 0 0"
    echo "slink /bin/sh busybox 0777 0 0"
    echo "file /init $root/qemu/init 0755 0 0"
    echo "file /bin/rio-load $root/qemu/rio-load 0755 0 0"
    echo "file /bin/dc-fs $root/qemu/dc-fs 0755 0 0"
    echo "file /bin/pmem-dax $root/qemu/pmem-dax 0755 0 0"
    for b in $GUEST_BINS; do
        echo "file /bin/$b $guest/$b 0755 0 0"
    done
    echo "file /lib/modules/rio.ko $moddir/rio.ko 0644 0 0"
    echo "file /lib/modules/riofault.ko $moddir/riofault.ko 0644 0 0"
    # Host programs the file-system tests need, with their shared libraries.
    libs=""
    for prog in /sbin/mke2fs /sbin/e2fsck; do
        [ -x "$prog" ] || { echo "mkinitramfs: $prog missing: run 'make setup' (e2fsprogs)" >&2; exit 1; }
        echo "file /sbin/$(basename "$prog") $prog 0755 0 0"
        libs="$libs $(ldd "$prog" | awk '/=>/ {print $3} /ld-linux/ {print $1}')"
    done
    # Real programs as oracles on riofs (tests/tests/riofs_apps.rs, make bench-fio):
    # Debian's sqlite3, git and fio, when installed (make setup). Their libraries (fio's
    # alone are ~85 MB: ceph, gluster, ICU, ...) would make every guest boot slower and
    # take RAM, so they are not here but in an add-on archive that their users append
    # (the kernel unpacks concatenated archives).
    # The test kernel has no SysV IPC, where fio keeps its job table; /usr/bin/fio runs it
    # with a shim that gives it an anonymous shared mapping instead (shared with its jobs).
    fio_ovl="$root/build/initramfs-fio$suffix.cpio.gz"
    if [ ! -x /usr/bin/fio ] && [ ! -x /usr/bin/sqlite3 ] && [ ! -x /usr/bin/git ]; then
        rm -f "$fio_ovl"
    else
        fio_libs=$(for prog in /usr/bin/fio /usr/bin/sqlite3 /usr/bin/git; do
            if [ -x "$prog" ]; then ldd "$prog" | awk '/=>/ {print $3} /ld-linux/ {print $1}'; fi
        done | sort -u)
        cc -O2 -shared -fPIC -o "$root/build/fio-shm.so.$$" -x c - <<'SHIM'
#include <errno.h>
#include <stddef.h>
#include <sys/mman.h>
static struct { void *p; size_t n; } seg[64];
int shmget(int key, size_t n, int flags) {
    (void)key; (void)flags;
    for (int i = 0; i < 64; i++) if (!seg[i].p) {
        void *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) { errno = ENOMEM; return -1; }
        seg[i].p = p; seg[i].n = n; return i;
    }
    errno = ENOSPC; return -1;
}
void *shmat(int id, const void *at, int flags) {
    (void)at; (void)flags;
    if (id < 0 || id >= 64 || !seg[id].p) { errno = EINVAL; return (void *)-1; }
    return seg[id].p;
}
int shmdt(const void *at) { (void)at; return 0; }
int shmctl(int id, int cmd, void *buf) { (void)id; (void)cmd; (void)buf; return 0; }
SHIM
        mv "$root/build/fio-shm.so.$$" "$root/build/fio-shm.so"
        printf '#!/bin/sh\nLD_PRELOAD=/usr/lib/fio-guest/fio-shm.so exec /usr/lib/fio-guest/fio "$@"\n' > "$root/build/fio-wrapper.$$"
        mv "$root/build/fio-wrapper.$$" "$root/build/fio-wrapper"
        {
            printf 'dir /usr/lib 0755 0 0\ndir /usr/lib/fio-guest 0755 0 0\n'
            if [ -x /usr/bin/fio ]; then
                echo "file /usr/lib/fio-guest/fio /usr/bin/fio 0755 0 0"
                echo "file /usr/lib/fio-guest/fio-shm.so $root/build/fio-shm.so 0755 0 0"
                echo "file /usr/bin/fio $root/build/fio-wrapper 0755 0 0"
            fi
            if [ -x /usr/bin/sqlite3 ]; then echo "file /usr/bin/sqlite3 /usr/bin/sqlite3 0755 0 0"; fi
            if [ -x /usr/bin/git ]; then
                echo "file /usr/bin/git /usr/bin/git 0755 0 0"
                printf 'dir /usr/lib/git-core 0755 0 0\n'
                echo "slink /usr/lib/git-core/git /usr/bin/git 0777 0 0"
            fi
            lib_entries $fio_libs
        } > "$root/build/initramfs-fio$suffix.list"
        "$KBUILD/usr/gen_init_cpio" "$root/build/initramfs-fio$suffix.list" | gzip -1 > "$fio_ovl.tmp"
        mv "$fio_ovl.tmp" "$fio_ovl"
    fi
    # Discount Checking on real programs in the guest (tests/tests/discount_apps.rs):
    # `dc run` with the library it preloads and `dc-drive` (host builds, dynamically
    # linked: a preloaded library needs the dynamic loader), Debian's nvi and sc, their
    # libraries and the xterm terminfo, in an add-on archive like the one above. Also the
    # computations of several processes across guests (tests/tests/dist_guests.rs): heat
    # and chat (userlib/dc/apps), built here with userlib/dc/apps/build.sh, the same
    # command the host tests build them with, into /usr/lib/dc/apps (not /usr/bin:
    # busybox has a `chat` applet). DC_HOST_RELEASE names another cargo target's release
    # directory to take dc, its library and dc-drive from (default userlib/target/release).
    dc_ovl="$root/build/initramfs-dc$suffix.cpio.gz"
    hostrel="${DC_HOST_RELEASE:-$root/userlib/target/release}"
    dc_apps="$root/build/dc-apps"
    mkdir -p "$dc_apps"
    for app in heat chat; do
        sh "$root/userlib/dc/apps/build.sh" "$app" "$dc_apps/$app.$$"
        mv "$dc_apps/$app.$$" "$dc_apps/$app"
    done
    dc_progs="$hostrel/dc $hostrel/libdc_preload.so $hostrel/dc-drive /usr/bin/nvi /usr/bin/sc $dc_apps/heat $dc_apps/chat"
    dc_ok=1
    for f in $dc_progs /lib/terminfo/x/xterm; do [ -f "$f" ] || dc_ok=0; done
    if [ "$dc_ok" = 0 ]; then
        echo "mkinitramfs: no Discount Checking add-on (needs make setup's nvi and sc, and cargo build --release -p dc -p dc-drive)" >&2
        rm -f "$dc_ovl"
    else
        dc_libs=$(for prog in $dc_progs; do ldd "$prog" | awk '/=>/ {print $3} /ld-linux/ {print $1}'; done | sort -u)
        {
            printf 'dir /usr/lib 0755 0 0\ndir /usr/lib/dc 0755 0 0\ndir /usr/lib/dc/apps 0755 0 0\n'
            echo "file /usr/lib/dc/apps/heat $dc_apps/heat 0755 0 0"
            echo "file /usr/lib/dc/apps/chat $dc_apps/chat 0755 0 0"
            echo "file /usr/lib/dc/dc $hostrel/dc 0755 0 0"
            echo "file /usr/lib/dc/libdc_preload.so $hostrel/libdc_preload.so 0755 0 0"
            echo "slink /usr/bin/dc /usr/lib/dc/dc 0777 0 0"
            echo "file /usr/bin/dc-drive $hostrel/dc-drive 0755 0 0"
            echo "file /usr/bin/nvi /usr/bin/nvi 0755 0 0"
            echo "file /usr/bin/sc /usr/bin/sc 0755 0 0"
            printf 'dir /lib/terminfo 0755 0 0\ndir /lib/terminfo/x 0755 0 0\n'
            echo "file /lib/terminfo/x/xterm /lib/terminfo/x/xterm 0644 0 0"
            lib_entries $dc_libs
        } > "$root/build/initramfs-dc$suffix.list"
        "$KBUILD/usr/gen_init_cpio" "$root/build/initramfs-dc$suffix.list" | gzip -1 > "$dc_ovl.tmp"
        mv "$dc_ovl.tmp" "$dc_ovl"
    fi
    echo "slink /sbin/mkfs.ext4 mke2fs 0777 0 0"
    echo "slink /sbin/fsck.ext4 e2fsck 0777 0 0"
    echo "dir /lib64 0755 0 0"
    echo "dir /lib/x86_64-linux-gnu 0755 0 0"
    for lib in $(printf '%s\n' $libs | sort -u); do
        real=$(readlink -f "$lib")
        echo "file $lib $real 0755 0 0"
    done
    [ -f /etc/mke2fs.conf ] && echo "file /etc/mke2fs.conf /etc/mke2fs.conf 0644 0 0"
    # Extra guest programs later issues add: anything in build/guest-extra/.
    if [ -d "$root/build/guest-extra" ]; then
        for f in "$root"/build/guest-extra/*; do
            [ -f "$f" ] && echo "file /bin/$(basename "$f") $f 0755 0 0"
        done
    fi
    printf 'root:x:0:0:root:/root:/bin/sh\nrio:x:1000:1000:rio:/tmp:/bin/sh\n' > "$root/build/passwd"
    printf 'root:x:0:\nrio:x:1000:\n' > "$root/build/group"
    echo "file /etc/passwd $root/build/passwd 0644 0 0"
    echo "file /etc/group $root/build/group 0644 0 0"
} > "$list"

# The crash kernel's initramfs (safe sync at panic time): busybox, rio.ko, its init.
crash="$root/build/crash-initramfs$suffix.cpio.gz"
{
    echo "dir /dev 0755 0 0"
    echo "nod /dev/console 0600 0 0 c 5 1"
    for d in /bin /sbin /proc /sys /lib /lib/modules; do echo "dir $d 0755 0 0"; done
    echo "file /bin/busybox $busybox 0755 0 0"
    echo "slink /bin/sh busybox 0777 0 0"
    echo "file /init $root/qemu/crash-init 0755 0 0"
    echo "file /lib/modules/rio.ko $moddir/rio.ko 0644 0 0"
} > "$root/build/crash-initramfs$suffix.list"
"$KBUILD/usr/gen_init_cpio" "$root/build/crash-initramfs$suffix.list" | gzip -1 > "$crash"
{
    echo "dir /boot 0755 0 0"
    echo "file /boot/bzImage $KBUILD/arch/x86/boot/bzImage 0644 0 0"
    echo "file /boot/crash-initramfs.cpio.gz $crash 0644 0 0"
} >> "$list"

"$KBUILD/usr/gen_init_cpio" "$list" > "$out.tmp"
mv "$out.tmp" "$out"
echo "[initramfs] $out ($(du -h "$out" | cut -f1))"
