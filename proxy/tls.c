/*
 * tls: meshproxy's TLS contexts, secrets, connections and ClientHello peek
 * (see tls_internal.h for the ownership rules).
 *
 * Contexts carry a small per-SSL_CTX attachment (ctx_data_t, freed with the
 * SSL_CTX): the server's ALPN preference list in wire format and the client's
 * last resumable session. Because connections hold their own SSL_CTX
 * reference, the attachment lives exactly as long as anything can use it.
 */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "../common/hmap.h"
#include "tls_internal.h"

/* Per-worker cache size: past it the least recently used context goes. */
#define PX_TLS_CACHE_MAX 1024

/* ---- helpers ---- */

static void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    if (err == NULL || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* The reason of the most recent OpenSSL error of this thread ("" when none);
 * clears the thread's error queue. */
static const char *ossl_reason(char *buf, size_t len)
{
    unsigned long e = ERR_peek_last_error();
    buf[0] = 0;
    if (e != 0) {
        const char *r = ERR_reason_error_string(e);
        if (r != NULL)
            snprintf(buf, len, "%s", r);
        else
            ERR_error_string_n(e, buf, len);
    }
    ERR_clear_error();
    return buf;
}

static void wipe_free(char *s)
{
    if (s != NULL)
        OPENSSL_clear_free(s, strlen(s));
}

static char *dup_or_null(const char *s)
{
    return s != NULL ? mesh_xstrdup(s) : NULL;
}

/* ---- configuration key ---- */

typedef struct keybuf {
    char *p;
    size_t len, cap;
} keybuf_t;

static void kb_add(keybuf_t *k, const char *s, size_t n)
{
    if (k->len + n + 1 > k->cap) {
        size_t cap = k->cap ? k->cap : 256;
        while (cap < k->len + n + 1)
            cap *= 2;
        k->p = mesh_xrealloc(k->p, cap);
        k->cap = cap;
    }
    memcpy(k->p + k->len, s, n);
    k->len += n;
    k->p[k->len] = 0;
}

/* name=<length>:<bytes>; (absent strings as name=-;), so no two different
 * configurations can produce the same text. */
static void kb_field(keybuf_t *k, const char *name, const char *v)
{
    char num[48];
    kb_add(k, name, strlen(name));
    if (v == NULL) {
        kb_add(k, "=-;", 3);
        return;
    }
    size_t n = strlen(v);
    int w = snprintf(num, sizeof num, "=%zu:", n);
    kb_add(k, num, (size_t)w);
    kb_add(k, v, n);
    kb_add(k, ";", 1);
}

static void kb_int(keybuf_t *k, const char *name, long long v)
{
    char num[64];
    int w = snprintf(num, sizeof num, "%s=%lld;", name, v);
    kb_add(k, num, (size_t)w);
}

int px_tls_cfg_finish(px_tls_cfg_t *cfg, arena_t *a)
{
    if (cfg == NULL || a == NULL || cfg->nalpn > PX_TLS_MAX_ALPN ||
        (cfg->nsans > 0 && cfg->sans == NULL))
        return -1;
    keybuf_t k = {0};
    kb_int(&k, "server", cfg->server);
    kb_field(&k, "cert_sds", cfg->cert_sds);
    kb_field(&k, "cert_pem", cfg->cert_pem);
    kb_field(&k, "key_pem", cfg->key_pem);
    kb_field(&k, "ca_sds", cfg->ca_sds);
    kb_field(&k, "ca_pem", cfg->ca_pem);
    kb_int(&k, "nsans", (long long)cfg->nsans);
    for (size_t i = 0; i < cfg->nsans; i++) {
        const px_str_match_t *m = &cfg->sans[i];
        char re[64];
        kb_int(&k, "san.kind", m->kind);
        kb_int(&k, "san.icase", m->ignore_case);
        if (m->kind == PX_STR_REGEX && m->value == NULL) {
            /* the pattern text is not kept: the compiled code names it */
            snprintf(re, sizeof re, "%p", (void *)m->re);
            kb_field(&k, "san.re", re);
        } else {
            kb_field(&k, "san.value", m->value);
        }
    }
    kb_int(&k, "require_client_cert", cfg->require_client_cert);
    kb_int(&k, "nalpn", (long long)cfg->nalpn);
    kb_int(&k, "h2", cfg->h2);
    for (size_t i = 0; i < cfg->nalpn; i++)
        kb_field(&k, "alpn", cfg->alpn[i]);
    kb_field(&k, "sni", cfg->sni);
    kb_int(&k, "min", cfg->min_version);
    kb_int(&k, "max", cfg->max_version);
    kb_field(&k, "ciphers", cfg->ciphers);
    kb_field(&k, "curves", cfg->curves);
    cfg->key = arena_strndup(a, k.p, k.len);
    free(k.p);
    return 0;
}

/* ---- secrets ---- */

typedef struct secret {
    char *name;
    char *chain, *key, *ca;
} secret_t;

struct px_secrets {
    pthread_mutex_t mu;
    hmap_t map; /* name -> secret_t (key: secret_t.name) */
    _Atomic uint64_t generation;
    /* the process's secret from which server contexts derive their
     * session-ticket keys (the same on every worker for the same material) */
    unsigned char ticket_keys[80];
};

static void secret_free(secret_t *e)
{
    if (e == NULL)
        return;
    free(e->name);
    wipe_free(e->chain);
    wipe_free(e->key);
    wipe_free(e->ca);
    free(e);
}

px_secrets_t *px_secrets_new(void)
{
    px_secrets_t *s = mesh_xcalloc(1, sizeof *s);
    if (pthread_mutex_init(&s->mu, NULL) != 0) {
        free(s);
        return NULL;
    }
    /* the kernel's CSPRNG, not RAND_bytes: OpenSSL is only brought up (a few
     * MB of its code paged in) once a TLS context is actually needed */
    if (getrandom(s->ticket_keys, sizeof s->ticket_keys, 0) != (ssize_t)sizeof s->ticket_keys) {
        pthread_mutex_destroy(&s->mu);
        free(s);
        return NULL;
    }
    atomic_init(&s->generation, 1);
    return s;
}

void px_secrets_free(px_secrets_t *s)
{
    if (s == NULL)
        return;
    size_t it = 0;
    const char *k;
    void *v;
    while (hmap_next(&s->map, &it, &k, &v))
        secret_free(v);
    hmap_clear(&s->map);
    pthread_mutex_destroy(&s->mu);
    OPENSSL_cleanse(s->ticket_keys, sizeof s->ticket_keys);
    free(s);
}

int px_secrets_set(px_secrets_t *s, const char *name, const char *chain_pem, const char *key_pem,
                   const char *ca_pem)
{
    if (s == NULL || name == NULL || name[0] == 0)
        return -1;
    secret_t *e = mesh_xcalloc(1, sizeof *e);
    e->name = mesh_xstrdup(name);
    e->chain = dup_or_null(chain_pem);
    e->key = dup_or_null(key_pem);
    e->ca = dup_or_null(ca_pem);
    pthread_mutex_lock(&s->mu);
    secret_t *old = hmap_put(&s->map, e->name, e);
    atomic_fetch_add(&s->generation, 1);
    pthread_mutex_unlock(&s->mu);
    secret_free(old);
    return 0;
}

void px_secrets_remove(px_secrets_t *s, const char *name)
{
    if (s == NULL || name == NULL)
        return;
    pthread_mutex_lock(&s->mu);
    secret_t *old = hmap_del(&s->map, name);
    if (old != NULL)
        atomic_fetch_add(&s->generation, 1);
    pthread_mutex_unlock(&s->mu);
    secret_free(old);
}

bool px_secrets_has(px_secrets_t *s, const char *name)
{
    if (s == NULL || name == NULL)
        return false;
    pthread_mutex_lock(&s->mu);
    bool has = hmap_get(&s->map, name) != NULL;
    pthread_mutex_unlock(&s->mu);
    return has;
}

uint64_t px_secrets_generation(const px_secrets_t *s)
{
    return atomic_load(&((px_secrets_t *)s)->generation);
}

/* The key material a config uses right now (copies; wiped by material_free). */
typedef struct material {
    char *chain, *key, *ca;
} material_t;

static void material_free(material_t *m)
{
    wipe_free(m->chain);
    wipe_free(m->key);
    wipe_free(m->ca);
    memset(m, 0, sizeof *m);
}

static int material_get(px_secrets_t *s, const px_tls_cfg_t *cfg, material_t *m, char *err,
                        size_t errlen)
{
    int rc = -1;
    memset(m, 0, sizeof *m);
    pthread_mutex_lock(&s->mu);
    if (cfg->cert_sds != NULL) {
        const secret_t *e = hmap_get(&s->map, cfg->cert_sds);
        if (e == NULL) {
            set_err(err, errlen, "certificate secret \"%s\": not received yet", cfg->cert_sds);
            goto out;
        }
        if (e->chain == NULL || e->key == NULL) {
            set_err(err, errlen, "certificate secret \"%s\": no certificate chain and key",
                    cfg->cert_sds);
            goto out;
        }
        m->chain = mesh_xstrdup(e->chain);
        m->key = mesh_xstrdup(e->key);
    } else {
        m->chain = dup_or_null(cfg->cert_pem);
        m->key = dup_or_null(cfg->key_pem);
    }
    if (cfg->ca_sds != NULL) {
        const secret_t *e = hmap_get(&s->map, cfg->ca_sds);
        if (e == NULL) {
            set_err(err, errlen, "validation secret \"%s\": not received yet", cfg->ca_sds);
            goto out;
        }
        if (e->ca == NULL) {
            set_err(err, errlen, "validation secret \"%s\": no trusted CA", cfg->ca_sds);
            goto out;
        }
        m->ca = mesh_xstrdup(e->ca);
    } else {
        m->ca = dup_or_null(cfg->ca_pem);
    }
    rc = 0;
out:
    pthread_mutex_unlock(&s->mu);
    if (rc < 0)
        material_free(m);
    return rc;
}

static void material_digest(const material_t *m, unsigned char out[32])
{
    EVP_MD_CTX *d = EVP_MD_CTX_new();
    unsigned int len = 32;
    memset(out, 0, 32);
    if (d == NULL)
        return;
    if (EVP_DigestInit_ex(d, EVP_sha256(), NULL) == 1) {
        const char *parts[3] = {m->chain, m->key, m->ca};
        for (int i = 0; i < 3; i++) {
            unsigned char tag = parts[i] ? (unsigned char)('a' + i) : (unsigned char)('A' + i);
            EVP_DigestUpdate(d, &tag, 1);
            if (parts[i] != NULL)
                EVP_DigestUpdate(d, parts[i], strlen(parts[i]) + 1);
        }
        EVP_DigestFinal_ex(d, out, &len);
    }
    EVP_MD_CTX_free(d);
}

/* ---- per-context data ---- */

typedef struct ctx_data {
    unsigned char alpn[256]; /* server: accepted protocols in our order, wire format */
    size_t alpn_len;
    SSL_SESSION *last; /* client: the last resumable session */
} ctx_data_t;

static int ctx_data_index = -1;
static pthread_once_t ctx_data_once = PTHREAD_ONCE_INIT;

static void ctx_data_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl,
                          void *argp)
{
    (void)parent, (void)ad, (void)idx, (void)argl, (void)argp;
    ctx_data_t *d = ptr;
    if (d == NULL)
        return;
    SSL_SESSION_free(d->last);
    free(d);
}

