/*
 * The Kubernetes API client against a real API server (envtest): finding the
 * cluster from kubeconfig variants and in-cluster files, the errors a user
 * reads when something is wrong, token rotation, and discovery.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "../../controlplane/kube.h"
#include "../envtest.h"
#include "../testutil.h"

static tu_envtest_t env;
static char dir[PATH_MAX + 8]; /* scratch files of this test binary */

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "wb");
    if (f == NULL)
        fail_msg("cannot write %s: %s", path, strerror(errno));
    fputs(text, f);
    fclose(f);
}

/* Replaces a file the way the kubelet rotates projected tokens: a new inode. */
static void replace_file(const char *path, const char *text)
{
    char tmp[PATH_MAX + 8];
    snprintf(tmp, sizeof(tmp), "%s.new", path);
    write_file(tmp, text);
    if (rename(tmp, path) != 0)
        fail_msg("rename %s: %s", path, strerror(errno));
}

static char *read_all(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        fail_msg("cannot read %s: %s", path, strerror(errno));
    static char bufs[4][16384];
    static int slot;
    char *b = bufs[slot++ % 4];
    size_t n = fread(b, 1, sizeof(bufs[0]) - 1, f);
    b[n] = '\0';
    fclose(f);
    return b;
}

static char *b64_file(const char *path)
{
    const char *s = read_all(path);
    size_t n = strlen(s);
    char *out = malloc(4 * ((n + 2) / 3) + 1);
    assert_non_null(out);
    EVP_EncodeBlock((unsigned char *)out, (const unsigned char *)s, (int)n);
    return out;
}

static const char *pki(const char *name)
{
    static char bufs[4][PATH_MAX + 64];
    static int slot;
    char *b = bufs[slot++ % 4];
    snprintf(b, sizeof(bufs[0]), "%s/%s", env.pki_dir, name);
    return b;
}

static const char *scratch(const char *name)
{
    static char bufs[4][PATH_MAX + 64];
    static int slot;
    char *b = bufs[slot++ % 4];
    snprintf(b, sizeof(bufs[0]), "%s/%s", dir, name);
    return b;
}

/* Writes a kubeconfig with one cluster, user and context. */
static const char *kubeconfig(const char *name, const char *cluster_body, const char *user_body,
                              const char *ns)
{
    char text[32768];
    snprintf(text, sizeof(text),
             "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n%s\nusers:\n- name: "
             "u\n  user:\n%s\n"
             "contexts:\n- name: ctx\n  context: {cluster: c, user: u%s%s}\ncurrent-context: ctx\n",
             cluster_body, user_body, ns ? ", namespace: " : "", ns ? ns : "");
    const char *p = scratch(name);
    write_file(p, text);
    return p;
}

static kube_client_t *client_for(const char *path, const char *context)
{
    char err[512] = "";
    kube_opts_t o = {.kubeconfig = path, .context = context};
    kube_client_t *c = kube_client_new(&o, err, sizeof(err));
    if (c == NULL)
        fail_msg("kube_client_new(%s): %s", path, err);
    return c;
}

static void expect_new_fails(const char *path, const char *context, const char *s1, const char *s2)
{
    char err[512] = "";
    kube_opts_t o = {.kubeconfig = path, .context = context};
    kube_client_t *c = kube_client_new(&o, err, sizeof(err));
    if (c != NULL) {
        kube_client_free(c);
        fail_msg("kube_client_new(%s) succeeded; expected an error with \"%s\"",
                 path ? path : "(default)", s1);
    }
    if (strstr(err, s1) == NULL || (s2 != NULL && strstr(err, s2) == NULL))
        fail_msg("error \"%s\" lacks \"%s\" / \"%s\"", err, s1, s2 ? s2 : "");
}

/* GET on a namespace every server has; asserts a 200. */
static void expect_ok(kube_client_t *c)
{
    kube_resp_t r;
    int rc = kube_request(c, "GET", "/api/v1/namespaces/default", NULL, NULL, &r);
    if (rc != 0 || r.status != 200)
        fail_msg("GET default namespace: rc %d status %ld err \"%s\" body %.200s", rc, r.status,
                 r.err, r.body ? r.body : "");
    assert_non_null(strstr(r.body, "\"name\":\"default\""));
    kube_resp_free(&r);
}

