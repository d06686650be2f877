/* rtls: see rtls.h.
 *
 * The pump of a connection owns its SSL object, its TCP socket and its end of the socketpair; after rtls_connect()
 * returns nothing else touches them until rtls_close() has joined the pump. The pump closes both sockets as it
 * ends; rtls_close() frees the rest. Both of the pump's buffers are capped
 * (RTLS_BUF_BYTES): it reads from one side only while there is room to keep what it reads, so a slow reader on
 * either side holds the other back instead of growing memory. */
#include "rtls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "clock.h"
#include "xalloc.h"

#define RTLS_BUF_BYTES ((size_t)64 * 1024) /* each direction's buffer in the pump */
#define RTLS_CERT_VERDICT_MS 1000  /* TLS 1.3: longest wait for the server's verdict on our certificate */

/* What the callbacks saw of one handshake (the SSL's app data while rtls_handshake runs; NULL after). */
typedef struct rtls_verdict {
    bool cert_requested; /* the server asked for a client certificate */
    bool ticket_seen;    /* a session ticket came: the server accepted us */
} rtls_verdict_t;

struct rtls_ctx {
    SSL_CTX *ssl_ctx;
    bool client_cert; /* a client certificate is configured (for the hint when the server wants one) */
};

struct rtls_conn {
    SSL *ssl;
    int tcp_fd;             /* to the server */
    int pump_fd;            /* the pump's end of the socketpair (non-blocking) */
    pthread_t thread;
    char up[RTLS_BUF_BYTES];   /* read from the caller, not yet taken by SSL_write */
    size_t up_len;
    char down[RTLS_BUF_BYTES]; /* decrypted from the server, not yet written to the caller */
    size_t down_len;
};

/* err = prefix + OpenSSL's first queued reason (the queue is then cleared). */
static void rtls_ssl_err(char *err, size_t errlen, const char *prefix)
{
    unsigned long code = ERR_get_error();
    const char *reason = code ? ERR_reason_error_string(code) : NULL;
    snprintf(err, errlen, "%s (%s)", prefix, reason ? reason : "no detail from OpenSSL");
    ERR_clear_error();
}

/* OpenSSL calls this when the server asks for a client certificate. */
static int rtls_on_cert_request(SSL *ssl, void *arg)
{
    (void)arg;
    rtls_verdict_t *v = SSL_get_app_data(ssl);
    if (v) v->cert_requested = true;
    return 1;
}

/* OpenSSL calls this for each session ticket; the session is not kept (0: not taken). */
static int rtls_on_ticket(SSL *ssl, SSL_SESSION *session)
{
    (void)session;
    rtls_verdict_t *v = SSL_get_app_data(ssl);
    if (v) v->ticket_seen = true;
    return 0;
}

/* An encrypted private key is refused instead of OpenSSL asking for its pass phrase on the terminal. */
static int rtls_no_pass_phrase(char *buf, int size, int rwflag, void *arg)
{
    (void)buf, (void)size, (void)rwflag, (void)arg;
    return 0;
}

