/*
 * Istio's resource names, host name resolution and the proxy description
 * read from an xDS Node.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/arena.h"
#include "envoy/config/core/v3/base.pb-c.h"
#include "google/protobuf/struct.pb-c.h"
#include "xds.h"

static const char *const type_urls[XDS_NTYPES] = {
    [XDS_LISTENER] = XDS_LISTENER_TYPE,
    [XDS_ROUTE] = XDS_ROUTE_TYPE,
    [XDS_CLUSTER] = XDS_CLUSTER_TYPE,
    [XDS_ENDPOINT] = XDS_ENDPOINT_TYPE,
    [XDS_SECRET] = XDS_SECRET_TYPE,
};

const char *xds_type_url(xds_type_t t)
{
    return (unsigned)t < XDS_NTYPES ? type_urls[t] : NULL;
}

int xds_type_from_url(const char *url)
{
    for (int i = 0; url && i < XDS_NTYPES; i++)
        if (strcmp(url, type_urls[i]) == 0)
            return i;
    return -1;
}

int xds_cluster_name(char *buf, size_t size, xds_direction_t dir, uint32_t port,
                     const char *subset, const char *host)
{
    return snprintf(buf, size, "%s|%u|%s|%s", dir == XDS_INBOUND ? "inbound" : "outbound", port,
                    subset ? subset : "", host ? host : "");
}

int xds_cluster_name_parse(char *buf, xds_direction_t *dir, uint32_t *port, const char **subset,
                           const char **host)
{
    char *f[4];
    char *p = buf;
    for (int i = 0; i < 3; i++) {
        char *bar = strchr(p, '|');
        if (bar == NULL)
            return -1;
        *bar = 0;
        f[i] = p;
        p = bar + 1;
    }
    f[3] = p;
    if (strcmp(f[0], "outbound") == 0)
        *dir = XDS_OUTBOUND;
    else if (strcmp(f[0], "inbound") == 0)
        *dir = XDS_INBOUND;
    else
        return -1;
    char *end;
    unsigned long v = strtoul(f[1], &end, 10);
    if (*f[1] == 0 || *end || v > 65535)
        return -1;
    *port = (uint32_t)v;
    *subset = f[2];
    *host = f[3];
    return 0;
}

int xds_sni(char *buf, size_t size, uint32_t port, const char *subset, const char *host)
{
    return snprintf(buf, size, "outbound_.%u_.%s_.%s", port, subset ? subset : "",
                    host ? host : "");
}

int xds_spiffe_id(char *buf, size_t size, const char *trust_domain, const char *ns, const char *sa)
{
    return snprintf(buf, size, "spiffe://%s/ns/%s/sa/%s", trust_domain ? trust_domain : "cluster.local",
                    ns, sa);
}

const char *xds_resolve_host(arena_t *a, const char *host, const char *ns)
{
    if (host == NULL)
        return "";
    if (strchr(host, '.') || strchr(host, '*') || ns == NULL)
        return host;
    size_t n = strlen(host) + strlen(ns) + sizeof(REG_DOMAIN_SUFFIX) + 8;
    char *s = arena_alloc(a, n);
    snprintf(s, n, "%s.%s.svc.%s", host, ns, REG_DOMAIN_SUFFIX);
    return s;
}

bool xds_host_match(const char *pattern, const char *name)
{
    if (strcmp(pattern, "*") == 0)
        return true;
    if (pattern[0] == '*') {
        const char *suffix = pattern + 1; /* ".foo.com" */
        size_t ls = strlen(suffix), ln = strlen(name);
        if (name[0] == '*') /* wildcard vs wildcard: the narrower must end with the wider */
            return ln - 1 >= ls && strcmp(name + 1 + (ln - 1 - ls), suffix) == 0;
        return ln > ls && strcmp(name + ln - ls, suffix) == 0;
    }
    return strcmp(pattern, name) == 0;
}

/* ---- proxy ---- */

static const Google__Protobuf__Value *md_get(const Google__Protobuf__Struct *s, const char *key)
{
    for (size_t i = 0; s && i < s->n_fields; i++)
        if (s->fields[i]->key && strcmp(s->fields[i]->key, key) == 0)
            return s->fields[i]->value;
    return NULL;
}

