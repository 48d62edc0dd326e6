/*
 * Clusters (CDS) and their endpoints (EDS): outbound|PORT|SUBSET|HOST per
 * visible service port and DestinationRule subset, inbound|PORT|| for the
 * proxy's own workload ports, BlackHoleCluster and PassthroughCluster.
 */
#include <stdio.h>
#include <string.h>

#include "translate_internal.h"

#define DEFAULT_CONNECT_TIMEOUT_NS (10LL * 1000000000LL)
#define MAX_U32 4294967295u

typedef Envoy__Config__Cluster__V3__CircuitBreakers pb_cb_t;
typedef Envoy__Config__Cluster__V3__CircuitBreakers__Thresholds pb_thr_t;
typedef Envoy__Extensions__Upstreams__Http__V3__HttpProtocolOptions pb_upopts_t;
typedef Envoy__Extensions__TransportSockets__Tls__V3__UpstreamTlsContext pb_utls_t;
typedef Envoy__Extensions__TransportSockets__Tls__V3__DownstreamTlsContext pb_dtls_t;
typedef Envoy__Extensions__TransportSockets__Tls__V3__CommonTlsContext pb_ctls_t;
typedef Envoy__Extensions__TransportSockets__Tls__V3__SdsSecretConfig pb_sds_t;

/* ---- TLS ---- */

static pb_sds_t *sds(tx_t *t, const char *name)
{
    pb_sds_t *s = TX_NEW(t, pb_sds_t, ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__SDS_SECRET_CONFIG__INIT);
    s->name = tx_str(t, name);
    s->sds_config = tx_ads(t);
    return s;
}

static pb_tsock_t *tls_socket(tx_t *t, const void *ctx)
{
    pb_tsock_t *ts = TX_NEW(t, pb_tsock_t, ENVOY__CONFIG__CORE__V3__TRANSPORT_SOCKET__INIT);
    ts->name = tx_str(t, "envoy.transport_sockets.tls");
    ts->config_type_case = ENVOY__CONFIG__CORE__V3__TRANSPORT_SOCKET__CONFIG_TYPE_TYPED_CONFIG;
    ts->typed_config = tx_any(t, ctx);
    return ts;
}

static void add_alpn(tx_t *t, pb_ctls_t *c, const char *p)
{
    TX_PUSH(t, c->alpn_protocols, c->n_alpn_protocols, tx_str(t, p));
}

static void add_san(tx_t *t, Envoy__Extensions__TransportSockets__Tls__V3__CertificateValidationContext *v,
                    const char *san)
{
    Envoy__Extensions__TransportSockets__Tls__V3__SubjectAltNameMatcher *m =
        TX_NEW(t, Envoy__Extensions__TransportSockets__Tls__V3__SubjectAltNameMatcher,
               ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__SUBJECT_ALT_NAME_MATCHER__INIT);
    m->san_type = strncmp(san, "spiffe://", 9) == 0
                      ? ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__SUBJECT_ALT_NAME_MATCHER__SAN_TYPE__URI
                      : ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__SUBJECT_ALT_NAME_MATCHER__SAN_TYPE__DNS;
    m->matcher = tx_smatch_exact(t, san);
    TX_PUSH(t, v->match_typed_subject_alt_names, v->n_match_typed_subject_alt_names, m);
}

/* Workload certificate ("default") and mesh root ("ROOTCA") from SDS. */
static pb_ctls_t *istio_common(tx_t *t, const char *const *sans, size_t nsans)
{
    pb_ctls_t *c = TX_NEW(t, pb_ctls_t, ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__COMMON_TLS_CONTEXT__INIT);
    TX_PUSH(t, c->tls_certificate_sds_secret_configs, c->n_tls_certificate_sds_secret_configs,
            sds(t, XDS_SDS_DEFAULT));
    Envoy__Extensions__TransportSockets__Tls__V3__CommonTlsContext__CombinedCertificateValidationContext *cv =
        TX_NEW(t, Envoy__Extensions__TransportSockets__Tls__V3__CommonTlsContext__CombinedCertificateValidationContext,
               ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__COMMON_TLS_CONTEXT__COMBINED_CERTIFICATE_VALIDATION_CONTEXT__INIT);
    cv->default_validation_context =
        TX_NEW(t, Envoy__Extensions__TransportSockets__Tls__V3__CertificateValidationContext,
               ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__CERTIFICATE_VALIDATION_CONTEXT__INIT);
    for (size_t i = 0; i < nsans; i++)
        add_san(t, cv->default_validation_context, sans[i]);
    cv->validation_context_sds_secret_config = sds(t, XDS_SDS_ROOTCA);
    c->validation_context_type_case =
        ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__COMMON_TLS_CONTEXT__VALIDATION_CONTEXT_TYPE_COMBINED_VALIDATION_CONTEXT;
    c->combined_validation_context = cv;
    return c;
}

pb_tsock_t *tx_istio_mutual_upstream(tx_t *t, const char *sni, const reg_service_t *svc, bool h2)
{
    /* SANs: the service accounts of the service's endpoints, as Istio does
     * (the clusters of a service are built one after the other: kept for the
     * next one) */
    if (svc == NULL || svc != t->san_svc) {
        t->san_svc = svc;
        t->sans = NULL;
        t->nsans = 0;
        for (uint32_t i = 0; svc && i < svc->nendpoints; i++) {
            const reg_endpoint_t *e = &svc->endpoints[i];
            if (e->service_account == NULL || !*e->service_account)
                continue;
            bool dup = false;
            char *id = tx_printf(t, "spiffe://%s/ns/%s/sa/%s", t->trust_domain, e->namespace,
                                 e->service_account);
            for (size_t j = 0; j < t->nsans && !dup; j++)
                dup = strcmp(t->sans[j], id) == 0;
            if (!dup)
                TX_PUSH(t, t->sans, t->nsans, id);
        }
    }
    pb_ctls_t *c = istio_common(t, t->sans, t->nsans);
    if (h2)
        add_alpn(t, c, "h2");
    add_alpn(t, c, "istio-peer-exchange");
    add_alpn(t, c, "istio");
    pb_utls_t *u = TX_NEW(t, pb_utls_t, ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__UPSTREAM_TLS_CONTEXT__INIT);
    u->common_tls_context = c;
    u->sni = tx_str(t, sni);
    return tls_socket(t, u);
}

pb_tsock_t *tx_istio_mutual_downstream(tx_t *t, bool http)
{
    pb_ctls_t *c = istio_common(t, NULL, 0);
    if (http) {
        add_alpn(t, c, "h2");
        add_alpn(t, c, "http/1.1");
    }
    pb_dtls_t *d = TX_NEW(t, pb_dtls_t, ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__DOWNSTREAM_TLS_CONTEXT__INIT);
    d->common_tls_context = c;
    d->require_client_certificate = tx_bool(t, true);
    return tls_socket(t, d);
}

static Envoy__Config__Core__V3__DataSource *file_source(tx_t *t, const char *path)
{
    Envoy__Config__Core__V3__DataSource *d = TX_NEW(t, Envoy__Config__Core__V3__DataSource,
                                                    ENVOY__CONFIG__CORE__V3__DATA_SOURCE__INIT);
    d->specifier_case = ENVOY__CONFIG__CORE__V3__DATA_SOURCE__SPECIFIER_FILENAME;
    d->filename = tx_str(t, path);
    return d;
}

