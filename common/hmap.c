#include "hmap.h"

#include <stdlib.h>
#include <string.h>

#include "arena.h"

uint32_t hmap_hash(const char *s, uint32_t h)
{
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 16777619u;
    }
    return h;
}

void hmap_clear(hmap_t *m)
{
    free(m->ents);
    m->ents = NULL;
    m->cap = m->n = 0;
}

static hmap_ent_t *find(const hmap_t *m, const char *key, uint32_t h)
{
    if (m->cap == 0)
        return NULL;
    uint32_t mask = m->cap - 1;
    for (uint32_t i = h & mask;; i = (i + 1) & mask) {
        hmap_ent_t *e = &m->ents[i];
        if (e->key == NULL)
            return NULL;
        if (e->hash == h && strcmp(e->key, key) == 0)
            return e;
    }
}

static void insert_new(hmap_ent_t *ents, uint32_t cap, const char *key, void *val, uint32_t h)
{
    uint32_t mask = cap - 1, i = h & mask;
    while (ents[i].key != NULL)
        i = (i + 1) & mask;
    ents[i] = (hmap_ent_t){.key = key, .val = val, .hash = h};
}

static void grow(hmap_t *m)
{
    uint32_t cap = m->cap ? m->cap * 2 : 16;
    hmap_ent_t *ents = mesh_xcalloc(cap, sizeof(*ents));
    for (uint32_t i = 0; i < m->cap; i++)
        if (m->ents[i].key != NULL)
            insert_new(ents, cap, m->ents[i].key, m->ents[i].val, m->ents[i].hash);
    free(m->ents);
    m->ents = ents;
    m->cap = cap;
}

void *hmap_get(const hmap_t *m, const char *key)
{
    hmap_ent_t *e = find(m, key, hmap_hash(key, HMAP_SEED));
    return e ? e->val : NULL;
}

void *hmap_put(hmap_t *m, const char *key, void *val)
{
    uint32_t h = hmap_hash(key, HMAP_SEED);
    hmap_ent_t *e = find(m, key, h);
    if (e != NULL) {
        void *old = e->val;
        e->key = key;
        e->val = val;
        return old;
    }
    if ((m->n + 1) * 4 > m->cap * 3)
        grow(m);
    insert_new(m->ents, m->cap, key, val, h);
    m->n++;
    return NULL;
}

void *hmap_del(hmap_t *m, const char *key)
{
    hmap_ent_t *e = find(m, key, hmap_hash(key, HMAP_SEED));
    if (e == NULL)
        return NULL;
    void *old = e->val;
    uint32_t mask = m->cap - 1, i = (uint32_t)(e - m->ents);
    /* Backward-shift: move later entries of the probe run into the hole when
     * their home slot is not between the hole and their position. */
    for (uint32_t j = (i + 1) & mask; m->ents[j].key != NULL; j = (j + 1) & mask) {
        uint32_t home = m->ents[j].hash & mask;
        int between = i <= j ? (home > i && home <= j) : (home > i || home <= j);
        if (!between) {
            m->ents[i] = m->ents[j];
            i = j;
        }
    }
    m->ents[i] = (hmap_ent_t){0};
    m->n--;
    return old;
}

int hmap_next(const hmap_t *m, size_t *it, const char **key, void **val)
{
    while (*it < m->cap) {
        const hmap_ent_t *e = &m->ents[(*it)++];
        if (e->key != NULL) {
            if (key)
                *key = e->key;
            if (val)
                *val = e->val;
            return 1;
        }
    }
    return 0;
}
