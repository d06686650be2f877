/* chunk: the wire format of a chunk, the unit that travels through the pending list.
 *
 *   {"v":1,"chunk":"<chunk id>","items":[{"id":<string or integer>,"item":"<the item's JSON text>"}, ...]}
 *
 * The item travels as its original JSON text inside a string, so numbers and key order reach the handler and the
 * result exactly as the producer wrote them (JSON libraries do not preserve number formatting). Decoding treats
 * the input as untrusted: every field is checked, sizes are capped, and an item that is not valid JSON is marked
 * with an error rather than failing the whole chunk. Pure: no I/O. */
#ifndef CHUNKD_CHUNK_H
#define CHUNKD_CHUNK_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#define CHUNK_FORMAT_VERSION 1
#define CHUNK_MAX_BYTES ((size_t)512 * 1024 * 1024) /* Redis's own limit for one string */
#define CHUNK_MAX_ITEMS 100000
#define CHUNK_ID_MAX 128

typedef struct chunk_item {
    char *id_json;   /* owned: the id as JSON text: a quoted string or an integer */
    char *text;      /* owned: the item's JSON text, as enqueued; NULL once released */
    size_t text_len;
    json_t *value;   /* owned: the parsed item; NULL when text is not valid JSON, not parsed yet, or dropped */
    char *error;     /* owned: why the item cannot run (then value is NULL), or NULL (valid, or not parsed yet) */
} chunk_item_t;

/* Parses the item's text into value, or sets error when it is not valid JSON (its raw line breaks then become
 * spaces); nothing when it is parsed already or released. Again after chunk_item_drop_value, it parses again. */
void chunk_item_parse(chunk_item_t *it);
/* Frees the parsed value (a worker needs it only while the handler starts the item). */
void chunk_item_drop_value(chunk_item_t *it);
/* Frees text and value once the item's result is built; id_json and error stay. */
void chunk_item_release(chunk_item_t *it);

typedef struct chunk {
    char *id;             /* owned */
    size_t n_items;
    chunk_item_t *items;  /* owned array of n_items */
} chunk_t;

/* Returns the id of the item on 1-based line `line`: its "id" field when value is an object with a string or
 * integer "id", else the line number. Returns a new reference. */
json_t *chunk_item_id(const json_t *value, long long line);

/* Returns one entry of a chunk's "items" array, {"id":id,"item":"text"}. Steals the reference to id. */
json_t *chunk_entry_new(json_t *id, const char *text, size_t len);

/* Returns the "items" entry of one input line, line[0..len) without its newline, that is line number line_no
 * (1-based): the line as its text, its "id" or line_no as its id. Returns NULL with the reason in why when the
 * line is not valid JSON. */
json_t *chunk_entry_from_line(const char *line, size_t len, long long line_no, char *why, size_t whylen);

/* Encodes a chunk from an array of chunk_entry_new() values (borrowed). Returns a malloc'd string and sets *len, or
 * NULL when a text or the chunk id is not valid UTF-8 (enqueue only passes texts that parsed as JSON). */
char *chunk_encode(const char *chunk_id, const json_t *entries, size_t *len);

/* A chunk's text besides its entries, {"v":1,"chunk":"<id>","items":[]}, takes at most this many bytes. */
#define CHUNK_FRAME_MAX (2 * CHUNK_ID_MAX + 32)

/* Fills chunks by items and by bytes: a chunk holds at most max_items entries and its encoded text at most
 * max_bytes bytes, so that a worker with the same --max-chunk-bytes never refuses a chunk that enqueue or requeue
 * built. */
typedef struct chunk_builder {
    json_t *entries;   /* owned: the entries of the chunk being filled */
    size_t bytes;      /* their bytes in the chunk's text, commas included */
    size_t max_items, max_bytes;
} chunk_builder_t;

void chunk_builder_init(chunk_builder_t *b, size_t max_items, size_t max_bytes);
void chunk_builder_free(chunk_builder_t *b);
/* Bytes an entry (chunk_entry_new) takes in a chunk's text, its separating comma included. */
size_t chunk_entry_bytes(const json_t *entry);
/* Whether an entry of entry_bytes fits in a chunk of its own. */
bool chunk_builder_fits_alone(const chunk_builder_t *b, size_t entry_bytes);
/* Whether the chunk being filled must be closed (chunk_builder_take) before an entry of entry_bytes is added. */
bool chunk_builder_must_close(const chunk_builder_t *b, size_t entry_bytes);
/* Adds an entry (steals the reference) of entry_bytes; returns true when the chunk is now full by items. */
bool chunk_builder_add(chunk_builder_t *b, json_t *entry, size_t entry_bytes);
size_t chunk_builder_items(const chunk_builder_t *b);
/* Encodes the chunk being filled as chunk_id (chunk_encode) and empties the builder. NULL as chunk_encode. */
char *chunk_builder_take(chunk_builder_t *b, const char *chunk_id, size_t *len);

/* Decodes raw[0..len). Returns 0 and fills *out (free with chunk_clear), or -1 with a reason in err when the chunk as
 * a whole is unusable: not JSON, wrong version, missing or invalid fields, a bad id, too large. Every item is
 * parsed (chunk_item_parse). */
int chunk_decode(const char *raw, size_t len, chunk_t *out, char *err, size_t errlen);
/* The same without parsing the items: a worker parses each one when it starts it, so a large chunk's items are
 * not all held twice (text and value) at once. */
int chunk_decode_texts(const char *raw, size_t len, chunk_t *out, char *err, size_t errlen);
/* The same with jansson only, bypassing the direct reader of chunk_encode()'s own form (for tests, which compare
 * the two). */
int chunk_decode_general(const char *raw, size_t len, chunk_t *out, char *err, size_t errlen);
void chunk_clear(chunk_t *c);

#endif
