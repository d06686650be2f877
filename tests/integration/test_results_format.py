"""The results stream holds one entry per commit (field b: the commit's result lines, one per line), not one per
item: the collector splits them, numbers each line's seq, and acknowledges and deletes whole entries; the backlog
counts lines. Entries of workers from before (field r, one line each) are still read, beside new ones."""

import json
import re
import signal

from harness import assert_exactly_once, check, read_jsonl, stream_lines, wait_until


def _enqueue(ctx, ids, chunk_size=100):
    ctx.run("enqueue", "--queue", ctx.queue, "--chunk-size", chunk_size,
            ctx.write_jsonl("items.jsonl", [{"id": i} for i in ids]))


def test_one_entry_per_commit(ctx):
    _enqueue(ctx, range(1000))
    ctx.run("worker", "--queue", ctx.queue, "--handler", "echo", "--exit-when-empty", timeout=60)
    entries = ctx.r.execute("XLEN", ctx.key("results"))
    lines = stream_lines(ctx.r, ctx.key("results"))
    # 10 chunks of 100 echo items: each chunk's items finish together, so one commit (one entry) each, a few more
    # when a commit round takes a chunk in parts. One entry per item would be 1,000.
    check(len(lines) == 1000 and entries <= 50, f"{entries} stream entries for {len(lines)} result lines: expected "
          "the lines of each commit in one entry")
    stats = ctx.stats()
    fields = [f for _, f in ctx.r.xrange_all(ctx.key("results"))]
    entry_bytes = sum(len(f["b"].encode()) for f in fields)
    check(int(stats.get("results_lines", 0)) == 1000 and int(stats.get("results_bytes", 0)) == entry_bytes,
          f"stats results_lines {stats.get('results_lines')} (want 1000), results_bytes {stats.get('results_bytes')} "
          f"(want the entries' {entry_bytes})")
    status = ctx.status_json()
    check(status["results_backlog"] == 1000, f"status results_backlog {status['results_backlog']}, want 1000 lines")

    out = ctx.path("out.jsonl")
    ctx.run("collect", "--queue", ctx.queue, "--until-done", "--out", out, timeout=60)
    rows = read_jsonl(out)
    assert_exactly_once(rows, range(1000), "collected lines")
    seqs = [r.get("seq", "") for r in rows]
    bad = [s for s in seqs if not re.fullmatch(r"\d+-\d+-\d+", s)]
    check(not bad, f"seq of a line from a batch entry must be <ms>-<n>-<index>: {bad[:3]}")
    check(len(set(seqs)) == len(seqs), "two lines with one seq")
    stats = ctx.stats()
    check(ctx.r.execute("XLEN", ctx.key("results")) == 0, "collect left entries in the stream")
    check(int(stats.get("results_lines", 0)) == 0 and int(stats.get("results_bytes", 0)) == 0
          and int(stats.get("collected", 0)) == 1000,
          f"after collect: results_lines {stats.get('results_lines')}, results_bytes {stats.get('results_bytes')} "
          f"(both want 0), collected {stats.get('collected')} (want 1000)")


def test_entries_of_older_workers_are_read(ctx):
    # A rolling upgrade: an older worker wrote one entry per item (field r) for ids 0..4, failures; then new workers
    # ran every id. The collector writes both kinds, and --last-only keeps each id's later line (the success).
    _enqueue(ctx, range(200), chunk_size=50)
    for i in range(5):
        line = json.dumps({"id": i, "ok": False, "error": "from an older worker", "attempts": 1, "ms": 1},
                          separators=(",", ":"))
        ctx.r.execute("XADD", ctx.key("results"), "*", "r", line)
        ctx.r.execute("HINCRBY", ctx.key("stats"), "results_bytes", len(line))
    ctx.run("worker", "--queue", ctx.queue, "--handler", "echo", "--exit-when-empty", timeout=60)
    # The backlog counts the new lines exactly; an older worker's entries did not add to results_lines, so they
    # count only through the entries (backlog.lua: at least XLEN).
    backlog = ctx.status_json()["results_backlog"]
    check(200 <= backlog <= 205, f"status results_backlog {backlog}: want 200 new lines (and up to the 5 old)")

    out = ctx.path("all.jsonl")
    ctx.run("collect", "--queue", ctx.queue, "--until-done", "--out", out, timeout=60, expect_rc=4)  # 5 failures
    rows = read_jsonl(out)
    old = [r for r in rows if r.get("error") == "from an older worker"]
    check(len(rows) == 205 and len(old) == 5 and all(re.fullmatch(r"\d+-\d+", r["seq"]) for r in old),
          f"{len(rows)} lines ({len(old)} from the older worker's entries, seq {[r.get('seq') for r in old]}): "
          "want 205, the 5 old ones with their entry's id as seq")
    stats = ctx.stats()
    check(int(stats.get("results_bytes", 0)) == 0 and int(stats.get("results_lines", 0)) == 0
          and ctx.r.execute("XLEN", ctx.key("results")) == 0,
          f"after collect: results_bytes {stats.get('results_bytes')}, results_lines {stats.get('results_lines')}")

    # Kept to one line per id (a second collect with nothing left to read rewrites the file): the success, whose
    # seq has three numbers, beats the older worker's failure, whose seq has two.
    ctx.run("collect", "--queue", ctx.queue, "--until-done", "--last-only", "--out", out, timeout=60)
    rows = read_jsonl(out)
    assert_exactly_once(rows, range(200), "after --last-only")
    check(all(r["ok"] for r in rows), f"--last-only kept a failure: {[r for r in rows if not r['ok']][:2]}")


