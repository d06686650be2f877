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
    free_list(c->plain_headers, c->n_plain);
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

static bool header_forbidden(const http_config_t *c, const char *name);
static bool path_has_dot_segment(const char *path);

/* Checks a --path or --query template (what, for messages): printable, without '#' (nor '?' in a path), and
 * each "{" closed by a "}" around a field name of letters, digits and "_-.". Returns 0, or -1 with err. */
static int template_check(const char *t, const char *what, char *err, size_t errlen)
{
    for (const char *p = t; *p; p++) {
        if ((unsigned char)*p <= ' ' || *p == 0x7f || *p == '#' || (strcmp(what, "--path") == 0 && *p == '?')) {
            snprintf(err, errlen, "invalid value for %s: no spaces, control characters, '#'%s (byte %zu)", what,
                     strcmp(what, "--path") == 0 ? " or '?' (the query is --query)" : "", (size_t)(p - t) + 1);
            return -1;
        }
        if (*p == '}') {
            snprintf(err, errlen, "invalid value for %s: '}' without '{' (byte %zu)", what, (size_t)(p - t) + 1);
            return -1;
        }
        if (*p != '{') continue;
        size_t n = strspn(p + 1, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.");
        if (n == 0 || p[1 + n] != '}') {
            snprintf(err, errlen, "invalid value for %s: '{' at byte %zu must be followed by a field name (letters, "
                     "digits, '_', '-', '.') and '}'", what, (size_t)(p - t) + 1);
            return -1;
        }
        p += n + 1;
    }
    return 0;
}

/* Reads the templates and the plain headers of s into c, checked. Returns 0, or -1 with err. */
static int templates_check(http_config_t *c, const settings_t *s, char *err, size_t errlen)
{
    c->templated = s->path_template || s->query_template || s->body_field || s->body_from_item;
    if (c->templated && !c->base_url) {
        snprintf(err, errlen, "--path, --query, --body-field and --body-from-item need --base-url (CHUNKD_BASE_URL)");
        return -1;
    }
    if (s->path_template) {
        if (s->path_template[0] != '/') {
            snprintf(err, errlen, "invalid value for --path (CHUNKD_PATH): must start with '/'");
            return -1;
        }
        if (template_check(s->path_template, "--path", err, errlen)) return -1;
        if (path_has_dot_segment(s->path_template)) {
            snprintf(err, errlen, "invalid value for --path (CHUNKD_PATH): a \".\" or \"..\" segment would leave "
                     "the path of --base-url");
            return -1;
        }
    }
    if (s->query_template && template_check(s->query_template, "--query", err, errlen)) return -1;
    if (s->method && s->method[0]) {
        bool ok = strlen(s->method) <= 16;
        for (const char *p = s->method; *p; p++) ok = ok && isupper((unsigned char)*p);
        if (!ok) {
            snprintf(err, errlen, "invalid value for --method (CHUNKD_METHOD): upper-case letters, like GET or POST");
            return -1;
        }
    }
    int line_no = 0;
    for (const char *p = s->headers; p && *p;) {
        const char *end = strchr(p, '\n');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        const char *colon = memchr(p, ':', len);
        line_no++;
        if (len) {
            size_t name_len = colon ? (size_t)(colon - p) : 0;
            const char *value = colon ? colon + 1 : "";
            size_t value_len = colon ? len - name_len - 1 : 0;
            while (value_len && *value == ' ') value++, value_len--;
            char name[300];
            snprintf(name, sizeof name, "%.*s", (int)(name_len < 256 ? name_len : 256), p);
            if (!colon || !http_header_ok(p, name_len, value, value_len)) {
                snprintf(err, errlen, "invalid value for -H/--header (CHUNKD_HEADER) number %d: expected \"Name: "
                         "value\" with a valid header name", line_no);
                return -1;
            }
            if (header_forbidden(c, name)) {
                snprintf(err, errlen, "-H/--header %s: chunkd sets this header itself (or it is a secret header)",
                         name);
                return -1;
            }
            if (c->n_plain == HTTP_SECRET_HEADERS_MAX) {
                snprintf(err, errlen, "-H/--header: more than %d headers", HTTP_SECRET_HEADERS_MAX);
                return -1;
            }
            c->plain_headers = xrealloc(c->plain_headers, (c->n_plain + 1) * sizeof(char *));
            c->plain_headers[c->n_plain++] = xasprintf("%s: %.*s", name, (int)value_len, value);
        }
        p = end ? end + 1 : NULL;
    }
    return 0;
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
    if (templates_check(c, s, err, errlen)) goto fail;
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

/* The item's field name[0..len): a key of that name, else the path of nested keys it names with dots. Borrowed,
 * or NULL. */
static const json_t *item_field(const json_t *item, const char *name, size_t len)
{
    char key[256];
    if (len >= sizeof key) return NULL;
    memcpy(key, name, len);
    key[len] = '\0';
    const json_t *v = json_object_get(item, key);
    if (v) return v;
    for (char *k = key; item && k;) {
        char *dot = strchr(k, '.');
        if (dot) *dot = '\0';
        item = json_object_get(item, k);
        k = dot ? dot + 1 : NULL;
    }
    return item;
}

/* Appends template t (what: "--path" or "--query", for messages) to out with each "{field}" replaced by the
 * item's field, percent-encoded. Returns NULL, or why the item cannot be sent (in why[]). */
static const char *template_expand(dynbuf_t *out, const char *t, const char *what, const json_t *item, char *why,
                                   size_t whylen)
{
    while (*t) {
        size_t lit = strcspn(t, "{");
        if (lit && dynbuf_add(out, t, lit)) return "URL too long";
        t += lit;
        if (!*t) break;
        const char *name = t + 1;
        size_t len = strcspn(name, "}"); /* the template was checked: a name and its '}' follow */
        const json_t *v = item_field(item, name, len);
        char num[64];
        const char *text = num;
        if (json_is_string(v)) text = json_string_value(v);
        else if (json_is_integer(v)) snprintf(num, sizeof num, "%lld", (long long)json_integer_value(v));
        else if (json_is_real(v)) snprintf(num, sizeof num, "%.17g", json_real_value(v));
        else if (json_is_boolean(v)) text = json_is_true(v) ? "true" : "false";
        else {
            snprintf(why, whylen, "field \"%.*s\" named in %s is %s; no request was made", (int)(len > 100 ? 100 : len),
                     name, what, v ? "not a string, number or boolean" : "missing from the item");
            return why;
        }
        size_t at = out->len;
        if (url_escape(out, text, json_is_string(v) ? json_string_length(v) : strlen(text))) return "URL too long";
        if (strcmp(what, "--path") == 0) {
            /* "." or "..", alone or between slashes (encoded now, but a server may decode them): refused. */
            char *segment = xasprintf("/%s", out->data + at);
            bool dots = path_has_dot_segment(segment);
            free(segment);
            if (dots) {
                snprintf(why, whylen, "field \"%.*s\" named in --path holds a \".\" or \"..\" segment (it would "
                         "leave the path of --base-url); no request was made", (int)(len > 100 ? 100 : len), name);
                return why;
            }
        }
        t = name + len + 1;
    }
    return NULL;
}

/* Sets req->url from --base-url and the --path and --query templates over the item's fields. Returns NULL, or an
 * error message (a constant or why[]). */
static const char *request_url_templated(const http_config_t *c, const json_t *item, http_request_t *req, char *why,
                                         size_t whylen)
{
    const settings_t *s = c->settings;
    dynbuf_t url;
    dynbuf_init(&url, 65536);
    const char *error = dynbuf_addstr(&url, c->base_url) ? "URL too long" : NULL;
    size_t path_at = url.len;
    if (!error && s->path_template) error = template_expand(&url, s->path_template, "--path", item, why, whylen);
    /* A value of "." or "..", or one with encoded slashes around them, would make a dot segment. */
    if (!error && path_has_dot_segment(url.data + path_at)) {
        snprintf(why, whylen, "a field's value in --path makes a \".\" or \"..\" segment (it would leave the path "
                 "of --base-url); no request was made");
        error = why;
    }
    const char *q = s->query_template;
    if (q && *q == '?') q++;
    if (!error && q && *q) {
        if (dynbuf_addstr(&url, "?")) error = "URL too long";
        else error = template_expand(&url, q, "--query", item, why, whylen);
    }
    if (error) {
        dynbuf_free(&url);
        return error;
    }
    req->url = dynbuf_take(&url, NULL);
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

/* Adds the -H/--header headers; *has_content_type is set when one of them is a Content-Type. */
static void request_plain_headers(const http_config_t *c, http_request_t *req, bool *has_content_type)
{
    for (size_t i = 0; i < c->n_plain; i++) {
        req->headers = curl_slist_append(req->headers, c->plain_headers[i]);
        if (strncasecmp(c->plain_headers[i], "content-type:", 13) == 0) *has_content_type = true;
    }
}

/* A templated item's body: the field --body-field names, or the whole item (--body-from-item), or none. Returns
 * NULL, or an error message (a constant or why[]). */
static const char *request_body_templated(const http_config_t *c, const json_t *item, bool has_content_type,
                                          http_request_t *req, char *why, size_t whylen)
{
    const settings_t *s = c->settings;
    if (s->body_from_item) return request_body(item, has_content_type, req);
    if (!s->body_field) return NULL;
    const json_t *v = item_field(item, s->body_field, strlen(s->body_field));
    if (!v) {
        snprintf(why, whylen, "field \"%.100s\" named in --body-field is missing from the item; no request was made",
                 s->body_field);
        return why;
    }
    return request_body(v, has_content_type, req);
}

static const char *request_fill(const http_config_t *c, const json_t *item, const char *id_json, http_request_t *req,
                                char *why, size_t whylen)
{
    if (!json_is_object(item)) return "an http item must be a JSON object";
    const settings_t *s = c->settings;
    bool has_content_type = false;
    const char *error;
    if (c->templated) {
        /* A plain record: only the templates read it. */
        error = request_url_templated(c, item, req, why, whylen);
        if (!error) request_plain_headers(c, req, &has_content_type);
        if (!error) error = request_body_templated(c, item, has_content_type, req, why, whylen);
    } else {
        error = request_url(c, item, req, why, whylen);
        if (!error) error = request_method(json_object_get(item, "method"), req);
        if (!error)
            error = request_item_headers(c, json_object_get(item, "headers"), req, &has_content_type, why, whylen);
        if (!error) request_plain_headers(c, req, &has_content_type);
        if (!error) error = request_body(json_object_get(item, "body"), has_content_type, req);
    }
    if (error) return error;
    if (!req->method && s->method && s->method[0]) req->method = xstrdup(s->method);
    request_own_headers(c, c->templated || !json_object_get(item, "url"), id_json, req);
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
