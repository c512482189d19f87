#!/usr/bin/env bash
# make test: make lint, the userlib unit tests, then the QEMU tests; ends with one line
# "N passed, N failed, N skipped" that counts every test of every suite (a suite that fails
# to build, or reports fewer tests than it had, counts as one failure; a test that could
# not run here is skipped, not passed).
#
# scripts/test.sh --counts: list every test (cargo test -- --list: nothing runs, no guest
# boots), print the MIN_TESTS rows the tree has and check them against the table.
#
# scripts/test.sh --plan [--long]: the QEMU tests make test (make test-long) would run, each
# with its kernel, and the rows it checks; nothing runs.
set -uo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
log=$(mktemp -d)
trap 'rm -rf "$log"' EXIT
total_pass=0
total_fail=0
total_skip=0
phase_start=$SECONDS

# The fewest tests each suite may report (passed + failed + ignored), one row per test
# binary: a userlib crate's own tests (its src/lib.rs or src/main.rs), each of its tests/*.rs,
# its doc tests ("userlib doc-tests CRATE"), and each QEMU test file (tests/tests/*.rs; and
# tests/src/lib.rs, the test crate's own unit tests). A suite below its row lost tests: one
# failure naming it, which tests added to another suite cannot hide. A suite that reports
# tests but has no row is a failure too: a new file or crate comes with its row. Rows count
# every test, LONG_ONLY ones too (make test expects a file's row less its LONG_ONLY tests).
# Counted with `bash scripts/test.sh --counts`; raise a number when tests are added.
declare -A MIN_TESTS=(
    # userlib (cargo test --workspace): each crate's own tests, tests/*.rs, doc tests
    ["userlib doc-tests discount"]=1
    ["userlib doc-tests rio_client"]=1
    ["userlib doc-tests vista"]=5
    ["userlib doc-tests vistagrams"]=1
    ["userlib/dc-demos/tests/crash.rs"]=17
    ["userlib/dc-demos/tests/udp.rs"]=7
    ["userlib/dc-drive/src/lib.rs"]=4
    ["userlib/dc/src/main.rs"]=2
    ["userlib/dc/tests/bc.rs"]=7
    ["userlib/dc/tests/twopc.rs"]=3
    ["userlib/dc/tests/dist_apps.rs"]=15
    ["userlib/dc/tests/dist_streams.rs"]=4
    ["userlib/dc/tests/dist_fifos.rs"]=4
    ["userlib/dc/tests/dist_ready.rs"]=8
    ["userlib/dc/tests/selfpipe.rs"]=3
    ["userlib/dc/tests/dist_outside.rs"]=5
    ["userlib/dc/tests/ed.rs"]=6
    ["userlib/dc/tests/nvi.rs"]=5
    ["userlib/dc/tests/sc.rs"]=5
    ["userlib/discount/src/lib.rs"]=66
    ["userlib/discount/tests/ready_log.rs"]=3
    ["userlib/fs-bench/src/main.rs"]=3
    ["userlib/rio-agent/src/lib.rs"]=4
    ["userlib/rio-campaign/src/lib.rs"]=4
    ["userlib/rio-check/src/lib.rs"]=12
    ["userlib/rio-cli/src/main.rs"]=6
    ["userlib/rio-client/src/lib.rs"]=3
    ["userlib/rio-format/src/lib.rs"]=19
    ["userlib/rio-fuzz/src/lib.rs"]=30
    ["userlib/rio-prng/src/lib.rs"]=3
    ["userlib/riofs-fsck/src/lib.rs"]=38
    ["userlib/riofs-fsck/tests/cli.rs"]=2
    ["userlib/riofs-torture/src/lib.rs"]=5
    ["userlib/riofs-torture/src/main.rs"]=2
    ["userlib/riovm/src/lib.rs"]=13
    ["userlib/vista-rio/src/main.rs"]=3
    ["userlib/vista/src/lib.rs"]=44
    ["userlib/vista/tests/crash.rs"]=1
    ["userlib/vista/tests/prepare_crash.rs"]=1
    ["userlib/vistagrams/src/lib.rs"]=16
    ["userlib/vistagrams/tests/crash.rs"]=4
    # QEMU (the pools; make test-long runs campaign, riofs, riofs_crash, riofs_fsck, safe_sync)
    ["tests/src/lib.rs"]=4
    ["tests/tests/campaign.rs"]=7
    ["tests/tests/discount_apps.rs"]=2
    ["tests/tests/discount_rio.rs"]=3
    ["tests/tests/dist_guests.rs"]=3
    ["tests/tests/foundation.rs"]=8
    ["tests/tests/multi_guest.rs"]=2
    ["tests/tests/fuzz.rs"]=2
    ["tests/tests/pmem_dax.rs"]=4
    ["tests/tests/rio_backing.rs"]=6
    ["tests/tests/rio_blockdev.rs"]=3
    ["tests/tests/rio_core.rs"]=13
    ["tests/tests/rio_security.rs"]=10
    ["tests/tests/riofs.rs"]=5
    ["tests/tests/riofs_apps.rs"]=3
    ["tests/tests/riofs_crash.rs"]=2
    ["tests/tests/riofs_fsck.rs"]=4
    ["tests/tests/safe_sync.rs"]=3
    ["tests/tests/vista_rio.rs"]=3
    ["tests/tests/vistagrams_guests.rs"]=2
)

