#!/usr/bin/env bash
# A `// SAFETY:` comment must argue why the unsafe code is sound. One whose whole text is a
# back-reference ("as above", "see above", "same as above", "ditto", any case, with or
# without a full stop) argues nothing once the code above it changes, so it fails here,
# named by file:line. A comment that points back AND gives its own reason ("as above; the
# slice is copied before the unmap") passes. The comment's text is the SAFETY line plus the
# plain `//` lines that continue it.
#
# Usage: scripts/lint-safety.sh [DIR...]   (default: rio_mod userlib tests, from the repo root)
set -uo pipefail
cd "$(dirname "$0")/.."
[ $# -gt 0 ] || set -- rio_mod userlib tests
find "$@" -name target -prune -o -name '*.rs' -type f -print0 | sort -z |
    xargs -0 awk '
    function judge(   t) {
        if (start == "") return
        t = tolower(text)
        gsub(/[[:space:]]+/, " ", t)
        sub(/^ /, "", t); sub(/ $/, "", t)
        if (t ~ /^((see|same as|as)( the comment)? above|ditto)[.;:!]*$/) {
            printf "%s: SAFETY comment is only a back-reference (\"%s\"): say why\n", start, t
            bad++
        }
        start = ""
    }
    FNR == 1 { judge() }
    {
        if (match($0, /^[[:space:]]*\/\/[[:space:]]*SAFETY:/)) {
            judge()
            start = FILENAME ":" FNR
            text = substr($0, RSTART + RLENGTH)
        } else if (start != "" && $0 ~ /^[[:space:]]*\/\/([^\/!]|$)/) {
            line = $0
            sub(/^[[:space:]]*\/\//, "", line)
            text = text " " line
        } else {
            judge()
        }
    }
    END { judge(); if (bad) { printf "%d bare back-reference SAFETY comment(s)\n", bad; exit 1 } }
    ' || exit 1
