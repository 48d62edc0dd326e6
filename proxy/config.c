/*
 * Config snapshot: compiles xDS resources into the structures the request
 * path reads (see config_internal.h), and the router and load balancers that
 * read them.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <errno.h>
#include <openssl/ssl.h>

#include "config_internal.h"
#include "rbac_internal.h"
#include "tls_internal.h"
#include "envoy/extensions/filters/http/rbac/v3/rbac.pb-c.h"
#include "envoy/extensions/filters/network/rbac/v3/rbac.pb-c.h"
#include "envoy/extensions/transport_sockets/tls/v3/tls.pb-c.h"
#include "envoy/config/cluster/v3/cluster.pb-c.h"
#include "envoy/config/endpoint/v3/endpoint.pb-c.h"
#include "envoy/config/listener/v3/listener.pb-c.h"
#include "envoy/config/route/v3/route.pb-c.h"
#include "envoy/extensions/filters/http/fault/v3/fault.pb-c.h"
#include "envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.pb-c.h"
#include "envoy/extensions/filters/network/tcp_proxy/v3/tcp_proxy.pb-c.h"
#include "envoy/extensions/upstreams/http/v3/http_protocol_options.pb-c.h"

/* Control planes still send the deprecated header-matcher fields and
 * HeaderValueOption.append; Envoy accepts them, so the proxy reads them. */
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"

typedef Envoy__Config__Route__V3__RouteConfiguration pb_route_config_t;
typedef Envoy__Config__Route__V3__VirtualHost pb_vhost_t;
typedef Envoy__Config__Route__V3__Route pb_route_t;
typedef Envoy__Config__Route__V3__RouteMatch pb_match_t;
typedef Envoy__Config__Route__V3__RouteAction pb_action_t;
typedef Envoy__Config__Route__V3__HeaderMatcher pb_hmatch_t;
typedef Envoy__Type__Matcher__V3__StringMatcher pb_smatch_t;
typedef Envoy__Config__Core__V3__HeaderValueOption pb_hvo_t;
typedef Envoy__Config__Cluster__V3__Cluster pb_cluster_t;
typedef Envoy__Config__Endpoint__V3__ClusterLoadAssignment pb_cla_t;
typedef Envoy__Config__Listener__V3__Listener pb_listener_t;
typedef Envoy__Extensions__Filters__Network__HttpConnectionManager__V3__HttpConnectionManager
    pb_hcm_t;
typedef Envoy__Extensions__Filters__Network__TcpProxy__V3__TcpProxy pb_tcp_t;

typedef Envoy__Extensions__TransportSockets__Tls__V3__CommonTlsContext pb_ctls_t;
typedef Envoy__Extensions__TransportSockets__Tls__V3__DownstreamTlsContext pb_dtls_t;
typedef Envoy__Extensions__TransportSockets__Tls__V3__UpstreamTlsContext pb_utls_t;
typedef Envoy__Extensions__TransportSockets__Tls__V3__CertificateValidationContext pb_cvc_t;

/* PEM files a transport socket names are read when the snapshot is built. */
#define PX_MAX_PEM (1u << 20)

#define HCM_TYPE "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
#define TCP_TYPE "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"

/* Building context: the snapshot under construction and the error buffer. */
typedef struct build {
    px_snapshot_t *s;
    arena_t *a;
    char *err;
    size_t errlen;
    char where[256]; /* "RouteConfiguration r1: virtual_hosts[0].routes[2]" */
} build_t;

static int failf(build_t *b, const char *field, const char *why)
{
    /* "Kind name: path.field: why" (where holds "Kind name" or "Kind name: path") */
    const char *sep = !field[0] ? "" : strchr(b->where, ':') ? "." : ": ";
    snprintf(b->err, b->errlen, "%s%s%s: %s", b->where, sep, field, why);
    return -1;
}

static void build_retry(build_t *b, const Envoy__Config__Route__V3__RetryPolicy *p, px_retry_t *r);
static int build_transport(build_t *b, const char *field, const Envoy__Config__Core__V3__TransportSocket *ts,
                           bool server, const struct px_tls_cfg **out);
static uint32_t pct_ppm(const Envoy__Type__V3__FractionalPercent *p);

static const char *lower_dup(arena_t *a, const char *s)
{
    char *d = arena_strdup(a, s);
    for (char *p = d; *p; p++)
        if (*p >= 'A' && *p <= 'Z')
            *p = (char)(*p + 32);
    return d;
}

static int keep_code(build_t *b, pcre2_code *re)
{
    px_snapshot_t *s = b->s;
    if (s->_ncodes == s->_capcodes) {
        size_t cap = s->_capcodes ? s->_capcodes * 2 : 16;
        pcre2_code **n = realloc(s->_codes, cap * sizeof(*n));
        if (n == NULL) {
            pcre2_code_free(re);
            return failf(b, "", "out of memory");
        }
        s->_codes = n;
        s->_capcodes = cap;
    }
    s->_codes[s->_ncodes++] = re;
    return 0;
}

static int keep_re_cb(void *ud, pcre2_code *re)
{
    return keep_code(ud, re);
}

int px_regex_compile(const char *pattern, bool caseless, px_keep_re_fn keep_re, void *ud, pcre2_code **out,
                     char *why, size_t whylen)
{
    if (pattern == NULL) {
        snprintf(why, whylen, "regex is required");
        return -1;
    }
    int ec;
    PCRE2_SIZE off;
    uint32_t opts = PCRE2_ANCHORED | PCRE2_ENDANCHORED | PCRE2_UTF | (caseless ? PCRE2_CASELESS : 0);
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED, opts, &ec, &off, NULL);
    if (re == NULL) {
        PCRE2_UCHAR msg[160];
        pcre2_get_error_message(ec, msg, sizeof(msg));
        snprintf(why, whylen, "invalid regex \"%s\" at offset %zu: %s", pattern, (size_t)off, (char *)msg);
        return -1;
    }
    if (keep_re(ud, re) < 0) {
        snprintf(why, whylen, "regex \"%s\": out of memory", pattern);
        return -1;
    }
    *out = re;
    return 0;
}

int px_str_match_compile(arena_t *a, const pb_smatch_t *sm, px_keep_re_fn keep_re, void *ud, px_str_match_t *m,
                         char *why, size_t whylen)
{
    if (sm == NULL) {
        snprintf(why, whylen, "a string matcher is required");
        return -1;
    }
    m->ignore_case = sm->ignore_case;
    const char *v;
    switch (sm->match_pattern_case) {
    case ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__MATCH_PATTERN_EXACT:
        m->kind = PX_STR_EXACT;
        v = sm->exact;
        break;
    case ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__MATCH_PATTERN_PREFIX:
        m->kind = PX_STR_PREFIX;
        v = sm->prefix;
        break;
    case ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__MATCH_PATTERN_SUFFIX:
        m->kind = PX_STR_SUFFIX;
        v = sm->suffix;
        break;
    case ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__MATCH_PATTERN_CONTAINS:
        m->kind = PX_STR_CONTAINS;
        v = sm->contains;
        break;
    case ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__MATCH_PATTERN_SAFE_REGEX:
        /* ignore_case has no effect on safe_regex (Envoy) */
        m->kind = PX_STR_REGEX;
        m->ignore_case = false;
        return px_regex_compile(sm->safe_regex ? sm->safe_regex->regex : NULL, false, keep_re, ud, &m->re, why,
                                whylen);
    default:
        snprintf(why, whylen, "no match pattern set (exact, prefix, suffix, contains or safe_regex)");
        return -1;
    }
    m->value = arena_strdup(a, v ? v : "");
    m->value_len = strlen(m->value);
    return 0;
}

/* Compiles an anchored regex (Envoy's safe_regex matches the whole value). */
static int compile_regex(build_t *b, const char *field, const char *pattern, bool ignore_case,
                         pcre2_code **out)
{
    char why[512];
    if (px_regex_compile(pattern, ignore_case, keep_re_cb, b, out, why, sizeof(why)) < 0)
        return b->err[0] ? -1 : failf(b, field, why);
    return 0;
}

static int string_matcher(build_t *b, const char *field, const pb_smatch_t *sm, px_str_match_t *m)
{
    char why[512];
    if (px_str_match_compile(b->a, sm, keep_re_cb, b, m, why, sizeof(why)) < 0)
        return b->err[0] ? -1 : failf(b, field, why);
    return 0;
}

static int header_ops(build_t *b, const char *field, pb_hvo_t *const *add, size_t nadd,
                      char *const *rm, size_t nrm, px_header_ops_t *ops)
{
    ops->add = arena_alloc(b->a, (nadd ? nadd : 1) * sizeof(*ops->add));
    for (size_t i = 0; i < nadd; i++) {
        if (add[i]->header == NULL || add[i]->header->key == NULL || !add[i]->header->key[0]) {
            char f[96];
            snprintf(f, sizeof(f), "%s_to_add[%zu].header.key", field, i);
            return failf(b, f, "must not be empty");
        }
        ops->add[i].name = lower_dup(b->a, add[i]->header->key);
        ops->add[i].value = arena_strdup(b->a, add[i]->header->value ? add[i]->header->value : "");
        /* append (deprecated BoolValue, default true) or append_action */
        bool append = add[i]->append ? add[i]->append->value
                                     : add[i]->append_action ==
                                           ENVOY__CONFIG__CORE__V3__HEADER_VALUE_OPTION__HEADER_APPEND_ACTION__APPEND_IF_EXISTS_OR_ADD;
        ops->add[i].append = append;
    }
    ops->nadd = nadd;
    ops->remove = arena_alloc(b->a, (nrm ? nrm : 1) * sizeof(*ops->remove));
    for (size_t i = 0; i < nrm; i++)
        ops->remove[i] = lower_dup(b->a, rm[i]);
    ops->nremove = nrm;
    return 0;
}

static uint64_t duration_ms(const Google__Protobuf__Duration *d)
{
    if (d == NULL || d->seconds < 0)
        return 0;
    return (uint64_t)d->seconds * 1000 + (uint64_t)(d->nanos > 0 ? d->nanos / 1000000 : 0);
}

static int build_match(build_t *b, const pb_match_t *pm, px_route_t *rt)
{
    if (pm == NULL)
        return failf(b, "match", "is required");
    rt->case_sensitive = pm->case_sensitive ? pm->case_sensitive->value : true;
    switch (pm->path_specifier_case) {
    case ENVOY__CONFIG__ROUTE__V3__ROUTE_MATCH__PATH_SPECIFIER_PREFIX:
        rt->path_kind = PX_PATH_PREFIX;
        rt->path = arena_strdup(b->a, pm->prefix);
        break;
    case ENVOY__CONFIG__ROUTE__V3__ROUTE_MATCH__PATH_SPECIFIER_PATH:
        rt->path_kind = PX_PATH_EXACT;
        rt->path = arena_strdup(b->a, pm->path);
        break;
    case ENVOY__CONFIG__ROUTE__V3__ROUTE_MATCH__PATH_SPECIFIER_SAFE_REGEX:
        rt->path_kind = PX_PATH_REGEX;
        if (pm->safe_regex == NULL || pm->safe_regex->regex == NULL)
            return failf(b, "match.safe_regex", "regex is required");
        if (compile_regex(b, "match.safe_regex.regex", pm->safe_regex->regex, !rt->case_sensitive,
                          &rt->path_re) < 0)
            return -1;
        break;
    default:
        return failf(b, "match", "one of prefix, path or safe_regex is required");
    }
    rt->path_len = rt->path ? strlen(rt->path) : 0;

    rt->headers = arena_alloc(b->a, (pm->n_headers ? pm->n_headers : 1) * sizeof(*rt->headers));
    rt->nheaders = pm->n_headers;
    for (size_t i = 0; i < pm->n_headers; i++) {
        const pb_hmatch_t *h = pm->headers[i];
        px_header_match_t *hm = &rt->headers[i];
        char field[64];
        snprintf(field, sizeof(field), "match.headers[%zu]", i);
        if (h->name == NULL || !h->name[0])
            return failf(b, field, "name is required");
        hm->name = lower_dup(b->a, h->name);
        hm->invert = h->invert_match;
        px_str_match_t *m = &hm->m;
        switch (h->header_match_specifier_case) {
        case ENVOY__CONFIG__ROUTE__V3__HEADER_MATCHER__HEADER_MATCH_SPECIFIER_EXACT_MATCH:
            m->kind = PX_STR_EXACT;
            m->value = arena_strdup(b->a, h->exact_match);
            break;
        case ENVOY__CONFIG__ROUTE__V3__HEADER_MATCHER__HEADER_MATCH_SPECIFIER_PREFIX_MATCH:
            m->kind = PX_STR_PREFIX;
            m->value = arena_strdup(b->a, h->prefix_match);
            break;
        case ENVOY__CONFIG__ROUTE__V3__HEADER_MATCHER__HEADER_MATCH_SPECIFIER_SUFFIX_MATCH:
            m->kind = PX_STR_SUFFIX;
            m->value = arena_strdup(b->a, h->suffix_match);
            break;
        case ENVOY__CONFIG__ROUTE__V3__HEADER_MATCHER__HEADER_MATCH_SPECIFIER_CONTAINS_MATCH:
            m->kind = PX_STR_CONTAINS;
            m->value = arena_strdup(b->a, h->contains_match);
            break;
        case ENVOY__CONFIG__ROUTE__V3__HEADER_MATCHER__HEADER_MATCH_SPECIFIER_SAFE_REGEX_MATCH:
            m->kind = PX_STR_REGEX;
            if (h->safe_regex_match == NULL || h->safe_regex_match->regex == NULL)
                return failf(b, field, "safe_regex_match needs a regex");
            if (compile_regex(b, field, h->safe_regex_match->regex, false, &m->re) < 0)
                return -1;
            break;
        case ENVOY__CONFIG__ROUTE__V3__HEADER_MATCHER__HEADER_MATCH_SPECIFIER_PRESENT_MATCH:
            m->kind = PX_STR_PRESENT;
            hm->present = h->present_match;
            break;
        case ENVOY__CONFIG__ROUTE__V3__HEADER_MATCHER__HEADER_MATCH_SPECIFIER_STRING_MATCH:
            if (string_matcher(b, field, h->string_match, m) < 0)
                return -1;
            break;
        case ENVOY__CONFIG__ROUTE__V3__HEADER_MATCHER__HEADER_MATCH_SPECIFIER__NOT_SET:
            /* no specifier: the header must be present */
            m->kind = PX_STR_PRESENT;
            hm->present = true;
            break;
        default:
            return failf(b, field, "unsupported header match (range_match)");
        }
        if (m->value)
            m->value_len = strlen(m->value);
    }

    rt->query = arena_alloc(b->a, (pm->n_query_parameters ? pm->n_query_parameters : 1) *
                                      sizeof(*rt->query));
    rt->nquery = pm->n_query_parameters;
    for (size_t i = 0; i < pm->n_query_parameters; i++) {
        const Envoy__Config__Route__V3__QueryParameterMatcher *q = pm->query_parameters[i];
        char field[64];
        snprintf(field, sizeof(field), "match.query_parameters[%zu]", i);
        if (q->name == NULL || !q->name[0])
            return failf(b, field, "name is required");
        rt->query[i].name = arena_strdup(b->a, q->name);
        if (q->query_parameter_match_specifier_case ==
            ENVOY__CONFIG__ROUTE__V3__QUERY_PARAMETER_MATCHER__QUERY_PARAMETER_MATCH_SPECIFIER_STRING_MATCH) {
            if (string_matcher(b, field, q->string_match, &rt->query[i].m) < 0)
                return -1;
        } else {
            rt->query[i].m.kind = PX_STR_PRESENT;
        }
    }
    return 0;
}

