/*
 * Plug-in CA material: Istio's test PKIs (one, two and three levels, RSA and
 * ECDSA) load, and every broken case is refused with a message that names
 * the input and what is wrong.
 */
#include "../../ca/ca.h"
#include "ca_test.h"

#define ML "multilevelpki/"

/* Loads the four inputs by file name under the PKI test data (chain may be NULL). */
static ca_bundle_t *load(const char *cert, const char *key, const char *chain, const char *root, char *err,
                         size_t errlen)
{
    char *c = ct_pki(cert), *k = ct_pki(key), *ch = chain ? ct_pki(chain) : NULL, *r = ct_pki(root);
    ca_bundle_t *b = ca_bundle_from_pem(c, cert, k, key, ch, chain, r, root, err, errlen);
    free(c);
    free(k);
    free(ch);
    free(r);
    return b;
}

static void expect_fail(const char *cert, const char *key, const char *chain, const char *root, const char *s1,
                        const char *s2)
{
    char err[1024] = "";
    ca_bundle_t *b = load(cert, key, chain, root, err, sizeof err);
    if (b)
        fail_msg("%s/%s loaded but should fail with \"%s\"", cert, key, s1);
    ct_assert_has(err, s1);
    if (s2)
        ct_assert_has(err, s2);
}

static void expect_ok(const char *cert, const char *key, const char *chain, const char *root, size_t served,
                      const char *keydesc)
{
    char err[1024] = "";
    ca_bundle_t *b = load(cert, key, chain, root, err, sizeof err);
    if (!b)
        fail_msg("%s: %s", cert, err);
    assert_true(ca_bundle_plugged(b));
    assert_int_equal(ca_bundle_chain_len(b), served);
    assert_string_equal(ca_bundle_key_desc(b), keydesc);
    /* the last certificate served is the root */
    char *root_pem = ct_pki(root);
    X509 *want = ct_x509(root_pem), *got = ct_x509(ca_bundle_chain_pem(b, served - 1));
    assert_int_equal(X509_cmp(want, got), 0);
    X509_free(want);
    X509_free(got);
    free(root_pem);
    ca_bundle_release(b);
}

static void test_multilevel_rsa(void **state)
{
    (void)state;
    expect_ok(ML "root-cert.pem", ML "root-key.pem", NULL, ML "root-cert.pem", 1, "RSA 4096");
    expect_ok(ML "int-cert.pem", ML "int-key.pem", ML "int-cert-chain.pem", ML "root-cert.pem", 2, "RSA 4096");
    expect_ok(ML "int2-cert.pem", ML "int2-key.pem", ML "int2-cert-chain.pem", ML "root-cert.pem", 3, "RSA 4096");
    /* two levels need no chain file: the root signed the intermediate */
    expect_ok(ML "int-cert.pem", ML "int-key.pem", NULL, ML "root-cert.pem", 2, "RSA 4096");
    /* the same chain with a trailing empty line, and the top-level copy */
    expect_ok(ML "int2-cert.pem", ML "int2-key.pem", "cert-chain-trailing-line.pem", ML "root-cert.pem", 3,
              "RSA 4096");
    expect_ok(ML "int2-cert.pem", ML "int2-key.pem", "cert-chain.pem", ML "root-cert.pem", 3, "RSA 4096");
}

static void test_multilevel_ecc(void **state)
{
    (void)state;
    expect_ok(ML "ecc-root-cert.pem", ML "ecc-root-key.pem", NULL, ML "ecc-root-cert.pem", 1, "ECDSA P-256");
    expect_ok(ML "ecc-int-cert.pem", ML "ecc-int-key.pem", ML "ecc-int-cert-chain.pem", ML "ecc-root-cert.pem", 2,
              "ECDSA P-256");
    expect_ok(ML "ecc-int2-cert.pem", ML "ecc-int2-key.pem", ML "ecc-int2-cert-chain.pem", ML "ecc-root-cert.pem", 3,
              "ECDSA P-256");
}

static void test_single_level_roots(void **state)
{
    (void)state;
    expect_ok("cert.pem", "key.pem", NULL, "cert.pem", 1, "RSA 2048");
    expect_ok("ec-root-cert.pem", "ec-root-key.pem", NULL, "ec-root-cert.pem", 1, "ECDSA P-256");
}

