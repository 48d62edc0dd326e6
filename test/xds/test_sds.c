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
#include "../testutil.h"
#include "envoy/config/core/v3/base.pb-c.h"
#include "envoy/extensions/transport_sockets/tls/v3/secret.pb-c.h"
#include "envoy/service/discovery/v3/discovery.pb-c.h"
#include "google/protobuf/struct.pb-c.h"

typedef Envoy__Extensions__TransportSockets__Tls__V3__Secret pb_secret_t;

/* ---- certificates ---- */

typedef struct pem {
    char *cert;
    char *key;
} pem_t;

static pem_t make_cert(const char *cn)
{
    static long serial = 1;
    pem_t p = {0};
    EVP_PKEY *k = EVP_EC_gen("P-256");
    assert_non_null(k);
    X509 *x = X509_new();
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), serial++);
    X509_gmtime_adj(X509_getm_notBefore(x), -60);
    X509_gmtime_adj(X509_getm_notAfter(x), 3600);
    X509_set_pubkey(x, k);
    X509_NAME *n = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
    X509_set_issuer_name(x, n);
    assert_true(X509_sign(x, k, EVP_sha256()) > 0);
    BIO *b = BIO_new(BIO_s_mem());
    PEM_write_bio_X509(b, x);
    char *d;
    long len = BIO_get_mem_data(b, &d);
    p.cert = strndup(d, (size_t)len);
    BIO_free(b);
    b = BIO_new(BIO_s_mem());
    PEM_write_bio_PrivateKey(b, k, NULL, NULL, 0, NULL, NULL);
    len = BIO_get_mem_data(b, &d);
    p.key = strndup(d, (size_t)len);
    BIO_free(b);
    X509_free(x);
    EVP_PKEY_free(k);
    return p;
}

static void pem_free(pem_t *p)
{
    free(p->cert);
    free(p->key);
}

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
    cfg_store_t *store;
    cfg_snap_t *snap;
    reg_t *reg;
    pem_t web, mtls, ca, same, same_ca, upstream_ca, other;
} world_t;

static void put_cb(void *ud, cfg_object_t *obj, const cfg_diag_t *diag)
{
    if (obj == NULL) {
        for (uint32_t i = 0; diag && i < diag->nerrors; i++)
            fprintf(stderr, "load error: %s\n", diag->errors[i]);
        return;
    }
    cfg_store_put(ud, obj);
    cfg_object_unref(obj);
}

static void apply(cfg_store_t *store, const char *yaml)
{
    cfg_store_begin(store);
    assert_int_equal(cfg_load_buffer(yaml, strlen(yaml), DOC_FMT_YAML, NULL, put_cb, store), 0);
    cfg_store_commit(store);
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
    w->web = make_cert("web.example.com");
    w->mtls = make_cert("mtls.example.com");
    w->ca = make_cert("client-ca");
    w->same = make_cert("same.example.com");
    w->same_ca = make_cert("same-ca");
    w->upstream_ca = make_cert("upstream-ca");
    w->other = make_cert("elsewhere.example.com");
    /* kubernetes.io/tls */
    apply_secret(w->store, "istio-system", "web-cert", "kubernetes.io/tls",
                 (const char *[]){"tls.crt", "tls.key", NULL},
                 (const char *[]){w->web.cert, w->web.key});
    /* generic (Opaque) with a separate NAME-cacert Secret */
    apply_secret(w->store, "istio-system", "mtls-cert", "Opaque",
                 (const char *[]){"cert", "key", NULL},
                 (const char *[]){w->mtls.cert, w->mtls.key});
    apply_secret(w->store, "istio-system", "mtls-cert-cacert", "Opaque",
                 (const char *[]){"cacert", NULL}, (const char *[]){w->ca.cert});
    /* kubernetes.io/tls holding its CA as ca.crt */
    apply_secret(w->store, "istio-system", "same-cert", "kubernetes.io/tls",
                 (const char *[]){"tls.crt", "tls.key", "ca.crt", NULL},
                 (const char *[]){w->same.cert, w->same.key, w->same_ca.cert});
    /* a certificate without its key */
    apply_secret(w->store, "istio-system", "half-cert", "Opaque", (const char *[]){"cert", NULL},
                 (const char *[]){w->web.cert});
    /* in another namespace than the gateway's */
    apply_secret(w->store, "default", "elsewhere-cert", "kubernetes.io/tls",
                 (const char *[]){"tls.crt", "tls.key", NULL},
                 (const char *[]){w->other.cert, w->other.key});
    /* a CA of its own, named by caCertCredentialName */
    apply_secret(w->store, "istio-system", "client-cas", "Opaque", (const char *[]){"cacert", NULL},
                 (const char *[]){w->same_ca.cert});
    /* the upstream CA of the DestinationRule */
    apply_secret(w->store, "istio-system", "upstream", "Opaque", (const char *[]){"ca.crt", NULL},
                 (const char *[]){w->upstream_ca.cert});
}

