"""End-to-end runs: enqueue | worker | collect, --exit-when-empty, and `chunkd run`."""

import json
import os
import signal

from harness import (assert_exactly_once, check, id_key, parse_jsonl, read_jsonl, redis_servers_tagged,
                     wait_until)


def check_results_match(results, items_by_id):
    for r in results:
        item = items_by_id[id_key(r["id"])]
        check(r.get("ok") is True, f"id {r['id']}: expected ok=true, got {r}")
        check(r.get("result") == item, f"id {r['id']}: result {r.get('result')!r} != item {item!r}")


def test_two_workers_20k_items(ctx):
    n = 20000
    items = [{"id": f"it-{i:05d}", "sleep_ms": 5 + i % 4, "n": i} for i in range(n)]
    path = ctx.write_jsonl("items.jsonl", items)
    ctx.run("enqueue", "--queue", ctx.queue, "--chunk-size", 100, path, redis="flag", timeout=60)
    stats = ctx.stats()
    check(stats.get("enqueued") == n, f"stats enqueued={stats.get('enqueued')}, expected {n}")
    check(stats.get("enqueued_chunks") == 200, f"stats enqueued_chunks={stats.get('enqueued_chunks')}, expected 200")
    check(ctx.llen("pending") == 200, f"pending has {ctx.llen('pending')} chunks, expected 200")

    workers = [ctx.spawn("worker", "--queue", ctx.queue, "--handler", "sleep", "--concurrency", 500,
                         "--threads", 2, redis="env", name=f"worker {i}") for i in (1, 2)]
    out = ctx.path("results.jsonl")
    collector = ctx.spawn("collect", "--queue", ctx.queue, "--out", out, "--until-done", redis="flag")
    collector.wait(120, expect_rc=0)

    results = read_jsonl(out)
    assert_exactly_once(results, [it["id"] for it in items], "collect output")
    check_results_match(results, {id_key(it["id"]): it for it in items})
    for w in workers:
        check(w.alive(), f"worker died during the run: {w.describe()}")
    check(ctx.r.execute("SCARD", ctx.key("workers")) >= 2, "chunkd:{Q}:workers has fewer than 2 worker ids")

    status = ctx.status_json()
    expected = {"pending": 0, "enqueued": n, "done": n, "failed": 0, "dead": 0, "collected": n}
    got = {k: status.get(k) for k in expected}
    check(got == expected, f"status --json: expected {expected}, got {got}")

    for w in workers:
        w.send(signal.SIGTERM)
    for w in workers:
        w.wait(20, expect_rc=0)
    check(ctx.processing_len() == 0, f"processing lists not empty after shutdown: {ctx.processing_keys()}")


def test_exit_when_empty(ctx):
    # 600 items in chunks of 50, more than --concurrency, so the worker must fetch again;
    # the last chunk is slow so it is still in flight when pending becomes empty.
    n = 600
    items = [{"sleep_ms": 300 if i > 550 else 10, "k": i} for i in range(1, n + 1)]
    path = ctx.write_jsonl("items.jsonl", items)
    ctx.run("enqueue", "--queue", ctx.queue, "--chunk-size", 50, path)
    worker = ctx.spawn("worker", "--queue", ctx.queue, "--handler", "sleep", "--concurrency", 100,
                       "--exit-when-empty", redis="flag")
    worker.wait(60, expect_rc=0)

    check(ctx.llen("pending") == 0, f"pending not empty after --exit-when-empty: {ctx.llen('pending')} chunks")
    check(ctx.processing_len() == 0, f"processing not empty: {ctx.processing_keys()}")
    results = ctx.stream_results()
    assert_exactly_once(results, range(1, n + 1), "results stream")
    check(ctx.stat("done") == n, f"stats done={ctx.stat('done')}, expected {n}")

    # On an empty sealed queue it exits promptly too (an open one is waited for: test_seal.py).
    ctx.run("seal", "--queue", ctx.queue + "-empty")
    idle = ctx.spawn("worker", "--queue", ctx.queue + "-empty", "--handler", "echo", "--exit-when-empty")
    idle.wait(10, expect_rc=0)


