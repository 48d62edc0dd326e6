/*
 * sign: checking certificate signing requests against the caller's identity
 * and issuing workload and serving certificates from a bundle.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "../common/arena.h"
#include "ca_internal.h"

/* Splits "spiffe://TD/ns/NS/sa/SA" into its parts (pointers into buf). */
static bool split_spiffe(const char *id, size_t len, char *buf, size_t buflen, const char **td, const char **ns,
                         const char **sa)
{
    if (len >= buflen || len < 9 || memcmp(id, "spiffe://", 9) != 0)
        return false;
    memcpy(buf, id, len);
    buf[len] = 0;
    char *p = buf + 9;
    char *s1 = strchr(p, '/');
    if (!s1)
        return false;
    *s1 = 0;
    *td = p;
    p = s1 + 1;
    if (strncmp(p, "ns/", 3) != 0)
        return false;
    p += 3;
    char *s2 = strchr(p, '/');
    if (!s2 || strncmp(s2, "/sa/", 4) != 0)
        return false;
    *s2 = 0;
    *ns = p;
    *sa = s2 + 4;
    return **ns && **sa && !strchr(*sa, '/');
}

/* Why a requested URI is not the caller's identity, in words. */
static int uri_mismatch(const char *want, const unsigned char *got, size_t glen, char *err, size_t errlen)
{
    char b1[512], b2[512], shown[300];
    const char *wtd, *wns, *wsa, *gtd, *gns, *gsa;
    size_t n = glen < sizeof shown - 1 ? glen : sizeof shown - 1;
    for (size_t i = 0; i < n; i++)
        shown[i] = (got[i] >= 0x20 && got[i] < 0x7f) ? (char)got[i] : '?';
    shown[n] = 0;
    if (memchr(got, 0, glen) == NULL && split_spiffe(want, strlen(want), b1, sizeof b1, &wtd, &wns, &wsa) &&
        split_spiffe((const char *)got, glen, b2, sizeof b2, &gtd, &gns, &gsa)) {
        if (strcmp(wtd, gtd) != 0)
            return ca_errc(CA_EPERM, err, errlen,
                           "csr: subjectAltName URI %s is in trust domain \"%s\"; the caller's identity is %s", shown,
                           gtd, want);
        if (strcmp(wns, gns) != 0)
            return ca_errc(CA_EPERM, err, errlen,
                           "csr: subjectAltName URI %s asks for namespace \"%s\"; the caller is service account "
                           "%s/%s (%s)",
                           shown, gns, wns, wsa, want);
        return ca_errc(CA_EPERM, err, errlen,
                       "csr: subjectAltName URI %s asks for service account \"%s\"; the caller is service account "
                       "%s/%s (%s)",
                       shown, gsa, wns, wsa, want);
    }
    return ca_errc(CA_EPERM, err, errlen, "csr: subjectAltName URI %s is not the caller's identity %s", shown, want);
}

static int check_key(EVP_PKEY *pub, char *err, size_t errlen)
{
    char kd[64];
    int id = EVP_PKEY_get_base_id(pub);
    if (id == EVP_PKEY_RSA) {
        int bits = EVP_PKEY_get_bits(pub);
        if (bits < 2048)
            return ca_errc(CA_EINVAL, err, errlen, "csr: RSA %d key is too weak (RSA keys need at least 2048 bits)",
                           bits);
        if (bits > 8192)
            return ca_errc(CA_EINVAL, err, errlen, "csr: RSA %d key is too large (at most 8192 bits)", bits);
        return 0;
    }
    if (id == EVP_PKEY_EC) {
        ca_key_desc(pub, kd, sizeof kd);
        if (!strcmp(kd, "ECDSA P-256") || !strcmp(kd, "ECDSA P-384"))
            return 0;
        return ca_errc(CA_EINVAL, err, errlen, "csr: %s key is not accepted (ECDSA keys must use P-256 or P-384)",
                       kd);
    }
    return ca_errc(CA_EINVAL, err, errlen,
                   "csr: %s key is not accepted (RSA of at least 2048 bits, or ECDSA P-256 or P-384)",
                   ca_key_desc(pub, kd, sizeof kd));
}

