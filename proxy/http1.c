/*
 * HTTP/1.1 codec: strict request/response head parser and chunked decoder.
 * See http1_internal.h for the contract and the rules enforced.
 */
#include "http1_internal.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* tchar of RFC 9110 section 5.6.2: ALPHA, DIGIT and !#$%&'*+-.^_`|~, as
 * bits of the ASCII codes 0-63 and 64-127 (every header name byte passes
 * here). */
static bool is_tchar(unsigned char c)
{
    static const uint64_t lo = 0x03ff6cfa00000000ull, hi = 0x57ffffffc7fffffeull;
    return c < 64 ? (lo >> c) & 1 : c < 128 ? (hi >> (c - 64)) & 1 : false;
}

/* field-vchar / obs-text / SP / HTAB: what a field value may hold. */
static bool is_value_char(unsigned char c)
{
    return c == '\t' || (c >= 0x20 && c != 0x7f);
}

/* What a request target may hold: visible ASCII only (no space, no CTL, no
 * obs-text). */
static bool is_target_char(unsigned char c)
{
    return c > 0x20 && c < 0x7f;
}

bool px_h1_slice_ieq(const char *s, size_t len, const char *lit, size_t n)
{
    if (n != len)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char a = (unsigned char)s[i], b = (unsigned char)lit[i];
        if (a >= 'A' && a <= 'Z')
            a = (unsigned char)(a + 32);
        if (b >= 'A' && b <= 'Z')
            b = (unsigned char)(b + 32);
        if (a != b)
            return false;
    }
    return true;
}

const px_h1_header_t *px_h1_find(const px_h1_msg_t *msg, const char *name)
{
    for (size_t i = 0; i < msg->nheaders; i++)
        if (px_h1_ieq(msg->headers[i].name, msg->headers[i].name_len, name))
            return &msg->headers[i];
    return NULL;
}

/* Iterates the comma-separated list elements of a value: sets *tok, *tlen to
 * the next non-empty element (trimmed) and returns true, or returns false at
 * the end. *pos is the cursor (start at 0). */
static bool list_next(const char *v, size_t vlen, size_t *pos, const char **tok, size_t *tlen)
{
    while (*pos < vlen) {
        size_t s = *pos, e = s;
        while (e < vlen && v[e] != ',')
            e++;
        *pos = e < vlen ? e + 1 : e;
        while (s < e && (v[s] == ' ' || v[s] == '\t'))
            s++;
        size_t t = e;
        while (t > s && (v[t - 1] == ' ' || v[t - 1] == '\t'))
            t--;
        if (t > s) {
            *tok = v + s;
            *tlen = t - s;
            return true;
        }
    }
    return false;
}

static bool list_has(const char *v, size_t vlen, const char *lit)
{
    size_t pos = 0, tlen;
    const char *tok;
    while (list_next(v, vlen, &pos, &tok, &tlen))
        if (px_h1_ieq(tok, tlen, lit))
            return true;
    return false;
}

bool px_h1_is_hop_by_hop(const px_h1_msg_t *msg, const char *name, size_t name_len)
{
#define HOP(s) {s, sizeof(s) - 1}
    static const struct {
        const char *name;
        size_t len;
    } hop[] = {HOP("connection"), HOP("keep-alive"), HOP("proxy-connection"), HOP("te"),
               HOP("transfer-encoding"), HOP("upgrade"), HOP("trailer")};
#undef HOP
    for (size_t i = 0; i < sizeof(hop) / sizeof(hop[0]); i++)
        if (px_h1_slice_ieq(name, name_len, hop[i].name, hop[i].len))
            return true;
    for (size_t i = 0; i < msg->nheaders; i++) {
        const px_h1_header_t *h = &msg->headers[i];
        if (!px_h1_ieq(h->name, h->name_len, "connection"))
            continue;
        size_t pos = 0, tlen;
        const char *tok;
        while (list_next(h->value, h->value_len, &pos, &tok, &tlen))
            if (px_h1_slice_ieq(tok, tlen, name, name_len))
                return true;
    }
    return false;
}

/* Finds the CRLF ending the line that starts at buf[pos]. Returns the index
 * of the CR, -2 if the line is not complete yet, -1 if a bare CR or LF (or a
 * NUL) appears first. */
static long find_crlf(const char *buf, size_t len, size_t pos)
{
    for (size_t i = pos; i < len; i++) {
        char c = buf[i];
        if (c == '\r') {
            if (i + 1 >= len)
                return -2;
            return buf[i + 1] == '\n' ? (long)i : -1;
        }
        if (c == '\n' || c == '\0')
            return -1;
    }
    return -2;
}

