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
#include <unistd.h>

#include "clock.h"
#include "cmd.h"
#include "collect.h"
#include "enqueue.h"
#include "keys.h"
#include "localredis.h"
#include "log.h"
#include "rconn.h"
#include "sig.h"
#include "sink.h"
#include "worker.h"
#include "xalloc.h"

typedef struct run_state {
    settings_t *settings;
    FILE *in;
    const char *input;
    sink_t *sink;
    atomic_bool stop;          /* set by a signal */
    atomic_bool enqueue_done;  /* enqueue finished (successfully or not) */
    atomic_bool collect_done;
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
    st->enq_rc = enqueue_run(st->settings, st->in, st->input, &st->stop, &st->enq, st->enq_err, sizeof st->enq_err);
    if (st->enq_rc) atomic_store(&st->stop, true); /* nothing more will come: stop the collector too */
    atomic_store(&st->enqueue_done, true);
    return NULL;
}

static void *run_collect_main(void *arg)
{
    run_state_t *st = arg;
    st->collect_rc = collect_run(st->settings, st->sink, COLLECT_UNTIL_DONE, &st->stop, &st->enqueue_done,
                                 &st->progress, st->collect_err, sizeof st->collect_err);
    atomic_store(&st->collect_done, true);
    sig_wake();
    return NULL;
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

int cmd_run(settings_t *s)
{
    localredis_t *local = NULL;
    char err[1024];
    int rc = EXIT_RUNTIME;
    run_state_t st = {.settings = s};
    atomic_init(&st.stop, false);
    atomic_init(&st.enqueue_done, false);
    atomic_init(&st.collect_done, false);
    st.input = s->input ? s->input : "-";
    st.in = strcmp(st.input, "-") == 0 ? stdin : fopen(st.input, "r");
    if (!st.in) {
        LOG(LL_ERROR, "cannot open input %s: %s", st.input, strerror(errno));
        return EXIT_RUNTIME;
    }
    if (!s->queue_set) {
        unsigned int rnd = 0;
        if (getrandom(&rnd, sizeof rnd, 0) != sizeof rnd) rnd = (unsigned int)clock_now_ms();
        free(s->queue);
        s->queue = xasprintf("run-%08x", rnd);
    }
    if (!s->redis_url) {
        local = localredis_start(s->redis_server, err, sizeof err);
        if (!local) {
            LOG(LL_ERROR, "%s", err);
            goto out_input;
        }
        s->redis_url = xstrdup(localredis_url(local));
        LOG(LL_DEBUG, "private redis-server at %s", s->redis_url);
    }
    st.sink = sink_open(s->out, s->rotate_lines, false, err, sizeof err);
    if (!st.sink) {
        LOG(LL_ERROR, "%s", err);
        goto out_redis;
    }

    /* One machine, one job: no fixed port to collide with another run unless asked for, and no waiting for a
     * Redis that cannot be reached (like enqueue and collect, run fails at once). */
    if (!s->http_port_set) s->http_port = 0;
    s->redis_wait_ms = SETTINGS_NO_WAIT;
    double t0 = clock_now_s();
    worker_t *w = worker_new(s);
    int started = worker_start(w, err, sizeof err);
    if (started) {
        LOG(LL_ERROR, "%s", err);
        worker_abort(w);
        worker_free(w);
        if (started == WORKER_BAD_SETTINGS) rc = EXIT_USAGE;
        goto out_sink;
    }
    pthread_t enq_thread, col_thread;
    pthread_create(&enq_thread, NULL, run_enqueue_main, &st);
    pthread_create(&col_thread, NULL, run_collect_main, &st);
    bool interrupted = false, redis_died = false;
    while (!atomic_load(&st.collect_done)) {
        if (sig_wait(100)) {
            if (interrupted) {
                LOG(LL_WARN, "second signal: exiting now");
                _exit(EXIT_RUNTIME);
            }
            LOG(LL_WARN, "interrupted: stopping; results written so far stay in the output");
            interrupted = true;
            atomic_store(&st.stop, true);
        }
        char how[64];
        if (local && !redis_died && localredis_exited(local, how, sizeof how)) {
            LOG(LL_ERROR, "the private redis-server exited (%s): stopping; results written so far stay in the "
                          "output, the rest of the job is lost with the server", how);
            redis_died = interrupted = true;
            atomic_store(&st.stop, true);
        }
    }
    pthread_join(col_thread, NULL);
    pthread_join(enq_thread, NULL);
    if (interrupted) {
        /* Finish or give back what is in flight, then write every result that was committed. */
        cmd_drain_worker(w);
        atomic_bool no_stop = false;
        collect_progress_t more;
        if (collect_run(s, st.sink, COLLECT_AVAILABLE, &no_stop, NULL, &more, err, sizeof err) == 0)
            st.progress.written += more.written;
        else
            LOG(LL_ERROR, "%s", err);
        if (!local) LOG(LL_WARN, "queue %s keeps the unfinished work (resume with chunkd worker --queue %s)", s->queue, s->queue);
    } else {
        worker_drain(w);
    }
    worker_free(w);
    double secs = clock_now_s() - t0;

    if (st.enq_rc) LOG(LL_ERROR, "%s", st.enq_err);
    if (st.collect_rc) LOG(LL_ERROR, "%s", st.collect_err);
    bool complete = !interrupted && st.enq_rc == 0 && st.collect_rc == 0;
    if (complete) {
        rc = st.enq.rejected ? EXIT_REJECTED : 0;
        if (!local && !s->queue_set) run_delete_queue(s);
    }
    fprintf(stderr, "chunkd run: %lld items, %.2f s, %.0f items/s; results: %s%s\n", st.progress.written, secs,
            secs > 0 ? (double)st.progress.written / secs : 0.0, sink_where(st.sink),
            complete ? "" : " (incomplete)");
    if (st.enq.rejected)
        fprintf(stderr, "chunkd run: %lld lines rejected; see %s\n", st.enq.rejected, st.enq.rejects_path);
    if (st.collect_rc == 0) cmd_report_failed(s, &st.progress);
out_sink:
    if (sink_close(st.sink) && rc != EXIT_RUNTIME) {
        LOG(LL_ERROR, "cannot finish writing results: %s", strerror(errno));
        rc = EXIT_RUNTIME;
    }
out_redis:
    localredis_stop(local);
out_input:
    if (st.in != stdin) fclose(st.in);
    return rc;
}
