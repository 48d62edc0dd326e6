/*
 * The CA against a real API server (envtest with controllers): the
 * istio-ca-secret is created once and reused (and restored when deleted),
 * the cacerts plug-in Secret wins and is checked, TokenReview authenticates
 * service-account tokens with audience istio-ca (cached), the root ConfigMap
 * reaches namespaces and is repaired, and a workload gets a certificate
 * through the gRPC endpoint with its real token.
 */
#include <pthread.h>
#include <stdarg.h>
#include <time.h>

#include "../../ca/ca.h"
#include "../../common/caclient.h"
#include "../../common/grpc.h"
#include "../../common/workq.h"
#include "../../controlplane/kube.h"
#include "../envtest.h"
#include "ca_test.h"

static tu_envtest_t env;
static kube_client_t *kc;
static char *tmp;

static int group_setup(void **state)
{
    (void)state;
    if (tu_envtest_start(&env, true) != 0)
        return -1;
    char err[512];
    kube_opts_t o = {.kubeconfig = env.kubeconfig};
    kc = kube_client_new(&o, err, sizeof err);
    if (!kc) {
        print_error("kube client: %s\n", err);
        return -1;
    }
    tmp = ct_tmpdir();
    if (tu_envtest_kubectl(&env, "create namespace istio-system") != 0 ||
        tu_envtest_kubectl(&env, "create namespace foo") != 0 ||
        tu_envtest_kubectl(&env, "create serviceaccount bar -n foo") != 0) {
        print_error("%s\n", env.out);
        return -1;
    }
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    kube_client_free(kc);
    tu_envtest_stop(&env);
    if (tmp) {
        ct_rmrf(tmp);
        free(tmp);
    }
    return 0;
}

static ca_t *kube_ca(char *err, size_t errlen)
{
    ca_opts_t o = {.kube = kc, .ns = "istio-system", .reload_interval_ms = -1};
    return ca_new(&o, err, errlen);
}

/* kubectl output, trimmed; the caller frees it. */
static char *kget(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *kget(const char *fmt, ...)
{
    char cmd[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    if (tu_envtest_kubectl(&env, "%s", cmd) != 0)
        return NULL;
    char *s = strdup(env.out);
    size_t n = strlen(s);
    while (n && (s[n - 1] == '\n' || s[n - 1] == ' '))
        s[--n] = 0;
    return s;
}

static char *token_for(const char *ns, const char *sa, const char *aud)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "create token %s -n %s --audience %s --duration 1h", sa, ns, aud);
    if (tu_envtest_kubectl(&env, "%s", cmd) != 0)
        fail_msg("kubectl %s: %s", cmd, env.out);
    char *s = strdup(env.out);
    s[strcspn(s, "\n")] = 0;
    return s;
}

static void test_self_signed_secret(void **state)
{
    (void)state;
    char err[1024];
    ca_t *ca = kube_ca(err, sizeof err);
    if (!ca)
        fail_msg("%s", err);
    char *root = ca_root_pem(ca);
    char *type = kget("get secret %s -n %s -o jsonpath={.type}", "istio-ca-secret", "istio-system");
    assert_non_null(type);
    assert_string_equal(type, "istio.io/ca-root");
    free(type);
    kube_secret_t s;
    assert_int_equal(kube_secret_get(kc, "istio-system", "istio-ca-secret", &s, err, sizeof err), 0);
    assert_non_null(kube_secret_value(&s, "ca-key.pem", NULL));
    assert_string_equal((const char *)kube_secret_value(&s, "ca-cert.pem", NULL), root);
    kube_secret_free(&s);
    ca_free(ca);

    /* a restart (or another replica) reuses the root */
    ca = kube_ca(err, sizeof err);
    assert_non_null(ca);
    char *root2 = ca_root_pem(ca);
    assert_string_equal(root, root2);
    free(root2);
    /* the secret deleted behind the CA's back: put back with the same root */
    assert_int_equal(tu_envtest_kubectl(&env, "delete secret istio-ca-secret -n istio-system"), 0);
    bool changed = true;
    assert_int_equal(ca_reload(ca, &changed, err, sizeof err), 0);
    assert_false(changed);
    assert_int_equal(kube_secret_get(kc, "istio-system", "istio-ca-secret", &s, err, sizeof err), 0);
    assert_string_equal((const char *)kube_secret_value(&s, "ca-cert.pem", NULL), root);
    kube_secret_free(&s);
    free(root);
    ca_free(ca);
}

