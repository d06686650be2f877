"""Processes that exec subprocesses leave behind (README: Guarantees, "A failing subprocess loses no item and leaves no
process"; src/lib/children.c).

The subprocess is a small sh script: per item it can leave orphans (background jobs of a subshell that exits), crash
after it backgrounded a job, or detach a `sleep MARKER` into a session of its own (setsid, which a process-group
kill misses), then crash, hang or carry on. MARKER is unique per test, so the test finds those sleeps in /proc
(from this pid namespace too when chunkd runs in one of its own) and kills any it finds at the end.

chunkd as PID 1 runs under `unshare --pid --fork --mount-proc` (these tests run as root), as in a container
without an init.

A sidecar is a `sleep SIDECAR_MARKER` that a shell starts in the background before it execs chunkd (`sh -c 'sidecar &
exec chunkd ...'`, as a container entrypoint may): chunkd inherits it as its child. It is not a subprocess's, so
chunkd must reap it when it exits but never kill it.
"""

import json
import os
import signal
import subprocess

from harness import Proc, _preexec, check, scaled, wait_until

SCRIPT = r'''
state=$1 marker=$2
: > "$state/started-$$"
detach() {  # a sleep in a session of its own, as a daemon would leave it; waits until it is one
    setsid sleep "$marker" </dev/null >/dev/null 2>&1 &
    p=$! n=0
    until [ "$(cut -d' ' -f6 "/proc/$p/stat" 2>/dev/null)" = "$p" ] || [ $n -ge 1000 ]; do sleep 0.01; n=$((n+1)); done
}
helper() {  # a sleep double-forked into a session of its own (an orphan at once), as a daemon's helper
    (setsid sleep "$marker" </dev/null >/dev/null 2>&1 & echo $! > "$state/helper-pid")
    p=$(cat "$state/helper-pid") n=0
    until [ "$(cut -d' ' -f6 "/proc/$p/stat" 2>/dev/null)" = "$p" ] || [ $n -ge 1000 ]; do sleep 0.01; n=$((n+1)); done
}
while IFS= read -r line; do
    id=${line#*\"id\":}
    id=${id%%,*}
    case $line in
    *'"kind":"orphans"'*)
        # Three orphans: each subshell exits at once, its sleep goes to chunkd (subreaper or PID 1).
        (sleep 0.05 </dev/null >/dev/null 2>&1 &)
        (sleep 0.05 </dev/null >/dev/null 2>&1 &)
        (sleep 0.05 </dev/null >/dev/null 2>&1 &) ;;
    *'"kind":"crash_once"'*)
        # Backgrounds a short job and exits: the job outlives its parent.
        if [ ! -e "$state/crashed-$id" ]; then
            : > "$state/crashed-$id"
            sleep 0.05 </dev/null >/dev/null 2>&1 &
            exit 3
        fi ;;
    *'"kind":"detach"'*) detach ;;
    *'"kind":"detach_crash"'*) detach; exit 3 ;;
    *'"kind":"detach_hang"'*) detach; sleep 1000 ;;
    *'"kind":"pair"'*)
        # Two of these on two subprocesses: the first starts a helper and waits until the other has crashed and
        # its replacement has started (a third subprocess).
        if mkdir "$state/pair-lock" 2>/dev/null; then
            helper
            n=0
            until [ -e "$state/pair-crashed" ] && [ "$(ls "$state" | grep -c '^started-')" -ge 3 ] || [ $n -ge 3000 ]
            do sleep 0.01; n=$((n+1)); done
        elif [ ! -e "$state/pair-crashed" ]; then
            : > "$state/pair-crashed"
            exit 3
        fi ;;
    esac
    printf '{"id":%s,"result":true}\n' "$id"
done
'''


def setup(ctx):
    """Writes the script; returns (--cmd value, marker)."""
    state = ctx.path("state")
    state.mkdir(exist_ok=True)
    script = ctx.path("fn.sh")
    script.write_text(SCRIPT)
    marker = str(4_000_000_000 + int.from_bytes(os.urandom(3), "big"))
    return f"sh '{script}' '{state}' {marker}", marker


