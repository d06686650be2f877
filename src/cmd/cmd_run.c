/* cmd_run: `chunkd run [FILE|-]`: a whole job on one machine, through the same code as the distributed mode.
 *
 * One process runs an enqueue thread, a worker (fetch, loops, commit) and a collector, against $REDIS_URL or a
 * private redis-server on a unix socket. Without --queue it uses a fresh queue name, and removes that queue's keys
 * from a shared Redis once every result is written. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "clock.h"
#include "cmd.h"
#include "collect.h"
#include "enqueue.h"
#include "idset.h"
#include "linereader.h"
#include "keys.h"
#include "localredis.h"
#include "log.h"
#include "rconn.h"
#include "sink.h"
#include "tally.h"
#include "worker.h"
#include "xalloc.h"

#define RUN_RESUME_LINE_MAX ((size_t)256 * 1024 * 1024) /* --resume: longer result lines are not read */
#define RUN_FINAL_COLLECT_MS 30000 /* longest the last collect of an interrupted run may take */

typedef struct run_state {
    settings_t *settings;
    FILE *in;
    const char *input;
    sink_t *sink;
    localredis_t *local;       /* the private redis-server; NULL with --redis or REDIS_URL */
    atomic_bool stop;          /* set on a signal, or when the private server dies */
    atomic_bool enqueue_done;  /* enqueue finished (successfully or not) */
    bool interrupted;          /* main thread only: a signal, or the private server died */
    bool redis_died;           /* main thread only */
    idset_t *done_ids;         /* run --resume: the ids already in --out (owned); NULL otherwise */
    enqueue_result_t enq;
    int enq_rc;
    char enq_err[1024];
    collect_progress_t progress;
    int collect_rc;
    char collect_err[1024];
} run_state_t;

static void *run_enqueue_main(void *arg)
{
    run_state_t *st = arg;
    st->enq_rc = enqueue_run(st->settings, st->in, st->input, &st->stop, st->done_ids, &st->enq, st->enq_err, sizeof st->enq_err);
    if (st->enq_rc) atomic_store(&st->stop, true); /* nothing more will come: stop the collector too */
    atomic_store(&st->enqueue_done, true);
    return NULL;
}

static void run_collect_job(void *arg)
{
    run_state_t *st = arg;
    st->collect_rc = collect_run(st->settings, st->sink, COLLECT_UNTIL_DONE, &st->stop, &st->enqueue_done,
                                 &st->progress, st->collect_err, sizeof st->collect_err);
}

/* On the main thread while the collector runs: a first signal stops the job, a second exits at once; the private
 * server dying stops it too. */
static void run_on_wake(void *arg, int sig)
{
    run_state_t *st = arg;
    if (sig) {
        if (st->interrupted) {
            LOG(LL_WARN, "second signal: exiting now");
            localredis_kill_now(st->local); /* its directory too; exec subprocesses' keepers clean up on our death */
            _exit(EXIT_RUNTIME);
        }
        LOG(LL_WARN, "interrupted: stopping; results written so far stay in the output");
        st->interrupted = true;
        atomic_store(&st->stop, true);
    }
    char how[64];
    if (st->local && !st->redis_died && localredis_exited(st->local, how, sizeof how)) {
        LOG(LL_ERROR, "the private redis-server exited (%s): stopping; results written so far stay in the "
                      "output, the rest of the job is lost with the server", how);
        st->redis_died = st->interrupted = true;
        atomic_store(&st->stop, true);
    }
}

/* Removes a run's own queue from a shared Redis once all its results are out. */
static void run_delete_queue(const settings_t *s)
{
    keys_t k;
    keys_init(&k, s->queue);
    rconn_t *c = rconn_new(s->redis_url, s->redis_timeout_ms);
    char err[512];
    if (rconn_connect(c, err, sizeof err) == 0) {
        redisReply *r = rconn_command(c, "DEL %s %s %s %s %s", k.pending, k.results, k.dead, k.stats, k.workers);
        if (r) freeReplyObject(r);
    }
    rconn_free(c);
}

/* A fresh queue name unless one was given, and a private redis-server unless a Redis address was. Returns 0, or
 * -1 with err. */
