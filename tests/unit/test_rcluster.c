/* Unit tests of rcluster: slots of keys, MOVED and ASK replies, which node to dial, CLUSTER SLOTS replies. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "rcluster.h"
#include "redis_url.h"

static unsigned slot(const char *key) { return rcluster_slot(key, strlen(key)); }

static void test_slot_of_keys(void **state)
{
    (void)state;
    assert_int_equal(slot("123456789"), 0x31C3 % RCLUSTER_SLOTS); /* the CRC16 check value of the spec */
    assert_int_equal(slot("foo"), 12182);                          /* CLUSTER KEYSLOT foo */
    /* The hash tag: only the text between the first { and the next }, when not empty. */
    assert_int_equal(slot("chunkd:{q1}:pending"), slot("q1"));
    assert_int_equal(slot("chunkd:{q1}:processing:w-1"), slot("chunkd:{q1}:stats"));
    assert_int_equal(slot("a{}b"), slot("a{}b")); /* an empty tag: the whole key */
    assert_int_not_equal(slot("a{}b"), slot(""));
    assert_int_equal(slot("x{y"), slot("x{y")); /* no closing brace: the whole key */
}

static rcluster_t *new_cluster(const char *text, redis_url_t *u)
{
    char err[256];
    if (redis_url_parse(text, u, err, sizeof err)) fail_msg("%s: %s", text, err);
    return rcluster_new(u);
}

static void expect_next(rcluster_t *cl, const char *host, int port, bool seed)
{
    char got[256];
    int got_port = 0;
    bool is_seed = !seed;
    rcluster_next(cl, got, sizeof got, &got_port, &is_seed);
    if (strcmp(got, host) != 0 || got_port != port || is_seed != seed)
        fail_msg("next: got %s:%d%s, expected %s:%d%s", got, got_port, is_seed ? " (seed)" : "", host, port,
                 seed ? " (seed)" : "");
}

static void test_seeds_moved_ask_and_failures(void **state)
{
    (void)state;
    redis_url_t u;
    rcluster_t *cl = new_cluster("redis-cluster://a:7000,b:7001", &u);
    expect_next(cl, "a", 7000, true);
    rcluster_dial_failed(cl); /* a is gone: b next, and round again */
    expect_next(cl, "b", 7001, true);
    rcluster_dial_failed(cl);
    expect_next(cl, "a", 7000, true);

    assert_int_equal(rcluster_redirect(cl, "MOVED 3999 10.0.0.5:7002", true), RCLUSTER_MOVED);
    expect_next(cl, "10.0.0.5", 7002, false); /* remembered */
    expect_next(cl, "10.0.0.5", 7002, false);
    /* ASK: once, then the remembered node again; not armed in a pipeline. */
    assert_int_equal(rcluster_redirect(cl, "ASK 3999 10.0.0.6:7003", true), RCLUSTER_ASK);
    expect_next(cl, "10.0.0.6", 7003, false);
    expect_next(cl, "10.0.0.5", 7002, false);
    assert_int_equal(rcluster_redirect(cl, "ASK 3999 10.0.0.6:7003", false), RCLUSTER_ASK);
    expect_next(cl, "10.0.0.5", 7002, false);
    /* The remembered node gone (a failed master): back to the seeds. */
    rcluster_dial_failed(cl);
    expect_next(cl, "a", 7000, true);
    /* IPv6 addresses: the port follows the last colon. */
    assert_int_equal(rcluster_redirect(cl, "MOVED 1 ::1:7004", true), RCLUSTER_MOVED);
    expect_next(cl, "::1", 7004, false);
    /* Not redirections, or ones that do not parse. */
    assert_int_equal(rcluster_redirect(cl, "ERR unknown command", true), RCLUSTER_NONE);
    assert_int_equal(rcluster_redirect(cl, "MOVED 1", true), RCLUSTER_NONE);
    assert_int_equal(rcluster_redirect(cl, "MOVED 1 host:0", true), RCLUSTER_NONE);
    assert_int_equal(rcluster_redirect(cl, "MOVED 1 :7000", true), RCLUSTER_NONE);
    assert_int_equal(rcluster_redirect(cl, "MOVED 1 host:70000", true), RCLUSTER_NONE);
    expect_next(cl, "::1", 7004, false);
    assert_true(rcluster_candidates(cl) >= 2);
    rcluster_free(cl);
}

/* A CLUSTER SLOTS reply built by hand: ranges [start, end, [host, port, id]]. */
typedef struct {
    redisReply start, end, host, port, id, node, range;
    redisReply *node_el[3], *range_el[3];
} fake_range_t;

static void fake_range(fake_range_t *f, long long start, long long end, char *host, int port)
{
    memset(f, 0, sizeof *f);
    f->start = (redisReply){.type = REDIS_REPLY_INTEGER, .integer = start};
    f->end = (redisReply){.type = REDIS_REPLY_INTEGER, .integer = end};
    f->host = (redisReply){.type = REDIS_REPLY_STRING, .str = host, .len = strlen(host)};
    f->port = (redisReply){.type = REDIS_REPLY_INTEGER, .integer = port};
    f->id = (redisReply){.type = REDIS_REPLY_STRING, .str = (char *)"id", .len = 2};
    f->node_el[0] = &f->host, f->node_el[1] = &f->port, f->node_el[2] = &f->id;
    f->node = (redisReply){.type = REDIS_REPLY_ARRAY, .elements = 3, .element = f->node_el};
    f->range_el[0] = &f->start, f->range_el[1] = &f->end, f->range_el[2] = &f->node;
    f->range = (redisReply){.type = REDIS_REPLY_ARRAY, .elements = 3, .element = f->range_el};
}

static void test_cluster_slots_reply(void **state)
{
    (void)state;
    char h1[] = "10.0.0.1", h2[] = "10.0.0.2";
    fake_range_t r[3];
    fake_range(&r[0], 0, 5460, h1, 7000);
    fake_range(&r[1], 5461, 10922, h2, 7001);
    fake_range(&r[2], 10923, 16383, h1, 7000); /* the same master again */
    redisReply *el[3] = {&r[0].range, &r[1].range, &r[2].range};
    redisReply slots = {.type = REDIS_REPLY_ARRAY, .elements = 3, .element = el};
    char host[256];
    int port = 0;
    assert_int_equal(rcluster_slot_owner(&slots, 5461, host, sizeof host, &port), 0);
    assert_string_equal(host, "10.0.0.2");
    assert_int_equal(port, 7001);
    assert_int_equal(rcluster_slot_owner(&slots, 16383, host, sizeof host, &port), 0);
    assert_string_equal(host, "10.0.0.1");
    redis_url_node_t masters[4];
    assert_int_equal(rcluster_masters(&slots, masters, 4), 2);
    assert_int_equal(masters[0].port, 7000);
    assert_int_equal(masters[1].port, 7001);
    assert_int_equal(rcluster_masters(&slots, masters, 1), 1);
    slots.elements = 1; /* slots not covered */
    assert_int_equal(rcluster_slot_owner(&slots, 6000, host, sizeof host, &port), -1);
    redisReply err = {.type = REDIS_REPLY_ERROR, .str = (char *)"NOPERM", .len = 6};
    assert_int_equal(rcluster_masters(&err, masters, 4), -1);
    assert_int_equal(rcluster_slot_owner(&err, 1, host, sizeof host, &port), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_slot_of_keys),
        cmocka_unit_test(test_seeds_moved_ask_and_failures),
        cmocka_unit_test(test_cluster_slots_reply),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