static void world_commit(world_t *w)
{
    if (w->snap)
        cfg_snap_release(w->snap);
    if (w->reg)
        reg_unref(w->reg);
    w->snap = cfg_store_snapshot(w->store);
    w->reg = reg_build(w->snap);
}

static int world_setup(void **state)
{
    world_t *w = calloc(1, sizeof(*w));
    w->store = cfg_store_new();
    apply(w->store, GATEWAY_WORLD);
    world_secrets(w);
    world_commit(w);
    *state = w;
    return 0;
}

static void world_free(world_t *w)
{
    if (w->reg)
        reg_unref(w->reg);
    if (w->snap)
        cfg_snap_release(w->snap);
    cfg_store_free(w->store);
    pem_t *all[] = {&w->web, &w->mtls, &w->ca, &w->same, &w->same_ca, &w->upstream_ca, &w->other};
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
        pem_free(all[i]);
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

static xds_resources_t *translate(world_t *w, const xds_proxy_t *p)
{
    xds_input_t in = {.snap = w->snap, .reg = w->reg};
    return xds_translate(&in, p);
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
    xds_resources_t *r = translate(w, p);
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
    xds_resources_t *r = translate(w, p);
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
    xds_resources_t *r = translate(w, p);
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
    xds_resources_t *r = translate(w, p);
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
    xds_resources_t *r = translate(w, p);
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
    xds_resources_t *r = translate(w, p);
    assert_null(xds_resources_find(r, XDS_SECRET, "kubernetes://half-cert"));
    if (!warned(r, "Secret istio-system/half-cert", "missing key key"))
        dump_warnings(r);
    assert_true(warned(r, "Secret istio-system/half-cert", "missing key key"));
    /* the others are still served */
    assert_non_null(xds_resources_find(r, XDS_SECRET, "kubernetes://web-cert"));
    xds_resources_unref(r);

    /* kubernetes.io/tls keys: the missing one is named */
    apply_secret(w->store, "istio-system", "half-cert", "Opaque", (const char *[]){"tls.key", NULL},
                 (const char *[]){w->web.key});
    world_commit(w);
    r = translate(w, p);
    assert_null(xds_resources_find(r, XDS_SECRET, "kubernetes://half-cert"));
    assert_true(warned(r, "Secret istio-system/half-cert", "missing key tls.crt"));
    xds_resources_unref(r);

    /* a key that belongs to another certificate, a certificate that is not PEM */
    apply_secret(w->store, "istio-system", "half-cert", "kubernetes.io/tls",
                 (const char *[]){"tls.crt", "tls.key", NULL},
                 (const char *[]){w->web.cert, w->mtls.key});
    world_commit(w);
    r = translate(w, p);
    assert_null(xds_resources_find(r, XDS_SECRET, "kubernetes://half-cert"));
    assert_true(warned(r, "Secret istio-system/half-cert", "tls.key does not match"));
    xds_resources_unref(r);
    apply_secret(w->store, "istio-system", "half-cert", "kubernetes.io/tls",
                 (const char *[]){"tls.crt", "tls.key", NULL},
                 (const char *[]){"not a certificate", w->web.key});
    world_commit(w);
    r = translate(w, p);
    assert_null(xds_resources_find(r, XDS_SECRET, "kubernetes://half-cert"));
    assert_true(warned(r, "Secret istio-system/half-cert", "tls.crt: not a PEM certificate"));
    xds_resources_unref(r);

    /* a MUTUAL server whose CA is nowhere */
    cfg_store_delete(w->store, CFG_Secret, "istio-system", "mtls-cert-cacert");
    world_commit(w);
    r = translate(w, p);
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
    xds_resources_t *r = translate(w, p);
    /* the Secret exists, but in default: a gateway reads only its own namespace */
    assert_null(xds_resources_find(r, XDS_SECRET, "kubernetes://elsewhere-cert"));
    assert_true(warned(r, "Secret istio-system/elsewhere-cert", "not found"));
    xds_resources_unref(r);
    xds_proxy_free(p);

    /* a gateway pod of another namespace selected by the same Gateway gets
     * nothing from istio-system's Secrets */
    p = gateway_proxy("edge");
    r = translate(w, p);
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
    xds_resources_t *r = translate(w, p);
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
    apply(w->store, y);
    free(y);
    world_commit(w);
    xds_proxy_t *p = gateway_proxy("istio-system");
    xds_resources_t *r = translate(w, p);
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
        xds_resources_unref(translate(w, p));
    apply_secret(w->store, "logns", "web-cert", "kubernetes.io/tls",
                 (const char *[]){"tls.crt", "tls.key", NULL},
                 (const char *[]){w->web.cert, w->mtls.key});
    world_commit(w);
    for (int i = 0; i < 3; i++)
        xds_resources_unref(translate(w, p));
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
    pem_t web = make_cert("web.example.com");
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
    w.store = cfg_store_new();
    cfg_dir_t *d = cfg_dir_open(dir, w.store, NULL);
    assert_non_null(d);
    world_commit(&w);
    xds_proxy_t *p = gateway_proxy("istio-system");
    xds_resources_t *r = translate(&w, p);
    pb_secret_t *s = secret_of(r, "kubernetes://web-cert");
    assert_non_null(s);
    assert_bytes(&s->tls_certificate->certificate_chain->inline_bytes, web.cert);
    assert_bytes(&s->tls_certificate->private_key->inline_bytes, web.key);
    envoy__extensions__transport_sockets__tls__v3__secret__free_unpacked(s, NULL);
    xds_resources_unref(r);
    xds_proxy_free(p);
    cfg_dir_close(d);
    world_free(&w);
    pem_free(&web);
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
    fx->w.store = cfg_store_new();
    apply(fx->w.store, GATEWAY_WORLD);
    world_secrets(&fx->w);
    fx->loop = loop_new();
    char err[256];
    grpc_server_opts_t go = {.listen = "127.0.0.1:0"};
    fx->grpc = grpc_server_new(fx->loop, &go, err, sizeof(err));
    if (fx->grpc == NULL)
        fail_msg("grpc server: %s", err);
    xds_server_opts_t xo = {.debounce_ms = DEBOUNCE_MS, .debounce_max_ms = 1000};
    fx->xs = xds_server_start(fx->loop, fx->grpc, fx->w.store, &xo);
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

#define MAXMSG 64

typedef struct ads {
    fx_t *fx;
    grpc_client_t *c;
    grpc_call_t *call;
    bool delta, sent_node, closed;
    const char *node_id;
    void *msgs[MAXMSG];
    int nmsgs, next;
    char message[256];
} ads_t;

static void on_msg(grpc_call_t *call, void *arg, const uint8_t *msg, size_t len)
{
    (void)call;
    ads_t *a = arg;
    assert_true(a->nmsgs < MAXMSG);
    void *m =
        a->delta
            ? (void *)envoy__service__discovery__v3__delta_discovery_response__unpack(NULL, len,
                                                                                      msg)
            : (void *)envoy__service__discovery__v3__discovery_response__unpack(NULL, len, msg);
    assert_non_null(m);
    a->msgs[a->nmsgs++] = m;
}

static void on_close(grpc_call_t *call, void *arg, int status, const char *message)
{
    (void)call;
    (void)status;
    ads_t *a = arg;
    a->closed = true;
    a->call = NULL;
    snprintf(a->message, sizeof(a->message), "%s", message ? message : "");
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
    a->call =
        grpc_call_start(a->c, delta ? XDS_ADS_DELTA_PATH : XDS_ADS_SOTW_PATH, NULL, 0, &CBS, a);
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
    }
    free(a);
}

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

static void ads_send(ads_t *a, const char *type_url, const char *const *names, size_t nnames,
                     const char *version, const char *nonce)
{
    Envoy__Service__Discovery__V3__DiscoveryRequest req =
        ENVOY__SERVICE__DISCOVERY__V3__DISCOVERY_REQUEST__INIT;
    node_t n;
    if (!a->sent_node) {
        req.node = node_init(&n, a->node_id);
        a->sent_node = true;
    }
    req.type_url = (char *)type_url;
    req.resource_names = (char **)names;
    req.n_resource_names = nnames;
    req.version_info = (char *)(version ? version : "");
    req.response_nonce = (char *)(nonce ? nonce : "");
    size_t len = envoy__service__discovery__v3__discovery_request__get_packed_size(&req);
    uint8_t *buf = malloc(len + 1);
    envoy__service__discovery__v3__discovery_request__pack(&req, buf);
    assert_int_equal(grpc_call_send(a->call, buf, len), 0);
    free(buf);
}

static void ads_send_delta(ads_t *a, const char *type_url, const char *const *sub, size_t nsub,
                           const char *nonce)
{
    Envoy__Service__Discovery__V3__DeltaDiscoveryRequest req =
        ENVOY__SERVICE__DISCOVERY__V3__DELTA_DISCOVERY_REQUEST__INIT;
    node_t n;
    if (!a->sent_node) {
        req.node = node_init(&n, a->node_id);
        a->sent_node = true;
    }
    req.type_url = (char *)type_url;
    req.resource_names_subscribe = (char **)sub;
    req.n_resource_names_subscribe = nsub;
    req.response_nonce = (char *)(nonce ? nonce : "");
    size_t len = envoy__service__discovery__v3__delta_discovery_request__get_packed_size(&req);
    uint8_t *buf = malloc(len + 1);
    envoy__service__discovery__v3__delta_discovery_request__pack(&req, buf);
    assert_int_equal(grpc_call_send(a->call, buf, len), 0);
    free(buf);
}

static void *ads_wait(ads_t *a, int timeout_ms)
{
    uint64_t end = loop_clock_ms() + (uint64_t)timeout_ms;
    while (a->next >= a->nmsgs && !a->closed && loop_clock_ms() < end)
        loop_run_once(a->fx->loop, 5);
    return a->next < a->nmsgs ? a->msgs[a->next++] : NULL;
}

static Envoy__Service__Discovery__V3__DiscoveryResponse *expect_sotw(ads_t *a)
{
    Envoy__Service__Discovery__V3__DiscoveryResponse *r = ads_wait(a, 3000);
    if (r == NULL)
        fail_msg("no SDS response (closed %d: %s)", a->closed, a->message);
    assert_string_equal(r->type_url, XDS_SECRET_TYPE);
    return r;
}

static void expect_quiet(ads_t *a, int ms)
{
    if (ads_wait(a, ms) != NULL)
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
                               const pem_t *want)
{
    pb_secret_t *s = any_secret(any);
    assert_string_equal(s->name, name);
    assert_int_equal(s->type_case,
                     ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__SECRET__TYPE_TLS_CERTIFICATE);
    assert_bytes(&s->tls_certificate->certificate_chain->inline_bytes, want->cert);
    assert_bytes(&s->tls_certificate->private_key->inline_bytes, want->key);
    envoy__extensions__transport_sockets__tls__v3__secret__free_unpacked(s, NULL);
}

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
    char *dump = http_get(debug_server_port(dbg), "/debug/config_dump?proxyID=" NODE_GW, &status);
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
    pem_t renewed = make_cert("web.example.com");
    apply_secret(fx->w.store, "istio-system", "web-cert", "kubernetes.io/tls",
                 (const char *[]){"tls.crt", "tls.key", NULL},
                 (const char *[]){renewed.cert, renewed.key});
    r = expect_sotw(gw);
    assert_int_equal(r->n_resources, 1);
    assert_served_cert(r->resources[0], "kubernetes://web-cert", &renewed);
    ads_send(gw, XDS_SECRET_TYPE, names, 1, r->version_info, r->nonce);
    /* ... and only the proxies that read it */
    expect_quiet(edge, 4 * DEBOUNCE_MS);

    /* an unrelated Secret changes: nothing is sent */
    apply_secret(fx->w.store, "istio-system", "unrelated", "kubernetes.io/tls",
                 (const char *[]){"tls.crt", "tls.key", NULL},
                 (const char *[]){renewed.cert, renewed.key});
    expect_quiet(gw, 4 * DEBOUNCE_MS);

    /* the Secret turns invalid (a key that does not match): the resource is
     * withdrawn, never sent half-made */
    apply_secret(fx->w.store, "istio-system", "web-cert", "kubernetes.io/tls",
                 (const char *[]){"tls.crt", "tls.key", NULL},
                 (const char *[]){renewed.cert, fx->w.mtls.key});
    r = expect_sotw(gw);
    assert_int_equal(r->n_resources, 0);
    pem_free(&renewed);
    ads_close(gw);
    ads_close(edge);
}

