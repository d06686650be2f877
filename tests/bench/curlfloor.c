/* curlfloor: the floor under the http benchmark -- what libcurl (7.88 here) alone does on this machine, driven
 * the way chunkd's http handler (src/handler/handler_http.c) drives it, with no Redis, no JSON, no queue, no results.
 *
 *   curlfloor URL CONCURRENCY SECONDS [THREADS]
 *
 * Keeps CONCURRENCY GETs of URL in flight for SECONDS, then lets those in flight finish, and prints one line:
 *   {"requests":N,"errors":E,"seconds":S,"req_per_s":R,"cpu_us_per_req":U}
 * requests: transfers answered 200; errors: any other outcome; seconds: from the start to the last transfer
 * done; cpu: getrusage(RUSAGE_SELF) user + system over the whole run, per request.
 *
 * The bench compares chunkd's worker with wrk, which is not libcurl; this program tells how much of that gap is
 * libcurl's own cost and how much chunkd's pipeline. Its design is the handler's: THREADS loops (default 1; the
 * handler runs one per core), each with one epoll and several multi handles ("shards") of 50 transfers on the
 * socket interface; libcurl's timer callback becomes a deadline that bounds epoll_wait; easy handles are pooled
 * and reused (connections kept alive), with the options of http_easy_new() and, per transfer, what http_send()
 * sets for a GET; idle keep-alive sockets stay in the epoll set (CURL_POLL_REMOVE only parks them, libcurl's
 * close goes through our close-socket callback, which takes them out). Per-item headers (Idempotency-Key) are
 * not sent. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <curl/curl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define SHARD_CONNS 50 /* transfers per multi handle: HTTP_SHARD_CONNS of src/handler/handler_http.c */
#define BODY_MAX 4096  /* the answer is {"ok":true}; a longer one fails its transfer */

typedef struct floor_loop floor_loop_t;

typedef struct shard {
    floor_loop_t *fl;
    CURLM *multi;
    int64_t deadline_ms; /* libcurl's timeout as a deadline; -1: none */
    int active;          /* transfers in this multi handle */
} shard_t;

/* One per socket number used, kept until the end (epoll's data.ptr may name it in a batch after its close). */
typedef struct sock {
    int fd;
    uint32_t in_epoll;   /* events registered in epoll; 0: not in the set */
    uint32_t events;     /* events libcurl wants; 0 while parked (an idle keep-alive connection) */
    shard_t *shard;      /* the multi handle whose transfer last wanted it */
} sock_t;

typedef struct xfer { /* an easy handle and its buffers */
    CURL *easy;
    char body[BODY_MAX];
    size_t len;
    bool json; /* Content-Type says JSON */
    char errbuf[CURL_ERROR_SIZE];
} xfer_t;

struct floor_loop {
    const char *url;
    int concurrency, epfd;
    int64_t now_ms, end_ms, last_done_ms;
    shard_t *shards;
    int n_shards, active;
    xfer_t **pool; /* idle easy handles */
    int pool_len;
    sock_t **socks; /* indexed by socket number */
    size_t socks_cap;
    struct curl_slist *headers;
    long requests, errors;
    char first_error[CURL_ERROR_SIZE + 64];
    pthread_t thread;
};

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n, size);
    if (!p) {
        fprintf(stderr, "curlfloor: out of memory\n");
        exit(1);
    }
    return p;
}

static sock_t *sock_get(floor_loop_t *fl, curl_socket_t fd)
{
    size_t i = (size_t)fd;
    if (i >= fl->socks_cap) {
        size_t cap = fl->socks_cap ? fl->socks_cap : 1024;
        while (cap <= i) cap *= 2;
        sock_t **socks = xcalloc(cap, sizeof(sock_t *));
        if (fl->socks) memcpy(socks, fl->socks, fl->socks_cap * sizeof(sock_t *));
        free(fl->socks);
        fl->socks = socks;
        fl->socks_cap = cap;
    }
    if (!fl->socks[i]) fl->socks[i] = xcalloc(1, sizeof(sock_t));
    fl->socks[i]->fd = fd;
    return fl->socks[i];
}

