/* chunk: see chunk.h. */
#include "chunk.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "xalloc.h"

json_t *chunk_item_id(const json_t *value, long long line)
{
    json_t *id = json_is_object(value) ? json_object_get(value, "id") : NULL;
    if (json_is_string(id) || json_is_integer(id)) return json_incref(id);
    return json_integer(line);
}

json_t *chunk_entry_new(json_t *id, const char *text, size_t len)
{
    json_t *e = json_object();
    json_object_set_new(e, "id", id);
    json_object_set_new(e, "item", json_stringn_nocheck(text, len));
    return e;
}

json_t *chunk_entry_from_line(const char *line, size_t len, long long line_no, char *why, size_t whylen)
{
    json_error_t jerr;
    json_t *value = json_loadb(line, len, JSON_DECODE_ANY, &jerr);
    if (!value) {
        snprintf(why, whylen, "invalid JSON at column %d: %s", jerr.column, jerr.text);
        return NULL;
    }
    json_t *id = json_is_object(value) ? json_object_get(value, "id") : NULL;
    if (json_is_real(id)) { /* it would silently become the line number */
        snprintf(why, whylen, "\"id\" %.17g is a number but not an integer: give an integer or a string",
                 json_real_value(id));
        json_decref(value);
        return NULL;
    }
    json_t *entry = chunk_entry_new(chunk_item_id(value, line_no), line, len);
    json_decref(value);
    return entry;
}

char *chunk_encode(const char *chunk_id, const json_t *entries, size_t *len)
{
    json_t *root = json_object();
    json_object_set_new(root, "v", json_integer(CHUNK_FORMAT_VERSION));
    json_object_set_new(root, "chunk", json_string(chunk_id));
    json_object_set(root, "items", (json_t *)entries);
    char *s = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(root);
    *len = s ? strlen(s) : 0;
    return s;
}

void chunk_builder_init(chunk_builder_t *b, size_t max_items, size_t max_bytes)
{
    b->entries = json_array();
    b->bytes = 0;
    b->max_items = max_items;
    b->max_bytes = max_bytes > CHUNK_FRAME_MAX ? max_bytes - CHUNK_FRAME_MAX : 0;
}

void chunk_builder_free(chunk_builder_t *b)
{
    json_decref(b->entries);
    b->entries = NULL;
}

size_t chunk_entry_bytes(const json_t *entry)
{
    /* With no buffer, json_dumpb only counts: the entry's exact size in chunk_encode()'s compact form. */
    return json_dumpb(entry, NULL, 0, JSON_COMPACT | JSON_PRESERVE_ORDER) + 1;
}

bool chunk_builder_fits_alone(const chunk_builder_t *b, size_t entry_bytes) { return entry_bytes <= b->max_bytes; }

bool chunk_builder_must_close(const chunk_builder_t *b, size_t entry_bytes)
{
    size_t n = json_array_size(b->entries);
    return n > 0 && (n >= b->max_items || b->bytes + entry_bytes > b->max_bytes);
}

bool chunk_builder_add(chunk_builder_t *b, json_t *entry, size_t entry_bytes)
{
    json_array_append_new(b->entries, entry);
    b->bytes += entry_bytes;
    return json_array_size(b->entries) >= b->max_items;
}

size_t chunk_builder_items(const chunk_builder_t *b) { return json_array_size(b->entries); }

char *chunk_builder_take(chunk_builder_t *b, const char *chunk_id, size_t *len)
{
    char *s = chunk_encode(chunk_id, b->entries, len);
    json_array_clear(b->entries);
    b->bytes = 0;
    return s;
}

void chunk_clear(chunk_t *c)
{
    for (size_t i = 0; i < c->n_items; i++) {
        free(c->items[i].id_json);
        free(c->items[i].text);
        free(c->items[i].error);
        json_decref(c->items[i].value);
    }
    free(c->items);
    free(c->id);
    memset(c, 0, sizeof *c);
}

/* Chunk ids appear in logs: printable ASCII only, so they cannot forge log lines. */
static bool chunk_id_ok(const char *id)
{
    for (; *id; id++)
        if (*id < 0x21 || *id > 0x7e) return false;
    return true;
}

