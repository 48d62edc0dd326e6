/*
 * engine: worker threads, listeners, downstream and upstream connections,
 * HTTP/1.1, HTTP/2 and TCP proxying (see proxy.h).
 *
 * Per worker: one loop, the snapshot it serves new connections with, its
 * listening sockets, an idle pool of upstream keep-alive connections per
 * endpoint, a pool of multiplexed HTTP/2 upstream connections, and
 * load-balancer state. A downstream connection keeps a reference on the
 * snapshot it was accepted with. One request at a time per HTTP/1.1
 * connection: the next pipelined request is parsed only when the previous
 * response has been written.
 *
 * HTTP/2 (codec in h2.c): a downstream connection that starts with the h2c
 * preface or negotiated "h2" becomes a session (state D_H2) whose streams
 * are dconns of their own (parent set, no socket), each going through the
 * same request path as an HTTP/1.1 request: routing, faults, retries,
 * timeouts, mirroring, circuit breakers, RBAC, metrics, the access log. The
 * codec hands a stream's request over as HTTP/1.1 bytes and turns the
 * response the path writes back into frames. An HTTP/2 cluster's requests
 * are streams of one connection per endpoint: each stream is a uconn of its
 * own (hp set, no socket) written and read as an HTTP/1.1 connection, the
 * codec doing the framing. Sends from inside the codec's callbacks are
 * noted (h2_busy) and done when the codec returns.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "../common/b64.h"
#include "../common/hmap.h"
#include "../common/log.h"
#include "../common/loop.h"
#include <openssl/ssl.h>

#include "blkcache.h"
#include "config_internal.h"
#include "google/protobuf/struct.pb-c.h"
#include "h2_internal.h"
#include "rbac_internal.h"
#include "splice_internal.h"
#include "tls_internal.h"
#include "proxy.h"

#define IN_CAP (PX_H1_MAX_HEAD + 16384) /* a full head plus some body */
#define PEEK_TIMEOUT_MS 5000  /* listener filters: how long to wait for the first bytes */
#define PEEK_RETRY_MS 5       /* an incomplete ClientHello: look again after */
#define PEEK_MAX (16384 + 5)  /* one TLS record */
#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24 /* linux/in.h */
#endif
#ifndef SO_ORIGINAL_DST
#define SO_ORIGINAL_DST 80 /* linux/netfilter_ipv4.h */
#endif
#ifndef IP6T_SO_ORIGINAL_DST
#define IP6T_SO_ORIGINAL_DST 80 /* linux/netfilter_ipv6/ip6_tables.h */
#endif
#define OUT_HIGH (256 * 1024)           /* stop reading the other side above this */
#define RETRY_BODY_MAX 65536            /* a request body is kept for retries up to this size */
#define SHADOW_MS 10000                 /* a mirrored request's connection lives at most this long */
#define POOL_MAX_IDLE 1024              /* idle upstream connections per endpoint (Envoy's max_connections) */
#define POOL_BUFFERED 32                /* the idle connections pooled last keep their buffers */

typedef struct buf {
    char *data;
    size_t len, cap;
} buf_t;

/* A worker thread keeps the connection structures its connections let go
 * of (an HTTP/2 stream gets one) and a response head's parse result, for
 * the next ones, as blkcache does for buffers: objects of a kilobyte or
 * more take malloc's slow path, which stays off the request path this way.
 * Only worker threads cache (obj_cache is set by worker_main, which frees
 * what is left when its loop ends). */
#define OBJ_CACHE_MAX 64
typedef struct obj_cache {
    struct dconn *conns[OBJ_CACHE_MAX];
    size_t nconns;
    px_h1_msg_t *msg; /* one: a response head is parsed and done with at once */
} obj_cache_t;
static __thread obj_cache_t *obj_cache;

static void obj_cache_drain(obj_cache_t *c)
{
    while (c->nconns)
        free(c->conns[--c->nconns]);
    free(c->msg);
    c->msg = NULL;
}

/* A message to parse into, and back when done with it. */
static px_h1_msg_t *msg_take(void)
{
    obj_cache_t *c = obj_cache;
    if (c && c->msg) {
        px_h1_msg_t *m = c->msg;
        c->msg = NULL;
        return m;
    }
    return malloc(sizeof(px_h1_msg_t));
}

static void msg_give(px_h1_msg_t *m)
{
    obj_cache_t *c = obj_cache;
    if (c && c->msg == NULL)
        c->msg = m;
    else
        free(m);
}

/* Buffers grow in powers of two from 4 KiB; up to 16 KiB they come from
 * and go back to the worker's block cache. */
static int buf_reserve(buf_t *b, size_t n)
{
    if (b->cap - b->len >= n)
        return 0;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap - b->len < n)
        cap *= 2;
    char *d = px_blk_grow(b->data, b->len, b->cap, cap);
    if (d == NULL)
        return -1;
    b->data = d;
    b->cap = cap;
    return 0;
}

static int buf_add(buf_t *b, const void *p, size_t n)
{
    if (buf_reserve(b, n) < 0)
        return -1;
    memcpy(b->data + b->len, p, n);
    b->len += n;
    return 0;
}

static int buf_str(buf_t *b, const char *s)
{
    return buf_add(b, s, strlen(s));
}

/* Appends v in decimal. */
static int buf_u64(buf_t *b, uint64_t v)
{
    char t[20];
    size_t i = sizeof(t);
    do
        t[--i] = (char)('0' + v % 10);
    while ((v /= 10) != 0);
    return buf_add(b, t + i, sizeof(t) - i);
}

/* Copies at most n - 1 bytes of src (len bytes) into dst, NUL-terminated. */
static void copy_trunc(char *dst, size_t n, const char *src, size_t len)
{
    if (len >= n)
        len = n - 1;
    memcpy(dst, src, len);
    dst[len] = 0;
}

static void buf_consume(buf_t *b, size_t n)
{
    memmove(b->data, b->data + n, b->len - n);
    b->len -= n;
}

static void buf_free(buf_t *b)
{
    px_blk_put(b->data, b->cap);
    memset(b, 0, sizeof(*b));
}

typedef struct worker worker_t;
typedef struct dconn dconn_t;

/* The metric series a request was counted in, remembered by what decides its
 * labels (the listener, cluster and chain it used, its status, flags,
 * protocol and peer), so a repeat costs a comparison instead of formatting
 * and hashing the label set. Cleared whenever the worker takes a new
 * snapshot, so the remembered pointers can never be reused memory. */
#define METRIC_CACHE 64
typedef struct metric_memo {
    struct px_metric *m; /* NULL: empty */
    const void *listener, *cluster, *chain;
    int code;
    bool tcp, grpc;
    char flags[32];
    char peer[256];
    char peer_wl[128], peer_ns[64], peer_app[64], peer_ver[64];
} metric_memo_t;
typedef struct uconn uconn_t;

/* A counter that one worker writes and any thread reads. */
typedef _Atomic uint64_t counter_t;
#define CINC(c) atomic_fetch_add_explicit(&(c), 1, memory_order_relaxed)
#define CDEC(c) atomic_fetch_sub_explicit(&(c), 1, memory_order_relaxed)
#define CGET(c) atomic_load_explicit(&(c), memory_order_relaxed)

typedef struct wstats {
    counter_t cx_total, cx_active, rq_total, ucx_total, urq_total, ucx_reused;
    counter_t rq_2xx, rq_3xx, rq_4xx, rq_5xx;
    counter_t fault_abort, fault_delay; /* requests aborted / delayed by fault injection */
    counter_t retry, retry_success, retry_exhausted; /* upstream_rq_retry, _success, _limit_exceeded */
    counter_t cx_overflow, rq_pending_overflow, retry_overflow; /* circuit breakers */
    counter_t shadow_sent, shadow_failed; /* mirrored requests */
    counter_t od_ejections, od_eject_5xx, od_eject_gw, od_overflow; /* outlier detection */
    counter_t ssl_fail, ssl_handshake;       /* TLS handshakes failed / completed (both sides) */
    counter_t rbac_allowed, rbac_denied, rbac_shadow_denied; /* authorization */
    counter_t no_chain;                      /* connections no filter chain matched */
    counter_t spliced;                       /* tunnels switched to splice */
    px_h2_counters_t h2_down, h2_up;         /* HTTP/2 sessions with clients / upstreams */
} wstats_t;

/* One listening socket of a worker. */
typedef struct wlistener {
    struct wlistener *next;
    char *key;  /* name|address|port|kind */
    char *name; /* the listener's name in the snapshot */
    int fd;
    loop_io_t *io;
    worker_t *w;
} wlistener_t;

/* Outstanding requests per endpoint address (least-request state). */
typedef struct ep_active {
    char *address;
    uint32_t n;
} ep_active_t;

/* Outlier detection state of one upstream host of a cluster. */
typedef struct od_host {
    struct od_host *next;
    char *address;
    atomic_uint c5xx, cgw;           /* consecutive 5xx / gateway failures */
    _Atomic uint64_t ejected_until;  /* loop clock ms; 0: not ejected */
    _Atomic uint64_t healthy_since;  /* loop clock ms of the last return; 0: never ejected */
    atomic_uint times;               /* how many times it was ejected */
} od_host_t;

/* Circuit-breaker counters and outlier-detection hosts of one cluster (by
 * name), shared by every worker; created on first use, freed with the
 * server. The host list only grows (prepended under od_mu, read without
 * a lock). */
typedef struct cb_state {
    struct cb_state *next;
    char *name;
    atomic_uint cx, pending, rq, retries;
    _Atomic(od_host_t *) hosts;
} cb_state_t;

static pthread_mutex_t od_mu = PTHREAD_MUTEX_INITIALIZER;

typedef struct lb_state {
    char *cluster;
    px_lb_t lb;
    cb_state_t *cb;
    uint32_t nconns; /* this worker's upstream connections counted in cb->cx */
} lb_state_t;

struct worker {
    px_server_t *srv;
    int id;
    pthread_t thread;
    loop_t *loop;
    px_snapshot_t *snap;
    wlistener_t *listeners;
    hmap_t idle;   /* endpoint address -> uconn_t* list of idle connections */
    hmap_t h2pool; /* "h2|" pool key -> uconn_t* list of HTTP/2 connections */
    hmap_t active; /* endpoint address -> ep_active_t* */
    hmap_t lbs;    /* cluster name -> lb_state_t* */
    dconn_t *conns;
    size_t nconns;
    bool draining;
    uint64_t rng;
    wstats_t st;
    px_tls_cache_t *tls; /* this worker's TLS contexts */
    hmap_t metrics; /* label set -> px_metric_t* (this worker's only) */
    metric_memo_t memo[METRIC_CACHE];
    dconn_t *waitq;   /* requests waiting for an upstream connection (max_connections) */
    bool wake_queued;
};

struct px_server {
    px_options_t opt;
    px_secrets_t *secrets, *own_secrets; /* own_secrets: made here when the options had none */
    int nworkers;
    worker_t *workers;
    pthread_mutex_t mu;
    px_snapshot_t *current; /* under mu */
    cb_state_t *cbs;        /* under mu */
    /* the listener sockets currently open: key -> fds[nworkers] */
    struct slistener {
        struct slistener *next;
        char *key, *name;
        int *fds;
    } *listeners;
};

typedef enum { U_CONNECTING, U_TLS, U_ACTIVE, U_IDLE } ustate_t;

struct uconn {
    uconn_t *next_idle;
    uint32_t idle_n; /* pooled: connections in the idle list from this one on */
    worker_t *w;
    int fd;
    loop_io_t *io;
    loop_timer_t *timer; /* connect timeout; idle timeout while pooled */
    char *address;
    char *pool_key; /* address, plus the TLS config for TLS connections */
    ustate_t state;
    px_tls_conn_t *tls;
    unsigned tls_want;
    bool kick_queued;
    px_snapshot_t *tls_snap; /* U_TLS: keeps the cluster's TLS config alive */
    const px_tls_cfg_t *tls_cfg;
    dconn_t *d; /* the downstream it serves (ACTIVE/CONNECTING) */
    buf_t in, out;
    bool reused;
    bool peer_closed; /* the upstream sent FIN: never pooled again */
    cb_state_t *cb;   /* the cluster whose max_connections it counts in */
    lb_state_t *ls;   /* and this worker's share of it */
    bool shadow;      /* a mirrored request: no downstream, response discarded */
    uint32_t nreq, max_req; /* requests sent on it; the cluster's max_requests_per_connection */
    bool shadow_head;       /* shadow: the response head was read; shadow_left body bytes remain */
    bool refused;           /* an HTTP/2 stream the server refused (REFUSED_STREAM): never processed */
    uint64_t shadow_left;
    uint64_t idle_ms;       /* the cluster's idle_timeout (0: none) */

    /* HTTP/2: a connection (h2 set) multiplexes streams; each stream is a
     * uconn of its own (hp set, fd -1) the request path drives like an
     * HTTP/1.1 connection, bridged by the codec (proxy/h2_internal.h). */
    px_h2_t *h2;
    uconn_t *hp;          /* a stream: its connection */
    px_h2_stream_t *h2s;  /* a stream: its codec stream (NULL once gone) */
    uconn_t *skids, *snext, *sprev; /* a connection: its streams */
    uconn_t *h2_next;     /* a connection: the next one in the worker's HTTP/2 pool */
    size_t nstreams;
    bool h2_busy, h2_again, h2_dead, h2_https, h2_pooled, h2_check_queued;
    bool h2_send_queued, h2_produced; /* a write is due at the end of the round; frames came */
    bool h2_high; /* the output was above OUT_HIGH: wake the clients when it drains */
};

typedef enum {
    D_PEEK,      /* waiting for the first bytes to choose a filter chain */
    D_HANDSHAKE, /* TLS handshake with the client */
    D_HEAD,     /* reading a request head */
    D_PROXY,    /* a request is being proxied */
    D_LOCAL,    /* writing a local response */
    D_TUNNEL,   /* upgraded connection or TCP proxy: raw bytes both ways */
    D_CLOSING,  /* flushing, then close */
    D_DELAY,    /* held by an injected fault delay (a timer), the head still in d->in */
    D_H2,       /* an HTTP/2 connection: its streams are dconns of their own */
} dstate_t;

struct dconn {
    dconn_t *next, *prev;
    worker_t *w;
    int fd;
    loop_io_t *io;
    loop_timer_t *timer;
    px_snapshot_t *snap;
    const px_listener_t *listener;
    const px_chain_t *chain;
    struct sockaddr_storage local, remote; /* destination (original when captured) and source */
    bool captured; /* local came from SO_ORIGINAL_DST: ORIGINAL_DST clusters may use it */
    px_tls_conn_t *tls;
    px_snapshot_t *tls_snap; /* the snapshot holding the TLS config d->tls reads */
    unsigned tls_want;
    bool kick_queued;
    char peer_uri[256]; /* the client's SPIFFE ID (mTLS) or "" */
    /* the peer's workload and namespace from Istio's metadata exchange:
     * inbound, the client's (request headers); outbound, the server's
     * (response headers); "" when unknown */
    char peer_wl[128], peer_ns[64], peer_app[64], peer_ver[64];
    uint64_t peek_start;
    char peer[64];
    px_endpoint_t odst; /* ORIGINAL_DST clusters: the destination as an endpoint */
    char odst_addr[80];
    dstate_t state;
    bool closed;
    bool listener_gone; /* the listener left the config: close after this request */
    bool down_eof;      /* tunnel: the client finished sending */
    buf_t in, out;
    /* a bulk plaintext tunnel moved by splice (sp_start): [0] the client's
     * bytes to the upstream, [1] the upstream's to the client */
    px_splice_t sp[2];
    bool sp_on, sp_failed;

    /* current request */
    px_h1_msg_t req;
    bool keep_alive;
    bool req_body_done;
    px_h1_body_t req_body;
    uint64_t req_left;
    px_h1_chunked_t req_chunk;
    char method[16];
    char *path_log, *authority, *request_id, *user_agent, *xff;
    uint64_t start_ms;
    struct timespec start_wall;
    const char *path; /* origin-form target (inside the head in d->in) */
    size_t path_len;
    bool absolute; /* the request target was in absolute form */
    const px_route_t *route;
    const px_vhost_t *vhost;
    const px_weighted_t *weighted;
    const px_cluster_t *cluster;
    char upstream_host[80];
    uconn_t *u;
    ep_active_t *ep;
    const px_endpoint_t *endpoint; /* in d->snap */
    buf_t retry_head; /* the upstream request, kept to retry a stale pooled connection */
    bool retried;
    uint64_t bytes_in, bytes_out;

    /* response relay */
    int64_t upstream_ms; /* time to the upstream's response head; -1: none */
    bool resp_head_done;
    int resp_code;
    const char *flags;
    const char *fault_flags; /* "DI", "FI", "DI,FI" or NULL */
    size_t head_len;         /* D_DELAY: the request head's length in d->in */
    bool fault_abort;        /* abort after the injected delay */
    /* retries: the upstream request as sent (head without its final CRLF,
     * then the buffered body), the attempts made, the per-try/backoff timer */
    buf_t attempt_req;
    size_t attempt_head_len;
    bool retriable;  /* attempt_req holds the whole request */
    bool capture;    /* the body is still arriving: copied into attempt_req as it goes, for retries */
    uint32_t attempts;
    bool backoff;    /* waiting for the next attempt */
    long last_ep;
    uint32_t tried_prio; /* retry_priority previous_priorities: priorities tried (bit per priority) */
    char *set_cookie; /* cookie hashing: the Set-Cookie line for a client that had none */
    loop_timer_t *try_timer;
    /* circuit breaking: the cluster's counters this request holds */
    cb_state_t *cb;
    lb_state_t *ls;
    bool cb_rq, cb_retry;
    bool waiting; /* in w->waitq */
    dconn_t *wnext;
    px_h1_body_t resp_body;
    uint64_t resp_left;
    px_h1_chunked_t resp_chunk;
    bool resp_chunked_out; /* re-encode the body chunked downstream */
    bool resp_keep_alive;
    bool grpc; /* content-type application/grpc*: gRPC local replies, request_protocol "grpc" */

    /* HTTP/2. A connection (state D_H2) has a codec session and its
     * streams; each stream is a dconn of its own (parent set, fd -1) that
     * goes through the same request path, its HTTP/1.1 bytes bridged by the
     * codec (proxy/h2_internal.h). */
    px_h2_t *h2;
    dconn_t *parent;      /* a stream: its connection */
    px_h2_stream_t *h2s;  /* a stream: its codec stream (NULL once let go) */
    dconn_t *kids, *knext, *kprev; /* a connection: its streams */
    size_t nkids;
    bool h2_busy, h2_again; /* inside the codec: sends wait for the outer loop */
    bool h2_check_queued;
    bool h2_send_queued, h2_produced; /* a write is due at the end of the round; frames came */
    bool h2_goaway;
    bool h2_dead; /* the session failed: close once the GOAWAY is out */
    bool h2_high; /* the output was above OUT_HIGH: wake the streams when it drains */
};

static void dconn_close(dconn_t *d);
static void chain_begin(dconn_t *d);
static void peek_step(dconn_t *d, bool timed_out);
static void handshake_step(dconn_t *d);
static const px_endpoint_t *ep_of(dconn_t *d, const px_cluster_t *c, long ei);
static bool rbac_allows(dconn_t *d, const px_rbac_t *const *f, size_t n, const px_rbac_attrs_t *a);
static void net_attrs(dconn_t *d, px_rbac_attrs_t *a);
static void dconn_on_io(loop_io_t *io, int fd, unsigned ev, void *arg);
static void dconn_process(dconn_t *d);
static void uconn_on_io(loop_io_t *io, int fd, unsigned ev, void *arg);
static void uconn_close(uconn_t *u);
static bool maybe_retry(dconn_t *d, bool cond);
static void od_report(worker_t *w, const px_cluster_t *c, cb_state_t *cb, const char *address, int status);
static bool retry_on_failure(const dconn_t *d, bool connect);
static void h2k_sync(dconn_t *c);
static void h2d_start(dconn_t *d);
static void h2d_on_io(dconn_t *d, unsigned ev);
static void h2d_flush(dconn_t *p);
static void h2u_flush(uconn_t *c);
static void h2u_on_io(uconn_t *c, int fd, unsigned ev);
static void h2u_close_streams(uconn_t *c);
static void h2u_unpool(uconn_t *c);
static uconn_t *h2u_open(worker_t *w, px_snapshot_t *snap, const px_cluster_t *cl, cb_state_t *cb, lb_state_t *ls,
                         const px_endpoint_t *ep, const char *key);

/* ---- helpers ---- */

static uint64_t wrand(worker_t *w)
{
    uint64_t x = w->rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    w->rng = x;
    return x * 2685821657736338717ull;
}

static void make_request_id(worker_t *w, char out[37])
{
    uint64_t a = wrand(w), b = wrand(w);
    unsigned char r[16];
    memcpy(r, &a, 8);
    memcpy(r + 8, &b, 8);
    r[6] = (unsigned char)((r[6] & 0x0f) | 0x40); /* version 4 */
    r[8] = (unsigned char)((r[8] & 0x3f) | 0x80);
    static const char hex[] = "0123456789abcdef";
    char *p = out;
    for (int i = 0; i < 16; i++) { /* 8-4-4-4-12, without printf on every request */
        if (i == 4 || i == 6 || i == 8 || i == 10)
            *p++ = '-';
        *p++ = hex[r[i] >> 4];
        *p++ = hex[r[i] & 15];
    }
    *p = '\0';
}

static char *slice_dup(const char *p, size_t n)
{
    char *s = malloc(n + 1);
    if (s) {
        memcpy(s, p, n);
        s[n] = '\0';
    }
    return s;
}

static const char *reason_phrase(int code)
{
    switch (code) {
    case 100: return "Continue";
    case 200: return "OK";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 303: return "See Other";
    case 307: return "Temporary Redirect";
    case 308: return "Permanent Redirect";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 408: return "Request Timeout";
    case 431: return "Request Header Fields Too Large";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return code < 300 ? "OK" : code < 400 ? "Redirect" : code < 500 ? "Client Error" : "Server Error";
    }
}

static void count_status(worker_t *w, int code)
{
    if (code >= 500)
        CINC(w->st.rq_5xx);
    else if (code >= 400)
        CINC(w->st.rq_4xx);
    else if (code >= 300)
        CINC(w->st.rq_3xx);
    else if (code >= 200)
        CINC(w->st.rq_2xx);
}

/* The response flags of the current request ("-" when none): an injected
 * fault's flag joined with the flag the request ended with. */
static const char *flags_of(const dconn_t *d, char *buf, size_t n)
{
    const char *f = d->flags && strcmp(d->flags, "-") != 0 ? d->flags : NULL;
    if (d->fault_flags == NULL)
        return f ? f : "-";
    if (f == NULL || strcmp(f, d->fault_flags) == 0 || strcmp(f, "FI") == 0)
        return d->fault_flags;
    snprintf(buf, n, "%s,%s", d->fault_flags, f);
    return buf;
}

/* Appends "key":"value" (JSON-escaped, null for NULL) to line at *pos. */
static void json_field(char *line, size_t cap, size_t *pos, const char *key, const char *v)
{
    size_t p = *pos;
    int n = snprintf(p < cap ? line + p : NULL, p < cap ? cap - p : 0, "%s\"%s\":", p > 1 ? "," : "", key);
    p += n > 0 ? (size_t)n : 0;
    if (v == NULL) {
        n = snprintf(p < cap ? line + p : NULL, p < cap ? cap - p : 0, "null");
        *pos = p + (n > 0 ? (size_t)n : 0);
        return;
    }
    if (p < cap)
        line[p] = '"';
    p++;
    for (const unsigned char *s = (const unsigned char *)v; *s && p + 7 < cap; s++) {
        if (*s == '"' || *s == '\\') {
            line[p++] = '\\';
            line[p++] = (char)*s;
        } else if (*s < 0x20 || *s == 0x7f) {
            p += (size_t)snprintf(line + p, cap - p, "\\u%04x", *s);
        } else {
            line[p++] = (char)*s;
        }
    }
    if (p < cap)
        line[p] = '"';
    *pos = p + 1;
}

static void json_num(char *line, size_t cap, size_t *pos, const char *key, long long v)
{
    size_t p = *pos;
    int n = snprintf(p < cap ? line + p : NULL, p < cap ? cap - p : 0, "%s\"%s\":%lld", p > 1 ? "," : "", key, v);
    *pos = p + (n > 0 ? (size_t)n : 0);
}

/* Writes one access log line in Envoy's default format, or as a JSON object
 * with the keys of Istio's JSON encoding. */
