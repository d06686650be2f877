/* breaker: a circuit breaker, a state machine whose callers pass it the time (so it is unit-tested without a
 * clock), shared by the threads of one process.
 *
 * Closed: every call may start, and each call's outcome goes into the window: the last BREAKER_SAMPLE outcomes
 * that are less than window_ms old (the most recent calls, so that a run of successes does not hide an API that
 * just went down). Once the window holds at least min_calls outcomes of which failure_percent or more are failures,
 * the circuit opens. Open: no call may start until the probe time, probe_base_ms after it opened, doubling at each
 * failed probe round up to probe_max_ms; at that time it turns half-open. Half-open: `probes` calls may start (a new
 * round of them when none has reported for window_ms: a probe may have been abandoned); `probes` successes close
 * the circuit (window emptied, backoff back to probe_base_ms), one failure opens it again with the doubled backoff.
 * An outcome while open (a call started before it opened) changes nothing.
 *
 * Thread-safe: every function takes the breaker's mutex, except breaker_allow() while closed (one atomic load).
 * Each change of state is reported to on_change, under the mutex (it must not call the breaker). */
#ifndef CHUNKD_BREAKER_H
#define CHUNKD_BREAKER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define BREAKER_SAMPLE 100  /* the most outcomes the window holds */
#define BREAKER_WHY_MAX 320 /* bytes of the reason the circuit opened, with the last failure's text */

typedef enum { BREAKER_CLOSED = 0, BREAKER_OPEN = 1, BREAKER_HALF_OPEN = 2 } breaker_state_t;

typedef struct breaker_config {
    int64_t window_ms;     /* the oldest outcome the window holds, at least 1 */
    int failure_percent;   /* 1 to 100: the share of failures in the window that opens the circuit */
    long min_calls;        /* outcomes the window must hold before it can open (1 to BREAKER_SAMPLE) */
    int64_t probe_base_ms; /* first wait before probing, at least 1 */
    int64_t probe_max_ms;  /* cap of the doubling wait, at least probe_base_ms */
    int probes;            /* calls of a half-open round, and the successes that close it (at least 1) */
} breaker_config_t;

typedef struct breaker breaker_t;

/* why: the reason of the change (borrowed, valid during the call). */
typedef void (*breaker_change_fn)(void *arg, breaker_state_t from, breaker_state_t to, int64_t next_probe_in_ms,
                                  const char *why);

/* The config is copied; on_change may be NULL. */
breaker_t *breaker_new(const breaker_config_t *c, breaker_change_fn on_change, void *arg);
void breaker_free(breaker_t *b);

/* May a call start now? Closed: yes. Open: no, until the probe time, when the circuit turns half-open. Half-open:
 * yes for the round's `probes` calls (each yes counts as one of them), then no. */
bool breaker_allow(breaker_t *b, int64_t now_ms);

/* Records a call's outcome (error: the failure's text, borrowed, or NULL). Returns true when the call failed and
 * the circuit is not closed after it (it opened the circuit, or failed while open or as a probe): the caller does
 * not count such an attempt against the item. */
bool breaker_record(breaker_t *b, int64_t now_ms, bool failed, const char *error);

/* True when the outcome recorded at failed_at_ms was in the window when the circuit last opened from closed: one of
 * the calls that opened it (breaker_record() excuses only the last of them; a caller can give back the others). */
bool breaker_tripped_by(breaker_t *b, int64_t failed_at_ms);

/* The state at now_ms (turning open into half-open once the probe time is reached), with a sentence saying why
 * in why (when not closed; "" when closed). */
breaker_state_t breaker_state(breaker_t *b, int64_t now_ms, char *why, size_t whylen);

/* Name of a state for logs: "closed", "open", "half-open". */
const char *breaker_state_name(breaker_state_t st);

#endif
