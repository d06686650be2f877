/* worker: see worker.h. */
#include "worker.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/random.h>
#include <unistd.h>

#include "backlog.h"
#include "clock.h"
#include "commit.h"
#include "fetch.h"
#include "handler.h"
#include "keys.h"
#include "httpd.h"
#include "lease.h"
#include "log.h"
#include "metrics.h"
#include "loop.h"
#include "scheduler.h"
#include "ratelimit.h"
#include "rconn.h"
#include "scripts.h"
#include "sig.h"
#include "window.h"
#include "work.h"
#include "xalloc.h"

struct worker {
    const settings_t *settings;
    char id[256];
    keys_t keys;
    window_t *window;
    sched_t **loops;              /* one scheduler per event-loop thread */
    size_t n_loops;
    commit_t *commit;
    fetch_t *fetch;
    ratelimit_t *ratelimit;      /* NULL without --rate-limit and --max-inflight-global */
    sched_places_t *places;      /* --concurrency, shared by the loops */
    bool registered;
    const handler_t *handler;
    void *handler_shared;        /* owned: from handler->init */
    atomic_bool draining;        /* from the first signal: /readyz turns 503 */
    atomic_bool starting;        /* until worker_start() succeeds: live (no thread to watch yet), not ready */
    httpd_t *httpd;              /* NULL when --http-port is 0 */
    pthread_t monitor;           /* reads the queue gauges from Redis every few seconds */
    bool monitor_started;
    atomic_bool monitor_stop;
    atomic_llong redis_ok_ms;    /* monotonic time of the monitor's last successful PING */
    pthread_mutex_t wait_mu;     /* guards wait_err: written by main while it waits for Redis, read by /readyz */
    char wait_err[256];          /* why Redis cannot be reached yet ("" before the first failed attempt) */
};

#define WORKER_LOOP_STALL_MS 5000  /* a loop silent for longer is stuck (loops turn at least once a second) */
#define WORKER_MONITOR_MS 5000     /* how often the queue gauges are read */
#define WORKER_PING_MS 1000        /* how often Redis is pinged for /readyz */
#define WORKER_DRAIN_GRACE_MS 5000 /* after --drain-timeout-ms, how long the committer may still take */
#define WORKER_WAIT_LOG_MS 5000    /* at start, one line per this while Redis cannot be reached */

static bool worker_live(void *arg, char *why, size_t whylen)
{
    worker_t *w = arg;
    if (atomic_load(&w->starting)) return true;
    int64_t now = clock_now_ms();
    for (size_t i = 0; i < w->n_loops; i++) {
        if (w->loops[i] && now - loop_heartbeat_ms(sched_loop(w->loops[i])) > WORKER_LOOP_STALL_MS) {
            snprintf(why, whylen, "event loop %zu has not turned for %lld ms", i,
                     (long long)(now - loop_heartbeat_ms(sched_loop(w->loops[i]))));
            return false;
        }
    }
    int64_t commit_silence = now - commit_heartbeat_ms(w->commit);
    if (commit_silence > w->settings->redis_timeout_ms + WORKER_LOOP_STALL_MS) {
        snprintf(why, whylen, "the committer has been stuck for %lld ms", (long long)commit_silence);
        return false;
    }
    return true;
}

/* How long a write refusal (rconn_refusal_error) keeps the worker unready: the lease is written every third of
 * --lease-ms, so a Redis that still refuses writes refuses one again within this window. */
static long long worker_refusal_window_ms(const worker_t *w)
{
    long long renew = w->settings->lease_ms / 3;
    return (renew > WORKER_PING_MS ? renew : WORKER_PING_MS) + 2LL * WORKER_PING_MS;
}

