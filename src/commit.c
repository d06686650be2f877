/* commit: see commit.h. */
#include "commit.h"

#include <assert.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"
#include "commit_round.h"
#include "commit_script.h"
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
    atomic_llong abandoned_groups; /* chunks' groups given up on at abort, results or not (a requeue, a dead chunk) */
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
    rconn_set_min_replicas(c->conn, (int)s->redis_min_replicas, s->redis_min_replicas_timeout_ms);
    pthread_mutex_init(&c->mu, NULL);
    clock_cond_init(&c->changed);
    clock_cond_init(&c->exited_cv);
    atomic_init(&c->abort, false);
    atomic_init(&c->abandoned, 0);
    atomic_init(&c->abandoned_groups, 0);
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

/* ---- sending a round: one script call per group, in one pipeline ---- */

static const char *chunk_name(const work_chunk_t *w) { return w->decoded.id ? w->decoded.id : "(unparsed)"; }

/* Whether the group gives the chunk back to pending (requeue.lua) instead of committing it (commit.lua). */
static bool group_requeues(const work_chunk_t *w) { return w->round_marker && w->disposition == WORK_REQUEUE; }

/* The first three entries of an EVAL call's argv. */
static void eval_head(const char **argv, const char *script, const char *n_keys)
{
    argv[0] = "EVAL";
    argv[1] = script;
    argv[2] = n_keys;
}

/* Appends the requeue.lua call that gives the chunk back to pending. */
static void commit_append_requeue(commit_t *c, const work_chunk_t *w)
{
    const keys_t *k = &c->keys;
    const char *argv[SCRIPT_EVAL_ARGC(REQUEUE_N_KEYS, REQUEUE_N_ARGS)];
    size_t lens[SCRIPT_EVAL_ARGC(REQUEUE_N_KEYS, REQUEUE_N_ARGS)];
    const size_t argc = sizeof argv / sizeof argv[0];
    eval_head(argv, script_requeue, SCRIPT_TEXT(REQUEUE_N_KEYS));
    argv[SCRIPT_EVAL_KEY(REQUEUE_KEY_PROCESSING)] = k->processing;
    argv[SCRIPT_EVAL_KEY(REQUEUE_KEY_PENDING)] = k->pending;
    argv[SCRIPT_EVAL_KEY(REQUEUE_KEY_STATS)] = k->stats;
    argv[SCRIPT_EVAL_KEY(REQUEUE_KEY_DELIVERIES)] = k->deliveries;
    argv[SCRIPT_EVAL_ARG(REQUEUE_N_KEYS, REQUEUE_ARG_CHUNK)] = w->raw;
    argv[SCRIPT_EVAL_ARG(REQUEUE_N_KEYS, REQUEUE_ARG_CKPT_NAME)] = w->ckpt;
    for (size_t i = 0; i < argc; i++) lens[i] = strlen(argv[i]);
    lens[SCRIPT_EVAL_ARG(REQUEUE_N_KEYS, REQUEUE_ARG_CHUNK)] = w->raw_len;
    rconn_append_argv(c->conn, (int)argc, argv, lens);
}

/* Where commit.lua's ARGV[a] goes in its EVAL call. */
#define COMMIT_EVAL_ARG(a) SCRIPT_EVAL_ARG(COMMIT_N_KEYS, a)

/* Appends the commit.lua call that settles one chunk's group: its result lines, dead records and (with the
 * checkpoint) item tags, after the keys and the head arguments. */
