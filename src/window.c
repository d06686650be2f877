/* window: see window.h. */
#include "window.h"

#include <pthread.h>
#include <stdlib.h>
#include <time.h>

#include "clock.h"
#include "metrics.h"
#include "xalloc.h"

struct window {
    pthread_mutex_t mu;
    pthread_cond_t changed; /* signalled on every release */
    size_t held;            /* items fetched and not yet committed */
    size_t running;         /* items fetched and not finished, less those waiting for a retry (window_waiting) */
    size_t capacity;        /* --concurrency */
    size_t ahead;           /* items fetch may take beyond the capacity (window_set_ahead) */
    uint64_t finished_total; /* items that finished running, ever (window_finish) */
    size_t held_bytes;      /* chunk texts held */
    size_t chunks;          /* chunks held (fetched, not yet freed) */
    size_t peak_held, peak_chunks, peak_bytes; /* the highs of held, chunks and held_bytes: metrics only */
    size_t max_bytes;       /* --max-held-bytes */
    size_t room_want;       /* while fetch waits in window_wait_room: the items it waits room for */
    bool room_waiting;
};

window_t *window_new(size_t capacity, size_t max_bytes)
{
    window_t *w = xcalloc(1, sizeof *w);
    pthread_mutex_init(&w->mu, NULL);
    clock_cond_init(&w->changed);
    w->capacity = capacity;
    w->max_bytes = max_bytes;
    return w;
}

void window_free(window_t *w)
{
    if (!w) return;
    pthread_cond_destroy(&w->changed);
    pthread_mutex_destroy(&w->mu);
    free(w);
}

bool window_wait_room(window_t *w, size_t want, int64_t timeout_ms)
{
    struct timespec ts = clock_deadline_ts(clock_now_ms() + timeout_ms);
    pthread_mutex_lock(&w->mu);
    w->room_want = want;
    w->room_waiting = true;
    while (!window_fits(w->running, w->held, want, w->capacity, w->ahead) ||
           !window_bytes_fit(w->held, w->held_bytes, w->max_bytes))
        if (pthread_cond_timedwait(&w->changed, &w->mu, &ts)) break;
    w->room_waiting = false;
    bool fits = window_fits(w->running, w->held, want, w->capacity, w->ahead) &&
                window_bytes_fit(w->held, w->held_bytes, w->max_bytes);
    pthread_mutex_unlock(&w->mu);
    return fits;
}

bool window_wait_empty(window_t *w, int64_t deadline_ms)
{
    struct timespec ts = clock_deadline_ts(deadline_ms);
    pthread_mutex_lock(&w->mu);
    while (w->held)
        if (pthread_cond_timedwait(&w->changed, &w->mu, &ts)) break;
    bool empty = w->held == 0;
    pthread_mutex_unlock(&w->mu);
    return empty;
}

/* Under the window's mutex: a new high of a held amount goes to its gauge. */
static void raise_peak(size_t *peak, size_t now, metrics_gauge_t gauge)
{
    if (now <= *peak) return;
    *peak = now;
    metrics_gauge_set(gauge, (int64_t)now);
}

void window_add(window_t *w, size_t n, size_t bytes)
{
    pthread_mutex_lock(&w->mu);
    w->held += n;
    w->held_bytes += bytes;
    w->running += n;
    w->chunks++;
    metrics_gauge_set(G_ITEMS_IN_FLIGHT, (int64_t)w->held);
    metrics_gauge_set(G_ITEMS_RUNNING, (int64_t)w->running);
    raise_peak(&w->peak_held, w->held, G_ITEMS_HELD_PEAK);
    raise_peak(&w->peak_chunks, w->chunks, G_CHUNKS_HELD_PEAK);
    raise_peak(&w->peak_bytes, w->held_bytes, G_BYTES_HELD_PEAK);
    pthread_mutex_unlock(&w->mu);
}

static size_t sub_floor(size_t a, size_t b) { return b > a ? 0 : a - b; }

/* running loses `less` items and gains `more`; `finished` of them finished running. */
static void window_running_change(window_t *w, size_t less, size_t more, size_t finished)
{
    pthread_mutex_lock(&w->mu);
    w->running = sub_floor(w->running, less) + more;
    w->finished_total += finished;
    metrics_gauge_set(G_ITEMS_RUNNING, (int64_t)w->running);
    /* Called on every loop turn that finished items: wake fetch only when the room it waits for is there (only
     * running changed, so only window_wait_room can be waiting for it). */
    if (w->room_waiting && window_fits(w->running, w->held, w->room_want, w->capacity, w->ahead) &&
        window_bytes_fit(w->held, w->held_bytes, w->max_bytes))
        pthread_cond_broadcast(&w->changed);
    pthread_mutex_unlock(&w->mu);
}

void window_release(window_t *w, size_t n, bool finished)
{
    pthread_mutex_lock(&w->mu);
    w->held = sub_floor(w->held, n);
    metrics_gauge_set(G_ITEMS_IN_FLIGHT, (int64_t)w->held);
    if (!finished) w->running = sub_floor(w->running, n);
    metrics_gauge_set(G_ITEMS_RUNNING, (int64_t)w->running);
    pthread_cond_broadcast(&w->changed);
    pthread_mutex_unlock(&w->mu);
}

void window_release_bytes(window_t *w, size_t bytes)
{
    pthread_mutex_lock(&w->mu);
    w->held_bytes = sub_floor(w->held_bytes, bytes);
    w->chunks = sub_floor(w->chunks, 1);
    pthread_cond_broadcast(&w->changed);
    pthread_mutex_unlock(&w->mu);
}

void window_finish(window_t *w, size_t n) { window_running_change(w, n, 0, n); }

void window_waiting(window_t *w, long delta)
{
    if (delta >= 0) window_running_change(w, (size_t)delta, 0, 0);
    else window_running_change(w, 0, (size_t)-delta, 0);
}

size_t window_held(window_t *w)
{
    pthread_mutex_lock(&w->mu);
    size_t n = w->held;
    pthread_mutex_unlock(&w->mu);
    return n;
}

size_t window_room(window_t *w)
{
    pthread_mutex_lock(&w->mu);
    size_t a = sub_floor(w->capacity + w->ahead, w->running), b = sub_floor(2 * w->capacity, w->held);
    pthread_mutex_unlock(&w->mu);
    return a < b ? a : b;
}

size_t window_room_bytes(window_t *w)
{
    pthread_mutex_lock(&w->mu);
    size_t room = sub_floor(w->max_bytes, w->held_bytes);
    pthread_mutex_unlock(&w->mu);
    return room;
}

uint64_t window_finished_total(window_t *w)
{
    pthread_mutex_lock(&w->mu);
    uint64_t n = w->finished_total;
    pthread_mutex_unlock(&w->mu);
    return n;
}

size_t window_set_ahead(window_t *w, size_t ahead)
{
    pthread_mutex_lock(&w->mu);
    size_t most = w->capacity / WINDOW_AHEAD_MAX_SHARE;
    w->ahead = ahead < most ? ahead : most;
    ahead = w->ahead;
    pthread_mutex_unlock(&w->mu);
    return ahead;
}
