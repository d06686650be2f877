"""chunkd against a Redis that requires TLS (rediss://): a real redis-server 7.0 with TLS only.

Each test makes its own CA and certificates with `openssl` (as test_tls.py does for the http handler) and starts
redis-server with `--port 0 --tls-port P` (no plain-text port at all), `--tls-auth-clients no` (or `yes` for mutual
TLS). Certificates: ca.pem (the test CA), other-ca.pem (an unrelated CA), server.pem (IP 127.0.0.1 and DNS localhost),
wrong-name.pem (DNS wrong-name.invalid only) and client.pem (a client certificate), all signed by ca.pem. The test
talks to the server itself over TLS too (Python's ssl module), to look at and kill chunkd's connections.
"""

import os
import signal
import socket
import ssl
import subprocess
import time
from pathlib import Path

from harness import (REDIS_SERVER, _die_with_parent, assert_exactly_once, check, free_port, http_get, one_line,
                     read_jsonl, scaled, wait_until)
from resp import Redis
from test_tls import _openssl

ERR_LIMIT_S = 15  # generous bound for a command that must fail: the connect timeout is 5 s, or 1 s when given


def _make_certs(workdir):
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for name in ("ca", "other-ca"):
        _openssl(workdir, "req", "-x509", *ec, "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2",
                 "-subj", f"/CN=chunkd redis test {name}", "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    for name, cn, san, usage in (("server", "127.0.0.1", "IP:127.0.0.1,DNS:localhost", "serverAuth,clientAuth"),
                                 ("wrong-name", "wrong-name.invalid", "DNS:wrong-name.invalid", "serverAuth"),
                                 ("client", "chunkd", "DNS:chunkd", "clientAuth")):
        (workdir / f"{name}.ext").write_text(f"subjectAltName={san}\nbasicConstraints=CA:FALSE\n"
                                             f"keyUsage=critical,digitalSignature\nextendedKeyUsage={usage}\n")
        _openssl(workdir, "req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={cn}")
        _openssl(workdir, "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                 "-CAcreateserial", "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.pem")


class TlsRedis:
    """redis-server with TLS only on a free loopback port, certificates from _make_certs in certs."""

    def __init__(self, workdir, certs, cert="server", auth_clients="no"):
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.certs, self.cert, self.auth_clients = Path(certs), cert, auth_clients
        self.port = self.proc = None

    def start(self):
        for _ in range(5):  # a port taken between free_port() and redis-server's bind: try another
            self.port = free_port()
            argv = [REDIS_SERVER, "--port", "0", "--tls-port", str(self.port), "--bind", "127.0.0.1",
                    "--tls-cert-file", str(self.certs / f"{self.cert}.pem"),
                    "--tls-key-file", str(self.certs / f"{self.cert}.key"),
                    "--tls-ca-cert-file", str(self.certs / "ca.pem"), "--tls-auth-clients", self.auth_clients,
                    "--save", "", "--appendonly", "no", "--dir", str(self.dir),
                    "--logfile", str(self.dir / "redis.log"), "--daemonize", "no"]
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL, preexec_fn=_die_with_parent)
            deadline = time.monotonic() + scaled(10)
            while self.proc.poll() is None and time.monotonic() < deadline:
                try:
                    with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                        return self
                except OSError:
                    time.sleep(0.02)
            self.stop()
        log = self.dir / "redis.log"
        raise RuntimeError("could not start redis-server with TLS: "
                           + (one_line(log.read_text()[-400:]) if log.exists() else "no log"))

    def url(self, host="127.0.0.1"):
        return f"rediss://{host}:{self.port}/0"

    def client(self):
        """The test's own connection, over TLS (with the client certificate, which a server that does not ask
        ignores)."""
        tls = ssl.create_default_context(cafile=str(self.certs / "ca.pem"))
        tls.load_cert_chain(str(self.certs / "client.pem"), str(self.certs / "client.key"))
        c = Redis.__new__(Redis)
        c.sock = tls.wrap_socket(socket.create_connection(("127.0.0.1", self.port), timeout=10),
                                 server_hostname="127.0.0.1")
        c.reader = c.sock.makefile("rb")
        return c

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None


