/*
 * SDS for gateways: the Secret resources meshd translates for a router
 * proxy from the Kubernetes Secrets its Gateway servers and DestinationRules
 * name (credentialName), and their delivery over ADS (state of the world and
 * delta) when a Secret changes. Certificates are made by the test (EC P-256,
 * self-signed) so that every check compares real PEM bytes.
 */
#include <curl/curl.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "../../common/b64.h"
#include "../../common/grpc.h"
#include "../../common/log.h"
#include "../../controlplane/debug.h"
#include "../../xds/xds.h"
#include "../../xds/xds_server.h"
#include "../pemutil.h"
#include "../adsclient.h"
#include "../testutil.h"
#include "../xdsworld.h"
#include "envoy/config/core/v3/base.pb-c.h"
#include "envoy/extensions/transport_sockets/tls/v3/secret.pb-c.h"
#include "envoy/service/discovery/v3/discovery.pb-c.h"
#include "google/protobuf/struct.pb-c.h"

typedef Envoy__Extensions__TransportSockets__Tls__V3__Secret pb_secret_t;

/* ---- certificates ---- */

/* A Secret document; keys and values NULL-terminated, values base64-encoded
 * into data. type may be NULL. Caller frees. */
static char *secret_yaml(const char *ns, const char *name, const char *type,
                         const char *const *keys, const char *const *values)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    fprintf(f, "apiVersion: v1\nkind: Secret\nmetadata: {name: %s, namespace: %s}\n", name, ns);
    if (type)
        fprintf(f, "type: %s\n", type);
    fprintf(f, "data:\n");
    for (size_t i = 0; keys[i]; i++) {
        char *e = b64_encode(values[i], strlen(values[i]));
        fprintf(f, "  %s: %s\n", keys[i], e);
        free(e);
    }
    fclose(f);
    return buf;
}

/* ---- the world: a gateway in istio-system ---- */

static const char *const GATEWAY_WORLD =
    "apiVersion: v1\nkind: Pod\nmetadata:\n  name: ingressgateway-0\n  namespace: istio-system\n"
    "  labels: {istio: ingressgateway}\n"
    "spec: {serviceAccountName: gw, containers: [{name: istio-proxy, image: p}]}\n"
    "status: {podIP: 10.1.9.1}\n"
    "---\napiVersion: v1\nkind: Service\nmetadata: {name: backend, namespace: default}\n"
    "spec:\n  clusterIP: 10.96.0.20\n  selector: {app: backend}\n"
    "  ports: [{name: http, port: 8080, targetPort: 8080}]\n"
    "---\napiVersion: networking.istio.io/v1\nkind: Gateway\n"
    "metadata: {name: web, namespace: istio-system}\n"
    "spec:\n  selector: {istio: ingressgateway}\n  servers:\n"
    "  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: [web.example.com]\n"
    "    tls: {mode: SIMPLE, credentialName: web-cert}\n"
    "  - port: {number: 8443, name: https-mtls, protocol: HTTPS}\n    hosts: [mtls.example.com]\n"
    "    tls: {mode: MUTUAL, credentialName: mtls-cert}\n"
    "  - port: {number: 9443, name: https-same, protocol: HTTPS}\n    hosts: [same.example.com]\n"
    "    tls: {mode: MUTUAL, credentialName: same-cert}\n"
    "  - port: {number: 10443, name: https-half, protocol: HTTPS}\n    hosts: [half.example.com]\n"
    "    tls: {mode: SIMPLE, credentialName: half-cert}\n"
    "  - port: {number: 12443, name: https-ca, protocol: HTTPS}\n    hosts: [ca.example.com]\n"
    "    tls: {mode: MUTUAL, credentialName: web-cert, caCertCredentialName: client-cas}\n"
    "  - port: {number: 11443, name: https-elsewhere, protocol: HTTPS}\n"
    "    hosts: [elsewhere.example.com]\n"
    "    tls: {mode: SIMPLE, credentialName: elsewhere-cert}\n"
    "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\n"
    "metadata: {name: backend-tls, namespace: istio-system}\n"
    "spec:\n  host: backend.default.svc.cluster.local\n"
    "  trafficPolicy: {tls: {mode: SIMPLE, credentialName: upstream}}\n";

typedef struct world {
    xw_t x;
    tu_pem_t web, mtls, ca, same, same_ca, upstream_ca, other;
} world_t;

static void apply(cfg_store_t *store, const char *yaml)
{
    assert_int_equal(cfg_store_apply_yaml(store, yaml), 0);
}

static void apply_secret(cfg_store_t *store, const char *ns, const char *name, const char *type,
                         const char *const *keys, const char *const *values)
{
    char *y = secret_yaml(ns, name, type, keys, values);
    apply(store, y);
    free(y);
}

