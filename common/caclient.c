/*
 * caclient: key and CSR generation, the CreateCertificate call, chain
 * verification, and the renewing client (see caclient.h).
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <json-c/json.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include "arena.h"
#include "b64.h"
#include "caclient.h"
#include "grpc.h"
#include "log.h"
#include "transport.h"
#include "istio/v1/auth/ca.pb-c.h"

#define CACLIENT_PATH "/istio.v1.auth.IstioCertificateService/CreateCertificate"


static const char *ossl_reason(char *buf, size_t len)
{
    unsigned long e = ERR_peek_last_error();
    const char *r = e ? ERR_reason_error_string(e) : NULL;
    snprintf(buf, len, "%s", r ? r : "unknown error");
    ERR_clear_error();
    return buf;
}

void caclient_free_secret(char *s)
{
    if (!s)
        return;
    OPENSSL_cleanse(s, strlen(s));
    free(s);
}

static char *read_file(const char *path, size_t max)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    char *buf = mesh_xmalloc(max + 1);
    size_t n = fread(buf, 1, max, f);
    bool bad = ferror(f) || (n == max && fgetc(f) != EOF);
    fclose(f);
    if (bad) {
        OPENSSL_cleanse(buf, n);
        free(buf);
        errno = bad && n == max ? EFBIG : EIO;
        return NULL;
    }
    buf[n] = 0;
    return buf;
}

char *caclient_make_key(caclient_key_t kt)
{
    EVP_PKEY *k = kt == CACLIENT_ECDSA ? EVP_EC_gen("P-256") : EVP_RSA_gen(2048);
    if (!k)
        return NULL;
    BIO *b = BIO_new(BIO_s_secmem());
    char *s = NULL;
    if (b && PEM_write_bio_PrivateKey(b, k, NULL, NULL, 0, NULL, NULL)) {
        BUF_MEM *m = NULL;
        BIO_get_mem_ptr(b, &m);
        s = mesh_xmalloc(m->length + 1);
        memcpy(s, m->data, m->length);
        s[m->length] = 0;
    }
    BIO_free(b);
    EVP_PKEY_free(k);
    return s;
}

static EVP_PKEY *load_key(const char *pem)
{
    BIO *b = BIO_new_mem_buf(pem, -1);
    EVP_PKEY *k = b ? PEM_read_bio_PrivateKey(b, NULL, NULL, NULL) : NULL;
    BIO_free(b);
    return k;
}

int caclient_make_csr(const char *key_pem, const char *spiffe_id, char **csr_pem, char *err, size_t errlen)
{
    char why[256];
    int rc = -1;
    *csr_pem = NULL;
    EVP_PKEY *k = load_key(key_pem);
    X509_REQ *r = X509_REQ_new();
    STACK_OF(X509_EXTENSION) *exts = NULL;
    GENERAL_NAMES *gns = sk_GENERAL_NAME_new_null();
    GENERAL_NAME *g = GENERAL_NAME_new();
    ASN1_IA5STRING *uri = ASN1_IA5STRING_new();
    BIO *b = BIO_new(BIO_s_mem());
    if (!k || !r || !gns || !g || !uri || !b) {
        mesh_errf(err, errlen, "csr: %s", k ? "out of memory" : "the private key cannot be read");
        goto out;
    }
    if (!ASN1_STRING_set(uri, spiffe_id, (int)strlen(spiffe_id)))
        goto fail;
    GENERAL_NAME_set0_value(g, GEN_URI, uri);
    uri = NULL;
    sk_GENERAL_NAME_push(gns, g);
    g = NULL;
    if (!X509_REQ_set_version(r, 0) || !X509_REQ_set_pubkey(r, k) ||
        X509V3_add1_i2d(&exts, NID_subject_alt_name, gns, 1, X509V3_ADD_DEFAULT) != 1 ||
        !X509_REQ_add_extensions(r, exts) || !X509_REQ_sign(r, k, EVP_sha256()) || !PEM_write_bio_X509_REQ(b, r))
        goto fail;
    BUF_MEM *m = NULL;
    BIO_get_mem_ptr(b, &m);
    *csr_pem = mesh_xmalloc(m->length + 1);
    memcpy(*csr_pem, m->data, m->length);
    (*csr_pem)[m->length] = 0;
    rc = 0;
    goto out;
fail:
    mesh_errf(err, errlen, "csr: %s", ossl_reason(why, sizeof why));
out:
    BIO_free(b);
    ASN1_IA5STRING_free(uri);
    GENERAL_NAME_free(g);
    GENERAL_NAMES_free(gns);
    sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
    X509_REQ_free(r);
    EVP_PKEY_free(k);
    return rc;
}

static STACK_OF(X509) *parse_certs(const char *pem)
{
    STACK_OF(X509) *sk = sk_X509_new_null();
    BIO *b = BIO_new_mem_buf(pem, -1);
    X509 *x;
    while (b && sk && (x = PEM_read_bio_X509(b, NULL, NULL, NULL)))
        sk_X509_push(sk, x);
    ERR_clear_error();
    BIO_free(b);
    if (sk && sk_X509_num(sk) == 0) {
        sk_X509_free(sk);
        sk = NULL;
    }
    return sk;
}

static char *x509_pem(X509 *x)
{
    BIO *b = BIO_new(BIO_s_mem());
    char *s = NULL;
    if (b && PEM_write_bio_X509(b, x)) {
        BUF_MEM *m = NULL;
        BIO_get_mem_ptr(b, &m);
        s = mesh_xmalloc(m->length + 1);
        memcpy(s, m->data, m->length);
        s[m->length] = 0;
    }
    BIO_free(b);
    return s;
}

static int64_t asn1_unix(const ASN1_TIME *t)
{
    struct tm tm;
    return t && ASN1_TIME_to_tm(t, &tm) ? (int64_t)timegm(&tm) : 0;
}

int caclient_verify_chain(char *const *chain, size_t n, const char *root_pem, const char *want_id,
                          caclient_cert_t *out, char *err, size_t errlen)
{
    int rc = -1;
    STACK_OF(X509) *roots = NULL, *inter = sk_X509_new_null(), *path = NULL;
    X509 *leaf = NULL;
    X509_STORE *store = X509_STORE_new();
    X509_STORE_CTX *ctx = X509_STORE_CTX_new();
    GENERAL_NAMES *sans = NULL;
    if (n == 0)
        return mesh_errf(err, errlen, "the response holds no certificate");
    if (!inter || !store || !ctx) {
        mesh_errf(err, errlen, "out of memory");
        goto out;
    }
    if (!root_pem || !(roots = parse_certs(root_pem))) {
        mesh_errf(err, errlen, "no trusted root certificate");
        goto out;
    }
    STACK_OF(X509) *leafs = parse_certs(chain[0]);
    if (!leafs) {
        mesh_errf(err, errlen, "certificate 1 of the response cannot be parsed");
        goto out;
    }
    leaf = sk_X509_shift(leafs);
    while (sk_X509_num(leafs)) /* a leaf element carrying more certificates: intermediates */
        sk_X509_push(inter, sk_X509_shift(leafs));
    sk_X509_free(leafs);
    for (size_t i = 1; i < n; i++) {
        STACK_OF(X509) *c = parse_certs(chain[i]);
        if (!c) {
            mesh_errf(err, errlen, "certificate %zu of the response cannot be parsed", i + 1);
            goto out;
        }
        while (sk_X509_num(c))
            sk_X509_push(inter, sk_X509_shift(c));
        sk_X509_free(c);
    }
    for (int i = 0; i < sk_X509_num(roots); i++)
        X509_STORE_add_cert(store, sk_X509_value(roots, i));
    if (!X509_STORE_CTX_init(ctx, store, leaf, inter)) {
        mesh_errf(err, errlen, "out of memory");
        goto out;
    }
    X509_STORE_CTX_set_purpose(ctx, X509_PURPOSE_SSL_CLIENT);
    if (X509_verify_cert(ctx) != 1) {
        mesh_errf(err, errlen, "the certificate does not verify against the trusted root: %s (depth %d)",
             X509_verify_cert_error_string(X509_STORE_CTX_get_error(ctx)), X509_STORE_CTX_get_error_depth(ctx));
        goto out;
    }
    char id[512] = "";
    int nuri = 0;
    sans = X509_get_ext_d2i(leaf, NID_subject_alt_name, NULL, NULL);
    for (int i = 0; sans && i < sk_GENERAL_NAME_num(sans); i++) {
        GENERAL_NAME *g = sk_GENERAL_NAME_value(sans, i);
        if (g->type != GEN_URI)
            continue;
        int l = ASN1_STRING_length(g->d.uniformResourceIdentifier);
        if (l > 0 && (size_t)l < sizeof id) {
            memcpy(id, ASN1_STRING_get0_data(g->d.uniformResourceIdentifier), (size_t)l);
            id[l] = 0;
        }
        nuri++;
    }
    if (want_id && (nuri != 1 || strcmp(id, want_id) != 0)) {
        mesh_errf(err, errlen, "the certificate is for \"%s\", not for %s", nuri ? id : "(no URI SAN)", want_id);
        goto out;
    }
    path = X509_STORE_CTX_get1_chain(ctx);
    snprintf(out->identity, sizeof out->identity, "%s", id);
    out->not_before = asn1_unix(X509_get0_notBefore(leaf));
    out->not_after = asn1_unix(X509_get0_notAfter(leaf));
    out->root_pem = x509_pem(sk_X509_value(path, sk_X509_num(path) - 1));
    /* what a server presents: the leaf and the intermediates on the path */
    size_t total = 0;
    char **parts = mesh_xcalloc((size_t)sk_X509_num(path), sizeof *parts);
    int np = sk_X509_num(path) > 1 ? sk_X509_num(path) - 1 : 1;
    for (int i = 0; i < np; i++) {
        parts[i] = x509_pem(sk_X509_value(path, i));
        total += parts[i] ? strlen(parts[i]) : 0;
    }
    out->cert_chain_pem = mesh_xmalloc(total + 1);
    out->cert_chain_pem[0] = 0;
    for (int i = 0; i < np; i++) {
        if (parts[i])
            strcat(out->cert_chain_pem, parts[i]);
        free(parts[i]);
    }
    free(parts);
    out->nchain = n;
    out->chain = mesh_xcalloc(n, sizeof *out->chain);
    for (size_t i = 0; i < n; i++)
        out->chain[i] = mesh_xstrdup(chain[i]);
    rc = 0;