rtls_ctx_t *rtls_ctx_new(const rtls_opts_t *o, char *err, size_t errlen)
{
    ERR_clear_error();
    SSL_CTX *sc = SSL_CTX_new(TLS_client_method());
    if (!sc) {
        rtls_ssl_err(err, errlen, "cannot create a TLS context");
        return NULL;
    }
    SSL_CTX_set_min_proto_version(sc, TLS1_2_VERSION);
    SSL_CTX_set_mode(sc, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    SSL_CTX_set_default_passwd_cb(sc, rtls_no_pass_phrase);
    char what[4200];
    if (o->ca_file ? SSL_CTX_load_verify_locations(sc, o->ca_file, NULL) != 1
                   : SSL_CTX_set_default_verify_paths(sc) != 1) {
        if (o->ca_file) snprintf(what, sizeof what, "CA file %s: no usable certificate", o->ca_file);
        else snprintf(what, sizeof what, "cannot load the system's CA certificates");
        goto fail;
    }
    if (o->cert_file) {
        if (SSL_CTX_use_certificate_chain_file(sc, o->cert_file) != 1) {
            snprintf(what, sizeof what, "client certificate file %s: no usable certificate", o->cert_file);
            goto fail;
        }
        if (!o->key_file || SSL_CTX_use_PrivateKey_file(sc, o->key_file, SSL_FILETYPE_PEM) != 1) {
            snprintf(what, sizeof what, "client key file %s: no usable private key", o->key_file ? o->key_file : "-");
            goto fail;
        }
        if (SSL_CTX_check_private_key(sc) != 1) {
            snprintf(what, sizeof what, "client key file %s does not match the certificate of %s", o->key_file,
                     o->cert_file);
            goto fail;
        }
    }
    SSL_CTX_set_verify(sc, o->insecure ? SSL_VERIFY_NONE : SSL_VERIFY_PEER, NULL);
    SSL_CTX_set_cert_cb(sc, rtls_on_cert_request, NULL);
    SSL_CTX_set_session_cache_mode(sc, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(sc, rtls_on_ticket);
    rtls_ctx_t *ctx = xcalloc(1, sizeof *ctx);
    ctx->ssl_ctx = sc;
    ctx->client_cert = o->cert_file != NULL;
    return ctx;
fail:
    rtls_ssl_err(err, errlen, what);
    SSL_CTX_free(sc);
    return NULL;
}

void rtls_ctx_free(rtls_ctx_t *ctx)
{
    if (!ctx) return;
    SSL_CTX_free(ctx->ssl_ctx);
    free(ctx);
}

/* Waits until fd is ready for events or the deadline passes. Returns 1 (ready), 0 (deadline) or -1 (errno). */
static int rtls_wait(int fd, short events, int64_t deadline_ms)
{
    for (;;) {
        int64_t left = deadline_ms - clock_now_ms();
        if (left <= 0) return 0;
        struct pollfd p = {.fd = fd, .events = events};
        int n = poll(&p, 1, left > INT32_MAX ? INT32_MAX : (int)left);
        if (n > 0) return 1;
        if (n < 0 && errno != EINTR) return -1;
    }
}

/* A non-blocking TCP connection to host:port (each address in turn), with keepalive. Returns the socket, or -1
 * with err written as hiredis words it. */
static int rtls_tcp_connect(const char *host, int port, int64_t deadline_ms, long long timeout_ms, char *err,
                            size_t errlen)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res = NULL;
    char service[16];
    snprintf(service, sizeof service, "%d", port);
    int gai = getaddrinfo(host, service, &hints, &res);
    if (gai) {
        snprintf(err, errlen, "cannot resolve %s: %s", host, gai_strerror(gai));
        return -1;
    }
    int fd = -1, last = ECONNREFUSED;
    for (const struct addrinfo *ai = res; ai && fd < 0; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0) {
            last = errno;
            continue;
        }
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) break;
        last = errno;
        if (last == EINPROGRESS) {
            int ready = rtls_wait(fd, POLLOUT, deadline_ms);
            socklen_t len = sizeof last;
            if (ready > 0 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &last, &len) == 0 && last == 0) break;
            if (ready == 0) last = ETIMEDOUT;
            if (ready < 0) last = errno;
        }
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0) {
        if (last == ETIMEDOUT) snprintf(err, errlen, "Connection timed out after %lld ms", timeout_ms);
        else snprintf(err, errlen, "%s", strerror(last));
        return -1;
    }
    int on = 1;
    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof on);
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
    return fd;
}

static bool rtls_is_ip(const char *host)
{
    unsigned char buf[sizeof(struct in6_addr)];
    return inet_pton(AF_INET, host, buf) == 1 || inet_pton(AF_INET6, host, buf) == 1;
}

