#!/usr/bin/env bash
# make test: make lint, the userlib unit tests, then the QEMU tests; ends with one line
# "N passed, N failed, N skipped" that counts every test of every suite (a suite that fails
# to build, or reports fewer tests than it had, counts as one failure; a test that could
# not run here is skipped, not passed).
set -uo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
log=$(mktemp -d)
trap 'rm -rf "$log"' EXIT
total_pass=0
total_fail=0
total_skip=0

# The fewest tests each suite may report (passed + failed + ignored): a suite whose count
# drops below this lost tests, which is a failure, not a smaller total. Counted with
# `cargo test ... -- --list`; raise a number when tests are added.
declare -A MIN_TESTS=(
    [userlib]=142
    [qemu-debug]=50 # lib 1, foundation 8, rio_core 13, rio_backing 6, rio_blockdev 3, rio_security 10, fuzz 2, riofs 5, riofs_crash 2
    [qemu]=16       # safe_sync 3, vista_rio 3, discount_rio 3, riofs_fsck 4, riofs_apps 3
    [qemu-long]=8   # campaign 6, riofs_crash 2 (make test-long)
)

# result-sum FIELD FILE: the sum of "N FIELD" over the "test result:" lines of FILE.
result_sum() {
    grep -E '^test result:' "$2" | sed -E "s/.* ([0-9]+) $1.*/\1/" | paste -sd+ | bc
}

# suite NAME DIR CARGO-ARGS...: run cargo test in DIR and add its counts to the totals.
# A test that cannot do what it is named for here appends "SKIPPED: test: reason" to
# $RIO_SKIP_LOG and returns: cargo counts it as passed, this counts it as skipped.
suite() {
    local name=$1 dir=$2
    shift 2
    echo "=== $name"
    : >"$log/$name.skips"
    (cd "$dir" && RIO_SKIP_LOG="$log/$name.skips" timeout --kill-after=30 "${SUITE_TIMEOUT:-2400}" cargo test --no-fail-fast "$@") 2>&1 | tee "$log/$name.out"
    local rc=${PIPESTATUS[0]}
    local p f i s
    p=$(result_sum passed "$log/$name.out")
    f=$(result_sum failed "$log/$name.out")
    i=$(result_sum ignored "$log/$name.out")
    p=${p:-0}
    f=${f:-0}
    i=${i:-0}
    s=$(wc -l <"$log/$name.skips")
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
        echo "=== $name: cargo exited $rc without a failing test (build error or timeout): counted as one failure"
        f=1
    fi
    if [ $((p + f + i)) -lt "${MIN_TESTS[$name]}" ]; then
        echo "=== $name: $((p + f + i)) tests reported, fewer than the ${MIN_TESTS[$name]} it had: counted as one failure"
        f=$((f + 1))
    fi
    [ "$s" -gt 0 ] && sed 's/^/=== /' "$log/$name.skips"
    p=$((p - s))
    s=$((s + i))
    echo "=== $name: $p passed, $f failed, $s skipped"
    total_pass=$((total_pass + p))
    total_fail=$((total_fail + f))
    total_skip=$((total_skip + s))
}

long=0
[ "${1:-}" = --long ] && long=1
# make lint first (fmt and clippy of userlib and tests, rustfmt of rio_mod): one test.
if [ "$long" = 0 ]; then
echo "=== lint"
if make -s -C "$here" lint >"$log/lint.out" 2>&1; then
    echo "=== lint: passed"
    total_pass=$((total_pass + 1))
else
    cat "$log/lint.out"
    echo "=== lint: failed"
    total_fail=$((total_fail + 1))
fi

# The C demo's test links libdiscount.a, which cargo builds for `cargo build -p discount`
# but not when discount is only a test dependency.
(cd "$here/userlib" && cargo build -q -p discount) || echo "=== building libdiscount.a failed: the C demo tests will fail"
suite userlib "$here/userlib" --workspace
fi
# The QEMU tests: each boots its own VM (about 2 s under TCG, 4 s on the debug kernel); two
# at a time on 2 cores. The suites that exercise rio.ko's own paths (foundation and bad
# input, core, backing store, block devices, the security regressions, riofs, the fuzzer
# smoke)
# run on the debug kernel (lockdep, KASAN, Rust debug checks), where any splat on a guest
# console fails the test; the campaign smoke, safe sync, Vista and Discount Checking run on
# the fast kernel the campaign and the benchmarks use.
DEBUG_SUITES=(foundation rio_core rio_backing rio_blockdev rio_security riofs riofs_crash)
[ -f "$here/tests/tests/fuzz.rs" ] && DEBUG_SUITES+=(fuzz)
FAST_SUITES=(safe_sync vista_rio discount_rio riofs_fsck riofs_apps)
# Long runs, in their own target (make test-long), so that a cached make test stays under
# 15 minutes: the campaign smoke (every random fault class must crash, up to 1000 faults
# each; about 6 minutes with two guests at a time).
# The riofs crash model runs in both: 4 rounds in make test (on the debug kernel), 24 in
# make test-long (on the fast one).
LONG_SUITES=(campaign riofs_crash)
args() { local t; for t in "$@"; do printf -- '--test\n%s\n' "$t"; done; }
mapfile -t debug_args < <(args "${DEBUG_SUITES[@]}")
mapfile -t fast_args < <(args "${FAST_SUITES[@]}")
# Every test file must be in one of the lists: a new one may not be silently left out.
for f in "$here"/tests/tests/*.rs; do
    t=$(basename "$f" .rs)
    if [[ ! " ${DEBUG_SUITES[*]} ${FAST_SUITES[*]} ${LONG_SUITES[*]} " =~ " $t " ]]; then
        echo "=== tests/tests/$t.rs is in neither list of scripts/test.sh: counted as one failure"
        total_fail=$((total_fail + 1))
    fi
done
if [ "$long" = 1 ]; then
    # make test-long: only the long suites, with the same accounting and total line.
    mapfile -t long_args < <(args "${LONG_SUITES[@]}")
    export RIO_KERNEL_FLAVOUR=fast RIOFS_CRASH_ROUNDS=${RIOFS_CRASH_ROUNDS:-24}
    suite qemu-long "$here/tests" "${long_args[@]}" -- --test-threads="${QEMU_TEST_THREADS:-2}"
    echo "$total_pass passed, $total_fail failed, $total_skip skipped"
    [ "$total_fail" -eq 0 ]
    exit
fi
export RIO_KERNEL_FLAVOUR=debug RIOFS_CRASH_ROUNDS=${RIOFS_CRASH_ROUNDS:-4}
suite qemu-debug "$here/tests" --lib "${debug_args[@]}" -- --test-threads="${QEMU_TEST_THREADS:-2}"
export RIO_KERNEL_FLAVOUR=fast
suite qemu "$here/tests" "${fast_args[@]}" -- --test-threads="${QEMU_TEST_THREADS:-2}"

echo "$total_pass passed, $total_fail failed, $total_skip skipped"
[ "$total_fail" -eq 0 ]
