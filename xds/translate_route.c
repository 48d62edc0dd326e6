/*
 * Routes (RDS): one RouteConfiguration per outbound HTTP port ("9080") with a
 * virtual host per service, routes from VirtualServices or the default
 * route; gateway route configurations ("http.8080").
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "translate_internal.h"

typedef Envoy__Config__Route__V3__RouteMatch pb_rmatch_t;
typedef Envoy__Config__Route__V3__RouteAction pb_raction_t;
typedef Envoy__Config__Route__V3__RetryPolicy pb_retry_t;

/* ---- retries ---- */

static pb_retry_t *default_retry(tx_t *t, bool hash_lb)
{
    pb_retry_t *r = TX_NEW(t, pb_retry_t, ENVOY__CONFIG__ROUTE__V3__RETRY_POLICY__INIT);
    r->retry_on = tx_str(t, "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes");
    r->num_retries = tx_u32(t, 2);
    r->host_selection_retry_max_attempts = 5;
    uint32_t *codes = arena_alloc(t->a, sizeof(uint32_t));
    codes[0] = 503;
    r->retriable_status_codes = codes;
    r->n_retriable_status_codes = 1;
    if (!hash_lb) {
        Envoy__Config__Route__V3__RetryPolicy__RetryHostPredicate *p =
            TX_NEW(t, Envoy__Config__Route__V3__RetryPolicy__RetryHostPredicate,
                   ENVOY__CONFIG__ROUTE__V3__RETRY_POLICY__RETRY_HOST_PREDICATE__INIT);
        p->name = tx_str(t, "envoy.retry_host_predicates.previous_hosts");
        p->config_type_case = ENVOY__CONFIG__ROUTE__V3__RETRY_POLICY__RETRY_HOST_PREDICATE__CONFIG_TYPE_TYPED_CONFIG;
        Envoy__Extensions__Retry__Host__PreviousHosts__V3__PreviousHostsPredicate ph =
            ENVOY__EXTENSIONS__RETRY__HOST__PREVIOUS_HOSTS__V3__PREVIOUS_HOSTS_PREDICATE__INIT;
        p->typed_config = tx_any(t, &ph);
        TX_PUSH(t, r->retry_host_predicate, r->n_retry_host_predicate, p);
    }
    return r;
}

/* Istio's conversion of HTTPRetry (NULL: the default policy; attempts 0: none). */
static pb_retry_t *convert_retry(tx_t *t, const cfg_HTTPRetry *in, bool hash_lb)
{
    pb_retry_t *r = default_retry(t, hash_lb);
    if (in == NULL)
        return r;
    if (in->attempts <= 0)
        return NULL;
    r->num_retries->value = (uint32_t)in->attempts;
    if (in->retryOn && *in->retryOn) {
        char *copy = tx_str(t, in->retryOn);
        char *on = arena_alloc(t->a, strlen(in->retryOn) + 32);
        uint32_t *codes = arena_alloc(t->a, (strlen(in->retryOn) + 1) * sizeof(uint32_t));
        size_t ncodes = 0;
        for (char *save = NULL, *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
            while (*tok == ' ')
                tok++;
            char *e = tok + strlen(tok);
            while (e > tok && e[-1] == ' ')
                *--e = 0;
            if (!*tok)
                continue;
            char *end;
            long v = strtol(tok, &end, 10);
            if (*end == 0 && v >= 100 && v <= 599) {
                codes[ncodes++] = (uint32_t)v;
                continue;
            }
            if (*on)
                strcat(on, ",");
            strcat(on, tok);
        }
        if (ncodes && strstr(on, "retriable-status-codes") == NULL)
            strcat(on, *on ? ",retriable-status-codes" : "retriable-status-codes");
        r->retry_on = on;
        r->retriable_status_codes = codes;
        r->n_retriable_status_codes = ncodes;
    }
    if (in->perTryTimeout > 0)
        r->per_try_timeout = tx_duration(t, in->perTryTimeout);
    if (CFG_HAS(in, HTTPRetry, retryIgnorePreviousHosts) && !in->retryIgnorePreviousHosts)
        r->n_retry_host_predicate = 0;
    if (in->retryRemoteLocalities) {
        /* retries go to the next locality (priority) rather than the same */
        Envoy__Config__Route__V3__RetryPolicy__RetryPriority *p =
            TX_NEW(t, Envoy__Config__Route__V3__RetryPolicy__RetryPriority,
                   ENVOY__CONFIG__ROUTE__V3__RETRY_POLICY__RETRY_PRIORITY__INIT);
        p->name = tx_str(t, "envoy.retry_priorities.previous_priorities");
        p->config_type_case = ENVOY__CONFIG__ROUTE__V3__RETRY_POLICY__RETRY_PRIORITY__CONFIG_TYPE_TYPED_CONFIG;
        Envoy__Extensions__Retry__Priority__PreviousPriorities__V3__PreviousPrioritiesConfig pp =
            ENVOY__EXTENSIONS__RETRY__PRIORITY__PREVIOUS_PRIORITIES__V3__PREVIOUS_PRIORITIES_CONFIG__INIT;
        pp.update_frequency = 2;
        p->typed_config = tx_any(t, &pp);
        r->retry_priority = p;
    }
    if (in->backoff > 0) {
        Envoy__Config__Route__V3__RetryPolicy__RetryBackOff *b =
            TX_NEW(t, Envoy__Config__Route__V3__RetryPolicy__RetryBackOff,
                   ENVOY__CONFIG__ROUTE__V3__RETRY_POLICY__RETRY_BACK_OFF__INIT);
        b->base_interval = tx_duration(t, in->backoff);
        r->retry_back_off = b;
    }
    return r;
}

static void set_timeouts(tx_t *t, pb_raction_t *a, int64_t timeout)
{
    a->timeout = tx_duration(t, timeout);
    Envoy__Config__Route__V3__RouteAction__MaxStreamDuration *m =
        TX_NEW(t, Envoy__Config__Route__V3__RouteAction__MaxStreamDuration,
               ENVOY__CONFIG__ROUTE__V3__ROUTE_ACTION__MAX_STREAM_DURATION__INIT);
    m->max_stream_duration = tx_duration(t, timeout);
    m->grpc_timeout_header_max = tx_duration(t, timeout);
    a->max_stream_duration = m;
}

static Envoy__Config__Route__V3__Decorator *decorator(tx_t *t, const char *op)
{
    Envoy__Config__Route__V3__Decorator *d =
        TX_NEW(t, Envoy__Config__Route__V3__Decorator, ENVOY__CONFIG__ROUTE__V3__DECORATOR__INIT);
    d->operation = tx_str(t, op);
    return d;
}

