/* tally: see tally.h. */
#include "tally.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "xalloc.h"

typedef struct tally_reason {
    char text[TALLY_REASON_MAX + 1];
    long long count;
} tally_reason_t;

struct tally {
    long long ok, failed;
    tally_reason_t reasons[TALLY_REASONS_MAX + 1]; /* the last one is "other" */
    size_t n_reasons;                              /* used of reasons[0..TALLY_REASONS_MAX) */
    bool window[TALLY_WINDOW];                     /* ring of the last results: true when failed */
    size_t window_at;                              /* next slot to write */
    size_t window_filled;                          /* slots written, up to TALLY_WINDOW */
    size_t window_failed;                          /* failures among them */
    int64_t next_warning_ms;                       /* no warning before this */
};

tally_t *tally_new(void)
{
    tally_t *t = xcalloc(1, sizeof *t);
    snprintf(t->reasons[TALLY_REASONS_MAX].text, sizeof t->reasons[0].text, "other");
    return t;
}

void tally_free(tally_t *t) { free(t); }

long long tally_ok(const tally_t *t) { return t->ok; }
long long tally_failed(const tally_t *t) { return t->failed; }

/* Writes the normalised reason of error into out (TALLY_REASON_MAX + 1 bytes). */
static void tally_normalise(const char *error, char *out)
{
    size_t n = strlen(error);
    const char *gave_up = strstr(error, " (gave up after ");
    if (gave_up) n = (size_t)(gave_up - error);
    if (n > TALLY_REASON_MAX) {
        n = TALLY_REASON_MAX;
        while (n > 0 && ((unsigned char)error[n] & 0xC0) == 0x80) n--; /* not inside a UTF-8 sequence */
    }
    memcpy(out, error, n);
    out[n] = '\0';
}

static void tally_count_reason(tally_t *t, const char *error)
{
    char text[TALLY_REASON_MAX + 1];
    tally_normalise(error, text);
    for (size_t i = 0; i < t->n_reasons; i++) {
        if (strcmp(t->reasons[i].text, text) == 0) {
            t->reasons[i].count++;
            return;
        }
    }
    if (t->n_reasons == TALLY_REASONS_MAX) {
        t->reasons[TALLY_REASONS_MAX].count++;
        return;
    }
    memcpy(t->reasons[t->n_reasons].text, text, sizeof text);
    t->reasons[t->n_reasons++].count = 1;
}

static void tally_window_add(tally_t *t, bool failed)
{
    if (t->window_filled == TALLY_WINDOW && t->window[t->window_at]) t->window_failed--;
    if (t->window_filled < TALLY_WINDOW) t->window_filled++;
    t->window[t->window_at] = failed;
    if (failed) t->window_failed++;
    t->window_at = (t->window_at + 1) % TALLY_WINDOW;
}

void tally_add(tally_t *t, const char *line, size_t len)
{
    /* A result line starts {"id":<id>,"ok":...; an id's string cannot hold an unescaped quote, so the first
     * ,"ok": is the field itself. Only failures, the rarer lines, are parsed. */
    static const char key[] = ",\"ok\":";
    const char *at = memmem(line, len, key, sizeof key - 1);
    if (!at) return;
    size_t rest = len - (size_t)(at - line) - (sizeof key - 1);
    const char *v = at + sizeof key - 1;
    if (rest >= 4 && memcmp(v, "true", 4) == 0) {
        t->ok++;
        tally_window_add(t, false);
        return;
    }
    if (rest < 5 || memcmp(v, "false", 5) != 0) return;
    t->failed++;
    tally_window_add(t, true);
    json_t *o = json_loadb(line, len, 0, NULL);
    const char *error = o ? json_string_value(json_object_get(o, "error")) : NULL;
    tally_count_reason(t, error ? error : "(no error text)");
    json_decref(o);
}

size_t tally_top(const tally_t *t, const char **reasons, long long *counts, size_t max)
{
    size_t n = 0;
    bool taken[TALLY_REASONS_MAX + 1] = {false};
    size_t all = TALLY_REASONS_MAX + 1;
    while (n < max) {
        size_t best = all;
        for (size_t i = 0; i < all; i++) {
            if (taken[i] || t->reasons[i].count == 0) continue;
            if (best == all || t->reasons[i].count > t->reasons[best].count) best = i;
        }
        if (best == all) break;
        taken[best] = true;
        reasons[n] = t->reasons[best].text;
        counts[n++] = t->reasons[best].count;
    }
    return n;
}

bool tally_warning(tally_t *t, int64_t now_ms, char *out, size_t outlen)
{
    if (t->window_filled < TALLY_WINDOW || t->window_failed * 2 <= TALLY_WINDOW) return false;
    if (t->next_warning_ms && now_ms < t->next_warning_ms) return false;
    t->next_warning_ms = now_ms + TALLY_WARN_EVERY_MS;
    const char *reason = NULL;
    long long count = 0;
    tally_top(t, &reason, &count, 1);
    snprintf(out, outlen, "%zu of the last %d results failed (most common so far: %lld x %s)", t->window_failed,
             TALLY_WINDOW, count, reason ? reason : "?");
    return true;
}
