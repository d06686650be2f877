/* handler_http: one HTTP call per item, thousands in flight per loop, with libcurl's multi socket interface.
 *
 * Each loop owns several multi handles ("shards") of about HTTP_SHARD_CONNS transfers each, all driven by the
 * loop's epoll: libcurl's socket callback becomes a loop_watch, its timer callback a loop_timer deadline. One
 * multi handle's cost per transfer grows with the connections it holds, so spreading transfers over shards keeps
 * each one small. Easy handles are pooled per loop and reused, so connections are kept alive.
 *
 * Queue contents are untrusted: an item names a method, a path joined to --base-url (no dot segment may take it
 * out of the base's path), a query, headers and a body; an absolute "url" is accepted only for a host and port in
 * --allow-hosts, and the final URL is checked to still point at them before any request is made. Redirects are not followed; only http and https are spoken.
 *
 * Outcomes: 1xx-3xx are results; connection errors, timeouts and --retry-statuses (default 429 and 5xx) are
 * retried up to --max-attempts after a wait (exponential backoff with full jitter, or Retry-After) during which the
 * item holds no place of --concurrency (sched_retry_after); anything else fails the item, which then also goes to
 * the dead list.
 *
 * Circuit breaker (breaker.h, one per process shared by the loops): each call's outcome is reported to it (a
 * connection error, a timeout or a 5xx is a failure), and each call asks it first. While it is open, calls wait on
 * the item's timer (polling every HTTP_BREAKER_POLL_MS) before they take the queue's limits, fetching pauses (the
 * handler's ready op says why, for /readyz too), and a failure it excuses (the one that opened it, probes, calls that
 * were in flight) does not count against --max-attempts. */
#include <ctype.h>
#include <curl/curl.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "breaker.h"
#include "clock.h"
#include "dynbuf.h"
#include "handler.h"
#include "list.h"
#include "http_request.h"
#include "log.h"
#include "metrics.h"
#include "result.h"
#include "xalloc.h"

/* Transfers per multi handle. To reuse a connection, libcurl 7.88 walks its multi handle's list of connections to
 * the host past every busy one, so the cost per call grows with this. Callgrind, 16,000 calls at c=2000: 250 ->
 * 109 k instructions per call, 100 -> 106 k, 50 -> 104.5 k, 20 -> 104.4 k. */
#define HTTP_SHARD_CONNS 50
#define HTTP_RETRY_AFTER_MAX_MS 600000   /* longest Retry-After honoured */
#define HTTP_BREAKER_POLL_MS 100         /* how often a call held back by the open circuit asks again */
#define HTTP_BREAKER_PROBE_BASE_MS 100   /* first wait of an open circuit before probing (then doubling) */
#define HTTP_BREAKER_PROBES 3            /* probe calls of a half-open circuit, and the successes that close it */

/* ---- process-wide state: the settings read once (http_request.h) and the circuit breaker ---- */

typedef struct http_shared {
    http_config_t *cfg;
    breaker_t *breaker;      /* NULL with --breaker-failure-percent 0 */
} http_shared_t;

/* The breaker's changes of state (any thread, under its mutex): a log line, the gauge and the counters. */
static void http_breaker_changed(void *arg, breaker_state_t from, breaker_state_t to, int64_t next_probe_in_ms,
                                 const char *why)
{
    (void)arg;
    metrics_gauge_set(G_CIRCUIT_STATE, to);
    metrics_add(to == BREAKER_OPEN ? M_CIRCUIT_OPENED : to == BREAKER_HALF_OPEN ? M_CIRCUIT_HALF_OPENED
                                                                              : M_CIRCUIT_CLOSED, 1);
    if (from == BREAKER_CLOSED)
        LOG(LL_WARN, "http: circuit open: %s; no new call starts and fetching pauses until probes succeed (first in "
                     "%lld ms)", why, (long long)next_probe_in_ms);
    else if (to == BREAKER_OPEN)
        LOG(LL_INFO, "http: circuit still open: %s; next probe in %lld ms", why, (long long)next_probe_in_ms);
    else if (to == BREAKER_CLOSED)
        LOG(LL_WARN, "http: circuit closed: %s; calls resume", why);
    else
        LOG(LL_DEBUG, "http: circuit half-open: %s; probing with %d calls", why, HTTP_BREAKER_PROBES);
}