static void clear_env(void)
{
    unsetenv("KUBECONFIG");
    unsetenv("KUBERNETES_SERVICE_HOST");
    unsetenv("KUBERNETES_SERVICE_PORT");
    unsetenv(KUBE_SA_DIR_ENV);
    setenv("HOME", scratch("emptyhome"), 1);
}

static int group_setup(void **state)
{
    (void)state;
    if (tu_envtest_start(&env, false) != 0)
        return -1;
    snprintf(dir, sizeof(dir), "%s/t", env.run_dir);
    mkdir(dir, 0700);
    mkdir(scratch("emptyhome"), 0700);
    mkdir(scratch("certs"), 0700);
    clear_env();
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    tu_envtest_stop(&env);
    return 0;
}

static int each_setup(void **state)
{
    (void)state;
    clear_env();
    return 0;
}

/* Kubeconfig variants */

static void test_admin_kubeconfig(void **state)
{
    (void)state;
    kube_client_t *c = client_for(env.kubeconfig, NULL);
    assert_string_equal(kube_client_server(c), env.server);
    assert_string_equal(kube_client_namespace(c), "default");
    assert_string_equal(kube_client_source(c), env.kubeconfig);
    expect_ok(c);
    kube_client_free(c);
}

static void test_token_and_ca_data(void **state)
{
    (void)state;
    char cl[8192], us[512];
    char *ca = b64_file(pki("ca.crt"));
    snprintf(cl, sizeof(cl), "    server: %s\n    certificate-authority-data: %s", env.server, ca);
    snprintf(us, sizeof(us), "    token: \"%s\"", env.token);
    kube_client_t *c = client_for(kubeconfig("cadata.yaml", cl, us, "team-a"), NULL);
    assert_string_equal(kube_client_namespace(c), "team-a");
    expect_ok(c);
    kube_client_free(c);
    free(ca);
}

static void test_client_cert_files_relative(void **state)
{
    (void)state;
    char cmd[4 * PATH_MAX];
    snprintf(cmd, sizeof(cmd), "cp '%s' '%s' '%s' '%s/certs/'", pki("admin.crt"), pki("admin.key"),
             pki("ca.crt"), dir);
    assert_int_equal(system(cmd), 0);
    char cl[1024];
    snprintf(cl, sizeof(cl), "    server: %s\n    certificate-authority: certs/ca.crt", env.server);
    const char *us = "    client-certificate: certs/admin.crt\n    client-key: ./certs/admin.key";
    /* the process runs elsewhere: paths are relative to the kubeconfig */
    kube_client_t *c = client_for(kubeconfig("certfiles.yaml", cl, us, NULL), NULL);
    expect_ok(c);
    kube_client_free(c);
}

static void test_client_cert_data(void **state)
{
    (void)state;
    char *ca = b64_file(pki("ca.crt")), *crt = b64_file(pki("admin.crt")),
         *key = b64_file(pki("admin.key"));
    char cl[8192], us[16384];
    snprintf(cl, sizeof(cl), "    server: %s\n    certificate-authority-data: %s", env.server, ca);
    snprintf(us, sizeof(us), "    client-certificate-data: %s\n    client-key-data: %s", crt, key);
    kube_client_t *c = client_for(kubeconfig("certdata.yaml", cl, us, NULL), NULL);
    expect_ok(c);
    kube_client_free(c);
    free(ca);
    free(crt);
    free(key);
}

static void test_insecure_skip_verify(void **state)
{
    (void)state;
    char cl[512], us[512];
    snprintf(cl, sizeof(cl), "    server: %s\n    insecure-skip-tls-verify: true", env.server);
    snprintf(us, sizeof(us), "    token: \"%s\"", env.token);
    kube_client_t *c = client_for(kubeconfig("insecure.yaml", cl, us, NULL), NULL);
    expect_ok(c);
    kube_client_free(c);
}

