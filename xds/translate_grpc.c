/*
 * Proxyless gRPC clients (node metadata GENERATOR=grpc): the resources gRPC's
 * own xDS client accepts, in place of a sidecar's socket listeners.
 *
 * A client dialing xds:///HOST:PORT asks for the Listener named "HOST:PORT".
 * Per visible service port it gets:
 *  - API listeners named "FQDN:PORT" and, for Kubernetes services, the short
 *    forms "NAME.NS.svc:PORT", "NAME.NS:PORT" and (same namespace) "NAME:PORT";
 *    each carries an HttpConnectionManager with RDS "FQDN:PORT" and the HTTP
 *    filters fault, router (router last);
 *  - the RouteConfiguration "FQDN:PORT": one virtual host whose domains cover
 *    every form above, routes from the VirtualService (header matches,
 *    weighted clusters, fault injection, retries, timeouts, hash policy) or
 *    the default route, minus what gRPC rejects (redirects, direct
 *    responses, per-route configs of filters it lacks);
 *  - EDS clusters outbound|PORT|SUBSET|FQDN with ROUND_ROBIN or RING_HASH,
 *    circuit breaking, outlier detection and, for mTLS, certificate-provider
 *    TLS (instance "default", certificates "default" and "ROOTCA");
 *  - ClusterLoadAssignments whose every locality has a locality and weight,
 *    IP endpoints only, each address once.
 */
#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

#include "translate_internal.h"

#define GRPC_FAULT_FILTER "envoy.filters.http.fault"
#define GRPC_ROUTER_FILTER "envoy.filters.http.router"
#define GRPC_RING_MAX 8388608u /* gRPC's ceiling on ring sizes */
#define GRPC_CERT_PROVIDER "default"

typedef Envoy__Extensions__Filters__Network__HttpConnectionManager__V3__HttpConnectionManager pb_hcm_t;
typedef Envoy__Extensions__TransportSockets__Tls__V3__CertificateProviderPluginInstance pb_cpi_t;
typedef Envoy__Config__Endpoint__V3__LocalityLbEndpoints pb_lle_t;

/* ---- listeners ---- */

static pb_listener_t *api_listener(tx_t *t, const char *name, const char *route_name,
                                   const reg_service_t *s, uint32_t port)
{
    pb_hcm_t *h = TX_NEW(t, pb_hcm_t,
                         ENVOY__EXTENSIONS__FILTERS__NETWORK__HTTP_CONNECTION_MANAGER__V3__HTTP_CONNECTION_MANAGER__INIT);
    h->stat_prefix = tx_str(t, name);
    Envoy__Extensions__Filters__Network__HttpConnectionManager__V3__Rds *rds =
        TX_NEW(t, Envoy__Extensions__Filters__Network__HttpConnectionManager__V3__Rds,
               ENVOY__EXTENSIONS__FILTERS__NETWORK__HTTP_CONNECTION_MANAGER__V3__RDS__INIT);
    rds->config_source = tx_ads(t);
    rds->route_config_name = tx_str(t, route_name);
    h->route_specifier_case =
        ENVOY__EXTENSIONS__FILTERS__NETWORK__HTTP_CONNECTION_MANAGER__V3__HTTP_CONNECTION_MANAGER__ROUTE_SPECIFIER_RDS;
    h->rds = rds;
    Envoy__Extensions__Filters__Http__Fault__V3__HTTPFault fault =
        ENVOY__EXTENSIONS__FILTERS__HTTP__FAULT__V3__HTTPFAULT__INIT;
    TX_PUSH(t, h->http_filters, h->n_http_filters, tx_http_filter(t, GRPC_FAULT_FILTER, &fault));
    Envoy__Extensions__Filters__Http__Router__V3__Router router =
        ENVOY__EXTENSIONS__FILTERS__HTTP__ROUTER__V3__ROUTER__INIT;
    TX_PUSH(t, h->http_filters, h->n_http_filters, tx_http_filter(t, GRPC_ROUTER_FILTER, &router));

    pb_listener_t *l = TX_NEW(t, pb_listener_t, ENVOY__CONFIG__LISTENER__V3__LISTENER__INIT);
    l->name = tx_str(t, name);
    const char *addr = s->address && strchr(s->address, '/') == NULL ? s->address : "0.0.0.0";
    l->address = tx_socket_address(t, addr, port);
    l->api_listener = TX_NEW(t, Envoy__Config__Listener__V3__ApiListener,
                             ENVOY__CONFIG__LISTENER__V3__API_LISTENER__INIT);
    l->api_listener->api_listener = tx_any(t, h);
    return l;
}

