/* httpd: see httpd.h.
 *
 * Defences of the port against hostile clients (issue 15): libmicrohttpd serves it on HTTPD_THREADS threads, each an
 * epoll loop that no client can block (every socket is non-blocking; handlers only read atomics and render metrics),
 * with up to HTTPD_CONNECTION_LIMIT connections, each with an HTTPD_CONNECTION_MEMORY pool (a longer request is refused
 * with 431). Its own timeout is an idle one, restarted by every byte a client sends, so a client dripping one header
 * byte a second would keep its connection forever (libmicrohttpd 0.9.75's MHD_CONNECTION_OPTION_TIMEOUT changes that
 * idle timeout only; it has no call that closes a connection from outside its callbacks, and the access handler runs
 * only once the headers are in). So its connection callbacks keep the live connections in lists, under `mu`: `conns`,
 * earliest deadline first, and one per client address. The sweeper thread shuts down, every HTTPD_SWEEP_MS, the socket
 * of each connection whose request is not done HTTPD_DEADLINE_MS after the connection opened or after its previous
 * request was done; a new connection from an address with HTTPD_PER_ADDRESS_LIMIT already shuts down that address's
 * oldest. (libmicrohttpd's own per-address limit refuses the new one instead: an attacker at the probes' address, the
 * node's, would hold the probes off.) libmicrohttpd then sees the end of the stream and closes the connection itself. A
 * socket is shut down only while its connection is listed, and libmicrohttpd tells us of its end
 * (MHD_CONNECTION_NOTIFY_CLOSED, which takes `mu` to unlist it) before it closes the descriptor, so no reused
 * descriptor number is ever shut down. */
#include "httpd.h"

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "clock.h"
#include "dynbuf.h"
#include "list.h"
#include "log.h"
#include "metrics.h"
#include "xalloc.h"

/* Enough for the 1,000 hostile connections of issue 15's target twice over, with room for the probes. Memory:
 * each holds at most its pool, HTTPD_CONNECTION_MEMORY, plus libmicrohttpd's struct (about 1 KiB). */
#define HTTPD_CONNECTION_LIMIT 2048
/* kubelet's probes come from the node's address, Prometheus from one or two: a few connections each. A new
 * connection from an address that already has this many closes that address's oldest one. */
#define HTTPD_PER_ADDRESS_LIMIT 32
#define HTTPD_ADDRESS_BUCKETS 1024
/* A probe's request is about 200 bytes and its response headers fewer: 8 KiB is room for both, many times. */
#define HTTPD_CONNECTION_MEMORY (8 * 1024)
#define HTTPD_THREADS 2
/* A request must be done (answered) this long after its connection opened or its previous request was done. */
#define HTTPD_DEADLINE_MS 2000
#define HTTPD_SWEEP_MS 200
/* libmicrohttpd's idle timeout (whole seconds): the deadline's, as a second line of defence. */
#define HTTPD_IDLE_TIMEOUT_S (HTTPD_DEADLINE_MS / 1000)

/* The live connections from one client address (an IPv4 address as its IPv4-mapped IPv6 form). Created with its
 * first connection, freed when its last one is unlisted. */
typedef struct httpd_addr {
    list_node_t bucket_node; /* in its bucket of addrs */
    unsigned char key[16];
    unsigned n_conns;        /* connections listed in conns */
    list_t conns;            /* httpd_conn_t.addr_node, earliest deadline first */
} httpd_addr_t;

/* One live connection. Allocated at MHD_CONNECTION_NOTIFY_STARTED (libmicrohttpd keeps the pointer as the
 * connection's socket context) and freed at MHD_CONNECTION_NOTIFY_CLOSED. Listed (node in conns, addr_node in its
 * address's conns) from its start until it is shut down or closed, whichever comes first. */
typedef struct httpd_conn {
    list_node_t node;      /* in conns */
    list_node_t addr_node; /* in addr->conns */
    httpd_addr_t *addr;    /* NULL once unlisted, or for a client address of another family */
    int fd;                /* the connection's socket, owned by libmicrohttpd */
    int64_t deadline_ms;   /* monotonic: its current request must be done by then */
} httpd_conn_t;

