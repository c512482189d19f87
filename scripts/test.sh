#!/usr/bin/env bash
# make test: the userlib unit tests, then the QEMU tests; ends with one line
# "N passed, N failed" that counts every test of every suite (a suite that fails to build
# counts as one failure).
set -uo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
log=$(mktemp -d)
trap 'rm -rf "$log"' EXIT
total_pass=0
total_fail=0

# suite NAME DIR CARGO-ARGS...: run cargo test in DIR and add its counts to the totals.
suite() {
    local name=$1 dir=$2
    shift 2
    echo "=== $name"
    (cd "$dir" && timeout --kill-after=30 "${SUITE_TIMEOUT:-2400}" cargo test --no-fail-fast "$@") 2>&1 | tee "$log/$name.out"
    local rc=${PIPESTATUS[0]}
    local p f
    p=$(grep -E '^test result:' "$log/$name.out" | sed -E 's/.* ([0-9]+) passed.*/\1/' | paste -sd+ | bc)
    f=$(grep -E '^test result:' "$log/$name.out" | sed -E 's/.* ([0-9]+) failed.*/\1/' | paste -sd+ | bc)
    p=${p:-0}
    f=${f:-0}
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
        echo "=== $name: cargo exited $rc without a failing test (build error or timeout): counted as one failure"
        f=1
    fi
    echo "=== $name: $p passed, $f failed"
    total_pass=$((total_pass + p))
    total_fail=$((total_fail + f))
}

# The C demo's test links libdiscount.a, which cargo builds for `cargo build -p discount`
# but not when discount is only a test dependency.
(cd "$here/userlib" && cargo build -q -p discount) || echo "=== building libdiscount.a failed: the C demo tests will fail"
suite userlib "$here/userlib" --workspace
# The QEMU tests: each boots its own VM (about 2 s under TCG, 4 s on the debug kernel); two
# at a time on 2 cores. The suites that exercise rio.ko's own paths (foundation and bad
# input, core, backing store, block devices, the security regressions, the fuzzer smoke)
# run on the debug kernel (lockdep, KASAN, Rust debug checks), where any splat on a guest
# console fails the test; the campaign smoke, safe sync, Vista and Discount Checking run on
# the fast kernel the campaign and the benchmarks use.
DEBUG_SUITES=(foundation rio_core rio_backing rio_blockdev rio_security)
[ -f "$here/tests/tests/fuzz.rs" ] && DEBUG_SUITES+=(fuzz)
FAST_SUITES=(campaign safe_sync vista_rio discount_rio)
args() { local t; for t in "$@"; do printf -- '--test\n%s\n' "$t"; done; }
mapfile -t debug_args < <(args "${DEBUG_SUITES[@]}")
mapfile -t fast_args < <(args "${FAST_SUITES[@]}")
# Every test file must be in one of the lists: a new one may not be silently left out.
for f in "$here"/tests/tests/*.rs; do
    t=$(basename "$f" .rs)
    if [[ ! " ${DEBUG_SUITES[*]} ${FAST_SUITES[*]} " =~ " $t " ]]; then
        echo "=== tests/tests/$t.rs is in neither list of scripts/test.sh: counted as one failure"
        total_fail=$((total_fail + 1))
    fi
done
export RIO_KERNEL_FLAVOUR=debug
suite qemu-debug "$here/tests" --lib "${debug_args[@]}" -- --test-threads="${QEMU_TEST_THREADS:-2}"
export RIO_KERNEL_FLAVOUR=fast
suite qemu "$here/tests" "${fast_args[@]}" -- --test-threads="${QEMU_TEST_THREADS:-2}"

echo "$total_pass passed, $total_fail failed"
[ "$total_fail" -eq 0 ]
