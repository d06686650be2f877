/* fetch: see fetch.h. */
#include "fetch.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backlog.h"
#include "clock.h"
#include "enqueue.h"
#include "handler.h"
#include "log.h"
#include "metrics.h"
#include "lease.h"
#include "rconn.h"
#include "scripts.h"
#include "sig.h"
#include "work.h"
#include "xalloc.h"

#define FETCH_PIPELINE_MAX 64 /* chunks asked for in one round trip */
#define FETCH_RATE_SAMPLE_MS 100 /* the finishing rate is sampled over at least this long */
#define FETCH_AHEAD_MARGIN 2     /* fetch-ahead covers this many fetch round trips at the finishing rate */
#define FETCH_QUEUE_PAUSED (-2)  /* fetch_take_reply: the queue is paused */
#define FETCH_POLL_MIN_MS 5    /* first pause before looking at an empty queue again */
#define FETCH_MAXMEMORY_MS 5000 /* how often Redis's maxmemory is read again (CONFIG SET may change it) */

struct fetch {
    const settings_t *settings;
    keys_t keys;
    window_t *window;
    sched_t **loops;
    size_t n_loops;
    commit_t *commit;
    const handler_t *handler;
    void *handler_shared;
    rconn_t *conn;
    pthread_t thread;
    bool started;
    atomic_bool stop;
    atomic_bool found_empty;
    atomic_bool connected;    /* for /readyz */
    atomic_bool queue_paused; /* fetch.lua found the queue paused (chunkd pause): for /readyz */
    bool told_open;           /* --exit-when-empty: "the queue is not sealed" was logged (once) */
    long long master_moves;   /* rconn_master_moves() once the orphans it could leave were given back */
    /* The results backlog, as the last check saw it (fetch thread only), and when maxmemory is read next. */
    backlog_t backlog;
    int64_t next_maxmemory_ms;
    bool asked_maxmemory;     /* the check in flight reads maxmemory too */
    bool told_maxmemory;      /* "cannot read Redis's maxmemory" was logged (once) */
    atomic_bool backlog_full; /* fetching waits for the collector: for /readyz */
    pthread_mutex_t why_mu;   /* guards backlog_why */
    char backlog_why[320];    /* why the backlog is full, while it is */
    /* Fetch-ahead (fetch_plan_ahead): the items that finish per ms, from window_finished_total() sampled at
     * rate_since_ms (monotonic) with rate_finished. Fetch thread only. */
    double finished_per_ms;
    uint64_t rate_finished;
    int64_t rate_since_ms;
};

fetch_t *fetch_new(const settings_t *s, const keys_t *keys, window_t *window, sched_t **loops, size_t n_loops,
                   commit_t *commit, const handler_t *handler, void *handler_shared)
{
    fetch_t *f = xcalloc(1, sizeof *f);
    f->settings = s;
    f->keys = *keys;
    f->window = window;
    f->loops = loops;
    f->n_loops = n_loops;
    f->commit = commit;
    f->handler = handler;
    f->handler_shared = handler_shared;
    f->conn = rconn_new(s->redis_url, s->redis_timeout_ms);
    /* A fetch that moves a chunk over --max-chunk-bytes to dead makes Redis encode it (about a second for
     * 512 MB). */
    rconn_set_extra_timeout(f->conn, 2000);
    atomic_init(&f->stop, false);
    atomic_init(&f->found_empty, false);
    atomic_init(&f->connected, false);
    atomic_init(&f->queue_paused, false);
    atomic_init(&f->backlog_full, false);
    f->backlog.maxmemory = -1;
    pthread_mutex_init(&f->why_mu, NULL);
    return f;
}

static sched_t *least_loaded(fetch_t *f)
{
    sched_t *best = f->loops[0];
    size_t best_load = sched_load(best);
    for (size_t i = 1; i < f->n_loops; i++) {
        size_t load = sched_load(f->loops[i]);
        if (load < best_load) best = f->loops[i], best_load = load;
    }
    return best;
}

