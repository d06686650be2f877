/* keeper: see keeper.h. Two sides: keeper_spawn() and keeper_stop() run in chunkd (the exec handler's loop);
 * keeper_main() is the keeper process, a fresh exec of chunkd and single-threaded, so it may fork freely.
 *
 * The keeper's loop: signals it acts on (SIGCHLD and the stop signals) are blocked and taken with sigwaitinfo /
 * sigtimedwait, never by handlers. Each turn reaps every exited child: the command's status is kept (its process
 * group is SIGKILLed first, while its zombie still holds the group's id), an orphan's is dropped. Once the
 * command is reaped, kill_orphans() SIGKILLs every child left until none is, and the keeper exits as the command
 * did. */
#include "keeper.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "children.h"
#include "clock.h"
#include "proctab.h"
#include "xalloc.h"

#define KEEPER_KILL_MS 1000   /* longest the keeper goes on killing what the command left (SIGKILL is quick) */
#define KEEPER_PASS_MS 5      /* between its passes, unless a child exits sooner */
#define KEEPER_START_MS 10000 /* keeper_spawn(): longest wait for the keeper to report the command's exec */

/* ---- chunkd's side ---- */

int keeper_spawn(char *const argv[], char *const envp[], const int fds[3], pid_t *pid)
{
    int status[2];
    if (pipe2(status, O_CLOEXEC)) return errno;
    size_t argc = 0;
    while (argv[argc]) argc++;
    char **kargv = xcalloc(argc + 2, sizeof *kargv);
    kargv[0] = KEEPER_ARGV0;
    for (size_t i = 0; i < argc; i++) kargv[i + 1] = argv[i];

    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    for (int i = 0; i < 3; i++) posix_spawn_file_actions_adddup2(&fa, fds[i], i);
    posix_spawn_file_actions_adddup2(&fa, status[1], KEEPER_STATUS_FD);
    posix_spawn_file_actions_addclosefrom_np(&fa, KEEPER_STATUS_FD + 1);
    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    /* A process group of its own (the command gets another from the keeper): a terminal's Ctrl-C reaches chunkd
     * only, which drains. An empty signal mask and default dispositions, which the command inherits. */
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    posix_spawnattr_setpgroup(&attr, 0);
    sigset_t none, defaults;
    sigemptyset(&none);
    posix_spawnattr_setsigmask(&attr, &none);
    sigemptyset(&defaults);
    static const int reset[] = {SIGPIPE, SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGCHLD};
    for (size_t i = 0; i < sizeof reset / sizeof reset[0]; i++) sigaddset(&defaults, reset[i]);
    posix_spawnattr_setsigdefault(&attr, &defaults);

    children_spawn_begin(); /* the child reaper leaves it to the caller from its first instant */
    int rc = posix_spawn(pid, "/proc/self/exe", &fa, &attr, kargv, envp);
    children_spawn_end(rc ? 0 : *pid);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    free(kargv);
    close(status[1]);
    if (rc) {
        close(status[0]);
        return rc;
    }
    /* The keeper closes its end once the command runs, or writes the exec's errno first. */
    int exec_errno = 0;
    struct pollfd pfd = {.fd = status[0], .events = POLLIN};
    int64_t deadline = clock_now_ms() + KEEPER_START_MS;
    for (int64_t left; (left = deadline - clock_now_ms()) > 0;) {
        int n = poll(&pfd, 1, (int)left);
        if (n < 0 && errno == EINTR) continue;
        if (n > 0 && read(status[0], &exec_errno, sizeof exec_errno) != (ssize_t)sizeof exec_errno) exec_errno = 0;
        break; /* else timed out: the keeper is slow; it runs, and its exit is seen as any other */
    }
    close(status[0]);
    if (exec_errno) {
        waitpid(*pid, NULL, 0); /* the keeper exits at once: its command never ran */
        children_release(*pid);
        return exec_errno;
    }
    return 0;
}

void keeper_stop(pid_t pid) { kill(pid, KEEPER_STOP_SIGNAL); }

/* ---- the keeper process ---- */

typedef struct keeper {
    pid_t cmd;          /* the command; its pid is also its process group's id */
    bool cmd_reaped;
    int cmd_status;     /* waitpid status, once reaped */
} keeper_t;

/* Reaps every exited child. Returns false when the keeper has no child left at all. */
static bool reap(keeper_t *k)
{
    for (;;) {
        siginfo_t info;
        memset(&info, 0, sizeof info);
        if (waitid(P_ALL, 0, &info, WEXITED | WNOHANG | WNOWAIT) != 0) return errno != ECHILD;
        if (info.si_pid == 0) return true;
        bool is_cmd = !k->cmd_reaped && info.si_pid == k->cmd;
        if (is_cmd) kill(-k->cmd, SIGKILL); /* what is left in its group; its zombie keeps the id from reuse */
        int status = 0;
        if (waitpid(info.si_pid, &status, 0) != info.si_pid) return true; /* cannot happen: it has exited */
        if (is_cmd) {
            k->cmd_reaped = true;
            k->cmd_status = status;
        }
    }
}

