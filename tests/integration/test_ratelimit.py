"""The queue-wide limits (src/ratelimit.h): --rate-limit shared by workers, adaptive to 429 with Retry-After,
--max-inflight-global, a dead worker's slots returned by the reaper; and ratelimit.lua's arithmetic called
directly (bucket, the queue's windows of 429s, slots). The adaptation's arithmetic is unit-tested
(tests/unit/test_ratelimit.c); its convergence against a true limit is in test_flaky_ratelimit.py.

Durations are checked only loosely, as lower bounds a limit implies (never as timed assertions of speed)."""

import re
import time
from pathlib import Path

from harness import assert_exactly_once, check, one_line, read_jsonl, wait_until
from test_metrics import get

SCRIPT = (Path(__file__).resolve().parents[2] / "src" / "scripts" / "ratelimit.lua").read_text()


def _items(ctx, n, query="", path="x", start=0):
    return [{"id": i, "path": f"/{ctx.queue}/{path}", **({"query": query} if query else {})}
            for i in range(start, start + n)]


def _metric(text, name):
    m = re.search(rf"^{name}(?:{{[^}}]*}})? ([0-9.e+-]+)$", text, re.M)
    return float(m.group(1)) if m else None


def _worker(ctx, wid, *args):
    return ctx.spawn("worker", "--queue", ctx.queue, "--handler", "http", "--base-url", ctx.mock.url,
                     "--worker-id", wid, *args, name=f"worker {wid}")


def _http_worker(ctx, wid, *args):
    """(worker, port): _worker serving /metrics (ctx.spawn_http)."""
    return ctx.spawn_http("worker", "--queue", ctx.queue, "--handler", "http", "--base-url", ctx.mock.url,
                          "--worker-id", wid, *args, name=f"worker {wid}")


def _collect(ctx, ids, label):
    out = ctx.path(f"{label}.jsonl")
    ctx.run("collect", "--queue", ctx.queue, "--out", out)
    results = read_jsonl(out)
    assert_exactly_once(results, ids, label)
    bad = [r for r in results if not r.get("ok")]
    check(not bad, lambda: f"{label}: {len(bad)} items failed, e.g. {one_line(str(bad[:2]), 300)}")


def _lua(ctx, *argv):
    keys = [ctx.key("rate"), ctx.key("inflight"), ctx.key("workers")]
    return ctx.r.execute("EVAL", SCRIPT, 3, *keys, *[str(a) for a in argv])


def test_invalid_rate_limit_is_rejected(ctx):
    for bad in ("200", "200/h", "0/s", "-1/s", "1e3/s"):
        proc = ctx.run("worker", "--queue", ctx.queue, "--rate-limit", bad, expect_rc=2, timeout=10)
        check("--rate-limit" in proc.stderr(), f"--rate-limit {bad}: message does not name the setting: "
                                               f"{one_line(proc.stderr(), 200)}")


def _now_ms(ctx):
    t = ctx.r.execute("TIME")
    return int(t[0]) * 1000 + int(t[1]) // 1000


def _take(ctx, limit, burst, want, answered=0, throttled=0, retry_after_ms=-1):
    return _lua(ctx, "take", limit, burst, want, answered, throttled, retry_after_ms)


