/* rconn: see rconn.h. */
#include "rconn.h"

#include <errno.h>
#include <hiredis/sds.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "log.h"
#include "rcluster.h"
#include "redis_url.h"
#include "rsentinel.h"
#include "rtls.h"
#include "xalloc.h"

#define RCONN_DIRECT_BYTES ((size_t)1 << 20) /* commands larger than this are written without copies */
#define RCONN_REDIRECTS_MAX 5 /* Redis Cluster: redirections one command follows at most */

struct rconn {
    redis_url_t url;
    char addr[512];          /* masked address for messages */
    long long timeout_ms;    /* connect and command timeout */
    long long extra_ms;      /* added to the command timeout (blocking commands) */
    redisContext *ctx;       /* NULL while disconnected */
    rtls_conn_t *tls;        /* rediss: the TLS stream behind ctx's descriptor; NULL otherwise */
    char err[256];           /* last error */
    bool refused;            /* the last connect failed on an error reply that waiting will not change */
    rcluster_t *cluster;     /* redis-cluster:// only: seeds, the node of our slot, an ASK target; else NULL */
    bool at_seed;            /* cluster: the node dialled last was a seed (not known to serve our slot) */
    char at_host[256];       /* cluster: the node dialled last */
    int at_port;
    bool routing;            /* cluster: rconn_cluster_settle is under way (it connects once more, not again) */
    char master_at[300];     /* redis-sentinel://: "name at host:port", the master last connected to; else empty */
    long long master_moves;  /* times a connect found the master at another address than the time before */
    int min_replicas;        /* rconn_wait_replicas: replicas that must have each write (0: none) */
    long long min_replicas_timeout_ms;
    rtls_conn_t *sentinel_tls; /* rediss-sentinel://: the TLS stream of the Sentinel being asked; else NULL */
};

/* Redis Cluster: a key of the queue this process works on (rconn_set_cluster_key), set before any thread starts.
 * A connection made through a seed node goes on to the node serving this key's slot. */
static char rconn_cluster_key[512];

/* The last write refusal seen by any connection (rconn_refused_recently). */
static pthread_mutex_t rconn_refusal_mu = PTHREAD_MUTEX_INITIALIZER;
static int64_t rconn_refusal_ms = INT64_MIN / 2;
static char rconn_refusal_text[200];
/* The first refusal for lack of rights any connection received (rconn_denied), under rconn_refusal_mu. */
static bool rconn_denied_seen;
static char rconn_denied_text[200];
/* rediss: what every TLS connection trusts and shows; set by rconn_tls_init() before any thread, then only read. */
static rtls_ctx_t *rconn_tls_ctx;

static struct timeval ms_to_tv(long long ms)
{
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
    return tv;
}

rconn_t *rconn_new(const char *url, long long timeout_ms)
{
    rconn_t *c = xcalloc(1, sizeof *c);
    char err[256];
    if (redis_url_parse(url, &c->url, err, sizeof err)) abort(); /* validated by settings */
    redis_url_mask(url, c->addr, sizeof c->addr);
    c->timeout_ms = timeout_ms;
    if (c->url.mode == REDIS_URL_CLUSTER) c->cluster = rcluster_new(&c->url);
    return c;
}

/* Closes the context and, after it, the TLS stream behind it (whose pump ends when it sees the close). */
static void rconn_close(rconn_t *c)
{
    if (c->ctx) redisFree(c->ctx);
    c->ctx = NULL;
    rtls_close(c->tls);
    c->tls = NULL;
}

static void rconn_drop(rconn_t *c)
{
    if (c->ctx && c->ctx->err) snprintf(c->err, sizeof c->err, "%s", c->ctx->errstr);
    rconn_close(c);
}

int rconn_tls_init(const rtls_opts_t *opts, char *err, size_t errlen)
{
    rconn_tls_ctx = rtls_ctx_new(opts, err, errlen);
    return rconn_tls_ctx ? 0 : -1;
}

void rconn_tls_cleanup(void)
{
    rtls_ctx_free(rconn_tls_ctx);
    rconn_tls_ctx = NULL;
}

