/* Unit tests of the calling convention shared by commit.c and its two scripts (src/commit_script.h): each name the
 * header gives a KEYS or ARGV position, a mode, a tag or a reply is declared in the embedded script text
 * (build/scripts.c, generated from src/scripts/) as a Lua local with the same value, the scripts declare no other
 * such constant, and they index KEYS and ARGV only through names. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "commit_script.h"
#include "scripts.h"

/* One shared constant: its name and its value as a Lua literal. */
typedef struct shared {
    const char *name;
    char lua[32];
} shared_t;

static shared_t number(const char *name, long value)
{
    shared_t s = {name, {0}};
    snprintf(s.lua, sizeof s.lua, "%ld", value);
    return s;
}

static shared_t text(const char *name, const char *value)
{
    shared_t s = {name, {0}};
    snprintf(s.lua, sizeof s.lua, "'%s'", value);
    return s;
}

static shared_t character(const char *name, char value)
{
    shared_t s = {name, {0}};
    snprintf(s.lua, sizeof s.lua, "'%c'", value);
    return s;
}

#define NUMBER(name) number(#name, name)
#define TEXT(name) text(#name, name)
#define CHARACTER(name) character(#name, name)

/* Whether script declares `local NAME = VALUE` on a line of its own. */
static bool declares(const char *script, const shared_t *s)
{
    char line[128];
    snprintf(line, sizeof line, "\nlocal %s = %s\n", s->name, s->lua);
    return strstr(script, line) != NULL;
}

/* How many lines of script declare a constant: `local ` then an upper-case name. */
static size_t constants_declared(const char *script)
{
    size_t n = 0;
    for (const char *p = strstr(script, "\nlocal "); p; p = strstr(p + 1, "\nlocal ")) {
        char c = p[strlen("\nlocal ")];
        n += c >= 'A' && c <= 'Z';
    }
    return n;
}

/* Whether the code of script (comments aside) indexes table (KEYS or ARGV) with a digit, instead of a name. */
static bool indexes_by_number(const char *script, const char *table)
{
    char open[16];
    snprintf(open, sizeof open, "%s[", table);
    const size_t open_len = strlen(open);
    for (const char *line = script; *line;) {
        const char *end = strchr(line, '\n');
        size_t len = end ? (size_t)(end - line) : strlen(line);
        for (size_t i = 0; i + open_len < len; i++) {
            if (line[i] == '-' && line[i + 1] == '-') break; /* a comment to the end of the line */
            if (!memcmp(line + i, open, open_len) && line[i + open_len] >= '0' && line[i + open_len] <= '9')
                return true;
        }
        line += len + (end != NULL);
    }
    return false;
}

static void check_script(const char *script, const shared_t *shared, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!declares(script, &shared[i]))
            fail_msg("the script does not declare local %s = %s", shared[i].name, shared[i].lua);
    assert_int_equal(constants_declared(script), n);
    assert_false(indexes_by_number(script, "KEYS"));
    assert_false(indexes_by_number(script, "ARGV"));
}

static void test_commit_lua_shares_the_header(void **state)
{
    (void)state;
    const shared_t shared[] = {
        NUMBER(COMMIT_KEY_PROCESSING), NUMBER(COMMIT_KEY_RESULTS),   NUMBER(COMMIT_KEY_STATS),
        NUMBER(COMMIT_KEY_DEAD),       NUMBER(COMMIT_KEY_CHECKPOINT), NUMBER(COMMIT_KEY_DELIVERIES),
        NUMBER(COMMIT_KEY_PENDING),    TEXT(COMMIT_MODE_REQUEUE),
        NUMBER(COMMIT_ARG_CHUNK),      NUMBER(COMMIT_ARG_MODE),       NUMBER(COMMIT_ARG_CKPT_NAME),
        NUMBER(COMMIT_ARG_USE_CKPT),   NUMBER(COMMIT_ARG_N),          NUMBER(COMMIT_ARG_N_OK),
        NUMBER(COMMIT_ARG_N_DEAD),     NUMBER(COMMIT_N_HEAD_ARGS),    TEXT(COMMIT_MODE_PARTIAL),
        TEXT(COMMIT_MODE_FINAL),       TEXT(COMMIT_MODE_DEAD),        TEXT(COMMIT_CKPT_ON),
        CHARACTER(COMMIT_TAG_OK),      CHARACTER(COMMIT_TAG_DEAD),    NUMBER(COMMIT_REPLY_FENCED),
        NUMBER(COMMIT_REPLY_OK),       NUMBER(COMMIT_REPLY_CKPT_EXISTS),
    };
    check_script(script_commit, shared, sizeof shared / sizeof shared[0]);
}

