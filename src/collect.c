/* collect: see collect.h. */
#include "collect.h"

#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "enqueue.h"
#include "keys.h"
#include "log.h"
#include "progress.h"
#include "rconn.h"
#include "scripts.h"
#include "tally.h"
#include "xalloc.h"

#define COLLECT_BLOCK_MS 200
#define COLLECT_READ_BYTES (64u << 20) /* a read's entries take about this much at most (estimated from the last
                                        * read: collect_size_reads) */
#define COLLECT_FIRST_COUNT 1          /* entries of the first read (then: collect_size_reads) */
#define COLLECT_MARKER_TTL_MS 5000 /* a collector's marker outlives its last renewal by this */
#define COLLECT_MARKER_HELD 1      /* collector.lua: this collector holds the marker */

/* The marker of this collector's consumer name (collector.lua): taken at start, renewed every third of its expiry
 * before the stream is read, given up at the end. */
typedef struct collect_marker {
    char *key;            /* chunkd:{Q}:collector:<consumer> (owned) */
    const char *consumer; /* borrowed from the settings */
    char token[160];      /* this collector: host-pid-random */
    int64_t renew_at;     /* monotonic ms: the stream is read only before this (a renewal is due then) */
    bool held;
} collect_marker_t;

static void collect_marker_init(collect_marker_t *m, const settings_t *s)
{
    memset(m, 0, sizeof *m);
    size_t keylen = strlen(s->queue) + strlen(s->consumer) + KEYS_COLLECTOR_EXTRA;
    m->key = xmalloc(keylen);
    keys_collector(m->key, keylen, s->queue, s->consumer);
    m->consumer = s->consumer;
    char host[64] = "host";
    gethostname(host, sizeof host - 1);
    unsigned int rnd = 0;
    if (getrandom(&rnd, sizeof rnd, 0) != sizeof rnd) rnd = (unsigned int)clock_now_ms();
    snprintf(m->token, sizeof m->token, "%s-%d-%04x", host, (int)getpid(), rnd & 0xffff);
}

/* Takes or renews the marker (ttl_ms > 0) or gives it up (0). Returns 1 held (or given up); 0 when another
 * collector holds it (its token in holder, its remaining ms in *left_ms); -1 without an answer (an error reply, in
 * holder, or a lost connection, which is dropped). */
static int collect_marker_call(rconn_t *c, collect_marker_t *m, long long ttl_ms, char *holder, size_t holderlen,
                               long long *left_ms)
{
    char ttl[24];
    snprintf(ttl, sizeof ttl, "%lld", ttl_ms);
    const char *argv[] = {"EVAL", script_collector, "1", m->key, m->token, ttl};
    int64_t sent = clock_now_ms();
    redisReply *r = rconn_command_argv(c, 6, argv, NULL);
    int rc = -1;
    snprintf(holder, holderlen, "%s", r ? "unexpected reply" : rconn_error(c));
    if (r && r->type == REDIS_REPLY_ERROR) snprintf(holder, holderlen, "%.200s", r->str);
    if (r && r->type == REDIS_REPLY_ARRAY && r->elements >= 1 && r->element[0]->type == REDIS_REPLY_INTEGER) {
        rc = r->element[0]->integer == COLLECT_MARKER_HELD;
        if (rc == 0 && r->elements == 3) {
            snprintf(holder, holderlen, "%.150s", r->element[1]->str ? r->element[1]->str : "?");
            *left_ms = r->element[2]->integer > 0 ? r->element[2]->integer : ttl_ms;
        }
    }
    if (r) freeReplyObject(r);
    m->held = rc == 1 && ttl_ms > 0;
    if (m->held) m->renew_at = sent + ttl_ms / 3;
    return rc;
}

/* Takes the marker at start. Another collector's marker is waited out once: a collector that died leaves it until it
 * expires, a running one renews it meanwhile and this one is refused. Returns 0 held, 1 stopped while waiting, or
 * -1 with the reason in err. */
