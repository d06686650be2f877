/* Unit tests of http_request: the http handler's settings and the request an item becomes (no transfer). */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "http_request.h"

static settings_t base_settings(void)
{
    settings_t s;
    memset(&s, 0, sizeof s);
    s.queue = "jobs";
    s.base_url = "http://api.test:8080/v1/";
    s.allow_hosts = "ok.test, Other.Test";
    s.keep_headers = "";
    s.retry_statuses = "429,5xx";
    s.http_headers = "Authorization: Bearer s3cret\n# a comment\n\nX-Api-Key: k3y";
    s.idempotency_key = true;
    return s;
}

/* Builds the request for item_text (id_json as the id); returns the error or NULL. */
static const char *build(const settings_t *s, const char *item_text, const char *id_json, http_request_t *req)
{
    static char why[320];
    char err[256];
    http_config_t *c = http_config_new(s, err, sizeof err);
    assert_non_null(c);
    json_t *item = json_loads(item_text, JSON_DECODE_ANY, NULL);
    assert_non_null(item);
    const char *error = http_request_build(c, item, id_json, req, why, sizeof why);
    json_decref(item);
    http_config_free(c);
    return error;
}

/* The header line named name (any case), or NULL. */
static const char *header(const http_request_t *req, const char *name)
{
    size_t n = strlen(name);
    for (const struct curl_slist *l = req->headers; l; l = l->next)
        if (strncasecmp(l->data, name, n) == 0 && l->data[n] == ':') return l->data;
    return NULL;
}

static void test_path_query_and_headers(void **state)
{
    (void)state;
    settings_t s = base_settings();
    http_request_t req;
    assert_null(build(&s, "{\"path\":\"/u/1\",\"query\":{\"a\":\"b c&d\",\"n\":[1,true,null]},"
                          "\"headers\":{\"X-Trace\":\"t-1\"}}", "\"it 7/é\"", &req));
    assert_string_equal(req.url, "http://api.test:8080/v1/u/1?a=b%20c%26d&n=1&n=true&n");
    assert_null(req.method);
    assert_null(req.body);
    assert_string_equal(header(&req, "X-Trace"), "X-Trace: t-1");
    assert_string_equal(header(&req, "Authorization"), "Authorization: Bearer s3cret");
    assert_string_equal(header(&req, "X-Api-Key"), "X-Api-Key: k3y");
    /* From the queue and the id as written (a string id without its quotes), percent-encoded. */
    assert_string_equal(header(&req, "Idempotency-Key"), "Idempotency-Key: chunkd-jobs-it%207%2F%C3%A9");
    assert_null(header(&req, "Expect"));
    http_request_free(&req);
}

static void test_bodies(void **state)
{
    (void)state;
    settings_t s = base_settings();
    http_request_t req;
    assert_null(build(&s, "{\"path\":\"/x\",\"method\":\"PUT\",\"body\":{\"a\": [1, 2]}}", "1", &req));
    assert_string_equal(req.method, "PUT");
    assert_int_equal(req.body_len, strlen("{\"a\":[1,2]}"));
    assert_memory_equal(req.body, "{\"a\":[1,2]}", req.body_len);
    assert_string_equal(header(&req, "Content-Type"), "Content-Type: application/json");
    assert_string_equal(header(&req, "Expect"), "Expect:"); /* no 100-continue round trip */
    http_request_free(&req);
    /* A string body is sent as is, with the item's own Content-Type. */
    assert_null(build(&s, "{\"body\":\"a=1\",\"headers\":{\"content-type\":\"text/plain\"}}", "2", &req));
    assert_string_equal(req.url, "http://api.test:8080/v1");
    assert_int_equal(req.body_len, 3);
    assert_memory_equal(req.body, "a=1", 3);
    assert_string_equal(header(&req, "Content-Type"), "content-type: text/plain");
    http_request_free(&req);
}

