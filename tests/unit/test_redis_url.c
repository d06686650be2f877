/* Unit tests of redis_url: parsing and masking of Redis addresses. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "redis_url.h"

static void parse_ok(const char *text, redis_url_t *u)
{
    char err[256] = "";
    if (redis_url_parse(text, u, err, sizeof err) != 0) fail_msg("%s did not parse: %s", text, err);
}

/* The URL must not parse; the message must be set, must not contain `secret` (when given), and must contain
 * `needle` (when given). */
static void parse_fails(const char *text, const char *secret, const char *needle)
{
    redis_url_t u;
    char err[512] = "";
    if (redis_url_parse(text, &u, err, sizeof err) != -1) fail_msg("%s parsed but should not", text);
    if (err[0] == '\0') fail_msg("no error message for %s", text);
    if (secret && strstr(err, secret)) fail_msg("error message for %s shows the password: %s", text, err);
    if (needle && !strstr(err, needle)) fail_msg("error message for %s does not mention '%s': %s", text, needle, err);
}

static void expect_mask(const char *text, const char *expected)
{
    char out[512];
    memset(out, 'X', sizeof out);
    redis_url_mask(text, out, sizeof out);
    if (strcmp(out, expected) != 0) fail_msg("mask of %s: got %s, expected %s", text, out, expected);
}

static void test_host_only(void **state)
{
    (void)state;
    redis_url_t u;
    parse_ok("redis://localhost", &u);
    assert_false(u.is_unix);
    assert_string_equal(u.host, "localhost");
    assert_int_equal(u.port, 6379);
    assert_int_equal(u.db, 0);
    assert_string_equal(u.user, "");
    assert_string_equal(u.password, "");
    assert_string_equal(u.path, "");
}

static void test_host_port_db(void **state)
{
    (void)state;
    redis_url_t u;
    parse_ok("redis://redis.example.com:6380/3", &u);
    assert_string_equal(u.host, "redis.example.com");
    assert_int_equal(u.port, 6380);
    assert_int_equal(u.db, 3);

    parse_ok("redis://10.0.0.5/15", &u);
    assert_string_equal(u.host, "10.0.0.5");
    assert_int_equal(u.port, 6379);
    assert_int_equal(u.db, 15);

    parse_ok("redis://h:1/", &u);
    assert_int_equal(u.port, 1);
    assert_int_equal(u.db, 0);

    parse_ok("redis://h:65535/0", &u);
    assert_int_equal(u.port, 65535);

    parse_ok("redis://my_host-1.internal:7000", &u);
    assert_string_equal(u.host, "my_host-1.internal");
    assert_int_equal(u.port, 7000);
}

static void test_user_password(void **state)
{
    (void)state;
    redis_url_t u;
    parse_ok("redis://alice:s3cret@redis:6379/0", &u);
    assert_string_equal(u.user, "alice");
    assert_string_equal(u.password, "s3cret");
    assert_string_equal(u.host, "redis");
    assert_int_equal(u.port, 6379);

    /* Legacy AUTH: empty user, password only after the colon. */
    parse_ok("redis://:pw@redis", &u);
    assert_string_equal(u.user, "");
    assert_string_equal(u.password, "pw");
    assert_string_equal(u.host, "redis");
}

static void test_percent_escapes(void **state)
{
    (void)state;
    redis_url_t u;
    parse_ok("redis://us%65r%3Ax:p%40ss%3a%2Fw%25rd@h", &u);
    assert_string_equal(u.user, "user:x");
    assert_string_equal(u.password, "p@ss:/w%rd");
    assert_string_equal(u.host, "h");

    /* An unencoded '@' in the password: the last '@' ends the user info. */
    parse_ok("redis://u:a@b@h:1", &u);
    assert_string_equal(u.user, "u");
    assert_string_equal(u.password, "a@b");
    assert_string_equal(u.host, "h");
    assert_int_equal(u.port, 1);

    /* A ':' in the password. */
    parse_ok("redis://u:a:b@h", &u);
    assert_string_equal(u.user, "u");
    assert_string_equal(u.password, "a:b");
}

