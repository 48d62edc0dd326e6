/*
 * ca_test: helpers for the CA tests (header-only, included by the CA test files):
 * temporary files, hand-made CSRs (any key, any SAN, CA:TRUE), hand-made
 * CA certificates (expired, without keyCertSign), and the real openssl
 * binary to verify issued chains.
 */
#ifndef MESH_TEST_CA_TEST_H
#define MESH_TEST_CA_TEST_H

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "../testutil.h"

#define CT_PKI "istio/security/pkg/pki/testdata/"

static inline char *ct_tmpdir(void)
{
    char *d = strdup("/tmp/meshd-ca-test-XXXXXX");
    assert_non_null(mkdtemp(d));
    return d;
}

static inline void ct_rmrf(const char *dir)
{
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

static inline void ct_write(const char *path, const char *text, mode_t mode)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    chmod(path, mode);
}

static inline char *ct_read(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    char *buf = calloc(1, 1 << 20);
    size_t n = fread(buf, 1, (1 << 20) - 1, f);
    buf[n] = 0;
    fclose(f);
    return buf;
}

/* A file of the shared PKI test data, read whole. */
static inline char *ct_pki(const char *name)
{
    char rel[256];
    snprintf(rel, sizeof rel, CT_PKI "%s", name);
    char *s = ct_read(tu_shared(rel));
    if (!s)
        fail_msg("cannot read %s", tu_shared(rel));
    return s;
}

/* "rsa:2048", "rsa:1024", "ec:P-256", "ec:P-384", "ec:P-521", "ed25519" */
static inline EVP_PKEY *ct_key(const char *spec)
{
    EVP_PKEY *k = NULL;
    if (!strncmp(spec, "rsa:", 4)) {
        EVP_PKEY_CTX *c = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL);
        EVP_PKEY_keygen_init(c);
        EVP_PKEY_CTX_set_rsa_keygen_bits(c, atoi(spec + 4));
        EVP_PKEY_keygen(c, &k);
        EVP_PKEY_CTX_free(c);
    } else if (!strncmp(spec, "ec:", 3)) {
        k = EVP_EC_gen(spec + 3);
    } else if (!strcmp(spec, "ed25519")) {
        k = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    }
    assert_non_null(k);
    return k;
}

static inline char *ct_pem_key(EVP_PKEY *k)
{
    BIO *b = BIO_new(BIO_s_mem());
    PEM_write_bio_PrivateKey(b, k, NULL, NULL, 0, NULL, NULL);
    BUF_MEM *m;
    BIO_get_mem_ptr(b, &m);
    char *s = strndup(m->data, m->length);
    BIO_free(b);
    return s;
}

static inline char *ct_pem_x509(X509 *x)
{
    BIO *b = BIO_new(BIO_s_mem());
    PEM_write_bio_X509(b, x);
    BUF_MEM *m;
    BIO_get_mem_ptr(b, &m);
    char *s = strndup(m->data, m->length);
    BIO_free(b);
    return s;
}

/*
 * A CSR with the key of `keyspec`, the SANs in `sans` (a comma-separated
 * OpenSSL list such as "URI:spiffe://...,DNS:x"; NULL: no SAN extension),
 * and basicConstraints CA:TRUE when ca is set. The private key PEM goes to
 * *key_pem when not NULL. tamper flips a bit of the signature.
 */
static inline char *ct_csr_ex(const char *keyspec, const char *sans, bool ca, bool tamper, char **key_pem)
{
    EVP_PKEY *k = ct_key(keyspec);
    X509_REQ *r = X509_REQ_new();
    X509_REQ_set_version(r, 0);
    X509_NAME_add_entry_by_txt(X509_REQ_get_subject_name(r), "O", MBSTRING_ASC, (const unsigned char *)"test", -1,
                               -1, 0);
    X509_REQ_set_pubkey(r, k);
    STACK_OF(X509_EXTENSION) *exts = sk_X509_EXTENSION_new_null();
    X509V3_CTX v3;
    X509V3_set_ctx(&v3, NULL, NULL, r, NULL, 0);
    if (sans) {
        X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, &v3, NID_subject_alt_name, sans);
        assert_non_null(e);
        sk_X509_EXTENSION_push(exts, e);
    }
    if (ca) {
        X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, &v3, NID_basic_constraints, "critical,CA:TRUE");
        sk_X509_EXTENSION_push(exts, e);
    }
    if (sk_X509_EXTENSION_num(exts))
        X509_REQ_add_extensions(r, exts);
    sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
    const EVP_MD *md = EVP_PKEY_get_base_id(k) == EVP_PKEY_ED25519 ? NULL : EVP_sha256();
    assert_true(X509_REQ_sign(r, k, md) > 0);
    if (tamper) {
        unsigned char *der = NULL;
        int len = i2d_X509_REQ(r, &der);
        der[len - 5] ^= 0x01; /* inside the signature value */
        const unsigned char *p = der;
        X509_REQ *r2 = d2i_X509_REQ(NULL, &p, len);
        assert_non_null(r2);
        X509_REQ_free(r);
        r = r2;
        OPENSSL_free(der);
    }
    BIO *b = BIO_new(BIO_s_mem());
    PEM_write_bio_X509_REQ(b, r);
    BUF_MEM *m;
    BIO_get_mem_ptr(b, &m);
    char *s = strndup(m->data, m->length);
    BIO_free(b);
    if (key_pem)
        *key_pem = ct_pem_key(k);
    X509_REQ_free(r);
    EVP_PKEY_free(k);
    return s;
}