/* Parses header field lines from buf[pos..len) up to and including the empty
 * line. Returns the index past the empty line, -2 need more, -1 error. */
static long parse_fields(const char *buf, size_t len, size_t pos, px_h1_header_t *hdrs,
                         size_t max, size_t *n, int *status, const char **err)
{
    *n = 0;
    for (;;) {
        long eol = find_crlf(buf, len, pos);
        if (eol == -2)
            return -2;
        if (eol < 0) {
            *err = "bare CR or LF in the header section";
            *status = 400;
            return -1;
        }
        size_t e = (size_t)eol;
        if (e == pos)
            return (long)(e + 2); /* the empty line */
        if (buf[pos] == ' ' || buf[pos] == '\t') {
            *err = "obsolete line folding in a header field";
            *status = 400;
            return -1;
        }
        size_t c = pos;
        while (c < e && is_tchar((unsigned char)buf[c]))
            c++;
        if (c == e || buf[c] != ':') {
            *err = c < e && (buf[c] == ' ' || buf[c] == '\t')
                       ? "whitespace between a header field name and the colon"
                       : "invalid character in a header field name";
            *status = 400;
            return -1;
        }
        if (c == pos) {
            *err = "empty header field name";
            *status = 400;
            return -1;
        }
        size_t vs = c + 1, ve = e;
        while (vs < ve && (buf[vs] == ' ' || buf[vs] == '\t'))
            vs++;
        while (ve > vs && (buf[ve - 1] == ' ' || buf[ve - 1] == '\t'))
            ve--;
        for (size_t i = vs; i < ve; i++)
            if (!is_value_char((unsigned char)buf[i])) {
                *err = "invalid character in a header field value";
                *status = 400;
                return -1;
            }
        if (*n >= max) {
            *err = "too many header fields";
            *status = 431;
            return -1;
        }
        hdrs[*n].name = buf + pos;
        hdrs[*n].name_len = c - pos;
        hdrs[*n].value = buf + vs;
        hdrs[*n].value_len = ve - vs;
        (*n)++;
        pos = e + 2;
    }
}

/* Parses a Content-Length value (digits only, possibly a list of equal
 * values). Returns 0 or -1. */
static int parse_length(const char *v, size_t vlen, uint64_t *out)
{
    size_t pos = 0, tlen;
    const char *tok;
    bool have = false;
    uint64_t first = 0;
    /* An empty element ("1,,1" or "") is malformed; list_next skips empties,
     * so check for them first. */
    if (vlen == 0)
        return -1;
    for (size_t i = 0; i < vlen; i++)
        if (v[i] == ',') {
            size_t a = i, b = i + 1;
            while (a > 0 && (v[a - 1] == ' ' || v[a - 1] == '\t'))
                a--;
            while (b < vlen && (v[b] == ' ' || v[b] == '\t'))
                b++;
            if (a == 0 || b == vlen || v[b] == ',')
                return -1;
        }
    while (list_next(v, vlen, &pos, &tok, &tlen)) {
        uint64_t x = 0;
        if (tlen > 19)
            return -1; /* beyond any real body, and overflow-safe below */
        for (size_t i = 0; i < tlen; i++) {
            if (tok[i] < '0' || tok[i] > '9')
                return -1;
            x = x * 10 + (uint64_t)(tok[i] - '0');
        }
        if (have && x != first)
            return -1;
        first = x;
        have = true;
    }
    if (!have)
        return -1;
    *out = first;
    return 0;
}

/* Works out framing and connection semantics from the header fields; shared
 * by requests and responses. */
