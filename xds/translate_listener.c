/*
 * Listeners (LDS): virtualOutbound (15001) and virtualInbound (15006) with
 * their filter chains, per-port outbound listeners (0.0.0.0_9080 with RDS,
 * VIP_PORT with tcp_proxy), and gateway listeners (0.0.0.0_8080).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "translate_internal.h"

typedef Envoy__Extensions__Filters__Network__HttpConnectionManager__V3__HttpConnectionManager pb_hcm_t;
typedef Envoy__Extensions__Filters__Network__TcpProxy__V3__TcpProxy pb_tcp_t;
typedef Envoy__Config__Listener__V3__FilterChainMatch pb_fcm_t;

static pb_listener_t *new_listener(tx_t *t, const char *name, const char *ip, uint32_t port,
                                   bool inbound)
{
    pb_listener_t *l = TX_NEW(t, pb_listener_t, ENVOY__CONFIG__LISTENER__V3__LISTENER__INIT);
    l->name = tx_str(t, name);
    l->address = tx_socket_address(t, ip, port);
    l->traffic_direction = inbound ? ENVOY__CONFIG__CORE__V3__TRAFFIC_DIRECTION__INBOUND
                                   : ENVOY__CONFIG__CORE__V3__TRAFFIC_DIRECTION__OUTBOUND;
    return l;
}

static void listener_filter(tx_t *t, pb_listener_t *l, const char *name, const void *cfg)
{
    Envoy__Config__Listener__V3__ListenerFilter *f = TX_NEW(
        t, Envoy__Config__Listener__V3__ListenerFilter, ENVOY__CONFIG__LISTENER__V3__LISTENER_FILTER__INIT);
    f->name = tx_str(t, name);
    f->config_type_case = ENVOY__CONFIG__LISTENER__V3__LISTENER_FILTER__CONFIG_TYPE_TYPED_CONFIG;
    f->typed_config = tx_any(t, cfg);
    TX_PUSH(t, l->listener_filters, l->n_listener_filters, f);
}

static void add_original_dst(tx_t *t, pb_listener_t *l)
{
    Envoy__Extensions__Filters__Listener__OriginalDst__V3__OriginalDst od =
        ENVOY__EXTENSIONS__FILTERS__LISTENER__ORIGINAL_DST__V3__ORIGINAL_DST__INIT;
    listener_filter(t, l, "envoy.filters.listener.original_dst", &od);
}

static void add_tls_inspector(tx_t *t, pb_listener_t *l)
{
    Envoy__Extensions__Filters__Listener__TlsInspector__V3__TlsInspector ti =
        ENVOY__EXTENSIONS__FILTERS__LISTENER__TLS_INSPECTOR__V3__TLS_INSPECTOR__INIT;
    listener_filter(t, l, "envoy.filters.listener.tls_inspector", &ti);
}

static void add_http_inspector(tx_t *t, pb_listener_t *l)
{
    Envoy__Extensions__Filters__Listener__HttpInspector__V3__HttpInspector hi =
        ENVOY__EXTENSIONS__FILTERS__LISTENER__HTTP_INSPECTOR__V3__HTTP_INSPECTOR__INIT;
    listener_filter(t, l, "envoy.filters.listener.http_inspector", &hi);
}

static pb_chain_t *new_chain(tx_t *t, const char *name)
{
    pb_chain_t *c = TX_NEW(t, pb_chain_t, ENVOY__CONFIG__LISTENER__V3__FILTER_CHAIN__INIT);
    c->name = tx_str(t, name);
    return c;
}

static pb_fcm_t *chain_match(tx_t *t, pb_chain_t *c)
{
    if (c->filter_chain_match == NULL)
        c->filter_chain_match =
            TX_NEW(t, pb_fcm_t, ENVOY__CONFIG__LISTENER__V3__FILTER_CHAIN_MATCH__INIT);
    return c->filter_chain_match;
}

static pb_filter_t *tcp_proxy(tx_t *t, const char *stat, const char *cluster)
{
    pb_tcp_t *p = TX_NEW(t, pb_tcp_t, ENVOY__EXTENSIONS__FILTERS__NETWORK__TCP_PROXY__V3__TCP_PROXY__INIT);
    p->stat_prefix = tx_str(t, stat);
    p->cluster_specifier_case = ENVOY__EXTENSIONS__FILTERS__NETWORK__TCP_PROXY__V3__TCP_PROXY__CLUSTER_SPECIFIER_CLUSTER;
    p->cluster = tx_str(t, cluster);
    return tx_network_filter(t, "envoy.filters.network.tcp_proxy", p);
}

static void add_rbac_network(tx_t *t, pb_chain_t *c, const tx_authz_t *az)
{
    for (int s = 0; s < 3; s++) {
        if (az->tcp[s] == NULL)
            continue;
        Envoy__Extensions__Filters__Network__Rbac__V3__RBAC *r =
            TX_NEW(t, Envoy__Extensions__Filters__Network__Rbac__V3__RBAC,
                   ENVOY__EXTENSIONS__FILTERS__NETWORK__RBAC__V3__RBAC__INIT);
        r->rules = az->tcp[s];
        r->stat_prefix = tx_str(t, "tcp.");
        TX_PUSH(t, c->filters, c->n_filters, tx_network_filter(t, "envoy.filters.network.rbac", r));
    }
}

/* An HTTP connection manager; rds_name or an inline route configuration. The
 * router filter is always last. */
