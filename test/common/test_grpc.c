/* Tests of gRPC over HTTP/2 (common/grpc) and the TLS transport, in process on
 * 127.0.0.1 with ephemeral ports: the server runs on its own loop thread, the
 * clients on the test's thread. Certificates are made here with OpenSSL.
 *
 * The binary also serves the interop test (test_grpc_interop.sh):
 *   test_grpc --certs DIR            writes ca.pem, server.pem/-key.pem, client.pem/-key.pem
 *   test_grpc --serve DIR [--tls]    echo server; writes DIR/port, runs until stdin closes
 *   test_grpc --call ADDR [--tls DIR] unary + bidi calls to test.Echo; prints "ok ..." lines
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include <nghttp2/nghttp2.h>

#include "../../common/grpc.h"
#include "../../common/log.h"

/* --- certificates ------------------------------------------------------------ */

typedef struct pem_pair {
    char *cert, *key;
} pem_pair_t;

static char *bio_string(BIO *b)
{
    char *p;
    long n = BIO_get_mem_data(b, &p);
    char *s = malloc((size_t)n + 1);
    memcpy(s, p, (size_t)n);
    s[n] = 0;
    return s;
}

/* A P-256 certificate for cn, signed by issuer (NULL: self-signed). san is
 * an OpenSSL subjectAltName value ("IP:127.0.0.1,URI:spiffe://..."). */
static pem_pair_t make_cert(const char *cn, bool ca, const char *san, const pem_pair_t *issuer)
{
    EVP_PKEY *key = EVP_EC_gen("P-256");
    assert_non_null(key);
    X509 *x = X509_new();
    X509_set_version(x, 2);
    static long serial = 1;
    ASN1_INTEGER_set(X509_get_serialNumber(x), serial++);
    X509_gmtime_adj(X509_getm_notBefore(x), -3600);
    X509_gmtime_adj(X509_getm_notAfter(x), 86400);
    X509_NAME *name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
    X509_set_pubkey(x, key);
    X509 *icert = NULL;
    EVP_PKEY *ikey = key;
    if (issuer) {
        BIO *b = BIO_new_mem_buf(issuer->cert, -1);
        icert = PEM_read_bio_X509(b, NULL, NULL, NULL);
        BIO_free(b);
        b = BIO_new_mem_buf(issuer->key, -1);
        ikey = PEM_read_bio_PrivateKey(b, NULL, NULL, NULL);
        BIO_free(b);
        X509_set_issuer_name(x, X509_get_subject_name(icert));
    } else {
        X509_set_issuer_name(x, name);
    }
    X509V3_CTX ctx;
    X509V3_set_ctx(&ctx, icert ? icert : x, x, NULL, NULL, 0);
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &ctx, NID_basic_constraints,
                                              ca ? "critical,CA:TRUE" : "CA:FALSE");
    X509_add_ext(x, ext, -1);
    X509_EXTENSION_free(ext);
    if (ca) {
        ext = X509V3_EXT_conf_nid(NULL, &ctx, NID_key_usage, "critical,keyCertSign,cRLSign");
        X509_add_ext(x, ext, -1);
        X509_EXTENSION_free(ext);
    }
    if (san) {
        ext = X509V3_EXT_conf_nid(NULL, &ctx, NID_subject_alt_name, san);
        assert_non_null(ext);
        X509_add_ext(x, ext, -1);
        X509_EXTENSION_free(ext);
    }
    assert_true(X509_sign(x, ikey, EVP_sha256()) > 0);
    BIO *cb = BIO_new(BIO_s_mem()), *kb = BIO_new(BIO_s_mem());
    PEM_write_bio_X509(cb, x);
    PEM_write_bio_PrivateKey(kb, key, NULL, NULL, 0, NULL, NULL);
    pem_pair_t out = {bio_string(cb), bio_string(kb)};
    BIO_free(cb);
    BIO_free(kb);
    X509_free(x);
    X509_free(icert);
    if (ikey != key)
        EVP_PKEY_free(ikey);
    EVP_PKEY_free(key);
    return out;
}

static void pem_free(pem_pair_t *p)
{
    free(p->cert);
    free(p->key);
}

typedef struct pki {
    pem_pair_t ca, server, client, ca2, server2;
} pki_t;

static pki_t g_pki;

static void pki_make(pki_t *p)
{
    p->ca = make_cert("test root", true, NULL, NULL);
    p->server = make_cert("server", false, "DNS:localhost,IP:127.0.0.1", &p->ca);
    p->client =
        make_cert("client", false, "URI:spiffe://cluster.local/ns/default/sa/tester", &p->ca);
    p->ca2 = make_cert("other root", true, NULL, NULL);
    p->server2 = make_cert("server two", false, "DNS:localhost,IP:127.0.0.1", &p->ca2);
}

/* --- the test server (its own loop thread) ------------------------------------------- */

typedef struct srv_state {
    pthread_mutex_t mu;
    int opened, cancels, closes, half_closes, messages;
    char auth[128];
    char peer[64];
    char spiffe[128];
    size_t flood_max_queued;
    int flood_sent;
    bool flood_done;
} srv_state_t;

typedef struct server_fx {
    loop_t *loop;
    pthread_t th;
    grpc_server_t *srv;
    int port;
    char addr[64];
    tp_tls_ctx_t *tls;
    srv_state_t st;
} server_fx_t;

#define LOCKED(fx, stmt)                                                                           \
    do {                                                                                           \
        pthread_mutex_lock(&(fx)->st.mu);                                                          \
        stmt;                                                                                      \
        pthread_mutex_unlock(&(fx)->st.mu);                                                        \
    } while (0)

/* Echo: every message comes back; half-close ends the call with OK. An
 * "x-fail" request header ends the call at once with that status. */
static void echo_open(grpc_stream_t *s, void *arg)
{
    server_fx_t *fx = arg;
    const char *auth = grpc_stream_header(s, "authorization");
    char *sans[4];
    int nsans = tp_peer_uri_sans(grpc_stream_transport(s), sans, 4);
    LOCKED(fx, {
        fx->st.opened++;
        snprintf(fx->st.auth, sizeof(fx->st.auth), "%s", auth ? auth : "");
        snprintf(fx->st.peer, sizeof(fx->st.peer), "%s", grpc_stream_peer_addr(s));
        snprintf(fx->st.spiffe, sizeof(fx->st.spiffe), "%s", nsans > 0 ? sans[0] : "");
    });
    for (int i = 0; i < nsans; i++)
        free(sans[i]);
    if (auth)
        grpc_stream_add_header(s, "x-auth-echo", auth);
    const char *fail = grpc_stream_header(s, "x-fail");
    if (fail)
        grpc_stream_finish(s, atoi(fail), "refused: caf\xc3\xa9 100% \"sure\"");
}

static void echo_message(grpc_stream_t *s, void *data, const uint8_t *msg, size_t len)
{
    server_fx_t *fx = data;
    LOCKED(fx, fx->st.messages++);
    grpc_stream_send(s, msg, len);
}

static void echo_half_close(grpc_stream_t *s, void *data)
{
    server_fx_t *fx = data;
    LOCKED(fx, fx->st.half_closes++);
    grpc_stream_finish(s, GRPC_OK, NULL);
}

static void count_cancel(grpc_stream_t *s, void *data)
{
    (void)s;
    server_fx_t *fx = data;
    LOCKED(fx, fx->st.cancels++);
}

static void count_close(grpc_stream_t *s, void *data)
{
    (void)s;
    server_fx_t *fx = data;
    LOCKED(fx, fx->st.closes++);
}

/* Hold: opens and waits; only the client ends it. */
static void hold_open(grpc_stream_t *s, void *arg)
{
    server_fx_t *fx = arg;
    (void)s;
    LOCKED(fx, fx->st.opened++);
}

