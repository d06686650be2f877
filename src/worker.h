/* worker: one worker process's pipeline, wired together.
 *
 *   pending --fetch--> loops (handler) --> commit --> results stream
 *
 * Used by `chunkd worker` and, in-process, by `chunkd run`. The caller owns signals and decides when to drain. */
#ifndef CHUNKD_WORKER_H
#define CHUNKD_WORKER_H

#include <stdbool.h>
#include <stddef.h>

#include "settings.h"

typedef struct worker worker_t;

/* s must outlive the worker; s->redis_url must be set. */
worker_t *worker_new(const settings_t *s);
/* Checks the handler's settings, serves /healthz, /readyz and /metrics (a port it cannot bind is an error here,
 * before anything is taken from Redis), waits for Redis while it cannot be reached for up to s->redis_wait_ms
 * (live, not ready: "waiting for Redis"; a Redis that refuses AUTH is an error at once), registers and starts the
 * threads. While it waits it takes SIGTERM/SIGINT itself. Returns 0; WORKER_BAD_SETTINGS when the handler rejects
 * its settings (exit status 2); WORKER_STOPPED when a signal ended the wait; or -1 for anything else; all with a
 * one-line reason in err. */
#define WORKER_BAD_SETTINGS (-2)
#define WORKER_STOPPED (-3)
int worker_start(worker_t *w, char *err, size_t errlen);
/* Marks the worker as draining from this instant (/readyz turns 503); worker_drain() does the rest. */
void worker_begin_drain(worker_t *w);
/* True once pending was found empty with nothing held (for --exit-when-empty). */
bool worker_idle(worker_t *w);
/* True once Redis has refused any of the worker's connections a command for lack of rights (rconn_denied): with
 * a right missing the worker cannot do its work (fetch, commit, lease, rate limit) until an operator changes its
 * Redis user, so cmd_worker stops it. Copies Redis's reply to why. */
bool worker_denied(char *why, size_t whylen);
/* Drains: stops fetching, lets in-flight items finish until --drain-timeout-ms, commits, gives unfinished chunks
 * back to pending, unregisters. Returns 0 when every chunk was settled in Redis. */
int worker_drain(worker_t *w);
/* Makes a drain blocked on an unreachable Redis give up (second signal). */
void worker_abort(worker_t *w);
void worker_free(worker_t *w);
/* This worker's id. */
const char *worker_id(const worker_t *w);

#endif
