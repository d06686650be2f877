/* Unit tests of breaker: the circuit breaker's states, driven with a made-up clock. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "breaker.h"

/* The changes reported to on_change, as "from>to" separated by spaces, and the last wait announced. */
typedef struct changes {
    char seen[512];
    int64_t next_probe_in_ms;
} changes_t;

static void on_change(void *arg, breaker_state_t from, breaker_state_t to, int64_t next_probe_in_ms, const char *why)
{
    changes_t *c = arg;
    assert_non_null(why);
    size_t n = strlen(c->seen);
    snprintf(c->seen + n, sizeof c->seen - n, "%s%s>%s", n ? " " : "", breaker_state_name(from),
             breaker_state_name(to));
    c->next_probe_in_ms = next_probe_in_ms;
}

/* window 1000 ms, 90 %, at least 20 calls, probes from 100 ms up to 800 ms, 3 probes. */
static const breaker_config_t CFG = {.window_ms = 1000, .failure_percent = 90, .min_calls = 20, .probe_base_ms = 100,
                                     .probe_max_ms = 800, .probes = 3};

static breaker_state_t state_at(breaker_t *b, int64_t now)
{
    char why[BREAKER_WHY_MAX + 100];
    return breaker_state(b, now, why, sizeof why);
}

/* Records n outcomes at time t, none of them excused: the circuit stays closed through them. */
static void record_counted(breaker_t *b, int64_t t, int n, bool failed)
{
    for (int i = 0; i < n; i++) assert_false(breaker_record(b, t, failed, failed ? "x" : NULL));
}

/* Opens a closed breaker at time t with min_calls failures; returns the time. */
static int64_t trip(breaker_t *b, int64_t t)
{
    for (long i = 0; i < CFG.min_calls; i++) breaker_record(b, t, true, "Connection refused");
    assert_int_equal(state_at(b, t), BREAKER_OPEN);
    return t;
}

static void opens_on_ratio_after_min_calls(void **state)
{
    (void)state;
    changes_t ch = {0};
    breaker_t *b = breaker_new(&CFG, on_change, &ch);
    assert_true(breaker_allow(b, 0));
    /* 19 failures: too few calls to judge, and they count against the items. */
    record_counted(b, 10, 19, true);
    assert_int_equal(state_at(b, 10), BREAKER_CLOSED);
    assert_true(breaker_allow(b, 10));
    /* The 20th opens it, and is not counted against its item. */
    assert_true(breaker_record(b, 10, true, "HTTP 503"));
    assert_int_equal(state_at(b, 10), BREAKER_OPEN);
    assert_string_equal(ch.seen, "closed>open");
    assert_int_equal(ch.next_probe_in_ms, 100);
    char why[BREAKER_WHY_MAX + 100];
    breaker_state(b, 10, why, sizeof why);
    assert_non_null(strstr(why, "circuit open: 20 of the last 20 calls failed"));
    assert_non_null(strstr(why, "HTTP 503"));
    assert_false(breaker_allow(b, 10));
    /* A late outcome of a call started before it opened changes nothing, and a failure is excused. */
    assert_true(breaker_record(b, 20, true, "HTTP 503"));
    assert_false(breaker_record(b, 20, false, NULL));
    assert_int_equal(state_at(b, 20), BREAKER_OPEN);
    breaker_free(b);
}

static void stays_closed_below_ratio(void **state)
{
    (void)state;
    breaker_t *b = breaker_new(&CFG, NULL, NULL);
    /* 85 % failures (17 of 20), then 89 % (89 of 100): under 90 %. */
    record_counted(b, 0, 3, false);
    record_counted(b, 0, 17, true);
    assert_int_equal(state_at(b, 0), BREAKER_CLOSED);
    record_counted(b, 0, 8, false);
    record_counted(b, 0, 72, true);
    assert_int_equal(state_at(b, 0), BREAKER_CLOSED);
    /* The window holds the last 100 calls: one more failure pushes out the oldest success: 90 of 100. */
    assert_true(breaker_record(b, 0, true, "x"));
    assert_int_equal(state_at(b, 0), BREAKER_OPEN);
    breaker_free(b);
}

static void recent_calls_weigh(void **state)
{
    (void)state;
    breaker_t *b = breaker_new(&CFG, NULL, NULL);
    /* A thousand successes, then the API goes down: the 90th failure in a row opens the circuit. */
    record_counted(b, 500, 1000, false);
    record_counted(b, 510, 89, true);
    assert_int_equal(state_at(b, 510), BREAKER_CLOSED);
    assert_true(breaker_record(b, 510, true, "x"));
    assert_int_equal(state_at(b, 510), BREAKER_OPEN);
    breaker_free(b);
}

static void knows_the_calls_that_tripped_it(void **state)
{
    (void)state;
    breaker_t *b = breaker_new(&CFG, NULL, NULL);
    assert_false(breaker_tripped_by(b, 100));
    breaker_record(b, 100, true, "x"); /* falls out of the window before the trip */
    for (int i = 0; i < 20; i++) breaker_record(b, 1200 + i, true, "x");
    assert_int_equal(state_at(b, 1219), BREAKER_OPEN);
    assert_false(breaker_tripped_by(b, 100));
    assert_true(breaker_tripped_by(b, 1200));
    assert_true(breaker_tripped_by(b, 1210));
    assert_true(breaker_tripped_by(b, 1219));
    assert_false(breaker_tripped_by(b, 1220)); /* after: excused by breaker_record itself */
    breaker_free(b);
}

