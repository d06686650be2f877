/* http_request: what the http handler sends, without sending it: its settings read once (http_config_new) and an
 * item turned into a request (http_request_build) under the rules for untrusted items. No transfer happens here
 * (libcurl is used only to parse URLs and hold header lists), so it is unit-tested and fuzzed on its own.
 *
 * Rules: an item names a method, a path joined to --base-url (without "." or ".." segments, raw or
 * percent-encoded, so it stays under the base's path), a query, headers and a body; an absolute "url" is accepted
 * only for a host and port in --allow-hosts (an entry without a port allows the scheme's default port only), and
 * the final URL must still name them. Headers that
 * frame the request (Host, Content-Length, ...) and the names of secret headers cannot be set by an item; secret
 * headers go only to --base-url, never to an item's absolute url; every request carries an Idempotency-Key
 * derived from the queue and the item id (unless --no-idempotency-key).
 *
 * Templates: with --path, --query, --body-field or --body-from-item the item is a plain record and the request is
 * built from its fields: "{name}" (or "{a.b}", a nested field) in --path and --query is replaced by the field's
 * value (a string, number or boolean), percent-encoded (all but letters, digits and "-._~"), so a value stays
 * inside its path segment or query value: it cannot add a segment or a parameter, nor reach the host. A missing
 * field, one of another type, or a value that makes a "." or ".." segment fails the item with a message naming
 * the field; no request is made. -H/--header adds headers that are not secret, to every request, under the same
 * rules as an item's own headers. */
#ifndef CHUNKD_HTTP_REQUEST_H
#define CHUNKD_HTTP_REQUEST_H

#include <curl/curl.h>
#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "settings.h"

#define HTTP_HEADER_LINE_MAX 8192
#define HTTP_SECRET_HEADERS_MAX 64

/* Read-only once built; shared by every loop. */
typedef struct http_config {
    const settings_t *settings;
    char *base_url;                  /* without a trailing '/'; NULL: absolute urls only */
    char *base_host;                 /* host of base_url */
    char **allow_hosts;              /* lowercase hosts ("[v6]" in brackets, as libcurl writes them) */
    long *allow_ports;               /* each one's port; 0: only the scheme's default (80, 443) */
    size_t n_allow_hosts;
    char **keep_headers;             /* lowercase */
    size_t n_keep_headers;
    char **secret_headers;           /* "Name: value" */
    char **secret_names;             /* lowercase names of the secret headers */
    size_t n_secret;
    bool retry_status[600];          /* statuses that are retried */
    char **plain_headers;            /* -H/--header: "Name: value", not secret */
    size_t n_plain;
    bool templated;                  /* --path, --query or a body option: items are plain records */
    bool env_proxy;                  /* a proxy variable is set: libcurl reads them on every call */
} http_config_t;

/* Reads the http handler's settings from s (borrowed: must outlive the config), the secret headers from
 * CHUNKD_HTTP_HEADERS and --header-file included. Returns NULL with the reason in err (naming the setting, or the
 * source and line of a bad header; never a secret value). */
http_config_t *http_config_new(const settings_t *s, char *err, size_t errlen);
void http_config_free(http_config_t *c);

/* Space-separated words of a secret header's value at least this long are masked on their own too (an API may
 * echo the token without its scheme). */
#define HTTP_SECRET_WORD_MIN 8
/* Overwrites with '*' every occurrence in buf[0..len) of a secret header's value, and of each of its words of at
 * least HTTP_SECRET_WORD_MIN bytes: what a response echoes of them never reaches a result. Pure. */
void http_config_mask_secrets(const http_config_t *c, char *buf, size_t len);

typedef struct http_request {
    char *url;
    char *method;               /* NULL: GET, or POST with a body */
    char *body;                 /* NULL: none */
    size_t body_len;
    struct curl_slist *headers; /* "Name: value" lines */
} http_request_t;

/* Fills req (owned by the caller afterwards: http_request_free) from the item's parsed value; id_json is the item's
 * id as JSON text. Returns NULL, or why the item cannot be sent (a constant or why[]; nothing to free then, req is
 * empty). */
const char *http_request_build(const http_config_t *c, const json_t *item, const char *id_json, http_request_t *req,
                               char *why, size_t whylen);
void http_request_free(http_request_t *req);

/* An HTTP token as the name and a value without CR, LF or NUL, within the size caps. */
bool http_header_ok(const char *name, size_t name_len, const char *value, size_t value_len);
/* Returns the lowercased host of url (malloc'd), or NULL. */
char *http_url_host(const char *url);

#endif
