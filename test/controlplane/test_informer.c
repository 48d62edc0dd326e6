/*
 * The informers against a real API server (envtest): initial sync of every
 * kind, every event type, resuming across forced disconnects, 410 Gone and
 * the relist that deletes what vanished meanwhile, the server going away and
 * coming back, a malformed watch stream, invalid mesh objects, a CRD
 * installed late, and meshd itself (--kubeconfig, /ready, /debug/configz).
 *
 * The tests share one API server and run in order; each uses its own
 * namespace and its own informer and store.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <json-c/json.h>

#include "../../common/log.h"
#include "../../controlplane/informer.h"
#include "../envtest.h"
#include "../faultproxy.h"
#include "../testutil.h"

static tu_envtest_t env;
static kube_client_t *admin; /* straight to the API server */

/* ---- helpers ---- */

static uint64_t ms_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void sleep_ms(int ms)
{
    usleep((useconds_t)ms * 1000u);
}

typedef struct harness {
    cfg_store_t *store;
    kube_client_t *client;
    informer_t *inf;
} harness_t;

/* What a test started, so that a failing test (cmocka jumps out of it) does
 * not leave an informer or a proxy running into the next one. */
static harness_t live_harness[4]; /* copies: the tests' own live on their stacks */
static fp_t *live_proxy[4];

static void track_harness(harness_t *h, bool on)
{
    for (int i = 0; i < 4; i++)
        if (on ? live_harness[i].inf == NULL : live_harness[i].inf == h->inf) {
            if (on)
                live_harness[i] = *h;
            else
                memset(&live_harness[i], 0, sizeof(live_harness[i]));
            return;
        }
}

static fp_t *proxy_start(int upstream_port, const fp_tls_t *tls)
{
    fp_t *p = fp_start(upstream_port, tls);
    assert_non_null(p);
    for (int i = 0; i < 4; i++)
        if (live_proxy[i] == NULL) {
            live_proxy[i] = p;
            break;
        }
    return p;
}

static void proxy_stop(fp_t *p)
{
    for (int i = 0; i < 4; i++)
        if (live_proxy[i] == p)
            live_proxy[i] = NULL;
    fp_stop(p);
}

/* An informer with test timings; only: the one kind to watch, or
 * CFG_KIND_NONE for meshd's default set. */
static void start_inf(harness_t *h, const char *kubeconfig, cfg_kind_t only, int watch_timeout_s)
{
    char err[512];
    memset(h, 0, sizeof(*h));
    kube_opts_t ko = {.kubeconfig = kubeconfig};
    h->client = kube_client_new(&ko, err, sizeof(err));
    if (h->client == NULL)
        fail_msg("kube_client_new: %s", err);
    h->store = cfg_store_new();
    informer_opts_t o;
    informer_opts_default(&o);
    o.client = h->client;
    o.store = h->store;
    if (only != CFG_KIND_NONE)
        for (int k = CFG_KIND_NONE + 1; k < CFG_KIND_COUNT; k++)
            o.kinds[k].enabled = k == (int)only;
    o.backoff_initial_ms = 50;
    o.backoff_max_ms = 1000;
    o.absent_retry_ms = 1000;
    o.log_interval_ms = 2000;
    o.watch_timeout_min_s = watch_timeout_s;
    o.watch_timeout_max_s = watch_timeout_s;
    h->inf = informer_start(&o, err, sizeof(err));
    if (h->inf == NULL)
        fail_msg("informer_start: %s", err);
    track_harness(h, true);
}

static void stop_inf(harness_t *h)
{
    track_harness(h, false);
    informer_stop(h->inf);
    cfg_store_free(h->store);
    kube_client_free(h->client);
    memset(h, 0, sizeof(*h));
}

static informer_kind_stats_t kind_stats(harness_t *h, cfg_kind_t kind)
{
    informer_kind_stats_t st[CFG_KIND_COUNT];
    size_t n = informer_stats(h->inf, st, CFG_KIND_COUNT);
    for (size_t i = 0; i < n; i++)
        if (st[i].kind == kind)
            return st[i];
    fail_msg("no statistics for %s", cfg_kind_info(kind)->name);
    informer_kind_stats_t none = {0};
    return none;
}

/* The object's resourceVersion in the store, or NULL (copied into buf). */
static const char *store_rv(harness_t *h, cfg_kind_t kind, const char *ns, const char *name, char *buf,
                            size_t len)
{
    cfg_snap_t *snap = cfg_store_snapshot(h->store);
    cfg_object_t *o = cfg_snap_get(snap, kind, ns, name);
    const char *rv = NULL;
    if (o != NULL) {
        snprintf(buf, len, "%s", o->meta->resourceVersion ? o->meta->resourceVersion : "");
        rv = buf;
    }
    cfg_snap_release(snap);
    return rv;
}

static bool store_has(harness_t *h, cfg_kind_t kind, const char *ns, const char *name)
{
    char rv[64];
    return store_rv(h, kind, ns, name, rv, sizeof(rv)) != NULL;
}

/* Polls cond every 50 ms for up to ms; true when it held. */
#define WAIT_FOR(ms, cond)                                                                         \
    ({                                                                                             \
        uint64_t _end = ms_now() + (ms);                                                           \
        bool _ok = false;                                                                          \
        while (!(_ok = (cond)) && ms_now() < _end)                                                 \
            sleep_ms(50);                                                                          \
        _ok;                                                                                       \
    })

