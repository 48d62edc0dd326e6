/*
 * The writes meshd makes: read-modify-write with resourceVersion checks,
 * create-if-absent, and the few objects it owns (ConfigMaps, Secrets,
 * webhook caBundles), plus TokenReview.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../common/log.h"
#include "../common/b64.h"
#include "kube_internal.h"

static const char *json_plain(struct json_object *o)
{
    return json_object_to_json_string_ext(o,
                                          JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
}

/* A short random pause before reading again, so that writers racing for
 * one object do not keep colliding in lockstep (grows with the attempt). */
static void conflict_backoff(int attempt)
{
    static _Thread_local unsigned int seed;
    if (seed == 0)
        seed = (unsigned int)time(NULL) ^ (unsigned int)(uintptr_t)&seed;
    long us = 5000L + (long)(rand_r(&seed) % 20000) * (attempt + 1);
    struct timespec ts = {.tv_sec = us / 1000000, .tv_nsec = (us % 1000000) * 1000};
    nanosleep(&ts, NULL);
}

int kube_update(kube_client_t *c, const char *path, const char *what, kube_mutate_fn fn, void *ud,
                char *err, size_t errlen)
{
    char e[600];
    for (int attempt = 0; attempt < KUBE_WRITE_ATTEMPTS; attempt++) {
        kube_resp_t r;
        if (kube_request(c, "GET", path, NULL, NULL, &r) != 0) {
            snprintf(err, errlen, "%s: %s", what, r.err);
            return KUBE_ERR;
        }
        if (r.status == 404) {
            kube_resp_free(&r);
            snprintf(err, errlen, "%s: not found", what);
            return KUBE_NOTFOUND;
        }
        if (r.status != 200) {
            kube_fail(&r, "get", path, e, sizeof(e));
            kube_resp_free(&r);
            snprintf(err, errlen, "%s: %s", what, e);
            return KUBE_ERR;
        }
        struct json_object *obj = kube_resp_json(&r);
        kube_resp_free(&r);
        if (obj == NULL) {
            snprintf(err, errlen, "%s: GET %s: the answer is not a JSON object", what, path);
            return KUBE_ERR;
        }
        e[0] = '\0';
        int m = fn(ud, obj, e, sizeof(e));
        if (m != 0) {
            json_object_put(obj);
            if (m > 0)
                return 0;
            snprintf(err, errlen, "%s: %s", what, e[0] ? e : "cannot modify the object");
            return KUBE_ERR;
        }
        int rc = kube_request(c, "PUT", path, json_plain(obj), "application/json", &r);
        json_object_put(obj);
        if (rc != 0) {
            snprintf(err, errlen, "%s: %s", what, r.err);
            return KUBE_ERR;
        }
        long st = r.status;
        if (st == 200 || st == 201) {
            kube_resp_free(&r);
            return 0;
        }
        if (st == 409) {
            kube_resp_free(&r);
            atomic_fetch_add(&c->conflicts, 1);
            log_debug("kube: %s: conflict on update (attempt %d), reading it again", what,
                      attempt + 1);
            conflict_backoff(attempt);
            continue;
        }
        if (st == 404) {
            kube_resp_free(&r);
            snprintf(err, errlen, "%s: not found", what);
            return KUBE_NOTFOUND;
        }
        kube_fail(&r, "update", path, e, sizeof(e));
        kube_resp_free(&r);
        snprintf(err, errlen, "%s: %s", what, e);
        return KUBE_ERR;
    }
    snprintf(err, errlen, "%s: gave up after %d conflicting updates", what, KUBE_WRITE_ATTEMPTS);
    return KUBE_ERR;
}

