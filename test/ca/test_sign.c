/*
 * Signing: certificates for every key type that the real openssl verifies,
 * the fields of an issued certificate, every identity-spoofing CSR refused
 * with a precise message, lifetimes capped, the self-signed root reused on
 * restart (also by racing replicas), and root rotation without restart.
 */
#include <pthread.h>
#include <time.h>

#include "../../ca/ca.h"
#include "../../common/caclient.h"
#include "ca_test.h"

#define ID "spiffe://cluster.local/ns/foo/sa/bar"

typedef struct fx {
    char *dir;
    char root_file[512];
    ca_t *ca;
} fx_t;

static ca_t *new_ca(const char *root_file, const char *cacerts, ca_key_type_t kt, int64_t max_ttl, int reload_ms)
{
    char err[1024];
    ca_opts_t o = {0};
    o.root_file = root_file;
    o.cacerts_dir = cacerts;
    o.root_key_type = kt;
    o.max_ttl_s = max_ttl;
    o.reload_interval_ms = reload_ms;
    ca_t *ca = ca_new(&o, err, sizeof err);
    if (!ca)
        fail_msg("ca_new: %s", err);
    return ca;
}

static int setup(void **state)
{
    fx_t *f = calloc(1, sizeof *f);
    f->dir = ct_tmpdir();
    snprintf(f->root_file, sizeof f->root_file, "%s/root.pem", f->dir);
    f->ca = new_ca(f->root_file, NULL, CA_KEY_RSA, 0, -1);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx_t *f = *state;
    ca_free(f->ca);
    ct_rmrf(f->dir);
    free(f->dir);
    free(f);
    return 0;
}

static int sign(ca_t *ca, const char *csr, const char *id, int64_t ttl, ca_chain_t *out, char *err, size_t errlen)
{
    return ca_sign_csr(ca, csr, strlen(csr), id, ttl, out, err, errlen);
}

/* Signs a CSR with the given key and checks the result with openssl. */
static void sign_and_verify(ca_t *ca, const char *keyspec)
{
    char err[1024], out[4096];
    char *csr = ct_csr(keyspec, "URI:" ID);
    ca_chain_t ch;
    int rc = sign(ca, csr, ID, 3600, &ch, err, sizeof err);
    if (rc != 0)
        fail_msg("%s: %s", keyspec, err);
    ca_bundle_t *b = ca_bundle_get(ca);
    assert_int_equal(ch.n, 1 + ca_bundle_chain_len(b));
    int st = ct_openssl_verify(ca_bundle_root_pem(b), ch.pem, ch.n, out, sizeof out);
    if (st != 0)
        fail_msg("openssl verify (%s): %s", keyspec, out);
    ct_assert_has(out, ": OK");
    /* the client library's verification agrees */
    caclient_cert_t cc = {0};
    assert_int_equal(caclient_verify_chain(ch.pem, ch.n, ca_bundle_root_pem(b), ID, &cc, err, sizeof err), 0);
    assert_string_equal(cc.identity, ID);
    caclient_cert_free(&cc);
    ca_bundle_release(b);
    ca_chain_free(&ch);
    free(csr);
}

static void test_sign_each_key_type(void **state)
{
    fx_t *f = *state;
    const char *keys[] = {"rsa:2048", "rsa:3072", "rsa:4096", "ec:P-256", "ec:P-384"};
    for (size_t i = 0; i < sizeof keys / sizeof *keys; i++)
        sign_and_verify(f->ca, keys[i]);
    /* an ECDSA root */
    char rf[600];
    snprintf(rf, sizeof rf, "%s/ec-root.pem", f->dir);
    ca_t *ec = new_ca(rf, NULL, CA_KEY_ECDSA, 0, -1);
    ca_bundle_t *b = ca_bundle_get(ec);
    assert_string_equal(ca_bundle_key_desc(b), "ECDSA P-256");
    ca_bundle_release(b);
    sign_and_verify(ec, "rsa:2048");
    sign_and_verify(ec, "ec:P-256");
    ca_free(ec);
}