def _setup(ctx, **kw):
    """Certificates in ctx.tmp/certs and a TLS redis-server (stopped at the end of the test)."""
    certs = ctx.tmp / "certs"
    if not certs.exists():
        certs.mkdir()
        _make_certs(certs)
    server = TlsRedis(ctx.tmp / f"tls-redis{len(ctx.servers) + 1}", certs, **kw).start()
    ctx.servers.append(server)
    return server, certs


def _ca(certs, name="ca"):
    return ["--redis-ca-file", certs / f"{name}.pem"]


def _items(ctx, n, name="items.jsonl", **extra):
    items = [{"id": i, "sleep_ms": 5, **extra} for i in range(n)]
    return items, ctx.write_jsonl(name, items)


def _fails_clearly(ctx, cmd, url, flags, expect, *args, timeout=ERR_LIMIT_S):
    """`chunkd cmd` exits 1 within the bound, saying `cannot connect to Redis at URL: ...expect...` on stderr."""
    proc = ctx.spawn(cmd, "--queue", ctx.queue, *flags, *args, redis="flag", url=url)
    start = time.monotonic()
    proc.wait(timeout, expect_rc=1)
    took = time.monotonic() - start
    err = proc.stderr()
    check(f"cannot connect to Redis at {url}: " in err and expect in err,
          f"`chunkd {cmd}` stderr does not say 'cannot connect to Redis at {url}: ...{expect}...': {one_line(err)}")
    check(took < scaled(timeout), f"`chunkd {cmd}` took {took:.1f}s to fail")
    return err


def test_pipeline_over_tls(ctx):
    """enqueue | worker | collect over rediss:// (IP address SAN, the test CA): every id once; then `chunkd run`
    against rediss://localhost (a DNS name: SNI and the DNS SAN)."""
    server, certs = _setup(ctx)
    url, n = server.url(), 3000
    items, path = _items(ctx, n)
    ctx.run("enqueue", "--queue", ctx.queue, "--chunk-size", 50, *_ca(certs), path, redis="flag", url=url)
    worker = ctx.spawn("worker", "--queue", ctx.queue, "--concurrency", 500, "--exit-when-empty", *_ca(certs),
                       redis="flag", url=url)
    out = ctx.path("results.jsonl")
    ctx.run("collect", "--queue", ctx.queue, "--out", out, "--until-done", *_ca(certs), redis="flag", url=url,
            timeout=120)
    worker.wait(60, expect_rc=0)
    results = read_jsonl(out)
    assert_exactly_once(results, [it["id"] for it in items], "collect output over TLS")
    check(all(r.get("ok") is True for r in results), "a result over TLS is not ok")

    out2 = ctx.path("run.jsonl")
    run = ctx.run("run", "--concurrency", 1000, "--out", out2, *_ca(certs), path, redis="flag",
                  url=server.url("localhost"), timeout=120)
    assert_exactly_once(read_jsonl(out2), [it["id"] for it in items], f"`chunkd run` over TLS ({run.describe()})")


def test_large_commands_over_tls(ctx):
    """Chunks and commits of more than 1 MiB (rconn writes those straight to its descriptor, here the
    socketpair): every 20 KB payload comes back whole, once."""
    server, certs = _setup(ctx)
    payload = "x" * 20000
    items, path = _items(ctx, 400, pad=payload)
    out = ctx.path("results.jsonl")
    ctx.run("run", "--handler", "echo", "--chunk-size", 100, "--out", out, *_ca(certs), path, redis="flag",
            url=server.url(), timeout=120)
    results = read_jsonl(out)
    assert_exactly_once(results, [it["id"] for it in items], "echo results over TLS")
    bad = [r["id"] for r in results if (r.get("result") or {}).get("pad") != payload]
    check(not bad, f"{len(bad)} payloads came back changed (e.g. id {bad[:3]})")