static int http_init(const settings_t *s, void **shared, char *err, size_t errlen)
{
    http_config_t *c = http_config_new(s, err, errlen);
    if (!c) return -1;
    http_shared_t *sh = xcalloc(1, sizeof *sh);
    sh->cfg = c;
    if (s->breaker_failure_percent > 0) {
        breaker_config_t bc = {.window_ms = s->breaker_window_ms, .failure_percent = (int)s->breaker_failure_percent,
                               .min_calls = (long)s->breaker_min_calls, .probe_max_ms = s->breaker_probe_max_ms,
                               .probe_base_ms = HTTP_BREAKER_PROBE_BASE_MS, .probes = HTTP_BREAKER_PROBES};
        sh->breaker = breaker_new(&bc, http_breaker_changed, NULL);
    }
    *shared = sh;
    if (s->insecure) LOG(LL_WARN, "--insecure: TLS certificates are NOT verified");
    char base[512];
    log_mask_userinfo(c->base_url ? c->base_url : "(none)", base, sizeof base);
    LOG(LL_INFO, "http handler: base %s, %zu allowed hosts, %zu secret headers, max %lld attempts", base,
        c->n_allow_hosts, c->n_secret, s->max_attempts);
    return 0;
}

static void http_fini(void *shared)
{
    http_shared_t *sh = shared;
    http_config_free(sh->cfg);
    breaker_free(sh->breaker);
    free(sh);
}

/* Not ready while the circuit is open (fetching pauses; /readyz says why). Half-open is ready: it needs items to
 * probe with. */
static bool http_ready(void *shared, char *why, size_t whylen)
{
    const http_shared_t *sh = shared;
    return !sh->breaker || breaker_state(sh->breaker, clock_now_ms(), why, whylen) != BREAKER_OPEN;
}

/* ---- per-loop state ---- */

typedef struct http_loop http_loop_t;
typedef struct http_call http_call_t;

typedef struct http_shard {
    http_loop_t *hl;
    CURLM *multi;
    loop_timer_t timer;      /* libcurl's timeout, as a deadline */
    size_t active;           /* transfers in this multi handle */
} http_shard_t;

/* One per socket number this loop's libcurl has used; lives until the loop ends, so that an idle keep-alive
 * connection stays in the epoll set between calls (parked) instead of costing an EPOLL_CTL_DEL and an ADD per
 * call. */
typedef struct http_socket {
    loop_watch_t watch;
    http_shard_t *shard;     /* the multi handle whose transfer last wanted this socket */
} http_socket_t;

struct http_loop {
    const http_config_t *cfg;
    breaker_t *breaker;      /* the process's (http_shared_t), or NULL */
    loop_t *loop;
    http_shard_t *shards;
    size_t n_shards;
    CURL **pool;             /* idle easy handles */
    size_t pool_len;
    list_t calls;            /* every call of this loop (running or waiting to retry), by link */
    http_socket_t **sockets; /* indexed by socket number; NULL where none was used yet */
    size_t sockets_cap;
    unsigned int rng;        /* for jitter */
};

struct http_call {
    http_loop_t *hl;
    work_item_t *item;
    http_shard_t *shard;     /* NULL while not in a multi handle */
    CURL *easy;
    http_request_t req;
    dynbuf_t response;       /* capped at --max-result-bytes */
    bool response_too_big;
    bool response_json;      /* Content-Type says JSON */
    json_t *kept;            /* kept response headers; NULL until the first one */
    long retry_after_ms;     /* from a Retry-After header, or -1 */
    sched_acquire_cb go;     /* the call to make once the circuit breaker lets it start (http_gate) */
    int64_t counted_failure_ms; /* when its last failure that counted against --max-attempts was; 0: none */
    int64_t call_started_ms;
    char errbuf[CURL_ERROR_SIZE];
    list_node_t link;        /* in the loop's calls */
};

static void http_check_done(http_shard_t *sh);

