"""Queues a user can manage (issue 16): chunkd queues, purge, delete, pause and resume; status on a queue that does
not exist, with units, counting requeued successes, --watch ending when the queue is done; ids that repeat or are
not integers."""

import json
import time

from harness import assert_exactly_once, check, read_jsonl, wait_until
from test_metrics import get as _get

EXIT_NO_QUEUE = 5


def _enqueue(ctx, n, queue=None, chunk_size=10, sleep_ms=0, name="items.jsonl"):
    path = ctx.write_jsonl(name, [{"id": i, "sleep_ms": sleep_ms} for i in range(n)])
    return ctx.run("enqueue", "--queue", queue or ctx.queue, "--chunk-size", chunk_size, path)


def test_status_on_a_queue_that_does_not_exist_warns_and_fails(ctx):
    """A typo'd queue name: status warns and exits 5 (it showed zeros and exited 0); collect --until-done fails
    fast with the same warning instead of waiting forever."""
    _enqueue(ctx, 5)
    typo = ctx.queue + "-typo"
    proc = ctx.run("status", "--queue", typo, expect_rc=EXIT_NO_QUEUE)
    check(f"queue {typo} does not exist" in proc.stderr(), f"no warning: {proc.describe()}")
    proc = ctx.run("collect", "--queue", typo, "--out", ctx.path("out.jsonl"), "--until-done", timeout=15,
                   expect_rc=EXIT_NO_QUEUE)
    check(f"queue {typo} does not exist" in proc.stderr(), f"no warning: {proc.describe()}")
    ctx.run("status", "--queue", ctx.queue)  # the real one exists


def test_status_shows_units_and_watch_ends_when_done(ctx):
    _enqueue(ctx, 30, chunk_size=10)
    text = ctx.run("status", "--queue", ctx.queue).stdout()
    check("pending          3 chunks" in text and "enqueued         30 items" in text, f"status text: {text!r}")
    ctx.run("worker", "--queue", ctx.queue, "--handler", "echo", "--exit-when-empty", timeout=30)
    # Done: --watch prints once and exits 0 instead of watching forever.
    proc = ctx.run("status", "--queue", ctx.queue, "--watch", "--interval-ms", 100, timeout=20)
    check("is done" in proc.stderr(), f"status --watch: {proc.describe()}")


def test_status_counts_requeued_successes(ctx):
    """Items that failed (a timeout), were requeued and then succeeded are no longer counted as failed."""
    _enqueue(ctx, 20, chunk_size=5, sleep_ms=1000)
    ctx.run("worker", "--queue", ctx.queue, "--handler", "sleep", "--item-timeout-ms", 50, "--exit-when-empty",
            timeout=30)
    st = ctx.status_json()
    check(st["failed"] == 20 and st["failed_left"] == 20, f"after the timeouts: {st}")
    ctx.run("requeue", "--queue", ctx.queue)
    ctx.run("worker", "--queue", ctx.queue, "--handler", "sleep", "--exit-when-empty", timeout=60)
    st = ctx.status_json()
    check(st["done"] == 20 and st["failed_left"] == 0, f"after the requeued items succeeded: {st}")
    text = ctx.run("status", "--queue", ctx.queue).stdout()
    check("failed_left      0 items" in text, f"status text: {text!r}")


