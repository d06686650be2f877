/* handler: what runs one item. fetch and commit never see which handler is in use.
 *
 * A handler keeps per-loop state (for libcurl: multi handles; for exec: a pool of subprocesses) created by its
 * loop_init() (from sched_start(), before the loop's thread runs); afterwards it is only touched on that thread.
 * start() must not block: it arms timers or watches file descriptors on the loop (loop.h) and calls
 * sched_item_done() exactly once per item, possibly from inside start() itself; each further call an item makes
 * takes the queue's limits through sched_acquire() (scheduler.h). loop_free() (on the loop's thread, as it stops)
 * releases everything, including items still running when a drain abandons them. */
#ifndef CHUNKD_HANDLER_H
#define CHUNKD_HANDLER_H

#include "loop.h"
#include "settings.h"
#include "work.h"

typedef struct handler {
    const char *name;
    /* Optional, once per process before any loop: checks settings and builds read-only state shared by all loops
     * (*shared). Returns 0, or -1 with a reason in err. */
    int (*init)(const settings_t *s, void **shared, char *err, size_t errlen);
    void (*fini)(void *shared);
    /* Creates the per-loop state in *state. Returns 0, or -1 after logging why. */
    int (*loop_init)(loop_t *loop, const settings_t *s, void *shared, void **state);
    void (*loop_free)(void *state);
    void (*start)(void *state, loop_t *loop, work_item_t *item);
    /* Stops a running item without finishing it (--item-timeout-ms): afterwards the handler must never touch
     * the item again. Required of every handler whose start() can return before the item is done. */
    void (*cancel)(void *state, loop_t *loop, work_item_t *item);
    /* Optional: the most event loops the handler can use (exec: 1, for one pool); the worker runs
     * min(--threads or the CPU count, this) loops. */
    long (*max_loops)(const settings_t *s);
    /* Optional, called from any thread (the HTTP server's, the monitor's): false, with the reason in why, while
     * the handler cannot run items (exec: its command keeps failing at start), so that /readyz answers 503. */
    bool (*ready)(void *shared, char *why, size_t whylen);
    /* True when the handler takes each call's token and slot of the queue's limits (sched_acquire) itself, when the
     * call really starts (exec: once a subprocess is free for it); otherwise the loop takes them before start(). */
    bool gates_calls;
} handler_t;

/* The delay before retry number `attempt` (1 for the first retry) of a handler's call: full jitter, a random delay
 * from 0 to min(--retry-max-ms, --retry-base-ms * 2^(attempt-1)); rng is the calling loop's rand_r() state. */
int64_t handler_retry_delay_ms(const settings_t *s, unsigned int *rng, int attempt);

/* The number of event loops a worker runs with handler h: --threads (0: the CPU count), at most h's max_loops, at
 * most --concurrency (every loop gets at least one place) and SCHED_PLACES_MAX_LOOPS; at least 1. */
size_t handler_loop_count(const handler_t *h, const settings_t *s);

/* Returns the handler called name, or NULL. */
const handler_t *handler_find(const char *name);

extern const handler_t handler_sleep;
extern const handler_t handler_echo;
extern const handler_t handler_http;
extern const handler_t handler_exec;

#endif