static void create_cacerts(const char *cert, const char *key, const char *chain, const char *root)
{
    char cmd[4096];
    const char *src[4] = {cert, key, chain, root};
    const char *dst[4] = {"ca-cert.pem", "ca-key.pem", "cert-chain.pem", "root-cert.pem"};
    int off = snprintf(cmd, sizeof cmd, "create secret generic cacerts -n istio-system");
    for (int i = 0; i < 4; i++) {
        char rel[200];
        snprintf(rel, sizeof rel, CT_PKI "multilevelpki/%s", src[i]);
        off += snprintf(cmd + off, sizeof cmd - (size_t)off, " --from-file=%s=%s", dst[i], tu_shared(rel));
    }
    tu_envtest_kubectl(&env, "delete secret cacerts -n istio-system --ignore-not-found");
    if (tu_envtest_kubectl(&env, "%s", cmd) != 0)
        fail_msg("kubectl: %s", env.out);
}

static void test_cacerts_secret(void **state)
{
    (void)state;
    char err[1024];
    ca_t *ca = kube_ca(err, sizeof err);
    assert_non_null(ca);
    ca_bundle_t *b = ca_bundle_get(ca);
    assert_false(ca_bundle_plugged(b));
    ca_bundle_release(b);

    /* the operator plugs in a CA: picked up without restart */
    create_cacerts("int-cert.pem", "int-key.pem", "int-cert-chain.pem", "root-cert.pem");
    bool changed = false;
    if (ca_reload(ca, &changed, err, sizeof err) != 0)
        fail_msg("%s", err);
    assert_true(changed);
    b = ca_bundle_get(ca);
    assert_true(ca_bundle_plugged(b));
    assert_int_equal(ca_bundle_chain_len(b), 2);
    ct_assert_has(ca_bundle_source(b), "plug-in CA from secret istio-system/cacerts");
    ca_bundle_release(b);
    char *csr = ct_csr("ec:P-256", "URI:spiffe://cluster.local/ns/foo/sa/bar");
    ca_chain_t ch;
    assert_int_equal(ca_sign_csr(ca, csr, strlen(csr), "spiffe://cluster.local/ns/foo/sa/bar", 600, &ch, err,
                                 sizeof err),
                     0);
    assert_int_equal(ch.n, 3);
    ca_chain_free(&ch);
    free(csr);

    /* a broken plug-in: the running CA keeps its material, a new one refuses to start */
    create_cacerts("int-cert.pem", "int2-key.pem", "int-cert-chain.pem", "root-cert.pem");
    assert_int_equal(ca_reload(ca, &changed, err, sizeof err), -1);
    ct_assert_has(err, "secret istio-system/cacerts key ca-key.pem does not match the certificate in secret "
                       "istio-system/cacerts key ca-cert.pem");
    ca_free(ca);
    assert_null(kube_ca(err, sizeof err));
    ct_assert_has(err, "does not match");
    assert_int_equal(tu_envtest_kubectl(&env, "delete secret cacerts -n istio-system"), 0);
}