/* DestinationRule SIMPLE / MUTUAL TLS toward a service. */
static pb_tsock_t *dr_tls(tx_t *t, const cfg_ClientTLSSettings *tls, const char *host)
{
    pb_ctls_t *c = TX_NEW(t, pb_ctls_t, ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__COMMON_TLS_CONTEXT__INIT);
    const char *ca = tls->caCertificates ? tls->caCertificates : tls->caCertificate;
    if (tls->credentialName) {
        /* gateways: key, certificate and CA from a Kubernetes Secret */
        if (tls->mode == cfg_TLSmode_MUTUAL)
            TX_PUSH(t, c->tls_certificate_sds_secret_configs, c->n_tls_certificate_sds_secret_configs,
                    sds(t, tx_printf(t, "kubernetes://%s", tls->credentialName)));
        c->validation_context_type_case =
            ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__COMMON_TLS_CONTEXT__VALIDATION_CONTEXT_TYPE_VALIDATION_CONTEXT_SDS_SECRET_CONFIG;
        c->validation_context_sds_secret_config =
            sds(t, tx_printf(t, "kubernetes://%s-cacert", tls->credentialName));
    } else {
        if (tls->mode == cfg_TLSmode_MUTUAL && tls->clientCertificate && tls->privateKey) {
            Envoy__Extensions__TransportSockets__Tls__V3__TlsCertificate *tc =
                TX_NEW(t, Envoy__Extensions__TransportSockets__Tls__V3__TlsCertificate,
                       ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__TLS_CERTIFICATE__INIT);
            tc->certificate_chain = file_source(t, tls->clientCertificate);
            tc->private_key = file_source(t, tls->privateKey);
            TX_PUSH(t, c->tls_certificates, c->n_tls_certificates, tc);
        }
        if ((ca && *ca) || tls->subjectAltNames.n) {
            Envoy__Extensions__TransportSockets__Tls__V3__CertificateValidationContext *v =
                TX_NEW(t, Envoy__Extensions__TransportSockets__Tls__V3__CertificateValidationContext,
                       ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__CERTIFICATE_VALIDATION_CONTEXT__INIT);
            if (ca && *ca)
                v->trusted_ca = file_source(t, ca);
            for (uint32_t i = 0; i < tls->subjectAltNames.n; i++)
                add_san(t, v, tls->subjectAltNames.v[i]);
            if (tls->insecureSkipVerify)
                v->trust_chain_verification =
                    ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__CERTIFICATE_VALIDATION_CONTEXT__TRUST_CHAIN_VERIFICATION__ACCEPT_UNTRUSTED;
            c->validation_context_type_case =
                ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__COMMON_TLS_CONTEXT__VALIDATION_CONTEXT_TYPE_VALIDATION_CONTEXT;
            c->validation_context = v;
        }
    }
    pb_utls_t *u = TX_NEW(t, pb_utls_t, ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__UPSTREAM_TLS_CONTEXT__INIT);
    u->common_tls_context = c;
    u->sni = tx_str(t, tls->sni ? tls->sni : (host && host[0] != '*' ? host : ""));
    return tls_socket(t, u);
}

/* ---- policies ---- */

static void apply_lb(tx_t *t, pb_cluster_t *c, const cfg_LoadBalancerSettings *lb)
{
    if (lb == NULL)
        return;
    if (lb->consistentHash) {
        const cfg_ConsistentHashLB *ch = lb->consistentHash;
        if (ch->maglev) {
            c->lb_policy = ENVOY__CONFIG__CLUSTER__V3__CLUSTER__LB_POLICY__MAGLEV;
            if (ch->maglev->tableSize) {
                Envoy__Config__Cluster__V3__Cluster__MaglevLbConfig *m =
                    TX_NEW(t, Envoy__Config__Cluster__V3__Cluster__MaglevLbConfig,
                           ENVOY__CONFIG__CLUSTER__V3__CLUSTER__MAGLEV_LB_CONFIG__INIT);
                m->table_size = tx_u64(t, (uint64_t)ch->maglev->tableSize);
                c->lb_config_case = ENVOY__CONFIG__CLUSTER__V3__CLUSTER__LB_CONFIG_MAGLEV_LB_CONFIG;
                c->maglev_lb_config = m;
            }
            return;
        }
        c->lb_policy = ENVOY__CONFIG__CLUSTER__V3__CLUSTER__LB_POLICY__RING_HASH;
        int64_t min = ch->ringHash && ch->ringHash->minimumRingSize ? ch->ringHash->minimumRingSize
                                                                   : ch->minimumRingSize;
        Envoy__Config__Cluster__V3__Cluster__RingHashLbConfig *r =
            TX_NEW(t, Envoy__Config__Cluster__V3__Cluster__RingHashLbConfig,
                   ENVOY__CONFIG__CLUSTER__V3__CLUSTER__RING_HASH_LB_CONFIG__INIT);
        r->minimum_ring_size = tx_u64(t, min > 0 ? (uint64_t)min : 1024);
        c->lb_config_case = ENVOY__CONFIG__CLUSTER__V3__CLUSTER__LB_CONFIG_RING_HASH_LB_CONFIG;
        c->ring_hash_lb_config = r;
        return;
    }
    if (!CFG_HAS(lb, LoadBalancerSettings, simple))
        return;
    switch (lb->simple) {
    case cfg_LbSimple_LEAST_CONN:
    case cfg_LbSimple_LEAST_REQUEST:
        c->lb_policy = ENVOY__CONFIG__CLUSTER__V3__CLUSTER__LB_POLICY__LEAST_REQUEST;
        break;
    case cfg_LbSimple_RANDOM: c->lb_policy = ENVOY__CONFIG__CLUSTER__V3__CLUSTER__LB_POLICY__RANDOM; break;
    case cfg_LbSimple_PASSTHROUGH:
        c->cluster_discovery_type_case = ENVOY__CONFIG__CLUSTER__V3__CLUSTER__CLUSTER_DISCOVERY_TYPE_TYPE;
        c->type = ENVOY__CONFIG__CLUSTER__V3__CLUSTER__DISCOVERY_TYPE__ORIGINAL_DST;
        c->lb_policy = ENVOY__CONFIG__CLUSTER__V3__CLUSTER__LB_POLICY__CLUSTER_PROVIDED;
        c->eds_cluster_config = NULL;
        break;
    default: c->lb_policy = ENVOY__CONFIG__CLUSTER__V3__CLUSTER__LB_POLICY__ROUND_ROBIN; break;
    }
}

