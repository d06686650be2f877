"""Harness for the chunkd integration tests.

- RedisServer: a throwaway redis-server (no persistence, or AOF with
  appendfsync always) on a free loopback port and a unix socket in a temp dir;
  it can be killed and restarted on the same port and dir.
- MockApi: the mock HTTP API (tests/mockapi, build/mockapi) on a free loopback
  port, with its request counters (/_count) and /_reset.
- Proc: a chunkd subprocess whose stdout/stderr go to files (no pipe deadlocks).
- Ctx: what a test function receives: its own queue name, temp dir, Redis
  client, the run's MockApi (ctx.mock), and helpers to run chunkd and read queue state.
- wait_until / check / assert_exactly_once: polling with a deadline and assertions.
"""

import collections
import ctypes
import http.client
import json
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from resp import Redis, RedisError

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"

# Proxy variables libcurl would obey: chunkd must talk to the mock directly.
PROXY_VARS = {"http_proxy", "https_proxy", "all_proxy", "no_proxy"}

SANITIZER_REPORT = re.compile(r"ERROR: (Address|Leak|Thread|Memory)Sanitizer|runtime error: ")

# Multiplies every deadline (set by run.py --timeout-scale, e.g. for ASan/valgrind builds).
TIMEOUT_SCALE = 1.0


class TestFailure(AssertionError):
    """A test assertion failed; the message is the one-line reason."""


class TestSkipped(Exception):
    """A test that cannot run here (run.py prints SKIP with the reason and counts it apart)."""


def skip(reason):
    raise TestSkipped(reason)


def check(cond, msg):
    if not cond:
        raise TestFailure(msg() if callable(msg) else msg)


def scaled(seconds):
    """A bound the test measures itself, times TIMEOUT_SCALE. wait_until and Proc.wait scale their timeout
    already: giving them scaled(...) would scale it twice (the square of --timeout-scale)."""
    return seconds * TIMEOUT_SCALE


def stream_entry_lines(entry_id, fields):
    """The result lines of one results stream entry: field b holds the lines of one commit separated by newlines
    (commit.lua), field r the one line of a worker from before."""
    if "b" in fields:
        return fields["b"].split("\n")
    check("r" in fields, f"results stream entry {entry_id} has neither field b nor r: {fields}")
    return [fields["r"]]


def stream_lines(client, key):
    """Every result line of the results stream at key, in order."""
    return [line for entry_id, fields in client.xrange_all(key) for line in stream_entry_lines(entry_id, fields)]


def wait_until(pred, timeout, what="condition"):
    """Poll pred() until it returns something truthy; return that value.

    Fails the test after `timeout` seconds (times TIMEOUT_SCALE). `what` may be a
    callable so the failure message shows the state at the deadline.
    """
    deadline = time.monotonic() + scaled(timeout)
    interval = 0.005
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() >= deadline:
            desc = what() if callable(what) else what
            raise TestFailure(f"timed out after {scaled(timeout):.1f}s waiting for {desc}")
        time.sleep(interval)
        interval = min(interval * 2, 0.1)


def one_line(text, limit=400):
    """Squash text into one short line for a FAIL message."""
    text = " | ".join(line.strip() for line in text.strip().splitlines() if line.strip())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def id_key(value):
    """Hashable, type-preserving key for a JSON id (so 1 and "1" differ)."""
    return json.dumps(value, sort_keys=True)


def assert_exactly_once(results, expected_ids, label="results"):
    """Every expected id appears exactly once among results (dicts with "id"), nothing else."""
    counts = collections.Counter(id_key(r.get("id")) for r in results)
    expected = {id_key(i) for i in expected_ids}
    missing = sorted(expected - counts.keys())
    dups = sorted(k for k, n in counts.items() if n > 1)
    extra = sorted(counts.keys() - expected)
    problems = []
    if missing:
        problems.append(f"{len(missing)} ids missing (e.g. {', '.join(missing[:5])})")
    if dups:
        problems.append(f"{len(dups)} ids duplicated (e.g. {', '.join(dups[:5])})")
    if extra:
        problems.append(f"{len(extra)} unexpected ids (e.g. {', '.join(extra[:5])})")
    check(not problems, lambda: f"{label}: " + "; ".join(problems)
          + f" [{len(results)} lines, {len(expected)} ids expected]")


def parse_jsonl(text, what="output"):
    """Parse JSON Lines: every line must be valid JSON and end with a newline."""
    check(text == "" or text.endswith("\n"), f"{what}: last line has no newline: {text[-120:]!r}")
    rows = []
    for n, line in enumerate(text.split("\n")[:-1], 1):
        try:
            rows.append(json.loads(line))
        except ValueError:
            raise TestFailure(f"{what} line {n} is not JSON: {line[:120]!r}")
    return rows


