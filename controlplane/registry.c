/*
 * The service registry: Services, EndpointSlices/Endpoints, Pods and
 * ServiceEntries of one snapshot joined into services and endpoints.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>

#include "../common/arena.h"
#include "../common/b64.h"
#include "../common/hmap.h"
#include "../common/log.h"
#include "registry.h"

struct reg {
    _Atomic uint32_t refs;
    arena_t *arena;
    const reg_service_t **services; /* sorted by hostname, namespace */
    uint32_t nservices;
    hmap_t by_host; /* hostname -> first index + 1 (as pointer-sized int) */
    hmap_t by_short; /* "ns/name" of Kubernetes Services -> reg_service_t */
    reg_workload_t **workloads;
    uint32_t nworkloads;
    hmap_t wl_by_ip;
    hmap_t wl_by_name; /* "ns/name" */
    hmap_t ns_labels; /* namespace -> reg_labels_t */
};

/* ---- protocols ---- */

static const struct {
    const char *name;
    reg_protocol_t p;
} proto_names[] = {
    {"HTTP", REG_PROTO_HTTP},   {"HTTP2", REG_PROTO_HTTP2}, {"GRPC", REG_PROTO_GRPC},
    {"GRPC-WEB", REG_PROTO_GRPC_WEB}, {"HTTPS", REG_PROTO_HTTPS}, {"TCP", REG_PROTO_TCP},
    {"TLS", REG_PROTO_TLS},     {"MONGO", REG_PROTO_MONGO}, {"REDIS", REG_PROTO_REDIS},
    {"MYSQL", REG_PROTO_MYSQL}, {"UDP", REG_PROTO_UDP},
};

reg_protocol_t reg_protocol_parse(const char *s)
{
    if (s == NULL)
        return REG_PROTO_UNKNOWN;
    for (size_t i = 0; i < sizeof(proto_names) / sizeof(proto_names[0]); i++)
        if (strcasecmp(s, proto_names[i].name) == 0)
            return proto_names[i].p;
    return REG_PROTO_UNKNOWN;
}

const char *reg_protocol_name(reg_protocol_t p)
{
    for (size_t i = 0; i < sizeof(proto_names) / sizeof(proto_names[0]); i++)
        if (proto_names[i].p == p)
            return proto_names[i].name;
    return "UnsupportedProtocol";
}

reg_protocol_t reg_protocol_infer(const char *name, const char *app_protocol,
                                  const char *l4_protocol)
{
    if (l4_protocol != NULL && strcasecmp(l4_protocol, "UDP") == 0)
        return REG_PROTO_UDP;
    if (l4_protocol != NULL && strcasecmp(l4_protocol, "SCTP") == 0)
        return REG_PROTO_UNKNOWN;
    if (app_protocol != NULL && *app_protocol) {
        /* Kubernetes' standard appProtocol values come first. */
        if (strcmp(app_protocol, "kubernetes.io/h2c") == 0)
            return REG_PROTO_HTTP2;
        if (strcmp(app_protocol, "kubernetes.io/ws") == 0)
            return REG_PROTO_HTTP;
        if (strcmp(app_protocol, "kubernetes.io/wss") == 0)
            return REG_PROTO_HTTPS;
        reg_protocol_t p = reg_protocol_parse(app_protocol);
        if (p != REG_PROTO_UNKNOWN)
            return p;
    }
    if (name == NULL || *name == 0)
        return REG_PROTO_UNKNOWN;
    if (strncasecmp(name, "grpc-web", 8) == 0 && (name[8] == 0 || name[8] == '-'))
        return REG_PROTO_GRPC_WEB;
    const char *dash = strchr(name, '-');
    size_t len = dash ? (size_t)(dash - name) : strlen(name);
    char prefix[32];
    if (len >= sizeof(prefix))
        return REG_PROTO_UNKNOWN;
    memcpy(prefix, name, len);
    prefix[len] = 0;
    reg_protocol_t p = reg_protocol_parse(prefix);
    return p == REG_PROTO_GRPC_WEB ? REG_PROTO_UNKNOWN : p;
}

bool reg_protocol_is_http(reg_protocol_t p)
{
    return p == REG_PROTO_HTTP || p == REG_PROTO_HTTP2 || p == REG_PROTO_GRPC ||
           p == REG_PROTO_GRPC_WEB;
}

bool reg_protocol_is_tcp(reg_protocol_t p)
{
    return p == REG_PROTO_TCP || p == REG_PROTO_TLS || p == REG_PROTO_HTTPS ||
           p == REG_PROTO_MONGO || p == REG_PROTO_REDIS || p == REG_PROTO_MYSQL;
}

/* ---- labels ---- */