static pb_filter_t *hcm(tx_t *t, const char *stat, const char *rds_name, pb_rc_t *inline_rc,
                        const tx_authz_t *az, bool inbound)
{
    pb_hcm_t *h = TX_NEW(t, pb_hcm_t,
                         ENVOY__EXTENSIONS__FILTERS__NETWORK__HTTP_CONNECTION_MANAGER__V3__HTTP_CONNECTION_MANAGER__INIT);
    h->stat_prefix = tx_str(t, stat);
    if (rds_name) {
        Envoy__Extensions__Filters__Network__HttpConnectionManager__V3__Rds *rds =
            TX_NEW(t, Envoy__Extensions__Filters__Network__HttpConnectionManager__V3__Rds,
                   ENVOY__EXTENSIONS__FILTERS__NETWORK__HTTP_CONNECTION_MANAGER__V3__RDS__INIT);
        rds->config_source = tx_ads(t);
        rds->config_source->initial_fetch_timeout = tx_duration(t, 0);
        rds->route_config_name = tx_str(t, rds_name);
        h->route_specifier_case =
            ENVOY__EXTENSIONS__FILTERS__NETWORK__HTTP_CONNECTION_MANAGER__V3__HTTP_CONNECTION_MANAGER__ROUTE_SPECIFIER_RDS;
        h->rds = rds;
    } else {
        h->route_specifier_case =
            ENVOY__EXTENSIONS__FILTERS__NETWORK__HTTP_CONNECTION_MANAGER__V3__HTTP_CONNECTION_MANAGER__ROUTE_SPECIFIER_ROUTE_CONFIG;
        h->route_config = inline_rc;
    }
    h->use_remote_address = tx_bool(t, t->px->type == XDS_ROUTER);
    h->normalize_path = tx_bool(t, true);
    h->path_with_escaped_slashes_action =
        ENVOY__EXTENSIONS__FILTERS__NETWORK__HTTP_CONNECTION_MANAGER__V3__HTTP_CONNECTION_MANAGER__PATH_WITH_ESCAPED_SLASHES_ACTION__KEEP_UNCHANGED;
    if (inbound) {
        h->forward_client_cert_details =
            ENVOY__EXTENSIONS__FILTERS__NETWORK__HTTP_CONNECTION_MANAGER__V3__HTTP_CONNECTION_MANAGER__FORWARD_CLIENT_CERT_DETAILS__APPEND_FORWARD;
        h->set_current_client_cert_details =
            TX_NEW(t, Envoy__Extensions__Filters__Network__HttpConnectionManager__V3__HttpConnectionManager__SetCurrentClientCertDetails,
                   ENVOY__EXTENSIONS__FILTERS__NETWORK__HTTP_CONNECTION_MANAGER__V3__HTTP_CONNECTION_MANAGER__SET_CURRENT_CLIENT_CERT_DETAILS__INIT);
        h->set_current_client_cert_details->subject = tx_bool(t, true);
        h->set_current_client_cert_details->dns = 1;
        h->set_current_client_cert_details->uri = 1;
    }
    Envoy__Extensions__Filters__Network__HttpConnectionManager__V3__HttpConnectionManager__UpgradeConfig *ws =
        TX_NEW(t, Envoy__Extensions__Filters__Network__HttpConnectionManager__V3__HttpConnectionManager__UpgradeConfig,
               ENVOY__EXTENSIONS__FILTERS__NETWORK__HTTP_CONNECTION_MANAGER__V3__HTTP_CONNECTION_MANAGER__UPGRADE_CONFIG__INIT);
    ws->upgrade_type = tx_str(t, "websocket");
    TX_PUSH(t, h->upgrade_configs, h->n_upgrade_configs, ws);
    for (int s = 0; az && s < 3; s++) {
        if (az->http[s] == NULL)
            continue;
        Envoy__Extensions__Filters__Http__Rbac__V3__RBAC *r =
            TX_NEW(t, Envoy__Extensions__Filters__Http__Rbac__V3__RBAC,
                   ENVOY__EXTENSIONS__FILTERS__HTTP__RBAC__V3__RBAC__INIT);
        r->rules = az->http[s];
        TX_PUSH(t, h->http_filters, h->n_http_filters, tx_http_filter(t, "envoy.filters.http.rbac", r));
    }
    if (!inbound) {
        Envoy__Extensions__Filters__Http__Fault__V3__HTTPFault fault =
            ENVOY__EXTENSIONS__FILTERS__HTTP__FAULT__V3__HTTPFAULT__INIT;
        TX_PUSH(t, h->http_filters, h->n_http_filters, tx_http_filter(t, "envoy.filters.http.fault", &fault));
        Envoy__Extensions__Filters__Http__Cors__V3__Cors cors = ENVOY__EXTENSIONS__FILTERS__HTTP__CORS__V3__CORS__INIT;
        TX_PUSH(t, h->http_filters, h->n_http_filters, tx_http_filter(t, "envoy.filters.http.cors", &cors));
    }
    Envoy__Extensions__Filters__Http__Router__V3__Router router =
        ENVOY__EXTENSIONS__FILTERS__HTTP__ROUTER__V3__ROUTER__INIT;
    TX_PUSH(t, h->http_filters, h->n_http_filters, tx_http_filter(t, "envoy.filters.http.router", &router));
    return tx_network_filter(t, "envoy.filters.network.http_connection_manager", h);
}

/* ---- sidecar outbound ---- */

/* tcp_proxy of a TCP service port, honouring a VirtualService tcp route. */
static pb_filter_t *outbound_tcp(tx_t *t, const reg_service_t *s, uint32_t port)
{
    char cname[1024];
    xds_cluster_name(cname, sizeof(cname), XDS_OUTBOUND, port, "", s->hostname);
    for (size_t i = 0; i < t->vs_tcp.n; i++) {
        const cfg_object_t *vso = t->vs_tcp.v[i];
        const cfg_VirtualService *vs = CFG_BODY(vso, VirtualService)->spec;
        bool host_ok = false;
        for (uint32_t j = 0; j < vs->hosts.n && !host_ok; j++)
            host_ok = xds_host_match(xds_resolve_host(t->a, vs->hosts.v[j], vso->namespace),
                                     s->hostname);
        if (!host_ok)
            continue;
        for (uint32_t r = 0; r < vs->tcp.n; r++) {
            const cfg_TCPRoute *tr = &vs->tcp.v[r];
            bool ok = tr->match.n == 0;
            for (uint32_t m = 0; m < tr->match.n && !ok; m++)
                ok = (tr->match.v[m].port == 0 || tr->match.v[m].port == port) &&
                     (tr->match.v[m].sourceLabels.n == 0 || tx_proxy_selected(t, &tr->match.v[m].sourceLabels));
            if (!ok || tr->route.n == 0)
                continue;
            pb_tcp_t *p = TX_NEW(t, pb_tcp_t, ENVOY__EXTENSIONS__FILTERS__NETWORK__TCP_PROXY__V3__TCP_PROXY__INIT);
            char dn[1024];
            if (tr->route.n == 1) {
                const cfg_Destination *d = tr->route.v[0].destination;
                const char *h = xds_resolve_host(t->a, d->host, vso->namespace);
                xds_cluster_name(dn, sizeof(dn), XDS_OUTBOUND, d->port && d->port->number ? d->port->number : port,
                                 d->subset, h);
                p->cluster_specifier_case = ENVOY__EXTENSIONS__FILTERS__NETWORK__TCP_PROXY__V3__TCP_PROXY__CLUSTER_SPECIFIER_CLUSTER;
                p->cluster = tx_str(t, dn);
                p->stat_prefix = tx_str(t, dn);
            } else {
                Envoy__Extensions__Filters__Network__TcpProxy__V3__TcpProxy__WeightedCluster *wc =
                    TX_NEW(t, Envoy__Extensions__Filters__Network__TcpProxy__V3__TcpProxy__WeightedCluster,
                           ENVOY__EXTENSIONS__FILTERS__NETWORK__TCP_PROXY__V3__TCP_PROXY__WEIGHTED_CLUSTER__INIT);
                for (uint32_t k = 0; k < tr->route.n; k++) {
                    const cfg_Destination *d = tr->route.v[k].destination;
                    const char *h = xds_resolve_host(t->a, d->host, vso->namespace);
                    xds_cluster_name(dn, sizeof(dn), XDS_OUTBOUND,
                                     d->port && d->port->number ? d->port->number : port, d->subset, h);
                    Envoy__Extensions__Filters__Network__TcpProxy__V3__TcpProxy__WeightedCluster__ClusterWeight *cw =
                        TX_NEW(t, Envoy__Extensions__Filters__Network__TcpProxy__V3__TcpProxy__WeightedCluster__ClusterWeight,
                               ENVOY__EXTENSIONS__FILTERS__NETWORK__TCP_PROXY__V3__TCP_PROXY__WEIGHTED_CLUSTER__CLUSTER_WEIGHT__INIT);
                    cw->name = tx_str(t, dn);
                    cw->weight = tr->route.v[k].weight > 0 ? (uint32_t)tr->route.v[k].weight : 0;
                    TX_PUSH(t, wc->clusters, wc->n_clusters, cw);
                }
                p->cluster_specifier_case =
                    ENVOY__EXTENSIONS__FILTERS__NETWORK__TCP_PROXY__V3__TCP_PROXY__CLUSTER_SPECIFIER_WEIGHTED_CLUSTERS;
                p->weighted_clusters = wc;
                p->stat_prefix = tx_str(t, cname);
            }
            return tx_network_filter(t, "envoy.filters.network.tcp_proxy", p);
        }
    }
    return tcp_proxy(t, cname, cname);
}