static void test_current_vs_explicit_context(void **state)
{
    (void)state;
    char text[4096];
    snprintf(text, sizeof(text),
             "apiVersion: v1\nkind: Config\n"
             "clusters:\n"
             "- name: real\n  cluster: {server: \"%s\", certificate-authority: \"%s\"}\n"
             "- name: gone\n  cluster: {server: \"https://127.0.0.1:1\", certificate-authority: "
             "\"%s\"}\n"
             "users:\n- name: admin\n  user: {token: \"%s\"}\n"
             "contexts:\n"
             "- name: broken\n  context: {cluster: gone, user: admin}\n"
             "- name: working\n  context: {cluster: real, user: admin, namespace: mesh-system}\n"
             "current-context: broken\n",
             env.server, pki("ca.crt"), pki("ca.crt"), env.token);
    const char *p = scratch("contexts.yaml");
    write_file(p, text);

    kube_client_t *c = client_for(p, NULL);
    assert_string_equal(kube_client_server(c), "https://127.0.0.1:1");
    kube_resp_t r;
    assert_int_equal(kube_request(c, "GET", "/api", NULL, NULL, &r), -1);
    assert_int_equal(r.status, 0);
    assert_non_null(strstr(r.err, "cannot connect to https://127.0.0.1:1"));
    kube_resp_free(&r);
    kube_client_free(c);

    c = client_for(p, "working");
    assert_string_equal(kube_client_namespace(c), "mesh-system");
    expect_ok(c);
    kube_client_free(c);

    expect_new_fails(p, "nope", "context \"nope\" not found", p);
}

static void test_broken_kubeconfigs(void **state)
{
    (void)state;
    char cl[1024], us[512];
    snprintf(us, sizeof(us), "    token: \"%s\"", env.token);

    expect_new_fails(scratch("missing.yaml"), NULL, "cannot read kubeconfig", "No such file");

    const char *p = scratch("broken.yaml");
    write_file(p, "apiVersion: v1\nclusters: [\n  - {name: x\n");
    expect_new_fails(p, NULL, "kubeconfig", "line");

    write_file(p, "apiVersion: v1\nkind: Config\nclusters: []\n");
    expect_new_fails(p, NULL, "no current-context", NULL);

    snprintf(cl, sizeof(cl), "    server: %s\n    certificate-authority: nowhere/ca.crt",
             env.server);
    expect_new_fails(kubeconfig("noca.yaml", cl, us, NULL), NULL,
                     "cannot read certificate-authority file", "nowhere/ca.crt");

    snprintf(cl, sizeof(cl), "    server: %s\n    certificate-authority-data: \"!!notbase64!!\"",
             env.server);
    expect_new_fails(kubeconfig("badcadata.yaml", cl, us, NULL), NULL, "certificate-authority-data",
                     "not valid base64");

    snprintf(cl, sizeof(cl), "    server: %s\n    certificate-authority: %s", env.server,
             pki("ca.key"));
    expect_new_fails(kubeconfig("keyasca.yaml", cl, us, NULL), NULL, "certificate authority",
                     "no PEM certificate");

    snprintf(cl, sizeof(cl), "    server: %s\n    certificate-authority: %s", env.server,
             pki("ca.crt"));
    expect_new_fails(kubeconfig("nocreds.yaml", cl, "    {}", NULL), NULL,
                     "user \"u\" has no credentials", NULL);
    expect_new_fails(
        kubeconfig("exec.yaml", cl, "    exec: {command: get-token, apiVersion: x}", NULL), NULL,
        "user \"u\"", "exec credential plugin");

    char us2[1024];
    snprintf(us2, sizeof(us2), "    client-certificate: %s", pki("admin.crt"));
    expect_new_fails(kubeconfig("certnokey.yaml", cl, us2, NULL), NULL,
                     "client certificate but no client key", NULL);
    snprintf(us2, sizeof(us2), "    client-certificate: %s\n    client-key: %s", pki("admin.crt"),
             pki("webhook.key"));
    expect_new_fails(kubeconfig("mismatch.yaml", cl, us2, NULL), NULL, "do not match", NULL);

    snprintf(us2, sizeof(us2), "    tokenFile: tokens/absent");
    expect_new_fails(kubeconfig("notokenfile.yaml", cl, us2, NULL), NULL, "cannot read token file",
                     "tokens/absent");

    write_file(p, "apiVersion: v1\nkind: Config\ncurrent-context: a\n"
                  "contexts:\n- name: a\n  context: {cluster: c1, user: u1}\n");
    expect_new_fails(p, NULL, "cluster \"c1\"", "not found");

    snprintf(cl, sizeof(cl), "    server: ftp://example\n");
    expect_new_fails(kubeconfig("ftp.yaml", cl, us, NULL), NULL, "cluster \"c\"",
                     "not an http(s) URL");
}

