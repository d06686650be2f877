/* progress: one line of progress for people: done/total, a bar, rate, ETA. Pure formatting (unit-tested), plus a
 * small rate tracker. */
#ifndef CHUNKD_PROGRESS_H
#define CHUNKD_PROGRESS_H

#include <stddef.h>
#include <stdint.h>

typedef struct progress_rate {
    long long last_done;   /* done at the last sample */
    int64_t last_ms;       /* monotonic time of the last sample; 0 before the first */
    double per_s;          /* rate over the last interval */
} progress_rate_t;

/* Feeds a sample (done so far at now_ms) and returns the rate over the interval since the previous sample. */
double progress_rate_update(progress_rate_t *r, long long done, int64_t now_ms);

/* Writes "[#####-----]  45.0%  4,500/10,000  1,234/s  ETA 4s" (bar_width characters of bar; no bar when 0). ETA is
 * "-" when the rate is 0 or total is unknown (0). Returns out. */
char *progress_format(char *out, size_t outlen, long long done, long long total, double per_s, int bar_width);

#endif
