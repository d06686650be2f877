/* commit: see commit.h. */
#include "commit.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"
#include "log.h"
#include "metrics.h"
#include "rconn.h"
#include "scripts.h"
#include "xalloc.h"

#define COMMIT_GIVE_UP 5 /* failures of one chunk sent alone before it is given up */

struct commit {
    const settings_t *settings;
    keys_t keys;
    window_t *window;
    rconn_t *conn;

    pthread_t thread;
    bool started;
    pthread_mutex_t mu;       /* guards the queue and stopping */
    pthread_cond_t changed;
    work_chunk_t *head, *tail;
    size_t queued_items;      /* weight of the queue (a chunk without items weighs 1) */
    bool stopping;
    atomic_bool abort;
    atomic_llong heartbeat_ms;  /* monotonic: the thread's last sign of life, for /healthz */
    atomic_bool connected;      /* for /readyz */
};

commit_t *commit_new(const settings_t *s, const keys_t *keys, window_t *window)
{
    commit_t *c = xcalloc(1, sizeof *c);
    c->settings = s;
    c->keys = *keys;
    c->window = window;
    c->conn = rconn_new(s->redis_url, s->redis_timeout_ms);
    pthread_mutex_init(&c->mu, NULL);
    clock_cond_init(&c->changed);
    atomic_init(&c->abort, false);
    atomic_init(&c->heartbeat_ms, clock_now_ms());
    atomic_init(&c->connected, false);
    return c;
}

void commit_push(commit_t *c, work_chunk_t *chunk)
{
    if (!chunk->finished_ms) chunk->finished_ms = clock_now_ms();
    chunk->next = NULL;
    pthread_mutex_lock(&c->mu);
    if (c->tail) c->tail->next = chunk;
    else c->head = chunk;
    c->tail = chunk;
    c->queued_items += work_chunk_weight(chunk);
    pthread_cond_signal(&c->changed);
    pthread_mutex_unlock(&c->mu);
}

/* Appends the script call that settles one chunk to the pipeline. */
static void commit_append(commit_t *c, work_chunk_t *w)
{
    const keys_t *k = &c->keys;
    w->commit_sends++;
    if (w->disposition == WORK_REQUEUE) {
        const char *argv[] = {"EVAL", script_requeue, "3", k->processing, k->pending, k->stats, w->raw};
        size_t lens[] = {4, strlen(script_requeue), 1, strlen(k->processing), strlen(k->pending), strlen(k->stats),
                         w->raw_len};
        rconn_append_argv(c->conn, 7, argv, lens);
        return;
    }
    size_t n = w->decoded.n_items, n_ok = 0, n_dead = 0;
    char *dead_chunk = NULL;
    size_t dead_chunk_len = 0;
    if (w->dead_reason) {
        dead_chunk = work_chunk_dead_record(w, &dead_chunk_len);
        n_dead = 1;
    }
    for (size_t i = 0; i < n; i++) {
        n_ok += w->items[i].ok;
        n_dead += w->items[i].dead_record != NULL;
    }
    size_t argc = 12 + n + n_dead;
    const char **argv = xmalloc(argc * sizeof *argv);
    size_t *lens = xmalloc(argc * sizeof *lens);
    char counts[3][24];
    snprintf(counts[0], sizeof counts[0], "%zu", n);
    snprintf(counts[1], sizeof counts[1], "%zu", n_ok);
    snprintf(counts[2], sizeof counts[2], "%zu", n_dead);
    const char *head[] = {"EVAL", script_commit, "4", k->processing, k->results, k->stats, k->dead,
                          w->raw, counts[0], counts[1], counts[2], w->dead_reason ? "1" : "0"};
    for (size_t i = 0; i < 12; i++) {
        argv[i] = head[i];
        lens[i] = strlen(head[i]);
    }
    lens[7] = w->raw_len;
    size_t a = 12;
    for (size_t i = 0; i < n; i++, a++) {
        argv[a] = w->items[i].result_line;
        lens[a] = w->items[i].result_len;
    }
    if (dead_chunk) {
        argv[a] = dead_chunk;
        lens[a++] = dead_chunk_len;
    }
    for (size_t i = 0; i < n; i++) {
        if (!w->items[i].dead_record) continue;
        argv[a] = w->items[i].dead_record;
        lens[a++] = w->items[i].dead_len;
    }
    rconn_append_argv(c->conn, (int)argc, argv, lens);
    free(argv);
    free(lens);
    free(dead_chunk);
}

