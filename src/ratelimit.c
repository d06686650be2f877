/* ratelimit: see ratelimit.h.
 *
 * Invariants: `tokens` are leased from Redis and not yet used (loops take them; a pause of the queue drops
 * them). For slots, held_slots (the thread's) = slots in use + slots_free + slots_returned: loops move a slot
 * from free to in use and back, or to returned while slots_owed > 0 (over the fair cap); only the thread changes
 * held_slots, after a round trip that also tells Redis. */
#include "ratelimit.h"

#include <assert.h>
#include <limits.h>
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
#define RATELIMIT_REPORT_MS 50     /* calls answered (and 429s) are reported to the window within this */

struct ratelimit {
    const settings_t *settings;
    const keys_t *keys;
    char worker_id[256];
    double limit_per_s;              /* 0: no rate limit */
    double burst;
    long long max_inflight;          /* 0: no concurrency cap */

    atomic_long tokens;              /* leased, not yet used */
    atomic_long waiting;             /* items waiting in the loops' FIFOs */
    atomic_long answered;            /* calls ended (sched_release), not yet reported */
    atomic_long throttled;           /* of them 429s (and 503s with Retry-After), not yet reported */
    atomic_long throttle_ra_ms;      /* their shortest Retry-After in ms; LONG_MAX: none */
    atomic_long slots_free;          /* held, not in use */
    atomic_long slots_owed;          /* slots to give back as calls end (over the fair cap) */
    atomic_long slots_returned;      /* slots given up by loops, to tell Redis */

