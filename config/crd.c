/*
 * crd: the CustomResourceDefinitions of the mesh kinds, generated from the
 * field descriptors (config/schema.c) and the kinds table (config/kinds.c).
 *
 * The YAML is written by hand, one line at a time, so that the output is
 * byte-for-byte deterministic: properties in alphabetical order, fixed key
 * order inside each schema node, and every scalar that YAML could read as
 * anything but a string put in double quotes.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define CRD_MAX_DEPTH 32
#define CRD_UINT32_MAX "4294967295"

/* ---- YAML output ---- */

typedef struct crd_writer {
    FILE *f;
    bool dash; /* a "- " was written and the next line start reuses it */
} crd_writer_t;

/* Words that YAML 1.1 (as kubectl reads it) resolves to booleans or null. */
static const char *const crd_reserved_words[] = {
    "y", "yes", "n", "no", "true", "false", "on", "off", "null", NULL,
};

static bool crd_is_reserved(const char *s)
{
    for (const char *const *w = crd_reserved_words; *w != NULL; w++)
        if (strcasecmp(s, *w) == 0)
            return true;
    return false;
}

/* A string may be written plain when it starts with a letter, uses only
 * characters that carry no meaning in a block-context plain scalar, does not
 * end in a space and is not a reserved word. Everything else is quoted. */
static bool crd_plain_ok(const char *s)
{
    if (!((s[0] >= 'a' && s[0] <= 'z') || (s[0] >= 'A' && s[0] <= 'Z')))
        return false;
    size_t len = strlen(s);
    if (s[len - 1] == ' ')
        return false;
    for (const char *p = s; *p != '\0'; p++) {
        char c = *p;
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  strchr(" _.,;/()-+=<>*", c) != NULL;
        if (!ok)
            return false;
        if (c == ' ' && p[1] == ' ')
            return false;
    }
    return !crd_is_reserved(s);
}

static void crd_put_str(FILE *f, const char *s)
{
    if (crd_plain_ok(s)) {
        fputs(s, f);
        return;
    }
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++) {
        switch (*p) {
        case '"':
            fputs("\\\"", f);
            break;
        case '\\':
            fputs("\\\\", f);
            break;
        case '\n':
            fputs("\\n", f);
            break;
        case '\t':
            fputs("\\t", f);
            break;
        case '\r':
            fputs("\\r", f);
            break;
        default:
            if (*p < 0x20 || *p == 0x7f)
                fprintf(f, "\\x%02x", *p);
            else
                fputc(*p, f);
        }
    }
    fputc('"', f);
}

static void crd_line_start(crd_writer_t *w, int ind)
{
    if (w->dash) {
        w->dash = false;
        return;
    }
    fprintf(w->f, "%*s", ind, "");
}

/* "key:" at indent ind; the caller ends the line. */
static void crd_key(crd_writer_t *w, int ind, const char *key)
{
    crd_line_start(w, ind);
    crd_put_str(w->f, key);
    fputc(':', w->f);
}

/* "key:" followed by a nested block on the next lines. */
static void crd_open(crd_writer_t *w, int ind, const char *key)
{
    crd_key(w, ind, key);
    fputc('\n', w->f);
}

static void crd_str(crd_writer_t *w, int ind, const char *key, const char *val)
{
    crd_key(w, ind, key);
    fputc(' ', w->f);
    crd_put_str(w->f, val);
    fputc('\n', w->f);
}

/* A value written verbatim (numbers, booleans, "{}"). */
static void crd_raw(crd_writer_t *w, int ind, const char *key, const char *val)
{
    crd_key(w, ind, key);
    fprintf(w->f, " %s\n", val);
}

/* Starts a sequence item whose content is a mapping at indent ind + 2. */
static void crd_item(crd_writer_t *w, int ind)
{
    crd_line_start(w, ind);
    fputs("- ", w->f);
    w->dash = true;
}

static void crd_item_str(crd_writer_t *w, int ind, const char *val)
{
    crd_line_start(w, ind);
    fputs("- ", w->f);
    crd_put_str(w->f, val);
    fputc('\n', w->f);
}

/* ---- schema from descriptors ---- */

typedef struct crd_ctx {
    crd_writer_t *w;
    const cfg_desc_t *stack[CRD_MAX_DEPTH];
    int depth;
    int err;
} crd_ctx_t;

