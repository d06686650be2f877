/* ratelimit: see ratelimit.h.
 *
 * Invariants: `tokens` are leased from Redis and not yet used (loops take them; a throttle drops them). For
 * slots, held_slots (the thread's) = slots in use + slots_free + slots_returned: loops move a slot from free to
 * in use and back, or to returned while slots_owed > 0 (over the fair cap); only the thread changes held_slots,
 * after a round trip that also tells Redis. */
#include "ratelimit.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "log.h"
#include "metrics.h"
#include "ratelimit_math.h"
#include "rconn.h"
#include "scripts.h"
#include "xalloc.h"

#define RATELIMIT_IDLE_MS 100      /* the thread's longest sleep (it is woken when an item starts waiting) */
#define RATELIMIT_SLOT_POLL_MS 10  /* asking again for slots while items wait for one */
#define RATELIMIT_RETRY_MS 500     /* after a Redis error */

struct ratelimit {
    const settings_t *settings;
    const keys_t *keys;
    char worker_id[256];
    double limit_per_s;              /* 0: no rate limit */
    double burst;
    long long max_inflight;          /* 0: no concurrency cap */

    atomic_long tokens;              /* leased, not yet used */
    atomic_long waiting;             /* items waiting in the loops' FIFOs */
    atomic_long throttle_ms;         /* a throttle to report: -2 none, -1 without Retry-After, else Retry-After */
    atomic_long slots_free;          /* held, not in use */
    atomic_long slots_owed;          /* slots to give back as calls end (over the fair cap) */
    atomic_long slots_returned;      /* slots given up by loops, to tell Redis */

    /* The thread's own. */
    rconn_t *conn;
    long held_slots;                 /* what Redis says this worker holds */
    long fair_cap;                   /* while slots are contended: the most one worker should hold; else 0 */
    int64_t next_take_ms;            /* no lease before (the bucket is empty, or paused) */
    long reserved;                   /* tokens granted ahead, usable from reserved_at_ms */
    int64_t reserved_at_ms;
    int64_t next_slots_ms;

    pthread_t thread;
    bool started;
    pthread_mutex_t mu;              /* with cond: wakes the thread */
    pthread_cond_t cond;
    bool stop;                       /* under mu */
    bool kicked;                     /* under mu: an item started waiting */
};

ratelimit_t *ratelimit_new(const settings_t *s, const keys_t *keys, const char *worker_id)
{
    double per_s = 0;
    if (s->rate_limit && s->rate_limit[0] && ratelimit_parse_rate(s->rate_limit, &per_s)) per_s = 0; /* checked */
    if (per_s == 0 && s->max_inflight_global == 0) return NULL;
    ratelimit_t *rl = xcalloc(1, sizeof *rl);
    rl->settings = s;
    rl->keys = keys;
    snprintf(rl->worker_id, sizeof rl->worker_id, "%s", worker_id);
    rl->limit_per_s = per_s;
    rl->burst = s->rate_burst > 0 ? (double)s->rate_burst : ratelimit_default_burst(per_s);
    rl->max_inflight = s->max_inflight_global;
    atomic_init(&rl->tokens, 0);
    atomic_init(&rl->waiting, 0);
    atomic_init(&rl->throttle_ms, -2);
    atomic_init(&rl->slots_free, 0);
    atomic_init(&rl->slots_owed, 0);
    atomic_init(&rl->slots_returned, 0);
    pthread_mutex_init(&rl->mu, NULL);
    clock_cond_init(&rl->cond);
    if (per_s > 0) metrics_gauge_set(G_RATE_LIMIT_CURRENT, (int64_t)llround(per_s * 1000));
    return rl;
}

/* ---- loops ---- */

static bool take_one(atomic_long *counter)
{
    long n = atomic_load(counter);
    while (n > 0)
        if (atomic_compare_exchange_weak(counter, &n, n - 1)) return true;
    return false;
}

bool ratelimit_try_acquire(ratelimit_t *rl, bool *slot)
{
    *slot = false;
    if (rl->max_inflight && !take_one(&rl->slots_free)) return false;
    if (rl->limit_per_s > 0 && !take_one(&rl->tokens)) {
        if (rl->max_inflight) atomic_fetch_add(&rl->slots_free, 1);
        return false;
    }
    *slot = rl->max_inflight > 0;
    return true;
}

void ratelimit_release_slot(ratelimit_t *rl)
{
    if (take_one(&rl->slots_owed)) atomic_fetch_add(&rl->slots_returned, 1);
    else atomic_fetch_add(&rl->slots_free, 1);
}

static void kick(ratelimit_t *rl)
{
    pthread_mutex_lock(&rl->mu);
    rl->kicked = true;
    pthread_cond_signal(&rl->cond);
    pthread_mutex_unlock(&rl->mu);
}