void rconn_free(rconn_t *c)
{
    if (!c) return;
    rconn_drop(c);
    rcluster_free(c->cluster);
    free(c);
}

/* Runs a setup command; returns 0 if it answered OK. */
static int rconn_setup_cmd(rconn_t *c, const char *what, int argc, const char **argv)
{
    redisReply *r = redisCommandArgv(c->ctx, argc, argv, NULL);
    if (!r) {
        snprintf(c->err, sizeof c->err, "%s: %s", what, c->ctx->errstr);
        return -1;
    }
    int rc = 0;
    if (r->type == REDIS_REPLY_ERROR) {
        snprintf(c->err, sizeof c->err, "%s refused: %.200s", what, r->str);
        c->refused = !rconn_transient_error(r->str);
        rc = -1;
    }
    freeReplyObject(r);
    return rc;
}

/* rediss: hiredis 0.14 speaks to the TLS stream through a plain descriptor (rtls.h). Returns 0, or -1 with c->err
 * set and c->ctx NULL. */
static int rconn_dial_tls(rconn_t *c, const char *host, int port, long long timeout_ms)
{
    if (!rconn_tls_ctx) abort(); /* rconn_tls_init() must come first (main does it for a rediss:// URL) */
    int fd = -1;
    c->tls = rtls_connect(rconn_tls_ctx, host, port, timeout_ms, &fd, c->err, sizeof c->err);
    if (!c->tls) return -1;
    c->ctx = redisConnectFd(fd);
    if (c->ctx) return 0;
    close(fd);
    rconn_close(c);
    snprintf(c->err, sizeof c->err, "cannot allocate a Redis context");
    return -1;
}

/* Transport: opens c->ctx to host:port (or the unix socket) within timeout_ms, over TLS for rediss. Returns 0, or
 * -1 with c->err set (c->ctx may be NULL or hold the error). */
static int rconn_dial(rconn_t *c, const char *host, int port, long long timeout_ms)
{
    if (c->url.tls && !c->url.is_unix) return rconn_dial_tls(c, host, port, timeout_ms);
    struct timeval tv = ms_to_tv(timeout_ms);
    c->ctx = c->url.is_unix ? redisConnectUnixWithTimeout(c->url.path, tv) : redisConnectWithTimeout(host, port, tv);
    if (!c->ctx) snprintf(c->err, sizeof c->err, "cannot allocate a Redis context");
    else if (c->ctx->err) snprintf(c->err, sizeof c->err, "%s", c->ctx->errstr);
    else if (!c->url.is_unix) redisEnableKeepAlive(c->ctx);
    return c->ctx && !c->ctx->err ? 0 : -1;
}

/* rsentinel's dial: a connection to a Sentinel through the same transport, with a shorter connect timeout. Its TLS
 * stream (rediss-sentinel://) is kept in c->sentinel_tls until rsentinel has freed the context (the next dial, or
 * the end of rconn_resolve), then closed: a pump thread is joined for every Sentinel asked. A dial that fails
 * leaves nothing open and says why in err (a failed TLS dial has no context to hold its reason). */
static redisContext *rconn_dial_sentinel(void *arg, const char *host, int port, long long timeout_ms, char *err,
                                         size_t errlen)
{
    rconn_t *c = arg;
    rtls_close(c->sentinel_tls);
    c->sentinel_tls = NULL;
    if (rconn_dial(c, host, port, timeout_ms)) {
        snprintf(err, errlen, "%s", c->err);
        rconn_close(c);
        return NULL;
    }
    redisContext *ctx = c->ctx;
    c->ctx = NULL;
    c->sentinel_tls = c->tls;
    c->tls = NULL;
    return ctx;
}

/* Which server to dial: the URL's own for redis:// and rediss://; the master the Sentinels name for
 * redis-sentinel://; for redis-cluster:// the node rcluster gives (an ASK target, the node of our slot, or a seed).
 * Returns 0, or -1 with c->err set. */