struct httpd {
    struct MHD_Daemon *daemon;
    httpd_probe_t probe;
    char where[INET6_ADDRSTRLEN + 16]; /* "127.0.0.1:8080", "[::]:8080" */
    pthread_mutex_t mu;                /* guards conns, addrs, every httpd_conn_t and httpd_addr_t, stopping */
    pthread_cond_t wake;               /* the sweeper's sleep; signalled on stop */
    list_t conns;                      /* live connections, earliest deadline first */
    list_t addrs[HTTPD_ADDRESS_BUCKETS]; /* httpd_addr_t by a hash of the key */
    bool stopping;
    pthread_t sweeper;
    bool sweeper_started;
};

static enum MHD_Result httpd_reply(struct MHD_Connection *conn, unsigned int status, const char *type, char *body,
                                   size_t len)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(r, "Content-Type", type);
    MHD_add_response_header(r, "Cache-Control", "no-store");
    enum MHD_Result rc = MHD_queue_response(conn, status, r);
    MHD_destroy_response(r);
    return rc;
}

static enum MHD_Result httpd_text(struct MHD_Connection *conn, unsigned int status, const char *text)
{
    char *body = xasprintf("%s\n", text);
    return httpd_reply(conn, status, "text/plain; charset=utf-8", body, strlen(body));
}

static enum MHD_Result httpd_handle(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                   const char *version, const char *upload_data, size_t *upload_size, void **state)
{
    (void)version, (void)upload_data;
    httpd_t *h = cls;
    if (*state == NULL) { /* first call for this request: headers only */
        *state = (void *)1;
        return MHD_YES;
    }
    if (*upload_size) { /* no endpoint takes a body: drop it */
        *upload_size = 0;
        return MHD_YES;
    }
    bool known = strcmp(url, "/healthz") == 0 || strcmp(url, "/readyz") == 0 || strcmp(url, "/metrics") == 0;
    if (!known) return httpd_text(conn, MHD_HTTP_NOT_FOUND, "not found");
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
        char *body = xstrdup("method not allowed\n");
        struct MHD_Response *r = MHD_create_response_from_buffer(strlen(body), body, MHD_RESPMEM_MUST_FREE);
        if (!r) return MHD_NO;
        MHD_add_response_header(r, "Allow", "GET, HEAD");
        enum MHD_Result rc = MHD_queue_response(conn, MHD_HTTP_METHOD_NOT_ALLOWED, r);
        MHD_destroy_response(r);
        return rc;
    }
    char why[256] = "";
    if (strcmp(url, "/healthz") == 0) {
        bool ok = h->probe.live(h->probe.arg, why, sizeof why);
        return httpd_text(conn, ok ? MHD_HTTP_OK : MHD_HTTP_SERVICE_UNAVAILABLE, ok ? "ok" : why);
    }
    if (strcmp(url, "/readyz") == 0) {
        bool ok = h->probe.ready(h->probe.arg, why, sizeof why);
        return httpd_text(conn, ok ? MHD_HTTP_OK : MHD_HTTP_SERVICE_UNAVAILABLE, ok ? "ready" : why);
    }
    dynbuf_t b;
    dynbuf_init(&b, (size_t)16 * 1024 * 1024);
    metrics_render(&b);
    size_t len;
    char *body = dynbuf_take(&b, &len);
    return httpd_reply(conn, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8", body, len);
}

/* Why a listening socket could not be had, in words an operator can act on. */
static const char *httpd_bind_reason(int errnum)
{
    switch (errnum) {
    case EADDRINUSE: return "address in use (another worker on this host? set --http-port, or 0 for no HTTP server)";
    case EACCES: return "permission denied (ports below 1024 need privileges: set --http-port)";
    case EADDRNOTAVAIL: return "no such address on this host (set --http-addr)";
    default: return strerror(errnum);
    }
}

