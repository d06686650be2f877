/* lastonly: see lastonly.h. */
#include "lastonly.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "xalloc.h"

typedef struct lastonly_line {
    char *text;    /* owned, with its newline */
    size_t len;
    bool keep;
} lastonly_line_t;

/* The id of a result line as compact JSON text (malloc'd) and its seq, or NULL when it has not both. A seq is
 * "<ms>-<n>-<i>" (line i of stream entry ms-n), or "<ms>-<n>" from collectors before one entry held several lines
 * (i is 0 then). */
static char *lastonly_key(const char *text, size_t len, uint64_t seq[3])
{
    json_t *o = json_loadb(text, len, 0, NULL);
    const char *s = o ? json_string_value(json_object_get(o, "seq")) : NULL;
    json_t *id = o ? json_object_get(o, "id") : NULL;
    char *key = NULL;
    seq[2] = 0;
    if (s && id && sscanf(s, "%" SCNu64 "-%" SCNu64 "-%" SCNu64, &seq[0], &seq[1], &seq[2]) >= 2)
        key = json_dumps(id, JSON_COMPACT | JSON_ENCODE_ANY);
    json_decref(o);
    return key;
}

static bool lastonly_seq_less(const uint64_t a[3], const uint64_t b[3])
{
    for (size_t k = 0; k < 3; k++)
        if (a[k] != b[k]) return a[k] < b[k];
    return false;
}

/* Marks which lines to keep: for each id the one with the highest seq. */
static void lastonly_mark(lastonly_line_t *lines, size_t n)
{
    json_t *best = json_object(); /* id text -> [index, seq ms, seq n, seq i] */
    for (size_t i = 0; i < n; i++) {
        uint64_t seq[3];
        char *key = lastonly_key(lines[i].text, lines[i].len, seq);
        lines[i].keep = true;
        if (!key) continue;
        json_t *b = json_object_get(best, key);
        if (b) {
            uint64_t had[3];
            for (size_t k = 0; k < 3; k++) had[k] = (uint64_t)json_integer_value(json_array_get(b, k + 1));
            if (lastonly_seq_less(seq, had)) {
                lines[i].keep = false;
                free(key);
                continue;
            }
            lines[json_integer_value(json_array_get(b, 0))].keep = false;
        }
        json_object_set_new(best, key, json_pack("[IIII]", (json_int_t)i, (json_int_t)seq[0], (json_int_t)seq[1],
                                                 (json_int_t)seq[2]));
        free(key);
    }
    json_decref(best);
}

/* Writes the kept lines to tmp and renames it over path. Returns 0 or -1 with the reason in err. */
static int lastonly_write(const char *path, const char *tmp, const lastonly_line_t *lines, size_t n, char *err,
                          size_t errlen)
{
    FILE *f = fopen(tmp, "w");
    if (!f) {
        snprintf(err, errlen, "--last-only: cannot create %s: %s", tmp, strerror(errno));
        return -1;
    }
    bool ok = true;
    for (size_t i = 0; i < n && ok; i++)
        if (lines[i].keep) ok = fwrite(lines[i].text, 1, lines[i].len, f) == lines[i].len;
    ok = ok && fflush(f) == 0 && fdatasync(fileno(f)) == 0;
    if (fclose(f)) ok = false;
    if (!ok || rename(tmp, path)) {
        snprintf(err, errlen, "--last-only: cannot write %s: %s", ok ? path : tmp, strerror(errno));
        unlink(tmp);
        return -1;
    }
    return 0;
}

int lastonly_rewrite(const char *path, long long *kept, long long *dropped, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "--last-only: cannot read %s: %s", path, strerror(errno));
        return -1;
    }
    lastonly_line_t *lines = NULL;
    size_t n = 0, cap = 0, bufcap = 0;
    char *buf = NULL;
    ssize_t got;
    while ((got = getline(&buf, &bufcap, f)) > 0) {
        if (n == cap) {
            cap = cap ? cap * 2 : 1024;
            lines = xrealloc(lines, cap * sizeof *lines);
        }
        lines[n].text = xmalloc((size_t)got + 1);
        memcpy(lines[n].text, buf, (size_t)got + 1);
        lines[n++].len = (size_t)got;
    }
    free(buf);
    bool read_error = ferror(f);
    fclose(f);
    int rc = -1;
    if (read_error) {
        snprintf(err, errlen, "--last-only: cannot read %s", path);
    } else {
        lastonly_mark(lines, n);
        size_t tmplen = strlen(path) + 16;
        char *tmp = xmalloc(tmplen);
        snprintf(tmp, tmplen, "%s.last-only", path);
        rc = lastonly_write(path, tmp, lines, n, err, errlen);
        free(tmp);
    }
    *kept = *dropped = 0;
    for (size_t i = 0; i < n; i++) {
        if (lines[i].keep) ++*kept;
        else ++*dropped;
        free(lines[i].text);
    }
    free(lines);
    return rc;
}