static int crd_cmp_fields(const void *a, const void *b)
{
    const cfg_field_t *fa = *(const cfg_field_t *const *)a;
    const cfg_field_t *fb = *(const cfg_field_t *const *)b;
    return strcmp(fa->name, fb->name);
}

/* The fields of d in alphabetical order; returns their number. */
static uint32_t crd_sorted_fields(const cfg_desc_t *d, const cfg_field_t **out)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < d->nfields; i++)
        out[n++] = &d->fields[i];
    qsort(out, n, sizeof(*out), crd_cmp_fields);
    return n;
}

static void crd_description(crd_writer_t *w, int ind, const char *doc, unsigned flags)
{
    if (doc == NULL || doc[0] == '\0') {
        if (flags & CFG_DEPRECATED)
            crd_str(w, ind, "description", "Deprecated.");
        return;
    }
    if (flags & CFG_DEPRECATED) {
        size_t len = strlen(doc);
        char *buf = mesh_xmalloc(len + sizeof(" Deprecated."));
        memcpy(buf, doc, len);
        memcpy(buf + len, " Deprecated.", sizeof(" Deprecated."));
        crd_str(w, ind, "description", buf);
        free(buf);
        return;
    }
    crd_str(w, ind, "description", doc);
}

static void crd_uint32_bounds(crd_writer_t *w, int ind)
{
    crd_raw(w, ind, "format", "int64");
    crd_raw(w, ind, "maximum", CRD_UINT32_MAX);
    crd_raw(w, ind, "minimum", "0");
}

/* The oneOf constraint of one group: none of the fields, or exactly one. */
static void crd_oneof_group(crd_writer_t *w, int ind, const cfg_field_t *const *fields, uint32_t n,
                            unsigned group)
{
    crd_open(w, ind, "oneOf");
    crd_item(w, ind);
    crd_open(w, ind + 2, "not");
    crd_open(w, ind + 4, "anyOf");
    for (uint32_t i = 0; i < n; i++) {
        if (CFG_ONEOF_GROUP(fields[i]->flags) != group)
            continue;
        crd_item(w, ind + 4);
        crd_open(w, ind + 6, "required");
        crd_item_str(w, ind + 6, fields[i]->name);
    }
    for (uint32_t i = 0; i < n; i++) {
        if (CFG_ONEOF_GROUP(fields[i]->flags) != group)
            continue;
        crd_item(w, ind);
        crd_open(w, ind + 2, "required");
        crd_item_str(w, ind + 2, fields[i]->name);
    }
}

static void crd_field_schema(crd_ctx_t *c, int ind, const cfg_field_t *fd, bool with_doc);

/* The schema node of a message: an object with its properties, the required
 * fields and one oneOf per group of mutually exclusive fields (allOf when a
 * message has several groups). */
static void crd_message_schema(crd_ctx_t *c, int ind, const cfg_desc_t *d)
{
    crd_writer_t *w = c->w;
    for (int i = 0; i < c->depth; i++) {
        if (c->stack[i] == d) {
            fprintf(stderr,
                    "crd: message %s contains itself; a structural schema cannot describe "
                    "recursion\n",
                    d->name);
            c->err = -1;
            crd_raw(w, ind, "type", "object");
            return;
        }
    }
    if (c->depth == CRD_MAX_DEPTH) {
        fprintf(stderr, "crd: message %s is nested more than %d levels deep\n", d->name,
                CRD_MAX_DEPTH);
        c->err = -1;
        crd_raw(w, ind, "type", "object");
        return;
    }
    c->stack[c->depth++] = d;

    const cfg_field_t *fields[64];
    uint32_t n = crd_sorted_fields(d, fields);

    /* oneOf groups with at least two members */
    unsigned groups[16];
    unsigned ngroups = 0;
    for (unsigned g = 1; g < 16; g++) {
        unsigned members = 0;
        for (uint32_t i = 0; i < n; i++)
            if (CFG_ONEOF_GROUP(fields[i]->flags) == g)
                members++;
        if (members >= 2)
            groups[ngroups++] = g;
    }
    if (ngroups == 1) {
        crd_oneof_group(w, ind, fields, n, groups[0]);
    } else if (ngroups > 1) {
        crd_open(w, ind, "allOf");
        for (unsigned k = 0; k < ngroups; k++) {
            crd_item(w, ind);
            crd_oneof_group(w, ind + 2, fields, n, groups[k]);
        }
    }

    if (n > 0) {
        crd_open(w, ind, "properties");
        for (uint32_t i = 0; i < n; i++) {
            crd_open(w, ind + 2, fields[i]->name);
            crd_field_schema(c, ind + 4, fields[i], true);
        }
    }
    bool any_required = false;
    for (uint32_t i = 0; i < n; i++) {
        if (!(fields[i]->flags & CFG_REQ))
            continue;
        if (!any_required)
            crd_open(w, ind, "required");
        any_required = true;
        crd_item_str(w, ind, fields[i]->name);
    }
    crd_raw(w, ind, "type", "object");
    if (d->flags & CFG_LENIENT)
        crd_raw(w, ind, "x-kubernetes-preserve-unknown-fields", "true");
    c->depth--;
}

