"""Stops as users and operators make them: Ctrl-C in a terminal, signals to a process group, `timeout`, a rollout
beside other workers, Redis gone or refusing writes mid-run. Every stop ends in bounded time, keeps what was
written, and no item runs twice because of it."""

import json
import os
import shlex
import shutil
import signal
import subprocess
import time

from harness import (check, count_lines, http_get, id_key, read_jsonl, redis_servers_tagged, scaled, skip,
                     stream_lines, wait_until)


def _sleep_items(ctx, n, sleep_ms, name="items.jsonl"):
    return ctx.write_jsonl(name, [{"id": i, "sleep_ms": sleep_ms} for i in range(n)])


def _check_partial_output(out, n_items, at_least):
    """The output of an interrupted run: valid JSON Lines, no id twice, at least what was there before."""
    rows = read_jsonl(out)
    ids = [id_key(r["id"]) for r in rows]
    check(len(ids) == len(set(ids)), f"{len(ids) - len(set(ids))} ids written twice in {out}")
    check(at_least <= len(rows) < n_items, f"{len(rows)} results in {out}, expected {at_least} to {n_items - 1}")
    return rows


def _run_env(ctx, tmpdir):
    """chunkd run with its private redis-server (no REDIS_URL), its temp dir in tmpdir (to find that server)."""
    env = ctx.env(redis=None)
    env["TMPDIR"] = str(tmpdir)
    return env


def test_ctrl_c_in_tmux_ends_run(ctx):
    # A terminal: tmux runs `chunkd run` in the foreground; C-c is SIGINT to its whole process group, the private
    # redis-server included (before: it died, and the drain reconnected to it forever).
    check(shutil.which("tmux"), "tmux is not installed (make deps installs it)")
    tmpdir = ctx.short_tmpdir()
    items = _sleep_items(ctx, 3000, 1000)
    out, exit_file = ctx.path("out.jsonl"), ctx.path("exit")
    env = _run_env(ctx, tmpdir)
    script = ctx.path("run.sh")
    exports = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in env.items() if k.isidentifier())
    script.write_text("unset REDIS_URL\n" + exports
                      + f"{shlex.quote(ctx.bin)} run --handler sleep --concurrency 200 --out {shlex.quote(str(out))} "
                        f"{shlex.quote(str(items))} 2>{shlex.quote(str(ctx.path('run.stderr')))}\n"
                        f"echo $? > {shlex.quote(str(exit_file))}\n")
    sock = f"chunkd-it-{os.getpid()}-{ctx.queue}"
    tmux = ["tmux", "-L", sock]
    subprocess.run(tmux + ["new-session", "-d", "-s", "run", "-x", "160", "-y", "40", f"bash {shlex.quote(str(script))}"],
                   check=True, env={k: v for k, v in os.environ.items() if not k.startswith("TMUX")})
    try:
        wait_until(lambda: count_lines(out) >= 200, 30,
                   lambda: f"200 results written before Ctrl-C ({count_lines(out)}; stderr: "
                           f"{ctx.path('run.stderr').read_text()[-300:] if ctx.path('run.stderr').exists() else ''})")
        before = count_lines(out)
        sent = time.monotonic()
        subprocess.run(tmux + ["send-keys", "-t", "run", "C-c"], check=True)
        wait_until(lambda: exit_file.exists() and exit_file.read_text().strip(), 25,
                   lambda: f"`chunkd run` to exit after Ctrl-C in tmux (stderr: "
                           f"{ctx.path('run.stderr').read_text()[-400:]!r})")
        elapsed = time.monotonic() - sent
    finally:
        subprocess.run(tmux + ["kill-server"], capture_output=True)
    rc = int(exit_file.read_text().strip())
    err = ctx.path("run.stderr").read_text()
    check(rc == 1, f"exit status {rc} after Ctrl-C (expected 1: the job is incomplete); stderr: {err[-300:]!r}")
    check("interrupted" in err and "(incomplete)" in err, f"run did not say it was interrupted: {err[-400:]!r}")
    _check_partial_output(out, 3000, before)
    check(not redis_servers_tagged(str(tmpdir)), "the private redis-server is still running after the run exited")
    print(f"  Ctrl-C to exit: {elapsed:.1f}s")


