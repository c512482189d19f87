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
    [userlib]=249
    # lib 4; debug kernel: foundation 8, rio_core 13, rio_backing 6, rio_blockdev 3,
    # rio_security 10, fuzz 2, riofs 5, riofs_crash 2; fast kernel: safe_sync 3,
    # vista_rio 3, discount_rio 3, riofs_fsck 4, riofs_apps 3, pmem_dax 4; less the
    # LONG_ONLY ones
    [qemu]=72
    [qemu-long]=21  # campaign 7, riofs 5, riofs_crash 2, riofs_fsck 4, safe_sync 3 (make test-long)
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
    account "$name" "${PIPESTATUS[0]}"
}

# account NAME RC: add the counts in $log/NAME.out and $log/NAME.skips to the totals; RC is
# the exit status of what ran the tests.
account() {
    local name=$1 rc=$2
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
    # With --report-time (the QEMU tests), the slowest tests, so that the time budget can
    # be kept without guessing.
    if grep -qE '^test .* <[0-9.]+s>$' "$log/$name.out"; then
        echo "=== $name: slowest tests"
        sed -nE 's/^test (.*) \.\.\. .* <([0-9.]+)s>$/\2 \1/p' "$log/$name.out" | sort -rn | head -n 8 |
            awk '{ printf "===   %7.1f s  %s\n", $1, $2 }'
    fi
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

# The C demo's test links libdiscount.a, which cargo builds for `cargo build -p discount`,
# and `dc run` preloads libdc_preload.so from beside `dc` (`cargo build -p dc`),
# neither of which cargo builds when the crate is only a test dependency.
(cd "$here/userlib" && cargo build -q -p discount -p dc) || echo "=== building libdiscount.a or libdc_preload.so failed: the C demo and dc tests will fail"
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
FAST_SUITES=(safe_sync vista_rio discount_rio riofs_fsck riofs_apps pmem_dax)
# Long runs, in their own target (make test-long), so that a cached make test stays near
# 15 minutes: the campaign smoke (every random fault class must crash, up to 1000 faults
# each; about 6 minutes with two guests at a time), and the long versions of tests that
# make test runs short: the riofs crash model (1 round here, 24 there), the fsck of an
# arena a panic left mid-workload (1 round, 3 there), a hung CPU ending in safe sync (with
# preemption off here; there also with interrupts off), riofs power cuts (1 here, 3 there).
LONG_SUITES=(campaign riofs riofs_crash riofs_fsck safe_sync)
# Tests only make test-long runs (file::test): a hung CPU takes the lockup detectors a
# minute and a half even on a quiet machine.
LONG_ONLY=(safe_sync::a_hung_cpu_becomes_a_panic_that_the_crash_kernel_saves)
# Each QEMU test's wall time in the log ("test x ... ok <12.3s>"): libtest's --report-time,
# which stable libtest accepts only with RUSTC_BOOTSTRAP set when the test binary runs
# (it changes no build: cargo does not rebuild for it).
export RUSTC_BOOTSTRAP=1
# Every test file must be in one of the lists: a new one may not be silently left out.
for f in "$here"/tests/tests/*.rs; do
    t=$(basename "$f" .rs)
    if [[ ! " ${DEBUG_SUITES[*]} ${FAST_SUITES[*]} ${LONG_SUITES[*]} " =~ " $t " ]]; then
        echo "=== tests/tests/$t.rs is in neither list of scripts/test.sh: counted as one failure"
        total_fail=$((total_fail + 1))
    fi
done

# Each test's duration from earlier runs on this machine (seconds, "flavour:file::test"),
# kept beside the kernel cache: the pool starts the longest first.
times_file="${RIO_CACHE:-/var/cache/rio-build}/test-times.tsv"

# pool NAME FLAVOUR:FILE...: every test of the QEMU test FILEs (or "lib", the crate's own
# unit tests) as its own process, QEMU_TEST_THREADS (2) at a time, longest first, each on
# the kernel its FLAVOUR names and under a timeout (TEST_TIMEOUT, 1200 s). cargo runs test
# files one after another and a file's last long test would leave a core idle; one job per
# test keeps two guests running until the end. Counted like `suite`.
pool() {
    local name=$1
    shift
    echo "=== $name"
    local dir="$log/$name.d" threads=${QEMU_TEST_THREADS:-2}
    mkdir -p "$dir"
    : >"$log/$name.skips"
    local targets=() spec
    for spec in "$@"; do
        if [ "${spec#*:}" = lib ]; then targets+=(--lib); else targets+=(--test "${spec#*:}"); fi
    done
    # Build once; cargo names each file's executable ("Executable tests/x.rs (target/...)").
    if ! (cd "$here/tests" && cargo test --no-run "${targets[@]}") </dev/null >"$log/$name.build" 2>&1; then
        cat "$log/$name.build"
        echo "=== $name: the tests did not build: counted as one failure"
        total_fail=$((total_fail + 1))
        return
    fi
    local jobs="$dir/jobs" fl file bin t
    : >"$jobs"
    for spec in "$@"; do
        fl=${spec%%:*} file=${spec#*:}
        if [ "$file" = lib ]; then
            bin=$(sed -nE 's/^ *Executable unittests src\/lib\.rs \((.*)\)$/\1/p' "$log/$name.build" | tail -n 1)
        else
            bin=$(sed -nE "s/^ *Executable tests\/$file\.rs \((.*)\)$/\1/p" "$log/$name.build" | tail -n 1)
        fi
        if [ -z "$bin" ]; then
            echo "=== $name: no executable for $file in cargo's output: counted as one failure"
            total_fail=$((total_fail + 1))
            continue
        fi
        (cd "$here/tests" && "$bin" --list </dev/null) 2>/dev/null | sed -nE 's/^(.*): test$/\1/p' |
            while IFS= read -r t; do
                if [ "$long" = 0 ] && [[ " ${LONG_ONLY[*]} " =~ " $file::$t " ]]; then
                    continue
                fi
                local key="$fl:$file::$t"
                local secs
                secs=$(awk -F'\t' -v k="$key" '$2 == k { s = $1 } END { print s + 0 }' "$times_file" 2>/dev/null)
                # Unknown tests first (they may be long), then the longest.
                printf '%s\t%s\t%s\t%s\t%s\n' "${secs:-0}" "$fl" "$file" "$bin" "$t" |
                    awk -F'\t' 'BEGIN { OFS = "\t" } { if ($1 == 0) $1 = 1e9; print }'
            done >>"$jobs"
    done
    sort -t$'\t' -k1,1 -rn -o "$jobs" "$jobs"
    echo "=== $name: $(wc -l <"$jobs") tests, $threads at a time"
    local n=0 started
    started=$(date +%s)
    while IFS=$'\t' read -r _ fl file bin t; do
        while [ "$(jobs -rp | wc -l)" -ge "$threads" ]; do wait -n || true; done
        n=$((n + 1))
        (
            out="$dir/$n.out"
            cd "$here/tests" &&
                RIO_KERNEL_FLAVOUR=$fl RIO_SKIP_LOG="$log/$name.skips" \
                    timeout --kill-after=30 "${TEST_TIMEOUT:-1200}" "$bin" --exact "$t" \
                    --test-threads=1 -Z unstable-options --report-time </dev/null >"$out" 2>&1
            rc=$?
            line=$(grep -E "^test $t \.\.\. " "$out" | tail -n 1)
            if [ "$rc" -ne 0 ]; then
                { echo "--- $fl $file::$t (exit $rc)"; cat "$out"; } >"$out.failed"
                [ -n "$line" ] || echo "test $t ... FAILED (exit $rc, no result: timeout or crash)" >>"$out"
                grep -q '^test result:' "$out" || echo "test result: FAILED. 0 passed; 1 failed; 0 ignored" >>"$out"
            fi
            secs=$(printf '%s\n' "$line" | sed -nE 's/.* <([0-9.]+)s>$/\1/p')
            [ -n "$secs" ] && printf '%s\t%s\n' "$secs" "$fl:$file::$t" >"$out.time"
            printf '=== [%4ds] %-6s %s %s\n' $(($(date +%s) - started)) "$fl" "$file" "${line:-test $t ... FAILED}"
        ) &
    done <"$jobs"
    wait
    cat "$dir"/*.out >"$log/$name.out" 2>/dev/null
    cat "$dir"/*.failed 2>/dev/null
    # Remember each test's duration for the next run's order.
    mkdir -p "$(dirname "$times_file")"
    {
        [ -f "$times_file" ] && cat "$times_file"
        cat "$dir"/*.time 2>/dev/null
    } | awk -F'\t' '{ last[$2] = $1 } END { for (k in last) print last[k] "\t" k }' >"$times_file.new" &&
        mv "$times_file.new" "$times_file"
    account "$name" 0
}

if [ "$long" = 1 ]; then
    # make test-long: only the long suites, with the same accounting and total line.
    export RIO_TEST_LONG=1 RIOFS_CRASH_ROUNDS=${RIOFS_CRASH_ROUNDS:-24} RIOFS_FSCK_ROUNDS=${RIOFS_FSCK_ROUNDS:-3}
    pool qemu-long $(printf 'fast:%s ' "${LONG_SUITES[@]}")
    echo "$total_pass passed, $total_fail failed, $total_skip skipped"
    [ "$total_fail" -eq 0 ]
    exit
fi
export RIOFS_CRASH_ROUNDS=${RIOFS_CRASH_ROUNDS:-1} RIOFS_FSCK_ROUNDS=${RIOFS_FSCK_ROUNDS:-1}
# One pool for both kernels, so that no core waits at the change from one to the other.
pool qemu fast:lib $(printf 'debug:%s ' "${DEBUG_SUITES[@]}") $(printf 'fast:%s ' "${FAST_SUITES[@]}")

echo "$total_pass passed, $total_fail failed, $total_skip skipped"
[ "$total_fail" -eq 0 ]
