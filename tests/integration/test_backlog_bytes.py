"""The results backlog bounded in bytes (issue 19): with no collector, workers stop fetching once the result lines in
the results stream take more than --max-results-backlog-bytes (by default half of Redis's maxmemory), so Redis's
memory stays bounded whatever the size of the results; /readyz, status and the gauges say so; a collector started
later drains the stream and the workers finish, every id once."""

import re

from harness import assert_exactly_once, check, http_get, read_jsonl, wait_until

MIB = 1 << 20
BODY = 100_000  # bytes of each mock response body, kept whole in the item's result line


def _info(client, field):
    m = re.search(rf"^{field}:(\d+)", client.execute("INFO", "memory"), re.M)
    return int(m.group(1))


def _metric(text, name):
    m = re.search(rf"^{name}(?:{{[^}}]*}})? ([0-9.e+-]+)$", text, re.M)
    return float(m.group(1)) if m else None


def _stream_bytes(client, key):
    """Bytes of the stream's entries (field b: one commit's lines), as commit.lua counts them."""
    return sum(len((fields.get("b") or fields["r"]).encode("utf-8", "surrogateescape"))
               for _, fields in client.xrange_all(key))


def _items(ctx, n):
    return [{"id": i, "path": f"/{ctx.queue}/r{i}", "query": {"body_bytes": BODY}} for i in range(n)]


def test_maxmemory_bounds_the_results_backlog(ctx):
    """A Redis with --maxmemory 64mb (noeviction), results of about 100 KB, 1,000 items (about 100 MB of results)
    and no collector: the worker pauses at half of maxmemory (32 MiB of result lines) and Redis's used_memory stays
    under that plus a stated margin: the results of what the worker held when it paused (at most 2 x --concurrency
    items, and a chunk more: 2.6 MB here) and
    Redis's own overhead (an empty server's used_memory, stream nodes, script buffers: 8 MiB is plenty). No
    command is refused OOM. The byte count in the stats hash equals the lines in the stream. /readyz, status and
    the gauges say why fetching waits; a collector started later drains the stream, the worker resumes and
    finishes, every id once, and the count is back at 0."""
    maxmemory = 64 * MIB
    cap = maxmemory // 2
    concurrency = 8
    server = ctx.start_redis(extra_args=("--maxmemory", str(maxmemory), "--maxmemory-policy", "noeviction"))
    r = server.client()
    results_key = ctx.key("results")
    items = _items(ctx, 1000)
    ctx.run("enqueue", "--queue", ctx.queue, "--chunk-size", 10, ctx.write_jsonl("items.jsonl", items),
            url=server.url())
    worker, port = ctx.spawn_http("worker", "--queue", ctx.queue, "--handler", "http", "--base-url", ctx.mock.url,
                                  "--concurrency", concurrency, "--max-result-bytes", 2 * BODY, "--exit-when-empty",
                                  url=server.url(), name="worker")
    peak = [0]

    def paused_or_full():
        peak[0] = max(peak[0], _info(r, "used_memory"))
        return "fetching paused" in worker.stderr() or peak[0] > maxmemory * 0.9 or not worker.alive()

    wait_until(paused_or_full, 120, lambda: f"fetching to pause ({worker.describe()})")
    check("fetching paused" in worker.stderr(),
          f"the worker did not pause: Redis used_memory {peak[0]} of maxmemory {maxmemory} ({worker.describe()})")
    # The chunks held when it paused are committed; then nothing more comes in.
    wait_until(lambda: sum(r.execute("LLEN", k) for k in r.keys(ctx.key("processing:*"))) == 0, 60,
               "the worker to commit what it held")
    held_bytes = int(r.execute("HGET", ctx.key("stats"), "results_bytes") or 0)
    # What it held: 2 x --concurrency items and a chunk more; a line is the body and about 200 bytes.
    window = (2 * concurrency + 10) * (BODY + 1000)
    check(cap < held_bytes <= cap + window,
          f"results_bytes {held_bytes}: not over the cap {cap} by at most one window ({window})")
    check(held_bytes == _stream_bytes(r, results_key),
          f"results_bytes {held_bytes} but the stream's lines take {_stream_bytes(r, results_key)} bytes")
    used = _info(r, "used_memory")
    peak[0] = max(peak[0], used)
    check(peak[0] < cap + window + 8 * MIB,
          f"Redis used_memory peaked at {peak[0]}: over the cap {cap} + one window {window} + 8 MiB")
    check("OOM" not in worker.stderr(), f"Redis refused a command OOM: {worker.describe()}")
    check(r.execute("LLEN", ctx.key("pending")) > 0 and worker.alive(), "the worker did not wait with work pending")

    status, body = http_get(port, "/readyz")
    check(status == 503 and "results backlog full" in body and "maxmemory" in body,
          f"/readyz while paused: {status} {body!r}")
    _, metrics = http_get(port, "/metrics")
    wait_until(lambda: _metric(http_get(port, "/metrics")[1], "chunkd_fetch_paused") == 1, 15,
               lambda: f"chunkd_fetch_paused 1 ({metrics[-300:]!r})")
    # The gauge is what the fetch thread's last backlog check saw: polled, as it may predate the last commits (CI
    # under ASan read it one check early).
    def gauge():
        return _metric(http_get(port, "/metrics")[1], "chunkd_results_backlog_bytes")

    wait_until(lambda: gauge() == held_bytes, 15,
               lambda: f"chunkd_results_backlog_bytes {gauge()}, expected {held_bytes}")
    _, metrics = http_get(port, "/metrics")
    check(_metric(metrics, "chunkd_results_backlog_bytes_cap") == cap,
          f"chunkd_results_backlog_bytes_cap {_metric(metrics, 'chunkd_results_backlog_bytes_cap')}, expected {cap}")
    st = ctx.status_json(url=server.url())
    check(st["results_backlog_bytes"] == held_bytes and st["results_backlog_bytes_cap"] == cap
          and st["fetch_paused"] is True and "results backlog full" in st.get("fetch_paused_why", ""),
          f"status --json while paused: {st}")
    text = ctx.run("status", "--queue", ctx.queue, url=server.url()).stdout()
    check("workers pause fetching: results backlog full" in text, f"status while paused: {text!r}")

    out = ctx.path("results.jsonl")
    ctx.run("collect", "--queue", ctx.queue, "--out", out, "--until-done", timeout=180, url=server.url())
    worker.wait(60, expect_rc=0)
    check("fetching resumed" in worker.stderr(), "no log line when fetching resumed")
    check("OOM" not in worker.stderr(), f"Redis refused a command OOM: {worker.describe()}")
    results = read_jsonl(out)
    assert_exactly_once(results, [it["id"] for it in items], "results with a byte cap on the backlog")
    check(all(x.get("ok") is True for x in results), "an item failed")
    check(int(r.execute("HGET", ctx.key("stats"), "results_bytes") or 0) == 0,
          f"results_bytes is {r.execute('HGET', ctx.key('stats'), 'results_bytes')} with the stream collected")
    r.close()