static void virtual_outbound(tx_t *t)
{
    pb_listener_t *l = new_listener(t, XDS_VIRTUAL_OUTBOUND, "0.0.0.0", XDS_OUTBOUND_PORT, false);
    l->use_original_dst = tx_bool(t, true);
    pb_chain_t *bh = new_chain(t, "virtualOutbound-blackhole");
    chain_match(t, bh)->destination_port = tx_u32(t, XDS_OUTBOUND_PORT);
    TX_PUSH(t, bh->filters, bh->n_filters, tcp_proxy(t, XDS_BLACKHOLE_CLUSTER, XDS_BLACKHOLE_CLUSTER));
    TX_PUSH(t, l->filter_chains, l->n_filter_chains, bh);
    const cfg_Sidecar *sc = t->sidecar ? CFG_BODY(t->sidecar, Sidecar)->spec : NULL;
    bool allow = !(sc && sc->outboundTrafficPolicy &&
                   CFG_HAS(sc->outboundTrafficPolicy, OutboundTrafficPolicy, mode) &&
                   sc->outboundTrafficPolicy->mode == cfg_OutboundTrafficPolicyMode_REGISTRY_ONLY);
    pb_chain_t *all = new_chain(t, "virtualOutbound-catchall-tcp");
    const char *c = allow ? XDS_PASSTHROUGH_CLUSTER : XDS_BLACKHOLE_CLUSTER;
    TX_PUSH(t, all->filters, all->n_filters, tcp_proxy(t, c, c));
    TX_PUSH(t, l->filter_chains, l->n_filter_chains, all);
    tx_emit(t, XDS_LISTENER, l->name, l);
}

static void outbound_listeners(tx_t *t)
{
    /* HTTP (and sniffed) ports: one 0.0.0.0_PORT listener each */
    for (size_t i = 0; i < t->nsvcs; i++) {
        const reg_service_t *s = t->svcs[i];
        for (uint32_t p = 0; p < s->nports; p++) {
            const reg_port_t *port = &s->ports[p];
            bool http = reg_protocol_is_http(port->protocol);
            bool sniff = port->protocol == REG_PROTO_UNKNOWN;
            if (!http && !sniff)
                continue;
            const char *name = tx_printf(t, "0.0.0.0_%u", port->port);
            if (tx_emitted(t, XDS_LISTENER, name))
                continue;
            pb_listener_t *l = new_listener(t, name, "0.0.0.0", port->port, false);
            l->bind_to_port = tx_bool(t, false);
            const char *rname = tx_printf(t, "%u", port->port);
            pb_chain_t *c = new_chain(t, tx_printf(t, "0.0.0.0_%u", port->port));
            TX_PUSH(t, c->filters, c->n_filters,
                    hcm(t, tx_printf(t, "outbound_0.0.0.0_%u", port->port), rname, NULL, NULL, false));
            if (sniff) {
                add_http_inspector(t, l);
                pb_fcm_t *m = chain_match(t, c);
                const char *protos[] = {"http/1.0", "http/1.1", "h2c"};
                for (int k = 0; k < 3; k++)
                    TX_PUSH(t, m->application_protocols, m->n_application_protocols, tx_str(t, protos[k]));
                TX_PUSH(t, l->filter_chains, l->n_filter_chains, c);
                pb_chain_t *tc = new_chain(t, tx_printf(t, "0.0.0.0_%u-tcp", port->port));
                TX_PUSH(t, tc->filters, tc->n_filters, outbound_tcp(t, s, port->port));
                TX_PUSH(t, l->filter_chains, l->n_filter_chains, tc);
            } else {
                TX_PUSH(t, l->filter_chains, l->n_filter_chains, c);
            }
            tx_emit(t, XDS_LISTENER, name, l);
        }
    }
    /* TCP ports: VIP_PORT listeners (0.0.0.0_PORT without a VIP) */
    for (size_t i = 0; i < t->nsvcs; i++) {
        const reg_service_t *s = t->svcs[i];
        for (uint32_t p = 0; p < s->nports; p++) {
            const reg_port_t *port = &s->ports[p];
            if (!reg_protocol_is_tcp(port->protocol))
                continue;
            const char *vip = s->address && strchr(s->address, '/') == NULL ? s->address : "0.0.0.0";
            const char *name = tx_printf(t, "%s_%u", vip, port->port);
            if (tx_emitted(t, XDS_LISTENER, name))
                continue;
            pb_listener_t *l = new_listener(t, name, vip, port->port, false);
            l->bind_to_port = tx_bool(t, false);
            pb_chain_t *c = new_chain(t, name);
            if (s->mesh_external && s->hostname[0] != '*' && strcmp(vip, "0.0.0.0") == 0 &&
                (port->protocol == REG_PROTO_TLS || port->protocol == REG_PROTO_HTTPS)) {
                /* external TLS without a VIP: select by SNI */
                add_tls_inspector(t, l);
                TX_PUSH(t, chain_match(t, c)->server_names, chain_match(t, c)->n_server_names,
                        tx_str(t, s->hostname));
            }
            TX_PUSH(t, c->filters, c->n_filters, outbound_tcp(t, s, port->port));
            TX_PUSH(t, l->filter_chains, l->n_filter_chains, c);
            tx_emit(t, XDS_LISTENER, name, l);
        }
    }
}

