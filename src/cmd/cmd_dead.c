/* cmd_dead: `chunkd dead [--limit N] [--json]`: the failed items waiting in the dead list, with their reasons.
 *
 * Text (for a terminal): one line per record, the item's id, its attempts and the reason, cut to the terminal's
 * width (100 columns when stdout is not a terminal); a chunk that went to dead whole is one line saying how many
 * items it holds. --json: each record as it is stored, one JSON object per line (result.h describes them). Read
 * only: the records stay where they are (chunkd requeue moves them). */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "chunk.h"
#include "cmd.h"
#include "keys.h"
#include "log.h"
#include "rconn.h"
#include "result.h"

#define DEAD_PAGE 1000         /* records read per LRANGE */
#define DEAD_DEFAULT_COLUMNS 100
#define DEAD_ID_COLUMNS 24     /* an id longer than this is cut */

/* Columns of a line: the terminal's when stdout is one, else DEAD_DEFAULT_COLUMNS. */
static size_t dead_columns(void)
{
    struct winsize ws;
    if (isatty(STDOUT_FILENO) && ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col >= 40) return ws.ws_col;
    return DEAD_DEFAULT_COLUMNS;
}

/* Prints line cut to columns bytes (control bytes shown as spaces: an error text or id may hold any). */
static void dead_print_cut(const char *line, size_t columns)
{
    size_t n = strlen(line);
    if (n > columns) {
        n = columns;
        while (n > 0 && ((unsigned char)line[n] & 0xC0) == 0x80) n--; /* not inside a UTF-8 sequence */
    }
    for (size_t i = 0; i < n; i++) putchar((unsigned char)line[i] < 0x20 ? ' ' : line[i]);
    putchar('\n');
}

/* One record as a line for people. */
static void dead_print_text(const char *record, size_t len, size_t columns)
{
    char line[2048];
    json_t *o = json_loadb(record, len, 0, NULL);
    const char *error = o ? json_string_value(json_object_get(o, "error")) : NULL;
    json_t *id = o ? json_object_get(o, "id") : NULL;
    char *raw = NULL;
    size_t raw_len = 0;
    if (id) {
        char *id_text = json_dumps(id, JSON_COMPACT | JSON_ENCODE_ANY);
        snprintf(line, sizeof line, "%-*.*s  %3lld  %s", DEAD_ID_COLUMNS, DEAD_ID_COLUMNS, id_text ? id_text : "?",
                 json_integer_value(json_object_get(o, "attempts")), error ? error : "(no reason)");
        free(id_text);
    } else if (result_dead_chunk_raw(record, len, &raw, &raw_len) == 0) {
        chunk_t c;
        char why[256];
        if (chunk_decode_texts(raw, raw_len, &c, why, sizeof why) == 0) {
            snprintf(line, sizeof line, "%-*s  %3s  a whole chunk (%s) of %zu items: %s", DEAD_ID_COLUMNS, "(chunk)",
                     "-", c.id ? c.id : "?", c.n_items, error ? error : "(no reason)");
            chunk_clear(&c);
        } else {
            snprintf(line, sizeof line, "%-*s  %3s  an unreadable chunk (%s): %s", DEAD_ID_COLUMNS, "(chunk)", "-",
                     why, error ? error : "(no reason)");
        }
        free(raw);
    } else {
        snprintf(line, sizeof line, "%-*s  %3s  not a dead record: %.*s", DEAD_ID_COLUMNS, "?", "-",
                 (int)(len > 200 ? 200 : len), record);
    }
    json_decref(o);
    dead_print_cut(line, columns);
}

int cmd_dead(settings_t *s)
{
    keys_t k;
    keys_init(&k, s->queue);
    rconn_t *c = cmd_connect(s);
    if (!c) return EXIT_RUNTIME;
    size_t columns = dead_columns();
    long long total = -1, shown = 0;
    redisReply *r = rconn_command(c, "LLEN %s", k.dead);
    if (r && r->type == REDIS_REPLY_INTEGER) total = r->integer;
    if (r) freeReplyObject(r);
    if (total < 0) {
        LOG(LL_ERROR, "dead: cannot read %s: %s", k.dead, rconn_error(c));
        rconn_free(c);
        return EXIT_RUNTIME;
    }
    long long want = s->limit > 0 && s->limit < total ? s->limit : total;
    if (!s->json && want > 0) printf("%-*s  %3s  %s\n", DEAD_ID_COLUMNS, "ID", "ATT", "REASON");
    while (shown < want) {
        long long last = shown + DEAD_PAGE < want ? shown + DEAD_PAGE - 1 : want - 1;
        r = rconn_command(c, "LRANGE %s %lld %lld", k.dead, shown, last);
        if (!r || r->type != REDIS_REPLY_ARRAY || r->elements == 0) break;
        for (size_t i = 0; i < r->elements; i++) {
            redisReply *e = r->element[i];
            if (e->type != REDIS_REPLY_STRING) continue;
            if (s->json) {
                fwrite(e->str, 1, e->len, stdout);
                putchar('\n');
            } else dead_print_text(e->str, e->len, columns);
        }
        shown += (long long)r->elements;
        freeReplyObject(r);
        r = NULL;
    }
    if (r) freeReplyObject(r);
    rconn_free(c);
    fflush(stdout);
    if (!s->json)
        fprintf(stderr, "%lld of %lld dead records of queue %s shown%s\n", shown, total, s->queue,
                total ? "; chunkd requeue puts them back" : "");
    return 0;
}