static int request(const char *method, const char *path, const char *body, char *rv_out, size_t rvlen)
{
    kube_resp_t r;
    int rc = kube_request(admin, method, path, body, body ? "application/json" : NULL, &r);
    if (rc != 0 || r.status >= 300) {
        fprintf(stderr, "%s %s: %ld %s\n", method, path, r.status, r.body ? r.body : r.err);
        kube_resp_free(&r);
        return -1;
    }
    if (rv_out != NULL) {
        rv_out[0] = '\0';
        json_object *j = json_tokener_parse(r.body), *m, *v;
        if (j && json_object_object_get_ex(j, "metadata", &m) && json_object_object_get_ex(m, "resourceVersion", &v))
            snprintf(rv_out, rvlen, "%s", json_object_get_string(v));
        json_object_put(j);
    }
    kube_resp_free(&r);
    return 0;
}

static void create_ns(const char *ns)
{
    char body[256];
    snprintf(body, sizeof(body), "{\"apiVersion\":\"v1\",\"kind\":\"Namespace\",\"metadata\":{\"name\":\"%s\"}}", ns);
    assert_int_equal(request("POST", "/api/v1/namespaces", body, NULL, 0), 0);
}

static int put_cm(const char *ns, const char *name, const char *value, bool create, char *rv, size_t rvlen)
{
    char path[256], body[512];
    snprintf(body, sizeof(body),
             "{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":{\"name\":\"%s\",\"namespace\":\"%s\"},"
             "\"data\":{\"v\":\"%s\"}}",
             name, ns, value);
    if (create) {
        snprintf(path, sizeof(path), "/api/v1/namespaces/%s/configmaps", ns);
        return request("POST", path, body, rv, rvlen);
    }
    snprintf(path, sizeof(path), "/api/v1/namespaces/%s/configmaps/%s", ns, name);
    return request("PUT", path, body, rv, rvlen);
}

static int delete_cm(const char *ns, const char *name)
{
    char path[256];
    snprintf(path, sizeof(path), "/api/v1/namespaces/%s/configmaps/%s", ns, name);
    return request("DELETE", path, NULL, NULL, 0);
}

struct ns_count {
    const char *ns;
    size_t n;
};

static int count_ns(void *ud, cfg_object_t *o)
{
    struct ns_count *c = ud;
    if (strcmp(o->namespace, c->ns) == 0)
        c->n++;
    return 0;
}

/* Compares the store's objects of kind in ns with the server's LIST at path
 * (names and resourceVersions). Prints the first difference when verbose. */
static bool store_matches_server(harness_t *h, cfg_kind_t kind, const char *ns, const char *path, bool verbose)
{
    kube_resp_t r;
    if (kube_request(admin, "GET", path, NULL, NULL, &r) != 0 || r.status != 200) {
        kube_resp_free(&r);
        return false;
    }
    json_object *j = json_tokener_parse(r.body), *items = NULL;
    kube_resp_free(&r);
    if (j == NULL || !json_object_object_get_ex(j, "items", &items)) {
        json_object_put(j);
        return false;
    }
    bool ok = true;
    size_t n = json_object_array_length(items);
    cfg_snap_t *snap = cfg_store_snapshot(h->store);
    for (size_t i = 0; i < n && ok; i++) {
        json_object *m = NULL, *name = NULL, *rv = NULL;
        json_object_object_get_ex(json_object_array_get_idx(items, i), "metadata", &m);
        json_object_object_get_ex(m, "name", &name);
        json_object_object_get_ex(m, "resourceVersion", &rv);
        cfg_object_t *o = cfg_snap_get(snap, kind, ns, json_object_get_string(name));
        if (o == NULL || strcmp(o->meta->resourceVersion, json_object_get_string(rv)) != 0) {
            if (verbose)
                fprintf(stderr, "  %s %s/%s: server has resourceVersion %s, store %s\n", cfg_kind_info(kind)->name,
                        ns, json_object_get_string(name), json_object_get_string(rv),
                        o ? o->meta->resourceVersion : "nothing");
            ok = false;
        }
    }
    struct ns_count c = {ns, 0};
    cfg_snap_each(snap, kind, count_ns, &c);
    if (ok && c.n != n) {
        if (verbose)
            fprintf(stderr, "  %s in %s: server has %zu objects, store %zu\n", cfg_kind_info(kind)->name, ns, n, c.n);
        ok = false;
    }
    cfg_snap_release(snap);
    json_object_put(j);
    return ok;
}

/* ---- what a user reads: this process's log, captured ---- */

static int saved_stderr = -1;
static char capture_path[PATH_MAX + 32];

static void capture_start(void)
{
    snprintf(capture_path, sizeof(capture_path), "%s/captured.log", env.run_dir);
    fflush(stderr);
    saved_stderr = dup(2);
    int fd = open(capture_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    assert_true(fd >= 0);
    dup2(fd, 2);
    close(fd);
}

/* Restores stderr, echoes what was captured, and returns it (malloc'd). */
static char *capture_stop(void)
{
    fflush(stderr);
    dup2(saved_stderr, 2);
    close(saved_stderr);
    saved_stderr = -1;
    FILE *f = fopen(capture_path, "rb");
    assert_non_null(f);
    char *text = calloc(1, 1 << 20);
    size_t n = fread(text, 1, (1 << 20) - 1, f);
    text[n] = '\0';
    fclose(f);
    fputs(text, stderr);
    return text;
}

/* Whether the captured log, so far, holds a line with every substring. */
static bool captured_has(const char *a, const char *b)
{
    fflush(stderr);
    FILE *f = fopen(capture_path, "rb");
    if (f == NULL)
        return false;
    char line[8192];
    bool found = false;
    while (!found && fgets(line, sizeof(line), f) != NULL)
        found = strstr(line, a) != NULL && (b == NULL || strstr(line, b) != NULL);
    fclose(f);
    return found;
}

static bool text_has_line(const char *text, const char *a, const char *b)
{
    for (const char *l = text; l && *l;) {
        const char *end = strchr(l, '\n');
        size_t len = end ? (size_t)(end - l) : strlen(l);
        char *line = strndup(l, len);
        bool hit = strstr(line, a) != NULL && (b == NULL || strstr(line, b) != NULL);
        free(line);
        if (hit)
            return true;
        l = end ? end + 1 : NULL;
    }
    return false;
}

/* A copy of the admin kubeconfig that points at 127.0.0.1:port. */
static const char *kubeconfig_via(int port)
{
    static char path[PATH_MAX + 64];
    snprintf(path, sizeof(path), "%s/kubeconfig-%d", env.run_dir, port);
    FILE *in = fopen(env.kubeconfig, "rb"), *out = fopen(path, "wb");
    assert_non_null(in);
    assert_non_null(out);
    char from[64], to[64], line[4096];
    snprintf(from, sizeof(from), "127.0.0.1:%d", env.apiserver_port);
    snprintf(to, sizeof(to), "127.0.0.1:%d", port);
    while (fgets(line, sizeof(line), in) != NULL) {
        char *at = strstr(line, from);
        if (at != NULL) {
            fwrite(line, 1, (size_t)(at - line), out);
            fputs(to, out);
            fputs(at + strlen(from), out);
        } else {
            fputs(line, out);
        }
    }
    fclose(in);
    fclose(out);
    return path;
}

static void apply(const char *yaml)
{
    if (tu_envtest_kubectl_stdin(&env, yaml, "apply -f -") != 0)
        fail_msg("kubectl apply failed: %s", env.out);
}

/* Installs the mesh CRDs and waits until the API server serves them. */
static void install_crds(void)
{
    if (tu_envtest_kubectl(&env, "apply --server-side -f crds/") != 0)
        fail_msg("installing the CRDs: %s", env.out);
    if (tu_envtest_kubectl(&env, "wait --for condition=established --timeout=30s -f crds/") != 0)
        fail_msg("the CRDs are not established: %s", env.out);
}

/* ---- tests ---- */

/* Mesh kinds whose CRDs are missing do not block the sync; once the CRDs
 * are installed, their objects flow without restarting anything. */
static void test_crd_installed_after_start(void **state)
{
    (void)state;
    harness_t h;
    start_inf(&h, env.kubeconfig, CFG_KIND_NONE, 300);
    assert_true(informer_wait_synced(h.inf, 20000));
    informer_kind_stats_t vs = kind_stats(&h, CFG_VirtualService);
    assert_string_equal(vs.state, "absent");
    assert_true(vs.synced);
    assert_string_equal(kind_stats(&h, CFG_Namespace).state, "watching");
    assert_string_equal(kind_stats(&h, CFG_EndpointSlice).version, "v1beta1"); /* Kubernetes 1.20 */
    assert_string_equal(kind_stats(&h, CFG_MutatingWebhookConfiguration).version, "v1");

    install_crds();
    apply("apiVersion: networking.istio.io/v1beta1\nkind: VirtualService\n"
          "metadata: {name: late, namespace: default}\n"
          "spec: {hosts: [reviews], http: [{route: [{destination: {host: reviews}}]}]}\n");
    assert_true(WAIT_FOR(15000, store_has(&h, CFG_VirtualService, "default", "late")));
    vs = kind_stats(&h, CFG_VirtualService);
    assert_string_equal(vs.state, "watching");
    assert_string_equal(vs.version, "v1");
    assert_true(informer_synced(h.inf));
    stop_inf(&h);
    tu_envtest_kubectl(&env, "delete virtualservice late -n default");
}

static const char every_kind_yaml[] =
    "apiVersion: v1\nkind: Namespace\nmetadata: {name: every, labels: {istio-injection: enabled}}\n---\n"
    "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: every}\n"
    "spec: {selector: {app: web}, ports: [{name: http, port: 80, targetPort: 8080}]}\n---\n"
    "apiVersion: discovery.k8s.io/v1beta1\nkind: EndpointSlice\n"
    "metadata: {name: web-abc, namespace: every, labels: {kubernetes.io/service-name: web}}\n"
    "addressType: IPv4\nports: [{name: http, port: 8080, protocol: TCP}]\n"
    "endpoints: [{addresses: [10.1.0.5], conditions: {ready: true},\n"
    "  topology: {topology.kubernetes.io/zone: zone-a}}]\n---\n"
    "apiVersion: v1\nkind: Pod\nmetadata: {name: web-1, namespace: every, labels: {app: web}}\n"
    "spec: {serviceAccountName: web, containers: [{name: app, image: web:1, ports: [{containerPort: 8080}]}]}\n---\n"
    "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: web, namespace: every}\n---\n"
    "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: mesh, namespace: every}\ndata: {mesh: \"x: 1\"}\n---\n"
    "apiVersion: v1\nkind: Secret\nmetadata: {name: cacerts, namespace: every}\ntype: Opaque\n"
    "data: {ca-cert.pem: eA==}\n---\n"
    "apiVersion: v1\nkind: Secret\nmetadata: {name: tls-cert, namespace: every}\ntype: kubernetes.io/tls\n"
    "data: {tls.crt: eA==, tls.key: eA==}\n---\n"
    "apiVersion: v1\nkind: Secret\nmetadata: {name: password, namespace: every}\ntype: Opaque\n"
    "data: {p: eA==}\n---\n"
    "apiVersion: admissionregistration.k8s.io/v1\nkind: MutatingWebhookConfiguration\n"
    "metadata: {name: every-injector}\n"
    "webhooks: [{name: inject.every.example.com, sideEffects: None, admissionReviewVersions: [v1],\n"
    "  clientConfig: {url: \"https://127.0.0.1:1/inject\"}, failurePolicy: Ignore}]\n---\n"
    "apiVersion: networking.istio.io/v1alpha3\nkind: VirtualService\nmetadata: {name: vs, namespace: every}\n"
    "spec: {hosts: [web], http: [{timeout: 2s, route: [{destination: {host: web}}]}]}\n---\n"
    "apiVersion: networking.istio.io/v1beta1\nkind: DestinationRule\nmetadata: {name: dr, namespace: every}\n"
    "spec: {host: web, subsets: [{name: v1, labels: {version: v1}}]}\n---\n"
    "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: every}\n"
    "spec: {selector: {istio: ingressgateway}, servers: [{port: {number: 80, name: http, protocol: HTTP}, "
    "hosts: [\"*\"]}]}\n---\n"
    "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: se, namespace: every}\n"
    "spec: {hosts: [api.example.com], ports: [{number: 443, name: https, protocol: TLS}], resolution: DNS}\n---\n"
    "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: default, namespace: every}\n"
    "spec: {egress: [{hosts: [\"./*\"]}]}\n---\n"
    "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: every}\n"
    "spec: {mtls: {mode: STRICT}}\n---\n"
    "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: allow, namespace: every}\n"
    "spec: {action: ALLOW, rules: [{from: [{source: {namespaces: [every]}}]}]}\n---\n"
    "apiVersion: security.istio.io/v1beta1\nkind: RequestAuthentication\nmetadata: {name: jwt, namespace: every}\n"
    "spec: {jwtRules: [{issuer: \"https://issuer.example.com\", jwksUri: \"https://issuer.example.com/jwks\"}]}\n";

static void test_initial_sync_of_every_kind(void **state)
{
    (void)state;
    apply(every_kind_yaml);
    harness_t h;
    start_inf(&h, env.kubeconfig, CFG_KIND_NONE, 300);
    assert_true(informer_wait_synced(h.inf, 20000));
    static const struct {
        cfg_kind_t kind;
        const char *ns, *name;
    } want[] = {{CFG_Namespace, "", "every"},
                {CFG_Service, "every", "web"},
                {CFG_EndpointSlice, "every", "web-abc"},
                {CFG_Pod, "every", "web-1"},
                {CFG_ServiceAccount, "every", "web"},
                {CFG_ConfigMap, "every", "mesh"},
                {CFG_Secret, "every", "cacerts"},
                {CFG_Secret, "every", "tls-cert"},
                {CFG_MutatingWebhookConfiguration, "", "every-injector"},
                {CFG_VirtualService, "every", "vs"},
                {CFG_DestinationRule, "every", "dr"},
                {CFG_Gateway, "every", "gw"},
                {CFG_ServiceEntry, "every", "se"},
                {CFG_Sidecar, "every", "default"},
                {CFG_PeerAuthentication, "every", "default"},
                {CFG_AuthorizationPolicy, "every", "allow"},
                {CFG_RequestAuthentication, "every", "jwt"}};
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        if (!store_has(&h, want[i].kind, want[i].ns, want[i].name))
            fail_msg("%s %s/%s is not in the store", cfg_kind_info(want[i].kind)->name, want[i].ns, want[i].name);
    }
    /* Only the Secrets the mesh needs. */
    assert_false(store_has(&h, CFG_Secret, "every", "password"));

    cfg_snap_t *snap = cfg_store_snapshot(h.store);
    /* v1beta1 topology decodes */
    const cfg_object_t *es = cfg_snap_get(snap, CFG_EndpointSlice, "every", "web-abc");
    const cfg_EndpointSliceObject *esb = CFG_BODY(es, EndpointSlice);
    assert_int_equal(esb->endpoints.n, 1);
    assert_string_equal(esb->endpoints.v[0].addresses.v[0], "10.1.0.5");
    assert_int_equal(esb->endpoints.v[0].topology.n, 1);
    assert_string_equal(esb->endpoints.v[0].topology.v[0].str, "zone-a");
    /* the mesh kinds come typed, in the version the server serves */
    const cfg_object_t *vs = cfg_snap_get(snap, CFG_VirtualService, "every", "vs");
    assert_string_equal(vs->api_version, "networking.istio.io/v1");
    assert_true(CFG_BODY(vs, VirtualService)->spec->http.v[0].timeout == 2 * CFG_NS_PER_S);
    cfg_snap_release(snap);

    assert_true(store_matches_server(&h, CFG_ConfigMap, "every", "/api/v1/namespaces/every/configmaps", true));
    assert_true(store_matches_server(&h, CFG_Pod, "every", "/api/v1/namespaces/every/pods", true));
    assert_true(store_matches_server(&h, CFG_VirtualService, "every",
                                     "/apis/networking.istio.io/v1/namespaces/every/virtualservices", true));
    informer_kind_stats_t st = kind_stats(&h, CFG_Pod);
    assert_int_equal(st.lists, 1);
    assert_int_equal(st.relists, 0);
    assert_true(st.watches >= 1);
    stop_inf(&h);
}

/* Adds, updates and deletes arrive in order; bookmarks move the
 * resourceVersion without touching the store; a watch that times out resumes
 * without a relist. */
static void test_every_event_type(void **state)
{
    (void)state;
    create_ns("events");
    harness_t h;
    start_inf(&h, env.kubeconfig, CFG_ConfigMap, 4); /* bookmarks come 2 s before the timeout */
    assert_true(informer_wait_synced(h.inf, 20000));
    char rv[64], got[64];

    assert_int_equal(put_cm("events", "a", "1", true, rv, sizeof(rv)), 0);
    assert_true(WAIT_FOR(5000, store_rv(&h, CFG_ConfigMap, "events", "a", got, sizeof(got)) != NULL));
    assert_string_equal(got, rv);

    assert_int_equal(put_cm("events", "a", "2", false, rv, sizeof(rv)), 0);
    assert_true(WAIT_FOR(5000, store_rv(&h, CFG_ConfigMap, "events", "a", got, sizeof(got)) &&
                                   strcmp(got, rv) == 0));
    cfg_snap_t *snap = cfg_store_snapshot(h.store);
    const cfg_object_t *cm = cfg_snap_get(snap, CFG_ConfigMap, "events", "a");
    assert_string_equal(CFG_BODY(cm, ConfigMap)->data.v[0].str, "2");
    cfg_snap_release(snap);

    assert_int_equal(delete_cm("events", "a"), 0);
    assert_true(WAIT_FOR(5000, !store_has(&h, CFG_ConfigMap, "events", "a")));
    informer_kind_stats_t st = kind_stats(&h, CFG_ConfigMap);
    assert_true(st.events >= 3);

    /* across two watch timeouts: bookmarks, watch resumed, no relist */
    uint64_t watches = st.watches;
    assert_true(WAIT_FOR(12000, kind_stats(&h, CFG_ConfigMap).watches >= watches + 2));
    st = kind_stats(&h, CFG_ConfigMap);
    assert_true(st.bookmarks >= 1);
    assert_int_equal(st.relists, 0);
    assert_int_equal(st.failures, 0);
    assert_true(strtoull(st.resource_version, NULL, 10) >= strtoull(rv, NULL, 10));
    /* still flowing */
    assert_int_equal(put_cm("events", "b", "1", true, rv, sizeof(rv)), 0);
    assert_true(WAIT_FOR(5000, store_has(&h, CFG_ConfigMap, "events", "b")));
    stop_inf(&h);
}

/* N forced disconnects during M changes: the store ends equal to the server,
 * nothing lost, nothing left over. */
static void test_resume_across_disconnects(void **state)
{
    (void)state;
    enum { N = 6, M = 300, OBJS = 40 };
    create_ns("churn");
    fp_t *fp = proxy_start(env.apiserver_port, NULL);
    harness_t h;
    start_inf(&h, kubeconfig_via(fp_port(fp)), CFG_ConfigMap, 300);
    assert_true(informer_wait_synced(h.inf, 20000));
    bool exists[OBJS] = {false};
    unsigned seed = 7;
    int cuts = 0;
    for (int i = 0; i < M; i++) {
        int k = (int)(rand_r(&seed) % OBJS);
        char name[32], val[32];
        snprintf(name, sizeof(name), "cm-%d", k);
        snprintf(val, sizeof(val), "%d", i);
        if (!exists[k]) {
            assert_int_equal(put_cm("churn", name, val, true, NULL, 0), 0);
            exists[k] = true;
        } else if (rand_r(&seed) % 4 == 0) {
            assert_int_equal(delete_cm("churn", name), 0);
            exists[k] = false;
        } else {
            assert_int_equal(put_cm("churn", name, val, false, NULL, 0), 0);
        }
        if (i % (M / N) == M / N / 2) {
            fp_cut(fp);
            cuts++;
            sleep_ms(150); /* let it reconnect: each cut should break a live watch */
        }
    }
    bool equal = WAIT_FOR(20000, store_matches_server(&h, CFG_ConfigMap, "churn", "/api/v1/namespaces/churn/configmaps", false));
    if (!equal)
        store_matches_server(&h, CFG_ConfigMap, "churn", "/api/v1/namespaces/churn/configmaps", true);
    assert_true(equal);
    informer_kind_stats_t st = kind_stats(&h, CFG_ConfigMap);
    fprintf(stderr, "  %d cuts: %" PRIu64 " watch restarts, %" PRIu64 " relists, %" PRIu64 " events\n", cuts,
            st.watch_restarts, st.relists, st.events);
    assert_int_equal(cuts, N);
    assert_true(st.watch_restarts >= N / 2);
    stop_inf(&h);
    proxy_stop(fp);
}

/* While meshd is cut off, objects are deleted, added and changed and the API
 * server restarts (its watch cache starts over): the resumed watch gets 410
 * Gone, the informer relists, and the deletes it missed become deletes. */
static void test_relist_after_410(void **state)
{
    (void)state;
    create_ns("gone");
    char rv[64];
    assert_int_equal(put_cm("gone", "a", "1", true, NULL, 0), 0);
    assert_int_equal(put_cm("gone", "b", "1", true, NULL, 0), 0);
    assert_int_equal(put_cm("gone", "c", "1", true, NULL, 0), 0);
    fp_t *fp = proxy_start(env.apiserver_port, NULL);
    harness_t h;
    start_inf(&h, kubeconfig_via(fp_port(fp)), CFG_ConfigMap, 300);
    assert_true(informer_wait_synced(h.inf, 20000));
    assert_true(store_has(&h, CFG_ConfigMap, "gone", "b"));

    capture_start();
    fp_refuse(fp, true);
    fp_cut(fp);
    assert_int_equal(delete_cm("gone", "b"), 0);
    assert_int_equal(put_cm("gone", "d", "1", true, NULL, 0), 0);
    assert_int_equal(put_cm("gone", "a", "2", false, rv, sizeof(rv)), 0);
    assert_int_equal(tu_envtest_restart_apiserver(&env), 0);
    /* while disconnected the store keeps serving the last known state */
    assert_true(store_has(&h, CFG_ConfigMap, "gone", "b"));
    fp_refuse(fp, false);
    bool equal = WAIT_FOR(20000, store_matches_server(&h, CFG_ConfigMap, "gone", "/api/v1/namespaces/gone/configmaps", false));
    char *log = capture_stop();
    if (!equal)
        store_matches_server(&h, CFG_ConfigMap, "gone", "/api/v1/namespaces/gone/configmaps", true);
    assert_true(equal);
    assert_false(store_has(&h, CFG_ConfigMap, "gone", "b"));
    assert_true(store_has(&h, CFG_ConfigMap, "gone", "d"));
    informer_kind_stats_t st = kind_stats(&h, CFG_ConfigMap);
    assert_true(st.relists >= 1);
    assert_true(text_has_line(log, "ConfigMap: watch from resourceVersion", "expired"));
    assert_true(text_has_line(log, "ConfigMap: relisted", "1 deleted"));
    free(log);
    stop_inf(&h);
    proxy_stop(fp);
}

/* The API server goes away while every watch is open: the store keeps
 * serving, failures are logged at a bounded rate, and everything resumes
 * when it is back. */
static void test_server_down_and_back(void **state)
{
    (void)state;
    create_ns("down");
    harness_t h;
    start_inf(&h, env.kubeconfig, CFG_KIND_NONE, 300);
    assert_true(informer_wait_synced(h.inf, 20000));
    cfg_snap_t *snap = cfg_store_snapshot(h.store);
    size_t before = cfg_snap_count(snap, CFG_KIND_NONE);
    cfg_snap_release(snap);

    capture_start();
    assert_int_equal(tu_envtest_stop_apiserver(&env), 0);
    sleep_ms(4000);
    snap = cfg_store_snapshot(h.store);
    assert_int_equal(cfg_snap_count(snap, CFG_KIND_NONE), before);
    cfg_snap_release(snap);
    assert_true(informer_synced(h.inf));
    assert_int_equal(tu_envtest_restart_apiserver(&env), 0);
    assert_int_equal(put_cm("down", "after", "1", true, NULL, 0), 0);
    bool back = WAIT_FOR(20000, store_has(&h, CFG_ConfigMap, "down", "after"));
    char *log = capture_stop();
    assert_true(back);
    assert_true(kind_stats(&h, CFG_ConfigMap).failures >= 1);
    /* rate-limited: with 2 s between messages per kind, 4 s down is a few lines per kind */
    int lines = 0;
    for (const char *p = log; (p = strstr(p, "ConfigMap: ")) != NULL; p++)
        lines++;
    fprintf(stderr, "  %d ConfigMap log lines while down\n", lines);
    assert_true(lines >= 1 && lines <= 8);
    free(log);
    assert_true(WAIT_FOR(10000, store_matches_server(&h, CFG_ConfigMap, "down", "/api/v1/namespaces/down/configmaps", false)));
    stop_inf(&h);
}

/* Garbage on a watch stream (injected by a TLS-terminating proxy) is logged,
 * the watch restarts from the last resourceVersion, nothing crashes. */
static void test_malformed_watch_stream(void **state)
{
    (void)state;
    create_ns("garbage");
    char cert[PATH_MAX + 32], key[PATH_MAX + 32], ca[PATH_MAX + 32];
    snprintf(cert, sizeof(cert), "%s/apiserver.crt", env.pki_dir);
    snprintf(key, sizeof(key), "%s/apiserver.key", env.pki_dir);
    snprintf(ca, sizeof(ca), "%s/ca.crt", env.pki_dir);
    fp_tls_t tls = {cert, key, ca};
    fp_t *fp = proxy_start(env.apiserver_port, &tls);
    harness_t h;
    start_inf(&h, kubeconfig_via(fp_port(fp)), CFG_ConfigMap, 300);
    assert_true(informer_wait_synced(h.inf, 20000));
    assert_int_equal(put_cm("garbage", "before", "1", true, NULL, 0), 0);
    assert_true(WAIT_FOR(5000, store_has(&h, CFG_ConfigMap, "garbage", "before")));

    capture_start();
    fp_inject(fp, "watch=1", "{\"type\":\"ADDED\",\"object\":{\"metadata\":{\"name\":\n"
                             "{\"type\":\"MODIFIED\",\"object\":[]}\n");
    fp_cut(fp);
    bool injected = WAIT_FOR(10000, fp_injected(fp));
    bool restarted = WAIT_FOR(10000, kind_stats(&h, CFG_ConfigMap).malformed >= 1);
    assert_int_equal(put_cm("garbage", "after", "1", true, NULL, 0), 0);
    bool flowing = WAIT_FOR(10000, store_has(&h, CFG_ConfigMap, "garbage", "after"));
    char *log = capture_stop();
    assert_true(injected);
    assert_true(restarted);
    assert_true(flowing);
    assert_true(text_has_line(log, "ConfigMap: malformed watch event", "restarting the watch from resourceVersion"));
    assert_true(store_has(&h, CFG_ConfigMap, "garbage", "before"));
    free(log);
    stop_inf(&h);
    proxy_stop(fp);
}

/* kubectl applies a VirtualService that our CRD accepts but the validator
 * refuses (an RE2-incompatible regex): it is logged and skipped, valid ones
 * keep flowing, and a good object turned bad keeps its last good version. */
static void test_invalid_virtualservice(void **state)
{
    (void)state;
    create_ns("vs");
    harness_t h;
    start_inf(&h, env.kubeconfig, CFG_KIND_NONE, 300);
    assert_true(informer_wait_synced(h.inf, 20000));
    capture_start();
    static const char good[] = "apiVersion: networking.istio.io/v1\nkind: VirtualService\n"
                               "metadata: {name: good, namespace: vs}\n"
                               "spec: {hosts: [a], http: [{match: [{uri: {regex: \"/v[0-9]+/.*\"}}], "
                               "route: [{destination: {host: a}}]}]}\n";
    static const char bad[] = "apiVersion: networking.istio.io/v1\nkind: VirtualService\n"
                              "metadata: {name: bad, namespace: vs}\n"
                              "spec: {hosts: [b], http: [{match: [{uri: {regex: \"/(a)\\\\1\"}}], "
                              "route: [{destination: {host: b}}]}]}\n";
    apply(bad);
    apply(good);
    bool good_in = WAIT_FOR(5000, store_has(&h, CFG_VirtualService, "vs", "good"));
    bool logged = WAIT_FOR(5000, captured_has("rejected VirtualService vs/bad", "regex"));
    assert_true(good_in);
    assert_true(logged);
    assert_false(store_has(&h, CFG_VirtualService, "vs", "bad"));

    /* good turns bad: its last good version stays */
    char rv[64];
    assert_non_null(store_rv(&h, CFG_VirtualService, "vs", "good", rv, sizeof(rv)));
    static const char good_broken[] = "apiVersion: networking.istio.io/v1\nkind: VirtualService\n"
                                      "metadata: {name: good, namespace: vs}\n"
                                      "spec: {hosts: [a], http: [{match: [{uri: {regex: \"(?<=x)y\"}}], "
                                      "route: [{destination: {host: a}}]}]}\n";
    apply(good_broken);
    bool kept = WAIT_FOR(5000, captured_has("rejected VirtualService vs/good", "its last good version stays in effect"));
    char now_rv[64];
    assert_non_null(store_rv(&h, CFG_VirtualService, "vs", "good", now_rv, sizeof(now_rv)));
    assert_string_equal(now_rv, rv);
    /* and the rest keeps flowing */
    apply("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: third, namespace: vs}\n"
          "spec: {hosts: [c], http: [{route: [{destination: {host: c}}]}]}\n");
    bool third = WAIT_FOR(5000, store_has(&h, CFG_VirtualService, "vs", "third"));
    char *log = capture_stop();
    assert_true(kept);
    assert_true(third);
    assert_true(kind_stats(&h, CFG_VirtualService).invalid >= 2);
    /* the full error names the object and the field */
    assert_true(text_has_line(log, "VirtualService vs/bad: spec.http[0].match[0].uri.regex", NULL));
    free(log);
    stop_inf(&h);
}

/* ---- meshd itself ---- */

static int free_port(void)
{
    fp_t *p = fp_start(1, NULL); /* any bound-then-released loopback port */
    int port = fp_port(p);
    fp_stop(p);
    return port;
}

struct body {
    char *p;
    size_t len;
};

static size_t on_body(char *p, size_t size, size_t n, void *ud)
{
    struct body *b = ud;
    b->p = realloc(b->p, b->len + size * n + 1);
    memcpy(b->p + b->len, p, size * n);
    b->len += size * n;
    b->p[b->len] = '\0';
    return size * n;
}

/* GET http://127.0.0.1:port/path; returns the status (0 when unreachable)
 * and the body in *out (malloc'd, may be NULL). */
static long http_get(int port, const char *path, char **out)
{
    CURL *h = curl_easy_init();
    char url[256];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", port, path);
    struct body b = {0};
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 5000L);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    long code = 0;
    if (curl_easy_perform(h) == CURLE_OK)
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
    curl_easy_cleanup(h);
    if (out != NULL)
        *out = b.p;
    else
        free(b.p);
    return code;
}