def _spawn_group(ctx, argv, env, name):
    """A process in a session (and process group) of its own, as a shell job is; output to files."""
    err = ctx.path(f"{name}.stderr")
    with open(err, "wb") as e:
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=e, env=env,
                             cwd=ctx.tmp, start_new_session=True)
    return p, err


def _wait_group(p, timeout, what, err):
    try:
        return p.wait(scaled(timeout))
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        check(False, f"{what}: still running after {scaled(timeout):.0f}s; stderr: {err.read_text()[-400:]!r}")


def test_sigint_to_process_group_and_second_signal(ctx):
    # killpg(SIGINT) as a shell's job control does: the run drains and exits 1; then again with a second SIGINT
    # during the drain: it exits at once.
    for round_no, second in enumerate([False, True], 1):
        tmpdir = ctx.short_tmpdir()
        out = ctx.path(f"out{round_no}.jsonl")
        items = _sleep_items(ctx, 2000, 800 if not second else 5000, f"items{round_no}.jsonl")
        p, err = _spawn_group(ctx, [ctx.bin, "run", "--handler", "sleep", "--concurrency", "200", "--out", str(out),
                                    str(items)], _run_env(ctx, tmpdir), f"run{round_no}")
        try:
            if second:
                wait_until(lambda: "worker" in err.read_text(), 20, "the run's worker to start")
                wait_until(lambda: any(p2 for p2 in redis_servers_tagged(str(tmpdir))), 10, "its redis-server")
            else:
                wait_until(lambda: count_lines(out) >= 200, 30, lambda: f"200 results ({count_lines(out)})")
            before = count_lines(out)
            os.killpg(p.pid, signal.SIGINT)
            if second:
                wait_until(lambda: "interrupted" in err.read_text(), 10, "the run to take the first SIGINT")
                os.killpg(p.pid, signal.SIGINT)
            rc = _wait_group(p, 8 if second else 20, f"round {round_no}", err)
        finally:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
        check(rc == 1, f"round {round_no}: exit {rc} (expected 1); stderr: {err.read_text()[-300:]!r}")
        if not second:
            _check_partial_output(out, 2000, before)
        # _exit on the second signal: PR_SET_PDEATHSIG still takes the private server down with it.
        wait_until(lambda: not redis_servers_tagged(str(tmpdir)), 10,
                   f"round {round_no}: the private redis-server to be gone")


def test_timeout_command_ends_run(ctx):
    # `timeout 3 chunkd run ...` signals (SIGTERM) its whole process group when the time is up.
    tmpdir = ctx.short_tmpdir()
    out = ctx.path("out.jsonl")
    items = _sleep_items(ctx, 3000, 1000)
    p, err = _spawn_group(ctx, ["timeout", "--preserve-status", "3", ctx.bin, "run", "--handler", "sleep",
                                "--concurrency", "200", "--out", str(out), str(items)], _run_env(ctx, tmpdir), "timeout")
    rc = _wait_group(p, 25, "timeout 3 chunkd run", err)
    check(rc == 1, f"exit {rc} (expected 1: interrupted); stderr: {err.read_text()[-300:]!r}")
    _check_partial_output(out, 3000, 1)
    check(not redis_servers_tagged(str(tmpdir)), "the private redis-server outlived the run")