/* ---- routes ---- */

/* Drops what gRPC's xDS client rejects: actions other than route, and
 * per-route configs of filters that are not in its filter chain. */
static void grpc_sanitize_routes(tx_t *t, pb_vhost_t *vh, const char *host)
{
    size_t k = 0;
    for (size_t i = 0; i < vh->n_routes; i++) {
        pb_route_t *r = vh->routes[i];
        if (r->action_case != ENVOY__CONFIG__ROUTE__V3__ROUTE__ACTION_ROUTE) {
            tx_warn(t, "%s: route \"%s\": redirects and direct responses are not supported by "
                       "proxyless gRPC clients; route skipped",
                    host, r->name ? r->name : "");
            continue;
        }
        size_t f = 0;
        for (size_t j = 0; j < r->n_typed_per_filter_config; j++)
            if (strcmp(r->typed_per_filter_config[j]->key, GRPC_FAULT_FILTER) == 0)
                r->typed_per_filter_config[f++] = r->typed_per_filter_config[j];
        r->n_typed_per_filter_config = f;
        vh->routes[k++] = r;
    }
    vh->n_routes = k;
}

static pb_rc_t *route_config(tx_t *t, const reg_service_t *s, uint32_t port, const char *name)
{
    pb_rc_t *rc = TX_NEW(t, pb_rc_t, ENVOY__CONFIG__ROUTE__V3__ROUTE_CONFIGURATION__INIT);
    rc->name = tx_str(t, name);
    pb_vhost_t *vh = TX_NEW(t, pb_vhost_t, ENVOY__CONFIG__ROUTE__V3__VIRTUAL_HOST__INIT);
    vh->name = tx_str(t, name);
    tx_service_domains(t, vh, s, port);
    const char *op = tx_printf(t, "%s/*", name);
    const cfg_object_t *vs = tx_vs_for_host(t, s->hostname);
    if (vs)
        tx_vs_mesh_routes(t, vs, port, op, &vh->routes, &vh->n_routes);
    if (vh->n_routes == 0)
        TX_PUSH(t, vh->routes, vh->n_routes, tx_service_default_route(t, s, port, op));
    grpc_sanitize_routes(t, vh, name);
    TX_PUSH(t, rc->virtual_hosts, rc->n_virtual_hosts, vh);
    return rc;
}

/* ---- clusters ---- */

static pb_cpi_t *cert_provider(tx_t *t, const char *cert)
{
    pb_cpi_t *p = TX_NEW(t, pb_cpi_t,
                         ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__CERTIFICATE_PROVIDER_PLUGIN_INSTANCE__INIT);
    p->instance_name = tx_str(t, GRPC_CERT_PROVIDER);
    p->certificate_name = tx_str(t, cert);
    return p;
}

