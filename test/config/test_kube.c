/* Kubernetes objects the mesh reads: typed decoding (lenient) and the local-
 * mode validation rules of config/validate_kube.c. */
#include <stdio.h>
#include <string.h>

#include "../testutil.h"

#define SVC "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: ns\n"
#define EPS "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: web-x\n  namespace: ns\n"
#define EP "apiVersion: v1\nkind: Endpoints\nmetadata:\n  name: web\n  namespace: ns\n"
#define POD "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web-0\n  namespace: ns\n"
#define SECRET "apiVersion: v1\nkind: Secret\nmetadata:\n  name: s\n  namespace: ns\n"
#define CM "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\n  namespace: ns\n"
#define MWC "apiVersion: admissionregistration.k8s.io/v1\nkind: MutatingWebhookConfiguration\nmetadata:\n  name: inj\n"

/* ---- Service ---- */

static void test_service_decode(void **state)
{
    (void)state;
    tu_result_t r;
    tu_load(SVC "spec:\n  type: NodePort\n  selector:\n    app: web\n  clusterIP: 10.96.0.10\n"
                "  clusterIPs: [10.96.0.10]\n  ipFamilies: [IPv4]\n  sessionAffinity: None\n"
                "  ports:\n  - name: http\n    port: 80\n    targetPort: 8080\n    nodePort: 30080\n"
                "  - name: grpc\n    port: 9090\n    targetPort: grpc-port\n    appProtocol: grpc\n"
                "    protocol: TCP\n  someFutureField: {a: 1}\nstatus:\n  loadBalancer: {}\n",
            "svc.yaml", &r);
    TU_EXPECT_OK(&r);
    const cfg_object_t *o = tu_obj(&r, CFG_Service);
    assert_non_null(o);
    const cfg_ServiceSpec *s = CFG_BODY(o, Service)->spec;
    assert_int_equal(s->type, cfg_ServiceType_NodePort);
    assert_string_equal(s->selector.v[0].key, "app");
    assert_string_equal(s->clusterIP, "10.96.0.10");
    assert_int_equal(s->ports.n, 2);
    assert_int_equal(s->ports.v[0].port, 80);
    assert_false(s->ports.v[0].targetPort.is_str);
    assert_int_equal(s->ports.v[0].targetPort.num, 8080);
    assert_int_equal(s->ports.v[0].nodePort, 30080);
    assert_true(s->ports.v[1].targetPort.is_str);
    assert_string_equal(s->ports.v[1].targetPort.str, "grpc-port");
    assert_string_equal(s->ports.v[1].appProtocol, "grpc");
    assert_non_null(CFG_BODY(o, Service)->status);
    tu_free(&r);
}

static void test_service_ports(void **state)
{
    (void)state;
    tu_expect_rejected(SVC "spec:\n  ports:\n  - port: 0\n", "spec.ports[0].port:", "between 1 and 65535");
    tu_expect_rejected(SVC "spec:\n  ports:\n  - port: 70000\n", "spec.ports[0].port:", "between 1 and 65535");
    tu_expect_rejected(SVC "spec:\n  ports:\n  - name: http\n    port: 80\n  - port: 81\n",
                 "spec.ports[1].name:", "required when the service has more than one port");
    tu_expect_rejected(SVC "spec:\n  ports:\n  - name: http\n    port: 80\n  - name: http\n    port: 81\n",
                 "spec.ports[1].name:", "duplicate port name \"http\"");
    tu_expect_rejected(SVC "spec:\n  ports:\n  - name: HTTP\n    port: 80\n", "spec.ports[0].name:",
                 "DNS label");
    tu_expect_rejected(SVC "spec:\n  ports:\n  - port: 80\n    targetPort: 99999\n",
                 "spec.ports[0].targetPort:", "between 1 and 65535");
    tu_expect_rejected(SVC "spec:\n  ports:\n  - port: 80\n    targetPort: not_a_name\n",
                 "spec.ports[0].targetPort:", "not a valid port name");
    tu_expect_rejected(SVC "spec:\n  ports:\n  - port: 80\n    targetPort: 8080x-too-long-name\n",
                 "spec.ports[0].targetPort:", "1-15 characters");
    tu_expect_rejected(SVC "spec:\n  ports:\n  - port: 80\n    protocol: HTTP\n", "spec.ports[0].protocol:",
                 "Unsupported value: \"HTTP\"");
    tu_expect_rejected(SVC "spec:\n  ports:\n  - port: 80\n    nodePort: 30080\n", "spec.ports[0].nodePort:",
                 "NodePort or LoadBalancer");
    tu_expect_rejected(SVC "spec:\n  ports:\n  - port: 80\n    targetPort: [1]\n", "spec.ports[0].targetPort",
                 "integer or a string");
    tu_expect_loads(SVC "spec:\n  ports:\n  - port: 80\n    targetPort: http-web\n");
}

