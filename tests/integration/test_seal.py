"""Batches that end right (issue 18): a queue has an end. `enqueue` seals it when its input ends (`--no-seal` keeps
it open, `chunkd seal` closes it later); `worker --exit-when-empty` and `collect --until-done` wait for a sealed,
finished queue; enqueue adds to a sealed queue, or with `--no-reopen` refuses it; status shows "sealed, N items" or
"open"."""

from harness import assert_exactly_once, check, read_jsonl, wait_until

EXIT_USAGE = 2
WAITING = "not sealed"  # the worker's and the collector's one log line while the queue is open


def _items(ctx, name, ids, sleep_ms=0):
    return ctx.write_jsonl(name, [{"id": i, "sleep_ms": sleep_ms} for i in ids])


def _waiting(proc):
    """Waits until proc says once that it waits for the seal (or has exited), then checks it is still running."""
    wait_until(lambda: WAITING in proc.stderr() or not proc.alive(), 20,
               lambda: f"`{proc.name}` to say it waits for the seal ({proc.describe()})")
    check(proc.alive(), f"`{proc.name}` did not wait for the queue's input: {proc.describe()}")


def test_worker_started_before_enqueue_waits_then_does_everything(ctx):
    """A work Job that starts before the enqueue Job: the worker with --exit-when-empty waits for the input (it
    exited at once with nothing done), then runs every item and exits 0 once the sealed queue is finished."""
    worker = ctx.spawn("worker", "--queue", ctx.queue, "--handler", "sleep", "--exit-when-empty")
    _waiting(worker)
    n = 200
    ctx.run("enqueue", "--queue", ctx.queue, "--chunk-size", 10, _items(ctx, "items.jsonl", range(n), sleep_ms=5))
    worker.wait(60, expect_rc=0)
    assert_exactly_once(ctx.stream_results(), range(n), "results stream")
    check(ctx.stat("done") == n, f"stats done={ctx.stat('done')}, expected {n}")
    check(ctx.llen("pending") == 0 and ctx.processing_len() == 0, "the queue is not empty at the end")


def test_no_seal_keeps_the_queue_open_until_chunkd_seal(ctx):
    """A pipeline producer: enqueue --no-seal twice; the worker finishes both batches and keeps waiting; status
    says open; `chunkd seal` ends it (exit 0) and status says sealed with the total."""
    ctx.run("enqueue", "--queue", ctx.queue, "--no-seal", _items(ctx, "a.jsonl", range(20)))
    st = ctx.status_json()
    check(st["sealed"] is False and st["total"] is None, f"status --json after --no-seal: {st}")
    text = ctx.run("status", "--queue", ctx.queue).stdout()
    check(text.startswith(f"queue {ctx.queue}: open"), f"status text: {text!r}")
    worker = ctx.spawn("worker", "--queue", ctx.queue, "--handler", "echo", "--exit-when-empty")
    wait_until(lambda: ctx.stat("done") == 20, 30, lambda: f"20 done ({worker.describe()})")
    _waiting(worker)
    ctx.run("enqueue", "--queue", ctx.queue, "--no-seal", _items(ctx, "b.jsonl", range(20, 30)))
    wait_until(lambda: ctx.stat("done") == 30, 30, lambda: f"30 done ({worker.describe()})")
    check(worker.alive(), f"the worker exited while the queue was open: {worker.describe()}")
    proc = ctx.run("seal", "--queue", ctx.queue)
    check("30 items in all" in proc.stderr(), f"seal: {proc.describe()}")
    worker.wait(30, expect_rc=0)
    assert_exactly_once(ctx.stream_results(), range(30), "results stream")
    st = ctx.status_json()
    check(st["sealed"] is True and st["total"] == 30, f"status --json after seal: {st}")
    text = ctx.run("status", "--queue", ctx.queue).stdout()
    check(text.startswith(f"queue {ctx.queue}: sealed, 30 items"), f"status text: {text!r}")
    queues = ctx.run("queues").stdout()
    line = next((x for x in queues.splitlines() if x.startswith(ctx.queue + " ")), "")
    check(line.split()[-1] == "sealed", f"queues text: {queues!r}")