static const char *md_str(const Google__Protobuf__Struct *s, const char *key)
{
    const Google__Protobuf__Value *v = md_get(s, key);
    if (v && v->kind_case == GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE && v->string_value[0])
        return v->string_value;
    return NULL;
}

static int label_cmp(const void *a, const void *b)
{
    return strcmp(((const reg_label_t *)a)->key, ((const reg_label_t *)b)->key);
}

static void set_labels(xds_proxy_t *p, const char *const *keys, const char *const *vals, size_t n)
{
    reg_label_t *v = arena_alloc(p->_arena, (n + 1) * sizeof(*v));
    for (size_t i = 0; i < n; i++) {
        v[i].key = arena_strdup(p->_arena, keys[i]);
        v[i].value = arena_strdup(p->_arena, vals[i] ? vals[i] : "");
    }
    qsort(v, n, sizeof(*v), label_cmp);
    p->labels.v = v;
    p->labels.n = (uint32_t)n;
}

static void finish(xds_proxy_t *p)
{
    if (p->namespace == NULL)
        p->namespace = "default";
    if (p->service_account == NULL)
        p->service_account = "default";
    if (p->cluster_id == NULL)
        p->cluster_id = "Kubernetes";
    if (p->pod_name == NULL)
        p->pod_name = "";
    if (p->locality == NULL)
        p->locality = "";
    if (p->ip == NULL)
        p->ip = "";
    if (p->nips == 0) {
        p->ips = arena_alloc(p->_arena, sizeof(char *));
        p->ips[0] = p->ip;
        p->nips = 1;
    }
    size_t n = strlen(p->namespace) + sizeof(REG_DOMAIN_SUFFIX) + 8;
    char *d = arena_alloc(p->_arena, n);
    snprintf(d, n, "%s.svc.%s", p->namespace, REG_DOMAIN_SUFFIX);
    p->dns_domain = d;
}

xds_proxy_t *xds_proxy_new(xds_node_type_t type, const char *ip, const char *pod_name,
                           const char *ns, const char *service_account, const cfg_map_t *labels)
{
    xds_proxy_t *p = mesh_xcalloc(1, sizeof(*p));
    p->_arena = arena_new(2048);
    p->type = type;
    p->ip = ip ? arena_strdup(p->_arena, ip) : NULL;
    p->pod_name = pod_name ? arena_strdup(p->_arena, pod_name) : NULL;
    p->namespace = ns ? arena_strdup(p->_arena, ns) : NULL;
    p->service_account = service_account ? arena_strdup(p->_arena, service_account) : NULL;
    char id[512];
    snprintf(id, sizeof(id), "%s~%s~%s.%s~%s.svc.%s", type == XDS_ROUTER ? "router" : "sidecar",
             ip ? ip : "", pod_name ? pod_name : "", ns ? ns : "default", ns ? ns : "default",
             REG_DOMAIN_SUFFIX);
    p->id = arena_strdup(p->_arena, id);
    if (labels && labels->n) {
        const char **k = arena_alloc(p->_arena, labels->n * sizeof(char *));
        const char **v = arena_alloc(p->_arena, labels->n * sizeof(char *));
        for (uint32_t i = 0; i < labels->n; i++) {
            k[i] = labels->v[i].key;
            v[i] = labels->v[i].str;
        }
        set_labels(p, k, v, labels->n);
    }
    finish(p);
    return p;
}

