"""chunkd through a real Redis Cluster (issue 17): redis-cluster://seed,... URLs.

The tests of this file share one cluster, started on first use: 3 masters and 3 replicas (`redis-cli --cluster
create ... --cluster-replicas 1`), each `redis-server --cluster-enabled yes --cluster-node-timeout 1000 --appendonly
no` on free loopback ports (data and cluster bus), in a temp dir removed at exit. Each test uses its own queues, named
so that their slots fall on the masters the test wants; chunkd is always given a seed node that is NOT the queue's
master, so every connection is redirected (CLUSTER SLOTS at connect, MOVED after).

The failover test kills a master for good (kill -9): its replica takes over and the cluster stays usable for the
tests after it, with one master fewer replicas.
"""

import atexit
import json
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from harness import (REDIS_SERVER, _die_with_parent, assert_exactly_once, check, free_port, one_line, read_jsonl,
                     wait_until)
from resp import Redis, RedisError, key_slot

REDIS_CLI = shutil.which("redis-cli") or "/usr/bin/redis-cli"
N_MASTERS = 3


def slot_of_queue(queue):
    return key_slot(f"chunkd:{{{queue}}}:stats")


class Node:
    def __init__(self, workdir):
        self.port = None
        self.bus_port = None
        self.proc = None
        self.dir = workdir

    def start(self):
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port, self.bus_port = free_port(), free_port()
        argv = [REDIS_SERVER, "--port", str(self.port), "--cluster-port", str(self.bus_port), "--bind", "127.0.0.1",
                "--cluster-enabled", "yes", "--cluster-config-file", str(self.dir / f"nodes-{self.port}.conf"),
                "--cluster-node-timeout", "1000", "--appendonly", "no", "--save", "", "--dir", str(self.dir),
                "--logfile", str(self.dir / "redis.log"), "--daemonize", "no"]
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, preexec_fn=_die_with_parent)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def call(self, *args):
        c = Redis(port=self.port, timeout=5)
        try:
            return c.execute(*args)
        finally:
            c.close()

    def call_asking(self, *args):
        """ASKING, then the command, on one connection (ASKING holds for the next command of its connection)."""
        c = Redis(port=self.port, timeout=5)
        try:
            c.execute("ASKING")
            return c.execute(*args)
        finally:
            c.close()

    def try_call(self, *args):
        try:
            return self.call(*args)
        except (OSError, RedisError) as exc:
            return exc

    def kill(self):
        if self.alive():
            self.proc.kill()
            self.proc.wait(5)