/* ISTIO_MUTUAL for gRPC: certificates from the client's certificate provider
 * (gRPC has no SDS), peers checked against the endpoints' SPIFFE IDs. gRPC
 * reads the SANs from match_subject_alt_names (deprecated in Envoy, which
 * reads the typed list), so that is the field filled here. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
static pb_tsock_t *grpc_mtls(tx_t *t, const reg_service_t *s, const char *sni)
{
    Envoy__Extensions__TransportSockets__Tls__V3__CertificateValidationContext *v =
        TX_NEW(t, Envoy__Extensions__TransportSockets__Tls__V3__CertificateValidationContext,
               ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__CERTIFICATE_VALIDATION_CONTEXT__INIT);
    v->ca_certificate_provider_instance = cert_provider(t, XDS_SDS_ROOTCA);
    for (uint32_t i = 0; i < s->nendpoints; i++) {
        const reg_endpoint_t *e = &s->endpoints[i];
        if (e->service_account == NULL || !*e->service_account)
            continue;
        char *id = tx_printf(t, "spiffe://%s/ns/%s/sa/%s", t->trust_domain, e->namespace,
                             e->service_account);
        bool dup = false;
        for (size_t j = 0; j < v->n_match_subject_alt_names && !dup; j++)
            dup = strcmp(v->match_subject_alt_names[j]->exact, id) == 0;
        if (!dup)
            TX_PUSH(t, v->match_subject_alt_names, v->n_match_subject_alt_names,
                    tx_smatch_exact(t, id));
    }
    Envoy__Extensions__TransportSockets__Tls__V3__CommonTlsContext *c =
        TX_NEW(t, Envoy__Extensions__TransportSockets__Tls__V3__CommonTlsContext,
               ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__COMMON_TLS_CONTEXT__INIT);
    c->tls_certificate_provider_instance = cert_provider(t, XDS_SDS_DEFAULT);
    c->validation_context_type_case =
        ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__COMMON_TLS_CONTEXT__VALIDATION_CONTEXT_TYPE_VALIDATION_CONTEXT;
    c->validation_context = v;
    Envoy__Extensions__TransportSockets__Tls__V3__UpstreamTlsContext *u =
        TX_NEW(t, Envoy__Extensions__TransportSockets__Tls__V3__UpstreamTlsContext,
               ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__UPSTREAM_TLS_CONTEXT__INIT);
    u->common_tls_context = c;
    u->sni = tx_str(t, sni);
    pb_tsock_t *ts = TX_NEW(t, pb_tsock_t, ENVOY__CONFIG__CORE__V3__TRANSPORT_SOCKET__INIT);
    ts->name = tx_str(t, "envoy.transport_sockets.tls");
    ts->config_type_case = ENVOY__CONFIG__CORE__V3__TRANSPORT_SOCKET__CONFIG_TYPE_TYPED_CONFIG;
    ts->typed_config = tx_any(t, u);
    return ts;
}
#pragma GCC diagnostic pop

static bool endpoints_all_sidecars(const reg_service_t *s, uint32_t port, const cfg_Subset *subset)
{
    bool any = false;
    for (uint32_t i = 0; i < s->nendpoints; i++) {
        const reg_endpoint_t *e = &s->endpoints[i];
        if (e->service_port != port || (subset && !reg_labels_match_map(&e->labels, &subset->labels)))
            continue;
        if (!e->has_sidecar)
            return false;
        any = true;
    }
    return any;
}

/* gRPC load balancing: RING_HASH for consistentHash (maglev included),
 * ROUND_ROBIN for everything else. */
static void grpc_lb(tx_t *t, pb_cluster_t *c, const cfg_LoadBalancerSettings *lb, const char *name)
{
    c->lb_policy = ENVOY__CONFIG__CLUSTER__V3__CLUSTER__LB_POLICY__ROUND_ROBIN;
    if (lb == NULL)
        return;
    if (lb->consistentHash) {
        const cfg_ConsistentHashLB *ch = lb->consistentHash;
        int64_t min = ch->ringHash && ch->ringHash->minimumRingSize ? ch->ringHash->minimumRingSize
                                                                   : ch->minimumRingSize;
        if (ch->maglev)
            min = ch->maglev->tableSize;
        uint64_t size = min > 0 ? (uint64_t)min : 1024;
        if (size > GRPC_RING_MAX)
            size = GRPC_RING_MAX;
        Envoy__Config__Cluster__V3__Cluster__RingHashLbConfig *r =
            TX_NEW(t, Envoy__Config__Cluster__V3__Cluster__RingHashLbConfig,
                   ENVOY__CONFIG__CLUSTER__V3__CLUSTER__RING_HASH_LB_CONFIG__INIT);
        r->minimum_ring_size = tx_u64(t, size);
        c->lb_policy = ENVOY__CONFIG__CLUSTER__V3__CLUSTER__LB_POLICY__RING_HASH;
        c->lb_config_case = ENVOY__CONFIG__CLUSTER__V3__CLUSTER__LB_CONFIG_RING_HASH_LB_CONFIG;
        c->ring_hash_lb_config = r;
        return;
    }
    if (CFG_HAS(lb, LoadBalancerSettings, simple) && lb->simple != cfg_LbSimple_ROUND_ROBIN &&
        lb->simple != cfg_LbSimple_UNSPECIFIED)
        tx_warn(t, "cluster %s: proxyless gRPC clients balance ROUND_ROBIN; the DestinationRule's "
                   "loadBalancer.simple is not applied",
                name);
}

