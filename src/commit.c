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
    work_item_t *head, *tail; /* finished items and chunk markers, linked by commit_next */
    size_t queued;            /* entries in the queue */
    int64_t oldest_ms;        /* monotonic: when the oldest entry was queued (about) */
    bool stopping;
    bool exited;                /* the thread has left commit_main (under mu) */
    pthread_cond_t exited_cv;   /* signalled when exited is set */
    atomic_bool abort;
    atomic_llong abandoned;     /* results given up on at abort (they stay uncommitted; their chunks are reaped) */
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
    clock_cond_init(&c->exited_cv);
    atomic_init(&c->abort, false);
    atomic_init(&c->abandoned, 0);
    atomic_init(&c->heartbeat_ms, clock_now_ms());
    atomic_init(&c->connected, false);
    return c;
}

void commit_push(commit_t *c, work_item_t *list)
{
    if (!list) return;
    size_t weight = 1;
    work_item_t *tail = list;
    for (; tail->commit_next; tail = tail->commit_next) weight++;
    const size_t batch = (size_t)c->settings->commit_batch;
    pthread_mutex_lock(&c->mu);
    bool was_empty = !c->head;
    size_t before = c->queued;
    if (was_empty) c->oldest_ms = clock_now_ms();
    if (c->tail) c->tail->commit_next = list;
    else c->head = list;
    c->tail = tail;
    c->queued += weight;
    /* The committer waits for a first entry, then for a full batch or for --commit-interval-ms (a timed wait):
     * wake it for those only, not on every loop turn (each wake is a context switch). */
    if (was_empty || (before < batch && c->queued >= batch)) pthread_cond_signal(&c->changed);
    pthread_mutex_unlock(&c->mu);
}

void commit_push_chunk(commit_t *c, work_chunk_t *chunk)
{
    chunk->marker.commit_next = NULL;
    commit_push(c, &chunk->marker);
}

/* ---- one round: the taken entries grouped by chunk ---- */

/* Whether settling this chunk's group ends the chunk (the committer then frees it). */
static bool group_ends_chunk(const work_chunk_t *w) { return w->round_marker || w->n_received == w->n_run; }

static const char *chunk_name(const work_chunk_t *w) { return w->decoded.id ? w->decoded.id : "(unparsed)"; }

/* Adds the entries of list to the round (a list of chunks linked by round_next). A marker whose chunk already
 * has items in the round waits for the next round (*carry), so that a chunk is settled at most once per round. */
static work_chunk_t *commit_group(work_item_t *list, work_item_t **carry)
{
    work_chunk_t *round = NULL, **tail = &round;
    *carry = NULL;
    for (work_item_t *it = list; it;) {
        work_item_t *next = it->commit_next;
        work_chunk_t *w = it->chunk;
        bool marker = work_item_is_marker(it);
        if (marker && w->in_round) {
            it->commit_next = *carry;
            *carry = it;
            it = next;
            continue;
        }
        if (!w->in_round) {
            w->in_round = true;
            w->round_items = NULL;
            w->round_n = 0;
            w->round_marker = false;
            w->round_next = NULL;
            *tail = w;
            tail = &w->round_next;
        }
        if (marker) {
            w->round_marker = true;
        } else {
            it->commit_next = w->round_items;
            w->round_items = it;
            w->round_n++;
            w->n_received++;
        }
        it = next;
    }
    return round;
}

