"""The http handler against a real TLS server: HTTP/2 multiplexing and certificate verification.

Each test makes its own CA and server certificates with `openssl` and starts Debian's nginx with the echo
module (packages nginx, libnginx-mod-http-echo and openssl; `make deps` installs them) on free loopback ports:

- port `good`: `listen 127.0.0.1:PORT ssl http2`, a certificate for 127.0.0.1 and localhost signed by the test CA;
- port `wrong_name`: the same CA, but a certificate for another host name only.

Every request waits ECHO_DELAY_S (`echo_sleep`, a timer, not a blocked worker), then gets 200 {"ok":true}. The
access log records, per request: port, connection serial number ($connection), requests on that connection so far
($connection_requests), protocol ($server_protocol), end time ($msec), duration ($request_time), status and URI,
so the tests see which protocol and how many connections chunkd used, and whether requests overlapped on one.

nginx runs in the foreground as a single process (`daemon off; master_process off;`), so it never switches user
and runs the same as root or not; its config, pid file, logs and temp paths are in the test's temp dir
(`-p DIR -e DIR/error.log -c DIR/nginx.conf`), and the test stops it at the end, also on failure.
"""

import collections
import math
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

from harness import _die_with_parent, check, free_port, one_line, scaled, stop_process, wait_until
from test_http import _failed, _http, _ok

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
ECHO_MODULE = "/usr/lib/nginx/modules/ngx_http_echo_module.so"
OPENSSL = shutil.which("openssl") or "/usr/bin/openssl"
ECHO_DELAY_S = 0.2
HANDLER_SRC = Path(__file__).resolve().parents[2] / "src" / "handler" / "handler_http.c"

NGINX_CONF = """\
load_module {module};
daemon off;
master_process off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log info;

events {{
    worker_connections 1024;
}}

http {{
    log_format tls '$server_port $connection $connection_requests $server_protocol $msec $request_time '
                   '$status $request_uri';
    access_log {dir}/access.log tls;
    client_body_temp_path {dir}/tmp/client_body;
    proxy_temp_path {dir}/tmp/proxy;
    fastcgi_temp_path {dir}/tmp/fastcgi;
    uwsgi_temp_path {dir}/tmp/uwsgi;
    scgi_temp_path {dir}/tmp/scgi;
    default_type application/json;
    keepalive_timeout 300s;

    server {{
        listen 127.0.0.1:{good} ssl http2;
        ssl_certificate {dir}/server.pem;
        ssl_certificate_key {dir}/server.key;
        location / {{
            echo_sleep {delay};
            echo '{{"ok":true}}';
        }}
    }}

    server {{
        listen 127.0.0.1:{wrong_name} ssl http2;
        ssl_certificate {dir}/wrong-name.pem;
        ssl_certificate_key {dir}/wrong-name.key;
        location / {{
            echo_sleep {delay};
            echo '{{"ok":true}}';
        }}
    }}
}}
"""

Request = collections.namedtuple("Request", "port conn conn_requests protocol end duration status uri")


