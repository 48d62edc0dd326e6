/*
 * meshproxy's TLS layer (proxy/tls.c, proxy/identity.c): mTLS handshakes
 * between a server and a client context over a non-blocking socketpair, SAN
 * checks, ALPN selection (never h2), rotation of the "default" secret,
 * session resumption, the ClientHello peek on real and broken bytes, and
 * the workload identity from files and from meshd's CA running in-process.
 */
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/ssl.h>

#include "../../ca/ca.h"
#include "../../common/grpc.h"
#include "../../common/workq.h"
#include "../../proxy/tls_internal.h"
#include "../ca/jwt_test.h"

#define SRV_ID "spiffe://cluster.local/ns/srv/sa/server"
#define CLI_ID "spiffe://cluster.local/ns/cli/sa/client"
#define SNI "outbound_.9080_._.reviews.default.svc.cluster.local"

/* ---- certificates ---- */

typedef struct pki {
    char *ca_cert, *ca_key;
    char *srv_cert, *srv_key;
    char *cli_cert, *cli_key;
    char *other_ca_cert, *other_ca_key; /* an unrelated root */
    char *rogue_cert, *rogue_key;       /* a client signed by it */
} pki_t;

static pki_t P;

/* A leaf signed by the CA (cert + key PEM), with the SANs given
 * ("URI:spiffe://...,DNS:..."). */
static void mk_leaf(const char *ca_cert, const char *ca_key, const char *sans, char **cert,
                    char **key)
{
    EVP_PKEY *k = ct_key("ec:P-256");
    X509 *ca = ct_x509(ca_cert);
    BIO *b = BIO_new_mem_buf(ca_key, -1);
    EVP_PKEY *cak = PEM_read_bio_PrivateKey(b, NULL, NULL, NULL);
    BIO_free(b);
    assert_non_null(cak);
    X509 *x = X509_new();
    X509_set_version(x, 2);
    static long serial = 100;
    ASN1_INTEGER_set(X509_get_serialNumber(x), serial++);
    X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "O", MBSTRING_ASC,
                               (const unsigned char *)"meshd-test", -1, -1, 0);
    X509_set_issuer_name(x, X509_get_subject_name(ca));
    X509_gmtime_adj(X509_getm_notBefore(x), -60);
    X509_gmtime_adj(X509_getm_notAfter(x), 3600);
    X509_set_pubkey(x, k);
    X509V3_CTX v3;
    X509V3_set_ctx(&v3, ca, x, NULL, NULL, 0);
    const struct {
        int nid;
        const char *v;
    } ext[] = {{NID_subject_alt_name, sans},
               {NID_basic_constraints, "critical,CA:FALSE"},
               {NID_key_usage, "critical,digitalSignature,keyEncipherment"},
               {NID_ext_key_usage, "serverAuth,clientAuth"}};
    for (size_t i = 0; i < sizeof ext / sizeof ext[0]; i++) {
        X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, &v3, ext[i].nid, ext[i].v);
        assert_non_null(e);
        X509_add_ext(x, e, -1);
        X509_EXTENSION_free(e);
    }
    assert_true(X509_sign(x, cak, EVP_sha256()) > 0);
    *cert = ct_pem_x509(x);
    *key = ct_pem_key(k);
    X509_free(x);
    X509_free(ca);
    EVP_PKEY_free(cak);
    EVP_PKEY_free(k);
}

static int pki_setup(void **state)
{
    (void)state;
    signal(SIGPIPE, SIG_IGN);
    ct_make_ca("ec:P-256", -3600, 86400, "critical,CA:TRUE", "critical,keyCertSign,cRLSign",
               &P.ca_cert, &P.ca_key);
    ct_make_ca("ec:P-256", -3600, 86400, "critical,CA:TRUE", "critical,keyCertSign,cRLSign",
               &P.other_ca_cert, &P.other_ca_key);
    mk_leaf(P.ca_cert, P.ca_key, "URI:" SRV_ID ",DNS:reviews.default.svc", &P.srv_cert, &P.srv_key);
    mk_leaf(P.ca_cert, P.ca_key, "URI:" CLI_ID, &P.cli_cert, &P.cli_key);
    mk_leaf(P.other_ca_cert, P.other_ca_key, "URI:" CLI_ID, &P.rogue_cert, &P.rogue_key);
    return 0;
}

static int pki_teardown(void **state)
{
    (void)state;
    char **all[] = {&P.ca_cert, &P.ca_key,        &P.srv_cert,     &P.srv_key,    &P.cli_cert,
                    &P.cli_key, &P.other_ca_cert, &P.other_ca_key, &P.rogue_cert, &P.rogue_key};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        free(*all[i]);
        *all[i] = NULL;
    }
    return 0;
}

/* ---- two ends: a "server proxy" and a "client proxy" ---- */

typedef struct ends {
    arena_t *a;
    px_secrets_t *ssec, *csec; /* each proxy's own secrets */
    px_tls_cache_t *scache, *ccache;
    px_tls_cfg_t scfg, ccfg;
} ends_t;

static const char *const SRV_ALPN[] = {"istio-peer-exchange", "istio", "http/1.1"};

static void ends_init(ends_t *e)
{
    memset(e, 0, sizeof *e);
    e->a = arena_new(4096);
    assert_non_null(e->ssec = px_secrets_new());
    assert_non_null(e->csec = px_secrets_new());
    assert_int_equal(px_secrets_set(e->ssec, "default", P.srv_cert, P.srv_key, NULL), 0);
    assert_int_equal(px_secrets_set(e->ssec, "ROOTCA", NULL, NULL, P.ca_cert), 0);
    assert_int_equal(px_secrets_set(e->csec, "default", P.cli_cert, P.cli_key, NULL), 0);
    assert_int_equal(px_secrets_set(e->csec, "ROOTCA", NULL, NULL, P.ca_cert), 0);
    assert_non_null(e->scache = px_tls_cache_new(e->ssec));
    assert_non_null(e->ccache = px_tls_cache_new(e->csec));
    /* Istio's inbound mTLS chain */
    e->scfg.server = true;
    e->scfg.cert_sds = "default";
    e->scfg.ca_sds = "ROOTCA";
    e->scfg.require_client_cert = true;
    for (size_t i = 0; i < 3; i++)
        e->scfg.alpn[i] = SRV_ALPN[i];
    e->scfg.nalpn = 3;
    /* Istio's outbound ISTIO_MUTUAL cluster */
    e->ccfg.server = false;
    e->ccfg.cert_sds = "default";
    e->ccfg.ca_sds = "ROOTCA";
    e->ccfg.sni = SNI;
    e->ccfg.alpn[0] = "istio-peer-exchange";
    e->ccfg.alpn[1] = "istio";
    e->ccfg.nalpn = 2;
}