/* Connects (again). */
static int fetch_connect(fetch_t *f, char *err, size_t errlen)
{
    atomic_store(&f->connected, false);
    if (err ? rconn_connect(f->conn, err, errlen) : rconn_reconnect(f->conn, &f->stop, NULL)) return -1;
    if (!err) metrics_add(M_REDIS_RECONNECTS, 1);
    atomic_store(&f->connected, true);
    return 0;
}

long long fetch_reclaim(rconn_t *c, const keys_t *k)
{
    const char *argv[] = {"EVAL", script_reclaim, "3", k->processing, k->pending, k->stats};
    redisReply *r = rconn_command_argv(c, 6, argv, NULL);
    long long moved = r && r->type == REDIS_REPLY_INTEGER ? r->integer : -1;
    if (moved > 0)
        LOG(LL_WARN, "%lld orphaned chunks in %s (moved while a connection was lost) went back to pending", moved,
            k->processing);
    else if (moved < 0)
        LOG(LL_WARN, "could not reclaim orphaned chunks from %s: %s", k->processing,
            r ? r->str : rconn_error(c));
    if (r) freeReplyObject(r);
    return moved;
}

/* True when no other registered worker of the queue holds a chunk. */
static bool fetch_others_idle(fetch_t *f)
{
    char prefix[KEYS_MAX + 16];
    keys_processing(prefix, sizeof prefix, f->settings->queue, ""); /* this worker's id follows the prefix */
    const char *self = f->keys.processing + strlen(prefix);
    return lease_processing_chunks(f->conn, f->settings->queue, &f->keys, self, NULL) == 0;
}

/* True when the queue is sealed: its input is complete (false on an error: not sure). */
static bool fetch_sealed(fetch_t *f)
{
    return enqueue_sealed(f->conn, &f->keys, NULL, 0) == 1;
}

/* Sleeps up to ms, waking early when the fetcher is asked to stop. */
static void fetch_pause(fetch_t *f, int64_t ms)
{
    int64_t deadline = clock_now_ms() + ms;
    while (!atomic_load(&f->stop) && clock_now_ms() < deadline) {
        struct timespec ts = {0, 5 * 1000000L};
        nanosleep(&ts, NULL);
    }
}

/* True when the pending list is empty (false on an error: not sure). */
static bool fetch_pending_empty(fetch_t *f)
{
    redisReply *r = rconn_command_argv(f->conn, 2, (const char *[]){"LLEN", f->keys.pending}, NULL);
    bool empty = r && r->type == REDIS_REPLY_INTEGER && r->integer == 0;
    if (r) freeReplyObject(r);
    return empty;
}

/* Takes one chunk of a fetch.lua reply (an element of its array): takes its text over from the reply and adds it
 * to got[*n_got]. An unreadable chunk goes straight to the committer, which moves it to dead. */
static void fetch_take(fetch_t *f, redisReply *e, work_chunk_t **got, size_t *n_got)
{
    metrics_add(M_CHUNKS_FETCHED, 1);
    /* The chunk text is kept byte for byte (the commit script matches it in the processing list); it is taken from
     * the reply rather than copied, so a large chunk is not held twice (hiredis NUL-terminates it). */
    char *raw = e->str;
    size_t raw_len = e->len;
    e->str = NULL;
    e->len = 0;
    work_chunk_t *w = work_chunk_new(raw, raw_len, clock_now_ms());
    w->include_item = f->settings->include_item;
    if (w->dead_reason) {
        window_add(f->window, 1, w->raw_len);
        window_finish(f->window, 1);
        commit_push_chunk(f->commit, w);
    } else {
        got[(*n_got)++] = w;
    }
}

/* Takes the reply of one fetch.lua call. Returns how many chunks it moved to this worker (added to got), or -1
 * for a lost connection or an error reply, or FETCH_QUEUE_PAUSED when the queue is paused (nothing moved). Chunks over --max-chunk-bytes never reach the worker: the script moved
 * them to dead, and says how many. */
