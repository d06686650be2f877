/* result: the result line of one item, and the dead-list record of an item that failed.
 *
 *   {"id":<id>,"ok":true,"result":<JSON>,"attempts":N,"ms":N}
 *   {"id":<id>,"ok":false,"error":"<why>","status":N,"body":"<excerpt>","attempts":N,"ms":N}
 *         ("status": the last HTTP status, if any; "body": the start of that response's body, as a string, if the
 *         handler kept one: http, up to --error-body-bytes)
 *   with --include-item, either line ends with ,"item":<the item's JSON> (or ,"item_raw":"<text>" when the
 *   item is not valid JSON)
 *   dead: {"id":<id>,"item":<item JSON>,"error":"<why>","attempts":N,"chunk":"<chunk id>"}
 *         (an item that is not valid JSON is kept as "raw":"<text>" instead of "item")
 *
 * Lines are built by concatenation from JSON texts that are already valid (ids, items, handler results), so no
 * value is re-encoded on the hot path. Pure: no I/O. */
#ifndef CHUNKD_RESULT_H
#define CHUNKD_RESULT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#define RESULT_ERROR_MAX 1024 /* error messages are cut to this many bytes */

/* Returns a malloc'd line without a newline and sets *len. When ok, result_json[0..result_len) must be valid
 * JSON text (its raw line breaks, whitespace between tokens, become spaces); otherwise error is used, status
 * (when > 0) is the last HTTP status, and body[0..body_len) (when body is not NULL) an excerpt of its response
 * body, any bytes (encoded as a JSON string, made valid UTF-8). */
char *result_encode(const char *id_json, bool ok, const char *result_json, size_t result_len, const char *error,
                    int status, const char *body, size_t body_len, int attempts, int64_t ms, size_t *len);

/* Appends the item to a result line from result_encode(): *line (malloc'd, replaced) gets ,"item":<item_text>
 * before its closing brace (raw line breaks between tokens become spaces), or ,"item_raw":"<text>" when
 * item_is_json is false; *len is updated. */
void result_add_item(char **line, size_t *len, const char *item_text, size_t item_len, bool item_is_json);

struct dynbuf;
/* Appends the JSON text[0..len) in jansson's compact form (JSON_COMPACT | JSON_ENCODE_ANY after json_loadb with
 * JSON_DECODE_ANY) without building it, when the text is in a subset whose compact form is the text without its
 * whitespace: ASCII only, strings without \u or \/ escapes, integers of at most 18 digits (not -0), no reals,
 * no duplicate keys, nesting at most RESULT_COMPACT_DEPTH_MAX deep. Returns 0, or -1 with b unchanged when the
 * text is outside the subset (or invalid, or b is full): then parse and dump it with jansson. */
#define RESULT_COMPACT_DEPTH_MAX 32
int result_add_compact_json(struct dynbuf *b, const char *text, size_t len);

/* Returns a malloc'd dead-list record and sets *len. item_is_json tells whether item_text is valid JSON. */
char *result_dead_record(const char *id_json, const char *item_text, size_t item_len, bool item_is_json,
                         const char *error, int attempts, const char *chunk_id, size_t *len);

/* Reads a dead record back for a requeue. Returns 0 and sets *id (a new reference) and *text (malloc'd: the item's
 * JSON text as enqueued, byte for byte when the record came from result_dead_record()), or -1 when the record is
 * not an item record (a dead chunk, or not JSON). */
int result_dead_item(const char *record, size_t len, json_t **id, char **text, size_t *text_len);

/* Reads the text of a chunk back from the dead record of a chunk ({"error":...,"raw":"<chunk text>"}, no "id").
 * Returns 0 and sets *raw (malloc'd) and *raw_len, or -1 when the record is not one. */
int result_dead_chunk_raw(const char *record, size_t len, char **raw, size_t *raw_len);

#endif