/* libmicrohttpd's own messages (a failed accept, a connection it dropped), through LOG instead of its raw
 * fprintf to stderr. */
__attribute__((format(printf, 2, 0))) static void httpd_log(void *arg, const char *fmt, va_list ap)
{
    (void)arg;
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    msg[strcspn(msg, "\n")] = '\0';
    LOG_LIMITED(LL_WARN, "http server: %s", msg);
}

/* The key of a client address: 16 bytes, an IPv4 address in its IPv4-mapped IPv6 form (as a dual-stack socket
 * shows it). False for another family. */
static bool httpd_addr_key(const struct sockaddr *sa, unsigned char key[16])
{
    if (sa && sa->sa_family == AF_INET) {
        memset(key, 0, 10);
        key[10] = key[11] = 0xff;
        memcpy(key + 12, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, 4);
        return true;
    }
    if (sa && sa->sa_family == AF_INET6) {
        memcpy(key, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr, 16);
        return true;
    }
    return false;
}

/* The record of a client address, created if it has none. Called with mu held. */
static httpd_addr_t *httpd_addr_get(httpd_t *h, const unsigned char key[16])
{
    uint32_t hash = 2166136261u; /* FNV-1a */
    for (int i = 0; i < 16; i++) hash = (hash ^ key[i]) * 16777619u;
    list_t *bucket = &h->addrs[hash % HTTPD_ADDRESS_BUCKETS];
    for (list_node_t *n = list_first(bucket); n; n = list_next(bucket, n)) {
        httpd_addr_t *a = container_of(n, httpd_addr_t, bucket_node);
        if (memcmp(a->key, key, 16) == 0) return a;
    }
    httpd_addr_t *a = xcalloc(1, sizeof *a);
    memcpy(a->key, key, 16);
    list_init(&a->conns);
    list_push_back(bucket, &a->bucket_node);
    return a;
}

/* Takes c off the lists (it stays allocated until libmicrohttpd closes it); frees its address's record with its
 * last connection. Called with mu held; does nothing to a connection already unlisted. */
static void httpd_unlist(httpd_conn_t *c)
{
    list_remove(&c->node);
    httpd_addr_t *a = c->addr;
    if (!a) return;
    list_remove(&c->addr_node);
    c->addr = NULL;
    assert(a->n_conns > 0);
    if (--a->n_conns == 0) {
        list_remove(&a->bucket_node);
        free(a);
    }
}

/* Unlists c and shuts down its socket: libmicrohttpd then sees the end of the stream and closes it. Called with mu
 * held, so c is still open (libmicrohttpd unlists it, under mu, before it closes the descriptor). */
static void httpd_cut(httpd_conn_t *c)
{
    httpd_unlist(c);
    shutdown(c->fd, SHUT_RDWR);
}

/* A connection starts: listed with its deadline; one over its address's limit closes that address's oldest. */
static httpd_conn_t *httpd_conn_started(httpd_t *h, struct MHD_Connection *conn)
{
    const union MHD_ConnectionInfo *fd_info = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (!fd_info) return NULL; /* untracked: libmicrohttpd's idle timeout still applies */
    const union MHD_ConnectionInfo *addr_info = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    unsigned char key[16];
    bool keyed = addr_info && httpd_addr_key(addr_info->client_addr, key);
    httpd_conn_t *c = xcalloc(1, sizeof *c);
    c->fd = fd_info->connect_fd;
    c->deadline_ms = clock_now_ms() + HTTPD_DEADLINE_MS;
    bool evicted = false;
    pthread_mutex_lock(&h->mu);
    list_push_back(&h->conns, &c->node);
    if (keyed) {
        c->addr = httpd_addr_get(h, key);
        list_push_back(&c->addr->conns, &c->addr_node);
        if (++c->addr->n_conns > HTTPD_PER_ADDRESS_LIMIT) {
            httpd_cut(container_of(list_first(&c->addr->conns), httpd_conn_t, addr_node));
            evicted = true;
        }
    }
    pthread_mutex_unlock(&h->mu);
    if (evicted) {
        char text[INET6_ADDRSTRLEN] = "?";
        inet_ntop(AF_INET6, key, text, sizeof text);
        LOG_LIMITED(LL_WARN, "http server: %s has %d connections open: closed its oldest", text,
                    HTTPD_PER_ADDRESS_LIMIT);
    }
    return c;
}