/* Appends the script call that settles one chunk's group to the pipeline. */
static void commit_append(commit_t *c, work_chunk_t *w)
{
    const keys_t *k = &c->keys;
    const char *id = w->ckpt;
    if (group_ends_chunk(w)) w->commit_sends++;
    if (w->round_marker && w->disposition == WORK_REQUEUE) {
        const char *argv[] = {"EVAL", script_requeue, "4", k->processing, k->pending, k->stats, k->deliveries,
                              w->raw, id};
        size_t lens[9];
        for (size_t i = 0; i < 9; i++) lens[i] = strlen(argv[i]);
        lens[7] = w->raw_len;
        rconn_append_argv(c->conn, 9, argv, lens);
        return;
    }
    char done_key[KEYS_MAX];
    keys_done(done_key, sizeof done_key, c->settings->queue, id);
    const char *mode = w->dead_reason ? "x" : group_ends_chunk(w) ? "f" : "p";
    /* A partial commit may be retried after a lost reply: only the checkpoint bits make that exactly-once. */
    if (*mode == 'p') w->checkpointed = true;
    const bool bits = w->checkpointed;
    size_t n = w->round_n, n_ok = 0, n_dead = w->dead_reason != NULL;
    for (work_item_t *it = w->round_items; it; it = it->commit_next) {
        n_ok += it->ok;
        n_dead += it->dead_record != NULL;
    }
    char counts[3][24];
    snprintf(counts[0], sizeof counts[0], "%zu", n);
    snprintf(counts[1], sizeof counts[1], "%zu", n_ok);
    snprintf(counts[2], sizeof counts[2], "%zu", n_dead);
    const char *head[] = {"EVAL", script_commit, "6", k->processing, k->results, k->stats, k->dead, done_key,
                          k->deliveries, w->raw, mode, id, bits ? "1" : "0", counts[0], counts[1], counts[2]};
    const size_t n_head = sizeof head / sizeof head[0];
    size_t argc = n_head + n + n_dead + (bits ? n : 0);
    const char **argv = xmalloc(argc * sizeof *argv);
    size_t *lens = xmalloc(argc * sizeof *lens);
    char(*tags)[24] = bits ? xmalloc((n ? n : 1) * sizeof *tags) : NULL;
    size_t a = 0;
    for (; a < n_head; a++) {
        argv[a] = head[a];
        lens[a] = strlen(head[a]);
    }
    lens[9] = w->raw_len;
    for (work_item_t *it = w->round_items; it; it = it->commit_next, a++) {
        argv[a] = it->result_line;
        lens[a] = it->result_len;
    }
    char *dead_chunk = NULL;
    if (w->dead_reason) {
        dead_chunk = work_chunk_dead_record(w, &lens[a]);
        argv[a++] = dead_chunk;
    }
    for (work_item_t *it = w->round_items; it; it = it->commit_next) {
        if (!it->dead_record) continue;
        argv[a] = it->dead_record;
        lens[a++] = it->dead_len;
    }
    size_t j = 0;
    for (work_item_t *it = bits ? w->round_items : NULL; it; it = it->commit_next, j++) {
        lens[a] = (size_t)snprintf(tags[j], sizeof tags[j], "%c%td", it->ok ? 'o' : it->dead_record ? 'd' : 'f',
                                   it - w->items);
        argv[a++] = tags[j];
    }
    rconn_append_argv(c->conn, (int)a, argv, lens);
    free(argv);
    free(lens);
    free(tags);
    free(dead_chunk);
}

/* Logs what one reply says about one chunk's group. Returns 0 when it is settled, -1 to send it again, -2 to send
 * it again after a transient error (Redis loading after a restart) that says nothing against the chunk. */
