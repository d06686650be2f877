/* ratelimit_math: the pure arithmetic of the global rate limit (see ratelimit.h), apart from its Redis script.
 *
 * Parsing "--rate-limit 200/s" and "30/m", the default burst, and the size of the blocks of tokens a worker
 * leases at once (about RATELIMIT_BLOCK_MS of the rate this worker has been granted lately, an exponentially
 * weighted average). No I/O, no clock: unit-tested on its own. */
#ifndef CHUNKD_RATELIMIT_MATH_H
#define CHUNKD_RATELIMIT_MATH_H

#define RATELIMIT_BLOCK_MS 50.0      /* a leased block is about this much of the worker's granted rate */
#define RATELIMIT_EWMA_TAU_S 1.0     /* time constant of the granted-rate average */
#define RATELIMIT_MAX_PER_S 1000000.0

/* Parses "N/s" or "N/m" (N a positive decimal, e.g. "200/s", "30/m", "2.5/s") into calls per second. Returns 0,
 * or -1 for anything else (empty, no unit, zero, negative, over RATELIMIT_MAX_PER_S per second). */
int ratelimit_parse_rate(const char *text, double *per_s);

/* The burst when --rate-burst is 0: 100 ms worth of the limit, at least 1 call (never more than 1 s worth). */
double ratelimit_default_burst(double per_s);

/* Tokens to ask for at once: RATELIMIT_BLOCK_MS of granted_per_s, rounded, at least 1, at most burst and at most
 * need (items waiting for one). */
long ratelimit_block(double granted_per_s, double burst, long need);

/* The granted-rate average after `granted` tokens came dt_s seconds after the previous update. */
double ratelimit_ewma(double avg_per_s, double granted, double dt_s);

#endif
