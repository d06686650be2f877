/* cmd_queue: the small commands that manage queues as a whole: `queues` (every queue and its counts, sealed or
 * open), `purge` (drop pending chunks; a sealed queue stays sealed), `delete` (every key of a queue, its seal
 * chunkd:{Q}:sealed included), `pause` and `resume` (the key chunkd:{Q}:paused, which fetch.lua reads before it moves
 * a chunk). purge and delete change nothing without --yes: they say what they would remove and exit 2. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd.h"
#include "keys.h"
#include "log.h"
#include "rcluster.h"
#include "rconn.h"
#include "scripts.h"
#include "xalloc.h"

#define QUEUES_MAX 10000 /* queues listed at most */
#define QUEUE_KEYS_SCAN "1000" /* SCAN's COUNT hint */

int cmd_queue_exists(rconn_t *c, const settings_t *s, bool lists)
{
    keys_t k;
    keys_init(&k, s->queue);
    redisReply *r = lists ? rconn_command(c, "EXISTS %s %s %s %s", k.stats, k.results, k.pending, k.dead)
                          : rconn_command(c, "EXISTS %s %s", k.stats, k.results);
    int rc = -1;
    if (!r || r->type != REDIS_REPLY_INTEGER)
        LOG(LL_ERROR, "cannot read queue %s at %s: %s", s->queue, rconn_addr(c),
            r && r->type == REDIS_REPLY_ERROR ? r->str : rconn_error(c));
    else rc = r->integer > 0;
    if (rc == 0)
        LOG(LL_WARN, "queue %s does not exist at %s (no key chunkd:{%s}:*; a typo? `chunkd queues` lists them)",
            s->queue, rconn_addr(c), s->queue);
    if (r) freeReplyObject(r);
    return rc;
}

static int by_name(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Adds to *names (*n of them) every name Q with a key chunkd:{Q}:stats on the server c is connected to, found with
 * SCAN (never KEYS: it would block Redis on a large keyspace). Returns 0, or -1 on a Redis error (logged; *names
 * freed). */
static int queue_names_scan(rconn_t *c, char ***names, long *n_names)
{
    char cursor[32] = "0";
    long n = *n_names;
    do {
        const char *scan[] = {"SCAN", cursor, "MATCH", "chunkd:{*}:stats", "COUNT", QUEUE_KEYS_SCAN};
        redisReply *r = rconn_command_argv(c, 6, scan, NULL);
        if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 2) {
            LOG(LL_ERROR, "cannot list queues at %s: %s", rconn_addr(c),
                r && r->type == REDIS_REPLY_ERROR ? r->str : rconn_error(c));
            if (r) freeReplyObject(r);
            for (long i = 0; i < n; i++) free((*names)[i]);
            free(*names);
            *names = NULL;
            *n_names = 0;
            return -1;
        }
        snprintf(cursor, sizeof cursor, "%s", r->element[0]->str);
        for (size_t i = 0; i < r->element[1]->elements && n < QUEUES_MAX; i++) {
            const char *key = r->element[1]->element[i]->str;
            const char *open = key + strlen("chunkd:{"), *close = strstr(open, "}:stats");
            if (!close || close[strlen("}:stats")] != '\0') continue;
            *names = xrealloc(*names, (size_t)(n + 1) * sizeof **names);
            (*names)[n++] = xstrndup(open, (size_t)(close - open));
        }
        freeReplyObject(r);
    } while (strcmp(cursor, "0") != 0 && n < QUEUES_MAX);
    *n_names = n;
    return 0;
}

/* Every queue's name, sorted: SCAN on the server, or on each master of a Redis Cluster (a queue lives on one).
 * Returns how many (at most QUEUES_MAX) into *names (the caller frees each and the array), or -1 on a Redis error
 * (logged). */
