/* children: see children.h.
 *
 * The reaper thread waits for SIGCHLD (blocked in every thread, so only its sigtimedwait takes it), for a poke
 * (children_kill_orphans(), children_stop(): the same signal sent to it with pthread_kill) or CHILDREN_POLL_MS.
 * Each turn it reaps every exited child that is not claimed: waitid(P_ALL, WNOWAIT) peeks at one exited child;
 * an unclaimed one is reaped by pid and the next peeked at; a claimed one (its owner reaps it soon) hides the
 * others from the peek, so they are then found by their parent in /proc. Claims are checked and children reaped
 * under claim_mu, which a spawner holds from before its child exists until the child is claimed: no reap or kill
 * can fall between the two.
 *
 * Killing orphans: a pass reads every process's parent and state from /proc, marks the unclaimed children of
 * chunkd and everything below them, SIGKILLs the marked ones that are alive, and reaps. A process that forked
 * between the read and the kill leaves a child that becomes an orphan when its parent dies, so passes repeat
 * (CHILDREN_PASS_MS apart) until one finds nothing alive, for at most CHILDREN_KILL_MS. Roots are children of
 * chunkd, which only this thread reaps, so their pids cannot be reused between the read and the kill. */
#include "children.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "log.h"
#include "xalloc.h"

#define CHILDREN_POLL_MS 1000        /* the reaper's turn without SIGCHLD */
#define CHILDREN_BLOCKED_POLL_MS 50  /* ... while a claimed child hides others and /proc cannot show them */
#define CHILDREN_KILL_MS 2000        /* longest a kill of orphans goes on (SIGKILLed processes die at once) */
#define CHILDREN_PASS_MS 5           /* between its passes */
#define CHILDREN_STAT_BYTES 256      /* of /proc/<pid>/stat: pid, (comm of at most 16 bytes), state, ppid */

/* One process as /proc showed it. */
typedef struct proc_entry {
    pid_t pid, ppid;
    char state;                  /* 'R', 'S', 'Z' (exited, not reaped), ... */
    bool marked;                 /* an orphan or below one */
} proc_entry_t;

/* Every process in /proc, sorted by pid; the reaper thread's only. */
typedef struct proc_table {
    proc_entry_t *v;
    size_t n, cap;
} proc_table_t;

static pthread_mutex_t claim_mu = PTHREAD_MUTEX_INITIALIZER;
static pid_t *claimed;               /* guarded by claim_mu: children their starters reap */
static size_t n_claimed, cap_claimed;
static bool had_children;            /* guarded by claim_mu: a child was ever claimed (orphans may exist) */

static pthread_t reaper;
static atomic_bool reaper_started;   /* set by children_start(), cleared by children_stop() once it has joined */
static atomic_bool stopping, kill_requested;
static pid_t self;
static bool proc_is_ours;            /* /proc belongs to this pid namespace: set before the reaper starts */

/* ---- claims (any thread) ---- */

static bool claimed_locked(pid_t pid)
{
    for (size_t i = 0; i < n_claimed; i++)
        if (claimed[i] == pid) return true;
    return false;
}

void children_spawn_begin(void) { pthread_mutex_lock(&claim_mu); }

void children_spawn_end(pid_t pid)
{
    if (pid > 0) {
        if (n_claimed == cap_claimed) {
            cap_claimed = cap_claimed ? 2 * cap_claimed : 64;
            claimed = xrealloc(claimed, cap_claimed * sizeof *claimed);
        }
        claimed[n_claimed++] = pid;
        had_children = true;
    }
    pthread_mutex_unlock(&claim_mu);
}

void children_release(pid_t pid)
{
    pthread_mutex_lock(&claim_mu);
    for (size_t i = 0; i < n_claimed; i++) {
        if (claimed[i] == pid) {
            claimed[i] = claimed[--n_claimed];
            break;
        }
    }
    pthread_mutex_unlock(&claim_mu);
}

static void poke(void)
{
    if (atomic_load(&reaper_started)) pthread_kill(reaper, SIGCHLD);
}

void children_kill_orphans(void)
{
    atomic_store(&kill_requested, true);
    poke();
}

/* ---- /proc ---- */

