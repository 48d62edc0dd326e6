/*
 * AdmissionReview handling: /inject (mutating) and /validate (validating),
 * as pure functions of a request body, plus the webhook object that holds
 * the current values and the namespace lookup, and its wiring to the config
 * store (kube mode).
 */
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "../common/arena.h"
#include "../common/doc.h"
#include "../common/log.h"
#include "../config/config.h"
#include "../common/b64.h"
#include "webhook_internal.h"

struct webhook {
    pthread_mutex_t lock; /* guards config */
    webhook_config_t *config;
    char *mesh_ns;
    webhook_ns_lookup_fn ns_lookup;
    void *ns_lookup_ud;
    cfg_store_t *store; /* watched store, or NULL */
    _Atomic uint64_t inject_requests, injected, inject_skipped, inject_errors;
    _Atomic uint64_t validate_requests, validate_denied, bad_requests;
    _Atomic uint64_t config_reloads, config_errors;
};

webhook_t *webhook_new(const webhook_opts_t *o)
{
    webhook_t *w = mesh_xcalloc(1, sizeof(*w));
    pthread_mutex_init(&w->lock, NULL);
    w->mesh_ns = mesh_xstrdup(o && o->mesh_ns ? o->mesh_ns : "istio-system");
    w->config = o && o->config ? webhook_config_ref(o->config) : webhook_config_default(w->mesh_ns);
    if (o != NULL) {
        w->ns_lookup = o->ns_lookup;
        w->ns_lookup_ud = o->ns_lookup_ud;
    }
    return w;
}

static void store_event(void *ud, const cfg_event_t *ev);

void webhook_free(webhook_t *w)
{
    if (w == NULL)
        return;
    if (w->store != NULL)
        cfg_store_unsubscribe(w->store, store_event, w);
    webhook_config_unref(w->config);
    pthread_mutex_destroy(&w->lock);
    free(w->mesh_ns);
    free(w);
}

void webhook_set_config(webhook_t *w, webhook_config_t *c)
{
    webhook_config_ref(c);
    pthread_mutex_lock(&w->lock);
    webhook_config_t *old = w->config;
    w->config = c;
    pthread_mutex_unlock(&w->lock);
    webhook_config_unref(old);
}

webhook_config_t *webhook_get_config(webhook_t *w)
{
    pthread_mutex_lock(&w->lock);
    webhook_config_t *c = webhook_config_ref(w->config);
    pthread_mutex_unlock(&w->lock);
    return c;
}

void webhook_get_stats(webhook_t *w, webhook_stats_t *st)
{
    st->inject_requests = atomic_load(&w->inject_requests);
    st->injected = atomic_load(&w->injected);
    st->inject_skipped = atomic_load(&w->inject_skipped);
    st->inject_errors = atomic_load(&w->inject_errors);
    st->validate_requests = atomic_load(&w->validate_requests);
    st->validate_denied = atomic_load(&w->validate_denied);
    st->bad_requests = atomic_load(&w->bad_requests);
    st->config_reloads = atomic_load(&w->config_reloads);
    st->config_errors = atomic_load(&w->config_errors);
}

/* ---- responses ---- */

static const char CT_JSON[] = "application/json";
static const char CT_TEXT[] = "text/plain; charset=utf-8";

static int text_response(webhook_t *w, int status, char **out, size_t *outlen, const char **ct, const char *fmt,
                         ...) __attribute__((format(printf, 6, 7)));
static int text_response(webhook_t *w, int status, char **out, size_t *outlen, const char **ct, const char *fmt,
                         ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof(buf) - 1, fmt, ap);
    va_end(ap);
    if (n < 0)
        n = 0;
    if ((size_t)n > sizeof(buf) - 2)
        n = (int)sizeof(buf) - 2;
    buf[n++] = '\n';
    buf[n] = '\0';
    *out = mesh_xstrdup(buf);
    *outlen = (size_t)n;
    *ct = CT_TEXT;
    atomic_fetch_add(&w->bad_requests, 1);
    return status;
}

/* What a request body holds, once checked to be an AdmissionReview. */
struct review {
    json_object *root;
    const char *api_version;
    json_object *req;
    const char *uid;
    const char *operation;
    const char *kind; /* request.kind.kind, or "" */
    const char *ns; /* request.namespace, or "" */
    json_object *object;
};