static void test_kubeconfig_resolution(void **state)
{
    (void)state;
    /* $KUBECONFIG: the first file of the list that exists */
    char list[3 * PATH_MAX];
    snprintf(list, sizeof(list), "%s:%s", scratch("absent.yaml"), env.kubeconfig);
    setenv("KUBECONFIG", list, 1);
    kube_client_t *c = client_for(NULL, NULL);
    assert_string_equal(kube_client_source(c), env.kubeconfig);
    kube_client_free(c);
    unsetenv("KUBECONFIG");

    /* ~/.kube/config */
    mkdir(scratch("home"), 0700);
    mkdir(scratch("home/.kube"), 0700);
    char cmd[3 * PATH_MAX];
    snprintf(cmd, sizeof(cmd), "cp '%s' '%s'", env.kubeconfig, scratch("home/.kube/config"));
    assert_int_equal(system(cmd), 0);
    setenv("HOME", scratch("home"), 1);
    c = client_for(NULL, NULL);
    assert_non_null(strstr(kube_client_source(c), "home/.kube/config"));
    expect_ok(c);
    kube_client_free(c);

    /* nothing at all */
    setenv("HOME", scratch("emptyhome"), 1);
    expect_new_fails(NULL, NULL, "no kubeconfig found", "KUBERNETES_SERVICE_HOST is not set");
}

static void test_in_cluster(void **state)
{
    (void)state;
    const char *sa = scratch("sa");
    mkdir(sa, 0700);
    char p[PATH_MAX + 32];
    snprintf(p, sizeof(p), "%s/token", sa);
    char tok[200];
    snprintf(tok, sizeof(tok), "%s\n", env.token);
    write_file(p, tok);
    snprintf(p, sizeof(p), "%s/namespace", sa);
    write_file(p, "mesh-system");
    setenv(KUBE_SA_DIR_ENV, sa, 1);
    setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1", 1);
    char port[16];
    snprintf(port, sizeof(port), "%d", env.apiserver_port);
    setenv("KUBERNETES_SERVICE_PORT", port, 1);

    expect_new_fails(NULL, NULL, "in-cluster configuration: cannot read CA file", "ca.crt");

    snprintf(p, sizeof(p), "%s/ca.crt", sa);
    write_file(p, read_all(pki("ca.crt")));
    kube_client_t *c = client_for(NULL, NULL);
    assert_string_equal(kube_client_source(c), "in-cluster");
    assert_string_equal(kube_client_namespace(c), "mesh-system");
    assert_string_equal(kube_client_server(c), env.server);
    expect_ok(c);
    kube_client_free(c);
}

/* Errors a user reads */

static void test_unreachable_server(void **state)
{
    (void)state;
    char cl[1024], us[512];
    /* the discard port: privileged, nothing listens on it here */
    snprintf(cl, sizeof(cl), "    server: https://127.0.0.1:9\n    certificate-authority: %s",
             pki("ca.crt"));
    snprintf(us, sizeof(us), "    token: \"%s\"", env.token);
    kube_client_t *c = client_for(kubeconfig("unreachable.yaml", cl, us, NULL), NULL);
    kube_resp_t r;
    assert_int_equal(kube_request(c, "GET", "/api/v1/namespaces", NULL, NULL, &r), -1);
    assert_int_equal(r.status, 0);
    assert_string_equal(r.err, "cannot connect to https://127.0.0.1:9: Connection refused");
    char msg[512];
    assert_string_equal(kube_status_message(&r, "list", "namespaces", msg, sizeof(msg)), r.err);
    kube_resp_free(&r);
    kube_client_free(c);
}