# result-sum FIELD FILE: the sum of "N FIELD" over the "test result:" lines of FILE.
result_sum() {
    grep -E '^test result:' "$2" | sed -E "s/.* ([0-9]+) $1.*/\1/" | paste -sd+ | bc
}

# result_total FILE: passed + failed + ignored over the "test result:" lines of FILE.
result_total() {
    grep -E '^test result:' "$1" |
        awk '{ for (i = 1; i < NF; i++) if ($(i + 1) ~ /^(passed|failed|ignored);?$/) s += $i } END { print s + 0 }'
}

# exe_map DIR CARGO-ARGS...: "executable<TAB>suite" for each test binary that `cargo test
# CARGO-ARGS` builds in DIR; the suite is the binary's source file from the repository root
# (cargo's own "Running tests/crash.rs" does not say which crate's crash.rs).
exe_map() {
    local dir=$1
    shift
    (cd "$dir" && cargo test -q --no-run --message-format=json "$@" </dev/null 2>/dev/null) |
        python3 -c '
import json, os, sys
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"]:
        print(os.path.basename(m["executable"]) + "\t" + os.path.relpath(m["target"]["src_path"], sys.argv[1]))
' "$here"
}

# suite_counts MAP <OUTPUT: "suite<TAB>tests" for each test binary in cargo test's OUTPUT
# (named by its "Running SRC (EXE)" line through MAP, or by "Doc-tests CRATE"), from its
# "test result:" lines (passed + failed + ignored) or, from `-- --list`, its "N tests, M
# benchmarks" line. A binary that reports nothing counts 0.
suite_counts() {
    awk -v map="$1" '
        BEGIN { while ((getline l < map) > 0) { split(l, a, "\t"); key[a[1]] = a[2] } }
        /^ *Running .*\)$/ {
            exe = $NF; gsub(/[()]/, "", exe); n = split(exe, p, "/")
            cur = (p[n] in key) ? key[p[n]] : exe; got[cur] += 0; next
        }
        /^ *Doc-tests / { cur = "userlib doc-tests " $2; got[cur] += 0; next }
        /^test result:/ && cur != "" {
            for (i = 1; i < NF; i++) if ($(i + 1) ~ /^(passed|failed|ignored);?$/) got[cur] += $i
            next
        }
        /^[0-9]+ tests?, [0-9]+ benchmarks?$/ && cur != "" { got[cur] += $1 }
        END { for (k in got) print k "\t" got[k] }'
}

# expect_rows PREFIX: the MIN_TESTS rows whose suite starts with PREFIX ("suite<TAB>min").
expect_rows() {
    local k
    for k in "${!MIN_TESTS[@]}"; do
        if [[ $k == "$1"* ]]; then printf '%s\t%s\n' "$k" "${MIN_TESTS[$k]}"; fi
    done
}