static void http_on_timer(loop_t *loop, loop_timer_t *t)
{
    (void)loop;
    http_shard_t *sh = container_of(t, http_shard_t, timer);
    int running;
    curl_multi_socket_action(sh->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    http_check_done(sh);
}

static int http_timer_cb(CURLM *multi, long timeout_ms, void *userp)
{
    (void)multi;
    http_shard_t *sh = userp;
    if (timeout_ms < 0) loop_timer_stop(sh->hl->loop, &sh->timer);
    else loop_timer_start(sh->hl->loop, &sh->timer, loop_now_ms(sh->hl->loop) + timeout_ms, http_on_timer);
    return 0;
}

static void http_on_socket(loop_t *loop, loop_watch_t *w, uint32_t events)
{
    (void)loop;
    http_socket_t *hs = container_of(w, http_socket_t, watch);
    int flags = 0;
    if (events & EPOLLIN) flags |= CURL_CSELECT_IN;
    if (events & EPOLLOUT) flags |= CURL_CSELECT_OUT;
    if (events & (EPOLLERR | EPOLLHUP)) flags |= CURL_CSELECT_ERR;
    http_shard_t *sh = hs->shard;
    int running;
    curl_multi_socket_action(sh->multi, w->fd, flags, &running);
    http_check_done(sh);
}

/* The record of socket fd, created on first use. */
static http_socket_t *http_socket_get(http_loop_t *hl, curl_socket_t fd)
{
    size_t i = (size_t)fd;
    if (i >= hl->sockets_cap) {
        size_t cap = hl->sockets_cap ? hl->sockets_cap : 1024;
        while (cap <= i) cap *= 2;
        hl->sockets = xrealloc(hl->sockets, cap * sizeof(http_socket_t *));
        memset(hl->sockets + hl->sockets_cap, 0, (cap - hl->sockets_cap) * sizeof(http_socket_t *));
        hl->sockets_cap = cap;
    }
    if (!hl->sockets[i]) hl->sockets[i] = xcalloc(1, sizeof(http_socket_t));
    return hl->sockets[i];
}

static int http_socket_cb(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
    (void)easy;
    (void)socketp;
    http_shard_t *sh = userp;
    http_socket_t *hs = http_socket_get(sh->hl, fd);
    if (what == CURL_POLL_REMOVE) {
        /* Usually a connection going back to the cache: keep it registered for the next call that reuses it.
         * Closing it goes through http_close_socket_cb, which unregisters it. */
        loop_watch_park(sh->hl->loop, &hs->watch);
        return 0;
    }
    hs->shard = sh;
    uint32_t events = 0;
    if (what == CURL_POLL_IN || what == CURL_POLL_INOUT) events |= EPOLLIN;
    if (what == CURL_POLL_OUT || what == CURL_POLL_INOUT) events |= EPOLLOUT;
    if (loop_watch_start(sh->hl->loop, &hs->watch, fd, events, http_on_socket)) {
        /* Without a watch the transfer would hang until its timeout: tell libcurl to fail it now. */
        LOG_LIMITED(LL_ERROR, "http: cannot watch a socket: %s", strerror(errno));
        return -1;
    }
    return 0;
}

/* libcurl's socket(): a new socket may reuse the number of one closed without our knowledge, so whatever we
 * recorded for that number is stale. */
static curl_socket_t http_open_socket_cb(void *userp, curlsocktype purpose, struct curl_sockaddr *addr)
{
    (void)purpose;
    http_loop_t *hl = userp;
    curl_socket_t fd = socket(addr->family, addr->socktype, addr->protocol);
    if (fd != CURL_SOCKET_BAD && (size_t)fd < hl->sockets_cap && hl->sockets[fd])
        loop_watch_forget(&hl->sockets[fd]->watch);
    return fd;
}

/* libcurl's close(): takes a parked socket out of the epoll set before its number can be reused. */
static int http_close_socket_cb(void *userp, curl_socket_t fd)
{
    http_loop_t *hl = userp;
    if ((size_t)fd < hl->sockets_cap && hl->sockets[fd]) loop_watch_stop(hl->loop, &hl->sockets[fd]->watch);
    return close(fd);
}

static int http_loop_init(loop_t *loop, const settings_t *s, void *shared, void **state)
{
    http_loop_t *hl = xcalloc(1, sizeof *hl);
    const http_shared_t *ps = shared;
    hl->cfg = ps->cfg;
    hl->breaker = ps->breaker;
    hl->loop = loop;
    list_init(&hl->calls);
    hl->rng = (unsigned int)loop_now_ms(loop) ^ (unsigned int)(uintptr_t)hl;
    long per_loop = s->concurrency / (long)handler_loop_count(&handler_http, s) + 1;
    hl->n_shards = (size_t)((per_loop + HTTP_SHARD_CONNS - 1) / HTTP_SHARD_CONNS);
    if (hl->n_shards < 1) hl->n_shards = 1;
    hl->shards = xcalloc(hl->n_shards, sizeof *hl->shards);
    for (size_t i = 0; i < hl->n_shards; i++) {
        http_shard_t *sh = &hl->shards[i];
        sh->hl = hl;
        sh->multi = curl_multi_init();
        if (!sh->multi) {
            LOG(LL_ERROR, "http: cannot create a libcurl multi handle");
            return -1;
        }
        curl_multi_setopt(sh->multi, CURLMOPT_SOCKETFUNCTION, http_socket_cb);
        curl_multi_setopt(sh->multi, CURLMOPT_SOCKETDATA, sh);
        curl_multi_setopt(sh->multi, CURLMOPT_TIMERFUNCTION, http_timer_cb);
        curl_multi_setopt(sh->multi, CURLMOPT_TIMERDATA, sh);
        curl_multi_setopt(sh->multi, CURLMOPT_MAXCONNECTS, (long)HTTP_SHARD_CONNS + 16);
    }
    *state = hl;
    return 0;
}

static void http_call_free(http_call_t *call)
{
    list_remove(&call->link);
    if (call->easy) {
        if (call->shard) {
            curl_multi_remove_handle(call->shard->multi, call->easy);
            call->shard->active--;
        }
        curl_easy_cleanup(call->easy);
    }
    http_request_free(&call->req);
    dynbuf_free(&call->response);
    json_decref(call->kept);
    if (call->item) call->item->handler_data = NULL;
    free(call);
}

static void http_loop_free(void *state)
{
    http_loop_t *hl = state;
    if (!hl) return;
    list_for_each_safe(n, tmp, &hl->calls) /* calls abandoned by a drain */
        http_call_free(container_of(n, http_call_t, link));
    for (size_t i = 0; i < hl->n_shards; i++)
        if (hl->shards[i].multi) curl_multi_cleanup(hl->shards[i].multi);
    for (size_t i = 0; i < hl->pool_len; i++) curl_easy_cleanup(hl->pool[i]);
    free(hl->pool);
    for (size_t i = 0; i < hl->sockets_cap; i++) free(hl->sockets[i]);
    free(hl->sockets);
    free(hl->shards);
    free(hl);
}

/* ---- transfers ---- */

static size_t http_write_cb(char *data, size_t size, size_t n, void *userp)
{
    http_call_t *call = userp;
    if (dynbuf_add(&call->response, data, size * n)) {
        call->response_too_big = true;
        return 0; /* makes libcurl fail the transfer with CURLE_WRITE_ERROR */
    }
    return size * n;
}

/* Is the header name (len bytes, any case) the lowercase name lit? */
static bool header_is(const char *name, size_t len, const char *lit)
{
    return strlen(lit) == len && strncasecmp(name, lit, len) == 0;
}

static bool contains_ci(const char *s, size_t len, const char *lit)
{
    size_t n = strlen(lit);
    for (size_t i = 0; i + n <= len; i++)
        if (strncasecmp(s + i, lit, n) == 0) return true;
    return false;
}

static size_t http_header_cb(char *data, size_t size, size_t n, void *userp)
{
    http_call_t *call = userp;
    size_t len = size * n;
    if (len >= 5 && strncmp(data, "HTTP/", 5) == 0) { /* a new response (after 100 Continue): start over */
        if (call->kept) json_object_clear(call->kept);
        call->retry_after_ms = -1;
        call->response_json = false;
        return len;
    }
    const char *colon = memchr(data, ':', len);
    if (!colon || colon == data || (size_t)(colon - data) > 256) return len;
    size_t name_len = (size_t)(colon - data);
    const char *v = colon + 1, *end = data + len;
    while (v < end && (*v == ' ' || *v == '\t')) v++;
    while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' ')) end--;
    size_t vlen = (size_t)(end - v);
    if (header_is(data, name_len, "content-type")) {
        call->response_json = contains_ci(v, vlen, "json");
    } else if (header_is(data, name_len, "retry-after") && vlen < 64) {
        char ra[64];
        memcpy(ra, v, vlen);
        ra[vlen] = '\0';
        char *e;
        long secs = strtol(ra, &e, 10);
        if (e != ra && *e == '\0' && secs >= 0) {
            call->retry_after_ms = secs > HTTP_RETRY_AFTER_MAX_MS / 1000 ? HTTP_RETRY_AFTER_MAX_MS : secs * 1000;
        } else {
            time_t when = curl_getdate(ra, NULL);
            if (when > 0) call->retry_after_ms = ((long)(when - time(NULL))) * 1000;
            if (call->retry_after_ms < 0 && when > 0) call->retry_after_ms = 0;
        }
        if (call->retry_after_ms > HTTP_RETRY_AFTER_MAX_MS) call->retry_after_ms = HTTP_RETRY_AFTER_MAX_MS;
    }
    const http_config_t *c = call->hl->cfg;
    for (size_t i = 0; i < c->n_keep_headers; i++) {
        if (!header_is(data, name_len, c->keep_headers[i])) continue;
        dynbuf_t b;
        dynbuf_init(&b, HTTP_HEADER_LINE_MAX);
        dynbuf_add_json_string(&b, v, vlen); /* makes the value valid UTF-8 */
        json_t *js = json_loads(b.data ? b.data : "\"\"", JSON_DECODE_ANY, NULL);
        if (js && !call->kept) call->kept = json_object();
        if (js) json_object_set_new(call->kept, c->keep_headers[i], js);
        dynbuf_free(&b);
        break;
    }
    return len;
}

