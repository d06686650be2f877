/* Fuzz target: http_request_build() (src/handler/http_request.c), which turns an untrusted item into an HTTP request.
 *
 * Input: the item's id as JSON text, a NUL byte, then the item (inputs without the NUL use the id "1"); only items
 * that are valid JSON reach the handler. The config is fixed: --base-url http://api.test:8080/v1/, --allow-hosts
 * "ok.test, Other.Test:8443", two secret headers. Beyond "no crash, no leak, no undefined behaviour" it checks the
 * rules the handler promises (http_request.h): the URL names the base host or an allowed host on its allowed port
 * (ok.test on the scheme's default port only); a URL built on the base starts with it, holds no space or control
 * byte, and its path stays under /v1 after RFC 3986 dot-segment removal, with %2E as a dot and %2F, %5C and '\'
 * as slashes (what a server that decodes them would see); header lines are "token: value" without line breaks,
 * no item sets a framing header, Idempotency-Key is there once and its value is printable; secret headers go only
 * with base-URL requests and their values appear nowhere else; a refused item leaves nothing allocated.
 *
 * Each item also goes through a second config with templates (--path "/u/{a}/x/{b.c}", --query "q={a}&r={d}",
 * -H "X-Plain: p", --body-from-item): its URL is on the base host, the path has exactly its template's segments
 * with each value percent-decoding back to the field's text (a value never leaves its segment), and the query has
 * exactly the parameters q and r, each decoding back to its field (a value never adds a parameter). */
#include <ctype.h>
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "http_request.h"
#include "settings.h"

#define FUZZ_NAME "fuzz_http_request"
#include "fuzz.h"

#define BASE "http://api.test:8080/v1"
#define SECRET1 "Bearer s3cret-value"
#define SECRET2 "k3y-value"

/* The config of s (which must outlive it), or abort() naming which one. */
static http_config_t *config_of(settings_t *s, const char *which)
{
    s->keep_headers = "";
    s->retry_statuses = "429,5xx";
    s->idempotency_key = true;
    char err[256];
    http_config_t *c = http_config_new(s, err, sizeof err);
    if (!c) {
        fprintf(stderr, "fuzz_http_request: %s config: %s\n", which, err);
        abort();
    }
    return c;
}

static http_config_t *config(void)
{
    static settings_t s;
    static http_config_t *c;
    if (c) return c;
    s.queue = "q{1}";
    s.base_url = BASE "/";
    s.allow_hosts = "ok.test, Other.Test:8443";
    s.http_headers = "Authorization: " SECRET1 "\nX-Api-Key: " SECRET2;
    s.max_result_bytes = 1 << 20;
    return c = config_of(&s, "plain");
}

#define TEMPLATE_PATH "/u/{a}/x/{b.c}"
#define TEMPLATE_QUERY "q={a}&r={d}"

static http_config_t *config_templated(void)
{
    static settings_t s;
    static http_config_t *c;
    if (c) return c;
    s.queue = "q";
    s.base_url = BASE;
    s.allow_hosts = "";
    s.http_headers = "Authorization: " SECRET1;
    s.headers = "X-Plain: p";
    s.path_template = TEMPLATE_PATH;
    s.query_template = TEMPLATE_QUERY;
    s.body_from_item = true;
    return c = config_of(&s, "templated");
}

/* Percent-decodes s[0..n) into a malloc'd string (*len bytes; it may hold NULs), or NULL when s has a '%' not
 * followed by two hex digits or a byte that percent-encoding would not leave as it is. */
static char *pct_decode(const char *s, size_t n, size_t *len)
{
    char *out = malloc(n + 1);
    size_t w = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '%' && i + 2 < n && isxdigit((unsigned char)s[i + 1]) && isxdigit((unsigned char)s[i + 2])) {
            char hex[3] = {s[i + 1], s[i + 2], '\0'};
            out[w++] = (char)strtol(hex, NULL, 16);
            i += 2;
        } else if ((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= '0' && s[i] <= '9') ||
                   strchr("-._~", s[i])) {
            out[w++] = s[i];
        } else {
            free(out);
            return NULL;
        }
    }
    out[w] = '\0';
    *len = w;
    return out;
}

