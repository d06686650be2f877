/* ratelimit_math: the pure arithmetic of the global rate limit (see ratelimit.h), apart from its Redis script.
 *
 * Parsing "--rate-limit 200/s" and "30/m", the default burst, and the size of the block of tokens a worker asks
 * for (ratelimit.lua then caps it at 100 ms of the rate divided by the registered workers). No I/O, no clock:
 * unit-tested on its own; the bucket's arithmetic is the script's (tests/integration/test_ratelimit.py calls it). */
#ifndef CHUNKD_RATELIMIT_MATH_H
#define CHUNKD_RATELIMIT_MATH_H

#define RATELIMIT_MAX_PER_S 1000000.0

/* Parses "N/s" or "N/m" (N a positive decimal, e.g. "200/s", "30/m", "2.5/s") into calls per second. Returns 0,
 * or -1 for anything else (empty, no unit, zero, negative, over RATELIMIT_MAX_PER_S per second). */
int ratelimit_parse_rate(const char *text, double *per_s);

/* The burst when --rate-burst is 0: 100 ms worth of the limit, at least 1 call (never more than 1 s worth). */
double ratelimit_default_burst(double per_s);

/* Tokens to ask for at once: the items waiting for one (need), at most the burst, at least 1. */
long ratelimit_block(double burst, long need);

#endif
