/* Tests of the shared base64 codec (common/b64.c). */
#include <stdlib.h>
#include <string.h>

#include "../testutil.h"
#include "../../common/b64.h"

static void check_decode(const char *in, const char *want)
{
    size_t n = 0;
    unsigned char *out = b64_decode(in, strlen(in), &n);
    assert_non_null(out);
    assert_int_equal(n, strlen(want));
    assert_memory_equal(out, want, n);
    assert_int_equal(out[n], 0);
    free(out);
}

static void test_round_trip(void **state)
{
    (void)state;
    const char *const samples[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar", NULL};
    const char *const encoded[] = {"", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};
    for (int i = 0; samples[i]; i++) {
        char *e = b64_encode(samples[i], strlen(samples[i]));
        assert_string_equal(e, encoded[i]);
        free(e);
        check_decode(encoded[i], samples[i]);
    }
    unsigned char bin[256];
    for (int i = 0; i < 256; i++)
        bin[i] = (unsigned char)i;
    char *e = b64_encode(bin, sizeof(bin));
    size_t n;
    unsigned char *d = b64_decode(e, strlen(e), &n);
    assert_int_equal(n, sizeof(bin));
    assert_memory_equal(d, bin, n);
    free(d);
    free(e);
}

static void test_forms_accepted(void **state)
{
    (void)state;
    check_decode("Zm9vYg", "foob"); /* no padding (JWT) */
    check_decode("Zm9v\nYmFy\r\n", "foobar"); /* line breaks (PEM-style, kubectl) */
    check_decode("-_8", "\xfb\xff"); /* URL-safe alphabet */
    check_decode("+/8=", "\xfb\xff");
}

static void test_invalid_refused(void **state)
{
    (void)state;
    const char *const bad[] = {"Zm9v!", "Zg==Zg", "Z", "Zm9vY", "ä", NULL};
    for (int i = 0; bad[i]; i++) {
        size_t n = 0;
        assert_null(b64_decode(bad[i], strlen(bad[i]), &n));
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_forms_accepted),
        cmocka_unit_test(test_invalid_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