static void test_password_only_form(void **state)
{
    (void)state;
    redis_url_t u;
    parse_ok("redis://secret@host", &u);
    assert_string_equal(u.user, "");
    assert_string_equal(u.password, "secret");
    assert_string_equal(u.host, "host");
    assert_int_equal(u.port, 6379);

    parse_ok("redis://s%40cret@host:6390/2", &u);
    assert_string_equal(u.password, "s@cret");
    assert_int_equal(u.port, 6390);
    assert_int_equal(u.db, 2);
}

static void test_ipv6(void **state)
{
    (void)state;
    redis_url_t u;
    parse_ok("redis://[::1]:6380/1", &u);
    assert_string_equal(u.host, "::1");
    assert_int_equal(u.port, 6380);
    assert_int_equal(u.db, 1);

    parse_ok("redis://[2001:db8::7]", &u);
    assert_string_equal(u.host, "2001:db8::7");
    assert_int_equal(u.port, 6379);

    parse_ok("redis://u:p@[fe80::1]:7000", &u);
    assert_string_equal(u.host, "fe80::1");
    assert_string_equal(u.password, "p");
    assert_int_equal(u.port, 7000);

    parse_fails("redis://[::1", NULL, "ipv6");
    parse_fails("redis://[::1]x", NULL, NULL);
    parse_fails("redis://[::1]:", NULL, "port");
    parse_fails("redis://[]:6379", NULL, "host");
}

static void test_unix(void **state)
{
    (void)state;
    redis_url_t u;
    parse_ok("unix:///run/redis/redis.sock", &u);
    assert_true(u.is_unix);
    assert_string_equal(u.path, "/run/redis/redis.sock");
    assert_int_equal(u.db, 0);
    assert_string_equal(u.password, "");

    parse_ok("unix:///tmp/r.sock?db=4", &u);
    assert_true(u.is_unix);
    assert_string_equal(u.path, "/tmp/r.sock");
    assert_int_equal(u.db, 4);

    parse_ok("unix:///tmp/with%20space.sock", &u);
    assert_string_equal(u.path, "/tmp/with space.sock");

    /* The longest path that fits sun_path, and one byte more. */
    char text[256], path[sizeof u.path + 1];
    memset(path, 'p', sizeof path);
    path[0] = '/';
    path[sizeof u.path - 1] = '\0';
    snprintf(text, sizeof text, "unix://%s", path);
    parse_ok(text, &u);
    assert_string_equal(u.path, path);
    path[sizeof u.path - 1] = 'p';
    path[sizeof u.path] = '\0';
    snprintf(text, sizeof text, "unix://%s", path);
    parse_fails(text, NULL, NULL);

    parse_fails("unix://", NULL, NULL);
    parse_fails("unix://relative/path.sock", NULL, NULL);
    parse_fails("unix:///tmp/r.sock?db=", NULL, NULL);
    parse_fails("unix:///tmp/r.sock?db=x", NULL, NULL);
    parse_fails("unix:///tmp/r.sock?timeout=3", NULL, NULL);
    parse_fails("unix:///tmp/r.sock?db=1&x=2", NULL, NULL);
}

static void test_rediss(void **state)
{
    (void)state;
    redis_url_t u;
    parse_ok("rediss://user:topsecret@redis.example.com:6380/2", &u);
    assert_true(u.tls);
    assert_int_equal(u.mode, REDIS_URL_DIRECT);
    assert_string_equal(u.host, "redis.example.com");
    assert_int_equal(u.port, 6380);
    assert_int_equal(u.db, 2);
    assert_int_equal(u.n_nodes, 1);
    parse_ok("redis://h", &u);
    assert_false(u.tls);
    parse_fails("rediss://a,b", NULL, "sentinel");
}

