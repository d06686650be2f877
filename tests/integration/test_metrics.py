"""The worker's HTTP face: /healthz, /readyz, /metrics (checked by promtool and scraped by a real Prometheus)."""

import json
import re
import shutil
import signal
import subprocess
import urllib.error
import urllib.request

from harness import check, free_port, http_get, wait_until


def get(port, path, method="GET"):
    """harness.http_get (kept under this name for the tests that import it from here)."""
    return http_get(port, path, method)


def start_worker(ctx, *args, **kw):
    worker, port = ctx.spawn_http("worker", "--queue", ctx.queue, *args, **kw)
    wait_until(lambda: get(port, "/healthz")[0] == 200, 15, lambda: f"/healthz answering ({worker.describe()})")
    return worker, port


def stopped(worker):
    """True once the worker has logged its stop: after that line its HTTP server closes, and a probe that gets
    no answer is no failure. Before it, one is."""
    return "stopped; peak RSS" in worker.stderr()


def test_endpoints_and_drain(ctx):
    items = [{"id": i, "sleep_ms": 3000 if i < 10 else 10} for i in range(200)]
    ctx.run("enqueue", "--queue", ctx.queue, "--chunk-size", 10, ctx.write_jsonl("items.jsonl", items))
    worker, port = start_worker(ctx, "--drain-timeout-ms", 4000)
    # /healthz answers from the start; /readyz only once Redis is reached (the HTTP server starts before that, so
    # a probe in between is rightly 503 "waiting for Redis": CI once caught that instant).
    wait_until(lambda: get(port, "/readyz")[0] == 200, 15, lambda: f"/readyz 200 on a connected worker "
                                                                   f"(is {get(port, '/readyz')}; {worker.describe()})")
    check(get(port, "/nope")[0] == 404, "an unknown path is not 404")
    check(get(port, "/metrics", "POST")[0] == 405, "POST /metrics is not 405")
    wait_until(lambda: ctx.stat("done") >= 190, 20, "the fast items done")
    status, text = get(port, "/metrics")
    check(status == 200, f"/metrics answered {status}")
    prefix = f'chunkd_items_total{{queue="{ctx.queue}",outcome="ok"}} '
    ok_lines = [line for line in text.splitlines() if line.startswith(prefix)]
    check(ok_lines and float(ok_lines[0][len(prefix):]) >= 190, f"items ok counter: {ok_lines}")
    for name in ("chunkd_item_duration_seconds_bucket", "chunkd_commit_duration_seconds_count",
                 "chunkd_items_in_flight", "chunkd_items_running", "process_resident_memory_bytes", "process_open_fds",
                 "chunkd_build_info{queue="):
        check(name in text, f"/metrics has no {name}")
    check(ctx.server.url() not in text and "redis://" not in text, "/metrics shows the Redis address")
    # SIGTERM with the slow chunk in flight: not ready from the first instant, still alive, then gone.
    # The slow items keep it draining for about 3 s: every probe meanwhile must be answered.
    worker.send(signal.SIGTERM)
    wait_until(lambda: get(port, "/readyz")[0] == 503, 2, lambda: f"/readyz turning 503 on SIGTERM "
                                                                  f"(is {get(port, '/readyz')}; {worker.describe()})")
    check(not stopped(worker), "set-up: the worker stopped before its slow items finished")
    healthz = get(port, "/healthz")
    check(healthz[0] == 200, f"/healthz during a drain: {healthz} (None: nothing answered)")
    worker.wait(15, expect_rc=0)


