/*
 * bundle: the CA's signing material as an immutable, reference-counted
 * object; loading and checking plug-in material; generating a self-signed
 * root; the OpenSSL helpers the rest of ca/ uses.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include "../common/arena.h"
#include "../common/log.h"
#include "ca_internal.h"

/* ---- helpers ---- */

int ca_err(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    mesh_verrf(err, errlen, fmt, ap);
    va_end(ap);
    return -1;
}

int ca_errc(int code, char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    mesh_verrf(err, errlen, fmt, ap);
    va_end(ap);
    return code;
}

const char *ca_ossl_reason(char *buf, size_t len)
{
    unsigned long e = ERR_peek_last_error();
    if (!e) {
        snprintf(buf, len, "unknown error");
    } else {
        const char *r = ERR_reason_error_string(e);
        if (r)
            snprintf(buf, len, "%s", r);
        else
            ERR_error_string_n(e, buf, len);
    }
    ERR_clear_error();
    return buf;
}

static char *bio_take(BIO *b)
{
    BUF_MEM *m = NULL;
    BIO_get_mem_ptr(b, &m);
    if (!m)
        return NULL;
    char *s = mesh_xmalloc(m->length + 1);
    memcpy(s, m->data, m->length);
    s[m->length] = 0;
    return s;
}

char *ca_x509_pem(X509 *x)
{
    BIO *b = BIO_new(BIO_s_mem());
    char *s = NULL;
    if (b && PEM_write_bio_X509(b, x))
        s = bio_take(b);
    BIO_free(b);
    return s;
}

char *ca_key_pem(EVP_PKEY *k)
{
    /* secure memory BIO: its buffer is cleansed when freed */
    BIO *b = BIO_new(BIO_s_secmem());
    char *s = NULL;
    if (b && PEM_write_bio_PrivateKey(b, k, NULL, NULL, 0, NULL, NULL))
        s = bio_take(b);
    BIO_free(b);
    return s;
}

void ca_free_secret(char *s)
{
    if (!s)
        return;
    OPENSSL_cleanse(s, strlen(s));
    free(s);
}

const char *ca_x509_name(X509 *x, char *buf, size_t len)
{
    buf[0] = 0;
    BIO *b = BIO_new(BIO_s_mem());
    if (!b)
        return buf;
    X509_NAME_print_ex(b, X509_get_subject_name(x), 0, XN_FLAG_ONELINE & ~XN_FLAG_SPC_EQ & ~ASN1_STRFLGS_ESC_MSB);
    int n = BIO_read(b, buf, (int)len - 1);
    buf[n > 0 ? n : 0] = 0;
    BIO_free(b);
    if (!buf[0])
        snprintf(buf, len, "(empty subject)");
    return buf;
}

const char *ca_key_desc(EVP_PKEY *k, char *buf, size_t len)
{
    int id = EVP_PKEY_get_base_id(k);
    if (id == EVP_PKEY_RSA) {
        snprintf(buf, len, "RSA %d", EVP_PKEY_get_bits(k));
    } else if (id == EVP_PKEY_EC) {
        char g[64] = "";
        size_t gl = 0;
        EVP_PKEY_get_group_name(k, g, sizeof g, &gl);
        const char *nice = g;
        if (!strcmp(g, "prime256v1") || !strcmp(g, "P-256"))
            nice = "P-256";
        else if (!strcmp(g, "secp384r1") || !strcmp(g, "P-384"))
            nice = "P-384";
        else if (!strcmp(g, "secp521r1") || !strcmp(g, "P-521"))
            nice = "P-521";
        snprintf(buf, len, "ECDSA %s", nice[0] ? nice : "(unknown curve)");
    } else {
        const char *n = OBJ_nid2sn(id);
        snprintf(buf, len, "%s", n ? n : "unknown key type");
    }
    return buf;
}

EVP_PKEY *ca_keygen(ca_key_type_t kt)
{
    if (kt == CA_KEY_ECDSA)
        return EVP_EC_gen("P-256");
    return EVP_RSA_gen(2048);
}