static int collect_marker_take(rconn_t *c, collect_marker_t *m, const char *queue, const atomic_bool *stop,
                               char *err, size_t errlen)
{
    char holder[256];
    long long left_ms = COLLECT_MARKER_TTL_MS;
    for (int round = 0;; round++) {
        int held = collect_marker_call(c, m, COLLECT_MARKER_TTL_MS, holder, sizeof holder, &left_ms);
        if (held == 1) return 0;
        if (held < 0) {
            snprintf(err, errlen, "cannot mark consumer '%s' of queue %s as running (%s): %s", m->consumer, queue,
                     m->key, holder);
            return -1;
        }
        if (round == 1) {
            snprintf(err, errlen, "consumer '%s' of queue %s is in use by another running collector (%s): two "
                     "collectors with one --consumer would split the results between their outputs; stop the other "
                     "one, or give this one another --consumer", m->consumer, queue, holder);
            return -1;
        }
        LOG(LL_INFO, "collect: consumer '%s' of queue %s is marked by another collector (%s) for %lld ms more; "
                     "waiting to see whether it is still running", m->consumer, queue, holder, left_ms);
        for (int64_t until = clock_now_ms() + left_ms + 100; clock_now_ms() < until;) {
            if (atomic_load(stop)) return 1;
            struct timespec ts = {0, 50 * 1000000L};
            nanosleep(&ts, NULL);
        }
    }
}

/* The result lines of a results stream entry (borrowed from the reply): field b, one or more lines separated by
 * '\n' (a commit's lines, commit.lua); field r, one line (workers before entries held several); or NULL for an
 * entry deleted after it was delivered (it has no fields). *batch says which. */
static const redisReply *collect_entry_lines(const redisReply *entry, bool *batch)
{
    const redisReply *fields = entry->element[1];
    *batch = false;
    if (fields->type != REDIS_REPLY_ARRAY || fields->elements < 2) return NULL;
    const redisReply *name = fields->element[0], *v = fields->element[1];
    if (name->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING) return NULL;
    *batch = name->len == 1 && name->str[0] == 'b';
    return v;
}

/* How many result lines an entry holds (0 without any). */
static size_t collect_entry_count(const redisReply *entry)
{
    bool batch;
    const redisReply *v = collect_entry_lines(entry, &batch);
    if (!v) return 0;
    size_t n = 1;
    for (const char *p = v->str; batch && (p = memchr(p, '\n', v->len - (size_t)(p - v->str))); p++) n++;
    return n;
}

/* Sends the ack script for the entries (with each one's length and lines: ack.lua takes them off the results
 * backlog) until Redis answers (reconnecting as needed; then *reconnected is set: after a failover the new master
 * may hold entries this consumer read and acknowledged on the old one as still pending, to be read again). Returns
 * 0, or -1 on stop. */
static int collect_ack(rconn_t *c, const keys_t *k, redisReply **entries, size_t n, collect_progress_t *p,
                       const atomic_bool *stop, bool *reconnected)
{
    size_t argc = 6 + 3 * n;
    const char **argv = xmalloc(argc * sizeof *argv);
    size_t *lens = xmalloc(argc * sizeof *lens);
    char (*nums)[24] = xmalloc((n ? 2 * n : 1) * sizeof *nums);
    const char *head[] = {"EVAL", script_ack, "2", k->results, k->stats, KEYS_COLLECT_GROUP};
    for (size_t i = 0; i < 6; i++) argv[i] = head[i], lens[i] = strlen(head[i]);
    for (size_t i = 0; i < n; i++) {
        bool batch;
        const redisReply *v = collect_entry_lines(entries[i], &batch);
        argv[6 + i] = entries[i]->element[0]->str, lens[6 + i] = entries[i]->element[0]->len;
        lens[6 + n + i] = (size_t)snprintf(nums[2 * i], sizeof nums[0], "%zu", v ? v->len : 0);
        argv[6 + n + i] = nums[2 * i];
        if (v && !batch) snprintf(nums[2 * i + 1], sizeof nums[0], "r"); /* one line, not in results_lines */
        else snprintf(nums[2 * i + 1], sizeof nums[0], "%zu", collect_entry_count(entries[i]));
        lens[6 + 2 * n + i] = strlen(nums[2 * i + 1]);
        argv[6 + 2 * n + i] = nums[2 * i + 1];
    }
    int rc = -1;
    /* The lines are written: try at least once even when stopping, or the next collect (the second pass of an
     * interrupted `run`) would read these entries again and write them twice. */
    do {
        if (!rconn_connected(c)) {
            if (rconn_reconnect(c, stop, NULL)) break;
            *reconnected = true;
        }
        redisReply *r = rconn_command_argv(c, (int)argc, argv, lens);
        if (!r) continue;
        if (r->type == REDIS_REPLY_ARRAY && r->elements == 3) {
            p->collected = r->element[0]->integer;
            p->enqueued = r->element[1]->integer;
            p->dead_chunk_items = r->element[2]->integer;
            rc = 0;
        } else {
            LOG(LL_ERROR, "collect: acknowledging failed: %.300s", r->type == REDIS_REPLY_ERROR ? r->str : "?");
        }
        freeReplyObject(r);
        if (rc == 0) break;
        struct timespec ts = {1, 0};
        nanosleep(&ts, NULL);
    } while (!atomic_load(stop));
    free(argv);
    free(lens);
    free(nums);
    return rc;
}