static void ctx_data_init(void)
{
    ctx_data_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, ctx_data_free);
}

static ctx_data_t *ctx_data(const SSL_CTX *ctx)
{
    if (ctx_data_index < 0)
        return NULL;
    return SSL_CTX_get_ex_data(ctx, ctx_data_index);
}

/* "h2" is offered / selected only when the config's owner speaks HTTP/2
 * (cfg->h2: an HTTP chain, an HTTP/2 cluster), whatever the list says. */
static bool alpn_usable(const px_tls_cfg_t *cfg, const char *p)
{
    size_t n = p ? strlen(p) : 0;
    return n > 0 && n <= 255 && (cfg->h2 || strcmp(p, "h2") != 0);
}

/* cfg's usable ALPN list in wire format; its length (0: none). */
static size_t alpn_wire(const px_tls_cfg_t *cfg, unsigned char *out, size_t cap)
{
    size_t len = 0;
    for (size_t i = 0; i < cfg->nalpn && i < PX_TLS_MAX_ALPN; i++) {
        const char *p = cfg->alpn[i];
        if (!alpn_usable(cfg, p))
            continue;
        size_t n = strlen(p);
        if (len + 1 + n > cap)
            break;
        out[len++] = (unsigned char)n;
        memcpy(out + len, p, n);
        len += n;
    }
    return len;
}