/* ---- the canonical form, without a JSON library ----
 *
 * chunk_encode() writes one exact form: {"v":1,"chunk":"ID","items":[{"id":ID,"item":"TEXT"},...]} with no
 * whitespace. chunk_decode() reads a chunk in that form directly when it is also in a narrow subset: ASCII only,
 * no \u escapes, integer ids of at most 18 digits, string ids and the chunk id without escapes. For such input the
 * result is the same as the general (jansson) decoder's; anything else, valid or not, goes to that decoder, which
 * owns all error reporting. This matters because jansson reads a chunk a byte at a time through callbacks, and a
 * worker decodes tens of thousands of items per second. */

typedef struct canon_scan {
    const char *s, *end;
} canon_scan_t;

static bool canon_lit(canon_scan_t *c, const char *lit)
{
    size_t n = strlen(lit);
    if ((size_t)(c->end - c->s) < n || memcmp(c->s, lit, n) != 0) return false;
    c->s += n;
    return true;
}

/* A string without escapes of bytes 0x20-0x7e; returns its quoted span. */
static bool canon_plain_string(canon_scan_t *c, const char **start, size_t *len)
{
    const char *p = c->s;
    if (p == c->end || *p != '"') return false;
    for (p++; p < c->end && *p != '"'; p++)
        if (*p < 0x20 || *p > 0x7e || *p == '\\') return false;
    if (p == c->end) return false;
    *start = c->s;
    *len = (size_t)(p + 1 - c->s);
    c->s = p + 1;
    return true;
}

/* An integer as jansson prints it: -?(0|[1-9][0-9]*), at most 18 digits, not -0. */
static bool canon_integer(canon_scan_t *c, const char **start, size_t *len)
{
    const char *p = c->s, *digits;
    if (p < c->end && *p == '-') p++;
    digits = p;
    while (p < c->end && *p >= '0' && *p <= '9') p++;
    size_t n = (size_t)(p - digits);
    if (n == 0 || n > 18 || (*digits == '0' && (n > 1 || digits > c->s))) return false;
    *start = c->s;
    *len = (size_t)(p - c->s);
    c->s = p;
    return true;
}

static void canon_ws(canon_scan_t *c)
{
    while (c->s < c->end && (*c->s == ' ' || *c->s == '\t' || *c->s == '\n' || *c->s == '\r')) c->s++;
}

/* The value of an item that is a flat JSON object of plain strings (as canon_plain_string), integers (as
 * canon_integer), true, false and null, such as {"id":1,"path":"/x"}, built without jansson's reader, which costs
 * several times more; NULL for anything else, which goes to jansson. For what it accepts the value is the one
 * json_loadb gives (a repeated key: the last one wins, as there). */
static json_t *flat_item_value(const char *text, size_t len)
{
    canon_scan_t c = {text, text + len};
    canon_ws(&c);
    if (!canon_lit(&c, "{")) return NULL;
    json_t *obj = json_object();
    canon_ws(&c);
    if (!canon_lit(&c, "}")) {
        for (;;) {
            const char *k, *v;
            size_t klen, vlen;
            json_t *val;
            canon_ws(&c);
            if (!canon_plain_string(&c, &k, &klen)) goto fail;
            canon_ws(&c);
            if (!canon_lit(&c, ":")) goto fail;
            canon_ws(&c);
            if (canon_plain_string(&c, &v, &vlen)) {
                val = json_stringn_nocheck(v + 1, vlen - 2);
            } else if (canon_integer(&c, &v, &vlen)) {
                long long n = 0;
                for (size_t i = v[0] == '-'; i < vlen; i++) n = n * 10 + (v[i] - '0');
                val = json_integer(v[0] == '-' ? -n : n);
            } else if (canon_lit(&c, "true")) {
                val = json_true();
            } else if (canon_lit(&c, "false")) {
                val = json_false();
            } else if (canon_lit(&c, "null")) {
                val = json_null();
            } else {
                goto fail;
            }
            json_object_setn_new_nocheck(obj, k + 1, klen - 2, val);
            canon_ws(&c);
            if (canon_lit(&c, "}")) break;
            if (!canon_lit(&c, ",")) goto fail;
        }
    }
    canon_ws(&c);
    if (c.s == c.end) return obj;
fail:
    json_decref(obj);
    return NULL;
}