out:
    ERR_clear_error();
    GENERAL_NAMES_free(sans);
    sk_X509_pop_free(path, X509_free);
    X509_free(leaf);
    sk_X509_pop_free(inter, X509_free);
    sk_X509_pop_free(roots, X509_free);
    X509_STORE_CTX_free(ctx);
    X509_STORE_free(store);
    return rc;
}

int caclient_token_identity(const char *token, const char *trust_domain, char *spiffe_id, size_t len, char *err,
                            size_t errlen)
{
    const char *d1 = strchr(token, '.');
    const char *d2 = d1 ? strchr(d1 + 1, '.') : NULL;
    if (!d1 || !d2)
        return mesh_errf(err, errlen, "the token is not a JWT");
    size_t pl = 0;
    unsigned char *pay = b64_decode(d1 + 1, (size_t)(d2 - d1 - 1), &pl);
    struct json_object *p = pay ? json_tokener_parse((const char *)pay) : NULL, *sub = NULL;
    free(pay);
    int rc = -1;
    static const char prefix[] = "system:serviceaccount:";
    const char *s = p && json_object_object_get_ex(p, "sub", &sub) ? json_object_get_string(sub) : NULL;
    const char *colon = s && !strncmp(s, prefix, sizeof prefix - 1) ? strchr(s + sizeof prefix - 1, ':') : NULL;
    if (!colon) {
        mesh_errf(err, errlen, "the token's subject \"%s\" is not a service account", s ? s : "");
    } else {
        int n = snprintf(spiffe_id, len, "spiffe://%s/ns/%.*s/sa/%s", trust_domain ? trust_domain : "cluster.local",
                         (int)(colon - s - (sizeof prefix - 1)), s + sizeof prefix - 1, colon + 1);
        rc = n > 0 && (size_t)n < len ? 0 : mesh_errf(err, errlen, "the token's subject is too long");
    }
    json_object_put(p);
    return rc;
}