def stat_fields(pid):
    """(state, ppid) of pid, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            rest = f.read().rsplit(")", 1)[1].split()
        return rest[0], int(rest[1])
    except (OSError, IndexError, ValueError):
        return None


def all_pids():
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def marked(marker):
    """Pids of the `sleep MARKER` processes that are alive (not zombies)."""
    found = []
    for pid in all_pids():
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if argv[:2] == [b"sleep", marker.encode()]:
            st = stat_fields(pid)
            if st and st[0] != "Z":
                found.append(pid)
    return found


def kill_marked(marker):
    for pid in marked(marker):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def sidecar_marker(marker):
    return str(int(marker) + 1)


def with_sidecar(marker, argv):
    """argv run by a shell that first starts `sleep SIDECAR_MARKER` in the background, then execs argv[0]."""
    return ["sh", "-c", 'sleep "$1" </dev/null >/dev/null 2>&1 & shift; exec "$@"', "sh",
            sidecar_marker(marker)] + argv


def spawn_argv(ctx, label, argv, redis="env"):
    """Starts argv (which runs chunkd) with chunkd's environment, its output captured as ctx.spawn does."""
    n = len(ctx.procs) + 1
    out_path, err_path = ctx.tmp / f"proc{n:02d}-argv.stdout", ctx.tmp / f"proc{n:02d}-argv.stderr"
    with open(out_path, "wb") as out, open(err_path, "wb") as err, open(os.devnull, "rb") as inp:
        popen = subprocess.Popen(argv, stdin=inp, stdout=out, stderr=err, env=ctx.env(redis), cwd=ctx.tmp,
                                 preexec_fn=_preexec())
    proc = Proc(label, argv, popen, out_path, err_path)
    ctx.procs.append(proc)
    return proc


def spawn_pid1(ctx, *args, mount_proc=True, sidecar=None):
    """`unshare --pid --fork [--mount-proc] --kill-child chunkd ARGS`: chunkd as PID 1 of a new pid namespace
    (without --mount-proc, /proc is still this namespace's); with sidecar (a marker), chunkd inherits a sidecar
    started by the shell that was PID 1 before it. Returns (the unshare Proc, chunkd's pid as seen from here)."""
    argv = [ctx.bin] + [str(a) for a in args]
    if sidecar:
        argv = with_sidecar(sidecar, argv)
    argv = ["unshare", "--pid", "--fork"] + (["--mount-proc"] if mount_proc else []) + ["--kill-child"] + argv
    proc = spawn_argv(ctx, "chunkd as PID 1", argv)
    popen = proc.popen
    found = []
    wait_until(lambda: found.extend(p for p in all_pids() if (stat_fields(p) or ("", 0))[1] == popen.pid) or found,
               10, lambda: f"the child of unshare ({proc.describe()})")
    return proc, found[0]


def zombies_in_namespace_of(pid):
    """Pids (as seen from here) of the zombies in pid's pid namespace."""
    ns = os.readlink(f"/proc/{pid}/ns/pid")
    zombies = []
    for p in all_pids():
        try:
            if os.readlink(f"/proc/{p}/ns/pid") != ns:
                continue
        except OSError:
            continue
        st = stat_fields(p)
        if st and st[0] == "Z":
            zombies.append(p)
    return zombies


def check_pid1_reaps_orphans(ctx, mount_proc):
    cmd, _ = setup(ctx)
    items = [{"id": i, "kind": "orphans"} for i in range(20)] + [{"id": 100 + i, "kind": "crash_once"}
                                                                  for i in range(2)]
    ctx.run("enqueue", "--queue", ctx.queue, "--chunk-size", 5, ctx.write_jsonl("items.jsonl", items))
    proc, pid1 = spawn_pid1(ctx, "worker", "--queue", ctx.queue, "--handler", "exec", "--cmd", cmd, "--procs", 2,
                            "--concurrency", 4, "--max-attempts", 2, "--retry-base-ms", 10, "--retry-max-ms", 20,
                            mount_proc=mount_proc)
    wait_until(lambda: ctx.xlen() == len(items), 60, lambda: f"{len(items)} results ({proc.describe()})")
    check(all(r["ok"] for r in ctx.stream_results()), "an item failed")
    wait_until(lambda: not zombies_in_namespace_of(pid1), 10,
               lambda: f"no zombie in chunkd's pid namespace; {len(zombies_in_namespace_of(pid1))} left "
                       f"({proc.describe()})")
    check(proc.alive(), f"chunkd exited early: {proc.describe()}")
    os.kill(pid1, signal.SIGTERM)
    proc.wait(30, expect_rc=0)


