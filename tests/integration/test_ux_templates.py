"""Issue 16, for a newcomer: request templates from item fields (--path, --query, --method, --body-from-item,
--body-field) and -H/--header for headers that are not secret, against the mock HTTP API; --help grouped by
topic within 100 columns, without test-only flags, with the --no- forms; a typo's closest flag; `make install`.

Templated paths start with /<queue>/, so the mock's per-path counters (/_count) tell exactly which requests
chunkd made. The mock counts and echoes paths URL-decoded: a value's percent-encoded '?' or '#' shows there as
the character, inside the path, and not as a query or fragment.
"""

import json
import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

from harness import check, one_line, read_jsonl
from test_http import _check_counts, _echo, _http, _refused

REPO = Path(__file__).resolve().parents[2]


def test_templates_reach_paths_and_queries(ctx):
    q = ctx.queue
    items = [{"id": 1, "user": "alice", "page": 2, "tag": "a b&c=d"},
             {"id": 2, "user": "bob", "page": 3, "tag": True, "order": {"n": 7}},
             {"id": 3, "user": "carol", "page": 1.5, "tag": 0}]
    results, _ = _http(ctx, items, "--path", f"/{q}/users/{{user}}", "--query", "page={page}",
                       "--query", "tag={tag}", label="templates")
    _check_counts(ctx, {f"/{q}/users/alice": 1, f"/{q}/users/bob": 1, f"/{q}/users/carol": 1},
                  "templated paths")
    check(ctx.mock.total() == 3, lambda: f"expected 3 requests, the mock saw {ctx.mock.counts()}")
    expected = {1: {"page": "2", "tag": "a b&c=d"}, 2: {"page": "3", "tag": "true"}, 3: {"page": "1.5", "tag": "0"}}
    for item_id, query in expected.items():
        echo = _echo(results, item_id)
        check(echo["query"] == query and echo["method"] == "GET",
              lambda: f"id {item_id}: expected GET with query {query}, the mock saw {echo['method']} {echo['query']}")
    # A nested field, a method, the whole record as the body.
    results, _ = _http(ctx, [items[1]], "--path", f"/{q}/orders/{{order.n}}", "--method", "POST",
                       "--body-from-item", label="post")
    echo = _echo(results, 2)
    check(echo["method"] == "POST" and echo["path"] == f"/{q}/orders/7" and json.loads(echo["body"]) == items[1]
          and echo["headers"].get("content-type") == "application/json",
          lambda: f"--method POST --body-from-item: the mock saw {one_line(json.dumps(echo), 300)}")


def test_template_values_stay_in_their_segment(ctx):
    q = ctx.queue
    items = [{"id": "query", "v": "x?x=1", "p": 1},
             {"id": "fragment", "v": "a#b", "p": 1},
             {"id": "userinfo", "v": "u@evil.com", "p": 1},
             {"id": "amp", "v": "ok", "p": "1&admin=1#f"},
             {"id": "dotdot", "v": "a/../../b", "p": 1},
             {"id": "dots", "v": "..", "p": 1},
             {"id": "missing", "p": 1}]
    results, _ = _http(ctx, items, "--path", f"/{q}/u/{{v}}/x", "--query", "p={p}", label="escape")
    # Each value is one segment: the mock (which decodes them) sees it whole, in the path, on its own host.
    for item_id, seen in (("query", "x?x=1"), ("fragment", "a#b"), ("userinfo", "u@evil.com")):
        echo = _echo(results, item_id)
        check(echo["path"] == f"/{q}/u/{seen}/x" and echo["query"] == {"p": "1"},
              lambda: f"value {seen!r} left its segment: the mock saw path {echo['path']!r} query {echo['query']}")
    echo = _echo(results, "amp")
    check(echo["query"] == {"p": "1&admin=1#f"},
          lambda: f"a query value added a parameter: the mock saw {echo['query']}")
    _refused(results, "dotdot", "field \"v\"", "..")
    _refused(results, "dots", "field \"v\"", "..")
    _refused(results, "missing", "field \"v\"", "missing")
    paths = ctx.mock.counts()["paths"]
    check(ctx.mock.total() == 4 and all(p.startswith(f"/{q}/u/") for p in paths),
          lambda: f"expected 4 requests under /{q}/u/, the mock saw {paths}")


def test_header_flag(ctx):
    q = ctx.queue
    items = [{"id": 1, "path": f"/{q}/h"}, {"id": 2, "k": "t"}]
    results, _ = _http(ctx, items[:1], "-H", "X-Trace: t-1", "--header", "X-Team: data", label="header")
    headers = _echo(results, 1)["headers"]
    check(headers.get("x-trace") == "t-1" and headers.get("x-team") == "data",
          lambda: f"-H headers did not reach the API: {headers}")
    results, _ = _http(ctx, items[1:], "--path", f"/{q}/t/{{k}}", "-H", "X-Trace: t-2", label="header-templ")
    check(_echo(results, 2)["headers"].get("x-trace") == "t-2", "-H with --path: header missing")
    # Framing headers, the Idempotency-Key and the secret ones are refused at start, naming the header.
    for bad, env in (("Host: evil.test", {}), ("Content-Length: 3", {}), ("Idempotency-Key: x", {}),
                     ("Authorization: Bearer x", {"CHUNKD_HTTP_HEADERS": "Authorization: Bearer s3cret"}),
                     ("no colon", {})):
        p = ctx.run("run", "--handler", "http", "--base-url", ctx.mock.url, "-H", bad, ctx.write_jsonl("h.jsonl", [{}]),
                    env=env, redis=None, expect_rc=None, name=f"run -H {bad!r}")
        check(p.returncode not in (0, None) and ("-H/--header" in p.stderr()),
              lambda: f"-H {bad!r}: expected a refusal naming -H/--header, got {p.describe()}")
        check("s3cret" not in p.stderr(), "a secret header value in the message")
    check(ctx.mock.total() == 2, lambda: f"refused settings made requests: {ctx.mock.counts()}")


