/* handler_http: one HTTP call per item, thousands in flight per loop, with libcurl's multi socket interface.
 *
 * Each loop owns several multi handles ("shards") of about HTTP_SHARD_CONNS transfers each, all driven by the
 * loop's epoll: libcurl's socket callback becomes a loop_watch, its timer callback a loop_timer deadline. One
 * multi handle's cost per transfer grows with the connections it holds, so spreading transfers over shards keeps
 * each one small. Easy handles are pooled per loop and reused, so connections are kept alive.
 *
 * Queue contents are untrusted: an item names a method, a path joined to --base-url, a query, headers and a body;
 * an absolute "url" is accepted only for a host in --allow-hosts, and the final URL is checked to still point at
 * the allowed host before any request is made. Redirects are not followed; only http and https are spoken.
 *
 * Outcomes: 1xx-3xx are results; connection errors, timeouts and --retry-statuses (default 429 and 5xx) are
 * retried up to --max-attempts, waiting on a loop timer (exponential backoff with full jitter, or Retry-After);
 * anything else fails the item, which then also goes to the dead list. */
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

#include "clock.h"
#include "dynbuf.h"
#include "handler.h"
#include "log.h"
#include "metrics.h"
#include "result.h"
#include "xalloc.h"

/* Transfers per multi handle. To reuse a connection, libcurl 7.88 walks its multi handle's list of connections to
 * the host past every busy one, so the cost per call grows with this. Callgrind, 16,000 calls at c=2000: 250 ->
 * 109 k instructions per call, 100 -> 106 k, 50 -> 104.5 k, 20 -> 104.4 k. */
#define HTTP_SHARD_CONNS 50
#define HTTP_RETRY_AFTER_MAX_MS 600000   /* longest Retry-After honoured */
#define HTTP_HEADER_LINE_MAX 8192
#define HTTP_SECRET_HEADERS_MAX 64

/* ---- process-wide configuration (read-only once built) ---- */

typedef struct http_config {
    const settings_t *settings;
    char *base_url;                  /* without a trailing '/'; NULL: absolute urls only */
    char *base_host;                 /* host of base_url */
    char **allow_hosts;              /* lowercase */
    size_t n_allow_hosts;
    char **keep_headers;             /* lowercase */
    size_t n_keep_headers;
    char **secret_headers;           /* "Name: value" */
    char **secret_names;             /* lowercase names of the secret headers */
    size_t n_secret;
    bool retry_status[600];          /* statuses that are retried */
    bool env_proxy;                  /* a proxy variable is set: libcurl reads them on every call */
} http_config_t;

static void free_list(char **list, size_t n)
{
    for (size_t i = 0; i < n; i++) free(list[i]);
    free(list);
}

static void http_fini(void *shared)
{
    http_config_t *c = shared;
    if (!c) return;
    free(c->base_url);
    free(c->base_host);
    free_list(c->allow_hosts, c->n_allow_hosts);
    free_list(c->keep_headers, c->n_keep_headers);
    free_list(c->secret_headers, c->n_secret);
    free_list(c->secret_names, c->n_secret);
    free(c);
}

static void lowercase(char *s)
{
    for (; *s; s++) *s = (char)tolower((unsigned char)*s);
}

/* Splits a comma-separated list into trimmed, lowercased, non-empty entries. */
static char **split_list(const char *text, size_t *n)
{
    char **out = NULL;
    *n = 0;
    const char *p = text;
    while (p && *p) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        while (len && isspace((unsigned char)*p)) p++, len--;
        while (len && isspace((unsigned char)p[len - 1])) len--;
        if (len) {
            out = xrealloc(out, (*n + 1) * sizeof(char *));
            out[*n] = xstrndup(p, len);
            lowercase(out[(*n)++]);
        }
        p = end ? end + 1 : NULL;
    }
    return out;
}

