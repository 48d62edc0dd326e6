/*
 * The informer's decoders: one object as the API server sent it, and one
 * line of a watch stream. Input is hostile by assumption (fuzzed through
 * test/fuzz/fuzz_watch.c): anything malformed is an error, never a crash.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "informer_internal.h"

static void copy_str(char *dst, size_t size, const doc_node_t *n)
{
    const char *s = doc_str(n);
    if (s == NULL) {
        dst[0] = '\0';
        return;
    }
    size_t len = strnlen(s, size - 1);
    memcpy(dst, s, len);
    dst[len] = '\0';
}

void informer_object_id(const doc_node_t *item, char *ns, size_t nslen, char *name, size_t namelen,
                        char *rv, size_t rvlen)
{
    const doc_node_t *meta = item && item->type == DOC_MAP ? doc_map_get(item, "metadata") : NULL;
    if (meta != NULL && meta->type != DOC_MAP)
        meta = NULL;
    copy_str(ns, nslen, meta ? doc_map_get(meta, "namespace") : NULL);
    copy_str(name, namelen, meta ? doc_map_get(meta, "name") : NULL);
    copy_str(rv, rvlen, meta ? doc_map_get(meta, "resourceVersion") : NULL);
}

/* True when a Secret's data has key (the API server always sends data). */
static bool data_has(const doc_node_t *obj, const char *key)
{
    const doc_node_t *data = doc_map_get(obj, "data");
    return data != NULL && data->type == DOC_MAP && doc_map_get(data, key) != NULL;
}

bool informer_secret_wanted(const doc_node_t *obj)
{
    if (obj == NULL || obj->type != DOC_MAP)
        return false;
    const doc_node_t *meta = doc_map_get(obj, "metadata");
    const char *name = meta && meta->type == DOC_MAP ? doc_str(doc_map_get(meta, "name")) : NULL;
    if (name != NULL && (strcmp(name, "cacerts") == 0 || strcmp(name, "istio-ca-secret") == 0))
        return true; /* the CA's own */
    const char *type = doc_str(doc_map_get(obj, "type"));
    if (type != NULL && strcmp(type, "kubernetes.io/tls") == 0)
        return true;
    /* Gateway credentials in generic Secrets; never service-account tokens
     * (they hold a ca.crt too), docker configs or other typed Secrets. */
    if (type != NULL && type[0] != '\0' && strcmp(type, "Opaque") != 0)
        return false;
    return (data_has(obj, "cert") && data_has(obj, "key")) ||
           (data_has(obj, "tls.crt") && data_has(obj, "tls.key")) || data_has(obj, "cacert") ||
           data_has(obj, "ca.crt");
}

/* Joins every error line of diag with "; " into a malloc'd string. */
static char *join_errors(const cfg_diag_t *diag)
{
    size_t len = 1;
    for (uint32_t i = 0; i < diag->nerrors; i++)
        len += strlen(diag->errors[i]) + 2;
    if (diag->truncated)
        len += 32;
    char *s = mesh_xmalloc(len), *p = s;
    *p = '\0';
    for (uint32_t i = 0; i < diag->nerrors; i++)
        p += sprintf(p, "%s%s", i ? "; " : "", diag->errors[i]);
    if (diag->truncated)
        strcpy(p, "; (more errors)");
    if (s[0] == '\0') {
        free(s);
        s = mesh_xstrdup(diag->nwarnings ? diag->warnings[0] : "not a kind meshd reads");
    }
    return s;
}

cfg_object_t *informer_decode_object(const doc_node_t *item, arena_t *scratch, cfg_kind_t kind,
                                     const char *api_version, informer_filter_fn keep,
                                     bool *filtered, char **error)
{
    const cfg_kind_info_t *ki = cfg_kind_info(kind);
    *filtered = false;
    *error = NULL;
    if (ki == NULL) {
        *error = mesh_xstrdup("unknown kind");
        return NULL;
    }
    if (item == NULL || item->type != DOC_MAP) {
        *error = mesh_xstrdup("the object is not a JSON object");
        return NULL;
    }
    if (keep != NULL && !keep(item)) {
        *filtered = true;
        return NULL;
    }
    const doc_node_t *root = item;
    bool has_av = doc_str(doc_map_get(item, "apiVersion")) != NULL;
    bool has_kind = doc_str(doc_map_get(item, "kind")) != NULL;
    if (!has_av || !has_kind) {
        /* LIST items of built-in kinds come without apiVersion and kind. */
        doc_node_t *w = arena_alloc(scratch, sizeof(*w));
        uint32_t n = item->v.map.n;
        w->type = DOC_MAP;
        w->line = item->line;
        w->v.map.pairs = arena_alloc(scratch, ((size_t)n + 2) * sizeof(doc_pair_t));
        doc_node_t *av = arena_alloc(scratch, sizeof(*av));
        av->type = DOC_STR;
        av->str = api_version;
        av->len = (uint32_t)strlen(api_version);
        doc_node_t *kn = arena_alloc(scratch, sizeof(*kn));
        kn->type = DOC_STR;
        kn->str = ki->name;
        kn->len = (uint32_t)strlen(ki->name);
        w->v.map.pairs[w->v.map.n++] = (doc_pair_t){"apiVersion", 10, 0, av};
        w->v.map.pairs[w->v.map.n++] = (doc_pair_t){"kind", 4, 0, kn};
        for (uint32_t i = 0; i < n; i++) {
            const doc_pair_t *p = &item->v.map.pairs[i];
            if ((p->key_len == 10 && memcmp(p->key, "apiVersion", 10) == 0) ||
                (p->key_len == 4 && memcmp(p->key, "kind", 4) == 0))
                continue;
            w->v.map.pairs[w->v.map.n++] = *p;
        }
        root = w;
    }
    cfg_diag_t diag;
    cfg_diag_init(&diag, NULL, 0);
    cfg_object_t *obj = cfg_object_decode(root, 0, NULL, &diag);
    if (obj != NULL && obj->kind != kind) {
        cfg_diag_error(&diag, "is a %s, not a %s", cfg_kind_info(obj->kind)->name, ki->name);
        cfg_object_unref(obj);
        obj = NULL;
    }
    if (obj == NULL)
        *error = join_errors(&diag);
    cfg_diag_clear(&diag);
    return obj;
}

