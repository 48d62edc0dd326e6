/*
 * Resource bundles: the xDS resources the proxy holds, decoded, by type;
 * loaded from a static config file (--config-file) in proto3 JSON.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/doc.h"
#include "config_internal.h"
#include "envoy/extensions/transport_sockets/tls/v3/secret.pb-c.h"
#include "tls_internal.h"
#include "envoy/config/cluster/v3/cluster.pb-c.h"
#include "envoy/config/endpoint/v3/endpoint.pb-c.h"
#include "envoy/config/listener/v3/listener.pb-c.h"
#include "envoy/config/route/v3/route.pb-c.h"

static const ProtobufCMessageDescriptor *const res_desc[PX_RES_NTYPES] = {
    [PX_RES_LISTENER] = &envoy__config__listener__v3__listener__descriptor,
    [PX_RES_ROUTE] = &envoy__config__route__v3__route_configuration__descriptor,
    [PX_RES_CLUSTER] = &envoy__config__cluster__v3__cluster__descriptor,
    [PX_RES_ENDPOINT] = &envoy__config__endpoint__v3__cluster_load_assignment__descriptor,
    [PX_RES_SECRET] = &envoy__extensions__transport_sockets__tls__v3__secret__descriptor,
};

int px_bundle_add(px_bundle_t *b, int t, ProtobufCMessage *m)
{
    if (t < 0 || t >= PX_RES_NTYPES)
        return -1;
    if (b->n[t] == b->cap[t]) {
        size_t cap = b->cap[t] ? b->cap[t] * 2 : 8;
        ProtobufCMessage **n = realloc(b->msgs[t], cap * sizeof(*n));
        if (n == NULL)
            return -1;
        b->msgs[t] = n;
        b->cap[t] = cap;
    }
    b->msgs[t][b->n[t]++] = m;
    return 0;
}

static int load_response(px_bundle_t *b, json_object *resp, size_t ri, char *err, size_t errlen)
{
    json_object *res;
    if (!json_object_is_type(resp, json_type_object) ||
        !json_object_object_get_ex(resp, "resources", &res) ||
        !json_object_is_type(res, json_type_array)) {
        snprintf(err, errlen, "document %zu: needs \"resources\": [...]", ri);
        return -1;
    }
    for (size_t i = 0; i < json_object_array_length(res); i++) {
        json_object *r = json_object_array_get_idx(res, i), *t;
        if (!json_object_is_type(r, json_type_object) || !json_object_object_get_ex(r, "@type", &t) ||
            !json_object_is_type(t, json_type_string)) {
            snprintf(err, errlen, "resources[%zu]: needs \"@type\"", i);
            return -1;
        }
        const char *url = json_object_get_string(t);
        const char *name = strrchr(url, '/') ? strrchr(url, '/') + 1 : url;
        int type = -1;
        for (int k = 0; k < PX_RES_NTYPES; k++)
            if (strcmp(res_desc[k]->name, name) == 0)
                type = k;
        if (type < 0) {
            snprintf(err, errlen, "resources[%zu]: unsupported resource type \"%s\"", i, url);
            return -1;
        }
        char why[512];
        ProtobufCMessage *m = px_pb_from_json(res_desc[type], r, why, sizeof(why));
        if (m == NULL) {
            snprintf(err, errlen, "resources[%zu] (%s): %s", i, res_desc[type]->short_name, why);
            return -1;
        }
        if (px_bundle_add(b, type, m) < 0) {
            protobuf_c_message_free_unpacked(m, NULL);
            snprintf(err, errlen, "out of memory");
            return -1;
        }
    }
    return 0;
}

/* A YAML document tree as json-c objects (NULL on out-of-memory). Aliases
 * are expanded, so each node made counts against *budget: at 0 the rest is
 * left out and the caller refuses the document (an alias bomb). */