def test_private_redis_killed_ends_run(ctx):
    # The private redis-server dies anyway (OOM killer, an operator): the run says so and ends in bounded time,
    # keeping what it wrote (before: it reconnected forever).
    tmpdir = ctx.short_tmpdir()
    out = ctx.path("out.jsonl")
    items = _sleep_items(ctx, 3000, 1000)
    p, err = _spawn_group(ctx, [ctx.bin, "run", "--handler", "sleep", "--concurrency", "200", "--drain-timeout-ms",
                                "2000", "--out", str(out), str(items)], _run_env(ctx, tmpdir), "run")
    try:
        wait_until(lambda: count_lines(out) >= 200, 30, lambda: f"200 results ({count_lines(out)})")
        before = count_lines(out)
        servers = redis_servers_tagged(str(tmpdir))
        check(len(servers) == 1, f"expected one private redis-server, found {servers}")
        killed = time.monotonic()
        os.kill(servers.pop(), signal.SIGKILL)
        # --drain-timeout-ms 2000, the committer's 5 s grace, a few seconds of margin.
        rc = _wait_group(p, 15, "chunkd run after its redis-server was killed", err)
        elapsed = time.monotonic() - killed
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    text = err.read_text()
    check(rc == 1, f"exit {rc} (expected 1); stderr: {text[-300:]!r}")
    check("private redis-server exited" in text, f"the run did not say its redis-server died: {text[-400:]!r}")
    _check_partial_output(out, 3000, before)
    print(f"  exit {elapsed:.1f}s after the kill")


def test_worker_drain_with_redis_gone_is_bounded(ctx):
    # SIGTERM, then Redis goes away for good while the drain waits for the last items: the drain ends within
    # --drain-timeout-ms plus the committer's grace, says so and exits 1; the chunks stay in its processing list
    # (the Redis data is gone here, but on a Redis that comes back the reaper returns them).
    server = ctx.start_redis()
    ctx.run("enqueue", "--queue", ctx.queue, "--chunk-size", 10, _sleep_items(ctx, 100, 1500),
            redis="flag", url=server.url())
    worker = ctx.spawn("worker", "--queue", ctx.queue, "--handler", "sleep", "--concurrency", 100,
                       "--drain-timeout-ms", 2000, "--redis-timeout-ms", 1000, redis="flag", url=server.url())
    c = server.client()
    wait_until(lambda: c.execute("LLEN", ctx.key("pending")) == 0, 15,
               lambda: f"the worker to take every chunk ({worker.describe()})")
    c.close()
    worker.send(signal.SIGTERM)
    server.stop()  # SIGKILL: gone for good
    sent = time.monotonic()
    worker.wait(15)
    elapsed = time.monotonic() - sent
    check(worker.returncode == 1, f"expected exit 1 (drain incomplete), got {worker.describe()}")
    err = worker.stderr()
    check("drain incomplete" in err, f"the worker did not say its drain was incomplete: {err[-400:]!r}")
    print(f"  exit {elapsed:.1f}s after SIGTERM")


def test_draining_worker_keeps_its_lease(ctx):
    # A rollout: worker A drains 8 s items with --lease-ms 2000 while worker B runs beside it. A keeps renewing its
    # lease until it has committed everything, so B's reaper never takes its chunks: every call is made once.
    n = 20
    items = [{"id": i, "path": f"/{ctx.queue}/{i}?delay_ms=8000"} for i in range(n)]
    ctx.run("enqueue", "--queue", ctx.queue, "--chunk-size", 5, ctx.write_jsonl("items.jsonl", items))
    common = ["--queue", ctx.queue, "--handler", "http", "--base-url", ctx.mock.url, "--lease-ms", 2000,
              "--concurrency", 100]
    a = ctx.spawn("worker", *common, "--drain-timeout-ms", 30000, name="worker A")
    wait_until(lambda: ctx.mock.total() >= n, 15, lambda: f"A to have all {n} calls in flight "
                                                          f"({ctx.mock.total()}; {a.describe()})")
    b = ctx.spawn("worker", *common, name="worker B")
    wait_until(lambda: ctx.r.execute("SCARD", ctx.key("workers")) == 2, 10,
               lambda: f"B to register ({b.describe()})")
    a.send(signal.SIGTERM)
    # Reaper turns while A drains: B's own (every second, when it gets the reaper lock) and `chunkd recover` by hand.
    recovered = []
    deadline = time.monotonic() + scaled(30)
    while a.alive() and time.monotonic() < deadline:
        out = ctx.run("recover", "--queue", ctx.queue).stdout()
        if not out.startswith("recovered 0 "):
            recovered.append(out.strip())
        time.sleep(0.5)  # the pace of the reaper turns, not a wait for a condition
    a.wait(30, expect_rc=0)
    check(not recovered, f"a reaper took chunks from the draining worker: {recovered}")
    wait_until(lambda: ctx.xlen() >= n, 30, lambda: f"{n} results ({ctx.xlen()})")
    b.send(signal.SIGTERM)
    b.wait(30, expect_rc=0)
    counts = ctx.mock.counts()["paths"]
    twice = {p: c for p, c in counts.items() if p.startswith(f"/{ctx.queue}/") and c != 1}
    check(not twice, f"calls made more than once during A's drain (path: count): {twice}")
    results = ctx.stream_results()
    ids = sorted(r["id"] for r in results)
    check(ids == list(range(n)), f"results stream ids {ids}")
    check(all(r.get("ok") for r in results), f"failed results: {[r for r in results if not r.get('ok')][:2]}")


