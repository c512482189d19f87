#!/usr/bin/env bash
# make setup: install everything the build and the tests need, from Debian's packages and
# crates.io only. Idempotent; fast when already done. Never touches the machine's own apt
# sources: the kernel source and rust-src come from trixie through a private apt config.
set -euo pipefail

CACHE=${RIO_CACHE:-/var/cache/rio-build}
KSERIES=${RIO_KERNEL_SERIES:-7.3}
BINDGEN_VERSION=0.72.1
mkdir -p "$CACHE"

log() { printf '[setup] %s\n' "$*"; }
die() { printf '[setup] error: %s\n' "$*" >&2; exit 1; }

SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo

# ---- 1. host packages from the machine's own (bookworm) archive --------------------------
# LLVM: the version toolchain.sh picks (the highest complete one installed), or, with none
# installed, its default, installed here from Debian's packages.
# shellcheck source=scripts/toolchain.sh
. "$(dirname "$0")/toolchain.sh"
if [ "$LLVM_COMPLETE" = 1 ]; then
    log "LLVM $LLVM_VERSION found (clang-$LLVM_VERSION, ld.lld-$LLVM_VERSION, ...; RIO_LLVM_VERSION overrides)"
    LLVM_PKGS=()
else
    LLVM_PKGS=(clang-$LLVM_VERSION lld-$LLVM_VERSION llvm-$LLVM_VERSION libclang-$LLVM_VERSION-dev)
fi
PKGS=("${LLVM_PKGS[@]}" flex bison bc libelf-dev libssl-dev cpio # bc also for userlib/dc/tests/bc.rs (an unmodified program under dc run)
      nvi # userlib/dc/tests/nvi.rs: the thesis's own benchmark, unmodified, under dc run on a pty
      ed # userlib/dc/tests/ed.rs: GNU ed editing its own data file, unmodified, under dc run
      sc # userlib/dc/tests/sc.rs: the Spreadsheet Calculator (curses), unmodified, under dc run on a pty
      qemu-system-x86 busybox-static e2fsprogs xz-utils python3 libc6-dev
      build-essential make file
      sqlite3 git fio) # Debian's programs as oracles on riofs (tests/tests/riofs_apps.rs, make bench-fio)
missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    log "installing host packages: ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
    log "host packages present"
fi
if ! rio_llvm_complete "$LLVM_VERSION"; then
    gone=()
    for t in "${RIO_LLVM_TOOLS[@]}"; do command -v "$t-$LLVM_VERSION" >/dev/null 2>&1 || gone+=("$t-$LLVM_VERSION"); done
    [ -e "/usr/lib/llvm-$LLVM_VERSION/lib/libclang.so" ] || gone+=("/usr/lib/llvm-$LLVM_VERSION/lib/libclang.so")
    die "LLVM $LLVM_VERSION is incomplete after installing its packages; missing: ${gone[*]}"
fi

# make lint runs cargo fmt and cargo clippy.
for tool in fmt clippy; do
    comp=$tool; [ "$tool" = fmt ] && comp=rustfmt
    cargo "$tool" --version >/dev/null 2>&1 && continue
    command -v rustup >/dev/null 2>&1 \
        || die "'cargo $tool' does not work and there is no rustup: install $comp for this cargo ($(cargo --version 2>&1))"
    log "installing the $comp component (make lint needs 'cargo $tool')"
    rustup component add "$comp" || die "rustup component add $comp failed"
    cargo "$tool" --version >/dev/null 2>&1 || die "'cargo $tool' still does not work after rustup component add $comp"
done