class Cluster:
    def __init__(self):
        self.dir = Path(tempfile.mkdtemp(prefix="chunkd-cluster-"))
        self.nodes = [Node(self.dir / f"n{i}") for i in range(2 * N_MASTERS)]

    def start(self):
        for node in self.nodes:
            node.start()
        for node in self.nodes:
            wait_until(lambda: node.try_call("PING") == "PONG", 15, f"redis-server on {node.port}")
        out = subprocess.run([REDIS_CLI, "--cluster", "create", *[f"127.0.0.1:{n.port}" for n in self.nodes],
                              "--cluster-replicas", "1", "--cluster-yes"], capture_output=True, text=True,
                             timeout=60)
        check(out.returncode == 0, f"redis-cli --cluster create: {one_line(out.stdout + out.stderr)}")
        self.wait_ok()
        return self

    def live(self):
        return [n for n in self.nodes if n.alive()]

    def slots(self):
        """[(start, end, master port, [replica ports])] from a live node's CLUSTER SLOTS."""
        reply = self.live()[0].call("CLUSTER", "SLOTS")
        return [(r[0], r[1], r[2][1], [x[1] for x in r[3:]]) for r in reply]

    def wait_ok(self, timeout=60):
        """cluster_state:ok on every live node, all agreeing on 3 masters that cover every slot, and each
        master's replicas caught up."""
        def ok():
            for node in self.live():
                info = node.try_call("CLUSTER", "INFO")
                if not isinstance(info, str) or "cluster_state:ok" not in info:
                    return False
            views = set()
            for node in self.live():
                reply = node.try_call("CLUSTER", "SLOTS")
                if not isinstance(reply, list):
                    return False
                views.add(tuple(sorted((r[0], r[1], r[2][1]) for r in reply)))
            if len(views) != 1:
                return False
            view = views.pop()
            return sum(e - s + 1 for s, e, _ in view) == 16384 and len({p for _, _, p in view}) == N_MASTERS
        wait_until(ok, timeout, "Redis Cluster state ok on every node")

    def masters(self):
        return sorted({port for _, _, port, _ in self.slots()})

    def master_of(self, queue):
        slot = slot_of_queue(queue)
        return next(port for s, e, port, _ in self.slots() if s <= slot <= e)

    def node(self, port):
        return next(n for n in self.nodes if n.port == port)

    def url(self, *ports):
        return "redis-cluster://" + ",".join(f"127.0.0.1:{p}" for p in ports)

    def seed_for(self, queue):
        """A master that does not serve the queue's slot: every connection through it is redirected."""
        return next(p for p in self.masters() if p != self.master_of(queue))

    def queues_on_masters(self, prefix):
        """One queue name per master: {master port: queue}."""
        found = {}
        for i in range(10000):
            q = f"{prefix}-{i}"
            found.setdefault(self.master_of_cached(q), q)
            if len(found) == N_MASTERS:
                return found
        raise AssertionError("no queue names for every master")

    def master_of_cached(self, queue):
        if not hasattr(self, "_slots_cache"):
            self._slots_cache = self.slots()
        slot = slot_of_queue(queue)
        return next(port for s, e, port, _ in self._slots_cache if s <= slot <= e)

    def replicas_caught_up(self, master_port):
        info = self.node(master_port).call("INFO", "replication")
        fields = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
        offset = int(fields["master_repl_offset"])
        replicas = [v for k, v in fields.items() if k.startswith("slave")]
        return replicas and all(f"offset={offset}," in v and "state=online" in v for v in replicas)

    def stop(self):
        for node in self.nodes:
            node.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


_cluster = None


def cluster():
    global _cluster
    if _cluster is None:
        _cluster = Cluster()
        atexit.register(_cluster.stop)
        _cluster.start()
    if hasattr(_cluster, "_slots_cache"):
        del _cluster._slots_cache
    _cluster.wait_ok()
    return _cluster


def _enqueue(ctx, url, queue, ids, chunk_size=10, sleep_ms=0, name=None):
    path = ctx.write_jsonl(name or f"{queue}.jsonl", [{"id": i, "sleep_ms": sleep_ms} for i in ids])
    return ctx.run("enqueue", "--queue", queue, "--chunk-size", chunk_size, path, url=url)


def _cluster_key_count(cl, queue, suffix):
    master = cl.node(cl.master_of(queue))
    return master.call("LLEN", f"chunkd:{{{queue}}}:{suffix}")


