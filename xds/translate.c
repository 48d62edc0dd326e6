/*
 * xds_translate(): scoping (what a proxy sees), indexes over it, shared
 * helpers, the serialized, sorted, hashed result, and the cache of sidecars'
 * outbound parts (tx_shared_t, see translate_internal.h for who owns it).
 */
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/hmap.h"
#include "../common/log.h"
#include "translate_internal.h"

struct xds_resources {
    _Atomic uint32_t refs;
    arena_t *arena;
    /* a merged result (tx_translate_shared): the shared outbound part and the
     * proxy's own part, whose names and bytes res[] and warnings borrow */
    xds_resources_t *parts[2];
    xds_resource_t *res[XDS_NTYPES];
    uint32_t n[XDS_NTYPES];
    uint64_t hash[XDS_NTYPES];
    uint64_t sum[XDS_NTYPES]; /* of item_mix() over res[]: hash[] before set_final() */
    const char **warnings;
    uint32_t nwarnings;
};

/* ---- helpers ---- */

void *tx_dup(tx_t *t, const void *src, size_t size)
{
    void *p = arena_alloc(t->a, size);
    memcpy(p, src, size);
    return p;
}

void *tx_grow(tx_t *t, void *arr, size_t n, size_t esize)
{
    if (n != 0 && (n < 4 || (n & (n - 1)) != 0))
        return arr;
    size_t cap = n < 4 ? 4 : n * 2;
    void *p = arena_alloc(t->a, cap * esize);
    if (n)
        memcpy(p, arr, n * esize);
    return p;
}

char *tx_str(tx_t *t, const char *s)
{
    return arena_strdup(t->a, s ? s : "");
}