static int interpret(px_h1_msg_t *m, bool request, const char **err)
{
    bool have_cl = false, have_te = false, te_chunked_last = false, te_other = false;
    bool conn_close = false, conn_keep = false, conn_upgrade = false;
    const px_h1_header_t *upgrade = NULL;
    int chunked_count = 0;
    uint64_t cl = 0;
    int bad = request ? 400 : 502;

    for (size_t i = 0; i < m->nheaders; i++) {
        const px_h1_header_t *h = &m->headers[i];
        if (px_h1_ieq(h->name, h->name_len, "content-length")) {
            uint64_t x;
            if (parse_length(h->value, h->value_len, &x) < 0) {
                *err = "invalid Content-Length";
                m->status = bad;
                return -1;
            }
            if (have_cl && x != cl) {
                *err = "conflicting Content-Length headers";
                m->status = bad;
                return -1;
            }
            cl = x;
            have_cl = true;
        } else if (px_h1_ieq(h->name, h->name_len, "transfer-encoding")) {
            size_t pos = 0, tlen;
            const char *tok;
            have_te = true;
            while (list_next(h->value, h->value_len, &pos, &tok, &tlen)) {
                if (px_h1_ieq(tok, tlen, "chunked")) {
                    chunked_count++;
                    te_chunked_last = true;
                } else {
                    te_chunked_last = false;
                    te_other = true;
                }
            }
        } else if (px_h1_ieq(h->name, h->name_len, "connection")) {
            conn_close |= list_has(h->value, h->value_len, "close");
            conn_keep |= list_has(h->value, h->value_len, "keep-alive");
            conn_upgrade |= list_has(h->value, h->value_len, "upgrade");
        } else if (px_h1_ieq(h->name, h->name_len, "upgrade")) {
            upgrade = h;
        } else if (request && px_h1_ieq(h->name, h->name_len, "host")) {
            if (m->host != NULL) {
                *err = "more than one Host header";
                m->status = 400;
                return -1;
            }
            m->host = h->value;
            m->host_len = h->value_len;
        } else if (request && px_h1_ieq(h->name, h->name_len, "expect")) {
            if (px_h1_ieq(h->value, h->value_len, "100-continue"))
                m->expect_continue = true;
        }
    }

    if (have_te) {
        if (m->minor_version == 0) {
            *err = "Transfer-Encoding in an HTTP/1.0 message";
            m->status = bad;
            return -1;
        }
        if (have_cl) {
            *err = "both Content-Length and Transfer-Encoding";
            m->status = bad;
            return -1;
        }
        if (!te_chunked_last || chunked_count != 1) {
            *err = "Transfer-Encoding does not end in a single chunked";
            m->status = bad;
            return -1;
        }
        if (te_other) {
            *err = "unsupported transfer coding";
            m->status = request ? 501 : 502;
            return -1;
        }
    }
    if (request && m->minor_version == 1 && m->host == NULL) {
        *err = "missing Host header";
        m->status = 400;
        return -1;
    }

    m->upgrade = conn_upgrade && upgrade != NULL;
    m->websocket = m->upgrade && list_has(upgrade->value, upgrade->value_len, "websocket");
    m->keep_alive = m->minor_version == 1 ? !conn_close : (conn_keep && !conn_close);

    if (have_te) {
        m->body = PX_H1_BODY_CHUNKED;
    } else if (have_cl) {
        m->body = cl ? PX_H1_BODY_LENGTH : PX_H1_BODY_NONE;
        m->content_length = cl;
    } else {
        m->body = request ? PX_H1_BODY_NONE : PX_H1_BODY_EOF;
    }
    return 0;
}

static void msg_reset(px_h1_msg_t *m)
{
    m->method = m->target = m->reason = m->host = NULL;
    m->method_len = m->target_len = m->reason_len = m->host_len = 0;
    m->status_code = 0;
    m->minor_version = 1;
    m->nheaders = 0;
    m->body = PX_H1_BODY_NONE;
    m->content_length = 0;
    m->keep_alive = m->expect_continue = m->upgrade = m->websocket = false;
    m->is_head = m->is_connect = false;
    m->status = 0;
}

/* Parses "HTTP/1.x" at buf[pos..pos+8). Returns the minor version, -1 if it
 * is not HTTP/1.0 or HTTP/1.1, -2 if it is some other well-formed version. */
static int parse_version(const char *s, size_t n)
{
    if (n != 8 || memcmp(s, "HTTP/", 5) != 0 || s[6] != '.')
        return -1;
    if (s[5] < '0' || s[5] > '9' || s[7] < '0' || s[7] > '9')
        return -1;
    if (s[5] != '1' || (s[7] != '0' && s[7] != '1'))
        return -2;
    return s[7] - '0';
}

/* Turns a "need more" into 431 once the head is known to exceed the limit. */
static int need_more(size_t len, px_h1_msg_t *m, const char **err, int status)
{
    if (len >= PX_H1_MAX_HEAD) {
        *err = "header section too large";
        m->status = status;
        return -1;
    }
    return -2;
}