static bool is_token_char(unsigned char c)
{
    return isalnum(c) || strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/* Checks a header name (an HTTP token) and value (no CR, LF or NUL). */
static bool header_ok(const char *name, size_t name_len, const char *value, size_t value_len)
{
    if (name_len == 0 || name_len > 256 || value_len > HTTP_HEADER_LINE_MAX) return false;
    for (size_t i = 0; i < name_len; i++)
        if (!is_token_char((unsigned char)name[i])) return false;
    for (size_t i = 0; i < value_len; i++)
        if (value[i] == '\r' || value[i] == '\n' || value[i] == '\0') return false;
    return true;
}

/* Adds "Name: value" lines from text (from where, for messages) to the secret headers. The values are never
 * logged: messages name only the source and the line number. */
static int add_secret_headers(http_config_t *c, const char *text, const char *where, char *err, size_t errlen)
{
    int line_no = 0;
    for (const char *p = text; p && *p;) {
        const char *end = strchr(p, '\n');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        line_no++;
        if (len && p[len - 1] == '\r') len--;
        const char *colon = memchr(p, ':', len);
        bool blank = true;
        for (size_t i = 0; i < len; i++)
            if (!isspace((unsigned char)p[i])) blank = false;
        if (!blank && p[0] != '#') {
            size_t name_len = colon ? (size_t)(colon - p) : 0;
            const char *value = colon ? colon + 1 : NULL;
            size_t value_len = colon ? len - name_len - 1 : 0;
            while (value_len && *value == ' ') value++, value_len--;
            if (!colon || !header_ok(p, name_len, value, value_len)) {
                snprintf(err, errlen, "%s line %d: expected \"Name: value\" with a valid header name", where,
                         line_no);
                return -1;
            }
            if (c->n_secret == HTTP_SECRET_HEADERS_MAX) {
                snprintf(err, errlen, "%s: more than %d headers", where, HTTP_SECRET_HEADERS_MAX);
                return -1;
            }
            c->secret_headers = xrealloc(c->secret_headers, (c->n_secret + 1) * sizeof(char *));
            c->secret_names = xrealloc(c->secret_names, (c->n_secret + 1) * sizeof(char *));
            c->secret_headers[c->n_secret] = xasprintf("%.*s: %.*s", (int)name_len, p, (int)value_len, value);
            c->secret_names[c->n_secret] = xstrndup(p, name_len);
            lowercase(c->secret_names[c->n_secret++]);
        }
        p = end ? end + 1 : NULL;
    }
    return 0;
}

static int parse_retry_statuses(http_config_t *c, const char *text, char *err, size_t errlen)
{
    size_t n;
    char **list = split_list(text, &n);
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        const char *e = list[i];
        if (strlen(e) == 3 && e[0] >= '1' && e[0] <= '5' && e[1] == 'x' && e[2] == 'x') {
            for (int s = (e[0] - '0') * 100; s < (e[0] - '0') * 100 + 100; s++) c->retry_status[s] = true;
        } else {
            char *end;
            long v = strtol(e, &end, 10);
            if (*end || v < 100 || v > 599) {
                snprintf(err, errlen, "invalid value for --retry-statuses (CHUNKD_RETRY_STATUSES): '%s' is not a "
                         "status from 100 to 599 or a class like 5xx", e);
                rc = -1;
            } else {
                c->retry_status[v] = true;
            }
        }
    }
    free_list(list, n);
    return rc;
}

/* Returns the lowercased host of url, or NULL. */
static char *url_host(const char *url)
{
    CURLU *u = curl_url();
    char *host = NULL, *out = NULL;
    if (curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK && curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK) {
        out = xstrdup(host);
        lowercase(out);
    }
    curl_free(host);
    curl_url_cleanup(u);
    return out;
}

