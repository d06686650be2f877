"""The http handler against the mock HTTP API (tests/mockapi; run.py --mockapi): requests and results,
concurrency (also above a low soft open-file limit, and behind a slow call), retries and backoff,
Retry-After, requeue of dead items, the body cap, timeouts, dropped connections, allowed hosts and
refused items, redirects, Idempotency-Key, secret headers, settings, SIGTERM with calls in flight.

Each test uses paths under /<queue>/ and fail_times keys named after the queue, so the mock's per-path
counters (/_count) tell exactly how many requests chunkd made; run.py also resets the mock between tests.
Where the mock cannot help (chunked bodies, redirects), a small server in a thread of this process does.
"""

import http.server
import json
import re
import resource
import signal
import threading
import time
import urllib.parse

from harness import assert_exactly_once, check, id_key, one_line, read_jsonl, scaled, wait_until

SECRET = "s3cr3t-Tok3n-9f2a"          # in CHUNKD_HTTP_HEADERS
FILE_SECRET = "f1le-S3cr3t-77b1"      # in a --header-file


# ---- helpers ----------------------------------------------------------------------------------------------

def _item_ids(items):
    """The id chunkd gives each item: its "id" (string or integer), else its 1-based line number."""
    ids = []
    for n, it in enumerate(items, 1):
        i = it.get("id") if isinstance(it, dict) else None
        ids.append(i if isinstance(i, str) or (isinstance(i, int) and not isinstance(i, bool)) else n)
    return ids


def _http(ctx, items, *flags, label, queue=None, base_url=True, env=None, timeout=60, **kw):
    """`chunkd run --handler http` over items (in the test's Redis, queue Q unless given) with --base-url
    the mock unless base_url=False (kw go to ctx.run). Checks every item has exactly one result; returns
    ({id_key(id): result line}, proc)."""
    path = ctx.write_jsonl(f"{label}.jsonl", items)
    out = ctx.path(f"{label}.out.jsonl")
    args = ["--queue", queue or ctx.queue, "--handler", "http"]
    if base_url:
        args += ["--base-url", ctx.mock.url]
    args += [str(f) for f in flags] + ["--out", out, path]
    expect_rc = kw.pop("expect_rc", None)
    proc = ctx.run("run", *args, env=env, timeout=timeout, name=f"chunkd run ({label})", expect_rc=expect_rc, **kw)
    results = read_jsonl(out)
    assert_exactly_once(results, _item_ids(items), f"run output ({label})")
    if expect_rc is None:  # 4 exactly when an item failed (issue 16)
        want = 4 if any(r.get("ok") is False for r in results) else 0
        check(proc.returncode == want, f"`chunkd run ({label})` exit {proc.returncode}, expected {want}")
    return {id_key(r["id"]): r for r in results}, proc


def _ok(results, item_id):
    """The "result" of a successful item (status, body, headers, ms), after checking the line's shape."""
    r = results[id_key(item_id)]
    check(r.get("ok") is True, lambda: f"id {item_id!r}: expected ok=true, got {one_line(json.dumps(r), 300)}")
    res = r.get("result")
    check(isinstance(res, dict) and set(res) == {"status", "body", "headers", "ms"},
          lambda: f"id {item_id!r}: result is not {{status, body, headers, ms}}: {one_line(json.dumps(res), 300)}")
    check(isinstance(res["status"], int) and isinstance(res["ms"], int) and res["ms"] >= 0
          and isinstance(res["headers"], dict), f"id {item_id!r}: bad result field types: {res}")
    check(isinstance(r.get("attempts"), int) and isinstance(r.get("ms"), int),
          f"id {item_id!r}: result line without integer attempts/ms: {r}")
    return res


def _failed(results, item_id):
    """The result line of a failed item, after checking it is one (ok=false with an error, no result)."""
    r = results[id_key(item_id)]
    check(r.get("ok") is False and isinstance(r.get("error"), str) and r["error"] and "result" not in r,
          lambda: f"id {item_id!r}: expected ok=false with an error and no result, got {one_line(json.dumps(r), 300)}")
    return r


def _echo(results, item_id):
    """The mock's echo of the request (the parsed JSON body of a 200)."""
    res = _ok(results, item_id)
    body = res["body"]
    check(res["status"] == 200 and isinstance(body, dict) and {"method", "path", "query", "headers"} <= set(body),
          lambda: f"id {item_id!r}: expected the mock's echo (JSON object) with status 200, got "
                  f"{one_line(json.dumps(res), 300)}")
    return body


def _refused(results, item_id, *words):
    """An item chunkd refused to send: failed at once, its error naming each of words."""
    r = _failed(results, item_id)
    check(r.get("attempts") == 1 and "status" not in r,
          f"id {item_id!r}: a refused item should fail on its first attempt with no HTTP status: {r}")
    for w in words:
        check(w.lower() in r["error"].lower(), f"id {item_id!r}: error does not mention {w!r}: {r['error']!r}")
    return r


def _counts(ctx, paths):
    return {p: ctx.mock.count(p) for p in paths}


def _check_counts(ctx, expected, what):
    got = _counts(ctx, expected)
    bad = {p: (n, got[p]) for p, n in expected.items() if got[p] != n}
    check(not bad, lambda: f"{what}: mock request counts differ (path: (expected, got)): "
                           + one_line(repr(dict(list(bad.items())[:6])), 400))