struct line_ctx {
    cfg_kind_t kind;
    const char *api_version;
    informer_filter_fn keep;
    informer_event_t *ev;
    char *err;
    size_t errlen;
    int docs;
    int rc;
};

static int fail(struct line_ctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int fail(struct line_ctx *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->err, c->errlen, fmt, ap);
    va_end(ap);
    c->rc = -1;
    return 1;
}

static int on_line_doc(void *ud, const doc_t *d)
{
    struct line_ctx *c = ud;
    informer_event_t *ev = c->ev;
    if (++c->docs > 1)
        return fail(c, "more than one JSON value on one line");
    if (d->root == NULL)
        return fail(c, "not JSON: %s", d->error ? d->error : "parse error");
    const doc_node_t *root = d->root;
    if (root->type != DOC_MAP)
        return fail(c, "a watch event must be a JSON object, got %s", doc_type_name(root->type));
    const char *type = doc_str(doc_map_get(root, "type"));
    const doc_node_t *obj = doc_map_get(root, "object");
    if (type == NULL)
        return fail(c, "the event has no \"type\"");
    if (obj == NULL || obj->type != DOC_MAP)
        return fail(c, "the %s event has no \"object\"", type);
    if (strcmp(type, "ADDED") == 0)
        ev->type = INFORMER_ADDED;
    else if (strcmp(type, "MODIFIED") == 0)
        ev->type = INFORMER_MODIFIED;
    else if (strcmp(type, "DELETED") == 0)
        ev->type = INFORMER_DELETED;
    else if (strcmp(type, "BOOKMARK") == 0)
        ev->type = INFORMER_BOOKMARK;
    else if (strcmp(type, "ERROR") == 0)
        ev->type = INFORMER_ERROR;
    else
        return fail(c, "unknown event type \"%.64s\"", type);

    if (ev->type == INFORMER_ERROR) {
        /* The object is a Status: {"code": 410, "reason": "Expired", "message": ...} */
        const doc_node_t *code = doc_map_get(obj, "code");
        const char *msg = doc_str(doc_map_get(obj, "message"));
        const char *reason = doc_str(doc_map_get(obj, "reason"));
        ev->code = code && code->type == DOC_INT && code->v.i > 0 && code->v.i < 1000 ? (int)code->v.i : 0;
        ev->error = mesh_xstrdup(msg ? msg : reason ? reason : "error event without a message");
        return 0;
    }
    informer_object_id(obj, ev->ns, sizeof(ev->ns), ev->name, sizeof(ev->name), ev->resource_version,
                       sizeof(ev->resource_version));
    if (ev->resource_version[0] == '\0')
        return fail(c, "the %s event's object has no metadata.resourceVersion", type);
    if (ev->type == INFORMER_BOOKMARK)
        return 0;
    if (ev->name[0] == '\0')
        return fail(c, "the %s event's object has no metadata.name", type);
    if (ev->type == INFORMER_DELETED)
        return 0;
    ev->obj = informer_decode_object(obj, d->arena, c->kind, c->api_version, c->keep, &ev->filtered,
                                     &ev->error);
    return 0;
}

int informer_decode_event(const char *line, size_t len, cfg_kind_t kind, const char *api_version,
                          informer_filter_fn keep, informer_event_t *ev, char *err, size_t errlen)
{
    memset(ev, 0, sizeof(*ev));
    err[0] = '\0';
    if (cfg_kind_info(kind) == NULL) {
        snprintf(err, errlen, "unknown kind");
        return -1;
    }
    struct line_ctx c = {kind, api_version ? api_version : "", keep, ev, err, errlen, 0, 0};
    doc_parse(line, len, DOC_FMT_JSON, on_line_doc, &c);
    if (c.rc == 0 && c.docs == 0) {
        snprintf(err, errlen, "empty line");
        c.rc = -1;
    }
    if (c.rc != 0) {
        informer_event_clear(ev);
        return -1;
    }
    return 0;
}

void informer_event_clear(informer_event_t *ev)
{
    cfg_object_unref(ev->obj);
    free(ev->error);
    memset(ev, 0, sizeof(*ev));
}