static void access_log(dconn_t *d)
{
    int fd = d->w->srv->opt.access_log_fd;
    if (fd < 0 || d->start_ms == 0)
        return;
    char ts[40], line[2048], ust[24] = "-", fl[32];
    if (d->upstream_ms >= 0)
        snprintf(ust, sizeof(ust), "%lld", (long long)d->upstream_ms);
    struct tm tm;
    gmtime_r(&d->start_wall.tv_sec, &tm);
    size_t n = strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(ts + n, sizeof(ts) - n, ".%03ldZ", d->start_wall.tv_nsec / 1000000);
    const char *proto = d->chain && d->chain->kind == PX_LISTENER_TCP ? "-"
                        : d->parent                                  ? "HTTP/2"
                        : d->req.minor_version                       ? "HTTP/1.1"
                                                                     : "HTTP/1.0";
    uint64_t dur = loop_now(d->w->loop) - d->start_ms;
    if (d->w->srv->opt.access_log_json) {
        size_t p = 1;
        line[0] = '{';
        json_field(line, sizeof(line), &p, "start_time", ts);
        json_field(line, sizeof(line), &p, "method", strcmp(d->method, "-") ? d->method : NULL);
        json_field(line, sizeof(line), &p, "path", d->path_log);
        json_field(line, sizeof(line), &p, "protocol", strcmp(proto, "-") ? proto : NULL);
        json_num(line, sizeof(line), &p, "response_code", d->resp_code);
        json_field(line, sizeof(line), &p, "response_flags", flags_of(d, fl, sizeof(fl)));
        json_num(line, sizeof(line), &p, "bytes_received", (long long)d->bytes_in);
        json_num(line, sizeof(line), &p, "bytes_sent", (long long)d->bytes_out);
        json_num(line, sizeof(line), &p, "duration", (long long)dur);
        if (d->upstream_ms >= 0)
            json_num(line, sizeof(line), &p, "upstream_service_time", (long long)d->upstream_ms);
        else
            json_field(line, sizeof(line), &p, "upstream_service_time", NULL);
        json_field(line, sizeof(line), &p, "x_forwarded_for", d->xff);
        json_field(line, sizeof(line), &p, "user_agent", d->user_agent);
        json_field(line, sizeof(line), &p, "request_id", d->request_id);
        json_field(line, sizeof(line), &p, "authority", d->authority);
        json_field(line, sizeof(line), &p, "upstream_host", d->upstream_host[0] ? d->upstream_host : NULL);
        json_field(line, sizeof(line), &p, "upstream_cluster", d->cluster ? d->cluster->name : NULL);
        json_field(line, sizeof(line), &p, "downstream_remote_address", d->peer[0] ? d->peer : NULL);
        json_field(line, sizeof(line), &p, "downstream_local_address", d->odst_addr[0] ? d->odst_addr : NULL);
        if (p + 2 >= sizeof(line)) /* too long: keep it one JSON object */
            p = (size_t)snprintf(line, sizeof(line), "{\"start_time\":\"%s\",\"truncated\":true", ts);
        line[p++] = '}';
        line[p++] = '\n';
        ssize_t wr = write(fd, line, p);
        (void)wr;
        return;
    }
    int len = snprintf(line, sizeof(line),
                       "[%s] \"%s %s %s\" %d %s %llu %llu %llu %s \"%s\" \"%s\" \"%s\" \"%s\" \"%s\"\n",
                       ts, d->method, d->path_log ? d->path_log : "-", proto,
                       d->resp_code, flags_of(d, fl, sizeof(fl)), (unsigned long long)d->bytes_in,
                       (unsigned long long)d->bytes_out, (unsigned long long)dur, ust,
                       d->xff ? d->xff : "-", d->user_agent ? d->user_agent : "-",
                       d->request_id ? d->request_id : "-", d->authority ? d->authority : "-",
                       d->upstream_host[0] ? d->upstream_host : "-");
    if (len > 0) {
        if ((size_t)len >= sizeof(line))
            len = (int)sizeof(line) - 1;
        ssize_t wr = write(fd, line, (size_t)len);
        (void)wr;
    }
}

static void request_reset(dconn_t *d)
{
    free(d->path_log);
    free(d->authority);
    free(d->request_id);
    free(d->user_agent);
    free(d->xff);
    d->path_log = d->authority = d->request_id = d->user_agent = d->xff = NULL;
    d->start_ms = 0;
    d->tried_prio = 0;
    d->peer_wl[0] = d->peer_ns[0] = d->peer_app[0] = d->peer_ver[0] = '\0';
    free(d->set_cookie);
    d->set_cookie = NULL;
    d->route = NULL;
    d->absolute = false;
    d->vhost = NULL;
    d->weighted = NULL;
    d->cluster = NULL;
    d->upstream_host[0] = '\0';
    d->bytes_in = d->bytes_out = 0;
    d->resp_head_done = false;
    d->upstream_ms = -1;
    d->resp_code = 0;
    d->flags = NULL;
    d->fault_flags = NULL;
    d->fault_abort = false;
    d->attempt_req.len = 0;
    d->attempt_head_len = 0;
    d->retriable = false;
    d->attempts = 0;
    d->backoff = false;
    d->last_ep = -1;
    if (d->try_timer)
        loop_timer_stop(d->try_timer);
    if (d->waiting) {
        for (dconn_t **pp = &d->w->waitq; *pp; pp = &(*pp)->wnext)
            if (*pp == d) {
                *pp = d->wnext;
                break;
            }
        d->waiting = false;
        d->wnext = NULL;
        if (d->cb)
            atomic_fetch_sub(&d->cb->pending, 1);
    }
    if (d->cb_rq)
        atomic_fetch_sub(&d->cb->rq, 1);
    if (d->cb_retry)
        atomic_fetch_sub(&d->cb->retries, 1);
    d->cb_rq = d->cb_retry = false;
    d->cb = NULL;
    d->ls = NULL;
    d->retried = false;
    d->retry_head.len = 0;
    d->resp_chunked_out = false;
    d->grpc = false;
    d->method[0] = '\0';
}

const double px_dur_bounds[PX_DUR_BUCKETS] = {0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500,
                                               5000, 10000, 30000, 60000, 300000, 600000, 1800000, 3600000};
const double px_size_bounds[PX_SIZE_BUCKETS] = {1, 10, 100, 1000, 10000, 100000, 1000000, 10000000};

static size_t bucket(const double *bounds, size_t n, double v)
{
    size_t i = 0;
    while (i < n && v > bounds[i])
        i++;
    return i;
}

/* Writes `name="value"` with the value escaped for the text format. */
static void label(buf_t *b, const char *name, const char *v, bool comma)
{
    if (comma)
        buf_str(b, ",");
    buf_str(b, name);
    buf_str(b, "=\"");
    for (const char *p = v ? v : "unknown"; *p; p++) {
        if (*p == '"' || *p == '\\')
            buf_add(b, "\\", 1);
        if (*p == '\n') {
            buf_str(b, "\\n");
            continue;
        }
        buf_add(b, p, 1);
    }
    buf_str(b, "\"");
}

/* The labels of Istio's standard metrics for the current request or TCP
 * connection. The destination comes from the cluster name
 * ("outbound|PORT|SUBSET|HOST" or "inbound|PORT||HOST"). */
static const px_cluster_t *find_cluster(const px_snapshot_t *s, const char *name);

static px_metric_t *metric_lookup(dconn_t *d, bool tcp);

/* Whether d is a sidecar's inbound request or connection (reporter
 * "destination"). */
static bool is_inbound(const dconn_t *d)
{
    return !d->w->srv->opt.router && d->listener &&
           (strncmp(d->listener->name, "virtualInbound", 14) == 0 ||
            (d->cluster && strncmp(d->cluster->name, "inbound|", 8) == 0));
}

/* Whether a cluster speaks Istio's mTLS (its TLS offers Istio's ALPN): its
 * peers are sidecars, which exchange workload metadata. */
static bool istio_mtls(const px_cluster_t *c)
{
    for (size_t i = 0; c && c->tls && i < c->tls->nalpn; i++)
        if (strcmp(c->tls->alpn[i], "istio-peer-exchange") == 0 || strcmp(c->tls->alpn[i], "istio") == 0)
            return true;
    return false;
}

/* Copies a peer-supplied label value when it fits and is printable without
 * quotes or backslashes (it goes into metric label text). */
static void label_copy(char *dst, size_t cap, const char *v)
{
    size_t n = strlen(v);
    if (n == 0 || n >= cap)
        return;
    for (const char *c = v; *c; c++)
        if (*c <= ' ' || *c >= 0x7f || *c == '"' || *c == '\\')
            return;
    memcpy(dst, v, n + 1);
}

/* x-envoy-peer-metadata (base64 of a google.protobuf.Struct): the peer's
 * WORKLOAD_NAME and NAMESPACE into d. Anything malformed is ignored. */
static void read_peer_metadata(dconn_t *d, const char *v, size_t n)
{
    if (n == 0 || n > 8192)
        return;
    size_t len = 0;
    unsigned char *raw = b64_decode(v, n, &len);
    if (raw == NULL)
        return;
    Google__Protobuf__Struct *s = google__protobuf__struct__unpack(NULL, len, raw);
    free(raw);
    if (s == NULL)
        return;
    for (size_t i = 0; i < s->n_fields; i++) {
        const Google__Protobuf__Struct__FieldsEntry *e = s->fields[i];
        if (e->key == NULL || e->value == NULL)
            continue;
        if (strcmp(e->key, "LABELS") == 0 && e->value->kind_case == GOOGLE__PROTOBUF__VALUE__KIND_STRUCT_VALUE &&
            e->value->struct_value) {
            /* app and version: Istio's canonical labels first, then app/version */
            const Google__Protobuf__Struct *l = e->value->struct_value;
            static const char *const app_keys[] = {"service.istio.io/canonical-name", "app.kubernetes.io/name", "app"};
            static const char *const ver_keys[] = {"service.istio.io/canonical-revision", "app.kubernetes.io/version",
                                                   "version"};
            for (int k = 2; k >= 0; k--)
                for (size_t j = 0; j < l->n_fields; j++) {
                    const Google__Protobuf__Value *lv = l->fields[j]->value;
                    if (l->fields[j]->key == NULL || lv == NULL || lv->kind_case != GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE)
                        continue;
                    if (strcmp(l->fields[j]->key, app_keys[k]) == 0)
                        label_copy(d->peer_app, sizeof(d->peer_app), lv->string_value);
                    if (strcmp(l->fields[j]->key, ver_keys[k]) == 0)
                        label_copy(d->peer_ver, sizeof(d->peer_ver), lv->string_value);
                }
            continue;
        }
        if (e->value->kind_case != GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE)
            continue;
        if (strcmp(e->key, "WORKLOAD_NAME") == 0)
            label_copy(d->peer_wl, sizeof(d->peer_wl), e->value->string_value);
        else if (strcmp(e->key, "NAMESPACE") == 0)
            label_copy(d->peer_ns, sizeof(d->peer_ns), e->value->string_value);
    }
    google__protobuf__struct__free_unpacked(s, NULL);
}

static px_metric_t *metric_for(dconn_t *d, bool tcp)
{
    worker_t *w = d->w;
    char fl[32];
    const char *flags = tcp ? "" : flags_of(d, fl, sizeof(fl));
    uint64_t h = px_hash64(d->peer_uri, strlen(d->peer_uri)) ^ px_hash64(d->peer_wl, strlen(d->peer_wl)) ^
                 px_hash64(d->peer_ns, strlen(d->peer_ns)) * 3 ^ px_hash64(d->peer_app, strlen(d->peer_app)) * 5 ^
                 px_hash64(d->peer_ver, strlen(d->peer_ver)) * 11 ^ ((uint64_t)(uintptr_t)d->cluster * 31) ^
                 ((uint64_t)(uintptr_t)d->chain * 17) ^ ((uint64_t)(uintptr_t)d->listener * 7) ^
                 ((uint64_t)d->resp_code << 3) ^ px_hash64(flags, strlen(flags)) ^ (tcp ? 1 : 0) ^ (d->grpc ? 2 : 0);
    metric_memo_t *e = &w->memo[(h ^ (h >> 29)) % METRIC_CACHE];
    if (e->m && e->listener == d->listener && e->cluster == d->cluster && e->chain == d->chain &&
        e->code == d->resp_code && e->tcp == tcp && e->grpc == d->grpc && strcmp(e->flags, flags) == 0 &&
        strcmp(e->peer, d->peer_uri) == 0 && strcmp(e->peer_wl, d->peer_wl) == 0 && strcmp(e->peer_ns, d->peer_ns) == 0 &&
        strcmp(e->peer_app, d->peer_app) == 0 && strcmp(e->peer_ver, d->peer_ver) == 0)
        return e->m;
    px_metric_t *m = metric_lookup(d, tcp);
    if (m && strlen(flags) < sizeof(e->flags) && strlen(d->peer_uri) < sizeof(e->peer)) {
        *e = (metric_memo_t){.m = m, .listener = d->listener, .cluster = d->cluster, .chain = d->chain,
                             .code = d->resp_code, .tcp = tcp, .grpc = d->grpc};
        strcpy(e->flags, flags);
        strcpy(e->peer, d->peer_uri);
        strcpy(e->peer_wl, d->peer_wl);
        strcpy(e->peer_ns, d->peer_ns);
        strcpy(e->peer_app, d->peer_app);
        strcpy(e->peer_ver, d->peer_ver);
    }
    return m;
}

/* The series of a request or connection by its formatted label set. */
static px_metric_t *metric_lookup(dconn_t *d, bool tcp)
{
    worker_t *w = d->w;
    const px_options_t *o = &w->srv->opt;
    bool inbound = is_inbound(d);
    const char *cname = d->cluster ? d->cluster->name : (tcp && d->chain ? d->chain->tcp_cluster : NULL);
    char svc[256] = "unknown", svc_name[128] = "unknown", svc_ns[128] = "unknown";
    const px_cluster_t *mc = d->cluster ? d->cluster : cname ? find_cluster(d->snap, cname) : NULL;
    if (mc && mc->svc_host) {
        /* Istio's cluster metadata (inbound clusters): the service itself */
        snprintf(svc, sizeof(svc), "%s", mc->svc_host);
        snprintf(svc_name, sizeof(svc_name), "%s", mc->svc_name ? mc->svc_name : mc->svc_host);
        snprintf(svc_ns, sizeof(svc_ns), "%s", mc->svc_ns ? mc->svc_ns : "unknown");
    } else if (cname) {
        const char *p = cname;
        int bars = 0;
        const char *host = cname;
        for (; *p; p++)
            if (*p == '|' && ++bars == 3)
                host = p + 1;
        if (bars == 3 && *host) {
            snprintf(svc, sizeof(svc), "%s", host);
            const char *dot = strchr(host, '.');
            snprintf(svc_name, sizeof(svc_name), "%.*s", dot ? (int)(dot - host) : (int)strlen(host), host);
            if (dot) {
                const char *dot2 = strchr(dot + 1, '.');
                snprintf(svc_ns, sizeof(svc_ns), "%.*s", dot2 ? (int)(dot2 - dot - 1) : (int)strlen(dot + 1), dot + 1);
            }
        } else {
            snprintf(svc, sizeof(svc), "%s", cname);
            snprintf(svc_name, sizeof(svc_name), "%s", cname);
        }
    }
    char code[16];
    snprintf(code, sizeof(code), "%d", d->resp_code);
    buf_t b = {0};
    label(&b, "reporter", inbound ? "destination" : "source", false);
    /* the other side's workload comes from the metadata exchange (mTLS) */
    const char *pwl = d->peer_wl[0] ? d->peer_wl : "unknown";
    const char *pns = d->peer_ns[0] ? d->peer_ns : NULL;
    label(&b, "source_workload", inbound ? pwl : o->workload, true);
    label(&b, "source_workload_namespace", inbound ? (pns ? pns : "unknown") : o->workload_namespace, true);
    label(&b, "destination_workload", inbound ? o->workload : pwl, true);
    label(&b, "destination_workload_namespace", inbound ? o->workload_namespace : (pns ? pns : svc_ns), true);
    label(&b, "destination_service", svc, true);
    label(&b, "destination_service_name", svc_name, true);
    label(&b, "destination_service_namespace", svc_ns, true);
    if (!tcp) {
        label(&b, "request_protocol", d->grpc ? "grpc" : "http", true);
        label(&b, "response_code", code, true);
        char fl[32];
        label(&b, "response_flags", flags_of(d, fl, sizeof(fl)), true);
    }
    const char *own = o->spiffe && o->spiffe[0] ? o->spiffe : "unknown";
    label(&b, "source_principal", inbound ? (d->peer_uri[0] ? d->peer_uri : "unknown") : own, true);
    label(&b, "destination_principal", inbound ? own : "unknown", true);
    label(&b, "connection_security_policy",
          inbound ? (d->peer_uri[0] ? "mutual_tls" : "none") : "unknown", true);
    /* app and version (Istio's canonical service and revision are the same
     * labels unless set otherwise) */
    const char *own_app = o->app ? o->app : "unknown", *own_ver = o->version ? o->version : "unknown";
    const char *papp = d->peer_app[0] ? d->peer_app : "unknown", *pver = d->peer_ver[0] ? d->peer_ver : "unknown";
    label(&b, "source_app", inbound ? papp : own_app, true);
    label(&b, "source_version", inbound ? pver : own_ver, true);
    label(&b, "source_canonical_service", inbound ? papp : own_app, true);
    label(&b, "source_canonical_revision", inbound ? (d->peer_ver[0] ? pver : "latest") : (o->version ? own_ver : "latest"), true);
    label(&b, "destination_app", inbound ? own_app : papp, true);
    label(&b, "destination_version", inbound ? own_ver : pver, true);
    label(&b, "destination_canonical_service", inbound ? own_app : papp, true);
    label(&b, "destination_canonical_revision", inbound ? (o->version ? own_ver : "latest") : (d->peer_ver[0] ? pver : "latest"), true);
    buf_add(&b, "", 1);
    if (b.data == NULL)
        return NULL;
    char key[2048];
    snprintf(key, sizeof(key), "%c%s", tcp ? 't' : 'h', b.data);
    px_metric_t *m = hmap_get(&w->metrics, key);
    if (m == NULL) {
        m = calloc(1, sizeof(*m));
        char *k = strdup(key);
        if (m == NULL || k == NULL) {
            free(m);
            free(k);
            buf_free(&b);
            return NULL;
        }
        m->labels = k; /* "h" or "t" + labels: the hmap key */
        m->tcp = tcp;
        hmap_put(&w->metrics, m->labels, m);
    }
    buf_free(&b);
    return m;
}

/* Finishes the current request: log, metrics, release the endpoint slot. */
static void request_done(dconn_t *d)
{
    if (d->start_ms == 0)
        return;
    count_status(d->w, d->resp_code);
    if (d->state != D_TUNNEL || d->resp_code) {
        px_metric_t *m = metric_for(d, false);
        if (m) {
            double ms = (double)(loop_now(d->w->loop) - d->start_ms);
            m->requests++;
            m->dur[bucket(px_dur_bounds, PX_DUR_BUCKETS, ms)]++;
            m->dur_sum += ms;
            m->req_size[bucket(px_size_bounds, PX_SIZE_BUCKETS, (double)d->bytes_in)]++;
            m->resp_size[bucket(px_size_bounds, PX_SIZE_BUCKETS, (double)d->bytes_out)]++;
            m->req_size_sum += d->bytes_in;
            m->resp_size_sum += d->bytes_out;
        }
    }
    access_log(d);
    if (d->ep && d->ep->n)
        d->ep->n--;
    d->ep = NULL;
    request_reset(d);
}

static void d_kick_cb(void *arg)
{
    dconn_t *d = arg;
    d->kick_queued = false;
    if (!d->closed)
        dconn_on_io(d->io, d->fd, LOOP_READ, d);
}

/* Response bytes that wait to reach the client (the relay stops reading
 * the upstream above OUT_HIGH). */
static size_t d_backlog(const dconn_t *d)
{
    if (d->parent == NULL)
        return d->out.len;
    return d->out.len + (d->h2s ? px_h2_pending(d->h2s) : 0) + d->parent->out.len;
}

/* Request bytes that wait to reach the upstream (the request path stops
 * reading the client above OUT_HIGH). */
static size_t u_backlog(const uconn_t *u)
{
    if (u->hp == NULL)
        return u->out.len;
    return u->out.len + (u->h2s ? px_h2_pending(u->h2s) : 0) + u->hp->out.len;
}

/* ---- bulk tunnels by splice ----
 *
 * A tunnel whose both sides are plaintext sockets switches to splice once it
 * has carried SPLICE_AFTER bytes and every buffer of both connections is
 * empty; from then on sp_on_io moves both directions for events on either
 * socket. Short tunnels never open a pipe. */
#define SPLICE_AFTER (256 * 1024)
#define SPLICE_BUDGET (1024 * 1024) /* bytes per direction per event */

static bool sp_eligible(const dconn_t *d)
{
    const uconn_t *u = d->u;
    return d->state == D_TUNNEL && !d->sp_on && !d->sp_failed && !d->w->srv->opt.no_splice &&
           d->parent == NULL && d->tls == NULL && !d->down_eof && d->in.len == 0 && d->out.len == 0 &&
           u != NULL && u->state == U_ACTIVE && u->hp == NULL && !u->h2 && u->tls == NULL && u->in.len == 0 &&
           u->out.len == 0 && d->bytes_in + d->bytes_out >= SPLICE_AFTER;
}

static void sp_interest(dconn_t *d)
{
    const px_splice_t *up = &d->sp[0], *down = &d->sp[1];
    loop_io_modify(d->io, (up->held == 0 && !up->eof ? LOOP_READ : 0) | (down->held ? LOOP_WRITE : 0));
    loop_io_modify(d->u->io, (down->held == 0 && !down->eof ? LOOP_READ : 0) | (up->held ? LOOP_WRITE : 0));
}

static void sp_start(dconn_t *d)
{
    if (px_splice_open(&d->sp[0]) < 0 || px_splice_open(&d->sp[1]) < 0) {
        px_splice_close(&d->sp[0]);
        d->sp_failed = true; /* out of fds: the buffers go on */
        return;
    }
    d->sp_on = true;
    CINC(d->w->st.spliced);
}

/* Moves both directions; the upstream's end (once all of it reached the
 * client) ends the tunnel, the client's is passed on as a half-close. */
static void sp_on_io(dconn_t *d)
{
    uconn_t *u = d->u;
    if (u == NULL || px_splice_pump(&d->sp[0], d->fd, u->fd, SPLICE_BUDGET, &d->bytes_in) < 0 ||
        px_splice_pump(&d->sp[1], u->fd, d->fd, SPLICE_BUDGET, &d->bytes_out) < 0 ||
        (d->sp[1].eof && d->sp[1].held == 0)) {
        dconn_close(d);
        return;
    }
    if (d->sp[0].eof && d->sp[0].held == 0 && !d->down_eof) {
        d->down_eof = true;
        shutdown(u->fd, SHUT_WR);
    }
    sp_interest(d);
}

static void d_update_interest(dconn_t *d)
{
    if (d->closed)
        return;
    if (d->sp_on) {
        sp_interest(d);
        return;
    }
    if (d->parent) {
        h2k_sync(d);
        return;
    }
    unsigned ev = 0;
    if (d->out.len)
        ev |= LOOP_WRITE;
    switch (d->state) {
    case D_HEAD:
        ev |= LOOP_READ;
        break;
    case D_PROXY:
        /* read the request body while it lasts and the upstream keeps up */
        if (!d->req_body_done && d->in.len < IN_CAP && (!d->u || u_backlog(d->u) < OUT_HIGH))
            ev |= LOOP_READ;
        break;
    case D_TUNNEL:
        if (d->u && d->u->out.len < OUT_HIGH)
            ev |= LOOP_READ;
        break;
    case D_H2:
        if (d->out.len < OUT_HIGH && !d->h2_dead)
            ev |= LOOP_READ;
        break;
    default:
        break;
    }
    if (d->tls) {
        if (d->tls_want & PX_TLS_WANT_WRITE)
            ev |= LOOP_WRITE;
        if ((ev & LOOP_READ) && !d->kick_queued && px_tls_pending(d->tls)) {
            /* decrypted bytes wait in the TLS layer: the socket will not wake us */
            d->kick_queued = true;
            loop_defer(d->w->loop, d_kick_cb, d);
        }
    }
    loop_io_modify(d->io, ev);
}

static void u_kick_cb(void *arg)
{
    uconn_t *u = arg;
    u->kick_queued = false;
    if (u->fd >= 0)
        uconn_on_io(u->io, u->fd, LOOP_READ, u);
}