/* Later: answers from another thread through the *_async calls. */
static void *later_thread(void *arg)
{
    grpc_stream_t *s = arg;
    usleep(20000);
    grpc_stream_ref(s); /* one reference for each async call */
    grpc_stream_send_async(s, "from a thread", 13);
    grpc_stream_finish_async(s, GRPC_OK, NULL);
    return NULL;
}

static void later_open(grpc_stream_t *s, void *arg)
{
    (void)arg;
    pthread_t th;
    grpc_stream_ref(s);
    pthread_create(&th, NULL, later_thread, s);
    pthread_detach(th);
}

/* Flood: 256 messages of 64 KiB, paced by on_writable. */
enum { FLOOD_MSGS = 256, FLOOD_SIZE = 64 * 1024, FLOOD_HIGH = 256 * 1024 };

static void flood_more(grpc_stream_t *s, void *data)
{
    server_fx_t *fx = data;
    static uint8_t chunk[FLOOD_SIZE];
    for (;;) {
        int sent;
        LOCKED(fx, sent = fx->st.flood_sent);
        if (sent == FLOOD_MSGS) {
            grpc_stream_finish(s, GRPC_OK, NULL);
            LOCKED(fx, fx->st.flood_done = true);
            return;
        }
        if (grpc_stream_queued(s) >= FLOOD_HIGH)
            return; /* wait for on_writable */
        memset(chunk, sent & 0xff, sizeof(chunk));
        grpc_stream_send(s, chunk, sizeof(chunk));
        size_t q = grpc_stream_queued(s);
        LOCKED(fx, {
            fx->st.flood_sent++;
            if (q > fx->st.flood_max_queued)
                fx->st.flood_max_queued = q;
        });
    }
}

static void flood_open(grpc_stream_t *s, void *arg)
{
    flood_more(s, arg);
}

static void *server_main(void *arg)
{
    server_fx_t *fx = arg;
    loop_run(fx->loop);
    return NULL;
}

static void server_register(server_fx_t *fx)
{
    grpc_method_t echo = {.on_open = echo_open,
                          .on_message = echo_message,
                          .on_half_close = echo_half_close,
                          .on_cancel = count_cancel,
                          .on_close = count_close};
    assert_int_equal(grpc_server_register(fx->srv, "/test.Echo/Unary", &echo, fx), 0);
    assert_int_equal(grpc_server_register(fx->srv, "/test.Echo/Bidi", &echo, fx), 0);
    assert_int_equal(grpc_server_register(fx->srv, "/test.Echo/Bidi", &echo, fx), -1); /* twice */
    assert_int_equal(grpc_server_register(fx->srv, "no-slash", &echo, fx), -1);
    grpc_method_t hold = {.on_open = hold_open, .on_cancel = count_cancel, .on_close = count_close};
    assert_int_equal(grpc_server_register(fx->srv, "/test.Echo/Hold", &hold, fx), 0);
    grpc_method_t later = {.on_open = later_open, .on_close = count_close};
    assert_int_equal(grpc_server_register(fx->srv, "/test.Echo/Later", &later, fx), 0);
    grpc_method_t flood = {
        .on_open = flood_open, .on_writable = flood_more, .on_close = count_close};
    assert_int_equal(grpc_server_register(fx->srv, "/test.Echo/Flood", &flood, fx), 0);
}

static server_fx_t *server_start(tp_tls_ctx_t *tls, const grpc_server_opts_t *extra)
{
    server_fx_t *fx = calloc(1, sizeof(*fx));
    pthread_mutex_init(&fx->st.mu, NULL);
    fx->loop = loop_new();
    grpc_server_opts_t o = {0};
    if (extra)
        o = *extra;
    o.listen = "127.0.0.1:0";
    o.tls = tls;
    if (!o.handshake_timeout_ms)
        o.handshake_timeout_ms = 300;
    char err[256] = "";
    fx->srv = grpc_server_new(fx->loop, &o, err, sizeof(err));
    if (!fx->srv)
        fail_msg("grpc_server_new: %s", err);
    fx->port = grpc_server_port(fx->srv);
    assert_true(fx->port > 0);
    snprintf(fx->addr, sizeof(fx->addr), "127.0.0.1:%d", fx->port);
    server_register(fx);
    pthread_create(&fx->th, NULL, server_main, fx);
    return fx;
}

static void server_stop_cb(void *arg)
{
    server_fx_t *fx = arg;
    grpc_server_free(fx->srv);
    loop_stop(fx->loop);
}

static void server_stop(server_fx_t *fx)
{
    loop_post(fx->loop, server_stop_cb, fx);
    pthread_join(fx->th, NULL);
    loop_free(fx->loop);
    pthread_mutex_destroy(&fx->st.mu);
    free(fx);
}

typedef struct srv_query {
    server_fx_t *fx;
    size_t conns, streams;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;
} srv_query_t;

static void query_cb(void *arg)
{
    srv_query_t *q = arg;
    pthread_mutex_lock(&q->mu);
    q->conns = grpc_server_connections(q->fx->srv);
    q->streams = grpc_server_streams(q->fx->srv);
    q->done = true;
    pthread_cond_signal(&q->cv);
    pthread_mutex_unlock(&q->mu);
}

/* The server's connection and stream counts, read on its own thread. */
static void server_counts(server_fx_t *fx, size_t *conns, size_t *streams)
{
    srv_query_t q = {.fx = fx};
    pthread_mutex_init(&q.mu, NULL);
    pthread_cond_init(&q.cv, NULL);
    loop_post(fx->loop, query_cb, &q);
    pthread_mutex_lock(&q.mu);
    while (!q.done)
        pthread_cond_wait(&q.cv, &q.mu);
    pthread_mutex_unlock(&q.mu);
    pthread_mutex_destroy(&q.mu);
    pthread_cond_destroy(&q.cv);
    *conns = q.conns;
    *streams = q.streams;
}

/* --- client helpers ---------------------------------------------------------------------- */

typedef struct cres {
    int status;
    char msg[256];
    int nmsg;
    size_t total;
    uint8_t *last;
    size_t last_len;
    bool closed;
    char auth_echo[128];
    bool headers;
} cres_t;

static void c_headers(grpc_call_t *call, void *arg)
{
    (void)call;
    ((cres_t *)arg)->headers = true;
}

static void c_message(grpc_call_t *call, void *arg, const uint8_t *msg, size_t len)
{
    (void)call;
    cres_t *r = arg;
    r->nmsg++;
    r->total += len;
    free(r->last);
    r->last = malloc(len ? len : 1);
    memcpy(r->last, msg, len);
    r->last_len = len;
}

static void c_close(grpc_call_t *call, void *arg, int status, const char *message)
{
    cres_t *r = arg;
    r->status = status;
    snprintf(r->msg, sizeof(r->msg), "%s", message);
    const char *h = grpc_call_header(call, "x-auth-echo");
    snprintf(r->auth_echo, sizeof(r->auth_echo), "%s", h ? h : "");
    r->closed = true;
}

static const grpc_call_cbs_t CBS = {
    .on_headers = c_headers, .on_message = c_message, .on_close = c_close};

static void cres_free(cres_t *r)
{
    free(r->last);
    r->last = NULL;
}

typedef bool (*pred_fn)(void *arg);

/* Runs the loop until pred(arg) or timeout; returns pred's last value. */
static bool run_until(loop_t *l, pred_fn pred, void *arg, int timeout_ms)
{
    uint64_t end = loop_clock_ms() + (uint64_t)timeout_ms;
    while (!pred(arg)) {
        if (loop_clock_ms() > end)
            return false;
        loop_run_once(l, 5);
    }
    return true;
}

