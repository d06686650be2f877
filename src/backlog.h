/* backlog: the results backlog, the result lines in the results stream that no collector has taken yet, and the
 * caps over which workers take no new chunk (--max-results-backlog in result lines, --max-results-backlog-bytes in
 * bytes).
 *
 * The bytes are a running count in the stats hash (results_bytes): commit.lua adds the length of each line it
 * writes and ack.lua takes off the length of each line it deletes (the collector passes the lengths it read), so a
 * result written twice (a requeued item) is counted twice and removed twice. backlog.lua reads the count with the stream's length in
 * the caller's round trip (no MEMORY USAGE, which samples and is O(n)), and sets it back to 0 when the stream is
 * empty. By default the cap in bytes is half of Redis's maxmemory (INFO memory, read through backlog.lua), or
 * BACKLOG_DEFAULT_BYTES when Redis has none. */
#ifndef CHUNKD_BACKLOG_H
#define CHUNKD_BACKLOG_H

#include <stdbool.h>
#include <stddef.h>

#include "keys.h"
#include "rconn.h"

/* The cap in bytes when --max-results-backlog-bytes is -1 and Redis has no maxmemory: a paused worker loses
 * nothing and resumes by itself, a Redis that grows past the machine's memory is killed. */
#define BACKLOG_DEFAULT_BYTES (1LL << 30)
/* --max-results-backlog-bytes -1: this share (1/BACKLOG_MAXMEMORY_DIVISOR) of Redis's maxmemory. */
#define BACKLOG_MAXMEMORY_DIVISOR 2

typedef struct backlog {
    long long lines;     /* result lines in the results stream (backlog.lua) */
    long long bytes;     /* bytes of their result lines (results_bytes) */
    long long maxmemory; /* Redis's maxmemory in bytes, 0: none; -1 until read (or when INFO memory is refused) */
} backlog_t;

/* Queues backlog.lua on c (pipelining: the caller reads its reply with rconn_get_reply). with_maxmemory: the reply
 * carries Redis's maxmemory too. */
void backlog_append(rconn_t *c, const keys_t *k, bool with_maxmemory);
/* Reads a backlog.lua reply (borrowed) into *b; b->maxmemory changes only when the reply carries it. Returns 0;
 * 1 when only maxmemory could not be read (INFO memory refused: b->maxmemory becomes -1, the reason is in err);
 * -1 for an error reply or none (the reason in err, *b unchanged). */
int backlog_take_reply(const redisReply *r, backlog_t *b, char *err, size_t errlen);
/* The cap in bytes: setting is --max-results-backlog-bytes, maxmemory as in backlog_t. 0: no cap. Pure. */
long long backlog_bytes_cap(long long setting, long long maxmemory);
/* Whether fetching pauses at *b, under max_entries (--max-results-backlog, 0: none) and bytes_setting
 * (--max-results-backlog-bytes). When it does, says why in why (naming results_key and the cap that is passed). */
bool backlog_over(const backlog_t *b, long long max_entries, long long bytes_setting, const char *results_key,
                  char *why, size_t whylen);

#endif