static bool worker_ready(void *arg, char *why, size_t whylen)
{
    worker_t *w = arg;
    if (atomic_load(&w->starting)) {
        pthread_mutex_lock(&w->wait_mu);
        snprintf(why, whylen, "waiting for Redis%s%s", w->wait_err[0] ? ": " : "", w->wait_err);
        pthread_mutex_unlock(&w->wait_mu);
        return false;
    }
    if (atomic_load(&w->draining)) return snprintf(why, whylen, "draining"), false;
    if (!w->fetch || !fetch_connected(w->fetch) || !commit_connected(w->commit) ||
        clock_now_ms() - atomic_load(&w->redis_ok_ms) > WORKER_PING_MS + w->settings->redis_timeout_ms)
        return snprintf(why, whylen, "not connected to Redis"), false;
    char refusal[160];
    if (rconn_refused_recently(worker_refusal_window_ms(w), refusal, sizeof refusal))
        return snprintf(why, whylen, "Redis refuses writes: %s", refusal), false;
    if (w->handler->ready && w->handler_shared && !w->handler->ready(w->handler_shared, why, whylen)) return false;
    if (fetch_queue_paused(w->fetch)) return snprintf(why, whylen, "queue paused"), false;
    if (fetch_backlog_full(w->fetch, why, whylen)) return false;
    return true;
}

/* The monitor thread, the worker's liveness towards Redis and the others: every WORKER_PING_MS it PINGs (for
 * /readyz), renews this worker's lease when a third of --lease-ms has passed (through the drain too: worker_drain
 * stops this thread before releasing the lease) and takes its turn as the lease reaper (lease_reap: the workers
 * whose lease expired get their chunks given back); every WORKER_MONITOR_MS it reads the queue-wide gauges in one
 * pipelined round trip. */