static void unwatch(floor_loop_t *fl, sock_t *s)
{
    if (s->in_epoll) epoll_ctl(fl->epfd, EPOLL_CTL_DEL, s->fd, NULL);
    s->in_epoll = s->events = 0;
}

static int socket_cb(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
    (void)easy;
    (void)socketp;
    shard_t *sh = userp;
    sock_t *s = sock_get(sh->fl, fd);
    if (what == CURL_POLL_REMOVE) { /* usually back to the connection cache: stays registered, parked */
        s->events = 0;
        return 0;
    }
    s->shard = sh;
    uint32_t events = (what & CURL_POLL_IN ? EPOLLIN : 0u) | (what & CURL_POLL_OUT ? EPOLLOUT : 0u);
    if (s->in_epoll != events) {
        struct epoll_event ev = {.events = events, .data.ptr = s};
        if (epoll_ctl(sh->fl->epfd, s->in_epoll ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, fd, &ev) &&
            epoll_ctl(sh->fl->epfd, s->in_epoll ? EPOLL_CTL_ADD : EPOLL_CTL_MOD, fd, &ev)) {
            s->in_epoll = s->events = 0;
            return -1; /* libcurl fails the transfer */
        }
    }
    s->in_epoll = s->events = events;
    return 0;
}

/* A new socket may reuse the number of one closed unseen: what was recorded for that number is stale. */
static curl_socket_t open_socket_cb(void *userp, curlsocktype purpose, struct curl_sockaddr *addr)
{
    (void)purpose;
    floor_loop_t *fl = userp;
    curl_socket_t fd = socket(addr->family, addr->socktype, addr->protocol);
    if (fd != CURL_SOCKET_BAD && (size_t)fd < fl->socks_cap && fl->socks[fd])
        fl->socks[fd]->in_epoll = fl->socks[fd]->events = 0;
    return fd;
}

static int close_socket_cb(void *userp, curl_socket_t fd)
{
    floor_loop_t *fl = userp;
    if ((size_t)fd < fl->socks_cap && fl->socks[fd]) unwatch(fl, fl->socks[fd]);
    return close(fd);
}

static int timer_cb(CURLM *multi, long timeout_ms, void *userp)
{
    (void)multi;
    shard_t *sh = userp;
    sh->deadline_ms = timeout_ms < 0 ? -1 : sh->fl->now_ms + timeout_ms;
    return 0;
}

static size_t write_cb(char *data, size_t size, size_t n, void *userp)
{
    xfer_t *x = userp;
    if (size * n > sizeof x->body - x->len) return 0; /* CURLE_WRITE_ERROR */
    memcpy(x->body + x->len, data, size * n);
    x->len += size * n;
    return size * n;
}

static size_t header_cb(char *data, size_t size, size_t n, void *userp)
{
    xfer_t *x = userp;
    size_t len = size * n;
    if (len > 13 && strncasecmp(data, "content-type:", 13) == 0) x->json = memmem(data + 13, len - 13, "json", 4);
    return len;
}

/* An easy handle with the options of http_easy_new() (default settings: 30 s, 5 s to connect, 1 MiB). */
static xfer_t *xfer_new(floor_loop_t *fl)
{
    xfer_t *x = xcalloc(1, sizeof *x);
    CURL *e = x->easy = curl_easy_init();
    if (!e) {
        free(x);
        return NULL;
    }
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, 30000L);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
    curl_easy_setopt(e, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)1048576);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, write_cb);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, header_cb);
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L);
    curl_easy_setopt(e, CURLOPT_OPENSOCKETFUNCTION, open_socket_cb);
    curl_easy_setopt(e, CURLOPT_OPENSOCKETDATA, fl);
    curl_easy_setopt(e, CURLOPT_CLOSESOCKETFUNCTION, close_socket_cb);
    curl_easy_setopt(e, CURLOPT_CLOSESOCKETDATA, fl);
    return x;
}