/* Creates the object built by fn on a skeleton; KUBE_EXISTS on AlreadyExists. */
static int create_object(kube_client_t *c, const char *coll, const char *api_version,
                         const char *kind, const char *ns, const char *name, const char *what,
                         kube_mutate_fn fn, void *ud, char *err, size_t errlen)
{
    struct json_object *obj = json_object_new_object();
    json_object_object_add(obj, "apiVersion", json_object_new_string(api_version));
    json_object_object_add(obj, "kind", json_object_new_string(kind));
    struct json_object *md = kube_json_obj(obj, "metadata");
    json_object_object_add(md, "name", json_object_new_string(name));
    if (ns != NULL)
        json_object_object_add(md, "namespace", json_object_new_string(ns));
    char e[600] = "";
    if (fn(ud, obj, e, sizeof(e)) < 0) {
        json_object_put(obj);
        snprintf(err, errlen, "%s: %s", what, e[0] ? e : "cannot build the object");
        return KUBE_ERR;
    }
    kube_resp_t r;
    int rc = kube_request(c, "POST", coll, json_plain(obj), "application/json", &r);
    json_object_put(obj);
    if (rc != 0) {
        snprintf(err, errlen, "%s: %s", what, r.err);
        return KUBE_ERR;
    }
    rc = 0;
    if (r.status == 409) {
        rc = KUBE_EXISTS;
        snprintf(err, errlen, "%s: already exists", what);
    } else if (r.status != 201 && r.status != 200) {
        kube_fail(&r, "create", coll, e, sizeof(e));
        snprintf(err, errlen, "%s: %s", what, e);
        rc = KUBE_ERR;
    }
    kube_resp_free(&r);
    return rc;
}

/* Update if present, else create; a create that loses a race becomes an update. */
static int apply_object(kube_client_t *c, const char *plural, const char *kind, const char *ns,
                        const char *name, const char *what, kube_mutate_fn fn, void *ud, char *err,
                        size_t errlen)
{
    char path[1024], coll[1024];
    if (kube_path(c, "", "v1", plural, ns, name, NULL, path, sizeof(path)) != 0 ||
        kube_path(c, "", "v1", plural, ns, NULL, NULL, coll, sizeof(coll)) != 0) {
        snprintf(err, errlen, "%s: name too long", what);
        return KUBE_ERR;
    }
    for (int attempt = 0; attempt < 3; attempt++) {
        int rc = kube_update(c, path, what, fn, ud, err, errlen);
        if (rc != KUBE_NOTFOUND)
            return rc;
        rc = create_object(c, coll, "v1", kind, ns, name, what, fn, ud, err, errlen);
        if (rc != KUBE_EXISTS)
            return rc;
        log_debug("kube: %s was created by someone else meanwhile; updating it", what);
    }
    return KUBE_ERR;
}

/* Sets o[key] = val when different; true when it changed. */
static bool set_str(struct json_object *o, const char *key, const char *val)
{
    const char *cur = kube_json_str(o, key);
    if (cur != NULL && strcmp(cur, val) == 0)
        return false;
    json_object_object_add(o, key, json_object_new_string(val));
    return true;
}

static bool set_labels(struct json_object *obj, const char *const *labels)
{
    bool changed = false;
    if (labels == NULL || labels[0] == NULL)
        return false;
    struct json_object *l = kube_json_obj(kube_json_obj(obj, "metadata"), "labels");
    for (size_t i = 0; labels[i] != NULL && labels[i + 1] != NULL; i += 2)
        changed |= set_str(l, labels[i], labels[i + 1]);
    return changed;
}

/* ConfigMaps */

typedef struct cm_edit {
    const char *const *keys;
    const char *const *values;
    size_t n;
    const char *const *labels;
} cm_edit_t;

static int cm_mutate(void *ud, struct json_object *obj, char *err, size_t errlen)
{
    (void)err;
    (void)errlen;
    cm_edit_t *ed = ud;
    bool changed = set_labels(obj, ed->labels);
    struct json_object *data = kube_json_obj(obj, "data");
    for (size_t i = 0; i < ed->n; i++)
        changed |= set_str(data, ed->keys[i], ed->values[i]);
    return changed ? 0 : 1;
}

