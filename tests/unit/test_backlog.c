/* Unit tests of src/backlog.c: the cap in bytes, when fetching pauses and why, and backlog.lua's reply read. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "backlog.h"

static void test_bytes_cap(void **state)
{
    (void)state;
    assert_int_equal(backlog_bytes_cap(-1, 64LL << 20), 32LL << 20);    /* half of maxmemory */
    assert_int_equal(backlog_bytes_cap(-1, 0), BACKLOG_DEFAULT_BYTES);   /* Redis without maxmemory */
    assert_int_equal(backlog_bytes_cap(-1, -1), BACKLOG_DEFAULT_BYTES);  /* maxmemory unknown */
    assert_int_equal(backlog_bytes_cap(0, 64LL << 20), 0);               /* no cap */
    assert_int_equal(backlog_bytes_cap(5000, 64LL << 20), 5000);         /* the flag wins */
}

static void test_over(void **state)
{
    (void)state;
    char why[320] = "";
    backlog_t b = {.lines = 10, .bytes = 1000, .maxmemory = 0};
    assert_false(backlog_over(&b, 10, 1000, "R", why, sizeof why)); /* at the caps: not over */
    b.lines = 11;
    assert_true(backlog_over(&b, 10, 1000, "R", why, sizeof why));
    assert_non_null(strstr(why, "R holds 11 results, more than --max-results-backlog 10"));
    b.lines = 3;
    b.bytes = 1001;
    assert_true(backlog_over(&b, 10, 1000, "R", why, sizeof why));
    assert_non_null(strstr(why, "take 1001 bytes, more than 1000 (--max-results-backlog-bytes)"));
    b.maxmemory = 4000;
    assert_true(backlog_over(&b, 0, -1, "R", why, sizeof why) == false); /* 1001 <= 2000 */
    b.bytes = 2001;
    assert_true(backlog_over(&b, 0, -1, "R", why, sizeof why));
    assert_non_null(strstr(why, "more than 2000 (1/2 of Redis's maxmemory)"));
    assert_false(backlog_over(&b, 0, 0, "R", why, sizeof why)); /* both caps off */
}

static redisReply integer(long long v) { return (redisReply){.type = REDIS_REPLY_INTEGER, .integer = v}; }

static void test_take_reply(void **state)
{
    (void)state;
    char err[200];
    backlog_t b = {.maxmemory = -1};
    redisReply e[3] = {integer(7), integer(700), integer(1 << 20)};
    redisReply *el[3] = {&e[0], &e[1], &e[2]};
    redisReply r = {.type = REDIS_REPLY_ARRAY, .elements = 3, .element = el};
    assert_int_equal(backlog_take_reply(&r, &b, err, sizeof err), 0);
    assert_int_equal(b.lines, 7);
    assert_int_equal(b.bytes, 700);
    assert_int_equal(b.maxmemory, 1 << 20);
    e[2] = integer(-1); /* not asked: maxmemory stays */
    assert_int_equal(backlog_take_reply(&r, &b, err, sizeof err), 0);
    assert_int_equal(b.maxmemory, 1 << 20);
    char refused[] = "NOPERM no INFO";
    e[2] = (redisReply){.type = REDIS_REPLY_STRING, .str = refused, .len = strlen(refused)};
    assert_int_equal(backlog_take_reply(&r, &b, err, sizeof err), 1);
    assert_int_equal(b.maxmemory, -1);
    assert_non_null(strstr(err, "NOPERM no INFO"));
    char msg[] = "ERR something";
    redisReply bad = {.type = REDIS_REPLY_ERROR, .str = msg, .len = strlen(msg)};
    b.lines = 99;
    assert_int_equal(backlog_take_reply(&bad, &b, err, sizeof err), -1);
    assert_int_equal(b.lines, 99);
    assert_non_null(strstr(err, "ERR something"));
    assert_int_equal(backlog_take_reply(NULL, &b, err, sizeof err), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bytes_cap),
        cmocka_unit_test(test_over),
        cmocka_unit_test(test_take_reply),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