/* A new easy handle, with the options that are the same for every call (set once: pooled handles keep them). The
 * socket callbacks are copied into each connection the handle opens, so they must be set on every handle. */
static CURL *http_easy_new(http_loop_t *hl)
{
    const settings_t *s = hl->cfg->settings;
    CURL *e = curl_easy_init();
    if (!e) return NULL;
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)s->http_timeout_ms);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)s->connect_timeout_ms);
    curl_easy_setopt(e, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)s->max_result_bytes);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, http_write_cb);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, http_header_cb);
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, s->insecure ? 0L : 1L);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, s->insecure ? 0L : 2L);
    if (s->ca_file) curl_easy_setopt(e, CURLOPT_CAINFO, s->ca_file);
    curl_easy_setopt(e, CURLOPT_OPENSOCKETFUNCTION, http_open_socket_cb);
    curl_easy_setopt(e, CURLOPT_OPENSOCKETDATA, hl);
    curl_easy_setopt(e, CURLOPT_CLOSESOCKETFUNCTION, http_close_socket_cb);
    curl_easy_setopt(e, CURLOPT_CLOSESOCKETDATA, hl);
    if (!hl->cfg->env_proxy) {
        curl_easy_setopt(e, CURLOPT_PROXY, "");
        curl_easy_setopt(e, CURLOPT_NOPROXY, "");
    }
    return e;
}

