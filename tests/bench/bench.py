#!/usr/bin/env python3
"""chunkd benchmark harness (stdlib only). Run through bench.sh / `make bench`.

    bench.py [options] PATH/TO/chunkd

Cases (see README.md beside this file):
  original  chunkd run vs recipe.py on 10,000 x 100 ms items, side by side, alternating
  million   one `chunkd worker` against a private redis-server: items/s and peak RSS
            at 1,000,000 and 100,000 items
  sweep     items/s against --concurrency; writes throughput.dat and throughput.png
  http      the http handler against nginx (100 ms fixed delay): chunkd worker items/s
            vs wrk req/s at 2,000 and 5,000 connections, side by side, alternating,
            with curlfloor (libcurl alone, the handler's design) as the floor;
            worker peak RSS; and recipe.py calling the same URL with urllib
  exec      chunkd run --handler exec with the README's Python example (exec_fn.py) at
            --procs 200 and 20, against recipe.py on the same items: items/s, peak memory
  ratelimit 5 workers sharing --rate-limit 200/s against the mock API (build/mockapi, no
            delay): the calls/s the mock saw over 30 s, and items per worker; then the
            adaptation to 429s: a true limit L with --rate-limit 2L, and 10 % random 429s,
            the shared rate over time in ratelimit.png
  cluster   the scale-out path for Redis itself: 6 queues, one echo worker and one collector each,
            spread over a 3-master Redis Cluster, against the same 6 queues on one redis-server
            (both over loopback TCP): total items/s, median of alternating runs
  tls       the million case over rediss:// against the same over plain TCP, one redis-server, alternating
  httpd     1,000 hostile connections (slow headers, idle, oversized) held against a
            worker's HTTP port: /healthz, /readyz and /metrics latencies (p50/p99/max)
            and the worker's RSS, before and under the attack
  rediscpu  redis-server's own CPU time per item (INFO cpu) for enqueue, the worker phase
            (1, 4 and 8 workers at once: their items/s and each one's share) and collect,
            over 1,000,000 items, against the goal of 5 us per item; with --baseline, that
            build too, alternating (tests/bench/rediscpu.py is a shortcut to this case)

Numbers are printed and recorded, never asserted: the exit status is 0 when
every run completed and produced correct output, whatever the speed; 1 when a
run failed (crash, bad exit status, time-out, missing or wrong results); 2 on
bad usage. BENCH_QUICK=1 (or --quick) runs smaller sizes.
"""

import argparse
import datetime
import json
import os
import platform
import re
import resource
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
import hostile  # noqa: E402
import procmem  # noqa: E402
from resp import key_slot  # noqa: E402

SLEEP_MS = 100
RUN_NGINX = os.path.join(HERE, "..", "mockapi", "run-nginx.sh")
HTTP_DELAY_S = 0.1           # nginx's fixed delay: the same 100 ms as the sleep items
HTTP_TARGETS = {2000: 0.9, 5000: 0.6}   # chunkd items/s >= this x wrk req/s, same connection count
HTTP_RSS_TARGET_MB = 200     # worker peak RSS at 5,000 in flight
HTTPD_HOSTILE = 1000         # httpd case: hostile connections held against the worker's port
HTTPD_PER_SOURCE = 25        # ... from each of 40 loopback source addresses (127.0.0.2-41)
HTTPD_LATENCY_TARGET_S = 1.0
FLOOR_THREADS = 2            # curlfloor's loops: the handler's default, one per core on the 2-core machine
MB = 1000 * 1000
MIB = 1024 * 1024


class BenchError(Exception):
    """A run failed: recorded, and the harness goes on with the next case."""


class Interrupted(BaseException):
    pass


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def fmt_int(n):
    return f"{n:,.0f}"


# --------------------------------------------------------------------------- processes

# ru_maxrss pitfall: Linux keeps a process's peak RSS across execve, and execve first
# records the peak of the memory image it replaces. A child forked (or vforked) from
# this Python process and exec'd into chunkd would therefore report at least this
# process's own RSS (20-70 MiB) as its ru_maxrss. So each measured command is started
# through this tiny trampoline: a fresh `python3 -I -S` (small heap) forks, the fork
# execs the command, and the trampoline reaps it with os.wait4 and writes its rusage
# and wall time (fork to reap) as JSON to argv[1]. The floor this leaves is the
# trampoline's own anonymous memory, about 5 MiB.
TRAMPOLINE = r"""
import os, sys, time
t0 = time.monotonic()
pid = os.fork()
if pid == 0:
    try:
        os.execv(sys.argv[2], sys.argv[2:])
    finally:
        os._exit(127)
while True:
    try:
        _, status, ru = os.wait4(pid, 0)
        break
    except InterruptedError:
        pass
t1 = time.monotonic()
with open(sys.argv[1], "w") as f:
    f.write('{"pid":%d,"t0":%.6f,"wall_s":%.6f,"status":%d,"maxrss_kib":%d,"utime_s":%.6f,"stime_s":%.6f}'
            % (pid, t0, t1 - t0, status, ru.ru_maxrss, ru.ru_utime, ru.ru_stime))
code = os.waitstatus_to_exitcode(status)
os._exit(code if code >= 0 else 128 - code)
"""


class Rusage:
    def __init__(self, maxrss_kib, utime, stime):
        self.ru_maxrss, self.ru_utime, self.ru_stime = maxrss_kib, utime, stime


class Procs:
    """Children started in their own process group; the live groups are listed
    in TMP/pgids so that bench.sh's trap can end them if this process dies."""

    def __init__(self, tmp):
        self.tmp = tmp
        self.live = {}  # pid -> Popen

    def _write(self):
        path = os.path.join(self.tmp, "pgids")
        with open(path + ".new", "w") as f:
            f.write("".join(f"{pid}\n" for pid in self.live))
        os.replace(path + ".new", path)

    def start(self, cmd, env=None, stdout=None, stderr=None, cwd=None, measure=False):
        """measure=True: run cmd (absolute path) under TRAMPOLINE; wait() then returns
        the command's own rusage and wall time."""
        stat = None
        if measure:
            stat = os.path.join(self.tmp, f"rusage.{len(os.listdir(self.tmp))}.{time.monotonic_ns()}.json")
            cmd = [sys.executable, "-I", "-S", "-c", TRAMPOLINE, stat] + list(cmd)
        p = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr,
                             cwd=cwd, start_new_session=True)
        p.t_start = time.monotonic()
        p.stat_path = stat
        self.live[p.pid] = p
        self._write()
        return p

    def wait(self, p, timeout):
        """Reap p with wait4. Returns (exit code, rusage, wall seconds); exit code
        is -SIG for a signal. Kills the process group on time-out (raises)."""
        deadline = p.t_start + timeout
        fd = os.pidfd_open(p.pid)
        try:
            poller = select.poll()
            poller.register(fd, select.POLLIN)
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    self.kill(p)
                    args = p.args[6:] if p.stat_path else p.args
                    raise BenchError(f"{os.path.basename(args[0])} {args[1]} timed out "
                                     f"after {timeout:.0f} s (killed)")
                if poller.poll(min(left, 1.0) * 1000):
                    break
        finally:
            os.close(fd)
        _, status, ru = os.wait4(p.pid, 0)
        t_end = time.monotonic()
        p.returncode = os.waitstatus_to_exitcode(status)
        self.live.pop(p.pid, None)
        self._write()
        self._killgroup(p.pid, signal.SIGKILL)  # anything it left behind in its group
        wall = t_end - p.t_start
        if p.stat_path:
            try:
                with open(p.stat_path) as f:
                    st = json.load(f)
                os.unlink(p.stat_path)
            except (OSError, ValueError):
                raise BenchError(f"{os.path.basename(p.args[6])} {p.args[7]}: the trampoline "
                                 f"wrote no rusage (exit {p.returncode})")
            p.returncode = os.waitstatus_to_exitcode(st["status"])
            ru = Rusage(st["maxrss_kib"], st["utime_s"], st["stime_s"])
            wall = st["wall_s"]
            p.t_fork = st["t0"]  # CLOCK_MONOTONIC, the same clock as time.monotonic() here
        return p.returncode, ru, wall

    @staticmethod
    def _killgroup(pgid, sig):
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def kill(self, p, grace=3.0):
        if p.returncode is None:
            self._killgroup(p.pid, signal.SIGTERM)
            try:
                p.wait(grace)
            except subprocess.TimeoutExpired:
                self._killgroup(p.pid, signal.SIGKILL)
                p.wait()
        self._killgroup(p.pid, signal.SIGKILL)
        self.live.pop(p.pid, None)
        self._write()

    def kill_all(self):
        for p in list(self.live.values()):
            self.kill(p)


# --------------------------------------------------------------------------- redis

class Redis:
    """A private redis-server on a unix socket, plus a minimal RESP client."""

    def __init__(self, procs, tmp, name="redis", extra_args=()):
        self.dir = os.path.join(tmp, name)
        os.makedirs(self.dir, exist_ok=True)
        self.sock_path = os.path.join(self.dir, "redis.sock")
        self.url = "unix://" + self.sock_path
        # Also on loopback TCP (unless extra_args set the ports), for the cases that put something in between.
        self.tcp_port = None if "--port" in extra_args else free_port()
        self.tcp_url = f"redis://127.0.0.1:{self.tcp_port}" if self.tcp_port else None
        tcp = ["--port", str(self.tcp_port), "--bind", "127.0.0.1"] if self.tcp_port else []
        self.procs = procs
        self.log = open(os.path.join(self.dir, "redis.log"), "wb")
        self.proc = procs.start(["redis-server", *tcp, "--unixsocket", self.sock_path,
                                 "--unixsocketperm", "700", "--save", "", "--appendonly", "no",
                                 "--dir", self.dir, "--daemonize", "no", *extra_args],
                                stdout=self.log, stderr=subprocess.STDOUT)
        self.sock = None
        deadline = time.monotonic() + 10
        while True:
            if self.proc.poll() is not None:
                raise BenchError(f"redis-server exited at start (see {self.dir}/redis.log)")
            try:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.connect(self.sock_path)
                self.buf = b""
                if self.cmd("PING") == "PONG":
                    break
            except OSError:
                self.sock.close()
                if time.monotonic() > deadline:
                    raise BenchError("redis-server did not answer PING within 10 s")
                time.sleep(0.05)

    def _line(self):
        while b"\r\n" not in self.buf:
            data = self.sock.recv(65536)
            if not data:
                raise BenchError("redis closed the connection")
            self.buf += data
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _exact(self, n):
        while len(self.buf) < n + 2:
            data = self.sock.recv(65536)
            if not data:
                raise BenchError("redis closed the connection")
            self.buf += data
        out, self.buf = self.buf[:n], self.buf[n + 2:]
        return out

    def _reply(self):
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise BenchError("redis: " + rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self._exact(n).decode()
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self._reply() for _ in range(n)]
        raise BenchError(f"redis: unexpected reply {line[:40]!r}")

    def cmd(self, *args):
        out = [f"*{len(args)}\r\n".encode()]
        for a in args:
            b = str(a).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(b), b))
        self.sock.sendall(b"".join(out))
        return self._reply()

    def stats(self, queue):
        flat = self.cmd("HGETALL", f"chunkd:{{{queue}}}:stats") or []
        return {flat[i]: int(flat[i + 1]) for i in range(0, len(flat), 2)}

    def info_memory(self):
        info = self.cmd("INFO", "memory")
        return dict(l.split(":", 1) for l in info.splitlines() if ":" in l)

    def cpu_s(self):
        """redis-server's own CPU time so far, used_cpu_user + used_cpu_sys of INFO cpu (microsecond resolution)."""
        v = dict(l.split(":", 1) for l in self.cmd("INFO", "cpu").splitlines() if ":" in l)
        return float(v["used_cpu_user"]) + float(v["used_cpu_sys"])

    def version(self):
        info = self.cmd("INFO", "server")
        for l in info.splitlines():
            if l.startswith("redis_version:"):
                return l.split(":", 1)[1]
        return "?"

    def close(self):
        if self.sock:
            try:
                self.sock.close()
            except OSError:
                pass
        self.procs.kill(self.proc)
        self.log.close()


# --------------------------------------------------------------------------- nginx

def free_port():
    with socket.socket() as so:
        so.bind(("127.0.0.1", 0))
        return so.getsockname()[1]


class Nginx:
    """tests/mockapi/run-nginx.sh: nginx (echo module) answering every request on
    127.0.0.1:port after delay_s with 200 {"ok":true}; config, logs and temp files in
    TMP/nginx. The script returns once nginx listens and prints the master's pid; the
    master stays in the script's process group, which Procs (and bench.sh's trap) end."""

    def __init__(self, procs, tmp, delay_s):
        self.procs = procs
        self.dir = os.path.join(tmp, "nginx")
        logp = os.path.join(tmp, "run-nginx.log")
        for attempt in range(3):  # the free port can be taken between free_port() and nginx's bind
            self.port = free_port()
            with open(logp, "wb") as lf:
                self.proc = procs.start([RUN_NGINX, str(self.port), self.dir, str(delay_s)],
                                        stdout=subprocess.PIPE, stderr=lf)
            try:
                out, _ = self.proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                procs.kill(self.proc)
                raise BenchError("run-nginx.sh did not return within 30 s")
            # Not Procs.wait: that would also kill the group, i.e. nginx. The group stays
            # listed in Procs until stop().
            if self.proc.returncode == 0 and out.strip().isdigit():
                self.pid = int(out)
                self.url = f"http://127.0.0.1:{self.port}"
                return
            procs.kill(self.proc)
        raise BenchError(f"run-nginx.sh failed (exit {self.proc.returncode}):\n{tail(logp)}")

    def cpu_s(self):
        """CPU seconds of the master and its worker so far."""
        return sum(cpu_ticks_s(p) for p in procmem.tree_pids(self.pid))

    def version(self):
        res = subprocess.run([shutil.which("nginx") or "/usr/sbin/nginx", "-v"], capture_output=True, text=True)
        return res.stderr.strip().split("/")[-1] or "?"

    def stop(self):
        try:
            fd = os.pidfd_open(self.pid)
            os.kill(self.pid, signal.SIGTERM)
            select.select([fd], [], [], 5)
            os.close(fd)
        except (ProcessLookupError, OSError):
            pass
        self.procs.kill(self.proc)  # SIGKILL to whatever is left of the group


# --------------------------------------------------------------------------- helpers

def wait_tcp(port, seconds):
    """Polls until 127.0.0.1:port accepts a connection (a proxy or server just started)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise BenchError(f"nothing listening on 127.0.0.1:{port} after {seconds} s")
            time.sleep(0.05)


def gen_items(path, n):
    with open(path, "w") as f:
        for start in range(1, n + 1, 100000):
            f.write("".join(f'{{"id":{i},"sleep_ms":{SLEEP_MS}}}\n'
                            for i in range(start, min(n, start + 99999) + 1)))


def gen_http_items(path, n):
    with open(path, "w") as f:
        for start in range(1, n + 1, 100000):
            f.write("".join(f'{{"id":{i},"path":"/x"}}\n'
                            for i in range(start, min(n, start + 99999) + 1)))


def verify_results(path, n, chunkd_format=True, want_status=None):
    """Every id 1..n exactly once, all ok (and, with want_status, an http handler
    result with that status). Returns a problem string or None."""
    seen = bytearray(n + 1)
    lines = bad = dup = not_ok = 0
    with open(path, "rb") as f:
        for line in f:
            if not line.strip():
                continue
            lines += 1
            try:
                r = json.loads(line)
                i = r["id"]
                if chunkd_format and r.get("ok") is not True:
                    not_ok += 1
                elif want_status is not None and (r["result"].get("status") if isinstance(
                        r.get("result"), dict) else None) != want_status:
                    not_ok += 1
            except (ValueError, KeyError, TypeError):
                bad += 1
                continue
            if not isinstance(i, int) or not 1 <= i <= n:
                bad += 1
            elif seen[i]:
                dup += 1
            else:
                seen[i] = 1
    missing = n - sum(seen)
    if lines == n and not (bad or dup or not_ok or missing):
        return None
    return (f"{os.path.basename(path)}: {lines} result lines for {n} items "
            f"({missing} missing, {dup} duplicate, {not_ok} not ok"
            + (f" or not status {want_status}" if want_status is not None else "")
            + f", {bad} unparseable/unknown id)")


def fetched_items(logp):
    """Items a worker fetched, from its "fetched chunk ID (N items, ..." debug lines (--log-level debug)."""
    with open(logp, "rb") as f:
        return sum(int(m.group(1)) for m in re.finditer(rb"fetched chunk \S+ \((\d+) items", f.read()))


def http_call_ms(path, first_n):
    """Percentiles of the http handler's per-call "ms" in a results file; also the median of the first first_n
    results (in commit order, about the order calls ended: the first wave, which opens every connection) and of
    the rest."""
    ms = []
    with open(path, "rb") as f:
        for line in f:
            try:
                ms.append(json.loads(line)["result"]["ms"])
            except (ValueError, KeyError, TypeError):
                pass
    if not ms:
        return {}
    first, rest = ms[:first_n], ms[first_n:]
    ms.sort()
    q = lambda x: ms[min(len(ms) - 1, int(x * len(ms)))]
    return {"call_ms_p50": q(0.5), "call_ms_p90": q(0.9), "call_ms_p99": q(0.99), "call_ms_max": ms[-1],
            "first_wave_ms_p50": statistics.median(first), "later_ms_p50": statistics.median(rest) if rest else 0}


def tcp_active_opens():
    """Outgoing TCP connections opened by the whole machine so far (/proc/net/snmp)."""
    try:
        with open("/proc/net/snmp") as f:
            rows = [l.split() for l in f if l.startswith("Tcp:")]
        return int(rows[1][rows[0].index("ActiveOpens")])
    except (OSError, ValueError, IndexError):
        return 0


def loadavg():
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "?"


def tail(path, n=15):
    try:
        with open(path, "rb") as f:
            lines = f.read().decode(errors="replace").splitlines()
        return "\n".join("    | " + l for l in lines[-n:])
    except OSError:
        return ""


def cpu_ticks_s(pid):
    """utime+stime of a live process in seconds (0 if gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


def median_run(runs):
    """Field-wise median of a list of run dicts (numbers only; others from the first)."""
    out = dict(runs[0])
    for k, v in runs[0].items():
        vals = [r[k] for r in runs if isinstance(r.get(k), (int, float)) and not isinstance(r.get(k), bool)]
        if vals and len(vals) == len(runs):
            out[k] = statistics.median(vals)
    return out


def child_env(redis_url=None):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("CHUNKD_") and k != "REDIS_URL"}
    if redis_url:
        env["REDIS_URL"] = redis_url
    env["CHUNKD_HTTP_PORT"] = "0"  # no /metrics server: port 8080 may be taken, and it is not measured here
    return env