static const char *gen_type_name(int type)
{
    switch (type) {
    case GEN_DNS:
        return "DNS";
    case GEN_IPADD:
        return "IP";
    case GEN_EMAIL:
        return "email";
    case GEN_URI:
        return "URI";
    case GEN_DIRNAME:
        return "directory name";
    case GEN_RID:
        return "registered ID";
    case GEN_OTHERNAME:
        return "otherName";
    default:
        return "unsupported";
    }
}

static void printable(const ASN1_STRING *s, char *buf, size_t len)
{
    const unsigned char *d = ASN1_STRING_get0_data(s);
    size_t n = (size_t)ASN1_STRING_length(s);
    if (n > len - 1)
        n = len - 1;
    for (size_t i = 0; i < n; i++)
        buf[i] = (d[i] >= 0x20 && d[i] < 0x7f) ? (char)d[i] : '?';
    buf[n] = 0;
}

static int check_sans(GENERAL_NAMES *names, const char *identity, char *err, size_t errlen)
{
    char v[300];
    int n = sk_GENERAL_NAME_num(names);
    if (n == 0)
        return ca_errc(CA_EINVAL, err, errlen, "csr: subjectAltName is empty; it must hold the URI %s", identity);
    for (int i = 0; i < n; i++) {
        GENERAL_NAME *g = sk_GENERAL_NAME_value(names, i);
        if (g->type == GEN_URI) {
            const ASN1_STRING *s = g->d.uniformResourceIdentifier;
            size_t len = (size_t)ASN1_STRING_length(s);
            if (len != strlen(identity) || memcmp(ASN1_STRING_get0_data(s), identity, len) != 0)
                return uri_mismatch(identity, ASN1_STRING_get0_data(s), len, err, errlen);
            continue;
        }
        if (g->type == GEN_DNS || g->type == GEN_EMAIL) {
            printable(g->d.ia5, v, sizeof v);
            return ca_errc(CA_EPERM, err, errlen,
                           "csr: subjectAltName %s:%s is not allowed; the only SAN may be the URI %s",
                           gen_type_name(g->type), v, identity);
        }
        if (g->type == GEN_IPADD) {
            char ip[64] = "?";
            const ASN1_OCTET_STRING *o = g->d.iPAddress;
            if (ASN1_STRING_length(o) == 4) {
                const unsigned char *d = ASN1_STRING_get0_data(o);
                snprintf(ip, sizeof ip, "%u.%u.%u.%u", d[0], d[1], d[2], d[3]);
            } else if (ASN1_STRING_length(o) == 16) {
                snprintf(ip, sizeof ip, "(IPv6)");
            }
            return ca_errc(CA_EPERM, err, errlen,
                           "csr: subjectAltName IP:%s is not allowed; the only SAN may be the URI %s", ip, identity);
        }
        return ca_errc(CA_EPERM, err, errlen, "csr: subjectAltName of type %s is not allowed; the only SAN may be the URI %s",
                       gen_type_name(g->type), identity);
    }
    if (n > 1)
        return ca_errc(CA_EPERM, err, errlen, "csr: subjectAltName repeats the URI %s %d times; it must appear once",
                       identity, n);
    return 0;
}

