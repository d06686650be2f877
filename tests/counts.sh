#!/bin/sh
# The test counts of `make test` and `make check-asan`: each part writes one line "PASSED FAILED SKIPPED" to a
# file of its own, and the last line of the run sums them, so no part can pass unseen or vanish from the total.
#
#   tests/counts.sh tap OUT RC      counts of a cmocka binary run with CMOCKA_MESSAGE_OUTPUT=TAP (its stdout in OUT,
#                                   its exit status RC): tests it never reported and a failing exit count as failed
#   tests/counts.sh add FILE P F S  adds P F S to FILE (created with 0 0 0)
#   tests/counts.sh sum LABEL DIR PART...
#                                   prints "LABEL: N passed, N failed, N skipped" over DIR/PART for each PART (a part
#                                   without its file ran not to its end: one failure); exits 1 on any failure or
#                                   when nothing passed
set -u

case "${1:-}" in
tap)
    awk -v rc="$3" '
        /^1\.\.[0-9]+/ { planned = substr($1, 4) + 0 }
        /^(not )?ok [0-9]+/ && /# [Ss][Kk][Ii][Pp]/ { s++; next }
        /^ok [0-9]+/ { p++; next }
        /^not ok [0-9]+/ { f++; next }
        END {
            if (p + f + s < planned) f += planned - (p + f + s)
            if (rc != 0 && f == 0) f = 1
            if (p + f + s == 0) f = 1
            printf "%d %d %d\n", p, f, s
        }' "$2"
    ;;
add)
    p=0 f=0 s=0
    if [ -r "$2" ]; then read -r p f s < "$2"; fi
    echo "$((p + $3)) $((f + $4)) $((s + $5))" > "$2"
    ;;
sum)
    label=$2 dir=$3
    shift 3
    p=0 f=0 s=0
    for part in "$@"; do
        if [ -r "$dir/$part" ]; then
            read -r a b c < "$dir/$part"
        else
            echo "$label: $part reported no counts (it did not run to its end): counted as 1 failed"
            a=0 b=1 c=0
        fi
        echo "  $part: $a passed, $b failed, $c skipped"
        p=$((p + a)) f=$((f + b)) s=$((s + c))
    done
    echo "$label: $p passed, $f failed, $s skipped"
    [ "$f" -eq 0 ] && [ "$p" -gt 0 ]
    ;;
*)
    echo "usage: tests/counts.sh tap OUT RC | add FILE P F S | sum LABEL DIR PART..." >&2
    exit 2
    ;;
esac