/* The schema node of one field (with_doc: include its description; list
 * items and map values carry none of their own). */
static void crd_field_schema(crd_ctx_t *c, int ind, const cfg_field_t *fd, bool with_doc)
{
    crd_writer_t *w = c->w;
    if (with_doc)
        crd_description(w, ind, fd->doc, fd->flags);
    switch ((cfg_field_kind_t)fd->kind) {
    case CFG_K_STR:
        if (fd->flags & CFG_NOEMPTY)
            crd_raw(w, ind, "minLength", "1");
        crd_raw(w, ind, "type", "string");
        break;
    case CFG_K_BOOL:
        crd_raw(w, ind, "type", "boolean");
        break;
    case CFG_K_I32:
        crd_raw(w, ind, "format", "int32");
        crd_raw(w, ind, "type", "integer");
        break;
    case CFG_K_U32:
        crd_uint32_bounds(w, ind);
        crd_raw(w, ind, "type", "integer");
        break;
    case CFG_K_I64:
        crd_raw(w, ind, "format", "int64");
        crd_raw(w, ind, "type", "integer");
        break;
    case CFG_K_DBL:
        crd_raw(w, ind, "format", "double");
        crd_raw(w, ind, "type", "number");
        break;
    case CFG_K_DUR:
        crd_raw(w, ind, "type", "string");
        break;
    case CFG_K_ENUM:
        crd_open(w, ind, "enum");
        for (uint32_t i = 0; i < fd->enm->count; i++)
            crd_item_str(w, ind, fd->enm->values[i]);
        crd_raw(w, ind, "type", "string");
        break;
    case CFG_K_MSG:
        crd_message_schema(c, ind, fd->msg);
        break;
    case CFG_K_RAW:
        /* free-form: any JSON value, kept as written */
        crd_raw(w, ind, "x-kubernetes-preserve-unknown-fields", "true");
        break;
    case CFG_K_STRS:
        crd_open(w, ind, "items");
        if (fd->flags & CFG_NOEMPTY)
            crd_raw(w, ind + 2, "minLength", "1");
        crd_raw(w, ind + 2, "type", "string");
        crd_raw(w, ind, "type", "array");
        break;
    case CFG_K_U32S:
        crd_open(w, ind, "items");
        crd_uint32_bounds(w, ind + 2);
        crd_raw(w, ind + 2, "type", "integer");
        crd_raw(w, ind, "type", "array");
        break;
    case CFG_K_MSGS:
        crd_open(w, ind, "items");
        crd_message_schema(c, ind + 2, fd->msg);
        crd_raw(w, ind, "type", "array");
        break;
    case CFG_K_STRMAP:
        crd_open(w, ind, "additionalProperties");
        crd_raw(w, ind + 2, "type", "string");
        crd_raw(w, ind, "type", "object");
        break;
    case CFG_K_U32MAP:
        crd_open(w, ind, "additionalProperties");
        crd_uint32_bounds(w, ind + 2);
        crd_raw(w, ind + 2, "type", "integer");
        crd_raw(w, ind, "type", "object");
        break;
    case CFG_K_MSGMAP:
        crd_open(w, ind, "additionalProperties");
        crd_message_schema(c, ind + 2, fd->msg);
        crd_raw(w, ind, "type", "object");
        break;
    case CFG_K_INTSTR:
        crd_open(w, ind, "anyOf");
        crd_item(w, ind);
        crd_raw(w, ind + 2, "type", "integer");
        crd_item(w, ind);
        crd_raw(w, ind + 2, "type", "string");
        crd_raw(w, ind, "x-kubernetes-int-or-string", "true");
        break;
    default:
        fprintf(stderr, "crd: field %s has an unknown kind %u\n", fd->name, fd->kind);
        c->err = -1;
        break;
    }
}