static void u_update_interest(uconn_t *u)
{
    unsigned ev = 0;
    if (u->d && u->d->sp_on) {
        sp_interest(u->d);
        return;
    }
    if (u->hp) {
        /* a stream: its window opens once the client took the bytes */
        if (u->h2s && (!u->d || d_backlog(u->d) < OUT_HIGH))
            px_h2_ack(u->h2s);
        h2u_flush(u->hp);
        return;
    }
    if (u->state == U_CONNECTING) {
        ev = LOOP_WRITE;
    } else if (u->state == U_TLS) {
        ev = (u->tls_want & PX_TLS_WANT_WRITE) ? LOOP_WRITE : LOOP_READ;
    } else if (u->state == U_IDLE) {
        ev = LOOP_READ;
    } else {
        if (u->out.len)
            ev |= LOOP_WRITE;
        if (!u->d || d_backlog(u->d) < OUT_HIGH)
            ev |= LOOP_READ;
        if (u->tls_want & PX_TLS_WANT_WRITE)
            ev |= LOOP_WRITE;
        if (u->tls && (ev & LOOP_READ) && !u->kick_queued && px_tls_pending(u->tls)) {
            u->kick_queued = true;
            loop_defer(u->w->loop, u_kick_cb, u);
        }
    }
    loop_io_modify(u->io, ev);
}

/* Reads from a connection, through TLS when it has it (errno EAGAIN with
 * *want set when nothing is there). */
static ssize_t conn_recv(int fd, px_tls_conn_t *t, void *p, size_t n, unsigned *want)
{
    *want = 0;
    if (t)
        return px_tls_read(t, p, n, want);
    return recv(fd, p, n, 0);
}

/* A plaintext read that got less than it asked for emptied the socket:
 * another would only return EAGAIN (the watcher is level-triggered, so bytes
 * arriving later wake us again). TLS reads return a record at a time. */
static inline bool recv_drained(const px_tls_conn_t *t, ssize_t got, size_t asked)
{
    return t == NULL && (size_t)got < asked;
}

/* Sends what b holds on fd (through TLS when t) until it is empty or the
 * socket is full; returns -1 if the connection failed. */
static int buf_send(int fd, px_tls_conn_t *t, buf_t *b, unsigned *want)
{
    *want = 0;
    while (b->len) {
        ssize_t n = t ? px_tls_write(t, b->data, b->len, want) : send(fd, b->data, b->len, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return 0;
            if (errno == EINTR)
                continue;
            return -1;
        }
        buf_consume(b, (size_t)n);
    }
    return 0;
}

/* Flushes the downstream (d) or upstream (u) connection's output. */
static int d_flush(dconn_t *d)
{
    if (d->parent) {
        h2k_sync(d);
        return 0;
    }
    return buf_send(d->fd, d->tls, &d->out, &d->tls_want);
}

static int u_flush(uconn_t *u)
{
    if (u->hp) {
        /* a stream: the request bytes go to the codec (a failure of the
         * connection reaches every stream from its close) */
        if (u->h2s && u->out.len)
            px_h2_write(u->h2s, u->out.data, u->out.len);
        u->out.len = 0;
        h2u_flush(u->hp);
        return 0;
    }
    return buf_send(u->fd, u->tls, &u->out, &u->tls_want);
}

/* Queues a local response (error, redirect, direct response). */
static void local_reply(dconn_t *d, int code, const char *flags, const char *body,
                        const char *extra_headers, bool close_after)
{
    char head[1024], gextra[600];
    if (d->grpc && code >= 400 && !(extra_headers && strstr(extra_headers, "grpc-status:"))) {
        /* a gRPC client gets the error as a gRPC status, trailers-only */
        int gs = code == 400 ? 13 : code == 401 ? 16 : code == 403 ? 7 : code == 404 ? 12
                 : code == 429 || code == 502 || code == 503 || code == 504 ? 14 : 2;
        snprintf(gextra, sizeof(gextra), "content-type: application/grpc\r\ngrpc-status: %d\r\ngrpc-message: %.300s\r\n%s",
                 gs, body ? body : reason_phrase(code), extra_headers ? extra_headers : "");
        extra_headers = gextra;
        body = NULL;
        code = 200;
    }
    size_t blen = body ? strlen(body) : 0;
    if (d->req.is_head)
        blen = 0;
    if (d->start_ms == 0) {
        d->start_ms = loop_now(d->w->loop);
        clock_gettime(CLOCK_REALTIME, &d->start_wall);
    }
    d->resp_code = code;
    d->flags = flags;
    if (close_after)
        d->keep_alive = false;
    int n = snprintf(head, sizeof(head),
                     "HTTP/1.1 %d %s\r\ncontent-length: %zu\r\n%s%s%s\r\n",
                     code, reason_phrase(code), body ? strlen(body) : 0,
                     extra_headers && strncmp(extra_headers, "content-type:", 13) == 0 ? ""
                                                                               : "content-type: text/plain\r\n",
                     extra_headers ? extra_headers : "",
                     d->keep_alive ? "" : "connection: close\r\n");
    if (n < 0 || (size_t)n >= sizeof(head) || buf_add(&d->out, head, (size_t)n) < 0 ||
        buf_add(&d->out, body ? body : "", blen) < 0) {
        dconn_close(d);
        return;
    }
    d->bytes_out += blen;
    d->state = D_LOCAL;
    request_done(d);
    if (d_flush(d) < 0 || (d->out.len == 0 && (!d->keep_alive || !d->req_body_done))) {
        dconn_close(d);
        return;
    }
    d_update_interest(d);
}

/* ---- upstream connections ---- */

static void uconn_free_cb(void *arg)
{
    uconn_t *u = arg;
    buf_free(&u->in);
    buf_free(&u->out);
    px_tls_conn_free(u->tls);
    px_snapshot_unref(u->tls_snap);
    px_h2_free(u->h2);
    free(u->address);
    free(u->pool_key);
    free(u);
}

static void pool_remove(uconn_t *u)
{
    uconn_t *head = hmap_get(&u->w->idle, u->pool_key);
    if (head == u) {
        if (u->next_idle)
            hmap_put(&u->w->idle, u->next_idle->pool_key, u->next_idle);
        else
            hmap_del(&u->w->idle, u->pool_key);
    } else {
        for (uconn_t *p = head; p; p = p->next_idle) {
            p->idle_n--; /* u is below p */
            if (p->next_idle == u) {
                p->next_idle = u->next_idle;
                break;
            }
        }
    }
    u->next_idle = NULL;
    u->idle_n = 0;
}

static void wake_waiters(worker_t *w);

static void uconn_close(uconn_t *u)
{
    if (u->hp) {
        /* a stream: let the codec stream go (reset when unfinished) */
        uconn_t *c = u->hp;
        if (u->h2s) {
            px_h2_detach(u->h2s);
            u->h2s = NULL;
        }
        if (u->sprev)
            u->sprev->snext = u->snext;
        else if (c->skids == u)
            c->skids = u->snext;
        if (u->snext)
            u->snext->sprev = u->sprev;
        u->snext = u->sprev = NULL;
        if (c->nstreams)
            c->nstreams--;
        if (c->nstreams == 0 && c->state == U_ACTIVE && c->idle_ms && c->timer)
            loop_timer_start(c->timer, c->idle_ms, 0); /* the cluster's idle_timeout */
        if (u->d && u->d->u == u)
            u->d->u = NULL;
        u->d = NULL;
        u->hp = NULL;
        if (c->fd >= 0)
            h2u_flush(c);
        loop_defer(u->w->loop, uconn_free_cb, u);
        return;
    }
    if (u->fd < 0)
        return;
    if (u->h2) {
        h2u_unpool(u);
        h2u_close_streams(u);
    }
    if (u->state == U_IDLE)
        pool_remove(u);
    if (u->cb) {
        atomic_fetch_sub(&u->cb->cx, 1);
        if (u->ls && u->ls->nconns)
            u->ls->nconns--;
        u->cb = NULL;
        u->ls = NULL;
        wake_waiters(u->w);
    }
    loop_io_del(u->io);
    loop_timer_free(u->timer);
    u->io = NULL;
    u->timer = NULL;
    if (u->tls && u->state != U_TLS && u->state != U_CONNECTING)
        px_tls_shutdown(u->tls);
    close(u->fd);
    u->fd = -1;
    if (u->d && u->d->u == u)
        u->d->u = NULL;
    u->d = NULL;
    loop_defer(u->w->loop, uconn_free_cb, u);
}

/* Returns an idle connection to the pool, or closes it when the pool is full. */
static void pool_put(uconn_t *u)
{
    if (u->hp) { /* an HTTP/2 stream is done; its connection stays */
        if (u->h2s) {
            px_h2_finish(u->h2s);
            u->h2s = NULL;
        }
        uconn_close(u);
        return;
    }
    uconn_t *head = hmap_get(&u->w->idle, u->pool_key);
    uint32_t n = head ? head->idle_n : 0;
    if (n >= POOL_MAX_IDLE || u->w->draining || u->in.len || u->peer_closed ||
        (u->max_req && u->nreq >= u->max_req)) {
        uconn_close(u);
        return;
    }
    u->d = NULL;
    u->state = U_IDLE;
    if (u->idle_ms)
        loop_timer_start(u->timer, u->idle_ms, 0);
    u->next_idle = head;
    u->idle_n = n + 1;
    hmap_put(&u->w->idle, u->pool_key, u);
    u->out.len = 0;
    if (n >= POOL_BUFFERED) { /* a burst's connections: their memory goes back */
        buf_free(&u->in);
        buf_free(&u->out);
    }
    u_update_interest(u);
    if (u->w->waitq)
        wake_waiters(u->w);
}

static uconn_t *pool_get(worker_t *w, const char *address)
{
    uconn_t *u = hmap_get(&w->idle, address);
    if (u == NULL)
        return NULL;
    pool_remove(u);
    loop_timer_stop(u->timer);
    u->state = U_ACTIVE;
    u->reused = true;
    return u;
}

static void connect_timeout(loop_timer_t *t, void *arg);

/* The idle-pool key of an endpoint of a cluster: TLS connections are only
 * shared between clusters with the same TLS config (SNI, identity). */
static void pool_key(const px_cluster_t *c, const char *address, char *key, size_t n)
{
    if (c && c->tls)
        snprintf(key, n, "%s|%016llx", address,
                 (unsigned long long)px_hash64(c->tls->key, strlen(c->tls->key)));
    else
        snprintf(key, n, "%s", address);
}

static uconn_t *uconn_connect(worker_t *w, px_snapshot_t *snap, const px_cluster_t *c, const px_endpoint_t *ep,
                              uint64_t timeout_ms)
{
    int fd = socket(ep->sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return NULL;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (c && c->keepalive) {
        /* connectionPool.tcp.tcpKeepalive; unset values stay the kernel's */
        setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
        int v;
        if ((v = (int)c->ka_probes) > 0)
            setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &v, sizeof(v));
        if ((v = (int)c->ka_time_s) > 0)
            setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &v, sizeof(v));
        if ((v = (int)c->ka_interval_s) > 0)
            setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &v, sizeof(v));
    }
    if (c && c->bind && c->bind_sa.ss_family == ep->sa.ss_family) {
        /* the port is picked at connect time, per destination */
        setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
        if (bind(fd, (const struct sockaddr *)&c->bind_sa, c->bind_salen) < 0) {
            close(fd);
            return NULL;
        }
    }
    if (connect(fd, (const struct sockaddr *)&ep->sa, ep->salen) < 0 && errno != EINPROGRESS) {
        close(fd);
        return NULL;
    }
    uconn_t *u = calloc(1, sizeof(*u));
    if (u == NULL) {
        close(fd);
        return NULL;
    }
    u->w = w;
    u->fd = fd;
    u->max_req = c ? c->max_requests_per_conn : 0;
    u->idle_ms = c ? c->idle_timeout_ms : 0;
    u->address = strdup(ep->address);
    char key[512];
    pool_key(c, ep->address, key, sizeof(key));
    u->pool_key = strdup(key);
    if (c && c->tls) {
        /* the handshake starts once TCP is up; the snapshot stays with it */
        u->tls_cfg = c->tls;
        u->tls_snap = px_snapshot_ref(snap);
    }
    u->state = U_CONNECTING;
    u->io = loop_io_add(w->loop, fd, LOOP_WRITE, uconn_on_io, u);
    u->timer = loop_timer_new(w->loop, connect_timeout, u);
    if (u->io == NULL || u->address == NULL || u->pool_key == NULL) {
        loop_io_del(u->io);
        loop_timer_free(u->timer);
        close(fd);
        px_snapshot_unref(u->tls_snap);
        free(u->address);
        free(u->pool_key);
        free(u);
        return NULL;
    }
    loop_timer_start(u->timer, timeout_ms ? timeout_ms : 5000, 0);
    CINC(w->st.ucx_total);
    return u;
}

/* The upstream failed before a response head: 503 UF (or reset). A request
 * without a body that failed on a pooled connection before any response
 * byte (the upstream closed it while idle) is sent once more on a fresh
 * connection. */
static void upstream_failed(dconn_t *d, const char *why)
{
    uconn_t *u = d->u;
    if (u && u->reused && !d->retried && d->state == D_PROXY && !d->resp_head_done && u->in.len == 0 &&
        d->retry_head.len && d->endpoint && d->cluster) {
        d->retried = true;
        uconn_close(u);
        d->u = NULL;
        uconn_t *nu = uconn_connect(d->w, d->snap, d->cluster, d->endpoint, d->cluster->connect_timeout_ms);
        if (nu && buf_add(&nu->out, d->retry_head.data, d->retry_head.len) == 0) {
            nu->d = d;
            d->u = nu;
            d->retry_head.len = 0;
            return;
        }
        if (nu)
            uconn_close(nu);
        u = NULL;
    }
    /* a connect failure or reset before the response head: outlier
     * detection, then the retry policy */
    bool connect = u == NULL || u->state == U_CONNECTING || u->state == U_TLS;
    if (d->state == D_PROXY && !d->resp_head_done && d->cluster && strcmp(why, "internal error") != 0)
        od_report(d->w, d->cluster, d->cb, d->upstream_host, -1);
    if (d->state == D_PROXY && !d->resp_head_done && strcmp(why, "internal error") != 0 &&
        maybe_retry(d, retry_on_failure(d, connect)))
        return;
    if (u)
        uconn_close(u);
    d->u = NULL;
    if (d->state == D_TUNNEL) {
        d->flags = "UF";
        dconn_close(d);
        return;
    }
    if (d->resp_head_done) {
        d->flags = "UC";
        d->keep_alive = false;
        request_done(d);
        dconn_close(d);
        return;
    }
    char body[256];
    snprintf(body, sizeof(body),
             "upstream connect error or disconnect/reset before headers. reset reason: %s", why);
    d->req_body_done = true;
    local_reply(d, 503, "UF", body, NULL, true);
}

static void connect_timeout(loop_timer_t *t, void *arg)
{
    (void)t;
    uconn_t *u = arg;
    if (u->shadow) {
        /* a shadow that could not connect, or its deadline */
        if (u->state == U_CONNECTING)
            CINC(u->w->st.shadow_failed);
        uconn_close(u);
    } else if (u->state == U_CONNECTING && u->d)
        upstream_failed(u->d, "connection timeout");
    else if (u->state == U_CONNECTING || u->state == U_IDLE) /* or idle too long in the pool */
        uconn_close(u);
    else if (u->h2 && u->nstreams == 0) /* an HTTP/2 connection without streams, idle too long */
        uconn_close(u);
}

/* ---- request forwarding ---- */

static bool hop_or_replaced(const px_h1_msg_t *m, const px_h1_header_t *h)
{
    static const char *const drop[] = {"expect", "x-forwarded-proto", "x-envoy-expected-rq-timeout-ms",
                                       "x-envoy-original-path", "x-envoy-peer-metadata",
                                       "x-envoy-peer-metadata-id"};
    if (px_h1_is_hop_by_hop(m, h->name, h->name_len))
        return true;
    for (size_t i = 0; i < sizeof(drop) / sizeof(drop[0]); i++)
        if (px_h1_ieq(h->name, h->name_len, drop[i]))
            return true;
    return false;
}

static bool removed_by(const px_header_ops_t *ops, const px_h1_header_t *h)
{
    for (size_t i = 0; i < ops->nremove; i++)
        if (px_h1_ieq(h->name, h->name_len, ops->remove[i]))
            return true;
    for (size_t i = 0; i < ops->nadd; i++)
        if (!ops->add[i].append && px_h1_ieq(h->name, h->name_len, ops->add[i].name))
            return true;
    return false;
}

static int add_ops(buf_t *b, const px_header_ops_t *ops)
{
    for (size_t i = 0; i < ops->nadd; i++) {
        if (buf_str(b, ops->add[i].name) < 0 || buf_str(b, ": ") < 0 ||
            buf_str(b, ops->add[i].value) < 0 || buf_str(b, "\r\n") < 0)
            return -1;
    }
    return 0;
}

/* x-forwarded-client-cert as the HCM's forward_client_cert_details says:
 * SANITIZE (0) drops it, FORWARD_ONLY (1) and ALWAYS_FORWARD_ONLY (4) pass
 * it on, APPEND_FORWARD (2) appends this hop, SANITIZE_SET (3) replaces it
 * with this hop; this hop only exists on mTLS connections. */
static bool xfcc_drops(const dconn_t *d)
{
    int x = d->chain->xfcc;
    return x == 0 || (x == 3 && d->peer_uri[0]);
}

static bool xfcc_sets(const dconn_t *d)
{
    int x = d->chain->xfcc;
    return (x == 2 || x == 3) && d->peer_uri[0];
}

static const char *xfcc_line(const dconn_t *d, char *line, size_t n)
{
    const px_options_t *o = &d->w->srv->opt;
    const px_h1_header_t *prev = d->chain->xfcc == 2 ? px_h1_find(&d->req, "x-forwarded-client-cert") : NULL;
    int pl = prev ? (int)(prev->value_len < 1024 ? prev->value_len : 1024) : 0;
    snprintf(line, n, "x-forwarded-client-cert: %.*s%sBy=%s;URI=%s\r\n", pl, prev ? prev->value : "",
             prev ? "," : "", o->spiffe && o->spiffe[0] ? o->spiffe : "", d->peer_uri);
    return line;
}

/* Builds the upstream request head into b, without the blank line that ends
 * it (the attempt count goes there). */
static int write_upstream_head(dconn_t *d, const px_vhost_t *vh, const px_weighted_t *wc, buf_t *b)
{
    const px_route_t *rt = d->route;
    const px_route_config_t *rc = d->chain->route_config;
    const px_h1_msg_t *m = &d->req;
    const char *path = d->path;
    size_t plen = d->path_len;
    char *rewritten = NULL;
    if (rt->prefix_rewrite && rt->path_kind == PX_PATH_PREFIX && plen >= rt->path_len) {
        size_t rl = strlen(rt->prefix_rewrite);
        rewritten = malloc(rl + plen - rt->path_len + 1);
        if (rewritten == NULL)
            return -1;
        memcpy(rewritten, rt->prefix_rewrite, rl);
        memcpy(rewritten + rl, path + rt->path_len, plen - rt->path_len);
        plen = rl + plen - rt->path_len;
        path = rewritten;
    }
    int rc_ = -1;
    if (buf_add(b, m->method, m->method_len) < 0 || buf_str(b, " ") < 0 || buf_add(b, path, plen) < 0 ||
        buf_str(b, " HTTP/1.1\r\n") < 0)
        goto out;
    for (size_t i = 0; i < m->nheaders; i++) {
        const px_h1_header_t *h = &m->headers[i];
        if (hop_or_replaced(m, h))
            continue;
        if ((rt->host_rewrite || d->absolute) && px_h1_ieq(h->name, h->name_len, "host"))
            continue;
        if (px_h1_ieq(h->name, h->name_len, "x-forwarded-for") ||
            px_h1_ieq(h->name, h->name_len, "x-request-id"))
            continue;
        if (px_h1_ieq(h->name, h->name_len, "x-forwarded-client-cert") && xfcc_drops(d))
            continue;
        if (removed_by(&rt->req, h) || (vh && removed_by(&vh->req, h)) || (rc && removed_by(&rc->req, h)) ||
            (wc && removed_by(&wc->req, h)))
            continue;
        if (buf_add(b, h->name, h->name_len) < 0 || buf_str(b, ": ") < 0 ||
            buf_add(b, h->value, h->value_len) < 0 || buf_str(b, "\r\n") < 0)
            goto out;
    }
    if (rt->host_rewrite && (buf_str(b, "host: ") < 0 || buf_str(b, rt->host_rewrite) < 0 ||
                             buf_str(b, "\r\n") < 0))
        goto out;
    if (!rt->host_rewrite && (m->host == NULL || d->absolute) && (buf_str(b, "host: ") < 0 || buf_str(b, d->authority ? d->authority : "") < 0 ||
                            buf_str(b, "\r\n") < 0))
        goto out;
    char line[2048];
    if (buf_str(b, "x-forwarded-for: ") < 0 || (d->xff && (buf_str(b, d->xff) < 0 || buf_str(b, ", ") < 0)) ||
        buf_str(b, d->peer) < 0 ||
        buf_str(b, d->tls && !d->peer_uri[0] ? "\r\nx-forwarded-proto: https\r\nx-request-id: "
                                              : "\r\nx-forwarded-proto: http\r\nx-request-id: ") < 0 ||
        buf_str(b, d->request_id) < 0 || buf_str(b, "\r\n") < 0)
        goto out;
    if (xfcc_sets(d) && buf_str(b, xfcc_line(d, line, sizeof(line))) < 0)
        goto out;
    const px_options_t *o = &d->w->srv->opt;
    if (o->peer_metadata && !is_inbound(d) && istio_mtls(d->cluster) &&
        (buf_str(b, "x-envoy-peer-metadata-id: ") < 0 || buf_str(b, o->peer_metadata_id) < 0 ||
         buf_str(b, "\r\nx-envoy-peer-metadata: ") < 0 || buf_str(b, o->peer_metadata) < 0 || buf_str(b, "\r\n") < 0))
        goto out;
    if (rt->timeout_ms) {
        snprintf(line, sizeof(line), "x-envoy-expected-rq-timeout-ms: %llu\r\n",
                 (unsigned long long)rt->timeout_ms);
        if (buf_str(b, line) < 0)
            goto out;
    }
    if (rewritten) {
        if (buf_str(b, "x-envoy-original-path: ") < 0 || buf_add(b, d->path, d->path_len) < 0 ||
            buf_str(b, "\r\n") < 0)
            goto out;
    }
    if ((wc && add_ops(b, &wc->req) < 0) || add_ops(b, &rt->req) < 0 || (vh && add_ops(b, &vh->req) < 0) ||
        (rc && add_ops(b, &rc->req) < 0))
        goto out;
    if (m->upgrade) {
        const px_h1_header_t *up = px_h1_find(m, "upgrade");
        if (buf_str(b, "connection: upgrade\r\nupgrade: ") < 0 || buf_add(b, up->value, up->value_len) < 0 ||
            buf_str(b, "\r\n") < 0)
            goto out;
    }
    if (m->body == PX_H1_BODY_CHUNKED) {
        if (buf_str(b, "transfer-encoding: chunked\r\n") < 0)
            goto out;
    }
    rc_ = 0;
out:
    free(rewritten);
    return rc_;
}

/* Moves request body bytes from d->in to the upstream (re-encoding chunked).
 * Returns -1 on malformed framing. */
static int pump_body(dconn_t *d);

/* Forwards the request body that has arrived; while capturing (a body that
 * did not come with the head), keeps a copy for retries up to
 * RETRY_BODY_MAX, and the request becomes retriable once all of it is in. */
static int pump_request_body(dconn_t *d)
{
    if (d->req_body_done || d->u == NULL)
        return 0;
    buf_t *out = &d->u->out;
    size_t before = out->len;
    if (pump_body(d) < 0)
        return -1;
    if (d->capture) {
        if (d->attempt_req.len - d->attempt_head_len + (out->len - before) > RETRY_BODY_MAX ||
            buf_add(&d->attempt_req, out->data + before, out->len - before) < 0) {
            d->capture = false; /* too large to keep: no retry for this one */
        } else if (d->req_body_done) {
            d->capture = false;
            d->retriable = d->route && d->route->retry.set;
        }
    }
    return 0;
}

static int pump_body(dconn_t *d)
{
    buf_t *out = &d->u->out;
    if (d->req_body == PX_H1_BODY_LENGTH) {
        size_t n = d->in.len < d->req_left ? d->in.len : (size_t)d->req_left;
        if (n && buf_add(out, d->in.data, n) < 0)
            return -1;
        buf_consume(&d->in, n);
        d->req_left -= n;
        d->bytes_in += n;
        if (d->req_left == 0)
            d->req_body_done = true;
        return 0;
    }
    if (d->req_body == PX_H1_BODY_CHUNKED) {
        size_t pos = 0;
        for (;;) {
            size_t used;
            const char *data, *err;
            size_t dl;
            int r = px_h1_chunked_decode(&d->req_chunk, d->in.data + pos, d->in.len - pos, &used, &data, &dl, &err);
            if (r == -1)
                return -1;
            pos += used;
            if (r == 1) {
                char hdr[24];
                size_t hl = px_h1_chunk_header(hdr, dl);
                if (buf_add(out, hdr, hl) < 0 || buf_add(out, data, dl) < 0 || buf_str(out, "\r\n") < 0)
                    return -1;
                d->bytes_in += dl;
                continue;
            }
            if (r == 0) {
                if (buf_str(out, "0\r\n") < 0 || buf_add(out, data, dl) < 0 || buf_str(out, "\r\n") < 0)
                    return -1;
                d->req_body_done = true;
            }
            break;
        }
        buf_consume(&d->in, pos);
        return 0;
    }
    d->req_body_done = true;
    return 0;
}

