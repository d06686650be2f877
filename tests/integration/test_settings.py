"""Settings (flags vs CHUNKD_* env), --help, and Redis addresses / AUTH."""

import json
import re

from harness import check, free_port, one_line

# A routine log line (timestamp, then level info/debug): not part of an error message.
INFO_LOG = re.compile(r"^\S*\s*(info|debug)\b", re.IGNORECASE)
ITEMS = "".join(json.dumps({"id": i}) + "\n" for i in range(20))


def _normalized(text):
    return text.lower().replace("_", "-")


def test_invalid_values_exit_2(ctx):
    cases = [  # (argv, env, setting the message must name)
        (["worker", "--concurrency", "0"], {}, "concurrency"),
        (["worker", "--concurrency", "abc"], {}, "concurrency"),
        (["worker", "--concurrency", "99999999999999999999"], {}, "concurrency"),
        (["worker"], {"CHUNKD_CONCURRENCY": "abc"}, "concurrency"),
        (["worker", "--threads", "257"], {}, "threads"),
        (["worker", "--handler", "nope"], {}, "handler"),
        (["worker", "--sleep-ms", "-5"], {}, "sleep-ms"),
        (["worker", "--drain-timeout-ms", "soon"], {}, "drain-timeout-ms"),
        (["enqueue", "--chunk-size", "0"], {}, "chunk-size"),
        (["enqueue", "--chunk-size", "10x"], {}, "chunk-size"),
        (["enqueue"], {"CHUNKD_CHUNK_SIZE": "-3"}, "chunk-size"),
        (["enqueue", "--max-item-bytes", "lots"], {}, "max-item-bytes"),
        (["collect", "--rotate-lines", "-1"], {}, "rotate-lines"),
    ]
    for argv, env, setting in cases:
        label = " ".join(f"{k}={v}" for k, v in env.items()) + " chunkd " + " ".join(argv)
        proc = ctx.spawn(argv[0], "--queue", ctx.queue, *argv[1:], env=env, stdin=ITEMS, name=label.strip())
        proc.wait(15)
        check(proc.returncode == 2, f"{label.strip()}: expected exit 2, got {proc.describe()}")
        check(setting in _normalized(proc.stderr()),
              f"{label.strip()}: stderr does not name {setting}: {one_line(proc.stderr(), 200)!r}")
    check(ctx.llen("pending") == 0, "an invalid setting still enqueued items")

    usage_errors = [["worker", "--no-such-flag"], ["frobnicate"], [],
                    ["collect", "--until-done", "--follow"]]
    for argv in usage_errors:
        proc = ctx.spawn(argv[0] if argv else None, *argv[1:], name="chunkd " + " ".join(argv))
        proc.wait(15)
        check(proc.returncode == 2, f"chunkd {' '.join(argv)}: expected exit 2, got {proc.describe()}")


def test_invalid_redis_url_exit_2(ctx):
    for via, url in [("flag", "http://127.0.0.1:6379"), ("env", "redis://u:s3cr3t-pw@127.0.0.1:notaport/0"),
                     ("flag", "redis://u:s3cr3t-pw@127.0.0.1:6379/notadb")]:
        proc = ctx.spawn("status", "--queue", ctx.queue, redis=via, url=url, name=f"status ({via}) {url}")
        proc.wait(15)
        check(proc.returncode == 2, f"{proc.name}: expected exit 2, got {proc.describe()}")
        err = proc.stderr()
        check("redis" in err.lower(), f"{proc.name}: stderr does not name the setting: {one_line(err, 200)!r}")
        check("s3cr3t-pw" not in err + proc.stdout(), f"{proc.name}: the password appears in the output")


