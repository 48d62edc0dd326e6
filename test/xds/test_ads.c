/*
 * ADS server tests, in process: a config store with a few Services, Pods,
 * EndpointSlices, a VirtualService and a DestinationRule; the server on
 * 127.0.0.1 with an ephemeral port; test clients written on common/grpc's
 * client. Server and clients share the test thread's loop.
 */
#include <curl/curl.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../common/grpc.h"
#include "../../common/log.h"
#include "../../xds/xds.h"
#include "../../xds/xds_server.h"
#include "envoy/config/core/v3/base.pb-c.h"
#include "envoy/service/discovery/v3/discovery.pb-c.h"
#include "../adsclient.h"
#include "../testutil.h"

#define DEBOUNCE_MS 100

/* cli/proxystatus.c */
int meshctl_proxy_status(int argc, char **argv);
int meshctl_proxy_status_render(const char *syncz_json, FILE *out);

static const char *const WORLD =
    "apiVersion: v1\nkind: Service\nmetadata: {name: reviews, namespace: default}\n"
    "spec:\n  selector: {app: reviews}\n  ports: [{name: http, port: 9080, targetPort: 9080}]\n"
    "---\napiVersion: v1\nkind: Service\nmetadata: {name: ratings, namespace: default}\n"
    "spec:\n  selector: {app: ratings}\n  ports: [{name: http, port: 9080, targetPort: 9080}]\n"
    "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: reviews-v1-0\n  namespace: default\n"
    "  labels: {app: reviews, version: v1}\n"
    "spec:\n  serviceAccountName: reviews\n  containers: [{name: reviews, image: r}]\n"
    "status: {podIP: 10.1.0.31}\n"
    "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: reviews-v2-0\n  namespace: default\n"
    "  labels: {app: reviews, version: v2}\n"
    "spec:\n  serviceAccountName: reviews\n  containers: [{name: reviews, image: r}]\n"
    "status: {podIP: 10.1.0.32}\n"
    "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: sleep-a\n  namespace: default\n"
    "  labels: {app: sleep}\n"
    "spec:\n  containers: [{name: sleep, image: s}]\nstatus: {podIP: 10.1.0.50}\n"
    "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: sleep-b\n  namespace: default\n"
    "  labels: {app: sleep}\n"
    "spec:\n  containers: [{name: sleep, image: s}]\nstatus: {podIP: 10.1.0.51}\n"
    "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n"
    "metadata:\n  name: reviews-abcde\n  namespace: default\n"
    "  labels: {kubernetes.io/service-name: reviews}\naddressType: IPv4\n"
    "ports: [{name: http, port: 9080, protocol: TCP}]\n"
    "endpoints:\n- addresses: [10.1.0.31]\n  targetRef: {kind: Pod, name: reviews-v1-0, namespace: "
    "default}\n- addresses: [10.1.0.32]\n  targetRef: {kind: Pod, name: reviews-v2-0, namespace: "
    "default}\n"
    "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\n"
    "metadata: {name: reviews, namespace: default}\n"
    "spec:\n  host: reviews\n  subsets:\n  - {name: v1, labels: {version: v1}}\n"
    "  - {name: v2, labels: {version: v2}}\n"
    "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\n"
    "metadata: {name: reviews, namespace: default}\n"
    "spec:\n  hosts: [reviews]\n  http:\n  - route:\n    - destination: {host: reviews, subset: "
    "v1}\n";

#define CLUSTER_REVIEWS "outbound|9080||reviews.default.svc.cluster.local"
#define CLUSTER_REVIEWS_V1 "outbound|9080|v1|reviews.default.svc.cluster.local"
#define CLUSTER_RATINGS "outbound|9080||ratings.default.svc.cluster.local"
#define NODE_SLEEP_A "sidecar~10.1.0.50~sleep-a.default~default.svc.cluster.local"
#define NODE_SLEEP_B "sidecar~10.1.0.51~sleep-b.default~default.svc.cluster.local"

/* ---- fixture ---- */

typedef struct fx {
    loop_t *loop;
    cfg_store_t *store;
    grpc_server_t *grpc;
    xds_server_t *xs;
    char addr[64];
} fx_t;

static int setup(void **state)
{
    fx_t *fx = calloc(1, sizeof(*fx));
    fx->loop = loop_new();
    fx->store = cfg_store_new();
    cfg_store_apply_yaml(fx->store, WORLD);
    char err[256];
    grpc_server_opts_t go = {.listen = "127.0.0.1:0"};
    fx->grpc = grpc_server_new(fx->loop, &go, err, sizeof(err));
    if (fx->grpc == NULL)
        fail_msg("grpc server: %s", err);
    xds_server_opts_t xo = {.debounce_ms = DEBOUNCE_MS, .debounce_max_ms = 1000};
    fx->xs = xds_server_start(fx->loop, fx->grpc, fx->store, &xo);
    assert_non_null(fx->xs);
    snprintf(fx->addr, sizeof(fx->addr), "127.0.0.1:%d", grpc_server_port(fx->grpc));
    *state = fx;
    return 0;
}

