/* window: how many items this process holds, from fetch until their chunk is committed.
 *
 * fetch takes another chunk only when the window has room, so a slow handler or a slow Redis stops fetching
 * instead of growing memory, and takes one as soon as there is: no fixed pause between chunks. Thread-safe. */
#ifndef CHUNKD_WINDOW_H
#define CHUNKD_WINDOW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct window window_t;

/* capacity: --concurrency; max_bytes: --max-held-bytes, the chunk texts held (their decoded items and results
 * take a small multiple of it). */
window_t *window_new(size_t capacity, size_t max_bytes);
void window_free(window_t *w);
/* Waits up to timeout_ms until `want` more items fit (or the window is empty, so a chunk larger than the capacity
 * still runs alone). Returns true when they fit. */
bool window_wait_room(window_t *w, size_t want, int64_t timeout_ms);
/* Waits until the window is empty or the monotonic deadline passes. Returns true when empty. */
bool window_wait_empty(window_t *w, int64_t deadline_ms);
/* fetch took n items, in a chunk of bytes bytes (one chunk; the highs since start go to the *_peak gauges). */
void window_add(window_t *w, size_t n, size_t bytes);
/* A chunk of bytes bytes was freed (once per chunk window_add counted). */
void window_release_bytes(window_t *w, size_t bytes);
/* n items finished running (their chunk went to the committer). */
void window_finish(window_t *w, size_t n);
/* delta items left running to wait for a retry (they hold no place, but stay held), or, when negative, -delta came
 * back to run (or were abandoned unfinished, for window_release). */
void window_waiting(window_t *w, long delta);
/* n items left the process (committed or given back); finish them too if they never finished. */
void window_release(window_t *w, size_t n, bool finished);
size_t window_held(window_t *w);
/* How many more items fit now (at least 0). */
size_t window_room(window_t *w);
/* Items that finished running since the window was made (window_finish): fetch reads its rate from it. */
uint64_t window_finished_total(window_t *w);
/* Sets how many items fetch may take beyond --concurrency (they wait in the loops for places), capped at
 * WINDOW_AHEAD_MAX_SHARE of the capacity: enough to cover what finishes during one fetch round trip, so places do not
 * go idle while a fetch is on its way from a distant Redis. Returns the value set. */
size_t window_set_ahead(window_t *w, size_t ahead);
/* How many more bytes of chunk text fit now (at least 0). */
size_t window_room_bytes(window_t *w);

#define WINDOW_AHEAD_MAX_SHARE 2 /* window_set_ahead: at most capacity / this */

/* Pure: may a chunk of `want` more items be fetched, with `running` running (fetched and not finished: started, or
 * waiting in a loop for a place; not those waiting for a retry, which hold no place) and `held` held, under `capacity`
 * and `ahead` (window_set_ahead)? While running items are at most the capacity plus ahead: the loops start at most
 * --concurrency items at once (sched_places_t, scheduler.h), and chunks fetched ahead wait there, so a finished item's
 * place is refilled at once instead of after a fetch round trip. Held items (running plus finished and not yet
 * committed) stay under twice the capacity. A chunk always fits into an empty window, so a chunk larger than the
 * capacity still runs (--concurrency items at a time). */
static inline bool window_fits(size_t running, size_t held, size_t want, size_t capacity, size_t ahead)
{
    if (held == 0) return true;
    return running <= capacity + ahead && held + want <= 2 * capacity;
}

/* Pure: may another chunk be fetched with held_bytes of chunk text held? An empty window always takes one. */
static inline bool window_bytes_fit(size_t held, size_t held_bytes, size_t max_bytes)
{
    return held == 0 || held_bytes < max_bytes;
}

#endif