static void test_istio_layout_directory(void **state)
{
    (void)state;
    char err[1024] = "";
    ca_bundle_t *b = ca_bundle_load_dir(tu_shared(CT_PKI "crl"), err, sizeof err);
    if (!b)
        fail_msg("%s", err);
    assert_int_equal(ca_bundle_chain_len(b), 2);
    ct_assert_has(ca_bundle_source(b), "crl");
    ca_bundle_release(b);
}

static void test_mismatched_keys(void **state)
{
    (void)state;
    expect_fail(ML "int2-cert.pem", "key.pem", ML "int2-cert-chain.pem", ML "root-cert.pem",
                "key.pem does not match the certificate in " ML "int2-cert.pem", "Intermediate CA2");
    expect_fail("cert.pem", "key-mismatch.pem", NULL, "cert.pem", "key-mismatch.pem does not match", NULL);
    expect_fail(ML "ecc-int-cert.pem", ML "int-key.pem", NULL, ML "ecc-root-cert.pem", "does not match", NULL);
}

static void test_chain_does_not_verify(void **state)
{
    (void)state;
    /* three levels without the chain: the middle certificate is missing */
    expect_fail(ML "int2-cert.pem", ML "int2-key.pem", NULL, ML "root-cert.pem",
                ML "int2-cert.pem (\"C=US, ST=CA, L=Sunnyvale, OU=Istio, CN=Intermediate CA2\") does not verify "
                   "against " ML "root-cert.pem",
                "unable to get local issuer certificate");
    /* another root */
    expect_fail(ML "int-cert.pem", ML "int-key.pem", ML "int-cert-chain.pem", "cert.pem",
                "does not verify against cert.pem with " ML "int-cert-chain.pem",
                "self-signed certificate in certificate chain");
    /* a leaf (cert-noroot) or an expired CA as the root */
    expect_fail(ML "int-cert.pem", ML "int-key.pem", NULL, "cert-noroot.pem", "does not verify against cert-noroot.pem",
                NULL);
    expect_fail(ML "int-cert.pem", ML "int-key.pem", NULL, "example-ca-cert.pem", "does not verify", NULL);
    expect_fail(ML "int-cert.pem", ML "int-key.pem", NULL, "expired-cert.pem", "does not verify", NULL);
    /* an RSA chain with the ECC root */
    expect_fail(ML "int-cert.pem", ML "int-key.pem", ML "int-cert-chain.pem", ML "ecc-root-cert.pem",
                "does not verify", NULL);
}

static void test_unparseable_inputs(void **state)
{
    (void)state;
    expect_fail("cert-parse-fail.pem", "key.pem", NULL, "cert.pem", "cert-parse-fail.pem: certificate 1: cannot parse",
                NULL);
    /* "BEGIN CERTIATE" ... "END CERTIFICATE" */
    expect_fail("cert-verify-fail.pem", "key.pem", NULL, "cert.pem",
                "cert-verify-fail.pem: certificate 1: cannot parse: bad end line", NULL);
    expect_fail("cert.pem", "key-parse-fail.pem", NULL, "cert.pem", "key-parse-fail.pem: cannot parse private key",
                NULL);
    expect_fail("cert.pem", "key-verify-fail.pem", NULL, "cert.pem", "key-verify-fail.pem: empty", NULL);
    expect_fail("cert.pem", "cert-chain-10y.pem", NULL, "cert.pem", "cert-chain-10y.pem: no PEM private key found",
                NULL);
    expect_fail("cert.pem", "key.pem", NULL, "root-verify-fail.pem", "root-verify-fail.pem: certificate 1: cannot parse: bad end line",
                NULL);
    expect_fail(ML "int-cert.pem", ML "int-key.pem", "cert-parse-fail.pem", ML "root-cert.pem",
                "cert-parse-fail.pem: certificate 1: cannot parse", NULL);
    /* a key file holding only certificates */
    expect_fail("cert.pem", "cert.pem", NULL, "cert.pem", "cert.pem: no PEM private key found", NULL);
}