static void world_secrets(world_t *w)
{
    w->web = tu_self_signed("web.example.com");
    w->mtls = tu_self_signed("mtls.example.com");
    w->ca = tu_self_signed("client-ca");
    w->same = tu_self_signed("same.example.com");
    w->same_ca = tu_self_signed("same-ca");
    w->upstream_ca = tu_self_signed("upstream-ca");
    w->other = tu_self_signed("elsewhere.example.com");
    /* kubernetes.io/tls */
    apply_secret(w->x.store, "istio-system", "web-cert", "kubernetes.io/tls",
                 (const char *[]){"tls.crt", "tls.key", NULL},
                 (const char *[]){w->web.cert, w->web.key});
    /* generic (Opaque) with a separate NAME-cacert Secret */
    apply_secret(w->x.store, "istio-system", "mtls-cert", "Opaque",
                 (const char *[]){"cert", "key", NULL},
                 (const char *[]){w->mtls.cert, w->mtls.key});
    apply_secret(w->x.store, "istio-system", "mtls-cert-cacert", "Opaque",
                 (const char *[]){"cacert", NULL}, (const char *[]){w->ca.cert});
    /* kubernetes.io/tls holding its CA as ca.crt */
    apply_secret(w->x.store, "istio-system", "same-cert", "kubernetes.io/tls",
                 (const char *[]){"tls.crt", "tls.key", "ca.crt", NULL},
                 (const char *[]){w->same.cert, w->same.key, w->same_ca.cert});
    /* a certificate without its key */
    apply_secret(w->x.store, "istio-system", "half-cert", "Opaque", (const char *[]){"cert", NULL},
                 (const char *[]){w->web.cert});
    /* in another namespace than the gateway's */
    apply_secret(w->x.store, "default", "elsewhere-cert", "kubernetes.io/tls",
                 (const char *[]){"tls.crt", "tls.key", NULL},
                 (const char *[]){w->other.cert, w->other.key});
    /* a CA of its own, named by caCertCredentialName */
    apply_secret(w->x.store, "istio-system", "client-cas", "Opaque", (const char *[]){"cacert", NULL},
                 (const char *[]){w->same_ca.cert});
    /* the upstream CA of the DestinationRule */
    apply_secret(w->x.store, "istio-system", "upstream", "Opaque", (const char *[]){"ca.crt", NULL},
                 (const char *[]){w->upstream_ca.cert});
}

static int world_setup(void **state)
{
    world_t *w = calloc(1, sizeof(*w));
    xw_open(&w->x);
    apply(w->x.store, GATEWAY_WORLD);
    world_secrets(w);
    xw_commit(&w->x);
    *state = w;
    return 0;
}

static void world_free(world_t *w)
{
    xw_close(&w->x);
    tu_pem_t *all[] = {&w->web, &w->mtls, &w->ca, &w->same, &w->same_ca, &w->upstream_ca, &w->other};
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
        tu_pem_free(all[i]);
}

static int world_teardown(void **state)
{
    world_free(*state);
    free(*state);
    return 0;
}

static xds_proxy_t *gateway_proxy(const char *ns)
{
    cfg_mapent_t ent = {.key = "istio", .str = "ingressgateway"};
    cfg_map_t labels = {&ent, 1};
    return xds_proxy_new(XDS_ROUTER, "10.1.9.1", "ingressgateway-0", ns, "gw", &labels);
}

static pb_secret_t *secret_of(const xds_resources_t *r, const char *name)
{
    const xds_resource_t *res = xds_resources_find(r, XDS_SECRET, name);
    if (res == NULL)
        return NULL;
    pb_secret_t *s =
        envoy__extensions__transport_sockets__tls__v3__secret__unpack(NULL, res->len, res->data);
    assert_non_null(s);
    assert_string_equal(s->name, name);
    return s;
}

static void assert_bytes(const ProtobufCBinaryData *d, const char *want)
{
    assert_int_equal(d->len, strlen(want));
    assert_memory_equal(d->data, want, d->len);
}

static bool warned(const xds_resources_t *r, const char *a, const char *b)
{
    uint32_t n;
    const char *const *w = xds_resources_warnings(r, &n);
    for (uint32_t i = 0; i < n; i++)
        if (strstr(w[i], a) && (b == NULL || strstr(w[i], b)))
            return true;
    return false;
}

static void dump_warnings(const xds_resources_t *r)
{
    uint32_t n;
    const char *const *w = xds_resources_warnings(r, &n);
    for (uint32_t i = 0; i < n; i++)
        fprintf(stderr, "warning: %s\n", w[i]);
}

/* ---- translation ---- */

static void test_simple_tls_secret(void **state)
{
    world_t *w = *state;
    xds_proxy_t *p = gateway_proxy("istio-system");
    xds_resources_t *r = xw_translate(&w->x, p);
    pb_secret_t *s = secret_of(r, "kubernetes://web-cert");
    if (s == NULL)
        dump_warnings(r);
    assert_non_null(s);
    assert_int_equal(s->type_case,
                     ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__SECRET__TYPE_TLS_CERTIFICATE);
    assert_int_equal(s->tls_certificate->certificate_chain->specifier_case,
                     ENVOY__CONFIG__CORE__V3__DATA_SOURCE__SPECIFIER_INLINE_BYTES);
    assert_bytes(&s->tls_certificate->certificate_chain->inline_bytes, w->web.cert);
    assert_bytes(&s->tls_certificate->private_key->inline_bytes, w->web.key);
    envoy__extensions__transport_sockets__tls__v3__secret__free_unpacked(s, NULL);
    /* SIMPLE asks for no CA */
    assert_null(xds_resources_find(r, XDS_SECRET, "kubernetes://web-cert-cacert"));
    xds_resources_unref(r);
    xds_proxy_free(p);
}