/* A server that holds back a stream's next response while anything is
 * queued on it. */
static int setup_small_queue(void **state)
{
    setup(state);
    fx_t *fx = *state;
    grpc_server_free(fx->grpc);
    xds_server_stop(fx->xs);
    char err[256];
    grpc_server_opts_t go = {.listen = "127.0.0.1:0"};
    fx->grpc = grpc_server_new(fx->loop, &go, err, sizeof(err));
    assert_non_null(fx->grpc);
    xds_server_opts_t xo = {.debounce_ms = DEBOUNCE_MS, .debounce_max_ms = 1000, .max_queued = 1};
    fx->xs = xds_server_start(fx->loop, fx->grpc, fx->store, &xo);
    assert_non_null(fx->xs);
    snprintf(fx->addr, sizeof(fx->addr), "127.0.0.1:%d", grpc_server_port(fx->grpc));
    return 0;
}

static int teardown(void **state)
{
    fx_t *fx = *state;
    grpc_server_free(fx->grpc);
    for (int i = 0; i < 10; i++)
        loop_run_once(fx->loop, 0);
    xds_server_stop(fx->xs);
    cfg_store_free(fx->store);
    loop_free(fx->loop);
    free(fx);
    return 0;
}

/* ---- a test ADS client ---- */

typedef tads_t ads_t;

static ads_t *ads_open(fx_t *fx, const char *node_id, bool delta)
{
    return tads_open(fx->loop, fx->addr, node_id, delta);
}

static Envoy__Service__Discovery__V3__DiscoveryResponse *expect_sotw(ads_t *a, const char *type)
{
    Envoy__Service__Discovery__V3__DiscoveryResponse *r = tads_wait(a, 3000);
    if (r == NULL)
        fail_msg("no %s response (closed %d: %s)", type, a->closed, a->message);
    assert_string_equal(r->type_url, type);
    assert_true(r->nonce[0] != 0);
    assert_true(r->version_info[0] != 0);
    return r;
}

static Envoy__Service__Discovery__V3__DeltaDiscoveryResponse *expect_delta(ads_t *a,
                                                                           const char *type)
{
    Envoy__Service__Discovery__V3__DeltaDiscoveryResponse *r = tads_wait(a, 3000);
    if (r == NULL)
        fail_msg("no delta %s response (closed %d: %s)", type, a->closed, a->message);
    assert_string_equal(r->type_url, type);
    assert_true(r->nonce[0] != 0);
    return r;
}

/* Runs the loop for ms and asserts no response came. */
static void expect_quiet(ads_t *a, int ms)
{
    void *r = tads_wait(a, ms);
    if (r != NULL) {
        if (a->delta)
            fail_msg("unexpected delta response %s",
                     ((Envoy__Service__Discovery__V3__DeltaDiscoveryResponse *)r)->type_url);
        fail_msg("unexpected response %s",
                 ((Envoy__Service__Discovery__V3__DiscoveryResponse *)r)->type_url);
    }
}

/* The name of a serialized resource (name, or cluster_name for endpoints). */
static char *res_name(const char *type_url, const ProtobufCBinaryData *v)
{
    const ProtobufCMessageDescriptor *d = xds_descriptor_for_type_url(type_url);
    assert_non_null(d);
    ProtobufCMessage *m = protobuf_c_message_unpack(d, NULL, v->len, v->data);
    assert_non_null(m);
    const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field_by_name(d, "name");
    if (f == NULL)
        f = protobuf_c_message_descriptor_get_field_by_name(d, "cluster_name");
    assert_non_null(f);
    char *name = strdup(*(char **)((char *)m + f->offset));
    protobuf_c_message_free_unpacked(m, NULL);
    return name;
}

static bool sotw_has(const Envoy__Service__Discovery__V3__DiscoveryResponse *r, const char *name)
{
    for (size_t i = 0; i < r->n_resources; i++) {
        assert_string_equal(r->resources[i]->type_url, r->type_url);
        char *n = res_name(r->type_url, &r->resources[i]->value);
        bool eq = strcmp(n, name) == 0;
        free(n);
        if (eq)
            return true;
    }
    return false;
}

static bool delta_has(const Envoy__Service__Discovery__V3__DeltaDiscoveryResponse *r,
                      const char *name)
{
    for (size_t i = 0; i < r->n_resources; i++) {
        assert_non_null(r->resources[i]->resource);
        assert_string_equal(r->resources[i]->resource->type_url, r->type_url);
        char *n = res_name(r->type_url, &r->resources[i]->resource->value);
        assert_string_equal(n, r->resources[i]->name);
        assert_true(r->resources[i]->version[0] != 0);
        bool eq = strcmp(n, name) == 0;
        free(n);
        if (eq)
            return true;
    }
    return false;
}

