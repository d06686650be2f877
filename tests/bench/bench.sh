#!/usr/bin/env bash
# chunkd benchmarks: `make bench` runs `tests/bench/bench.sh build/chunkd`.
#
#   tests/bench/bench.sh PATH/TO/chunkd [bench.py options...]
#   BENCH_QUICK=1 tests/bench/bench.sh build/chunkd          # smaller sizes, ~1.5 min
#   BENCH_CASES=million tests/bench/bench.sh build/chunkd    # one case
#   BENCH_CASES=http tests/bench/bench.sh build/chunkd       # the http handler vs wrk (nginx)
#   BENCH_CASES=cluster tests/bench/bench.sh build/chunkd    # 6 queues on a 3-shard Redis Cluster vs one redis-server
#   BENCH_CASES=rediscpu tests/bench/bench.sh build/chunkd   # Redis's own CPU per item; 1, 4 and 8 workers on one queue
#
# Prints a summary table and writes tests/bench/results.txt, throughput.dat and
# throughput.png. Numbers are recorded, never asserted: exit 0 unless a run
# failed (crash, time-out, wrong results). Every temporary directory and every
# process started here (redis-server, nginx, wrk, chunkd, curlfloor, recipe.py) is removed/ended on
# exit, including on failure or Ctrl-C.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
if [ $# -lt 1 ]; then
    echo "usage: $0 PATH/TO/chunkd [options]   (see: python3 $here/bench.py --help)" >&2
    exit 2
fi
bin=$1
shift
if [ ! -x "$bin" ] || [ -d "$bin" ]; then
    echo "bench.sh: $bin is not an executable file (build it first: make)" >&2
    exit 2
fi
for tool in python3 redis-server; do
    command -v "$tool" >/dev/null || { echo "bench.sh: $tool not found in PATH" >&2; exit 2; }
done
command -v gnuplot >/dev/null || echo "bench.sh: gnuplot not found: throughput.png will not be drawn" >&2

tmp=$(mktemp -d "${TMPDIR:-/tmp}/chunkd-bench.XXXXXX")
py_pid=

cleanup() {
    local rc=$?
    trap - EXIT INT TERM HUP
    if [ -n "$py_pid" ] && kill -0 "$py_pid" 2>/dev/null; then
        kill -TERM "$py_pid" 2>/dev/null || true
        wait "$py_pid" 2>/dev/null || true
    fi
    # Process groups bench.py still had running (only if it died without cleaning up).
    if [ -s "$tmp/pgids" ]; then
        while read -r pgid; do
            if [ -n "$pgid" ]; then kill -KILL -- "-$pgid" 2>/dev/null || true; fi
        done < "$tmp/pgids"
    fi
    rm -rf "$tmp"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# In the background so that the traps run as soon as a signal arrives.
python3 "$here/bench.py" --tmp "$tmp" "$bin" "$@" &
py_pid=$!
wait "$py_pid"
