/*
 * h2: HTTP/2 sessions bridged to HTTP/1.1 framing (see h2_internal.h).
 *
 * Inbound, nghttp2's callbacks collect a stream's pseudo-headers and fields
 * and, at the end of the header block, build the HTTP/1.1 head the engine
 * parses; DATA becomes the body (chunked when no content-length was sent),
 * a trailing HEADERS block the last chunk's trailers. Outbound, the engine's
 * HTTP/1.1 bytes are parsed with the proxy's own HTTP/1.1 codec: the head
 * becomes a HEADERS frame, the body is buffered per stream and read by a
 * data provider as the peer's window allows, trailers follow the last DATA.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <nghttp2/nghttp2.h>

#include "blkcache.h"
#include "h2_internal.h"
#include "http1_internal.h"

#define H2_WINDOW (256u * 1024u)
#define H2_CONN_WINDOW (4u * 1024u * 1024u)

typedef struct hbuf {
    char *data;
    size_t off, len, cap; /* live bytes: data[off .. off+len) */
} hbuf_t;

static int hb_add(hbuf_t *b, const void *p, size_t n)
{
    if (n == 0)
        return 0;
    if (b->off && b->off + b->len + n > b->cap) {
        memmove(b->data, b->data + b->off, b->len);
        b->off = 0;
    }
    if (b->off + b->len + n > b->cap) { /* off is 0 here */
        size_t cap = b->cap ? b->cap : PX_BLK_MIN;
        while (cap < b->len + n)
            cap *= 2;
        char *d = px_blk_grow(b->data, b->len, b->cap, cap);
        if (d == NULL)
            return -1;
        b->data = d;
        b->cap = cap;
    }
    memcpy(b->data + b->off + b->len, p, n);
    b->len += n;
    return 0;
}

/* The live bytes ("" for an empty buffer that never held any). */
static const char *hb_ptr(const hbuf_t *b)
{
    return b->data ? b->data + b->off : "";
}

static int hb_str(hbuf_t *b, const char *s)
{
    return hb_add(b, s, strlen(s));
}

static void hb_consume(hbuf_t *b, size_t n)
{
    b->off += n;
    b->len -= n;
    if (b->len == 0)
        b->off = 0;
}

static void hb_free(hbuf_t *b)
{
    px_blk_put(b->data, b->cap);
    memset(b, 0, sizeof(*b));
}

enum { OUT_HEAD, OUT_LENGTH, OUT_CHUNKED, OUT_EOF, OUT_DONE };

struct px_h2_stream {
    px_h2_t *h;
    px_h2_stream_t *next, *prev;
    int32_t id;
    void *user;
    bool detached;
    /* inbound: the peer's message */
    hbuf_t fields; /* "name: value\r\n" of the current header block */
    hbuf_t cookies;    /* cookie crumbs, joined with "; " (RFC 9113 8.2.3) */
    char *method, *path, *authority, *status;
    bool in_chunked;   /* the body goes to the engine chunked */
    bool in_head_done; /* the head was handed over */
    bool in_end;       /* the peer's message is complete */
    bool has_cl;       /* a content-length field came with the head */
    bool trailers;     /* the current block is trailers */
    size_t unacked;    /* DATA bytes delivered but not yet acknowledged */
    /* server: a request's head (and the body that came with it) are gathered
     * until the end of the bytes received, so a request whose body arrived
     * with its head reaches the engine whole (and can be retried) */
    hbuf_t gather;
    bool gathering;
    /* outbound: our message */
    int out;           /* OUT_* */
    hbuf_t obuf;       /* HTTP/1.1 bytes not parsed yet (head, chunk framing) */
    hbuf_t body;       /* body bytes for the data provider */
    uint64_t out_left; /* OUT_LENGTH */
    px_h1_chunked_t chunk;
    bool out_end;    /* the body is complete */
    bool submitted;  /* HEADERS went to nghttp2 */
    bool deferred;   /* the data provider is waiting for bytes */
    bool req_head;   /* server: the request was HEAD */
    bool https;      /* client: :scheme */
    bool rst_after;  /* server: reset (NO_ERROR) once our END_STREAM is out */
    nghttp2_nv *tnv; /* trailers to send after the body */
    size_t ntnv;
    char *tstore; /* their text */
};

struct px_h2 {
    nghttp2_session *s;
    px_h2_counters_t *counters; /* or NULL */
    bool client;
    px_h2_cbs_t cbs;
    void *ud;
    px_h2_stream_t *streams;
    size_t nstreams;
    bool failed;
};