static const char *jstr(json_object *o, const char *key)
{
    json_object *v = NULL;
    if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_string))
        return NULL;
    return json_object_get_string(v);
}

/* Parses and checks the envelope. Returns 0, or the HTTP status of a refusal
 * already written to out. */
static int read_review(webhook_t *w, const char *body, size_t len, struct review *r, char **out, size_t *outlen,
                       const char **ct)
{
    char err[256];
    memset(r, 0, sizeof(*r));
    if (len > WEBHOOK_MAX_BODY)
        return text_response(w, 413, out, outlen, ct, "request body of %zu bytes exceeds the limit of %u bytes", len,
                             WEBHOOK_MAX_BODY);
    if (len == 0)
        return text_response(w, 400, out, outlen, ct, "empty body: expected an AdmissionReview (JSON)");
    r->root = webhook_json_parse(body, len, err, sizeof(err));
    if (r->root == NULL)
        return text_response(w, 400, out, outlen, ct, "invalid AdmissionReview: %s", err);
    if (!json_object_is_type(r->root, json_type_object))
        goto bad_envelope;
    const char *kind = jstr(r->root, "kind");
    r->api_version = jstr(r->root, "apiVersion");
    if (kind == NULL || strcmp(kind, "AdmissionReview") != 0)
        goto bad_envelope;
    if (r->api_version == NULL || (strcmp(r->api_version, "admission.k8s.io/v1") != 0 &&
                                   strcmp(r->api_version, "admission.k8s.io/v1beta1") != 0)) {
        int st = text_response(w, 400, out, outlen, ct,
                               "invalid AdmissionReview: apiVersion \"%.64s\" is not admission.k8s.io/v1 or v1beta1",
                               r->api_version ? r->api_version : "");
        json_object_put(r->root);
        r->root = NULL;
        return st;
    }
    if (!json_object_object_get_ex(r->root, "request", &r->req) || !json_object_is_type(r->req, json_type_object)) {
        int st = text_response(w, 400, out, outlen, ct, "invalid AdmissionReview: request is missing or not an object");
        json_object_put(r->root);
        r->root = NULL;
        return st;
    }
    r->uid = jstr(r->req, "uid");
    if (r->uid == NULL || r->uid[0] == '\0') {
        int st = text_response(w, 400, out, outlen, ct, "invalid AdmissionReview: request.uid is missing");
        json_object_put(r->root);
        r->root = NULL;
        return st;
    }
    r->operation = jstr(r->req, "operation");
    if (r->operation == NULL)
        r->operation = "";
    json_object *k = NULL;
    json_object_object_get_ex(r->req, "kind", &k);
    r->kind = jstr(k, "kind");
    if (r->kind == NULL)
        r->kind = "";
    r->ns = jstr(r->req, "namespace");
    if (r->ns == NULL)
        r->ns = "";
    json_object_object_get_ex(r->req, "object", &r->object);
    return 0;
bad_envelope:
    json_object_put(r->root);
    r->root = NULL;
    return text_response(w, 400, out, outlen, ct, "invalid AdmissionReview: expected an object with kind AdmissionReview");
}

/* Writes the AdmissionReview answer for r. status_code 0: no status. */
static int review_response(const struct review *r, bool allowed, int status_code, const char *message,
                           const char *patch_b64, char **out, size_t *outlen, const char **ct)
{
    json_object *resp = json_object_new_object();
    json_object_object_add(resp, "uid", json_object_new_string(r->uid));
    json_object_object_add(resp, "allowed", json_object_new_boolean(allowed));
    if (message != NULL) {
        json_object *st = json_object_new_object();
        json_object_object_add(st, "metadata", json_object_new_object());
        json_object_object_add(st, "status", json_object_new_string(allowed ? "Success" : "Failure"));
        json_object_object_add(st, "message", json_object_new_string(message));
        if (status_code != 0) {
            if (status_code == 400)
                json_object_object_add(st, "reason", json_object_new_string("BadRequest"));
            json_object_object_add(st, "code", json_object_new_int(status_code));
        }
        json_object_object_add(resp, "status", st);
    }
    if (patch_b64 != NULL) {
        json_object_object_add(resp, "patchType", json_object_new_string("JSONPatch"));
        json_object_object_add(resp, "patch", json_object_new_string(patch_b64));
    }
    json_object *root = json_object_new_object();
    json_object_object_add(root, "apiVersion", json_object_new_string(r->api_version));
    json_object_object_add(root, "kind", json_object_new_string("AdmissionReview"));
    json_object_object_add(root, "response", resp);
    size_t n = 0;
    const char *s = json_object_to_json_string_length(root, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE,
                                                      &n);
    *out = mesh_xmalloc(n + 1);
    memcpy(*out, s, n + 1);
    *outlen = n;
    *ct = CT_JSON;
    json_object_put(root);
    return 200;
}