static void test_sentinel(void **state)
{
    (void)state;
    redis_url_t u;
    parse_ok("redis-sentinel://s1:26380,[::1],s3/mymaster", &u);
    assert_int_equal(u.mode, REDIS_URL_SENTINEL);
    assert_false(u.tls);
    assert_int_equal(u.n_nodes, 3);
    assert_string_equal(u.nodes[0].host, "s1");
    assert_int_equal(u.nodes[0].port, 26380);
    assert_string_equal(u.nodes[1].host, "::1");
    assert_int_equal(u.nodes[1].port, 26379);
    assert_string_equal(u.nodes[2].host, "s3");
    assert_string_equal(u.master, "mymaster");
    assert_int_equal(u.db, 0);
    parse_ok("rediss-sentinel://app:pw@s1/my%2Fmaster/4", &u);
    assert_true(u.tls);
    assert_string_equal(u.master, "my/master");
    assert_string_equal(u.password, "pw");
    assert_int_equal(u.db, 4);
    parse_fails("redis-sentinel://s1:26379", NULL, "master");
    parse_fails("redis-sentinel://s1:26379/", NULL, "master");
    parse_fails("redis-sentinel://s1/m/x", NULL, "database");
    parse_fails("redis-sentinel://s1,,s2/m", NULL, "host");
    parse_fails("redis-sentinel://:Hunter2pw@s1:bad/m", "Hunter2pw", "port");
    expect_mask("redis-sentinel://app:pw@s1,s2:1/m", "redis-sentinel://app:***@s1:26379,s2:1/m/0");
    expect_mask("rediss-sentinel://s1/m/3", "rediss-sentinel://s1:26379/m/3");
}

static void test_cluster(void **state)
{
    (void)state;
    redis_url_t u;
    char hosts[400] = "redis-cluster://";
    for (int i = 0; i < REDIS_URL_MAX_NODES; i++)
        snprintf(hosts + strlen(hosts), sizeof hosts - strlen(hosts), "%sn%d:%d", i ? "," : "", i, 7000 + i);
    parse_ok(hosts, &u);
    assert_int_equal(u.mode, REDIS_URL_CLUSTER);
    assert_int_equal(u.n_nodes, REDIS_URL_MAX_NODES);
    assert_int_equal(u.nodes[REDIS_URL_MAX_NODES - 1].port, 7000 + REDIS_URL_MAX_NODES - 1);
    assert_string_equal(u.host, "n0");
    assert_int_equal(u.port, 7000);
    strcat(hosts, ",one-more");
    parse_fails(hosts, NULL, "more than");
    parse_ok("rediss-cluster://u:pw@c1:7000/0", &u);
    assert_true(u.tls);
    assert_int_equal(u.port, 7000);
    parse_fails("redis-cluster://c1:7000/1", NULL, "database 0");
    expect_mask("rediss-cluster://u:pw@c1:7000,c2", "rediss-cluster://u:***@c1:7000,c2:6379");
}

static void test_other_schemes_rejected(void **state)
{
    (void)state;
    parse_fails("", NULL, NULL);
    parse_fails("localhost:6379", NULL, NULL);
    parse_fails("http://localhost", NULL, NULL);
    parse_fails("redis:/localhost", NULL, NULL);
}

static void test_bad_port(void **state)
{
    (void)state;
    parse_fails("redis://h:0", NULL, "port");
    parse_fails("redis://h:65536", NULL, "port");
    parse_fails("redis://h:99999999999", NULL, "port");
    parse_fails("redis://h:", NULL, "port");
    parse_fails("redis://h:abc", NULL, "port");
    parse_fails("redis://h:-1", NULL, "port");
    parse_fails("redis://h:+80", NULL, "port");
    parse_fails("redis://h:63 79", NULL, "port");
    parse_fails("redis://h:6379:1", NULL, "port");
}

static void test_bad_db(void **state)
{
    (void)state;
    parse_fails("redis://h/x", NULL, "database");
    parse_fails("redis://h/-1", NULL, "database");
    parse_fails("redis://h/1/2", NULL, "database");
    parse_fails("redis://h:6379/1?x=y", NULL, "database");
}