void caclient_cert_free(caclient_cert_t *c)
{
    if (!c)
        return;
    caclient_free_secret(c->key_pem);
    free(c->cert_chain_pem);
    free(c->root_pem);
    for (size_t i = 0; i < c->nchain; i++)
        free(c->chain[i]);
    free(c->chain);
    memset(c, 0, sizeof *c);
}

static void trim(char *s)
{
    size_t n = strlen(s);
    while (n && (s[n - 1] == '\n' || s[n - 1] == '\r' || s[n - 1] == ' ' || s[n - 1] == '\t'))
        s[--n] = 0;
}

int caclient_fetch(const caclient_opts_t *o, caclient_cert_t *out, char *err, size_t errlen)
{
    char id[512], e2[512];
    char *token = NULL, *root = NULL, *key = NULL, *csr = NULL, *authz = NULL, *msg = NULL;
    uint8_t *req = NULL, *resp = NULL;
    size_t resp_len = 0;
    tp_tls_ctx_t *tls = NULL;
    Istio__V1__Auth__IstioCertificateResponse *r = NULL;
    int rc = -1;
    memset(out, 0, sizeof *out);
    if (!o->addr || !o->token_file || (!o->root_pem && !o->root_file))
        return mesh_errf(err, errlen, "the CA address, the token file and the root certificate are required");
    if (!(token = read_file(o->token_file, 64 * 1024))) {
        mesh_errf(err, errlen, "token file %s: cannot read: %s", o->token_file, strerror(errno));
        goto out;
    }
    trim(token);
    if (o->root_pem)
        root = mesh_xstrdup(o->root_pem);
    else if (!(root = read_file(o->root_file, 1024 * 1024))) {
        mesh_errf(err, errlen, "root certificate %s: cannot read: %s", o->root_file, strerror(errno));
        goto out;
    }
    if (o->ns && o->sa) {
        snprintf(id, sizeof id, "spiffe://%s/ns/%s/sa/%s", o->trust_domain ? o->trust_domain : "cluster.local", o->ns,
                 o->sa);
    } else if (caclient_token_identity(token, o->trust_domain, id, sizeof id, e2, sizeof e2) != 0) {
        mesh_errf(err, errlen, "token file %s: %s", o->token_file, e2);
        goto out;
    }
    if (!(key = caclient_make_key(o->key_type))) {
        mesh_errf(err, errlen, "cannot generate a key: %s", ossl_reason(e2, sizeof e2));
        goto out;
    }
    if (caclient_make_csr(key, id, &csr, err, errlen) != 0)
        goto out;
    Istio__V1__Auth__IstioCertificateRequest rq = ISTIO__V1__AUTH__ISTIO_CERTIFICATE_REQUEST__INIT;
    rq.csr = csr;
    rq.validity_duration = o->ttl_s;
    size_t req_len = istio__v1__auth__istio_certificate_request__get_packed_size(&rq);
    req = mesh_xmalloc(req_len + 1);
    istio__v1__auth__istio_certificate_request__pack(&rq, req);

    const char *sn = o->server_name ? o->server_name : CACLIENT_DEFAULT_SERVER_NAME;
    grpc_client_opts_t go = {0};
    if (!o->plaintext) {
        tp_tls_config_t tc = {0};
        tc.ca_pem = root;
        tc.verify = TP_VERIFY_REQUIRE;
        tc.verify_name = sn;
        if (!(tls = tp_tls_client_new(&tc, err, errlen)))
            goto out;
        go.tls = tls;
        go.sni = sn;
    }
    go.authority = sn;
    size_t al = strlen(token) + 8;
    authz = mesh_xmalloc(al);
    snprintf(authz, al, "Bearer %s", token);
    const char *hdrs[] = {"authorization", authz, NULL};
    int st = grpc_unary_call(o->addr, &go, CACLIENT_PATH, hdrs, req, req_len, &resp, &resp_len,
                             o->timeout_ms ? o->timeout_ms : 30000, &msg);
    if (st != GRPC_OK) {
        mesh_errf(err, errlen, "CreateCertificate at %s: %s: %s", o->addr, grpc_status_name(st), msg ? msg : "");
        rc = st;
        goto out;
    }
    if (!(r = istio__v1__auth__istio_certificate_response__unpack(NULL, resp_len, resp))) {
        mesh_errf(err, errlen, "CreateCertificate at %s: the response cannot be decoded", o->addr);
        goto out;
    }
    if (caclient_verify_chain(r->cert_chain, r->n_cert_chain, root, id, out, e2, sizeof e2) != 0) {
        mesh_errf(err, errlen, "CreateCertificate at %s: %s", o->addr, e2);
        caclient_cert_free(out);
        goto out;
    }
    out->key_pem = key;
    key = NULL;
    rc = 0;
out:
    if (r)
        istio__v1__auth__istio_certificate_response__free_unpacked(r, NULL);
    if (tls)
        tp_tls_ctx_unref(tls);
    caclient_free_secret(token);
    caclient_free_secret(authz);
    caclient_free_secret(key);
    free(root);
    free(csr);
    free(req);
    free(resp);
    free(msg);
    return rc;
}

