"""Guarantees of the README that no other test checked (issue 20): each counts what happened (calls per item at the
mock API, connection attempts, results) rather than reading a log line.

- redis_outage_keeps_in_flight_items_and_backs_off: Redis down for 7 s under a worker with 100 calls in flight:
  no call is made twice, every result is committed once Redis is back, and the reconnection attempts back off.
- collector_waits_out_loading: a running collector whose Redis restarts and spends seconds reading its data back
  (LOADING) keeps going and loses and repeats nothing.
- young_chunk_checkpointed_after_checkpoint_ms: the items a chunk finished in its first --checkpoint-ms are
  committed once the chunk is that old, even if no other item finishes; a crash after that redoes only the
  unfinished items.
"""

import json
import re
import signal
import time

from harness import assert_exactly_once, check, read_jsonl, stream_lines, wait_until

OUTAGE_S = 7.0  # past the backoff's first steps (0.1 to 3.2 s, jittered down to half); the lease is longer


def _calls(ctx, paths):
    return {p: ctx.mock.count(p) for p in paths}


def test_redis_outage_keeps_in_flight_items_and_backs_off(ctx):
    server = ctx.start_redis(appendonly=True)  # appendfsync always: the restart loses nothing
    url = server.url()
    q = ctx.queue
    items = [{"id": i, "path": f"/{q}/{i}", "query": {"delay_ms": 2000}} for i in range(100)]
    paths = [it["path"] for it in items]
    ctx.run("enqueue", "--queue", q, "--chunk-size", 20, ctx.write_jsonl("items.jsonl", items), url=url)
    worker = ctx.spawn("worker", "--queue", q, "--handler", "http", "--base-url", ctx.mock.url, "--concurrency", 100,
                       "--redis-timeout-ms", 500, "--lease-ms", 30000, "--exit-when-empty", url=url, name="worker")
    wait_until(lambda: ctx.mock.counts()["inflight"] == 100 or not worker.alive(), 15,
               lambda: f"100 calls in flight (mock: {ctx.mock.counts()['inflight']}; {worker.describe()})")
    port = server.port
    server.stop()  # SIGKILL while every item is in flight; their calls end during the outage
    down_at = time.monotonic()
    time.sleep(OUTAGE_S)  # the outage itself, not a wait for something
    check(worker.alive(), f"the worker exited during the Redis outage: {worker.describe()}")
    server.start(port=port)
    up_at = time.monotonic()
    worker.wait(30, expect_rc=0)

    calls = _calls(ctx, paths)
    twice = {p: n for p, n in calls.items() if n != 1}
    check(not twice, f"{len(twice)} items were not called exactly once across the outage (e.g. "
                     f"{list(twice.items())[:5]}): in-flight items must be kept, not run again")
    r = server.client()
    try:
        results = [json.loads(line) for line in stream_lines(r, ctx.key("results"))]
        stats = {k: int(v) for k, v in r.hgetall(ctx.key("stats")).items()}
    finally:
        r.close()
    assert_exactly_once(results, range(100), "results stream after the outage")
    check(stats.get("done") == 100 and stats.get("chunks_done") == 5 and not stats.get("reaped_chunks"),
          f"stats after the outage: {stats}")
    err = worker.stderr()
    check("reconnected to Redis" in err, "the worker did not log its reconnection")

    # Backoff: each reconnecting thread waits 100 ms doubling to a cap of 6.4 s, each wait jittered down to half
    # at most, so within 7 s one thread makes at most 8 attempts (50+100+...+3200 ms of waits is 6.35 s). Its
    # lines are rate-limited to one per 5 s per place in the code, and each carries the attempt number: a
    # reconnection without backoff (a try every 50 ms) would show attempt 60 or more in the second one.
    attempts = [int(n) for n in re.findall(r"cannot connect to Redis at [^ ]+: [^(]*\(attempt (\d+); retrying\)", err)]
    check(attempts, f"no reconnection attempt logged during a {OUTAGE_S:.0f} s outage: {err[-600:]!r}")
    check(max(attempts) <= 12, f"reconnection attempts logged {attempts} within a {OUTAGE_S:.0f} s outage: more than "
                               "a backoff from 100 ms doubling allows (at most about 8 per thread)")
    print(f"  redis_outage: down {up_at - down_at:.1f}s; attempts logged {attempts}; every item called once",
          flush=True)


