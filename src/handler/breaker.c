/* breaker: see breaker.h.
 *
 * The window is a ring of the last BREAKER_SAMPLE outcomes in the order they were recorded, oldest first; an
 * outcome leaves it when a newer one needs its place or once it is window_ms old, and the counts follow. */
#include "breaker.h"

#include <assert.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "xalloc.h"

typedef struct breaker_outcome {
    int64_t at_ms;
    bool failed;
} breaker_outcome_t;

struct breaker {
    breaker_config_t cfg;
    breaker_change_fn on_change;
    void *arg;
    pthread_mutex_t mu;
    atomic_int state;          /* breaker_state_t; written under mu, read without it by breaker_allow() */
    breaker_outcome_t ring[BREAKER_SAMPLE];
    size_t oldest;             /* index of the oldest outcome in ring */
    long calls;                /* outcomes in ring */
    long failures;             /* of which failures */
    int64_t backoff_ms;        /* the wait of the current (or next) open spell */
    int64_t probe_at_ms;       /* open: when it turns half-open */
    int64_t round_started_ms;  /* half-open: when the current round of probes began */
    int round_started;         /* half-open: calls allowed in the current round */
    int round_ok;              /* half-open: successes since it turned half-open */
    int64_t trip_from_ms;      /* the oldest outcome of the window that last opened it from closed (-1: none) */
    int64_t trip_at_ms;        /* when that was (-1: never) */
    char why[BREAKER_WHY_MAX]; /* why it opened */
};

breaker_t *breaker_new(const breaker_config_t *c, breaker_change_fn on_change, void *arg)
{
    assert(c->window_ms >= 1 && c->failure_percent >= 1 && c->failure_percent <= 100 && c->min_calls >= 1 &&
           c->min_calls <= BREAKER_SAMPLE && c->probe_base_ms >= 1 && c->probe_max_ms >= c->probe_base_ms && c->probes >= 1);
    breaker_t *b = xcalloc(1, sizeof *b);
    b->cfg = *c;
    b->on_change = on_change;
    b->arg = arg;
    pthread_mutex_init(&b->mu, NULL);
    atomic_init(&b->state, BREAKER_CLOSED);
    b->backoff_ms = c->probe_base_ms;
    b->trip_from_ms = b->trip_at_ms = -1;
    return b;
}

void breaker_free(breaker_t *b)
{
    if (!b) return;
    pthread_mutex_destroy(&b->mu);
    free(b);
}

const char *breaker_state_name(breaker_state_t st)
{
    return st == BREAKER_OPEN ? "open" : st == BREAKER_HALF_OPEN ? "half-open" : "closed";
}

/* ---- under the mutex ---- */

static void window_clear(breaker_t *b)
{
    b->oldest = 0;
    b->calls = b->failures = 0;
}

static void window_drop_oldest(breaker_t *b)
{
    if (b->ring[b->oldest].failed) b->failures--;
    b->calls--;
    b->oldest = (b->oldest + 1) % BREAKER_SAMPLE;
}

/* Adds an outcome, after dropping those older than window_ms (and the oldest one when the ring is full). */
static void window_add(breaker_t *b, int64_t now_ms, bool failed)
{
    while (b->calls > 0 && now_ms - b->ring[b->oldest].at_ms >= b->cfg.window_ms) window_drop_oldest(b);
    if (b->calls == BREAKER_SAMPLE) window_drop_oldest(b);
    b->ring[(b->oldest + (size_t)b->calls) % BREAKER_SAMPLE] = (breaker_outcome_t){.at_ms = now_ms, .failed = failed};
    b->calls++;
    if (failed) b->failures++;
    assert(b->failures >= 0 && b->failures <= b->calls && b->calls <= BREAKER_SAMPLE);
}

static void set_state(breaker_t *b, breaker_state_t to, int64_t now_ms, const char *why)
{
    breaker_state_t from = (breaker_state_t)atomic_load(&b->state);
    atomic_store(&b->state, to);
    if (b->on_change) b->on_change(b->arg, from, to, to == BREAKER_OPEN ? b->probe_at_ms - now_ms : 0, why);
}

static void open_now(breaker_t *b, int64_t now_ms, const char *why)
{
    b->probe_at_ms = now_ms + b->backoff_ms;
    b->backoff_ms = b->backoff_ms * 2 > b->cfg.probe_max_ms ? b->cfg.probe_max_ms : b->backoff_ms * 2;
    set_state(b, BREAKER_OPEN, now_ms, why);
}

