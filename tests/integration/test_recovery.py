"""Leases and reaping: a SIGKILLed worker's chunks run again within seconds; `chunkd recover` by hand."""

import json
import re
import signal
import time
from pathlib import Path

from harness import assert_exactly_once, check, read_jsonl, scaled, wait_until
from test_metrics import get
from test_ratelimit import _metric


def test_sigkilled_worker_chunks_run_again(ctx):
    items = [{"id": i, "sleep_ms": 1500} for i in range(300)]
    ctx.run("enqueue", "--queue", ctx.queue, "--chunk-size", 50, ctx.write_jsonl("items.jsonl", items))
    victim = ctx.spawn("worker", "--queue", ctx.queue, "--worker-id", "victim", "--concurrency", 100,
                       "--lease-ms", 2000, name="victim")
    key = ctx.key("processing:victim")
    wait_until(lambda: ctx.r.execute("LLEN", key) >= 2, 15, lambda: f"victim holding chunks ({victim.describe()})")
    victim.kill()
    killed = time.monotonic()
    rescuer = ctx.spawn("worker", "--queue", ctx.queue, "--concurrency", 300, "--lease-ms", 2000,
                        "--exit-when-empty", name="rescuer")
    wait_until(lambda: ctx.r.execute("LLEN", key) == 0, 15, "the victim's chunks given back")
    recovered_after = time.monotonic() - killed
    check(recovered_after < scaled(2 + 1 + 2), f"the victim's chunks came back after {recovered_after:.1f}s, "
                                               "more than lease 2 s + reaper turn 1 s + slack")
    rescuer.wait(60, expect_rc=0)
    check("reaped worker victim" in rescuer.stderr(), "the rescuer did not log the reaping")
    out = ctx.path("results.jsonl")
    ctx.run("collect", "--queue", ctx.queue, "--out", out)
    assert_exactly_once(read_jsonl(out), [it["id"] for it in items], "results after a SIGKILL")
    check(ctx.stat("reaped_chunks") >= 2, f"stats reaped_chunks={ctx.stat('reaped_chunks')}")
    check(ctx.r.execute("SISMEMBER", ctx.key("workers"), "victim") == 0, "victim still registered")


def test_recover_by_hand(ctx):
    items = [{"id": i, "sleep_ms": 60000} for i in range(20)]
    ctx.run("enqueue", "--queue", ctx.queue, "--chunk-size", 10, ctx.write_jsonl("items.jsonl", items))
    victim = ctx.spawn("worker", "--queue", ctx.queue, "--worker-id", "gone", "--lease-ms", 1000, name="victim")
    key = ctx.key("processing:gone")
    wait_until(lambda: ctx.r.execute("LLEN", key) == 2, 15, lambda: f"victim holding 2 chunks ({victim.describe()})")
    early = ctx.run("recover", "--queue", ctx.queue).stdout()
    check(re.search(r"recovered 0 chunks", early), f"recover moved chunks of a live worker: {early!r}")
    victim.kill()
    wait_until(lambda: ctx.r.execute("EXISTS", ctx.key("lease:gone")) == 0, 5, "the lease expiring")
    out = ctx.run("recover", "--queue", ctx.queue).stdout()
    check(re.search(r"recovered 2 chunks from 1 workers", out), f"recover output: {out!r}")
    check(ctx.r.execute("LLEN", key) == 0 and ctx.llen("pending") == 2, "chunks not back in pending")