int px_h1_parse_request(const char *buf, size_t len, px_h1_msg_t *m, const char **err)
{
    msg_reset(m);
    *err = NULL;
    size_t lim = len < PX_H1_MAX_HEAD ? len : PX_H1_MAX_HEAD;
    size_t pos = 0;

    long eol = find_crlf(buf, lim, 0);
    if (eol == -2)
        return need_more(len, m, err, 431);
    if (eol < 0) {
        *err = "bare CR or LF in the request line";
        m->status = 400;
        return -1;
    }
    size_t e = (size_t)eol;
    /* method SP target SP version, single spaces */
    while (pos < e && is_tchar((unsigned char)buf[pos]))
        pos++;
    if (pos == 0 || pos >= e || buf[pos] != ' ') {
        *err = "malformed method";
        m->status = 400;
        return -1;
    }
    m->method = buf;
    m->method_len = pos;
    size_t ts = ++pos;
    while (pos < e && is_target_char((unsigned char)buf[pos]))
        pos++;
    if (pos == ts || pos >= e || buf[pos] != ' ') {
        *err = "malformed request target";
        m->status = 400;
        return -1;
    }
    m->target = buf + ts;
    m->target_len = pos - ts;
    pos++;
    int v = parse_version(buf + pos, e - pos);
    if (v == -2) {
        *err = "unsupported HTTP version";
        m->status = 505;
        return -1;
    }
    if (v < 0) {
        *err = "malformed HTTP version";
        m->status = 400;
        return -1;
    }
    m->minor_version = v;
    m->is_head = m->method_len == 4 && memcmp(m->method, "HEAD", 4) == 0;
    m->is_connect = m->method_len == 7 && memcmp(m->method, "CONNECT", 7) == 0;

    /* Target form must fit the method. */
    char t0 = m->target[0];
    if (m->is_connect) {
        if (t0 == '/' || memchr(m->target, '/', m->target_len) != NULL) {
            *err = "CONNECT needs an authority-form target";
            m->status = 400;
            return -1;
        }
    } else if (t0 != '/') {
        bool asterisk = m->target_len == 1 && t0 == '*' && m->method_len == 7 &&
                        memcmp(m->method, "OPTIONS", 7) == 0;
        bool absolute = (m->target_len > 7 && px_h1_ieq(m->target, 7, "http://")) ||
                        (m->target_len > 8 && px_h1_ieq(m->target, 8, "https://"));
        if (!asterisk && !absolute) {
            *err = "malformed request target";
            m->status = 400;
            return -1;
        }
    }

    const char *ferr = NULL;
    long end = parse_fields(buf, lim, e + 2, m->headers, PX_H1_MAX_HEADERS, &m->nheaders,
                            &m->status, &ferr);
    if (end == -2)
        return need_more(len, m, err, 431);
    if (end < 0) {
        *err = ferr;
        return -1;
    }
    if (interpret(m, true, err) < 0)
        return -1;
    return (int)end;
}

int px_h1_parse_response(const char *buf, size_t len, bool req_method_head, bool req_connect,
                         px_h1_msg_t *m, const char **err)
{
    msg_reset(m);
    *err = NULL;
    size_t lim = len < PX_H1_MAX_HEAD ? len : PX_H1_MAX_HEAD;

    long eol = find_crlf(buf, lim, 0);
    if (eol == -2)
        return need_more(len, m, err, 502);
    if (eol < 0) {
        *err = "bare CR or LF in the status line";
        m->status = 502;
        return -1;
    }
    size_t e = (size_t)eol;
    int v = e >= 8 ? parse_version(buf, 8) : -1;
    if (v < 0 || e < 12 || buf[8] != ' ' || (e > 12 && buf[12] != ' ')) {
        *err = "malformed status line";
        m->status = 502;
        return -1;
    }
    m->minor_version = v;
    int code = 0;
    for (int i = 9; i < 12; i++) {
        if (buf[i] < '0' || buf[i] > '9') {
            *err = "malformed status code";
            m->status = 502;
            return -1;
        }
        code = code * 10 + (buf[i] - '0');
    }
    if (code < 100) {
        *err = "malformed status code";
        m->status = 502;
        return -1;
    }
    m->status_code = code;
    if (e > 12) {
        for (size_t i = 13; i < e; i++)
            if (!is_value_char((unsigned char)buf[i])) {
                *err = "invalid character in the reason phrase";
                m->status = 502;
                return -1;
            }
        m->reason = buf + 13;
        m->reason_len = e - 13;
    } else {
        m->reason = buf + 12;
    }

    const char *ferr = NULL;
    long end = parse_fields(buf, lim, e + 2, m->headers, PX_H1_MAX_HEADERS, &m->nheaders,
                            &m->status, &ferr);
    if (end == -2)
        return need_more(len, m, err, 502);
    if (end < 0) {
        *err = ferr;
        m->status = 502;
        return -1;
    }
    if (interpret(m, false, err) < 0)
        return -1;
    /* Responses that never carry a body, whatever their headers say. */
    if (code < 200 || code == 204 || code == 304 || req_method_head ||
        (req_connect && code >= 200 && code < 300)) {
        m->body = PX_H1_BODY_NONE;
        m->content_length = 0;
    }
    if (m->body == PX_H1_BODY_EOF)
        m->keep_alive = false;
    return (int)end;
}

