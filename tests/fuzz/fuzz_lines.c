/* Fuzz target: the enqueue path without Redis. Untrusted JSON Lines go through the line reader (with a small cap,
 * so cut lines are common), each kept line becomes a chunk entry as enqueue makes it (chunk_entry_from_line), the
 * entries are encoded into chunks, and each chunk is decoded again as a worker does.
 *
 * Input: byte 0 picks the line cap (1 to 256 bytes), byte 1 the chunk size (1 to 16 items), the rest is the file.
 * Checks beyond "no crash, no leak, no undefined behaviour": the reader keeps at most cap bytes; every line enqueue
 * accepts can be encoded (else enqueue would stop the whole run); a worker decodes the chunk to the same items,
 * each with its value, its id, and its text (line breaks inside it made spaces). */
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chunk.h"
#include "linereader.h"

#define FUZZ_NAME "fuzz_lines"
#include "fuzz.h"

#define MAX_CHUNK 16

typedef struct pending {
    json_t *entries;          /* of chunk_entry_from_line() */
    char *lines[MAX_CHUNK];   /* owned copies of the lines, as read */
    size_t lens[MAX_CHUNK];
    long long line_nos[MAX_CHUNK];
    long long chunk_seq;
} pending_t;

/* Encodes the pending entries as enqueue does, decodes them as a worker does, and compares. */
static void flush(pending_t *p)
{
    size_t n = json_array_size(p->entries);
    if (n == 0) return;
    char id[32];
    snprintf(id, sizeof id, "fuzz-%lld", ++p->chunk_seq);
    size_t len;
    char *raw = chunk_encode(id, p->entries, &len);
    CHECK(raw != NULL, "a chunk of accepted lines does not encode");
    chunk_t c;
    char err[512];
    CHECK(chunk_decode(raw, len, &c, err, sizeof err) == 0, "an encoded chunk does not decode: %s", err);
    CHECK(strcmp(c.id, id) == 0 && c.n_items == n, "chunk id or size");
    for (size_t i = 0; i < n; i++) {
        const chunk_item_t *it = &c.items[i];
        CHECK(it->value != NULL, "line %lld was accepted but its item is an error: %s", p->line_nos[i], it->error);
        CHECK(it->text_len == p->lens[i], "line %lld: text length", p->line_nos[i]);
        for (size_t k = 0; k < it->text_len; k++) {
            char want = p->lines[i][k] == '\n' || p->lines[i][k] == '\r' ? ' ' : p->lines[i][k];
            CHECK(it->text[k] == want, "line %lld: byte %zu of the text", p->line_nos[i], k);
        }
        char *want_id = json_dumps(json_object_get(json_array_get(p->entries, i), "id"), JSON_ENCODE_ANY | JSON_COMPACT);
        CHECK(strcmp(it->id_json, want_id) == 0, "line %lld: id %s, enqueued %s", p->line_nos[i], it->id_json, want_id);
        free(want_id);
        free(p->lines[i]);
    }
    chunk_clear(&c);
    free(raw);
    json_array_clear(p->entries);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 3) return 0;
    size_t cap = 1 + data[0], chunk_size = 1 + data[1] % MAX_CHUNK;
    FILE *in = fmemopen((void *)(data + 2), size - 2, "r");
    CHECK(in != NULL, "fmemopen");
    linereader_t lr;
    linereader_init(&lr, in, cap);
    pending_t p = {.entries = json_array()};
    const char *line;
    size_t len, full_len;
    long long expect_no = 0;
    while (linereader_next(&lr, &line, &len, &full_len) == 1) {
        CHECK(lr.line_no == ++expect_no, "line numbers");
        CHECK(len <= cap && len <= full_len && line[len] == '\0', "line %lld: kept %zu of %zu, cap %zu", lr.line_no,
              len, full_len, cap);
        if (full_len > len) continue; /* rejected as too long */
        size_t k = 0;
        while (k < len && (line[k] == ' ' || line[k] == '\t')) k++;
        if (k == len) continue; /* blank */
        char why[256];
        json_t *entry = chunk_entry_from_line(line, len, lr.line_no, why, sizeof why);
        if (!entry) continue; /* rejected as not JSON */
        size_t i = json_array_size(p.entries);
        p.lines[i] = malloc(len ? len : 1);
        memcpy(p.lines[i], line, len);
        p.lens[i] = len;
        p.line_nos[i] = lr.line_no;
        json_array_append_new(p.entries, entry);
        if (i + 1 == chunk_size) flush(&p);
    }
    flush(&p);
    json_decref(p.entries);
    linereader_free(&lr);
    fclose(in);
    return 0;
}