/* ---- sidecar inbound ---- */

static void inbound_chains(tx_t *t, pb_listener_t *l, uint32_t port, bool http, const char *host,
                           uint32_t svc_port, const tx_authz_t *az)
{
    int mode = tx_mtls_mode(t, port);
    char cname[64];
    xds_cluster_name(cname, sizeof(cname), XDS_INBOUND, port, "", "");
    for (int tls = 1; tls >= 0; tls--) {
        if (tls && mode == cfg_MtlsMode_DISABLE)
            continue;
        if (!tls && mode == cfg_MtlsMode_STRICT)
            continue;
        pb_chain_t *c = new_chain(t, tx_printf(t, "%s%s", cname, tls ? "" : "-plaintext"));
        pb_fcm_t *m = chain_match(t, c);
        m->destination_port = tx_u32(t, port);
        if (mode != cfg_MtlsMode_DISABLE)
            m->transport_protocol = tx_str(t, tls ? "tls" : "raw_buffer");
        if (tls) {
            TX_PUSH(t, m->application_protocols, m->n_application_protocols, tx_str(t, "istio-peer-exchange"));
            TX_PUSH(t, m->application_protocols, m->n_application_protocols, tx_str(t, "istio"));
            c->transport_socket = tx_istio_mutual_downstream(t, http);
        }
        if (http) {
            pb_rc_t *rc = TX_NEW(t, pb_rc_t, ENVOY__CONFIG__ROUTE__V3__ROUTE_CONFIGURATION__INIT);
            rc->name = tx_str(t, cname);
            rc->validate_clusters = tx_bool(t, false);
            pb_vhost_t *vh = TX_NEW(t, pb_vhost_t, ENVOY__CONFIG__ROUTE__V3__VIRTUAL_HOST__INIT);
            vh->name = tx_printf(t, "inbound|http|%u", svc_port);
            TX_PUSH(t, vh->domains, vh->n_domains, tx_str(t, "*"));
            pb_route_t *r = tx_default_route(t, cname, tx_printf(t, "%s:%u/*", host, svc_port), false);
            r->route->retry_policy = NULL;
            TX_PUSH(t, vh->routes, vh->n_routes, r);
            TX_PUSH(t, rc->virtual_hosts, rc->n_virtual_hosts, vh);
            TX_PUSH(t, c->filters, c->n_filters,
                    hcm(t, tx_printf(t, "inbound_0.0.0.0_%u", port), NULL, rc, az, true));
        } else {
            add_rbac_network(t, c, az);
            TX_PUSH(t, c->filters, c->n_filters, tcp_proxy(t, cname, cname));
        }
        TX_PUSH(t, l->filter_chains, l->n_filter_chains, c);
    }
}

static void virtual_inbound(tx_t *t)
{
    pb_listener_t *l = new_listener(t, XDS_VIRTUAL_INBOUND, "0.0.0.0", XDS_INBOUND_PORT, true);
    add_original_dst(t, l);
    add_tls_inspector(t, l);
    tx_authz_t az;
    tx_authz_build(t, &az);
    pb_chain_t *bh = new_chain(t, "virtualInbound-blackhole");
    chain_match(t, bh)->destination_port = tx_u32(t, XDS_INBOUND_PORT);
    TX_PUSH(t, bh->filters, bh->n_filters, tcp_proxy(t, XDS_BLACKHOLE_CLUSTER, XDS_BLACKHOLE_CLUSTER));
    TX_PUSH(t, l->filter_chains, l->n_filter_chains, bh);

    reg_target_t targets[256];
    uint32_t n = reg_targets(t->reg, t->px->namespace, &t->px->labels, t->px->ip, targets, 256);
    if (n > 256)
        n = 256;
    bool sniff = false;
    uint32_t done[256];
    uint32_t ndone = 0;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t port = targets[i].target_port;
        bool seen = false;
        for (uint32_t k = 0; k < ndone && !seen; k++)
            seen = done[k] == port;
        if (seen || targets[i].port->protocol == REG_PROTO_UDP)
            continue;
        done[ndone++] = port;
        reg_protocol_t pr = targets[i].port->protocol;
        if (pr == REG_PROTO_UNKNOWN)
            sniff = true;
        inbound_chains(t, l, port, reg_protocol_is_http(pr), targets[i].service->hostname,
                       targets[i].port->port, &az);
    }
    /* traffic to ports no service declares: passthrough, same mTLS rules */
    int mode = tx_mtls_mode(t, 0);
    for (int tls = 1; tls >= 0; tls--) {
        if ((tls && mode == cfg_MtlsMode_DISABLE) || (!tls && mode == cfg_MtlsMode_STRICT))
            continue;
        pb_chain_t *c = new_chain(t, tls ? "virtualInbound-catchall-tls" : "virtualInbound-catchall-tcp");
        if (mode != cfg_MtlsMode_DISABLE) {
            pb_fcm_t *m = chain_match(t, c);
            m->transport_protocol = tx_str(t, tls ? "tls" : "raw_buffer");
            if (tls) {
                TX_PUSH(t, m->application_protocols, m->n_application_protocols, tx_str(t, "istio-peer-exchange"));
                TX_PUSH(t, m->application_protocols, m->n_application_protocols, tx_str(t, "istio"));
            }
        }
        if (tls)
            c->transport_socket = tx_istio_mutual_downstream(t, false);
        add_rbac_network(t, c, &az);
        TX_PUSH(t, c->filters, c->n_filters, tcp_proxy(t, XDS_INBOUND_PASSTHROUGH_CLUSTER, XDS_INBOUND_PASSTHROUGH_CLUSTER));
        TX_PUSH(t, l->filter_chains, l->n_filter_chains, c);
    }
    if (sniff)
        add_http_inspector(t, l);
    tx_emit(t, XDS_LISTENER, l->name, l);
}