/* libmicrohttpd's connection callbacks (on its threads): track each connection from its start to its end. */
static void httpd_notify_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                                    enum MHD_ConnectionNotificationCode code)
{
    httpd_t *h = cls;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        *socket_context = httpd_conn_started(h, conn);
        return;
    }
    httpd_conn_t *c = *socket_context;
    if (!c) return;
    pthread_mutex_lock(&h->mu);
    httpd_unlist(c);
    pthread_mutex_unlock(&h->mu);
    free(c);
    *socket_context = NULL;
}

/* A request is done (answered, or abandoned): the connection's next request gets a deadline of its own. */
static void httpd_request_done(void *cls, struct MHD_Connection *conn, void **state,
                               enum MHD_RequestTerminationCode toe)
{
    (void)state, (void)toe;
    httpd_t *h = cls;
    const union MHD_ConnectionInfo *info = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    httpd_conn_t *c = info ? info->socket_context : NULL;
    if (!c) return;
    pthread_mutex_lock(&h->mu);
    if (list_remove(&c->node)) { /* to the backs: the lists stay in deadline order */
        c->deadline_ms = clock_now_ms() + HTTPD_DEADLINE_MS;
        list_push_back(&h->conns, &c->node);
        if (c->addr) {
            list_remove(&c->addr_node);
            list_push_back(&c->addr->conns, &c->addr_node);
        }
    }
    pthread_mutex_unlock(&h->mu);
}

/* Shuts down the sockets of the connections past their deadline. Called with mu held; returns how many. */
static unsigned httpd_sweep(httpd_t *h, int64_t now_ms)
{
    unsigned n = 0;
    httpd_conn_t *c;
    while ((c = list_first_entry(&h->conns, httpd_conn_t, node)) && c->deadline_ms <= now_ms) {
        httpd_cut(c);
        n++;
    }
    return n;
}

static void *httpd_sweeper_main(void *arg)
{
    httpd_t *h = arg;
    pthread_mutex_lock(&h->mu);
    while (!h->stopping) {
        struct timespec until = clock_deadline_ts(clock_now_ms() + HTTPD_SWEEP_MS);
        pthread_cond_timedwait(&h->wake, &h->mu, &until);
        unsigned n = httpd_sweep(h, clock_now_ms());
        if (n)
            LOG_LIMITED(LL_WARN, "http server: closed %u connection(s) whose request was not done within %d ms", n,
                        HTTPD_DEADLINE_MS);
    }
    pthread_mutex_unlock(&h->mu);
    return NULL;
}

/* The listening socket for addr:port (IPv4 or IPv6; "::" takes IPv4 clients too, and is 0.0.0.0 on a host without
 * IPv6). Returns it, with where set to "addr:port" or "[addr]:port"; or -1 with one line in err. */
static int httpd_listen(const char *addr, int port, char *where, size_t wherelen, char *err, size_t errlen)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    struct sockaddr_in *in4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
    socklen_t len;
    if (inet_pton(AF_INET, addr, &in4->sin_addr) == 1) {
        in4->sin_family = AF_INET;
        in4->sin_port = htons((uint16_t)port);
        len = sizeof *in4;
        snprintf(where, wherelen, "%s:%d", addr, port);
    } else if (inet_pton(AF_INET6, addr, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons((uint16_t)port);
        len = sizeof *in6;
        snprintf(where, wherelen, "[%s]:%d", addr, port);
    } else {
        snprintf(err, errlen, "invalid value for --http-addr (CHUNKD_HTTP_ADDR): '%s' is not an IPv4 or IPv6 address",
                 addr);
        return -1;
    }
    bool any6 = ss.ss_family == AF_INET6 && IN6_IS_ADDR_UNSPECIFIED(&in6->sin6_addr);
    /* The socket is bound here, not by libmicrohttpd, so that a failure has its own errno and one clear line. */
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0 && any6 && errno == EAFNOSUPPORT) {
        LOG(LL_WARN, "no IPv6 on this host: serving /healthz on 0.0.0.0 (IPv4) instead of [::]");
        return httpd_listen("0.0.0.0", port, where, wherelen, err, errlen);
    }
    int on = 1, v6only = !any6; /* [::] is dual-stack whatever net.ipv6.bindv6only says */
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on) ||
        (ss.ss_family == AF_INET6 && setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, sizeof v6only)) ||
        bind(fd, (struct sockaddr *)&ss, len) || listen(fd, SOMAXCONN)) {
        snprintf(err, errlen, "cannot serve /healthz on %s: %s", where, httpd_bind_reason(errno));
        if (fd >= 0) close(fd);
        return -1;
    }
    return fd;
}