static bool closed_p(void *arg)
{
    return ((cres_t *)arg)->closed;
}

typedef struct all_closed {
    cres_t *r;
    int n;
} all_closed_t;

static bool all_closed_p(void *arg)
{
    all_closed_t *a = arg;
    for (int i = 0; i < a->n; i++)
        if (!a->r[i].closed)
            return false;
    return true;
}

static void fill(uint8_t *p, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)(i * 7 + seed);
}

/* One unary echo of `len` bytes on client c; returns the status. */
static int echo_once(loop_t *l, grpc_client_t *c, const char *path, size_t len,
                     const char *const *hdrs, cres_t *r)
{
    memset(r, 0, sizeof(*r));
    uint8_t *buf = malloc(len ? len : 1);
    fill(buf, len, (unsigned)len);
    grpc_call_t *call = grpc_call_start(c, path, hdrs, 20000, &CBS, r);
    assert_non_null(call);
    assert_int_equal(grpc_call_send(call, buf, len), 0);
    assert_int_equal(grpc_call_close_send(call), 0);
    assert_int_equal(grpc_call_send(call, "x", 1), -1); /* half-closed */
    if (!run_until(l, closed_p, r, 20000))
        fail_msg("call %s did not finish", path);
    if (r->status == GRPC_OK) {
        assert_int_equal(r->nmsg, 1);
        assert_int_equal(r->last_len, len);
        assert_memory_equal(r->last, buf, len);
    }
    free(buf);
    return r->status;
}

static grpc_client_t *connect_to(loop_t *l, server_fx_t *fx, const grpc_client_opts_t *o)
{
    char err[256] = "";
    grpc_client_t *c = grpc_client_connect(l, fx->addr, o, err, sizeof(err));
    if (!c)
        fail_msg("connect: %s", err);
    return c;
}

/* Frees a client and lets the loop finish closing it. */
static void client_done(loop_t *l, grpc_client_t *c)
{
    grpc_client_free(c);
    loop_run_once(l, 0);
}

/* --- plaintext ------------------------------------------------------------------------- */

static void test_unary_and_metadata(void **state)
{
    (void)state;
    server_fx_t *fx = server_start(NULL, NULL);
    loop_t *l = loop_new();
    grpc_client_t *c = connect_to(l, fx, NULL);
    cres_t r;
    const char *hdrs[] = {"authorization", "Bearer abc.def", NULL};
    assert_int_equal(echo_once(l, c, "/test.Echo/Unary", 11, hdrs, &r), GRPC_OK);
    assert_true(r.headers);
    assert_string_equal(r.auth_echo, "Bearer abc.def");
    pthread_mutex_lock(&fx->st.mu);
    assert_string_equal(fx->st.auth, "Bearer abc.def");
    assert_true(strncmp(fx->st.peer, "127.0.0.1:", 10) == 0);
    assert_string_equal(fx->st.spiffe, ""); /* plaintext: no peer certificate */
    pthread_mutex_unlock(&fx->st.mu);
    cres_free(&r);

    /* An empty message is a message too. */
    assert_int_equal(echo_once(l, c, "/test.Echo/Unary", 0, NULL, &r), GRPC_OK);
    cres_free(&r);

    /* A status with a message that needs percent-encoding, trailers-only. */
    const char *fail[] = {"x-fail", "16", NULL};
    assert_int_equal(echo_once(l, c, "/test.Echo/Unary", 3, fail, &r), GRPC_UNAUTHENTICATED);
    assert_string_equal(r.msg, "refused: caf\xc3\xa9 100% \"sure\"");
    assert_int_equal(r.nmsg, 0);
    cres_free(&r);

    /* Unknown method. */
    assert_int_equal(echo_once(l, c, "/test.Echo/Nope", 3, NULL, &r), GRPC_UNIMPLEMENTED);
    assert_non_null(strstr(r.msg, "/test.Echo/Nope"));
    cres_free(&r);

    /* Answer from another thread. */
    memset(&r, 0, sizeof(r));
    grpc_call_t *call = grpc_call_start(c, "/test.Echo/Later", NULL, 5000, &CBS, &r);
    grpc_call_close_send(call);
    assert_true(run_until(l, closed_p, &r, 5000));
    assert_int_equal(r.status, GRPC_OK);
    assert_int_equal(r.nmsg, 1);
    assert_memory_equal(r.last, "from a thread", 13);
    cres_free(&r);
    assert_true(grpc_client_alive(c));
    client_done(l, c);
    server_stop(fx);
    loop_free(l);
}

static void test_blocking_unary_helper(void **state)
{
    (void)state;
    server_fx_t *fx = server_start(NULL, NULL);
    uint8_t *resp = NULL;
    size_t len = 0;
    char *msg = NULL;
    const char *hdrs[] = {"authorization", "Bearer t", NULL};
    int st = grpc_unary_call(fx->addr, NULL, "/test.Echo/Unary", hdrs, "ping", 4, &resp, &len, 5000,
                             &msg);
    assert_int_equal(st, GRPC_OK);
    assert_int_equal(len, 4);
    assert_memory_equal(resp, "ping", 4);
    assert_string_equal(msg, "");
    free(resp);
    free(msg);

    /* Deadline: the Hold method never answers; the server sees the cancel. */
    uint64_t t0 = loop_clock_ms();
    st = grpc_unary_call(fx->addr, NULL, "/test.Echo/Hold", NULL, "x", 1, &resp, &len, 200, &msg);
    assert_int_equal(st, GRPC_DEADLINE_EXCEEDED);
    assert_true(loop_clock_ms() - t0 >= 190);
    assert_true(loop_clock_ms() - t0 < 3000);
    assert_null(resp);
    free(msg);
    for (int i = 0; i < 200; i++) {
        int cancels;
        LOCKED(fx, cancels = fx->st.cancels);
        if (cancels >= 1)
            break;
        usleep(10000);
    }
    LOCKED(fx, assert_int_equal(fx->st.cancels, 1));

    /* Nobody listening. */
    char addr[64];
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", fx->port);
    server_stop(fx);
    st = grpc_unary_call(addr, NULL, "/test.Echo/Unary", NULL, "x", 1, &resp, &len, 2000, &msg);
    assert_int_equal(st, GRPC_UNAVAILABLE);
    assert_non_null(strstr(msg, "refused"));
    free(msg);
    st = grpc_unary_call("not an address", NULL, "/test.Echo/Unary", NULL, "x", 1, &resp, &len,
                         2000, &msg);
    assert_int_equal(st, GRPC_UNAVAILABLE);
    free(msg);
}

static void test_bidi_streaming(void **state)
{
    (void)state;
    server_fx_t *fx = server_start(NULL, NULL);
    loop_t *l = loop_new();
    grpc_client_t *c = connect_to(l, fx, NULL);
    cres_t r = {0};
    grpc_call_t *call = grpc_call_start(c, "/test.Echo/Bidi", NULL, 0, &CBS, &r);
    char buf[32];
    /* Ping-pong: each answer arrives before the next request is sent. */
    for (int i = 0; i < 20; i++) {
        int n = snprintf(buf, sizeof(buf), "message %d", i);
        assert_int_equal(grpc_call_send(call, buf, (size_t)n), 0);
        int want = i + 1;
        uint64_t end = loop_clock_ms() + 5000;
        while (r.nmsg < want && loop_clock_ms() < end)
            loop_run_once(l, 5);
        assert_int_equal(r.nmsg, want);
        assert_int_equal(r.last_len, (size_t)n);
        assert_memory_equal(r.last, buf, (size_t)n);
    }
    assert_false(r.closed);
    grpc_call_close_send(call);
    assert_true(run_until(l, closed_p, &r, 5000));
    assert_int_equal(r.status, GRPC_OK);
    LOCKED(fx, assert_int_equal(fx->st.half_closes, 1));
    cres_free(&r);
    client_done(l, c);
    server_stop(fx);
    loop_free(l);
}