static void test_mutual_opaque_with_cacert_secret(void **state)
{
    world_t *w = *state;
    xds_proxy_t *p = gateway_proxy("istio-system");
    xds_resources_t *r = xw_translate(&w->x, p);
    pb_secret_t *s = secret_of(r, "kubernetes://mtls-cert");
    assert_non_null(s);
    assert_bytes(&s->tls_certificate->certificate_chain->inline_bytes, w->mtls.cert);
    assert_bytes(&s->tls_certificate->private_key->inline_bytes, w->mtls.key);
    envoy__extensions__transport_sockets__tls__v3__secret__free_unpacked(s, NULL);
    s = secret_of(r, "kubernetes://mtls-cert-cacert");
    assert_non_null(s);
    assert_int_equal(
        s->type_case,
        ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__SECRET__TYPE_VALIDATION_CONTEXT);
    assert_bytes(&s->validation_context->trusted_ca->inline_bytes, w->ca.cert);
    assert_null(s->validation_context->crl);
    envoy__extensions__transport_sockets__tls__v3__secret__free_unpacked(s, NULL);
    xds_resources_unref(r);
    xds_proxy_free(p);
}

static void test_mutual_ca_in_the_same_secret(void **state)
{
    world_t *w = *state;
    xds_proxy_t *p = gateway_proxy("istio-system");
    xds_resources_t *r = xw_translate(&w->x, p);
    pb_secret_t *s = secret_of(r, "kubernetes://same-cert");
    assert_non_null(s);
    assert_bytes(&s->tls_certificate->certificate_chain->inline_bytes, w->same.cert);
    envoy__extensions__transport_sockets__tls__v3__secret__free_unpacked(s, NULL);
    s = secret_of(r, "kubernetes://same-cert-cacert");
    assert_non_null(s);
    assert_bytes(&s->validation_context->trusted_ca->inline_bytes, w->same_ca.cert);
    envoy__extensions__transport_sockets__tls__v3__secret__free_unpacked(s, NULL);
    xds_resources_unref(r);
    xds_proxy_free(p);
}

static void test_ca_cert_credential_name(void **state)
{
    world_t *w = *state;
    xds_proxy_t *p = gateway_proxy("istio-system");
    xds_resources_t *r = xw_translate(&w->x, p);
    /* the CA Secret is named as it is, without the -cacert suffix */
    pb_secret_t *s = secret_of(r, "kubernetes://client-cas");
    if (s == NULL)
        dump_warnings(r);
    assert_non_null(s);
    assert_int_equal(s->type_case,
                     ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__SECRET__TYPE_VALIDATION_CONTEXT);
    assert_bytes(&s->validation_context->trusted_ca->inline_bytes, w->same_ca.cert);
    envoy__extensions__transport_sockets__tls__v3__secret__free_unpacked(s, NULL);
    assert_null(xds_resources_find(r, XDS_SECRET, "kubernetes://web-cert-cacert"));
    xds_resources_unref(r);
    xds_proxy_free(p);
}

static void test_destination_rule_credential(void **state)
{
    world_t *w = *state;
    xds_proxy_t *p = gateway_proxy("istio-system");
    xds_resources_t *r = xw_translate(&w->x, p);
    pb_secret_t *s = secret_of(r, "kubernetes://upstream-cacert");
    if (s == NULL)
        dump_warnings(r);
    assert_non_null(s);
    assert_bytes(&s->validation_context->trusted_ca->inline_bytes, w->upstream_ca.cert);
    envoy__extensions__transport_sockets__tls__v3__secret__free_unpacked(s, NULL);
    xds_resources_unref(r);
    xds_proxy_free(p);
}