/* Names what went wrong in a handshake or the first exchange (ret: what the SSL call returned). */
static void rtls_failure(const rtls_ctx_t *ctx, SSL *ssl, int ret, const char *host, char *err, size_t errlen)
{
    int e = SSL_get_error(ssl, ret);
    unsigned long code = ERR_peek_error();
    int reason = ERR_GET_LIB(code) == ERR_LIB_SSL ? ERR_GET_REASON(code) : 0;
    long verify = SSL_get_verify_result(ssl);
    if (reason == SSL_R_CERTIFICATE_VERIFY_FAILED && verify != X509_V_OK) {
        if (verify == X509_V_ERR_HOSTNAME_MISMATCH || verify == X509_V_ERR_IP_ADDRESS_MISMATCH)
            snprintf(err, errlen, "TLS: host name mismatch: the server's certificate is not for %s", host);
        else
            snprintf(err, errlen, "TLS: certificate verify failed (%s)", X509_verify_cert_error_string(verify));
    } else if (reason == SSL_R_WRONG_VERSION_NUMBER || reason == SSL_R_PACKET_LENGTH_TOO_LONG ||
               reason == SSL_R_HTTP_REQUEST || reason == SSL_R_RECORD_LENGTH_MISMATCH) {
        snprintf(err, errlen, "TLS: the server did not speak TLS (is it a plain-text port?)");
    } else if (reason == SSL_R_TLSV13_ALERT_CERTIFICATE_REQUIRED ||
               (!ctx->client_cert && reason == SSL_R_SSLV3_ALERT_HANDSHAKE_FAILURE)) {
        snprintf(err, errlen, "TLS: the server requires a client certificate (%s)%s", ERR_reason_error_string(code),
                 ctx->client_cert ? "" : ": give --redis-cert-file and --redis-key-file");
    } else if (ctx->client_cert && (reason == SSL_R_TLSV1_ALERT_UNKNOWN_CA || reason == SSL_R_SSLV3_ALERT_BAD_CERTIFICATE ||
                                    reason == SSL_R_SSLV3_ALERT_CERTIFICATE_UNKNOWN ||
                                    reason == SSL_R_TLSV1_ALERT_ACCESS_DENIED)) {
        snprintf(err, errlen, "TLS: the server refused the client certificate (%s)", ERR_reason_error_string(code));
    } else if (code) {
        snprintf(err, errlen, "TLS: %s", ERR_reason_error_string(code));
    } else if (e == SSL_ERROR_ZERO_RETURN || (e == SSL_ERROR_SYSCALL && errno == 0)) {
        snprintf(err, errlen, "TLS: the server closed the connection");
    } else {
        snprintf(err, errlen, "TLS: %s", e == SSL_ERROR_SYSCALL ? strerror(errno) : "connection failed");
    }
    ERR_clear_error();
}

/* Runs op (an SSL call that may want to read or write) on the non-blocking socket until it succeeds or the
 * deadline passes. Returns op's positive result, or -1 with err. */
typedef int (*rtls_op_t)(SSL *ssl, void *buf, int len);
static int rtls_op_connect(SSL *ssl, void *buf, int len) { return (void)buf, (void)len, SSL_connect(ssl); }

static int rtls_until(const rtls_ctx_t *ctx, SSL *ssl, int fd, rtls_op_t op, void *buf, int len, int64_t deadline_ms,
                      const char *host, long long timeout_ms, char *err, size_t errlen)
{
    for (;;) {
        ERR_clear_error();
        errno = 0;
        int r = op(ssl, buf, len);
        if (r > 0) return r;
        int e = SSL_get_error(ssl, r);
        if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
            rtls_failure(ctx, ssl, r, host, err, errlen);
            return -1;
        }
        int ready = rtls_wait(fd, e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, deadline_ms);
        if (ready > 0) continue;
        if (ready < 0) snprintf(err, errlen, "TLS: %s", strerror(errno));
        else if (BIO_number_read(SSL_get_rbio(ssl)) == 0)
            snprintf(err, errlen, "TLS: no answer to the TLS handshake within %lld ms: the server did not speak TLS "
                     "(is it a plain-text port?)", timeout_ms);
        else snprintf(err, errlen, "TLS: no answer within %lld ms", timeout_ms);
        return -1;
    }
}