def test_wrong_ca_fails_clearly(ctx):
    """A server certificate from a CA that is not trusted (the given CA file, or the system's): enqueue and status
    exit 1 at once with the verify error; a worker keeps trying but says why on stderr and /readyz."""
    server, certs = _setup(ctx)
    url = server.url()
    _, path = _items(ctx, 10)
    expect = "TLS: certificate verify failed ("
    _fails_clearly(ctx, "enqueue", url, _ca(certs, "other-ca"), expect, path)
    _fails_clearly(ctx, "status", url, _ca(certs, "other-ca"), expect)
    _fails_clearly(ctx, "status", url, [], expect)  # the system's CAs do not know the test CA
    worker, port = ctx.spawn_http("worker", "--queue", ctx.queue, *_ca(certs, "other-ca"), redis="flag", url=url)
    wait_until(lambda: expect in worker.stderr(), 15, lambda: f"the worker's reason on stderr ({worker.describe()})")
    status, body = http_get(port, "/readyz")
    check(status == 503 and expect in body, f"/readyz: expected 503 naming the TLS error, got {status} {body!r}")
    worker.send(signal.SIGTERM)
    worker.wait(15)


def test_wrong_host_name_fails_clearly(ctx):
    """A certificate of the right CA for another name: exit 1, 'host name mismatch'."""
    server, certs = _setup(ctx, cert="wrong-name")
    _fails_clearly(ctx, "status", server.url(), _ca(certs), "TLS: host name mismatch")
    _fails_clearly(ctx, "status", server.url("localhost"), _ca(certs), "TLS: host name mismatch")


def test_plain_text_port_fails_clearly(ctx):
    """rediss:// to the run's plain-text redis-server: exit 1 within the connect timeout, naming the likely cause."""
    certs = ctx.tmp / "certs"
    certs.mkdir()
    _make_certs(certs)
    url = f"rediss://127.0.0.1:{ctx.server.port}/0"
    _fails_clearly(ctx, "status", url, [*_ca(certs), "--redis-timeout-ms", 1000], "(is it a plain-text port?)")


def test_insecure_switch(ctx):
    """--redis-tls-insecure: no CA needed (without it the system's CAs refuse the test CA), and one warning line
    saying the server is not verified."""
    server, certs = _setup(ctx)
    _, path = _items(ctx, 100)
    _fails_clearly(ctx, "enqueue", server.url(), [], "TLS: certificate verify failed", path)
    ctx.run("enqueue", "--queue", ctx.queue, "--redis-tls-insecure", path, redis="flag", url=server.url())
    proc = ctx.run("status", "--queue", ctx.queue, "--redis-tls-insecure", redis="flag", url=server.url())
    warnings = [line for line in proc.stderr().splitlines() if "--redis-tls-insecure" in line]
    check(len(warnings) == 1 and "not verified" in warnings[0],
          f"expected one warning line about --redis-tls-insecure, got: {one_line(proc.stderr())}")
    check("100" in proc.stdout(), f"status does not show the 100 items enqueued: {one_line(proc.stdout())}")


def test_mutual_tls(ctx):
    """--tls-auth-clients yes: with --redis-cert-file/--redis-key-file the pipeline runs; without, exit 1 saying the
    server requires a client certificate; with a certificate of another CA, that the server refused it."""
    server, certs = _setup(ctx, auth_clients="yes")
    url = server.url()
    _fails_clearly(ctx, "status", url, _ca(certs), "TLS: the server requires a client certificate")
    _fails_clearly(ctx, "status", url, [*_ca(certs), "--redis-cert-file", certs / "other-ca.pem",
                                        "--redis-key-file", certs / "other-ca.key"],
                   "TLS: the server refused the client certificate")
    items, path = _items(ctx, 500)
    out = ctx.path("results.jsonl")
    mtls = [*_ca(certs), "--redis-cert-file", certs / "client.pem", "--redis-key-file", certs / "client.key"]
    ctx.run("run", "--out", out, *mtls, path, redis="flag", url=url, timeout=60)
    assert_exactly_once(read_jsonl(out), [it["id"] for it in items], "`chunkd run` over mutual TLS")