static int http_init(const settings_t *s, void **shared, char *err, size_t errlen)
{
    http_config_t *c = xcalloc(1, sizeof *c);
    c->settings = s;
    *shared = c;
    if (s->base_url) {
        c->base_url = xstrdup(s->base_url);
        size_t n = strlen(c->base_url);
        while (n && c->base_url[n - 1] == '/') c->base_url[--n] = '\0';
        c->base_host = url_host(c->base_url);
        if (!c->base_host) {
            snprintf(err, errlen, "invalid value for --base-url (CHUNKD_BASE_URL): not a URL with a host");
            return -1;
        }
    }
    /* libcurl looks these up on every call; when none is set, telling it "no proxy" once is the same, cheaper. */
    static const char *const proxy_vars[] = {"http_proxy", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY",
                                             "no_proxy", "NO_PROXY"};
    for (size_t i = 0; i < sizeof proxy_vars / sizeof proxy_vars[0]; i++)
        if (getenv(proxy_vars[i])) c->env_proxy = true;
    c->allow_hosts = split_list(s->allow_hosts, &c->n_allow_hosts);
    c->keep_headers = split_list(s->keep_headers, &c->n_keep_headers);
    if (parse_retry_statuses(c, s->retry_statuses, err, errlen)) return -1;
    if (s->http_headers && add_secret_headers(c, s->http_headers, "CHUNKD_HTTP_HEADERS", err, errlen)) return -1;
    if (s->header_file) {
        FILE *f = fopen(s->header_file, "r");
        if (!f) {
            snprintf(err, errlen, "cannot read --header-file %s: %s", s->header_file, strerror(errno));
            return -1;
        }
        char buf[65536];
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        bool too_big = !feof(f);
        fclose(f);
        buf[n] = '\0';
        if (too_big) {
            snprintf(err, errlen, "--header-file %s is larger than %zu bytes", s->header_file, sizeof buf - 1);
            return -1;
        }
        if (add_secret_headers(c, buf, s->header_file, err, errlen)) return -1;
    }
    if (s->insecure) LOG(LL_WARN, "--insecure: TLS certificates are NOT verified");
    char base[512];
    log_mask_userinfo(c->base_url ? c->base_url : "(none)", base, sizeof base);
    LOG(LL_INFO, "http handler: base %s, %zu allowed hosts, %zu secret headers, max %lld attempts", base,
        c->n_allow_hosts, c->n_secret, s->max_attempts);
    return 0;
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
    loop_t *loop;
    http_shard_t *shards;
    size_t n_shards;
    CURL **pool;             /* idle easy handles */
    size_t pool_len;
    http_call_t *calls;      /* every call of this loop (running or waiting to retry) */
    http_socket_t **sockets; /* indexed by socket number; NULL where none was used yet */
    size_t sockets_cap;
    unsigned int rng;        /* for jitter */
};

struct http_call {
    http_loop_t *hl;
    work_item_t *item;
    http_shard_t *shard;     /* NULL while not in a multi handle */
    CURL *easy;
    char *url;
    char *method;            /* NULL: GET, or POST with a body */
    char *body;              /* request body, or NULL */
    size_t body_len;
    struct curl_slist *headers;
    dynbuf_t response;       /* capped at --max-result-bytes */
    bool response_too_big;
    bool response_json;      /* Content-Type says JSON */
    json_t *kept;            /* kept response headers; NULL until the first one */
    long retry_after_ms;     /* from a Retry-After header, or -1 */
    int64_t call_started_ms;
    char errbuf[CURL_ERROR_SIZE];
    http_call_t *prev, *next;
};

static void http_check_done(http_shard_t *sh);

static void http_on_timer(loop_t *loop, loop_timer_t *t)
{
    (void)loop;
    http_shard_t *sh = (http_shard_t *)(void *)((char *)t - offsetof(http_shard_t, timer));
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
    http_socket_t *hs = (http_socket_t *)(void *)w;
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
    hl->cfg = shared;
    hl->loop = loop;
    hl->rng = (unsigned int)loop_now_ms(loop) ^ (unsigned int)(uintptr_t)hl;
    long n_loops = s->threads ? s->threads : sysconf(_SC_NPROCESSORS_ONLN);
    long per_loop = s->concurrency / (n_loops > 0 ? n_loops : 1) + 1;
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
    http_loop_t *hl = call->hl;
    if (call->prev) call->prev->next = call->next;
    else hl->calls = call->next;
    if (call->next) call->next->prev = call->prev;
    if (call->easy) {
        if (call->shard) {
            curl_multi_remove_handle(call->shard->multi, call->easy);
            call->shard->active--;
        }
        curl_easy_cleanup(call->easy);
    }
    curl_slist_free_all(call->headers);
    dynbuf_free(&call->response);
    json_decref(call->kept);
    free(call->url);
    free(call->method);
    free(call->body);
    if (call->item) call->item->handler_data = NULL;
    free(call);
}