/* The handshake. Under TLS 1.3 a server that asked for a client certificate judges it only after the client's
 * side of the handshake is over: then the first thing it sends is either a session ticket (accepted) or an alert
 * (refused, and it closes). That answer is awaited here, for up to RTLS_CERT_VERDICT_MS (a server that sends no
 * ticket), before anything is written: a command written first would make the server's close a reset that
 * destroys its alert. Returns 0, or -1 with err. */
static int rtls_handshake(const rtls_ctx_t *ctx, SSL *ssl, int fd, const char *host, int64_t deadline_ms,
                          long long timeout_ms, char *err, size_t errlen)
{
    rtls_verdict_t verdict = {0};
    SSL_set_app_data(ssl, &verdict);
    int rc = 0;
    if (rtls_until(ctx, ssl, fd, rtls_op_connect, NULL, 0, deadline_ms, host, timeout_ms, err, errlen) < 0) rc = -1;
    if (rc == 0 && verdict.cert_requested && SSL_version(ssl) == TLS1_3_VERSION) {
        int64_t wait_until = clock_now_ms() + RTLS_CERT_VERDICT_MS;
        if (wait_until > deadline_ms) wait_until = deadline_ms;
        char byte;
        while (!verdict.ticket_seen && rc == 0) {
            ERR_clear_error();
            errno = 0;
            int n = SSL_read(ssl, &byte, 1);
            int e = SSL_get_error(ssl, n);
            if (n > 0) {
                snprintf(err, errlen, "TLS: the server spoke before it was asked (not a Redis server?)");
                rc = -1;
            } else if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
                rtls_failure(ctx, ssl, n, host, err, errlen);
                rc = -1;
            } else if (!verdict.ticket_seen && rtls_wait(fd, e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT,
                                                         wait_until) <= 0) {
                break; /* no ticket: taken as accepted */
            }
        }
    }
    SSL_set_app_data(ssl, NULL);
    return rc;
}

/* Relays bytes until the caller closes its end (then close_notify is sent) or the server's side ends (then what
 * came before is handed over and the caller reads EOF). */