static void apply_pool(tx_t *t, pb_cluster_t *c, const cfg_ConnectionPoolSettings *pool,
                       reg_protocol_t proto)
{
    pb_thr_t *th = TX_NEW(t, pb_thr_t, ENVOY__CONFIG__CLUSTER__V3__CIRCUIT_BREAKERS__THRESHOLDS__INIT);
    th->max_connections = tx_u32(t, MAX_U32);
    th->max_pending_requests = tx_u32(t, MAX_U32);
    th->max_requests = tx_u32(t, MAX_U32);
    th->max_retries = tx_u32(t, MAX_U32);
    th->track_remaining = 1;
    const cfg_ConnectionPoolSettingsTCPSettings *tcp = pool ? pool->tcp : NULL;
    const cfg_ConnectionPoolSettingsHTTPSettings *http = pool ? pool->http : NULL;
    if (tcp && tcp->maxConnections > 0)
        th->max_connections->value = (uint32_t)tcp->maxConnections;
    if (http && http->http1MaxPendingRequests > 0)
        th->max_pending_requests->value = (uint32_t)http->http1MaxPendingRequests;
    if (http && http->http2MaxRequests > 0)
        th->max_requests->value = (uint32_t)http->http2MaxRequests;
    if (http && http->maxRetries > 0) {
        th->max_retries->value = (uint32_t)http->maxRetries;
    } else {
        /* no explicit limit: a retry budget (20 % of the requests in flight,
         * at least 3), so that retries cannot multiply an outage */
        Envoy__Config__Cluster__V3__CircuitBreakers__Thresholds__RetryBudget *rb =
            TX_NEW(t, Envoy__Config__Cluster__V3__CircuitBreakers__Thresholds__RetryBudget,
                   ENVOY__CONFIG__CLUSTER__V3__CIRCUIT_BREAKERS__THRESHOLDS__RETRY_BUDGET__INIT);
        rb->budget_percent = TX_NEW(t, Envoy__Type__V3__Percent, ENVOY__TYPE__V3__PERCENT__INIT);
        rb->budget_percent->value = 20;
        rb->min_retry_concurrency = tx_u32(t, 3);
        th->retry_budget = rb;
    }
    pb_cb_t *cb = TX_NEW(t, pb_cb_t, ENVOY__CONFIG__CLUSTER__V3__CIRCUIT_BREAKERS__INIT);
    TX_PUSH(t, cb->thresholds, cb->n_thresholds, th);
    c->circuit_breakers = cb;
    if (tcp && tcp->connectTimeout > 0)
        c->connect_timeout = tx_duration(t, tcp->connectTimeout);
    if (tcp && tcp->tcpKeepalive) {
        /* SO_KEEPALIVE on upstream connections; unset values are the kernel's */
        const cfg_ConnectionPoolSettingsTCPSettingsTcpKeepalive *ka = tcp->tcpKeepalive;
        Envoy__Config__Core__V3__TcpKeepalive *k =
            TX_NEW(t, Envoy__Config__Core__V3__TcpKeepalive, ENVOY__CONFIG__CORE__V3__TCP_KEEPALIVE__INIT);
        if (ka->probes > 0)
            k->keepalive_probes = tx_u32(t, ka->probes);
        if (ka->time > 0)
            k->keepalive_time = tx_u32(t, (uint32_t)((ka->time + 999999999) / 1000000000));
        if (ka->interval > 0)
            k->keepalive_interval = tx_u32(t, (uint32_t)((ka->interval + 999999999) / 1000000000));
        c->upstream_connection_options = TX_NEW(t, Envoy__Config__Cluster__V3__UpstreamConnectionOptions,
                                                ENVOY__CONFIG__CLUSTER__V3__UPSTREAM_CONNECTION_OPTIONS__INIT);
        c->upstream_connection_options->tcp_keepalive = k;
    }

    /* HTTP options go in the upstream HttpProtocolOptions extension */
    bool h2 = proto == REG_PROTO_HTTP2 || proto == REG_PROTO_GRPC ||
              (http && CFG_HAS(http, ConnectionPoolSettingsHTTPSettings, h2UpgradePolicy) &&
               http->h2UpgradePolicy == cfg_H2UpgradePolicy_UPGRADE && proto == REG_PROTO_HTTP);
    bool client = http && http->useClientProtocol;
    Envoy__Config__Core__V3__HttpProtocolOptions *common = NULL;
    if (http && (http->idleTimeout > 0 || http->maxRequestsPerConnection > 0)) {
        common = TX_NEW(t, Envoy__Config__Core__V3__HttpProtocolOptions,
                        ENVOY__CONFIG__CORE__V3__HTTP_PROTOCOL_OPTIONS__INIT);
        if (http->idleTimeout > 0)
            common->idle_timeout = tx_duration(t, http->idleTimeout);
        if (http->maxRequestsPerConnection > 0)
            common->max_requests_per_connection = tx_u32(t, (uint32_t)http->maxRequestsPerConnection);
    }
    if (!h2 && !client && common == NULL)
        return;
    if (!reg_protocol_is_http(proto) && common == NULL)
        return;
    pb_upopts_t *o = TX_NEW(t, pb_upopts_t, ENVOY__EXTENSIONS__UPSTREAMS__HTTP__V3__HTTP_PROTOCOL_OPTIONS__INIT);
    o->common_http_protocol_options = common;
    if (client) {
        Envoy__Extensions__Upstreams__Http__V3__HttpProtocolOptions__UseDownstreamHttpConfig *u =
            TX_NEW(t, Envoy__Extensions__Upstreams__Http__V3__HttpProtocolOptions__UseDownstreamHttpConfig,
                   ENVOY__EXTENSIONS__UPSTREAMS__HTTP__V3__HTTP_PROTOCOL_OPTIONS__USE_DOWNSTREAM_HTTP_CONFIG__INIT);
        u->http2_protocol_options = TX_NEW(t, Envoy__Config__Core__V3__Http2ProtocolOptions,
                                           ENVOY__CONFIG__CORE__V3__HTTP2_PROTOCOL_OPTIONS__INIT);
        o->upstream_protocol_options_case =
            ENVOY__EXTENSIONS__UPSTREAMS__HTTP__V3__HTTP_PROTOCOL_OPTIONS__UPSTREAM_PROTOCOL_OPTIONS_USE_DOWNSTREAM_PROTOCOL_CONFIG;
        o->use_downstream_protocol_config = u;
    } else {
        Envoy__Extensions__Upstreams__Http__V3__HttpProtocolOptions__ExplicitHttpConfig *e =
            TX_NEW(t, Envoy__Extensions__Upstreams__Http__V3__HttpProtocolOptions__ExplicitHttpConfig,
                   ENVOY__EXTENSIONS__UPSTREAMS__HTTP__V3__HTTP_PROTOCOL_OPTIONS__EXPLICIT_HTTP_CONFIG__INIT);
        if (h2) {
            Envoy__Config__Core__V3__Http2ProtocolOptions *h = TX_NEW(
                t, Envoy__Config__Core__V3__Http2ProtocolOptions, ENVOY__CONFIG__CORE__V3__HTTP2_PROTOCOL_OPTIONS__INIT);
            if (http && http->maxConcurrentStreams > 0)
                h->max_concurrent_streams = tx_u32(t, (uint32_t)http->maxConcurrentStreams);
            e->protocol_config_case =
                ENVOY__EXTENSIONS__UPSTREAMS__HTTP__V3__HTTP_PROTOCOL_OPTIONS__EXPLICIT_HTTP_CONFIG__PROTOCOL_CONFIG_HTTP2_PROTOCOL_OPTIONS;
            e->http2_protocol_options = h;
        } else {
            e->protocol_config_case =
                ENVOY__EXTENSIONS__UPSTREAMS__HTTP__V3__HTTP_PROTOCOL_OPTIONS__EXPLICIT_HTTP_CONFIG__PROTOCOL_CONFIG_HTTP_PROTOCOL_OPTIONS;
            e->http_protocol_options = TX_NEW(t, Envoy__Config__Core__V3__Http1ProtocolOptions,
                                              ENVOY__CONFIG__CORE__V3__HTTP1_PROTOCOL_OPTIONS__INIT);
        }
        o->upstream_protocol_options_case =
            ENVOY__EXTENSIONS__UPSTREAMS__HTTP__V3__HTTP_PROTOCOL_OPTIONS__UPSTREAM_PROTOCOL_OPTIONS_EXPLICIT_HTTP_CONFIG;
        o->explicit_http_config = e;
    }
    Envoy__Config__Cluster__V3__Cluster__TypedExtensionProtocolOptionsEntry *ent =
        TX_NEW(t, Envoy__Config__Cluster__V3__Cluster__TypedExtensionProtocolOptionsEntry,
               ENVOY__CONFIG__CLUSTER__V3__CLUSTER__TYPED_EXTENSION_PROTOCOL_OPTIONS_ENTRY__INIT);
    ent->key = tx_str(t, "envoy.extensions.upstreams.http.v3.HttpProtocolOptions");
    ent->value = tx_any(t, o);
    TX_PUSH(t, c->typed_extension_protocol_options, c->n_typed_extension_protocol_options, ent);
}

