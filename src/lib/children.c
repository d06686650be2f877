/* children: see children.h.
 *
 * The reaper thread waits for SIGCHLD (blocked in every thread, so only its sigtimedwait takes it), for a poke
 * (children_stop(): the same signal sent to it with pthread_kill) or CHILDREN_POLL_MS. Each turn it reaps every
 * exited child that is not claimed: waitid(P_ALL, WNOWAIT) peeks at one exited child; an unclaimed one is reaped
 * by pid and the next peeked at; a claimed one (its owner reaps it soon) hides the others from the peek, so they
 * are then found by their parent in /proc. Claims are checked and children reaped under claim_mu, which a spawner
 * holds from before its child exists until the child is claimed: no reap can fall between the two. /proc is read
 * outside claim_mu (spawners and owners releasing their pids do not wait for it) and each child it shows is
 * checked again under the lock: it existed when /proc was read, so its spawner's section is over by then, or
 * still holds the lock and the check waits for it. Reaping by pid is never wrong for an unclaimed child: waitid
 * takes it only if it has exited and is ours. */
#include "children.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "proctab.h"
#include "xalloc.h"

#define CHILDREN_POLL_MS 1000        /* the reaper's turn without SIGCHLD */
#define CHILDREN_BLOCKED_POLL_MS 50  /* ... while a claimed child hides others and /proc cannot show them */

static pthread_mutex_t claim_mu = PTHREAD_MUTEX_INITIALIZER;
static pid_t *claimed;               /* guarded by claim_mu: children their starters reap */
static size_t n_claimed, cap_claimed;

static pthread_t reaper;
static atomic_bool reaper_started;   /* set by children_start(), cleared by children_stop() once it has joined */
static atomic_bool stopping;
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

/* ---- the reaper thread ---- */

/* Reaps pid (an unclaimed child; claim_mu held) if it has exited. Returns true if it was reaped. */
static bool reap_one(pid_t pid)
{
    siginfo_t info;
    memset(&info, 0, sizeof info);
    if (waitid(P_PID, (id_t)pid, &info, WEXITED | WNOHANG) != 0 || info.si_pid != pid) return false;
    if (info.si_code == CLD_EXITED)
        LOG(LL_DEBUG, "reaped child %d (not started by chunkd): exited with status %d", (int)pid, info.si_status);
    else
        LOG(LL_DEBUG, "reaped child %d (not started by chunkd): killed by signal %d", (int)pid, info.si_status);
    return true;
}

/* Reaps exited unclaimed children as the peek shows them. Returns true when none is left to reap, false when a
 * claimed child hides the rest. */
static bool reap_peeked(void)
{
    bool done = true;
    pthread_mutex_lock(&claim_mu);
    for (;;) {
        siginfo_t info;
        memset(&info, 0, sizeof info);
        if (waitid(P_ALL, 0, &info, WEXITED | WNOHANG | WNOWAIT) != 0 || info.si_pid == 0) break;
        if (claimed_locked(info.si_pid)) {
            done = false;
            break;
        }
        if (!reap_one(info.si_pid)) break; /* cannot happen (it has exited and is ours); never loop on it */
    }
    pthread_mutex_unlock(&claim_mu);
    return done;
}

/* Reaps every exited child that is not claimed. Returns false when some may be left (a claimed child hid them and
 * /proc could not show them). */
static bool reap_unclaimed(proctab_t *t)
{
    if (reap_peeked()) return true;
    if (!proc_is_ours || proctab_read(t)) return false; /* outside claim_mu: see the top of the file */
    pthread_mutex_lock(&claim_mu);
    for (size_t i = 0; i < t->n; i++)
        if (t->v[i].ppid == self && proctab_exited(&t->v[i]) && !claimed_locked(t->v[i].pid)) reap_one(t->v[i].pid);
    pthread_mutex_unlock(&claim_mu);
    return true;
}

static void *children_main(void *arg)
{
    (void)arg;
    proctab_t table = {0};
    sigset_t chld;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    bool all_reaped = true;
    while (!atomic_load(&stopping)) {
        int ms = all_reaped ? CHILDREN_POLL_MS : CHILDREN_BLOCKED_POLL_MS;
        struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
        sigtimedwait(&chld, NULL, &ts);
        all_reaped = reap_unclaimed(&table);
    }
    reap_unclaimed(&table);
    proctab_free(&table);
    return NULL;
}

int children_start(char *err, size_t errlen)
{
    sigset_t chld;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    pthread_sigmask(SIG_BLOCK, &chld, NULL);
    self = getpid();
    proc_is_ours = proctab_is_ours();
    atomic_init(&stopping, false);
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
    pthread_kill(reaper, SIGCHLD);
    pthread_join(reaper, NULL);
    atomic_store(&reaper_started, false);
    pthread_mutex_lock(&claim_mu);
    free(claimed);
    claimed = NULL;
    n_claimed = cap_claimed = 0;
    pthread_mutex_unlock(&claim_mu);
}
