"""Security (issue 15, parts 2 to 4): what an exec subprocess can see of the worker, item paths kept inside
--base-url's path, --allow-hosts with ports, and log lines that text from outside cannot forge.

The subprocess tests run chunkd and its subprocesses as an unprivileged user (nobody, through setpriv), as in a
container: root could read any process's memory whatever chunkd does.
"""

import json
import os
import shutil
import socket
import sys
import tempfile
import threading

from harness import check, skip, stream_lines, wait_until

NOBODY = 65534

# An exec subprocess that looks for the worker's secrets: it reads /proc/<pid>/environ and /proc/<pid>/mem of its
# parent (the keeper) and grandparent (chunkd) and replies with what it could read. The item names the secrets to
# look for.
PROBE = r'''
import json, os, sys

def read(path, limit=1 << 20):
    try:
        with open(path, "rb") as f:
            return f.read(limit), None
    except OSError as e:
        return None, e.strerror

def ppid_of(pid):
    with open("/proc/%d/stat" % pid) as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])

def mem_readable(pid):
    """Reads a byte of the process's first readable mapping through /proc/<pid>/mem."""
    try:
        fd = os.open("/proc/%d/mem" % pid, os.O_RDONLY)
    except OSError as e:
        return "open: " + e.strerror
    try:
        maps, err = read("/proc/%d/maps" % pid)
        if maps is None:
            return "opened (maps: %s)" % err
        for line in maps.decode().splitlines():
            start, perms = line.split()[0].split("-")[0], line.split()[1]
            if perms.startswith("r"):
                try:
                    os.pread(fd, 1, int(start, 16))
                    return "read"
                except OSError:
                    continue
        return "opened"
    finally:
        os.close(fd)

for line in sys.stdin:
    msg = json.loads(line)
    secrets = [s.encode() for s in msg["item"]["secrets"]]
    keeper = os.getppid()
    report = {"uid": os.getuid()}
    for name, pid in (("keeper", keeper), ("chunkd", ppid_of(keeper))):
        env, err = read("/proc/%d/environ" % pid)
        report[name] = {
            "environ": "read" if env is not None else err,
            "secrets_in_environ": [s.decode() for s in secrets if env is not None and s in env],
            "mem": mem_readable(pid),
            "exe": os.readlink("/proc/%d/exe" % pid) if name == "keeper" else None,
        }
    report["own_environ"] = sorted(os.environ)
    sys.stdout.write(json.dumps({"id": msg["id"], "result": report}) + "\n")
    sys.stdout.flush()
'''


def _nobody_dir(ctx):
    """A directory the unprivileged user can read (the test's temp dir may not be), removed after the test."""
    path = tempfile.mkdtemp(prefix="chunkd-it-nobody-")
    os.chmod(path, 0o755)
    ctx.extra_dirs.append(path)
    return path


def _spawn_as_nobody(ctx, cmd, *args, **kw):
    """`chunkd cmd args...` as user and group nobody without supplementary groups (exec: same pid)."""
    if os.getuid() != 0:
        skip("needs root to start chunkd as another user")
    setpriv = shutil.which("setpriv")
    if not setpriv:
        skip("setpriv (util-linux) is not installed")
    wrapper = os.path.join(_nobody_dir(ctx), "as-nobody")
    with open(wrapper, "w") as f:
        f.write(f"#!/bin/sh\nexec {setpriv} --reuid={NOBODY} --regid={NOBODY} --clear-groups {ctx.bin} \"$@\"\n")
    os.chmod(wrapper, 0o755)
    real = ctx.bin
    ctx.bin = wrapper
    try:
        return ctx.spawn(cmd, *args, name=f"chunkd {cmd} (as nobody)", **kw)
    finally:
        ctx.bin = real


def _system_python():
    """A Python the unprivileged user can run (the test's own may live under /root)."""
    for path in ("/usr/bin/python3", "/usr/local/bin/python3"):
        if os.access(path, os.X_OK):
            return path
    skip("no system python3 for the unprivileged user")
    return None


def _stream_results(server, ctx):
    with server.client() as c:
        return [json.loads(line) for line in stream_lines(c, ctx.key("results"))]