static void test_large_messages_and_limit(void **state)
{
    (void)state;
    server_fx_t *fx = server_start(NULL, NULL);
    loop_t *l = loop_new();
    grpc_client_t *c = connect_to(l, fx, NULL);
    cres_t r;
    /* 1-3 MiB each way: several times the 1 MiB stream window. */
    assert_int_equal(echo_once(l, c, "/test.Echo/Unary", 1u << 20, NULL, &r), GRPC_OK);
    cres_free(&r);
    assert_int_equal(echo_once(l, c, "/test.Echo/Unary", 3u << 20, NULL, &r), GRPC_OK);
    cres_free(&r);
    assert_int_equal(echo_once(l, c, "/test.Echo/Unary", GRPC_DEFAULT_MAX_RECV, NULL, &r), GRPC_OK);
    cres_free(&r);
    /* One byte above the server's 4 MiB limit. */
    assert_int_equal(echo_once(l, c, "/test.Echo/Unary", GRPC_DEFAULT_MAX_RECV + 1, NULL, &r),
                     GRPC_RESOURCE_EXHAUSTED);
    assert_non_null(strstr(r.msg, "larger than max"));
    cres_free(&r);
    /* The connection still works. */
    assert_int_equal(echo_once(l, c, "/test.Echo/Unary", 100, NULL, &r), GRPC_OK);
    cres_free(&r);
    client_done(l, c);

    /* The client's own receive limit. */
    grpc_client_opts_t o = {.max_recv_msg = 1000};
    c = connect_to(l, fx, &o);
    assert_int_equal(echo_once(l, c, "/test.Echo/Unary", 1000, NULL, &r), GRPC_OK);
    cres_free(&r);
    assert_int_equal(echo_once(l, c, "/test.Echo/Unary", 1001, NULL, &r), GRPC_RESOURCE_EXHAUSTED);
    cres_free(&r);
    client_done(l, c);
    server_stop(fx);
    loop_free(l);
}

static void test_client_cancel_reaches_server(void **state)
{
    (void)state;
    server_fx_t *fx = server_start(NULL, NULL);
    loop_t *l = loop_new();
    grpc_client_t *c = connect_to(l, fx, NULL);
    cres_t r = {0};
    grpc_call_t *call = grpc_call_start(c, "/test.Echo/Hold", NULL, 0, &CBS, &r);
    grpc_call_send(call, "x", 1);
    uint64_t end = loop_clock_ms() + 5000;
    int opened = 0;
    while (!opened && loop_clock_ms() < end) {
        loop_run_once(l, 5);
        LOCKED(fx, opened = fx->st.opened);
    }
    assert_int_equal(opened, 1);
    grpc_call_cancel(call);
    assert_true(r.closed);
    assert_int_equal(r.status, GRPC_CANCELLED);
    int cancels = 0, closes = 0;
    end = loop_clock_ms() + 5000;
    while (!closes && loop_clock_ms() < end) {
        loop_run_once(l, 5);
        LOCKED(fx, {
            cancels = fx->st.cancels;
            closes = fx->st.closes;
        });
    }
    assert_int_equal(cancels, 1);
    assert_int_equal(closes, 1);
    size_t conns, streams;
    server_counts(fx, &conns, &streams);
    assert_int_equal(conns, 1);
    assert_int_equal(streams, 0);

    /* A client that goes away cancels its open calls too. */
    cres_t r2 = {0};
    grpc_call_start(c, "/test.Echo/Hold", NULL, 0, &CBS, &r2);
    end = loop_clock_ms() + 5000;
    while (opened < 2 && loop_clock_ms() < end) {
        loop_run_once(l, 5);
        LOCKED(fx, opened = fx->st.opened);
    }
    grpc_client_free(c);
    assert_true(r2.closed);
    assert_int_equal(r2.status, GRPC_CANCELLED);
    loop_run_once(l, 0);
    end = loop_clock_ms() + 5000;
    while (cancels < 2 && loop_clock_ms() < end) {
        usleep(5000);
        LOCKED(fx, cancels = fx->st.cancels);
    }
    assert_int_equal(cancels, 2);
    server_stop(fx);
    loop_free(l);
}

enum { MANY_STREAMS = 1000, MANY_CONNS = 40, CALLS_PER_CONN = 5 };

static void test_many_streams_one_connection(void **state)
{
    (void)state;
    server_fx_t *fx = server_start(NULL, NULL);
    loop_t *l = loop_new();
    grpc_client_t *c = connect_to(l, fx, NULL);
    cres_t *r = calloc(MANY_STREAMS, sizeof(*r));
    grpc_call_t **calls = calloc(MANY_STREAMS, sizeof(*calls));
    for (int i = 0; i < MANY_STREAMS; i++) {
        calls[i] = grpc_call_start(c, "/test.Echo/Bidi", NULL, 0, &CBS, &r[i]);
        assert_non_null(calls[i]);
        char buf[16];
        int n = snprintf(buf, sizeof(buf), "s%d", i);
        grpc_call_send(calls[i], buf, (size_t)n);
    }
    /* All open at once on the server, one connection. */
    uint64_t end = loop_clock_ms() + 10000;
    int opened = 0;
    while (opened < MANY_STREAMS && loop_clock_ms() < end) {
        loop_run_once(l, 5);
        LOCKED(fx, opened = fx->st.opened);
    }
    assert_int_equal(opened, MANY_STREAMS);
    size_t conns, streams;
    server_counts(fx, &conns, &streams);
    assert_int_equal(conns, 1);
    assert_int_equal(streams, MANY_STREAMS);
    for (int i = 0; i < MANY_STREAMS; i++)
        grpc_call_close_send(calls[i]);
    all_closed_t a = {r, MANY_STREAMS};
    assert_true(run_until(l, all_closed_p, &a, 20000));
    for (int i = 0; i < MANY_STREAMS; i++) {
        char buf[16];
        int n = snprintf(buf, sizeof(buf), "s%d", i);
        assert_int_equal(r[i].status, GRPC_OK);
        assert_int_equal(r[i].nmsg, 1);
        assert_memory_equal(r[i].last, buf, (size_t)n);
        cres_free(&r[i]);
    }
    free(r);
    free(calls);
    client_done(l, c);
    server_stop(fx);
    loop_free(l);
}

static void test_many_connections(void **state)
{
    (void)state;
    server_fx_t *fx = server_start(NULL, NULL);
    loop_t *l = loop_new();
    grpc_client_t *c[MANY_CONNS];
    cres_t *r = calloc(MANY_CONNS * CALLS_PER_CONN, sizeof(*r));
    for (int i = 0; i < MANY_CONNS; i++) {
        c[i] = connect_to(l, fx, NULL);
        for (int j = 0; j < CALLS_PER_CONN; j++) {
            grpc_call_t *call = grpc_call_start(c[i], "/test.Echo/Unary", NULL, 10000, &CBS,
                                                &r[i * CALLS_PER_CONN + j]);
            grpc_call_send(call, "hello", 5);
            grpc_call_close_send(call);
        }
    }
    all_closed_t a = {r, MANY_CONNS * CALLS_PER_CONN};
    assert_true(run_until(l, all_closed_p, &a, 20000));
    for (int i = 0; i < MANY_CONNS * CALLS_PER_CONN; i++) {
        assert_int_equal(r[i].status, GRPC_OK);
        assert_int_equal(r[i].nmsg, 1);
        cres_free(&r[i]);
    }
    size_t conns, streams;
    server_counts(fx, &conns, &streams);
    assert_int_equal(conns, MANY_CONNS);
    for (int i = 0; i < MANY_CONNS; i++)
        grpc_client_free(c[i]);
    loop_run_once(l, 0);
    uint64_t end = loop_clock_ms() + 5000;
    do {
        usleep(5000);
        server_counts(fx, &conns, &streams);
    } while (conns && loop_clock_ms() < end);
    assert_int_equal(conns, 0);
    free(r);
    server_stop(fx);
    loop_free(l);
}