static int rconn_resolve(rconn_t *c, char *host, size_t hostlen, int *port)
{
    if (c->url.mode == REDIS_URL_SENTINEL) {
        int rc = rsentinel_resolve(&c->url, c->timeout_ms, rconn_dial_sentinel, c, host, hostlen, port, c->err,
                                   sizeof c->err);
        rtls_close(c->sentinel_tls);
        c->sentinel_tls = NULL;
        return rc;
    }
    if (c->cluster) {
        rcluster_next(c->cluster, host, hostlen, port, &c->at_seed);
        snprintf(c->at_host, sizeof c->at_host, "%s", host);
        c->at_port = *port;
        return 0;
    }
    snprintf(host, hostlen, "%s", c->url.host);
    *port = c->url.port;
    return 0;
}

static int rconn_cluster_settle(rconn_t *c, char *err, size_t errlen);
static redisReply *rconn_check(rconn_t *c, void *reply);

/* redis-sentinel://: refuses a server that is not the master (the Sentinels' view lags a failover) and logs when
 * the master moved. Returns 0, or -1 with c->err set. */
static int rconn_check_master(rconn_t *c, const char *host, int port)
{
    if (c->url.mode != REDIS_URL_SENTINEL) return 0;
    char at[sizeof c->master_at];
    snprintf(at, sizeof at, "master %s at %s:%d", c->url.master, host, port);
    if (rsentinel_check_role(c->ctx, at, c->err, sizeof c->err, &c->refused)) return -1;
    if (c->master_at[0] && strcmp(c->master_at, at) != 0) {
        LOG(LL_WARN, "Redis at %s: the Sentinels now name %s (was %s)", c->addr, at, c->master_at);
        c->master_moves++;
    }
    snprintf(c->master_at, sizeof c->master_at, "%s", at);
    return 0;
}

int rconn_connect(rconn_t *c, char *err, size_t errlen)
{
    rconn_drop(c);
    c->refused = false;
    char host[sizeof c->url.host];
    int port = 0;
    int dials_left = c->cluster ? rcluster_candidates(c->cluster) : 1;
redial:
    if (rconn_resolve(c, host, sizeof host, &port)) goto fail;
    if (rconn_dial(c, host, port, c->timeout_ms)) {
        if (c->cluster) {
            /* A node gone (a failed master): the next candidate, down to the seeds. */
            rconn_drop(c);
            rcluster_dial_failed(c->cluster);
            if (--dials_left > 0) goto redial;
        }
        goto fail;
    }
    redisSetTimeout(c->ctx, ms_to_tv(c->timeout_ms + c->extra_ms));
    if (c->url.password[0]) {
        const char *argv[3] = {"AUTH", c->url.user, c->url.password};
        int argc = 3;
        if (!c->url.user[0]) argv[1] = c->url.password, argc = 2;
        if (rconn_setup_cmd(c, "AUTH", argc, argv)) goto fail;
    }
    if (c->url.db > 0) {
        char db[16];
        snprintf(db, sizeof db, "%d", c->url.db);
        const char *argv[2] = {"SELECT", db};
        if (rconn_setup_cmd(c, "SELECT", 2, argv)) goto fail;
    }
    if (rconn_check_master(c, host, port)) goto fail;
    if (c->cluster && c->at_seed && rconn_cluster_key[0]) return rconn_cluster_settle(c, err, errlen);
    return 0;
fail:
    rconn_close(c);
    if (err) snprintf(err, errlen, "cannot connect to Redis at %s: %s", c->addr, c->err);
    return -1;
}

int rconn_connect_serving(rconn_t *c, char *err, size_t errlen)
{
    if (rconn_connect(c, err, errlen)) return -1;
    redisReply *r = rconn_command(c, "PING");
    if (r && r->type != REDIS_REPLY_ERROR) {
        freeReplyObject(r);
        return 0;
    }
    if (r) {
        snprintf(c->err, sizeof c->err, "PING refused: %.200s", r->str);
        c->refused = !rconn_transient_error(r->str);
        freeReplyObject(r);
    }
    rconn_drop(c);
    if (err) snprintf(err, errlen, "cannot connect to Redis at %s: %s", c->addr, c->err);
    return -1;
}