int kube_configmap_apply(kube_client_t *c, const char *ns, const char *name,
                         const char *const *keys, const char *const *values, size_t n,
                         const char *const *labels, char *err, size_t errlen)
{
    char what[300];
    snprintf(what, sizeof(what), "ConfigMap %s/%s", ns, name);
    cm_edit_t ed = {keys, values, n, labels};
    return apply_object(c, "configmaps", "ConfigMap", ns, name, what, cm_mutate, &ed, err, errlen);
}

/* Secrets */

typedef struct secret_edit {
    const char *type;
    size_t n;
    const char *const *keys;
    char **b64; /* encoded values */
    const char *const *labels;
} secret_edit_t;

static int secret_mutate(void *ud, struct json_object *obj, char *err, size_t errlen)
{
    (void)err;
    (void)errlen;
    secret_edit_t *ed = ud;
    bool changed = set_labels(obj, ed->labels);
    if (kube_json_str(obj, "type") == NULL) {
        json_object_object_add(obj, "type", json_object_new_string(ed->type));
        changed = true;
    }
    struct json_object *data = kube_json_obj(obj, "data");
    for (size_t i = 0; i < ed->n; i++)
        changed |= set_str(data, ed->keys[i], ed->b64[i]);
    return changed ? 0 : 1;
}

static void secret_edit_free(secret_edit_t *ed)
{
    for (size_t i = 0; i < ed->n; i++)
        free(ed->b64[i]);
    free(ed->b64);
}

static int secret_edit_init(secret_edit_t *ed, const char *type, const char *const *keys,
                            const unsigned char *const *values, const size_t *lens, size_t n,
                            const char *const *labels)
{
    memset(ed, 0, sizeof(*ed));
    ed->type = type != NULL ? type : "Opaque";
    ed->keys = keys;
    ed->labels = labels;
    ed->b64 = calloc(n + 1, sizeof(char *));
    if (ed->b64 == NULL)
        return -1;
    for (size_t i = 0; i < n; i++) {
        size_t l = lens != NULL ? lens[i] : strlen((const char *)values[i]);
        ed->b64[i] = b64_encode(values[i], l);
        ed->n = i + 1;
        if (ed->b64[i] == NULL)
            return -1;
    }
    ed->n = n;
    return 0;
}

int kube_secret_apply(kube_client_t *c, const char *ns, const char *name, const char *type,
                      const char *const *keys, const unsigned char *const *values,
                      const size_t *lens, size_t n, const char *const *labels, char *err,
                      size_t errlen)
{
    char what[300];
    snprintf(what, sizeof(what), "Secret %s/%s", ns, name);
    secret_edit_t ed;
    int rc = KUBE_ERR;
    if (secret_edit_init(&ed, type, keys, values, lens, n, labels) != 0)
        snprintf(err, errlen, "%s: out of memory", what);
    else
        rc = apply_object(c, "secrets", "Secret", ns, name, what, secret_mutate, &ed, err, errlen);
    secret_edit_free(&ed);
    return rc;
}

int kube_secret_create(kube_client_t *c, const char *ns, const char *name, const char *type,
                       const char *const *keys, const unsigned char *const *values,
                       const size_t *lens, size_t n, const char *const *labels, char *err,
                       size_t errlen)
{
    char what[300], coll[600];
    snprintf(what, sizeof(what), "Secret %s/%s", ns, name);
    if (kube_path(c, "", "v1", "secrets", ns, NULL, NULL, coll, sizeof(coll)) != 0) {
        snprintf(err, errlen, "%s: name too long", what);
        return KUBE_ERR;
    }
    secret_edit_t ed;
    int rc = KUBE_ERR;
    if (secret_edit_init(&ed, type, keys, values, lens, n, labels) != 0)
        snprintf(err, errlen, "%s: out of memory", what);
    else
        rc =
            create_object(c, coll, "v1", "Secret", ns, name, what, secret_mutate, &ed, err, errlen);
    secret_edit_free(&ed);
    return rc;
}