/* Done: every item of the queue is finished, and no more can come (the producer in this process is done, or the
 * queue is sealed). */
static bool collect_done(const collect_progress_t *p, const atomic_bool *producer_done)
{
    if (producer_done) return atomic_load(producer_done) && collect_finished(p) >= p->enqueued;
    return p->sealed && collect_finished(p) >= p->enqueued;
}

/* Reads the seal, then the counters: every item of a queue seen sealed is counted in enqueued read after it. */
static void collect_read_stats(rconn_t *c, const keys_t *k, collect_progress_t *p)
{
    int sealed = enqueue_sealed(c, k, NULL, 0);
    if (sealed >= 0) p->sealed = sealed == 1; /* not known: as the last read said */
    redisReply *r = rconn_command(c, "HMGET %s collected enqueued dead_chunk_items failed requeued_dead "
                                     "requeued_chunk_items", k->stats);
    if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 6) {
        long long failed = 0, requeued = 0, requeued_chunk_items = 0;
        long long *to[] = {&p->collected, &p->enqueued, &p->dead_chunk_items, &failed, &requeued,
                           &requeued_chunk_items};
        for (size_t i = 0; i < 6; i++) *to[i] = r->element[i]->str ? atoll(r->element[i]->str) : 0;
        p->failed_left = failed + p->dead_chunk_items - requeued;
        p->dead_chunk_items_left = p->dead_chunk_items - requeued_chunk_items;
        if (p->failed_left < 0) p->failed_left = 0;
        if (p->dead_chunk_items_left < 0) p->dead_chunk_items_left = 0;
    }
    if (r) freeReplyObject(r);
}

/* The state of one collect_run. */
typedef struct collect_run_state {
    const settings_t *s;
    keys_t k;
    rconn_t *c;                        /* owned */
    sink_t *sink;                      /* borrowed */
    collect_mode_t mode;
    const atomic_bool *stop;           /* borrowed */
    const atomic_bool *producer_done;  /* borrowed; NULL when no producer runs in this process */
    collect_progress_t *p;             /* borrowed: the caller's */
    collect_marker_t marker;
    char count[24], block[24];         /* XREADGROUP's COUNT and BLOCK */
    bool own_pending;                  /* first re-read entries this consumer took before a crash */
    bool told_open;                    /* "the queue is not sealed" was logged (once) */
    bool show_bar;                     /* a progress bar for people: only with --until-done and a terminal on stderr */
    int64_t last_bar, last_log;        /* monotonic ms of the last progress bar and log line */
    progress_rate_t rate;
} collect_run_state_t;

/* Connects, takes the consumer name's marker and creates the consumer group. Returns 0, 1 when stopped while
 * waiting for the marker, or -1 with the reason in err. */
static int collect_open(collect_run_state_t *st, char *err, size_t errlen)
{
    if (rconn_connect(st->c, err, errlen)) return -1;
    int taken = collect_marker_take(st->c, &st->marker, st->s->queue, st->stop, err, errlen);
    if (taken) return taken;
    redisReply *r = rconn_command(st->c, "XGROUP CREATE %s %s 0 MKSTREAM", st->k.results, KEYS_COLLECT_GROUP);
    if (!r || (r->type == REDIS_REPLY_ERROR && strncmp(r->str, "BUSYGROUP", 9) != 0)) {
        snprintf(err, errlen, "cannot create consumer group on %s: %s", st->k.results, r ? r->str : rconn_error(st->c));
        if (r) freeReplyObject(r);
        return -1;
    }
    freeReplyObject(r);
    return 0;
}

/* Renews the marker when a renewal is due. Returns 0 (the stream may be read), 1 when it was not renewed (try again:
 * the stream is read only under a marker renewed within a third of its expiry), or -1 when another collector took
 * the consumer name meanwhile (the reason in err). */