static pid_t spawn_meshd(const char *const *args, const char *logpath)
{
    const char *build = getenv("MESH_BUILD");
    char bin[PATH_MAX];
    snprintf(bin, sizeof(bin), "%s/meshd", build ? build : "build");
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int fd = open(logpath, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        dup2(fd, 1);
        dup2(fd, 2);
        char *argv[32];
        int n = 0;
        argv[n++] = bin;
        for (; args[n - 1] != NULL && n < 31; n++)
            argv[n] = (char *)args[n - 1];
        argv[n] = NULL;
        execv(bin, argv);
        _exit(127);
    }
    return pid;
}

/* SIGTERM, then the exit status (or -1 if it had to be killed). */
static int stop_meshd(pid_t pid)
{
    kill(pid, SIGTERM);
    for (int i = 0; i < 100; i++) {
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid)
            return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
        sleep_ms(50);
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    return -1;
}

static void test_meshd_kube_mode(void **state)
{
    (void)state;
    install_crds();
    apply(every_kind_yaml);
    /* The API server is unreachable at first: meshd runs, not ready. */
    fp_t *fp = proxy_start(env.apiserver_port, NULL);
    fp_refuse(fp, true);
    int port = free_port();
    char addr[64], logpath[PATH_MAX + 32];
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", port);
    snprintf(logpath, sizeof(logpath), "%s/meshd.log", env.run_dir);
    /* only the cache is under test here: every other listener off (and none
     * outside loopback) */
    const char *args[] = {"--kubeconfig", kubeconfig_via(fp_port(fp)), "--debug-addr", addr,
                          "--grpc-addr", "off", "--secure-grpc-addr", "off", "--webhook-addr", "off",
                          "--monitoring-addr", "off", NULL};
    pid_t pid = spawn_meshd(args, logpath);
    bool up = WAIT_FOR(5000, http_get(port, "/ready", NULL) != 0);
    long not_ready = http_get(port, "/ready", NULL);
    fp_refuse(fp, false);
    bool ready = WAIT_FOR(20000, http_get(port, "/ready", NULL) == 200);

    char *body = NULL;
    long vs_status = http_get(port, "/debug/configz?kind=VirtualService&namespace=every", &body);
    char *bad = NULL;
    long bad_status = http_get(port, "/debug/configz?kind=Bogus", &bad);
    char *secrets = NULL;
    http_get(port, "/debug/configz?kind=Secret&namespace=every&name=tls-cert", &secrets);
    char *infz = NULL;
    http_get(port, "/debug/informerz", &infz);
    int status = stop_meshd(pid);
    proxy_stop(fp);

    FILE *f = fopen(logpath, "rb");
    char log[1 << 16] = "";
    if (f != NULL) {
        log[fread(log, 1, sizeof(log) - 1, f)] = '\0';
        fclose(f);
    }
    if (!ready)
        fprintf(stderr, "meshd's log:\n%s\n", log);
    assert_true(up);
    assert_int_equal(not_ready, 503);
    assert_true(ready);
    assert_int_equal(vs_status, 200);
    json_object *arr = json_tokener_parse(body);
    assert_non_null(arr);
    assert_int_equal(json_object_array_length(arr), 1);
    json_object *vs = json_object_array_get_idx(arr, 0), *m, *name, *spec;
    assert_true(json_object_object_get_ex(vs, "metadata", &m));
    assert_true(json_object_object_get_ex(m, "name", &name));
    assert_string_equal(json_object_get_string(name), "vs");
    assert_true(json_object_object_get_ex(vs, "spec", &spec));
    assert_non_null(strstr(json_object_to_json_string_ext(spec, JSON_C_TO_STRING_PLAIN), "\"timeout\":\"2s\""));
    json_object_put(arr);
    assert_int_equal(bad_status, 400);
    assert_non_null(strstr(bad, "unknown kind"));
    assert_non_null(strstr(secrets, "\"tls.key\":\"<redacted>\""));
    assert_null(strstr(secrets, "eA=="));
    assert_non_null(strstr(infz, "\"synced\":true"));
    assert_int_equal(status, 0);
    assert_non_null(strstr(log, "informers synced"));
    assert_non_null(strstr(log, "Pod: listed"));
    free(body);
    free(bad);
    free(secrets);
    free(infz);
}

