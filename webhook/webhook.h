/*
 * webhook: meshd's admission webhooks and sidecar injection.
 *
 *   /inject    mutating: a Pod CREATE AdmissionReview (admission.k8s.io v1 or
 *              v1beta1) is answered with a JSONPatch that adds the
 *              `istio-init` init container (`meshproxy init`), the
 *              `istio-proxy` sidecar (`meshproxy sidecar`), their volumes,
 *              the `sidecar.istio.io/status` annotation and the mesh labels,
 *              when Istio's injection policy says so.
 *   /validate  validating: mesh config kinds are decoded with the config
 *              model; the answer carries every error it found.
 *
 * The same injection code serves `meshctl kube-inject` (webhook_kube_inject),
 * which rewrites the pod templates of a manifest offline.
 *
 * What is injected is driven by a values document (webhook_config_t, see
 * webhook/TEMPLATE.md for every value): defaults built in, overridden from a
 * file (local mode, meshctl) or from the `values` key of the
 * `istio-sidecar-injector` ConfigMap in meshd's namespace (kube mode, reloaded
 * on every store event that changes it).
 *
 * Ownership: webhook_config_t is immutable and reference-counted; webhook_t
 * holds the current one and swaps it atomically, so request threads never
 * see a half-built config. webhook_t is thread-safe: the HTTPS server calls
 * its handlers from several threads at once. The server (webhook_server_t)
 * owns its libmicrohttpd daemon and a copy of the certificate and key.
 */
#ifndef MESH_WEBHOOK_H
#define MESH_WEBHOOK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

struct json_object;
struct cfg_store;
struct kube_client;

/* Body limit of an AdmissionReview request. */
#define WEBHOOK_MAX_BODY (2u * 1024u * 1024u)
/* Default HTTPS port of the webhooks (the Service maps 443 to it). */
#define WEBHOOK_PORT 15017
/* Name of the ConfigMap and of its key holding the values document. */
#define WEBHOOK_CONFIGMAP "istio-sidecar-injector"
#define WEBHOOK_CONFIGMAP_KEY "values"

/* ---- values (webhook/values.c) ---- */

typedef struct webhook_config webhook_config_t;

/* The built-in values for a control plane in namespace mesh_ns (NULL:
 * "istio-system"): discovery and CA at meshd.<mesh_ns>.svc:15012. */
webhook_config_t *webhook_config_default(const char *mesh_ns);
/* Values from a YAML or JSON document (the `values` key of the ConfigMap, or
 * a file); missing values keep their defaults for mesh_ns. A file may also be
 * a whole ConfigMap, whose data.values is then read. NULL with a message
 * naming the value and the reason on error. */
webhook_config_t *webhook_config_parse(const char *text, size_t len, const char *mesh_ns, char *err,
                                       size_t errlen);
/* Reads a values file (see webhook_config_parse). */
webhook_config_t *webhook_config_load(const char *path, const char *mesh_ns, char *err, size_t errlen);
webhook_config_t *webhook_config_ref(webhook_config_t *c);
void webhook_config_unref(webhook_config_t *c);
/* The revision this config injects for ("default" unless set). */
const char *webhook_config_revision(const webhook_config_t *c);

/* ---- the injection policy and the pod mutation (webhook/inject.c) ---- */

/* What the namespace's labels say about injection. */
typedef struct webhook_ns_info {
    bool has_injection; /* label istio-injection present */
    char injection[64]; /* its value ("enabled", "disabled", ...) */
    bool has_rev; /* label istio.io/rev present */
    char rev[64];
} webhook_ns_info_t;

/* Looks up namespace ns; fills out and returns 0, or -1 when the namespace is
 * not known. Called from request threads: must be thread-safe. */
typedef int (*webhook_ns_lookup_fn)(void *ud, const char *ns, webhook_ns_info_t *out);

typedef struct webhook_decision {
    bool inject;
    char reason[160]; /* why (for logs and tests): "namespace prod has istio-injection=disabled" */
} webhook_decision_t;

/*
 * Istio's policy for pod (a Pod or a pod template: metadata + spec) in
 * namespace ns: never in kube-system/kube-public, never for host-network or
 * already injected pods; namespace istio-injection=disabled wins; the pod's
 * sidecar.istio.io/inject label (else annotation) decides when set; else the
 * namespace label istio-injection=enabled or istio.io/rev=<our revision>;
 * else the config's policy. nsinfo NULL: the namespace is unknown (the
 * webhook configuration's namespaceSelector already chose), so the policy
 * applies. Returns d->inject.
 */
bool webhook_inject_decide(const webhook_config_t *c, struct json_object *pod, const char *ns,
                           const webhook_ns_info_t *nsinfo, webhook_decision_t *d);

/* Where a pod comes from, for canonical names and proxy metadata. */
typedef struct webhook_workload {
    const char *ns; /* namespace, NULL when unknown (kube-inject without one) */
    const char *kind; /* "Deployment", "Pod", ...; NULL: derived from the pod */
    const char *name; /* workload name; NULL: derived from the pod */
    const char *api_version; /* "apps/v1", ... */
} webhook_workload_t;

/*
 * Injects the sidecar into pod (a Pod object or a pod template; modified in
 * place). Validates the traffic and resource annotations first: on a bad one
 * returns -1 with err naming the annotation and the reason, pod unchanged.
 * Returns 0.
 */
int webhook_inject_pod(const webhook_config_t *c, struct json_object *pod, const webhook_workload_t *wl,
                       char *err, size_t errlen);

/* ---- JSONPatch (webhook/patch.c) ---- */

