/* Tests of the HTTP/1.1 codec (proxy/http1.c): tables of valid requests and
 * of malicious ones (smuggling, bad characters, oversize), response framing,
 * and the chunked decoder fed every possible split of its input. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "../../proxy/http1_internal.h"

struct valid_case {
    const char *req;
    px_h1_body_t body;
    uint64_t length;
    bool keep_alive;
    bool expect_continue;
    bool upgrade;
};

static const struct valid_case valid[] = {
    {"GET / HTTP/1.1\r\nHost: a\r\n\r\n", PX_H1_BODY_NONE, 0, true, false, false},
    {"GET /x?y=1 HTTP/1.0\r\n\r\n", PX_H1_BODY_NONE, 0, false, false, false},
    {"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", PX_H1_BODY_NONE, 0, true, false, false},
    {"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", PX_H1_BODY_NONE, 0, false, false,
     false},
    {"GET / HTTP/1.1\r\nHost: a\r\nConnection: Keep-Alive, CLOSE\r\n\r\n", PX_H1_BODY_NONE, 0,
     false, false, false},
    {"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n", PX_H1_BODY_LENGTH, 5, true,
     false, false},
    {"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
     PX_H1_BODY_LENGTH, 5, true, false, false},
    {"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 7, 7\r\n\r\n", PX_H1_BODY_LENGTH, 7, true,
     false, false},
    {"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n", PX_H1_BODY_NONE, 0, true, false,
     false},
    {"POST /p HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", PX_H1_BODY_CHUNKED, 0,
     true, false, false},
    {"POST /p HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: CHUNKED\r\n\r\n", PX_H1_BODY_CHUNKED, 0,
     true, false, false},
    {"PUT /p HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n",
     PX_H1_BODY_LENGTH, 3, true, true, false},
    {"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
     PX_H1_BODY_NONE, 0, true, false, true},
    {"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", PX_H1_BODY_NONE, 0, true, false, false},
    {"GET http://a.example/x HTTP/1.1\r\nHost: a.example\r\n\r\n", PX_H1_BODY_NONE, 0, true,
     false, false},
    {"CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n\r\n", PX_H1_BODY_NONE, 0, true,
     false, false},
    {"GET / HTTP/1.1\r\nHost:a\r\nX-Empty:\r\nX-Utf8: caf\xc3\xa9\r\nX-Tab: a\tb \t\r\n\r\n",
     PX_H1_BODY_NONE, 0, true, false, false},
};

static void test_valid_requests(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(valid) / sizeof(valid[0]); i++) {
        const struct valid_case *c = &valid[i];
        px_h1_msg_t m;
        const char *err = NULL;
        size_t len = strlen(c->req);
        int r = px_h1_parse_request(c->req, len, &m, &err);
        if (r != (int)len)
            fprintf(stderr, "case %zu: r=%d err=%s\n", i, r, err ? err : "-");
        assert_int_equal(r, (int)len);
        assert_int_equal(m.body, c->body);
        assert_true(m.content_length == c->length);
        assert_int_equal(m.keep_alive, c->keep_alive);
        assert_int_equal(m.expect_continue, c->expect_continue);
        assert_int_equal(m.upgrade, c->upgrade);
        /* Every shorter prefix asks for more bytes. */
        for (size_t k = 0; k < len; k++)
            assert_int_equal(px_h1_parse_request(c->req, k, &m, &err), -2);
    }
}

static void test_fields_are_slices_trimmed(void **state)
{
    (void)state;
    const char *req = "GET /a/b?c HTTP/1.1\r\nHost:  example.com \r\nX-Tab: a\tb \t\r\n\r\nrest";
    px_h1_msg_t m;
    const char *err;
    int r = px_h1_parse_request(req, strlen(req), &m, &err);
    assert_int_equal(r, (int)strlen(req) - 4);
    assert_int_equal(m.method_len, 3);
    assert_memory_equal(m.method, "GET", 3);
    assert_int_equal(m.target_len, 6);
    assert_memory_equal(m.target, "/a/b?c", 6);
    assert_ptr_equal(m.target, req + 4);
    assert_int_equal(m.nheaders, 2);
    assert_int_equal(m.host_len, 11);
    assert_memory_equal(m.host, "example.com", 11);
    const px_h1_header_t *h = px_h1_find(&m, "x-tab");
    assert_non_null(h);
    assert_int_equal(h->value_len, 3);
    assert_memory_equal(h->value, "a\tb", 3);
    assert_null(px_h1_find(&m, "missing"));
}

