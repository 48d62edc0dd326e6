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

static void put_cb(void *ud, cfg_object_t *obj, const cfg_diag_t *diag)
{
    (void)diag;
    if (obj == NULL)
        return;
    cfg_store_put(ud, obj);
    cfg_object_unref(obj);
}

static void apply(fx_t *fx, const char *yaml)
{
    cfg_store_begin(fx->store);
    cfg_load_buffer(yaml, strlen(yaml), DOC_FMT_YAML, NULL, put_cb, fx->store);
    cfg_store_commit(fx->store);
}

static int setup(void **state)
{
    fx_t *fx = calloc(1, sizeof(*fx));
    fx->loop = loop_new();
    fx->store = cfg_store_new();
    apply(fx, WORLD);
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

#define MAXMSG 128

typedef struct ads {
    fx_t *fx;
    grpc_client_t *c;
    grpc_call_t *call;
    bool delta;
    bool sent_node;
    const char *node_id;
    void *msgs[MAXMSG];
    uint8_t *raw[MAXMSG];
    size_t rawlen[MAXMSG];
    int nmsgs, next;
    bool closed;
    int status;
    char message[256];
} ads_t;

static void on_msg(grpc_call_t *call, void *arg, const uint8_t *msg, size_t len)
{
    (void)call;
    ads_t *a = arg;
    assert_true(a->nmsgs < MAXMSG);
    void *m = a->delta
                  ? (void *)envoy__service__discovery__v3__delta_discovery_response__unpack(
                        NULL, len, msg)
                  : (void *)envoy__service__discovery__v3__discovery_response__unpack(NULL, len,
                                                                                      msg);
    assert_non_null(m);
    a->raw[a->nmsgs] = malloc(len);
    memcpy(a->raw[a->nmsgs], msg, len);
    a->rawlen[a->nmsgs] = len;
    a->msgs[a->nmsgs++] = m;
}

static void on_close(grpc_call_t *call, void *arg, int status, const char *message)
{
    (void)call;
    ads_t *a = arg;
    a->closed = true;
    a->call = NULL;
    a->status = status;
    snprintf(a->message, sizeof(a->message), "%s", message);
}

static const grpc_call_cbs_t CBS = {.on_message = on_msg, .on_close = on_close};

static ads_t *ads_open(fx_t *fx, const char *node_id, bool delta)
{
    ads_t *a = calloc(1, sizeof(*a));
    a->fx = fx;
    a->delta = delta;
    a->node_id = node_id;
    char err[256];
    grpc_client_opts_t co = {0};
    a->c = grpc_client_connect(fx->loop, fx->addr, &co, err, sizeof(err));
    if (a->c == NULL)
        fail_msg("connect: %s", err);
    a->call = grpc_call_start(a->c, delta ? XDS_ADS_DELTA_PATH : XDS_ADS_SOTW_PATH, NULL, 0, &CBS,
                              a);
    assert_non_null(a->call);
    return a;
}

static void ads_close(ads_t *a)
{
    grpc_client_free(a->c);
    for (int i = 0; i < 5; i++)
        loop_run_once(a->fx->loop, 0);
    for (int i = 0; i < a->nmsgs; i++) {
        if (a->delta)
            envoy__service__discovery__v3__delta_discovery_response__free_unpacked(a->msgs[i],
                                                                                   NULL);
        else
            envoy__service__discovery__v3__discovery_response__free_unpacked(a->msgs[i], NULL);
        free(a->raw[i]);
    }
    free(a);
}

typedef struct node_buf {
    Envoy__Config__Core__V3__Node node;
} node_buf_t;

static void ads_send(ads_t *a, const char *type_url, const char *const *names, size_t nnames,
                     const char *version, const char *nonce, const char *error)
{
    Envoy__Service__Discovery__V3__DiscoveryRequest req =
        ENVOY__SERVICE__DISCOVERY__V3__DISCOVERY_REQUEST__INIT;
    Envoy__Config__Core__V3__Node node = ENVOY__CONFIG__CORE__V3__NODE__INIT;
    Google__Rpc__Status st = GOOGLE__RPC__STATUS__INIT;
    if (!a->sent_node) {
        node.id = (char *)a->node_id;
        req.node = &node;
        a->sent_node = true;
    }
    req.type_url = (char *)type_url;
    req.resource_names = (char **)names;
    req.n_resource_names = nnames;
    req.version_info = (char *)(version ? version : "");
    req.response_nonce = (char *)(nonce ? nonce : "");
    if (error) {
        st.code = 3;
        st.message = (char *)error;
        req.error_detail = &st;
    }
    size_t len = envoy__service__discovery__v3__discovery_request__get_packed_size(&req);
    uint8_t *buf = malloc(len + 1);
    envoy__service__discovery__v3__discovery_request__pack(&req, buf);
    assert_int_equal(grpc_call_send(a->call, buf, len), 0);
    free(buf);
}

static void ads_send_delta(ads_t *a, const char *type_url, const char *const *sub, size_t nsub,
                           const char *const *unsub, size_t nunsub, const char *nonce,
                           const char *error)
{
    Envoy__Service__Discovery__V3__DeltaDiscoveryRequest req =
        ENVOY__SERVICE__DISCOVERY__V3__DELTA_DISCOVERY_REQUEST__INIT;
    Envoy__Config__Core__V3__Node node = ENVOY__CONFIG__CORE__V3__NODE__INIT;
    Google__Rpc__Status st = GOOGLE__RPC__STATUS__INIT;
    if (!a->sent_node) {
        node.id = (char *)a->node_id;
        req.node = &node;
        a->sent_node = true;
    }
    req.type_url = (char *)type_url;
    req.resource_names_subscribe = (char **)sub;
    req.n_resource_names_subscribe = nsub;
    req.resource_names_unsubscribe = (char **)unsub;
    req.n_resource_names_unsubscribe = nunsub;
    req.response_nonce = (char *)(nonce ? nonce : "");
    if (error) {
        st.code = 3;
        st.message = (char *)error;
        req.error_detail = &st;
    }
    size_t len = envoy__service__discovery__v3__delta_discovery_request__get_packed_size(&req);
    uint8_t *buf = malloc(len + 1);
    envoy__service__discovery__v3__delta_discovery_request__pack(&req, buf);
    assert_int_equal(grpc_call_send(a->call, buf, len), 0);
    free(buf);
}

/* The next response (within timeout_ms), or NULL. */
static void *ads_wait(ads_t *a, int timeout_ms)
{
    uint64_t end = loop_clock_ms() + (uint64_t)timeout_ms;
    while (a->next >= a->nmsgs && !a->closed && loop_clock_ms() < end)
        loop_run_once(a->fx->loop, 5);
    if (a->next < a->nmsgs)
        return a->msgs[a->next++];
    return NULL;
}

static Envoy__Service__Discovery__V3__DiscoveryResponse *expect_sotw(ads_t *a, const char *type)
{
    Envoy__Service__Discovery__V3__DiscoveryResponse *r = ads_wait(a, 3000);
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
    Envoy__Service__Discovery__V3__DeltaDiscoveryResponse *r = ads_wait(a, 3000);
    if (r == NULL)
        fail_msg("no delta %s response (closed %d: %s)", type, a->closed, a->message);
    assert_string_equal(r->type_url, type);
    assert_true(r->nonce[0] != 0);
    return r;
}

/* Runs the loop for ms and asserts no response came. */
static void expect_quiet(ads_t *a, int ms)
{
    void *r = ads_wait(a, ms);
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
    ads_send(a, r->type_url, names, n, r->version_info, r->nonce, NULL);
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
    ads_send(a, XDS_CLUSTER_TYPE, NULL, 0, NULL, NULL, NULL);
    Envoy__Service__Discovery__V3__DiscoveryResponse *r = expect_sotw(a, XDS_CLUSTER_TYPE);
    ack(a, r, NULL, 0);
    const char *eds[] = {CLUSTER_REVIEWS, CLUSTER_REVIEWS_V1, CLUSTER_RATINGS};
    ads_send(a, XDS_ENDPOINT_TYPE, eds, 3, NULL, NULL, NULL);
    r = expect_sotw(a, XDS_ENDPOINT_TYPE);
    ack(a, r, eds, 3);
    ads_send(a, XDS_LISTENER_TYPE, NULL, 0, NULL, NULL, NULL);
    r = expect_sotw(a, XDS_LISTENER_TYPE);
    ack(a, r, NULL, 0);
    const char *rds[] = {"9080"};
    ads_send(a, XDS_ROUTE_TYPE, rds, 1, NULL, NULL, NULL);
    r = expect_sotw(a, XDS_ROUTE_TYPE);
    ack(a, r, rds, 1);
    expect_quiet(a, 50);
}

/* ---- tests ---- */

static void test_sotw_initial(void **state)
{
    fx_t *fx = *state;
    ads_t *a = ads_open(fx, NODE_SLEEP_A, false);
    ads_send(a, XDS_CLUSTER_TYPE, NULL, 0, NULL, NULL, NULL);
    Envoy__Service__Discovery__V3__DiscoveryResponse *cds = expect_sotw(a, XDS_CLUSTER_TYPE);
    assert_true(sotw_has(cds, CLUSTER_REVIEWS));
    assert_true(sotw_has(cds, CLUSTER_REVIEWS_V1));
    assert_true(sotw_has(cds, CLUSTER_RATINGS));
    ack(a, cds, NULL, 0);
    /* EDS: only the named clusters */
    const char *eds[] = {CLUSTER_REVIEWS};
    ads_send(a, XDS_ENDPOINT_TYPE, eds, 1, NULL, NULL, NULL);
    Envoy__Service__Discovery__V3__DiscoveryResponse *e = expect_sotw(a, XDS_ENDPOINT_TYPE);
    assert_int_equal(e->n_resources, 1);
    assert_true(sotw_has(e, CLUSTER_REVIEWS));
    ack(a, e, eds, 1);
    ads_send(a, XDS_LISTENER_TYPE, NULL, 0, NULL, NULL, NULL);
    Envoy__Service__Discovery__V3__DiscoveryResponse *l = expect_sotw(a, XDS_LISTENER_TYPE);
    assert_true(l->n_resources > 0);
    assert_true(sotw_has(l, "virtualOutbound"));
    ack(a, l, NULL, 0);
    const char *rds[] = {"9080"};
    ads_send(a, XDS_ROUTE_TYPE, rds, 1, NULL, NULL, NULL);
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
    ads_close(a);
}

static void test_nack_not_resent(void **state)
{
    fx_t *fx = *state;
    ads_t *a = ads_open(fx, NODE_SLEEP_A, false);
    ads_send(a, XDS_CLUSTER_TYPE, NULL, 0, NULL, NULL, NULL);
    Envoy__Service__Discovery__V3__DiscoveryResponse *cds = expect_sotw(a, XDS_CLUSTER_TYPE);
    /* NACK: previous (empty) version, the nonce, an error */
    ads_send(a, XDS_CLUSTER_TYPE, NULL, 0, "", cds->nonce, "cluster outbound|9080: bad thing");
    expect_quiet(a, 300);
    assert_int_equal(stats(fx).rejects[XDS_CLUSTER], 1);
    /* a push with no CDS change does not resend the rejected config */
    xds_server_push_all(fx->xs);
    expect_quiet(a, 200);
    /* a change of the clusters does */
    apply(fx, "apiVersion: v1\nkind: Service\nmetadata: {name: details, namespace: default}\n"
              "spec:\n  ports: [{name: http, port: 9080}]\n");
    Envoy__Service__Discovery__V3__DiscoveryResponse *again = expect_sotw(a, XDS_CLUSTER_TYPE);
    assert_true(sotw_has(again, "outbound|9080||details.default.svc.cluster.local"));
    assert_string_not_equal(again->nonce, cds->nonce);
    assert_string_not_equal(again->version_info, cds->version_info);
    ads_close(a);
}

static void test_stale_nonce_ignored(void **state)
{
    fx_t *fx = *state;
    ads_t *a = ads_open(fx, NODE_SLEEP_A, false);
    const char *eds[] = {CLUSTER_REVIEWS};
    ads_send(a, XDS_ENDPOINT_TYPE, eds, 1, NULL, NULL, NULL);
    Envoy__Service__Discovery__V3__DiscoveryResponse *e = expect_sotw(a, XDS_ENDPOINT_TYPE);
    /* a request for other names with an old nonce is ignored */
    const char *eds2[] = {CLUSTER_RATINGS};
    ads_send(a, XDS_ENDPOINT_TYPE, eds2, 1, "x", "not-a-nonce", NULL);
    expect_quiet(a, 200);
    /* with the current nonce it is answered */
    ads_send(a, XDS_ENDPOINT_TYPE, eds2, 1, e->version_info, e->nonce, NULL);
    Envoy__Service__Discovery__V3__DiscoveryResponse *e2 = expect_sotw(a, XDS_ENDPOINT_TYPE);
    assert_int_equal(e2->n_resources, 1);
    assert_true(sotw_has(e2, CLUSTER_RATINGS));
    ads_close(a);
}

static void test_change_pushed_after_debounce(void **state)
{
    fx_t *fx = *state;
    ads_t *a = ads_open(fx, NODE_SLEEP_A, false);
    full_subscribe(a);
    uint64_t t0 = loop_clock_ms();
    apply(fx, "apiVersion: networking.istio.io/v1\nkind: VirtualService\n"
              "metadata: {name: reviews, namespace: default}\n"
              "spec:\n  hosts: [reviews]\n  http:\n  - route:\n    - destination: {host: "
              "reviews, subset: v2}\n");
    Envoy__Service__Discovery__V3__DiscoveryResponse *r = ads_wait(a, 3000);
    uint64_t dt = loop_clock_ms() - t0;
    assert_non_null(r);
    /* a route change: RDS (and CDS only if clusters changed) */
    bool saw_rds = strcmp(r->type_url, XDS_ROUTE_TYPE) == 0;
    while (!saw_rds && (r = ads_wait(a, 1000)) != NULL)
        saw_rds = strcmp(r->type_url, XDS_ROUTE_TYPE) == 0;
    assert_true(saw_rds);
    assert_true(dt >= DEBOUNCE_MS - 5);
    assert_true(dt < DEBOUNCE_MS + 1500);
    ads_close(a);
}

static void test_endpoint_change_pushes_only_eds(void **state)
{
    fx_t *fx = *state;
    ads_t *a = ads_open(fx, NODE_SLEEP_A, false);
    full_subscribe(a);
    xds_server_stats_t before = stats(fx);
    apply(fx, "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n"
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
    ads_close(a);
}

static void test_named_subscribe_unsubscribe(void **state)
{
    fx_t *fx = *state;
    ads_t *a = ads_open(fx, NODE_SLEEP_A, false);
    const char *one[] = {CLUSTER_REVIEWS};
    ads_send(a, XDS_ENDPOINT_TYPE, one, 1, NULL, NULL, NULL);
    Envoy__Service__Discovery__V3__DiscoveryResponse *r = expect_sotw(a, XDS_ENDPOINT_TYPE);
    assert_int_equal(r->n_resources, 1);
    const char *two[] = {CLUSTER_REVIEWS, CLUSTER_RATINGS};
    ads_send(a, XDS_ENDPOINT_TYPE, two, 2, r->version_info, r->nonce, NULL);
    r = expect_sotw(a, XDS_ENDPOINT_TYPE);
    assert_int_equal(r->n_resources, 2);
    assert_true(sotw_has(r, CLUSTER_REVIEWS));
    assert_true(sotw_has(r, CLUSTER_RATINGS));
    const char *last[] = {CLUSTER_RATINGS};
    ads_send(a, XDS_ENDPOINT_TYPE, last, 1, r->version_info, r->nonce, NULL);
    r = expect_sotw(a, XDS_ENDPOINT_TYPE);
    assert_int_equal(r->n_resources, 1);
    assert_true(sotw_has(r, CLUSTER_RATINGS));
    /* the same names again (an ACK) gets nothing */
    ads_send(a, XDS_ENDPOINT_TYPE, last, 1, r->version_info, r->nonce, NULL);
    expect_quiet(a, 200);
    ads_close(a);
}

static void test_reconnect_full_state(void **state)
{
    fx_t *fx = *state;
    ads_t *a = ads_open(fx, NODE_SLEEP_A, false);
    full_subscribe(a);
    ads_close(a);
    for (int i = 0; i < 20 && stats(fx).connected > 0; i++)
        loop_run_once(fx->loop, 10);
    assert_int_equal(stats(fx).connected, 0);
    a = ads_open(fx, NODE_SLEEP_A, false);
    ads_send(a, XDS_CLUSTER_TYPE, NULL, 0, "some-old-version", NULL, NULL);
    Envoy__Service__Discovery__V3__DiscoveryResponse *r = expect_sotw(a, XDS_CLUSTER_TYPE);
    assert_true(sotw_has(r, CLUSTER_REVIEWS));
    ads_send(a, XDS_LISTENER_TYPE, NULL, 0, "some-old-version", NULL, NULL);
    r = expect_sotw(a, XDS_LISTENER_TYPE);
    assert_true(r->n_resources > 0);
    ads_close(a);
}

static void test_identical_proxies_share(void **state)
{
    fx_t *fx = *state;
    ads_t *a = ads_open(fx, NODE_SLEEP_A, false);
    ads_t *b = ads_open(fx, NODE_SLEEP_B, false);
    ads_send(a, XDS_CLUSTER_TYPE, NULL, 0, NULL, NULL, NULL);
    Envoy__Service__Discovery__V3__DiscoveryResponse *ra = expect_sotw(a, XDS_CLUSTER_TYPE);
    xds_server_stats_t s1 = stats(fx);
    ads_send(b, XDS_CLUSTER_TYPE, NULL, 0, NULL, NULL, NULL);
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
    apply(fx, "apiVersion: v1\nkind: Service\nmetadata: {name: details, namespace: default}\n"
              "spec:\n  ports: [{name: http, port: 9080}]\n");
    xds_server_stats_t s3 = stats(fx);
    ra = expect_sotw(a, XDS_CLUSTER_TYPE);
    rb = expect_sotw(b, XDS_CLUSTER_TYPE);
    xds_server_stats_t s4 = stats(fx);
    assert_int_equal(s4.responses_encoded, s3.responses_encoded + 1);
    assert_int_equal(s4.responses_shared, s3.responses_shared + 1);
    ads_close(a);
    ads_close(b);
}

static void test_backpressure_holds_then_sends(void **state)
{
    fx_t *fx = *state;
    ads_t *a = ads_open(fx, NODE_SLEEP_A, false);
    /* every response waits for the previous one to drain, none is lost */
    full_subscribe(a);
    apply(fx, "apiVersion: v1\nkind: Service\nmetadata: {name: details, namespace: default}\n"
              "spec:\n  ports: [{name: http, port: 9080}]\n");
    Envoy__Service__Discovery__V3__DiscoveryResponse *r = expect_sotw(a, XDS_CLUSTER_TYPE);
    assert_true(sotw_has(r, "outbound|9080||details.default.svc.cluster.local"));
    /* the route change was held back behind CDS and follows once it drained */
    r = expect_sotw(a, XDS_ROUTE_TYPE);
    assert_true(sotw_has(r, "9080"));
    ads_close(a);
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
        apply(fx, yaml);
        r = ads_wait(a, 40);
    }
    uint64_t dt = loop_clock_ms() - t0;
    assert_non_null(r);
    assert_true(dt >= 900);
    assert_true(dt < 2000);
    ads_close(a);
}

static void test_bad_node_rejected(void **state)
{
    fx_t *fx = *state;
    ads_t *a = ads_open(fx, "nonsense", false);
    ads_send(a, XDS_CLUSTER_TYPE, NULL, 0, NULL, NULL, NULL);
    for (int i = 0; i < 300 && !a->closed; i++)
        loop_run_once(fx->loop, 10);
    assert_true(a->closed);
    assert_int_equal(a->status, GRPC_INVALID_ARGUMENT);
    assert_non_null(strstr(a->message, "nonsense"));
    ads_close(a);
    /* no node at all */
    a = ads_open(fx, NULL, false);
    a->sent_node = true;
    ads_send(a, XDS_CLUSTER_TYPE, NULL, 0, NULL, NULL, NULL);
    for (int i = 0; i < 300 && !a->closed; i++)
        loop_run_once(fx->loop, 10);
    assert_int_equal(a->status, GRPC_INVALID_ARGUMENT);
    assert_non_null(strstr(a->message, "node"));
    assert_int_equal(stats(fx).connected, 0);
    ads_close(a);
}

static void test_delta(void **state)
{
    fx_t *fx = *state;
    ads_t *a = ads_open(fx, NODE_SLEEP_A, true);
    /* wildcard CDS */
    ads_send_delta(a, XDS_CLUSTER_TYPE, NULL, 0, NULL, 0, NULL, NULL);
    Envoy__Service__Discovery__V3__DeltaDiscoveryResponse *r = expect_delta(a, XDS_CLUSTER_TYPE);
    assert_true(delta_has(r, CLUSTER_REVIEWS));
    assert_true(delta_has(r, CLUSTER_RATINGS));
    assert_int_equal(r->n_removed_resources, 0);
    ads_send_delta(a, XDS_CLUSTER_TYPE, NULL, 0, NULL, 0, r->nonce, NULL);
    /* named EDS */
    const char *sub[] = {CLUSTER_REVIEWS};
    ads_send_delta(a, XDS_ENDPOINT_TYPE, sub, 1, NULL, 0, NULL, NULL);
    r = expect_delta(a, XDS_ENDPOINT_TYPE);
    assert_int_equal(r->n_resources, 1);
    assert_true(delta_has(r, CLUSTER_REVIEWS));
    ads_send_delta(a, XDS_ENDPOINT_TYPE, NULL, 0, NULL, 0, r->nonce, NULL);
    const char *sub2[] = {CLUSTER_RATINGS};
    ads_send_delta(a, XDS_ENDPOINT_TYPE, sub2, 1, NULL, 0, r->nonce, NULL);
    r = expect_delta(a, XDS_ENDPOINT_TYPE);
    assert_int_equal(r->n_resources, 1); /* only the new one */
    assert_true(delta_has(r, CLUSTER_RATINGS));
    ads_send_delta(a, XDS_ENDPOINT_TYPE, NULL, 0, NULL, 0, r->nonce, NULL);
    /* unsubscribe: no response, and later changes of it are not sent */
    ads_send_delta(a, XDS_ENDPOINT_TYPE, NULL, 0, sub2, 1, r->nonce, NULL);
    expect_quiet(a, 150);
    /* deleting a service removes its cluster */
    cfg_store_delete(fx->store, CFG_Service, "default", "ratings");
    bool removed = false;
    for (int i = 0; i < 4 && !removed; i++) {
        r = ads_wait(a, 2000);
        assert_non_null(r);
        if (strcmp(r->type_url, XDS_CLUSTER_TYPE) == 0) {
            removed = delta_removed(r, CLUSTER_RATINGS);
            assert_false(delta_has(r, CLUSTER_REVIEWS)); /* unchanged: not resent */
            /* NACK it */
            ads_send_delta(a, XDS_CLUSTER_TYPE, NULL, 0, NULL, 0, r->nonce, "bad cluster");
        } else {
            assert_false(delta_has(r, CLUSTER_RATINGS));
        }
    }
    assert_true(removed);
    expect_quiet(a, 200);
    assert_int_equal(stats(fx).rejects[XDS_CLUSTER], 1);
    ads_close(a);
}

static void test_delta_initial_versions(void **state)
{
    fx_t *fx = *state;
    ads_t *a = ads_open(fx, NODE_SLEEP_A, true);
    ads_send_delta(a, XDS_CLUSTER_TYPE, NULL, 0, NULL, 0, NULL, NULL);
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
    ads_close(a);
    ads_close(b);
}

/* ---- debug pages and metrics ---- */

typedef struct body {
    char *p;
    size_t n;
} body_t;

static size_t body_write(char *ptr, size_t size, size_t nmemb, void *ud)
{
    body_t *b = ud;
    b->p = realloc(b->p, b->n + size * nmemb + 1);
    memcpy(b->p + b->n, ptr, size * nmemb);
    b->n += size * nmemb;
    b->p[b->n] = 0;
    return size * nmemb;
}

static char *http_get(int port, const char *path, long *status)
{
    char url[512];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", port, path);
    CURL *c = curl_easy_init();
    body_t b = {0};
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, body_write);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 10L);
    assert_int_equal(curl_easy_perform(c), CURLE_OK);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, status);
    curl_easy_cleanup(c);
    return b.p ? b.p : strdup("");
}

