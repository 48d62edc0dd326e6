/*
 * http1: the proxy's HTTP/1.1 codec (private to proxy/).
 *
 * Incremental and zero-copy: a parser is handed the bytes read so far and
 * either returns how many bytes the message head took (request/status line
 * plus header fields plus the blank line), -2 when it needs more bytes, or -1
 * on an error, with *err set to the reason and the message's `status` set to
 * the HTTP status the proxy answers with (400, 431, 501, 505). Names, values
 * and the target are slices into the caller's buffer, valid while it is.
 *
 * The parser is strict where lenience lets two parsers disagree on where a
 * message ends (request smuggling): CRLF line ends only, no obs-fold, token
 * characters only in methods and field names, no whitespace before a colon,
 * no control characters in values or the target, Content-Length digits only
 * and all copies equal, Transfer-Encoding only in HTTP/1.1, ending in a
 * single "chunked", never together with Content-Length. A message that
 * fails any of this is answered with an error and never forwarded.
 *
 * The chunked decoder is a small state machine fed any split of the body; it
 * yields data slices, then the trailer section in one piece.
 */
#ifndef MESH_PROXY_HTTP1_INTERNAL_H
#define MESH_PROXY_HTTP1_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Header block limits: Envoy's defaults (60 KiB, 100 fields). */
#define PX_H1_MAX_HEAD 61440u
#define PX_H1_MAX_HEADERS 100u

typedef struct px_h1_header {
    const char *name;
    size_t name_len;
    const char *value; /* without leading/trailing whitespace */
    size_t value_len;
} px_h1_header_t;

typedef enum {
    PX_H1_BODY_NONE = 0, /* no body */
    PX_H1_BODY_LENGTH,   /* content_length bytes */
    PX_H1_BODY_CHUNKED,  /* chunked framing */
    PX_H1_BODY_EOF,      /* responses only: until the connection closes */
} px_h1_body_t;

/* A parsed request or response head. */
typedef struct px_h1_msg {
    /* request line */
    const char *method;
    size_t method_len;
    const char *target;
    size_t target_len;
    /* status line (responses) */
    int status_code;
    const char *reason;
    size_t reason_len;
    int minor_version; /* HTTP/1.<minor>: 0 or 1 */

    px_h1_header_t headers[PX_H1_MAX_HEADERS];
    size_t nheaders;

    /* what the head means */
    px_h1_body_t body;
    uint64_t content_length;
    bool keep_alive;      /* the connection may carry another message after this one */
    bool expect_continue; /* request: Expect: 100-continue */
    bool upgrade;         /* Connection: upgrade and an Upgrade header */
    bool websocket;       /* the upgrade asks for websocket */
    bool is_head;         /* request: method HEAD */
    bool is_connect;      /* request: method CONNECT */
    const char *host;     /* request: the Host header (NULL if absent) */
    size_t host_len;
    int status; /* on error: the status to answer with */
} px_h1_msg_t;

/* Parses a request head from buf[0..len). Returns the head's length, -2 for
 * "need more" (never past PX_H1_MAX_HEAD bytes: then -1 with status 431), or
 * -1 with *err and msg->status set. */
int px_h1_parse_request(const char *buf, size_t len, px_h1_msg_t *msg, const char **err);

/* Parses a response head. `req_method_head` / `req_connect`: the request was
 * HEAD / CONNECT, which decides whether a body follows. Same returns as
 * px_h1_parse_request (status on error is 502, for the proxy's answer). */
int px_h1_parse_response(const char *buf, size_t len, bool req_method_head, bool req_connect,
                         px_h1_msg_t *msg, const char **err);

/* The first header named `name` (case-insensitive), or NULL. */
const px_h1_header_t *px_h1_find(const px_h1_msg_t *msg, const char *name);

/* True if the field must not be forwarded by a proxy: the hop-by-hop fields
 * (Connection, Keep-Alive, Proxy-Connection, TE, Transfer-Encoding, Upgrade,
 * Trailer) and every field the message's Connection header names. */
bool px_h1_is_hop_by_hop(const px_h1_msg_t *msg, const char *name, size_t name_len);

/* Case-insensitive comparison of a slice with a string of lit_len bytes,
 * and (px_h1_ieq) with a NUL-terminated one. */
bool px_h1_slice_ieq(const char *s, size_t len, const char *lit, size_t lit_len);
static inline bool px_h1_ieq(const char *s, size_t len, const char *lit)
{
    return px_h1_slice_ieq(s, len, lit, __builtin_strlen(lit)); /* a literal's length folds */
}

/* Chunked body decoder. Zero it (or call px_h1_chunked_init) per body. */
typedef struct px_h1_chunked {
    int _state;
    uint64_t _left; /* data bytes left in the current chunk */
    size_t _trailer_len;
} px_h1_chunked_t;

void px_h1_chunked_init(px_h1_chunked_t *d);

/* Decodes from buf[0..len). Sets *consumed to the bytes used. Returns
 *   1: *data, *data_len is a slice of body data (inside buf);
 *   0: the body is complete; *data, *data_len is then the trailer section
 *      (header fields, each ending in CRLF, without the final blank line;
 *      empty when there are none);
 *  -2: more bytes are needed: *consumed bytes were used (a partial size
 *      line or trailer section is left for the next call, with more bytes);
 *  -1: malformed framing (*err says why). */
int px_h1_chunked_decode(px_h1_chunked_t *d, const char *buf, size_t len, size_t *consumed,
                         const char **data, size_t *data_len, const char **err);

/* Writes the chunk-size line for n bytes ("1a2b\r\n") into out (>= 20
 * bytes); returns its length. The last chunk is n = 0 followed by the
 * trailers and "\r\n". */
size_t px_h1_chunk_header(char *out, uint64_t n);

#endif