def read_jsonl(path):
    return parse_jsonl(Path(path).read_text(encoding="utf-8"), str(path))


def count_lines(path):
    try:
        with open(path, "rb") as f:
            return f.read().count(b"\n")
    except FileNotFoundError:
        return 0


def stop_process(proc):
    """Stops a subprocess.Popen (None: nothing): SIGTERM, then SIGKILL after 5 s."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def http_get(port, path, method="GET"):
    """(status, body) of one request to chunkd's HTTP port on loopback; (None, reason) when nothing answered (a
    failure wherever an answer is due)."""
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError as e:
        return None, str(e)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent():
    """preexec_fn: SIGKILL the child if the runner dies (even by kill -9)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def _preexec(nofile=None):
    """preexec_fn: _die_with_parent, and optionally a soft RLIMIT_NOFILE (the hard limit stays)."""
    def run():
        _die_with_parent()
        if nofile is not None:
            hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(nofile, hard), hard))
    return run


def redis_servers_tagged(token):
    """Pids of redis-server processes whose command line (or environment) contains token.

    redis-server rewrites its command line to "redis-server unixsocket:PATH" and clobbers
    its environment block once it has started, so the socket path is the reliable tag."""
    pids = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/comm") as f:
                if f.read().strip() != "redis-server":
                    continue
            with open(f"/proc/{entry}/environ", "rb") as f:
                environ = f.read()
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        if token.encode() in environ or token.encode() in cmdline:
            pids.add(int(entry))
    return pids