static void test_service_other_rules(void **state)
{
    (void)state;
    tu_expect_rejected(SVC "spec:\n  type: Headless\n", "spec.type:", "Unsupported value: \"Headless\"");
    tu_expect_rejected(SVC "spec:\n  selector:\n    \"bad key!\": web\n  ports:\n  - port: 80\n",
                 "spec.selector", "invalid label key");
    tu_expect_rejected(SVC "spec:\n  selector:\n    app: \"-web\"\n  ports:\n  - port: 80\n",
                 "spec.selector", "invalid value");
    tu_expect_rejected(SVC "spec:\n  type: ExternalName\n", "spec.externalName:", "required");
    tu_expect_loads(SVC "spec:\n  type: ExternalName\n  externalName: db.example.com\n");
    tu_expect_rejected(SVC "spec:\n  clusterIP: 10.0.0.300\n  ports:\n  - port: 80\n", "spec.clusterIP:",
                 "IP address");
    tu_expect_rejected(SVC "spec:\n  ports: []\n", "spec.ports:", "at least one port");
    tu_expect_loads(SVC "spec:\n  clusterIP: None\n  selector:\n    app: db\n");
    tu_expect_rejected(SVC "spec:\n  ipFamilies: [IPv5]\n  ports:\n  - port: 80\n", "spec.ipFamilies[0]:",
                 "Unsupported value");
}

/* ---- EndpointSlice and Endpoints ---- */

static void test_endpointslice_decode(void **state)
{
    (void)state;
    tu_result_t r;
    tu_load(EPS "addressType: IPv4\nendpoints:\n- addresses: [10.1.0.5]\n  conditions:\n    ready: true\n"
                "    serving: true\n    terminating: false\n  nodeName: n1\n  zone: z1\n  targetRef:\n"
                "    kind: Pod\n    name: web-0\n    namespace: ns\n    uid: abc\nports:\n- name: http\n"
                "  port: 8080\n  protocol: TCP\n  appProtocol: http\n",
            "eps.yaml", &r);
    TU_EXPECT_OK(&r);
    const cfg_EndpointSliceObject *e = CFG_BODY(tu_obj(&r, CFG_EndpointSlice), EndpointSlice);
    assert_int_equal(e->addressType, cfg_EndpointAddressType_IPv4);
    assert_string_equal(e->endpoints.v[0].addresses.v[0], "10.1.0.5");
    assert_true(e->endpoints.v[0].conditions->ready);
    assert_false(e->endpoints.v[0].conditions->terminating);
    assert_string_equal(e->endpoints.v[0].targetRef->name, "web-0");
    assert_int_equal(e->ports.v[0].port, 8080);
    tu_free(&r);
    /* v1beta1 topology map */
    tu_load("apiVersion: discovery.k8s.io/v1beta1\nkind: EndpointSlice\nmetadata:\n  name: a\n"
            "addressType: IPv6\nendpoints:\n- addresses: [\"fd00::1\"]\n  topology:\n"
            "    topology.kubernetes.io/zone: z2\n",
            "eps.yaml", &r);
    TU_EXPECT_OK(&r);
    e = CFG_BODY(tu_obj(&r, CFG_EndpointSlice), EndpointSlice);
    assert_string_equal(e->endpoints.v[0].topology.v[0].str, "z2");
    tu_free(&r);
}