static void test_wrong_ca(void **state)
{
    (void)state;
    char cmd[4 * PATH_MAX];
    snprintf(cmd, sizeof(cmd),
             "openssl req -x509 -newkey rsa:2048 -nodes -keyout '%s' -out '%s' -subj /CN=other-ca "
             "-days 1 "
             ">/dev/null 2>&1",
             scratch("other.key"), scratch("other.crt"));
    assert_int_equal(system(cmd), 0);
    char cl[1024], us[512];
    snprintf(cl, sizeof(cl), "    server: %s\n    certificate-authority: %s", env.server,
             scratch("other.crt"));
    snprintf(us, sizeof(us), "    token: \"%s\"", env.token);
    kube_client_t *c = client_for(kubeconfig("wrongca.yaml", cl, us, NULL), NULL);
    kube_resp_t r;
    assert_int_equal(kube_request(c, "GET", "/api", NULL, NULL, &r), -1);
    assert_int_equal(r.status, 0);
    if (strncmp(r.err, "TLS: certificate verify failed", 30) != 0 ||
        strstr(r.err, env.server) == NULL)
        fail_msg("unexpected error: %s", r.err);
    kube_resp_free(&r);
    kube_client_free(c);
}

static void test_wrong_token_401(void **state)
{
    (void)state;
    char cl[1024];
    snprintf(cl, sizeof(cl), "    server: %s\n    certificate-authority: %s", env.server,
             pki("ca.crt"));
    kube_client_t *c =
        client_for(kubeconfig("wrongtoken.yaml", cl, "    token: not-a-valid-token", NULL), NULL);
    kube_resp_t r;
    assert_int_equal(kube_request(c, "GET", "/api/v1/namespaces", NULL, NULL, &r), 0);
    assert_int_equal(r.status, 401);
    char msg[512];
    kube_status_message(&r, "list", "namespaces", msg, sizeof(msg));
    if (strncmp(msg, "unauthorized: the token was rejected", 36) != 0)
        fail_msg("unexpected message: %s", msg);
    kube_resp_free(&r);
    kube_client_free(c);
}

/* A token for ServiceAccount ns/name from the TokenRequest API. */
static char *request_token(kube_client_t *admin, const char *ns, const char *name)
{
    char path[512];
    snprintf(path, sizeof(path), "/api/v1/namespaces/%s/serviceaccounts/%s/token", ns, name);
    kube_resp_t r;
    const char *body = "{\"apiVersion\":\"authentication.k8s.io/v1\",\"kind\":\"TokenRequest\","
                       "\"spec\":{\"expirationSeconds\":3600}}";
    assert_int_equal(kube_request(admin, "POST", path, body, "application/json", &r), 0);
    if (r.status != 201)
        fail_msg("TokenRequest: HTTP %ld %s", r.status, r.body ? r.body : "");
    const char *t = strstr(r.body, "\"token\":\"");
    assert_non_null(t);
    t += 9;
    char *tok = strndup(t, strcspn(t, "\""));
    kube_resp_free(&r);
    return tok;
}