/* A pooled easy handle is not reset (curl_easy_reset costs allocations on every call): http_send() sets every
 * option that differs between calls, and puts the request method back to GET; http_easy_new() set the rest. */
static CURL *http_easy_get(http_loop_t *hl)
{
    if (hl->pool_len) return hl->pool[--hl->pool_len];
    return http_easy_new(hl);
}

static void http_easy_put(http_loop_t *hl, CURL *e)
{
    if (hl->pool_len >= (size_t)HTTP_SHARD_CONNS * hl->n_shards) {
        curl_easy_cleanup(e);
        return;
    }
    if (!hl->pool) hl->pool = xcalloc((size_t)HTTP_SHARD_CONNS * hl->n_shards, sizeof(CURL *));
    hl->pool[hl->pool_len++] = e;
}

static void http_send(http_call_t *call)
{
    http_loop_t *hl = call->hl;
    const settings_t *s = hl->cfg->settings;
    CURL *e = http_easy_get(hl);
    if (!e) {
        work_item_t *it = call->item;
        http_call_free(call);
        sched_item_done(hl->loop, it, false, NULL, 0, "cannot create a libcurl handle");
        return;
    }
    call->easy = e;
    dynbuf_free(&call->response);
    dynbuf_init(&call->response, (size_t)s->max_result_bytes);
    call->response_too_big = false;
    call->response_json = false;
    call->retry_after_ms = -1;
    if (call->kept) json_object_clear(call->kept);
    call->errbuf[0] = '\0';
    curl_easy_setopt(e, CURLOPT_URL, call->req.url);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, call);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, call);
    curl_easy_setopt(e, CURLOPT_PRIVATE, call);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, call->errbuf);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, call->req.headers);
    /* Waiting for a connection to multiplex on only makes sense where HTTP/2 can be negotiated (TLS); over plain
     * HTTP/1.1 it would queue new calls behind a slow one. */
    curl_easy_setopt(e, CURLOPT_PIPEWAIT, strncmp(call->req.url, "https:", 6) == 0 ? 1L : 0L);
    /* Undo a previous call's body, HEAD or custom method (the handle is reused without a reset). */
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)-1);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, (char *)NULL);
    curl_easy_setopt(e, CURLOPT_NOBODY, 0L);
    curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
    curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, (char *)NULL);
    if (call->req.body) {
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)call->req.body_len);
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, call->req.body);
    }
    if (call->req.method) {
        if (strcmp(call->req.method, "HEAD") == 0) curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
        else curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, call->req.method);
    }
    /* The shard with the fewest transfers. */
    http_shard_t *best = &hl->shards[0];
    for (size_t i = 1; i < hl->n_shards; i++)
        if (hl->shards[i].active < best->active) best = &hl->shards[i];
    call->shard = best;
    best->active++;
    call->call_started_ms = clock_now_ms(); /* not the turn's cached time: a call may end in the turn it began */
    CURLMcode mc = curl_multi_add_handle(best->multi, e);
    if (mc != CURLM_OK) {
        best->active--;
        call->shard = NULL;
        work_item_t *it = call->item;
        char msg[160];
        snprintf(msg, sizeof msg, "libcurl refused the transfer: %s", curl_multi_strerror(mc));
        http_call_free(call);
        sched_item_done(hl->loop, it, false, NULL, 0, msg);
    }
}

