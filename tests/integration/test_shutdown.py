"""Graceful shutdown: SIGTERM/SIGINT, drain timeout, pushing unfinished chunks back."""

import random
import signal
import time

from harness import assert_exactly_once, check, id_key, read_jsonl, scaled, wait_until

FAST_MS, SLOW_MS = 50, 4000


def test_sigterm_requeues_unfinished_chunks(ctx):
    # 20 chunks of 10: chunks 0-3 fast, chunk 4 half fast/half slow, the rest slow.
    items = []
    for c in range(20):
        for j in range(10):
            fast = c < 4 or (c == 4 and j < 5)
            items.append({"id": f"c{c:02d}-{j}", "sleep_ms": FAST_MS if fast else SLOW_MS})
    all_ids = [it["id"] for it in items]
    ctx.run("enqueue", "--queue", ctx.queue, "--chunk-size", 10, ctx.write_jsonl("items.jsonl", items))

    worker = ctx.spawn("worker", "--queue", ctx.queue, "--handler", "sleep", "--concurrency", 60,
                       "--drain-timeout-ms", 300)
    wait_until(lambda: ctx.xlen() >= 40 and ctx.processing_len() >= 1, 30,
               lambda: f"40 fast results with slow chunks in flight (results={ctx.xlen()}, "
                       f"processing={ctx.processing_len()}; {worker.describe()})")
    sent = time.monotonic()
    worker.send(signal.SIGTERM)
    worker.wait(15, expect_rc=0)
    elapsed = time.monotonic() - sent
    check(elapsed < scaled(2.5), f"worker took {elapsed:.1f}s to exit after SIGTERM with --drain-timeout-ms 300 "
                                 f"(slow items need {SLOW_MS} ms: it waited for them)")

    check(ctx.processing_len() == 0, f"processing lists not empty after SIGTERM: "
                                     f"{[(k, ctx.r.execute('LLEN', k)) for k in ctx.processing_keys()]}")
    committed = {id_key(r["id"]) for r in ctx.stream_results()}
    pending = ctx.pending_todo()  # requeued chunks' finished items are committed and checkpointed: not to run again
    both = committed & set(pending)
    check(not both, f"{len(both)} items both committed and back in pending (e.g. {sorted(both)[:3]})")
    check(len(pending) == len(set(pending)), "an item is in pending twice")
    lost = {id_key(i) for i in all_ids} - committed - set(pending)
    check(not lost, f"{len(lost)} items neither committed nor pending after SIGTERM (e.g. {sorted(lost)[:3]})")
    requeued = ctx.stat("requeued_chunks")
    check(requeued >= 1, f"stats requeued_chunks={requeued}, expected >= 1")
    # Requeued chunks go back to the front (taken next); fetching is FIFO, so they are the oldest chunks.
    take_order = [ch["items"][0]["id"][:3] for ch in ctx.pending_chunks()]
    check(sorted(take_order[:requeued]) == sorted(take_order)[:requeued],
          f"requeued chunks are not at the front of pending (take order {take_order}, {requeued} requeued)")

    # A second worker finishes the queue; every id once.
    second = ctx.spawn("worker", "--queue", ctx.queue, "--handler", "sleep", "--concurrency", 200,
                       "--exit-when-empty", redis="flag", name="second worker")
    out = ctx.path("results.jsonl")
    collector = ctx.spawn("collect", "--queue", ctx.queue, "--out", out, "--until-done")
    second.wait(60, expect_rc=0)
    collector.wait(30, expect_rc=0)
    assert_exactly_once(read_jsonl(out), all_ids, "collect output after restart")