static const px_cluster_t *find_cluster(const px_snapshot_t *s, const char *name)
{
    return name ? px_snapshot_cluster(s, name) : NULL;
}

/* The shared circuit-breaker counters of a cluster (NULL when out of memory). */
static cb_state_t *cb_for(px_server_t *s, const char *name)
{
    pthread_mutex_lock(&s->mu);
    cb_state_t *cb = s->cbs;
    while (cb && strcmp(cb->name, name) != 0)
        cb = cb->next;
    if (cb == NULL && (cb = calloc(1, sizeof(*cb))) != NULL) {
        cb->name = strdup(name);
        if (cb->name == NULL) {
            free(cb);
            cb = NULL;
        } else {
            cb->next = s->cbs;
            s->cbs = cb;
        }
    }
    pthread_mutex_unlock(&s->mu);
    return cb;
}

/* The outlier-detection entry of a host (created when `create`). */
static od_host_t *od_find(cb_state_t *cb, const char *address, bool create)
{
    for (od_host_t *h = atomic_load(&cb->hosts); h; h = h->next)
        if (strcmp(h->address, address) == 0)
            return h;
    if (!create)
        return NULL;
    pthread_mutex_lock(&od_mu);
    od_host_t *h = atomic_load(&cb->hosts);
    while (h && strcmp(h->address, address) != 0)
        h = h->next;
    if (h == NULL && (h = calloc(1, sizeof(*h))) != NULL) {
        h->address = strdup(address);
        if (h->address == NULL) {
            free(h);
            h = NULL;
        } else {
            h->next = atomic_load(&cb->hosts);
            atomic_store(&cb->hosts, h);
        }
    }
    pthread_mutex_unlock(&od_mu);
    return h;
}

/* Whether a host is ejected now; an ejection whose time is over ends here. */
static bool od_ejected(worker_t *w, cb_state_t *cb, const char *address)
{
    od_host_t *h = od_find(cb, address, false);
    if (h == NULL)
        return false;
    uint64_t until = atomic_load(&h->ejected_until);
    if (until == 0)
        return false;
    if (loop_now(w->loop) < until)
        return true;
    if (atomic_compare_exchange_strong(&h->ejected_until, &until, 0)) {
        atomic_store(&h->c5xx, 0);
        atomic_store(&h->cgw, 0);
        atomic_store(&h->healthy_since, until);
    }
    return false;
}

/* Records the outcome of a request to a host of c: an HTTP status, or -1
 * for a connect failure / reset (counted as a 503, as Envoy does without
 * split local-origin errors). Ejects at the consecutive thresholds. */
static void od_report(worker_t *w, const px_cluster_t *c, cb_state_t *cb, const char *address, int status)
{
    if (!c->outlier || cb == NULL || address == NULL || address[0] == '\0')
        return;
    bool is5xx = status < 0 || status >= 500;
    bool gw = status < 0 || status == 502 || status == 503 || status == 504;
    od_host_t *h = od_find(cb, address, is5xx);
    if (h == NULL)
        return;
    if (!is5xx) {
        atomic_store(&h->c5xx, 0);
        atomic_store(&h->cgw, 0);
        return;
    }
    unsigned n5 = atomic_fetch_add(&h->c5xx, 1) + 1;
    unsigned ng = 0;
    if (gw)
        ng = atomic_fetch_add(&h->cgw, 1) + 1;
    else
        atomic_store(&h->cgw, 0);
    bool by5xx = c->od_consecutive_5xx && n5 >= c->od_consecutive_5xx && wrand(w) % 100 < c->od_enforce_5xx;
    bool bygw = !by5xx && gw && c->od_consecutive_gw && ng >= c->od_consecutive_gw &&
                wrand(w) % 100 < c->od_enforce_gw;
    if (!by5xx && !bygw)
        return;
    uint64_t now = loop_now(w->loop);
    if (atomic_load(&h->ejected_until) > now)
        return;
    /* max_ejection_percent, but at least one host may be ejected */
    size_t ejected = 0;
    for (size_t i = 0; i < c->nendpoints; i++) {
        od_host_t *o = od_find(cb, c->endpoints[i].address, false);
        if (o && o != h && atomic_load(&o->ejected_until) > now)
            ejected++;
    }
    if (ejected > 0 && (ejected + 1) * 100 > (size_t)c->od_max_ejection_pct * c->nendpoints) {
        CINC(w->st.od_overflow);
        return;
    }
    /* Envoy's multiplier: one more per ejection, one less per interval the
     * host has stayed in since it last returned */
    uint64_t since = atomic_load(&h->healthy_since);
    unsigned times = atomic_load(&h->times);
    if (since && c->od_interval_ms && now > since) {
        uint64_t back = (now - since) / c->od_interval_ms;
        times = back >= times ? 0 : times - (unsigned)back;
    }
    times++;
    atomic_store(&h->times, times);
    uint64_t ms = c->od_base_ejection_ms * times;
    if (ms > c->od_max_ejection_ms)
        ms = c->od_max_ejection_ms;
    uint64_t until = now + (ms ? ms : 1);
    if (c->od_interval_ms) /* hosts return at the interval's sweeps */
        until = (until + c->od_interval_ms - 1) / c->od_interval_ms * c->od_interval_ms;
    atomic_store(&h->ejected_until, until);
    atomic_store(&h->c5xx, 0);
    atomic_store(&h->cgw, 0);
    CINC(w->st.od_ejections);
    if (by5xx)
        CINC(w->st.od_eject_5xx);
    else
        CINC(w->st.od_eject_gw);
}

static lb_state_t *lb_for(worker_t *w, const px_cluster_t *c)
{
    lb_state_t *ls = hmap_get(&w->lbs, c->name);
    if (ls == NULL) {
        ls = calloc(1, sizeof(*ls));
        if (ls == NULL)
            return NULL;
        ls->cluster = strdup(c->name);
        if (ls->cluster == NULL) {
            free(ls);
            return NULL;
        }
        px_lb_init(&ls->lb, c, wrand(w));
        ls->cb = cb_for(w->srv, c->name);
        hmap_put(&w->lbs, ls->cluster, ls);
    }
    if (ls->lb.nactive != c->nendpoints) {
        uint64_t rr = ls->lb.rr_next;
        px_lb_free(&ls->lb);
        px_lb_init(&ls->lb, c, wrand(w));
        ls->lb.rr_next = rr;
    }
    return ls;
}

static ep_active_t *active_for(worker_t *w, const char *address)
{
    ep_active_t *e = hmap_get(&w->active, address);
    if (e == NULL) {
        e = calloc(1, sizeof(*e));
        if (e == NULL)
            return NULL;
        e->address = strdup(address);
        if (e->address == NULL) {
            free(e);
            return NULL;
        }
        hmap_put(&w->active, e->address, e);
    }
    return e;
}

/* The value of cookie `name` in the request's Cookie headers, or NULL. */
static const char *cookie_value(const px_h1_msg_t *m, const char *name, size_t *len)
{
    size_t nl = strlen(name);
    for (size_t i = 0; i < m->nheaders; i++) {
        const px_h1_header_t *h = &m->headers[i];
        if (!px_h1_ieq(h->name, h->name_len, "cookie"))
            continue;
        const char *p = h->value, *end = h->value + h->value_len;
        while (p < end) {
            while (p < end && (*p == ' ' || *p == ';'))
                p++;
            const char *e = memchr(p, ';', (size_t)(end - p));
            if (e == NULL)
                e = end;
            if ((size_t)(e - p) > nl && memcmp(p, name, nl) == 0 && p[nl] == '=') {
                const char *v = p + nl + 1;
                size_t vl = (size_t)(e - v);
                if (vl >= 2 && v[0] == '"' && v[vl - 1] == '"') { /* a quoted value */
                    v++;
                    vl -= 2;
                }
                *len = vl;
                return v;
            }
            p = e;
        }
    }
    return NULL;
}

/* The value of query parameter `name` in the request target, or NULL. */
static const char *query_value(const dconn_t *d, const char *name, size_t *len)
{
    const char *q = memchr(d->path, '?', d->path_len);
    if (q == NULL)
        return NULL;
    const char *end = d->path + d->path_len, *p = q + 1;
    size_t nl = strlen(name);
    while (p < end) {
        const char *e = memchr(p, '&', (size_t)(end - p));
        if (e == NULL)
            e = end;
        if ((size_t)(e - p) >= nl && memcmp(p, name, nl) == 0 && (p + nl == e || p[nl] == '=')) {
            const char *v = p + nl == e ? e : p + nl + 1;
            *len = (size_t)(e - v);
            return v;
        }
        p = e + 1;
    }
    return NULL;
}

/* The hash a RING_HASH cluster places the request by: the header, cookie,
 * query parameter or source address the route names; a client without the
 * cookie gets one generated (and a Set-Cookie) when the route gives it a
 * lifetime; otherwise random. */
static uint64_t request_hash(dconn_t *d)
{
    const px_route_t *rt = d->route;
    const char *v = NULL;
    size_t vl = 0;
    if (rt->hash == PX_HASH_SOURCE_IP) {
        v = d->peer;
        vl = strlen(d->peer);
    } else if (rt->hash == PX_HASH_HEADER) {
        const px_h1_header_t *h = px_h1_find(&d->req, rt->hash_name);
        if (h) {
            v = h->value;
            vl = h->value_len;
        }
    } else if (rt->hash == PX_HASH_QUERY) {
        v = query_value(d, rt->hash_name, &vl);
    } else if (rt->hash == PX_HASH_COOKIE) {
        v = cookie_value(&d->req, rt->hash_name, &vl);
        if (v == NULL && rt->cookie_ttl_s) {
            char val[17], line[600];
            if (d->set_cookie == NULL) { /* once per request: retries hash the same */
                snprintf(val, sizeof(val), "%016llx", (unsigned long long)wrand(d->w));
                snprintf(line, sizeof(line), "set-cookie: %s=\"%s\"; Max-Age=%llu%s%s; HttpOnly\r\n", rt->hash_name,
                         val, (unsigned long long)rt->cookie_ttl_s, rt->cookie_path ? "; Path=" : "",
                         rt->cookie_path ? rt->cookie_path : "");
                d->set_cookie = strdup(line);
            }
            if (d->set_cookie) {
                v = strchr(d->set_cookie, '"') + 1;
                vl = 16;
            }
        }
    }
    return v ? px_hash64(v, vl) : wrand(d->w);
}

static void redirect_reply(dconn_t *d)
{
    const px_route_t *rt = d->route;
    char loc[2048], hdr[2200];
    const char *host = rt->redirect_host ? rt->redirect_host : (d->authority ? d->authority : "");
    const char *scheme = rt->redirect_scheme ? rt->redirect_scheme : "http";
    const char *t = d->path;
    size_t tl = d->path_len;
    const char *q = memchr(t, '?', tl);
    size_t pl = q ? (size_t)(q - t) : tl;
    char path[1024];
    if (rt->redirect_path)
        snprintf(path, sizeof(path), "%s", rt->redirect_path);
    else if (rt->redirect_prefix && pl >= rt->path_len)
        snprintf(path, sizeof(path), "%s%.*s", rt->redirect_prefix, (int)(pl - rt->path_len), t + rt->path_len);
    else
        snprintf(path, sizeof(path), "%.*s", (int)pl, t);
    char port[16] = "";
    if (rt->redirect_port)
        snprintf(port, sizeof(port), ":%u", rt->redirect_port);
    snprintf(loc, sizeof(loc), "%s://%s%s%s%.*s", scheme, host, port, path,
             rt->strip_query || !q ? 0 : (int)(tl - pl), q ? q : "");
    snprintf(hdr, sizeof(hdr), "location: %s\r\n", loc);
    local_reply(d, rt->redirect_code, "-", NULL, hdr, false);
}

/* The length of a complete chunked body at the start of p[0..n), trailers
 * and final blank line included; 0 when it is not all there (or malformed). */
static size_t chunked_complete(const char *p, size_t n)
{
    px_h1_chunked_t ch;
    px_h1_chunked_init(&ch);
    size_t pos = 0;
    for (;;) {
        const char *data, *err;
        size_t dl, used;
        int r = px_h1_chunked_decode(&ch, p + pos, n - pos, &used, &data, &dl, &err);
        pos += used;
        if (r == 0)
            return pos;
        if (r != 1)
            return 0;
    }
}

/* Routes a parsed request and starts proxying it. */
static void route_request(dconn_t *d);
static void after_start(dconn_t *d, size_t r);
static void upstream_failed(dconn_t *d, const char *why);
static void send_shadow(dconn_t *d, const px_mirror_t *mi);
static void try_timer_cb(loop_timer_t *t, void *arg);
static void attempt_send(dconn_t *d, bool later);
static int pump_request_body(dconn_t *d);

/* Sends one attempt of the current request: picks an endpoint (another one
 * than the last when the retry policy asks and the cluster has several),
 * takes a pooled or new connection and queues the request with its
 * x-envoy-attempt-count. Answers the request itself on failure. */
static void overflow_reply(dconn_t *d);

/* Builds the shadow copy of the request in attempt_req: "-shadow" appended
 * to the host (before a port), connection: close, the buffered body. */
static int shadow_request(const dconn_t *d, buf_t *out)
{
    const char *p = d->attempt_req.data, *end = p + d->attempt_head_len;
    const char *eol = memmem(p, (size_t)(end - p), "\r\n", 2);
    if (eol == NULL || buf_add(out, p, (size_t)(eol + 2 - p)) < 0)
        return -1;
    for (p = eol + 2; p < end; p = eol + 2) {
        eol = memmem(p, (size_t)(end - p), "\r\n", 2);
        if (eol == NULL)
            return -1;
        if (eol - p >= 5 && strncasecmp(p, "host:", 5) == 0) {
            const char *v = p + 5;
            while (v < eol && *v == ' ')
                v++;
            const char *colon = memrchr(v, ':', (size_t)(eol - v));
            if (colon && memchr(colon, ']', (size_t)(eol - colon)))
                colon = NULL; /* an IPv6 literal without a port */
            const char *hend = colon ? colon : eol;
            if (buf_str(out, "host: ") < 0 || buf_add(out, v, (size_t)(hend - v)) < 0 ||
                buf_str(out, "-shadow") < 0 || buf_add(out, hend, (size_t)(eol - hend)) < 0 ||
                buf_str(out, "\r\n") < 0)
                return -1;
            continue;
        }
        if (eol - p >= 11 && strncasecmp(p, "connection:", 11) == 0)
            continue;
        if (buf_add(out, p, (size_t)(eol + 2 - p)) < 0)
            return -1;
    }
    if (buf_str(out, "connection: close\r\n\r\n") < 0)
        return -1;
    return buf_add(out, d->attempt_req.data + d->attempt_head_len, d->attempt_req.len - d->attempt_head_len);
}

/* What the load balancer may pick: hosts outlier detection has not ejected,
 * and not the one a retry must avoid. */
typedef struct pick_ctx {
    worker_t *w;
    cb_state_t *cb;
    uint32_t avoid_prio; /* priorities (bit per priority) a retry goes past */
} pick_ctx_t;

static uint32_t prio_bit(const px_endpoint_t *e)
{
    return 1u << (e->priority < 31 ? e->priority : 31);
}

static bool ep_healthy(pick_ctx_t *p, const px_cluster_t *c, size_t ei)
{
    return !(c->outlier && p->cb && od_ejected(p->w, p->cb, c->endpoints[ei].address));
}

static bool ep_available(void *arg, const px_cluster_t *c, size_t ei)
{
    pick_ctx_t *p = arg;
    if (p->avoid_prio & prio_bit(&c->endpoints[ei]))
        return false;
    return ep_healthy(p, c, ei);
}

/* The endpoint for a request or connection of c (-1: none), across
 * priorities and past ejected hosts (px_lb_pick_avail). Priorities in
 * avoid_prio are passed over while another has a healthy endpoint. */
static long pick_endpoint(worker_t *w, lb_state_t *ls, const px_cluster_t *c, uint64_t hash, long avoid,
                          uint32_t avoid_prio)
{
    if (ls == NULL)
        return -1;
    pick_ctx_t p = {.w = w, .cb = ls->cb, .avoid_prio = avoid_prio};
    if (avoid_prio) {
        bool other = false;
        for (size_t i = 0; i < c->nendpoints && !other; i++)
            other = !(avoid_prio & prio_bit(&c->endpoints[i])) && ep_healthy(&p, c, i);
        if (!other) /* every healthy priority was tried: start over, as Envoy does */
            p.avoid_prio = 0;
    }
    return px_lb_pick_avail(&ls->lb, c, hash, ep_available, &p, avoid);
}

/* Fires a mirrored copy of the current request at the mirror's cluster;
 * nothing that happens to it reaches the original request. */
static void send_shadow(dconn_t *d, const px_mirror_t *mi)
{
    worker_t *w = d->w;
    const px_cluster_t *c = find_cluster(d->snap, mi->cluster);
    lb_state_t *ls = c ? lb_for(w, c) : NULL;
    long ei = pick_endpoint(w, ls, c, c && c->lb == PX_LB_RING_HASH ? request_hash(d) : 0, -1, 0);
    if (ei < 0) {
        CINC(w->st.shadow_failed);
        return;
    }
    if (c->http2 || (c->http2_downstream && d->parent)) {
        /* a stream on the cluster's HTTP/2 connection; its answer is dropped */
        char key[512];
        pool_key(c, c->endpoints[ei].address, key, sizeof(key));
        uconn_t *su = h2u_open(w, d->snap, c, ls->cb, ls, &c->endpoints[ei], key);
        if (su == NULL || shadow_request(d, &su->out) < 0) {
            if (su)
                uconn_close(su);
            CINC(w->st.shadow_failed);
            return;
        }
        u_flush(su);
        CINC(w->st.shadow_sent);
        return;
    }
    uconn_t *u = uconn_connect(w, d->snap, c, &c->endpoints[ei], c->connect_timeout_ms);
    if (u == NULL) {
        CINC(w->st.shadow_failed);
        return;
    }
    u->shadow = true;
    if (shadow_request(d, &u->out) < 0) {
        uconn_close(u);
        CINC(w->st.shadow_failed);
        return;
    }
    CINC(w->st.shadow_sent);
}

static void start_attempt(dconn_t *d)
{
    worker_t *w = d->w;
    const px_cluster_t *c = d->cluster;
    const px_route_t *rt = d->route;
    lb_state_t *ls = lb_for(w, c);
    if (ls && c->lb == PX_LB_LEAST_REQUEST)
        for (size_t i = 0; i < c->nendpoints && i < ls->lb.nactive; i++) {
            ep_active_t *e = hmap_get(&w->active, c->endpoints[i].address);
            ls->lb.active[i] = e ? e->n : 0;
        }
    d->cb = ls ? ls->cb : NULL;
    d->ls = ls;
    if (d->cb && d->attempts == 0) {
        if (atomic_load(&d->cb->rq) >= c->max_requests) {
            overflow_reply(d);
            return;
        }
        atomic_fetch_add(&d->cb->rq, 1);
        d->cb_rq = true;
    }
    uint64_t hash = c->lb == PX_LB_RING_HASH ? request_hash(d) : 0;
    /* a retry that must go elsewhere avoids the last host; ejected hosts are
     * passed over, lower priorities take over as higher ones lose hosts */
    long avoid = d->attempts > 0 && rt->retry.other_host && c->nendpoints > 1 ? d->last_ep : -1;
    uint32_t avoid_prio = d->attempts > 0 && rt->retry.other_priority ? d->tried_prio : 0;
    long ei = c->lb == PX_LB_ORIGINAL_DST && d->captured ? 0 : pick_endpoint(w, ls, c, hash, avoid, avoid_prio);
    if (ei < 0) {
        d->req_body_done = d->req_body_done || d->attempts > 0;
        local_reply(d, 503, "UH", "no healthy upstream", NULL, !d->req_body_done);
        return;
    }
    d->attempts++;
    d->last_ep = ei;
    const px_endpoint_t *ep = ep_of(d, c, ei);
    if (c->lb != PX_LB_ORIGINAL_DST) {
        if (avoid_prio == 0)
            d->tried_prio = 0; /* a fresh round of priorities */
        d->tried_prio |= prio_bit(ep);
    }
    d->endpoint = ep;
    copy_trunc(d->upstream_host, sizeof(d->upstream_host), ep->address, strlen(ep->address));
    if (d->ep && d->ep->n)
        d->ep->n--;
    d->ep = active_for(w, ep->address);
    if (d->ep)
        d->ep->n++;
    d->resp_head_done = false;
    d->state = D_PROXY;
    attempt_send(d, d->attempts > 1);
}

/* Circuit breaker overflow: 503 UO with x-envoy-overloaded. */
static void overflow_reply(dconn_t *d)
{
    CINC(d->w->st.rq_pending_overflow);
    d->req_body_done = d->req_body_done || d->attempts > 1;
    local_reply(d, 503, "UO", "upstream connect error or disconnect/reset before headers. reset reason: overflow",
                "x-envoy-overloaded: true\r\n", !d->req_body_done);
}

static uconn_t *h2u_stream(dconn_t *d, const px_endpoint_t *ep, const char *key);

/* Sends the current attempt to d->endpoint on a pooled or new connection;
 * at max_connections the request waits (max_pending) or overflows. `later`:
 * not called from the request's own dispatch (a retry or a waiter), so the
 * body and the flush are done here. */
static void attempt_send(dconn_t *d, bool later)
{
    worker_t *w = d->w;
    const px_route_t *rt = d->route;
    const px_h1_msg_t *m = &d->req;
    const px_endpoint_t *ep = d->endpoint;
    char key[512];
    pool_key(d->cluster, ep->address, key, sizeof(key));
    uconn_t *u = NULL;
    if (d->cluster->http2 || (d->cluster->http2_downstream && d->parent)) {
        u = h2u_stream(d, ep, key);
        if (u == NULL) {
            upstream_failed(d, "connection failure");
            return;
        }
    } else if ((u = pool_get(w, key)) != NULL) {
        CINC(w->st.ucx_reused);
    } else {
        /* at max_connections a worker with no connection of its own to the
         * cluster still opens one (none of its requests could ever proceed) */
        if (d->cb && atomic_load(&d->cb->cx) >= d->cluster->max_connections && d->ls && d->ls->nconns > 0) {
            if (atomic_load(&d->cb->pending) >= d->cluster->max_pending) {
                overflow_reply(d);
                return;
            }
            CINC(w->st.cx_overflow);
            atomic_fetch_add(&d->cb->pending, 1);
            d->waiting = true;
            dconn_t **pp = &w->waitq;
            while (*pp)
                pp = &(*pp)->wnext;
            d->wnext = NULL;
            *pp = d;
            return;
        }
        u = uconn_connect(w, d->snap, d->cluster, ep, d->cluster->connect_timeout_ms);
        if (u == NULL) {
            upstream_failed(d, "connection failure");
            return;
        }
        if (d->cb) {
            u->cb = d->cb;
            u->ls = d->ls;
            if (d->ls)
                d->ls->nconns++;
            atomic_fetch_add(&d->cb->cx, 1);
        }
    }
    CINC(w->st.urq_total);
    u->d = d;
    u->nreq++;
    d->u = u;
    char ac[64] = "";
    if (d->vhost && d->vhost->attempt_count)
        snprintf(ac, sizeof(ac), "x-envoy-attempt-count: %u\r\n", d->attempts);
    bool with_body = d->attempts > 1 && d->retriable;
    if (buf_add(&u->out, d->attempt_req.data, d->attempt_head_len) < 0 || buf_str(&u->out, ac) < 0 ||
        buf_str(&u->out, "\r\n") < 0 ||
        (with_body && buf_add(&u->out, d->attempt_req.data + d->attempt_head_len,
                              d->attempt_req.len - d->attempt_head_len) < 0)) {
        upstream_failed(d, "internal error");
        return;
    }
    d->retry_head.len = 0;
    if (u->reused && m->body == PX_H1_BODY_NONE && !m->upgrade)
        buf_add(&d->retry_head, u->out.data, u->out.len);
    if (rt->retry.set && rt->retry.per_try_timeout_ms && d->try_timer)
        loop_timer_start(d->try_timer, rt->retry.per_try_timeout_ms, 0);
    if (later) {
        if (d->attempts == 1 && pump_request_body(d) < 0) {
            upstream_failed(d, "protocol error");
            return;
        }
        if (u->state == U_ACTIVE && u_flush(u) < 0) {
            upstream_failed(d, "connection failure");
            return;
        }
        if (d->u == u)
            u_update_interest(u);
        d_update_interest(d);
    }
}