static json_object *doc_to_json(const doc_node_t *n, int depth, size_t *budget)
{
    if (n == NULL || depth > DOC_MAX_DEPTH || *budget == 0)
        return NULL;
    --*budget;
    switch (n->type) {
    case DOC_NULL:
        return NULL;
    case DOC_BOOL:
        return json_object_new_boolean(n->v.b);
    case DOC_INT:
        return json_object_new_int64(n->v.i);
    case DOC_FLOAT:
        return json_object_new_double(n->v.f);
    case DOC_STR:
        return json_object_new_string_len(n->str, (int)n->len);
    case DOC_SEQ: {
        json_object *a = json_object_new_array();
        for (uint32_t i = 0; a && i < n->v.seq.n; i++)
            json_object_array_add(a, doc_to_json(n->v.seq.items[i], depth + 1, budget));
        return a;
    }
    case DOC_MAP: {
        json_object *o = json_object_new_object();
        for (uint32_t i = 0; o && i < n->v.map.n; i++) {
            char *k = strndup(n->v.map.pairs[i].key, n->v.map.pairs[i].key_len);
            if (k == NULL)
                continue;
            json_object_object_add(o, k, doc_to_json(n->v.map.pairs[i].value, depth + 1, budget));
            free(k);
        }
        return o;
    }
    }
    return NULL;
}

struct yaml_ctx {
    json_object *root;
    char err[256];
    int docs;
    size_t budget; /* nodes the expanded document may have */
};

static int yaml_doc(void *ud, const doc_t *d)
{
    struct yaml_ctx *c = ud;
    if (c->docs++ > 0) {
        snprintf(c->err, sizeof(c->err), "line %u: one YAML document expected", d->line);
        return 1;
    }
    if (d->root == NULL) {
        snprintf(c->err, sizeof(c->err), "invalid YAML: %s", d->error ? d->error : "unreadable");
        return 1;
    }
    size_t budget = c->budget;
    c->root = doc_to_json(d->root, 0, &c->budget);
    if (c->budget == 0) {
        snprintf(c->err, sizeof(c->err), "the YAML expands to more than %zu nodes (aliases)", budget);
        return 1;
    }
    return 0;
}