# check_counts NAME EXPECT COUNTS: one line for each suite of EXPECT ("suite<TAB>min": the
# rows this run must see) that COUNTS ("suite<TAB>tests reported") has below its minimum or
# not at all, and for each suite of COUNTS that reported tests and has no row.
check_counts() {
    awk -F'\t' -v name="$1" -v expect="$2" '
        BEGIN { while ((getline l < expect) > 0) { split(l, a, "\t"); min[a[1]] = a[2] } }
        { got[$1] += $2 }
        END {
            for (k in min) if (got[k] + 0 < min[k] + 0)
                printf "=== %s: %s: %d tests reported, fewer than the %d it had: counted as one failure\n", name, k, got[k], min[k]
            for (k in got) if (!(k in min) && got[k] > 0)
                printf "=== %s: %s: %d tests, and no row in MIN_TESTS (scripts/test.sh): counted as one failure\n", name, k, got[k]
        }' "$3" | sort
}

# suite NAME DIR CARGO-ARGS...: run cargo test in DIR and add its counts to the totals, each
# test binary against its MIN_TESTS row (the rows whose suite starts with DIR's name).
# A test that cannot do what it is named for here appends "SKIPPED: test: reason" to
# $RIO_SKIP_LOG and returns: cargo counts it as passed, this counts it as skipped.
suite() {
    local name=$1 dir=$2
    shift 2
    echo "=== $name"
    : >"$log/$name.skips"
    exe_map "$dir" "$@" >"$log/$name.exes"
    (cd "$dir" && RIO_SKIP_LOG="$log/$name.skips" timeout --kill-after=30 "${SUITE_TIMEOUT:-2400}" cargo test --no-fail-fast "$@") 2>&1 | tee "$log/$name.out"
    local rc=${PIPESTATUS[0]}
    suite_counts "$log/$name.exes" <"$log/$name.out" >"$log/$name.counts"
    expect_rows "$(basename "$dir")" >"$log/$name.expect"
    account "$name" "$rc"
}

# account NAME RC: add the counts in $log/NAME.out and $log/NAME.skips to the totals, and
# one failure for each suite that check_counts finds short in $log/NAME.counts against
# $log/NAME.expect; RC is the exit status of what ran the tests.
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
    local broke=0 short
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
        echo "=== $name: cargo exited $rc without a failing test (build error or timeout): counted as one failure"
        f=1
        broke=1
    fi
    check_counts "$name" "$log/$name.expect" "$log/$name.counts" >"$log/$name.short"
    if [ -s "$log/$name.short" ]; then
        short=$(wc -l <"$log/$name.short")
        if [ "$broke" = 1 ] && [ "$short" -gt 1 ]; then
            # A build that broke loses every suite after it: one more failure, not dozens.
            echo "=== $name: $short suites short after cargo exited $rc (listed below): counted as one failure"
            short=1
        fi
        cat "$log/$name.short"
        f=$((f + short))
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
    echo "=== $name: $p passed, $f failed, $s skipped ($((SECONDS - phase_start)) s)"
    total_pass=$((total_pass + p))
    total_fail=$((total_fail + f))
    total_skip=$((total_skip + s))
}

long=0
plan=0
# --plan [--long]: list the QEMU tests make test (or make test-long) would run, on which
# kernel, and the rows it would check them against; nothing runs.
if [ "${1:-}" = --plan ]; then
    plan=1
    shift
fi
[ "${1:-}" = --long ] && long=1
if [ "${1:-}" = --counts ]; then
    # Every test binary of userlib (with its doc tests) and of tests/ (lib and tests/*.rs, as
    # the pools run them), listed; the rows, and what check_counts says of the table.
    : >"$log/short"
    for side in userlib tests; do
        args=(--workspace)
        [ "$side" = tests ] && args=(--lib --tests)
        exe_map "$here/$side" "${args[@]}" >"$log/$side.exes"
        (cd "$here/$side" && cargo test "${args[@]}" -- --list </dev/null 2>&1) |
            suite_counts "$log/$side.exes" >"$log/$side.counts"
        expect_rows "$side" >"$log/$side.expect"
        check_counts "$side --list" "$log/$side.expect" "$log/$side.counts" >>"$log/short"
    done
    echo "=== the tree's tests as MIN_TESTS rows (suites with none left out):"
    sort "$log"/userlib.counts "$log"/tests.counts | awk -F'\t' '$2 > 0 { printf "    [\"%s\"]=%s\n", $1, $2 }'
    cat "$log/short"
    [ ! -s "$log/short" ]
    exit