static void test_meshd_local_mode_ready(void **state)
{
    (void)state;
    char dir[PATH_MAX + 16], file[PATH_MAX + 32], logpath[PATH_MAX + 32], addr[64];
    snprintf(dir, sizeof(dir), "%s/local", env.run_dir);
    mkdir(dir, 0700);
    snprintf(file, sizeof(file), "%s/cm.yaml", dir);
    FILE *f = fopen(file, "w");
    fputs("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: local-one}\ndata: {a: b}\n", f);
    fclose(f);
    snprintf(logpath, sizeof(logpath), "%s/meshd-local.log", env.run_dir);
    int port = free_port();
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", port);
    const char *args[] = {"--config-dir", dir, "--debug-addr", addr, "--grpc-addr", "off",
                          "--monitoring-addr", "off", NULL};
    pid_t pid = spawn_meshd(args, logpath);
    bool ready = WAIT_FOR(5000, http_get(port, "/ready", NULL) == 200);
    char *body = NULL;
    long code = http_get(port, "/debug/configz?kind=ConfigMap", &body);
    int status = stop_meshd(pid);
    assert_true(ready);
    assert_int_equal(code, 200);
    assert_non_null(strstr(body, "\"name\":\"local-one\""));
    assert_int_equal(status, 0);
    free(body);
}

