/* commit: the committer thread, the only writer of results.
 *
 * Finished chunks queue up here from every loop. The committer sends them in batches: one pipelined round trip
 * carries one commit script call per chunk (results to the stream, dead copies, counters, and removal from this
 * worker's processing list, atomically and fenced). A batch goes when it holds --commit-batch results or its
 * oldest chunk has waited --commit-interval-ms. On a Redis error the committer keeps the chunks, reconnects with
 * backoff and sends them again; the fencing in the script makes the retry exactly-once. */
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
/* Queues a chunk (any thread); takes ownership. Its disposition says commit or requeue. */
void commit_push(commit_t *c, work_chunk_t *chunk);
/* Sends everything queued, then stops the thread. Blocks while Redis is unreachable unless commit_abort()
 * is called. */
void commit_stop(commit_t *c);
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

#endif
