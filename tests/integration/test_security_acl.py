"""Least privilege on Redis (issue 15, part 5): the ACL recipe of deploy/redis/chunkd.acl, rendered for a queue,
loaded into a real redis-server with --aclfile. A worker, an enqueuer, a collector and the operator commands each
run as their own Redis user and the pipeline works; each user is refused what its role does not need; a worker
whose user lacks a right it needs stops with a clear error instead of retrying forever."""

import json
import os
import re
from pathlib import Path

from harness import assert_exactly_once, check, one_line, read_jsonl, stream_lines, wait_until
from resp import Redis, RedisError

ACL_TEMPLATE = Path(__file__).resolve().parents[2] / "deploy" / "redis" / "chunkd.acl"
ROLES = ("worker", "enqueuer", "collector", "operator")
ADMIN_PASSWORD = "admin-" + os.urandom(6).hex()


def _password(role):
    return f"{role}-pw-" + ADMIN_PASSWORD[-6:]


def _render(queue):
    """deploy/redis/chunkd.acl for queue, with a password per role (as deploy/redis/README.md says to)."""
    text = ACL_TEMPLATE.read_text().replace("@QUEUE@", queue)
    for role in ROLES:
        text = text.replace(f"@{role.upper()}_PASSWORD@", _password(role))
    left = re.findall(r"@[A-Z_]+@", text)
    check(not left, f"placeholders left in the rendered ACL file: {left}")
    return text


def _acl_server(ctx, *queues):
    """A redis-server whose users are the recipe's, for each queue, plus an admin default user (the tests' own)."""
    aclfile = ctx.path("users.acl")
    aclfile.write_text(f"user default on >{ADMIN_PASSWORD} ~* &* +@all\n" + "".join(_render(q) for q in queues))
    return ctx.start_redis(password=ADMIN_PASSWORD, extra_args=["--aclfile", str(aclfile)])


def _user(queue, role):
    return f"chunkd-{queue}-{role}"


def _url(server, queue, role):
    return server.url(user=_user(queue, role), password=_password(role))


def _client(server, queue, role):
    c = Redis(port=server.port)
    c.execute("AUTH", _user(queue, role), _password(role))
    return c


def _refused(client, *cmd):
    """The error reply of a command the user must not run (fails the test if it ran)."""
    try:
        reply = client.execute(*cmd)
    except RedisError as exc:
        return str(exc)
    raise AssertionError(f"{' '.join(map(str, cmd))[:120]} was allowed (reply {reply!r:.80})")


def _check_refused(client, role, *cmd):
    try:
        err = _refused(client, *cmd)
    except AssertionError as exc:
        check(False, f"{role}: {exc}")
    check(err.startswith("NOPERM") or "user executing the script can't" in err,
          f"{role}: {' '.join(map(str, cmd))[:80]} refused with {err!r}, not for lack of rights")


def _acl_log(server):
    with server.client() as c:
        return c.execute("ACL", "LOG")


def _enqueued(ctx, n, sleep_ms):
    """A redis-server with the recipe's users for ctx.queue, and n items enqueued as the enqueuer, 10 per chunk."""
    server = _acl_server(ctx, ctx.queue)
    items = ctx.write_jsonl("items.jsonl", [{"id": i, "sleep_ms": sleep_ms} for i in range(n)])
    ctx.run("enqueue", "--queue", ctx.queue, "--chunk-size", 10, items, url=_url(server, ctx.queue, "enqueuer"))
    return server


