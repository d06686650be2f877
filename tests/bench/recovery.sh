#!/bin/bash
# recovery.sh PATH/TO/chunkd [RUNS]: SIGKILL -> a dead worker's chunks taken by a running worker, with the
# default --lease-ms (10000). A private redis-server on a free loopback port; 3,000 items of 4 s in chunks of
# 100; a victim holding >= 3 chunks is SIGKILLed while a rescuer runs beside it. Prints one line per run.
# (The README's "9.0-9.1 s" comes from this script.)
set -euo pipefail
bin=$(realpath "$1") runs=${2:-3}
dir=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$dir" >"$dir/redis.log" 2>&1 &
redis_pid=$!
trap 'kill "$redis_pid" 2>/dev/null; kill $(jobs -p) 2>/dev/null; rm -rf "$dir"' EXIT
until redis-cli -p "$port" ping >/dev/null 2>&1; do sleep 0.05; done
export REDIS_URL=redis://127.0.0.1:$port CHUNKD_HTTP_PORT=0
python3 -c "import json
with open('$dir/items.jsonl', 'w') as f:
    for i in range(3000): f.write(json.dumps({'id': i, 'sleep_ms': 4000}) + '\n')"
key='chunkd:{r}:processing:victim'
for run in $(seq 1 "$runs"); do
    redis-cli -p "$port" flushall >/dev/null
    "$bin" enqueue --queue r "$dir/items.jsonl" >/dev/null 2>&1
    "$bin" worker --queue r --worker-id victim --concurrency 500 2>/dev/null &
    victim=$!
    until [ "$(redis-cli -p "$port" llen "$key")" -ge 3 ]; do sleep 0.05; done
    "$bin" worker --queue r --worker-id rescuer --concurrency 500 2>/dev/null &
    rescuer=$!
    kill -9 "$victim"
    wait "$victim" 2>/dev/null || true
    t0=$(date +%s.%N)
    until [ "$(redis-cli -p "$port" llen "$key")" -eq 0 ]; do sleep 0.05; done
    t1=$(date +%s.%N)
    echo "run $run: SIGKILL -> the victim's chunks reaped and back in pending $(echo "$t1 - $t0" | bc) s"
    kill -TERM "$rescuer"
    wait "$rescuer" 2>/dev/null || true
done