bool rconn_refused(const rconn_t *c) { return c->refused; }

/* Cluster: asks the node this connection is at which node serves key's slot (CLUSTER SLOTS) and moves the
 * connection there when it is another node. A user without the right to CLUSTER SLOTS finds it through a MOVED
 * reply instead: to a script that does nothing, given the key (every role may EVAL with its queue's stats key).
 * Returns 0, or -1 with the reason in err (the connection dropped). */
static int rconn_cluster_route(rconn_t *c, const char *key, char *err, size_t errlen)
{
    redisReply *r = redisCommand(c->ctx, "CLUSTER SLOTS");
    if (r && r->type == REDIS_REPLY_ERROR) {
        freeReplyObject(r);
        r = rconn_command(c, "EVAL %s 1 %s", "return 1", key); /* follows MOVED; NULL: connection lost */
        if (r) {
            freeReplyObject(r);
            return 0;
        }
    } else if (!r) {
        snprintf(c->err, sizeof c->err, "CLUSTER SLOTS: %s", c->ctx->errstr);
        rconn_drop(c);
    }
    if (!r) {
        if (err) snprintf(err, errlen, "cannot connect to Redis at %s: %s", c->addr, c->err);
        return -1;
    }
    char host[256];
    int port = 0;
    int unknown = rcluster_slot_owner(r, rcluster_slot(key, strlen(key)), host, sizeof host, &port);
    freeReplyObject(r);
    if (unknown || (port == c->at_port && strcmp(host, c->at_host) == 0)) return 0;
    rcluster_remember(c->cluster, host, port);
    return rconn_connect(c, err, errlen);
}

/* Cluster, after a connect through a seed: on to the node of this process's queue. Once per connect: when that
 * node cannot be dialled, the connection ends on a seed and MOVED replies route it later. */
static int rconn_cluster_settle(rconn_t *c, char *err, size_t errlen)
{
    if (c->routing) return 0;
    c->routing = true;
    int rc = rconn_cluster_route(c, rconn_cluster_key, err, errlen);
    c->routing = false;
    return rc;
}

void rconn_set_cluster_key(const char *key) { snprintf(rconn_cluster_key, sizeof rconn_cluster_key, "%s", key); }

int rconn_route(rconn_t *c, const char *key)
{
    if (!c->cluster) return 0;
    if (!c->ctx) return -1;
    return rconn_cluster_route(c, key, NULL, 0);
}

int rconn_cluster_masters(rconn_t *c, redis_url_node_t *out, int max)
{
    if (!c->cluster) return 0;
    if (!c->ctx) return -1;
    redisReply *r = rconn_check(c, redisCommand(c->ctx, "CLUSTER SLOTS"));
    int n = r ? rcluster_masters(r, out, max) : -1;
    if (r && n < 0) snprintf(c->err, sizeof c->err, "CLUSTER SLOTS: %.200s", r->type == REDIS_REPLY_ERROR ? r->str : "not a list of slots");
    if (r) freeReplyObject(r);
    return n;
}

int rconn_connect_node(rconn_t *c, const redis_url_node_t *node, char *err, size_t errlen)
{
    if (c->cluster) rcluster_remember(c->cluster, node->host, node->port);
    return rconn_connect(c, err, errlen);
}

long long rconn_backoff_next(long long *backoff_ms)
{
    /* Full jitter keeps many workers from reconnecting in lockstep after an outage. */
    long long wait_ms = *backoff_ms / 2 + rand() % (*backoff_ms / 2 + 1);
    *backoff_ms = *backoff_ms * 2 < RCONN_BACKOFF_MAX_MS ? *backoff_ms * 2 : RCONN_BACKOFF_MAX_MS;
    return wait_ms;
}