static void xfer_start(floor_loop_t *fl)
{
    xfer_t *x = fl->pool_len ? fl->pool[--fl->pool_len] : xfer_new(fl);
    if (!x) {
        fl->errors++;
        return;
    }
    x->len = 0;
    x->json = false;
    x->errbuf[0] = '\0';
    CURL *e = x->easy;
    /* What http_send() sets on every call of a GET (the pooled handle is not reset). */
    curl_easy_setopt(e, CURLOPT_URL, fl->url);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, x);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, x);
    curl_easy_setopt(e, CURLOPT_PRIVATE, x);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, x->errbuf);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, fl->headers);
    curl_easy_setopt(e, CURLOPT_PIPEWAIT, strncmp(fl->url, "https:", 6) == 0 ? 1L : 0L);
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)-1);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, (char *)NULL);
    curl_easy_setopt(e, CURLOPT_NOBODY, 0L);
    curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
    curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, (char *)NULL);
    shard_t *best = &fl->shards[0]; /* the shard with the fewest transfers */
    for (int i = 1; i < fl->n_shards; i++)
        if (fl->shards[i].active < best->active) best = &fl->shards[i];
    if (curl_multi_add_handle(best->multi, e) != CURLM_OK) {
        fl->errors++;
        fl->pool[fl->pool_len++] = x;
        return;
    }
    best->active++;
    fl->active++;
}

static void check_done(shard_t *sh)
{
    floor_loop_t *fl = sh->fl;
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(sh->multi, &left))) {
        if (msg->msg != CURLMSG_DONE) continue;
        CURL *e = msg->easy_handle;
        CURLcode code = msg->data.result;
        xfer_t *x = NULL;
        long status = 0;
        curl_easy_getinfo(e, CURLINFO_PRIVATE, (char **)&x);
        curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
        curl_multi_remove_handle(sh->multi, e);
        sh->active--;
        fl->active--;
        fl->last_done_ms = now_ms();
        if (code == CURLE_OK && status == 200) {
            fl->requests++;
        } else {
            if (!fl->errors++)
                snprintf(fl->first_error, sizeof fl->first_error, "%s%s%s (HTTP %ld)", curl_easy_strerror(code),
                         x->errbuf[0] ? ": " : "", x->errbuf, status);
        }
        fl->pool[fl->pool_len++] = x;
        if (fl->now_ms < fl->end_ms) xfer_start(fl);
    }
}

static void *loop_main(void *arg)
{
    floor_loop_t *fl = arg;
    fl->epfd = epoll_create1(EPOLL_CLOEXEC);
    fl->headers = curl_slist_append(NULL, "Expect:");
    fl->pool = xcalloc((size_t)fl->concurrency, sizeof(xfer_t *));
    /* As http_loop_init(): enough shards of SHARD_CONNS for this loop's share of the concurrency, plus one. */
    fl->n_shards = (fl->concurrency + 1 + SHARD_CONNS - 1) / SHARD_CONNS;
    fl->shards = xcalloc((size_t)fl->n_shards, sizeof *fl->shards);
    for (int i = 0; i < fl->n_shards; i++) {
        shard_t *sh = &fl->shards[i];
        sh->fl = fl;
        sh->deadline_ms = -1;
        sh->multi = curl_multi_init();
        curl_multi_setopt(sh->multi, CURLMOPT_SOCKETFUNCTION, socket_cb);
        curl_multi_setopt(sh->multi, CURLMOPT_SOCKETDATA, sh);
        curl_multi_setopt(sh->multi, CURLMOPT_TIMERFUNCTION, timer_cb);
        curl_multi_setopt(sh->multi, CURLMOPT_TIMERDATA, sh);
        curl_multi_setopt(sh->multi, CURLMOPT_MAXCONNECTS, (long)SHARD_CONNS + 16);
    }
    fl->now_ms = now_ms();
    for (int i = 0; i < fl->concurrency; i++) xfer_start(fl);
    struct epoll_event events[64];
    while (fl->active > 0) {
        int64_t next = -1;
        for (int i = 0; i < fl->n_shards; i++)
            if (fl->shards[i].deadline_ms >= 0 && (next < 0 || fl->shards[i].deadline_ms < next))
                next = fl->shards[i].deadline_ms;
        int timeout = 1000;
        if (next >= 0) {
            int64_t until = next - now_ms();
            if (until < timeout) timeout = until < 0 ? 0 : (int)until;
        }
        int n = epoll_wait(fl->epfd, events, 64, timeout);
        fl->now_ms = now_ms();
        for (int i = 0; i < n; i++) {
            sock_t *s = events[i].data.ptr;
            if (s->events) {
                int flags = (events[i].events & EPOLLIN ? CURL_CSELECT_IN : 0) |
                            (events[i].events & EPOLLOUT ? CURL_CSELECT_OUT : 0) |
                            (events[i].events & (EPOLLERR | EPOLLHUP) ? CURL_CSELECT_ERR : 0);
                int running;
                curl_multi_socket_action(s->shard->multi, s->fd, flags, &running);
                check_done(s->shard);
            } else if (s->in_epoll) {
                unwatch(fl, s); /* parked and ready (e.g. the server closed an idle connection) */
            }
        }
        for (int i = 0; i < fl->n_shards; i++) {
            shard_t *sh = &fl->shards[i];
            if (sh->deadline_ms < 0 || sh->deadline_ms > fl->now_ms) continue;
            sh->deadline_ms = -1;
            int running;
            curl_multi_socket_action(sh->multi, CURL_SOCKET_TIMEOUT, 0, &running);
            check_done(sh);
        }
    }
    for (int i = 0; i < fl->n_shards; i++) curl_multi_cleanup(fl->shards[i].multi); /* closes the connections */
    while (fl->pool_len) { /* every handle: none is in flight now */
        xfer_t *x = fl->pool[--fl->pool_len];
        curl_easy_cleanup(x->easy);
        free(x);
    }
    for (size_t i = 0; i < fl->socks_cap; i++) free(fl->socks[i]);
    free(fl->socks);
    free(fl->pool);
    free(fl->shards);
    curl_slist_free_all(fl->headers);
    close(fl->epfd);
    return NULL;
}

