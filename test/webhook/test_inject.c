/* Tests of sidecar injection: the policy, the pod mutation, the JSONPatch,
 * the AdmissionReview handlers (/inject and /validate), the values and their
 * reload from the store, and kube-inject's golden outputs over Istio's
 * injection test manifests. MESH_UPDATE_GOLDEN=1 rewrites the golden files. */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <json-c/json.h>
#include <openssl/evp.h>

#include "../../webhook/webhook.h"
#include "../testutil.h"

#define GOLDEN_DIR "test/webhook/golden"
#define INJECT_DIR "istio/pkg/kube/inject/testdata/inject"

/* ---- helpers ---- */

static json_object *J(const char *text)
{
    json_object *o = json_tokener_parse(text);
    if (o == NULL)
        fail_msg("bad JSON in test: %s", text);
    return o;
}

static json_object *at(json_object *o, const char *path)
{
    /* "spec.containers.1.name" */
    char buf[256];
    snprintf(buf, sizeof(buf), "%s", path);
    char *save = NULL;
    for (char *t = strtok_r(buf, ".", &save); t && o; t = strtok_r(NULL, ".", &save)) {
        if (json_object_is_type(o, json_type_array))
            o = json_object_array_get_idx(o, (size_t)atoi(t));
        else if (!json_object_object_get_ex(o, t, &o))
            return NULL;
    }
    return o;
}

static const char *at_str(json_object *o, const char *path)
{
    json_object *v = at(o, path);
    return v ? json_object_get_string(v) : NULL;
}

static const char *annotation(json_object *pod, const char *key)
{
    json_object *a = at(pod, "metadata.annotations"), *v = NULL;
    return a && json_object_object_get_ex(a, key, &v) ? json_object_get_string(v) : NULL;
}

static const char *label(json_object *pod, const char *key)
{
    json_object *a = at(pod, "metadata.labels"), *v = NULL;
    return a && json_object_object_get_ex(a, key, &v) ? json_object_get_string(v) : NULL;
}

static json_object *container(json_object *pod, const char *list, const char *name)
{
    json_object *cs = at(pod, list);
    for (size_t i = 0; cs && i < json_object_array_length(cs); i++) {
        json_object *c = json_object_array_get_idx(cs, i);
        if (strcmp(at_str(c, "name"), name) == 0)
            return c;
    }
    return NULL;
}

static const char *env(json_object *c, const char *name)
{
    json_object *e = at(c, "env");
    for (size_t i = 0; e && i < json_object_array_length(e); i++) {
        json_object *v = json_object_array_get_idx(e, i);
        if (strcmp(at_str(v, "name"), name) == 0)
            return at_str(v, "value") ? at_str(v, "value") : "(valueFrom)";
    }
    return NULL;
}

/* The args of a container joined with spaces. */
static void args_of(json_object *c, char *buf, size_t size)
{
    json_object *a = at(c, "args");
    size_t n = 0;
    buf[0] = '\0';
    for (size_t i = 0; a && i < json_object_array_length(a) && n < size; i++)
        n += (size_t)snprintf(buf + n, size - n, "%s%s", i ? " " : "", json_object_get_string(json_object_array_get_idx(a, i)));
}

static json_object *pod_json(const char *meta, const char *spec_extra)
{
    char buf[4096];
    snprintf(buf, sizeof(buf),
             "{\"apiVersion\":\"v1\",\"kind\":\"Pod\",\"metadata\":{\"name\":\"web\",\"namespace\":\"prod\"%s%s},"
             "\"spec\":{\"containers\":[{\"name\":\"app\",\"image\":\"nginx\",\"ports\":[{\"containerPort\":80,"
             "\"name\":\"http\"}]}]%s%s}}",
             meta ? "," : "", meta ? meta : "", spec_extra ? "," : "", spec_extra ? spec_extra : "");
    return J(buf);
}

/* ---- the namespace table the tests hand the webhook ---- */

struct ns_row {
    const char *ns, *injection, *rev;
};

static const struct ns_row ns_table[] = {
    {"prod", "enabled", NULL},        {"off", "disabled", NULL},   {"plain", NULL, NULL},
    {"revd", NULL, "default"},        {"canary", NULL, "canary"},  {"both", "disabled", "default"},
    {"kube-system", "enabled", NULL},
};

static int table_lookup(void *ud, const char *ns, webhook_ns_info_t *out)
{
    (void)ud;
    for (size_t i = 0; i < sizeof(ns_table) / sizeof(ns_table[0]); i++) {
        if (strcmp(ns_table[i].ns, ns) != 0)
            continue;
        memset(out, 0, sizeof(*out));
        if (ns_table[i].injection) {
            out->has_injection = true;
            snprintf(out->injection, sizeof(out->injection), "%s", ns_table[i].injection);
        }
        if (ns_table[i].rev) {
            out->has_rev = true;
            snprintf(out->rev, sizeof(out->rev), "%s", ns_table[i].rev);
        }
        return 0;
    }
    return -1;
}

static webhook_t *new_webhook(webhook_config_t *c)
{
    webhook_opts_t o = {.config = c, .mesh_ns = "istio-system", .ns_lookup = table_lookup};
    return webhook_new(&o);
}

/* An AdmissionReview body for obj (consumed). */
static char *review(const char *api_version, const char *uid, const char *kind, const char *op, const char *ns,
                    json_object *obj)
{
    json_object *req = J("{}");
    json_object_object_add(req, "uid", json_object_new_string(uid));
    json_object_object_add(req, "kind", J(kind && strcmp(kind, "Pod") == 0
                                               ? "{\"group\":\"\",\"version\":\"v1\",\"kind\":\"Pod\"}"
                                               : "{\"group\":\"networking.istio.io\",\"version\":\"v1\",\"kind\":\"VirtualService\"}"));
    if (kind && strcmp(kind, "Pod") != 0 && strcmp(kind, "VirtualService") != 0)
        json_object_object_add(at(req, "kind"), "kind", json_object_new_string(kind));
    json_object_object_add(req, "operation", json_object_new_string(op));
    json_object_object_add(req, "namespace", json_object_new_string(ns));
    json_object_object_add(req, "object", obj);
    json_object *r = J("{\"kind\":\"AdmissionReview\"}");
    json_object_object_add(r, "apiVersion", json_object_new_string(api_version));
    json_object_object_add(r, "request", req);
    char *s = strdup(json_object_to_json_string_ext(r, JSON_C_TO_STRING_PLAIN));
    json_object_put(r);
    return s;
}

struct answer {
    int status;
    json_object *root; /* NULL for a plain-text answer */
    char *text;
    json_object *patch; /* decoded, or NULL */
};

static void answer_free(struct answer *a)
{
    json_object_put(a->root);
    json_object_put(a->patch);
    free(a->text);
}

static void call(webhook_t *w, bool inject, const char *body, size_t len, struct answer *a)
{
    const char *ct = NULL;
    size_t n = 0;
    memset(a, 0, sizeof(*a));
    a->status = inject ? webhook_handle_inject(w, body, len, &a->text, &n, &ct)
                       : webhook_handle_validate(w, body, len, &a->text, &n, &ct);
    assert_non_null(a->text);
    assert_int_equal(strlen(a->text), n);
    if (strcmp(ct, "application/json") == 0) {
        a->root = json_tokener_parse(a->text);
        assert_non_null(a->root);
        const char *p = at_str(a->root, "response.patch");
        if (p != NULL) {
            unsigned char *dec = malloc(strlen(p) + 4);
            int dl = EVP_DecodeBlock(dec, (const unsigned char *)p, (int)strlen(p));
            assert_true(dl > 0);
            while (dl > 0 && dec[dl - 1] == '\0') /* padding */
                dl--;
            dec[dl] = '\0';
            a->patch = json_tokener_parse((char *)dec);
            assert_non_null(a->patch);
            free(dec);
        }
    }
}