static bool delta_removed(const Envoy__Service__Discovery__V3__DeltaDiscoveryResponse *r,
                          const char *name)
{
    for (size_t i = 0; i < r->n_removed_resources; i++)
        if (strcmp(r->removed_resources[i], name) == 0)
            return true;
    return false;
}

static void ack(ads_t *a, const Envoy__Service__Discovery__V3__DiscoveryResponse *r,
                const char *const *names, size_t n)
{
    tads_send(a, r->type_url, names, n, r->version_info, r->nonce, NULL);
}

static xds_server_stats_t stats(fx_t *fx)
{
    xds_server_stats_t st;
    xds_server_stats(fx->xs, &st);
    return st;
}

/* Subscribes to everything like Envoy: CDS, EDS of every cluster with EDS,
 * LDS, RDS "9080"; ACKs each. */
static void full_subscribe(ads_t *a)
{
    tads_send(a, XDS_CLUSTER_TYPE, NULL, 0, NULL, NULL, NULL);
    Envoy__Service__Discovery__V3__DiscoveryResponse *r = expect_sotw(a, XDS_CLUSTER_TYPE);
    ack(a, r, NULL, 0);
    const char *eds[] = {CLUSTER_REVIEWS, CLUSTER_REVIEWS_V1, CLUSTER_RATINGS};
    tads_send(a, XDS_ENDPOINT_TYPE, eds, 3, NULL, NULL, NULL);
    r = expect_sotw(a, XDS_ENDPOINT_TYPE);
    ack(a, r, eds, 3);
    tads_send(a, XDS_LISTENER_TYPE, NULL, 0, NULL, NULL, NULL);
    r = expect_sotw(a, XDS_LISTENER_TYPE);
    ack(a, r, NULL, 0);
    const char *rds[] = {"9080"};
    tads_send(a, XDS_ROUTE_TYPE, rds, 1, NULL, NULL, NULL);
    r = expect_sotw(a, XDS_ROUTE_TYPE);
    ack(a, r, rds, 1);
    expect_quiet(a, 50);
}

/* ---- tests ---- */

static void test_sotw_initial(void **state)
{
    fx_t *fx = *state;
    ads_t *a = ads_open(fx, NODE_SLEEP_A, false);
    tads_send(a, XDS_CLUSTER_TYPE, NULL, 0, NULL, NULL, NULL);
    Envoy__Service__Discovery__V3__DiscoveryResponse *cds = expect_sotw(a, XDS_CLUSTER_TYPE);
    assert_true(sotw_has(cds, CLUSTER_REVIEWS));
    assert_true(sotw_has(cds, CLUSTER_REVIEWS_V1));
    assert_true(sotw_has(cds, CLUSTER_RATINGS));
    ack(a, cds, NULL, 0);
    /* EDS: only the named clusters */
    const char *eds[] = {CLUSTER_REVIEWS};
    tads_send(a, XDS_ENDPOINT_TYPE, eds, 1, NULL, NULL, NULL);
    Envoy__Service__Discovery__V3__DiscoveryResponse *e = expect_sotw(a, XDS_ENDPOINT_TYPE);
    assert_int_equal(e->n_resources, 1);
    assert_true(sotw_has(e, CLUSTER_REVIEWS));
    ack(a, e, eds, 1);
    tads_send(a, XDS_LISTENER_TYPE, NULL, 0, NULL, NULL, NULL);
    Envoy__Service__Discovery__V3__DiscoveryResponse *l = expect_sotw(a, XDS_LISTENER_TYPE);
    assert_true(l->n_resources > 0);
    assert_true(sotw_has(l, "virtualOutbound"));
    ack(a, l, NULL, 0);
    const char *rds[] = {"9080"};
    tads_send(a, XDS_ROUTE_TYPE, rds, 1, NULL, NULL, NULL);
    Envoy__Service__Discovery__V3__DiscoveryResponse *rt = expect_sotw(a, XDS_ROUTE_TYPE);
    assert_int_equal(rt->n_resources, 1);
    assert_true(sotw_has(rt, "9080"));
    ack(a, rt, rds, 1);
    /* ACKs produce no more responses */
    expect_quiet(a, 200);
    xds_server_stats_t st = stats(fx);
    assert_int_equal(st.connected, 1);
    assert_int_equal(st.pushes[XDS_CLUSTER], 1);
    assert_int_equal(st.pushes[XDS_ROUTE], 1);
    tads_close(a);
}