int main(int argc, char **argv)
{
    long conc = argc >= 4 ? strtol(argv[2], NULL, 10) : 0;
    double seconds = argc >= 4 ? strtod(argv[3], NULL) : 0;
    long threads = argc == 5 ? strtol(argv[4], NULL, 10) : 1;
    if (argc < 4 || argc > 5 || conc < 1 || conc > 1000000 || !(seconds > 0) || threads < 1 || threads > conc) {
        fprintf(stderr, "usage: curlfloor URL CONCURRENCY SECONDS [THREADS]\n");
        return 2;
    }
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fprintf(stderr, "curlfloor: curl_global_init failed\n");
        return 1;
    }
    floor_loop_t *loops = xcalloc((size_t)threads, sizeof *loops);
    int64_t start = now_ms();
    for (long i = 0; i < threads; i++) {
        loops[i].url = argv[1];
        loops[i].concurrency = (int)(conc / threads + (i < conc % threads));
        loops[i].end_ms = start + (int64_t)(seconds * 1000);
        loops[i].last_done_ms = start;
        if (pthread_create(&loops[i].thread, NULL, loop_main, &loops[i])) {
            fprintf(stderr, "curlfloor: cannot start a thread\n");
            return 1;
        }
    }
    long requests = 0, errors = 0;
    int64_t last = start;
    const char *first_error = NULL;
    for (long i = 0; i < threads; i++) {
        pthread_join(loops[i].thread, NULL);
        requests += loops[i].requests;
        errors += loops[i].errors;
        if (loops[i].last_done_ms > last) last = loops[i].last_done_ms;
        if (!first_error && loops[i].errors) first_error = loops[i].first_error;
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double cpu_us = (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e6 +
                    (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
    double wall = (double)(last - start) / 1000;
    if (errors) fprintf(stderr, "curlfloor: %ld errors; the first: %s\n", errors, first_error ? first_error : "?");
    printf("{\"requests\":%ld,\"errors\":%ld,\"seconds\":%.3f,\"req_per_s\":%.1f,\"cpu_us_per_req\":%.1f}\n",
           requests, errors, wall, wall > 0 ? (double)requests / wall : 0.0,
           requests ? cpu_us / (double)requests : 0.0);
    free(loops);
    curl_global_cleanup();
    return requests > 0 ? 0 : 1;
}