# ---- 2. a private apt configuration for trixie (kernel source, rust-src) ------------------
APTDIR="$CACHE/apt"
mkdir -p "$APTDIR/lists/partial" "$APTDIR/archives/partial" "$APTDIR/debs"
cat > "$APTDIR/sources.list" <<SRC
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie-backports main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian-security trixie-security main
SRC
APTOPTS=(-o Dir::Etc::sourcelist="$APTDIR/sources.list" -o Dir::Etc::sourceparts=/nonexistent
         -o Dir::State::Lists="$APTDIR/lists" -o Dir::Cache::archives="$APTDIR/archives"
         -o Dir::Cache::pkgcache="$APTDIR/pkgcache.bin" -o Dir::Cache::srcpkgcache="$APTDIR/srcpkgcache.bin"
         -o APT::Get::List-Cleanup=0 -o Debug::NoLocking=1 -o APT::Sandbox::User=root)
REFRESHED=0
private_update() {
    if [ "${1:-}" = refresh ]; then
        log "refreshing the trixie package lists (${2:-what is wanted is not in the old ones})"
        rm -f "$APTDIR/updated"
        REFRESHED=1
    fi
    if [ ! -f "$APTDIR/updated" ]; then
        log "reading the trixie package lists (private apt configuration)"
        apt-get "${APTOPTS[@]}" update -qq || die "apt-get update for trixie failed"
        touch "$APTDIR/updated"
    fi
}
private_download() { # name=version
    (cd "$APTDIR/debs" && apt-get "${APTOPTS[@]}" download -qq "$1") || return 1
}
# private_fetch RESOLVER: downloads into $APTDIR/debs the package that the function RESOLVER
# names (name or name=version, as read from the current lists). A version still in stale
# lists can be gone from the mirror (a 404): then the lists are refreshed, once per run, and
# the package resolved and downloaded again before giving up.
private_fetch() {
    local spec
    spec=$("$1")
    if [ -n "$spec" ] && private_download "$spec"; then return 0; fi
    if [ "$REFRESHED" = 0 ]; then
        log "downloading ${spec:-the package} failed; trying again with fresh lists"
        private_update refresh "a version listed in them may be gone from the mirror"
        spec=$("$1")
        if [ -n "$spec" ] && private_download "$spec"; then return 0; fi
    fi
    [ -n "$spec" ] || die "$1: the package is no longer in the (refreshed) trixie lists"
    die "could not download $spec from trixie, with fresh lists; is deb.debian.org reachable? (apt-get download $spec in $APTDIR/debs)"
}

# kernel source
KSRC_DIR="$CACHE/linux-source-$KSERIES"
if [ ! -f "$KSRC_DIR/.unpacked" ]; then
    private_update
    apt-cache "${APTOPTS[@]}" show "linux-source-$KSERIES" >/dev/null 2>&1 || private_update refresh
    if ! apt-cache "${APTOPTS[@]}" show "linux-source-$KSERIES" >/dev/null 2>&1; then
        seen=$(apt-cache "${APTOPTS[@]}" search --names-only '^linux-source-[0-9.]+$' 2>/dev/null | awk '{print $1}' | sort -V | tr '\n' ' ')
        die "linux-source-$KSERIES is no longer in the archive; series seen: ${seen:-none}. Set RIO_KERNEL_SERIES or update the project."
    fi
    log "downloading linux-source-$KSERIES"
    rm -f "$APTDIR/debs"/linux-source-"$KSERIES"_*.deb
    linux_source_spec() { echo "linux-source-$KSERIES"; }
    private_fetch linux_source_spec
    rm -rf "$KSRC_DIR" && mkdir -p "$KSRC_DIR"
    dpkg -x "$APTDIR/debs"/linux-source-"$KSERIES"_*.deb "$KSRC_DIR/deb"
    log "unpacking the kernel tarball"
    tar -C "$KSRC_DIR" -xf "$KSRC_DIR/deb/usr/src/linux-source-$KSERIES.tar.xz"
    rm -rf "$KSRC_DIR/deb"
    touch "$KSRC_DIR/.unpacked"
else
    log "kernel source present ($KSRC_DIR)"
fi
# The kernel's own minimum LLVM (the picked version's major is only checked against
# toolchain.sh's RIO_LLVM_MIN).
kmin=$(SRCARCH=x86 ARCH=x86_64 sh "$KSRC_DIR/linux-source-$KSERIES/scripts/min-tool-version.sh" llvm) \
    || die "cannot read the kernel's minimum LLVM version"
