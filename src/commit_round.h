/* commit_round: how the committer turns the entries it took off its queue into a round, without Redis or threads
 * (commit.c sends the rounds; tests/unit/test_commit_round.c tests this part alone).
 *
 * A round is a list of chunks linked by round_next, each with its group: the chunk's items taken this round
 * (round_items, linked by commit_next, and round_n) and whether its marker is among them (round_marker). A chunk is
 * in at most one group per round (in_round), so it is settled at most once per round: a marker whose chunk already
 * has items in the round waits for the next round (the carry list). The group of a chunk younger than
 * --checkpoint-ms that does not end its chunk waits too (the deferred list, still in_round), taking the chunk's
 * further items, so that a chunk that finishes quickly is committed once, whole, instead of once per batch its items
 * fall into. These functions touch only the committer's fields of work_chunk_t (work.h) and only the committer
 * thread calls them. */
#ifndef CHUNKD_COMMIT_ROUND_H
#define CHUNKD_COMMIT_ROUND_H

#include <stdbool.h>
#include <stdint.h>

#include "work.h"

/* Whether settling this chunk's group ends the chunk (the committer then frees it): the group carries the marker,
 * or the chunk's last item. */
static inline bool commit_round_ends_chunk(const work_chunk_t *w)
{
    return w->round_marker || w->n_received == w->n_run;
}

/* Adds the entries of list (linked by commit_next) to groups. Returns the chunks that joined the round, in the
 * order their first entries came, and sets *carry to the markers held back for the next round. Chunks already
 * in_round (deferred groups) take their entries but are not returned again. */
work_chunk_t *commit_round_group(work_item_t *list, work_item_t **carry);

/* Splits the round: returns the groups to send now, in order, and pushes onto *deferred the groups of chunks
 * fetched less than checkpoint_ms before now_ms that do not end their chunk, are not fenced, and whose marker is
 * not in carry (the group must then go, so that the marker can). Nothing is deferred when stopping or when
 * checkpoint_ms is 0. */
work_chunk_t *commit_round_defer(work_chunk_t *round, work_chunk_t **deferred, const work_item_t *carry,
                                 bool stopping, int64_t now_ms, int64_t checkpoint_ms);

/* When the first deferred group falls due (monotonic ms; INT64_MAX: none). */
int64_t commit_round_due(const work_chunk_t *deferred, int64_t checkpoint_ms);

/* One round: the markers held back last time (*carry) and then the entries taken (linked by commit_next) are
 * grouped (commit_round_group); the deferred groups rejoin at the front, with whatever new items they took; the
 * whole is split again (commit_round_defer). Returns the groups to send now; *carry and *deferred are left holding
 * what waits for the next round. */
work_chunk_t *commit_round_build(work_item_t *taken, work_item_t **carry, work_chunk_t **deferred, bool stopping,
                                 int64_t now_ms, int64_t checkpoint_ms);

#endif
