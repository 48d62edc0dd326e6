/*
 * SDS for gateways: the Secret resources a router proxy receives for the
 * Kubernetes Secrets its Gateway servers (credentialName) and its
 * DestinationRules (credentialName) name.
 *
 * What is served follows from the finished listeners and clusters of the
 * translation: every SdsSecretConfig named "kubernetes://NAME" in their TLS
 * transport sockets is looked up in the proxy's own namespace (a gateway only
 * reads credentials from its namespace). A name used as a certificate becomes
 * a tls_certificate from the Secret NAME (cert/key, or tls.crt/tls.key); a
 * name used as a validation context becomes a validation_context from the
 * Secret NAME's cacert/ca.crt, where "kubernetes://BASE-cacert" without a
 * Secret BASE-cacert falls back to BASE's own cacert/ca.crt. A Secret that is
 * missing, lacks a key or does not parse (PEM, key matching the certificate)
 * is logged once per change and its resource left out: the proxy keeps
 * waiting for it rather than receiving half of it.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>
#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "../common/hmap.h"
#include "../common/log.h"
#include "envoy/extensions/transport_sockets/tls/v3/secret.pb-c.h"
#include "translate_internal.h"

typedef Envoy__Extensions__TransportSockets__Tls__V3__Secret pb_secret_t;
typedef Envoy__Extensions__TransportSockets__Tls__V3__CommonTlsContext pb_ctls_t;
typedef Envoy__Extensions__TransportSockets__Tls__V3__SdsSecretConfig pb_sds_t;
typedef Envoy__Config__Core__V3__DataSource pb_datasource_t;

void tx_build_secrets(tx_t *t);

/* ---- what the listeners and clusters name ---- */

typedef enum { SDS_CERT = 1, SDS_CA = 2 } sds_role_t;

typedef struct sds_ref {
    const char *name; /* "kubernetes://NAME" */
    int roles;        /* sds_role_t bits */
} sds_ref_t;

typedef struct refs {
    tx_t *t;
    sds_ref_t *v;
    size_t n;
} refs_t;

static void ref_add(refs_t *r, const pb_sds_t *s, sds_role_t role)
{
    if (s == NULL || s->name == NULL)
        return;
    size_t pl = strlen(XDS_SDS_KUBERNETES_PREFIX);
    if (strncmp(s->name, XDS_SDS_KUBERNETES_PREFIX, pl) != 0 || s->name[pl] == '\0')
        return; /* "default", "ROOTCA": the proxy's own CA client */
    for (size_t i = 0; i < r->n; i++) {
        if (strcmp(r->v[i].name, s->name) == 0) {
            r->v[i].roles |= (int)role;
            return;
        }
    }
    sds_ref_t e = {tx_str(r->t, s->name), (int)role};
    TX_PUSH(r->t, r->v, r->n, e);
}

static void *arena_pb_alloc(void *data, size_t size)
{
    return arena_alloc(data, size ? size : 1);
}

static void arena_pb_free(void *data, void *p)
{
    (void)data;
    (void)p;
}

static void refs_common(refs_t *r, const pb_ctls_t *c)
{
    if (c == NULL)
        return;
    for (size_t i = 0; i < c->n_tls_certificate_sds_secret_configs; i++)
        ref_add(r, c->tls_certificate_sds_secret_configs[i], SDS_CERT);
    if (c->validation_context_type_case ==
        ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__COMMON_TLS_CONTEXT__VALIDATION_CONTEXT_TYPE_VALIDATION_CONTEXT_SDS_SECRET_CONFIG)
        ref_add(r, c->validation_context_sds_secret_config, SDS_CA);
    else if (
        c->validation_context_type_case ==
            ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__COMMON_TLS_CONTEXT__VALIDATION_CONTEXT_TYPE_COMBINED_VALIDATION_CONTEXT &&
        c->combined_validation_context)
        ref_add(r, c->combined_validation_context->validation_context_sds_secret_config, SDS_CA);
}