static void test_absolute_urls(void **state)
{
    (void)state;
    settings_t s = base_settings();
    http_request_t req;
    /* An allowed host (any case): no secret headers go there. */
    assert_null(build(&s, "{\"url\":\"https://OTHER.test/a?b=1\",\"query\":{\"c\":2}}", "1", &req));
    assert_string_equal(req.url, "https://OTHER.test/a?b=1&c=2");
    assert_null(header(&req, "Authorization"));
    assert_null(header(&req, "X-Api-Key"));
    assert_non_null(header(&req, "Idempotency-Key"));
    http_request_free(&req);
    const char *error = build(&s, "{\"url\":\"http://evil.test/\"}", "1", &req);
    assert_string_equal(error, "host evil.test port 80 of \"url\" is not in --allow-hosts (an entry without a port "
                               "allows only 80 for http); no request was made");
    assert_null(req.url);
    assert_null(req.headers);
    /* userinfo does not fool the host check */
    assert_non_null(build(&s, "{\"url\":\"http://ok.test@evil.test/\"}", "1", &req));
    assert_null(req.url);
    assert_string_equal(build(&s, "{\"url\":\"ftp://ok.test/\"}", "1", &req), "\"url\" must be http or https");
}

/* An entry without a port allows the scheme's default port only; host:port and [v6]:port name one. */
static void test_allow_hosts_ports(void **state)
{
    (void)state;
    settings_t s = base_settings();
    s.allow_hosts = "ok.test, other.test:8443, [::1], [fd00::2]:9000";
    http_request_t req;
    static const char *const allowed[] = {"http://ok.test/a", "http://ok.test:80/a", "https://ok.test/a",
                                          "https://ok.test:443/a", "https://other.test:8443/a",
                                          "http://other.test:8443/a", "http://[::1]/a", "http://[fd00::2]:9000/a"};
    for (size_t i = 0; i < sizeof allowed / sizeof allowed[0]; i++) {
        char item[128];
        snprintf(item, sizeof item, "{\"url\":\"%s\"}", allowed[i]);
        assert_null(build(&s, item, "1", &req));
        assert_string_equal(req.url, allowed[i]);
        http_request_free(&req);
    }
    static const char *const refused[] = {"http://ok.test:8080/a", "https://ok.test:80/a", "http://ok.test:443/a",
                                          "http://other.test/a", "https://other.test/a", "http://other.test:8444/a",
                                          "http://[::1]:8080/a", "http://[fd00::2]/a"};
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        char item[128];
        snprintf(item, sizeof item, "{\"url\":\"%s\"}", refused[i]);
        const char *error = build(&s, item, "1", &req);
        assert_non_null(error);
        assert_non_null(strstr(error, "--allow-hosts"));
        assert_null(req.url);
    }
    char err[256];
    static char *const bad[] = {"ok.test:", "ok.test:0", "ok.test:65536", "ok.test:8x", "::1", "[::1",
                                "[::1]8080", "[]", ":80", "http://ok.test"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        s.allow_hosts = bad[i];
        assert_null(http_config_new(&s, err, sizeof err));
        assert_non_null(strstr(err, "invalid value for --allow-hosts (CHUNKD_ALLOW_HOSTS)"));
    }
}

/* Dot segments never leave --base-url's path: raw, percent-encoded in any case, mixed, or between encoded
 * slashes; dots that are not a whole segment, encoded slashes alone and dots in the query are fine. */