static void ends_finish(ends_t *e)
{
    assert_int_equal(px_tls_cfg_finish(&e->scfg, e->a), 0);
    assert_int_equal(px_tls_cfg_finish(&e->ccfg, e->a), 0);
}

static void ends_free(ends_t *e)
{
    px_tls_cache_free(e->scache);
    px_tls_cache_free(e->ccache);
    px_secrets_free(e->ssec);
    px_secrets_free(e->csec);
    for (size_t i = 0; i < e->ccfg.nsans; i++)
        if (e->ccfg.sans[i].re)
            pcre2_code_free(e->ccfg.sans[i].re);
    arena_free(e->a);
}

typedef struct conn_pair {
    int fd[2]; /* [0] server, [1] client */
    px_tls_conn_t *s, *c;
    int rs, rc;
    char es[512], ec[512];
} conn_pair_t;

static void pair_open(conn_pair_t *p, ends_t *e)
{
    char err[512];
    memset(p, 0, sizeof *p);
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, p->fd), 0);
    SSL_CTX *sctx = px_tls_ctx(e->scache, &e->scfg, err, sizeof err);
    if (!sctx)
        fail_msg("server ctx: %s", err);
    SSL_CTX *cctx = px_tls_ctx(e->ccache, &e->ccfg, err, sizeof err);
    if (!cctx)
        fail_msg("client ctx: %s", err);
    assert_non_null(p->s = px_tls_conn_new(sctx, &e->scfg, p->fd[0]));
    assert_non_null(p->c = px_tls_conn_new(cctx, &e->ccfg, p->fd[1]));
}

/* Drives both handshakes until each side is done or failed (bounded). */
static void pair_handshake(conn_pair_t *p)
{
    for (int i = 0; i < 200 && (p->rs == 0 || p->rc == 0); i++) {
        unsigned w;
        if (p->rc == 0)
            p->rc = px_tls_handshake(p->c, &w, p->ec, sizeof p->ec);
        if (p->rs == 0)
            p->rs = px_tls_handshake(p->s, &w, p->es, sizeof p->es);
    }
}

static void pair_close(conn_pair_t *p)
{
    px_tls_conn_free(p->s);
    px_tls_conn_free(p->c);
    close(p->fd[0]);
    close(p->fd[1]);
}

/* Writes msg on `from` and reads it whole on `to` (both non-blocking). */
static void send_recv(px_tls_conn_t *from, px_tls_conn_t *to, const char *msg)
{
    size_t n = strlen(msg), off = 0, got = 0;
    char buf[4096];
    unsigned w;
    for (int i = 0; i < 1000 && got < n; i++) {
        if (off < n) {
            ssize_t r = px_tls_write(from, msg + off, n - off, &w);
            if (r > 0)
                off += (size_t)r;
            else
                assert_int_equal(errno, EAGAIN);
        }
        ssize_t r = px_tls_read(to, buf + got, sizeof buf - 1 - got, &w);
        if (r > 0)
            got += (size_t)r;
        else {
            assert_int_equal(r, -1);
            assert_int_equal(errno, EAGAIN);
            assert_int_equal(w, PX_TLS_WANT_READ);
        }
    }
    buf[got] = 0;
    assert_string_equal(buf, msg);
}

/* Reads until data, EOF or error; returns what px_tls_read returned last. */
static ssize_t read_settled(px_tls_conn_t *t, char *buf, size_t n)
{
    unsigned w;
    ssize_t r = -1;
    for (int i = 0; i < 100; i++) {
        r = px_tls_read(t, buf, n, &w);
        if (r >= 0 || errno != EAGAIN)
            return r;
        usleep(1000);
    }
    return r;
}

/* ---- handshakes ---- */