static int fetch_take_reply(fetch_t *f, redisReply *r, work_chunk_t **got, size_t *n_got)
{
    if (!r) {
        LOG_LIMITED(LL_WARN, "fetch: Redis connection lost: %s", rconn_error(f->conn));
        metrics_add(M_REDIS_ERRORS, 1);
        atomic_store(&f->connected, false);
        return -1;
    }
    int moved = -1;
    bool paused = r->type == REDIS_REPLY_STATUS && strcmp(r->str, "PAUSED") == 0;
    if (r->type != REDIS_REPLY_ERROR && paused != atomic_exchange(&f->queue_paused, paused))
        LOG(LL_INFO, paused ? "queue %s paused (chunkd pause): taking no new chunk, finishing those held"
                            : "queue %s resumed: taking chunks again", f->settings->queue);
    if (paused) {
        moved = FETCH_QUEUE_PAUSED;
    } else if (r->type == REDIS_REPLY_ARRAY && r->elements >= 1 &&
               r->element[r->elements - 1]->type == REDIS_REPLY_INTEGER) {
        moved = 0;
        for (size_t i = 0; i + 1 < r->elements; i++) {
            if (r->element[i]->type != REDIS_REPLY_STRING) continue;
            fetch_take(f, r->element[i], got, n_got);
            moved++;
        }
        long long refused = r->element[r->elements - 1]->integer;
        if (refused > 0) {
            metrics_add(M_CHUNKS_DEAD, (uint64_t)refused);
            LOG(LL_WARN, "%lld chunks larger than --max-chunk-bytes %lld went from %s to %s unread, whole (their "
                         "items can be requeued with chunkd requeue)", refused, f->settings->max_chunk_bytes,
                f->keys.pending, f->keys.dead);
        }
    } else {
        LOG_LIMITED(LL_ERROR, "fetch: moving chunks failed: %.300s", r->type == REDIS_REPLY_ERROR ? r->str : "bad reply");
    }
    freeReplyObject(r);
    return moved;
}

/* Learns, in one round trip, each fetched chunk's delivery count and checkpoint. Returns 0, or -1 when the
 * connection was lost or Redis answered an error (e.g. LOADING after a restart): a chunk must not run without
 * its checkpoint, or it would redo (and write again) items an earlier delivery committed. */
static int fetch_checkpoints(fetch_t *f, work_chunk_t **got, size_t n)
{
    char done_key[KEYS_MAX];
    for (size_t i = 0; i < n; i++) {
        keys_done(done_key, sizeof done_key, f->settings->queue, got[i]->ckpt);
        /* Counted once: a retry after a failure only reads the count. */
        const char *incr[] = {"HINCRBY", f->keys.deliveries, got[i]->ckpt, "1"};
        const char *hget[] = {"HGET", f->keys.deliveries, got[i]->ckpt};
        const char *get[] = {"GET", done_key};
        if (got[i]->deliveries > 0) rconn_append_argv(f->conn, 3, hget, NULL);
        else rconn_append_argv(f->conn, 4, incr, NULL);
        rconn_append_argv(f->conn, 2, get, NULL);
    }
    int rc = 0;
    for (size_t i = 0; i < n && rconn_connected(f->conn); i++) {
        redisReply *d = rconn_get_reply(f->conn);
        redisReply *b = d ? rconn_get_reply(f->conn) : NULL;
        work_chunk_t *w = got[i];
        if (d && d->type == REDIS_REPLY_INTEGER && !w->deliveries)
            w->deliveries = d->integer; /* counted once, even if the checkpoint read failed */
        bool ok = d && b && w->deliveries > 0 && d->type != REDIS_REPLY_ERROR &&
                  (b->type == REDIS_REPLY_STRING || b->type == REDIS_REPLY_NIL);
        if (!ok) {
            if (d && b)
                LOG_LIMITED(LL_ERROR, "fetch: reading chunk %s's checkpoint failed: %.300s", w->decoded.id,
                            d->type == REDIS_REPLY_ERROR ? d->str : b->type == REDIS_REPLY_ERROR ? b->str : "bad reply");
            rc = -1;
        } else {
            w->checkpointed = b->type == REDIS_REPLY_STRING;
            work_chunk_apply_checkpoint(w, w->checkpointed ? (const unsigned char *)b->str : NULL,
                                        w->checkpointed ? b->len : 0);
        }
        if (d) freeReplyObject(d);
        if (b) freeReplyObject(b);
    }
    if (!rconn_connected(f->conn)) rc = -1;
    if (rc == 0)
        for (size_t i = 0; i < n; i++) metrics_add(M_ITEMS_SKIPPED, got[i]->decoded.n_items - got[i]->n_run);
    return rc;
}

