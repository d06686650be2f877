/* ratelimit: a queue-wide rate limit (--rate-limit N/s or N/m, --rate-burst) and concurrency cap
 * (--max-inflight-global) shared by every worker of a queue through Redis.
 *
 * Rate. The bucket lives in Redis (chunkd:{Q}:rate, a hash) and only ratelimit.lua touches it, with Redis's clock:
 * a token bucket of capacity --rate-burst (default 100 ms worth, at least 1) refilled at the current rate. A call
 * never costs a round trip: this module's thread leases small blocks of tokens (about 100 ms of what this worker
 * has been granted lately, at least 1, never more than the items waiting) and hands them to the event loops
 * through an atomic counter. Loops gate every call (an item's start and each http retry, sched_acquire): without
 * a token the item waits in the loop's FIFO, retried on a short loop timer. A block may be reserved ahead while
 * the bucket is empty (it goes negative, by at most 200 ms of the rate, as GCRA's theoretical arrival time runs
 * ahead): the script grants it with the delay after which it may be used, and the thread hands it over then and
 * asks for the next one. So every lease round trip brings a whole block, and workers are served in the order
 * they ask; the long-run rate is exact because every token granted is paid for by refill time.
 *
 * Adaptive, like TCP congestion control. Every call that ends (ratelimit_call_ended) and every 429 (or 503 with
 * Retry-After, ratelimit_throttled) is counted by the loops in atomics; this thread reports the counts with its
 * next lease, within 50 ms. ratelimit.lua adds them up in the queue's window (1 s, one for all workers); the
 * first worker to lease after the window's end gets its counts and decides, once for the queue, with
 * ratelimit_adapt (ratelimit_math.h): the rate is cut x0.7 only when the window's 429 share passes a baseline
 * by 5 points, and otherwise grows by 5 % of the limit per second (slower near the last cut's ceiling), up to
 * the limit. On a cut everyone pauses until the window's first Retry-After deadline (a deadline in Redis's
 * clock, shared by all workers; the 429s that come after it in the same burst do not move it), and the next
 * window starts after the pause and a settle time of 1 s, so the calls made at the old rate are not counted
 * again. A single 429 among many calls changes nothing but its own item's retry. 429s that do not follow the
 * rate (the share stays while the calls answered ok fall with a cut) become the baseline and the cut is undone.
 * The gauges chunkd_rate_limit_current (the shared rate as this worker last saw it) and chunkd_rate_paused,
 * and the counter chunkd_rate_decreases_total (cuts this worker decided), show it.
 *
 * Concurrency. chunkd:{Q}:inflight is a hash: worker id -> slots it holds. A call holds a slot from sched_acquire
 * until it ends (loop_release, or the item's end). Slots are leased and given back in blocks, like tokens: free
 * slots go back to Redis when no item of this worker waits; while slots are contended (someone asked in vain in
 * the last second) a worker holding more than the cap divided by the registered workers gives back its excess
 * as calls end. A dead worker's slots are returned by the reaper (reap.lua) when its lease expires, and a
 * worker's are removed at a clean exit.
 *
 * Threads: ratelimit_try_acquire, ratelimit_release_slot, ratelimit_wait, ratelimit_call_ended and
 * ratelimit_throttled are called by loops and only touch atomics (and a condition variable to wake the thread);
 * everything else is this module's own thread, with its own Redis connection. */
#ifndef CHUNKD_RATELIMIT_H
#define CHUNKD_RATELIMIT_H

#include <stdbool.h>
#include <stddef.h>

#include "keys.h"
#include "settings.h"

typedef struct ratelimit ratelimit_t;

/* Returns NULL when neither --rate-limit nor --max-inflight-global is set (settings_parse checked --rate-limit).
 * s and keys must outlive it. */
ratelimit_t *ratelimit_new(const settings_t *s, const keys_t *keys, const char *worker_id);
/* Starts the thread. Returns 0 or -1. */
int ratelimit_start(ratelimit_t *rl);
/* Stops the thread and frees everything (NULL is fine). */
void ratelimit_free(ratelimit_t *rl);

/* ---- loops (any thread) ---- */

/* Takes one token and one slot (each only when its limit is on). Returns false, taking nothing, when either is
 * missing. *slot tells whether a slot was taken (release it with ratelimit_release_slot). */
bool ratelimit_try_acquire(ratelimit_t *rl, bool *slot);
void ratelimit_release_slot(ratelimit_t *rl);
/* Items waiting in the loops' FIFOs: +1 when one starts waiting, -1 when it stops. */
void ratelimit_wait(ratelimit_t *rl, long delta);
/* A call ended (answered or not): counted in the queue's window, with the 429s. */
void ratelimit_call_ended(ratelimit_t *rl);
/* The upstream answered 429 (or 503 with Retry-After); retry_after_ms -1 when there was no Retry-After. Called
 * after ratelimit_call_ended for the same call. */
void ratelimit_throttled(ratelimit_t *rl, long retry_after_ms);

#endif