have=$(clang-"$LLVM_VERSION" -dumpversion)
[ "$(printf '%s\n' "$kmin" "$have" | sort -V | head -n1)" = "$kmin" ] \
    || die "clang-$LLVM_VERSION is $have; Linux $KSERIES needs LLVM $kmin or later (install a newer one or set RIO_LLVM_VERSION)"

# rust-src matching the machine's rustc
RUSTC_VER=$(rustc --version | awk '{print $2}')
RSRC_DIR="$CACHE/rust-src-$RUSTC_VER"
if [ ! -d "$RSRC_DIR/usr/src/rustc-$RUSTC_VER/library" ]; then
    private_update
    rust_src_version() {
        apt-cache "${APTOPTS[@]}" madison rust-src 2>/dev/null | awk -F'|' '{gsub(/ /,"",$2); print $2}' \
            | grep -E "^([0-9]+:)?${RUSTC_VER//./\\.}\+" | head -n1 || true
    }
    ver=$(rust_src_version)
    if [ -z "$ver" ]; then
        private_update refresh
        ver=$(rust_src_version)
    fi
    [ -n "$ver" ] || die "no rust-src for rustc $RUSTC_VER in trixie; have: $(apt-cache "${APTOPTS[@]}" madison rust-src | awk -F'|' '{print $2}' | tr -d ' ' | tr '\n' ' ')"
    log "downloading rust-src $ver (rustc is $RUSTC_VER)"
    rm -f "$APTDIR/debs"/rust-src_*.deb
    rust_src_spec() { local v; v=$(rust_src_version); [ -z "$v" ] || echo "rust-src=$v"; }
    private_fetch rust_src_spec
    rm -rf "$RSRC_DIR"
    dpkg -x "$APTDIR/debs"/rust-src_*.deb "$RSRC_DIR"
else
    log "rust-src $RUSTC_VER present"
fi

# ---- 3. bindgen from crates.io ------------------------------------------------------------
if ! bindgen --version 2>/dev/null | grep -q "$BINDGEN_VERSION"; then
    log "installing bindgen-cli $BINDGEN_VERSION from crates.io"
    cargo install -q bindgen-cli --version "$BINDGEN_VERSION" --locked
else
    log "bindgen $BINDGEN_VERSION present"
fi

# ---- 4. the environment file the Makefile reads -------------------------------------------
cat > "$CACHE/env.mk" <<MK
KSRC_ORIG := $KSRC_DIR/linux-source-$KSERIES
RUST_LIB_SRC := $RSRC_DIR/usr/src/rustc-$RUSTC_VER/library
RUSTC_VERSION := $RUSTC_VER
MK

# ---- 5. cargo's build directories, kept beside the kernel cache ---------------------------
# In a new checkout (a CI clone), userlib/target and tests/target become links into
# $CACHE/cargo-target/KEY, KEY naming the checkout's path, so that the next clone at the
# same path reuses the crates.io dependencies already compiled instead of building them
# again. One directory per path, not one for all: cargo keeps each checkout's intermediate
# files apart, but the finished binaries (target/release/rio-fuzz, riofs-torture, ...) have
# one name in a target directory, and the QEMU tests copy them into guests, so a clone
# sharing a target with a working tree could test whatever that tree built last (the test
# crate's executables too, if cargo gave both checkouts' builds the same hash). An existing
# directory or link is left alone.
root=$(cd "$(dirname "$0")/.." && pwd)
key=$(printf '%s' "$root" | sha256sum | cut -c1-12)
for d in userlib tests; do
    t="$root/$d/target"
    if [ ! -e "$t" ] && [ ! -L "$t" ]; then
        mkdir -p "$CACHE/cargo-target/$key/$d"
        ln -s "$CACHE/cargo-target/$key/$d" "$t"
        log "$d/target -> $CACHE/cargo-target/$key/$d (this checkout's)"
    fi
done
log "done"