def test_run_private_redis_stdin(ctx):
    n = 300
    items = [{"id": i * 10, "sleep_ms": 10} if i % 3 else {"id": f"s{i}", "sleep_ms": 5} for i in range(n)]
    path = ctx.write_jsonl("items.jsonl", items)
    tmpdir = ctx.short_tmpdir()  # the private server's socket dir goes here (see run_interrupted_cleans_up)

    proc = ctx.run("run", "--handler", "sleep", "--concurrency", 1000, "-", stdin=path, redis=None,
                   env={"TMPDIR": str(tmpdir)}, timeout=60)
    results = parse_jsonl(proc.stdout(), "run stdout")
    assert_exactly_once(results, [it["id"] for it in items], "run stdout")
    check_results_match(results, {id_key(it["id"]): it for it in items})

    wait_until(lambda: not redis_servers_tagged(str(tmpdir)), 5,
               lambda: f"the private redis-server to exit (still running: pids {redis_servers_tagged(str(tmpdir))})")
    left = os.listdir(tmpdir)
    check(not left, f"temp files left in $TMPDIR after run: {left}")


def test_run_redis_url_file_out(ctx):
    n = 500
    items = [{"id": i, "payload": "x" * (i % 50)} for i in range(1, n + 1)]
    path = ctx.write_jsonl("items.jsonl", items)
    out = ctx.path("out.jsonl")
    proc = ctx.run("run", "--queue", ctx.queue, "--handler", "echo", "--out", out, path, redis="env", timeout=60)
    check(proc.stdout().strip() == "", f"run --out also wrote to stdout: {proc.stdout()[:200]!r}")
    results = read_jsonl(out)
    assert_exactly_once(results, range(1, n + 1), "run --out")
    check_results_match(results, {id_key(it["id"]): it for it in items})
    # It really used $REDIS_URL: the queue lives in our server.
    stats = ctx.stats()
    check(stats.get("enqueued") == n and stats.get("collected") == n,
          f"stats in $REDIS_URL server: {stats} (expected enqueued={n}, collected={n})")


def test_run_rejects_exit_3(ctx):
    lines = ['{"id":"a"}', "{broken", '{"id":"b"}']
    proc = ctx.run("run", "--queue", ctx.queue, "--handler", "echo", "-", stdin="\n".join(lines) + "\n",
                   redis="flag", expect_rc=3)
    check("line 2" in proc.stderr(), f"stderr does not mention line 2: {proc.stderr()[-300:]!r}")
    results = parse_jsonl(proc.stdout(), "run stdout")
    assert_exactly_once(results, ["a", "b"], "run stdout")
    rejects = ctx.path("chunkd-rejected.jsonl")
    check(rejects.exists(), "stdin input: chunkd-rejected.jsonl not written in the working directory")
    rows = read_jsonl(rejects)
    check([r.get("line") for r in rows] == [2], f"rejects file lines: {rows}")


def test_run_interrupted_cleans_up(ctx):
    # SIGINT (Ctrl-C) during `run` with a private redis-server: it stops and removes the server and temp dir.
    items = [{"id": i, "sleep_ms": 5000} for i in range(50)]
    path = ctx.write_jsonl("items.jsonl", items)
    tmpdir = ctx.short_tmpdir()
    proc = ctx.spawn("run", "--drain-timeout-ms", 200, path, redis=None, env={"TMPDIR": str(tmpdir)})
    wait_until(lambda: redis_servers_tagged(str(tmpdir)) or not proc.alive(), 15,
               lambda: f"a private redis-server with its socket under $TMPDIR={tmpdir} ({proc.describe()})")
    check(proc.alive(), f"no private redis-server seen under $TMPDIR={tmpdir} while `run` ran: {proc.describe()}")
    proc.send(signal.SIGINT)
    proc.wait(15)
    wait_until(lambda: not redis_servers_tagged(str(tmpdir)), 5,
               lambda: f"the private redis-server to exit after SIGINT (pids {redis_servers_tagged(str(tmpdir))})")
    left = os.listdir(tmpdir)
    check(not left, f"temp files left in $TMPDIR after SIGINT: {left}")