static void *worker_monitor_main(void *arg)
{
    worker_t *w = arg;
    rconn_t *c = rconn_new(w->settings->redis_url, w->settings->redis_timeout_ms);
    /* PING, the lease and the reaper on a connection of their own, never behind the gauges' round trips: a stalled
     * Redis shows on /readyz within --redis-timeout-ms plus WORKER_PING_MS. */
    rconn_t *ping = rconn_new(w->settings->redis_url, w->settings->redis_timeout_ms);
    int64_t next_gauges = 0, next_renew = clock_now_ms() + w->settings->lease_ms / 3;
    while (!atomic_load(&w->monitor_stop)) {
        char why[64];
        if (!rconn_connected(ping)) rconn_connect(ping, NULL, 0);
        redisReply *pong = rconn_connected(ping) ? rconn_command(ping, "PING") : NULL;
        if (pong && pong->type == REDIS_REPLY_STATUS) atomic_store(&w->redis_ok_ms, clock_now_ms());
        if (pong) freeReplyObject(pong);
        /* The lease, every third of --lease-ms, draining or not: it is held until the drain has committed or given
         * back everything (worker_drain stops this thread before it releases the lease). Then, if it is our turn,
         * reap workers whose lease expired. */
        if (rconn_connected(ping) && clock_now_ms() >= next_renew) {
            char reason[256];
            int held = lease_renew(ping, &w->keys, w->id, w->settings->lease_ms, reason, sizeof reason);
            if (held < 0) {
                metrics_add(M_REDIS_ERRORS, 1);
                LOG_LIMITED(LL_WARN, "cannot renew this worker's lease: %.160s", reason);
            }
            if (held == 0)
                LOG(LL_WARN, "this worker's lease had expired (paused, or cut off from Redis?): chunks it held may "
                             "have been reaped, and their results will be dropped at commit; registered again");
            if (held >= 0) next_renew = clock_now_ms() + w->settings->lease_ms / 3;
        }
        long long reaped_workers;
        if (rconn_connected(ping))
            lease_reap(ping, w->settings->queue, &w->keys, w->id, WORKER_PING_MS, false, &reaped_workers);
        metrics_gauge_set(G_READY, worker_ready(w, why, sizeof why));
        bool gauges_due = clock_now_ms() >= next_gauges;
        if (gauges_due) next_gauges = clock_now_ms() + WORKER_MONITOR_MS;
        if (gauges_due && !rconn_connected(c) && rconn_connect(c, NULL, 0)) metrics_add(M_REDIS_ERRORS, 1);
        if (gauges_due && rconn_connected(c)) {
            /* The results backlog (result lines) as fetch and status read it: backlog.lua, second. */
            rconn_append_argv(c, 2, (const char *[]){"LLEN", w->keys.pending}, NULL);
            backlog_append(c, &w->keys, false);
            rconn_append_argv(c, 2, (const char *[]){"LLEN", w->keys.dead}, NULL);
            const char *hmget[] = {"HMGET", w->keys.stats, "enqueued", "done", "failed"};
            rconn_append_argv(c, 5, hmget, NULL);
            redisReply *r[4] = {0};
            bool ok = true;
            for (size_t i = 0; i < 4; i++) {
                r[i] = rconn_get_reply(c);
                if (!r[i] || r[i]->type == REDIS_REPLY_ERROR) ok = false;
            }
            backlog_t backlog = {.maxmemory = -1};
            char why_not[300];
            if (ok && backlog_take_reply(r[1], &backlog, why_not, sizeof why_not) < 0) ok = false;
            if (ok && r[3]->type == REDIS_REPLY_ARRAY && r[3]->elements == 3) {
                metrics_gauge_set(G_QUEUE_PENDING_CHUNKS, r[0]->integer);
                metrics_gauge_set(G_QUEUE_RESULTS_LENGTH, backlog.lines);
                metrics_gauge_set(G_QUEUE_DEAD_LENGTH, r[2]->integer);
                long long v[3];
                for (size_t i = 0; i < 3; i++) v[i] = r[3]->element[i]->str ? atoll(r[3]->element[i]->str) : 0;
                metrics_gauge_set(G_QUEUE_ENQUEUED_ITEMS, v[0]);
                metrics_gauge_set(G_QUEUE_DONE_ITEMS, v[1] + v[2]);
                metrics_gauge_set(G_QUEUE_BACKLOG_ITEMS, v[0] > v[1] + v[2] ? v[0] - v[1] - v[2] : 0);
            } else {
                metrics_add(M_REDIS_ERRORS, 1);
            }
            for (size_t i = 0; i < 4; i++)
                if (r[i]) freeReplyObject(r[i]);
            /* Chunks held by registered workers: one more pipelined round trip. */
            long long held = lease_processing_chunks(c, w->settings->queue, &w->keys, NULL, NULL);
            if (held >= 0) metrics_gauge_set(G_QUEUE_PROCESSING_CHUNKS, held);
        }
        /* Until the next PING, or sooner when the lease is due: a third of a short --lease-ms is less than the
         * PING interval, and a lease renewed only once per turn would run out while the worker is healthy. */
        int64_t now = clock_now_ms(), wake = now + WORKER_PING_MS;
        if (rconn_connected(ping) && next_renew < wake)
            wake = next_renew > now + 50 ? next_renew : now + 50;
        while (clock_now_ms() < wake && !atomic_load(&w->monitor_stop)) {
            struct timespec ts = {0, 50 * 1000000L};
            nanosleep(&ts, NULL);
        }
    }
    rconn_free(ping);
    rconn_free(c);
    return NULL;
}

/* Stops the monitor thread (idempotent): before the lease is released, so it cannot be renewed after. */
static void worker_monitor_stop(worker_t *w)
{
    if (!w->monitor_started) return;
    atomic_store(&w->monitor_stop, true);
    pthread_join(w->monitor, NULL);
    w->monitor_started = false;
}

static void worker_items_waiting(void *arg, long delta)
{
    worker_t *w = arg;
    window_waiting(w->window, delta);
}

static void worker_items_done(void *arg, work_item_t *list, size_t n_items)
{
    worker_t *w = arg;
    window_finish(w->window, n_items);
    commit_push(w->commit, list);
}