static int run_prepare(run_state_t *st, char *err, size_t errlen)
{
    settings_t *s = st->settings;
    if (!s->queue_set) {
        unsigned int rnd = 0;
        if (getrandom(&rnd, sizeof rnd, 0) != sizeof rnd) rnd = (unsigned int)clock_now_ms();
        free(s->queue);
        s->queue = xasprintf("run-%08x", rnd);
        cmd_cluster_key(s);
    }
    if (!s->redis_url) {
        st->local = localredis_start(s->redis_server, err, errlen);
        if (!st->local) return -1;
        s->redis_url = xstrdup(localredis_url(st->local));
        LOG(LL_DEBUG, "private redis-server at %s", s->redis_url);
    }
    return 0;
}

/* Enqueues and collects, each on a thread of its own, until the collector is done (or a thread cannot start:
 * then the job stops with that error). */
static void run_enqueue_and_collect(run_state_t *st)
{
    pthread_t enq_thread;
    int enq_started = pthread_create(&enq_thread, NULL, run_enqueue_main, st);
    if (enq_started) {
        st->enq_rc = -1;
        snprintf(st->enq_err, sizeof st->enq_err, "cannot start the enqueue thread: %s", strerror(enq_started));
        atomic_store(&st->stop, true);
        atomic_store(&st->enqueue_done, true);
    }
    if (cmd_run_job(run_collect_job, run_on_wake, st, st->collect_err, sizeof st->collect_err)) {
        st->collect_rc = -1;
        atomic_store(&st->stop, true);
    }
    if (enq_started == 0) pthread_join(enq_thread, NULL);
}

/* The last collect of an interrupted job: what was committed, within RUN_FINAL_COLLECT_MS (Redis may be gone or
 * refusing: the collector would wait for it forever); a further signal exits at once. */
typedef struct run_final {
    run_state_t *st;
    atomic_bool stop;
    int64_t deadline_ms;
    collect_progress_t more;
    int rc;
    char err[1024];
} run_final_t;

static void run_final_job(void *arg)
{
    run_final_t *f = arg;
    f->rc = collect_run(f->st->settings, f->st->sink, COLLECT_AVAILABLE, &f->stop, NULL, &f->more, f->err,
                        sizeof f->err);
}

static void run_final_on_wake(void *arg, int sig)
{
    run_final_t *f = arg;
    run_on_wake(f->st, sig); /* interrupted already: a signal exits at once */
    if (!atomic_load(&f->stop) && clock_now_ms() > f->deadline_ms) {
        LOG(LL_ERROR, "the last collect did not finish within %d ms (Redis gone or refusing?): results committed "
                      "and not written stay in the queue's results stream", RUN_FINAL_COLLECT_MS);
        atomic_store(&f->stop, true);
    }
}

static void run_final_collect(run_state_t *st)
{
    run_final_t f = {.st = st, .deadline_ms = clock_now_ms() + RUN_FINAL_COLLECT_MS};
    f.more.tally = st->progress.tally;
    atomic_init(&f.stop, false);
    if (cmd_run_job(run_final_job, run_final_on_wake, &f, f.err, sizeof f.err)) f.rc = -1;
    if (f.rc == 0) st->progress.written += f.more.written;
    else LOG(LL_ERROR, "%s", f.err);
}

/* After the collector: an interrupted job finishes or gives back what is in flight and then writes every result
 * that was committed; a complete one has nothing left in flight. */
static void run_wind_down(run_state_t *st, worker_t *w)
{
    const settings_t *s = st->settings;
    if (!st->interrupted) {
        worker_drain(w);
        return;
    }
    /* With the private server gone nothing can be committed: give up at once instead of at the drain timeout. */
    if (st->redis_died) worker_abort(w);
    cmd_drain_worker(w);
    if (!st->redis_died) run_final_collect(st);
    if (!st->local)
        LOG(LL_WARN, "queue %s keeps the unfinished work (resume with chunkd worker --queue %s)", s->queue, s->queue);
}

