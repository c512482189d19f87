#!/usr/bin/env bash
# Discount Checking on real programs: the protocol study of Lowell's thesis (section 6.2.4,
# Figures 6.3-6.5) for the four unmodified Debian programs the crash tests drive (bc and
# GNU ed on pipes, nvi and sc on a pseudo-terminal; userlib/dc/tests/common/apps.rs).
#
#   scripts/bench-dc-apps.sh                    # about 8 minutes on 2 busy cores
#   DC_APPS_REPS=3 scripts/bench-dc-apps.sh     # repetitions per configuration (default 5)
#   DC_APPS=bc,ed scripts/bench-dc-apps.sh      # some of the programs
#   DC_APPS_OUT=/tmp/x scripts/bench-dc-apps.sh # output directory
#
# Each program's scripted session, with no crashes, is run by the unmodified program (the
# baseline) and under `dc run --protocol P` for CPVS, CAND, CBNDVS, CAND-LOG and
# CBNDVS-LOG, with two stores: the state directory on tmpfs (/dev/shm), standing for
# Rio's reliable memory ("Discount Checking"), and on a disk file system (/var/tmp) with
# DC_DURABILITY=msync, every commit durable on disk ("Discount Checking-disk"). Measured
# per run: the session's wall time (the driver types the next input when the program
# waits for one, so this includes the typist's pacing, as the thesis's runs did), the
# program's CPU time (user + system) and the commits it made (`dc status`). Medians over
# the repetitions, the configurations in a new order in each repetition. Every run's
# files and output must equal the baseline's, or the benchmark stops.
#
# Prints a markdown table on stdout (progress on stderr) and writes apps.json (every
# measurement) and one SVG per program (the protocols in the protocol space, each with
# its commits and run-time ratios) to results/bench-dc-apps/ (or DC_APPS_OUT).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here/userlib"

out=${DC_APPS_OUT:-$here/results/bench-dc-apps}
# The workspace's release profile aborts on panic; cargo ignores that for a bench target,
# so the dc library would be built twice, abort for the dc binary and unwind for the
# bench, into the same libdc_preload.so (an output filename collision). Unwind for the
# whole bench build: cargo warns that it ignores the setting (for the bench target
# itself), and the other units take it.
export CARGO_PROFILE_BENCH_PANIC=unwind
echo "building (bench profile)..." >&2
cargo bench -q -p dc --bench apps --no-run
cargo bench -q -p dc --bench apps -- --out "$out"
