/* fetch: the thread that takes chunks from the pending list.
 *
 * Reliable fetch: one script (fetch.lua) moves chunks from the right of pending to the left of this worker's
 * processing list, each in one atomic step, so a chunk is always in exactly one list, even if the worker dies the
 * next instant. The same script moves a chunk larger than --max-chunk-bytes from pending to the dead list, whole,
 * before the worker reads a byte of it. fetch asks for another chunk only when the window has room for it, hands
 * each chunk to the least loaded loop, and sends chunks that do not parse straight to the committer, which moves
 * them to the dead list. An empty queue is polled (5 ms doubling up to --fetch-block-ms): a blocking move would
 * hand over an oversized chunk unchecked. */
#ifndef CHUNKD_FETCH_H
#define CHUNKD_FETCH_H

#include <stdbool.h>
#include <stddef.h>

#include "commit.h"
#include "keys.h"
#include "scheduler.h"
#include "rconn.h"
#include "settings.h"
#include "window.h"

typedef struct fetch fetch_t;

/* handler/handler_shared (borrowed): fetching waits while the handler says it cannot run items (its ready op). */
fetch_t *fetch_new(const settings_t *s, const keys_t *keys, window_t *window, sched_t **loops, size_t n_loops,
                   commit_t *commit, const struct handler *handler, void *handler_shared);
/* Connects and starts the thread. Returns 0, or -1 with a reason in err. */
int fetch_start(fetch_t *f, char *err, size_t errlen);
/* Stops fetching and waits for the thread (at most about one round trip). */
void fetch_stop(fetch_t *f);
/* True once a fetch found the queue sealed and empty (pending and every processing list) while the window was empty
 * (for --exit-when-empty). */
bool fetch_found_empty(fetch_t *f);
/* Whether the fetch connection is up (any thread; for /readyz). */
bool fetch_connected(fetch_t *f);
/* Whether the last fetch found the queue paused (chunkd pause; any thread; for /readyz). */
bool fetch_queue_paused(fetch_t *f);
/* Whether fetching waits because the results backlog is over a cap (--max-results-backlog or its bytes); then says
 * why in why (any thread; for /readyz). */
bool fetch_backlog_full(fetch_t *f, char *why, size_t whylen);
void fetch_free(fetch_t *f);

/* Moves every chunk left in the processing list keys->processing back to pending. Only call it when the worker
 * holds nothing: everything in the list is then an orphan of a move whose reply was lost. Returns how many moved,
 * or -1 on error (logged). */
long long fetch_reclaim(rconn_t *c, const keys_t *keys);

#endif