/* The SDS names of one transport socket (a Downstream- or UpstreamTlsContext). */
static void refs_socket(refs_t *r, const pb_tsock_t *ts)
{
    if (ts == NULL ||
        ts->config_type_case !=
            ENVOY__CONFIG__CORE__V3__TRANSPORT_SOCKET__CONFIG_TYPE_TYPED_CONFIG ||
        ts->typed_config == NULL || ts->typed_config->type_url == NULL)
        return;
    const pb_any_t *any = ts->typed_config;
    const char *url = any->type_url;
    const char *slash = strrchr(url, '/');
    const char *type = slash ? slash + 1 : url;
    ProtobufCAllocator al = {arena_pb_alloc, arena_pb_free, r->t->a};
    if (strcmp(type,
               envoy__extensions__transport_sockets__tls__v3__downstream_tls_context__descriptor
                   .name) == 0) {
        Envoy__Extensions__TransportSockets__Tls__V3__DownstreamTlsContext *d =
            envoy__extensions__transport_sockets__tls__v3__downstream_tls_context__unpack(
                &al, any->value.len, any->value.data);
        if (d)
            refs_common(r, d->common_tls_context);
    } else if (strcmp(
                   type,
                   envoy__extensions__transport_sockets__tls__v3__upstream_tls_context__descriptor
                       .name) == 0) {
        Envoy__Extensions__TransportSockets__Tls__V3__UpstreamTlsContext *u =
            envoy__extensions__transport_sockets__tls__v3__upstream_tls_context__unpack(
                &al, any->value.len, any->value.data);
        if (u)
            refs_common(r, u->common_tls_context);
    }
}

static void refs_collect(tx_t *t, refs_t *r)
{
    for (size_t i = 0; i < t->nout[XDS_LISTENER]; i++) {
        const pb_listener_t *l = (const pb_listener_t *)t->out[XDS_LISTENER][i].msg;
        for (size_t j = 0; j < l->n_filter_chains; j++)
            if (l->filter_chains[j])
                refs_socket(r, l->filter_chains[j]->transport_socket);
        if (l->default_filter_chain)
            refs_socket(r, l->default_filter_chain->transport_socket);
    }
    for (size_t i = 0; i < t->nout[XDS_CLUSTER]; i++) {
        const pb_cluster_t *c = (const pb_cluster_t *)t->out[XDS_CLUSTER][i].msg;
        refs_socket(r, c->transport_socket);
        for (size_t j = 0; j < c->n_transport_socket_matches; j++)
            if (c->transport_socket_matches[j])
                refs_socket(r, c->transport_socket_matches[j]->transport_socket);
    }
}

/* ---- one log line per change ---- */

static pthread_mutex_t report_mu = PTHREAD_MUTEX_INITIALIZER;
static hmap_t reported = HMAP_INIT; /* "ns/resource" -> report_t */

typedef struct report {
    char *state; /* what was last logged for the key ("" when it was served) */
    char key[];
} report_t;

/* Logs msg for the proxy namespace's resource unless the same state was the
 * last one logged; state "" (served) is recorded silently. */
static void report(const char *ns, const char *resource, const char *state, const char *msg)
{
    size_t kl = strlen(ns) + strlen(resource) + 2;
    char *key = mesh_xmalloc(kl);
    snprintf(key, kl, "%s/%s", ns, resource);
    bool log = false;
    pthread_mutex_lock(&report_mu);
    report_t *r = hmap_get(&reported, key);
    if (r == NULL) {
        if (state[0] != '\0') {
            r = mesh_xmalloc(sizeof(*r) + kl);
            memcpy(r->key, key, kl);
            r->state = mesh_xstrdup(state);
            hmap_put(&reported, r->key, r);
            log = true;
        }
    } else if (strcmp(r->state, state) != 0) {
        free(r->state);
        r->state = mesh_xstrdup(state);
        log = state[0] != '\0';
    }
    pthread_mutex_unlock(&report_mu);
    if (log)
        log_warn("%s", msg);
    free(key);
}

/* ---- PEM checks ---- */

static int no_password(char *buf, int size, int rwflag, void *u)
{
    (void)buf;
    (void)size;
    (void)rwflag;
    (void)u;
    return -1; /* encrypted keys are refused, never prompted for */
}