int rconn_reconnect(rconn_t *c, const atomic_bool *stop, atomic_llong *alive_ms)
{
    long long backoff_ms = RCONN_BACKOFF_MIN_MS;
    for (unsigned attempt = 0;; attempt++) {
        char err[512];
        if (rconn_connect(c, err, sizeof err) == 0) {
            if (attempt > 0) LOG(LL_INFO, "reconnected to Redis at %s", c->addr);
            return 0;
        }
        LOG_LIMITED(LL_WARN, "%s (attempt %u; retrying)", err, attempt + 1);
        long long wait_ms = rconn_backoff_next(&backoff_ms);
        for (long long waited = 0; waited < wait_ms; waited += 50) {
            if (stop && atomic_load(stop)) return -1;
            if (alive_ms) atomic_store(alive_ms, clock_now_ms());
            struct timespec ts = {0, 50 * 1000000L};
            nanosleep(&ts, NULL);
        }
    }
}

void rconn_set_extra_timeout(rconn_t *c, long long extra_ms)
{
    c->extra_ms = extra_ms;
    if (c->ctx) redisSetTimeout(c->ctx, ms_to_tv(c->timeout_ms + extra_ms));
}

/* hiredis keeps its read buffer's capacity until the next read, so after a 60 MB reply 60 MB more stay held
 * while the caller uses the reply. Released as soon as everything in the buffer has been consumed. */
static void rconn_trim_reader(rconn_t *c)
{
    redisReader *r = c->ctx ? c->ctx->reader : NULL;
    if (r && r->buf && r->len == 0 && sdsavail(r->buf) > RCONN_DIRECT_BYTES) {
        sdsfree(r->buf);
        r->buf = sdsempty();
        r->pos = 0;
        if (!r->buf) abort(); /* out of memory, as xmalloc */
    }
}

static redisReply *rconn_check(rconn_t *c, void *reply)
{
    if (!reply) {
        rconn_drop(c);
        return NULL;
    }
    const redisReply *r = reply;
    if (r->type == REDIS_REPLY_ERROR && r->str && rconn_refusal_error(r->str)) {
        pthread_mutex_lock(&rconn_refusal_mu);
        rconn_refusal_ms = clock_now_ms();
        snprintf(rconn_refusal_text, sizeof rconn_refusal_text, "%s", r->str);
        pthread_mutex_unlock(&rconn_refusal_mu);
    }
    if (r->type == REDIS_REPLY_ERROR && r->str && rconn_permission_error(r->str)) {
        pthread_mutex_lock(&rconn_refusal_mu);
        if (!rconn_denied_seen) snprintf(rconn_denied_text, sizeof rconn_denied_text, "%s", r->str);
        rconn_denied_seen = true;
        pthread_mutex_unlock(&rconn_refusal_mu);
        LOG_LIMITED(LL_ERROR, "Redis at %s refused a command for lack of rights: %.200s (the Redis user needs the "
                              "commands and keys of its role in deploy/redis/chunkd.acl)", c->addr, r->str);
    }
    if (r->type == REDIS_REPLY_ERROR && r->str && c->url.mode == REDIS_URL_SENTINEL &&
        strncmp(r->str, "READONLY ", 9) == 0) {
        /* The master was demoted by a failover: the next connect asks the Sentinels again. */
        LOG_LIMITED(LL_WARN, "Redis at %s: %s answered READONLY (demoted by a failover?); asking the Sentinels "
                             "again", c->addr, c->master_at);
        snprintf(c->err, sizeof c->err, "%s answered READONLY: %.150s", c->master_at, r->str);
        rconn_drop(c);
        return reply;
    }
    rconn_trim_reader(c);
    return reply;
}

static size_t rconn_command_bytes(int argc, const char **argv, const size_t *lens)
{
    size_t total = 0;
    for (int i = 0; i < argc; i++) total += lens ? lens[i] : strlen(argv[i]);
    return total;
}

/* Writes a command straight from its arguments to the socket, after what hiredis holds in its output buffer:
 * redisAppendCommandArgv would make two whole copies (the formatted command, then the output buffer), 120 MB more
 * for the commit of a 60 MB chunk. The socket is blocking, with the command timeout. Returns 0, or -1 with the
 * connection dropped (the reply then reads as a lost connection). */