def test_healthz_stays_live_in_redis_outage(ctx):
    # Liveness is about the worker's own threads. With items finishing and Redis gone, the committer waits for
    # Redis; /healthz must stay 200 (else Kubernetes restarts every worker at once), /readyz says 503.
    server = ctx.start_redis()
    ctx.run("enqueue", "--queue", ctx.queue, "--chunk-size", 10, _sleep_items(ctx, 5000, 100),
            redis="flag", url=server.url())
    worker, port = ctx.spawn_http("worker", "--queue", ctx.queue, "--handler", "sleep", "--concurrency", 200,
                                  "--redis-timeout-ms", 500, redis="flag", url=server.url())
    c = server.client()
    wait_until(lambda: len(stream_lines(c, ctx.key("results"))) >= 200, 20,
               lambda: f"results flowing ({worker.describe()})")
    c.close()
    server.stop()
    wait_until(lambda: http_get(port, "/readyz")[0] == 503, 10, "/readyz 503 in the outage")
    # The committer's stall limit is --redis-timeout-ms + 5 s: watch /healthz well past it.
    bad = []
    end = time.monotonic() + 9
    while time.monotonic() < end:
        status, body = http_get(port, "/healthz")
        if status != 200:
            bad.append((status, body.strip()[:100]))
        time.sleep(0.25)  # a probe's period, not a wait for a condition
    check(not bad, f"/healthz failed during a Redis outage: {bad[:3]} ({len(bad)} probes)")
    server.start(port=server.port)
    wait_until(lambda: http_get(port, "/readyz")[0] == 200, 20, "/readyz 200 once Redis is back")
    worker.send(signal.SIGTERM)
    worker.wait(30)


def _metric(port, name):
    status, text = http_get(port, "/metrics")
    check(status == 200, f"/metrics answered {status}")
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    check(False, f"{name} not in /metrics")


