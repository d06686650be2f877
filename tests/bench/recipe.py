#!/usr/bin/env python3
"""The "original recipe" that chunkd replaces, re-implemented faithfully.

    multiprocessing (spawn start method), Pool(200), apply_async with a
    callback that collects the results; the input is submitted in chunks of
    1,000 items with a 0.5 s time.sleep between chunks; the work is
    slow_function(item) = time.sleep(0.1), then return the item.

With --base-url URL the work is an HTTP call instead (the bench's "http" case):
slow_function does a GET of URL + item["path"] with urllib.request (a new
connection per call, as urlopen does), reads the body, and returns the item;
a status other than 200 or a connection error raises, so the item gets no
result.

Usage: recipe.py FILE [--out PATH] [--json] [--base-url URL]

FILE is JSON Lines (one item per line, empty lines skipped, as chunkd reads it;
`-` for stdin). Each result (the returned item) is written as one JSON line to
--out (default: discarded). The last line of stdout reports items, seconds and
items/s, plus the peak memory of the whole process tree (this process, the 200
pool processes and multiprocessing's helper processes), sampled every 0.2 s
from a thread: summed VmRSS and summed PSS. With --json that line is JSON.
"""

import json
import multiprocessing
import sys
import time

POOL_SIZE = 200
CHUNK_SIZE = 1000
PAUSE_S = 0.5


def slow_function(item):
    time.sleep(0.1)
    return item


def http_function(item, base_url):
    import urllib.request
    with urllib.request.urlopen(base_url + item["path"], timeout=30) as resp:
        resp.read()
        if resp.status != 200:
            raise RuntimeError(f"HTTP {resp.status} for item {item.get('id')}")
    return item


def main(argv):
    import argparse
    import os

    sys.dont_write_bytecode = True  # no __pycache__ in the source tree
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import procmem

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("file")
    ap.add_argument("--out", default=None, help="write results here (JSON Lines)")
    ap.add_argument("--json", action="store_true", help="print the summary as JSON")
    ap.add_argument("--base-url", default=None,
                    help="the work is an HTTP GET of BASE_URL + item[\"path\"] instead of a 0.1 s sleep")
    ap.add_argument("--no-mem", action="store_true",
                    help="do not sample memory (to check the sampler's own cost)")
    args = ap.parse_args(argv)

    t0 = time.monotonic()
    sampler = procmem.TreeSampler(os.getpid(), interval=0.2, pss_every=5)
    if not args.no_mem:
        sampler.start()

    src = sys.stdin if args.file == "-" else open(args.file, encoding="utf-8")
    with src:
        items = [json.loads(line) for line in src if line.strip()]

    multiprocessing.set_start_method("spawn")
    results, errors = [], []
    pool = multiprocessing.Pool(POOL_SIZE)
    t_pool = time.monotonic()
    for start in range(0, len(items), CHUNK_SIZE):
        if start:
            time.sleep(PAUSE_S)
        for item in items[start:start + CHUNK_SIZE]:
            if args.base_url:
                pool.apply_async(http_function, (item, args.base_url), callback=results.append,
                                 error_callback=errors.append)
            else:
                pool.apply_async(slow_function, (item,), callback=results.append)
    pool.close()
    pool.join()
    t_done = time.monotonic()
    if not args.no_mem:
        sampler.stop()

    if args.out:
        with open(args.out, "w", encoding="utf-8") as out:
            for r in results:
                out.write(json.dumps(r, separators=(",", ":")) + "\n")
    seconds = time.monotonic() - t0

    stats = {
        "items": len(items),
        "results": len(results),
        "errors": len(errors),
        "seconds": round(seconds, 3),
        "items_per_s": round(len(results) / seconds, 1) if seconds > 0 else 0.0,
        "pool_start_s": round(t_pool - t0, 3),
        "process_s": round(t_done - t_pool, 3),
    }
    stats.update(sampler.result())
    if errors:
        stats["first_error"] = repr(errors[0])[:300]
    if args.json:
        print(json.dumps(stats))
    else:
        print("recipe: items={items} results={results} seconds={seconds} items/s={items_per_s} "
              "peak_rss_sum={peak_rss_mib} MiB peak_pss_sum={peak_pss_mib} MiB "
              "procs={peak_procs}".format(**stats))
    return 0 if len(results) == len(items) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
