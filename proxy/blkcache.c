/* Per-thread block caches: see blkcache.h. */
#include "blkcache.h"

#include <stdlib.h>
#include <string.h>

#define NCLASS 5 /* 1, 2, 4, 8, 16 KiB */
#define KEEP(k) (PX_BLK_KEEP_BYTES / (PX_BLK_MIN << (k)))

typedef struct blk_cache {
    void **blk[NCLASS]; /* KEEP(k) slots each, in one allocation */
    unsigned n[NCLASS];
    void *slots[];
} blk_cache_t;

static __thread blk_cache_t *cache;

/* The class of an exact block size, or -1. */
static int class_of(size_t size)
{
    int k = 0;
    for (size_t s = PX_BLK_MIN; s <= PX_BLK_MAX; s *= 2, k++)
        if (s == size)
            return k;
    return -1;
}

void px_blk_enable(void)
{
    if (cache)
        return;
    size_t nslots = 0;
    for (int k = 0; k < NCLASS; k++)
        nslots += KEEP(k);
    blk_cache_t *c = calloc(1, sizeof(*c) + nslots * sizeof(void *));
    if (c == NULL)
        return; /* without it, blocks are plain malloc */
    for (int k = 0, at = 0; k < NCLASS; at += (int)KEEP(k), k++)
        c->blk[k] = c->slots + at;
    cache = c;
}

void px_blk_disable(void)
{
    blk_cache_t *c = cache;
    if (c == NULL)
        return;
    cache = NULL;
    for (int k = 0; k < NCLASS; k++)
        while (c->n[k])
            free(c->blk[k][--c->n[k]]);
    free(c);
}

void *px_blk_get(size_t size)
{
    blk_cache_t *c = cache;
    int k = c ? class_of(size) : -1;
    if (k >= 0 && c->n[k])
        return c->blk[k][--c->n[k]];
    return malloc(size);
}

void px_blk_put(void *p, size_t size)
{
    if (p == NULL)
        return;
    blk_cache_t *c = cache;
    int k = c ? class_of(size) : -1;
    if (k >= 0 && c->n[k] < KEEP(k)) {
        c->blk[k][c->n[k]++] = p;
        return;
    }
    free(p);
}

void *px_blk_grow(void *p, size_t used, size_t old_size, size_t new_size)
{
    if (new_size > PX_BLK_MAX)
        return realloc(p, new_size);
    void *n = px_blk_get(new_size);
    if (n == NULL)
        return NULL;
    if (used)
        memcpy(n, p, used);
    px_blk_put(p, old_size);
    return n;
}

size_t px_blk_held(void)
{
    size_t t = 0;
    for (int k = 0; cache && k < NCLASS; k++)
        t += cache->n[k];
    return t;
}