static void test_mtls(void **state)
{
    (void)state;
    ends_t e;
    ends_init(&e);
    e.ccfg.sans = arena_alloc(e.a, sizeof(px_str_match_t));
    e.ccfg.sans[0] =
        (px_str_match_t){.kind = PX_STR_EXACT, .value = SRV_ID, .value_len = strlen(SRV_ID)};
    e.ccfg.nsans = 1;
    ends_finish(&e);
    conn_pair_t p;
    pair_open(&p, &e);
    pair_handshake(&p);
    if (p.rs != 1 || p.rc != 1)
        fail_msg("handshake: server %d (%s), client %d (%s)", p.rs, p.es, p.rc, p.ec);
    /* each side sees the other's verified SPIFFE ID */
    assert_string_equal(px_tls_peer_uri(p.s), CLI_ID);
    assert_string_equal(px_tls_peer_uri(p.c), SRV_ID);
    assert_string_equal(px_spiffe_principal(px_tls_peer_uri(p.s)),
                        "cluster.local/ns/cli/sa/client");
    assert_string_equal(px_tls_sni(p.s), SNI);
    assert_string_equal(px_tls_sni(p.c), "");
    assert_string_equal(px_tls_alpn(p.s), "istio-peer-exchange");
    assert_string_equal(px_tls_alpn(p.c), "istio-peer-exchange");
    assert_false(px_tls_resumed(p.c));
    /* a done handshake stays done */
    unsigned w;
    char err[256];
    assert_int_equal(px_tls_handshake(p.s, &w, err, sizeof err), 1);

    send_recv(p.c, p.s, "GET / HTTP/1.1\r\nHost: reviews\r\n\r\n");
    /* a record read in part: the rest waits in the TLS layer, not the socket */
    assert_false(px_tls_pending(p.s));
    assert_int_equal(px_tls_write(p.c, "0123456789", 10, &w), 10);
    char part[4];
    assert_int_equal(read_settled(p.s, part, sizeof part), 4);
    assert_true(px_tls_pending(p.s));
    char rest[16];
    assert_int_equal(px_tls_read(p.s, rest, sizeof rest, &w), 6);
    assert_memory_equal(rest, "456789", 6);
    assert_false(px_tls_pending(p.s));
    send_recv(p.s, p.c, "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
    /* a large write goes through in pieces */
    size_t big = 200000;
    char *data = malloc(big), *got = malloc(big);
    for (size_t i = 0; i < big; i++)
        data[i] = (char)('a' + i % 26);
    size_t off = 0, in = 0;
    for (int i = 0; i < 100000 && in < big; i++) {
        if (off < big) {
            ssize_t r = px_tls_write(p.c, data + off, big - off, &w);
            if (r > 0)
                off += (size_t)r;
            else
                assert_true(errno == EAGAIN && w != 0);
        }
        ssize_t r = px_tls_read(p.s, got + in, big - in, &w);
        if (r > 0)
            in += (size_t)r;
    }
    assert_int_equal(in, big);
    assert_memory_equal(got, data, big);
    free(data);
    free(got);

    /* close_notify: the peer reads end of stream */
    px_tls_shutdown(p.c);
    char buf[64];
    assert_int_equal(read_settled(p.s, buf, sizeof buf), 0);
    pair_close(&p);
    ends_free(&e);
}

static void test_san_matchers(void **state)
{
    (void)state;
    struct {
        px_str_kind_t kind;
        const char *value;
        bool ok;
    } cases[] = {
        {PX_STR_PREFIX, "spiffe://cluster.local/ns/srv/", true},
        {PX_STR_SUFFIX, "/sa/server", true},
        {PX_STR_CONTAINS, "ns/srv", true},
        {PX_STR_EXACT, "reviews.default.svc", true}, /* a DNS SAN counts too */
        {PX_STR_REGEX, "spiffe://cluster\\.local/ns/[a-z]+/sa/server", true},
        {PX_STR_EXACT, "spiffe://cluster.local/ns/other/sa/x", false},
        {PX_STR_PREFIX, "spiffe://other.domain/", false},
        {PX_STR_REGEX, "spiffe://cluster\\.local/ns/srv", false}, /* anchored: the whole name */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ends_t e;
        ends_init(&e);
        e.ccfg.sans = arena_alloc(e.a, sizeof(px_str_match_t));
        px_str_match_t *m = &e.ccfg.sans[0];
        m->kind = cases[i].kind;
        if (cases[i].kind == PX_STR_REGEX) {
            int ec;
            PCRE2_SIZE eo;
            m->re = pcre2_compile((PCRE2_SPTR)cases[i].value, PCRE2_ZERO_TERMINATED,
                                  PCRE2_ANCHORED | PCRE2_ENDANCHORED | PCRE2_UTF, &ec, &eo, NULL);
            assert_non_null(m->re);
        } else {
            m->value = cases[i].value;
            m->value_len = strlen(cases[i].value);
        }
        e.ccfg.nsans = 1;
        ends_finish(&e);
        conn_pair_t p;
        pair_open(&p, &e);
        pair_handshake(&p);
        if (cases[i].ok) {
            if (p.rc != 1)
                fail_msg("case %zu (%s): client %d: %s", i, cases[i].value, p.rc, p.ec);
            assert_int_equal(p.rs, 1);
        } else {
            assert_int_equal(p.rc, -1);
            if (cases[i].kind == PX_STR_EXACT)
                ct_assert_has(p.ec, "peer identity " SRV_ID
                                    " not in [spiffe://cluster.local/ns/other/sa/x]");
            else
                ct_assert_has(p.ec, "peer identity " SRV_ID " not in [");
            assert_string_equal(px_tls_peer_uri(p.c), "");
        }
        pair_close(&p);
        ends_free(&e);
    }
}

static void test_client_cert_required(void **state)
{
    (void)state;
    /* no client certificate at all */
    ends_t e;
    ends_init(&e);
    e.ccfg.cert_sds = NULL;
    ends_finish(&e);
    conn_pair_t p;
    pair_open(&p, &e);
    pair_handshake(&p);
    assert_int_equal(p.rs, -1);
    ct_assert_has(p.es, "peer did not return a certificate");
    if (p.rc == 1) { /* TLS 1.3: the client learns it from the alert */
        char buf[16];
        assert_int_equal(read_settled(p.c, buf, sizeof buf), -1);
        assert_int_equal(errno, EIO);
    } else {
        assert_int_equal(p.rc, -1);
    }
    pair_close(&p);
    ends_free(&e);

    /* a certificate from another root */
    ends_init(&e);
    e.ccfg.cert_sds = NULL;
    e.ccfg.cert_pem = P.rogue_cert;
    e.ccfg.key_pem = P.rogue_key;
    ends_finish(&e);
    pair_open(&p, &e);
    pair_handshake(&p);
    assert_int_equal(p.rs, -1);
    ct_assert_has(p.es, "certificate verify failed: ");
    pair_close(&p);
    ends_free(&e);

    /* not required, no CA: the server does not ask, the peer is anonymous */
    ends_init(&e);
    e.scfg.require_client_cert = false;
    e.scfg.ca_sds = NULL;
    ends_finish(&e);
    pair_open(&p, &e);
    pair_handshake(&p);
    assert_int_equal(p.rs, 1);
    assert_int_equal(p.rc, 1);
    assert_string_equal(px_tls_peer_uri(p.s), "");
    assert_string_equal(px_tls_peer_uri(p.c), SRV_ID);
    pair_close(&p);
    ends_free(&e);

    /* the client trusts another root: it refuses the server */
    ends_init(&e);
    e.ccfg.ca_sds = NULL;
    e.ccfg.ca_pem = P.other_ca_cert;
    ends_finish(&e);
    pair_open(&p, &e);
    pair_handshake(&p);
    assert_int_equal(p.rc, -1);
    ct_assert_has(p.ec, "certificate verify failed");
    pair_close(&p);
    ends_free(&e);
}

static void alpn_case(const char *const *srv, size_t nsrv, const char *const *cli, size_t ncli,
                      const char *want)
{
    ends_t e;
    ends_init(&e);
    e.scfg.nalpn = nsrv;
    for (size_t i = 0; i < nsrv; i++)
        e.scfg.alpn[i] = srv[i];
    e.ccfg.nalpn = ncli;
    for (size_t i = 0; i < ncli; i++)
        e.ccfg.alpn[i] = cli[i];
    ends_finish(&e);
    conn_pair_t p;
    pair_open(&p, &e);
    pair_handshake(&p);
    if (p.rs != 1 || p.rc != 1)
        fail_msg("handshake: server %d (%s), client %d (%s)", p.rs, p.es, p.rc, p.ec);
    assert_string_equal(px_tls_alpn(p.s), want);
    assert_string_equal(px_tls_alpn(p.c), want);
    pair_close(&p);
    ends_free(&e);
}

static void test_alpn(void **state)
{
    (void)state;
    const char *istio[] = {"istio-peer-exchange", "istio", "http/1.1"};
    const char *h2_h1[] = {"h2", "http/1.1"};
    const char *h2[] = {"h2"};
    const char *pe[] = {"istio-peer-exchange", "istio"};
    const char *rev[] = {"istio", "istio-peer-exchange"};
    alpn_case(istio, 3, pe, 2, "istio-peer-exchange");
    /* the server's order wins */
    alpn_case(istio, 3, rev, 2, "istio-peer-exchange");
    alpn_case(istio, 3, h2_h1, 2, "http/1.1");
    /* h2 is never selected, even when both list it first */
    alpn_case(h2_h1, 2, h2_h1, 2, "http/1.1");
    /* nothing in common (h2 only): no ALPN, the handshake still succeeds */
    alpn_case(h2_h1, 2, h2, 1, "");
    alpn_case(istio, 3, NULL, 0, "");
    alpn_case(NULL, 0, pe, 2, "");
}

/* ---- contexts and rotation ---- */

static void test_rotation(void **state)
{
    (void)state;
    char err[512];
    ends_t e;
    ends_init(&e);
    ends_finish(&e);
    conn_pair_t old;
    pair_open(&old, &e);
    pair_handshake(&old);
    assert_int_equal(old.rs, 1);
    assert_int_equal(old.rc, 1);
    assert_string_equal(px_tls_peer_uri(old.c), SRV_ID);
    SSL_CTX *c1 = px_tls_ctx(e.scache, &e.scfg, err, sizeof err);
    assert_non_null(c1);
    /* same config, same secrets: the same context */
    assert_ptr_equal(px_tls_ctx(e.scache, &e.scfg, err, sizeof err), c1);
    /* an unrelated secret moves the generation but not this context */
    uint64_t g = px_secrets_generation(e.ssec);
    px_secrets_set(e.ssec, "kubernetes://other", P.cli_cert, P.cli_key, NULL);
    assert_true(px_secrets_generation(e.ssec) > g);
    assert_ptr_equal(px_tls_ctx(e.scache, &e.scfg, err, sizeof err), c1);

    /* a new workload certificate */
    char *cert2, *key2;
    mk_leaf(P.ca_cert, P.ca_key, "URI:spiffe://cluster.local/ns/srv/sa/server-v2", &cert2, &key2);
    px_secrets_set(e.ssec, "default", cert2, key2, NULL);
    conn_pair_t fresh;
    pair_open(&fresh, &e);
    pair_handshake(&fresh);
    assert_int_equal(fresh.rs, 1);
    assert_int_equal(fresh.rc, 1);
    assert_string_equal(px_tls_peer_uri(fresh.c), "spiffe://cluster.local/ns/srv/sa/server-v2");
    /* the old connection goes on with its certificate */
    send_recv(old.c, old.s, "still here");
    send_recv(old.s, old.c, "and answering");
    assert_string_equal(px_tls_peer_uri(old.c), SRV_ID);
    pair_close(&old);
    pair_close(&fresh);

    /* a removed secret: no context, and the reason names it */
    px_secrets_remove(e.ssec, "default");
    assert_false(px_secrets_has(e.ssec, "default"));
    assert_null(px_tls_ctx(e.scache, &e.scfg, err, sizeof err));
    ct_assert_has(err, "certificate secret \"default\": not received yet");
    /* a secret whose key does not match */
    px_secrets_set(e.ssec, "default", cert2, P.cli_key, NULL);
    assert_null(px_tls_ctx(e.scache, &e.scfg, err, sizeof err));
    ct_assert_has(err, "server TLS context: certificate secret \"default\": private key does not "
                       "match the certificate");
    /* a trust bundle that is not PEM */
    px_secrets_set(e.ssec, "default", cert2, key2, NULL);
    px_secrets_set(e.ssec, "ROOTCA", NULL, NULL, "not a certificate");
    assert_null(px_tls_ctx(e.scache, &e.scfg, err, sizeof err));
    ct_assert_has(err, "validation secret \"ROOTCA\": trusted CA: no PEM certificate found");
    /* a validation secret without a CA */
    px_secrets_set(e.ssec, "default", cert2, key2, NULL);
    px_secrets_set(e.ssec, "ROOTCA", P.cli_cert, P.cli_key, NULL);
    assert_null(px_tls_ctx(e.scache, &e.scfg, err, sizeof err));
    ct_assert_has(err, "validation secret \"ROOTCA\": no trusted CA");
    /* asked again without a change: the same answer */
    err[0] = 0;
    assert_null(px_tls_ctx(e.scache, &e.scfg, err, sizeof err));
    ct_assert_has(err, "validation secret \"ROOTCA\": no trusted CA");
    /* repaired: handshakes work again */
    px_secrets_set(e.ssec, "ROOTCA", NULL, NULL, P.ca_cert);
    conn_pair_t again;
    pair_open(&again, &e);
    pair_handshake(&again);
    assert_int_equal(again.rs, 1);
    assert_int_equal(again.rc, 1);
    assert_string_equal(px_tls_peer_uri(again.c), "spiffe://cluster.local/ns/srv/sa/server-v2");
    pair_close(&again);
    free(cert2);
    free(key2);
    ends_free(&e);
}

static void test_ctx_params(void **state)
{
    (void)state;
    char err[512];
    ends_t e;
    ends_init(&e);
    e.ccfg.ciphers = "no-such-cipher";
    ends_finish(&e);
    assert_null(px_tls_ctx(e.ccache, &e.ccfg, err, sizeof err));
    ct_assert_has(err, "cipher_suites \"no-such-cipher\"");
    ends_free(&e);

    ends_init(&e);
    e.ccfg.curves = "P-999";
    ends_finish(&e);
    assert_null(px_tls_ctx(e.ccache, &e.ccfg, err, sizeof err));
    ct_assert_has(err, "ecdh_curves \"P-999\"");
    ends_free(&e);

    /* TLS 1.2 only, with a cipher and a curve: the handshake agrees */
    ends_init(&e);
    e.scfg.max_version = TLS1_2_VERSION;
    e.ccfg.ciphers =
        "[ECDHE-ECDSA-AES128-GCM-SHA256|ECDHE-ECDSA-CHACHA20-POLY1305]:ECDHE-RSA-AES128-GCM-SHA256";
    e.ccfg.curves = "P-256";
    ends_finish(&e);
    conn_pair_t p;
    pair_open(&p, &e);
    pair_handshake(&p);
    if (p.rs != 1 || p.rc != 1)
        fail_msg("handshake: server %d (%s), client %d (%s)", p.rs, p.es, p.rc, p.ec);
    assert_string_equal(px_tls_peer_uri(p.s), CLI_ID);
    pair_close(&p);
    ends_free(&e);

    /* a server without a certificate is refused */
    ends_init(&e);
    e.scfg.cert_sds = NULL;
    ends_finish(&e);
    assert_null(px_tls_ctx(e.scache, &e.scfg, err, sizeof err));
    ct_assert_has(err, "no certificate");
    ends_free(&e);

    /* the key text tells configurations apart */
    arena_t *a = arena_new(1024);
    px_tls_cfg_t x = {.server = false, .sni = "a"}, y = {.server = false, .sni = "b"},
                 z = {.sni = "a"};
    assert_int_equal(px_tls_cfg_finish(&x, a), 0);
    assert_int_equal(px_tls_cfg_finish(&y, a), 0);
    assert_int_equal(px_tls_cfg_finish(&z, a), 0);
    assert_string_not_equal(x.key, y.key);
    assert_string_equal(x.key, z.key);
    arena_free(a);
}

static void resumption(int max_version)
{
    ends_t e;
    ends_init(&e);
    e.scfg.max_version = max_version;
    ends_finish(&e);
    /* a second worker of the server proxy: its own cache, the same secrets */
    px_tls_cache_t *first = e.scache, *other = px_tls_cache_new(e.ssec);
    for (int round = 0; round < 3; round++) {
        e.scache = round == 2 ? other : first;
        conn_pair_t p;
        pair_open(&p, &e);
        pair_handshake(&p);
        if (p.rs != 1 || p.rc != 1)
            fail_msg("round %d: server %d (%s), client %d (%s)", round, p.rs, p.es, p.rc, p.ec);
        assert_int_equal(px_tls_resumed(p.c), round > 0);
        assert_int_equal(px_tls_resumed(p.s), round > 0);
        /* a resumed session still knows who the peers are */
        assert_string_equal(px_tls_peer_uri(p.c), SRV_ID);
        assert_string_equal(px_tls_peer_uri(p.s), CLI_ID);
        /* TLS 1.3 tickets arrive with the first data */
        send_recv(p.s, p.c, "ticket please");
        pair_close(&p);
    }
    e.scache = first;
    px_tls_cache_free(other);
    ends_free(&e);
}

static void test_resumption(void **state)
{
    (void)state;
    resumption(0);
    resumption(TLS1_2_VERSION);
}

/* ---- ClientHello peek ---- */

/* The first flight of a client of cfg, as the server would read it. */
static size_t capture_hello(ends_t *e, uint8_t *out, size_t cap)
{
    char err[512];
    int fd[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, fd), 0);
    SSL_CTX *cctx = px_tls_ctx(e->ccache, &e->ccfg, err, sizeof err);
    assert_non_null(cctx);
    px_tls_conn_t *c = px_tls_conn_new(cctx, &e->ccfg, fd[1]);
    unsigned w;
    assert_int_equal(px_tls_handshake(c, &w, err, sizeof err), 0);
    assert_int_equal(w, PX_TLS_WANT_READ);
    ssize_t n = recv(fd[0], out, cap, 0);
    assert_true(n > 0);
    px_tls_conn_free(c);
    close(fd[0]);
    close(fd[1]);
    return (size_t)n;
}