class _PyServer:
    """A loopback HTTP/1.1 server in a thread for what the mock cannot do:
    - GET /redirect?to=URL answers 302 with Location: URL;
    - GET /chunked?n=N answers a JSON string of N bytes in chunks of 300 (Transfer-Encoding: chunked, no
      Content-Length), so only chunkd's own body cap can stop it (libcurl's size check needs a Content-Length,
      which the mock always sends);
    - as an HTTP proxy: GET http://host/path answers {"via":"proxy","url":"http://host/path"}."""

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            if self.path.startswith("http://"):
                body = json.dumps({"via": "proxy", "url": self.path}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            url = urllib.parse.urlsplit(self.path)
            query = dict(urllib.parse.parse_qsl(url.query))
            if url.path == "/redirect":
                self.send_response(302)
                self.send_header("Location", query["to"])
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            n = int(query["n"])
            body = b'"' + b"x" * (n - 2) + b'"'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for i in range(0, len(body), 300):
                part = body[i:i + 300]
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
            self.wfile.write(b"0\r\n\r\n")

        def handle(self):
            try:
                super().handle()
            except OSError:  # chunkd hung up (on a body over its cap, or at exit)
                pass

        def log_message(self, *args):
            pass

    def __enter__(self):
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self.Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def _enqueue_lines(ctx, items, name="items.jsonl", chunk_size=100):
    """Enqueue items (compact JSON lines); returns the lines (the item texts chunkd must keep byte for byte)."""
    lines = [json.dumps(it, separators=(",", ":")) for it in items]
    ctx.run("enqueue", "--queue", ctx.queue, "--chunk-size", chunk_size, ctx.write_jsonl(name, lines))
    return lines


# ---- requests and results ---------------------------------------------------------------------------------

def test_requests_and_results(ctx):
    base = f"/{ctx.queue}"
    n_get, n_paths = 300, 10
    items = [{"id": f"g{i}", "path": f"{base}/get/{i % n_paths}",
              "query": {"n": i, "delay_ms": 5 + i % 20, "tag": "a b&c=d#e/\u00e9"}} for i in range(n_get)]
    json_body = {"n": 1, "s": "h\u00e9 \"q\"", "list": [1, 2.5, None, True], "o": {}}
    items += [
        {"id": "post-json", "path": f"{base}/post-json", "body": json_body},
        {"id": "post-text", "path": f"{base}/post-text", "body": "plain {text} body\n"},
        {"id": "put", "method": "PUT", "path": f"{base}/put", "body": {"k": "v"},
         "headers": {"Content-Type": "application/merge-patch+json"}},
        {"id": "delete", "method": "DELETE", "path": f"{base}/thing/7"},
        {"id": "headers", "path": f"{base}/headers", "headers": {"X-Custom": "v 1; x=2", "Accept": "text/csv"}},
        {"id": "query-mix", "path": f"{base}/mix?a=1", "query": {"b": [1, 2], "c": True, "d": None}},
        {"id": "text", "path": f"{base}/text", "query": {"text": 1}},
        {"id": "no-content", "path": f"{base}/empty", "query": {"status": 204}},
        {"id": 77, "path": f"{base}/int-id", "ignored_field": [1, 2]},
    ]
    results, _ = _http(ctx, items, "--keep-headers", "x-mock,x-request-count", "--concurrency", 200,
                       label="mixed")

    seen_counts = {}
    for i in range(n_get):
        item = items[i]
        echo = _echo(results, item["id"])
        res = results[id_key(item["id"])]["result"]
        line = results[id_key(item["id"])]
        expected_query = {"n": str(i), "delay_ms": str(5 + i % 20), "tag": "a b&c=d#e/\u00e9"}
        check(echo["method"] == "GET" and echo["path"] == item["path"] and echo["query"] == expected_query,
              lambda: f"id {item['id']}: mock saw {echo['method']} {echo['path']} {echo['query']}, expected GET "
                      f"{item['path']} {expected_query}")
        check(echo["body"] == "", f"id {item['id']}: a GET without a body sent one: {echo['body']!r}")
        check(set(res["headers"]) == {"x-mock", "x-request-count"} and res["headers"]["x-mock"] == "1"
              and re.fullmatch(r"\d+", res["headers"]["x-request-count"] or ""),
              f"id {item['id']}: --keep-headers x-mock,x-request-count kept {res['headers']}")
        check(line["attempts"] == 1, f"id {item['id']}: attempts {line['attempts']}, expected 1")
        delay = 5 + i % 20
        check(res["ms"] >= delay - 1 and line["ms"] >= res["ms"],
              f"id {item['id']}: mock delay {delay} ms but result ms {res['ms']}, line ms {line['ms']}")
        seen_counts.setdefault(item["path"], []).append(int(res["headers"]["x-request-count"]))
    # Each path got exactly its 30 requests, and each result kept its own response's X-Request-Count.
    per_path = n_get // n_paths
    for p, counts in seen_counts.items():
        check(sorted(counts) == list(range(1, per_path + 1)),
              f"{p}: X-Request-Count values kept in results are {sorted(counts)}, expected 1..{per_path} once each")
    _check_counts(ctx, {p: per_path for p in seen_counts}, "GET items")

    echo = _echo(results, "post-json")
    check(echo["method"] == "POST" and echo["headers"].get("content-type") == "application/json",
          f"JSON body: expected POST with content-type application/json, got {echo['method']} "
          f"{echo['headers'].get('content-type')!r}")
    check(json.loads(echo["body"]) == json_body, f"JSON body arrived as {echo['body']!r}, sent {json_body!r}")
    echo = _echo(results, "post-text")
    check(echo["method"] == "POST" and echo["body"] == "plain {text} body\n",
          f"string body: expected POST with the string as is, got {echo['method']} {echo['body']!r}")
    check(echo["headers"].get("content-type") != "application/json",
          "a string body was sent as application/json")
    echo = _echo(results, "put")
    check(echo["method"] == "PUT" and json.loads(echo["body"]) == {"k": "v"}
          and echo["headers"].get("content-type") == "application/merge-patch+json",
          f"PUT with its own Content-Type: got {echo['method']} content-type "
          f"{echo['headers'].get('content-type')!r} body {echo['body']!r}")
    echo = _echo(results, "delete")
    check(echo["method"] == "DELETE" and echo["path"] == f"{base}/thing/7" and echo["body"] == "",
          f"DELETE: mock saw {echo['method']} {echo['path']} body {echo['body']!r}")
    echo = _echo(results, "headers")
    check(echo["headers"].get("x-custom") == "v 1; x=2" and echo["headers"].get("accept") == "text/csv",
          f"item headers: mock saw x-custom={echo['headers'].get('x-custom')!r} "
          f"accept={echo['headers'].get('accept')!r}, expected 'v 1; x=2' and 'text/csv' (once)")
    echo = _echo(results, "query-mix")
    check(echo["path"] == f"{base}/mix" and echo["query"] == {"a": "1", "b": "2", "c": "true", "d": ""},
          f"path with ?a=1 plus query {{b:[1,2],c:true,d:null}}: mock saw {echo['path']} {echo['query']}")
    res = _ok(results, "text")
    check(res["status"] == 200 and res["body"] == "hello",
          f"text/plain response: expected body 'hello' as a string, got {res['status']} {res['body']!r}")
    res = _ok(results, "no-content")
    check(res["status"] == 204 and res["body"] == "", f"204 response: got {res['status']} {res['body']!r}")
    echo = _echo(results, 77)
    check(echo["path"] == f"{base}/int-id", f"integer id item: mock saw {echo['path']}")


def test_reused_handles_carry_nothing_over(ctx):
    # One loop, one call at a time (--concurrency 1, chunks of 1 item): every call reuses the previous one's
    # pooled handle. A GET after a POST, PUT, DELETE, HEAD, a failed call or a body over the cap must still be
    # a plain GET: no method, body, header or response state left over.
    base = f"/{ctx.queue}/seq"
    before = [
        {"path": f"{base}/post", "body": {"a": 1}, "headers": {"X-Custom": "1"}},
        {"method": "PUT", "path": f"{base}/put", "body": "text body", "headers": {"Content-Type": "text/csv"}},
        {"method": "DELETE", "path": f"{base}/delete"},
        {"method": "HEAD", "path": f"{base}/head"},
        {"path": f"{base}/fail", "query": {"status": 503}},
        {"path": f"{base}/big", "query": {"body_bytes": 5000}},
        {"path": f"{base}/text", "query": {"text": 1}},
    ]
    items = []
    for n, it in enumerate(before):
        items.append(dict(it, id=f"{n}-{it.get('method', 'POST' if 'body' in it else 'GET')}"))
        items.append({"id": f"{n}-then-get", "path": f"{base}/get{n}", "query": {"n": n}})
    results, _ = _http(ctx, items, "--threads", 1, "--concurrency", 1, "--chunk-size", 1, "--max-attempts", 1,
                       "--max-result-bytes", 2000, label="sequence")
    for n, it in enumerate(before):
        name = f"{n}-then-get"
        echo = _echo(results, name)
        prev = items[2 * n]["id"]
        check(echo["method"] == "GET" and echo["path"] == f"{base}/get{n}" and echo["query"] == {"n": str(n)}
              and echo["body"] == "",
              f"GET after {prev}: mock saw {echo['method']} {echo['path']} {echo['query']} body {echo['body']!r}")
        leftover = {h: echo["headers"][h] for h in ("x-custom", "content-type", "content-length")
                    if h in echo["headers"]}
        check(not leftover, f"GET after {prev} carried headers of an earlier call: {leftover}")
    head = _ok(results, "3-HEAD")
    check(head["status"] == 200 and head["body"] == "", f"HEAD: got {head['status']} body {head['body']!r}")
    check(_echo(results, "1-PUT")["method"] == "PUT", "PUT was not sent as PUT")
    check(_echo(results, "2-DELETE")["method"] == "DELETE", "DELETE was not sent as DELETE")
    check(_ok(results, "6-GET")["body"] == "hello", "text/plain answer after a failed call came back wrong")
    _failed(results, "4-GET")
    _failed(results, "5-GET")
    _check_counts(ctx, {f"{base}/get{n}": 1 for n in range(len(before))} | {f"{base}/head": 1},
                  "sequential calls")


def test_concurrency_3000(ctx):
    # 3000 calls of 2 s each: serialized they would take 6000 s; in flight together, a few seconds. (200 ms calls
    # overlapped too little on a loaded machine under ASan, where opening 3000 connections takes about a second.)
    n = 3000
    path = f"/{ctx.queue}/slow"
    items = [{"id": i, "path": path, "query": {"delay_ms": 2000}} for i in range(n)]
    # Calls an earlier test abandoned stay in flight at the mock until their delay ends and would count in the peak
    # (3010 once): start from an idle mock.
    wait_until(lambda: ctx.mock.counts()["inflight"] == 0, 60, lambda: f"the mock idle ({ctx.mock.counts()})")
    ctx.mock.reset()
    start = time.monotonic()
    results, _ = _http(ctx, items, "--concurrency", n, label="conc", timeout=180)
    elapsed = time.monotonic() - start
    bad = [r for r in results.values() if r.get("ok") is not True or r.get("attempts") != 1]
    check(not bad, lambda: f"{len(bad)} of {n} calls failed or were retried, e.g. {one_line(json.dumps(bad[0]), 300)}")
    statuses = {r["result"]["status"] for r in results.values()}
    check(statuses == {200}, f"statuses {statuses}, expected only 200")
    check(elapsed < scaled(30), f"{n} calls of 2 s with --concurrency {n} took {elapsed:.1f}s "
                                f"(serialized: {n * 2:.0f}s); they did not run concurrently")
    _check_counts(ctx, {path: n}, f"{n} calls")
    # A time bound alone would pass at an effective concurrency of 250 (3000 x 2 s / 250 = 24 s): the mock's count
    # of calls in flight at once is the measure. Opening 3000 connections on a loaded 2-core machine (or under
    # ASan) takes longer than a call, so not all overlap; half of them must.
    peak = ctx.mock.counts()["max_inflight"]
    check(n // 2 <= peak <= n, f"--concurrency {n}: the mock saw at most {peak} calls at once (expected at least "
                               f"{n // 2}, at most {n})")
    print(f"  concurrency_3000: {peak} calls at once at the mock, {elapsed:.1f}s", flush=True)


def test_concurrency_is_exact(ctx):
    """--concurrency is the number of calls in flight, exactly: chunks larger than it, or than a loop's share, are
    run a share at a time (their other items wait in the loop), and the chunk fetched ahead waits too."""
    for conc, threads, chunk in ((7, 2, 25), (1, 4, 10), (12, 3, 5)):
        # Calls an earlier test abandoned (its worker gone) stay in flight at the mock until their delay ends; they
        # would count in this peak (once: 17 at --concurrency 7 on a loaded machine).
        wait_until(lambda: ctx.mock.counts()["inflight"] == 0, 60, lambda: f"the mock idle ({ctx.mock.counts()})")
        ctx.mock.reset()
        queue = f"{ctx.queue}-c{conc}"
        path = f"/{queue}/slow"
        items = [{"id": i, "path": path, "query": {"delay_ms": 60}} for i in range(60)]
        out = ctx.path(f"{queue}.out.jsonl")
        ctx.run("run", "--queue", queue, "--handler", "http", "--base-url", ctx.mock.url, "--concurrency", conc,
                "--threads", threads, "--chunk-size", chunk, "--out", out, ctx.write_jsonl(f"{queue}.jsonl", items),
                timeout=60)
        assert_exactly_once(read_jsonl(out), list(range(60)), f"results at --concurrency {conc}")
        peak = ctx.mock.counts()["max_inflight"]
        check(peak == conc, f"--concurrency {conc} --threads {threads}, chunks of {chunk}: the mock saw at most "
                            f"{peak} calls at once")


def test_concurrency_above_soft_fd_limit(ctx):
    # A soft limit of 1024 open files (a common default; the hard limit is usually far higher) and
    # --concurrency 2000: chunkd must raise its soft limit, or refuse the setting at start naming the limit,
    # not fail half the calls with connection errors.
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    n = 2000
    path = f"/{ctx.queue}/fd"
    items = [{"id": i, "path": path, "query": {"delay_ms": 300}} for i in range(n)]
    items_path = ctx.write_jsonl("fd.jsonl", items)
    out = ctx.path("fd.out.jsonl")
    proc = ctx.spawn("run", "--queue", ctx.queue, "--handler", "http", "--base-url", ctx.mock.url,
                     "--concurrency", n, "--max-attempts", 1, "--out", out, items_path, nofile=1024,
                     name=f"chunkd run --concurrency {n} (soft RLIMIT_NOFILE 1024, hard {hard})")
    proc.wait(120)
    if proc.returncode != 0:
        err = proc.stderr()
        check(re.search(r"descriptor|open files|nofile|ulimit", err, re.I) and "concurrency" in err,
              f"{proc.describe()}: a refusal should name the open-files limit and --concurrency")
        check(ctx.mock.count(path) == 0, "chunkd refused the setting but made requests first")
        return
    results = read_jsonl(out)
    assert_exactly_once(results, range(n), "run output")
    bad = [r for r in results if r.get("ok") is not True]
    check(not bad, lambda: f"soft RLIMIT_NOFILE 1024 (hard {hard}), --concurrency {n}: {len(bad)} of {n} calls "
                           f"failed, e.g. {one_line(json.dumps(bad[0]), 250)} (chunkd neither raised its soft "
                           f"limit nor refused the setting)")
    _check_counts(ctx, {path: n}, f"{n} calls")


def test_slow_call_does_not_hold_up_others(ctx):
    # One loop with one multi handle: the first call to the host is slow; the fast calls after it, to the
    # same host, must not wait for its answer (and must not time out without ever being sent).
    slow, fast = f"/{ctx.queue}/slow", f"/{ctx.queue}/fast"
    items = [{"id": "slow", "path": slow, "query": {"delay_ms": 3000}}]
    items += [{"id": f"fast{i}", "path": fast} for i in range(5)]
    results, _ = _http(ctx, items, "--threads", 1, "--concurrency", 50, "--http-timeout-ms", 1000,
                       "--max-attempts", 1, label="hol")
    r = _failed(results, "slow")
    check("time" in r["error"].lower(), f"slow call: expected a timeout error, got {r['error']!r}")
    stuck = []
    for i in range(5):
        r = results[id_key(f"fast{i}")]
        if r.get("ok") is not True or r["result"]["ms"] > 800:
            stuck.append(r)
    check(not stuck, lambda: f"{len(stuck)} of 5 fast calls (no delay) waited for the slow first call to the same "
                             f"host (3000 ms, --http-timeout-ms 1000): e.g. {one_line(json.dumps(stuck[0]), 300)}; "
                             f"the mock counted {ctx.mock.count(fast)} requests to {fast}")
    _check_counts(ctx, {fast: 5, slow: 1}, "fast and slow calls")


# ---- retries ----------------------------------------------------------------------------------------------

def test_retries_then_success(ctx):
    q = ctx.queue
    items = [{"id": f"ft{i}", "path": f"/{q}/ft/{i}", "query": {"fail_times": 2, "key": f"{q}-ft-{i}"}}
             for i in range(5)]
    items += [{"id": f"ft-{s}", "path": f"/{q}/ft-{s}", "query": {"fail_times": 2, "key": f"{q}-ft-{s}",
                                                                  "fail_status": s}} for s in (429, 500, 502)]
    results, _ = _http(ctx, items, "--retry-base-ms", 10, "--retry-max-ms", 50, label="ft")
    for it in items:
        echo = _echo(results, it["id"])
        r = results[id_key(it["id"])]
        check(r["attempts"] == 3, f"id {it['id']}: fail_times=2 then success: attempts {r['attempts']}, expected 3")
        check(echo["path"] == it["path"], f"id {it['id']}: echo path {echo['path']}")
    _check_counts(ctx, {it["path"]: 3 for it in items}, "fail_times=2 items")


_RETRY_LINE = re.compile(r"http: item (\S+) attempt (\d+) failed \(.*\); retrying in (\d+) ms$", re.M)


def _retry_waits(proc):
    """{item id (JSON text): [wait of attempt 1, wait of attempt 2, ...]} from a --log-level debug run's stderr:
    the waits chunkd chose."""
    waits = {}
    for item_id, attempt, ms in _RETRY_LINE.findall(proc.stderr()):
        waits.setdefault(json.loads(item_id), []).append((int(attempt), int(ms)))
    return {i: [ms for _, ms in sorted(w)] for i, w in waits.items()}


def test_retries_exhausted_and_backoff(ctx):
    q = ctx.queue
    n = 40
    items = [{"id": f"a{i}", "path": f"/{q}/always/{i}", "query": {"status": 503}} for i in range(n)]
    # Without the circuit breaker: an API that answers every call 503 is down, and the breaker would hold the
    # items back instead of letting them spend their attempts (test_flaky_breaker.py).
    results, proc = _http(ctx, items, "--max-attempts", 4, "--retry-base-ms", 100, "--retry-max-ms", 10000,
                          "--log-level", "debug", "--breaker-failure-percent", 0, label="always503")
    for it in items:
        r = _failed(results, it["id"])
        check(r.get("status") == 503 and r["attempts"] == 4 and "HTTP 503" in r["error"],
              f"id {it['id']}: expected status 503, attempts 4 and an error naming HTTP 503, got {r}")
        check("4 attempts" in r["error"], f"id {it['id']}: error does not say it gave up after 4 attempts: "
                                          f"{r['error']!r}")
    _check_counts(ctx, {it["path"]: 4 for it in items}, "always-503 items with --max-attempts 4")

    dead = ctx.dead_entries()
    by_id = {d.get("id"): d for d in dead}
    check(len(dead) == n and set(by_id) == {it["id"] for it in items},
          f"dead list has {len(dead)} entries (ids {sorted(by_id, key=str)[:5]}...), expected the {n} items")
    for it in items:
        d = by_id[it["id"]]
        check(d.get("item") == it and d.get("attempts") == 4 and "HTTP 503" in (d.get("error") or ""),
              f"dead entry for {it['id']}: {d}")
    stats = ctx.stats()
    check(stats.get("failed") == n and stats.get("dead") == n and stats.get("done", 0) == 0,
          f"stats failed={stats.get('failed')} dead={stats.get('dead')} done={stats.get('done')}, expected {n}, {n}, 0")

    # Full jitter: the 3 waits are random in [0,100], [0,200], [0,400] ms, as chunkd logs them at debug, and
    # each item really waits them (its time is at least their sum, plus its calls).
    waits = _retry_waits(proc)
    for it in items:
        w = waits.get(it["id"], [])
        check(len(w) == 3 and all(0 <= ms <= cap for ms, cap in zip(w, (100, 200, 400))),
              f"id {it['id']}: logged waits {w}, expected 3 within [0,100], [0,200], [0,400] ms")
        check(results[id_key(it["id"])]["ms"] >= sum(w),
              f"id {it['id']}: took {results[id_key(it['id'])]['ms']} ms, less than its waits {w}")
    # 350 ms on average (150 ms if the delay did not grow). The mean over 40 items is well above 250 ms only if
    # it grows. A lower bound: a loaded machine only makes items slower.
    ms = sorted(r["ms"] for r in results.values())
    mean = sum(ms) / n
    check(mean >= 250, f"always-503, 4 attempts, --retry-base-ms 100: mean item time {mean:.0f} ms "
                       f"(min {ms[0]}, max {ms[-1]}), expected about 350 ms: the backoff does not grow")

    # --retry-max-ms caps each wait: 6 waits of at most 101 ms (the doubled 200 ms cut back to 101). Checked on
    # the waits chunkd chose, not on the items' time: that adds 7 calls, which take tens of ms each on a loaded
    # machine (mean item time 573 ms under ASan with the CPUs shared, against about 300 ms of waits).
    items = [{"id": f"c{i}", "path": f"/{q}/capped/{i}", "query": {"status": 503}} for i in range(n)]
    results, proc = _http(ctx, items, "--max-attempts", 7, "--retry-base-ms", 100, "--retry-max-ms", 101,
                          "--log-level", "debug", "--breaker-failure-percent", 0, label="capped", queue=q + "-capped")
    check(all(r["attempts"] == 7 for r in results.values()), "capped run: not every item made 7 attempts")
    waits = _retry_waits(proc)
    for it in items:
        w = waits.get(it["id"], [])
        check(len(w) == 6 and all(0 <= ms <= 101 for ms in w),
              f"id {it['id']}: logged waits {w}, expected 6 of at most --retry-max-ms 101")
        check(results[id_key(it["id"])]["ms"] >= sum(w),
              f"id {it['id']}: took {results[id_key(it['id'])]['ms']} ms, less than its waits {w}")
    everything = [ms for w in waits.values() for ms in w]
    mean = sum(everything) / len(everything)
    check(35 <= mean <= 65, f"--retry-max-ms 101: the {len(everything)} waits average {mean:.0f} ms, expected "
                            f"about 50 (random in [0,101])")


def test_retry_after(ctx):
    q = ctx.queue

    def item(name, **query):
        return {"id": name, "path": f"/{q}/{name}", "query": dict(query, fail_times=1, key=f"{q}-{name}")}
    items = [item("ra429", fail_status=429, retry_after=1),
             item("ra503", retry_after=1),                      # fail_status defaults to 503
             item("ra500", fail_status=500, retry_after=1),     # Retry-After counts only on 429 and 503
             item("plain503")]
    results, _ = _http(ctx, items, "--retry-base-ms", 1, "--retry-max-ms", 5, label="retry-after")
    for it in items:
        _echo(results, it["id"])
        check(results[id_key(it["id"])]["attempts"] == 2,
              f"id {it['id']}: attempts {results[id_key(it['id'])]['attempts']}, expected 2")
    for name in ("ra429", "ra503"):
        ms = results[id_key(name)]["ms"]
        check(ms >= 1000, f"{name}: Retry-After: 1 on the failure, but the retry came after {ms} ms "
                          f"(--retry-base-ms 1 --retry-max-ms 5)")
    for name in ("ra500", "plain503"):
        ms = results[id_key(name)]["ms"]
        check(ms < 900, f"{name}: retried after {ms} ms; expected the backoff (--retry-max-ms 5), "
                        + ("Retry-After only counts on 429 and 503" if name == "ra500" else "no Retry-After"))
    _check_counts(ctx, {it["path"]: 2 for it in items}, "fail_times=1 items")


def test_4xx_final_unless_listed(ctx):
    q = ctx.queue
    items = [{"id": "nf", "path": f"/{q}/nf", "query": {"status": 404}},
             {"id": "gone", "path": f"/{q}/gone", "query": {"status": 410}}]
    results, _ = _http(ctx, items, "--retry-base-ms", 1, label="final")
    for it, status in zip(items, (404, 410)):
        r = _failed(results, it["id"])
        check(r.get("status") == status and r["attempts"] == 1 and f"HTTP {status}" in r["error"],
              f"id {it['id']}: a {status} is final: expected status {status}, attempts 1, got {r}")
    _check_counts(ctx, {it["path"]: 1 for it in items}, "4xx items")
    check({d.get("id") for d in ctx.dead_entries()} == {"nf", "gone"}, "4xx failures are not in the dead list")

    # --retry-statuses replaces the default list: 404 is retried, 503 no longer is.
    items = [{"id": "nf", "path": f"/{q}/nf-retried", "query": {"status": 404}},
             {"id": "unavail", "path": f"/{q}/unavail", "query": {"status": 503}}]
    results, _ = _http(ctx, items, "--retry-statuses", "404", "--max-attempts", 3, "--retry-base-ms", 1,
                       label="listed", queue=q + "-listed")
    r = _failed(results, "nf")
    check(r.get("status") == 404 and r["attempts"] == 3, f"--retry-statuses 404 --max-attempts 3: 404 item {r}")
    r = _failed(results, "unavail")
    check(r.get("status") == 503 and r["attempts"] == 1,
          f"--retry-statuses 404: a 503 should be final (the list replaces 429,5xx), got {r}")
    _check_counts(ctx, {f"/{q}/nf-retried": 3, f"/{q}/unavail": 1}, "--retry-statuses 404")


def test_requeue_dead_items(ctx):
    # First worker run: 10 items fail 3 times at the mock but may try only twice, so they end in dead.
    # requeue puts them back; the second run's first call fails (the 3rd), the second succeeds.
    q = ctx.queue
    items = [{"id": f"rq{i}", "path": f"/{q}/rq/{i}", "query": {"fail_times": 3, "key": f"{q}-rq-{i}"}}
             for i in range(10)]
    items.append({"id": "fine", "path": f"/{q}/fine"})
    lines = _enqueue_lines(ctx, items, chunk_size=4)
    text_by_id = {it["id"]: line for it, line in zip(items, lines)}
    failing = sorted(it["id"] for it in items[:10])
    worker_args = ["--queue", q, "--handler", "http", "--base-url", ctx.mock.url, "--max-attempts", 2,
                   "--retry-base-ms", 1, "--retry-max-ms", 5, "--exit-when-empty",
                   "--breaker-failure-percent", 0]  # 20 of 21 calls fail: the circuit breaker would open
    ctx.run("worker", *worker_args, timeout=60, name="first worker")
    dead = ctx.dead_entries()
    check(sorted(d.get("id") for d in dead) == failing, f"dead ids {sorted(str(d.get('id')) for d in dead)}, "
                                                        f"expected {failing}")
    out1 = ctx.path("results1.jsonl")
    ctx.run("collect", "--queue", q, "--out", out1, "--until-done", name="first collect", expect_rc=4)  # items failed
    first = {r["id"]: r for r in read_jsonl(out1)}
    check(sorted(first) == sorted(failing + ["fine"]), f"first collect ids {sorted(first)}")
    for i in failing:
        check(first[i].get("ok") is False and first[i].get("status") == 503 and first[i].get("attempts") == 2,
              f"first run, {i}: expected ok=false status 503 attempts 2, got {first[i]}")
    check(ctx.stat("enqueued") == 11, f"stats enqueued={ctx.stat('enqueued')}, expected 11")

    proc = ctx.run("requeue", "--queue", q)
    check(re.search(r"\b10\b", proc.stdout()), f"requeue output does not say 10 items: {proc.stdout()!r}")
    check(ctx.llen("dead") == 0, f"dead still has {ctx.llen('dead')} entries after requeue")
    queued = [e for ch in ctx.pending_chunks() for e in ch["items"]]
    check(sorted(e["id"] for e in queued) == failing, f"pending ids after requeue {[e['id'] for e in queued]}")
    for e in queued:
        check(e["item"] == text_by_id[e["id"]], f"requeued {e['id']}: item text {e['item']!r}, "
                                                f"expected {text_by_id[e['id']]!r} byte for byte")
    check(ctx.stat("enqueued") == 21, f"stats enqueued={ctx.stat('enqueued')} after requeue, expected 21")

    ctx.run("worker", *worker_args, timeout=60, name="second worker")
    out2 = ctx.path("results2.jsonl")
    ctx.run("collect", "--queue", q, "--out", out2, "--until-done", timeout=30, name="second collect")
    second = read_jsonl(out2)
    assert_exactly_once(second, failing, "second collect")
    for r in second:
        check(r.get("ok") is True and r["result"]["status"] == 200 and r.get("attempts") == 2,
              f"second run, {r['id']}: expected ok (3rd call failed, 4th succeeded: attempts 2), got {r}")
    _check_counts(ctx, {f"/{q}/rq/{i}": 4 for i in range(10)} | {f"/{q}/fine": 1}, "after requeue")
    check(ctx.llen("dead") == 0 and ctx.stat("collected") == 21,
          f"dead={ctx.llen('dead')} collected={ctx.stat('collected')}, expected 0 and 21")


# ---- caps, timeouts, broken connections ---------------------------------------------------------------------

def test_body_cap(ctx):
    q = ctx.queue
    items = [{"id": "big", "path": f"/{q}/big", "query": {"body_bytes": 5000}},
             {"id": "over1", "path": f"/{q}/over1", "query": {"body_bytes": 1001}},
             {"id": "at-cap", "path": f"/{q}/at-cap", "query": {"body_bytes": 1000}},
             {"id": "small", "path": f"/{q}/small", "query": {"body_bytes": 10}}]
    results, _ = _http(ctx, items, "--max-result-bytes", 1000, "--retry-base-ms", 1, label="cap")
    for name in ("big", "over1"):
        r = _failed(results, name)
        check("--max-result-bytes" in r["error"],
              f"{name}: error does not name --max-result-bytes: {r['error']!r}")
    res = _ok(results, "at-cap")
    check(res["body"] == "x" * 998, f"a body of exactly --max-result-bytes: got {len(json.dumps(res['body']))} bytes")
    check(_ok(results, "small")["body"] == "x" * 8, "a small body came back wrong")

    # The same without a Content-Length (chunked): the cap must hold while the body streams in.
    items = [{"id": "big", "path": "/chunked", "query": {"n": 5000}},
             {"id": "over1", "path": "/chunked", "query": {"n": 1001}},
             {"id": "at-cap", "path": "/chunked", "query": {"n": 1000}}]
    with _PyServer() as server:
        results, _ = _http(ctx, items, "--base-url", server.url, "--max-result-bytes", 1000, "--retry-base-ms", 1,
                           base_url=False, label="cap-chunked", queue=ctx.queue + "-chunked")
    for name in ("big", "over1"):
        r = _failed(results, name)
        check("--max-result-bytes" in r["error"],
              f"chunked {name}: error does not name --max-result-bytes: {r['error']!r}")
    check(_ok(results, "at-cap")["body"] == "x" * 998, "chunked body of exactly --max-result-bytes came back wrong")


def test_timeout(ctx):
    path = f"/{ctx.queue}/stall"
    items = [{"id": "stall", "path": path, "query": {"delay_ms": 3000}}]
    results, _ = _http(ctx, items, "--http-timeout-ms", 300, "--max-attempts", 1, label="timeout")
    r = _failed(results, "stall")
    check(re.search(r"time", r["error"], re.I), f"expected a timeout error, got {r['error']!r}")
    check(r["attempts"] == 1 and 250 <= r["ms"] < 1500,
          f"--http-timeout-ms 300 --max-attempts 1 against a 3000 ms answer: attempts {r['attempts']}, ms {r['ms']}")
    _check_counts(ctx, {path: 1}, "timed-out call")

    # Timeouts are retried.
    path2 = f"/{ctx.queue}/stall2"
    items = [{"id": "stall", "path": path2, "query": {"delay_ms": 3000}}]
    results, _ = _http(ctx, items, "--http-timeout-ms", 300, "--max-attempts", 2, "--retry-base-ms", 1,
                       label="timeout-retried", queue=ctx.queue + "-2")
    r = _failed(results, "stall")
    check(r["attempts"] == 2 and r["ms"] >= 550, f"timeouts are retried: expected attempts 2 and ms >= 600, got {r}")
    _check_counts(ctx, {path2: 2}, "timed-out call with --max-attempts 2")


def test_item_timeout_cancels_calls(ctx):
    # --item-timeout-ms cancels a call in flight and one waiting to retry; other calls on the same loop go on.
    slow, retrying, quick = f"/{ctx.queue}/slow", f"/{ctx.queue}/retrying", f"/{ctx.queue}/quick"
    items = [{"id": "slow", "path": slow, "query": {"delay_ms": 5000}},
             {"id": "retrying", "path": retrying, "query": {"status": 503}},
             {"id": "quick", "path": quick}]
    results, _ = _http(ctx, items, "--item-timeout-ms", 400, "--retry-base-ms", 2000, "--retry-max-ms", 2000,
                       label="item-timeout")
    for item_id in ("slow", "retrying"):
        r = _failed(results, item_id)
        check(r["error"] == "timed out after 400 ms (--item-timeout-ms)", f"{item_id}: {r}")
    _ok(results, "quick")
    check(ctx.llen("dead") == 2, f"dead holds {ctx.llen('dead')} records, expected 2")


def test_connection_drop(ctx):
    path = f"/{ctx.queue}/drop"
    items = [{"id": "drop", "path": path, "query": {"drop": 1}}]
    results, _ = _http(ctx, items, "--max-attempts", 3, "--retry-base-ms", 1, label="drop")
    r = _failed(results, "drop")
    check(r["attempts"] == 3, f"a dropped connection is retried: expected attempts 3, got {r}")
    check(re.search(r"reply|connection|server|closed|reset", r["error"], re.I) and "unknown" not in r["error"],
          f"dropped connection: unclear error {r['error']!r}")
    check("status" not in r, f"dropped connection: a result with an HTTP status: {r}")
    _check_counts(ctx, {path: 3}, "dropped connections")
    check(ctx.dead_entries() and ctx.dead_entries()[0].get("id") == "drop", "dropped item not in the dead list")


# ---- what an item may ask for ----------------------------------------------------------------------------

def test_allow_hosts_and_refused_items(ctx):
    q, mock = ctx.queue, ctx.mock
    port = mock.port
    before = mock.total()
    items = [
        {"id": "url-localhost", "url": f"http://localhost:{port}/{q}/localhost"},
        {"id": "url-base-host", "url": f"{mock.url}/{q}/base-host"},   # --allow-hosts is empty
        {"id": "url-file", "url": "file:///etc/passwd"},
        {"id": "url-ftp", "url": f"ftp://127.0.0.1:{port}/{q}/ftp"},
        {"id": "path-relative", "path": f"{q}/relative"},
        {"id": "path-at", "path": "@evil.example/x"},
        {"id": "path-userinfo", "path": ":80@evil.example/x"},
        {"id": "path-dot", "path": ".evil.example/x"},
        {"id": "path-space", "path": f"/{q}/a b"},
        {"id": "h-host", "path": f"/{q}/h-host", "headers": {"Host": "evil.example"}},
        {"id": "h-host-case", "path": f"/{q}/h-host-case", "headers": {"hOsT": "evil.example"}},
        {"id": "h-idem", "path": f"/{q}/h-idem", "headers": {"Idempotency-Key": "mine"}},
        {"id": "h-length", "path": f"/{q}/h-length", "headers": {"Content-Length": "5"}},
        {"id": "h-te", "path": f"/{q}/h-te", "headers": {"Transfer-Encoding": "chunked"}},
        {"id": "h-conn", "path": f"/{q}/h-conn", "headers": {"Connection": "close"}},
        {"id": "h-crlf", "path": f"/{q}/h-crlf", "headers": {"X-A": "v\r\nX-Injected: 1"}},
        {"id": "h-badname", "path": f"/{q}/h-badname", "headers": {"X A": "v"}},
        {"id": "method-lower", "method": "get", "path": f"/{q}/method"},
        {"id": "query-nested", "path": f"/{q}/qn", "query": {"a": {"b": 1}}},
        ["not", "an", "object"],
        {"id": "control", "path": f"/{q}/control"},
    ]
    results, _ = _http(ctx, items, label="refused")
    for name in ("url-localhost", "url-base-host"):
        _refused(results, name, "--allow-hosts")
    for name in ("url-file", "url-ftp"):
        _refused(results, name, "http")
    for name in ("path-relative", "path-at", "path-userinfo", "path-dot"):
        _refused(results, name, "path", "/")
    _refused(results, "path-space", "path")
    for name, header in [("h-host", "host"), ("h-host-case", "host"), ("h-idem", "idempotency-key"),
                         ("h-length", "content-length"), ("h-te", "transfer-encoding"), ("h-conn", "connection")]:
        _refused(results, name, header)
    for name in ("h-crlf", "h-badname"):
        _refused(results, name, "header")
    _refused(results, "method-lower", "method")
    _refused(results, "query-nested", "query")
    _refused(results, len(items) - 1, "object")
    echo = _echo(results, "control")
    check(echo["path"] == f"/{q}/control", f"control item: mock saw {echo['path']}")
    made = mock.total() - before
    check(made == 1, lambda: f"refused items made requests: the mock counted {made} (expected 1, the control "
                             f"item): {mock.counts()['paths']}")

    # --allow-hosts 127.0.0.1:<the mock's port> and no --base-url: absolute urls to that host and port only.
    before = mock.total()
    items = [
        {"id": "abs", "url": f"{mock.url}/{q}/abs?x=1", "query": {"y": 2}},
        {"id": "abs-post", "url": f"{mock.url}/{q}/abs-post", "body": {"a": 1}},
        {"id": "localhost", "url": f"http://localhost:{port}/{q}/localhost"},
        {"id": "userinfo", "url": f"http://127.0.0.1:{port}@localhost:{port}/{q}/userinfo"},
        {"id": "other-ip", "url": f"http://127.0.0.2:{port}/{q}/other-ip"},
        {"id": "path-only", "path": f"/{q}/path-only"},
        {"id": "redirect", "url": "PYSERVER/redirect", "query": {"to": f"{mock.url}/{q}/redirected"}},
    ]
    with _PyServer() as server:
        items[-1]["url"] = f"{server.url}/redirect"
        results, _ = _http(ctx, items, "--allow-hosts", f"127.0.0.1:{port}, {server.url[len('http://'):]}",
                           base_url=False, label="allowed", queue=q + "-allowed")
    res = _ok(results, "redirect")
    check(res["status"] == 302, f"a 302 answer: expected a result with status 302 (not followed), got {res}")
    _check_counts(ctx, {f"/{q}/redirected": 0}, "redirect to the mock (must not be followed)")
    echo = _echo(results, "abs")
    check(echo["path"] == f"/{q}/abs" and echo["query"] == {"x": "1", "y": "2"},
          f"absolute url to an allowed host: mock saw {echo['path']} {echo['query']}")
    echo = _echo(results, "abs-post")
    check(echo["method"] == "POST" and json.loads(echo["body"]) == {"a": 1}, f"absolute url POST: {echo}")
    for name in ("localhost", "userinfo", "other-ip"):
        _refused(results, name, "--allow-hosts")
    _refused(results, "path-only", "base-url")
    made = mock.total() - before
    check(made == 2, lambda: f"with --allow-hosts 127.0.0.1:{port} the mock counted {made} requests, expected 2: "
                             f"{mock.counts()['paths']}")


def _idempotency_key(queue, item_id):
    """The README's form: Idempotency-Key: chunkd-<queue>-<item id> (an id used as is)."""
    return f"chunkd-{queue}-{item_id}"


def test_proxy_from_environment(ctx):
    """A proxy set in the environment (http_proxy) carries the calls, and no_proxy exempts a host; with no proxy
    variable set chunkd tells libcurl "no proxy" once, instead of its lookups on every call, and the calls go
    straight to the server."""
    items = [{"id": i, "path": f"/{ctx.queue}/p{i}"} for i in range(5)]
    with _PyServer() as proxy:
        results, _ = _http(ctx, items, "--base-url", "http://chunkd-proxy-test.invalid", base_url=False,
                           label="proxied", env={"http_proxy": proxy.url})
        for i in range(5):
            body = _ok(results, i)["body"]
            check(body == {"via": "proxy", "url": f"http://chunkd-proxy-test.invalid/{ctx.queue}/p{i}"},
                  lambda: f"id {i}: expected the proxy's answer, got {body}")
        _http(ctx, items, label="exempt", queue=ctx.queue + "-exempt",
              env={"http_proxy": proxy.url, "no_proxy": "127.0.0.1"})
        _check_counts(ctx, {f"/{ctx.queue}/p{i}": 1 for i in range(5)}, "calls exempted by no_proxy")
    _http(ctx, items, label="direct", queue=ctx.queue + "-direct")
    _check_counts(ctx, {f"/{ctx.queue}/p{i}": 2 for i in range(5)}, "calls without a proxy variable")


def test_idempotency_key(ctx):
    q = ctx.queue
    items = [{"id": "k-1", "path": f"/{q}/a"}, {"id": 42, "path": f"/{q}/b"}, {"path": f"/{q}/c"},
             {"id": "retried", "path": f"/{q}/d", "query": {"fail_times": 1, "key": f"{q}-d"}}]
    results, _ = _http(ctx, items, "--retry-base-ms", 1, label="idem")
    for item_id in (42, 3, "k-1", "retried"):  # integer ids, a line number, string ids
        got = _echo(results, item_id)["headers"].get("idempotency-key")
        check(got == _idempotency_key(q, item_id),
              f"id {item_id!r}: Idempotency-Key {got!r}, expected {_idempotency_key(q, item_id)!r}")

    q2 = q + "-nokey"
    results, _ = _http(ctx, items, "--no-idempotency-key", "--retry-base-ms", 1, label="noidem", queue=q2)
    for item_id in ("k-1", 42, 3):
        headers = _echo(results, item_id)["headers"]
        check("idempotency-key" not in headers,
              f"--no-idempotency-key: id {item_id!r} still sent Idempotency-Key {headers.get('idempotency-key')!r}")


def test_idempotency_key_distinct_ids(ctx):
    # Distinct ids must not share a key (an API that honours it would drop one of the calls): the id is
    # escaped in the header, and the escaping must not merge "a b" with "a%20b". (The integer 1 and the
    # string "1" do share one: ids are taken to be unique within a queue, whatever their JSON type.)
    q = ctx.queue
    ids = ["a b", "a%20b", "x/y", "x%2Fy", "p\u00e9", "p%C3%A9"]
    items = [{"id": i, "path": f"/{q}/distinct"} for i in ids]
    results, _ = _http(ctx, items, label="distinct")
    keys = {}
    for i in ids:
        keys.setdefault(_echo(results, i)["headers"].get("idempotency-key"), []).append(i)
    shared = {k: v for k, v in keys.items() if len(v) > 1}
    check(not shared, f"distinct ids share an Idempotency-Key: {shared}")


# ---- secret headers ---------------------------------------------------------------------------------------

def _check_no_secret(text, what, secrets=(SECRET, FILE_SECRET)):
    for s in secrets:
        check(s not in text, lambda: f"{what} shows a secret header value: "
                                     f"{one_line(text[max(0, text.find(s) - 150):text.find(s) + 50], 300)!r}")


def test_secret_headers(ctx):
    q = ctx.queue
    header_file = ctx.path("headers.txt")
    header_file.write_text(f"# mounted secret\nX-Api-Key: {FILE_SECRET}\n\n")
    env = {"CHUNKD_HTTP_HEADERS": f"Authorization: Bearer {SECRET}"}
    items = [{"id": "ok", "path": f"/{q}/ok"},
             {"id": "own-auth", "path": f"/{q}/own-auth", "headers": {"authorization": "Bearer mine"}},
             {"id": "own-key", "path": f"/{q}/own-key", "headers": {"X-API-KEY": "mine"}},
             {"id": "fails", "path": f"/{q}/fails", "query": {"status": 503}},
             {"id": "drops", "path": f"/{q}/drops", "query": {"drop": 1}},
             {"id": "refused", "url": f"http://localhost:{ctx.mock.port}/{q}/x"}]
    items.append({"id": "abs-url", "url": f"{ctx.mock.url}/{q}/abs-url"})
    results, proc = _http(ctx, items, "--header-file", header_file, "--log-level", "debug", "--max-attempts", 2,
                          "--retry-base-ms", 1, "--allow-hosts", f"127.0.0.1:{ctx.mock.port}", env=env,
                          label="secret")
    headers = _echo(results, "ok")["headers"]
    check(headers.get("authorization") == f"Bearer {SECRET}" and headers.get("x-api-key") == FILE_SECRET,
          "CHUNKD_HTTP_HEADERS / --header-file headers did not reach the API: mock saw "
          f"authorization={'set' if 'authorization' in headers else 'absent'}, "
          f"x-api-key={'set' if 'x-api-key' in headers else 'absent'}")
    # Secrets go only to --base-url; an item's absolute "url" never gets them, even to an allowed host.
    headers = _echo(results, "abs-url")["headers"]
    check("authorization" not in headers and "x-api-key" not in headers,
          f"secret headers were sent to an item's absolute url: {sorted(headers)}")
    for name in ("own-auth", "own-key"):
        _refused(results, name, "header")
    _check_counts(ctx, {f"/{q}/own-auth": 0, f"/{q}/own-key": 0}, "items setting a secret header")
    err = proc.stderr()
    check(re.search(r"debug", err, re.I) and "retrying" in err,
          f"--log-level debug logged no retry (test set-up): {one_line(err[-300:], 300)!r}")
    _check_no_secret(err, "chunkd stderr at --log-level debug")
    for name in ("fails", "drops", "refused", "own-auth", "own-key", "abs-url"):
        _check_no_secret(json.dumps(results[id_key(name)]), f"result of {name}")
    _check_no_secret(json.dumps(ctx.dead_entries()), "the dead list")

    for cmd in ("worker", "run"):
        p = ctx.run(cmd, "--help", env=env, redis=None, timeout=10)
        text = p.stdout() + p.stderr()
        _check_no_secret(text, f"chunkd {cmd} --help")
        check("CHUNKD_HTTP_HEADERS" in text and "--header-file" in text,
              f"chunkd {cmd} --help does not mention CHUNKD_HTTP_HEADERS and --header-file")

    # Never from a flag.
    for args in (["--http-headers", f"Authorization: Bearer {SECRET}"], [f"--http-headers=X-K: {SECRET}"]):
        p = ctx.spawn("worker", "--queue", q, "--handler", "http", "--base-url", ctx.mock.url, *args,
                      name="worker --http-headers ...")
        p.wait(15)
        check(p.returncode == 2, f"--http-headers as a flag: expected exit 2, got {p.describe()}")
        _check_no_secret(p.stderr() + p.stdout(), "the error for --http-headers as a flag")
        check("CHUNKD_HTTP_HEADERS" in p.stderr(), f"the error does not point to CHUNKD_HTTP_HEADERS: "
                                                   f"{one_line(p.stderr(), 200)!r}")


def test_bad_secret_headers_exit(ctx):
    # Enqueued work must stay untouched when the worker refuses its header settings.
    items = [{"id": i, "path": f"/{ctx.queue}/w"} for i in range(5)]
    _enqueue_lines(ctx, items)
    bad_file = ctx.path("bad-headers.txt")
    bad_file.write_text(f"X-Ok: fine\n\nthis line has no colon {SECRET}\n")
    bad_name = ctx.path("bad-name.txt")
    bad_name.write_text(f"X-Ok: fine\nBad Name: {SECRET}\n")
    cases = [  # (args, env, words the message must contain)
        (["--header-file", bad_file], {}, [str(bad_file), "line 3"]),
        (["--header-file", bad_name], {}, [str(bad_name), "line 2"]),
        ([], {"CHUNKD_HTTP_HEADERS": f"X-Ok: fine\n{SECRET}"}, ["CHUNKD_HTTP_HEADERS", "line 2"]),
        (["--header-file", ctx.path("missing.txt")], {}, [str(ctx.path("missing.txt"))]),
    ]
    for args, env, words in cases:
        label = "worker " + " ".join(str(a) for a in args) + (" with a bad CHUNKD_HTTP_HEADERS" if env else "")
        p = ctx.spawn("worker", "--queue", ctx.queue, "--handler", "http", "--base-url", ctx.mock.url,
                      "--exit-when-empty", *args, env=env, name=label)
        p.wait(15)
        check(p.returncode not in (0, None), f"{label}: expected a non-zero exit, got {p.describe()}")
        err = p.stderr()
        for w in words:
            check(w in err, f"{label}: error does not name {w!r}: {one_line(err, 300)!r}")
        _check_no_secret(err + p.stdout(), label)
    check(ctx.llen("pending") == 1 and ctx.processing_len() == 0 and ctx.xlen() == 0,
          f"a worker that refused its settings touched the queue: pending={ctx.llen('pending')} "
          f"processing={ctx.processing_len()} results={ctx.xlen()}")
    check(ctx.mock.count(f"/{ctx.queue}/w") == 0, "a worker that refused its settings made requests")


# ---- settings ---------------------------------------------------------------------------------------------

def test_http_settings(ctx):
    items = [{"id": i, "path": f"/{ctx.queue}/w"} for i in range(5)]
    _enqueue_lines(ctx, items)
    base = ["--base-url", ctx.mock.url]
    cases = [  # (command, args, env, expected exit (None: any non-zero), setting the message must name)
        ("worker", ["--handler", "http"], {}, 2, "--base-url"),
        ("run", ["--handler", "http", "-"], {}, 2, "--base-url"),
        ("worker", [], {"CHUNKD_HANDLER": "http"}, 2, "--base-url"),
        ("worker", ["--handler", "http", "--base-url", "ftp://127.0.0.1/"], {}, 2, "--base-url"),
        ("worker", ["--handler", "http", *base, "--max-attempts", "0"], {}, 2, "--max-attempts"),
        ("worker", ["--handler", "http", *base, "--retry-base-ms", "500", "--retry-max-ms", "100"], {}, 2,
         "--retry-max-ms"),
        ("worker", ["--handler", "http", *base, "--http-timeout-ms", "0"], {}, 2, "--http-timeout-ms"),
        ("worker", ["--handler", "http", *base, "--retry-statuses", "5xy"], {}, None, "--retry-statuses"),
        ("worker", ["--handler", "http", *base, "--retry-statuses", "429,600"], {}, None, "--retry-statuses"),
        ("worker", ["--handler", "http", *base, "--retry-statuses", "abc"], {}, None, "--retry-statuses"),
        ("worker", ["--handler", "http", *base], {"CHUNKD_RETRY_STATUSES": "99"}, None, "retry-statuses"),
        ("run", ["--handler", "http", *base, "--retry-statuses", "4xxx", "-"], {}, None, "--retry-statuses"),
    ]
    for cmd, args, env, rc, setting in cases:
        label = " ".join(f"{k}={v}" for k, v in env.items()) + f" chunkd {cmd} " + " ".join(args)
        p = ctx.spawn(cmd, "--queue", ctx.queue, "--exit-when-empty" if cmd == "worker" else "--out=/dev/null",
                      *args, env=env, stdin='{"id":"x","path":"/x"}\n', name=label.strip())
        p.wait(20)
        if rc is None:
            check(p.returncode not in (0, None), f"{label.strip()}: expected a non-zero exit, got {p.describe()}")
        else:
            check(p.returncode == rc, f"{label.strip()}: expected exit {rc}, got {p.describe()}")
        check(setting in p.stderr(), f"{label.strip()}: error does not name {setting}: {one_line(p.stderr(), 300)!r}")
    check(ctx.llen("pending") == 1 and ctx.processing_len() == 0 and ctx.xlen() == 0,
          f"a worker with invalid settings touched the queue: pending={ctx.llen('pending')} "
          f"processing={ctx.processing_len()} results={ctx.xlen()}")
    check(ctx.mock.total() == 0, f"invalid settings, yet the mock saw requests: {ctx.mock.counts()['paths']}")

    proc = ctx.run("worker", "--help", redis=None, timeout=10)
    text = proc.stdout()
    missing = [f for f in ("--base-url", "--allow-hosts", "--http-timeout-ms", "--connect-timeout-ms",
                           "--max-result-bytes", "--keep-headers", "--max-attempts", "--retry-base-ms",
                           "--retry-max-ms", "--retry-statuses", "--idempotency-key", "--header-file")
               if f not in text]
    check(not missing, f"chunkd worker --help does not list {missing}")


# ---- shutdown ---------------------------------------------------------------------------------------------

def test_sigterm_with_calls_in_flight(ctx):
    # At SIGTERM, 10 calls wait on a slow API and 10 items wait for a Retry-After: 30; with a short drain
    # timeout the worker gives both chunks back and exits without results.
    q = ctx.queue
    waiting = [{"id": f"w{i}", "path": f"/{q}/busy", "query": {"status": 503, "retry_after": 30}}
               for i in range(10)]
    slow = [{"id": f"s{i}", "path": f"/{q}/slow", "query": {"delay_ms": 8000}} for i in range(10)]
    _enqueue_lines(ctx, waiting + slow, chunk_size=10)
    worker = ctx.spawn("worker", "--queue", q, "--handler", "http", "--base-url", ctx.mock.url, "--threads", 1,
                       "--concurrency", 100, "--drain-timeout-ms", 300)
    wait_until(lambda: ctx.mock.count(f"/{q}/busy") >= 10 and ctx.mock.count(f"/{q}/slow") >= 10
               or not worker.alive(), 15,
               lambda: f"20 calls in flight (mock counts busy={ctx.mock.count(f'/{q}/busy')}, "
                       f"slow={ctx.mock.count(f'/{q}/slow')}; {worker.describe()})")
    check(worker.alive(), f"worker exited early: {worker.describe()}")
    sent = time.monotonic()
    worker.send(signal.SIGTERM)
    worker.wait(15, expect_rc=0)
    elapsed = time.monotonic() - sent
    check(elapsed < scaled(3), f"worker took {elapsed:.1f}s to exit after SIGTERM with --drain-timeout-ms 300")
    check(ctx.xlen() == 0, f"{ctx.xlen()} results committed for calls that never finished")
    check(ctx.processing_len() == 0, f"processing lists not empty after SIGTERM: {ctx.processing_keys()}")
    queued = [e["id"] for ch in ctx.pending_chunks() for e in ch["items"]]
    assert_exactly_once([{"id": i} for i in queued], [it["id"] for it in waiting + slow], "pending after SIGTERM")
    check(ctx.llen("dead") == 0, f"dead has {ctx.llen('dead')} entries after SIGTERM")
    check(ctx.mock.count(f"/{q}/busy") == 10,
          f"items waiting for Retry-After: 30 were retried early: {ctx.mock.count(f'/{q}/busy')} calls")