/* ---- /inject ---- */

int webhook_handle_inject(webhook_t *w, const char *body, size_t len, char **out, size_t *outlen,
                          const char **content_type)
{
    struct review r;
    char msg[1024], err[512];
    int status;
    atomic_fetch_add(&w->inject_requests, 1);
    if ((status = read_review(w, body, len, &r, out, outlen, content_type)) != 0)
        return status;
    webhook_config_t *c = webhook_get_config(w);
    json_object *pod = NULL, *patch = NULL;
    char *b64 = NULL;

    if (strcmp(r.kind, "Pod") != 0) {
        snprintf(msg, sizeof(msg), "not a Pod (kind \"%.64s\"): nothing to inject", r.kind);
        status = review_response(&r, true, 0, msg, NULL, out, outlen, content_type);
        atomic_fetch_add(&w->inject_skipped, 1);
        goto out;
    }
    if (strcmp(r.operation, "CREATE") != 0 || jstr(r.req, "subResource") != NULL) {
        snprintf(msg, sizeof(msg), "operation %.32s%s%.32s on a Pod: sidecars are injected only at CREATE",
                 r.operation[0] ? r.operation : "(none)", jstr(r.req, "subResource") ? " of " : "",
                 jstr(r.req, "subResource") ? jstr(r.req, "subResource") : "");
        status = review_response(&r, true, 0, msg, NULL, out, outlen, content_type);
        atomic_fetch_add(&w->inject_skipped, 1);
        goto out;
    }
    if (!json_object_is_type(r.object, json_type_object)) {
        status = review_response(&r, false, 400, "request.object: missing or not a Pod object", NULL, out, outlen,
                                 content_type);
        atomic_fetch_add(&w->inject_errors, 1);
        goto out;
    }
    json_object *meta = json_object_object_get(r.object, "metadata");
    const char *ns = r.ns[0] ? r.ns : jstr(meta, "namespace");
    const char *name = jstr(meta, "name");
    if (name == NULL || name[0] == '\0')
        name = jstr(meta, "generateName");
    if (ns == NULL || ns[0] == '\0')
        ns = "default";
    webhook_ns_info_t nsinfo;
    memset(&nsinfo, 0, sizeof(nsinfo));
    bool known = w->ns_lookup != NULL && w->ns_lookup(w->ns_lookup_ud, ns, &nsinfo) == 0;
    webhook_decision_t d;
    if (!webhook_inject_decide(c, r.object, ns, known ? &nsinfo : NULL, &d)) {
        log_debug("inject: pod %s/%s skipped: %s", ns, name ? name : "", d.reason);
        status = review_response(&r, true, 0, NULL, NULL, out, outlen, content_type);
        atomic_fetch_add(&w->inject_skipped, 1);
        goto out;
    }
    json_object_deep_copy(r.object, &pod, NULL);
    webhook_workload_t wl = {.ns = ns};
    if (pod == NULL || webhook_inject_pod(c, pod, &wl, err, sizeof(err)) != 0) {
        snprintf(msg, sizeof(msg), "sidecar injection of pod %s/%s failed: %s", ns, name ? name : "",
                 pod ? err : "cannot copy the pod");
        log_warn("%s", msg);
        status = review_response(&r, false, 400, msg, NULL, out, outlen, content_type);
        atomic_fetch_add(&w->inject_errors, 1);
        goto out;
    }
    patch = webhook_patch_diff(r.object, pod);
    size_t plen = 0;
    const char *ps = json_object_to_json_string_length(patch, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE,
                                                       &plen);
    b64 = b64_encode(ps, plen);
    log_debug("inject: pod %s/%s: %s", ns, name ? name : "", d.reason);
    status = review_response(&r, true, 0, NULL, b64, out, outlen, content_type);
    atomic_fetch_add(&w->injected, 1);
out:
    free(b64);
    json_object_put(patch);
    json_object_put(pod);
    json_object_put(r.root);
    webhook_config_unref(c);
    return status;
}

