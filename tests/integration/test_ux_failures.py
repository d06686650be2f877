"""Failures in plain sight (issue 16): run and collect --until-done end with ok/failed counts and the most common
reasons, and exit 4 when an item failed; a warning while most calls fail; `chunkd dead` lists the failed items;
--include-item puts the item into its result line."""

import json
import os
import shlex
import shutil
import subprocess

from harness import check, id_key, one_line, read_jsonl, wait_until


def _items_404(ctx, n, **query):
    return [{"id": i, "path": f"/{ctx.queue}/x", "query": dict({"status": 404}, **query)} for i in range(n)]


def _run_http(ctx, items, *flags, expect_rc, label="items", timeout=120):
    out = ctx.path(f"{label}.out.jsonl")
    proc = ctx.run("run", "--queue", ctx.queue, "--handler", "http", "--base-url", ctx.mock.url,
                   *[str(f) for f in flags], "--out", out, ctx.write_jsonl(f"{label}.jsonl", items),
                   expect_rc=expect_rc, timeout=timeout)
    return proc, read_jsonl(out)


def test_all_404_exits_4_with_summary(ctx):
    """200 items, every call a 404: run exits 4 and its summary counts 0 ok, 200 failed, and names HTTP 404 with
    its count (the build before exits 0 with an ordinary summary)."""
    proc, results = _run_http(ctx, _items_404(ctx, 200), expect_rc=4)
    check(len(results) == 200 and all(r.get("ok") is False for r in results),
          f"expected 200 failed result lines, got {len(results)}")
    err = proc.stderr()
    check("chunkd run: 0 ok, 200 failed" in err, f"no ok/failed counts in the summary: {one_line(err[-600:])}")
    reason_lines = [line.split() for line in err.splitlines() if line.strip().endswith("HTTP 404")]
    check(["200", "HTTP", "404"] in reason_lines, f"no '200  HTTP 404' reason line: {one_line(err[-600:])}")


def test_collect_until_done_exits_4_with_summary(ctx):
    """collect --until-done counts the lines it writes the same way: exit 4 and the reasons."""
    items = _items_404(ctx, 30) + [{"id": 100 + i, "path": f"/{ctx.queue}/ok"} for i in range(20)]
    ctx.run("enqueue", "--queue", ctx.queue, ctx.write_jsonl("items.jsonl", items))
    ctx.run("worker", "--queue", ctx.queue, "--handler", "http", "--base-url", ctx.mock.url, "--exit-when-empty",
            timeout=60)
    proc = ctx.run("collect", "--queue", ctx.queue, "--until-done", "--out", ctx.path("out.jsonl"), expect_rc=4,
                   timeout=60)
    err = proc.stderr()
    check("collect: 20 ok, 30 failed" in err, f"no ok/failed counts: {one_line(err[-600:])}")
    check(any(line.split() == ["30", "HTTP", "404"] for line in err.splitlines()),
          f"no '30  HTTP 404' reason line: {one_line(err[-600:])}")


def test_warning_while_run_goes_badly(ctx):
    """Most calls failing (9 in 10, a 404: not a failure the circuit breaker counts): a warning naming the reason
    appears while the run is still going."""
    items = [{"id": i, "path": f"/{ctx.queue}/x", "query": {"delay_ms": 10, "fail_rate": 0.9, "fail_status": 404}}
             for i in range(2000)]
    path = ctx.write_jsonl("items.jsonl", items)
    proc = ctx.spawn("run", "--queue", ctx.queue, "--handler", "http", "--base-url", ctx.mock.url,
                     "--concurrency", 10, "--max-attempts", 1, "--out", ctx.path("out.jsonl"), path)
    wait_until(lambda: "is going badly" in proc.stderr() or not proc.alive(), 120,
               lambda: f"the warning of a run going badly ({proc.describe()})")
    alive = proc.alive()
    warning = next((line for line in proc.stderr().splitlines() if "is going badly" in line), "")
    check(warning and alive, f"no warning while the run was going: {one_line(proc.stderr()[-600:])}")
    check("HTTP 404" in warning and "of the last 100 results failed" in warning,
          f"the warning does not say how many failed and why: {warning}")
    proc.wait(180, expect_rc=4)


