/*
 * The loader: documents (YAML or JSON) into validated, immutable objects.
 * One arena per object; a rejected document never stops the others.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "config_internal.h"

#define MAX_FILE_SIZE (256u * 1024u * 1024u)

cfg_object_t *cfg_object_ref(cfg_object_t *o)
{
    if (o != NULL)
        atomic_fetch_add_explicit(&o->_refs, 1, memory_order_relaxed);
    return o;
}

void cfg_object_unref(cfg_object_t *o)
{
    if (o == NULL)
        return;
    if (atomic_fetch_sub_explicit(&o->_refs, 1, memory_order_acq_rel) == 1)
        arena_free(o->_arena); /* the object lives in its own arena */
}

size_t cfg_object_footprint(const cfg_object_t *o)
{
    return arena_footprint(o->_arena);
}

static void copy_id(char *dst, size_t size, const char *src)
{
    snprintf(dst, size, "%s", src ? src : "");
}

/* Splits "group/version" (or "version" for the core group). */
static void split_api_version(const char *av, char *group, size_t gsize, const char **version)
{
    const char *slash = strrchr(av, '/');
    if (slash == NULL) {
        group[0] = '\0';
        *version = av;
        return;
    }
    size_t n = (size_t)(slash - av);
    if (n >= gsize)
        n = gsize - 1;
    memcpy(group, av, n);
    group[n] = '\0';
    *version = slash + 1;
}

static bool version_served(const cfg_kind_info_t *ki, const char *version)
{
    for (const char *const *v = ki->versions; *v; v++)
        if (strcmp(*v, version) == 0)
            return true;
    return false;
}

static void check_metadata(cfg_vctx_t *v, const cfg_kind_info_t *ki, const cfg_ObjectMeta *m)
{
    size_t mark = cfg_vpush(v, ".metadata");
    if (m->name == NULL || m->name[0] == '\0') {
        if (m->generateName == NULL)
            cfg_verr(v, "name", "required field is missing");
    } else if (!cfg_is_dns1123_subdomain(m->name)) {
        cfg_verr(v, "name",
                 "\"%s\" is not a valid name: lowercase letters, digits, '-' and '.', starting "
                 "and ending with a letter or digit, at most 253 characters",
                 m->name);
    }
    if (m->namespace != NULL && ki->namespaced && !cfg_is_dns1123_label(m->namespace))
        cfg_verr(v, "namespace",
                 "\"%s\" is not a valid namespace: lowercase letters, digits and '-', at most 63 "
                 "characters",
                 m->namespace);
    cfg_check_labels(v, "labels", &m->labels);
    cfg_vpop(v, mark);
}