static void test_hello_real(void **state)
{
    (void)state;
    ends_t e;
    ends_init(&e);
    e.ccfg.alpn[0] = "h2";
    e.ccfg.alpn[1] = "istio-peer-exchange";
    e.ccfg.alpn[2] = "istio";
    e.ccfg.nalpn = 3;
    ends_finish(&e);
    uint8_t hello[4096];
    size_t n = capture_hello(&e, hello, sizeof hello);
    px_hello_t h;
    assert_int_equal(px_tls_parse_hello(hello, n, &h), PX_HELLO_TLS);
    assert_string_equal(h.sni, SNI);
    /* what the client offered: never h2 */
    assert_int_equal(h.nalpn, 2);
    assert_string_equal(h.alpn[0], "istio-peer-exchange");
    assert_string_equal(h.alpn[1], "istio");
    /* every strict prefix asks for more */
    for (size_t i = 0; i < n; i++)
        assert_int_equal(px_tls_parse_hello(hello, i, &h), PX_HELLO_MORE);
    /* bytes after the record do not matter */
    uint8_t more[4200];
    memcpy(more, hello, n);
    memcpy(more + n, "GET / HTTP/1.1\r\n", 16);
    assert_int_equal(px_tls_parse_hello(more, n + 16, &h), PX_HELLO_TLS);
    assert_string_equal(h.sni, SNI);
    /* broken lengths inside the record: not TLS */
    memcpy(more, hello, n);
    more[5 + 4 + 2 + 32] = 200; /* session id longer than 32 */
    assert_int_equal(px_tls_parse_hello(more, n, &h), PX_HELLO_NOT_TLS);
    assert_string_equal(h.sni, "");
    memcpy(more, hello, n);
    size_t shorter = n - 5 - 4 - 1; /* a stray byte after the hello in its record */
    more[6] = (uint8_t)(shorter >> 16), more[7] = (uint8_t)(shorter >> 8),
    more[8] = (uint8_t)shorter;
    assert_int_equal(px_tls_parse_hello(more, n, &h), PX_HELLO_NOT_TLS);
    /* a hello announced longer than its record (continued in the next one):
     * TLS, with what the first record holds */
    memcpy(more, hello, n);
    more[6] = 0x01;
    assert_int_equal(px_tls_parse_hello(more, n, &h), PX_HELLO_TLS);
    ends_free(&e);

    /* no SNI, no ALPN */
    ends_init(&e);
    e.ccfg.sni = NULL;
    e.ccfg.nalpn = 0;
    ends_finish(&e);
    n = capture_hello(&e, hello, sizeof hello);
    assert_int_equal(px_tls_parse_hello(hello, n, &h), PX_HELLO_TLS);
    assert_string_equal(h.sni, "");
    assert_int_equal(h.nalpn, 0);
    ends_free(&e);
}

