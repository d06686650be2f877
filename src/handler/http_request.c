/* http_request: see http_request.h. */
#include "http_request.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "dynbuf.h"
#include "xalloc.h"

/* ---- settings ---- */


static void free_list(char **list, size_t n)
{
    for (size_t i = 0; i < n; i++) free(list[i]);
    free(list);
}

/* Masks every occurrence of needle[0..n) in buf[0..len). */
static void mask_all(char *buf, size_t len, const char *needle, size_t n)
{
    if (n == 0) return;
    for (char *p = buf; (size_t)(p - buf) + n <= len && (p = memmem(p, len - (size_t)(p - buf), needle, n));) {
        memset(p, '*', n);
        p += n;
    }
}

void http_config_mask_secrets(const http_config_t *c, char *buf, size_t len)
{
    for (size_t i = 0; i < c->n_secret; i++) {
        const char *v = strchr(c->secret_headers[i], ':');
        if (!v) continue;
        v++;
        while (*v == ' ' || *v == '\t') v++;
        mask_all(buf, len, v, strlen(v));
        for (const char *w = v; *w;) {
            size_t n = strcspn(w, " \t");
            if (n >= HTTP_SECRET_WORD_MIN) mask_all(buf, len, w, n);
            w += n;
            w += strspn(w, " \t");
        }
    }
}