void tx_apply_outlier(tx_t *t, pb_cluster_t *c, const cfg_OutlierDetection *od)
{
    if (od == NULL)
        return;
    Envoy__Config__Cluster__V3__OutlierDetection *o =
        TX_NEW(t, Envoy__Config__Cluster__V3__OutlierDetection, ENVOY__CONFIG__CLUSTER__V3__OUTLIER_DETECTION__INIT);
    o->enforcing_success_rate = tx_u32(t, 0);
    if (CFG_HAS(od, OutlierDetection, consecutive5xxErrors)) {
        o->consecutive_5xx = tx_u32(t, od->consecutive5xxErrors);
        o->enforcing_consecutive_5xx = tx_u32(t, od->consecutive5xxErrors ? 100 : 0);
    }
    uint32_t gw = CFG_HAS(od, OutlierDetection, consecutiveGatewayErrors) ? od->consecutiveGatewayErrors
                  : od->consecutiveErrors > 0 ? (uint32_t)od->consecutiveErrors
                                               : 0;
    if (CFG_HAS(od, OutlierDetection, consecutiveGatewayErrors) ||
        CFG_HAS(od, OutlierDetection, consecutiveErrors)) {
        o->consecutive_gateway_failure = tx_u32(t, gw);
        o->enforcing_consecutive_gateway_failure = tx_u32(t, gw ? 100 : 0);
    }
    if (od->interval > 0)
        o->interval = tx_duration(t, od->interval);
    if (od->baseEjectionTime > 0)
        o->base_ejection_time = tx_duration(t, od->baseEjectionTime);
    if (CFG_HAS(od, OutlierDetection, maxEjectionPercent))
        o->max_ejection_percent = tx_u32(t, (uint32_t)od->maxEjectionPercent);
    if (od->splitExternalLocalOriginErrors) {
        o->split_external_local_origin_errors = 1;
        if (CFG_HAS(od, OutlierDetection, consecutiveLocalOriginFailures))
            o->consecutive_local_origin_failure = tx_u32(t, od->consecutiveLocalOriginFailures);
    }
    c->outlier_detection = o;
    /* minHealthPercent is the panic threshold, 0 (never panic) unless set,
     * as Istio writes it: Envoy's own default of 50 % would send traffic
     * back to ejected hosts of small services */
    if (c->common_lb_config == NULL)
        c->common_lb_config = TX_NEW(t, Envoy__Config__Cluster__V3__Cluster__CommonLbConfig,
                                     ENVOY__CONFIG__CLUSTER__V3__CLUSTER__COMMON_LB_CONFIG__INIT);
    Envoy__Type__V3__Percent *p = TX_NEW(t, Envoy__Type__V3__Percent, ENVOY__TYPE__V3__PERCENT__INIT);
    p->value = CFG_HAS(od, OutlierDetection, minHealthPercent) ? od->minHealthPercent : 0;
    c->common_lb_config->healthy_panic_threshold = p;
}

/* ---- endpoints ---- */

static bool endpoint_in_subset(const reg_endpoint_t *e, const cfg_Subset *subset)
{
    return subset == NULL || reg_labels_match_map(&e->labels, &subset->labels);
}

typedef Envoy__Config__Endpoint__V3__LocalityLbEndpoints pb_lle_t;

static Envoy__Config__Core__V3__Locality *locality(tx_t *t, const char *loc)
{
    Envoy__Config__Core__V3__Locality *l = TX_NEW(t, Envoy__Config__Core__V3__Locality,
                                                  ENVOY__CONFIG__CORE__V3__LOCALITY__INIT);
    char *s = tx_str(t, loc);
    char *parts[3] = {s, NULL, NULL};
    for (int i = 1; i < 3 && parts[i - 1]; i++) {
        char *sl = strchr(parts[i - 1], '/');
        if (sl) {
            *sl = 0;
            parts[i] = sl + 1;
        }
    }
    l->region = parts[0];
    l->zone = parts[1] ? parts[1] : tx_str(t, "");
    l->sub_zone = parts[2] ? parts[2] : tx_str(t, "");
    return l;
}

/* The i-th part (0 region, 1 zone, 2 subzone) of "region/zone/subzone" into
 * out ("" when missing). */
static void loc_part(const char *loc, int i, char *out, size_t n)
{
    const char *s = loc ? loc : "";
    for (; i > 0 && s; i--) {
        s = strchr(s, '/');
        if (s)
            s++;
    }
    size_t len = s ? strcspn(s, "/") : 0;
    snprintf(out, n, "%.*s", (int)(len < n ? len : n - 1), s ? s : "");
}

const cfg_LocalityLoadBalancerSetting *tx_failover_priority(const tx_policy_t *pol)
{
    const cfg_LocalityLoadBalancerSetting *l = pol->lb ? pol->lb->localityLbSetting : NULL;
    if (l == NULL || pol->outlier == NULL || l->failoverPriority.n == 0 || l->distribute.n > 0)
        return NULL;
    if (CFG_HAS(l, LocalityLoadBalancerSetting, enabled) && !l->enabled)
        return NULL;
    return l;
}

/* One failoverPriority entry's value for a workload: the topology labels
 * read the locality; topology.istio.io/cluster is the one cluster meshd
 * serves (every endpoint shares the proxy's); any other is a label. */
static const char *fo_value(const char *key, const reg_labels_t *labels, const char *loc, const char *cluster,
                            char *buf, size_t size)
{
    static const char *const parts[3] = {"topology.kubernetes.io/region", "topology.kubernetes.io/zone",
                                         "topology.istio.io/subzone"};
    for (int i = 0; i < 3; i++)
        if (strcmp(key, parts[i]) == 0) {
            loc_part(loc, i, buf, size);
            return buf[0] ? buf : NULL;
        }
    if (strcmp(key, "topology.istio.io/cluster") == 0)
        return cluster;
    return reg_labels_get(labels, key);
}

/* An endpoint's failoverPriority rank for the proxy: 0 when it agrees with
 * the proxy on all N labels, k when only on the first N-k, N when not on
 * the first. An entry "key=value" asks the endpoint for that value instead
 * of the proxy's. */
