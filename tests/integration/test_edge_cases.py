"""Edge cases: empty input, big items, tiny concurrency, odd line endings, I/O errors."""

import json

from harness import assert_exactly_once, check, one_line, parse_jsonl, read_jsonl


def test_run_empty_input(ctx):
    # Nothing to do must not hang waiting for results that never come.
    proc = ctx.run("run", "--queue", ctx.queue, "--handler", "echo", "-", stdin="", timeout=20)
    check(proc.stdout() == "", f"run on empty input printed {proc.stdout()[:200]!r}")
    proc = ctx.run("run", "--handler", "echo", "-", stdin="\n\n", redis=None, timeout=20)
    check(proc.stdout() == "", f"run on blank lines printed {proc.stdout()[:200]!r}")
    # Every line rejected: exit 3, no hang.
    ctx.run("run", "--queue", ctx.queue + "-bad", "--handler", "echo", "-", stdin="nope\n{\n", expect_rc=3,
            timeout=20)


def test_line_endings(ctx):
    # CRLF (JSON allows \r as whitespace) and a last line without a newline.
    data = '{"id":"crlf"}\r\n{"id":"lf"}\n\n{"id":"last"}'
    proc = ctx.run("run", "--queue", ctx.queue, "--handler", "echo", "-", stdin=data, timeout=30)
    results = parse_jsonl(proc.stdout(), "run stdout")
    assert_exactly_once(results, ["crlf", "lf", "last"], "run stdout")


def test_big_items(ctx):
    # Items near the default --max-item-bytes (1 MiB) go through chunks, stream and collector intact.
    items = [{"id": f"big{i}", "blob": chr(ord("a") + i) * (1000000 - 40 * i)} for i in range(5)]
    path = ctx.write_jsonl("items.jsonl", items)
    out = ctx.path("out.jsonl")
    ctx.run("run", "--queue", ctx.queue, "--handler", "echo", "--chunk-size", 2, "--out", out, path, timeout=60)
    results = read_jsonl(out)
    assert_exactly_once(results, [it["id"] for it in items], "run --out")
    by_id = {it["id"]: it for it in items}
    for r in results:
        check(r.get("result") == by_id[r["id"]], f"big item {r['id']} changed (result length "
                                                 f"{len(json.dumps(r.get('result')))})")


def test_concurrency_below_chunk_size(ctx):
    # --concurrency 1 with chunks of 10 must still make progress.
    items = [{"id": i, "sleep_ms": 1} for i in range(30)]
    ctx.run("enqueue", "--queue", ctx.queue, "--chunk-size", 10, ctx.write_jsonl("items.jsonl", items))
    ctx.run("worker", "--queue", ctx.queue, "--handler", "sleep", "--concurrency", 1, "--threads", 1,
            "--exit-when-empty", timeout=30)
    assert_exactly_once(ctx.stream_results(), range(30), "results stream")


def test_io_errors_exit_1(ctx):
    missing = ctx.path("no-such-input.jsonl")
    proc = ctx.spawn("enqueue", "--queue", ctx.queue, missing)
    proc.wait(15)
    check(proc.returncode == 1, f"enqueue of a missing file: expected exit 1, got {proc.describe()}")
    check(str(missing) in proc.stderr(), f"error does not name {missing}: {one_line(proc.stderr(), 200)!r}")

    ctx.run("enqueue", "--queue", ctx.queue, "-", stdin='{"id":1}\n')
    ctx.run("worker", "--queue", ctx.queue, "--handler", "echo", "--exit-when-empty")
    bad_out = ctx.path("no-such-dir") / "out.jsonl"
    proc = ctx.spawn("collect", "--queue", ctx.queue, "--out", bad_out, "--until-done")
    proc.wait(15)
    check(proc.returncode == 1, f"collect --out into a missing directory: expected exit 1, got {proc.describe()}")
    check(ctx.stat("collected") == 0, "collect could not write, yet counted the result as collected")
    out = ctx.path("out.jsonl")
    ctx.run("collect", "--queue", ctx.queue, "--out", out, "--until-done")
    assert_exactly_once(read_jsonl(out), [1], "collect output after a failed collector")
