"""The collector: --rotate-lines, crash safety (kill -9), --follow. After each run the results stream is empty
(collect deletes what it wrote)."""

import collections
import json
import os
import signal

from harness import assert_exactly_once, check, count_lines, read_jsonl, wait_until


def _check_stream_emptied(ctx):
    """collect deletes the entries it has written: nothing is left in the results stream once it is done."""
    left = ctx.xlen()
    check(left == 0, f"the results stream still holds {left} entries after collect wrote them all")


def _enqueue(ctx, n, first=1, **item):
    items = [dict(item, id=i) for i in range(first, first + n)]
    ctx.run("enqueue", "--queue", ctx.queue, "--chunk-size", 50, ctx.write_jsonl("items.jsonl", items))
    return [it["id"] for it in items]


def test_rotate_lines(ctx):
    ids = _enqueue(ctx, 1050)
    ctx.run("worker", "--queue", ctx.queue, "--handler", "echo", "--exit-when-empty", timeout=60)
    outdir = ctx.path("out")
    outdir.mkdir()
    ctx.run("collect", "--queue", ctx.queue, "--out", outdir, "--rotate-lines", 100, "--until-done", timeout=60)

    files = sorted(os.listdir(outdir))
    expected_files = [f"results-{n:06d}.jsonl" for n in range(1, 12)]
    check(files == expected_files, f"files in --out dir: {files}, expected {expected_files[0]}..{expected_files[-1]}")
    sizes = [count_lines(outdir / f) for f in files]
    check(sizes == [100] * 10 + [50], f"lines per file {sizes}, expected 10 x 100 then 50")
    results = [r for f in files for r in read_jsonl(outdir / f)]
    assert_exactly_once(results, ids, "rotated files")
    _check_stream_emptied(ctx)

    # A second collector into the same directory continues after the highest number.
    more = _enqueue(ctx, 150, first=2001)
    ctx.run("worker", "--queue", ctx.queue, "--handler", "echo", "--exit-when-empty", timeout=60)
    ctx.run("collect", "--queue", ctx.queue, "--out", outdir, "--rotate-lines", 100, "--until-done", timeout=60)
    new_files = sorted(set(os.listdir(outdir)) - set(files))
    check(new_files == ["results-000012.jsonl", "results-000013.jsonl"],
          f"second collector wrote {new_files}, expected results-000012.jsonl and results-000013.jsonl")
    check([count_lines(outdir / f) for f in files] == sizes, "second collector changed the first files")
    check([count_lines(outdir / f) for f in new_files] == [100, 50],
          f"lines per new file {[count_lines(outdir / f) for f in new_files]}, expected [100, 50]")
    assert_exactly_once([r for f in new_files for r in read_jsonl(outdir / f)], more, "second collector's files")
    _check_stream_emptied(ctx)


def test_collector_kill9_restart(ctx):
    # All results are in the stream; the collector is killed -9 three times while it writes, each time
    # restarted with the same --out (collect appends, and re-reads its unacknowledged batch). Each crash may
    # write one read's lines twice (lines on disk, entries not yet acknowledged), never more; a line torn by the kill is
    # cut by the next collector before it appends.
    n, batch, kills = 10000, 10, 3
    ids = _enqueue(ctx, n, pad="p" * 1000)
    ctx.run("worker", "--queue", ctx.queue, "--handler", "echo", "--exit-when-empty", timeout=60)
    out = ctx.path("results.jsonl")
    size = 0
    for kill_no in range(1, kills + 1):
        # Small batches: a thousand round trips to go through, so a loaded machine that is slow to deliver the kill
        # still finds the collector mid-way (with the default batch it finished first once, in CI under ASan).
        collector = ctx.spawn("collect", "--queue", ctx.queue, "--out", out, "--until-done", "--collect-batch", batch,
                              name=f"collector {kill_no}")
        wait_until(lambda: out.exists() and out.stat().st_size > size or not collector.alive(), 30,
                   lambda: f"collector {kill_no} to write more ({collector.describe()})")
        check(collector.alive(), f"collector {kill_no} finished before kill -9; test set-up too fast")
        collector.send(signal.SIGKILL)
        collector.wait(5)
        size = out.stat().st_size
    check(ctx.stat("collected") < n, "everything was collected before the last kill -9; test set-up too fast")
    ctx.run("collect", "--queue", ctx.queue, "--out", out, "--until-done", redis="flag", timeout=60)
    # read_jsonl: every line is whole JSON (a torn one was cut, not left in place or glued onto).
    counts = collections.Counter(r["id"] for r in read_jsonl(out))
    missing = sorted(set(ids) - counts.keys())
    check(not missing, f"{len(missing)} ids lost across kill -9 + restart (e.g. {missing[:5]})")
    check(counts.keys() <= set(ids), f"unexpected ids: {sorted(counts.keys() - set(ids))[:5]}")
    twice = sorted(i for i, c in counts.items() if c > 1)
    # A read takes whole stream entries, each the lines of one commit (at most a chunk's, 50 here): with
    # --collect-batch 10 each read is one entry.
    per_kill = max(batch, 50)
    check(all(counts[i] == 2 for i in twice) and len(twice) <= kills * per_kill,
          f"{len(twice)} ids written more than once (e.g. {[(i, counts[i]) for i in twice[:5]]}): more than one "
          f"read of {per_kill} lines per kill -9 ({kills} kills)")
    _check_stream_emptied(ctx)


def test_restart_after_torn_write(ctx):
    # A collector killed mid-write leaves a partial last line; the next one (appending to the same
    # --out) must not glue its first result onto it.
    ids = _enqueue(ctx, 50)
    ctx.run("worker", "--queue", ctx.queue, "--handler", "echo", "--exit-when-empty")
    out = ctx.path("results.jsonl")
    whole = '{"id":-1,"ok":true,"result":{"id":-1},"attempts":1,"ms":0}\n'  # written before the crash
    out.write_text(whole + '{"id":0,"ok":true,"result":{"id":0},"attem')  # no newline: torn by a crash
    ctx.run("collect", "--queue", ctx.queue, "--out", out, "--until-done")
    text = out.read_text()
    check(text.startswith(whole), f"the whole line before the torn one was not kept: {text[:120]!r}")
    check('"attem\n' not in text and '"attem{' not in text,
          "the torn line is still in the output (left in place or glued onto): it must be cut")
    rows = read_jsonl(out)  # every line whole JSON
    assert_exactly_once(rows[1:], ids, "lines after the cut")
    _check_stream_emptied(ctx)


def test_follow(ctx):
    out = ctx.path("results.jsonl")
    # Started before the queue exists: the collector must create the stream/group itself.
    collector = ctx.spawn("collect", "--queue", ctx.queue, "--out", out, "--follow")
    ids = _enqueue(ctx, 200)
    worker = ctx.spawn("worker", "--queue", ctx.queue, "--handler", "echo", "--exit-when-empty")
    wait_until(lambda: count_lines(out) >= 200 or not collector.alive(), 30,
               lambda: f"200 lines from collect --follow (has {count_lines(out)}; {collector.describe()})")
    worker.wait(15, expect_rc=0)
    check(collector.alive(), f"collect --follow exited by itself: {collector.describe()}")
    collector.send(signal.SIGTERM)
    collector.wait(10, expect_rc=0)
    assert_exactly_once(read_jsonl(out), ids, "collect --follow output")
    _check_stream_emptied(ctx)