static pb_rmatch_t *prefix_match(tx_t *t, const char *prefix)
{
    pb_rmatch_t *m = TX_NEW(t, pb_rmatch_t, ENVOY__CONFIG__ROUTE__V3__ROUTE_MATCH__INIT);
    m->path_specifier_case = ENVOY__CONFIG__ROUTE__V3__ROUTE_MATCH__PATH_SPECIFIER_PREFIX;
    m->prefix = tx_str(t, prefix);
    return m;
}

pb_route_t *tx_default_route(tx_t *t, const char *cluster, const char *operation, bool hash_lb)
{
    pb_raction_t *a = TX_NEW(t, pb_raction_t, ENVOY__CONFIG__ROUTE__V3__ROUTE_ACTION__INIT);
    a->cluster_specifier_case = ENVOY__CONFIG__ROUTE__V3__ROUTE_ACTION__CLUSTER_SPECIFIER_CLUSTER;
    a->cluster = tx_str(t, cluster);
    set_timeouts(t, a, 0);
    a->retry_policy = default_retry(t, hash_lb);
    pb_route_t *r = TX_NEW(t, pb_route_t, ENVOY__CONFIG__ROUTE__V3__ROUTE__INIT);
    r->name = tx_str(t, "default");
    r->match = prefix_match(t, "/");
    r->action_case = ENVOY__CONFIG__ROUTE__V3__ROUTE__ACTION_ROUTE;
    r->route = a;
    r->decorator = decorator(t, operation);
    return r;
}

/* ---- matches ---- */

static pb_smatch_t *string_match(tx_t *t, const cfg_StringMatch *sm)
{
    if (sm == NULL)
        return NULL;
    if (CFG_HAS(sm, StringMatch, exact))
        return tx_smatch_exact(t, sm->exact);
    if (CFG_HAS(sm, StringMatch, prefix))
        return sm->prefix && *sm->prefix ? tx_smatch_prefix(t, sm->prefix) : NULL;
    if (CFG_HAS(sm, StringMatch, regex))
        return tx_smatch_regex(t, sm->regex);
    return NULL;
}

static pb_hmatch_t *header_match(tx_t *t, const char *name, const cfg_StringMatch *sm, bool invert)
{
    pb_hmatch_t *h = TX_NEW(t, pb_hmatch_t, ENVOY__CONFIG__ROUTE__V3__HEADER_MATCHER__INIT);
    h->name = tx_str(t, name);
    pb_smatch_t *s = string_match(t, sm);
    if (s) {
        h->header_match_specifier_case = ENVOY__CONFIG__ROUTE__V3__HEADER_MATCHER__HEADER_MATCH_SPECIFIER_STRING_MATCH;
        h->string_match = s;
    } else {
        h->header_match_specifier_case = ENVOY__CONFIG__ROUTE__V3__HEADER_MATCHER__HEADER_MATCH_SPECIFIER_PRESENT_MATCH;
        h->present_match = 1;
    }
    h->invert_match = invert;
    return h;
}

static pb_rmatch_t *route_match(tx_t *t, const cfg_HTTPMatchRequest *m)
{
    pb_rmatch_t *rm = prefix_match(t, "/");
    const cfg_StringMatch *uri = m->uri;
    if (uri && CFG_HAS(uri, StringMatch, exact)) {
        rm->path_specifier_case = ENVOY__CONFIG__ROUTE__V3__ROUTE_MATCH__PATH_SPECIFIER_PATH;
        rm->path = tx_str(t, uri->exact);
    } else if (uri && CFG_HAS(uri, StringMatch, prefix)) {
        rm->prefix = tx_str(t, uri->prefix);
    } else if (uri && CFG_HAS(uri, StringMatch, regex)) {
        Envoy__Type__Matcher__V3__RegexMatcher *r = TX_NEW(
            t, Envoy__Type__Matcher__V3__RegexMatcher, ENVOY__TYPE__MATCHER__V3__REGEX_MATCHER__INIT);
        r->regex = tx_str(t, uri->regex);
        rm->path_specifier_case = ENVOY__CONFIG__ROUTE__V3__ROUTE_MATCH__PATH_SPECIFIER_SAFE_REGEX;
        rm->safe_regex = r;
    }
    if (m->ignoreUriCase)
        rm->case_sensitive = tx_bool(t, false);
    for (uint32_t i = 0; i < m->headers.n; i++)
        TX_PUSH(t, rm->headers, rm->n_headers, header_match(t, m->headers.v[i].key, m->headers.v[i].msg, false));
    for (uint32_t i = 0; i < m->withoutHeaders.n; i++)
        TX_PUSH(t, rm->headers, rm->n_headers,
                header_match(t, m->withoutHeaders.v[i].key, m->withoutHeaders.v[i].msg, true));
    if (m->method)
        TX_PUSH(t, rm->headers, rm->n_headers, header_match(t, ":method", m->method, false));
    if (m->authority)
        TX_PUSH(t, rm->headers, rm->n_headers, header_match(t, ":authority", m->authority, false));
    if (m->scheme)
        TX_PUSH(t, rm->headers, rm->n_headers, header_match(t, ":scheme", m->scheme, false));
    for (uint32_t i = 0; i < m->queryParams.n; i++) {
        Envoy__Config__Route__V3__QueryParameterMatcher *q =
            TX_NEW(t, Envoy__Config__Route__V3__QueryParameterMatcher,
                   ENVOY__CONFIG__ROUTE__V3__QUERY_PARAMETER_MATCHER__INIT);
        q->name = tx_str(t, m->queryParams.v[i].key);
        pb_smatch_t *s = string_match(t, m->queryParams.v[i].msg);
        if (s) {
            q->query_parameter_match_specifier_case =
                ENVOY__CONFIG__ROUTE__V3__QUERY_PARAMETER_MATCHER__QUERY_PARAMETER_MATCH_SPECIFIER_STRING_MATCH;
            q->string_match = s;
        } else {
            q->query_parameter_match_specifier_case =
                ENVOY__CONFIG__ROUTE__V3__QUERY_PARAMETER_MATCHER__QUERY_PARAMETER_MATCH_SPECIFIER_PRESENT_MATCH;
            q->present_match = 1;
        }
        TX_PUSH(t, rm->query_parameters, rm->n_query_parameters, q);
    }
    return rm;
}

/* ---- actions ---- */

