/* keys: the Redis key names of one queue Q. All carry the hash tag {Q}, so a queue lives in one Redis Cluster
 * slot and multi-key scripts stay legal. The README's data contract lists them. */
#ifndef CHUNKD_KEYS_H
#define CHUNKD_KEYS_H

#include <stdio.h>

#define KEYS_MAX 400 /* queue names are at most 200 bytes (settings) */

typedef struct keys {
    char pending[KEYS_MAX];    /* list of chunks; producers LPUSH, workers BLMOVE from the right */
    char results[KEYS_MAX];    /* stream, one entry per commit, field "b": its result lines (commit.lua) */
    char dead[KEYS_MAX];       /* list of dead records */
    char stats[KEYS_MAX];      /* hash of counters */
    char workers[KEYS_MAX];    /* set of registered worker ids */
    char processing[KEYS_MAX]; /* this worker's processing list; empty until keys_processing() */
    char lease[KEYS_MAX];      /* this worker's lease; empty until keys_lease() */
    char reaper[KEYS_MAX];     /* short lock: the worker that holds it reaps this turn */
    char deliveries[KEYS_MAX]; /* hash: "<chunk id>:<hash>" -> times fetched, while the chunk is not done */
    char rate[KEYS_MAX];       /* hash: the shared rate limit's bucket and adaptive rate (ratelimit.lua) */
    char inflight[KEYS_MAX];   /* hash: worker id -> slots of --max-inflight-global it holds */
    char paused[KEYS_MAX];     /* string: while it exists, workers take no chunk (chunkd pause / resume) */
    char sealed[KEYS_MAX];     /* string: while it exists, the input is complete (enqueue, chunkd seal): no chunk
                                * is added, and --exit-when-empty / collect --until-done may end once it is done */
} keys_t;

#define KEYS_COLLECT_GROUP "chunkd-collect"

static inline void keys_init(keys_t *k, const char *queue)
{
    snprintf(k->pending, sizeof k->pending, "chunkd:{%s}:pending", queue);
    snprintf(k->results, sizeof k->results, "chunkd:{%s}:results", queue);
    snprintf(k->dead, sizeof k->dead, "chunkd:{%s}:dead", queue);
    snprintf(k->stats, sizeof k->stats, "chunkd:{%s}:stats", queue);
    snprintf(k->workers, sizeof k->workers, "chunkd:{%s}:workers", queue);
    snprintf(k->reaper, sizeof k->reaper, "chunkd:{%s}:reaper", queue);
    snprintf(k->deliveries, sizeof k->deliveries, "chunkd:{%s}:deliveries", queue);
    snprintf(k->rate, sizeof k->rate, "chunkd:{%s}:rate", queue);
    snprintf(k->inflight, sizeof k->inflight, "chunkd:{%s}:inflight", queue);
    snprintf(k->paused, sizeof k->paused, "chunkd:{%s}:paused", queue);
    snprintf(k->sealed, sizeof k->sealed, "chunkd:{%s}:sealed", queue);
    k->processing[0] = '\0';
    k->lease[0] = '\0';
}

static inline void keys_processing(char *out, size_t outlen, const char *queue, const char *worker_id)
{
    snprintf(out, outlen, "chunkd:{%s}:processing:%s", queue, worker_id);
}

/* A chunk's checkpoint: a bitmap with bit i set once item i's result is in the stream; deleted with the chunk.
 * ckpt is work_chunk_t.ckpt, "<chunk id>:<hash of the chunk text>". */
static inline void keys_done(char *out, size_t outlen, const char *queue, const char *ckpt)
{
    snprintf(out, outlen, "chunkd:{%s}:done:%s", queue, ckpt);
}

/* The key whose existence is a worker's lease (a string with an expiry). */
static inline void keys_lease(char *out, size_t outlen, const char *queue, const char *worker_id)
{
    snprintf(out, outlen, "chunkd:{%s}:lease:%s", queue, worker_id);
}

/* The marker of a running collector's consumer name (a string with an expiry; collector.lua). Needs
 * strlen(queue) + strlen(consumer) + KEYS_COLLECTOR_EXTRA bytes. */
#define KEYS_COLLECTOR_EXTRA 24
static inline void keys_collector(char *out, size_t outlen, const char *queue, const char *consumer)
{
    snprintf(out, outlen, "chunkd:{%s}:collector:%s", queue, consumer);
}

#endif
