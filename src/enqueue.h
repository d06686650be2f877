/* enqueue: turns JSON Lines into chunks on the pending list.
 *
 * Each line is checked (valid JSON, at most --max-item-bytes), given its id, and packed with the next ones into
 * a chunk of up to --chunk-size items. Chunks go to Redis several per round trip through one script that also
 * counts them, so "enqueued" always matches what was pushed. Bad lines are reported with their line number and
 * written to the rejects file with the reason; good lines still go. Memory holds one batch of chunks. */
#ifndef CHUNKD_ENQUEUE_H
#define CHUNKD_ENQUEUE_H

#include <stdatomic.h>
#include <stdio.h>

#include "idset.h"
#include "keys.h"
#include "rconn.h"
#include "settings.h"

typedef struct enqueue_result {
    long long lines;     /* lines read */
    long long items;     /* items enqueued */
    long long chunks;    /* chunks enqueued */
    long long rejected;  /* lines rejected */
    long long skipped;   /* items not enqueued because their id is in skip (run --resume) */
    bool refused_sealed; /* nothing more was enqueued: the queue is sealed (and --no-reopen was given) */
    bool sealed;         /* this run sealed the queue at the end of its input (--seal) */
    long long total;     /* when sealed: the queue's stats "enqueued", its total */
    char rejects_path[4200]; /* where rejected lines went (empty if none) */
} enqueue_result_t;

/* Reads `in` (named input_name in messages; "-" for stdin) to its end or until *stop, leaving out the items whose
 * id is in skip (borrowed; NULL: none). A sealed queue is opened first (s->reopen) or refused
 * (res->refused_sealed); with s->seal, an input read to its end (not stopped, no error) seals the queue. Returns 0, or -1
 * with a reason in err (Redis unreachable, read error, rejects file unwritable, the queue sealed). */
int enqueue_run(const settings_t *s, FILE *in, const char *input_name, const atomic_bool *stop,
                const idset_t *skip, enqueue_result_t *res, char *err, size_t errlen);

/* Seals queue (seal true: its input is complete) or opens it again (false), on connection c, creating its stats
 * hash when it has none. *was_sealed (may be NULL) says whether it was sealed before, *enqueued (may be NULL) is
 * its stats "enqueued". Returns 0, or -1 with the reason in err. */
int enqueue_seal(rconn_t *c, const char *queue, bool seal, bool *was_sealed, long long *enqueued, char *err,
                 size_t errlen);
/* Whether the queue of keys k is sealed: 1 sealed, 0 open, -1 not known (the reply was an error or the connection
 * failed: rconn_error(c), or the reply's text in err when err is not NULL). */
int enqueue_sealed(rconn_t *c, const keys_t *k, char *err, size_t errlen);

#endif