/* ---- the renewing client ---- */

typedef struct fetch_job {
    caclient_t *c;
    caclient_cert_t cert;
    int rc;
    char err[1024];
} fetch_job_t;

struct caclient {
    loop_t *loop;
    workq_t *wq;
    caclient_opts_t o; /* strings below */
    char *addr, *root_pem, *root_file, *token_file, *server_name, *trust_domain, *ns, *sa;
    caclient_cb cb;
    void *ud;
    loop_timer_t *timer;
    fetch_job_t *job; /* in flight */
    bool stopped;
    uint64_t backoff_ms;
    uint64_t next_at; /* loop_now() of the next fetch */
};

static char *dup_or_null(const char *s) { return s ? mesh_xstrdup(s) : NULL; }

static double jitter_unit(void)
{
    uint32_t r = 0;
    if (RAND_bytes((unsigned char *)&r, sizeof r) != 1)
        r = (uint32_t)time(NULL) * 2654435761u;
    return (double)r / 4294967296.0; /* [0, 1) */
}

static void schedule(caclient_t *c, uint64_t delay_ms)
{
    c->next_at = loop_now(c->loop) + delay_ms;
    loop_timer_start(c->timer, delay_ms, 0);
}

static void job_work(void *arg)
{
    fetch_job_t *j = arg;
    j->rc = caclient_fetch(&j->c->o, &j->cert, j->err, sizeof j->err);
}