static int build_action(build_t *b, const pb_action_t *ra, px_route_t *rt)
{
    switch (ra->cluster_specifier_case) {
    case ENVOY__CONFIG__ROUTE__V3__ROUTE_ACTION__CLUSTER_SPECIFIER_CLUSTER:
        if (ra->cluster == NULL || !ra->cluster[0])
            return failf(b, "route.cluster", "must not be empty");
        rt->action = PX_ACT_CLUSTER;
        rt->cluster = arena_strdup(b->a, ra->cluster);
        break;
    case ENVOY__CONFIG__ROUTE__V3__ROUTE_ACTION__CLUSTER_SPECIFIER_WEIGHTED_CLUSTERS: {
        const Envoy__Config__Route__V3__WeightedCluster *wc = ra->weighted_clusters;
        if (wc == NULL || wc->n_clusters == 0)
            return failf(b, "route.weighted_clusters.clusters", "must not be empty");
        rt->action = PX_ACT_WEIGHTED;
        rt->weighted = arena_alloc(b->a, wc->n_clusters * sizeof(*rt->weighted));
        rt->nweighted = wc->n_clusters;
        uint64_t total = 0;
        for (size_t i = 0; i < wc->n_clusters; i++) {
            const Envoy__Config__Route__V3__WeightedCluster__ClusterWeight *cw = wc->clusters[i];
            char field[80];
            snprintf(field, sizeof(field), "route.weighted_clusters.clusters[%zu]", i);
            if (cw->name == NULL || !cw->name[0])
                return failf(b, field, "name must not be empty");
            rt->weighted[i].cluster = arena_strdup(b->a, cw->name);
            rt->weighted[i].weight = cw->weight ? cw->weight->value : 0;
            total += rt->weighted[i].weight;
            if (header_ops(b, field, cw->request_headers_to_add, cw->n_request_headers_to_add,
                           cw->request_headers_to_remove, cw->n_request_headers_to_remove,
                           &rt->weighted[i].req) < 0 ||
                header_ops(b, field, cw->response_headers_to_add, cw->n_response_headers_to_add,
                           cw->response_headers_to_remove, cw->n_response_headers_to_remove,
                           &rt->weighted[i].resp) < 0)
                return -1;
        }
        if (total == 0 || total > UINT32_MAX)
            return failf(b, "route.weighted_clusters", "the sum of the weights must be in 1..2^32-1");
        if (wc->total_weight && wc->total_weight->value != total) {
            char why[120];
            snprintf(why, sizeof(why), "total_weight %u differs from the sum of the weights %llu",
                     wc->total_weight->value, (unsigned long long)total);
            return failf(b, "route.weighted_clusters.total_weight", why);
        }
        rt->total_weight = (uint32_t)total;
        break;
    }
    case ENVOY__CONFIG__ROUTE__V3__ROUTE_ACTION__CLUSTER_SPECIFIER_CLUSTER_HEADER:
        return failf(b, "route.cluster_header", "is not supported");
    default:
        return failf(b, "route", "one of cluster or weighted_clusters is required");
    }
    if (ra->prefix_rewrite && ra->prefix_rewrite[0])
        rt->prefix_rewrite = arena_strdup(b->a, ra->prefix_rewrite);
    if (ra->host_rewrite_specifier_case ==
        ENVOY__CONFIG__ROUTE__V3__ROUTE_ACTION__HOST_REWRITE_SPECIFIER_HOST_REWRITE_LITERAL)
        rt->host_rewrite = arena_strdup(b->a, ra->host_rewrite_literal);
    rt->timeout_ms = ra->timeout ? duration_ms(ra->timeout) : 15000; /* Envoy's default */
    build_retry(b, ra->retry_policy, &rt->retry);
    if (ra->n_request_mirror_policies) {
        rt->mirrors = arena_alloc(b->a, ra->n_request_mirror_policies * sizeof(*rt->mirrors));
        for (size_t i = 0; i < ra->n_request_mirror_policies; i++) {
            const Envoy__Config__Route__V3__RouteAction__RequestMirrorPolicy *mp = ra->request_mirror_policies[i];
            if (mp->cluster == NULL || mp->cluster[0] == '\0')
                return failf(b, "route.request_mirror_policies.cluster", "is required");
            px_mirror_t *mi = &rt->mirrors[rt->nmirrors++];
            mi->cluster = arena_strdup(b->a, mp->cluster);
            mi->ppm = mp->runtime_fraction ? pct_ppm(mp->runtime_fraction->default_value) : 1000000;
        }
    }
    for (size_t i = 0; i < ra->n_hash_policy && rt->hash == PX_HASH_NONE; i++) {
        const Envoy__Config__Route__V3__RouteAction__HashPolicy *hp = ra->hash_policy[i];
        switch (hp->policy_specifier_case) {
        case ENVOY__CONFIG__ROUTE__V3__ROUTE_ACTION__HASH_POLICY__POLICY_SPECIFIER_HEADER:
            if (hp->header && hp->header->header_name && hp->header->header_name[0]) {
                rt->hash = PX_HASH_HEADER;
                rt->hash_name = lower_dup(b->a, hp->header->header_name);
            }
            break;
        case ENVOY__CONFIG__ROUTE__V3__ROUTE_ACTION__HASH_POLICY__POLICY_SPECIFIER_CONNECTION_PROPERTIES:
            if (hp->connection_properties && hp->connection_properties->source_ip)
                rt->hash = PX_HASH_SOURCE_IP;
            break;
        case ENVOY__CONFIG__ROUTE__V3__ROUTE_ACTION__HASH_POLICY__POLICY_SPECIFIER_QUERY_PARAMETER:
            if (hp->query_parameter && hp->query_parameter->name && hp->query_parameter->name[0]) {
                rt->hash = PX_HASH_QUERY;
                rt->hash_name = arena_strdup(b->a, hp->query_parameter->name);
            }
            break;
        case ENVOY__CONFIG__ROUTE__V3__ROUTE_ACTION__HASH_POLICY__POLICY_SPECIFIER_COOKIE:
            if (hp->cookie && hp->cookie->name && hp->cookie->name[0]) {
                for (const char *c = hp->cookie->name; *c; c++)
                    if (*c <= ' ' || *c == ';' || *c == '=' || *c == ',' || *c == 0x7f)
                        return failf(b, "route.hash_policy.cookie.name", "not a cookie name");
                if (hp->cookie->path)
                    for (const char *c = hp->cookie->path; *c; c++)
                        if (*c < ' ' || *c == ';' || *c == 0x7f)
                            return failf(b, "route.hash_policy.cookie.path", "not a cookie path");
                rt->hash = PX_HASH_COOKIE;
                rt->hash_name = arena_strdup(b->a, hp->cookie->name);
                rt->cookie_ttl_s = hp->cookie->ttl ? duration_ms(hp->cookie->ttl) / 1000 : 0;
                rt->cookie_path = hp->cookie->path && hp->cookie->path[0] ? arena_strdup(b->a, hp->cookie->path) : NULL;
            }
            break;
        default:
            break; /* filter state: no hash from this policy */
        }
    }
    return 0;
}

uint32_t px_fraction_ppm(uint32_t numerator, int denominator_type)
{
    /* HUNDRED, TEN_THOUSAND, MILLION */
    static const uint32_t den[] = {100, 10000, 1000000};
    uint32_t d = denominator_type >= 0 && denominator_type <= 2 ? den[denominator_type] : 100;
    if (numerator > d)
        numerator = d;
    return (uint32_t)((uint64_t)numerator * 1000000u / d);
}

static uint32_t pct_ppm(const Envoy__Type__V3__FractionalPercent *p)
{
    /* an unset percentage is the proto default: 0 */
    return p ? px_fraction_ppm(p->numerator, (int)p->denominator) : 0;
}

/* The route's envoy.filters.http.fault config (an HTTPFault Any). */
static int build_fault(build_t *b, const Google__Protobuf__Any *any, px_fault_t *f)
{
    const ProtobufCMessageDescriptor *d = &envoy__extensions__filters__http__fault__v3__httpfault__descriptor;
    if (any == NULL || any->type_url == NULL)
        return 0;
    const char *t = strrchr(any->type_url, '/');
    t = t ? t + 1 : any->type_url;
    if (strcmp(t, d->name) != 0)
        return failf(b, "typed_per_filter_config.envoy.filters.http.fault",
                     "only envoy.extensions.filters.http.fault.v3.HTTPFault is supported");
    Envoy__Extensions__Filters__Http__Fault__V3__HTTPFault *h =
        (Envoy__Extensions__Filters__Http__Fault__V3__HTTPFault *)protobuf_c_message_unpack(
            d, NULL, any->value.len, any->value.data);
    if (h == NULL)
        return failf(b, "typed_per_filter_config.envoy.filters.http.fault", "cannot decode HTTPFault");
    int rc = 0;
    if (h->delay) {
        if (h->delay->fault_delay_secifier_case !=
            ENVOY__EXTENSIONS__FILTERS__COMMON__FAULT__V3__FAULT_DELAY__FAULT_DELAY_SECIFIER_FIXED_DELAY) {
            rc = failf(b, "fault.delay", "only fixed_delay is supported");
            goto out;
        }
        f->delay = true;
        f->delay_ms = h->delay->fixed_delay ? duration_ms(h->delay->fixed_delay) : 0;
        f->delay_ppm = pct_ppm(h->delay->percentage);
    }
    if (h->abort) {
        f->abort_http = 0;
        f->abort_grpc = -1;
        switch (h->abort->error_type_case) {
        case ENVOY__EXTENSIONS__FILTERS__HTTP__FAULT__V3__FAULT_ABORT__ERROR_TYPE_HTTP_STATUS:
            if (h->abort->http_status < 200 || h->abort->http_status > 599) {
                rc = failf(b, "fault.abort.http_status", "must be in 200..599");
                goto out;
            }
            f->abort_http = (int)h->abort->http_status;
            break;
        case ENVOY__EXTENSIONS__FILTERS__HTTP__FAULT__V3__FAULT_ABORT__ERROR_TYPE_GRPC_STATUS:
            f->abort_grpc = (int)h->abort->grpc_status;
            break;
        default:
            rc = failf(b, "fault.abort", "one of http_status or grpc_status is required");
            goto out;
        }
        f->abort = true;
        f->abort_ppm = pct_ppm(h->abort->percentage);
    }
out:
    protobuf_c_message_free_unpacked((ProtobufCMessage *)h, NULL);
    return rc;
}

uint32_t px_retry_on_parse(const char *s)
{
    static const struct { const char *name; uint32_t bit; } names[] = {
        {"5xx", PX_RETRY_5XX}, {"gateway-error", PX_RETRY_GATEWAY}, {"connect-failure", PX_RETRY_CONNECT},
        {"reset", PX_RETRY_RESET}, {"refused-stream", PX_RETRY_REFUSED}, {"retriable-4xx", PX_RETRY_4XX},
        {"retriable-status-codes", PX_RETRY_STATUS}, {"cancelled", PX_RETRY_GRPC_CANCELLED},
        {"deadline-exceeded", PX_RETRY_GRPC_DEADLINE}, {"resource-exhausted", PX_RETRY_GRPC_EXHAUSTED},
        {"internal", PX_RETRY_GRPC_INTERNAL}, {"unavailable", PX_RETRY_GRPC_UNAVAILABLE},
    };
    uint32_t on = 0;
    while (s && *s) {
        while (*s == ' ' || *s == ',')
            s++;
        size_t n = strcspn(s, ",");
        size_t t = n;
        while (t > 0 && s[t - 1] == ' ')
            t--;
        for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
            if (strlen(names[i].name) == t && strncmp(s, names[i].name, t) == 0)
                on |= names[i].bit;
        s += n;
    }
    return on;
}