def test_pause_stops_fetching_and_resume_continues(ctx):
    """A paused queue: the worker finishes what it holds, takes no new chunk (pending unchanged), /readyz says
    503 "queue paused" and status says paused; resume and it takes the rest."""
    _enqueue(ctx, 40, chunk_size=2, sleep_ms=200)
    worker, port = ctx.spawn_http("worker", "--queue", ctx.queue, "--handler", "sleep", "--concurrency", 4,
                                  "--exit-when-empty")
    wait_until(lambda: ctx.stat("done") > 0, 30, lambda: f"some items done ({worker.describe()})")
    ctx.run("pause", "--queue", ctx.queue)
    wait_until(lambda: _get(port, "/readyz") == (503, "queue paused\n"), 30,
               lambda: f"/readyz 503 queue paused ({_get(port, '/readyz')})")
    wait_until(lambda: ctx.status_json()["processing"] == 0, 30,
               lambda: f"held items finished ({ctx.status_json()})")
    pending = ctx.llen("pending")
    check(pending > 0, "the test needs chunks left in pending")
    st = ctx.status_json()
    check(st["paused"] is True, f"status --json: {st}")
    check("(paused)" in ctx.run("status", "--queue", ctx.queue).stdout(), "status text does not say paused")
    # Several fetch intervals later, nothing moved.
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        check(ctx.llen("pending") == pending and worker.alive(), f"pending changed while paused: {worker.describe()}")
        time.sleep(0.1)
    ctx.run("resume", "--queue", ctx.queue)
    worker.wait(60, expect_rc=0)
    check(ctx.stat("done") == 40 and ctx.llen("pending") == 0, f"after resume: {ctx.stats()}")
    check(ctx.status_json()["paused"] is False, "still paused")


def test_purge_and_delete_need_yes(ctx):
    _enqueue(ctx, 30, chunk_size=10)
    proc = ctx.run("purge", "--queue", ctx.queue, expect_rc=2)
    check("would remove the 3 pending chunks" in proc.stderr() and "--yes" in proc.stderr(), proc.describe())
    check(ctx.llen("pending") == 3, "purge without --yes removed something")
    ctx.run("purge", "--queue", ctx.queue, "--yes")
    st = ctx.status_json()
    check(st["pending"] == 0 and st["enqueued"] == 0 and st["purged"] == 30, f"after purge: {st}")

    _enqueue(ctx, 10, chunk_size=10, name="more.jsonl")
    ctx.run("pause", "--queue", ctx.queue)  # the worker registers but takes nothing
    worker = ctx.spawn("worker", "--queue", ctx.queue, "--handler", "echo")
    wait_until(lambda: ctx.r.execute("SCARD", ctx.key("workers")) == 1, 30, lambda: worker.describe())
    proc = ctx.run("delete", "--queue", ctx.queue, "--yes", expect_rc=2)
    check("registered workers" in proc.stderr(), proc.describe())
    proc = ctx.run("delete", "--queue", ctx.queue, "--force", expect_rc=2)
    check("would remove every key" in proc.stderr(), proc.describe())
    check(ctx.llen("pending") == 1, "delete without --yes removed something")
    worker.send(15)
    worker.wait(30, expect_rc=0)
    ctx.run("delete", "--queue", ctx.queue, "--yes")
    left = ctx.r.execute("SCAN", "0", "MATCH", ctx.key("*"), "COUNT", "100000")[1]
    check(left == [], f"keys left: {left}")
    ctx.run("status", "--queue", ctx.queue, expect_rc=EXIT_NO_QUEUE)


def test_queues_lists_every_queue_with_counts(ctx):
    q1, q2 = ctx.queue + "-a", ctx.queue + "-b"
    _enqueue(ctx, 10, queue=q1, chunk_size=5)
    _enqueue(ctx, 20, queue=q2, chunk_size=5)
    ctx.run("pause", "--queue", q2)
    rows = {o["queue"]: o for o in (json.loads(line) for line in ctx.run("queues", "--json").stdout().splitlines())}
    check(q1 in rows and q2 in rows, f"queues --json: {list(rows)}")
    check(rows[q1]["enqueued"] == 10 and rows[q1]["pending"] == 2 and not rows[q1]["paused"], f"{rows[q1]}")
    check(rows[q2]["enqueued"] == 20 and rows[q2]["pending"] == 4 and rows[q2]["paused"], f"{rows[q2]}")
    text = ctx.run("queues").stdout()
    line = next((x for x in text.splitlines() if x.startswith(q2 + " ")), "")
    check(line.split()[1:4] == ["4", "0", "20"] and line.endswith("paused"), f"queues text: {text!r}")


