/* exec_proto: the pure parts of the exec handler: splitting --cmd into argv, checking --env names, and the JSON
 * Lines protocol spoken with the subprocesses. No I/O, so it is unit-tested on its own.
 *
 * Protocol, one line each way per item (a line ends with "\n" and holds no other newline):
 *   request (to the subprocess's stdin):  {"id":<the item's id>,"item":<the item's JSON text>}
 *   reply (from its stdout):              {"id":<the same id>,"result":<any JSON value>}
 *                                      or {"id":<the same id>,"error":<a string, or any value>}
 * Other keys of a reply are ignored. Anything else (not JSON, not an object, another id, both or neither of
 * "result" and "error") is garbage. */
#ifndef CHUNKD_EXEC_PROTO_H
#define CHUNKD_EXEC_PROTO_H

#include <jansson.h>
#include <stddef.h>

#define EXEC_ARGV_MAX 256 /* arguments in --cmd */

/* Splits cmd into arguments: runs of characters other than space, tab and newline. '...' takes everything up to
 * the next ' literally; "..." everything up to the next " (no escapes inside either, no backslash escapes at all,
 * no variables, no globbing); quoted and unquoted pieces next to each other join into one argument, and "" or ''
 * alone is an empty argument. Returns a NULL-terminated malloc'd array (free with exec_proto_argv_free) and sets
 * *argc, or NULL with the reason in err (no command, an unterminated quote, too many arguments). */
char **exec_proto_split_argv(const char *cmd, int *argc, char *err, size_t errlen);
void exec_proto_argv_free(char **argv);

/* Splits the comma-separated --env list into environment variable names ([A-Za-z_][A-Za-z0-9_]*; spaces around
 * names are ignored, empty entries skipped). Returns a NULL-terminated malloc'd array (free with
 * exec_proto_argv_free; it is empty for an empty list) and sets *n, or NULL with the reason in err. */
char **exec_proto_env_names(const char *list, size_t *n, char *err, size_t errlen);

/* Returns the request line for an item, newline included, and sets *len. id_json is the id as JSON text; text is
 * the item's JSON text, used as it is unless it contains a CR or LF (JSON allows them as whitespace), in which
 * case value (the parsed item) is written compactly instead so the request stays one line. */
char *exec_proto_request(const char *id_json, const char *text, size_t text_len, const json_t *value, size_t *len);

typedef enum {
    EXEC_REPLY_RESULT = 0, /* *out is the result as compact JSON text */
    EXEC_REPLY_ERROR,      /* *out is the error message (the string, or the value as JSON text) */
    EXEC_REPLY_GARBAGE,    /* why says what is wrong; *out is NULL */
} exec_reply_t;

/* Parses one reply line (line[0..len), without its newline) to an item whose id is want_id (borrowed). */
exec_reply_t exec_proto_parse_reply(const char *line, size_t len, const json_t *want_id, char **out, size_t *out_len,
                                    char *why, size_t whylen);

#endif