int ca_set_serial(X509 *x)
{
    unsigned char r[16];
    if (RAND_bytes(r, sizeof r) != 1)
        return -1;
    r[0] &= 0x7f; /* positive */
    r[0] |= 0x40; /* and a full 127-bit magnitude, never zero */
    BIGNUM *bn = BN_bin2bn(r, sizeof r, NULL);
    int rc = -1;
    if (bn) {
        ASN1_INTEGER *ai = BN_to_ASN1_INTEGER(bn, NULL);
        if (ai && X509_set_serialNumber(x, ai))
            rc = 0;
        ASN1_INTEGER_free(ai);
        BN_free(bn);
    }
    return rc;
}

int64_t ca_asn1_time(const ASN1_TIME *t)
{
    struct tm tm;
    if (!t || !ASN1_TIME_to_tm(t, &tm))
        return 0;
    return (int64_t)timegm(&tm);
}

void ca_digest(unsigned char out[32], const char *a, const char *b, const char *c, const char *d)
{
    EVP_MD_CTX *m = EVP_MD_CTX_new();
    const char *v[4] = {a, b, c, d};
    unsigned int n = 32;
    memset(out, 0, 32);
    if (!m)
        return;
    EVP_DigestInit_ex(m, EVP_sha256(), NULL);
    for (int i = 0; i < 4; i++) {
        unsigned char sep = (unsigned char)i;
        if (v[i])
            EVP_DigestUpdate(m, v[i], strlen(v[i]));
        EVP_DigestUpdate(m, &sep, 1);
    }
    EVP_DigestFinal_ex(m, out, &n);
    EVP_MD_CTX_free(m);
}

char *ca_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 4096, n = 0;
    char *buf = mesh_xmalloc(cap);
    for (;;) {
        if (n + 1 >= cap) {
            if (cap > (64u << 20)) {
                fclose(f);
                OPENSSL_cleanse(buf, n);
                free(buf);
                errno = EFBIG;
                return NULL;
            }
            char *nb = mesh_xmalloc(cap * 2);
            memcpy(nb, buf, n);
            OPENSSL_cleanse(buf, n); /* the file may be a key */
            free(buf);
            buf = nb;
            cap *= 2;
        }
        size_t r = fread(buf + n, 1, cap - n - 1, f);
        if (r == 0)
            break;
        n += r;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        OPENSSL_cleanse(buf, n);
        free(buf);
        errno = EIO;
        return NULL;
    }
    buf[n] = 0;
    if (len)
        *len = n;
    return buf;
}

STACK_OF(X509) *ca_parse_certs(const char *pem, size_t len, const char *name, char *err, size_t errlen)
{
    char why[256];
    STACK_OF(X509) *sk = sk_X509_new_null();
    BIO *b = BIO_new_mem_buf(pem, (int)len);
    if (!sk || !b)
        goto fail_oom;
    for (;;) {
        ERR_clear_error();
        X509 *x = PEM_read_bio_X509(b, NULL, NULL, NULL);
        if (!x) {
            unsigned long e = ERR_peek_last_error();
            if (ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE) {
                ERR_clear_error();
                break;
            }
            ca_err(err, errlen, "%s: certificate %d: cannot parse: %s", name, sk_X509_num(sk) + 1,
                   ca_ossl_reason(why, sizeof why));
            goto fail;
        }
        sk_X509_push(sk, x);
    }
    if (sk_X509_num(sk) == 0) {
        ca_err(err, errlen, "%s: no PEM certificate found", name);
        goto fail;
    }
    BIO_free(b);
    return sk;
fail_oom:
    ca_err(err, errlen, "%s: out of memory", name);
fail:
    BIO_free(b);
    sk_X509_pop_free(sk, X509_free);
    return NULL;
}

static int no_password(char *buf, int size, int rwflag, void *u)
{
    (void)buf, (void)size, (void)rwflag, (void)u;
    return -1;
}