/* Deferred: hands freed connection slots and idle connections to the
 * requests waiting for one, in order. */
static void wake_cb(void *arg)
{
    worker_t *w = arg;
    w->wake_queued = false;
    dconn_t **pp = &w->waitq;
    while (*pp) {
        dconn_t *d = *pp;
        bool idle = hmap_get(&w->idle, d->endpoint->address) != NULL;
        bool room = d->cb == NULL || atomic_load(&d->cb->cx) < d->cluster->max_connections ||
                    (d->ls && d->ls->nconns == 0);
        if (!idle && !room) {
            pp = &d->wnext;
            continue;
        }
        *pp = d->wnext;
        d->wnext = NULL;
        d->waiting = false;
        if (d->cb)
            atomic_fetch_sub(&d->cb->pending, 1);
        attempt_send(d, true);
    }
}

static void wake_waiters(worker_t *w)
{
    if (w->waitq && !w->wake_queued) {
        w->wake_queued = true;
        loop_defer(w->loop, wake_cb, w);
    }
}

/* After a failed attempt (cond: whether the policy covers the failure):
 * schedules the next attempt after a jittered exponential backoff and
 * returns true, or returns false when the request cannot be retried. */
static bool maybe_retry(dconn_t *d, bool cond)
{
    const px_route_t *rt = d->route;
    if (!cond || rt == NULL || !rt->retry.set || d->state != D_PROXY || d->resp_head_done || !d->retriable ||
        !d->req_body_done || d->try_timer == NULL || d->attempts == 0)
        return false;
    if (d->attempts > rt->retry.num_retries) {
        if (rt->retry.num_retries)
            CINC(d->w->st.retry_exhausted);
        return false;
    }
    if (d->cb && !d->cb_retry) {
        const px_cluster_t *c = d->cluster;
        uint64_t limit = c->max_retries;
        if (c->retry_budget) {
            uint64_t active = (uint64_t)atomic_load(&d->cb->rq) + atomic_load(&d->cb->pending);
            limit = (uint64_t)((double)active * c->budget_pct / 100.0);
            if (limit < c->min_retries)
                limit = c->min_retries;
        }
        if (atomic_load(&d->cb->retries) >= limit) {
            CINC(d->w->st.retry_overflow);
            return false;
        }
        atomic_fetch_add(&d->cb->retries, 1);
        d->cb_retry = true;
    }
    CINC(d->w->st.retry);
    if (d->u) {
        uconn_t *u = d->u;
        d->u = NULL;
        u->d = NULL;
        uconn_close(u);
    }
    uint64_t ceiling = rt->retry.base_ms << (d->attempts - 1 < 20 ? d->attempts - 1 : 20);
    if (ceiling > rt->retry.max_ms || ceiling == 0)
        ceiling = rt->retry.max_ms;
    uint64_t wait = wrand(d->w) % ceiling + 1;
    d->backoff = true;
    loop_timer_start(d->try_timer, wait, 0);
    d_update_interest(d);
    return true;
}

/* Whether a failure before the response head is covered by the policy. */
static bool retry_on_failure(const dconn_t *d, bool connect)
{
    uint32_t on = d->route ? d->route->retry.on : 0;
    return (on & (PX_RETRY_5XX | PX_RETRY_GATEWAY | PX_RETRY_RESET)) || (connect && (on & PX_RETRY_CONNECT)) ||
           (d->u && d->u->refused && (on & PX_RETRY_REFUSED));
}

/* The backoff is over (next attempt), or an attempt's per-try timeout hit. */
static void try_timer_cb(loop_timer_t *t, void *arg)
{
    (void)t;
    dconn_t *d = arg;
    if (d->closed || d->state != D_PROXY || d->resp_head_done)
        return;
    if (d->backoff) {
        d->backoff = false;
        start_attempt(d);
        /* answered here (no endpoint left): on to the next request */
        if (!d->closed && d->state == D_LOCAL)
            after_start(d, 0);
        return;
    }
    /* per-try timeout: counted as a 504, retried like a reset, else 504 UT */
    if (d->u && d->cluster)
        od_report(d->w, d->cluster, d->cb, d->upstream_host, 504);
    if (maybe_retry(d, retry_on_failure(d, false)))
        return;
    if (d->u) {
        uconn_t *u = d->u;
        d->u = NULL;
        uconn_close(u);
    }
    d->req_body_done = true;
    local_reply(d, 504, "UT", "upstream request timeout", NULL, true);
}


static void start_request(dconn_t *d)
{
    worker_t *w = d->w;
    px_h1_msg_t *m = &d->req;
    char rid[37];
    CINC(w->st.rq_total);
    d->start_ms = loop_now(w->loop);
    clock_gettime(CLOCK_REALTIME, &d->start_wall);
    copy_trunc(d->method, sizeof(d->method), m->method, m->method_len);
    d->path_log = slice_dup(m->target, m->target_len);
    d->path = m->target;
    d->path_len = m->target_len;
    const char *host = m->host;
    size_t host_len = m->host_len;
    if (m->target[0] != '/' && m->target[0] != '*' && !m->is_connect) {
        /* absolute form: the URI's authority wins over Host (RFC 9112 3.2.2) */
        /* the parser accepted only http:// or https:// here */
        const char *auth = (const char *)memmem(m->target, m->target_len, "://", 3) + 3;
        d->absolute = true;
        const char *end = m->target + m->target_len;
        const char *slash = memchr(auth, '/', (size_t)(end - auth));
        const char *qm = memchr(auth, '?', (size_t)(end - auth));
        const char *pe = slash && (!qm || slash < qm) ? slash : qm ? qm : end;
        host = auth;
        host_len = (size_t)(pe - auth);
        d->path = pe < end && *pe == '/' ? pe : "/";
        d->path_len = pe < end && *pe == '/' ? (size_t)(end - pe) : 1;
    }
    d->authority = host ? slice_dup(host, host_len) : NULL;
    const px_h1_header_t *h = px_h1_find(m, "x-request-id");
    if (h && h->value_len > 0 && h->value_len < 128) {
        d->request_id = slice_dup(h->value, h->value_len);
    } else {
        make_request_id(w, rid);
        d->request_id = strdup(rid);
    }
    if ((h = px_h1_find(m, "user-agent")))
        d->user_agent = slice_dup(h->value, h->value_len);
    if ((h = px_h1_find(m, "content-type")) && h->value_len >= 16 && strncasecmp(h->value, "application/grpc", 16) == 0)
        d->grpc = true;
    if ((h = px_h1_find(m, "x-forwarded-for")))
        d->xff = slice_dup(h->value, h->value_len);
    /* the client's workload, from Istio's metadata exchange, trusted over mTLS only */
    if (d->peer_uri[0] && is_inbound(d) && (h = px_h1_find(m, "x-envoy-peer-metadata")))
        read_peer_metadata(d, h->value, h->value_len);
    d->keep_alive = m->keep_alive && !w->draining && !d->listener_gone;
    d->req_body = m->body;
    d->req_left = m->content_length;
    px_h1_chunked_init(&d->req_chunk);
    d->req_body_done = m->body == PX_H1_BODY_NONE;

    if (d->chain->nhttp_rbac) {
        px_rbac_attrs_t a;
        net_attrs(d, &a);
        a.http = true;
        a.method = m->method;
        a.method_len = m->method_len;
        a.path = d->path;
        a.path_len = d->path_len;
        a.host = host;
        a.host_len = host ? host_len : 0;
        a.headers = m->headers;
        a.nheaders = m->nheaders;
        if (!rbac_allows(d, d->chain->http_rbac, d->chain->nhttp_rbac, &a)) {
            local_reply(d, 403, "-", "RBAC: access denied", NULL, !d->req_body_done);
            return;
        }
    }
    const px_route_config_t *rc = d->chain->route_config;
    if (rc == NULL) {
        local_reply(d, 404, "NR", NULL, NULL, !d->req_body_done);
        return;
    }
    px_route_req_t rr = {host, host_len, m->method, m->method_len, d->path, d->path_len,
                         m->headers, m->nheaders};
    const px_vhost_t *vh = NULL;
    const px_route_t *rt = px_route_match(rc, &rr, &vh);
    d->route = rt;
    d->vhost = vh;
    if (vh && vh->require_tls && d->tls == NULL) {
        /* require_tls: a plaintext request is sent to the same URL over https */
        char hdr[2200];
        snprintf(hdr, sizeof(hdr), "location: https://%.*s%.*s\r\n", (int)(host_len < 512 ? host_len : 512),
                 host ? host : "", (int)(d->path_len < 1600 ? d->path_len : 1600), d->path);
        if (!d->req_body_done)
            d->keep_alive = false;
        local_reply(d, 301, "-", NULL, hdr, false);
        return;
    }
    if (rt == NULL) {
        local_reply(d, 404, "NR", NULL, NULL, !d->req_body_done);
        return;
    }
    /* fault injection (before the router, as Envoy's fault filter): both
     * decisions are taken now, the delay first, the abort when it ends */
    if (rt->fault.delay || rt->fault.abort) {
        bool delay = rt->fault.delay && wrand(w) % 1000000u < rt->fault.delay_ppm;
        bool abrt = rt->fault.abort && wrand(w) % 1000000u < rt->fault.abort_ppm;
        d->fault_abort = abrt;
        d->fault_flags = delay ? (abrt ? "DI,FI" : "DI") : abrt ? "FI" : NULL;
        if (delay) {
            CINC(w->st.fault_delay);
            d->state = D_DELAY;
            loop_timer_start(d->timer, rt->fault.delay_ms ? rt->fault.delay_ms : 1, 0);
            return;
        }
    }
    route_request(d);
}

/* Answers an injected abort: the HTTP status, or a gRPC status for gRPC. */
static void fault_abort_reply(dconn_t *d)
{
    const px_fault_t *f = &d->route->fault;
    CINC(d->w->st.fault_abort);
    if (f->abort_grpc >= 0) {
        char extra[160];
        snprintf(extra, sizeof(extra),
                 "content-type: application/grpc\r\ngrpc-status: %d\r\ngrpc-message: fault filter abort\r\n",
                 f->abort_grpc);
        local_reply(d, 200, "FI", NULL, extra, !d->req_body_done);
        return;
    }
    local_reply(d, f->abort_http, "FI", "fault filter abort", NULL, !d->req_body_done);
}

/* The router: the matched route's action (after any injected delay). */
static void route_request(dconn_t *d)
{
    worker_t *w = d->w;
    px_h1_msg_t *m = &d->req;
    const px_route_t *rt = d->route;
    const px_vhost_t *vh = d->vhost;
    if (d->fault_abort) {
        fault_abort_reply(d);
        return;
    }
    if (rt->action == PX_ACT_DIRECT) {
        /* direct responses are written as configured */
        char *body = rt->direct_body ? slice_dup(rt->direct_body, rt->direct_body_len) : NULL;
        local_reply(d, rt->direct_status, "-", body, NULL, !d->req_body_done);
        free(body);
        return;
    }
    if (rt->action == PX_ACT_REDIRECT) {
        if (!d->req_body_done)
            d->keep_alive = false;
        redirect_reply(d);
        return;
    }
    const px_weighted_t *wc = NULL;
    const char *cname = rt->cluster;
    if (rt->action == PX_ACT_WEIGHTED) {
        uint32_t x = (uint32_t)(wrand(w) % rt->total_weight);
        for (size_t i = 0; i < rt->nweighted; i++) {
            if (x < rt->weighted[i].weight) {
                wc = &rt->weighted[i];
                break;
            }
            x -= rt->weighted[i].weight;
        }
        if (wc == NULL)
            wc = &rt->weighted[rt->nweighted - 1];
        cname = wc->cluster;
        d->weighted = wc;
    }
    const px_cluster_t *c = find_cluster(d->snap, cname);
    if (c == NULL) {
        local_reply(d, 503, "NC", NULL, NULL, !d->req_body_done);
        return;
    }
    d->cluster = c;
    /* the upstream request, kept whole when it can be sent again: no body, or
     * a body that came with the head and fits RETRY_BODY_MAX */
    d->attempt_req.len = 0;
    if (write_upstream_head(d, vh, wc, &d->attempt_req) < 0) {
        local_reply(d, 500, "-", "internal error", NULL, true);
        return;
    }
    d->attempt_head_len = d->attempt_req.len;
    bool whole = false; /* attempt_req holds the whole request */
    if (!m->upgrade && !m->is_connect) {
        if (m->body == PX_H1_BODY_NONE) {
            whole = true;
        } else if (m->body == PX_H1_BODY_LENGTH && m->content_length <= RETRY_BODY_MAX &&
                   d->head_len + m->content_length <= d->in.len) {
            whole = buf_add(&d->attempt_req, d->in.data + d->head_len, (size_t)m->content_length) == 0;
        } else if (m->body == PX_H1_BODY_CHUNKED) {
            /* a chunked body already complete (a small gRPC call): kept as
             * framed, to be sent again as it was */
            size_t n = chunked_complete(d->in.data + d->head_len, d->in.len - d->head_len);
            whole = n && n <= RETRY_BODY_MAX && buf_add(&d->attempt_req, d->in.data + d->head_len, n) == 0;
        }
    }
    d->retriable = whole && rt->retry.set;
    /* a body still on its way (an HTTP/2 stream's, mostly) is kept as it is
     * forwarded, and makes the request retriable once complete */
    d->capture = !whole && rt->retry.set && !m->upgrade && !m->is_connect &&
                 (m->body == PX_H1_BODY_CHUNKED || (m->body == PX_H1_BODY_LENGTH && m->content_length <= RETRY_BODY_MAX));
    if (whole)
        for (size_t i = 0; i < rt->nmirrors; i++)
            if (wrand(w) % 1000000u < rt->mirrors[i].ppm)
                send_shadow(d, &rt->mirrors[i]);
    d->attempts = 0;
    d->last_ep = -1;
    if (m->expect_continue && !d->req_body_done) {
        /* answered here; the upstream gets the body without waiting */
        buf_str(&d->out, "HTTP/1.1 100 Continue\r\n\r\n");
    }
    if (rt->timeout_ms)
        loop_timer_start(d->timer, rt->timeout_ms, 0);
    start_attempt(d);
    /* the caller consumes the head, pumps the body and flushes */
}

/* Parses and handles whatever complete request heads d->in holds. */
/* Between requests a connection moves to the worker's newest snapshot if
 * its listener is still there; if the listener was removed, it finishes on
 * the old snapshot and closes after this request (drain). */
static void refresh_snapshot(dconn_t *d)
{
    worker_t *w = d->w;
    if (d->snap == w->snap || w->snap == NULL)
        return;
    for (size_t i = 0; i < w->snap->nlisteners; i++) {
        const px_listener_t *l = &w->snap->listeners[i];
        if (strcmp(l->name, d->listener->name) != 0)
            continue;
        for (size_t k = 0; k <= l->nchains; k++) {
            const px_chain_t *ch = k < l->nchains ? &l->chains[k] : l->default_chain;
            if (ch && ch->kind == d->chain->kind && strcmp(ch->name, d->chain->name) == 0 &&
                (ch->tls != NULL) == (d->chain->tls != NULL)) {
                px_snapshot_t *old = d->snap;
                d->snap = px_snapshot_ref(w->snap);
                d->listener = l;
                d->chain = ch;
                px_snapshot_unref(old);
                return;
            }
        }
    }
    d->listener_gone = true;
}

static void dconn_process(dconn_t *d)
{
    if (d->closed || d->state != D_HEAD)
        return;
    refresh_snapshot(d);
    static const char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    if (d->parent == NULL && d->in.len && d->in.data[0] == 'P' &&
        memcmp(d->in.data, preface, d->in.len < 24 ? d->in.len : 24) == 0) {
        /* HTTP/2 with prior knowledge (codec_type AUTO) */
        if (d->in.len >= 24) {
            h2d_start(d);
            return;
        }
        loop_timer_start(d->timer, d->w->srv->opt.idle_timeout_ms, 0);
        d_update_interest(d);
        return;
    }
    const char *err = NULL;
    int r = d->in.len ? px_h1_parse_request(d->in.data, d->in.len, &d->req, &err) : -2;
    if (r == -2) {
        if (d->w->draining && d->in.len == 0) {
            dconn_close(d);
            return;
        }
        loop_timer_start(d->timer, d->w->srv->opt.idle_timeout_ms, 0);
        d_update_interest(d);
        return;
    }
    if (r < 0) {
        CINC(d->w->st.rq_total);
        snprintf(d->method, sizeof(d->method), "-");
        d->keep_alive = false;
        d->in.len = 0;
        local_reply(d, d->req.status, "DPE", reason_phrase(d->req.status), NULL, true);
        return;
    }
    /* The head stays in d->in (the message's slices point into it) until it is
     * forwarded; then it is consumed. */
    loop_timer_stop(d->timer);
    d->head_len = (size_t)r;
    start_request(d);
    if (d->state == D_DELAY) {
        d->head_len = (size_t)r;
        d_update_interest(d);
        return;
    }
    after_start(d, (size_t)r);
}

/* After a request was routed (forwarded or answered): drops its head from
 * d->in (r bytes), forwards the body bytes that came with it, flushes. */
/* Sends the request bytes queued for d's upstream and watches it again.
 * False when d is done with here: the upstream failed (answered or retried)
 * or, for an HTTP/2 stream, its codec ended the stream inside the flush. */
static bool forward_request(dconn_t *d)
{
    if (d->u == NULL || d->u->state != U_ACTIVE)
        return true;
    if (u_flush(d->u) < 0) {
        upstream_failed(d, "connection failure");
        return false;
    }
    if (d->closed)
        return false;
    if (d->u)
        u_update_interest(d->u);
    return true;
}

static void after_start(dconn_t *d, size_t r)
{
    if (d->closed)
        return;
    /* The request head is no longer needed once forwarded or answered. */
    if (r <= d->in.len) {
        /* slices into d->in are dead from here on */
        buf_consume(&d->in, r);
        /* the body bytes that came with the head */
        if (d->state == D_PROXY && pump_request_body(d) < 0) {
            upstream_failed(d, "protocol error");
            return;
        }
        if (d->state == D_PROXY && !forward_request(d))
            return;
    }
    if (d->state == D_LOCAL && d->out.len == 0)
        goto next;
    d_update_interest(d);
    return;
next:
    /* local answer fully written at once */
    if (!d->keep_alive || d->parent) {
        dconn_close(d);
        return;
    }
    if (d->req.body != PX_H1_BODY_NONE) {
        /* a body we did not read: cannot find the next request reliably */
        dconn_close(d);
        return;
    }
    d->state = D_HEAD;
    dconn_process(d);
}

/* ---- response relay ---- */

static int write_downstream_head(dconn_t *d, const px_h1_msg_t *r)
{
    buf_t *b = &d->out;
    const px_route_t *rt = d->route;
    const px_vhost_t *vh = d->vhost;
    const px_weighted_t *wc = d->weighted;
    const px_route_config_t *rc = d->chain->route_config;
    /* the parser took a three-digit code and a reason of value characters */
    if (buf_str(b, "HTTP/1.1 ") < 0 || buf_u64(b, (uint64_t)r->status_code) < 0 || buf_str(b, " ") < 0 ||
        buf_add(b, r->reason ? r->reason : "", r->reason_len) < 0 || buf_str(b, "\r\n") < 0)
        return -1;
    bool inbound = is_inbound(d);
    const px_options_t *o = &d->w->srv->opt;
    for (size_t i = 0; i < r->nheaders; i++) {
        const px_h1_header_t *h = &r->headers[i];
        if (px_h1_is_hop_by_hop(r, h->name, h->name_len) && !(d->req.upgrade && r->status_code == 101))
            continue;
        if (px_h1_ieq(h->name, h->name_len, "x-envoy-peer-metadata")) {
            /* the server's workload (for this side's metrics), never the app's business */
            if (!inbound && istio_mtls(d->cluster))
                read_peer_metadata(d, h->value, h->value_len);
            continue;
        }
        if (px_h1_ieq(h->name, h->name_len, "x-envoy-peer-metadata-id"))
            continue;
        if (px_h1_ieq(h->name, h->name_len, "content-length") && d->resp_chunked_out)
            continue;
        if ((rt && removed_by(&rt->resp, h)) || (vh && removed_by(&vh->resp, h)) ||
            (wc && removed_by(&wc->resp, h)) || (rc && removed_by(&rc->resp, h)))
            continue;
        if (buf_add(b, h->name, h->name_len) < 0 || buf_str(b, ": ") < 0 ||
            buf_add(b, h->value, h->value_len) < 0 || buf_str(b, "\r\n") < 0)
            return -1;
    }
    if (r->status_code == 101)
        return buf_str(b, "\r\n");
    /* most specific first: weighted cluster, route, virtual host, route config */
    if ((wc && add_ops(b, &wc->resp) < 0) || (rt && add_ops(b, &rt->resp) < 0) ||
        (vh && add_ops(b, &vh->resp) < 0) || (rc && add_ops(b, &rc->resp) < 0))
        return -1;
    d->upstream_ms = (int64_t)(loop_now(d->w->loop) - d->start_ms);
    if (buf_str(b, "x-envoy-upstream-service-time: ") < 0 ||
        buf_u64(b, d->upstream_ms > 0 ? (uint64_t)d->upstream_ms : 0) < 0 || buf_str(b, "\r\n") < 0)
        return -1;
    if (d->resp_chunked_out && buf_str(b, "transfer-encoding: chunked\r\n") < 0)
        return -1;
    if (d->set_cookie && buf_str(b, d->set_cookie) < 0)
        return -1;
    /* a client that told us who it is learns who we are */
    if (inbound && o->peer_metadata && d->peer_wl[0] &&
        (buf_str(b, "x-envoy-peer-metadata-id: ") < 0 || buf_str(b, o->peer_metadata_id) < 0 ||
         buf_str(b, "\r\nx-envoy-peer-metadata: ") < 0 || buf_str(b, o->peer_metadata) < 0 ||
         buf_str(b, "\r\n") < 0))
        return -1;
    if (!d->keep_alive && buf_str(b, "connection: close\r\n") < 0)
        return -1;
    return buf_str(b, "\r\n");
}

/* The response is complete: recycle the upstream, go on with the next request. */
static void response_done(dconn_t *d)
{
    uconn_t *u = d->u;
    loop_timer_stop(d->timer);
    d->u = NULL;
    if (u) {
        u->d = NULL;
        if (d->resp_keep_alive && d->req_body_done && u->in.len == 0)
            pool_put(u);
        else
            uconn_close(u);
    }
    request_done(d);
    if (d->parent) {
        /* an HTTP/2 stream: the codec sends the rest */
        dconn_close(d);
        return;
    }
    if (!d->keep_alive || !d->req_body_done) {
        d->state = D_CLOSING;
        if (d->out.len == 0)
            dconn_close(d);
        else
            d_update_interest(d);
        return;
    }
    d->state = D_HEAD;
    /* write the response now: when it all goes, the connection's interest
     * stays on reading (no EPOLLOUT on and off around every response) */
    if (d->out.len && d_flush(d) < 0) {
        dconn_close(d);
        return;
    }
    if (d->out.len == 0)
        dconn_process(d);
    else
        d_update_interest(d);
}

/* The grpc-status of a trailers-only response head, or -1. */
static int grpc_status_of(const px_h1_msg_t *r)
{
    const px_h1_header_t *h = px_h1_find(r, "grpc-status");
    if (h == NULL || h->value_len == 0 || h->value_len > 2)
        return -1;
    int v = 0;
    for (size_t i = 0; i < h->value_len; i++) {
        if (h->value[i] < '0' || h->value[i] > '9')
            return -1;
        v = v * 10 + (h->value[i] - '0');
    }
    return v;
}