/* Server: the first of our protocols the client offered; none in common is
 * not a failure (the connection goes on without ALPN). */
static int alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                       const unsigned char *in, unsigned int inlen, void *arg)
{
    (void)arg;
    const ctx_data_t *d = ctx_data(SSL_get_SSL_CTX(ssl));
    if (d == NULL || d->alpn_len == 0)
        return SSL_TLSEXT_ERR_NOACK;
    for (size_t i = 0; i < d->alpn_len; i += 1 + (size_t)d->alpn[i]) {
        const unsigned char *want = d->alpn + i + 1;
        unsigned wl = d->alpn[i];
        for (unsigned j = 0; j < inlen;) {
            unsigned l = in[j];
            if (j + 1 + l > inlen)
                break;
            if (l == wl && memcmp(in + j + 1, want, wl) == 0) {
                *out = in + j + 1;
                *outlen = (unsigned char)l;
                return SSL_TLSEXT_ERR_OK;
            }
            j += 1 + l;
        }
    }
    return SSL_TLSEXT_ERR_NOACK;
}

/* Client: keeps the newest session of the context for the next connection. */
static int session_new(SSL *ssl, SSL_SESSION *sess)
{
    ctx_data_t *d = ctx_data(SSL_get_SSL_CTX(ssl));
    if (d == NULL || !SSL_SESSION_is_resumable(sess))
        return 0;
    SSL_SESSION_free(d->last);
    d->last = sess; /* we keep the reference OpenSSL handed us */
    return 1;
}

/* ---- building contexts ---- */

static STACK_OF(X509) * read_certs(const char *pem)
{
    STACK_OF(X509) *sk = sk_X509_new_null();
    BIO *b = BIO_new_mem_buf(pem, -1);
    if (sk == NULL || b == NULL)
        goto fail;
    for (;;) {
        X509 *x = PEM_read_bio_X509(b, NULL, NULL, NULL);
        if (x == NULL)
            break;
        if (!sk_X509_push(sk, x)) {
            X509_free(x);
            goto fail;
        }
    }
    ERR_clear_error(); /* the end of the PEM text */
    BIO_free(b);
    if (sk_X509_num(sk) == 0) {
        sk_X509_free(sk);
        return NULL;
    }
    return sk;
fail:
    BIO_free(b);
    sk_X509_pop_free(sk, X509_free);
    return NULL;
}

static int load_identity(SSL_CTX *ctx, const material_t *m, const char *what, char *err,
                         size_t errlen)
{
    char why[256];
    int rc = -1;
    EVP_PKEY *pk = NULL;
    BIO *b = NULL;
    STACK_OF(X509) *certs = read_certs(m->chain);
    if (certs == NULL) {
        set_err(err, errlen, "%s: certificate chain: no PEM certificate found", what);
        goto out;
    }
    if (SSL_CTX_use_certificate(ctx, sk_X509_value(certs, 0)) != 1) {
        set_err(err, errlen, "%s: certificate: %s", what, ossl_reason(why, sizeof why));
        goto out;
    }
    for (int i = 1; i < sk_X509_num(certs); i++) {
        if (SSL_CTX_add1_chain_cert(ctx, sk_X509_value(certs, i)) != 1) {
            set_err(err, errlen, "%s: certificate chain[%d]: %s", what, i,
                    ossl_reason(why, sizeof why));
            goto out;
        }
    }
    b = BIO_new_mem_buf(m->key, -1);
    if (b == NULL || (pk = PEM_read_bio_PrivateKey(b, NULL, NULL, NULL)) == NULL) {
        ERR_clear_error();
        set_err(err, errlen, "%s: private key: no PEM private key found", what);
        goto out;
    }
    if (SSL_CTX_use_PrivateKey(ctx, pk) != 1 || SSL_CTX_check_private_key(ctx) != 1) {
        ossl_reason(why, sizeof why);
        set_err(err, errlen, "%s: private key does not match the certificate", what);
        goto out;
    }
    rc = 0;
out:
    EVP_PKEY_free(pk);
    BIO_free(b);
    sk_X509_pop_free(certs, X509_free);
    return rc;
}