def test_tls_files_checked_at_start(ctx):
    """A TLS file that cannot be read, a certificate without its key, a key that does not match it, an encrypted
    key (never a pass phrase prompt): exit 2 at once, naming the flag or file and its path."""
    server, certs = _setup(ctx)
    missing = ctx.tmp / "no-such-ca.pem"
    proc = ctx.run("status", "--queue", ctx.queue, "--redis-ca-file", missing, redis="flag", url=server.url(),
                   expect_rc=2)
    check(f"cannot read --redis-ca-file {missing}: No such file or directory" in proc.stderr(),
          f"stderr: {one_line(proc.stderr())}")
    proc = ctx.run("status", "--queue", ctx.queue, *_ca(certs), "--redis-cert-file", certs / "client.pem",
                   redis="flag", url=server.url(), expect_rc=2)
    check("--redis-cert-file (CHUNKD_REDIS_CERT_FILE) and --redis-key-file" in proc.stderr(),
          f"stderr: {one_line(proc.stderr())}")
    proc = ctx.run("status", "--queue", ctx.queue, *_ca(certs), "--redis-cert-file", certs / "client.pem",
                   "--redis-key-file", certs / "server.key", redis="flag", url=server.url(), expect_rc=2)
    check(f"client key file {certs / 'server.key'}" in proc.stderr(),
          f"stderr: {one_line(proc.stderr())}")
    check("PRIVATE KEY" not in proc.stderr(), "key material in the error")
    _openssl(certs, "pkey", "-in", "client.key", "-aes256", "-passout", "pass:secret", "-out", "client-enc.key")
    proc = ctx.run("status", "--queue", ctx.queue, *_ca(certs), "--redis-cert-file", certs / "client.pem",
                   "--redis-key-file", certs / "client-enc.key", redis="flag", url=server.url(), expect_rc=2)
    check(f"client key file {certs / 'client-enc.key'}: no usable private key" in proc.stderr(),
          f"an encrypted key: stderr {one_line(proc.stderr())}")


def _per_connection_excess(pid, client, own_id):
    """(threads, descriptors) of the process beyond one pump thread and three descriptors (TCP socket, both ends of
    the socketpair) per connection the server lists for it: constant unless a connection left something behind."""
    listed = client.execute("CLIENT", "LIST", "TYPE", "normal").splitlines()
    conns = sum(1 for line in listed if not line.startswith(f"id={own_id} "))
    threads, fds = len(os.listdir(f"/proc/{pid}/task")), len(os.listdir(f"/proc/{pid}/fd"))
    return conns, threads - conns, fds - 3 * conns


def test_connections_end_cleanly(ctx):
    """The server drops every client of a running worker three times, and a few items then make every connection
    notice: the worker reconnects (ready, the items done), and its threads and descriptors beyond one pump and
    three descriptors per listed connection stay as they were (each pump ended with its connection); SIGTERM then
    ends it with exit 0."""
    server, certs = _setup(ctx)
    _, path = _items(ctx, 20)
    worker, port = ctx.spawn_http("worker", "--queue", ctx.queue, *_ca(certs), redis="flag", url=server.url())
    wait_until(lambda: http_get(port, "/readyz")[0] == 200, 20, lambda: f"worker ready ({worker.describe()})")
    with server.client() as c:
        own = c.execute("CLIENT", "ID")
        samples = []

        def steady():
            samples.append(_per_connection_excess(worker.pid, c, own)[1:])
            return len(samples) >= 3 and samples[-1] == samples[-2] == samples[-3]
        wait_until(steady, 10, lambda: f"a steady count of threads and fds: {samples[-5:]}")
        base = samples[-1]
        for round_ in range(1, 4):
            c.execute("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
            ctx.run("enqueue", "--queue", ctx.queue, *_ca(certs), path, redis="flag", url=server.url())
            wait_until(lambda: c.execute("HGET", ctx.key("stats"), "done") == str(20 * round_), 30,
                       lambda: f"{20 * round_} items done ({worker.describe()})")
            state = []

            def back():
                state[:] = [_per_connection_excess(worker.pid, c, own)]
                return http_get(port, "/readyz")[0] == 200 and state[0][0] >= 2 and state[0][1:] == base
            wait_until(back, 30, lambda: f"ready again with (threads, fds) beyond the connections' = {base}; "
                                         f"now (connections, threads, fds) = {state} ({worker.describe()})")
    worker.send(signal.SIGTERM)
    worker.wait(20, expect_rc=0)