/* Logs what one reply says about one chunk. Returns 0 when the chunk is settled, -1 to send it again. */
static int commit_settle(commit_t *c, work_chunk_t *w, redisReply *r)
{
    if (r->type == REDIS_REPLY_ERROR) {
        LOG_LIMITED(LL_ERROR, "commit of chunk %s failed: %.300s", w->decoded.id ? w->decoded.id : "(unparsed)",
                    r->str);
        return -1;
    }
    if (r->type == REDIS_REPLY_INTEGER && r->integer == 1) {
        if (w->dead_reason) metrics_add(M_CHUNKS_DEAD, 1);
        else if (w->disposition == WORK_REQUEUE) metrics_add(M_CHUNKS_REQUEUED, 1);
        else metrics_add(M_CHUNKS_COMMITTED, 1);
        if (w->disposition == WORK_COMMIT && !w->dead_reason)
            for (size_t i = 0; i < w->decoded.n_items; i++) metrics_add(M_DEAD_ITEMS, w->items[i].dead_record != NULL);
    }
    if (r->type == REDIS_REPLY_INTEGER && r->integer == 0 && w->commit_sends > 1)
        LOG(LL_INFO, "chunk %s was settled by an earlier attempt whose reply was lost",
            w->decoded.id ? w->decoded.id : "(unparsed)");
    else if (r->type == REDIS_REPLY_INTEGER && r->integer == 0)
        LOG(LL_WARN, "chunk %s is no longer in %s (taken over by recovery?); its results were dropped",
            w->decoded.id ? w->decoded.id : "(unparsed)", c->keys.processing);
    else if (w->dead_reason)
        LOG(LL_WARN, "chunk moved to %s: %s", c->keys.dead, w->dead_reason);
    else if (w->disposition == WORK_REQUEUE)
        LOG(LL_DEBUG, "chunk %s went back to %s", w->decoded.id, c->keys.pending);
    return 0;
}

static void commit_backoff(commit_t *c, long long *backoff_ms)
{
    for (long long t = 0; t < *backoff_ms && !atomic_load(&c->abort); t += 50) {
        atomic_store(&c->heartbeat_ms, clock_now_ms());
        struct timespec ts = {0, 50 * 1000000L};
        nanosleep(&ts, NULL);
    }
    if (*backoff_ms < 5000) *backoff_ms *= 2;
}

static void commit_drop(commit_t *c, work_chunk_t *w)
{
    window_release(c->window, work_chunk_weight(w), w->disposition == WORK_COMMIT);
    work_chunk_free(w);
}

/* Sends a list of chunks until every one is settled (or abort), then frees them and releases the window.
 * After two failed rounds it sends the first chunk alone, so one chunk that always fails cannot hold back the
 * others; a chunk that fails alone COMMIT_GIVE_UP times is given up (it stays in the processing list). */
static void commit_send(commit_t *c, work_chunk_t *list)
{
    long long backoff_ms = 100;
    int failed_rounds = 0, alone_failures = 0;
    while (list) {
        atomic_store(&c->heartbeat_ms, clock_now_ms());
        if (!rconn_connected(c->conn)) {
            atomic_store(&c->connected, false);
            if (rconn_reconnect(c->conn, &c->abort)) break;
            metrics_add(M_REDIS_RECONNECTS, 1);
        }
        atomic_store(&c->connected, true);
        bool alone = failed_rounds >= 2;
        int64_t round_start = clock_now_ms();
        size_t round_results = 0;
        work_chunk_t *rest = NULL;
        if (alone) {
            rest = list->next;
            list->next = NULL;
        }
        for (work_chunk_t *w = list; w; w = w->next) {
            commit_append(c, w);
            round_results += w->decoded.n_items;
        }
        work_chunk_t *retry = NULL, **retry_tail = &retry;
        bool lost = false, failed = false;
        for (work_chunk_t *w = list; w;) {
            work_chunk_t *next = w->next;
            redisReply *r = lost ? NULL : rconn_get_reply(c->conn);
            if (!r && !lost) {
                LOG_LIMITED(LL_WARN, "Redis connection lost while committing: %s", rconn_error(c->conn));
                lost = true;
            }
            if (r && commit_settle(c, w, r) == 0) {
                commit_drop(c, w);
            } else {
                failed = true;
                w->next = NULL;
                *retry_tail = w;
                retry_tail = &w->next;
            }
            if (r) freeReplyObject(r);
            w = next;
        }
        *retry_tail = rest;
        list = retry;
        if (lost || failed) metrics_add(M_REDIS_ERRORS, 1);
        if (lost) atomic_store(&c->connected, false);
        metrics_observe(H_COMMIT_SECONDS, (uint64_t)(clock_now_ms() - round_start) * 1000);
        metrics_observe(H_COMMIT_BATCH_SIZE, round_results);
        if (!failed) {
            failed_rounds = alone_failures = 0;
            backoff_ms = 100;
            continue;
        }
        failed_rounds++;
        if (alone && ++alone_failures >= COMMIT_GIVE_UP) {
            work_chunk_t *w = list;
            LOG(LL_ERROR, "chunk %s could not be committed after %d tries alone; giving up on it here (it stays in "
                          "%s)", w->decoded.id ? w->decoded.id : "(unparsed)", alone_failures, c->keys.processing);
            list = w->next;
            commit_drop(c, w);
            alone_failures = 0;
        }
        if (atomic_load(&c->abort)) break;
        commit_backoff(c, &backoff_ms);
    }
    while (list) { /* only on abort: the chunks stay in the processing list for recovery */
        work_chunk_t *next = list->next;
        commit_drop(c, list);
        list = next;
    }
}