def test_help_fits_and_hides_test_flags(ctx):
    for cmd in ("run", "enqueue", "worker", "collect", "status", "requeue", "recover"):
        text = ctx.run(cmd, "--help", redis=None, timeout=10).stdout()
        wide = [line for line in text.splitlines() if len(line) > 100]
        check(not wide, lambda: f"chunkd {cmd} --help: {len(wide)} lines over 100 columns, e.g. {wide[0]!r}")
        check("test-stall" not in text and "for tests only" not in text,
              f"chunkd {cmd} --help lists a test-only flag")
    text = ctx.run("worker", "--help", redis=None, timeout=10).stdout()
    titles = [t for t in ("Redis:", "Queue and chunks:", "Concurrency and limits:", "http handler:",
                          "exec handler:", "Observability:") if f"\n{t}\n" not in text]
    check(not titles, f"chunkd worker --help has no section {titles}")
    for flag in ("--no-exit-when-empty", "--no-idempotency-key", "-H, --header"):
        check(flag in text, f"chunkd worker --help does not show {flag}")
    # The test-only flag still works (tests rely on it), and --no- forms parse.
    p = ctx.run("worker", "--test-stall-ms", "0", "--no-exit-when-empty", "--concurrency", "0", redis=None,
                expect_rc=2, timeout=10)
    check("--concurrency" in p.stderr() and "test-stall" not in p.stderr(),
          lambda: f"expected only the --concurrency bound to be refused: {one_line(p.stderr(), 300)!r}")


def test_typo_suggests_closest_flag(ctx):
    for cmd, typo, meant in (("worker", "--concurency", "--concurrency"), ("run", "--base_url", "--base-url"),
                             ("collect", "--until-don", "--until-done")):
        p = ctx.run(cmd, typo, "5", redis=None, expect_rc=2, timeout=10)
        check(f"did you mean {meant}?" in p.stderr(),
              lambda: f"chunkd {cmd} {typo}: no suggestion of {meant}: {one_line(p.stderr(), 300)!r}")
    p = ctx.run("worker", "--qqqqqqqqq", redis=None, expect_rc=2, timeout=10)
    check("did you mean" not in p.stderr(), f"a suggestion for a name near no flag: {p.stderr()!r}")


def test_make_install(ctx):
    """make install DESTDIR=... PREFIX=/usr installs bin/chunkd (the binary under test), executable."""
    build = ctx.path("build")
    build.mkdir()
    shutil.copy2(ctx.bin, build / "chunkd")
    dest = ctx.path("dest")
    # -o: the copied binary counts as up to date, so make installs it rather than building one.
    r = subprocess.run(["make", "-C", str(REPO), "-o", f"{build}/chunkd", f"BUILD={build}", "install",
                        f"DESTDIR={dest}", "PREFIX=/usr"], capture_output=True, text=True, timeout=120)
    check(r.returncode == 0, lambda: f"make install failed ({r.returncode}): {one_line(r.stdout + r.stderr, 400)!r}")
    installed = dest / "usr" / "bin" / "chunkd"
    check(installed.is_file() and os.stat(installed).st_mode & stat.S_IXOTH,
          f"{installed} missing or not executable by everyone")
    v = subprocess.run([str(installed), "--version"], capture_output=True, text=True, timeout=10)
    check(v.returncode == 0 and re.match(r"chunkd \d+\.\d+", v.stdout), f"installed chunkd --version: {v}")
    r = subprocess.run(["make", "-C", str(REPO), f"BUILD={build}", "uninstall", f"DESTDIR={dest}", "PREFIX=/usr"],
                       capture_output=True, text=True, timeout=60)
    check(r.returncode == 0 and not installed.exists(), "make uninstall left chunkd behind")


def test_quickstart(ctx):
    """The README's quickstart as written: plain records, one `chunkd run --path`, a jq-like failure list."""
    q = ctx.queue
    items = [{"id": 1, "user": "alice"}, {"id": 2, "user": "bob"}, {"id": 3, "name": "no user field"}]
    out = ctx.path("results.jsonl")
    ctx.run("run", "--handler", "http", "--base-url", f"{ctx.mock.url}/{q}", "--path", "/users/{user}",
            "--out", out, ctx.write_jsonl("users.jsonl", items), redis=None, expect_rc=None, timeout=60)
    lines = {r["id"]: r for r in read_jsonl(out)}
    check(set(lines) == {1, 2, 3}, f"expected one line per record, got {sorted(lines)}")
    check(lines[1]["ok"] and lines[1]["result"]["status"] == 200 and lines[1]["result"]["body"]["path"] ==
          f"/{q}/users/alice", lambda: f"record 1: {lines[1]}")
    failed = [r["id"] for r in lines.values() if not r["ok"]]
    check(failed == [3] and "user" in lines[3]["error"], lambda: f"failures: {failed}, {lines[3]}")
