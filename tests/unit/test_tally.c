/* Unit tests of src/tally.c: counting result lines, grouping reasons, the warning of a run going badly. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "tally.h"

static void add(tally_t *t, const char *line) { tally_add(t, line, strlen(line)); }

static void test_counts_and_groups_reasons(void **state)
{
    (void)state;
    tally_t *t = tally_new();
    add(t, "{\"id\":1,\"ok\":true,\"result\":{\"ok\":false},\"attempts\":1,\"ms\":3}");
    add(t, "{\"id\":\"a,\\\"ok\\\":false\",\"ok\":true,\"result\":1,\"attempts\":1,\"ms\":3}"); /* an id that looks */
    add(t, "{\"id\":2,\"ok\":false,\"error\":\"HTTP 503 (gave up after 3 attempts)\",\"status\":503,\"attempts\":3}");
    add(t, "{\"id\":3,\"ok\":false,\"error\":\"HTTP 503 (gave up after 5 attempts)\",\"status\":503,\"attempts\":5}");
    add(t, "{\"id\":4,\"ok\":false,\"error\":\"HTTP 404\",\"status\":404,\"attempts\":1}");
    add(t, "not a result line");
    assert_int_equal(tally_ok(t), 2);
    assert_int_equal(tally_failed(t), 3);
    const char *reasons[5];
    long long counts[5];
    assert_int_equal(tally_top(t, reasons, counts, 5), 2);
    assert_string_equal(reasons[0], "HTTP 503");
    assert_int_equal(counts[0], 2);
    assert_string_equal(reasons[1], "HTTP 404");
    assert_int_equal(counts[1], 1);
    tally_free(t);
}

static void test_reasons_are_cut_and_capped(void **state)
{
    (void)state;
    tally_t *t = tally_new();
    char line[512], long_error[200];
    memset(long_error, 'x', sizeof long_error - 1);
    long_error[sizeof long_error - 1] = '\0';
    snprintf(line, sizeof line, "{\"id\":1,\"ok\":false,\"error\":\"%s\",\"attempts\":1}", long_error);
    add(t, line);
    const char *reason;
    long long count;
    assert_int_equal(tally_top(t, &reason, &count, 1), 1);
    assert_int_equal(strlen(reason), TALLY_REASON_MAX);
    for (int i = 0; i < TALLY_REASONS_MAX + 10; i++) {
        snprintf(line, sizeof line, "{\"id\":%d,\"ok\":false,\"error\":\"reason %d\",\"attempts\":1}", i, i);
        add(t, line);
    }
    const char *reasons[TALLY_REASONS_MAX + 2];
    long long counts[TALLY_REASONS_MAX + 2];
    size_t n = tally_top(t, reasons, counts, TALLY_REASONS_MAX + 2);
    assert_int_equal(n, TALLY_REASONS_MAX + 1); /* the kept ones and "other" */
    assert_string_equal(reasons[0], "other");
    assert_int_equal(counts[0], 11);
    tally_free(t);
}

static void test_warning_when_most_fail_at_most_every_10_s(void **state)
{
    (void)state;
    tally_t *t = tally_new();
    char out[256];
    for (int i = 0; i < TALLY_WINDOW; i++) add(t, "{\"id\":1,\"ok\":false,\"error\":\"HTTP 404\",\"attempts\":1}");
    assert_true(tally_warning(t, 1000, out, sizeof out));
    assert_non_null(strstr(out, "100 of the last 100 results failed"));
    assert_non_null(strstr(out, "HTTP 404"));
    assert_false(tally_warning(t, 1000 + TALLY_WARN_EVERY_MS - 1, out, sizeof out));
    assert_true(tally_warning(t, 1000 + TALLY_WARN_EVERY_MS, out, sizeof out));
    for (int i = 0; i < TALLY_WINDOW / 2; i++) add(t, "{\"id\":1,\"ok\":true,\"result\":1,\"attempts\":1}");
    assert_false(tally_warning(t, 100000, out, sizeof out)); /* half failed: not most */
    tally_free(t);
}

static void test_no_warning_before_a_full_window(void **state)
{
    (void)state;
    tally_t *t = tally_new();
    char out[256];
    for (int i = 0; i < TALLY_WINDOW - 1; i++) add(t, "{\"id\":1,\"ok\":false,\"error\":\"x\",\"attempts\":1}");
    assert_false(tally_warning(t, 1000, out, sizeof out));
    tally_free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_counts_and_groups_reasons),
        cmocka_unit_test(test_reasons_are_cut_and_capped),
        cmocka_unit_test(test_warning_when_most_fail_at_most_every_10_s),
        cmocka_unit_test(test_no_warning_before_a_full_window),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