def test_backlog_cap_counts_lines(ctx):
    # --max-results-backlog counts result lines, not entries: with entries of 100 lines, a cap of 150 must pause
    # fetching after a few chunks, not after 150 entries (all 1,000 lines here).
    _enqueue(ctx, range(1000))
    worker = ctx.spawn("worker", "--queue", ctx.queue, "--handler", "echo", "--concurrency", 100,
                       "--max-results-backlog", 150)
    wait_until(lambda: "fetching paused" in worker.stderr() or not worker.alive(), 30,
               lambda: f"fetching paused at the cap ({worker.describe()})")
    # Paused: what it held is committed, and no more comes (the window holds at most 2 x --concurrency items).
    wait_until(lambda: ctx.processing_len() == 0 or not worker.alive(), 30,
               lambda: f"the held chunks committed ({worker.describe()})")
    lines = len(stream_lines(ctx.r, ctx.key("results")))
    check(worker.alive() and 150 < lines <= 150 + 3 * 100,
          f"{lines} result lines in the stream with --max-results-backlog 150: want more than the cap, by at most "
          "what the worker held when it paused")
    paused = json.loads(ctx.run("status", "--queue", ctx.queue, "--json", "--max-results-backlog", 150).stdout())
    check(paused.get("fetch_paused") is True and paused["results_backlog"] == lines,
          f"status with the worker's cap: fetch_paused {paused.get('fetch_paused')}, results_backlog "
          f"{paused['results_backlog']} (want {lines})")
    worker.send(signal.SIGTERM)
    worker.wait(30, expect_rc=0)


def test_large_results_split_into_entries_of_a_mib(ctx):
    # 300 KB results, 10 to a chunk: a commit's 3 MB of lines go into entries of at most 1 MiB (or one line), so
    # neither the commit script nor a collector's read holds a whole chunk's large results in one string.
    pad = "x" * 300_000
    ctx.run("enqueue", "--queue", ctx.queue, "--chunk-size", 10,
            ctx.write_jsonl("items.jsonl", [{"id": i, "pad": pad} for i in range(20)]))
    ctx.run("worker", "--queue", ctx.queue, "--handler", "echo", "--exit-when-empty", timeout=60)
    sizes = [len(f["b"]) for _, f in ctx.r.xrange_all(ctx.key("results"))]
    check(len(sizes) >= 6 and max(sizes) <= (1 << 20) + 310_000,
          f"entries of {sizes} bytes: want each at most 1 MiB (or one line), so at least 3 per chunk of 3 MB")
    out = ctx.path("out.jsonl")
    ctx.run("collect", "--queue", ctx.queue, "--until-done", "--out", out, timeout=60)
    rows = read_jsonl(out)
    assert_exactly_once(rows, range(20), "collected lines")
    check(all(r["result"]["pad"] == pad for r in rows), "a result line was cut or changed")
    check(len({r["seq"] for r in rows}) == 20, "two lines with one seq")


def test_older_entries_leave_results_lines_alone(ctx):
    # An older worker's entry (field r) was never counted in results_lines: collecting it must not take a line off
    # the new workers' count (a rollout would pause fetching late). The group starts after the new entries, so the
    # collector reads only the old ones.
    _enqueue(ctx, range(200), chunk_size=50)
    ctx.run("worker", "--queue", ctx.queue, "--handler", "echo", "--exit-when-empty", timeout=60)
    new_bytes = sum(len(f["b"]) for _, f in ctx.r.xrange_all(ctx.key("results")))
    ctx.r.execute("XGROUP", "CREATE", ctx.key("results"), "chunkd-collect", "$")
    for i in range(5):
        line = json.dumps({"id": 1000 + i, "ok": True, "result": {}, "attempts": 1, "ms": 1}, separators=(",", ":"))
        ctx.r.execute("XADD", ctx.key("results"), "*", "r", line)
        ctx.r.execute("HINCRBY", ctx.key("stats"), "results_bytes", len(line))  # as an older worker did
    out = ctx.path("old.jsonl")
    ctx.run("collect", "--queue", ctx.queue, "--out", out, timeout=60)
    check(sorted(r["id"] for r in read_jsonl(out)) == list(range(1000, 1005)), "the old entries' lines")
    stats = ctx.stats()
    check(int(stats.get("results_lines", 0)) == 200 and int(stats.get("results_bytes", 0)) == new_bytes
          and int(stats.get("collected", 0)) == 5,
          f"after collecting the 5 old lines: results_lines {stats.get('results_lines')} (want 200), results_bytes "
          f"{stats.get('results_bytes')} (want {new_bytes}), collected {stats.get('collected')} (want 5)")
