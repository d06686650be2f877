#!/usr/bin/env python3
"""Redis's own CPU time per item, phase by phase (issue 19): a shortcut to bench.py's rediscpu case with this
script's older flags and defaults (200,000 items, one worker, 3 runs).

    python3 tests/bench/rediscpu.py build/chunkd [--items 200000] [--concurrency 10000] [--reps 3] [--baseline BIN]
                                                 [--workers N[,N...]] [--outdir DIR]

The same as

    python3 tests/bench/bench.py build/chunkd --cases rediscpu --rediscpu-items 200000 --rediscpu-reps 3 \\
        --rediscpu-workers 1 [--rediscpu-concurrency C] [--baseline BIN]

except that results.txt goes to --outdir only when it is given (the summary table is printed either way), so that
this shortcut does not overwrite tests/bench/results.txt. What the case measures and how: bench.py's --help and
tests/bench/README.md ("rediscpu"). Exit status: bench.py's (0 when every run put out every item)."""
import argparse
import os
import shutil
import sys
import tempfile

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("chunkd")
    ap.add_argument("--items", type=int, default=200000)
    ap.add_argument("--concurrency", type=int, default=10000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--baseline", help="another chunkd binary, run alternately with the first")
    ap.add_argument("--workers", default="1", help="workers run at once in the worker phase (a list: one run each)")
    ap.add_argument("--outdir", help="where results.txt goes (default: nowhere)")
    a = ap.parse_args()
    outdir = a.outdir or tempfile.mkdtemp(prefix="chunkd-rediscpu-out.")
    argv = [a.chunkd, "--cases", "rediscpu", "--rediscpu-items", str(a.items), "--rediscpu-reps", str(a.reps),
            "--rediscpu-workers", a.workers, "--rediscpu-concurrency", str(a.concurrency), "--outdir", outdir]
    if a.baseline:
        argv += ["--baseline", a.baseline]
    sys.argv = [os.path.join(bench.HERE, "bench.py")] + argv
    try:
        return bench.main()
    finally:
        if not a.outdir:
            shutil.rmtree(outdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