static int csr_parse_check(const char *pem, size_t len, const char *identity, X509_REQ **out, char *err,
                           size_t errlen)
{
    char why[256];
    int rc = CA_EINVAL;
    X509_REQ *req = NULL;
    STACK_OF(X509_EXTENSION) *exts = NULL;
    if (!pem || len == 0 || len > (1u << 20))
        return ca_errc(CA_EINVAL, err, errlen, "csr: %s", !pem || !len ? "empty" : "larger than 1 MiB");
    if (!identity || !*identity)
        return ca_errc(CA_EPERM, err, errlen, "csr: the caller has no identity");
    BIO *b = BIO_new_mem_buf(pem, (int)len);
    if (!b)
        return ca_errc(-1, err, errlen, "csr: out of memory");
    ERR_clear_error();
    req = PEM_read_bio_X509_REQ(b, NULL, NULL, NULL);
    BIO_free(b);
    if (!req) {
        unsigned long e = ERR_peek_last_error();
        if (ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE) {
            ERR_clear_error();
            ca_err(err, errlen, "csr: no PEM CERTIFICATE REQUEST found");
        } else {
            ca_err(err, errlen, "csr: cannot parse the certificate request: %s", ca_ossl_reason(why, sizeof why));
        }
        goto out;
    }
    EVP_PKEY *pub = X509_REQ_get0_pubkey(req);
    if (!pub) {
        ca_err(err, errlen, "csr: the public key cannot be read: %s", ca_ossl_reason(why, sizeof why));
        goto out;
    }
    if ((rc = check_key(pub, err, errlen)) != 0)
        goto out;
    rc = CA_EINVAL;
    ERR_clear_error();
    if (X509_REQ_verify(req, pub) != 1) {
        ERR_clear_error();
        ca_err(err, errlen, "csr: the signature does not verify with the request's own key");
        goto out;
    }
    exts = X509_REQ_get_extensions(req);
    ERR_clear_error();
    bool have_san = false;
    for (int i = 0; exts && i < sk_X509_EXTENSION_num(exts); i++) {
        X509_EXTENSION *e = sk_X509_EXTENSION_value(exts, i);
        int nid = OBJ_obj2nid(X509_EXTENSION_get_object(e));
        if (nid == NID_subject_alt_name) {
            if (have_san) {
                ca_err(err, errlen, "csr: subjectAltName appears twice");
                goto out;
            }
            have_san = true;
            GENERAL_NAMES *names = X509V3_EXT_d2i(e);
            if (!names) {
                ca_err(err, errlen, "csr: subjectAltName cannot be parsed: %s", ca_ossl_reason(why, sizeof why));
                goto out;
            }
            rc = check_sans(names, identity, err, errlen);
            GENERAL_NAMES_free(names);
            if (rc != 0)
                goto out;
            rc = CA_EINVAL;
        } else if (nid == NID_basic_constraints) {
            BASIC_CONSTRAINTS *bc = X509V3_EXT_d2i(e);
            if (!bc) {
                ca_err(err, errlen, "csr: basicConstraints cannot be parsed: %s", ca_ossl_reason(why, sizeof why));
                goto out;
            }
            int is_ca = bc->ca;
            BASIC_CONSTRAINTS_free(bc);
            if (is_ca) {
                rc = ca_errc(CA_EPERM, err, errlen,
                             "csr: asks for a CA certificate (basicConstraints CA:TRUE); workload certificates are "
                             "CA:FALSE");
                goto out;
            }
        }
        /* other requested extensions are ignored: the CA sets its own */
    }
    if (!have_san) {
        ca_err(err, errlen, "csr: no subjectAltName; the request must carry the URI SAN %s", identity);
        goto out;
    }
    rc = 0;
    if (out) {
        *out = req;
        req = NULL;
    }
out:
    ERR_clear_error();
    sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
    X509_REQ_free(req);
    return rc;
}

int ca_csr_check(const char *csr_pem, size_t len, const char *identity, char *err, size_t errlen)
{
    return csr_parse_check(csr_pem, len, identity, NULL, err, errlen);
}

static GENERAL_NAME *gen_name(int type, const char *v)
{
    GENERAL_NAME *g = GENERAL_NAME_new();
    ASN1_IA5STRING *s = ASN1_IA5STRING_new();
    if (!g || !s || !ASN1_STRING_set(s, v, (int)strlen(v))) {
        GENERAL_NAME_free(g);
        ASN1_IA5STRING_free(s);
        return NULL;
    }
    GENERAL_NAME_set0_value(g, type, s);
    return g;
}

/* Copies the request's SubjectPublicKeyInfo into the certificate as it was
 * encoded: X509_set_pubkey() would re-encode the key through OpenSSL 3's
 * encoder machinery, which costs more than the signature itself. */
