"""Start-up that fits Kubernetes: a worker waits for Redis (not ready meanwhile) instead of exiting, binds its health
port before it takes any work, survives closed standard descriptors; two collectors never share a consumer name."""

import os
import signal
import socket
import subprocess
import time

from harness import Proc, RedisServer, _die_with_parent, check, free_port, http_get, one_line, scaled, wait_until


def _items(ctx, n, sleep_ms=5):
    return ctx.write_jsonl("items.jsonl", [{"id": i, "sleep_ms": sleep_ms} for i in range(n)])


def _waiting_worker(ctx, redis_port, *args):
    """A worker pointed at a Redis port where nothing listens yet, its /healthz answering; (worker, http port)."""
    http_port = free_port()
    worker = ctx.spawn("worker", "--queue", ctx.queue, "--http-addr", "127.0.0.1", *args, redis="flag",
                       url=f"redis://127.0.0.1:{redis_port}/0", env={"CHUNKD_HTTP_PORT": str(http_port)})
    wait_until(lambda: http_get(http_port, "/healthz")[0] == 200, 15,
               lambda: f"/healthz answering while Redis is down ({worker.describe()})")
    return worker, http_port


def test_worker_waits_for_redis_then_works(ctx):
    redis_port = free_port()  # reserved: a redis-server starts on it later
    worker, http_port = _waiting_worker(ctx, redis_port)
    status, body = http_get(http_port, "/readyz")
    check(status == 503 and "waiting for Redis" in body, f"/readyz while Redis is down: {status} {body!r}")
    # Several backoff rounds go by: the worker stays alive and not ready, and logs one line per interval, not per try.
    t0 = time.monotonic()
    wait_until(lambda: worker.stderr().count("waiting for Redis") >= 2, 20,
               lambda: f"a second 'waiting for Redis' line ({worker.describe()})")
    elapsed = time.monotonic() - t0
    check(worker.alive(), f"the worker exited while waiting for Redis: {worker.describe()}")
    check(http_get(http_port, "/healthz")[0] == 200, "/healthz is not 200 while waiting for Redis")
    check(http_get(http_port, "/readyz")[0] == 503, "/readyz is not 503 while waiting for Redis")
    lines = worker.stderr().count("waiting for Redis")
    check(lines <= elapsed / 5 + 3, f"{lines} 'waiting for Redis' lines in {elapsed:.1f} s (one per 5 s expected)")

    server = RedisServer(ctx.path("late-redis"))
    ctx.servers.append(server)
    server.start(port=redis_port)
    url = server.url()
    ctx.run("enqueue", "--queue", ctx.queue, "--chunk-size", 10, _items(ctx, 100), redis="flag", url=url)
    wait_until(lambda: http_get(http_port, "/readyz")[0] == 200, 20,
               lambda: f"/readyz 200 once Redis is up (now {http_get(http_port, '/readyz')}; {worker.describe()})")
    with server.client() as r:
        wait_until(lambda: int(r.execute("HGET", ctx.key("stats"), "done") or 0) == 100, 30,
                   lambda: f"100 items done by the worker that waited ({worker.describe()})")
    worker.send(signal.SIGTERM)
    worker.wait(15, expect_rc=0)


def test_redis_wait_ms_gives_up(ctx):
    redis_port = free_port()
    t0 = time.monotonic()
    worker = ctx.spawn("worker", "--queue", ctx.queue, "--redis-wait-ms", 1000, redis="flag",
                       url=f"redis://127.0.0.1:{redis_port}/0")
    worker.wait(20, expect_rc=1)
    elapsed = time.monotonic() - t0
    err = worker.stderr()
    check(elapsed >= 1.0, f"exited after {elapsed:.2f} s, before --redis-wait-ms 1000 had passed: {one_line(err)}")
    last = err.strip().splitlines()[-1] if err.strip() else ""
    check("error" in last and f"127.0.0.1:{redis_port}" in last and "--redis-wait-ms" in last,
          f"the last line should be the error naming the address and --redis-wait-ms: {last!r}")