static void test_debug_and_metrics(void **state)
{
    fx_t *fx = *state;
    char err[256];
    debug_server_t *dbg = debug_server_start("127.0.0.1:0", err, sizeof(err));
    assert_non_null(dbg);
    xds_server_add_debug(fx->xs, dbg);
    xds_server_add_metrics(fx->xs, dbg);
    ads_t *a = ads_open(fx, NODE_SLEEP_A, false);
    ads_send(a, XDS_CLUSTER_TYPE, NULL, 0, NULL, NULL, NULL);
    Envoy__Service__Discovery__V3__DiscoveryResponse *cds = expect_sotw(a, XDS_CLUSTER_TYPE);
    ack(a, cds, NULL, 0);
    ads_send(a, XDS_LISTENER_TYPE, NULL, 0, NULL, NULL, NULL);
    Envoy__Service__Discovery__V3__DiscoveryResponse *lds = expect_sotw(a, XDS_LISTENER_TYPE);
    ads_send(a, XDS_LISTENER_TYPE, NULL, 0, "", lds->nonce, "listener rejected: bad filter");
    expect_quiet(a, 100);

    long status;
    char *s = http_get(debug_server_port(dbg), "/debug/syncz", &status);
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

    s = http_get(debug_server_port(dbg), "/debug/config_dump?proxyID=" NODE_SLEEP_A, &status);
    assert_int_equal(status, 200);
    assert_non_null(strstr(s, CLUSTER_REVIEWS_V1));
    free(s);
    s = http_get(debug_server_port(dbg), "/debug/config_dump?proxyID=nobody", &status);
    assert_int_equal(status, 404);
    free(s);

    s = http_get(debug_server_port(dbg), "/metrics", &status);
    assert_int_equal(status, 200);
    assert_non_null(strstr(s, "pilot_xds 1\n"));
    assert_non_null(strstr(s, "pilot_xds_pushes{type=\"cds\"} 1\n"));
    assert_non_null(strstr(s, "pilot_total_xds_rejects{type=\"lds\"} 1\n"));
    assert_non_null(strstr(s, "pilot_proxy_convergence_time_bucket{le=\"+Inf\"}"));
    free(s);
    debug_server_stop(dbg);
    ads_close(a);
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