static int load_ca(SSL_CTX *ctx, const char *pem, const char *what, char *err, size_t errlen)
{
    STACK_OF(X509) *certs = read_certs(pem);
    if (certs == NULL) {
        set_err(err, errlen, "%s: trusted CA: no PEM certificate found", what);
        return -1;
    }
    X509_STORE *st = SSL_CTX_get_cert_store(ctx);
    int rc = 0;
    for (int i = 0; i < sk_X509_num(certs); i++) {
        if (X509_STORE_add_cert(st, sk_X509_value(certs, i)) != 1) {
            unsigned long e = ERR_peek_last_error();
            /* the same root twice in a bundle is harmless */
            if (ERR_GET_REASON(e) != X509_R_CERT_ALREADY_IN_HASH_TABLE) {
                char why[256];
                set_err(err, errlen, "%s: trusted CA[%d]: %s", what, i,
                        ossl_reason(why, sizeof why));
                rc = -1;
                break;
            }
            ERR_clear_error();
        }
    }
    sk_X509_pop_free(certs, X509_free);
    return rc;
}

static SSL_CTX *build_ctx(const px_tls_cfg_t *cfg, const material_t *m,
                          const unsigned char digest[32], const px_secrets_t *s, char *err,
                          size_t errlen)
{
    char why[256];
    const char *what = cfg->server ? "server TLS context" : "client TLS context";
    ctx_data_t *d = NULL;
    pthread_once(&ctx_data_once, ctx_data_init);
    ERR_clear_error();
    SSL_CTX *ctx = SSL_CTX_new(cfg->server ? TLS_server_method() : TLS_client_method());
    if (ctx == NULL || ctx_data_index < 0) {
        set_err(err, errlen, "%s: %s", what, ossl_reason(why, sizeof why));
        goto fail;
    }
    d = mesh_xcalloc(1, sizeof *d);
    if (SSL_CTX_set_ex_data(ctx, ctx_data_index, d) != 1) {
        free(d);
        set_err(err, errlen, "%s: cannot attach its data", what);
        goto fail;
    }
    int minv = cfg->min_version ? cfg->min_version : TLS1_2_VERSION;
    int maxv = cfg->max_version ? cfg->max_version : TLS1_3_VERSION;
    if (SSL_CTX_set_min_proto_version(ctx, minv) != 1 ||
        SSL_CTX_set_max_proto_version(ctx, maxv) != 1 || minv > maxv) {
        ERR_clear_error();
        set_err(err, errlen, "%s: tls_params: unsupported protocol versions 0x%x..0x%x", what,
                (unsigned)minv, (unsigned)maxv);
        goto fail;
    }
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_IGNORE_UNEXPECTED_EOF |
                                 SSL_OP_NO_COMPRESSION);
    if (cfg->ciphers != NULL) {
        /* Envoy's equal-preference groups "[A|B]" become plain entries */
        char *list = mesh_xstrdup(cfg->ciphers), *o = list;
        for (const char *p = cfg->ciphers; *p; p++)
            if (*p != '[' && *p != ']')
                *o++ = *p == '|' ? ':' : *p;
        *o = 0;
        int ok = SSL_CTX_set_cipher_list(ctx, list);
        free(list);
        if (ok != 1) {
            set_err(err, errlen, "%s: tls_params.cipher_suites \"%s\": %s", what, cfg->ciphers,
                    ossl_reason(why, sizeof why));
            goto fail;
        }
    }
    if (cfg->curves != NULL && SSL_CTX_set1_groups_list(ctx, cfg->curves) != 1) {
        set_err(err, errlen, "%s: tls_params.ecdh_curves \"%s\": %s", what, cfg->curves,
                ossl_reason(why, sizeof why));
        goto fail;
    }
    if ((m->chain == NULL) != (m->key == NULL)) {
        set_err(err, errlen,
                "%s: a certificate chain needs its private key and the other way round", what);
        goto fail;
    }
    char src[300];
    if (m->chain != NULL) {
        if (cfg->cert_sds != NULL)
            snprintf(src, sizeof src, "%s: certificate secret \"%s\"", what, cfg->cert_sds);
        else
            snprintf(src, sizeof src, "%s: inline certificate", what);
        if (load_identity(ctx, m, src, err, errlen) < 0)
            goto fail;
    } else if (cfg->server) {
        set_err(err, errlen, "%s: no certificate", what);
        goto fail;
    }
    if (m->ca != NULL) {
        if (cfg->ca_sds != NULL)
            snprintf(src, sizeof src, "%s: validation secret \"%s\"", what, cfg->ca_sds);
        else
            snprintf(src, sizeof src, "%s: inline trusted_ca", what);
        if (load_ca(ctx, m->ca, src, err, errlen) < 0)
            goto fail;
    }

    if (cfg->server) {
        int mode = SSL_VERIFY_NONE;
        if (cfg->require_client_cert)
            mode = SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
        else if (m->ca != NULL)
            mode = SSL_VERIFY_PEER;
        SSL_CTX_set_verify(ctx, mode, NULL);
        d->alpn_len = alpn_wire(cfg, d->alpn, sizeof d->alpn);
        SSL_CTX_set_alpn_select_cb(ctx, alpn_select, NULL);
        /* Resumption across the contexts of the same config and key material
         * (every worker's): the session id context and the ticket keys derive
         * from both, so a rotation or a new trust bundle ends the resumption
         * of sessions verified under the old ones. */
        unsigned char sid[32], keys[96];
        unsigned int l = 32;
        bool ok = EVP_Digest(cfg->key ? cfg->key : "", cfg->key ? strlen(cfg->key) : 0, sid, &l,
                             EVP_sha256(), NULL) == 1;
        for (int i = 0; ok && i < 3; i++) {
            unsigned char in[sizeof s->ticket_keys + 64 + 1];
            memcpy(in, s->ticket_keys, sizeof s->ticket_keys);
            memcpy(in + sizeof s->ticket_keys, sid, 32);
            memcpy(in + sizeof s->ticket_keys + 32, digest, 32);
            in[sizeof in - 1] = (unsigned char)i;
            l = 32;
            ok = EVP_Digest(in, sizeof in, keys + 32 * i, &l, EVP_sha256(), NULL) == 1;
            OPENSSL_cleanse(in, sizeof in);
        }
        ok = ok && SSL_CTX_set_session_id_context(ctx, sid, 32) == 1 &&
             SSL_CTX_set_tlsext_ticket_keys(ctx, keys, 80) == 1;
        OPENSSL_cleanse(keys, sizeof keys);
        if (!ok) {
            set_err(err, errlen, "%s: session resumption: %s", what, ossl_reason(why, sizeof why));
            goto fail;
        }
    } else {
        SSL_CTX_set_verify(ctx, m->ca != NULL ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, NULL);
        unsigned char wire[256];
        size_t wl = alpn_wire(cfg, wire, sizeof wire);
        if (wl > 0 && SSL_CTX_set_alpn_protos(ctx, wire, (unsigned int)wl) != 0) {
            set_err(err, errlen, "%s: alpn: %s", what, ossl_reason(why, sizeof why));
            goto fail;
        }
        SSL_CTX_set_session_cache_mode(ctx,
                                       SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
        SSL_CTX_sess_set_new_cb(ctx, session_new);
    }
    return ctx;
fail:
    SSL_CTX_free(ctx);
    ERR_clear_error();
    return NULL;
}