static void start_round(breaker_t *b, int64_t now_ms)
{
    b->round_started_ms = now_ms;
    b->round_started = 0;
}

/* Open -> half-open once the probe time is reached; a half-open round without news for window_ms starts again. */
static breaker_state_t advance(breaker_t *b, int64_t now_ms)
{
    breaker_state_t st = (breaker_state_t)atomic_load(&b->state);
    if (st == BREAKER_OPEN && now_ms >= b->probe_at_ms) {
        start_round(b, now_ms);
        b->round_ok = 0;
        set_state(b, BREAKER_HALF_OPEN, now_ms, "the probe time came");
        st = BREAKER_HALF_OPEN;
    } else if (st == BREAKER_HALF_OPEN && b->round_started >= b->cfg.probes &&
               now_ms - b->round_started_ms >= b->cfg.window_ms) {
        start_round(b, now_ms);
    }
    return st;
}

/* ---- public ---- */

bool breaker_allow(breaker_t *b, int64_t now_ms)
{
    if (atomic_load(&b->state) == BREAKER_CLOSED) return true;
    pthread_mutex_lock(&b->mu);
    breaker_state_t st = advance(b, now_ms);
    bool yes = st == BREAKER_CLOSED;
    if (st == BREAKER_HALF_OPEN && b->round_started < b->cfg.probes) {
        b->round_started++;
        yes = true;
    }
    pthread_mutex_unlock(&b->mu);
    return yes;
}

bool breaker_record(breaker_t *b, int64_t now_ms, bool failed, const char *error)
{
    pthread_mutex_lock(&b->mu);
    breaker_state_t st = advance(b, now_ms);
    if (st == BREAKER_CLOSED) {
        window_add(b, now_ms, failed);
        if (failed && b->calls >= b->cfg.min_calls && b->failures * 100 >= (long)b->cfg.failure_percent * b->calls) {
            char why[BREAKER_WHY_MAX];
            snprintf(why, sizeof why, "%ld of the last %ld calls failed (within %lld ms; last: %.200s)", b->failures,
                     b->calls, (long long)b->cfg.window_ms, error ? error : "?");
            snprintf(b->why, sizeof b->why, "%s", why);
            b->trip_from_ms = b->ring[b->oldest].at_ms;
            b->trip_at_ms = now_ms;
            window_clear(b);
            open_now(b, now_ms, why);
        }
    } else if (st == BREAKER_HALF_OPEN) {
        if (failed) {
            char why[BREAKER_WHY_MAX];
            snprintf(why, sizeof why, "a probe failed (%.200s)", error ? error : "?");
            snprintf(b->why, sizeof b->why, "%s", why);
            open_now(b, now_ms, why);
        } else if (++b->round_ok >= b->cfg.probes) {
            window_clear(b);
            b->backoff_ms = b->cfg.probe_base_ms;
            set_state(b, BREAKER_CLOSED, now_ms, "the probes succeeded");
        }
    }
    bool excused = failed && atomic_load(&b->state) != BREAKER_CLOSED;
    pthread_mutex_unlock(&b->mu);
    return excused;
}

breaker_state_t breaker_state(breaker_t *b, int64_t now_ms, char *why, size_t whylen)
{
    pthread_mutex_lock(&b->mu);
    breaker_state_t st = advance(b, now_ms);
    if (whylen) why[0] = '\0';
    if (st == BREAKER_OPEN)
        snprintf(why, whylen, "circuit open: %s; next probe in %lld ms", b->why, (long long)(b->probe_at_ms - now_ms));
    else if (st == BREAKER_HALF_OPEN)
        snprintf(why, whylen, "circuit half-open: probing (%d of %d probes succeeded) after: %s", b->round_ok,
                 b->cfg.probes, b->why);
    pthread_mutex_unlock(&b->mu);
    return st;
}

bool breaker_tripped_by(breaker_t *b, int64_t failed_at_ms)
{
    pthread_mutex_lock(&b->mu);
    bool yes = b->trip_from_ms >= 0 && b->trip_from_ms <= failed_at_ms && failed_at_ms <= b->trip_at_ms;
    pthread_mutex_unlock(&b->mu);
    return yes;
}
