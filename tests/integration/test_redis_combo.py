"""Issue 17's parts together: TLS with Sentinel (rediss-sentinel://), TLS with Cluster (rediss-cluster://), and a
TLS worker whose redis-server restarts again and again (no pump thread or descriptor left behind).

Every server runs TLS only (`--port 0 --tls-port P`), with the certificates of test_redis_tls._make_certs (server.pem
carries IP 127.0.0.1 and clientAuth, so servers also use it towards each other): master and replica replicate over
TLS (`--tls-replication yes`), Sentinels listen on `tls-port` and reach the servers over TLS (`tls-replication
yes`), cluster nodes speak TLS on their bus too (`--tls-cluster yes`) and the cluster is made with `redis-cli --tls
--cluster create`. The test's own connections are TLS too (test_redis_tls.TlsRedis.client's way).
"""

import collections
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time

from harness import (REDIS_SERVER, _die_with_parent, assert_exactly_once, check, free_port, http_get, one_line,
                     read_jsonl, scaled, skip, wait_until)
from resp import Redis, RedisError, key_slot
from test_redis_tls import _make_certs

REDIS_CLI = shutil.which("redis-cli")
MASTER = "mymaster"


def _certs(ctx):
    if not shutil.which("openssl"):
        skip("openssl is not installed (the tests make their certificates with it)")
    certs = ctx.tmp / "certs"
    if not certs.exists():
        certs.mkdir()
        _make_certs(certs)
    return certs


def _tls_client(certs, port, timeout=5):
    """The test's own RESP connection over TLS to 127.0.0.1:port."""
    tls = ssl.create_default_context(cafile=str(certs / "ca.pem"))
    c = Redis.__new__(Redis)
    c.sock = tls.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=timeout),
                             server_hostname="127.0.0.1")
    c.reader = c.sock.makefile("rb")
    return c


def _call(certs, port, *args, password=None):
    with _tls_client(certs, port) as c:
        if password:
            c.execute("AUTH", password)
        return c.execute(*args)


def _try_call(certs, port, *args, password=None):
    try:
        return _call(certs, port, *args, password=password)
    except (OSError, RedisError) as exc:
        return exc


def _tls_args(certs):
    return ["--tls-cert-file", str(certs / "server.pem"), "--tls-key-file", str(certs / "server.key"),
            "--tls-ca-cert-file", str(certs / "ca.pem"), "--tls-auth-clients", "no"]


class Server:
    """A TLS-only redis-server (or Sentinel: argv_head) on 127.0.0.1; start() may be given the port again (a
    restart)."""

    def __init__(self, workdir, certs, extra=(), conf=None, password=None):
        self.dir, self.certs, self.extra, self.conf, self.password = workdir, certs, list(extra), conf, password
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = self.proc = None

    def start(self, port=None):
        self.port = port or free_port()
        if self.conf is not None:  # a Sentinel: its config file is rewritten by it, so written once
            conf = self.dir / "sentinel.conf"
            if not conf.exists():
                conf.write_text(self.conf.replace("@PORT@", str(self.port)))
            argv = [REDIS_SERVER, str(conf), "--sentinel"]
        else:
            argv = [REDIS_SERVER, "--port", "0", "--tls-port", str(self.port), "--bind", "127.0.0.1",
                    *_tls_args(self.certs), "--tls-replication", "yes", "--save", "", "--appendonly", "no",
                    "--dir", str(self.dir), "--logfile", str(self.dir / "redis.log"), "--daemonize", "no",
                    *(["--requirepass", self.password, "--masterauth", self.password] if self.password else []),
                    *self.extra]
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, preexec_fn=_die_with_parent)
        wait_until(lambda: isinstance(_try_call(self.certs, self.port, "PING", password=self.password), str)
                   or self.proc.poll() is not None,
                   15, lambda: f"redis-server on TLS port {self.port}: {self.log()}")
        check(self.proc.poll() is None, lambda: f"redis-server on TLS port {self.port} exited: {self.log()}")
        return self

    def log(self):
        for name in ("redis.log", "sentinel.log"):
            path = self.dir / name
            if path.exists():
                return one_line(path.read_text(errors="replace")[-400:])
        return "no log"

    def call(self, *args):
        return _call(self.certs, self.port, *args, password=self.password)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self):
        if self.alive():
            self.proc.kill()
            self.proc.wait(5)


def _start(ctx, certs, name, **kw):
    server = Server(ctx.tmp / name, certs, **kw).start()
    ctx.servers.append(server)
    return server