static void http_retry_go(loop_t *loop, work_item_t *item)
{
    (void)loop;
    http_call_t *call = item->handler_data;
    item->attempts++;
    metrics_add(M_ITEMS_RETRIED, 1);
    http_send(call);
}

/* Gives back the item's last counted attempt once its failure proves to be one of the calls that opened the
 * circuit. */
static void http_breaker_refund(http_call_t *call)
{
    if (call->counted_failure_ms && breaker_tripped_by(call->hl->breaker, call->counted_failure_ms)) {
        call->item->attempts--;
        call->counted_failure_ms = 0;
    }
}

/* A first call the open circuit held back. */
static void http_first_go(loop_t *loop, work_item_t *item)
{
    (void)loop;
    http_send(item->handler_data);
}

/* Every call asks the circuit breaker first, waiting on the item's timer while it is open, then takes a token and
 * a slot of the queue's limits, retries too (the first call's were taken by the loop before http_start), and goes
 * (call->go). */
static void http_gate(loop_t *loop, loop_timer_t *t)
{
    work_item_t *item = container_of(t, work_item_t, timer);
    http_call_t *call = item->handler_data;
    if (call->hl->breaker && !breaker_allow(call->hl->breaker, clock_now_ms())) {
        loop_timer_start(loop, t, loop_now_ms(loop) + HTTP_BREAKER_POLL_MS, http_gate);
        return;
    }
    if (call->hl->breaker) http_breaker_refund(call);
    sched_acquire(loop, item, call->go);
}

/* The retry wait is over and the item holds a place again: through the breaker and the queue's limits as any
 * call. */
static void http_retry_placed(loop_t *loop, work_item_t *item) { http_gate(loop, &item->timer); }

