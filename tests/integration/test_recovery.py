"""Leases and reaping: a SIGKILLed worker's chunks run again within seconds; `chunkd recover` by hand."""

import re
import signal
import time

from harness import assert_exactly_once, check, read_jsonl, scaled, wait_until


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
    wait_until(lambda: ctx.r.execute("LLEN", key) == 0, scaled(15), "the victim's chunks given back")
    recovered_after = time.monotonic() - killed
    check(recovered_after < scaled(2 + 1 + 2), f"the victim's chunks came back after {recovered_after:.1f}s, "
                                               "more than lease 2 s + reaper turn 1 s + slack")
    rescuer.wait(scaled(60), expect_rc=0)
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
    wait_until(lambda: ctx.r.execute("EXISTS", ctx.key("lease:gone")) == 0, scaled(5), "the lease expiring")
    out = ctx.run("recover", "--queue", ctx.queue).stdout()
    check(re.search(r"recovered 2 chunks from 1 workers", out), f"recover output: {out!r}")
    check(ctx.r.execute("LLEN", key) == 0 and ctx.llen("pending") == 2, "chunks not back in pending")