static void test_missing_or_bad_host(void **state)
{
    (void)state;
    parse_fails("redis://", NULL, "host");
    parse_fails("redis:///0", NULL, "host");
    parse_fails("redis://:6379", NULL, "host");
    parse_fails("redis://user:pw@", "pw", "host");
    parse_fails("redis://user:pw@:6379/0", "pw", "host");
    parse_fails("redis://ho st", NULL, "host");
    parse_fails("redis://ho$t", NULL, "host");

    char text[400], host[300];
    memset(host, 'h', sizeof host);
    host[255] = '\0';
    snprintf(text, sizeof text, "redis://%s", host);
    redis_url_t u;
    parse_ok(text, &u);
    assert_string_equal(u.host, host);
    host[255] = 'h';
    host[256] = '\0';
    snprintf(text, sizeof text, "redis://%s", host);
    parse_fails(text, NULL, "host");
}

static void test_errors_never_show_password(void **state)
{
    (void)state;
    static const char *const urls[] = {
        "redis://user:Hunter2pw@host:notaport/0",
        "redis://user:Hunter2pw@host:70000",
        "redis://user:Hunter2pw@host/notadb",
        "redis://user:Hunter2pw@",
        "redis://user:Hunter2pw@ho$t",
        "redis://user:Hunter2pw@[::1",
        "redis://user:Hunter2pw@[::1]junk",
        "redis://user:Hunter2pw%zz@host",
        "redis://user:Hunter2pw%4@host",
        "redis://user:Hunter2pw%00@host",
        "redis://Hunter2pw%zz@host",
        "redis://Hunter2pw@host:bad",
        "redis://user:Hunter2pw",          /* no '@': the password looks like a port */
        "redis://user:Hunter2pw/0",
        "redis://:Hunter2pw@:1",
        "rediss://:Hunter2pw@host:0",
        "redis-sentinel://:Hunter2pw@s1",
        "redis-cluster://u:Hunter2pw@c1/2",
    };
    for (size_t i = 0; i < sizeof urls / sizeof urls[0]; i++) parse_fails(urls[i], "Hunter2pw", NULL);

    /* A password too long for the field. */
    char text[600], pw[400];
    memset(pw, 'S', sizeof pw - 1);
    pw[sizeof pw - 1] = '\0';
    snprintf(text, sizeof text, "redis://u:%s@host", pw);
    parse_fails(text, "SSSSSSSS", NULL);
    snprintf(text, sizeof text, "redis://%s@host", pw);
    parse_fails(text, "SSSSSSSS", NULL);
}

static void test_bad_escapes(void **state)
{
    (void)state;
    parse_fails("redis://u%:p@h", NULL, NULL);
    parse_fails("redis://u%g0:p@h", NULL, NULL);
    parse_fails("redis://u:p%2@h", NULL, NULL);
    parse_fails("redis://u:p%@h", NULL, NULL);
    parse_fails("unix:///tmp/a%zz.sock", NULL, NULL);
    parse_fails("unix:///tmp/a%00.sock", NULL, NULL);
    /* An escape right at the end of the field is complete. */
    redis_url_t u;
    parse_ok("redis://u:p%41@h", &u);
    assert_string_equal(u.password, "pA");
}

static void test_parse_resets_output(void **state)
{
    (void)state;
    redis_url_t u;
    parse_ok("redis://a:b@h1:7000/5", &u);
    parse_ok("redis://h2", &u);
    assert_string_equal(u.user, "");
    assert_string_equal(u.password, "");
    assert_int_equal(u.port, 6379);
    assert_int_equal(u.db, 0);
    parse_ok("unix:///x.sock", &u);
    assert_string_equal(u.host, "");
}

static void test_mask(void **state)
{
    (void)state;
    expect_mask("redis://alice:s3cret@redis:6380/2", "redis://alice:***@redis:6380/2");
    expect_mask("redis://:s3cret@redis", "redis://:***@redis:6379/0");
    expect_mask("redis://s3cret@redis", "redis://:***@redis:6379/0");
    expect_mask("redis://redis", "redis://redis:6379/0");
    expect_mask("redis://[::1]:7000/1", "redis://[::1]:7000/1");
    expect_mask("redis://u:p%40w@[2001:db8::1]", "redis://u:***@[2001:db8::1]:6379/0");
    expect_mask("unix:///run/redis.sock", "unix:///run/redis.sock");
    expect_mask("unix:///run/redis.sock?db=3", "unix:///run/redis.sock?db=3");
    expect_mask("rediss://u:s3cret@h", "rediss://u:***@h:6379/0");
    expect_mask("redis://u:s3cret@h:bad", "<invalid redis url>");
    expect_mask("garbage", "<invalid redis url>");
}

