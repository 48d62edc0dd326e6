/*
 * blkcache: per-thread caches of memory blocks in the sizes connection
 * buffers come in (1, 2, 4, 8 and 16 KiB).
 *
 * A block of a kilobyte or more takes malloc's slow path, which first
 * consolidates every small free chunk; a proxy that allocates and frees a
 * few such blocks per request pays for that on every request. A worker
 * thread keeps the blocks of each size that its connections
 * let go of, up to PX_BLK_KEEP_BYTES of each size, and hands them to the
 * next ones: an HTTP/2 connection finishing a few hundred streams at once
 * gives back that many buffers, all wanted again in the next round.
 *
 * Only threads between px_blk_enable() and px_blk_disable() cache; on any
 * other thread px_blk_get() is malloc() and px_blk_put() is free(). Blocks
 * are plain malloc memory either way: realloc() and free() accept them.
 */
#ifndef MESH_PROXY_BLKCACHE_H
#define MESH_PROXY_BLKCACHE_H

#include <stddef.h>

#define PX_BLK_MIN 1024u
#define PX_BLK_MAX 16384u
#define PX_BLK_KEEP_BYTES (1024u * 1024u)

/* This thread caches from now on. */
void px_blk_enable(void);
/* Frees what this thread holds and stops caching. */
void px_blk_disable(void);
/* A block of `size` bytes (sizes other than the cached ones are plain
 * malloc), NULL when out of memory. */
void *px_blk_get(size_t size);
/* Moves a block (NULL: none yet) of old_size bytes, of which the first
 * `used` are live, to one of new_size bytes (more than old_size): from the
 * cache up to PX_BLK_MAX, by realloc above. NULL when out of memory (the
 * old block is then untouched). */
void *px_blk_grow(void *p, size_t used, size_t old_size, size_t new_size);
/* Gives back a block of `size` bytes (NULL is ignored). */
void px_blk_put(void *p, size_t size);
/* Blocks this thread holds now (for tests). */
size_t px_blk_held(void);

#endif
