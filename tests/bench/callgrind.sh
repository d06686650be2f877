#!/usr/bin/env bash
# callgrind.sh PATH/TO/chunkd [ITEMS] [CONCURRENCY] [OUT]
#
# Instructions per call of the http handler, as tests/bench/README.md quotes them ("Where a call's instructions
# go"): starts a private redis-server (unix socket) and nginx answering after 100 ms (tests/mockapi/run-nginx.sh)
# in a temporary directory, enqueues ITEMS (default 8000) GETs {"id":N,"path":"/x"}, runs a collector, and runs
# one `chunkd worker --handler http --concurrency CONCURRENCY (default 300) --exit-when-empty` under
# `valgrind --tool=callgrind`. Prints the instructions per call (all threads of the worker, start and exit
# included) and leaves the profile in OUT (default ./callgrind.chunkd.out) for callgrind_annotate. The counts do
# not depend on the machine's load, unlike times. With LD_LIBRARY_PATH pointing at a libcurl built with symbols,
# callgrind_annotate can see inside libcurl. Everything it starts is ended and removed on exit.
set -euo pipefail
if [ $# -lt 1 ]; then
    echo "usage: $0 PATH/TO/chunkd [ITEMS] [CONCURRENCY] [OUT]" >&2
    exit 2
fi
bin=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
n=${2:-8000} c=${3:-300} out=${4:-callgrind.chunkd.out}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
for tool in valgrind redis-server python3; do
    command -v "$tool" >/dev/null || { echo "$0: $tool not found" >&2; exit 2; }
done
dir=$(mktemp -d /tmp/chunkd-callgrind.XXXXXX)
nginx_pid='' redis_pid='' collect_pid=''
cleanup() {
    for p in $collect_pid $nginx_pid $redis_pid; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT INT TERM

redis-server --port 0 --unixsocket "$dir/redis.sock" --save '' --appendonly no --logfile "$dir/redis.log" &
redis_pid=$!
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
nginx_pid=$("$here/../mockapi/run-nginx.sh" "$port" "$dir/nginx" 0.1)
for _ in $(seq 100); do [ -S "$dir/redis.sock" ] && break; sleep 0.05; done

export REDIS_URL="unix://$dir/redis.sock" CHUNKD_HTTP_PORT=0
python3 -c "
for i in range($n): print('{\"id\":%d,\"path\":\"/x\"}' % i)" > "$dir/items.jsonl"
"$bin" enqueue --queue cg "$dir/items.jsonl" 2>/dev/null
"$bin" collect --queue cg --until-done --out "$dir/results.jsonl" 2>/dev/null &
collect_pid=$!
valgrind --tool=callgrind --callgrind-out-file="$out" "$bin" worker --queue cg --handler http \
    --base-url "http://127.0.0.1:$port" --concurrency "$c" --exit-when-empty 2> "$dir/valgrind.log"
wait "$collect_pid"
collect_pid=''
got=$(wc -l < "$dir/results.jsonl")
[ "$got" -eq "$n" ] || { echo "$0: $got results for $n items" >&2; exit 1; }
refs=$(grep -o 'refs: *[0-9,]*' "$dir/valgrind.log" | tr -d ', ' | cut -d: -f2)
awk -v r="$refs" -v n="$n" -v c="$c" -v f="$out" \
    'BEGIN { printf "%.1f k instructions per call (%d calls at concurrency %d; profile in %s)\n", r / n / 1000, n, c, f }'