typedef struct flood_check {
    cres_t *r;
    server_fx_t *fx;
} flood_check_t;

static void test_flow_control_backpressure(void **state)
{
    (void)state;
    server_fx_t *fx = server_start(NULL, NULL);
    loop_t *l = loop_new();
    grpc_client_t *c = connect_to(l, fx, NULL);
    cres_t r = {0};
    grpc_call_t *call = grpc_call_start(c, "/test.Echo/Flood", NULL, 0, &CBS, &r);
    grpc_call_close_send(call);
    /* Let the call open, then stop reading for a while. */
    uint64_t end = loop_clock_ms() + 5000;
    while (r.nmsg == 0 && loop_clock_ms() < end)
        loop_run_once(l, 5);
    assert_true(r.nmsg > 0);
    usleep(300000);
    int sent_while_stalled;
    LOCKED(fx, sent_while_stalled = fx->st.flood_sent);
    /* HTTP/2 flow control held the server back: far less than the 16 MiB
     * total left it while nobody read, and its queue stayed bounded. */
    assert_true(sent_while_stalled * (size_t)FLOOD_SIZE < 8u * 1024 * 1024);
    assert_true(run_until(l, closed_p, &r, 20000));
    assert_int_equal(r.status, GRPC_OK);
    assert_int_equal(r.nmsg, FLOOD_MSGS);
    assert_int_equal(r.total, (size_t)FLOOD_MSGS * FLOOD_SIZE);
    assert_int_equal(r.last[0], (FLOOD_MSGS - 1) & 0xff);
    LOCKED(fx, assert_true(fx->st.flood_max_queued <= FLOOD_HIGH + FLOOD_SIZE + 5));
    cres_free(&r);
    client_done(l, c);
    server_stop(fx);
    loop_free(l);
}

/* --- hostile peers ---------------------------------------------------------------------- */

static int raw_connect(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    return fd;
}

/* Reads until the server closes; returns ms waited, or -1 on timeout. The
 * loop l (may be NULL) keeps running meanwhile, so its clients stay alive. */
static int wait_closed(int fd, int timeout_ms, loop_t *l)
{
    uint64_t t0 = loop_clock_ms();
    char buf[4096];
    for (;;) {
        int left = timeout_ms - (int)(loop_clock_ms() - t0);
        if (left <= 0)
            return -1;
        if (l)
            loop_run_once(l, 0);
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, left < 5 ? left : 5) <= 0)
            continue;
        ssize_t n = read(fd, buf, sizeof(buf));
        if (n <= 0)
            return (int)(loop_clock_ms() - t0);
    }
}

static void expect_still_serving(server_fx_t *fx)
{
    uint8_t *resp;
    size_t len;
    char *msg;
    int st = grpc_unary_call(fx->addr, NULL, "/test.Echo/Unary", NULL, "ok?", 3, &resp, &len, 5000,
                             &msg);
    assert_int_equal(st, GRPC_OK);
    free(resp);
    free(msg);
}

static void test_garbage_closes_only_that_connection(void **state)
{
    (void)state;
    grpc_server_opts_t o = {.keepalive_ms = 100, .keepalive_timeout_ms = 200};
    server_fx_t *fx = server_start(NULL, &o);
    /* A healthy long-lived client across all of this. */
    loop_t *l = loop_new();
    grpc_client_t *c = connect_to(l, fx, NULL);
    cres_t r = {0};
    grpc_call_t *call = grpc_call_start(c, "/test.Echo/Bidi", NULL, 0, &CBS, &r);
    grpc_call_send(call, "before", 6);
    uint64_t end = loop_clock_ms() + 5000;
    while (r.nmsg < 1 && loop_clock_ms() < end)
        loop_run_once(l, 5);
    assert_int_equal(r.nmsg, 1);

    /* Garbage instead of the HTTP/2 preface. */
    int fd = raw_connect(fx->port);
    const char junk[] = "\x16\x03\x01garbage garbage garbage garbage";
    assert_true(write(fd, junk, sizeof(junk)) > 0);
    assert_true(wait_closed(fd, 3000, l) >= 0);
    close(fd);

    /* An HTTP/1.1 request. */
    fd = raw_connect(fx->port);
    const char h1[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    assert_true(write(fd, h1, sizeof(h1) - 1) > 0);
    assert_true(wait_closed(fd, 3000, l) >= 0);
    close(fd);

    /* A truncated preface: closed by the handshake timeout (300 ms here). */
    fd = raw_connect(fx->port);
    assert_true(write(fd, "PRI * HTTP/2.0\r\n", 16) > 0);
    int waited = wait_closed(fd, 5000, l);
    assert_true(waited >= 200);
    close(fd);

    /* A valid preface and SETTINGS, then silence: keepalive pings go
     * unanswered and the server closes. */
    fd = raw_connect(fx->port);
    const char pre[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";
    assert_true(write(fd, pre, sizeof(pre) - 1) > 0);
    waited = wait_closed(fd, 5000, l);
    assert_true(waited >= 150);
    close(fd);

    /* A valid frame header announcing a huge frame. */
    fd = raw_connect(fx->port);
    const char big[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\xff\xff\xff\x00\x00\x00\x00\x00\x01";
    assert_true(write(fd, big, sizeof(big) - 1) > 0);
    assert_true(wait_closed(fd, 3000, l) >= 0);
    close(fd);

    /* The server serves new and old clients alike. */
    expect_still_serving(fx);
    grpc_call_send(call, "after", 5);
    end = loop_clock_ms() + 5000;
    while (r.nmsg < 2 && loop_clock_ms() < end)
        loop_run_once(l, 5);
    assert_int_equal(r.nmsg, 2);
    assert_memory_equal(r.last, "after", 5);
    /* The healthy client answered the keepalive pings and is still there. */
    assert_false(r.closed);
    assert_true(grpc_client_alive(c));
    grpc_call_close_send(call);
    assert_true(run_until(l, closed_p, &r, 5000));
    assert_int_equal(r.status, GRPC_OK);
    cres_free(&r);
    client_done(l, c);
    server_stop(fx);
    loop_free(l);
}

/* Decodes the HEADERS frames of stream 1 in buf; returns the :status. */
static int status_of_stream1(const uint8_t *buf, size_t len, bool *complete)
{
    nghttp2_hd_inflater *inf;
    assert_int_equal(nghttp2_hd_inflate_new(&inf), 0);
    int status = 0;
    *complete = false;
    size_t off = 0;
    while (off + 9 <= len) {
        size_t flen = (size_t)buf[off] << 16 | (size_t)buf[off + 1] << 8 | buf[off + 2];
        if (off + 9 + flen > len)
            break;
        uint8_t type = buf[off + 3];
        uint32_t sid = ((uint32_t)buf[off + 5] << 24 | (uint32_t)buf[off + 6] << 16 |
                        (uint32_t)buf[off + 7] << 8 | buf[off + 8]) &
                       0x7fffffffu;
        if (type == 1 && sid == 1) {
            const uint8_t *in = buf + off + 9;
            size_t inlen = flen;
            for (;;) {
                nghttp2_nv nv;
                int flags = 0;
                ssize_t rv = nghttp2_hd_inflate_hd2(inf, &nv, &flags, in, inlen, 1);
                assert_true(rv >= 0);
                in += rv;
                inlen -= (size_t)rv;
                if (flags & NGHTTP2_HD_INFLATE_EMIT) {
                    if (nv.namelen == 7 && memcmp(nv.name, ":status", 7) == 0)
                        status = atoi((const char *)nv.value);
                }
                if (flags & NGHTTP2_HD_INFLATE_FINAL) {
                    nghttp2_hd_inflate_end_headers(inf);
                    break;
                }
                if (inlen == 0 && !(flags & NGHTTP2_HD_INFLATE_EMIT))
                    break;
            }
            *complete = true;
        }
        off += 9 + flen;
    }
    nghttp2_hd_inflate_del(inf);
    return status;
}

static void test_bad_content_type_refused(void **state)
{
    (void)state;
    /* A hand-built request (literal HPACK fields) with a JSON content type:
     * the server answers HTTP 415 without reaching the method. */
    server_fx_t *fx = server_start(NULL, NULL);
    int fd = raw_connect(fx->port);
    uint8_t req[512];
    size_t n = 0;
    memcpy(req, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 24);
    n = 24;
    const uint8_t settings[] = {0, 0, 0, 4, 0, 0, 0, 0, 0};
    memcpy(req + n, settings, 9);
    n += 9;
    uint8_t block[256];
    size_t bl = 0;
    const char *fields[][2] = {{":method", "POST"},
                               {":scheme", "http"},
                               {":path", "/test.Echo/Unary"},
                               {":authority", "x"},
                               {"content-type", "application/json"}};
    for (size_t i = 0; i < 5; i++) {
        size_t nl = strlen(fields[i][0]), vl = strlen(fields[i][1]);
        block[bl++] = 0x00; /* literal without indexing, new name */
        block[bl++] = (uint8_t)nl;
        memcpy(block + bl, fields[i][0], nl);
        bl += nl;
        block[bl++] = (uint8_t)vl;
        memcpy(block + bl, fields[i][1], vl);
        bl += vl;
    }
    const uint8_t hd[] = {0, 0, (uint8_t)bl, 1, 0x05 /* END_STREAM|END_HEADERS */, 0, 0, 0, 1};
    memcpy(req + n, hd, 9);
    n += 9;
    memcpy(req + n, block, bl);
    n += bl;
    assert_int_equal(write(fd, req, n), (ssize_t)n);
    uint8_t buf[8192];
    size_t got = 0;
    uint64_t end = loop_clock_ms() + 3000;
    bool complete = false;
    int status = 0;
    while (!complete && loop_clock_ms() < end && got < sizeof(buf)) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 100) <= 0)
            continue;
        ssize_t k = read(fd, buf + got, sizeof(buf) - got);
        if (k <= 0)
            break;
        got += (size_t)k;
        status = status_of_stream1(buf, got, &complete);
    }
    close(fd);
    assert_true(complete);
    assert_int_equal(status, 415);
    LOCKED(fx, assert_int_equal(fx->st.opened, 0));
    expect_still_serving(fx);
    server_stop(fx);
}