/* A hand-made ClientHello with the extensions given (raw bytes). */
static size_t make_hello(uint8_t *out, const uint8_t *ext, size_t extlen)
{
    uint8_t body[2048];
    size_t b = 0;
    body[b++] = 3, body[b++] = 3;
    memset(body + b, 0x5a, 32), b += 32;
    body[b++] = 0;                                                    /* session id */
    body[b++] = 0, body[b++] = 2, body[b++] = 0x13, body[b++] = 0x01; /* one suite */
    body[b++] = 1, body[b++] = 0;                                     /* null compression */
    body[b++] = (uint8_t)(extlen >> 8), body[b++] = (uint8_t)extlen;
    if (extlen > 0)
        memcpy(body + b, ext, extlen), b += extlen;
    size_t o = 0;
    out[o++] = 22, out[o++] = 3, out[o++] = 1;
    out[o++] = (uint8_t)((b + 4) >> 8), out[o++] = (uint8_t)(b + 4);
    out[o++] = 1, out[o++] = 0, out[o++] = (uint8_t)(b >> 8), out[o++] = (uint8_t)b;
    memcpy(out + o, body, b);
    return o + b;
}

static void test_hello_edges(void **state)
{
    (void)state;
    px_hello_t h;
    uint8_t buf[4096];
    const char *plain = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    assert_int_equal(px_tls_parse_hello((const uint8_t *)plain, strlen(plain), &h),
                     PX_HELLO_NOT_TLS);
    assert_int_equal(px_tls_parse_hello((const uint8_t *)"", 0, &h), PX_HELLO_MORE);
    assert_int_equal(px_tls_parse_hello((const uint8_t *)"\x16", 1, &h), PX_HELLO_MORE);
    assert_int_equal(px_tls_parse_hello((const uint8_t *)"\x16\x03\x01", 3, &h), PX_HELLO_MORE);
    assert_int_equal(px_tls_parse_hello((const uint8_t *)"\x16\x02", 2, &h), PX_HELLO_NOT_TLS);
    /* an alert record, a server hello, an oversized record */
    assert_int_equal(px_tls_parse_hello((const uint8_t *)"\x15\x03\x03\x00\x02\x02\x28", 7, &h),
                     PX_HELLO_NOT_TLS);
    assert_int_equal(px_tls_parse_hello((const uint8_t *)"\x16\x03\x03\x00\x30\x02", 6, &h),
                     PX_HELLO_NOT_TLS);
    assert_int_equal(px_tls_parse_hello((const uint8_t *)"\x16\x03\x01\x40\x01", 5, &h),
                     PX_HELLO_NOT_TLS);
    /* SSLv2-compatible hello */
    assert_int_equal(px_tls_parse_hello((const uint8_t *)"\x80\x2e\x01\x03\x01", 5, &h),
                     PX_HELLO_NOT_TLS);

    /* nine ALPN names, one of them too long to keep: eight kept */
    uint8_t ext[1024];
    size_t e = 0;
    ext[e++] = 0, ext[e++] = 16;
    size_t lenpos = e;
    e += 4;
    for (int i = 0; i < 9; i++) {
        char name[80];
        int l = i == 1 ? snprintf(name, sizeof name, "%070d", 7)
                       : snprintf(name, sizeof name, "p%d", i);
        ext[e++] = (uint8_t)l;
        memcpy(ext + e, name, (size_t)l);
        e += (size_t)l;
    }
    size_t list = e - lenpos - 4;
    ext[lenpos] = (uint8_t)((list + 2) >> 8), ext[lenpos + 1] = (uint8_t)(list + 2);
    ext[lenpos + 2] = (uint8_t)(list >> 8), ext[lenpos + 3] = (uint8_t)list;
    /* and an SNI */
    const char *host = "reviews.default";
    size_t hl = strlen(host);
    ext[e++] = 0, ext[e++] = 0, ext[e++] = 0, ext[e++] = (uint8_t)(hl + 5);
    ext[e++] = 0, ext[e++] = (uint8_t)(hl + 3), ext[e++] = 0, ext[e++] = 0, ext[e++] = (uint8_t)hl;
    memcpy(ext + e, host, hl), e += hl;
    size_t n = make_hello(buf, ext, e);
    assert_int_equal(px_tls_parse_hello(buf, n, &h), PX_HELLO_TLS);
    assert_string_equal(h.sni, host);
    assert_int_equal(h.nalpn, PX_TLS_MAX_ALPN);
    assert_string_equal(h.alpn[0], "p0");
    assert_string_equal(h.alpn[1], "p2");
    assert_string_equal(h.alpn[7], "p8");

    /* the same SNI extension twice: malformed */
    uint8_t ext2[256];
    size_t sni_len = 4 + 5 + hl;
    memcpy(ext2, ext + e - sni_len, sni_len);
    memcpy(ext2 + sni_len, ext + e - sni_len, sni_len);
    n = make_hello(buf, ext2, 2 * sni_len);
    assert_int_equal(px_tls_parse_hello(buf, n, &h), PX_HELLO_NOT_TLS);
    /* an extension running past the block */
    n = make_hello(buf, ext2, sni_len);
    buf[n - sni_len + 3] += 1;
    assert_int_equal(px_tls_parse_hello(buf, n, &h), PX_HELLO_NOT_TLS);
    /* a host name with a NUL */
    n = make_hello(buf, ext2, sni_len);
    buf[n - 2] = 0;
    assert_int_equal(px_tls_parse_hello(buf, n, &h), PX_HELLO_NOT_TLS);
    /* no extensions at all */
    n = make_hello(buf, NULL, 0);
    n -= 2; /* drop the empty extensions length */
    buf[4] -= 2, buf[8] -= 2;
    assert_int_equal(px_tls_parse_hello(buf, n, &h), PX_HELLO_TLS);
    assert_string_equal(h.sni, "");
}