static long queue_names(rconn_t *c, char ***names)
{
    redis_url_node_t masters[RCLUSTER_MASTERS_MAX];
    int n_masters = rconn_cluster_masters(c, masters, RCLUSTER_MASTERS_MAX);
    long n = 0;
    *names = NULL;
    if (n_masters < 0) {
        LOG(LL_ERROR, "cannot list the masters of the Redis Cluster at %s: %s", rconn_addr(c), rconn_error(c));
        return -1;
    }
    for (int m = 0; m < (n_masters > 0 ? n_masters : 1) && n < QUEUES_MAX; m++) {
        char err[512];
        if (n_masters > 0 && rconn_connect_node(c, &masters[m], err, sizeof err)) {
            LOG(LL_ERROR, "cannot list queues on %s:%d: %s", masters[m].host, masters[m].port, err);
            for (long i = 0; i < n; i++) free((*names)[i]);
            free(*names);
            *names = NULL;
            return -1;
        }
        if (queue_names_scan(c, names, &n)) return -1;
    }
    if (n >= QUEUES_MAX) LOG(LL_WARN, "more than %d queues: only the first %d are listed", QUEUES_MAX, QUEUES_MAX);
    if (n > 1) qsort(*names, (size_t)n, sizeof **names, by_name);
    return n;
}

static long long count(const json_t *o, const char *name) { return json_integer_value(json_object_get(o, name)); }

int cmd_queues(settings_t *s)
{
    rconn_t *c = cmd_connect(s);
    if (!c) return EXIT_RUNTIME;
    char **names;
    long n = queue_names(c, &names);
    int rc = n < 0 ? EXIT_RUNTIME : 0;
    if (n >= 0 && !s->json)
        printf("%-24s %9s %9s %9s %9s %9s %9s %7s %-6s %s\n", "QUEUE", "PENDING", "RUNNING", "ENQUEUED", "DONE",
               "FAILED", "DEAD", "WORKERS", "INPUT", "");
    if (n >= 0 && !s->json) printf("%-24s %9s %9s %9s %9s %9s %9s\n", "", "chunks", "chunks", "items", "items",
                                   "items", "entries");
    for (long i = 0; i < n; i++) {
        json_t *o = cmd_status_read(c, names[i]);
        if (!o) rc = EXIT_RUNTIME;
        else if (s->json) {
            char *text = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
            printf("%s\n", text);
            free(text);
        } else {
            printf("%-24s %9lld %9lld %9lld %9lld %9lld %9lld %7lld %-6s %s\n", names[i], count(o, "pending"),
                   count(o, "processing"), count(o, "enqueued"), count(o, "done"), count(o, "failed_left"),
                   count(o, "dead_list"), count(o, "workers"),
                   json_is_true(json_object_get(o, "sealed")) ? "sealed" : "open",
                   json_is_true(json_object_get(o, "paused")) ? "paused" : "");
        }
        json_decref(o);
        free(names[i]);
    }
    free(names);
    fflush(stdout);
    rconn_free(c);
    return rc;
}

/* Connects for a command on one existing queue: NULL (and *rc set) when it cannot, or the queue does not exist. */
static rconn_t *queue_connect(const settings_t *s, int *rc)
{
    rconn_t *c = cmd_connect(s);
    *rc = EXIT_RUNTIME;
    if (!c) return NULL;
    int exists = cmd_queue_exists(c, s, true);
    if (exists > 0) return c;
    if (exists == 0) *rc = EXIT_NO_QUEUE;
    rconn_free(c);
    return NULL;
}

int cmd_purge(settings_t *s)
{
    int rc;
    rconn_t *c = queue_connect(s, &rc);
    if (!c) return rc;
    keys_t k;
    keys_init(&k, s->queue);
    if (!s->yes) {
        redisReply *r = rconn_command(c, "LLEN %s", k.pending);
        fprintf(stderr, "chunkd purge: would remove the %lld pending chunks of queue %s (%s); results, dead items, "
                        "counters and the chunks workers hold stay. Give --yes to do it.\n",
                r && r->type == REDIS_REPLY_INTEGER ? r->integer : 0, s->queue, k.pending);
        if (r) freeReplyObject(r);
        rconn_free(c);
        return EXIT_USAGE;
    }
    const char *argv[] = {"EVAL", script_purge, "2", k.pending, k.stats};
    redisReply *r = rconn_command_argv(c, 5, argv, NULL);
    rc = EXIT_RUNTIME;
    if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 2) {
        LOG(LL_INFO, "queue %s: purged %lld pending chunks (%lld items)", s->queue, r->element[0]->integer,
            r->element[1]->integer);
        rc = 0;
    } else {
        LOG(LL_ERROR, "cannot purge queue %s: %s", s->queue, r && r->type == REDIS_REPLY_ERROR ? r->str : rconn_error(c));
    }
    if (r) freeReplyObject(r);
    rconn_free(c);
    return rc;
}

