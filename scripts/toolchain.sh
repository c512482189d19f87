# Sourced by setup.sh and env.sh: the one place the LLVM version of the kernel and module
# builds is chosen. It is the highest N for which every LLVM tool the kernel's `LLVM=-N`
# build runs (RIO_LLVM_TOOLS, see the kernel Makefile's CC/LD/AR/NM/... lines) is on PATH
# as TOOL-N and bindgen's libclang is in /usr/lib/llvm-N/lib (env.sh's LIBCLANG_PATH), and
# N is at least RIO_LLVM_MIN. With none such installed it is RIO_LLVM_DEFAULT, which setup
# then installs. RIO_LLVM_VERSION=N overrides the choice (setup installs N if it is missing).
# The kernel cache key (kernel.sh) is `clang-N --version`, so finding the same N again
# reuses the same kernel build.

# What setup installs when no usable LLVM is found: bookworm's newest.
RIO_LLVM_DEFAULT=19
# The kernel's minimum LLVM major: `scripts/min-tool-version.sh llvm` says 17.0.1 on x86 for
# Linux 7.3 (setup checks the full version against the unpacked kernel source).
RIO_LLVM_MIN=17
RIO_LLVM_TOOLS=(clang ld.lld llvm-ar llvm-nm llvm-objcopy llvm-objdump llvm-readelf llvm-strip)

# rio_llvm_complete N: whether LLVM N is installed completely enough to build with.
rio_llvm_complete() {
    local t
    for t in "${RIO_LLVM_TOOLS[@]}"; do
        command -v "$t-$1" >/dev/null 2>&1 || return 1
    done
    [ -e "/usr/lib/llvm-$1/lib/libclang.so" ]
}

# rio_llvm_pick: prints the highest complete N >= RIO_LLVM_MIN; fails if there is none.
rio_llvm_pick() {
    local d f n IFS=:
    for d in $PATH; do
        for f in "$d"/clang-[0-9]*; do
            n=${f##*/clang-}
            case "$n" in '' | *[!0-9]*) continue ;; esac
            echo "$n"
        done
    done | sort -rnu | {
        IFS=$' \t\n'
        while read -r n; do
            if [ "$n" -ge "$RIO_LLVM_MIN" ] && rio_llvm_complete "$n"; then
                echo "$n"
                exit 0
            fi
        done
        exit 1
    }
}

if [ -n "${RIO_LLVM_VERSION:-}" ]; then
    LLVM_VERSION=$RIO_LLVM_VERSION
elif ! LLVM_VERSION=$(rio_llvm_pick); then
    LLVM_VERSION=$RIO_LLVM_DEFAULT
fi
LLVM_COMPLETE=0
if rio_llvm_complete "$LLVM_VERSION"; then LLVM_COMPLETE=1; fi
