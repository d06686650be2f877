"""A tiny synchronous Redis client (RESP2) for the integration tests.

Only what the tests need: send a command, read one reply. Bulk strings are
returned as str (UTF-8, with surrogateescape so arbitrary bytes survive).
"""

import socket


def key_slot(key):
    """The Redis Cluster slot of a key: CRC16-XMODEM of its hash tag ({...}, when not empty) or of the whole key,
    modulo 16384."""
    data = key.encode() if isinstance(key, str) else key
    start = data.find(b"{")
    if start >= 0:
        end = data.find(b"}", start + 1)
        if end > start + 1:
            data = data[start + 1:end]
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
    return crc % 16384


class RedisError(Exception):
    """An error reply (-ERR ...) from the server."""


def _encode(args):
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, bytes):
            data = arg
        elif isinstance(arg, str):
            data = arg.encode("utf-8", "surrogateescape")
        else:
            data = str(arg).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


class Redis:
    def __init__(self, host="127.0.0.1", port=6379, unix_path=None, timeout=10.0):
        if unix_path:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(timeout)
            self.sock.connect(unix_path)
        else:
            self.sock = socket.create_connection((host, port), timeout=timeout)
        self.reader = self.sock.makefile("rb")

    def close(self):
        try:
            self.reader.close()
        finally:
            self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def execute(self, *args):
        self.sock.sendall(_encode(args))
        return self._read_reply()

    def _read_reply(self):
        line = self.reader.readline()
        if not line.endswith(b"\r\n"):
            raise ConnectionError("connection closed by redis-server")
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RedisError(rest.decode(errors="replace"))
        if kind == b":":
            return int(rest)
        if kind == b"$":
            size = int(rest)
            if size < 0:
                return None
            data = self.reader.read(size + 2)
            if len(data) != size + 2:
                raise ConnectionError("connection closed by redis-server")
            return data[:-2].decode("utf-8", "surrogateescape")
        if kind == b"*":
            size = int(rest)
            if size < 0:
                return None
            return [self._read_reply() for _ in range(size)]
        raise ConnectionError("unexpected RESP reply: %r" % line[:80])

    # Conveniences used by the tests.

    def lrange_all(self, key):
        return self.execute("LRANGE", key, 0, -1)

    def hgetall(self, key):
        flat = self.execute("HGETALL", key)
        return dict(zip(flat[0::2], flat[1::2]))

    def keys(self, pattern):
        return self.execute("KEYS", pattern)

    def xrange_all(self, key, batch=2000):
        """All entries of a stream as (entry id, {field: value}) pairs."""
        entries, start = [], "-"
        while True:
            chunk = self.execute("XRANGE", key, start, "+", "COUNT", batch)
            for entry_id, flat in chunk:
                entries.append((entry_id, dict(zip(flat[0::2], flat[1::2]))))
            if len(chunk) < batch:
                return entries
            start = "(" + chunk[-1][0]