fi
# make lint first (fmt and clippy of userlib and tests, rustfmt of rio_mod): one test.
if [ "$long" = 0 ] && [ "$plan" = 0 ]; then
echo "=== lint"
phase_start=$SECONDS
if make -s -C "$here" lint >"$log/lint.out" 2>&1; then
    echo "=== lint: passed ($((SECONDS - phase_start)) s)"
    total_pass=$((total_pass + 1))
else
    cat "$log/lint.out"
    echo "=== lint: failed"
    total_fail=$((total_fail + 1))
fi

# The C demo's test links libdiscount.a, which cargo builds for `cargo build -p discount`,
# and `dc run` preloads libdc_preload.so from beside `dc` (`cargo build -p dc`),
# neither of which cargo builds when the crate is only a test dependency.
phase_start=$SECONDS
(cd "$here/userlib" && cargo build -q -p discount -p dc) || echo "=== building libdiscount.a or libdc_preload.so failed: the C demo and dc tests will fail"
suite userlib "$here/userlib" --workspace
fi
# The QEMU tests: each boots its own VM (about 2 s under TCG, 7 s on the debug kernel); two
# at a time on 2 cores. The suites that exercise rio.ko's own paths (foundation and bad
# input, core, backing store, block devices, the security regressions, riofs, the fuzzer
# smoke)
# run on the debug kernel (lockdep, KASAN, Rust debug checks), where any splat on a guest
# console fails the test; the campaign smoke, safe sync, Vista and Discount Checking run on
# the fast kernel the campaign and the benchmarks use.
DEBUG_SUITES=(foundation rio_core rio_backing rio_blockdev rio_security riofs riofs_crash)
[ -f "$here/tests/tests/fuzz.rs" ] && DEBUG_SUITES+=(fuzz)
FAST_SUITES=(safe_sync vista_rio discount_rio discount_apps dist_guests riofs_fsck riofs_apps pmem_dax multi_guest vistagrams_guests)
# Long runs, in their own target (make test-long), so that a cached make test stays near
# 15 minutes: the campaign smoke (every random fault class must crash, up to 1000 faults
# each; about 6 minutes with two guests at a time), and the long versions of tests that
# make test runs short: the riofs crash model (1 round here, 24 there), the fsck of an
# arena a panic left mid-workload (1 round, 3 there), a hung CPU ending in safe sync (with
# preemption off here; there also with interrupts off), riofs power cuts (1 here, 3 there),
# nvi and sc on Rio in the guest (one protocol each here, all five there), git on riofs
# (12 commits here, 25 there).
LONG_SUITES=(campaign riofs riofs_crash riofs_fsck safe_sync discount_apps riofs_apps)
# Tests only make test-long runs (file::test): a hung CPU takes the lockup detectors a
# minute and a half even on a quiet machine; the peer comparison (ext4 -o dax on pmem,
# whose code is not ours); the second of two tests that differ in which side crashes; the
# guests' copy of a negative control make test runs on the host (dist_apps.rs).
LONG_ONLY=(
    safe_sync::a_hung_cpu_becomes_a_panic_that_the_crash_kernel_saves
    pmem_dax::ext4_dax_files_survive_a_kernel_panic_and_warm_reboot
    pmem_dax::the_campaign_configuration_loses_nothing_to_a_panic
    pmem_dax::a_cold_boot_loses_them_and_the_check_says_so
    pmem_dax::the_dax_check_fails_off_dax
    vistagrams_guests::transfers_happen_exactly_once_across_a_panic_of_the_client_guest
    discount_apps::sc_on_rio_survives_kernel_panics
    dist_guests::heat_without_coordination_across_guests_is_rejected_by_save_work
)
# Tests of the debug suites that make test runs on the fast kernel and make test-long on
# the debug kernel (file::test): the long survival runs (a panic, a reset or a power cut
# and the data checked after it), which spend their time booting and rebooting a kernel
# that is 2 to 3 times slower with KASAN and lockdep, on paths the short tests of the same
# suites take on the debug kernel in make test as well; the wild stores (an oops each, whose
# report the debug kernel writes slowly to the serial console; the riofs one took 141 s);
# the refusals of a foreign or too small backing disk and of bad disk entries (the same
# parsing as a_disk_of_another_arena_is_refused and a_bad_arena_slot_is_quarantined, which
# stay); the harness's own timeout and cleanup. The rest of each debug suite (bad input,
# permissions, limits, races, the fuzzer) stays on the debug kernel.
DEBUG_LONG=(
    rio_core::pwrite_survives_a_kernel_panic_and_warm_reboot
    rio_core::pwrite_survives_a_hard_reset_and_a_new_qemu_process
    rio_core::mmap_stores_survive_a_kernel_panic
    foundation::system_reset_restart_and_cold_boot
    foundation::panic_then_warm_reboot_in_the_same_qemu
    riofs::power_loss_leaves_a_whole_earlier_image
    riofs::plain_files_survive_a_kernel_panic
    riofs_crash::riofs_recovers_exactly_the_acknowledged_operations
    rio_blockdev::ext4_on_rio_survives_a_kernel_panic_and_fscks_clean
    rio_backing::a_crash_is_followed_by_writeback_of_every_byte
    rio_backing::power_loss_keeps_what_was_written_back
    rio_security::a_failed_restore_leaves_the_disk_as_it_was
    rio_security::a_format_whose_disk_fails_changes_nothing
    riofs::protection_turns_wild_stores_at_riofs_into_oopses
    rio_core::protection_turns_a_wild_store_into_an_oops_and_data_survives
    rio_security::bad_disk_entries_are_quarantined_and_the_rest_restored
    rio_backing::a_foreign_backing_device_is_refused_and_not_overwritten
    rio_backing::a_backing_device_that_is_too_small_is_refused
    foundation::a_hung_command_times_out
    foundation::a_guest_dies_with_the_thread_that_started_it
)
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