static int collect_marker_renew(collect_run_state_t *st, char *err, size_t errlen)
{
    if (clock_now_ms() < st->marker.renew_at) return 0;
    char holder[256];
    long long left_ms;
    int held = collect_marker_call(st->c, &st->marker, COLLECT_MARKER_TTL_MS, holder, sizeof holder, &left_ms);
    if (held == 0) {
        snprintf(err, errlen, "another collector (%s) took consumer '%s' of queue %s while this one could not "
                 "renew its marker for %d s (cut off from Redis, or stalled): stopping, so that the results "
                 "are not split", holder, st->s->consumer, st->s->queue, COLLECT_MARKER_TTL_MS / 1000);
        return -1;
    }
    if (held < 0) {
        if (rconn_connected(st->c)) { /* an error reply: try again in a second */
            LOG_LIMITED(LL_WARN, "collect: cannot renew the marker %s: %s", st->marker.key, holder);
            struct timespec ts = {1, 0};
            nanosleep(&ts, NULL);
        }
        return 1;
    }
    return 0;
}

/* Reads one batch: this consumer's pending entries first, then new ones. Returns 0 with the reply in *reply (the
 * caller frees it) and its *n entries, each [id, fields], in *entries (none is a batch too); 1 when nothing was
 * read this time (connection lost, Redis not ready yet: try again); -1 with the reason in err. */
static int collect_read_batch(collect_run_state_t *st, redisReply **reply, redisReply ***entries, size_t *n,
                              char *err, size_t errlen)
{
    const char *id = st->own_pending ? "0" : ">";
    bool blocking = !st->own_pending && st->mode != COLLECT_AVAILABLE;
    const char *argv[] = {"XREADGROUP", "GROUP", KEYS_COLLECT_GROUP, st->s->consumer, "COUNT", st->count,
                          "BLOCK",      st->block, "STREAMS",        st->k.results,   id};
    const char *noblock[] = {"XREADGROUP", "GROUP", KEYS_COLLECT_GROUP, st->s->consumer, "COUNT", st->count,
                             "STREAMS",    st->k.results, id};
    redisReply *r = blocking ? rconn_command_argv(st->c, 11, argv, NULL) : rconn_command_argv(st->c, 9, noblock, NULL);
    if (!r) {
        LOG_LIMITED(LL_WARN, "collect: Redis connection lost: %s", rconn_error(st->c));
        return 1;
    }
    if (r->type == REDIS_REPLY_ERROR && rconn_transient_error(r->str)) {
        /* A restarted Redis answers LOADING until it has read its data back (BUSY: a long script). */
        LOG_LIMITED(LL_WARN, "collect: Redis is not ready (%.100s); retrying", r->str);
        freeReplyObject(r);
        for (int t = 0; t < 4 && !atomic_load(st->stop); t++) {
            struct timespec ts = {0, 50 * 1000000L};
            nanosleep(&ts, NULL);
        }
        return 1;
    }
    if (r->type == REDIS_REPLY_ERROR) {
        snprintf(err, errlen, "XREADGROUP on %s failed: %s", st->k.results, r->str);
        freeReplyObject(r);
        return -1;
    }
    *entries = NULL;
    *n = 0;
    if (r->type == REDIS_REPLY_ARRAY && r->elements == 1 && r->element[0]->type == REDIS_REPLY_ARRAY &&
        r->element[0]->elements == 2 && r->element[0]->element[1]->type == REDIS_REPLY_ARRAY) {
        *entries = r->element[0]->element[1]->element;
        *n = r->element[0]->element[1]->elements;
    }
    for (size_t i = 0; i < *n; i++) {
        /* Each entry is [id, fields]; anything else means the stream is not ours. */
        redisReply *e = (*entries)[i];
        if (e->type != REDIS_REPLY_ARRAY || e->elements != 2 || e->element[0]->type != REDIS_REPLY_STRING) {
            snprintf(err, errlen, "unexpected reply shape from XREADGROUP on %s", st->k.results);
            freeReplyObject(r);
            return -1;
        }
    }
    *reply = r;
    return 0;
}

/* Sizes the next read from the last one, whose n entries held lines result lines: XREADGROUP counts entries, and
 * one holds the lines of one commit (up to a chunk's, at most 1 MiB), so COUNT is set to read about --collect-batch
 * lines and COLLECT_READ_BYTES, judged by the last read's entries; it at most doubles from one read to the next, so
 * a run of small entries followed by large ones does not make one read take --collect-batch large ones. */