static void test_endpointslice_rules(void **state)
{
    (void)state;
    tu_expect_rejected(EPS "addressType: IPv4\nendpoints:\n- addresses: [\"fd00::1\"]\n",
                 "endpoints[0].addresses[0]:", "IPv4 address");
    tu_expect_rejected(EPS "addressType: IPv6\nendpoints:\n- addresses: [10.0.0.1]\n",
                 "endpoints[0].addresses[0]:", "IPv6 address");
    tu_expect_rejected(EPS "addressType: FQDN\nendpoints:\n- addresses: [\"Bad_Name\"]\n",
                 "endpoints[0].addresses[0]:", "DNS name");
    tu_expect_loads(EPS "addressType: FQDN\nendpoints:\n- addresses: [db.example.com]\n");
    tu_expect_rejected(EPS "addressType: IP\n", "addressType:", "Unsupported value: \"IP\"");
    tu_expect_rejected(EPS "endpoints: []\n", "addressType", "required field is missing");
    tu_expect_rejected(EPS "addressType: IPv4\nendpoints:\n- addresses: []\n", "endpoints[0].addresses:",
                 "at least one address");
    tu_expect_rejected(EPS "addressType: IPv4\nports:\n- port: 0\n", "ports[0].port:", "between 1 and 65535");
    tu_expect_rejected(EPS "addressType: IPv4\nports:\n- name: a\n  port: 1\n- name: a\n  port: 2\n",
                 "ports[1].name:", "duplicate port name");
}

static void test_endpoints_rules(void **state)
{
    (void)state;
    tu_result_t r;
    tu_load(EP "subsets:\n- addresses:\n  - ip: 10.1.0.5\n    nodeName: n1\n    targetRef:\n      kind: Pod\n"
               "      name: web-0\n  notReadyAddresses:\n  - ip: 10.1.0.6\n  ports:\n  - name: http\n"
               "    port: 8080\n",
            "ep.yaml", &r);
    TU_EXPECT_OK(&r);
    const cfg_EndpointsObject *e = CFG_BODY(tu_obj(&r, CFG_Endpoints), Endpoints);
    assert_string_equal(e->subsets.v[0].addresses.v[0].ip, "10.1.0.5");
    assert_string_equal(e->subsets.v[0].addresses.v[0].targetRef->name, "web-0");
    assert_string_equal(e->subsets.v[0].notReadyAddresses.v[0].ip, "10.1.0.6");
    tu_free(&r);
    tu_expect_rejected(EP "subsets:\n- addresses:\n  - ip: web-0\n", "subsets[0].addresses[0].ip:",
                 "IP address");
    tu_expect_rejected(EP "subsets:\n- notReadyAddresses:\n  - hostname: a\n",
                 "subsets[0].notReadyAddresses[0].ip:", "required");
    tu_expect_rejected(EP "subsets:\n- ports:\n  - name: http\n", "subsets[0].ports[0].port:", "required");
    tu_expect_rejected(EP "subsets:\n- ports:\n  - port: 65536\n", "subsets[0].ports[0].port:",
                 "between 1 and 65535");
}

/* ---- Pod ---- */

static void test_pod_decode(void **state)
{
    (void)state;
    tu_result_t r;
    tu_load(POD "spec:\n  serviceAccountName: web\n  hostNetwork: false\n  nodeName: n1\n"
                "  restartPolicy: Always\n  containers:\n  - name: app\n    image: web:1\n"
                "    ports:\n    - name: http\n      containerPort: 8080\n      protocol: TCP\n"
                "    resources: {limits: {cpu: 1}}\n  initContainers:\n  - name: init\n    image: i:1\n"
                "status:\n  phase: Running\n  podIP: 10.1.0.5\n  podIPs:\n  - ip: 10.1.0.5\n"
                "  - ip: \"fd00::5\"\n  hostIP: 192.168.1.10\n  conditions:\n  - type: Ready\n"
                "    status: \"True\"\n",
            "pod.yaml", &r);
    TU_EXPECT_OK(&r);
    const cfg_PodObject *p = CFG_BODY(tu_obj(&r, CFG_Pod), Pod);
    assert_string_equal(p->spec->serviceAccountName, "web");
    assert_int_equal(p->spec->containers.n, 1);
    assert_int_equal(p->spec->containers.v[0].ports.v[0].containerPort, 8080);
    assert_string_equal(p->spec->initContainers.v[0].name, "init");
    assert_string_equal(p->status->phase, "Running");
    assert_string_equal(p->status->podIPs.v[1].ip, "fd00::5");
    assert_string_equal(p->status->conditions.v[0].status, "True");
    tu_free(&r);
}