static void call_review(webhook_t *w, bool inject, char *body, struct answer *a)
{
    call(w, inject, body, strlen(body), a);
    free(body);
}

static bool allowed(const struct answer *a)
{
    return json_object_get_boolean(at(a->root, "response.allowed"));
}

/* ---- the policy ---- */

struct decide_case {
    const char *ns;
    const char *meta; /* extra metadata JSON */
    const char *spec; /* extra spec JSON */
    bool inject;
    const char *reason; /* substring of the reason */
};

static void test_policy(void **state)
{
    (void)state;
    static const struct decide_case cases[] = {
        {"prod", NULL, NULL, true, "istio-injection=enabled"},
        {"prod", "\"labels\":{\"sidecar.istio.io/inject\":\"false\"}", NULL, false, "label sidecar.istio.io/inject=false"},
        {"prod", "\"annotations\":{\"sidecar.istio.io/inject\":\"false\"}", NULL, false, "annotation"},
        {"prod", "\"annotations\":{\"sidecar.istio.io/inject\":\"no\"}", NULL, false, "annotation"},
        {"off", "\"labels\":{\"sidecar.istio.io/inject\":\"true\"}", NULL, false, "istio-injection=disabled"},
        {"both", NULL, NULL, false, "istio-injection=disabled"},
        {"plain", NULL, NULL, false, "neither"},
        {"plain", "\"labels\":{\"sidecar.istio.io/inject\":\"true\"}", NULL, true, "label"},
        {"plain", "\"annotations\":{\"sidecar.istio.io/inject\":\"y\"}", NULL, true, "annotation"},
        {"plain", "\"labels\":{\"sidecar.istio.io/inject\":\"false\"},\"annotations\":{\"sidecar.istio.io/inject\":\"true\"}",
         NULL, false, "label"},
        {"plain", "\"labels\":{\"istio.io/rev\":\"default\"}", NULL, true, "istio.io/rev=default"},
        {"plain", "\"labels\":{\"istio.io/rev\":\"canary\"}", NULL, false, "not this control plane's revision"},
        {"revd", NULL, NULL, true, "istio.io/rev=default"},
        {"canary", NULL, NULL, false, "istio.io/rev=canary"},
        {"canary", "\"labels\":{\"sidecar.istio.io/inject\":\"true\"}", NULL, false, "istio.io/rev=canary"},
        {"kube-system", NULL, NULL, false, "never injected"},
        {"kube-public", "\"labels\":{\"sidecar.istio.io/inject\":\"true\"}", NULL, false, "never injected"},
        {"prod", NULL, "\"hostNetwork\":true", false, "host network"},
        {"prod", "\"annotations\":{\"sidecar.istio.io/status\":\"{}\"}", NULL, false, "already injected"},
        {"prod", NULL, "\"initContainers\":[{\"name\":\"istio-proxy\",\"image\":\"x\"}]", false, "istio-proxy"},
        {"unknown", NULL, NULL, true, "policy is enabled"},
    };
    webhook_config_t *c = webhook_config_default(NULL);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const struct decide_case *k = &cases[i];
        json_object *pod = pod_json(k->meta, k->spec);
        webhook_ns_info_t info;
        bool known = table_lookup(NULL, k->ns, &info) == 0;
        webhook_decision_t d;
        bool got = webhook_inject_decide(c, pod, k->ns, known ? &info : NULL, &d);
        if (got != k->inject || strstr(d.reason, k->reason) == NULL)
            fail_msg("case %zu (ns %s): inject=%d reason \"%s\", want inject=%d and \"%s\"", i, k->ns, got,
                     d.reason, k->inject, k->reason);
        json_object_put(pod);
    }
    webhook_config_unref(c);

    /* A canary control plane injects its own namespaces only. */
    char err[256];
    const char *vals = "revision: canary\n";
    c = webhook_config_parse(vals, strlen(vals), NULL, err, sizeof(err));
    assert_non_null(c);
    webhook_ns_info_t info;
    webhook_decision_t d;
    json_object *pod = pod_json(NULL, NULL);
    table_lookup(NULL, "canary", &info);
    assert_true(webhook_inject_decide(c, pod, "canary", &info, &d));
    table_lookup(NULL, "revd", &info);
    assert_false(webhook_inject_decide(c, pod, "revd", &info, &d));
    webhook_config_unref(c);

    /* policy: disabled injects only pods that ask. */
    vals = "policy: disabled\n";
    c = webhook_config_parse(vals, strlen(vals), NULL, err, sizeof(err));
    assert_non_null(c);
    table_lookup(NULL, "prod", &info);
    assert_false(webhook_inject_decide(c, pod, "prod", &info, &d));
    assert_false(webhook_inject_decide(c, pod, "unknown", NULL, &d));
    json_object_put(pod);
    pod = pod_json("\"labels\":{\"sidecar.istio.io/inject\":\"true\"}", NULL);
    assert_true(webhook_inject_decide(c, pod, "prod", &info, &d));
    json_object_put(pod);
    webhook_config_unref(c);
}

/* ---- the mutation ---- */

static json_object *injected(const char *meta, const char *spec, const char *values)
{
    char err[512];
    webhook_config_t *c = values ? webhook_config_parse(values, strlen(values), NULL, err, sizeof(err))
                                 : webhook_config_default(NULL);
    if (c == NULL)
        fail_msg("values: %s", err);
    json_object *pod = pod_json(meta, spec);
    webhook_workload_t wl = {.ns = "prod"};
    if (webhook_inject_pod(c, pod, &wl, err, sizeof(err)) != 0)
        fail_msg("inject: %s", err);
    webhook_config_unref(c);
    return pod;
}