httpd_t *httpd_start(const char *addr, int port, const httpd_probe_t *probe, char *err, size_t errlen)
{
    httpd_t *h = xcalloc(1, sizeof *h);
    int fd = httpd_listen(addr, port, h->where, sizeof h->where, err, errlen);
    if (fd < 0) {
        free(h);
        return NULL;
    }
    h->probe = *probe;
    pthread_mutex_init(&h->mu, NULL);
    clock_cond_init(&h->wake);
    list_init(&h->conns);
    for (size_t i = 0; i < HTTPD_ADDRESS_BUCKETS; i++) list_init(&h->addrs[i]);
    /* An internal polling thread implies MHD_USE_ITC (libmicrohttpd wakes its threads through it on stop). The
     * logger comes first, or libmicrohttpd prints its messages about the options before it to stderr itself. */
    h->daemon = MHD_start_daemon(
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_ITC | MHD_USE_ERROR_LOG, (uint16_t)port, NULL, NULL,
        httpd_handle, h, MHD_OPTION_EXTERNAL_LOGGER, httpd_log, NULL, MHD_OPTION_LISTEN_SOCKET, (MHD_socket)fd,
        MHD_OPTION_THREAD_POOL_SIZE, (unsigned int)HTTPD_THREADS, MHD_OPTION_CONNECTION_LIMIT,
        (unsigned int)HTTPD_CONNECTION_LIMIT, MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)HTTPD_CONNECTION_MEMORY,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)HTTPD_IDLE_TIMEOUT_S, MHD_OPTION_NOTIFY_CONNECTION,
        httpd_notify_connection, h, MHD_OPTION_NOTIFY_COMPLETED, httpd_request_done, h, MHD_OPTION_END);
    if (!h->daemon) {
        snprintf(err, errlen, "cannot serve /healthz on %s: libmicrohttpd failed to start (%s)", h->where,
                 errno ? strerror(errno) : "no reason given");
        httpd_stop(h); /* fd is left alone: whether libmicrohttpd closed it on this path depends on its version */
        return NULL;
    }
    int rc = pthread_create(&h->sweeper, NULL, httpd_sweeper_main, h);
    if (rc) {
        snprintf(err, errlen, "cannot serve /healthz on %s: cannot start a thread (%s)", h->where, strerror(rc));
        httpd_stop(h);
        return NULL;
    }
    h->sweeper_started = true;
    return h;
}

const char *httpd_where(const httpd_t *h) { return h->where; }

void httpd_stop(httpd_t *h)
{
    if (!h) return;
    if (h->sweeper_started) { /* first, so that no socket is shut down while libmicrohttpd closes them */
        pthread_mutex_lock(&h->mu);
        h->stopping = true;
        pthread_cond_signal(&h->wake);
        pthread_mutex_unlock(&h->mu);
        pthread_join(h->sweeper, NULL);
    }
    if (h->daemon) MHD_stop_daemon(h->daemon); /* closes every connection: each one's node is freed */
    assert(list_empty(&h->conns));
    pthread_cond_destroy(&h->wake);
    pthread_mutex_destroy(&h->mu);
    free(h);
}