void ratelimit_wait(ratelimit_t *rl, long delta)
{
    long before = atomic_fetch_add(&rl->waiting, delta);
    if (delta > 0 && before <= 0) kick(rl);
}

void ratelimit_throttled(ratelimit_t *rl, long retry_after_ms)
{
    if (rl->limit_per_s <= 0) return;
    atomic_store(&rl->tokens, 0); /* this worker stops at once; the others at their next lease */
    long prev = atomic_load(&rl->throttle_ms);
    while (retry_after_ms > prev && !atomic_compare_exchange_weak(&rl->throttle_ms, &prev, retry_after_ms)) {
    }
    kick(rl);
}

/* ---- the thread ---- */

/* One ratelimit.lua call of op "take" or "throttle". Returns 0 with the reply's four integers, or -1. */
static int rate_call(ratelimit_t *rl, const char *op, long arg, long long out[4])
{
    char limit[32], burst[32], a[32];
    snprintf(limit, sizeof limit, "%.6f", rl->limit_per_s);
    snprintf(burst, sizeof burst, "%.6f", rl->burst);
    snprintf(a, sizeof a, "%ld", arg);
    const char *argv[] = {"EVAL", script_ratelimit, "3", rl->keys->rate, rl->keys->inflight, rl->keys->workers,
                          op, limit, burst, a};
    redisReply *r = rconn_command_argv(rl->conn, 10, argv, NULL);
    int rc = -1;
    if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 4) {
        for (size_t i = 0; i < 4; i++) out[i] = r->element[i]->integer;
        rc = 0;
    } else {
        LOG_LIMITED(LL_WARN, "rate limit: %s failed: %s", op,
                    r && r->type == REDIS_REPLY_ERROR ? r->str : rconn_error(rl->conn));
        metrics_add(M_REDIS_ERRORS, 1);
    }
    if (r) freeReplyObject(r);
    return rc;
}

static void rate_turn(ratelimit_t *rl, int64_t now)
{
    long long reply[4];
    long retry_after = atomic_exchange(&rl->throttle_ms, -2);
    if (retry_after > -2) {
        metrics_add(M_RATE_THROTTLES, 1);
        if (rate_call(rl, "throttle", retry_after, reply) == 0) {
            atomic_store(&rl->tokens, 0);
            rl->reserved = 0;
            metrics_gauge_set(G_RATE_LIMIT_CURRENT, reply[2]);
            if (reply[3] > 0) rl->next_take_ms = now + reply[3];
            LOG_LIMITED(LL_WARN, "rate limit: the upstream throttled (Retry-After %ld ms): shared rate now %.2f/s, "
                        "paused for %lld ms", retry_after, (double)reply[2] / 1000, reply[3]);
        } else {
            atomic_store(&rl->throttle_ms, retry_after); /* report it again next turn */
        }
    }
    if (rl->reserved && now >= rl->reserved_at_ms) {
        atomic_fetch_add(&rl->tokens, rl->reserved);
        rl->reserved = 0;
    }
    long need = atomic_load(&rl->waiting) - atomic_load(&rl->tokens);
    if (need <= 0 || rl->reserved || now < rl->next_take_ms) return;
    long want = ratelimit_block(rl->burst, need);
    metrics_add(M_RATE_LEASES, 1);
    if (rate_call(rl, "take", want, reply)) {
        rl->next_take_ms = now + RATELIMIT_RETRY_MS;
        return;
    }
    metrics_gauge_set(G_RATE_LIMIT_CURRENT, reply[2]);
    if (reply[0] > 0 && reply[1] > 0) { /* reserved ahead: usable after reply[1] ms */
        rl->reserved = (long)reply[0];
        rl->reserved_at_ms = now + reply[1];
    } else if (reply[0] > 0) {
        atomic_fetch_add(&rl->tokens, (long)reply[0]);
    }
    if (reply[0] > 0) metrics_add(M_RATE_TOKENS, (uint64_t)reply[0]);
    /* Some granted: ask again when they are usable, if more are needed. None: come back when a block can be. */
    rl->next_take_ms = reply[0] > 0 ? now : now + (reply[3] > 0 ? reply[3] : reply[1] > 0 ? reply[1] : 1);
}