cfg_object_t *cfg_object_decode(const doc_node_t *root, uint32_t line, const cfg_load_opts_t *o,
                                cfg_diag_t *diag)
{
    cfg_object_t *obj = NULL;
    arena_t *a = NULL;
    cfg_vctx_t v = {.diag = diag, .line = line};

    if (root->type != DOC_MAP) {
        cfg_diag_error(diag, "a document must be an object with apiVersion and kind, got %s",
                       doc_type_name(root->type));
        return NULL;
    }
    const char *av = doc_str(doc_map_get(root, "apiVersion"));
    const char *kind = doc_str(doc_map_get(root, "kind"));
    const doc_node_t *meta = doc_map_get(root, "metadata");
    if (meta != NULL && meta->type == DOC_MAP) {
        copy_id(diag->name, sizeof(diag->name), doc_str(doc_map_get(meta, "name")));
        const char *ns = doc_str(doc_map_get(meta, "namespace"));
        copy_id(diag->namespace, sizeof(diag->namespace), ns);
    }
    if (kind != NULL)
        copy_id(diag->kind_name, sizeof(diag->kind_name), kind);
    if (av == NULL || kind == NULL) {
        cfg_diag_error(diag, "%s is missing or not a string",
                       av == NULL && kind == NULL ? "apiVersion and kind"
                       : av == NULL               ? "apiVersion"
                                                  : "kind");
        return NULL;
    }
    char group[256];
    const char *version;
    split_api_version(av, group, sizeof(group), &version);
    cfg_kind_t k = cfg_kind_find(group, kind);
    if (k == CFG_KIND_NONE) {
        cfg_kind_t by_name = cfg_kind_by_name(kind);
        size_t gl = strlen(group);
        bool istio_group = gl > 9 && strcmp(group + gl - 9, ".istio.io") == 0;
        if (by_name != CFG_KIND_NONE && cfg_kind_info(by_name)->mesh && istio_group) {
            cfg_diag_error(diag, "apiVersion \"%s\" is not an API group of %s (use %s/%s)", av, kind,
                           cfg_kind_info(by_name)->group, cfg_kind_info(by_name)->storage_version);
            return NULL;
        }
        cfg_diag_warn(diag, "%s (%s) is not a kind meshd reads; skipped", kind, av);
        return NULL;
    }
    const cfg_kind_info_t *ki = cfg_kind_info(k);
    diag->kind = k;
    if (ki->namespaced && diag->namespace[0] == '\0')
        copy_id(diag->namespace, sizeof(diag->namespace),
                o && o->default_namespace ? o->default_namespace : "default");
    if (!ki->namespaced)
        diag->namespace[0] = '\0';
    if (!version_served(ki, version)) {
        char list[128];
        size_t n = 0;
        for (const char *const *vv = ki->versions; *vv && n < sizeof(list); vv++)
            n += (size_t)snprintf(list + n, sizeof(list) - n, "%s%s", vv == ki->versions ? "" : ", ",
                                  *vv);
        cfg_diag_error(diag, "apiVersion \"%s\": version \"%s\" of %s is not served (served: %s)",
                       av, version, kind, list);
        return NULL;
    }

    a = arena_new(4096); /* scratch: the result is compacted into its own arena */
    obj = arena_alloc(a, sizeof(*obj));
    obj->_arena = a;
    atomic_init(&obj->_refs, 1);
    obj->kind = k;
    obj->api_version = arena_strdup(a, av);
    obj->line = line;
    obj->file = o && o->file ? arena_strdup(a, o->file) : NULL;
    v.obj = obj;

    cfg_ObjectMeta *m = arena_alloc(a, sizeof(*m));
    int bad = 0;
    if (meta == NULL || meta->type == DOC_NULL) {
        cfg_verr(&v, "metadata", "required field is missing");
        bad = 1;
    } else {
        size_t mark = cfg_vpush(&v, "metadata");
        bad |= cfg_decode_message(&v, a, &cfg_ObjectMeta_desc, meta, m) != 0;
        cfg_vpop(&v, mark);
    }
    obj->meta = m;
    obj->name = m->name ? m->name : "";
    if (ki->namespaced)
        obj->namespace = m->namespace ? m->namespace
                                      : arena_strdup(a, o && o->default_namespace
                                                            ? o->default_namespace
                                                            : "default");
    else
        obj->namespace = "";

    /* The body: every top-level field except apiVersion, kind and metadata. */
    doc_pair_t *pairs = arena_alloc(a, (root->v.map.n ? root->v.map.n : 1) * sizeof(*pairs));
    doc_node_t body_node = {.type = DOC_MAP, .line = root->line};
    body_node.v.map.pairs = pairs;
    for (uint32_t i = 0; i < root->v.map.n; i++) {
        const doc_pair_t *p = &root->v.map.pairs[i];
        if ((p->key_len == 10 && memcmp(p->key, "apiVersion", 10) == 0) ||
            (p->key_len == 4 && memcmp(p->key, "kind", 4) == 0) ||
            (p->key_len == 8 && memcmp(p->key, "metadata", 8) == 0))
            continue;
        pairs[body_node.v.map.n++] = *p;
    }
    void *body = arena_alloc(a, ki->body->size);
    bad |= cfg_decode_message(&v, a, ki->body, &body_node, body) != 0;
    obj->body = body;
    if (!bad) {
        uint32_t before = diag->nerrors;
        check_metadata(&v, ki, m);
        ki->validate(&v, body);
        bad = diag->nerrors != before || diag->truncated;
    }
    if (bad) {
        cfg_object_unref(obj);
        return NULL;
    }
    cfg_object_t *compact = cfg_object_compact(obj);
    cfg_object_unref(obj);
    return compact;
}