static void test_forbidden_403_names_verb_and_resource(void **state)
{
    (void)state;
    if (tu_envtest_kubectl(&env, "create namespace rbac-test") != 0 ||
        tu_envtest_kubectl(&env, "-n rbac-test create serviceaccount reader") != 0)
        fail_msg("kubectl: %s", env.out);
    kube_client_t *admin = client_for(env.kubeconfig, NULL);
    char *tok = request_token(admin, "rbac-test", "reader");
    kube_client_free(admin);

    char cl[1024], us[4096];
    snprintf(cl, sizeof(cl), "    server: %s\n    certificate-authority: %s", env.server,
             pki("ca.crt"));
    snprintf(us, sizeof(us), "    token: %s", tok);
    kube_client_t *c = client_for(kubeconfig("sa.yaml", cl, us, NULL), NULL);
    kube_resp_t r;
    assert_int_equal(
        kube_request(c, "GET", "/api/v1/namespaces/rbac-test/configmaps", NULL, NULL, &r), 0);
    assert_int_equal(r.status, 403);
    char msg[1024];
    kube_status_message(&r, "list", "configmaps", msg, sizeof(msg));
    if (strncmp(msg, "forbidden: cannot list configmaps in namespace rbac-test", 56) != 0 ||
        strstr(msg, "system:serviceaccount:rbac-test:reader") == NULL)
        fail_msg("unexpected message: %s", msg);
    kube_resp_free(&r);

    assert_int_equal(
        kube_request(c, "GET",
                     "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations", NULL,
                     NULL, &r),
        0);
    assert_int_equal(r.status, 403);
    kube_status_message(&r, "list", "validatingwebhookconfigurations", msg, sizeof(msg));
    if (strncmp(msg, "forbidden: cannot list validatingwebhookconfigurations at cluster scope",
                70) != 0)
        fail_msg("unexpected message: %s", msg);
    kube_resp_free(&r);
    kube_client_free(c);
    free(tok);
}