/* Waits for a child to exit, at most ms. */
static void wait_child(int ms)
{
    sigset_t chld;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    sigtimedwait(&chld, NULL, &ts);
}

/* SIGKILLs every child (what the command left: orphans below it come to the keeper, a subreaper) until none is
 * left, for at most KEEPER_KILL_MS. Without this pid namespace's /proc it cannot find them: it only reaps. */
static void kill_orphans(keeper_t *k)
{
    if (!proctab_is_ours()) {
        reap(k);
        return;
    }
    pid_t self = getpid();
    proctab_t t = {0};
    int64_t deadline = clock_now_ms() + KEEPER_KILL_MS;
    size_t left = 0;
    while (reap(k)) {
        if (clock_now_ms() >= deadline || proctab_read(&t)) break;
        left = 0;
        for (size_t i = 0; i < t.n; i++) {
            /* Our child, not reaped (we reap only on this thread): the pid cannot have been reused. */
            if (t.v[i].ppid != self || proctab_exited(&t.v[i])) continue;
            kill(t.v[i].pid, SIGKILL);
            left++;
        }
        wait_child(KEEPER_PASS_MS);
    }
    if (reap(k))
        fprintf(stderr, "%s: %zu processes that the command left are still alive %d ms after SIGKILL\n",
                KEEPER_ARGV0, left, KEEPER_KILL_MS);
    proctab_free(&t);
}

/* Exits as the command did: its exit status, or killed by its signal (without a core of our own). */
static int exit_as(int status)
{
    if (WIFEXITED(status)) return WEXITSTATUS(status);
    int sig = WTERMSIG(status);
    struct rlimit no_core = {0, 0};
    setrlimit(RLIMIT_CORE, &no_core);
    signal(sig, SIG_DFL);
    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, sig);
    sigprocmask(SIG_UNBLOCK, &s, NULL);
    raise(sig);
    return 128 + sig; /* a signal whose default is not to terminate: cannot have killed the command */
}

int keeper_main(int argc, char **argv)
{
    prctl(PR_SET_NAME, KEEPER_ARGV0);
    if (argc < 1) {
        fprintf(stderr, "%s: no command to run\n", KEEPER_ARGV0);
        return 127;
    }
    bool have_status = fcntl(KEEPER_STATUS_FD, F_SETFD, FD_CLOEXEC) == 0;
    sigset_t acted_on, old_mask;
    sigemptyset(&acted_on);
    sigaddset(&acted_on, SIGCHLD);
    sigaddset(&acted_on, SIGTERM);
    sigaddset(&acted_on, SIGINT);
    sigaddset(&acted_on, SIGHUP);
    sigprocmask(SIG_BLOCK, &acted_on, &old_mask);
    /* chunkd gone without stopping us (a second signal's _exit, kill -9, a crash): the same clean-up as a stop.
     * The signal comes when the thread that spawned us ends: the exec handler's loop, which stops us first. */
    prctl(PR_SET_PDEATHSIG, KEEPER_STOP_SIGNAL);
    if (prctl(PR_SET_CHILD_SUBREAPER, 1) != 0)
        fprintf(stderr, "%s: cannot become a child subreaper (%s): what the command leaves escapes\n", KEEPER_ARGV0,
                strerror(errno));

    keeper_t k = {0};
    k.cmd = fork();
    if (k.cmd == 0) {
        setpgid(0, 0);
        sigprocmask(SIG_SETMASK, &old_mask, NULL);
        execvp(argv[0], argv);
        int e = errno;
        if (!have_status || write(KEEPER_STATUS_FD, &e, sizeof e) != (ssize_t)sizeof e)
            fprintf(stderr, "%s: cannot run %s: %s\n", KEEPER_ARGV0, argv[0], strerror(e));
        _exit(127);
    }
    if (k.cmd < 0) {
        int e = errno;
        if (!have_status || write(KEEPER_STATUS_FD, &e, sizeof e) != (ssize_t)sizeof e)
            fprintf(stderr, "%s: cannot fork: %s\n", KEEPER_ARGV0, strerror(e));
        return 127;
    }
    setpgid(k.cmd, k.cmd); /* as the command does: whichever runs first */
    if (have_status) close(KEEPER_STATUS_FD);
    /* The command's pipes are the command's: our copies would keep them open after it is gone. */
    int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (devnull >= 0) {
        dup2(devnull, STDIN_FILENO);
        dup2(devnull, STDOUT_FILENO);
        close(devnull);
    }

    for (;;) {
        reap(&k);
        if (k.cmd_reaped) break;
        int sig = sigwaitinfo(&acted_on, NULL);
        if (sig == SIGTERM || sig == SIGINT || sig == SIGHUP) {
            kill(-k.cmd, SIGKILL); /* not reaped yet: neither id can have been reused */
            kill(k.cmd, SIGKILL);
        }
    }
    kill_orphans(&k);
    return exit_as(k.cmd_status);
}
