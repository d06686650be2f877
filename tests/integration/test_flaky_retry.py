"""Retries against a flaky API (issue 14): an item waiting for its retry holds no place of --concurrency and
does not hold up the items behind it; every item still ends exactly once; a failed result keeps the status and
an excerpt of the response body (--error-body-bytes); the retry-wait metrics.

The mock (tests/mockapi) fails calls on request: fail_rate=P answers a random share P with fail_status; fail_times=1
with a key fails that key's first call only; retry_after=N adds Retry-After: N to a failure, which chunkd honours
exactly for a 503 (no jitter), so a wait has a known length.
"""

import json
import re
import urllib.request

from harness import assert_exactly_once, check, one_line, read_jsonl, wait_until


def _metrics(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return r.read().decode()


def _metric(text, name):
    """The value of the sample `name` (with its labels, as rendered, minus the queue label), or None."""
    for line in text.splitlines():
        m = re.match(r"^([a-z_]+)(\{[^}]*\})? ([0-9.e+-]+)$", line)
        if not m:
            continue
        labels = re.sub(r'queue="[^"]*",?', "", m.group(2) or "").replace("{}", "").replace(",}", "}")
        if m.group(1) + labels == name:
            return float(m.group(3))
    return None


def test_flaky_api_every_item_ok_once_within_concurrency(ctx):
    """10 % of the calls answer 500 (80 ms each, --concurrency 50): every item ends ok exactly once, with as many
    calls as attempts, and the mock never sees more than --concurrency calls at once (a waiting item gave its
    place back, and took one again before its retry). Chunks of 10, smaller than --concurrency: a chunk of 2 x
    --concurrency items or more is held alone in the window, so any slow item of it (a retried one too) holds up
    the next chunk."""
    n, conc = 3000, 50
    path = f"/{ctx.queue}/flaky"
    items = [{"id": i, "path": path, "query": {"delay_ms": 80, "fail_rate": 0.1, "fail_status": 500}}
             for i in range(n)]
    out = ctx.path("flaky.out.jsonl")
    ctx.run("run", "--queue", ctx.queue, "--handler", "http", "--base-url", ctx.mock.url, "--concurrency", conc,
            "--chunk-size", 10, "--max-attempts", 10, "--retry-base-ms", 200, "--out", out, ctx.write_jsonl("flaky.jsonl", items),
            timeout=180)
    results = read_jsonl(out)
    assert_exactly_once(results, list(range(n)), "flaky run output")
    bad = [r for r in results if r.get("ok") is not True]
    check(not bad, lambda: f"{len(bad)} of {n} items failed, e.g. {one_line(json.dumps(bad[0]), 300)}")
    attempts = sum(r["attempts"] for r in results)
    counts = ctx.mock.counts()
    check(counts["paths"].get(path) == attempts,
          f"the mock counted {counts['paths'].get(path)} calls, the results {attempts} attempts")
    check(attempts > n, f"no retries at all ({attempts} attempts for {n} items): the mock did not fail any call")
    check(counts["max_inflight"] <= conc,
          f"--concurrency {conc}: the mock saw {counts['max_inflight']} calls at once")
    print(f"  flaky: {attempts} calls for {n} items, at most {counts['max_inflight']} at once", flush=True)


def test_retry_wait_frees_its_place(ctx):
    """30 items of the first chunks fail their first call with a 503 and Retry-After: 5 (a 5 s wait, no jitter);
    2000 others take 80 ms each. While the 30 wait, the others run at full --concurrency 50: the mock sees close to
    50 calls in flight, not 50 - 30. (On the build before issue 14 a waiting item kept its place: at most 20.)
    The waiting items are counted by chunkd_items_retry_waiting, and afterwards every item ends ok once."""
    conc, k, n_slow = 50, 30, 2000
    fail_path, slow_path = f"/{ctx.queue}/fail", f"/{ctx.queue}/slow"
    items = [{"id": i, "path": fail_path, "query": {"fail_times": 1, "key": f"{ctx.queue}-{i}", "fail_status": 503,
                                                      "retry_after": 5}} for i in range(k)]
    items += [{"id": k + i, "path": slow_path, "query": {"delay_ms": 80}} for i in range(n_slow)]
    out = ctx.path("wait.out.jsonl")
    proc, port = ctx.spawn_http("run", "--queue", ctx.queue, "--handler", "http", "--base-url", ctx.mock.url,
                                "--concurrency", conc, "--chunk-size", 10, "--retry-base-ms", 2000,
                                "--retry-max-ms", 2000, "--out", out, ctx.write_jsonl("wait.jsonl", items),
                                # its first 30 calls all fail on purpose: the circuit breaker would (rightly) open
                                # and excuse their attempts; this test is about the places alone
                                "--breaker-failure-percent", 0)
    # Every first call of the failing keys made, and answered at once: they all wait now (5 s from their answer).
    # The mock counts a call as it arrives, so the sampling starts only after two more rounds of the others, which
    # began after those answers.
    wait_until(lambda: (ctx.mock.count(fail_path) >= k and ctx.mock.count(slow_path) >= conc - k + 2 * conc)
               or not proc.alive(), 30, lambda: f"the {k} first calls of the failing keys ({proc.describe()})")
    check(ctx.mock.count(fail_path) == k, lambda: f"{ctx.mock.count(fail_path)} calls of the failing keys, "
                                                  f"expected {k} before their waits end ({proc.describe()})")
    # Sample the calls in flight while they wait (until the first retry arrives).
    peak, samples, waiting_seen = 0, 0, 0
    while ctx.mock.count(fail_path) == k and proc.alive():
        peak = max(peak, ctx.mock.counts()["inflight"])
        samples += 1
        if samples % 5 == 1:
            waiting = _metric(_metrics(port), "chunkd_items_retry_waiting")
            if waiting is not None:
                waiting_seen = max(waiting_seen, int(waiting))
    check(samples > 0, "the retries came before the sampling began (a machine too slow for this test's 5 s wait)")
    print(f"  retry wait: {peak} calls in flight at most over {samples} samples while {k} items waited "
          f"(gauge up to {waiting_seen})", flush=True)
    check(peak > conc - k + 10,
          f"while {k} items waited for their retry, the mock saw at most {peak} calls in flight ({samples} samples):"
          f" the waiting items kept their places of --concurrency {conc} (at most {conc - k} for the others)")
    check(waiting_seen == k, f"chunkd_items_retry_waiting reached {waiting_seen} while {k} items waited")
    metrics = _metrics(port)
    check(_metric(metrics, "chunkd_retry_waits_total") == k,
          f"chunkd_retry_waits_total is {_metric(metrics, 'chunkd_retry_waits_total')}, expected {k}")
    proc.wait(120, expect_rc=0)
    results = read_jsonl(out)
    assert_exactly_once(results, list(range(k + n_slow)), "run output")
    bad = [r for r in results if r.get("ok") is not True]
    check(not bad, lambda: f"{len(bad)} items failed, e.g. {one_line(json.dumps(bad[0]), 300)}")
    retried = sorted(r["id"] for r in results if r["attempts"] == 2)
    check(retried == list(range(k)), f"items with 2 attempts: {retried[:10]}..., expected the {k} failing keys")
    check(ctx.mock.counts()["max_inflight"] <= conc,
          f"--concurrency {conc}: the mock saw {ctx.mock.counts()['max_inflight']} calls at once")


def test_failed_result_keeps_body_excerpt(ctx):
    """A 500 with a 5,000-byte body fails (--max-attempts 1) with its status and the first --error-body-bytes of the
    body (1024 by default) as "body"; a short body is kept whole; --error-body-bytes 0 keeps none; an ok result
    and a connection error carry no such field."""
    path = f"/{ctx.queue}/err"
    items = [{"id": 1, "path": path, "query": {"status": 500, "body_bytes": 5000}},
             {"id": 2, "path": path, "query": {"status": 404, "body_bytes": 10}},
             {"id": 3, "path": path},
             {"id": 4, "url": "http://127.0.0.1:1/refused"}]

    def run(label, *flags):
        out = ctx.path(f"{label}.out.jsonl")
        ctx.run("run", "--queue", f"{ctx.queue}-{label}", "--handler", "http", "--base-url", ctx.mock.url,
                "--allow-hosts", "127.0.0.1:1", "--max-attempts", 1, *flags, "--out", out,
                ctx.write_jsonl(f"{label}.jsonl", items), timeout=60, expect_rc=4)  # 3 of 4 fail
        results = read_jsonl(out)
        assert_exactly_once(results, [1, 2, 3, 4], f"{label} output")
        return {r["id"]: r for r in results}

    for label, flags, cap in (("default", (), 1024), ("cap100", ("--error-body-bytes", 100), 100)):
        res = run(label, *flags)
        big, small, ok, refused = res[1], res[2], res[3], res[4]
        check(big.get("ok") is False and big.get("status") == 500 and isinstance(big.get("body"), str),
              lambda: f"{label}: the 500 gave {one_line(json.dumps(big), 300)}")
        check(len(big["body"]) == cap and big["body"] == '"' + "x" * (cap - 1),
              f"{label}: the excerpt of a 5,000-byte body is {len(big['body'])} bytes, expected {cap}")
        check(small.get("status") == 404 and small.get("body") == '"' + "x" * 8 + '"',
              lambda: f"{label}: the 404's short body was not kept whole: {one_line(json.dumps(small), 300)}")
        check(ok.get("ok") is True and "body" not in ok, lambda: f"{label}: ok result {one_line(json.dumps(ok), 300)}")
        check(refused.get("ok") is False and "body" not in refused and "status" not in refused,
              lambda: f"{label}: a refused connection gave {one_line(json.dumps(refused), 300)}")
    res = run("off", "--error-body-bytes", 0)
    check(res[1].get("status") == 500 and "body" not in res[1],
          lambda: f"--error-body-bytes 0: the 500 gave {one_line(json.dumps(res[1]), 300)}")