static void http_loop_free(void *state)
{
    http_loop_t *hl = state;
    if (!hl) return;
    while (hl->calls) http_call_free(hl->calls); /* calls abandoned by a drain */
    for (size_t i = 0; i < hl->n_shards; i++)
        if (hl->shards[i].multi) curl_multi_cleanup(hl->shards[i].multi);
    for (size_t i = 0; i < hl->pool_len; i++) curl_easy_cleanup(hl->pool[i]);
    free(hl->pool);
    for (size_t i = 0; i < hl->sockets_cap; i++) free(hl->sockets[i]);
    free(hl->sockets);
    free(hl->shards);
    free(hl);
}

/* ---- building a request from an item ---- */

static bool host_allowed(const http_config_t *c, const char *host)
{
    for (size_t i = 0; i < c->n_allow_hosts; i++)
        if (strcmp(c->allow_hosts[i], host) == 0) return true;
    return false;
}

/* Appends s percent-encoded as curl_easy_escape() does (all but ALPHA, DIGIT and "-._~" become %XX), without
 * its allocations. */
static int url_escape(dynbuf_t *b, const char *s, size_t len)
{
    static const char hex[] = "0123456789ABCDEF";
    const char *end = s + len;
    while (s < end) {
        const char *run = s;
        while (s < end && (isalnum((unsigned char)*s) || *s == '-' || *s == '.' || *s == '_' || *s == '~')) s++;
        if (s > run && dynbuf_add(b, run, (size_t)(s - run))) return -1;
        if (s == end) break;
        unsigned char c = (unsigned char)*s++;
        char pct[3] = {'%', hex[c >> 4], hex[c & 15]};
        if (dynbuf_add(b, pct, 3)) return -1;
    }
    return 0;
}

/* Appends the item's "query" object to url. Returns NULL, or an error message. */
static const char *add_query(dynbuf_t *url, const json_t *query)
{
    if (!query) return NULL;
    if (!json_is_object(query)) return "\"query\" must be an object";
    bool first = !url->data || strchr(url->data, '?') == NULL;
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)query, key, v) {
        size_t n = json_is_array(v) ? json_array_size(v) : 1;
        for (size_t i = 0; i < n; i++) {
            json_t *e = json_is_array(v) ? json_array_get(v, i) : v;
            char num[64];
            const char *text;
            if (json_is_string(e)) text = json_string_value(e);
            else if (json_is_integer(e)) snprintf(num, sizeof num, "%lld", (long long)json_integer_value(e)), text = num;
            else if (json_is_real(e)) snprintf(num, sizeof num, "%.17g", json_real_value(e)), text = num;
            else if (json_is_boolean(e)) text = json_is_true(e) ? "true" : "false";
            else if (json_is_null(e)) text = NULL;
            else return "\"query\" values must be strings, numbers, booleans, null or arrays of them";
            if (dynbuf_addstr(url, first ? "?" : "&") || url_escape(url, key, strlen(key)) ||
                (text && (dynbuf_addstr(url, "=") || url_escape(url, text, strlen(text)))))
                return "URL too long";
            first = false;
        }
    }
    return NULL;
}

static bool header_forbidden(const http_config_t *c, const char *name)
{
    static const char *const forbidden[] = {"host", "content-length", "transfer-encoding", "connection",
                                            "idempotency-key", "expect", "te", "upgrade"};
    for (size_t i = 0; i < sizeof forbidden / sizeof forbidden[0]; i++)
        if (strcasecmp(name, forbidden[i]) == 0) return true;
    for (size_t i = 0; i < c->n_secret; i++)
        if (strcasecmp(name, c->secret_names[i]) == 0) return true;
    return false;
}

