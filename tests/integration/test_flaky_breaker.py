"""The http handler's circuit breaker (src/breaker.c): an API that goes down stops the worker from starting
calls (fetching pauses, /readyz 503 with the reason, chunkd_circuit_state 1) instead of burning every item's
--max-attempts into the dead list; a few probes find the API back and the work resumes at full speed.

Each test runs its own mock API (tests/mockapi) on a port it chose, so that it can stop it (connection refused) and
start it again on the same port.
"""

import re
import time

from harness import MockApi, assert_exactly_once, check, free_port, one_line, read_jsonl, scaled, wait_until
from test_metrics import get

OUTAGE_S = 15          # how long the API is down in the outage test
RECOVERY_BOUND_S = 5   # generous bound on the time from the API's return to throughput back (the target is 2 s)


def _metric(text, name):
    m = re.search(rf"^{name}(?:{{[^}}]*}})? ([0-9.e+-]+)$", text, re.M)
    return float(m.group(1)) if m else None


def _scrape(port, name):
    status, text = get(port, "/metrics")
    return _metric(text, name) if status == 200 else None


def _transitions(port, to):
    status, text = get(port, "/metrics")
    m = re.search(rf'^chunkd_circuit_transitions_total{{[^}}]*to="{to}"[^}}]*}} ([0-9]+)$', text, re.M)
    return int(m.group(1)) if status == 200 and m else None


def _own_mock(ctx, name):
    """A mock API of this test's own, on a free port it can be brought back to."""
    return MockApi(ctx.mock.binary, ctx.tmp / name).start(port=free_port())


def _items(ctx, n, delay_ms):
    return [{"id": i, "path": f"/{ctx.queue}/i{i}", "query": {"delay_ms": delay_ms}} for i in range(n)]


def _all_ok(ctx, out, items, label):
    results = read_jsonl(out)
    assert_exactly_once(results, [it["id"] for it in items], f"run output ({label})")
    failed = [r for r in results if not r.get("ok")]
    check(not failed, lambda: f"{len(failed)} of {len(items)} items failed ({label}), e.g. "
                               f"{one_line(str(failed[0]), 300)}")
    return results


def _open_circuit_shows(port, run):
    """Waits until /readyz is 503 naming the open circuit and the gauge says open (1)."""
    wait_until(lambda: get(port, "/readyz")[0] == 503 and "circuit open" in get(port, "/readyz")[1], 15,
               lambda: f"/readyz 503 naming the open circuit (is {get(port, '/readyz')}; {run.describe()})")
    body = get(port, "/readyz")[1]
    check("calls failed" in body or "probe failed" in body, f"/readyz does not say why the circuit is open: {body!r}")
    wait_until(lambda: _scrape(port, "chunkd_circuit_state") == 1, 10,
               lambda: f"chunkd_circuit_state 1 (is {_scrape(port, 'chunkd_circuit_state')}; {run.describe()})")
    check((_transitions(port, "open") or 0) >= 1, "chunkd_circuit_transitions_total{to=\"open\"} did not count")


def test_api_down_at_start_opens_the_circuit_then_recovers(ctx):
    # Nothing listens on the API's port: every call is refused. The circuit opens and says so; once the API
    # listens, the probes close it and every item ends ok.
    port = free_port()
    mock = MockApi(ctx.mock.binary, ctx.tmp / "mock")
    try:
        items = _items(ctx, 300, 20)
        out = ctx.path("out.jsonl")
        run, http_port = ctx.spawn_http("run", "--queue", ctx.queue, "--handler", "http",
                                        "--base-url", f"http://127.0.0.1:{port}", "--concurrency", 50,
                                        "--max-attempts", 2, "--out", out, ctx.write_jsonl("items.jsonl", items))
        wait_until(lambda: "circuit open" in get(http_port, "/readyz")[1] or not run.alive(), 15,
                   lambda: f"/readyz naming the open circuit (is {get(http_port, '/readyz')}; {run.describe()})")
        if not run.alive():  # it burnt every item's attempts while the API was down
            _all_ok(ctx, out, items, "API down at start")
            check(False, f"chunkd run ended while the API was down: {run.describe()}")
        _open_circuit_shows(http_port, run)
        mock.start(port=port)
        wait_until(lambda: get(http_port, "/readyz")[0] == 200 or not run.alive(), 15,
                   lambda: f"/readyz 200 once the API is back ({get(http_port, '/readyz')}; {run.describe()})")
        run.wait(60, expect_rc=0)
        _all_ok(ctx, out, items, "API down at start")
        check("circuit open" in run.stderr() and "circuit closed" in run.stderr(),
              f"the circuit's opening and closing were not logged: {one_line(run.stderr()[-600:])}")
    finally:
        mock.stop()


