/* progress: see progress.h. */
#include "progress.h"

#include <stdio.h>
#include <string.h>

double progress_rate_update(progress_rate_t *r, long long done, int64_t now_ms)
{
    if (r->last_ms && now_ms > r->last_ms)
        r->per_s = (double)(done - r->last_done) * 1000.0 / (double)(now_ms - r->last_ms);
    if (r->per_s < 0) r->per_s = 0;
    r->last_done = done;
    r->last_ms = now_ms;
    return r->per_s;
}

/* 1234567 -> "1,234,567". */
static void group(char *out, size_t outlen, long long v)
{
    char digits[32];
    snprintf(digits, sizeof digits, "%lld", v < 0 ? -v : v);
    size_t n = strlen(digits), o = 0;
    if (v < 0 && o + 1 < outlen) out[o++] = '-';
    for (size_t i = 0; i < n && o + 2 < outlen; i++) {
        if (i && (n - i) % 3 == 0) out[o++] = ',';
        out[o++] = digits[i];
    }
    out[o] = '\0';
}

static void duration(char *out, size_t outlen, double s)
{
    long long t = (long long)(s + 0.5);
    if (t < 60) snprintf(out, outlen, "%llds", t);
    else if (t < 3600) snprintf(out, outlen, "%lldm%02llds", t / 60, t % 60);
    else snprintf(out, outlen, "%lldh%02lldm", t / 3600, (t % 3600) / 60);
}

char *progress_format(char *out, size_t outlen, long long done, long long total, double per_s, int bar_width)
{
    char bar[130] = "", d[32], t[32], rate[32], eta[32] = "-";
    double frac = total > 0 ? (double)done / (double)total : 0;
    if (frac > 1) frac = 1;
    if (bar_width > 0) {
        if (bar_width > 120) bar_width = 120;
        int full = (int)(frac * bar_width + 1e-9);
        bar[0] = '[';
        for (int i = 0; i < bar_width; i++) bar[1 + i] = i < full ? '#' : '-';
        bar[1 + bar_width] = ']';
        bar[2 + bar_width] = ' ';
        bar[3 + bar_width] = '\0';
    }
    group(d, sizeof d, done);
    group(t, sizeof t, total);
    group(rate, sizeof rate, (long long)(per_s + 0.5));
    if (per_s > 0 && total > done) duration(eta, sizeof eta, (double)(total - done) / per_s);
    else if (total > 0 && done >= total) snprintf(eta, sizeof eta, "0s");
    snprintf(out, outlen, "%s%5.1f%%  %s/%s  %s/s  ETA %s", bar, frac * 100.0, d, t, rate, eta);
    return out;
}