static void test_nack_not_resent(void **state)
{
    fx_t *fx = *state;
    ads_t *a = ads_open(fx, NODE_SLEEP_A, false);
    tads_send(a, XDS_CLUSTER_TYPE, NULL, 0, NULL, NULL, NULL);
    Envoy__Service__Discovery__V3__DiscoveryResponse *cds = expect_sotw(a, XDS_CLUSTER_TYPE);
    /* NACK: previous (empty) version, the nonce, an error */
    tads_send(a, XDS_CLUSTER_TYPE, NULL, 0, "", cds->nonce, "cluster outbound|9080: bad thing");
    expect_quiet(a, 300);
    assert_int_equal(stats(fx).rejects[XDS_CLUSTER], 1);
    /* a push with no CDS change does not resend the rejected config */
    xds_server_push_all(fx->xs);
    expect_quiet(a, 200);
    /* a change of the clusters does */
    cfg_store_apply_yaml(fx->store, "apiVersion: v1\nkind: Service\nmetadata: {name: details, namespace: default}\n"
              "spec:\n  ports: [{name: http, port: 9080}]\n");
    Envoy__Service__Discovery__V3__DiscoveryResponse *again = expect_sotw(a, XDS_CLUSTER_TYPE);
    assert_true(sotw_has(again, "outbound|9080||details.default.svc.cluster.local"));
    assert_string_not_equal(again->nonce, cds->nonce);
    assert_string_not_equal(again->version_info, cds->version_info);
    tads_close(a);
}

static void test_stale_nonce_ignored(void **state)
{
    fx_t *fx = *state;
    ads_t *a = ads_open(fx, NODE_SLEEP_A, false);
    const char *eds[] = {CLUSTER_REVIEWS};
    tads_send(a, XDS_ENDPOINT_TYPE, eds, 1, NULL, NULL, NULL);
    Envoy__Service__Discovery__V3__DiscoveryResponse *e = expect_sotw(a, XDS_ENDPOINT_TYPE);
    /* a request for other names with an old nonce is ignored */
    const char *eds2[] = {CLUSTER_RATINGS};
    tads_send(a, XDS_ENDPOINT_TYPE, eds2, 1, "x", "not-a-nonce", NULL);
    expect_quiet(a, 200);
    /* with the current nonce it is answered */
    tads_send(a, XDS_ENDPOINT_TYPE, eds2, 1, e->version_info, e->nonce, NULL);
    Envoy__Service__Discovery__V3__DiscoveryResponse *e2 = expect_sotw(a, XDS_ENDPOINT_TYPE);
    assert_int_equal(e2->n_resources, 1);
    assert_true(sotw_has(e2, CLUSTER_RATINGS));
    tads_close(a);
}

static void test_change_pushed_after_debounce(void **state)
{
    fx_t *fx = *state;
    ads_t *a = ads_open(fx, NODE_SLEEP_A, false);
    full_subscribe(a);
    uint64_t t0 = loop_clock_ms();
    cfg_store_apply_yaml(fx->store, "apiVersion: networking.istio.io/v1\nkind: VirtualService\n"
              "metadata: {name: reviews, namespace: default}\n"
              "spec:\n  hosts: [reviews]\n  http:\n  - route:\n    - destination: {host: "
              "reviews, subset: v2}\n");
    Envoy__Service__Discovery__V3__DiscoveryResponse *r = tads_wait(a, 3000);
    uint64_t dt = loop_clock_ms() - t0;
    assert_non_null(r);
    /* a route change: RDS (and CDS only if clusters changed) */
    bool saw_rds = strcmp(r->type_url, XDS_ROUTE_TYPE) == 0;
    while (!saw_rds && (r = tads_wait(a, 1000)) != NULL)
        saw_rds = strcmp(r->type_url, XDS_ROUTE_TYPE) == 0;
    assert_true(saw_rds);
    assert_true(dt >= DEBOUNCE_MS - 5);
    assert_true(dt < DEBOUNCE_MS + 1500);
    tads_close(a);
}

static void test_endpoint_change_pushes_only_eds(void **state)
{
    fx_t *fx = *state;
    ads_t *a = ads_open(fx, NODE_SLEEP_A, false);
    full_subscribe(a);
    xds_server_stats_t before = stats(fx);
    cfg_store_apply_yaml(fx->store, "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n"
              "metadata:\n  name: reviews-abcde\n  namespace: default\n"
              "  labels: {kubernetes.io/service-name: reviews}\naddressType: IPv4\n"
              "ports: [{name: http, port: 9080, protocol: TCP}]\n"
              "endpoints:\n- addresses: [10.1.0.31]\n  targetRef: {kind: Pod, name: "
              "reviews-v1-0, namespace: default}\n");
    Envoy__Service__Discovery__V3__DiscoveryResponse *r = expect_sotw(a, XDS_ENDPOINT_TYPE);
    assert_true(sotw_has(r, CLUSTER_REVIEWS));
    expect_quiet(a, 300);
    xds_server_stats_t after = stats(fx);
    assert_int_equal(after.pushes[XDS_ENDPOINT], before.pushes[XDS_ENDPOINT] + 1);
    assert_int_equal(after.pushes[XDS_LISTENER], before.pushes[XDS_LISTENER]);
    assert_int_equal(after.pushes[XDS_CLUSTER], before.pushes[XDS_CLUSTER]);
    assert_int_equal(after.pushes[XDS_ROUTE], before.pushes[XDS_ROUTE]);
    tads_close(a);
}

