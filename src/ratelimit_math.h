/* ratelimit_math: the pure arithmetic of the global rate limit (see ratelimit.h), apart from its Redis script.
 *
 * Parsing "--rate-limit 200/s" and "30/m", the default burst, the size of the block of tokens a worker asks
 * for (ratelimit.lua then caps it at 100 ms of the rate divided by the registered workers), and the adaptation
 * of the shared rate to 429s, once per window (ratelimit_adapt). No I/O, no clock: unit-tested on its own; the
 * bucket's arithmetic and the window's counting are the script's (tests/integration/test_ratelimit.py calls
 * it). */
#ifndef CHUNKD_RATELIMIT_MATH_H
#define CHUNKD_RATELIMIT_MATH_H

#include <stdbool.h>

#define RATELIMIT_MAX_PER_S 1000000.0

/* Parses "N/s" or "N/m" (N a positive decimal, e.g. "200/s", "30/m", "2.5/s") into calls per second. Returns 0,
 * or -1 for anything else (empty, no unit, zero, negative, over RATELIMIT_MAX_PER_S per second). */
int ratelimit_parse_rate(const char *text, double *per_s);

/* The burst when --rate-burst is 0: 100 ms worth of the limit, at least 1 call (never more than 1 s worth). */
double ratelimit_default_burst(double per_s);

/* Tokens to ask for at once: the items waiting for one (need), at most the burst, at least 1. */
long ratelimit_block(double burst, long need);

/* ---- Adaptation to 429s, like TCP congestion control (AIMD with one decision per window) ----
 *
 * ratelimit.lua counts, per window of the queue (RATELIMIT_WINDOW_MS, one for all workers), the calls
 * answered and the 429s reported; the first worker to see a window end gets its counts and decides, once, with
 * ratelimit_adapt:
 * - the window's 429 share is throttled / calls answered. After a cut, the next window starts a settle time
 *   later (RATELIMIT_SETTLE_MS_STR, or when the pause ends): the calls made at the old rate, and the API's own
 *   window that they filled, are not counted against the new rate (TCP: one decrease per round trip). The
 *   rate is cut (x RATELIMIT_DECREASE, not below RATELIMIT_FLOOR of the limit) only when the share passes the
 *   baseline by RATELIMIT_THRESHOLD; otherwise it grows by RATELIMIT_RECOVER of the limit per second of the
 *   window, up to the limit. After a cut, the calls answered ok per second in the window that made it are the
 *   ceiling (against a true limit, that limit): the
 *   rate grows fast up to RATELIMIT_NEAR_CEILING of it, then RATELIMIT_PROBE_SLOWER as fast, probing; past
 *   RATELIMIT_PAST_CEILING of it without a cut, the ceiling is forgotten (the API takes more now).
 * - the baseline is the share of 429s that do not follow our rate (an API that refuses some calls whatever the
 *   load). It starts at 0 and follows the share down. It is learnt from a cut that did not help: when the window
 *   after a cut has about the same share (at least RATELIMIT_SAME_SHARE of it) while its calls answered ok per
 *   second fell with the rate (at most RATELIMIT_OK_FELL of before), the 429s are not the load's: the baseline
 *   becomes that share and the cut is undone. (Against a true limit, a cut either lowers the share or, far above
 *   the limit, leaves the ok calls per second where they were: the limit's.) A share over
 *   RATELIMIT_MAX_BASELINE is always the load's: with a cut of x0.7, a true limit never shows a share that
 *   stays within RATELIMIT_SAME_SHARE under that bound, so the test cannot mistake one even when the ok calls
 *   per second were measured high.
 * - the queue's first window is a warm-up and decides nothing: its calls start in its middle, in a burst, and
 *   an API with fixed windows lets a start-up burst through at up to twice its limit. */
#define RATELIMIT_WINDOW_MS 1000
#define RATELIMIT_SETTLE_MS_STR "1000" /* after a cut, the next window starts this much later (ratelimit.lua) */
#define RATELIMIT_THRESHOLD 0.05
#define RATELIMIT_DECREASE 0.7
#define RATELIMIT_RECOVER 0.05
#define RATELIMIT_FLOOR 0.05
#define RATELIMIT_NEAR_CEILING 0.95
#define RATELIMIT_PROBE_SLOWER 0.2
#define RATELIMIT_PAST_CEILING 1.2
#define RATELIMIT_SAME_SHARE 0.8
#define RATELIMIT_OK_FELL 0.85
#define RATELIMIT_MAX_BASELINE 0.5

/* The shared state of the adaptation (kept in Redis between windows). */
typedef struct ratelimit_aimd {
    double rate_per_s;     /* the current shared rate, calls/s: within [RATELIMIT_FLOOR x limit, limit] */
    double baseline;       /* the 429 share that does not follow the rate, 0 to 1 */
    double cut_share;      /* the share of the window that made the last cut; 0 when the last window made none */
    double cut_ok_per_s;   /* that window's calls answered ok per second */
    double ceiling_per_s;  /* the calls answered ok per second when the rate was last cut; 0: none */
} ratelimit_aimd_t;

/* One window's counts, as ratelimit.lua kept them. */
typedef struct ratelimit_window {
    double calls;          /* calls answered in the window (reported by the workers within 50 ms) */
    double throttled;      /* 429s (and 503s with Retry-After) reported in it */
    double seconds;        /* its length (at least RATELIMIT_WINDOW_MS; longer when nobody called meanwhile) */
    bool first;            /* the queue's first window: a warm-up, not measured (calls start in its middle, in
                            * a burst, against an API whose own window was unused before it) */
} ratelimit_window_t;

typedef enum {
    RATELIMIT_WARMUP,      /* the queue's first window: nothing changed */
    RATELIMIT_RAISED,      /* no cut: the rate grew (or stayed at the limit) */
    RATELIMIT_CUT,         /* the rate was cut: pause until the window's first Retry-After deadline, if any */
    RATELIMIT_UNDONE,      /* the last cut did not help: the baseline was raised and the cut undone */
} ratelimit_adapt_t;

/* The window's 429 share, 0 to 1 (1 when it had 429s and no call was counted). */
double ratelimit_share(const ratelimit_window_t *w);

/* Decides the rate for the next window from the one that ended (w) under the limit limit_per_s; updates *a. */
ratelimit_adapt_t ratelimit_adapt(ratelimit_aimd_t *a, const ratelimit_window_t *w, double limit_per_s);

#endif