/* The text a template gives the item's field (as template_expand writes it), or NULL for another type. */
static char *field_text(const json_t *item, const char *name, size_t *len)
{
    const json_t *v = json_object_get(item, name);
    if (!v && strcmp(name, "b.c") == 0) v = json_object_get(json_object_get(item, "b"), "c");
    char num[64];
    const char *text = num;
    if (json_is_string(v)) {
        *len = json_string_length(v);
        char *out = malloc(*len + 1);
        memcpy(out, json_string_value(v), *len + 1);
        return out;
    }
    if (json_is_integer(v)) snprintf(num, sizeof num, "%lld", (long long)json_integer_value(v));
    else if (json_is_real(v)) snprintf(num, sizeof num, "%.17g", json_real_value(v));
    else if (json_is_boolean(v)) text = json_is_true(v) ? "true" : "false";
    else return NULL;
    *len = strlen(text);
    return strdup(text);
}

/* part[0..n) percent-decodes to the field's text. */
static void check_value(const char *part, size_t n, const json_t *item, const char *field, const char *url)
{
    size_t got_len = 0, want_len = 0;
    char *got = pct_decode(part, n, &got_len), *want = field_text(item, field, &want_len);
    CHECK(got != NULL, "a raw reserved byte in the value of {%s}: %s", field, url);
    CHECK(want != NULL, "field {%s} of another type was sent: %s", field, url);
    CHECK(got_len == want_len && memcmp(got, want, got_len) == 0, "{%s} does not decode to its field: %s", field, url);
    free(got);
    free(want);
}

/* The templated request: on the base, the path's segments and the query's parameters exactly the templates'. */
static void check_templated(const json_t *item, const http_request_t *req)
{
    const char *url = req->url;
    size_t n = strlen(BASE);
    CHECK(strncmp(url, BASE "/u/", n + 3) == 0, "templated URL does not extend the base: %s", url);
    char *host = http_url_host(url);
    CHECK(host && strcmp(host, "api.test") == 0, "templated URL on host %s: %s", host ? host : "(none)", url);
    free(host);
    CHECK(!strchr(url, '#'), "a fragment in a templated URL: %s", url);
    const char *a = url + n + 3, *slash = strchr(a, '/');
    CHECK(slash && strncmp(slash, "/x/", 3) == 0, "the first value left its segment: %s", url);
    const char *bc = slash + 3, *qmark = strchr(bc, '?');
    CHECK(qmark && !memchr(bc, '/', (size_t)(qmark - bc)), "the second value left its segment: %s", url);
    check_value(a, (size_t)(slash - a), item, "a", url);
    check_value(bc, (size_t)(qmark - bc), item, "b.c", url);
    const char *q = qmark + 1, *amp = strchr(q, '&');
    CHECK(strncmp(q, "q=", 2) == 0 && amp && strncmp(amp, "&r=", 3) == 0 && !strchr(amp + 1, '&'),
          "the query is not exactly q and r: %s", url);
    check_value(q + 2, (size_t)(amp - q - 2), item, "a", url);
    check_value(amp + 3, strlen(amp + 3), item, "d", url);
    bool plain = false, secret = false;
    for (const struct curl_slist *l = req->headers; l; l = l->next) {
        plain = plain || strcmp(l->data, "X-Plain: p") == 0;
        secret = secret || strcmp(l->data, "Authorization: " SECRET1) == 0;
    }
    CHECK(plain && secret, "templated request without its -H header or secret header");
    CHECK(req->body != NULL, "--body-from-item sent no body");
}

static bool is_token(const char *s, size_t n)
{
    if (n == 0) return false;
    for (size_t i = 0; i < n; i++)
        if (!(s[i] > 0x20 && s[i] < 0x7f && !strchr("\"(),/:;<=>?@[\\]{}", s[i]))) return false;
    return true;
}

/* The port of an absolute URL (the scheme's default when it names none), or -1. */
static long url_port(const char *url, long *default_port)
{
    CURLU *u = curl_url();
    char *port = NULL, *scheme = NULL;
    long out = -1;
    if (curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
        curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) == CURLUE_OK &&
        curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) == CURLUE_OK) {
        out = strtol(port, NULL, 10);
        *default_port = strcmp(scheme, "https") == 0 ? 443 : 80;
    }
    curl_free(port);
    curl_free(scheme);
    curl_url_cleanup(u);
    return out;
}

