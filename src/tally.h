/* tally: what a collector has written, counted as it writes: result lines ok and failed, the most common error
 * reasons, and whether the last results are mostly failures (the warning of a run going badly).
 *
 * A reason is the line's "error" text normalised a little so that variants group: the retry suffix
 * " (gave up after N attempts)" is dropped and the text is cut to TALLY_REASON_MAX bytes (on a UTF-8 boundary).
 * At most TALLY_REASONS_MAX distinct reasons are kept; later new ones count under "other". Pure: no I/O, the time
 * is given by the caller. Not thread-safe: one collector thread feeds it, and the summary is read after it ends. */
#ifndef CHUNKD_TALLY_H
#define CHUNKD_TALLY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TALLY_REASON_MAX 80       /* bytes of a reason kept */
#define TALLY_REASONS_MAX 64      /* distinct reasons kept */
#define TALLY_WINDOW 100          /* the warning looks at this many last results */
#define TALLY_WARN_EVERY_MS 10000 /* at most one warning this often */

typedef struct tally tally_t;

tally_t *tally_new(void);
void tally_free(tally_t *t);

/* Counts one result line (line[0..len), JSON as result.h writes it). Lines that are not result lines (no "ok"
 * field) are not counted. */
void tally_add(tally_t *t, const char *line, size_t len);

long long tally_ok(const tally_t *t);
long long tally_failed(const tally_t *t);

/* The reasons, most common first: returns how many there are (up to max) and points reasons[i] (borrowed, valid
 * until the next tally_add) and counts[i] at them. */
size_t tally_top(const tally_t *t, const char **reasons, long long *counts, size_t max);

/* When more than half of the last TALLY_WINDOW results (a full window) are failures and no warning was due in the
 * last TALLY_WARN_EVERY_MS: writes the warning's text into out and returns true (the next one is due no earlier than
 * now_ms + TALLY_WARN_EVERY_MS). */
bool tally_warning(tally_t *t, int64_t now_ms, char *out, size_t outlen);

#endif