static void test_pod_shape(void **state)
{
    (void)state;
    char args[1024];
    json_object *pod = injected(NULL, NULL, NULL);
    /* Containers: the app, then the proxy. */
    assert_int_equal(json_object_array_length(at(pod, "spec.containers")), 2);
    assert_string_equal(at_str(pod, "spec.containers.0.name"), "app");
    json_object *proxy = at(pod, "spec.containers.1");
    assert_string_equal(at_str(proxy, "name"), "istio-proxy");
    assert_string_equal(at_str(proxy, "command.0"), "meshproxy");
    assert_string_equal(at_str(proxy, "args.0"), "sidecar");
    assert_int_equal(json_object_get_int(at(proxy, "securityContext.runAsUser")), 1337);
    assert_int_equal(json_object_get_int(at(proxy, "securityContext.runAsGroup")), 1337);
    assert_string_equal(at_str(proxy, "readinessProbe.httpGet.path"), "/healthz/ready");
    assert_int_equal(json_object_get_int(at(proxy, "readinessProbe.httpGet.port")), 15021);
    assert_int_equal(json_object_get_int(at(proxy, "ports.0.containerPort")), 15090);
    assert_string_equal(at_str(proxy, "ports.0.name"), "http-envoy-prom");
    assert_int_equal(json_object_get_int(at(proxy, "ports.1.containerPort")), 15020);
    assert_string_equal(env(proxy, "CA_ADDR"), "meshd.istio-system.svc:15012");
    assert_non_null(strstr(env(proxy, "PROXY_CONFIG"), "\"discoveryAddress\":\"meshd.istio-system.svc:15012\""));
    assert_string_equal(env(proxy, "POD_NAME"), "(valueFrom)");
    assert_string_equal(env(proxy, "POD_NAMESPACE"), "(valueFrom)");
    assert_string_equal(env(proxy, "INSTANCE_IP"), "(valueFrom)");
    assert_string_equal(env(proxy, "SERVICE_ACCOUNT"), "(valueFrom)");
    assert_string_equal(env(proxy, "ISTIO_META_APP_CONTAINERS"), "app");
    assert_string_equal(env(proxy, "ISTIO_META_POD_PORTS"), "[{\"name\":\"http\",\"containerPort\":80}]");
    assert_string_equal(env(proxy, "ISTIO_META_OWNER"), "kubernetes://apis/v1/namespaces/prod/pods/web");
    assert_string_equal(at_str(proxy, "resources.requests.cpu"), "100m");
    assert_string_equal(at_str(proxy, "resources.limits.memory"), "1024Mi");

    /* The init container redirects to 15001/15006, skips UID 1337 and the proxy's ports. */
    json_object *init = at(pod, "spec.initContainers.0");
    assert_string_equal(at_str(init, "name"), "istio-init");
    args_of(init, args, sizeof(args));
    assert_string_equal(args, "init -p 15001 -z 15006 -u 1337 -g 1337 -m REDIRECT -i * -x  -b * -d 15090,15021,15020");
    assert_string_equal(at_str(init, "securityContext.capabilities.add.0"), "NET_ADMIN");
    assert_string_equal(at_str(init, "securityContext.capabilities.add.1"), "NET_RAW");
    assert_int_equal(json_object_get_int(at(init, "securityContext.runAsUser")), 0);
    assert_false(json_object_get_boolean(at(init, "securityContext.runAsNonRoot")));

    /* Volumes. */
    assert_string_equal(at_str(pod, "spec.volumes.5.name"), "istio-token");
    assert_string_equal(at_str(pod, "spec.volumes.5.projected.sources.0.serviceAccountToken.audience"), "istio-ca");
    assert_string_equal(at_str(pod, "spec.volumes.6.configMap.name"), "istio-ca-root-cert");
    assert_string_equal(at_str(pod, "spec.volumes.6.name"), "istiod-ca-cert");
    assert_string_equal(at_str(pod, "spec.volumes.4.name"), "istio-podinfo");
    assert_string_equal(at_str(pod, "spec.volumes.4.downwardAPI.items.0.fieldRef.fieldPath"), "metadata.labels");

    /* Annotations and labels. */
    assert_string_equal(annotation(pod, "sidecar.istio.io/status"),
                        "{\"initContainers\":[\"istio-init\"],\"containers\":[\"istio-proxy\"],\"volumes\":"
                        "[\"workload-socket\",\"workload-certs\",\"istio-envoy\",\"istio-data\",\"istio-podinfo\","
                        "\"istio-token\",\"istiod-ca-cert\"],\"imagePullSecrets\":null,\"revision\":\"default\"}");
    assert_string_equal(annotation(pod, "prometheus.io/scrape"), "true");
    assert_string_equal(annotation(pod, "prometheus.io/port"), "15020");
    assert_string_equal(annotation(pod, "prometheus.io/path"), "/stats/prometheus");
    assert_string_equal(annotation(pod, "kubectl.kubernetes.io/default-container"), "app");
    assert_string_equal(label(pod, "security.istio.io/tlsMode"), "istio");
    assert_string_equal(label(pod, "service.istio.io/canonical-name"), "web");
    assert_string_equal(label(pod, "service.istio.io/canonical-revision"), "latest");
    json_object_put(pod);
}

static void test_annotations(void **state)
{
    (void)state;
    char args[1024];
    json_object *pod = injected(
        "\"annotations\":{\"traffic.sidecar.istio.io/includeOutboundIPRanges\":\"10.0.0.0/8, fd00::/8\","
        "\"traffic.sidecar.istio.io/excludeOutboundIPRanges\":\"10.96.0.1/32\","
        "\"traffic.sidecar.istio.io/excludeInboundPorts\":\"8081,9000\","
        "\"traffic.sidecar.istio.io/excludeOutboundPorts\":\"5432\","
        "\"sidecar.istio.io/proxyCPU\":\"250m\",\"sidecar.istio.io/proxyMemory\":\"64Mi\","
        "\"sidecar.istio.io/proxyCPULimit\":\"1\",\"sidecar.istio.io/proxyMemoryLimit\":\"256Mi\","
        "\"sidecar.istio.io/proxyImage\":\"registry.local/meshproxy:dev\",\"sidecar.istio.io/logLevel\":\"debug\","
        "\"prometheus.io/scrape\":\"true\",\"prometheus.io/port\":\"9090\",\"prometheus.io/path\":\"/metrics\"}",
        NULL, NULL);
    json_object *init = container(pod, "spec.initContainers", "istio-init");
    args_of(init, args, sizeof(args));
    assert_non_null(strstr(args, "-i 10.0.0.0/8, fd00::/8 -x 10.96.0.1/32"));
    assert_non_null(strstr(args, "-d 15090,15021,15020,8081,9000 -o 5432"));
    json_object *proxy = container(pod, "spec.containers", "istio-proxy");
    assert_string_equal(at_str(proxy, "image"), "registry.local/meshproxy:dev");
    assert_string_equal(at_str(init, "image"), "registry.local/meshproxy:dev");
    assert_string_equal(at_str(proxy, "resources.requests.cpu"), "250m");
    assert_string_equal(at_str(proxy, "resources.requests.memory"), "64Mi");
    assert_string_equal(at_str(proxy, "resources.limits.cpu"), "1");
    assert_string_equal(at_str(proxy, "resources.limits.memory"), "256Mi");
    args_of(proxy, args, sizeof(args));
    assert_non_null(strstr(args, "--proxyLogLevel=debug"));
    /* The app's own scrape settings go to the proxy, which merges them. */
    assert_string_equal(annotation(pod, "prometheus.io/port"), "15020");
    assert_string_equal(env(proxy, "ISTIO_PROMETHEUS_ANNOTATIONS"),
                        "{\"scrape\":\"true\",\"path\":\"/metrics\",\"port\":\"9090\"}");
    json_object_put(pod);

    /* Only a request annotation: no default limit below it. */
    pod = injected("\"annotations\":{\"sidecar.istio.io/proxyCPU\":\"4\"}", NULL, NULL);
    proxy = container(pod, "spec.containers", "istio-proxy");
    assert_string_equal(at_str(proxy, "resources.requests.cpu"), "4");
    assert_null(at(proxy, "resources.limits"));
    json_object_put(pod);

    /* scrape "false": the pod's Prometheus annotations are left alone. */
    pod = injected("\"annotations\":{\"prometheus.io/scrape\":\"false\"}", NULL, NULL);
    assert_string_equal(annotation(pod, "prometheus.io/scrape"), "false");
    assert_null(annotation(pod, "prometheus.io/port"));
    assert_null(env(container(pod, "spec.containers", "istio-proxy"), "ISTIO_PROMETHEUS_ANNOTATIONS"));
    json_object_put(pod);

    /* holdApplicationUntilProxyStarts: the proxy first, with a postStart wait. */
    pod = injected("\"annotations\":{\"proxy.istio.io/config\":\"holdApplicationUntilProxyStarts: true\\n\"}",
                   NULL, NULL);
    assert_string_equal(at_str(pod, "spec.containers.0.name"), "istio-proxy");
    assert_string_equal(at_str(pod, "spec.containers.0.lifecycle.postStart.exec.command.1"), "wait");
    assert_string_equal(at_str(pod, "spec.containers.1.name"), "app");
    json_object_put(pod);
    pod = injected(NULL, NULL, "holdApplicationUntilProxyStarts: true\n");
    assert_string_equal(at_str(pod, "spec.containers.0.name"), "istio-proxy");
    json_object_put(pod);

    /* Readiness tuning and status port 0 (no probe). */
    pod = injected("\"annotations\":{\"readiness.status.sidecar.istio.io/periodSeconds\":\"7\"}", NULL, NULL);
    assert_int_equal(json_object_get_int(at(container(pod, "spec.containers", "istio-proxy"), "readinessProbe.periodSeconds")), 7);
    json_object_put(pod);
    pod = injected("\"annotations\":{\"status.sidecar.istio.io/port\":\"0\"}", NULL, NULL);
    assert_null(at(container(pod, "spec.containers", "istio-proxy"), "readinessProbe"));
    json_object_put(pod);
}