static int copy_spki(X509 *x, X509_PUBKEY *src)
{
    ASN1_OBJECT *alg = NULL;
    const unsigned char *pk = NULL;
    int pklen = 0, ptype = V_ASN1_UNDEF;
    X509_ALGOR *pa = NULL;
    const void *pval = NULL;
    if (!X509_PUBKEY_get0_param(&alg, &pk, &pklen, &pa, src) || pklen <= 0)
        return -1;
    X509_ALGOR_get0(NULL, &ptype, &pval, pa);
    void *pv = NULL;
    if (ptype == V_ASN1_OBJECT) {
        if (!(pv = OBJ_dup(pval)))
            return -1;
    } else if (ptype == V_ASN1_SEQUENCE) {
        if (!(pv = ASN1_STRING_dup(pval)))
            return -1;
    } else if (ptype != V_ASN1_NULL && ptype != V_ASN1_UNDEF) {
        return -1;
    }
    unsigned char *penc = OPENSSL_memdup(pk, (size_t)pklen);
    ASN1_OBJECT *a = OBJ_dup(alg);
    if (!penc || !a || !X509_PUBKEY_set0_param(X509_get_X509_PUBKEY(x), a, ptype, pv, penc, pklen)) {
        OPENSSL_free(penc);
        ASN1_OBJECT_free(a);
        if (ptype == V_ASN1_OBJECT)
            ASN1_OBJECT_free(pv);
        else if (ptype == V_ASN1_SEQUENCE)
            ASN1_STRING_free(pv);
        return -1;
    }
    return 0;
}

/* Issues a certificate for pub (or for the request's key spki when given)
 * from bundle b. */
static int issue(ca_bundle_t *b, EVP_PKEY *pub, X509_PUBKEY *spki, const char *const *dns, size_t ndns,
                 const char *uri, int64_t ttl_s, ca_chain_t *out, char *err, size_t errlen)
{
    char why[256];
    int rc = -1;
    X509 *x = X509_new();
    ASN1_BIT_STRING *ku = ASN1_BIT_STRING_new();
    EXTENDED_KEY_USAGE *eku = sk_ASN1_OBJECT_new_null();
    BASIC_CONSTRAINTS *bc = BASIC_CONSTRAINTS_new();
    AUTHORITY_KEYID *akid = NULL;
    GENERAL_NAMES *san = sk_GENERAL_NAME_new_null();
    memset(out, 0, sizeof *out);
    if (!x || !ku || !eku || !bc || !san)
        goto oom;
    time_t now = time(NULL);
    int64_t not_after = (int64_t)now + ttl_s;
    if (b->not_after && not_after > b->not_after)
        not_after = b->not_after; /* never outlive the signing certificate */
    if (not_after <= (int64_t)now) {
        ca_err(err, errlen, "the signing certificate has expired");
        goto out;
    }
    if (!X509_set_version(x, 2) || ca_set_serial(x) < 0 || !X509_set_issuer_name(x, X509_get_subject_name(b->cert)) ||
        !X509_time_adj_ex(X509_getm_notBefore(x), 0, -CA_CLOCK_SKEW_S, &now) ||
        !X509_time_adj_ex(X509_getm_notAfter(x), 0, (long)(not_after - (int64_t)now), &now) ||
        (spki ? copy_spki(x, spki) != 0 : !X509_set_pubkey(x, pub)))
        goto fail;
    /* keyUsage digitalSignature (bit 0) + keyEncipherment (bit 2), critical */
    if (!ASN1_BIT_STRING_set_bit(ku, 0, 1) || !ASN1_BIT_STRING_set_bit(ku, 2, 1) ||
        X509_add1_ext_i2d(x, NID_key_usage, ku, 1, X509V3_ADD_DEFAULT) != 1)
        goto fail;
    sk_ASN1_OBJECT_push(eku, OBJ_nid2obj(NID_server_auth));
    sk_ASN1_OBJECT_push(eku, OBJ_nid2obj(NID_client_auth));
    if (X509_add1_ext_i2d(x, NID_ext_key_usage, eku, 0, X509V3_ADD_DEFAULT) != 1)
        goto fail;
    bc->ca = 0;
    if (X509_add1_ext_i2d(x, NID_basic_constraints, bc, 1, X509V3_ADD_DEFAULT) != 1)
        goto fail;
    const ASN1_OCTET_STRING *skid = X509_get0_subject_key_id(b->cert);
    if (skid) {
        if (!(akid = AUTHORITY_KEYID_new()) || !(akid->keyid = ASN1_OCTET_STRING_dup(skid)) ||
            X509_add1_ext_i2d(x, NID_authority_key_identifier, akid, 0, X509V3_ADD_DEFAULT) != 1)
            goto fail;
    }
    if (uri) {
        GENERAL_NAME *g = gen_name(GEN_URI, uri);
        if (!g || !sk_GENERAL_NAME_push(san, g)) {
            GENERAL_NAME_free(g);
            goto oom;
        }
    }
    for (size_t i = 0; i < ndns; i++) {
        GENERAL_NAME *g = gen_name(GEN_DNS, dns[i]);
        if (!g || !sk_GENERAL_NAME_push(san, g)) {
            GENERAL_NAME_free(g);
            goto oom;
        }
    }
    /* the subject is empty, so the SAN is critical (RFC 5280 4.2.1.6) */
    if (sk_GENERAL_NAME_num(san) && X509_add1_ext_i2d(x, NID_subject_alt_name, san, 1, X509V3_ADD_DEFAULT) != 1)
        goto fail;
    if (!X509_sign(x, b->key, EVP_sha256()))
        goto fail;
    out->n = 1 + b->nchain;
    out->pem = mesh_xcalloc(out->n, sizeof *out->pem);
    if (!(out->pem[0] = ca_x509_pem(x)))
        goto fail;
    for (size_t i = 0; i < b->nchain; i++)
        out->pem[1 + i] = mesh_xstrdup(b->chain_pem[i]);
    rc = 0;
    goto out;
oom:
    ca_err(err, errlen, "out of memory");
    goto out;
fail:
    ca_err(err, errlen, "cannot build the certificate: %s", ca_ossl_reason(why, sizeof why));
out:
    if (rc != 0)
        ca_chain_free(out);
    X509_free(x);
    ASN1_BIT_STRING_free(ku);
    sk_ASN1_OBJECT_free(eku); /* OBJ_nid2obj objects are static */
    BASIC_CONSTRAINTS_free(bc);
    AUTHORITY_KEYID_free(akid);
    GENERAL_NAMES_free(san);
    return rc;
}

