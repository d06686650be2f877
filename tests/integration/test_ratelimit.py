"""The queue-wide limits (src/ratelimit.h): --rate-limit shared by workers, adaptive to 429 with Retry-After,
--max-inflight-global, a dead worker's slots returned by the reaper; and ratelimit.lua's arithmetic called
directly (bucket, halving, floor, recovery, slots).

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


def test_script_bucket_halving_floor_and_recovery(ctx):
    granted, wait, rate, paused = _lua(ctx, "take", 100, 5, 8)
    check((granted, wait, rate, paused) == (5, 0, 100000, 0),
          f"a fresh bucket grants its burst (5 of 8 wanted): {[granted, wait, rate, paused]}")
    for n in range(1, 5):  # an empty bucket reserves ahead, up to 200 ms of the rate (20 tokens)
        granted, wait, _, _ = _lua(ctx, "take", 100, 5, 5)
        check(granted == 5 and 50 * n - 30 <= wait <= 50 * n,
              f"reservation {n}: 5 tokens at 100/s usable after ~{50 * n} ms: {[granted, wait]}")
    granted, wait, _, _ = _lua(ctx, "take", 100, 5, 5)
    check(granted == 0 and 20 <= wait <= 50, f"no more than 200 ms ahead: ask again in ~50 ms: {[granted, wait]}")
    ctx.r.execute("DEL", ctx.key("rate"))
    ctx.r.execute("SADD", ctx.key("workers"), *[f"w{i}" for i in range(10)])
    granted, _, _, _ = _lua(ctx, "take", 1000, 500, 500)
    check(granted == 10, f"a block is at most 100 ms of the rate over the 10 workers (10 at 1000/s): {granted}")
    ctx.r.execute("DEL", ctx.key("rate"), ctx.key("workers"))
    _lua(ctx, "take", 100, 5, 1)
    _, _, rate, paused = _lua(ctx, "throttle", 100, 5, 1000)
    check(rate == 50000 and 900 <= paused <= 1000, f"a throttle halves the rate and pauses: {[rate, paused]}")
    granted, wait, _, paused = _lua(ctx, "take", 100, 5, 1)
    check(granted == 0 and paused > 0 and wait == paused, f"nothing is granted while paused: {[granted, wait]}")
    _, _, rate, _ = _lua(ctx, "throttle", 100, 5, -1)
    check(rate == 50000, f"a second throttle within a second does not cut again: {rate}")
    for expected in (25000, 12500, 6250, 5000, 5000):  # the floor is 5 % of the limit
        ctx.r.execute("HSET", ctx.key("rate"), "cut_at", 0)
        _, _, rate, _ = _lua(ctx, "throttle", 100, 5, -1)
        check(rate == expected, f"halving down to the floor: expected {expected}, got {rate}")
    # Recovery: 5 % of the limit per second since the later of the last change and the end of the pause.
    t = ctx.r.execute("TIME")
    now = int(t[0]) * 1000 + int(t[1]) // 1000
    ctx.r.execute("HSET", ctx.key("rate"), "rate_ts", now - 2000, "paused_until", 0)
    _, _, rate, _ = _lua(ctx, "take", 100, 5, 1)
    check(15000 <= rate <= 16000, f"2 s of recovery from 5/s: expected ~15/s, got {rate / 1000}/s")
    ctx.r.execute("HSET", ctx.key("rate"), "rate_ts", now - 60000)
    _, _, rate, _ = _lua(ctx, "take", 100, 5, 1)
    check(rate == 100000, f"recovery stops at the limit: {rate}")


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
    # The first item is answered 429 with Retry-After: 2 once; the other 99 at 200/s would take half a second.
    first = {"id": 0, "path": f"/{ctx.queue}/t",
             "query": {"fail_times": 1, "fail_status": 429, "retry_after": 2, "key": f"{ctx.queue}-0"}}
    items = [first] + _items(ctx, 99, start=1)
    path = ctx.write_jsonl("items.jsonl", items)
    t0 = time.monotonic()
    run, port = ctx.spawn_http("run", "--queue", ctx.queue, "--handler", "http", "--base-url", ctx.mock.url,
                               "--rate-limit", "200/s", "--out", ctx.path("out.jsonl"), path)

    def current():
        status, text = get(port, "/metrics")
        return _metric(text, "chunkd_rate_limit_current") if status == 200 else None
    wait_until(lambda: (current() or 200) <= 100, 15, lambda: f"the rate gauge at 100 (is {current()}; "
                                                              f"{run.describe()})")
    run.wait(60, expect_rc=0)
    elapsed = time.monotonic() - t0
    results = read_jsonl(ctx.path("out.jsonl"))
    assert_exactly_once(results, [it["id"] for it in items], "run output")
    check(all(r.get("ok") for r in results), "an item failed")
    check(ctx.mock.count(f"/{ctx.queue}/t") == 2, "the throttled item was not called exactly twice")
    check(elapsed >= 1.8, f"everyone should have paused for the 2 s of Retry-After; the run took {elapsed:.2f}s")
    h = ctx.r.hgetall(ctx.key("rate"))
    check(100 <= float(h["rate"]) < 200, f"the shared rate should be recovering from 100/s: {h}")
    check("Retry-After 2000 ms" in run.stderr(), "the throttle was not logged")


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