static void *commit_main(void *arg)
{
    commit_t *c = arg;
    const size_t batch_items = (size_t)c->settings->commit_batch;
    const int64_t interval_ms = c->settings->commit_interval_ms;
    pthread_mutex_lock(&c->mu);
    for (;;) {
        while (!c->stopping && !c->head) {
            atomic_store(&c->heartbeat_ms, clock_now_ms());
            struct timespec ts = clock_deadline_ts(clock_now_ms() + 1000);
            pthread_cond_timedwait(&c->changed, &c->mu, &ts);
        }
        atomic_store(&c->heartbeat_ms, clock_now_ms());
        if (!c->head) break; /* stopping and nothing left */
        int64_t now = clock_now_ms();
        if (!commit_batch_ready(c->queued_items, now - c->head->finished_ms, batch_items, interval_ms, c->stopping)) {
            int64_t deadline = c->head->finished_ms + interval_ms;
            struct timespec ts = clock_deadline_ts(deadline);
            pthread_cond_timedwait(&c->changed, &c->mu, &ts);
            continue;
        }
        /* Take whole chunks up to the batch size (at least one). */
        work_chunk_t *list = c->head, *last = c->head;
        size_t taken = work_chunk_weight(last);
        while (last->next && taken + work_chunk_weight(last->next) <= batch_items) {
            last = last->next;
            taken += work_chunk_weight(last);
        }
        c->head = last->next;
        if (!c->head) c->tail = NULL;
        last->next = NULL;
        c->queued_items -= taken;
        pthread_mutex_unlock(&c->mu);
        commit_send(c, list);
        pthread_mutex_lock(&c->mu);
    }
    pthread_mutex_unlock(&c->mu);
    return NULL;
}

int64_t commit_heartbeat_ms(commit_t *c) { return atomic_load(&c->heartbeat_ms); }
bool commit_connected(commit_t *c) { return atomic_load(&c->connected); }

int commit_start(commit_t *c, char *err, size_t errlen)
{
    if (rconn_connect(c->conn, err, errlen)) return -1;
    atomic_store(&c->connected, true);
    int rc = pthread_create(&c->thread, NULL, commit_main, c);
    if (rc) {
        snprintf(err, errlen, "cannot start the commit thread: %s", strerror(rc));
        return -1;
    }
    c->started = true;
    return 0;
}

void commit_stop(commit_t *c)
{
    if (!c->started) return;
    pthread_mutex_lock(&c->mu);
    c->stopping = true;
    pthread_cond_signal(&c->changed);
    pthread_mutex_unlock(&c->mu);
    pthread_join(c->thread, NULL);
    c->started = false;
}

void commit_abort(commit_t *c) { atomic_store(&c->abort, true); }

void commit_free(commit_t *c)
{
    if (!c) return;
    commit_stop(c);
    for (work_chunk_t *w = c->head; w;) {
        work_chunk_t *next = w->next;
        work_chunk_free(w);
        w = next;
    }
    rconn_free(c->conn);
    pthread_cond_destroy(&c->changed);
    pthread_mutex_destroy(&c->mu);
    free(c);
}