static void slots_turn(ratelimit_t *rl, int64_t now)
{
    long waiting = atomic_load(&rl->waiting);
    bool give_back = waiting == 0 && atomic_load(&rl->slots_free) > 0;
    bool ask = waiting > 0 && atomic_load(&rl->slots_free) == 0 && now >= rl->next_slots_ms;
    if (!give_back && !ask && atomic_load(&rl->slots_returned) == 0) return;
    /* The spare slots are the thread's during the round trip: loops cannot take them meanwhile. */
    long spare = atomic_exchange(&rl->slots_free, 0) + atomic_exchange(&rl->slots_returned, 0);
    long used = rl->held_slots - spare;
    long wanted = used + (waiting < rl->max_inflight ? waiting : (long)rl->max_inflight);
    if (rl->fair_cap > 0 && wanted > rl->fair_cap) wanted = rl->fair_cap < used ? used : rl->fair_cap;
    char max[24], want_s[24], used_s[24];
    snprintf(max, sizeof max, "%lld", rl->max_inflight);
    snprintf(want_s, sizeof want_s, "%ld", wanted);
    snprintf(used_s, sizeof used_s, "%ld", used);
    const char *argv[] = {"EVAL", script_ratelimit, "3", rl->keys->rate, rl->keys->inflight, rl->keys->workers,
                          "slots", max, rl->worker_id, want_s, used_s};
    redisReply *r = rconn_command_argv(rl->conn, 11, argv, NULL);
    if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 2) {
        long held = (long)r->element[0]->integer, cap = (long)r->element[1]->integer;
        rl->held_slots = held;
        rl->fair_cap = cap;
        atomic_fetch_add(&rl->slots_free, held - used);
        atomic_store(&rl->slots_owed, cap > 0 && held > cap ? held - cap : 0);
        rl->next_slots_ms = held < wanted ? now + RATELIMIT_SLOT_POLL_MS : now;
        metrics_gauge_set(G_INFLIGHT_SLOTS, held);
    } else {
        /* Keep what was held: the spare slots go back to the loops. */
        atomic_fetch_add(&rl->slots_free, spare);
        rl->next_slots_ms = now + RATELIMIT_RETRY_MS;
        LOG_LIMITED(LL_WARN, "max-inflight-global: slots failed: %s",
                    r && r->type == REDIS_REPLY_ERROR ? r->str : rconn_error(rl->conn));
        metrics_add(M_REDIS_ERRORS, 1);
    }
    if (r) freeReplyObject(r);
}

static void *ratelimit_main(void *arg)
{
    ratelimit_t *rl = arg;
    for (;;) {
        int64_t now = clock_now_ms();
        int64_t wake = now + RATELIMIT_IDLE_MS;
        if (!rconn_connected(rl->conn) && rconn_connect(rl->conn, NULL, 0)) {
            wake = now + RATELIMIT_RETRY_MS;
        } else {
            if (rl->limit_per_s > 0) rate_turn(rl, now);
            if (rl->max_inflight > 0) slots_turn(rl, now);
            now = clock_now_ms();
            long waiting = atomic_load(&rl->waiting);
            if (rl->limit_per_s > 0 && rl->reserved && rl->reserved_at_ms < wake) wake = rl->reserved_at_ms;
            if (rl->limit_per_s > 0 && !rl->reserved && waiting > atomic_load(&rl->tokens) &&
                rl->next_take_ms < wake)
                wake = rl->next_take_ms;
            if (rl->max_inflight > 0 && waiting > 0 && atomic_load(&rl->slots_free) == 0 &&
                rl->next_slots_ms < wake)
                wake = rl->next_slots_ms;
            if (rl->max_inflight > 0 && (atomic_load(&rl->slots_returned) > 0 ||
                                         (waiting == 0 && atomic_load(&rl->slots_free) > 0)))
                wake = now + RATELIMIT_SLOT_POLL_MS;
        }
        pthread_mutex_lock(&rl->mu);
        if (wake > now && !rl->kicked && !rl->stop) {
            struct timespec ts = clock_deadline_ts(wake);
            pthread_cond_timedwait(&rl->cond, &rl->mu, &ts);
        }
        rl->kicked = false;
        bool stop = rl->stop;
        pthread_mutex_unlock(&rl->mu);
        if (stop) break;
    }
    return NULL;
}

int ratelimit_start(ratelimit_t *rl)
{
    rl->conn = rconn_new(rl->settings->redis_url, rl->settings->redis_timeout_ms);
    int rc = pthread_create(&rl->thread, NULL, ratelimit_main, rl);
    if (rc) {
        LOG(LL_ERROR, "rate limit: cannot start thread: %s", strerror(rc));
        return -1;
    }
    rl->started = true;
    if (rl->limit_per_s > 0)
        LOG(LL_INFO, "rate limit: %.3f calls/s across the queue, burst %.1f", rl->limit_per_s, rl->burst);
    if (rl->max_inflight > 0) LOG(LL_INFO, "max-inflight-global: %lld calls across the queue", rl->max_inflight);
    return 0;
}

void ratelimit_free(ratelimit_t *rl)
{
    if (!rl) return;
    if (rl->started) {
        pthread_mutex_lock(&rl->mu);
        rl->stop = true;
        pthread_cond_signal(&rl->cond);
        pthread_mutex_unlock(&rl->mu);
        pthread_join(rl->thread, NULL);
    }
    rconn_free(rl->conn);
    pthread_cond_destroy(&rl->cond);
    pthread_mutex_destroy(&rl->mu);
    free(rl);
}