def test_enqueue_warns_about_repeated_ids(ctx):
    """Ids repeated within one input, and ids enqueued again into a queue with finished items, share an
    Idempotency-Key: both are warned about (the items still go)."""
    path = ctx.write_jsonl("dups.jsonl", [{"id": i} for i in (1, 2, 1, 3, 2, "a", "a")])
    proc = ctx.run("enqueue", "--queue", ctx.queue, path)
    check("3 items repeat the id of an earlier line" in proc.stderr(), proc.describe())
    check(ctx.stat("enqueued") == 7, "repeated ids are still enqueued")
    ctx.run("worker", "--queue", ctx.queue, "--handler", "echo", "--exit-when-empty", timeout=30)
    proc = ctx.run("enqueue", "--queue", ctx.queue, ctx.write_jsonl("again.jsonl", [{"id": 1}]))
    check("already has 7 finished items" in proc.stderr(), proc.describe())
    fresh = ctx.run("enqueue", "--queue", ctx.queue + "-fresh", ctx.write_jsonl("fresh.jsonl", [{"id": 1}, {"id": 2}]))
    check("repeat the id" not in fresh.stderr() and "already has" not in fresh.stderr(), fresh.describe())


def test_enqueue_rejects_an_id_that_is_not_an_integer(ctx):
    path = ctx.write_jsonl("items.jsonl", ['{"id":1}', '{"id":1.5}', '{"id":2}'])
    proc = ctx.run("enqueue", "--queue", ctx.queue, path, expect_rc=3)
    check("line 2 rejected" in proc.stderr() and "not an integer" in proc.stderr(), proc.describe())
    rejects = read_jsonl(str(path) + ".rejected")
    check(len(rejects) == 1 and rejects[0]["line"] == 2 and "1.5" in rejects[0]["error"], f"rejects: {rejects}")
    check(ctx.stat("enqueued") == 2, "the good lines still go")


def test_run_resume_after_an_interrupted_run_gives_every_id_once(ctx):
    """run --queue Q --out F, interrupted (SIGINT) part-way; run --resume --queue Q --out F skips the ids already in
    F, appends the rest: every id exactly once. A torn last line is cut (its item runs again)."""
    n = 300
    items = ctx.write_jsonl("items.jsonl", [{"id": i, "sleep_ms": 20} for i in range(n)])
    out = ctx.path("results.jsonl")
    first = ctx.spawn("run", "--queue", ctx.queue, "--handler", "sleep", "--concurrency", 10, "--chunk-size", 5,
                      "--out", out, items, redis=None)
    wait_until(lambda: out.exists() and len(out.read_bytes().splitlines()) >= 40 or not first.alive(), 60,
               lambda: f"the first run to write 40 results ({first.describe()})")
    first.send(2)
    first.wait(30)
    written = read_jsonl(out)
    check(0 < len(written) < n, f"the first run wrote {len(written)} of {n}: not an interrupted run")
    with open(out, "ab") as f:
        f.write(b'{"id":299,"ok":tr')  # a line torn by a crash
    proc = ctx.run("run", "--resume", "--queue", ctx.queue, "--handler", "sleep", "--concurrency", 50,
                   "--chunk-size", 5, "--out", out, items, redis=None, timeout=60)
    check(f"{len(written)} items skipped" in proc.stderr() and "unfinished line" in proc.stderr(), proc.stderr())
    assert_exactly_once(read_jsonl(out), list(range(n)), "results after --resume")
    # On a shared Redis, a queue still holding the interrupted run's work is refused (it would run twice).
    shared = ctx.queue + "-shared"
    _enqueue(ctx, 10, queue=shared)
    proc = ctx.run("run", "--resume", "--queue", shared, "--handler", "sleep", "--out", ctx.path("x.jsonl"), items,
                   expect_rc=2)
    check("still holds work of the interrupted run (1 pending" in proc.stderr(), proc.describe())