static int rconn_write_direct(rconn_t *c, int argc, const char **argv, const size_t *lens)
{
    int done = 0;
    while (!done)
        if (redisBufferWrite(c->ctx, &done) != REDIS_OK) goto fail;
    size_t n_iov = 1 + 3 * (size_t)argc, at = 0, n = 0;
    struct iovec *iov = xmalloc(n_iov * sizeof *iov);
    char(*head)[32] = xmalloc(((size_t)argc + 1) * sizeof *head);
    iov[n++] = (struct iovec){head[0], (size_t)snprintf(head[0], sizeof head[0], "*%d\r\n", argc)};
    for (int i = 0; i < argc; i++) {
        size_t len = lens ? lens[i] : strlen(argv[i]);
        iov[n++] = (struct iovec){head[i + 1], (size_t)snprintf(head[i + 1], sizeof head[i + 1], "$%zu\r\n", len)};
        iov[n++] = (struct iovec){(void *)argv[i], len};
        iov[n++] = (struct iovec){(void *)"\r\n", 2};
    }
    int rc = 0;
    while (at < n) {
        if (iov[at].iov_len == 0) {
            at++;
            continue;
        }
        ssize_t w = writev(c->ctx->fd, iov + at, (int)(n - at < IOV_MAX ? n - at : IOV_MAX));
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            snprintf(c->err, sizeof c->err, "writing a command of %zu bytes: %s",
                     rconn_command_bytes(argc, argv, lens), w < 0 ? strerror(errno) : "nothing written");
            rc = -1;
            break;
        }
        for (size_t left = (size_t)w; left > 0;) {
            size_t take = left < iov[at].iov_len ? left : iov[at].iov_len;
            iov[at].iov_base = (char *)iov[at].iov_base + take;
            iov[at].iov_len -= take;
            left -= take;
            if (iov[at].iov_len == 0) at++;
        }
    }
    free(iov);
    free(head);
    if (rc == 0) return 0;
fail:
    rconn_drop(c);
    return -1;
}

/* One command: formatted (by redisvFormatCommand) or as argv. */
typedef struct rconn_cmd {
    const char *formatted;
    size_t formatted_len;
    int argc;
    const char **argv;
    const size_t *lens;
} rconn_cmd_t;

/* Sends one command and reads its reply (NULL when the connection failed). */
static void *rconn_send(rconn_t *c, const rconn_cmd_t *cmd)
{
    void *r = NULL;
    if (!c->ctx) return NULL;
    if (cmd->formatted) {
        if (redisAppendFormattedCommand(c->ctx, cmd->formatted, cmd->formatted_len) != REDIS_OK) return NULL;
    } else if (rconn_command_bytes(cmd->argc, cmd->argv, cmd->lens) <= RCONN_DIRECT_BYTES) {
        return redisCommandArgv(c->ctx, cmd->argc, cmd->argv, cmd->lens);
    } else if (rconn_write_direct(c, cmd->argc, cmd->argv, cmd->lens)) {
        return NULL;
    }
    if (redisGetReply(c->ctx, &r) != REDIS_OK) r = NULL;
    return r;
}

/* Sends one command and follows Redis Cluster redirections: a MOVED or ASK reply means the command did not run,
 * so it is sent again at the node named (after ASKING, for ASK), at most RCONN_REDIRECTS_MAX times. TRYAGAIN (a
 * multi-key command while the slot migrates, or at an ASK target that has some of the keys) did not run either: it
 * is sent again from the start after a pause, for at most the command timeout, so a one-shot command waits out a
 * short migration instead of failing. */