static EVP_PKEY *parse_key(const char *pem, size_t len, const char *name, char *err, size_t errlen)
{
    char why[256];
    if (!memmem(pem, len, "PRIVATE KEY-----", 16)) {
        ca_err(err, errlen, "%s: no PEM private key found", name);
        return NULL;
    }
    BIO *b = BIO_new_mem_buf(pem, (int)len);
    if (!b) {
        ca_err(err, errlen, "%s: out of memory", name);
        return NULL;
    }
    ERR_clear_error();
    EVP_PKEY *k = PEM_read_bio_PrivateKey(b, NULL, no_password, NULL);
    BIO_free(b);
    if (!k) {
        unsigned long e = ERR_peek_last_error();
        if (ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE) {
            ERR_clear_error();
            ca_err(err, errlen, "%s: no PEM private key found", name);
        } else if (ERR_GET_REASON(e) == PEM_R_BAD_PASSWORD_READ || ERR_GET_REASON(e) == PEM_R_PROBLEMS_GETTING_PASSWORD) {
            ERR_clear_error();
            ca_err(err, errlen, "%s: the private key is encrypted; an unencrypted key is required", name);
        } else {
            ca_err(err, errlen, "%s: cannot parse private key: %s", name, ca_ossl_reason(why, sizeof why));
        }
    }
    return k;
}

static void print_time(const ASN1_TIME *t, char *buf, size_t len)
{
    struct tm tm;
    if (t && ASN1_TIME_to_tm(t, &tm))
        strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
    else
        snprintf(buf, len, "(unknown time)");
}

/* ---- bundles ---- */

ca_bundle_t *ca_bundle_new_from(EVP_PKEY *key, X509 *cert, STACK_OF(X509) *roots, STACK_OF(X509) *served,
                                bool plugged, const char *source)
{
    ca_bundle_t *b = mesh_xcalloc(1, sizeof *b);
    atomic_init(&b->_refs, 1);
    b->key = key;
    b->cert = cert;
    b->roots = roots;
    b->plugged = plugged;
    b->not_after = ca_asn1_time(X509_get0_notAfter(cert));
    ca_key_desc(key, b->key_desc, sizeof b->key_desc);
    ca_set_source(b, source);
    b->cert_pem = ca_x509_pem(cert);
    size_t rl = 0;
    char **rp = mesh_xcalloc((size_t)sk_X509_num(roots) + 1, sizeof *rp);
    for (int i = 0; i < sk_X509_num(roots); i++) {
        rp[i] = ca_x509_pem(sk_X509_value(roots, i));
        rl += rp[i] ? strlen(rp[i]) : 0;
    }
    b->root_pem = mesh_xmalloc(rl + 1);
    b->root_pem[0] = 0;
    for (int i = 0; i < sk_X509_num(roots); i++) {
        if (rp[i])
            strcat(b->root_pem, rp[i]);
        free(rp[i]);
    }
    free(rp);
    b->nchain = (size_t)sk_X509_num(served);
    b->chain_pem = mesh_xcalloc(b->nchain + 1, sizeof *b->chain_pem);
    for (size_t i = 0; i < b->nchain; i++)
        b->chain_pem[i] = ca_x509_pem(sk_X509_value(served, (int)i));
    return b;
}

void ca_set_source(ca_bundle_t *b, const char *source)
{
    size_t n = source ? strlen(source) : 0;
    if (n >= sizeof b->source)
        n = sizeof b->source - 1;
    if (n)
        memcpy(b->source, source, n);
    b->source[n] = 0;
}

ca_bundle_t *ca_bundle_ref(ca_bundle_t *b)
{
    if (b)
        atomic_fetch_add(&b->_refs, 1);
    return b;
}

void ca_bundle_release(ca_bundle_t *b)
{
    if (!b || atomic_fetch_sub(&b->_refs, 1) != 1)
        return;
    EVP_PKEY_free(b->key); /* frees (and clears) the key material */
    X509_free(b->cert);
    sk_X509_pop_free(b->roots, X509_free);
    free(b->cert_pem);
    free(b->root_pem);
    for (size_t i = 0; i < b->nchain; i++)
        free(b->chain_pem[i]);
    free(b->chain_pem);
    free(b);
}