static void test_token_review(void **state)
{
    (void)state;
    char err[1024], hdr[4096];
    ca_authn_opts_t o = {.kube = kc};
    ca_authn_t *a = ca_authn_new(&o, err, sizeof err);
    assert_non_null(a);
    char *tok = token_for("foo", "bar", "istio-ca");
    snprintf(hdr, sizeof hdr, "Bearer %s", tok);
    ca_caller_t c;
    if (ca_authn_check(a, hdr, &c, err, sizeof err) != 0)
        fail_msg("%s", err);
    assert_string_equal(c.identity, "spiffe://cluster.local/ns/foo/sa/bar");
    assert_true(c.expires > (int64_t)time(NULL) + 3000);
    assert_int_equal(ca_authn_cache_size(a), 1);
    assert_int_equal(ca_authn_check(a, hdr, &c, err, sizeof err), 0);
    assert_int_equal(ca_authn_cache_size(a), 1);
    /* another audience, and garbage */
    char *other = token_for("foo", "bar", "vault");
    snprintf(hdr, sizeof hdr, "Bearer %s", other);
    assert_int_equal(ca_authn_check(a, hdr, &c, err, sizeof err), CA_EAUTH);
    ct_assert_has(err, "the API server rejected the token");
    assert_int_equal(ca_authn_check(a, "Bearer not.a.token", &c, err, sizeof err), CA_EAUTH);
    assert_int_equal(ca_authn_cache_size(a), 1);
    free(other);
    free(tok);
    ca_authn_free(a);
}

static cfg_object_t *obj_of(const char *yaml, tu_result_t *r)
{
    tu_load(yaml, NULL, r);
    TU_EXPECT_OK(r);
    assert_int_equal(r->nobjs, 1);
    return r->objs[0];
}

static char *cm_root(const char *ns)
{
    return kget("get configmap istio-ca-root-cert -n %s -o jsonpath='{.data.root-cert\\.pem}'", ns);
}

static void test_root_configmaps(void **state)
{
    (void)state;
    char err[1024];
    ca_t *ca = kube_ca(err, sizeof err);
    assert_non_null(ca);
    char *root = ca_root_pem(ca);
    size_t rl = strlen(root);
    while (rl && root[rl - 1] == '\n')
        root[--rl] = 0;

    assert_int_equal(ca_publish_root(ca, kc, "foo", err, sizeof err), 0);
    char *got = cm_root("foo");
    assert_non_null(got);
    assert_string_equal(got, root);
    free(got);
    char *label = kget("get configmap istio-ca-root-cert -n %s -o jsonpath='{.metadata.labels.istio\\.io/config}'",
                       "foo");
    assert_string_equal(label, "true");
    free(label);

    /* a new namespace */
    assert_int_equal(tu_envtest_kubectl(&env, "create namespace newns"), 0);
    tu_result_t r;
    cfg_object_t *ns = obj_of("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: newns\n", &r);
    cfg_event_t ev = {.type = CFG_EVENT_ADD, .kind = CFG_Namespace, .new = ns};
    ca_on_store_event(ca, &ev);
    assert_int_equal(ca_wait_idle(ca, 20000), 0);
    got = cm_root("newns");
    assert_non_null(got);
    assert_string_equal(got, root);
    free(got);
    tu_free(&r);

    /* edited: repaired */
    assert_int_equal(tu_envtest_kubectl(&env, "patch configmap istio-ca-root-cert -n newns --type merge -p '"
                                              "{\"data\":{\"root-cert.pem\":\"tampered\"}}'"),
                     0);
    cfg_object_t *cm = obj_of("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: istio-ca-root-cert\n  namespace: "
                              "newns\ndata:\n  root-cert.pem: tampered\n",
                              &r);
    cfg_event_t up = {.type = CFG_EVENT_UPDATE, .kind = CFG_ConfigMap, .old = cm, .new = cm};
    ca_on_store_event(ca, &up);
    assert_int_equal(ca_wait_idle(ca, 20000), 0);
    got = cm_root("newns");
    assert_string_equal(got, root);
    free(got);
    /* deleted: created again */
    assert_int_equal(tu_envtest_kubectl(&env, "delete configmap istio-ca-root-cert -n newns"), 0);
    cfg_event_t del = {.type = CFG_EVENT_DELETE, .kind = CFG_ConfigMap, .old = cm};
    ca_on_store_event(ca, &del);
    assert_int_equal(ca_wait_idle(ca, 20000), 0);
    got = cm_root("newns");
    assert_non_null(got);
    assert_string_equal(got, root);
    free(got);
    tu_free(&r);
    /* an untouched copy causes no work */
    ca_stats_t st0, st1;
    ca_get_stats(ca, &st0);
    char yaml[8192];
    snprintf(yaml, sizeof yaml,
             "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: istio-ca-root-cert\n  namespace: newns\ndata:\n"
             "  root-cert.pem: |\n");
    char *copy = strdup(root);
    for (char *line = strtok(copy, "\n"); line; line = strtok(NULL, "\n"))
        snprintf(yaml + strlen(yaml), sizeof yaml - strlen(yaml), "    %s\n", line);
    free(copy);
    cm = obj_of(yaml, &r);
    cfg_event_t same = {.type = CFG_EVENT_UPDATE, .kind = CFG_ConfigMap, .old = cm, .new = cm};
    ca_on_store_event(ca, &same);
    assert_int_equal(ca_wait_idle(ca, 20000), 0);
    ca_get_stats(ca, &st1);
    assert_int_equal(st1.published, st0.published);
    tu_free(&r);

    /* every namespace */
    ca_publish_all(ca);
    assert_int_equal(ca_wait_idle(ca, 30000), 0);
    got = cm_root("kube-system");
    assert_non_null(got);
    assert_string_equal(got, root);
    free(got);
    free(root);
    ca_free(ca);
}