/* ---- /validate ---- */

struct vres {
    const char *ns;
    bool decoded; /* the document reached the decoder */
    bool denied;
    char *message;
};

static int validate_doc(void *ud, const doc_t *d)
{
    struct vres *v = ud;
    cfg_diag_t diag;
    cfg_load_opts_t o = {.file = NULL, .default_namespace = v->ns[0] ? v->ns : NULL};
    if (v->decoded)
        return 1;
    v->decoded = true;
    if (d->root == NULL) {
        v->denied = true;
        v->message = mesh_xstrdup("request.object: cannot be read");
        return 1;
    }
    cfg_diag_init(&diag, NULL, 0);
    cfg_object_t *obj = cfg_object_decode(d->root, 0, &o, &diag);
    if (obj != NULL) {
        cfg_object_unref(obj);
    } else if (diag.nerrors > 0) {
        /* "configuration is invalid: Kind ns/name: path: reason; path: reason" */
        size_t cap = 256, len = 0;
        char *m = mesh_xmalloc(cap);
        len = (size_t)snprintf(m, cap, "configuration is invalid: ");
        if (diag.kind_name[0] != '\0') {
            char id[600];
            if (diag.namespace[0])
                snprintf(id, sizeof(id), "%s %s/%s: ", diag.kind_name, diag.namespace,
                         diag.name[0] ? diag.name : "<unnamed>");
            else
                snprintf(id, sizeof(id), "%s %s: ", diag.kind_name, diag.name[0] ? diag.name : "<unnamed>");
            size_t il = strlen(id);
            m = mesh_xrealloc(m, cap = len + il + 256);
            memcpy(m + len, id, il + 1);
            len += il;
        }
        for (uint32_t i = 0; i < diag.nerrors; i++) {
            const char *e = diag.errors[i];
            size_t at = diag.reason_at[i];
            if (at > strlen(e))
                at = 0;
            e += at;
            size_t el = strlen(e);
            if (len + el + 8 > cap)
                m = mesh_xrealloc(m, cap = (len + el + 8) * 2);
            if (i > 0) {
                memcpy(m + len, "; ", 2);
                len += 2;
            }
            memcpy(m + len, e, el + 1);
            len += el;
        }
        if (diag.truncated && len + 16 < cap)
            len += (size_t)snprintf(m + len, cap - len, "; ...");
        v->denied = true;
        v->message = m;
    }
    cfg_diag_clear(&diag);
    return 1;
}

int webhook_handle_validate(webhook_t *w, const char *body, size_t len, char **out, size_t *outlen,
                            const char **content_type)
{
    struct review r;
    int status;
    atomic_fetch_add(&w->validate_requests, 1);
    if ((status = read_review(w, body, len, &r, out, outlen, content_type)) != 0)
        return status;
    if (strcmp(r.operation, "DELETE") == 0 || strcmp(r.operation, "CONNECT") == 0) {
        status = review_response(&r, true, 0, NULL, NULL, out, outlen, content_type);
        goto out;
    }
    if (!json_object_is_type(r.object, json_type_object)) {
        status = review_response(&r, false, 400, "request.object: missing or not an object", NULL, out, outlen,
                                 content_type);
        atomic_fetch_add(&w->validate_denied, 1);
        goto out;
    }
    struct vres v = {.ns = r.ns};
    size_t n = 0;
    const char *text = json_object_to_json_string_length(r.object, JSON_C_TO_STRING_PLAIN, &n);
    doc_parse(text, n, DOC_FMT_JSON, validate_doc, &v);
    if (v.denied) {
        log_info("validate: denied: %s", v.message);
        atomic_fetch_add(&w->validate_denied, 1);
    }
    status = review_response(&r, !v.denied, v.denied ? 400 : 0, v.message, NULL, out, outlen, content_type);
    free(v.message);
out:
    json_object_put(r.root);
    return status;
}

/* ---- kube mode: the config store ---- */