static redisReply *rconn_send_following(rconn_t *c, const rconn_cmd_t *cmd)
{
    redisReply *r = rconn_check(c, rconn_send(c, cmd));
    int64_t give_up_ms = clock_now_ms() + c->timeout_ms;
    long long pause_ms = 20;
    for (int hops = 0; c->cluster && r && r->type == REDIS_REPLY_ERROR && hops < RCONN_REDIRECTS_MAX;) {
        bool again = strncmp(r->str, "TRYAGAIN", 8) == 0 && clock_now_ms() + pause_ms < give_up_ms;
        rcluster_redirect_t how = again ? RCLUSTER_NONE : rcluster_redirect(c->cluster, r->str, true);
        if (how == RCLUSTER_NONE && !again) break;
        LOG(LL_DEBUG, "Redis Cluster at %s: %.200s", c->addr, r->str);
        freeReplyObject(r);
        if (again) {
            struct timespec ts = {pause_ms / 1000, (pause_ms % 1000) * 1000000L};
            nanosleep(&ts, NULL);
            pause_ms = pause_ms * 2 > 500 ? 500 : pause_ms * 2;
        } else {
            hops++;
        }
        if (rconn_connect(c, NULL, 0)) return NULL;
        const char *asking[] = {"ASKING"};
        if (how == RCLUSTER_ASK && rconn_setup_cmd(c, "ASKING", 1, asking)) {
            rconn_drop(c);
            return NULL;
        }
        r = rconn_check(c, rconn_send(c, cmd));
    }
    return r;
}

redisReply *rconn_command(rconn_t *c, const char *fmt, ...)
{
    if (!c->ctx) return NULL;
    char *formatted = NULL;
    va_list ap;
    va_start(ap, fmt);
    int len = redisvFormatCommand(&formatted, fmt, ap);
    va_end(ap);
    if (len < 0) abort(); /* out of memory or a bad format: a bug, as xmalloc */
    rconn_cmd_t cmd = {.formatted = formatted, .formatted_len = (size_t)len};
    redisReply *r = rconn_send_following(c, &cmd);
    redisFreeCommand(formatted);
    return r;
}

redisReply *rconn_command_argv(rconn_t *c, int argc, const char **argv, const size_t *lens)
{
    if (!c->ctx) return NULL;
    rconn_cmd_t cmd = {.argc = argc, .argv = argv, .lens = lens};
    return rconn_send_following(c, &cmd);
}

void rconn_append_argv(rconn_t *c, int argc, const char **argv, const size_t *lens)
{
    if (!c->ctx) return;
    if (rconn_command_bytes(argc, argv, lens) <= RCONN_DIRECT_BYTES) redisAppendCommandArgv(c->ctx, argc, argv, lens);
    else rconn_write_direct(c, argc, argv, lens);
}

redisReply *rconn_get_reply(rconn_t *c)
{
    if (!c->ctx) return NULL;
    void *r = NULL;
    if (redisGetReply(c->ctx, &r) != REDIS_OK) r = NULL;
    redisReply *reply = rconn_check(c, r);
    if (c->cluster && reply && reply->type == REDIS_REPLY_ERROR &&
        rcluster_redirect(c->cluster, reply->str, false) != RCLUSTER_NONE) {
        /* The pipeline's commands did not run here (one queue: one slot): as a lost connection, so that the caller
         * sends them again after its reconnect, which dials the node MOVED named. An ASK is not followed in a
         * pipeline (each command would need its own ASKING): the retry waits out the migration. */
        snprintf(c->err, sizeof c->err, "redirected by the cluster: %.200s", reply->str);
        LOG_LIMITED(LL_INFO, "Redis Cluster at %s: %s", c->addr, c->err);
        freeReplyObject(reply);
        rconn_close(c);
        return NULL;
    }
    return reply;
}

void rconn_set_min_replicas(rconn_t *c, int min_replicas, long long timeout_ms)
{
    c->min_replicas = min_replicas;
    c->min_replicas_timeout_ms = timeout_ms;
}

