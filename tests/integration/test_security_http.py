"""The health port under attack (issue 15, part 1): hostile connections (slow headers, idle, oversized) held
against a worker's HTTP port must not keep /healthz, /readyz and /metrics from answering; each connection gets an
absolute deadline, one client address a bounded share; and the port serves IPv6 ([::1], and the dual-stack
default).

Latency bounds, chosen for a loaded 2-core CI machine: the target is an answer within 1 s, so the median of the
probes' times must be under 1 s, and none may take over 3 s (the liveness probe's timeout in deploy/): a single
request slowed by the machine's load is tolerated, a port that stops answering is not."""

import os
import socket
import statistics
import time

from harness import check, free_port, scaled, skip, wait_until
from hostile import Hostile, hostile_sources, mix, probe_latencies, rss_kib, timed_get

HOSTILE = 200
PER_SOURCE = 20           # hostile connections per source address (the worker allows more per address)
ATTACK_S = 8              # how long the probes run while the hostile connections are held
RSS_GROWTH_MIB = 32       # the worker's RSS during the attack, over its RSS before it (1,000 connections: ~10)
SANITIZED = os.environ.get("CHUNKD_IT_SANITIZER") == "1"  # ASan keeps freed memory (its quarantine): no RSS bound


def start_worker(ctx, *args):
    worker, port = ctx.spawn_http("worker", "--queue", ctx.queue, "--handler", "sleep", *args)
    wait_until(lambda: timed_get("127.0.0.1", port, "/readyz")[0] == 200, 15,
               lambda: f"/readyz answering ({worker.describe()})")
    return worker, port


def test_probes_answer_under_200_hostile_connections(ctx):
    worker, port = start_worker(ctx)
    rss_before = rss_kib(worker.pid)
    hostile = Hostile(port, mix(HOSTILE), hostile_sources(HOSTILE, PER_SOURCE)).start()
    try:
        wait_until(lambda: hostile.connected() >= HOSTILE * 0.9, 15,
                   lambda: f"the hostile connections connected ({hostile.stats()['connected']} of {HOSTILE})")
        rss_peak = rss_before
        samples = []
        end = time.monotonic() + ATTACK_S
        while time.monotonic() < end:
            samples += probe_latencies("127.0.0.1", port, 1.0, timeout=scaled(5))
            rss_peak = max(rss_peak, rss_kib(worker.pid) or 0)
        stats = hostile.stats()
    finally:
        hostile.stop()
    failed = [(p, s, round(t, 2)) for p, s, t in samples if s != 200]
    times = [t for _, _, t in samples]
    desc = (f"{len(samples)} probes: median {statistics.median(times):.3f} s, max {max(times):.3f} s; "
            f"hostile {stats['connected']} connected (max {stats['connected_max']}), "
            f"{stats['closed_by_server']} closed by the worker; RSS +{(rss_peak - rss_before) / 1024:.1f} MiB")
    check(not failed, f"probes not answered 200 under attack: {failed[:6]}; {desc}")
    check(statistics.median(times) < scaled(1.0), f"probes slower than 1 s (median): {desc}")
    check(max(times) < scaled(3.0), f"a probe took over 3 s: {desc}")
    check(len(samples) >= 10, f"too few probes ran: {desc}")
    check(stats["connected_max"] >= HOSTILE * 0.9, f"the hostile connections were not held: {desc}")
    growth_mib = (rss_peak - rss_before) / 1024
    check(SANITIZED or growth_mib < RSS_GROWTH_MIB, f"the worker's RSS grew by {growth_mib:.1f} MiB under attack: "
                                                   f"{desc}")
    check(timed_get("127.0.0.1", port, "/healthz")[0] == 200, "/healthz after the attack")
    check(worker.alive(), f"the worker died: {worker.describe()}")


def test_slow_and_idle_connections_meet_a_deadline(ctx):
    """A client dripping header bytes (each one restarting libmicrohttpd's idle timeout) is closed a bounded time
    after it connected; so is an idle one."""
    worker, port = start_worker(ctx)
    hostile = Hostile(port, ["drip"] * 5 + ["idle"] * 5, ["127.0.0.2"] * 10).start()
    try:
        wait_until(lambda: len(hostile.stats()["drip_lifetimes"]) >= 5, 20,
                   lambda: f"the worker closing the dripping connections ({hostile.stats()})")
        wait_until(lambda: hostile.stats()["closed_by_server"] >= 10, 20,
                   lambda: f"the worker closing the idle connections ({hostile.stats()})")
        lifetimes = hostile.stats()["drip_lifetimes"]
    finally:
        hostile.stop()
    check(max(lifetimes) < scaled(6), f"dripping connections lived {sorted(round(t, 1) for t in lifetimes)} s "
                                      f"(deadline 2 s)")
    check(worker.alive(), f"the worker died: {worker.describe()}")


