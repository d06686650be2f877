"""Fault injection (issue #5): workers SIGKILLed at random under load, a worker paused past its lease, Redis
killed and restarted from its AOF mid-run, SIGTERM under load with other workers running, poison chunks among
good ones. Each test ends with every id exactly once in `chunkd collect`'s output.

Sizes shrink under a sanitizer build (run.py sees CHUNKD_IT_SANITIZER=1, set by `make check-asan`), where
chunkd is several times slower; the faults and the checks stay the same.
"""

import collections
import json
import os
import random
import re
import signal
import statistics
import time

from harness import TestFailure, assert_exactly_once, check, id_key, one_line, read_jsonl, scaled, wait_until
from resp import RedisError

SANITIZED = os.environ.get("CHUNKD_IT_SANITIZER") == "1"


def _report(name, text):
    """A measurement for the log of the run (not an assertion): one indented line after the test's PASS/FAIL."""
    print(f"  {name}: {text}", flush=True)


def _ms_summary(values):
    if not values:
        return "none"
    values = sorted(values)
    return (f"min {values[0] * 1000:.0f} ms, median {statistics.median(values) * 1000:.0f} ms, "
            f"max {values[-1] * 1000:.0f} ms (n={len(values)})")


def _pid_state(pid):
    """The state letter of /proc/PID/stat (R, S, T for stopped, ...), or None once the process is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


# "seq": the results stream entry id the collector adds (issue 16).
_RESULT_LINE = re.compile(r'^\{"id":(-?\d+),"ok":(true|false),.*,"attempts":(\d+),"ms":\d+,"seq":"\d+-\d+-\d+"\}$', re.M)


def _read_int_id_results(path):
    """(id, ok, attempts) of every line of a results file whose ids are integers, checking each line has the
    result line's shape. A regular expression, not json.loads: it is ten times faster on 200,000 lines
    (test_collect.py checks the lines are JSON)."""
    text = path.read_text(encoding="utf-8")
    rows = [(int(i), ok == "true", int(a)) for i, ok, a in _RESULT_LINE.findall(text)]
    lines = text.count("\n")
    check(text.endswith("\n") and len(rows) == lines,
          lambda: f"{path}: {lines - len(rows)} of {lines} lines are not result lines "
                  f"(e.g. {next((ln for ln in text.splitlines() if not _RESULT_LINE.match(ln)), '')[:160]!r})")
    return rows


def _check_int_ids_once(ids, n, label):
    """ids is 0 .. n-1, each exactly once (a fast assert_exactly_once for many integer ids)."""
    counts = collections.Counter(ids)
    missing = [i for i in range(n) if i not in counts]
    dups = sorted(i for i, c in counts.items() if c > 1)
    extra = sorted(i for i in counts if not 0 <= i < n)
    check(not (missing or dups or extra),
          lambda: f"{label}: {len(missing)} ids missing (e.g. {missing[:5]}), {len(dups)} duplicated "
                  f"(e.g. {dups[:5]}), {len(extra)} unexpected (e.g. {extra[:5]}) [{len(ids)} lines, {n} ids]")


# ---- 1. chaos: SIGKILL a random worker every 2 s ------------------------------------------------------------

CHAOS_ITEMS = 80_000 if SANITIZED else 200_000
CHAOS_WORKERS = 4
CHAOS_KILL_EVERY_S = 1.5 if SANITIZED else 2.0  # a sanitized run is short: at least 3 kills
CHAOS_FOR_S = 20.0
CHAOS_LEASE_MS = 2000   # shorter than the default 10 s, so a killed worker's chunks come back within ~3 s
CHAOS_DELAY_MS = 20     # the mock's answer delay per call
# Every chunk checkpoints its finished items as they are committed (the default, 1000, commits a chunk younger
# than that once, whole; here chunks live well under a second, so nothing would be checkpointed mid-chunk and a
# redelivery that ignored checkpoints would go unseen).
CHAOS_CHECKPOINT_MS = 0


def test_chaos_sigkill_random_workers(ctx):
    """4 http workers on 200,000 items; every 2 s for 20 s one of them, chosen at random, is SIGKILLed and a new
    one started in its place. A collector runs throughout. Each id is collected exactly once; the killed
    workers' chunks come back to pending within lease + reaper turn; the redone calls, counted at the mock, are
    only of items that were unfinished in a killed worker's chunks (their checkpoint read right after the kill),
    at most once per such kill."""
    q = ctx.queue
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    lines = [json.dumps({"id": i, "path": f"/{q}/{i}", "query": {"delay_ms": CHAOS_DELAY_MS, "text": 1}},
                        separators=(",", ":")) for i in range(CHAOS_ITEMS)]
    ctx.run("enqueue", "--queue", q, "--chunk-size", 100, ctx.write_jsonl("items.jsonl", lines), timeout=60)
    out = ctx.path("results.jsonl")
    collector = ctx.spawn("collect", "--queue", q, "--out", out, "--until-done", name="collector")

    generation = {}

    def start_worker(slot):
        generation[slot] = generation.get(slot, 0) + 1
        wid = f"chaos{slot}-{generation[slot]}"
        proc = ctx.spawn("worker", "--queue", q, "--worker-id", wid, "--handler", "http", "--base-url",
                         ctx.mock.url, "--concurrency", 1000, "--lease-ms", CHAOS_LEASE_MS,
                         "--checkpoint-ms", CHAOS_CHECKPOINT_MS, "--exit-when-empty", name=f"worker {wid}")
        return wid, proc

    workers = {slot: start_worker(slot) for slot in range(CHAOS_WORKERS)}
    all_workers = list(workers.values())
    kills = []   # {"wid", "at", "held": [raw chunks], "back": s after kill, "taken": s after kill,
    #              "unfinished": [ids of held items the checkpoint did not mark], "checkpointed": int}

    def poll_recoveries():
        now = time.monotonic()
        for k in kills:
            if k["back"] is None and ctx.r.execute("LLEN", ctx.key(f"processing:{k['wid']}")) == 0:
                k["back"] = now - k["at"]
            if k["back"] is not None and k["taken"] is None and \
                    all(ctx.r.execute("LPOS", ctx.key("pending"), raw, "RANK", -1) is None for raw in k["held"]):
                k["taken"] = now - k["at"]

    def where():
        return (f"seed {seed}, {len(kills)} kills, results collected={ctx.stat('collected')}, "
                f"pending={ctx.llen('pending')}, processing={ctx.processing_len()}; {collector.describe()}")

    started = time.monotonic()
    next_kill = started + CHAOS_KILL_EVERY_S
    while time.monotonic() < started + scaled(CHAOS_FOR_S) and collector.alive():
        if time.monotonic() >= next_kill:
            alive = [slot for slot, (_, p) in workers.items() if p.alive()]
            if not alive or ctx.llen("pending") == 0:
                break  # the work is done or nearly: nothing left to disturb
            slot = rng.choice(alive)
            wid, proc = workers[slot]
            proc.kill()  # SIGKILL, then reap the process
            at = time.monotonic()
            held = ctx.r.lrange_all(ctx.key(f"processing:{wid}"))
            # The dead worker commits nothing more: what its chunks' checkpoints mark now is final for this
            # delivery (a commit still in Redis's socket could add bits: the check below only gets looser).
            unfinished, checkpointed = [], 0
            for raw in held:
                chunk = json.loads(raw)
                done = ctx.done_bits(chunk["chunk"])
                checkpointed += len(done)
                unfinished += [it["id"] for i, it in enumerate(chunk["items"]) if i not in done]
            kills.append({"wid": wid, "at": at, "held": held, "back": None if held else 0.0, "taken": None,
                          "unfinished": unfinished, "checkpointed": checkpointed})
            workers[slot] = start_worker(slot)
            all_workers.append(workers[slot])
            next_kill += CHAOS_KILL_EVERY_S
        poll_recoveries()
        time.sleep(0.02)  # the polling interval of the loop above (it has its own deadline)
    chaos_s = time.monotonic() - started
    check(len(kills) >= 3, lambda: f"only {len(kills)} kills before the work ran out: the run is too short to "
                                   f"test anything ({where()})")

    wait_until(lambda: (poll_recoveries(), all(k["taken"] is not None for k in kills))[1], 30,
               lambda: f"every killed worker's chunks back in pending and taken again "
                       f"({[(k['wid'], k['back'], k['taken']) for k in kills if k['taken'] is None]}; {where()})")
    collector.wait(180, expect_rc=0)
    done_at = time.monotonic()  # the work is done: the workers exit now, and their reapers with them
    for _, proc in all_workers:
        if proc.returncode is None or proc.returncode >= 0:  # not one we killed
            proc.wait(30, expect_rc=0)
    total_s = time.monotonic() - started
    results = _read_int_id_results(out)
    _check_int_ids_once([r[0] for r in results], CHAOS_ITEMS,
                        f"collect output after {len(kills)} SIGKILLs (seed {seed})")
    failed = [r[0] for r in results if not r[1]]
    check(not failed, lambda: f"{len(failed)} items failed, e.g. ids {failed[:5]}")
    check(ctx.llen("pending") == 0 and ctx.processing_len() == 0 and ctx.llen("dead") == 0,
          lambda: f"queue not empty at the end: {where()}, dead={ctx.llen('dead')}")
    # A killed worker is deregistered by a live one's reaper once its lease has run out; one killed in the last
    # seconds may outlive every other worker (they exit when the work is done), so only those whose lease ran out
    # (plus a second for a reaper's turn) while the work was still going are checked.
    registered = set(ctx.r.execute("SMEMBERS", ctx.key("workers")))
    still = sorted(k["wid"] for k in kills
                   if k["wid"] in registered and k["at"] + CHAOS_LEASE_MS / 1000 + 1 < done_at)
    check(not still, f"killed workers still registered: {still}")
    stats = ctx.stats()
    check(stats.get("reaped_workers", 0) >= len(kills),
          f"stats reaped_workers={stats.get('reaped_workers')}, expected >= {len(kills)} kills")
    held = sum(len(k["held"]) for k in kills)
    check(stats.get("reaped_chunks", 0) == held,
          f"stats reaped_chunks={stats.get('reaped_chunks')}, expected the {held} chunks the killed workers held")

    # Recovery: lease (renewed every third of it, so it runs out 2/3 to 3/3 of it after the kill) + up to 1 s
    # until some worker's reaper turn + slack.
    back = [k["back"] for k in kills if k["held"]]
    taken = [k["taken"] for k in kills if k["held"]]
    limit = scaled(CHAOS_LEASE_MS / 1000 + 1 + 2)
    check(max(back, default=0) < limit,
          f"a killed worker's chunks came back to pending after {max(back):.1f}s (limit {limit:.1f}s)")

    # Redone work, counted at the mock: every call it received, minus the calls behind the results kept
    # (a result's "attempts" counts its calls, retries included; the mock fails no call here, so it is 1).
    # A kill may redo only what its chunks' checkpoints did not mark: each item at most once per kill that
    # found it unfinished. A redelivery that ran checkpointed items, or a chunk run again after its commit,
    # breaks this whatever the machine's speed.
    counts = ctx.mock.counts()["paths"]
    calls = sum(n for p, n in counts.items() if p.startswith(f"/{q}/"))
    kept = sum(r[2] for r in results)
    redone = {r[0]: counts.get(f"/{q}/{r[0]}", 0) - r[2] for r in results if counts.get(f"/{q}/{r[0]}", 0) != r[2]}
    unfinished_at_kills = collections.Counter(i for k in kills for i in k["unfinished"])
    check(len(counts) == CHAOS_ITEMS and calls >= kept,
          f"the mock counted {calls} calls on {len(counts)} paths, for {kept} calls the results report")
    wrong = sorted(i for i, n in redone.items() if n > unfinished_at_kills[i])
    check(not wrong, lambda: f"{len(wrong)} items called again more often than kills found them unfinished, e.g. "
                             f"{[(i, redone[i], unfinished_at_kills[i]) for i in wrong[:5]]} (id, repeats, kills "
                             f"that found it unfinished): a checkpointed or committed item was run again")
    check(sum(k["checkpointed"] for k in kills) > 0,
          f"no checkpointed item in any of the {held} chunks the killed workers held: the check above tested "
          f"nothing (--checkpoint-ms {CHAOS_CHECKPOINT_MS})")
    redone_items = len(redone)
    _report("chaos", f"{CHAOS_ITEMS} items, {CHAOS_WORKERS} workers, --lease-ms {CHAOS_LEASE_MS}, seed {seed}: "
                     f"{len(kills)} SIGKILLs in {chaos_s:.1f}s, all done in {total_s:.1f}s; "
                     f"the killed workers held {held} chunks ({sum(len(k['unfinished']) for k in kills)} items "
                     f"unfinished, {sum(k['checkpointed'] for k in kills)} checkpointed); the mock got {calls} "
                     f"calls for {CHAOS_ITEMS} items, {calls - kept} of them redone after a kill ({redone_items} "
                     f"items run more than once, {100 * redone_items / CHAOS_ITEMS:.1f}%)")
    _report("chaos", f"SIGKILL to chunks back in pending: {_ms_summary(back)}")
    _report("chaos", f"SIGKILL to chunks taken by another worker: {_ms_summary(taken)}")


def test_sigkilled_worker_restarted_with_same_id(ctx):
    """A worker with a fixed --worker-id (a StatefulSet pod, say) SIGKILLed and restarted at once: the new process
    renews the same lease, so no reaper ever sees it run out. The chunks the dead process held must still run
    again at once, not when the queue runs dry (here that would take 30 s)."""
    q = ctx.queue
    items = [{"id": i, "sleep_ms": 1000} for i in range(3000)]
    ctx.run("enqueue", "--queue", q, "--chunk-size", 10, ctx.write_jsonl("items.jsonl", items))
    args = ["--queue", q, "--handler", "sleep", "--worker-id", "fixed", "--concurrency", 100]
    first = ctx.spawn("worker", *args, name="worker fixed (first)")
    key = ctx.key("processing:fixed")
    # 10 chunks running (--concurrency 100) and the one fetched ahead, waiting for places.
    wait_until(lambda: ctx.r.execute("LLEN", key) == 11 or not first.alive(), 15,
               lambda: f"the worker holding 11 chunks (holds {ctx.r.execute('LLEN', key)}; {first.describe()})")
    first.kill()
    killed = time.monotonic()
    held_items = {id_key(it["id"]) for raw in ctx.r.lrange_all(key) for it in json.loads(raw)["items"]}
    check(len(held_items) == 110 and ctx.xlen() == 0, f"set-up: {len(held_items)} items held, {ctx.xlen()} done")
    second = ctx.spawn("worker", *args, name="worker fixed (restarted)")
    wait_until(lambda: held_items <= {id_key(r["id"]) for r in ctx.stream_results()} or not second.alive(), 8,
               lambda: f"the dead process's 110 items run again (results {ctx.xlen()}; {second.describe()})")
    _report("same_id", f"the dead process's chunks ran again {time.monotonic() - killed:.1f}s after SIGKILL")
    check("chunks left in" in second.stderr(), "the restarted worker did not log the chunks it gave back")
    second.send(signal.SIGTERM)
    second.wait(15, expect_rc=0)
    committed = [id_key(r["id"]) for r in ctx.stream_results()]
    pending = [id_key(it["id"]) for ch in ctx.pending_chunks() for it in ch["items"]]
    check(len(committed) == len(set(committed)), "an item committed twice")
    check(ctx.processing_len() == 0 and not set(committed) & set(pending)
          and set(committed) | set(pending) == {id_key(it["id"]) for it in items},
          "after SIGTERM every item is either committed or pending, once")


# ---- 2. a worker paused past its lease: its late commits are fenced ---------------------------------------

def test_sigstop_past_lease_is_fenced(ctx):
    """SIGSTOP a worker holding chunks for longer than its lease: another worker's reaper gives its chunks back
    and that worker runs them. After SIGCONT the paused worker's commits of those chunks are refused (logged),
    it registers again and keeps working; each id is collected exactly once."""
    q = ctx.queue
    items = [{"id": f"i{i}", "sleep_ms": 3000 if i < 50 else 20} for i in range(400)]
    ctx.run("enqueue", "--queue", q, "--chunk-size", 10, ctx.write_jsonl("items.jsonl", items))
    common = ["--queue", q, "--handler", "sleep", "--lease-ms", 1000]
    # One loop: places are taken in order within a loop only, so with two a late turn of the loop holding the fifth
    # slow chunk let the sixth (fast) one take its places and commit before the pause (seen under ASan).
    paused = ctx.spawn("worker", *common, "--worker-id", "paused", "--concurrency", 50, "--threads", 1,
                       name="paused worker")
    key = ctx.key("processing:paused")
    # Its first 5 chunks are the slow ones (3 s per item), taking all 50 places, and a sixth, fast, waits ahead for
    # places: nothing of them can be committed before the pause.
    wait_until(lambda: ctx.r.execute("LLEN", key) == 6 or not paused.alive(), 15,
               lambda: f"the worker holding 6 chunks (holds {ctx.r.execute('LLEN', key)}; {paused.describe()})")
    paused.send(signal.SIGSTOP)
    wait_until(lambda: _pid_state(paused.pid) == "T", 5, lambda: f"the worker stopped ({_pid_state(paused.pid)})")
    stopped_at = time.monotonic()
    held = ctx.r.lrange_all(key)
    held_ids = {json.loads(raw)["chunk"] for raw in held}
    held_items = {id_key(it["id"]) for raw in held for it in json.loads(raw)["items"]}
    check(ctx.xlen() == 0 and len(held) == 6, f"set-up: {ctx.xlen()} results before the pause, {len(held)} held")

    rescuer = ctx.spawn("worker", *common, "--worker-id", "rescuer", "--concurrency", 200, name="rescuer")
    wait_until(lambda: ctx.r.execute("LLEN", key) == 0, 10,
               lambda: f"the paused worker's chunks reaped ({ctx.r.execute('LLEN', key)} left; {rescuer.describe()})")
    reaped_after = time.monotonic() - stopped_at
    check(ctx.r.execute("SISMEMBER", ctx.key("workers"), "paused") == 0, "the reaped worker is still registered")
    wait_until(lambda: held_items <= {id_key(r["id"]) for r in ctx.stream_results()}, 20,
               lambda: f"the rescuer committing the paused worker's items ({rescuer.describe()})")

    paused.send(signal.SIGCONT)
    # Its 3 s timers are overdue: its items finish at once, and each commit finds the chunk gone.
    wait_until(lambda: all(f"chunk {c} is no longer in" in paused.stderr() for c in held_ids) or not paused.alive(),
               10, lambda: f"the paused worker logging refused commits for {sorted(held_ids)}: "
                           f"{one_line(paused.stderr()[-800:])}")
    wait_until(lambda: "lease had expired" in paused.stderr() or not paused.alive(), 10,
               lambda: f"the paused worker noticing its lost lease: {one_line(paused.stderr()[-800:])}")
    check(paused.alive(), f"paused worker died after SIGCONT: {paused.describe()}")
    wait_until(lambda: ctx.r.execute("SISMEMBER", ctx.key("workers"), "paused") == 1
               and ctx.r.execute("EXISTS", ctx.key("lease:paused")) == 1, 5, "the paused worker registered again")
    wait_until(lambda: ctx.stat("chunks_done") == 40, 30,
               lambda: f"the first 40 chunks committed (chunks_done={ctx.stat('chunks_done')})")
    rescuer.send(signal.SIGTERM)
    rescuer.wait(15, expect_rc=0)

    # The resumed worker keeps working: it alone is left for a second batch.
    more = [{"id": f"j{i}", "sleep_ms": 20} for i in range(100)]
    ctx.run("enqueue", "--queue", q, "--chunk-size", 10, ctx.write_jsonl("more.jsonl", more))
    wait_until(lambda: ctx.stat("chunks_done") == 50 or not paused.alive(), 20,
               lambda: f"the resumed worker running the second batch (chunks_done={ctx.stat('chunks_done')}; "
                       f"{paused.describe()})")
    paused.send(signal.SIGTERM)
    paused.wait(15, expect_rc=0)

    out = ctx.path("results.jsonl")
    ctx.run("collect", "--queue", q, "--out", out, "--until-done", timeout=60)
    assert_exactly_once(read_jsonl(out), [it["id"] for it in items + more],
                        "collect output after a pause past the lease")
    check("reaped worker paused" in rescuer.stderr(), "the rescuer did not log the reaping")
    # Only the paused worker lost its lease: a running worker renews in time even with the shortest lease.
    check("lease had expired" not in rescuer.stderr(),
          lambda: f"the rescuer, never paused, lost its --lease-ms 1000 lease: "
                  f"{one_line(next(ln for ln in rescuer.stderr().splitlines() if 'lease had expired' in ln))}")
    check(ctx.stat("reaped_workers") == 1, f"stats reaped_workers={ctx.stat('reaped_workers')}, expected 1")
    check(ctx.stat("reaped_chunks") == 6 and ctx.stat("chunks_done") == 50,
          f"stats reaped_chunks={ctx.stat('reaped_chunks')} (expected 6), chunks_done={ctx.stat('chunks_done')} "
          f"(expected 50: the refused commits count nothing)")
    _report("sigstop", f"paused worker's 5 chunks reaped {reaped_after * 1000:.0f} ms after SIGSTOP "
                       f"(--lease-ms 1000)")


# ---- 3. Redis killed and restarted from its AOF mid-run ---------------------------------------------------

REDIS_ITEMS = 6000 if SANITIZED else 20000


class _Client:
    """A Redis client for a server that restarts: reconnects on the next call after a lost connection."""

    def __init__(self, server):
        self.server, self.conn = server, None

    def execute(self, *args):
        for _ in range(2):
            try:
                if self.conn is None:
                    self.conn = self.server.client()
                return self.conn.execute(*args)
            except (OSError, ConnectionError, RedisError) as exc:
                if self.conn is not None:
                    self.conn.close()
                self.conn = None
                if isinstance(exc, RedisError) and not str(exc).startswith("LOADING"):
                    raise
        return None

    def stat(self, ctx, name):
        value = self.execute("HGET", ctx.key("stats"), name)
        return int(value) if value is not None else 0

    def close(self):
        if self.conn is not None:
            self.conn.close()


def test_redis_restart_mid_run(ctx):
    """Redis (AOF, appendfsync always) is SIGKILLed and restarted on the same port twice while 2 workers and a
    collector run: once at once, once after 3 s down (past --lease-ms 2000, so every lease has expired when it
    comes back and the workers' chunks are reaped). Workers and the collector reconnect; every item is collected
    exactly once and the counters count each once."""
    server = ctx.start_redis(appendonly=True)
    url = server.url()
    r = _Client(server)
    try:
        rng = random.Random()
        # Slow enough (about 4 s for two workers) that both outages hit the workers mid-run, not only the collector.
        items = [{"id": i, "sleep_ms": rng.choice([50, 100, 200])} for i in range(REDIS_ITEMS)]
        ctx.run("enqueue", "--queue", ctx.queue, "--chunk-size", 50, ctx.write_jsonl("items.jsonl", items), url=url)
        common = ["--queue", ctx.queue, "--handler", "sleep", "--lease-ms", 2000, "--redis-timeout-ms", 1000,
                  "--exit-when-empty"]
        workers = [ctx.spawn("worker", *common, "--worker-id", f"w{n}", "--concurrency", 500, url=url,
                             name=f"worker w{n}") for n in (1, 2)]
        out = ctx.path("results.jsonl")
        collector = ctx.spawn("collect", "--queue", ctx.queue, "--out", out, "--until-done",
                              "--redis-timeout-ms", 1000, url=url, name="collector")

        def progress():
            return (f"done={r.stat(ctx, 'done')} collected={r.stat(ctx, 'collected')} of {REDIS_ITEMS}; "
                    + "; ".join(p.describe() for p in workers + [collector]))

        outages = []
        for fraction, down_s in ((0.2, 0), (0.5, 3.0)):
            wait_until(lambda: r.stat(ctx, "done") >= fraction * REDIS_ITEMS
                       or not all(p.alive() for p in workers + [collector]), 60,
                       lambda: f"{fraction:.0%} done ({progress()})")
            check(all(p.alive() for p in workers + [collector]), lambda: f"a process exited: {progress()}")
            before = r.stat(ctx, "done")
            port = server.port
            server.stop()  # SIGKILL: no shutdown save; only the AOF keeps the data
            killed = time.monotonic()
            time.sleep(down_s)  # the outage itself, not a wait for something
            server.start(port=port)
            outages.append((before, time.monotonic() - killed))
            check(r.stat(ctx, "enqueued") == REDIS_ITEMS and r.stat(ctx, "done") >= before,
                  lambda: f"data lost in the restart: enqueued={r.stat(ctx, 'enqueued')}, "
                          f"done={r.stat(ctx, 'done')} (was {before})")

        collector.wait(120, expect_rc=0)
        for w in workers:
            w.wait(30, expect_rc=0)
        assert_exactly_once(read_jsonl(out), range(REDIS_ITEMS), "collect output across two Redis restarts")
        stats = {name: r.stat(ctx, name) for name in ("done", "failed", "chunks_done", "collected", "dead")}
        expected = {"done": REDIS_ITEMS, "failed": 0, "chunks_done": REDIS_ITEMS // 50, "collected": REDIS_ITEMS,
                    "dead": 0}
        check(stats == expected, f"stats after the restarts: {stats}, expected {expected}")
        for p in workers + [collector]:
            check("reconnected to Redis" in p.stderr(), f"`{p.name}` did not log a reconnection")
        check(any("lease had expired" in w.stderr() for w in workers),
              "no worker noticed its lease had expired after 3 s down with --lease-ms 2000")
        _report("redis_restart", f"{REDIS_ITEMS} items; Redis killed at done={outages[0][0]} (down "
                                 f"{outages[0][1]:.1f}s) and at done={outages[1][0]} (down {outages[1][1]:.1f}s); "
                                 f"reaped chunks {r.stat(ctx, 'reaped_chunks')}, "
                                 f"requeued chunks {r.stat(ctx, 'requeued_chunks')}")
    finally:
        r.close()


# ---- 4. SIGTERM under load while other workers keep running -----------------------------------------------
# test_shutdown.py covers one worker alone (drain timeout, draining in flight, repeated SIGTERM, SIGINT idle) and
# test_http.py calls in flight. Here: workers stopped in the middle of a busy run shared with others.

SIGTERM_ITEMS = 1500 if SANITIZED else 4000


def test_sigterm_under_load_with_other_workers(ctx):
    """3 workers share a run. One gets SIGTERM with --drain-timeout-ms 300 while it holds unfinished chunks: it
    exits 0 within the drain timeout (+ slack), its processing list is empty, its chunks are back at the front
    of pending, and it has deregistered (nothing for the reaper). Another gets SIGTERM with a drain timeout
    longer than its items: it finishes and commits all it holds and gives nothing back. The third and a late
    fourth finish the queue; each id is collected exactly once and nothing is ever reaped."""
    q = ctx.queue
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    items = [{"id": i, "sleep_ms": rng.randint(50, 1500)} for i in range(SIGTERM_ITEMS)]
    ctx.run("enqueue", "--queue", q, "--chunk-size", 20, ctx.write_jsonl("items.jsonl", items))
    out = ctx.path("results.jsonl")
    collector = ctx.spawn("collect", "--queue", q, "--out", out, "--until-done", name="collector")

    def worker(wid, drain_ms, *extra):
        return ctx.spawn("worker", "--queue", q, "--worker-id", wid, "--handler", "sleep", "--concurrency", 300,
                         "--drain-timeout-ms", drain_ms, *extra, name=f"worker {wid}")

    short, long_, stays = worker("short", 300), worker("long", 5000), worker("stays", 20000, "--exit-when-empty")
    for victim, drain_ms, at in ((short, 300, 0.2), (long_, 5000, 0.45)):
        wid = victim.name.split()[-1]
        key = ctx.key(f"processing:{wid}")
        wait_until(lambda: ctx.stat("done") >= at * SIGTERM_ITEMS and ctx.r.execute("LLEN", key) >= 3
                   or not victim.alive(), 60,
                   lambda: f"{at:.0%} done with {wid} holding chunks (done={ctx.stat('done')}, "
                           f"{wid} holds {ctx.r.execute('LLEN', key)}; {victim.describe()})")
        requeued_before = ctx.stat("requeued_chunks")
        victim.send(signal.SIGTERM)
        sent = time.monotonic()
        victim.wait(drain_ms / 1000 + 10, expect_rc=0)
        took = time.monotonic() - sent
        where = f"{wid} (--drain-timeout-ms {drain_ms}, seed {seed})"
        limit = scaled(min(drain_ms / 1000, 1.5) + 1.5)  # items last at most 1.5 s
        check(took < limit, f"{where} took {took:.1f}s to exit after SIGTERM (limit {limit:.1f}s)")
        check(ctx.r.execute("LLEN", key) == 0, f"{where}: processing list not empty after exit: "
                                               f"{ctx.r.execute('LLEN', key)} chunks")
        check(ctx.r.execute("SISMEMBER", ctx.key("workers"), wid) == 0
              and ctx.r.execute("EXISTS", ctx.key(f"lease:{wid}")) == 0,
              f"{where} still registered (or its lease left) after a clean exit")
        requeued = ctx.stat("requeued_chunks") - requeued_before
        if drain_ms == 300:
            check(requeued >= 1, f"{where}: gave back {requeued} chunks; it held unfinished ones")
            _report("sigterm", f"{wid}: exit 0 {took * 1000:.0f} ms after SIGTERM, {requeued} chunks back to pending")
        else:
            check(requeued == 0, f"{where}: gave back {requeued} chunks although they could finish in time")
            _report("sigterm", f"{wid}: exit 0 {took * 1000:.0f} ms after SIGTERM, all it held committed")
    late = worker("late", 20000, "--exit-when-empty")
    collector.wait(120, expect_rc=0)
    stays.wait(30, expect_rc=0)
    late.wait(30, expect_rc=0)
    results = read_jsonl(out)
    assert_exactly_once(results, range(SIGTERM_ITEMS), f"collect output (seed {seed})")
    check(all(r.get("ok") is True for r in results), "an item failed")
    check(ctx.stat("reaped_chunks") == 0 and ctx.stat("reaped_workers") == 0,
          f"stats reaped_workers={ctx.stat('reaped_workers')}, reaped_chunks={ctx.stat('reaped_chunks')}: "
          "a worker that exited cleanly left work for the reaper")
    check(ctx.llen("pending") == 0 and ctx.processing_len() == 0, "queue not empty at the end")


# ---- 5. poison chunks among good ones ---------------------------------------------------------------------
# test_bad_input.py covers one worker and four malformed chunks (not JSON, wrong version, items not a list,
# truncated). Here: many kinds pushed raw (bytes that are not UTF-8, NUL, empty, huge, deeply nested, valid JSON
# of the wrong shape), interleaved with good chunks, two workers.

def _poison():
    """(name, raw bytes) of chunks no worker can run."""
    item = '{"id":"x","item":"1"}'
    return [
        ("empty", b""),
        ("binary", b"\xff\xfe\x00junk\x80\x01"),
        ("nul-in-json", b'{"v":1,"chunk":"nul\x00","items":[]}'),
        ("number", b"42"),
        ("string", b'"a chunk?"'),
        ("null", b"null"),
        ("array", b"[" + item.encode() + b"]"),
        ("no-version", b'{"chunk":"nv","items":[' + item.encode() + b"]}"),
        ("version-string", b'{"v":"1","chunk":"vs","items":[' + item.encode() + b"]}"),
        ("duplicate-key", b'{"v":1,"v":1,"chunk":"dup","items":[' + item.encode() + b"]}"),
        ("id-with-newline", b'{"v":1,"chunk":"bad\\nid","items":[' + item.encode() + b"]}"),
        ("id-too-long", b'{"v":1,"chunk":"' + b"c" * 129 + b'","items":[' + item.encode() + b"]}"),
        ("item-without-text", b'{"v":1,"chunk":"nt","items":[{"id":"x"}]}'),
        ("item-float-id", b'{"v":1,"chunk":"fid","items":[{"id":1.5,"item":"1"}]}'),
        ("item-text-not-string", b'{"v":1,"chunk":"ns","items":[{"id":"x","item":{"a":1}}]}'),
        ("deeply-nested", b'{"v":1,"chunk":"deep","items":[' + b"[" * 100000 + b"]" * 100000 + b"]}"),
        ("huge-junk", b"<" + b"x" * 200000 + b">"),
    ]


def test_poison_chunks_interleaved(ctx):
    """Poison chunks pushed raw into pending between good ones, two workers: each poison chunk ends in dead once,
    with its reason and its whole raw text (valid UTF-8 JSON); every good item is committed exactly
    once; both workers keep running and exit 0 on SIGTERM."""
    poison = _poison()
    pending = ctx.key("pending")
    good_ids = []
    for n, (name, raw) in enumerate(poison):  # LPUSH: producers' end; workers take the oldest first
        entries = [{"id": f"g{n}-{j}", "item": json.dumps({"n": n, "j": j})} for j in range(5)]
        good_ids += [e["id"] for e in entries]
        ctx.r.execute("LPUSH", pending, json.dumps({"v": 1, "chunk": f"good{n}", "items": entries}))
        ctx.r.execute("LPUSH", pending, raw)
    ctx.r.execute("LPUSH", pending, json.dumps({"v": 1, "chunk": "no-items", "items": []}))  # valid, empty
    workers = [ctx.spawn("worker", "--queue", ctx.queue, "--handler", "echo", "--worker-id", f"p{n}",
                         name=f"worker p{n}") for n in (1, 2)]
    wait_until(lambda: ctx.stat("dead_chunks") + ctx.stat("chunks_done") >= 2 * len(poison) + 1
               or not all(w.alive() for w in workers), 30,
               lambda: f"every chunk settled (dead_chunks={ctx.stat('dead_chunks')}, "
                       f"chunks_done={ctx.stat('chunks_done')}, pending={ctx.llen('pending')}; "
                       + "; ".join(w.describe() for w in workers))
    check(all(w.alive() for w in workers), lambda: "a worker died: " + "; ".join(w.describe() for w in workers))
    wait_until(lambda: ctx.processing_len() == 0, 10, lambda: f"processing lists empty: {ctx.processing_keys()}")
    check(ctx.llen("pending") == 0, f"pending not empty: {ctx.llen('pending')}")

    raw_records = ctx.r.lrange_all(ctx.key("dead"))
    for text in raw_records:
        try:
            text.encode("utf-8")  # strict: an invalid byte from Redis would be a lone surrogate here
        except UnicodeEncodeError:
            raise TestFailure(f"dead record is not valid UTF-8: {text[:160]!r}")
    dead = [json.loads(t) for t in raw_records]
    check(len(dead) == len(poison), f"dead has {len(dead)} records for {len(poison)} poison chunks")
    for entry in dead:
        check(isinstance(entry.get("error"), str) and entry["error"] and "raw" in entry,
              f"dead record without an error or raw text: {one_line(json.dumps(entry)[:300])}")
    by_raw = collections.Counter(e["raw"] for e in dead)
    for name, raw in poison:  # whole, however long (huge-junk is 200 KB)
        text = raw.decode("utf-8", "replace")
        check(by_raw[text] == 1, f"poison {name}: {by_raw[text]} dead records with its raw text {text[:80]!r}")
    check(ctx.stat("dead_chunks") == len(poison) and ctx.stat("chunks_done") == len(poison) + 1,
          f"stats dead_chunks={ctx.stat('dead_chunks')} (expected {len(poison)}), "
          f"chunks_done={ctx.stat('chunks_done')} (expected {len(poison) + 1})")
    assert_exactly_once(ctx.stream_results(), good_ids, "good items among poison chunks")
    for w in workers:
        w.send(signal.SIGTERM)
        w.wait(15, expect_rc=0)