static void test_requeue_lua_shares_the_header(void **state)
{
    (void)state;
    const shared_t shared[] = {
        NUMBER(REQUEUE_KEY_PROCESSING), NUMBER(REQUEUE_KEY_PENDING),   NUMBER(REQUEUE_KEY_STATS),
        NUMBER(REQUEUE_KEY_DELIVERIES), NUMBER(REQUEUE_ARG_CHUNK),     NUMBER(REQUEUE_ARG_CKPT_NAME),
        NUMBER(REQUEUE_REPLY_GONE),     NUMBER(REQUEUE_REPLY_OK),
    };
    check_script(script_requeue, shared, sizeof shared / sizeof shared[0]);
}

/* Checks that the n positions are 1..n, and that n is the count the header states. */
static void numbered(const int *positions, size_t n, size_t count)
{
    assert_int_equal(n, count);
    for (size_t i = 0; i < n; i++) assert_int_equal(positions[i], i + 1);
}

/* The header's own arithmetic: the keys and arguments are numbered 1..N without gaps, and an EVAL call puts
 * KEYS[1] at argv[3] and ARGV[1] right after the last key. */
static void test_positions(void **state)
{
    (void)state;
    const int commit_keys[] = {COMMIT_KEY_PROCESSING, COMMIT_KEY_RESULTS,   COMMIT_KEY_STATS,
                               COMMIT_KEY_DEAD,       COMMIT_KEY_CHECKPOINT, COMMIT_KEY_DELIVERIES,
                               COMMIT_KEY_PENDING};
    const int commit_args[] = {COMMIT_ARG_CHUNK,    COMMIT_ARG_MODE, COMMIT_ARG_CKPT_NAME, COMMIT_ARG_USE_CKPT,
                               COMMIT_ARG_N,        COMMIT_ARG_N_OK, COMMIT_ARG_N_DEAD};
    const int requeue_keys[] = {REQUEUE_KEY_PROCESSING, REQUEUE_KEY_PENDING, REQUEUE_KEY_STATS,
                                REQUEUE_KEY_DELIVERIES};
    const int requeue_args[] = {REQUEUE_ARG_CHUNK, REQUEUE_ARG_CKPT_NAME};
    numbered(commit_keys, sizeof commit_keys / sizeof commit_keys[0], COMMIT_N_KEYS);
    numbered(commit_args, sizeof commit_args / sizeof commit_args[0], COMMIT_N_HEAD_ARGS);
    numbered(requeue_keys, sizeof requeue_keys / sizeof requeue_keys[0], REQUEUE_N_KEYS);
    numbered(requeue_args, sizeof requeue_args / sizeof requeue_args[0], REQUEUE_N_ARGS);
    assert_string_equal(SCRIPT_TEXT(COMMIT_N_KEYS), "7");
    assert_int_equal(SCRIPT_EVAL_KEY(1), 3);
    assert_int_equal(SCRIPT_EVAL_ARG(COMMIT_N_KEYS, COMMIT_ARG_CHUNK), 10);
    assert_int_equal(SCRIPT_EVAL_ARG(REQUEUE_N_KEYS, REQUEUE_ARG_CHUNK), 7);
    assert_int_equal(SCRIPT_EVAL_ARGC(COMMIT_N_KEYS, COMMIT_N_HEAD_ARGS), 17);
    assert_int_equal(SCRIPT_EVAL_ARGC(REQUEUE_N_KEYS, REQUEUE_N_ARGS), 9);
    /* commit.c reads requeue.lua's replies as commit.lua's; the three item tags and three modes differ. */
    assert_int_equal(REQUEUE_REPLY_OK, COMMIT_REPLY_OK);
    assert_int_equal(REQUEUE_REPLY_GONE, COMMIT_REPLY_FENCED);
    assert_true(COMMIT_TAG_OK != COMMIT_TAG_FAILED && COMMIT_TAG_OK != COMMIT_TAG_DEAD &&
                COMMIT_TAG_FAILED != COMMIT_TAG_DEAD);
    assert_string_not_equal(COMMIT_MODE_PARTIAL, COMMIT_MODE_FINAL);
    assert_string_not_equal(COMMIT_MODE_PARTIAL, COMMIT_MODE_DEAD);
    assert_string_not_equal(COMMIT_MODE_FINAL, COMMIT_MODE_DEAD);
    assert_string_not_equal(COMMIT_MODE_REQUEUE, COMMIT_MODE_PARTIAL);
    assert_string_not_equal(COMMIT_MODE_REQUEUE, COMMIT_MODE_FINAL);
    assert_string_not_equal(COMMIT_MODE_REQUEUE, COMMIT_MODE_DEAD);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_commit_lua_shares_the_header),
        cmocka_unit_test(test_requeue_lua_shares_the_header),
        cmocka_unit_test(test_positions),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