/* Builds call's URL, method, headers and body from the item. Returns NULL, or why the item cannot be sent. */
static const char *http_build(http_call_t *call, char *why, size_t whylen)
{
    const http_config_t *c = call->hl->cfg;
    const settings_t *s = c->settings;
    const json_t *item = call->item->in->value;
    if (!json_is_object(item)) return "an http item must be a JSON object";
    json_t *jmethod = json_object_get(item, "method"), *jpath = json_object_get(item, "path"),
           *jurl = json_object_get(item, "url"), *jquery = json_object_get(item, "query"),
           *jheaders = json_object_get(item, "headers"), *jbody = json_object_get(item, "body");

    dynbuf_t url;
    dynbuf_init(&url, 65536);
    const char *allowed_host = NULL;
    char *host = NULL;
    const char *error = NULL;
    if (jurl) {
        if (!json_is_string(jurl)) return "\"url\" must be a string";
        const char *u = json_string_value(jurl);
        if (strncmp(u, "http://", 7) != 0 && strncmp(u, "https://", 8) != 0) return "\"url\" must be http or https";
        host = url_host(u);
        if (!host) return "\"url\" is not a valid URL";
        if (!host_allowed(c, host)) {
            snprintf(why, whylen, "host %.200s of \"url\" is not in --allow-hosts; no request was made", host);
            free(host);
            return why;
        }
        if (dynbuf_addstr(&url, u)) {
            free(host);
            dynbuf_free(&url);
            return "\"url\" is too long";
        }
        allowed_host = host;
    } else {
        if (!c->base_url) return "item has no \"url\" and no --base-url is set";
        const char *path = "";
        if (jpath) {
            if (!json_is_string(jpath)) return "\"path\" must be a string";
            path = json_string_value(jpath);
            if (path[0] != '/') return "\"path\" must start with '/'";
            for (const char *p = path; *p; p++)
                if ((unsigned char)*p <= ' ' || *p == 0x7f) return "\"path\" must not contain spaces or control characters";
        }
        if (dynbuf_addstr(&url, c->base_url) || dynbuf_addstr(&url, path)) error = "URL too long";
        allowed_host = c->base_host;
    }
    if (!error) error = add_query(&url, jquery);
    /* The URL must still name the allowed host (a crafted path or query cannot move it). A URL built on
     * --base-url needs no parsing for that: what follows base_url starts with '/' (the path) or '?' (the query;
     * '&' only after a '?'), so the authority part, and with it the host, ends where base_url ends. */
    if (!error && jurl) {
        char *final_host = url_host(url.data);
        if (!final_host || strcmp(final_host, allowed_host) != 0) error = "the URL built from the item changes its host";
        free(final_host);
    }
    free(host);
    if (error) {
        dynbuf_free(&url);
        return error;
    }
    call->url = dynbuf_take(&url, NULL);

    if (jmethod) {
        if (!json_is_string(jmethod) || json_string_length(jmethod) == 0 || json_string_length(jmethod) > 16)
            return "\"method\" must be a short string";
        for (const char *p = json_string_value(jmethod); *p; p++)
            if (!isupper((unsigned char)*p)) return "\"method\" must be upper-case letters, like GET or POST";
        call->method = xstrdup(json_string_value(jmethod));
    }

    bool has_content_type = false;
    if (jheaders) {
        if (!json_is_object(jheaders)) return "\"headers\" must be an object of strings";
        const char *name;
        json_t *v;
        json_object_foreach(jheaders, name, v) {
            if (!json_is_string(v) || !header_ok(name, strlen(name), json_string_value(v), json_string_length(v)))
                return "\"headers\" must map valid header names to strings without line breaks";
            if (header_forbidden(c, name)) {
                snprintf(why, whylen, "header %.100s may not be set by an item", name);
                return why;
            }
            if (strcasecmp(name, "content-type") == 0) has_content_type = true;
            char *line = xasprintf("%s: %s", name, json_string_value(v));
            call->headers = curl_slist_append(call->headers, line);
            free(line);
        }
    }
    if (jbody) {
        if (json_is_string(jbody)) {
            call->body_len = json_string_length(jbody);
            call->body = xstrndup(json_string_value(jbody), call->body_len);
        } else {
            call->body = json_dumps(jbody, JSON_COMPACT | JSON_ENCODE_ANY);
            if (!call->body) return "\"body\" cannot be encoded";
            call->body_len = strlen(call->body);
            if (!has_content_type) call->headers = curl_slist_append(call->headers, "Content-Type: application/json");
        }
    }
    /* Secrets go only to --base-url: an item's absolute url (even to an allowed host) never carries them. */
    if (!jurl)
        for (size_t i = 0; i < c->n_secret; i++)
            call->headers = curl_slist_append(call->headers, c->secret_headers[i]);
    if (s->idempotency_key) {
        /* Derived from queue and item id, so a redelivered item carries the same key. */
        /* The id as written (a string id without its quotes), escaped; ids are unique within a queue. */
        const char *id = call->item->in->id_json;
        size_t id_len = strlen(id);
        if (id[0] == '"') id++, id_len -= 2;
        dynbuf_t line;
        dynbuf_init(&line, (size_t)-1 / 2);
        dynbuf_addstr(&line, "Idempotency-Key: chunkd-");
        url_escape(&line, s->queue, strlen(s->queue));
        dynbuf_addstr(&line, "-");
        url_escape(&line, id, id_len);
        call->headers = curl_slist_append(call->headers, line.data);
        dynbuf_free(&line);
    }
    /* No "Expect: 100-continue" round trip before a large body (only bodies can trigger it). */
    if (call->body) call->headers = curl_slist_append(call->headers, "Expect:");
    return NULL;
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
        loop_item_done(hl->loop, it, false, NULL, 0, "cannot create a libcurl handle");
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
    curl_easy_setopt(e, CURLOPT_URL, call->url);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, call);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, call);
    curl_easy_setopt(e, CURLOPT_PRIVATE, call);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, call->errbuf);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, call->headers);
    /* Waiting for a connection to multiplex on only makes sense where HTTP/2 can be negotiated (TLS); over plain
     * HTTP/1.1 it would queue new calls behind a slow one. */
    curl_easy_setopt(e, CURLOPT_PIPEWAIT, strncmp(call->url, "https:", 6) == 0 ? 1L : 0L);
    /* Undo a previous call's body, HEAD or custom method (the handle is reused without a reset). */
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)-1);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, (char *)NULL);
    curl_easy_setopt(e, CURLOPT_NOBODY, 0L);
    curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
    curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, (char *)NULL);
    if (call->body) {
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)call->body_len);
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, call->body);
    }
    if (call->method) {
        if (strcmp(call->method, "HEAD") == 0) curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
        else curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, call->method);
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
        loop_item_done(hl->loop, it, false, NULL, 0, msg);
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

