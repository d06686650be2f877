/* commit: the committer thread, the only writer of results.
 *
 * Finished items queue up here from every loop, as they finish. The committer sends them in batches: one
 * pipelined round trip carries one commit script call per chunk that has items in the batch (results to the
 * stream, dead copies, counters and the chunk's checkpoint, atomically and fenced; the call with a chunk's last
 * item also removes the chunk from this worker's processing list). So a chunk's finished items are in Redis while
 * its other items still run, and a redelivered chunk runs only the rest. A batch goes when it holds
 * --commit-batch results or its oldest entry has waited --commit-interval-ms. On a Redis error the committer keeps
 * the items, reconnects with backoff and sends them again; fencing and checkpoint bits make the retry
 * exactly-once. */
#ifndef CHUNKD_COMMIT_H
#define CHUNKD_COMMIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "keys.h"
#include "settings.h"
#include "window.h"
#include "work.h"

typedef struct commit commit_t;

/* keys->processing must be set. The window is released as chunks leave. */
commit_t *commit_new(const settings_t *s, const keys_t *keys, window_t *window);
/* Connects and starts the thread. Returns 0, or -1 with a reason in err. */
int commit_start(commit_t *c, char *err, size_t errlen);
/* Queues finished items and chunk markers linked by commit_next (any thread). The committer takes the items, and
 * ownership of each chunk whose last item or marker is among them (see loop_done_fn). */
void commit_push(commit_t *c, work_item_t *list);
/* Queues a chunk's marker: the chunk is dead, has nothing to run, or (disposition WORK_REQUEUE) goes back to
 * pending. Takes ownership of the chunk. */
void commit_push_chunk(commit_t *c, work_chunk_t *chunk);
/* Sends everything queued, then stops the thread. Past deadline_ms (monotonic; INT64_MAX: no deadline) it gives
 * up on what is not committed yet (as commit_abort(): those chunks stay in the processing list for recovery), so a
 * stop ends in bounded time even with Redis gone for good: a command already sent still takes up to
 * --redis-timeout-ms. Returns 0 when everything queued was settled, -1 when something was given up. */
int commit_stop(commit_t *c, int64_t deadline_ms);
/* Makes a blocked commit_stop() give up (the chunks stay in the processing list for recovery). */
void commit_abort(commit_t *c);
void commit_free(commit_t *c);
/* For /healthz and /readyz (any thread): the thread's last sign of life (monotonic ms), and whether its Redis
 * connection is up. */
int64_t commit_heartbeat_ms(commit_t *c);
bool commit_connected(commit_t *c);

/* Pure batching decision: send now? */
static inline bool commit_batch_ready(size_t queued_items, int64_t oldest_wait_ms, size_t batch_items,
                                      int64_t interval_ms, bool stopping)
{
    return queued_items > 0 && (stopping || queued_items >= batch_items || oldest_wait_ms >= interval_ms);
}

#define COMMIT_ROUND_MAX_BATCHES 8 /* a backlog goes in rounds of up to this many --commit-batch */

/* Pure: how many queued entries the next round takes. A batch; but when more than a batch waits (results finish
 * faster than one round trip per batch commits them: a distant Redis), all of it, up to COMMIT_ROUND_MAX_BATCHES
 * batches, so the round trip is paid once for the backlog instead of once per batch. */
static inline size_t commit_round_take(size_t queued_items, size_t batch_items)
{
    if (queued_items <= batch_items) return batch_items;
    size_t most = COMMIT_ROUND_MAX_BATCHES * batch_items;
    return queued_items < most ? queued_items : most;
}

#endif
