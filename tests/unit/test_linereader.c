/* Unit tests of linereader, reading from in-memory streams (fmemopen). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "linereader.h"

typedef struct reader {
    FILE *f;
    linereader_t lr;
} reader_t;

static void reader_open(reader_t *r, const char *data, size_t len, size_t cap)
{
    /* fmemopen cannot open an empty buffer on every libc; an empty input is a stream already at its end. */
    r->f = len ? fmemopen((void *)data, len, "r") : fopen("/dev/null", "r");
    assert_non_null(r->f);
    linereader_init(&r->lr, r->f, cap);
}

static void reader_close(reader_t *r)
{
    linereader_free(&r->lr);
    fclose(r->f);
}

/* Reads the next line and checks it against the expected text, kept length and full length. */
static void expect_line(reader_t *r, const char *text, size_t len, size_t full_len, long long line_no)
{
    const char *line = NULL;
    size_t got_len = 12345, got_full = 12345;
    assert_int_equal(linereader_next(&r->lr, &line, &got_len, &got_full), 1);
    assert_non_null(line);
    assert_int_equal(got_len, len);
    assert_int_equal(got_full, full_len);
    assert_memory_equal(line, text, len);
    assert_int_equal(line[len], '\0');
    assert_int_equal(r->lr.line_no, line_no);
}

static void expect_end(reader_t *r)
{
    const char *line;
    size_t len, full_len;
    assert_int_equal(linereader_next(&r->lr, &line, &len, &full_len), 0);
    /* End of input stays the end. */
    assert_int_equal(linereader_next(&r->lr, &line, &len, &full_len), 0);
}

#define STR(s) s, sizeof(s) - 1

static void test_lines(void **state)
{
    (void)state;
    reader_t r;
    reader_open(&r, STR("first\nsecond line\n{\"id\":3}\n"), 100);
    assert_int_equal(r.lr.line_no, 0);
    expect_line(&r, "first", 5, 5, 1);
    expect_line(&r, "second line", 11, 11, 2);
    expect_line(&r, "{\"id\":3}", 8, 8, 3);
    expect_end(&r);
    assert_int_equal(r.lr.line_no, 3);
    reader_close(&r);
}

static void test_empty_input(void **state)
{
    (void)state;
    reader_t r;
    reader_open(&r, "", 0, 100);
    expect_end(&r);
    assert_int_equal(r.lr.line_no, 0);
    reader_close(&r);
}

static void test_last_line_without_newline(void **state)
{
    (void)state;
    reader_t r;
    reader_open(&r, STR("one\ntwo"), 100);
    expect_line(&r, "one", 3, 3, 1);
    expect_line(&r, "two", 3, 3, 2);
    expect_end(&r);
    reader_close(&r);

    reader_open(&r, STR("only"), 100);
    expect_line(&r, "only", 4, 4, 1);
    expect_end(&r);
    reader_close(&r);
}

static void test_crlf(void **state)
{
    (void)state;
    reader_t r;
    reader_open(&r, STR("a\r\nbc\r\n\r\nlast\r"), 100);
    expect_line(&r, "a", 1, 1, 1);
    expect_line(&r, "bc", 2, 2, 2);
    expect_line(&r, "", 0, 0, 3);
    expect_line(&r, "last", 4, 4, 4); /* a trailing '\r' goes even without a newline */
    expect_end(&r);
    reader_close(&r);
}

static void test_cr_inside_line_kept(void **state)
{
    (void)state;
    reader_t r;
    reader_open(&r, STR("a\rb\n\r\r\n"), 100);
    expect_line(&r, "a\rb", 3, 3, 1);
    expect_line(&r, "\r", 1, 1, 2); /* only one trailing '\r' is removed */
    expect_end(&r);
    reader_close(&r);
}

static void test_empty_lines(void **state)
{
    (void)state;
    reader_t r;
    reader_open(&r, STR("\n\nx\n\n"), 100);
    expect_line(&r, "", 0, 0, 1);
    expect_line(&r, "", 0, 0, 2);
    expect_line(&r, "x", 1, 1, 3);
    expect_line(&r, "", 0, 0, 4);
    expect_end(&r); /* the final newline does not start a fifth line */
    assert_int_equal(r.lr.line_no, 4);
    reader_close(&r);
}

static void test_line_longer_than_cap(void **state)
{
    (void)state;
    reader_t r;
    reader_open(&r, STR("short\n0123456789abcdef\nnext\n"), 8);
    expect_line(&r, "short", 5, 5, 1);
    expect_line(&r, "01234567", 8, 16, 2); /* first cap bytes kept, full length reported */
    expect_line(&r, "next", 4, 4, 3);      /* and the next line starts in the right place */
    expect_end(&r);
    reader_close(&r);
}