worker_t *worker_new(const settings_t *s)
{
    worker_t *w = xcalloc(1, sizeof *w);
    w->settings = s;
    atomic_init(&w->starting, true);
    pthread_mutex_init(&w->wait_mu, NULL);
    if (s->worker_id) {
        snprintf(w->id, sizeof w->id, "%s", s->worker_id);
    } else {
        char host[128] = "host";
        gethostname(host, sizeof host - 1);
        unsigned int rnd = 0;
        if (getrandom(&rnd, sizeof rnd, 0) != sizeof rnd) rnd = (unsigned int)clock_now_ms();
        snprintf(w->id, sizeof w->id, "%s-%d-%04x", host, (int)getpid(), rnd & 0xffff);
    }
    keys_init(&w->keys, s->queue);
    log_set_context(s->queue, w->id);
    keys_processing(w->keys.processing, sizeof w->keys.processing, s->queue, w->id);
    keys_lease(w->keys.lease, sizeof w->keys.lease, s->queue, w->id);
    w->window = window_new((size_t)s->concurrency, (size_t)s->max_held_bytes);
    w->handler = handler_find(s->handler);
    w->n_loops = handler_loop_count(w->handler, s);
    w->loops = xcalloc(w->n_loops, sizeof(sched_t *));
    w->commit = commit_new(s, &w->keys, w->window);
    return w;
}

const char *worker_id(const worker_t *w) { return w->id; }

/* Registers with a fresh lease (add) or gives both up (clean exit). */
static int worker_register(worker_t *w, bool add, char *err, size_t errlen)
{
    rconn_t *c = rconn_new(w->settings->redis_url, w->settings->redis_timeout_ms);
    int rc = rconn_connect(c, err, errlen);
    char why[256];
    if (rc == 0 && add && lease_renew(c, &w->keys, w->id, w->settings->lease_ms, why, sizeof why) < 0) {
        snprintf(err, errlen, "cannot register worker at %s: %s", rconn_addr(c), why);
        rc = -1;
    } else if (rc == 0 && add) {
        /* Nothing is held yet, so chunks already in this worker's processing list were left by an earlier process
         * with the same --worker-id that died: restarted within its lease, it would never be reaped. */
        const char *argv[] = {"EVAL", script_reclaim, "3", w->keys.processing, w->keys.pending, w->keys.stats};
        redisReply *r = rconn_command_argv(c, 6, argv, NULL);
        if (r && r->type == REDIS_REPLY_INTEGER && r->integer > 0)
            LOG(LL_WARN, "%lld chunks left in %s by an earlier worker %s went back to pending", r->integer,
                w->keys.processing, w->id);
        if (r) freeReplyObject(r);
        /* Nor are the slots of --max-inflight-global that it held: nothing of ours is in flight yet. */
        r = rconn_command(c, "HDEL %s %s", w->keys.inflight, w->id);
        if (r) freeReplyObject(r);
    } else if (rc == 0 && !add) {
        lease_release(c, &w->keys, w->id);
    }
    rconn_free(c);
    return rc;
}

/* This process's peak resident set (VmHWM), in KiB; 0 if unknown. Unlike getrusage(), it does not inherit the
 * peak of a parent that exec'ed chunkd. */
static long worker_peak_rss_kb(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return 0;
    char line[256];
    long kb = 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmHWM: %ld kB", &kb) == 1) break;
    fclose(f);
    return kb;
}

/* Waits until Redis serves commands, for up to --redis-wait-ms (0: forever; SETTINGS_NO_WAIT: one attempt), with
 * capped backoff and one log line per WORKER_WAIT_LOG_MS. Nothing is held yet, so SIGTERM/SIGINT just end the wait:
 * they are taken here. Redis refusing us (AUTH, SELECT) ends it at once. Returns 0, -1 with the reason in err, or
 * WORKER_STOPPED. */