/* Hands fetched chunks to the loops once their checkpoints are known. Takes ownership of got[0..n). */
static void fetch_deliver(fetch_t *f, work_chunk_t **got, size_t n, size_t *largest, size_t *largest_bytes)
{
    if (n == 0) return;
    /* Until the checkpoints are known (a retry only reads the delivery counts it already incremented). */
    while (fetch_checkpoints(f, got, n)) {
        metrics_add(M_REDIS_ERRORS, 1);
        bool lost = !rconn_connected(f->conn);
        if (lost) LOG_LIMITED(LL_WARN, "fetch: Redis connection lost: %s", rconn_error(f->conn));
        if (lost ? fetch_connect(f, NULL, 0) != 0 : (fetch_pause(f, 200), atomic_load(&f->stop))) {
            /* Stopping: the chunks stay in the processing list; they are given back at exit. */
            for (size_t i = 0; i < n; i++) work_chunk_free(got[i]);
            return;
        }
    }
    long long max = f->settings->max_deliveries;
    for (size_t i = 0; i < n; i++) {
        work_chunk_t *w = got[i];
        if (max > 0 && w->deliveries > max && w->n_run > 0) {
            char why[200];
            snprintf(why, sizeof why,
                     "chunk delivered %lld times, more than --max-deliveries %lld (workers died or lost their lease "
                     "while running it)", w->deliveries, max);
            w->poison = xstrdup(why);
            metrics_add(M_CHUNKS_POISONED, 1);
            LOG(LL_WARN, "chunk %s: %s; its %zu remaining items go to %s", w->decoded.id, why, w->n_run,
                f->keys.dead);
        }
        window_add(f->window, work_chunk_weight(w), w->raw_len);
        if (w->n_run == 0) window_finish(f->window, 1); /* nothing to run: only the final commit is left */
        if (work_chunk_weight(w) > *largest) *largest = work_chunk_weight(w);
        if (w->raw_len > *largest_bytes) *largest_bytes = w->raw_len;
        LOG(LL_DEBUG, "fetched chunk %s (%zu items, %zu to run, delivery %lld)", w->decoded.id, w->decoded.n_items,
            w->n_run, w->deliveries);
        sched_submit(least_loaded(f), w);
    }
}

/* After a fetch that took chunks in round_trip_ms (the fetch script and the checkpoints): lets the window take
 * ahead what finishes during FETCH_AHEAD_MARGIN such fetches at the current finishing rate, so that the places are
 * refilled from chunks already here while the next fetch is on its way (a distant Redis: a few ms per round trip
 * leave thousands of places idle at --concurrency 10000). Near Redis this is about one chunk, as before. */
static void fetch_plan_ahead(fetch_t *f, int64_t round_trip_ms)
{
    int64_t now = clock_now_ms();
    uint64_t finished = window_finished_total(f->window);
    if (f->rate_since_ms == 0) {
        f->rate_since_ms = now;
        f->rate_finished = finished;
    } else if (now - f->rate_since_ms >= FETCH_RATE_SAMPLE_MS) {
        double rate = (double)(finished - f->rate_finished) / (double)(now - f->rate_since_ms);
        f->finished_per_ms = f->finished_per_ms > 0 ? (f->finished_per_ms + rate) / 2 : rate;
        f->rate_since_ms = now;
        f->rate_finished = finished;
    }
    double ahead = f->finished_per_ms * (double)(round_trip_ms > 0 ? round_trip_ms : 1) * FETCH_AHEAD_MARGIN;
    window_set_ahead(f->window, ahead > 0 ? (size_t)ahead : 0);
}