static void test_mask_never_shows_password(void **state)
{
    (void)state;
    static const char *const urls[] = {
        "redis://alice:Pw0rdXyz@redis:6380/2", "redis://:Pw0rdXyz@redis", "redis://Pw0rdXyz@redis",
        "redis://u:Pw0rdXyz@[::1]:1",           "redis://u:Pw0rd%58yz@h", "redis://u:Pw0rdXyz@h:0",
        "redis://u:Pw0rdXyz@",                  "rediss://u:Pw0rdXyz@h",  "redis://u:Pw0rdXyz@h/x",
        "redis-sentinel://u:Pw0rdXyz@a,b/m",    "rediss-cluster://Pw0rdXyz@a,b",
    };
    for (size_t i = 0; i < sizeof urls / sizeof urls[0]; i++) {
        char out[512];
        redis_url_mask(urls[i], out, sizeof out);
        if (strstr(out, "Pw0rd")) fail_msg("mask of %s shows the password: %s", urls[i], out);
    }
}

static void test_mask_small_buffer(void **state)
{
    (void)state;
    char out[12];
    memset(out, 'X', sizeof out);
    redis_url_mask("redis://user:Pw0rdXyz@a-long-host-name:6379/0", out, sizeof out);
    assert_int_equal(strlen(out), sizeof out - 1); /* cut, NUL-terminated */
    assert_null(strstr(out, "Pw0"));
    char one[1] = {'X'};
    redis_url_mask("redis://h", one, sizeof one);
    assert_int_equal(one[0], '\0');
}

/* Found by fuzzing: the mask wrote the decoded user and socket path as they were, so a %0A in them (or a raw byte)
 * put a line break or other control character into the log line, and a %3F, %3A or %2F made a masked form that
 * named another address. They are written %-encoded now. */
static void test_mask_encodes_user_and_path(void **state)
{
    (void)state;
    expect_mask("unix:///tmp/a%0Ab.sock", "unix:///tmp/a%0Ab.sock");
    expect_mask("unix:///tmp/a%3Fdb=1?db=2", "unix:///tmp/a%3Fdb%3D1?db=2");
    expect_mask("unix:///tmp/r.so\x9d\x94" "b", "unix:///tmp/r.so%9D%94b");
    expect_mask("unix:///tmp/with%20space.sock", "unix:///tmp/with%20space.sock");
    expect_mask("redis://us%3Aer%0A:pw@h", "redis://us%3Aer%0A:***@h:6379/0");
    expect_mask("redis://a%2Fb@c:pw@h/1", "redis://a%2Fb%40c:***@h:6379/1");
    expect_mask("redis://alice.b-c_d~e:@h", "redis://alice.b-c_d~e:@h:6379/0");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_host_only),
        cmocka_unit_test(test_host_port_db),
        cmocka_unit_test(test_user_password),
        cmocka_unit_test(test_percent_escapes),
        cmocka_unit_test(test_password_only_form),
        cmocka_unit_test(test_ipv6),
        cmocka_unit_test(test_unix),
        cmocka_unit_test(test_rediss),
        cmocka_unit_test(test_sentinel),
        cmocka_unit_test(test_cluster),
        cmocka_unit_test(test_other_schemes_rejected),
        cmocka_unit_test(test_bad_port),
        cmocka_unit_test(test_bad_db),
        cmocka_unit_test(test_missing_or_bad_host),
        cmocka_unit_test(test_errors_never_show_password),
        cmocka_unit_test(test_bad_escapes),
        cmocka_unit_test(test_parse_resets_output),
        cmocka_unit_test(test_mask),
        cmocka_unit_test(test_mask_never_shows_password),
        cmocka_unit_test(test_mask_small_buffer),
        cmocka_unit_test(test_mask_encodes_user_and_path),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