def parse_wrk(text):
    """The figures of wrk's report (raises BenchError without Requests/sec)."""
    m = re.search(r"^Requests/sec:\s+([\d.]+)", text, re.M)
    if not m:
        raise BenchError("wrk printed no Requests/sec")
    out = {"req_per_s": float(m.group(1)), "requests": 0, "socket_errors": 0, "non_2xx": 0,
           "latency_avg": "?", "latency_max": "?"}
    m = re.search(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m)\b", text, re.M)
    if m:
        out["requests"] = int(m.group(1))
        out["duration_s"] = float(m.group(2)) * {"us": 1e-6, "ms": 1e-3, "s": 1, "m": 60}[m.group(3)]
    m = re.search(r"^\s*Latency\s+(\S+)\s+(\S+)\s+(\S+)", text, re.M)
    if m:
        out["latency_avg"], out["latency_max"] = m.group(1), m.group(3)
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if m:
        out["socket_errors"] = sum(int(x) for x in m.groups())
        out["socket_errors_detail"] = m.group(0)
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    if m:
        out["non_2xx"] = int(m.group(1))
    return out


def rusage_dict(ru, wall):
    return {"wall_s": wall, "maxrss_mib": ru.ru_maxrss / 1024,
            "cpu_s": ru.ru_utime + ru.ru_stime,
            "cpu_pct": 100 * (ru.ru_utime + ru.ru_stime) / wall if wall > 0 else 0}


# --------------------------------------------------------------------------- cases

