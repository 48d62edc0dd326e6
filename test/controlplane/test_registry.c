/*
 * Service registry: protocols from port names and appProtocol, endpoints from
 * EndpointSlices (v1 and v1beta1) or legacy Endpoints joined with Pods, and
 * ServiceEntries, with exportTo visibility.
 */
#include <string.h>

#include "../../controlplane/registry.h"
#include "../testutil.h"

static void put_cb(void *ud, cfg_object_t *obj, const cfg_diag_t *diag)
{
    if (obj == NULL) {
        for (uint32_t i = 0; i < diag->nerrors; i++)
            print_error("%s\n", diag->errors[i]);
        return;
    }
    cfg_store_put(ud, obj);
    cfg_object_unref(obj);
}

static reg_t *build(const char *yaml)
{
    cfg_store_t *s = cfg_store_new();
    cfg_load_buffer(yaml, strlen(yaml), DOC_FMT_YAML, NULL, put_cb, s);
    cfg_snap_t *snap = cfg_store_snapshot(s);
    reg_t *r = reg_build(snap);
    cfg_snap_release(snap);
    cfg_store_free(s);
    return r;
}

static void test_protocols(void **state)
{
    (void)state;
    assert_int_equal(reg_protocol_infer("http", NULL, "TCP"), REG_PROTO_HTTP);
    assert_int_equal(reg_protocol_infer("http-api", NULL, NULL), REG_PROTO_HTTP);
    assert_int_equal(reg_protocol_infer("HTTP2-x", NULL, NULL), REG_PROTO_HTTP2);
    assert_int_equal(reg_protocol_infer("grpc", NULL, NULL), REG_PROTO_GRPC);
    assert_int_equal(reg_protocol_infer("grpc-web", NULL, NULL), REG_PROTO_GRPC_WEB);
    assert_int_equal(reg_protocol_infer("https-admin", NULL, NULL), REG_PROTO_HTTPS);
    assert_int_equal(reg_protocol_infer("tcp-db", NULL, NULL), REG_PROTO_TCP);
    assert_int_equal(reg_protocol_infer("tls", NULL, NULL), REG_PROTO_TLS);
    assert_int_equal(reg_protocol_infer("mongo", NULL, NULL), REG_PROTO_MONGO);
    assert_int_equal(reg_protocol_infer("redis", NULL, NULL), REG_PROTO_REDIS);
    assert_int_equal(reg_protocol_infer("mysql", NULL, NULL), REG_PROTO_MYSQL);
    assert_int_equal(reg_protocol_infer("dns", NULL, "UDP"), REG_PROTO_UDP);
    assert_int_equal(reg_protocol_infer("web", NULL, NULL), REG_PROTO_UNKNOWN);
    assert_int_equal(reg_protocol_infer("httpx", NULL, NULL), REG_PROTO_UNKNOWN);
    assert_int_equal(reg_protocol_infer(NULL, NULL, NULL), REG_PROTO_UNKNOWN);
    /* appProtocol wins over the name */
    assert_int_equal(reg_protocol_infer("tcp", "http", NULL), REG_PROTO_HTTP);
    assert_int_equal(reg_protocol_infer("web", "kubernetes.io/h2c", NULL), REG_PROTO_HTTP2);
    assert_int_equal(reg_protocol_infer("web", "grpc", NULL), REG_PROTO_GRPC);
    assert_string_equal(reg_protocol_name(REG_PROTO_UNKNOWN), "UnsupportedProtocol");
}