def test_acl_recipe_runs_the_pipeline(ctx):
    """enqueue, two workers (with --rate-limit and --max-inflight-global), collect --until-done, status, recover and
    requeue, each as its own user of the recipe: every item once, and Redis refused none of their commands."""
    q, n = ctx.queue, 400
    server = _enqueued(ctx, n, 2)
    with server.client() as admin:
        # A worker that died holding a chunk (registered, no lease) and a chunk with an item that is not JSON.
        chunk = admin.execute("RPOP", ctx.key("pending"))
        admin.execute("LPUSH", ctx.key("processing:ghost"), chunk)
        admin.execute("SADD", ctx.key("workers"), "ghost")
        bad = {"v": 1, "chunk": "bad", "items": [{"id": "bad-1", "item": "not json"}]}
        admin.execute("LPUSH", ctx.key("pending"), json.dumps(bad))
        admin.execute("HINCRBY", ctx.key("stats"), "enqueued", 1)

        recover = ctx.run("recover", "--queue", q, url=_url(server, q, "operator"))
        check("recovered 1 chunks from 1 workers" in recover.stdout(), f"recover as operator: {recover.describe()}")

        workers = [ctx.spawn("worker", "--queue", q, "--handler", "sleep", "--threads", 1, "--exit-when-empty",
                             "--rate-limit", "5000/s", "--max-inflight-global", 50,
                             url=_url(server, q, "worker"), name=f"worker {i}") for i in range(2)]
        out = ctx.path("results.jsonl")
        ctx.run("collect", "--queue", q, "--until-done", "--out", out, timeout=90, url=_url(server, q, "collector"),
                expect_rc=4)  # one item is not JSON: it fails
        for w in workers:
            w.wait(60, expect_rc=0)
        results = read_jsonl(out)
        check(len(results) == n + 1, f"{len(results)} result lines for {n + 1} items")
        bad_rows = [r for r in results if r["id"] == "bad-1"]
        check(len(bad_rows) == 1 and bad_rows[0]["ok"] is False, f"the non-JSON item's result: {bad_rows}")
        assert_exactly_once([r for r in results if r["id"] != "bad-1"], range(n))

        status = json.loads(ctx.run("status", "--queue", q, "--json", url=_url(server, q, "operator")).stdout())
        check(status["done"] == n and status["failed"] == 1 and status["collected"] == n + 1,
              f"status as operator: {status}")
        requeue = ctx.run("requeue", "--queue", q, url=_url(server, q, "operator"))
        check("requeued 1 items" in requeue.stdout(), f"requeue as operator: {requeue.describe()}")
        check(admin.execute("LLEN", ctx.key("pending")) == 1 and admin.execute("LLEN", ctx.key("dead")) == 0,
              "requeue did not move the dead item back to pending")
        check(admin.execute("EXISTS", ctx.key("rate"), ctx.key("inflight")) >= 1,
              "the rate limiter's keys were never written")
        denied = _acl_log(server)
        check(not denied, lambda: f"Redis refused commands of the recipe's users: {one_line(repr(denied), 600)}")


def test_acl_users_are_restricted(ctx):
    """Each user of the recipe is refused what its role does not need: server administration, other queues' keys,
    and the other roles' commands (the enqueuer cannot read results, the collector cannot forge them)."""
    other = ctx.queue + "-other"
    server = _acl_server(ctx, ctx.queue, other)
    q, k = ctx.queue, ctx.key
    read_results = ("XREADGROUP", "GROUP", "g", "c", "STREAMS", k("results"), ">")
    with server.client() as admin:
        admin.execute("LPUSH", k("pending", other), "another queue's chunk")
        admin.execute("XADD", k("results"), "*", "r", "{}")
        script = "return redis.call('LLEN', 'chunkd:{" + other + "}:pending')"
        for role in ROLES:
            with _client(server, q, role) as c:
                for cmd in (("FLUSHALL",), ("FLUSHDB",), ("CONFIG", "GET", "*"),
                            ("KEYS", "*"), ("SCAN", 0), ("ACL", "LIST"), ("CLIENT", "LIST"), ("MONITOR",),
                            ("SCRIPT", "FLUSH"), ("SHUTDOWN", "NOSAVE"), ("EVALSHA", "0" * 40, 0),
                            ("LLEN", k("pending", other)), ("GET", "unrelated"),
                            ("EVAL", script, 1, k("stats"))):
                    _check_refused(c, role, *cmd)
        with _client(server, q, "enqueuer") as c:
            for cmd in (read_results, ("XRANGE", k("results"), "-", "+"), ("RPOP", k("pending")),
                        ("LRANGE", k("pending"), 0, -1), ("LLEN", k("dead")), ("XADD", k("results"), "*", "r", "{}")):
                _check_refused(c, "enqueuer", *cmd)
        with _client(server, q, "collector") as c:
            for cmd in (("XADD", k("results"), "*", "r", "{}"), ("LPUSH", k("pending"), "x"), ("RPOP", k("pending")),
                        ("LRANGE", k("dead"), 0, -1), ("DEL", k("pending"))):
                _check_refused(c, "collector", *cmd)
        with _client(server, q, "worker") as c:
            for cmd in (read_results, ("XRANGE", k("results"), "-", "+"), ("XDEL", k("results"), "0-1"),
                        ("GET", k("collector:collector"))):
                _check_refused(c, "worker", *cmd)
        with _client(server, q, "operator") as c:
            for cmd in (("XADD", k("results"), "*", "r", "{}"), read_results):
                _check_refused(c, "operator", *cmd)
        check(admin.execute("LLEN", k("pending", other)) == 1, "another queue's pending list changed")
        check(admin.execute("XLEN", k("results")) == 1, "a refused command changed the results stream")


