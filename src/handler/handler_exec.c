/* handler_exec: each item goes to one of a pool of long-lived subprocesses that speak JSON Lines on stdin/stdout.
 *
 * Pool: --procs subprocesses per worker process (default: the number of CPUs), all on one event loop (max_loops is
 * 1). chunkd's share of an item is a write, a read and a JSON parse, small next to the subprocess's work, so one
 * loop drives hundreds of pipes; and fetch hands each chunk whole to one loop, so pools split over loops would
 * leave one loop's subprocesses idle while another's queue is long. As for every handler, the pool is touched by
 * its loop's thread only. Items held beyond the idle subprocesses wait in a FIFO queue (their --item-timeout-ms
 * runs meanwhile); --concurrency of about 2 x --procs keeps every subprocess fed (more only queues items).
 *
 * Protocol (exec_proto.h): one item in flight per subprocess. chunkd writes {"id":..,"item":..} and a newline to
 * its stdin and reads one line from its stdout, {"id":..,"result":..} or {"id":..,"error":".."}, matched by id.
 * A result is committed with its JSON text as written (numbers keep their formatting); an "error" reply fails the
 * item at once (the function ran and raised: not retried). Stderr lines go to the log, at most
 * EXEC_STDERR_LINES_PER_S per loop.
 *
 * Failures: a subprocess that exits, writes garbage (a line that is not a reply, another id, a line longer than
 * --max-result-bytes, a line while idle), or is silent on an item for --exec-timeout-ms is killed (SIGKILL to
 * its process group) and replaced, and its item is retried under --max-attempts after a full-jitter backoff of
 * --retry-base-ms / --retry-max-ms, on whatever subprocess is free then. --item-timeout-ms (the loop's cancel)
 * kills the item's subprocess too, and the item fails. A subprocess is "up" once it has written a line or lived
 * EXEC_UP_MS; one that exits before it is up failed at start: it is restarted after a capped exponential delay
 * (EXEC_RESTART_BASE_MS doubling up to EXEC_RESTART_MAX_MS), its replacement gets no item until it is up (so a
 * broken command does not use up the items' attempts), and from the EXEC_NOT_READY_AFTER-th failure in a row of
 * one slot the worker is not ready (/readyz 503, with the reason, and an error log line) until a subprocess of
 * that slot is up again.
 *
 * Hygiene: argv from --cmd, never a shell; each subprocess runs under a keeper of its own (keeper.h: chunkd again,
 * a subreaper that kills whatever the command leaves behind, setsid() or not, and exits as the command did), with
 * stdin/stdout/stderr on pipes, every other descriptor closed, a new process group, an empty signal mask and
 * default dispositions; the environment is only PATH, HOME, LANG and the --env names that are set. In this file
 * "the subprocess" and its pid are the keeper's: its exit status is the command's. Each keeper is claimed from the
 * child reaper (children.h) as it is spawned, so the reaper never takes its status; exits are seen through a
 * pidfd (Linux 5.3+) on the loop's epoll and reaped here with waitpid(pid, WNOHANG): never waitpid(-1), never
 * SIGCHLD. A subprocess is killed by keeper_stop() (its keeper SIGKILLs the command and all it left, then exits).
 * loop_free() closes every stdin, gives the subprocesses EXEC_EXIT_GRACE_MS to exit, stops the rest and reaps
 * them, so a drained worker leaves no process of theirs behind. A SIGKILLed worker cannot: its subprocesses see
 * EOF on stdin (the README's loop then ends) and their keepers then kill what they left. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/pidfd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "children.h"
#include "dynbuf.h"
#include "exec_proto.h"
#include "handler.h"
#include "keeper.h"
#include "list.h"
#include "log.h"
#include "metrics.h"
#include "proctab.h"
#include "xalloc.h"

#define EXEC_UP_MS 3000              /* a subprocess alive this long (or that wrote a line) has started */
#define EXEC_NOT_READY_AFTER 2       /* start failures in a row of one slot that make the worker not ready */
#define EXEC_RESTART_BASE_MS 100     /* restart delay after a start failure, doubled per failure in a row */
#define EXEC_RESTART_MAX_MS 10000
#define EXEC_EOF_GRACE_MS 2000       /* a subprocess that closed stdout or stdin is killed if still alive then */
#define EXEC_EXIT_GRACE_MS 200       /* loop_free: time to exit after stdin closes, before a stop */
#define EXEC_REAP_WAIT_MS 2000       /* loop_free: longest wait for stopped keepers to exit (theirs: 1 s) */
#define EXEC_STDERR_LINE_MAX 2048    /* longer stderr lines are logged in pieces */
#define EXEC_STDERR_LINES_PER_S 200  /* per loop; the rest are counted, not logged */
#define EXEC_READ_BYTES 65536
#define EXEC_KEEP_LINE_BYTES 65536   /* a line buffer grown past this is freed after its line */

/* ---- process-wide configuration and readiness ---- */

typedef struct exec_shared {
    const settings_t *settings;
    char **argv;                 /* from --cmd */
    char **envp;                 /* "NAME=value", NULL-terminated */
    long procs;                  /* subprocesses in this worker process, all on one loop */
    atomic_int failing_slots;    /* slots at EXEC_NOT_READY_AFTER or more start failures in a row */
    pthread_mutex_t mu;          /* guards why */
    char why[320];               /* the last start failure that made the worker not ready */
} exec_shared_t;

