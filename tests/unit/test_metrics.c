/* Unit tests of the Prometheus text writers in src/metrics.c (no I/O). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "dynbuf.h"
#include "metrics.h"

static void test_label_escaping(void **state)
{
    (void)state;
    dynbuf_t b;
    dynbuf_init(&b, 4096);
    const char *labels[] = {"queue", "a\"b\\c\nd", NULL};
    assert_int_equal(metrics_write_sample(&b, "m_total", labels, 3), 0);
    assert_string_equal(b.data, "m_total{queue=\"a\\\"b\\\\c\\nd\"} 3\n");
    dynbuf_free(&b);
}

static void test_sample_without_labels_and_values(void **state)
{
    (void)state;
    dynbuf_t b;
    dynbuf_init(&b, 4096);
    metrics_write_sample(&b, "g", NULL, 0.25);
    metrics_write_sample(&b, "h", NULL, 1e15);
    metrics_write_header(&b, "x", "counter", "Help text.");
    assert_string_equal(b.data, "g 0.25\nh 1000000000000000\n# HELP x Help text.\n# TYPE x counter\n");
    dynbuf_free(&b);
}

static void test_histogram_is_cumulative_with_inf(void **state)
{
    (void)state;
    dynbuf_t b;
    dynbuf_init(&b, 4096);
    const double bounds[] = {0.1, 1};
    const uint64_t counts[] = {2, 3, 4}; /* 2 <= 0.1, 3 in (0.1, 1], 4 above */
    const char *labels[] = {"queue", "q", NULL};
    assert_int_equal(metrics_write_histogram(&b, "d_seconds", labels, bounds, counts, 2, 12.5), 0);
    assert_string_equal(b.data, "d_seconds_bucket{queue=\"q\",le=\"0.1\"} 2\n"
                                "d_seconds_bucket{queue=\"q\",le=\"1\"} 5\n"
                                "d_seconds_bucket{queue=\"q\",le=\"+Inf\"} 9\n"
                                "d_seconds_sum{queue=\"q\"} 12.5\n"
                                "d_seconds_count{queue=\"q\"} 9\n");
    dynbuf_free(&b);
}

static void test_render_counts_observations(void **state)
{
    (void)state;
    metrics_init("q1", "9.9");
    metrics_add(M_ITEMS_OK, 5);
    metrics_observe(H_ITEM_SECONDS, 50000);  /* 0.05 s */
    metrics_observe(H_ITEM_SECONDS, 40000000); /* 40 s: above every bound */
    dynbuf_t b;
    dynbuf_init(&b, 1 << 20);
    metrics_render(&b);
    assert_non_null(strstr(b.data, "chunkd_items_total{queue=\"q1\",outcome=\"ok\"} 5\n"));
    assert_non_null(strstr(b.data, "chunkd_item_duration_seconds_bucket{queue=\"q1\",le=\"0.05\"} 1\n"));
    assert_non_null(strstr(b.data, "chunkd_item_duration_seconds_bucket{queue=\"q1\",le=\"30\"} 1\n"));
    assert_non_null(strstr(b.data, "chunkd_item_duration_seconds_bucket{queue=\"q1\",le=\"+Inf\"} 2\n"));
    assert_non_null(strstr(b.data, "chunkd_item_duration_seconds_count{queue=\"q1\"} 2\n"));
    assert_non_null(strstr(b.data, "chunkd_item_duration_seconds_sum{queue=\"q1\"} 40.05"));
    assert_non_null(strstr(b.data, "chunkd_build_info{queue=\"q1\",version=\"9.9\"} 1\n"));
    assert_non_null(strstr(b.data, "# TYPE process_cpu_seconds_total counter\n"));
    /* One HELP/TYPE per family, even for a family with several label values. */
    const char *first = strstr(b.data, "# TYPE chunkd_items_total counter");
    assert_non_null(first);
    assert_null(strstr(first + 1, "# TYPE chunkd_items_total counter"));
    dynbuf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_label_escaping),
        cmocka_unit_test(test_sample_without_labels_and_values),
        cmocka_unit_test(test_histogram_is_cumulative_with_inf),
        cmocka_unit_test(test_render_counts_observations),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
