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

long ratelimit_block(double granted_per_s, double burst, long need)
{
    double b = floor(granted_per_s * RATELIMIT_BLOCK_MS / 1000.0 + 0.5);
    if (b > burst) b = floor(burst);
    if (b < 1) b = 1;
    long n = (long)b;
    if (need < n) n = need < 1 ? 1 : need;
    return n;
}

double ratelimit_ewma(double avg_per_s, double granted, double dt_s)
{
    if (dt_s <= 0) return avg_per_s;
    double alpha = 1 - exp(-dt_s / RATELIMIT_EWMA_TAU_S);
    return avg_per_s + alpha * (granted / dt_s - avg_per_s);
}