/* --- TLS ---------------------------------------------------------------------------------- */

static tp_tls_ctx_t *server_tls(const pem_pair_t *cert, tp_verify_t verify)
{
    tp_tls_config_t cfg = {.cert_pem = cert->cert, .key_pem = cert->key, .verify = verify};
    if (verify != TP_VERIFY_NONE)
        cfg.ca_pem = g_pki.ca.cert;
    char err[256] = "";
    tp_tls_ctx_t *t = tp_tls_server_new(&cfg, err, sizeof(err));
    if (!t)
        fail_msg("server tls: %s", err);
    return t;
}

static tp_tls_ctx_t *client_tls(const pem_pair_t *cert, const char *ca)
{
    tp_tls_config_t cfg = {.ca_pem = ca, .verify = TP_VERIFY_REQUIRE, .verify_name = "localhost"};
    if (cert) {
        cfg.cert_pem = cert->cert;
        cfg.key_pem = cert->key;
    }
    char err[256] = "";
    tp_tls_ctx_t *t = tp_tls_client_new(&cfg, err, sizeof(err));
    if (!t)
        fail_msg("client tls: %s", err);
    return t;
}

static void test_tls_unary_bidi_large(void **state)
{
    (void)state;
    tp_tls_ctx_t *st = server_tls(&g_pki.server, TP_VERIFY_NONE);
    server_fx_t *fx = server_start(st, NULL);
    tp_tls_ctx_t *ct = client_tls(NULL, g_pki.ca.cert);
    loop_t *l = loop_new();
    grpc_client_opts_t o = {.tls = ct, .sni = "localhost"};
    grpc_client_t *c = connect_to(l, fx, &o);
    cres_t r;
    const char *hdrs[] = {"authorization", "Bearer tls", NULL};
    assert_int_equal(echo_once(l, c, "/test.Echo/Unary", 100, hdrs, &r), GRPC_OK);
    assert_string_equal(r.auth_echo, "Bearer tls");
    cres_free(&r);
    assert_int_equal(echo_once(l, c, "/test.Echo/Bidi", 3u << 20, NULL, &r), GRPC_OK);
    cres_free(&r);
    client_done(l, c);

    /* Blocking helper over TLS. */
    uint8_t *resp;
    size_t len;
    char *msg;
    assert_int_equal(
        grpc_unary_call(fx->addr, &o, "/test.Echo/Unary", NULL, "tls", 3, &resp, &len, 5000, &msg),
        GRPC_OK);
    assert_memory_equal(resp, "tls", 3);
    free(resp);
    free(msg);

    /* A client that trusts another root refuses the server. */
    tp_tls_ctx_t *wrong = client_tls(NULL, g_pki.ca2.cert);
    grpc_client_opts_t ow = {.tls = wrong};
    int s =
        grpc_unary_call(fx->addr, &ow, "/test.Echo/Unary", NULL, "x", 1, &resp, &len, 5000, &msg);
    assert_int_equal(s, GRPC_UNAVAILABLE);
    assert_non_null(strstr(msg, "certificate"));
    free(msg);
    /* A plaintext client on the TLS port fails, the server goes on. */
    s = grpc_unary_call(fx->addr, NULL, "/test.Echo/Unary", NULL, "x", 1, &resp, &len, 2000, &msg);
    assert_int_not_equal(s, GRPC_OK);
    free(msg);
    assert_int_equal(
        grpc_unary_call(fx->addr, &o, "/test.Echo/Unary", NULL, "y", 1, &resp, &len, 5000, &msg),
        GRPC_OK);
    free(resp);
    free(msg);

    /* A TLS client that vanishes while the server is writing to it: the
     * server's writes fail with EPIPE/ECONNRESET (no SIGPIPE) and it goes on. */
    c = connect_to(l, fx, &o);
    memset(&r, 0, sizeof(r));
    grpc_call_t *fl = grpc_call_start(c, "/test.Echo/Flood", NULL, 0, &CBS, &r);
    grpc_call_close_send(fl);
    uint64_t end = loop_clock_ms() + 5000;
    while (r.nmsg == 0 && loop_clock_ms() < end)
        loop_run_once(l, 5);
    assert_true(r.nmsg > 0);
    client_done(l, c);
    cres_free(&r);
    usleep(100000);
    assert_int_equal(
        grpc_unary_call(fx->addr, &o, "/test.Echo/Unary", NULL, "z", 1, &resp, &len, 5000, &msg),
        GRPC_OK);
    free(resp);
    free(msg);

    tp_tls_ctx_unref(wrong);
    tp_tls_ctx_unref(ct);
    tp_tls_ctx_unref(st);
    server_stop(fx);
    loop_free(l);
}