static int worker_wait_for_redis(worker_t *w, char *err, size_t errlen)
{
    const settings_t *s = w->settings;
    rconn_t *c = rconn_new(s->redis_url, s->redis_timeout_ms);
    int64_t start = clock_now_ms(), next_log = start;
    long long backoff_ms = RCONN_BACKOFF_MIN_MS;
    char limit[64] = "--redis-wait-ms 0: no limit";
    if (s->redis_wait_ms > 0) snprintf(limit, sizeof limit, "for up to --redis-wait-ms %lld", s->redis_wait_ms);
    int rc = 0;
    unsigned attempt = 1;
    for (; rconn_connect_serving(c, err, errlen); attempt++) {
        long long waited = clock_now_ms() - start;
        pthread_mutex_lock(&w->wait_mu);
        snprintf(w->wait_err, sizeof w->wait_err, "%s", rconn_error(c));
        pthread_mutex_unlock(&w->wait_mu);
        if (rconn_refused(c) || s->redis_wait_ms == SETTINGS_NO_WAIT) {
            rc = -1;
            break;
        }
        if (s->redis_wait_ms > 0 && waited >= s->redis_wait_ms) {
            size_t n = strlen(err);
            snprintf(err + n, errlen - n, " (gave up after waiting %lld ms: --redis-wait-ms)", waited);
            rc = -1;
            break;
        }
        if (clock_now_ms() >= next_log) {
            LOG(LL_WARN, "%s; waiting for Redis (attempt %u, %lld s so far, %s)", err, attempt, waited / 1000, limit);
            next_log = clock_now_ms() + WORKER_WAIT_LOG_MS;
        }
        long long pause_ms = rconn_backoff_next(&backoff_ms);
        if (s->redis_wait_ms > 0 && pause_ms > s->redis_wait_ms - waited) pause_ms = s->redis_wait_ms - waited;
        if (sig_wait((int)pause_ms)) {
            snprintf(err, errlen, "signal while waiting for Redis at %s: exiting; nothing was taken", rconn_addr(c));
            rc = WORKER_STOPPED;
            break;
        }
    }
    if (rc == 0 && attempt > 1) LOG(LL_INFO, "Redis at %s answers after %u attempts; starting", rconn_addr(c), attempt);
    rconn_free(c);
    return rc;
}

int worker_start(worker_t *w, char *err, size_t errlen)
{
    const settings_t *s = w->settings;
    if (w->handler->init && w->handler->init(s, &w->handler_shared, err, errlen)) return WORKER_BAD_SETTINGS;
    /* The health port before any Redis work: a worker that cannot serve it fails having taken nothing, and one
     * that waits for Redis says so on /readyz meanwhile. */
    if (s->http_port > 0) {
        httpd_probe_t probe = {worker_live, worker_ready, w};
        w->httpd = httpd_start(s->http_addr, (int)s->http_port, &probe, err, errlen);
        if (!w->httpd) return -1;
        LOG(LL_INFO, "serving /healthz, /readyz and /metrics on %s", httpd_where(w->httpd));
    }
    int waited = worker_wait_for_redis(w, err, errlen);
    if (waited) return waited;
    w->ratelimit = ratelimit_new(s, &w->keys, w->id);
    w->places = sched_places_new((size_t)s->concurrency);
    for (size_t i = 0; i < w->n_loops; i++) {
        w->loops[i] = sched_new((int)i, w->handler, w->handler_shared, s, worker_items_done, w);
        sched_set_ratelimit(w->loops[i], w->ratelimit);
        sched_set_waiting_fn(w->loops[i], worker_items_waiting);
        sched_set_places(w->loops[i], w->places); /* n_loops is at most SCHED_PLACES_MAX_LOOPS */
    }
    w->fetch = fetch_new(s, &w->keys, w->window, w->loops, w->n_loops, w->commit, w->handler, w->handler_shared);
    if (worker_register(w, true, err, errlen)) return -1;
    w->registered = true;
    if (commit_start(w->commit, err, errlen)) return -1;
    if (w->ratelimit && ratelimit_start(w->ratelimit)) {
        snprintf(err, errlen, "cannot start the rate limit's thread");
        return -1;
    }
    for (size_t i = 0; i < w->n_loops; i++) {
        if (sched_start(w->loops[i])) {
            snprintf(err, errlen, "cannot start event loop %zu", i);
            return -1;
        }
    }
    if (fetch_start(w->fetch, err, errlen)) return -1;
    atomic_init(&w->monitor_stop, false);
    atomic_init(&w->redis_ok_ms, clock_now_ms());
    if (pthread_create(&w->monitor, NULL, worker_monitor_main, w) == 0) w->monitor_started = true;
    atomic_store(&w->starting, false);
    LOG(LL_INFO, "worker %s: queue %s, handler %s, %zu loops, concurrency %lld", w->id, w->settings->queue,
        w->settings->handler, w->n_loops, w->settings->concurrency);
    return 0;
}

void worker_begin_drain(worker_t *w)
{
    atomic_store(&w->draining, true);
    metrics_gauge_set(G_READY, 0);
}