/* The first certificate of a PEM bundle, or NULL when it holds none. */
static X509 *pem_first_cert(const unsigned char *pem, size_t len)
{
    BIO *b = BIO_new_mem_buf(pem, (int)len);
    if (b == NULL)
        return NULL;
    X509 *x = PEM_read_bio_X509(b, NULL, no_password, NULL);
    BIO_free(b);
    return x;
}

static EVP_PKEY *pem_key(const unsigned char *pem, size_t len)
{
    BIO *b = BIO_new_mem_buf(pem, (int)len);
    if (b == NULL)
        return NULL;
    EVP_PKEY *k = PEM_read_bio_PrivateKey(b, NULL, no_password, NULL);
    BIO_free(b);
    return k;
}

/* ---- building ---- */

typedef struct value {
    const char *key; /* the key it was read from */
    unsigned char *v;
    size_t len;
} value_t;

/* The first of keys present in the Secret. Sets *bad_key when a present
 * value is not base64. */
static value_t pick(const cfg_object_t *s, const char *const *keys, const char **bad_key)
{
    value_t out = {0};
    for (size_t i = 0; keys[i]; i++) {
        bool bad = false;
        out.v = reg_secret_value(s, keys[i], &out.len, &bad);
        if (bad && *bad_key == NULL)
            *bad_key = keys[i];
        if (out.v) {
            out.key = keys[i];
            return out;
        }
    }
    return out;
}

static void value_free(value_t *v)
{
    reg_secret_value_free(v->v, v->len);
    memset(v, 0, sizeof(*v));
}

static pb_datasource_t *inline_bytes(tx_t *t, const value_t *v)
{
    pb_datasource_t *d = TX_NEW(t, pb_datasource_t, ENVOY__CONFIG__CORE__V3__DATA_SOURCE__INIT);
    d->specifier_case = ENVOY__CONFIG__CORE__V3__DATA_SOURCE__SPECIFIER_INLINE_BYTES;
    uint8_t *buf = arena_alloc(t->a, v->len ? v->len : 1);
    memcpy(buf, v->v, v->len);
    d->inline_bytes.data = buf;
    d->inline_bytes.len = v->len;
    return d;
}

/* Why a Secret cannot be served ("" when it can); msg gets the log line. */
typedef struct verdict {
    char state[704];
    char msg[1600];
} verdict_t;

static void verdict(verdict_t *vd, const cfg_object_t *s, const char *ns, const char *name,
                    const char *resource, const char *why)
{
    snprintf(vd->state, sizeof(vd->state), "%llu:%s", s ? (unsigned long long)s->version : 0ULL,
             why);
    snprintf(vd->msg, sizeof(vd->msg), "SDS: Secret %s/%s: %s; %s is not served until it is fixed",
             ns, name, why, resource);
}