/* Relays what u->in holds to the downstream. */
static void relay_response(dconn_t *d, uconn_t *u, bool eof)
{
    for (;;) {
        if (!d->resp_head_done) {
            px_h1_msg_t *r = msg_take();
            const char *err;
            if (r == NULL) {
                upstream_failed(d, "internal error");
                return;
            }
            int n = px_h1_parse_response(u->in.data, u->in.len, d->req.is_head, false, r, &err);
            if (n == -2) {
                msg_give(r);
                if (eof)
                    upstream_failed(d, "connection termination");
                return;
            }
            if (n < 0) {
                msg_give(r);
                if (u)
                    uconn_close(u);
                d->u = NULL;
                local_reply(d, 502, "UPE", "upstream sent an invalid response", NULL, true);
                return;
            }
            if (r->status_code >= 100 && r->status_code < 200 && r->status_code != 101) {
                /* interim responses are absorbed (100-continue was answered here) */
                buf_consume(&u->in, (size_t)n);
                msg_give(r);
                continue;
            }
            if (d->cluster && r->status_code >= 200)
                od_report(d->w, d->cluster, d->cb, d->upstream_host, r->status_code);
            if (d->route && d->route->retry.set && r->status_code >= 200 &&
                (px_retry_status(&d->route->retry, r->status_code) ||
                 px_retry_grpc(&d->route->retry, grpc_status_of(r)))) {
                /* a retriable status: the response is dropped with its connection */
                if (maybe_retry(d, true)) {
                    msg_give(r);
                    return;
                }
                if (d->route->retry.num_retries && d->attempts > d->route->retry.num_retries)
                    d->flags = "URX"; /* relayed: the retry limit was reached */
            } else if (d->attempts > 1) {
                CINC(d->w->st.retry_success);
            }
            if (d->try_timer)
                loop_timer_stop(d->try_timer);
            d->resp_head_done = true;
            d->resp_code = r->status_code;
            d->resp_body = r->body;
            d->resp_left = r->content_length;
            d->resp_keep_alive = r->keep_alive;
            px_h1_chunked_init(&d->resp_chunk);
            if (r->body == PX_H1_BODY_EOF) {
                /* a close-delimited body goes out chunked to HTTP/1.1 clients */
                if (d->req.minor_version == 1)
                    d->resp_chunked_out = true;
                else
                    d->keep_alive = false;
            } else if (r->body == PX_H1_BODY_CHUNKED) {
                d->resp_chunked_out = true;
            }
            if (r->status_code == 101 && !d->req.upgrade) {
                msg_give(r);
                uconn_close(u);
                d->u = NULL;
                local_reply(d, 502, "UPE", "unexpected upgrade", NULL, true);
                return;
            }
            int wr = write_downstream_head(d, r);
            msg_give(r);
            if (wr < 0) {
                upstream_failed(d, "internal error");
                return;
            }
            buf_consume(&u->in, (size_t)n);
            if (d->resp_code == 101) {
                loop_timer_stop(d->timer);
                d->state = D_TUNNEL;
                d->req_body_done = true;
                if (u->in.len) {
                    buf_add(&d->out, u->in.data, u->in.len);
                    u->in.len = 0;
                }
                /* bytes the client already sent after its head go up */
                if (d->in.len) {
                    buf_add(&u->out, d->in.data, d->in.len);
                    d->in.len = 0;
                }
                return;
            }
            if (d->resp_body == PX_H1_BODY_NONE) {
                response_done(d);
                return;
            }
        }
        /* body */
        if (d->resp_body == PX_H1_BODY_LENGTH) {
            size_t n = u->in.len < d->resp_left ? u->in.len : (size_t)d->resp_left;
            if (n && buf_add(&d->out, u->in.data, n) < 0) {
                upstream_failed(d, "internal error");
                return;
            }
            buf_consume(&u->in, n);
            d->resp_left -= n;
            d->bytes_out += n;
            if (d->resp_left == 0) {
                response_done(d);
                return;
            }
            if (eof)
                upstream_failed(d, "connection termination");
            return;
        }
        if (d->resp_body == PX_H1_BODY_CHUNKED) {
            size_t pos = 0;
            for (;;) {
                size_t used;
                const char *data, *err;
                size_t dl;
                int r = px_h1_chunked_decode(&d->resp_chunk, u->in.data + pos, u->in.len - pos, &used, &data, &dl, &err);
                if (r == -1) {
                    upstream_failed(d, "protocol error");
                    return;
                }
                pos += used;
                if (r == 1) {
                    char hdr[24];
                    size_t hl = px_h1_chunk_header(hdr, dl);
                    buf_add(&d->out, hdr, hl);
                    buf_add(&d->out, data, dl);
                    buf_str(&d->out, "\r\n");
                    d->bytes_out += dl;
                    continue;
                }
                if (r == 0) {
                    buf_str(&d->out, "0\r\n");
                    buf_add(&d->out, data, dl);
                    buf_str(&d->out, "\r\n");
                    buf_consume(&u->in, pos);
                    response_done(d);
                    return;
                }
                break;
            }
            buf_consume(&u->in, pos);
            if (eof)
                upstream_failed(d, "connection termination");
            return;
        }
        /* until EOF */
        if (u->in.len) {
            if (d->resp_chunked_out) {
                char hdr[24];
                size_t hl = px_h1_chunk_header(hdr, u->in.len);
                buf_add(&d->out, hdr, hl);
                buf_add(&d->out, u->in.data, u->in.len);
                buf_str(&d->out, "\r\n");
            } else {
                buf_add(&d->out, u->in.data, u->in.len);
            }
            d->bytes_out += u->in.len;
            u->in.len = 0;
        }
        if (eof) {
            if (d->resp_chunked_out)
                buf_str(&d->out, "0\r\n\r\n");
            d->resp_keep_alive = false;
            response_done(d);
        }
        return;
    }
}

/* A shadow connection: send the copy, read and drop the answer until the
 * upstream closes (the copy asked connection: close) or SHADOW_MS pass. */
/* TCP is up (or the handshake progressed): 1 when the connection is ready
 * for requests, 0 while the TLS handshake goes on, -1 on failure (why set). */
static int u_connected(uconn_t *u, char *why, size_t n)
{
    if (u->state == U_CONNECTING) {
        if (u->tls_cfg == NULL) {
            u->state = U_ACTIVE;
            return 1;
        }
        char err[256];
        SSL_CTX *ctx = px_tls_ctx(u->w->tls, u->tls_cfg, err, sizeof(err));
        u->tls = ctx ? px_tls_conn_new(ctx, u->tls_cfg, u->fd) : NULL;
        if (u->tls == NULL) {
            snprintf(why, n, "TLS error: %s", ctx ? "cannot create the TLS connection" : err);
            return -1;
        }
        u->state = U_TLS;
    }
    if (u->state != U_TLS)
        return 1;
    char err[256];
    int r = px_tls_handshake(u->tls, &u->tls_want, err, sizeof(err));
    if (r < 0) {
        snprintf(why, n, "TLS error: %s", err);
        CINC(u->w->st.ssl_fail);
        return -1;
    }
    if (r == 0)
        return 0;
    u->tls_want = 0;
    u->state = U_ACTIVE;
    u->tls_cfg = NULL;
    px_snapshot_unref(u->tls_snap);
    u->tls_snap = NULL;
    return 1;
}

/* Follows a shadow's response through bytes read (discarded): true once it
 * is complete. Heads are gathered in u->in (up to a full head); bodies with
 * a length are counted; chunked or close-delimited ones end with the
 * connection or the shadow's deadline. */
static bool shadow_response_done(uconn_t *u, const char *p, size_t n)
{
    if (u->shadow_head) {
        u->shadow_left -= n < u->shadow_left ? n : u->shadow_left;
        return u->shadow_left == 0;
    }
    if (u->in.len + n > PX_H1_MAX_HEAD + 16384 || buf_add(&u->in, p, n) < 0)
        return true; /* a head this large is not worth waiting for */
    px_h1_msg_t *m = malloc(sizeof(*m));
    if (m == NULL)
        return true;
    const char *why;
    int r = px_h1_parse_response(u->in.data, u->in.len, false, false, m, &why);
    bool done = false;
    if (r == -1) {
        done = true;
    } else if (r >= 0) {
        if (m->status_code >= 100 && m->status_code < 200 && m->status_code != 101) {
            buf_consume(&u->in, (size_t)r); /* an interim answer: the real one follows */
            free(m);
            return u->in.len ? shadow_response_done(u, "", 0) : false;
        }
        u->shadow_head = true;
        uint64_t have = u->in.len - (size_t)r;
        if (m->body == PX_H1_BODY_NONE)
            done = true;
        else if (m->body == PX_H1_BODY_LENGTH && have >= m->content_length)
            done = true;
        else if (m->body == PX_H1_BODY_LENGTH)
            u->shadow_left = m->content_length - have;
        else
            u->shadow_left = UINT64_MAX; /* until the connection ends */
        u->in.len = 0;
    }
    free(m);
    return done;
}

static void shadow_on_io(uconn_t *u, int fd, unsigned ev)
{
    if (u->state == U_CONNECTING) {
        int soerr = 0;
        socklen_t sl = sizeof(soerr);
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl);
        if (soerr != 0) {
            CINC(u->w->st.shadow_failed);
            uconn_close(u);
            return;
        }
        loop_timer_start(u->timer, SHADOW_MS, 0);
    }
    if (u->state == U_CONNECTING || u->state == U_TLS) {
        char why[300];
        int r = u_connected(u, why, sizeof(why));
        if (r < 0) {
            CINC(u->w->st.shadow_failed);
            uconn_close(u);
            return;
        }
        if (r == 0) {
            u_update_interest(u);
            return;
        }
        ev |= LOOP_WRITE;
    }
    if ((ev & LOOP_WRITE) && u->out.len && u_flush(u) < 0) {
        uconn_close(u);
        return;
    }
    if (ev & LOOP_READ) {
        char sink[16384];
        for (;;) {
            ssize_t n = conn_recv(fd, u->tls, sink, sizeof(sink), &u->tls_want);
            if (n > 0 && shadow_response_done(u, sink, (size_t)n)) {
                /* the whole response is in: done, whether or not the
                 * upstream honours "connection: close" */
                uconn_close(u);
                return;
            }
            if (n > 0)
                continue;
            if (n < 0 && errno == EINTR)
                continue;
            if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) {
                uconn_close(u);
                return;
            }
            break;
        }
    }
    loop_io_modify(u->io, LOOP_READ | (u->out.len || (u->tls_want & PX_TLS_WANT_WRITE) ? LOOP_WRITE : 0));
}

/* After response bytes were relayed to d: flush, then close, go on to the
 * next request (a pipelined one may be waiting in d->in) or wait for more.
 * True when d needs nothing more from the caller. */
static bool after_relay(dconn_t *d)
{
    if (d->closed)
        return true;
    if (d_flush(d) < 0) {
        dconn_close(d);
        return true;
    }
    if (d->state == D_CLOSING && d->out.len == 0) {
        dconn_close(d);
        return true;
    }
    if (d->state == D_HEAD) {
        if (d->out.len == 0)
            dconn_process(d);
        return true;
    }
    d_update_interest(d);
    return false;
}

static void uconn_on_io(loop_io_t *io, int fd, unsigned ev, void *arg)
{
    (void)io;
    uconn_t *u = arg;
    if (u->fd < 0)
        return;
    if (u->shadow) {
        shadow_on_io(u, fd, ev);
        return;
    }
    if (u->h2) {
        h2u_on_io(u, fd, ev);
        return;
    }
    if (u->d && sp_eligible(u->d))
        sp_start(u->d);
    if (u->d && u->d->sp_on) {
        sp_on_io(u->d);
        return;
    }
    if (u->state == U_CONNECTING) {
        int soerr = 0;
        socklen_t sl = sizeof(soerr);
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl);
        if (soerr != 0) {
            if (u->d)
                upstream_failed(u->d, "connection failure");
            else
                uconn_close(u);
            return;
        }
    }
    if (u->state == U_CONNECTING || u->state == U_TLS) {
        char why[300];
        int r = u_connected(u, why, sizeof(why));
        if (r < 0) {
            if (u->d)
                upstream_failed(u->d, why);
            else
                uconn_close(u);
            return;
        }
        if (r == 0) {
            u_update_interest(u);
            return;
        }
        loop_timer_stop(u->timer);
        ev |= LOOP_WRITE;
        if (u->d == NULL) {
            uconn_close(u);
            return;
        }
        if (u->d->state == D_TUNNEL && u->d->down_eof && u->out.len == 0)
            shutdown(fd, SHUT_WR);
    }
    if (u->state == U_IDLE) {
        /* an idle pooled connection became readable: closed or junk */
        uconn_close(u);
        return;
    }
    dconn_t *d = u->d;
    if (d == NULL) {
        uconn_close(u);
        return;
    }
    if ((ev & LOOP_WRITE) && u->out.len) {
        if (u_flush(u) < 0) {
            upstream_failed(d, "connection failure");
            return;
        }
        if (d->state == D_TUNNEL && d->down_eof && u->out.len == 0)
            shutdown(u->fd, SHUT_WR);
        /* the upstream took bytes: the client may be read again */
        if (d->state == D_PROXY || d->state == D_TUNNEL)
            d_update_interest(d);
        /* room again: read more request body from the client */
        if (d->state == D_PROXY && d->in.len && pump_request_body(d) == 0 && u_flush(u) < 0) {
            upstream_failed(d, "connection failure");
            return;
        }
    }
    if (ev & LOOP_READ) {
        bool eof = false;
        while (d_backlog(d) < OUT_HIGH) {
            if (buf_reserve(&u->in, 16384) < 0) {
                upstream_failed(d, "internal error");
                return;
            }
            size_t ask = u->in.cap - u->in.len;
            ssize_t n = conn_recv(fd, u->tls, u->in.data + u->in.len, ask, &u->tls_want);
            if (n > 0) {
                u->in.len += (size_t)n;
                if (u->in.len > 4 * 1024 * 1024 || recv_drained(u->tls, n, ask))
                    break;
                continue;
            }
            if (n == 0) {
                eof = true;
                u->peer_closed = true;
                break;
            }
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK) {
                if (d->state == D_TUNNEL) {
                    dconn_close(d);
                    return;
                }
                upstream_failed(d, "connection failure");
                return;
            }
            break;
        }
        if (d->state == D_TUNNEL) {
            if (u->in.len) {
                buf_add(&d->out, u->in.data, u->in.len);
                d->bytes_out += u->in.len;
                u->in.len = 0;
            }
            if (eof) {
                d->state = D_CLOSING;
                uconn_close(u);
                d->u = NULL;
            }
        } else {
            if (eof && d->state == D_PROXY && d->u == u && u->in.len == 0 && !d->resp_head_done) {
                upstream_failed(d, u->reused ? "connection termination (reused)" : "connection termination");
                return;
            }
            relay_response(d, u, eof);
        }
        if (after_relay(d))
            return;
    }
    if (d->u == u && !d->closed)
        u_update_interest(u);
}

/* ---- downstream connections ---- */

static dconn_t *dconn_new(void)
{
    obj_cache_t *c = obj_cache;
    if (c && c->nconns) {
        dconn_t *d = c->conns[--c->nconns];
        memset(d, 0, sizeof(*d));
        return d;
    }
    return calloc(1, sizeof(dconn_t));
}

static void dconn_free_cb(void *arg)
{
    dconn_t *d = arg;
    if (d->sp_on) { /* the pipes exist only once on (fds 0 otherwise) */
        px_splice_close(&d->sp[0]);
        px_splice_close(&d->sp[1]);
    }
    buf_free(&d->in);
    buf_free(&d->out);
    buf_free(&d->retry_head);
    buf_free(&d->attempt_req);
    px_tls_conn_free(d->tls);
    px_snapshot_unref(d->tls_snap);
    px_snapshot_unref(d->snap);
    px_h2_free(d->h2);
    obj_cache_t *c = obj_cache;
    if (c && c->nconns < OBJ_CACHE_MAX)
        c->conns[c->nconns++] = d;
    else
        free(d);
}

static void dconn_close(dconn_t *d)
{
    if (d->closed)
        return;
    d->closed = true;
    worker_t *w = d->w;
    while (d->kids)
        dconn_close(d->kids);
    if (d->chain && d->chain->kind == PX_LISTENER_TCP && d->cluster) {
        px_metric_t *m = metric_for(d, true);
        if (m) {
            m->tcp_closed++;
            m->tcp_received += d->bytes_in;
            m->tcp_sent += d->bytes_out;
        }
    }
    if (d->start_ms) {
        if (d->resp_code == 0 && !(d->flags && strcmp(d->flags, "DR") == 0)) {
            d->flags = d->u ? "DC" : "-";
            d->resp_code = 0;
        }
        request_done(d);
    }
    request_reset(d);
    if (d->u) {
        uconn_t *u = d->u;
        d->u = NULL;
        uconn_close(u);
    }
    loop_timer_free(d->timer);
    loop_timer_free(d->try_timer);
    d->timer = d->try_timer = NULL;
    if (d->parent) {
        /* an HTTP/2 stream: hand over what is left, let the codec stream go */
        dconn_t *p = d->parent;
        if (d->h2s) {
            if (d->out.len)
                px_h2_write(d->h2s, d->out.data, d->out.len);
            d->out.len = 0;
            px_h2_detach(d->h2s);
            d->h2s = NULL;
        }
        d->tls = NULL; /* the connection's */
        if (d->kprev)
            d->kprev->knext = d->knext;
        else
            p->kids = d->knext;
        if (d->knext)
            d->knext->kprev = d->kprev;
        p->nkids--;
        h2d_flush(p);
        loop_defer(w->loop, dconn_free_cb, d);
        return;
    }
    loop_io_del(d->io);
    if (d->tls && d->state != D_HANDSHAKE)
        px_tls_shutdown(d->tls);
    close(d->fd);
    if (d->prev)
        d->prev->next = d->next;
    else
        w->conns = d->next;
    if (d->next)
        d->next->prev = d->prev;
    w->nconns--;
    CDEC(w->st.cx_active);
    loop_defer(w->loop, dconn_free_cb, d);
}

static void dconn_timeout(loop_timer_t *t, void *arg)
{
    (void)t;
    dconn_t *d = arg;
    if (d->state == D_PEEK) {
        peek_step(d, loop_now(d->w->loop) - d->peek_start >= PEEK_TIMEOUT_MS);
        return;
    }
    if (d->state == D_H2 && d->nkids) {
        /* idle means no stream */
        loop_timer_start(d->timer, d->w->srv->opt.idle_timeout_ms, 0);
        return;
    }
    if (d->state == D_DELAY) {
        /* the injected delay is over: on to the abort or the router */
        d->state = D_HEAD;
        route_request(d);
        after_start(d, d->head_len);
        return;
    }
    if (d->state == D_PROXY && !d->resp_head_done) {
        /* route timeout before the response head: 504 UT */
        if (d->u) {
            uconn_close(d->u);
            d->u = NULL;
        }
        d->req_body_done = true;
        local_reply(d, 504, "UT", "upstream request timeout", NULL, true);
        return;
    }
    dconn_close(d);
}

static void dconn_on_io(loop_io_t *io, int fd, unsigned ev, void *arg)
{
    (void)io;
    dconn_t *d = arg;
    if (d->closed)
        return;
    if (sp_eligible(d))
        sp_start(d);
    if (d->sp_on) {
        sp_on_io(d);
        return;
    }
    if (d->state == D_PEEK) {
        if (ev & LOOP_READ)
            peek_step(d, false);
        return;
    }
    if (d->state == D_HANDSHAKE) {
        handshake_step(d);
        return;
    }
    if (d->state == D_H2) {
        h2d_on_io(d, ev);
        return;
    }
    if ((ev & LOOP_WRITE) && d->out.len) {
        if (d_flush(d) < 0) {
            dconn_close(d);
            return;
        }
        if (d->out.len == 0) {
            if (d->state == D_CLOSING) {
                dconn_close(d);
                return;
            }
            if (d->state == D_LOCAL) {
                if (!d->keep_alive || !d->req_body_done) {
                    dconn_close(d);
                    return;
                }
                d->state = D_HEAD;
                dconn_process(d);
                return;
            }
            if (d->state == D_HEAD) {
                dconn_process(d);
                if (d->closed)
                    return;
            }
            /* upstream may continue now */
            if (d->u && d->u->state == U_ACTIVE)
                u_update_interest(d->u);
        }
    }
    if (ev & LOOP_READ) {
        bool eof = false;
        size_t cap = d->state == D_TUNNEL ? 65536 : IN_CAP;
        while (d->in.len < cap) {
            if (buf_reserve(&d->in, cap - d->in.len) < 0) {
                dconn_close(d);
                return;
            }
            size_t ask = cap - d->in.len;
            ssize_t n = conn_recv(fd, d->tls, d->in.data + d->in.len, ask, &d->tls_want);
            if (n > 0) {
                d->in.len += (size_t)n;
                if (recv_drained(d->tls, n, ask))
                    break;
                continue;
            }
            if (n == 0) {
                eof = true;
                break;
            }
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK) {
                dconn_close(d);
                return;
            }
            break;
        }
        if (d->state == D_HEAD) {
            if (eof && d->in.len == 0) {
                dconn_close(d);
                return;
            }
            loop_timer_start(d->timer, d->w->srv->opt.idle_timeout_ms, 0);
            dconn_process(d);
            if (!d->closed && eof) {
                /* the client is done sending: answer what it asked, then close */
                if (d->state == D_HEAD || (d->state == D_PROXY && !d->req_body_done))
                    dconn_close(d);
                else
                    d->keep_alive = false;
            }
            return;
        }
        if (d->state == D_TUNNEL) {
            if (d->u && d->in.len) {
                buf_add(&d->u->out, d->in.data, d->in.len);
                d->bytes_in += d->in.len;
                d->in.len = 0;
                if (d->u->state == U_ACTIVE && u_flush(d->u) < 0) {
                    dconn_close(d);
                    return;
                }
                u_update_interest(d->u);
            }
            if (eof) {
                d->down_eof = true;
                /* pass the half-close on once what the client sent is out */
                if (d->u && d->u->state == U_ACTIVE && d->u->out.len == 0)
                    shutdown(d->u->fd, SHUT_WR);
                if (d->u == NULL) {
                    dconn_close(d);
                    return;
                }
                loop_io_modify(d->io, d->out.len ? LOOP_WRITE : 0);
                return;
            }
        } else if (d->state == D_PROXY) {
            if (pump_request_body(d) < 0) {
                d->keep_alive = false;
                upstream_failed(d, "protocol error");
                return;
            }
            if (!forward_request(d))
                return;
            if (eof && !d->req_body_done) {
                dconn_close(d);
                return;
            }
            if (eof)
                d->keep_alive = false;
        } else if (eof) {
            d->keep_alive = false;
        }
        if (!d->closed)
            d_update_interest(d);
    }
}

/* ---- HTTP/2 upstream ---- */

static int out_sink(void *arg, const void *p, size_t n)
{
    return buf_add(arg, p, n);
}

/* Response bytes (HTTP/1.1 framed) of a stream. */
static void h2u_on_data(void *ud, void *sud, const char *p, size_t n)
{
    (void)ud;
    uconn_t *u = sud;
    dconn_t *d = u->d;
    if (d == NULL) {
        if (u->h2s)
            px_h2_ack(u->h2s); /* a mirrored request: the answer is dropped */
        return;
    }
    if (buf_add(&u->in, p, n) < 0) {
        upstream_failed(d, "internal error");
        return;
    }
    relay_response(d, u, false);
    (void)after_relay(d);
}

/* The server reset a stream (or closed it before the response ended). */
static void h2u_on_close(void *ud, void *sud, uint32_t error_code)
{
    (void)ud;
    uconn_t *u = sud;
    u->h2s = NULL;
    u->refused = error_code == 0x7; /* REFUSED_STREAM: retriable as refused-stream */
    dconn_t *d = u->d;
    if (d == NULL) {
        uconn_close(u);
        return;
    }
    u->peer_closed = true;
    relay_response(d, u, true); /* an unfinished response: as if the connection closed */
    (void)after_relay(d);
}

static void *h2u_on_request(void *ud, px_h2_stream_t *s, const char *head, size_t len)
{
    (void)ud;
    (void)s;
    (void)head;
    (void)len;
    return NULL; /* a server does not open streams here (no push) */
}

static const px_h2_cbs_t h2u_cbs = {h2u_on_request, h2u_on_data, h2u_on_close};

static void h2u_unpool(uconn_t *c)
{
    if (!c->h2_pooled)
        return;
    c->h2_pooled = false;
    const char *key = c->pool_key; /* "h2|..." */
    uconn_t *head = hmap_get(&c->w->h2pool, key);
    if (head == c) {
        if (c->h2_next)
            hmap_put(&c->w->h2pool, c->h2_next->pool_key, c->h2_next);
        else
            hmap_del(&c->w->h2pool, key);
    } else {
        for (uconn_t *p = head; p; p = p->h2_next)
            if (p->h2_next == c) {
                p->h2_next = c->h2_next;
                break;
            }
    }
    c->h2_next = NULL;
}


/* The connection is going: every stream still on it fails (before the
 * connection was up: as a connect failure, which the retry policy sees). */
static void h2u_close_streams(uconn_t *c)
{
    bool up = c->state == U_ACTIVE;
    while (c->skids) {
        uconn_t *k = c->skids;
        k->h2s = NULL; /* the codec goes with the connection */
        dconn_t *d = k->d;
        if (d) {
            k->state = up ? U_ACTIVE : U_CONNECTING; /* what the retry policy sees */
            upstream_failed(d, up ? "connection termination" : "connection failure");
        }
        if (c->skids == k)
            uconn_close(k);
    }
}