/* True when /proc shows this process under the pid getpid() returns: it is this pid namespace's. */
static bool proc_matches_namespace(void)
{
    char link[32];
    ssize_t n = readlink("/proc/self", link, sizeof link - 1);
    if (n <= 0) return false;
    link[n] = '\0';
    return strtol(link, NULL, 10) == (long)getpid();
}

static int entry_cmp(const void *a, const void *b)
{
    pid_t x = ((const proc_entry_t *)a)->pid, y = ((const proc_entry_t *)b)->pid;
    return (x > y) - (x < y);
}

/* Reads pid, parent and state of every process into t (sorted by pid). Returns 0, or -1 when /proc cannot be
 * read. A process gone between the listing and its stat is left out. */
static int proc_read(proc_table_t *t)
{
    t->n = 0;
    DIR *d = opendir("/proc");
    if (!d) return -1;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] < '1' || e->d_name[0] > '9') continue;
        char path[64], buf[CHILDREN_STAT_BYTES];
        snprintf(path, sizeof path, "%s/stat", e->d_name);
        int fd = openat(dirfd(d), path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) continue;
        ssize_t len = read(fd, buf, sizeof buf - 1);
        close(fd);
        if (len <= 0) continue;
        buf[len] = '\0';
        const char *close_paren = strrchr(buf, ')'); /* the command name may hold anything, ')' too */
        char state;
        int ppid;
        if (!close_paren || sscanf(close_paren + 1, " %c %d", &state, &ppid) != 2) continue;
        if (t->n == t->cap) {
            t->cap = t->cap ? 2 * t->cap : 256;
            t->v = xrealloc(t->v, t->cap * sizeof *t->v);
        }
        t->v[t->n++] = (proc_entry_t){.pid = (pid_t)strtol(e->d_name, NULL, 10), .ppid = ppid, .state = state};
    }
    closedir(d);
    if (t->n > 1) qsort(t->v, t->n, sizeof *t->v, entry_cmp);
    return 0;
}

static proc_entry_t *proc_find(proc_table_t *t, pid_t pid)
{
    proc_entry_t key = {.pid = pid};
    if (!t->n) return NULL;
    return bsearch(&key, t->v, t->n, sizeof *t->v, entry_cmp);
}

static bool exited(const proc_entry_t *e) { return e->state == 'Z' || e->state == 'X'; }

/* ---- the reaper thread ---- */

/* Reaps pid (an unclaimed child; claim_mu held) if it has exited. Returns 1 if it was reaped. */
static int reap_one(pid_t pid)
{
    siginfo_t info;
    memset(&info, 0, sizeof info);
    if (waitid(P_PID, (id_t)pid, &info, WEXITED | WNOHANG) != 0 || info.si_pid != pid) return 0;
    if (info.si_code == CLD_EXITED)
        LOG(LL_DEBUG, "reaped orphan %d: exited with status %d", (int)pid, info.si_status);
    else
        LOG(LL_DEBUG, "reaped orphan %d: killed by signal %d", (int)pid, info.si_status);
    return 1;
}

/* Reaps every exited child that is not claimed. Returns false when some may be left (a claimed child hid them and
 * /proc could not show them). */
static bool reap_unclaimed(proc_table_t *t)
{
    bool all = true;
    pthread_mutex_lock(&claim_mu);
    for (;;) {
        siginfo_t info;
        memset(&info, 0, sizeof info);
        if (waitid(P_ALL, 0, &info, WEXITED | WNOHANG | WNOWAIT) != 0 || info.si_pid == 0) break;
        if (!claimed_locked(info.si_pid)) {
            if (reap_one(info.si_pid)) continue;
            break; /* cannot happen (it has exited and is ours); never loop on it */
        }
        /* A claimed child is first in line: look past it in /proc. The table is read under the lock, so no child
         * started since is in it unclaimed. */
        if (!proc_is_ours || proc_read(t)) {
            all = false;
            break;
        }
        for (size_t i = 0; i < t->n; i++)
            if (t->v[i].ppid == self && exited(&t->v[i]) && !claimed_locked(t->v[i].pid)) reap_one(t->v[i].pid);
        break;
    }
    pthread_mutex_unlock(&claim_mu);
    return all;
}

/* One pass of a kill: marks the orphans and everything below them in t and SIGKILLs those alive. Returns how many
 * were alive; *first is set to one of them. */