static void commit_append_commit(commit_t *c, work_chunk_t *w)
{
    const keys_t *k = &c->keys;
    const char *id = w->ckpt;
    char done_key[KEYS_MAX];
    keys_done(done_key, sizeof done_key, c->settings->queue, id);
    const bool ends = commit_round_ends_chunk(w);
    /* Partial commits written before the master moved (a failover) may be missing from the new master: instead of
     * ending the chunk, give it back, so its next delivery runs what the checkpoint there lacks. */
    w->requeue_sent = ends && !w->dead_reason && w->partial_moves &&
                      w->partial_moves != rconn_master_moves(c->conn) + 1;
    const char *mode = w->dead_reason    ? COMMIT_MODE_DEAD
                       : w->requeue_sent ? COMMIT_MODE_REQUEUE
                       : ends            ? COMMIT_MODE_FINAL
                                         : COMMIT_MODE_PARTIAL;
    /* A partial commit may be retried after a lost reply: only the checkpoint bits make that exactly-once. */
    if (!w->dead_reason && !ends) w->checkpointed = true;
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
    const size_t n_head = SCRIPT_EVAL_ARGC(COMMIT_N_KEYS, COMMIT_N_HEAD_ARGS);
    size_t argc = n_head + n + n_dead + (bits ? n : 0);
    const char **argv = xmalloc(argc * sizeof *argv);
    size_t *lens = xmalloc(argc * sizeof *lens);
    char(*tags)[24] = bits ? xmalloc((n ? n : 1) * sizeof *tags) : NULL;
    eval_head(argv, script_commit, SCRIPT_TEXT(COMMIT_N_KEYS));
    argv[SCRIPT_EVAL_KEY(COMMIT_KEY_PROCESSING)] = k->processing;
    argv[SCRIPT_EVAL_KEY(COMMIT_KEY_RESULTS)] = k->results;
    argv[SCRIPT_EVAL_KEY(COMMIT_KEY_STATS)] = k->stats;
    argv[SCRIPT_EVAL_KEY(COMMIT_KEY_DEAD)] = k->dead;
    argv[SCRIPT_EVAL_KEY(COMMIT_KEY_CHECKPOINT)] = done_key;
    argv[SCRIPT_EVAL_KEY(COMMIT_KEY_DELIVERIES)] = k->deliveries;
    argv[SCRIPT_EVAL_KEY(COMMIT_KEY_PENDING)] = k->pending;
    argv[COMMIT_EVAL_ARG(COMMIT_ARG_CHUNK)] = w->raw;
    argv[COMMIT_EVAL_ARG(COMMIT_ARG_MODE)] = mode;
    argv[COMMIT_EVAL_ARG(COMMIT_ARG_CKPT_NAME)] = id;
    argv[COMMIT_EVAL_ARG(COMMIT_ARG_USE_CKPT)] = bits ? COMMIT_CKPT_ON : COMMIT_CKPT_OFF;
    argv[COMMIT_EVAL_ARG(COMMIT_ARG_N)] = counts[0];
    argv[COMMIT_EVAL_ARG(COMMIT_ARG_N_OK)] = counts[1];
    argv[COMMIT_EVAL_ARG(COMMIT_ARG_N_DEAD)] = counts[2];
    size_t a = 0;
    for (; a < n_head; a++) lens[a] = strlen(argv[a]);
    lens[COMMIT_EVAL_ARG(COMMIT_ARG_CHUNK)] = w->raw_len;
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
        char tag = it->ok ? COMMIT_TAG_OK : it->dead_record ? COMMIT_TAG_DEAD : COMMIT_TAG_FAILED;
        lens[a] = (size_t)snprintf(tags[j], sizeof tags[j], "%c%td", tag, it - w->items);
        argv[a++] = tags[j];
    }
    assert(a == argc);
    rconn_append_argv(c->conn, (int)a, argv, lens);
    free(argv);
    free(lens);
    free(tags);
    free(dead_chunk);
}

/* Appends the script call that settles one chunk's group to the pipeline. */
static void commit_append(commit_t *c, work_chunk_t *w)
{
    assert(w->in_round);
    if (commit_round_ends_chunk(w)) w->commit_sends++;
    if (group_requeues(w)) commit_append_requeue(c, w);
    else commit_append_commit(c, w);
}

/* commit_settle reads requeue.lua's replies as commit.lua's. */
_Static_assert(REQUEUE_REPLY_OK == COMMIT_REPLY_OK && REQUEUE_REPLY_GONE == COMMIT_REPLY_FENCED,
               "requeue.lua and commit.lua reply alike");

/* Logs what one reply says about one chunk's group. Returns 0 when it is settled, -1 to send it again, -2 to send
 * it again after a transient error (Redis loading after a restart) that says nothing against the chunk. */