def test_sigterm_drains_in_flight(ctx):
    # All 30 items are in flight at SIGTERM; a long drain timeout lets them finish and commit.
    items = [{"id": i, "sleep_ms": 1000} for i in range(30)]
    ctx.run("enqueue", "--queue", ctx.queue, "--chunk-size", 10, ctx.write_jsonl("items.jsonl", items))
    worker = ctx.spawn("worker", "--queue", ctx.queue, "--handler", "sleep", "--concurrency", 100,
                       "--drain-timeout-ms", 10000, redis="flag")
    wait_until(lambda: ctx.llen("pending") == 0 and ctx.processing_len() == 3, 15,
               lambda: f"all 3 chunks taken (pending={ctx.llen('pending')}, processing={ctx.processing_len()}; "
                       f"{worker.describe()})")
    check(ctx.xlen() == 0, "items finished before SIGTERM; test set-up too slow")
    worker.send(signal.SIGTERM)
    worker.wait(15, expect_rc=0)
    assert_exactly_once(ctx.stream_results(), range(30), "results stream after draining")
    check(ctx.llen("pending") == 0, f"chunks pushed back although they finished within the drain timeout: "
                                    f"pending={ctx.llen('pending')}")
    check(ctx.processing_len() == 0, f"processing not empty: {ctx.processing_keys()}")
    check(ctx.stat("requeued_chunks") == 0, f"stats requeued_chunks={ctx.stat('requeued_chunks')}, expected 0")


def test_sigint_idle_worker(ctx):
    worker = ctx.spawn("worker", "--queue", ctx.queue, "--handler", "echo")
    wait_until(lambda: ctx.r.execute("SCARD", ctx.key("workers")) >= 1 or not worker.alive(), 10,
               lambda: f"worker to register in chunkd:{{Q}}:workers ({worker.describe()})")
    check(worker.alive(), f"idle worker exited on its own: {worker.describe()}")
    sent = time.monotonic()
    worker.send(signal.SIGINT)
    worker.wait(10, expect_rc=0)
    elapsed = time.monotonic() - sent
    check(elapsed < scaled(3), f"idle worker took {elapsed:.1f}s to exit after SIGINT")


def test_repeated_sigterm_no_loss(ctx):
    # SIGTERM at random moments (mid-fetch, mid-commit, mid-drain) must never lose or duplicate an item.
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    items = [{"id": i, "sleep_ms": rng.choice([5, 20, 60])} for i in range(2000)]
    all_ids = {id_key(it["id"]) for it in items}
    ctx.run("enqueue", "--queue", ctx.queue, "--chunk-size", 20, ctx.write_jsonl("items.jsonl", items))
    for round_no, drain_ms in enumerate([0, 300, 20000, 0, 50, 20000], 1):
        where = f"round {round_no} (seed {seed}, --drain-timeout-ms {drain_ms})"
        worker = ctx.spawn("worker", "--queue", ctx.queue, "--handler", "sleep", "--concurrency", 200,
                           "--drain-timeout-ms", drain_ms, name=f"worker round {round_no}")
        wait_until(lambda: ctx.r.execute("SCARD", ctx.key("workers")) >= 1 or not worker.alive(), 10,
                   lambda: f"{where}: worker to register ({worker.describe()})")
        time.sleep(rng.uniform(0, 0.4))  # not a wait for a condition: a random moment to send SIGTERM
        worker.send(signal.SIGTERM)
        rc = worker.wait(30)
        check(rc == 0, f"{where}: expected exit 0, got {worker.describe()}")
        check(ctx.processing_len() == 0, f"{where}: processing lists not empty: {ctx.processing_keys()}")
        committed = [id_key(r["id"]) for r in ctx.stream_results()]
        pending = ctx.pending_todo()
        check(len(committed) == len(set(committed)),
              f"{where}: {len(committed) - len(set(committed))} items committed twice")
        check(len(pending) == len(set(pending)), f"{where}: an item is in pending twice")
        check(not set(committed) & set(pending), f"{where}: items both committed and pending")
        lost = all_ids - set(committed) - set(pending)
        check(not lost, f"{where}: {len(lost)} items lost (e.g. {sorted(lost)[:3]})")
    ctx.run("worker", "--queue", ctx.queue, "--handler", "sleep", "--concurrency", 500, "--exit-when-empty",
            timeout=60)
    out = ctx.path("results.jsonl")
    ctx.run("collect", "--queue", ctx.queue, "--out", out, "--until-done", timeout=30)
    assert_exactly_once(read_jsonl(out), [it["id"] for it in items], f"collect output (seed {seed})")