class Bench:
    def __init__(self, args):
        self.a = args
        self.tmp = args.tmp
        self.procs = Procs(self.tmp)
        self.redis = None
        self.errors = []
        self.rows = []        # summary table rows
        self.sections = []    # detail text for results.txt
        self.sweep_rows = []
        self.nginx = None

    # -- one chunkd invocation with logs in tmp
    def run_chunkd(self, name, args, env, timeout, binary=None, measure=True):
        """measure=False: without the rusage trampoline (Procs.start), so that a wall time starts at the fork."""
        logp = os.path.join(self.tmp, name.replace("/", "of").replace(" ", "_") + ".log")
        with open(logp, "wb") as lf:
            p = self.procs.start([binary or self.a.chunkd] + args, env=env, stdout=lf, stderr=lf, measure=measure)
        return p, logp

    def check_exit(self, what, code, logp):
        if code != 0:
            t = tail(logp)
            raise BenchError(f"{what} exited with status {code}" + (f"\n{t}" if t else ""))

    def get_redis(self):
        if self.redis is None:
            self.redis = Redis(self.procs, self.tmp)
            log(f"redis-server {self.redis.version()} on {self.redis.sock_path}")
        return self.redis

    # -- case a
    def case_original(self):
        n, reps = self.a.original_items, self.a.reps
        path = os.path.join(self.tmp, "original.jsonl")
        gen_items(path, n)
        env = child_env()
        ch, rc = [], []
        for rep in range(1, reps + 1):
            out = os.path.join(self.tmp, "original.chunkd.out")
            if os.path.exists(out):
                os.unlink(out)
            p, logp = self.run_chunkd("original.chunkd",
                                      ["run", "--concurrency", "10000", path, "--out", out],
                                      env, timeout=120)
            sampler = procmem.TreeSampler(p.pid, interval=0.01, pss_every=5, skip_root=True).start()
            try:
                code, ru, wall = self.procs.wait(p, 120)
            finally:
                sampler.stop()
            self.check_exit("chunkd run", code, logp)
            problem = verify_results(out, n)
            if problem:
                raise BenchError("chunkd run: " + problem)
            m = rusage_dict(ru, wall)
            m.update(sampler.result())
            ch.append(m)
            log(f"original {rep}/{reps}: chunkd run  {wall:7.3f} s  {n / wall:10,.0f} items/s  "
                f"maxrss {m['maxrss_mib']:.1f} MiB  tree rss {m['peak_rss_mib']} MiB")

            out = os.path.join(self.tmp, "original.recipe.out")
            if os.path.exists(out):
                os.unlink(out)
            logp = os.path.join(self.tmp, "original.recipe.log")
            with open(logp, "wb") as lf:
                p = self.procs.start([sys.executable, os.path.join(HERE, "recipe.py"), path,
                                      "--out", out, "--json"], env=env, stdout=subprocess.PIPE,
                                     stderr=lf)
                stdout = p.stdout.read()
                p.stdout.close()
                code, ru, wall = self.procs.wait(p, 600)
            if code != 0:
                raise BenchError(f"recipe.py exited with status {code}\n{tail(logp)}")
            problem = verify_results(out, n, chunkd_format=False)
            if problem:
                raise BenchError("recipe.py: " + problem)
            m = json.loads(stdout.decode().strip().splitlines()[-1])
            m["wall_s"] = wall
            rc.append(m)
            log(f"original {rep}/{reps}: recipe.py   {wall:7.3f} s  {n / wall:10,.0f} items/s  "
                f"(pool start {m['pool_start_s']} s)  tree rss {m['peak_rss_mib']} MiB  "
                f"pss {m['peak_pss_mib']} MiB")

        med = lambda rows, k: statistics.median(r[k] for r in rows)
        c_wall, r_wall = med(ch, "wall_s"), med(rc, "wall_s")
        ratio = r_wall / c_wall
        self.rows += [
            ("original", f"chunkd run wall, {fmt_int(n)} x {SLEEP_MS} ms", f"{c_wall:.3f} s", "", ""),
            ("original", "recipe.py wall (Pool(200), spawn)", f"{r_wall:.2f} s", "", ""),
            ("original", "  of which Pool(200) start-up", f"{med(rc, 'pool_start_s'):.2f} s", "", ""),
            ("original", "chunkd run items/s", fmt_int(n / c_wall), "", ""),
            ("original", "recipe.py items/s", fmt_int(n / r_wall), "", ""),
            ("original", "speed-up (recipe wall / chunkd wall)", f"{ratio:.1f}x", ">= 20x",
             self.verdict(ratio, 20, higher=True)),
            ("original", "chunkd run peak RSS sum (chunkd+redis)", f"{med(ch, 'peak_rss_mib'):.1f} MiB", "", ""),
            ("original", "chunkd run peak PSS sum (chunkd+redis)", f"{med(ch, 'peak_pss_mib'):.1f} MiB", "", ""),
            ("original", "recipe.py peak RSS sum (all processes)", f"{med(rc, 'peak_rss_mib'):.1f} MiB", "", ""),
            ("original", "recipe.py peak PSS sum (all processes)", f"{med(rc, 'peak_pss_mib'):.1f} MiB", "", ""),
        ]
        det = [f"original: {n} items x {SLEEP_MS} ms, {reps} alternating runs each (wall seconds, "
               "from process start to exit, measured by this harness)"]
        for i, (c, r) in enumerate(zip(ch, rc), 1):
            det.append(f"  run {i}: chunkd run {c['wall_s']:.3f} s (cpu {c['cpu_s']:.2f} s, "
                       f"ru_maxrss {c['maxrss_mib']:.1f} MiB, tree rss {c['peak_rss_mib']} MiB, "
                       f"pss {c['peak_pss_mib']} MiB)   recipe.py {r['wall_s']:.2f} s "
                       f"(pool start {r['pool_start_s']} s, rss sum {r['peak_rss_mib']} MiB, "
                       f"pss sum {r['peak_pss_mib']} MiB, {r['peak_procs']} processes)")
        self.sections.append("\n".join(det))

    # -- case exec: the exec handler with the README's Python example against recipe.py
    def case_exec(self):
        n = self.a.exec_items
        path = os.path.join(self.tmp, "exec.jsonl")
        gen_items(path, n)
        env = child_env()
        fn = os.path.join(HERE, "exec_fn.py")
        runs = []
        for procs in self.a.exec_procs:
            out = os.path.join(self.tmp, "exec.chunkd.out")
            if os.path.exists(out):
                os.unlink(out)
            p, logp = self.run_chunkd(f"exec.chunkd.{procs}",
                                      ["run", "--handler", "exec", "--cmd", f"{sys.executable} '{fn}'",
                                       "--procs", str(procs), "--concurrency", str(2 * procs), path, "--out", out],
                                      env, timeout=600)
            # Hundreds of processes: sample as often as recipe.py samples its own tree.
            sampler = procmem.TreeSampler(p.pid, interval=0.2, pss_every=5, skip_root=True).start()
            try:
                code, ru, wall = self.procs.wait(p, 600)
            finally:
                sampler.stop()
            self.check_exit("chunkd run --handler exec", code, logp)
            problem = verify_results(out, n)
            if problem:
                raise BenchError(f"chunkd run --handler exec --procs {procs}: " + problem)
            m = rusage_dict(ru, wall)
            m.update(sampler.result(), procs=procs)
            runs.append(m)
            log(f"exec: chunkd --procs {procs}  {wall:7.3f} s  {n / wall:8,.0f} items/s  "
                f"tree rss {m['peak_rss_mib']} MiB  pss {m['peak_pss_mib']} MiB ({m['peak_procs']} processes)")

        out = os.path.join(self.tmp, "exec.recipe.out")
        logp = os.path.join(self.tmp, "exec.recipe.log")
        with open(logp, "wb") as lf:
            p = self.procs.start([sys.executable, os.path.join(HERE, "recipe.py"), path, "--out", out, "--json"],
                                 env=env, stdout=subprocess.PIPE, stderr=lf)
            stdout = p.stdout.read()
            p.stdout.close()
            code, ru, wall = self.procs.wait(p, 600)
        if code != 0:
            raise BenchError(f"recipe.py exited with status {code}\n{tail(logp)}")
        problem = verify_results(out, n, chunkd_format=False)
        if problem:
            raise BenchError("recipe.py: " + problem)
        rc = json.loads(stdout.decode().strip().splitlines()[-1])
        rc["wall_s"] = wall
        log(f"exec: recipe.py        {wall:7.3f} s  {n / wall:8,.0f} items/s  (pool start {rc['pool_start_s']} s)  "
            f"tree rss {rc['peak_rss_mib']} MiB  pss {rc['peak_pss_mib']} MiB")

        for m in runs:
            P = m["procs"]
            self.rows += [
                ("exec", f"chunkd run --handler exec --procs {P}, {fmt_int(n)} x {SLEEP_MS} ms",
                 f"{fmt_int(n / m['wall_s'])} items/s", f"ideal {fmt_int(P * 1000 / SLEEP_MS)}", ""),
                ("exec", f"  wall / CPU (chunkd, redis and the {P} Pythons)",
                 f"{m['wall_s']:.2f} s / {m['cpu_s']:.1f} s", "", ""),
                ("exec", "  peak RSS / PSS sum (all processes)",
                 f"{m['peak_rss_mib']:.0f} / {m['peak_pss_mib']:.0f} MiB", "", ""),
                ("exec", "  speed-up (recipe.py wall / chunkd wall)", f"{rc['wall_s'] / m['wall_s']:.2f}x", "", ""),
            ]
        self.rows += [
            ("exec", f"recipe.py items/s, {fmt_int(n)} x {SLEEP_MS} ms (Pool(200), spawn)",
             f"{fmt_int(n / rc['wall_s'])} items/s", "", "1 run"),
            ("exec", "  wall / of which Pool(200) start-up", f"{rc['wall_s']:.2f} s / {rc['pool_start_s']:.2f} s",
             "", ""),
            ("exec", "  peak RSS / PSS sum (all processes)",
             f"{rc['peak_rss_mib']:.0f} / {rc['peak_pss_mib']:.0f} MiB", "", ""),
        ]
        det = [f"exec: {n} items; chunkd run --handler exec --cmd 'python3 exec_fn.py' (the README example) "
               f"--concurrency 2 x --procs, 1 run each; recipe.py 1 run (wall from process start to exit)"]
        for m in runs:
            det.append(f"  --procs {m['procs']}: {m['wall_s']:.2f} s, cpu {m['cpu_s']:.1f} s (chunkd and its "
                       f"children, as wait4 counts them), rss sum {m['peak_rss_mib']} MiB, pss sum "
                       f"{m['peak_pss_mib']} MiB, {m['peak_procs']} processes")
        det.append(f"  recipe.py: {rc['wall_s']:.2f} s (pool start {rc['pool_start_s']} s), rss sum "
                   f"{rc['peak_rss_mib']} MiB, pss sum {rc['peak_pss_mib']} MiB, {rc['peak_procs']} processes")
        self.sections.append("\n".join(det))

    # -- case ratelimit: 5 workers share --rate-limit 200/s against the (fast) mock API
    def case_ratelimit(self):
        limit, n_workers, window = self.a.rate_limit, self.a.rate_workers, self.a.rate_seconds
        mockapi = os.path.join(os.path.dirname(self.a.chunkd), "mockapi")
        if not os.access(mockapi, os.X_OK):
            raise BenchError(f"{mockapi} not found (make build/mockapi)")
        logm = open(os.path.join(self.tmp, "ratelimit.mockapi.log"), "wb")
        mock = self.procs.start([mockapi, "--port", "0", "--threads", "2"], stdout=subprocess.PIPE, stderr=logm)
        line = mock.stdout.readline().decode()
        if not line.startswith("port "):
            raise BenchError(f"mockapi did not start: {line!r}")
        mock_url = f"http://127.0.0.1:{int(line.split()[1])}"

        def mock_total():
            import urllib.request
            with urllib.request.urlopen(mock_url + "/_count", timeout=5) as r:
                return json.loads(r.read())["total"]

        def worker_metric(port, name):
            import urllib.request
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                text = r.read().decode()
            m = re.search(rf"^{name} ([0-9.e+-]+)$", text, re.M)
            return float(m.group(1)) if m else 0.0

        r = self.get_redis()
        r.cmd("FLUSHALL")
        env = child_env(r.url)
        n = limit * (window + 15)  # never runs dry during the window
        path = os.path.join(self.tmp, "ratelimit-items.jsonl")
        with open(path, "w") as f:
            for i in range(1, n + 1):
                f.write(f'{{"id":{i},"path":"/rl"}}\n')
        p, logp = self.run_chunkd("ratelimit.enqueue", ["enqueue", "--queue", "rl", "--chunk-size", "10", path],
                                  env, 120)
        code, _, _ = self.procs.wait(p, 120)
        self.check_exit("chunkd enqueue", code, logp)
        ports = [free_port() for _ in range(n_workers)]
        workers = []
        try:
            for i, port in enumerate(ports):
                wenv = dict(env, CHUNKD_HTTP_PORT=str(port))
                w, logw = self.run_chunkd(f"ratelimit.worker{i + 1}",
                                          ["worker", "--queue", "rl", "--worker-id", f"rl{i + 1}", "--handler", "http",
                                           "--base-url", mock_url, "--rate-limit", f"{limit}/s", "--concurrency", "100",
                                           "--http-addr", "127.0.0.1"], wenv, 600)
                workers.append((w, logw))
            deadline = time.monotonic() + 30
            while mock_total() == 0:
                if time.monotonic() > deadline:
                    raise BenchError("no call reached the mock within 30 s")
                time.sleep(0.1)
            time.sleep(3)  # past the first burst and the block sizes' warm-up
            ok_name = 'chunkd_items_total{queue="rl",outcome="ok"}'
            ok0 = [worker_metric(port, re.escape(ok_name)) for port in ports]
            c0, t0 = mock_total(), time.monotonic()
            seconds = []
            last_c, last_t = c0, t0
            while time.monotonic() - t0 < window:
                time.sleep(1)
                c, t = mock_total(), time.monotonic()
                seconds.append((c - last_c) / (t - last_t))
                last_c, last_t = c, t
            c1, t1 = mock_total(), time.monotonic()
            ok1 = [worker_metric(port, re.escape(ok_name)) for port in ports]
            leased = [worker_metric(port, re.escape('chunkd_rate_tokens_leased_total{queue="rl"}')) for port in ports]
            leases = [worker_metric(port, re.escape('chunkd_rate_lease_calls_total{queue="rl"}')) for port in ports]
            cmdstats = r.cmd("INFO", "commandstats")
        finally:
            for w, _ in workers:
                if w.returncode is None:
                    self.procs.kill(w)
            self.procs.kill(mock)
            logm.close()
        rate = (c1 - c0) / (t1 - t0)
        per_worker = [int(b - a) for a, b in zip(ok0, ok1)]
        evals = re.search(r"cmdstat_eval:calls=(\d+)", cmdstats)
        err = 100 * (rate - limit) / limit
        log(f"ratelimit: {n_workers} workers, --rate-limit {limit}/s: the mock saw {rate:.1f} calls/s over "
            f"{t1 - t0:.1f} s ({err:+.1f}%); per second min {min(seconds):.0f} max {max(seconds):.0f}; "
            f"items per worker {per_worker}; tokens leased {[int(x) for x in leased]} in "
            f"{[int(x) for x in leases]} round trips")
        self.rows += [
            ("ratelimit", f"{n_workers} workers, --rate-limit {limit}/s: calls/s at the mock over {window} s",
             f"{rate:.1f} ({err:+.1f}%)", f"{limit} +-5%", "met" if abs(err) <= 5 else f"MISSED by {abs(err) - 5:.1f}%"),
            ("ratelimit", "  calls/s, slowest and fastest 1 s of the window",
             f"{min(seconds):.0f} / {max(seconds):.0f}", "", ""),
            ("ratelimit", "  items per worker in the window", "/".join(str(x) for x in per_worker),
             "every worker > 0", "met" if all(x > 0 for x in per_worker) else "MISSED"),
            ("ratelimit", "  tokens per lease round trip (all workers, whole run)",
             f"{sum(leased) / max(sum(leases), 1):.2f}", "", ""),
        ]
        self.sections.append(
            f"ratelimit: {n} items (GET /rl on build/mockapi --threads 2, no delay) enqueued in chunks of 10; "
            f"{n_workers} `chunkd worker --handler http --rate-limit {limit}/s --concurrency 100`; after the first "
            f"call and 3 s more, the mock's request count over {t1 - t0:.1f} s: {c1 - c0} calls = {rate:.2f}/s; "
            f"per-second rates {', '.join(f'{x:.0f}' for x in seconds)}; items ok per worker {per_worker}; tokens "
            f"leased per worker since start {[int(x) for x in leased]} in {[int(x) for x in leases]} lease round trips; EVAL calls in Redis over the whole run "
            f"(commit.lua included): {evals.group(1) if evals else '?'}")
        if not self.a.rate_skip_adapt:
            self.ratelimit_adapt(mockapi)

    # -- case ratelimit, part 2: the adaptation to 429s (issue 14), two runs side by side:
    #    "limit": build/mockapi with a true limit L (limit_rps) and --rate-limit 2L;
    #    "random": 10 % of calls 429 with Retry-After: 1 whatever the load, --rate-limit R.
    def ratelimit_adapt(self, mockapi):
        L, R, n_s = self.a.rate_true_limit, self.a.rate_random_limit, self.a.rate_adapt_seconds
        runs = [("limit", 2 * L, {"delay_ms": 80, "limit_rps": L, "limit_key": "bench"}, L * n_s),
                ("random", R, {"delay_ms": 80, "fail_rate": 0.1, "fail_status": 429, "retry_after": 1},
                 int(R * n_s * 0.9))]
        results = {}
        for name, limit, query, n in runs:
            results[name] = self.ratelimit_adapt_run(mockapi, name, limit, query, n)
        self.ratelimit_adapt_report(results, L, R)

    def ratelimit_adapt_run(self, mockapi, name, limit, query, n):
        import urllib.request
        logm = open(os.path.join(self.tmp, f"ratelimit-{name}.mockapi.log"), "wb")
        mock = self.procs.start([mockapi, "--port", "0", "--threads", "2"], stdout=subprocess.PIPE, stderr=logm)
        line = mock.stdout.readline().decode()
        if not line.startswith("port "):
            raise BenchError(f"mockapi did not start: {line!r}")
        mock_url = f"http://127.0.0.1:{int(line.split()[1])}"
        path = os.path.join(self.tmp, f"ratelimit-{name}-items.jsonl")
        q = json.dumps(query)
        with open(path, "w") as f:
            for i in range(1, n + 1):
                f.write(f'{{"id":{i},"path":"/rl","query":{q}}}\n')
        port = free_port()
        env = child_env(None)
        env["CHUNKD_HTTP_PORT"] = str(port)
        out = os.path.join(self.tmp, f"ratelimit-{name}-results.jsonl")
        samples = []  # (t, shared rate, calls at the mock, 429s by limit_rps at the mock, items done)

        def get(url):
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    return r.read().decode()
            except OSError:
                return None
        try:
            p, logp = self.run_chunkd(f"ratelimit.{name}",
                                      ["run", "--handler", "http", "--base-url", mock_url, "--rate-limit", f"{limit}/s",
                                       "--concurrency", "1000", "--max-attempts", "20", "--http-addr", "127.0.0.1",
                                       "--out", out, path], env, 900)
            t0 = time.monotonic()
            while os.waitid(os.P_PID, p.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:  # running; not reaped
                time.sleep(0.25)
                met, cnt = get(f"http://127.0.0.1:{port}/metrics"), get(mock_url + "/_count")
                if not met or not cnt:
                    continue
                m = re.search(r"^chunkd_rate_limit_current(?:\{[^}]*\})? ([0-9.e+-]+)$", met, re.M)
                d = re.findall(r'^chunkd_items_total\{[^}]*outcome="ok"[^}]*\} ([0-9.e+-]+)$', met, re.M)
                c = json.loads(cnt)
                if m:
                    samples.append((time.monotonic() - t0, float(m.group(1)), c["total"], c["limited"],
                                    sum(float(x) for x in d)))
            code, _, _ = self.procs.wait(p, 900)
            wall = time.monotonic() - t0
            self.check_exit(f"chunkd run ({name})", code, logp)
        finally:
            self.procs.kill(mock)
            logm.close()
        problem = verify_results(out, n, want_status=200)
        if problem:
            raise BenchError(f"ratelimit ({name}): {problem}")
        with open(logp, errors="replace") as f:
            text = f.read()
        return {"n": n, "limit": limit, "wall": wall, "samples": samples, "log": logp,
                "cuts": len(re.findall(r"answered 429 in the last", text)),
                "undone": len(re.findall(r"still answered 429 after the cut", text))}

    @staticmethod
    def _between(samples, t_from, t_to):
        """(seconds, calls, 429s by limit_rps, items done, mean shared rate) between two sample times."""
        inside = [s for s in samples if t_from <= s[0] <= t_to]
        if len(inside) < 2:
            return None
        a, b = inside[0], inside[-1]
        return (b[0] - a[0], b[2] - a[2], b[3] - a[3], b[4] - a[4], sum(s[1] for s in inside) / len(inside))

    def ratelimit_adapt_report(self, res, L, R):
        lim, rnd = res["limit"], res["random"]
        # The true limit: from 10 s on (the convergence allowed) to the last second of the run.
        end = lim["samples"][-1][0] - 1 if lim["samples"] else 0
        w = self._between(lim["samples"], 10, end)
        first_ok = next((s[0] for s in lim["samples"] if s[1] <= 1.15 * L), None)
        if w:
            secs, calls, limited, _, mean_rate = w
            good = (calls - limited) / secs
            share = 100 * limited / max(calls, 1)
            self.rows += [
                ("ratelimit", f"true limit L={L}/s, --rate-limit {2 * L}/s: calls ok/s at the mock from 10 s on",
                 f"{good:.0f} = {good / L:.2f} L", ">= 0.85 L", "met" if good >= 0.85 * L else
                 f"MISSED by {100 * (0.85 * L - good) / (0.85 * L):.0f}%"),
                ("ratelimit", "  429 share of the calls from 10 s on", f"{share:.1f}%", "<= 5%",
                 "met" if share <= 5 else f"MISSED by {share - 5:.1f} points"),
                ("ratelimit", "  shared rate (mean gauge from 10 s on); first at <= 1.15 L",
                 f"{mean_rate:.0f}/s; {first_ok:.1f} s" if first_ok is not None else f"{mean_rate:.0f}/s; never", "",
                 ""),
                ("ratelimit", "  cuts logged (at most one per 5 s is logged)", f"{lim['cuts']}", "", ""),
            ]
        else:
            self.error("ratelimit: the true-limit run was too short to measure from 10 s on")
        # Random 429s: items ok per second over the run's middle (from 2 s on, without the last 2 s), and whole.
        end = rnd["samples"][-1][0] - 2 if rnd["samples"] else 0
        w = self._between(rnd["samples"], 2, end)
        whole = rnd["n"] / rnd["wall"]
        if w:
            secs, calls, _, done, mean_rate = w
            steady = done / secs
            self.rows += [
                ("ratelimit", f"10% random 429 (Retry-After: 1), --rate-limit {R}/s: items ok/s from 2 s on",
                 f"{steady:.0f} = {steady / R:.2f}x", ">= 0.7x", "met" if steady >= 0.7 * R else
                 f"MISSED by {100 * (0.7 * R - steady) / (0.7 * R):.0f}%"),
                ("ratelimit", "  items ok/s over the whole run (start to exit); calls/s from 2 s on",
                 f"{whole:.0f}; {calls / secs:.0f}", "", ""),
                ("ratelimit", "  shared rate (mean gauge from 2 s on); cuts and undone cuts logged",
                 f"{mean_rate:.0f}/s; {rnd['cuts']} / {rnd['undone']}", "", ""),
            ]
        else:
            self.error("ratelimit: the random-429 run was too short to measure")
        dat = os.path.join(self.a.outdir, "ratelimit.dat")
        with open(dat, "w") as f:
            f.write("# t_s shared_rate_per_s calls_per_s ok_calls_per_s share_429_pct  (one block per run: limit, random)\n")
            for name in ("limit", "random"):
                f.write(f"# {name}\n")
                prev = None
                for s in res[name]["samples"]:
                    if prev and s[0] > prev[0]:
                        dt, calls, limited = s[0] - prev[0], s[2] - prev[2], s[3] - prev[3]
                        f.write(f"{s[0]:.2f} {s[1]:.1f} {calls / dt:.1f} {(calls - limited) / dt:.1f} "
                                f"{100 * limited / max(calls, 1):.2f}\n")
                    prev = s
                f.write("\n\n")
        self.plot_ratelimit(dat, L, R)
        self.sections.append(
            f"ratelimit (adaptation): chunkd run --handler http --concurrency 1000 against build/mockapi --threads 2 "
            f"(80 ms per call), /metrics and the mock's /_count sampled every 0.25 s (ratelimit.dat, ratelimit.png).\n"
            f"  true limit: {lim['n']} items, limit_rps={L} (fixed 1 s windows, 429 + Retry-After: 1 above), "
            f"--rate-limit {2 * L}/s: {lim['wall']:.1f} s\n"
            f"  random: {rnd['n']} items, fail_rate=0.1&fail_status=429&retry_after=1, --rate-limit {R}/s: "
            f"{rnd['wall']:.1f} s = {whole:.0f} items/s")

    def plot_ratelimit(self, dat, L, R):
        self.gnuplot("ratelimit", "1000,700", f"""set multiplot layout 2,1
set grid
set key top right
set xlabel "seconds since chunkd run started"
set ylabel "calls/s"
set y2label "429 share (%)"
set ytics nomirror
set y2tics
set y2range [0:100]
set title "true limit L = {L}/s at the API, --rate-limit {2 * L}/s"
plot "{dat}" index 0 using 1:2 with lines lw 2 lc rgb "#1f77b4" title "shared rate (chunkd_rate_limit_current)", \
     "{dat}" index 0 using 1:4 with lines lw 1 lc rgb "#2ca02c" title "calls answered ok/s at the API", \
     {L} with lines dt 2 lc rgb "gray" title "L", {0.85 * L} with lines dt 3 lc rgb "gray" title "0.85 L", \
     "{dat}" index 0 using 1:5 axes x1y2 with lines lw 1 lc rgb "#d62728" title "429 share (right axis)"
set title "10 % random 429s (Retry-After: 1), --rate-limit {R}/s"
unset y2label
unset y2tics
plot "{dat}" index 1 using 1:2 with lines lw 2 lc rgb "#1f77b4" title "shared rate (chunkd_rate_limit_current)", \
     "{dat}" index 1 using 1:3 with lines lw 1 lc rgb "#2ca02c" title "calls/s at the API", \
     {R} with lines dt 2 lc rgb "gray" title "--rate-limit", {0.7 * R} with lines dt 3 lc rgb "gray" title "0.7 x"
unset multiplot
""")

    # -- case flaky: a flaky API against the clean one, side by side (issue 14)
    # Each variant is (name, the mock's query for every item, extra chunkd flags, target ratio to clean or None);
    # a new failure mode is one more variant here. Runs alternate (clean, variant, ..., clean, variant, ...) so
    # that drifting machine load hits all alike; the figures are medians.
    FLAKY_VARIANTS = [
        ("clean", {}, [], None),
        ("10% 500s", {"fail_rate": 0.1, "fail_status": 500}, [], 0.85),
    ]

    def start_mockapi(self, label):
        mockapi = os.path.join(os.path.dirname(self.a.chunkd), "mockapi")
        if not os.access(mockapi, os.X_OK):
            raise BenchError(f"{mockapi} not found (make build/mockapi)")
        logm = open(os.path.join(self.tmp, f"{label}.mockapi.log"), "wb")
        mock = self.procs.start([mockapi, "--port", "0", "--threads", "2"], stdout=subprocess.PIPE, stderr=logm)
        logm.close()
        line = mock.stdout.readline().decode()
        if not line.startswith("port "):
            raise BenchError(f"mockapi did not start: {line!r}")
        return mock, f"http://127.0.0.1:{int(line.split()[1])}"

    def flaky_run(self, label, path, n, mock_url, flags):
        """One `chunkd run --handler http` over path against the mock; the result file is read as it grows, and
        the steady-state rate is the results between 20 % and 80 % of n over the time between them (start-up and
        the tail of the last retries left out)."""
        import urllib.request

        def mock_total():
            with urllib.request.urlopen(mock_url + "/_count", timeout=5) as r:
                return json.loads(r.read())["total"]

        out = os.path.join(self.tmp, "flaky.out")
        if os.path.exists(out):
            os.unlink(out)
        calls0 = mock_total()
        p, logp = self.run_chunkd(f"flaky.{label}",
                                  ["run", "--handler", "http", "--base-url", mock_url, "--concurrency",
                                   str(self.a.flaky_conc), "--max-attempts", "10"] + flags + [path, "--out", out],
                                  child_env(), 600)
        marks, count, f = {}, 0, None
        fd = os.pidfd_open(p.pid)
        try:
            while True:
                done = bool(select.select([fd], [], [], 0.02)[0])
                if f is None and os.path.exists(out):
                    f = open(out, "rb")
                if f is not None:
                    count += f.read().count(b"\n")
                t = time.monotonic() - p.t_start
                for q in (0.2, 0.8):
                    if q not in marks and count >= q * n:
                        marks[q] = t
                if done or t > 600:
                    break
        finally:
            os.close(fd)
            if f is not None:
                f.close()
        code, ru, wall = self.procs.wait(p, 600)
        self.check_exit(f"chunkd run ({label})", code, logp)
        problem = verify_results(out, n)
        if problem:
            raise BenchError(f"flaky {label}: {problem}")
        calls = mock_total() - calls0
        steady = 0.6 * n / (marks[0.8] - marks[0.2]) if marks.get(0.8, 0) > marks.get(0.2, 0) else 0.0
        log(f"flaky: {label:10} {wall:6.2f} s  steady {steady:7,.0f} items/s  {calls} calls for {n} items")
        return {"wall_s": wall, "steady_per_s": steady, "calls": calls, "cpu_s": ru.ru_utime + ru.ru_stime}

    def case_flaky(self):
        n, reps, delay = self.a.flaky_items, self.a.flaky_reps, 80
        mock, mock_url = self.start_mockapi("flaky")
        try:
            paths = {}
            for name, query, _, _ in self.FLAKY_VARIANTS:
                path = os.path.join(self.tmp, f"flaky-{len(paths)}.jsonl")
                q = json.dumps(dict({"delay_ms": delay}, **query))
                with open(path, "w") as f:
                    f.write("".join(f'{{"id":{i},"path":"/flaky","query":{q}}}\n' for i in range(1, n + 1)))
                paths[name] = path
            runs = {name: [] for name, _, _, _ in self.FLAKY_VARIANTS}
            for rep in range(reps):
                for name, _, flags, _ in self.FLAKY_VARIANTS:
                    runs[name].append(self.flaky_run(name, paths[name], n, mock_url, flags))
        finally:
            self.procs.kill(mock)
        med = {name: median_run(r) for name, r in runs.items()}
        clean = med["clean"]
        det = [f"flaky: {n} items of {delay} ms at build/mockapi, `chunkd run --handler http --concurrency "
               f"{self.a.flaky_conc} --max-attempts 10`, {reps} alternating run(s) of each variant, medians; steady "
               f"= items/s between 20 % and 80 % of the results (start-up and the last retries' tail left out)"]
        for name, query, flags, target in self.FLAKY_VARIANTS:
            m = med[name]
            extra = 100 * (m["calls"] - n) / n
            self.rows.append(("flaky", f"{name}: steady items/s ({fmt_int(n)} x {delay} ms, c={self.a.flaky_conc})",
                              f"{fmt_int(m['steady_per_s'])}", "", ""))
            self.rows.append(("flaky", "  wall / calls per item", f"{m['wall_s']:.2f} s / {m['calls'] / n:.3f}",
                              "", ""))
            if target is not None:
                ratio = m["steady_per_s"] / clean["steady_per_s"] if clean["steady_per_s"] else 0.0
                self.rows.append(("flaky", f"  {name} / clean, steady items/s", f"{ratio:.2f}x",
                                  f">= {target}x", self.verdict(ratio, target, higher=True)))
            steadies = ", ".join("%.0f" % r["steady_per_s"] for r in runs[name])
            walls = ", ".join("%.2f" % r["wall_s"] for r in runs[name])
            how = (json.dumps(query) if query else "none") + ("; flags " + " ".join(flags) if flags else "")
            det.append(f"  {name} (query {how}): steady {steadies} items/s; wall {walls} s; {m['calls']:.0f} calls "
                       f"({extra:+.1f}% over the items); cpu {m['cpu_s']:.1f} s")
        self.sections.append("\n".join(det))

    # -- one worker run against the shared redis: enqueue, then worker + collect at once
    # handler: the worker's handler flags; http=True: items {"id":N,"path":"/x"} (their file is
    # removed after the run), results checked for status 200; on_worker(pid) is called once
    # with the pid of the chunkd worker itself (not its trampoline) while it runs.
    def worker_run(self, label, queue, n, concurrency, collect_out, handler=("--handler", "sleep"),
                   http=False, on_worker=None, binary=None, redis=None, redis_url=None, redis_args=(),
                   worker_url=None, extra_env=None):
        """redis: another Redis than the private one (its unix socket is the harness's own connection);
        redis_url: the address chunkd is given (default: that socket); redis_args: flags of every chunkd command;
        worker_url: the worker's address when not redis_url (enqueue and collect keep redis_url);
        extra_env: more environment for every chunkd command."""
        r = redis or self.get_redis()
        r.cmd("FLUSHALL")
        path = os.path.join(self.tmp, f"{'http-' if http else ''}items-{n}.jsonl")
        if not os.path.exists(path):
            (gen_http_items if http else gen_items)(path, n)
        env = child_env(redis_url or r.url)
        env.update(extra_env or {})
        redis_args = list(redis_args)

        p, logp = self.run_chunkd(f"{label}.enqueue", ["enqueue", "--queue", queue, path] + redis_args, env, 600)
        code, ru, t_enq = self.procs.wait(p, 600)
        self.check_exit("chunkd enqueue", code, logp)
        st = r.stats(queue)
        if st.get("enqueued") != n:
            raise BenchError(f"chunkd enqueue: stats enqueued={st.get('enqueued')} for {n} items")

        ideal = concurrency * 1000 / SLEEP_MS
        timeout = 60 + 5 * n / min(ideal, 100000)
        if os.path.exists(collect_out):
            os.unlink(collect_out)
        redis_cpu0 = cpu_ticks_s(r.proc.pid)
        pc, logc = self.run_chunkd(f"{label}.collect", ["collect", "--queue", queue, "--until-done",
                                                        "--out", collect_out] + redis_args, env, timeout)
        pw, logw = self.run_chunkd(f"{label}.worker",
                                   ["worker", "--queue", queue] + list(handler) +
                                   ["--concurrency", str(concurrency), "--exit-when-empty"] + redis_args,
                                   child_env(worker_url) if worker_url else env, timeout, binary=binary)
        # Watch the `done` counter (10 polls/s) to tell work time from exit time.
        # Also read the worker's VmHWM (peak RSS of its own memory image) as a cross-check
        # of the wait4 figure; the last read is at most 0.1 s before it exits.
        t_all_done = None
        hwm_kib = 0
        try:
            fd = os.pidfd_open(pw.pid)
            while not select.select([fd], [], [], 0.1)[0]:
                if time.monotonic() - pw.t_start > timeout:
                    break
                for pid in procmem.tree_pids(pw.pid)[1:]:
                    hwm_kib = max(hwm_kib, procmem.hwm_kib(pid))
                    if on_worker:
                        on_worker(pid)
                        on_worker = None
                if t_all_done is None and r.stats(queue).get("done", 0) >= n:
                    t_all_done = time.monotonic()
            os.close(fd)
            code, ru, wall = self.procs.wait(pw, timeout)
            redis_cpu = cpu_ticks_s(r.proc.pid) - redis_cpu0
            self.check_exit("chunkd worker", code, logw)
            t_all_done = (t_all_done - pw.t_fork) if t_all_done is not None else (
                wall if r.stats(queue).get("done", 0) >= n else None)
            ccode, cru, cwall = self.procs.wait(pc, timeout)
            self.check_exit("chunkd collect", ccode, logc)
        finally:
            for p in (pw, pc):
                if p.returncode is None:
                    self.procs.kill(p)
        problem = verify_results(collect_out, n, want_status=200 if http else None)
        extra = {}
        if http:
            os.unlink(path)
            extra = http_call_ms(collect_out, concurrency)
        st = r.stats(queue)
        mem = r.info_memory()
        os.unlink(collect_out)
        if problem:
            raise BenchError(f"chunkd collect: {problem}; stats {st}")
        m = rusage_dict(ru, wall)
        m.update(n=n, concurrency=concurrency, items_per_s=n / wall, enqueue_s=t_enq,
                 enqueue_per_s=n / t_enq, collect_wall_s=cwall, collect_maxrss_mib=cru.ru_maxrss / 1024,
                 collect_cpu_s=cru.ru_utime + cru.ru_stime, all_done_s=t_all_done,
                 redis_peak_mib=int(mem.get("used_memory_peak", 0)) / MIB, stats=st,
                 vmhwm_sampled_mib=hwm_kib / 1024,
                 redis_cpu_pct=100 * redis_cpu / wall if wall > 0 else 0.0,
                 collect_cpu_pct=100 * (cru.ru_utime + cru.ru_stime) / cwall if cwall > 0 else 0.0,
                 done_per_s=(n / t_all_done) if t_all_done else 0.0,
                 ideal_per_s=ideal, **extra)
        done = f"{t_all_done:.2f}" if t_all_done is not None else "?"
        log(f"{label}: {fmt_int(n)} items, concurrency {concurrency}: worker {wall:.2f} s "
            f"({fmt_int(m['items_per_s'])} items/s, all done at {done} s), "
            f"maxrss {m['maxrss_mib']:.1f} MiB (VmHWM {m['vmhwm_sampled_mib']:.1f}), cpu {m['cpu_pct']:.0f}% "
            f"(redis-server {m['redis_cpu_pct']:.0f}%, collect {m['collect_cpu_pct']:.0f}%); "
            f"enqueue {t_enq:.2f} s; "
            f"collect {cwall:.2f} s, maxrss {m['collect_maxrss_mib']:.1f} MiB")
        return m

    # -- case b
    def case_million(self):
        big, small = self.a.million, self.a.compare
        runs = {big: [], small: []}
        for rep in range(1, self.a.million_reps + 1):
            for n in (big, small):
                runs[n].append(self.worker_run(f"million-{n} {rep}/{self.a.million_reps}", "bench", n,
                                               10000, os.path.join(self.tmp, "million.collect.out")))
        res = {n: median_run(rs) for n, rs in runs.items()}
        b, s = res[big], res[small]
        growth = 100 * (b["maxrss_mib"] - s["maxrss_mib"]) / s["maxrss_mib"]
        # The items/s and growth targets are stated for 1,000,000 vs 100,000 items.
        sized = big == 1000000 and small == 100000
        na = "n/a (target is for 1,000,000 vs 100,000 items)"
        limit_mib = 150 * MB / MIB
        self.rows += [
            ("million", f"worker items/s, {fmt_int(big)} items, c=10000", fmt_int(b["items_per_s"]),
             ">= 70,000", self.verdict(b["items_per_s"], 70000, higher=True) if sized else na),
            ("million", f"  worker wall / all items done at", f"{b['wall_s']:.2f} s / "
             + (f"{b['all_done_s']:.2f} s" if b["all_done_s"] is not None else "?"), "", ""),
            ("million", f"  items/s to the last item done (not to exit)", fmt_int(b["done_per_s"]), "", ""),
            ("million", f"  CPU: worker / redis-server / collect", f"{b['cpu_pct']:.0f}% / "
             f"{b['redis_cpu_pct']:.0f}% / {b['collect_cpu_pct']:.0f}%", "of one core", ""),
            ("million", f"worker items/s, {fmt_int(small)} items, c=10000", fmt_int(s["items_per_s"]), "", ""),
            ("million", f"worker peak RSS, {fmt_int(big)} items", f"{b['maxrss_mib']:.1f} MiB",
             "<= 150 MB (143.1 MiB)", self.verdict(b["maxrss_mib"], limit_mib, higher=False)),
            ("million", f"worker peak RSS, {fmt_int(small)} items", f"{s['maxrss_mib']:.1f} MiB",
             "<= 150 MB (143.1 MiB)", self.verdict(s["maxrss_mib"], limit_mib, higher=False)),
            ("million", f"  cross-check: sampled VmHWM {fmt_int(big)} / {fmt_int(small)}",
             f"{b['vmhwm_sampled_mib']:.1f} / {s['vmhwm_sampled_mib']:.1f} MiB", "", ""),
            ("million", f"peak RSS growth {fmt_int(small)} -> {fmt_int(big)}", f"{growth:+.1f}%",
             "within 10%", na if not sized else
             "met" if abs(growth) <= 10 else f"MISSED by {abs(growth) - 10:.1f} points"),
            ("million", f"enqueue items/s, {fmt_int(big)} items", fmt_int(b["enqueue_per_s"]), "", ""),
            ("million", f"collect wall / peak RSS, {fmt_int(big)}",
             f"{b['collect_wall_s']:.2f} s / {b['collect_maxrss_mib']:.1f} MiB", "", ""),
            ("million", f"redis used_memory_peak, {fmt_int(big)}", f"{b['redis_peak_mib']:.0f} MiB", "", ""),
        ]
        det = ["million: one worker (--concurrency 10000 --exit-when-empty) with collect running "
               "at the same time; items/s = items / worker wall time (start to exit); peak RSS = "
               f"ru_maxrss of the worker from wait4; table figures are medians of {self.a.million_reps} "
               "alternating run(s) of each size"]
        for n in (big, small):
            for i, m in enumerate(runs[n], 1):
                det.append(f"  {n:>9,} items, run {i}: " + json.dumps(
                    {k: (round(v, 3) if isinstance(v, float) else v) for k, v in m.items()}))
        self.sections.append("\n".join(det))

    # -- Redis in another zone: the worker reaches Redis through tests/bench/delayproxy.c
    def case_latency(self):
        proxy_bin = os.path.join(os.path.dirname(self.a.chunkd), "delayproxy")
        if not os.access(proxy_bin, os.X_OK):
            raise BenchError(f"{proxy_bin} not found (make build/delayproxy)")
        r = self.get_redis()
        n, c = self.a.latency_items, 10000
        runs = {rtt: [] for rtt in self.a.latency_rtts}
        for rep in range(1, self.a.latency_reps + 1):
            for rtt in self.a.latency_rtts:
                url, proxy = r.tcp_url, None
                if rtt > 0:
                    port = free_port()
                    proxy = self.procs.start([proxy_bin, str(port), "127.0.0.1", str(r.tcp_port), str(rtt)],
                                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                    wait_tcp(port, 10)
                    url = f"redis://127.0.0.1:{port}"
                try:
                    m = self.worker_run(f"latency-{rtt}ms {rep}/{self.a.latency_reps}", "latency", n, c,
                                        os.path.join(self.tmp, "latency.collect.out"), worker_url=url)
                finally:
                    if proxy:
                        self.procs.kill(proxy)
                runs[rtt].append(m)
        res = {rtt: median_run(rs) for rtt, rs in runs.items()}
        direct = res[self.a.latency_rtts[0]]["items_per_s"]
        targets = {2: 0.9, 10: 0.8}
        for rtt in self.a.latency_rtts:
            m = res[rtt]
            ratio = m["items_per_s"] / direct
            want = targets.get(rtt)
            self.rows.append(("latency", f"worker items/s, Redis round trip +{rtt} ms ({fmt_int(n)} items, c={c})",
                              fmt_int(m["items_per_s"]) + (f" ({ratio:.2f}x direct)" if rtt else " (direct TCP)"),
                              f">= {want}x direct" if want else "",
                              self.verdict(ratio, want, higher=True) if want else ""))
        det = [f"latency: one sleep worker through tests/bench/delayproxy.c (each direction delayed by half the "
               f"round trip; the proxy runs on the same 2 cores); enqueue and collect on the unix socket; medians "
               f"of {self.a.latency_reps} alternating run(s)"]
        for rtt in self.a.latency_rtts:
            for i, m in enumerate(runs[rtt], 1):
                det.append(f"  +{rtt} ms, run {i}: {fmt_int(m['items_per_s'])} items/s, worker cpu {m['cpu_pct']:.0f}%, "
                           f"redis {m['redis_cpu_pct']:.0f}%, maxrss {m['maxrss_mib']:.1f} MiB")
        self.sections.append("\n".join(det))

    # -- tls: the million case over rediss:// against the same over plain TCP, same server, alternating
    def tls_redis(self):
        """A private redis-server with a plain TCP port and a TLS port (certificates for 127.0.0.1 from a CA made
        here with openssl). Returns (redis, plain url, tls url, CA file)."""
        d = os.path.join(self.tmp, "tls-certs")
        os.makedirs(d, exist_ok=True)
        ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        with open(os.path.join(d, "server.ext"), "w") as f:
            f.write("subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n")
        for args in (["req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=bench ca",
                      "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign"],
                     ["req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1"],
                     ["x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                      "-days", "2", "-extfile", "server.ext", "-out", "server.pem"]):
            p = subprocess.run(["openssl", *args], cwd=d, capture_output=True, text=True)
            if p.returncode != 0:
                raise BenchError(f"openssl {args[0]}: {p.stderr.strip()[-300:]}")
        plain, tls = free_port(), free_port()
        r = Redis(self.procs, self.tmp, name="tls-redis", extra_args=(
            "--port", str(plain), "--bind", "127.0.0.1", "--tls-port", str(tls),
            "--tls-cert-file", os.path.join(d, "server.pem"), "--tls-key-file", os.path.join(d, "server.key"),
            "--tls-ca-cert-file", os.path.join(d, "ca.pem"), "--tls-auth-clients", "no"))
        return r, f"redis://127.0.0.1:{plain}", f"rediss://127.0.0.1:{tls}", os.path.join(d, "ca.pem")

    def case_tls(self):
        n, reps = self.a.million, self.a.million_reps
        r, plain_url, tls_url, ca = self.tls_redis()
        variants = {"plain": (plain_url, ()), "tls": (tls_url, ("--redis-ca-file", ca))}
        runs = {v: [] for v in variants}
        try:
            for rep in range(1, reps + 1):
                order = list(variants) if rep % 2 else list(reversed(variants))  # take turns to go first
                for v in order:
                    url, args = variants[v]
                    runs[v].append(self.worker_run(f"tls-{v}-{n} {rep}/{reps}", "bench", n, 10000,
                                                   os.path.join(self.tmp, "tls.collect.out"), redis=r,
                                                   redis_url=url, redis_args=args))
        finally:
            r.close()
        res = {v: median_run(rs) for v, rs in runs.items()}
        p, t = res["plain"], res["tls"]
        ratio = t["items_per_s"] / p["items_per_s"]
        self.rows += [
            ("tls", f"worker items/s over TLS / plain TCP, {fmt_int(n)} items, c=10000",
             f"{fmt_int(t['items_per_s'])} / {fmt_int(p['items_per_s'])}", "", ""),
            ("tls", "  TLS / plain", f"{ratio:.2f}x", ">= 0.8x", self.verdict(ratio, 0.8, higher=True)),
            ("tls", "  worker CPU, TLS / plain", f"{t['cpu_pct']:.0f}% / {p['cpu_pct']:.0f}%", "of one core", ""),
            ("tls", "  worker peak RSS, TLS / plain", f"{t['maxrss_mib']:.1f} / {p['maxrss_mib']:.1f} MiB", "", ""),
            ("tls", "  enqueue items/s, TLS / plain",
             f"{fmt_int(t['enqueue_per_s'])} / {fmt_int(p['enqueue_per_s'])}", "", ""),
            ("tls", "  collect wall, TLS / plain", f"{t['collect_wall_s']:.2f} / {p['collect_wall_s']:.2f} s", "", ""),
        ]
        det = [f"tls: the million case (one worker, --concurrency 10000 --exit-when-empty, collect alongside) against "
               f"one redis-server over TCP on loopback, plain (redis://) and TLS (rediss://, --redis-ca-file), "
               f"alternating, each going first in turn; medians of {reps} run(s) of each"]
        for v in variants:
            for i, m in enumerate(runs[v], 1):
                det.append(f"  {v}, run {i}: " + json.dumps(
                    {k: (round(x, 3) if isinstance(x, float) else x) for k, x in m.items()}))
        self.sections.append("\n".join(det))

    # -- case replicas: the cost of --redis-min-replicas 1 (WAIT after each enqueue batch and commit round)
    def case_replicas(self):
        n, reps = self.a.replicas_items, self.a.replicas_reps
        r = self.get_redis()
        port = r.tcp_port  # a replica needs TCP
        rdir = os.path.join(self.tmp, "replica")
        os.makedirs(rdir, exist_ok=True)
        with open(os.path.join(rdir, "redis.log"), "wb") as rlog:
            replica = self.procs.start(["redis-server", "--port", "0", "--unixsocket", os.path.join(rdir, "redis.sock"),
                                        "--replicaof", "127.0.0.1", str(port),
                                        "--save", "", "--appendonly", "no", "--dir", rdir, "--daemonize", "no"],
                                       stdout=rlog, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 20
            while "connected_slaves:1" not in r.cmd("INFO", "replication"):
                if time.monotonic() > deadline or replica.poll() is not None:
                    raise BenchError(f"the replica did not attach within 20 s (see {rdir}/redis.log)")
                time.sleep(0.05)
            runs = {0: [], 1: []}
            for rep in range(1, reps + 1):
                for mr in ((0, 1) if rep % 2 else (1, 0)):  # taking turns to go first
                    runs[mr].append(self.worker_run(
                        f"replicas-{mr} {rep}/{reps}", "bench", n, 10000,
                        os.path.join(self.tmp, "replicas.collect.out"),
                        extra_env={"CHUNKD_REDIS_MIN_REPLICAS": str(mr)}))
        finally:
            self.procs.kill(replica)
        off, on = median_run(runs[0]), median_run(runs[1])
        cost = lambda k: f"{100 * (on[k] - off[k]) / off[k]:+.1f}%"
        self.rows += [
            ("replicas", f"enqueue items/s, {fmt_int(n)} items: min-replicas 0 / 1",
             f"{fmt_int(off['enqueue_per_s'])} / {fmt_int(on['enqueue_per_s'])} ({cost('enqueue_per_s')})", "", ""),
            ("replicas", f"worker items/s, c=10000: min-replicas 0 / 1",
             f"{fmt_int(off['items_per_s'])} / {fmt_int(on['items_per_s'])} ({cost('items_per_s')})", "", ""),
            ("replicas", "  CPU: redis-server, min-replicas 0 / 1",
             f"{off['redis_cpu_pct']:.0f}% / {on['redis_cpu_pct']:.0f}%", "", ""),
        ]
        det = [f"replicas: the private redis-server with one replica (--replicaof, loopback TCP); enqueue, then one "
               f"worker (--concurrency 10000 --exit-when-empty) with collect running, {n} items x {SLEEP_MS} ms, "
               f"with CHUNKD_REDIS_MIN_REPLICAS 0 and 1 taking turns; medians of {reps} run(s) of each"]
        for mr in (0, 1):
            for i, m in enumerate(runs[mr], 1):
                det.append(f"  min-replicas {mr}, run {i}: enqueue {m['enqueue_s']:.2f} s, worker {m['wall_s']:.2f} s "
                           f"({fmt_int(m['items_per_s'])} items/s), redis-server cpu {m['redis_cpu_pct']:.0f}%")
        self.sections.append("\n".join(det))

    # -- case rediscpu: redis-server's own CPU time per item, phase by phase (issue 19, "Sizing from measurements")
    REDISCPU_PHASES = ("enqueue", "worker", "collect")
    REDISCPU_GOAL_US = 5.0  # per item, enqueue to collect: one Redis core carries 200,000 items/s

    def rediscpu_run(self, label, binary, path, n, n_workers):
        """Enqueue, then n_workers workers at once (--exit-when-empty), then collect --until-done, one after
        another against a fresh private redis-server, so that each phase's Redis CPU is its own. Returns
        {"us": {phase: redis us per item}, "wall": {phase: s}, "items_per_s": of the worker phase (first start to
        last exit), "shares": items each worker fetched (its "fetched chunk" debug lines)}."""
        r = Redis(self.procs, self.tmp, name="rediscpu-redis", extra_args=("--port", "0"))  # unix socket only
        env = child_env(r.url)
        out = os.path.join(self.tmp, "rediscpu.collect.out")
        if os.path.exists(out):
            os.unlink(out)
        timeout = 300 + 20 * n / 100000  # generous: only a hang should meet it
        worker = ["worker", "--queue", "q", "--handler", "sleep", "--concurrency", str(self.a.rediscpu_concurrency),
                  "--exit-when-empty", "--log-level", "debug",
                  # The results wait in the stream until the collect phase: no backlog cap may pause the workers.
                  "--max-results-backlog", "0", "--max-results-backlog-bytes", "0"]
        cmds = {"enqueue": [["enqueue", "--queue", "q", path]], "worker": [worker] * n_workers,
                "collect": [["collect", "--queue", "q", "--until-done", "--out", out]]}
        res = {"us": {}, "wall": {}}
        procs = []
        try:
            for phase in self.REDISCPU_PHASES:
                cpu0, t0 = r.cpu_s(), time.monotonic()
                procs = [self.run_chunkd(f"{label}.{phase}{i + 1}", args, env, timeout, binary=binary, measure=False)
                         for i, args in enumerate(cmds[phase])]
                for p, logp in procs:
                    code, _, _ = self.procs.wait(p, timeout)
                    self.check_exit(f"chunkd {phase}", code, logp)
                res["wall"][phase] = time.monotonic() - t0
                res["us"][phase] = (r.cpu_s() - cpu0) / n * 1e6
            res["items_per_s"] = n / res["wall"]["worker"]
            res["shares"] = [fetched_items(os.path.join(self.tmp, f"{label}.worker{i + 1}.log"))
                             for i in range(n_workers)]
        finally:
            for p, _ in procs:
                if p.returncode is None:
                    self.procs.kill(p)
            r.close()
        problem = verify_results(out, n)
        os.unlink(out)
        if problem:
            raise BenchError(f"rediscpu {label}: chunkd collect: {problem}")
        if sum(res["shares"]) < n:
            raise BenchError(f"rediscpu {label}: the workers' debug logs name {sum(res['shares'])} items fetched for "
                             f"{n} (no \"fetched chunk ... (N items\" lines?)")
        res["us"]["total"] = sum(res["us"][ph] for ph in self.REDISCPU_PHASES)
        return res

    def case_rediscpu(self):
        n, reps, counts = self.a.rediscpu_items, self.a.rediscpu_reps, self.a.rediscpu_workers
        path = os.path.join(self.tmp, f"items-{n}.jsonl")  # the same file as worker_run's: made once, reused
        if not os.path.exists(path):
            gen_items(path, n)
        bins = [("chunkd", self.a.chunkd)] + ([("baseline", self.a.baseline)] if self.a.baseline else [])
        runs = {(label, w): [] for w in counts for label, _ in bins}
        for rep in range(1, reps + 1):
            for i, w in enumerate(counts):
                for label, binary in bins if (rep + i) % 2 else bins[::-1]:  # each build goes first in turn
                    m = self.rediscpu_run(f"rediscpu.{label}.{w}w.{rep}", binary, path, n, w)
                    m["load"] = loadavg().split()[0]
                    runs[(label, w)].append(m)
                    log(f"rediscpu {label}, {w} worker(s), run {rep}/{reps}: redis us/item "
                        + "  ".join(f"{ph} {m['us'][ph]:.2f} ({m['wall'][ph]:.1f} s)" for ph in self.REDISCPU_PHASES)
                        + f"  total {m['us']['total']:.2f}; worker phase {fmt_int(m['items_per_s'])} items/s, "
                        f"items each {', '.join(fmt_int(x) for x in m['shares'])}; load {m['load']}")
        med = lambda rs, f: statistics.median(f(m) for m in rs)
        goal = self.REDISCPU_GOAL_US
        for w in counts:
            for label, binary in bins:
                rs = runs[(label, w)]
                us = {ph: med(rs, lambda m: m["us"][ph]) for ph in self.REDISCPU_PHASES + ("total",)}
                who = "" if label == "chunkd" else "baseline: "
                self.rows += [
                    ("rediscpu", f"{who}redis us/item, {w} worker(s): enqueue / worker / collect",
                     " / ".join(f"{us[ph]:.2f}" for ph in self.REDISCPU_PHASES), "", ""),
                    ("rediscpu", f"  {who}total redis us/item, {fmt_int(n)} items, {w} worker(s)",
                     f"{us['total']:.2f}", f"<= {goal:g} us/item", self.verdict(us["total"], goal, higher=False)),
                    ("rediscpu", f"  {who}worker phase items/s, {w} worker(s)",
                     fmt_int(med(rs, lambda m: m["items_per_s"])), "", ""),
                ]
                if w > 1:
                    even = n / w
                    lo = min(min(m["shares"]) for m in rs) / even
                    hi = max(max(m["shares"]) for m in rs) / even
                    self.rows.append(("rediscpu", f"  {who}items per worker / even share, lowest / highest of "
                                      f"{len(rs)} run(s)", f"{lo:.2f} / {hi:.2f}", "", ""))
            if self.a.baseline:
                new, base = runs[("chunkd", w)], runs[("baseline", w)]
                ratio = lambda f: med(new, f) / med(base, f)
                self.rows += [
                    ("rediscpu", f"  total redis us/item, chunkd / baseline, {w} worker(s)",
                     f"{ratio(lambda m: m['us']['total']):.2f}x", "", ""),
                    ("rediscpu", f"  worker phase items/s, chunkd / baseline, {w} worker(s)",
                     f"{ratio(lambda m: m['items_per_s']):.2f}x", "", ""),
                ]
        det = [f"rediscpu: redis-server's own CPU (INFO cpu: used_cpu_user + used_cpu_sys) before and after each "
               f"phase, divided by the items: enqueue {fmt_int(n)} items x {SLEEP_MS} ms, then N workers at once "
               f"(--concurrency {self.a.rediscpu_concurrency} --exit-when-empty each, no collector), then collect "
               f"--until-done; one after another, a fresh private redis-server (unix socket) for each run; "
               + (f"baseline {self.a.baseline}, the builds taking turns to go first; " if self.a.baseline else "")
               + f"medians of {reps} run(s); items/s = items / the worker phase's wall time (first start to last "
               f"exit); items per worker from each worker's \"fetched chunk\" debug lines"]
        for (label, w), rs in runs.items():
            for i, m in enumerate(rs, 1):
                det.append(f"  {label}, {w} worker(s), run {i}: " + "  ".join(
                    f"{ph} {m['us'][ph]:.2f} us ({m['wall'][ph]:.1f} s)" for ph in self.REDISCPU_PHASES)
                    + f"  total {m['us']['total']:.2f} us; {fmt_int(m['items_per_s'])} items/s; items each "
                    + ", ".join(fmt_int(x) for x in m["shares"]) + f"; load {m['load']}")
        self.sections.append("\n".join(det))

    # -- case c
    def case_sweep(self):
        rows = []
        for c in self.a.sweep:
            n = max(self.a.sweep_min, self.a.sweep_per_c * c)
            try:
                m = self.worker_run(f"sweep-{c}", "sweep", n, c,
                                    os.path.join(self.tmp, "sweep.collect.out"))
            except BenchError as e:
                self.error(f"sweep c={c}: {e}")
                continue
            rows.append(m)
        self.sweep_rows = rows
        if not rows:
            return
        dat = os.path.join(self.a.outdir, "throughput.dat")
        with open(dat, "w") as f:
            f.write(f"# chunkd worker throughput vs --concurrency ({SLEEP_MS} ms sleep handler, "
                    f"one worker, collect running alongside); {self.host_line()}\n")
            f.write("# items_per_s = items / worker wall (start to exit); done_per_s = items / time "
                    "until the stats hash showed every item done (polled every 0.1 s)\n")
            f.write("# concurrency items worker_s items_per_s ideal_items_per_s peak_rss_mib cpu_pct "
                    "all_done_s done_per_s redis_cpu_pct\n")
            for m in rows:
                f.write(f"{m['concurrency']} {m['n']} {m['wall_s']:.3f} {m['items_per_s']:.0f} "
                        f"{m['ideal_per_s']:.0f} {m['maxrss_mib']:.1f} {m['cpu_pct']:.0f} "
                        f"{m['all_done_s'] or 0:.3f} {m['done_per_s']:.0f} {m['redis_cpu_pct']:.0f}\n")
        log(f"wrote {dat}")
        self.plot(dat)
        for m in rows:
            pct = 100 * m["items_per_s"] / m["ideal_per_s"]
            note = f"{pct:.0f}% of ideal"
            if pct > 105:
                note += " (above ideal: more than --concurrency items were in flight)"
            self.rows.append(("sweep", f"items/s at concurrency {m['concurrency']:>5} "
                              f"({fmt_int(m['n'])} items)", fmt_int(m["items_per_s"]),
                              f"ideal {fmt_int(m['ideal_per_s'])}", note))

    # -- case d: the http handler against nginx, wrk as the yardstick
    def wrk_run(self, label, url, c, seconds):
        logp = os.path.join(self.tmp, f"{label.replace(' ', '_').replace('/', 'of')}.wrk.log")
        cpu0, opens0 = self.nginx.cpu_s(), tcp_active_opens()
        with open(logp, "wb") as lf:
            p = self.procs.start(["wrk", "-t2", "-c", str(c), "-d", f"{seconds}s", url],
                                 env=child_env(), stdout=lf, stderr=subprocess.STDOUT)
        code, ru, wall = self.procs.wait(p, seconds + 60)
        nginx_cpu = self.nginx.cpu_s() - cpu0
        if code != 0:
            raise BenchError(f"wrk exited with status {code}\n{tail(logp)}")
        with open(logp, errors="replace") as f:
            w = parse_wrk(f.read())
        w.update(wall_s=wall, cpu_pct=100 * (ru.ru_utime + ru.ru_stime) / wall,
                 cpu_us_per_req=1e6 * (ru.ru_utime + ru.ru_stime) / max(1, w["requests"]),
                 tcp_opens=tcp_active_opens() - opens0,
                 nginx_cpu_pct=100 * nginx_cpu / wall)
        log(f"{label}: wrk -t2 -c {c} -d {seconds}s: {fmt_int(w['req_per_s'])} req/s, latency avg "
            f"{w['latency_avg']} max {w['latency_max']}, {w['socket_errors']} socket errors, "
            f"{w['non_2xx']} non-2xx; cpu wrk {w['cpu_pct']:.0f}%, nginx {w['nginx_cpu_pct']:.0f}%")
        return w

    def floor_run(self, label, url, c, seconds):
        """curlfloor (libcurl alone, driven as the http handler drives it: tests/bench/curlfloor.c)
        keeping c GETs in flight for `seconds`, as wrk does."""
        logp = os.path.join(self.tmp, f"{label.replace(' ', '_').replace('/', 'of')}.curlfloor.log")
        cpu0, opens0 = self.nginx.cpu_s(), tcp_active_opens()
        with open(logp, "wb") as lf:
            p = self.procs.start([self.floor_bin, url, str(c), str(seconds), str(FLOOR_THREADS)],
                                 env=child_env(), stdout=subprocess.PIPE, stderr=lf)
            stdout = p.stdout.read()
            p.stdout.close()
            code, ru, wall = self.procs.wait(p, seconds + 60)
        nginx_cpu = self.nginx.cpu_s() - cpu0
        if code != 0:
            raise BenchError(f"curlfloor exited with status {code}\n{tail(logp)}")
        try:
            f = json.loads(stdout.decode().strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise BenchError(f"curlfloor printed no JSON line\n{tail(logp)}")
        f.update(wall_s=wall, cpu_pct=100 * (ru.ru_utime + ru.ru_stime) / wall,
                 tcp_opens=tcp_active_opens() - opens0, nginx_cpu_pct=100 * nginx_cpu / wall)
        log(f"{label}: curlfloor {c} {seconds} {FLOOR_THREADS}: {fmt_int(f['req_per_s'])} req/s, "
            f"{f['errors']} errors, {f['cpu_us_per_req']:.0f} us cpu per request; cpu curlfloor "
            f"{f['cpu_pct']:.0f}%, nginx {f['nginx_cpu_pct']:.0f}%")
        return f

    def http_worker(self, label, c, n, on_worker=None, binary=None):
        cpu0, opens0 = self.nginx.cpu_s(), tcp_active_opens()
        m = self.worker_run(label, "http", n, c, os.path.join(self.tmp, "http.collect.out"),
                            handler=("--handler", "http", "--base-url", self.nginx.url), http=True,
                            on_worker=on_worker, binary=binary)
        m["nginx_cpu_pct"] = 100 * (self.nginx.cpu_s() - cpu0) / m["wall_s"]
        m["tcp_opens"] = tcp_active_opens() - opens0
        return m

    def case_http(self):
        a = self.a
        if not shutil.which("wrk"):
            raise BenchError("wrk not found (make bench-deps installs nginx, libnginx-mod-http-echo, wrk)")
        # wrk and the worker each hold one descriptor per connection; chunkd does not raise its
        # own soft limit, and with 1024 most of 5,000 connections fail ("Couldn't connect").
        need = max(a.http_conc) + 1024
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < need:
            if hard != resource.RLIM_INFINITY and hard < need:
                raise BenchError(f"open-file hard limit {hard} < {need} needed for {max(a.http_conc)} "
                                 "connections (ulimit -Hn)")
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        self.nginx = Nginx(self.procs, self.tmp, HTTP_DELAY_S)
        url = self.nginx.url
        log(f"nginx {self.nginx.version()} (pid {self.nginx.pid}) on {url}, {HTTP_DELAY_S * 1000:.0f} ms delay")
        try:
            self._case_http(url)
        finally:
            self.nginx.stop()

    def _case_http(self, url):
        a = self.a
        reps, concs = a.http_reps, a.http_conc
        runs = {c: [] for c in concs}  # c -> [(wrk dict, worker dict)]
        floors = {c: [] for c in concs}  # c -> [curlfloor dict, or None where it failed]
        bases = {c: [] for c in concs}  # c -> [(chunkd worker dict, --baseline worker dict)], same n, run in turn
        # curlfloor is built beside chunkd (make bench); without it its rows say so.
        self.floor_bin = os.path.join(os.path.dirname(a.chunkd), "curlfloor")
        floor_name = os.path.join(os.path.basename(os.path.dirname(self.floor_bin)), "curlfloor")  # build/curlfloor
        floor_missing = None if os.access(self.floor_bin, os.X_OK) else f"{floor_name} missing"
        if floor_missing:
            log(f"http: {self.floor_bin} not found (make {floor_name}): no libcurl-alone runs")
        for rep in range(1, reps + 1):
            for c in concs:
                label = f"http-{c} {rep}/{reps}"
                w = self.wrk_run(label, url + "/x", c, a.wrk_seconds)
                # Items for http_seconds of work at the target rate (target ratio x wrk's req/s):
                # a run that takes longer than that missed its target.
                n = max(1000, round(a.http_seconds * HTTP_TARGETS.get(c, 1.0) * w["req_per_s"] / 1000) * 1000)
                # With --baseline, the two builds take turns going first, so neither always runs second.
                b = None
                if a.baseline and rep % 2 == 0:
                    b = self.http_worker(f"{label} baseline", c, n, binary=a.baseline)
                m = self.http_worker(label, c, n)
                m["wrk_per_s"], m["ratio"] = w["req_per_s"], m["items_per_s"] / w["req_per_s"]
                log(f"{label}: chunkd {fmt_int(m['items_per_s'])} items/s / wrk {fmt_int(w['req_per_s'])} "
                    f"req/s = {m['ratio']:.2f}; nginx cpu {m['nginx_cpu_pct']:.0f}%")
                runs[c].append((w, m))
                if a.baseline:
                    if b is None:
                        b = self.http_worker(f"{label} baseline", c, n, binary=a.baseline)
                    log(f"{label}: baseline {fmt_int(b['items_per_s'])} items/s; chunkd / baseline "
                        f"{m['items_per_s'] / b['items_per_s']:.3f}")
                    bases[c].append((m, b))
                if not floor_missing:
                    # libcurl alone, the same wall seconds as wrk.
                    try:
                        floors[c].append(self.floor_run(label, url + "/x", c, a.wrk_seconds))
                    except BenchError as e:
                        self.error(f"http: {e}")
                        floors[c].append(None)

        # The original recipe against the same URL, once (--http-recipe-items 0: not at all).
        n = a.http_recipe_items
        recipe = None
        if n > 0:
            recipe = self.http_recipe(url, n)

        profile = self.http_perf(url, concs, runs) if a.perf else None

        # -- table
        med = lambda xs: statistics.median(xs)
        rows, det = [], []
        of = f"median of {reps}" if reps > 1 else "1 run"
        for c in concs:
            ws, ms = [w for w, _ in runs[c]], [m for _, m in runs[c]]
            wrk_rate, ck_rate = med(w["req_per_s"] for w in ws), med(m["items_per_s"] for m in ms)
            ratio = ck_rate / wrk_rate
            tgt = HTTP_TARGETS.get(c)
            rows += [
                ("http", f"wrk req/s, {c} connections ({a.wrk_seconds} s)", fmt_int(wrk_rate), "", of),
                ("http", f"chunkd worker items/s, concurrency {c} ({fmt_int(med(m['n'] for m in ms))} items)",
                 fmt_int(ck_rate), "", of),
                ("http", "  worker wall / all items done at", f"{med(m['wall_s'] for m in ms):.2f} s / "
                 f"{med(m['all_done_s'] or m['wall_s'] for m in ms):.2f} s", "", ""),
                ("http", f"  CPU: worker / redis / collect / nginx",
                 f"{med(m['cpu_pct'] for m in ms):.0f}% / {med(m['redis_cpu_pct'] for m in ms):.0f}% / "
                 f"{med(m['collect_cpu_pct'] for m in ms):.0f}% / {med(m['nginx_cpu_pct'] for m in ms):.0f}%",
                 "of one core", f"(wrk run: wrk {med(w['cpu_pct'] for w in ws):.0f}%, "
                 f"nginx {med(w['nginx_cpu_pct'] for w in ws):.0f}%)"),
                ("http", "  call ms p50 / p99 (result \"ms\"); wrk latency avg (last)",
                 f"{med(m.get('call_ms_p50', 0) for m in ms):.0f} / {med(m.get('call_ms_p99', 0) for m in ms):.0f}"
                 f" ms; {ws[-1]['latency_avg']}", "", ""),
                ("http", f"  call ms p50: first {c} results (the first wave, new connections) / the rest",
                 f"{med(m.get('first_wave_ms_p50', 0) for m in ms):.0f} / {med(m.get('later_ms_p50', 0) for m in ms):.0f}"
                 " ms", "", ""),
                ("http", "  CPU per request: chunkd worker / wrk",
                 f"{med(1e6 * m['cpu_s'] / m['n'] for m in ms):.0f} / {med(w['cpu_us_per_req'] for w in ws):.0f} us",
                 "", ""),
                ("http", f"ratio chunkd / wrk at {c}", f"{ratio:.2f}",
                 f">= {tgt}" if tgt else "", self.verdict(ratio, tgt, higher=True) if tgt else ""),
            ]
            if bases[c]:
                bs = [b for _, b in bases[c]]
                rows += [
                    ("http", f"baseline worker items/s, concurrency {c} ({os.path.basename(a.baseline)})",
                     fmt_int(med(b["items_per_s"] for b in bs)), "", of),
                    ("http", "  CPU per request: chunkd worker / baseline",
                     f"{med(1e6 * m['cpu_s'] / m['n'] for m, _ in bases[c]):.1f} / "
                     f"{med(1e6 * b['cpu_s'] / b['n'] for b in bs):.1f} us", "", ""),
                    ("http", f"ratio chunkd / baseline at {c} (median of the runs' ratios)",
                     f"{med(m['items_per_s'] / b['items_per_s'] for m, b in bases[c]):.3f}", "", ""),
                ]
            fs = [f for f in floors[c] if f]
            label = f"libcurl alone (curlfloor, {FLOOR_THREADS} threads) req/s, {c} connections"
            if not fs:
                na = f"n/a ({floor_missing or 'curlfloor failed'})"
                rows += [("http", label, na, "", ""), ("http", f"ratio libcurl alone / wrk at {c}", na, "", "")]
                continue
            fl_rate = med(f["req_per_s"] for f in fs)
            fof = f"median of {len(fs)}" if len(fs) > 1 else "1 run"
            rows += [
                ("http", label, fmt_int(fl_rate), "", fof),
                ("http", "  CPU: curlfloor / nginx",
                 f"{med(f['cpu_pct'] for f in fs):.0f}% / {med(f['nginx_cpu_pct'] for f in fs):.0f}%",
                 "of one core", ""),
                ("http", "  CPU per request: libcurl alone / chunkd worker / wrk",
                 f"{med(f['cpu_us_per_req'] for f in fs):.0f} / {med(1e6 * m['cpu_s'] / m['n'] for m in ms):.0f} / "
                 f"{med(w['cpu_us_per_req'] for w in ws):.0f} us", "", ""),
                ("http", f"ratio libcurl alone / wrk at {c}", f"{fl_rate / wrk_rate:.2f}", "", ""),
                ("http", f"ratio chunkd / libcurl alone at {c}", f"{ck_rate / fl_rate:.2f}", "", ""),
            ]
        for c in concs:
            rss = med(m["maxrss_mib"] for _, m in runs[c])
            big = c == 5000
            limit = HTTP_RSS_TARGET_MB * MB / MIB
            rows.append(("http", f"worker peak RSS, concurrency {c}", f"{rss:.1f} MiB",
                         f"<= {HTTP_RSS_TARGET_MB} MB ({limit:.1f} MiB)" if big else "",
                         self.verdict(rss, limit, higher=False) if big else ""))
        if recipe:
            n = a.http_recipe_items
            rows += [
                ("http", f"recipe.py items/s, {fmt_int(n)} GETs (Pool(200), urllib)", fmt_int(n / recipe["wall_s"]),
                 "", "1 run"),
                ("http", "  wall / of which Pool(200) start-up", f"{recipe['wall_s']:.2f} s / "
                 f"{recipe['pool_start_s']:.2f} s", "", ""),
                ("http", "  items/s after the pool started", fmt_int(n / recipe["process_s"]), "", ""),
                ("http", "  peak RSS / PSS sum (all processes)",
                 f"{recipe['peak_rss_mib']:.0f} / {recipe['peak_pss_mib']:.0f} MiB", "", ""),
            ]
            c0 = concs[0]
            rows.append(("http", f"chunkd (concurrency {c0}) / recipe.py items/s",
                         f"{med(m['items_per_s'] for _, m in runs[c0]) / (n / recipe['wall_s']):.0f}x", "", ""))
        self.rows += rows

        det.append(f"http: nginx {self.nginx.version()} (1 worker process, echo_sleep {HTTP_DELAY_S}) on {url}; "
                   f"per run: wrk -t2 -c N -d {a.wrk_seconds}s {url}/x, then one chunkd worker "
                   f"(--handler http --base-url {url} --concurrency N --exit-when-empty) with collect "
                   f"running alongside, on {a.http_seconds} s x target ratio x wrk req/s items; "
                   f"{reps} alternating rep(s); items/s = items / worker wall (start to exit); then "
                   f"libcurl alone: {floor_name} {url}/x N {a.wrk_seconds} {FLOOR_THREADS} "
                   f"(tests/bench/curlfloor.c; req/s = status-200 transfers / start to the last one done)"
                   + (f" -- not run: {floor_missing}" if floor_missing else ""))
        for c in concs:
            for i, (w, m) in enumerate(runs[c], 1):
                det.append(f"  c={c} run {i}: wrk {w['req_per_s']:,.0f} req/s ({w['requests']:,} requests, "
                           f"latency avg {w['latency_avg']} max {w['latency_max']}, {w['socket_errors']} socket "
                           f"errors, {w['non_2xx']} non-2xx, cpu wrk {w['cpu_pct']:.0f}% nginx "
                           f"{w['nginx_cpu_pct']:.0f}%, {w['tcp_opens']:,} tcp connects machine-wide) | chunkd {m['n']:,} items {m['wall_s']:.2f} s = "
                           f"{m['items_per_s']:,.0f} items/s (all done at {m['all_done_s'] or 0:.2f} s: "
                           f"{m['done_per_s']:,.0f}/s), ratio {m['ratio']:.3f}, maxrss {m['maxrss_mib']:.1f} MiB "
                           f"(VmHWM {m['vmhwm_sampled_mib']:.1f}), cpu worker {m['cpu_pct']:.0f}% redis "
                           f"{m['redis_cpu_pct']:.0f}% collect {m['collect_cpu_pct']:.0f}% nginx "
                           f"{m['nginx_cpu_pct']:.0f}%, {m['tcp_opens']:,} tcp connects machine-wide, call ms p50/p90/p99/max "
                           f"{m.get('call_ms_p50')}/{m.get('call_ms_p90')}/{m.get('call_ms_p99')}/"
                           f"{m.get('call_ms_max')}, enqueue {m['enqueue_s']:.2f} s")
            for i, f in enumerate(floors[c], 1):
                if f:
                    det.append(f"  c={c} run {i}: curlfloor {f['req_per_s']:,.0f} req/s ({f['requests']:,} requests "
                               f"in {f['seconds']:.2f} s, {f['errors']} errors, {f['cpu_us_per_req']:.0f} us cpu "
                               f"per request, cpu curlfloor {f['cpu_pct']:.0f}% nginx {f['nginx_cpu_pct']:.0f}%, "
                               f"{f['tcp_opens']:,} tcp connects machine-wide), ratio to wrk "
                               f"{f['req_per_s'] / runs[c][i - 1][0]['req_per_s']:.3f}")
                else:
                    det.append(f"  c={c} run {i}: curlfloor failed (see ERRORS)")
        if recipe:
            det.append("  recipe.py --base-url: " + json.dumps(
                {k: (round(v, 3) if isinstance(v, float) else v) for k, v in recipe.items()}))
        if profile:
            det.append(profile)
        self.sections.append("\n".join(det))

    def http_recipe(self, url, n):
        """recipe.py --base-url on n items against url, once: its figures, or None after a recorded error."""
        path = os.path.join(self.tmp, "http-recipe-items.jsonl")
        gen_http_items(path, n)
        out = os.path.join(self.tmp, "http.recipe.out")
        logp = os.path.join(self.tmp, "http.recipe.log")
        cpu0 = self.nginx.cpu_s()
        with open(logp, "wb") as lf:
            p = self.procs.start([sys.executable, os.path.join(HERE, "recipe.py"), path, "--out", out,
                                  "--json", "--base-url", url], env=child_env(), stdout=subprocess.PIPE,
                                 stderr=lf)
            stdout = p.stdout.read()
            p.stdout.close()
            code, ru, wall = self.procs.wait(p, 600)
        recipe = None
        try:
            if code != 0:
                raise BenchError(f"recipe.py --base-url exited with status {code}\n{tail(logp)}\n    | "
                                 + stdout.decode(errors="replace").strip()[-300:])
            recipe = json.loads(stdout.decode().strip().splitlines()[-1])
            problem = verify_results(out, n, chunkd_format=False)
            if problem or recipe["errors"]:
                raise BenchError(f"recipe.py --base-url: {problem or ''} {recipe['errors']} calls failed, "
                                 f"first: {recipe.get('first_error')}")
            recipe.update(wall_s=wall, nginx_cpu_pct=100 * (self.nginx.cpu_s() - cpu0) / wall)
            log(f"http recipe.py: {fmt_int(n)} items in {wall:.2f} s ({n / wall:,.0f} items/s; pool start "
                f"{recipe['pool_start_s']} s, then {n / recipe['process_s']:,.0f} items/s), tree rss "
                f"{recipe['peak_rss_mib']} MiB, pss {recipe['peak_pss_mib']} MiB")
        except BenchError as e:
            self.error(f"http: {e}")
            recipe = None
        return recipe

    def http_perf(self, url, concs, runs):
        """--perf: one more worker run at the highest concurrency under `perf record -g -p PID`
        (not in the table: perf slows it); returns the top symbols as text."""
        perf = shutil.which("perf")
        if not perf:
            self.error("http --perf: perf not found")
            return None
        c = max(concs)
        n = runs[c][-1][1]["n"]
        data = os.path.join(self.tmp, "perf.data")
        plog = os.path.join(self.tmp, "perf.log")
        holder = {}

        def attach(pid):
            with open(plog, "wb") as lf:
                holder["p"] = self.procs.start([perf, "record", "-g", "-o", data, "-p", str(pid)],
                                               stdout=lf, stderr=subprocess.STDOUT)
            holder["pid"] = pid

        try:
            m = self.http_worker(f"http-{c} perf", c, n, on_worker=attach)
        except BenchError as e:
            self.error(f"http --perf run: {e}")
            return None
        finally:
            if "p" in holder:
                try:
                    # perf record -p ends by itself when its target exits
                    self.procs.wait(holder["p"], time.monotonic() - holder["p"].t_start + 30)
                except BenchError:
                    pass
        if "p" not in holder or not os.path.exists(data):
            self.error(f"http --perf: no profile\n{tail(plog)}")
            return None
        out = [f"perf: an extra run at concurrency {c} ({n:,} items) under `perf record -g -p "
               f"<worker pid>`: {m['items_per_s']:,.0f} items/s, cpu {m['cpu_pct']:.0f}% (slowed by perf)"]
        for title, sort, limit in (("top symbols (self time, % of samples in the worker)", "dso,sym", "0.7"),
                                   ("by shared object", "dso", "0.5")):
            res = subprocess.run([perf, "report", "-i", data, "--stdio", "--no-children", "-g", "none",
                                  "--sort", sort, "--percent-limit", limit], capture_output=True, text=True)
            lines = [l.rstrip() for l in res.stdout.splitlines() if l.strip() and not l.startswith("#")]
            out.append(f"  {title}:")
            out += ["    " + l.strip() for l in lines[:30]]
        log("perf: " + " | ".join(out[2:7]))
        return "\n".join(out)

    def gnuplot(self, name, size, script):
        """Draws OUTDIR/name.png with a gnuplot script (after its terminal and output lines)."""
        png = os.path.join(self.a.outdir, name + ".png")
        if not shutil.which("gnuplot"):
            self.error(f"gnuplot not found: {name}.png not written")
            return
        gp = os.path.join(self.tmp, name + ".gp")
        with open(gp, "w") as f:
            f.write(f'set terminal pngcairo size {size} noenhanced font ",10"\nset output "{png}"\n' + script)
        res = subprocess.run(["gnuplot", gp], capture_output=True, text=True)
        if res.returncode != 0:
            # pngcairo may be missing; try the plain png terminal
            with open(gp) as f:
                script = f.read().replace("pngcairo", "png")
            with open(gp, "w") as f:
                f.write(script)
            res = subprocess.run(["gnuplot", gp], capture_output=True, text=True)
        if res.returncode != 0:
            self.error(f"gnuplot failed: {res.stderr.strip()}")
        else:
            log(f"wrote {png}")

    def plot(self, dat):
        self.gnuplot("throughput", "900,560", f"""set title "chunkd worker: items/s vs --concurrency ({SLEEP_MS} ms items, {os.cpu_count()} cores)"
set xlabel "--concurrency (items in flight)"
set ylabel "items/s"
set y2label "worker peak RSS (MiB)"
set logscale x
set xrange [{min(m["concurrency"] for m in self.sweep_rows) / 1.3}:{max(m["concurrency"] for m in self.sweep_rows) * 1.3}]
set logscale y
set y2range [0:*]
set ytics nomirror
set y2tics
set grid
set key top left
set format y "%.0s%c"
plot "{dat}" using 1:5 with lines dt 2 lw 1 lc rgb "gray" title "ideal (concurrency x {1000 // SLEEP_MS}/s)", \\
     "{dat}" using 1:4 with linespoints lw 2 pt 7 lc rgb "#1f77b4" title "items/s (worker start to exit)", \\
     "{dat}" using 1:9 with linespoints lw 1 pt 6 lc rgb "#2ca02c" title "items/s (start to last item done)", \\
     "{dat}" using 1:6 axes x1y2 with linespoints lw 1 pt 5 lc rgb "#d62728" title "worker peak RSS (MiB)"
""")

    # -- httpd: the health port under 1,000 hostile connections (issue 15)
    def case_httpd(self):
        """A sleep worker with nothing to do serves HTTP on 127.0.0.1; the probes (/healthz, /readyz, /metrics in
        turn, one at a time, each on a new connection from 127.0.0.1) are timed for a while alone, then while
        HTTPD_HOSTILE connections from 40 other loopback addresses (hostile.py: a third each drip header bytes,
        sit idle, send 64 KiB of one header) are held against the port, reconnecting whenever the worker closes
        them. The worker's RSS is sampled from /proc throughout. With --baseline BIN, the same for that build."""
        need = HTTPD_HOSTILE + 1024
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < need:
            if hard != resource.RLIM_INFINITY and hard < need:
                raise BenchError(f"open-file hard limit {hard} < {need} needed (ulimit -Hn)")
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        seconds = 8 if self.a.quick else 20
        builds = [("chunkd", self.a.chunkd)] + ([("baseline", self.a.baseline)] if self.a.baseline else [])
        det = [f"httpd: {HTTPD_HOSTILE} hostile connections ({HTTPD_PER_SOURCE} from each of "
               f"{HTTPD_HOSTILE // HTTPD_PER_SOURCE} loopback addresses; drip {hostile.DRIP_S} s/byte, idle, "
               f"{hostile.BIG_BYTES // 1024} KiB header), probes from 127.0.0.1 one at a time, {seconds} s each phase, "
               "probe time-out 5 s (counted as 5 s)"]
        for label, binary in builds:
            m = self._httpd_run(binary, seconds)
            quiet, attack = m["quiet"], m["attack"]
            failed = m["failed"]
            verdict = ("met" if attack["max"] < HTTPD_LATENCY_TARGET_S and not failed else
                       f"MISSED ({failed} unanswered)" if failed else
                       f"MISSED by {100 * (attack['max'] / HTTPD_LATENCY_TARGET_S - 1):.0f}%")
            name = "chunkd" if label == "chunkd" else "baseline"
            self.rows += [
                ("httpd", f"{name}: probe s p50/p99/max, no attack ({quiet['n']} probes)",
                 f"{quiet['p50']:.3f} / {quiet['p99']:.3f} / {quiet['max']:.3f}", "", ""),
                ("httpd", f"{name}: probe s p50/p99/max, {HTTPD_HOSTILE} hostile ({attack['n']} probes)",
                 f"{attack['p50']:.3f} / {attack['p99']:.3f} / {attack['max']:.3f}",
                 f"max < {HTTPD_LATENCY_TARGET_S:.0f} s, all 200", verdict),
                ("httpd", f"{name}: worker RSS before / peak under attack",
                 f"{m['rss_before'] / 1024:.1f} / {m['rss_peak'] / 1024:.1f} MiB", "bounded", ""),
            ]
            det.append(f"  {name} ({binary}): hostile connected at most {m['connected_max']} at once, closed by "
                       f"the worker {m['closed']} times; worker descriptors at most {m['fds_max']}; "
                       f"probes not answered 200: {failed}")
            log(f"httpd {name}: probes p50/p99/max {attack['p50']:.3f}/{attack['p99']:.3f}/{attack['max']:.3f} s "
                f"under attack ({quiet['p50']:.3f}/{quiet['p99']:.3f}/{quiet['max']:.3f} alone); RSS "
                f"{m['rss_before'] / 1024:.1f} -> {m['rss_peak'] / 1024:.1f} MiB; {failed} failed")
        self.sections.append("\n".join(det))

    def _httpd_run(self, binary, seconds):
        r = self.get_redis()
        r.cmd("FLUSHALL")
        port = free_port()
        env = dict(child_env(r.url), CHUNKD_HTTP_PORT=str(port))
        logp = os.path.join(self.tmp, f"httpd.worker.{os.path.basename(binary)}.log")
        with open(logp, "wb") as lf:  # not through the trampoline: its RSS is read from /proc by pid
            w = self.procs.start([binary, "worker", "--queue", "httpd", "--handler", "sleep", "--http-addr",
                                  "127.0.0.1"], env=env, stdout=lf, stderr=lf)
        try:
            deadline = time.monotonic() + 30
            while hostile.timed_get("127.0.0.1", port, "/readyz", timeout=2)[0] != 200:
                if w.poll() is not None or time.monotonic() > deadline:
                    raise BenchError(f"the worker did not answer /readyz\n{tail(logp)}")
                time.sleep(0.1)

            def fds():
                try:
                    return len(os.listdir(f"/proc/{w.pid}/fd"))
                except OSError:
                    return 0

            quiet = hostile.probe_latencies("127.0.0.1", port, min(seconds, 5))
            rss_before = hostile.rss_kib(w.pid) or 0
            sources = hostile.hostile_sources(HTTPD_HOSTILE, HTTPD_PER_SOURCE)
            h = hostile.Hostile(port, hostile.mix(HTTPD_HOSTILE), sources).start()
            try:
                deadline = time.monotonic() + 30
                while h.connected() < HTTPD_HOSTILE * 0.95 and time.monotonic() < deadline:
                    time.sleep(0.1)
                rss_peak, fds_max, attack = rss_before, 0, []
                end = time.monotonic() + seconds
                while time.monotonic() < end:
                    attack += hostile.probe_latencies("127.0.0.1", port, 1.0)
                    rss_peak = max(rss_peak, hostile.rss_kib(w.pid) or 0)
                    fds_max = max(fds_max, fds())
                st = h.stats()
            finally:
                h.stop()
            if w.poll() is not None:
                raise BenchError(f"the worker exited under attack ({w.returncode})\n{tail(logp)}")
        finally:
            self.procs.kill(w)
        return {"quiet": hostile.summary(quiet), "attack": hostile.summary(attack), "rss_before": rss_before,
                "rss_peak": rss_peak, "fds_max": fds_max, "connected_max": st["connected_max"],
                "closed": st["closed_by_server"], "failed": sum(1 for _, s, _ in attack if s != 200)}

    # -- chunkmem: a worker's peak RSS against the size of the chunk it holds
    def case_chunkmem(self):
        """One chunk of 100 items per run, at several sizes up to just under the default --max-chunk-bytes
        (64 MiB), and one over it; an echo worker (--threads 1) with --exit-when-empty, and once a sleep worker
        (items held 100 ms); its peak RSS (ru_maxrss, the same as /proc VmHWM at exit) against the chunk's bytes. A measurement, not an assertion: the row
        says how far from the target (peak below 3 x the chunk plus the idle worker's peak) each size is."""
        r = self.get_redis()
        env = child_env(r.url)
        cap = 64 * 1024 * 1024
        # The producer is told a larger cap (environment, so an older build without the enqueue setting still
        # runs): each file below becomes one chunk, and the last one is over the worker's cap.
        enq_env = dict(env, CHUNKD_MAX_CHUNK_BYTES=str(2 * cap), CHUNKD_MAX_ITEM_BYTES=str(4 * 1024 * 1024))
        sizes = [0.01, 8, 32, 63, 70] if not self.a.quick else [0.01, 32, 63, 70]  # MB; 10 KB: the baseline
        # (MB, handler): echo returns each item at once; sleep holds all 100 for 100 ms (its default) first.
        runs = [(mb, "echo") for mb in sizes] + [(63, "sleep")]
        rows = []
        for mb, handler in runs:
            r.cmd("FLUSHALL")
            path = os.path.join(self.tmp, f"chunkmem-{mb}.jsonl")
            per_item = int(mb * 1000 * 1000) // 100
            with open(path, "w") as f:
                for i in range(100):
                    head = f'{{"id":{i},"pad":"'
                    f.write(head + "x" * (per_item - len(head) - 2) + '"}\n')
            p, logp = self.run_chunkd(f"chunkmem.enqueue{mb}.{handler}", ["enqueue", "--queue", "mem", "--chunk-size", "100",
                                                                path], enq_env, 300)
            code, _, _ = self.procs.wait(p, 300)
            self.check_exit("chunkd enqueue", code, logp)
            chunk_bytes = int(r.cmd("EVAL", "return #redis.call('LINDEX', KEYS[1], 0)", 1, "chunkd:{mem}:pending"))
            p, logp = self.run_chunkd(f"chunkmem.worker{mb}.{handler}", ["worker", "--queue", "mem", "--handler", handler,
                                                               "--threads", "1", "--exit-when-empty",
                                                               "--http-port", "0"], env, 300)
            code, ru, wall = self.procs.wait(p, 300)
            self.check_exit("chunkd worker", code, logp)
            st = r.stats("mem")
            refused = chunk_bytes > cap
            if refused and st.get("dead_chunks") != 1 or not refused and st.get("chunks_done") != 1:
                raise BenchError(f"chunkmem {mb} MB: stats {st}")
            rows.append((mb, chunk_bytes, ru.ru_maxrss * 1024, wall, refused, handler))
            os.unlink(path)
            log(f"chunkmem: chunk of {chunk_bytes / 1e6:.1f} MB{' (over the cap)' if refused else ''}, {handler}: "
                f"worker peak RSS {ru.ru_maxrss / 1024:.0f} MiB, {wall:.2f} s")
        idle = rows[0][2]  # the 10 KB chunk's run: the worker's own baseline
        lines = ["chunkmem: a worker's peak RSS (ru_maxrss = VmHWM at exit) holding one chunk of 100 items "
                 "(--threads 1)",
                 f"  baseline: the peak with a 10 KB chunk (echo), {idle / 2**20:.0f} MiB"]
        for mb, chunk_bytes, peak, wall, refused, handler in rows[1:]:
            over = (peak - idle) / chunk_bytes
            if refused:
                target = idle * 1.1
                verdict = self.verdict(peak, target, higher=False)
                what = f"worker peak RSS, a {chunk_bytes / 1e6:.0f} MB chunk over --max-chunk-bytes"
                tgt = "refused unread (~ baseline)"
            else:
                target = 3 * chunk_bytes + idle
                verdict = self.verdict(peak, target, higher=False)
                what = f"worker peak RSS, a {chunk_bytes / 1e6:.0f} MB chunk, {handler}"
                tgt = "< 3 x chunk + baseline"
            self.rows.append(("chunkmem", what, f"{peak / 2**20:.0f} MiB (+{over:.2f} x chunk)", tgt, verdict))
            lines.append(f"  {chunk_bytes:>11,} bytes{' (refused)' if refused else '          '}, {handler:5}: peak "
                         f"{peak / 2**20:6.0f} MiB = baseline + {over:.2f} x the chunk; {wall:.2f} s")
        self.sections.append("\n".join(lines))

    # -- case cluster
    CLUSTER_MASTERS = 3
    CLUSTER_QUEUES = 6

    def start_cluster_nodes(self, label, n, cluster):
        """n redis-servers on free loopback ports (cluster mode or not) in TMP/label; returns their ports."""
        base = os.path.join(self.tmp, label)
        ports = []
        for i in range(n):
            d = os.path.join(base, f"n{i}")
            os.makedirs(d, exist_ok=True)
            port = free_port()
            argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                    "--dir", d, "--logfile", os.path.join(d, "redis.log"), "--daemonize", "no"]
            if cluster:
                argv += ["--cluster-enabled", "yes", "--cluster-port", str(free_port()),
                         "--cluster-config-file", os.path.join(d, "nodes.conf"), "--cluster-node-timeout", "5000"]
            self.procs.start(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            ports.append(port)
        for port in ports:
            deadline = time.monotonic() + 10
            while subprocess.run(["redis-cli", "-p", str(port), "PING"], capture_output=True,
                                 text=True).stdout.strip() != "PONG":
                if time.monotonic() > deadline:
                    raise BenchError(f"redis-server on {port} did not answer PING within 10 s")
                time.sleep(0.05)
        if cluster:
            out = subprocess.run(["redis-cli", "--cluster", "create", *[f"127.0.0.1:{p}" for p in ports],
                                  "--cluster-yes"], capture_output=True, text=True, timeout=60)
            if out.returncode != 0:
                raise BenchError(f"redis-cli --cluster create: {out.stdout[-300:]} {out.stderr[-300:]}")
            deadline = time.monotonic() + 60
            while not all("cluster_state:ok" in subprocess.run(["redis-cli", "-p", str(p), "CLUSTER", "INFO"],
                                                                capture_output=True, text=True).stdout
                          for p in ports):
                if time.monotonic() > deadline:
                    raise BenchError("the cluster did not reach cluster_state:ok within 60 s")
                time.sleep(0.1)
        return ports

    def cluster_queues(self, ports):
        """CLUSTER_QUEUES queue names, spread evenly over the masters (by the slot of their hash tag)."""
        out = subprocess.run(["redis-cli", "-p", str(ports[0]), "CLUSTER", "SLOTS"], capture_output=True,
                             text=True).stdout.split("\n")
        # redis-cli prints each range as start, end, host, port, id on lines of their own.
        ranges, i = [], 0
        while i + 4 < len(out):
            if out[i].strip().isdigit() and out[i + 1].strip().isdigit() and out[i + 3].strip().isdigit():
                ranges.append((int(out[i]), int(out[i + 1]), int(out[i + 3])))
                i += 5
            else:
                i += 1
        per = self.CLUSTER_QUEUES // self.CLUSTER_MASTERS
        chosen, count = [], {}
        for k in range(100000):
            q = f"cl{k}"
            slot = key_slot(f"chunkd:{{{q}}}:stats")
            owner = next((p for a, b, p in ranges if a <= slot <= b), None)
            if owner is not None and count.get(owner, 0) < per:
                count[owner] = count.get(owner, 0) + 1
                chosen.append(q)
            if len(chosen) == self.CLUSTER_QUEUES:
                log(f"cluster: queues {', '.join(chosen)}, {per} on each master (ports {sorted(count)})")
                return chosen
        raise BenchError(f"no queue names spread over the masters (CLUSTER SLOTS: {ranges})")

    def cluster_run(self, label, url, queues, n, path):
        """Enqueues n items into each queue, then one echo worker and one collector per queue, all at once.
        Returns the total items/s from the workers' start to the last collector's exit."""
        env = child_env(url)
        for q in queues:
            p, logp = self.run_chunkd(f"{label}.enqueue.{q}", ["enqueue", "--queue", q, path], env, 600)
            code, _, _ = self.procs.wait(p, 600)
            self.check_exit("chunkd enqueue", code, logp)
        t0 = time.monotonic()
        started = []
        for q in queues:
            out = os.path.join(self.tmp, f"{label}.{q}.out")
            started.append((q, out, self.run_chunkd(f"{label}.worker.{q}", ["worker", "--queue", q, "--handler",
                                                                           "echo", "--exit-when-empty"], env, 600),
                            self.run_chunkd(f"{label}.collect.{q}", ["collect", "--queue", q, "--until-done",
                                                                     "--out", out], env, 600)))
        try:
            for q, out, (pw, logw), (pc, logc) in started:
                code, _, _ = self.procs.wait(pw, 600)
                self.check_exit(f"chunkd worker ({label}, {q})", code, logw)
                code, _, _ = self.procs.wait(pc, 600)
                self.check_exit(f"chunkd collect ({label}, {q})", code, logc)
        finally:
            for _, _, (pw, _), (pc, _) in started:
                for p in (pw, pc):
                    if p.returncode is None:
                        self.procs.kill(p)
        wall = time.monotonic() - t0
        for q, out, _, _ in started:
            problem = verify_results(out, n)
            os.unlink(out)
            if problem:
                raise BenchError(f"{label} queue {q}: {problem}")
        total = n * len(queues)
        log(f"cluster: {label}: {len(queues)} queues x {fmt_int(n)} items: {wall:.2f} s, "
            f"{fmt_int(total / wall)} items/s")
        return total / wall

    def case_cluster(self):
        n, reps = self.a.cluster_items, self.a.cluster_reps
        path = os.path.join(self.tmp, f"cluster-items-{n}.jsonl")
        gen_items(path, n)
        ports = self.start_cluster_nodes("cluster", self.CLUSTER_MASTERS, cluster=True)
        queues = self.cluster_queues(ports)
        cluster_url = "redis-cluster://" + ",".join(f"127.0.0.1:{p}" for p in ports)
        single_port = self.start_cluster_nodes("single", 1, cluster=False)[0]
        single_url = f"redis://127.0.0.1:{single_port}"
        sides = {"cluster": [], "single": []}
        for rep in range(reps):
            order = [("cluster", cluster_url, ports), ("single", single_url, [single_port])]
            for side, url, side_ports in order if rep % 2 == 0 else order[::-1]:
                for port in side_ports:
                    subprocess.run(["redis-cli", "-p", str(port), "FLUSHALL"], capture_output=True)
                sides[side].append(self.cluster_run(f"{side}{rep + 1}", url, queues, n, path))
        med = {side: statistics.median(v) for side, v in sides.items()}
        ratio = med["cluster"] / med["single"]
        self.rows += [
            ("cluster", f"{len(queues)} queues on 3 shards, items/s (echo)", fmt_int(med["cluster"]), "", ""),
            ("cluster", f"{len(queues)} queues on 1 redis-server, items/s", fmt_int(med["single"]), "", ""),
            ("cluster", "3 shards / 1 server", f"{ratio:.2f}x", "", ""),
        ]
        self.sections.append(
            f"cluster: {len(queues)} queues x {n} echo items, one worker and one collector per queue, all at once; "
            f"{reps} alternating runs per side (total items/s from the workers' start to the last exit):\n"
            + "\n".join(f"  {side:7}: " + ", ".join(fmt_int(x) for x in v) for side, v in sides.items()))
        os.unlink(path)

    # -- reporting
    @staticmethod
    def verdict(value, target, higher):
        if (value >= target) if higher else (value <= target):
            return "met"
        short = (target - value) / target if higher else (value - target) / target
        return f"MISSED by {100 * short:.0f}%"

    def error(self, msg):
        self.errors.append(msg)
        log("ERROR " + msg)

    def host_line(self):
        mem = "?"
        try:
            with open("/proc/meminfo") as f:
                mem = f"{int(f.readline().split()[1]) / 1024 / 1024:.0f} GiB"
        except OSError:
            pass
        cpu = "?"
        try:
            with open("/proc/cpuinfo") as f:
                cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
        except (OSError, StopIteration):
            pass
        return f"{os.cpu_count()} cores ({cpu}), {mem} RAM, Linux {platform.release()}"

    def report(self, started, cases):
        lines = []
        rev = subprocess.run(["git", "-C", HERE, "describe", "--always", "--dirty"],
                             capture_output=True, text=True).stdout.strip() or "no commit"
        redis_v = "?"
        for word in subprocess.run(["redis-server", "--version"], capture_output=True,
                                   text=True).stdout.split():
            if word.startswith("v="):
                redis_v = word[2:]
        lines.append(f"chunkd bench, {started:%Y-%m-%d %H:%M} ({'QUICK' if self.a.quick else 'full'} mode, "
                     f"cases: {','.join(cases)}), {time.monotonic() - self.t0:.0f} s")
        lines.append(f"machine: {self.host_line()}; redis-server {redis_v}; "
                     f"Python {platform.python_version()}; chunkd git {rev}")
        lines.append(f"load average at start: {self.load_start}; at end: {loadavg()} "
                     "(other work on the machine skews the numbers)")
        if "original" in cases:
            lines.append(f"original-case figures are medians of {self.a.reps} side-by-side alternating run(s)")
        if "http" in cases:
            lines.append(f"http-case figures are medians of {self.a.http_reps} alternating wrk/chunkd run(s) "
                         f"at each connection count; its recipe.py figures are 1 run")
        lines.append("")
        hdr = ("case", "metric", "value", "target", "status")
        w = [max(len(str(r[i])) for r in self.rows + [hdr]) for i in range(5)]
        fmt = lambda r: "  ".join(str(r[i]).ljust(w[i]) if i != 2 else str(r[i]).rjust(w[i])
                                  for i in range(5)).rstrip()
        lines.append(fmt(hdr))
        lines.append(fmt(tuple("-" * x for x in w)))
        lines += [fmt(r) for r in self.rows]
        if self.errors:
            lines.append("")
            lines.append("ERRORS (runs that failed; their numbers are missing above):")
            lines += ["  " + e.replace("\n", "\n  ") for e in self.errors]
        lines.append("")
        lines.append("details:")
        lines += self.sections
        text = "\n".join(lines) + "\n"
        path = os.path.join(self.a.outdir, "results.txt")
        with open(path, "w") as f:
            f.write(text)
        print(text, end="")
        log(f"wrote {path}")

    def run(self, cases):
        self.t0 = time.monotonic()
        self.load_start = loadavg()
        started = datetime.datetime.now()
        try:
            for case in cases:
                log(f"case {case}")
                try:
                    getattr(self, "case_" + case)()
                except BenchError as e:
                    self.error(f"{case}: {e}")
        finally:
            if self.redis:
                try:
                    self.redis.sock.close()
                except OSError:
                    pass
            self.procs.kill_all()
        self.report(started, cases)
        return 1 if self.errors else 0


CASES = ("original", "million", "sweep", "http", "exec", "ratelimit", "chunkmem", "flaky", "httpd", "latency",
         "cluster", "tls", "replicas", "rediscpu")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("chunkd", help="path to the chunkd binary")
    ap.add_argument("--quick", action="store_true", default=os.environ.get("BENCH_QUICK", "") not in ("", "0"),
                    help="smaller sizes (also BENCH_QUICK=1)")
    ap.add_argument("--cases", default=os.environ.get("BENCH_CASES",
                                                      ",".join(CASES)),
                    help="comma-separated subset of " + ",".join(CASES) + " (also BENCH_CASES)")
    ap.add_argument("--reps", type=int, help="runs of each side in the original case (3; quick 1)")
    ap.add_argument("--original-items", type=int, default=10000)
    ap.add_argument("--million", type=int, help="items of the big worker run (1000000; quick 100000)")
    ap.add_argument("--million-reps", type=int, help="runs of each size in the million case (3; quick 1)")
    ap.add_argument("--compare", type=int, help="items of the RSS comparison run (100000; quick 10000)")
    ap.add_argument("--sweep", help="concurrency points (100,300,1000,3000,10000,20000; quick 100,1000,10000)")
    ap.add_argument("--sweep-per-c", type=int, help="items per unit of concurrency (40: >= 4 s a point; quick 15)")
    ap.add_argument("--sweep-min", type=int, default=2000, help="minimum items per sweep point")
    ap.add_argument("--http-conc", help="http case: connection counts (2000,5000)")
    ap.add_argument("--http-reps", type=int, help="http case: alternating wrk/chunkd runs at each count (2; quick 1)")
    ap.add_argument("--wrk-seconds", type=int, help="http case: wrk -d (10; quick 5)")
    ap.add_argument("--http-seconds", type=float,
                    help="http case: chunkd items = this x target ratio x wrk req/s (10; quick 5)")
    ap.add_argument("--baseline", metavar="BIN",
                    help="http case: also run this chunkd binary's worker beside chunkd's in every run (same items, "
                         "taking turns to go first), and report its items/s and CPU beside chunkd's: compares two "
                         "builds side by side; httpd case: the same attack against this build's worker too; rediscpu "
                         "case: every run with this build too, taking turns to go first, and the ratios")
    ap.add_argument("--http-recipe-items", type=int, help="http case: recipe.py --base-url items (3000; quick 1000)")
    ap.add_argument("--perf", action="store_true",
                    help="http case: one extra worker run at the highest count under perf record -g")
    ap.add_argument("--exec-procs", help="exec case: --procs values (200,20)")
    ap.add_argument("--exec-items", type=int, help="exec case: items (10000; quick 2000)")
    ap.add_argument("--rate-limit", type=int, default=200, help="ratelimit case: the shared limit, calls/s (200)")
    ap.add_argument("--rate-workers", type=int, default=5, help="ratelimit case: workers (5)")
    ap.add_argument("--rate-seconds", type=int, help="ratelimit case: measured window in s (30; quick 10)")
    ap.add_argument("--rate-true-limit", type=int, default=1000,
                    help="ratelimit case: the mock's true limit L in calls/s, with --rate-limit 2L (1000)")
    ap.add_argument("--rate-random-limit", type=int, default=2000,
                    help="ratelimit case: --rate-limit of the run with 10%% random 429s (2000)")
    ap.add_argument("--rate-adapt-seconds", type=int,
                    help="ratelimit case: items for this many seconds at L (and 0.9 x at the random run's limit) "
                         "(30; quick 15)")
    ap.add_argument("--rate-skip-adapt", action="store_true",
                    help="ratelimit case: only the five workers sharing a limit, not the adaptation's two runs")
    ap.add_argument("--flaky-items", type=int, help="flaky case: items per run (40000; quick 10000)")
    ap.add_argument("--flaky-reps", type=int, help="flaky case: alternating runs of each variant (3; quick 1)")
    ap.add_argument("--flaky-conc", type=int, default=500, help="flaky case: --concurrency (500)")
    ap.add_argument("--latency-items", type=int, help="latency case: items per run (200000; quick 50000)")
    ap.add_argument("--latency-reps", type=int, help="latency case: alternating runs of each round trip (3; quick 1)")
    ap.add_argument("--latency-rtts", help="latency case: added round trips in ms, 0 first (0,2,10)")
    ap.add_argument("--cluster-items", type=int, help="cluster case: items per queue (100000; quick 20000)")
    ap.add_argument("--cluster-reps", type=int, help="cluster case: alternating runs of each side (3; quick 1)")
    ap.add_argument("--replicas-items", type=int, help="replicas case: items per run (200000; quick 50000)")
    ap.add_argument("--replicas-reps", type=int, help="replicas case: runs with each setting (3; quick 1)")
    ap.add_argument("--rediscpu-items", type=int, help="rediscpu case: items per run (1000000; quick 200000)")
    ap.add_argument("--rediscpu-reps", type=int, help="rediscpu case: runs of each worker count (3; quick 1)")
    ap.add_argument("--rediscpu-workers", default="1,4,8",
                    help="rediscpu case: workers at once on the queue in the worker phase, one count per run (1,4,8)")
    ap.add_argument("--rediscpu-concurrency", type=int, default=10000,
                    help="rediscpu case: each worker's --concurrency (10000)")
    ap.add_argument("--outdir", default=HERE, help="where results.txt, throughput.dat/.png go")
    ap.add_argument("--tmp", help="scratch directory (default: a new one, removed at exit)")
    a = ap.parse_args()
    q = a.quick
    a.reps = a.reps or (1 if q else 3)
    a.million = a.million or (100000 if q else 1000000)
    a.compare = a.compare or (10000 if q else 100000)
    a.million_reps = a.million_reps or (1 if q else 3)
    a.sweep = [int(x) for x in (a.sweep or ("100,1000,10000" if q else "100,300,1000,3000,10000,20000")).split(",")]
    a.sweep_per_c = a.sweep_per_c or (15 if q else 40)
    a.http_conc = [int(x) for x in (a.http_conc or "2000,5000").split(",")]
    a.http_reps = a.http_reps or (1 if q else 2)
    a.wrk_seconds = a.wrk_seconds or (5 if q else 10)
    a.http_seconds = a.http_seconds or (5 if q else 10)
    if a.http_recipe_items is None:
        a.http_recipe_items = 1000 if q else 3000
    a.exec_procs = [int(x) for x in (a.exec_procs or "200,20").split(",")]
    a.exec_items = a.exec_items or (2000 if q else 10000)
    a.rate_seconds = a.rate_seconds or (10 if q else 30)
    a.rate_adapt_seconds = a.rate_adapt_seconds or (15 if q else 30)
    a.flaky_items = a.flaky_items or (10000 if q else 40000)
    a.flaky_reps = a.flaky_reps or (1 if q else 3)
    a.latency_items = a.latency_items or (50000 if q else 200000)
    a.latency_reps = a.latency_reps or (1 if q else 3)
    a.latency_rtts = [int(x) for x in (a.latency_rtts or "0,2,10").split(",")]
    if a.latency_rtts[0] != 0:
        ap.error("--latency-rtts must start with 0 (direct)")
    a.cluster_items = a.cluster_items or (20000 if q else 100000)
    a.cluster_reps = a.cluster_reps or (1 if q else 3)
    a.replicas_items = a.replicas_items or (50000 if q else 200000)
    a.replicas_reps = a.replicas_reps or (1 if q else 3)
    a.rediscpu_items = a.rediscpu_items or (200000 if q else 1000000)
    a.rediscpu_reps = a.rediscpu_reps or (1 if q else 3)
    try:
        a.rediscpu_workers = [int(x) for x in a.rediscpu_workers.split(",")]
    except ValueError:
        ap.error(f"--rediscpu-workers {a.rediscpu_workers!r}: not a comma-separated list of numbers")
    if min(a.rediscpu_workers) < 1:
        ap.error("--rediscpu-workers: every count must be 1 or more")
    cases = [c.strip() for c in a.cases.split(",") if c.strip()]
    for c in cases:
        if c not in CASES:
            ap.error(f"unknown case {c!r}")
    a.chunkd = os.path.abspath(a.chunkd)
    if a.baseline:
        a.baseline = os.path.abspath(a.baseline)
        if not (os.path.isfile(a.baseline) and os.access(a.baseline, os.X_OK)):
            ap.error(f"--baseline {a.baseline} is not an executable file")
    if not (os.path.isfile(a.chunkd) and os.access(a.chunkd, os.X_OK)):
        ap.error(f"{a.chunkd} is not an executable file (build it first)")
    if not shutil.which("redis-server"):
        ap.error("redis-server not found in PATH")
    own_tmp = a.tmp is None
    if own_tmp:
        a.tmp = tempfile.mkdtemp(prefix="chunkd-bench.")
    a.outdir = os.path.abspath(a.outdir)
    os.makedirs(a.outdir, exist_ok=True)

    def on_signal(sig, _frame):
        raise Interrupted(f"signal {sig}")

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)

    b = Bench(a)
    try:
        return b.run(cases)
    except Interrupted as e:
        log(f"interrupted ({e}); cleaning up")
        b.procs.kill_all()
        return 130
    finally:
        b.procs.kill_all()
        if own_tmp:
            shutil.rmtree(a.tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