static void test_tls_client_certificate_required(void **state)
{
    (void)state;
    tp_tls_ctx_t *st = server_tls(&g_pki.server, TP_VERIFY_REQUIRE);
    server_fx_t *fx = server_start(st, NULL);
    tp_tls_ctx_t *with = client_tls(&g_pki.client, g_pki.ca.cert);
    tp_tls_ctx_t *without = client_tls(NULL, g_pki.ca.cert);
    uint8_t *resp;
    size_t len;
    char *msg;
    grpc_client_opts_t o = {.tls = with};
    assert_int_equal(
        grpc_unary_call(fx->addr, &o, "/test.Echo/Unary", NULL, "mtls", 4, &resp, &len, 5000, &msg),
        GRPC_OK);
    free(resp);
    free(msg);
    LOCKED(fx, assert_string_equal(fx->st.spiffe, "spiffe://cluster.local/ns/default/sa/tester"));

    grpc_client_opts_t on = {.tls = without};
    int s =
        grpc_unary_call(fx->addr, &on, "/test.Echo/Unary", NULL, "x", 1, &resp, &len, 5000, &msg);
    assert_int_equal(s, GRPC_UNAVAILABLE);
    free(msg);
    LOCKED(fx, assert_int_equal(fx->st.opened, 1)); /* the second call never reached a method */

    tp_tls_ctx_unref(with);
    tp_tls_ctx_unref(without);
    tp_tls_ctx_unref(st);
    server_stop(fx);
}

static void test_tls_certificate_swap(void **state)
{
    (void)state;
    tp_tls_ctx_t *st = server_tls(&g_pki.server, TP_VERIFY_NONE);
    server_fx_t *fx = server_start(st, NULL);
    tp_tls_ctx_t *trust1 = client_tls(NULL, g_pki.ca.cert);
    tp_tls_ctx_t *trust2 = client_tls(NULL, g_pki.ca2.cert);
    loop_t *l = loop_new();
    grpc_client_opts_t o1 = {.tls = trust1}, o2 = {.tls = trust2};
    grpc_client_t *old = connect_to(l, fx, &o1);
    cres_t r;
    assert_int_equal(echo_once(l, old, "/test.Echo/Unary", 10, NULL, &r), GRPC_OK);
    cres_free(&r);

    /* Swap to a certificate from the other root. */
    tp_tls_config_t cfg = {.cert_pem = g_pki.server2.cert, .key_pem = g_pki.server2.key};
    char err[256];
    assert_int_equal(tp_tls_ctx_update(st, &cfg, err, sizeof(err)), 0);
    /* A broken update is refused and changes nothing. */
    tp_tls_config_t bad = {.cert_pem = g_pki.server2.cert, .key_pem = g_pki.server.key};
    assert_int_equal(tp_tls_ctx_update(st, &bad, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "key"));

    /* New handshakes get the new certificate... */
    uint8_t *resp;
    size_t len;
    char *msg;
    assert_int_equal(
        grpc_unary_call(fx->addr, &o2, "/test.Echo/Unary", NULL, "new", 3, &resp, &len, 5000, &msg),
        GRPC_OK);
    free(resp);
    free(msg);
    assert_int_equal(
        grpc_unary_call(fx->addr, &o1, "/test.Echo/Unary", NULL, "new", 3, &resp, &len, 5000, &msg),
        GRPC_UNAVAILABLE);
    free(msg);
    /* ...while the connection made before goes on. */
    assert_int_equal(echo_once(l, old, "/test.Echo/Unary", 10, NULL, &r), GRPC_OK);
    cres_free(&r);
    client_done(l, old);
    tp_tls_ctx_unref(trust1);
    tp_tls_ctx_unref(trust2);
    tp_tls_ctx_unref(st);
    server_stop(fx);
    loop_free(l);
}

static void test_tls_write_to_closed_peer(void **state)
{
    (void)state;
    /* The peer is gone before the handshake: the ClientHello write fails
     * with an error, not a SIGPIPE that would end the process. */
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
    close(sv[1]);
    tp_tls_ctx_t *ct = client_tls(NULL, g_pki.ca.cert);
    tp_conn_t *c = tp_conn_tls_client(sv[0], ct, "localhost");
    assert_non_null(c);
    assert_int_equal(tp_write(c, "x", 1), TP_ERROR);
    assert_true(strlen(tp_error(c)) > 0);
    tp_close(c);
    /* The same through a plaintext connection. */
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
    close(sv[1]);
    c = tp_conn_plain(sv[0]);
    assert_int_equal(tp_write(c, "x", 1), TP_ERROR);
    tp_close(c);
    tp_tls_ctx_unref(ct);
}

static void test_tls_config_errors(void **state)
{
    (void)state;
    char err[256];
    tp_tls_config_t none = {0};
    assert_null(tp_tls_server_new(&none, err, sizeof(err)));
    assert_non_null(strstr(err, "certificate and a key"));
    tp_tls_config_t junk = {.cert_pem = "not a pem", .key_pem = "nope"};
    assert_null(tp_tls_server_new(&junk, err, sizeof(err)));
    assert_non_null(strstr(err, "certificate"));
    tp_tls_config_t nofile = {.cert_file = "/nonexistent/cert.pem",
                              .key_file = "/nonexistent/key.pem"};
    assert_null(tp_tls_server_new(&nofile, err, sizeof(err)));
    assert_non_null(strstr(err, "/nonexistent/cert.pem"));
    tp_tls_config_t noca = {.verify = TP_VERIFY_REQUIRE};
    assert_null(tp_tls_client_new(&noca, err, sizeof(err)));
    assert_non_null(strstr(err, "trust bundle"));
    grpc_server_opts_t o = {.listen = "127.0.0.1:99999"};
    loop_t *l = loop_new();
    assert_null(grpc_server_new(l, &o, err, sizeof(err)));
    assert_non_null(strstr(err, "127.0.0.1:99999"));
    loop_free(l);
}

/* --- interop helper modes ----------------------------------------------------------------------
 */

static void write_file(const char *dir, const char *name, const char *text)
{
    char path[1024];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    if (!f) {
        perror(path);
        exit(1);
    }
    fputs(text, f);
    fclose(f);
}

static char *read_file(const char *dir, const char *name)
{
    char path[1024];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "r");
    if (!f) {
        perror(path);
        exit(1);
    }
    static char buf[3][16384];
    static int i;
    char *b = buf[i++ % 3];
    size_t n = fread(b, 1, sizeof(buf[0]) - 1, f);
    b[n] = 0;
    fclose(f);
    return b;
}

static void *stdin_watch(void *arg)
{
    char c;
    while (read(0, &c, 1) > 0) {
    }
    loop_stop(arg);
    return NULL;
}

static int mode_serve(const char *dir, bool tls)
{
    tp_tls_ctx_t *t = NULL;
    if (tls) {
        tp_tls_config_t cfg = {.cert_pem = read_file(dir, "server.pem"),
                               .key_pem = read_file(dir, "server-key.pem")};
        char err[256];
        t = tp_tls_server_new(&cfg, err, sizeof(err));
        if (!t) {
            fprintf(stderr, "%s\n", err);
            return 1;
        }
    }
    server_fx_t *fx = server_start(t, NULL);
    char port[16];
    snprintf(port, sizeof(port), "%d\n", fx->port);
    write_file(dir, tls ? "port-tls.tmp" : "port.tmp", port);
    char a[1024], b[1024];
    snprintf(a, sizeof(a), "%s/%s", dir, tls ? "port-tls.tmp" : "port.tmp");
    snprintf(b, sizeof(b), "%s/%s", dir, tls ? "port-tls" : "port");
    rename(a, b);
    /* Run until stdin closes (the test script ends). */
    loop_t *waiter = loop_new();
    pthread_t th;
    pthread_create(&th, NULL, stdin_watch, waiter);
    loop_run(waiter);
    pthread_join(th, NULL);
    loop_free(waiter);
    server_stop(fx);
    tp_tls_ctx_unref(t);
    return 0;
}