static uint32_t fo_rank(const tx_t *t, const cfg_LocalityLoadBalancerSetting *l, const reg_endpoint_t *e)
{
    uint32_t n = l->failoverPriority.n, agree = 0;
    const char *cluster = t->px->cluster_id ? t->px->cluster_id : "Kubernetes";
    for (; agree < n; agree++) {
        const char *ent = l->failoverPriority.v[agree];
        const char *eq = strchr(ent, '=');
        char key[320], pb[256], eb[256];
        snprintf(key, sizeof(key), "%.*s", (int)(eq ? (size_t)(eq - ent) : strlen(ent)), ent);
        const char *want = eq ? eq + 1 : fo_value(key, &t->px->labels, t->locality, cluster, pb, sizeof(pb));
        const char *have = fo_value(key, &e->labels, e->locality, cluster, eb, sizeof(eb));
        if (want == NULL || have == NULL || strcmp(want, have) != 0)
            break;
    }
    return n - agree;
}

static uint64_t fnv1a(uint64_t h, const char *p)
{
    for (; *p; p++)
        h = (h ^ (uint8_t)*p) * 0x100000001b3ull;
    return (h ^ 0xff) * 0x100000001b3ull; /* a separator after each string */
}

void tx_failover_labels(const xds_proxy_t *px, const cfg_DestinationRule *dr, char *buf, size_t size)
{
    uint64_t h = 0xcbf29ce484222325ull;
    bool any = false;
    for (uint32_t i = 0; dr && i <= dr->subsets.n; i++) {
        const cfg_TrafficPolicy *tp = i == 0 ? dr->trafficPolicy : dr->subsets.v[i - 1].trafficPolicy;
        for (uint32_t p = 0; tp && p <= tp->portLevelSettings.n; p++) {
            const cfg_LoadBalancerSettings *lb = p == 0 ? tp->loadBalancer : tp->portLevelSettings.v[p - 1].loadBalancer;
            const cfg_LocalityLoadBalancerSetting *l = lb ? lb->localityLbSetting : NULL;
            for (uint32_t j = 0; l && j < l->failoverPriority.n; j++) {
                const char *k = l->failoverPriority.v[j];
                const char *v = strcmp(k, "topology.istio.io/cluster") == 0 ? px->cluster_id
                                                                             : reg_labels_get(&px->labels, k);
                h = fnv1a(fnv1a(h, k), v ? v : "");
                any = true;
            }
        }
    }
    /* a hash keeps the key short whatever the labels; 64 bits make two
     * different sets of values sharing one key out of reach */
    snprintf(buf, size, "%s%016llx", any ? "fo" : "", any ? (unsigned long long)h : 0ull);
    if (!any)
        buf[0] = '\0';
}

/* The endpoints of a cluster, grouped by locality (and failoverPriority
 * rank), each group weighted. */
pb_cla_t *tx_load_assignment(tx_t *t, const char *name, const reg_service_t *s, uint32_t port,
                             const cfg_Subset *subset, bool include_not_ready, const tx_policy_t *pol)
{
    pb_cla_t *cla = TX_NEW(t, pb_cla_t, ENVOY__CONFIG__ENDPOINT__V3__CLUSTER_LOAD_ASSIGNMENT__INIT);
    cla->cluster_name = tx_str(t, name);
    const cfg_LocalityLoadBalancerSetting *fo = pol && t->px ? tx_failover_priority(pol) : NULL;
    const char **group_keys = NULL; /* locality of each group, as written back */
    for (uint32_t i = 0; i < s->nendpoints; i++) {
        const reg_endpoint_t *e = &s->endpoints[i];
        if (e->service_port != port || !endpoint_in_subset(e, subset))
            continue;
        if (!e->ready && !include_not_ready)
            continue;
        /* groups by the locality string as its group reads it back
         * (REGION[/ZONE[/SUBZONE]], empty parts dropped) */
        const char *loc = e->locality ? e->locality : "";
        uint32_t rank = fo ? fo_rank(t, fo, e) : 0;
        pb_lle_t *group = NULL;
        for (size_t g = 0; g < cla->n_endpoints && group == NULL; g++)
            if (strcmp(group_keys[g], loc) == 0 && cla->endpoints[g]->priority == rank)
                group = cla->endpoints[g];
        if (group == NULL) {
            group = TX_NEW(t, pb_lle_t, ENVOY__CONFIG__ENDPOINT__V3__LOCALITY_LB_ENDPOINTS__INIT);
            group->locality = locality(t, loc);
            group->priority = rank;
            group->load_balancing_weight = tx_u32(t, 0);
            const Envoy__Config__Core__V3__Locality *l = group->locality;
            size_t ng = cla->n_endpoints;
            TX_PUSH(t, group_keys, ng,
                    tx_printf(t, "%s%s%s%s%s", l->region, *l->zone ? "/" : "", l->zone,
                              *l->sub_zone ? "/" : "", l->sub_zone));
            TX_PUSH(t, cla->endpoints, cla->n_endpoints, group);
        }
        Envoy__Config__Endpoint__V3__Endpoint *ep = TX_NEW(
            t, Envoy__Config__Endpoint__V3__Endpoint, ENVOY__CONFIG__ENDPOINT__V3__ENDPOINT__INIT);
        ep->address = tx_socket_address(t, e->address, e->port);
        Envoy__Config__Endpoint__V3__LbEndpoint *lb = TX_NEW(
            t, Envoy__Config__Endpoint__V3__LbEndpoint, ENVOY__CONFIG__ENDPOINT__V3__LB_ENDPOINT__INIT);
        lb->host_identifier_case = ENVOY__CONFIG__ENDPOINT__V3__LB_ENDPOINT__HOST_IDENTIFIER_ENDPOINT;
        lb->endpoint = ep;
        lb->health_status = e->ready ? ENVOY__CONFIG__CORE__V3__HEALTH_STATUS__HEALTHY
                                     : ENVOY__CONFIG__CORE__V3__HEALTH_STATUS__UNHEALTHY;
        uint32_t w = e->weight ? e->weight : 1;
        lb->load_balancing_weight = tx_u32(t, w);
        TX_PUSH(t, group->lb_endpoints, group->n_lb_endpoints, lb);
        group->load_balancing_weight->value += w;
    }
    return cla;
}

/* ---- locality load balancing ---- */

const char *tx_proxy_locality(const reg_t *reg, const xds_proxy_t *px)
{
    if (px->locality && px->locality[0])
        return px->locality;
    const reg_workload_t *w = px->pod_name[0] ? reg_workload_by_name(reg, px->namespace, px->pod_name) : NULL;
    return w && w->locality ? w->locality : "";
}


/* Whether a locality pattern covers a group's locality: parts compared in
 * order, "*" matching the rest, a shorter pattern matching as a prefix. */
static bool loc_match(const Envoy__Config__Core__V3__Locality *l, const char *pat)
{
    const char *have[3] = {l->region, l->zone, l->sub_zone};
    for (int i = 0; i < 3; i++) {
        char p[256];
        loc_part(pat, i, p, sizeof(p));
        if (strcmp(p, "*") == 0)
            return true;
        if (p[0] == '\0') /* the pattern ends here */
            return i > 0 || pat[0] != '\0';
        if (strcmp(p, have[i] ? have[i] : "") != 0)
            return false;
    }
    return true;
}

/* Whether the proxy's own locality matches a `from` pattern (a part "*"
 * matching everything from there on). */
