/* Unit tests of window.c through its public API: held and running counts, room, the byte cap, and backpressure
 * (fetch waiting in window_wait_room until a finish or a release makes room). The pure admission rules themselves
 * (window_fits, window_bytes_fit) are tested in test_batch.c. No timed assertion beyond a generous bound: a waiter is
 * checked to be still waiting, then to return once woken, well before its own time-out. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>

#include <cmocka.h>

#include "clock.h"
#include "window.h"

/* How long a waiter waits. One that is woken returns long before (milliseconds, even on a loaded machine); one
 * that returns after it was not woken, whatever the window then says. */
#define LONG_WAIT_MS 20000

static void test_counts(void **state)
{
    (void)state;
    window_t *w = window_new(10, 1 << 20);
    assert_int_equal(window_held(w), 0);
    assert_int_equal(window_room(w), 10);
    window_add(w, 6, 100);
    assert_int_equal(window_held(w), 6);
    assert_int_equal(window_room(w), 4);
    assert_int_equal(window_room_bytes(w), (1 << 20) - 100);
    /* Finished items stay held until committed, but leave running: room is min(capacity - running,
     * 2 x capacity - held). */
    window_finish(w, 6);
    assert_int_equal(window_held(w), 6);
    assert_int_equal(window_room(w), 10);
    window_add(w, 10, 100);
    assert_int_equal(window_held(w), 16);
    assert_int_equal(window_room(w), 0);
    window_finish(w, 10);
    assert_int_equal(window_room(w), 4); /* nothing running: held items are the bound */
    window_release(w, 6, true);
    assert_int_equal(window_held(w), 10);
    assert_int_equal(window_room(w), 10);
    /* Released without finishing (a drain's requeue): they leave running too. */
    window_add(w, 4, 50);
    assert_int_equal(window_room(w), 6);
    window_release(w, 4, false);
    assert_int_equal(window_held(w), 10);
    assert_int_equal(window_room(w), 10);
    window_release(w, 10, true);
    assert_int_equal(window_held(w), 0);
    assert_int_equal(window_room(w), 10);
    window_release_bytes(w, 250);
    assert_int_equal(window_room_bytes(w), 1 << 20);
    window_free(w);
}

static void test_counts_never_below_zero(void **state)
{
    (void)state;
    window_t *w = window_new(10, 1000);
    window_add(w, 2, 10);
    window_release(w, 5, false);
    window_release_bytes(w, 50);
    window_finish(w, 3);
    assert_int_equal(window_held(w), 0);
    assert_int_equal(window_room(w), 10);
    assert_int_equal(window_room_bytes(w), 1000);
    window_free(w);
}

static void test_room_without_waiting(void **state)
{
    (void)state;
    window_t *w = window_new(10, 1 << 20);
    /* An empty window takes any chunk, even one larger than the capacity. */
    assert_true(window_wait_room(w, 1000, 0));
    window_add(w, 10, 100);
    /* All places taken: one more chunk may wait ahead of them... */
    assert_true(window_wait_room(w, 10, 0));
    window_add(w, 1, 100);
    /* ...but not a second one. */
    assert_false(window_wait_room(w, 1, 0));
    window_finish(w, 11);
    /* Nothing running, 11 held: held may reach twice the capacity. */
    assert_true(window_wait_room(w, 9, 0));
    assert_false(window_wait_room(w, 10, 0));
    window_free(w);
}

static void test_byte_cap(void **state)
{
    (void)state;
    window_t *w = window_new(100, 1000);
    /* An empty window takes a chunk larger than --max-held-bytes. */
    assert_true(window_wait_room(w, 1, 0));
    window_add(w, 1, 5000);
    assert_int_equal(window_room_bytes(w), 0);
    assert_false(window_wait_room(w, 1, 0));
    window_release_bytes(w, 5000);
    assert_true(window_wait_room(w, 1, 0));
    /* Under the cap by one byte: one more chunk, whatever its size. */
    window_add(w, 1, 999);
    assert_int_equal(window_room_bytes(w), 1);
    assert_true(window_wait_room(w, 1, 0));
    window_add(w, 1, 1);
    assert_false(window_wait_room(w, 1, 0));
    window_free(w);
}

