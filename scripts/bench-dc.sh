#!/usr/bin/env bash
# Discount Checking benchmarks. Prints markdown tables on stdout (progress on stderr).
#
#   scripts/bench-dc.sh                 # about 3 minutes
#   DC_BENCH_DIRS="/dev/shm /var/tmp" scripts/bench-dc.sh   # where the state files go
#   DC_BENCH_KV_COMMANDS=2000 scripts/bench-dc.sh
#
# State on tmpfs (/dev/shm) stands for reliable memory (Rio): stores to the image are
# memory stores. State on a disk file system (/var/tmp) pays for the kernel's write-back
# of MAP_SHARED file pages (page_mkwrite faults after each write-back).
#
# Tables: the raw dirty-page mechanisms (memcpy, mprotect+SIGSEGV, userfaultfd async
# write-protect, PAGEMAP_SCAN); checkpoint latency (minimum, per dirty page) with the
# userfaultfd tracker and with the compare tracker; a compute program with 1-second
# checkpoints; the key-value shell under every protocol; and whether CRIU runs here.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here/userlib"

roots=${DC_BENCH_DIRS:-/dev/shm /var/tmp}
kvn=${DC_BENCH_KV_COMMANDS:-400}
first_root=${roots%% *}
dir="$first_root/dc-bench.$$"
dirs=()
for r in $roots; do dirs+=("$r/dc-bench.$$"); mkdir -p "$r/dc-bench.$$"; done
trap 'rm -rf "${dirs[@]}"' EXIT

echo "building (release)..." >&2
cargo build --release -q -p dc-demos
R="$here/userlib/target/release"

echo "## Finding dirty pages: the mechanisms (4096 pages, median of 5)"
echo
echo "| mechanism | cost |"
echo "|---|---:|"
"$R/dc-bench" mech --pages 4096

for tracker in uffd compare; do
    echo
    echo "## Checkpoint latency, tracker \`$tracker\` (median of 2000 / 30 checkpoints)"
    echo
    echo "| case | result |"
    echo "|---|---|"
    rm -rf "$dir/ckpt"
    DC_DIR="$dir/ckpt" DC_TRACKER=$tracker DC_HEAP_MB=1024 "$R/dc-bench" ckpt
done

for d in "${dirs[@]}"; do
echo
echo "## Compute program (dc-compute, 64 MiB array), checkpoint every second, median of 3, state in \`${d%/dc-bench.*}\`"
echo
echo "| case | result |"
echo "|---|---|"
DC_BENCH_TMP="$d" "$R/dc-bench" compute --bin "$R/dc-compute" --interval-ms 1000 --reps 3 -- \
    --rounds 60 --kib 65536 --updates 4000000 --print-every 10 --allocs 64
done

for d in "${dirs[@]}"; do
echo
echo "## Key-value shell (dc-kv), $kvn commands driven one at a time, state in \`${d%/dc-bench.*}\`"
echo
echo "Per command: wall-clock round trip and the shell's CPU time. Overhead: the extra time"
echo "per command relative to a user who takes 1 s per command. Violations: commit-invariant"
echo "violations the oracle finds in the run's trace (must be 0, except for \`manual\`, which"
echo "commits only at start)."
echo
echo "| protocol | commits | round trip | CPU | overhead at 1 command/s | violations |"
echo "|---|---:|---:|---:|---:|---:|"
"$R/dc-bench" kv --bin "$R/dc-kv" --commands "$kvn" --dir "$d/kv"
done

echo
echo "## CRIU"
echo
if command -v criu >/dev/null 2>&1; then
    if out=$(criu check 2>&1); then
        echo "criu check passed; see the README for a comparison run."
    else
        echo "CRIU is installed ($(criu --version 2>/dev/null | head -1)) but does not run on this kernel:"
        echo
        echo '```'
        echo "$out" | tail -4
        echo '```'
    fi
else
    echo "CRIU is not installed (apt-get install criu)."
fi