static bool loc_from_match(const char *ploc, const char *pat)
{
    char region[256], zone[256], sub[256];
    loc_part(ploc, 0, region, sizeof(region));
    loc_part(ploc, 1, zone, sizeof(zone));
    loc_part(ploc, 2, sub, sizeof(sub));
    Envoy__Config__Core__V3__Locality l = ENVOY__CONFIG__CORE__V3__LOCALITY__INIT;
    l.region = region;
    l.zone = zone;
    l.sub_zone = sub;
    return loc_match(&l, pat ? pat : "");
}

/* `distribute`: each `to` pattern takes the groups it matches (first pattern
 * first) and splits its share among them by their own weights; groups no
 * pattern takes, or with no share, receive nothing and are left out. */
static void apply_distribute(tx_t *t, pb_cla_t *cla, const cfg_LocalityLoadBalancerSettingDistribute *d)
{
    size_t n = cla->n_endpoints;
    uint32_t *share = arena_alloc(t->a, (n + 1) * sizeof(*share));
    bool *taken = arena_alloc(t->a, n + 1);
    memset(share, 0, (n + 1) * sizeof(*share));
    memset(taken, 0, n + 1);
    for (uint32_t k = 0; k < d->to.n; k++) {
        uint64_t total = 0;
        bool *mine = arena_alloc(t->a, n + 1);
        memset(mine, 0, n + 1);
        for (size_t g = 0; g < n; g++) {
            if (taken[g] || !loc_match(cla->endpoints[g]->locality, d->to.v[k].key))
                continue;
            taken[g] = mine[g] = true;
            total += cla->endpoints[g]->load_balancing_weight->value;
        }
        for (size_t g = 0; g < n && total > 0; g++)
            if (mine[g]) /* rounded up, as Istio does */
                share[g] = (uint32_t)(((uint64_t)cla->endpoints[g]->load_balancing_weight->value * d->to.v[k].u32 +
                                       total - 1) / total);
    }
    size_t kept = 0;
    for (size_t g = 0; g < n; g++) {
        if (share[g] == 0)
            continue;
        cla->endpoints[g]->load_balancing_weight->value = share[g];
        cla->endpoints[kept++] = cla->endpoints[g];
    }
    cla->n_endpoints = kept;
}

/* Failover priorities for a proxy in ploc: 0 region, zone and subzone match,
 * 1 region and zone, 2 region, 3 the region `failover` names for the proxy's,
 * 4 any other; then renumbered 0, 1, ... in that order. With
 * failoverPriority, a group's priority holds its label rank on entry: the
 * rank orders first, the locality within it only when `failover` is set. */
static void apply_failover(tx_t *t, pb_cla_t *cla, const char *ploc, const cfg_LocalityLoadBalancerSetting *s)
{
    bool by_labels = s && s->failoverPriority.n > 0;
    char region[256], zone[256], sub[256];
    loc_part(ploc, 0, region, sizeof(region));
    loc_part(ploc, 1, zone, sizeof(zone));
    loc_part(ploc, 2, sub, sizeof(sub));
    const char *to = NULL;
    for (uint32_t i = 0; s && i < s->failover.n && to == NULL; i++)
        if (s->failover.v[i].from && strcmp(s->failover.v[i].from, region) == 0)
            to = s->failover.v[i].to;
    for (size_t g = 0; g < cla->n_endpoints; g++) {
        const Envoy__Config__Core__V3__Locality *l = cla->endpoints[g]->locality;
        uint32_t r = 4;
        if (strcmp(l->region, region) == 0)
            r = strcmp(l->zone, zone) != 0 ? 2 : strcmp(l->sub_zone, sub) != 0 ? 1 : 0;
        else if (to && strcmp(l->region, to) == 0)
            r = 3;
        if (by_labels)
            r = cla->endpoints[g]->priority * 5 + (s->failover.n ? r : 0);
        cla->endpoints[g]->priority = r;
    }
    /* renumbered without gaps: a group's priority becomes the number of
     * distinct smaller ones (groups are few) */
    size_t n = cla->n_endpoints;
    uint32_t *was = arena_alloc(t->a, n * sizeof(*was));
    for (size_t g = 0; g < n; g++)
        was[g] = cla->endpoints[g]->priority;
    for (size_t g = 0; g < n; g++) {
        uint32_t below = 0;
        for (size_t h = 0; h < n; h++) {
            bool first = true; /* each smaller value counted once */
            for (size_t k = 0; k < h && first; k++)
                first = was[k] != was[h];
            below += first && was[h] < was[g];
        }
        cla->endpoints[g]->priority = below;
    }
}

void tx_apply_locality(tx_t *t, pb_cla_t *cla, const cfg_LocalityLoadBalancerSetting *s, bool outlier)
{
    if (cla == NULL || cla->n_endpoints == 0)
        return;
    if (s && CFG_HAS(s, LocalityLoadBalancerSetting, enabled) && !s->enabled)
        return;
    bool by_labels = outlier && s && s->failoverPriority.n > 0 && s->distribute.n == 0;
    if (!by_labels && (t->locality == NULL || t->locality[0] == '\0'))
        return;
    if (s && s->distribute.n) {
        for (uint32_t i = 0; i < s->distribute.n; i++)
            if (loc_from_match(t->locality, s->distribute.v[i].from)) {
                apply_distribute(t, cla, &s->distribute.v[i]);
                break;
            }
        return;
    }
    if (outlier)
        apply_failover(t, cla, t->locality ? t->locality : "", s);
}

/* True when the endpoints of a cluster all run a sidecar (auto mTLS). */
static bool all_sidecars(const reg_service_t *s, uint32_t port, const cfg_Subset *subset)
{
    bool any = false;
    for (uint32_t i = 0; i < s->nendpoints; i++) {
        const reg_endpoint_t *e = &s->endpoints[i];
        if (e->service_port != port || !endpoint_in_subset(e, subset))
            continue;
        if (!e->has_sidecar)
            return false;
        any = true;
    }
    return any;
}

/* ---- clusters ---- */