static void test_not_a_ca(void **state)
{
    (void)state;
    /* leaves with their own keys (CA:FALSE, keyUsage digitalSignature) */
    expect_fail("cert-chain-10y.pem", "key-10y.pem", NULL, "root-cert-10y.pem",
                "cert-chain-10y.pem: certificate \"O=\" may not sign certificates", NULL);
    expect_fail("workload-cert.pem", "workload-key.pem", NULL, "self-signed-root-cert.pem",
                "may not sign certificates (keyUsage lacks keyCertSign)", NULL);
    expect_fail("ec-workload-cert.pem", "ec-workload-key.pem", NULL, "ec-root-cert.pem", "may not sign", NULL);
    expect_fail("spiffe-workload-cert.pem", "spiffe-workload-key.pem", NULL, "spiffe-root-cert-2.pem", "may not sign",
                NULL);

    /* CA:TRUE but keyUsage without keyCertSign */
    char err[1024], *c, *k;
    ct_make_ca("ec:P-256", -60, 3600, "critical,CA:TRUE", "critical,digitalSignature", &c, &k);
    assert_null(ca_bundle_from_pem(c, "ca-cert.pem", k, "ca-key.pem", NULL, NULL, c, "root-cert.pem", err, sizeof err));
    ct_assert_has(err, "ca-cert.pem: certificate \"CN=Test CA\" may not sign certificates (keyUsage lacks keyCertSign)");
    free(c);
    free(k);
    /* no basicConstraints on a version 3 certificate */
    ct_make_ca("ec:P-256", -60, 3600, NULL, "critical,keyCertSign", &c, &k);
    assert_null(ca_bundle_from_pem(c, "ca-cert.pem", k, "ca-key.pem", NULL, NULL, c, "root-cert.pem", err, sizeof err));
    ct_assert_has(err, "is not a CA (basicConstraints CA:TRUE is missing)");
    free(c);
    free(k);
}

static void test_validity(void **state)
{
    (void)state;
    char err[1024], *c, *k;
    ct_make_ca("ec:P-256", -7200, -3600, "critical,CA:TRUE", "critical,keyCertSign", &c, &k);
    assert_null(ca_bundle_from_pem(c, "ca-cert.pem", k, "ca-key.pem", NULL, NULL, c, "root-cert.pem", err, sizeof err));
    ct_assert_has(err, "ca-cert.pem: certificate \"CN=Test CA\" expired at ");
    free(c);
    free(k);
    ct_make_ca("ec:P-256", 3600, 7200, "critical,CA:TRUE", "critical,keyCertSign", &c, &k);
    assert_null(ca_bundle_from_pem(c, "ca-cert.pem", k, "ca-key.pem", NULL, NULL, c, "root-cert.pem", err, sizeof err));
    ct_assert_has(err, "is not valid before");
    free(c);
    free(k);
    /* a valid generated CA loads */
    ct_make_ca("rsa:2048", -60, 3600, "critical,CA:TRUE", "critical,keyCertSign,cRLSign", &c, &k);
    ca_bundle_t *b = ca_bundle_from_pem(c, "ca-cert.pem", k, "ca-key.pem", NULL, NULL, c, "root-cert.pem", err,
                                        sizeof err);
    if (!b)
        fail_msg("%s", err);
    ca_bundle_release(b);
    free(c);
    free(k);
}

static void test_several_roots(void **state)
{
    (void)state;
    char *r1 = ct_pki(ML "root-cert.pem"), *r2 = ct_pki("spiffe-root-cert-1.pem");
    char *roots = malloc(strlen(r1) + strlen(r2) + 1);
    strcpy(roots, r2);
    strcat(roots, r1);
    char *c = ct_pki(ML "int-cert.pem"), *k = ct_pki(ML "int-key.pem"), err[1024];
    ca_bundle_t *b = ca_bundle_from_pem(c, "ca-cert.pem", k, "ca-key.pem", NULL, NULL, roots, "root-cert.pem", err,
                                        sizeof err);
    if (!b)
        fail_msg("%s", err);
    /* both roots are published; the served chain ends at the one that signs */
    assert_int_equal(ca_bundle_chain_len(b), 2);
    char *pub = strdup(ca_bundle_root_pem(b));
    assert_non_null(strstr(pub, "-----END CERTIFICATE-----\n-----BEGIN CERTIFICATE-----"));
    free(pub);
    ca_bundle_release(b);
    free(r1);
    free(r2);
    free(roots);
    free(c);
    free(k);
}