static void test_bad_annotations(void **state)
{
    (void)state;
    static const struct {
        const char *meta;
        const char *want;
    } cases[] = {
        {"\"annotations\":{\"traffic.sidecar.istio.io/excludeOutboundIPRanges\":\"*\"}",
         "traffic.sidecar.istio.io/excludeOutboundIPRanges: \"*\" is not allowed"},
        {"\"annotations\":{\"traffic.sidecar.istio.io/includeOutboundIPRanges\":\"bad\"}",
         "includeOutboundIPRanges: \"bad\" is not a CIDR"},
        {"\"annotations\":{\"traffic.sidecar.istio.io/includeOutboundIPRanges\":\"10.0.0.0/33\"}", "is not a CIDR"},
        {"\"annotations\":{\"traffic.sidecar.istio.io/excludeInboundPorts\":\"80,0\"}",
         "excludeInboundPorts: \"0\" is not a port number"},
        {"\"annotations\":{\"traffic.sidecar.istio.io/excludeOutboundPorts\":\"65536\"}", "is not a port number"},
        {"\"annotations\":{\"traffic.sidecar.istio.io/includeInboundPorts\":\"bad\"}", "includeInboundPorts"},
        {"\"annotations\":{\"sidecar.istio.io/proxyCPU\":\"lots\"}", "sidecar.istio.io/proxyCPU: \"lots\" is not a resource quantity"},
        {"\"annotations\":{\"sidecar.istio.io/proxyMemoryLimit\":\"1Gb\"}", "proxyMemoryLimit"},
        {"\"annotations\":{\"sidecar.istio.io/logLevel\":\"loud\"}", "sidecar.istio.io/logLevel: \"loud\""},
        {"\"annotations\":{\"proxy.istio.io/config\":\"[1,2]\"}", "proxy.istio.io/config"},
        {"\"annotations\":{\"sidecar.istio.io/userVolume\":\"nope\"}", "sidecar.istio.io/userVolume"},
        {"\"annotations\":{\"readiness.status.sidecar.istio.io/periodSeconds\":\"-1\"}", "periodSeconds"},
    };
    webhook_config_t *c = webhook_config_default(NULL);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char err[512] = "";
        json_object *pod = pod_json(cases[i].meta, NULL);
        json_object *before = NULL;
        json_object_deep_copy(pod, &before, NULL);
        webhook_workload_t wl = {.ns = "prod"};
        int rc = webhook_inject_pod(c, pod, &wl, err, sizeof(err));
        if (rc != -1 || strstr(err, cases[i].want) == NULL)
            fail_msg("case %zu: rc %d err \"%s\", want \"%s\"", i, rc, err, cases[i].want);
        assert_true(json_object_equal(pod, before)); /* unchanged */
        json_object_put(pod);
        json_object_put(before);
    }
    /* A volume name the sidecar needs is already taken. */
    char err[256];
    json_object *pod = pod_json(NULL, "\"volumes\":[{\"name\":\"istio-envoy\",\"emptyDir\":{}}]");
    assert_int_equal(webhook_inject_pod(c, pod, NULL, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "\"istio-envoy\""));
    json_object_put(pod);
    webhook_config_unref(c);
}