def test_flags_win_over_env(ctx):
    env_queue = ctx.queue + "-env"
    # Env alone applies...
    ctx.run("enqueue", "-", stdin=ITEMS, env={"CHUNKD_QUEUE": env_queue, "CHUNKD_CHUNK_SIZE": "7"})
    check(ctx.llen("pending", env_queue) == 3, f"CHUNKD_QUEUE/CHUNKD_CHUNK_SIZE=7: "
          f"{ctx.llen('pending', env_queue)} chunks in the env queue, expected 3")
    # ...and flags win over it.
    ctx.run("enqueue", "--queue", ctx.queue, "--chunk-size", 10, "-", stdin=ITEMS,
            env={"CHUNKD_QUEUE": env_queue, "CHUNKD_CHUNK_SIZE": "7"})
    check(ctx.llen("pending") == 2, f"--chunk-size 10 over CHUNKD_CHUNK_SIZE=7: {ctx.llen('pending')} chunks, expected 2")
    check(ctx.llen("pending", env_queue) == 3, "--queue did not win over CHUNKD_QUEUE")
    # --redis wins over REDIS_URL.
    dead_url = f"redis://127.0.0.1:{free_port()}/0"
    ctx.run("enqueue", "--queue", ctx.queue, "--redis", ctx.server.url(), "-", stdin=ITEMS, redis="env", url=dead_url)
    check(ctx.stat("enqueued") == 40, f"--redis over REDIS_URL: stats enqueued={ctx.stat('enqueued')}, expected 40")


def test_unknown_env_warns(ctx):
    proc = ctx.run("enqueue", "--queue", ctx.queue, "-", stdin=ITEMS, env={"CHUNKD_NO_SUCH_SETTING": "1"})
    check("CHUNKD_NO_SUCH_SETTING" in proc.stderr(),
          f"no warning naming CHUNKD_NO_SUCH_SETTING: {one_line(proc.stderr(), 200)!r}")
    check(ctx.stat("enqueued") == 20, f"stats enqueued={ctx.stat('enqueued')}, expected 20")


def test_help(ctx):
    expected = {
        "enqueue": ["--queue", "--chunk-size", "--max-item-bytes", "--rejects", "--redis"],
        "worker": ["--queue", "--handler", "--sleep-ms", "--concurrency", "--threads", "--exit-when-empty",
                   "--drain-timeout-ms", "--redis"],
        "collect": ["--queue", "--out", "--rotate-lines", "--until-done", "--follow", "--redis"],
        "status": ["--queue", "--json", "--redis"],
        "run": ["--out", "--concurrency", "--chunk-size", "--handler"],
    }
    for cmd, flags in expected.items():
        proc = ctx.run(cmd, "--help", redis=None, timeout=10)
        text = proc.stdout() + proc.stderr()
        missing = [f for f in flags if f not in text]
        check(not missing, f"chunkd {cmd} --help does not list {missing}")
    proc = ctx.run(None, "--help", redis=None, timeout=10)
    text = proc.stdout() + proc.stderr()
    missing = [c for c in expected if c not in text]
    check(not missing, f"chunkd --help does not list commands {missing}")


def _check_exit_1_masked(proc, password, address):
    label = " ".join(proc.argv[1:]).replace(password, "<pw>")
    proc.wait(20)
    out, err = proc.stdout(), proc.stderr()
    check(proc.returncode == 1, f"{label}: expected exit 1, got {proc.describe().replace(password, '<pw>')}")
    check(password not in out + err, f"{label}: the password appears in the output: {one_line(err, 200)!r}")
    check("***" in err, f"{label}: error does not show the masked password ***: {one_line(err, 200)!r}")
    check(address in err, f"{label}: error does not name {address}: {one_line(err, 200)!r}")
    lines = [line for line in err.splitlines()
             if line.strip() and not INFO_LOG.match(line) and "; waiting for Redis" not in line]
    check(len(lines) == 1, f"{label}: expected a one-line error, got {len(lines)} lines: {one_line(err, 300)!r}")