/* ---- cache ---- */

typedef struct cache_ent {
    char *key;
    SSL_CTX *ctx;             /* NULL: the last build failed (err) */
    uint64_t generation;      /* the secrets' generation it was last checked against */
    unsigned char digest[32]; /* of the key material it was built from */
    uint64_t used;
    char err[512]; /* why ctx is NULL (until the generation moves) */
} cache_ent_t;

struct px_tls_cache {
    px_secrets_t *secrets;
    hmap_t map; /* key -> cache_ent_t */
    uint64_t tick;
};

px_tls_cache_t *px_tls_cache_new(px_secrets_t *secrets)
{
    if (secrets == NULL)
        return NULL;
    px_tls_cache_t *c = mesh_xcalloc(1, sizeof *c);
    c->secrets = secrets;
    return c;
}

static void ent_free(cache_ent_t *e)
{
    SSL_CTX_free(e->ctx);
    free(e->key);
    free(e);
}

void px_tls_cache_free(px_tls_cache_t *c)
{
    if (c == NULL)
        return;
    size_t it = 0;
    const char *k;
    void *v;
    while (hmap_next(&c->map, &it, &k, &v))
        ent_free(v);
    hmap_clear(&c->map);
    free(c);
}

static void cache_evict_one(px_tls_cache_t *c)
{
    size_t it = 0;
    const char *k;
    void *v;
    cache_ent_t *oldest = NULL;
    while (hmap_next(&c->map, &it, &k, &v)) {
        cache_ent_t *e = v;
        if (oldest == NULL || e->used < oldest->used)
            oldest = e;
    }
    if (oldest != NULL) {
        hmap_del(&c->map, oldest->key);
        ent_free(oldest);
    }
}

struct ssl_ctx_st *px_tls_ctx(px_tls_cache_t *c, const px_tls_cfg_t *cfg, char *err, size_t errlen)
{
    if (c == NULL || cfg == NULL || cfg->key == NULL) {
        set_err(err, errlen, "TLS config without a key (px_tls_cfg_finish not called)");
        return NULL;
    }
    uint64_t gen = px_secrets_generation(c->secrets);
    cache_ent_t *e = hmap_get(&c->map, cfg->key);
    if (e != NULL && e->generation == gen) {
        e->used = ++c->tick;
        if (e->ctx == NULL)
            set_err(err, errlen, "%s", e->err);
        return e->ctx;
    }
    if (e == NULL) {
        if (c->map.n >= PX_TLS_CACHE_MAX)
            cache_evict_one(c);
        e = mesh_xcalloc(1, sizeof *e);
        e->key = mesh_xstrdup(cfg->key);
        hmap_put(&c->map, e->key, e);
    }
    e->generation = gen;
    e->used = ++c->tick;
    material_t m;
    unsigned char digest[32];
    SSL_CTX *ctx = NULL;
    if (material_get(c->secrets, cfg, &m, e->err, sizeof e->err) == 0) {
        material_digest(&m, digest);
        if (e->ctx != NULL && memcmp(digest, e->digest, sizeof digest) == 0) {
            /* another secret moved: this context's material did not */
            material_free(&m);
            return e->ctx;
        }
        ctx = build_ctx(cfg, &m, digest, c->secrets, e->err, sizeof e->err);
        material_free(&m);
    }
    /* the old context goes (connections keep their own reference); a
     * failure is remembered until the secrets move again */
    SSL_CTX_free(e->ctx);
    e->ctx = ctx;
    if (ctx == NULL) {
        memset(e->digest, 0, sizeof e->digest);
        set_err(err, errlen, "%s", e->err);
        return NULL;
    }
    memcpy(e->digest, digest, sizeof digest);
    e->err[0] = 0;
    return ctx;
}

/* ---- connections ---- */

struct px_tls_conn {
    SSL *ssl;
    const px_tls_cfg_t *cfg;
    bool done;
    bool failed;    /* a fatal error was seen: its session is not reused */
    char *sni;      /* server side, after the handshake */
    char *peer_uri; /* verified peer's URI SAN */
    char alpn[256];
};

