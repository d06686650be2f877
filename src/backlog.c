/* backlog: see backlog.h. */
#include "backlog.h"

#include <stdio.h>
#include <string.h>

#include "scripts.h"

void backlog_append(rconn_t *c, const keys_t *k, bool with_maxmemory)
{
    const char *argv[] = {"EVAL", script_backlog, "2", k->results, k->stats, with_maxmemory ? "1" : "0"};
    rconn_append_argv(c, 6, argv, NULL);
}

int backlog_take_reply(const redisReply *r, backlog_t *b, char *err, size_t errlen)
{
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 3 || r->element[0]->type != REDIS_REPLY_INTEGER ||
        r->element[1]->type != REDIS_REPLY_INTEGER) {
        snprintf(err, errlen, "reading the results backlog failed: %.200s",
                 !r ? "no reply" : r->type == REDIS_REPLY_ERROR ? r->str : "bad reply");
        return -1;
    }
    b->lines = r->element[0]->integer;
    b->bytes = r->element[1]->integer;
    const redisReply *m = r->element[2];
    if (m->type == REDIS_REPLY_INTEGER) {
        if (m->integer >= 0) b->maxmemory = m->integer;
        return 0;
    }
    b->maxmemory = -1;
    snprintf(err, errlen, "cannot read Redis's maxmemory (INFO memory: %.150s)",
             m->type == REDIS_REPLY_STRING ? m->str : "bad reply");
    return 1;
}

long long backlog_bytes_cap(long long setting, long long maxmemory)
{
    if (setting >= 0) return setting;
    return maxmemory > 0 ? maxmemory / BACKLOG_MAXMEMORY_DIVISOR : BACKLOG_DEFAULT_BYTES;
}

bool backlog_over(const backlog_t *b, long long max_entries, long long bytes_setting, const char *results_key,
                  char *why, size_t whylen)
{
    long long cap = backlog_bytes_cap(bytes_setting, b->maxmemory);
    if (max_entries > 0 && b->lines > max_entries) {
        snprintf(why, whylen, "results backlog full: %s holds %lld results, more than --max-results-backlog %lld "
                              "(is a collector running?)", results_key, b->lines, max_entries);
        return true;
    }
    if (cap > 0 && b->bytes > cap) {
        char whose[64];
        if (bytes_setting >= 0) snprintf(whose, sizeof whose, "--max-results-backlog-bytes");
        else if (b->maxmemory > 0) snprintf(whose, sizeof whose, "1/%d of Redis's maxmemory", BACKLOG_MAXMEMORY_DIVISOR);
        else snprintf(whose, sizeof whose, "the default for a Redis without maxmemory");
        snprintf(why, whylen, "results backlog full: the %lld results in %s take %lld bytes, more than %lld (%s) (is "
                              "a collector running?)", b->lines, results_key, b->bytes, cap, whose);
        return true;
    }
    return false;
}
