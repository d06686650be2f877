/* Unit tests of commit_round.c: the committer's rounds built from the entries it took off its queue (grouping by
 * chunk, markers carried to the next round, young chunks deferred, when a deferred group falls due). No Redis, no
 * threads: chunks are built by hand with only the fields the committer reads. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

#include "commit_round.h"

#define CKPT_MS 1000 /* --checkpoint-ms in these tests */

/* A chunk of n items that runs all of them, fetched at fetched_ms. */
static work_chunk_t *chunk_new(size_t n, int64_t fetched_ms)
{
    work_chunk_t *w = calloc(1, sizeof *w);
    assert_non_null(w);
    w->items = calloc(n ? n : 1, sizeof *w->items);
    assert_non_null(w->items);
    for (size_t i = 0; i < n; i++) w->items[i].chunk = w;
    w->marker.chunk = w;
    w->n_run = n;
    w->fetched_ms = fetched_ms;
    return w;
}

static void chunk_free(work_chunk_t *w)
{
    free(w->items);
    free(w);
}

/* Links entries into a queue list (commit_next), as the loops push them; NULL ends the arguments. */
static work_item_t *queue_of(work_item_t *first, ...)
{
    va_list ap;
    va_start(ap, first);
    work_item_t *tail = first;
    for (work_item_t *it = va_arg(ap, work_item_t *); it; it = va_arg(ap, work_item_t *)) {
        tail->commit_next = it;
        tail = it;
    }
    if (tail) tail->commit_next = NULL;
    va_end(ap);
    return first;
}

static size_t count_chunks(const work_chunk_t *list)
{
    size_t n = 0;
    for (; list; list = list->round_next) n++;
    return n;
}

static bool group_has(const work_chunk_t *w, const work_item_t *item)
{
    for (const work_item_t *it = w->round_items; it; it = it->commit_next)
        if (it == item) return true;
    return false;
}

/* What commit.c's drop does to a group's round state once it is settled. */
static void settle(work_chunk_t *w)
{
    w->in_round = false;
    w->round_items = NULL;
    w->round_n = 0;
    w->round_next = NULL;
}

static void test_group_by_chunk_in_first_seen_order(void **state)
{
    (void)state;
    work_chunk_t *a = chunk_new(4, 0), *b = chunk_new(3, 0);
    work_item_t stale;
    work_item_t *carry = &stale; /* whatever it held: commit_round_group sets it */
    work_chunk_t *round = commit_round_group(
        queue_of(&b->items[0], &a->items[2], &b->items[1], &a->items[0], &b->items[2], NULL), &carry);
    assert_null(carry);
    assert_ptr_equal(round, b);
    assert_ptr_equal(b->round_next, a);
    assert_null(a->round_next);
    assert_true(a->in_round && b->in_round);
    assert_int_equal(b->round_n, 3);
    assert_int_equal(a->round_n, 2);
    assert_int_equal(b->n_received, 3);
    assert_int_equal(a->n_received, 2);
    assert_true(group_has(a, &a->items[0]) && group_has(a, &a->items[2]));
    assert_false(group_has(a, &a->items[1]));
    for (size_t i = 0; i < 3; i++) assert_true(group_has(b, &b->items[i]));
    assert_false(a->round_marker || b->round_marker);
    /* b has all of its items: settling its group ends it; a has not. */
    assert_true(commit_round_ends_chunk(b));
    assert_false(commit_round_ends_chunk(a));
    chunk_free(a);
    chunk_free(b);
}

static void test_marker_alone_joins_the_round(void **state)
{
    (void)state;
    /* A chunk with nothing to run (dead, or all items done before) is settled by its marker alone. */
    work_chunk_t *dead = chunk_new(0, 0);
    work_item_t *carry = NULL;
    work_chunk_t *round = commit_round_group(queue_of(&dead->marker, NULL), &carry);
    assert_ptr_equal(round, dead);
    assert_null(carry);
    assert_true(dead->round_marker);
    assert_int_equal(dead->round_n, 0);
    assert_true(commit_round_ends_chunk(dead));
    chunk_free(dead);
}

static void test_marker_after_items_waits_for_next_round(void **state)
{
    (void)state;
    /* A drain: two items finished, then the marker requeues the chunk. The marker would settle the chunk a second
     * time in the same round, so it waits; the next round carries it alone. */
    work_chunk_t *a = chunk_new(5, 0), *b = chunk_new(2, 0);
    work_item_t *carry = NULL;
    work_chunk_t *round = commit_round_group(
        queue_of(&a->items[0], &a->items[1], &b->marker, &a->marker, NULL), &carry);
    assert_int_equal(count_chunks(round), 2);
    assert_ptr_equal(round, a);
    assert_ptr_equal(a->round_next, b);
    assert_false(a->round_marker);
    assert_true(b->round_marker); /* b had no items in the round: its marker goes now */
    assert_ptr_equal(carry, &a->marker);
    assert_null(carry->commit_next);
    assert_int_equal(a->round_n, 2);
    assert_false(commit_round_ends_chunk(a));
    settle(a);
    settle(b);
    /* The next round starts with the carried marker. */
    work_item_t *carried = carry;
    round = commit_round_group(carried, &carry);
    assert_null(carry);
    assert_ptr_equal(round, a);
    assert_null(a->round_next);
    assert_true(a->round_marker);
    assert_int_equal(a->round_n, 0);
    assert_true(commit_round_ends_chunk(a));
    assert_int_equal(a->n_received, 2); /* the three others never finished */
    chunk_free(a);
    chunk_free(b);
}