static long exec_procs(const settings_t *s)
{
    long n = s->procs ? (long)s->procs : sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? n : 1;
}

static long exec_max_loops(const settings_t *s)
{
    (void)s;
    return 1;
}

static void exec_fini(void *shared)
{
    exec_shared_t *sh = shared;
    if (!sh) return;
    exec_proto_argv_free(sh->argv);
    exec_proto_argv_free(sh->envp);
    pthread_mutex_destroy(&sh->mu);
    free(sh);
}

static int exec_init(const settings_t *s, void **shared, char *err, size_t errlen)
{
    exec_shared_t *sh = xcalloc(1, sizeof *sh);
    sh->settings = s;
    pthread_mutex_init(&sh->mu, NULL);
    atomic_init(&sh->failing_slots, 0);
    *shared = sh;
    char why[256];
    int argc;
    sh->argv = exec_proto_split_argv(s->cmd ? s->cmd : "", &argc, why, sizeof why);
    if (!sh->argv) {
        snprintf(err, errlen, "invalid value for --cmd (CHUNKD_CMD): %s", why);
        return -1;
    }
    size_t n_names;
    char **names = exec_proto_env_names(s->env, &n_names, why, sizeof why);
    if (!names) {
        snprintf(err, errlen, "invalid value for --env (CHUNKD_ENV): %s", why);
        return -1;
    }
    for (size_t i = 0; i < n_names; i++)
        if (settings_env_is_secret(names[i])) {
            snprintf(err, errlen, "invalid value for --env (CHUNKD_ENV): %s holds chunkd's secrets, which never reach "
                                  "a subprocess", names[i]);
            exec_proto_argv_free(names);
            return -1;
        }
    static const char *const base[] = {"PATH", "HOME", "LANG"};
    sh->envp = xcalloc(n_names + 4, sizeof(char *));
    size_t n_env = 0;
    char passed[512] = "";
    for (size_t i = 0; i < n_names + 3; i++) {
        const char *name = i < 3 ? base[i] : names[i - 3];
        bool dup = false;
        for (size_t j = 0; j < i; j++)
            if (strcmp(j < 3 ? base[j] : names[j - 3], name) == 0) dup = true;
        const char *value = dup ? NULL : getenv(name);
        if (!value) continue;
        sh->envp[n_env++] = xasprintf("%s=%s", name, value);
        size_t used = strlen(passed);
        snprintf(passed + used, sizeof passed - used, "%s%s", used ? " " : "", name);
    }
    exec_proto_argv_free(names);
    if (access("/proc/self/exe", X_OK) != 0) {
        snprintf(err, errlen, "the exec handler runs each subprocess under chunkd itself (/proc/self/exe), which "
                              "cannot be run: %s (is /proc mounted?)", strerror(errno));
        return -1;
    }
    if (!proctab_is_ours())
        LOG(LL_WARN, "exec: /proc is not this pid namespace's (mount it, e.g. unshare --mount-proc): what a "
                     "subprocess leaves outside its process group (setsid, double forks) is not killed");
    sh->procs = exec_procs(s);
    LOG(LL_INFO, "exec handler: `%s`, %ld subprocesses on one event loop, environment: %s; max %lld attempts, "
        "--exec-timeout-ms %lld", s->cmd, sh->procs, passed[0] ? passed : "(empty)", s->max_attempts,
        s->exec_timeout_ms);
    if (s->concurrency < sh->procs)
        LOG(LL_WARN, "exec: --concurrency %lld is below --procs %ld: some subprocesses will stay idle",
            s->concurrency, sh->procs);
    return 0;
}

static bool exec_ready(void *shared, char *why, size_t whylen)
{
    exec_shared_t *sh = shared;
    if (atomic_load(&sh->failing_slots) == 0) return true;
    pthread_mutex_lock(&sh->mu);
    snprintf(why, whylen, "%s", sh->why);
    pthread_mutex_unlock(&sh->mu);
    return false;
}

/* ---- per-loop state ---- */

typedef struct exec_loop exec_loop_t;
typedef struct exec_proc exec_proc_t;
typedef struct exec_job exec_job_t;

/* A spawned subprocess until it is reaped (it outlives its slot's interest in it when it was killed). */
typedef struct exec_child {
    loop_watch_t watch;          /* first: on its pidfd; loop_defer_free() frees the whole struct */
    exec_loop_t *el;
    exec_proc_t *proc;           /* its slot while it is the slot's current subprocess, else NULL */
    pid_t pid;                   /* also its process group */
    list_node_t link;            /* in the loop's children */
} exec_child_t;

typedef enum { PROC_DOWN = 0, PROC_IDLE, PROC_BUSY } exec_proc_state_t;

/* A slot of the pool: one subprocess at a time, replaced when it fails. Slots live as long as the loop, so
 * events already collected for a closed subprocess's watches find valid (stopped) watches. */
