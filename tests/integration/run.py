#!/usr/bin/env python3
"""chunkd integration tests.

    python3 tests/integration/run.py --bin build/chunkd [--mockapi build/mockapi] [-k SUBSTRING]
                                     [--timeout-scale F] [--keep-tmp] [--counts FILE]

Starts a throwaway redis-server (no persistence) on a free loopback port and,
with --mockapi, one mock HTTP API (tests/mockapi) on another, runs every test_*
function of the test_*.py files beside this one (each gets its own queue name
and temp dir; the server is flushed and the mock's counters are reset in
between), prints
`PASS name (1.2s)`, `FAIL name: reason` or `SKIP name: reason` (harness.skip)
per test and ends with `integration: N passed, N failed, N skipped`; --counts
FILE also writes `N N N` (passed failed skipped) to FILE for `make test`'s total.
Exit status 0 only when all passed and at least one test ran; a -k that selects
nothing is an error (exit 2). A test after which the run's redis-server or mock
API is dead FAILs (it killed it, or took it down); they are restarted for the next
test. Without --mockapi the tests that need the mock (test_http.py) FAIL, saying so.
Python 3.11 standard library only.
"""

import argparse
import importlib
import os
import shutil
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.dont_write_bytecode = True  # keep tests/integration free of __pycache__
sys.path.insert(0, str(HERE))

import harness  # noqa: E402
from harness import MockApi, RedisServer, Ctx, TestFailure, TestSkipped, one_line  # noqa: E402


def discover():
    """(name, function) for every test_* function in test_*.py, in file then source order."""
    tests = []
    for path in sorted(HERE.glob("test_*.py")):
        module = importlib.import_module(path.stem)
        funcs = [f for n, f in vars(module).items() if n.startswith("test_") and callable(f)]
        funcs.sort(key=lambda f: f.__code__.co_firstlineno)
        prefix = path.stem[len("test_"):]
        tests += [(f"{prefix}.{f.__name__[len('test_'):]}", f) for f in funcs]
    return tests


def failure_reason(exc):
    if isinstance(exc, TestFailure):
        return one_line(str(exc), 600)
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename.startswith(str(HERE))]
    where = f" at {Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else ""
    return one_line(f"{type(exc).__name__}{where}: {exc}", 600)


def reset_or_restart(mock, workdir, mocks):
    """Zero the mock's counters and fail_times keys before a test; start a new mock if it died or hangs."""
    if mock.alive():
        try:
            mock.reset()
            return mock
        except (OSError, TestFailure) as exc:
            print(f"run.py: mockapi did not answer POST /_reset ({one_line(str(exc), 200)}); restarting it",
                  file=sys.stderr)
    else:
        print(f"run.py: mockapi died (exit {mock.proc.returncode if mock.proc else '?'}); restarting it",
              file=sys.stderr)
    mock.stop()
    new = MockApi(mock.binary, workdir)
    mocks.append(new)
    return new.start()