bool px_retry_grpc(const px_retry_t *r, int s)
{
    return ((r->on & PX_RETRY_GRPC_CANCELLED) && s == 1) || ((r->on & PX_RETRY_GRPC_DEADLINE) && s == 4) ||
           ((r->on & PX_RETRY_GRPC_EXHAUSTED) && s == 8) || ((r->on & PX_RETRY_GRPC_INTERNAL) && s == 13) ||
           ((r->on & PX_RETRY_GRPC_UNAVAILABLE) && s == 14);
}

bool px_retry_status(const px_retry_t *r, int status)
{
    if ((r->on & PX_RETRY_5XX) && status >= 500 && status <= 599)
        return true;
    if ((r->on & PX_RETRY_GATEWAY) && (status == 502 || status == 503 || status == 504))
        return true;
    if ((r->on & PX_RETRY_4XX) && status == 409)
        return true;
    if (r->on & PX_RETRY_STATUS)
        for (size_t i = 0; i < r->ncodes; i++)
            if ((int)r->codes[i] == status)
                return true;
    return false;
}

static void build_retry(build_t *b, const Envoy__Config__Route__V3__RetryPolicy *p, px_retry_t *r)
{
    if (p == NULL)
        return;
    r->set = true;
    r->on = px_retry_on_parse(p->retry_on);
    r->num_retries = p->num_retries ? p->num_retries->value : 1; /* Envoy's default */
    r->per_try_timeout_ms = p->per_try_timeout ? duration_ms(p->per_try_timeout) : 0;
    r->base_ms = 25;
    if (p->retry_back_off && p->retry_back_off->base_interval && duration_ms(p->retry_back_off->base_interval))
        r->base_ms = duration_ms(p->retry_back_off->base_interval);
    r->max_ms = r->base_ms * 10;
    if (p->retry_back_off && p->retry_back_off->max_interval && duration_ms(p->retry_back_off->max_interval))
        r->max_ms = duration_ms(p->retry_back_off->max_interval);
    if (r->max_ms < r->base_ms)
        r->max_ms = r->base_ms;
    if (p->n_retriable_status_codes) {
        r->codes = arena_alloc(b->a, p->n_retriable_status_codes * sizeof(uint32_t));
        memcpy(r->codes, p->retriable_status_codes, p->n_retriable_status_codes * sizeof(uint32_t));
        r->ncodes = p->n_retriable_status_codes;
    }
    for (size_t i = 0; i < p->n_retry_host_predicate; i++)
        if (p->retry_host_predicate[i]->name &&
            strcmp(p->retry_host_predicate[i]->name, "envoy.retry_host_predicates.previous_hosts") == 0)
            r->other_host = true;
    r->other_priority = p->retry_priority && p->retry_priority->name &&
                        strcmp(p->retry_priority->name, "envoy.retry_priorities.previous_priorities") == 0;
    r->host_attempts = p->host_selection_retry_max_attempts > 0 ? (uint32_t)p->host_selection_retry_max_attempts : 1;
    if (r->host_attempts > 16)
        r->host_attempts = 16;
}

static int build_route(build_t *b, const pb_route_t *pr, px_route_t *rt)
{
    for (size_t i = 0; i < pr->n_typed_per_filter_config; i++) {
        const Envoy__Config__Route__V3__Route__TypedPerFilterConfigEntry *e = pr->typed_per_filter_config[i];
        if (e->key && strcmp(e->key, "envoy.filters.http.fault") == 0 && build_fault(b, e->value, &rt->fault) < 0)
            return -1;
    }
    rt->name = pr->name && pr->name[0] ? arena_strdup(b->a, pr->name) : NULL;
    if (build_match(b, pr->match, rt) < 0)
        return -1;
    switch (pr->action_case) {
    case ENVOY__CONFIG__ROUTE__V3__ROUTE__ACTION_ROUTE:
        if (build_action(b, pr->route, rt) < 0)
            return -1;
        break;
    case ENVOY__CONFIG__ROUTE__V3__ROUTE__ACTION_REDIRECT: {
        const Envoy__Config__Route__V3__RedirectAction *r = pr->redirect;
        static const int codes[] = {301, 302, 303, 307, 308};
        rt->action = PX_ACT_REDIRECT;
        if ((unsigned)r->response_code >= 5)
            return failf(b, "redirect.response_code", "unknown code");
        rt->redirect_code = codes[r->response_code];
        if (r->host_redirect && r->host_redirect[0])
            rt->redirect_host = arena_strdup(b->a, r->host_redirect);
        rt->redirect_port = r->port_redirect;
        rt->strip_query = r->strip_query;
        if (r->scheme_rewrite_specifier_case ==
                ENVOY__CONFIG__ROUTE__V3__REDIRECT_ACTION__SCHEME_REWRITE_SPECIFIER_HTTPS_REDIRECT &&
            r->https_redirect)
            rt->redirect_scheme = "https";
        else if (r->scheme_rewrite_specifier_case ==
                 ENVOY__CONFIG__ROUTE__V3__REDIRECT_ACTION__SCHEME_REWRITE_SPECIFIER_SCHEME_REDIRECT)
            rt->redirect_scheme = arena_strdup(b->a, r->scheme_redirect);
        if (r->path_rewrite_specifier_case ==
            ENVOY__CONFIG__ROUTE__V3__REDIRECT_ACTION__PATH_REWRITE_SPECIFIER_PATH_REDIRECT)
            rt->redirect_path = arena_strdup(b->a, r->path_redirect);
        else if (r->path_rewrite_specifier_case ==
                 ENVOY__CONFIG__ROUTE__V3__REDIRECT_ACTION__PATH_REWRITE_SPECIFIER_PREFIX_REWRITE)
            rt->redirect_prefix = arena_strdup(b->a, r->prefix_rewrite);
        else if (r->path_rewrite_specifier_case ==
                 ENVOY__CONFIG__ROUTE__V3__REDIRECT_ACTION__PATH_REWRITE_SPECIFIER_REGEX_REWRITE)
            return failf(b, "redirect.regex_rewrite", "is not supported");
        break;
    }
    case ENVOY__CONFIG__ROUTE__V3__ROUTE__ACTION_DIRECT_RESPONSE: {
        const Envoy__Config__Route__V3__DirectResponseAction *d = pr->direct_response;
        if (d->status < 200 || d->status > 599)
            return failf(b, "direct_response.status", "must be in 200..599");
        rt->action = PX_ACT_DIRECT;
        rt->direct_status = (int)d->status;
        if (d->body) {
            if (d->body->specifier_case == ENVOY__CONFIG__CORE__V3__DATA_SOURCE__SPECIFIER_INLINE_STRING) {
                rt->direct_body = arena_strdup(b->a, d->body->inline_string);
                rt->direct_body_len = strlen(rt->direct_body);
            } else if (d->body->specifier_case ==
                       ENVOY__CONFIG__CORE__V3__DATA_SOURCE__SPECIFIER_INLINE_BYTES) {
                rt->direct_body = arena_strndup(b->a, (const char *)d->body->inline_bytes.data,
                                                d->body->inline_bytes.len);
                rt->direct_body_len = d->body->inline_bytes.len;
            } else {
                return failf(b, "direct_response.body", "only inline_string or inline_bytes");
            }
        }
        break;
    }
    default:
        return failf(b, "", "one of route, redirect or direct_response is required");
    }
    return header_ops(b, "request_headers", pr->request_headers_to_add, pr->n_request_headers_to_add,
                      pr->request_headers_to_remove, pr->n_request_headers_to_remove, &rt->req) < 0 ||
                   header_ops(b, "response_headers", pr->response_headers_to_add,
                              pr->n_response_headers_to_add, pr->response_headers_to_remove,
                              pr->n_response_headers_to_remove, &rt->resp) < 0
               ? -1
               : 0;
}

static int build_route_config(build_t *b, const pb_route_config_t *pc, px_route_config_t *rc)
{
    size_t base = (size_t)snprintf(b->where, sizeof(b->where), "RouteConfiguration %s",
                                   pc->name ? pc->name : "");
    rc->name = arena_strdup(b->a, pc->name ? pc->name : "");
    if (header_ops(b, "request_headers", pc->request_headers_to_add, pc->n_request_headers_to_add,
                   pc->request_headers_to_remove, pc->n_request_headers_to_remove, &rc->req) < 0 ||
        header_ops(b, "response_headers", pc->response_headers_to_add,
                   pc->n_response_headers_to_add, pc->response_headers_to_remove,
                   pc->n_response_headers_to_remove, &rc->resp) < 0)
        return -1;
    rc->vhosts = arena_alloc(b->a, (pc->n_virtual_hosts ? pc->n_virtual_hosts : 1) * sizeof(*rc->vhosts));
    rc->nvhosts = pc->n_virtual_hosts;
    for (size_t i = 0; i < pc->n_virtual_hosts; i++) {
        const pb_vhost_t *pv = pc->virtual_hosts[i];
        px_vhost_t *vh = &rc->vhosts[i];
        snprintf(b->where + base, sizeof(b->where) - base, ": virtual_hosts[%zu]", i);
        vh->name = arena_strdup(b->a, pv->name ? pv->name : "");
        if (pv->n_domains == 0)
            return failf(b, "domains", "must not be empty");
        vh->domains = arena_alloc(b->a, pv->n_domains * sizeof(*vh->domains));
        vh->ndomains = pv->n_domains;
        for (size_t d = 0; d < pv->n_domains; d++) {
            const char *dom = pv->domains[d];
            size_t dl = strlen(dom);
            const char *star = strchr(dom, '*');
            if (dl == 0 || (star && dl > 1 && star != dom && star != dom + dl - 1) ||
                (star && strchr(star + 1, '*'))) {
                char f[48];
                snprintf(f, sizeof(f), "domains[%zu]", d);
                return failf(b, f, "a wildcard may only be the whole domain, a prefix or a suffix");
            }
            vh->domains[d] = lower_dup(b->a, dom);
            /* the same domain in two virtual hosts is ambiguous */
            for (size_t j = 0; j < i; j++)
                for (size_t k = 0; k < rc->vhosts[j].ndomains; k++)
                    if (strcmp(rc->vhosts[j].domains[k], vh->domains[d]) == 0) {
                        char f[48], why[200];
                        snprintf(f, sizeof(f), "domains[%zu]", d);
                        snprintf(why, sizeof(why), "\"%s\" is also a domain of virtual_hosts[%zu]",
                                 dom, j);
                        return failf(b, f, why);
                    }
        }
        if (header_ops(b, "request_headers", pv->request_headers_to_add, pv->n_request_headers_to_add,
                       pv->request_headers_to_remove, pv->n_request_headers_to_remove, &vh->req) < 0 ||
            header_ops(b, "response_headers", pv->response_headers_to_add,
                       pv->n_response_headers_to_add, pv->response_headers_to_remove,
                       pv->n_response_headers_to_remove, &vh->resp) < 0)
            return -1;
        vh->attempt_count = pv->include_request_attempt_count;
        vh->require_tls = pv->require_tls != ENVOY__CONFIG__ROUTE__V3__VIRTUAL_HOST__TLS_REQUIREMENT_TYPE__NONE;
        px_retry_t vretry = {0};
        build_retry(b, pv->retry_policy, &vretry);
        vh->routes = arena_alloc(b->a, (pv->n_routes ? pv->n_routes : 1) * sizeof(*vh->routes));
        vh->nroutes = pv->n_routes;
        for (size_t r = 0; r < pv->n_routes; r++) {
            snprintf(b->where + base, sizeof(b->where) - base, ": virtual_hosts[%zu].routes[%zu]", i, r);
            if (build_route(b, pv->routes[r], &vh->routes[r]) < 0)
                return -1;
            if (!vh->routes[r].retry.set)
                vh->routes[r].retry = vretry;
        }
    }
    return 0;
}

