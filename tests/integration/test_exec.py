"""The exec handler: a pool of long-lived subprocesses speaking JSON Lines (README: The exec handler).

Each test writes a small Python script into its temp dir; what the script does with an item depends on the item's
fields (crash, hang, garbage, ...). Python starts slowly on a loaded machine, so deadlines are generous and nothing
waits a fixed time.
"""

import json
import os
import signal
import time
import sys
from pathlib import Path

from harness import assert_exactly_once, check, wait_until
from test_metrics import get
from test_ratelimit import _metric

SCRIPT = r'''
import json, os, subprocess, sys, time
state = sys.argv[1]
open(os.path.join(state, "pid-%d" % os.getpid()), "w").close()
if "--grandchild" in sys.argv:
    child = subprocess.Popen(["sleep", "300"])
    open(os.path.join(state, "gpid-%d" % child.pid), "w").close()

def reply(msg):
    sys.stdout.write(json.dumps(msg) + "\n")
    sys.stdout.flush()

for line in sys.stdin:
    msg = json.loads(line)
    item, mid = msg["item"], msg["id"]
    kind = item.get("kind") if isinstance(item, dict) else None
    open(os.path.join(state, "started-%s" % mid), "w").close()
    if kind == "crash_once":
        marker = os.path.join(state, "crashed-%s" % mid)
        if not os.path.exists(marker):
            open(marker, "w").close()
            os._exit(3)
    elif kind == "crash":
        os._exit(3)
    elif kind == "logged_crash_once":
        # Sleeps, logs the call's start and end, and crashes on the first attempt.
        t0 = time.time()
        time.sleep(item["s"])
        with open(os.path.join(state, "calls.log"), "a") as f:
            f.write("%r %r %s\n" % (t0, time.time(), mid))
        marker = os.path.join(state, "crashed-%s" % mid)
        if not os.path.exists(marker):
            open(marker, "w").close()
            os._exit(3)
    elif kind == "hang":
        open(os.path.join(state, "hang-%d" % os.getpid()), "w").close()
        time.sleep(3600)
    elif kind == "garbage":
        print("this is not json", flush=True)
        continue
    elif kind == "wrong_id":
        reply({"id": "not-" + str(mid), "result": 1})
        continue
    elif kind == "long":
        reply({"id": mid, "result": "x" * item["bytes"]})
        continue
    elif kind == "raise":
        reply({"id": mid, "error": repr(ValueError("boom"))})
        continue
    elif kind == "stderr":
        print("hello from item %s" % mid, file=sys.stderr, flush=True)
    elif kind == "crlf":
        # A reply as a hand-written encoder might put it: raw CR (JSON whitespace) around the result's tokens.
        sys.stdout.write('{"id":%s,"result":{"a":\r[1,\r2]\r}}\n' % json.dumps(mid))
        sys.stdout.flush()
        continue
    elif kind == "env":
        reply({"id": mid, "result": dict(os.environ)})
        continue
    elif kind == "sleep":
        time.sleep(item["s"])
    reply({"id": mid, "result": {"item": item, "pid": os.getpid()}})
'''


def setup(ctx, grandchild=False):
    """Writes the script; returns (--cmd value, state dir). The path is quoted, as --cmd allows."""
    state = ctx.path("state")
    state.mkdir(exist_ok=True)
    script = ctx.path("fn.py")
    script.write_text(SCRIPT)
    cmd = f"{sys.executable} '{script}' '{state}'" + (" --grandchild" if grandchild else "")
    return cmd, state


def enqueue(ctx, items, chunk_size=10):
    ctx.run("enqueue", "--queue", ctx.queue, "--chunk-size", chunk_size, ctx.write_jsonl("items.jsonl", items))


def run_worker(ctx, cmd, *args, timeout=120):
    return ctx.run("worker", "--queue", ctx.queue, "--handler", "exec", "--cmd", cmd, "--exit-when-empty", *args,
                   timeout=timeout)