    /* The thread's own. */
    rconn_t *conn;
    long held_slots;                 /* what Redis says this worker holds */
    long fair_cap;                   /* while slots are contended: the most one worker should hold; else 0 */
    int64_t next_take_ms;            /* no lease before (the bucket is empty, or paused) */
    int64_t paused_until_ms;         /* the shared pause as this thread last saw it (for the gauge) */
    int64_t next_report_ms;          /* calls answered are reported to the window at most once per REPORT_MS */
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
    atomic_init(&rl->answered, 0);
    atomic_init(&rl->throttled, 0);
    atomic_init(&rl->throttle_ra_ms, LONG_MAX);
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

void ratelimit_call_ended(ratelimit_t *rl)
{
    if (rl->limit_per_s > 0) atomic_fetch_add(&rl->answered, 1);
}

void ratelimit_throttled(ratelimit_t *rl, long retry_after_ms)
{
    if (rl->limit_per_s <= 0) return;
    metrics_add(M_RATE_THROTTLES, 1);
    if (retry_after_ms >= 0) {
        long prev = atomic_load(&rl->throttle_ra_ms);
        while (retry_after_ms < prev && !atomic_compare_exchange_weak(&rl->throttle_ra_ms, &prev, retry_after_ms)) {
        }
    }
    /* Reported with the calls answered within RATELIMIT_REPORT_MS: one 429 alone changes nothing at once. */
    atomic_fetch_add(&rl->throttled, 1);
}

/* ---- the thread ---- */

/* A reply of ratelimit.lua's take and adapt (see the script). */
enum { RL_GRANTED, RL_WAIT_MS, RL_RATE_MILLI, RL_PAUSED_MS, RL_CLOSE, RL_CALLS, RL_THROTTLED, RL_WINDOW_MS, RL_RA_MS,
       RL_BASELINE_PPM, RL_CUT_SHARE_PPM, RL_CUT_OK_MILLI, RL_CEILING_MILLI, RL_FIRST, RL_REPLY_LEN };

/* One ratelimit.lua call: op and its arguments after limit and burst. Returns 0 with the reply, or -1. */
static int rate_call(ratelimit_t *rl, const char *op, int argc, const char *const *args, long long out[RL_REPLY_LEN])
{
    char limit[32], burst[32];
    snprintf(limit, sizeof limit, "%.6f", rl->limit_per_s);
    snprintf(burst, sizeof burst, "%.6f", rl->burst);
    const char *argv[20] = {"EVAL", script_ratelimit, "3", rl->keys->rate, rl->keys->inflight, rl->keys->workers,
                            op, limit, burst};
    assert(9 + argc <= 20);
    for (int i = 0; i < argc; i++) argv[9 + i] = args[i];
    redisReply *r = rconn_command_argv(rl->conn, 9 + argc, argv, NULL);
    int rc = -1;
    if (r && r->type == REDIS_REPLY_ARRAY && r->elements == RL_REPLY_LEN) {
        for (size_t i = 0; i < RL_REPLY_LEN; i++) out[i] = r->element[i]->integer;
        rc = 0;
    } else {
        LOG_LIMITED(LL_WARN, "rate limit: %s failed: %s", op,
                    r && r->type == REDIS_REPLY_ERROR ? r->str : rconn_error(rl->conn));
        metrics_add(M_REDIS_ERRORS, 1);
    }
    if (r) freeReplyObject(r);
    return rc;
}

/* What every reply tells: the shared rate and the pause. */
static void rate_seen(ratelimit_t *rl, const long long reply[RL_REPLY_LEN], int64_t now)
{
    metrics_gauge_set(G_RATE_LIMIT_CURRENT, reply[RL_RATE_MILLI]);
    if (reply[RL_PAUSED_MS] > 0) {
        atomic_store(&rl->tokens, 0); /* paused: what this worker leased waits too */
        rl->reserved = 0;
        rl->paused_until_ms = now + reply[RL_PAUSED_MS];
        if (rl->next_take_ms < rl->paused_until_ms) rl->next_take_ms = rl->paused_until_ms;
    }
}

/* This worker got the window that ended to decide: ratelimit_adapt, then the script's adapt. */
static void rate_close_window(ratelimit_t *rl, const long long w[RL_REPLY_LEN], int64_t now)
{
    ratelimit_aimd_t a = {.rate_per_s = (double)w[RL_RATE_MILLI] / 1000,
                          .baseline = (double)w[RL_BASELINE_PPM] / 1e6,
                          .cut_share = (double)w[RL_CUT_SHARE_PPM] / 1e6,
                          .cut_ok_per_s = (double)w[RL_CUT_OK_MILLI] / 1000,
                          .ceiling_per_s = (double)w[RL_CEILING_MILLI] / 1000};
    ratelimit_window_t win = {.calls = (double)w[RL_CALLS], .throttled = (double)w[RL_THROTTLED],
                              .seconds = (double)w[RL_WINDOW_MS] / 1000, .first = w[RL_FIRST] != 0};
    double before = a.rate_per_s;
    ratelimit_adapt_t verdict = ratelimit_adapt(&a, &win, rl->limit_per_s);
    long pause_ms = verdict == RATELIMIT_CUT && w[RL_RA_MS] > 0 ? (long)w[RL_RA_MS] : 0;
    char id[24], rate[32], baseline[32], cut_share[32], cut_ok[32], ceiling[32], pause[24];
    snprintf(id, sizeof id, "%lld", w[RL_CLOSE]);
    snprintf(rate, sizeof rate, "%.6f", a.rate_per_s);
    snprintf(baseline, sizeof baseline, "%.6f", a.baseline);
    snprintf(cut_share, sizeof cut_share, "%.6f", a.cut_share);
    snprintf(cut_ok, sizeof cut_ok, "%.6f", a.cut_ok_per_s);
    snprintf(ceiling, sizeof ceiling, "%.6f", a.ceiling_per_s);
    snprintf(pause, sizeof pause, "%ld", pause_ms);
    const char *settle = verdict == RATELIMIT_CUT ? RATELIMIT_SETTLE_MS_STR : "0";
    const char *args[] = {id, rate, baseline, cut_share, cut_ok, ceiling, pause, settle};
    long long reply[RL_REPLY_LEN];
    if (rate_call(rl, "adapt", 8, args, reply)) return; /* the window is closed by someone else later */
    rate_seen(rl, reply, now);
    double share = ratelimit_share(&win) * 100;
    LOG(LL_DEBUG, "rate limit: window %lld: %lld calls, %lld answered 429 (%.1f %%) in %.2f s: rate %.2f/s -> %.2f/s "
        "(baseline %.1f %%, ceiling %.2f/s)", w[RL_CLOSE], w[RL_CALLS], w[RL_THROTTLED], share, win.seconds, before,
        a.rate_per_s, a.baseline * 100, a.ceiling_per_s);
    if (verdict == RATELIMIT_CUT) {
        metrics_add(M_RATE_DECREASES, 1);
        LOG_LIMITED(LL_WARN, "rate limit: %lld of %lld calls (%.1f %%) answered 429 in the last %.1f s: shared rate "
                    "%.2f/s -> %.2f/s, paused for %ld ms", w[RL_THROTTLED], w[RL_CALLS], share, win.seconds, before,
                    a.rate_per_s, pause_ms);
    } else if (verdict == RATELIMIT_UNDONE) {
        LOG_LIMITED(LL_WARN, "rate limit: %.1f %% of calls still answered 429 after the cut, while fewer were "
                    "answered ok: the API refuses them whatever the rate; tolerating that share, shared rate back "
                    "to %.2f/s", share, a.rate_per_s);
    }
}

static void rate_turn(ratelimit_t *rl, int64_t now)
{
    if (rl->reserved && now >= rl->reserved_at_ms) {
        atomic_fetch_add(&rl->tokens, rl->reserved);
        rl->reserved = 0;
    }
    long need = atomic_load(&rl->waiting) - atomic_load(&rl->tokens);
    long want = need > 0 && !rl->reserved && now >= rl->next_take_ms ? ratelimit_block(rl->burst, need) : 0;
    metrics_gauge_set(G_RATE_PAUSED, now < rl->paused_until_ms);
    bool report = atomic_load(&rl->answered) > 0 && now >= rl->next_report_ms;
    if (want == 0 && !report) return;
    /* The 429s first: a call is counted answered before it is reported throttled (ratelimit.h). */
    long throttled = atomic_exchange(&rl->throttled, 0);
    long answered = atomic_exchange(&rl->answered, 0);
    long ra_ms = throttled > 0 ? atomic_exchange(&rl->throttle_ra_ms, LONG_MAX) : LONG_MAX;
    rl->next_report_ms = now + RATELIMIT_REPORT_MS;
    char want_s[24], ans_s[24], thr_s[24], ra_s[24];
    snprintf(want_s, sizeof want_s, "%ld", want);
    snprintf(ans_s, sizeof ans_s, "%ld", answered);
    snprintf(thr_s, sizeof thr_s, "%ld", throttled);
    snprintf(ra_s, sizeof ra_s, "%ld", ra_ms == LONG_MAX ? -1L : ra_ms);
    const char *args[] = {want_s, ans_s, thr_s, ra_s};
    long long reply[RL_REPLY_LEN];
    if (want > 0) metrics_add(M_RATE_LEASES, 1);
    if (rate_call(rl, "take", 4, args, reply)) {
        atomic_fetch_add(&rl->answered, answered); /* report them again next turn */
        atomic_fetch_add(&rl->throttled, throttled);
        rl->next_take_ms = now + RATELIMIT_RETRY_MS;
        return;
    }
    rate_seen(rl, reply, now);
    if (want > 0) {
        long long granted = reply[RL_GRANTED], wait_ms = reply[RL_WAIT_MS];
        if (granted > 0 && wait_ms > 0) { /* reserved ahead: usable after wait_ms */
            rl->reserved = (long)granted;
            rl->reserved_at_ms = now + wait_ms;
        } else if (granted > 0) {
            atomic_fetch_add(&rl->tokens, (long)granted);
        }
        if (granted > 0) metrics_add(M_RATE_TOKENS, (uint64_t)granted);
        /* Some granted: ask again when they are usable, if more are needed. None: come back when a block can be. */
        int64_t paused = reply[RL_PAUSED_MS];
        rl->next_take_ms = granted > 0 ? now : now + (paused > 0 ? paused : wait_ms > 0 ? wait_ms : 1);
    }
    if (reply[RL_CLOSE] > 0) rate_close_window(rl, reply, now);
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
            if (rl->limit_per_s > 0 && atomic_load(&rl->answered) > 0 && rl->next_report_ms < wake)
                wake = rl->next_report_ms;
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