static void test_missing_key_not_served(void **state)
{
    world_t *w = *state;
    xds_proxy_t *p = gateway_proxy("istio-system");
    xds_resources_t *r = xw_translate(&w->x, p);
    assert_null(xds_resources_find(r, XDS_SECRET, "kubernetes://half-cert"));
    if (!warned(r, "Secret istio-system/half-cert", "missing key key"))
        dump_warnings(r);
    assert_true(warned(r, "Secret istio-system/half-cert", "missing key key"));
    /* the others are still served */
    assert_non_null(xds_resources_find(r, XDS_SECRET, "kubernetes://web-cert"));
    xds_resources_unref(r);

    /* kubernetes.io/tls keys: the missing one is named */
    apply_secret(w->x.store, "istio-system", "half-cert", "Opaque", (const char *[]){"tls.key", NULL},
                 (const char *[]){w->web.key});
    xw_commit(&w->x);
    r = xw_translate(&w->x, p);
    assert_null(xds_resources_find(r, XDS_SECRET, "kubernetes://half-cert"));
    assert_true(warned(r, "Secret istio-system/half-cert", "missing key tls.crt"));
    xds_resources_unref(r);

    /* a key that belongs to another certificate, a certificate that is not PEM */
    apply_secret(w->x.store, "istio-system", "half-cert", "kubernetes.io/tls",
                 (const char *[]){"tls.crt", "tls.key", NULL},
                 (const char *[]){w->web.cert, w->mtls.key});
    xw_commit(&w->x);
    r = xw_translate(&w->x, p);
    assert_null(xds_resources_find(r, XDS_SECRET, "kubernetes://half-cert"));
    assert_true(warned(r, "Secret istio-system/half-cert", "tls.key does not match"));
    xds_resources_unref(r);
    apply_secret(w->x.store, "istio-system", "half-cert", "kubernetes.io/tls",
                 (const char *[]){"tls.crt", "tls.key", NULL},
                 (const char *[]){"not a certificate", w->web.key});
    xw_commit(&w->x);
    r = xw_translate(&w->x, p);
    assert_null(xds_resources_find(r, XDS_SECRET, "kubernetes://half-cert"));
    assert_true(warned(r, "Secret istio-system/half-cert", "tls.crt: not a PEM certificate"));
    xds_resources_unref(r);

    /* a MUTUAL server whose CA is nowhere */
    cfg_store_delete(w->x.store, CFG_Secret, "istio-system", "mtls-cert-cacert");
    xw_commit(&w->x);
    r = xw_translate(&w->x, p);
    assert_non_null(xds_resources_find(r, XDS_SECRET, "kubernetes://mtls-cert"));
    assert_null(xds_resources_find(r, XDS_SECRET, "kubernetes://mtls-cert-cacert"));
    assert_true(warned(r, "istio-system/mtls-cert", "missing key ca.crt"));
    xds_resources_unref(r);
    xds_proxy_free(p);
}

static void test_other_namespace_not_served(void **state)
{
    world_t *w = *state;
    xds_proxy_t *p = gateway_proxy("istio-system");
    xds_resources_t *r = xw_translate(&w->x, p);
    /* the Secret exists, but in default: a gateway reads only its own namespace */
    assert_null(xds_resources_find(r, XDS_SECRET, "kubernetes://elsewhere-cert"));
    assert_true(warned(r, "Secret istio-system/elsewhere-cert", "not found"));
    xds_resources_unref(r);
    xds_proxy_free(p);

    /* a gateway pod of another namespace selected by the same Gateway gets
     * nothing from istio-system's Secrets */
    p = gateway_proxy("edge");
    r = xw_translate(&w->x, p);
    uint32_t n;
    xds_resources_get(r, XDS_SECRET, &n);
    assert_int_equal(n, 0);
    assert_true(warned(r, "Secret edge/web-cert", "not found"));
    xds_resources_unref(r);
    xds_proxy_free(p);
}

static void test_sidecars_get_no_secrets(void **state)
{
    world_t *w = *state;
    xds_proxy_t *p =
        xds_proxy_new(XDS_SIDECAR, "10.1.0.5", "backend-0", "istio-system", "default", NULL);
    xds_resources_t *r = xw_translate(&w->x, p);
    uint32_t n;
    xds_resources_get(r, XDS_SECRET, &n);
    assert_int_equal(n, 0);
    xds_resources_unref(r);
    xds_proxy_free(p);
}

static void test_string_data_and_redaction(void **state)
{
    world_t *w = *state;
    /* stringData (clear text) is read as written */
    char *y = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&y, &len);
    fprintf(f, "apiVersion: v1\nkind: Secret\nmetadata: {name: web-cert, namespace: istio-system}\n"
               "type: Opaque\nstringData:\n  cert: |\n");
    for (const char *l = w->other.cert; *l;) {
        const char *e = strchr(l, '\n');
        size_t ll = e ? (size_t)(e - l) : strlen(l);
        fprintf(f, "    %.*s\n", (int)ll, l);
        l += ll + (e ? 1 : 0);
    }
    fprintf(f, "  key: |\n");
    for (const char *l = w->other.key; *l;) {
        const char *e = strchr(l, '\n');
        size_t ll = e ? (size_t)(e - l) : strlen(l);
        fprintf(f, "    %.*s\n", (int)ll, l);
        l += ll + (e ? 1 : 0);
    }
    fclose(f);
    apply(w->x.store, y);
    free(y);
    xw_commit(&w->x);
    xds_proxy_t *p = gateway_proxy("istio-system");
    xds_resources_t *r = xw_translate(&w->x, p);
    pb_secret_t *s = secret_of(r, "kubernetes://web-cert");
    assert_non_null(s);
    assert_bytes(&s->tls_certificate->certificate_chain->inline_bytes, w->other.cert);
    assert_bytes(&s->tls_certificate->private_key->inline_bytes, w->other.key);
    envoy__extensions__transport_sockets__tls__v3__secret__free_unpacked(s, NULL);

    /* what a config dump prints: the chain, never the key */
    json_object *j = xds_resource_to_json(
        XDS_SECRET, xds_resources_find(r, XDS_SECRET, "kubernetes://web-cert"));
    assert_non_null(j);
    xds_secret_redact_json(j);
    const char *text = json_object_to_json_string(j);
    char *key_b64 = b64_encode(w->other.key, strlen(w->other.key));
    char *cert_b64 = b64_encode(w->other.cert, strlen(w->other.cert));
    assert_null(strstr(text, key_b64));
    assert_null(strstr(text, "PRIVATE KEY"));
    assert_non_null(strstr(text, "[redacted]"));
    assert_non_null(strstr(text, cert_b64));
    free(key_b64);
    free(cert_b64);
    json_object_put(j);
    xds_resources_unref(r);
    xds_proxy_free(p);
}