static void test_sign_with_plugin_chains(void **state)
{
    fx_t *f = *state;
    /* three-level RSA and ECC PKIs: the chain holds leaf, two intermediates, root */
    const char *sets[2][4] = {
        {"int2-cert.pem", "int2-key.pem", "int2-cert-chain.pem", "root-cert.pem"},
        {"ecc-int2-cert.pem", "ecc-int2-key.pem", "ecc-int2-cert-chain.pem", "ecc-root-cert.pem"},
    };
    const char *names[4] = {"ca-cert.pem", "ca-key.pem", "cert-chain.pem", "root-cert.pem"};
    for (int s = 0; s < 2; s++) {
        char d[600], p[700];
        snprintf(d, sizeof d, "%s/cacerts%d", f->dir, s);
        mkdir(d, 0700);
        for (int i = 0; i < 4; i++) {
            char rel[128];
            snprintf(rel, sizeof rel, "multilevelpki/%s", sets[s][i]);
            char *t = ct_pki(rel);
            snprintf(p, sizeof p, "%s/%s", d, names[i]);
            ct_write(p, t, 0600);
            free(t);
        }
        ca_t *ca = new_ca(NULL, d, CA_KEY_RSA, 0, -1);
        ca_bundle_t *b = ca_bundle_get(ca);
        assert_true(ca_bundle_plugged(b));
        assert_int_equal(ca_bundle_chain_len(b), 3);
        ca_bundle_release(b);
        sign_and_verify(ca, "ec:P-256");
        sign_and_verify(ca, "rsa:2048");
        ca_free(ca);
    }
}

static void test_issued_fields(void **state)
{
    fx_t *f = *state;
    char err[512];
    char *csr = ct_csr("ec:P-256", "URI:" ID);
    ca_chain_t ch;
    time_t before = time(NULL);
    assert_int_equal(sign(f->ca, csr, ID, 7200, &ch, err, sizeof err), 0);
    X509 *x = ct_x509(ch.pem[0]);
    /* SAN: exactly the URI */
    GENERAL_NAMES *gn = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    assert_int_equal(sk_GENERAL_NAME_num(gn), 1);
    GENERAL_NAME *g = sk_GENERAL_NAME_value(gn, 0);
    assert_int_equal(g->type, GEN_URI);
    assert_string_equal((const char *)ASN1_STRING_get0_data(g->d.uniformResourceIdentifier), ID);
    GENERAL_NAMES_free(gn);
    /* the CSR's subject is not copied */
    assert_int_equal(X509_NAME_entry_count(X509_get_subject_name(x)), 0);
    /* CA:FALSE, critical */
    int crit = -1;
    BASIC_CONSTRAINTS *bc = X509_get_ext_d2i(x, NID_basic_constraints, &crit, NULL);
    assert_non_null(bc);
    assert_false(bc->ca);
    assert_int_equal(crit, 1);
    BASIC_CONSTRAINTS_free(bc);
    /* keyUsage digitalSignature + keyEncipherment, critical */
    ASN1_BIT_STRING *ku = X509_get_ext_d2i(x, NID_key_usage, &crit, NULL);
    assert_int_equal(crit, 1);
    assert_int_equal(X509_get_key_usage(x), KU_DIGITAL_SIGNATURE | KU_KEY_ENCIPHERMENT);
    ASN1_BIT_STRING_free(ku);
    assert_int_equal(X509_get_extended_key_usage(x), XKU_SSL_SERVER | XKU_SSL_CLIENT);
    /* SHA-256 signature by the RSA root */
    assert_int_equal(X509_get_signature_nid(x), NID_sha256WithRSAEncryption);
    /* 128-bit random serial */
    const ASN1_INTEGER *sn = X509_get0_serialNumber(x);
    assert_int_equal(ASN1_STRING_length(sn), 16);
    /* validity: backdated two minutes, lasts what was asked */
    int64_t nb = 0, na = 0;
    struct tm tm;
    ASN1_TIME_to_tm(X509_get0_notBefore(x), &tm);
    nb = (int64_t)timegm(&tm);
    ASN1_TIME_to_tm(X509_get0_notAfter(x), &tm);
    na = (int64_t)timegm(&tm);
    assert_in_range(nb, (int64_t)before - 125, (int64_t)before - 115);
    assert_in_range(na, (int64_t)before + 7200 - 2, (int64_t)before + 7200 + 5);
    /* two certificates never share a serial */
    ca_chain_t ch2;
    assert_int_equal(sign(f->ca, csr, ID, 7200, &ch2, err, sizeof err), 0);
    X509 *y = ct_x509(ch2.pem[0]);
    assert_int_not_equal(ASN1_INTEGER_cmp(X509_get0_serialNumber(x), X509_get0_serialNumber(y)), 0);
    X509_free(y);
    ca_chain_free(&ch2);
    X509_free(x);
    ca_chain_free(&ch);
    free(csr);
}

