/* Unit tests of the pure batching decisions: commit_batch_ready() and commit_round_take() (commit.h) and
 * window_fits() (window.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "commit.h"
#include "window.h"

/* commit_batch_ready(queued_items, oldest_wait_ms, batch_items, interval_ms, stopping) */

static void test_commit_empty_never_ready(void **state)
{
    (void)state;
    assert_false(commit_batch_ready(0, 0, 10, 20, false));
    /* Nothing queued: not even a long wait, a batch size of 0 or stopping makes an empty batch go. */
    assert_false(commit_batch_ready(0, 1000000, 10, 20, false));
    assert_false(commit_batch_ready(0, 0, 0, 0, false));
    assert_false(commit_batch_ready(0, 0, 10, 20, true));
    assert_false(commit_batch_ready(0, 1000000, 1, 0, true));
}

static void test_commit_ready_at_batch_size(void **state)
{
    (void)state;
    assert_false(commit_batch_ready(1, 0, 10, 20, false));
    assert_false(commit_batch_ready(9, 0, 10, 20, false));
    assert_true(commit_batch_ready(10, 0, 10, 20, false));
    assert_true(commit_batch_ready(11, 0, 10, 20, false));
    assert_true(commit_batch_ready(2000, 5, 2000, 20, false));
    assert_false(commit_batch_ready(1999, 5, 2000, 20, false));
    /* A batch of one goes as soon as anything is queued. */
    assert_true(commit_batch_ready(1, 0, 1, 1000, false));
}

static void test_commit_ready_after_interval(void **state)
{
    (void)state;
    assert_false(commit_batch_ready(3, 19, 10, 20, false));
    assert_true(commit_batch_ready(3, 20, 10, 20, false));
    assert_true(commit_batch_ready(3, 21, 10, 20, false));
    assert_true(commit_batch_ready(1, 60000, 2000, 20, false));
    /* --commit-interval-ms 0: no waiting for a fuller batch. */
    assert_true(commit_batch_ready(1, 0, 2000, 0, false));
}

static void test_commit_ready_when_stopping(void **state)
{
    (void)state;
    assert_true(commit_batch_ready(1, 0, 2000, 20, true));
    assert_true(commit_batch_ready(5, 0, 2000, 60000, true));
    assert_false(commit_batch_ready(5, 0, 2000, 60000, false));
}

/* commit_round_take(queued_items, batch_items): a batch; a backlog of more than a batch goes whole, up to
 * COMMIT_ROUND_MAX_BATCHES batches. */
static void test_commit_round_takes_backlog(void **state)
{
    (void)state;
    assert_int_equal(commit_round_take(0, 2000), 2000);
    assert_int_equal(commit_round_take(1500, 2000), 2000);
    assert_int_equal(commit_round_take(2000, 2000), 2000);
    assert_int_equal(commit_round_take(2001, 2000), 2001);
    assert_int_equal(commit_round_take(9000, 2000), 9000);
    assert_int_equal(commit_round_take(1000000, 2000), COMMIT_ROUND_MAX_BATCHES * 2000);
    assert_int_equal(commit_round_take(5, 1), 5);
    assert_int_equal(commit_round_take(50, 1), COMMIT_ROUND_MAX_BATCHES);
}

/* window_fits(running, held, want, capacity, ahead): a chunk is fetched while the running items (started, or
 * waiting in a loop for a place) are at most the capacity (plus ahead: 0 here), so one chunk can wait ahead of the
 * free places; held items (running plus finished ones waiting for their commit) stay under twice the capacity; an
 * empty window always takes a chunk. */

static void test_window_empty_always_fits(void **state)
{
    (void)state;
    assert_true(window_fits(0, 0, 1, 10, 0));
    assert_true(window_fits(0, 0, 10, 10, 0));
    /* A chunk larger than the whole window still runs (the loops start --concurrency of its items at a time). */
    assert_true(window_fits(0, 0, 11, 10, 0));
    assert_true(window_fits(0, 0, 1000000, 1, 0));
    assert_true(window_fits(0, 0, 0, 0, 0));
}