def test_promtool_and_prometheus_scrape(ctx):
    promtool, prometheus = shutil.which("promtool"), shutil.which("prometheus")
    check(promtool and prometheus, "promtool and prometheus are needed (Debian package prometheus; make deps)")
    ctx.run("enqueue", "--queue", ctx.queue, ctx.write_jsonl("items.jsonl", [{"id": i, "sleep_ms": 5}
                                                                            for i in range(300)]))
    worker, port = start_worker(ctx)
    wait_until(lambda: ctx.stat("done") >= 300, 20, "items done")
    status, text = get(port, "/metrics")
    lint = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
    check(lint.returncode == 0, f"promtool check metrics: {lint.stdout}{lint.stderr}")

    prom_port = free_port()
    cfg = ctx.path("prometheus.yml")
    cfg.write_text("global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
                   "scrape_configs:\n"
                   f"  - job_name: chunkd\n    static_configs: [{{targets: ['127.0.0.1:{port}']}}]\n")
    prom = subprocess.Popen([prometheus, f"--config.file={cfg}", f"--storage.tsdb.path={ctx.path('tsdb')}",
                             f"--web.listen-address=127.0.0.1:{prom_port}"],
                            stdout=subprocess.DEVNULL, stderr=open(ctx.path("prometheus.log"), "wb"))
    try:
        def query(q):
            s, body = get(prom_port, "/api/v1/query?query=" + urllib.request.quote(q))
            if s != 200:
                return []
            return json.loads(body)["data"]["result"]

        wait_until(lambda: query('up{job="chunkd"}') and query('up{job="chunkd"}')[0]["value"][1] == "1", 60,
                   "Prometheus scraping the worker (up == 1)")
        wait_until(lambda: query(f'chunkd_items_total{{outcome="ok",queue="{ctx.queue}"}}'), 30,
                   "chunkd_items_total in Prometheus")
        ok = float(query(f'chunkd_items_total{{outcome="ok",queue="{ctx.queue}"}}')[0]["value"][1])
        check(ok == 300, f"Prometheus sees chunkd_items_total ok={ok}, expected 300")
        check(query("chunkd_build_info"), "chunkd_build_info not scraped")
    finally:
        prom.terminate()
        try:
            prom.wait(10)
        except subprocess.TimeoutExpired:
            prom.kill()
    worker.send(signal.SIGTERM)
    worker.wait(15, expect_rc=0)


def test_port_in_use_exits_1(ctx):
    worker, port = start_worker(ctx)
    second = ctx.spawn("worker", "--queue", ctx.queue, "--http-addr", "127.0.0.1",
                       env={"CHUNKD_HTTP_PORT": str(port)}, name="second worker")
    second.wait(10, expect_rc=1)
    check("http-port" in second.stderr(), f"the bind error does not name --http-port: {second.stderr()[-300:]}")
    worker.send(signal.SIGTERM)
    worker.wait(15, expect_rc=0)


def test_readyz_during_redis_outage(ctx):
    from harness import RedisServer
    server = RedisServer(ctx.path("own-redis")).start()
    try:
        worker, port = ctx.spawn_http("worker", "--queue", ctx.queue, "--redis-timeout-ms", 500, redis="flag",
                                      url=server.url())
        wait_until(lambda: get(port, "/readyz")[0] == 200, 15, lambda: f"/readyz 200 ({worker.describe()})")
        server.proc.send_signal(signal.SIGSTOP)  # Redis stops answering
        try:
            wait_until(lambda: get(port, "/readyz")[0] == 503, 10, "/readyz turning 503 in a Redis outage")
            check(get(port, "/healthz")[0] == 200, "/healthz failed during a Redis outage (it must stay live)")
        finally:
            server.proc.send_signal(signal.SIGCONT)
        wait_until(lambda: get(port, "/readyz")[0] == 200, 15, "/readyz back to 200 after the outage")
        worker.send(signal.SIGTERM)
        worker.wait(15, expect_rc=0)
    finally:
        server.stop()


def test_injected_stall_fails_healthz(ctx):
    worker, port = ctx.spawn_http("worker", "--queue", ctx.queue, "--threads", 2,
                                  env={"CHUNKD_TEST_STALL_MS": "9000"})
    wait_until(lambda: get(port, "/healthz")[0] == 503, 10, lambda: f"/healthz 503 ({worker.describe()})")
    status, body = get(port, "/healthz")
    check("loop 0" in body, f"/healthz does not say which loop is stuck: {body!r}")
    wait_until(lambda: get(port, "/healthz")[0] == 200, 15, "/healthz back to 200 after the stall")
    worker.send(signal.SIGTERM)
    worker.wait(15, expect_rc=0)