static void test_spiffe_principal(void **state)
{
    (void)state;
    assert_string_equal(px_spiffe_principal("spiffe://cluster.local/ns/a/sa/b"),
                        "cluster.local/ns/a/sa/b");
    assert_string_equal(px_spiffe_principal("spiffe://td/x"), "td/x");
    assert_string_equal(px_spiffe_principal("https://cluster.local/ns/a/sa/b"), "");
    assert_string_equal(px_spiffe_principal("spiffe://"), "");
    assert_string_equal(px_spiffe_principal("spiffe:///ns/a"), "");
    assert_string_equal(px_spiffe_principal(""), "");
    assert_string_equal(px_spiffe_principal(NULL), "");
}

/* ---- identity ---- */

static bool wait_for(bool (*cond)(void *), void *arg, int ms)
{
    for (int i = 0; i < ms / 20; i++) {
        if (cond(arg))
            return true;
        usleep(20000);
    }
    return cond(arg);
}

static bool id_ready(void *arg)
{
    return px_identity_ready(arg);
}

static bool id_not_ready(void *arg)
{
    return !px_identity_ready(arg);
}

typedef struct id_want {
    px_identity_t *id;
    const char *spiffe;
    int64_t after; /* not_after must exceed it */
} id_want_t;

static bool id_has(void *arg)
{
    id_want_t *w = arg;
    char s[512];
    int64_t na;
    px_identity_current(w->id, s, sizeof s, &na);
    return (!w->spiffe || strcmp(s, w->spiffe) == 0) && na > w->after;
}