def _sentinel(ctx, certs, master_port, name="sentinel", password=None):
    conf = (f"port 0\ntls-port @PORT@\nbind 127.0.0.1\ndaemonize no\ndir {ctx.tmp / name}\n"
            f"logfile {ctx.tmp / name}/sentinel.log\n"
            f"tls-cert-file {certs / 'server.pem'}\ntls-key-file {certs / 'server.key'}\n"
            f"tls-ca-cert-file {certs / 'ca.pem'}\ntls-auth-clients no\ntls-replication yes\n"
            f"sentinel monitor {MASTER} 127.0.0.1 {master_port} 1\n"
            f"sentinel down-after-milliseconds {MASTER} 1000\nsentinel failover-timeout {MASTER} 4000\n"
            + (f"sentinel auth-pass {MASTER} {password}\n" if password else ""))
    return _start(ctx, certs, name, conf=conf)


def _master_port(sentinel):
    addr = _try_call(sentinel.certs, sentinel.port, "SENTINEL", "get-master-addr-by-name", MASTER)
    return int(addr[1]) if isinstance(addr, list) else None


def _ca(certs):
    return ["--redis-ca-file", certs / "ca.pem"]


def test_tls_sentinel_pipeline_and_failover(ctx):
    """rediss-sentinel:// (Sentinel, master and replica all TLS only; the URL's first Sentinel is down): enqueue, a
    worker and a collector give every id once. Then, on another queue, the master is killed (SIGKILL) mid-run and
    the Sentinel promotes the replica: the worker and the collector follow over TLS, and every id is in the output
    (at least once: replication is asynchronous, so the last acknowledged writes may be lost and redone). No
    message holds the password."""
    certs = _certs(ctx)
    master = _start(ctx, certs, "master", password="combo-pw")
    replica = _start(ctx, certs, "replica", password="combo-pw", extra=["--replicaof", "127.0.0.1", str(master.port)])
    wait_until(lambda: "master_link_status:up" in replica.call("INFO", "replication"), 15,
               lambda: f"the replica in sync over TLS ({replica.log()})")
    sentinel = _sentinel(ctx, certs, master.port, password="combo-pw")
    wait_until(lambda: len(_try_call(certs, sentinel.port, "SENTINEL", "replicas", MASTER) or []) == 1, 20,
               lambda: f"the Sentinel knowing the replica ({sentinel.log()})")
    url = f"rediss-sentinel://:combo-pw@127.0.0.1:{free_port()},127.0.0.1:{sentinel.port}/{MASTER}"
    # First a whole pipeline with no failover: every id exactly once.
    once = ctx.queue + "-once"
    path = ctx.write_jsonl("once.jsonl", [{"id": i, "sleep_ms": 1} for i in range(300)])
    ctx.run("enqueue", "--queue", once, "--chunk-size", 20, *_ca(certs), path, redis="flag", url=url)
    ctx.run("worker", "--queue", once, "--concurrency", 100, "--exit-when-empty", *_ca(certs), redis="flag", url=url,
            timeout=60)
    ctx.run("collect", "--queue", once, "--until-done", "--out", ctx.path("once.out.jsonl"), *_ca(certs),
            redis="flag", url=url, timeout=60)
    assert_exactly_once(read_jsonl(ctx.path("once.out.jsonl")), range(300), "results through rediss-sentinel://")
    # Then a failover in the middle of a run.
    ids = list(range(3000))
    path = ctx.write_jsonl("items.jsonl", [{"id": i, "sleep_ms": 50} for i in ids])
    ctx.run("enqueue", "--queue", ctx.queue, "--chunk-size", 20, *_ca(certs), path, redis="flag", url=url)
    worker = ctx.spawn("worker", "--queue", ctx.queue, "--concurrency", 20, "--exit-when-empty", *_ca(certs),
                       redis="flag", url=url)
    out = ctx.path("results.jsonl")
    collector = ctx.spawn("collect", "--queue", ctx.queue, "--until-done", "--out", out, *_ca(certs), redis="flag",
                          url=url)

    def done(server):
        return int(server.call("HGET", ctx.key("stats"), "done") or 0)
    wait_until(lambda: done(master) >= 300, 60, lambda: f"300 items done before the failover ({worker.describe()})")
    master.proc.send_signal(signal.SIGKILL)
    wait_until(lambda: _master_port(sentinel) == replica.port, 30,
               lambda: f"the Sentinel promoting the replica ({sentinel.log()})")
    check(worker.alive() and done(replica) < len(ids), "the queue was done before the failover: nothing to follow")
    worker.wait(120, expect_rc=0)
    collector.wait(60, expect_rc=0)
    counts = collections.Counter(r["id"] for r in read_jsonl(out))
    missing = sorted(set(ids) - set(counts))
    check(not missing, f"{len(missing)} ids missing after the failover (e.g. {missing[:5]})")
    check(set(counts) <= set(ids), "unexpected ids in the output")
    logs = worker.stderr() + collector.stderr()
    check(f"the Sentinels now name master {MASTER} at 127.0.0.1:{replica.port}" in worker.stderr(),
          lambda: f"the worker did not log following the failover: {one_line(worker.stderr()[-600:])}")
    check("combo-pw" not in logs, "the password is in a message")