static void test_directory_errors(void **state)
{
    (void)state;
    char *dir = ct_tmpdir(), path[512], err[1024];
    assert_null(ca_bundle_load_dir(dir, err, sizeof err));
    ct_assert_has(err, "/ca-cert.pem: cannot read: No such file or directory");
    char *c = ct_pki(ML "int-cert.pem");
    snprintf(path, sizeof path, "%s/ca-cert.pem", dir);
    ct_write(path, c, 0644);
    assert_null(ca_bundle_load_dir(dir, err, sizeof err));
    ct_assert_has(err, "/ca-key.pem: cannot read");
    char *k = ct_pki(ML "int-key.pem"), *r = ct_pki(ML "root-cert.pem");
    snprintf(path, sizeof path, "%s/ca-key.pem", dir);
    ct_write(path, k, 0600);
    assert_null(ca_bundle_load_dir(dir, err, sizeof err));
    ct_assert_has(err, "/root-cert.pem: cannot read");
    snprintf(path, sizeof path, "%s/root-cert.pem", dir);
    ct_write(path, "", 0644);
    assert_null(ca_bundle_load_dir(dir, err, sizeof err));
    ct_assert_has(err, "/root-cert.pem: empty");
    ct_write(path, r, 0644);
    ca_bundle_t *b = ca_bundle_load_dir(dir, err, sizeof err); /* cert-chain.pem is optional */
    if (!b)
        fail_msg("%s", err);
    ca_bundle_release(b);
    ct_rmrf(dir);
    free(dir);
    free(c);
    free(k);
    free(r);
}

static void test_self_signed(void **state)
{
    (void)state;
    char err[512];
    for (int kt = CA_KEY_RSA; kt <= CA_KEY_ECDSA; kt++) {
        ca_bundle_t *b = ca_bundle_self_signed("cluster.local", (ca_key_type_t)kt, 0, err, sizeof err);
        assert_non_null(b);
        assert_false(ca_bundle_plugged(b));
        assert_string_equal(ca_bundle_key_desc(b), kt == CA_KEY_RSA ? "RSA 2048" : "ECDSA P-256");
        X509 *x = ct_x509(ca_bundle_root_pem(b));
        char name[256];
        X509_NAME_oneline(X509_get_subject_name(x), name, sizeof name);
        assert_string_equal(name, "/O=cluster.local");
        assert_int_equal(X509_check_ca(x), 1);
        assert_true(X509_get_key_usage(x) & KU_KEY_CERT_SIGN);
        /* ten years */
        int days = 0, secs = 0;
        ASN1_TIME_diff(&days, &secs, X509_get0_notBefore(x), X509_get0_notAfter(x));
        assert_in_range(days, 3649, 3651);
        /* it loads back as plug-in material would */
        char *key = ca_bundle_key_pem(b);
        ca_bundle_t *b2 = ca_bundle_from_pem(ca_bundle_cert_pem(b), "c", key, "k", NULL, NULL, ca_bundle_root_pem(b),
                                             "r", err, sizeof err);
        assert_non_null(b2);
        ca_bundle_release(b2);
        ca_free_secret(key);
        X509_free(x);
        ca_bundle_release(b);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_multilevel_rsa),     cmocka_unit_test(test_multilevel_ecc),
        cmocka_unit_test(test_single_level_roots), cmocka_unit_test(test_istio_layout_directory),
        cmocka_unit_test(test_mismatched_keys),    cmocka_unit_test(test_chain_does_not_verify),
        cmocka_unit_test(test_unparseable_inputs), cmocka_unit_test(test_not_a_ca),
        cmocka_unit_test(test_validity),           cmocka_unit_test(test_several_roots),
        cmocka_unit_test(test_directory_errors),   cmocka_unit_test(test_self_signed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