static void test_pod_rules(void **state)
{
    (void)state;
    tu_expect_rejected(POD "spec:\n  containers:\n  - name: app\n    ports:\n    - containerPort: 0\n",
                 "spec.containers[0].ports[0].containerPort:", "between 1 and 65535");
    tu_expect_rejected(POD "spec:\n  containers:\n  - name: app\n    ports:\n    - containerPort: 80\n"
                     "      hostPort: 70000\n",
                 "spec.containers[0].ports[0].hostPort:", "between 1 and 65535");
    tu_expect_rejected(POD "spec:\n  containers:\n  - name: app\n    ports:\n    - name: web\n"
                     "      containerPort: 80\n    - name: web\n      containerPort: 81\n",
                 "spec.containers[0].ports[1].name:", "duplicate port name");
    tu_expect_rejected(POD "spec:\n  containers:\n  - name: app\n    ports:\n    - name: Web_Port\n"
                     "      containerPort: 80\n",
                 "spec.containers[0].ports[0].name:", "not a valid port name");
    tu_expect_rejected(POD "spec:\n  containers: []\n", "spec.containers:", "at least one container");
    tu_expect_rejected(POD "spec:\n  containers:\n  - name: App\n", "spec.containers[0].name:", "DNS label");
    tu_expect_rejected(POD "spec:\n  containers:\n  - name: app\nstatus:\n  podIP: 10.1.0\n",
                 "status.podIP:", "IP address");
    tu_expect_rejected(POD "spec:\n  containers:\n  - name: app\n    ports:\n    - containerPort: \"80\"\n",
                 "spec.containers[0].ports[0].containerPort", "must be an integer");
}

/* ---- ServiceAccount, Secret, ConfigMap ---- */

static void test_service_account(void **state)
{
    (void)state;
    tu_result_t r;
    tu_load("apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: web\n  namespace: ns\n"
            "automountServiceAccountToken: false\nsecrets:\n- name: web-token\n",
            "sa.yaml", &r);
    TU_EXPECT_OK(&r);
    const cfg_ServiceAccountObject *sa = CFG_BODY(tu_obj(&r, CFG_ServiceAccount), ServiceAccount);
    assert_true(CFG_HAS(sa, ServiceAccountObject, automountServiceAccountToken));
    assert_false(sa->automountServiceAccountToken);
    assert_non_null(sa->secrets);
    tu_free(&r);
    tu_expect_rejected("apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: web\nsecrets: web-token\n",
                 "secrets:", "array");
    tu_expect_rejected("apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: web\nimagePullSecrets:\n- x\n",
                 "imagePullSecrets[0]:", "name");
}

static void test_secret(void **state)
{
    (void)state;
    tu_result_t r;
    tu_load(SECRET "type: Opaque\ndata:\n  root-cert.pem: aGVsbG8=\nstringData:\n  note: hi\n"
                   "immutable: true\n",
            "s.yaml", &r);
    TU_EXPECT_OK(&r);
    const cfg_SecretObject *s = CFG_BODY(tu_obj(&r, CFG_Secret), Secret);
    assert_string_equal(s->type, "Opaque");
    assert_string_equal(s->data.v[0].key, "root-cert.pem");
    assert_string_equal(s->data.v[0].str, "aGVsbG8=");
    assert_string_equal(s->stringData.v[0].str, "hi");
    assert_true(s->immutable);
    tu_free(&r);
    tu_expect_rejected(SECRET "data:\n  ca-cert.pem: \"-----BEGIN CERT\"\n", "data[ca-cert.pem]:",
                 "not valid base64");
    tu_expect_rejected(SECRET "data:\n  k: aGVsbG8\n", "data[k]:", "not valid base64");
    tu_expect_rejected(SECRET "data:\n  \"a/b\": aGVsbG8=\n", "data[a/b]:", "invalid key");
    tu_expect_rejected(SECRET "type: kubernetes.io/tls\ndata:\n  tls.crt: aGVsbG8=\n", "data:",
                 "needs the key tls.key");
    tu_expect_loads(SECRET "data:\n  k: |\n    aGVs\n    bG8=\n");
}