/* A handshake against a server using secrets "default"/"ROOTCA" of sec;
 * returns the server identity the client saw. */
static void handshake_with(px_secrets_t *sec, const char *ca_pem, char *peer, size_t n)
{
    arena_t *a = arena_new(1024);
    px_tls_cache_t *sc = px_tls_cache_new(sec);
    px_secrets_t *csec = px_secrets_new();
    px_tls_cache_t *cc = px_tls_cache_new(csec);
    px_tls_cfg_t s = {.server = true, .cert_sds = "default", .ca_sds = "ROOTCA"};
    px_tls_cfg_t c = {.server = false, .ca_pem = ca_pem};
    assert_int_equal(px_tls_cfg_finish(&s, a), 0);
    assert_int_equal(px_tls_cfg_finish(&c, a), 0);
    char err[512];
    int fd[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, fd), 0);
    SSL_CTX *sctx = px_tls_ctx(sc, &s, err, sizeof err);
    if (!sctx)
        fail_msg("server ctx: %s", err);
    SSL_CTX *cctx = px_tls_ctx(cc, &c, err, sizeof err);
    assert_non_null(cctx);
    px_tls_conn_t *ts = px_tls_conn_new(sctx, &s, fd[0]), *tc = px_tls_conn_new(cctx, &c, fd[1]);
    int rs = 0, rc = 0;
    for (int i = 0; i < 200 && (rs == 0 || rc == 0); i++) {
        unsigned w;
        if (rc == 0)
            rc = px_tls_handshake(tc, &w, err, sizeof err);
        if (rs == 0)
            rs = px_tls_handshake(ts, &w, err, sizeof err);
    }
    if (rs != 1 || rc != 1)
        fail_msg("handshake with the identity's certificate: %d %d %s", rs, rc, err);
    snprintf(peer, n, "%s", px_tls_peer_uri(tc));
    px_tls_conn_free(ts);
    px_tls_conn_free(tc);
    close(fd[0]);
    close(fd[1]);
    px_tls_cache_free(sc);
    px_tls_cache_free(cc);
    px_secrets_free(csec);
    arena_free(a);
}

static void write_dir(const char *dir, const char *cert, const char *key, const char *root)
{
    char p[600];
    snprintf(p, sizeof p, "%s/cert-chain.pem", dir);
    ct_write(p, cert, 0644);
    snprintf(p, sizeof p, "%s/key.pem", dir);
    ct_write(p, key, 0600);
    if (root) {
        snprintf(p, sizeof p, "%s/root-cert.pem", dir);
        ct_write(p, root, 0644);
    }
}

static void test_identity_files(void **state)
{
    (void)state;
    char err[512], peer[512];
    char *dir = ct_tmpdir();
    px_secrets_t *sec = px_secrets_new();

    /* bad options */
    px_identity_opts_t bad = {0};
    assert_null(px_identity_start(&bad, sec, err, sizeof err));
    ct_assert_has(err, "neither ca_addr");
    bad.cert_dir = "/nonexistent/meshd-certs";
    assert_null(px_identity_start(&bad, sec, err, sizeof err));
    ct_assert_has(err, "cert_dir /nonexistent/meshd-certs: not a directory");
    bad.ca_addr = "127.0.0.1:15012";
    assert_null(px_identity_start(&bad, sec, err, sizeof err));
    ct_assert_has(err, "exclusive");
    bad.cert_dir = NULL;
    assert_null(px_identity_start(&bad, sec, err, sizeof err));
    ct_assert_has(err, "root_file: required");
    bad.root_file = "/nonexistent/root-cert.pem";
    assert_null(px_identity_start(&bad, sec, err, sizeof err));
    ct_assert_has(err, "root_file /nonexistent/root-cert.pem: cannot read");

    /* files not there yet: not ready; they appear: loaded */
    px_identity_opts_t o = {.cert_dir = dir};
    px_identity_t *id = px_identity_start(&o, sec, err, sizeof err);
    if (!id)
        fail_msg("start: %s", err);
    usleep(100000);
    assert_false(px_identity_ready(id));
    write_dir(dir, P.srv_cert, P.srv_key, P.ca_cert);
    assert_true(wait_for(id_ready, id, 5000));
    assert_true(px_secrets_has(sec, "default"));
    assert_true(px_secrets_has(sec, "ROOTCA"));
    id_want_t w = {id, SRV_ID, 0};
    assert_true(id_has(&w));
    handshake_with(sec, P.ca_cert, peer, sizeof peer);
    assert_string_equal(peer, SRV_ID);

    /* a rotated file set is picked up */
    char *cert2, *key2;
    mk_leaf(P.ca_cert, P.ca_key, "URI:spiffe://cluster.local/ns/srv/sa/rotated", &cert2, &key2);
    uint64_t g = px_secrets_generation(sec);
    write_dir(dir, cert2, key2, NULL);
    w.spiffe = "spiffe://cluster.local/ns/srv/sa/rotated";
    assert_true(wait_for(id_has, &w, 5000));
    assert_true(px_secrets_generation(sec) > g);
    handshake_with(sec, P.ca_cert, peer, sizeof peer);
    assert_string_equal(peer, "spiffe://cluster.local/ns/srv/sa/rotated");

    /* a key that does not match: the previous certificate stays */
    g = px_secrets_generation(sec);
    write_dir(dir, P.srv_cert, key2, NULL);
    usleep(2500000);
    assert_int_equal(px_secrets_generation(sec), g);
    assert_true(id_has(&w));
    handshake_with(sec, P.ca_cert, peer, sizeof peer);
    assert_string_equal(peer, "spiffe://cluster.local/ns/srv/sa/rotated");

    px_identity_stop(id);
    px_secrets_free(sec);
    free(cert2);
    free(key2);
    ct_rmrf(dir);
    free(dir);
}

/* meshd's CA in-process: CA, JWT authentication, gRPC over TLS. */
typedef struct ca_fx {
    char *dir;
    char ca_file[512], key_file[512], token_file[512], root_file[512], addr[64];
    EVP_PKEY *jwt_key;
    ca_t *ca;
    ca_authn_t *authn;
    ca_serving_t *serving;
    loop_t *loop;
    workq_t *wq;
    grpc_server_t *srv;
    ca_service_t *svc;
    pthread_t thr;
} ca_fx_t;

static void *loop_thread(void *arg)
{
    loop_run(arg);
    return NULL;
}

static void write_token(ca_fx_t *f, long exp_off);