/* Takes ownership of id_json and text (text[text_len] is '\0'); the item is parsed later (chunk_item_parse). */
static void chunk_item_set(chunk_item_t *it, char *id_json, char *text, size_t text_len)
{
    it->id_json = id_json;
    it->text = text;
    it->text_len = text_len;
}

void chunk_item_parse(chunk_item_t *it)
{
    if (it->value || it->error || !it->text) return;
    json_error_t jerr;
    it->value = flat_item_value(it->text, it->text_len);
    if (!it->value) it->value = json_loadb(it->text, it->text_len, JSON_DECODE_ANY, &jerr);
    if (!it->value) {
        it->error = xasprintf("item is not valid JSON: %s at byte %d", jerr.text, jerr.position);
    } else {
        /* Valid JSON has raw line breaks only as whitespace between tokens: make them spaces, so an item copied
         * into a result line can never split it into forged lines. */
        for (size_t k = 0; k < it->text_len; k++)
            if (it->text[k] == '\n' || it->text[k] == '\r') it->text[k] = ' ';
    }
}

void chunk_item_drop_value(chunk_item_t *it)
{
    json_decref(it->value);
    it->value = NULL;
}

void chunk_item_release(chunk_item_t *it)
{
    chunk_item_drop_value(it);
    free(it->text);
    it->text = NULL;
    it->text_len = 0;
}

/* A string whose escapes are all short ones (\" \\ \/ \b \f \n \r \t); returns it unescaped (malloc'd). */
static char *canon_text(canon_scan_t *c, size_t *len)
{
    if (c->s == c->end || *c->s != '"') return NULL;
    const char *p = c->s + 1;
    size_t n = 0;
    for (; p < c->end && *p != '"'; p++, n++) {
        if (*p < 0x20 || *p > 0x7e) return NULL; /* control characters are invalid; non-ASCII needs UTF-8 checks */
        if (*p == '\\' && (++p == c->end || *p == '\0' || !strchr("\"\\/bfnrt", *p))) return NULL;
    }
    if (p == c->end) return NULL;
    char *out = xmalloc(n + 1), *o = out;
    for (const char *q = c->s + 1; q < p; q++) {
        if (*q != '\\') {
            *o++ = *q;
            continue;
        }
        switch (*++q) {
        case 'b': *o++ = '\b'; break;
        case 'f': *o++ = '\f'; break;
        case 'n': *o++ = '\n'; break;
        case 'r': *o++ = '\r'; break;
        case 't': *o++ = '\t'; break;
        default: *o++ = *q; break; /* " \ / */
        }
    }
    *o = '\0';
    *len = n;
    c->s = p + 1;
    return out;
}

/* Returns 0 with *out filled, or -1 (nothing kept) when raw is not in the canonical subset. */
static int chunk_decode_canonical(const char *raw, size_t len, chunk_t *out)
{
    canon_scan_t c = {raw, raw + len};
    const char *id, *iid;
    size_t id_len, iid_len;
    char prefix[32];
    snprintf(prefix, sizeof prefix, "{\"v\":%d,\"chunk\":", CHUNK_FORMAT_VERSION);
    if (!canon_lit(&c, prefix) || !canon_plain_string(&c, &id, &id_len) || id_len < 3 || id_len - 2 > CHUNK_ID_MAX ||
        memchr(id, ' ', id_len) || !canon_lit(&c, ",\"items\":["))
        return -1;
    /* Count the entries first: each one starts with this key, which cannot occur inside a canonical text ('"' is
     * always escaped there). */
    size_t n = 0;
    for (const char *p = c.s; (p = memmem(p, (size_t)(c.end - p), "{\"id\":", 6)) != NULL; p += 6) n++;
    if (n > CHUNK_MAX_ITEMS) return -1;
    out->items = xcalloc(n ? n : 1, sizeof *out->items);
    size_t i = 0;
    if (!canon_lit(&c, "]")) {
        for (;;) {
            if (i == n || !canon_lit(&c, "{\"id\":")) goto fail;
            if (!(c.s < c.end && *c.s == '"' ? canon_plain_string(&c, &iid, &iid_len)
                                              : canon_integer(&c, &iid, &iid_len)))
                goto fail;
            size_t text_len;
            char *text;
            if (!canon_lit(&c, ",\"item\":") || !(text = canon_text(&c, &text_len))) goto fail;
            chunk_item_set(&out->items[i++], xstrndup(iid, iid_len), text, text_len);
            out->n_items = i;
            if (!canon_lit(&c, "}")) goto fail;
            if (canon_lit(&c, "]")) break;
            if (!canon_lit(&c, ",")) goto fail;
        }
    }
    if (!canon_lit(&c, "}") || c.s != c.end || i != n) goto fail;
    out->id = xstrndup(id + 1, id_len - 2);
    return 0;
fail:
    chunk_clear(out);
    return -1;
}