static void test_named_subscribe_unsubscribe(void **state)
{
    fx_t *fx = *state;
    ads_t *a = ads_open(fx, NODE_SLEEP_A, false);
    const char *one[] = {CLUSTER_REVIEWS};
    tads_send(a, XDS_ENDPOINT_TYPE, one, 1, NULL, NULL, NULL);
    Envoy__Service__Discovery__V3__DiscoveryResponse *r = expect_sotw(a, XDS_ENDPOINT_TYPE);
    assert_int_equal(r->n_resources, 1);
    const char *two[] = {CLUSTER_REVIEWS, CLUSTER_RATINGS};
    tads_send(a, XDS_ENDPOINT_TYPE, two, 2, r->version_info, r->nonce, NULL);
    r = expect_sotw(a, XDS_ENDPOINT_TYPE);
    assert_int_equal(r->n_resources, 2);
    assert_true(sotw_has(r, CLUSTER_REVIEWS));
    assert_true(sotw_has(r, CLUSTER_RATINGS));
    const char *last[] = {CLUSTER_RATINGS};
    tads_send(a, XDS_ENDPOINT_TYPE, last, 1, r->version_info, r->nonce, NULL);
    r = expect_sotw(a, XDS_ENDPOINT_TYPE);
    assert_int_equal(r->n_resources, 1);
    assert_true(sotw_has(r, CLUSTER_RATINGS));
    /* the same names again (an ACK) gets nothing */
    tads_send(a, XDS_ENDPOINT_TYPE, last, 1, r->version_info, r->nonce, NULL);
    expect_quiet(a, 200);
    tads_close(a);
}

static void test_reconnect_full_state(void **state)
{
    fx_t *fx = *state;
    ads_t *a = ads_open(fx, NODE_SLEEP_A, false);
    full_subscribe(a);
    tads_close(a);
    for (int i = 0; i < 20 && stats(fx).connected > 0; i++)
        loop_run_once(fx->loop, 10);
    assert_int_equal(stats(fx).connected, 0);
    a = ads_open(fx, NODE_SLEEP_A, false);
    tads_send(a, XDS_CLUSTER_TYPE, NULL, 0, "some-old-version", NULL, NULL);
    Envoy__Service__Discovery__V3__DiscoveryResponse *r = expect_sotw(a, XDS_CLUSTER_TYPE);
    assert_true(sotw_has(r, CLUSTER_REVIEWS));
    tads_send(a, XDS_LISTENER_TYPE, NULL, 0, "some-old-version", NULL, NULL);
    r = expect_sotw(a, XDS_LISTENER_TYPE);
    assert_true(r->n_resources > 0);
    tads_close(a);
}

static void test_identical_proxies_share(void **state)
{
    fx_t *fx = *state;
    ads_t *a = ads_open(fx, NODE_SLEEP_A, false);
    ads_t *b = ads_open(fx, NODE_SLEEP_B, false);
    tads_send(a, XDS_CLUSTER_TYPE, NULL, 0, NULL, NULL, NULL);
    Envoy__Service__Discovery__V3__DiscoveryResponse *ra = expect_sotw(a, XDS_CLUSTER_TYPE);
    xds_server_stats_t s1 = stats(fx);
    tads_send(b, XDS_CLUSTER_TYPE, NULL, 0, NULL, NULL, NULL);
    Envoy__Service__Discovery__V3__DiscoveryResponse *rb = expect_sotw(b, XDS_CLUSTER_TYPE);
    xds_server_stats_t s2 = stats(fx);
    /* the same bytes, sent from the cache */
    assert_int_equal(a->rawlen[0], b->rawlen[0]);
    assert_memory_equal(a->raw[0], b->raw[0], a->rawlen[0]);
    assert_string_equal(ra->version_info, rb->version_info);
    assert_int_equal(s2.responses_shared, s1.responses_shared + 1);
    assert_int_equal(s2.responses_encoded, s1.responses_encoded);
    /* and one interned cluster set for both */
    ack(a, ra, NULL, 0);
    ack(b, rb, NULL, 0);
    cfg_store_apply_yaml(fx->store, "apiVersion: v1\nkind: Service\nmetadata: {name: details, namespace: default}\n"
              "spec:\n  ports: [{name: http, port: 9080}]\n");
    xds_server_stats_t s3 = stats(fx);
    ra = expect_sotw(a, XDS_CLUSTER_TYPE);
    rb = expect_sotw(b, XDS_CLUSTER_TYPE);
    xds_server_stats_t s4 = stats(fx);
    assert_int_equal(s4.responses_encoded, s3.responses_encoded + 1);
    assert_int_equal(s4.responses_shared, s3.responses_shared + 1);
    tads_close(a);
    tads_close(b);
}