int rconn_wait_replicas(rconn_t *c, char *why, size_t whylen)
{
    if (c->min_replicas <= 0) return 0;
    if (!c->ctx) {
        snprintf(why, whylen, "connection lost before WAIT: %s", c->err);
        return -1;
    }
    redisSetTimeout(c->ctx, ms_to_tv(c->timeout_ms + c->extra_ms + c->min_replicas_timeout_ms));
    redisReply *r = rconn_command(c, "WAIT %d %lld", c->min_replicas, c->min_replicas_timeout_ms);
    if (c->ctx) redisSetTimeout(c->ctx, ms_to_tv(c->timeout_ms + c->extra_ms));
    int rc = -1;
    if (!r) snprintf(why, whylen, "connection lost during WAIT: %s", c->err);
    else if (r->type == REDIS_REPLY_ERROR) snprintf(why, whylen, "WAIT refused: %.200s", r->str);
    else if (r->type == REDIS_REPLY_INTEGER && r->integer >= c->min_replicas) rc = 0;
    else
        snprintf(why, whylen, "NOREPLICAS only %lld of --redis-min-replicas %d replicas of %s acknowledged the "
                 "writes within %lld ms", r->type == REDIS_REPLY_INTEGER ? r->integer : 0LL, c->min_replicas,
                 c->master_at[0] ? c->master_at : c->addr, c->min_replicas_timeout_ms);
    bool too_few = rc && r && r->type != REDIS_REPLY_ERROR;
    if (r) freeReplyObject(r);
    if (too_few) {
        /* Recorded as a write refusal: the worker's /readyz says why. */
        pthread_mutex_lock(&rconn_refusal_mu);
        rconn_refusal_ms = clock_now_ms();
        snprintf(rconn_refusal_text, sizeof rconn_refusal_text, "%s", why);
        pthread_mutex_unlock(&rconn_refusal_mu);
    }
    return rc;
}

bool rconn_connected(const rconn_t *c) { return c->ctx != NULL; }
long long rconn_master_moves(const rconn_t *c) { return c->master_moves; }
const char *rconn_addr(const rconn_t *c) { return c->addr; }
const char *rconn_error(const rconn_t *c) { return c->err; }

static bool rconn_has_prefix(const char *msg, const char *const *prefixes, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (strncmp(msg, prefixes[i], strlen(prefixes[i])) == 0) return true;
    return false;
}

bool rconn_refusal_error(const char *msg)
{
    static const char *const prefixes[] = {"OOM ", "READONLY ", "MISCONF ", "MASTERDOWN ", "NOREPLICAS "};
    return rconn_has_prefix(msg, prefixes, sizeof prefixes / sizeof prefixes[0]);
}

bool rconn_permission_error(const char *msg)
{
    return strncmp(msg, "NOPERM", 6) == 0 || strstr(msg, "NOPERM ") || strstr(msg, "user executing the script can't");
}

bool rconn_transient_error(const char *msg)
{
    /* MOVED and ASK: the command did not run, at a node that no longer serves the slot; TRYAGAIN: a multi-key
     * command during a slot migration; CLUSTERDOWN: a failover under way; UNBLOCKED: a blocked command's key went
     * away, moved to another node by a slot migration (or deleted: the retry says so). */
    static const char *const prefixes[] = {"LOADING ",  "BUSY ",        "MOVED ",    "ASK ",
                                           "TRYAGAIN ", "CLUSTERDOWN ", "UNBLOCKED "};
    return rconn_has_prefix(msg, prefixes, sizeof prefixes / sizeof prefixes[0]) || rconn_refusal_error(msg);
}

bool rconn_denied(char *why, size_t whylen)
{
    pthread_mutex_lock(&rconn_refusal_mu);
    bool seen = rconn_denied_seen;
    if (seen) snprintf(why, whylen, "%s", rconn_denied_text);
    pthread_mutex_unlock(&rconn_refusal_mu);
    return seen;
}

bool rconn_refused_recently(long long within_ms, char *why, size_t whylen)
{
    pthread_mutex_lock(&rconn_refusal_mu);
    bool recent = clock_now_ms() - rconn_refusal_ms <= within_ms;
    if (recent) snprintf(why, whylen, "%s", rconn_refusal_text);
    pthread_mutex_unlock(&rconn_refusal_mu);
    return recent;
}
