"""Memory of a process tree, read from /proc (Linux only, stdlib only).

Used by recipe.py (to measure itself and its pool) and by bench.py (to measure
`chunkd run` together with the private redis-server it starts).

RSS summed over processes counts shared pages (the Python interpreter, libc)
once per process, so it overstates what the tree really costs; PSS divides each
shared page between the processes that map it and sums to the real figure.
Both are reported.
"""

import os
import threading
import time


def _read_kb(path, field):
    try:
        with open(path, "rb") as f:
            for line in f:
                if line.startswith(field):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def rss_kib(pid):
    """VmRSS of one process in KiB (0 if it is gone)."""
    return _read_kb(f"/proc/{pid}/status", b"VmRSS:")


def hwm_kib(pid):
    """VmHWM (peak RSS) of one process in KiB (0 if it is gone)."""
    return _read_kb(f"/proc/{pid}/status", b"VmHWM:")


def pss_kib(pid):
    """Pss of one process in KiB from smaps_rollup (0 if unavailable)."""
    return _read_kb(f"/proc/{pid}/smaps_rollup", b"Pss:")


def _children(pid):
    kids = []
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return kids
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                kids.extend(int(x) for x in f.read().split())
        except OSError:
            pass
    return kids


def _children_by_scan():
    """ppid -> [pid] from a full /proc scan (fallback without CONFIG_PROC_CHILDREN)."""
    tree = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
            ppid = int(stat[stat.rindex(b")") + 2:].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        tree.setdefault(ppid, []).append(int(name))
    return tree


_HAVE_CHILDREN_FILE = os.path.exists(f"/proc/{os.getpid()}/task/{os.getpid()}/children")


def tree_pids(root):
    """root and all its live descendants."""
    out, todo = [], [root]
    tree = None if _HAVE_CHILDREN_FILE else _children_by_scan()
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(_children(pid) if tree is None else tree.get(pid, []))
    return out


class TreeSampler:
    """Samples the summed RSS (every `interval` s) and PSS (every `pss_every`
    samples) of a process tree from a daemon thread; keeps the peaks.
    skip_root leaves the root process itself out (a launcher)."""

    def __init__(self, root, interval=0.2, pss_every=5, skip_root=False):
        self.root = root
        self.skip_root = skip_root
        self.interval = interval
        self.pss_every = max(1, pss_every)
        self.peak_rss_kib = 0
        self.peak_pss_kib = 0
        self.peak_procs = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mem-sampler", daemon=True)

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        self._thread.join()
        return self

    def sample(self):
        pids = tree_pids(self.root)[1 if self.skip_root else 0:]
        rss = sum(rss_kib(p) for p in pids)
        self.peak_rss_kib = max(self.peak_rss_kib, rss)
        self.peak_procs = max(self.peak_procs, len(pids))
        if self.samples % self.pss_every == 0:
            self.peak_pss_kib = max(self.peak_pss_kib, sum(pss_kib(p) for p in pids))
        self.samples += 1

    def _run(self):
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def result(self):
        return {
            "peak_rss_mib": round(self.peak_rss_kib / 1024, 1),
            "peak_pss_mib": round(self.peak_pss_kib / 1024, 1),
            "peak_procs": self.peak_procs,
            "mem_samples": self.samples,
        }