static int group_setup(void **state)
{
    (void)state;
    curl_global_init(CURL_GLOBAL_DEFAULT);
    if (tu_envtest_start(&env, false) != 0)
        return -1;
    char err[512];
    kube_opts_t ko = {.kubeconfig = env.kubeconfig};
    admin = kube_client_new(&ko, err, sizeof(err));
    if (admin == NULL) {
        fprintf(stderr, "kube_client_new: %s\n", err);
        return -1;
    }
    return 0;
}

/* Stops whatever a failed test left running. */
static int each_teardown(void **state)
{
    (void)state;
    if (saved_stderr >= 0) {
        fflush(stderr);
        dup2(saved_stderr, 2);
        close(saved_stderr);
        saved_stderr = -1;
    }
    for (int i = 0; i < 4; i++) {
        if (live_harness[i].inf != NULL) {
            harness_t h = live_harness[i];
            stop_inf(&h);
        }
        if (live_proxy[i] != NULL)
            proxy_stop(live_proxy[i]);
    }
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    kube_client_free(admin);
    tu_envtest_stop(&env);
    curl_global_cleanup();
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_crd_installed_after_start, each_teardown),
        cmocka_unit_test_teardown(test_initial_sync_of_every_kind, each_teardown),
        cmocka_unit_test_teardown(test_every_event_type, each_teardown),
        cmocka_unit_test_teardown(test_resume_across_disconnects, each_teardown),
        cmocka_unit_test_teardown(test_relist_after_410, each_teardown),
        cmocka_unit_test_teardown(test_server_down_and_back, each_teardown),
        cmocka_unit_test_teardown(test_malformed_watch_stream, each_teardown),
        cmocka_unit_test_teardown(test_invalid_virtualservice, each_teardown),
        cmocka_unit_test_teardown(test_meshd_kube_mode, each_teardown),
        cmocka_unit_test_teardown(test_meshd_local_mode_ready, each_teardown),
    };
    const char *only = getenv("MESH_TEST_FILTER"); /* e.g. "test_malformed*" */
    if (only != NULL)
        cmocka_set_test_filter(only);
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