def test_subprocess_cannot_read_worker_secrets(ctx):
    """An exec subprocess of the same (non-root) user cannot read the worker's environment or memory: REDIS_URL's
    password and CHUNKD_HTTP_HEADERS stay out of its reach, and the keeper it runs under holds neither."""
    password = "pw-" + os.urandom(6).hex()
    header_secret = "hdr-" + os.urandom(6).hex()
    server = ctx.start_redis(password=password)
    url = server.url(password=password)
    probe = os.path.join(_nobody_dir(ctx), "probe.py")
    with open(probe, "w") as f:
        f.write(PROBE)
    os.chmod(probe, 0o644)
    ctx.run("enqueue", "--queue", ctx.queue, ctx.write_jsonl("items.jsonl", [{"id": 1, "secrets": [password,
                                                                                              header_secret]}]),
            url=url)
    worker = _spawn_as_nobody(ctx, "worker", "--queue", ctx.queue, "--handler", "exec", "--procs", 1,
                              "--cmd", f"{_system_python()} {probe}", url=url,
                              env={"CHUNKD_HTTP_HEADERS": f"X-Secret: {header_secret}"})
    wait_until(lambda: _stream_results(server, ctx) or not worker.alive(), 60,
               lambda: f"the probe's result ({worker.describe()})")
    results = _stream_results(server, ctx)
    check(len(results) == 1 and results[0].get("ok") is True,
          f"the probe item: expected one ok result (the keeper starts under a non-dumpable chunkd), got {results}; "
          f"{worker.describe()}")
    report = results[0]["result"]
    check(report["uid"] == NOBODY, f"the probe ran as uid {report['uid']}, not nobody: the test proves nothing")
    check(report["keeper"]["exe"] == os.path.realpath(ctx.bin),
          f"the probe's parent is not a chunkd keeper: {report['keeper']}")
    chunkd = report["chunkd"]
    check(not chunkd["secrets_in_environ"],
          f"the subprocess read the worker's secrets from /proc/<worker>/environ: {chunkd}")
    check(chunkd["environ"] != "read", f"the subprocess could read /proc/<worker>/environ: {chunkd}")
    check(chunkd["mem"].startswith("open:"), f"the subprocess could open /proc/<worker>/mem: {chunkd}")
    keeper = report["keeper"]
    check(not keeper["secrets_in_environ"], f"the keeper's environment holds the worker's secrets: {keeper}")
    check(not {"REDIS_URL", "CHUNKD_HTTP_HEADERS"} & set(report["own_environ"]),
          f"the subprocess's environment: {report['own_environ']}")
    # Even a reader that may (root here) finds the secrets wiped from the worker's environment.
    with open(f"/proc/{worker.pid}/environ", "rb") as f:
        environ = f.read()
    check(password.encode() not in environ and header_secret.encode() not in environ,
          "the worker's /proc/<pid>/environ still shows its secrets after they were parsed")
    worker.send(15)
    worker.wait(30, expect_rc=0)


def test_exec_env_refuses_secret_names(ctx):
    """--env cannot hand chunkd's secret variables to the subprocesses."""
    for name in ("REDIS_URL", "CHUNKD_HTTP_HEADERS"):
        proc = ctx.run("worker", "--queue", ctx.queue, "--handler", "exec", "--cmd", "cat", "--exit-when-empty",
                       "--env", f"PATH,{name}",
                       expect_rc=None, timeout=30)
        check(proc.returncode != 0 and f"--env (CHUNKD_ENV): {name}" in proc.stderr(),
              f"--env {name}: expected a refusal naming it, got rc {proc.returncode}: {proc.stderr()[-400:]}")


# A subprocess writing terminal escapes and carriage returns to stderr, then replying.
NOISY = r'''
import json, sys
for line in sys.stdin:
    msg = json.loads(line)
    sys.stderr.write("before\x1b[2Jcleared\rFAKE 2026-01-01T00:00:00.000Z error forged\x07\x9b\n")
    sys.stderr.flush()
    sys.stdout.write(json.dumps({"id": msg["id"], "result": 1}) + "\n")
    sys.stdout.flush()
'''


def test_subprocess_stderr_cannot_forge_log_lines(ctx):
    """ESC, CR, BEL and a C1 CSI from a subprocess's stderr reach the text log escaped: one line, no control byte."""
    script = ctx.path("noisy.py")
    script.write_text(NOISY)
    ctx.run("enqueue", "--queue", ctx.queue, ctx.write_jsonl("items.jsonl", [{"id": 1}]))
    proc = ctx.run("worker", "--queue", ctx.queue, "--handler", "exec", "--procs", 1, "--exit-when-empty",
                   "--cmd", f"{sys.executable} {script}", timeout=60)
    raw = proc.err_path.read_bytes()
    lines = [line for line in raw.split(b"\n") if b"before" in line]
    check(len(lines) == 1, f"the subprocess's stderr line: expected one log line, got {lines}")
    line = lines[0]
    bad = sorted({b for b in line if b < 0x20 or b == 0x7f})
    check(not bad and b"\xc2\x9b" not in line,
          f"control bytes {bad} reached the log raw: {line!r}")
    check(b"before\\x1b[2Jcleared\\x0dFAKE 2026-01-01T00:00:00.000Z error forged\\x07\\xc2\\x9b" in line,
          f"the log line does not show the escapes: {line!r}")
    check(b"\nFAKE" not in raw and not any(l.startswith(b"FAKE") for l in raw.split(b"\n")),
          "a forged line starts a log line")


