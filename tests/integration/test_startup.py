"""Start-up that fits Kubernetes: a worker waits for Redis (not ready meanwhile) instead of exiting, binds its health
port before it takes any work, survives closed standard descriptors; two collectors never share a consumer name."""

import os
import socket
import subprocess

from harness import Proc, _die_with_parent, check, one_line, scaled


def _items(ctx, n, sleep_ms=5):
    return ctx.write_jsonl("items.jsonl", [{"id": i, "sleep_ms": sleep_ms} for i in range(n)])


def test_taken_http_port_fails_before_taking_work(ctx):
    ctx.run("enqueue", "--queue", ctx.queue, "--chunk-size", 10, _items(ctx, 100))
    pending_before = ctx.llen("pending")
    with socket.socket() as holder:  # another process on this host has the port
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        worker = ctx.spawn("worker", "--queue", ctx.queue, "--worker-id", "second", "--http-addr", "127.0.0.1",
                           env={"CHUNKD_HTTP_PORT": str(port)}, name="worker on a taken port")
        worker.wait(15, expect_rc=1)
    check(ctx.llen("processing:second") == 0 and not ctx.processing_keys(),
          f"the worker took {ctx.llen('processing:second')} chunks before failing (they wait a whole lease)")
    check(ctx.llen("pending") == pending_before == 10, f"pending holds {ctx.llen('pending')} of 10 chunks")
    check(ctx.r.execute("SISMEMBER", ctx.key("workers"), "second") == 0, "the worker registered before failing")
    err = worker.stderr()
    want = f"cannot serve /healthz on 127.0.0.1:{port}: address in use"
    check(want in err and "--http-port" in err, f"expected {want!r} and --http-port in: {one_line(err)}")
    lines = [line for line in err.splitlines() if line.strip()]
    check(len(lines) == 1, f"expected one error line (no raw libmicrohttpd message), got: {one_line(err)}")


def test_closed_std_descriptors(ctx):
    server = ctx.start_redis()  # its own server, so its error counters are this test's alone
    url = server.url()
    ctx.run("enqueue", "--queue", ctx.queue, "--chunk-size", 10, _items(ctx, 100), redis="flag", url=url)
    with server.client() as r:
        r.execute("CONFIG", "RESETSTAT")
    # Started with stdin and stderr closed, as `chunkd worker <&- 2>&-` would be.
    err_path = ctx.path("closed-fds.stderr")
    argv = ["bash", "-c", 'exec "$0" worker --queue "$1" --exit-when-empty --log-level debug <&- 2>&-',
            ctx.bin, ctx.queue]
    popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             env=ctx.env(url=url), cwd=ctx.tmp, preexec_fn=_die_with_parent)
    err_path.write_text("")
    proc = Proc("worker with fds 0-2 closed", argv, popen, os.devnull, err_path)
    ctx.procs.append(proc)
    proc.wait(30, expect_rc=0)
    with server.client() as r:
        done = int(r.execute("HGET", ctx.key("stats"), "done") or 0)
        stats = r.execute("INFO", "stats")
        errorstats = r.execute("INFO", "errorstats")
        commandstats = r.execute("INFO", "commandstats")
    check(done == 100, f"the worker with closed descriptors finished {done} of 100 items")
    errors = [line for line in errorstats.splitlines() if line.startswith("errorstat_")]
    check("total_error_replies:0" in stats and not errors,
          f"Redis answered errors (log text sent into a Redis connection?): {errors}")
    failed = [line for line in commandstats.splitlines()
              if line.startswith("cmdstat_") and ("failed_calls=0" not in line or "rejected_calls=0" not in line)]
    check(not failed, f"commands that failed or were rejected: {failed}")


def test_collect_refuses_a_closed_stdout(ctx):
    ctx.run("enqueue", "--queue", ctx.queue, _items(ctx, 10))
    ctx.run("worker", "--queue", ctx.queue, "--handler", "echo", "--exit-when-empty", timeout=60)
    env = ctx.env()
    run = subprocess.run(["bash", "-c", 'exec "$0" collect --queue "$1" >&-', ctx.bin, ctx.queue], env=env,
                         stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=scaled(20))
    check(run.returncode == 2 and "stdout is closed" in run.stderr and "--out" in run.stderr,
          f"collect with stdout closed: exit {run.returncode}, stderr {one_line(run.stderr)!r}")
    check(ctx.xlen() == 10 and ctx.stat("collected") == 0, "results were taken from the stream with nowhere to go")