/* A tls_certificate from Secret ns/name: tls.crt + tls.key, or cert + key. */
static pb_secret_t *cert_secret(tx_t *t, const char *resource, const char *ns, const char *name,
                                verdict_t *vd)
{
    const cfg_object_t *s = reg_secret_get(t->in->snap, ns, name);
    pb_secret_t *out = NULL;
    value_t crt = {0}, key = {0};
    X509 *x = NULL;
    EVP_PKEY *pk = NULL;
    if (s == NULL) {
        verdict(vd, NULL, ns, name, resource, "not found");
        goto out;
    }
    const char *bad = NULL;
    static const char *const crt_tls[] = {"tls.crt", NULL}, *const key_tls[] = {"tls.key", NULL};
    static const char *const crt_gen[] = {"cert", NULL}, *const key_gen[] = {"key", NULL};
    /* cert/key first, as Istio reads them; then the kubernetes.io/tls keys */
    crt = pick(s, crt_gen, &bad);
    key = pick(s, key_gen, &bad);
    const char *missing = NULL;
    if (crt.v == NULL || key.v == NULL) {
        bool generic = crt.v != NULL || key.v != NULL;
        missing = generic ? (crt.v == NULL ? "cert" : "key") : NULL;
        value_free(&crt);
        value_free(&key);
        crt = pick(s, crt_tls, &bad);
        key = pick(s, key_tls, &bad);
        if (crt.v == NULL || key.v == NULL) {
            if (crt.v != NULL || key.v != NULL || missing == NULL)
                missing = crt.v == NULL && key.v == NULL ? "tls.crt and tls.key (or cert and key)"
                          : crt.v == NULL                ? "tls.crt"
                                                         : "tls.key";
        } else {
            missing = NULL;
        }
    }
    if (bad) {
        char why[96];
        snprintf(why, sizeof(why), "data[%s] is not base64", bad);
        verdict(vd, s, ns, name, resource, why);
        goto out;
    }
    if (missing != NULL) {
        char why[160];
        snprintf(why, sizeof(why), "missing key %s", missing);
        verdict(vd, s, ns, name, resource, why);
        goto out;
    }
    x = pem_first_cert(crt.v, crt.len);
    if (x == NULL) {
        char why[96];
        snprintf(why, sizeof(why), "%s: not a PEM certificate", crt.key);
        verdict(vd, s, ns, name, resource, why);
        goto out;
    }
    pk = pem_key(key.v, key.len);
    if (pk == NULL) {
        char why[96];
        snprintf(why, sizeof(why), "%s: not a PEM private key (or encrypted)", key.key);
        verdict(vd, s, ns, name, resource, why);
        goto out;
    }
    if (X509_check_private_key(x, pk) != 1) {
        char why[96];
        snprintf(why, sizeof(why), "%s does not match the certificate in %s", key.key, crt.key);
        verdict(vd, s, ns, name, resource, why);
        goto out;
    }
    Envoy__Extensions__TransportSockets__Tls__V3__TlsCertificate *tc =
        TX_NEW(t, Envoy__Extensions__TransportSockets__Tls__V3__TlsCertificate,
               ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__TLS_CERTIFICATE__INIT);
    tc->certificate_chain = inline_bytes(t, &crt);
    tc->private_key = inline_bytes(t, &key);
    out = TX_NEW(t, pb_secret_t, ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__SECRET__INIT);
    out->name = tx_str(t, resource);
    out->type_case = ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__SECRET__TYPE_TLS_CERTIFICATE;
    out->tls_certificate = tc;
    vd->state[0] = '\0';
out:
    X509_free(x);
    EVP_PKEY_free(pk);
    value_free(&crt);
    value_free(&key);
    return out;
}

/* A validation_context from a CA-holding Secret: ca.crt or cacert (and the
 * optional revocation list ca.crl or crl). */
static pb_secret_t *ca_from(tx_t *t, const char *resource, const cfg_object_t *s, const char *ns,
                            const char *name, verdict_t *vd)
{
    pb_secret_t *out = NULL;
    value_t ca = {0}, crl = {0};
    const char *bad = NULL;
    static const char *const ca_keys[] = {"cacert", "ca.crt", NULL};
    static const char *const crl_keys[] = {"crl", "ca.crl", NULL};
    ca = pick(s, ca_keys, &bad);
    crl = pick(s, crl_keys, &bad);
    if (bad) {
        char why[96];
        snprintf(why, sizeof(why), "data[%s] is not base64", bad);
        verdict(vd, s, ns, name, resource, why);
        goto out;
    }
    if (ca.v == NULL) {
        verdict(vd, s, ns, name, resource,
                "missing key ca.crt (or cacert) holding the CA certificate");
        goto out;
    }
    X509 *x = pem_first_cert(ca.v, ca.len);
    if (x == NULL) {
        char why[96];
        snprintf(why, sizeof(why), "%s: not a PEM certificate", ca.key);
        verdict(vd, s, ns, name, resource, why);
        goto out;
    }
    X509_free(x);
    Envoy__Extensions__TransportSockets__Tls__V3__CertificateValidationContext *v =
        TX_NEW(t, Envoy__Extensions__TransportSockets__Tls__V3__CertificateValidationContext,
               ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__CERTIFICATE_VALIDATION_CONTEXT__INIT);
    v->trusted_ca = inline_bytes(t, &ca);
    if (crl.v != NULL && crl.len > 0)
        v->crl = inline_bytes(t, &crl);
    out = TX_NEW(t, pb_secret_t, ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__SECRET__INIT);
    out->name = tx_str(t, resource);
    out->type_case = ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__SECRET__TYPE_VALIDATION_CONTEXT;
    out->validation_context = v;
    vd->state[0] = '\0';
out:
    value_free(&ca);
    value_free(&crl);
    return out;
}