# ---- the http handler: item paths stay under --base-url's path; --allow-hosts ports ----------------------------

def test_item_path_cannot_leave_base_path(ctx):
    """With --base-url .../api, an item path with dot segments (raw, percent-encoded, mixed, or between encoded
    slashes) is refused with the reason: no request is made, so the secret headers go nowhere."""
    from test_http import SECRET, _echo, _http, _refused
    q, mock = ctx.queue, ctx.mock
    escaping = ["/../../secret-admin", "/%2e%2e/%2E%2E/secret-admin", "/.%2E/..%2fsecret-admin",
                f"/{q}/..%2F..%2F..%2Fsecret-admin", "/x/%2e./../secret-admin", "/./secret-admin",
                "/x\\..\\..\\secret-admin"]
    items = [{"id": f"escape-{i}", "path": path} for i, path in enumerate(escaping)]
    items.append({"id": "ok", "path": f"/{q}/ok", "query": {"next": "/../x"}})
    before = mock.total()
    results, _ = _http(ctx, items, "--base-url", f"{mock.url}/api", base_url=False, label="escape",
                       env={"CHUNKD_HTTP_HEADERS": f"Authorization: Bearer {SECRET}"})
    for i in range(len(escaping)):
        _refused(results, f"escape-{i}", '"path"', "segment", "--base-url")
    echo = _echo(results, "ok")
    check(echo["path"] == f"/api/{q}/ok" and echo["headers"].get("authorization") == f"Bearer {SECRET}",
          f"the control item: mock saw {echo['path']} with headers {sorted(echo['headers'])}")
    made = mock.total() - before
    check(made == 1 and mock.count("/secret-admin") == 0,
          lambda: f"escaping items reached the API (with the secret headers): the mock counted {made} requests "
                  f"(expected 1, the control item): {mock.counts()['paths']}")


class _Listener:
    """A loopback TCP port that counts the connections made to it (and closes them)."""

    def __enter__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()
        return self

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            conn.close()

    def __exit__(self, *exc):
        self.sock.close()


def test_allow_hosts_ports(ctx):
    """An --allow-hosts entry host:port allows that port only; a bare host allows only the scheme's default port."""
    from test_http import _echo, _http, _refused
    q, mock = ctx.queue, ctx.mock
    # A bare host: port 80 only (the mock listens elsewhere).
    before = mock.total()
    results, _ = _http(ctx, [{"id": "bare", "url": f"{mock.url}/{q}/bare"}], "--allow-hosts", "127.0.0.1",
                       base_url=False, label="bare", queue=q + "-bare", env={"CHUNKD_MAX_ATTEMPTS": "1"})
    _refused(results, "bare", "--allow-hosts", "80")
    check(mock.total() == before, lambda: f"a bare --allow-hosts host reached port {mock.port}: "
                                          f"{mock.counts()['paths']}")
    # host:port: that port only.
    with _Listener() as other:
        items = [{"id": "named-port", "url": f"{mock.url}/{q}/named-port"},
                 {"id": "other-port", "url": f"http://127.0.0.1:{other.port}/{q}/other-port"}]
        results, _ = _http(ctx, items, "--allow-hosts", f"127.0.0.1:{mock.port}", base_url=False, label="ports",
                           queue=q + "-ports", env={"CHUNKD_MAX_ATTEMPTS": "1"})
        connected = other.accepted
    check(_echo(results, "named-port")["path"] == f"/{q}/named-port", "the allowed host:port was not reached")
    _refused(results, "other-port", "--allow-hosts", str(other.port))
    check(connected == 0, f"the port not allowed was connected to {connected} time(s)")
    # A bad entry is refused at start, naming the setting.
    proc = ctx.run("run", "--queue", q + "-bad", "--handler", "http", "--allow-hosts", "::1",
                   ctx.write_jsonl("bad.jsonl", [{"url": "http://[::1]/"}]), expect_rc=None, timeout=30)
    check(proc.returncode != 0 and "--allow-hosts (CHUNKD_ALLOW_HOSTS)" in proc.stderr(),
          f"--allow-hosts ::1: expected a refusal at start, got {proc.describe()}")