def test_warning_in_a_terminal(ctx):
    """In a terminal (tmux), with the progress bar drawn on stderr: the warning of a run going badly is a line of its
    own (the bar's line is cleared first), and the summary with exit status 4 follows."""
    check(shutil.which("tmux"), "tmux is not installed (make deps installs it)")
    items = [{"id": i, "path": f"/{ctx.queue}/x", "query": {"delay_ms": 10, "fail_rate": 0.9, "fail_status": 404}}
             for i in range(2000)]
    path, out, exit_file = ctx.write_jsonl("items.jsonl", items), ctx.path("out.jsonl"), ctx.path("exit")
    exports = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in ctx.env().items() if k.isidentifier())
    script = ctx.path("run.sh")
    script.write_text(exports + f"{shlex.quote(ctx.bin)} run --queue {ctx.queue} --handler http --base-url "
                      f"{ctx.mock.url} --concurrency 10 --max-attempts 1 --out {shlex.quote(str(out))} "
                      f"{shlex.quote(str(path))}\necho $? > {shlex.quote(str(exit_file))}\nsleep 600\n")
    tmux = ["tmux", "-L", f"chunkd-it-{os.getpid()}-{ctx.queue}"]
    subprocess.run(tmux + ["new-session", "-d", "-s", "run", "-x", "200", "-y", "50", f"bash {shlex.quote(str(script))}"],
                   check=True, env={k: v for k, v in os.environ.items() if not k.startswith("TMUX")})
    try:
        wait_until(lambda: exit_file.exists() and exit_file.read_text().strip(), 120, "`chunkd run` in tmux to end")
        screen = subprocess.run(tmux + ["capture-pane", "-p", "-J", "-S", "-200", "-t", "run"], check=True,
                                capture_output=True, text=True).stdout
    finally:
        subprocess.run(tmux + ["kill-server"], capture_output=True)
    check(exit_file.read_text().strip() == "4", f"exit status {exit_file.read_text().strip()}, expected 4")
    lines = screen.splitlines()
    check(any(line.startswith("[#") and "/2,000" in line for line in lines), f"no progress bar on the terminal: {one_line(screen[-800:])}")
    warnings = [line for line in lines if "is going badly" in line]
    check(warnings and all(line.startswith("20") and "warn" in line.split()[1] for line in warnings),
          f"the warning is not a log line of its own on the terminal: {warnings or one_line(screen[-800:])}")
    check(any(line.startswith("chunkd run: ") and " failed (exit status 4)" in line for line in lines),
          f"no summary on the terminal: {one_line(screen[-800:])}")


def test_dead_lists_failed_items(ctx):
    """After a run whose every call failed, `chunkd dead` lists each failed item with its reason and attempts,
    one line each within 100 columns; --json prints each record in full; --limit caps them."""
    _run_http(ctx, _items_404(ctx, 200), expect_rc=4)
    text = ctx.run("dead", "--queue", ctx.queue).stdout().splitlines()
    check(len(text) == 201 and text[0].split() == ["ID", "ATT", "REASON"],
          f"expected a header and 200 lines, got {len(text)}: {text[:2]}")
    check(all(len(line) <= 100 for line in text), "a line is longer than 100 columns")
    ids = sorted(int(line.split()[0]) for line in text[1:])
    check(ids == list(range(200)), f"ids listed: {ids[:5]}...")
    check(all(line.split()[1:] == ["1", "HTTP", "404"] for line in text[1:]),
          f"a line without its attempts and reason: {text[1]}")
    rows = [json.loads(line) for line in ctx.run("dead", "--queue", ctx.queue, "--json").stdout().splitlines()]
    check(len(rows) == 200 and all(r["error"] == "HTTP 404" and r["item"]["query"]["status"] == 404 for r in rows),
          f"--json records: {len(rows)}, first {rows[:1]}")
    check(len(ctx.run("dead", "--queue", ctx.queue, "--json", "--limit", 5).stdout().splitlines()) == 5,
          "--limit 5 did not give 5 records")
    check(ctx.llen("dead") == 200, "chunkd dead changed the dead list")


