#!/usr/bin/env python3
"""Redis's own CPU time per item, phase by phase (issue 19): enqueue, then one worker alone (fetch + commit), then
collect --until-done (read, write, acknowledge, delete), each against the same private redis-server on a unix socket,
one after another so that each phase's cost is its own. The CPU is redis-server's used_cpu_user + used_cpu_sys (INFO
cpu) before and after the phase, divided by the items. Time on a loaded machine inflates it (cache, preemption inside
a command): compare builds side by side (--baseline), not against numbers from another hour.

    python3 tests/bench/rediscpu.py build/chunkd [--items 200000] [--concurrency 10000] [--reps 3] [--baseline BIN]
                                                 [--workers N]

With --workers N the worker phase runs N workers at once on the queue (each with --concurrency), and each run also
reports the phase's items/s (items / the phase's wall time, from the first start to the last exit) and how the
items were shared: each worker's items, counted from its "fetched chunk" debug lines.

Prints one line per run and the medians; exit 0 when every run put out every item, 1 otherwise. Standard library
only; REDIS_URL and CHUNKD_* are removed from the children's environment."""
import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

PHASES = ("enqueue", "worker", "collect")


def redis_cpu(sock):
    out = subprocess.run(["redis-cli", "-s", sock, "info", "cpu"], capture_output=True, text=True, timeout=10).stdout
    v = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    return float(v["used_cpu_sys"]) + float(v["used_cpu_user"])


def run_workers(binary, args, env, n_workers, logdir):
    """Runs n_workers workers at once; returns the items each fetched (from their debug log lines)."""
    procs, logs = [], []
    try:
        for i in range(n_workers):
            log = open(os.path.join(logdir, f"worker{i}.log"), "w+")
            logs.append(log)
            procs.append(subprocess.Popen([binary] + args + ["--log-level", "debug"], env=env,
                                          stdout=subprocess.DEVNULL, stderr=log))
        codes = [p.wait(timeout=600) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    if any(codes):
        raise RuntimeError(f"chunkd worker exit codes {codes}")
    shares = []
    for log in logs:
        log.seek(0)
        shares.append(sum(int(m.group(1)) for m in re.finditer(r"fetched chunk \S+ \((\d+) items", log.read())))
        log.close()
    return shares


def one_run(binary, items_path, n, concurrency, n_workers=1):
    """Returns {phase: (redis us per item, wall s)}, the number of result lines and, with several workers, the
    items each fetched."""
    d = tempfile.mkdtemp(prefix="chunkd-rediscpu.")
    sock = os.path.join(d, "redis.sock")
    red = subprocess.Popen(["redis-server", "--port", "0", "--unixsocket", sock, "--save", "", "--appendonly", "no",
                            "--dir", d], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while subprocess.run(["redis-cli", "-s", sock, "ping"], capture_output=True, text=True).stdout.strip() != "PONG":
            if time.monotonic() > deadline or red.poll() is not None:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.05)
        env = {k: v for k, v in os.environ.items() if k != "REDIS_URL" and not k.startswith("CHUNKD_")}
        env["REDIS_URL"] = "unix://" + sock
        out = os.path.join(d, "results.jsonl")
        cmds = {"enqueue": ["enqueue", "--queue", "q", items_path],
                "worker": ["worker", "--queue", "q", "--concurrency", str(concurrency), "--exit-when-empty",
                           "--http-port", "0", "--max-results-backlog", "0"],
                "collect": ["collect", "--queue", "q", "--until-done", "--out", out]}
        res, shares = {}, None
        for phase in PHASES:
            c0, t0 = redis_cpu(sock), time.monotonic()
            if phase == "worker" and n_workers > 1:
                shares = run_workers(binary, cmds[phase], env, n_workers, d)
            else:
                p = subprocess.run([binary] + cmds[phase], env=env, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE, text=True, timeout=600)
                if p.returncode != 0:
                    raise RuntimeError(f"chunkd {phase} exited {p.returncode}: {p.stderr.strip()[-300:]}")
            res[phase] = ((redis_cpu(sock) - c0) / n * 1e6, time.monotonic() - t0)
        with open(out) as f:
            ids = {json.loads(line)["id"] for line in f}
        return res, len(ids), shares
    finally:
        red.kill()
        red.wait()
        shutil.rmtree(d, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("chunkd")
    ap.add_argument("--items", type=int, default=200000)
    ap.add_argument("--concurrency", type=int, default=10000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--baseline", help="another chunkd binary, run alternately with the first")
    ap.add_argument("--workers", type=int, default=1, help="workers run at once in the worker phase")
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="chunkd-rediscpu-items.")
    ok = True
    try:
        items = os.path.join(tmp, "items.jsonl")
        with open(items, "w") as f:
            for i in range(a.items):
                f.write(json.dumps({"id": i, "sleep_ms": 100}) + "\n")
        bins = [("new", a.chunkd)] + ([("baseline", a.baseline)] if a.baseline else [])
        runs = {label: [] for label, _ in bins}
        for rep in range(1, a.reps + 1):
            for label, binary in (bins if rep % 2 else list(reversed(bins))):
                res, n_out, shares = one_run(binary, items, a.items, a.concurrency, a.workers)
                ok &= n_out == a.items
                runs[label].append(res)
                load = open("/proc/loadavg").read().split()[0]
                share = (f"; {a.workers} workers: {a.items / res['worker'][1]:,.0f} items/s, items each "
                         f"{', '.join(f'{x:,}' for x in shares)}" if shares else "")
                print(f"{label} run {rep}: redis us/item " +
                      "  ".join(f"{ph} {res[ph][0]:.2f} ({res[ph][1]:.1f} s)" for ph in PHASES) +
                      f"  total {sum(res[ph][0] for ph in PHASES):.2f}{share}; {n_out} ids out; load {load}",
                      flush=True)
        for label, rs in runs.items():
            med = {ph: statistics.median(r[ph][0] for r in rs) for ph in PHASES}
            print(f"{label} median of {len(rs)}: redis us/item " + "  ".join(f"{ph} {med[ph]:.2f}" for ph in PHASES) +
                  f"  total {statistics.median(sum(r[ph][0] for ph in PHASES) for r in rs):.2f}"
                  f" ({a.items} items, --concurrency {a.concurrency}, {a.workers} worker(s))")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