/* ---- gateways ---- */

typedef struct gw_pick {
    tx_t *t;
    const cfg_object_t **v;
    size_t n;
} gw_pick_t;

static int pick_gateway(void *ud, cfg_object_t *o)
{
    gw_pick_t *g = ud;
    const cfg_Gateway *gw = CFG_BODY(o, Gateway)->spec;
    if (gw && gw->selector.n > 0 && tx_proxy_selected(g->t, &gw->selector))
        TX_PUSH(g->t, g->v, g->n, o);
    return 0;
}

static int obj_cmp(const void *a, const void *b)
{
    const cfg_object_t *x = *(const cfg_object_t *const *)a, *y = *(const cfg_object_t *const *)b;
    int c = strcmp(x->namespace, y->namespace);
    return c ? c : strcmp(x->name, y->name);
}

/* The port the gateway pod listens on for a server port (via the Service that
 * selects the gateway), or the server port itself. */
static uint32_t gateway_target_port(tx_t *t, uint32_t port)
{
    reg_target_t targets[64];
    uint32_t n = reg_targets(t->reg, t->px->namespace, &t->px->labels, t->px->ip, targets, 64);
    for (uint32_t i = 0; i < n && i < 64; i++)
        if (targets[i].port->port == port)
            return targets[i].target_port;
    return port;
}

static pb_tsock_t *gateway_tls(tx_t *t, const cfg_ServerTLSSettings *tls, bool http)
{
    Envoy__Extensions__TransportSockets__Tls__V3__CommonTlsContext *c =
        TX_NEW(t, Envoy__Extensions__TransportSockets__Tls__V3__CommonTlsContext,
               ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__COMMON_TLS_CONTEXT__INIT);
    bool mutual = CFG_HAS(tls, ServerTLSSettings, mode) &&
                  (tls->mode == cfg_ServerTLSmode_MUTUAL || tls->mode == cfg_ServerTLSmode_OPTIONAL_MUTUAL);
    if (tls->mode == cfg_ServerTLSmode_ISTIO_MUTUAL)
        return tx_istio_mutual_downstream(t, http);
    if (tls->credentialName || tls->credentialNames.n) {
        uint32_t nc = tls->credentialName ? 1 : tls->credentialNames.n;
        for (uint32_t i = 0; i < nc; i++) {
            const char *cred = tls->credentialName ? tls->credentialName : tls->credentialNames.v[i];
            Envoy__Extensions__TransportSockets__Tls__V3__SdsSecretConfig *s =
                TX_NEW(t, Envoy__Extensions__TransportSockets__Tls__V3__SdsSecretConfig,
                       ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__SDS_SECRET_CONFIG__INIT);
            s->name = tx_printf(t, "kubernetes://%s", cred);
            s->sds_config = tx_ads(t);
            TX_PUSH(t, c->tls_certificate_sds_secret_configs, c->n_tls_certificate_sds_secret_configs, s);
        }
        if (mutual) {
            const char *ca = tls->caCertCredentialName
                                 ? tx_printf(t, "kubernetes://%s", tls->caCertCredentialName)
                                 : tx_printf(t, "kubernetes://%s-cacert",
                                             tls->credentialName ? tls->credentialName : tls->credentialNames.v[0]);
            Envoy__Extensions__TransportSockets__Tls__V3__SdsSecretConfig *s =
                TX_NEW(t, Envoy__Extensions__TransportSockets__Tls__V3__SdsSecretConfig,
                       ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__SDS_SECRET_CONFIG__INIT);
            s->name = tx_str(t, ca);
            s->sds_config = tx_ads(t);
            c->validation_context_type_case =
                ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__COMMON_TLS_CONTEXT__VALIDATION_CONTEXT_TYPE_VALIDATION_CONTEXT_SDS_SECRET_CONFIG;
            c->validation_context_sds_secret_config = s;
        }
    } else if (tls->serverCertificate && tls->privateKey) {
        Envoy__Extensions__TransportSockets__Tls__V3__TlsCertificate *tc =
            TX_NEW(t, Envoy__Extensions__TransportSockets__Tls__V3__TlsCertificate,
                   ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__TLS_CERTIFICATE__INIT);
        tc->certificate_chain = TX_NEW(t, Envoy__Config__Core__V3__DataSource, ENVOY__CONFIG__CORE__V3__DATA_SOURCE__INIT);
        tc->certificate_chain->specifier_case = ENVOY__CONFIG__CORE__V3__DATA_SOURCE__SPECIFIER_FILENAME;
        tc->certificate_chain->filename = tx_str(t, tls->serverCertificate);
        tc->private_key = TX_NEW(t, Envoy__Config__Core__V3__DataSource, ENVOY__CONFIG__CORE__V3__DATA_SOURCE__INIT);
        tc->private_key->specifier_case = ENVOY__CONFIG__CORE__V3__DATA_SOURCE__SPECIFIER_FILENAME;
        tc->private_key->filename = tx_str(t, tls->privateKey);
        TX_PUSH(t, c->tls_certificates, c->n_tls_certificates, tc);
        if (mutual && tls->caCertificates) {
            Envoy__Extensions__TransportSockets__Tls__V3__CertificateValidationContext *v =
                TX_NEW(t, Envoy__Extensions__TransportSockets__Tls__V3__CertificateValidationContext,
                       ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__CERTIFICATE_VALIDATION_CONTEXT__INIT);
            v->trusted_ca = TX_NEW(t, Envoy__Config__Core__V3__DataSource, ENVOY__CONFIG__CORE__V3__DATA_SOURCE__INIT);
            v->trusted_ca->specifier_case = ENVOY__CONFIG__CORE__V3__DATA_SOURCE__SPECIFIER_FILENAME;
            v->trusted_ca->filename = tx_str(t, tls->caCertificates);
            c->validation_context_type_case =
                ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__COMMON_TLS_CONTEXT__VALIDATION_CONTEXT_TYPE_VALIDATION_CONTEXT;
            c->validation_context = v;
        }
    }
    if (http) {
        TX_PUSH(t, c->alpn_protocols, c->n_alpn_protocols, tx_str(t, "h2"));
        TX_PUSH(t, c->alpn_protocols, c->n_alpn_protocols, tx_str(t, "http/1.1"));
    }
    Envoy__Extensions__TransportSockets__Tls__V3__DownstreamTlsContext *d =
        TX_NEW(t, Envoy__Extensions__TransportSockets__Tls__V3__DownstreamTlsContext,
               ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__DOWNSTREAM_TLS_CONTEXT__INIT);
    d->common_tls_context = c;
    d->require_client_certificate = tx_bool(t, tls->mode == cfg_ServerTLSmode_MUTUAL);
    pb_tsock_t *ts = TX_NEW(t, pb_tsock_t, ENVOY__CONFIG__CORE__V3__TRANSPORT_SOCKET__INIT);
    ts->name = tx_str(t, "envoy.transport_sockets.tls");
    ts->config_type_case = ENVOY__CONFIG__CORE__V3__TRANSPORT_SOCKET__CONFIG_TYPE_TYPED_CONFIG;
    ts->typed_config = tx_any(t, d);
    return ts;
}