static void outbound_cluster(tx_t *t, const reg_service_t *s, const reg_port_t *port,
                             const cfg_DestinationRule *dr, const cfg_Subset *subset)
{
    const char *sub = subset ? subset->name : "";
    char name[1024];
    xds_cluster_name(name, sizeof(name), XDS_OUTBOUND, port->port, sub, s->hostname);
    pb_cluster_t *c = TX_NEW(t, pb_cluster_t, ENVOY__CONFIG__CLUSTER__V3__CLUSTER__INIT);
    c->name = tx_str(t, name);
    c->connect_timeout = tx_duration(t, DEFAULT_CONNECT_TIMEOUT_NS);
    c->cluster_discovery_type_case = ENVOY__CONFIG__CLUSTER__V3__CLUSTER__CLUSTER_DISCOVERY_TYPE_TYPE;
    bool eds = false;
    tx_policy_t pol;
    tx_policy_for(dr, subset, port->port, &pol);
    switch (s->resolution) {
    case REG_RES_CLIENT_SIDE_LB:
        c->type = ENVOY__CONFIG__CLUSTER__V3__CLUSTER__DISCOVERY_TYPE__EDS;
        c->eds_cluster_config = TX_NEW(t, Envoy__Config__Cluster__V3__Cluster__EdsClusterConfig,
                                       ENVOY__CONFIG__CLUSTER__V3__CLUSTER__EDS_CLUSTER_CONFIG__INIT);
        c->eds_cluster_config->eds_config = tx_ads(t);
        c->eds_cluster_config->eds_config->initial_fetch_timeout = tx_duration(t, 0);
        c->eds_cluster_config->service_name = tx_str(t, name);
        eds = true;
        break;
    case REG_RES_DNS:
    case REG_RES_DNS_ROUND_ROBIN:
        c->type = s->resolution == REG_RES_DNS ? ENVOY__CONFIG__CLUSTER__V3__CLUSTER__DISCOVERY_TYPE__STRICT_DNS
                                               : ENVOY__CONFIG__CLUSTER__V3__CLUSTER__DISCOVERY_TYPE__LOGICAL_DNS;
        c->dns_lookup_family = ENVOY__CONFIG__CLUSTER__V3__CLUSTER__DNS_LOOKUP_FAMILY__V4_ONLY;
        c->load_assignment = tx_load_assignment(t, name, s, port->port, subset, false, &pol);
        if (s->external_name && c->load_assignment->n_endpoints == 0) {
            pb_lle_t *g = TX_NEW(t, pb_lle_t, ENVOY__CONFIG__ENDPOINT__V3__LOCALITY_LB_ENDPOINTS__INIT);
            g->locality = locality(t, "");
            g->load_balancing_weight = tx_u32(t, 1);
            Envoy__Config__Endpoint__V3__Endpoint *ep = TX_NEW(
                t, Envoy__Config__Endpoint__V3__Endpoint, ENVOY__CONFIG__ENDPOINT__V3__ENDPOINT__INIT);
            ep->address = tx_socket_address(t, s->external_name, port->port);
            Envoy__Config__Endpoint__V3__LbEndpoint *lb = TX_NEW(
                t, Envoy__Config__Endpoint__V3__LbEndpoint, ENVOY__CONFIG__ENDPOINT__V3__LB_ENDPOINT__INIT);
            lb->host_identifier_case = ENVOY__CONFIG__ENDPOINT__V3__LB_ENDPOINT__HOST_IDENTIFIER_ENDPOINT;
            lb->endpoint = ep;
            lb->load_balancing_weight = tx_u32(t, 1);
            TX_PUSH(t, g->lb_endpoints, g->n_lb_endpoints, lb);
            TX_PUSH(t, c->load_assignment->endpoints, c->load_assignment->n_endpoints, g);
        }
        break;
    case REG_RES_PASSTHROUGH:
        c->type = ENVOY__CONFIG__CLUSTER__V3__CLUSTER__DISCOVERY_TYPE__ORIGINAL_DST;
        c->lb_policy = ENVOY__CONFIG__CLUSTER__V3__CLUSTER__LB_POLICY__CLUSTER_PROVIDED;
        break;
    }
    if (s->resolution != REG_RES_PASSTHROUGH)
        apply_lb(t, c, pol.lb);
    if (c->type != ENVOY__CONFIG__CLUSTER__V3__CLUSTER__DISCOVERY_TYPE__EDS)
        eds = false;
    apply_pool(t, c, pol.pool, port->protocol);
    tx_apply_outlier(t, c, pol.outlier);

    bool h2 = port->protocol == REG_PROTO_HTTP2 || port->protocol == REG_PROTO_GRPC;
    char sni[1024];
    xds_sni(sni, sizeof(sni), port->port, sub, s->hostname);
    if (pol.tls && CFG_HAS(pol.tls, ClientTLSSettings, mode)) {
        switch (pol.tls->mode) {
        case cfg_TLSmode_ISTIO_MUTUAL:
            c->transport_socket = tx_istio_mutual_upstream(t, pol.tls->sni ? pol.tls->sni : sni, s, h2);
            break;
        case cfg_TLSmode_SIMPLE:
        case cfg_TLSmode_MUTUAL: c->transport_socket = dr_tls(t, pol.tls, s->hostname); break;
        default: break; /* DISABLE: plaintext */
        }
    } else if (!s->mesh_external && all_sidecars(s, port->port, subset)) {
        /* auto mTLS: every endpoint runs a sidecar and nothing says otherwise */
        c->transport_socket = tx_istio_mutual_upstream(t, sni, s, h2);
    }
    const cfg_LocalityLoadBalancerSetting *lls = pol.lb ? pol.lb->localityLbSetting : NULL;
    if (lls && lls->distribute.n && !(CFG_HAS(lls, LocalityLoadBalancerSetting, enabled) && !lls->enabled)) {
        /* locality weights in EDS count only with the locality-weighted balancer */
        if (c->common_lb_config == NULL)
            c->common_lb_config = TX_NEW(t, Envoy__Config__Cluster__V3__Cluster__CommonLbConfig,
                                         ENVOY__CONFIG__CLUSTER__V3__CLUSTER__COMMON_LB_CONFIG__INIT);
        c->common_lb_config->locality_config_specifier_case =
            ENVOY__CONFIG__CLUSTER__V3__CLUSTER__COMMON_LB_CONFIG__LOCALITY_CONFIG_SPECIFIER_LOCALITY_WEIGHTED_LB_CONFIG;
        c->common_lb_config->locality_weighted_lb_config =
            TX_NEW(t, Envoy__Config__Cluster__V3__Cluster__CommonLbConfig__LocalityWeightedLbConfig,
                   ENVOY__CONFIG__CLUSTER__V3__CLUSTER__COMMON_LB_CONFIG__LOCALITY_WEIGHTED_LB_CONFIG__INIT);
    }
    if (c->load_assignment)
        tx_apply_locality(t, c->load_assignment, lls, pol.outlier != NULL);
    tx_emit(t, XDS_CLUSTER, name, c);
    if (eds) {
        pb_cla_t *cla = tx_load_assignment(t, name, s, port->port, subset, false, &pol);
        tx_apply_locality(t, cla, lls, pol.outlier != NULL);
        tx_emit(t, XDS_ENDPOINT, name, cla);
    }
}

/* Inbound connections leave from 127.0.0.6 (Istio's InboundPassthroughBindIpv4):
 * the capture rules return traffic from that source on lo, so a sidecar
 * reaching its own pod IP is not redirected back to itself. */
static void inbound_bind(tx_t *t, pb_cluster_t *c)
{
    c->upstream_bind_config =
        TX_NEW(t, Envoy__Config__Core__V3__BindConfig, ENVOY__CONFIG__CORE__V3__BIND_CONFIG__INIT);
    c->upstream_bind_config->source_address = tx_socket_address(t, "127.0.0.6", 0)->socket_address;
}

