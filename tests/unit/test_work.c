/* Unit tests of work.c's pure parts: a chunk's checkpoint (which items a redelivery skips) and its window weight. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "work.h"
#include "xalloc.h"

/* A chunk of n items {"id":i}, decoded as fetch does it. */
static work_chunk_t *chunk_of(size_t n)
{
    char *raw = xmalloc(64 + n * 32);
    size_t len = (size_t)sprintf(raw, "{\"v\":1,\"chunk\":\"c1\",\"items\":[");
    for (size_t i = 0; i < n; i++)
        len += (size_t)sprintf(raw + len, "%s{\"id\":%zu,\"item\":\"{}\"}", i ? "," : "", i);
    len += (size_t)sprintf(raw + len, "]}");
    work_chunk_t *c = work_chunk_new(raw, len, 0);
    assert_null(c->dead_reason);
    assert_int_equal(c->decoded.n_items, n);
    return c;
}

static void test_no_checkpoint_runs_everything(void **state)
{
    (void)state;
    work_chunk_t *c = chunk_of(10);
    assert_int_equal(c->n_run, 10);
    assert_int_equal(work_chunk_weight(c), 10);
    work_chunk_apply_checkpoint(c, NULL, 0);
    assert_int_equal(c->n_run, 10);
    for (size_t i = 0; i < 10; i++) assert_false(c->items[i].done_before);
    work_chunk_free(c);
}

static void test_checkpoint_bits_in_setbit_order(void **state)
{
    (void)state;
    work_chunk_t *c = chunk_of(12);
    /* SETBIT k 0 1 sets the most significant bit of byte 0: items 0, 2 and 9 done. */
    const unsigned char bits[] = {0xa0, 0x40};
    work_chunk_apply_checkpoint(c, bits, sizeof bits);
    assert_int_equal(c->n_run, 9);
    for (size_t i = 0; i < 12; i++) {
        bool done = i == 0 || i == 2 || i == 9;
        assert_int_equal(c->items[i].done_before, done);
        assert_int_equal(c->items[i].finished, done);
    }
    assert_int_equal(work_chunk_weight(c), 9);
    work_chunk_free(c);
}

static void test_checkpoint_shorter_or_longer_than_chunk(void **state)
{
    (void)state;
    work_chunk_t *c = chunk_of(20);
    const unsigned char one[] = {0xff}; /* only items 0-7: the rest are not done */
    work_chunk_apply_checkpoint(c, one, sizeof one);
    assert_int_equal(c->n_run, 12);
    work_chunk_free(c);

    c = chunk_of(3);
    const unsigned char many[] = {0xff, 0xff, 0xff}; /* bits past the chunk's items are ignored */
    work_chunk_apply_checkpoint(c, many, sizeof many);
    assert_int_equal(c->n_run, 0);
    assert_int_equal(work_chunk_weight(c), 1); /* nothing to run still takes one slot until committed */
    work_chunk_free(c);
}

static void test_marker_is_the_chunks_own(void **state)
{
    (void)state;
    work_chunk_t *c = chunk_of(2);
    assert_true(work_item_is_marker(&c->marker));
    assert_false(work_item_is_marker(&c->items[0]));
    assert_false(work_item_is_marker(&c->items[1]));
    work_chunk_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_no_checkpoint_runs_everything),
        cmocka_unit_test(test_checkpoint_bits_in_setbit_order),
        cmocka_unit_test(test_checkpoint_shorter_or_longer_than_chunk),
        cmocka_unit_test(test_marker_is_the_chunks_own),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