def test_checkpoint_redelivery_runs_only_unfinished_items(ctx):
    # One chunk of http items: 6 fast, 4 slow. The victim commits the fast ones (a partial commit: the chunk stays
    # in its processing list) and is killed; the chunk's next delivery runs only the 4 slow items. Counted at the
    # mock API, per item: each fast item called once, each slow one twice (the victim's call and the rescuer's).
    q = ctx.queue
    items = [{"id": i, "path": f"/{q}/{i}", "query": {"delay_ms": 20 if i < 6 else 2500}} for i in range(10)]
    ctx.run("enqueue", "--queue", q, "--chunk-size", 10, ctx.write_jsonl("items.jsonl", items))
    common = ["--queue", q, "--handler", "http", "--base-url", ctx.mock.url, "--lease-ms", 1000]
    victim = ctx.spawn("worker", *common, "--worker-id", "victim", name="victim")
    calls = lambda: {i: ctx.mock.count(f"/{q}/{i}") for i in range(10)}  # noqa: E731
    wait_until(lambda: ctx.xlen() >= 6 and all(n == 1 for n in calls().values()), 15,
               lambda: f"6 fast results committed and every item called once (calls {calls()}; {victim.describe()})")
    check(ctx.r.execute("LLEN", ctx.key("processing:victim")) == 1, "the partly committed chunk left processing")
    chunk_id = ctx.r.lrange_all(ctx.key("processing:victim"))[0].split('"chunk":"')[1].split('"')[0]
    check(ctx.done_bits(chunk_id) == set(range(6)),
          f"checkpoint of chunk {chunk_id}: {sorted(ctx.done_bits(chunk_id))}, expected items 0-5")
    victim.kill()
    rescuer = ctx.spawn("worker", *common, "--exit-when-empty", "--log-level", "debug", name="rescuer")
    rescuer.wait(30, expect_rc=0)
    check(re.search(r"fetched chunk \S+ \(10 items, 4 to run, delivery 2\)", rescuer.stderr()),
          f"the rescuer did not log running only the 4 unfinished items: {rescuer.stderr()[-600:]!r}")
    want = {i: 1 if i < 6 else 2 for i in range(10)}
    check(calls() == want, f"calls per item at the mock {calls()}, expected {want}: the redelivery ran items its "
                           f"checkpoint marks finished, or skipped unfinished ones")
    out = ctx.path("results.jsonl")
    ctx.run("collect", "--queue", q, "--out", out)
    assert_exactly_once(read_jsonl(out), [it["id"] for it in items], "results after a partial commit and a SIGKILL")
    check(not ctx.r.keys(ctx.key(f"done:{chunk_id}:*")), "the checkpoint outlived its chunk")
    check(ctx.r.execute("HLEN", ctx.key("deliveries")) == 0, "the delivery count outlived its chunk")


def test_max_deliveries_sends_poison_chunk_to_dead(ctx):
    # A chunk whose workers keep dying: after --max-deliveries 2 the third delivery does not run it; its items
    # fail with the reason, go to dead, and the worker carries on with the next chunk.
    poison = [{"id": f"p{i}", "sleep_ms": 60000} for i in range(5)]
    ctx.run("enqueue", "--queue", ctx.queue, "--chunk-size", 5, ctx.write_jsonl("poison.jsonl", poison))
    for n in (1, 2):
        victim = ctx.spawn("worker", "--queue", ctx.queue, "--worker-id", f"v{n}", "--lease-ms", 1000,
                           "--max-deliveries", 2, name=f"victim {n}")
        # Killed once the delivery is counted: a worker killed between taking the chunk and counting it (one
        # round trip later) never ran it, and that delivery rightly does not count against the chunk.
        wait_until(lambda: ctx.r.execute("LLEN", ctx.key(f"processing:v{n}")) == 1 and
                   [int(v) for v in ctx.r.execute("HVALS", ctx.key("deliveries"))] == [n], 15,
                   lambda: f"victim {n} holding the chunk, its delivery {n} counted ({victim.describe()})")
        victim.kill()
        wait_until(lambda: ctx.r.execute("EXISTS", ctx.key(f"lease:v{n}")) == 0, 5, "the lease expiring")
        ctx.run("recover", "--queue", ctx.queue)
    good = [{"id": f"g{i}", "sleep_ms": 10} for i in range(5)]
    ctx.run("enqueue", "--queue", ctx.queue, "--chunk-size", 5, ctx.write_jsonl("good.jsonl", good))
    ctx.run("worker", "--queue", ctx.queue, "--max-deliveries", 2, "--exit-when-empty", timeout=30)
    out = ctx.path("results.jsonl")
    ctx.run("collect", "--queue", ctx.queue, "--out", out)
    results = read_jsonl(out)
    assert_exactly_once(results, [it["id"] for it in poison + good], "results with a poison chunk")
    for r in results:
        if r["id"].startswith("p"):
            check(r["ok"] is False and "more than --max-deliveries 2" in r["error"], f"poison item result: {r}")
        else:
            check(r["ok"] is True, f"good item after the poison chunk: {r}")
    dead = [json.loads(d) for d in ctx.r.lrange_all(ctx.key("dead"))]
    check(len(dead) == 5 and all("--max-deliveries" in d["error"] for d in dead), f"dead list: {dead}")


def test_item_timeout_fails_hung_items(ctx):
    items = [{"id": i, "sleep_ms": 60000 if i % 2 else 10} for i in range(10)]
    ctx.run("enqueue", "--queue", ctx.queue, "--chunk-size", 5, ctx.write_jsonl("items.jsonl", items))
    started = time.monotonic()
    ctx.run("worker", "--queue", ctx.queue, "--item-timeout-ms", 300, "--exit-when-empty", timeout=30)
    check(time.monotonic() - started < scaled(10), "hung items held the worker past --item-timeout-ms")
    out = ctx.path("results.jsonl")
    ctx.run("collect", "--queue", ctx.queue, "--out", out)
    results = read_jsonl(out)
    assert_exactly_once(results, [it["id"] for it in items], "results with hung items")
    for r in results:
        if r["id"] % 2:
            check(r["ok"] is False and r["error"] == "timed out after 300 ms (--item-timeout-ms)", f"hung item: {r}")
        else:
            check(r["ok"] is True, f"quick item: {r}")
    check(ctx.llen("dead") == 5, f"dead holds {ctx.llen('dead')} records, expected the 5 hung items")


