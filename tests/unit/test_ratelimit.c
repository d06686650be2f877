/* Unit tests of ratelimit_math: rate parsing, the default burst, block sizes and the granted-rate average. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "ratelimit_math.h"

static void parse_rates(void **state)
{
    (void)state;
    double r = 0;
    assert_int_equal(ratelimit_parse_rate("200/s", &r), 0);
    assert_true(r == 200);
    assert_int_equal(ratelimit_parse_rate("30/m", &r), 0);
    assert_true(r == 0.5);
    assert_int_equal(ratelimit_parse_rate("2.5/s", &r), 0);
    assert_true(r == 2.5);
    assert_int_equal(ratelimit_parse_rate("1/m", &r), 0);
    assert_true(fabs(r - 1.0 / 60) < 1e-12);
    assert_int_equal(ratelimit_parse_rate("1000000/s", &r), 0);
}

static void parse_rejects(void **state)
{
    (void)state;
    double r = 7;
    const char *bad[] = {"", "200", "200/h", "/s", "0/s", "-5/s", "+5/s", " 5/s", "5/s ", "5 /s", "nan/s", "inf/s",
                         "1e9/s", "1000001/s", "5/S", "5/ss", "0x10/s", "5//s", "1e2/s", "5./s/s"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (ratelimit_parse_rate(bad[i], &r) == 0) fail_msg("accepted '%s'", bad[i]);
    }
    assert_true(r == 7); /* untouched on failure */
    assert_int_equal(ratelimit_parse_rate(NULL, &r), -1);
}

static void default_burst(void **state)
{
    (void)state;
    assert_true(ratelimit_default_burst(200) == 20);    /* 100 ms worth */
    assert_true(ratelimit_default_burst(5) == 1);       /* at least one call */
    assert_true(ratelimit_default_burst(0.5) == 1);
}

static void block_sizes(void **state)
{
    (void)state;
    assert_int_equal(ratelimit_block(0, 20, 1000), 1);      /* nothing granted yet: one at a time */
    assert_int_equal(ratelimit_block(40, 20, 1000), 2);     /* 50 ms of 40/s */
    assert_int_equal(ratelimit_block(200, 20, 1000), 10);   /* 50 ms of 200/s */
    assert_int_equal(ratelimit_block(10000, 20, 1000), 20); /* never more than the burst */
    assert_int_equal(ratelimit_block(200, 20, 3), 3);       /* never more than the items waiting */
    assert_int_equal(ratelimit_block(200, 20, 0), 1);
    assert_int_equal(ratelimit_block(200, 0.5, 1000), 1);   /* at least one */
}

static void ewma(void **state)
{
    (void)state;
    double avg = 0;
    /* 50 tokens every 250 ms is 200/s: the average converges there. */
    for (int i = 0; i < 40; i++) avg = ratelimit_ewma(avg, 50, 0.25);
    assert_true(fabs(avg - 200) < 1);
    /* A poll that got nothing pulls it down; a zero interval changes nothing. */
    double after = ratelimit_ewma(avg, 0, 0.5);
    assert_true(after < avg && after > 0);
    assert_true(ratelimit_ewma(after, 5, 0) == after);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(parse_rates), cmocka_unit_test(parse_rejects), cmocka_unit_test(default_burst),
        cmocka_unit_test(block_sizes), cmocka_unit_test(ewma),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