static void test_ads_delta_secret_update(void **state)
{
    fx_t *fx = *state;
    ads_t *gw = ads_open(fx, NODE_GW, true);
    const char *names[] = {"kubernetes://mtls-cert", "kubernetes://mtls-cert-cacert"};
    ads_send_delta(gw, XDS_SECRET_TYPE, names, 2, NULL);
    Envoy__Service__Discovery__V3__DeltaDiscoveryResponse *r = ads_wait(gw, 3000);
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
    pem_t ca2 = make_cert("client-ca-2");
    apply_secret(fx->w.store, "istio-system", "mtls-cert-cacert", NULL,
                 (const char *[]){"ca.crt", NULL}, (const char *[]){ca2.cert});
    r = ads_wait(gw, 3000);
    assert_non_null(r);
    assert_int_equal(r->n_resources, 1);
    assert_string_equal(r->resources[0]->name, "kubernetes://mtls-cert-cacert");
    pb_secret_t *s = any_secret(r->resources[0]->resource);
    assert_bytes(&s->validation_context->trusted_ca->inline_bytes, ca2.cert);
    envoy__extensions__transport_sockets__tls__v3__secret__free_unpacked(s, NULL);
    ads_send_delta(gw, XDS_SECRET_TYPE, NULL, 0, r->nonce);

    /* the certificate's Secret is deleted: the resource is removed */
    cfg_store_delete(fx->w.store, CFG_Secret, "istio-system", "mtls-cert");
    r = ads_wait(gw, 3000);
    assert_non_null(r);
    assert_int_equal(r->n_resources, 0);
    assert_int_equal(r->n_removed_resources, 1);
    assert_string_equal(r->removed_resources[0], "kubernetes://mtls-cert");
    pem_free(&ca2);
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
