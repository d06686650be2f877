"""Security (issue 15, parts 2 to 4): what an exec subprocess can see of the worker, item paths kept inside
--base-url's path, --allow-hosts with ports, and log lines that text from outside cannot forge.

The subprocess tests run chunkd and its subprocesses as an unprivileged user (nobody, through setpriv), as in a
container: root could read any process's memory whatever chunkd does.
"""

import json
import sys

from harness import check

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