static void client_free(caclient_t *c)
{
    loop_timer_free(c->timer);
    free(c->addr);
    free(c->root_pem);
    free(c->root_file);
    free(c->token_file);
    free(c->server_name);
    free(c->trust_domain);
    free(c->ns);
    free(c->sa);
    free(c);
}

static void job_done(void *arg)
{
    fetch_job_t *j = arg;
    caclient_t *c = j->c;
    c->job = NULL;
    if (c->stopped) {
        caclient_cert_free(&j->cert);
        free(j);
        client_free(c);
        return;
    }
    if (j->rc == 0) {
        c->backoff_ms = 0;
        /* half of the life left from now (notBefore is backdated for clock
         * skew, so it would make the half-life look earlier than it is) */
        int64_t now = (int64_t)time(NULL);
        double left_ms = (double)(j->cert.not_after - now) * 1000.0;
        double delay = left_ms * (0.45 + 0.1 * jitter_unit());
        schedule(c, delay < 1000 ? 1000 : (uint64_t)delay);
        c->cb(c->ud, &j->cert, NULL);
    } else {
        c->backoff_ms = c->backoff_ms ? c->backoff_ms * 2 : 1000;
        if (c->backoff_ms > 60000)
            c->backoff_ms = 60000;
        uint64_t d = c->backoff_ms / 2 + (uint64_t)((double)(c->backoff_ms / 2) * jitter_unit());
        schedule(c, d);
        c->cb(c->ud, NULL, j->err);
    }
    caclient_cert_free(&j->cert);
    free(j);
}

static void on_timer(loop_timer_t *t, void *arg)
{
    (void)t;
    caclient_t *c = arg;
    if (c->job || c->stopped)
        return;
    fetch_job_t *j = mesh_xcalloc(1, sizeof *j);
    j->c = c;
    c->job = j;
    if (workq_submit(c->wq, c->loop, job_work, job_done, j) != 0) {
        c->job = NULL;
        free(j);
        schedule(c, 1000);
    }
}

caclient_t *caclient_start(loop_t *loop, workq_t *wq, const caclient_opts_t *o, caclient_cb cb, void *ud, char *err,
                           size_t errlen)
{
    if (!o->addr || !o->token_file || (!o->root_pem && !o->root_file) || !cb) {
        mesh_errf(err, errlen, "caclient: the CA address, the token file, the root certificate and a callback are required");
        return NULL;
    }
    caclient_t *c = mesh_xcalloc(1, sizeof *c);
    c->loop = loop;
    c->wq = wq;
    c->cb = cb;
    c->ud = ud;
    c->o = *o;
    c->o.addr = c->addr = dup_or_null(o->addr);
    c->o.root_pem = c->root_pem = dup_or_null(o->root_pem);
    c->o.root_file = c->root_file = dup_or_null(o->root_file);
    c->o.token_file = c->token_file = dup_or_null(o->token_file);
    c->o.server_name = c->server_name = dup_or_null(o->server_name);
    c->o.trust_domain = c->trust_domain = dup_or_null(o->trust_domain);
    c->o.ns = c->ns = dup_or_null(o->ns);
    c->o.sa = c->sa = dup_or_null(o->sa);
    c->timer = loop_timer_new(loop, on_timer, c);
    schedule(c, 0);
    return c;
}

void caclient_renew_now(caclient_t *c)
{
    if (!c->job)
        schedule(c, 0);
}

uint64_t caclient_next_ms(const caclient_t *c)
{
    uint64_t now = loop_now(c->loop);
    return c->next_at > now ? c->next_at - now : 0;
}

void caclient_stop(caclient_t *c)
{
    if (!c)
        return;
    c->stopped = true;
    loop_timer_stop(c->timer);
    if (!c->job)
        client_free(c);
}
