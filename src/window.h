/* window: how many items this process holds, from fetch until their chunk is committed.
 *
 * fetch takes another chunk only when the window has room, so a slow handler or a slow Redis stops fetching
 * instead of growing memory: backpressure replaces the old recipe's sleep between chunks. Thread-safe. */
#ifndef CHUNKD_WINDOW_H
#define CHUNKD_WINDOW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct window window_t;

window_t *window_new(size_t capacity);
void window_free(window_t *w);
/* Waits up to timeout_ms until `want` more items fit (or the window is empty, so a chunk larger than the capacity
 * still runs alone). Returns true when they fit. */
bool window_wait_room(window_t *w, size_t want, int64_t timeout_ms);
/* Waits until the window is empty or the monotonic deadline passes. Returns true when empty. */
bool window_wait_empty(window_t *w, int64_t deadline_ms);
void window_add(window_t *w, size_t n);
void window_release(window_t *w, size_t n);
size_t window_held(window_t *w);

/* Pure: would `want` more items fit when `held` are held out of `capacity`? */
static inline bool window_fits(size_t held, size_t want, size_t capacity)
{
    return held == 0 || held + want <= capacity;
}

#endif