class RedisServer:
    """A throwaway redis-server: loopback TCP on a free port plus a unix socket.

    appendonly=True turns on the AOF with appendfsync always (every write is on disk before its reply), so
    kill() + restart() on the same port and dir loses nothing a client was told had happened."""

    def __init__(self, workdir, extra_args=(), password=None, appendonly=False):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.extra_args = list(extra_args)
        self.password = password
        self.appendonly = appendonly
        self.unix_path = str(self.workdir / "redis.sock")
        self.port = None
        self.proc = None

    def start(self, port=None, ready=True):
        """Start on port (default: a free one, retried if it gets taken before redis-server binds it). Returns once
        it answers PING; with ready=False, once it answers at all (LOADING, while it reads its data back)."""
        for _ in range(1 if port else 5):
            self.port = port or free_port()
            persistence = ["--appendonly", "yes", "--appendfsync", "always"] if self.appendonly \
                else ["--appendonly", "no"]
            argv = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1",
                    "--unixsocket", self.unix_path, "--unixsocketperm", "700",
                    "--save", "", *persistence, "--dir", str(self.workdir),
                    "--logfile", str(self.workdir / "redis.log"), "--daemonize", "no"]
            if self.password:
                argv += ["--requirepass", self.password]
            self.proc = subprocess.Popen(argv + self.extra_args, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                         preexec_fn=_die_with_parent)
            deadline = time.monotonic() + 10
            while self.proc.poll() is None and time.monotonic() < deadline:
                if self._ping(loading_ok=not ready):
                    return self
                time.sleep(0.02)
            self.stop()  # port taken between free_port() and bind, or too slow: retry
        log = (self.workdir / "redis.log")
        raise RuntimeError("could not start redis-server: "
                           + (one_line(log.read_text()[-400:]) if log.exists() else "no log"))

    def _ping(self, loading_ok=False):
        try:
            with self.client() as c:
                return c.execute("PING") == "PONG"
        except RedisError as exc:
            return loading_ok and str(exc).startswith("LOADING")
        except OSError:
            return False

    def loading(self):
        """True while the server is reading its data back (INFO persistence: loading:1)."""
        with self.client() as c:
            return "loading:1" in c.execute("INFO", "persistence")

    def client(self, db=0):
        c = Redis(port=self.port)
        if self.password:
            c.execute("AUTH", self.password)
        if db:
            c.execute("SELECT", db)
        return c

    def url(self, db=0, user=None, password=None):
        auth = f"{user or ''}:{password}@" if password is not None else ""
        return f"redis://{auth}127.0.0.1:{self.port}/{db}"

    def unix_url(self, db=None):
        return f"unix://{self.unix_path}" + (f"?db={db}" if db is not None else "")

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def restart(self):
        """SIGKILL (a crash: no shutdown save) and start again on the same port and dir (with appendonly,
        from the AOF). Returns once it answers PING, i.e. once it has loaded its data."""
        port = self.port
        self.stop()
        return self.start(port=port)

    def stop(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
        self.proc = None


class MockApi:
    """The mock HTTP API (tests/mockapi/README.md): `mockapi --port 0` on 127.0.0.1, which prints
    `port N` on stdout once it listens. Its stdout/stderr go to files in workdir."""

    def __init__(self, binary, workdir):
        self.binary = str(binary)
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.out_path = self.workdir / "mockapi.stdout"
        self.err_path = self.workdir / "mockapi.stderr"
        self.port = None
        self.proc = None

    @property
    def url(self):
        """Base URL, without a trailing slash: http://127.0.0.1:PORT"""
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout=10, port=0):
        """port 0 picks a free one; a given port lets a test bring the API back where it was."""
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen([self.binary, "--port", str(port)], stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=err, preexec_fn=_die_with_parent)
        deadline = time.monotonic() + scaled(timeout)
        while time.monotonic() < deadline:
            m = re.match(r"port (\d+)\n", self.out_path.read_text(errors="replace"))
            if m:
                self.port = int(m.group(1))
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.01)
        state = "still running" if self.proc.poll() is None else f"exit {self.proc.returncode}"
        self.stop()
        raise RuntimeError(f"could not start {self.binary} --port {port} ({state}, no `port N` line on stdout); "
                           f"stderr: {one_line(self.err_path.read_text(errors='replace')[-400:])}")

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self):
        """SIGTERM (so a sanitizer build writes its report), then SIGKILL after 5 s."""
        stop_process(self.proc)
        self.proc = None

    def sanitizer_report(self):
        try:
            text = self.err_path.read_text(errors="replace")
        except OSError:
            return None
        for line in text.splitlines():
            if SANITIZER_REPORT.search(line):
                return line.strip()[:300]
        return None

    def request(self, method, target, timeout=10):
        """(status, parsed JSON body) of one request to the mock (never through a proxy)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, target)
            resp = conn.getresponse()
            body = resp.read()
        finally:
            conn.close()
        try:
            return resp.status, json.loads(body)
        except ValueError:
            raise TestFailure(f"mockapi {method} {target}: answer is not JSON: {body[:120]!r}")

    def count(self, path):
        """Requests the mock has counted for path (the URL-decoded path, without the query)."""
        status, body = self.request("GET", "/_count?path=" + urllib.parse.quote(path, safe="/"))
        check(status == 200, f"mockapi /_count?path={path}: HTTP {status} {body}")
        return body["count"]

    def counts(self):
        """{"total": N, "paths": {path: N}}"""
        status, body = self.request("GET", "/_count")
        check(status == 200, f"mockapi /_count: HTTP {status} {body}")
        return body

    def total(self):
        return self.counts()["total"]

    def reset(self):
        status, body = self.request("POST", "/_reset")
        check(status == 200 and body.get("ok") is True, f"mockapi /_reset: HTTP {status} {body}")


class Proc:
    """A running or finished chunkd subprocess; output is captured in files."""

    def __init__(self, name, argv, popen, out_path, err_path):
        self.name, self.argv, self.popen = name, argv, popen
        self.out_path, self.err_path = out_path, err_path

    @property
    def pid(self):
        return self.popen.pid

    @property
    def returncode(self):
        return self.popen.poll()

    def alive(self):
        return self.popen.poll() is None

    def send(self, sig):
        if self.alive():
            self.popen.send_signal(sig)

    def kill(self):
        if self.alive():
            self.popen.kill()
        self.popen.wait()

    def stdout(self):
        return Path(self.out_path).read_text(encoding="utf-8", errors="replace")

    def stderr(self):
        return Path(self.err_path).read_text(encoding="utf-8", errors="replace")

    def describe(self):
        rc = self.popen.poll()
        state = "running" if rc is None else f"exit {rc}" if rc >= 0 else f"killed by signal {-rc}"
        err = one_line(self.stderr()[-600:], 300)
        return f"`{self.name}` {state}" + (f"; stderr: {err}" if err else "")

    def wait(self, timeout, expect_rc=None):
        """Wait for exit (deadline scaled); optionally check the exit status. Returns it."""
        try:
            rc = self.popen.wait(scaled(timeout))
        except subprocess.TimeoutExpired:
            raise TestFailure(f"`{self.name}` still running after {scaled(timeout):.1f}s; "
                              f"stderr: {one_line(self.stderr()[-600:], 300)}")
        if expect_rc is not None and rc != expect_rc:
            raise TestFailure(f"expected exit {expect_rc}, got {self.describe()}")
        return rc


class Ctx:
    """Per-test context: unique queue, temp dir, Redis client, chunkd helpers."""

    def __init__(self, name, binary, server, tmp, mockapi=None):
        self.name = name
        self.bin = str(binary)
        self.server = server
        self.mockapi = mockapi
        self.tmp = Path(tmp)
        self.queue = "it-" + re.sub(r"[^A-Za-z0-9]+", "-", name) + "-" + os.urandom(3).hex()
        self.r = server.client()
        self.procs = []
        self.servers = []
        self.extra_dirs = []

    @property
    def mock(self):
        """The run's MockApi; a test that uses it fails when run.py was not given --mockapi."""
        if self.mockapi is None:
            raise TestFailure("this test needs the mock HTTP API: run.py --mockapi PATH "
                              "(e.g. --mockapi build/mockapi; `make integration` passes it)")
        return self.mockapi

    # ---- Redis keys and state -------------------------------------------------

    def key(self, suffix, queue=None):
        return f"chunkd:{{{queue or self.queue}}}:{suffix}"

    def stats(self, queue=None):
        return {k: int(v) for k, v in self.r.hgetall(self.key("stats", queue)).items()}

    def stat(self, name, queue=None):
        value = self.r.execute("HGET", self.key("stats", queue), name)
        return int(value) if value is not None else 0

    def llen(self, suffix, queue=None):
        return self.r.execute("LLEN", self.key(suffix, queue))

    def xlen(self, queue=None):
        """Result lines in the results stream (an entry holds the lines of one commit)."""
        return len(stream_lines(self.r, self.key("results", queue)))

    def pending_chunks(self, queue=None):
        """Pending chunks, parsed, oldest first (producers LPUSH, so reverse LRANGE)."""
        raw = self.r.lrange_all(self.key("pending", queue))
        chunks = []
        for text in reversed(raw):
            try:
                chunks.append(json.loads(text))
            except ValueError:
                raise TestFailure(f"pending holds a non-JSON chunk: {text[:120]!r}")
        return chunks

    def done_bits(self, chunk_id, queue=None):
        """Indexes of the items a chunk's checkpoint marks as committed (commit.lua's SETBIT bitmap)."""
        keys = self.r.keys(self.key(f"done:{chunk_id}:*", queue))  # done:<chunk id>:<hash of the chunk text>
        if not keys:
            return set()
        check(len(keys) == 1, f"chunk id {chunk_id} has {len(keys)} checkpoints: {keys}")
        raw = self.r.execute("GET", keys[0])
        if raw is None:
            return set()
        data = raw.encode("utf-8", "surrogateescape")
        return {i for i in range(len(data) * 8) if data[i // 8] >> (7 - i % 8) & 1}

    def pending_todo(self, queue=None):
        """Ids (id_key) of the items pending chunks still have to run: those their checkpoint does not mark done."""
        todo = []
        for ch in self.pending_chunks(queue):
            done = self.done_bits(ch["chunk"], queue)
            todo += [id_key(it["id"]) for i, it in enumerate(ch["items"]) if i not in done]
        return todo

    def processing_keys(self, queue=None):
        return self.r.keys(self.key("processing:*", queue))

    def processing_len(self, queue=None):
        return sum(self.r.execute("LLEN", k) for k in self.processing_keys(queue))

    def stream_results(self, queue=None):
        """Result lines from the results stream, parsed."""
        rows = []
        for line in stream_lines(self.r, self.key("results", queue)):
            try:
                rows.append(json.loads(line))
            except ValueError:
                raise TestFailure(f"a line of the results stream is not JSON: {line[:120]!r}")
        return rows

    def dead_entries(self, queue=None):
        return [json.loads(t) for t in reversed(self.r.lrange_all(self.key("dead", queue)))]

    # ---- files ----------------------------------------------------------------

    def path(self, name):
        return self.tmp / name

    def short_tmpdir(self):
        """A fresh, empty directory with a short path (chunkd falls back to /tmp for a long $TMPDIR)."""
        path = Path(tempfile.mkdtemp(prefix="cit-", dir="/tmp"))
        self.extra_dirs.append(path)
        return path

    def write_jsonl(self, name, rows):
        """Write rows (objects are JSON-encoded compactly; str rows are raw lines)."""
        lines = [r if isinstance(r, str) else json.dumps(r, separators=(",", ":"), ensure_ascii=False)
                 for r in rows]
        path = self.path(name)
        path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        return path

    # ---- chunkd processes -------------------------------------------------------

    def env(self, redis="env", url=None, extra=None):
        """Environment for chunkd: ours minus REDIS_URL/CHUNKD_* and proxy variables, plus what the test asks."""
        env = {k: v for k, v in os.environ.items()
               if k != "REDIS_URL" and not k.startswith("CHUNKD_") and k.lower() not in PROXY_VARS}
        if redis == "env":
            env["REDIS_URL"] = url or self.server.url()
        # Workers serve /healthz and /metrics on 8080 by default; tests run several at once, so only the tests
        # of those endpoints turn it on (with a free port).
        env["CHUNKD_HTTP_PORT"] = "0"
        env.update(extra or {})
        return env

    def spawn(self, cmd, *args, redis="env", url=None, env=None, stdin=None, cwd=None, name=None, nofile=None):
        """Start `chunkd cmd args...`.

        redis: "env" passes the address as REDIS_URL, "flag" as --redis URL, None not at all.
        stdin: None (empty), bytes/str (the content), or a pathlib.Path (a file to read).
        nofile: a soft limit on open descriptors for the process (its hard limit is left as it is).
        """
        argv = [self.bin] + ([cmd] if cmd else [])
        if redis == "flag":
            argv += ["--redis", url or self.server.url()]
        argv += [str(a) for a in args]
        n = len(self.procs) + 1
        label = name or f"chunkd {cmd}"
        out_path = self.tmp / f"proc{n:02d}-{cmd or 'none'}.stdout"
        err_path = self.tmp / f"proc{n:02d}-{cmd or 'none'}.stderr"
        if isinstance(stdin, (bytes, str)):
            stdin_path = self.tmp / f"proc{n:02d}.stdin"
            stdin_path.write_bytes(stdin.encode() if isinstance(stdin, str) else stdin)
            stdin = stdin_path
        with open(out_path, "wb") as out, open(err_path, "wb") as err, \
                open(stdin if stdin is not None else os.devnull, "rb") as inp:
            popen = subprocess.Popen(argv, stdin=inp, stdout=out, stderr=err,
                                     env=self.env(redis, url, env), cwd=cwd or self.tmp,
                                     preexec_fn=_preexec(nofile))
        proc = Proc(label, argv, popen, out_path, err_path)
        self.procs.append(proc)
        return proc

    def spawn_http(self, cmd, *args, env=None, attempts=5, **kw):
        """Start `chunkd cmd args...` (a worker or `run`) serving HTTP on 127.0.0.1 at a free port; returns
        (proc, port) once chunkd has logged that it serves on that port, so a probe reaches this chunkd and not
        whatever else took the port. free_port() releases the port before chunkd binds it: when another process
        took it meanwhile, chunkd exits 1 ("cannot serve /healthz") and is started again on another port."""
        for attempt in range(1, attempts + 1):
            port = free_port()
            proc = self.spawn(cmd, "--http-addr", "127.0.0.1", *args,
                              env={**(env or {}), "CHUNKD_HTTP_PORT": str(port)}, **kw)
            serving = f"/metrics on 127.0.0.1:{port}"
            wait_until(lambda: serving in proc.stderr() or not proc.alive(), 15,
                       lambda: f"`{proc.name}` serving HTTP on port {port} ({proc.describe()})")
            if serving in proc.stderr():
                return proc, port
            if "cannot serve /healthz" not in proc.stderr() or attempt == attempts:
                raise TestFailure(f"`{proc.name}` did not serve HTTP on port {port}: {proc.describe()}")
        raise AssertionError("unreachable")

    def run(self, cmd, *args, timeout=30, expect_rc=0, **kw):
        """Run `chunkd cmd args...` to completion and check its exit status."""
        proc = self.spawn(cmd, *args, **kw)
        proc.wait(timeout, expect_rc=expect_rc)
        return proc

    def status_json(self, queue=None, **kw):
        proc = self.run("status", "--queue", queue or self.queue, "--json", **kw)
        try:
            return json.loads(proc.stdout())
        except ValueError:
            raise TestFailure(f"status --json printed non-JSON: {one_line(proc.stdout(), 200)!r}")

    def sanitizer_reports(self):
        """First ASan/UBSan/LSan report line found in any chunkd stderr of this test, or None."""
        for proc in self.procs:
            for line in proc.stderr().splitlines():
                if SANITIZER_REPORT.search(line):
                    return f"`{proc.name}`: {line.strip()[:300]}"
        return None

    def start_redis(self, **kw):
        """An extra throwaway redis-server for this test (stopped at the end of the test)."""
        server = RedisServer(self.tmp / f"redis{len(self.servers) + 1}", **kw).start()
        self.servers.append(server)
        return server

    def cleanup(self):
        for proc in self.procs:
            proc.kill()
        for server in self.servers:
            server.stop()
        for path in self.extra_dirs:
            shutil.rmtree(path, ignore_errors=True)
        self.r.close()