static void label_copy(char *dst, size_t size, const char *v)
{
    snprintf(dst, size, "%s", v ? v : "");
}

static int store_ns_lookup(void *ud, const char *ns, webhook_ns_info_t *out)
{
    webhook_t *w = ud;
    cfg_snap_t *snap = cfg_store_snapshot(w->store);
    cfg_object_t *o = snap ? cfg_snap_get(snap, CFG_Namespace, NULL, ns) : NULL;
    int rc = -1;
    if (o != NULL) {
        memset(out, 0, sizeof(*out));
        const cfg_map_t *labels = &o->meta->labels;
        for (uint32_t i = 0; i < labels->n; i++) {
            const cfg_mapent_t *e = &labels->v[i];
            if (e->key == NULL)
                continue;
            if (strcmp(e->key, "istio-injection") == 0) {
                out->has_injection = true;
                label_copy(out->injection, sizeof(out->injection), e->str);
            } else if (strcmp(e->key, "istio.io/rev") == 0) {
                out->has_rev = true;
                label_copy(out->rev, sizeof(out->rev), e->str);
            }
        }
        rc = 0;
    }
    if (snap != NULL)
        cfg_snap_release(snap);
    return rc;
}

static void load_configmap(webhook_t *w, const cfg_object_t *o)
{
    char err[512];
    const cfg_ConfigMapObject *cm = CFG_BODY(o, ConfigMap);
    const char *text = NULL;
    for (uint32_t i = 0; i < cm->data.n; i++)
        if (cm->data.v[i].key && strcmp(cm->data.v[i].key, WEBHOOK_CONFIGMAP_KEY) == 0)
            text = cm->data.v[i].str;
    if (text == NULL) {
        log_warn("ConfigMap %s/%s: data.%s is missing; keeping the current injection values", o->namespace, o->name,
                 WEBHOOK_CONFIGMAP_KEY);
        atomic_fetch_add(&w->config_errors, 1);
        return;
    }
    webhook_config_t *c = webhook_config_parse(text, strlen(text), w->mesh_ns, err, sizeof(err));
    if (c == NULL) {
        log_warn("ConfigMap %s/%s: data.%s: %s; keeping the current injection values", o->namespace, o->name,
                 WEBHOOK_CONFIGMAP_KEY, err);
        atomic_fetch_add(&w->config_errors, 1);
        return;
    }
    log_info("injection values loaded from ConfigMap %s/%s (revision %s)", o->namespace, o->name,
             webhook_config_revision(c));
    webhook_set_config(w, c);
    webhook_config_unref(c);
    atomic_fetch_add(&w->config_reloads, 1);
}

static bool is_injector_cm(const webhook_t *w, const cfg_object_t *o)
{
    return o != NULL && o->kind == CFG_ConfigMap && strcmp(o->name, WEBHOOK_CONFIGMAP) == 0 &&
           strcmp(o->namespace, w->mesh_ns) == 0;
}

static void store_event(void *ud, const cfg_event_t *ev)
{
    webhook_t *w = ud;
    if (ev->kind != CFG_ConfigMap)
        return;
    if (ev->type == CFG_EVENT_DELETE) {
        if (is_injector_cm(w, ev->old)) {
            webhook_config_t *c = webhook_config_default(w->mesh_ns);
            webhook_set_config(w, c);
            webhook_config_unref(c);
            atomic_fetch_add(&w->config_reloads, 1);
            log_info("ConfigMap %s/%s deleted: injection values back to the defaults", w->mesh_ns, WEBHOOK_CONFIGMAP);
        }
        return;
    }
    if (is_injector_cm(w, ev->new))
        load_configmap(w, ev->new);
}

int webhook_watch_store(webhook_t *w, cfg_store_t *store)
{
    if (w->store != NULL)
        cfg_store_unsubscribe(w->store, store_event, w);
    w->store = store;
    w->ns_lookup = store_ns_lookup;
    w->ns_lookup_ud = w;
    cfg_store_subscribe(store, store_event, w);
    cfg_snap_t *snap = cfg_store_snapshot(store);
    cfg_object_t *cm = cfg_snap_get(snap, CFG_ConfigMap, w->mesh_ns, WEBHOOK_CONFIGMAP);
    if (cm != NULL)
        load_configmap(w, cm);
    cfg_snap_release(snap);
    return 0;
}