static void header_ops(tx_t *t, const cfg_HeaderOperations *ops, pb_hvo_t ***add, size_t *nadd,
                       char ***rm, size_t *nrm)
{
    if (ops == NULL)
        return;
    for (int pass = 0; pass < 2; pass++) {
        const cfg_map_t *m = pass == 0 ? &ops->set : &ops->add;
        for (uint32_t i = 0; i < m->n; i++) {
            Envoy__Config__Core__V3__HeaderValue *hv = TX_NEW(
                t, Envoy__Config__Core__V3__HeaderValue, ENVOY__CONFIG__CORE__V3__HEADER_VALUE__INIT);
            hv->key = tx_str(t, m->v[i].key);
            hv->value = tx_str(t, m->v[i].str);
            pb_hvo_t *o = TX_NEW(t, pb_hvo_t, ENVOY__CONFIG__CORE__V3__HEADER_VALUE_OPTION__INIT);
            o->header = hv;
            o->append_action = pass == 0
                                   ? ENVOY__CONFIG__CORE__V3__HEADER_VALUE_OPTION__HEADER_APPEND_ACTION__OVERWRITE_IF_EXISTS_OR_ADD
                                   : ENVOY__CONFIG__CORE__V3__HEADER_VALUE_OPTION__HEADER_APPEND_ACTION__APPEND_IF_EXISTS_OR_ADD;
            TX_PUSH(t, *add, *nadd, o);
        }
    }
    for (uint32_t i = 0; i < ops->remove.n; i++)
        TX_PUSH(t, *rm, *nrm, tx_str(t, ops->remove.v[i]));
}

/* Cluster name of a route destination (host resolved in namespace ns). */
static char *dest_cluster(tx_t *t, const cfg_Destination *d, const char *ns, uint32_t port)
{
    const char *host = xds_resolve_host(t->a, d->host, ns);
    const reg_service_t *s = tx_service(t, host);
    uint32_t p = d->port && d->port->number ? d->port->number : 0;
    if (p == 0 && s && s->nports == 1)
        p = s->ports[0].port;
    if (p == 0)
        p = port;
    if (s == NULL)
        tx_warn(t, "route destination %s: no such service visible from namespace %s", host,
                t->px->namespace);
    char name[1024];
    xds_cluster_name(name, sizeof(name), XDS_OUTBOUND, p, d->subset, host);
    return tx_str(t, name);
}

static int grpc_code(const char *s)
{
    static const char *const names[] = {"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT",
                                        "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS",
                                        "PERMISSION_DENIED", "RESOURCE_EXHAUSTED",
                                        "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
                                        "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
                                        "UNAUTHENTICATED"};
    for (int i = 0; s && i < 17; i++)
        if (strcmp(s, names[i]) == 0)
            return i;
    return -1;
}

static Envoy__Type__V3__FractionalPercent *fault_pct(tx_t *t, const cfg_Percent *p, int32_t legacy)
{
    if (p)
        return tx_fraction(t, p->value);
    Envoy__Type__V3__FractionalPercent *f = tx_fraction(t, 100);
    if (legacy > 0) {
        f->numerator = (uint32_t)legacy;
        f->denominator = ENVOY__TYPE__V3__FRACTIONAL_PERCENT__DENOMINATOR_TYPE__HUNDRED;
    }
    return f;
}

static pb_any_t *fault_config(tx_t *t, const cfg_HTTPFaultInjection *f)
{
    Envoy__Extensions__Filters__Http__Fault__V3__HTTPFault *h =
        TX_NEW(t, Envoy__Extensions__Filters__Http__Fault__V3__HTTPFault,
               ENVOY__EXTENSIONS__FILTERS__HTTP__FAULT__V3__HTTPFAULT__INIT);
    if (f->delay && f->delay->fixedDelay > 0) {
        Envoy__Extensions__Filters__Common__Fault__V3__FaultDelay *d =
            TX_NEW(t, Envoy__Extensions__Filters__Common__Fault__V3__FaultDelay,
                   ENVOY__EXTENSIONS__FILTERS__COMMON__FAULT__V3__FAULT_DELAY__INIT);
        d->fault_delay_secifier_case = ENVOY__EXTENSIONS__FILTERS__COMMON__FAULT__V3__FAULT_DELAY__FAULT_DELAY_SECIFIER_FIXED_DELAY;
        d->fixed_delay = tx_duration(t, f->delay->fixedDelay);
        d->percentage = fault_pct(t, f->delay->percentage, f->delay->percent);
        h->delay = d;
    }
    if (f->abort) {
        Envoy__Extensions__Filters__Http__Fault__V3__FaultAbort *a =
            TX_NEW(t, Envoy__Extensions__Filters__Http__Fault__V3__FaultAbort,
                   ENVOY__EXTENSIONS__FILTERS__HTTP__FAULT__V3__FAULT_ABORT__INIT);
        int g = grpc_code(f->abort->grpcStatus);
        if (CFG_HAS(f->abort, HTTPFaultInjectionAbort, httpStatus)) {
            a->error_type_case = ENVOY__EXTENSIONS__FILTERS__HTTP__FAULT__V3__FAULT_ABORT__ERROR_TYPE_HTTP_STATUS;
            a->http_status = (uint32_t)f->abort->httpStatus;
        } else if (g >= 0) {
            a->error_type_case = ENVOY__EXTENSIONS__FILTERS__HTTP__FAULT__V3__FAULT_ABORT__ERROR_TYPE_GRPC_STATUS;
            a->grpc_status = (uint32_t)g;
        }
        a->percentage = fault_pct(t, f->abort->percentage, 0);
        if (a->error_type_case)
            h->abort = a;
    }
    return tx_any(t, h);
}

static pb_any_t *cors_config(tx_t *t, const cfg_CorsPolicy *c)
{
    Envoy__Extensions__Filters__Http__Cors__V3__CorsPolicy *p =
        TX_NEW(t, Envoy__Extensions__Filters__Http__Cors__V3__CorsPolicy,
               ENVOY__EXTENSIONS__FILTERS__HTTP__CORS__V3__CORS_POLICY__INIT);
    for (uint32_t i = 0; i < c->allowOrigins.n; i++) {
        pb_smatch_t *s = string_match(t, &c->allowOrigins.v[i]);
        if (s)
            TX_PUSH(t, p->allow_origin_string_match, p->n_allow_origin_string_match, s);
    }
    for (uint32_t i = 0; i < c->allowOrigin.n; i++)
        TX_PUSH(t, p->allow_origin_string_match, p->n_allow_origin_string_match,
                tx_smatch_exact(t, c->allowOrigin.v[i]));
    const cfg_strlist_t *lists[3] = {&c->allowMethods, &c->allowHeaders, &c->exposeHeaders};
    char **outs[3] = {&p->allow_methods, &p->allow_headers, &p->expose_headers};
    for (int k = 0; k < 3; k++) {
        size_t len = 1;
        for (uint32_t i = 0; i < lists[k]->n; i++)
            len += strlen(lists[k]->v[i]) + 1;
        char *s = arena_alloc(t->a, len);
        for (uint32_t i = 0; i < lists[k]->n; i++) {
            if (i)
                strcat(s, ",");
            strcat(s, lists[k]->v[i]);
        }
        *outs[k] = s;
    }
    if (c->maxAge > 0)
        p->max_age = tx_printf(t, "%lld", (long long)(c->maxAge / 1000000000LL));
    if (CFG_HAS(c, CorsPolicy, allowCredentials))
        p->allow_credentials = tx_bool(t, c->allowCredentials);
    p->filter_enabled = tx_runtime_fraction(t, 100);
    return tx_any(t, p);
}