def test_api_down_15s_mid_run_loses_nothing(ctx):
    # 8,000 calls of 50 ms at --concurrency 100 (about 2,000/s when the machine is free). After 1,500 calls the
    # API goes down for 15 s (connection refused: the process stops) and comes back on the same port. Every
    # item must end ok (none in dead), and calls must flow again at half the earlier rate or more within
    # RECOVERY_BOUND_S of the API's return.
    mock = _own_mock(ctx, "mock")
    port = mock.port
    try:
        items = _items(ctx, 8000, 50)
        out = ctx.path("out.jsonl")
        run, http_port = ctx.spawn_http("run", "--queue", ctx.queue, "--handler", "http", "--base-url", mock.url,
                                        "--concurrency", 100, "--out", out, ctx.write_jsonl("items.jsonl", items))
        wait_until(lambda: mock.total() >= 1500 or not run.alive(), 60,
                   lambda: f"1,500 calls before the outage (have {mock.total()}; {run.describe()})")
        # The rate before the outage, over one second.
        c0, t0 = mock.total(), time.monotonic()
        time.sleep(1.0)
        before_rate = (mock.total() - c0) / (time.monotonic() - t0)
        mock.stop()
        down_at = time.monotonic()
        # The outage itself lasts OUTAGE_S whatever chunkd does; meanwhile, what /readyz and the gauge say.
        readyz_open = gauge_open = None
        while time.monotonic() - down_at < OUTAGE_S:
            status, body = get(http_port, "/readyz")
            if status == 503 and "circuit open" in body:
                readyz_open = body
            if _scrape(http_port, "chunkd_circuit_state") == 1:
                gauge_open = True
            time.sleep(0.2)
        mock.start(port=port)
        up_at = time.monotonic()
        # Throughput back: the first 250 ms sample at half the earlier rate or more.
        recovered_s = None
        last_count, last_t = 0, up_at
        deadline = up_at + scaled(RECOVERY_BOUND_S * 4)
        while time.monotonic() < deadline and run.alive():
            time.sleep(0.25)
            count, t = mock.total(), time.monotonic()
            if (count - last_count) / (t - last_t) >= before_rate / 2:
                recovered_s = t - up_at
                break
            last_count, last_t = count, t
        run.wait(120, expect_rc=0)
        results = _all_ok(ctx, out, items, "API down 15 s mid-run")
        max_attempts = max(r.get("attempts", 0) for r in results)
        print(f"rate before the outage {before_rate:.0f} calls/s; throughput back {recovered_s} s after the API "
              f"returned; most attempts of an item {max_attempts}")
        check(readyz_open, "/readyz never answered 503 naming the open circuit during the outage")
        check(gauge_open, "chunkd_circuit_state was never 1 during the outage")
        check(max_attempts <= 3, f"an item spent {max_attempts} attempts: the outage's calls should not count")
        check("circuit open" in run.stderr() and "circuit closed" in run.stderr(),
              f"the circuit's opening and closing were not logged: {one_line(run.stderr()[-600:])}")
        check(recovered_s is not None and recovered_s <= scaled(RECOVERY_BOUND_S),
              f"throughput not back at half the earlier rate ({before_rate:.0f}/s) within {RECOVERY_BOUND_S} s of "
              f"the API's return (took {recovered_s} s)")
    finally:
        mock.stop()
