/* Unit tests of ratelimit_math: rate parsing, the default burst, block sizes. */
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
    assert_int_equal(ratelimit_block(20, 1000), 20); /* the burst caps it */
    assert_int_equal(ratelimit_block(20, 3), 3);     /* never more than the items waiting */
    assert_int_equal(ratelimit_block(20, 0), 1);
    assert_int_equal(ratelimit_block(0.5, 1000), 1); /* at least one */
    assert_int_equal(ratelimit_block(2.9, 1000), 2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(parse_rates), cmocka_unit_test(parse_rejects), cmocka_unit_test(default_burst),
        cmocka_unit_test(block_sizes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