/* Lines of a file holding s. */
static int count_lines(const char *path, const char *s)
{
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    char line[4096];
    int n = 0;
    while (fgets(line, sizeof(line), f))
        n += strstr(line, s) != NULL;
    fclose(f);
    return n;
}

/* A broken credential is logged once per change, not once per translation. */
static void test_logged_once_per_change(void **state)
{
    world_t *w = *state;
    char path[] = "/tmp/meshd-sds-log-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    fflush(stderr);
    int saved = dup(2);
    dup2(fd, 2);
    log_set_level(LOG_WARN);
    xds_proxy_t *p = gateway_proxy("logns");
    for (int i = 0; i < 3; i++)
        xds_resources_unref(xw_translate(&w->x, p));
    apply_secret(w->x.store, "logns", "web-cert", "kubernetes.io/tls",
                 (const char *[]){"tls.crt", "tls.key", NULL},
                 (const char *[]){w->web.cert, w->mtls.key});
    xw_commit(&w->x);
    for (int i = 0; i < 3; i++)
        xds_resources_unref(xw_translate(&w->x, p));
    xds_proxy_free(p);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    close(fd);
    log_set_level(LOG_ERROR);
    assert_int_equal(count_lines(path, "Secret logns/web-cert: not found"), 1);
    assert_int_equal(count_lines(path, "Secret logns/web-cert: tls.key does not match"), 1);
    assert_int_equal(count_lines(path, "Secret logns/mtls-cert: not found"), 1);
    /* names what to fix, never a value */
    assert_int_equal(count_lines(path, "PRIVATE KEY"), 0);
    assert_int_equal(count_lines(path, "BEGIN CERTIFICATE"), 0);
    unlink(path);
}

/* Local mode: Secret documents in a --config-dir directory are read like
 * the cluster's (data base64-decoded). */