def test_acl_missing_right_stops_the_worker_clearly(ctx):
    """A worker whose user lacks a right it needs exits 1 within seconds, naming Redis's refusal and the recipe,
    instead of retrying forever: EVAL, RPOP or LPUSH (called inside fetch.lua: scripts run with the caller's
    rights), TIME (inside ratelimit.lua, with --rate-limit), XADD (inside commit.lua: its items ran, their commits
    are refused); one without SADD cannot register and says why (NOPERM, not an empty reason). Without EVAL, RPOP,
    LPUSH or SADD nothing is taken from pending. No chunk is lost to a script refused half way (Redis keeps what a
    script wrote before a refused call: fetch.lua's RPOP before its LPUSH, commit.lua's LREM before its XADD):
    with the rights back, every item runs once."""
    q, n = ctx.queue, 50
    server = _enqueued(ctx, n, 1)
    script_refusal = "user executing the script can't"
    stopping = "stopping: Redis refuses this worker's user"
    cases = (("eval", (), "'eval' command", stopping, True), ("rpop", (), "may not run RPOP", stopping, True),
             ("lpush", (), "may not run LPUSH", stopping, True),
             ("sadd", (), "'sadd' command", "cannot register worker", True),
             ("time", ("--rate-limit", "100/s"), script_refusal, stopping, False),
             ("xadd", (), "may not run XADD", stopping, False))
    with server.client() as admin:
        for missing, args, said, wanted, untouched in cases:
            admin.execute("ACL", "SETUSER", _user(q, "worker"), f"-{missing}")
            worker = ctx.spawn("worker", "--queue", q, "--handler", "sleep", "--threads", 1, "--exit-when-empty",
                               "--lease-ms", 1000, "--drain-timeout-ms", 1000, *args,
                               url=_url(server, q, "worker"), name=f"worker without {missing}")
            # The drain after the refusal is bounded by --drain-timeout-ms plus 5 s for the last commits.
            wait_until(lambda: not worker.alive(), 30,
                       lambda: f"the worker without {missing} to stop ({worker.describe()})")
            err = worker.stderr()
            check(worker.returncode == 1, f"worker without {missing}: exit {worker.returncode}: {worker.describe()}")
            for text in (said, wanted, "deploy/redis/chunkd.acl"):
                check(text in err, f"worker without {missing} does not say {text!r}: {one_line(err)}")
            admin.execute("ACL", "SETUSER", _user(q, "worker"), f"+{missing}")
            if untouched:
                check(admin.execute("LLEN", ctx.key("pending")) == n // 10,
                      f"worker without {missing}: {admin.execute('LLEN', ctx.key('pending'))} chunks in pending")
        # With the recipe's rights back every item runs once (chunks a stopped worker held are reaped back first).
        ctx.run("worker", "--queue", q, "--handler", "sleep", "--threads", 1, "--exit-when-empty", "--lease-ms", 1000,
                timeout=60, url=_url(server, q, "worker"))
        rows = [json.loads(line) for line in stream_lines(admin, ctx.key("results"))]
        assert_exactly_once(rows, range(n))