/* test.Msg{data} in protobuf wire format (field 1, length-delimited). */
static uint8_t *pb_msg(const void *data, size_t len, size_t *out_len)
{
    uint8_t *b = malloc(len + 11), *p = b;
    *p++ = 0x0a;
    size_t v = len;
    do {
        *p = (uint8_t)(v & 0x7f);
        v >>= 7;
        if (v)
            *p |= 0x80;
        p++;
    } while (v);
    memcpy(p, data, len);
    *out_len = (size_t)(p - b) + len;
    return b;
}

static int mode_call(const char *addr, const char *tlsdir)
{
    grpc_client_opts_t o = {.max_recv_msg = 8u << 20};
    tp_tls_ctx_t *t = NULL;
    const char *label = tlsdir ? "TLS" : "plaintext";
    if (tlsdir) {
        tp_tls_config_t cfg = {.ca_pem = read_file(tlsdir, "ca.pem"),
                               .verify = TP_VERIFY_REQUIRE,
                               .verify_name = "localhost"};
        char err[256];
        t = tp_tls_client_new(&cfg, err, sizeof(err));
        if (!t) {
            fprintf(stderr, "%s\n", err);
            return 1;
        }
        o.tls = t;
        o.sni = "localhost";
    }
    const char *hdrs[] = {"authorization", "Bearer interop", NULL};
    uint8_t *resp;
    size_t len, qlen, wlen;
    char *msg;
    int rc = 0;
    /* The grpc-js server's Unary answers "echo:" + data when the request
     * carries authorization, else UNAUTHENTICATED. */
    uint8_t *q = pb_msg("hello", 5, &qlen);
    uint8_t *want = pb_msg("echo:hello", 10, &wlen);
    int st = grpc_unary_call(addr, &o, "/test.Echo/Unary", hdrs, q, qlen, &resp, &len, 5000, &msg);
    if (st == GRPC_OK && len == wlen && memcmp(resp, want, wlen) == 0) {
        printf("ok meshd client -> grpc-js server (%s): unary with metadata\n", label);
    } else {
        printf("not ok meshd client -> grpc-js server (%s): unary: status %d (%s)\n", label, st,
               msg);
        rc = 1;
    }
    if (st == GRPC_OK)
        free(resp);
    free(msg);
    st = grpc_unary_call(addr, &o, "/test.Echo/Unary", NULL, q, qlen, &resp, &len, 5000, &msg);
    if (st == GRPC_UNAUTHENTICATED && strcmp(msg, "no token: caf\xc3\xa9 100%") == 0) {
        printf("ok meshd client -> grpc-js server (%s): status code and message\n", label);
    } else {
        printf("not ok meshd client -> grpc-js server (%s): status: %d (%s)\n", label, st, msg);
        rc = 1;
    }
    if (st == GRPC_OK)
        free(resp);
    free(msg);
    free(q);
    free(want);
    st = grpc_unary_call(addr, &o, "/test.Echo/Missing", NULL, "", 0, &resp, &len, 5000, &msg);
    if (st == GRPC_UNIMPLEMENTED) {
        printf("ok meshd client -> grpc-js server (%s): unknown method\n", label);
    } else {
        printf("not ok meshd client -> grpc-js server (%s): unknown method: %d (%s)\n", label, st,
               msg);
        rc = 1;
    }
    if (st == GRPC_OK)
        free(resp);
    free(msg);
    /* Bidi: 3 messages of growing size (the last 2 MiB), each echoed. */
    loop_t *l = loop_new();
    char err[256];
    grpc_client_t *c = grpc_client_connect(l, addr, &o, err, sizeof(err));
    cres_t r = {0};
    if (c) {
        grpc_call_t *call = grpc_call_start(c, "/test.Echo/Bidi", hdrs, 10000, &CBS, &r);
        size_t sizes[3] = {1, 1000, 2u << 20};
        size_t total = 0;
        uint8_t *lastsent = NULL;
        size_t lastlen = 0;
        for (int i = 0; i < 3; i++) {
            uint8_t *b = malloc(sizes[i]);
            fill(b, sizes[i], (unsigned)i);
            free(lastsent);
            lastsent = pb_msg(b, sizes[i], &lastlen);
            grpc_call_send(call, lastsent, lastlen);
            total += lastlen;
            free(b);
        }
        grpc_call_close_send(call);
        run_until(l, closed_p, &r, 10000);
        if (r.closed && r.status == GRPC_OK && r.nmsg == 3 && r.total == total &&
            r.last_len == lastlen && memcmp(r.last, lastsent, lastlen) == 0) {
            printf("ok meshd client -> grpc-js server (%s): bidi stream\n", label);
        } else {
            printf("not ok meshd client -> grpc-js server (%s): bidi: status %d (%s), %d messages, "
                   "%zu bytes\n",
                   label, r.status, r.msg, r.nmsg, r.total);
            rc = 1;
        }
        free(lastsent);
        cres_free(&r);
        grpc_client_free(c);
    } else {
        printf("not ok meshd client -> grpc-js server (%s): bidi: %s\n", label, err);
        rc = 1;
    }
    loop_free(l);
    tp_tls_ctx_unref(t);
    return rc;
}

static int mode_certs(const char *dir)
{
    pki_make(&g_pki);
    write_file(dir, "ca.pem", g_pki.ca.cert);
    write_file(dir, "server.pem", g_pki.server.cert);
    write_file(dir, "server-key.pem", g_pki.server.key);
    write_file(dir, "client.pem", g_pki.client.cert);
    write_file(dir, "client-key.pem", g_pki.client.key);
    return 0;
}

static int setup(void **state)
{
    (void)state;
    pki_make(&g_pki);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    pem_free(&g_pki.ca);
    pem_free(&g_pki.server);
    pem_free(&g_pki.client);
    pem_free(&g_pki.ca2);
    pem_free(&g_pki.server2);
    return 0;
}

int main(int argc, char **argv)
{
    log_set_level(LOG_WARN);
    if (argc >= 3 && strcmp(argv[1], "--certs") == 0)
        return mode_certs(argv[2]);
    if (argc >= 3 && strcmp(argv[1], "--serve") == 0)
        return mode_serve(argv[2], argc >= 4 && strcmp(argv[3], "--tls") == 0);
    if (argc >= 3 && strcmp(argv[1], "--call") == 0)
        return mode_call(argv[2], argc >= 5 && strcmp(argv[3], "--tls") == 0 ? argv[4] : NULL);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_unary_and_metadata),
        cmocka_unit_test(test_blocking_unary_helper),
        cmocka_unit_test(test_bidi_streaming),
        cmocka_unit_test(test_large_messages_and_limit),
        cmocka_unit_test(test_client_cancel_reaches_server),
        cmocka_unit_test(test_many_streams_one_connection),
        cmocka_unit_test(test_many_connections),
        cmocka_unit_test(test_flow_control_backpressure),
        cmocka_unit_test(test_garbage_closes_only_that_connection),
        cmocka_unit_test(test_bad_content_type_refused),
        cmocka_unit_test(test_tls_unary_bidi_large),
        cmocka_unit_test(test_tls_client_certificate_required),
        cmocka_unit_test(test_tls_certificate_swap),
        cmocka_unit_test(test_tls_write_to_closed_peer),
        cmocka_unit_test(test_tls_config_errors),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