def test_item_timeout_counts_from_the_place(ctx):
    """--item-timeout-ms starts when an item gets one of the --concurrency places, not while it waits for one: a
    chunk of 10 items of 300 ms at --concurrency 2 takes 1.5 s, yet no item runs for 1 s."""
    items = [{"id": i, "sleep_ms": 300} for i in range(10)]
    ctx.run("enqueue", "--queue", ctx.queue, "--chunk-size", 10, ctx.write_jsonl("items.jsonl", items))
    ctx.run("worker", "--queue", ctx.queue, "--concurrency", 2, "--item-timeout-ms", 1000, "--exit-when-empty",
            timeout=30)
    results = ctx.stream_results()
    assert_exactly_once(results, range(10), "results stream")
    failed = [r for r in results if r.get("ok") is not True]
    check(not failed, f"{len(failed)} items failed while waiting for a place: {failed[:2]}")


def test_results_backlog_pauses_fetching(ctx):
    items = [{"id": i} for i in range(400)]
    ctx.run("enqueue", "--queue", ctx.queue, "--chunk-size", 10, ctx.write_jsonl("items.jsonl", items))
    worker = ctx.spawn("worker", "--queue", ctx.queue, "--handler", "echo", "--concurrency", 10,
                       "--max-results-backlog", 50, "--exit-when-empty", name="worker")
    wait_until(lambda: "fetching paused" in worker.stderr(), 15, lambda: f"the pause ({worker.describe()})")
    held = ctx.xlen()
    check(50 < held <= 50 + 2 * 10, f"results stream at {held} entries: over the backlog by more than a window")
    check(ctx.llen("pending") > 0 and worker.alive(), "the worker did not wait with work pending")
    out = ctx.path("results.jsonl")
    ctx.run("collect", "--queue", ctx.queue, "--out", out, "--until-done", timeout=60)
    worker.wait(30, expect_rc=0)
    check("fetching resumed" in worker.stderr(), "no log line when fetching resumed")
    assert_exactly_once(read_jsonl(out), [it["id"] for it in items], "results with a results backlog cap")


def test_byte_caps_on_chunks(ctx):
    # --max-chunk-bytes: a larger chunk goes to dead with the reason. --max-held-bytes: the worker holds no more
    # chunk text than that (one chunk beyond it at most), whatever --concurrency allows.
    big = [{"id": f"b{i}", "pad": "x" * 400} for i in range(10)]          # one chunk of about 5 KB
    ctx.run("enqueue", "--queue", ctx.queue, "--chunk-size", 10, ctx.write_jsonl("big.jsonl", big))
    ctx.run("worker", "--queue", ctx.queue, "--handler", "echo", "--max-chunk-bytes", 2048, "--exit-when-empty",
            timeout=30)
    dead = [json.loads(d) for d in ctx.r.lrange_all(ctx.key("dead"))]
    check(len(dead) == 1 and "larger than --max-chunk-bytes 2048" in dead[0]["error"], f"dead: {dead}")

    # 6 chunks of about 400 KB: under a 1 MiB cap the worker holds at most 3 (it fetches while under the cap).
    # The worker reports its own highs (chunkd_chunks_held_peak, chunkd_chunk_bytes_held_peak): sampling its
    # processing list from here would miss a short peak.
    slow = [{"id": i, "sleep_ms": 1000, "pad": "y" * 40000} for i in range(60)]
    ctx.run("enqueue", "--queue", ctx.queue, "--chunk-size", 10, ctx.write_jsonl("slow.jsonl", slow))
    chunk_bytes = [len(raw.encode()) for raw in ctx.r.lrange_all(ctx.key("pending"))]
    check(len(chunk_bytes) == 6, f"set-up: {len(chunk_bytes)} chunks pending, expected 6")
    worker, port = ctx.spawn_http("worker", "--queue", ctx.queue, "--worker-id", "w", "--concurrency", 1000,
                                  "--max-held-bytes", 1048576, name="worker")
    wait_until(lambda: ctx.stat("chunks_done") == 6 or not worker.alive(), 30,
               lambda: f"the 6 chunks done (chunks_done={ctx.stat('chunks_done')}; {worker.describe()})")
    status, text = get(port, "/metrics")
    check(status == 200, f"/metrics answered {status}")
    chunks_peak = _metric(text, "chunkd_chunks_held_peak")
    bytes_peak = _metric(text, "chunkd_chunk_bytes_held_peak")
    check(chunks_peak is not None and 1 <= chunks_peak <= 3,
          f"chunks held under --max-held-bytes 1048576 (chunks of {max(chunk_bytes)} bytes): peak {chunks_peak}")
    check(bytes_peak is not None and bytes_peak < 1048576 + max(chunk_bytes),
          f"chunk text held under --max-held-bytes 1048576: peak {bytes_peak} bytes, more than one chunk beyond it")
    worker.send(signal.SIGTERM)
    worker.wait(15, expect_rc=0)


