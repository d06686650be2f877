/* Unit tests of src/lib/progress.c: the progress line and the rate tracker. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "progress.h"

static void test_format_with_bar(void **state)
{
    (void)state;
    char out[256];
    progress_format(out, sizeof out, 4500, 10000, 1234.4, 10);
    assert_string_equal(out, "[####------]  45.0%  4,500/10,000  1,234/s  ETA 4s");
}

static void test_format_without_bar_and_eta(void **state)
{
    (void)state;
    char out[256];
    progress_format(out, sizeof out, 0, 0, 0, 0);
    assert_string_equal(out, "  0.0%  0/0  0/s  ETA -");
    progress_format(out, sizeof out, 10, 10, 0, 0);
    assert_string_equal(out, "100.0%  10/10  0/s  ETA 0s");
    progress_format(out, sizeof out, 1000000, 8200000, 1000, 0); /* 7,200 s left */
    assert_string_equal(out, " 12.2%  1,000,000/8,200,000  1,000/s  ETA 2h00m");
    progress_format(out, sizeof out, 12, 10, 5, 4); /* more done than enqueued: capped */
    assert_string_equal(out, "[####] 100.0%  12/10  5/s  ETA 0s");
}

static void test_rate(void **state)
{
    (void)state;
    progress_rate_t r = {0};
    assert_true(progress_rate_update(&r, 100, 1000) == 0.0); /* first sample: no rate yet */
    assert_true(progress_rate_update(&r, 600, 3000) == 250.0);
    assert_true(progress_rate_update(&r, 500, 4000) == 0.0); /* counters reset: never negative */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_format_with_bar),
        cmocka_unit_test(test_format_without_bar_and_eta),
        cmocka_unit_test(test_rate),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