/* Logs the job's errors and prints its summary. Returns the exit status. */
static int run_report(const run_state_t *st, double secs)
{
    const settings_t *s = st->settings;
    int rc = EXIT_RUNTIME;
    if (st->enq_rc) LOG(LL_ERROR, "%s", st->enq_err);
    if (st->collect_rc) LOG(LL_ERROR, "%s", st->collect_err);
    bool complete = !st->interrupted && st->enq_rc == 0 && st->collect_rc == 0;
    fprintf(stderr, "chunkd run: %lld items, %.2f s, %.0f items/s; results: %s%s\n", st->progress.written, secs,
            secs > 0 ? (double)st->progress.written / secs : 0.0, sink_where(st->sink),
            complete ? "" : " (incomplete)");
    if (st->enq.skipped)
        fprintf(stderr, "chunkd run: %lld items skipped (--resume: their results are in %s already)\n",
                st->enq.skipped, sink_where(st->sink));
    if (st->enq.rejected)
        fprintf(stderr, "chunkd run: %lld lines rejected; see %s\n", st->enq.rejected, st->enq.rejects_path);
    /* A private server, or an unnamed queue (deleted below), takes the dead list with it. */
    bool dead_kept = !st->local && s->queue_set;
    int failed = st->collect_rc == 0 ? cmd_report_failed(s, &st->progress, "chunkd run", dead_kept) : 0;
    if (complete) {
        rc = st->enq.rejected ? EXIT_REJECTED : failed;
        if (!st->local && !s->queue_set) run_delete_queue(s);
    }
    return rc;
}

/* The job: a worker, the enqueue thread and the collector, then the summary. Returns the exit status. */
static int run_job(run_state_t *st)
{
    settings_t *s = st->settings;
    /* One machine, one job: no fixed port to collide with another run unless asked for, and no waiting for a
     * Redis that cannot be reached (like enqueue and collect, run fails at once). */
    if (!s->http_port_set) s->http_port = 0;
    s->redis_wait_ms = SETTINGS_NO_WAIT;
    double t0 = clock_now_s();
    worker_t *w = worker_new(s);
    char err[1024];
    int started = worker_start(w, err, sizeof err);
    if (started) {
        LOG(LL_ERROR, "%s", err);
        worker_abort(w);
        worker_free(w);
        return started == WORKER_BAD_SETTINGS ? EXIT_USAGE : EXIT_RUNTIME;
    }
    run_enqueue_and_collect(st);
    run_wind_down(st, w);
    worker_free(w);
    return run_report(st, clock_now_s() - t0);
}

/* run --resume: reads the ids of the result lines already in path into a new set (*ids), and cuts a last line
 * that an interrupted run left without its newline (its item runs again). A missing file is an empty output.
 * Returns 0, or -1 with the reason in err. */
static int run_read_done_ids(const char *path, idset_t **ids, char *err, size_t errlen)
{
    *ids = idset_new();
    FILE *f = fopen(path, "r+");
    if (!f) {
        if (errno == ENOENT) return 0;
        snprintf(err, errlen, "--resume: cannot open %s: %s", path, strerror(errno));
        return -1;
    }
    linereader_t lr;
    linereader_init(&lr, f, RUN_RESUME_LINE_MAX);
    const char *line;
    size_t len, full_len;
    long long lines = 0, unread = 0;
    off_t complete = 0; /* bytes up to the end of the last line with its newline */
    int got;
    bool full = false;
    while ((got = linereader_next(&lr, &line, &len, &full_len)) == 1) {
        lines++;
        json_t *r = full_len == len ? json_loadb(line, len, 0, NULL) : NULL;
        json_t *id = json_object_get(r, "id");
        if (!id) unread++;
        else if (idset_add(*ids, id) < 0) full = true;
        json_decref(r);
    }
    if (got < 0) {
        snprintf(err, errlen, "--resume: cannot read %s: %s", path, strerror(errno));
        linereader_free(&lr);
        fclose(f);
        return -1;
    }
    /* The last byte: a file that does not end with a newline ends with a torn line. */
    struct stat st;
    int rc = fstat(fileno(f), &st);
    if (rc == 0 && st.st_size > 0) {
        complete = st.st_size;
        char c = '\n';
        while (complete > 0 && pread(fileno(f), &c, 1, complete - 1) == 1 && c != '\n') complete--;
        if (complete < st.st_size) {
            LOG(LL_WARN, "--resume: %s ends with an unfinished line (%lld bytes): cut; its item runs again", path,
                (long long)(st.st_size - complete));
            rc = ftruncate(fileno(f), complete);
        }
    }
    if (rc) snprintf(err, errlen, "--resume: cannot cut the unfinished last line of %s: %s", path, strerror(errno));
    linereader_free(&lr);
    fclose(f);
    if (full) LOG(LL_WARN, "--resume: more than %zu ids in %s: the others run again", idset_count(*ids), path);
    if (complete < st.st_size) unread--; /* the torn line */
    if (unread > 0) LOG(LL_WARN, "--resume: %lld lines of %s have no id and skip nothing", unread, path);
    LOG(LL_INFO, "--resume: %zu ids already in %s (%lld lines) are skipped", idset_count(*ids), path, lines);
    return rc ? -1 : 0;
}