static int commit_settle(commit_t *c, work_chunk_t *w, redisReply *r)
{
    if (r->type == REDIS_REPLY_ERROR) {
        bool transient = rconn_transient_error(r->str);
        LOG_LIMITED(transient ? LL_WARN : LL_ERROR, "commit of chunk %s failed: %.300s", chunk_name(w), r->str);
        return transient ? -2 : -1;
    }
    bool requeue = group_requeues(w);
    bool is_int = r->type == REDIS_REPLY_INTEGER;
    if (is_int && r->integer == COMMIT_REPLY_CKPT_EXISTS) {
        LOG(LL_WARN, "chunk %s has a checkpoint from another delivery; committing again with it", chunk_name(w));
        w->checkpointed = true;
        return -2; /* sent again at once, not a failure of the chunk */
    }
    if (is_int && r->integer == COMMIT_REPLY_OK) {
        if (!commit_round_ends_chunk(w) && !w->dead_reason && !requeue && !w->partial_moves)
            w->partial_moves = rconn_master_moves(c->conn) + 1;
        if (w->requeue_sent)
            LOG(LL_WARN, "chunk %s: the Redis master changed since its partial commits, which may be lost with the "
                         "old master; its finished items are committed and it went back to %s, so its next "
                         "delivery runs what the checkpoint lacks", chunk_name(w), c->keys.pending);
        if (w->dead_reason) metrics_add(M_CHUNKS_DEAD, 1);
        else if (requeue || w->requeue_sent) metrics_add(M_CHUNKS_REQUEUED, 1);
        else if (commit_round_ends_chunk(w)) metrics_add(M_CHUNKS_COMMITTED, 1);
        for (work_item_t *it = w->round_items; it; it = it->commit_next)
            metrics_add(M_DEAD_ITEMS, it->dead_record != NULL);
    }
    if (is_int && r->integer == COMMIT_REPLY_FENCED && w->commit_sends > 1 && commit_round_ends_chunk(w)) {
        LOG(LL_INFO, "chunk %s was settled by an earlier attempt whose reply was lost", chunk_name(w));
    } else if (is_int && r->integer == COMMIT_REPLY_FENCED) {
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
 * their results; when the group ends the chunk, the rest of its weight leaves too and the chunk is freed. Each
 * group is dropped once per round: this ends the chunk's round. */
static void commit_drop(commit_t *c, work_chunk_t *w)
{
    assert(w->in_round);
    for (work_item_t *it = w->round_items; it; it = it->commit_next) {
        free(it->result_line);
        free(it->dead_record);
        it->result_line = it->dead_record = NULL;
    }
    assert(w->n_released + w->round_n <= work_chunk_weight(w));
    window_release(c->window, w->round_n, true);
    w->n_released += w->round_n;
    w->in_round = false;
    w->round_items = NULL;
    w->round_n = 0;
    if (!commit_round_ends_chunk(w)) return;
    assert(w->n_received <= w->n_run);
    size_t unfinished = w->n_run - w->n_received; /* a drain's requeue: items that never finished */
    assert(w->n_released + unfinished <= work_chunk_weight(w));
    window_release(c->window, unfinished, false);
    window_release(c->window, work_chunk_weight(w) - w->n_released - unfinished, true);
    window_release_bytes(c->window, w->raw_len);
    work_chunk_free(w);
}

/* Drops the groups of chunks already lost to recovery (fenced, or given up): they are not sent again. Returns the
 * rest, in order. */
static work_chunk_t *commit_drop_dead(commit_t *c, work_chunk_t *list)
{
    for (work_chunk_t **p = &list; *p;) {
        work_chunk_t *w = *p;
        if (!w->commit_dead) {
            p = &w->round_next;
            continue;
        }
        *p = w->round_next;
        commit_drop(c, w);
    }
    return list;
}

/* Reconnects when the connection is down. Returns 0 when connected, -1 on abort. */
static int commit_connect(commit_t *c)
{
    if (!rconn_connected(c->conn)) {
        atomic_store(&c->connected, false);
        if (rconn_reconnect(c->conn, &c->abort, &c->heartbeat_ms)) return -1;
        metrics_add(M_REDIS_RECONNECTS, 1);
    }
    atomic_store(&c->connected, true);
    return 0;
}

/* Appends one script call per group of the round to the pipeline. Returns the results they carry. */
static size_t commit_append_round(commit_t *c, work_chunk_t *round)
{
    size_t results = 0;
    for (work_chunk_t *w = round; w; w = w->round_next) {
        commit_append(c, w);
        results += w->round_n;
    }
    return results;
}

/* What went wrong in one round. */
typedef struct commit_failure {
    bool lost;      /* the connection was lost: the groups without a reply go again */
    bool failed;    /* some group goes again */
    bool transient; /* some group goes again for a reason that says nothing against it */
} commit_failure_t;

/* Reads one reply per group of the round sent and settles each group (dropping it) or puts it on the list to
 * send again. Returns that list, in order, followed by rest (the groups held back from the round). */
static work_chunk_t *commit_read_replies(commit_t *c, work_chunk_t *sent, work_chunk_t *rest, commit_failure_t *f)
{
    *f = (commit_failure_t){0};
    work_chunk_t *retry = NULL, **retry_tail = &retry;
    work_chunk_t *settled = NULL, **settled_tail = &settled; /* dropped once the replicas have them */
    /* Without --redis-min-replicas a settled group leaves the window as soon as its reply is read, not after the
     * round's last one: a large round (a backlog, commit_round_take) frees its first chunks' places early. */
    const bool wait_replicas = c->settings->redis_min_replicas > 0;
    for (work_chunk_t *w = sent; w;) {
        work_chunk_t *next = w->round_next;
        redisReply *r = f->lost ? NULL : rconn_get_reply(c->conn);
        if (!r && !f->lost) {
            LOG_LIMITED(LL_WARN, "Redis connection lost while committing: %s", rconn_error(c->conn));
            f->lost = true;
        }
        int outcome = r ? commit_settle(c, w, r) : -2;
        if (outcome == 0 && !wait_replicas) {
            commit_drop(c, w);
        } else if (outcome == 0) {
            w->round_next = NULL;
            *settled_tail = w;
            settled_tail = &w->round_next;
        } else {
            f->transient |= outcome == -2;
            f->failed = true;
            w->round_next = NULL;
            *retry_tail = w;
            retry_tail = &w->round_next;
        }
        if (r) freeReplyObject(r);
        w = next;
    }
    char why[300];
    if (settled && rconn_wait_replicas(c->conn, why, sizeof why)) {
        /* --redis-min-replicas: not known to be on enough replicas, so a failover could lose them. The worker
         * keeps the chunks and sends them again: commit.lua writes nothing twice (the checkpoint's bits; the final
         * commit's LREM fences), and the next WAIT covers the first writes too. */
        LOG_LIMITED(LL_WARN, "commit round not confirmed: %s; sending it again", why);
        f->failed = f->transient = true;
        bool none_failed = retry_tail == &retry;
        *settled_tail = retry;
        retry = settled;
        if (none_failed) retry_tail = settled_tail;
    } else {
        while (settled) {
            work_chunk_t *next = settled->round_next;
            commit_drop(c, settled);
            settled = next;
        }
    }
    *retry_tail = rest;
    return retry;
}

/* How the committer is doing with the groups it keeps sending. */
typedef struct commit_tries {
    long long backoff_ms; /* before the next try after a failed round */
    int failed_rounds;    /* rounds in a row with an error reply that may be a chunk's own fault */
    int alone_failures;   /* such failures of the first group, sent alone */
} commit_tries_t;

/* After a failed round: counts it and, once the first group sent alone has failed COMMIT_GIVE_UP times, gives it
 * up. A lost connection or a Redis still loading is retried for as long as it takes: only error replies that may
 * be the chunk's own fault lead to sending it alone and, in the end, giving it up. Returns the groups to send. */
static work_chunk_t *commit_count_failure(commit_t *c, work_chunk_t *list, const commit_failure_t *f, bool alone,
                                          commit_tries_t *tries)
{
    if (f->transient) return list;
    tries->failed_rounds++;
    if (!alone || ++tries->alone_failures < COMMIT_GIVE_UP) return list;
    work_chunk_t *w = list;
    LOG(LL_ERROR, "chunk %s could not be committed after %d tries alone; giving up on it here (it stays in %s)",
        chunk_name(w), tries->alone_failures, c->keys.processing);
    list = w->round_next;
    w->commit_dead = true;
    commit_drop(c, w);
    tries->alone_failures = 0;
    return list;
}

/* Gives up on every group left (only on abort): the chunks stay in the processing list for recovery. */
static void commit_abandon(commit_t *c, work_chunk_t *list)
{
    while (list) {
        work_chunk_t *next = list->round_next;
        atomic_fetch_add(&c->abandoned, (long long)list->round_n);
        atomic_fetch_add(&c->abandoned_groups, 1);
        list->commit_dead = true;
        commit_drop(c, list);
        list = next;
    }
}

/* Sends a round until every group is settled (or abort). After two failed rounds it sends the first group alone,
 * so one chunk that always fails cannot hold back the others; a group that fails alone COMMIT_GIVE_UP times is
 * given up (its chunk stays in the processing list, and its later items are dropped). */
static void commit_send(commit_t *c, work_chunk_t *list)
{
    commit_tries_t tries = {.backoff_ms = 100};
    while (list && !atomic_load(&c->abort)) {
        atomic_store(&c->heartbeat_ms, clock_now_ms());
        list = commit_drop_dead(c, list);
        if (!list || commit_connect(c)) break;
        bool alone = tries.failed_rounds >= 2;
        work_chunk_t *rest = NULL;
        if (alone) {
            rest = list->round_next;
            list->round_next = NULL;
        }
        int64_t round_start = clock_now_ms();
        size_t round_results = commit_append_round(c, list);
        commit_failure_t f;
        list = commit_read_replies(c, list, rest, &f);
        if (f.lost || f.failed) metrics_add(M_REDIS_ERRORS, 1);
        if (f.lost) atomic_store(&c->connected, false);
        metrics_observe(H_COMMIT_SECONDS, (uint64_t)(clock_now_ms() - round_start) * 1000);
        metrics_observe(H_COMMIT_BATCH_SIZE, round_results);
        if (!f.failed) {
            tries = (commit_tries_t){.backoff_ms = 100};
            continue;
        }
        list = commit_count_failure(c, list, &f, alone, &tries);
        if (atomic_load(&c->abort)) break;
        commit_backoff(c, &tries.backoff_ms);
    }
    commit_abandon(c, list);
}

/* Takes up to batch entries off the queue (under mu), in order. */
static work_item_t *commit_take(commit_t *c, size_t batch)
{
    work_item_t *list = NULL, **tail = &list;
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
    return list;
}

static void *commit_main(void *arg)
{
    commit_t *c = arg;
    const size_t batch = (size_t)c->settings->commit_batch;
    const int64_t interval_ms = c->settings->commit_interval_ms;
    const int64_t checkpoint_ms = c->settings->checkpoint_ms;
    work_item_t *carry = NULL;       /* markers held back from the last round */
    work_chunk_t *deferred = NULL;   /* groups of young chunks waiting for more items (commit_round.h) */
    pthread_mutex_lock(&c->mu);
    for (;;) {
        int64_t due = commit_round_due(deferred, checkpoint_ms);
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
        work_item_t *taken = commit_take(c, commit_round_take(c->queued, batch));
        c->oldest_ms = now;
        bool stopping = c->stopping;
        pthread_mutex_unlock(&c->mu);
        commit_send(c, commit_round_build(taken, &carry, &deferred, stopping, now, checkpoint_ms));
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
    if (!c->started) return atomic_load(&c->abandoned_groups) ? -1 : 0;
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
    long long abandoned = atomic_load(&c->abandoned), groups = atomic_load(&c->abandoned_groups);
    /* A requeue or a dead chunk's marker carries no result but is given up all the same: count groups. */
    if (groups)
        LOG(LL_WARN, "%lld results (%lld chunks' commits or requeues) were not committed; their items run again "
                     "after recovery", abandoned, groups);
    return groups ? -1 : 0;
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