static void per_filter(tx_t *t, pb_route_t *r, const char *name, pb_any_t *cfg)
{
    Envoy__Config__Route__V3__Route__TypedPerFilterConfigEntry *e =
        TX_NEW(t, Envoy__Config__Route__V3__Route__TypedPerFilterConfigEntry,
               ENVOY__CONFIG__ROUTE__V3__ROUTE__TYPED_PER_FILTER_CONFIG_ENTRY__INIT);
    e->key = tx_str(t, name);
    e->value = cfg;
    TX_PUSH(t, r->typed_per_filter_config, r->n_typed_per_filter_config, e);
}

/* The hash policy of a consistentHash load balancer (header, cookie, source
 * IP or query parameter), or NULL when it names none. */
Envoy__Config__Route__V3__RouteAction__HashPolicy *tx_hash_policy(tx_t *t, const cfg_ConsistentHashLB *ch)
{
    if (ch == NULL)
        return NULL;
    Envoy__Config__Route__V3__RouteAction__HashPolicy *hp =
        TX_NEW(t, Envoy__Config__Route__V3__RouteAction__HashPolicy,
               ENVOY__CONFIG__ROUTE__V3__ROUTE_ACTION__HASH_POLICY__INIT);
    if (ch->httpHeaderName) {
        hp->policy_specifier_case = ENVOY__CONFIG__ROUTE__V3__ROUTE_ACTION__HASH_POLICY__POLICY_SPECIFIER_HEADER;
        hp->header = TX_NEW(t, Envoy__Config__Route__V3__RouteAction__HashPolicy__Header,
                            ENVOY__CONFIG__ROUTE__V3__ROUTE_ACTION__HASH_POLICY__HEADER__INIT);
        hp->header->header_name = tx_str(t, ch->httpHeaderName);
    } else if (ch->httpCookie) {
        hp->policy_specifier_case = ENVOY__CONFIG__ROUTE__V3__ROUTE_ACTION__HASH_POLICY__POLICY_SPECIFIER_COOKIE;
        hp->cookie = TX_NEW(t, Envoy__Config__Route__V3__RouteAction__HashPolicy__Cookie,
                            ENVOY__CONFIG__ROUTE__V3__ROUTE_ACTION__HASH_POLICY__COOKIE__INIT);
        hp->cookie->name = tx_str(t, ch->httpCookie->name);
        hp->cookie->path = tx_str(t, ch->httpCookie->path);
        if (ch->httpCookie->ttl > 0)
            hp->cookie->ttl = tx_duration(t, ch->httpCookie->ttl);
    } else if (ch->useSourceIp) {
        hp->policy_specifier_case = ENVOY__CONFIG__ROUTE__V3__ROUTE_ACTION__HASH_POLICY__POLICY_SPECIFIER_CONNECTION_PROPERTIES;
        hp->connection_properties = TX_NEW(t, Envoy__Config__Route__V3__RouteAction__HashPolicy__ConnectionProperties,
                                           ENVOY__CONFIG__ROUTE__V3__ROUTE_ACTION__HASH_POLICY__CONNECTION_PROPERTIES__INIT);
        hp->connection_properties->source_ip = 1;
    } else if (ch->httpQueryParameterName) {
        hp->policy_specifier_case = ENVOY__CONFIG__ROUTE__V3__ROUTE_ACTION__HASH_POLICY__POLICY_SPECIFIER_QUERY_PARAMETER;
        hp->query_parameter = TX_NEW(t, Envoy__Config__Route__V3__RouteAction__HashPolicy__QueryParameter,
                                     ENVOY__CONFIG__ROUTE__V3__ROUTE_ACTION__HASH_POLICY__QUERY_PARAMETER__INIT);
        hp->query_parameter->name = tx_str(t, ch->httpQueryParameterName);
    }
    return hp->policy_specifier_case ? hp : NULL;
}