static int64_t lifetime(const char *pem)
{
    X509 *x = ct_x509(pem);
    int d = 0, s = 0;
    ASN1_TIME_diff(&d, &s, X509_get0_notBefore(x), X509_get0_notAfter(x));
    X509_free(x);
    return (int64_t)d * 86400 + s - 120; /* minus the backdating */
}

static void test_ttl_capped(void **state)
{
    fx_t *f = *state;
    char err[512];
    char *csr = ct_csr("ec:P-256", "URI:" ID);
    ca_chain_t ch;
    /* default max 24 h: 100 days are cut to 24 h, 0 means the default */
    assert_int_equal(sign(f->ca, csr, ID, 100 * 86400, &ch, err, sizeof err), 0);
    assert_in_range(lifetime(ch.pem[0]), 86400 - 3, 86400 + 3);
    ca_chain_free(&ch);
    assert_int_equal(sign(f->ca, csr, ID, 0, &ch, err, sizeof err), 0);
    assert_in_range(lifetime(ch.pem[0]), 86400 - 3, 86400 + 3);
    ca_chain_free(&ch);
    assert_int_equal(sign(f->ca, csr, ID, 600, &ch, err, sizeof err), 0);
    assert_in_range(lifetime(ch.pem[0]), 597, 603);
    ca_chain_free(&ch);
    /* a configured maximum of 90 days; beyond that the CA refuses to start */
    char rf[600];
    snprintf(rf, sizeof rf, "%s/root90.pem", f->dir);
    ca_t *ca90 = new_ca(rf, NULL, CA_KEY_ECDSA, 90 * 86400, -1);
    assert_int_equal(sign(ca90, csr, ID, 200 * 86400, &ch, err, sizeof err), 0);
    assert_in_range(lifetime(ch.pem[0]), 90 * 86400 - 3, 90 * 86400 + 3);
    ca_chain_free(&ch);
    ca_free(ca90);
    ca_opts_t o = {.root_file = rf, .max_ttl_s = 91 * 86400};
    assert_null(ca_new(&o, err, sizeof err));
    ct_assert_has(err, "above the limit of 90 days");
    free(csr);
}

static void expect_refused(ca_t *ca, const char *csr, int code, const char *msg)
{
    char err[1024] = "";
    ca_chain_t ch;
    int rc = sign(ca, csr, ID, 3600, &ch, err, sizeof err);
    if (rc != code)
        fail_msg("expected %d (%s), got %d: %s", code, msg, rc, err);
    ct_assert_has(err, msg);
}