static void test_path_dot_segments(void **state)
{
    (void)state;
    settings_t s = base_settings();
    http_request_t req;
    static const char *const refused[] = {"/../../secret-admin", "/..", "/.", "/a/./b", "/a/../b", "/a/..",
                                          "/%2e%2e/secret", "/%2E%2E/secret", "/.%2e/secret", "/%2E./secret",
                                          "/%2e/x", "/a%2f..%2fsecret", "/a%2F%2e%2e%2Fsecret", "/..%2fsecret",
                                          "/a\\..\\secret", "/a%5c..%5csecret", "/x/..?q=1", "/x/..#f"};
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        json_t *item = json_pack("{ss}", "path", refused[i]);
        char *text = json_dumps(item, 0);
        const char *error = build(&s, text, "1", &req);
        assert_non_null(error);
        assert_non_null(strstr(error, "\"path\" must not hold a \".\" or \"..\" segment"));
        assert_null(req.url);
        free(text);
        json_decref(item);
    }
    static const char *const allowed[] = {"/a..b/c", "/.../x", "/.well-known/x", "/a.", "/a%2Fb", "/x?q=../y",
                                          "/x?q=/../y", "/%2e%2e%2e", "/", "/a//b", "/x#/../y", "/%2"};
    for (size_t i = 0; i < sizeof allowed / sizeof allowed[0]; i++) {
        json_t *item = json_pack("{ss}", "path", allowed[i]);
        char *text = json_dumps(item, 0);
        assert_null(build(&s, text, "1", &req));
        assert_int_equal(strncmp(req.url, "http://api.test:8080/v1/", 24), 0);
        http_request_free(&req);
        free(text);
        json_decref(item);
    }
}

static void test_refused_items(void **state)
{
    (void)state;
    settings_t s = base_settings();
    http_request_t req;
    static const char *const cases[][2] = {
        {"[1]", "an http item must be a JSON object"},
        {"{\"path\":\"x\"}", "\"path\" must start with '/'"},
        {"{\"path\":\"/a b\"}", "\"path\" must not contain spaces or control characters"},
        {"{\"method\":\"get\"}", "\"method\" must be upper-case letters, like GET or POST"},
        {"{\"headers\":{\"Host\":\"evil.test\"}}", "header Host may not be set by an item"},
        {"{\"headers\":{\"authorization\":\"x\"}}", "header authorization may not be set by an item"},
        {"{\"headers\":{\"X-A\":\"a\\r\\nX-B: b\"}}", "\"headers\" must map valid header names to strings without line breaks"},
        {"{\"query\":{\"a\":{\"b\":1}}}", "\"query\" values must be strings, numbers, booleans, null or arrays of them"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *error = build(&s, cases[i][0], "1", &req);
        assert_non_null(error);
        assert_string_equal(error, cases[i][1]);
        assert_null(req.url);
        assert_null(req.headers);
    }
}

/* --path and --query from item fields: each value percent-encoded inside its segment or query value. */
static void test_templates(void **state)
{
    (void)state;
    settings_t s = base_settings();
    s.path_template = "/users/{user}/orders/{o.n}";
    s.query_template = "page={page}&q={q}&f={flag}";
    s.headers = "X-Trace: t-1\nAccept: application/json";
    s.method = "POST";
    s.body_from_item = true;
    http_request_t req;
    assert_null(build(&s, "{\"user\":\"a/..?x=1#f@evil.com\",\"o\":{\"n\":7},\"page\":2.5,\"q\":\"a&b=c\","
                          "\"flag\":true,\"path\":\"/ignored\",\"url\":\"http://evil.test/\"}", "1", &req));
    assert_string_equal(req.url, "http://api.test:8080/v1/users/a%2F..%3Fx%3D1%23f%40evil.com/orders/7"
                                 "?page=2.5&q=a%26b%3Dc&f=true");
    assert_string_equal(req.method, "POST");
    assert_non_null(strstr(req.body, "\"o\":{\"n\":7}"));
    assert_string_equal(header(&req, "X-Trace"), "X-Trace: t-1");
    assert_string_equal(header(&req, "Content-Type"), "Content-Type: application/json");
    assert_non_null(header(&req, "Authorization")); /* to --base-url: the secret headers too */
    http_request_free(&req);
    /* A field literally named with a dot wins over the nested path; --body-field sends one field. */
    s.body_from_item = false;
    s.body_field = "payload";
    s.query_template = NULL;
    assert_null(build(&s, "{\"user\":\"u\",\"o.n\":\"x y\",\"payload\":\"raw text\"}", "1", &req));
    assert_string_equal(req.url, "http://api.test:8080/v1/users/u/orders/x%20y");
    assert_memory_equal(req.body, "raw text", req.body_len);
    http_request_free(&req);
    static const char *const refused[][2] = {
        {"{\"o\":{\"n\":1}}", "field \"user\" named in --path is missing from the item; no request was made"},
        {"{\"user\":[1],\"o\":{\"n\":1}}", "field \"user\" named in --path is not a string, number or boolean; "
                                          "no request was made"},
        {"{\"user\":\"..\",\"o\":{\"n\":1}}", "field \"user\" named in --path holds a \".\" or \"..\" segment "
                                               "(it would leave the path of --base-url); no request was made"},
        {"{\"user\":\"a/../b\",\"o\":{\"n\":1}}", "field \"user\" named in --path holds a \".\" or \"..\" "
                                                   "segment (it would leave the path of --base-url); no request was "
                                                   "made"},
        {"{\"user\":\"u\",\"o\":{\"n\":1}}", "field \"payload\" named in --body-field is missing from the item; no "
                                              "request was made"},
    };
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        assert_string_equal(build(&s, refused[i][0], "1", &req), refused[i][1]);
        assert_null(req.url);
        assert_null(req.headers);
    }
}