def test_cluster_queues_on_every_master_each_through_another_seed(ctx):
    """A queue on each master, each driven through a seed node that is not its master: enqueue, worker and
    collect give every id once; `chunkd queues` lists the queues of all three masters (SCAN on each)."""
    cl = cluster()
    queues = cl.queues_on_masters(ctx.queue)
    n = 200
    for master, q in queues.items():
        url = cl.url(cl.seed_for(q))
        _enqueue(ctx, url, q, range(n))
        check(_cluster_key_count(cl, q, "pending") == n // 10, f"queue {q}: its chunks are not on master {master}")
        ctx.run("worker", "--queue", q, "--handler", "echo", "--exit-when-empty", timeout=60, url=url)
        out = ctx.path(f"{q}.out.jsonl")
        ctx.run("collect", "--queue", q, "--out", out, "--until-done", timeout=60, url=url)
        assert_exactly_once(read_jsonl(out), range(n), f"queue {q}")
    # `queues` through one seed: every master's queues.
    seed = cl.masters()[0]
    proc = ctx.run("queues", "--json", url=cl.url(seed))
    rows = {o["queue"]: o for o in (json.loads(line) for line in proc.stdout().splitlines())}
    for q in queues.values():
        check(q in rows and rows[q]["done"] == n, f"queues --json lacks {q} or its counts: {sorted(rows)}")


def test_cluster_queue_commands_through_another_seed(ctx):
    """status, pause/resume, requeue, dead, recover, purge, delete and run, each through a seed that does not
    serve the queue."""
    cl = cluster()
    q = next(iter(cl.queues_on_masters(ctx.queue).values()))
    url = cl.url(cl.seed_for(q))
    _enqueue(ctx, url, q, range(20), chunk_size=5, sleep_ms=1000)
    st = json.loads(ctx.run("status", "--queue", q, "--json", url=url).stdout())
    check(st["pending"] == 4 and st["enqueued"] == 20, f"status --json: {st}")
    ctx.run("pause", "--queue", q, url=url)
    check(json.loads(ctx.run("status", "--queue", q, "--json", url=url).stdout())["paused"] is True, "not paused")
    ctx.run("resume", "--queue", q, url=url)
    # Every item times out: failed, in the dead list; dead lists them, requeue gives them back, they succeed.
    ctx.run("worker", "--queue", q, "--handler", "sleep", "--item-timeout-ms", 50, "--exit-when-empty", timeout=60,
            url=url)
    dead = ctx.run("dead", "--queue", q, "--json", url=url).stdout().splitlines()
    check(len(dead) >= 1, "chunkd dead listed nothing")
    ctx.run("requeue", "--queue", q, url=url)
    ctx.run("worker", "--queue", q, "--handler", "sleep", "--exit-when-empty", timeout=60, url=url)
    st = json.loads(ctx.run("status", "--queue", q, "--json", url=url).stdout())
    check(st["done"] == 20 and st["failed_left"] == 0, f"after requeue: {st}")
    ctx.run("recover", "--queue", q, url=url)
    _enqueue(ctx, url, q, range(100, 110), chunk_size=5, name="more.jsonl")
    ctx.run("purge", "--queue", q, "--yes", url=url)
    check(_cluster_key_count(cl, q, "pending") == 0, "purge left pending chunks")
    ctx.run("delete", "--queue", q, "--yes", url=url)
    left = cl.node(cl.master_of(q)).call("SCAN", "0", "MATCH", f"chunkd:{{{q}}}:*", "COUNT", "100000")[1]
    check(left == [], f"delete left keys on the queue's master: {left}")
    ctx.run("status", "--queue", q, expect_rc=5, url=url)
    # run, with a named queue on another master, through a seed that is not its master.
    q2 = [x for x in cl.queues_on_masters(ctx.queue + "-run").values()][1]
    path = ctx.write_jsonl("run.jsonl", [{"id": i} for i in range(50)])
    out = ctx.path("run.out.jsonl")
    ctx.run("run", "--redis", cl.url(cl.seed_for(q2)), "--queue", q2, "--handler", "echo", "--out", out, path,
            timeout=60, redis=None)
    assert_exactly_once(read_jsonl(out), range(50), "run")


def test_cluster_acl_recipe_users_without_the_cluster_slots_right(ctx):
    """The users of deploy/redis/chunkd.acl as they are (no +cluster|slots), on every node: each connection finds
    its queue's master through a MOVED reply instead of CLUSTER SLOTS, so the worker's first pipeline (its
    registration) already goes to the right node. enqueue, worker, collect and status, each as its role's user,
    through a seed that is not the queue's master: every id once."""
    from test_security_acl import _password, _render, _user
    cl = cluster()
    q = next(iter(cl.queues_on_masters(ctx.queue).values()))
    for line in _render(q).splitlines():
        if line.startswith("user "):
            for node in cl.live():
                check(node.call("ACL", "SETUSER", *line.split()[1:]) == "OK", f"ACL SETUSER {line[:60]}")
    seed = cl.seed_for(q)

    def url(role):
        return f"redis-cluster://{_user(q, role)}:{_password(role)}@127.0.0.1:{seed}"

    _enqueue(ctx, url("enqueuer"), q, range(50))
    ctx.run("worker", "--queue", q, "--handler", "echo", "--exit-when-empty", timeout=60, url=url("worker"))
    out = ctx.path("out.jsonl")
    ctx.run("collect", "--queue", q, "--out", out, "--until-done", timeout=60, url=url("collector"))
    assert_exactly_once(read_jsonl(out), range(50), "as the recipe's users")
    st = json.loads(ctx.run("status", "--queue", q, "--json", url=url("operator")).stdout())
    check(st["done"] == 50, f"status as the operator: {st}")


def _asking_calls(node):
    """How many ASKING commands the node has served (INFO commandstats)."""
    info = node.call("INFO", "commandstats")
    m = re.search(r"cmdstat_asking:calls=(\d+)", info if isinstance(info, str) else info.decode())
    return int(m.group(1)) if m else 0


def test_cluster_ask_during_a_slot_migration(ctx):
    """A slot being migrated (CLUSTER SETSLOT MIGRATING/IMPORTING) whose keys already moved: the source node answers
    ASK, chunkd sends ASKING and the command to the target. An enqueue straight at the source mid-migration reopens
    the sealed queue there (ASK), then its enqueue script, which names the sealed key it just deleted, gets TRYAGAIN
    at the target (a multi-key command with a key missing while the slot imports): chunkd sends it again after a
    pause until the migration is finished (SETSLOT NODE), and its chunks are on the target. A worker and a collector
    then give every id of both enqueues once."""
    cl = cluster()
    q = next(iter(cl.queues_on_masters(ctx.queue).values()))
    url = cl.url(cl.seed_for(q))
    _enqueue(ctx, url, q, range(10))
    slot = slot_of_queue(q)
    source = cl.node(cl.master_of(q))
    target = cl.node(cl.seed_for(q))
    source_id, target_id = source.call("CLUSTER", "MYID"), target.call("CLUSTER", "MYID")
    check(target.call("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id) == "OK", "IMPORTING")
    check(source.call("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id) == "OK", "MIGRATING")
    enq = None
    try:
        keys = source.call("CLUSTER", "GETKEYSINSLOT", slot, 1000)
        check(source.call("MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS", *keys) == "OK", "MIGRATE")
        check(source.call("CLUSTER", "COUNTKEYSINSLOT", slot) == 0, "keys left on the source")
        # Straight at the source: ASK, then ASKING and the scripts at the target; TRYAGAIN until the slot is moved.
        asked = _asking_calls(target)
        path = ctx.write_jsonl("during.jsonl", [{"id": i, "sleep_ms": 0} for i in range(10, 30)])
        enq = ctx.spawn("enqueue", "--queue", q, "--chunk-size", 10, "--redis-timeout-ms", 20000, path,
                        url=cl.url(source.port))
        wait_until(lambda: _asking_calls(target) >= asked + 2 or not enq.alive(), 30,
                   lambda: f"the enqueue following ASK to the target ({enq.describe()})")
        check(enq.alive(), f"the enqueue ended while the slot was still migrating: {enq.describe()}")
    finally:
        for node in cl.live():
            node.try_call("CLUSTER", "SETSLOT", slot, "NODE", target_id)
    enq.wait(30, expect_rc=0)
    check(target.call("LLEN", f"chunkd:{{{q}}}:pending") == 3,
          "the chunks enqueued mid-migration are not on its target")
    cl.wait_ok()
    ctx.run("worker", "--queue", q, "--handler", "echo", "--exit-when-empty", timeout=60, url=url)
    out = ctx.path("out.jsonl")
    ctx.run("collect", "--queue", q, "--out", out, "--until-done", timeout=60, url=url)
    assert_exactly_once(read_jsonl(out), range(30), "after the migration")


def test_cluster_slot_resharded_mid_run_moves_the_worker(ctx):
    """The queue's slot moves to another master while a worker runs (`redis-cli --cluster reshard`): the worker's
    connections get MOVED and follow; every id once."""
    cl = cluster()
    q = next(iter(cl.queues_on_masters(ctx.queue).values()))
    url = cl.url(cl.seed_for(q))
    n = 400
    _enqueue(ctx, url, q, range(n), chunk_size=4, sleep_ms=50)
    worker = ctx.spawn("worker", "--queue", q, "--handler", "sleep", "--concurrency", 8, "--exit-when-empty",
                       url=url)
    collector = ctx.spawn("collect", "--queue", q, "--out", ctx.path("out.jsonl"), "--until-done", url=url)
    master = cl.node(cl.master_of(q))
    wait_until(lambda: int(master.call("HGET", f"chunkd:{{{q}}}:stats", "done") or 0) > 40, 60,
               lambda: f"some items done ({worker.describe()})")
    slot = slot_of_queue(q)
    source, target = master, cl.node(cl.seed_for(q))
    source_id, target_id = source.call("CLUSTER", "MYID"), target.call("CLUSTER", "MYID")
    # One slot, by hand as redis-cli --cluster reshard does it: IMPORTING, MIGRATING, MIGRATE the keys, NODE.
    target.call("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
    source.call("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
    while True:
        keys = source.call("CLUSTER", "GETKEYSINSLOT", slot, 100)
        if not keys:
            break
        source.call("MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS", *keys)
    for node in (target, source, *cl.live()):
        node.try_call("CLUSTER", "SETSLOT", slot, "NODE", target_id)
    check(worker.alive(), f"the worker ended before the slot moved: {worker.describe()}")
    cl.wait_ok()
    check(cl.master_of(q) == target.port, "the slot did not move")
    worker.wait(120, expect_rc=0)
    collector.wait(120, expect_rc=0)
    assert_exactly_once(read_jsonl(ctx.path("out.jsonl")), range(n), "across the reshard")


def test_cluster_master_killed_mid_run_replica_takes_over(ctx):
    """kill -9 of the queue's master while a worker and a collector run: its replica is promoted (node timeout
    1 s), chunkd's connections go back to the seeds, find the new master, and every id ends in the output
    (at least once: asynchronous replication may lose the last acknowledged writes, which are then redone)."""
    cl = cluster()
    q = next(iter(cl.queues_on_masters(ctx.queue).values()))
    old_master = cl.master_of(q)
    # Seeds: every node but the queue's master... and the master itself first, which is about to die.
    others = [n.port for n in cl.live() if n.port != old_master]
    url = cl.url(old_master, *others)
    n = 400
    _enqueue(ctx, url, q, range(n), chunk_size=4, sleep_ms=20)
    # The enqueued chunks are on the replica before the kill (enqueue itself does not WAIT).
    wait_until(lambda: cl.replicas_caught_up(old_master), 30, "the replica caught up with the enqueue")
    worker = ctx.spawn("worker", "--queue", q, "--handler", "sleep", "--concurrency", 8, "--exit-when-empty",
                       url=url)
    out = ctx.path("out.jsonl")
    collector = ctx.spawn("collect", "--queue", q, "--out", out, "--until-done", url=url)
    master = cl.node(old_master)
    wait_until(lambda: int(master.call("HGET", f"chunkd:{{{q}}}:stats", "done") or 0) > 40, 60,
               lambda: f"some items done ({worker.describe()})")
    master.kill()
    started = time.monotonic()
    wait_until(lambda: cl.master_of(q) != old_master, 60, "a replica took over the queue's slot")
    cl.wait_ok(timeout=60)
    worker.wait(180, expect_rc=0)
    collector.wait(180, expect_rc=0)
    rows = read_jsonl(out)
    ids = {r["id"] for r in rows}
    missing = set(range(n)) - ids
    check(not missing, f"{len(missing)} ids missing after the failover (e.g. {sorted(missing)[:5]})")
    check(all(r.get("ok") for r in rows), "an item failed")
    check(time.monotonic() - started < 180, "the failover took too long")