static void test_spoofing_refused(void **state)
{
    fx_t *f = *state;
    struct {
        const char *key, *sans;
        bool ca, tamper;
        int code;
        const char *msg;
    } cases[] = {
        {"ec:P-256", "URI:spiffe://cluster.local/ns/foo/sa/admin", 0, 0, CA_EPERM,
         "asks for service account \"admin\"; the caller is service account foo/bar"},
        {"ec:P-256", "URI:spiffe://cluster.local/ns/istio-system/sa/bar", 0, 0, CA_EPERM,
         "asks for namespace \"istio-system\""},
        {"ec:P-256", "URI:spiffe://evil.org/ns/foo/sa/bar", 0, 0, CA_EPERM, "is in trust domain \"evil.org\""},
        {"ec:P-256", "URI:https://example.com/", 0, 0, CA_EPERM,
         "subjectAltName URI https://example.com/ is not the caller's identity " ID},
        {"ec:P-256", "URI:" ID ",DNS:istiod.istio-system.svc", 0, 0, CA_EPERM,
         "subjectAltName DNS:istiod.istio-system.svc is not allowed; the only SAN may be the URI " ID},
        {"ec:P-256", "URI:" ID ",IP:10.0.0.1", 0, 0, CA_EPERM, "subjectAltName IP:10.0.0.1 is not allowed"},
        {"ec:P-256", "email:root@example.com,URI:" ID, 0, 0, CA_EPERM, "subjectAltName email:root@example.com"},
        {"ec:P-256", "URI:" ID ",URI:spiffe://cluster.local/ns/foo/sa/other", 0, 0, CA_EPERM,
         "asks for service account \"other\""},
        {"ec:P-256", "URI:" ID ",URI:" ID, 0, 0, CA_EPERM, "repeats the URI"},
        {"ec:P-256", "URI:" ID, 1, 0, CA_EPERM, "asks for a CA certificate (basicConstraints CA:TRUE)"},
        {"rsa:1024", "URI:" ID, 0, 0, CA_EINVAL, "csr: RSA 1024 key is too weak (RSA keys need at least 2048 bits)"},
        {"ec:P-521", "URI:" ID, 0, 0, CA_EINVAL, "csr: ECDSA P-521 key is not accepted"},
        {"ed25519", "URI:" ID, 0, 0, CA_EINVAL, "csr: ED25519 key is not accepted"},
        {"ec:P-256", "URI:" ID, 0, 1, CA_EINVAL, "csr: the signature does not verify"},
        {"ec:P-256", NULL, 0, 0, CA_EINVAL, "csr: no subjectAltName; the request must carry the URI SAN " ID},
        {"ec:P-256", "DNS:bar.foo.svc", 0, 0, CA_EPERM, "DNS:bar.foo.svc is not allowed"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char *csr = ct_csr_ex(cases[i].key, cases[i].sans, cases[i].ca, cases[i].tamper, NULL);
        expect_refused(f->ca, csr, cases[i].code, cases[i].msg);
        free(csr);
    }
    /* unparseable input */
    expect_refused(f->ca, "hello", CA_EINVAL, "csr: no PEM CERTIFICATE REQUEST found");
    expect_refused(f->ca, "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n", CA_EINVAL,
                   "csr: cannot parse the certificate request");
    char err[256];
    ca_chain_t ch;
    assert_int_equal(ca_sign_csr(f->ca, "", 0, ID, 0, &ch, err, sizeof err), CA_EINVAL);
    ct_assert_has(err, "csr: empty");
    /* a caller without identity gets nothing */
    char *csr = ct_csr("ec:P-256", "URI:" ID);
    assert_int_equal(ca_sign_csr(f->ca, csr, strlen(csr), "", 0, &ch, err, sizeof err), CA_EPERM);
    free(csr);
    ca_stats_t st;
    ca_get_stats(f->ca, &st);
    assert_true(st.refused >= sizeof cases / sizeof *cases);
    assert_int_equal(st.success, 0);
}

static void test_restart_reuses_root(void **state)
{
    fx_t *f = *state;
    char *r1 = ca_root_pem(f->ca);
    struct stat st;
    assert_int_equal(stat(f->root_file, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    ca_free(f->ca);
    f->ca = new_ca(f->root_file, NULL, CA_KEY_ECDSA, 0, -1); /* another key type asked: the file wins */
    char *r2 = ca_root_pem(f->ca);
    assert_string_equal(r1, r2);
    ca_bundle_t *b = ca_bundle_get(f->ca);
    assert_string_equal(ca_bundle_key_desc(b), "RSA 2048");
    ct_assert_has(ca_bundle_source(b), "self-signed root file");
    ca_bundle_release(b);
    free(r1);
    free(r2);
    /* the file holds the key: no key material in it is shared with logs, but
     * it is the only copy: a broken file is an error, not a new root */
    ct_write(f->root_file, "garbage", 0600);
    char err[512];
    ca_opts_t o = {.root_file = f->root_file};
    assert_null(ca_new(&o, err, sizeof err));
    ct_assert_has(err, "no PEM certificate found");
}

typedef struct race {
    const char *file;
    char *root;
} race_t;

static void *race_thread(void *arg)
{
    race_t *r = arg;
    char err[512];
    ca_opts_t o = {.root_file = r->file, .root_key_type = CA_KEY_ECDSA, .reload_interval_ms = -1};
    ca_t *ca = ca_new(&o, err, sizeof err);
    if (ca) {
        r->root = ca_root_pem(ca);
        ca_free(ca);
    }
    return NULL;
}

static void test_replicas_agree_on_one_root(void **state)
{
    fx_t *f = *state;
    char file[600];
    snprintf(file, sizeof file, "%s/shared-root.pem", f->dir);
    race_t r[4];
    pthread_t t[4];
    for (int i = 0; i < 4; i++) {
        r[i].file = file;
        r[i].root = NULL;
        pthread_create(&t[i], NULL, race_thread, &r[i]);
    }
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    for (int i = 0; i < 4; i++) {
        assert_non_null(r[i].root);
        assert_string_equal(r[0].root, r[i].root);
    }
    for (int i = 0; i < 4; i++)
        free(r[i].root);
}

static void copy_pki(const char *dir, const char *cert, const char *key, const char *chain, const char *root)
{
    const char *src[4] = {cert, key, chain, root};
    const char *dst[4] = {"ca-cert.pem", "ca-key.pem", "cert-chain.pem", "root-cert.pem"};
    for (int i = 0; i < 4; i++) {
        char p[700], tmp[720], rel[200];
        snprintf(rel, sizeof rel, "multilevelpki/%s", src[i]);
        char *t = ct_pki(rel);
        snprintf(p, sizeof p, "%s/%s", dir, dst[i]);
        snprintf(tmp, sizeof tmp, "%s.tmp", p);
        ct_write(tmp, t, 0600);
        rename(tmp, p);
        free(t);
    }
}

static void test_root_rotation(void **state)
{
    fx_t *f = *state;
    char d[600], err[1024];
    snprintf(d, sizeof d, "%s/rot", f->dir);
    mkdir(d, 0700);
    copy_pki(d, "int-cert.pem", "int-key.pem", "int-cert-chain.pem", "root-cert.pem");
    ca_t *ca = new_ca(NULL, d, CA_KEY_RSA, 0, 100);
    char *root1 = ca_root_pem(ca);
    ca_bundle_t *old = ca_bundle_get(ca);
    bool changed = true;
    assert_int_equal(ca_reload(ca, &changed, err, sizeof err), 0);
    assert_false(changed);

    /* new files: the background thread picks them up without a restart */
    copy_pki(d, "ecc-int-cert.pem", "ecc-int-key.pem", "ecc-int-cert-chain.pem", "ecc-root-cert.pem");
    char *root2 = NULL;
    for (int i = 0; i < 100; i++) {
        root2 = ca_root_pem(ca);
        if (strcmp(root1, root2) != 0)
            break;
        free(root2);
        root2 = NULL;
        usleep(50000);
    }
    assert_non_null(root2);
    char *ecc = ct_pki("multilevelpki/ecc-root-cert.pem");
    X509 *a = ct_x509(ecc), *b = ct_x509(root2);
    assert_int_equal(X509_cmp(a, b), 0);
    X509_free(a);
    X509_free(b);
    free(ecc);
    sign_and_verify(ca, "ec:P-256");
    /* the bundle taken before the swap is still usable */
    assert_string_equal(ca_bundle_root_pem(old), root1);
    ca_bundle_release(old);
    ca_stats_t st;
    ca_get_stats(ca, &st);
    assert_true(st.reloads >= 1);

    /* broken files: reported, the last good root stays in force */
    char p[700];
    snprintf(p, sizeof p, "%s/ca-key.pem", d);
    char *wrong = ct_pki("multilevelpki/int-key.pem");
    ct_write(p, wrong, 0600);
    free(wrong);
    assert_int_equal(ca_reload(ca, &changed, err, sizeof err), -1);
    ct_assert_has(err, "ca-key.pem does not match the certificate in");
    char *root3 = ca_root_pem(ca);
    assert_string_equal(root2, root3);
    sign_and_verify(ca, "rsa:2048");
    free(root1);
    free(root2);
    free(root3);
    ca_free(ca);
}

static void test_serving_issue(void **state)
{
    fx_t *f = *state;
    char *key = NULL, err[512];
    ca_chain_t ch;
    const char *dns[] = {"istiod.istio-system.svc", "meshd.example"};
    assert_int_equal(ca_issue_serving(f->ca, dns, 2, NULL, 3600, CA_KEY_ECDSA, &key, &ch, err, sizeof err), 0);
    X509 *x = ct_x509(ch.pem[0]);
    assert_int_equal(X509_check_host(x, "istiod.istio-system.svc", 0, 0, NULL), 1);
    assert_int_equal(X509_check_host(x, "meshd.example", 0, 0, NULL), 1);
    assert_int_equal(X509_check_host(x, "other.example", 0, 0, NULL), 0);
    X509_free(x);
    ct_assert_has(key, "-----BEGIN PRIVATE KEY-----");
    ca_free_secret(key);
    ca_chain_free(&ch);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_sign_each_key_type, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sign_with_plugin_chains, setup, teardown),
        cmocka_unit_test_setup_teardown(test_issued_fields, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ttl_capped, setup, teardown),
        cmocka_unit_test_setup_teardown(test_spoofing_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_restart_reuses_root, setup, teardown),
        cmocka_unit_test_setup_teardown(test_replicas_agree_on_one_root, setup, teardown),
        cmocka_unit_test_setup_teardown(test_root_rotation, setup, teardown),
        cmocka_unit_test_setup_teardown(test_serving_issue, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
