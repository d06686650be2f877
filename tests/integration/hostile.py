"""Hostile HTTP clients held against a port, and a probe that times requests beside them (for
test_security_http.py and the bench's httpd case; Python standard library only, loopback only).

Hostile(port, kinds, sources) opens one TCP connection per entry of `kinds` from the source address of the
same index in `sources` (127.0.0.x: loopback is a whole /8, so one process can stand for many clients) and keeps
each one open, reconnecting when the server closes it, until stop():

- "drip":  a request line, then one header byte every DRIP_S seconds, never the blank line that ends the headers
           (the slow-headers attack: each byte restarts an idle timeout)
- "idle":  connects and sends nothing
- "big":   a request line and BIG_BYTES of one header at once, never ended (oversized headers), then nothing

Every count is bounded (the connections given, at most one reconnect per connection per RECONNECT_S) and so is
the time (stop() joins the thread). Stats: how many are connected now, how many times the server closed one,
and how long each "drip" connection lived before the server closed it.
"""

import errno
import http.client
import selectors
import socket
import statistics
import threading
import time

DRIP_S = 0.5
BIG_BYTES = 64 * 1024
RECONNECT_S = 0.05


def hostile_sources(count, per_source, first=2):
    """Source addresses for `count` connections, `per_source` from each of 127.0.0.<first>, <first+1>, ..."""
    return [f"127.0.0.{first + i // per_source}" for i in range(count)]


def mix(count):
    """`count` kinds, a third of each: drip, idle, big."""
    kinds = ("drip", "idle", "big")
    return [kinds[i % 3] for i in range(count)]


class _Conn:
    def __init__(self, kind, source):
        self.kind = kind
        self.source = source
        self.sock = None
        self.connected = False
        self.opened_at = 0.0
        self.next_at = 0.0       # next drip byte, or the reconnect time while closed
        self.sent = 0


class Hostile:
    def __init__(self, port, kinds, sources, host="127.0.0.1"):
        assert len(kinds) == len(sources)
        self.host, self.port = host, port
        self.conns = [_Conn(k, s) for k, s in zip(kinds, sources)]
        self.sel = selectors.DefaultSelector()
        self.lock = threading.Lock()
        self.closed_by_server = 0      # connections the server closed (or reset, or refused)
        self.drip_lifetimes = []       # seconds from connect to the server's close, "drip" connections
        self.connected_max = 0
        self.stopping = False
        self.thread = threading.Thread(target=self._run, name="hostile", daemon=True)

    # ---- control

    def start(self):
        now = time.monotonic()
        for c in self.conns:
            self._open(c, now)
        self.thread.start()
        return self

    def stop(self):
        self.stopping = True
        self.thread.join(10)
        for c in self.conns:
            self._close(c)
        self.sel.close()

    def connected(self):
        with self.lock:
            return sum(1 for c in self.conns if c.connected)

    def stats(self):
        with self.lock:
            lifetimes = list(self.drip_lifetimes)
            return {"connected": sum(1 for c in self.conns if c.connected), "connected_max": self.connected_max,
                    "closed_by_server": self.closed_by_server, "drip_lifetimes": lifetimes}

    # ---- the loop

    def _open(self, c, now):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        try:
            s.bind((c.source, 0))
            rc = s.connect_ex((self.host, self.port))
        except OSError:
            s.close()
            c.next_at = now + RECONNECT_S
            return
        if rc not in (0, errno.EINPROGRESS):
            s.close()
            c.next_at = now + RECONNECT_S
            return
        c.sock, c.connected, c.sent = s, False, 0
        self.sel.register(s, selectors.EVENT_WRITE, c)

    def _close(self, c):
        if c.sock is None:
            return
        try:
            self.sel.unregister(c.sock)
        except (KeyError, ValueError):
            pass
        c.sock.close()
        c.sock = None
        c.connected = False

    def _server_closed(self, c, now):
        with self.lock:
            self.closed_by_server += 1
            if c.kind == "drip" and c.connected:
                self.drip_lifetimes.append(now - c.opened_at)
            self._close(c)
        c.next_at = now + RECONNECT_S

    def _established(self, c, now):
        with self.lock:
            c.connected = True
            c.opened_at = now
            self.connected_max = max(self.connected_max, sum(1 for x in self.conns if x.connected))
        self.sel.modify(c.sock, selectors.EVENT_READ, c)
        try:
            if c.kind == "drip":
                c.sock.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                c.next_at = now + DRIP_S
            elif c.kind == "big":
                c.sock.send(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * BIG_BYTES)
        except OSError:
            self._server_closed(c, now)

    def _run(self):
        while not self.stopping:
            now = time.monotonic()
            for key, _ in self.sel.select(timeout=0.05):
                c = key.data
                if c.sock is None:
                    continue
                if not c.connected:
                    if c.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                        self._server_closed(c, now)
                    else:
                        self._established(c, now)
                    continue
                try:
                    data = c.sock.recv(65536)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if not data:  # the server closed it (a 431 for "big" comes first: read it and wait for the end)
                    self._server_closed(c, now)
            now = time.monotonic()
            for c in self.conns:
                if c.sock is None:
                    if now >= c.next_at and not self.stopping:
                        self._open(c, now)
                elif c.connected and c.kind == "drip" and now >= c.next_at:
                    try:
                        c.sock.send(b"a")
                    except OSError:
                        self._server_closed(c, now)
                        continue
                    c.next_at = now + DRIP_S


def timed_get(host, port, path, timeout=5.0, source=None):
    """(status or None, seconds) of one GET on a new connection; None when nothing answered within timeout."""
    t0 = time.monotonic()
    conn = http.client.HTTPConnection(host, port, timeout=timeout,
                                      source_address=(source, 0) if source else None)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        resp.read()
        return resp.status, time.monotonic() - t0
    except OSError:
        return None, time.monotonic() - t0
    finally:
        conn.close()


def probe_latencies(host, port, seconds, paths=("/healthz", "/readyz", "/metrics"), pause=0.1, timeout=5.0):
    """Requests to each of `paths` in turn, one at a time on new connections, for `seconds`: a list of
    (path, status or None, seconds). A request that gets no answer counts `timeout` seconds."""
    out = []
    end = time.monotonic() + seconds
    i = 0
    while time.monotonic() < end:
        path = paths[i % len(paths)]
        status, took = timed_get(host, port, path, timeout)
        out.append((path, status, took))
        i += 1
        time.sleep(pause)
    return out


def percentile(values, p):
    """The p-th percentile (0-100) of values, nearest rank."""
    if not values:
        return float("nan")
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(round(p / 100 * len(s) + 0.5)) - 1))
    return s[k]


def summary(samples):
    """p50 / p99 / max seconds of probe samples."""
    times = [t for _, _, t in samples]
    return {"n": len(times), "p50": statistics.median(times) if times else float("nan"),
            "p99": percentile(times, 99), "max": max(times) if times else float("nan")}


def rss_kib(pid):
    """VmRSS of pid in KiB, or None once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None
