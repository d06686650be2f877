/* list: the one intrusive doubly linked list of chunkd, and the one container_of.
 *
 * A list_node_t is embedded in the struct it links; container_of() gets the struct back. A list_t is a circular
 * list around a sentinel node, so push, remove and "is it linked" are O(1) without branches on the ends. Call
 * list_init() on a list before use (a zeroed list_t is not valid). A node that is not in a list has next == NULL
 * (zeroed memory, or after list_remove), so list_linked() tells whether it is in one; a node is in at most one
 * list at a time. No allocation, no locking: the list's owner serializes access. */
#ifndef CHUNKD_LIST_H
#define CHUNKD_LIST_H

#include <assert.h>
#include <stdbool.h>
#include <stddef.h>

/* The struct of type `type` whose member `member` is at ptr. */
#define container_of(ptr, type, member) ((type *)(void *)((char *)(ptr) - offsetof(type, member)))

typedef struct list_node {
    struct list_node *prev, *next;
} list_node_t;

typedef struct list {
    list_node_t head; /* sentinel: head.next is the first node, head.prev the last */
} list_t;

static inline void list_init(list_t *l) { l->head.prev = l->head.next = &l->head; }

static inline bool list_empty(const list_t *l)
{
    assert(l->head.next && "list_init() was not called");
    return l->head.next == &l->head;
}

static inline bool list_linked(const list_node_t *n) { return n->next != NULL; }

/* The first node, or NULL when the list is empty. */
static inline list_node_t *list_first(const list_t *l) { return list_empty(l) ? NULL : l->head.next; }

/* The struct (of type `type`, linked by `member`) first in l, or NULL when l is empty. */
#define list_first_entry(l, type, member) (list_empty(l) ? NULL : container_of((l)->head.next, type, member))

/* The node after n in l, or NULL when n is the last. */
static inline list_node_t *list_next(const list_t *l, const list_node_t *n)
{
    return n->next == &l->head ? NULL : n->next;
}

static inline void list_insert_between_(list_node_t *n, list_node_t *prev, list_node_t *next)
{
    assert(!list_linked(n) && "a node is in one list at a time");
    n->prev = prev;
    n->next = next;
    prev->next = n;
    next->prev = n;
}

static inline void list_push_back(list_t *l, list_node_t *n) { list_insert_between_(n, l->head.prev, &l->head); }
static inline void list_push_front(list_t *l, list_node_t *n) { list_insert_between_(n, &l->head, l->head.next); }

/* Unlinks n from the list it is in. Returns false (and does nothing) when it was in none. */
static inline bool list_remove(list_node_t *n)
{
    if (!list_linked(n)) return false;
    n->prev->next = n->next;
    n->next->prev = n->prev;
    n->prev = n->next = NULL;
    return true;
}

/* Moves every node of from to the end of to, in order; from is left empty. O(1). */
static inline void list_splice_back(list_t *to, list_t *from)
{
    if (list_empty(from)) return;
    list_node_t *first = from->head.next, *last = from->head.prev;
    first->prev = to->head.prev;
    to->head.prev->next = first;
    last->next = &to->head;
    to->head.prev = last;
    list_init(from);
}

/* Walks l; the current node may be removed (or freed) inside the loop. */
#define list_for_each_safe(node, tmp, l)                                                                           \
    for (list_node_t *node = list_first(l), *tmp = node ? list_next((l), node) : NULL; node;                      \
         node = tmp, tmp = node ? list_next((l), node) : NULL)

#endif