/* redis-sentinel://: after the master moved (a failover), the new master may still list in this worker's processing
 * list chunks whose final commit the old one acknowledged and lost; the worker no longer holds them, and they would
 * stay there for as long as its lease lives. So it takes no new chunk until it holds none, then gives back what the
 * list still has (fetch_reclaim), as it does with the orphans of a lost reply. Returns true while that is pending:
 * the caller takes no chunk. */
static bool fetch_after_master_move(fetch_t *f)
{
    long long moves = rconn_master_moves(f->conn);
    if (moves == f->master_moves) return false;
    if (window_held(f->window) > 0) {
        window_wait_empty(f->window, clock_now_ms() + 200);
        return true;
    }
    long long reclaimed = fetch_reclaim(f->conn, &f->keys);
    if (reclaimed < 0) return true;
    LOG(LL_INFO, "fetch: the Redis master moved; %lld chunks this worker no longer held went back from %s to %s",
        reclaimed, f->keys.processing, f->keys.pending);
    f->master_moves = moves;
    return false;
}

/* Queues the results backlog's check (backlog.lua) on the fetch connection, with Redis's maxmemory when it is due;
 * fetch_note_backlog reads its reply. */
static void fetch_ask_backlog(fetch_t *f)
{
    f->asked_maxmemory = clock_now_ms() >= f->next_maxmemory_ms;
    backlog_append(f->conn, &f->keys, f->asked_maxmemory);
}

/* Learns the results backlog from a backlog.lua reply (takes r) and pauses or resumes fetching: while the results
 * stream holds more than --max-results-backlog result lines, or its lines take more than the cap in bytes
 * (backlog_bytes_cap), the worker takes no new chunk, so a stopped collector cannot let the workers grow Redis
 * without bound. Logs each change; /readyz says why while it lasts. */
static void fetch_note_backlog(fetch_t *f, redisReply *r, bool *paused)
{
    char why[sizeof f->backlog_why] = "";
    int rc = r ? backlog_take_reply(r, &f->backlog, why, sizeof why) : -1;
    if (r) freeReplyObject(r);
    if (rc < 0) {
        if (r) LOG_LIMITED(LL_WARN, "fetch: %s", why);
        return; /* a lost connection: the fetch's own reply says so */
    }
    if (f->asked_maxmemory) f->next_maxmemory_ms = clock_now_ms() + FETCH_MAXMEMORY_MS;
    if (rc > 0 && !f->told_maxmemory) {
        f->told_maxmemory = true;
        LOG(LL_WARN, "%s; the results backlog's cap in bytes is the default %lld (give the worker's Redis user "
                     "+info|memory, see deploy/redis/chunkd.acl, or set --max-results-backlog-bytes)", why,
            BACKLOG_DEFAULT_BYTES);
    }
    bool over = backlog_over(&f->backlog, f->settings->max_results_backlog, f->settings->max_results_backlog_bytes,
                             f->keys.results, why, sizeof why);
    if (over && !*paused) LOG(LL_WARN, "fetching paused: %s", why);
    else if (!over && *paused)
        LOG(LL_INFO, "fetching resumed: %s holds %lld results (%lld bytes)", f->keys.results, f->backlog.lines,
            f->backlog.bytes);
    if (over) {
        pthread_mutex_lock(&f->why_mu);
        snprintf(f->backlog_why, sizeof f->backlog_why, "%s", why);
        pthread_mutex_unlock(&f->why_mu);
    }
    *paused = over;
    atomic_store(&f->backlog_full, over);
    metrics_gauge_set(G_FETCH_PAUSED, over);
    metrics_gauge_set(G_RESULTS_BACKLOG_BYTES, f->backlog.bytes > 0 ? (uint64_t)f->backlog.bytes : 0);
    long long cap = backlog_bytes_cap(f->settings->max_results_backlog_bytes, f->backlog.maxmemory);
    metrics_gauge_set(G_RESULTS_BACKLOG_BYTES_CAP, (uint64_t)cap);
}

