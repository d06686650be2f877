"""Bad input: malformed chunks, rejected enqueue lines, failing items."""

import json
import re
import signal

from harness import assert_exactly_once, check, read_jsonl, wait_until


def test_malformed_chunks_go_to_dead(ctx):
    bad = ["not json",
           '{"v":99,"chunk":"wrong-version","items":[{"id":"x","item":1}]}',
           '{"v":1,"chunk":"items-not-a-list","items":5}']
    pending = ctx.key("pending")
    for text in bad:  # taken from the right: the bad ones come first
        ctx.r.execute("LPUSH", pending, text)
    good = [{"id": "g1", "a": 1}, {"id": "g2", "b": [2, "two"]}]
    ctx.run("enqueue", "--queue", ctx.queue, "-", stdin="".join(json.dumps(g) + "\n" for g in good))

    worker = ctx.spawn("worker", "--queue", ctx.queue, "--handler", "echo")
    wait_until(lambda: ctx.xlen() >= 2 or not worker.alive(), 15,
               lambda: f"the good chunk's results (results={ctx.xlen()}, dead={ctx.llen('dead')}; {worker.describe()})")
    check(worker.alive(), f"worker died on malformed chunks: {worker.describe()}")

    dead = ctx.dead_entries()
    for entry in dead:
        check(isinstance(entry.get("error"), str) and entry["error"],
              f"dead entry without an error message: {entry}")
    raws = [e.get("raw") for e in dead]
    check(sorted(raws, key=str) == sorted(bad), f"dead raws {raws!r}, expected {bad!r}")
    results = {r["id"]: r for r in ctx.stream_results()}
    check(set(results) == {"g1", "g2"}, f"results ids {sorted(results)}, expected g1 g2")
    check(results["g1"].get("result") == good[0] and results["g2"].get("result") == good[1],
          f"good chunk results wrong: {list(results.values())}")

    # Still running: another poison chunk, then another good chunk.
    ctx.r.execute("LPUSH", pending, "{truncated")
    ctx.run("enqueue", "--queue", ctx.queue, "-", stdin='{"id":"g3"}\n')
    wait_until(lambda: ctx.xlen() >= 3 and ctx.llen("dead") >= 4 or not worker.alive(), 15,
               lambda: f"second batch (results={ctx.xlen()}, dead={ctx.llen('dead')}; {worker.describe()})")
    check(worker.alive(), f"worker died on a malformed chunk: {worker.describe()}")
    check(ctx.stat("dead_chunks") == 4, f"stats dead_chunks={ctx.stat('dead_chunks')}, expected 4")
    wait_until(lambda: ctx.processing_len() == 0, 10,
               lambda: f"processing list to empty: {ctx.processing_keys()}")
    worker.send(signal.SIGTERM)
    worker.wait(15, expect_rc=0)


def test_enqueue_rejects_bad_lines(ctx):
    oversized = json.dumps({"pad": "x" * 150})
    exactly_100 = json.dumps({"pad": "y" * 89})
    assert len(exactly_100) == 100
    lines = ['{"k":1}', '{"k":2}', '{"k": 3,', '{"k":4}', "", "[6]", "not json", oversized, exactly_100, '{"k":10}']
    good = {1: {"k": 1}, 2: {"k": 2}, 4: {"k": 4}, 6: [6], 9: json.loads(exactly_100), 10: {"k": 10}}
    path = ctx.write_jsonl("items.jsonl", lines)
    rejects = ctx.path("rejects.jsonl")

    proc = ctx.run("enqueue", "--queue", ctx.queue, "--max-item-bytes", 100, "--rejects", rejects, path,
                   redis="flag", expect_rc=3)
    err = proc.stderr()
    for n in (3, 7, 8):
        check(re.search(rf"\bline {n}\b", err), f"stderr does not mention line {n}: {err[-400:]!r}")
    for n in (9, 10):
        check(not re.search(rf"\bline {n}\b", err), f"stderr reports good line {n}: {err[-400:]!r}")

    rows = {r.get("line"): r for r in read_jsonl(rejects)}
    check(sorted(rows) == [3, 7, 8], f"rejects file has lines {sorted(rows, key=str)}, expected [3, 7, 8]")
    for n, row in rows.items():
        check(isinstance(row.get("error"), str) and row["error"], f"rejects line {n} has no error: {row}")
    check(rows[3].get("raw") == lines[2] and rows[7].get("raw") == lines[6],
          f"rejects raw wrong: {rows[3].get('raw')!r}, {rows[7].get('raw')!r}")
    check(not rows[3].get("truncated"), f"short line marked truncated: {rows[3]}")
    check(rows[8].get("truncated") is True and rows[8].get("raw") == oversized[:100],
          f"oversized line: expected truncated=true and raw = its first 100 bytes, got {rows[8]}")

    stats = ctx.stats()
    check(stats.get("enqueued") == 6 and stats.get("rejected") == 3,
          f"stats enqueued={stats.get('enqueued')} rejected={stats.get('rejected')}, expected 6 and 3")
    queued = sorted(it["id"] for ch in ctx.pending_chunks() for it in ch["items"])
    check(queued == sorted(good), f"pending item ids {queued}, expected {sorted(good)}")

    # The good lines get processed.
    worker = ctx.spawn("worker", "--queue", ctx.queue, "--handler", "echo", "--exit-when-empty")
    out = ctx.path("results.jsonl")
    ctx.run("collect", "--queue", ctx.queue, "--out", out, "--until-done", timeout=30)
    worker.wait(15, expect_rc=0)
    results = read_jsonl(out)
    assert_exactly_once(results, good, "collect output")
    for r in results:
        check(r.get("ok") is True and r.get("result") == good[r["id"]], f"wrong result line {r}")