static int parse_sockaddr(const char *ip, uint32_t port, struct sockaddr_storage *ss, socklen_t *len)
{
    memset(ss, 0, sizeof(*ss));
    struct sockaddr_in *in4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
    if (port > 65535)
        return -1;
    if (inet_pton(AF_INET, ip, &in4->sin_addr) == 1) {
        in4->sin_family = AF_INET;
        in4->sin_port = htons((uint16_t)port);
        *len = sizeof(*in4);
        return 0;
    }
    if (inet_pton(AF_INET6, ip, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons((uint16_t)port);
        *len = sizeof(*in6);
        return 0;
    }
    return -1;
}

static int cmp_ring(const void *x, const void *y)
{
    const px_ring_entry_t *a = x, *b2 = y;
    return a->hash < b2->hash ? -1 : a->hash > b2->hash;
}

/* Fills a cluster's endpoints from a ClusterLoadAssignment (healthy and
 * unknown-health endpoints only; weights are endpoint x locality). */
static int build_endpoints(build_t *b, const pb_cla_t *cla, px_cluster_t *c)
{
    size_t n = 0;
    for (size_t l = 0; l < cla->n_endpoints; l++)
        n += cla->endpoints[l]->n_lb_endpoints;
    c->endpoints = arena_alloc(b->a, (n ? n : 1) * sizeof(*c->endpoints));
    c->nendpoints = 0;
    c->total_weight = 0;
    for (size_t l = 0; l < cla->n_endpoints; l++) {
        const Envoy__Config__Endpoint__V3__LocalityLbEndpoints *le = cla->endpoints[l];
        uint32_t lw = le->load_balancing_weight ? le->load_balancing_weight->value : 1;
        if (lw == 0)
            continue; /* weight 0 takes no traffic */
        for (size_t e = 0; e < le->n_lb_endpoints; e++) {
            const Envoy__Config__Endpoint__V3__LbEndpoint *lb = le->lb_endpoints[e];
            char field[96];
            snprintf(field, sizeof(field), "endpoints[%zu].lb_endpoints[%zu]", l, e);
            if (lb->health_status != ENVOY__CONFIG__CORE__V3__HEALTH_STATUS__UNKNOWN &&
                lb->health_status != ENVOY__CONFIG__CORE__V3__HEALTH_STATUS__HEALTHY)
                continue;
            if (lb->host_identifier_case != ENVOY__CONFIG__ENDPOINT__V3__LB_ENDPOINT__HOST_IDENTIFIER_ENDPOINT ||
                lb->endpoint->address == NULL ||
                lb->endpoint->address->address_case != ENVOY__CONFIG__CORE__V3__ADDRESS__ADDRESS_SOCKET_ADDRESS ||
                lb->endpoint->address->socket_address->port_specifier_case !=
                    ENVOY__CONFIG__CORE__V3__SOCKET_ADDRESS__PORT_SPECIFIER_PORT_VALUE)
                return failf(b, field, "needs endpoint.address.socket_address with port_value");
            const Envoy__Config__Core__V3__SocketAddress *sa = lb->endpoint->address->socket_address;
            px_endpoint_t *ep = &c->endpoints[c->nendpoints];
            if (parse_sockaddr(sa->address, sa->port_value, &ep->sa, &ep->salen) < 0) {
                char why[200];
                snprintf(why, sizeof(why), "\"%s\" port %u is not an IP address and port", sa->address,
                         sa->port_value);
                return failf(b, field, why);
            }
            char buf[80];
            snprintf(buf, sizeof(buf), strchr(sa->address, ':') ? "[%s]:%u" : "%s:%u", sa->address,
                     sa->port_value);
            ep->address = arena_strdup(b->a, buf);
            uint32_t w = lb->load_balancing_weight ? lb->load_balancing_weight->value : 1;
            if (w == 0)
                return failf(b, field, "load_balancing_weight must be >= 1");
            ep->weight = w * lw;
            ep->priority = le->priority;
            c->total_weight += ep->weight;
            c->nendpoints++;
        }
    }
    /* by priority, keeping the order within one */
    for (size_t i = 1; i < c->nendpoints; i++) {
        px_endpoint_t x = c->endpoints[i];
        size_t j = i;
        for (; j > 0 && c->endpoints[j - 1].priority > x.priority; j--)
            c->endpoints[j] = c->endpoints[j - 1];
        c->endpoints[j] = x;
    }
    size_t nl = 0;
    for (size_t i = 0; i < c->nendpoints; i++)
        nl += i == 0 || c->endpoints[i].priority != c->endpoints[i - 1].priority;
    c->levels = arena_alloc(b->a, (nl ? nl : 1) * sizeof(*c->levels));
    memset(c->levels, 0, (nl ? nl : 1) * sizeof(*c->levels));
    c->nlevels = 0;
    for (size_t i = 0; i < c->nendpoints; i++) {
        if (i == 0 || c->endpoints[i].priority != c->endpoints[i - 1].priority)
            c->levels[c->nlevels++] = (px_level_t){.priority = c->endpoints[i].priority, .first = i};
        px_level_t *lv = &c->levels[c->nlevels - 1];
        lv->n++;
        lv->total_weight += c->endpoints[i].weight;
    }
    for (size_t l = 0; c->lb == PX_LB_RING_HASH && l < c->nlevels; l++) {
        /* ~ 1024 ring entries per priority, in proportion to the weights */
        px_level_t *lv = &c->levels[l];
        size_t total = 0;
        size_t *per = arena_alloc(b->a, lv->n * sizeof(*per));
        for (size_t i = 0; i < lv->n; i++) {
            per[i] = (size_t)((1024 * (uint64_t)c->endpoints[lv->first + i].weight) / lv->total_weight);
            if (per[i] == 0)
                per[i] = 1;
            total += per[i];
        }
        lv->ring = arena_alloc(b->a, total * sizeof(*lv->ring));
        for (size_t i = 0; i < lv->n; i++)
            for (size_t k = 0; k < per[i]; k++) {
                char key[112];
                int kl = snprintf(key, sizeof(key), "%s_%zu", c->endpoints[lv->first + i].address, k);
                lv->ring[lv->nring].hash = px_hash64(key, (size_t)kl);
                lv->ring[lv->nring].endpoint = (uint32_t)(lv->first + i);
                lv->nring++;
            }
        qsort(lv->ring, lv->nring, sizeof(*lv->ring), cmp_ring);
    }
    return 0;
}

static const char *any_type(const Google__Protobuf__Any *a);

/* typed_extension_protocol_options "envoy.extensions.upstreams.http.v3.
 * HttpProtocolOptions": HTTP/2 upstream (explicit http2_protocol_options, or
 * the downstream's protocol). An upstream TLS context then offers "h2" by
 * ALPN (and only an HTTP/2 cluster does). */
static int build_upstream_protocol(build_t *b, const pb_cluster_t *pc, px_cluster_t *c)
{
    for (size_t i = 0; i < pc->n_typed_extension_protocol_options; i++) {
        const Envoy__Config__Cluster__V3__Cluster__TypedExtensionProtocolOptionsEntry *e =
            pc->typed_extension_protocol_options[i];
        if (e->value == NULL || strcmp(any_type(e->value),
                                       envoy__extensions__upstreams__http__v3__http_protocol_options__descriptor.name) != 0)
            continue;
        Envoy__Extensions__Upstreams__Http__V3__HttpProtocolOptions *o =
            envoy__extensions__upstreams__http__v3__http_protocol_options__unpack(NULL, e->value->value.len,
                                                                                e->value->value.data);
        if (o == NULL)
            return failf(b, "typed_extension_protocol_options", "undecodable HttpProtocolOptions");
        const Envoy__Config__Core__V3__Http2ProtocolOptions *h2 = NULL;
        if (o->upstream_protocol_options_case ==
                ENVOY__EXTENSIONS__UPSTREAMS__HTTP__V3__HTTP_PROTOCOL_OPTIONS__UPSTREAM_PROTOCOL_OPTIONS_EXPLICIT_HTTP_CONFIG &&
            o->explicit_http_config &&
            o->explicit_http_config->protocol_config_case ==
                ENVOY__EXTENSIONS__UPSTREAMS__HTTP__V3__HTTP_PROTOCOL_OPTIONS__EXPLICIT_HTTP_CONFIG__PROTOCOL_CONFIG_HTTP2_PROTOCOL_OPTIONS) {
            c->http2 = true;
            h2 = o->explicit_http_config->http2_protocol_options;
        } else if (o->upstream_protocol_options_case ==
                       ENVOY__EXTENSIONS__UPSTREAMS__HTTP__V3__HTTP_PROTOCOL_OPTIONS__UPSTREAM_PROTOCOL_OPTIONS_USE_DOWNSTREAM_PROTOCOL_CONFIG &&
                   o->use_downstream_protocol_config) {
            c->http2_downstream = o->use_downstream_protocol_config->http2_protocol_options != NULL;
            h2 = o->use_downstream_protocol_config->http2_protocol_options;
        }
        if (h2 && h2->max_concurrent_streams)
            c->h2_max_streams = h2->max_concurrent_streams->value;
        const Envoy__Config__Core__V3__HttpProtocolOptions *common = o->common_http_protocol_options;
        if (common && common->max_requests_per_connection)
            c->max_requests_per_conn = common->max_requests_per_connection->value;
        if (common && common->idle_timeout)
            c->idle_timeout_ms = duration_ms(common->idle_timeout);
        protobuf_c_message_free_unpacked(&o->base, NULL);
    }
    px_tls_cfg_t *t = (px_tls_cfg_t *)c->tls;
    if (t) {
        /* ALPN follows the cluster's protocol: h2 offered only when spoken */
        size_t k = 0;
        bool h2seen = false;
        for (size_t i = 0; i < t->nalpn; i++) {
            if (strcmp(t->alpn[i], "h2") == 0) {
                h2seen = true;
                if (!c->http2 && !c->http2_downstream)
                    continue;
            }
            t->alpn[k++] = t->alpn[i];
        }
        t->nalpn = k;
        t->h2 = c->http2 || c->http2_downstream;
        if ((c->http2 || c->http2_downstream) && !h2seen && t->nalpn < PX_TLS_MAX_ALPN) {
            memmove(t->alpn + 1, t->alpn, t->nalpn * sizeof(t->alpn[0]));
            t->alpn[0] = "h2";
            t->nalpn++;
            if (!c->http2 && t->nalpn < PX_TLS_MAX_ALPN) {
                /* the downstream's protocol: either */
                bool h1 = false;
                for (size_t i = 0; i < t->nalpn; i++)
                    h1 = h1 || strcmp(t->alpn[i], "http/1.1") == 0;
                if (!h1)
                    t->alpn[t->nalpn++] = "http/1.1";
            }
        }
        if (px_tls_cfg_finish(t, b->a) < 0)
            return failf(b, "transport_socket", "out of memory");
    }
    return 0;
}

static const Google__Protobuf__Value *struct_get(const Google__Protobuf__Struct *s, const char *key)
{
    for (size_t i = 0; s && i < s->n_fields; i++)
        if (s->fields[i]->key && strcmp(s->fields[i]->key, key) == 0)
            return s->fields[i]->value;
    return NULL;
}

static const char *struct_str(build_t *b, const Google__Protobuf__Struct *s, const char *key)
{
    const Google__Protobuf__Value *v = struct_get(s, key);
    return v && v->kind_case == GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE && v->string_value
               ? arena_strdup(b->a, v->string_value)
               : NULL;
}

/* Istio's cluster metadata: filter_metadata.istio.services[0]. */
static void cluster_service(build_t *b, const Envoy__Config__Core__V3__Metadata *md, px_cluster_t *c)
{
    for (size_t i = 0; md && i < md->n_filter_metadata; i++) {
        const Envoy__Config__Core__V3__Metadata__FilterMetadataEntry *e = md->filter_metadata[i];
        if (e->key == NULL || strcmp(e->key, "istio") != 0)
            continue;
        const Google__Protobuf__Value *l = struct_get(e->value, "services");
        if (l == NULL || l->kind_case != GOOGLE__PROTOBUF__VALUE__KIND_LIST_VALUE || l->list_value == NULL ||
            l->list_value->n_values == 0)
            return;
        const Google__Protobuf__Value *s = l->list_value->values[0];
        if (s == NULL || s->kind_case != GOOGLE__PROTOBUF__VALUE__KIND_STRUCT_VALUE)
            return;
        c->svc_host = struct_str(b, s->struct_value, "host");
        c->svc_name = struct_str(b, s->struct_value, "name");
        c->svc_ns = struct_str(b, s->struct_value, "namespace");
        return;
    }
}

static int build_cluster(build_t *b, const pb_cluster_t *pc, px_cluster_t *c, const px_resources_t *in)
{
    snprintf(b->where, sizeof(b->where), "Cluster %s", pc->name ? pc->name : "");
    if (pc->name == NULL || !pc->name[0])
        return failf(b, "name", "must not be empty");
    c->name = arena_strdup(b->a, pc->name);
    switch (pc->lb_policy) {
    case ENVOY__CONFIG__CLUSTER__V3__CLUSTER__LB_POLICY__ROUND_ROBIN:
        c->lb = PX_LB_ROUND_ROBIN;
        break;
    case ENVOY__CONFIG__CLUSTER__V3__CLUSTER__LB_POLICY__LEAST_REQUEST:
        c->lb = PX_LB_LEAST_REQUEST;
        break;
    case ENVOY__CONFIG__CLUSTER__V3__CLUSTER__LB_POLICY__RANDOM:
        c->lb = PX_LB_RANDOM;
        break;
    case ENVOY__CONFIG__CLUSTER__V3__CLUSTER__LB_POLICY__RING_HASH:
    case ENVOY__CONFIG__CLUSTER__V3__CLUSTER__LB_POLICY__MAGLEV:
        c->lb = PX_LB_RING_HASH;
        break;
    case ENVOY__CONFIG__CLUSTER__V3__CLUSTER__LB_POLICY__CLUSTER_PROVIDED:
        c->lb = PX_LB_ORIGINAL_DST;
        break;
    default:
        return failf(b, "lb_policy", "unsupported load-balancing policy");
    }
    c->connect_timeout_ms = pc->connect_timeout ? duration_ms(pc->connect_timeout) : 5000;
    cluster_service(b, pc->metadata, c);
    c->idle_timeout_ms = 3600 * 1000; /* Envoy's default for upstream connections */
    if (pc->upstream_connection_options && pc->upstream_connection_options->tcp_keepalive) {
        const Envoy__Config__Core__V3__TcpKeepalive *k = pc->upstream_connection_options->tcp_keepalive;
        c->keepalive = true;
        c->ka_probes = k->keepalive_probes ? k->keepalive_probes->value : 0;
        c->ka_time_s = k->keepalive_time ? k->keepalive_time->value : 0;
        c->ka_interval_s = k->keepalive_interval ? k->keepalive_interval->value : 0;
    }
    c->panic_pct = 50;
    if (pc->common_lb_config && pc->common_lb_config->healthy_panic_threshold) {
        double v = pc->common_lb_config->healthy_panic_threshold->value;
        if (!(v >= 0 && v <= 100))
            return failf(b, "common_lb_config.healthy_panic_threshold", "must be between 0 and 100");
        c->panic_pct = v;
    }
    if (build_transport(b, "transport_socket", pc->transport_socket, false, &c->tls) < 0)
        return -1;
    if (build_upstream_protocol(b, pc, c) < 0)
        return -1;
    if (pc->upstream_bind_config && pc->upstream_bind_config->source_address) {
        const Envoy__Config__Core__V3__SocketAddress *ba = pc->upstream_bind_config->source_address;
        if (parse_sockaddr(ba->address ? ba->address : "", ba->port_value, &c->bind_sa, &c->bind_salen) < 0)
            return failf(b, "upstream_bind_config.source_address", "not an IP address");
        c->bind = true;
    }
    if (pc->outlier_detection) {
        const Envoy__Config__Cluster__V3__OutlierDetection *od = pc->outlier_detection;
        c->outlier = true;
        c->od_consecutive_5xx = od->consecutive_5xx ? od->consecutive_5xx->value : 5;
        c->od_consecutive_gw = od->consecutive_gateway_failure ? od->consecutive_gateway_failure->value : 5;
        c->od_enforce_5xx = od->enforcing_consecutive_5xx ? od->enforcing_consecutive_5xx->value : 100;
        c->od_enforce_gw =
            od->enforcing_consecutive_gateway_failure ? od->enforcing_consecutive_gateway_failure->value : 0;
        c->od_interval_ms = od->interval ? duration_ms(od->interval) : 10000;
        c->od_base_ejection_ms = od->base_ejection_time ? duration_ms(od->base_ejection_time) : 30000;
        c->od_max_ejection_ms = od->max_ejection_time ? duration_ms(od->max_ejection_time) : 300000;
        if (c->od_max_ejection_ms < c->od_base_ejection_ms)
            c->od_max_ejection_ms = c->od_base_ejection_ms;
        c->od_max_ejection_pct = od->max_ejection_percent ? od->max_ejection_percent->value : 10;
        if (c->od_max_ejection_pct > 100)
            c->od_max_ejection_pct = 100;
    }
    c->max_connections = c->max_pending = c->max_requests = 1024;
    c->max_retries = 3;
    for (size_t i = 0; pc->circuit_breakers && i < pc->circuit_breakers->n_thresholds; i++) {
        const Envoy__Config__Cluster__V3__CircuitBreakers__Thresholds *th = pc->circuit_breakers->thresholds[i];
        if (th->priority != ENVOY__CONFIG__CORE__V3__ROUTING_PRIORITY__DEFAULT)
            continue;
        if (th->max_connections)
            c->max_connections = th->max_connections->value;
        if (th->max_pending_requests)
            c->max_pending = th->max_pending_requests->value;
        if (th->max_requests)
            c->max_requests = th->max_requests->value;
        if (th->max_retries)
            c->max_retries = th->max_retries->value;
        if (th->retry_budget) {
            c->retry_budget = true;
            c->budget_pct = th->retry_budget->budget_percent ? th->retry_budget->budget_percent->value : 20;
            c->min_retries =
                th->retry_budget->min_retry_concurrency ? th->retry_budget->min_retry_concurrency->value : 3;
            if (!(c->budget_pct >= 0 && c->budget_pct <= 100))
                return failf(b, "circuit_breakers.thresholds.retry_budget.budget_percent", "must be between 0 and 100");
        }
    }
    int type = pc->cluster_discovery_type_case ==
                       ENVOY__CONFIG__CLUSTER__V3__CLUSTER__CLUSTER_DISCOVERY_TYPE_TYPE
                   ? (int)pc->type
                   : ENVOY__CONFIG__CLUSTER__V3__CLUSTER__DISCOVERY_TYPE__STATIC;
    switch (type) {
    case ENVOY__CONFIG__CLUSTER__V3__CLUSTER__DISCOVERY_TYPE__EDS: {
        c->eds = true;
        const char *svc = pc->eds_cluster_config && pc->eds_cluster_config->service_name &&
                                  pc->eds_cluster_config->service_name[0]
                              ? pc->eds_cluster_config->service_name
                              : pc->name;
        c->eds_name = arena_strdup(b->a, svc);
        c->endpoints = arena_alloc(b->a, sizeof(*c->endpoints));
        for (size_t i = 0; i < in->nendpoints; i++) {
            const pb_cla_t *cla = (const pb_cla_t *)in->endpoints[i];
            if (cla->cluster_name && strcmp(cla->cluster_name, svc) == 0) {
                snprintf(b->where, sizeof(b->where), "ClusterLoadAssignment %s", svc);
                return build_endpoints(b, cla, c);
            }
        }
        return 0; /* no assignment yet: no endpoints (503 UH) */
    }
    case ENVOY__CONFIG__CLUSTER__V3__CLUSTER__DISCOVERY_TYPE__STATIC:
        if (pc->load_assignment == NULL) {
            c->endpoints = arena_alloc(b->a, sizeof(*c->endpoints));
            return 0;
        }
        return build_endpoints(b, pc->load_assignment, c);
    case ENVOY__CONFIG__CLUSTER__V3__CLUSTER__DISCOVERY_TYPE__ORIGINAL_DST:
        c->lb = PX_LB_ORIGINAL_DST;
        c->endpoints = arena_alloc(b->a, sizeof(*c->endpoints));
        return 0;
    default:
        return failf(b, "type", "DNS clusters are not supported (use STATIC, EDS or ORIGINAL_DST)");
    }
}

/* ---- TLS transport sockets ---- */

/* The text of a DataSource (inline bytes/string, or a file read now). */
static const char *data_source(build_t *b, const char *field, const Envoy__Config__Core__V3__DataSource *ds)
{
    if (ds == NULL)
        return NULL;
    switch (ds->specifier_case) {
    case ENVOY__CONFIG__CORE__V3__DATA_SOURCE__SPECIFIER_INLINE_BYTES: {
        char *p = arena_alloc(b->a, ds->inline_bytes.len + 1);
        memcpy(p, ds->inline_bytes.data, ds->inline_bytes.len);
        p[ds->inline_bytes.len] = '\0';
        return p;
    }
    case ENVOY__CONFIG__CORE__V3__DATA_SOURCE__SPECIFIER_INLINE_STRING:
        return arena_strdup(b->a, ds->inline_string ? ds->inline_string : "");
    case ENVOY__CONFIG__CORE__V3__DATA_SOURCE__SPECIFIER_FILENAME: {
        FILE *f = fopen(ds->filename, "rb");
        if (f == NULL) {
            char why[512];
            snprintf(why, sizeof(why), "cannot read %s: %s", ds->filename, strerror(errno));
            failf(b, field, why);
            return NULL;
        }
        char *p = arena_alloc(b->a, PX_MAX_PEM + 1);
        size_t n = fread(p, 1, PX_MAX_PEM, f);
        bool more = fgetc(f) != EOF;
        fclose(f);
        if (more) {
            failf(b, field, "file larger than 1 MiB");
            return NULL;
        }
        p[n] = '\0';
        return p;
    }
    default:
        failf(b, field, "only inline_bytes, inline_string and filename are supported");
        return NULL;
    }
}

/* Remembers an SDS name the xDS client must fetch (not the proxy's own). */
static void want_sds(build_t *b, const char *name)
{
    if (strcmp(name, PX_SDS_DEFAULT) == 0 || strcmp(name, PX_SDS_ROOTCA) == 0)
        return;
    px_snapshot_t *s = b->s;
    for (size_t i = 0; i < s->nsds_names; i++)
        if (strcmp(s->sds_names[i], name) == 0)
            return;
    const char **n = arena_alloc(b->a, (s->nsds_names + 1) * sizeof(*n));
    if (s->nsds_names)
        memcpy(n, s->sds_names, s->nsds_names * sizeof(*n));
    n[s->nsds_names++] = arena_strdup(b->a, name);
    s->sds_names = n;
}

static int tls_version(int v)
{
    switch (v) {
    case ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__TLS_PARAMETERS__TLS_PROTOCOL__TLSv1_2: return TLS1_2_VERSION;
    case ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__TLS_PARAMETERS__TLS_PROTOCOL__TLSv1_3: return TLS1_3_VERSION;
    case ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__TLS_PARAMETERS__TLS_PROTOCOL__TLSv1_0: return TLS1_VERSION;
    case ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__TLS_PARAMETERS__TLS_PROTOCOL__TLSv1_1: return TLS1_1_VERSION;
    default: return 0;
    }
}

static const char *join_list(build_t *b, char *const *v, size_t n)
{
    size_t len = 1;
    for (size_t i = 0; i < n; i++)
        len += strlen(v[i]) + 1;
    char *p = arena_alloc(b->a, len);
    p[0] = '\0';
    for (size_t i = 0; i < n; i++) {
        if (i)
            strcat(p, ":");
        strcat(p, v[i]);
    }
    return p;
}

static int validation_context(build_t *b, const pb_cvc_t *v, px_tls_cfg_t *t)
{
    if (v == NULL)
        return 0;
    if (v->trusted_ca) {
        t->ca_pem = data_source(b, "validation_context.trusted_ca", v->trusted_ca);
        if (t->ca_pem == NULL)
            return -1;
    }
    size_t n = v->n_match_typed_subject_alt_names + v->n_match_subject_alt_names;
    px_str_match_t *m = arena_alloc(b->a, (n ? n : 1) * sizeof(*m));
    size_t k = 0;
    for (size_t i = 0; i < v->n_match_typed_subject_alt_names; i++)
        if (v->match_typed_subject_alt_names[i]->matcher &&
            string_matcher(b, "validation_context.match_typed_subject_alt_names",
                           v->match_typed_subject_alt_names[i]->matcher, &m[k++]) < 0)
            return -1;
    for (size_t i = 0; i < v->n_match_subject_alt_names; i++)
        if (string_matcher(b, "validation_context.match_subject_alt_names", v->match_subject_alt_names[i],
                           &m[k++]) < 0)
            return -1;
    t->sans = m;
    t->nsans = k;
    return 0;
}

/* A transport_socket: NULL for plaintext (raw_buffer / none), a TLS config
 * for envoy.transport_sockets.tls. */
static int build_transport(build_t *b, const char *field, const Envoy__Config__Core__V3__TransportSocket *ts,
                           bool server, const px_tls_cfg_t **out)
{
    *out = NULL;
    if (ts == NULL || ts->config_type_case != ENVOY__CONFIG__CORE__V3__TRANSPORT_SOCKET__CONFIG_TYPE_TYPED_CONFIG ||
        ts->typed_config == NULL)
        return 0;
    const char *url = ts->typed_config->type_url ? ts->typed_config->type_url : "";
    const char *tn = strrchr(url, '/') ? strrchr(url, '/') + 1 : url;
    if (strstr(tn, "RawBuffer"))
        return 0;
    const ProtobufCMessageDescriptor *d =
        server ? &envoy__extensions__transport_sockets__tls__v3__downstream_tls_context__descriptor
               : &envoy__extensions__transport_sockets__tls__v3__upstream_tls_context__descriptor;
    if (strcmp(tn, d->name) != 0) {
        char why[300];
        snprintf(why, sizeof(why), "unsupported transport socket \"%s\" (want %s)", tn, d->name);
        return failf(b, field, why);
    }
    ProtobufCMessage *m = protobuf_c_message_unpack(d, NULL, ts->typed_config->value.len, ts->typed_config->value.data);
    if (m == NULL)
        return failf(b, field, "undecodable TLS context");
    px_tls_cfg_t *t = arena_alloc(b->a, sizeof(*t));
    t->server = server;
    const pb_ctls_t *c;
    if (server) {
        const pb_dtls_t *dt = (const pb_dtls_t *)m;
        c = dt->common_tls_context;
        t->require_client_cert = dt->require_client_certificate && dt->require_client_certificate->value;
    } else {
        const pb_utls_t *ut = (const pb_utls_t *)m;
        c = ut->common_tls_context;
        if (ut->sni && ut->sni[0])
            t->sni = arena_strdup(b->a, ut->sni);
    }
    int rc = -1;
    if (c) {
        if (c->n_tls_certificates) {
            t->cert_pem = data_source(b, "common_tls_context.tls_certificates[0].certificate_chain",
                                      c->tls_certificates[0]->certificate_chain);
            t->key_pem = data_source(b, "common_tls_context.tls_certificates[0].private_key",
                                     c->tls_certificates[0]->private_key);
            if (t->cert_pem == NULL || t->key_pem == NULL) {
                if (b->err[0] == '\0')
                    failf(b, "common_tls_context.tls_certificates[0]", "needs certificate_chain and private_key");
                goto out;
            }
        } else if (c->n_tls_certificate_sds_secret_configs) {
            const char *n = c->tls_certificate_sds_secret_configs[0]->name;
            if (n == NULL || !n[0]) {
                failf(b, "common_tls_context.tls_certificate_sds_secret_configs[0].name", "must not be empty");
                goto out;
            }
            t->cert_sds = arena_strdup(b->a, n);
            want_sds(b, n);
        }
        const Envoy__Extensions__TransportSockets__Tls__V3__SdsSecretConfig *vs = NULL;
        switch (c->validation_context_type_case) {
        case ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__COMMON_TLS_CONTEXT__VALIDATION_CONTEXT_TYPE_VALIDATION_CONTEXT:
            if (validation_context(b, c->validation_context, t) < 0)
                goto out;
            break;
        case ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__COMMON_TLS_CONTEXT__VALIDATION_CONTEXT_TYPE_VALIDATION_CONTEXT_SDS_SECRET_CONFIG:
            vs = c->validation_context_sds_secret_config;
            break;
        case ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__COMMON_TLS_CONTEXT__VALIDATION_CONTEXT_TYPE_COMBINED_VALIDATION_CONTEXT:
            if (c->combined_validation_context) {
                if (validation_context(b, c->combined_validation_context->default_validation_context, t) < 0)
                    goto out;
                vs = c->combined_validation_context->validation_context_sds_secret_config;
            }
            break;
        default:
            break;
        }
        if (vs && vs->name && vs->name[0]) {
            t->ca_sds = arena_strdup(b->a, vs->name);
            want_sds(b, vs->name);
        }
        for (size_t i = 0; i < c->n_alpn_protocols && t->nalpn < PX_TLS_MAX_ALPN; i++)
            t->alpn[t->nalpn++] = arena_strdup(b->a, c->alpn_protocols[i]);
        if (c->tls_params) {
            t->min_version = tls_version(c->tls_params->tls_minimum_protocol_version);
            t->max_version = tls_version(c->tls_params->tls_maximum_protocol_version);
            if (c->tls_params->n_cipher_suites)
                t->ciphers = join_list(b, c->tls_params->cipher_suites, c->tls_params->n_cipher_suites);
            if (c->tls_params->n_ecdh_curves)
                t->curves = join_list(b, c->tls_params->ecdh_curves, c->tls_params->n_ecdh_curves);
        }
    }
    if (server && t->cert_sds == NULL && t->cert_pem == NULL) {
        failf(b, field, "a DownstreamTlsContext needs a certificate");
        goto out;
    }
    if (px_tls_cfg_finish(t, b->a) < 0) {
        failf(b, field, "out of memory");
        goto out;
    }
    *out = t;
    rc = 0;
out:
    protobuf_c_message_free_unpacked(m, NULL);
    return rc;
}

/* ---- listeners and filter chains ---- */

static int cidr(build_t *b, const char *field, const Envoy__Config__Core__V3__CidrRange *r, px_cidr_t *c)
{
    memset(c, 0, sizeof(*c));
    const char *ip = r->address_prefix ? r->address_prefix : "";
    uint32_t max;
    if (inet_pton(AF_INET, ip, c->addr) == 1) {
        c->family = AF_INET;
        max = 32;
    } else if (inet_pton(AF_INET6, ip, c->addr) == 1) {
        c->family = AF_INET6;
        max = 128;
    } else {
        return failf(b, field, "address_prefix is not an IP address");
    }
    c->len = r->prefix_len ? r->prefix_len->value : max;
    if (c->len > max)
        return failf(b, field, "prefix_len is longer than the address");
    return 0;
}

static int cidrs(build_t *b, const char *field, Envoy__Config__Core__V3__CidrRange *const *v, size_t n,
                 px_cidr_t **out, size_t *nout)
{
    *out = arena_alloc(b->a, (n ? n : 1) * sizeof(**out));
    *nout = n;
    for (size_t i = 0; i < n; i++)
        if (cidr(b, field, v[i], &(*out)[i]) < 0)
            return -1;
    return 0;
}

static const char **str_list(build_t *b, char *const *v, size_t n, bool lower)
{
    const char **o = arena_alloc(b->a, (n ? n : 1) * sizeof(*o));
    for (size_t i = 0; i < n; i++)
        o[i] = lower ? lower_dup(b->a, v[i]) : arena_strdup(b->a, v[i]);
    return o;
}

/* An RBAC filter (network or HTTP) appended to *list. */
static int add_rbac(build_t *b, const char *field, const Google__Protobuf__Any *any, bool http,
                    const px_rbac_t ***list, size_t *n)
{
    const ProtobufCMessageDescriptor *d = http ? &envoy__extensions__filters__http__rbac__v3__rbac__descriptor
                                               : &envoy__extensions__filters__network__rbac__v3__rbac__descriptor;
    ProtobufCMessage *m = protobuf_c_message_unpack(d, NULL, any->value.len, any->value.data);
    if (m == NULL)
        return failf(b, field, "undecodable RBAC");
    const ProtobufCMessage *rules, *shadow;
    const char *prefix;
    if (http) {
        const Envoy__Extensions__Filters__Http__Rbac__V3__RBAC *h = (const void *)m;
        rules = (const ProtobufCMessage *)h->rules;
        shadow = (const ProtobufCMessage *)h->shadow_rules;
        prefix = ""; /* shadow_rules_stat_prefix names the shadow stats only */
    } else {
        const Envoy__Extensions__Filters__Network__Rbac__V3__RBAC *nr = (const void *)m;
        rules = (const ProtobufCMessage *)nr->rules;
        shadow = (const ProtobufCMessage *)nr->shadow_rules;
        prefix = nr->stat_prefix;
    }
    char err[512];
    px_rbac_t *r = px_rbac_compile(b->a, rules, shadow, prefix ? prefix : "", keep_re_cb, b, err, sizeof(err));
    protobuf_c_message_free_unpacked(m, NULL);
    if (r == NULL)
        return b->err[0] ? -1 : failf(b, field, err);
    const px_rbac_t **nl = arena_alloc(b->a, (*n + 1) * sizeof(*nl));
    if (*n)
        memcpy(nl, *list, *n * sizeof(*nl));
    nl[(*n)++] = r;
    *list = nl;
    return 0;
}

static const char *any_type(const Google__Protobuf__Any *a)
{
    const char *url = a && a->type_url ? a->type_url : "";
    return strrchr(url, '/') ? strrchr(url, '/') + 1 : url;
}

static int build_hcm(build_t *b, const char *field, const Google__Protobuf__Any *any, px_chain_t *ch)
{
    pb_hcm_t *h = envoy__extensions__filters__network__http_connection_manager__v3__http_connection_manager__unpack(
        NULL, any->value.len, any->value.data);
    if (h == NULL)
        return failf(b, field, "undecodable HttpConnectionManager");
    ch->kind = PX_LISTENER_HTTP;
    if (ch->tls) {
        /* the HTTP connection manager speaks h2: ALPN may select it */
        px_tls_cfg_t *t = (px_tls_cfg_t *)ch->tls;
        t->h2 = true;
        if (px_tls_cfg_finish(t, b->a) < 0) {
            envoy__extensions__filters__network__http_connection_manager__v3__http_connection_manager__free_unpacked(h, NULL);
            return failf(b, field, "out of memory");
        }
    }
    ch->stat_prefix = arena_strdup(b->a, h->stat_prefix ? h->stat_prefix : "");
    ch->xfcc = (int)h->forward_client_cert_details;
    if (h->http2_protocol_options && h->http2_protocol_options->max_concurrent_streams)
        ch->h2_max_streams = h->http2_protocol_options->max_concurrent_streams->value;
    int rc = 0;
    for (size_t i = 0; i < h->n_http_filters && rc == 0; i++) {
        const Envoy__Extensions__Filters__Network__HttpConnectionManager__V3__HttpFilter *f = h->http_filters[i];
        if (f->config_type_case ==
                ENVOY__EXTENSIONS__FILTERS__NETWORK__HTTP_CONNECTION_MANAGER__V3__HTTP_FILTER__CONFIG_TYPE_TYPED_CONFIG &&
            strcmp(any_type(f->typed_config), envoy__extensions__filters__http__rbac__v3__rbac__descriptor.name) == 0)
            rc = add_rbac(b, "HttpConnectionManager.http_filters.envoy.filters.http.rbac", f->typed_config, true,
                          &ch->http_rbac, &ch->nhttp_rbac);
    }
    if (rc < 0) {
        /* already reported */
    } else if (h->route_specifier_case ==
            ENVOY__EXTENSIONS__FILTERS__NETWORK__HTTP_CONNECTION_MANAGER__V3__HTTP_CONNECTION_MANAGER__ROUTE_SPECIFIER_RDS &&
        h->rds->route_config_name && h->rds->route_config_name[0]) {
        ch->rds_name = arena_strdup(b->a, h->rds->route_config_name);
    } else if (h->route_specifier_case ==
               ENVOY__EXTENSIONS__FILTERS__NETWORK__HTTP_CONNECTION_MANAGER__V3__HTTP_CONNECTION_MANAGER__ROUTE_SPECIFIER_ROUTE_CONFIG) {
        px_route_config_t *rcfg = arena_alloc(b->a, sizeof(*rcfg));
        char saved[256];
        snprintf(saved, sizeof(saved), "%s", b->where);
        rc = build_route_config(b, h->route_config, rcfg);
        if (rc < 0) {
            char inner[1024];
            snprintf(inner, sizeof(inner), "%s", b->err);
            snprintf(b->err, b->errlen, "%s: inline %s", saved, inner);
        }
        snprintf(b->where, sizeof(b->where), "%s", saved);
        ch->route_config = rcfg;
    } else {
        rc = failf(b, field, "HttpConnectionManager needs rds.route_config_name or route_config");
    }
    protobuf_c_message_free_unpacked(&h->base, NULL);
    return rc;
}

static int build_chain(build_t *b, size_t idx, const Envoy__Config__Listener__V3__FilterChain *fc, px_chain_t *ch)
{
    char field[160];
    if (idx == (size_t)-1)
        snprintf(field, sizeof(field), "default_filter_chain");
    else
        snprintf(field, sizeof(field), "filter_chains[%zu]", idx);
    ch->name = arena_strdup(b->a, fc->name ? fc->name : "");
    const Envoy__Config__Listener__V3__FilterChainMatch *m = fc->filter_chain_match;
    if (m) {
        px_chain_match_t *cm = &ch->match;
        char f[200];
        cm->dport = m->destination_port ? m->destination_port->value : 0;
        snprintf(f, sizeof(f), "%s.filter_chain_match.prefix_ranges", field);
        if (cidrs(b, f, m->prefix_ranges, m->n_prefix_ranges, &cm->prefixes, &cm->nprefixes) < 0)
            return -1;
        snprintf(f, sizeof(f), "%s.filter_chain_match.source_prefix_ranges", field);
        if (cidrs(b, f, m->source_prefix_ranges, m->n_source_prefix_ranges, &cm->src_prefixes,
                  &cm->nsrc_prefixes) < 0)
            return -1;
        cm->server_names = str_list(b, m->server_names, m->n_server_names, true);
        cm->nserver_names = m->n_server_names;
        if (m->transport_protocol && m->transport_protocol[0])
            cm->transport = arena_strdup(b->a, m->transport_protocol);
        cm->alpn = str_list(b, m->application_protocols, m->n_application_protocols, false);
        cm->nalpn = m->n_application_protocols;
    }
    char f[200];
    snprintf(f, sizeof(f), "%s.transport_socket", field);
    if (build_transport(b, f, fc->transport_socket, true, &ch->tls) < 0)
        return -1;
    if (fc->n_filters == 0) {
        snprintf(f, sizeof(f), "%s.filters", field);
        return failf(b, f, "needs a network filter");
    }
    for (size_t i = 0; i < fc->n_filters; i++) {
        const Envoy__Config__Listener__V3__Filter *flt = fc->filters[i];
        snprintf(f, sizeof(f), "%s.filters[%zu]", field, i);
        if (flt->config_type_case != ENVOY__CONFIG__LISTENER__V3__FILTER__CONFIG_TYPE_TYPED_CONFIG ||
            flt->typed_config == NULL || flt->typed_config->type_url == NULL)
            return failf(b, f, "needs a typed_config");
        const char *tn = any_type(flt->typed_config);
        bool last = i + 1 == fc->n_filters;
        if (strcmp(tn, envoy__extensions__filters__network__rbac__v3__rbac__descriptor.name) == 0 && !last) {
            if (add_rbac(b, f, flt->typed_config, false, &ch->net_rbac, &ch->nnet_rbac) < 0)
                return -1;
            continue;
        }
        if (!last) {
            char why[300];
            snprintf(why, sizeof(why), "unsupported network filter \"%s\" before the terminal filter", tn);
            return failf(b, f, why);
        }
        if (strcmp(tn, HCM_TYPE) == 0)
            return build_hcm(b, f, flt->typed_config, ch);
        if (strcmp(tn, TCP_TYPE) == 0) {
            pb_tcp_t *t = envoy__extensions__filters__network__tcp_proxy__v3__tcp_proxy__unpack(
                NULL, flt->typed_config->value.len, flt->typed_config->value.data);
            if (t == NULL)
                return failf(b, f, "undecodable TcpProxy");
            int rc = 0;
            ch->kind = PX_LISTENER_TCP;
            ch->stat_prefix = arena_strdup(b->a, t->stat_prefix ? t->stat_prefix : "");
            if (t->cluster_specifier_case ==
                    ENVOY__EXTENSIONS__FILTERS__NETWORK__TCP_PROXY__V3__TCP_PROXY__CLUSTER_SPECIFIER_CLUSTER &&
                t->cluster && t->cluster[0])
                ch->tcp_cluster = arena_strdup(b->a, t->cluster);
            else if (t->cluster_specifier_case ==
                         ENVOY__EXTENSIONS__FILTERS__NETWORK__TCP_PROXY__V3__TCP_PROXY__CLUSTER_SPECIFIER_WEIGHTED_CLUSTERS &&
                     t->weighted_clusters && t->weighted_clusters->n_clusters &&
                     t->weighted_clusters->clusters[0]->name)
                ch->tcp_cluster = arena_strdup(b->a, t->weighted_clusters->clusters[0]->name);
            else
                rc = failf(b, f, "TcpProxy needs a cluster");
            protobuf_c_message_free_unpacked(&t->base, NULL);
            return rc;
        }
        char why[300];
        snprintf(why, sizeof(why), "unsupported network filter \"%s\"", tn);
        return failf(b, f, why);
    }
    return 0;
}

static int build_listener(build_t *b, const pb_listener_t *pl, px_listener_t *l)
{
    snprintf(b->where, sizeof(b->where), "Listener %s", pl->name ? pl->name : "");
    if (pl->name == NULL || !pl->name[0])
        return failf(b, "name", "must not be empty");
    l->name = arena_strdup(b->a, pl->name);
    if (pl->address == NULL ||
        pl->address->address_case != ENVOY__CONFIG__CORE__V3__ADDRESS__ADDRESS_SOCKET_ADDRESS ||
        pl->address->socket_address->port_specifier_case !=
            ENVOY__CONFIG__CORE__V3__SOCKET_ADDRESS__PORT_SPECIFIER_PORT_VALUE)
        return failf(b, "address", "needs socket_address with port_value");
    const Envoy__Config__Core__V3__SocketAddress *sa = pl->address->socket_address;
    struct sockaddr_storage ss;
    socklen_t sl;
    if (parse_sockaddr(sa->address, sa->port_value, &ss, &sl) < 0)
        return failf(b, "address.socket_address", "not an IP address and port");
    l->address = arena_strdup(b->a, sa->address);
    l->port = sa->port_value;
    l->bind = pl->bind_to_port ? pl->bind_to_port->value : true;
    l->use_original_dst = pl->use_original_dst && pl->use_original_dst->value;
    for (size_t i = 0; i < pl->n_listener_filters; i++) {
        const char *n = pl->listener_filters[i]->name ? pl->listener_filters[i]->name : "";
        if (strcmp(n, "envoy.filters.listener.original_dst") == 0)
            l->original_dst = true;
        else if (strcmp(n, "envoy.filters.listener.tls_inspector") == 0)
            l->tls_inspector = true;
        else if (strcmp(n, "envoy.filters.listener.http_inspector") == 0)
            l->http_inspector = true;
    }
    if (pl->n_filter_chains == 0 && pl->default_filter_chain == NULL)
        return failf(b, "filter_chains", "needs a filter chain with a network filter");
    l->chains = arena_alloc(b->a, (pl->n_filter_chains ? pl->n_filter_chains : 1) * sizeof(*l->chains));
    for (size_t i = 0; i < pl->n_filter_chains; i++) {
        if (build_chain(b, i, pl->filter_chains[i], &l->chains[i]) < 0)
            return -1;
        const px_chain_match_t *m = &l->chains[i].match;
        if (m->transport || m->nserver_names || m->nalpn)
            l->tls_inspector = true; /* Envoy requires the inspector; meshproxy just peeks */
        l->nchains++;
    }
    if (pl->default_filter_chain) {
        px_chain_t *dc = arena_alloc(b->a, sizeof(*dc));
        if (build_chain(b, (size_t)-1, pl->default_filter_chain, dc) < 0)
            return -1;
        l->default_chain = dc;
    }
    return 0;
}

px_snapshot_t *px_snapshot_build(const px_resources_t *in, char *err, size_t errlen)
{
    static atomic_uint_fast64_t generation;
    build_t b = {.err = err, .errlen = errlen};
    px_snapshot_t *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    atomic_init(&s->_refs, 1);
    s->_arena = arena_new(16384);
    b.s = s;
    b.a = s->_arena;
    err[0] = '\0';

    s->clusters = arena_alloc(b.a, (in->nclusters ? in->nclusters : 1) * sizeof(*s->clusters));
    for (size_t i = 0; i < in->nclusters; i++) {
        if (build_cluster(&b, (const pb_cluster_t *)in->clusters[i], &s->clusters[i], in) < 0)
            goto fail;
        for (size_t j = 0; j < i; j++)
            if (strcmp(s->clusters[j].name, s->clusters[i].name) == 0) {
                snprintf(b.where, sizeof(b.where), "Cluster %s", s->clusters[i].name);
                failf(&b, "name", "duplicate cluster name");
                goto fail;
            }
        s->nclusters++;
    }
    s->route_configs =
        arena_alloc(b.a, (in->nroutes ? in->nroutes : 1) * sizeof(*s->route_configs));
    for (size_t i = 0; i < in->nroutes; i++) {
        if (build_route_config(&b, (const pb_route_config_t *)in->routes[i], &s->route_configs[i]) < 0)
            goto fail;
        s->nroute_configs++;
    }
    s->listeners = arena_alloc(b.a, (in->nlisteners ? in->nlisteners : 1) * sizeof(*s->listeners));
    for (size_t i = 0; i < in->nlisteners; i++) {
        px_listener_t *l = &s->listeners[i];
        if (build_listener(&b, (const pb_listener_t *)in->listeners[i], l) < 0)
            goto fail;
        for (size_t j = 0; j < i; j++)
            if (strcmp(s->listeners[j].name, l->name) == 0 ||
                (s->listeners[j].port == l->port && strcmp(s->listeners[j].address, l->address) == 0)) {
                failf(&b, "", strcmp(s->listeners[j].name, l->name) == 0
                                  ? "duplicate listener name"
                                  : "another listener has the same address and port");
                goto fail;
            }
        for (size_t k = 0; k <= l->nchains; k++) {
            px_chain_t *ch = k < l->nchains ? &l->chains[k] : (px_chain_t *)l->default_chain;
            if (ch && ch->rds_name)
                ch->route_config = px_snapshot_route_config(s, ch->rds_name);
        }
        s->nlisteners++;
    }
    s->generation = atomic_fetch_add(&generation, 1) + 1;
    return s;
fail:
    px_snapshot_unref(s);
    return NULL;
}

px_snapshot_t *px_snapshot_ref(px_snapshot_t *s)
{
    if (s)
        atomic_fetch_add(&s->_refs, 1);
    return s;
}

void px_snapshot_unref(px_snapshot_t *s)
{
    if (s == NULL || atomic_fetch_sub(&s->_refs, 1) != 1)
        return;
    for (size_t i = 0; i < s->_ncodes; i++)
        pcre2_code_free(s->_codes[i]);
    free(s->_codes);
    arena_free(s->_arena);
    free(s);
}

const px_cluster_t *px_snapshot_cluster(const px_snapshot_t *s, const char *name)
{
    for (size_t i = 0; i < s->nclusters; i++)
        if (strcmp(s->clusters[i].name, name) == 0)
            return &s->clusters[i];
    return NULL;
}

const px_route_config_t *px_snapshot_route_config(const px_snapshot_t *s, const char *name)
{
    for (size_t i = 0; i < s->nroute_configs; i++)
        if (strcmp(s->route_configs[i].name, name) == 0)
            return &s->route_configs[i];
    return NULL;
}

/* ---- router ---- */

static bool ieq_n(const char *a, const char *b2, size_t n)
{
    return strncasecmp(a, b2, n) == 0;
}

/* PCRE2 memory from a caller's buffer: nothing reaches malloc. */
typedef struct bump {
    unsigned char *buf;
    size_t cap, used;
} bump_t;

static void *bump_alloc(size_t n, void *ud)
{
    bump_t *b = ud;
    size_t off = (b->used + 15) & ~(size_t)15;
    if (off > b->cap || n > b->cap - off)
        return NULL;
    b->used = off + n;
    return b->buf + off;
}

static void bump_release(void *p, void *ud)
{
    (void)p;
    (void)ud; /* the buffer goes with the caller's frame */
}

#define PX_REGEX_STACK 65536  /* stack bytes one regex evaluation may use */
#define PX_REGEX_HEAP_KIB 40  /* PCRE2 backtracking frames, within PX_REGEX_STACK */

__attribute__((noinline)) int px_regex_eval(const pcre2_code *re, const char *s, size_t n)
{
    _Alignas(16) unsigned char buf[PX_REGEX_STACK];
    bump_t b = {.buf = buf, .cap = sizeof(buf)};
    pcre2_general_context *gc = pcre2_general_context_create(bump_alloc, bump_release, &b);
    pcre2_match_context *mc = gc ? pcre2_match_context_create(gc) : NULL;
    pcre2_match_data *md = gc ? pcre2_match_data_create(1, gc) : NULL;
    if (mc == NULL || md == NULL)
        return -1;
    pcre2_set_match_limit(mc, PX_REGEX_MATCH_LIMIT);
    pcre2_set_heap_limit(mc, PX_REGEX_HEAP_KIB);
    int rc = pcre2_match(re, (PCRE2_SPTR)(s ? s : ""), n, 0, 0, md, mc);
    return rc >= 0 ? 1 : rc == PCRE2_ERROR_NOMATCH ? 0 : -1;
}

static bool regex_match(const pcre2_code *re, const char *s, size_t n)
{
    return px_regex_eval(re, s, n) == 1;
}

bool px_str_match(const px_str_match_t *m, const char *s, size_t n)
{
    size_t vl = m->value_len;
    switch (m->kind) {
    case PX_STR_EXACT:
        return n == vl && (m->ignore_case ? ieq_n(s, m->value, n) : memcmp(s, m->value, n) == 0);
    case PX_STR_PREFIX:
        return n >= vl && (m->ignore_case ? ieq_n(s, m->value, vl) : memcmp(s, m->value, vl) == 0);
    case PX_STR_SUFFIX:
        return n >= vl && (m->ignore_case ? ieq_n(s + n - vl, m->value, vl)
                                          : memcmp(s + n - vl, m->value, vl) == 0);
    case PX_STR_CONTAINS:
        for (size_t i = 0; i + vl <= n; i++)
            if (m->ignore_case ? ieq_n(s + i, m->value, vl) : memcmp(s + i, m->value, vl) == 0)
                return true;
        return false;
    case PX_STR_REGEX:
        return regex_match(m->re, s, n);
    case PX_STR_PRESENT:
        return true;
    }
    return false;
}

/* The request's value for header `name` (pseudo-headers included). */
static bool req_header(const px_route_req_t *r, const char *name, const char **v, size_t *vl)
{
    if (strcmp(name, ":method") == 0) {
        *v = r->method;
        *vl = r->method_len;
        return r->method != NULL;
    }
    if (strcmp(name, ":authority") == 0 || strcmp(name, "host") == 0) {
        *v = r->host;
        *vl = r->host_len;
        return r->host != NULL;
    }
    if (strcmp(name, ":path") == 0) {
        *v = r->path;
        *vl = r->path_len;
        return r->path != NULL;
    }
    for (size_t i = 0; i < r->nheaders; i++)
        if (px_h1_ieq(r->headers[i].name, r->headers[i].name_len, name)) {
            *v = r->headers[i].value;
            *vl = r->headers[i].value_len;
            return true;
        }
    return false;
}

/* The value of query parameter `name` in the target (no percent-decoding). */
static bool req_query(const px_route_req_t *r, const char *name, const char **v, size_t *vl)
{
    const char *q = memchr(r->path, '?', r->path_len);
    if (q == NULL)
        return false;
    const char *end = r->path + r->path_len;
    size_t nl = strlen(name);
    for (const char *p = q + 1; p < end;) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *e = amp ? amp : end;
        const char *eq = memchr(p, '=', (size_t)(e - p));
        const char *ke = eq ? eq : e;
        if ((size_t)(ke - p) == nl && memcmp(p, name, nl) == 0) {
            *v = eq ? eq + 1 : e;
            *vl = (size_t)(e - *v);
            return true;
        }
        p = e + 1;
    }
    return false;
}