static const char *const kube =
    "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop, labels: {istio-injection: enabled}}\n"
    "---\n"
    "apiVersion: v1\nkind: Service\nmetadata: {name: cart, namespace: shop}\n"
    "spec:\n  clusterIP: 10.96.5.5\n  selector: {app: cart}\n"
    "  ports:\n  - {name: http-web, port: 80, targetPort: web}\n  - {name: grpc, port: 9000, targetPort: 9001}\n"
    "---\n"
    "apiVersion: v1\nkind: Pod\nmetadata:\n  name: cart-1\n  namespace: shop\n"
    "  labels: {app: cart, version: v1, topology.kubernetes.io/region: eu}\n"
    "  annotations: {sidecar.istio.io/status: '{}'}\n"
    "spec:\n  serviceAccountName: cart-sa\n  containers:\n  - name: c\n    ports: [{name: web, containerPort: 8080}]\n"
    "status: {podIP: 10.2.0.1}\n"
    "---\n"
    "apiVersion: v1\nkind: Pod\nmetadata: {name: cart-2, namespace: shop, labels: {app: cart, version: v2}}\n"
    "spec: {containers: [{name: c}]}\n"
    "status: {podIP: 10.2.0.2}\n"
    "---\n"
    "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n"
    "metadata: {name: cart-a, namespace: shop, labels: {kubernetes.io/service-name: cart}}\n"
    "addressType: IPv4\n"
    "ports: [{name: http-web, port: 8080}, {name: grpc, port: 9001}]\n"
    "endpoints:\n"
    "- addresses: [10.2.0.1]\n  zone: eu-1a\n  targetRef: {kind: Pod, name: cart-1, namespace: shop}\n"
    "---\n"
    "apiVersion: discovery.k8s.io/v1beta1\nkind: EndpointSlice\n"
    "metadata: {name: cart-b, namespace: shop, labels: {kubernetes.io/service-name: cart}}\n"
    "addressType: IPv4\n"
    "ports: [{name: http-web, port: 8080}]\n"
    "endpoints:\n"
    "- addresses: [10.2.0.2]\n  conditions: {ready: false}\n"
    "  topology: {topology.kubernetes.io/zone: eu-1b, topology.kubernetes.io/region: eu}\n"
    "---\n"
    "apiVersion: v1\nkind: Service\nmetadata: {name: legacy, namespace: shop, annotations: {networking.istio.io/exportTo: \".\"}}\n"
    "spec: {ports: [{name: tcp, port: 5000}]}\n"
    "---\n"
    "apiVersion: v1\nkind: Endpoints\nmetadata: {name: legacy, namespace: shop}\n"
    "subsets:\n- addresses: [{ip: 10.2.0.9}]\n  notReadyAddresses: [{ip: 10.2.0.8}]\n  ports: [{name: tcp, port: 5001}]\n";

static void test_kubernetes_services(void **state)
{
    (void)state;
    reg_t *r = build(kube);
    const reg_service_t *s = reg_lookup(r, "cart.shop.svc.cluster.local", "shop");
    assert_non_null(s);
    assert_ptr_equal(reg_lookup_short(r, "shop", "cart"), s);
    assert_string_equal(s->address, "10.96.5.5");
    assert_int_equal(s->nports, 2);
    assert_int_equal(reg_service_port(s, 80)->protocol, REG_PROTO_HTTP);
    assert_int_equal(reg_service_port(s, 9000)->protocol, REG_PROTO_GRPC);
    /* v1 and v1beta1 slices: 2 endpoints on 80, 1 on 9000, sorted by port */
    assert_int_equal(s->nendpoints, 3);
    const reg_endpoint_t *e = &s->endpoints[0];
    assert_int_equal(e->service_port, 80);
    assert_string_equal(e->address, "10.2.0.1");
    assert_int_equal(e->port, 8080);
    assert_true(e->ready);
    assert_true(e->has_sidecar); /* sidecar.istio.io/status */
    assert_string_equal(e->service_account, "cart-sa");
    assert_string_equal(reg_labels_get(&e->labels, "version"), "v1");
    assert_string_equal(e->locality, "eu"); /* the pod's region label */
    e = &s->endpoints[1];
    assert_string_equal(e->address, "10.2.0.2");
    assert_false(e->ready);
    assert_false(e->has_sidecar);
    assert_string_equal(e->service_account, "default");
    assert_string_equal(e->locality, "eu/eu-1b"); /* v1beta1 topology */
    assert_int_equal(s->endpoints[2].service_port, 9000);
    assert_int_equal(s->endpoints[2].port, 9001);

    /* legacy Endpoints, exportTo "." */
    const reg_service_t *l = reg_lookup(r, "legacy.shop.svc.cluster.local", NULL);
    assert_non_null(l);
    assert_int_equal(l->nendpoints, 2);
    assert_string_equal(l->endpoints[0].address, "10.2.0.8");
    assert_false(l->endpoints[0].ready);
    assert_true(l->endpoints[1].ready);
    assert_true(reg_visible(l, "shop"));
    assert_false(reg_visible(l, "default"));
    assert_null(reg_lookup(r, "legacy.shop.svc.cluster.local", "default"));

    /* the pod's ports: targetPort by name resolves to the container port */
    reg_target_t tg[8];
    const reg_workload_t *w = reg_workload_by_ip(r, "10.2.0.1");
    assert_non_null(w);
    assert_int_equal(reg_targets(r, "shop", &w->labels, "10.2.0.1", tg, 8), 2);
    assert_int_equal(tg[0].target_port, 8080);
    assert_int_equal(tg[1].target_port, 9001);
    assert_string_equal(reg_labels_get(reg_namespace_labels(r, "shop"), "istio-injection"), "enabled");
    reg_unref(r);
}

