/* collect: reads the results stream and writes result lines.
 *
 * The collector reads through the consumer group chunkd-collect in batches, writes the lines, flushes them, and
 * only then acknowledges and deletes the entries (one script that also counts them once in stats "collected").
 * A collector that crashes between writing and acknowledging re-reads its own pending entries on restart, so at
 * most one batch is written twice and nothing is lost. It holds one batch in memory, whatever the run's size.
 *
 * One collector at a time reads under a consumer name: two would split the results between their outputs. A
 * running collector keeps a marker chunkd:{Q}:collector:<consumer> (collector.lua) with a 5 s expiry that it renews
 * every third of that, and reads the stream only while its renewal is that fresh. A collector that finds the name
 * marked waits for the marker to expire once (a collector that died frees it so) and is refused if it is renewed. */
#ifndef CHUNKD_COLLECT_H
#define CHUNKD_COLLECT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

#include "settings.h"
#include "sink.h"

typedef enum {
    COLLECT_AVAILABLE,  /* write what the stream holds now, then return */
    COLLECT_UNTIL_DONE, /* return once the queue is sealed and every enqueued item's result is written */
    COLLECT_FOLLOW,     /* return only when *stop is set */
} collect_mode_t;

typedef struct collect_progress {
    long long written;   /* lines written by this call */
    long long collected; /* stats "collected" of the queue, after the last batch */
    long long enqueued;  /* stats "enqueued" of the queue, after the last batch */
    long long dead_chunk_items; /* stats "dead_chunk_items": items of chunks that went to dead unread (no result) */
    bool sealed;         /* the queue is sealed (its input complete), as last read; --until-done waits for it */
    /* Read when collect_run returns: items that failed and were not requeued since (ok:false results and items of
     * dead chunks: stats failed + dead_chunk_items - requeued_dead), and of those, the dead chunks' items
     * (dead_chunk_items - requeued_chunk_items). */
    long long failed_left;
    long long dead_chunk_items_left;
    struct tally *tally; /* borrowed, may be NULL: every line written is counted there (set by the caller; kept) */
} collect_progress_t;

/* Items finished: collected, or in a chunk that went to dead unread. --until-done ends once it reaches enqueued. */
static inline long long collect_finished(const collect_progress_t *p) { return p->collected + p->dead_chunk_items; }

/* Runs until the mode says so or *stop becomes true; progress->failed_left and dead_chunk_items_left are the
 * queue's at the end. producer_done, when not NULL, must become true before
 * COLLECT_UNTIL_DONE may finish (chunkd run sets it when its enqueue ends). Returns 0, or -1 with a reason in err
 * (Redis unreachable at start, the consumer name in use by a running collector, or the output cannot be written). */
int collect_run(const settings_t *s, sink_t *sink, collect_mode_t mode, const atomic_bool *stop,
                const atomic_bool *producer_done, collect_progress_t *progress, char *err, size_t errlen);

#endif