struct exec_proc {
    exec_loop_t *el;
    exec_proc_state_t state;
    exec_child_t *child;         /* NULL while down */
    pid_t pid;
    int in_fd, out_fd, err_fd;   /* our ends of its pipes; -1 when closed */
    loop_watch_t in_watch, out_watch, err_watch;
    unsigned gen;                /* changes whenever the slot's subprocess is closed */
    bool up;                     /* wrote a line or lived EXEC_UP_MS */
    bool on_probation;           /* after a start failure: no item until up */
    bool closing;                /* stdout or stdin closed, or exited: no new item */
    int start_failures;          /* in a row */
    dynbuf_t line;               /* the stdout line being read, capped at --max-result-bytes */
    char err_line[EXEC_STDERR_LINE_MAX];
    size_t err_len;
    exec_job_t *job;             /* in flight, while busy */
    size_t written;              /* bytes of job->request written */
    loop_timer_t deadline;       /* --exec-timeout-ms of the attempt in flight */
    loop_timer_t up_timer;       /* EXEC_UP_MS after the spawn */
    loop_timer_t timer;          /* down: the restart; up: the EOF grace */
    const char *grace_why;       /* why the EOF grace runs */
};

/* An item while the handler holds it: waiting in the queue, on a subprocess, or waiting to retry. */
struct exec_job {
    exec_loop_t *el;
    work_item_t *item;
    json_t *id;                  /* the item's id, to match replies */
    char *request;               /* the request line */
    size_t request_len;
    exec_proc_t *proc;           /* while on a subprocess */
    bool acquiring;              /* taken from the queue for a free subprocess, waiting for its token and slot */
    int64_t call_started_ms;     /* the attempt in flight's, for chunkd_exec_call_duration_seconds */
    list_node_t queue_link;      /* in the loop's queue while waiting for a subprocess */
    list_node_t link;            /* in the loop's jobs */
};

struct exec_loop {
    exec_shared_t *sh;
    const settings_t *s;
    loop_t *loop;
    exec_proc_t *procs;
    size_t n_procs;
    list_t queue;                /* jobs waiting for an idle subprocess, oldest first (by queue_link) */
    size_t n_acquiring;          /* jobs with acquiring set: each has an idle subprocess counted for it */
    list_t jobs;                 /* every job of the loop (by link) */
    list_t children;             /* not yet reaped (by link) */
    unsigned int rng;            /* for jitter */
    int64_t stderr_window_ms;
    unsigned stderr_lines, stderr_dropped;
};

static void proc_spawn(exec_proc_t *p);
static void proc_failed(exec_proc_t *p, const char *why, bool at_start);
static void proc_write(exec_proc_t *p);
static void dispatch(exec_loop_t *el);

static const char *cmd_text(const exec_loop_t *el) { return el->s->cmd; }

static void describe_status(int status, char *out, size_t len)
{
    if (WIFEXITED(status)) snprintf(out, len, "exited with status %d", WEXITSTATUS(status));
    else if (WIFSIGNALED(status)) snprintf(out, len, "was killed by signal %d (%s)", WTERMSIG(status),
                                           strsignal(WTERMSIG(status)));
    else snprintf(out, len, "ended (wait status %d)", status);
}

/* ---- the queue and jobs ---- */

static void queue_push(exec_loop_t *el, exec_job_t *job, bool front)
{
    if (front) list_push_front(&el->queue, &job->queue_link);
    else list_push_back(&el->queue, &job->queue_link);
}

static void queue_remove(exec_job_t *job) { list_remove(&job->queue_link); }

static void job_free(exec_loop_t *el, exec_job_t *job)
{
    queue_remove(job);
    if (job->acquiring) el->n_acquiring--;
    list_remove(&job->link);
    json_decref(job->id);
    free(job->request);
    if (job->item) job->item->handler_data = NULL;
    free(job);
}

/* The attempt of job on a subprocess ended with outcome (M_EXEC_OK, _ERROR or _FAILED). */
static void call_ended(exec_loop_t *el, exec_job_t *job, metrics_counter_t outcome)
{
    metrics_add(outcome, 1);
    metrics_gauge_add(G_EXEC_BUSY, -1);
    int64_t ms = loop_now_ms(el->loop) - job->call_started_ms;
    metrics_observe(H_EXEC_CALL_SECONDS, (uint64_t)(ms > 0 ? ms : 0) * 1000);
}

static void job_finish(exec_loop_t *el, exec_job_t *job, bool ok, const char *text, size_t len, const char *error)
{
    work_item_t *item = job->item;
    loop_timer_stop(el->loop, &item->timer);
    job_free(el, job);
    sched_item_done(el->loop, item, ok, text, len, error);
}

/* The retry wait is over and the item holds a place again (sched_retry_after). */
static void job_retry_placed(loop_t *loop, work_item_t *item)
{
    (void)loop;
    exec_job_t *job = item->handler_data;
    item->attempts++;
    metrics_add(M_ITEMS_RETRIED, 1);
    queue_push(job->el, job, true);
    dispatch(job->el);
}

/* The attempt of job on a subprocess failed (why: what the subprocess did): retry it or fail the item. */
static void job_attempt_failed(exec_loop_t *el, exec_job_t *job, const char *why)
{
    work_item_t *item = job->item;
    job->proc = NULL;
    sched_release(el->loop, item); /* the attempt's slot of --max-inflight-global */
    char error[512];
    snprintf(error, sizeof error, "exec: the subprocess %s", why);
    if (item->attempts < el->s->max_attempts) {
        int64_t delay = handler_retry_delay_ms(el->s, &el->rng, item->attempts);
        LOG(LL_DEBUG, "exec: item %s attempt %d failed (%s); retrying in %lld ms", item->in->id_json, item->attempts,
            error, (long long)delay);
        sched_retry_after(el->loop, item, delay, job_retry_placed);
        return;
    }
    size_t n = strlen(error);
    snprintf(error + n, sizeof error - n, " (gave up after %d attempts)", item->attempts);
    job_finish(el, job, false, NULL, 0, error);
}