def test_pid1_reaps_orphans(ctx):
    """chunkd as PID 1 (a container without an init) reaps the orphans its subprocesses leave: 60 short background
    jobs of subshells that exit at once, and the jobs of subprocesses that crashed after starting them. Before, all
    of them stayed zombies for as long as the worker ran."""
    check_pid1_reaps_orphans(ctx, mount_proc=True)


def test_pid1_without_own_proc_reaps_orphans(ctx):
    """The same when /proc is not the namespace's (`unshare --pid --fork` alone, as in the issue): the reaper
    cannot look past a crashed subprocess that its owner has not reaped yet, and waits for it."""
    check_pid1_reaps_orphans(ctx, mount_proc=False)


def drain_leaves_no_marked(worker, marker, what):
    """SIGTERM drains the worker; once it has exited, no `sleep MARKER` is alive."""
    worker.send(signal.SIGTERM)
    worker.wait(30, expect_rc=0)
    wait_until(lambda: not marked(marker), 5, lambda: f"{what} gone after the drain; alive: {marked(marker)}")


def test_setsid_grandchild_gone_after_drain(ctx):
    """A process a subprocess put in a session of its own (setsid: out of reach of the process-group kill) is gone
    once the worker has drained on SIGTERM and exited."""
    cmd, marker = setup(ctx)
    try:
        ctx.run("enqueue", "--queue", ctx.queue, ctx.write_jsonl("items.jsonl", [{"id": 1, "kind": "detach"}]))
        worker = ctx.spawn("worker", "--queue", ctx.queue, "--handler", "exec", "--cmd", cmd, "--procs", 1)
        wait_until(lambda: ctx.xlen() == 1, 60, lambda: f"the item's result ({worker.describe()})")
        check(len(marked(marker)) == 1, f"expected one detached sleep, found {marked(marker)}")
        drain_leaves_no_marked(worker, marker, "the detached sleep")
    finally:
        kill_marked(marker)


def check_replacement_leaves_nothing(ctx, kind, *args):
    """An item of kind detaches a sleep and then makes its subprocess fail; the sleep must be gone while the worker
    still runs (killed when the subprocess was replaced, not at exit)."""
    cmd, marker = setup(ctx)
    try:
        ctx.run("enqueue", "--queue", ctx.queue, ctx.write_jsonl("items.jsonl", [{"id": 1, "kind": kind}]))
        worker = ctx.spawn("worker", "--queue", ctx.queue, "--handler", "exec", "--cmd", cmd, "--procs", 1,
                           "--max-attempts", 1, *args)
        wait_until(lambda: ctx.xlen() == 1, 60, lambda: f"the item's result ({worker.describe()})")
        result = ctx.stream_results()[0]
        check(result["ok"] is False, f"the item should have failed: {result}")
        wait_until(lambda: not marked(marker), 10,
                   lambda: f"the detached sleep gone after the replacement; alive: {marked(marker)}")
        check(worker.alive(), f"the worker exited: {worker.describe()}")
        worker.send(signal.SIGTERM)
        worker.wait(30, expect_rc=0)
    finally:
        kill_marked(marker)


def test_crash_replacement_leaves_no_descendant(ctx):
    check_replacement_leaves_nothing(ctx, "detach_crash")


def test_exec_timeout_replacement_leaves_no_descendant(ctx):
    check_replacement_leaves_nothing(ctx, "detach_hang", "--exec-timeout-ms", 1000)


def check_sidecar_survives_run(ctx, handler_args, items):
    """`sh -c 'sidecar & exec chunkd run ...'`: the run succeeds, and the sidecar is alive after it (after the
    replacement of a crashed subprocess too, when an item crashes one)."""
    cmd, marker = setup(ctx)
    try:
        argv = with_sidecar(marker, [ctx.bin, "run", *handler_args(cmd), "--chunk-size", 1, "--max-attempts", 2,
                                     "--retry-base-ms", 10, "--retry-max-ms", 20, "--out", ctx.path("out.jsonl"),
                                     ctx.write_jsonl("items.jsonl", items)])
        run = spawn_argv(ctx, "sh -c 'sidecar & exec chunkd run'", [str(a) for a in argv], redis=None)
        run.wait(120, expect_rc=0)
        results = [json.loads(line) for line in ctx.path("out.jsonl").read_text().splitlines()]
        check(len(results) == len(items) and all(r["ok"] for r in results), f"results: {results}")
        sidecar = marked(sidecar_marker(marker))
        check(len(sidecar) == 1, f"the sidecar was killed ({run.describe()})")
    finally:
        kill_marked(marker)
        kill_marked(sidecar_marker(marker))