/* Chunked decoder states. */
enum { CK_SIZE = 0, CK_DATA, CK_DATA_END, CK_TRAILER, CK_DONE };

#define CK_MAX_SIZE_LINE 4096u

void px_h1_chunked_init(px_h1_chunked_t *d)
{
    d->_state = CK_SIZE;
    d->_left = 0;
    d->_trailer_len = 0;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int px_h1_chunked_decode(px_h1_chunked_t *d, const char *buf, size_t len, size_t *consumed,
                         const char **data, size_t *data_len, const char **err)
{
    size_t pos = 0;
    *consumed = 0;
    *data = NULL;
    *data_len = 0;
    *err = NULL;
    for (;;) {
        switch (d->_state) {
        case CK_SIZE: {
            size_t lim = len - pos < CK_MAX_SIZE_LINE ? len : pos + CK_MAX_SIZE_LINE;
            long eol = find_crlf(buf, lim, pos);
            if (eol == -2) {
                if (lim - pos >= CK_MAX_SIZE_LINE) {
                    *err = "chunk size line too long";
                    return -1;
                }
                *consumed = pos;
                return -2;
            }
            if (eol < 0) {
                *err = "bare CR or LF in a chunk size line";
                return -1;
            }
            size_t e = (size_t)eol, i = pos;
            uint64_t n = 0;
            for (; i < e && hexval(buf[i]) >= 0; i++) {
                if (n >> 60) {
                    *err = "chunk size too large";
                    return -1;
                }
                n = n * 16 + (uint64_t)hexval(buf[i]);
            }
            if (i == pos) {
                *err = "missing chunk size";
                return -1;
            }
            /* chunk-ext: ";" followed by name[=value] characters; no bare
             * whitespace or control characters before it. */
            if (i < e) {
                if (buf[i] != ';') {
                    *err = "invalid character after a chunk size";
                    return -1;
                }
                for (size_t k = i; k < e; k++)
                    if (!is_value_char((unsigned char)buf[k])) {
                        *err = "invalid character in a chunk extension";
                        return -1;
                    }
            }
            pos = e + 2;
            if (n == 0) {
                d->_state = CK_TRAILER;
            } else {
                d->_left = n;
                d->_state = CK_DATA;
            }
            break;
        }
        case CK_DATA: {
            if (pos == len) {
                *consumed = pos;
                return -2;
            }
            size_t avail = len - pos;
            size_t take = d->_left < avail ? (size_t)d->_left : avail;
            *data = buf + pos;
            *data_len = take;
            d->_left -= take;
            if (d->_left == 0)
                d->_state = CK_DATA_END;
            *consumed = pos + take;
            return 1;
        }
        case CK_DATA_END:
            if (len - pos < 2) {
                if (len - pos == 1 && buf[pos] != '\r') {
                    *err = "chunk data not followed by CRLF";
                    return -1;
                }
                *consumed = pos;
                return -2;
            }
            if (buf[pos] != '\r' || buf[pos + 1] != '\n') {
                *err = "chunk data not followed by CRLF";
                return -1;
            }
            pos += 2;
            d->_state = CK_SIZE;
            break;
        case CK_TRAILER: {
            px_h1_header_t tr[PX_H1_MAX_HEADERS];
            size_t n;
            int st = 0;
            const char *ferr = NULL;
            size_t lim = len - pos < PX_H1_MAX_HEAD ? len : pos + PX_H1_MAX_HEAD;
            long end = parse_fields(buf, lim, pos, tr, PX_H1_MAX_HEADERS, &n, &st, &ferr);
            if (end == -2) {
                if (lim - pos >= PX_H1_MAX_HEAD) {
                    *err = "trailer section too large";
                    return -1;
                }
                *consumed = pos;
                return -2;
            }
            if (end < 0) {
                *err = ferr;
                return -1;
            }
            *data = buf + pos;
            *data_len = (size_t)end - pos - 2;
            *consumed = (size_t)end;
            d->_state = CK_DONE;
            return 0;
        }
        default:
            *consumed = pos;
            return 0;
        }
    }
}

size_t px_h1_chunk_header(char *out, uint64_t n)
{
    int k = snprintf(out, 20, "%llx\r\n", (unsigned long long)n);
    return k > 0 ? (size_t)k : 0;
}