struct load_ctx {
    const cfg_load_opts_t *opts;
    cfg_result_cb cb;
    void *ud;
    int failed;
};

static void deliver(struct load_ctx *c, const doc_node_t *root, uint32_t line)
{
    cfg_diag_t diag;
    cfg_diag_init(&diag, c->opts ? c->opts->file : NULL, line);
    cfg_object_t *obj = cfg_object_decode(root, line, c->opts, &diag);
    if (obj == NULL && diag.nerrors > 0)
        c->failed++;
    c->cb(c->ud, obj, &diag);
    cfg_diag_clear(&diag);
}

static int on_doc(void *ud, const doc_t *d)
{
    struct load_ctx *c = ud;
    if (d->root == NULL) {
        cfg_diag_t diag;
        cfg_diag_init(&diag, c->opts ? c->opts->file : NULL, d->error_line);
        const char *why = d->error, *colon = strstr(why, ": ");
        if (strncmp(why, "line ", 5) == 0 && colon != NULL)
            why = colon + 2; /* the prefix already names file and line */
        cfg_diag_error(&diag, "cannot parse document: %s", why);
        c->failed++;
        c->cb(c->ud, NULL, &diag);
        cfg_diag_clear(&diag);
        return 0;
    }
    /* kubectl's "kind: List" (and v1 lists such as ConfigMapList) carry items. */
    const char *kind = doc_str(doc_map_get(d->root, "kind"));
    const doc_node_t *items = doc_map_get(d->root, "items");
    size_t kl = kind ? strlen(kind) : 0;
    if (kind && items && items->type == DOC_SEQ && kl >= 4 && strcmp(kind + kl - 4, "List") == 0) {
        for (uint32_t i = 0; i < items->v.seq.n; i++)
            deliver(c, items->v.seq.items[i], items->v.seq.items[i]->line ? items->v.seq.items[i]->line : d->line);
        return 0;
    }
    if (d->root->type == DOC_NULL)
        return 0; /* an empty document ("---" followed by comments only) */
    deliver(c, d->root, d->line);
    return 0;
}

int cfg_load_buffer(const char *buf, size_t len, doc_format_t fmt, const cfg_load_opts_t *o,
                    cfg_result_cb cb, void *ud)
{
    struct load_ctx c = {.opts = o, .cb = cb, .ud = ud};
    doc_parse(buf, len, fmt, on_doc, &c);
    return c.failed;
}

int cfg_load_file(const char *path, const cfg_load_opts_t *o, cfg_result_cb cb, void *ud)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return -1;
    char *buf = NULL;
    int rc = -1;
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode) || (uint64_t)st.st_size > MAX_FILE_SIZE)
        goto out;
    size_t size = (size_t)st.st_size;
    buf = mesh_xmalloc(size + 1);
    if (size > 0 && fread(buf, 1, size, f) != size)
        goto out;
    buf[size] = '\0';
    cfg_load_opts_t opts = o ? *o : (cfg_load_opts_t){0};
    if (opts.file == NULL)
        opts.file = path;
    size_t pl = strlen(path);
    doc_format_t fmt = pl > 5 && strcmp(path + pl - 5, ".json") == 0 ? DOC_FMT_JSON : DOC_FMT_YAML;
    rc = cfg_load_buffer(buf, size, fmt, &opts, cb, ud);
out:
    free(buf);
    fclose(f);
    return rc;
}
