/*
 * xds_translate(): scoping (what a proxy sees), shared helpers, and the
 * serialized, sorted, hashed result.
 */
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/log.h"
#include "translate_internal.h"

struct xds_resources {
    _Atomic uint32_t refs;
    arena_t *arena;
    xds_resource_t *res[XDS_NTYPES];
    uint32_t n[XDS_NTYPES];
    uint64_t hash[XDS_NTYPES];
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
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    char *s = arena_alloc(t->a, (size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(s, (size_t)n + 1, fmt, ap);
    va_end(ap);
    TX_PUSH(t, t->warnings, t->nwarnings, s);
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

void tx_emit(tx_t *t, xds_type_t type, const char *name, const void *msg)
{
    for (size_t i = 0; i < t->nout[type]; i++)
        if (strcmp(t->out[type][i].name, name) == 0)
            return; /* first one wins, like Istio's de-duplication */
    tx_out_t o = {tx_str(t, name), msg};
    TX_PUSH(t, t->out[type], t->nout[type], o);
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

const cfg_DestinationRule *tx_dr_for(tx_t *t, const char *host, const cfg_object_t **obj)
{
    /* Precedence: the proxy's namespace, the service's namespace, the root
     * namespace, then any other namespace; exact host before wildcards. */
    const reg_service_t *s = tx_service(t, host);
    const char *order[3] = {t->px->namespace, s ? s->namespace : NULL, t->root_ns};
    for (int exact = 1; exact >= 0; exact--) {
        for (int pass = 0; pass < 4; pass++) {
            for (size_t i = 0; i < t->ndrs; i++) {
                const cfg_object_t *o = t->drs[i];
                const cfg_DestinationRule *dr = CFG_BODY(o, DestinationRule)->spec;
                if (dr == NULL || dr->host == NULL)
                    continue;
                if (pass < 3 && (order[pass] == NULL || strcmp(o->namespace, order[pass]) != 0))
                    continue;
                if (dr->workloadSelector && !tx_proxy_selected(t, &dr->workloadSelector->matchLabels))
                    continue;
                if (dr->workloadSelector && strcmp(o->namespace, t->px->namespace) != 0)
                    continue;
                const char *h = xds_resolve_host(t->a, dr->host, o->namespace);
                bool m = exact ? strcmp(h, host) == 0 : (h[0] == '*' && xds_host_match(h, host));
                if (!m)
                    continue;
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

static int obj_cmp(const void *a, const void *b)
{
    const cfg_object_t *x = *(const cfg_object_t *const *)a, *y = *(const cfg_object_t *const *)b;
    int c = strcmp(x->namespace, y->namespace);
    return c ? c : strcmp(x->name, y->name);
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

static int res_cmp(const void *a, const void *b)
{
    return strcmp(((const xds_resource_t *)a)->name, ((const xds_resource_t *)b)->name);
}

xds_resources_t *xds_translate(const xds_input_t *in, const xds_proxy_t *proxy)
{
    tx_t t = {0};
    t.a = arena_new(256 * 1024);
    t.in = in;
    t.px = proxy;
    t.reg = in->reg;
    t.trust_domain = in->trust_domain ? in->trust_domain : "cluster.local";
    t.root_ns = in->root_namespace ? in->root_namespace : "istio-system";
    build_scope(&t);
    if (proxy->proxyless && proxy->type == XDS_SIDECAR) {
        tx_build_grpc(&t);
    } else {
        tx_build_clusters(&t);
        tx_build_routes(&t);
        tx_build_listeners(&t);
    }

    xds_resources_t *r = mesh_xcalloc(1, sizeof(*r));
    atomic_init(&r->refs, 1);
    r->arena = arena_new(64 * 1024);
    for (int ty = 0; ty < XDS_NTYPES; ty++) {
        r->n[ty] = (uint32_t)t.nout[ty];
        r->res[ty] = arena_alloc(r->arena, (t.nout[ty] + 1) * sizeof(xds_resource_t));
        for (size_t i = 0; i < t.nout[ty]; i++) {
            const ProtobufCMessage *m = t.out[ty][i].msg;
            size_t len = protobuf_c_message_get_packed_size(m);
            uint8_t *buf = arena_alloc(r->arena, len ? len : 1);
            protobuf_c_message_pack(m, buf);
            xds_resource_t *x = &r->res[ty][i];
            x->name = arena_strdup(r->arena, t.out[ty][i].name);
            x->data = buf;
            x->len = len;
            x->hash = fnv64(buf, len, 14695981039346656037ULL);
        }
        qsort(r->res[ty], r->n[ty], sizeof(xds_resource_t), res_cmp);
        uint64_t h = 14695981039346656037ULL;
        for (uint32_t i = 0; i < r->n[ty]; i++) {
            h = fnv64((const uint8_t *)r->res[ty][i].name, strlen(r->res[ty][i].name) + 1, h);
            h = fnv64((const uint8_t *)&r->res[ty][i].hash, sizeof(uint64_t), h);
        }
        r->hash[ty] = h;
    }
    r->warnings = arena_alloc(r->arena, (t.nwarnings + 1) * sizeof(char *));
    for (size_t i = 0; i < t.nwarnings; i++)
        r->warnings[i] = arena_strdup(r->arena, t.warnings[i]);
    r->nwarnings = (uint32_t)t.nwarnings;
    arena_free(t.a);
    return r;
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