const char *ca_bundle_root_pem(const ca_bundle_t *b) { return b->root_pem; }
const char *ca_bundle_cert_pem(const ca_bundle_t *b) { return b->cert_pem; }
char *ca_bundle_key_pem(const ca_bundle_t *b) { return ca_key_pem(b->key); }
size_t ca_bundle_chain_len(const ca_bundle_t *b) { return b->nchain; }
const char *ca_bundle_chain_pem(const ca_bundle_t *b, size_t i) { return i < b->nchain ? b->chain_pem[i] : NULL; }
bool ca_bundle_plugged(const ca_bundle_t *b) { return b->plugged; }
int64_t ca_bundle_not_after(const ca_bundle_t *b) { return b->not_after; }
const char *ca_bundle_key_desc(const ca_bundle_t *b) { return b->key_desc; }
const char *ca_bundle_source(const ca_bundle_t *b) { return b->source; }

/* The signing certificate must be a CA allowed to sign certificates, within
 * its validity. */
static int check_signer(X509 *cert, const char *name, char *err, size_t errlen)
{
    char subj[256], t[64];
    ca_x509_name(cert, subj, sizeof subj);
    uint32_t flags = X509_get_extension_flags(cert);
    if ((flags & EXFLAG_KUSAGE) && !(X509_get_key_usage(cert) & KU_KEY_CERT_SIGN))
        return ca_err(err, errlen, "%s: certificate \"%s\" may not sign certificates (keyUsage lacks keyCertSign)",
                      name, subj);
    int ca = X509_check_ca(cert);
    if (ca != 1 && ca != 3) /* CA:TRUE, or a self-signed version 1 root */
        return ca_err(err, errlen, "%s: certificate \"%s\" is not a CA (basicConstraints CA:TRUE is missing)", name,
                      subj);
    if (X509_cmp_time(X509_get0_notAfter(cert), NULL) < 0) {
        print_time(X509_get0_notAfter(cert), t, sizeof t);
        return ca_err(err, errlen, "%s: certificate \"%s\" expired at %s", name, subj, t);
    }
    if (X509_cmp_time(X509_get0_notBefore(cert), NULL) > 0) {
        print_time(X509_get0_notBefore(cert), t, sizeof t);
        return ca_err(err, errlen, "%s: certificate \"%s\" is not valid before %s", name, subj, t);
    }
    int id = EVP_PKEY_get_base_id(X509_get0_pubkey(cert));
    if (id != EVP_PKEY_RSA && id != EVP_PKEY_EC) {
        char kd[32];
        return ca_err(err, errlen, "%s: %s keys cannot sign (RSA or ECDSA required)", name,
                      ca_key_desc(X509_get0_pubkey(cert), kd, sizeof kd));
    }
    return 0;
}