static void test_config_dir_secret(void **state)
{
    (void)state;
    char dir[] = "/tmp/meshd-sds-test-XXXXXX";
    assert_non_null(mkdtemp(dir));
    tu_pem_t web = tu_self_signed("web.example.com");
    char path[128];
    snprintf(path, sizeof(path), "%s/gateway.yaml", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(GATEWAY_WORLD, f);
    fclose(f);
    snprintf(path, sizeof(path), "%s/secret.yaml", dir);
    f = fopen(path, "w");
    assert_non_null(f);
    char *y = secret_yaml("istio-system", "web-cert", "kubernetes.io/tls",
                          (const char *[]){"tls.crt", "tls.key", NULL},
                          (const char *[]){web.cert, web.key});
    fputs(y, f);
    free(y);
    fclose(f);

    world_t w = {0};
    xw_open(&w.x);
    cfg_dir_t *d = cfg_dir_open(dir, w.x.store, NULL);
    assert_non_null(d);
    xw_commit(&w.x);
    xds_proxy_t *p = gateway_proxy("istio-system");
    xds_resources_t *r = xw_translate(&w.x, p);
    pb_secret_t *s = secret_of(r, "kubernetes://web-cert");
    assert_non_null(s);
    assert_bytes(&s->tls_certificate->certificate_chain->inline_bytes, web.cert);
    assert_bytes(&s->tls_certificate->private_key->inline_bytes, web.key);
    envoy__extensions__transport_sockets__tls__v3__secret__free_unpacked(s, NULL);
    xds_resources_unref(r);
    xds_proxy_free(p);
    cfg_dir_close(d);
    world_free(&w);
    tu_pem_free(&web);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

/* ---- ADS ---- */

#define DEBOUNCE_MS 50
#define NODE_GW "router~10.1.9.1~ingressgateway-0.istio-system~istio-system.svc.cluster.local"
#define NODE_EDGE "router~10.1.9.2~ingressgateway-0.edge~edge.svc.cluster.local"

typedef struct fx {
    world_t w;
    loop_t *loop;
    grpc_server_t *grpc;
    xds_server_t *xs;
    char addr[64];
} fx_t;

static int ads_setup(void **state)
{
    fx_t *fx = calloc(1, sizeof(*fx));
    xw_open(&fx->w.x);
    apply(fx->w.x.store, GATEWAY_WORLD);
    world_secrets(&fx->w);
    fx->loop = loop_new();
    char err[256];
    grpc_server_opts_t go = {.listen = "127.0.0.1:0"};
    fx->grpc = grpc_server_new(fx->loop, &go, err, sizeof(err));
    if (fx->grpc == NULL)
        fail_msg("grpc server: %s", err);
    xds_server_opts_t xo = {.debounce_ms = DEBOUNCE_MS, .debounce_max_ms = 1000};
    fx->xs = xds_server_start(fx->loop, fx->grpc, fx->w.x.store, &xo);
    assert_non_null(fx->xs);
    snprintf(fx->addr, sizeof(fx->addr), "127.0.0.1:%d", grpc_server_port(fx->grpc));
    *state = fx;
    return 0;
}

static int ads_teardown(void **state)
{
    fx_t *fx = *state;
    grpc_server_free(fx->grpc);
    for (int i = 0; i < 10; i++)
        loop_run_once(fx->loop, 0);
    xds_server_stop(fx->xs);
    loop_free(fx->loop);
    world_free(&fx->w);
    free(fx);
    return 0;
}

typedef tads_t ads_t;

/* The Node of a gateway pod: its id and LABELS {istio: ingressgateway}. */
typedef struct node {
    Envoy__Config__Core__V3__Node node;
    Google__Protobuf__Struct md, labels;
    Google__Protobuf__Struct__FieldsEntry md_e, lab_e;
    Google__Protobuf__Struct__FieldsEntry *md_v[1], *lab_v[1];
    Google__Protobuf__Value md_val, lab_val;
} node_t;

static Envoy__Config__Core__V3__Node *node_init(node_t *n, const char *id)
{
    *n = (node_t){.node = ENVOY__CONFIG__CORE__V3__NODE__INIT,
                  .md = GOOGLE__PROTOBUF__STRUCT__INIT,
                  .labels = GOOGLE__PROTOBUF__STRUCT__INIT,
                  .md_e = GOOGLE__PROTOBUF__STRUCT__FIELDS_ENTRY__INIT,
                  .lab_e = GOOGLE__PROTOBUF__STRUCT__FIELDS_ENTRY__INIT,
                  .md_val = GOOGLE__PROTOBUF__VALUE__INIT,
                  .lab_val = GOOGLE__PROTOBUF__VALUE__INIT};
    n->lab_val.kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE;
    n->lab_val.string_value = "ingressgateway";
    n->lab_e.key = "istio";
    n->lab_e.value = &n->lab_val;
    n->lab_v[0] = &n->lab_e;
    n->labels.fields = n->lab_v;
    n->labels.n_fields = 1;
    n->md_val.kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRUCT_VALUE;
    n->md_val.struct_value = &n->labels;
    n->md_e.key = "LABELS";
    n->md_e.value = &n->md_val;
    n->md_v[0] = &n->md_e;
    n->md.fields = n->md_v;
    n->md.n_fields = 1;
    n->node.id = (char *)id;
    n->node.metadata = &n->md;
    return &n->node;
}

/* A stream announcing itself as the gateway pod node_id. */
static ads_t *ads_open(fx_t *fx, const char *node_id, bool delta)
{
    ads_t *a = tads_open(fx->loop, fx->addr, node_id, delta);
    node_t *n = malloc(sizeof(*n));
    assert_non_null(n);
    a->node = node_init(n, node_id); /* the node_t's first member */
    return a;
}

static void ads_close(ads_t *a)
{
    free(a->node);
    tads_close(a);
}

static void ads_send(ads_t *a, const char *type_url, const char *const *names, size_t nnames,
                     const char *version, const char *nonce)
{
    tads_send(a, type_url, names, nnames, version, nonce, NULL);
}

static void ads_send_delta(ads_t *a, const char *type_url, const char *const *sub, size_t nsub,
                           const char *nonce)
{
    tads_send_delta(a, type_url, sub, nsub, NULL, 0, nonce, NULL);
}

static Envoy__Service__Discovery__V3__DiscoveryResponse *expect_sotw(ads_t *a)
{
    Envoy__Service__Discovery__V3__DiscoveryResponse *r = tads_wait(a, 3000);
    if (r == NULL)
        fail_msg("no SDS response (closed %d: %s)", a->closed, a->message);
    assert_string_equal(r->type_url, XDS_SECRET_TYPE);
    return r;
}

static void expect_quiet(ads_t *a, int ms)
{
    if (tads_wait(a, ms) != NULL)
        fail_msg("unexpected response on %s", a->node_id);
}

/* The Secret in an Any, unpacked (caller frees). */
static pb_secret_t *any_secret(const Google__Protobuf__Any *any)
{
    assert_string_equal(any->type_url, XDS_SECRET_TYPE);
    pb_secret_t *s = envoy__extensions__transport_sockets__tls__v3__secret__unpack(
        NULL, any->value.len, any->value.data);
    assert_non_null(s);
    return s;
}

static void assert_served_cert(const Google__Protobuf__Any *any, const char *name,
                               const tu_pem_t *want)
{
    pb_secret_t *s = any_secret(any);
    assert_string_equal(s->name, name);
    assert_int_equal(s->type_case,
                     ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__SECRET__TYPE_TLS_CERTIFICATE);
    assert_bytes(&s->tls_certificate->certificate_chain->inline_bytes, want->cert);
    assert_bytes(&s->tls_certificate->private_key->inline_bytes, want->key);
    envoy__extensions__transport_sockets__tls__v3__secret__free_unpacked(s, NULL);
}

static void test_ads_sotw_secret_update(void **state)
{
    fx_t *fx = *state;
    ads_t *gw = ads_open(fx, NODE_GW, false);
    ads_t *edge = ads_open(fx, NODE_EDGE, false);
    const char *names[] = {"kubernetes://web-cert"};
    ads_send(gw, XDS_SECRET_TYPE, names, 1, NULL, NULL);
    Envoy__Service__Discovery__V3__DiscoveryResponse *r = expect_sotw(gw);
    assert_int_equal(r->n_resources, 1);
    assert_served_cert(r->resources[0], "kubernetes://web-cert", &fx->w.web);
    ads_send(gw, XDS_SECRET_TYPE, names, 1, r->version_info, r->nonce);

    /* /debug/config_dump lists the secret with its chain, never its key */
    char err[256];
    debug_server_t *dbg = debug_server_start("127.0.0.1:0", err, sizeof(err));
    assert_non_null(dbg);
    xds_server_add_debug(fx->xs, dbg);
    long status = 0;
    char *dump = tu_http_get(debug_server_port(dbg), "/debug/config_dump?proxyID=" NODE_GW, &status);
    debug_server_stop(dbg);
    assert_int_equal(status, 200);
    json_object *j = json_tokener_parse(dump), *secrets, *res, *tc, *pk, *chain, *v;
    assert_non_null(j);
    assert_true(json_object_object_get_ex(j, "secrets", &secrets));
    assert_int_equal(json_object_array_length(secrets), 1);
    json_object *ent = json_object_array_get_idx(secrets, 0);
    assert_true(json_object_object_get_ex(ent, "name", &v));
    assert_string_equal(json_object_get_string(v), "kubernetes://web-cert");
    assert_true(json_object_object_get_ex(ent, "resource", &res));
    assert_true(json_object_object_get_ex(res, "tlsCertificate", &tc));
    assert_true(json_object_object_get_ex(tc, "privateKey", &pk));
    assert_false(json_object_object_get_ex(pk, "inlineBytes", NULL));
    assert_true(json_object_object_get_ex(pk, "inlineString", &v));
    assert_string_equal(json_object_get_string(v), "[redacted]");
    assert_true(json_object_object_get_ex(tc, "certificateChain", &chain));
    assert_true(json_object_object_get_ex(chain, "inlineBytes", &v));
    char *cert_b64 = b64_encode(fx->w.web.cert, strlen(fx->w.web.cert));
    assert_string_equal(json_object_get_string(v), cert_b64);
    free(cert_b64);
    json_object_put(j);
    char *key_b64 = b64_encode(fx->w.web.key, strlen(fx->w.web.key));
    assert_null(strstr(dump, key_b64)); /* nowhere else either */
    free(key_b64);
    free(dump);
    /* a gateway of another namespace asking for the same name gets nothing */
    ads_send(edge, XDS_SECRET_TYPE, names, 1, NULL, NULL);
    Envoy__Service__Discovery__V3__DiscoveryResponse *e = expect_sotw(edge);
    assert_int_equal(e->n_resources, 0);
    ads_send(edge, XDS_SECRET_TYPE, names, 1, e->version_info, e->nonce);
    expect_quiet(gw, 2 * DEBOUNCE_MS);

    /* the certificate is renewed: the gateway gets the new one */
    tu_pem_t renewed = tu_self_signed("web.example.com");
    apply_secret(fx->w.x.store, "istio-system", "web-cert", "kubernetes.io/tls",
                 (const char *[]){"tls.crt", "tls.key", NULL},
                 (const char *[]){renewed.cert, renewed.key});
    r = expect_sotw(gw);
    assert_int_equal(r->n_resources, 1);
    assert_served_cert(r->resources[0], "kubernetes://web-cert", &renewed);
    ads_send(gw, XDS_SECRET_TYPE, names, 1, r->version_info, r->nonce);
    /* ... and only the proxies that read it */
    expect_quiet(edge, 4 * DEBOUNCE_MS);

    /* an unrelated Secret changes: nothing is sent */
    apply_secret(fx->w.x.store, "istio-system", "unrelated", "kubernetes.io/tls",
                 (const char *[]){"tls.crt", "tls.key", NULL},
                 (const char *[]){renewed.cert, renewed.key});
    expect_quiet(gw, 4 * DEBOUNCE_MS);

    /* the Secret turns invalid (a key that does not match): the resource is
     * withdrawn, never sent half-made */
    apply_secret(fx->w.x.store, "istio-system", "web-cert", "kubernetes.io/tls",
                 (const char *[]){"tls.crt", "tls.key", NULL},
                 (const char *[]){renewed.cert, fx->w.mtls.key});
    r = expect_sotw(gw);
    assert_int_equal(r->n_resources, 0);
    tu_pem_free(&renewed);
    ads_close(gw);
    ads_close(edge);
}

static void test_ads_delta_secret_update(void **state)
{
    fx_t *fx = *state;
    ads_t *gw = ads_open(fx, NODE_GW, true);
    const char *names[] = {"kubernetes://mtls-cert", "kubernetes://mtls-cert-cacert"};
    ads_send_delta(gw, XDS_SECRET_TYPE, names, 2, NULL);
    Envoy__Service__Discovery__V3__DeltaDiscoveryResponse *r = tads_wait(gw, 3000);
    assert_non_null(r);
    assert_string_equal(r->type_url, XDS_SECRET_TYPE);
    assert_int_equal(r->n_resources, 2);
    bool cert = false, ca = false;
    for (size_t i = 0; i < r->n_resources; i++) {
        if (strcmp(r->resources[i]->name, "kubernetes://mtls-cert") == 0) {
            assert_served_cert(r->resources[i]->resource, "kubernetes://mtls-cert", &fx->w.mtls);
            cert = true;
        } else {
            assert_string_equal(r->resources[i]->name, "kubernetes://mtls-cert-cacert");
            pb_secret_t *s = any_secret(r->resources[i]->resource);
            assert_bytes(&s->validation_context->trusted_ca->inline_bytes, fx->w.ca.cert);
            envoy__extensions__transport_sockets__tls__v3__secret__free_unpacked(s, NULL);
            ca = true;
        }
    }
    assert_true(cert && ca);
    ads_send_delta(gw, XDS_SECRET_TYPE, NULL, 0, r->nonce);

    /* a new client CA: only that resource is sent again */
    tu_pem_t ca2 = tu_self_signed("client-ca-2");
    apply_secret(fx->w.x.store, "istio-system", "mtls-cert-cacert", NULL,
                 (const char *[]){"ca.crt", NULL}, (const char *[]){ca2.cert});
    r = tads_wait(gw, 3000);
    assert_non_null(r);
    assert_int_equal(r->n_resources, 1);
    assert_string_equal(r->resources[0]->name, "kubernetes://mtls-cert-cacert");
    pb_secret_t *s = any_secret(r->resources[0]->resource);
    assert_bytes(&s->validation_context->trusted_ca->inline_bytes, ca2.cert);
    envoy__extensions__transport_sockets__tls__v3__secret__free_unpacked(s, NULL);
    ads_send_delta(gw, XDS_SECRET_TYPE, NULL, 0, r->nonce);

    /* the certificate's Secret is deleted: the resource is removed */
    cfg_store_delete(fx->w.x.store, CFG_Secret, "istio-system", "mtls-cert");
    r = tads_wait(gw, 3000);
    assert_non_null(r);
    assert_int_equal(r->n_resources, 0);
    assert_int_equal(r->n_removed_resources, 1);
    assert_string_equal(r->removed_resources[0], "kubernetes://mtls-cert");
    tu_pem_free(&ca2);
    ads_close(gw);
}

int main(void)
{
    log_set_level(LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_simple_tls_secret, world_setup, world_teardown),
        cmocka_unit_test_setup_teardown(test_mutual_opaque_with_cacert_secret, world_setup,
                                        world_teardown),
        cmocka_unit_test_setup_teardown(test_mutual_ca_in_the_same_secret, world_setup,
                                        world_teardown),
        cmocka_unit_test_setup_teardown(test_ca_cert_credential_name, world_setup, world_teardown),
        cmocka_unit_test_setup_teardown(test_destination_rule_credential, world_setup,
                                        world_teardown),
        cmocka_unit_test_setup_teardown(test_missing_key_not_served, world_setup, world_teardown),
        cmocka_unit_test_setup_teardown(test_other_namespace_not_served, world_setup,
                                        world_teardown),
        cmocka_unit_test_setup_teardown(test_sidecars_get_no_secrets, world_setup, world_teardown),
        cmocka_unit_test_setup_teardown(test_string_data_and_redaction, world_setup,
                                        world_teardown),
        cmocka_unit_test_setup_teardown(test_logged_once_per_change, world_setup, world_teardown),
        cmocka_unit_test(test_config_dir_secret),
        cmocka_unit_test_setup_teardown(test_ads_sotw_secret_update, ads_setup, ads_teardown),
        cmocka_unit_test_setup_teardown(test_ads_delta_secret_update, ads_setup, ads_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