static bool route_matches(const px_route_t *rt, const px_route_req_t *r)
{
    const char *q = memchr(r->path, '?', r->path_len);
    size_t plen = q ? (size_t)(q - r->path) : r->path_len;
    switch (rt->path_kind) {
    case PX_PATH_PREFIX:
        if (plen < rt->path_len ||
            !(rt->case_sensitive ? memcmp(r->path, rt->path, rt->path_len) == 0
                                 : ieq_n(r->path, rt->path, rt->path_len)))
            return false;
        break;
    case PX_PATH_EXACT:
        if (plen != rt->path_len || !(rt->case_sensitive ? memcmp(r->path, rt->path, plen) == 0
                                                         : ieq_n(r->path, rt->path, plen)))
            return false;
        break;
    case PX_PATH_REGEX:
        if (!regex_match(rt->path_re, r->path, plen))
            return false;
        break;
    }
    for (size_t i = 0; i < rt->nheaders; i++) {
        const px_header_match_t *h = &rt->headers[i];
        const char *v;
        size_t vl;
        bool have = req_header(r, h->name, &v, &vl);
        bool ok;
        if (h->m.kind == PX_STR_PRESENT)
            ok = have == h->present;
        else
            ok = have && px_str_match(&h->m, v, vl);
        if (ok == h->invert)
            return false;
    }
    for (size_t i = 0; i < rt->nquery; i++) {
        const char *v;
        size_t vl;
        if (!req_query(r, rt->query[i].name, &v, &vl) || !px_str_match(&rt->query[i].m, v, vl))
            return false;
    }
    return true;
}