static void test_backpressure_holds_then_sends(void **state)
{
    fx_t *fx = *state;
    ads_t *a = ads_open(fx, NODE_SLEEP_A, false);
    /* every response waits for the previous one to drain, none is lost */
    full_subscribe(a);
    cfg_store_apply_yaml(fx->store, "apiVersion: v1\nkind: Service\nmetadata: {name: details, namespace: default}\n"
              "spec:\n  ports: [{name: http, port: 9080}]\n");
    Envoy__Service__Discovery__V3__DiscoveryResponse *r = expect_sotw(a, XDS_CLUSTER_TYPE);
    assert_true(sotw_has(r, "outbound|9080||details.default.svc.cluster.local"));
    /* the route change was held back behind CDS and follows once it drained */
    r = expect_sotw(a, XDS_ROUTE_TYPE);
    assert_true(sotw_has(r, "9080"));
    tads_close(a);
}

static void test_debounce_max_bounds_delay(void **state)
{
    fx_t *fx = *state;
    ads_t *a = ads_open(fx, NODE_SLEEP_A, false);
    full_subscribe(a);
    /* a change every 40 ms never leaves 100 ms of quiet: the 1 s maximum
     * forces the push while changes keep coming */
    uint64_t t0 = loop_clock_ms();
    void *r = NULL;
    for (int i = 0; i < 60 && r == NULL; i++) {
        char yaml[512];
        snprintf(yaml, sizeof(yaml),
                 "apiVersion: v1\nkind: Service\nmetadata: {name: extra-%d, namespace: "
                 "default}\nspec:\n  ports: [{name: http, port: 9080}]\n",
                 i);
        cfg_store_apply_yaml(fx->store, yaml);
        r = tads_wait(a, 40);
    }
    uint64_t dt = loop_clock_ms() - t0;
    assert_non_null(r);
    assert_true(dt >= 900);
    assert_true(dt < 2000);
    tads_close(a);
}

static void test_bad_node_rejected(void **state)
{
    fx_t *fx = *state;
    ads_t *a = ads_open(fx, "nonsense", false);
    tads_send(a, XDS_CLUSTER_TYPE, NULL, 0, NULL, NULL, NULL);
    for (int i = 0; i < 300 && !a->closed; i++)
        loop_run_once(fx->loop, 10);
    assert_true(a->closed);
    assert_int_equal(a->status, GRPC_INVALID_ARGUMENT);
    assert_non_null(strstr(a->message, "nonsense"));
    tads_close(a);
    /* no node at all */
    a = ads_open(fx, NULL, false);
    a->sent_node = true;
    tads_send(a, XDS_CLUSTER_TYPE, NULL, 0, NULL, NULL, NULL);
    for (int i = 0; i < 300 && !a->closed; i++)
        loop_run_once(fx->loop, 10);
    assert_int_equal(a->status, GRPC_INVALID_ARGUMENT);
    assert_non_null(strstr(a->message, "node"));
    assert_int_equal(stats(fx).connected, 0);
    tads_close(a);
}