static void test_several_markers_carried(void **state)
{
    (void)state;
    work_chunk_t *a = chunk_new(2, 0), *b = chunk_new(2, 0);
    work_item_t *carry = NULL;
    work_chunk_t *round =
        commit_round_group(queue_of(&a->items[0], &b->items[0], &a->marker, &b->marker, NULL), &carry);
    assert_int_equal(count_chunks(round), 2);
    size_t n = 0;
    bool has_a = false, has_b = false;
    for (work_item_t *it = carry; it; it = it->commit_next, n++) {
        has_a |= it == &a->marker;
        has_b |= it == &b->marker;
    }
    assert_int_equal(n, 2);
    assert_true(has_a && has_b);
    chunk_free(a);
    chunk_free(b);
}

static void test_ends_chunk(void **state)
{
    (void)state;
    work_chunk_t *w = chunk_new(3, 0);
    assert_false(commit_round_ends_chunk(w));
    w->n_received = 2;
    assert_false(commit_round_ends_chunk(w));
    w->n_received = 3;
    assert_true(commit_round_ends_chunk(w));
    w->n_received = 1;
    w->round_marker = true;
    assert_true(commit_round_ends_chunk(w));
    chunk_free(w);
}

static void test_defer_young_partial_groups_only(void **state)
{
    (void)state;
    const int64_t now = 10000;
    work_chunk_t *young = chunk_new(4, now - CKPT_MS + 1);   /* 1 ms short of --checkpoint-ms */
    work_chunk_t *old = chunk_new(4, now - CKPT_MS);         /* exactly --checkpoint-ms old */
    work_chunk_t *complete = chunk_new(2, now);              /* young, but its group ends it */
    work_chunk_t *fenced = chunk_new(4, now);                /* young, but lost to recovery */
    fenced->commit_dead = true;
    work_item_t *carry = NULL;
    work_chunk_t *round = commit_round_group(queue_of(&young->items[0], &old->items[0], &complete->items[0],
                                                      &complete->items[1], &fenced->items[0], NULL),
                                             &carry);
    work_chunk_t *deferred = NULL;
    work_chunk_t *send = commit_round_defer(round, &deferred, carry, false, now, CKPT_MS);
    assert_ptr_equal(deferred, young);
    assert_null(young->round_next);
    assert_true(young->in_round); /* still in_round: it takes its next items into the same group */
    assert_ptr_equal(send, old);
    assert_ptr_equal(old->round_next, complete);
    assert_ptr_equal(complete->round_next, fenced);
    assert_null(fenced->round_next);
    assert_int_equal(commit_round_due(deferred, CKPT_MS), now + 1);
    chunk_free(young);
    chunk_free(old);
    chunk_free(complete);
    chunk_free(fenced);
}

static void test_defer_nothing_when_stopping_or_off(void **state)
{
    (void)state;
    const int64_t now = 10000;
    for (int pass = 0; pass < 2; pass++) {
        work_chunk_t *a = chunk_new(4, now), *b = chunk_new(4, now);
        work_item_t *carry = NULL;
        work_chunk_t *round = commit_round_group(queue_of(&a->items[0], &b->items[0], NULL), &carry);
        work_chunk_t *deferred = NULL;
        /* pass 0: stopping; pass 1: --checkpoint-ms 0. */
        work_chunk_t *send = commit_round_defer(round, &deferred, carry, pass == 0, now, pass == 0 ? CKPT_MS : 0);
        assert_null(deferred);
        assert_ptr_equal(send, a);
        assert_ptr_equal(a->round_next, b);
        assert_null(b->round_next);
        chunk_free(a);
        chunk_free(b);
    }
}

static void test_defer_not_when_marker_carried(void **state)
{
    (void)state;
    /* A young chunk's items and then its marker: the marker waits for the next round, so the items must go now. */
    const int64_t now = 10000;
    work_chunk_t *a = chunk_new(4, now), *b = chunk_new(4, now);
    work_item_t *carry = NULL;
    work_chunk_t *round = commit_round_group(queue_of(&a->items[0], &b->items[0], &a->marker, NULL), &carry);
    assert_ptr_equal(carry, &a->marker);
    work_chunk_t *deferred = NULL;
    work_chunk_t *send = commit_round_defer(round, &deferred, carry, false, now, CKPT_MS);
    assert_ptr_equal(send, a);
    assert_null(a->round_next);
    assert_ptr_equal(deferred, b);
    chunk_free(a);
    chunk_free(b);
}

