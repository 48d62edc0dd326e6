/* pemutil: see pemutil.h. */
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "pemutil.h"
#include "testutil.h"

static char *bio_text(BIO *b)
{
    char *d;
    long len = BIO_get_mem_data(b, &d);
    char *s = strndup(d, (size_t)len);
    assert_non_null(s);
    BIO_free(b);
    return s;
}

tu_pem_t tu_self_signed(const char *cn)
{
    static long serial = 1;
    EVP_PKEY *k = EVP_EC_gen("P-256");
    assert_non_null(k);
    X509 *x = X509_new();
    assert_non_null(x);
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), serial++);
    X509_gmtime_adj(X509_getm_notBefore(x), -60);
    X509_gmtime_adj(X509_getm_notAfter(x), 3600);
    X509_set_pubkey(x, k);
    X509_NAME *n = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
    X509_set_issuer_name(x, n);
    assert_true(X509_sign(x, k, EVP_sha256()) > 0);
    BIO *b = BIO_new(BIO_s_mem());
    PEM_write_bio_X509(b, x);
    tu_pem_t p = {.cert = bio_text(b)};
    b = BIO_new(BIO_s_mem());
    PEM_write_bio_PrivateKey(b, k, NULL, NULL, 0, NULL, NULL);
    p.key = bio_text(b);
    X509_free(x);
    EVP_PKEY_free(k);
    return p;
}

void tu_pem_free(tu_pem_t *p)
{
    free(p->cert);
    free(p->key);
    p->cert = p->key = NULL;
}
