/*
 * libFuzzer target: meshproxy's ClientHello peek (px_tls_parse_hello in
 * proxy/tls.c), which reads the first bytes of every connection on a
 * listener with TLS filter chains.
 *
 * Invariants checked with __builtin_trap():
 *  - the SNI and every ALPN name are NUL-terminated inside their buffers, and
 *    hold no byte past that NUL's position other than zeros (the output is
 *    fully written); nalpn <= PX_TLS_MAX_ALPN and no kept name is empty;
 *  - a result other than PX_HELLO_TLS leaves the output empty;
 *  - more bytes never turn an answer back: when a prefix is TLS or NOT_TLS,
 *    the whole input gives the same answer with the same SNI and ALPN (the
 *    parser decides on the first record only), and when the whole input is
 *    MORE, every prefix is MORE too;
 *  - a TLS answer needs at least a record header and a handshake header.
 *
 * Build with `make fuzz`; run with test/fuzz/run.sh (see README.md there).
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../proxy/tls_internal.h"

static void check_str(const char *s, size_t cap)
{
    const char *nul = memchr(s, 0, cap);
    if (nul == NULL)
        __builtin_trap();
    for (const char *p = nul; p < s + cap; p++)
        if (*p != 0)
            __builtin_trap();
}

static void check_out(px_hello_result_t r, const px_hello_t *h)
{
    if (r != PX_HELLO_MORE && r != PX_HELLO_NOT_TLS && r != PX_HELLO_TLS)
        __builtin_trap();
    check_str(h->sni, sizeof h->sni);
    if (h->nalpn > PX_TLS_MAX_ALPN)
        __builtin_trap();
    for (size_t i = 0; i < PX_TLS_MAX_ALPN; i++) {
        check_str(h->alpn[i], sizeof h->alpn[i]);
        if ((i < h->nalpn) != (h->alpn[i][0] != 0))
            __builtin_trap();
    }
    if (r != PX_HELLO_TLS && (h->sni[0] != 0 || h->nalpn != 0))
        __builtin_trap();
}

static bool same(const px_hello_t *a, const px_hello_t *b)
{
    return memcmp(a, b, sizeof *a) == 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* Copy into an exact-size buffer so reads past the input are caught. */
    uint8_t *buf = malloc(size ? size : 1);
    px_hello_t *whole = malloc(sizeof *whole), *part = malloc(sizeof *part);
    if (buf == NULL || whole == NULL || part == NULL)
        goto out;
    memcpy(buf, data, size);
    /* poison the outputs: the parser must write all of them */
    memset(whole, 0xa5, sizeof *whole);
    px_hello_result_t r = px_tls_parse_hello(buf, size, whole);
    check_out(r, whole);
    if (r == PX_HELLO_TLS && size < 5 + 4)
        __builtin_trap();

    /* a prefix cut where the last input byte says */
    size_t cut = size ? (size_t)data[size - 1] * 67 % (size + 1) : 0;
    memset(part, 0x5a, sizeof *part);
    px_hello_result_t rp = px_tls_parse_hello(buf, cut, part);
    check_out(rp, part);
    if (rp != PX_HELLO_MORE && (rp != r || !same(part, whole)))
        __builtin_trap();
    if (r == PX_HELLO_MORE && rp != PX_HELLO_MORE)
        __builtin_trap();
out:
    free(buf);
    free(whole);
    free(part);
    return 0;
}
