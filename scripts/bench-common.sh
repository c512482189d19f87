#!/usr/bin/env bash
# Sourced by the guest benchmark scripts (bench-rio, bench-fs, bench-fio, bench-vista-rio):
# strict mode, the repository root in $here, a scratch directory in $work removed on exit
# (with the console tail a script may start in the background, $tailpid), and the riovm
# runner built (userlib/target/release/riovm).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
work=$(mktemp -d)
trap 'kill "${tailpid:-}" 2>/dev/null || true; rm -rf "$work"' EXIT
(cd "$here/userlib" && cargo build -q --release -p riovm)