int px_bundle_load_json(px_bundle_t *b, const char *text, size_t len, char *err, size_t errlen)
{
    json_tokener *tok = json_tokener_new();
    if (tok == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    json_object *root = json_tokener_parse_ex(tok, text, (int)len);
    enum json_tokener_error je = json_tokener_get_error(tok);
    int rc = -1;
    size_t i0 = 0;
    while (i0 < len && (text[i0] == ' ' || text[i0] == '\t' || text[i0] == '\n' || text[i0] == '\r'))
        i0++;
    if ((root == NULL || je != json_tokener_success) && i0 < len && text[i0] != '{' && text[i0] != '[') {
        /* not JSON: YAML (the same structure) */
        /* as many nodes as a document of this size can hold without
         * aliases, and some room for them */
        struct yaml_ctx yc = {.budget = len + DOC_MAX_COPY};
        json_object_put(root);
        root = NULL;
        doc_parse(text, len, DOC_FMT_YAML, yaml_doc, &yc);
        if (yc.err[0] || yc.root == NULL) {
            snprintf(err, errlen, "%s", yc.err[0] ? yc.err : "empty YAML document");
            json_object_put(yc.root);
            goto out;
        }
        root = yc.root;
    } else if (root == NULL || je != json_tokener_success) {
        snprintf(err, errlen, "invalid JSON at offset %zu: %s", json_tokener_get_parse_end(tok),
                 json_tokener_error_desc(je));
        goto out;
    }
    if (json_object_is_type(root, json_type_array)) {
        for (size_t i = 0; i < json_object_array_length(root); i++)
            if (load_response(b, json_object_array_get_idx(root, i), i, err, errlen) < 0)
                goto out;
    } else if (load_response(b, root, 0, err, errlen) < 0) {
        goto out;
    }
    rc = 0;
out:
    json_object_put(root);
    json_tokener_free(tok);
    return rc;
}

void px_bundle_view(const px_bundle_t *b, px_resources_t *out)
{
    out->listeners = (const ProtobufCMessage *const *)b->msgs[PX_RES_LISTENER];
    out->nlisteners = b->n[PX_RES_LISTENER];
    out->routes = (const ProtobufCMessage *const *)b->msgs[PX_RES_ROUTE];
    out->nroutes = b->n[PX_RES_ROUTE];
    out->clusters = (const ProtobufCMessage *const *)b->msgs[PX_RES_CLUSTER];
    out->nclusters = b->n[PX_RES_CLUSTER];
    out->endpoints = (const ProtobufCMessage *const *)b->msgs[PX_RES_ENDPOINT];
    out->nendpoints = b->n[PX_RES_ENDPOINT];
}

void px_bundle_free(px_bundle_t *b)
{
    for (int t = 0; t < PX_RES_NTYPES; t++) {
        for (size_t i = 0; i < b->n[t]; i++)
            protobuf_c_message_free_unpacked(b->msgs[t][i], NULL);
        free(b->msgs[t]);
    }
    memset(b, 0, sizeof(*b));
}

/* The text of a secret's DataSource: inline, or a file (read whole). */
static char *secret_data(const Envoy__Config__Core__V3__DataSource *ds)
{
    if (ds == NULL)
        return NULL;
    switch (ds->specifier_case) {
    case ENVOY__CONFIG__CORE__V3__DATA_SOURCE__SPECIFIER_INLINE_BYTES: {
        char *p = malloc(ds->inline_bytes.len + 1);
        if (p) {
            memcpy(p, ds->inline_bytes.data, ds->inline_bytes.len);
            p[ds->inline_bytes.len] = '\0';
        }
        return p;
    }
    case ENVOY__CONFIG__CORE__V3__DATA_SOURCE__SPECIFIER_INLINE_STRING:
        return strdup(ds->inline_string ? ds->inline_string : "");
    case ENVOY__CONFIG__CORE__V3__DATA_SOURCE__SPECIFIER_FILENAME: {
        FILE *f = fopen(ds->filename, "rb");
        if (f == NULL)
            return NULL;
        char *p = malloc((1u << 20) + 1);
        size_t n = p ? fread(p, 1, 1u << 20, f) : 0;
        fclose(f);
        if (p)
            p[n] = '\0';
        return p;
    }
    default:
        return NULL;
    }
}

int px_bundle_install_secrets(const px_bundle_t *b, struct px_secrets *store, char *err, size_t errlen)
{
    for (size_t i = 0; i < b->n[PX_RES_SECRET]; i++) {
        const Envoy__Extensions__TransportSockets__Tls__V3__Secret *sec = (const void *)b->msgs[PX_RES_SECRET][i];
        const char *name = sec->name ? sec->name : "";
        char *chain = NULL, *key = NULL, *ca = NULL;
        int rc = 0;
        if (sec->type_case == ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__SECRET__TYPE_TLS_CERTIFICATE &&
            sec->tls_certificate) {
            chain = secret_data(sec->tls_certificate->certificate_chain);
            key = secret_data(sec->tls_certificate->private_key);
            if (chain == NULL || key == NULL) {
                snprintf(err, errlen, "Secret %s: tls_certificate needs certificate_chain and private_key", name);
                rc = -1;
            }
        } else if (sec->type_case == ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__SECRET__TYPE_VALIDATION_CONTEXT &&
                   sec->validation_context) {
            ca = secret_data(sec->validation_context->trusted_ca);
            if (ca == NULL) {
                snprintf(err, errlen, "Secret %s: validation_context needs trusted_ca", name);
                rc = -1;
            }
        } else {
            snprintf(err, errlen, "Secret %s: only tls_certificate and validation_context are supported", name);
            rc = -1;
        }
        if (rc == 0 && px_secrets_set(store, name, chain, key, ca) < 0) {
            snprintf(err, errlen, "Secret %s: cannot be stored", name);
            rc = -1;
        }
        free(chain);
        if (key) {
            memset(key, 0, strlen(key));
            free(key);
        }
        free(ca);
        if (rc < 0)
            return -1;
    }
    return 0;
}