void http_config_free(http_config_t *c)
{
    if (!c) return;
    free(c->base_url);
    free(c->base_host);
    free_list(c->allow_hosts, c->n_allow_hosts);
    free(c->allow_ports);
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
bool http_header_ok(const char *name, size_t name_len, const char *value, size_t value_len)
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
            if (!colon || !http_header_ok(p, name_len, value, value_len)) {
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

/* Splits the --allow-hosts entry e (lowercase) into its host, in place, and port: "host", "host:port",
 * "[v6]" or "[v6]:port" (*port 0 when none is named). Returns 0, or -1 when e is none of these. */
static int parse_allow_entry(char *e, long *port)
{
    char *colon;
    *port = 0;
    if (e[0] == '[') {
        char *close = strchr(e, ']');
        if (!close || close == e + 1 || (close[1] && close[1] != ':')) return -1;
        colon = close[1] ? close + 1 : NULL;
    } else {
        colon = strchr(e, ':');
        if (colon == e || (colon && strchr(colon + 1, ':'))) return -1; /* a bare IPv6 address needs brackets */
    }
    if (!colon) return 0;
    char *end;
    errno = 0;
    if (!isdigit((unsigned char)colon[1])) return -1;
    *port = strtol(colon + 1, &end, 10);
    if (*end || errno || *port < 1 || *port > 65535) return -1;
    *colon = '\0';
    return 0;
}

static int parse_allow_hosts(http_config_t *c, const char *text, char *err, size_t errlen)
{
    c->allow_hosts = split_list(text, &c->n_allow_hosts);
    c->allow_ports = xcalloc(c->n_allow_hosts + 1, sizeof *c->allow_ports);
    for (size_t i = 0; i < c->n_allow_hosts; i++) {
        char entry[256];
        snprintf(entry, sizeof entry, "%s", c->allow_hosts[i]);
        if (parse_allow_entry(c->allow_hosts[i], &c->allow_ports[i])) {
            snprintf(err, errlen, "invalid value for --allow-hosts (CHUNKD_ALLOW_HOSTS): '%s' is not a host, "
                     "host:port, [IPv6] or [IPv6]:port (port 1 to 65535)", entry);
            return -1;
        }
    }
    return 0;
}

char *http_url_host(const char *url)
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

http_config_t *http_config_new(const settings_t *s, char *err, size_t errlen)
{
    http_config_t *c = xcalloc(1, sizeof *c);
    c->settings = s;
    if (s->base_url) {
        c->base_url = xstrdup(s->base_url);
        size_t n = strlen(c->base_url);
        while (n && c->base_url[n - 1] == '/') c->base_url[--n] = '\0';
        c->base_host = http_url_host(c->base_url);
        if (!c->base_host) {
            snprintf(err, errlen, "invalid value for --base-url (CHUNKD_BASE_URL): not a URL with a host");
            goto fail;
        }
    }
    /* libcurl looks these up on every call; when none is set, telling it "no proxy" once is the same, cheaper. */
    static const char *const proxy_vars[] = {"http_proxy", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY",
                                             "no_proxy", "NO_PROXY"};
    for (size_t i = 0; i < sizeof proxy_vars / sizeof proxy_vars[0]; i++)
        if (getenv(proxy_vars[i])) c->env_proxy = true;
    if (parse_allow_hosts(c, s->allow_hosts, err, errlen)) goto fail;
    c->keep_headers = split_list(s->keep_headers, &c->n_keep_headers);
    if (parse_retry_statuses(c, s->retry_statuses, err, errlen)) goto fail;
    if (s->http_headers && add_secret_headers(c, s->http_headers, "CHUNKD_HTTP_HEADERS", err, errlen)) goto fail;
    if (s->header_file) {
        FILE *f = fopen(s->header_file, "r");
        if (!f) {
            snprintf(err, errlen, "cannot read --header-file %s: %s", s->header_file, strerror(errno));
            goto fail;
        }
        char buf[65536];
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        bool too_big = !feof(f);
        fclose(f);
        buf[n] = '\0';
        if (too_big) {
            snprintf(err, errlen, "--header-file %s is larger than %zu bytes", s->header_file, sizeof buf - 1);
            goto fail;
        }
        if (add_secret_headers(c, buf, s->header_file, err, errlen)) goto fail;
    }
    return c;
fail:
    http_config_free(c);
    return NULL;
}


/* ---- building a request from an item ---- */

/* The host (lowercase, malloc'd into *host) and port (the scheme's default when the URL names none) of an http
 * or https url. Returns 0, or -1 when url does not parse. */
static int url_target(const char *url, char **host, long *port, long *default_port)
{
    CURLU *u = curl_url();
    char *h = NULL, *p = NULL, *scheme = NULL;
    int rc = -1;
    if (curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK && curl_url_get(u, CURLUPART_HOST, &h, 0) == CURLUE_OK &&
        curl_url_get(u, CURLUPART_PORT, &p, CURLU_DEFAULT_PORT) == CURLUE_OK &&
        curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) == CURLUE_OK) {
        *host = xstrdup(h);
        lowercase(*host);
        *port = strtol(p, NULL, 10);
        *default_port = strcasecmp(scheme, "https") == 0 ? 443 : 80;
        rc = 0;
    }
    curl_free(h);
    curl_free(p);
    curl_free(scheme);
    curl_url_cleanup(u);
    return rc;
}

/* An entry that names no port allows only the scheme's default port. */
static bool target_allowed(const http_config_t *c, const char *host, long port, long default_port)
{
    for (size_t i = 0; i < c->n_allow_hosts; i++)
        if (strcmp(c->allow_hosts[i], host) == 0 && port == (c->allow_ports[i] ? c->allow_ports[i] : default_port))
            return true;
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

/* Appends the item's absolute "url" to url; *host gets its host (malloc'd) on success. Returns NULL, or an error
 * message (a constant or why[]). */
static const char *url_absolute(const http_config_t *c, const json_t *jurl, dynbuf_t *url, char **host, char *why,
                                size_t whylen)
{
    if (!json_is_string(jurl)) return "\"url\" must be a string";
    const char *u = json_string_value(jurl);
    if (strncmp(u, "http://", 7) != 0 && strncmp(u, "https://", 8) != 0) return "\"url\" must be http or https";
    char *h;
    long port, default_port;
    if (url_target(u, &h, &port, &default_port)) return "\"url\" is not a valid URL";
    if (!target_allowed(c, h, port, default_port)) {
        snprintf(why, whylen, "host %.200s port %ld of \"url\" is not in --allow-hosts (an entry without a port "
                 "allows only %ld for %s); no request was made", h, port, default_port,
                 default_port == 443 ? "https" : "http");
        free(h);
        return why;
    }
    if (dynbuf_addstr(url, u)) {
        free(h);
        return "\"url\" is too long";
    }
    *host = h;
    return NULL;
}

static int hex_value(char c)
{
    return isdigit((unsigned char)c) ? c - '0' : tolower((unsigned char)c) - 'a' + 10;
}

/* True when path, up to its query or fragment, holds a "." or ".." segment once percent-decoded, counting '/', '\\'
 * and their encodings (%2F, %5C) as separators: libcurl resolves raw ones against --base-url's path (RFC 3986
 * dot-segment removal), and a server or proxy that decodes the others may do the same. */
static bool path_has_dot_segment(const char *path)
{
    size_t seg_len = 0;
    bool only_dots = true;
    for (const char *p = path;;) {
        int c = (unsigned char)*p;
        size_t step = 1;
        if (c == '\0' || c == '?' || c == '#') c = -1;
        else if (c == '%' && isxdigit((unsigned char)p[1]) && isxdigit((unsigned char)p[2]))
            c = hex_value(p[1]) * 16 + hex_value(p[2]), step = 3;
        if (c == -1 || c == '/' || c == '\\') {
            if (seg_len >= 1 && seg_len <= 2 && only_dots) return true;
            if (c == -1) return false;
            seg_len = 0;
            only_dots = true;
        } else {
            seg_len++;
            only_dots = only_dots && c == '.';
        }
        p += step;
    }
}

/* Appends --base-url and the item's "path" (if any) to url. Returns NULL, or an error message. */
static const char *url_from_base(const http_config_t *c, const json_t *jpath, dynbuf_t *url)
{
    if (!c->base_url) return "item has no \"url\" and no --base-url is set";
    const char *path = "";
    if (jpath) {
        if (!json_is_string(jpath)) return "\"path\" must be a string";
        path = json_string_value(jpath);
        if (path[0] != '/') return "\"path\" must start with '/'";
        for (const char *p = path; *p; p++)
            if ((unsigned char)*p <= ' ' || *p == 0x7f) return "\"path\" must not contain spaces or control characters";
        if (path_has_dot_segment(path))
            return "\"path\" must not hold a \".\" or \"..\" segment (nor one percent-encoded, or between encoded "
                   "slashes): it would leave the path of --base-url; no request was made";
    }
    if (dynbuf_addstr(url, c->base_url) || dynbuf_addstr(url, path)) return "URL too long";
    return NULL;
}

/* Sets req->url from the item's "url" or "path", and its "query". Returns NULL, or an error message. */
static const char *request_url(const http_config_t *c, const json_t *item, http_request_t *req, char *why,
                               size_t whylen)
{
    json_t *jurl = json_object_get(item, "url");
    dynbuf_t url;
    dynbuf_init(&url, 65536);
    char *host = NULL; /* of an absolute "url": allowed */
    const char *error = jurl ? url_absolute(c, jurl, &url, &host, why, whylen)
                             : url_from_base(c, json_object_get(item, "path"), &url);
    if (!error) error = add_query(&url, json_object_get(item, "query"));
    /* The URL must still name the allowed host and port (a crafted path or query cannot move them). A URL built on
     * --base-url needs no parsing for that: what follows base_url starts with '/' (the path) or '?' (the query;
     * '&' only after a '?'), so the authority part, and with it the host, ends where base_url ends. */
    if (!error && host) {
        char *final_host = NULL;
        long port, default_port;
        if (url_target(url.data, &final_host, &port, &default_port) || strcmp(final_host, host) != 0 ||
            !target_allowed(c, final_host, port, default_port))
            error = "the URL built from the item changes its host or port";
        free(final_host);
    }
    free(host);
    if (error) {
        dynbuf_free(&url);
        return error;
    }
    req->url = dynbuf_take(&url, NULL);
    return NULL;
}

/* Sets req->method from the item's "method", if any. Returns NULL, or an error message. */
static const char *request_method(const json_t *jmethod, http_request_t *req)
{
    if (!jmethod) return NULL;
    if (!json_is_string(jmethod) || json_string_length(jmethod) == 0 || json_string_length(jmethod) > 16)
        return "\"method\" must be a short string";
    for (const char *p = json_string_value(jmethod); *p; p++)
        if (!isupper((unsigned char)*p)) return "\"method\" must be upper-case letters, like GET or POST";
    req->method = xstrdup(json_string_value(jmethod));
    return NULL;
}

/* Adds the item's "headers" to req; *has_content_type tells whether they set one. Returns NULL, or an error
 * message (a constant or why[]). */
static const char *request_item_headers(const http_config_t *c, json_t *jheaders, http_request_t *req,
                                        bool *has_content_type, char *why, size_t whylen)
{
    *has_content_type = false;
    if (!jheaders) return NULL;
    if (!json_is_object(jheaders)) return "\"headers\" must be an object of strings";
    const char *name;
    json_t *v;
    json_object_foreach(jheaders, name, v) {
        if (!json_is_string(v) || !http_header_ok(name, strlen(name), json_string_value(v), json_string_length(v)))
            return "\"headers\" must map valid header names to strings without line breaks";
        if (header_forbidden(c, name)) {
            snprintf(why, whylen, "header %.100s may not be set by an item", name);
            return why;
        }
        if (strcasecmp(name, "content-type") == 0) *has_content_type = true;
        char *line = xasprintf("%s: %s", name, json_string_value(v));
        req->headers = curl_slist_append(req->headers, line);
        free(line);
    }
    return NULL;
}

/* Sets req->body from the item's "body", if any: a string as it is, any other value as JSON (with a Content-Type
 * unless the item gave one). Returns NULL, or an error message. */
static const char *request_body(const json_t *jbody, bool has_content_type, http_request_t *req)
{
    if (!jbody) return NULL;
    if (json_is_string(jbody)) {
        req->body_len = json_string_length(jbody);
        req->body = xstrndup(json_string_value(jbody), req->body_len);
        return NULL;
    }
    req->body = json_dumps(jbody, JSON_COMPACT | JSON_ENCODE_ANY);
    if (!req->body) return "\"body\" cannot be encoded";
    req->body_len = strlen(req->body);
    if (!has_content_type) req->headers = curl_slist_append(req->headers, "Content-Type: application/json");
    return NULL;
}

/* Adds the headers chunkd sets itself: the secret ones (only to --base-url, so with to_base_url), the
 * Idempotency-Key, and an empty Expect. */
static void request_own_headers(const http_config_t *c, bool to_base_url, const char *id_json, http_request_t *req)
{
    const settings_t *s = c->settings;
    /* Secrets go only to --base-url: an item's absolute url (even to an allowed host) never carries them. */
    if (to_base_url)
        for (size_t i = 0; i < c->n_secret; i++)
            req->headers = curl_slist_append(req->headers, c->secret_headers[i]);
    if (s->idempotency_key) {
        /* Derived from queue and item id, so a redelivered item carries the same key. */
        /* The id as written (a string id without its quotes), escaped; ids are unique within a queue. */
        const char *id = id_json;
        size_t id_len = strlen(id);
        if (id[0] == '"') id++, id_len -= 2;
        dynbuf_t line;
        dynbuf_init(&line, (size_t)-1 / 2);
        dynbuf_addstr(&line, "Idempotency-Key: chunkd-");
        url_escape(&line, s->queue, strlen(s->queue));
        dynbuf_addstr(&line, "-");
        url_escape(&line, id, id_len);
        req->headers = curl_slist_append(req->headers, line.data);
        dynbuf_free(&line);
    }
    /* No "Expect: 100-continue" round trip before a large body (only bodies can trigger it). */
    if (req->body) req->headers = curl_slist_append(req->headers, "Expect:");
}

static const char *request_fill(const http_config_t *c, const json_t *item, const char *id_json, http_request_t *req,
                                char *why, size_t whylen)
{
    if (!json_is_object(item)) return "an http item must be a JSON object";
    const char *error = request_url(c, item, req, why, whylen);
    if (!error) error = request_method(json_object_get(item, "method"), req);
    bool has_content_type = false;
    if (!error)
        error = request_item_headers(c, json_object_get(item, "headers"), req, &has_content_type, why, whylen);
    if (!error) error = request_body(json_object_get(item, "body"), has_content_type, req);
    if (error) return error;
    request_own_headers(c, !json_object_get(item, "url"), id_json, req);
    return NULL;
}


const char *http_request_build(const http_config_t *c, const json_t *item, const char *id_json, http_request_t *req,
                               char *why, size_t whylen)
{
    memset(req, 0, sizeof *req);
    const char *error = request_fill(c, item, id_json, req, why, whylen);
    if (error) http_request_free(req);
    return error;
}

void http_request_free(http_request_t *req)
{
    curl_slist_free_all(req->headers);
    free(req->url);
    free(req->method);
    free(req->body);
    memset(req, 0, sizeof *req);
}