def test_commit_script_final_without_checkpoint_defers_to_it(ctx):
    # commit.lua itself, against the real Redis: a worker that lost a chunk to the reaper and fetched the same
    # text again can hold two deliveries of it; the one without a checkpoint must not write items the other one
    # checkpointed. Its final commit without the bitmap is refused with 2 (resent with it), never written twice.
    script = (Path(__file__).resolve().parents[2] / "src" / "scripts" / "commit.lua").read_text()
    keys = [ctx.key(k) for k in ("processing:w", "results", "stats", "dead", "done:c1:0", "deliveries", "pending")]
    ctx.r.execute("RPUSH", keys[0], "X")
    partial = ctx.r.execute("EVAL", script, 7, *keys, "X", "p", "c1:0", "1", 2, 2, 0, "r0", "r1", "o0", "o1")
    check(partial == 1 and ctx.xlen() == 2, f"partial commit: {partial}, stream {ctx.xlen()}")
    again = ctx.r.execute("EVAL", script, 7, *keys, "X", "p", "c1:0", "1", 2, 2, 0, "r0", "r1", "o0", "o1")
    check(again == 1 and ctx.xlen() == 2, f"a partial commit retried wrote again: stream {ctx.xlen()}")
    blind = ctx.r.execute("EVAL", script, 7, *keys, "X", "f", "c1:0", "0", 3, 3, 0, "r0", "r1", "r2")
    check(blind == 2 and ctx.xlen() == 2 and ctx.r.execute("LLEN", keys[0]) == 1,
          f"final commit without the checkpoint: reply {blind}, stream {ctx.xlen()}")
    final = ctx.r.execute("EVAL", script, 7, *keys, "X", "f", "c1:0", "1", 3, 3, 0, "r0", "r1", "r2", "o0", "o1",
                          "o2")
    check(final == 1 and ctx.xlen() == 3, f"final commit with the checkpoint: reply {final}, stream {ctx.xlen()}")
    check(ctx.r.execute("EXISTS", keys[4]) == 0 and ctx.r.execute("LLEN", keys[0]) == 0,
          "the final commit left the checkpoint or the chunk behind")
    check(ctx.stat("done") == 3 and ctx.stat("chunks_done") == 1, f"stats: done={ctx.stat('done')}")


def test_quick_chunks_commit_once(ctx):
    # Chunks that finish within --checkpoint-ms are committed once, whole: no partial commit (LPOS) at all, even
    # though their items finish in different batches. Slower chunks checkpoint (LPOS) as their items finish.
    ctx.r.execute("CONFIG", "RESETSTAT")
    items = [{"id": i, "sleep_ms": 10 * (i % 20)} for i in range(2000)]
    ctx.run("enqueue", "--queue", ctx.queue, "--chunk-size", 100, ctx.write_jsonl("items.jsonl", items))
    ctx.run("worker", "--queue", ctx.queue, "--commit-interval-ms", 5, "--exit-when-empty", timeout=60)

    def lpos_calls():
        stats = ctx.r.execute("INFO", "commandstats")
        m = re.search(r"cmdstat_lpos:calls=(\d+)", stats)
        return int(m.group(1)) if m else 0

    check(lpos_calls() == 0, f"{lpos_calls()} partial commits for chunks done within --checkpoint-ms")
    check(ctx.stat("chunks_done") == 20 and ctx.stat("done") == 2000, f"done={ctx.stat('done')}")
    items = [{"id": f"s{i}", "sleep_ms": 10 * (i % 20)} for i in range(200)]
    ctx.run("enqueue", "--queue", ctx.queue, "--chunk-size", 100, ctx.write_jsonl("slow.jsonl", items))
    ctx.run("worker", "--queue", ctx.queue, "--commit-interval-ms", 5, "--checkpoint-ms", 50, "--exit-when-empty",
            timeout=60)
    check(lpos_calls() > 0, "no partial commit for chunks older than --checkpoint-ms 50")
    check(ctx.stat("done") == 2200, f"done={ctx.stat('done')}")