/* Deletes every key chunkd:{Q}:* found by SCAN, in batches. Returns how many, or -1 on a Redis error (logged). */
static long long queue_delete_keys(rconn_t *c, const char *queue)
{
    char pattern[KEYS_MAX], cursor[32] = "0";
    snprintf(pattern, sizeof pattern, "chunkd:{%s}:*", queue);
    long long deleted = 0;
    keys_t k;
    keys_init(&k, queue);
    /* On a Redis Cluster, SCAN sees the keys of the node it runs on: the node of this queue's slot. */
    if (rconn_route(c, k.stats)) {
        LOG(LL_ERROR, "cannot delete queue %s: %s", queue, rconn_error(c));
        return -1;
    }
    do {
        const char *scan[] = {"SCAN", cursor, "MATCH", pattern, "COUNT", QUEUE_KEYS_SCAN};
        redisReply *r = rconn_command_argv(c, 6, scan, NULL);
        redisReply *d = NULL;
        if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 2) {
            snprintf(cursor, sizeof cursor, "%s", r->element[0]->str);
            size_t n = r->element[1]->elements;
            if (n > 0) {
                const char **argv = xcalloc(n + 1, sizeof *argv);
                argv[0] = "UNLINK";
                for (size_t i = 0; i < n; i++) argv[i + 1] = r->element[1]->element[i]->str;
                d = rconn_command_argv(c, (int)n + 1, argv, NULL);
                free(argv);
                if (d && d->type == REDIS_REPLY_INTEGER) deleted += d->integer;
            }
        }
        bool ok = r && r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
                  (r->element[1]->elements == 0 || (d && d->type == REDIS_REPLY_INTEGER));
        if (!ok)
            LOG(LL_ERROR, "cannot delete queue %s: %s", queue,
                d && d->type == REDIS_REPLY_ERROR   ? d->str
                : r && r->type == REDIS_REPLY_ERROR ? r->str
                                                    : rconn_error(c));
        if (r) freeReplyObject(r);
        if (d) freeReplyObject(d);
        if (!ok) return -1;
    } while (strcmp(cursor, "0") != 0);
    return deleted;
}

int cmd_delete(settings_t *s)
{
    int rc;
    rconn_t *c = queue_connect(s, &rc);
    if (!c) return rc;
    json_t *o = cmd_status_read(c, s->queue);
    if (!o) {
        rconn_free(c);
        return EXIT_RUNTIME;
    }
    rc = 0;
    if (count(o, "workers") > 0 && !s->force) {
        LOG(LL_ERROR, "queue %s has %lld registered workers: stop them first, or give --force", s->queue,
            count(o, "workers"));
        rc = EXIT_USAGE;
    } else if (!s->yes) {
        fprintf(stderr, "chunkd delete: would remove every key of queue %s (chunkd:{%s}:*): %lld pending and %lld "
                        "running chunks, %lld results not collected, %lld dead records, the counters and the seal. "
                        "Give --yes to do it.\n", s->queue, s->queue, count(o, "pending"), count(o, "processing"),
                count(o, "results_backlog"), count(o, "dead_list"));
        rc = EXIT_USAGE;
    } else {
        long long n = queue_delete_keys(c, s->queue);
        if (n < 0) rc = EXIT_RUNTIME;
        else LOG(LL_INFO, "queue %s deleted (%lld keys)", s->queue, n);
    }
    json_decref(o);
    rconn_free(c);
    return rc;
}

/* Sets or clears the queue's paused key. */
static int queue_set_paused(settings_t *s, bool paused)
{
    int rc;
    rconn_t *c = queue_connect(s, &rc);
    if (!c) return rc;
    keys_t k;
    keys_init(&k, s->queue);
    redisReply *r = paused ? rconn_command(c, "SET %s 1", k.paused) : rconn_command(c, "DEL %s", k.paused);
    rc = EXIT_RUNTIME;
    if (r && r->type != REDIS_REPLY_ERROR) {
        LOG(LL_INFO, paused ? "queue %s paused: workers take no new chunk and finish what they hold"
                            : "queue %s resumed", s->queue);
        rc = 0;
    } else {
        LOG(LL_ERROR, "cannot %s queue %s: %s", paused ? "pause" : "resume", s->queue,
            r ? r->str : rconn_error(c));
    }
    if (r) freeReplyObject(r);
    rconn_free(c);
    return rc;
}

int cmd_pause(settings_t *s) { return queue_set_paused(s, true); }
int cmd_resume(settings_t *s) { return queue_set_paused(s, false); }