/* Pending was empty. With --exit-when-empty the worker is done once the queue is sealed (its input complete), it
 * holds nothing and no processing list has chunks: poll briefly, so it exits as soon as its last chunk is
 * committed; while the queue is open it waits for the seal, looking again after *poll_ms (doubled up to
 * --fetch-block-ms). Otherwise orphans of a lost reply are given back while this worker holds nothing, once per
 * --fetch-block-ms (*last_reclaim_ms), and the next look waits *poll_ms, doubled each time up to --fetch-block-ms. */
static void fetch_found_pending_empty(fetch_t *f, int64_t *poll_ms, int64_t *last_reclaim_ms)
{
    int64_t next_poll_ms = *poll_ms * 2 > f->settings->fetch_block_ms ? f->settings->fetch_block_ms : *poll_ms * 2;
    if (f->settings->exit_when_empty) {
        bool sealed = true;
        if (window_held(f->window) == 0) {
            long long reclaimed = fetch_reclaim(f->conn, &f->keys);
            /* Sealed first: every chunk of a sealed queue was pushed before the seal, so pending, read after it,
             * has them all. Chunks held by other workers are not done yet: one of them may die, and its chunks
             * come back here when its lease expires. Pending again last: a reaper may have moved a dead worker's
             * chunks there since the fetch. */
            sealed = reclaimed != 0 || fetch_sealed(f);
            if (!sealed && !f->told_open) {
                f->told_open = true;
                LOG(LL_INFO, "queue %s is empty but not sealed: --exit-when-empty waits until its input is complete "
                             "(an enqueue that reaches the end of its input seals it, or `chunkd seal --queue %s`)",
                    f->settings->queue, f->settings->queue);
            }
            if (reclaimed == 0 && sealed && fetch_others_idle(f) && fetch_pending_empty(f) &&
                !atomic_exchange(&f->found_empty, true))
                sig_wake(); /* the main thread polls worker_idle() in sig_wait(): it exits now */
            if (reclaimed != 0) fetch_pause(f, reclaimed < 0 ? 500 : 0);
        }
        if (!sealed) { /* open: chunks may come at any time, like a worker without --exit-when-empty */
            fetch_pause(f, *poll_ms);
            *poll_ms = next_poll_ms;
        } else if (atomic_load(&f->found_empty)) fetch_pause(f, 200);
        else if (window_held(f->window) == 0) fetch_pause(f, 20); /* others' chunks: look again soon */
        else window_wait_empty(f->window, clock_now_ms() + 20); /* back as soon as the last commit is done */
        return;
    }
    if (window_held(f->window) == 0 && clock_now_ms() - *last_reclaim_ms >= f->settings->fetch_block_ms) {
        fetch_reclaim(f->conn, &f->keys);
        *last_reclaim_ms = clock_now_ms();
    }
    fetch_pause(f, *poll_ms);
    *poll_ms = next_poll_ms;
}

