/* ratelimit_math: see ratelimit_math.h. */
#include "ratelimit_math.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

int ratelimit_parse_rate(const char *text, double *per_s)
{
    if (!text || !isdigit((unsigned char)text[0])) return -1;
    /* Plain decimals only: strtod would also take hex, exponents and "inf". */
    size_t digits = strspn(text, "0123456789");
    if (text[digits] == '.') digits += 1 + strspn(text + digits + 1, "0123456789");
    if (text[digits] != '/') return -1;
    char *end = NULL;
    errno = 0;
    double n = strtod(text, &end);
    if (errno || end != text + digits || !isfinite(n) || n <= 0) return -1;
    double unit_s;
    if (strcmp(end, "/s") == 0) unit_s = 1;
    else if (strcmp(end, "/m") == 0) unit_s = 60;
    else return -1;
    double r = n / unit_s;
    if (r > RATELIMIT_MAX_PER_S) return -1;
    *per_s = r;
    return 0;
}

double ratelimit_default_burst(double per_s)
{
    double b = per_s / 10;
    return b < 1 ? 1 : b;
}

long ratelimit_block(double burst, long need)
{
    long cap = burst < 1 ? 1 : (long)floor(burst);
    return need < 1 ? 1 : need < cap ? need : cap;
}

double ratelimit_share(const ratelimit_window_t *w)
{
    if (w->throttled <= 0) return 0;
    if (w->calls < 1) return 1;
    return w->throttled >= w->calls ? 1 : w->throttled / w->calls;
}

static double clamp_rate(double rate, double limit)
{
    double floor_rate = limit * RATELIMIT_FLOOR;
    return rate > limit ? limit : rate < floor_rate ? floor_rate : rate;
}

ratelimit_adapt_t ratelimit_adapt(ratelimit_aimd_t *a, const ratelimit_window_t *w, double limit_per_s)
{
    if (w->first) return RATELIMIT_WARMUP;
    double share = ratelimit_share(w);
    double seconds = w->seconds > 0 ? w->seconds : RATELIMIT_WINDOW_MS / 1000.0;
    double ok_per_s = (w->calls > w->throttled ? w->calls - w->throttled : 0) / seconds;
    double cut_share = a->cut_share, cut_ok_per_s = a->cut_ok_per_s;
    a->cut_share = 0;
    a->cut_ok_per_s = 0;
    if (cut_share > 0 && w->calls >= 1 && share >= cut_share * RATELIMIT_SAME_SHARE &&
        share <= RATELIMIT_MAX_BASELINE &&
        ok_per_s < cut_ok_per_s * RATELIMIT_OK_FELL) {
        /* The cut lowered what the API accepted, not what it refused: these 429s are not the load's. */
        a->baseline = share;
        a->ceiling_per_s = 0;
        a->rate_per_s = clamp_rate(a->rate_per_s / RATELIMIT_DECREASE, limit_per_s);
        return RATELIMIT_UNDONE;
    }
    if (share < a->baseline) a->baseline = share;
    if (w->throttled > 0 && share > a->baseline + RATELIMIT_THRESHOLD) {
        a->rate_per_s = clamp_rate(a->rate_per_s * RATELIMIT_DECREASE, limit_per_s);
        a->cut_share = share;
        a->cut_ok_per_s = ok_per_s;
        a->ceiling_per_s = ok_per_s;
        return RATELIMIT_CUT;
    }
    /* Fast up to near the ceiling, then slowly; a ceiling left well behind without a cut is forgotten. */
    double step = limit_per_s * RATELIMIT_RECOVER * seconds;
    if (a->ceiling_per_s > 0) {
        double near = a->ceiling_per_s * RATELIMIT_NEAR_CEILING;
        if (a->rate_per_s > a->ceiling_per_s * RATELIMIT_PAST_CEILING) a->ceiling_per_s = 0;
        else if (a->rate_per_s + step > near) {
            a->rate_per_s = clamp_rate(fmax(a->rate_per_s, near) + step * RATELIMIT_PROBE_SLOWER, limit_per_s);
            return RATELIMIT_RAISED;
        }
    }
    a->rate_per_s = clamp_rate(a->rate_per_s + step, limit_per_s);
    return RATELIMIT_RAISED;
}