static size_t kill_pass(proc_table_t *t, pid_t *first)
{
    size_t alive = 0;
    pthread_mutex_lock(&claim_mu); /* after proc_read: a child in t is claimed by now if it ever will be */
    for (size_t i = 0; i < t->n; i++) t->v[i].marked = t->v[i].ppid == self && !claimed_locked(t->v[i].pid);
    for (bool grew = true; grew;) {
        grew = false;
        for (size_t i = 0; i < t->n; i++) {
            if (t->v[i].marked) continue;
            const proc_entry_t *parent = proc_find(t, t->v[i].ppid);
            if (parent && parent->marked) t->v[i].marked = grew = true;
        }
    }
    for (size_t i = 0; i < t->n; i++) {
        if (!t->v[i].marked || exited(&t->v[i])) continue;
        if (kill(t->v[i].pid, SIGKILL) == 0 && !alive++) *first = t->v[i].pid;
    }
    pthread_mutex_unlock(&claim_mu);
    return alive;
}

/* SIGKILLs every orphan and everything below it until a pass finds none alive (or CHILDREN_KILL_MS). */
static void kill_orphans(proc_table_t *t)
{
    if (!proc_is_ours) return;
    int64_t deadline = clock_now_ms() + CHILDREN_KILL_MS;
    size_t killed = 0, alive;
    pid_t first = 0;
    while (proc_read(t) == 0 && (alive = kill_pass(t, &first)) > 0) {
        if (!killed) killed = alive; /* the first pass's count: later passes see the same ones dying */
        reap_unclaimed(t);
        if (clock_now_ms() >= deadline) {
            LOG(LL_WARN, "%zu processes left behind by subprocesses are still alive %d ms after SIGKILL (pid %d)",
                alive, CHILDREN_KILL_MS, (int)first);
            break;
        }
        struct timespec ts = {0, CHILDREN_PASS_MS * 1000000L};
        nanosleep(&ts, NULL);
    }
    reap_unclaimed(t);
    if (killed)
        LOG_LIMITED(LL_WARN, "killed %zu processes that subprocesses left behind (orphans of chunkd, e.g. pid %d)",
                    killed, (int)first);
}

static void *children_main(void *arg)
{
    (void)arg;
    proc_table_t table = {0};
    sigset_t chld;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    bool all_reaped = true;
    while (!atomic_load(&stopping)) {
        int ms = all_reaped ? CHILDREN_POLL_MS : CHILDREN_BLOCKED_POLL_MS;
        struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
        sigtimedwait(&chld, NULL, &ts);
        if (atomic_exchange(&kill_requested, false)) kill_orphans(&table);
        all_reaped = reap_unclaimed(&table);
    }
    pthread_mutex_lock(&claim_mu);
    bool any = had_children;
    pthread_mutex_unlock(&claim_mu);
    if (any) kill_orphans(&table);
    reap_unclaimed(&table);
    free(table.v);
    return NULL;
}

int children_start(char *err, size_t errlen)
{
    sigset_t chld;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    pthread_sigmask(SIG_BLOCK, &chld, NULL);
    self = getpid();
    proc_is_ours = proc_matches_namespace();
    if (self != 1 && prctl(PR_SET_CHILD_SUBREAPER, 1) != 0)
        LOG(LL_WARN, "cannot become a child subreaper (%s): processes that subprocesses leave behind escape",
            strerror(errno));
    if (!proc_is_ours)
        LOG(LL_WARN, "/proc is not this pid namespace's (mount it, e.g. unshare --mount-proc): orphans are reaped "
                     "but processes that subprocesses leave behind are not killed");
    atomic_init(&stopping, false);
    atomic_init(&kill_requested, false);
    int rc = pthread_create(&reaper, NULL, children_main, NULL);
    if (rc) {
        snprintf(err, errlen, "cannot start the child reaper thread: %s", strerror(rc));
        return -1;
    }
    atomic_store(&reaper_started, true);
    return 0;
}

void children_stop(void)
{
    if (!atomic_load(&reaper_started)) return;
    atomic_store(&stopping, true);
    poke();
    pthread_join(reaper, NULL);
    atomic_store(&reaper_started, false);
    pthread_mutex_lock(&claim_mu);
    free(claimed);
    claimed = NULL;
    n_claimed = cap_claimed = 0;
    pthread_mutex_unlock(&claim_mu);
}
