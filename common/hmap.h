/*
 * hmap: a string-keyed hash map of pointers (open addressing, linear probing,
 * deletion without tombstones).
 *
 * The map stores the key pointer, not a copy: the key must stay valid and
 * unchanged while its entry is in the map (usually it lives in the value).
 * Not thread-safe.
 */
#ifndef MESH_HMAP_H
#define MESH_HMAP_H

#include <stddef.h>
#include <stdint.h>

typedef struct hmap_ent {
    const char *key; /* NULL: empty slot */
    void *val;
    uint32_t hash;
} hmap_ent_t;

typedef struct hmap {
    hmap_ent_t *ents;
    uint32_t cap; /* 0 or a power of two */
    uint32_t n;
} hmap_t;

#define HMAP_INIT {NULL, 0, 0}

/* FNV-1a of a NUL-terminated string, continuing from h (start with HMAP_SEED). */
#define HMAP_SEED 2166136261u
uint32_t hmap_hash(const char *s, uint32_t h);

/* Frees the table (not the keys or values) and leaves an empty map. */
void hmap_clear(hmap_t *m);
/* The value of key, or NULL. */
void *hmap_get(const hmap_t *m, const char *key);
/* Sets key to val; returns the value it replaced, or NULL. When replacing,
 * the map keeps the new key pointer. */
void *hmap_put(hmap_t *m, const char *key, void *val);
/* Removes key; returns its value, or NULL. */
void *hmap_del(hmap_t *m, const char *key);
/* Iteration: size_t it = 0; while (hmap_next(m, &it, &key, &val)) ...
 * The map must not change during the iteration. */
int hmap_next(const hmap_t *m, size_t *it, const char **key, void **val);

#endif