ca_bundle_t *ca_bundle_from_pem(const char *cert_pem, const char *cert_name, const char *key_pem,
                                const char *key_name, const char *chain_pem, const char *chain_name,
                                const char *root_pem, const char *root_name, char *err, size_t errlen)
{
    char why[256], subj[256], source[256];
    STACK_OF(X509) *certs = NULL, *chain = NULL, *roots = NULL, *served = NULL;
    EVP_PKEY *key = NULL;
    X509_STORE *store = NULL;
    X509_STORE_CTX *ctx = NULL;
    ca_bundle_t *b = NULL;

    if (!cert_pem || !*cert_pem) {
        ca_err(err, errlen, "%s: empty", cert_name);
        goto out;
    }
    if (!key_pem || !*key_pem) {
        ca_err(err, errlen, "%s: empty", key_name);
        goto out;
    }
    if (!root_pem || !*root_pem) {
        ca_err(err, errlen, "%s: empty", root_name);
        goto out;
    }
    if (!(certs = ca_parse_certs(cert_pem, strlen(cert_pem), cert_name, err, errlen)))
        goto out;
    X509 *cert = sk_X509_value(certs, 0);
    if (!(key = parse_key(key_pem, strlen(key_pem), key_name, err, errlen)))
        goto out;
    if (EVP_PKEY_eq(X509_get0_pubkey(cert), key) != 1) {
        ERR_clear_error();
        ca_err(err, errlen, "%s does not match the certificate in %s (\"%s\")", key_name, cert_name,
               ca_x509_name(cert, subj, sizeof subj));
        goto out;
    }
    if (check_signer(cert, cert_name, err, errlen) < 0)
        goto out;
    if (!(roots = ca_parse_certs(root_pem, strlen(root_pem), root_name, err, errlen)))
        goto out;
    if (chain_pem && *chain_pem && !(chain = ca_parse_certs(chain_pem, strlen(chain_pem), chain_name, err, errlen)))
        goto out;
    /* the rest of cert_pem (if any) is treated as intermediates too */
    if (!chain)
        chain = sk_X509_new_null();
    for (int i = 1; i < sk_X509_num(certs); i++) {
        X509_up_ref(sk_X509_value(certs, i));
        sk_X509_push(chain, sk_X509_value(certs, i));
    }

    store = X509_STORE_new();
    ctx = X509_STORE_CTX_new();
    if (!store || !ctx) {
        ca_err(err, errlen, "out of memory");
        goto out;
    }
    for (int i = 0; i < sk_X509_num(roots); i++)
        X509_STORE_add_cert(store, sk_X509_value(roots, i));
    ERR_clear_error();
    if (!X509_STORE_CTX_init(ctx, store, cert, chain)) {
        ca_err(err, errlen, "cannot verify %s: %s", cert_name, ca_ossl_reason(why, sizeof why));
        goto out;
    }
    if (X509_verify_cert(ctx) != 1) {
        int e = X509_STORE_CTX_get_error(ctx);
        int depth = X509_STORE_CTX_get_error_depth(ctx);
        X509 *at = X509_STORE_CTX_get_current_cert(ctx);
        char where[300] = "";
        if (at && depth > 0)
            snprintf(where, sizeof where, " (at \"%s\", depth %d)", ca_x509_name(at, why, sizeof why), depth);
        ca_err(err, errlen, "%s (\"%s\") does not verify against %s%s%s: %s%s", cert_name,
               ca_x509_name(cert, subj, sizeof subj), root_name, chain && sk_X509_num(chain) ? " with " : "",
               chain && sk_X509_num(chain) ? (chain_name ? chain_name : "the chain") : "",
               X509_verify_cert_error_string(e), where);
        ERR_clear_error();
        goto out;
    }
    served = X509_STORE_CTX_get1_chain(ctx);
    /* a chain certificate that is not on the verified path is not served */
    for (int i = 0; chain && i < sk_X509_num(chain); i++) {
        X509 *c = sk_X509_value(chain, i);
        bool on_path = false;
        for (int j = 0; j < sk_X509_num(served) && !on_path; j++)
            on_path = X509_cmp(c, sk_X509_value(served, j)) == 0;
        for (int j = 0; j < sk_X509_num(roots) && !on_path; j++)
            on_path = X509_cmp(c, sk_X509_value(roots, j)) == 0;
        if (!on_path)
            log_warn("%s: certificate \"%s\" is not on the path from %s to the root; it is not served",
                     chain_name ? chain_name : cert_name, ca_x509_name(c, subj, sizeof subj), cert_name);
    }
    X509_up_ref(cert);
    snprintf(source, sizeof source, "%s", cert_name);
    b = ca_bundle_new_from(key, cert, roots, served, true, source);
    key = NULL;
    roots = NULL;
    ca_digest(b->digest, cert_pem, key_pem, chain_pem, root_pem);
out:
    X509_STORE_CTX_free(ctx);
    X509_STORE_free(store);
    sk_X509_pop_free(served, X509_free);
    sk_X509_pop_free(certs, X509_free);
    sk_X509_pop_free(chain, X509_free);
    sk_X509_pop_free(roots, X509_free);
    EVP_PKEY_free(key);
    return b;
}