/* Without templates, -H and --method apply to the item forms too (an item's own method wins). */
static void test_plain_headers_and_method_with_item_forms(void **state)
{
    (void)state;
    settings_t s = base_settings();
    s.headers = "X-Trace: t-1";
    s.method = "PUT";
    http_request_t req;
    assert_null(build(&s, "{\"path\":\"/a\"}", "1", &req));
    assert_string_equal(req.url, "http://api.test:8080/v1/a");
    assert_string_equal(req.method, "PUT");
    assert_string_equal(header(&req, "X-Trace"), "X-Trace: t-1");
    http_request_free(&req);
    assert_null(build(&s, "{\"path\":\"/a\",\"method\":\"DELETE\"}", "1", &req));
    assert_string_equal(req.method, "DELETE");
    http_request_free(&req);
}

static void test_template_config_errors(void **state)
{
    (void)state;
    static const struct {
        const char *path, *query, *headers, *method, *error;
    } cases[] = {
        {"users/{id}", NULL, NULL, NULL, "invalid value for --path (CHUNKD_PATH): must start with '/'"},
        {"/u/{id", NULL, NULL, NULL, "invalid value for --path: '{' at byte 4 must be followed by a field name "
                                     "(letters, digits, '_', '-', '.') and '}'"},
        {"/u/{}", NULL, NULL, NULL, "invalid value for --path: '{' at byte 4 must be followed by a field name "
                                    "(letters, digits, '_', '-', '.') and '}'"},
        {"/u}", NULL, NULL, NULL, "invalid value for --path: '}' without '{' (byte 3)"},
        {"/u?a={id}", NULL, NULL, NULL, "invalid value for --path: no spaces, control characters, '#' or '?' (the "
                                        "query is --query) (byte 3)"},
        {"/../{id}", NULL, NULL, NULL, "invalid value for --path (CHUNKD_PATH): a \".\" or \"..\" segment would "
                                       "leave the path of --base-url"},
        {NULL, "a={x}#f", NULL, NULL, "invalid value for --query: no spaces, control characters, '#' (byte 6)"},
        {NULL, NULL, "Host: evil.test", NULL, "-H/--header Host: chunkd sets this header itself (or it is a secret "
                                              "header)"},
        {NULL, NULL, "X-A: 1\nauthorization: x", NULL, "-H/--header authorization: chunkd sets this header itself "
                                                      "(or it is a secret header)"},
        {NULL, NULL, "X-A: 1\nno colon", NULL, "invalid value for -H/--header (CHUNKD_HEADER) number 2: expected "
                                              "\"Name: value\" with a valid header name"},
        {NULL, NULL, NULL, "post", "invalid value for --method (CHUNKD_METHOD): upper-case letters, like GET or "
                                   "POST"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char err[256];
        settings_t s = base_settings();
        s.path_template = (char *)cases[i].path;
        s.query_template = (char *)cases[i].query;
        s.headers = (char *)cases[i].headers;
        s.method = (char *)cases[i].method;
        assert_null(http_config_new(&s, err, sizeof err));
        assert_string_equal(err, cases[i].error);
    }
    char err[256];
    settings_t s = base_settings();
    s.base_url = NULL;
    s.path_template = "/u/{id}";
    assert_null(http_config_new(&s, err, sizeof err));
    assert_string_equal(err, "--path, --query, --body-field and --body-from-item need --base-url (CHUNKD_BASE_URL)");
}

static void test_no_idempotency_key_and_no_base(void **state)
{
    (void)state;
    settings_t s = base_settings();
    s.idempotency_key = false;
    http_request_t req;
    assert_null(build(&s, "{}", "1", &req));
    assert_null(header(&req, "Idempotency-Key"));
    http_request_free(&req);
    s.base_url = NULL;
    assert_string_equal(build(&s, "{\"path\":\"/a\"}", "1", &req), "item has no \"url\" and no --base-url is set");
}

static void test_config_errors(void **state)
{
    (void)state;
    char err[256];
    settings_t s = base_settings();
    s.base_url = "not a url";
    assert_null(http_config_new(&s, err, sizeof err));
    assert_string_equal(err, "invalid value for --base-url (CHUNKD_BASE_URL): not a URL with a host");
    s = base_settings();
    s.http_headers = "Authorization: Bearer s3cret\nBad Name: s3cret";
    assert_null(http_config_new(&s, err, sizeof err));
    assert_string_equal(err, "CHUNKD_HTTP_HEADERS line 2: expected \"Name: value\" with a valid header name");
    assert_null(strstr(err, "s3cret"));
    s = base_settings();
    s.retry_statuses = "5xx,42";
    assert_null(http_config_new(&s, err, sizeof err));
    assert_non_null(strstr(err, "--retry-statuses"));
    assert_non_null(strstr(err, "'42'"));
}

static void test_mask_secrets(void **state)
{
    (void)state;
    char err[256];
    settings_t s = base_settings();
    s.http_headers = "Authorization: Bearer s3cretTOKEN\nX-Api-Key: k3y";
    http_config_t *c = http_config_new(&s, err, sizeof err);
    assert_non_null(c);
    char buf[] = "{\"authorization\":\"Bearer s3cretTOKEN\",\"token\":\"s3cretTOKEN\",\"key\":\"k3y\",\"x\":\"Bearer\"}";
    http_config_mask_secrets(c, buf, strlen(buf));
    assert_string_equal(buf, "{\"authorization\":\"******************\",\"token\":\"***********\",\"key\":\"***\","
                             "\"x\":\"Bearer\"}");
    char part[] = "s3cretTOKEN";
    http_config_mask_secrets(c, part, 6); /* only len bytes are looked at */
    assert_string_equal(part, "s3cretTOKEN");
    http_config_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_path_query_and_headers),
        cmocka_unit_test(test_bodies),
        cmocka_unit_test(test_absolute_urls),
        cmocka_unit_test(test_allow_hosts_ports),
        cmocka_unit_test(test_path_dot_segments),
        cmocka_unit_test(test_refused_items),
        cmocka_unit_test(test_templates),
        cmocka_unit_test(test_plain_headers_and_method_with_item_forms),
        cmocka_unit_test(test_template_config_errors),
        cmocka_unit_test(test_no_idempotency_key_and_no_base),
        cmocka_unit_test(test_config_errors),
        cmocka_unit_test(test_mask_secrets),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