/* The whole openAPIV3Schema of a kind. */
static void crd_root_schema(crd_ctx_t *c, int ind, const cfg_kind_info_t *info)
{
    crd_writer_t *w = c->w;
    const cfg_desc_t *body = info->body;
    if (info->doc != NULL && info->doc[0] != '\0')
        crd_str(w, ind, "description", info->doc);
    crd_open(w, ind, "properties");
    crd_open(w, ind + 2, "apiVersion");
    crd_str(w, ind + 4, "description", "Versioned schema of this representation of an object.");
    crd_raw(w, ind + 4, "type", "string");
    crd_open(w, ind + 2, "kind");
    crd_str(w, ind + 4, "description", "Kind of the object.");
    crd_raw(w, ind + 4, "type", "string");
    crd_open(w, ind + 2, "metadata");
    crd_raw(w, ind + 4, "type", "object");

    const cfg_field_t *fields[64];
    uint32_t n = crd_sorted_fields(body, fields);
    const cfg_field_t *status = NULL;
    for (uint32_t i = 0; i < n; i++) {
        if (strcmp(fields[i]->name, "status") == 0) {
            status = fields[i];
            continue;
        }
        crd_open(w, ind + 2, fields[i]->name);
        crd_field_schema(c, ind + 4, fields[i], true);
    }
    /* status belongs to the controllers that write it: free-form */
    crd_open(w, ind + 2, "status");
    if (status != NULL && status->doc != NULL && status->doc[0] != '\0')
        crd_str(w, ind + 4, "description", status->doc);
    crd_raw(w, ind + 4, "type", "object");
    crd_raw(w, ind + 4, "x-kubernetes-preserve-unknown-fields", "true");

    bool any_required = false;
    for (uint32_t i = 0; i < n; i++) {
        if (!(fields[i]->flags & CFG_REQ) || fields[i] == status)
            continue;
        if (!any_required)
            crd_open(w, ind, "required");
        any_required = true;
        crd_item_str(w, ind, fields[i]->name);
    }
    crd_raw(w, ind, "type", "object");
}

/* ---- printer columns ---- */

/* Columns `kubectl get` shows besides the name, as Istio's CRDs have them.
 * A column is written only when its path exists in the model. */
static const struct {
    const char *kind;
    const char *name;
    const char *path;
} crd_columns[] = {
    {"VirtualService", "Gateways", ".spec.gateways"},
    {"VirtualService", "Hosts", ".spec.hosts"},
    {"DestinationRule", "Host", ".spec.host"},
    {"ServiceEntry", "Hosts", ".spec.hosts"},
    {"ServiceEntry", "Location", ".spec.location"},
    {"ServiceEntry", "Resolution", ".spec.resolution"},
    {"AuthorizationPolicy", "Action", ".spec.action"},
    {"PeerAuthentication", "Mode", ".spec.mtls.mode"},
};

/* The field at a ".a.b.c" path below the body, following MSG fields. */
static const cfg_field_t *crd_resolve(const cfg_desc_t *d, const char *path)
{
    const cfg_field_t *found = NULL;
    while (*path == '.' && d != NULL) {
        path++;
        size_t len = strcspn(path, ".");
        found = NULL;
        for (uint32_t i = 0; i < d->nfields; i++) {
            if (strlen(d->fields[i].name) == len && memcmp(d->fields[i].name, path, len) == 0) {
                found = &d->fields[i];
                break;
            }
        }
        if (found == NULL)
            return NULL;
        path += len;
        d = found->kind == CFG_K_MSG ? found->msg : NULL;
    }
    return *path == '\0' ? found : NULL;
}

static const char *crd_column_type(const cfg_field_t *fd)
{
    switch ((cfg_field_kind_t)fd->kind) {
    case CFG_K_STR:
    case CFG_K_ENUM:
    case CFG_K_DUR:
    case CFG_K_STRS:
        return "string";
    case CFG_K_BOOL:
        return "boolean";
    case CFG_K_I32:
    case CFG_K_U32:
    case CFG_K_I64:
        return "integer";
    case CFG_K_DBL:
        return "number";
    default:
        return NULL;
    }
}