px_tls_conn_t *px_tls_conn_new(struct ssl_ctx_st *ctx, const px_tls_cfg_t *cfg, int fd)
{
    if (ctx == NULL || cfg == NULL || fd < 0)
        return NULL;
    ERR_clear_error();
    px_tls_conn_t *t = mesh_xcalloc(1, sizeof *t);
    t->cfg = cfg;
    t->ssl = SSL_new(ctx); /* holds its own reference to ctx */
    if (t->ssl == NULL || SSL_set_fd(t->ssl, fd) != 1)
        goto fail;
    SSL_set_mode(t->ssl, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_ENABLE_PARTIAL_WRITE |
                             SSL_MODE_RELEASE_BUFFERS);
    if (cfg->server) {
        SSL_set_accept_state(t->ssl);
    } else {
        if (cfg->sni != NULL && cfg->sni[0] && SSL_set_tlsext_host_name(t->ssl, cfg->sni) != 1)
            goto fail;
        const ctx_data_t *d = ctx_data(ctx);
        if (d != NULL && d->last != NULL && SSL_SESSION_is_resumable(d->last))
            SSL_set_session(t->ssl, d->last);
        SSL_set_connect_state(t->ssl);
    }
    return t;
fail:
    ERR_clear_error();
    px_tls_conn_free(t);
    return NULL;
}

void px_tls_conn_free(px_tls_conn_t *t)
{
    if (t == NULL)
        return;
    /* OpenSSL invalidates the session of a connection freed without a
     * close_notify; a connection that ended without an error (an idle pooled
     * connection, a peer that just closed) keeps its session resumable */
    if (t->ssl != NULL && t->done && !t->failed)
        SSL_set_shutdown(t->ssl, SSL_get_shutdown(t->ssl) | SSL_SENT_SHUTDOWN);
    SSL_free(t->ssl);
    free(t->sni);
    free(t->peer_uri);
    free(t);
}

/* The URI SAN of x (the first), or NULL. malloc'd. */
static char *first_uri_san(X509 *x)
{
    GENERAL_NAMES *gens = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    char *out = NULL;
    for (int i = 0; gens != NULL && i < sk_GENERAL_NAME_num(gens) && out == NULL; i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
        if (g->type != GEN_URI)
            continue;
        const unsigned char *p = ASN1_STRING_get0_data(g->d.uniformResourceIdentifier);
        int n = ASN1_STRING_length(g->d.uniformResourceIdentifier);
        if (n > 0 && memchr(p, 0, (size_t)n) == NULL)
            out = strndup((const char *)p, (size_t)n);
    }
    GENERAL_NAMES_free(gens);
    return out;
}

/* Whether one of x's URI or DNS SANs matches one of cfg->sans. On a
 * mismatch, err names what the peer is and what was wanted. */
static bool sans_match(const px_tls_cfg_t *cfg, X509 *x, char *err, size_t errlen)
{
    GENERAL_NAMES *gens = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    char seen[256] = "";
    bool ok = false;
    for (int i = 0; gens != NULL && i < sk_GENERAL_NAME_num(gens) && !ok; i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
        const ASN1_STRING *v;
        if (g->type == GEN_URI)
            v = g->d.uniformResourceIdentifier;
        else if (g->type == GEN_DNS)
            v = g->d.dNSName;
        else
            continue;
        const char *p = (const char *)ASN1_STRING_get0_data(v);
        size_t n = (size_t)ASN1_STRING_length(v);
        if (seen[0] == 0 && (g->type == GEN_URI || n < sizeof seen))
            snprintf(seen, sizeof seen, "%.*s", (int)(n < sizeof seen ? n : sizeof seen - 1), p);
        for (size_t j = 0; j < cfg->nsans && !ok; j++)
            ok = px_str_match(&cfg->sans[j], p, n);
    }
    GENERAL_NAMES_free(gens);
    if (!ok) {
        char want[512] = "";
        size_t w = 0;
        for (size_t j = 0; j < cfg->nsans && w + 1 < sizeof want; j++) {
            const px_str_match_t *m = &cfg->sans[j];
            const char *v = m->value ? m->value : "<regex>";
            int r = snprintf(want + w, sizeof want - w, "%s%s", j ? ", " : "", v);
            if (r < 0)
                break;
            w += (size_t)r;
        }
        set_err(err, errlen, "peer identity %s not in [%s]", seen[0] ? seen : "(no URI or DNS SAN)",
                want);
    }
    return ok;
}

static void forget_session(px_tls_conn_t *t)
{
    ctx_data_t *d = ctx_data(SSL_get_SSL_CTX(t->ssl));
    SSL_SESSION *s = SSL_get0_session(t->ssl);
    if (d != NULL && s != NULL && d->last == s) {
        SSL_SESSION_free(d->last);
        d->last = NULL;
    }
}

/* After the handshake: SAN checks, peer identity, SNI and ALPN. */
static int handshake_done(px_tls_conn_t *t, char *err, size_t errlen)
{
    X509 *peer = SSL_get0_peer_certificate(t->ssl);
    bool verifying = SSL_get_verify_mode(t->ssl) & SSL_VERIFY_PEER;
    bool verified = peer != NULL && verifying && SSL_get_verify_result(t->ssl) == X509_V_OK;
    if (t->cfg->nsans > 0) {
        if (peer == NULL && !t->cfg->server) {
            set_err(err, errlen, "peer presented no certificate");
            return -1;
        }
        if (peer != NULL && !sans_match(t->cfg, peer, err, errlen))
            return -1;
    }
    if (verified)
        t->peer_uri = first_uri_san(peer);
    if (t->cfg->server) {
        const char *sn = SSL_get_servername(t->ssl, TLSEXT_NAMETYPE_host_name);
        if (sn != NULL)
            t->sni = strdup(sn);
    }
    const unsigned char *a = NULL;
    unsigned int al = 0;
    SSL_get0_alpn_selected(t->ssl, &a, &al);
    if (a != NULL && al > 0 && al < sizeof t->alpn) {
        memcpy(t->alpn, a, al);
        t->alpn[al] = 0;
    }
    t->done = true;
    return 0;
}