int ca_bundle_sign_csr(ca_bundle_t *b, const char *csr_pem, size_t csr_len, const char *identity, int64_t ttl_s,
                       ca_chain_t *out, char *err, size_t errlen)
{
    X509_REQ *req = NULL;
    memset(out, 0, sizeof *out);
    int rc = csr_parse_check(csr_pem, csr_len, identity, &req, err, errlen);
    if (rc != 0)
        return rc;
    rc = issue(b, NULL, X509_REQ_get_X509_PUBKEY(req), NULL, 0, identity, ttl_s, out, err, errlen);
    X509_REQ_free(req);
    return rc;
}

int ca_bundle_issue_key(ca_bundle_t *b, const char *const *dns, size_t ndns, const char *uri, int64_t ttl_s,
                        ca_key_type_t kt, char **key_pem, ca_chain_t *out, char *err, size_t errlen)
{
    char why[256];
    *key_pem = NULL;
    EVP_PKEY *k = ca_keygen(kt);
    if (!k)
        return ca_err(err, errlen, "cannot generate a key: %s", ca_ossl_reason(why, sizeof why));
    int rc = issue(b, k, NULL, dns, ndns, uri, ttl_s, out, err, errlen);
    if (rc == 0 && !(*key_pem = ca_key_pem(k))) {
        ca_chain_free(out);
        rc = ca_err(err, errlen, "cannot encode the key");
    }
    EVP_PKEY_free(k);
    return rc;
}

void ca_chain_free(ca_chain_t *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < c->n; i++)
        free(c->pem[i]);
    free(c->pem);
    c->pem = NULL;
    c->n = 0;
}

char *ca_chain_join(const ca_chain_t *c, size_t from)
{
    size_t len = 0;
    for (size_t i = from; i < c->n; i++)
        len += strlen(c->pem[i]);
    char *s = mesh_xmalloc(len + 1);
    size_t off = 0;
    for (size_t i = from; i < c->n; i++) {
        size_t l = strlen(c->pem[i]);
        memcpy(s + off, c->pem[i], l);
        off += l;
    }
    s[off] = 0;
    return s;
}
