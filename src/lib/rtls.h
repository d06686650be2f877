/* rtls: a TLS client stream for hiredis 0.14, which has neither TLS nor I/O hooks.
 *
 * rtls_connect() opens TCP to the server, makes the TLS handshake (OpenSSL) and checks the server's certificate,
 * then hands the caller one end of a socketpair: a plain connected descriptor for redisConnectFd(). A pump thread
 * of its own (one per connection) relays bytes between the other end and the TLS connection. When the caller
 * closes its descriptor the pump sends close_notify and ends; when the server closes or the TLS connection fails,
 * the pump hands over what it has, then closes its end: the caller reads EOF. rtls_close() joins the pump and
 * frees everything, so no thread or descriptor outlives the connection. Every wait (connect, handshake, the first
 * reply) is bounded by the timeout given. Messages never contain key material. */
#ifndef CHUNKD_RTLS_H
#define CHUNKD_RTLS_H

#include <stdbool.h>
#include <stddef.h>

/* What every connection of the process trusts and shows (borrowed strings, read only by rtls_ctx_new). */
typedef struct rtls_opts {
    const char *ca_file;   /* PEM CAs to trust; NULL: the system's (SSL_CTX_set_default_verify_paths) */
    const char *cert_file; /* PEM client certificate (chain) for mutual TLS; NULL: none */
    const char *key_file;  /* its PEM private key; given with cert_file */
    bool insecure;         /* no verification of the server at all */
} rtls_opts_t;

/* Process-wide and immutable once made: safe to use from any thread. */
typedef struct rtls_ctx rtls_ctx_t;
/* One TLS connection and its pump thread. */
typedef struct rtls_conn rtls_conn_t;

/* Loads the trust store and the client certificate. Returns the context, or NULL with a one-line reason in err
 * naming the file that could not be used. */
rtls_ctx_t *rtls_ctx_new(const rtls_opts_t *opts, char *err, size_t errlen);
void rtls_ctx_free(rtls_ctx_t *ctx);

/* Connects to host:port within timeout_ms (TCP connect, handshake, and under TLS 1.3 the server's verdict on a
 * client certificate it asked for, which comes only after the handshake), verifying the certificate against host (its
 * IP address SANs when host is an IP literal, else its DNS names; SNI for names only). Returns the connection
 * and sets *fd to the caller's end (the caller owns it: hand it to redisConnectFd, which closes it in redisFree);
 * or NULL with a one-line reason in err ("TLS: certificate verify failed (...)", "Connection refused", ...). */
rtls_conn_t *rtls_connect(const rtls_ctx_t *ctx, const char *host, int port, long long timeout_ms, int *fd,
                          char *err, size_t errlen);

/* Call after the caller's end is closed: waits for the pump (it ends as soon as it sees that close) and frees the
 * connection. NULL: nothing. */
void rtls_close(rtls_conn_t *conn);

#endif