int px_tls_handshake(px_tls_conn_t *t, unsigned *want, char *err, size_t errlen)
{
    if (want != NULL)
        *want = 0;
    if (t == NULL) {
        set_err(err, errlen, "no TLS connection");
        return -1;
    }
    if (t->done)
        return 1;
    ERR_clear_error();
    errno = 0;
    int r = SSL_do_handshake(t->ssl);
    if (r == 1) {
        if (handshake_done(t, err, errlen) < 0) {
            t->failed = true;
            forget_session(t);
            return -1;
        }
        return 1;
    }
    int e = SSL_get_error(t->ssl, r);
    char why[256];
    switch (e) {
    case SSL_ERROR_WANT_READ:
        if (want != NULL)
            *want = PX_TLS_WANT_READ;
        return 0;
    case SSL_ERROR_WANT_WRITE:
        if (want != NULL)
            *want = PX_TLS_WANT_WRITE;
        return 0;
    case SSL_ERROR_SYSCALL: {
        int en = errno;
        ossl_reason(why, sizeof why);
        if (en != 0)
            set_err(err, errlen, "TLS handshake: %s", strerror(en));
        else if (why[0])
            set_err(err, errlen, "TLS handshake: %s", why);
        else
            set_err(err, errlen, "TLS handshake: connection closed by the peer");
        break;
    }
    default: {
        long vr = SSL_get_verify_result(t->ssl);
        ossl_reason(why, sizeof why);
        if (vr != X509_V_OK && (SSL_get_verify_mode(t->ssl) & SSL_VERIFY_PEER))
            set_err(err, errlen, "TLS handshake: %s: %s",
                    why[0] ? why : "certificate verify failed", X509_verify_cert_error_string(vr));
        else
            set_err(err, errlen, "TLS handshake: %s", why[0] ? why : "protocol error");
        break;
    }
    }
    t->failed = true;
    forget_session(t);
    return -1;
}

/* Maps an SSL_read/SSL_write failure to the header's contract. */
static ssize_t io_fail(px_tls_conn_t *t, int r, unsigned *want)
{
    int en = errno;
    int e = SSL_get_error(t->ssl, r);
    switch (e) {
    case SSL_ERROR_WANT_READ:
        if (want != NULL)
            *want = PX_TLS_WANT_READ;
        errno = EAGAIN;
        return -1;
    case SSL_ERROR_WANT_WRITE:
        if (want != NULL)
            *want = PX_TLS_WANT_WRITE;
        errno = EAGAIN;
        return -1;
    case SSL_ERROR_ZERO_RETURN:
        return 0;
    default:
        ERR_clear_error();
        t->failed = true;
        errno = en != 0 && en != EAGAIN ? en : EIO;
        return -1;
    }
}

ssize_t px_tls_read(px_tls_conn_t *t, void *buf, size_t n, unsigned *want)
{
    if (want != NULL)
        *want = 0;
    if (t == NULL) {
        errno = EINVAL;
        return -1;
    }
    if (n == 0)
        return 0;
    ERR_clear_error();
    errno = 0;
    int r = SSL_read(t->ssl, buf, n > INT_MAX ? INT_MAX : (int)n);
    if (r > 0)
        return r;
    return io_fail(t, r, want);
}

ssize_t px_tls_write(px_tls_conn_t *t, const void *buf, size_t n, unsigned *want)
{
    if (want != NULL)
        *want = 0;
    if (t == NULL) {
        errno = EINVAL;
        return -1;
    }
    if (n == 0)
        return 0;
    ERR_clear_error();
    errno = 0;
    int r = SSL_write(t->ssl, buf, n > INT_MAX ? INT_MAX : (int)n);
    if (r > 0)
        return r;
    ssize_t rc = io_fail(t, r, want);
    if (rc == 0) { /* the peer's close_notify: nothing more can be written */
        errno = EPIPE;
        rc = -1;
    }
    return rc;
}

/* Only the decrypted bytes of the current record count: bytes of a record
 * not yet complete would wake the caller for nothing (and again). */
bool px_tls_pending(const px_tls_conn_t *t)
{
    return t && t->ssl && SSL_pending(t->ssl) > 0;
}

void px_tls_shutdown(px_tls_conn_t *t)
{
    if (t == NULL || !t->done)
        return;
    ERR_clear_error();
    if (!(SSL_get_shutdown(t->ssl) & SSL_SENT_SHUTDOWN))
        SSL_shutdown(t->ssl); /* one try: a full socket buffer just drops it */
    ERR_clear_error();
}

const char *px_tls_alpn(const px_tls_conn_t *t)
{
    return t != NULL ? t->alpn : "";
}

const char *px_tls_sni(const px_tls_conn_t *t)
{
    return t != NULL && t->sni != NULL ? t->sni : "";
}

const char *px_tls_peer_uri(const px_tls_conn_t *t)
{
    return t != NULL && t->peer_uri != NULL ? t->peer_uri : "";
}

bool px_tls_resumed(const px_tls_conn_t *t)
{
    return t != NULL && t->done && SSL_session_reused(t->ssl) == 1;
}

/* ---- ClientHello peek ---- */

/* A bounds-checked reader over [p, p + n). */
typedef struct rd {
    const uint8_t *p;
    size_t n, off;
} rd_t;

static bool rd_u8(rd_t *r, size_t *v)
{
    if (r->n - r->off < 1)
        return false;
    *v = r->p[r->off++];
    return true;
}

static bool rd_u16(rd_t *r, size_t *v)
{
    if (r->n - r->off < 2)
        return false;
    *v = (size_t)r->p[r->off] << 8 | r->p[r->off + 1];
    r->off += 2;
    return true;
}

static bool rd_skip(rd_t *r, size_t len)
{
    if (r->n - r->off < len)
        return false;
    r->off += len;
    return true;
}

/* A sub-reader over the next len bytes (false when they are not all there). */
static bool rd_sub(rd_t *r, size_t len, rd_t *sub)
{
    if (r->n - r->off < len)
        return false;
    sub->p = r->p + r->off;
    sub->n = len;
    sub->off = 0;
    r->off += len;
    return true;
}