def blame_shared_servers(server, mock):
    """Fails the test that just ran if the run's redis-server or mock API is no longer running: a test that
    needs to kill one starts its own (ctx.start_redis). run.py starts a new one for the next test."""
    def exit_status(proc):
        return proc.poll() if proc is not None else "?"

    if not server.alive():
        raise TestFailure(f"the run's redis-server is dead after this test (exit {exit_status(server.proc)}): "
                          "a test must not kill the shared server; start one of its own (ctx.start_redis)")
    if mock is not None and not mock.alive():
        raise TestFailure(f"the run's mock API is dead after this test (exit {exit_status(mock.proc)}); "
                          f"its stderr: {mock.err_path}")


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=str(HERE.parent.parent / "build" / "chunkd"), help="chunkd binary")
    ap.add_argument("--mockapi", metavar="PATH",
                    help="mock HTTP API binary (build/mockapi) for the http handler tests; without it they fail")
    ap.add_argument("-k", action="append", default=[], metavar="SUBSTRING",
                    help="run only tests whose name contains SUBSTRING (repeatable: any of them)")
    ap.add_argument("--timeout-scale", type=float,
                    default=float(os.environ.get("CHUNKD_IT_TIMEOUT_SCALE", "1")),
                    help="multiply every deadline (e.g. 3 for valgrind); env CHUNKD_IT_TIMEOUT_SCALE")
    ap.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (logs, outputs) and print it")
    ap.add_argument("--list", action="store_true", help="list test names and exit")
    ap.add_argument("--counts", metavar="FILE", help="also write 'PASSED FAILED SKIPPED' to FILE at the end")
    args = ap.parse_args()

    tests = [(n, f) for n, f in discover() if not args.k or any(k in n for k in args.k)]
    if args.list:
        print("\n".join(n for n, _ in tests))
        return 0
    binary = Path(args.bin).resolve()
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        print(f"run.py: {args.bin}: not an executable file", file=sys.stderr)
        return 2
    mock_bin = None
    if args.mockapi:
        mock_bin = Path(args.mockapi).resolve()
        if not (mock_bin.is_file() and os.access(mock_bin, os.X_OK)):
            print(f"run.py: --mockapi {args.mockapi}: not an executable file", file=sys.stderr)
            return 2
    if not tests:
        print(f"run.py: no test matches {args.k}: nothing selected is a failure, not a pass", file=sys.stderr)
        return 2
    harness.TIMEOUT_SCALE = args.timeout_scale

    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGHUP, _raise_interrupt)
    tmp_root = Path(tempfile.mkdtemp(prefix="chunkd-it-"))
    server = mock = None
    mocks = []  # every MockApi started (a restarted one leaves its stderr to check)
    passed = failed = skipped = 0
    try:
        try:
            server = RedisServer(tmp_root / "redis").start()
            if mock_bin:
                mock = MockApi(mock_bin, tmp_root / "mockapi")
                mocks.append(mock)  # stopped in `finally` even if interrupted while starting
                mock.start()
        except (OSError, RuntimeError) as exc:
            print(f"run.py: {exc}", file=sys.stderr)
            return 2
        admin = server.client()
        for index, (name, func) in enumerate(tests, 1):
            if not server.alive():
                server.stop()
                server = RedisServer(tmp_root / f"redis-restart{index}").start()
                admin.close()
                admin = server.client()
            admin.execute("FLUSHALL")
            if mock is not None:
                mock = reset_or_restart(mock, tmp_root / f"mockapi-restart{index}", mocks)
            test_tmp = tmp_root / f"{index:02d}-{name}"
            test_tmp.mkdir()
            ctx = Ctx(name, binary, server, test_tmp, mockapi=mock)
            start = time.monotonic()
            try:
                func(ctx)
                report = ctx.sanitizer_reports()
                if report:
                    raise TestFailure(f"sanitizer report in {report}")
                blame_shared_servers(server, mock)
            except KeyboardInterrupt:
                raise
            except TestSkipped as exc:
                skipped += 1
                print(f"SKIP {name}: {one_line(str(exc), 300)}", flush=True)
            except Exception as exc:  # a test failure or a harness error: both fail the test
                failed += 1
                print(f"FAIL {name}: {failure_reason(exc)}", flush=True)
            else:
                passed += 1
                print(f"PASS {name} ({time.monotonic() - start:.1f}s)", flush=True)
            finally:
                ctx.cleanup()
        admin.close()
        for m in mocks:  # a sanitizer build of the mock reports at exit
            m.stop()
            report = m.sanitizer_report()
            if report:
                failed += 1
                print(f"FAIL mockapi: sanitizer report in {m.err_path}: {report}", flush=True)
    except KeyboardInterrupt:
        print("run.py: interrupted", file=sys.stderr)
        return 130
    finally:
        for m in mocks:
            m.stop()
        if server is not None:
            server.stop()
        if args.keep_tmp:
            print(f"run.py: kept {tmp_root}", file=sys.stderr)
        else:
            shutil.rmtree(tmp_root, ignore_errors=True)
    print(f"integration: {passed} passed, {failed} failed, {skipped} skipped")
    if args.counts:
        Path(args.counts).write_text(f"{passed} {failed} {skipped}\n")
    return 0 if failed == 0 and passed > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