/* The result of a successful call: {"status":N,"body":...,"headers":{...},"ms":N}. A JSON body is embedded as
 * JSON in jansson's compact form (usually by copying it: result_add_compact_json), anything else as a string. */
static char *http_result(http_call_t *call, long status, int64_t ms, size_t *len)
{
    dynbuf_t b;
    dynbuf_init(&b, (size_t)-1 / 2);
    dynbuf_addstr(&b, "{\"status\":");
    dynbuf_add_int(&b, status);
    dynbuf_addstr(&b, ",\"body\":");
    const char *body = call->response.data ? call->response.data : "";
    if (!call->response_json || !call->response.len || result_add_compact_json(&b, body, call->response.len)) {
        json_t *parsed = NULL;
        if (call->response_json && call->response.len)
            parsed = json_loadb(body, call->response.len, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
        char *text = parsed ? json_dumps(parsed, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
        if (text) dynbuf_addstr(&b, text);
        else dynbuf_add_json_string(&b, body, call->response.len);
        free(text);
        json_decref(parsed);
    }
    char *headers = call->kept && json_object_size(call->kept) ? json_dumps(call->kept, JSON_COMPACT) : NULL;
    dynbuf_addstr(&b, ",\"headers\":");
    dynbuf_addstr(&b, headers ? headers : "{}");
    dynbuf_addstr(&b, ",\"ms\":");
    dynbuf_add_int(&b, ms);
    dynbuf_addstr(&b, "}");
    free(headers);
    return dynbuf_take(&b, len);
}

/* A failed item keeps the start of its last response's body (--error-body-bytes, cut back to a UTF-8 character's
 * start), so that the result says why; nothing when no response came or the setting is 0. Secret header values
 * the API echoed are masked (also one cut by the excerpt's end: the mask covers a header line's length more). */
static void http_keep_error_body(http_call_t *call, long status)
{
    work_item_t *item = call->item;
    size_t cap = (size_t)call->hl->cfg->settings->error_body_bytes;
    if (status <= 0 || cap == 0) return;
    char *body = call->response.data ? call->response.data : (char *)"";
    size_t n = call->response.len;
    http_config_mask_secrets(call->hl->cfg, body, n < cap + HTTP_HEADER_LINE_MAX ? n : cap + HTTP_HEADER_LINE_MAX);
    if (n > cap) {
        n = cap;
        while (n > 0 && ((unsigned char)body[n] & 0xC0) == 0x80) n--;
    }
    free(item->error_body);
    item->error_body = xmalloc(n + 1);
    memcpy(item->error_body, body, n);
    item->error_body[n] = '\0';
    item->error_body_len = n;
}

static void http_finished(http_shard_t *sh, CURL *e, CURLcode code)
{
    http_call_t *call = NULL;
    curl_easy_getinfo(e, CURLINFO_PRIVATE, (char **)&call);
    http_loop_t *hl = sh->hl;
    const settings_t *s = hl->cfg->settings;
    curl_multi_remove_handle(sh->multi, e);
    sh->active--;
    call->shard = NULL;
    call->easy = NULL;
    long status = 0;
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
    http_easy_put(hl, e);
    work_item_t *item = call->item;
    int64_t ms = clock_now_ms() - call->call_started_ms;
    item->status = (int)status;
    sched_release(hl->loop, item); /* the call's slot of --max-inflight-global */
    if (code == CURLE_OK && (status == 429 || (status == 503 && call->retry_after_ms >= 0)))
        sched_throttled(hl->loop, call->retry_after_ms);
    metrics_observe(H_HTTP_CALL_SECONDS, (uint64_t)ms * 1000);
    metrics_add(code != CURLE_OK || status < 100 || status > 599 ? M_HTTP_ERROR
                                                                  : (metrics_counter_t)(M_HTTP_1XX + status / 100 - 1),
                1);

    char error[CURL_ERROR_SIZE + 128];
    bool retry = false;
    if (code == CURLE_OK && status >= 100 && status < 400) {
        if (hl->breaker) breaker_record(hl->breaker, clock_now_ms(), false, NULL);
        size_t len;
        char *result = http_result(call, status, ms, &len);
        http_call_free(call);
        sched_item_done(hl->loop, item, true, result, len, NULL);
        free(result);
        return;
    }
    if (code == CURLE_OK) {
        retry = status < 600 && hl->cfg->retry_status[status];
        snprintf(error, sizeof error, "HTTP %ld", status);
    } else if (call->response_too_big || code == CURLE_FILESIZE_EXCEEDED) {
        snprintf(error, sizeof error, "response body larger than --max-result-bytes (%lld bytes)",
                 s->max_result_bytes);
    } else {
        /* Connection errors and timeouts are worth another try. */
        retry = code != CURLE_UNSUPPORTED_PROTOCOL && code != CURLE_URL_MALFORMAT;
        snprintf(error, sizeof error, "%s%s%s", curl_easy_strerror(code), call->errbuf[0] ? ": " : "",
                 call->errbuf);
    }
    /* The upstream is failing (connection error, timeout, 5xx), or answering: the breaker judges which. */
    bool excused = false;
    if (hl->breaker) {
        int64_t now = clock_now_ms();
        excused = breaker_record(hl->breaker, now, code == CURLE_OK ? status >= 500 && status <= 599 : retry, error);
        http_breaker_refund(call);
        if (retry && !excused) call->counted_failure_ms = now;
    }
    if (retry && (excused || item->attempts < s->max_attempts)) {
        int64_t delay = call->retry_after_ms >= 0 && (status == 429 || status == 503) ? call->retry_after_ms
                                                                                       : handler_retry_delay_ms(s, &hl->rng, item->attempts);
        LOG(LL_DEBUG, "http: item %s attempt %d failed (%s%s); retrying in %lld ms", item->in->id_json, item->attempts,
            error, excused ? ", not counted: the circuit is open" : "", (long long)delay);
        if (excused) item->attempts--; /* http_retry_go counts the retry again */
        call->go = http_retry_go;
        dynbuf_free(&call->response); /* a waiting item holds no response */
        sched_retry_after(hl->loop, item, delay, http_retry_placed);
        return;
    }
    if (retry) {
        size_t n = strlen(error);
        snprintf(error + n, sizeof error - n, " (gave up after %d attempts)", item->attempts);
    }
    http_keep_error_body(call, status);
    http_call_free(call);
    sched_item_done(hl->loop, item, false, NULL, 0, error);
}

static void http_check_done(http_shard_t *sh)
{
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(sh->multi, &left)))
        if (msg->msg == CURLMSG_DONE) http_finished(sh, msg->easy_handle, msg->data.result);
}