def test_collector_waits_out_loading(ctx):
    # key-load-delay: redis-server sleeps that many microseconds per key while it loads (a setting Redis keeps for
    # its own tests), so 20,000 filler keys make seconds of LOADING; small event intervals let it answer meanwhile.
    server = ctx.start_redis(extra_args=["--key-load-delay", "200", "--loading-process-events-interval-bytes", "1024"])
    url = server.url()
    q = ctx.queue
    first = [{"id": i} for i in range(300)]
    ctx.run("enqueue", "--queue", q, "--chunk-size", 50, ctx.write_jsonl("first.jsonl", first), url=url)
    ctx.run("worker", "--queue", q, "--handler", "echo", "--exit-when-empty", url=url, timeout=60)
    out = ctx.path("results.jsonl")
    collector = ctx.spawn("collect", "--queue", q, "--out", out, "--follow", "--redis-timeout-ms", 1000, url=url,
                          name="collector")
    r = server.client()
    try:
        wait_until(lambda: r.execute("HGET", ctx.key("stats"), "collected") == "300" or not collector.alive(), 30,
                   lambda: f"the first 300 collected ({collector.describe()})")
        for n in range(0, 20000, 1000):
            r.execute("MSET", *[x for i in range(n, n + 1000) for x in (f"filler:{i}", "x")])
        r.execute("SAVE")  # the state the restarted server loads: the first 300 collected and deleted
    finally:
        r.close()
    port = server.port
    server.stop()  # SIGKILL: the restart reads dump.rdb back
    server.start(port=port, ready=False)
    check(server.loading(), "set-up: the restarted redis-server was not loading (LOADING lasted too little)")
    wait_until(lambda: not server.loading() or not collector.alive(), 60, "redis-server done loading")
    check(collector.alive(), f"the collector exited while Redis was loading: {collector.describe()}")
    check(re.search(r"collect: Redis is not ready \(LOADING", collector.stderr()),
          f"the collector never met LOADING (the test did not test it): {collector.stderr()[-600:]!r}")

    second = [{"id": i} for i in range(300, 500)]
    ctx.run("enqueue", "--queue", q, "--chunk-size", 50, ctx.write_jsonl("second.jsonl", second), url=url)
    ctx.run("worker", "--queue", q, "--handler", "echo", "--exit-when-empty", url=url, timeout=60)
    r = server.client()
    try:
        wait_until(lambda: r.execute("HGET", ctx.key("stats"), "collected") == "500" or not collector.alive(), 30,
                   lambda: f"all 500 collected ({collector.describe()})")
        left = r.execute("XLEN", ctx.key("results"))
    finally:
        r.close()
    collector.send(signal.SIGTERM)
    collector.wait(10, expect_rc=0)
    assert_exactly_once(read_jsonl(out), range(500), "collect --follow output across a restart with LOADING")
    check(left == 0, f"the results stream holds {left} entries after they were collected")


def test_young_chunk_checkpointed_after_checkpoint_ms(ctx):
    # One chunk: 5 items answered at once, 5 that take 30 s. With --checkpoint-ms 2000 the 5 quick results wait
    # (a young chunk is committed once, whole) until the chunk is 2 s old, then are committed although nothing else
    # finishes. The worker is killed after that: the chunk's next delivery calls only the 5 slow items again.
    q = ctx.queue
    items = [{"id": i, "path": f"/{q}/{i}", "query": {"delay_ms": 10 if i < 5 else 30000}} for i in range(10)]
    paths = [it["path"] for it in items]
    ctx.run("enqueue", "--queue", q, "--chunk-size", 10, ctx.write_jsonl("items.jsonl", items))
    common = ["--queue", q, "--handler", "http", "--base-url", ctx.mock.url, "--lease-ms", 1000]
    victim = ctx.spawn("worker", *common, "--worker-id", "victim", "--checkpoint-ms", 2000, name="victim")
    wait_until(lambda: ctx.llen("processing:victim") == 1 and ctx.mock.counts()["inflight"] == 5
               or not victim.alive(), 15,
               lambda: f"the chunk fetched, 5 quick items answered ({ctx.mock.counts()}; {victim.describe()})")
    seen_young = time.monotonic()
    # Committed by the time the chunk is 2 s old (+ a commit interval); 10 s allows for a loaded machine.
    wait_until(lambda: ctx.xlen() == 5 or not victim.alive(), 10,
               lambda: f"the 5 quick results committed once the chunk is 2 s old (stream {ctx.xlen()}; "
                       f"{victim.describe()})")
    committed_after = time.monotonic() - seen_young
    check(ctx.mock.counts()["inflight"] == 5, "set-up: the slow items are no longer in flight")
    victim.kill()
    rescuer = ctx.spawn("worker", *common, "--drain-timeout-ms", 500, name="rescuer")
    wait_until(lambda: all(n == 2 for p, n in _calls(ctx, paths[5:]).items()) or not rescuer.alive(), 15,
               lambda: f"the slow items called again ({_calls(ctx, paths)}; {rescuer.describe()})")
    calls = _calls(ctx, paths)
    want = {p: 1 if i < 5 else 2 for i, p in enumerate(paths)}
    check(calls == want, f"calls per item {calls}, expected {want}: finished items of a chunk older than "
                         "--checkpoint-ms were run again")
    rescuer.send(signal.SIGTERM)  # the slow calls would take 30 s: the drain gives the chunk back
    rescuer.wait(15, expect_rc=0)
    print(f"  young_chunk: quick results committed {committed_after:.1f}s after the chunk was seen young",
          flush=True)