/* RFC 3986 5.2.4 remove_dot_segments, in place, over a path decoded as a server might: %2E as '.', %2F, %5C and
 * '\\' as '/'. Written apart from the code under test, as the RFC states it. */
static void remove_dot_segments(char *path)
{
    char *w = path;
    for (const char *r = path; *r;) {
        if (r[0] == '%' && r[1] == '2' && (r[2] == 'e' || r[2] == 'E')) *w++ = '.', r += 3;
        else if (r[0] == '%' && ((r[1] == '2' && (r[2] == 'f' || r[2] == 'F')) ||
                                 (r[1] == '5' && (r[2] == 'c' || r[2] == 'C')))) *w++ = '/', r += 3;
        else *w++ = *r == '\\' ? '/' : *r, r++;
    }
    *w = '\0';
    static char out[70000];
    size_t n = 0;
    out[0] = '\0';
    char *in = path;
    while (*in) {
        if (strncmp(in, "../", 3) == 0) in += 3;                         /* A */
        else if (strncmp(in, "./", 2) == 0) in += 2;
        else if (strncmp(in, "/./", 3) == 0) in += 2;                    /* B */
        else if (strcmp(in, "/.") == 0) in[1] = '\0';
        else if (strncmp(in, "/../", 4) == 0 || strcmp(in, "/..") == 0) { /* C */
            if (in[3] == '/') {
                in += 3;
            } else {
                in += 2;
                in[0] = '/';
            }
            while (n > 0 && out[--n] != '/') {}
            out[n] = '\0';
        } else if (strcmp(in, ".") == 0 || strcmp(in, "..") == 0) {     /* D */
            break;
        } else {                                                         /* E */
            size_t seg = 1 + strcspn(in + 1, "/");
            memcpy(out + n, in, seg);
            n += seg;
            out[n] = '\0';
            in += seg;
        }
    }
    strcpy(path, out);
}

/* leak_checks: the item's own text does not name a secret value (an item may write one into its URL or a header
 * of its own; that is not a leak). */