const px_vhost_t *px_vhost_match(const px_route_config_t *rc, const char *host, size_t hl)
{
    const px_vhost_t *best_suffix = NULL, *best_prefix = NULL, *any = NULL;
    size_t suffix_len = 0, prefix_len = 0;
    for (size_t i = 0; i < rc->nvhosts; i++) {
        const px_vhost_t *vh = &rc->vhosts[i];
        for (size_t d = 0; d < vh->ndomains; d++) {
            const char *dom = vh->domains[d];
            size_t dl = strlen(dom);
            if (dl == 1 && dom[0] == '*') {
                if (any == NULL)
                    any = vh;
            } else if (dom[0] == '*') {
                /* "*.example.com" matches a non-empty label before the suffix */
                size_t sl = dl - 1;
                if (hl > sl && ieq_n(host + hl - sl, dom + 1, sl) && sl > suffix_len) {
                    best_suffix = vh;
                    suffix_len = sl;
                }
            } else if (dom[dl - 1] == '*') {
                size_t pl = dl - 1;
                if (hl > pl && ieq_n(host, dom, pl) && pl > prefix_len) {
                    best_prefix = vh;
                    prefix_len = pl;
                }
            } else if (dl == hl && ieq_n(host, dom, hl)) {
                return vh;
            }
        }
    }
    return best_suffix ? best_suffix : best_prefix ? best_prefix : any;
}

