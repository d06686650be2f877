/* Unit tests of ratelimit_math: rate parsing, the default burst, block sizes, the adaptation to 429s. */
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

static ratelimit_window_t window(double calls, double throttled)
{
    return (ratelimit_window_t){.calls = calls, .throttled = throttled, .seconds = 1};
}

static void share_of_a_window(void **state)
{
    (void)state;
    ratelimit_window_t w = window(200, 20);
    assert_true(fabs(ratelimit_share(&w) - 0.1) < 1e-12);
    w = window(0, 0);
    assert_true(ratelimit_share(&w) == 0);
    w = window(0, 3); /* 429s reported for calls leased in the window before */
    assert_true(ratelimit_share(&w) == 1);
    w = window(5, 9);
    assert_true(ratelimit_share(&w) == 1);
}

static void recovery_is_additive_up_to_the_limit(void **state)
{
    (void)state;
    ratelimit_aimd_t a = {.rate_per_s = 500};
    ratelimit_window_t w = window(500, 0);
    assert_int_equal(ratelimit_adapt(&a, &w, 1000), RATELIMIT_RAISED);
    assert_true(fabs(a.rate_per_s - 550) < 1e-9); /* 5 % of the limit per second */
    w.seconds = 2.5;
    ratelimit_adapt(&a, &w, 1000);
    assert_true(fabs(a.rate_per_s - 675) < 1e-9);
    w.seconds = 60;
    ratelimit_adapt(&a, &w, 1000);
    assert_true(a.rate_per_s == 1000);
}

static void a_share_under_the_threshold_does_not_cut(void **state)
{
    (void)state;
    ratelimit_aimd_t a = {.rate_per_s = 1000};
    ratelimit_window_t w = window(1000, 50); /* 5 %: not over 0 + 5 % */
    assert_int_equal(ratelimit_adapt(&a, &w, 1000), RATELIMIT_RAISED);
    assert_true(a.rate_per_s == 1000);
    w = window(1000, 51);
    assert_int_equal(ratelimit_adapt(&a, &w, 1000), RATELIMIT_CUT);
    assert_true(fabs(a.rate_per_s - 700) < 1e-9);
}

/* Against a true limit L with the rate at 2L, cuts of x0.7 bring it under L and keep it there; one cut per
 * window whatever the number of 429s in it. */
static void a_true_limit_converges(void **state)
{
    (void)state;
    const double limit = 2000, api_limit = 1000;
    ratelimit_aimd_t a = {.rate_per_s = limit};
    int cuts = 0, undone = 0;
    double rates[40];
    for (int s = 0; s < 40; s++) {
        double refused = a.rate_per_s > api_limit ? a.rate_per_s - api_limit : 0;
        ratelimit_window_t w = window(a.rate_per_s, refused);
        ratelimit_adapt_t r = ratelimit_adapt(&a, &w, limit);
        cuts += r == RATELIMIT_CUT;
        undone += r == RATELIMIT_UNDONE;
        rates[s] = a.rate_per_s;
    }
    assert_int_equal(undone, 0);
    assert_true(a.baseline == 0);
    assert_true(rates[1] < api_limit); /* 2000 -> 1400 -> 980 */
    for (int s = 5; s < 40; s++) {
        if (rates[s] < 0.7 * api_limit || rates[s] > 1.15 * api_limit) fail_msg("second %d: rate %.1f", s, rates[s]);
    }
    assert_true(cuts >= 3);
}

/* Far above a true limit the share hardly moves after a cut, but the calls answered ok stay at the limit's:
 * still the load's 429s. */
static void far_above_a_true_limit_the_cut_stands(void **state)
{
    (void)state;
    ratelimit_aimd_t a = {.rate_per_s = 10000};
    ratelimit_window_t w = window(10000, 9000);
    assert_int_equal(ratelimit_adapt(&a, &w, 10000), RATELIMIT_CUT);
    w = window(7000, 6000);
    assert_int_equal(ratelimit_adapt(&a, &w, 10000), RATELIMIT_CUT);
    assert_true(fabs(a.rate_per_s - 4900) < 1e-9);
    assert_true(a.baseline == 0);
}

/* 10 % of calls refused whatever the rate: the first cut is undone and the share becomes the baseline. */
static void random_429s_become_the_baseline(void **state)
{
    (void)state;
    ratelimit_aimd_t a = {.rate_per_s = 2000};
    ratelimit_window_t w = window(2000, 200);
    assert_int_equal(ratelimit_adapt(&a, &w, 2000), RATELIMIT_CUT);
    assert_true(fabs(a.rate_per_s - 1400) < 1e-9);
    w = window(1400, 141);
    assert_int_equal(ratelimit_adapt(&a, &w, 2000), RATELIMIT_UNDONE);
    assert_true(fabs(a.rate_per_s - 2000) < 1e-9);
    assert_true(fabs(a.baseline - 141.0 / 1400) < 1e-12);
    for (int s = 0; s < 20; s++) { /* 10 % +- noise under baseline + 5 %: no cut */
        w = window(2000, s % 2 ? 190 : 215);
        assert_int_equal(ratelimit_adapt(&a, &w, 2000), RATELIMIT_RAISED);
    }
    assert_true(a.rate_per_s == 2000);
    assert_true(fabs(a.baseline - 0.095) < 1e-12); /* it follows the share down */
    w = window(2000, 400); /* a real overload on top: 20 % */
    assert_int_equal(ratelimit_adapt(&a, &w, 2000), RATELIMIT_CUT);
}

static void the_first_window_is_a_warm_up(void **state)
{
    (void)state;
    ratelimit_aimd_t a = {.rate_per_s = 1000};
    ratelimit_window_t w = window(300, 200);
    w.first = true;
    assert_int_equal(ratelimit_adapt(&a, &w, 1000), RATELIMIT_WARMUP);
    assert_true(a.rate_per_s == 1000 && a.baseline == 0 && a.cut_share == 0);
}

static void the_floor_holds(void **state)
{
    (void)state;
    ratelimit_aimd_t a = {.rate_per_s = 100};
    for (int s = 0; s < 30; s++) {
        ratelimit_window_t w = window(a.rate_per_s, a.rate_per_s);
        ratelimit_adapt(&a, &w, 100);
    }
    assert_true(fabs(a.rate_per_s - 5) < 1e-9); /* 5 % of the limit */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(parse_rates), cmocka_unit_test(parse_rejects), cmocka_unit_test(default_burst),
        cmocka_unit_test(block_sizes), cmocka_unit_test(share_of_a_window),
        cmocka_unit_test(recovery_is_additive_up_to_the_limit),
        cmocka_unit_test(a_share_under_the_threshold_does_not_cut),
        cmocka_unit_test(a_true_limit_converges), cmocka_unit_test(far_above_a_true_limit_the_cut_stands),
        cmocka_unit_test(random_429s_become_the_baseline), cmocka_unit_test(the_first_window_is_a_warm_up),
        cmocka_unit_test(the_floor_holds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
