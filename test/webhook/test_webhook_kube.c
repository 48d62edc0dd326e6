/* The webhooks against a real Kubernetes API server (envtest): meshd's
 * HTTPS server on 127.0.0.1 is registered by URL, webhook_register writes
 * the caBundle and turns the validating failurePolicy to Fail, and then the
 * API server itself calls /inject when a pod is created in a namespace
 * labelled istio-injection=enabled, and /validate when a broken
 * VirtualService is applied. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <json-c/json.h>

#include "../../controlplane/kube.h"
#include "../../webhook/webhook.h"
#include "../envtest.h"
#include "../testutil.h"

static tu_envtest_t env;
static kube_client_t *kc;
static webhook_t *wh;
static webhook_server_t *srv;
static char *ca_pem;

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    char *buf = calloc(1, 65536);
    size_t n = fread(buf, 1, 65535, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

/* Namespace labels read from the API server (meshd reads them from its
 * store; here the client stands in for the informer). */
static int api_ns_lookup(void *ud, const char *ns, webhook_ns_info_t *out)
{
    (void)ud;
    char path[300];
    kube_resp_t r;
    int rc = -1;
    snprintf(path, sizeof(path), "/api/v1/namespaces/%s", ns);
    if (kube_request(kc, "GET", path, NULL, NULL, &r) != 0 || r.status != 200) {
        kube_resp_free(&r);
        return -1;
    }
    json_object *o = json_tokener_parse(r.body), *meta, *labels, *v;
    memset(out, 0, sizeof(*out));
    if (o && json_object_object_get_ex(o, "metadata", &meta)) {
        rc = 0;
        if (json_object_object_get_ex(meta, "labels", &labels)) {
            if (json_object_object_get_ex(labels, "istio-injection", &v)) {
                out->has_injection = true;
                snprintf(out->injection, sizeof(out->injection), "%s", json_object_get_string(v));
            }
            if (json_object_object_get_ex(labels, "istio.io/rev", &v)) {
                out->has_rev = true;
                snprintf(out->rev, sizeof(out->rev), "%s", json_object_get_string(v));
            }
        }
    }
    json_object_put(o);
    kube_resp_free(&r);
    return rc;
}

