/* lease: workers prove they are alive, and take turns giving a dead worker's chunks back.
 *
 * Each worker holds chunkd:{Q}:lease:<id>, a key that expires after --lease-ms and is renewed every third of it.
 * Every second one worker (whoever takes the short lock chunkd:{Q}:reaper) checks the registered workers: one
 * whose lease has expired is reaped by one script (reap.lua) that moves its processing list to the front of
 * pending and unregisters it. A reaped worker that comes back finds its chunks gone: its commits are fenced (they
 * write nothing), and it registers again. */
#ifndef CHUNKD_LEASE_H
#define CHUNKD_LEASE_H

#include <stdbool.h>

#include "keys.h"
#include "rconn.h"

/* Sets the lease and registers the worker (both in one round trip). Returns 1 when the lease was still held, 0
 * when it had expired or never existed (registered afresh), -1 on a Redis error, with Redis's error reply or the
 * connection's error in why (a refusal such as NOPERM must reach the log as Redis said it). */
int lease_renew(rconn_t *c, const keys_t *keys, const char *worker_id, long long lease_ms, char *why, size_t whylen);
/* Drops the lease and the registration (clean exit). */
void lease_release(rconn_t *c, const keys_t *keys, const char *worker_id);
/* If this caller gets the reaper lock for lock_ms (or force), reaps every registered worker whose lease expired.
 * Returns the number of chunks moved back to pending (0 if none or not our turn), -1 on error. *workers_reaped
 * counts the workers reaped. */
long long lease_reap(rconn_t *c, const char *queue, const keys_t *keys, const char *self_id, long long lock_ms,
                     bool force, long long *workers_reaped);

/* Chunks held in the processing lists of the queue's registered workers, except exclude_id's (NULL: all), read in
 * one pipelined round trip after SMEMBERS. Sets *workers to the number registered (if not NULL). Returns -1 on a
 * Redis error. */
long long lease_processing_chunks(rconn_t *c, const char *queue, const keys_t *keys, const char *exclude_id,
                                  long long *workers);

#endif