static void test_canonical_names(void **state)
{
    (void)state;
    /* app.kubernetes.io/name over app; version label. */
    json_object *pod = injected("\"labels\":{\"app\":\"a\",\"app.kubernetes.io/name\":\"b\",\"version\":\"v2\"}", NULL, NULL);
    assert_string_equal(label(pod, "service.istio.io/canonical-name"), "b");
    assert_string_equal(label(pod, "service.istio.io/canonical-revision"), "v2");
    json_object_put(pod);
    /* Existing values are kept. */
    pod = injected("\"labels\":{\"app\":\"a\",\"service.istio.io/canonical-name\":\"mine\",\"security.istio.io/tlsMode\":\"disabled\"}",
                   NULL, NULL);
    assert_string_equal(label(pod, "service.istio.io/canonical-name"), "mine");
    assert_string_equal(label(pod, "security.istio.io/tlsMode"), "disabled");
    json_object_put(pod);
    /* A pod of a Deployment: the ReplicaSet's pod-template-hash is cut off. */
    pod = injected("\"generateName\":\"reviews-v1-7d4f8c9b5-\",\"labels\":{\"pod-template-hash\":\"7d4f8c9b5\"},"
                   "\"ownerReferences\":[{\"apiVersion\":\"apps/v1\",\"kind\":\"ReplicaSet\",\"name\":\"reviews-v1-7d4f8c9b5\","
                   "\"controller\":true,\"uid\":\"1\"}]",
                   NULL, NULL);
    assert_string_equal(label(pod, "service.istio.io/canonical-name"), "reviews-v1");
    json_object *proxy = container(pod, "spec.containers", "istio-proxy");
    assert_string_equal(env(proxy, "ISTIO_META_WORKLOAD_NAME"), "reviews-v1");
    assert_string_equal(env(proxy, "ISTIO_META_OWNER"), "kubernetes://apis/apps/v1/namespaces/prod/deployments/reviews-v1");
    json_object_put(pod);
    /* A CronJob's Job. */
    pod = injected("\"ownerReferences\":[{\"apiVersion\":\"batch/v1\",\"kind\":\"Job\",\"name\":\"backup-27894720\","
                   "\"controller\":true}]",
                   NULL, NULL);
    assert_string_equal(env(container(pod, "spec.containers", "istio-proxy"), "ISTIO_META_OWNER"),
                        "kubernetes://apis/batch/v1/namespaces/prod/cronjobs/backup");
    json_object_put(pod);
    /* Truncated to 63 characters, without a trailing '-'. */
    pod = injected("\"labels\":{\"app\":\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-bbbb\"}", NULL, NULL);
    assert_string_equal(label(pod, "service.istio.io/canonical-name"),
                        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
    json_object_put(pod);
}

/* ---- JSONPatch ---- */

static void test_patch(void **state)
{
    (void)state;
    char err[256];
    json_object *a = J("{\"metadata\":{\"annotations\":{\"x/y\":\"1\",\"t~\":\"2\"}},\"list\":[1,2],\"front\":[3],"
                       "\"gone\":true,\"mixed\":[1,2,3]}");
    json_object *b = J("{\"metadata\":{\"annotations\":{\"x/y\":\"changed\",\"t~\":\"2\",\"a/b~c\":\"new\"}},"
                       "\"list\":[1,2,9,10],\"front\":[0,3],\"mixed\":[3,2],\"added\":{\"k\":[]}}");
    json_object *p = webhook_patch_diff(a, b);
    const char *ps = json_object_to_json_string_ext(p, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
    assert_non_null(strstr(ps, "\"path\":\"/metadata/annotations/x~1y\""));
    assert_non_null(strstr(ps, "\"path\":\"/metadata/annotations/a~1b~0c\""));
    assert_non_null(strstr(ps, "{\"op\":\"remove\",\"path\":\"/gone\"}"));
    assert_non_null(strstr(ps, "{\"op\":\"add\",\"path\":\"/front/0\",\"value\":0}"));
    assert_non_null(strstr(ps, "{\"op\":\"add\",\"path\":\"/list/2\",\"value\":9}"));
    assert_int_equal(webhook_patch_apply(&a, p, err, sizeof(err)), 0);
    assert_true(json_object_equal(a, b));
    json_object_put(p);
    /* No difference, no operation. */
    p = webhook_patch_diff(a, b);
    assert_int_equal(json_object_array_length(p), 0);
    json_object_put(p);
    /* Broken patches are refused with the reason. */
    p = J("[{\"op\":\"remove\",\"path\":\"/nope/x\"}]");
    assert_int_equal(webhook_patch_apply(&a, p, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "does not exist"));
    json_object_put(p);
    p = J("[{\"op\":\"add\",\"path\":\"/list/99\",\"value\":1}]");
    assert_int_equal(webhook_patch_apply(&a, p, err, sizeof(err)), -1);
    json_object_put(p);
    p = J("[{\"op\":\"add\",\"path\":\"/list/-\",\"value\":1},{\"op\":\"test\",\"path\":\"/list/4\",\"value\":1}]");
    assert_int_equal(webhook_patch_apply(&a, p, err, sizeof(err)), 0);
    json_object_put(p);
    json_object_put(a);
    json_object_put(b);
}

/* ---- /inject ---- */

static void test_admission_inject(void **state)
{
    (void)state;
    webhook_t *w = new_webhook(NULL);
    struct answer a;
    char err[256];
    const char *versions[] = {"admission.k8s.io/v1", "admission.k8s.io/v1beta1"};
    for (int v = 0; v < 2; v++) {
        json_object *pod = pod_json("\"annotations\":{\"team\":\"a\"}", NULL);
        json_object *orig = NULL;
        json_object_deep_copy(pod, &orig, NULL);
        call_review(w, true, review(versions[v], "uid-42", "Pod", "CREATE", "prod", pod), &a);
        assert_int_equal(a.status, 200);
        assert_string_equal(at_str(a.root, "apiVersion"), versions[v]);
        assert_string_equal(at_str(a.root, "kind"), "AdmissionReview");
        assert_string_equal(at_str(a.root, "response.uid"), "uid-42");
        assert_true(allowed(&a));
        assert_string_equal(at_str(a.root, "response.patchType"), "JSONPatch");
        assert_non_null(a.patch);
        assert_non_null(strstr(json_object_to_json_string(a.patch), "sidecar.istio.io~1status"));
        /* The patch applied to the pod gives exactly the injected pod. */
        assert_int_equal(webhook_patch_apply(&orig, a.patch, err, sizeof(err)), 0);
        json_object *want = pod_json("\"annotations\":{\"team\":\"a\"}", NULL);
        webhook_config_t *c = webhook_get_config(w);
        webhook_workload_t wl = {.ns = "prod"};
        assert_int_equal(webhook_inject_pod(c, want, &wl, err, sizeof(err)), 0);
        webhook_config_unref(c);
        assert_true(json_object_equal(orig, want));
        json_object_put(want);
        answer_free(&a);

        /* Idempotent: the injected pod comes back allowed, without a patch. */
        call_review(w, true, review(versions[v], "uid-43", "Pod", "CREATE", "prod", orig), &a);
        assert_int_equal(a.status, 200);
        assert_true(allowed(&a));
        assert_null(at(a.root, "response.patch"));
        answer_free(&a);
    }

    /* A pod that opts out, and a namespace without the label: allowed, no patch. */
    call_review(w, true,
                review("admission.k8s.io/v1", "u1", "Pod", "CREATE", "prod",
                       pod_json("\"labels\":{\"sidecar.istio.io/inject\":\"false\"}", NULL)),
                &a);
    assert_true(allowed(&a));
    assert_null(a.patch);
    answer_free(&a);
    call_review(w, true, review("admission.k8s.io/v1", "u2", "Pod", "CREATE", "plain", pod_json(NULL, NULL)), &a);
    assert_true(allowed(&a));
    assert_null(a.patch);
    answer_free(&a);

    /* Not a Pod, not a CREATE: allowed with a message, no patch. */
    call_review(w, true, review("admission.k8s.io/v1", "u3", "Deployment", "CREATE", "prod", pod_json(NULL, NULL)), &a);
    assert_int_equal(a.status, 200);
    assert_true(allowed(&a));
    assert_null(a.patch);
    assert_non_null(strstr(at_str(a.root, "response.status.message"), "not a Pod"));
    answer_free(&a);
    call_review(w, true, review("admission.k8s.io/v1", "u4", "Pod", "UPDATE", "prod", pod_json(NULL, NULL)), &a);
    assert_true(allowed(&a));
    assert_null(a.patch);
    assert_non_null(strstr(at_str(a.root, "response.status.message"), "only at CREATE"));
    answer_free(&a);

    /* A bad annotation: denied, naming it. */
    call_review(w, true,
                review("admission.k8s.io/v1", "u5", "Pod", "CREATE", "prod",
                       pod_json("\"annotations\":{\"traffic.sidecar.istio.io/excludeInboundPorts\":\"http\"}", NULL)),
                &a);
    assert_int_equal(a.status, 200);
    assert_false(allowed(&a));
    assert_string_equal(at_str(a.root, "response.uid"), "u5");
    assert_non_null(strstr(at_str(a.root, "response.status.message"),
                           "pod prod/web failed: annotation traffic.sidecar.istio.io/excludeInboundPorts: \"http\""));
    answer_free(&a);

    /* The object is not a pod object. */
    call_review(w, true, review("admission.k8s.io/v1", "u6", "Pod", "CREATE", "prod", json_object_new_string("x")), &a);
    assert_false(allowed(&a));
    answer_free(&a);

    webhook_stats_t st;
    webhook_get_stats(w, &st);
    assert_int_equal(st.injected, 2);
    assert_true(st.inject_errors >= 2);
    webhook_free(w);
}

static void test_admission_malformed(void **state)
{
    (void)state;
    webhook_t *w = new_webhook(NULL);
    struct answer a;
    static const struct {
        const char *body;
        int status;
        const char *msg;
    } cases[] = {
        {"", 400, "empty body"},
        {"not json", 400, "invalid AdmissionReview: invalid JSON"},
        {"{\"kind\":\"AdmissionReview\"", 400, "unexpected end"},
        {"[1,2,3]", 400, "kind AdmissionReview"},
        {"{\"kind\":\"Pod\",\"apiVersion\":\"v1\"}", 400, "kind AdmissionReview"},
        {"{\"kind\":\"AdmissionReview\",\"apiVersion\":\"admission.k8s.io/v2\",\"request\":{}}", 400, "v1 or v1beta1"},
        {"{\"kind\":\"AdmissionReview\",\"apiVersion\":\"admission.k8s.io/v1\"}", 400, "request is missing"},
        {"{\"kind\":\"AdmissionReview\",\"apiVersion\":\"admission.k8s.io/v1\",\"request\":{\"kind\":{\"kind\":\"Pod\"}}}",
         400, "request.uid"},
        {"{\"kind\":\"AdmissionReview\",\"apiVersion\":\"admission.k8s.io/v1\",\"request\":{\"uid\":7}}", 400, "request.uid"},
        {"{\"kind\":\"AdmissionReview\",\"apiVersion\":\"admission.k8s.io/v1\",\"request\":{\"uid\":\"u\"}} trailing", 400,
         "after the value"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        for (int inj = 0; inj < 2; inj++) {
            call(w, inj, cases[i].body, strlen(cases[i].body), &a);
            if (a.status != cases[i].status || strstr(a.text, cases[i].msg) == NULL)
                fail_msg("case %zu: %d %s, want %d with \"%s\"", i, a.status, a.text, cases[i].status, cases[i].msg);
            answer_free(&a);
        }
    }
    /* Deep nesting stops at the parser's depth limit. */
    size_t n = 100000;
    char *deep = malloc(2 * n + 1);
    memset(deep, '[', n);
    memset(deep + n, ']', n);
    deep[2 * n] = '\0';
    call(w, true, deep, 2 * n, &a);
    assert_int_equal(a.status, 400);
    answer_free(&a);
    free(deep);
    /* Over the body limit. */
    size_t big = WEBHOOK_MAX_BODY + 1;
    char *body = malloc(big);
    memset(body, ' ', big);
    call(w, true, body, big, &a);
    assert_int_equal(a.status, 413);
    assert_non_null(strstr(a.text, "exceeds the limit"));
    answer_free(&a);
    free(body);
    /* A pod full of wrong types is refused cleanly. */
    call_review(w, true,
                review("admission.k8s.io/v1", "u", "Pod", "CREATE", "prod",
                       J("{\"metadata\":{\"annotations\":[1]},\"spec\":{\"containers\":{}}}")),
                &a);
    assert_false(allowed(&a));
    answer_free(&a);
    /* A pod without containers (found by fuzz_admission) is injected, not a crash. */
    call_review(w, true, review("admission.k8s.io/v1", "u", "Pod", "CREATE", "prod", J("{\"spec\":{}}")), &a);
    assert_true(allowed(&a));
    assert_non_null(a.patch);
    answer_free(&a);
    call_review(w, true,
                review("admission.k8s.io/v1", "u", "Pod", "CREATE", "prod", J("{\"metadata\":7,\"spec\":[]}")), &a);
    assert_int_equal(a.status, 200);
    answer_free(&a);
    webhook_free(w);
}

/* ---- /validate ---- */

static void test_admission_validate(void **state)
{
    (void)state;
    webhook_t *w = new_webhook(NULL);
    struct answer a;
    json_object *bad = J("{\"apiVersion\":\"networking.istio.io/v1\",\"kind\":\"VirtualService\","
                         "\"metadata\":{\"name\":\"reviews\",\"namespace\":\"prod\"},"
                         "\"spec\":{\"hosts\":[\"reviews\"],\"http\":[{\"route\":[{\"destination\":{\"host\":\"reviews\"},"
                         "\"wieght\":5}],\"timout\":\"5s\"}]}}");
    call_review(w, false, review("admission.k8s.io/v1", "v1", "VirtualService", "CREATE", "prod", bad), &a);
    assert_int_equal(a.status, 200);
    assert_false(allowed(&a));
    assert_string_equal(at_str(a.root, "response.uid"), "v1");
    const char *msg = at_str(a.root, "response.status.message");
    assert_non_null(strstr(msg, "configuration is invalid: VirtualService prod/reviews: "));
    assert_non_null(strstr(msg, "spec.http[0]"));
    assert_non_null(strstr(msg, "spec.http[0]: unknown field \"timout\""));
    assert_non_null(strstr(msg, "; ")); /* every error, joined */
    assert_non_null(strstr(msg, "spec.http[0].route[0]: unknown field \"wieght\""));
    answer_free(&a);

    json_object *good = J("{\"apiVersion\":\"networking.istio.io/v1beta1\",\"kind\":\"VirtualService\","
                          "\"metadata\":{\"name\":\"reviews\"},"
                          "\"spec\":{\"hosts\":[\"reviews\"],\"http\":[{\"route\":[{\"destination\":{\"host\":\"reviews\"}}]}]}}");
    call_review(w, false, review("admission.k8s.io/v1beta1", "v2", "VirtualService", "UPDATE", "prod", good), &a);
    assert_true(allowed(&a));
    assert_string_equal(at_str(a.root, "apiVersion"), "admission.k8s.io/v1beta1");
    answer_free(&a);

    /* DELETE is always allowed; so are kinds the mesh does not validate. */
    call_review(w, false, review("admission.k8s.io/v1", "v3", "VirtualService", "DELETE", "prod", NULL), &a);
    assert_true(allowed(&a));
    answer_free(&a);
    call_review(w, false,
                review("admission.k8s.io/v1", "v4", "Widget", "CREATE", "prod",
                       J("{\"apiVersion\":\"example.com/v1\",\"kind\":\"Widget\",\"metadata\":{\"name\":\"w\"}}")),
                &a);
    assert_true(allowed(&a));
    answer_free(&a);

    /* A broken AuthorizationPolicy names its field too. */
    json_object *ap = J("{\"apiVersion\":\"security.istio.io/v1\",\"kind\":\"AuthorizationPolicy\","
                        "\"metadata\":{\"name\":\"deny\",\"namespace\":\"bookinfo\"},"
                        "\"spec\":{\"rules\":[{\"from\":[{\"source\":{\"namespace\":[\"x\"]}}]}]}}");
    call_review(w, false, review("admission.k8s.io/v1", "v5", "AuthorizationPolicy", "CREATE", "bookinfo", ap), &a);
    assert_false(allowed(&a));
    assert_non_null(strstr(at_str(a.root, "response.status.message"), "spec.rules[0].from[0].source: unknown field \"namespace\""));
    answer_free(&a);
    webhook_stats_t st;
    webhook_get_stats(w, &st);
    assert_int_equal(st.validate_denied, 2);
    webhook_free(w);
}

/* ---- values and the store ---- */

static void test_values(void **state)
{
    (void)state;
    char err[256];
    const char *ok = "image: reg/meshproxy:2\nrevision: canary\ndiscoveryAddress: meshd.mesh.svc:15012\nlogLevel: info\n"
                     "resources:\n  requests:\n    cpu: 10m\n  limits: null\nenv:\n  ISTIO_META_DNS_CAPTURE: \"true\"\n"
                     "imagePullSecrets: [regcred]\nexcludeInboundPorts: \"9999\"\n";
    webhook_config_t *c = webhook_config_parse(ok, strlen(ok), NULL, err, sizeof(err));
    if (c == NULL)
        fail_msg("%s", err);
    assert_string_equal(webhook_config_revision(c), "canary");
    json_object *pod = pod_json(NULL, NULL);
    assert_int_equal(webhook_inject_pod(c, pod, NULL, err, sizeof(err)), 0);
    json_object *proxy = container(pod, "spec.containers", "istio-proxy");
    assert_string_equal(at_str(proxy, "image"), "reg/meshproxy:2");
    assert_string_equal(env(proxy, "CA_ADDR"), "meshd.mesh.svc:15012"); /* follows discovery */
    assert_string_equal(env(proxy, "ISTIO_META_DNS_CAPTURE"), "true");
    assert_string_equal(at_str(proxy, "resources.requests.cpu"), "10m");
    assert_null(at(proxy, "resources.limits"));
    assert_string_equal(at_str(pod, "spec.imagePullSecrets.0.name"), "regcred");
    assert_non_null(strstr(annotation(pod, "sidecar.istio.io/status"), "\"imagePullSecrets\":[\"regcred\"],\"revision\":\"canary\""));
    char args[512];
    args_of(container(pod, "spec.initContainers", "istio-init"), args, sizeof(args));
    assert_non_null(strstr(args, "-d 15090,15021,15020,9999"));
    json_object_put(pod);
    webhook_config_unref(c);

    /* A whole ConfigMap works too; meshNamespace moves the default addresses. */
    const char *cm = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: istio-sidecar-injector\n"
                     "data:\n  values: |\n    meshNamespace: mesh\n";
    c = webhook_config_parse(cm, strlen(cm), NULL, err, sizeof(err));
    assert_non_null(c);
    pod = pod_json(NULL, NULL);
    assert_int_equal(webhook_inject_pod(c, pod, NULL, err, sizeof(err)), 0);
    assert_string_equal(env(container(pod, "spec.containers", "istio-proxy"), "CA_ADDR"), "meshd.mesh.svc:15012");
    json_object_put(pod);
    webhook_config_unref(c);

    static const struct {
        const char *text, *want;
    } bad[] = {
        {"imgae: x\n", "unknown value \"imgae\""},
        {"proxyUID: 0\n", "proxyUID: 0 is out of range"},
        {"statusPort: http\n", "statusPort: must be an integer"},
        {"policy: sometimes\n", "policy: \"sometimes\" is not one of enabled, disabled"},
        {"resources: {requests: {cpu: [1]}}\n", "resources.requests.cpu"},
        {"- a\n", "must be a map"},
        {"image: \"\"\n", "image: must not be empty"},
        {"kind: ConfigMap\ndata: {}\n", "data.values is missing"},
        {"a: [\n", "line"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = '\0';
        c = webhook_config_parse(bad[i].text, strlen(bad[i].text), NULL, err, sizeof(err));
        if (c != NULL || strstr(err, bad[i].want) == NULL)
            fail_msg("values case %zu: \"%s\", want \"%s\"", i, err, bad[i].want);
    }
}

static cfg_object_t *load_one(const char *yaml)
{
    tu_result_t r;
    tu_load(yaml, "store.yaml", &r);
    TU_EXPECT_OK(&r);
    assert_int_equal(r.nobjs, 1);
    cfg_object_t *o = cfg_object_ref(r.objs[0]);
    tu_free(&r);
    return o;
}

static const char *injected_image(webhook_t *w, const char *ns, bool *inj)
{
    static char image[128];
    struct answer a;
    call_review(w, true, review("admission.k8s.io/v1", "s", "Pod", "CREATE", ns, pod_json(NULL, NULL)), &a);
    *inj = a.patch != NULL;
    image[0] = '\0';
    for (size_t i = 0; a.patch && i < json_object_array_length(a.patch); i++) {
        json_object *op = json_object_array_get_idx(a.patch, i);
        if (strcmp(at_str(op, "path"), "/spec/containers/1") == 0)
            snprintf(image, sizeof(image), "%s", at_str(op, "value.image"));
    }
    answer_free(&a);
    return image;
}

static void test_store(void **state)
{
    (void)state;
    cfg_store_t *store = cfg_store_new();
    cfg_object_t *objs[] = {
        load_one("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n  labels:\n    istio-injection: enabled\n"),
        load_one("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: quiet\n"),
        load_one("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: istio-sidecar-injector\n  namespace: istio-system\n"
                 "data:\n  values: '{\"image\": \"reg/one\"}'\n"),
    };
    for (size_t i = 0; i < 3; i++) {
        cfg_store_put(store, objs[i]);
        cfg_object_unref(objs[i]);
    }
    webhook_t *w = new_webhook(NULL);
    assert_int_equal(webhook_watch_store(w, store), 0);
    bool inj;
    /* Namespace labels come from the store; the values from the ConfigMap. */
    assert_string_equal(injected_image(w, "shop", &inj), "reg/one");
    assert_true(inj);
    injected_image(w, "quiet", &inj);
    assert_false(inj);

    /* The ConfigMap changes: the next pod gets the new image. */
    cfg_object_t *o = load_one("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: istio-sidecar-injector\n"
                               "  namespace: istio-system\ndata:\n  values: 'image: reg/two'\n");
    cfg_store_put(store, o);
    cfg_object_unref(o);
    assert_string_equal(injected_image(w, "shop", &inj), "reg/two");
    /* A broken update keeps the last good values. */
    o = load_one("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: istio-sidecar-injector\n"
                 "  namespace: istio-system\ndata:\n  values: 'image: [oops'\n");
    cfg_store_put(store, o);
    cfg_object_unref(o);
    assert_string_equal(injected_image(w, "shop", &inj), "reg/two");
    /* Another namespace's ConfigMap of the same name is not ours. */
    o = load_one("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: istio-sidecar-injector\n"
                 "  namespace: shop\ndata:\n  values: 'image: reg/evil'\n");
    cfg_store_put(store, o);
    cfg_object_unref(o);
    assert_string_equal(injected_image(w, "shop", &inj), "reg/two");
    /* Deleted: back to the defaults. */
    cfg_store_delete(store, CFG_ConfigMap, "istio-system", "istio-sidecar-injector");
    assert_string_equal(injected_image(w, "shop", &inj), "docker.io/meshd/meshproxy:0.1.0");
    /* The namespace is relabelled. */
    o = load_one("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n  labels:\n    istio-injection: disabled\n");
    cfg_store_put(store, o);
    cfg_object_unref(o);
    injected_image(w, "shop", &inj);
    assert_false(inj);
    webhook_stats_t st;
    webhook_get_stats(w, &st);
    assert_int_equal(st.config_reloads, 3);
    assert_int_equal(st.config_errors, 1);
    webhook_free(w);
    cfg_store_free(store);
}

/* ---- kube-inject and its golden files ---- */

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    size_t r;
    while ((r = fread(buf + n, 1, cap - n - 1, f)) > 0) {
        n += r;
        if (cap - n < 4096)
            buf = realloc(buf, cap *= 2);
    }
    fclose(f);
    buf[n] = '\0';
    if (len)
        *len = n;
    return buf;
}

/* kube-inject of text: the output, or "error: <message>\n". */
static char *kube_inject(const webhook_config_t *c, const char *text, size_t len)
{
    char *out = NULL, err[1024];
    size_t olen = 0;
    FILE *f = open_memstream(&out, &olen);
    int rc = webhook_kube_inject(c, text, len, f, err, sizeof(err));
    fclose(f);
    if (rc != 0) {
        assert_int_equal(olen, 0); /* nothing written on error */
        free(out);
        if (asprintf(&out, "error: %s\n", err) < 0)
            fail();
    }
    return out;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

struct yaml_docs {
    json_object *docs;
};

static int yaml_docs_cb(void *ud, const doc_t *d)
{
    struct yaml_docs *y = ud;
    assert_non_null(d->root);
    json_object_array_add(y->docs, cfg_doc_to_json(d->root));
    return 0;
}

static void test_golden(void **state)
{
    (void)state;
    const char *dir = tu_shared(INJECT_DIR);
    DIR *d = opendir(dir);
    if (d == NULL)
        fail_msg("cannot open %s: %s", dir, strerror(errno));
    char *names[256];
    size_t n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL && n < 256) {
        size_t l = strlen(e->d_name);
        if (l > 5 && strcmp(e->d_name + l - 5, ".yaml") == 0 && strstr(e->d_name, ".iop.") == NULL)
            names[n++] = strdup(e->d_name);
    }
    closedir(d);
    qsort(names, n, sizeof(names[0]), cmp_str);
    assert_true(n >= 90);
    bool update = getenv("MESH_UPDATE_GOLDEN") != NULL;
    mkdir(GOLDEN_DIR, 0755);
    webhook_config_t *c = webhook_config_default(NULL);
    int mismatches = 0, injected_n = 0, errors_n = 0;
    for (size_t i = 0; i < n; i++) {
        char in_path[1024], gold[1024];
        snprintf(in_path, sizeof(in_path), "%s/%s", dir, names[i]);
        snprintf(gold, sizeof(gold), "%s/%.*s.injected", GOLDEN_DIR, (int)(strlen(names[i]) - 5), names[i]);
        size_t len;
        char *in = read_file(in_path, &len);
        assert_non_null(in);
        char *out = kube_inject(c, in, len);
        if (strncmp(out, "error: ", 7) == 0)
            errors_n++;
        else if (strstr(out, "name: istio-proxy") != NULL)
            injected_n++;
        if (update) {
            FILE *f = fopen(gold, "w");
            assert_non_null(f);
            fputs(out, f);
            fclose(f);
        } else {
            char *want = read_file(gold, NULL);
            if (want == NULL || strcmp(want, out) != 0) {
                print_error("golden mismatch: %s (rerun with MESH_UPDATE_GOLDEN=1 after reviewing)\n", gold);
                mismatches++;
            }
            free(want);
        }
        if (strncmp(out, "error: ", 7) != 0) {
            /* Idempotent: injecting the output again changes nothing. */
            char *again = kube_inject(c, out, strlen(out));
            if (strcmp(again, out) != 0)
                fail_msg("%s: second injection changed the output", names[i]);
            free(again);
            /* The YAML written reads back to what was injected, and re-emits identically. */
            struct yaml_docs y = {json_object_new_array()};
            doc_parse(out, strlen(out), DOC_FMT_YAML, yaml_docs_cb, &y);
            char *re = NULL;
            size_t rl = 0;
            FILE *f = open_memstream(&re, &rl);
            for (size_t k = 0; k < json_object_array_length(y.docs); k++) {
                if (k > 0)
                    fputs("---\n", f);
                webhook_yaml_write(f, json_object_array_get_idx(y.docs, k));
            }
            fclose(f);
            if (strcmp(re, out) != 0)
                fail_msg("%s: the YAML output does not read back to itself", names[i]);
            free(re);
            json_object_put(y.docs);
        }
        free(out);
        free(in);
        free(names[i]);
    }
    webhook_config_unref(c);
    assert_int_equal(mismatches, 0);
    /* Sanity on the set: most manifests inject, the bad-annotation ones fail. */
    assert_true(injected_n >= 80);
    assert_int_equal(errors_n, 5);
}

static void test_kube_inject_forms(void **state)
{
    (void)state;
    webhook_config_t *c = webhook_config_default(NULL);
    /* JSON in, JSON out. */
    const char *js = "{\"apiVersion\":\"v1\",\"kind\":\"Pod\",\"metadata\":{\"name\":\"p\"},"
                     "\"spec\":{\"containers\":[{\"name\":\"a\",\"image\":\"x\"}]}}";
    char *out = kube_inject(c, js, strlen(js));
    json_object *o = json_tokener_parse(out);
    assert_non_null(o);
    assert_string_equal(at_str(o, "spec.containers.1.name"), "istio-proxy");
    json_object_put(o);
    free(out);
    /* Other documents pass through; a CronJob's template is found; host network is skipped. */
    const char *y = "apiVersion: v1\nkind: Service\nmetadata:\n  name: s\nspec:\n  ports:\n  - port: 80\n"
                    "---\napiVersion: batch/v1\nkind: CronJob\nmetadata:\n  name: c\n  namespace: jobs\nspec:\n"
                    "  schedule: \"*/1 * * * *\"\n  jobTemplate:\n    spec:\n      template:\n        spec:\n"
                    "          containers:\n          - name: j\n            image: busybox\n"
                    "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: h\nspec:\n  hostNetwork: true\n"
                    "  containers:\n  - name: a\n    image: x\n";
    out = kube_inject(c, y, strlen(y));
    assert_non_null(strstr(out, "kind: Service\nmetadata:\n  name: s\nspec:\n  ports:\n  - port: 80\n---\n"));
    assert_non_null(strstr(out, "kubernetes://apis/batch/v1/namespaces/jobs/cronjobs/c"));
    const char *pod = strstr(out, "kind: Pod");
    assert_non_null(pod);
    assert_null(strstr(pod, "istio-proxy"));
    free(out);
    /* Errors name the document and the workload. */
    const char *bad = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n---\napiVersion: apps/v1\nkind: Deployment\n"
                      "metadata:\n  name: web\n  namespace: shop\nspec:\n  template:\n    metadata:\n      annotations:\n"
                      "        sidecar.istio.io/proxyCPU: lots\n    spec:\n      containers:\n      - name: a\n        image: x\n";
    out = kube_inject(c, bad, strlen(bad));
    assert_string_equal(out, "error: document 2: Deployment shop/web: annotation sidecar.istio.io/proxyCPU: \"lots\" is "
                             "not a resource quantity (such as 100m, 0.5 or 128Mi)\n");
    free(out);
    const char *broken = "a: [\n";
    out = kube_inject(c, broken, strlen(broken));
    assert_non_null(strstr(out, "error: document at line"));
    free(out);
    webhook_config_unref(c);

    /* Strings that YAML would read as something else are quoted. */
    json_object *v = J("{\"a\":\"true\",\"b\":\"80\",\"c\":\"\",\"d\":\"x: y\",\"e\":\"- z\",\"f\":\"#c\",\"g\":\"two\\nlines\\n\","
                       "\"h\":\"no\",\"i\":\"~\",\"j\":\" lead\",\"k\":\"tab\\there\",\"l\":\"1e3\",\"m\":\".5\",\"n\":[[1,2],{}],"
                       "\"o\":\"-p\",\"p\":\"\\u0001\"}");
    char *text = NULL;
    size_t tl = 0;
    FILE *f = open_memstream(&text, &tl);
    webhook_yaml_write(f, v);
    fclose(f);
    assert_string_equal(text, "a: \"true\"\nb: \"80\"\nc: \"\"\nd: \"x: y\"\ne: \"- z\"\nf: \"#c\"\ng: |\n  two\n  lines\n"
                              "h: \"no\"\ni: \"~\"\nj: \" lead\"\nk: \"tab\\there\"\nl: \"1e3\"\nm: \".5\"\n\"n\":\n- - 1\n  - 2\n- {}\n"
                              "o: -p\np: \"\\x01\"\n");
    struct yaml_docs yd = {json_object_new_array()};
    doc_parse(text, tl, DOC_FMT_YAML, yaml_docs_cb, &yd);
    assert_true(json_object_equal(json_object_array_get_idx(yd.docs, 0), v));
    json_object_put(yd.docs);
    free(text);
    json_object_put(v);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_policy),
        cmocka_unit_test(test_pod_shape),
        cmocka_unit_test(test_annotations),
        cmocka_unit_test(test_bad_annotations),
        cmocka_unit_test(test_canonical_names),
        cmocka_unit_test(test_patch),
        cmocka_unit_test(test_admission_inject),
        cmocka_unit_test(test_admission_malformed),
        cmocka_unit_test(test_admission_validate),
        cmocka_unit_test(test_values),
        cmocka_unit_test(test_store),
        cmocka_unit_test(test_golden),
        cmocka_unit_test(test_kube_inject_forms),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