static void collect_size_reads(collect_run_state_t *st, redisReply **entries, size_t n, long long lines)
{
    assert(n > 0);
    size_t bytes = 0;
    for (size_t i = 0; i < n; i++) {
        bool batch;
        const redisReply *v = collect_entry_lines(entries[i], &batch);
        bytes += v ? v->len : 0;
    }
    long long per_entry = lines / (long long)n > 0 ? lines / (long long)n : 1;
    long long count = st->s->collect_batch / per_entry;
    long long by_bytes = bytes ? (long long)(COLLECT_READ_BYTES / (bytes / n + 1)) : count;
    if (by_bytes < count) count = by_bytes;
    if (count > 2 * (long long)n) count = 2 * (long long)n;
    if (count < 1) count = 1;
    snprintf(st->count, sizeof st->count, "%lld", count);
}

/* After a read that found nothing: true when the run is over (COLLECT_AVAILABLE, or --until-done with every
 * result in). */
static bool collect_read_nothing(collect_run_state_t *st)
{
    if (st->own_pending) { /* the pending entries are written: on to new ones */
        st->own_pending = false;
        return false;
    }
    if (st->mode == COLLECT_AVAILABLE) return true;
    if (st->mode != COLLECT_UNTIL_DONE) return false;
    collect_read_stats(st->c, &st->k, st->p);
    if (!st->producer_done && !st->p->sealed && !st->told_open) {
        st->told_open = true;
        LOG(LL_INFO, "queue %s is not sealed: --until-done waits until its input is complete (an enqueue that "
                     "reaches the end of its input seals it, or `chunkd seal --queue %s`)", st->s->queue, st->s->queue);
    }
    return collect_done(st->p, st->producer_done);
}

/* Writes one result line with its seq (the entry's id, and with several lines in the entry the line's index:
 * "<ms>-<n>-<i>"), the order in which results were committed, so that of two lines of one id (a failure, then its
 * success after a requeue) the higher seq is the one that counts. Returns 0 or -1 (errno). */
static int collect_write_line(sink_t *sink, tally_t *tally, const char *line, size_t len, const redisReply *id,
                              bool batch, size_t index)
{
    char tail[96];
    bool object = len > 0 && line[len - 1] == '}';
    if (batch) snprintf(tail, sizeof tail, ",\"seq\":\"%.40s-%zu\"}", id->str, index);
    else snprintf(tail, sizeof tail, ",\"seq\":\"%.40s\"}", id->str);
    if (sink_write_tail(sink, line, object ? len - 1 : len, object ? tail : NULL)) return -1;
    if (tally) tally_add(tally, line, len);
    return 0;
}

/* Writes a batch's result lines and flushes them. Returns the lines written, or -1 with the reason in err. */
static long long collect_write_batch(sink_t *sink, tally_t *tally, redisReply **entries, size_t n, char *err,
                                     size_t errlen)
{
    long long written = 0;
    for (size_t i = 0; i < n; i++) {
        /* An entry deleted after it was delivered has no fields: nothing to write, still acknowledged. */
        bool batch;
        const redisReply *v = collect_entry_lines(entries[i], &batch);
        if (!v) continue;
        const char *line = v->str, *end = v->str + v->len;
        for (size_t index = 0;; index++) {
            const char *nl = batch ? memchr(line, '\n', (size_t)(end - line)) : NULL;
            size_t len = (size_t)((nl ? nl : end) - line);
            if (collect_write_line(sink, tally, line, len, entries[i]->element[0], batch, index)) {
                snprintf(err, errlen, "cannot write to %s: %s", sink_where(sink), strerror(errno));
                return -1;
            }
            written++;
            if (!nl) break;
            line = nl + 1;
        }
    }
    if (sink_flush(sink)) {
        snprintf(err, errlen, "cannot write to %s: %s", sink_where(sink), strerror(errno));
        return -1;
    }
    return written;
}

/* After a batch: the progress bar (at most every 250 ms) or, without one, a log line every 5 s; and a warning
 * when most of the last results failed (tally.h). */