def test_script_bucket_and_windows(ctx):
    granted, wait, rate, paused = _take(ctx, 100, 5, 8)[:4]
    check((granted, wait, rate, paused) == (5, 0, 100000, 0),
          f"a fresh bucket grants its burst (5 of 8 wanted): {[granted, wait, rate, paused]}")
    for n in range(1, 5):  # an empty bucket reserves ahead, up to 200 ms of the rate (20 tokens)
        granted, wait = _take(ctx, 100, 5, 5)[:2]
        check(granted == 5 and 50 * n - 30 <= wait <= 50 * n,
              f"reservation {n}: 5 tokens at 100/s usable after ~{50 * n} ms: {[granted, wait]}")
    granted, wait = _take(ctx, 100, 5, 5)[:2]
    check(granted == 0 and 20 <= wait <= 50, f"no more than 200 ms ahead: ask again in ~50 ms: {[granted, wait]}")
    ctx.r.execute("DEL", ctx.key("rate"))
    ctx.r.execute("SADD", ctx.key("workers"), *[f"w{i}" for i in range(10)])
    granted = _take(ctx, 1000, 500, 500)[0]
    check(granted == 10, f"a block is at most 100 ms of the rate over the 10 workers (10 at 1000/s): {granted}")
    ctx.r.execute("DEL", ctx.key("rate"), ctx.key("workers"))

    # Calls answered and 429s are counted in the queue's window; the first caller after its end closes it.
    reply = _take(ctx, 100, 5, 0, 40, 12, 1000)
    check(reply[4] == 0, f"the window has not ended: {reply}")
    ctx.r.execute("HSET", ctx.key("rate"), "win_start", _now_ms(ctx) - 1000)
    reply = _take(ctx, 100, 5, 0, 10, 3, 2000)
    win, calls, throttled, _, ra_ms, baseline, cut_share, cut_ok, ceiling, first = reply[4:]
    check(win == 1 and (calls, throttled) == (50, 15) and 900 <= ra_ms <= 1000 and first == 1,
          f"window 1 closed with 50 calls, 15 429s, its first Retry-After deadline ~1 s away: {reply}")
    check(_take(ctx, 100, 5, 0, 1, 0)[4] == 0, "a window being closed is handed to one worker only")
    # The decision (ratelimit_adapt, in C) comes back with adapt: a cut, a pause of 1 s, a settle time of 1 s.
    reply = _lua(ctx, "adapt", 100, 5, win, 70, 0, 0.3, 35, 0, 1000, 1000)
    check(reply[2] == 70000 and 900 <= reply[3] <= 1000, f"the rate is 70/s, paused for ~1 s: {reply}")
    granted, wait, _, paused = _take(ctx, 100, 5, 1, 5, 5, 1000)[:4]
    check(granted == 0 and paused > 0 and wait == paused, f"nothing is granted while paused: {[granted, wait]}")
    h = ctx.r.hgetall(ctx.key("rate"))
    check(h["win"] == "2" and h["win_calls"] == "0" and h["win_429"] == "0",
          f"calls answered during the pause (the same burst) are not counted in window 2: {h}")
    reply = _lua(ctx, "adapt", 100, 5, win, 10, 0, 0, 0, 0, 0, 0)
    check(reply[2] == 70000, f"a second decision for the same window is ignored: {reply}")
    check(float(ctx.r.hgetall(ctx.key("rate"))["win_start"]) >= _now_ms(ctx) + 800,
          "the next window starts when the pause (and the settle time) ends")
    reply = _take(ctx, 200, 5, 1)
    check(reply[2] == 200000 and reply[3] == 0, f"a new limit starts afresh: {reply}")


def test_script_slots(ctx):
    ctx.r.execute("SADD", ctx.key("workers"), "w1", "w2")
    check(_lua(ctx, "slots", 3, "w1", 2, 0) == [2, 0], "w1 gets the 2 slots it wants of 3")
    held, cap = _lua(ctx, "slots", 3, "w2", 3, 0)
    check(held == 1 and cap == 2, f"w2 gets the last one, and contention sets a fair cap of 3/2: {[held, cap]}")
    held, cap = _lua(ctx, "slots", 3, "w1", 0, 2)
    check(held == 2 and cap == 2, f"slots in use are never taken away: {[held, cap]}")
    check(_lua(ctx, "slots", 3, "w1", 0, 0)[0] == 0, "w1 gives its slots back")
    check(ctx.r.execute("HGET", ctx.key("inflight"), "w1") is None, "a worker holding nothing has no field")


def test_rate_limit_paces_calls(ctx):
    items = _items(ctx, 300)
    path = ctx.write_jsonl("items.jsonl", items)
    t0 = time.monotonic()
    ctx.run("run", "--queue", ctx.queue, "--handler", "http", "--base-url", ctx.mock.url, "--rate-limit", "100/s",
            "--out", ctx.path("out.jsonl"), path, timeout=60)
    elapsed = time.monotonic() - t0
    assert_exactly_once(read_jsonl(ctx.path("out.jsonl")), [it["id"] for it in items], "run output")
    check(ctx.mock.count(f"/{ctx.queue}/x") == 300, "the mock did not see 300 calls")
    # 300 calls at 100/s with a burst of 10 take at least 2.9 s.
    check(elapsed >= 2.5, f"300 calls at --rate-limit 100/s took only {elapsed:.2f}s")


def test_workers_share_the_limit(ctx):
    workers, ports = zip(*[_http_worker(ctx, f"w{i}", "--rate-limit", "60/s", "--concurrency", 20)
                           for i in range(3)])
    for w, port in zip(workers, ports):
        wait_until(lambda: get(port, "/healthz")[0] == 200, 15, lambda: f"/healthz ({w.describe()})")
    items = _items(ctx, 300)
    t0 = time.monotonic()
    ctx.run("enqueue", "--queue", ctx.queue, "--chunk-size", 5, ctx.write_jsonl("items.jsonl", items))
    wait_until(lambda: ctx.xlen() >= 300, 60, lambda: f"300 results (have {ctx.xlen()})")
    elapsed = time.monotonic() - t0
    # 300 calls at 60/s (burst 6) across the three: at least ~4.9 s, never three times the limit.
    check(elapsed >= 4.0, f"300 calls at a shared 60/s took only {elapsed:.2f}s: the limit is not shared")
    done = []
    for port in ports:
        status, text = get(port, "/metrics")
        check(status == 200, f"/metrics answered {status}")
        done.append(_metric(text, 'chunkd_items_total{[^}]*outcome="ok"[^}]*}') or 0)
        check(_metric(text, "chunkd_rate_limit_current") == 60, "chunkd_rate_limit_current is not 60")
        check((_metric(text, "chunkd_rate_tokens_leased_total") or 0) > 0, "no tokens leased")
    check(all(n > 0 for n in done) and sum(done) == 300, f"items per worker {done}: every worker gets work")
    _collect(ctx, [it["id"] for it in items], "results")


