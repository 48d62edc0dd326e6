/*
 * libFuzzer target: the proxy's HTTP/1.1 codec (proxy/http1.c).
 *
 * The same bytes go through the request parser, the response parser and the
 * chunked decoder. Invariants checked with __builtin_trap():
 *  - a head's length never exceeds the input, and every slice (method,
 *    target, reason, names, values, Host) lies inside the head;
 *  - parsing only the head's bytes gives the same length (what follows the
 *    head never changes where it ends), and every strict prefix of a head
 *    asks for more bytes or fails, never reports a shorter head;
 *  - an error always carries a reason and a 4xx/5xx status;
 *  - framing is never both chunked and a length, and a head never holds CR,
 *    LF or NUL inside a name or value;
 *  - the chunked decoder, fed the bytes in two pieces at a split taken from
 *    the input, yields the same data and trailers as when fed at once.
 *
 * Build with `make fuzz`; run with test/fuzz/run.sh (see README.md there).
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../proxy/http1_internal.h"

static void check_slice(const char *head, size_t hlen, const char *p, size_t n)
{
    if (n == 0)
        return;
    if (p < head || p + n > head + hlen)
        __builtin_trap();
}

static void check_msg(const char *buf, size_t len, int r, const px_h1_msg_t *m, const char *err)
{
    if (r == -1) {
        if (err == NULL || m->status < 400 || m->status > 599)
            __builtin_trap();
        return;
    }
    if (r == -2)
        return;
    if (r <= 0 || (size_t)r > len)
        __builtin_trap();
    size_t hlen = (size_t)r;
    check_slice(buf, hlen, m->method, m->method_len);
    check_slice(buf, hlen, m->target, m->target_len);
    check_slice(buf, hlen, m->reason, m->reason_len);
    check_slice(buf, hlen, m->host, m->host_len);
    if (m->nheaders > PX_H1_MAX_HEADERS)
        __builtin_trap();
    for (size_t i = 0; i < m->nheaders; i++) {
        const px_h1_header_t *h = &m->headers[i];
        if (h->name_len == 0)
            __builtin_trap();
        check_slice(buf, hlen, h->name, h->name_len);
        check_slice(buf, hlen, h->value, h->value_len);
        if (memchr(h->value, '\r', h->value_len) || memchr(h->value, '\n', h->value_len) ||
            memchr(h->value, '\0', h->value_len) || memchr(h->name, ':', h->name_len))
            __builtin_trap();
    }
    if (m->body == PX_H1_BODY_CHUNKED && m->content_length != 0)
        __builtin_trap();
    if (m->body == PX_H1_BODY_LENGTH && m->content_length == 0)
        __builtin_trap();
}

static void fuzz_request(const char *buf, size_t len)
{
    px_h1_msg_t *m = malloc(sizeof(*m));
    const char *err = NULL;
    if (m == NULL)
        return;
    int r = px_h1_parse_request(buf, len, m, &err);
    check_msg(buf, len, r, m, err);
    if (r > 0) {
        size_t hlen = (size_t)r;
        /* The head alone parses to the same length. */
        if (px_h1_parse_request(buf, hlen, m, &err) != r)
            __builtin_trap();
        /* A strict prefix never looks like a complete, shorter head. */
        int p = px_h1_parse_request(buf, hlen - 1, m, &err);
        if (p >= 0)
            __builtin_trap();
    }
    free(m);
}

static void fuzz_response(const char *buf, size_t len, int flags)
{
    px_h1_msg_t *m = malloc(sizeof(*m));
    const char *err = NULL;
    if (m == NULL)
        return;
    int r = px_h1_parse_response(buf, len, flags & 1, flags & 2, m, &err);
    check_msg(buf, len, r, m, err);
    if (r > 0 && px_h1_parse_response(buf, (size_t)r, flags & 1, flags & 2, m, &err) != r)
        __builtin_trap();
    free(m);
}

struct decoded {
    char *data;
    size_t len;
    char *trailer;
    size_t tlen;
    int result; /* 0 complete, -1 error, -2 incomplete */
};

/* Feeds buf to a chunked decoder in two pieces, keeping unconsumed bytes as
 * a caller would. */
static void decode(const char *buf, size_t len, size_t split, struct decoded *out)
{
    px_h1_chunked_t d;
    px_h1_chunked_init(&d);
    char *pending = malloc(len + 1);
    out->data = malloc(len + 1);
    out->trailer = malloc(len + 1);
    out->len = out->tlen = 0;
    out->result = -2;
    if (pending == NULL || out->data == NULL || out->trailer == NULL) {
        out->result = -3;
        free(pending);
        return;
    }
    size_t plen = 0, fed = 0;
    for (int piece = 0; piece < 2 && out->result == -2; piece++) {
        size_t upto = piece == 0 ? split : len;
        memcpy(pending + plen, buf + fed, upto - fed);
        plen += upto - fed;
        fed = upto;
        for (;;) {
            size_t used;
            const char *data, *err = NULL;
            size_t dlen;
            int r = px_h1_chunked_decode(&d, pending, plen, &used, &data, &dlen, &err);
            if (used > plen)
                __builtin_trap();
            if (r == -1) {
                if (err == NULL)
                    __builtin_trap();
                out->result = -1;
                break;
            }
            if (r == 1 || r == 0) {
                check_slice(pending, plen, data, dlen);
                if (r == 1 && dlen == 0)
                    __builtin_trap();
            }
            if (r == 1) {
                memcpy(out->data + out->len, data, dlen);
                out->len += dlen;
            } else if (r == 0) {
                memcpy(out->trailer, data, dlen);
                out->tlen = dlen;
                out->result = 0;
                break;
            }
            memmove(pending, pending + used, plen - used);
            plen -= used;
            if (r == -2)
                break;
        }
    }
    free(pending);
}

static void fuzz_chunked(const char *buf, size_t len, size_t split)
{
    struct decoded a, b;
    decode(buf, len, len, &a);
    decode(buf, len, split, &b);
    if (a.result != -3 && b.result != -3) {
        if (a.result != b.result || a.len != b.len || memcmp(a.data, b.data, a.len) != 0)
            __builtin_trap();
        if (a.result == 0 && (a.tlen != b.tlen || memcmp(a.trailer, b.trailer, a.tlen) != 0))
            __builtin_trap();
    }
    free(a.data);
    free(a.trailer);
    free(b.data);
    free(b.trailer);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* Copy into an exact-size buffer so reads past the input are caught. */
    char *buf = malloc(size ? size : 1);
    if (buf == NULL)
        return 0;
    memcpy(buf, data, size);
    fuzz_request(buf, size);
    fuzz_response(buf, size, size ? data[0] & 3 : 0);
    fuzz_chunked(buf, size, size ? (size_t)data[size - 1] % (size + 1) : 0);
    free(buf);
    return 0;
}