xds_proxy_t *xds_proxy_from_node(const Envoy__Config__Core__V3__Node *node, char *err,
                                 size_t errlen)
{
    if (node == NULL || node->id == NULL || node->id[0] == 0) {
        snprintf(err, errlen, "node: id is empty");
        return NULL;
    }
    /* TYPE~IP~POD.NS~DOMAIN */
    char *copy = strdup(node->id);
    char *parts[4] = {0};
    int np = 0;
    for (char *s = copy, *t; np < 4; s = t + 1) {
        t = strchr(s, '~');
        parts[np++] = s;
        if (t == NULL)
            break;
        *t = 0;
    }
    if (np != 4) {
        snprintf(err, errlen, "node id \"%s\": want TYPE~IP~POD.NAMESPACE~DOMAIN", node->id);
        free(copy);
        return NULL;
    }
    xds_node_type_t type;
    if (strcmp(parts[0], "sidecar") == 0)
        type = XDS_SIDECAR;
    else if (strcmp(parts[0], "router") == 0)
        type = XDS_ROUTER;
    else {
        snprintf(err, errlen, "node id \"%s\": unknown proxy type \"%s\" (sidecar or router)",
                 node->id, parts[0]);
        free(copy);
        return NULL;
    }
    xds_proxy_t *p = mesh_xcalloc(1, sizeof(*p));
    p->_arena = arena_new(4096);
    arena_t *a = p->_arena;
    p->type = type;
    p->id = arena_strdup(a, node->id);
    const Google__Protobuf__Struct *md = node->metadata;
    char *dot = strchr(parts[2], '.');
    if (dot) {
        p->pod_name = arena_strndup(a, parts[2], (size_t)(dot - parts[2]));
        p->namespace = arena_strdup(a, dot + 1);
    } else if (parts[2][0]) {
        p->pod_name = arena_strdup(a, parts[2]);
    }
    const char *s;
    if ((s = md_str(md, "NAMESPACE")))
        p->namespace = arena_strdup(a, s);
    if (p->pod_name == NULL && (s = md_str(md, "NAME")))
        p->pod_name = arena_strdup(a, s);
    if ((s = md_str(md, "SERVICE_ACCOUNT")))
        p->service_account = arena_strdup(a, s);
    if ((s = md_str(md, "CLUSTER_ID")))
        p->cluster_id = arena_strdup(a, s);
    if ((s = md_str(md, "ISTIO_VERSION")))
        p->istio_version = arena_strdup(a, s);
    if ((s = md_str(md, "WORKLOAD_NAME")))
        p->workload_name = arena_strdup(a, s);
    if ((s = md_str(md, "GENERATOR")) && strcmp(s, "grpc") == 0)
        p->proxyless = true;
    if (node->user_agent_name && strncmp(node->user_agent_name, "gRPC", 4) == 0)
        p->proxyless = true;
    if (parts[1][0])
        p->ip = arena_strdup(a, parts[1]);
    if ((s = md_str(md, "INSTANCE_IPS"))) {
        char *ips = arena_strdup(a, s);
        uint32_t n = 1;
        for (const char *c = ips; *c; c++)
            n += *c == ',';
        p->ips = arena_alloc(a, n * sizeof(char *));
        for (char *save = NULL, *t = strtok_r(ips, ",", &save); t; t = strtok_r(NULL, ",", &save))
            if (*t)
                p->ips[p->nips++] = t;
        if (p->ip == NULL && p->nips)
            p->ip = p->ips[0];
    }
    const Envoy__Config__Core__V3__Locality *loc = node->locality;
    if (loc && loc->region && loc->region[0]) {
        const char *z = loc->zone ? loc->zone : "", *sz = loc->sub_zone ? loc->sub_zone : "";
        size_t n = strlen(loc->region) + strlen(z) + strlen(sz) + 3;
        char *l = arena_alloc(a, n);
        snprintf(l, n, "%s%s%s%s%s", loc->region, *z || *sz ? "/" : "", z, *sz ? "/" : "", sz);
        p->locality = l;
    }
    const Google__Protobuf__Value *lv = md_get(md, "LABELS");
    if (lv && lv->kind_case == GOOGLE__PROTOBUF__VALUE__KIND_STRUCT_VALUE && lv->struct_value) {
        const Google__Protobuf__Struct *ls = lv->struct_value;
        const char **k = arena_alloc(a, (ls->n_fields + 1) * sizeof(char *));
        const char **v = arena_alloc(a, (ls->n_fields + 1) * sizeof(char *));
        size_t n = 0;
        for (size_t i = 0; i < ls->n_fields; i++) {
            const Google__Protobuf__Value *x = ls->fields[i]->value;
            if (x == NULL || x->kind_case != GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE)
                continue;
            k[n] = ls->fields[i]->key;
            v[n] = x->string_value;
            n++;
        }
        set_labels(p, k, v, n);
    }
    free(copy);
    finish(p);
    return p;
}

void xds_proxy_free(xds_proxy_t *p)
{
    if (p == NULL)
        return;
    arena_free(p->_arena);
    free(p);
}
