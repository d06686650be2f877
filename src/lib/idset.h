/* idset: a set of item ids (JSON strings and integers) held as 64-bit hashes, with bounded memory.
 *
 * An open-addressing table of FNV-1a hashes (0 marks an empty slot) that doubles up to IDSET_SLOTS_MAX slots
 * (32 MiB): it holds at most IDSET_SLOTS_MAX / 2 ids (2,097,152); past that it is full and adds nothing more. Two
 * different ids with the same hash (about n^2 / 2^65 for n ids) look the same. enqueue uses it to warn about
 * repeated ids, run --resume to skip the ids already in its output. */
#ifndef CHUNKD_IDSET_H
#define CHUNKD_IDSET_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#define IDSET_SLOTS_MAX ((size_t)1 << 22)

typedef struct idset idset_t;

idset_t *idset_new(void);
void idset_free(idset_t *s);
/* Adds id (a string or integer; anything else is ignored: returns 0). Returns 1 when it was in the set already, 0
 * when added, -1 when the set is full (not added). */
int idset_add(idset_t *s, const json_t *id);
bool idset_has(const idset_t *s, const json_t *id);
size_t idset_count(const idset_t *s);

#endif