static void server_names(tx_t *t, pb_chain_t *c, const cfg_Server *s)
{
    for (uint32_t i = 0; i < s->hosts.n; i++) {
        const char *h = s->hosts.v[i];
        const char *slash = strchr(h, '/');
        if (slash)
            h = slash + 1;
        if (strcmp(h, "*") == 0)
            continue;
        pb_fcm_t *m = chain_match(t, c);
        TX_PUSH(t, m->server_names, m->n_server_names, tx_str(t, h));
    }
}

/* True when a VirtualService written in vs_ns is bound to one of the
 * gateways (its gateways list, or a match's when it names some). */
static bool bound_to(const cfg_strlist_t *refs, const char *vs_ns, const cfg_object_t *const *gws,
                     size_t ngw)
{
    for (uint32_t g = 0; g < refs->n; g++) {
        const char *ref = refs->v[g];
        const char *slash = strchr(ref, '/');
        for (size_t k = 0; k < ngw; k++) {
            if (slash ? (strlen(gws[k]->namespace) == (size_t)(slash - ref) &&
                         strncmp(ref, gws[k]->namespace, (size_t)(slash - ref)) == 0 &&
                         strcmp(slash + 1, gws[k]->name) == 0)
                      : (strcmp(ref, gws[k]->name) == 0 && strcmp(vs_ns, gws[k]->namespace) == 0))
                return true;
        }
    }
    return false;
}

/* True when a server of the list serves name (a VirtualService host or an
 * SNI): its hosts ("host", "*.domain", "*", "ns/host") cover it or it covers
 * them. vs_ns: the namespace the name was written in. */
static bool servers_allow(const cfg_Server *const *srvs, size_t n, const char *name, const char *vs_ns)
{
    for (size_t i = 0; i < n; i++) {
        for (uint32_t k = 0; k < srvs[i]->hosts.n; k++) {
            const char *h = srvs[i]->hosts.v[k];
            const char *slash = strchr(h, '/');
            if (slash) {
                size_t nl = (size_t)(slash - h);
                bool any = nl == 1 && (h[0] == '*' || h[0] == '.');
                if (!any && !(strlen(vs_ns) == nl && strncmp(vs_ns, h, nl) == 0))
                    continue;
                h = slash + 1;
            }
            if (xds_host_match(h, name) || xds_host_match(name, h))
                return true;
        }
    }
    return false;
}

/* tcp_proxy to a route's destinations (weighted when there are several). */
static pb_filter_t *route_tcp_proxy(tx_t *t, const char *vs_ns, const cfg_RouteDestination *rd, uint32_t n,
                                    uint32_t port)
{
    char dn[1024];
    if (n == 1) {
        const cfg_Destination *d = rd[0].destination;
        xds_cluster_name(dn, sizeof(dn), XDS_OUTBOUND, d->port && d->port->number ? d->port->number : port,
                         d->subset, xds_resolve_host(t->a, d->host, vs_ns));
        return tcp_proxy(t, dn, dn);
    }
    pb_tcp_t *p = TX_NEW(t, pb_tcp_t, ENVOY__EXTENSIONS__FILTERS__NETWORK__TCP_PROXY__V3__TCP_PROXY__INIT);
    Envoy__Extensions__Filters__Network__TcpProxy__V3__TcpProxy__WeightedCluster *wc =
        TX_NEW(t, Envoy__Extensions__Filters__Network__TcpProxy__V3__TcpProxy__WeightedCluster,
               ENVOY__EXTENSIONS__FILTERS__NETWORK__TCP_PROXY__V3__TCP_PROXY__WEIGHTED_CLUSTER__INIT);
    for (uint32_t k = 0; k < n; k++) {
        const cfg_Destination *d = rd[k].destination;
        xds_cluster_name(dn, sizeof(dn), XDS_OUTBOUND, d->port && d->port->number ? d->port->number : port,
                         d->subset, xds_resolve_host(t->a, d->host, vs_ns));
        Envoy__Extensions__Filters__Network__TcpProxy__V3__TcpProxy__WeightedCluster__ClusterWeight *cw =
            TX_NEW(t, Envoy__Extensions__Filters__Network__TcpProxy__V3__TcpProxy__WeightedCluster__ClusterWeight,
                   ENVOY__EXTENSIONS__FILTERS__NETWORK__TCP_PROXY__V3__TCP_PROXY__WEIGHTED_CLUSTER__CLUSTER_WEIGHT__INIT);
        cw->name = tx_str(t, dn);
        cw->weight = rd[k].weight > 0 ? (uint32_t)rd[k].weight : 0;
        TX_PUSH(t, wc->clusters, wc->n_clusters, cw);
    }
    p->cluster_specifier_case =
        ENVOY__EXTENSIONS__FILTERS__NETWORK__TCP_PROXY__V3__TCP_PROXY__CLUSTER_SPECIFIER_WEIGHTED_CLUSTERS;
    p->weighted_clusters = wc;
    p->stat_prefix = tx_printf(t, "%s", dn);
    return tx_network_filter(t, "envoy.filters.network.tcp_proxy", p);
}

/* PASSTHROUGH servers of a port: one tcp_proxy chain per SNI from the tls
 * routes of the VirtualServices bound to the gateways, for the names the
 * servers serve. The first route to claim an SNI keeps it (two chains with
 * the same match would make the listener invalid). */