static void test_delta(void **state)
{
    fx_t *fx = *state;
    ads_t *a = ads_open(fx, NODE_SLEEP_A, true);
    /* wildcard CDS */
    tads_send_delta(a, XDS_CLUSTER_TYPE, NULL, 0, NULL, 0, NULL, NULL);
    Envoy__Service__Discovery__V3__DeltaDiscoveryResponse *r = expect_delta(a, XDS_CLUSTER_TYPE);
    assert_true(delta_has(r, CLUSTER_REVIEWS));
    assert_true(delta_has(r, CLUSTER_RATINGS));
    assert_int_equal(r->n_removed_resources, 0);
    tads_send_delta(a, XDS_CLUSTER_TYPE, NULL, 0, NULL, 0, r->nonce, NULL);
    /* named EDS */
    const char *sub[] = {CLUSTER_REVIEWS};
    tads_send_delta(a, XDS_ENDPOINT_TYPE, sub, 1, NULL, 0, NULL, NULL);
    r = expect_delta(a, XDS_ENDPOINT_TYPE);
    assert_int_equal(r->n_resources, 1);
    assert_true(delta_has(r, CLUSTER_REVIEWS));
    tads_send_delta(a, XDS_ENDPOINT_TYPE, NULL, 0, NULL, 0, r->nonce, NULL);
    const char *sub2[] = {CLUSTER_RATINGS};
    tads_send_delta(a, XDS_ENDPOINT_TYPE, sub2, 1, NULL, 0, r->nonce, NULL);
    r = expect_delta(a, XDS_ENDPOINT_TYPE);
    assert_int_equal(r->n_resources, 1); /* only the new one */
    assert_true(delta_has(r, CLUSTER_RATINGS));
    tads_send_delta(a, XDS_ENDPOINT_TYPE, NULL, 0, NULL, 0, r->nonce, NULL);
    /* unsubscribe: no response, and later changes of it are not sent */
    tads_send_delta(a, XDS_ENDPOINT_TYPE, NULL, 0, sub2, 1, r->nonce, NULL);
    expect_quiet(a, 150);
    /* deleting a service removes its cluster */
    cfg_store_delete(fx->store, CFG_Service, "default", "ratings");
    bool removed = false;
    for (int i = 0; i < 4 && !removed; i++) {
        r = tads_wait(a, 2000);
        assert_non_null(r);
        if (strcmp(r->type_url, XDS_CLUSTER_TYPE) == 0) {
            removed = delta_removed(r, CLUSTER_RATINGS);
            assert_false(delta_has(r, CLUSTER_REVIEWS)); /* unchanged: not resent */
            /* NACK it */
            tads_send_delta(a, XDS_CLUSTER_TYPE, NULL, 0, NULL, 0, r->nonce, "bad cluster");
        } else {
            assert_false(delta_has(r, CLUSTER_RATINGS));
        }
    }
    assert_true(removed);
    expect_quiet(a, 200);
    assert_int_equal(stats(fx).rejects[XDS_CLUSTER], 1);
    tads_close(a);
}

static void test_delta_initial_versions(void **state)
{
    fx_t *fx = *state;
    ads_t *a = ads_open(fx, NODE_SLEEP_A, true);
    tads_send_delta(a, XDS_CLUSTER_TYPE, NULL, 0, NULL, 0, NULL, NULL);
    Envoy__Service__Discovery__V3__DeltaDiscoveryResponse *r = expect_delta(a, XDS_CLUSTER_TYPE);
    size_t n = r->n_resources;
    assert_true(n >= 3);
    /* reconnect claiming every resource at its current version: nothing resent */
    Envoy__Service__Discovery__V3__DeltaDiscoveryRequest__InitialResourceVersionsEntry **ents =
        calloc(n, sizeof(*ents));
    for (size_t i = 0; i < n; i++) {
        ents[i] = calloc(1, sizeof(**ents));
        envoy__service__discovery__v3__delta_discovery_request__initial_resource_versions_entry__init(
            ents[i]);
        ents[i]->key = r->resources[i]->name;
        ents[i]->value = r->resources[i]->version;
    }
    ads_t *b = ads_open(fx, NODE_SLEEP_A, true);
    Envoy__Service__Discovery__V3__DeltaDiscoveryRequest req =
        ENVOY__SERVICE__DISCOVERY__V3__DELTA_DISCOVERY_REQUEST__INIT;
    Envoy__Config__Core__V3__Node node = ENVOY__CONFIG__CORE__V3__NODE__INIT;
    node.id = (char *)NODE_SLEEP_A;
    req.node = &node;
    req.type_url = (char *)XDS_CLUSTER_TYPE;
    req.initial_resource_versions = ents;
    req.n_initial_resource_versions = n;
    size_t len = envoy__service__discovery__v3__delta_discovery_request__get_packed_size(&req);
    uint8_t *buf = malloc(len);
    envoy__service__discovery__v3__delta_discovery_request__pack(&req, buf);
    assert_int_equal(grpc_call_send(b->call, buf, len), 0);
    free(buf);
    Envoy__Service__Discovery__V3__DeltaDiscoveryResponse *rb = expect_delta(b, XDS_CLUSTER_TYPE);
    assert_int_equal(rb->n_resources, 0);
    assert_int_equal(rb->n_removed_resources, 0);
    for (size_t i = 0; i < n; i++)
        free(ents[i]);
    free(ents);
    tads_close(a);
    tads_close(b);
}

/* ---- debug pages and metrics ---- */