def _served_from(pid, port, remote_ip):
    """How many of the process's sockets are TCP connections to its `port` from `remote_ip` that it still serves:
    ESTABLISHED or CLOSE_WAIT (the client closed, the worker has not). A connection the worker has shut down
    (FIN_WAIT, CLOSING...) no longer counts, even while its descriptor waits to be closed: under ASan that wait is
    long enough to count dozens of them (CI once saw 42 sockets for the limit of 32)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    want_ip = "".join(reversed([f"{int(x):02X}" for x in remote_ip.split(".")]))
    n = 0
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            local, remote, state, inode = fields[1], fields[2], fields[3], fields[9]
            if (inode in inodes and int(local.split(":")[1], 16) == port and remote.split(":")[0] == want_ip
                    and state in ("01", "08")):
                n += 1
    return n


def test_one_address_gets_a_bounded_share(ctx):
    """100 idle connections from one address: the worker never serves more than its per-address limit (32) of them,
    and a probe from another address is answered meanwhile."""
    worker, port = start_worker(ctx)
    hostile = Hostile(port, ["idle"] * 100, ["127.0.0.3"] * 100).start()
    held = []
    try:
        wait_until(lambda: held.append(_served_from(worker.pid, port, "127.0.0.3"))
                   or hostile.stats()["closed_by_server"] >= 100,
                   20, lambda: f"the worker closing the idle connections ({hostile.stats()})")
        status, took = timed_get("127.0.0.1", port, "/healthz", timeout=scaled(5))
    finally:
        hostile.stop()
    check(max(held) <= 32 + 4, f"the worker served up to {max(held)} connections from one address at once (limit 32)")
    check(max(held) >= 16, f"set-up: at most {max(held)} connections were seen served at once (the count is blind?)")
    check(status == 200 and took < scaled(3), f"/healthz beside one hostile address: {status} in {took:.2f} s")
    check(worker.alive(), f"the worker died: {worker.describe()}")


def test_hostile_connections_at_the_probes_address(ctx):
    """200 hostile connections from the probes' own address (kubelet probes from the node's address; a hostile
    process there shares it): a new connection closes the address's oldest instead of being refused, so the probes
    still get in. Each probe's connection lives a millisecond or two, so one may rarely be closed by a burst of
    reconnects: at least 9 of 10 are answered 200, and never 3 in a row fail (the liveness probe's threshold)."""
    worker, port = start_worker(ctx)
    hostile = Hostile(port, ["drip", "idle"] * 100, ["127.0.0.1"] * 200).start()
    try:
        # The attack is on once 150 were connected at once: not "are connected now", since the server closes the
        # address's oldest connection for each new one, and the 200 churn (a CI run saw 32 connected at the moment
        # of each poll, 200 at most, 34,000 closed by the server in 15 s).
        wait_until(lambda: hostile.stats()["connected_max"] >= 150, 15,
                   lambda: f"the hostile connections connected ({hostile.stats()})")
        samples = probe_latencies("127.0.0.1", port, ATTACK_S, timeout=scaled(5))
    finally:
        hostile.stop()
    ok = [s == 200 for _, s, _ in samples]
    runs = "".join("." if x else "F" for x in ok)
    check(len(samples) >= 10 and sum(ok) >= 0.9 * len(samples) and "FFF" not in runs,
          f"probes from the hostile connections' address (. answered, F not): {runs}")
    check(worker.alive(), f"the worker died: {worker.describe()}")


def _spawn_v6(ctx, addr_args, logged):
    """A worker on a free port with the given --http-addr arguments; (worker, port) once it logs `logged`."""
    for _ in range(5):
        port = free_port()
        worker = ctx.spawn("worker", "--queue", ctx.queue, "--handler", "sleep", *addr_args,
                           env={"CHUNKD_HTTP_PORT": str(port)})
        serving = logged.format(port=port)
        wait_until(lambda: serving in worker.stderr() or not worker.alive(), 15,
                   lambda: f"worker serving on {serving} ({worker.describe()})")
        if serving in worker.stderr():
            return worker, port
        check("address in use" in worker.stderr(), f"worker did not serve HTTP: {worker.describe()}")
    raise AssertionError("no free port")


def _ipv6_loopback():
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def test_ipv6_loopback_and_dual_stack_default(ctx):
    if not _ipv6_loopback():
        skip("no IPv6 loopback on this machine")
    worker, port = _spawn_v6(ctx, ["--http-addr", "::1"], "/metrics on [::1]:{port}")
    wait_until(lambda: timed_get("::1", port, "/healthz")[0] == 200, 15,
               lambda: f"/healthz over [::1] ({worker.describe()})")
    worker.kill()
    # The default listens on [::] for both families.
    worker, port = _spawn_v6(ctx, [], "/metrics on [::]:{port}")
    wait_until(lambda: timed_get("::1", port, "/healthz")[0] == 200, 15,
               lambda: f"/healthz over [::1] with the default address ({worker.describe()})")
    check(timed_get("127.0.0.1", port, "/healthz")[0] == 200, "/healthz over IPv4 with the default (dual-stack)")
    bad = ctx.run("worker", "--queue", ctx.queue, "--http-addr", "::1::", env={"CHUNKD_HTTP_PORT": str(port)},
                  expect_rc=1)
    check("'::1::' is not an IPv4 or IPv6 address" in bad.stderr(), f"a bad --http-addr: {bad.describe()}")