/* Deferred after a flush: a failed or finished connection is closed. */
static void h2u_check_cb(void *arg)
{
    uconn_t *c = arg;
    c->h2_check_queued = false;
    if (c->fd < 0)
        return;
    if (c->h2_dead || (c->state == U_ACTIVE && !px_h2_alive(c->h2) && c->out.len == 0)) {
        uconn_close(c);
        return;
    }
    /* the upstream took request bytes: the clients may send more */
    for (uconn_t *k = c->skids; k; k = k->snext)
        if (k->d && !k->d->closed && k->d->state == D_PROXY && !k->d->req_body_done)
            d_update_interest(k->d);
}

/* Sends what the codec produced, once per loop round however many streams
 * made frames in it, then lets clients held at the high-water mark send
 * again (h2u_check_cb). */
static void h2u_send_cb(void *arg)
{
    uconn_t *c = arg;
    c->h2_send_queued = false;
    if (c->fd < 0)
        return;
    bool produced = c->h2_produced;
    c->h2_produced = false;
    if (!c->h2_dead && u_flush(c) < 0)
        c->h2_dead = true;
    u_update_interest(c);
    if (c->h2_high && c->out.len < OUT_HIGH)
        produced = true;
    c->h2_high = c->out.len >= OUT_HIGH;
    /* only when frames went out (or the session ended): the check wakes
     * the clients, whose acknowledgements flush here again */
    if ((produced || c->h2_dead || !px_h2_alive(c->h2)) && !c->h2_check_queued) {
        c->h2_check_queued = true;
        loop_defer(c->w->loop, h2u_check_cb, c);
    }
}

/* Moves the codec's frames into the connection's output (once the
 * connection is up; until then they wait in the session); the socket write
 * follows at the end of the loop round (h2u_send_cb). */
static void h2u_flush(uconn_t *c)
{
    if (c->fd < 0 || c->h2 == NULL)
        return;
    if (c->h2_busy) {
        c->h2_again = true;
        return;
    }
    if (c->state == U_ACTIVE) {
        size_t before = c->out.len;
        c->h2_busy = true;
        int rc;
        do {
            c->h2_again = false;
            rc = px_h2_send(c->h2, out_sink, &c->out);
        } while (rc == 0 && c->h2_again);
        c->h2_busy = false;
        c->h2_produced |= c->out.len != before;
        if (rc < 0)
            c->h2_dead = true;
    }
    if (!c->h2_send_queued) {
        c->h2_send_queued = true;
        loop_defer(c->w->loop, h2u_send_cb, c);
    }
}

/* An HTTP/2 connection to the endpoint with room for a stream (the peer's
 * SETTINGS and the cluster's max_concurrent_streams), or a new one; cb/ls:
 * the circuit breaker its connection counts in. */
static uconn_t *h2u_conn(worker_t *w, px_snapshot_t *snap, const px_cluster_t *cl, cb_state_t *cb, lb_state_t *ls,
                         const px_endpoint_t *ep, const char *key)
{
    char k2[520];
    snprintf(k2, sizeof(k2), "h2|%s", key);
    for (uconn_t *c = hmap_get(&w->h2pool, k2); c; c = c->h2_next)
        if (!c->h2_dead && c->fd >= 0 && px_h2_can_open(c->h2) &&
            (cl->h2_max_streams == 0 || c->nstreams < cl->h2_max_streams)) {
            if (c->state == U_ACTIVE)
                CINC(w->st.ucx_reused);
            return c;
        }
    uconn_t *c = uconn_connect(w, snap, cl, ep, cl->connect_timeout_ms);
    if (c == NULL)
        return NULL;
    px_h2_opts_t o = {.counters = &w->st.h2_up};
    char *pk = strdup(k2);
    c->h2 = pk ? px_h2_new(true, &h2u_cbs, c, &o) : NULL;
    if (pk) {
        free(c->pool_key);
        c->pool_key = pk;
    }
    if (c->h2 == NULL) {
        uconn_close(c);
        return NULL;
    }
    c->h2_https = cl->tls != NULL;
    if (cb) {
        c->cb = cb;
        c->ls = ls;
        if (ls)
            ls->nconns++;
        atomic_fetch_add(&cb->cx, 1);
    }
    c->h2_next = hmap_get(&w->h2pool, k2);
    c->h2_pooled = true;
    hmap_put(&w->h2pool, c->pool_key, c);
    return c;
}

/* A new stream on an HTTP/2 connection to ep (a uconn of its own, no
 * downstream yet). */
static uconn_t *h2u_open(worker_t *w, px_snapshot_t *snap, const px_cluster_t *cl, cb_state_t *cb, lb_state_t *ls,
                         const px_endpoint_t *ep, const char *key)
{
    uconn_t *c = h2u_conn(w, snap, cl, cb, ls, ep, key);
    if (c == NULL)
        return NULL;
    uconn_t *u = calloc(1, sizeof(*u));
    if (u == NULL)
        return NULL;
    u->w = w;
    u->fd = -1;
    u->hp = c;
    u->state = U_ACTIVE;
    u->address = strdup(ep->address);
    u->h2s = px_h2_open(c->h2, u, c->h2_https);
    if (u->h2s == NULL || u->address == NULL) {
        if (u->h2s)
            px_h2_detach(u->h2s);
        free(u->address);
        free(u);
        return NULL;
    }
    u->snext = c->skids;
    if (c->skids)
        c->skids->sprev = u;
    c->skids = u;
    c->nstreams++;
    if (c->state == U_ACTIVE) /* busy again: no idle timeout */
        loop_timer_stop(c->timer);
    return u;
}

/* A new stream for the current attempt of d. */
static uconn_t *h2u_stream(dconn_t *d, const px_endpoint_t *ep, const char *key)
{
    return h2u_open(d->w, d->snap, d->cluster, d->cb, d->ls, ep, key);
}

static void h2u_on_io(uconn_t *c, int fd, unsigned ev)
{
    if (c->state == U_CONNECTING) {
        int soerr = 0;
        socklen_t sl = sizeof(soerr);
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl);
        if (soerr != 0) {
            uconn_close(c);
            return;
        }
    }
    if (c->state == U_CONNECTING || c->state == U_TLS) {
        char why[300];
        int r = u_connected(c, why, sizeof(why));
        if (r < 0) {
            log_debug("upstream %s: %s", c->address, why);
            uconn_close(c);
            return;
        }
        if (r == 0) {
            u_update_interest(c);
            return;
        }
        loop_timer_stop(c->timer);
        if (c->tls && strcmp(px_tls_alpn(c->tls), "h2") != 0) {
            log_debug("upstream %s: ALPN did not select h2", c->address);
            c->state = U_CONNECTING; /* its streams fail as connect failures */
            uconn_close(c);
            return;
        }
        h2u_flush(c); /* the preface and the streams queued meanwhile */
        if (c->fd < 0)
            return;
    }
    if ((ev & LOOP_WRITE) && c->out.len && u_flush(c) < 0) {
        uconn_close(c);
        return;
    }
    if (ev & LOOP_READ) {
        char buf[16384];
        for (int i = 0; i < 16; i++) {
            ssize_t n = conn_recv(fd, c->tls, buf, sizeof(buf), &c->tls_want);
            if (n > 0) {
                c->h2_busy = true;
                int r = px_h2_recv(c->h2, (const uint8_t *)buf, (size_t)n);
                c->h2_busy = false;
                if (r < 0) {
                    px_h2_send(c->h2, out_sink, &c->out);
                    u_flush(c);
                    uconn_close(c);
                    return;
                }
                if (recv_drained(c->tls, n, sizeof(buf)))
                    break;
                continue;
            }
            if (n == 0) {
                c->peer_closed = true;
                uconn_close(c);
                return;
            }
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK) {
                uconn_close(c);
                return;
            }
            break;
        }
    }
    h2u_flush(c);
}

/* ---- HTTP/2 downstream ---- */

/* Deferred after a flush: closes a finished or failed connection, lets the
 * streams' upstreams be read again when the output drained. */
static void h2d_check_cb(void *arg)
{
    dconn_t *p = arg;
    p->h2_check_queued = false;
    if (p->closed)
        return;
    if ((p->h2_dead || !px_h2_alive(p->h2) || (p->h2_goaway && p->nkids == 0)) && p->out.len == 0) {
        dconn_close(p);
        return;
    }
    if (p->out.len < OUT_HIGH)
        for (dconn_t *k = p->kids; k; k = k->knext)
            if (k->u && k->u->state == U_ACTIVE)
                u_update_interest(k->u);
}

/* Sends what the codec produced, once per loop round whatever the number of
 * streams that made frames in it (one write for many responses), then lets
 * streams held at the high-water mark read again. */
static void h2d_send_cb(void *arg)
{
    dconn_t *p = arg;
    p->h2_send_queued = false;
    if (p->closed)
        return;
    bool produced = p->h2_produced;
    p->h2_produced = false;
    if (!p->h2_dead && d_flush(p) < 0) {
        p->h2_dead = true;
        p->out.len = 0;
    }
    d_update_interest(p);
    if (p->h2_high && p->out.len < OUT_HIGH)
        produced = true;
    p->h2_high = p->out.len >= OUT_HIGH;
    if ((produced || p->h2_dead || !px_h2_alive(p->h2)) && !p->h2_check_queued) {
        p->h2_check_queued = true;
        loop_defer(p->w->loop, h2d_check_cb, p);
    }
}

/* Moves the codec's frames into the connection's output; the socket write
 * follows at the end of the loop round (h2d_send_cb). Inside the codec
 * (h2_busy) it only notes that there is more to send. */
static void h2d_flush(dconn_t *p)
{
    if (p->closed || p->h2 == NULL)
        return;
    if (p->h2_busy) {
        p->h2_again = true;
        return;
    }
    p->h2_busy = true;
    size_t before = p->out.len;
    int rc;
    do {
        p->h2_again = false;
        rc = px_h2_send(p->h2, out_sink, &p->out);
    } while (rc == 0 && p->h2_again);
    p->h2_busy = false;
    p->h2_produced |= p->out.len != before;
    if (rc < 0) {
        p->h2_dead = true;
        p->out.len = 0;
    }
    if (!p->h2_send_queued) {
        p->h2_send_queued = true;
        loop_defer(p->w->loop, h2d_send_cb, p);
    }
}

/* A stream's response bytes go to the codec; its window opens again once
 * the request body left its buffers. */
static void h2k_sync(dconn_t *c)
{
    if (c->h2s) {
        if (c->out.len)
            px_h2_write(c->h2s, c->out.data, c->out.len); /* on error the codec resets the stream */
        if (c->in.len < IN_CAP && (!c->u || u_backlog(c->u) < OUT_HIGH))
            px_h2_ack(c->h2s);
    }
    c->out.len = 0;
    h2d_flush(c->parent);
}

/* A request head arrived on a new stream: a dconn of its own runs it. */
static void *h2d_on_request(void *ud, px_h2_stream_t *s, const char *head, size_t len)
{
    dconn_t *p = ud;
    worker_t *w = p->w;
    if (p->closed || p->h2_goaway)
        return NULL;
    dconn_t *c = dconn_new();
    if (c == NULL)
        return NULL;
    c->w = w;
    c->fd = -1;
    c->parent = p;
    c->h2s = s;
    c->snap = px_snapshot_ref(p->snap);
    c->listener = p->listener;
    c->chain = p->chain;
    c->local = p->local;
    c->remote = p->remote;
    c->tls = p->tls;
    memcpy(c->peer_uri, p->peer_uri, sizeof(c->peer_uri));
    memcpy(c->peer, p->peer, sizeof(c->peer));
    memcpy(c->odst_addr, p->odst_addr, sizeof(c->odst_addr));
    c->captured = p->captured;
    c->upstream_ms = -1;
    c->state = D_HEAD;
    c->timer = loop_timer_new(w->loop, dconn_timeout, c);
    c->try_timer = loop_timer_new(w->loop, try_timer_cb, c);
    if (c->timer == NULL || c->try_timer == NULL || buf_add(&c->in, head, len) < 0) {
        loop_timer_free(c->timer);
        loop_timer_free(c->try_timer);
        buf_free(&c->in);
        px_snapshot_unref(c->snap);
        free(c);
        return NULL;
    }
    c->knext = p->kids;
    if (p->kids)
        p->kids->kprev = c;
    p->kids = c;
    p->nkids++;
    dconn_process(c);
    if (c->listener_gone && !p->h2_goaway) {
        /* the listener left the config: no new streams, close when done */
        p->h2_goaway = true;
        px_h2_goaway(p->h2);
    }
    return c;
}

/* Request body bytes (HTTP/1.1 framed) of a stream. */
static void h2d_on_data(void *ud, void *sud, const char *p, size_t n)
{
    (void)ud;
    dconn_t *c = sud;
    if (c->closed)
        return;
    if (buf_add(&c->in, p, n) < 0) {
        dconn_close(c);
        return;
    }
    if (c->state == D_PROXY) {
        if (pump_request_body(c) < 0) {
            upstream_failed(c, "protocol error");
            return;
        }
        if (c->u && c->u->state == U_ACTIVE) {
            if (u_flush(c->u) < 0) {
                upstream_failed(c, "connection failure");
                return;
            }
            u_update_interest(c->u);
        }
    }
    if (!c->closed)
        d_update_interest(c);
}

/* The client reset a stream (or it closed under us). */
static void h2d_on_close(void *ud, void *sud, uint32_t error_code)
{
    (void)ud;
    (void)error_code;
    dconn_t *c = sud;
    c->h2s = NULL;
    if (c->closed)
        return;
    if (c->resp_code == 0)
        c->flags = "DR";
    dconn_close(c);
}

static const px_h2_cbs_t h2d_cbs = {h2d_on_request, h2d_on_data, h2d_on_close};

/* Feeds received bytes to the codec; -1 when the connection was closed. */
static int h2d_input(dconn_t *d, const char *p, size_t n)
{
    d->h2_busy = true;
    int r = px_h2_recv(d->h2, (const uint8_t *)p, n);
    d->h2_busy = false;
    if (r < 0) {
        /* a connection error: the GOAWAY goes out, then the connection closes */
        d->h2_dead = true;
        px_h2_send(d->h2, out_sink, &d->out);
        d_flush(d);
        dconn_close(d);
        return -1;
    }
    loop_timer_start(d->timer, d->w->srv->opt.idle_timeout_ms, 0);
    return 0;
}

/* The connection speaks HTTP/2 (prior knowledge or ALPN "h2"). */
static void h2d_start(dconn_t *d)
{
    px_h2_opts_t o = {.max_concurrent_streams = d->chain->h2_max_streams, .counters = &d->w->st.h2_down};
    d->h2 = px_h2_new(false, &h2d_cbs, d, &o);
    if (d->h2 == NULL) {
        dconn_close(d);
        return;
    }
    d->state = D_H2;
    loop_timer_start(d->timer, d->w->srv->opt.idle_timeout_ms, 0);
    if (d->in.len) {
        buf_t in = d->in;
        memset(&d->in, 0, sizeof(d->in));
        int r = h2d_input(d, in.data, in.len);
        buf_free(&in);
        if (r < 0)
            return;
    }
    h2d_flush(d);
}

static void h2d_on_io(dconn_t *d, unsigned ev)
{
    if ((ev & LOOP_WRITE) && d->out.len && d_flush(d) < 0) {
        dconn_close(d);
        return;
    }
    if ((ev & LOOP_READ) && !d->h2_dead) {
        char buf[16384];
        for (int i = 0; i < 16; i++) {
            ssize_t n = conn_recv(d->fd, d->tls, buf, sizeof(buf), &d->tls_want);
            if (n > 0) {
                if (h2d_input(d, buf, (size_t)n) < 0)
                    return;
                if (recv_drained(d->tls, n, sizeof(buf)))
                    break;
                continue;
            }
            if (n == 0) {
                dconn_close(d);
                return;
            }
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK) {
                dconn_close(d);
                return;
            }
            break;
        }
    }
    h2d_flush(d);
}

/* TCP proxy: connect to the cluster and pump bytes both ways. */
/* The endpoint of pick ei, or for an ORIGINAL_DST cluster the connection's
 * original destination (kept in d). */
static const px_endpoint_t *ep_of(dconn_t *d, const px_cluster_t *c, long ei)
{
    if (c->lb != PX_LB_ORIGINAL_DST)
        return &c->endpoints[ei];
    px_endpoint_t *e = &d->odst;
    memcpy(&e->sa, &d->local, sizeof(d->local));
    e->salen = d->local.ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
    e->weight = 1;
    e->address = d->odst_addr;
    return e;
}

static void start_tcp(dconn_t *d)
{
    worker_t *w = d->w;
    const px_cluster_t *c = find_cluster(d->snap, d->chain->tcp_cluster);
    d->start_ms = loop_now(w->loop);
    clock_gettime(CLOCK_REALTIME, &d->start_wall);
    snprintf(d->method, sizeof(d->method), "-");
    lb_state_t *ls = c ? lb_for(w, c) : NULL;
    long ei = c && c->lb == PX_LB_ORIGINAL_DST && d->captured ? 0
              : pick_endpoint(w, ls, c, px_hash64(d->peer, strlen(d->peer)), -1, 0);
    uconn_t *u = ei >= 0 ? uconn_connect(w, d->snap, c, ep_of(d, c, ei), c->connect_timeout_ms) : NULL;
    if (u == NULL) {
        d->flags = ei < 0 ? "UH" : "UF";
        dconn_close(d);
        return;
    }
    const char *ua = ep_of(d, c, ei)->address;
    copy_trunc(d->upstream_host, sizeof(d->upstream_host), ua, strlen(ua));
    d->cluster = c;
    px_metric_t *m = metric_for(d, true);
    if (m)
        m->tcp_opened++;
    u->d = d;
    d->u = u;
    d->state = D_TUNNEL;
    d->resp_code = 0;
    d->flags = "-";
    d->req_body_done = true;
    d_update_interest(d);
}

/* The destination a connection had before iptables redirected it. */
static bool original_dst(int fd, struct sockaddr_storage *out)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    memset(&ss, 0, sizeof(ss));
    if (getsockopt(fd, SOL_IP, SO_ORIGINAL_DST, &ss, &sl) == 0 && ss.ss_family == AF_INET) {
        *out = ss;
        return true;
    }
    sl = sizeof(ss);
    if (getsockopt(fd, SOL_IPV6, IP6T_SO_ORIGINAL_DST, &ss, &sl) == 0 && ss.ss_family == AF_INET6) {
        *out = ss;
        return true;
    }
    return false;
}

static void sa_text(const struct sockaddr_storage *ss, char *out, size_t n)
{
    char ip[INET6_ADDRSTRLEN] = "";
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
        inet_ntop(AF_INET, &a->sin_addr, ip, sizeof(ip));
        snprintf(out, n, "%s:%u", ip, ntohs(a->sin_port));
    } else if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
        inet_ntop(AF_INET6, &a->sin6_addr, ip, sizeof(ip));
        snprintf(out, n, "[%s]:%u", ip, ntohs(a->sin6_port));
    } else {
        snprintf(out, n, "-");
    }
}

/* Runs the chain's network RBAC filters; false: the connection is denied
 * (and closed). */
static bool rbac_allows(dconn_t *d, const px_rbac_t *const *f, size_t n, const px_rbac_attrs_t *a)
{
    for (size_t i = 0; i < n; i++) {
        px_rbac_result_t r;
        px_rbac_eval(f[i], a, &r);
        if (!r.shadow_allowed)
            CINC(d->w->st.rbac_shadow_denied);
        if (!r.allowed) {
            CINC(d->w->st.rbac_denied);
            log_info("rbac: %s from %s denied, matched policy %s", a->http ? "request" : "connection",
                     d->peer, r.policy ? r.policy : "none");
            return false;
        }
    }
    if (n)
        CINC(d->w->st.rbac_allowed);
    return true;
}

static void net_attrs(dconn_t *d, px_rbac_attrs_t *a)
{
    memset(a, 0, sizeof(*a));
    a->peer = (const struct sockaddr *)&d->remote;
    a->local = (const struct sockaddr *)&d->local;
    a->principal = d->peer_uri;
    a->sni = d->tls ? px_tls_sni(d->tls) : NULL;
}

/* The filter chain is chosen and its handshake (if any) is done: network
 * authorization, then TCP proxying or HTTP. */
static void chain_ready(dconn_t *d)
{
    const px_chain_t *ch = d->chain;
    if (ch->nnet_rbac) {
        px_rbac_attrs_t a;
        net_attrs(d, &a);
        if (!rbac_allows(d, ch->net_rbac, ch->nnet_rbac, &a)) {
            d->flags = "-";
            dconn_close(d);
            return;
        }
    }
    if (ch->kind == PX_LISTENER_TCP) {
        loop_timer_stop(d->timer);
        start_tcp(d);
        return;
    }
    if (d->tls && strcmp(px_tls_alpn(d->tls), "h2") == 0) {
        h2d_start(d);
        return;
    }
    d->state = D_HEAD;
    loop_timer_start(d->timer, d->w->srv->opt.idle_timeout_ms, 0);
    d_update_interest(d);
}

static void handshake_step(dconn_t *d)
{
    char err[256];
    int r = px_tls_handshake(d->tls, &d->tls_want, err, sizeof(err));
    if (r < 0) {
        CINC(d->w->st.ssl_fail);
        log_debug("TLS handshake with %s on %s failed: %s", d->peer, d->listener->name, err);
        dconn_close(d);
        return;
    }
    if (r == 0) {
        loop_io_modify(d->io, (d->tls_want & PX_TLS_WANT_WRITE) ? LOOP_WRITE : LOOP_READ);
        return;
    }
    CINC(d->w->st.ssl_handshake);
    d->tls_want = 0;
    snprintf(d->peer_uri, sizeof(d->peer_uri), "%s", px_tls_peer_uri(d->tls));
    chain_ready(d);
}

/* Chooses the filter chain from what the connection looks like. */
static void chain_select(dconn_t *d, const char *transport, const char *sni, const char *const *alpn, size_t nalpn)
{
    px_chain_input_t in = {(const struct sockaddr *)&d->local, (const struct sockaddr *)&d->remote, transport, sni,
                           alpn, nalpn};
    d->chain = px_chain_select(d->listener, &in);
    if (d->chain == NULL) {
        CINC(d->w->st.no_chain);
        log_debug("%s: no filter chain matches the connection from %s", d->listener->name, d->peer);
        /* reset, as Envoy does: the client sees "connection reset by peer" */
        struct linger lg = {1, 0};
        setsockopt(d->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
        d->flags = "NFCF";
        dconn_close(d);
        return;
    }
    if (d->chain->tls) {
        char err[256];
        SSL_CTX *ctx = px_tls_ctx(d->w->tls, d->chain->tls, err, sizeof(err));
        d->tls = ctx ? px_tls_conn_new(ctx, d->chain->tls, d->fd) : NULL;
        if (d->tls)
            d->tls_snap = px_snapshot_ref(d->snap);
        if (d->tls == NULL) {
            CINC(d->w->st.ssl_fail);
            log_warn("%s: filter chain %s cannot serve TLS: %s", d->listener->name, d->chain->name,
                     ctx ? "cannot create the connection" : err);
            dconn_close(d);
            return;
        }
        d->state = D_HANDSHAKE;
        loop_timer_start(d->timer, PEEK_TIMEOUT_MS, 0);
        handshake_step(d);
        return;
    }
    chain_ready(d);
}

/* A connection on a listener without inspectors: by address only. */
static void chain_begin(dconn_t *d)
{
    chain_select(d, "raw_buffer", NULL, NULL, 0);
}

/* The listener's inspectors: look at the first bytes without consuming
 * them (TLS ClientHello: SNI and ALPN; plaintext HTTP). */
static void peek_step(dconn_t *d, bool timed_out)
{
    static _Thread_local uint8_t buf[PEEK_MAX];
    ssize_t n = recv(d->fd, buf, sizeof(buf), MSG_PEEK);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
        dconn_close(d);
        return;
    }
    if (n < 0)
        n = 0;
    px_hello_t h;
    px_hello_result_t r = n ? px_tls_parse_hello(buf, (size_t)n, &h) : PX_HELLO_MORE;
    if (r == PX_HELLO_MORE && !timed_out && (size_t)n < sizeof(buf)) {
        /* incomplete: look again shortly (the bytes stay in the socket, so
         * a level-triggered read would fire at once) */
        loop_io_modify(d->io, n ? 0 : LOOP_READ);
        if (n)
            loop_timer_start(d->timer, PEEK_RETRY_MS, 0);
        return;
    }
    if (r == PX_HELLO_TLS) {
        const char *alpn[PX_TLS_MAX_ALPN];
        for (size_t i = 0; i < h.nalpn; i++)
            alpn[i] = h.alpn[i];
        chain_select(d, "tls", h.sni, alpn, h.nalpn);
        return;
    }
    const char *app = NULL;
    if (d->listener->http_inspector && n >= 4) {
        if (n >= 16 && memcmp(buf, "PRI * HTTP/2.0\r\n", 16) == 0)
            app = "h2c";
        else {
            ssize_t i = 0;
            while (i < n && i < 16 && buf[i] >= 'A' && buf[i] <= 'Z')
                i++;
            if (i > 0 && i < n && buf[i] == ' ')
                app = "http/1.1";
        }
    }
    chain_select(d, "raw_buffer", NULL, app ? &app : NULL, app ? 1 : 0);
}