static void exec_start(void *state, loop_t *loop, work_item_t *item)
{
    (void)loop;
    exec_loop_t *el = state;
    exec_job_t *job = xcalloc(1, sizeof *job);
    job->el = el;
    job->item = item;
    job->id = json_loads(item->in->id_json, JSON_DECODE_ANY, NULL);
    job->request = exec_proto_request(item->in->id_json, item->in->text, item->in->text_len, item->in->value,
                                      &job->request_len);
    list_push_back(&el->jobs, &job->link);
    item->handler_data = job;
    queue_push(el, job, false);
    dispatch(el);
}

/* --item-timeout-ms: the item is dropped wherever it is; a subprocess working on it is killed and replaced. */
static void exec_cancel(void *state, loop_t *loop, work_item_t *item)
{
    exec_loop_t *el = state;
    exec_job_t *job = item->handler_data;
    loop_timer_stop(loop, &item->timer);
    if (!job) return;
    exec_proc_t *p = job->proc;
    job->item = NULL;
    item->handler_data = NULL;
    if (p) {
        p->job = NULL;
        call_ended(el, job, M_EXEC_FAILED);
        LOG_LIMITED(LL_WARN, "exec: subprocess %d killed: its item %s ran past --item-timeout-ms", (int)p->pid,
                    item->in->id_json);
        proc_failed(p, "was killed (--item-timeout-ms)", false);
    }
    bool was_acquiring = job->acquiring;
    job_free(el, job);
    /* A job waiting for its token had a free subprocess counted for it: the next queued job may take it now (or
     * it would wait for some other event to dispatch, and might time out never tried). */
    if (was_acquiring) dispatch(el);
}

/* ---- subprocess slots ---- */

static void set_not_ready(exec_loop_t *el, const char *why)
{
    pthread_mutex_lock(&el->sh->mu);
    snprintf(el->sh->why, sizeof el->sh->why, "%s", why);
    pthread_mutex_unlock(&el->sh->mu);
}

/* The slot's subprocess has started (wrote a line or lived EXEC_UP_MS). */
static void proc_is_up(exec_proc_t *p)
{
    if (p->up) return;
    exec_loop_t *el = p->el;
    p->up = true;
    p->on_probation = false;
    loop_timer_stop(el->loop, &p->up_timer);
    if (p->start_failures >= EXEC_NOT_READY_AFTER) {
        atomic_fetch_sub(&el->sh->failing_slots, 1);
        LOG(LL_INFO, "exec: `%s` started (subprocess %d) after %d failures: ready again", cmd_text(el), (int)p->pid,
            p->start_failures);
    }
    p->start_failures = 0;
}

static void proc_up_fired(loop_t *loop, loop_timer_t *t)
{
    (void)loop;
    exec_proc_t *p = container_of(t, exec_proc_t, up_timer);
    if (p->state == PROC_DOWN) return;
    bool was_waiting = p->on_probation;
    proc_is_up(p);
    if (was_waiting) dispatch(p->el);
}

static void proc_restart_or_grace(loop_t *loop, loop_timer_t *t)
{
    (void)loop;
    exec_proc_t *p = container_of(t, exec_proc_t, timer);
    if (p->state == PROC_DOWN) proc_spawn(p);
    else proc_failed(p, p->grace_why ? p->grace_why : "stopped reading or writing", !p->up);
}

/* The subprocess can no longer take an item (closed stdout or stdin): wait a moment for its exit status, which
 * says more, then kill it. */
static void proc_closing(exec_proc_t *p, const char *why)
{
    if (p->closing) return;
    p->closing = true;
    p->grace_why = why;
    loop_timer_start(p->el->loop, &p->timer, loop_now_ms(p->el->loop) + EXEC_EOF_GRACE_MS, proc_restart_or_grace);
}

static void close_fd(int *fd)
{
    if (*fd >= 0) close(*fd);
    *fd = -1;
}

/* Logs the stderr line collected so far (rate-limited per loop). */
static void stderr_flush(exec_proc_t *p)
{
    if (!p->err_len) return;
    exec_loop_t *el = p->el;
    size_t len = p->err_len;
    p->err_len = 0;
    if (p->err_line[len - 1] == '\r') len--;
    int64_t now = loop_now_ms(el->loop);
    if (now - el->stderr_window_ms >= 1000) {
        if (el->stderr_dropped)
            LOG(LL_WARN, "exec: %u stderr lines of subprocesses not logged (over %d lines/s)", el->stderr_dropped,
                EXEC_STDERR_LINES_PER_S);
        el->stderr_window_ms = now;
        el->stderr_lines = el->stderr_dropped = 0;
    }
    if (el->stderr_lines >= EXEC_STDERR_LINES_PER_S) {
        el->stderr_dropped++;
        return;
    }
    el->stderr_lines++;
    LOG(LL_INFO, "exec[%d]: %.*s", (int)p->pid, (int)len, p->err_line);
}