static void check_request(const json_t *item, const http_request_t *req, bool leak_checks)
{
    CHECK(req->url != NULL, "no URL");
    char *host = http_url_host(req->url);
    CHECK(host != NULL, "URL without a host: %s", req->url);
    bool absolute = json_object_get(item, "url") != NULL;
    if (absolute) {
        long default_port, port = url_port(req->url, &default_port);
        CHECK((strcmp(host, "ok.test") == 0 && port == default_port) || (strcmp(host, "other.test") == 0 && port == 8443),
              "host %s port %ld not allowed: %s", host, port, req->url);
    } else {
        CHECK(strcmp(host, "api.test") == 0, "host %s is not the base's: %s", host, req->url);
        size_t n = strlen(BASE);
        CHECK(strncmp(req->url, BASE, n) == 0 && (req->url[n] == '\0' || req->url[n] == '/' || req->url[n] == '?'),
              "URL does not extend the base: %s", req->url);
        for (const char *p = req->url; *p; p++)
            CHECK((unsigned char)*p > 0x20 && *p != 0x7f, "URL has byte 0x%02x: %s", (unsigned char)*p, req->url);
        static char path[70000];
        size_t path_len = strcspn(req->url + n, "?#");
        if (path_len + strlen(BASE) < sizeof path) {
            memcpy(path, req->url + n, path_len);
            path[path_len] = '\0';
            char *base_path = strchr(&BASE[7], '/');
            size_t base_len = strlen(base_path);
            memmove(path + base_len, path, path_len + 1);
            memcpy(path, base_path, base_len);
            remove_dot_segments(path);
            CHECK(strncmp(path, base_path, base_len) == 0 && (path[base_len] == '\0' || path[base_len] == '/'),
                  "the path leaves %s after dot-segment removal (%s): %s", base_path, path, req->url);
        }
    }
    free(host);
    if (req->method) {
        size_t n = strlen(req->method);
        CHECK(n > 0 && n <= 16, "method of %zu bytes", n);
        for (const char *p = req->method; *p; p++) CHECK(*p >= 'A' && *p <= 'Z', "method %s", req->method);
    }
    int idem = 0, secrets = 0;
    static const char *const framing[] = {"host", "content-length", "transfer-encoding", "connection", "te", "upgrade"};
    for (const struct curl_slist *l = req->headers; l; l = l->next) {
        const char *line = l->data, *colon = strchr(line, ':');
        CHECK(colon && is_token(line, (size_t)(colon - line)), "header line %s", line);
        CHECK(!strpbrk(line, "\r\n"), "header line with a line break");
        size_t name_len = (size_t)(colon - line);
        for (size_t i = 0; i < sizeof framing / sizeof framing[0]; i++)
            CHECK(!(strlen(framing[i]) == name_len && strncasecmp(line, framing[i], name_len) == 0),
                  "framing header %s", line);
        bool secret = strcmp(line, "Authorization: " SECRET1) == 0 || strcmp(line, "X-Api-Key: " SECRET2) == 0;
        secrets += secret;
        if (!secret && leak_checks)
            CHECK(!strstr(line, "s3cret") && !strstr(line, "k3y-value"), "a secret leaked into %s", line);
        if (name_len == 15 && strncasecmp(line, "Idempotency-Key", 15) == 0) {
            idem++;
            for (const char *p = colon + 1; *p; p++)
                CHECK(*p >= 0x20 && *p < 0x7f, "Idempotency-Key byte 0x%02x", (unsigned char)*p);
        }
    }
    CHECK(idem == 1, "%d Idempotency-Key headers", idem);
    CHECK(secrets == (absolute ? 0 : 2), "%d secret headers for a %s URL", secrets, absolute ? "absolute" : "base");
    CHECK(!leak_checks || (!strstr(req->url, "s3cret") && !strstr(req->url, "k3y-value")), "secret in the URL");
    const json_t *body = json_object_get(item, "body");
    if (json_is_string(body))
        CHECK(req->body && req->body_len == json_string_length(body) &&
                  memcmp(req->body, json_string_value(body), req->body_len) == 0,
              "string body not sent as is");
    else if (body)
        CHECK(req->body != NULL, "JSON body missing");
    else
        CHECK(req->body == NULL, "body without a \"body\"");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const http_config_t *c = config();
    const uint8_t *nul = memchr(data, 0, size);
    const char *id_json = "1";
    char *id_copy = NULL;
    const uint8_t *item_text = data;
    size_t item_len = size;
    if (nul) {
        json_t *id = json_loadb((const char *)data, (size_t)(nul - data), JSON_DECODE_ANY, NULL);
        if (json_is_string(id) || json_is_integer(id)) id_json = id_copy = json_dumps(id, JSON_ENCODE_ANY | JSON_COMPACT);
        json_decref(id);
        item_text = nul + 1;
        item_len = size - (size_t)(nul - data) - 1;
    }
    json_t *item = json_loadb((const char *)item_text, item_len, JSON_DECODE_ANY, NULL);
    if (item) {
        /* Any case: hosts are lowercased. */
        char *lower = malloc(size + 1);
        for (size_t i = 0; i < size; i++) lower[i] = (char)((data[i] >= 'A' && data[i] <= 'Z') ? data[i] + 32 : data[i]);
        bool leak_checks = !memmem(lower, size, "s3cret", 6) && !memmem(lower, size, "k3y-value", 9);
        free(lower);
        http_request_t req;
        char why[320];
        const char *error = http_request_build(c, item, id_json, &req, why, sizeof why);
        if (error) {
            CHECK(error[0] != '\0', "empty error");
            CHECK(!leak_checks || (!strstr(error, "s3cret") && !strstr(error, "k3y-value")), "a secret in the error: %s",
                  error);
            CHECK(!req.url && !req.method && !req.body && !req.headers, "a refused item left a request behind");
        } else {
            check_request(item, &req, leak_checks);
        }
        http_request_free(&req);
        error = http_request_build(config_templated(), item, id_json, &req, why, sizeof why);
        if (error) CHECK(!req.url && !req.method && !req.body && !req.headers, "a refused item left a request behind");
        else check_templated(item, &req);
        http_request_free(&req);
        json_decref(item);
    }
    free(id_copy);
    return 0;
}
