/* Unit tests of dynbuf: cap enforcement, printf, JSON string escaping, take. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "dynbuf.h"

/* Appends s[0..len) as a JSON string to an empty buffer and returns the buffer's text (the caller frees it). */
static char *json_quote(const char *s, size_t len)
{
    dynbuf_t b;
    dynbuf_init(&b, 1 << 20);
    assert_int_equal(dynbuf_add_json_string(&b, s, len), 0);
    return dynbuf_take(&b, NULL);
}

/* Asserts that text is one valid JSON string whose value is expected[0..expected_len). */
static void assert_json_string(const char *text, const char *expected, size_t expected_len)
{
    json_error_t jerr;
    json_t *v = json_loads(text, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
    if (!v) fail_msg("not valid JSON: %s: %s", text, jerr.text);
    assert_true(json_is_string(v));
    assert_int_equal(json_string_length(v), expected_len);
    assert_memory_equal(json_string_value(v), expected, expected_len);
    json_decref(v);
}

static void test_init_empty(void **state)
{
    (void)state;
    dynbuf_t b;
    dynbuf_init(&b, 100);
    assert_null(b.data);
    assert_int_equal(b.len, 0);
    assert_int_equal(b.cap, 100);
    dynbuf_free(&b);
    assert_null(b.data);
}

static void test_add_and_nul_terminated(void **state)
{
    (void)state;
    dynbuf_t b;
    dynbuf_init(&b, 1000);
    assert_int_equal(dynbuf_addstr(&b, "hello"), 0);
    assert_int_equal(dynbuf_add(&b, ", world!!!", 7), 0);
    assert_int_equal(b.len, 12);
    assert_string_equal(b.data, "hello, world");
    assert_int_equal(dynbuf_add(&b, "", 0), 0);
    assert_int_equal(b.len, 12);
    /* Binary content, including NUL bytes, is kept as given. */
    assert_int_equal(dynbuf_add(&b, "\0x\0", 3), 0);
    assert_int_equal(b.len, 15);
    assert_memory_equal(b.data, "hello, world\0x\0", 16);
    dynbuf_free(&b);
}

static void test_grows_past_initial_allocation(void **state)
{
    (void)state;
    dynbuf_t b;
    dynbuf_init(&b, 1 << 20);
    char chunk[100];
    memset(chunk, 'a', sizeof chunk);
    for (int i = 0; i < 1000; i++) assert_int_equal(dynbuf_add(&b, chunk, sizeof chunk), 0);
    assert_int_equal(b.len, 100000);
    assert_true(b.alloc > b.len);
    assert_int_equal(b.data[b.len], '\0');
    for (size_t i = 0; i < b.len; i++)
        if (b.data[i] != 'a') fail_msg("byte %zu is %d", i, b.data[i]);
    dynbuf_free(&b);
}

static void test_cap_exact_fits(void **state)
{
    (void)state;
    dynbuf_t b;
    dynbuf_init(&b, 10);
    assert_int_equal(dynbuf_add(&b, "0123456789", 10), 0);
    assert_int_equal(b.len, 10);
    assert_string_equal(b.data, "0123456789");
    assert_int_equal(dynbuf_add(&b, "", 0), 0); /* empty appends at the cap are fine */
    dynbuf_free(&b);
}

static void test_cap_append_beyond_fails_unchanged(void **state)
{
    (void)state;
    dynbuf_t b;
    dynbuf_init(&b, 10);
    assert_int_equal(dynbuf_addstr(&b, "01234567"), 0);
    assert_int_equal(dynbuf_add(&b, "abc", 3), -1);
    assert_int_equal(b.len, 8);
    assert_string_equal(b.data, "01234567");
    assert_int_equal(dynbuf_addstr(&b, "toolongforthecap"), -1);
    assert_int_equal(b.len, 8);
    assert_string_equal(b.data, "01234567");
    /* What still fits is accepted afterwards. */
    assert_int_equal(dynbuf_add(&b, "ab", 2), 0);
    assert_string_equal(b.data, "01234567ab");
    assert_int_equal(dynbuf_add(&b, "c", 1), -1);
    assert_string_equal(b.data, "01234567ab");
    assert_int_equal(b.len, 10);
    dynbuf_free(&b);
}

static void test_cap_first_append_too_big(void **state)
{
    (void)state;
    dynbuf_t b;
    dynbuf_init(&b, 4);
    assert_int_equal(dynbuf_add(&b, "12345", 5), -1);
    assert_int_equal(b.len, 0);
    assert_true(b.data == NULL || b.data[0] == '\0');
    /* A huge length must not overflow the size check. */
    assert_int_equal(dynbuf_add(&b, "x", (size_t)-1), -1);
    assert_int_equal(b.len, 0);
    dynbuf_free(&b);
}

static void test_cap_zero(void **state)
{
    (void)state;
    dynbuf_t b;
    dynbuf_init(&b, 0);
    assert_int_equal(dynbuf_add(&b, "x", 1), -1);
    assert_int_equal(dynbuf_add(&b, "", 0), 0);
    assert_int_equal(b.len, 0);
    size_t len = 99;
    char *s = dynbuf_take(&b, &len);
    assert_non_null(s);
    assert_string_equal(s, "");
    assert_int_equal(len, 0);
    free(s);
}

static void test_printf(void **state)
{
    (void)state;
    dynbuf_t b;
    dynbuf_init(&b, 1000);
    assert_int_equal(dynbuf_addstr(&b, "a="), 0);
    assert_int_equal(dynbuf_printf(&b, "%d,%s,%lld", 42, "x", -7LL), 0);
    assert_string_equal(b.data, "a=42,x,-7");
    assert_int_equal(b.len, 9);
    assert_int_equal(dynbuf_printf(&b, "%s", ""), 0);
    assert_int_equal(b.len, 9);
    char big[300];
    memset(big, 'z', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    assert_int_equal(dynbuf_printf(&b, "[%s]", big), 0);
    assert_int_equal(b.len, 9 + 301);
    assert_int_equal(b.data[9], '[');
    assert_int_equal(b.data[9 + 300], ']');
    assert_int_equal(b.data[b.len], '\0');
    dynbuf_free(&b);
}

static void test_add_int(void **state)
{
    (void)state;
    dynbuf_t b;
    dynbuf_init(&b, 1000);
    long long values[] = {0, 7, -7, 10, 200, -1234567890123LL, 9223372036854775807LL, -9223372036854775807LL - 1};
    char expected[1000] = "", one[32];
    for (size_t i = 0; i < sizeof values / sizeof values[0]; i++) {
        assert_int_equal(dynbuf_add_int(&b, values[i]), 0);
        assert_int_equal(dynbuf_addstr(&b, ","), 0);
        snprintf(one, sizeof one, "%lld,", values[i]);
        strcat(expected, one);
    }
    assert_string_equal(b.data, expected);
    dynbuf_free(&b);
    dynbuf_init(&b, 3);
    assert_int_equal(dynbuf_add_int(&b, 1000), -1);
    assert_int_equal(b.len, 0);
    assert_int_equal(dynbuf_add_int(&b, -12), 0);
    assert_string_equal(b.data, "-12");
    dynbuf_free(&b);
}

static void test_printf_beyond_cap_fails_unchanged(void **state)
{
    (void)state;
    dynbuf_t b;
    dynbuf_init(&b, 8);
    assert_int_equal(dynbuf_printf(&b, "%d", 1234), 0);
    assert_int_equal(dynbuf_printf(&b, "%d", 56789), -1);
    assert_int_equal(b.len, 4);
    assert_string_equal(b.data, "1234");
    assert_int_equal(dynbuf_printf(&b, "%d", 5678), 0);
    assert_string_equal(b.data, "12345678");
    assert_int_equal(dynbuf_printf(&b, "%c", 'x'), -1);
    assert_string_equal(b.data, "12345678");
    dynbuf_free(&b);
}

static void test_json_string_plain(void **state)
{
    (void)state;
    char *s = json_quote("hello world", 11);
    assert_string_equal(s, "\"hello world\"");
    free(s);
    s = json_quote("", 0);
    assert_string_equal(s, "\"\"");
    free(s);
    /* Only len bytes are used. */
    s = json_quote("abcdef", 3);
    assert_string_equal(s, "\"abc\"");
    free(s);
}

static void test_json_string_escapes(void **state)
{
    (void)state;
    char *s = json_quote("a\"b\\c\nd\re\tf/", 12);
    assert_string_equal(s, "\"a\\\"b\\\\c\\nd\\re\\tf/\"");
    assert_json_string(s, "a\"b\\c\nd\re\tf/", 12);
    free(s);

    const char ctl[] = {0x01, 0x08, 0x0c, 0x1f, 0x00, 'x'};
    s = json_quote(ctl, sizeof ctl);
    assert_string_equal(s, "\"\\u0001\\u0008\\u000c\\u001f\\u0000x\"");
    assert_json_string(s, ctl, sizeof ctl);
    free(s);

    /* DEL needs no escape; it must still give valid JSON. */
    s = json_quote("\x7f", 1);
    assert_json_string(s, "\x7f", 1);
    free(s);
}

static void test_json_string_valid_utf8_kept(void **state)
{
    (void)state;
    const char *text = "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 \xf4\x8f\xbf\xbf"; /* é € 😀 U+10FFFF */
    char *s = json_quote(text, strlen(text));
    char expected[64];
    snprintf(expected, sizeof expected, "\"%s\"", text);
    assert_string_equal(s, expected);
    assert_json_string(s, text, strlen(text));
    free(s);
}

static void test_json_string_invalid_utf8_replaced(void **state)
{
    (void)state;
    static const struct {
        const char *in;
        const char *out; /* expected JSON text */
    } cases[] = {
        {"\xff", "\"\\ufffd\""},
        {"a\x80z", "\"a\\ufffdz\""},                       /* lone continuation byte */
        {"\xc0\xaf", "\"\\ufffd\\ufffd\""},                /* overlong '/' */
        {"\xe0\x80\xaf", "\"\\ufffd\\ufffd\\ufffd\""},     /* overlong 3-byte */
        {"\xed\xa0\x80", "\"\\ufffd\\ufffd\\ufffd\""},     /* UTF-16 surrogate */
        {"\xf4\x90\x80\x80", "\"\\ufffd\\ufffd\\ufffd\\ufffd\""}, /* above U+10FFFF */
        {"x\xe2\x82", "\"x\\ufffd\\ufffd\""},              /* truncated at the end */
        {"\xe2\x82x", "\"\\ufffd\\ufffdx\""},              /* truncated before ASCII */
        {"\xc3\xa9\xff\xc3\xa9", "\"\xc3\xa9\\ufffd\xc3\xa9\""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *s = json_quote(cases[i].in, strlen(cases[i].in));
        if (strcmp(s, cases[i].out) != 0) fail_msg("case %zu: got %s, expected %s", i, s, cases[i].out);
        json_error_t jerr;
        json_t *v = json_loads(s, JSON_DECODE_ANY, &jerr);
        if (!json_is_string(v)) fail_msg("case %zu: not a valid JSON string: %s", i, jerr.text);
        json_decref(v);
        free(s);
    }
}

static void test_json_string_all_bytes_valid_json(void **state)
{
    (void)state;
    char all[256];
    for (int i = 0; i < 256; i++) all[i] = (char)i;
    char *s = json_quote(all, sizeof all);
    json_error_t jerr;
    json_t *v = json_loads(s, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
    if (!json_is_string(v)) fail_msg("not a valid JSON string: %s", jerr.text);
    /* The ASCII half comes back exactly. */
    assert_memory_equal(json_string_value(v), all, 128);
    json_decref(v);
    free(s);
}

static void test_json_string_appends(void **state)
{
    (void)state;
    dynbuf_t b;
    dynbuf_init(&b, 100);
    dynbuf_addstr(&b, "{\"k\":");
    assert_int_equal(dynbuf_add_json_string(&b, "v\n", 2), 0);
    dynbuf_addstr(&b, "}");
    assert_string_equal(b.data, "{\"k\":\"v\\n\"}");
    dynbuf_free(&b);
}

static void test_json_string_beyond_cap_fails_unchanged(void **state)
{
    (void)state;
    dynbuf_t b;
    dynbuf_init(&b, 12);
    assert_int_equal(dynbuf_addstr(&b, "ab"), 0);
    /* The opening quote and some text fit, the rest does not: nothing of it may remain. */
    assert_int_equal(dynbuf_add_json_string(&b, "0123456789", 10), -1);
    assert_int_equal(b.len, 2);
    assert_string_equal(b.data, "ab");
    /* Failing on an escape. */
    assert_int_equal(dynbuf_add_json_string(&b, "12345678\n", 9), -1);
    assert_int_equal(b.len, 2);
    assert_string_equal(b.data, "ab");
    /* Failing on the closing quote. */
    assert_int_equal(dynbuf_add_json_string(&b, "123456789", 9), -1);
    assert_string_equal(b.data, "ab");
    /* Failing on a \u escape and on a replacement. */
    assert_int_equal(dynbuf_add_json_string(&b, "1234\x01", 5), -1);
    assert_string_equal(b.data, "ab");
    assert_int_equal(dynbuf_add_json_string(&b, "1234\xff", 5), -1);
    assert_string_equal(b.data, "ab");
    /* An exact fit: 2 + 1 + 8 + 1 = 12. */
    assert_int_equal(dynbuf_add_json_string(&b, "12345678", 8), 0);
    assert_string_equal(b.data, "ab\"12345678\"");
    assert_int_equal(b.len, 12);
    dynbuf_free(&b);

    dynbuf_init(&b, 0);
    assert_int_equal(dynbuf_add_json_string(&b, "", 0), -1);
    assert_int_equal(b.len, 0);
    dynbuf_free(&b);
}

static void test_take(void **state)
{
    (void)state;
    dynbuf_t b;
    dynbuf_init(&b, 50);
    dynbuf_addstr(&b, "payload");
    size_t len = 0;
    char *s = dynbuf_take(&b, &len);
    assert_string_equal(s, "payload");
    assert_int_equal(len, 7);
    /* The buffer is left empty, keeps its cap and is usable again. */
    assert_null(b.data);
    assert_int_equal(b.len, 0);
    assert_int_equal(b.cap, 50);
    assert_int_equal(dynbuf_addstr(&b, "again"), 0);
    assert_string_equal(b.data, "again");
    assert_ptr_not_equal(b.data, s);
    char *t = dynbuf_take(&b, NULL);
    assert_string_equal(t, "again");
    assert_string_equal(s, "payload");
    free(s);
    free(t);
    dynbuf_free(&b);
}

static void test_take_empty(void **state)
{
    (void)state;
    dynbuf_t b;
    dynbuf_init(&b, 50);
    size_t len = 123;
    char *s = dynbuf_take(&b, &len);
    assert_non_null(s);
    assert_string_equal(s, "");
    assert_int_equal(len, 0);
    free(s);
}

static void test_reset(void **state)
{
    (void)state;
    dynbuf_t b;
    dynbuf_init(&b, 10);
    dynbuf_addstr(&b, "0123456789");
    dynbuf_reset(&b);
    assert_int_equal(b.len, 0);
    assert_string_equal(b.data, "");
    /* The cap counts from the reset. */
    assert_int_equal(dynbuf_addstr(&b, "abcdefghij"), 0);
    assert_string_equal(b.data, "abcdefghij");
    dynbuf_free(&b);
}

/* dynbuf_take gives back the unused part of a large buffer (doubling may leave half of it unused). */
static void test_take_trims_large_slack(void **state)
{
    (void)state;
    dynbuf_t b;
    dynbuf_init(&b, 1 << 24);
    char block[1000];
    memset(block, 'a', sizeof block);
    for (int i = 0; i < 70; i++) assert_int_equal(dynbuf_add(&b, block, sizeof block), 0); /* 70,000 in 131,072 */
    assert_true(b.alloc - b.len > 4096);
    size_t len;
    char *s = dynbuf_take(&b, &len);
    assert_int_equal(len, 70000);
    assert_int_equal(s[69999], 'a');
    assert_int_equal(s[70000], '\0');
    free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_init_empty),
        cmocka_unit_test(test_add_and_nul_terminated),
        cmocka_unit_test(test_grows_past_initial_allocation),
        cmocka_unit_test(test_cap_exact_fits),
        cmocka_unit_test(test_cap_append_beyond_fails_unchanged),
        cmocka_unit_test(test_cap_first_append_too_big),
        cmocka_unit_test(test_cap_zero),
        cmocka_unit_test(test_printf),
        cmocka_unit_test(test_printf_beyond_cap_fails_unchanged),
        cmocka_unit_test(test_add_int),
        cmocka_unit_test(test_json_string_plain),
        cmocka_unit_test(test_json_string_escapes),
        cmocka_unit_test(test_json_string_valid_utf8_kept),
        cmocka_unit_test(test_json_string_invalid_utf8_replaced),
        cmocka_unit_test(test_json_string_all_bytes_valid_json),
        cmocka_unit_test(test_json_string_appends),
        cmocka_unit_test(test_json_string_beyond_cap_fails_unchanged),
        cmocka_unit_test(test_take),
        cmocka_unit_test(test_take_empty),
        cmocka_unit_test(test_take_trims_large_slack),
        cmocka_unit_test(test_reset),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