static void stream_free(px_h2_stream_t *s)
{
    px_h2_t *h = s->h;
    if (s->prev)
        s->prev->next = s->next;
    else if (h->streams == s)
        h->streams = s->next;
    if (s->next)
        s->next->prev = s->prev;
    h->nstreams--;
    hb_free(&s->fields);
    hb_free(&s->cookies);
    hb_free(&s->gather);
    hb_free(&s->obuf);
    hb_free(&s->body);
    free(s->method);
    free(s->path);
    free(s->authority);
    free(s->status);
    free(s->tnv);
    free(s->tstore);
    free(s);
}

static px_h2_stream_t *stream_new(px_h2_t *h)
{
    px_h2_stream_t *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return NULL;
    s->h = h;
    s->next = h->streams;
    if (h->streams)
        h->streams->prev = s;
    h->streams = s;
    h->nstreams++;
    return s;
}

#define H2_GATHER_MAX 65536 /* a request body beyond this streams on without waiting */

static void hand_over(px_h2_stream_t *s);

/* Delivers HTTP/1.1 bytes of the peer's message to the engine. */
static void deliver(px_h2_stream_t *s, const char *p, size_t n)
{
    if (s->gathering && !s->detached) {
        if (hb_add(&s->gather, p, n) < 0 || s->gather.len > H2_GATHER_MAX)
            hand_over(s);
        return;
    }
    if (s->user && !s->detached && n)
        s->h->cbs.on_data(s->h->ud, s->user, p, n);
}

static char *dupn(const uint8_t *p, size_t n)
{
    char *d = malloc(n + 1);
    if (d) {
        memcpy(d, p, n);
        d[n] = '\0';
    }
    return d;
}

/* ---- inbound ---- */

static int on_begin_headers(nghttp2_session *ss, const nghttp2_frame *f, void *ud)
{
    px_h2_t *h = ud;
    if (f->hd.type != NGHTTP2_HEADERS)
        return 0;
    px_h2_stream_t *s = nghttp2_session_get_stream_user_data(ss, f->hd.stream_id);
    if (s == NULL) {
        if (h->client || f->headers.cat != NGHTTP2_HCAT_REQUEST)
            return 0;
        s = stream_new(h);
        if (s == NULL)
            return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
        s->id = f->hd.stream_id;
        nghttp2_session_set_stream_user_data(ss, f->hd.stream_id, s);
    }
    s->fields.len = s->fields.off = 0;
    s->trailers = f->headers.cat == NGHTTP2_HCAT_HEADERS && s->in_head_done;
    return 0;
}

static int on_header(nghttp2_session *ss, const nghttp2_frame *f, const uint8_t *name, size_t nlen,
                     const uint8_t *value, size_t vlen, uint8_t flags, void *ud)
{
    (void)flags;
    (void)ud;
    if (f->hd.type != NGHTTP2_HEADERS)
        return 0;
    px_h2_stream_t *s = nghttp2_session_get_stream_user_data(ss, f->hd.stream_id);
    if (s == NULL)
        return 0;
    if (nlen && name[0] == ':') {
        char **slot = NULL;
        if (nlen == 7 && memcmp(name, ":method", 7) == 0)
            slot = &s->method;
        else if (nlen == 5 && memcmp(name, ":path", 5) == 0)
            slot = &s->path;
        else if (nlen == 10 && memcmp(name, ":authority", 10) == 0)
            slot = &s->authority;
        else if (nlen == 7 && memcmp(name, ":status", 7) == 0)
            slot = &s->status;
        if (slot) {
            free(*slot);
            *slot = dupn(value, vlen);
            if (*slot == NULL)
                return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
        }
        return 0;
    }
    if (s->fields.len + s->cookies.len + nlen + vlen + 4 > PX_H1_MAX_HEAD)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* resets the stream */
    if (!s->trailers) {
        if (nlen == 4 && memcmp(name, "host", 4) == 0 && s->authority)
            return 0; /* :authority wins */
        if (nlen == 14 && memcmp(name, "content-length", 14) == 0)
            s->has_cl = true;
        if (nlen == 2 && memcmp(name, "te", 2) == 0)
            return 0;
        if (nlen == 6 && memcmp(name, "cookie", 6) == 0) {
            if ((s->cookies.len && hb_str(&s->cookies, "; ") < 0) || hb_add(&s->cookies, value, vlen) < 0)
                return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
            return 0;
        }
    }
    if (hb_add(&s->fields, name, nlen) < 0 || hb_str(&s->fields, ": ") < 0 ||
        hb_add(&s->fields, value, vlen) < 0 || hb_str(&s->fields, "\r\n") < 0)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    return 0;
}