void kube_secret_free(kube_secret_t *s)
{
    if (s == NULL)
        return;
    for (size_t i = 0; i < s->n; i++) {
        free(s->keys[i]);
        if (s->values[i] != NULL)
            memset(s->values[i], 0, s->lens[i]);
        free(s->values[i]);
    }
    free(s->keys);
    free(s->values);
    free(s->lens);
    free(s->type);
    memset(s, 0, sizeof(*s));
}

const unsigned char *kube_secret_value(const kube_secret_t *s, const char *key, size_t *len)
{
    for (size_t i = 0; i < s->n; i++)
        if (strcmp(s->keys[i], key) == 0) {
            if (len != NULL)
                *len = s->lens[i];
            return s->values[i];
        }
    return NULL;
}

int kube_secret_get(kube_client_t *c, const char *ns, const char *name, kube_secret_t *out,
                    char *err, size_t errlen)
{
    memset(out, 0, sizeof(*out));
    char path[1024], e[600];
    if (kube_path(c, "", "v1", "secrets", ns, name, NULL, path, sizeof(path)) != 0) {
        snprintf(err, errlen, "Secret %s/%s: name too long", ns, name);
        return KUBE_ERR;
    }
    kube_resp_t r;
    if (kube_request(c, "GET", path, NULL, NULL, &r) != 0) {
        snprintf(err, errlen, "Secret %s/%s: %s", ns, name, r.err);
        return KUBE_ERR;
    }
    if (r.status == 404) {
        kube_resp_free(&r);
        snprintf(err, errlen, "Secret %s/%s: not found", ns, name);
        return KUBE_NOTFOUND;
    }
    if (r.status != 200) {
        kube_fail(&r, "get", path, e, sizeof(e));
        kube_resp_free(&r);
        snprintf(err, errlen, "Secret %s/%s: %s", ns, name, e);
        return KUBE_ERR;
    }
    struct json_object *obj = kube_resp_json(&r);
    if (r.body != NULL)
        memset(r.body, 0, r.len);
    kube_resp_free(&r);
    int rc = KUBE_ERR;
    if (obj == NULL) {
        snprintf(err, errlen, "Secret %s/%s: the answer is not a JSON object", ns, name);
        goto out;
    }
    const char *type = kube_json_str(obj, "type");
    out->type = strdup(type != NULL ? type : "Opaque");
    struct json_object *data = kube_json_path(obj, "data", NULL);
    size_t n = data != NULL && json_object_is_type(data, json_type_object)
                   ? (size_t)json_object_object_length(data)
                   : 0;
    out->keys = calloc(n + 1, sizeof(char *));
    out->values = calloc(n + 1, sizeof(unsigned char *));
    out->lens = calloc(n + 1, sizeof(size_t));
    if (out->type == NULL || out->keys == NULL || out->values == NULL || out->lens == NULL) {
        snprintf(err, errlen, "Secret %s/%s: out of memory", ns, name);
        goto out;
    }
    if (n > 0) {
        json_object_object_foreach(data, k, v)
        {
            if (!json_object_is_type(v, json_type_string))
                continue;
            const char *s = json_object_get_string(v);
            size_t dl;
            unsigned char *d = b64_decode(s, strlen(s), &dl);
            if (d == NULL) {
                snprintf(err, errlen, "Secret %s/%s: data.%s: not valid base64", ns, name, k);
                goto out;
            }
            out->keys[out->n] = strdup(k);
            out->values[out->n] = d;
            out->lens[out->n] = dl;
            out->n++;
        }
    }
    rc = 0;
out:
    json_object_put(obj);
    if (rc != 0)
        kube_secret_free(out);
    return rc;
}

/* Webhook configurations */

typedef struct wh_edit {
    const char *cabundle; /* base64 */
    const char *policy;
} wh_edit_t;