/* The route (action, headers, filters) of an HTTPRoute, without its match. */
static pb_route_t *http_action(tx_t *t, const cfg_HTTPRoute *h, const char *ns, uint32_t port,
                               const char *operation)
{
    pb_route_t *r = TX_NEW(t, pb_route_t, ENVOY__CONFIG__ROUTE__V3__ROUTE__INIT);
    r->name = tx_str(t, h->name);
    r->decorator = decorator(t, operation);
    if (h->headers) {
        header_ops(t, h->headers->request, &r->request_headers_to_add, &r->n_request_headers_to_add,
                   &r->request_headers_to_remove, &r->n_request_headers_to_remove);
        header_ops(t, h->headers->response, &r->response_headers_to_add, &r->n_response_headers_to_add,
                   &r->response_headers_to_remove, &r->n_response_headers_to_remove);
    }
    if (h->redirect) {
        const cfg_HTTPRedirect *rd = h->redirect;
        Envoy__Config__Route__V3__RedirectAction *a = TX_NEW(
            t, Envoy__Config__Route__V3__RedirectAction, ENVOY__CONFIG__ROUTE__V3__REDIRECT_ACTION__INIT);
        if (rd->uri) {
            a->path_rewrite_specifier_case = ENVOY__CONFIG__ROUTE__V3__REDIRECT_ACTION__PATH_REWRITE_SPECIFIER_PATH_REDIRECT;
            a->path_redirect = tx_str(t, rd->uri);
        } else if (rd->prefixRewrite) {
            a->path_rewrite_specifier_case = ENVOY__CONFIG__ROUTE__V3__REDIRECT_ACTION__PATH_REWRITE_SPECIFIER_PREFIX_REWRITE;
            a->prefix_rewrite = tx_str(t, rd->prefixRewrite);
        }
        if (rd->authority)
            a->host_redirect = tx_str(t, rd->authority);
        if (rd->port)
            a->port_redirect = rd->port;
        if (rd->scheme) {
            a->scheme_rewrite_specifier_case = ENVOY__CONFIG__ROUTE__V3__REDIRECT_ACTION__SCHEME_REWRITE_SPECIFIER_SCHEME_REDIRECT;
            a->scheme_redirect = tx_str(t, rd->scheme);
        }
        switch (rd->redirectCode) {
        case 302: a->response_code = ENVOY__CONFIG__ROUTE__V3__REDIRECT_ACTION__REDIRECT_RESPONSE_CODE__FOUND; break;
        case 303: a->response_code = ENVOY__CONFIG__ROUTE__V3__REDIRECT_ACTION__REDIRECT_RESPONSE_CODE__SEE_OTHER; break;
        case 307: a->response_code = ENVOY__CONFIG__ROUTE__V3__REDIRECT_ACTION__REDIRECT_RESPONSE_CODE__TEMPORARY_REDIRECT; break;
        case 308: a->response_code = ENVOY__CONFIG__ROUTE__V3__REDIRECT_ACTION__REDIRECT_RESPONSE_CODE__PERMANENT_REDIRECT; break;
        default: a->response_code = ENVOY__CONFIG__ROUTE__V3__REDIRECT_ACTION__REDIRECT_RESPONSE_CODE__MOVED_PERMANENTLY; break;
        }
        r->action_case = ENVOY__CONFIG__ROUTE__V3__ROUTE__ACTION_REDIRECT;
        r->redirect = a;
    } else if (h->directResponse) {
        Envoy__Config__Route__V3__DirectResponseAction *d =
            TX_NEW(t, Envoy__Config__Route__V3__DirectResponseAction,
                   ENVOY__CONFIG__ROUTE__V3__DIRECT_RESPONSE_ACTION__INIT);
        d->status = h->directResponse->status;
        const cfg_HTTPBody *b = h->directResponse->body;
        if (b && (b->string || b->bytes)) {
            Envoy__Config__Core__V3__DataSource *ds = TX_NEW(
                t, Envoy__Config__Core__V3__DataSource, ENVOY__CONFIG__CORE__V3__DATA_SOURCE__INIT);
            ds->specifier_case = ENVOY__CONFIG__CORE__V3__DATA_SOURCE__SPECIFIER_INLINE_STRING;
            ds->inline_string = tx_str(t, b->string ? b->string : b->bytes);
            d->body = ds;
        }
        r->action_case = ENVOY__CONFIG__ROUTE__V3__ROUTE__ACTION_DIRECT_RESPONSE;
        r->direct_response = d;
    } else {
        pb_raction_t *a = TX_NEW(t, pb_raction_t, ENVOY__CONFIG__ROUTE__V3__ROUTE_ACTION__INIT);
        bool hash_lb = false;
        if (h->route.n == 1) {
            a->cluster_specifier_case = ENVOY__CONFIG__ROUTE__V3__ROUTE_ACTION__CLUSTER_SPECIFIER_CLUSTER;
            a->cluster = dest_cluster(t, h->route.v[0].destination, ns, port);
            if (h->route.v[0].headers) {
                header_ops(t, h->route.v[0].headers->request, &r->request_headers_to_add,
                           &r->n_request_headers_to_add, &r->request_headers_to_remove,
                           &r->n_request_headers_to_remove);
                header_ops(t, h->route.v[0].headers->response, &r->response_headers_to_add,
                           &r->n_response_headers_to_add, &r->response_headers_to_remove,
                           &r->n_response_headers_to_remove);
            }
        } else if (h->route.n > 1) {
            Envoy__Config__Route__V3__WeightedCluster *wc = TX_NEW(
                t, Envoy__Config__Route__V3__WeightedCluster, ENVOY__CONFIG__ROUTE__V3__WEIGHTED_CLUSTER__INIT);
            uint32_t total = 0;
            for (uint32_t i = 0; i < h->route.n; i++) {
                const cfg_HTTPRouteDestination *d = &h->route.v[i];
                Envoy__Config__Route__V3__WeightedCluster__ClusterWeight *cw =
                    TX_NEW(t, Envoy__Config__Route__V3__WeightedCluster__ClusterWeight,
                           ENVOY__CONFIG__ROUTE__V3__WEIGHTED_CLUSTER__CLUSTER_WEIGHT__INIT);
                cw->name = dest_cluster(t, d->destination, ns, port);
                cw->weight = tx_u32(t, d->weight > 0 ? (uint32_t)d->weight : 0);
                total += cw->weight->value;
                if (d->headers) {
                    header_ops(t, d->headers->request, &cw->request_headers_to_add,
                               &cw->n_request_headers_to_add, &cw->request_headers_to_remove,
                               &cw->n_request_headers_to_remove);
                    header_ops(t, d->headers->response, &cw->response_headers_to_add,
                               &cw->n_response_headers_to_add, &cw->response_headers_to_remove,
                               &cw->n_response_headers_to_remove);
                }
                TX_PUSH(t, wc->clusters, wc->n_clusters, cw);
            }
            wc->total_weight = tx_u32(t, total);
            a->cluster_specifier_case = ENVOY__CONFIG__ROUTE__V3__ROUTE_ACTION__CLUSTER_SPECIFIER_WEIGHTED_CLUSTERS;
            a->weighted_clusters = wc;
        }
        if (h->route.n >= 1) {
            const char *host = xds_resolve_host(t->a, h->route.v[0].destination->host, ns);
            const cfg_DestinationRule *dr = tx_dr_for(t, host, NULL);
            tx_policy_t pol;
            tx_policy_for(dr, tx_dr_subset(dr, h->route.v[0].destination->subset), port, &pol);
            hash_lb = pol.lb && pol.lb->consistentHash;
            Envoy__Config__Route__V3__RouteAction__HashPolicy *hp =
                hash_lb ? tx_hash_policy(t, pol.lb->consistentHash) : NULL;
            if (hp)
                TX_PUSH(t, a->hash_policy, a->n_hash_policy, hp);
        }
        if (h->rewrite) {
            if (h->rewrite->uri)
                a->prefix_rewrite = tx_str(t, h->rewrite->uri);
            if (h->rewrite->uriRegexRewrite) {
                Envoy__Type__Matcher__V3__RegexMatchAndSubstitute *rs =
                    TX_NEW(t, Envoy__Type__Matcher__V3__RegexMatchAndSubstitute,
                           ENVOY__TYPE__MATCHER__V3__REGEX_MATCH_AND_SUBSTITUTE__INIT);
                rs->pattern = TX_NEW(t, Envoy__Type__Matcher__V3__RegexMatcher,
                                     ENVOY__TYPE__MATCHER__V3__REGEX_MATCHER__INIT);
                rs->pattern->regex = tx_str(t, h->rewrite->uriRegexRewrite->match);
                rs->substitution = tx_str(t, h->rewrite->uriRegexRewrite->rewrite);
                a->regex_rewrite = rs;
            }
            if (h->rewrite->authority) {
                a->host_rewrite_specifier_case = ENVOY__CONFIG__ROUTE__V3__ROUTE_ACTION__HOST_REWRITE_SPECIFIER_HOST_REWRITE_LITERAL;
                a->host_rewrite_literal = tx_str(t, h->rewrite->authority);
            }
        }
        set_timeouts(t, a, CFG_HAS(h, HTTPRoute, timeout) ? h->timeout : 0);
        a->retry_policy = convert_retry(t, h->retries, hash_lb);
        if (h->mirror) {
            Envoy__Config__Route__V3__RouteAction__RequestMirrorPolicy *mp =
                TX_NEW(t, Envoy__Config__Route__V3__RouteAction__RequestMirrorPolicy,
                       ENVOY__CONFIG__ROUTE__V3__ROUTE_ACTION__REQUEST_MIRROR_POLICY__INIT);
            mp->cluster = dest_cluster(t, h->mirror, ns, port);
            double pct = h->mirrorPercentage ? h->mirrorPercentage->value
                         : CFG_HAS(h, HTTPRoute, mirrorPercent) ? h->mirrorPercent
                         : CFG_HAS(h, HTTPRoute, mirror_percent) ? h->mirror_percent
                                                                 : 100;
            mp->runtime_fraction = tx_runtime_fraction(t, pct);
            mp->trace_sampled = tx_bool(t, false);
            TX_PUSH(t, a->request_mirror_policies, a->n_request_mirror_policies, mp);
        }
        for (uint32_t i = 0; i < h->mirrors.n; i++) {
            Envoy__Config__Route__V3__RouteAction__RequestMirrorPolicy *mp =
                TX_NEW(t, Envoy__Config__Route__V3__RouteAction__RequestMirrorPolicy,
                       ENVOY__CONFIG__ROUTE__V3__ROUTE_ACTION__REQUEST_MIRROR_POLICY__INIT);
            mp->cluster = dest_cluster(t, h->mirrors.v[i].destination, ns, port);
            mp->runtime_fraction =
                tx_runtime_fraction(t, h->mirrors.v[i].percentage ? h->mirrors.v[i].percentage->value : 100);
            mp->trace_sampled = tx_bool(t, false);
            TX_PUSH(t, a->request_mirror_policies, a->n_request_mirror_policies, mp);
        }
        r->action_case = ENVOY__CONFIG__ROUTE__V3__ROUTE__ACTION_ROUTE;
        r->route = a;
    }
    if (h->fault)
        per_filter(t, r, "envoy.filters.http.fault", fault_config(t, h->fault));
    if (h->corsPolicy)
        per_filter(t, r, "envoy.filters.http.cors", cors_config(t, h->corsPolicy));
    return r;
}