def test_dead_shows_a_dead_chunk(ctx):
    """A chunk that went to dead whole (over the worker's --max-chunk-bytes) is one line saying how many items it
    holds."""
    items = [{"id": i, "pad": "p" * 200} for i in range(10)]
    ctx.run("enqueue", "--queue", ctx.queue, "--chunk-size", 10, ctx.write_jsonl("items.jsonl", items))
    ctx.run("worker", "--queue", ctx.queue, "--handler", "echo", "--max-chunk-bytes", 1024, "--exit-when-empty",
            timeout=30)
    check(ctx.llen("dead") == 1, f"expected one dead chunk, dead holds {ctx.llen('dead')}")
    text = ctx.run("dead", "--queue", ctx.queue).stdout().splitlines()
    check(len(text) == 2 and "a whole chunk" in text[1] and "of 10 items" in text[1],
          f"the dead chunk's line: {text}")


def test_include_item(ctx):
    """--include-item: each result line carries its item, ok or failed."""
    items = [{"id": i, "path": f"/{ctx.queue}/x", "query": {"status": 200 if i % 2 else 404}, "n": [i, "é"]}
             for i in range(50)]
    _, results = _run_http(ctx, items, "--include-item", expect_rc=4)
    by_id = {id_key(r["id"]): r for r in results}
    check(len(by_id) == 50, f"{len(by_id)} results")
    for it in items:
        r = by_id[id_key(it["id"])]
        check(r.get("item") == it, f"id {it['id']}: item {r.get('item')!r}, expected {it!r}")
        check(r["ok"] is bool(it["id"] % 2), f"id {it['id']}: ok {r['ok']}")


def test_requeue_then_collect_last_only(ctx):
    """Items that fail once (a 404), are requeued and then succeed: each has two lines, the failure then the
    success, with "seq" (the results stream entry id) saying which came later; collect --until-done --last-only
    keeps only the last line of each id."""
    q = ctx.queue
    items = [{"id": i, "path": f"/{q}/x", "query": {"fail_times": 1, "key": f"{q}-{i}", "fail_status": 404}}
             for i in range(20)]
    ctx.run("enqueue", "--queue", q, ctx.write_jsonl("items.jsonl", items))
    worker = ["worker", "--queue", q, "--handler", "http", "--base-url", ctx.mock.url, "--exit-when-empty"]
    ctx.run(*worker, timeout=60)
    out = ctx.path("out.jsonl")
    ctx.run("collect", "--queue", q, "--until-done", "--out", out, expect_rc=4, timeout=60)
    first = read_jsonl(out)
    check(len(first) == 20 and all(r["ok"] is False and isinstance(r.get("seq"), str) for r in first),
          f"first collect: {len(first)} lines, first {first[:1]}")
    ctx.run("requeue", "--queue", q)
    ctx.run(*worker, timeout=60)
    proc = ctx.run("collect", "--queue", q, "--until-done", "--last-only", "--out", out, timeout=60)
    check("20 lines kept" in proc.stderr() and "20 earlier lines of the same ids dropped" in proc.stderr(),
          f"collect --last-only did not say what it kept: {one_line(proc.stderr()[-400:])}")
    last = read_jsonl(out)
    check(sorted(r["id"] for r in last) == list(range(20)) and all(r["ok"] is True for r in last),
          f"after --last-only: {len(last)} lines, {[(r['id'], r['ok']) for r in last][:5]}...")
    seq = {r["id"]: tuple(map(int, r["seq"].split("-"))) for r in first}
    check(all(tuple(map(int, r["seq"].split("-"))) > seq[r["id"]] for r in last),
          "a success's seq is not higher than its failure's")


def test_last_only_needs_until_done_and_a_file(ctx):
    for args in (["--last-only", "--out", ctx.path("o.jsonl")], ["--last-only", "--until-done"]):
        proc = ctx.run("collect", "--queue", ctx.queue, *args, expect_rc=2)
        check("--last-only" in proc.stderr(), f"no reason naming --last-only: {one_line(proc.stderr())}")