static void *fetch_main(void *arg)
{
    fetch_t *f = arg;
    char cap[32];
    snprintf(cap, sizeof cap, "%lld", f->settings->max_chunk_bytes);
    /* The largest chunk seen: the room the next one may need. Until a chunk is seen, take one at a time, so
     * --concurrency holds from the first fetch. */
    size_t largest = 0, largest_bytes = 0;
    const bool backlog_cap = f->settings->max_results_backlog > 0 || f->settings->max_results_backlog_bytes != 0;
    bool paused = false;
    /* No blocking move: BLMOVE would hand over a chunk over --max-chunk-bytes before anything could refuse it.
     * An empty queue is looked at again after FETCH_POLL_MIN_MS, doubling up to --fetch-block-ms. */
    int64_t poll_ms = FETCH_POLL_MIN_MS, last_reclaim_ms = 0;
    work_chunk_t *got[FETCH_PIPELINE_MAX];
    while (!atomic_load(&f->stop)) {
        if (!window_wait_room(f->window, largest ? largest : 1, 200)) continue;
        if (!rconn_connected(f->conn) && fetch_connect(f, NULL, 0)) break;
        if (fetch_after_master_move(f)) continue;
        /* A handler that cannot run items (exec: its command keeps failing at start) takes no more work: the
         * chunks stay in pending for workers that can. */
        char why[256];
        if (f->handler->ready && f->handler_shared && !f->handler->ready(f->handler_shared, why, sizeof why)) {
            fetch_pause(f, 200);
            continue;
        }
        if (paused) {
            fetch_pause(f, 200);
            fetch_ask_backlog(f);
            fetch_note_backlog(f, rconn_get_reply(f->conn), &paused);
            continue;
        }
        /* Ask for as many chunks as surely fit, in one round trip. */
        size_t want = largest ? window_room(f->window) / largest : 1;
        size_t want_bytes = largest_bytes ? window_room_bytes(f->window) / largest_bytes : want;
        if (want_bytes < want) want = want_bytes;
        if (want < 1) want = 1;
        if (want > FETCH_PIPELINE_MAX) want = FETCH_PIPELINE_MAX;
        char want_s[24];
        snprintf(want_s, sizeof want_s, "%zu", want);
        const char *move[] = {"EVAL", script_fetch, "5", f->keys.pending, f->keys.processing, f->keys.dead,
                              f->keys.stats, f->keys.paused, want_s, cap};
        /* The backlog is checked in the same round trip, so it overshoots by at most one window. */
        int64_t fetch_start_ms = clock_now_ms();
        if (backlog_cap) fetch_ask_backlog(f);
        rconn_append_argv(f->conn, 10, move, NULL);
        if (backlog_cap) fetch_note_backlog(f, rconn_get_reply(f->conn), &paused);
        size_t n = 0;
        int moved = rconn_connected(f->conn) ? fetch_take_reply(f, rconn_get_reply(f->conn), got, &n) : -1;
        fetch_deliver(f, got, n, &largest, &largest_bytes);
        if (n > 0) fetch_plan_ahead(f, clock_now_ms() - fetch_start_ms);
        if (moved == FETCH_QUEUE_PAUSED) { /* the same wait as for a full backlog or an unready handler */
            fetch_pause(f, 200);
            continue;
        }
        if (moved < 0) {
            if (rconn_connected(f->conn)) fetch_pause(f, 500);
            continue;
        }
        if (moved > 0) {
            atomic_store(&f->found_empty, false);
            poll_ms = FETCH_POLL_MIN_MS;
            continue;
        }
        fetch_found_pending_empty(f, &poll_ms, &last_reclaim_ms);
    }
    return NULL;
}

int fetch_start(fetch_t *f, char *err, size_t errlen)
{
    if (fetch_connect(f, err, errlen)) return -1;
    int rc = pthread_create(&f->thread, NULL, fetch_main, f);
    if (rc) {
        snprintf(err, errlen, "cannot start the fetch thread: %s", strerror(rc));
        return -1;
    }
    f->started = true;
    return 0;
}

void fetch_stop(fetch_t *f)
{
    if (!f->started) return;
    atomic_store(&f->stop, true);
    pthread_join(f->thread, NULL);
    f->started = false;
}

bool fetch_found_empty(fetch_t *f) { return atomic_load(&f->found_empty); }
bool fetch_connected(fetch_t *f) { return atomic_load(&f->connected); }
bool fetch_queue_paused(fetch_t *f) { return atomic_load(&f->queue_paused); }

bool fetch_backlog_full(fetch_t *f, char *why, size_t whylen)
{
    if (!atomic_load(&f->backlog_full)) return false;
    pthread_mutex_lock(&f->why_mu);
    snprintf(why, whylen, "%s", f->backlog_why);
    pthread_mutex_unlock(&f->why_mu);
    return true;
}

void fetch_free(fetch_t *f)
{
    if (!f) return;
    fetch_stop(f);
    rconn_free(f->conn);
    pthread_mutex_destroy(&f->why_mu);
    free(f);
}