struct bad_case {
    const char *req;
    int status;
    const char *why; /* substring of the reason */
};

static const struct bad_case bad[] = {
    /* smuggling: framing the two sides could read differently */
    {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
     400, "both Content-Length and Transfer-Encoding"},
    {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
     400, "both"},
    {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", 400,
     "conflicting Content-Length"},
    {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 6\r\n\r\n", 400, "Content-Length"},
    {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n", 400, "Content-Length"},
    {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", 400, "Content-Length"},
    {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x10\r\n\r\n", 400, "Content-Length"},
    {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1 2\r\n\r\n", 400, "Content-Length"},
    {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: \r\n\r\n", 400, "Content-Length"},
    {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5,\r\n\r\n", 400, "Content-Length"},
    {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999999\r\n\r\n", 400,
     "Content-Length"},
    {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n", 400,
     "single chunked"},
    {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
     400, "single chunked"},
    {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n", 400, "single chunked"},
    {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked;q=1\r\n\r\n", 400,
     "single chunked"},
    {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501,
     "unsupported transfer coding"},
    {"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400, "HTTP/1.0"},
    {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n", 400,
     "whitespace between"},
    {"POST / HTTP/1.1\r\nHost: a\r\n Transfer-Encoding: chunked\r\n\r\n", 400, "folding"},
    {"POST / HTTP/1.1\r\nHost: a\r\nX: y\r\n\tTransfer-Encoding: chunked\r\n\r\n", 400,
     "folding"},
    {"POST / HTTP/1.1\r\nHost: a\nTransfer-Encoding: chunked\r\n\r\n", 400, "bare CR or LF"},
    {"POST / HTTP/1.1\r\nHost: a\rTransfer-Encoding: chunked\r\n\r\n", 400, "bare CR or LF"},
    {"GET / HTTP/1.1\nHost: a\n\n", 400, "bare CR or LF"},
    /* Host rules */
    {"GET / HTTP/1.1\r\n\r\n", 400, "missing Host"},
    {"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, "more than one Host"},
    /* characters */
    {"GET / HTTP/1.1\r\nHost: a\r\nX: a\x01" "b\r\n\r\n", 400, "field value"},
    {"GET / HTTP/1.1\r\nHost: a\r\nX: a\x7f\r\n\r\n", 400, "field value"},
    {"GET / HTTP/1.1\r\nHost: a\r\nX-\xc3\xa9: a\r\n\r\n", 400, "field name"},
    {"GET / HTTP/1.1\r\nHost: a\r\nX(y): a\r\n\r\n", 400, "field name"},
    {"GET / HTTP/1.1\r\nHost: a\r\n: a\r\n\r\n", 400, "empty header field name"},
    {"GET / HTTP/1.1\r\nHost: a\r\nNoColon\r\n\r\n", 400, "field name"},
    {"GET /a b HTTP/1.1\r\nHost: a\r\n\r\n", 400, "version"},
    {"GET /a\x7f HTTP/1.1\r\nHost: a\r\n\r\n", 400, "target"},
    {"GET /\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n", 400, "target"},
    {"GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 400, "target"},
    {"GET a HTTP/1.1\r\nHost: a\r\n\r\n", 400, "target"},
    {"GET * HTTP/1.1\r\nHost: a\r\n\r\n", 400, "target"},
    {"CONNECT /x HTTP/1.1\r\nHost: a\r\n\r\n", 400, "CONNECT"},
    {"G(T / HTTP/1.1\r\nHost: a\r\n\r\n", 400, "method"},
    {" GET / HTTP/1.1\r\nHost: a\r\n\r\n", 400, "method"},
    {"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", 400, "method"},
    {"GET / HTTP/1.1 \r\nHost: a\r\n\r\n", 400, "version"},
    {"GET / http/1.1\r\nHost: a\r\n\r\n", 400, "version"},
    {"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505, "unsupported HTTP version"},
    {"GET / HTTP/1.2\r\nHost: a\r\n\r\n", 505, "unsupported HTTP version"},
    {"GET / HTTP/1.10\r\nHost: a\r\n\r\n", 400, "version"},
};

static void test_malicious_requests(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        const struct bad_case *c = &bad[i];
        px_h1_msg_t m;
        const char *err = NULL;
        size_t len = strlen(c->req);
        int r = px_h1_parse_request(c->req, len, &m, &err);
        if (r != -1 || m.status != c->status || err == NULL || strstr(err, c->why) == NULL)
            fprintf(stderr, "case %zu: r=%d status=%d err=%s\n", i, r, m.status,
                    err ? err : "-");
        assert_int_equal(r, -1);
        assert_int_equal(m.status, c->status);
        assert_non_null(strstr(err, c->why));
    }
}

static void test_nul_byte_in_value(void **state)
{
    (void)state;
    static const char req[] = "GET / HTTP/1.1\r\nHost: a\r\nX: a\0b\r\n\r\n";
    px_h1_msg_t m;
    const char *err = NULL;
    assert_int_equal(px_h1_parse_request(req, sizeof(req) - 1, &m, &err), -1);
    assert_int_equal(m.status, 400);
    assert_non_null(err);
}

static void test_oversized_headers(void **state)
{
    (void)state;
    size_t cap = PX_H1_MAX_HEAD + 4096;
    char *buf = malloc(cap);
    assert_non_null(buf);
    px_h1_msg_t m;
    const char *err;

    /* one huge value that never ends */
    int n = snprintf(buf, cap, "GET / HTTP/1.1\r\nHost: a\r\nX-Big: ");
    memset(buf + n, 'a', cap - (size_t)n);
    assert_int_equal(px_h1_parse_request(buf, PX_H1_MAX_HEAD - 1, &m, &err), -2);
    assert_int_equal(px_h1_parse_request(buf, cap, &m, &err), -1);
    assert_int_equal(m.status, 431);
    assert_non_null(strstr(err, "too large"));

    /* a complete head that is too large is refused too */
    memcpy(buf + cap - 4, "\r\n\r\n", 4);
    assert_int_equal(px_h1_parse_request(buf, cap, &m, &err), -1);
    assert_int_equal(m.status, 431);

    /* too many fields */
    size_t off = (size_t)snprintf(buf, cap, "GET / HTTP/1.1\r\nHost: a\r\n");
    for (unsigned i = 0; i < PX_H1_MAX_HEADERS; i++)
        off += (size_t)snprintf(buf + off, cap - off, "X-%u: v\r\n", i);
    off += (size_t)snprintf(buf + off, cap - off, "\r\n");
    assert_int_equal(px_h1_parse_request(buf, off, &m, &err), -1);
    assert_int_equal(m.status, 431);
    assert_non_null(strstr(err, "too many"));
    free(buf);
}

static void test_pipelined_requests_parse_one_at_a_time(void **state)
{
    (void)state;
    const char *two = "POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc"
                      "GET /b HTTP/1.1\r\nHost: a\r\n\r\n";
    px_h1_msg_t m;
    const char *err;
    size_t len = strlen(two);
    int r = px_h1_parse_request(two, len, &m, &err);
    assert_true(r > 0);
    assert_int_equal(m.body, PX_H1_BODY_LENGTH);
    assert_int_equal(m.target_len, 2);
    size_t next = (size_t)r + (size_t)m.content_length;
    r = px_h1_parse_request(two + next, len - next, &m, &err);
    assert_int_equal(r, (int)(len - next));
    assert_memory_equal(m.target, "/b", 2);
}

static void test_hop_by_hop(void **state)
{
    (void)state;
    const char *req = "GET / HTTP/1.1\r\nHost: a\r\nConnection: close, X-Secret\r\n"
                      "X-Secret: 1\r\nKeep-Alive: 5\r\nX-Kept: 2\r\n\r\n";
    px_h1_msg_t m;
    const char *err;
    assert_true(px_h1_parse_request(req, strlen(req), &m, &err) > 0);
    assert_true(px_h1_is_hop_by_hop(&m, "x-secret", 8));
    assert_true(px_h1_is_hop_by_hop(&m, "Keep-Alive", 10));
    assert_true(px_h1_is_hop_by_hop(&m, "transfer-encoding", 17));
    assert_true(px_h1_is_hop_by_hop(&m, "Connection", 10));
    assert_false(px_h1_is_hop_by_hop(&m, "X-Kept", 6));
    assert_false(px_h1_is_hop_by_hop(&m, "Host", 4));
}

struct resp_case {
    const char *resp;
    bool head;
    int code;
    px_h1_body_t body;
    uint64_t length;
    bool keep_alive;
};

static const struct resp_case resps[] = {
    {"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n", false, 200, PX_H1_BODY_LENGTH, 2, true},
    {"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n", true, 200, PX_H1_BODY_NONE, 0, true},
    {"HTTP/1.1 204 No Content\r\n\r\n", false, 204, PX_H1_BODY_NONE, 0, true},
    {"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n", false, 304, PX_H1_BODY_NONE, 0,
     true},
    {"HTTP/1.1 100 Continue\r\n\r\n", false, 100, PX_H1_BODY_NONE, 0, true},
    {"HTTP/1.1 200 OK\r\n\r\n", false, 200, PX_H1_BODY_EOF, 0, false},
    {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", false, 200, PX_H1_BODY_CHUNKED, 0,
     true},
    {"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", false, 200, PX_H1_BODY_LENGTH, 1, false},
    {"HTTP/1.0 200 OK\r\nContent-Length: 1\r\nConnection: keep-alive\r\n\r\n", false, 200,
     PX_H1_BODY_LENGTH, 1, true},
    {"HTTP/1.1 503 \r\nContent-Length: 1\r\nConnection: close\r\n\r\n", false, 503,
     PX_H1_BODY_LENGTH, 1, false},
    {"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
     false, 101, PX_H1_BODY_NONE, 0, true},
};

static void test_responses(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(resps) / sizeof(resps[0]); i++) {
        const struct resp_case *c = &resps[i];
        px_h1_msg_t m;
        const char *err = NULL;
        size_t len = strlen(c->resp);
        int r = px_h1_parse_response(c->resp, len, c->head, false, &m, &err);
        if (r != (int)len)
            fprintf(stderr, "case %zu: r=%d err=%s\n", i, r, err ? err : "-");
        assert_int_equal(r, (int)len);
        assert_int_equal(m.status_code, c->code);
        assert_int_equal(m.body, c->body);
        assert_true(m.content_length == c->length);
        assert_int_equal(m.keep_alive, c->keep_alive);
    }
    static const char *const bad_resps[] = {
        "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        "HTTP/1.1 2000 OK\r\n\r\n",
        "HTTP/1.1 20x OK\r\n\r\n",
        "HTTP/1.1 099 OK\r\n\r\n",
        "HTTP/1.1 200 OK\nContent-Length: 1\r\n\r\n",
        "HTTP/1.1 200 OK\r\nX: \x01\r\n\r\n",
        "HTTP/2 200 OK\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof(bad_resps) / sizeof(bad_resps[0]); i++) {
        px_h1_msg_t m;
        const char *err = NULL;
        assert_int_equal(px_h1_parse_response(bad_resps[i], strlen(bad_resps[i]), false, false,
                                              &m, &err),
                         -1);
        assert_int_equal(m.status, 502);
        assert_non_null(err);
    }
}

/* Decodes `in` split at every position; returns the concatenated data and
 * the trailer section, or -1 on an error. */
static int decode_split(const char *in, size_t len, size_t split, char *out, size_t *out_len,
                        char *trailer, size_t *trailer_len, const char **err)
{
    px_h1_chunked_t d;
    px_h1_chunked_init(&d);
    char pending[512];
    size_t plen = 0, fed = 0;
    *out_len = 0;
    while (1) {
        /* feed the next piece: first `split` bytes, then the rest */
        size_t upto = fed < split ? split : len;
        if (upto > len)
            upto = len;
        memcpy(pending + plen, in + fed, upto - fed);
        plen += upto - fed;
        fed = upto;
        for (;;) {
            size_t used;
            const char *data;
            size_t dlen;
            int r = px_h1_chunked_decode(&d, pending, plen, &used, &data, &dlen, err);
            if (r == -1)
                return -1;
            if (r == 1) {
                memcpy(out + *out_len, data, dlen);
                *out_len += dlen;
            }
            if (r == 0) {
                memcpy(trailer, data, dlen);
                *trailer_len = dlen;
                return (int)(fed - (plen - used));
            }
            memmove(pending, pending + used, plen - used);
            plen -= used;
            if (r == -2)
                break;
        }
        if (fed == len)
            return -2;
    }
}

static void test_chunked_decoding_any_split(void **state)
{
    (void)state;
    const char *body = "5\r\nhello\r\n1;ext=\"v\"\r\n,\r\nA\r\n 123456789\r\n0\r\nX-T: 1\r\n\r\nNEXT";
    size_t len = strlen(body);
    for (size_t split = 0; split <= len; split++) {
        char out[128], tr[128];
        size_t olen, tlen;
        const char *err = NULL;
        int r = decode_split(body, len, split, out, &olen, tr, &tlen, &err);
        assert_int_equal(r, (int)len - 4);
        assert_int_equal(olen, 16);
        assert_memory_equal(out, "hello, 123456789", 16);
        assert_int_equal(tlen, 8);
        assert_memory_equal(tr, "X-T: 1\r\n", 8);
    }
    /* no trailers */
    char out[64], tr[64];
    size_t olen, tlen;
    const char *err;
    assert_int_equal(decode_split("3\r\nabc\r\n0\r\n\r\n", 13, 4, out, &olen, tr, &tlen, &err), 13);
    assert_int_equal(tlen, 0);
}

static void test_chunked_malformed(void **state)
{
    (void)state;
    static const char *const bad_bodies[] = {
        "x\r\n",                      /* not hex */
        "5 \r\nhello\r\n0\r\n\r\n",   /* whitespace after size */
        "-5\r\n",                     /* sign */
        "5\nhello\r\n0\r\n\r\n",      /* bare LF */
        "5\r\nhelloXX0\r\n\r\n",      /* data not followed by CRLF */
        "5\r\nhello\n0\r\n\r\n",      /* bare LF after data */
        "11111111111111111\r\n",      /* size overflows 64 bits */
        "0\r\nBad Trailer: x\r\n\r\n", /* bad trailer name */
        "0\r\n folded: x\r\n\r\n",    /* folded trailer */
        ";ext\r\n",                   /* missing size */
    };
    for (size_t i = 0; i < sizeof(bad_bodies) / sizeof(bad_bodies[0]); i++) {
        char out[64], tr[64];
        size_t olen, tlen;
        const char *err = NULL;
        int r = decode_split(bad_bodies[i], strlen(bad_bodies[i]), strlen(bad_bodies[i]), out,
                             &olen, tr, &tlen, &err);
        if (r != -1)
            fprintf(stderr, "body %zu: r=%d\n", i, r);
        assert_int_equal(r, -1);
        assert_non_null(err);
    }
    /* an endless size line is refused, not buffered forever */
    char big[8192];
    memset(big, '0', sizeof(big));
    px_h1_chunked_t d;
    px_h1_chunked_init(&d);
    size_t used;
    const char *data, *err;
    size_t dlen;
    assert_int_equal(px_h1_chunked_decode(&d, big, sizeof(big), &used, &data, &dlen, &err), -1);
}

static void test_chunk_header(void **state)
{
    (void)state;
    char b[20];
    assert_int_equal(px_h1_chunk_header(b, 0), 3);
    assert_memory_equal(b, "0\r\n", 3);
    assert_int_equal(px_h1_chunk_header(b, 0x1a2b), 6);
    assert_memory_equal(b, "1a2b\r\n", 6);
    assert_int_equal(px_h1_chunk_header(b, UINT64_MAX), 18);
}

/* A header name takes exactly the tchar bytes of RFC 9110 (5.6.2): every
 * byte value in the middle of a name, against the grammar's own list. */
static void test_header_name_bytes(void **state)
{
    (void)state;
    for (int c = 0; c < 256; c++) {
        bool tchar = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                     (c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL);
        char req[64];
        int n = snprintf(req, sizeof(req), "GET / HTTP/1.1\r\nHost: a\r\nx%cy: 1\r\n\r\n", c ? c : '#');
        if (c == ':')
            continue; /* ends the name: "x" with the value "y: 1" */
        if (c == 0)
            req[26] = 0; /* the NUL itself, where the '#' went */
        px_h1_msg_t m;
        const char *err = NULL;
        int r = px_h1_parse_request(req, (size_t)n, &m, &err);
        if (tchar != (r > 0))
            fail_msg("byte 0x%02x: %s", c, tchar ? "refused" : "accepted");
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_requests),
        cmocka_unit_test(test_fields_are_slices_trimmed),
        cmocka_unit_test(test_malicious_requests),
        cmocka_unit_test(test_nul_byte_in_value),
        cmocka_unit_test(test_header_name_bytes),
        cmocka_unit_test(test_oversized_headers),
        cmocka_unit_test(test_pipelined_requests_parse_one_at_a_time),
        cmocka_unit_test(test_hop_by_hop),
        cmocka_unit_test(test_responses),
        cmocka_unit_test(test_chunked_decoding_any_split),
        cmocka_unit_test(test_chunked_malformed),
        cmocka_unit_test(test_chunk_header),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
