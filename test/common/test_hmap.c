/* Tests of the string-keyed hash map: lookups stay right through growth and
 * deletions (which move entries of a probe run back into the hole). */
#include <setjmp.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "../../common/hmap.h"

enum { N = 5000 };

static void test_put_get_replace_delete(void **state)
{
    (void)state;
    hmap_t m = HMAP_INIT;
    assert_null(hmap_get(&m, "a"));
    assert_null(hmap_del(&m, "a"));
    int one = 1, two = 2;
    assert_null(hmap_put(&m, "a", &one));
    assert_ptr_equal(hmap_get(&m, "a"), &one);
    assert_ptr_equal(hmap_put(&m, "a", &two), &one);
    assert_ptr_equal(hmap_get(&m, "a"), &two);
    assert_int_equal(m.n, 1);
    assert_ptr_equal(hmap_del(&m, "a"), &two);
    assert_null(hmap_get(&m, "a"));
    assert_int_equal(m.n, 0);
    hmap_clear(&m);
}

/* Random puts and deletes checked against a plain array after every step. */
static void test_matches_a_reference_model(void **state)
{
    (void)state;
    static char keys[N][16];
    static bool present[N];
    hmap_t m = HMAP_INIT;
    for (int i = 0; i < N; i++)
        snprintf(keys[i], sizeof(keys[i]), "key-%d", i);
    srand(7);
    size_t live = 0;
    for (int step = 0; step < 4 * N; step++) {
        int i = rand() % N;
        if (rand() % 3 == 0) {
            void *v = hmap_del(&m, keys[i]);
            assert_ptr_equal(v, present[i] ? keys[i] : NULL);
            live -= present[i];
            present[i] = false;
        } else {
            void *v = hmap_put(&m, keys[i], keys[i]);
            assert_ptr_equal(v, present[i] ? keys[i] : NULL);
            live += !present[i];
            present[i] = true;
        }
        assert_int_equal(m.n, live);
        if (step % 997 == 0)
            for (int j = 0; j < N; j++)
                assert_ptr_equal(hmap_get(&m, keys[j]), present[j] ? keys[j] : NULL);
    }
    for (int j = 0; j < N; j++)
        assert_ptr_equal(hmap_get(&m, keys[j]), present[j] ? keys[j] : NULL);

    size_t it = 0, seen = 0;
    const char *k;
    void *v;
    while (hmap_next(&m, &it, &k, &v)) {
        assert_ptr_equal(k, v);
        seen++;
    }
    assert_int_equal(seen, live);
    hmap_clear(&m);
    assert_int_equal(m.n, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_put_get_replace_delete),
        cmocka_unit_test(test_matches_a_reference_model),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