static int commit_settle(commit_t *c, work_chunk_t *w, redisReply *r)
{
    if (r->type == REDIS_REPLY_ERROR) {
        bool transient = rconn_transient_error(r->str);
        LOG_LIMITED(transient ? LL_WARN : LL_ERROR, "commit of chunk %s failed: %.300s", chunk_name(w), r->str);
        return transient ? -2 : -1;
    }
    bool requeue = w->round_marker && w->disposition == WORK_REQUEUE;
    if (r->type == REDIS_REPLY_INTEGER && r->integer == 2) {
        LOG(LL_WARN, "chunk %s has a checkpoint from another delivery; committing again with it", chunk_name(w));
        w->checkpointed = true;
        return -2; /* sent again at once, not a failure of the chunk */
    }
    if (r->type == REDIS_REPLY_INTEGER && r->integer == 1) {
        if (w->dead_reason) metrics_add(M_CHUNKS_DEAD, 1);
        else if (requeue) metrics_add(M_CHUNKS_REQUEUED, 1);
        else if (group_ends_chunk(w)) metrics_add(M_CHUNKS_COMMITTED, 1);
        for (work_item_t *it = w->round_items; it; it = it->commit_next)
            metrics_add(M_DEAD_ITEMS, it->dead_record != NULL);
    }
    if (r->type == REDIS_REPLY_INTEGER && r->integer == 0 && w->commit_sends > 1 && group_ends_chunk(w)) {
        LOG(LL_INFO, "chunk %s was settled by an earlier attempt whose reply was lost", chunk_name(w));
    } else if (r->type == REDIS_REPLY_INTEGER && r->integer == 0) {
        /* Fenced: the reaper gave the chunk to another worker (this one was paused or cut off past its lease). */
        LOG(LL_WARN, "chunk %s is no longer in %s (taken over by recovery?); this worker's results for it are dropped",
            chunk_name(w), c->keys.processing);
        metrics_add(M_CHUNKS_FENCED, 1);
        w->commit_dead = true;
    } else if (w->dead_reason) {
        LOG(LL_WARN, "chunk moved to %s: %s", c->keys.dead, w->dead_reason);
    } else if (requeue) {
        LOG(LL_DEBUG, "chunk %s went back to %s", w->decoded.id, c->keys.pending);
    }
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

/* A chunk's group is done with (settled, fenced, given up or abandoned): its items leave the window and free
 * their results; when the group ends the chunk, the rest of its weight leaves too and the chunk is freed. */
static void commit_drop(commit_t *c, work_chunk_t *w)
{
    for (work_item_t *it = w->round_items; it; it = it->commit_next) {
        free(it->result_line);
        free(it->dead_record);
        it->result_line = it->dead_record = NULL;
    }
    window_release(c->window, w->round_n, true);
    w->n_released += w->round_n;
    w->in_round = false;
    w->round_items = NULL;
    w->round_n = 0;
    if (!group_ends_chunk(w)) return;
    size_t unfinished = w->n_run - w->n_received; /* a drain's requeue: items that never finished */
    window_release(c->window, unfinished, false);
    window_release(c->window, work_chunk_weight(w) - w->n_released - unfinished, true);
    window_release_bytes(c->window, w->raw_len);
    work_chunk_free(w);
}

/* Sends a round until every group is settled (or abort). After two failed rounds it sends the first group alone,
 * so one chunk that always fails cannot hold back the others; a group that fails alone COMMIT_GIVE_UP times is
 * given up (its chunk stays in the processing list, and its later items are dropped). */
static void commit_send(commit_t *c, work_chunk_t *list)
{
    long long backoff_ms = 100;
    int failed_rounds = 0, alone_failures = 0;
    while (list && !atomic_load(&c->abort)) {
        atomic_store(&c->heartbeat_ms, clock_now_ms());
        /* Chunks already lost to recovery are not sent again. */
        for (work_chunk_t **p = &list; *p;) {
            work_chunk_t *w = *p;
            if (!w->commit_dead) {
                p = &w->round_next;
                continue;
            }
            *p = w->round_next;
            commit_drop(c, w);
        }
        if (!list) break;
        if (!rconn_connected(c->conn)) {
            atomic_store(&c->connected, false);
            if (rconn_reconnect(c->conn, &c->abort, &c->heartbeat_ms)) break;
            metrics_add(M_REDIS_RECONNECTS, 1);
        }
        atomic_store(&c->connected, true);
        bool alone = failed_rounds >= 2;
        int64_t round_start = clock_now_ms();
        size_t round_results = 0;
        work_chunk_t *rest = NULL;
        if (alone) {
            rest = list->round_next;
            list->round_next = NULL;
        }
        for (work_chunk_t *w = list; w; w = w->round_next) {
            commit_append(c, w);
            round_results += w->round_n;
        }
        work_chunk_t *retry = NULL, **retry_tail = &retry;
        bool lost = false, failed = false, transient = false;
        for (work_chunk_t *w = list; w;) {
            work_chunk_t *next = w->round_next;
            redisReply *r = lost ? NULL : rconn_get_reply(c->conn);
            if (!r && !lost) {
                LOG_LIMITED(LL_WARN, "Redis connection lost while committing: %s", rconn_error(c->conn));
                lost = true;
            }
            int settled = r ? commit_settle(c, w, r) : -2;
            if (settled == 0) {
                commit_drop(c, w);
            } else {
                transient |= settled == -2;
                failed = true;
                w->round_next = NULL;
                *retry_tail = w;
                retry_tail = &w->round_next;
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
        /* A lost connection or a Redis still loading is retried for as long as it takes: only error replies that
         * may be the chunk's own fault lead to sending it alone and, in the end, giving it up. */
        if (!transient) failed_rounds++;
        if (alone && !transient && ++alone_failures >= COMMIT_GIVE_UP) {
            work_chunk_t *w = list;
            LOG(LL_ERROR, "chunk %s could not be committed after %d tries alone; giving up on it here (it stays in "
                          "%s)", chunk_name(w), alone_failures, c->keys.processing);
            list = w->round_next;
            w->commit_dead = true;
            commit_drop(c, w);
            alone_failures = 0;
        }
        if (atomic_load(&c->abort)) break;
        commit_backoff(c, &backoff_ms);
    }
    while (list) { /* only on abort: the chunks stay in the processing list for recovery */
        work_chunk_t *next = list->round_next;
        atomic_fetch_add(&c->abandoned, (long long)list->round_n);
        list->commit_dead = true;
        commit_drop(c, list);
        list = next;
    }
}

/* Whether a chunk's marker waits in the carry list (the chunk's group must then go now, so the marker can). */
static bool commit_marker_carried(const work_item_t *carry, const work_chunk_t *w)
{
    for (; carry; carry = carry->commit_next)
        if (carry->chunk == w) return true;
    return false;
}

/* Splits off, into *deferred, the groups of chunks younger than --checkpoint-ms that do not end their chunk: a
 * chunk that finishes quickly is committed once, whole, instead of once per batch its items fall into (each
 * partial commit sends the whole chunk text for its fence). Older chunks checkpoint their finished items. */
static work_chunk_t *commit_defer(commit_t *c, work_chunk_t *round, work_chunk_t **deferred, const work_item_t *carry,
                                  bool stopping, int64_t now)
{
    const int64_t young_ms = c->settings->checkpoint_ms;
    work_chunk_t *send = NULL, **send_tail = &send;
    while (round) {
        work_chunk_t *w = round;
        round = w->round_next;
        w->round_next = NULL;
        bool defer = !stopping && young_ms > 0 && !group_ends_chunk(w) && !w->commit_dead && !atomic_load(&w->retried) &&
                     now - w->fetched_ms < young_ms && !commit_marker_carried(carry, w);
        if (defer) {
            w->round_next = *deferred;
            *deferred = w;
        } else {
            *send_tail = w;
            send_tail = &w->round_next;
        }
    }
    return send;
}

/* When the first deferred group falls due (INT64_MAX: none). */
static int64_t commit_deferred_due(const commit_t *c, const work_chunk_t *deferred)
{
    int64_t due = INT64_MAX;
    for (; deferred; deferred = deferred->round_next)
        if (deferred->fetched_ms + c->settings->checkpoint_ms < due) due = deferred->fetched_ms + c->settings->checkpoint_ms;
    return due;
}

static void *commit_main(void *arg)
{
    commit_t *c = arg;
    const size_t batch = (size_t)c->settings->commit_batch;
    const int64_t interval_ms = c->settings->commit_interval_ms;
    work_item_t *carry = NULL;       /* markers held back from the last round */
    work_chunk_t *deferred = NULL;   /* groups of young chunks waiting for more items (commit_defer) */
    pthread_mutex_lock(&c->mu);
    for (;;) {
        int64_t due = commit_deferred_due(c, deferred);
        while (!c->stopping && !c->head && !carry && clock_now_ms() < due) {
            atomic_store(&c->heartbeat_ms, clock_now_ms());
            int64_t wake = clock_now_ms() + 1000;
            struct timespec ts = clock_deadline_ts(wake < due ? wake : due);
            pthread_cond_timedwait(&c->changed, &c->mu, &ts);
        }
        atomic_store(&c->heartbeat_ms, clock_now_ms());
        if (!c->head && !carry && !deferred) break; /* stopping and nothing left */
        int64_t now = clock_now_ms();
        bool due_now = now >= due || c->stopping;
        if (!carry && !due_now && !commit_batch_ready(c->queued, now - c->oldest_ms, batch, interval_ms, false)) {
            int64_t wake = c->head ? c->oldest_ms + interval_ms : due;
            struct timespec ts = clock_deadline_ts(wake < due ? wake : due);
            pthread_cond_timedwait(&c->changed, &c->mu, &ts);
            continue;
        }
        /* Take up to a batch of entries, after the held-back markers. */
        work_item_t *list = carry, **tail = &list;
        while (*tail) tail = &(*tail)->commit_next;
        size_t taken = 0;
        while (c->head && taken < batch) {
            work_item_t *it = c->head;
            c->head = it->commit_next;
            it->commit_next = NULL;
            *tail = it;
            tail = &it->commit_next;
            taken++;
        }
        if (!c->head) c->tail = NULL;
        c->queued -= taken;
        c->oldest_ms = now;
        bool stopping = c->stopping;
        pthread_mutex_unlock(&c->mu);
        /* Deferred groups (their chunks still in_round) take their new items in commit_group, then rejoin. */
        work_chunk_t *round = commit_group(list, &carry);
        while (deferred) {
            work_chunk_t *w = deferred;
            deferred = w->round_next;
            w->round_next = round;
            round = w;
        }
        commit_send(c, commit_defer(c, round, &deferred, carry, stopping, now));
        pthread_mutex_lock(&c->mu);
    }
    c->exited = true;
    pthread_cond_broadcast(&c->exited_cv);
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

int commit_stop(commit_t *c, int64_t deadline_ms)
{
    if (!c->started) return atomic_load(&c->abandoned) ? -1 : 0;
    pthread_mutex_lock(&c->mu);
    c->stopping = true;
    pthread_cond_signal(&c->changed);
    while (!c->exited && clock_now_ms() < deadline_ms) {
        struct timespec ts = clock_deadline_ts(deadline_ms);
        pthread_cond_timedwait(&c->exited_cv, &c->mu, &ts);
    }
    bool late = !c->exited;
    pthread_mutex_unlock(&c->mu);
    if (late) {
        LOG(LL_WARN, "the committer could not finish (Redis unreachable or refusing writes?): giving up on the "
                     "results not committed yet; their chunks stay in %s for recovery", c->keys.processing);
        commit_abort(c);
    }
    pthread_join(c->thread, NULL);
    c->started = false;
    long long abandoned = atomic_load(&c->abandoned);
    if (abandoned) LOG(LL_WARN, "%lld results were not committed; their items run again after recovery", abandoned);
    return abandoned ? -1 : 0;
}

void commit_abort(commit_t *c) { atomic_store(&c->abort, true); }

void commit_free(commit_t *c)
{
    if (!c) return;
    commit_stop(c, INT64_MAX);
    /* Entries never sent (abort). The committer owns a chunk once its last item or its marker is queued; chunks
     * still running belong to their loop, which frees them, so call this before loop_free(). */
    for (work_item_t *it = c->head; it;) {
        work_item_t *next = it->commit_next;
        work_chunk_t *w = it->chunk;
        if (!work_item_is_marker(it)) w->n_received++;
        if (work_item_is_marker(it) || w->n_received == w->n_run) work_chunk_free(w);
        it = next;
    }
    rconn_free(c->conn);
    pthread_cond_destroy(&c->changed);
    pthread_cond_destroy(&c->exited_cv);
    pthread_mutex_destroy(&c->mu);
    free(c);
}