def test_sidecar_survives_subprocess_crash_and_exit(ctx):
    """A sidecar that chunkd inherited is not a subprocess's: a crashed subprocess's replacement and the run's exit
    leave it alive. Before, both SIGKILLed it as an orphan of the subprocess ("reaped orphan N: killed by signal
    9")."""
    items = [{"id": 1, "kind": "crash_once"}, {"id": 2, "kind": "ok"}, {"id": 3, "kind": "ok"}]
    check_sidecar_survives_run(ctx, lambda cmd: ["--handler", "exec", "--cmd", cmd, "--procs", 1], items)
    check(ctx.path("state/crashed-1").exists(), "the subprocess did not crash")


def test_sidecar_survives_echo_run(ctx):
    """The same with no subprocess at all: `chunkd run --handler echo` killed the sidecar at its exit."""
    check_sidecar_survives_run(ctx, lambda cmd: ["--handler", "echo"], [{"id": i} for i in range(3)])


def test_pid1_sidecar_survives_while_subprocess_leftovers_die(ctx):
    """chunkd as PID 1 with a sidecar from the shell that exec'ed it: a subprocess that detaches a process into a
    session of its own and crashes is replaced, and what it left is killed; the sidecar stays alive (and no
    zombie is left). Before, the sidecar was SIGKILLed with it."""
    cmd, marker = setup(ctx)
    try:
        ctx.run("enqueue", "--queue", ctx.queue, ctx.write_jsonl("items.jsonl", [{"id": 1, "kind": "detach_crash"}]))
        proc, pid1 = spawn_pid1(ctx, "worker", "--queue", ctx.queue, "--handler", "exec", "--cmd", cmd, "--procs", 1,
                                "--max-attempts", 1, sidecar=marker)
        wait_until(lambda: ctx.xlen() == 1, 60, lambda: f"the item's result ({proc.describe()})")
        check(ctx.stream_results()[0]["ok"] is False, f"the item should have failed: {ctx.stream_results()}")
        wait_until(lambda: not marked(marker), 10,
                   lambda: f"the detached sleep gone after the replacement; alive: {marked(marker)}")
        check(len(marked(sidecar_marker(marker))) == 1, f"the sidecar was killed ({proc.describe()})")
        wait_until(lambda: not zombies_in_namespace_of(pid1), 10,
                   lambda: f"no zombie in chunkd's pid namespace ({proc.describe()})")
        check(proc.alive(), f"chunkd exited early: {proc.describe()}")
        os.kill(pid1, signal.SIGTERM)
        proc.wait(30, expect_rc=0)
    finally:
        kill_marked(marker)
        kill_marked(sidecar_marker(marker))


def test_other_subprocess_crash_spares_running_subprocess_helper(ctx):
    """Only a subprocess's own leftovers die with it: a helper that one subprocess double-forked (an orphan at once,
    in a session of its own) while it runs on survives another subprocess's crash and replacement, and is gone
    after the drain. Before, the end of any subprocess killed the orphans of all."""
    cmd, marker = setup(ctx)
    try:
        ctx.run("enqueue", "--queue", ctx.queue, "--chunk-size", 1,
                ctx.write_jsonl("items.jsonl", [{"id": 1, "kind": "pair"}, {"id": 2, "kind": "pair"}]))
        worker = ctx.spawn("worker", "--queue", ctx.queue, "--handler", "exec", "--cmd", cmd, "--procs", 2,
                           "--concurrency", 4, "--max-attempts", 2, "--retry-base-ms", 10, "--retry-max-ms", 20)
        wait_until(lambda: ctx.xlen() == 2, 60, lambda: f"both results ({worker.describe()})")
        check(all(r["ok"] for r in ctx.stream_results()), f"results: {ctx.stream_results()}")
        check(ctx.path("state/pair-crashed").exists(), "no subprocess crashed")
        check(len(marked(marker)) == 1, f"the running subprocess's helper was killed ({worker.describe()})")
        drain_leaves_no_marked(worker, marker, "the helper")
    finally:
        kill_marked(marker)