/* The general decoder, for any valid JSON spelling of a chunk. */
static int chunk_decode_json(const char *raw, size_t len, chunk_t *out, char *err, size_t errlen)
{
    json_error_t jerr;
    json_t *root = json_loadb(raw, len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &jerr);
    if (!root) {
        snprintf(err, errlen, "chunk is not valid JSON: %s at byte %d", jerr.text, jerr.position);
        return -1;
    }
    json_t *v = json_object_get(root, "v"), *id = json_object_get(root, "chunk"),
           *items = json_object_get(root, "items");
    int rc = -1;
    if (!json_is_integer(v)) {
        snprintf(err, errlen, "chunk has no integer \"v\" (format version)");
        goto done;
    }
    if (json_integer_value(v) != CHUNK_FORMAT_VERSION) {
        snprintf(err, errlen, "chunk format version %lld is not supported (this worker reads version %d)",
                 (long long)json_integer_value(v), CHUNK_FORMAT_VERSION);
        goto done;
    }
    if (!json_is_string(id) || json_string_length(id) == 0 || json_string_length(id) > CHUNK_ID_MAX ||
        !chunk_id_ok(json_string_value(id))) {
        snprintf(err, errlen, "chunk has no \"chunk\" id of 1 to %d printable ASCII characters", CHUNK_ID_MAX);
        goto done;
    }
    if (!json_is_array(items) || json_array_size(items) > CHUNK_MAX_ITEMS) {
        snprintf(err, errlen, "chunk has no \"items\" array of at most %d items", CHUNK_MAX_ITEMS);
        goto done;
    }
    out->id = xstrdup(json_string_value(id));
    out->n_items = json_array_size(items);
    out->items = xcalloc(out->n_items ? out->n_items : 1, sizeof *out->items);
    for (size_t i = 0; i < out->n_items; i++) {
        json_t *e = json_array_get(items, i), *iid = json_object_get(e, "id"), *text = json_object_get(e, "item");
        chunk_item_t *it = &out->items[i];
        if (!json_is_object(e) || !(json_is_string(iid) || json_is_integer(iid)) || !json_is_string(text)) {
            snprintf(err, errlen, "item %zu of chunk %s needs a string or integer \"id\" and a string \"item\"", i,
                     out->id);
            chunk_clear(out);
            goto done;
        }
        char *id_json = json_dumps(iid, JSON_ENCODE_ANY | JSON_COMPACT);
        if (!id_json) abort();
        chunk_item_set(it, id_json, xstrndup(json_string_value(text), json_string_length(text)),
                       json_string_length(text));
    }
    rc = 0;
done:
    json_decref(root);
    return rc;
}

static void chunk_parse_items(chunk_t *c)
{
    for (size_t i = 0; i < c->n_items; i++) chunk_item_parse(&c->items[i]);
}

int chunk_decode_texts(const char *raw, size_t len, chunk_t *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    if (len > CHUNK_MAX_BYTES) {
        snprintf(err, errlen, "chunk larger than %zu bytes", CHUNK_MAX_BYTES);
        return -1;
    }
    if (chunk_decode_canonical(raw, len, out) == 0) return 0;
    return chunk_decode_json(raw, len, out, err, errlen);
}

int chunk_decode(const char *raw, size_t len, chunk_t *out, char *err, size_t errlen)
{
    if (chunk_decode_texts(raw, len, out, err, errlen)) return -1;
    chunk_parse_items(out);
    return 0;
}

int chunk_decode_general(const char *raw, size_t len, chunk_t *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    if (len > CHUNK_MAX_BYTES) {
        snprintf(err, errlen, "chunk larger than %zu bytes", CHUNK_MAX_BYTES);
        return -1;
    }
    if (chunk_decode_json(raw, len, out, err, errlen)) return -1;
    chunk_parse_items(out);
    return 0;
}