static void test_configmap(void **state)
{
    (void)state;
    tu_result_t r;
    tu_load(CM "data:\n  root-cert.pem: |\n    -----BEGIN CERTIFICATE-----\nbinaryData:\n  blob: AAE=\n",
            "cm.yaml", &r);
    TU_EXPECT_OK(&r);
    const cfg_ConfigMapObject *c = CFG_BODY(tu_obj(&r, CFG_ConfigMap), ConfigMap);
    assert_string_equal(c->data.v[0].str, "-----BEGIN CERTIFICATE-----\n");
    assert_string_equal(c->binaryData.v[0].str, "AAE=");
    tu_free(&r);
    tu_expect_rejected(CM "binaryData:\n  blob: \"not base64!\"\n", "binaryData[blob]:", "base64");
    tu_expect_rejected(CM "data:\n  a: x\nbinaryData:\n  a: AAE=\n", "binaryData[a]:", "duplicate");
    tu_expect_rejected(CM "data:\n  port: 80\n", "data[port]", "must be a string");
}

/* ---- MutatingWebhookConfiguration ---- */

static void test_webhook_decode(void **state)
{
    (void)state;
    tu_result_t r;
    tu_load(MWC "webhooks:\n- name: rev.namespace.sidecar-injector.istio.io\n  clientConfig:\n"
                "    service:\n      name: istiod\n      namespace: istio-system\n      path: /inject\n"
                "      port: 443\n    caBundle: aGVsbG8=\n  rules:\n  - operations: [CREATE]\n"
                "    resources: [pods]\n  failurePolicy: Fail\n  sideEffects: None\n"
                "  admissionReviewVersions: [v1, v1beta1]\n  namespaceSelector:\n    matchLabels:\n"
                "      istio-injection: enabled\n  reinvocationPolicy: Never\n  timeoutSeconds: 10\n",
            "mwc.yaml", &r);
    TU_EXPECT_OK(&r);
    const cfg_MutatingWebhookConfigurationObject *m =
        CFG_BODY(tu_obj(&r, CFG_MutatingWebhookConfiguration), MutatingWebhookConfiguration);
    const cfg_MutatingWebhook *w = &m->webhooks.v[0];
    assert_string_equal(w->clientConfig->service->path, "/inject");
    assert_int_equal(w->clientConfig->service->port, 443);
    assert_int_equal(w->admissionReviewVersions.n, 2);
    assert_non_null(w->namespaceSelector);
    assert_int_equal(w->timeoutSeconds, 10);
    tu_free(&r);
}