/* Reads what stderr holds (all of it when drain), logging whole lines. */
static void proc_read_err(exec_proc_t *p, bool drain)
{
    char buf[4096];
    for (int round = 0; p->err_fd >= 0 && (drain || round < 4); round++) {
        ssize_t n = read(p->err_fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) {
                stderr_flush(p);
                loop_watch_stop(p->el->loop, &p->err_watch);
                close_fd(&p->err_fd);
            }
            return;
        }
        for (ssize_t i = 0; i < n; i++) {
            if (buf[i] == '\n') {
                stderr_flush(p);
                continue;
            }
            p->err_line[p->err_len++] = buf[i];
            if (p->err_len == sizeof p->err_line) stderr_flush(p);
        }
    }
}

static void on_err(loop_t *loop, loop_watch_t *w, uint32_t events)
{
    (void)loop, (void)events;
    proc_read_err(container_of(w, exec_proc_t, err_watch), false);
}

/* Closes the slot's subprocess: stops its watches and timers, closes our pipe ends and stops its keeper (which
 * SIGKILLs the command, if it still runs, and everything it left). The item it held is the caller's. The child
 * entry stays until the process is reaped. */
static void proc_close(exec_proc_t *p)
{
    exec_loop_t *el = p->el;
    if (p->state == PROC_DOWN) return;
    stderr_flush(p);
    loop_watch_stop(el->loop, &p->in_watch);
    loop_watch_stop(el->loop, &p->out_watch);
    loop_watch_stop(el->loop, &p->err_watch);
    close_fd(&p->in_fd);
    close_fd(&p->out_fd);
    close_fd(&p->err_fd);
    loop_timer_stop(el->loop, &p->deadline);
    loop_timer_stop(el->loop, &p->up_timer);
    loop_timer_stop(el->loop, &p->timer);
    if (p->child) {
        keeper_stop(p->pid);
        p->child->proc = NULL;
        p->child = NULL;
    }
    dynbuf_free(&p->line);
    p->err_len = 0;
    p->state = PROC_DOWN;
    p->gen++;
    p->closing = false;
    p->grace_why = NULL;
    p->written = 0;
}

/* The slot's subprocess failed (why: "exited with status 3", ...): it is closed and replaced, and its item, if
 * any, retried. at_start: it failed before it was up, so the restart waits and may make the worker not ready. */
static void proc_failed(exec_proc_t *p, const char *why, bool at_start)
{
    exec_loop_t *el = p->el;
    exec_job_t *job = p->job;
    pid_t pid = p->pid;
    p->job = NULL;
    proc_close(p);
    int64_t delay = 0;
    metrics_add(M_EXEC_RESTARTS, 1);
    if (job) call_ended(el, job, M_EXEC_FAILED);
    if (at_start) {
        p->start_failures++;
        delay = EXEC_RESTART_BASE_MS;
        for (int i = 1; i < p->start_failures && delay < EXEC_RESTART_MAX_MS; i++) delay *= 2;
        if (delay > EXEC_RESTART_MAX_MS) delay = EXEC_RESTART_MAX_MS;
        p->on_probation = true;
        char msg[400];
        snprintf(msg, sizeof msg, "exec: `%s` %s at start (%d %s in a row)", cmd_text(el), why, p->start_failures,
                 p->start_failures == 1 ? "time" : "times");
        if (p->start_failures >= EXEC_NOT_READY_AFTER) set_not_ready(el, msg);
        if (p->start_failures == EXEC_NOT_READY_AFTER) {
            atomic_fetch_add(&el->sh->failing_slots, 1);
            LOG(LL_ERROR, "not ready: %s; restarting it with backoff up to %d ms", msg, EXEC_RESTART_MAX_MS);
        } else {
            LOG_LIMITED(LL_WARN, "%s; restarting it in %lld ms", msg, (long long)delay);
        }
    } else {
        LOG_LIMITED(LL_WARN, "exec: subprocess %d (`%s`) %s%s; replacing it", (int)pid, cmd_text(el), why,
                    job ? ", its item is retried" : "");
    }
    loop_timer_start(el->loop, &p->timer, loop_now_ms(el->loop) + delay, proc_restart_or_grace);
    if (job) job_attempt_failed(el, job, why);
}

/* One line from the subprocess's stdout. */
static void proc_line(exec_proc_t *p, const char *line, size_t len)
{
    exec_loop_t *el = p->el;
    proc_is_up(p);
    exec_job_t *job = p->job;
    char why[300];
    if (!job) {
        snprintf(why, sizeof why, "wrote a line while no item was in flight: %.*s%s", (int)(len > 80 ? 80 : len),
                 line, len > 80 ? "..." : "");
        proc_failed(p, why, false);
        return;
    }
    if (p->written < job->request_len) {
        proc_failed(p, "answered before it had read the whole item", false);
        return;
    }
    char *out;
    size_t out_len;
    exec_reply_t rc = exec_proto_parse_reply(line, len, job->id, &out, &out_len, why, sizeof why);
    if (rc == EXEC_REPLY_GARBAGE) {
        proc_failed(p, why, false);
        return;
    }
    p->job = NULL;
    p->state = PROC_IDLE;
    p->written = 0;
    loop_timer_stop(el->loop, &p->deadline);
    loop_watch_stop(el->loop, &p->in_watch);
    job->proc = NULL;
    call_ended(el, job, rc == EXEC_REPLY_RESULT ? M_EXEC_OK : M_EXEC_ERROR);
    if (rc == EXEC_REPLY_RESULT) job_finish(el, job, true, out, out_len, NULL);
    else job_finish(el, job, false, NULL, 0, out);
    free(out);
    dispatch(el);
}