/* RFC 6902 operations turning `from` into `to` (a new json-c array).
 * Keys are escaped in paths ("/" → "~1", "~" → "~0"). */
struct json_object *webhook_patch_diff(struct json_object *from, struct json_object *to);
/* Applies the operations of patch (add, remove, replace, test) to *doc in
 * place (*doc may be replaced by a root "add"/"replace"). 0, or -1 with err. */
int webhook_patch_apply(struct json_object **doc, struct json_object *patch, char *err, size_t errlen);

/* ---- admission (webhook/admission.c) ---- */

typedef struct webhook webhook_t;

typedef struct webhook_opts {
    webhook_config_t *config; /* initial values (a reference is taken); NULL: defaults */
    const char *mesh_ns; /* meshd's namespace ("istio-system" when NULL) */
    webhook_ns_lookup_fn ns_lookup; /* may be NULL; see webhook_watch_store */
    void *ns_lookup_ud;
} webhook_opts_t;

typedef struct webhook_stats {
    uint64_t inject_requests, injected, inject_skipped, inject_errors;
    uint64_t validate_requests, validate_denied;
    uint64_t bad_requests; /* answered 4xx */
    uint64_t config_reloads, config_errors;
} webhook_stats_t;

webhook_t *webhook_new(const webhook_opts_t *o);
/* Frees w (unsubscribing from a watched store). NULL is ignored. */
void webhook_free(webhook_t *w);
/* Replaces the values (takes a reference to c). Any thread. */
void webhook_set_config(webhook_t *w, webhook_config_t *c);
/* The current values, a new reference. */
webhook_config_t *webhook_get_config(webhook_t *w);
void webhook_get_stats(webhook_t *w, webhook_stats_t *st);

/*
 * Handle one request body of /inject or /validate. Returns the HTTP status
 * (200 with an AdmissionReview; 400 with a plain-text reason for a body that
 * is not an AdmissionReview; 413 for a body over WEBHOOK_MAX_BODY) and the
 * response body in *out (malloc'ed, the caller frees) of *outlen bytes.
 * *content_type is a static string.
 */
int webhook_handle_inject(webhook_t *w, const char *body, size_t len, char **out, size_t *outlen,
                          const char **content_type);
int webhook_handle_validate(webhook_t *w, const char *body, size_t len, char **out, size_t *outlen,
                            const char **content_type);

/*
 * kube mode: namespace labels come from the store's snapshots (Namespace
 * objects), and the values from ConfigMap <mesh_ns>/istio-sidecar-injector,
 * key `values`, read now and again on each store event that touches it (a
 * broken document is logged and the previous values stay). Call from the
 * store's writer thread (it subscribes). Replaces opts.ns_lookup. 0 or -1.
 */
int webhook_watch_store(webhook_t *w, struct cfg_store *store);

/* ---- HTTPS server (webhook/server.c) ---- */

typedef struct webhook_server webhook_server_t;

typedef struct webhook_server_opts {
    const char *addr; /* IPv4 or IPv6 literal to bind; NULL: all addresses */
    int port; /* 0: an ephemeral port (see webhook_server_port) */
    const char *cert_pem; /* serving certificate chain, PEM (copied) */
    const char *key_pem; /* its private key, PEM (copied, wiped when freed) */
    unsigned threads; /* worker threads; 0: 2 */
} webhook_server_opts_t;

/* Serves /inject, /validate and /ready (plain "ok") over HTTPS with
 * keep-alive, on its own threads. NULL with err when it cannot listen or the
 * certificate is unusable. */
webhook_server_t *webhook_server_start(webhook_t *w, const webhook_server_opts_t *o, char *err,
                                       size_t errlen);
/* The bound port. */
int webhook_server_port(const webhook_server_t *s);
/* Stops serving (in-flight requests finish) and frees s. NULL is ignored. */
void webhook_server_stop(webhook_server_t *s);

/* ---- registration with the API server (webhook/register.c) ---- */

typedef struct webhook_register_opts {
    const char *mutating; /* MutatingWebhookConfiguration name; NULL: skip */
    const char *validating; /* ValidatingWebhookConfiguration name; NULL: skip */
    const char *ca_pem; /* CA that signed the serving certificate */
    bool ready; /* the server is serving: set the validating failurePolicy to Fail */
} webhook_register_opts_t;

/*
 * Keeps the webhook configurations current: writes ca_pem as the caBundle of
 * every webhook of both configurations, and once ready, sets the validating
 * webhooks' failurePolicy to Fail (they are installed with Ignore so that a
 * control plane that is not up yet does not block config writes). A missing
 * configuration is skipped with a warning. 0, or -1 with err.
 */
int webhook_register(struct kube_client *c, const webhook_register_opts_t *o, char *err, size_t errlen);

/* ---- offline injection (webhook/kubeinject.c) ---- */

/*
 * `meshctl kube-inject`: reads a YAML (multi-document) or JSON manifest and
 * writes it to out with the sidecar injected into every pod template
 * (Deployment, StatefulSet, DaemonSet, Job, CronJob, ReplicaSet,
 * ReplicationController, Pod, and the items of a List); other documents pass
 * through. YAML in, YAML out; JSON in, JSON out. Returns 0, or -1 with err
 * naming the document and the reason (nothing is written then).
 */
int webhook_kube_inject(const webhook_config_t *c, const char *buf, size_t len, FILE *out, char *err,
                        size_t errlen);
/* Writes a json-c value as block-style YAML (the kube-inject emitter). */
int webhook_yaml_write(FILE *out, struct json_object *v);

#endif
