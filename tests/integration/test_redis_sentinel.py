"""Redis Sentinel: redis-sentinel:// URLs, a failover under load with --redis-min-replicas, a replica refused, all
Sentinels down; and --redis-min-replicas with no replica to confirm.

Each test starts its own master (and replicas with --replicaof) as throwaway redis-servers, and Sentinels as
`redis-server sentinel.conf --sentinel` (Debian's binary) with a writable config in the test's temp dir and short
down-after-milliseconds / failover-timeout, all on free loopback ports. A test that needs a Sentinel naming a
replica uses a stub Sentinel (a few lines of RESP on a socket) so that the answer does not depend on timing.
"""

import collections
import json
import signal
import socket
import subprocess
import threading
import time

from harness import (REDIS_SERVER, _die_with_parent, assert_exactly_once, check, free_port, read_jsonl, scaled,
                     wait_until)
from resp import Redis, RedisError

MASTER = "mymaster"


class Sentinel:
    """One Sentinel process monitoring MASTER at 127.0.0.1:master_port (quorum 1)."""

    def __init__(self, workdir, master_port, failover_timeout_ms=4000):
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        conf = self.dir / "sentinel.conf"
        conf.write_text(f"port {self.port}\nbind 127.0.0.1\ndaemonize no\ndir {self.dir}\n"
                        f"logfile {self.dir}/sentinel.log\n"
                        f"sentinel monitor {MASTER} 127.0.0.1 {master_port} 1\n"
                        f"sentinel down-after-milliseconds {MASTER} 1000\n"
                        f"sentinel failover-timeout {MASTER} {failover_timeout_ms}\n"
                        f"sentinel parallel-syncs {MASTER} 2\n")
        self.proc = subprocess.Popen([REDIS_SERVER, str(conf), "--sentinel"], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     preexec_fn=_die_with_parent)
        wait_until(self._answers, 10, lambda: f"Sentinel on port {self.port} answering ({self.log()[-300:]})")

    def _answers(self):
        try:
            return self.master_addr() is not None
        except (OSError, RedisError):
            return False

    def master_addr(self):
        with Redis(port=self.port, timeout=2) as r:
            return r.execute("SENTINEL", "get-master-addr-by-name", MASTER)

    def replicas(self):
        with Redis(port=self.port, timeout=2) as r:
            return r.execute("SENTINEL", "replicas", MASTER)

    def log(self):
        path = self.dir / "sentinel.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(5)