static void test_window_fetches_one_chunk_ahead(void **state)
{
    (void)state;
    /* Everything held is running: a chunk is taken while running <= capacity, whatever its size. */
    assert_true(window_fits(1, 1, 9, 10, 0));
    assert_true(window_fits(5, 5, 5, 10, 0));
    assert_true(window_fits(5, 5, 6, 10, 0));
    assert_true(window_fits(9, 9, 1, 10, 0));
    assert_true(window_fits(10, 10, 1, 10, 0));  /* all places taken: the next chunk waits ahead */
    assert_true(window_fits(10, 10, 10, 10, 0));
    assert_false(window_fits(11, 11, 1, 10, 0)); /* a chunk already waits */
    assert_false(window_fits(19, 19, 1, 10, 0));
    assert_true(window_fits(1000, 1000, 100, 1000, 0));
    assert_false(window_fits(1001, 1001, 100, 1000, 0));
    /* A lone oversized chunk is running: nothing more fits until it is mostly done. */
    assert_false(window_fits(11, 11, 1, 10, 0));
    assert_true(window_fits(10, 10, 1, 10, 0));
}

static void test_window_finished_items_free_running_room(void **state)
{
    (void)state;
    /* Items that finished running but wait for their commit still count as held, not as running. */
    assert_true(window_fits(0, 10, 10, 10, 0));
    assert_true(window_fits(2, 10, 8, 10, 0));
    assert_true(window_fits(2, 10, 10, 10, 0));
    assert_false(window_fits(2, 10, 11, 10, 0));
    assert_true(window_fits(0, 1, 10, 10, 0));
    assert_false(window_fits(0, 11, 10, 10, 0));
}

static void test_window_fetches_ahead_of_places(void **state)
{
    (void)state;
    /* With `ahead` (a distant Redis: what finishes during a fetch round trip), chunks are taken while running is at
     * most the capacity plus ahead; held stays under twice the capacity whatever ahead is. */
    assert_true(window_fits(10, 10, 1, 10, 5));
    assert_true(window_fits(15, 15, 1, 10, 5));
    assert_false(window_fits(16, 16, 1, 10, 5));
    assert_true(window_fits(10000, 10000, 100, 10000, 2000));
    assert_true(window_fits(12000, 12000, 100, 10000, 2000));
    assert_false(window_fits(12001, 12001, 100, 10000, 2000));
    assert_false(window_fits(12000, 19950, 100, 10000, 2000)); /* held: twice the capacity at most */
    assert_true(window_fits(0, 0, 30, 10, 5));                 /* empty: always */
}

static void test_window_held_capped_at_twice_capacity(void **state)
{
    (void)state;
    assert_true(window_fits(0, 15, 5, 10, 0));
    assert_false(window_fits(0, 15, 6, 10, 0));
    assert_false(window_fits(0, 20, 1, 10, 0));
    assert_true(window_fits(0, 20, 0, 10, 0));
    assert_false(window_fits(0, 1901, 100, 1000, 0));
    assert_true(window_fits(0, 1900, 100, 1000, 0));
}

/* window_bytes_fit(held, held_bytes, max_bytes): fetch while the chunk text held is under --max-held-bytes; an empty
 * window always takes a chunk, however large. */
static void test_window_bytes(void **state)
{
    (void)state;
    assert_true(window_bytes_fit(0, 0, 1024));
    assert_true(window_bytes_fit(0, 1u << 30, 1024)); /* empty: a huge chunk still runs alone */
    assert_true(window_bytes_fit(5, 1023, 1024));
    assert_false(window_bytes_fit(5, 1024, 1024));
    assert_false(window_bytes_fit(1, 5000, 1024));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_commit_empty_never_ready),  cmocka_unit_test(test_commit_ready_at_batch_size),
        cmocka_unit_test(test_commit_ready_after_interval), cmocka_unit_test(test_commit_ready_when_stopping),
        cmocka_unit_test(test_commit_round_takes_backlog),
        cmocka_unit_test(test_window_empty_always_fits),
        cmocka_unit_test(test_window_fetches_one_chunk_ahead),
        cmocka_unit_test(test_window_finished_items_free_running_room),
        cmocka_unit_test(test_window_fetches_ahead_of_places),
        cmocka_unit_test(test_window_held_capped_at_twice_capacity),
        cmocka_unit_test(test_window_bytes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