/* The peer's message ended (END_STREAM): the last chunk, trailers if any. */
static void in_finish(px_h2_stream_t *s, bool with_trailers)
{
    if (s->in_end)
        return;
    s->in_end = true;
    if (!s->in_chunked)
        return;
    hbuf_t t = {0};
    if (hb_str(&t, "0\r\n") == 0 &&
        (!with_trailers || hb_add(&t, hb_ptr(&s->fields), s->fields.len) == 0) &&
        hb_str(&t, "\r\n") == 0)
        deliver(s, t.data, t.len);
    hb_free(&t);
}

/* The header block of a request (server) or response (client) is complete:
 * hand its HTTP/1.1 head to the engine. Returns -1 to reset the stream. */
static int in_head(px_h2_t *h, px_h2_stream_t *s, bool end_stream)
{
    hbuf_t t = {0};
    int rc = -1;
    if (!h->client) {
        if (s->method == NULL || (s->path == NULL && strcmp(s->method, "CONNECT") != 0))
            goto out;
        if (strcmp(s->method, "CONNECT") == 0)
            goto out; /* no tunnels over HTTP/2 streams here */
        if (hb_str(&t, s->method) < 0 || hb_str(&t, " ") < 0 || hb_str(&t, s->path) < 0 ||
            hb_str(&t, " HTTP/1.1\r\n") < 0)
            goto out;
        if (s->authority &&
            (hb_str(&t, "host: ") < 0 || hb_str(&t, s->authority) < 0 || hb_str(&t, "\r\n") < 0))
            goto out;
    } else {
        if (s->status == NULL)
            goto out;
        int code = atoi(s->status);
        if (code < 100 || code > 999)
            goto out;
        if (code < 200) {
            /* interim responses are absorbed */
            rc = 0;
            goto out;
        }
        if (hb_str(&t, "HTTP/1.1 ") < 0 || hb_str(&t, s->status) < 0 || hb_str(&t, " -\r\n") < 0)
            goto out;
    }
    if (hb_add(&t, hb_ptr(&s->fields), s->fields.len) < 0)
        goto out;
    if (s->cookies.len && (hb_str(&t, "cookie: ") < 0 || hb_add(&t, hb_ptr(&s->cookies), s->cookies.len) < 0 ||
                           hb_str(&t, "\r\n") < 0))
        goto out;
    bool nobody = h->client && (s->req_head || atoi(s->status) == 204 || atoi(s->status) == 304);
    if (!end_stream && !s->has_cl && !nobody) {
        s->in_chunked = true;
        if (hb_str(&t, "transfer-encoding: chunked\r\n") < 0)
            goto out;
    } else if (end_stream && !s->has_cl && h->client && !nobody) {
        if (hb_str(&t, "content-length: 0\r\n") < 0)
            goto out;
    }
    if (hb_str(&t, "\r\n") < 0)
        goto out;
    s->in_head_done = true;
    if (!h->client) {
        s->req_head = strcmp(s->method, "HEAD") == 0;
        s->in_end = end_stream && !s->in_chunked;
        s->gathering = true; /* handed over at the end of this batch of bytes */
        if (hb_add(&s->gather, t.data, t.len) < 0)
            hand_over(s);
    } else {
        deliver(s, t.data, t.len);
    }
    rc = 0;
out:
    hb_free(&t);
    return rc;
}

/* Hands a gathered request (head and what came of its body) to the engine. */
static void hand_over(px_h2_stream_t *s)
{
    px_h2_t *h = s->h;
    s->gathering = false;
    hbuf_t g = s->gather;
    s->gather = (hbuf_t){0};
    void *u = h->cbs.on_request(h->ud, s, hb_ptr(&g), g.len);
    hb_free(&g);
    if (!s->detached)
        s->user = u; /* the engine may have answered and let go already */
    if (u == NULL && !s->detached) {
        nghttp2_submit_rst_stream(h->s, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_REFUSED_STREAM);
        s->detached = true;
    }
}

