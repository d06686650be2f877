/* idset: see idset.h. */
#include "idset.h"

#include <stdint.h>
#include <stdlib.h>

#include "xalloc.h"

struct idset {
    uint64_t *slots; /* hashes; 0: empty */
    size_t n_slots;  /* a power of two, or 0 */
    size_t n_ids;
};

idset_t *idset_new(void) { return xcalloc(1, sizeof(idset_t)); }

void idset_free(idset_t *s)
{
    if (!s) return;
    free(s->slots);
    free(s);
}

static uint64_t idset_hash(const json_t *id)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a; strings and integers hash apart */
    const unsigned char *p;
    size_t len;
    long long n = 0;
    if (json_is_string(id)) {
        p = (const unsigned char *)json_string_value(id), len = json_string_length(id);
        h = (h ^ 's') * 1099511628211ULL;
    } else {
        n = json_integer_value(id);
        p = (const unsigned char *)&n, len = sizeof n;
    }
    for (size_t i = 0; i < len; i++) h = (h ^ p[i]) * 1099511628211ULL;
    return h ? h : 1;
}

/* The slot that holds h, or the empty one where it would go. */
static size_t idset_slot(const uint64_t *slots, size_t n_slots, uint64_t h)
{
    size_t j = h & (n_slots - 1);
    while (slots[j] && slots[j] != h) j = (j + 1) & (n_slots - 1);
    return j;
}

int idset_add(idset_t *s, const json_t *id)
{
    if (!json_is_string(id) && !json_is_integer(id)) return 0;
    uint64_t h = idset_hash(id);
    if (s->n_slots && s->slots[idset_slot(s->slots, s->n_slots, h)] == h) return 1;
    if (2 * (s->n_ids + 1) > s->n_slots) {
        if (s->n_slots >= IDSET_SLOTS_MAX) return -1;
        size_t n = s->n_slots ? s->n_slots * 2 : 1024;
        uint64_t *grown = xcalloc(n, sizeof *grown);
        for (size_t i = 0; i < s->n_slots; i++)
            if (s->slots[i]) grown[idset_slot(grown, n, s->slots[i])] = s->slots[i];
        free(s->slots);
        s->slots = grown, s->n_slots = n;
    }
    s->slots[idset_slot(s->slots, s->n_slots, h)] = h;
    s->n_ids++;
    return 0;
}

bool idset_has(const idset_t *s, const json_t *id)
{
    if (!s->n_slots || (!json_is_string(id) && !json_is_integer(id))) return false;
    uint64_t h = idset_hash(id);
    return s->slots[idset_slot(s->slots, s->n_slots, h)] == h;
}

size_t idset_count(const idset_t *s) { return s->n_ids; }