def test_explicit_cap_and_a_result_written_twice(ctx):
    """--max-results-backlog-bytes on a Redis without maxmemory: the worker pauses over it (by at most the results of
    what it held: 2 x --concurrency items and a chunk more, as above) and /readyz names the
    flag; status says workers pause only when given the same cap (its default for this Redis is 1 GiB). An item
    that failed, was requeued and succeeded has two lines in the stream: both are counted, and collecting both
    takes the count back to 0 exactly."""
    body, cap, concurrency = 20_000, 300_000, 2
    items = [{"id": i, "path": f"/{ctx.queue}/e{i}", "query": {"body_bytes": body}} for i in range(60)]
    flaky = [{"id": f"f{i}", "path": f"/{ctx.queue}/f{i}", "query": {"fail_times": 1, "status": 200}}
             for i in range(5)]
    ctx.run("enqueue", "--queue", ctx.queue, "--chunk-size", 5, ctx.write_jsonl("items.jsonl", flaky + items))
    args = ["--queue", ctx.queue, "--handler", "http", "--base-url", ctx.mock.url, "--concurrency", concurrency,
            "--max-attempts", 1, "--max-results-backlog-bytes", cap, "--exit-when-empty"]
    worker, port = ctx.spawn_http("worker", *args, name="worker")
    wait_until(lambda: "fetching paused" in worker.stderr() or not worker.alive(), 60,
               lambda: f"fetching to pause ({worker.describe()})")
    check(worker.alive(), f"the worker exited instead of pausing: {worker.describe()}")
    wait_until(lambda: ctx.processing_len() == 0, 60, "the worker to commit what it held")
    held = ctx.stat("results_bytes")
    window = (2 * concurrency + 5) * (body + 1000)
    check(cap < held <= cap + window, f"results_bytes {held}: not over {cap} by at most one window ({window})")
    check(held == _stream_bytes(ctx.r, ctx.key("results")),
          f"results_bytes {held} but the stream's lines take {_stream_bytes(ctx.r, ctx.key('results'))} bytes")
    status, text = http_get(port, "/readyz")
    check(status == 503 and "--max-results-backlog-bytes" in text, f"/readyz while paused: {status} {text!r}")
    st = ctx.status_json()
    check(st["fetch_paused"] is False and st["results_backlog_bytes_cap"] == 1 << 30 and st["redis_maxmemory"] == 0,
          f"status with its default cap (Redis without maxmemory): {st}")
    st = ctx.status_json(env={"CHUNKD_MAX_RESULTS_BACKLOG_BYTES": str(cap)})
    check(st["fetch_paused"] is True and st["results_backlog_bytes"] == held,
          f"status with CHUNKD_MAX_RESULTS_BACKLOG_BYTES={cap}: {st}")

    out = ctx.path("results.jsonl")
    ctx.run("collect", "--queue", ctx.queue, "--out", out, "--until-done", timeout=120, expect_rc=4)  # 5 failed
    worker.wait(60, expect_rc=0)
    check(ctx.stat("results_bytes") == 0, f"results_bytes {ctx.stat('results_bytes')} with the stream collected")
    failed = [x["id"] for x in read_jsonl(out) if x.get("ok") is not True]
    check(sorted(failed) == sorted(f["id"] for f in flaky), f"failed ids {failed}, expected the flaky ones")

    # The flaky items again: their second call succeeds; each now has a second result line, counted too.
    ctx.run("requeue", "--queue", ctx.queue)
    ctx.run("worker", *args, timeout=60, name="worker again")
    again = _stream_bytes(ctx.r, ctx.key("results"))
    check(ctx.xlen() == len(flaky) and ctx.stat("results_bytes") == again,
          f"after the requeue: {ctx.xlen()} entries, results_bytes {ctx.stat('results_bytes')}, lines {again} bytes")
    out2 = ctx.path("results2.jsonl")
    ctx.run("collect", "--queue", ctx.queue, "--out", out2, "--until-done", timeout=60)
    check(all(x.get("ok") is True for x in read_jsonl(out2)), "a requeued item failed again")
    check(ctx.stat("results_bytes") == 0, f"results_bytes {ctx.stat('results_bytes')} with the stream collected")