static void old_outcomes_leave_the_window(void **state)
{
    (void)state;
    breaker_t *b = breaker_new(&CFG, NULL, NULL);
    /* 15 failures, then 15 more 1.5 s later: never 20 within one window. */
    record_counted(b, 0, 15, true);
    record_counted(b, 1500, 15, true);
    assert_int_equal(state_at(b, 1500), BREAKER_CLOSED);
    /* 5 more within the same window make 20. */
    record_counted(b, 1600, 4, true);
    assert_true(breaker_record(b, 1600, true, "x"));
    assert_int_equal(state_at(b, 1600), BREAKER_OPEN);
    breaker_free(b);
}

static void half_open_after_backoff_then_closed(void **state)
{
    (void)state;
    changes_t ch = {0};
    breaker_t *b = breaker_new(&CFG, on_change, &ch);
    int64_t t = trip(b, 1000);
    assert_false(breaker_allow(b, t + 99));
    assert_int_equal(state_at(b, t + 99), BREAKER_OPEN);
    /* At the probe time: half-open, three probes and no more. */
    assert_true(breaker_allow(b, t + 100));
    assert_int_equal(state_at(b, t + 100), BREAKER_HALF_OPEN);
    assert_true(breaker_allow(b, t + 100));
    assert_true(breaker_allow(b, t + 101));
    assert_false(breaker_allow(b, t + 101));
    char why[BREAKER_WHY_MAX + 100];
    assert_int_equal(breaker_state(b, t + 101, why, sizeof why), BREAKER_HALF_OPEN);
    assert_non_null(strstr(why, "circuit half-open"));
    /* Three successes close it; calls flow again, and the window starts empty. */
    assert_false(breaker_record(b, t + 150, false, NULL));
    assert_false(breaker_record(b, t + 150, false, NULL));
    assert_int_equal(state_at(b, t + 150), BREAKER_HALF_OPEN);
    assert_false(breaker_record(b, t + 160, false, NULL));
    assert_int_equal(breaker_state(b, t + 160, why, sizeof why), BREAKER_CLOSED);
    assert_string_equal(why, "");
    assert_true(breaker_allow(b, t + 160));
    assert_string_equal(ch.seen, "closed>open open>half-open half-open>closed");
    record_counted(b, t + 170, 19, true);
    assert_int_equal(state_at(b, t + 170), BREAKER_CLOSED);
    /* Opening again starts from the first backoff: it was reset when it closed. */
    assert_true(breaker_record(b, t + 170, true, "x"));
    assert_int_equal(ch.next_probe_in_ms, 100);
    breaker_free(b);
}

static void failed_probe_reopens_with_capped_backoff(void **state)
{
    (void)state;
    changes_t ch = {0};
    breaker_t *b = breaker_new(&CFG, on_change, &ch);
    int64_t t = trip(b, 0);
    /* Each failed probe doubles the wait: 200, 400, 800, then 800 (the cap). */
    int64_t waits[] = {100, 200, 400, 800, 800, 800};
    for (size_t i = 0; i + 1 < sizeof waits / sizeof waits[0]; i++) {
        assert_false(breaker_allow(b, t + waits[i] - 1));
        t += waits[i];
        assert_true(breaker_allow(b, t));
        assert_int_equal(state_at(b, t), BREAKER_HALF_OPEN);
        /* The failed probe is not counted against its item. */
        assert_true(breaker_record(b, t + 5, true, "Connection refused"));
        assert_int_equal(state_at(b, t + 5), BREAKER_OPEN);
        assert_int_equal(ch.next_probe_in_ms, waits[i + 1]);
        t += 5;
    }
    char why[BREAKER_WHY_MAX + 100];
    breaker_state(b, t, why, sizeof why);
    assert_non_null(strstr(why, "a probe failed (Connection refused)"));
    assert_non_null(strstr(why, "next probe in 800 ms"));
    breaker_free(b);
}

static void abandoned_probes_get_a_new_round(void **state)
{
    (void)state;
    breaker_t *b = breaker_new(&CFG, NULL, NULL);
    int64_t t = trip(b, 0) + 100;
    for (int i = 0; i < 3; i++) assert_true(breaker_allow(b, t));
    assert_false(breaker_allow(b, t + 999));
    /* No probe reported for a window (they were cancelled): three more may go. */
    for (int i = 0; i < 3; i++) assert_true(breaker_allow(b, t + 1000));
    assert_false(breaker_allow(b, t + 1000));
    breaker_free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(opens_on_ratio_after_min_calls),
        cmocka_unit_test(stays_closed_below_ratio),
        cmocka_unit_test(recent_calls_weigh),
        cmocka_unit_test(old_outcomes_leave_the_window),
        cmocka_unit_test(knows_the_calls_that_tripped_it),
        cmocka_unit_test(half_open_after_backoff_then_closed),
        cmocka_unit_test(failed_probe_reopens_with_capped_backoff),
        cmocka_unit_test(abandoned_probes_get_a_new_round),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