const px_route_t *px_route_match(const px_route_config_t *rc, const px_route_req_t *req,
                                 const px_vhost_t **vh_out)
{
    const px_vhost_t *vh = px_vhost_match(rc, req->host ? req->host : "", req->host_len);
    if (vh_out)
        *vh_out = vh;
    if (vh == NULL)
        return NULL;
    for (size_t i = 0; i < vh->nroutes; i++)
        if (route_matches(&vh->routes[i], req))
            return &vh->routes[i];
    return NULL;
}

const char *px_route_pick_weighted(const px_route_t *rt, uint32_t r)
{
    if (rt->action == PX_ACT_CLUSTER)
        return rt->cluster;
    if (rt->action != PX_ACT_WEIGHTED)
        return NULL;
    uint32_t x = r % rt->total_weight;
    for (size_t i = 0; i < rt->nweighted; i++) {
        if (x < rt->weighted[i].weight)
            return rt->weighted[i].cluster;
        x -= rt->weighted[i].weight;
    }
    return rt->weighted[rt->nweighted - 1].cluster;
}

/* ---- load balancing ---- */

uint64_t px_hash64(const void *p, size_t n)
{
    const unsigned char *s = p;
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) {
        h ^= s[i];
        h *= 1099511628211ull;
    }
    /* finalizer: FNV alone clusters short keys */
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    return h;
}