static int wh_mutate(void *ud, struct json_object *obj, char *err, size_t errlen)
{
    wh_edit_t *ed = ud;
    struct json_object *whs = kube_json_path(obj, "webhooks", NULL);
    if (whs == NULL || !json_object_is_type(whs, json_type_array)) {
        snprintf(err, errlen, "has no webhooks");
        return -1;
    }
    bool changed = false;
    size_t n = json_object_array_length(whs);
    for (size_t i = 0; i < n; i++) {
        struct json_object *wh = json_object_array_get_idx(whs, i);
        if (!json_object_is_type(wh, json_type_object))
            continue;
        if (ed->cabundle != NULL)
            changed |= set_str(kube_json_obj(wh, "clientConfig"), "caBundle", ed->cabundle);
        if (ed->policy != NULL)
            changed |= set_str(wh, "failurePolicy", ed->policy);
    }
    return changed ? 0 : 1;
}

static int webhook_update(kube_client_t *c, const char *kind, const char *name, wh_edit_t *ed,
                          char *err, size_t errlen)
{
    const char *plural, *kname;
    if (strcmp(kind, "mutating") == 0) {
        plural = "mutatingwebhookconfigurations";
        kname = "MutatingWebhookConfiguration";
    } else if (strcmp(kind, "validating") == 0) {
        plural = "validatingwebhookconfigurations";
        kname = "ValidatingWebhookConfiguration";
    } else {
        snprintf(
            err, errlen,
            "webhook configuration %s: kind must be \"mutating\" or \"validating\", not \"%s\"",
            name, kind);
        return KUBE_ERR;
    }
    char what[300], path[600];
    snprintf(what, sizeof(what), "%s %s", kname, name);
    const char *v = kube_resource_version(c, "admissionregistration.k8s.io", plural);
    if (v == NULL) {
        snprintf(err, errlen, "%s: the API server does not serve admissionregistration.k8s.io %s",
                 what, plural);
        return KUBE_ERR;
    }
    if (kube_path(c, "admissionregistration.k8s.io", v, plural, NULL, name, NULL, path,
                  sizeof(path)) != 0) {
        snprintf(err, errlen, "%s: name too long", what);
        return KUBE_ERR;
    }
    return kube_update(c, path, what, wh_mutate, ed, err, errlen);
}

int kube_webhook_patch_cabundle(kube_client_t *c, const char *kind, const char *name,
                                const char *ca_pem, char *err, size_t errlen)
{
    char *b = b64_encode((const unsigned char *)ca_pem, strlen(ca_pem));
    if (b == NULL) {
        snprintf(err, errlen, "out of memory");
        return KUBE_ERR;
    }
    wh_edit_t ed = {.cabundle = b};
    int rc = webhook_update(c, kind, name, &ed, err, errlen);
    free(b);
    return rc;
}

int kube_webhook_set_failure_policy(kube_client_t *c, const char *name, const char *policy,
                                    char *err, size_t errlen)
{
    if (policy == NULL || (strcmp(policy, "Fail") != 0 && strcmp(policy, "Ignore") != 0)) {
        snprintf(err, errlen,
                 "ValidatingWebhookConfiguration %s: failurePolicy must be \"Fail\" or \"Ignore\"",
                 name);
        return KUBE_ERR;
    }
    wh_edit_t ed = {.policy = policy};
    return webhook_update(c, "validating", name, &ed, err, errlen);
}

/* TokenReview */

/* The exp claim of a JWT, 0 when absent or unreadable. */
static int64_t jwt_exp(const char *token)
{
    const char *p = strchr(token, '.');
    const char *q = p != NULL ? strchr(p + 1, '.') : NULL;
    if (q == NULL)
        return 0;
    size_t n;
    unsigned char *payload = b64_decode(p + 1, (size_t)(q - p - 1), &n);
    if (payload == NULL)
        return 0;
    int64_t exp = 0;
    struct json_object *o = json_tokener_parse((const char *)payload);
    struct json_object *e = kube_json_path(o, "exp", NULL);
    if (e != NULL &&
        (json_object_is_type(e, json_type_int) || json_object_is_type(e, json_type_double)))
        exp = json_object_get_int64(e);
    json_object_put(o);
    free(payload);
    return exp;
}