/* Reads what stdout holds (all of it when drain) and handles each whole line. */
static void proc_read_out(exec_proc_t *p, bool drain)
{
    exec_loop_t *el = p->el;
    char buf[EXEC_READ_BYTES];
    unsigned gen = p->gen;
    for (int round = 0; p->gen == gen && p->out_fd >= 0 && (drain || round < 4); round++) {
        ssize_t n = read(p->out_fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
        if (n <= 0) {
            loop_watch_stop(el->loop, &p->out_watch);
            close_fd(&p->out_fd);
            proc_closing(p, "closed its stdout");
            return;
        }
        const char *s = buf, *end = buf + n;
        while (s < end && p->gen == gen) {
            const char *nl = memchr(s, '\n', (size_t)(end - s));
            size_t piece = nl ? (size_t)(nl - s) : (size_t)(end - s);
            if (dynbuf_add(&p->line, s, piece)) {
                char why[160];
                snprintf(why, sizeof why, "wrote a line longer than --max-result-bytes (%lld bytes)",
                         el->s->max_result_bytes);
                proc_failed(p, why, false);
                return;
            }
            if (!nl) break;
            s = nl + 1;
            size_t len = p->line.len;
            static char empty[1];
            const char *line = p->line.data ? p->line.data : empty;
            bool big = p->line.alloc > EXEC_KEEP_LINE_BYTES;
            proc_line(p, line, len);
            if (p->gen != gen) return;
            if (big) dynbuf_free(&p->line);
            else dynbuf_reset(&p->line);
        }
    }
}

static void on_out(loop_t *loop, loop_watch_t *w, uint32_t events)
{
    (void)loop, (void)events;
    proc_read_out(container_of(w, exec_proc_t, out_watch), false);
}

static void on_in(loop_t *loop, loop_watch_t *w, uint32_t events)
{
    (void)events;
    exec_proc_t *p = container_of(w, exec_proc_t, in_watch);
    if (p->job && p->in_fd >= 0 && p->written < p->job->request_len) proc_write(p);
    else loop_watch_stop(loop, w);
}

/* Writes as much of the request in flight as the pipe takes; the rest when it is writable again. */
static void proc_write(exec_proc_t *p)
{
    exec_loop_t *el = p->el;
    exec_job_t *job = p->job;
    while (p->written < job->request_len) {
        ssize_t n = write(p->in_fd, job->request + p->written, job->request_len - p->written);
        if (n > 0) {
            p->written += (size_t)n;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (!p->in_watch.events && loop_watch_start(el->loop, &p->in_watch, p->in_fd, EPOLLOUT, on_in)) {
                char why[128];
                snprintf(why, sizeof why, "could not be watched: %s", strerror(errno));
                proc_failed(p, why, false);
            }
            return;
        } else {
            /* EPIPE: it closed its stdin or exited; its exit status (seen soon) says more. */
            loop_watch_stop(el->loop, &p->in_watch);
            proc_closing(p, "closed its stdin");
            return;
        }
    }
    loop_watch_stop(el->loop, &p->in_watch);
}

static void on_deadline(loop_t *loop, loop_timer_t *t)
{
    (void)loop;
    exec_proc_t *p = container_of(t, exec_proc_t, deadline);
    char why[128];
    snprintf(why, sizeof why, "did not answer within %lld ms (--exec-timeout-ms)", p->el->s->exec_timeout_ms);
    proc_failed(p, why, false);
}

/* Idle and not on probation: may take an item. */
static bool proc_free(const exec_proc_t *p) { return p->state == PROC_IDLE && !p->closing && !p->on_probation; }

static size_t procs_free(const exec_loop_t *el)
{
    size_t n = 0;
    for (size_t i = 0; i < el->n_procs; i++) n += proc_free(&el->procs[i]);
    return n;
}

/* The job has its token and slot (sched_acquire): it goes to a free subprocess. When the subprocess counted for it
 * has failed meanwhile, the job goes back to the head of the queue and gives its slot back (the token is spent:
 * a rate limit errs on the slow side). */
static void job_go(loop_t *loop, work_item_t *item)
{
    exec_job_t *job = item->handler_data;
    exec_loop_t *el = job->el;
    job->acquiring = false;
    el->n_acquiring--;
    exec_proc_t *p = NULL;
    for (size_t i = 0; i < el->n_procs && !p; i++)
        if (proc_free(&el->procs[i])) p = &el->procs[i];
    if (!p) {
        sched_release(loop, item);
        queue_push(el, job, true);
        return;
    }
    p->job = job;
    job->proc = p;
    job->call_started_ms = loop_now_ms(loop);
    metrics_gauge_add(G_EXEC_BUSY, 1);
    p->state = PROC_BUSY;
    p->written = 0;
    if (el->s->exec_timeout_ms > 0)
        loop_timer_start(el->loop, &p->deadline, loop_now_ms(el->loop) + el->s->exec_timeout_ms, on_deadline);
    proc_write(p);
}

/* Hands queued jobs to free subprocesses. Each call, a first attempt or a retry, first takes a token and a slot of
 * the queue's limits (--rate-limit, --max-inflight-global) at this point, when a subprocess is free to make it, so
 * calls that waited for a subprocess do not go out in a burst. */
static void dispatch(exec_loop_t *el)
{
    exec_job_t *job;
    while (el->n_acquiring < procs_free(el) && (job = list_first_entry(&el->queue, exec_job_t, queue_link))) {
        queue_remove(job);
        job->acquiring = true;
        el->n_acquiring++;
        sched_acquire(el->loop, job->item, job_go); /* may call job_go at once */
    }
}

/* The subprocess exited (its pidfd is readable): reap it; if it was still its slot's, handle what it wrote last,
 * then replace it. */
static void on_child_exit(loop_t *loop, loop_watch_t *w, uint32_t events)
{
    (void)events;
    exec_child_t *c = container_of(w, exec_child_t, watch);
    exec_proc_t *p = c->proc;
    if (p) {
        p->closing = true; /* no new item for it while its last lines are read */
        proc_read_out(p, true);
        if (p->err_fd >= 0) proc_read_err(p, true);
        p = c->proc;
    }
    int status = 0; /* the keeper's: it exits as its command did, once it has killed what the command left */
    pid_t r = waitpid(c->pid, &status, WNOHANG);
    if (r == 0) return; /* not yet */
    children_release(c->pid);
    if (p) { /* reaped: its pid may be reused from now on, so proc_close() must not signal it */
        p->child = NULL;
        c->proc = NULL;
    }
    char why[128];
    if (r < 0) snprintf(why, sizeof why, "exited (status unknown: %s)", strerror(errno));
    else describe_status(status, why, sizeof why);
    if (p) proc_failed(p, why, !p->up);
    else LOG(LL_DEBUG, "exec: subprocess %d reaped: %s", (int)c->pid, why);
    loop_watch_stop(loop, &c->watch);
    close(c->watch.fd);
    list_remove(&c->link);
    loop_defer_free(loop, c);
}

static int set_nonblock(int fd) { return fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK); }