static int setup(void **state)
{
    (void)state;
    char err[512], path[PATH_MAX + 64];
    if (tu_envtest_start(&env, false) != 0)
        return -1;
    kube_opts_t ko = {.kubeconfig = env.kubeconfig};
    kc = kube_client_new(&ko, err, sizeof(err));
    if (kc == NULL) {
        fprintf(stderr, "kube client: %s\n", err);
        return -1;
    }
    snprintf(path, sizeof(path), "%s/webhook.crt", env.pki_dir);
    char *cert = slurp(path);
    snprintf(path, sizeof(path), "%s/webhook.key", env.pki_dir);
    char *key = slurp(path);
    snprintf(path, sizeof(path), "%s/ca.crt", env.pki_dir);
    ca_pem = slurp(path);
    if (cert == NULL || key == NULL || ca_pem == NULL)
        return -1;
    webhook_opts_t wo = {.mesh_ns = "istio-system", .ns_lookup = api_ns_lookup};
    wh = webhook_new(&wo);
    webhook_server_opts_t so = {.addr = "127.0.0.1", .port = 0, .cert_pem = cert, .key_pem = key};
    srv = webhook_server_start(wh, &so, err, sizeof(err));
    free(cert);
    free(key);
    if (srv == NULL) {
        fprintf(stderr, "%s\n", err);
        return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    webhook_server_stop(srv);
    webhook_free(wh);
    kube_client_free(kc);
    free(ca_pem);
    tu_envtest_stop(&env);
    return 0;
}

static void kubectl_ok(const char *input, const char *args)
{
    int rc = input ? tu_envtest_kubectl_stdin(&env, input, "%s", args) : tu_envtest_kubectl(&env, "%s", args);
    if (rc != 0)
        fail_msg("kubectl %s: %s", args, env.out ? env.out : "");
}

static void test_register_and_inject(void **state)
{
    (void)state;
    int port = webhook_server_port(srv);
    char yaml[4096], err[512];
    /* Installed as the chart installs them: no caBundle yet, validation Ignore. */
    snprintf(yaml, sizeof(yaml),
             "apiVersion: admissionregistration.k8s.io/v1\nkind: MutatingWebhookConfiguration\n"
             "metadata:\n  name: istio-sidecar-injector\nwebhooks:\n- name: namespace.sidecar-injector.istio.io\n"
             "  clientConfig:\n    url: https://127.0.0.1:%d/inject\n"
             "  rules:\n  - operations: [CREATE]\n    apiGroups: [\"\"]\n    apiVersions: [v1]\n    resources: [pods]\n"
             "  namespaceSelector:\n    matchLabels:\n      istio-injection: enabled\n"
             "  sideEffects: None\n  admissionReviewVersions: [v1, v1beta1]\n  failurePolicy: Fail\n"
             "---\napiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingWebhookConfiguration\n"
             "metadata:\n  name: istio-validator-istio-system\nwebhooks:\n- name: validation.istio.io\n"
             "  clientConfig:\n    url: https://127.0.0.1:%d/validate\n"
             "  rules:\n  - operations: [CREATE, UPDATE]\n    apiGroups: [networking.istio.io, security.istio.io]\n"
             "    apiVersions: [\"*\"]\n    resources: [\"*\"]\n"
             "  sideEffects: None\n  admissionReviewVersions: [v1, v1beta1]\n  failurePolicy: Ignore\n",
             port, port);
    kubectl_ok(yaml, "apply -f -");

    webhook_register_opts_t ro = {.mutating = "istio-sidecar-injector",
                                  .validating = "istio-validator-istio-system",
                                  .ca_pem = ca_pem,
                                  .ready = true};
    if (webhook_register(kc, &ro, err, sizeof(err)) != 0)
        fail_msg("webhook_register: %s", err);
    kubectl_ok(NULL, "get validatingwebhookconfiguration istio-validator-istio-system -o "
                     "jsonpath={.webhooks[0].failurePolicy}/{.webhooks[0].clientConfig.caBundle}");
    assert_true(strncmp(env.out, "Fail/LS0t", 9) == 0); /* base64 of "-----BEGIN" */
    kubectl_ok(NULL, "get mutatingwebhookconfiguration istio-sidecar-injector -o jsonpath={.webhooks[0].clientConfig.caBundle}");
    assert_true(strncmp(env.out, "LS0t", 4) == 0);
    /* A configuration that does not exist is skipped, not an error. */
    webhook_register_opts_t missing = {.mutating = "nope", .ca_pem = ca_pem};
    assert_int_equal(webhook_register(kc, &missing, err, sizeof(err)), 0);

    kubectl_ok(NULL, "create namespace prod");
    kubectl_ok(NULL, "label namespace prod istio-injection=enabled");
    kubectl_ok(NULL, "create namespace plain");
    /* serviceAccountName is what the ServiceAccount admission plugin sets
     * before the webhooks run in a full cluster (envtest runs without it);
     * the injected istio-token volume needs it. */
    const char *pod = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  labels:\n    app: web\n    version: v1\n"
                      "spec:\n  serviceAccountName: default\n  containers:\n  - name: web\n    image: nginx\n    ports:\n    - containerPort: 80\n";
    kubectl_ok(pod, "apply -n prod -f -");
    kubectl_ok(pod, "apply -n plain -f -");

    /* The API server called /inject and stored the injected pod. */
    kubectl_ok(NULL, "get pod web -n prod -o json");
    json_object *o = json_tokener_parse(env.out);
    assert_non_null(o);
    const char *s = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
    assert_non_null(strstr(s, "\"name\":\"istio-proxy\""));
    assert_non_null(strstr(s, "\"name\":\"istio-init\""));
    assert_non_null(strstr(s, "sidecar.istio.io/status"));
    assert_non_null(strstr(s, "\"service.istio.io/canonical-revision\":\"v1\""));
    json_object *spec, *cs;
    assert_true(json_object_object_get_ex(o, "spec", &spec));
    assert_true(json_object_object_get_ex(spec, "containers", &cs));
    assert_int_equal(json_object_array_length(cs), 2); /* 2/2 once running */
    json_object_put(o);

    kubectl_ok(NULL, "get pod web -n plain -o jsonpath={.spec.containers[*].name}");
    assert_string_equal(env.out, "web");

    /* A pod that opts out in an injected namespace. */
    const char *optout = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: quiet\n  labels:\n"
                         "    sidecar.istio.io/inject: \"false\"\nspec:\n  containers:\n  - name: q\n    image: busybox\n";
    kubectl_ok(optout, "apply -n prod -f -");
    kubectl_ok(NULL, "get pod quiet -n prod -o jsonpath={.spec.containers[*].name}");
    assert_string_equal(env.out, "q");

    /* A bad annotation: the API server refuses the pod with our reason. */
    const char *bad = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: bad\n  annotations:\n"
                      "    traffic.sidecar.istio.io/excludeOutboundPorts: \"http\"\n"
                      "spec:\n  serviceAccountName: default\n  containers:\n  - name: b\n    image: busybox\n";
    assert_int_not_equal(tu_envtest_kubectl_stdin(&env, bad, "apply -n prod -f -"), 0);
    assert_non_null(strstr(env.out, "annotation traffic.sidecar.istio.io/excludeOutboundPorts: \"http\" is not a port number"));

    webhook_stats_t st;
    webhook_get_stats(wh, &st);
    assert_true(st.injected >= 1);
}

static void test_validate_via_apiserver(void **state)
{
    (void)state;
    kubectl_ok(NULL, "create -f crds/");
    kubectl_ok(NULL, "wait --for condition=established --timeout=60s crd/virtualservices.networking.istio.io");
    const char *broken = "apiVersion: networking.istio.io/v1beta1\nkind: VirtualService\nmetadata:\n  name: reviews\n"
                         "spec:\n  hosts: [reviews]\n  http:\n  - route:\n    - destination:\n        host: reviews\n"
                         "      weight: -10\n";
    /* The validating webhook is Fail now; retry briefly while the CRD's REST path warms up. */
    int rc = 0;
    for (int i = 0; i < 20; i++) {
        rc = tu_envtest_kubectl_stdin(&env, broken, "apply -n prod -f -");
        if (rc != 0 && strstr(env.out, "denied the request"))
            break;
        if (rc == 0)
            break;
        usleep(250000);
    }
    assert_int_not_equal(rc, 0);
    assert_non_null(strstr(env.out, "denied the request: configuration is invalid: VirtualService prod/reviews: "
                                    "spec.http[0].route[0].weight: must be >= 0"));
    const char *good = "apiVersion: networking.istio.io/v1beta1\nkind: VirtualService\nmetadata:\n  name: reviews\n"
                       "spec:\n  hosts: [reviews]\n  http:\n  - route:\n    - destination:\n        host: reviews\n";
    kubectl_ok(good, "apply -n prod -f -");
    kubectl_ok(NULL, "delete virtualservice reviews -n prod");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_register_and_inject),
        cmocka_unit_test(test_validate_via_apiserver),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
