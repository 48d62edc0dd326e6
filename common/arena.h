/*
 * arena: one allocator per lifetime (a config object, a parse, a request).
 *
 * Allocations are bump-pointer from chunks owned by the arena and are freed
 * together by arena_free(). Memory is returned zeroed. The control plane
 * aborts on out-of-memory through mesh_xmalloc(); nothing here returns NULL.
 */
#ifndef MESH_ARENA_H
#define MESH_ARENA_H

#include <stddef.h>

typedef struct arena arena_t;

/* Creates an arena whose first chunk holds about `hint` bytes. */
arena_t *arena_new(size_t hint);
/* Frees every allocation of the arena and the arena itself. NULL is ignored. */
void arena_free(arena_t *a);
/* Zeroed, 8-byte aligned memory that lives until arena_free(). */
void *arena_alloc(arena_t *a, size_t size);
/* NUL-terminated copy of s[0..len). */
char *arena_strndup(arena_t *a, const char *s, size_t len);
char *arena_strdup(arena_t *a, const char *s);
/* Bytes reserved from the system by this arena (chunks included). */
size_t arena_footprint(const arena_t *a);

/* malloc/calloc/realloc that abort the process on out-of-memory. */
void *mesh_xmalloc(size_t size);
void *mesh_xcalloc(size_t n, size_t size);
void *mesh_xrealloc(void *p, size_t size);
char *mesh_xstrdup(const char *s);

#endif
