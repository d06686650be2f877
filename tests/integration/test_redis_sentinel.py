"""Redis Sentinel: redis-sentinel:// URLs, a replica refused, all Sentinels down.

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

    def __init__(self, workdir, master_port):
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        conf = self.dir / "sentinel.conf"
        conf.write_text(f"port {self.port}\nbind 127.0.0.1\ndaemonize no\ndir {self.dir}\n"
                        f"logfile {self.dir}/sentinel.log\n"
                        f"sentinel monitor {MASTER} 127.0.0.1 {master_port} 1\n"
                        f"sentinel down-after-milliseconds {MASTER} 1000\n"
                        f"sentinel failover-timeout {MASTER} 4000\n"
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