def test_429_lowers_the_shared_rate_and_pauses(ctx):
    # Every other item of the first 300 is answered 429 with Retry-After: 2 once, at 200/s: the queue's first
    # window is a warm-up, the second one's 429 share is far over the threshold, so the shared rate is cut
    # (200/s -> 140/s) and everyone pauses until that window's first 429 deadline, about 2 s after it.
    items = []
    for i in range(400):
        throttled = i < 300 and i % 2
        q = {"fail_times": 1, "fail_status": 429, "retry_after": 2, "key": f"{ctx.queue}-{i}"} if throttled else {}
        items.append({"id": i, "path": f"/{ctx.queue}/t", **({"query": q} if q else {})})
    path = ctx.write_jsonl("items.jsonl", items)
    run, port = ctx.spawn_http("run", "--queue", ctx.queue, "--handler", "http", "--base-url", ctx.mock.url,
                               "--rate-limit", "200/s", "--out", ctx.path("out.jsonl"), path)

    def current():
        status, text = get(port, "/metrics")
        return _metric(text, "chunkd_rate_limit_current") if status == 200 else None
    wait_until(lambda: (current() or 200) <= 140, 15, lambda: f"the rate gauge at 140 (is {current()}; "
                                                              f"{run.describe()})")
    run.wait(60, expect_rc=0)
    results = read_jsonl(ctx.path("out.jsonl"))
    assert_exactly_once(results, [it["id"] for it in items], "run output")
    check(all(r.get("ok") for r in results), "an item failed")
    check(ctx.mock.count(f"/{ctx.queue}/t") == 550, "the throttled items were not called exactly twice")
    m = re.search(r"answered 429 in the last [0-9.]+ s: shared rate 200\.00/s -> 140\.00/s, paused for (\d+) ms",
                  run.stderr())
    check(m, lambda: f"the cut was not logged: {one_line(run.stderr(), 600)}")
    check(500 <= int(m.group(1)) <= 2000, f"the pause lasts until the window's first Retry-After deadline, up to "
                                          f"2 s: {m.group(0)}")


def test_max_inflight_global_caps_concurrent_calls(ctx):
    workers = [_worker(ctx, f"w{i}", "--max-inflight-global", 4, "--concurrency", 20) for i in range(2)]
    items = _items(ctx, 40, query={"delay_ms": 150})
    ctx.run("enqueue", "--queue", ctx.queue, "--chunk-size", 5, ctx.write_jsonl("items.jsonl", items))
    wait_until(lambda: ctx.xlen() >= 40, 60, lambda: f"40 results (have {ctx.xlen()}; "
                                                     f"{'; '.join(w.describe() for w in workers)})")
    peak = ctx.mock.counts()["max_inflight"]
    check(1 <= peak <= 4, f"the mock saw {peak} calls at once; the cap is 4")
    _collect(ctx, [it["id"] for it in items], "results")
    for w in workers:
        w.send(15)
    for w in workers:
        w.wait(20, expect_rc=0)
    check(ctx.r.hgetall(ctx.key("inflight")) == {}, "slots left in the inflight hash after clean exits")


def test_dead_workers_slots_return_when_its_lease_expires(ctx):
    items = _items(ctx, 6, query={"delay_ms": 2000})
    ctx.run("enqueue", "--queue", ctx.queue, "--chunk-size", 3, ctx.write_jsonl("items.jsonl", items))
    victim = _worker(ctx, "victim", "--max-inflight-global", 3, "--concurrency", 3, "--lease-ms", 1000)
    wait_until(lambda: ctx.r.execute("HGET", ctx.key("inflight"), "victim") == "3", 15,
               lambda: f"the victim holding 3 slots ({victim.describe()})")
    victim.kill()
    rescuer = _worker(ctx, "rescuer", "--max-inflight-global", 3, "--concurrency", 10, "--lease-ms", 1000,
                      "--exit-when-empty")
    wait_until(lambda: ctx.r.execute("HGET", ctx.key("inflight"), "victim") is None, 15,
               lambda: f"the victim's slots returned ({ctx.r.hgetall(ctx.key('inflight'))}; {rescuer.describe()})")
    rescuer.wait(60, expect_rc=0)
    check("reaped worker victim" in rescuer.stderr(), "the rescuer did not log the reaping")
    _collect(ctx, [it["id"] for it in items], "results")
    check(ctx.r.hgetall(ctx.key("inflight")) == {}, "slots left after the rescuer's clean exit")