def test_tls_sentinel_unreachable_named(ctx):
    """rediss-sentinel:// whose Sentinels cannot be used: one refuses the connection, one has a certificate of a CA
    not trusted. `status` exits 1 naming each Sentinel and why (not 'out of memory'), without the password; a worker
    keeps trying, says why, and ends at once on SIGTERM."""
    certs = _certs(ctx)
    master = _start(ctx, certs, "master")
    sentinel = _sentinel(ctx, certs, master.port)
    dead = free_port()
    url = f"rediss-sentinel://:hidden-pw@127.0.0.1:{dead},127.0.0.1:{sentinel.port}/{MASTER}"
    p = ctx.run("status", "--queue", ctx.queue, "--redis-ca-file", certs / "other-ca.pem", redis="flag", url=url,
                expect_rc=1)
    err = p.stderr()
    check(f"Sentinel 127.0.0.1:{dead} cannot be reached: Connection refused" in err,
          f"the refused Sentinel is not named with its reason: {one_line(err)}")
    check(f"Sentinel 127.0.0.1:{sentinel.port} cannot be reached: TLS: certificate verify failed" in err,
          f"the untrusted Sentinel is not named with its reason: {one_line(err)}")
    check("out of memory" not in err and "hidden-pw" not in err, f"stderr: {one_line(err)}")
    # A worker keeps asking, says why, and a SIGTERM while it waits ends it at once.
    worker = ctx.spawn("worker", "--queue", ctx.queue, "--redis-ca-file", certs / "other-ca.pem", redis="flag",
                       url=url)
    wait_until(lambda: "TLS: certificate verify failed" in worker.stderr(), 15,
               lambda: f"the worker's reason on stderr ({worker.describe()})")
    worker.send(signal.SIGTERM)
    started = time.monotonic()
    worker.wait(15, expect_rc=0)
    check(time.monotonic() - started < scaled(10), "the worker took too long to stop while asking the Sentinels")
    check("hidden-pw" not in worker.stderr(), "the password is in the worker's messages")


def test_tls_cluster_pipeline_and_queues(ctx):
    """rediss-cluster:// (three masters, TLS only, on the bus too): a queue on each of two masters, each driven
    through a seed that is not its master: enqueue, worker and collect give every id once; `chunkd queues` through
    one seed (after one that is down) lists both with their counts; `chunkd run` with a named queue gives every id
    once."""
    if not REDIS_CLI:
        skip("redis-cli is not installed (the cluster is made with redis-cli --cluster create)")
    certs = _certs(ctx)
    nodes = [_start(ctx, certs, f"node{i}", extra=["--cluster-enabled", "yes", "--cluster-port", str(free_port()),
                                                    "--cluster-config-file", str(ctx.tmp / f"node{i}" / "nodes.conf"),
                                                    "--cluster-node-timeout", "1000", "--tls-cluster", "yes"])
             for i in range(3)]
    made = subprocess.run([REDIS_CLI, "--tls", "--cacert", str(certs / "ca.pem"), "--cluster", "create",
                           *[f"127.0.0.1:{n.port}" for n in nodes], "--cluster-replicas", "0", "--cluster-yes"],
                          capture_output=True, text=True, timeout=60)
    check(made.returncode == 0, f"redis-cli --tls --cluster create: {one_line(made.stdout + made.stderr)}")

    def slots():
        views = [_try_call(certs, n.port, "CLUSTER", "SLOTS") for n in nodes]
        if not all(isinstance(v, list) for v in views):
            return None
        ranges = [sorted((r[0], r[1], r[2][1]) for r in v) for v in views]
        ok = all("cluster_state:ok" in str(_try_call(certs, n.port, "CLUSTER", "INFO")) for n in nodes)
        return ranges[0] if ok and all(r == ranges[0] for r in ranges) and len(ranges[0]) == 3 else None
    view = wait_until(slots, 30, "the TLS cluster ok on every node, agreeing on the slots")

    def master_of(queue):
        slot = key_slot(f"chunkd:{{{queue}}}:stats")
        return next(port for s, e, port in view if s <= slot <= e)
    queues = {}
    for i in range(1000):
        queues.setdefault(master_of(f"{ctx.queue}-{i}"), f"{ctx.queue}-{i}")
        if len(queues) == 2:
            break
    n = 300
    for master, q in queues.items():
        seed = next(node.port for node in nodes if node.port != master)
        url = f"rediss-cluster://127.0.0.1:{seed}"
        path = ctx.write_jsonl(f"{q}.jsonl", [{"id": i, "sleep_ms": 2} for i in range(n)])
        ctx.run("enqueue", "--queue", q, "--chunk-size", 10, *_ca(certs), path, redis="flag", url=url)
        check(_call(certs, master, "LLEN", f"chunkd:{{{q}}}:pending") == n // 10,
              f"queue {q}: its chunks are not on master {master}")
        ctx.run("worker", "--queue", q, "--handler", "echo", "--exit-when-empty", *_ca(certs), redis="flag", url=url,
                timeout=60)
        out = ctx.path(f"{q}.out.jsonl")
        ctx.run("collect", "--queue", q, "--out", out, "--until-done", *_ca(certs), redis="flag", url=url,
                timeout=60)
        assert_exactly_once(read_jsonl(out), range(n), f"queue {q} over rediss-cluster://")
    # `queues` through one seed, after one that is down: both queues, from two masters.
    seed = next(node.port for node in nodes if node.port not in queues)
    proc = ctx.run("queues", "--json", *_ca(certs), redis="flag",
                   url=f"rediss-cluster://127.0.0.1:{free_port()},127.0.0.1:{seed}")
    rows = {o["queue"]: o for o in (json.loads(line) for line in proc.stdout().splitlines())}
    for q in queues.values():
        check(q in rows and rows[q]["done"] == n, f"queues --json lacks {q} or its counts: {sorted(rows)}")
    # `run` with a named queue, through that seed (not the queue's master): every id once.
    q = next(f"{ctx.queue}-run-{i}" for i in range(1000) if master_of(f"{ctx.queue}-run-{i}") != seed)
    path = ctx.write_jsonl("run.jsonl", [{"id": i} for i in range(100)])
    ctx.run("run", "--queue", q, "--handler", "echo", "--out", ctx.path("run.out.jsonl"), *_ca(certs), path,
            redis="flag", url=f"rediss-cluster://127.0.0.1:{seed}", timeout=60)
    assert_exactly_once(read_jsonl(ctx.path("run.out.jsonl")), range(100), "`chunkd run` over rediss-cluster://")