# qemu_suite FILE: the MIN_TESTS suite of a pool's FILE ("lib": the test crate's own tests).
qemu_suite() {
    if [ "$1" = lib ]; then echo tests/src/lib.rs; else echo "tests/tests/$1.rs"; fi
}

# in_list NAME FILE::TEST: whether the array NAME holds FILE::TEST.
in_list() {
    local -n arr=$1
    [[ " ${arr[*]} " =~ " $2 " ]]
}

# list_count NAME FILE: how many of the array NAME's entries are FILE's tests.
list_count() {
    local -n arr=$1
    local t c=0
    for t in "${arr[@]}"; do [[ $t == "$2::"* ]] && c=$((c + 1)); done
    echo "$c"
}

# selected FLAVOUR FILE TEST: whether this run (make test, or make test-long) runs FILE's
# TEST on FLAVOUR's kernel. make test: everything but LONG_ONLY, each DEBUG_LONG test on the
# fast kernel instead of the debug one. make test-long: the LONG_SUITES whole on the fast
# kernel, and on their own kernels the tests make test leaves out (LONG_ONLY, and DEBUG_LONG
# on the debug kernel).
selected() {
    local fl=$1 file=$2 t=$3
    if [ "$long" = 0 ]; then
        in_list LONG_ONLY "$file::$t" && return 1
        if [ "$fl" = debug ]; then
            ! in_list DEBUG_LONG "$file::$t"
        elif [[ " ${DEBUG_SUITES[*]} " =~ " $file " ]]; then
            in_list DEBUG_LONG "$file::$t"
        fi
    else
        [ "$fl" = fast ] && [[ " ${LONG_SUITES[*]} " =~ " $file " ]] && return 0
        if [ "$fl" = debug ]; then
            in_list DEBUG_LONG "$file::$t" || in_list LONG_ONLY "$file::$t"
        else
            in_list LONG_ONLY "$file::$t"
        fi
    fi
}