/* The subprocess's stdin, stdout and stderr pipes, close-on-exec, our ends non-blocking. Returns 0, or -1 with why
 * (every end closed). */
static int proc_pipes(int in[2], int out[2], int err[2], char *why, size_t whylen)
{
    if (pipe2(in, O_CLOEXEC) || pipe2(out, O_CLOEXEC) || pipe2(err, O_CLOEXEC) || set_nonblock(in[1]) ||
        set_nonblock(out[0]) || set_nonblock(err[0])) {
        snprintf(why, whylen, "could not get pipes: %s", strerror(errno));
        for (int i = 0; i < 2; i++) close_fd(&in[i]), close_fd(&out[i]), close_fd(&err[i]);
        return -1;
    }
    return 0;
}

/* Starts --cmd under its keeper (keeper.h) on the pipes' child ends (then closed here). Returns keeper_spawn()'s
 * result (0: *pid is the keeper, the subprocess as the handler sees it). */
static int proc_start_child(const exec_loop_t *el, int in[2], int out[2], int err[2], pid_t *pid)
{
    int rc = keeper_spawn(el->sh->argv, el->sh->envp, (const int[3]){in[0], out[1], err[1]}, pid);
    close_fd(&in[0]);
    close_fd(&out[1]);
    close_fd(&err[1]);
    return rc;
}

/* Makes the started child p's subprocess: linked into the loop's children, watched (its pidfd, stdout, stderr),
 * given EXEC_UP_MS to come up. Takes pidfd and our pipe ends. */
static void proc_attach(exec_proc_t *p, pid_t pid, int pidfd, int in_fd, int out_fd, int err_fd)
{
    exec_loop_t *el = p->el;
    exec_child_t *c = xcalloc(1, sizeof *c);
    c->el = el;
    c->proc = p;
    c->pid = pid;
    list_push_back(&el->children, &c->link);
    p->child = c;
    p->pid = pid;
    p->in_fd = in_fd;
    p->out_fd = out_fd;
    p->err_fd = err_fd;
    p->state = PROC_IDLE;
    p->up = false;
    p->closing = false;
    p->written = 0;
    dynbuf_init(&p->line, (size_t)el->s->max_result_bytes);
    if (loop_watch_start(el->loop, &c->watch, pidfd, EPOLLIN, on_child_exit) ||
        loop_watch_start(el->loop, &p->out_watch, p->out_fd, EPOLLIN, on_out) ||
        loop_watch_start(el->loop, &p->err_watch, p->err_fd, EPOLLIN, on_err)) {
        char why[200];
        c->watch.fd = pidfd;
        snprintf(why, sizeof why, "could not be watched: %s", strerror(errno));
        proc_failed(p, why, true);
        return;
    }
    loop_timer_start(el->loop, &p->up_timer, loop_now_ms(el->loop) + EXEC_UP_MS, proc_up_fired);
    LOG(LL_DEBUG, "exec: started subprocess %d", (int)pid);
    dispatch(el);
}