/* Keeps what gRPC accepts in an assignment: IP endpoints, each address:port
 * once; localities left empty are dropped, weights recomputed. */
static void grpc_clean_cla(pb_cla_t *cla)
{
    size_t ng = 0;
    for (size_t g = 0; g < cla->n_endpoints; g++) {
        pb_lle_t *grp = cla->endpoints[g];
        size_t k = 0;
        uint32_t w = 0;
        for (size_t i = 0; i < grp->n_lb_endpoints; i++) {
            Envoy__Config__Endpoint__V3__LbEndpoint *lb = grp->lb_endpoints[i];
            const Envoy__Config__Core__V3__SocketAddress *sa = lb->endpoint->address->socket_address;
            unsigned char buf[16];
            if (inet_pton(AF_INET, sa->address, buf) != 1 && inet_pton(AF_INET6, sa->address, buf) != 1)
                continue;
            bool dup = false;
            for (size_t h = 0; h <= g && !dup; h++) {
                const pb_lle_t *o = h < g ? cla->endpoints[h] : grp;
                size_t lim = h < g ? o->n_lb_endpoints : k;
                for (size_t j = 0; j < lim && !dup; j++) {
                    const Envoy__Config__Core__V3__SocketAddress *x =
                        o->lb_endpoints[j]->endpoint->address->socket_address;
                    dup = x->port_value == sa->port_value && strcmp(x->address, sa->address) == 0;
                }
            }
            if (dup)
                continue;
            w += lb->load_balancing_weight ? lb->load_balancing_weight->value : 1;
            grp->lb_endpoints[k++] = lb;
        }
        grp->n_lb_endpoints = k;
        if (k == 0)
            continue;
        grp->load_balancing_weight->value = w;
        cla->endpoints[ng++] = grp;
    }
    cla->n_endpoints = ng;
}