char *tx_printf(tx_t *t, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    char *s = arena_alloc(t->a, (size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(s, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return s;
}

void tx_warn(tx_t *t, const char *fmt, ...)
{
    arena_t *cur = t->a;
    t->a = t->keep;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    char *s = arena_alloc(t->a, (size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(s, (size_t)n + 1, fmt, ap);
    va_end(ap);
    TX_PUSH(t, t->warnings, t->nwarnings, s);
    t->a = cur;
}

pb_any_t *tx_any(tx_t *t, const void *msg)
{
    const ProtobufCMessage *m = msg;
    pb_any_t *a = TX_NEW(t, pb_any_t, GOOGLE__PROTOBUF__ANY__INIT);
    a->type_url = tx_printf(t, "%s%s", XDS_TYPE_PREFIX, m->descriptor->name);
    size_t len = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = arena_alloc(t->a, len ? len : 1);
    protobuf_c_message_pack(m, buf);
    a->value.data = buf;
    a->value.len = len;
    return a;
}

Google__Protobuf__Duration *tx_duration(tx_t *t, int64_t ns)
{
    Google__Protobuf__Duration *d = TX_NEW(t, Google__Protobuf__Duration, GOOGLE__PROTOBUF__DURATION__INIT);
    d->seconds = ns / 1000000000LL;
    d->nanos = (int32_t)(ns % 1000000000LL);
    return d;
}

Google__Protobuf__UInt32Value *tx_u32(tx_t *t, uint32_t v)
{
    Google__Protobuf__UInt32Value *w =
        TX_NEW(t, Google__Protobuf__UInt32Value, GOOGLE__PROTOBUF__UINT32_VALUE__INIT);
    w->value = v;
    return w;
}

Google__Protobuf__UInt64Value *tx_u64(tx_t *t, uint64_t v)
{
    Google__Protobuf__UInt64Value *w =
        TX_NEW(t, Google__Protobuf__UInt64Value, GOOGLE__PROTOBUF__UINT64_VALUE__INIT);
    w->value = v;
    return w;
}

Google__Protobuf__BoolValue *tx_bool(tx_t *t, bool v)
{
    Google__Protobuf__BoolValue *w =
        TX_NEW(t, Google__Protobuf__BoolValue, GOOGLE__PROTOBUF__BOOL_VALUE__INIT);
    w->value = v;
    return w;
}

pb_address_t *tx_socket_address(tx_t *t, const char *ip, uint32_t port)
{
    Envoy__Config__Core__V3__SocketAddress *sa = TX_NEW(
        t, Envoy__Config__Core__V3__SocketAddress, ENVOY__CONFIG__CORE__V3__SOCKET_ADDRESS__INIT);
    sa->address = tx_str(t, ip);
    sa->port_specifier_case = ENVOY__CONFIG__CORE__V3__SOCKET_ADDRESS__PORT_SPECIFIER_PORT_VALUE;
    sa->port_value = port;
    pb_address_t *a = TX_NEW(t, pb_address_t, ENVOY__CONFIG__CORE__V3__ADDRESS__INIT);
    a->address_case = ENVOY__CONFIG__CORE__V3__ADDRESS__ADDRESS_SOCKET_ADDRESS;
    a->socket_address = sa;
    return a;
}

Envoy__Config__Core__V3__ConfigSource *tx_ads(tx_t *t)
{
    Envoy__Config__Core__V3__ConfigSource *cs = TX_NEW(
        t, Envoy__Config__Core__V3__ConfigSource, ENVOY__CONFIG__CORE__V3__CONFIG_SOURCE__INIT);
    cs->config_source_specifier_case = ENVOY__CONFIG__CORE__V3__CONFIG_SOURCE__CONFIG_SOURCE_SPECIFIER_ADS;
    cs->ads = TX_NEW(t, Envoy__Config__Core__V3__AggregatedConfigSource,
                     ENVOY__CONFIG__CORE__V3__AGGREGATED_CONFIG_SOURCE__INIT);
    cs->resource_api_version = ENVOY__CONFIG__CORE__V3__API_VERSION__V3;
    return cs;
}

Envoy__Type__V3__FractionalPercent *tx_fraction(tx_t *t, double percent)
{
    Envoy__Type__V3__FractionalPercent *f =
        TX_NEW(t, Envoy__Type__V3__FractionalPercent, ENVOY__TYPE__V3__FRACTIONAL_PERCENT__INIT);
    if (percent < 0)
        percent = 0;
    if (percent > 100)
        percent = 100;
    f->numerator = (uint32_t)(percent * 10000.0 + 0.5);
    f->denominator = ENVOY__TYPE__V3__FRACTIONAL_PERCENT__DENOMINATOR_TYPE__MILLION;
    return f;
}

Envoy__Config__Core__V3__RuntimeFractionalPercent *tx_runtime_fraction(tx_t *t, double percent)
{
    Envoy__Config__Core__V3__RuntimeFractionalPercent *r =
        TX_NEW(t, Envoy__Config__Core__V3__RuntimeFractionalPercent,
               ENVOY__CONFIG__CORE__V3__RUNTIME_FRACTIONAL_PERCENT__INIT);
    r->default_value = tx_fraction(t, percent);
    return r;
}

pb_smatch_t *tx_smatch_exact(tx_t *t, const char *s)
{
    pb_smatch_t *m = TX_NEW(t, pb_smatch_t, ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__INIT);
    m->match_pattern_case = ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__MATCH_PATTERN_EXACT;
    m->exact = tx_str(t, s);
    return m;
}

pb_smatch_t *tx_smatch_prefix(tx_t *t, const char *s)
{
    pb_smatch_t *m = TX_NEW(t, pb_smatch_t, ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__INIT);
    m->match_pattern_case = ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__MATCH_PATTERN_PREFIX;
    m->prefix = tx_str(t, s);
    return m;
}

pb_smatch_t *tx_smatch_suffix(tx_t *t, const char *s)
{
    pb_smatch_t *m = TX_NEW(t, pb_smatch_t, ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__INIT);
    m->match_pattern_case = ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__MATCH_PATTERN_SUFFIX;
    m->suffix = tx_str(t, s);
    return m;
}

pb_smatch_t *tx_smatch_regex(tx_t *t, const char *re)
{
    Envoy__Type__Matcher__V3__RegexMatcher *r = TX_NEW(
        t, Envoy__Type__Matcher__V3__RegexMatcher, ENVOY__TYPE__MATCHER__V3__REGEX_MATCHER__INIT);
    r->regex = tx_str(t, re);
    pb_smatch_t *m = TX_NEW(t, pb_smatch_t, ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__INIT);
    m->match_pattern_case = ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__MATCH_PATTERN_SAFE_REGEX;
    m->safe_regex = r;
    return m;
}

pb_filter_t *tx_network_filter(tx_t *t, const char *name, const void *cfg)
{
    pb_filter_t *f = TX_NEW(t, pb_filter_t, ENVOY__CONFIG__LISTENER__V3__FILTER__INIT);
    f->name = tx_str(t, name);
    f->config_type_case = ENVOY__CONFIG__LISTENER__V3__FILTER__CONFIG_TYPE_TYPED_CONFIG;
    f->typed_config = tx_any(t, cfg);
    return f;
}

pb_hfilter_t *tx_http_filter(tx_t *t, const char *name, const void *cfg)
{
    pb_hfilter_t *f = TX_NEW(
        t, pb_hfilter_t,
        ENVOY__EXTENSIONS__FILTERS__NETWORK__HTTP_CONNECTION_MANAGER__V3__HTTP_FILTER__INIT);
    f->name = tx_str(t, name);
    f->config_type_case =
        ENVOY__EXTENSIONS__FILTERS__NETWORK__HTTP_CONNECTION_MANAGER__V3__HTTP_FILTER__CONFIG_TYPE_TYPED_CONFIG;
    f->typed_config = tx_any(t, cfg);
    return f;
}

/* ---- string map ---- */

static uint64_t str_hash(const char *s)
{
    uint64_t h = 14695981039346656037ULL;
    for (; *s; s++) {
        h ^= (uint8_t)*s;
        h *= 1099511628211ULL;
    }
    return h;
}

static tx_map_entry_t *map_find(const tx_map_t *m, const char *key)
{
    size_t mask = m->cap - 1;
    for (size_t i = (size_t)str_hash(key) & mask;; i = (i + 1) & mask)
        if (m->v[i].key == NULL || strcmp(m->v[i].key, key) == 0)
            return &m->v[i];
}

void *tx_map_get(const tx_map_t *m, const char *key)
{
    if (m->cap == 0)
        return NULL;
    tx_map_entry_t *e = map_find(m, key);
    return e->key ? e->val : NULL;
}

void **tx_map_slot(tx_t *t, tx_map_t *m, const char *key)
{
    if (2 * (m->n + 1) > m->cap) { /* keep it at most half full */
        tx_map_t g = {.cap = m->cap ? m->cap * 2 : 64};
        g.v = arena_alloc(t->a, g.cap * sizeof(*g.v));
        for (size_t i = 0; i < m->cap; i++)
            if (m->v[i].key)
                *map_find(&g, m->v[i].key) = m->v[i];
        g.n = m->n;
        *m = g;
    }
    tx_map_entry_t *e = map_find(m, key);
    if (e->key == NULL) {
        e->key = key;
        m->n++;
    }
    return &e->val;
}

void tx_emit(tx_t *t, xds_type_t type, const char *name, const void *msg)
{
    if (t->part == TX_OUTBOUND && type > XDS_ENDPOINT)
        return; /* anything past LDS/RDS/CDS/EDS is per proxy, never shared */
    bool dup = tx_map_get(&t->emitted[type], name) != NULL;
    if (dup && t->rec == NULL)
        return; /* first one wins, like Istio's de-duplication */
    arena_t *cur = t->a;
    t->a = t->keep;
    tx_out_t o = {tx_str(t, name), msg, NULL, 0};
    if (cur != t->keep) { /* its arena goes soon: serialize now */
        o.len = protobuf_c_message_get_packed_size(o.msg);
        uint8_t *buf = arena_alloc(dup ? t->keep : t->res_arena, o.len ? o.len : 1);
        protobuf_c_message_pack(o.msg, buf);
        o.data = buf;
        o.msg = NULL;
        if (t->rec) {
            tx_rec_item_t it = {type, o.name, o.data, o.len};
            TX_PUSH(t, t->rec->v, t->rec->n, it);
        }
    }
    if (!dup) {
        TX_PUSH(t, t->out[type], t->nout[type], o);
        *tx_map_slot(t, &t->emitted[type], o.name) = (void *)(uintptr_t)t->nout[type];
    }
    t->a = cur;
}

/* Emits a resource serialized elsewhere: its bytes are borrowed from the
 * cache (the result holds the cache's bytes, see translate_part). */
static void emit_packed(tx_t *t, xds_type_t type, const char *name, const uint8_t *data,
                        size_t len)
{
    if (tx_map_get(&t->emitted[type], name) != NULL)
        return;
    tx_out_t o = {arena_strdup(t->keep, name), NULL, data, len};
    arena_t *cur = t->a;
    t->a = t->keep;
    TX_PUSH(t, t->out[type], t->nout[type], o);
    *tx_map_slot(t, &t->emitted[type], o.name) = (void *)(uintptr_t)t->nout[type];
    t->a = cur;
}

void tx_record_begin(tx_t *t, tx_rec_t *rec)
{
    memset(rec, 0, sizeof(*rec));
    t->rec = rec;
}

void tx_scratch_begin(tx_t *t)
{
    if (t->part == TX_OUTBOUND && t->a == t->keep)
        t->a = arena_new(64 * 1024);
}

void tx_scratch_end(tx_t *t)
{
    if (t->a == t->keep)
        return;
    arena_free(t->a);
    t->a = t->keep;
    t->san_svc = NULL; /* its list was in the scratch arena */
    t->sans = NULL;
    t->nsans = 0;
}

bool tx_emitted(const tx_t *t, xds_type_t type, const char *name)
{
    return tx_map_get(&t->emitted[type], name) != NULL;
}

/* ---- lookups ---- */

bool tx_proxy_selected(tx_t *t, const cfg_map_t *selector)
{
    return reg_labels_match_map(&t->px->labels, selector);
}

const reg_service_t *tx_service(tx_t *t, const char *host)
{
    size_t lo = 0, hi = t->nsvcs;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = strcmp(t->svcs[mid]->hostname, host);
        if (c == 0) {
            /* prefer the proxy's namespace among equal hostnames */
            size_t first = mid;
            while (first > 0 && strcmp(t->svcs[first - 1]->hostname, host) == 0)
                first--;
            for (size_t i = first; i < t->nsvcs && strcmp(t->svcs[i]->hostname, host) == 0; i++)
                if (strcmp(t->svcs[i]->namespace, t->px->namespace) == 0)
                    return t->svcs[i];
            return t->svcs[first];
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

static int obj_cmp(const void *a, const void *b)
{
    const cfg_object_t *x = *(const cfg_object_t *const *)a, *y = *(const cfg_object_t *const *)b;
    int c = strcmp(x->namespace, y->namespace);
    return c ? c : strcmp(x->name, y->name);
}

static void objlist_push(tx_t *t, tx_objlist_t *l, const cfg_object_t *o)
{
    if (l->n && l->v[l->n - 1] == o)
        return;
    TX_PUSH(t, l->v, l->n, o);
}

static void objlist_add(tx_t *t, tx_map_t *m, const char *key, const cfg_object_t *o)
{
    void **slot = tx_map_slot(t, m, key);
    if (*slot == NULL)
        *slot = arena_alloc(t->a, sizeof(tx_objlist_t));
    objlist_push(t, *slot, o);
}

static bool mesh_bound(const cfg_VirtualService *vs)
{
    if (vs->gateways.n == 0)
        return true;
    for (uint32_t i = 0; i < vs->gateways.n; i++)
        if (strcmp(vs->gateways.v[i], "mesh") == 0)
            return true;
    return false;
}

/* Indexes the visible DestinationRules and VirtualServices by resolved host,
 * keeping snapshot order within each list. */
static void build_index(tx_t *t)
{
    t->indexed = true;
    for (size_t i = 0; i < t->ndrs; i++) {
        const cfg_object_t *o = t->drs[i];
        const cfg_DestinationRule *dr = CFG_BODY(o, DestinationRule)->spec;
        if (dr == NULL || dr->host == NULL)
            continue;
        const char *h = xds_resolve_host(t->a, dr->host, o->namespace);
        objlist_add(t, &t->dr_by_host, h, o);
        if (h[0] == '*')
            objlist_push(t, &t->dr_wild, o);
    }
    for (size_t i = 0; i < t->nvss; i++) {
        const cfg_object_t *o = t->vss[i];
        const cfg_VirtualService *vs = CFG_BODY(o, VirtualService)->spec;
        if (vs == NULL)
            continue;
        if (vs->tcp.n)
            objlist_push(t, &t->vs_tcp, o);
        if (!mesh_bound(vs))
            continue;
        for (uint32_t j = 0; j < vs->hosts.n; j++) {
            const char *h = xds_resolve_host(t->a, vs->hosts.v[j], o->namespace);
            if (h[0] == '*')
                objlist_push(t, &t->vs_wild, o);
            else
                objlist_add(t, &t->vs_by_host, h, o);
        }
    }
}

const cfg_object_t *tx_vs_for_host(tx_t *t, const char *host)
{
    if (!t->indexed)
        build_index(t);
    /* the first in snapshot order among exact and wildcard matches */
    const tx_objlist_t *ex = tx_map_get(&t->vs_by_host, host);
    const cfg_object_t *best = ex && ex->n ? ex->v[0] : NULL;
    for (size_t i = 0; i < t->vs_wild.n; i++) {
        const cfg_object_t *o = t->vs_wild.v[i];
        if (best && obj_cmp(&o, &best) >= 0)
            break;
        const cfg_VirtualService *vs = CFG_BODY(o, VirtualService)->spec;
        for (uint32_t j = 0; j < vs->hosts.n; j++) {
            const char *h = xds_resolve_host(t->a, vs->hosts.v[j], o->namespace);
            if (xds_host_match(h, host)) {
                best = o;
                break;
            }
        }
        if (best == o)
            break;
    }
    return best;
}

static bool dr_applies(tx_t *t, const cfg_object_t *o, const cfg_DestinationRule *dr)
{
    if (dr->workloadSelector && !tx_proxy_selected(t, &dr->workloadSelector->matchLabels))
        return false;
    return dr->workloadSelector == NULL || strcmp(o->namespace, t->px->namespace) == 0;
}

const cfg_DestinationRule *tx_dr_for(tx_t *t, const char *host, const cfg_object_t **obj)
{
    /* Precedence: the proxy's namespace, the service's namespace, the root
     * namespace, then any other namespace; exact host before wildcards. */
    if (!t->indexed)
        build_index(t);
    const reg_service_t *s = tx_service(t, host);
    const char *order[3] = {t->px->namespace, s ? s->namespace : NULL, t->root_ns};
    for (int exact = 1; exact >= 0; exact--) {
        const tx_objlist_t *l = exact ? tx_map_get(&t->dr_by_host, host) : &t->dr_wild;
        if (l == NULL)
            continue;
        for (int pass = 0; pass < 4; pass++) {
            for (size_t i = 0; i < l->n; i++) {
                const cfg_object_t *o = l->v[i];
                const cfg_DestinationRule *dr = CFG_BODY(o, DestinationRule)->spec;
                if (pass < 3 && (order[pass] == NULL || strcmp(o->namespace, order[pass]) != 0))
                    continue;
                if (!dr_applies(t, o, dr))
                    continue;
                if (!exact) {
                    const char *h = xds_resolve_host(t->a, dr->host, o->namespace);
                    if (!xds_host_match(h, host))
                        continue;
                }
                if (obj)
                    *obj = o;
                return dr;
            }
        }
    }
    return NULL;
}

const cfg_Subset *tx_dr_subset(const cfg_DestinationRule *dr, const char *name)
{
    for (uint32_t i = 0; dr && name && i < dr->subsets.n; i++)
        if (dr->subsets.v[i].name && strcmp(dr->subsets.v[i].name, name) == 0)
            return &dr->subsets.v[i];
    return NULL;
}

static void policy_apply(const cfg_TrafficPolicy *tp, uint32_t port, tx_policy_t *out)
{
    if (tp == NULL)
        return;
    if (tp->loadBalancer)
        out->lb = tp->loadBalancer;
    if (tp->connectionPool)
        out->pool = tp->connectionPool;
    if (tp->outlierDetection)
        out->outlier = tp->outlierDetection;
    if (tp->tls)
        out->tls = tp->tls;
    for (uint32_t i = 0; i < tp->portLevelSettings.n; i++) {
        const cfg_TrafficPolicyPortTrafficPolicy *pl = &tp->portLevelSettings.v[i];
        if (pl->port == NULL || pl->port->number != port)
            continue;
        if (pl->loadBalancer)
            out->lb = pl->loadBalancer;
        if (pl->connectionPool)
            out->pool = pl->connectionPool;
        if (pl->outlierDetection)
            out->outlier = pl->outlierDetection;
        if (pl->tls)
            out->tls = pl->tls;
    }
}

void tx_policy_for(const cfg_DestinationRule *dr, const cfg_Subset *subset, uint32_t port,
                   tx_policy_t *out)
{
    memset(out, 0, sizeof(*out));
    if (dr == NULL)
        return;
    policy_apply(dr->trafficPolicy, port, out);
    if (subset)
        policy_apply(subset->trafficPolicy, port, out);
}

/* ---- scope ---- */

typedef struct collect {
    tx_t *t;
    const cfg_object_t **v;
    size_t n;
    cfg_kind_t kind;
} collect_t;

static int collect_visible(void *ud, cfg_object_t *o)
{
    collect_t *c = ud;
    const cfg_strlist_t *exp = NULL;
    if (c->kind == CFG_VirtualService) {
        const cfg_VirtualService *vs = CFG_BODY(o, VirtualService)->spec;
        if (vs)
            exp = &vs->exportTo;
    } else {
        const cfg_DestinationRule *dr = CFG_BODY(o, DestinationRule)->spec;
        if (dr)
            exp = &dr->exportTo;
    }
    if (exp && !reg_export_visible((const char *const *)exp->v, exp->n, o->namespace,
                                   c->t->px->namespace))
        return 0;
    TX_PUSH(c->t, c->v, c->n, o);
    return 0;
}

typedef struct sidecar_pick {
    tx_t *t;
    const cfg_object_t *selected, *ns_default, *root_default;
} sidecar_pick_t;

static int pick_sidecar(void *ud, cfg_object_t *o)
{
    sidecar_pick_t *p = ud;
    const cfg_Sidecar *sc = CFG_BODY(o, Sidecar)->spec;
    if (sc == NULL)
        return 0;
    bool own = strcmp(o->namespace, p->t->px->namespace) == 0;
    bool has_sel = sc->workloadSelector && sc->workloadSelector->labels.n > 0;
    if (own && has_sel && tx_proxy_selected(p->t, &sc->workloadSelector->labels)) {
        if (p->selected == NULL || strcmp(o->name, p->selected->name) < 0)
            p->selected = o;
    } else if (own && !has_sel) {
        if (p->ns_default == NULL || strcmp(o->name, p->ns_default->name) < 0)
            p->ns_default = o;
    } else if (!has_sel && strcmp(o->namespace, p->t->root_ns) == 0) {
        if (p->root_default == NULL || strcmp(o->name, p->root_default->name) < 0)
            p->root_default = o;
    }
    return 0;
}

/* True when a Sidecar's egress hosts ("ns/host") include the service. */
static bool sidecar_allows(tx_t *t, const cfg_Sidecar *sc, const reg_service_t *s)
{
    if (sc->egress.n == 0)
        return true;
    for (uint32_t i = 0; i < sc->egress.n; i++) {
        const cfg_IstioEgressListener *eg = &sc->egress.v[i];
        for (uint32_t j = 0; j < eg->hosts.n; j++) {
            const char *h = eg->hosts.v[j];
            const char *slash = strchr(h, '/');
            if (slash == NULL)
                continue;
            size_t nl = (size_t)(slash - h);
            const char *host = slash + 1;
            bool ns_ok;
            if (nl == 1 && h[0] == '*')
                ns_ok = true;
            else if (nl == 1 && h[0] == '.')
                ns_ok = strcmp(s->namespace, t->px->namespace) == 0;
            else if (nl == 1 && h[0] == '~')
                ns_ok = false;
            else
                ns_ok = strlen(s->namespace) == nl && strncmp(s->namespace, h, nl) == 0;
            if (ns_ok && xds_host_match(host, s->hostname))
                return true;
        }
    }
    return false;
}

static void build_scope(tx_t *t)
{
    sidecar_pick_t sp = {.t = t};
    if (t->px->type == XDS_SIDECAR)
        cfg_snap_each(t->in->snap, CFG_Sidecar, pick_sidecar, &sp);
    t->sidecar = sp.selected ? sp.selected : sp.ns_default ? sp.ns_default : sp.root_default;
    const cfg_Sidecar *sc = t->sidecar ? CFG_BODY(t->sidecar, Sidecar)->spec : NULL;
    if (t->part == TX_INBOUND)
        return; /* the inbound part reads neither services nor routing rules */

    uint32_t n;
    const reg_service_t *const *all = reg_services(t->reg, &n);
    for (uint32_t i = 0; i < n; i++) {
        const reg_service_t *s = all[i];
        if (!reg_visible(s, t->px->namespace))
            continue;
        if (sc && !sidecar_allows(t, sc, s))
            continue;
        TX_PUSH(t, t->svcs, t->nsvcs, s);
    }
    collect_t c = {.t = t, .kind = CFG_VirtualService};
    cfg_snap_each(t->in->snap, CFG_VirtualService, collect_visible, &c);
    if (c.n)
        qsort(c.v, c.n, sizeof(*c.v), obj_cmp);
    t->vss = c.v;
    t->nvss = c.n;
    collect_t d = {.t = t, .kind = CFG_DestinationRule};
    cfg_snap_each(t->in->snap, CFG_DestinationRule, collect_visible, &d);
    if (d.n)
        qsort(d.v, d.n, sizeof(*d.v), obj_cmp);
    t->drs = d.v;
    t->ndrs = d.n;
    build_index(t);
}

/* ---- result ---- */

static uint64_t fnv64(const uint8_t *d, size_t n, uint64_t h)
{
    for (size_t i = 0; i < n; i++) {
        h ^= d[i];
        h *= 1099511628211ULL;
    }
    return h;
}

/* The hash of a resource set is a sum over its resources (name and content
 * hash, mixed), so that the hash of a merged result follows from its parts'
 * without reading every name again. */
static uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static uint64_t item_mix(const xds_resource_t *x)
{
    uint64_t h = fnv64((const uint8_t *)x->name, strlen(x->name) + 1, 14695981039346656037ULL);
    return mix64(h ^ mix64(x->hash + 0x9e3779b97f4a7c15ULL));
}

static uint64_t set_sum(const xds_resource_t *res, uint32_t n)
{
    uint64_t sum = 0;
    for (uint32_t i = 0; i < n; i++)
        sum += item_mix(&res[i]);
    return sum;
}

static uint64_t set_final(uint64_t sum, uint32_t n)
{
    return mix64(sum ^ mix64((uint64_t)n));
}

static int res_cmp(const void *a, const void *b)
{
    return strcmp(((const xds_resource_t *)a)->name, ((const xds_resource_t *)b)->name);
}

static xds_resources_t *shared_bytes(tx_shared_t *c);

/* One part (tx_part_t) of a proxy's configuration, serialized. */
static xds_resources_t *translate_part(const xds_input_t *in, const xds_proxy_t *proxy,
                                       tx_part_t part, tx_shared_t *shared)
{
    tx_t t = {0};
    t.a = t.keep = arena_new(256 * 1024);
    t.res_arena = arena_new(64 * 1024);
    t.in = in;
    t.px = proxy;
    t.part = part;
    t.shared = part == TX_OUTBOUND ? shared : NULL;
    t.reg = in->reg;
    t.trust_domain = in->trust_domain ? in->trust_domain : "cluster.local";
    t.root_ns = in->root_namespace ? in->root_namespace : "istio-system";
    t.locality = tx_proxy_locality(in->reg, proxy);
    build_scope(&t);
    if (proxy->proxyless && proxy->type == XDS_SIDECAR) {
        tx_build_grpc(&t);
    } else {
        tx_build_clusters(&t);
        tx_build_routes(&t);
        tx_build_listeners(&t);
        void tx_build_secrets(tx_t *t); /* translate_secret.c */
        tx_build_secrets(&t); /* SDS: what those listeners and clusters name */
    }

    xds_resources_t *r = mesh_xcalloc(1, sizeof(*r));
    atomic_init(&r->refs, 1);
    r->arena = t.res_arena;
    if (t.shared) /* replayed clusters and endpoints are the cache's bytes */
        r->parts[0] = xds_resources_ref(shared_bytes(t.shared));
    for (int ty = 0; ty < XDS_NTYPES; ty++) {
        r->n[ty] = (uint32_t)t.nout[ty];
        r->res[ty] = arena_alloc(r->arena, (t.nout[ty] + 1) * sizeof(xds_resource_t));
        for (size_t i = 0; i < t.nout[ty]; i++) {
            const ProtobufCMessage *m = t.out[ty][i].msg;
            size_t len = t.out[ty][i].len;
            const uint8_t *buf = t.out[ty][i].data;
            if (m != NULL) {
                len = protobuf_c_message_get_packed_size(m);
                uint8_t *p = arena_alloc(r->arena, len ? len : 1);
                protobuf_c_message_pack(m, p);
                buf = p;
            }
            xds_resource_t *x = &r->res[ty][i];
            x->name = arena_strdup(r->arena, t.out[ty][i].name);
            x->data = buf;
            x->len = len;
            x->hash = fnv64(buf, len, 14695981039346656037ULL);
        }
        qsort(r->res[ty], r->n[ty], sizeof(xds_resource_t), res_cmp);
        r->sum[ty] = set_sum(r->res[ty], r->n[ty]);
        r->hash[ty] = set_final(r->sum[ty], r->n[ty]);
    }
    r->warnings = arena_alloc(r->arena, (t.nwarnings + 1) * sizeof(char *));
    for (size_t i = 0; i < t.nwarnings; i++)
        r->warnings[i] = arena_strdup(r->arena, t.warnings[i]);
    r->nwarnings = (uint32_t)t.nwarnings;
    tx_scratch_end(&t);
    arena_free(t.keep);
    return r;
}

xds_resources_t *xds_translate(const xds_input_t *in, const xds_proxy_t *proxy)
{
    return translate_part(in, proxy, TX_ALL, NULL);
}

xds_resources_t *xds_resources_ref(xds_resources_t *r)
{
    if (r)
        atomic_fetch_add(&r->refs, 1);
    return r;
}

void xds_resources_unref(xds_resources_t *r)
{
    if (r == NULL || atomic_fetch_sub(&r->refs, 1) != 1)
        return;
    xds_resources_unref(r->parts[0]);
    xds_resources_unref(r->parts[1]);
    arena_free(r->arena);
    free(r);
}

const xds_resource_t *xds_resources_get(const xds_resources_t *r, xds_type_t t, uint32_t *n)
{
    if ((unsigned)t >= XDS_NTYPES) {
        *n = 0;
        return NULL;
    }
    *n = r->n[t];
    return r->res[t];
}

const xds_resource_t *xds_resources_find(const xds_resources_t *r, xds_type_t t,
                                         const char *name)
{
    if ((unsigned)t >= XDS_NTYPES)
        return NULL;
    xds_resource_t key = {.name = name};
    return bsearch(&key, r->res[t], r->n[t], sizeof(xds_resource_t), res_cmp);
}

uint64_t xds_resources_hash(const xds_resources_t *r, xds_type_t t)
{
    return (unsigned)t < XDS_NTYPES ? r->hash[t] : 0;
}

const char *const *xds_resources_warnings(const xds_resources_t *r, uint32_t *n)
{
    *n = r->nwarnings;
    return r->warnings;
}

/* ---- the shared outbound part ---- */

/* A label selector of an outbound rule: the proxies it selects may get other
 * outbound bytes than their namespace's other proxies. */
typedef struct shared_sel {
    const char *ns; /* only proxies of this namespace (DestinationRule), or NULL */
    const cfg_map_t *labels;
} shared_sel_t;

typedef struct shared_entry {
    char *key; /* the map's key */
    xds_resources_t *r; /* NULL while a thread builds it */
} shared_entry_t;

struct tx_shared {
    _Atomic uint32_t refs;
    pthread_mutex_t mu;
    pthread_cond_t built; /* an entry has been built */
    xds_input_t in;
    char *trust_domain, *root_namespace;
    shared_sel_t *sels;
    size_t nsels, capsels;
    hmap_t entries; /* key -> shared_entry_t */
    uint64_t nbuilt, nreused;
    /* clusters and endpoints per (service, DestinationRule), in the arena of
     * svc_bytes, a resource-less result that outbound parts hold a reference
     * to, as their resources borrow these bytes */
    hmap_t svc_out; /* "SERVICE|DR|LOCALITY|FAILOVER LABELS" (addresses) -> tx_rec_t */
    const cfg_DestinationRule **fo_drs; /* DestinationRules with failoverPriority */
    size_t nfo_drs, capfo_drs;
    xds_resources_t *svc_bytes;
    bool by_locality; /* some DestinationRule makes endpoints depend on the proxy's locality */
};

static xds_resources_t *shared_bytes(tx_shared_t *c)
{
    return c->svc_bytes;
}

static void sel_add(tx_shared_t *c, const char *ns, const cfg_map_t *labels)
{
    if (labels == NULL || labels->n == 0)
        return;
    if (c->nsels == c->capsels) {
        c->capsels = c->capsels ? c->capsels * 2 : 16;
        c->sels = mesh_xrealloc(c->sels, c->capsels * sizeof(*c->sels));
    }
    c->sels[c->nsels++] = (shared_sel_t){ns, labels};
}

static bool policy_by_locality(const cfg_TrafficPolicy *tp)
{
    if (tp == NULL)
        return false;
    if (tp->outlierDetection ||
        (tp->loadBalancer && tp->loadBalancer->localityLbSetting && tp->loadBalancer->localityLbSetting->distribute.n))
        return true;
    for (uint32_t i = 0; i < tp->portLevelSettings.n; i++) {
        const cfg_TrafficPolicyPortTrafficPolicy *pl = &tp->portLevelSettings.v[i];
        if (pl->outlierDetection ||
            (pl->loadBalancer && pl->loadBalancer->localityLbSetting && pl->loadBalancer->localityLbSetting->distribute.n))
            return true;
    }
    return false;
}

static bool policy_failover_priority(const cfg_TrafficPolicy *tp)
{
    for (uint32_t i = 0; tp && i <= tp->portLevelSettings.n; i++) {
        const cfg_LoadBalancerSettings *lb = i == 0 ? tp->loadBalancer : tp->portLevelSettings.v[i - 1].loadBalancer;
        if (lb && lb->localityLbSetting && lb->localityLbSetting->failoverPriority.n)
            return true;
    }
    return false;
}

/* Whether the DestinationRule's traffic policy or a subset's says yes. */
static bool dr_any_policy(const cfg_DestinationRule *dr, bool (*says)(const cfg_TrafficPolicy *))
{
    if (dr == NULL)
        return false;
    if (says(dr->trafficPolicy))
        return true;
    for (uint32_t i = 0; i < dr->subsets.n; i++)
        if (says(dr->subsets.v[i].trafficPolicy))
            return true;
    return false;
}

/* Whether the endpoints a DestinationRule shapes depend on the proxy's
 * locality (failover priorities need outlier detection; distribute). */
static bool dr_by_locality(const cfg_object_t *o)
{
    return o && dr_any_policy(CFG_BODY(o, DestinationRule)->spec, policy_by_locality);
}

static int collect_dr_sel(void *ud, cfg_object_t *o)
{
    tx_shared_t *c = ud;
    const cfg_DestinationRule *dr = CFG_BODY(o, DestinationRule)->spec;
    if (dr && dr->workloadSelector)
        sel_add(c, o->namespace, &dr->workloadSelector->matchLabels);
    c->by_locality |= dr_by_locality(o);
    /* some policy orders endpoints by labels: they depend on the proxy's */
    if (dr_by_locality(o) && dr_any_policy(dr, policy_failover_priority)) {
        if (c->nfo_drs == c->capfo_drs) {
            c->capfo_drs = c->capfo_drs ? c->capfo_drs * 2 : 8;
            c->fo_drs = mesh_xrealloc(c->fo_drs, c->capfo_drs * sizeof(*c->fo_drs));
        }
        c->fo_drs[c->nfo_drs++] = dr;
    }
    return 0;
}

static int collect_vs_sel(void *ud, cfg_object_t *o)
{
    const cfg_VirtualService *vs = CFG_BODY(o, VirtualService)->spec;
    for (uint32_t i = 0; vs && i < vs->http.n; i++)
        for (uint32_t j = 0; j < vs->http.v[i].match.n; j++)
            sel_add(ud, NULL, &vs->http.v[i].match.v[j].sourceLabels);
    for (uint32_t i = 0; vs && i < vs->tcp.n; i++)
        for (uint32_t j = 0; j < vs->tcp.v[i].match.n; j++)
            sel_add(ud, NULL, &vs->tcp.v[i].match.v[j].sourceLabels);
    return 0;
}

tx_shared_t *tx_shared_new(const xds_input_t *in)
{
    tx_shared_t *c = mesh_xcalloc(1, sizeof(*c));
    atomic_init(&c->refs, 1);
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->built, NULL);
    c->svc_bytes = mesh_xcalloc(1, sizeof(*c->svc_bytes));
    atomic_init(&c->svc_bytes->refs, 1);
    c->svc_bytes->arena = arena_new(256 * 1024);
    c->trust_domain = in->trust_domain ? mesh_xstrdup(in->trust_domain) : NULL;
    c->root_namespace = in->root_namespace ? mesh_xstrdup(in->root_namespace) : NULL;
    c->in = (xds_input_t){.snap = in->snap,
                          .reg = in->reg,
                          .trust_domain = c->trust_domain,
                          .root_namespace = c->root_namespace};
    cfg_snap_each(in->snap, CFG_DestinationRule, collect_dr_sel, c);
    cfg_snap_each(in->snap, CFG_VirtualService, collect_vs_sel, c);
    return c;
}

tx_shared_t *tx_shared_ref(tx_shared_t *c)
{
    if (c)
        atomic_fetch_add(&c->refs, 1);
    return c;
}

void tx_shared_unref(tx_shared_t *c)
{
    if (c == NULL || atomic_fetch_sub(&c->refs, 1) != 1)
        return;
    size_t it = 0;
    const char *k;
    void *v;
    while (hmap_next(&c->entries, &it, &k, &v)) {
        shared_entry_t *e = v;
        xds_resources_unref(e->r);
        free(e->key);
        free(e);
    }
    hmap_clear(&c->entries);
    hmap_clear(&c->svc_out);
    xds_resources_unref(c->svc_bytes);
    pthread_cond_destroy(&c->built);
    pthread_mutex_destroy(&c->mu);
    free(c->sels);
    free(c->fo_drs);
    free(c->trust_domain);
    free(c->root_namespace);
    free(c);
}

void tx_shared_stats(tx_shared_t *c, uint64_t *built, uint64_t *reused)
{
    pthread_mutex_lock(&c->mu);
    *built = c->nbuilt;
    *reused = c->nreused;
    pthread_mutex_unlock(&c->mu);
}

static bool same_str(const char *a, const char *b)
{
    return (a == NULL && b == NULL) || (a && b && strcmp(a, b) == 0);
}

/* What the outbound part reads of a proxy, as a malloc'd string: namespace,
 * the Sidecar that applies, which selectors match, and the locality
 * (failover priorities and locality weights depend on it). */
static char *shared_key(const tx_shared_t *c, const xds_proxy_t *px)
{
    tx_t t = {.in = &c->in, .px = px};
    t.root_ns = c->root_namespace ? c->root_namespace : "istio-system";
    sidecar_pick_t sp = {.t = &t};
    cfg_snap_each(c->in.snap, CFG_Sidecar, pick_sidecar, &sp);
    const cfg_object_t *sc = sp.selected     ? sp.selected
                             : sp.ns_default ? sp.ns_default
                                             : sp.root_default;
    const char *loc = c->by_locality ? tx_proxy_locality(c->in.reg, px) : "";
    size_t len = strlen(px->namespace) + c->nsels + strlen(loc) + 8 +
                 (sc ? strlen(sc->namespace) + strlen(sc->name) : 0);
    char *key = mesh_xcalloc(1, len);
    int n = snprintf(key, len, "%s|%s%s%s|", px->namespace, sc ? sc->namespace : "",
                     sc ? "/" : "", sc ? sc->name : "");
    for (size_t i = 0; i < c->nsels; i++) {
        const shared_sel_t *s = &c->sels[i];
        bool on = (s->ns == NULL || strcmp(s->ns, px->namespace) == 0) &&
                  reg_labels_match_map(&px->labels, s->labels);
        key[n++] = on ? '1' : '0';
    }
    snprintf(key + n, len - (size_t)n, "|%s", loc);
    for (size_t i = 0; i < c->nfo_drs; i++) { /* the proxy's failoverPriority label values */
        char fo[512];
        tx_failover_labels(px, c->fo_drs[i], fo, sizeof(fo));
        size_t kl = strlen(key), fl = strlen(fo);
        key = mesh_xrealloc(key, kl + fl + 2);
        key[kl] = '|';
        memcpy(key + kl + 1, fo, fl + 1);
    }
    return key;
}

/* The proxy's result: shared outbound part and own part, merged by name (the
 * outbound resource wins a name both have, as it is emitted first). */
static xds_resources_t *merge_parts(xds_resources_t *shared, xds_resources_t *own)
{
    xds_resources_t *r = mesh_xcalloc(1, sizeof(*r));
    atomic_init(&r->refs, 1);
    r->arena = arena_new(4096);
    r->parts[0] = xds_resources_ref(shared);
    r->parts[1] = xds_resources_ref(own);
    for (int ty = 0; ty < XDS_NTYPES; ty++) {
        const xds_resources_t *only = own->n[ty] == 0 ? shared : shared->n[ty] == 0 ? own : NULL;
        if (only) { /* nothing to merge: borrow the list as it is */
            r->res[ty] = only->res[ty];
            r->n[ty] = only->n[ty];
            r->sum[ty] = only->sum[ty];
            r->hash[ty] = only->hash[ty];
            continue;
        }
        /* the proxy's few resources go into the shared list where they sort */
        const xds_resource_t *a = shared->res[ty], *b = own->res[ty];
        uint32_t na = shared->n[ty], nb = own->n[ty], i = 0, k = 0;
        xds_resource_t *v = arena_alloc(r->arena, (na + nb + 1) * sizeof(*v));
        uint64_t sum = shared->sum[ty];
        for (uint32_t j = 0; j < nb; j++) {
            uint32_t lo = i, hi = na; /* first shared name >= b[j].name */
            while (lo < hi) {
                uint32_t mid = lo + (hi - lo) / 2;
                if (strcmp(a[mid].name, b[j].name) < 0)
                    lo = mid + 1;
                else
                    hi = mid;
            }
            memcpy(v + k, a + i, (lo - i) * sizeof(*v));
            k += lo - i;
            i = lo;
            if (i < na && strcmp(a[i].name, b[j].name) == 0)
                continue; /* the outbound resource of that name stays */
            v[k++] = b[j];
            sum += item_mix(&b[j]);
        }
        memcpy(v + k, a + i, (na - i) * sizeof(*v));
        k += na - i;
        r->res[ty] = v;
        r->n[ty] = k;
        r->sum[ty] = sum;
        r->hash[ty] = set_final(sum, k);
    }
    r->nwarnings = shared->nwarnings + own->nwarnings;
    r->warnings = arena_alloc(r->arena, (r->nwarnings + 1) * sizeof(char *));
    for (uint32_t i = 0; i < shared->nwarnings; i++)
        r->warnings[i] = shared->warnings[i];
    for (uint32_t i = 0; i < own->nwarnings; i++)
        r->warnings[shared->nwarnings + i] = own->warnings[i];
    return r;
}

xds_resources_t *tx_translate_shared(tx_shared_t *c, const xds_input_t *in,
                                     const xds_proxy_t *proxy)
{
    if (c == NULL || proxy->type != XDS_SIDECAR || proxy->proxyless || in->snap != c->in.snap ||
        in->reg != c->in.reg || !same_str(in->trust_domain, c->in.trust_domain) ||
        !same_str(in->root_namespace, c->in.root_namespace))
        return xds_translate(in, proxy);
    char *key = shared_key(c, proxy);
    pthread_mutex_lock(&c->mu);
    shared_entry_t *e = hmap_get(&c->entries, key);
    if (e == NULL) { /* ours to build; others wanting it wait */
        e = mesh_xcalloc(1, sizeof(*e));
        e->key = key;
        key = NULL;
        hmap_put(&c->entries, e->key, e);
        pthread_mutex_unlock(&c->mu);
        xds_resources_t *built = translate_part(&c->in, proxy, TX_OUTBOUND, c);
        pthread_mutex_lock(&c->mu);
        e->r = built;
        c->nbuilt++;
        pthread_cond_broadcast(&c->built);
    } else {
        while (e->r == NULL)
            pthread_cond_wait(&c->built, &c->mu);
        c->nreused++;
    }
    xds_resources_t *shared = xds_resources_ref(e->r);
    pthread_mutex_unlock(&c->mu);
    free(key);
    xds_resources_t *own = translate_part(&c->in, proxy, TX_INBOUND, NULL);
    xds_resources_t *r = merge_parts(shared, own);
    xds_resources_unref(own);
    xds_resources_unref(shared);
    return r;
}

static void svc_key(char *buf, size_t size, const tx_t *t, const reg_service_t *s, const cfg_object_t *dro)
{
    const char *loc = dr_by_locality(dro) && t->locality ? t->locality : "";
    char fo[512] = "";
    if (dro && t->px)
        tx_failover_labels(t->px, CFG_BODY(dro, DestinationRule)->spec, fo, sizeof(fo));
    snprintf(buf, size, "%p|%p|%s|%s", (const void *)s, (const void *)dro, loc, fo);
}

bool tx_shared_replay(tx_t *t, const reg_service_t *s, const cfg_object_t *dro)
{
    tx_shared_t *c = t->shared;
    if (c == NULL)
        return false;
    char key[1024];
    svc_key(key, sizeof(key), t, s, dro);
    pthread_mutex_lock(&c->mu);
    const tx_rec_t *rec = hmap_get(&c->svc_out, key);
    pthread_mutex_unlock(&c->mu);
    if (rec == NULL)
        return false;
    /* entries are never changed once added, and their arena never moves */
    for (size_t i = 0; i < rec->n; i++)
        emit_packed(t, rec->v[i].type, rec->v[i].name, rec->v[i].data, rec->v[i].len);
    return true;
}

void tx_shared_record(tx_t *t, const reg_service_t *s, const cfg_object_t *dro)
{
    tx_shared_t *c = t->shared;
    tx_rec_t *rec = t->rec;
    t->rec = NULL;
    if (c == NULL || rec == NULL)
        return;
    char key[1024];
    svc_key(key, sizeof(key), t, s, dro);
    pthread_mutex_lock(&c->mu);
    if (hmap_get(&c->svc_out, key) == NULL) {
        arena_t *svc_arena = c->svc_bytes->arena;
        tx_rec_t *kept = arena_alloc(svc_arena, sizeof(*kept));
        kept->v = arena_alloc(svc_arena, (rec->n + 1) * sizeof(*kept->v));
        for (size_t i = 0; i < rec->n; i++) {
            tx_rec_item_t *it = &kept->v[i];
            it->type = rec->v[i].type;
            it->name = arena_strdup(svc_arena, rec->v[i].name);
            uint8_t *d = arena_alloc(svc_arena, rec->v[i].len ? rec->v[i].len : 1);
            memcpy(d, rec->v[i].data, rec->v[i].len);
            it->data = d;
            it->len = rec->v[i].len;
        }
        kept->n = rec->n;
        hmap_put(&c->svc_out, arena_strdup(svc_arena, key), kept);
    }
    pthread_mutex_unlock(&c->mu);
}