static void ca_fx_start(ca_fx_t *f)
{
    char err[1024];
    memset(f, 0, sizeof *f);
    f->dir = ct_tmpdir();
    snprintf(f->ca_file, sizeof f->ca_file, "%s/ca.pem", f->dir);
    snprintf(f->key_file, sizeof f->key_file, "%s/jwt.pub", f->dir);
    snprintf(f->token_file, sizeof f->token_file, "%s/token", f->dir);
    snprintf(f->root_file, sizeof f->root_file, "%s/root-cert.pem", f->dir);
    f->jwt_key = ct_key("ec:P-256");
    char *pub = jt_pubkey_pem(f->jwt_key);
    ct_write(f->key_file, pub, 0644);
    free(pub);
    ca_opts_t co = {0};
    co.root_file = f->ca_file;
    co.root_key_type = CA_KEY_ECDSA;
    co.reload_interval_ms = -1;
    assert_non_null(f->ca = ca_new(&co, err, sizeof err));
    ca_authn_opts_t ao = {.jwt_key_file = f->key_file, .issuer = "kubernetes/serviceaccount"};
    assert_non_null(f->authn = ca_authn_new(&ao, err, sizeof err));
    const char *dns[] = {"meshd.local"};
    f->serving = ca_serving_new(f->ca, dns, 1, 0, err, sizeof err);
    if (!f->serving)
        fail_msg("serving: %s", err);
    assert_non_null(f->loop = loop_new());
    assert_non_null(f->wq = workq_new(1));
    grpc_server_opts_t so = {.listen = "127.0.0.1:0", .tls = ca_serving_tls(f->serving)};
    f->srv = grpc_server_new(f->loop, &so, err, sizeof err);
    if (!f->srv)
        fail_msg("grpc server: %s", err);
    assert_non_null(f->svc = ca_service_new(f->ca, f->authn, f->wq, f->srv, err, sizeof err));
    snprintf(f->addr, sizeof f->addr, "127.0.0.1:%d", grpc_server_port(f->srv));
    char *root = ca_root_pem(f->ca);
    ct_write(f->root_file, root, 0644);
    free(root);
    write_token(f, 3600);
    pthread_create(&f->thr, NULL, loop_thread, f->loop);
}

static void write_token(ca_fx_t *f, long exp_off)
{
    char *p = jt_payload("kubernetes/serviceaccount", "[\"istio-ca\"]",
                         "system:serviceaccount:foo:bar", exp_off, -5);
    char *t = jt_token(f->jwt_key, "ES256", NULL, p);
    ct_write(f->token_file, t, 0600);
    free(p);
    free(t);
}

static void stop_server(void *arg)
{
    ca_fx_t *f = arg;
    grpc_server_free(f->srv);
    f->srv = NULL;
    loop_stop(f->loop);
}

static void ca_fx_stop(ca_fx_t *f)
{
    loop_post(f->loop, stop_server, f);
    pthread_join(f->thr, NULL);
    workq_free(f->wq);
    loop_run_once(f->loop, 0);
    ca_service_free(f->svc);
    loop_free(f->loop);
    ca_serving_free(f->serving);
    ca_authn_free(f->authn);
    ca_free(f->ca);
    EVP_PKEY_free(f->jwt_key);
    ct_rmrf(f->dir);
    free(f->dir);
}

static void test_identity_ca(void **state)
{
    (void)state;
    ca_fx_t f;
    ca_fx_start(&f);
    char err[512], peer[512];
    px_secrets_t *sec = px_secrets_new();
    px_identity_opts_t o = {.ca_addr = f.addr,
                            .root_file = f.root_file,
                            .token_file = f.token_file,
                            .server_name = "meshd.local",
                            .trust_domain = "cluster.local",
                            .ns = "foo",
                            .sa = "bar",
                            .ttl_s = 4,
                            .ecdsa = true};
    px_identity_t *id = px_identity_start(&o, sec, err, sizeof err);
    if (!id)
        fail_msg("start: %s", err);
    assert_true(wait_for(id_ready, id, 10000));
    char spiffe[512];
    int64_t na1;
    px_identity_current(id, spiffe, sizeof spiffe, &na1);
    assert_string_equal(spiffe, "spiffe://cluster.local/ns/foo/sa/bar");
    int64_t now = (int64_t)time(NULL);
    assert_in_range(na1, now, now + 10);
    assert_true(px_secrets_has(sec, "ROOTCA"));
    char *root = ct_read(f.root_file);
    handshake_with(sec, root, peer, sizeof peer);
    assert_string_equal(peer, "spiffe://cluster.local/ns/foo/sa/bar");
    /* renewed at about half of its 4 s */
    id_want_t w = {id, "spiffe://cluster.local/ns/foo/sa/bar", na1};
    assert_true(wait_for(id_has, &w, 6000));
    handshake_with(sec, root, peer, sizeof peer);
    assert_string_equal(peer, "spiffe://cluster.local/ns/foo/sa/bar");

    /* the CA refuses from now on (an expired token): the certificate stays
     * until it expires, then it is withdrawn */
    write_token(&f, -3600);
    int64_t na2;
    px_identity_current(id, spiffe, sizeof spiffe, &na2);
    while ((int64_t)time(NULL) < na2 - 1) {
        assert_true(px_identity_ready(id));
        assert_true(px_secrets_has(sec, "default"));
        usleep(200000);
    }
    assert_true(wait_for(id_not_ready, id, 8000));
    assert_false(px_secrets_has(sec, "default"));
    px_identity_current(id, spiffe, sizeof spiffe, &na2);
    assert_string_equal(spiffe, "");
    /* the CA accepts again: a retry (backoff of a few seconds) installs one */
    write_token(&f, 3600);
    assert_true(wait_for(id_ready, id, 20000));
    assert_true(px_secrets_has(sec, "default"));
    px_identity_stop(id);
    px_secrets_free(sec);
    free(root);
    ca_fx_stop(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mtls),
        cmocka_unit_test(test_san_matchers),
        cmocka_unit_test(test_client_cert_required),
        cmocka_unit_test(test_alpn),
        cmocka_unit_test(test_rotation),
        cmocka_unit_test(test_ctx_params),
        cmocka_unit_test(test_resumption),
        cmocka_unit_test(test_hello_real),
        cmocka_unit_test(test_hello_edges),
        cmocka_unit_test(test_spiffe_principal),
        cmocka_unit_test(test_identity_files),
        cmocka_unit_test(test_identity_ca),
    };
    return cmocka_run_group_tests(tests, pki_setup, pki_teardown);
}