static void test_debug_and_metrics(void **state)
{
    fx_t *fx = *state;
    char err[256];
    debug_server_t *dbg = debug_server_start("127.0.0.1:0", err, sizeof(err));
    assert_non_null(dbg);
    xds_server_add_debug(fx->xs, dbg);
    xds_server_add_metrics(fx->xs, dbg);
    ads_t *a = ads_open(fx, NODE_SLEEP_A, false);
    tads_send(a, XDS_CLUSTER_TYPE, NULL, 0, NULL, NULL, NULL);
    Envoy__Service__Discovery__V3__DiscoveryResponse *cds = expect_sotw(a, XDS_CLUSTER_TYPE);
    ack(a, cds, NULL, 0);
    tads_send(a, XDS_LISTENER_TYPE, NULL, 0, NULL, NULL, NULL);
    Envoy__Service__Discovery__V3__DiscoveryResponse *lds = expect_sotw(a, XDS_LISTENER_TYPE);
    tads_send(a, XDS_LISTENER_TYPE, NULL, 0, "", lds->nonce, "listener rejected: bad filter");
    expect_quiet(a, 100);

    long status;
    char *s = tu_http_get(debug_server_port(dbg), "/debug/syncz", &status);
    assert_int_equal(status, 200);
    json_object *j = json_tokener_parse(s);
    assert_non_null(j);
    assert_int_equal(json_object_array_length(j), 1);
    json_object *p = json_object_array_get_idx(j, 0);
    json_object *v, *t;
    assert_true(json_object_object_get_ex(p, "proxy", &v));
    assert_string_equal(json_object_get_string(v), NODE_SLEEP_A);
    assert_true(json_object_object_get_ex(p, "cds", &t));
    assert_true(json_object_object_get_ex(t, "acked_nonce", &v));
    assert_string_equal(json_object_get_string(v), cds->nonce);
    assert_true(json_object_object_get_ex(p, "lds", &t));
    assert_true(json_object_object_get_ex(t, "nack", &v));
    assert_non_null(strstr(json_object_get_string(v), "bad filter"));
    json_object_put(j);
    /* meshctl proxy-status renders it */
    char *out = NULL;
    size_t outlen = 0;
    FILE *f = open_memstream(&out, &outlen);
    assert_int_equal(meshctl_proxy_status_render(s, f), 0);
    fclose(f);
    char *row = strstr(out, "\nsleep-a.default ");
    assert_non_null(row);
    assert_non_null(strstr(out, "NAME"));
    char *cdsp = strstr(row, "SYNCED"), *ldsp = strstr(row, "STALE (NACKed)"),
         *edsp = strstr(row, "NOT SENT");
    assert_non_null(cdsp);
    assert_non_null(ldsp);
    assert_non_null(edsp);
    assert_true(cdsp < ldsp && ldsp < edsp); /* columns CDS, LDS, EDS, RDS */
    free(out);
    free(s);
    char addr[64];
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", debug_server_port(dbg));
    char *argv[] = {"proxy-status", "--debug-addr", addr, NULL};
    assert_int_equal(meshctl_proxy_status(3, argv), 0);

    s = tu_http_get(debug_server_port(dbg), "/debug/config_dump?proxyID=" NODE_SLEEP_A, &status);
    assert_int_equal(status, 200);
    assert_non_null(strstr(s, CLUSTER_REVIEWS_V1));
    free(s);
    s = tu_http_get(debug_server_port(dbg), "/debug/config_dump?proxyID=nobody", &status);
    assert_int_equal(status, 404);
    free(s);

    s = tu_http_get(debug_server_port(dbg), "/metrics", &status);
    assert_int_equal(status, 200);
    assert_non_null(strstr(s, "pilot_xds 1\n"));
    assert_non_null(strstr(s, "pilot_xds_pushes{type=\"cds\"} 1\n"));
    assert_non_null(strstr(s, "pilot_total_xds_rejects{type=\"lds\"} 1\n"));
    assert_non_null(strstr(s, "pilot_proxy_convergence_time_bucket{le=\"+Inf\"}"));
    free(s);
    debug_server_stop(dbg);
    tads_close(a);
}

int main(void)
{
    log_set_level(LOG_ERROR);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_sotw_initial, setup, teardown),
        cmocka_unit_test_setup_teardown(test_nack_not_resent, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stale_nonce_ignored, setup, teardown),
        cmocka_unit_test_setup_teardown(test_change_pushed_after_debounce, setup, teardown),
        cmocka_unit_test_setup_teardown(test_endpoint_change_pushes_only_eds, setup, teardown),
        cmocka_unit_test_setup_teardown(test_named_subscribe_unsubscribe, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reconnect_full_state, setup, teardown),
        cmocka_unit_test_setup_teardown(test_identical_proxies_share, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_node_rejected, setup, teardown),
        cmocka_unit_test_setup_teardown(test_backpressure_holds_then_sends, setup_small_queue,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_debounce_max_bounds_delay, setup, teardown),
        cmocka_unit_test_setup_teardown(test_delta, setup, teardown),
        cmocka_unit_test_setup_teardown(test_delta_initial_versions, setup, teardown),
        cmocka_unit_test_setup_teardown(test_debug_and_metrics, setup, teardown),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return rc;
}