def _openssl(workdir, *args):
    p = subprocess.run([OPENSSL, *args], cwd=workdir, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    check(p.returncode == 0, lambda: f"openssl {' '.join(args[:2])} failed (test set-up): "
                                     f"{one_line(p.stderr[-400:], 300)}")


def _make_certs(workdir):
    """ca.pem (the test CA), other-ca.pem (an unrelated CA), and keys and certificates signed by ca.pem:
    server.pem for IP 127.0.0.1 and DNS localhost, wrong-name.pem for DNS wrong-name.invalid only."""
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for name in ("ca", "other-ca"):
        _openssl(workdir, "req", "-x509", *ec, "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2",
                 "-subj", f"/CN=chunkd test {name}", "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    for name, cn, san in (("server", "127.0.0.1", "IP:127.0.0.1,DNS:localhost"),
                          ("wrong-name", "wrong-name.invalid", "DNS:wrong-name.invalid")):
        (workdir / f"{name}.ext").write_text(f"subjectAltName={san}\nbasicConstraints=CA:FALSE\n"
                                             "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n")
        _openssl(workdir, "req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={cn}")
        _openssl(workdir, "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                 "-CAcreateserial", "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.pem")


class TlsNginx:
    """nginx with the echo module on two free loopback TLS ports (see the module docstring); .stop() ends it."""

    def __init__(self, workdir):
        self.dir = Path(workdir)
        self.proc = None
        self.good = self.wrong_name = None

    def start(self):
        check(Path(NGINX).is_file() and Path(ECHO_MODULE).is_file(),
              f"needs {NGINX} and {ECHO_MODULE}: the Debian packages nginx and libnginx-mod-http-echo "
              "(`make deps` installs them)")
        (self.dir / "tmp").mkdir(parents=True, exist_ok=True)
        _make_certs(self.dir)
        error_log = self.dir / "error.log"
        for _ in range(5):  # a port taken between free_port() and nginx's bind: try others
            self.good, self.wrong_name = free_port(), free_port()
            if self.good == self.wrong_name:
                continue
            (self.dir / "nginx.conf").write_text(NGINX_CONF.format(
                module=ECHO_MODULE, dir=self.dir, good=self.good, wrong_name=self.wrong_name, delay=ECHO_DELAY_S))
            error_log.write_text("")
            with open(self.dir / "nginx.stdout", "wb") as out:
                self.proc = subprocess.Popen([NGINX, "-p", str(self.dir), "-e", str(error_log),
                                              "-c", str(self.dir / "nginx.conf")],
                                             stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                             preexec_fn=_die_with_parent)
            deadline = time.monotonic() + scaled(10)
            while self.proc.poll() is None and time.monotonic() < deadline:
                if self._listens(self.good) and self._listens(self.wrong_name):
                    return self
                time.sleep(0.02)
            self.stop()
            if "Address already in use" not in error_log.read_text(errors="replace"):
                break
        log = one_line(error_log.read_text(errors="replace")[-600:] if error_log.exists() else "", 400)
        raise RuntimeError(f"could not start nginx (test set-up); {error_log}: {log}")

    @staticmethod
    def _listens(port):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return True
        except OSError:
            return False

    def url(self, port=None, host="127.0.0.1"):
        return f"https://{host}:{port or self.good}"

    def requests(self, prefix):
        """The access log's requests whose URI starts with prefix."""
        rows = []
        try:
            text = (self.dir / "access.log").read_text(errors="replace")
        except FileNotFoundError:
            return rows
        for line in text.splitlines():
            f = line.split(" ")
            if len(f) == 8 and f[7].startswith(prefix):
                rows.append(Request(int(f[0]), int(f[1]), int(f[2]), f[3], float(f[4]), float(f[5]), int(f[6]),
                                    f[7]))
        return rows

    def wait_requests(self, prefix, n):
        """The requests under prefix, once the access log has n of them (nginx logs a request as it ends)."""
        return wait_until(lambda: len(self.requests(prefix)) >= n and self.requests(prefix), 10,
                          lambda: f"{n} requests under {prefix} in nginx's access log "
                                  f"(has {len(self.requests(prefix))})")

    def stop(self):
        """SIGTERM (fast shutdown), then SIGKILL after 5 s."""
        stop_process(self.proc)
        self.proc = None


def _start_nginx(ctx):
    nginx = TlsNginx(ctx.path("nginx"))
    ctx.servers.append(nginx)  # ctx.cleanup() stops it, whatever the test's outcome
    return nginx.start()


def _shard_conns():
    """HTTP_SHARD_CONNS of src/handler/handler_http.c: transfers per libcurl multi handle."""
    m = re.search(r"^#define HTTP_SHARD_CONNS (\d+)\b", HANDLER_SRC.read_text(), re.M)
    check(m, f"no `#define HTTP_SHARD_CONNS N` in {HANDLER_SRC} (test set-up)")
    return int(m.group(1))


def _peak_overlap(requests):
    """Most requests in flight at once on one connection (from their start and end times)."""
    events = sorted([(r.end - r.duration, 1) for r in requests] + [(r.end, -1) for r in requests],
                    key=lambda e: (e[0], e[1]))
    peak = now = 0
    for _, step in events:
        now += step
        peak = max(peak, now)
    return peak


def test_http2_multiplexed(ctx):
    # 200 calls at once to one https host: all over HTTP/2, on at most one connection per libcurl multi handle,
    # with many calls in flight together on one connection. Without multiplexing (HTTP/1.1, or without
    # CURLOPT_PIPEWAIT each transfer opening its own connection before the first one's ALPN answer) there would be
    # about one connection per call.
    nginx = _start_nginx(ctx)
    q = ctx.queue
    n, threads, concurrency = 200, 2, 200
    items = [{"id": i, "path": f"/{q}/h2/{i}"} for i in range(n)]
    results, _ = _http(ctx, items, "--base-url", nginx.url(), "--ca-file", nginx.dir / "ca.pem",
                       "--threads", threads, "--concurrency", concurrency, base_url=False, label="h2")
    for i in range(n):
        res = _ok(results, i)
        check(res["status"] == 200 and res["body"] == {"ok": True}, f"id {i}: expected 200 {{\"ok\":true}}, got {res}")

    reqs = nginx.wait_requests(f"/{q}/h2/", n)
    check(len(reqs) == n, f"nginx logged {len(reqs)} requests for {n} items (each item once, no retry expected)")
    protocols = collections.Counter(r.protocol for r in reqs)
    check(protocols == {"HTTP/2.0": n}, f"requests by protocol: {dict(protocols)} (expected all HTTP/2.0)")

    # handler_http.c: each loop (--threads) has ceil((concurrency / loops + 1) / HTTP_SHARD_CONNS) multi handles,
    # and connections are not shared between multi handles: at most one connection each.
    per_loop = concurrency // threads + 1
    bound = threads * math.ceil(per_loop / _shard_conns())
    by_conn = collections.defaultdict(list)
    for r in reqs:
        by_conn[r.conn].append(r)
    per_conn = sorted((len(v) for v in by_conn.values()), reverse=True)
    check(len(by_conn) <= bound,
          f"{n} requests came on {len(by_conn)} connections (at most {bound} expected: one per multi handle, "
          f"{threads} loops); requests per connection: {per_conn[:20]}")
    peak = max(_peak_overlap(v) for v in by_conn.values())
    check(peak >= 10, f"at most {peak} requests were in flight at once on one connection (expected many: "
                      f"{n} calls of {ECHO_DELAY_S}s at once over {len(by_conn)} connections); "
                      f"requests per connection: {per_conn}")
    check(max(r.conn_requests for r in reqs) == per_conn[0],
          f"$connection_requests disagrees with the per-connection count {per_conn[0]}")


def test_tls_verification(ctx):
    # Certificates are verified (peer and host name) unless --insecure: an item to a server chunkd cannot verify
    # fails with the certificate error, and no request reaches the server; --insecure succeeds with a warning.
    nginx = _start_nginx(ctx)
    q = ctx.queue
    ca, other_ca = nginx.dir / "ca.pem", nginx.dir / "other-ca.pem"
    fast_fail = ["--max-attempts", 2, "--retry-base-ms", 1]
    cases = [  # (label, base url, flags, words the error must contain)
        ("no-ca", nginx.url(), [], ["SSL certificate problem", "unable to get local issuer certificate"]),
        ("wrong-ca", nginx.url(), ["--ca-file", other_ca],
         ["SSL certificate problem", "unable to get local issuer certificate"]),
        ("wrong-name", nginx.url(nginx.wrong_name), ["--ca-file", ca], ["subject name", "127.0.0.1"]),
    ]
    for label, url, flags, words in cases:
        items = [{"id": f"{label}-{i}", "path": f"/{q}/{label}/{i}"} for i in range(5)]
        results, proc = _http(ctx, items, "--base-url", url, *flags, *fast_fail, base_url=False, label=label,
                              queue=f"{q}-{label}")
        for it in items:
            r = _failed(results, it["id"])
            check("status" not in r, f"{label}: id {it['id']}: a certificate failure has an HTTP status: {r}")
            for w in words:
                check(w in r["error"], f"{label}: id {it['id']}: error does not say {w!r}: {r['error']!r}")
        check("--insecure" not in proc.stderr(), f"{label}: the --insecure warning without --insecure: "
                                                  f"{one_line(proc.stderr(), 300)!r}")

    # The same servers with --insecure: no verification of the peer or its name, and a warning at start.
    for label, port in (("insecure", nginx.good), ("insecure-wrong-name", nginx.wrong_name)):
        items = [{"id": f"{label}-{i}", "path": f"/{q}/{label}/{i}"} for i in range(5)]
        results, proc = _http(ctx, items, "--base-url", nginx.url(port), "--insecure", base_url=False, label=label,
                              queue=f"{q}-{label}")
        for it in items:
            res = _ok(results, it["id"])
            check(res["status"] == 200 and res["body"] == {"ok": True}, f"{label}: id {it['id']}: got {res}")
        lines = proc.stderr().splitlines()
        warn = [n for n, line in enumerate(lines) if re.search(r"\bwarn\b.*--insecure.*NOT verified", line)]
        start = [n for n, line in enumerate(lines) if re.search(r"\bworker .*: queue .*handler http", line)]
        check(warn and start and warn[0] < start[0],
              f"{label}: no `--insecure: TLS certificates are NOT verified` warning before the worker's start line: "
              f"{one_line(proc.stderr(), 400)!r}")
        nginx.wait_requests(f"/{q}/{label}/", len(items))

    # nginx logs each request as it ends; the --insecure requests, made last, are there, so the others would be too.
    for label, _, _, _ in cases:
        got = nginx.requests(f"/{q}/{label}/")
        check(not got, f"{label}: {len(got)} requests reached nginx although the certificate was not accepted: "
                       f"{[r.uri for r in got[:3]]}")