static void test_line_exactly_cap_not_cut(void **state)
{
    (void)state;
    reader_t r;
    reader_open(&r, STR("01234567\n012345678\n0123456"), 8);
    expect_line(&r, "01234567", 8, 8, 1);
    expect_line(&r, "01234567", 8, 9, 2);
    expect_line(&r, "0123456", 7, 7, 3);
    expect_end(&r);
    reader_close(&r);
}

static void test_long_last_line_without_newline(void **state)
{
    (void)state;
    reader_t r;
    reader_open(&r, STR("x\nabcdefghijklmnop"), 4);
    expect_line(&r, "x", 1, 1, 1);
    expect_line(&r, "abcd", 4, 16, 2);
    expect_end(&r);
    reader_close(&r);
}

static void test_huge_line_cut(void **state)
{
    (void)state;
    size_t n = 1 << 20;
    char *data = malloc(n + 4);
    assert_non_null(data);
    memset(data, 'q', n);
    memcpy(data + n, "\nok\n", 4);
    reader_t r;
    reader_open(&r, data, n + 4, 16);
    expect_line(&r, "qqqqqqqqqqqqqqqq", 16, n, 1);
    expect_line(&r, "ok", 2, 2, 2);
    expect_end(&r);
    reader_close(&r);
    free(data);
}

static void test_cap_zero(void **state)
{
    (void)state;
    reader_t r;
    reader_open(&r, STR("abc\n\n"), 0);
    expect_line(&r, "", 0, 3, 1);
    expect_line(&r, "", 0, 0, 2);
    expect_end(&r);
    reader_close(&r);
}

static void test_nul_bytes_kept(void **state)
{
    (void)state;
    reader_t r;
    reader_open(&r, STR("a\0b\nc\n"), 100);
    expect_line(&r, "a\0b", 3, 3, 1);
    expect_line(&r, "c", 1, 1, 2);
    expect_end(&r);
    reader_close(&r);
}

static void test_read_error(void **state)
{
    (void)state;
    /* Reading a write-only stream fails: -1 with errno set, not end of input. */
    char buf[16];
    FILE *f = fmemopen(buf, sizeof buf, "w");
    assert_non_null(f);
    linereader_t lr;
    linereader_init(&lr, f, 10);
    const char *line;
    size_t len, full_len;
    errno = 0;
    assert_int_equal(linereader_next(&lr, &line, &len, &full_len), -1);
    assert_int_not_equal(errno, 0);
    assert_int_equal(lr.line_no, 0);
    linereader_free(&lr);
    fclose(f);
}

/* Known bug: a CRLF line whose text is exactly cap bytes is reported as cut (full_len cap + 1): the '\r' is only
 * removed when the line was not cut, and it is counted in the full length. enqueue then rejects a line of exactly
 * --max-item-bytes bytes from a CRLF file as too long. */
static void test_crlf_line_exactly_cap_not_cut(void **state)
{
    (void)state;
    reader_t r;
    reader_open(&r, STR("01234567\r\nnext\r\n"), 8);
    expect_line(&r, "01234567", 8, 8, 1);
    expect_line(&r, "next", 4, 4, 2);
    expect_end(&r);
    reader_close(&r);
}

/* Same bug: the full length of a cut CRLF line counts the '\r' that is not part of the line. */
static void test_crlf_long_line_full_len(void **state)
{
    (void)state;
    reader_t r;
    reader_open(&r, STR("0123456789\r\n"), 4);
    expect_line(&r, "0123", 4, 10, 1);
    expect_end(&r);
    reader_close(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lines),
        cmocka_unit_test(test_empty_input),
        cmocka_unit_test(test_last_line_without_newline),
        cmocka_unit_test(test_crlf),
        cmocka_unit_test(test_cr_inside_line_kept),
        cmocka_unit_test(test_empty_lines),
        cmocka_unit_test(test_line_longer_than_cap),
        cmocka_unit_test(test_line_exactly_cap_not_cut),
        cmocka_unit_test(test_long_last_line_without_newline),
        cmocka_unit_test(test_huge_line_cut),
        cmocka_unit_test(test_cap_zero),
        cmocka_unit_test(test_nul_bytes_kept),
        cmocka_unit_test(test_read_error),
        cmocka_unit_test(test_crlf_line_exactly_cap_not_cut),
        cmocka_unit_test(test_crlf_long_line_full_len),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