static void passthrough_chains(tx_t *t, pb_listener_t *l, const cfg_object_t *const *gws, size_t ngw,
                               const cfg_Server *const *srvs, size_t nsrv, uint32_t port)
{
    const char **claimed = NULL;
    size_t nclaimed = 0;
    for (size_t i = 0; i < t->nvss; i++) {
        const cfg_object_t *vso = t->vss[i];
        const cfg_VirtualService *vs = CFG_BODY(vso, VirtualService)->spec;
        if (vs == NULL)
            continue;
        for (uint32_t r = 0; r < vs->tls.n; r++) {
            const cfg_TLSRoute *tr = &vs->tls.v[r];
            if (tr->route.n == 0)
                continue;
            for (uint32_t m = 0; m < tr->match.n; m++) {
                const cfg_TLSMatchAttributes *ma = &tr->match.v[m];
                if (ma->port && ma->port != port)
                    continue;
                if (!bound_to(ma->gateways.n ? &ma->gateways : &vs->gateways, vso->namespace, gws, ngw))
                    continue;
                pb_chain_t *c = NULL;
                for (uint32_t s = 0; s < ma->sniHosts.n; s++) {
                    const char *sni = ma->sniHosts.v[s];
                    bool taken = false;
                    for (size_t k = 0; k < nclaimed && !taken; k++)
                        taken = strcmp(claimed[k], sni) == 0;
                    if (taken) {
                        tx_warn(t, "VirtualService %s/%s: tls[%u].match[%u]: SNI %s on gateway port %u is "
                                   "already routed by an earlier rule; ignored",
                                vso->namespace, vso->name, r, m, sni, port);
                        continue;
                    }
                    if (!servers_allow(srvs, nsrv, sni, vso->namespace))
                        continue;
                    if (c == NULL) {
                        c = new_chain(t, tx_printf(t, "%s-%u-%u", vso->name, r, m));
                        TX_PUSH(t, c->filters, c->n_filters,
                                route_tcp_proxy(t, vso->namespace, tr->route.v, tr->route.n, port));
                    }
                    TX_PUSH(t, claimed, nclaimed, sni);
                    pb_fcm_t *fm = chain_match(t, c);
                    TX_PUSH(t, fm->server_names, fm->n_server_names, tx_str(t, sni));
                }
                if (c)
                    TX_PUSH(t, l->filter_chains, l->n_filter_chains, c);
            }
        }
    }
}

/* AUTO_PASSTHROUGH servers (east-west gateways): a connection whose SNI is
 * Istio's outbound_.PORT_.SUBSET_.FQDN goes to that cluster untouched, no
 * VirtualService needed; one chain per port and subset of every service the
 * servers' hosts allow. */
static void auto_passthrough_chains(tx_t *t, pb_listener_t *l, const cfg_Server *const *srvs, size_t nsrv)
{
    for (size_t i = 0; i < t->nsvcs; i++) {
        const reg_service_t *s = t->svcs[i];
        if (!servers_allow(srvs, nsrv, s->hostname, s->namespace))
            continue;
        const cfg_object_t *dro = NULL;
        const cfg_DestinationRule *dr = tx_dr_for(t, s->hostname, &dro);
        uint32_t nsub = dr ? dr->subsets.n : 0;
        for (uint32_t p = 0; p < s->nports; p++) {
            if (s->ports[p].protocol == REG_PROTO_UDP)
                continue;
            for (uint32_t k = 0; k <= nsub; k++) {
                const char *sub = k == 0 ? "" : dr->subsets.v[k - 1].name;
                char sni[1024], cl[1024];
                xds_sni(sni, sizeof(sni), s->ports[p].port, sub, s->hostname);
                xds_cluster_name(cl, sizeof(cl), XDS_OUTBOUND, s->ports[p].port, sub, s->hostname);
                pb_chain_t *c = new_chain(t, tx_str(t, sni));
                TX_PUSH(t, c->filters, c->n_filters, tcp_proxy(t, tx_str(t, cl), tx_str(t, cl)));
                pb_fcm_t *fm = chain_match(t, c);
                TX_PUSH(t, fm->server_names, fm->n_server_names, tx_str(t, sni));
                TX_PUSH(t, l->filter_chains, l->n_filter_chains, c);
            }
        }
    }
}

/* A TCP server (or a TLS server terminated here, ts its transport socket):
 * the first tcp route of a VirtualService bound to the gateways, for a host
 * the server serves, that matches the port. NULL when none does. */
static pb_chain_t *tcp_server_chain(tx_t *t, const cfg_object_t *const *gws, size_t ngw, const cfg_Server *srv,
                                    const char *name, uint32_t port)
{
    const cfg_Server *one[1] = {srv};
    for (size_t i = 0; i < t->nvss; i++) {
        const cfg_object_t *vso = t->vss[i];
        const cfg_VirtualService *vs = CFG_BODY(vso, VirtualService)->spec;
        if (vs == NULL || vs->tcp.n == 0)
            continue;
        bool host_ok = false;
        for (uint32_t h = 0; h < vs->hosts.n && !host_ok; h++)
            host_ok = servers_allow(one, 1, xds_resolve_host(t->a, vs->hosts.v[h], vso->namespace), vso->namespace);
        if (!host_ok)
            continue;
        for (uint32_t r = 0; r < vs->tcp.n; r++) {
            const cfg_TCPRoute *tr = &vs->tcp.v[r];
            bool ok = tr->match.n == 0 && bound_to(&vs->gateways, vso->namespace, gws, ngw);
            for (uint32_t m = 0; m < tr->match.n && !ok; m++) {
                const cfg_L4MatchAttributes *ma = &tr->match.v[m];
                ok = (ma->port == 0 || ma->port == port) &&
                     bound_to(ma->gateways.n ? &ma->gateways : &vs->gateways, vso->namespace, gws, ngw);
            }
            if (!ok || tr->route.n == 0)
                continue;
            pb_chain_t *c = new_chain(t, name);
            TX_PUSH(t, c->filters, c->n_filters, route_tcp_proxy(t, vso->namespace, tr->route.v, tr->route.n, port));
            return c;
        }
    }
    return NULL;
}

/* Whether a server's TLS mode ends the TLS connection at the gateway. */
static bool server_terminates(const cfg_Server *srv)
{
    return srv->tls && CFG_HAS(srv->tls, ServerTLSSettings, mode) && srv->tls->mode != cfg_ServerTLSmode_PASSTHROUGH &&
           srv->tls->mode != cfg_ServerTLSmode_AUTO_PASSTHROUGH;
}