static void collect_report(collect_run_state_t *st)
{
    collect_progress_t *p = st->p;
    char warning[256];
    if (p->tally && tally_warning(p->tally, clock_now_ms(), warning, sizeof warning)) {
        if (st->show_bar && st->last_bar) fprintf(stderr, "\r\033[K");
        LOG(LL_WARN, "queue %s is going badly: %s", st->s->queue, warning);
        st->last_bar = 0;
    }
    if (st->show_bar && clock_now_ms() - st->last_bar >= 250) {
        char line[256];
        st->last_bar = clock_now_ms();
        progress_format(line, sizeof line, collect_finished(p), p->enqueued,
                        progress_rate_update(&st->rate, collect_finished(p), st->last_bar), 30);
        fprintf(stderr, "\r\033[K%s", line);
    }
    if (!st->show_bar && clock_now_ms() - st->last_log >= 5000) {
        LOG(LL_INFO, "collect: %lld results written to %s (%lld of %lld collected)", p->written,
            sink_where(st->sink), p->collected, p->enqueued);
        st->last_log = clock_now_ms();
    }
}

/* Reads, writes and acknowledges batches until the mode says so, *stop, or a lost connection that cannot come
 * back before *stop. Returns 0, or -1 with the reason in err. */
static int collect_batches(collect_run_state_t *st, char *err, size_t errlen)
{
    st->last_log = clock_now_ms();
    while (!atomic_load(st->stop)) {
        if (!rconn_connected(st->c)) {
            if (rconn_reconnect(st->c, st->stop, NULL)) break;
            st->own_pending = true;
        }
        int renewed = collect_marker_renew(st, err, errlen);
        if (renewed < 0) return -1;
        if (renewed > 0) continue;
        redisReply *r = NULL, **entries = NULL;
        size_t n = 0;
        int got = collect_read_batch(st, &r, &entries, &n, err, errlen);
        if (got < 0) return -1;
        if (got > 0) continue;
        if (n == 0) {
            freeReplyObject(r);
            if (collect_read_nothing(st)) break;
            continue;
        }
        long long lines = collect_write_batch(st->sink, st->p->tally, entries, n, err, errlen);
        if (lines < 0) {
            freeReplyObject(r);
            return -1;
        }
        st->p->written += lines;
        collect_size_reads(st, entries, n, lines);
        bool reconnected = false;
        int ack = collect_ack(st->c, &st->k, entries, n, st->p, st->stop, &reconnected);
        if (reconnected) st->own_pending = true;
        freeReplyObject(r);
        if (ack) break;
        collect_report(st);
        if (st->mode == COLLECT_UNTIL_DONE && collect_done(st->p, st->producer_done)) break;
    }
    if (rconn_connected(st->c)) collect_read_stats(st->c, &st->k, st->p);
    return 0;
}

/* Ends the progress bar's line, gives the marker up and closes the connection. */
static void collect_close(collect_run_state_t *st)
{
    if (st->show_bar && st->last_bar) fprintf(stderr, "\n");
    if (st->marker.held) {
        char holder[256];
        long long left_ms;
        collect_marker_call(st->c, &st->marker, 0, holder, sizeof holder, &left_ms);
    }
    free(st->marker.key);
    rconn_free(st->c);
}

int collect_run(const settings_t *s, sink_t *sink, collect_mode_t mode, const atomic_bool *stop,
                const atomic_bool *producer_done, collect_progress_t *p, char *err, size_t errlen)
{
    collect_run_state_t st = {.s = s, .sink = sink, .mode = mode, .stop = stop, .producer_done = producer_done,
                              .p = p, .own_pending = true,
                              .show_bar = mode == COLLECT_UNTIL_DONE && isatty(STDERR_FILENO)};
    keys_init(&st.k, s->queue);
    struct tally *tally = p->tally;
    memset(p, 0, sizeof *p);
    p->tally = tally;
    st.c = rconn_new(s->redis_url, s->redis_timeout_ms);
    rconn_set_extra_timeout(st.c, COLLECT_BLOCK_MS);
    collect_marker_init(&st.marker, s);
    snprintf(st.count, sizeof st.count, "%d", COLLECT_FIRST_COUNT);
    snprintf(st.block, sizeof st.block, "%d", COLLECT_BLOCK_MS);
    int rc = collect_open(&st, err, errlen);
    if (rc == 0 && mode == COLLECT_UNTIL_DONE) collect_read_stats(st.c, &st.k, p); /* sealed already? */
    if (rc == 0) rc = collect_batches(&st, err, errlen);
    else if (rc > 0) rc = 0; /* stopped while waiting for the marker */
    collect_close(&st);
    return rc;
}
