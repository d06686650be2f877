/* httpd: see httpd.h. */
#include "httpd.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "dynbuf.h"
#include "log.h"
#include "metrics.h"
#include "xalloc.h"

#define HTTPD_CONNECTION_LIMIT 64
#define HTTPD_IDLE_TIMEOUT_S 10

struct httpd {
    struct MHD_Daemon *daemon;
    httpd_probe_t probe;
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

httpd_t *httpd_start(const char *addr, int port, const httpd_probe_t *probe, char *err, size_t errlen)
{
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, addr, &sa.sin_addr) != 1) {
        snprintf(err, errlen, "invalid value for --http-addr (CHUNKD_HTTP_ADDR): '%s' is not an IPv4 address", addr);
        return NULL;
    }
    /* The socket is bound here, not by libmicrohttpd, so that a failure has its own errno and one clear line. */
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    int on = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on) ||
        bind(fd, (struct sockaddr *)&sa, sizeof sa) || listen(fd, SOMAXCONN)) {
        snprintf(err, errlen, "cannot serve /healthz on %s:%d: %s", addr, port, httpd_bind_reason(errno));
        if (fd >= 0) close(fd);
        return NULL;
    }
    httpd_t *h = xcalloc(1, sizeof *h);
    h->probe = *probe;
    h->daemon = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_ERROR_LOG, (uint16_t)port,
                                 NULL, NULL, httpd_handle, h, MHD_OPTION_LISTEN_SOCKET, (MHD_socket)fd,
                                 MHD_OPTION_EXTERNAL_LOGGER, httpd_log, NULL,
                                 MHD_OPTION_CONNECTION_LIMIT, (unsigned int)HTTPD_CONNECTION_LIMIT,
                                 MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)HTTPD_IDLE_TIMEOUT_S, MHD_OPTION_END);
    if (!h->daemon) {
        snprintf(err, errlen, "cannot serve /healthz on %s:%d: libmicrohttpd failed to start (%s)", addr, port,
                 errno ? strerror(errno) : "no reason given");
        free(h); /* fd is left alone: whether libmicrohttpd closed it on this path depends on its version */
        return NULL;
    }
    return h;
}

void httpd_stop(httpd_t *h)
{
    if (!h) return;
    MHD_stop_daemon(h->daemon);
    free(h);
}