static inline char *ct_csr(const char *keyspec, const char *sans)
{
    return ct_csr_ex(keyspec, sans, false, false, NULL);
}

/* A self-signed CA: validity [now+from_s, now+to_s], extensions as given. */
static inline void ct_make_ca(const char *keyspec, long from_s, long to_s, const char *bc, const char *ku,
                              char **cert_pem, char **key_pem)
{
    EVP_PKEY *k = ct_key(keyspec);
    X509 *x = X509_new();
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 7);
    X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC, (const unsigned char *)"Test CA", -1, -1,
                               0);
    X509_set_issuer_name(x, X509_get_subject_name(x));
    X509_gmtime_adj(X509_getm_notBefore(x), from_s);
    X509_gmtime_adj(X509_getm_notAfter(x), to_s);
    X509_set_pubkey(x, k);
    X509V3_CTX v3;
    X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
    if (bc) {
        X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, &v3, NID_basic_constraints, bc);
        X509_add_ext(x, e, -1);
        X509_EXTENSION_free(e);
    }
    if (ku) {
        X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, &v3, NID_key_usage, ku);
        X509_add_ext(x, e, -1);
        X509_EXTENSION_free(e);
    }
    X509_sign(x, k, EVP_sha256());
    *cert_pem = ct_pem_x509(x);
    *key_pem = ct_pem_key(k);
    X509_free(x);
    EVP_PKEY_free(k);
}

static inline X509 *ct_x509(const char *pem)
{
    BIO *b = BIO_new_mem_buf(pem, -1);
    X509 *x = PEM_read_bio_X509(b, NULL, NULL, NULL);
    BIO_free(b);
    assert_non_null(x);
    return x;
}

/* Runs `openssl verify -CAfile root -untrusted <chain[1..n-2]> chain[0]`
 * with the real binary; returns its exit status, output in out. */
static inline int ct_openssl_verify(const char *root_pem, char *const *chain, size_t n, char *out, size_t outlen)
{
    char *dir = ct_tmpdir();
    char root[512], leaf[512], inter[512], cmd[2048];
    snprintf(root, sizeof root, "%s/root.pem", dir);
    snprintf(leaf, sizeof leaf, "%s/leaf.pem", dir);
    snprintf(inter, sizeof inter, "%s/inter.pem", dir);
    ct_write(root, root_pem, 0600);
    ct_write(leaf, chain[0], 0600);
    FILE *f = fopen(inter, "w");
    for (size_t i = 1; i + 1 < n; i++)
        fputs(chain[i], f);
    fclose(f);
    snprintf(cmd, sizeof cmd, "openssl verify -purpose sslclient -CAfile %s %s%s %s 2>&1", root,
             n > 2 ? "-untrusted " : "", n > 2 ? inter : "", leaf);
    FILE *p = popen(cmd, "r");
    size_t got = fread(out, 1, outlen - 1, p);
    out[got] = 0;
    int st = pclose(p);
    ct_rmrf(dir);
    free(dir);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* Asserts that s contains sub, printing both otherwise. */
#define ct_assert_has(s, sub)                                                                      \
    do {                                                                                           \
        const char *s_ = (s), *sub_ = (sub);                                                       \
        if (!s_ || !strstr(s_, sub_))                                                              \
            fail_msg("expected \"%s\" in: %s", sub_, s_ ? s_ : "(null)");                          \
    } while (0)

#endif