static void static_clusters(tx_t *t)
{
    pb_cluster_t *bh = TX_NEW(t, pb_cluster_t, ENVOY__CONFIG__CLUSTER__V3__CLUSTER__INIT);
    bh->name = tx_str(t, XDS_BLACKHOLE_CLUSTER);
    bh->connect_timeout = tx_duration(t, DEFAULT_CONNECT_TIMEOUT_NS);
    bh->cluster_discovery_type_case = ENVOY__CONFIG__CLUSTER__V3__CLUSTER__CLUSTER_DISCOVERY_TYPE_TYPE;
    bh->type = ENVOY__CONFIG__CLUSTER__V3__CLUSTER__DISCOVERY_TYPE__STATIC;
    tx_emit(t, XDS_CLUSTER, XDS_BLACKHOLE_CLUSTER, bh);
    const char *pass[2] = {XDS_PASSTHROUGH_CLUSTER, XDS_INBOUND_PASSTHROUGH_CLUSTER};
    for (int i = 0; i < (t->px->type == XDS_SIDECAR ? 2 : 1); i++) {
        pb_cluster_t *p = TX_NEW(t, pb_cluster_t, ENVOY__CONFIG__CLUSTER__V3__CLUSTER__INIT);
        p->name = tx_str(t, pass[i]);
        p->connect_timeout = tx_duration(t, DEFAULT_CONNECT_TIMEOUT_NS);
        p->cluster_discovery_type_case = ENVOY__CONFIG__CLUSTER__V3__CLUSTER__CLUSTER_DISCOVERY_TYPE_TYPE;
        p->type = ENVOY__CONFIG__CLUSTER__V3__CLUSTER__DISCOVERY_TYPE__ORIGINAL_DST;
        p->lb_policy = ENVOY__CONFIG__CLUSTER__V3__CLUSTER__LB_POLICY__CLUSTER_PROVIDED;
        apply_pool(t, p, NULL, REG_PROTO_TCP);
        if (i == 1)
            inbound_bind(t, p);
        tx_emit(t, XDS_CLUSTER, pass[i], p);
    }
}

typedef Google__Protobuf__Struct pb_struct_t;
typedef Google__Protobuf__Value pb_value_t;

static pb_value_t *str_value(tx_t *t, const char *s)
{
    pb_value_t *v = TX_NEW(t, pb_value_t, GOOGLE__PROTOBUF__VALUE__INIT);
    v->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE;
    v->string_value = tx_str(t, s);
    return v;
}

static void struct_put(tx_t *t, pb_struct_t *s, const char *key, pb_value_t *v)
{
    Google__Protobuf__Struct__FieldsEntry *e =
        TX_NEW(t, Google__Protobuf__Struct__FieldsEntry, GOOGLE__PROTOBUF__STRUCT__FIELDS_ENTRY__INIT);
    e->key = tx_str(t, key);
    e->value = v;
    TX_PUSH(t, s->fields, s->n_fields, e);
}

/* Istio's metadata on an inbound cluster: the services the workload port
 * serves, {"istio": {"services": [{"host", "name", "namespace"}]}}, from
 * which the destination_service labels of the metrics come. */
static void inbound_services(tx_t *t, pb_cluster_t *c, const reg_target_t *targets, uint32_t n, uint32_t port)
{
    Google__Protobuf__ListValue *list = TX_NEW(t, Google__Protobuf__ListValue, GOOGLE__PROTOBUF__LIST_VALUE__INIT);
    for (uint32_t i = 0; i < n; i++) {
        if (targets[i].target_port != port || targets[i].port->protocol == REG_PROTO_UDP)
            continue;
        const reg_service_t *s = targets[i].service;
        bool seen = false;
        for (uint32_t k = 0; k < i && !seen; k++)
            seen = targets[k].target_port == port && targets[k].service == s;
        if (seen)
            continue;
        pb_struct_t *svc = TX_NEW(t, pb_struct_t, GOOGLE__PROTOBUF__STRUCT__INIT);
        struct_put(t, svc, "host", str_value(t, s->hostname));
        struct_put(t, svc, "name", str_value(t, s->name));
        struct_put(t, svc, "namespace", str_value(t, s->namespace));
        pb_value_t *v = TX_NEW(t, pb_value_t, GOOGLE__PROTOBUF__VALUE__INIT);
        v->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRUCT_VALUE;
        v->struct_value = svc;
        TX_PUSH(t, list->values, list->n_values, v);
    }
    if (list->n_values == 0)
        return;
    pb_value_t *lv = TX_NEW(t, pb_value_t, GOOGLE__PROTOBUF__VALUE__INIT);
    lv->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_LIST_VALUE;
    lv->list_value = list;
    pb_struct_t *istio = TX_NEW(t, pb_struct_t, GOOGLE__PROTOBUF__STRUCT__INIT);
    struct_put(t, istio, "services", lv);
    Envoy__Config__Core__V3__Metadata__FilterMetadataEntry *fe =
        TX_NEW(t, Envoy__Config__Core__V3__Metadata__FilterMetadataEntry,
               ENVOY__CONFIG__CORE__V3__METADATA__FILTER_METADATA_ENTRY__INIT);
    fe->key = tx_str(t, "istio");
    fe->value = istio;
    c->metadata = TX_NEW(t, Envoy__Config__Core__V3__Metadata, ENVOY__CONFIG__CORE__V3__METADATA__INIT);
    TX_PUSH(t, c->metadata->filter_metadata, c->metadata->n_filter_metadata, fe);
}

static void inbound_clusters(tx_t *t)
{
    reg_target_t targets[256];
    uint32_t n = reg_targets(t->reg, t->px->namespace, &t->px->labels, t->px->ip, targets, 256);
    if (n > 256)
        n = 256;
    for (uint32_t i = 0; i < n; i++) {
        if (targets[i].port->protocol == REG_PROTO_UDP)
            continue;
        char name[64];
        xds_cluster_name(name, sizeof(name), XDS_INBOUND, targets[i].target_port, "", "");
        pb_cluster_t *c = TX_NEW(t, pb_cluster_t, ENVOY__CONFIG__CLUSTER__V3__CLUSTER__INIT);
        c->name = tx_str(t, name);
        c->connect_timeout = tx_duration(t, DEFAULT_CONNECT_TIMEOUT_NS);
        c->cluster_discovery_type_case = ENVOY__CONFIG__CLUSTER__V3__CLUSTER__CLUSTER_DISCOVERY_TYPE_TYPE;
        c->type = ENVOY__CONFIG__CLUSTER__V3__CLUSTER__DISCOVERY_TYPE__ORIGINAL_DST;
        c->lb_policy = ENVOY__CONFIG__CLUSTER__V3__CLUSTER__LB_POLICY__CLUSTER_PROVIDED;
        apply_pool(t, c, NULL, targets[i].port->protocol);
        inbound_bind(t, c);
        inbound_services(t, c, targets, n, targets[i].target_port);
        tx_emit(t, XDS_CLUSTER, name, c);
    }
}

void tx_build_clusters(tx_t *t)
{
    if (t->part != TX_INBOUND)
        static_clusters(t);
    for (size_t i = 0; t->part != TX_INBOUND && i < t->nsvcs; i++) {
        const reg_service_t *s = t->svcs[i];
        tx_scratch_begin(t); /* shared part: a service's messages go once emitted */
        const cfg_object_t *dro = NULL;
        const cfg_DestinationRule *dr = tx_dr_for(t, s->hostname, &dro);
        if (dr == NULL)
            dro = NULL;
        if (tx_shared_replay(t, s, dro)) { /* another namespace built the same */
            tx_scratch_end(t);
            continue;
        }
        tx_rec_t rec;
        if (t->shared)
            tx_record_begin(t, &rec);
        for (uint32_t p = 0; p < s->nports; p++) {
            const reg_port_t *port = &s->ports[p];
            if (port->protocol == REG_PROTO_UDP)
                continue;
            outbound_cluster(t, s, port, dr, NULL);
            for (uint32_t k = 0; dr && k < dr->subsets.n; k++)
                outbound_cluster(t, s, port, dr, &dr->subsets.v[k]);
        }
        tx_shared_record(t, s, dro);
        tx_scratch_end(t);
    }
    if (t->px->type == XDS_SIDECAR && t->part != TX_OUTBOUND)
        inbound_clusters(t);
}