static bool list_has(const cfg_strlist_t *l, const char *s)
{
    for (uint32_t i = 0; i < l->n; i++)
        if (strcmp(l->v[i], s) == 0)
            return true;
    return false;
}

/* True when a gateway reference list (VS or match gateways) selects the
 * proxy: "mesh" for sidecars, "ns/name" or "name" for gateways. */
static bool gateways_select(tx_t *t, const cfg_strlist_t *gws, const char *vs_ns,
                            const cfg_object_t *const *gwobjs, size_t ngw)
{
    if (gwobjs == NULL)
        return gws->n == 0 || list_has(gws, "mesh");
    for (uint32_t i = 0; i < gws->n; i++) {
        const char *g = gws->v[i];
        const char *slash = strchr(g, '/');
        for (size_t k = 0; k < ngw; k++) {
            const cfg_object_t *o = gwobjs[k];
            if (slash) {
                size_t nl = (size_t)(slash - g);
                if (strlen(o->namespace) == nl && strncmp(o->namespace, g, nl) == 0 &&
                    strcmp(o->name, slash + 1) == 0)
                    return true;
            } else if (strcmp(o->name, g) == 0 && strcmp(o->namespace, vs_ns) == 0) {
                return true;
            }
        }
    }
    (void)t;
    return false;
}

/* Appends the routes of a VirtualService for a port. Returns routes added. */
static size_t vs_routes(tx_t *t, const cfg_object_t *vso, uint32_t port, const char *operation,
                        const cfg_object_t *const *gws, size_t ngw, pb_route_t ***out, size_t *n)
{
    const cfg_VirtualService *vs = CFG_BODY(vso, VirtualService)->spec;
    size_t added = 0;
    for (uint32_t i = 0; i < vs->http.n; i++) {
        const cfg_HTTPRoute *h = &vs->http.v[i];
        if (h->delegate) {
            tx_warn(t, "VirtualService %s/%s: http[%u].delegate is not supported; route skipped",
                    vso->namespace, vso->name, i);
            continue;
        }
        pb_route_t *proto = NULL;
        bool catch_all = false;
        uint32_t nm = h->match.n ? h->match.n : 1;
        for (uint32_t j = 0; j < nm; j++) {
            const cfg_HTTPMatchRequest *m = h->match.n ? &h->match.v[j] : NULL;
            if (m) {
                if (m->port && m->port != port)
                    continue;
                const cfg_strlist_t *g = m->gateways.n ? &m->gateways : &vs->gateways;
                if (!gateways_select(t, g, vso->namespace, gws, ngw))
                    continue;
                if (m->sourceLabels.n && !tx_proxy_selected(t, &m->sourceLabels))
                    continue;
                if (m->sourceNamespace && strcmp(m->sourceNamespace, t->px->namespace) != 0)
                    continue;
            }
            if (proto == NULL)
                proto = http_action(t, h, vso->namespace, port, operation);
            pb_route_t *r = tx_dup(t, proto, sizeof(*r));
            if (m) {
                r->match = route_match(t, m);
                if (m->name)
                    r->name = h->name ? tx_printf(t, "%s.%s", h->name, m->name) : tx_str(t, m->name);
            } else {
                r->match = prefix_match(t, "/");
            }
            bool trivial = m == NULL || (m->uri == NULL && m->headers.n == 0 && m->queryParams.n == 0 &&
                                         m->method == NULL && m->authority == NULL &&
                                         m->scheme == NULL && m->withoutHeaders.n == 0);
            if (trivial)
                catch_all = true;
            TX_PUSH(t, *out, *n, r);
            added++;
        }
        if (catch_all)
            break; /* later rules can never match */
    }
    return added;
}

static void add_domain(tx_t *t, pb_vhost_t *vh, const char *d, uint32_t port)
{
    TX_PUSH(t, vh->domains, vh->n_domains, tx_str(t, d));
    TX_PUSH(t, vh->domains, vh->n_domains, tx_printf(t, "%s:%u", d, port));
}

/* Domains of a service's virtual host, as Istio generates them. */
static void service_domains(tx_t *t, pb_vhost_t *vh, const reg_service_t *s, uint32_t port)
{
    add_domain(t, vh, s->hostname, port);
    if (s->source == REG_SRC_KUBERNETES) {
        /* NAME.NS.svc.cluster.local: NAME (same namespace), NAME.NS, NAME.NS.svc */
        if (strcmp(s->namespace, t->px->namespace) == 0)
            add_domain(t, vh, s->name, port);
        add_domain(t, vh, tx_printf(t, "%s.%s", s->name, s->namespace), port);
        add_domain(t, vh, tx_printf(t, "%s.%s.svc", s->name, s->namespace), port);
    }
    if (s->address && strcmp(s->address, "0.0.0.0") != 0 && strchr(s->address, '/') == NULL)
        add_domain(t, vh, s->address, port);
}

static pb_vhost_t *new_vhost(tx_t *t, const char *name)
{
    pb_vhost_t *vh = TX_NEW(t, pb_vhost_t, ENVOY__CONFIG__ROUTE__V3__VIRTUAL_HOST__INIT);
    vh->name = tx_str(t, name);
    return vh;
}