static void test_due(void **state)
{
    (void)state;
    assert_true(commit_round_due(NULL, CKPT_MS) == INT64_MAX);
    work_chunk_t *a = chunk_new(2, 500), *b = chunk_new(2, 200), *c = chunk_new(2, 900);
    a->round_next = b;
    b->round_next = c;
    assert_int_equal(commit_round_due(a, CKPT_MS), 200 + CKPT_MS);
    assert_int_equal(commit_round_due(c, CKPT_MS), 900 + CKPT_MS);
    assert_int_equal(commit_round_due(a, 0), 200);
    chunk_free(a);
    chunk_free(b);
    chunk_free(c);
}

static void test_build_deferred_group_takes_later_items(void **state)
{
    (void)state;
    /* Round 1 defers a young chunk with 2 of its 4 items; round 2 brings the other 2: the group, now whole, ends
     * the chunk and goes, once, with all 4 items. A chunk that joined only in round 2 comes after it. */
    int64_t now = 10000;
    work_chunk_t *a = chunk_new(4, now), *b = chunk_new(1, now);
    work_item_t *carry = NULL;
    work_chunk_t *deferred = NULL;
    work_chunk_t *send = commit_round_build(queue_of(&a->items[0], &a->items[1], NULL), &carry, &deferred, false,
                                            now, CKPT_MS);
    assert_null(send);
    assert_ptr_equal(deferred, a);
    assert_int_equal(commit_round_due(deferred, CKPT_MS), now + CKPT_MS);
    now += 10;
    send = commit_round_build(queue_of(&b->items[0], &a->items[3], &a->items[2], NULL), &carry, &deferred, false,
                              now, CKPT_MS);
    assert_null(deferred);
    assert_null(carry);
    assert_ptr_equal(send, a);
    assert_ptr_equal(a->round_next, b);
    assert_null(b->round_next);
    assert_int_equal(a->round_n, 4);
    assert_int_equal(a->n_received, 4);
    for (size_t i = 0; i < 4; i++) assert_true(group_has(a, &a->items[i]));
    assert_true(commit_round_ends_chunk(a));
    chunk_free(a);
    chunk_free(b);
}

static void test_build_deferred_group_goes_when_due(void **state)
{
    (void)state;
    int64_t now = 10000;
    work_chunk_t *a = chunk_new(4, now);
    work_item_t *carry = NULL;
    work_chunk_t *deferred = NULL;
    assert_null(commit_round_build(queue_of(&a->items[0], NULL), &carry, &deferred, false, now, CKPT_MS));
    assert_ptr_equal(deferred, a);
    /* Not due yet: an empty round leaves it deferred. */
    assert_null(commit_round_build(NULL, &carry, &deferred, false, now + CKPT_MS - 1, CKPT_MS));
    assert_ptr_equal(deferred, a);
    /* Due: it goes with what it has, a partial commit. */
    work_chunk_t *send = commit_round_build(NULL, &carry, &deferred, false, now + CKPT_MS, CKPT_MS);
    assert_null(deferred);
    assert_ptr_equal(send, a);
    assert_int_equal(a->round_n, 1);
    assert_false(commit_round_ends_chunk(a));
    chunk_free(a);
}

static void test_build_carried_marker_goes_first(void **state)
{
    (void)state;
    work_chunk_t *a = chunk_new(3, 0), *b = chunk_new(3, 0);
    work_item_t *carry = NULL;
    work_chunk_t *deferred = NULL;
    work_chunk_t *send = commit_round_build(queue_of(&a->items[0], &a->marker, NULL), &carry, &deferred, false,
                                            100000, CKPT_MS);
    assert_ptr_equal(send, a);
    assert_ptr_equal(carry, &a->marker);
    settle(a);
    send = commit_round_build(queue_of(&b->items[0], NULL), &carry, &deferred, false, 100000, CKPT_MS);
    assert_null(carry);
    assert_ptr_equal(send, a);
    assert_true(a->round_marker);
    assert_ptr_equal(a->round_next, b);
    chunk_free(a);
    chunk_free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_group_by_chunk_in_first_seen_order),
        cmocka_unit_test(test_marker_alone_joins_the_round),
        cmocka_unit_test(test_marker_after_items_waits_for_next_round),
        cmocka_unit_test(test_several_markers_carried),
        cmocka_unit_test(test_ends_chunk),
        cmocka_unit_test(test_defer_young_partial_groups_only),
        cmocka_unit_test(test_defer_nothing_when_stopping_or_off),
        cmocka_unit_test(test_defer_not_when_marker_carried),
        cmocka_unit_test(test_due),
        cmocka_unit_test(test_build_deferred_group_takes_later_items),
        cmocka_unit_test(test_build_deferred_group_goes_when_due),
        cmocka_unit_test(test_build_carried_marker_goes_first),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