/* server_name: a list of (type, name); the first host_name is kept. */
static bool parse_sni(rd_t *ext, px_hello_t *out)
{
    size_t list;
    rd_t l;
    if (!rd_u16(ext, &list) || list != ext->n - ext->off || list == 0 || !rd_sub(ext, list, &l))
        return false;
    while (l.off < l.n) {
        size_t type, len;
        if (!rd_u8(&l, &type) || !rd_u16(&l, &len) || l.n - l.off < len)
            return false;
        const uint8_t *name = l.p + l.off;
        l.off += len;
        if (type != 0 || out->sni[0] != 0)
            continue;
        if (len == 0 || len >= sizeof out->sni || memchr(name, 0, len) != NULL)
            return false;
        memcpy(out->sni, name, len);
        out->sni[len] = 0;
    }
    return true;
}

/* application_layer_protocol_negotiation: a list of 1-byte-length names. */
static bool parse_alpn(rd_t *ext, px_hello_t *out)
{
    size_t list;
    rd_t l;
    if (!rd_u16(ext, &list) || list != ext->n - ext->off || list < 2 || !rd_sub(ext, list, &l))
        return false;
    while (l.off < l.n) {
        size_t len;
        if (!rd_u8(&l, &len) || len == 0 || l.n - l.off < len)
            return false;
        const uint8_t *name = l.p + l.off;
        l.off += len;
        if (out->nalpn >= PX_TLS_MAX_ALPN || len >= sizeof out->alpn[0] ||
            memchr(name, 0, len) != NULL)
            continue; /* dropped: too many, too long for the caller, or not text */
        memcpy(out->alpn[out->nalpn], name, len);
        out->alpn[out->nalpn][len] = 0;
        out->nalpn++;
    }
    return true;
}

/* The ClientHello body. complete: the whole message is in b; otherwise b
 * holds its first bytes only, and running out of them ends the walk with
 * what was seen. Returns false when the bytes are malformed. */
static bool parse_client_hello(rd_t *b, bool complete, px_hello_t *out)
{
    size_t len;
    /* legacy_version, random */
    if (!rd_skip(b, 2 + 32))
        return !complete;
    if (!rd_u8(b, &len))
        return !complete;
    if (len > 32)
        return false;
    if (!rd_skip(b, len))
        return !complete;
    if (!rd_u16(b, &len))
        return !complete;
    if (len < 2 || len % 2 != 0)
        return false;
    if (!rd_skip(b, len))
        return !complete;
    if (!rd_u8(b, &len))
        return !complete;
    if (len < 1)
        return false;
    if (!rd_skip(b, len))
        return !complete;
    if (b->off == b->n)
        return true; /* no extensions (or, when truncated, none seen) */
    size_t total;
    if (!rd_u16(b, &total))
        return !complete;
    if (complete && total != b->n - b->off)
        return false;
    bool seen_sni = false, seen_alpn = false;
    while (b->off < b->n) {
        size_t type, elen;
        rd_t ext;
        if (!rd_u16(b, &type) || !rd_u16(b, &elen))
            return !complete;
        if (!rd_sub(b, elen, &ext))
            return !complete; /* truncated inside this extension: not used */
        if (type == 0) {
            if (seen_sni)
                return false;
            seen_sni = true;
            if (!parse_sni(&ext, out))
                return false;
        } else if (type == 16) {
            if (seen_alpn)
                return false;
            seen_alpn = true;
            if (!parse_alpn(&ext, out))
                return false;
        }
    }
    return true;
}

px_hello_result_t px_tls_parse_hello(const uint8_t *p, size_t n, px_hello_t *out)
{
    memset(out, 0, sizeof *out);
    /* record header: handshake(22), version 3.x, length */
    if (n >= 1 && p[0] != 22)
        return PX_HELLO_NOT_TLS;
    if (n >= 2 && p[1] != 3)
        return PX_HELLO_NOT_TLS;
    if (n >= 3 && p[2] > 4)
        return PX_HELLO_NOT_TLS;
    if (n >= 6 && p[5] != 1) /* handshake type client_hello */
        return PX_HELLO_NOT_TLS;
    if (n < 5)
        return PX_HELLO_MORE;
    size_t reclen = (size_t)p[3] << 8 | p[4];
    if (reclen < 4 || reclen > 16384)
        return PX_HELLO_NOT_TLS;
    if (n < 5 + reclen)
        return PX_HELLO_MORE;
    const uint8_t *h = p + 5;
    size_t hlen = (size_t)h[1] << 16 | (size_t)h[2] << 8 | h[3];
    /* ClientHello's minimum: version, random, session id, one suite, one method */
    if (hlen < 2 + 32 + 1 + 4 + 2)
        return PX_HELLO_NOT_TLS;
    bool complete = hlen <= reclen - 4;
    if (complete && hlen != reclen - 4)
        return PX_HELLO_NOT_TLS; /* a second handshake message after the hello */
    rd_t b = {h + 4, complete ? hlen : reclen - 4, 0};
    if (!parse_client_hello(&b, complete, out)) {
        memset(out, 0, sizeof *out);
        return PX_HELLO_NOT_TLS;
    }
    return PX_HELLO_TLS;
}

/* ---- SPIFFE ---- */

const char *px_spiffe_principal(const char *uri)
{
    static const char scheme[] = "spiffe://";
    if (uri == NULL || strncmp(uri, scheme, sizeof scheme - 1) != 0)
        return "";
    const char *rest = uri + sizeof scheme - 1;
    /* a trust domain, then a path */
    const char *slash = strchr(rest, '/');
    if (slash == NULL || slash == rest || slash[1] == 0)
        return "";
    return rest;
}