const char *reg_labels_get(const reg_labels_t *l, const char *key)
{
    if (l == NULL)
        return NULL;
    uint32_t lo = 0, hi = l->n;
    while (lo < hi) {
        uint32_t mid = (lo + hi) / 2;
        int c = strcmp(l->v[mid].key, key);
        if (c == 0)
            return l->v[mid].value;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

bool reg_labels_match(const reg_labels_t *labels, const reg_labels_t *selector)
{
    if (selector == NULL)
        return true;
    for (uint32_t i = 0; i < selector->n; i++) {
        const char *v = reg_labels_get(labels, selector->v[i].key);
        if (v == NULL || strcmp(v, selector->v[i].value) != 0)
            return false;
    }
    return true;
}

bool reg_labels_match_map(const reg_labels_t *labels, const cfg_map_t *selector)
{
    if (selector == NULL)
        return true;
    for (uint32_t i = 0; i < selector->n; i++) {
        const char *v = reg_labels_get(labels, selector->v[i].key);
        const char *want = selector->v[i].str ? selector->v[i].str : "";
        if (v == NULL || strcmp(v, want) != 0)
            return false;
    }
    return true;
}

static int label_cmp(const void *a, const void *b)
{
    return strcmp(((const reg_label_t *)a)->key, ((const reg_label_t *)b)->key);
}

/* Labels copied from a config map (strings stay owned by the config object,
 * which outlives nothing here: copy them into the arena). */
static reg_labels_t labels_from_map(arena_t *a, const cfg_map_t *m)
{
    reg_labels_t l = {NULL, 0};
    if (m == NULL || m->n == 0)
        return l;
    reg_label_t *v = arena_alloc(a, m->n * sizeof(*v));
    uint32_t n = 0;
    for (uint32_t i = 0; i < m->n; i++) {
        if (m->v[i].key == NULL)
            continue;
        v[n].key = arena_strdup(a, m->v[i].key);
        v[n].value = arena_strdup(a, m->v[i].str ? m->v[i].str : "");
        n++;
    }
    qsort(v, n, sizeof(*v), label_cmp);
    /* keep the last of duplicate keys */
    uint32_t w = 0;
    for (uint32_t i = 0; i < n; i++) {
        if (w > 0 && strcmp(v[w - 1].key, v[i].key) == 0)
            v[w - 1] = v[i];
        else
            v[w++] = v[i];
    }
    l.v = v;
    l.n = w;
    return l;
}

static const char *map_get(const cfg_map_t *m, const char *key)
{
    if (m == NULL)
        return NULL;
    for (uint32_t i = 0; i < m->n; i++)
        if (m->v[i].key && strcmp(m->v[i].key, key) == 0)
            return m->v[i].str ? m->v[i].str : "";
    return NULL;
}

/* ---- visibility ---- */

bool reg_export_visible(const char *const *list, uint32_t n, const char *obj_ns, const char *ns)
{
    if (list == NULL || n == 0 || ns == NULL)
        return true;
    for (uint32_t i = 0; i < n; i++) {
        const char *e = list[i];
        if (strcmp(e, "*") == 0)
            return true;
        if (strcmp(e, ".") == 0 && obj_ns && strcmp(obj_ns, ns) == 0)
            return true;
        if (strcmp(e, ns) == 0)
            return true;
    }
    return false;
}

bool reg_visible(const reg_service_t *s, const char *ns)
{
    if (s->export_to == NULL)
        return true;
    uint32_t n = 0;
    while (s->export_to[n])
        n++;
    return reg_export_visible(s->export_to, n, s->namespace, ns);
}

/* ---- building ---- */

typedef struct vec {
    void **v;
    uint32_t n, cap;
} vec_t;

static void vec_push(vec_t *v, void *p)
{
    if (v->n == v->cap) {
        v->cap = v->cap ? v->cap * 2 : 16;
        v->v = mesh_xrealloc(v->v, v->cap * sizeof(void *));
    }
    v->v[v->n++] = p;
}

typedef struct epvec {
    reg_endpoint_t *v;
    uint32_t n, cap;
} epvec_t;

static reg_endpoint_t *ep_push(epvec_t *v)
{
    if (v->n == v->cap) {
        v->cap = v->cap ? v->cap * 2 : 8;
        v->v = mesh_xrealloc(v->v, v->cap * sizeof(reg_endpoint_t));
    }
    reg_endpoint_t *e = &v->v[v->n++];
    memset(e, 0, sizeof(*e));
    return e;
}

/* A service under construction. */
typedef struct bsvc {
    reg_service_t s;
    epvec_t eps;
    bool has_slices;
} bsvc_t;

typedef struct builder {
    struct reg *r;
    arena_t *a;
    vec_t svcs; /* bsvc_t* */
    vec_t workloads;
    hmap_t kube_by_key; /* "ns/name" -> bsvc_t of Kubernetes Services */
} builder_t;

static char *keyf(arena_t *a, const char *ns, const char *name)
{
    size_t n = strlen(ns) + strlen(name) + 2;
    char *k = arena_alloc(a, n);
    snprintf(k, n, "%s/%s", ns, name);
    return k;
}

static const char *norm_locality(arena_t *a, const char *s)
{
    /* "region.zone.subzone" (the istio-locality label) -> "region/zone/subzone" */
    char *c = arena_strdup(a, s);
    for (char *p = c; *p; p++)
        if (*p == '.')
            *p = '/';
    return c;
}

static const char *locality_of(arena_t *a, const char *region, const char *zone,
                               const char *subzone)
{
    if ((region == NULL || !*region) && (zone == NULL || !*zone) && (subzone == NULL || !*subzone))
        return "";
    size_t n = (region ? strlen(region) : 0) + (zone ? strlen(zone) : 0) +
               (subzone ? strlen(subzone) : 0) + 3;
    char *s = arena_alloc(a, n);
    if (subzone && *subzone)
        snprintf(s, n, "%s/%s/%s", region ? region : "", zone ? zone : "", subzone);
    else if (zone && *zone)
        snprintf(s, n, "%s/%s", region ? region : "", zone);
    else
        snprintf(s, n, "%s", region);
    return s;
}

static int build_pod(void *ud, cfg_object_t *o)
{
    builder_t *b = ud;
    const cfg_PodObject *pod = CFG_BODY(o, Pod);
    const cfg_ObjectMeta *m = o->meta;
    reg_workload_t *w = arena_alloc(b->a, sizeof(*w));
    w->name = arena_strdup(b->a, o->name);
    w->namespace = arena_strdup(b->a, o->namespace);
    w->pod = pod;
    w->labels = labels_from_map(b->a, m ? &m->labels : NULL);
    const char *ip = pod->status && pod->status->podIP ? pod->status->podIP : NULL;
    w->ip = ip ? arena_strdup(b->a, ip) : NULL;
    const char *sa = NULL;
    if (pod->spec)
        sa = pod->spec->serviceAccountName ? pod->spec->serviceAccountName
                                           : pod->spec->serviceAccount;
    w->service_account = arena_strdup(b->a, sa && *sa ? sa : "default");
    const char *tls = reg_labels_get(&w->labels, "security.istio.io/tlsMode");
    w->has_sidecar = (m && map_get(&m->annotations, "sidecar.istio.io/status") != NULL) ||
                     (tls != NULL && strcmp(tls, "istio") == 0);
    const char *loc = reg_labels_get(&w->labels, "istio-locality");
    if (loc && *loc)
        w->locality = norm_locality(b->a, loc);
    else
        w->locality = locality_of(b->a, reg_labels_get(&w->labels, "topology.kubernetes.io/region"),
                                  reg_labels_get(&w->labels, "topology.kubernetes.io/zone"),
                                  reg_labels_get(&w->labels, "topology.istio.io/subzone"));
    vec_push(&b->workloads, w);
    if (w->ip && *w->ip && !(pod->spec && pod->spec->hostNetwork))
        hmap_put(&b->r->wl_by_ip, w->ip, w);
    hmap_put(&b->r->wl_by_name, keyf(b->a, w->namespace, w->name), w);
    return 0;
}

static const char *const *export_list(arena_t *a, const char *const *src, uint32_t n)
{
    if (src == NULL || n == 0)
        return NULL;
    const char **l = arena_alloc(a, (n + 1) * sizeof(char *));
    for (uint32_t i = 0; i < n; i++)
        l[i] = arena_strdup(a, src[i]);
    return l;
}

static const char *const *export_annotation(arena_t *a, const char *v)
{
    if (v == NULL || !*v)
        return NULL;
    const char *items[64];
    char *copy = arena_strdup(a, v);
    uint32_t n = 0;
    for (char *save = NULL, *t = strtok_r(copy, ",", &save); t && n < 64;
         t = strtok_r(NULL, ",", &save)) {
        while (*t == ' ')
            t++;
        char *e = t + strlen(t);
        while (e > t && e[-1] == ' ')
            *--e = 0;
        if (*t)
            items[n++] = t;
    }
    return export_list(a, items, n);
}

static int build_service(void *ud, cfg_object_t *o)
{
    builder_t *b = ud;
    const cfg_ServiceObject *so = CFG_BODY(o, Service);
    const cfg_ServiceSpec *sp = so->spec;
    bsvc_t *bs = arena_alloc(b->a, sizeof(*bs));
    reg_service_t *s = &bs->s;
    char host[600];
    snprintf(host, sizeof(host), "%s.%s.svc.%s", o->name, o->namespace, REG_DOMAIN_SUFFIX);
    s->hostname = arena_strdup(b->a, host);
    s->name = arena_strdup(b->a, o->name);
    s->namespace = arena_strdup(b->a, o->namespace);
    s->source = REG_SRC_KUBERNETES;
    s->obj = o;
    const char *cip = sp && sp->clusterIP ? sp->clusterIP : NULL;
    s->headless = cip != NULL && strcmp(cip, "None") == 0;
    s->address = arena_strdup(b->a, cip && *cip && !s->headless ? cip : "0.0.0.0");
    if (sp && CFG_HAS(sp, ServiceSpec, type) && sp->type == cfg_ServiceType_ExternalName) {
        s->resolution = REG_RES_DNS;
        s->mesh_external = true;
        s->external_name = sp->externalName ? arena_strdup(b->a, sp->externalName) : NULL;
    } else if (s->headless) {
        s->resolution = REG_RES_PASSTHROUGH;
    }
    if (sp) {
        reg_port_t *ports = arena_alloc(b->a, (sp->ports.n + 1) * sizeof(*ports));
        for (uint32_t i = 0; i < sp->ports.n; i++) {
            const cfg_KubeServicePort *kp = &sp->ports.v[i];
            reg_port_t *p = &ports[i];
            p->name = arena_strdup(b->a, kp->name ? kp->name : "");
            p->port = (uint32_t)kp->port;
            if (CFG_HAS(kp, KubeServicePort, targetPort)) {
                if (kp->targetPort.is_str)
                    p->target_port_name = arena_strdup(b->a, kp->targetPort.str);
                else
                    p->target_port = (uint32_t)kp->targetPort.num;
            } else {
                p->target_port = p->port;
            }
            p->protocol = reg_protocol_infer(kp->name, kp->appProtocol, kp->protocol);
        }
        s->ports = ports;
        s->nports = sp->ports.n;
        s->selector = labels_from_map(b->a, &sp->selector);
    }
    s->export_to = export_annotation(
        b->a, o->meta ? map_get(&o->meta->annotations, "networking.istio.io/exportTo") : NULL);
    vec_push(&b->svcs, bs);
    hmap_put(&b->kube_by_key, keyf(b->a, s->namespace, s->name), bs);
    return 0;
}

static const reg_port_t *port_by_name(const reg_service_t *s, const char *name)
{
    for (uint32_t i = 0; i < s->nports; i++)
        if (strcmp(s->ports[i].name, name ? name : "") == 0)
            return &s->ports[i];
    /* an unnamed single-port slice matches a single-port service */
    if ((name == NULL || !*name) && s->nports == 1)
        return &s->ports[0];
    return NULL;
}

static const reg_workload_t *join_pod(builder_t *b, const cfg_ObjectReference *ref,
                                      const char *ns, const char *ip)
{
    if (ref && ref->name && (ref->kind == NULL || strcmp(ref->kind, "Pod") == 0)) {
        char k[600];
        snprintf(k, sizeof(k), "%s/%s", ref->namespace ? ref->namespace : ns, ref->name);
        const reg_workload_t *w = hmap_get(&b->r->wl_by_name, k);
        if (w)
            return w;
    }
    return ip ? hmap_get(&b->r->wl_by_ip, ip) : NULL;
}

static void add_endpoint(builder_t *b, bsvc_t *bs, const reg_port_t *sp, const char *addr,
                         uint32_t port, bool ready, const reg_workload_t *w,
                         const char *locality)
{
    reg_endpoint_t *e = ep_push(&bs->eps);
    e->address = arena_strdup(b->a, addr);
    e->port = port;
    e->service_port_name = sp->name;
    e->service_port = sp->port;
    e->ready = ready;
    e->namespace = bs->s.namespace;
    e->workload = w;
    if (w) {
        e->labels = w->labels;
        e->service_account = w->service_account;
        e->has_sidecar = w->has_sidecar;
        e->locality = w->locality && *w->locality ? w->locality : locality;
        e->namespace = w->namespace;
    } else {
        e->service_account = "";
        e->locality = locality;
    }
    if (e->locality == NULL)
        e->locality = "";
}

static int build_slice(void *ud, cfg_object_t *o)
{
    builder_t *b = ud;
    const cfg_EndpointSliceObject *es = CFG_BODY(o, EndpointSlice);
    const char *svc = o->meta ? map_get(&o->meta->labels, "kubernetes.io/service-name") : NULL;
    if (svc == NULL)
        return 0;
    char k[600];
    snprintf(k, sizeof(k), "%s/%s", o->namespace, svc);
    bsvc_t *bs = hmap_get(&b->kube_by_key, k);
    if (bs == NULL)
        return 0;
    bs->has_slices = true;
    if (es->addressType == cfg_EndpointAddressType_FQDN)
        return 0;
    for (uint32_t i = 0; i < es->endpoints.n; i++) {
        const cfg_EndpointSliceEndpoint *ep = &es->endpoints.v[i];
        bool ready = true;
        if (ep->conditions && CFG_HAS(ep->conditions, EndpointConditions, ready))
            ready = ep->conditions->ready;
        /* v1: zone; v1beta1: topology; v1 keeps the old map as deprecatedTopology */
        const char *zone = ep->zone;
        if (zone == NULL)
            zone = map_get(&ep->topology, "topology.kubernetes.io/zone");
        if (zone == NULL)
            zone = map_get(&ep->deprecatedTopology, "topology.kubernetes.io/zone");
        const char *region = map_get(&ep->topology, "topology.kubernetes.io/region");
        if (region == NULL)
            region = map_get(&ep->deprecatedTopology, "topology.kubernetes.io/region");
        const char *loc = locality_of(b->a, region, zone, NULL);
        for (uint32_t j = 0; j < ep->addresses.n; j++) {
            const char *addr = ep->addresses.v[j];
            const reg_workload_t *w = join_pod(b, ep->targetRef, o->namespace, addr);
            for (uint32_t p = 0; p < es->ports.n; p++) {
                const cfg_EndpointPort *epp = &es->ports.v[p];
                const reg_port_t *sp = port_by_name(&bs->s, epp->name);
                if (sp == NULL || epp->port <= 0)
                    continue;
                add_endpoint(b, bs, sp, addr, (uint32_t)epp->port, ready, w, loc);
            }
        }
    }
    return 0;
}

static int build_endpoints(void *ud, cfg_object_t *o)
{
    builder_t *b = ud;
    bsvc_t *bs = hmap_get(&b->kube_by_key, keyf(b->a, o->namespace, o->name));
    if (bs == NULL || bs->has_slices)
        return 0;
    const cfg_EndpointsObject *eo = CFG_BODY(o, Endpoints);
    for (uint32_t i = 0; i < eo->subsets.n; i++) {
        const cfg_EndpointSubset *ss = &eo->subsets.v[i];
        for (int pass = 0; pass < 2; pass++) {
            uint32_t na = pass == 0 ? ss->addresses.n : ss->notReadyAddresses.n;
            for (uint32_t j = 0; j < na; j++) {
                const cfg_EndpointAddress *ea =
                    pass == 0 ? &ss->addresses.v[j] : &ss->notReadyAddresses.v[j];
                if (ea->ip == NULL)
                    continue;
                const reg_workload_t *w = join_pod(b, ea->targetRef, o->namespace, ea->ip);
                for (uint32_t p = 0; p < ss->ports.n; p++) {
                    const cfg_EndpointPort *epp = &ss->ports.v[p];
                    const reg_port_t *sp = port_by_name(&bs->s, epp->name);
                    if (sp == NULL || epp->port <= 0)
                        continue;
                    add_endpoint(b, bs, sp, ea->ip, (uint32_t)epp->port, pass == 0, w, "");
                }
            }
        }
    }
    return 0;
}

static uint32_t se_endpoint_port(const cfg_ServicePort *sp, const cfg_map_t *ports)
{
    for (uint32_t i = 0; ports && i < ports->n; i++)
        if (ports->v[i].key && sp->name && strcmp(ports->v[i].key, sp->name) == 0)
            return ports->v[i].u32;
    if (CFG_HAS(sp, ServicePort, targetPort) && sp->targetPort)
        return sp->targetPort;
    return sp->number;
}

static int build_service_entry(void *ud, cfg_object_t *o)
{
    builder_t *b = ud;
    const cfg_ServiceEntry *se = CFG_BODY(o, ServiceEntry)->spec;
    if (se == NULL)
        return 0;
    reg_port_t *ports = arena_alloc(b->a, (se->ports.n + 1) * sizeof(*ports));
    for (uint32_t i = 0; i < se->ports.n; i++) {
        const cfg_ServicePort *sp = &se->ports.v[i];
        ports[i].name = arena_strdup(b->a, sp->name ? sp->name : "");
        ports[i].port = sp->number;
        ports[i].target_port = CFG_HAS(sp, ServicePort, targetPort) ? sp->targetPort : sp->number;
        ports[i].protocol = reg_protocol_parse(sp->protocol);
    }
    const char *const *exp =
        export_list(b->a, (const char *const *)se->exportTo.v, se->exportTo.n);
    reg_labels_t sel = {NULL, 0};
    if (se->workloadSelector)
        sel = labels_from_map(b->a, &se->workloadSelector->labels);
    for (uint32_t h = 0; h < se->hosts.n; h++) {
        bsvc_t *bs = arena_alloc(b->a, sizeof(*bs));
        reg_service_t *s = &bs->s;
        s->hostname = arena_strdup(b->a, se->hosts.v[h]);
        s->name = arena_strdup(b->a, o->name);
        s->namespace = arena_strdup(b->a, o->namespace);
        s->source = REG_SRC_SERVICE_ENTRY;
        s->obj = o;
        s->address = arena_strdup(b->a, se->addresses.n ? se->addresses.v[0] : "0.0.0.0");
        s->mesh_external = !(CFG_HAS(se, ServiceEntry, location) &&
                             se->location == cfg_ServiceEntryLocation_MESH_INTERNAL);
        int res = CFG_HAS(se, ServiceEntry, resolution) ? se->resolution
                                                        : cfg_ServiceEntryResolution_NONE;
        switch (res) {
        case cfg_ServiceEntryResolution_STATIC: s->resolution = REG_RES_CLIENT_SIDE_LB; break;
        case cfg_ServiceEntryResolution_DNS: s->resolution = REG_RES_DNS; break;
        case cfg_ServiceEntryResolution_DNS_ROUND_ROBIN:
        case cfg_ServiceEntryResolution_DYNAMIC_DNS:
            s->resolution = REG_RES_DNS_ROUND_ROBIN;
            break;
        default: s->resolution = REG_RES_PASSTHROUGH; break;
        }
        s->ports = ports;
        s->nports = se->ports.n;
        s->export_to = exp;
        s->selector = sel;
        for (uint32_t i = 0; i < se->endpoints.n; i++) {
            const cfg_WorkloadEntry *we = &se->endpoints.v[i];
            if (we->address == NULL)
                continue;
            reg_labels_t wl = labels_from_map(b->a, &we->labels);
            const char *tls = reg_labels_get(&wl, "security.istio.io/tlsMode");
            for (uint32_t p = 0; p < se->ports.n; p++) {
                reg_endpoint_t *e = ep_push(&bs->eps);
                e->address = arena_strdup(b->a, we->address);
                e->port = se_endpoint_port(&se->ports.v[p], &we->ports);
                e->service_port_name = ports[p].name;
                e->service_port = ports[p].port;
                e->labels = wl;
                e->namespace = s->namespace;
                e->service_account =
                    arena_strdup(b->a, we->serviceAccount ? we->serviceAccount : "");
                e->locality = we->locality ? norm_locality(b->a, we->locality) : "";
                e->has_sidecar = tls != NULL && strcmp(tls, "istio") == 0;
                e->ready = true;
                e->weight = we->weight;
            }
        }
        if (sel.n > 0) {
            for (uint32_t i = 0; i < b->workloads.n; i++) {
                const reg_workload_t *w = b->workloads.v[i];
                if (strcmp(w->namespace, s->namespace) != 0 || w->ip == NULL ||
                    !reg_labels_match(&w->labels, &sel))
                    continue;
                for (uint32_t p = 0; p < se->ports.n; p++)
                    add_endpoint(b, bs, &ports[p], w->ip, se_endpoint_port(&se->ports.v[p], NULL),
                                 true, w, "");
            }
        }
        /* DNS resolution without endpoints: the host itself is the endpoint. */
        if (bs->eps.n == 0 && s->resolution == REG_RES_DNS && s->hostname[0] != '*') {
            for (uint32_t p = 0; p < se->ports.n; p++) {
                reg_endpoint_t *e = ep_push(&bs->eps);
                e->address = s->hostname;
                e->port = ports[p].port;
                e->service_port_name = ports[p].name;
                e->service_port = ports[p].port;
                e->namespace = s->namespace;
                e->service_account = "";
                e->locality = "";
                e->ready = true;
            }
        }
        vec_push(&b->svcs, bs);
    }
    return 0;
}

static int build_namespace(void *ud, cfg_object_t *o)
{
    builder_t *b = ud;
    reg_labels_t *l = arena_alloc(b->a, sizeof(*l));
    *l = labels_from_map(b->a, o->meta ? &o->meta->labels : NULL);
    hmap_put(&b->r->ns_labels, arena_strdup(b->a, o->name), l);
    return 0;
}

static int ep_cmp(const void *pa, const void *pb)
{
    const reg_endpoint_t *a = pa, *b = pb;
    if (a->service_port != b->service_port)
        return a->service_port < b->service_port ? -1 : 1;
    int c = strcmp(a->address, b->address);
    if (c)
        return c;
    return a->port < b->port ? -1 : a->port > b->port;
}

static int svc_cmp(const void *pa, const void *pb)
{
    const reg_service_t *a = *(const reg_service_t *const *)pa;
    const reg_service_t *b = *(const reg_service_t *const *)pb;
    int c = strcmp(a->hostname, b->hostname);
    if (c)
        return c;
    c = strcmp(a->namespace, b->namespace);
    if (c)
        return c;
    /* Kubernetes Services before ServiceEntries for the same host */
    return (int)a->source - (int)b->source;
}

reg_t *reg_build(const cfg_snap_t *snap)
{
    struct reg *r = mesh_xcalloc(1, sizeof(*r));
    atomic_init(&r->refs, 1);
    r->arena = arena_new(64 * 1024);
    builder_t b = {.r = r, .a = r->arena};
    cfg_snap_each(snap, CFG_Namespace, build_namespace, &b);
    cfg_snap_each(snap, CFG_Pod, build_pod, &b);
    cfg_snap_each(snap, CFG_Service, build_service, &b);
    cfg_snap_each(snap, CFG_EndpointSlice, build_slice, &b);
    cfg_snap_each(snap, CFG_Endpoints, build_endpoints, &b);
    cfg_snap_each(snap, CFG_ServiceEntry, build_service_entry, &b);

    r->services = arena_alloc(r->arena, (b.svcs.n + 1) * sizeof(*r->services));
    for (uint32_t i = 0; i < b.svcs.n; i++) {
        bsvc_t *bs = b.svcs.v[i];
        if (bs->eps.n) {
            qsort(bs->eps.v, bs->eps.n, sizeof(reg_endpoint_t), ep_cmp);
            reg_endpoint_t *eps = arena_alloc(r->arena, bs->eps.n * sizeof(*eps));
            memcpy(eps, bs->eps.v, bs->eps.n * sizeof(*eps));
            bs->s.endpoints = eps;
            bs->s.nendpoints = bs->eps.n;
        }
        free(bs->eps.v);
        r->services[i] = &bs->s;
    }
    r->nservices = b.svcs.n;
    qsort(r->services, r->nservices, sizeof(*r->services), svc_cmp);
    for (uint32_t i = 0; i < r->nservices; i++) {
        const reg_service_t *s = r->services[i];
        if (hmap_get(&r->by_host, s->hostname) == NULL)
            hmap_put(&r->by_host, s->hostname, (void *)(uintptr_t)(i + 1));
        if (s->source == REG_SRC_KUBERNETES)
            hmap_put(&r->by_short, keyf(r->arena, s->namespace, s->name), (void *)s);
    }
    r->workloads = arena_alloc(r->arena, (b.workloads.n + 1) * sizeof(*r->workloads));
    if (b.workloads.n)
        memcpy(r->workloads, b.workloads.v, b.workloads.n * sizeof(void *));
    r->nworkloads = b.workloads.n;
    free(b.svcs.v);
    free(b.workloads.v);
    hmap_clear(&b.kube_by_key);
    return r;
}

reg_t *reg_ref(reg_t *r)
{
    if (r)
        atomic_fetch_add(&r->refs, 1);
    return r;
}

void reg_unref(reg_t *r)
{
    if (r == NULL || atomic_fetch_sub(&r->refs, 1) != 1)
        return;
    hmap_clear(&r->by_host);
    hmap_clear(&r->by_short);
    hmap_clear(&r->wl_by_ip);
    hmap_clear(&r->wl_by_name);
    hmap_clear(&r->ns_labels);
    arena_free(r->arena);
    free(r);
}

const reg_service_t *const *reg_services(const reg_t *r, uint32_t *n)
{
    *n = r->nservices;
    return r->services;
}

const reg_service_t *reg_lookup(const reg_t *r, const char *hostname, const char *from_ns)
{
    uintptr_t idx = (uintptr_t)hmap_get(&r->by_host, hostname);
    if (idx == 0)
        return NULL;
    const reg_service_t *first = NULL;
    for (uint32_t i = (uint32_t)idx - 1; i < r->nservices; i++) {
        const reg_service_t *s = r->services[i];
        if (strcmp(s->hostname, hostname) != 0)
            break;
        if (from_ns == NULL)
            return s;
        if (!reg_visible(s, from_ns))
            continue;
        if (strcmp(s->namespace, from_ns) == 0)
            return s;
        if (first == NULL)
            first = s;
    }
    return first;
}

const reg_service_t *reg_lookup_short(const reg_t *r, const char *ns, const char *name)
{
    char k[600];
    snprintf(k, sizeof(k), "%s/%s", ns, name);
    return hmap_get(&r->by_short, k);
}

const reg_port_t *reg_service_port(const reg_service_t *s, uint32_t port)
{
    for (uint32_t i = 0; i < s->nports; i++)
        if (s->ports[i].port == port)
            return &s->ports[i];
    return NULL;
}

const reg_workload_t *reg_workload_by_ip(const reg_t *r, const char *ip)
{
    return ip ? hmap_get(&r->wl_by_ip, ip) : NULL;
}

const reg_workload_t *reg_workload_by_name(const reg_t *r, const char *ns, const char *name)
{
    char k[600];
    snprintf(k, sizeof(k), "%s/%s", ns, name);
    return hmap_get(&r->wl_by_name, k);
}

const reg_labels_t *reg_namespace_labels(const reg_t *r, const char *ns)
{
    return hmap_get(&r->ns_labels, ns);
}

/* ---- Secrets ---- */

const cfg_object_t *reg_secret_get(const cfg_snap_t *snap, const char *ns, const char *name)
{
    if (snap == NULL || ns == NULL || name == NULL)
        return NULL;
    return cfg_snap_get(snap, CFG_Secret, ns, name);
}

unsigned char *reg_secret_value(const cfg_object_t *secret, const char *key, size_t *len,
                                bool *bad)
{
    *len = 0;
    if (bad)
        *bad = false;
    if (secret == NULL || secret->kind != CFG_Secret || key == NULL)
        return NULL;
    const cfg_SecretObject *o = CFG_BODY(secret, Secret);
    const char *plain = map_get(&o->stringData, key);
    if (plain != NULL) {
        size_t n = strlen(plain);
        unsigned char *v = mesh_xmalloc(n + 1);
        memcpy(v, plain, n + 1);
        *len = n;
        return v;
    }
    const char *enc = map_get(&o->data, key);
    if (enc == NULL)
        return NULL;
    unsigned char *v = b64_decode(enc, strlen(enc), len);
    if (v == NULL && bad)
        *bad = true;
    return v;
}

void reg_secret_value_free(unsigned char *v, size_t len)
{
    if (v == NULL)
        return;
    OPENSSL_cleanse(v, len);
    free(v);
}

/* The container port named `name` of a pod, or 0. */
static uint32_t pod_named_port(const cfg_PodObject *pod, const char *name)
{
    if (pod == NULL || pod->spec == NULL || name == NULL)
        return 0;
    for (uint32_t i = 0; i < pod->spec->containers.n; i++) {
        const cfg_Container *c = &pod->spec->containers.v[i];
        for (uint32_t j = 0; j < c->ports.n; j++)
            if (c->ports.v[j].name && strcmp(c->ports.v[j].name, name) == 0)
                return (uint32_t)c->ports.v[j].containerPort;
    }
    return 0;
}

static int target_cmp(const void *pa, const void *pb)
{
    const reg_target_t *a = pa, *b = pb;
    if (a->target_port != b->target_port)
        return a->target_port < b->target_port ? -1 : 1;
    int c = strcmp(a->service->hostname, b->service->hostname);
    if (c)
        return c;
    return a->port->port < b->port->port ? -1 : a->port->port > b->port->port;
}

uint32_t reg_targets(const reg_t *r, const char *ns, const reg_labels_t *labels, const char *ip,
                     reg_target_t *out, uint32_t max)
{
    uint32_t n = 0;
    const reg_workload_t *w = reg_workload_by_ip(r, ip);
    for (uint32_t i = 0; i < r->nservices; i++) {
        const reg_service_t *s = r->services[i];
        bool selected = s->selector.n > 0 && strcmp(s->namespace, ns) == 0 &&
                        reg_labels_match(labels, &s->selector);
        for (uint32_t p = 0; p < s->nports; p++) {
            const reg_port_t *port = &s->ports[p];
            uint32_t tp = 0;
            bool hit = selected;
            for (uint32_t e = 0; ip && e < s->nendpoints; e++) {
                const reg_endpoint_t *ep = &s->endpoints[e];
                if (ep->service_port == port->port && strcmp(ep->address, ip) == 0) {
                    hit = true;
                    tp = ep->port;
                    break;
                }
            }
            if (!hit)
                continue;
            if (tp == 0)
                tp = port->target_port;
            if (tp == 0 && port->target_port_name)
                tp = pod_named_port(w ? w->pod : NULL, port->target_port_name);
            if (tp == 0)
                tp = port->port;
            if (n < max) {
                out[n].service = s;
                out[n].port = port;
                out[n].target_port = tp;
            }
            n++;
        }
    }
    qsort(out, n < max ? n : max, sizeof(*out), target_cmp);
    return n;
}