def test_redis_unreachable_exit_1(ctx):
    port = free_port()
    url = f"redis://alice:s3cr3t-pw@127.0.0.1:{port}/0"
    for i, cmd in enumerate(["status", "worker", "enqueue", "collect"]):
        # A worker waits for Redis (forever by default) before it gives up; the other commands fail at once.
        args = ["--queue", ctx.queue] + (["-"] if cmd == "enqueue" else []) + \
            (["--redis-wait-ms", 500] if cmd == "worker" else [])
        proc = ctx.spawn(cmd, *args, redis="flag" if i % 2 else "env", url=url, stdin=ITEMS)
        _check_exit_1_masked(proc, "s3cr3t-pw", f"127.0.0.1:{port}")


def test_auth_acl_user(ctx):
    user = "chunkd-it-user"
    ctx.r.execute("ACL", "SETUSER", user, "reset", "on", ">right-pw", "~*", "&*", "+@all")
    try:
        good = ctx.server.url(user=user, password="right-pw")
        ctx.run("enqueue", "--queue", ctx.queue, "-", stdin=ITEMS, redis="flag", url=good)
        check(ctx.stat("enqueued") == 20, f"enqueue as ACL user: stats enqueued={ctx.stat('enqueued')}")
        status = ctx.status_json(redis="env", url=good)
        check(status.get("enqueued") == 20, f"status as ACL user: {status}")
        bad = ctx.server.url(user=user, password="wrong-pw")
        for via in ("env", "flag"):
            proc = ctx.spawn("status", "--queue", ctx.queue, redis=via, url=bad)
            _check_exit_1_masked(proc, "wrong-pw", f"127.0.0.1:{ctx.server.port}")
    finally:
        ctx.r.execute("ACL", "DELUSER", user)


def test_auth_requirepass(ctx):
    server = ctx.start_redis(password="req-pw")
    proc = ctx.spawn("status", "--queue", ctx.queue, redis="env", url=server.url())
    proc.wait(20)
    check(proc.returncode == 1, f"no password against --requirepass server: expected exit 1, got {proc.describe()}")
    # Authenticated, it answers: the queue does not exist on this fresh server (exit 5, issue 16).
    proc = ctx.run("status", "--queue", ctx.queue, redis="flag", url=server.url(user="default", password="req-pw"),
                   expect_rc=5)
    check("does not exist" in proc.stderr(), f"status with the password: {proc.describe()}")
    proc = ctx.spawn("worker", "--queue", ctx.queue, redis="env", url=server.url(user="default", password="nope-pw"))
    _check_exit_1_masked(proc, "nope-pw", f"127.0.0.1:{server.port}")


def test_redis_db_and_unix_socket(ctx):
    ctx.run("enqueue", "--queue", ctx.queue, "-", stdin=ITEMS, redis="env", url=ctx.server.url(db=3))
    with ctx.server.client(db=3) as db3:
        check(db3.execute("LLEN", ctx.key("pending")) == 1, "redis://.../3 did not enqueue into db 3")
    check(ctx.r.execute("EXISTS", ctx.key("pending")) == 0, "redis://.../3 wrote into db 0")

    unix = ctx.server.unix_url(db=5)
    ctx.run("enqueue", "--queue", ctx.queue, "-", stdin=ITEMS, redis="flag", url=unix)
    with ctx.server.client(db=5) as db5:
        check(db5.execute("LLEN", ctx.key("pending")) == 1, f"{unix} did not enqueue into db 5")
    ctx.run("worker", "--queue", ctx.queue, "--handler", "echo", "--exit-when-empty", redis="env", url=unix)
    status = ctx.status_json(redis="env", url=unix)
    check(status.get("enqueued") == 20 and status.get("done") == 20 and status.get("pending") == 0,
          f"status over {unix}: {status}")


def test_status_empty_queue(ctx):
    # A queue with no key at all is most likely a typo: status says so and exits 5 (issue 16).
    proc = ctx.run("status", "--queue", ctx.queue + "-never-used", "--json", expect_rc=5)
    check("does not exist" in proc.stderr() and proc.stdout() == "", f"status of an unused queue: {proc.describe()}")
    ctx.r.execute("HSET", ctx.key("stats"), "enqueued", "0")
    ctx.run("status", "--queue", ctx.queue, redis="flag")
