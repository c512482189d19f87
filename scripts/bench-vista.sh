#!/usr/bin/env bash
# Vista benchmarks: Vista (file backend, Memory / Msync / MsyncWal policies) against SQLite
# (WAL, synchronous=FULL and NORMAL), redb and LMDB (heed), each on a disk directory and on
# tmpfs, plus Vista's raw small-transaction latency, cost per KB logged and implicit-mode
# page-fault cost. Prints markdown tables on stdout (progress on stderr).
#
#   scripts/bench-vista.sh            # default run, about 2 to 3 minutes
#   VISTA_BENCH_SCALE=5 scripts/bench-vista.sh        # 5x longer measuring per cell
#   VISTA_BENCH_DIRS=/mnt/x:/dev/shm/y scripts/bench-vista.sh
#   VISTA_BENCH_ONLY=vista,sqlite scripts/bench-vista.sh
#   scripts/bench-vista.sh --crash    # also a long crash campaign (VISTA_CRASH_ITERS, default 2000)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here/userlib"

crash=0
for a in "$@"; do
    case "$a" in
        --crash) crash=1 ;;
        *) echo "usage: $0 [--crash]" >&2; exit 2 ;;
    esac
done

cargo bench -p vista-compare --bench compare

if [ "$crash" = 1 ]; then
    echo
    echo "## Crash campaign"
    echo
    out=$(VISTA_CRASH_ITERS="${VISTA_CRASH_ITERS:-2000}" \
        cargo test --release -p vista --test crash -- --nocapture crash_campaign 2>&1) || {
        echo "$out" >&2
        exit 1
    }
    echo "$out" | grep -E '^crash campaign:' | sed 's/^/    /'
fi