static void gateway_listeners(tx_t *t)
{
    gw_pick_t g = {.t = t};
    cfg_snap_each(t->in->snap, CFG_Gateway, pick_gateway, &g);
    if (g.n == 0)
        return;
    qsort(g.v, g.n, sizeof(*g.v), obj_cmp);
    /* servers grouped by port number */
    uint32_t ports[64];
    size_t np = 0;
    for (size_t i = 0; i < g.n; i++) {
        const cfg_Gateway *gw = CFG_BODY(g.v[i], Gateway)->spec;
        for (uint32_t s = 0; s < gw->servers.n; s++) {
            uint32_t pn = gw->servers.v[s].port ? gw->servers.v[s].port->number : 0;
            bool seen = false;
            for (size_t k = 0; k < np && !seen; k++)
                seen = ports[k] == pn;
            if (!seen && pn && np < 64)
                ports[np++] = pn;
        }
    }
    for (size_t k = 0; k < np; k++) {
        uint32_t port = ports[k];
        uint32_t lport = gateway_target_port(t, port);
        const char *lname = tx_printf(t, "0.0.0.0_%u", lport);
        pb_listener_t *l = new_listener(t, lname, "0.0.0.0", lport, false);
        const cfg_Server **plain = NULL, **passthrough = NULL, **autos = NULL;
        size_t nplain = 0, npassthrough = 0, nautos = 0;
        bool tls_inspect = false, tcp_taken = false;
        for (size_t i = 0; i < g.n; i++) {
            const cfg_Gateway *gw = CFG_BODY(g.v[i], Gateway)->spec;
            for (uint32_t s = 0; s < gw->servers.n; s++) {
                const cfg_Server *srv = &gw->servers.v[s];
                if (srv->port == NULL || srv->port->number != port)
                    continue;
                reg_protocol_t pr = reg_protocol_parse(srv->port->protocol);
                bool terminate = server_terminates(srv);
                const char *pname = srv->port->name ? srv->port->name : "https";
                if (pr == REG_PROTO_HTTP || (reg_protocol_is_http(pr) && !terminate)) {
                    /* plain HTTP; its tls settings can only ask for httpsRedirect */
                    TX_PUSH(t, plain, nplain, srv);
                } else if (terminate && (pr == REG_PROTO_HTTPS || reg_protocol_is_http(pr))) {
                    /* HTTPS terminated here: one chain per server, by SNI */
                    tls_inspect = true;
                    const char *rname = tx_printf(t, "https.%u.%s.%s.%s", port, pname, g.v[i]->name,
                                                  g.v[i]->namespace);
                    pb_chain_t *c = new_chain(t, rname);
                    server_names(t, c, srv);
                    c->transport_socket = gateway_tls(t, srv->tls, true);
                    const cfg_Server *one[1] = {srv};
                    const cfg_object_t *gwo[1] = {g.v[i]};
                    tx_emit(t, XDS_ROUTE, rname, tx_gateway_routes(t, rname, port, gwo, 1, one, 1));
                    TX_PUSH(t, c->filters, c->n_filters,
                            hcm(t, tx_printf(t, "outbound_0.0.0.0_%u", lport), rname, NULL, NULL, false));
                    TX_PUSH(t, l->filter_chains, l->n_filter_chains, c);
                } else if (terminate) {
                    /* TLS terminated here, then the VirtualService's tcp routes */
                    tls_inspect = true;
                    const char *cname = tx_printf(t, "tls.%u.%s.%s.%s", port, pname, g.v[i]->name,
                                                  g.v[i]->namespace);
                    pb_chain_t *c = tcp_server_chain(t, g.v, g.n, srv, cname, port);
                    if (c == NULL) {
                        tx_warn(t, "Gateway %s/%s: server %s (port %u): no VirtualService tcp route for its "
                                   "hosts; the server is not served",
                                g.v[i]->namespace, g.v[i]->name, pname, port);
                        continue;
                    }
                    server_names(t, c, srv);
                    c->transport_socket = gateway_tls(t, srv->tls, false);
                    TX_PUSH(t, l->filter_chains, l->n_filter_chains, c);
                } else if ((pr == REG_PROTO_HTTPS || pr == REG_PROTO_TLS) && srv->tls &&
                           CFG_HAS(srv->tls, ServerTLSSettings, mode) &&
                           srv->tls->mode == cfg_ServerTLSmode_AUTO_PASSTHROUGH) {
                    /* by Istio's SNI straight to the cluster it names */
                    tls_inspect = true;
                    TX_PUSH(t, autos, nautos, srv);
                } else if (pr == REG_PROTO_HTTPS || pr == REG_PROTO_TLS) {
                    /* not terminated: routed by SNI to where the TLS ends */
                    tls_inspect = true;
                    TX_PUSH(t, passthrough, npassthrough, srv);
                } else if (!tcp_taken) {
                    /* opaque TCP: nothing to tell connections apart, one route */
                    pb_chain_t *c = tcp_server_chain(t, g.v, g.n, srv,
                                                     tx_printf(t, "tcp.%u.%s.%s.%s", port, pname,
                                                               g.v[i]->name, g.v[i]->namespace),
                                                     port);
                    if (c) {
                        TX_PUSH(t, l->filter_chains, l->n_filter_chains, c);
                        tcp_taken = true;
                    }
                }
            }
        }
        if (npassthrough)
            passthrough_chains(t, l, g.v, g.n, passthrough, npassthrough, port);
        if (nautos)
            auto_passthrough_chains(t, l, autos, nautos);
        if (nplain) {
            const char *rname = tx_printf(t, "http.%u", lport);
            tx_emit(t, XDS_ROUTE, rname, tx_gateway_routes(t, rname, port, g.v, g.n, plain, nplain));
            pb_chain_t *c = new_chain(t, rname);
            TX_PUSH(t, c->filters, c->n_filters,
                    hcm(t, tx_printf(t, "outbound_0.0.0.0_%u", lport), rname, NULL, NULL, false));
            TX_PUSH(t, l->filter_chains, l->n_filter_chains, c);
        }
        if (tls_inspect)
            add_tls_inspector(t, l);
        if (l->n_filter_chains)
            tx_emit(t, XDS_LISTENER, lname, l);
    }
}

void tx_build_listeners(tx_t *t)
{
    if (t->px->type == XDS_ROUTER) {
        gateway_listeners(t);
        return;
    }
    if (t->px->proxyless)
        return; /* gRPC clients get API listeners (translate_grpc.c), not socket listeners */
    if (t->part != TX_INBOUND) {
        virtual_outbound(t);
        outbound_listeners(t);
    }
    if (t->part != TX_OUTBOUND)
        virtual_inbound(t);
}