static void http_start(void *state, loop_t *loop, work_item_t *item)
{
    http_loop_t *hl = state;
    http_call_t *call = xcalloc(1, sizeof *call);
    call->hl = hl;
    call->item = item;
    dynbuf_init(&call->response, (size_t)hl->cfg->settings->max_result_bytes);
    list_push_back(&hl->calls, &call->link);
    item->handler_data = call;
    item->status = 0;
    char why[320];
    const char *error = http_request_build(hl->cfg, item->in->value, item->in->id_json, &call->req, why, sizeof why);
    if (error) {
        char msg[400];
        snprintf(msg, sizeof msg, "%s", error);
        http_call_free(call);
        sched_item_done(loop, item, false, NULL, 0, msg);
        return;
    }
    if (hl->breaker && !breaker_allow(hl->breaker, clock_now_ms())) {
        /* Held back by the open circuit: the slot taken for it goes back until the circuit lets it go. */
        sched_release(loop, item);
        call->go = http_first_go;
        loop_timer_start(loop, &item->timer, loop_now_ms(loop) + HTTP_BREAKER_POLL_MS, http_gate);
        return;
    }
    http_send(call);
}

/* --item-timeout-ms: the call is abandoned wherever it is (in flight or waiting to retry). */
static void http_cancel(void *state, loop_t *loop, work_item_t *item)
{
    (void)state;
    loop_timer_stop(loop, &item->timer);
    if (item->handler_data) http_call_free(item->handler_data);
}

const handler_t handler_http = {.name = "http",
                                .init = http_init,
                                .fini = http_fini,
                                .loop_init = http_loop_init,
                                .loop_free = http_loop_free,
                                .start = http_start,
                                .cancel = http_cancel,
                                .ready = http_ready};
