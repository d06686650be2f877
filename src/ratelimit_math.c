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