static void grpc_cluster(tx_t *t, const reg_service_t *s, const reg_port_t *port,
                         const cfg_DestinationRule *dr, const cfg_Subset *subset)
{
    const char *sub = subset ? subset->name : "";
    char name[1024];
    xds_cluster_name(name, sizeof(name), XDS_OUTBOUND, port->port, sub, s->hostname);
    pb_cluster_t *c = TX_NEW(t, pb_cluster_t, ENVOY__CONFIG__CLUSTER__V3__CLUSTER__INIT);
    c->name = tx_str(t, name);
    c->cluster_discovery_type_case = ENVOY__CONFIG__CLUSTER__V3__CLUSTER__CLUSTER_DISCOVERY_TYPE_TYPE;
    c->type = ENVOY__CONFIG__CLUSTER__V3__CLUSTER__DISCOVERY_TYPE__EDS;
    c->eds_cluster_config = TX_NEW(t, Envoy__Config__Cluster__V3__Cluster__EdsClusterConfig,
                                   ENVOY__CONFIG__CLUSTER__V3__CLUSTER__EDS_CLUSTER_CONFIG__INIT);
    c->eds_cluster_config->eds_config = tx_ads(t);
    c->eds_cluster_config->service_name = tx_str(t, name);

    tx_policy_t pol;
    tx_policy_for(dr, subset, port->port, &pol);
    grpc_lb(t, c, pol.lb, name);
    const cfg_ConnectionPoolSettingsHTTPSettings *http = pol.pool ? pol.pool->http : NULL;
    if (http && http->http2MaxRequests > 0) {
        Envoy__Config__Cluster__V3__CircuitBreakers__Thresholds *th =
            TX_NEW(t, Envoy__Config__Cluster__V3__CircuitBreakers__Thresholds,
                   ENVOY__CONFIG__CLUSTER__V3__CIRCUIT_BREAKERS__THRESHOLDS__INIT);
        th->max_requests = tx_u32(t, (uint32_t)http->http2MaxRequests);
        c->circuit_breakers = TX_NEW(t, Envoy__Config__Cluster__V3__CircuitBreakers,
                                     ENVOY__CONFIG__CLUSTER__V3__CIRCUIT_BREAKERS__INIT);
        TX_PUSH(t, c->circuit_breakers->thresholds, c->circuit_breakers->n_thresholds, th);
    }
    tx_apply_outlier(t, c, pol.outlier);

    char sni[1024];
    xds_sni(sni, sizeof(sni), port->port, sub, s->hostname);
    if (pol.tls && CFG_HAS(pol.tls, ClientTLSSettings, mode)) {
        if (pol.tls->mode == cfg_TLSmode_ISTIO_MUTUAL)
            c->transport_socket = grpc_mtls(t, s, pol.tls->sni ? pol.tls->sni : sni);
        else if (pol.tls->mode == cfg_TLSmode_SIMPLE || pol.tls->mode == cfg_TLSmode_MUTUAL)
            tx_warn(t, "cluster %s: trafficPolicy.tls.mode SIMPLE/MUTUAL is not supported for "
                       "proxyless gRPC clients; the cluster is plaintext",
                    name);
    } else if (!s->mesh_external && endpoints_all_sidecars(s, port->port, subset)) {
        c->transport_socket = grpc_mtls(t, s, sni);
    }
    tx_emit(t, XDS_CLUSTER, name, c);
    pb_cla_t *cla = tx_load_assignment(t, name, s, port->port, subset, false, &pol);
    tx_apply_locality(t, cla, pol.lb ? pol.lb->localityLbSetting : NULL, pol.outlier != NULL);
    grpc_clean_cla(cla);
    tx_emit(t, XDS_ENDPOINT, name, cla);
}

/* ---- per service ---- */

static void grpc_service(tx_t *t, const reg_service_t *s)
{
    const cfg_DestinationRule *dr = tx_dr_for(t, s->hostname, NULL);
    for (uint32_t p = 0; p < s->nports; p++) {
        const reg_port_t *port = &s->ports[p];
        if (port->protocol == REG_PROTO_UDP)
            continue;
        grpc_cluster(t, s, port, dr, NULL);
        for (uint32_t k = 0; dr && k < dr->subsets.n; k++)
            grpc_cluster(t, s, port, dr, &dr->subsets.v[k]);

        const char *key = tx_printf(t, "%s:%u", s->hostname, port->port);
        tx_emit(t, XDS_ROUTE, key, route_config(t, s, port->port, key));
        tx_emit(t, XDS_LISTENER, key, api_listener(t, key, key, s, port->port));
        if (s->source != REG_SRC_KUBERNETES)
            continue;
        const char *alias[3] = {
            tx_printf(t, "%s.%s.svc:%u", s->name, s->namespace, port->port),
            tx_printf(t, "%s.%s:%u", s->name, s->namespace, port->port),
            strcmp(s->namespace, t->px->namespace) == 0 ? tx_printf(t, "%s:%u", s->name, port->port)
                                                         : NULL,
        };
        for (int i = 0; i < 3; i++)
            if (alias[i])
                tx_emit(t, XDS_LISTENER, alias[i], api_listener(t, alias[i], key, s, port->port));
    }
}

void tx_build_grpc(tx_t *t)
{
    for (size_t i = 0; i < t->nsvcs; i++) {
        const reg_service_t *s = t->svcs[i];
        if (s->resolution != REG_RES_CLIENT_SIDE_LB)
            continue; /* gRPC resolves only EDS (and single-host DNS) clusters */
        if (tx_service(t, s->hostname) != s)
            continue; /* another namespace's service of that hostname wins */
        grpc_service(t, s);
    }
}