ca_bundle_t *ca_bundle_load_dir(const char *dir, char *err, size_t errlen)
{
    static const char *const files[4] = {"ca-cert.pem", "ca-key.pem", "cert-chain.pem", "root-cert.pem"};
    char *text[4] = {0};
    char path[4][4096];
    size_t lens[4] = {0};
    ca_bundle_t *b = NULL;
    for (int i = 0; i < 4; i++) {
        snprintf(path[i], sizeof path[i], "%s/%s", dir, files[i]);
        text[i] = ca_read_file(path[i], &lens[i]);
        if (!text[i] && !(i == 2 && errno == ENOENT)) {
            ca_err(err, errlen, "%s: cannot read: %s", path[i], strerror(errno));
            goto out;
        }
    }
    b = ca_bundle_from_pem(text[0], path[0], text[1], path[1], text[2], path[2], text[3], path[3], err, errlen);
    if (b) {
        char src[4200];
        snprintf(src, sizeof src, "cacerts directory %s", dir);
        ca_set_source(b, src);
    }
out:
    for (int i = 0; i < 4; i++) {
        if (text[i]) {
            OPENSSL_cleanse(text[i], lens[i]);
            free(text[i]);
        }
    }
    return b;
}

static int add_ext(X509 *x, X509 *issuer, int nid, const char *value)
{
    X509V3_CTX v3;
    X509V3_set_ctx(&v3, issuer, x, NULL, NULL, 0);
    X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, &v3, nid, value);
    if (!e)
        return -1;
    int ok = X509_add_ext(x, e, -1);
    X509_EXTENSION_free(e);
    return ok ? 0 : -1;
}

ca_bundle_t *ca_bundle_self_signed(const char *org, ca_key_type_t kt, int64_t ttl_s, char *err, size_t errlen)
{
    char why[256];
    EVP_PKEY *key = ca_keygen(kt);
    X509 *x = X509_new();
    STACK_OF(X509) *roots = NULL, *served = NULL;
    ca_bundle_t *b = NULL;
    if (!key || !x) {
        ca_err(err, errlen, "self-signed root: cannot generate a key: %s", ca_ossl_reason(why, sizeof why));
        goto out;
    }
    if (ttl_s <= 0)
        ttl_s = CA_ROOT_TTL_S;
    X509_NAME *name = X509_get_subject_name(x);
    if (!X509_set_version(x, 2) || ca_set_serial(x) < 0 ||
        !X509_NAME_add_entry_by_txt(name, "O", MBSTRING_UTF8, (const unsigned char *)org, -1, -1, 0) ||
        !X509_set_issuer_name(x, name) || !X509_gmtime_adj(X509_getm_notBefore(x), -CA_CLOCK_SKEW_S) ||
        !X509_gmtime_adj(X509_getm_notAfter(x), (long)ttl_s) || !X509_set_pubkey(x, key) ||
        add_ext(x, x, NID_basic_constraints, "critical,CA:TRUE") < 0 ||
        add_ext(x, x, NID_key_usage, "critical,keyCertSign,cRLSign") < 0 ||
        add_ext(x, x, NID_subject_key_identifier, "hash") < 0 || !X509_sign(x, key, EVP_sha256())) {
        ca_err(err, errlen, "self-signed root: cannot build the certificate: %s", ca_ossl_reason(why, sizeof why));
        goto out;
    }
    roots = sk_X509_new_null();
    served = sk_X509_new_null();
    X509_up_ref(x);
    sk_X509_push(roots, x);
    sk_X509_push(served, x); /* the served chain is the root alone */
    b = ca_bundle_new_from(key, x, roots, served, false, "self-signed root");
    key = NULL;
    x = NULL;
    roots = NULL;
out:
    sk_X509_free(served);
    sk_X509_pop_free(roots, X509_free);
    X509_free(x);
    EVP_PKEY_free(key);
    return b;
}