def test_enqueue_default_rejects_paths(ctx):
    path = ctx.write_jsonl("input.jsonl", ['{"a":1}', "nope"])
    ctx.run("enqueue", "--queue", ctx.queue, path, expect_rc=3)
    rows = read_jsonl(f"{path}.rejected")
    check([(r.get("line"), r.get("raw")) for r in rows] == [(2, "nope")], f"<input>.rejected: {rows}")

    ctx.run("enqueue", "--queue", ctx.queue, "-", stdin='nope\n{"a":1}\n', expect_rc=3)
    rows = read_jsonl(ctx.path("chunkd-rejected.jsonl"))
    check([(r.get("line"), r.get("raw")) for r in rows] == [(1, "nope")], f"chunkd-rejected.jsonl: {rows}")
    check(ctx.stat("enqueued") == 2, f"stats enqueued={ctx.stat('enqueued')}, expected 2")


def test_failed_item_result_and_dead(ctx):
    items = [{"id": "bad-ms", "sleep_ms": "abc"}, {"id": "ok-1", "sleep_ms": 1}, {"id": "ok-2", "sleep_ms": 200}]
    ctx.run("enqueue", "--queue", ctx.queue, ctx.write_jsonl("items.jsonl", items))
    chunks = ctx.pending_chunks()
    check(len(chunks) == 1, f"expected 1 pending chunk, got {len(chunks)}")
    chunk_id = chunks[0].get("chunk")

    worker = ctx.spawn("worker", "--queue", ctx.queue, "--handler", "sleep", "--exit-when-empty")
    out = ctx.path("results.jsonl")
    ctx.run("collect", "--queue", ctx.queue, "--out", out, "--until-done", expect_rc=4)  # an item failed
    worker.wait(15, expect_rc=0)

    results = {r["id"]: r for r in read_jsonl(out)}
    check(sorted(results) == ["bad-ms", "ok-1", "ok-2"], f"result ids {sorted(results)}")
    bad = results["bad-ms"]
    check(bad.get("ok") is False and isinstance(bad.get("error"), str) and bad["error"],
          f"bad item: expected ok=false with an error, got {bad}")
    check(isinstance(bad.get("attempts"), int) and bad["attempts"] >= 1, f"bad item attempts: {bad}")
    check(results["ok-2"].get("ok") is True and results["ok-2"].get("ms", 0) >= 150,
          f"sleep_ms 200 item: expected ok and ms >= 150, got {results['ok-2']}")

    dead = ctx.dead_entries()
    check(len(dead) == 1, f"dead has {len(dead)} entries, expected 1: {dead}")
    d = dead[0]
    check(d.get("id") == "bad-ms" and d.get("item") == items[0] and d.get("chunk") == chunk_id
          and isinstance(d.get("error"), str) and d["error"] and isinstance(d.get("attempts"), int),
          f"dead entry {d}, expected id, item, error, attempts, chunk={chunk_id!r}")

    status = ctx.status_json(redis="flag")
    expected = {"pending": 0, "enqueued": 3, "done": 2, "failed": 1, "dead": 1, "collected": 3}
    got = {k: status.get(k) for k in expected}
    check(got == expected, f"status --json: expected {expected}, got {got}")