static int u32_cmp(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static bool outbound_allow_any(tx_t *t)
{
    const cfg_Sidecar *sc = t->sidecar ? CFG_BODY(t->sidecar, Sidecar)->spec : NULL;
    if (sc && sc->outboundTrafficPolicy && CFG_HAS(sc->outboundTrafficPolicy, OutboundTrafficPolicy, mode))
        return sc->outboundTrafficPolicy->mode == cfg_OutboundTrafficPolicyMode_ALLOW_ANY;
    return true;
}

pb_route_t *tx_service_default_route(tx_t *t, const reg_service_t *s, uint32_t port,
                                     const char *operation)
{
    char cname[1024];
    xds_cluster_name(cname, sizeof(cname), XDS_OUTBOUND, port, "", s->hostname);
    const cfg_DestinationRule *dr = tx_dr_for(t, s->hostname, NULL);
    tx_policy_t pol;
    tx_policy_for(dr, NULL, port, &pol);
    bool hash_lb = pol.lb && pol.lb->consistentHash;
    pb_route_t *r = tx_default_route(t, cname, operation, hash_lb);
    Envoy__Config__Route__V3__RouteAction__HashPolicy *hp =
        hash_lb ? tx_hash_policy(t, pol.lb->consistentHash) : NULL;
    if (hp)
        TX_PUSH(t, r->route->hash_policy, r->route->n_hash_policy, hp);
    return r;
}

size_t tx_vs_mesh_routes(tx_t *t, const cfg_object_t *vs, uint32_t port, const char *operation,
                         pb_route_t ***out, size_t *n)
{
    return vs_routes(t, vs, port, operation, NULL, 0, out, n);
}

void tx_service_domains(tx_t *t, pb_vhost_t *vh, const reg_service_t *s, uint32_t port)
{
    service_domains(t, vh, s, port);
}

void tx_build_routes(tx_t *t)
{
    if (t->px->type != XDS_SIDECAR || t->part == TX_INBOUND)
        return; /* gateways build theirs with their listeners; inbound routes are inline */
    uint32_t *ports = NULL;
    size_t np = 0;
    for (size_t i = 0; i < t->nsvcs; i++) {
        const reg_service_t *s = t->svcs[i];
        for (uint32_t p = 0; p < s->nports; p++) {
            reg_protocol_t pr = s->ports[p].protocol;
            if (!reg_protocol_is_http(pr) && pr != REG_PROTO_UNKNOWN)
                continue;
            bool seen = false;
            for (size_t k = 0; k < np && !seen; k++)
                seen = ports[k] == s->ports[p].port;
            if (!seen)
                TX_PUSH(t, ports, np, s->ports[p].port);
        }
    }
    if (np)
        qsort(ports, np, sizeof(*ports), u32_cmp);
    for (size_t k = 0; k < np; k++) {
        uint32_t port = ports[k];
        pb_rc_t *rc = TX_NEW(t, pb_rc_t, ENVOY__CONFIG__ROUTE__V3__ROUTE_CONFIGURATION__INIT);
        rc->name = tx_printf(t, "%u", port);
        rc->validate_clusters = tx_bool(t, false);
        tx_map_t vhosts = {0}; /* virtual host names of this configuration */
        for (size_t i = 0; i < t->nsvcs; i++) {
            const reg_service_t *s = t->svcs[i];
            const reg_port_t *sp = reg_service_port(s, port);
            if (sp == NULL || (!reg_protocol_is_http(sp->protocol) && sp->protocol != REG_PROTO_UNKNOWN))
                continue;
            /* one virtual host per hostname (the first visible service wins) */
            char *vname = tx_printf(t, "%s:%u", s->hostname, port);
            void **slot = tx_map_slot(t, &vhosts, vname);
            if (*slot != NULL)
                continue;
            pb_vhost_t *vh = new_vhost(t, vname);
            *slot = vh;
            service_domains(t, vh, s, port);
            const char *op = tx_printf(t, "%s:%u/*", s->hostname, port);
            const cfg_object_t *vs = tx_vs_for_host(t, s->hostname);
            if (vs)
                vs_routes(t, vs, port, op, NULL, 0, &vh->routes, &vh->n_routes);
            if (vh->n_routes == 0) {
                TX_PUSH(t, vh->routes, vh->n_routes, tx_service_default_route(t, s, port, op));
            }
            vh->include_request_attempt_count = 1;
            TX_PUSH(t, rc->virtual_hosts, rc->n_virtual_hosts, vh);
        }
        /* catch-all for unknown destinations */
        bool allow = outbound_allow_any(t);
        pb_vhost_t *vh = new_vhost(t, allow ? "allow_any" : "block_all");
        TX_PUSH(t, vh->domains, vh->n_domains, tx_str(t, "*"));
        pb_route_t *r;
        if (allow) {
            r = tx_default_route(t, XDS_PASSTHROUGH_CLUSTER, "PassthroughCluster/*", false);
            r->name = tx_str(t, "allow_any");
            r->route->retry_policy = NULL;
        } else {
            r = TX_NEW(t, pb_route_t, ENVOY__CONFIG__ROUTE__V3__ROUTE__INIT);
            r->name = tx_str(t, "block_all");
            r->match = prefix_match(t, "/");
            r->action_case = ENVOY__CONFIG__ROUTE__V3__ROUTE__ACTION_DIRECT_RESPONSE;
            r->direct_response = TX_NEW(t, Envoy__Config__Route__V3__DirectResponseAction,
                                        ENVOY__CONFIG__ROUTE__V3__DIRECT_RESPONSE_ACTION__INIT);
            r->direct_response->status = 502;
        }
        TX_PUSH(t, vh->routes, vh->n_routes, r);
        vh->include_request_attempt_count = 1;
        TX_PUSH(t, rc->virtual_hosts, rc->n_virtual_hosts, vh);
        tx_emit(t, XDS_ROUTE, rc->name, rc);
    }
}

/* ---- gateways ---- */

/* True when a VirtualService host is served by a gateway server host
 * ("host", "*.domain", "*" or "ns/host"). */
static bool server_host_allows(const char *server_host, const char *vs_host, const char *vs_ns)
{
    const char *slash = strchr(server_host, '/');
    if (slash) {
        size_t nl = (size_t)(slash - server_host);
        bool any = nl == 1 && server_host[0] == '*';
        bool dot = nl == 1 && server_host[0] == '.';
        if (!any && !dot && !(strlen(vs_ns) == nl && strncmp(vs_ns, server_host, nl) == 0))
            return false;
        server_host = slash + 1;
    }
    return xds_host_match(server_host, vs_host) || xds_host_match(vs_host, server_host);
}

/* The virtual host of a server with httpsRedirect, for one of its hosts:
 * require_tls ALL, as Istio sets it, and a route that redirects every
 * request to https (what require_tls does for plaintext requests, spelled
 * as a route so that a proxy reading only routes does the same). */
static pb_vhost_t *redirect_vhost(tx_t *t, const char *host, uint32_t port)
{
    pb_vhost_t *vh = new_vhost(t, tx_printf(t, "%s:%u", host, port));
    if (strcmp(host, "*") == 0)
        TX_PUSH(t, vh->domains, vh->n_domains, tx_str(t, "*"));
    else
        add_domain(t, vh, host, port);
    vh->require_tls = ENVOY__CONFIG__ROUTE__V3__VIRTUAL_HOST__TLS_REQUIREMENT_TYPE__ALL;
    pb_route_t *r = TX_NEW(t, pb_route_t, ENVOY__CONFIG__ROUTE__V3__ROUTE__INIT);
    r->name = tx_str(t, "https_redirect");
    r->match = prefix_match(t, "/");
    r->action_case = ENVOY__CONFIG__ROUTE__V3__ROUTE__ACTION_REDIRECT;
    r->redirect = TX_NEW(t, Envoy__Config__Route__V3__RedirectAction, ENVOY__CONFIG__ROUTE__V3__REDIRECT_ACTION__INIT);
    r->redirect->scheme_rewrite_specifier_case =
        ENVOY__CONFIG__ROUTE__V3__REDIRECT_ACTION__SCHEME_REWRITE_SPECIFIER_HTTPS_REDIRECT;
    r->redirect->https_redirect = 1;
    r->redirect->response_code =
        ENVOY__CONFIG__ROUTE__V3__REDIRECT_ACTION__REDIRECT_RESPONSE_CODE__MOVED_PERMANENTLY;
    TX_PUSH(t, vh->routes, vh->n_routes, r);
    return vh;
}

/* Whether a server redirects its requests to https: httpsRedirect on a
 * server that speaks plaintext HTTP (on a server that terminates TLS there
 * is no plaintext request to redirect, as with Envoy's require_tls). */
static bool server_redirects(const cfg_Server *s)
{
    if (s->tls == NULL || !s->tls->httpsRedirect || s->port == NULL)
        return false;
    reg_protocol_t pr = reg_protocol_parse(s->port->protocol);
    bool terminates = CFG_HAS(s->tls, ServerTLSSettings, mode) && s->tls->mode != cfg_ServerTLSmode_PASSTHROUGH &&
                      s->tls->mode != cfg_ServerTLSmode_AUTO_PASSTHROUGH;
    return pr == REG_PROTO_HTTP || (reg_protocol_is_http(pr) && !terminates);
}

pb_rc_t *tx_gateway_routes(tx_t *t, const char *name, uint32_t port, const cfg_object_t *const *gws,
                           size_t ngws, const cfg_Server *const *servers, size_t nservers)
{
    pb_rc_t *rc = TX_NEW(t, pb_rc_t, ENVOY__CONFIG__ROUTE__V3__ROUTE_CONFIGURATION__INIT);
    rc->name = tx_str(t, name);
    rc->validate_clusters = tx_bool(t, false);
    /* servers with httpsRedirect answer every request with a redirect: their
     * hosts get a virtual host each and no VirtualService routes (Istio) */
    const cfg_Server **routed = NULL;
    size_t nrouted = 0;
    for (size_t i = 0; i < nservers; i++) {
        if (!server_redirects(servers[i])) {
            TX_PUSH(t, routed, nrouted, servers[i]);
            continue;
        }
        for (uint32_t k = 0; k < servers[i]->hosts.n; k++) {
            const char *h = servers[i]->hosts.v[k];
            const char *slash = strchr(h, '/');
            if (slash)
                h = slash + 1;
            const char *vname = tx_printf(t, "%s:%u", h, port);
            bool dup = false;
            for (size_t v = 0; v < rc->n_virtual_hosts && !dup; v++)
                dup = strcmp(rc->virtual_hosts[v]->name, vname) == 0;
            if (!dup)
                TX_PUSH(t, rc->virtual_hosts, rc->n_virtual_hosts, redirect_vhost(t, h, port));
        }
    }
    size_t nredirect = rc->n_virtual_hosts;
    for (size_t i = 0; i < t->nvss && nrouted; i++) {
        const cfg_object_t *vso = t->vss[i];
        const cfg_VirtualService *vs = CFG_BODY(vso, VirtualService)->spec;
        if (vs == NULL || vs->gateways.n == 0 || !gateways_select(t, &vs->gateways, vso->namespace, gws, ngws))
            continue;
        for (uint32_t h = 0; h < vs->hosts.n; h++) {
            const char *host = xds_resolve_host(t->a, vs->hosts.v[h], vso->namespace);
            bool ok = false;
            for (size_t s = 0; s < nrouted && !ok; s++)
                for (uint32_t k = 0; k < routed[s]->hosts.n && !ok; k++)
                    ok = server_host_allows(routed[s]->hosts.v[k], host, vso->namespace);
            if (!ok)
                continue;
            const char *vname = tx_printf(t, "%s:%u", host, port);
            pb_vhost_t *vh = NULL;
            bool redirected = false;
            for (size_t v = 0; v < rc->n_virtual_hosts && vh == NULL; v++) {
                if (strcmp(rc->virtual_hosts[v]->name, vname) == 0) {
                    vh = rc->virtual_hosts[v];
                    redirected = v < nredirect;
                }
            }
            if (redirected)
                continue; /* the name redirects: its routes would never be used */
            if (vh == NULL) {
                vh = new_vhost(t, vname);
                if (strcmp(host, "*") == 0)
                    TX_PUSH(t, vh->domains, vh->n_domains, tx_str(t, "*"));
                else
                    add_domain(t, vh, host, port);
                TX_PUSH(t, rc->virtual_hosts, rc->n_virtual_hosts, vh);
            }
            vs_routes(t, vso, port, tx_printf(t, "%s:%u/*", host, port), gws, ngws, &vh->routes,
                      &vh->n_routes);
        }
    }
    if (rc->n_virtual_hosts == 0) {
        pb_vhost_t *vh = new_vhost(t, tx_printf(t, "blackhole:%u", port));
        TX_PUSH(t, vh->domains, vh->n_domains, tx_str(t, "*"));
        pb_route_t *r = TX_NEW(t, pb_route_t, ENVOY__CONFIG__ROUTE__V3__ROUTE__INIT);
        r->name = tx_str(t, "default");
        r->match = prefix_match(t, "/");
        r->action_case = ENVOY__CONFIG__ROUTE__V3__ROUTE__ACTION_DIRECT_RESPONSE;
        r->direct_response = TX_NEW(t, Envoy__Config__Route__V3__DirectResponseAction,
                                    ENVOY__CONFIG__ROUTE__V3__DIRECT_RESPONSE_ACTION__INIT);
        r->direct_response->status = 404;
        TX_PUSH(t, vh->routes, vh->n_routes, r);
        TX_PUSH(t, rc->virtual_hosts, rc->n_virtual_hosts, vh);
    }
    return rc;
}