/* Every call takes a token and a slot of the queue's limits, retries too (the first call's were taken by the
 * loop before http_start). */
static void http_retry_fired(loop_t *loop, loop_timer_t *t)
{
    loop_acquire(loop, (work_item_t *)(void *)((char *)t - offsetof(work_item_t, timer)), http_retry_go);
}

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
    loop_release(hl->loop, item); /* the call's slot of --max-inflight-global */
    if (code == CURLE_OK && (status == 429 || (status == 503 && call->retry_after_ms >= 0)))
        loop_throttled(hl->loop, call->retry_after_ms);
    metrics_observe(H_HTTP_CALL_SECONDS, (uint64_t)ms * 1000);
    metrics_add(code != CURLE_OK || status < 100 || status > 599 ? M_HTTP_ERROR
                                                                  : (metrics_counter_t)(M_HTTP_1XX + status / 100 - 1),
                1);

    char error[CURL_ERROR_SIZE + 128];
    bool retry = false;
    if (code == CURLE_OK && status >= 100 && status < 400) {
        size_t len;
        char *result = http_result(call, status, ms, &len);
        http_call_free(call);
        loop_item_done(hl->loop, item, true, result, len, NULL);
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
    if (retry && item->attempts < s->max_attempts) {
        int64_t delay = call->retry_after_ms >= 0 && (status == 429 || status == 503) ? call->retry_after_ms
                                                                                       : handler_retry_delay_ms(s, &hl->rng, item->attempts);
        LOG(LL_DEBUG, "http: item %s attempt %d failed (%s); retrying in %lld ms", item->in->id_json, item->attempts,
            error, (long long)delay);
        loop_timer_start(hl->loop, &item->timer, loop_now_ms(hl->loop) + delay, http_retry_fired);
        return;
    }
    if (retry) {
        size_t n = strlen(error);
        snprintf(error + n, sizeof error - n, " (gave up after %d attempts)", item->attempts);
    }
    http_call_free(call);
    loop_item_done(hl->loop, item, false, NULL, 0, error);
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
    call->next = hl->calls;
    if (hl->calls) hl->calls->prev = call;
    hl->calls = call;
    item->handler_data = call;
    item->status = 0;
    char why[320];
    const char *error = http_build(call, why, sizeof why);
    if (error) {
        char msg[400];
        snprintf(msg, sizeof msg, "%s", error);
        http_call_free(call);
        loop_item_done(loop, item, false, NULL, 0, msg);
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
                                .cancel = http_cancel};