#define H2_COUNT(h, field)                                                                     \
    do {                                                                                       \
        if ((h)->counters)                                                                     \
            atomic_fetch_add_explicit(&(h)->counters->field, 1, memory_order_relaxed);         \
    } while (0)

/* Counts what the session received (frames of any stream, the connection's
 * included): streams, resets, GOAWAY. */
static int on_frame_count(nghttp2_session *ss, const nghttp2_frame *f, void *ud)
{
    (void)ss;
    px_h2_t *h = ud;
    if (f->hd.type == NGHTTP2_RST_STREAM)
        H2_COUNT(h, rx_reset);
    else if (f->hd.type == NGHTTP2_GOAWAY)
        H2_COUNT(h, goaway_rx);
    else if (f->hd.type == NGHTTP2_HEADERS && f->headers.cat == NGHTTP2_HCAT_REQUEST && !h->client)
        H2_COUNT(h, streams);
    return 0;
}

static int on_frame_recv(nghttp2_session *ss, const nghttp2_frame *f, void *ud)
{
    px_h2_t *h = ud;
    on_frame_count(ss, f, ud);
    if (f->hd.stream_id == 0)
        return 0;
    px_h2_stream_t *s = nghttp2_session_get_stream_user_data(ss, f->hd.stream_id);
    if (s == NULL)
        return 0;
    bool end = (f->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
    if (f->hd.type == NGHTTP2_HEADERS) {
        if (!s->in_head_done) {
            if (in_head(h, s, end) < 0) {
                nghttp2_submit_rst_stream(ss, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_PROTOCOL_ERROR);
                return 0;
            }
            if (!s->in_head_done)
                return 0; /* an interim response */
            s->fields.len = s->fields.off = 0;
            if (end)
                in_finish(s, false);
        } else if (s->trailers) {
            in_finish(s, true);
        }
        return 0;
    }
    if (f->hd.type == NGHTTP2_DATA && end)
        in_finish(s, false);
    return 0;
}

static int on_data_chunk(nghttp2_session *ss, uint8_t flags, int32_t id, const uint8_t *data,
                         size_t len, void *ud)
{
    (void)flags;
    (void)ud;
    px_h2_stream_t *s = nghttp2_session_get_stream_user_data(ss, id);
    if (s == NULL || (s->user == NULL && !s->gathering) || s->detached) {
        nghttp2_session_consume(ss, id, len);
        return 0;
    }
    s->unacked += len;
    if (s->in_chunked) {
        char hdr[24];
        size_t hl = px_h1_chunk_header(hdr, len);
        deliver(s, hdr, hl);
        if (s->user && !s->detached)
            deliver(s, (const char *)data, len);
        if (s->user && !s->detached)
            deliver(s, "\r\n", 2);
    } else {
        deliver(s, (const char *)data, len);
    }
    return 0;
}

static int on_stream_close(nghttp2_session *ss, int32_t id, uint32_t error_code, void *ud)
{
    px_h2_t *h = ud;
    px_h2_stream_t *s = nghttp2_session_get_stream_user_data(ss, id);
    if (s == NULL)
        return 0;
    nghttp2_session_set_stream_user_data(ss, id, NULL);
    if (s->unacked)
        nghttp2_session_consume_connection(ss, s->unacked);
    void *user = s->detached ? NULL : s->user;
    s->user = NULL;
    stream_free(s);
    if (user)
        h->cbs.on_close(h->ud, user, error_code ? error_code : 0);
    return 0;
}

static int on_frame_send(nghttp2_session *ss, const nghttp2_frame *f, void *ud)
{
    px_h2_t *h = ud;
    if (f->hd.type == NGHTTP2_RST_STREAM)
        H2_COUNT(h, tx_reset);
    else if (f->hd.type == NGHTTP2_GOAWAY)
        H2_COUNT(h, goaway_sent);
    else if (f->hd.type == NGHTTP2_HEADERS && f->headers.cat == NGHTTP2_HCAT_REQUEST && h->client)
        H2_COUNT(h, streams);
    if ((f->hd.type != NGHTTP2_HEADERS && f->hd.type != NGHTTP2_DATA) ||
        !(f->hd.flags & NGHTTP2_FLAG_END_STREAM))
        return 0;
    px_h2_stream_t *s = nghttp2_session_get_stream_user_data(ss, f->hd.stream_id);
    if (s && s->rst_after && !s->in_end)
        nghttp2_submit_rst_stream(ss, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_NO_ERROR);
    return 0;
}

/* ---- outbound ---- */

static ssize_t data_read(nghttp2_session *ss, int32_t id, uint8_t *buf, size_t length,
                         uint32_t *flags, nghttp2_data_source *src, void *ud)
{
    (void)ud;
    px_h2_stream_t *s = src->ptr;
    (void)ss;
    (void)id;
    size_t n = s->body.len < length ? s->body.len : length;
    if (n)
        memcpy(buf, hb_ptr(&s->body), n);
    hb_consume(&s->body, n);
    if (s->body.len == 0 && s->out_end) {
        *flags |= NGHTTP2_DATA_FLAG_EOF;
        if (s->ntnv) {
            *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
            if (nghttp2_submit_trailer(ss, s->id, s->tnv, s->ntnv) != 0)
                return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
        }
        return (ssize_t)n;
    }
    if (n == 0) {
        s->deferred = true;
        return NGHTTP2_ERR_DEFERRED;
    }
    return (ssize_t)n;
}

static bool skip_field(const char *n, size_t l)
{
    static const char *const hop[] = {"connection",        "keep-alive", "proxy-connection",
                                      "transfer-encoding", "upgrade",    "host",
                                      "http2-settings"};
    for (size_t i = 0; i < sizeof(hop) / sizeof(hop[0]); i++)
        if (px_h1_ieq(n, l, hop[i]))
            return true;
    return false;
}

/* Builds name/value pairs from HTTP/1.1 fields, names lower-cased in store. */
static int fields_nv(const px_h1_msg_t *m, nghttp2_nv *nv, size_t *nnv, char *store, size_t *used,
                     bool client)
{
    for (size_t i = 0; i < m->nheaders; i++) {
        const px_h1_header_t *f = &m->headers[i];
        if (px_h1_ieq(f->name, f->name_len, "te")) {
            /* only "te: trailers" crosses to HTTP/2, and only towards a server */
            if (!client || !px_h1_ieq(f->value, f->value_len, "trailers"))
                continue;
        } else if (skip_field(f->name, f->name_len) ||
                   px_h1_is_hop_by_hop(m, f->name, f->name_len)) {
            continue;
        }
        char *nm = store + *used;
        for (size_t k = 0; k < f->name_len; k++)
            nm[k] = (char)((f->name[k] >= 'A' && f->name[k] <= 'Z') ? f->name[k] + 32 : f->name[k]);
        *used += f->name_len;
        nv[*nnv] = (nghttp2_nv){(uint8_t *)nm, (uint8_t *)f->value, f->name_len, f->value_len,
                                NGHTTP2_NV_FLAG_NONE};
        (*nnv)++;
    }
    return 0;
}

/* Parses the trailer section of a chunked body ("name: value\r\n"...). */
static int set_trailers(px_h2_stream_t *s, const char *p, size_t n)
{
    if (n == 0)
        return 0;
    size_t lines = 0;
    for (size_t i = 0; i < n; i++)
        if (p[i] == '\n')
            lines++;
    s->tstore = malloc(n + 1);
    s->tnv = calloc(lines ? lines : 1, sizeof(nghttp2_nv));
    if (s->tstore == NULL || s->tnv == NULL)
        return -1;
    memcpy(s->tstore, p, n);
    char *c = s->tstore, *end = s->tstore + n;
    while (c < end) {
        char *eol = memchr(c, '\n', (size_t)(end - c));
        if (eol == NULL)
            break;
        char *le = eol > c && eol[-1] == '\r' ? eol - 1 : eol;
        char *colon = memchr(c, ':', (size_t)(le - c));
        if (colon && colon > c) {
            for (char *q = c; q < colon; q++)
                if (*q >= 'A' && *q <= 'Z')
                    *q = (char)(*q + 32);
            char *v = colon + 1;
            while (v < le && (*v == ' ' || *v == '\t'))
                v++;
            char *ve = le;
            while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
                ve--;
            if (!skip_field(c, (size_t)(colon - c)))
                s->tnv[s->ntnv++] = (nghttp2_nv){(uint8_t *)c, (uint8_t *)v, (size_t)(colon - c),
                                                 (size_t)(ve - v), NGHTTP2_NV_FLAG_NONE};
        }
        c = eol + 1;
    }
    return 0;
}

static void resume(px_h2_stream_t *s)
{
    if (s->deferred && s->submitted) {
        s->deferred = false;
        nghttp2_session_resume_data(s->h->s, s->id);
    }
}

/* Submits the parsed head of our message. */
static int out_head(px_h2_stream_t *s, const px_h1_msg_t *m)
{
    px_h2_t *h = s->h;
    nghttp2_nv nv[PX_H1_MAX_HEADERS + 5];
    size_t nnv = 0, used = 0;
    char store[PX_H1_MAX_HEAD];
    char status[8];
    const char *scheme = s->https ? "https" : "http";
    if (h->client) {
        nv[nnv++] = (nghttp2_nv){(uint8_t *)":method", (uint8_t *)m->method, 7, m->method_len,
                                 NGHTTP2_NV_FLAG_NONE};
        nv[nnv++] = (nghttp2_nv){(uint8_t *)":scheme", (uint8_t *)scheme, 7, strlen(scheme),
                                 NGHTTP2_NV_FLAG_NONE};
        nv[nnv++] = (nghttp2_nv){(uint8_t *)":authority", (uint8_t *)(m->host ? m->host : ""), 10,
                                 m->host ? m->host_len : 0, NGHTTP2_NV_FLAG_NONE};
        nv[nnv++] = (nghttp2_nv){(uint8_t *)":path", (uint8_t *)m->target, 5, m->target_len,
                                 NGHTTP2_NV_FLAG_NONE};
    } else {
        snprintf(status, sizeof(status), "%d", m->status_code);
        nv[nnv++] = (nghttp2_nv){(uint8_t *)":status", (uint8_t *)status, 7, strlen(status),
                                 NGHTTP2_NV_FLAG_NONE};
    }
    fields_nv(m, nv, &nnv, store, &used, h->client);
    const px_h1_header_t *ct = h->client ? px_h1_find(m, "content-type") : NULL;
    if (ct && ct->value_len >= 16 && strncasecmp(ct->value, "application/grpc", 16) == 0 &&
        !px_h1_find(m, "te"))
        nv[nnv++] =
            (nghttp2_nv){(uint8_t *)"te", (uint8_t *)"trailers", 2, 8, NGHTTP2_NV_FLAG_NONE};
    bool body = m->body != PX_H1_BODY_NONE;
    nghttp2_data_provider dp = {.source.ptr = s, .read_callback = data_read};
    int32_t r;
    if (h->client) {
        s->req_head = px_h1_ieq(m->method, m->method_len, "HEAD");
        r = nghttp2_submit_request(h->s, NULL, nv, nnv, body ? &dp : NULL, s);
        if (r < 0)
            return -1;
        s->id = r;
    } else {
        r = nghttp2_submit_response(h->s, s->id, nv, nnv, body ? &dp : NULL);
        if (r != 0)
            return -1;
    }
    s->submitted = true;
    if (!body) {
        s->out = OUT_DONE;
        s->out_end = true;
    } else if (m->body == PX_H1_BODY_LENGTH) {
        s->out = OUT_LENGTH;
        s->out_left = m->content_length;
    } else if (m->body == PX_H1_BODY_CHUNKED) {
        s->out = OUT_CHUNKED;
        px_h1_chunked_init(&s->chunk);
    } else {
        s->out = OUT_EOF;
    }
    return 0;
}

static int out_body(px_h2_stream_t *s)
{
    hbuf_t *b = &s->obuf;
    if (s->out == OUT_LENGTH || s->out == OUT_EOF) {
        size_t n = b->len;
        if (s->out == OUT_LENGTH && n > s->out_left)
            n = (size_t)s->out_left;
        if (hb_add(&s->body, hb_ptr(b), n) < 0)
            return -1;
        hb_consume(b, b->len); /* anything past the body is dropped */
        if (s->out == OUT_LENGTH) {
            s->out_left -= n;
            if (s->out_left == 0) {
                s->out = OUT_DONE;
                s->out_end = true;
            }
        }
    } else if (s->out == OUT_CHUNKED) {
        for (;;) {
            size_t used, dl;
            const char *data, *err;
            int r = px_h1_chunked_decode(&s->chunk, hb_ptr(b), b->len, &used, &data, &dl, &err);
            if (r == -1)
                return -1;
            if (r == 1 && hb_add(&s->body, data, dl) < 0)
                return -1;
            if (r == 0) {
                if (set_trailers(s, data, dl) < 0)
                    return -1;
                hb_consume(b, b->len);
                s->out = OUT_DONE;
                s->out_end = true;
                break;
            }
            hb_consume(b, used);
            if (r == -2)
                break;
        }
    } else {
        hb_consume(b, b->len);
    }
    resume(s);
    return 0;
}

int px_h2_write(px_h2_stream_t *s, const char *p, size_t n)
{
    if (s->out == OUT_DONE || n == 0)
        return 0;
    if (hb_add(&s->obuf, p, n) < 0)
        goto fail;
    while (s->out == OUT_HEAD) {
        static _Thread_local px_h1_msg_t msg; /* large: not on the stack, not per head */
        px_h1_msg_t *m = &msg;
        const char *err;
        int r = s->h->client ? px_h1_parse_request(hb_ptr(&s->obuf), s->obuf.len, m, &err)
                             : px_h1_parse_response(hb_ptr(&s->obuf), s->obuf.len, s->req_head,
                                                    false, m, &err);
        if (r == -2)
            return 0;
        if (r < 0 || (!s->h->client && m->status_code == 101))
            goto fail;
        if (!s->h->client && m->status_code < 200) {
            hb_consume(&s->obuf, (size_t)r); /* interim responses stay on this hop */
            continue;
        }
        int sr = out_head(s, m);
        if (sr < 0)
            goto fail;
        hb_consume(&s->obuf, (size_t)r);
    }
    if (out_body(s) < 0)
        goto fail;
    return 0;
fail:
    if (s->id > 0)
        nghttp2_submit_rst_stream(s->h->s, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_INTERNAL_ERROR);
    s->out = OUT_DONE;
    return -1;
}

void px_h2_write_end(px_h2_stream_t *s)
{
    if (s->out == OUT_EOF) {
        s->out = OUT_DONE;
        s->out_end = true;
        resume(s);
    }
}

size_t px_h2_pending(const px_h2_stream_t *s)
{
    return s->body.len + s->obuf.len;
}

void px_h2_ack(px_h2_stream_t *s)
{
    if (s->unacked && s->id > 0) {
        nghttp2_session_consume(s->h->s, s->id, s->unacked);
        s->unacked = 0;
    }
}

void px_h2_detach(px_h2_stream_t *s)
{
    if (s->detached)
        return;
    s->detached = true;
    s->user = NULL;
    px_h2_t *h = s->h;
    if (s->id <= 0) {
        stream_free(s);
        return;
    }
    px_h2_ack(s);
    if (h->client && (!s->out_end || !s->in_end))
        nghttp2_submit_rst_stream(h->s, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_CANCEL);
    else if (!s->out_end)
        nghttp2_submit_rst_stream(h->s, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_INTERNAL_ERROR);
    else if (!h->client && !s->in_end)
        s->rst_after = true; /* the response first, then stop the request body */
    resume(s);
}

void px_h2_finish(px_h2_stream_t *s)
{
    if (s->detached)
        return;
    if (s->h->client && s->id > 0 && s->out_end && !s->in_end) {
        /* the response's framing ended inside the DATA that carries
         * END_STREAM, before the frame itself was processed: the stream
         * closes on its own, a reset would only cost the peer */
        s->detached = true;
        s->user = NULL;
        px_h2_ack(s);
        resume(s);
        return;
    }
    px_h2_detach(s);
}

void *px_h2_user(const px_h2_stream_t *s)
{
    return s->detached ? NULL : s->user;
}

int32_t px_h2_id(const px_h2_stream_t *s)
{
    return s->id;
}

void px_h2_set_head(px_h2_stream_t *s, bool head)
{
    s->req_head = head;
}

/* ---- sessions ---- */

px_h2_t *px_h2_new(bool client, const px_h2_cbs_t *cbs, void *ud, const px_h2_opts_t *o)
{
    px_h2_t *h = calloc(1, sizeof(*h));
    nghttp2_session_callbacks *cb = NULL;
    nghttp2_option *opt = NULL;
    if (h == NULL || nghttp2_session_callbacks_new(&cb) != 0 || nghttp2_option_new(&opt) != 0)
        goto fail;
    h->client = client;
    h->counters = o ? o->counters : NULL;
    h->cbs = *cbs;
    h->ud = ud;
    nghttp2_session_callbacks_set_on_begin_headers_callback(cb, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data_chunk);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
    nghttp2_session_callbacks_set_on_frame_send_callback(cb, on_frame_send);
    nghttp2_option_set_no_auto_window_update(opt, 1);
    nghttp2_option_set_max_send_header_block_length(opt, 2 * PX_H1_MAX_HEAD);
    int r = client ? nghttp2_session_client_new2(&h->s, cb, h, opt)
                   : nghttp2_session_server_new2(&h->s, cb, h, opt);
    if (r != 0)
        goto fail;
    uint32_t win = o && o->window ? o->window : H2_WINDOW;
    nghttp2_settings_entry iv[4];
    size_t niv = 0;
    iv[niv++] = (nghttp2_settings_entry){NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, win};
    iv[niv++] = (nghttp2_settings_entry){NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, PX_H1_MAX_HEAD};
    if (client)
        iv[niv++] = (nghttp2_settings_entry){NGHTTP2_SETTINGS_ENABLE_PUSH, 0};
    else
        iv[niv++] = (nghttp2_settings_entry){
            NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS,
            o && o->max_concurrent_streams ? o->max_concurrent_streams : 100};
    if (nghttp2_submit_settings(h->s, NGHTTP2_FLAG_NONE, iv, niv) != 0 ||
        nghttp2_session_set_local_window_size(h->s, NGHTTP2_FLAG_NONE, 0,
                                              (int32_t)H2_CONN_WINDOW) != 0)
        goto fail;
    nghttp2_session_callbacks_del(cb);
    nghttp2_option_del(opt);
    return h;
fail:
    if (cb)
        nghttp2_session_callbacks_del(cb);
    if (opt)
        nghttp2_option_del(opt);
    if (h && h->s)
        nghttp2_session_del(h->s);
    free(h);
    return NULL;
}

void px_h2_free(px_h2_t *h)
{
    if (h == NULL)
        return;
    while (h->streams)
        stream_free(h->streams);
    nghttp2_session_del(h->s);
    free(h);
}

int px_h2_recv(px_h2_t *h, const uint8_t *p, size_t n)
{
    if (h->failed)
        return -1;
    ssize_t r = nghttp2_session_mem_recv(h->s, p, n);
    /* the requests whose heads came in these bytes go to the engine now,
     * with the body that came along */
    int32_t ids[64];
    size_t nid;
    do { /* by id: handing one over may end (and free) another */
        nid = 0;
        for (px_h2_stream_t *s = h->streams; s && nid < 64; s = s->next)
            if (s->gathering)
                ids[nid++] = s->id;
        for (size_t i = 0; i < nid; i++) {
            px_h2_stream_t *s = nghttp2_session_get_stream_user_data(h->s, ids[i]);
            if (s && s->gathering)
                hand_over(s);
        }
    } while (nid == 64);
    if (r < 0 || (size_t)r != n) {
        h->failed = true;
        if (r != NGHTTP2_ERR_BAD_CLIENT_MAGIC)
            nghttp2_session_terminate_session(h->s, NGHTTP2_PROTOCOL_ERROR);
        return -1;
    }
    return 0;
}

int px_h2_send(px_h2_t *h, px_h2_sink_fn sink, void *arg)
{
    for (;;) {
        const uint8_t *p;
        ssize_t n = nghttp2_session_mem_send(h->s, &p);
        if (n < 0) {
            h->failed = true;
            return -1;
        }
        if (n == 0)
            return 0;
        if (sink(arg, p, (size_t)n) < 0)
            return -1;
    }
}

bool px_h2_alive(const px_h2_t *h)
{
    return nghttp2_session_want_read(h->s) || nghttp2_session_want_write(h->s);
}

void px_h2_goaway(px_h2_t *h)
{
    nghttp2_submit_goaway(h->s, NGHTTP2_FLAG_NONE, nghttp2_session_get_last_proc_stream_id(h->s),
                          NGHTTP2_NO_ERROR, NULL, 0);
}

size_t px_h2_streams(const px_h2_t *h)
{
    return h->nstreams;
}

bool px_h2_can_open(const px_h2_t *h)
{
    return !h->failed && nghttp2_session_want_read(h->s) &&
           nghttp2_session_get_remote_settings(h->s, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS) >
               h->nstreams &&
           nghttp2_session_get_next_stream_id(h->s) < (1u << 30);
}

px_h2_stream_t *px_h2_open(px_h2_t *h, void *sud, bool https)
{
    if (!px_h2_can_open(h))
        return NULL;
    px_h2_stream_t *s = stream_new(h);
    if (s == NULL)
        return NULL;
    s->user = sud;
    s->https = https;
    return s;
}