static void test_webhook_rules(void **state)
{
    (void)state;
    const char *tail = "  sideEffects: None\n  admissionReviewVersions: [v1]\n";
    char buf[1024];
    snprintf(buf, sizeof(buf), MWC "webhooks:\n- name: injector\n  clientConfig:\n"
                                   "    url: https://x.example/inject\n%s", tail);
    tu_expect_rejected(buf, "webhooks[0].name:", "fully qualified");
    snprintf(buf, sizeof(buf), MWC "webhooks:\n- name: a.b.io\n  clientConfig: {}\n%s", tail);
    tu_expect_rejected(buf, "webhooks[0].clientConfig:", "exactly one of url or service");
    snprintf(buf, sizeof(buf), MWC "webhooks:\n- name: a.b.io\n%s", tail);
    tu_expect_rejected(buf, "webhooks[0].clientConfig:", "required");
    snprintf(buf, sizeof(buf), MWC "webhooks:\n- name: a.b.io\n  clientConfig:\n"
                                   "    url: http://x.example/inject\n%s", tail);
    tu_expect_rejected(buf, "webhooks[0].clientConfig.url:", "https://");
    snprintf(buf, sizeof(buf), MWC "webhooks:\n- name: a.b.io\n  clientConfig:\n    service:\n"
                                   "      name: istiod\n      port: 0\n%s", tail);
    tu_expect_rejected(buf, "webhooks[0].clientConfig.service.namespace:", "required");
    snprintf(buf, sizeof(buf), MWC "webhooks:\n- name: a.b.io\n  clientConfig:\n    service:\n"
                                   "      name: istiod\n      namespace: istio-system\n"
                                   "      port: 0\n%s", tail);
    tu_expect_rejected(buf, "webhooks[0].clientConfig.service.port:", "between 1 and 65535");
    snprintf(buf, sizeof(buf), MWC "webhooks:\n- name: a.b.io\n  clientConfig:\n"
                                   "    url: https://x.example/i\n  sideEffects: None\n"
                                   "  admissionReviewVersions: [v1]\n- name: a.b.io\n  clientConfig:\n"
                                   "    url: https://x.example/i\n%s", tail);
    tu_expect_rejected(buf, "webhooks[1].name:", "duplicate webhook name");
    snprintf(buf, sizeof(buf), MWC "webhooks:\n- name: a.b.io\n  clientConfig:\n"
                                   "    url: https://x.example/i\n  timeoutSeconds: 31\n%s", tail);
    tu_expect_rejected(buf, "webhooks[0].timeoutSeconds:", "between 1 and 30");
    snprintf(buf, sizeof(buf), MWC "webhooks:\n- name: a.b.io\n  clientConfig:\n"
                                   "    url: https://x.example/i\n  admissionReviewVersions: [v1]\n");
    tu_expect_rejected(buf, "webhooks[0].sideEffects:", "required");
    snprintf(buf, sizeof(buf), MWC "webhooks:\n- name: a.b.io\n  clientConfig:\n"
                                   "    url: https://x.example/i\n  failurePolicy: Retry\n%s", tail);
    tu_expect_rejected(buf, "webhooks[0].failurePolicy:", "Unsupported value");
}

/* ---- Namespace and the shared manifests ---- */

static void test_namespace(void **state)
{
    (void)state;
    tu_result_t r;
    tu_load("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: bookinfo\n  labels:\n"
            "    istio-injection: enabled\nspec:\n  finalizers: [kubernetes]\nstatus:\n  phase: Active\n",
            "ns.yaml", &r);
    TU_EXPECT_OK(&r);
    const cfg_object_t *o = tu_obj(&r, CFG_Namespace);
    assert_non_null(o);
    assert_string_equal(o->meta->labels.v[0].str, "enabled");
    assert_non_null(CFG_BODY(o, Namespace)->status);
    tu_free(&r);
    tu_expect_rejected("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: team.a\n", "metadata.name:",
                 "namespace name");
}

static void test_bookinfo_platform_loads(void **state)
{
    (void)state;
    tu_result_t r;
    tu_load_file(tu_shared("istio/samples/bookinfo/platform/kube/bookinfo.yaml"), &r);
    TU_EXPECT_OK(&r);
    const cfg_object_t *o = tu_obj(&r, CFG_Service);
    assert_non_null(o);
    assert_true(CFG_BODY(o, Service)->spec->ports.n >= 1);
    assert_non_null(tu_obj(&r, CFG_ServiceAccount));
    tu_free(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_service_decode),
        cmocka_unit_test(test_service_ports),
        cmocka_unit_test(test_service_other_rules),
        cmocka_unit_test(test_endpointslice_decode),
        cmocka_unit_test(test_endpointslice_rules),
        cmocka_unit_test(test_endpoints_rules),
        cmocka_unit_test(test_pod_decode),
        cmocka_unit_test(test_pod_rules),
        cmocka_unit_test(test_service_account),
        cmocka_unit_test(test_secret),
        cmocka_unit_test(test_configmap),
        cmocka_unit_test(test_webhook_decode),
        cmocka_unit_test(test_webhook_rules),
        cmocka_unit_test(test_namespace),
        cmocka_unit_test(test_bookinfo_platform_loads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