def test_readyz_when_redis_refuses_writes(ctx):
    # maxmemory with noeviction: Redis answers every write with OOM. The worker is not ready, says why, and counts
    # the errors; once Redis takes writes again it is ready and the items commit.
    server = ctx.start_redis(extra_args=["--maxmemory-policy", "noeviction"])
    ctx.run("enqueue", "--queue", ctx.queue, "--chunk-size", 10, _sleep_items(ctx, 200, 20),
            redis="flag", url=server.url())
    worker, port = ctx.spawn_http("worker", "--queue", ctx.queue, "--handler", "sleep", "--concurrency", 50,
                                  "--lease-ms", 3000, redis="flag", url=server.url())
    c = server.client()
    wait_until(lambda: http_get(port, "/readyz")[0] == 200, 15, lambda: f"/readyz 200 ({worker.describe()})")
    wait_until(lambda: len(stream_lines(c, ctx.key("results"))) == 200, 20, "the first 200 results")
    errors_before = _metric(port, "chunkd_redis_errors_total")
    c.execute("CONFIG", "SET", "maxmemory", "1")  # every write now: OOM command not allowed
    try:
        wait_until(lambda: http_get(port, "/readyz")[0] == 503, 10,
                   lambda: f"/readyz 503 while Redis refuses writes ({http_get(port, '/readyz')})")
        body = http_get(port, "/readyz")[1]
        check("OOM" in body and "refuses writes" in body, f"/readyz does not give the reason: {body!r}")
        wait_until(lambda: _metric(port, "chunkd_redis_errors_total") > errors_before, 10,
                   "chunkd_redis_errors_total to count the refusals")
        check(http_get(port, "/healthz")[0] == 200, "/healthz failed while Redis refuses writes")
    finally:
        c.execute("CONFIG", "SET", "maxmemory", "0")
    wait_until(lambda: http_get(port, "/readyz")[0] == 200, 15, "/readyz 200 once Redis takes writes again")
    worker.send(signal.SIGTERM)
    worker.wait(30, expect_rc=0)
    c.close()
    err = worker.stderr()
    check("OOM" in err, f"the worker did not log the refusal: {err[-400:]!r}")
    check(err.count("cannot renew this worker's lease") <= 4,
          f"the refusal was logged more than once per interval: {err[-600:]!r}")


def test_sigterm_under_memory_limit_is_bounded(ctx):
    # A worker under an address-space limit (a pod's memory limit) holding a 60 MB chunk: allocations fail where
    # it reads or commits the chunk (before: the committer retried an allocation that kept failing, and a SIGTERM
    # was ignored for minutes). SIGTERM ends it within --drain-timeout-ms plus the committer's grace, and no item
    # is lost: each is in the results or back in pending.
    if os.environ.get("CHUNKD_IT_SANITIZER"):
        skip("an address-space limit and ASan's shadow memory do not mix")
    import resource
    pad = "x" * 600_000
    items = ctx.write_jsonl("big.jsonl", [{"id": i, "pad": pad} for i in range(100)])
    ctx.run("enqueue", "--queue", ctx.queue, "--chunk-size", 100, items, timeout=60)
    check(ctx.llen("pending") == 1, f"expected one 60 MB chunk, pending has {ctx.llen('pending')}")

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (600 << 20, 600 << 20))
    err = ctx.path("worker.stderr")
    with open(err, "wb") as e:
        worker = subprocess.Popen([ctx.bin, "worker", "--queue", ctx.queue, "--handler", "echo",
                                   "--drain-timeout-ms", "3000"], stdin=subprocess.DEVNULL,
                                  stdout=subprocess.DEVNULL, stderr=e, env=ctx.env(), preexec_fn=limit)
    try:
        wait_until(lambda: ctx.llen("pending") == 0 or worker.poll() is not None, 30,
                   lambda: f"the worker to take the chunk ({err.read_text()[-300:]!r})")
        worker.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        try:
            rc = worker.wait(scaled(25))  # 3 s drain + 5 s grace + a command's --redis-timeout-ms, with margin
        except subprocess.TimeoutExpired:
            check(False, f"the worker ignored SIGTERM for 25 s under a 600 MiB address-space limit: "
                         f"{err.read_text()[-400:]!r}")
        elapsed = time.monotonic() - sent
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    check(rc in (0, 1), f"exit {rc}: {err.read_text()[-400:]!r}")
    done = {id_key(r["id"]) for r in ctx.stream_results()}
    todo = set(ctx.pending_todo())
    # A drain that gave up (exit 1) leaves the chunk in its processing list for the reaper: count those items too.
    held = set()
    for key in ctx.processing_keys():
        for text in ctx.r.lrange_all(key):
            held |= {id_key(it["id"]) for it in json.loads(text)["items"]}
    lost = {id_key(i) for i in range(100)} - done - todo - held
    check(not lost, f"{len(lost)} items neither committed, pending nor held after the stop")
    print(f"  exit {rc} {elapsed:.1f}s after SIGTERM")