static void test_service_entries(void **state)
{
    (void)state;
    reg_t *r = build(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: ext, namespace: shop}\n"
        "spec:\n  hosts: [api.example.com]\n  location: MESH_EXTERNAL\n  resolution: DNS\n"
        "  ports: [{number: 443, name: tls, protocol: TLS}]\n"
        "---\n"
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: vms, namespace: shop}\n"
        "spec:\n  hosts: [db.internal]\n  addresses: [240.0.0.1]\n  location: MESH_INTERNAL\n  resolution: STATIC\n"
        "  exportTo: [\".\", other]\n"
        "  ports: [{number: 3306, name: mysql, protocol: MYSQL, targetPort: 13306}]\n"
        "  endpoints:\n  - address: 10.9.0.1\n    labels: {security.istio.io/tlsMode: istio, version: a}\n    locality: us.east\n"
        "  - address: 10.9.0.2\n    ports: {mysql: 3307}\n    weight: 3\n"
        "---\n"
        "apiVersion: v1\nkind: Pod\nmetadata: {name: w1, namespace: shop, labels: {app: worker}}\n"
        "status: {podIP: 10.2.1.1}\n"
        "---\n"
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: workers, namespace: shop}\n"
        "spec:\n  hosts: [workers.shop.mesh]\n  location: MESH_INTERNAL\n  resolution: STATIC\n"
        "  workloadSelector: {labels: {app: worker}}\n  ports: [{number: 80, name: http, protocol: HTTP}]\n");
    const reg_service_t *ext = reg_lookup(r, "api.example.com", "default");
    assert_non_null(ext);
    assert_true(ext->mesh_external);
    assert_int_equal(ext->resolution, REG_RES_DNS);
    assert_int_equal(ext->ports[0].protocol, REG_PROTO_TLS);
    /* DNS without endpoints: the host itself */
    assert_int_equal(ext->nendpoints, 1);
    assert_string_equal(ext->endpoints[0].address, "api.example.com");
    assert_int_equal(ext->endpoints[0].port, 443);

    const reg_service_t *db = reg_lookup(r, "db.internal", "shop");
    assert_non_null(db);
    assert_false(db->mesh_external);
    assert_string_equal(db->address, "240.0.0.1");
    assert_int_equal(db->nendpoints, 2);
    assert_int_equal(db->endpoints[0].port, 13306); /* targetPort */
    assert_true(db->endpoints[0].has_sidecar);
    assert_string_equal(db->endpoints[0].locality, "us/east");
    assert_int_equal(db->endpoints[1].port, 3307); /* per-endpoint port by name */
    assert_int_equal(db->endpoints[1].weight, 3);
    assert_true(reg_visible(db, "other"));
    assert_false(reg_visible(db, "default"));
    assert_null(reg_lookup(r, "db.internal", "default"));

    const reg_service_t *wk = reg_lookup(r, "workers.shop.mesh", NULL);
    assert_non_null(wk);
    assert_int_equal(wk->nendpoints, 1);
    assert_string_equal(wk->endpoints[0].address, "10.2.1.1");
    assert_non_null(wk->endpoints[0].workload);
    reg_unref(r);
}

static void test_bookinfo_fixture(void **state)
{
    (void)state;
    cfg_store_t *s = cfg_store_new();
    assert_true(cfg_load_file(tu_shared("istio/samples/bookinfo/platform/kube/bookinfo.yaml"), NULL, put_cb, s) >= 0);
    assert_true(cfg_load_file("test/xds/fixtures/bookinfo-workloads.yaml", NULL, put_cb, s) >= 0);
    cfg_snap_t *snap = cfg_store_snapshot(s);
    reg_t *r = reg_build(snap);
    const reg_service_t *rv = reg_lookup(r, "reviews.default.svc.cluster.local", "default");
    assert_non_null(rv);
    assert_int_equal(rv->nendpoints, 3);
    for (uint32_t i = 0; i < rv->nendpoints; i++) {
        assert_true(rv->endpoints[i].has_sidecar);
        assert_string_equal(rv->endpoints[i].service_account, "bookinfo-reviews");
    }
    assert_int_equal(reg_service_port(rv, 9080)->protocol, REG_PROTO_HTTP);
    reg_unref(r);
    cfg_snap_release(snap);
    cfg_store_free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_protocols),
        cmocka_unit_test(test_kubernetes_services),
        cmocka_unit_test(test_service_entries),
        cmocka_unit_test(test_bookinfo_fixture),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