class LinkProxy:
    """A TCP proxy for a replica's link to its master, so a test can hold back the replication stream (freeze) and
    then drop what was held (cut), as a network partition would: SIGSTOPping the replica would not do, the kernel
    keeps the stream for it. Replica to master (its acknowledgements) always flows."""

    def __init__(self, master_port):
        self.master_port = master_port
        self.frozen = threading.Event()
        self.cut_off = threading.Event()
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(4)
        self.port = self.listener.getsockname()[1]
        self.socks = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.cut_off.is_set():
            try:
                down, _ = self.listener.accept()
                up = socket.create_connection(("127.0.0.1", self.master_port), timeout=5)
            except OSError:
                return
            up.settimeout(None)
            self.socks += [down, up]
            threading.Thread(target=self._pump, args=(up, down, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(down, up, False), daemon=True).start()

    def _pump(self, src, dst, from_master):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                while from_master and self.frozen.is_set() and not self.cut_off.is_set():
                    time.sleep(0.01)
                if self.cut_off.is_set():
                    break
                dst.sendall(data)
        except OSError:
            pass
        for sock in (src, dst):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def freeze(self):
        self.frozen.set()

    def cut(self):
        """Drops what the frozen link held and every connection; refuses new ones."""
        self.cut_off.set()
        self.listener.close()
        for sock in self.socks:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def stop(self):
        self.cut()
        for sock in self.socks:
            sock.close()


def _link_up(server):
    with server.client() as c:
        return "master_link_status:up" in c.execute("INFO", "replication")


def _sentinel_setup(ctx, n_replicas=1, n_sentinels=1):
    """Master, replicas in sync, Sentinels that know every replica. Returns (master, replicas, sentinels)."""
    master = ctx.start_redis()
    replicas = [ctx.start_redis(extra_args=["--replicaof", "127.0.0.1", str(master.port)])
                for _ in range(n_replicas)]
    for rep in replicas:
        wait_until(lambda: _link_up(rep), 15, f"replica {rep.port} in sync with master {master.port}")
    sentinels = []
    for i in range(n_sentinels):
        s = Sentinel(ctx.tmp / f"sentinel{i + 1}", master.port)
        ctx.servers.append(s)  # stopped at the end of the test
        sentinels.append(s)
    for s in sentinels:
        wait_until(lambda: len(s.replicas()) == n_replicas, 20,
                   lambda: f"Sentinel {s.port} knowing the {n_replicas} replicas ({s.log()[-300:]})")
    return master, replicas, sentinels


def _url(ports, password=None, master=MASTER):
    auth = f":{password}@" if password else ""
    return f"redis-sentinel://{auth}" + ",".join(f"127.0.0.1:{p}" for p in ports) + f"/{master}"


def test_sentinel_pipeline(ctx):
    # The first Sentinel of the URL is down: chunkd asks the next one.
    master, _, sentinels = _sentinel_setup(ctx)
    url = _url([free_port(), sentinels[0].port])
    items = [{"id": i, "sleep_ms": 5} for i in range(500)]
    ctx.run("enqueue", "--queue", ctx.queue, "--chunk-size", 20, ctx.write_jsonl("items.jsonl", items), url=url)
    with master.client() as c:
        check(c.execute("LLEN", ctx.key("pending")) == 25, "the chunks are not in the master's pending list")
    ctx.run("worker", "--queue", ctx.queue, "--concurrency", 200, "--exit-when-empty", url=url, timeout=60)
    out = ctx.path("results.jsonl")
    ctx.run("collect", "--queue", ctx.queue, "--until-done", "--out", out, url=url, timeout=60)
    assert_exactly_once(read_jsonl(out), [it["id"] for it in items], "results through redis-sentinel://")
    status = json.loads(ctx.run("status", "--queue", ctx.queue, "--json", url=url).stdout())
    check(status.get("done") == 500, f"status through redis-sentinel://: {status}")


def _stats(server, ctx):
    with server.client() as c:
        return {k: int(v) for k, v in c.hgetall(ctx.key("stats")).items()}


def _failover_with_lag(ctx, min_replicas):
    """Runs 3000 items through 2 workers and a collector, and fails the master over to a replica that missed the
    last writes: its replication link is held back (LinkProxy) while the master acknowledges more results, then
    the master is killed (SIGKILL), what the link held is dropped and the replica promoted. With min_replicas a new replica of the promoted master
    is started (so WAIT can be met again). Returns (ids, result lines collected, the workers' logs)."""
    master = ctx.start_redis()
    link = LinkProxy(master.port)
    ctx.servers.append(link)
    stale = ctx.start_redis(extra_args=["--replicaof", "127.0.0.1", str(link.port)])
    wait_until(lambda: _link_up(stale), 15, "the replica in sync through the proxy")
    # failover-timeout 3 min (Redis's default): a Sentinel points a replica that replicates from another address
    # than the master's at the master itself (+fix-slave-config) once failover-timeout has passed since it found
    # it, which would take the replica off the proxy (a CI run saw it 10 s in, and the replica caught up).
    sentinels = [Sentinel(ctx.tmp / "sentinel1", master.port, failover_timeout_ms=180000)]
    ctx.servers.append(sentinels[0])
    wait_until(lambda: len(sentinels[0].replicas()) == 1, 20, "the Sentinel knowing the replica")
    url = _url([s.port for s in sentinels])
    ids = list(range(3000))
    items = [{"id": i, "sleep_ms": 20 + 40 * (i % 10)} for i in ids]
    mr = {"CHUNKD_REDIS_MIN_REPLICAS": str(min_replicas), "CHUNKD_REDIS_MIN_REPLICAS_TIMEOUT_MS": "500"}
    ctx.run("enqueue", "--queue", ctx.queue, "--chunk-size", 20, ctx.write_jsonl("items.jsonl", items), url=url,
            env=mr)
    # --checkpoint-ms 0: every chunk commits its items as they finish (partial commits), the case a lost write
    # hurts most: the final commit alone would leave the lost items neither done nor pending.
    common = ["--queue", ctx.queue, "--concurrency", 100, "--lease-ms", 5000, "--checkpoint-ms", 0,
              "--exit-when-empty"]
    workers = [ctx.spawn("worker", *common, url=url, env=mr, name=f"worker{i}") for i in range(2)]
    out = ctx.path("results.jsonl")
    collector = ctx.spawn("collect", "--queue", ctx.queue, "--until-done", "--out", out, url=url)
    wait_until(lambda: _stats(master, ctx).get("done", 0) >= 600, 60,
               lambda: f"600 items done before the failover ({workers[0].describe()})")
    link.freeze()
    at_stop = _stats(master, ctx).get("done", 0)
    try:
        # The master takes commits the stopped replica never sees (with min_replicas: WAIT times out on them).
        more = 20 if min_replicas else 300  # with WAIT the workers stop once their window is full
        wait_until(lambda: _stats(master, ctx).get("done", 0) >= at_stop + more, 30,
                   f"{more} results committed on the master while its replica's link is held back")
        if min_replicas:
            wait_until(lambda: all("commit round not confirmed" in w.stderr() for w in workers), 30,
                       "both workers holding commits that WAIT did not confirm")
        # Polled: under load the replica's last forwarded writes may land after the master's count is read.
        wait_until(lambda: _stats(master, ctx).get("done", 0) > _stats(stale, ctx).get("done", 0), 20,
                   lambda: f"set-up: the replica behind the master (done: master {_stats(master, ctx).get('done')}, "
                           f"replica {_stats(stale, ctx).get('done')}, {at_stop} when the link was held back)")
        master.proc.send_signal(signal.SIGKILL)
    finally:
        link.cut()
    killed = time.monotonic()
    wait_until(lambda: sentinels[0].master_addr()[1] == str(stale.port), 60,
               lambda: f"the Sentinel promoting the replica ({sentinels[0].log()[-400:]})")
    promoted_after = time.monotonic() - killed
    if min_replicas:
        fresh = ctx.start_redis(extra_args=["--replicaof", "127.0.0.1", str(stale.port)])
        wait_until(lambda: _link_up(fresh), 30, "a new replica of the promoted master in sync")
    for w in workers:
        w.wait(180, expect_rc=0)
    wait_until(lambda: not collector.alive(), 120,
               lambda: f"the collector finishing: stats {_stats(stale, ctx)}, pending "
                       f"{stale.client().execute('LLEN', ctx.key('pending'))}, processing "
                       f"{[stale.client().execute('LLEN', k) for k in stale.client().keys(ctx.key('processing:*'))]}")
    collector.wait(10, expect_rc=0)
    rows = read_jsonl(out)
    logs = "".join(w.stderr() for w in workers)
    check(f"the Sentinels now name master {MASTER} at 127.0.0.1:{stale.port}" in logs,
          f"no worker logged following the failover ({promoted_after:.1f}s to promote)")
    # Each worker gives back what the new master still lists as its own once it holds nothing, right after the
    # failover, not only when the queue runs dry.
    for w in workers:
        check("fetch: the Redis master moved;" in w.stderr(), f"`{w.name}` did not check its processing list")
    return ids, rows, logs


def test_sentinel_failover_with_min_replicas(ctx):
    # With --redis-min-replicas 1 nothing acknowledged is lost when the master fails over to a replica that missed
    # writes: the workers keep what WAIT did not confirm and commit it again on the new master. Every id is in the
    # output; a line may repeat (the collector had read it from the old master), and --last-only keeps one per id.
    ids, rows, logs = _failover_with_lag(ctx, 1)
    check(all(r.get("ok") for r in rows), "a failed result after the failover")
    counts = collections.Counter(r["id"] for r in rows)
    missing = sorted(set(ids) - set(counts))
    check(not missing, f"{len(missing)} ids missing from the output after the failover (e.g. {missing[:5]})")
    check(set(counts) <= set(ids), "unexpected ids in the output")
    check("commit round not confirmed: NOREPLICAS only 0 of --redis-min-replicas 1" in logs,
          "no worker logged a commit held back by WAIT while the replica was stopped")
    last = ctx.path("last.jsonl")
    last.write_text("".join(json.dumps(r) + "\n" for r in {r["id"]: r for r in rows}.values()))
    assert_exactly_once(read_jsonl(last), ids, "results, one per id")


def test_sentinel_failover_without_min_replicas(ctx):
    # Without --redis-min-replicas the same failover loses results the master had acknowledged. What README
    # Guarantees promises still holds here: the queue finishes (a chunk whose final commit was lost goes back from
    # the worker's processing list to pending once that worker holds nothing) and every id is in the output,
    # some more than once.
    ids, rows, _ = _failover_with_lag(ctx, 0)
    counts = collections.Counter(r["id"] for r in rows)
    missing = sorted(set(ids) - set(counts))
    check(not missing, f"{len(missing)} ids missing from the output after the failover (e.g. {missing[:5]})")
    check(set(counts) <= set(ids), "unexpected ids in the output")


class StubSentinel:
    """Answers SENTINEL get-master-addr-by-name with a fixed address (a Sentinel whose view lags a failover)."""

    def __init__(self, port_named):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.named = str(port_named).encode()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                try:
                    conn.settimeout(5)
                    conn.recv(4096)
                    conn.sendall(b"*2\r\n$9\r\n127.0.0.1\r\n$%d\r\n%s\r\n" % (len(self.named), self.named))
                except OSError:
                    pass

    def stop(self):
        self.sock.close()


def test_sentinel_replica_refused(ctx):
    master = ctx.start_redis()
    replica = ctx.start_redis(password="s3cret-pw", extra_args=["--replicaof", "127.0.0.1", str(master.port)])
    stub = StubSentinel(replica.port)
    ctx.servers.append(stub)
    url = _url([stub.port], password="s3cret-pw")
    items = ctx.write_jsonl("items.jsonl", [{"id": 1}])
    started = time.monotonic()
    enq = ctx.run("enqueue", "--queue", ctx.queue, items, url=url, expect_rc=1, timeout=30)
    err = enq.stderr()
    check(f"master {MASTER} at 127.0.0.1:{replica.port} is a replica, not the master (failover in progress?)" in err,
          f"enqueue did not name the replica: {err[-500:]!r}")
    check("s3cret-pw" not in err, "the password is in the message")
    check(time.monotonic() - started < scaled(15), "enqueue took too long to give up")
    with replica.client() as c:
        check(c.execute("EXISTS", ctx.key("pending")) == 0, "something was written to the replica")
    st = ctx.run("status", "--queue", ctx.queue, url=url, expect_rc=1, timeout=30)
    check("is a replica, not the master" in st.stderr(), f"status: {st.stderr()[-400:]!r}")


def test_sentinel_all_down(ctx):
    # Nothing listens on these ports: enqueue and status fail at once, naming every Sentinel asked.
    ports = [free_port(), free_port()]
    url = _url(ports, password="hidden-pw")
    items = ctx.write_jsonl("items.jsonl", [{"id": 1}])
    for cmd, args in (("enqueue", [items]), ("status", [])):
        started = time.monotonic()
        p = ctx.run(cmd, "--queue", ctx.queue, *args, url=url, expect_rc=1, timeout=30)
        took = time.monotonic() - started
        err = p.stderr()
        check(f"no Sentinel named the master {MASTER}" in err, f"{cmd}: {err[-500:]!r}")
        for port in ports:
            check(f"Sentinel 127.0.0.1:{port} cannot be reached" in err, f"{cmd} did not name Sentinel {port}: "
                                                                           f"{err[-500:]!r}")
        check("hidden-pw" not in err, f"{cmd}: the password is in the message")
        check(took < scaled(10), f"{cmd} took {took:.1f}s to give up")


def test_min_replicas_unmet(ctx):
    # --redis-min-replicas 1 on a master without a replica: enqueue reports nothing as done (exit 1, saying why);
    # a worker commits nothing as done either: it keeps its chunks, /readyz says why, and it finishes once a
    # replica is there. Any redis:// URL, Sentinel or not.
    master = ctx.start_redis()
    url = master.url()
    mr = {"CHUNKD_REDIS_MIN_REPLICAS": "1", "CHUNKD_REDIS_MIN_REPLICAS_TIMEOUT_MS": "300"}
    items = [{"id": i, "sleep_ms": 10} for i in range(100)]
    path = ctx.write_jsonl("items.jsonl", items)
    enq = ctx.run("enqueue", "--queue", ctx.queue, "--chunk-size", 10, path, url=url, env=mr, expect_rc=1)
    check("was written but not confirmed on a replica: NOREPLICAS only 0 of --redis-min-replicas 1" in enq.stderr(),
          f"enqueue did not say why: {enq.stderr()[-400:]!r}")
    with master.client() as c:
        c.execute("DEL", ctx.key("pending"), ctx.key("stats"))
    ctx.run("enqueue", "--queue", ctx.queue, "--chunk-size", 10, path, url=url)
    worker, port = ctx.spawn_http("worker", "--queue", ctx.queue, "--exit-when-empty", url=url, env=mr)
    from test_metrics import get
    wait_until(lambda: "NOREPLICAS" in get(port, "/readyz")[1], 30,
               lambda: f"/readyz naming the missing replica ({get(port, '/readyz')}; {worker.describe()})")
    check(get(port, "/readyz")[0] == 503, "/readyz is not 503 while commits are not confirmed")
    check(worker.alive(), "the worker exited while its commits were not confirmed")
    replica = ctx.start_redis(extra_args=["--replicaof", "127.0.0.1", str(master.port)])
    wait_until(lambda: _link_up(replica), 15, "the replica in sync")
    worker.wait(60, expect_rc=0)
    out = ctx.path("results.jsonl")
    ctx.run("collect", "--queue", ctx.queue, "--until-done", "--out", out, url=url)
    assert_exactly_once(read_jsonl(out), [it["id"] for it in items], "results once a replica confirmed them")