def _threads_fds(pid):
    return len(os.listdir(f"/proc/{pid}/task")), len(os.listdir(f"/proc/{pid}/fd"))


def test_tls_worker_redis_restarts_leave_nothing(ctx):
    """A worker over rediss:// whose redis-server is killed and started again on the same port 5 times (items
    enqueued each time): after each restart the worker is ready again and does the items; after the last, its
    thread and descriptor counts come back to what they were before the first restart (each pump thread and
    socket ended with its connection); SIGTERM then ends it with exit 0."""
    certs = _certs(ctx)
    server = _start(ctx, certs, "redis")
    url = f"rediss://127.0.0.1:{server.port}/0"
    path = ctx.write_jsonl("items.jsonl", [{"id": i, "sleep_ms": 5} for i in range(20)])
    worker, http_port = ctx.spawn_http("worker", "--queue", ctx.queue, *_ca(certs), redis="flag", url=url)

    def ready_with_items():
        ctx.run("enqueue", "--queue", ctx.queue, *_ca(certs), path, redis="flag", url=url)
        wait_until(lambda: int(server.call("HGET", ctx.key("stats"), "done") or 0) == 20, 30,
                   lambda: f"20 items done ({worker.describe()})")
    ready_with_items()
    samples = []

    def steady():
        samples.append(_threads_fds(worker.pid))
        return http_get(http_port, "/readyz")[0] == 200 and len(samples) >= 3 and \
            samples[-1] == samples[-2] == samples[-3]
    wait_until(steady, 20, lambda: f"a steady count of (threads, fds): {samples[-5:]}")
    base = samples[-1]
    for round_ in range(1, 6):
        server.stop()
        server.start(server.port)
        ready_with_items()
        wait_until(lambda: http_get(http_port, "/readyz")[0] == 200, 30,
                   lambda: f"restart {round_}: the worker ready again ({worker.describe()})")
    # The connection of the queue gauges notices a restart only at its next round (every 10 s): poll until every
    # connection is back, and then the counts are what they were.
    now = []

    def back():
        now[:] = [_threads_fds(worker.pid)]
        return now[0] == base
    wait_until(back, 30, lambda: f"(threads, fds) back to {base} after 5 restarts, now {now} ({worker.describe()})")
    worker.send(signal.SIGTERM)
    started = time.monotonic()
    worker.wait(20, expect_rc=0)
    check(time.monotonic() - started < scaled(20), "the worker took too long to stop")