static void *rtls_pump(void *arg)
{
    rtls_conn_t *t = arg;
    bool caller_closed = false, server_closed = false;
    short ssl_write_wants = POLLOUT, ssl_read_wants = POLLIN;
    int retry_len = 0; /* a write to retry must be repeated with the same length */
    while (!caller_closed) {
        bool progress = false;
        if (t->up_len < RTLS_BUF_BYTES) {
            ssize_t n = read(t->pump_fd, t->up + t->up_len, RTLS_BUF_BYTES - t->up_len);
            if (n > 0) t->up_len += (size_t)n, progress = true;
            else if (n == 0 || (errno != EAGAIN && errno != EINTR)) caller_closed = true;
        }
        if (caller_closed) break;
        if (t->up_len > 0 && !server_closed) {
            int len = retry_len ? retry_len : (int)t->up_len;
            int n = SSL_write(t->ssl, t->up, len);
            if (n > 0) {
                memmove(t->up, t->up + n, t->up_len - (size_t)n);
                t->up_len -= (size_t)n;
                retry_len = 0;
                progress = true;
            } else {
                int e = SSL_get_error(t->ssl, n);
                if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
                    retry_len = len;
                    ssl_write_wants = e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT;
                } else {
                    server_closed = true;
                }
            }
        }
        if (!server_closed && t->down_len < RTLS_BUF_BYTES) {
            int n = SSL_read(t->ssl, t->down + t->down_len, (int)(RTLS_BUF_BYTES - t->down_len));
            if (n > 0) {
                t->down_len += (size_t)n;
                progress = true;
            } else {
                int e = SSL_get_error(t->ssl, n);
                if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
                    ssl_read_wants = e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT;
                else
                    server_closed = true;
            }
        }
        if (t->down_len > 0) {
            ssize_t n = write(t->pump_fd, t->down, t->down_len);
            if (n > 0) {
                memmove(t->down, t->down + n, t->down_len - (size_t)n);
                t->down_len -= (size_t)n;
                progress = true;
            } else if (n < 0 && errno != EAGAIN && errno != EINTR) {
                caller_closed = true;
            }
        }
        if (server_closed && t->down_len == 0) break; /* the caller has it all: closing our end is its EOF */
        if (progress) continue;
        struct pollfd p[2] = {
            {.fd = t->pump_fd,
             .events = (short)((t->up_len < RTLS_BUF_BYTES ? POLLIN : 0) | (t->down_len > 0 ? POLLOUT : 0))},
            {.fd = t->tcp_fd,
             .events = (short)((t->up_len > 0 && !server_closed ? ssl_write_wants : 0) |
                               (!server_closed && t->down_len < RTLS_BUF_BYTES ? ssl_read_wants : 0))},
        };
        if (p[1].events == 0) p[1].fd = -1; /* nothing to do there: its hang-up must not wake us in a loop */
        if (poll(p, 2, -1) < 0 && errno != EINTR) break;
        if (p[0].revents & (POLLHUP | POLLERR)) caller_closed = true;
    }
    if (caller_closed && !server_closed) SSL_shutdown(t->ssl); /* close_notify, once: nobody waits for the answer */
    /* Both sockets now, not at rtls_close(): a connection its owner leaves idle after the server closed it then
     * holds only the owner's descriptor, as a plain TCP connection would. */
    close(t->tcp_fd);
    close(t->pump_fd);
    ERR_clear_error();
    OPENSSL_thread_stop();
    return NULL;
}

rtls_conn_t *rtls_connect(const rtls_ctx_t *ctx, const char *host, int port, long long timeout_ms, int *fd,
                          char *err, size_t errlen)
{
    int64_t deadline_ms = clock_now_ms() + timeout_ms;
    int tcp = rtls_tcp_connect(host, port, deadline_ms, timeout_ms, err, errlen);
    if (tcp < 0) return NULL;
    ERR_clear_error();
    SSL *ssl = SSL_new(ctx->ssl_ctx);
    int sp[2] = {-1, -1};
    if (!ssl || SSL_set_fd(ssl, tcp) != 1) {
        rtls_ssl_err(err, errlen, "TLS: cannot set up the connection");
        goto fail;
    }
    if (rtls_is_ip(host)) {
        X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), host); /* the certificate's IP address SANs */
    } else {
        SSL_set_tlsext_host_name(ssl, host); /* SNI, for names only (RFC 6066) */
        SSL_set1_host(ssl, host);
    }
    if (rtls_handshake(ctx, ssl, tcp, host, deadline_ms, timeout_ms, err, errlen)) goto fail;
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp)) {
        snprintf(err, errlen, "TLS: socketpair: %s", strerror(errno));
        goto fail;
    }
    fcntl(sp[1], F_SETFL, fcntl(sp[1], F_GETFL) | O_NONBLOCK);
    rtls_conn_t *t = xmalloc(sizeof *t);
    t->ssl = ssl;
    t->tcp_fd = tcp;
    t->pump_fd = sp[1];
    t->up_len = t->down_len = 0;
    int rc = pthread_create(&t->thread, NULL, rtls_pump, t);
    if (rc) {
        snprintf(err, errlen, "TLS: cannot start its thread: %s", strerror(rc));
        free(t);
        goto fail;
    }
    *fd = sp[0];
    return t;
fail:
    if (sp[0] >= 0) close(sp[0]), close(sp[1]);
    SSL_free(ssl);
    close(tcp);
    return NULL;
}

void rtls_close(rtls_conn_t *t)
{
    if (!t) return;
    pthread_join(t->thread, NULL);
    SSL_free(t->ssl);
    free(t);
}