/* run --resume on a shared Redis: the queue must hold no work of the interrupted run (its items would run and be
 * written again beside the ones enqueued now). Returns 0, or -1 after saying why. */
static int run_resume_queue_idle(const settings_t *s)
{
    rconn_t *c = cmd_connect(s);
    json_t *o = c ? cmd_status_read(c, s->queue) : NULL;
    rconn_free(c);
    if (!o) return -1;
    long long left[3];
    const char *names[] = {"pending", "processing", "results_backlog"};
    for (size_t i = 0; i < 3; i++) left[i] = json_integer_value(json_object_get(o, names[i]));
    json_decref(o);
    if (left[0] + left[1] + left[2] == 0) return 0;
    LOG(LL_ERROR, "--resume: queue %s still holds work of the interrupted run (%lld pending and %lld running chunks, "
                  "%lld results not collected): finish it (chunkd worker / collect --queue %s) or drop it (chunkd "
                  "delete --queue %s --yes) first", s->queue, left[0], left[1], left[2], s->queue, s->queue);
    return -1;
}

int cmd_run(settings_t *s)
{
    /* The private queue (or --queue on REDIS_URL, which --resume reopens) is sealed once the input is in. */
    s->seal = s->reopen = true;
    run_state_t st = {.settings = s};
    atomic_init(&st.stop, false);
    atomic_init(&st.enqueue_done, false);
    st.input = s->input ? s->input : "-";
    st.in = strcmp(st.input, "-") == 0 ? stdin : fopen(st.input, "r");
    if (!st.in) {
        LOG(LL_ERROR, "cannot open input %s: %s", st.input, strerror(errno));
        return EXIT_RUNTIME;
    }
    st.progress.tally = tally_new(); /* after the last early return: freed at out_redis */
    char err[1024];
    int rc = EXIT_RUNTIME;
    if (run_prepare(&st, err, sizeof err)) {
        LOG(LL_ERROR, "%s", err);
        goto out_redis;
    }
    if (s->resume) {
        if (!s->out || s->rotate_lines > 0 || strcmp(s->out, "-") == 0) {
            LOG(LL_ERROR, "--resume needs --out FILE (one file: the ids already in it are skipped)");
            rc = EXIT_USAGE;
            goto out_redis;
        }
        if (!s->queue_set)
            LOG(LL_WARN, "--resume without --queue: the Idempotency-Keys differ from the first run's (give the same "
                         "--queue to both)");
        if (!st.local && run_resume_queue_idle(s)) {
            rc = EXIT_USAGE;
            goto out_redis;
        }
        if (run_read_done_ids(s->out, &st.done_ids, err, sizeof err)) {
            LOG(LL_ERROR, "%s", err);
            goto out_redis;
        }
    }
    st.sink = sink_open(s->out, s->rotate_lines, s->resume, err, sizeof err);
    if (!st.sink) {
        LOG(LL_ERROR, "%s", err);
        goto out_redis;
    }
    rc = run_job(&st);
    if (sink_close(st.sink) && rc != EXIT_RUNTIME) {
        LOG(LL_ERROR, "cannot finish writing results: %s", strerror(errno));
        rc = EXIT_RUNTIME;
    }
out_redis:
    idset_free(st.done_ids);
    tally_free(st.progress.tally);
    localredis_stop(st.local);
    if (st.in != stdin) fclose(st.in);
    return rc;
}