static void test_status_messages(void **state)
{
    (void)state;
    kube_client_t *c = client_for(env.kubeconfig, NULL);
    kube_resp_t r;
    char msg[512];
    assert_int_equal(
        kube_request(c, "GET", "/api/v1/namespaces/default/configmaps/absent", NULL, NULL, &r), 0);
    assert_int_equal(r.status, 404);
    assert_string_equal(kube_status_message(&r, "get", "configmaps", msg, sizeof(msg)),
                        "not found: configmaps \"absent\" not found");
    kube_resp_free(&r);

    const char *cm =
        "{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":{\"name\":\"twice\"}}";
    assert_int_equal(kube_request(c, "POST", "/api/v1/namespaces/default/configmaps", cm, NULL, &r),
                     0);
    assert_int_equal(r.status, 201);
    kube_resp_free(&r);
    assert_int_equal(kube_request(c, "POST", "/api/v1/namespaces/default/configmaps", cm, NULL, &r),
                     0);
    assert_int_equal(r.status, 409);
    assert_string_equal(kube_status_message(&r, "create", "configmaps", msg, sizeof(msg)),
                        "conflict: configmaps \"twice\" already exists");
    kube_resp_free(&r);

    const char *bad =
        "{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":{\"name\":\"Not_Valid\"}}";
    assert_int_equal(
        kube_request(c, "POST", "/api/v1/namespaces/default/configmaps", bad, NULL, &r), 0);
    assert_int_equal(r.status, 422);
    kube_status_message(&r, "create", "configmaps", msg, sizeof(msg));
    if (strncmp(msg, "invalid: ConfigMap \"Not_Valid\" is invalid", 41) != 0)
        fail_msg("unexpected message: %s", msg);
    kube_resp_free(&r);

    /* a watch from a compacted resourceVersion ends with this Status */
    char gone[] =
        "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"status\":\"Failure\","
        "\"message\":\"too old resource version: 1 (2087)\",\"reason\":\"Expired\",\"code\":410}";
    kube_resp_t g = {.status = 410, .body = gone, .len = sizeof(gone) - 1};
    assert_string_equal(
        kube_status_message(&g, "watch", "configmaps", msg, sizeof(msg)),
        "gone: too old resource version: 1 (2087) (the resourceVersion is too old; list again)");
    kube_client_free(c);
}

static void test_token_file_rotation(void **state)
{
    (void)state;
    mkdir(scratch("tokens"), 0700);
    replace_file(scratch("tokens/current"), "wrong-token\n");
    char cl[1024];
    snprintf(cl, sizeof(cl), "    server: %s\n    certificate-authority: %s", env.server,
             pki("ca.crt"));
    kube_client_t *c =
        client_for(kubeconfig("tokenfile.yaml", cl, "    tokenFile: tokens/current", NULL), NULL);
    kube_resp_t r;
    assert_int_equal(kube_request(c, "GET", "/api/v1/namespaces/default", NULL, NULL, &r), 0);
    assert_int_equal(r.status, 401);
    kube_resp_free(&r);

    /* the valid token is picked up without a new client */
    char tok[200];
    snprintf(tok, sizeof(tok), "%s\n", env.token);
    replace_file(scratch("tokens/current"), tok);
    expect_ok(c);

    /* and a rotation away from it too, within a bounded time (checked at most once a second) */
    replace_file(scratch("tokens/current"), "rotated-to-something-invalid");
    long status = 0;
    time_t start = time(NULL);
    while (time(NULL) - start < 5) {
        assert_int_equal(kube_request(c, "GET", "/api/v1/namespaces/default", NULL, NULL, &r), 0);
        status = r.status;
        kube_resp_free(&r);
        if (status == 401)
            break;
        usleep(200000);
    }
    assert_int_equal(status, 401);
    kube_client_free(c);
}

/* Several threads share one client */

static void *many_requests(void *arg)
{
    kube_client_t *c = arg;
    intptr_t bad = 0;
    for (int i = 0; i < 20; i++) {
        kube_resp_t r;
        if (kube_request(c, "GET", "/api/v1/namespaces/default", NULL, NULL, &r) != 0 ||
            r.status != 200)
            bad++;
        kube_resp_free(&r);
    }
    return (void *)bad;
}

static void test_concurrent_requests(void **state)
{
    (void)state;
    kube_client_t *c = client_for(env.kubeconfig, NULL);
    pthread_t t[6];
    for (int i = 0; i < 6; i++)
        assert_int_equal(pthread_create(&t[i], NULL, many_requests, c), 0);
    intptr_t bad = 0;
    for (int i = 0; i < 6; i++) {
        void *rv;
        pthread_join(t[i], &rv);
        bad += (intptr_t)rv;
    }
    assert_int_equal(bad, 0);
    kube_client_free(c);
}

/* Discovery */

static void test_discovery_and_paths(void **state)
{
    (void)state;
    kube_client_t *c = client_for(env.kubeconfig, NULL);
    assert_int_equal(kube_discover(c), 0);
    assert_string_equal(kube_resource_version(c, "", "pods"), "v1");
    assert_string_equal(kube_resource_version(c, "core", "configmaps"), "v1");
    /* Kubernetes 1.20 serves EndpointSlice only as v1beta1 */
    assert_string_equal(kube_resource_version(c, "discovery.k8s.io", "endpointslices"), "v1beta1");
    assert_string_equal(kube_resource_version(c, "coordination.k8s.io", "leases"), "v1");
    /* served as v1 and v1beta1: v1 wins */
    assert_string_equal(
        kube_resource_version(c, "admissionregistration.k8s.io", "mutatingwebhookconfigurations"),
        "v1");
    assert_null(kube_resource_version(c, "networking.istio.io", "virtualservices"));
    assert_null(kube_resource_version(c, "", "no-such-things"));
    assert_int_equal(kube_resource_namespaced(c, "", "configmaps"), 1);
    assert_int_equal(kube_resource_namespaced(c, "", "namespaces"), 0);
    assert_int_equal(kube_resource_namespaced(c, "networking.istio.io", "gateways"), -1);

    char p[256];
    assert_int_equal(kube_path(c, "", "v1", "configmaps", "x", NULL, "limit=500", p, sizeof(p)), 0);
    assert_string_equal(p, "/api/v1/namespaces/x/configmaps?limit=500");
    assert_int_equal(
        kube_path(c, "discovery.k8s.io", NULL, "endpointslices", NULL, NULL, NULL, p, sizeof(p)),
        0);
    assert_string_equal(p, "/apis/discovery.k8s.io/v1beta1/endpointslices");
    assert_int_equal(
        kube_path(c, "coordination.k8s.io", "v1", "leases", "ns1", "lead", NULL, p, sizeof(p)), 0);
    assert_string_equal(p, "/apis/coordination.k8s.io/v1/namespaces/ns1/leases/lead");
    assert_int_equal(kube_path(c, "networking.istio.io", NULL, "virtualservices", NULL, NULL, NULL,
                               p, sizeof(p)),
                     -1);
    assert_int_equal(kube_path(c, "", "v1", "configmaps", "x", "y", NULL, p, 10), -1);

    /* the mesh CRDs appear once installed (server-side apply: some are large) */
    if (tu_envtest_kubectl(&env, "apply --server-side -f crds/") != 0)
        fail_msg("kubectl apply crds: %s", env.out);
    /* each CRD becomes served on its own: wait for the ones checked below */
    const char *v = NULL, *ap = NULL;
    for (int i = 0; i < 300 && (v == NULL || ap == NULL); i++) {
        assert_int_equal(kube_discover(c), 0);
        v = kube_resource_version(c, "networking.istio.io", "virtualservices");
        ap = kube_resource_version(c, "security.istio.io", "authorizationpolicies");
        if (v == NULL || ap == NULL)
            usleep(100000);
    }
    assert_non_null(v);
    assert_string_equal(v, "v1");
    assert_string_equal(kube_resource_version(c, "security.istio.io", "authorizationpolicies"),
                        "v1");
    assert_int_equal(kube_resource_namespaced(c, "networking.istio.io", "gateways"), 1);
    kube_client_free(c);
}

/* The envtest helper's restart, and a client that outlives the server's restart. */
static void test_apiserver_restart(void **state)
{
    (void)state;
    kube_client_t *c = client_for(env.kubeconfig, NULL);
    expect_ok(c);
    assert_int_equal(tu_envtest_stop_apiserver(&env), 0);
    kube_resp_t r;
    assert_int_equal(kube_request(c, "GET", "/api/v1/namespaces/default", NULL, NULL, &r), -1);
    char want[128];
    snprintf(want, sizeof(want), "cannot connect to %s: Connection refused", env.server);
    assert_string_equal(r.err, want);
    assert_int_equal(tu_envtest_restart_apiserver(&env), 0);
    expect_ok(c);
    /* the data lives in etcd, which kept running */
    assert_int_equal(kube_request(c, "GET", "/api/v1/namespaces/rbac-test", NULL, NULL, &r), 0);
    assert_int_equal(r.status, 200);
    kube_resp_free(&r);
    /* and a restart of a running server works as well */
    assert_int_equal(tu_envtest_restart_apiserver(&env), 0);
    expect_ok(c);
    kube_client_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_admin_kubeconfig, each_setup),
        cmocka_unit_test_setup(test_token_and_ca_data, each_setup),
        cmocka_unit_test_setup(test_client_cert_files_relative, each_setup),
        cmocka_unit_test_setup(test_client_cert_data, each_setup),
        cmocka_unit_test_setup(test_insecure_skip_verify, each_setup),
        cmocka_unit_test_setup(test_current_vs_explicit_context, each_setup),
        cmocka_unit_test_setup(test_broken_kubeconfigs, each_setup),
        cmocka_unit_test_setup(test_kubeconfig_resolution, each_setup),
        cmocka_unit_test_setup(test_in_cluster, each_setup),
        cmocka_unit_test_setup(test_unreachable_server, each_setup),
        cmocka_unit_test_setup(test_wrong_ca, each_setup),
        cmocka_unit_test_setup(test_wrong_token_401, each_setup),
        cmocka_unit_test_setup(test_forbidden_403_names_verb_and_resource, each_setup),
        cmocka_unit_test_setup(test_status_messages, each_setup),
        cmocka_unit_test_setup(test_token_file_rotation, each_setup),
        cmocka_unit_test_setup(test_concurrent_requests, each_setup),
        cmocka_unit_test_setup(test_discovery_and_paths, each_setup),
        cmocka_unit_test_setup(test_apiserver_restart, each_setup),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
