/* work: a chunk and its items while a worker holds them, from fetch to commit.
 *
 * Fetch creates a work_chunk and hands it to one scheduler (sched_submit). Its loop hands each item to the committer
 * as it finishes (through the commit queue's mutex), and with the last item (or the chunk's marker, on a drain)
 * the chunk itself; the committer frees it once Redis has everything. While items still run, loop and committer
 * share the chunk but each writes only its own fields (grouped below), so no field needs a lock. */
#ifndef CHUNKD_WORK_H
#define CHUNKD_WORK_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "chunk.h"
#include "list.h"
#include "loop.h"
#include "scheduler.h"

typedef struct work_chunk work_chunk_t;

typedef enum {
    WORK_COMMIT = 0, /* write results (or the dead record when dead_reason is set) and remove from processing */
    WORK_REQUEUE,    /* give the whole chunk back to pending (drain) */
} work_disposition_t;

/* Items travel from the loops to the committer one by one, so that a chunk's finished items are committed (and
 * checkpointed) while its other items still run. A work_item_t in the committer's queue is either a finished item
 * or its chunk's marker (work_item_is_marker): the marker carries a chunk-level event, a dead chunk, a chunk with
 * nothing left to run, or a drain's requeue. */

typedef struct work_item {
    chunk_item_t *in;        /* borrowed from chunk->decoded */
    work_chunk_t *chunk;     /* the chunk this item belongs to */
    int64_t started_ms;      /* monotonic, when the handler got it */
    int attempts;            /* handler runs so far */
    int status;              /* last HTTP status (http handler), 0 if none */
    char *error_body;        /* owned: when it fails, an excerpt of that response's body (http), or NULL; the
                              * handler sets it just before sched_item_done, work_item_finish consumes it */
    size_t error_body_len;
    bool finished;
    bool ok;
    bool done_before;        /* committed by an earlier delivery of the chunk (checkpoint): not run again */
    char *result_line;       /* owned once finished: the encoded result line */
    size_t result_len;
    char *dead_record;       /* owned: set when the item failed, for the dead list */
    size_t dead_len;
    loop_timer_t timer;      /* for the handler's use while the item runs */
    void *handler_data;      /* for the handler's use while the item runs */
    sched_item_t sched;      /* the scheduler's alone (scheduler.c) */
    struct work_item *commit_next; /* link in the committer's queue, then in its round */
} work_item_t;

struct work_chunk {
    char *raw;               /* owned: the list element exactly as fetched (the commit script matches it) */
    size_t raw_len;
    chunk_t decoded;         /* empty when dead_reason is set */
    work_item_t *items;      /* owned array of decoded.n_items */
    work_item_t marker;      /* the chunk's own entry in the committer's queue */
    /* "<chunk id>:<hash of raw>": names the chunk's checkpoint and delivery count, so that two different chunks
     * that happen to share an id (built by hand) never share them; empty for a dead chunk. */
    char ckpt[CHUNK_ID_MAX + 18];
    /* Set by fetch before the chunk reaches a loop. */
    size_t n_run;            /* items this delivery runs: those not done_before */
    long long deliveries;    /* times the chunk was fetched (1 the first time) */
    bool checkpointed;       /* Redis may hold done bits for it: commits must consult and clear them */
    bool include_item;       /* --include-item: result lines carry their item */
    char *poison;            /* owned: over --max-deliveries; the items fail with this reason instead of running */
    /* Loop side (dead_reason: fetch; disposition: the drain, after the loop stopped). */
    size_t n_finished;       /* of n_run */
    bool starting;           /* the loop is still handing items to the handler */
    char *dead_reason;       /* owned: why the chunk cannot run at all; it then goes to dead */
    work_disposition_t disposition;
    /* Set by the loop when one of its items starts a retry wait, read by the committer: the chunk will finish late,
     * so its finished items are committed as they finish instead of waiting for the chunk (commit_defer). */
    atomic_bool retried;
    /* Committer side (only the committer touches these). */
    size_t n_received;       /* finished items the committer has taken */
    size_t n_released;       /* of the window's weight */
    bool commit_dead;        /* fenced or given up: later items are dropped, not sent */
    bool in_round;
    work_item_t *round_items;  /* this round's items of the chunk, linked by commit_next */
    size_t round_n;
    bool round_marker;       /* this round carries the marker */
    work_chunk_t *round_next;
    int commit_sends;        /* times the committer sent it (more than 1 after a lost connection) */
    long long partial_moves; /* 1 + rconn_master_moves() when its first partial commit was written; 0: none */
    bool requeue_sent;       /* its last group went as COMMIT_MODE_REQUEUE */
    int64_t fetched_ms;      /* monotonic */
    list_node_t sched_link;  /* the scheduler's: in its inbox or its running chunks; sched_take_unfinished's list */
};

/* How much of the window a chunk takes: the items it runs, or 1 for a chunk that runs none (a dead one, or one
 * whose items were all committed by an earlier delivery). */
static inline size_t work_chunk_weight(const work_chunk_t *c) { return c->n_run ? c->n_run : 1; }

static inline bool work_item_is_marker(const work_item_t *it) { return it == &it->chunk->marker; }

/* Marks the items whose bit is set in a Redis bitmap (SETBIT order: bit 7 of byte 0 is item 0) as done_before and
 * sets n_run. bits may be NULL. */
void work_chunk_apply_checkpoint(work_chunk_t *c, const unsigned char *bits, size_t len);

/* Takes ownership of raw (malloc'd). Decodes it; on failure the chunk has dead_reason set and no items. */
work_chunk_t *work_chunk_new(char *raw, size_t raw_len, int64_t now_ms);
void work_chunk_free(work_chunk_t *c);

/* Turns a decoded chunk into one that cannot run (it goes to dead with why). */
void work_chunk_make_dead(work_chunk_t *c, const char *why);

/* Records an item's outcome and encodes its result line (and dead record when it failed), then releases the
 * item's text and value (chunk_item_release). result_json is the result as JSON text when ok (it may be the
 * item's own text); error the reason otherwise. Both are borrowed. */
void work_item_finish(work_item_t *it, bool ok, const char *result_json, size_t result_len, const char *error,
                      int64_t now_ms);

/* The dead record of a chunk that cannot run (dead_reason set): {"error":"...","bytes":N,"raw":"<chunk text>"},
 * whole (the worker only reads chunks up to --max-chunk-bytes; fetch.lua moves larger ones to dead itself). */
char *work_chunk_dead_record(const work_chunk_t *c, size_t *len);

#endif