int kube_token_review(kube_client_t *c, const char *token, const char *const *audiences,
                      kube_token_review_t *out)
{
    memset(out, 0, sizeof(*out));
    if (token == NULL || token[0] == '\0') {
        snprintf(out->error, sizeof(out->error), "no token");
        return 0;
    }
    const char *v = kube_resource_version(c, "authentication.k8s.io", "tokenreviews");
    if (v == NULL)
        v = "v1";
    char path[200], api[100];
    kube_path(c, "authentication.k8s.io", v, "tokenreviews", NULL, NULL, NULL, path, sizeof(path));
    snprintf(api, sizeof(api), "authentication.k8s.io/%s", v);
    struct json_object *req = json_object_new_object();
    json_object_object_add(req, "apiVersion", json_object_new_string(api));
    json_object_object_add(req, "kind", json_object_new_string("TokenReview"));
    struct json_object *spec = kube_json_obj(req, "spec");
    json_object_object_add(spec, "token", json_object_new_string(token));
    if (audiences != NULL && audiences[0] != NULL) {
        struct json_object *a = json_object_new_array();
        for (size_t i = 0; audiences[i] != NULL; i++)
            json_object_array_add(a, json_object_new_string(audiences[i]));
        json_object_object_add(spec, "audiences", a);
    }
    kube_resp_t r;
    int rc = kube_request(c, "POST", path, json_plain(req), "application/json", &r);
    json_object_put(req);
    if (rc != 0) {
        mesh_errf(out->error, sizeof(out->error), "TokenReview: %s", r.err);
        return -1;
    }
    if (r.status != 200 && r.status != 201) {
        char e[600];
        kube_fail(&r, "create", path, e, sizeof(e));
        mesh_errf(out->error, sizeof(out->error), "TokenReview: %s", e);
        kube_resp_free(&r);
        return -1;
    }
    struct json_object *o = kube_resp_json(&r);
    kube_resp_free(&r);
    struct json_object *st = kube_json_path(o, "status", NULL);
    if (st == NULL) {
        json_object_put(o);
        snprintf(out->error, sizeof(out->error), "TokenReview: the answer has no status");
        return -1;
    }
    struct json_object *auth = kube_json_path(st, "authenticated", NULL);
    out->authenticated = auth != NULL && json_object_get_boolean(auth);
    const char *er = kube_json_str(st, "error");
    if (er != NULL)
        snprintf(out->error, sizeof(out->error), "%s", er);
    else if (!out->authenticated)
        snprintf(out->error, sizeof(out->error), "the token was not authenticated");
    if (out->authenticated) {
        const char *u = kube_json_str(kube_json_path(st, "user", NULL), "username");
        const char *uid = kube_json_str(kube_json_path(st, "user", NULL), "uid");
        snprintf(out->username, sizeof(out->username), "%s", u != NULL ? u : "");
        snprintf(out->uid, sizeof(out->uid), "%s", uid != NULL ? uid : "");
        static const char pfx[] = "system:serviceaccount:";
        if (u != NULL && strncmp(u, pfx, sizeof(pfx) - 1) == 0) {
            const char *nsp = u + sizeof(pfx) - 1;
            const char *colon = strchr(nsp, ':');
            if (colon != NULL && colon > nsp && colon[1] != '\0' &&
                (size_t)(colon - nsp) < sizeof(out->ns)) {
                snprintf(out->ns, sizeof(out->ns), "%.*s", (int)(colon - nsp), nsp);
                snprintf(out->service_account, sizeof(out->service_account), "%s", colon + 1);
            }
        }
        struct json_object *aud = kube_json_path(st, "audiences", NULL);
        if (aud != NULL && json_object_is_type(aud, json_type_array)) {
            size_t n = json_object_array_length(aud);
            for (size_t i = 0; i < n && out->naudiences < KUBE_MAX_AUDIENCES; i++) {
                const char *a = json_object_get_string(json_object_array_get_idx(aud, i));
                if (a != NULL)
                    snprintf(out->audiences[out->naudiences++], sizeof(out->audiences[0]), "%s", a);
            }
        }
        out->expiration = jwt_exp(token);
    }
    json_object_put(o);
    return 0;
}