static void proc_spawn(exec_proc_t *p)
{
    int in[2] = {-1, -1}, out[2] = {-1, -1}, err[2] = {-1, -1};
    char why[200];
    if (proc_pipes(in, out, err, why, sizeof why)) {
        proc_failed(p, why, true);
        return;
    }
    pid_t pid = 0;
    int rc = proc_start_child(p->el, in, out, err, &pid);
    int pidfd = rc ? -1 : pidfd_open(pid, 0);
    if (rc || pidfd < 0) {
        if (rc) {
            snprintf(why, sizeof why, "could not be started (%s)", strerror(rc));
        } else {
            snprintf(why, sizeof why, "could not be watched: pidfd_open: %s (Linux 5.3 or later is needed)",
                     strerror(errno));
            keeper_stop(pid);
            waitpid(pid, NULL, 0);
            children_release(pid);
        }
        close_fd(&in[1]);
        close_fd(&out[0]);
        close_fd(&err[0]);
        proc_failed(p, why, true);
        return;
    }
    proc_attach(p, pid, pidfd, in[1], out[0], err[0]);
}

static int exec_loop_init(loop_t *loop, const settings_t *s, void *shared, void **state)
{
    exec_shared_t *sh = shared;
    exec_loop_t *el = xcalloc(1, sizeof *el);
    el->sh = sh;
    el->s = s;
    el->loop = loop;
    list_init(&el->queue);
    list_init(&el->jobs);
    list_init(&el->children);
    el->rng = (unsigned int)loop_now_ms(loop) ^ (unsigned int)(uintptr_t)el;
    el->n_procs = (size_t)sh->procs;
    el->procs = xcalloc(el->n_procs, sizeof *el->procs);
    *state = el;
    for (size_t i = 0; i < el->n_procs; i++) {
        exec_proc_t *p = &el->procs[i];
        p->el = el;
        p->in_fd = p->out_fd = p->err_fd = -1;
        dynbuf_init(&p->line, (size_t)s->max_result_bytes);
    }
    for (size_t i = 0; i < el->n_procs; i++) proc_spawn(&el->procs[i]);
    return 0;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Stops every subprocess of the loop: stdin closed (the README's loop ends), EXEC_EXIT_GRACE_MS to exit, then
 * keeper_stop() (SIGKILL to the command and all it left), and every keeper reaped. Items still held are abandoned (a drain requeues their
 * chunks). */
static void exec_loop_free(void *state)
{
    exec_loop_t *el = state;
    if (!el) return;
    for (size_t i = 0; i < el->n_procs; i++) close_fd(&el->procs[i].in_fd);
    int64_t deadline = loop_now_ms(el->loop) + EXEC_EXIT_GRACE_MS;
    for (bool all_exited = false; !all_exited;) {
        all_exited = true;
        list_for_each_safe(n, tmp, &el->children) {
            const exec_child_t *c = container_of(n, exec_child_t, link);
            siginfo_t info = {0};
            if (waitid(P_PID, (id_t)c->pid, &info, WEXITED | WNOHANG | WNOWAIT) == 0 && info.si_pid == 0)
                all_exited = false;
        }
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        if (all_exited || (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000 >= deadline) break;
        sleep_ms(5);
    }
    for (size_t i = 0; i < el->n_procs; i++) {
        exec_proc_t *p = &el->procs[i];
        if (p->job) metrics_gauge_add(G_EXEC_BUSY, -1); /* its call is abandoned (the item is given back) */
        p->job = NULL;
        proc_close(p);
        loop_timer_stop(el->loop, &p->timer); /* a down slot's restart: proc_close leaves it, the slot is freed */
        dynbuf_free(&p->line);
    }
    int waited_ms = 0;
    list_for_each_safe(n, tmp, &el->children) {
        exec_child_t *c = container_of(n, exec_child_t, link);
        keeper_stop(c->pid);
        pid_t r;
        while ((r = waitpid(c->pid, NULL, WNOHANG)) == 0 && waited_ms < EXEC_REAP_WAIT_MS) {
            sleep_ms(2);
            waited_ms += 2;
        }
        if (r == 0) {
            LOG(LL_WARN, "exec: the keeper of a subprocess (%d) did not exit %d ms after it was told to stop; "
                         "SIGKILLed, left to the child reaper", (int)c->pid, EXEC_REAP_WAIT_MS);
            kill(c->pid, SIGKILL);
        }
        children_release(c->pid);
        loop_watch_stop(el->loop, &c->watch);
        close(c->watch.fd);
        list_remove(&c->link);
        free(c);
    }
    list_for_each_safe(n, tmp, &el->jobs) {
        exec_job_t *job = container_of(n, exec_job_t, link);
        list_remove(&job->link);
        if (job->item) {
            loop_timer_stop(el->loop, &job->item->timer);
            job->item->handler_data = NULL;
        }
        json_decref(job->id);
        free(job->request);
        free(job);
    }
    for (size_t i = 0; i < el->n_procs; i++) {
        exec_proc_t *p = &el->procs[i];
        if (p->start_failures >= EXEC_NOT_READY_AFTER) atomic_fetch_sub(&el->sh->failing_slots, 1);
    }
    free(el->procs);
    free(el);
}

const handler_t handler_exec = {.name = "exec",
                                .init = exec_init,
                                .fini = exec_fini,
                                .loop_init = exec_loop_init,
                                .loop_free = exec_loop_free,
                                .start = exec_start,
                                .cancel = exec_cancel,
                                .max_loops = exec_max_loops,
                                .ready = exec_ready,
                                .gates_calls = true};