static void crd_printer_columns(crd_writer_t *w, int ind, const cfg_kind_info_t *info)
{
    bool any = false;
    for (size_t i = 0; i < sizeof(crd_columns) / sizeof(crd_columns[0]); i++) {
        if (strcmp(crd_columns[i].kind, info->name) != 0)
            continue;
        const cfg_field_t *fd = crd_resolve(info->body, crd_columns[i].path);
        const char *type = fd != NULL ? crd_column_type(fd) : NULL;
        if (type == NULL)
            continue;
        if (!any)
            crd_open(w, ind, "additionalPrinterColumns");
        any = true;
        crd_item(w, ind);
        if (fd->doc != NULL && fd->doc[0] != '\0')
            crd_str(w, ind + 2, "description", fd->doc);
        crd_str(w, ind + 2, "jsonPath", crd_columns[i].path);
        crd_str(w, ind + 2, "name", crd_columns[i].name);
        crd_str(w, ind + 2, "type", type);
    }
    if (!any)
        return; /* kubectl shows Name and Age by default */
    crd_item(w, ind);
    crd_str(w, ind + 2, "description", "Time since the object was created.");
    crd_str(w, ind + 2, "jsonPath", ".metadata.creationTimestamp");
    crd_str(w, ind + 2, "name", "Age");
    crd_str(w, ind + 2, "type", "date");
}

/* ---- the CRD ---- */

int cfg_crd_write(FILE *out, cfg_kind_t kind)
{
    const cfg_kind_info_t *info = cfg_kind_info(kind);
    if (info == NULL || !info->mesh || info->body == NULL || info->versions == NULL)
        return -1;
    crd_writer_t w = {out, false};
    crd_ctx_t c = {.w = &w};

    char lower[128];
    size_t len = strlen(info->name);
    if (len >= sizeof(lower))
        return -1;
    for (size_t i = 0; i <= len; i++) {
        char ch = info->name[i];
        lower[i] = (ch >= 'A' && ch <= 'Z') ? (char)(ch - 'A' + 'a') : ch;
    }
    /* category of the group: "networking.istio.io" -> "networking-istio-io" */
    char category[256];
    size_t glen = strlen(info->group);
    if (glen >= sizeof(category))
        return -1;
    for (size_t i = 0; i <= glen; i++)
        category[i] = info->group[i] == '.' ? '-' : info->group[i];
    char buf[512];

    fputs("# Generated by `meshctl crds` from the config model (config/*.def): do not edit.\n"
          "# Regenerate with: make crds\n",
          out);
    crd_str(&w, 0, "apiVersion", "apiextensions.k8s.io/v1");
    crd_str(&w, 0, "kind", "CustomResourceDefinition");
    crd_open(&w, 0, "metadata");
    crd_open(&w, 2, "labels");
    crd_str(&w, 4, "app.kubernetes.io/part-of", "meshd");
    snprintf(buf, sizeof(buf), "%s.%s", info->plural, info->group);
    crd_str(&w, 2, "name", buf);
    crd_open(&w, 0, "spec");
    crd_str(&w, 2, "group", info->group);
    crd_open(&w, 2, "names");
    crd_open(&w, 4, "categories");
    crd_item_str(&w, 4, "istio-io");
    crd_item_str(&w, 4, category);
    crd_str(&w, 4, "kind", info->name);
    snprintf(buf, sizeof(buf), "%sList", info->name);
    crd_str(&w, 4, "listKind", buf);
    crd_str(&w, 4, "plural", info->plural);
    if (info->short_names != NULL && info->short_names[0] != NULL) {
        crd_open(&w, 4, "shortNames");
        for (const char *const *s = info->short_names; *s != NULL; s++)
            crd_item_str(&w, 4, *s);
    }
    crd_str(&w, 4, "singular", lower);
    crd_str(&w, 2, "scope", info->namespaced ? "Namespaced" : "Cluster");
    crd_open(&w, 2, "versions");
    for (const char *const *v = info->versions; *v != NULL; v++) {
        crd_item(&w, 2);
        crd_printer_columns(&w, 4, info);
        crd_str(&w, 4, "name", *v);
        crd_open(&w, 4, "schema");
        crd_open(&w, 6, "openAPIV3Schema");
        crd_root_schema(&c, 8, info);
        crd_raw(&w, 4, "served", "true");
        crd_raw(&w, 4, "storage",
                info->storage_version != NULL && strcmp(*v, info->storage_version) == 0 ? "true"
                                                                                        : "false");
        crd_open(&w, 4, "subresources");
        crd_raw(&w, 6, "status", "{}");
    }
    if (c.err != 0 || ferror(out))
        return -1;
    return 0;
}
