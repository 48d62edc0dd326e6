/*
 * The per-thread block cache (proxy/blkcache.c): blocks given back are
 * handed out again in their size, each size keeps at most
 * PX_BLK_KEEP_BYTES, other sizes and threads that never enabled it go
 * straight to malloc, and disabling frees what was held.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "../../proxy/blkcache.h"

static void test_blocks_come_back_in_their_size(void **state)
{
    (void)state;
    px_blk_enable();
    char *a = px_blk_get(4096), *b = px_blk_get(16384);
    assert_non_null(a);
    assert_non_null(b);
    memset(a, 1, 4096); /* the whole size is usable */
    memset(b, 2, 16384);
    px_blk_put(a, 4096);
    px_blk_put(b, 16384);
    assert_int_equal(px_blk_held(), 2);
    assert_ptr_equal(px_blk_get(16384), b); /* by size, not by order */
    assert_ptr_equal(px_blk_get(4096), a);
    assert_int_equal(px_blk_held(), 0);
    /* growing: the live bytes move, the old block comes back */
    memcpy(a, "live", 4);
    char *g = px_blk_grow(a, 4, 4096, 8192);
    assert_non_null(g);
    assert_memory_equal(g, "live", 4);
    assert_int_equal(px_blk_held(), 1);
    assert_ptr_equal(px_blk_get(4096), a);
    px_blk_put(a, 4096);
    g = px_blk_grow(g, 4, 8192, 65536); /* past the cached sizes: realloc */
    assert_non_null(g);
    assert_memory_equal(g, "live", 4);
    assert_int_equal(px_blk_held(), 1);
    px_blk_put(g, 65536); /* not a cached size: freed */
    assert_ptr_equal(px_blk_get(4096), a);
    free(a); /* blocks are malloc memory */
    px_blk_put(b, 16384);
    px_blk_put(NULL, 4096);
    assert_int_equal(px_blk_held(), 1);
    char *c = px_blk_get(3000); /* not a cached size: malloc */
    assert_non_null(c);
    assert_int_equal(px_blk_held(), 1);
    px_blk_put(c, 3000);
    assert_int_equal(px_blk_held(), 1);
    px_blk_disable(); /* frees b (ASan's leak check would say otherwise) */
    assert_int_equal(px_blk_held(), 0);
}

static void test_each_size_keeps_a_bounded_amount(void **state)
{
    (void)state;
    px_blk_enable();
    enum { N = 400 };
    void *p[N];
    for (int i = 0; i < N; i++)
        p[i] = px_blk_get(4096);
    for (int i = 0; i < N; i++)
        px_blk_put(p[i], 4096);
    assert_int_equal(px_blk_held(), PX_BLK_KEEP_BYTES / 4096);
    for (int i = 0; i < N; i++)
        p[i] = px_blk_get(1024);
    for (int i = 0; i < N; i++)
        px_blk_put(p[i], 1024);
    assert_int_equal(px_blk_held(), PX_BLK_KEEP_BYTES / 4096 + N); /* 1 KiB: up to 1,024 */
    px_blk_disable();
    px_blk_disable(); /* twice is harmless */
}

static void *other_thread(void *arg)
{
    (void)arg;
    void *a = px_blk_get(4096);
    px_blk_put(a, 4096);
    return (void *)(size_t)px_blk_held();
}

static void test_only_enabled_threads_cache(void **state)
{
    (void)state;
    px_blk_enable();
    pthread_t t;
    void *held = (void *)1;
    assert_int_equal(pthread_create(&t, NULL, other_thread, NULL), 0);
    pthread_join(t, &held);
    assert_null(held);
    assert_int_equal(px_blk_held(), 0);
    px_blk_disable();
    void *a = px_blk_get(4096); /* disabled here too: plain malloc and free */
    px_blk_put(a, 4096);
    assert_int_equal(px_blk_held(), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_blocks_come_back_in_their_size),
        cmocka_unit_test(test_each_size_keeps_a_bounded_amount),
        cmocka_unit_test(test_only_enabled_threads_cache),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
