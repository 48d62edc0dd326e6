#include "arena.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct chunk {
    struct chunk *next;
    size_t size; /* usable bytes after the header */
};

struct arena {
    struct chunk *head; /* chunk being filled; the last one is embedded */
    char *cur, *end;
    size_t next_size;
    size_t footprint;
};

#define ALIGN 8u
#define MAX_CHUNK (64u * 1024u)

void *mesh_xmalloc(size_t size)
{
    void *p = malloc(size ? size : 1);
    if (p == NULL) {
        fputs("fatal: out of memory\n", stderr);
        abort();
    }
    return p;
}

void *mesh_xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (p == NULL) {
        fputs("fatal: out of memory\n", stderr);
        abort();
    }
    return p;
}

void *mesh_xrealloc(void *p, size_t size)
{
    void *q = realloc(p, size ? size : 1);
    if (q == NULL) {
        fputs("fatal: out of memory\n", stderr);
        abort();
    }
    return q;
}

char *mesh_xstrdup(const char *s)
{
    size_t n = strlen(s) + 1;
    return memcpy(mesh_xmalloc(n), s, n);
}

static void add_chunk(arena_t *a, size_t need)
{
    size_t size = a->next_size;
    if (size < need)
        size = need;
    struct chunk *c = mesh_xmalloc(sizeof(*c) + size);
    c->next = a->head;
    c->size = size;
    a->head = c;
    a->cur = (char *)(c + 1);
    a->end = a->cur + size;
    a->footprint += sizeof(*c) + size;
    if (a->next_size < MAX_CHUNK)
        a->next_size *= 2;
}

/* The arena header and its first chunk are one allocation: a small object
 * (a config object compacted to its exact size) costs a single malloc. */
arena_t *arena_new(size_t hint)
{
    if (hint < 64)
        hint = 64;
    if (hint > MAX_CHUNK)
        hint = MAX_CHUNK;
    hint = (hint + ALIGN - 1) & ~(size_t)(ALIGN - 1);
    arena_t *a = mesh_xmalloc(sizeof(*a) + sizeof(struct chunk) + hint);
    struct chunk *c = (struct chunk *)(a + 1);
    c->next = NULL;
    c->size = hint;
    a->head = c;
    a->cur = (char *)(c + 1);
    a->end = a->cur + hint;
    a->next_size = hint < 512 ? 512 : hint;
    a->footprint = sizeof(*a) + sizeof(struct chunk) + hint;
    return a;
}

void arena_free(arena_t *a)
{
    if (a == NULL)
        return;
    struct chunk *embedded = (struct chunk *)(a + 1);
    struct chunk *c = a->head;
    while (c != NULL && c != embedded) {
        struct chunk *next = c->next;
        free(c);
        c = next;
    }
    free(a);
}

void *arena_alloc(arena_t *a, size_t size)
{
    size = (size + ALIGN - 1) & ~(size_t)(ALIGN - 1);
    if (size == 0)
        size = ALIGN;
    if ((size_t)(a->end - a->cur) < size)
        add_chunk(a, size);
    void *p = a->cur;
    a->cur += size;
    memset(p, 0, size);
    return p;
}

char *arena_strndup(arena_t *a, const char *s, size_t len)
{
    char *p = arena_alloc(a, len + 1);
    memcpy(p, s, len);
    p[len] = '\0';
    return p;
}

char *arena_strdup(arena_t *a, const char *s)
{
    return arena_strndup(a, s, strlen(s));
}

size_t arena_footprint(const arena_t *a)
{
    return a->footprint;
}