static uint64_t lb_rand(px_lb_t *lb)
{
    /* xorshift64* */
    uint64_t x = lb->rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    lb->rng = x;
    return x * 2685821657736338717ull;
}

void px_lb_init(px_lb_t *lb, const px_cluster_t *c, uint64_t seed)
{
    memset(lb, 0, sizeof(*lb));
    lb->rng = seed ? seed : 0x9e3779b97f4a7c15ull;
    lb->nactive = c->nendpoints;
    lb->active = calloc(c->nendpoints ? c->nendpoints : 1, sizeof(*lb->active));
    if (lb->active == NULL)
        lb->nactive = 0;
}

void px_lb_free(px_lb_t *lb)
{
    free(lb->active);
    lb->active = NULL;
    lb->nactive = 0;
}

/* Index of the endpoint owning weighted position x in [0, total_weight) of a
 * priority. */
static long by_weight(const px_cluster_t *c, const px_level_t *lv, uint64_t x)
{
    for (size_t i = lv->first; i < lv->first + lv->n; i++) {
        if (x < c->endpoints[i].weight)
            return (long)i;
        x -= c->endpoints[i].weight;
    }
    return (long)(lv->first + lv->n) - 1;
}

static long pick_in(px_lb_t *lb, const px_cluster_t *c, const px_level_t *lv, uint64_t hash)
{
    if (lv->n == 0 || lv->total_weight == 0)
        return -1;
    switch (c->lb) {
    case PX_LB_ROUND_ROBIN:
        return by_weight(c, lv, lb->rr_next++ % lv->total_weight);
    case PX_LB_RANDOM:
        return by_weight(c, lv, lb_rand(lb) % lv->total_weight);
    case PX_LB_LEAST_REQUEST: {
        /* power of two choices, weighted draws; fewer outstanding wins */
        long a = by_weight(c, lv, lb_rand(lb) % lv->total_weight);
        long b2 = by_weight(c, lv, lb_rand(lb) % lv->total_weight);
        if (lb->active == NULL || lb->nactive != c->nendpoints)
            return a;
        return lb->active[b2] < lb->active[a] ? b2 : a;
    }
    case PX_LB_RING_HASH: {
        if (lv->nring == 0)
            return -1;
        size_t lo = 0, hi = lv->nring;
        while (lo < hi) {
            size_t mid = (lo + hi) / 2;
            if (lv->ring[mid].hash < hash)
                lo = mid + 1;
            else
                hi = mid;
        }
        return (long)lv->ring[lo == lv->nring ? 0 : lo].endpoint;
    }
    case PX_LB_ORIGINAL_DST:
        return -1;
    }
    return -1;
}

long px_lb_pick(px_lb_t *lb, const px_cluster_t *c, uint64_t hash)
{
    if (c->nendpoints == 0 || c->nlevels == 0)
        return -1;
    return pick_in(lb, c, &c->levels[0], hash);
}

#define PX_OVERPROVISION 140 /* Envoy's overprovisioning factor, in percent */
#define PX_MAX_LEVELS 16     /* priorities beyond are treated as the last one */

long px_lb_pick_avail(px_lb_t *lb, const px_cluster_t *c, uint64_t hash, px_lb_avail_fn avail, void *arg,
                      long avoid)
{
    if (c->nendpoints == 0 || c->nlevels == 0)
        return -1;
    size_t nl = c->nlevels < PX_MAX_LEVELS ? c->nlevels : PX_MAX_LEVELS;
    uint32_t health[PX_MAX_LEVELS], load[PX_MAX_LEVELS];
    uint32_t sum = 0;
    for (size_t l = 0; l < nl; l++) {
        const px_level_t *lv = &c->levels[l];
        size_t ok = 0, n = lv->n;
        if (l == nl - 1) /* the last level counts whatever lies beyond */
            n = c->nendpoints - lv->first;
        for (size_t i = lv->first; i < lv->first + n; i++)
            ok += avail == NULL || avail(arg, c, i);
        uint64_t h = n ? (uint64_t)ok * PX_OVERPROVISION / n : 0;
        health[l] = h > 100 ? 100 : (uint32_t)h;
        sum += health[l];
    }
    size_t ok_all = 0;
    for (size_t i = 0; avail && i < c->nendpoints; i++)
        ok_all += avail(arg, c, i);
    if (sum == 0 || (avail && (double)ok_all * 100.0 < c->panic_pct * (double)c->nendpoints))
        return px_lb_pick(lb, c, hash); /* panic: the first priority as if all were healthy */
    uint32_t left = 100;
    for (size_t l = 0; l < nl; l++) {
        load[l] = health[l] < left ? health[l] : left;
        left -= load[l];
    }
    uint32_t total = 100 - left; /* under 100 when every priority is degraded: scaled */
    uint64_t x = (c->lb == PX_LB_RING_HASH ? hash >> 32 : lb_rand(lb)) % total;
    size_t l = 0;
    while (l + 1 < nl && x >= load[l]) {
        x -= load[l];
        l++;
    }
    const px_level_t *lv = &c->levels[l];
#define PX_USABLE(e) ((avail == NULL || avail(arg, c, (size_t)(e))) && (e) != avoid)
    long ei = pick_in(lb, c, lv, hash);
    for (size_t k = 1; ei >= 0 && !PX_USABLE(ei) && k <= lv->n; k++)
        ei = pick_in(lb, c, lv, c->lb == PX_LB_RING_HASH ? hash + 7919 * k : hash);
    if (ei >= 0 && !PX_USABLE(ei)) { /* the level's usable ones, in order; else what is available */
        long fallback = -1;
        for (size_t i = lv->first; i < lv->first + lv->n; i++) {
            if (PX_USABLE((long)i))
                return (long)i;
            if (fallback < 0 && (avail == NULL || avail(arg, c, i)))
                fallback = (long)i;
        }
        if (fallback >= 0)
            return fallback;
    }
#undef PX_USABLE
    return ei;
}

/* ---- filter-chain selection ---- */

bool px_cidr_contains(const px_cidr_t *c, const struct sockaddr *sa)
{
    const uint8_t *a;
    if (sa == NULL || sa->sa_family != c->family)
        return false;
    if (sa->sa_family == AF_INET)
        a = (const uint8_t *)&((const struct sockaddr_in *)sa)->sin_addr;
    else
        a = (const uint8_t *)&((const struct sockaddr_in6 *)sa)->sin6_addr;
    uint32_t full = c->len / 8, rest = c->len % 8;
    if (memcmp(a, c->addr, full) != 0)
        return false;
    if (rest == 0)
        return true;
    uint8_t mask = (uint8_t)(0xffu << (8 - rest));
    return (a[full] & mask) == (c->addr[full] & mask);
}

static uint32_t sa_port(const struct sockaddr *sa)
{
    if (sa == NULL)
        return 0;
    if (sa->sa_family == AF_INET)
        return ntohs(((const struct sockaddr_in *)sa)->sin_port);
    if (sa->sa_family == AF_INET6)
        return ntohs(((const struct sockaddr_in6 *)sa)->sin6_port);
    return 0;
}

/* Longest matching prefix length of a range list, -1 when none matches, -2
 * when the list is empty (the chain does not set the criterion). */
static int prefix_score(const px_cidr_t *v, size_t n, const struct sockaddr *sa)
{
    if (n == 0)
        return -2;
    int best = -1;
    for (size_t i = 0; i < n; i++)
        if (px_cidr_contains(&v[i], sa) && (int)v[i].len > best)
            best = (int)v[i].len;
    return best;
}

/* Server-name score: 1000 + length for an exact match, the suffix length for
 * a "*.x" wildcard, -1 no match, -2 the chain lists none. */
static int sni_score(const px_chain_match_t *m, const char *sni)
{
    if (m->nserver_names == 0)
        return -2;
    size_t sl = sni ? strlen(sni) : 0;
    int best = -1;
    for (size_t i = 0; i < m->nserver_names && sl; i++) {
        const char *n = m->server_names[i];
        size_t nl = strlen(n);
        if (nl == sl && strcasecmp(n, sni) == 0)
            best = 1000 + (int)nl;
        else if (n[0] == '*' && n[1] == '.' && sl > nl - 1 && strcasecmp(sni + sl - (nl - 1), n + 1) == 0 &&
                 (int)nl > best)
            best = (int)nl;
    }
    return best;
}

static int transport_score(const px_chain_match_t *m, const char *tp)
{
    if (m->transport == NULL)
        return -2;
    return tp && strcmp(m->transport, tp) == 0 ? 1 : -1;
}

static int alpn_score(const px_chain_match_t *m, const px_chain_input_t *in)
{
    if (m->nalpn == 0)
        return -2;
    for (size_t i = 0; i < m->nalpn; i++)
        for (size_t k = 0; k < in->nalpn; k++)
            if (strcmp(m->alpn[i], in->alpn[k]) == 0)
                return 1;
    return -1;
}

#define PX_MAX_CHAINS_SELECT 1024

const px_chain_t *px_chain_select(const px_listener_t *l, const px_chain_input_t *in)
{
    /* candidates narrowed criterion by criterion, most specific first */
    const px_chain_t *cand[PX_MAX_CHAINS_SELECT];
    int score[PX_MAX_CHAINS_SELECT];
    size_t n = 0;
    for (size_t i = 0; i < l->nchains && n < PX_MAX_CHAINS_SELECT; i++)
        cand[n++] = &l->chains[i];
    uint32_t dport = sa_port(in->local);
    for (int step = 0; step < 6 && n > 0; step++) {
        int best = -1;
        for (size_t i = 0; i < n; i++) {
            const px_chain_match_t *m = &cand[i]->match;
            int s;
            switch (step) {
            case 0: s = m->dport == 0 ? -2 : m->dport == dport ? 1 : -1; break;
            case 1: s = prefix_score(m->prefixes, m->nprefixes, in->local); break;
            case 2: s = sni_score(m, in->sni); break;
            case 3: s = transport_score(m, in->transport); break;
            case 4: s = alpn_score(m, in); break;
            default: s = prefix_score(m->src_prefixes, m->nsrc_prefixes, in->remote); break;
            }
            score[i] = s;
            if (s > best)
                best = s;
        }
        /* keep the best specific matches; else the chains without the criterion */
        int want = best >= 0 ? best : -2;
        size_t k = 0;
        for (size_t i = 0; i < n; i++)
            if (score[i] == want)
                cand[k++] = cand[i];
        n = k;
    }
    return n > 0 ? cand[0] : l->default_chain;
}

const px_listener_t *px_listener_for_dst(const px_snapshot_t *s, const struct sockaddr *dst,
                                         const px_listener_t *self)
{
    char ip[INET6_ADDRSTRLEN] = "";
    if (dst->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)dst)->sin_addr, ip, sizeof(ip));
    else if (dst->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)dst)->sin6_addr, ip, sizeof(ip));
    uint32_t port = sa_port(dst);
    const px_listener_t *wild = NULL;
    for (size_t i = 0; i < s->nlisteners; i++) {
        const px_listener_t *l = &s->listeners[i];
        if (l == self || l->port != port)
            continue;
        if (strcmp(l->address, ip) == 0)
            return l;
        if (wild == NULL && (strcmp(l->address, "0.0.0.0") == 0 || strcmp(l->address, "::") == 0) &&
            (strcmp(l->address, "::") == 0) == (dst->sa_family == AF_INET6))
            wild = l;
    }
    return wild;
}