static void accept_cb(loop_io_t *io, int fd, unsigned ev, void *arg)
{
    (void)io;
    (void)ev;
    wlistener_t *wl = arg;
    worker_t *w = wl->w;
    for (int i = 0; i < 64; i++) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof(ss);
        int cfd = accept4(fd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (cfd < 0)
            return;
        const px_listener_t *l = NULL;
        for (size_t k = 0; w->snap && k < w->snap->nlisteners; k++)
            if (strcmp(w->snap->listeners[k].name, wl->name) == 0)
                l = &w->snap->listeners[k];
        dconn_t *d = l ? dconn_new() : NULL;
        if (d) {
            memcpy(&d->remote, &ss, sizeof(ss));
            bool orig = (l->original_dst || l->use_original_dst) && original_dst(cfd, &d->local);
            /* without a captured destination an ORIGINAL_DST cluster would
             * send the request back to this very listener: it gets none */
            d->captured = orig;
            socklen_t ll = sizeof(d->local);
            if (!orig && getsockname(cfd, (struct sockaddr *)&d->local, &ll) < 0)
                memset(&d->local, 0, sizeof(d->local));
            sa_text(&d->local, d->odst_addr, sizeof(d->odst_addr));
            if (l->use_original_dst && orig) {
                /* hand the captured connection to the listener of its destination */
                const px_listener_t *to = px_listener_for_dst(w->snap, (struct sockaddr *)&d->local, l);
                if (to)
                    l = to;
            }
        }
        if (d == NULL) {
            close(cfd);
            continue;
        }
        int one = 1;
        setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        d->w = w;
        d->fd = cfd;
        d->upstream_ms = -1;
        d->snap = px_snapshot_ref(w->snap);
        d->listener = l;
        if (ss.ss_family == AF_INET)
            inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, d->peer, sizeof(d->peer));
        else if (ss.ss_family == AF_INET6)
            inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, d->peer, sizeof(d->peer));
        d->state = D_HEAD;
        d->upstream_ms = -1;
        d->io = loop_io_add(w->loop, cfd, LOOP_READ, dconn_on_io, d);
        d->timer = loop_timer_new(w->loop, dconn_timeout, d);
        d->try_timer = loop_timer_new(w->loop, try_timer_cb, d);
        if (d->io == NULL) {
            loop_timer_free(d->timer);
            loop_timer_free(d->try_timer);
            close(cfd);
            px_snapshot_unref(d->snap);
            free(d);
            continue;
        }
        d->next = w->conns;
        if (w->conns)
            w->conns->prev = d;
        w->conns = d;
        w->nconns++;
        CINC(w->st.cx_total);
        CINC(w->st.cx_active);
        if (l->tls_inspector || l->http_inspector) {
            d->state = D_PEEK;
            d->peek_start = loop_now(w->loop);
            loop_timer_start(d->timer, PEEK_TIMEOUT_MS, 0);
        } else {
            chain_begin(d);
        }
    }
}

/* ---- listeners and snapshots ---- */

typedef struct apply_msg {
    worker_t *w;
    px_snapshot_t *snap;
    size_t n;
    char **keys, **names;
    int *fds;
} apply_msg_t;

static void wlistener_close(wlistener_t *wl)
{
    /* take what is already queued so no handshaken connection is lost */
    loop_io_del(wl->io);
    accept_cb(NULL, wl->fd, LOOP_READ, wl);
    close(wl->fd);
    free(wl->key);
    free(wl->name);
    free(wl);
}

static void apply_on_worker(void *arg)
{
    apply_msg_t *m = arg;
    worker_t *w = m->w;
    px_snapshot_t *old = w->snap;
    w->snap = m->snap;
    memset(w->memo, 0, sizeof(w->memo)); /* its pointers may name the old snapshot */
    /* close listeners that are gone */
    wlistener_t **pp = &w->listeners;
    while (*pp) {
        wlistener_t *wl = *pp;
        bool keep = false;
        for (size_t i = 0; i < m->n; i++)
            if (strcmp(m->keys[i], wl->key) == 0 && m->fds[i] == wl->fd)
                keep = true;
        if (!keep) {
            *pp = wl->next;
            wlistener_close(wl);
        } else {
            pp = &wl->next;
        }
    }
    for (size_t i = 0; i < m->n; i++) {
        bool have = false;
        for (wlistener_t *wl = w->listeners; wl; wl = wl->next)
            if (wl->fd == m->fds[i])
                have = true;
        if (have || m->fds[i] < 0)
            continue;
        wlistener_t *wl = calloc(1, sizeof(*wl));
        if (wl == NULL)
            continue;
        wl->key = strdup(m->keys[i]);
        wl->name = strdup(m->names[i]);
        wl->fd = m->fds[i];
        wl->w = w;
        wl->io = loop_io_add(w->loop, wl->fd, LOOP_READ, accept_cb, wl);
        wl->next = w->listeners;
        w->listeners = wl;
    }
    px_snapshot_unref(old);
    for (size_t i = 0; i < m->n; i++) {
        free(m->keys[i]);
        free(m->names[i]);
    }
    free(m->keys);
    free(m->names);
    free(m->fds);
    free(m);
}

static int bind_listener(const px_listener_t *l, const char *override, char *err, size_t errlen)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    socklen_t sl;
    const char *ip = override ? override : l->address;
    struct sockaddr_in *in4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, ip, &in4->sin_addr) == 1) {
        in4->sin_family = AF_INET;
        in4->sin_port = htons((uint16_t)l->port);
        sl = sizeof(*in4);
    } else if (inet_pton(AF_INET6, ip, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons((uint16_t)l->port);
        sl = sizeof(*in6);
    } else {
        snprintf(err, errlen, "Listener %s: address: \"%s\" is not an IP address", l->name, ip);
        return -1;
    }
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0 ||
        bind(fd, (struct sockaddr *)&ss, sl) < 0 || listen(fd, 1024) < 0) {
        snprintf(err, errlen, "Listener %s: cannot listen on %s:%u: %s", l->name, ip, l->port, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return fd;
}

static void listener_key(const px_listener_t *l, char *key, size_t n)
{
    snprintf(key, n, "%s|%s|%u", l->name, l->address, l->port);
}

int px_server_apply(px_server_t *s, px_snapshot_t *snap, char *err, size_t errlen)
{
    pthread_mutex_lock(&s->mu);
    int nw = s->nworkers;
    size_t n = snap->nlisteners;
    struct slistener **fresh = calloc(n ? n : 1, sizeof(*fresh));
    int rc = -1;
    if (fresh == NULL) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    /* bind every new listener on every worker first: all or nothing */
    for (size_t i = 0; i < n; i++) {
        char key[512];
        if (!snap->listeners[i].bind && s->opt.bind_override == NULL)
            continue; /* reached through a use_original_dst listener only */
        listener_key(&snap->listeners[i], key, sizeof(key));
        struct slistener *sl;
        for (sl = s->listeners; sl; sl = sl->next)
            if (strcmp(sl->key, key) == 0)
                break;
        if (sl)
            continue;
        sl = calloc(1, sizeof(*sl));
        if (sl == NULL)
            goto unwind;
        fresh[i] = sl;
        sl->key = strdup(key);
        sl->name = strdup(snap->listeners[i].name);
        sl->fds = malloc((size_t)nw * sizeof(int));
        if (!sl->key || !sl->name || !sl->fds)
            goto unwind;
        for (int k = 0; k < nw; k++)
            sl->fds[k] = -1;
        for (int k = 0; k < nw; k++) {
            sl->fds[k] = bind_listener(&snap->listeners[i], s->opt.bind_override, err, errlen);
            if (sl->fds[k] < 0)
                goto unwind;
        }
    }
    /* the new set: kept listeners, then fresh ones */
    struct slistener *next_set = NULL;
    for (size_t i = 0; i < n; i++) {
        char key[512];
        if (!snap->listeners[i].bind && s->opt.bind_override == NULL)
            continue;
        listener_key(&snap->listeners[i], key, sizeof(key));
        struct slistener *sl = fresh[i], **pp;
        if (sl == NULL)
            for (pp = &s->listeners; *pp; pp = &(*pp)->next)
                if (strcmp((*pp)->key, key) == 0) {
                    sl = *pp;
                    *pp = sl->next;
                    break;
                }
        if (sl == NULL)
            continue;
        sl->next = next_set;
        next_set = sl;
    }
    /* what is left in s->listeners is removed: workers close their fds */
    struct slistener *gone = s->listeners;
    s->listeners = next_set;
    for (int k = 0; k < nw; k++) {
        apply_msg_t *m = calloc(1, sizeof(*m));
        size_t cnt = 0;
        for (struct slistener *sl = next_set; sl; sl = sl->next)
            cnt++;
        if (m == NULL)
            continue;
        m->w = &s->workers[k];
        m->snap = px_snapshot_ref(snap);
        m->keys = calloc(cnt ? cnt : 1, sizeof(char *));
        m->names = calloc(cnt ? cnt : 1, sizeof(char *));
        m->fds = calloc(cnt ? cnt : 1, sizeof(int));
        for (struct slistener *sl = next_set; sl && m->keys && m->names && m->fds; sl = sl->next) {
            m->keys[m->n] = strdup(sl->key);
            m->names[m->n] = strdup(sl->name);
            m->fds[m->n] = sl->fds[k];
            m->n++;
        }
        if (loop_post(s->workers[k].loop, apply_on_worker, m) < 0) {
            px_snapshot_unref(m->snap);
            for (size_t i = 0; i < m->n; i++) {
                free(m->keys[i]);
                free(m->names[i]);
            }
            free(m->keys);
            free(m->names);
            free(m->fds);
            free(m);
        }
    }
    px_snapshot_unref(s->current);
    s->current = px_snapshot_ref(snap);
    while (gone) {
        struct slistener *g = gone;
        gone = g->next;
        /* the worker owns and closes the fds */
        free(g->key);
        free(g->name);
        free(g->fds);
        free(g);
    }
    rc = 0;
    goto out;
unwind:
    for (size_t i = 0; i < n; i++) {
        struct slistener *sl = fresh[i];
        if (sl == NULL)
            continue;
        for (int k = 0; sl->fds && k < nw; k++)
            if (sl->fds[k] >= 0)
                close(sl->fds[k]);
        free(sl->key);
        free(sl->name);
        free(sl->fds);
        free(sl);
    }
out:
    free(fresh);
    pthread_mutex_unlock(&s->mu);
    return rc;
}

struct px_secrets *px_server_secrets(px_server_t *s)
{
    return s->secrets;
}

/* ---- workers ---- */

static void *worker_main(void *arg)
{
    worker_t *w = arg;
    obj_cache_t cache = {0};
    obj_cache = &cache;
    px_blk_enable();
    loop_run(w->loop);
    obj_cache = NULL;
    obj_cache_drain(&cache);
    px_blk_disable();
    return NULL;
}

static int ncpus(void)
{
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof(set), &set) == 0) {
        int n = CPU_COUNT(&set);
        if (n > 0)
            return n;
    }
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

px_server_t *px_server_new(const px_options_t *o, char *err, size_t errlen)
{
    px_server_t *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    s->opt = *o;
    if (s->opt.idle_timeout_ms == 0)
        s->opt.idle_timeout_ms = 3600 * 1000;
    s->nworkers = o->concurrency > 0 ? o->concurrency : ncpus();
    pthread_mutex_init(&s->mu, NULL);
    s->secrets = o->secrets;
    if (s->secrets == NULL) {
        s->secrets = s->own_secrets = px_secrets_new();
        if (s->secrets == NULL) {
            snprintf(err, errlen, "out of memory");
            free(s);
            return NULL;
        }
    }
    s->workers = calloc((size_t)s->nworkers, sizeof(*s->workers));
    if (s->workers == NULL) {
        snprintf(err, errlen, "out of memory");
        free(s);
        return NULL;
    }
    int started = 0;
    for (int i = 0; i < s->nworkers; i++) {
        worker_t *w = &s->workers[i];
        w->srv = s;
        w->id = i;
        /* MESHPROXY_SEED makes the random choices (weights, faults, ids) repeatable */
        const char *seed = getenv("MESHPROXY_SEED");
        uint64_t base = seed && seed[0] ? strtoull(seed, NULL, 10) : (uint64_t)time(NULL);
        w->rng = base * 6364136223846793005ull + (uint64_t)i * 1442695040888963407ull + 1;
        w->loop = loop_new();
        w->tls = px_tls_cache_new(s->secrets);
        if (w->loop == NULL || w->tls == NULL || pthread_create(&w->thread, NULL, worker_main, w) != 0) {
            snprintf(err, errlen, "cannot start worker %d: %s", i, strerror(errno));
            if (w->loop)
                loop_free(w->loop);
            w->loop = NULL;
            break;
        }
        started++;
    }
    if (started < s->nworkers) {
        s->nworkers = started;
        px_server_drain_and_stop(s);
        px_server_free(s);
        return NULL;
    }
    return s;
}

typedef struct drain_msg {
    worker_t *w;
    uint64_t deadline;
    loop_timer_t *t;
} drain_msg_t;

static void drain_tick(loop_timer_t *t, void *arg)
{
    drain_msg_t *m = arg;
    worker_t *w = m->w;
    /* connections between requests go now; others when done or at the deadline */
    dconn_t *d = w->conns;
    while (d) {
        dconn_t *next = d->next;
        if (d->state == D_H2 && !d->h2_goaway) {
            d->h2_goaway = true;
            px_h2_goaway(d->h2);
            h2d_flush(d);
        }
        if ((d->state == D_HEAD && d->in.len == 0) ||
            (d->state == D_H2 && d->nkids == 0 && d->out.len == 0) || loop_now(w->loop) >= m->deadline)
            dconn_close(d);
        d = next;
    }
    if (w->conns == NULL || loop_now(w->loop) >= m->deadline) {
        loop_timer_free(t);
        free(m);
        loop_stop(w->loop);
    }
}

static void drain_on_worker(void *arg)
{
    drain_msg_t *m = arg;
    worker_t *w = m->w;
    w->draining = true;
    while (w->listeners) {
        wlistener_t *wl = w->listeners;
        w->listeners = wl->next;
        wlistener_close(wl);
    }
    m->deadline = loop_now(w->loop) + w->srv->opt.drain_ms;
    m->t = loop_timer_new(w->loop, drain_tick, m);
    loop_timer_start(m->t, 0, 50);
}

void px_server_drain_and_stop(px_server_t *s)
{
    for (int i = 0; i < s->nworkers; i++) {
        drain_msg_t *m = calloc(1, sizeof(*m));
        if (m == NULL) {
            loop_stop(s->workers[i].loop);
            continue;
        }
        m->w = &s->workers[i];
        if (loop_post(s->workers[i].loop, drain_on_worker, m) < 0) {
            free(m);
            loop_stop(s->workers[i].loop);
        }
    }
    for (int i = 0; i < s->nworkers; i++)
        if (s->workers[i].loop) {
            pthread_join(s->workers[i].thread, NULL);
            s->workers[i].thread = 0;
        }
}

static void free_map(hmap_t *m, int kind)
{
    size_t it = 0;
    const char *k;
    void *v;
    while (hmap_next(m, &it, &k, &v)) {
        if (kind == 0) {
            ep_active_t *e = v;
            free(e->address);
            free(e);
        } else if (kind == 2) {
            px_metric_t *pm = v;
            free(pm->labels);
            free(pm);
        } else {
            lb_state_t *ls = v;
            px_lb_free(&ls->lb);
            free(ls->cluster);
            free(ls);
        }
    }
    hmap_clear(m);
}

void px_server_free(px_server_t *s)
{
    if (s == NULL)
        return;
    for (int i = 0; i < s->nworkers; i++) {
        worker_t *w = &s->workers[i];
        if (w->loop == NULL)
            continue;
        while (w->conns)
            dconn_close(w->conns);
        while (w->listeners) {
            wlistener_t *wl = w->listeners;
            w->listeners = wl->next;
            loop_io_del(wl->io);
            close(wl->fd);
            free(wl->key);
            free(wl->name);
            free(wl);
        }
        /* idle pool */
        size_t it = 0;
        const char *k;
        void *v;
        while (hmap_next(&w->idle, &it, &k, &v)) {
            uconn_t *u = v;
            while (u) {
                uconn_t *nx = u->next_idle;
                loop_io_del(u->io);
                loop_timer_free(u->timer);
                close(u->fd);
                uconn_free_cb(u);
                u = nx;
            }
        }
        hmap_clear(&w->idle);
        it = 0;
        while (hmap_next(&w->h2pool, &it, &k, &v)) {
            /* uconn_close unpools: start over each time */
            uconn_close(v);
            it = 0;
        }
        hmap_clear(&w->h2pool);
        free_map(&w->active, 0);
        free_map(&w->lbs, 1);
        free_map(&w->metrics, 2);
        loop_run_once(w->loop, 0); /* run deferred frees */
        loop_free(w->loop);
        px_tls_cache_free(w->tls);
        px_snapshot_unref(w->snap);
    }
    for (struct slistener *sl = s->listeners; sl;) {
        struct slistener *n = sl->next;
        free(sl->key);
        free(sl->name);
        free(sl->fds);
        free(sl);
        sl = n;
    }
    px_snapshot_unref(s->current);
    while (s->cbs) {
        cb_state_t *n = s->cbs->next;
        od_host_t *h = atomic_load(&s->cbs->hosts);
        while (h) {
            od_host_t *hn = h->next;
            free(h->address);
            free(h);
            h = hn;
        }
        free(s->cbs->name);
        free(s->cbs);
        s->cbs = n;
    }
    pthread_mutex_destroy(&s->mu);
    free(s->workers);
    px_secrets_free(s->own_secrets);
    free(s);
}

px_snapshot_t *px_server_snapshot(px_server_t *s)
{
    pthread_mutex_lock(&s->mu);
    px_snapshot_t *snap = px_snapshot_ref(s->current);
    pthread_mutex_unlock(&s->mu);
    return snap;
}

/* One collection: each worker copies its metrics in, the caller waits. */
typedef struct collect {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int pending;
    int refs; /* the caller + each worker job not yet run */
    px_metric_t *out;
    size_t n, cap;
} collect_t;

typedef struct collect_job {
    collect_t *c;
    worker_t *w;
} collect_job_t;

static void collect_put(collect_t *c)
{
    /* called with c->mu held; frees when the last holder leaves */
    if (--c->refs == 0) {
        pthread_mutex_unlock(&c->mu);
        px_metrics_free(c->out, c->n);
        pthread_cond_destroy(&c->cv);
        pthread_mutex_destroy(&c->mu);
        free(c);
        return;
    }
    pthread_mutex_unlock(&c->mu);
}

static void collect_on_worker(void *arg)
{
    collect_job_t *j = arg;
    collect_t *c = j->c;
    size_t it = 0;
    const char *k;
    void *v;
    pthread_mutex_lock(&c->mu);
    while (hmap_next(&j->w->metrics, &it, &k, &v)) {
        const px_metric_t *m = v;
        px_metric_t *dst = NULL;
        for (size_t i = 0; i < c->n; i++)
            if (strcmp(c->out[i].labels, m->labels) == 0)
                dst = &c->out[i];
        if (dst == NULL) {
            if (c->n == c->cap) {
                size_t cap = c->cap ? c->cap * 2 : 16;
                px_metric_t *nw = realloc(c->out, cap * sizeof(*nw));
                if (nw == NULL)
                    break;
                c->out = nw;
                c->cap = cap;
            }
            dst = &c->out[c->n];
            memset(dst, 0, sizeof(*dst));
            dst->labels = strdup(m->labels);
            if (dst->labels == NULL)
                break;
            dst->tcp = m->tcp;
            c->n++;
        }
        dst->requests += m->requests;
        for (size_t i = 0; i <= PX_DUR_BUCKETS; i++)
            dst->dur[i] += m->dur[i];
        dst->dur_sum += m->dur_sum;
        for (size_t i = 0; i <= PX_SIZE_BUCKETS; i++) {
            dst->req_size[i] += m->req_size[i];
            dst->resp_size[i] += m->resp_size[i];
        }
        dst->req_size_sum += m->req_size_sum;
        dst->resp_size_sum += m->resp_size_sum;
        dst->tcp_opened += m->tcp_opened;
        dst->tcp_closed += m->tcp_closed;
        dst->tcp_sent += m->tcp_sent;
        dst->tcp_received += m->tcp_received;
    }
    c->pending--;
    pthread_cond_signal(&c->cv);
    free(j);
    collect_put(c);
}

size_t px_server_metrics(px_server_t *s, px_metric_t **out)
{
    *out = NULL;
    collect_t *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return 0;
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cv, NULL);
    c->refs = 1;
    pthread_mutex_lock(&c->mu);
    for (int i = 0; i < s->nworkers; i++) {
        collect_job_t *j = malloc(sizeof(*j));
        if (j == NULL)
            continue;
        j->c = c;
        j->w = &s->workers[i];
        c->pending++;
        c->refs++;
        if (loop_post(s->workers[i].loop, collect_on_worker, j) < 0) {
            c->pending--;
            c->refs--;
            free(j);
        }
    }
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += 1;
    while (c->pending > 0)
        if (pthread_cond_timedwait(&c->cv, &c->mu, &dl) != 0)
            break;
    /* hand over what was collected; late workers add to nothing we read */
    px_metric_t *copy = calloc(c->n ? c->n : 1, sizeof(*copy));
    size_t n = 0;
    for (size_t i = 0; copy && i < c->n; i++) {
        copy[n] = c->out[i];
        copy[n].labels = strdup(c->out[i].labels);
        if (copy[n].labels)
            n++;
    }
    collect_put(c);
    *out = copy;
    return n;
}

void px_metrics_free(px_metric_t *m, size_t n)
{
    for (size_t i = 0; m && i < n; i++)
        free(m[i].labels);
    free(m);
}

void px_server_counters(px_server_t *s, px_counters_t *out)
{
    memset(out, 0, sizeof(*out));
    for (int i = 0; i < s->nworkers; i++) {
        wstats_t *st = &s->workers[i].st;
        out->downstream_cx_total += CGET(st->cx_total);
        out->downstream_cx_active += CGET(st->cx_active);
        out->downstream_rq_total += CGET(st->rq_total);
        out->upstream_cx_total += CGET(st->ucx_total);
        out->upstream_rq_total += CGET(st->urq_total);
        out->upstream_cx_reused += CGET(st->ucx_reused);
        out->rq_2xx += CGET(st->rq_2xx);
        out->rq_3xx += CGET(st->rq_3xx);
        out->rq_4xx += CGET(st->rq_4xx);
        out->rq_5xx += CGET(st->rq_5xx);
        out->fault_abort += CGET(st->fault_abort);
        out->fault_delay += CGET(st->fault_delay);
        out->retry += CGET(st->retry);
        out->retry_success += CGET(st->retry_success);
        out->retry_exhausted += CGET(st->retry_exhausted);
        out->cx_overflow += CGET(st->cx_overflow);
        out->rq_pending_overflow += CGET(st->rq_pending_overflow);
        out->retry_overflow += CGET(st->retry_overflow);
        out->shadow_sent += CGET(st->shadow_sent);
        out->shadow_failed += CGET(st->shadow_failed);
        out->od_ejections += CGET(st->od_ejections);
        out->od_eject_5xx += CGET(st->od_eject_5xx);
        out->od_eject_gw += CGET(st->od_eject_gw);
        out->od_overflow += CGET(st->od_overflow);
        out->ssl_handshake += CGET(st->ssl_handshake);
        out->ssl_fail += CGET(st->ssl_fail);
        out->rbac_allowed += CGET(st->rbac_allowed);
        out->rbac_denied += CGET(st->rbac_denied);
        out->rbac_shadow_denied += CGET(st->rbac_shadow_denied);
        out->no_filter_chain += CGET(st->no_chain);
        out->tunnels_spliced += CGET(st->spliced);
        out->h2_streams_down += CGET(st->h2_down.streams);
        out->h2_streams_up += CGET(st->h2_up.streams);
        out->h2_rx_reset += CGET(st->h2_down.rx_reset) + CGET(st->h2_up.rx_reset);
        out->h2_tx_reset += CGET(st->h2_down.tx_reset) + CGET(st->h2_up.tx_reset);
        out->h2_goaway_sent += CGET(st->h2_down.goaway_sent) + CGET(st->h2_up.goaway_sent);
        out->h2_goaway_rx += CGET(st->h2_down.goaway_rx) + CGET(st->h2_up.goaway_rx);
    }
}