def test_signal_while_waiting_for_redis_exits_promptly(ctx):
    for sig in (signal.SIGTERM, signal.SIGINT):
        worker, http_port = _waiting_worker(ctx, free_port())
        wait_until(lambda: "waiting for Redis" in worker.stderr(), 15, "the 'waiting for Redis' line")
        t0 = time.monotonic()
        worker.send(sig)
        worker.wait(5, expect_rc=0)
        check(time.monotonic() - t0 < scaled(5), f"{sig.name} while waiting: exit took too long")
        check(http_get(http_port, "/healthz")[0] is None, "the health port still answers after the worker exited")


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


def test_two_collectors_one_consumer_name(ctx):
    ctx.run("enqueue", "--queue", ctx.queue, "--chunk-size", 10, _items(ctx, 100))
    ctx.run("worker", "--queue", ctx.queue, "--handler", "echo", "--exit-when-empty", timeout=60)
    first = ctx.spawn("collect", "--queue", ctx.queue, "--follow", "--out", ctx.path("first.jsonl"),
                      "--collect-batch", 10, name="first collector")
    marker = ctx.key("collector:collector")
    wait_until(lambda: ctx.r.execute("EXISTS", marker) == 1, 15, lambda: f"the marker {marker} ({first.describe()})")
    second = ctx.spawn("collect", "--queue", ctx.queue, "--follow", "--out", ctx.path("second.jsonl"),
                       name="second collector")
    rc = second.wait(30)
    check(rc not in (0, None), f"the second collector with the same --consumer was not refused: {second.describe()}")
    err = second.stderr()
    check("in use by another running collector" in err and "--consumer" in err,
          f"the refusal should say the name is in use and name --consumer: {one_line(err)}")
    check(not ctx.path("second.jsonl").exists() or ctx.path("second.jsonl").stat().st_size == 0,
          "the refused collector wrote results")
    wait_until(lambda: ctx.stat("collected") == 100, 20, lambda: f"100 results collected ({first.describe()})")
    check(len(ctx.path("first.jsonl").read_text().splitlines()) == 100, "the first collector did not write all 100")

    # Another name is fine alongside; a clean exit frees the name at once.
    ctx.run("collect", "--queue", ctx.queue, "--consumer", "other", "--out", ctx.path("other.jsonl"), timeout=20)
    first.send(signal.SIGTERM)
    first.wait(15, expect_rc=0)
    check(ctx.r.execute("EXISTS", marker) == 0, "a collector that exited cleanly left its marker")
    third = ctx.run("collect", "--queue", ctx.queue, "--out", ctx.path("third.jsonl"), timeout=10)
    check("waiting" not in third.stderr(), f"a freed name made the next collector wait: {one_line(third.stderr())}")

    # A collector that died holds the name only until its marker expires: a restart waits that out and proceeds.
    crashed = ctx.spawn("collect", "--queue", ctx.queue, "--follow", "--out", ctx.path("crashed.jsonl"))
    wait_until(lambda: ctx.r.execute("EXISTS", marker) == 1, 15, "the marker of the collector about to crash")
    crashed.kill()
    restarted = ctx.run("collect", "--queue", ctx.queue, "--out", ctx.path("restarted.jsonl"), timeout=30)
    check("waiting to see whether it is still running" in restarted.stderr(),
          f"the restarted collector did not wait out the dead one's marker: {one_line(restarted.stderr())}")


def test_collect_refuses_a_closed_stdout(ctx):
    ctx.run("enqueue", "--queue", ctx.queue, _items(ctx, 10))
    ctx.run("worker", "--queue", ctx.queue, "--handler", "echo", "--exit-when-empty", timeout=60)
    env = ctx.env()
    run = subprocess.run(["bash", "-c", 'exec "$0" collect --queue "$1" >&-', ctx.bin, ctx.queue], env=env,
                         stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=scaled(20))
    check(run.returncode == 2 and "stdout is closed" in run.stderr and "--out" in run.stderr,
          f"collect with stdout closed: exit {run.returncode}, stderr {one_line(run.stderr)!r}")
    check(ctx.xlen() == 10 and ctx.stat("collected") == 0, "results were taken from the stream with nowhere to go")