/* A thread standing in for fetch: waits for room for want items (or for an empty window, as the drain does). */
typedef struct waiter {
    window_t *w;
    size_t want;
    bool empty;          /* wait for an empty window instead of for room */
    atomic_bool done;
    bool result;
    int64_t waited_ms;
    pthread_t thread;
} waiter_t;

static void *waiter_main(void *arg)
{
    waiter_t *t = arg;
    int64_t start = clock_now_ms();
    t->result = t->empty ? window_wait_empty(t->w, clock_now_ms() + LONG_WAIT_MS)
                         : window_wait_room(t->w, t->want, LONG_WAIT_MS);
    t->waited_ms = clock_now_ms() - start;
    atomic_store(&t->done, true);
    return NULL;
}

static void waiter_start(waiter_t *t, window_t *w, size_t want, bool empty)
{
    t->w = w;
    t->want = want;
    t->empty = empty;
    atomic_init(&t->done, false);
    assert_int_equal(pthread_create(&t->thread, NULL, waiter_main, t), 0);
    /* Give a waiter that wrongly returns at once the time to do so (50 ms); a slow start only hides that. */
    struct timespec ts = {0, 50 * 1000000L};
    nanosleep(&ts, NULL);
    assert_false(atomic_load(&t->done));
}

static bool waiter_join(waiter_t *t)
{
    assert_int_equal(pthread_join(t->thread, NULL), 0);
    assert_true(atomic_load(&t->done));
    assert_true(t->waited_ms < LONG_WAIT_MS); /* woken, not timed out */
    return t->result;
}

static void test_backpressure_until_finish(void **state)
{
    (void)state;
    /* Two chunks of 10 running under --concurrency 10: fetch waits until enough of them finish. */
    window_t *w = window_new(10, 1 << 20);
    window_add(w, 20, 100);
    waiter_t t;
    waiter_start(&t, w, 1, false);
    window_finish(w, 5); /* 15 running: still no room */
    struct timespec ts = {0, 20 * 1000000L};
    nanosleep(&ts, NULL);
    assert_false(atomic_load(&t.done));
    window_finish(w, 5); /* 10 running, 20 held: one more fits? held + 1 > 2 x 10, no */
    nanosleep(&ts, NULL);
    assert_false(atomic_load(&t.done));
    window_release(w, 10, true); /* 10 held: room */
    assert_true(waiter_join(&t));
    window_free(w);
}

static void test_backpressure_woken_by_finish(void **state)
{
    (void)state;
    /* Held stays under twice the capacity; only running is over it: a finish alone must wake fetch. */
    window_t *w = window_new(10, 1 << 20);
    window_add(w, 15, 100);
    waiter_t t;
    waiter_start(&t, w, 1, false);
    window_finish(w, 5);
    assert_true(waiter_join(&t));
    assert_int_equal(window_held(w), 15);
    window_free(w);
}

static void test_backpressure_on_bytes(void **state)
{
    (void)state;
    window_t *w = window_new(100, 1000);
    window_add(w, 1, 1000);
    waiter_t t;
    waiter_start(&t, w, 1, false);
    window_release_bytes(w, 1000);
    assert_true(waiter_join(&t));
    window_free(w);
}

static void test_wait_empty(void **state)
{
    (void)state;
    window_t *w = window_new(10, 1000);
    assert_true(window_wait_empty(w, clock_now_ms()));
    window_add(w, 3, 10);
    assert_false(window_wait_empty(w, clock_now_ms()));
    waiter_t t;
    waiter_start(&t, w, 0, true);
    window_release(w, 2, true);
    struct timespec ts = {0, 20 * 1000000L};
    nanosleep(&ts, NULL);
    assert_false(atomic_load(&t.done));
    window_release(w, 1, false);
    assert_true(waiter_join(&t));
    window_free(w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_counts),
        cmocka_unit_test(test_counts_never_below_zero),
        cmocka_unit_test(test_room_without_waiting),
        cmocka_unit_test(test_byte_cap),
        cmocka_unit_test(test_backpressure_until_finish),
        cmocka_unit_test(test_backpressure_woken_by_finish),
        cmocka_unit_test(test_backpressure_on_bytes),
        cmocka_unit_test(test_wait_empty),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