bool worker_idle(worker_t *w) { return w->fetch && fetch_found_empty(w->fetch); }

bool worker_denied(char *why, size_t whylen) { return rconn_denied(why, whylen); }

void worker_abort(worker_t *w) { commit_abort(w->commit); }

int worker_drain(worker_t *w)
{
    int64_t deadline = clock_now_ms() + w->settings->drain_timeout_ms;
    atomic_store(&w->draining, true);
    metrics_gauge_set(G_READY, 0);
    if (w->fetch) fetch_stop(w->fetch);
    size_t held = window_held(w->window);
    if (held) LOG(LL_INFO, "draining: %zu items held (running or committing), waiting up to %lld ms", held, w->settings->drain_timeout_ms);
    bool empty = window_wait_empty(w->window, deadline);
    size_t requeued = 0;
    for (size_t i = 0; i < w->n_loops && w->loops[i]; i++) sched_request_stop(w->loops[i]);
    for (size_t i = 0; i < w->n_loops && w->loops[i]; i++) {
        sched_stop(w->loops[i]);
        list_t unfinished;
        list_init(&unfinished);
        sched_take_unfinished(w->loops[i], &unfinished);
        list_for_each_safe(n, tmp, &unfinished) {
            list_remove(n);
            work_chunk_t *c = container_of(n, work_chunk_t, sched_link);
            c->disposition = WORK_REQUEUE;
            commit_push_chunk(w->commit, c);
            requeued++;
        }
    }
    if (!empty) LOG(LL_WARN, "drain timeout: %zu unfinished chunks go back to pending", requeued);
    /* Bounded even with Redis gone for good: past the grace the committer gives up (the chunks stay in this
     * worker's processing list, and the reaper gives them back once the lease runs out). */
    int rc = commit_stop(w->commit, deadline + WORKER_DRAIN_GRACE_MS);
    if (window_held(w->window)) rc = -1;
    char err[512];
    if (rc == 0) {
        /* Nothing is held: whatever is left in the processing list is orphaned; give it back. */
        rconn_t *c = rconn_new(w->settings->redis_url, w->settings->redis_timeout_ms);
        if (rconn_connect(c, err, sizeof err) || fetch_reclaim(c, &w->keys) < 0) rc = -1;
        rconn_free(c);
    }
    /* The lease is held until here: renewed through the whole drain, so no reaper takes back what still runs. A
     * drain that could not settle everything keeps it registered: its chunks are reaped when the lease runs out. */
    worker_monitor_stop(w);
    if (w->registered && rc == 0 && worker_register(w, false, err, sizeof err)) LOG(LL_WARN, "%s", err);
    if (rc) LOG(LL_ERROR, "drain incomplete: chunks held by worker %s stay in %s until its lease (%lld ms) runs out "
                          "and a reaper (another worker, or chunkd recover) gives them back", w->id,
                w->keys.processing, w->settings->lease_ms);
    LOG(LL_INFO, "worker %s stopped; peak RSS %.1f MB", w->id, (double)worker_peak_rss_kb() / 1024.0);
    return rc;
}

void worker_free(worker_t *w)
{
    if (!w) return;
    log_set_context(NULL, NULL);
    httpd_stop(w->httpd);
    worker_monitor_stop(w);
    if (w->fetch) fetch_free(w->fetch);
    /* The committer's queue may hold items of chunks a loop still owns: free it while those chunks exist. */
    for (size_t i = 0; i < w->n_loops; i++)
        if (w->loops[i]) sched_stop(w->loops[i]);
    commit_free(w->commit);
    for (size_t i = 0; i < w->n_loops; i++)
        if (w->loops[i]) sched_free(w->loops[i]);
    ratelimit_free(w->ratelimit); /* after the loops, which use it */
    sched_places_free(w->places);
    if (w->handler->fini && w->handler_shared) w->handler->fini(w->handler_shared);
    free(w->loops);
    window_free(w->window);
    pthread_mutex_destroy(&w->wait_mu); /* after httpd_stop: /readyz no longer reads it */
    free(w);
}
