#!/usr/bin/env bash
# Discount Checking on computations of several processes: the protocol study of Lowell's
# thesis Figures 6.6 and 6.7 (issue 16) on the two applications of
# userlib/dc/tests/dist_apps.rs, heat (3 workers over UDP, TreadMarks' role) and chat (a
# server and 3 clients, xpilot's role), under the seven protocols, the state on tmpfs
# (standing for Rio) and on disk (DC_DURABILITY=msync). No crashes; medians of
# DC_DIST_REPS runs (default 3). See userlib/dc/benches/dist.rs.
#
#   scripts/bench-dc-dist.sh                     # about 15 minutes here
#   DC_DIST_STEPS=2000 scripts/bench-dc-dist.sh  # heat's steps (default 10,000)
#   DC_DIST_REPS=5 scripts/bench-dc-dist.sh
#   scripts/bench-dc-dist.sh --out /tmp/x        # output directory (default results/bench-dc-dist)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here/userlib"
# As for bench-dc-apps: unwind for the whole bench build (one libdc_preload.so).
export CARGO_PROFILE_BENCH_PANIC=unwind
echo "building (bench profile)..." >&2
cargo bench -q -p dc --bench dist --no-run
cargo bench -q -p dc --bench dist -- "$@"