def by_id(results):
    return {json.dumps(r["id"]): r for r in results}


def pids(state, prefix):
    return sorted(int(p.name[len(prefix):]) for p in Path(state).glob(prefix + "*"))


def alive(pid):
    """True while pid exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def test_result_line_breaks_do_not_split_lines(ctx):
    """A reply's raw CR (whitespace to JSON; Python's splitlines() splits on it) never reaches the output file."""
    cmd, _ = setup(ctx)
    enqueue(ctx, [{"id": i, "kind": "crlf"} for i in range(3)])
    run_worker(ctx, cmd, "--procs", 1)
    out = ctx.path("out.jsonl")
    ctx.run("collect", "--queue", ctx.queue, "--out", out)
    data = out.read_bytes()
    check(b"\r" not in data and data.count(b"\n") == 3, f"output file: {data!r}")
    for line in data.decode().splitlines():
        r = json.loads(line)
        check(r["ok"] is True and r["result"] == {"a": [1, 2]}, f"result line {line!r}")


def test_pool_results_by_id(ctx):
    cmd, state = setup(ctx)
    items = [{"id": f"k{i}" if i % 2 else i, "n": i, "x": [1.5, "é"]} for i in range(200)]
    # Larger than a pipe's buffer both ways: written and read in pieces.
    items.append({"id": "big", "n": -1, "x": "y" * 300000})
    enqueue(ctx, items)
    run_worker(ctx, cmd, "--procs", 3, "--concurrency", 6)
    results = ctx.stream_results()
    assert_exactly_once(results, [it["id"] for it in items], "exec results")
    got = by_id(results)
    for it in items:
        r = got[json.dumps(it["id"])]
        check(r["ok"] is True and r["attempts"] == 1 and r["result"]["item"] == it, f"result of {it['id']}: {r}")
    used = {r["result"]["pid"] for r in results}
    check(len(used) == 3, f"items ran on {len(used)} subprocesses, expected the pool of 3: {sorted(used)}")
    check(len(pids(state, "pid-")) == 3, f"{len(pids(state, 'pid-'))} subprocesses started, expected 3")
    check(not any(alive(p) for p in pids(state, "pid-")), "subprocesses outlived the worker")


def test_crash_retried_then_gives_up(ctx):
    cmd, state = setup(ctx)
    items = [{"id": i} for i in range(20)] + [{"id": 100, "kind": "crash_once"}, {"id": 101, "kind": "crash"}]
    enqueue(ctx, items)
    worker = run_worker(ctx, cmd, "--procs", 2, "--concurrency", 4, "--max-attempts", 3, "--retry-base-ms", 10,
                        "--retry-max-ms", 50)
    results = ctx.stream_results()
    assert_exactly_once(results, [it["id"] for it in items], "results with crashing items")
    got = by_id(results)
    once = got["100"]
    check(once["ok"] is True and once["attempts"] == 2, f"crash_once item not retried to success: {once}")
    bad = got["101"]
    check(bad["ok"] is False and bad["attempts"] == 3 and "exited with status 3" in bad["error"]
          and "gave up after 3 attempts" in bad["error"], f"always-crashing item: {bad}")
    check(all(got[str(i)]["ok"] for i in range(20)), "plain items failed next to crashing ones")
    dead = ctx.dead_entries()
    check([d["id"] for d in dead] == [101], f"dead holds {dead}")
    check("replacing it" in worker.stderr() or "at start" in worker.stderr(),
          "no log line about the crashed subprocess")


def test_retries_take_the_queue_limits(ctx):
    """A retry is another call: it waits for a slot of --max-inflight-global like a first attempt. With one slot,
    no two attempts (first or retry) overlap, though four subprocesses stand idle."""
    cmd, state = setup(ctx)
    items = [{"id": i, "kind": "logged_crash_once", "s": 0.05} for i in range(8)]
    enqueue(ctx, items, chunk_size=8)
    run_worker(ctx, cmd, "--procs", 4, "--concurrency", 8, "--max-inflight-global", 1, "--max-attempts", 2,
               "--retry-base-ms", 1, "--retry-max-ms", 1)
    results = ctx.stream_results()
    assert_exactly_once(results, [it["id"] for it in items], "results")
    check(all(r["ok"] is True and r["attempts"] == 2 for r in results),
          f"items not retried once to success: {[r for r in results if r.get('attempts') != 2][:2]}")
    calls = sorted(tuple(float(x) for x in line.split()[:2])
                   for line in (state / "calls.log").read_text().splitlines())
    check(len(calls) == 16, f"{len(calls)} calls logged, expected 8 first attempts and 8 retries")
    overlaps = [(a, b) for a, b in zip(calls, calls[1:]) if b[0] < a[1]]
    check(not overlaps, f"{len(overlaps)} calls started before the one holding the only slot ended: {overlaps[:2]}")


def test_retries_take_rate_limit_tokens(ctx):
    """Each call takes a --rate-limit token when a subprocess is free to make it, retries too: 8 items that each
    crash once are 16 calls, which at 5/s span at least 2.6 s (14 tokens beyond the burst of 1 and the 200 ms the
    bucket may lend ahead). With tokens taken for first attempts only, or taken while the items waited for a
    subprocess (they are all replaced after the crashes), the calls go out in bursts and span about 1 s."""
    cmd, state = setup(ctx)
    items = [{"id": i, "kind": "logged_crash_once", "s": 0} for i in range(8)]
    enqueue(ctx, items, chunk_size=8)
    run_worker(ctx, cmd, "--procs", 8, "--concurrency", 8, "--rate-limit", "5/s", "--rate-burst", 1,
               "--max-attempts", 2, "--retry-base-ms", 1, "--retry-max-ms", 1)
    results = ctx.stream_results()
    assert_exactly_once(results, [it["id"] for it in items], "results")
    check(all(r["ok"] is True and r["attempts"] == 2 for r in results), "items not retried once to success")
    starts = sorted(float(line.split()[0]) for line in (state / "calls.log").read_text().splitlines())
    check(len(starts) == 16, f"{len(starts)} calls logged, expected 8 first attempts and 8 retries")
    check(starts[-1] - starts[0] >= 2.2, f"16 calls at --rate-limit 5/s spanned only {starts[-1] - starts[0]:.2f} s")


def test_metrics(ctx):
    """/metrics counts exec calls by outcome (one per attempt), subprocess restarts, busy subprocesses and call
    times (metrics.promtool_and_prometheus_scrape checks the exposition, exec metrics included)."""
    cmd, _ = setup(ctx)
    items = [{"id": i} for i in range(5)] + [{"id": 5, "kind": "raise"}, {"id": 6, "kind": "crash_once"}]
    enqueue(ctx, items)
    worker, port = ctx.spawn_http("worker", "--queue", ctx.queue, "--handler", "exec", "--cmd", cmd, "--procs", 2,
                                  "--retry-base-ms", 10, "--retry-max-ms", 50, name="worker")
    wait_until(lambda: ctx.xlen() >= 7, 60, lambda: f"7 results ({worker.describe()})")
    status, text = get(port, "/metrics")
    check(status == 200, f"/metrics answered {status}")
    calls = {o: _metric(text, f'chunkd_exec_calls_total{{[^}}]*outcome="{o}"[^}}]*}}') for o in ("ok", "error", "failed")}
    check(calls == {"ok": 6, "error": 1, "failed": 1}, f"exec calls by outcome {calls}, expected ok 6, error 1, failed 1")
    check(_metric(text, "chunkd_exec_restarts_total") == 1, "chunkd_exec_restarts_total is not 1 (one crash)")
    check(_metric(text, "chunkd_exec_busy_subprocesses") == 0, "chunkd_exec_busy_subprocesses is not 0 when idle")
    check(_metric(text, "chunkd_exec_call_duration_seconds_count") == 8, "chunkd_exec_call_duration_seconds_count != 8")
    worker.send(signal.SIGTERM)
    worker.wait(30, expect_rc=0)


def test_hang_killed_by_exec_timeout(ctx):
    cmd, state = setup(ctx)
    items = [{"id": 0, "kind": "hang"}] + [{"id": i} for i in range(1, 11)]
    enqueue(ctx, items, chunk_size=11)
    worker = run_worker(ctx, cmd, "--procs", 2, "--concurrency", 4, "--exec-timeout-ms", 1500, "--max-attempts", 2,
                        "--retry-base-ms", 10, "--retry-max-ms", 20)
    got = by_id(ctx.stream_results())
    hung = got["0"]
    check(hung["ok"] is False and hung["attempts"] == 2
          and "did not answer within 1500 ms (--exec-timeout-ms) (gave up after 2 attempts)" in hung["error"],
          f"hung item: {hung}")
    check(all(got[str(i)]["ok"] for i in range(1, 11)), "plain items failed next to a hanging one")
    hung_pids = pids(state, "hang-")
    check(len(hung_pids) == 2, f"expected 2 hung subprocesses (one per attempt), saw {hung_pids}")
    check(not any(alive(p) for p in hung_pids), "a hung subprocess was not killed")
    check("did not answer within 1500 ms" in worker.stderr(), "no log line about the killed subprocess")


def test_item_timeout_kills_and_replaces(ctx):
    cmd, state = setup(ctx)
    items = [{"id": 0, "kind": "hang"}] + [{"id": i} for i in range(1, 11)]
    enqueue(ctx, items, chunk_size=11)
    worker = ctx.spawn("worker", "--queue", ctx.queue, "--handler", "exec", "--cmd", cmd, "--procs", 2,
                       "--concurrency", 4, "--exec-timeout-ms", 0, "--item-timeout-ms", 6000)
    wait_until(lambda: pids(state, "hang-"), 30, lambda: f"the hanging item to start ({worker.describe()})")
    hung_pid = pids(state, "hang-")[0]
    wait_until(lambda: ctx.stat("done") + ctx.stat("failed") >= 11, 40, lambda: f"all items ({worker.describe()})")
    got = by_id(ctx.stream_results())
    check(got["0"]["ok"] is False and got["0"]["error"] == "timed out after 6000 ms (--item-timeout-ms)",
          f"hung item: {got['0']}")
    check(all(got[str(i)]["ok"] for i in range(1, 11)), "plain items failed")
    wait_until(lambda: not alive(hung_pid), 10, "the hung subprocess to be killed")
    # The slot gets a fresh subprocess, which takes items.
    wait_until(lambda: len(pids(state, "pid-")) >= 3, 30, "a replacement subprocess")
    enqueue(ctx, [{"id": i} for i in range(20, 30)])
    wait_until(lambda: ctx.stat("done") >= 20, 40, lambda: f"items after the replacement ({worker.describe()})")
    check("ran past --item-timeout-ms" in worker.stderr(), "no log line about the killed subprocess")
    worker.send(signal.SIGTERM)
    worker.wait(30, expect_rc=0)


def test_garbage_output_killed_and_replaced(ctx):
    cmd, state = setup(ctx)
    items = [{"id": 1, "kind": "garbage"}, {"id": 2, "kind": "wrong_id"}, {"id": 3, "kind": "long", "bytes": 300000},
             {"id": 4, "kind": "long", "bytes": 1000}, {"id": 5, "kind": "raise"}] + \
        [{"id": i} for i in range(10, 20)]
    enqueue(ctx, items)
    run_worker(ctx, cmd, "--procs", 2, "--concurrency", 4, "--max-attempts", 2, "--retry-base-ms", 10,
               "--retry-max-ms", 20, "--max-result-bytes", 100000)
    results = ctx.stream_results()
    assert_exactly_once(results, [it["id"] for it in items], "results with garbage")
    got = by_id(results)
    for key, want in (("1", "wrote a line that is not JSON"), ("2", "answered id \"not-2\" while item 2"),
                      ("3", "wrote a line longer than --max-result-bytes (100000 bytes)")):
        r = got[key]
        check(r["ok"] is False and r["attempts"] == 2 and want in r["error"] and "gave up after 2" in r["error"],
              f"item {key}: {r}")
    check(got["4"]["ok"] is True and got["4"]["result"] == "x" * 1000, f"item 4: {str(got['4'])[:200]}")
    # An "error" reply is the function's answer: final, not retried.
    check(got["5"] == {**got["5"], "ok": False, "error": "ValueError('boom')", "attempts": 1}, f"item 5: {got['5']}")
    check(all(got[str(i)]["ok"] for i in range(10, 20)), "plain items failed next to garbage")
    check(len(pids(state, "pid-")) >= 2 + 3, f"garbage did not replace subprocesses: {len(pids(state, 'pid-'))}")


def test_stderr_goes_to_log(ctx):
    cmd, state = setup(ctx)
    enqueue(ctx, [{"id": i, "kind": "stderr"} for i in range(5)])
    worker = run_worker(ctx, cmd, "--procs", 1)
    err = worker.stderr()
    for i in range(5):
        check(f"]: hello from item {i}" in err, f"stderr line of item {i} not in the log: {err[-600:]}")
    check(all(r["ok"] for r in ctx.stream_results()), "stderr items failed")


def test_env_only_named_variables(ctx):
    cmd, state = setup(ctx)
    enqueue(ctx, [{"id": 1, "kind": "env"}])
    ctx.run("worker", "--queue", ctx.queue, "--handler", "exec", "--cmd", cmd, "--exit-when-empty", "--procs", 1,
            "--env", "FOO_X, BAR_X,MISSING_X", timeout=120,
            env={"FOO_X": "foo", "BAR_X": "b a=r", "SECRET_X": "s3cret", "CHUNKD_ENV": "SECRET_X"})
    r = ctx.stream_results()[0]
    check(r["ok"] is True, f"env item: {r}")
    env = r["result"]
    check(env.get("FOO_X") == "foo" and env.get("BAR_X") == "b a=r", f"named variables not passed: {env}")
    # LC_CTYPE: Python sets it itself when the locale is C (PEP 538).
    extra = set(env) - {"FOO_X", "BAR_X", "PATH", "HOME", "LANG", "LC_CTYPE"}
    check(not extra, f"variables not named by --env reached the subprocess: {sorted(extra)}")
    check("PATH" in env and "SECRET_X" not in env and "REDIS_URL" not in env, f"environment: {sorted(env)}")


def test_bad_cmd_not_ready(ctx):
    for cmd, reason in (("/nonexistent/chunkd-exec-test --flag", "could not be started (No such file or directory)"),
                        (f"{sys.executable} -c 'import sys; sys.exit(7)'", "exited with status 7")):
        worker, port = ctx.spawn_http("worker", "--queue", ctx.queue, "--handler", "exec", "--cmd", cmd, "--procs", 2,
                                      "--drain-timeout-ms", 1000, name=f"worker {cmd}")
        wait_until(lambda: get(port, "/readyz")[0] == 503 and reason in get(port, "/readyz")[1], 30,
                   lambda: f"/readyz 503 naming the failure ({get(port, '/readyz')}; {worker.describe()})")
        status, body = get(port, "/readyz")
        check(f"`{cmd}` {reason} at start" in body, f"/readyz body: {body!r}")
        check(get(port, "/healthz")[0] == 200, "/healthz failed with a broken command (it must stay live)")
        lines = [line for line in worker.stderr().splitlines() if "not ready: exec:" in line]
        check(lines and reason in lines[0] and "error" in lines[0], f"no clear log line: {worker.stderr()[-600:]}")
        # Not ready, it takes no more work: of 3 chunks enqueued now, at most the one a BLMOVE issued before the
        # worker turned not ready was already waiting for is taken; the rest stay in pending for workers that can
        # run them (observed over two seconds of the fetcher's 200 ms checks).
        before = ctx.llen("pending")
        enqueue(ctx, [{"id": i, "kind": "ok"} for i in range(6)], chunk_size=2)
        observed_until = time.monotonic() + 2.0
        while time.monotonic() < observed_until:
            check(ctx.llen("pending") >= before + 2, f"a not-ready worker fetched: pending {ctx.llen('pending')}")
            time.sleep(0.1)
        worker.send(signal.SIGTERM)
        worker.wait(30, expect_rc=0)
        ctx.r.execute("DEL", ctx.key("pending"))  # after the exit: the worker gives back the chunk it held


def test_fixed_cmd_becomes_ready(ctx):
    flag = ctx.path("fixed")
    script = ctx.path("maybe.py")
    script.write_text(f"import os, sys\nif not os.path.exists({str(flag)!r}):\n    sys.exit(5)\n"
                      "for line in sys.stdin:\n    pass\n")
    worker, port = ctx.spawn_http("worker", "--queue", ctx.queue, "--handler", "exec",
                                  "--cmd", f"{sys.executable} {script}", "--procs", 1)
    wait_until(lambda: "exited with status 5" in get(port, "/readyz")[1], 30, lambda: f"not ready ({worker.describe()})")
    flag.write_text("")
    # Restarts back off (at most 10 s apart); a subprocess that stays up 3 s makes the worker ready again.
    wait_until(lambda: get(port, "/readyz")[0] == 200, 40, lambda: f"ready again ({worker.describe()})")
    check("ready again" in worker.stderr(), "no log line when the command started working")
    worker.send(signal.SIGTERM)
    worker.wait(30, expect_rc=0)


def test_sigterm_drain_leaves_no_process(ctx):
    cmd, state = setup(ctx, grandchild=True)
    items = [{"id": i, "kind": "sleep", "s": 1} for i in range(3)] + \
        [{"id": i, "kind": "sleep", "s": 600} for i in range(3, 6)]
    enqueue(ctx, items, chunk_size=3)
    worker = ctx.spawn("worker", "--queue", ctx.queue, "--handler", "exec", "--cmd", cmd, "--procs", 6,
                       "--concurrency", 6, "--drain-timeout-ms", 4000)
    wait_until(lambda: len(list(Path(state).glob("started-*"))) == 6, 60,
               lambda: f"6 items on subprocesses ({worker.describe()})")
    worker.send(signal.SIGTERM)
    worker.wait(30, expect_rc=0)
    started = pids(state, "pid-") + pids(state, "gpid-")
    check(len(started) == 12, f"expected 6 subprocesses and 6 grandchildren, saw {started}")
    wait_until(lambda: not [p for p in started if alive(p)], 5,
               lambda: f"no process left; alive: {[p for p in started if alive(p)]}")
    # The short items finished within the drain; the long ones' chunk went back to pending.
    done = {r["id"] for r in ctx.stream_results()}
    check(done == {0, 1, 2}, f"results after the drain: {sorted(done)}")
    check(sorted(int(i) for i in map(json.loads, ctx.pending_todo())) == [3, 4, 5],
          f"pending after the drain: {ctx.pending_todo()}")


def test_invalid_cmd_or_env_exits_2(ctx):
    for args, msg in ((["--cmd", "python3 'oops"], "invalid value for --cmd (CHUNKD_CMD): unterminated single quote"),
                      (["--cmd", "python3", "--env", "OK,NOT-OK"], "invalid value for --env (CHUNKD_ENV): 'NOT-OK'"),
                      ([], "--handler exec needs --cmd (CHUNKD_CMD)")):
        p = ctx.run("worker", "--queue", ctx.queue, "--handler", "exec", *args, expect_rc=2)
        check(msg in p.stderr(), f"exit 2 without '{msg}': {p.stderr()[-300:]}")