def test_scrapes_while_items_flow(ctx):
    import threading
    from harness import assert_exactly_once, read_jsonl
    items = [{"id": i, "sleep_ms": 20} for i in range(5000)]
    ctx.run("enqueue", "--queue", ctx.queue, ctx.write_jsonl("items.jsonl", items))
    worker, port = ctx.spawn_http("worker", "--queue", ctx.queue, "--concurrency", 500, "--exit-when-empty")
    wait_until(lambda: get(port, "/healthz")[0] == 200, 15, lambda: f"worker up ({worker.describe()})")
    stop, scrapes, last = threading.Event(), [], {}

    def scrape():
        while not stop.is_set():
            s, text = get(port, "/metrics")
            if s != 200 and stopped(worker):  # the worker is done and its HTTP server closing: not a failure
                return
            scrapes.append(s)
            if s == 200:
                last["text"] = text

    threads = [threading.Thread(target=scrape) for _ in range(8)]
    for t in threads:
        t.start()
    out = ctx.path("results.jsonl")
    collector = ctx.spawn("collect", "--queue", ctx.queue, "--out", out, "--until-done")
    try:
        worker.wait(60, expect_rc=0)
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    collector.wait(30, expect_rc=0)
    bad = [s for s in scrapes if s != 200]
    check(not bad, f"{len(bad)} of {len(scrapes)} scrapes while the worker ran were not answered 200 "
                   f"(None: no answer): {sorted(set(map(str, bad)))}")
    check(len(scrapes) >= 20, f"only {len(scrapes)} scrapes while items flowed")
    # The worker's own high of items held (running plus finished and not yet committed): at most twice
    # --concurrency, whatever a scrape happened to see.
    m = re.search(r"^chunkd_items_in_flight_peak\{[^}]*\} (\d+)$", last.get("text", ""), re.M)
    check(m and 100 <= int(m.group(1)) <= 2 * 500,
          f"chunkd_items_in_flight_peak {m.group(1) if m else None}, expected 100 (a chunk) to 1000 (2 x 500)")
    assert_exactly_once(read_jsonl(out), [it["id"] for it in items], "results with concurrent scrapes")


def test_json_logs(ctx):
    worker, port = start_worker(ctx, "--log-format", "json")
    worker.send(signal.SIGTERM)
    worker.wait(15, expect_rc=0)
    lines = [line for line in worker.stderr().splitlines() if line.strip()]
    check(lines, "no log lines")
    for line in lines:
        try:
            obj = json.loads(line)
        except ValueError:
            check(False, f"a log line is not JSON: {line!r}")
        check({"time", "level", "msg"} <= set(obj), f"a JSON log line lacks time/level/msg: {line!r}")
    check(any(json.loads(l).get("queue") == ctx.queue and json.loads(l).get("worker") for l in lines),
          "no JSON log line carries the queue and worker fields")


def test_status_watch(ctx):
    items = [{"id": i, "sleep_ms": 50} for i in range(3000)]
    ctx.run("enqueue", "--queue", ctx.queue, ctx.write_jsonl("items.jsonl", items))
    watch = ctx.spawn("status", "--queue", ctx.queue, "--watch", "--interval-ms", 200, "--json", name="status --watch")
    worker = ctx.spawn("worker", "--queue", ctx.queue, "--concurrency", 300, "--exit-when-empty")
    worker.wait(60, expect_rc=0)
    wait_until(lambda: len(watch.stdout().splitlines()) >= 3, 10, "three status lines")
    watch.send(signal.SIGTERM)
    watch.wait(10, expect_rc=0)
    rows = [json.loads(line) for line in watch.stdout().splitlines()]
    check(all("items_per_s" in r and "eta_s" in r for r in rows), f"status --watch --json rows lack rate/ETA: {rows[:2]}")
    done = [r["done"] for r in rows]
    check(done == sorted(done), f"done went backwards across status lines: {done}")
    check(any(r["items_per_s"] > 0 for r in rows), "status --watch never showed a rate above 0")
    # The plain form: "queue Q: sealed, N items" then one "  name value unit" line per counter, the same counters
    # as --json.
    plain = ctx.run("status", "--queue", ctx.queue).stdout().splitlines()
    check(plain and plain[0] == f"queue {ctx.queue}: sealed, 3000 items",
          f"plain status does not start with the queue: {plain[:2]}")
    fields = {}
    for line in plain[1:]:
        name, _, value = line.strip().partition(" ")
        value, _, unit = value.strip().partition(" ")
        check(line.startswith("  ") and value.lstrip("-").isdigit() and unit in ("items", "chunks", "entries",
                                                                                 "workers", "lines", "bytes"),
              f"plain status line {line!r}")
        fields[name] = int(value)
    want = {k: v for k, v in ctx.status_json().items() if isinstance(v, int) and not isinstance(v, bool)}
    check(fields == want, f"plain status {fields} differs from --json {want}")
    check(fields.get("done") == 3000 and fields.get("enqueued") == 3000 and fields.get("pending") == 0,
          f"plain status after the run: done {fields.get('done')}, enqueued {fields.get('enqueued')}, "
          f"pending {fields.get('pending')}; expected 3000, 3000, 0")