# pool_expect FLAVOUR:FILE...: the rows a pool of these files must see, "suite<TAB>min",
# summed over a file's flavours: in make test a file's row less its LONG_ONLY tests (its
# DEBUG_LONG tests count the same on either kernel); in make test-long a long suite's whole
# row on the fast kernel plus its listed tests on their own kernels. The lists are fixed
# here, so a listed test that disappears still shows as a short suite.
pool_expect() {
    local spec fl file key m
    for spec in "$@"; do
        fl=${spec%%:*} file=${spec#*:}
        key=$(qemu_suite "$file")
        [ -n "${MIN_TESTS[$key]+set}" ] || continue
        m=${MIN_TESTS[$key]}
        if [ "$long" = 0 ]; then
            # Both flavours of a split file print the same row: it is the file's total.
            m=$((m - $(list_count LONG_ONLY "$file")))
        elif [ "$fl" = fast ] && [[ " ${LONG_SUITES[*]} " =~ " $file " ]]; then
            :
        elif [ "$fl" = debug ]; then
            m=$(($(list_count DEBUG_LONG "$file") + $(list_count LONG_ONLY "$file")))
        else
            m=$(list_count LONG_ONLY "$file")
        fi
        printf '%s\t%s\t%s\n' "$key" "$m" "$fl"
    done | awk -F'\t' -v long="$long" '
        # make test: one value per file (the same from each flavour); test-long: the sum.
        { if (long == 1) s[$1] += $2; else s[$1] = $2 }
        END { for (k in s) printf "%s\t%s\n", k, s[k] }'
}

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
                selected "$fl" "$file" "$t" || continue
                local key="$fl:$file::$t"
                local secs
                secs=$(awk -F'\t' -v k="$key" '$2 == k { s = $1 } END { print s + 0 }' "$times_file" 2>/dev/null)
                # Unknown tests first (they may be long), then the longest.
                printf '%s\t%s\t%s\t%s\t%s\n' "${secs:-0}" "$fl" "$file" "$bin" "$t" |
                    awk -F'\t' 'BEGIN { OFS = "\t" } { if ($1 == 0) $1 = 1e9; print }'
            done >>"$jobs"
    done
    sort -t$'\t' -k1,1 -rn -o "$jobs" "$jobs"
    if [ "$plan" = 1 ]; then
        # --plan: what this pool would run and the rows it would check; nothing runs.
        awk -F'\t' '{ printf "%s\t%s::%s\n", $2, $3, $5 }' "$jobs" | sort
        echo "--- rows"
        pool_expect "$@" | sort
        return
    fi
    echo "=== $name: $(wc -l <"$jobs") tests, $threads at a time"
    phase_start=$SECONDS
    local n=0 started
    started=$(date +%s)
    : >"$dir/suites"
    while IFS=$'\t' read -r _ fl file bin t; do
        while [ "$(jobs -rp | wc -l)" -ge "$threads" ]; do wait -n || true; done
        n=$((n + 1))
        printf '%s\t%s\n' "$n" "$(qemu_suite "$file")" >>"$dir/suites"
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
    # Each file's tests reported, against its row less the LONG_ONLY tests make test leaves out.
    : >"$log/$name.counts"
    for spec in "$@"; do printf '%s\t0\n' "$(qemu_suite "${spec#*:}")" >>"$log/$name.counts"; done
    local suite
    while IFS=$'\t' read -r n suite; do
        printf '%s\t%s\n' "$suite" "$(result_total "$dir/$n.out")"
    done <"$dir/suites" >>"$log/$name.counts"
    pool_expect "$@" >"$log/$name.expect"
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
    # The files with tests that make test leaves out, on the kernels they run on here.
    extra=()
    for f in "${DEBUG_SUITES[@]}"; do
        [ "$(($(list_count DEBUG_LONG "$f") + $(list_count LONG_ONLY "$f")))" -gt 0 ] && extra+=("debug:$f")
    done
    for f in "${FAST_SUITES[@]}"; do
        [[ " ${LONG_SUITES[*]} " =~ " $f " ]] && continue
        [ "$(list_count LONG_ONLY "$f")" -gt 0 ] && extra+=("fast:$f")
    done
    pool qemu-long $(printf 'fast:%s ' "${LONG_SUITES[@]}") "${extra[@]}"
    echo "$total_pass passed, $total_fail failed, $total_skip skipped"
    [ "$total_fail" -eq 0 ]
    exit
fi
export RIOFS_CRASH_ROUNDS=${RIOFS_CRASH_ROUNDS:-1} RIOFS_FSCK_ROUNDS=${RIOFS_FSCK_ROUNDS:-1}
# One pool for both kernels, so that no core waits at the change from one to the other.
# The debug suites' DEBUG_LONG tests on the fast kernel.
split=()
for f in "${DEBUG_SUITES[@]}"; do
    [ "$(list_count DEBUG_LONG "$f")" -gt 0 ] && split+=("fast:$f")
done
pool qemu fast:lib $(printf 'debug:%s ' "${DEBUG_SUITES[@]}") $(printf 'fast:%s ' "${FAST_SUITES[@]}") "${split[@]}"

echo "$total_pass passed, $total_fail failed, $total_skip skipped"
[ "$total_fail" -eq 0 ]