def test_collect_until_done_waits_for_a_queue_sealed_later(ctx):
    """collect --until-done on an open queue whose items are all collected keeps going (it ended as soon as it had
    caught up with what was enqueued so far); once the queue is sealed it exits 0 with every line."""
    ctx.run("enqueue", "--queue", ctx.queue, "--no-seal", _items(ctx, "a.jsonl", range(15)))
    worker = ctx.spawn("worker", "--queue", ctx.queue, "--handler", "echo")
    out = ctx.path("out.jsonl")
    collector = ctx.spawn("collect", "--queue", ctx.queue, "--out", out, "--until-done")
    wait_until(lambda: ctx.stat("collected") == 15, 30, lambda: f"15 collected ({collector.describe()})")
    _waiting(collector)
    ctx.run("enqueue", "--queue", ctx.queue, "--no-seal", _items(ctx, "b.jsonl", range(15, 25)))
    wait_until(lambda: ctx.stat("collected") == 25, 30, lambda: f"25 collected ({collector.describe()})")
    check(collector.alive(), f"collect --until-done ended on an open queue: {collector.describe()}")
    ctx.run("seal", "--queue", ctx.queue)
    collector.wait(30, expect_rc=0)
    assert_exactly_once(read_jsonl(out), range(25), "collect output")
    check(worker.alive(), f"worker died: {worker.describe()}")


def test_enqueue_into_a_sealed_queue_adds_or_is_refused_with_no_reopen(ctx):
    """A whole file seals its queue. Another enqueue adds to it as before (with a warning that it was sealed) and
    seals it again at its end; with --no-reopen (the batch enqueue Job's setting) it is refused: exit 2, naming the
    queue and the flag, and nothing is pushed."""
    ctx.run("enqueue", "--queue", ctx.queue, "--chunk-size", 5, _items(ctx, "a.jsonl", range(10)))
    check(ctx.status_json()["sealed"] is True, "a whole file did not seal its queue")
    proc = ctx.run("enqueue", "--queue", ctx.queue, "--chunk-size", 5, "--no-reopen",
                   _items(ctx, "b.jsonl", range(10, 15)), expect_rc=EXIT_USAGE)
    err = proc.stderr()
    check(f"queue {ctx.queue} is sealed" in err and "--no-reopen" in err, f"refusal: {proc.describe()}")
    check(ctx.stat("enqueued") == 10 and ctx.llen("pending") == 2, f"pushed into a sealed queue: {ctx.stats()}")
    proc = ctx.run("enqueue", "--queue", ctx.queue, "--chunk-size", 5, _items(ctx, "c.jsonl", range(10, 15)))
    check(f"queue {ctx.queue} was sealed: this enqueue adds to it" in proc.stderr(), f"no warning: {proc.describe()}")
    st = ctx.status_json()
    check(st["enqueued"] == 15 and st["pending"] == 3 and st["sealed"] is True and st["total"] == 15,
          f"after the second enqueue: {st}")
    ctx.run("worker", "--queue", ctx.queue, "--handler", "echo", "--exit-when-empty", timeout=30)
    assert_exactly_once(ctx.stream_results(), range(15), "results stream")


def test_sealed_empty_queue_ends_at_once_and_run_seals(ctx):
    """A producer with nothing to give seals an empty queue: the worker and collect --until-done end at once
    (exit 0), and status says sealed, 0 items. `chunkd run` on REDIS_URL seals its queue."""
    ctx.run("seal", "--queue", ctx.queue)
    ctx.run("worker", "--queue", ctx.queue, "--handler", "echo", "--exit-when-empty", timeout=20)
    ctx.run("collect", "--queue", ctx.queue, "--out", ctx.path("out.jsonl"), "--until-done", timeout=20)
    check(ctx.status_json()["total"] == 0, f"status: {ctx.status_json()}")
    queue = ctx.queue + "-run"
    ctx.run("run", "--queue", queue, "--handler", "echo", "--out", ctx.path("run.jsonl"),
            _items(ctx, "r.jsonl", range(7)), timeout=60)
    st = ctx.status_json(queue)
    check(st["sealed"] is True and st["total"] == 7, f"status after run: {st}")