static void *loop_thread(void *arg)
{
    loop_run(arg);
    return NULL;
}

static void stop_srv(void *arg)
{
    void **a = arg;
    grpc_server_free(a[0]);
    loop_stop(a[1]);
}

static void test_grpc_with_token_review(void **state)
{
    (void)state;
    char err[1024];
    ca_t *ca = kube_ca(err, sizeof err);
    assert_non_null(ca);
    ca_authn_opts_t ao = {.kube = kc};
    ca_authn_t *a = ca_authn_new(&ao, err, sizeof err);
    ca_serving_t *sv = ca_serving_new(ca, NULL, 0, 0, err, sizeof err);
    assert_non_null(sv);
    loop_t *loop = loop_new();
    workq_t *wq = workq_new(2);
    grpc_server_opts_t so = {.listen = "127.0.0.1:0", .tls = ca_serving_tls(sv)};
    grpc_server_t *srv = grpc_server_new(loop, &so, err, sizeof err);
    assert_non_null(srv);
    ca_service_t *svc = ca_service_new(ca, a, wq, srv, err, sizeof err);
    assert_non_null(svc);
    pthread_t t;
    pthread_create(&t, NULL, loop_thread, loop);

    char addr[64], tokfile[600];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", grpc_server_port(srv));
    snprintf(tokfile, sizeof tokfile, "%s/token", tmp);
    char *tok = token_for("foo", "bar", "istio-ca");
    ct_write(tokfile, tok, 0600);
    char *root = ca_root_pem(ca);
    caclient_opts_t o = {.addr = addr, .root_pem = root, .token_file = tokfile, .key_type = CACLIENT_ECDSA,
                         .ttl_s = 3600, .timeout_ms = 20000};
    caclient_cert_t c;
    if (caclient_fetch(&o, &c, err, sizeof err) != 0)
        fail_msg("%s", err);
    assert_string_equal(c.identity, "spiffe://cluster.local/ns/foo/sa/bar");
    char out[4096];
    assert_int_equal(ct_openssl_verify(root, c.chain, c.nchain, out, sizeof out), 0);
    caclient_cert_free(&c);
    /* the token of foo/bar cannot get default/default */
    o.ns = "default";
    o.sa = "default";
    assert_int_equal(caclient_fetch(&o, &c, err, sizeof err), GRPC_PERMISSION_DENIED);
    free(tok);
    free(root);

    void *args[2] = {srv, loop};
    loop_post(loop, stop_srv, args);
    pthread_join(t, NULL);
    workq_free(wq);
    loop_run_once(loop, 0);
    ca_service_free(svc);
    loop_free(loop);
    ca_serving_free(sv);
    ca_authn_free(a);
    ca_free(ca);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_self_signed_secret),
        cmocka_unit_test(test_cacerts_secret),
        cmocka_unit_test(test_token_review),
        cmocka_unit_test(test_root_configmaps),
        cmocka_unit_test(test_grpc_with_token_review),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
