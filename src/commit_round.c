/* commit_round: see commit_round.h. */
#include "commit_round.h"

#include <assert.h>
#include <stdatomic.h>
#include <stddef.h>

work_chunk_t *commit_round_group(work_item_t *list, work_item_t **carry)
{
    work_chunk_t *round = NULL, **tail = &round;
    *carry = NULL;
    for (work_item_t *it = list; it;) {
        work_item_t *next = it->commit_next;
        work_chunk_t *w = it->chunk;
        bool marker = work_item_is_marker(it);
        if (marker && w->in_round) {
            it->commit_next = *carry;
            *carry = it;
            it = next;
            continue;
        }
        if (!w->in_round) {
            w->in_round = true;
            w->round_items = NULL;
            w->round_n = 0;
            w->round_marker = false;
            w->round_next = NULL;
            *tail = w;
            tail = &w->round_next;
        }
        if (marker) {
            w->round_marker = true;
        } else {
            it->commit_next = w->round_items;
            w->round_items = it;
            w->round_n++;
            w->n_received++;
            assert(w->n_received <= w->n_run); /* a loop hands each item of the chunk over once */
        }
        it = next;
    }
    return round;
}

/* Whether a chunk's marker waits in the carry list. */
static bool marker_carried(const work_item_t *carry, const work_chunk_t *w)
{
    for (; carry; carry = carry->commit_next)
        if (carry->chunk == w) return true;
    return false;
}

work_chunk_t *commit_round_defer(work_chunk_t *round, work_chunk_t **deferred, const work_item_t *carry,
                                 bool stopping, int64_t now_ms, int64_t checkpoint_ms)
{
    work_chunk_t *send = NULL, **send_tail = &send;
    while (round) {
        work_chunk_t *w = round;
        round = w->round_next;
        w->round_next = NULL;
        /* A chunk with an item waiting to retry finishes late: its finished items go as they finish. */
        bool defer = !stopping && checkpoint_ms > 0 && !commit_round_ends_chunk(w) && !w->commit_dead &&
                     !atomic_load(&w->retried) && now_ms - w->fetched_ms < checkpoint_ms && !marker_carried(carry, w);
        if (defer) {
            w->round_next = *deferred;
            *deferred = w;
        } else {
            *send_tail = w;
            send_tail = &w->round_next;
        }
    }
    return send;
}

int64_t commit_round_due(const work_chunk_t *deferred, int64_t checkpoint_ms)
{
    int64_t due = INT64_MAX;
    for (; deferred; deferred = deferred->round_next)
        if (deferred->fetched_ms + checkpoint_ms < due) due = deferred->fetched_ms + checkpoint_ms;
    return due;
}

work_chunk_t *commit_round_build(work_item_t *taken, work_item_t **carry, work_chunk_t **deferred, bool stopping,
                                 int64_t now_ms, int64_t checkpoint_ms)
{
    work_item_t *list = *carry, **tail = &list;
    while (*tail) tail = &(*tail)->commit_next;
    *tail = taken;
    /* Deferred groups (their chunks still in_round) take their new items here, then rejoin. */
    work_chunk_t *round = commit_round_group(list, carry);
    while (*deferred) {
        work_chunk_t *w = *deferred;
        *deferred = w->round_next;
        w->round_next = round;
        round = w;
    }
    return commit_round_defer(round, deferred, *carry, stopping, now_ms, checkpoint_ms);
}