/* The CA of "kubernetes://NAME": the Secret NAME; for NAME = BASE-cacert,
 * the Secret BASE-cacert when it exists, else BASE's own CA keys. */
static pb_secret_t *ca_secret(tx_t *t, const char *resource, const char *ns, const char *name,
                              verdict_t *vd)
{
    const cfg_object_t *s = reg_secret_get(t->in->snap, ns, name);
    if (s != NULL)
        return ca_from(t, resource, s, ns, name, vd);
    size_t nl = strlen(name), sl = strlen(XDS_SDS_CA_SUFFIX);
    if (nl > sl && strcmp(name + nl - sl, XDS_SDS_CA_SUFFIX) == 0) {
        char *base = arena_strndup(t->a, name, nl - sl);
        const cfg_object_t *b = reg_secret_get(t->in->snap, ns, base);
        if (b != NULL)
            return ca_from(t, resource, b, ns, base, vd);
        char why[600];
        snprintf(why, sizeof(why), "not found (nor Secret %s with ca.crt or cacert)", base);
        verdict(vd, NULL, ns, name, resource, why);
        return NULL;
    }
    verdict(vd, NULL, ns, name, resource, "not found");
    return NULL;
}

void tx_build_secrets(tx_t *t)
{
    if (t->px->type != XDS_ROUTER || t->px->namespace == NULL || t->in->snap == NULL)
        return;
    refs_t r = {.t = t};
    refs_collect(t, &r);
    const char *ns = t->px->namespace;
    size_t pl = strlen(XDS_SDS_KUBERNETES_PREFIX);
    for (size_t i = 0; i < r.n; i++) {
        const char *resource = r.v[i].name;
        const char *name = resource + pl;
        verdict_t vd = {{0}, {0}};
        pb_secret_t *sec;
        if (r.v[i].roles & SDS_CERT) {
            if (r.v[i].roles & SDS_CA)
                tx_warn(t,
                        "SDS %s is used both as a certificate and as a CA: served as a certificate",
                        resource);
            sec = cert_secret(t, resource, ns, name, &vd);
        } else {
            sec = ca_secret(t, resource, ns, name, &vd);
        }
        report(ns, resource, vd.state, vd.msg);
        if (sec == NULL) {
            tx_warn(t, "%s", vd.msg);
            continue;
        }
        tx_emit(t, XDS_SECRET, resource, sec);
    }
}

/* ---- config dumps ---- */

static void redact_source(json_object *parent, const char *field)
{
    json_object *ds = NULL;
    if (!json_object_object_get_ex(parent, field, &ds) ||
        !json_object_is_type(ds, json_type_object))
        return;
    static const char *const specs[] = {"inlineBytes", "inlineString", "inline_bytes",
                                        "inline_string", NULL};
    bool had = false;
    for (size_t i = 0; specs[i]; i++) {
        if (json_object_object_get_ex(ds, specs[i], NULL)) {
            json_object_object_del(ds, specs[i]);
            had = true;
        }
    }
    if (had)
        json_object_object_add(ds, "inlineString", json_object_new_string("[redacted]"));
}

void xds_secret_redact_json(struct json_object *secret)
{
    if (secret == NULL || !json_object_is_type(secret, json_type_object))
        return;
    json_object *tc = NULL;
    if (json_object_object_get_ex(secret, "tlsCertificate", &tc) &&
        json_object_is_type(tc, json_type_object)) {
        redact_source(tc, "privateKey");
        redact_source(tc, "password");
    }
    json_object *gs = NULL;
    if (json_object_object_get_ex(secret, "genericSecret", &gs) &&
        json_object_is_type(gs, json_type_object))
        redact_source(gs, "secret");
    json_object *tk = NULL;
    if (json_object_object_get_ex(secret, "sessionTicketKeys", &tk) &&
        json_object_is_type(tk, json_type_object)) {
        json_object *keys = NULL;
        if (json_object_object_get_ex(tk, "keys", &keys))
            json_object_object_add(tk, "keys", json_object_new_string("[redacted]"));
    }
}
