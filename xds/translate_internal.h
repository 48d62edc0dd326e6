/*
 * translate_internal: shared state of one translation (xds/translate*.c).
 *
 * A tx_t lives for one xds_translate() call. Every protobuf-c message it
 * builds is allocated in tx->a (freed in one shot when the result has been
 * serialized); generated structs are created with TX_NEW from their INIT
 * macros and repeated fields grow with TX_PUSH.
 */
#ifndef MESH_XDS_TRANSLATE_INTERNAL_H
#define MESH_XDS_TRANSLATE_INTERNAL_H

#include "envoy/config/cluster/v3/cluster.pb-c.h"
#include "envoy/config/endpoint/v3/endpoint.pb-c.h"
#include "envoy/config/listener/v3/listener.pb-c.h"
#include "envoy/config/rbac/v3/rbac.pb-c.h"
#include "envoy/config/route/v3/route.pb-c.h"
#include "envoy/extensions/filters/http/cors/v3/cors.pb-c.h"
#include "envoy/extensions/filters/http/fault/v3/fault.pb-c.h"
#include "envoy/extensions/filters/http/rbac/v3/rbac.pb-c.h"
#include "envoy/extensions/filters/http/router/v3/router.pb-c.h"
#include "envoy/extensions/filters/listener/http_inspector/v3/http_inspector.pb-c.h"
#include "envoy/extensions/filters/listener/original_dst/v3/original_dst.pb-c.h"
#include "envoy/extensions/filters/listener/tls_inspector/v3/tls_inspector.pb-c.h"
#include "envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.pb-c.h"
#include "envoy/extensions/filters/network/rbac/v3/rbac.pb-c.h"
#include "envoy/extensions/filters/network/tcp_proxy/v3/tcp_proxy.pb-c.h"
#include "envoy/extensions/retry/host/previous_hosts/v3/previous_hosts.pb-c.h"
#include "envoy/extensions/retry/priority/previous_priorities/v3/previous_priorities_config.pb-c.h"
#include "envoy/extensions/transport_sockets/tls/v3/tls.pb-c.h"
#include "envoy/extensions/upstreams/http/v3/http_protocol_options.pb-c.h"
#include "google/protobuf/any.pb-c.h"
#include "google/protobuf/duration.pb-c.h"
#include "google/protobuf/struct.pb-c.h"
#include "google/protobuf/wrappers.pb-c.h"
#include "xds.h"

/* Short names for the generated types used everywhere. */
typedef Envoy__Config__Cluster__V3__Cluster pb_cluster_t;
typedef Envoy__Config__Endpoint__V3__ClusterLoadAssignment pb_cla_t;
typedef Envoy__Config__Listener__V3__Listener pb_listener_t;
typedef Envoy__Config__Listener__V3__FilterChain pb_chain_t;
typedef Envoy__Config__Listener__V3__Filter pb_filter_t;
typedef Envoy__Config__Route__V3__RouteConfiguration pb_rc_t;
typedef Envoy__Config__Route__V3__VirtualHost pb_vhost_t;
typedef Envoy__Config__Route__V3__Route pb_route_t;
typedef Envoy__Config__Core__V3__Address pb_address_t;
typedef Envoy__Config__Core__V3__TransportSocket pb_tsock_t;
typedef Envoy__Config__Core__V3__HeaderValueOption pb_hvo_t;
typedef Envoy__Config__Route__V3__HeaderMatcher pb_hmatch_t;
typedef Envoy__Type__Matcher__V3__StringMatcher pb_smatch_t;
typedef Envoy__Extensions__Filters__Network__HttpConnectionManager__V3__HttpFilter pb_hfilter_t;
typedef Envoy__Config__Rbac__V3__RBAC pb_rbac_t;
typedef Google__Protobuf__Any pb_any_t;

typedef struct tx_out {
    const char *name;
    const ProtobufCMessage *msg; /* NULL once serialized (data, len) */
    const uint8_t *data;
    size_t len;
} tx_out_t;

/* A string-keyed hash map in the translation's arena (keys are borrowed). */
typedef struct tx_map_entry {
    const char *key;
    void *val;
} tx_map_entry_t;
typedef struct tx_map {
    tx_map_entry_t *v;
    size_t cap, n;
} tx_map_t;

/* Objects in snapshot order (namespace, name); the lists of the indexes. */
typedef struct tx_objlist {
    const cfg_object_t **v;
    size_t n;
} tx_objlist_t;

/* Which part of a sidecar's configuration a translation builds: all of it,
 * only what does not depend on the proxy itself beyond its namespace, type,
 * Sidecar and label selectors (outbound clusters, EDS, routes, outbound
 * listeners: shared, see tx_shared_t), or only the rest (inbound clusters,
 * virtualInbound, secrets). Routers and proxyless clients are always TX_ALL. */
typedef enum { TX_ALL = 0, TX_OUTBOUND, TX_INBOUND } tx_part_t;

/* What one service's clusters and endpoints are, serialized, as built for an
 * outbound part: every resource it emitted, kept or not (tx_shared_t reuses
 * it for the other outbound parts that pick the same DestinationRule). */
typedef struct tx_rec_item {
    xds_type_t type;
    const char *name;
    const uint8_t *data;
    size_t len;
} tx_rec_item_t;
typedef struct tx_rec {
    tx_rec_item_t *v;
    size_t n;
} tx_rec_t;

struct tx_shared;

typedef struct tx {
    arena_t *a; /* messages; a scratch arena while one is lent (tx_scratch_begin) */
    arena_t *keep; /* what outlives a scratch arena: outputs, indexes, warnings */
    arena_t *res_arena; /* the serialized result */
    const xds_input_t *in;
    const xds_proxy_t *px;
    const reg_t *reg;
    const char *trust_domain;
    const char *root_ns;
    const char *locality; /* the proxy's, "region/zone/subzone" or "" (tx_proxy_locality) */
    /* scope */
    const cfg_object_t *sidecar; /* the Sidecar applying to the proxy, or NULL */
    const reg_service_t **svcs; /* services the proxy sees, sorted by hostname */
    size_t nsvcs;
    const cfg_object_t **vss; /* VirtualServices visible to the proxy */
    size_t nvss;
    const cfg_object_t **drs; /* DestinationRules visible to the proxy */
    size_t ndrs;
    tx_part_t part;
    struct tx_shared *shared; /* the cache an outbound part is built for, or NULL */
    tx_rec_t *rec; /* recording what tx_emit gets (one service's clusters), or NULL */
    /* indexes over the scope, built with it (translate.c) */
    bool indexed;
    tx_map_t dr_by_host; /* resolved host -> tx_objlist_t* of DestinationRules */
    tx_objlist_t dr_wild; /* DestinationRules whose host is a wildcard */
    tx_map_t vs_by_host; /* resolved exact host -> tx_objlist_t* of mesh VirtualServices */
    tx_objlist_t vs_wild; /* mesh VirtualServices with a wildcard host */
    tx_objlist_t vs_tcp; /* VirtualServices with tcp routes */
    /* SANs of the last service an ISTIO_MUTUAL cluster was built for */
    const reg_service_t *san_svc;
    const char **sans;
    size_t nsans;
    /* output */
    tx_out_t *out[XDS_NTYPES];
    size_t nout[XDS_NTYPES];
    tx_map_t emitted[XDS_NTYPES]; /* name -> tx_out_t index + 1 */
    char **warnings;
    size_t nwarnings;
} tx_t;

/* ---- allocation helpers (translate.c) ---- */

void *tx_dup(tx_t *t, const void *src, size_t size);
#define TX_NEW(t, T, INIT) ((T *)tx_dup((t), &(T)INIT, sizeof(T)))
/* Makes room for element n of an arena array (capacity doubles at powers of two). */
void *tx_grow(tx_t *t, void *arr, size_t n, size_t esize);
#define TX_PUSH(t, arr, n, item)                                                                   \
    do {                                                                                           \
        (arr) = tx_grow((t), (arr), (n), sizeof(*(arr)));                                          \
        (arr)[(n)++] = (item);                                                                     \
    } while (0)
char *tx_str(tx_t *t, const char *s);
char *tx_printf(tx_t *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void tx_warn(tx_t *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Any holding msg (packed into the arena). */
pb_any_t *tx_any(tx_t *t, const void *msg);
Google__Protobuf__Duration *tx_duration(tx_t *t, int64_t ns);
Google__Protobuf__UInt32Value *tx_u32(tx_t *t, uint32_t v);
Google__Protobuf__UInt64Value *tx_u64(tx_t *t, uint64_t v);
Google__Protobuf__BoolValue *tx_bool(tx_t *t, bool v);
pb_address_t *tx_socket_address(tx_t *t, const char *ip, uint32_t port);
Envoy__Config__Core__V3__ConfigSource *tx_ads(tx_t *t);
Envoy__Type__V3__FractionalPercent *tx_fraction(tx_t *t, double percent);
Envoy__Config__Core__V3__RuntimeFractionalPercent *tx_runtime_fraction(tx_t *t, double percent);
pb_smatch_t *tx_smatch_exact(tx_t *t, const char *s);
pb_smatch_t *tx_smatch_prefix(tx_t *t, const char *s);
pb_smatch_t *tx_smatch_suffix(tx_t *t, const char *s);
pb_smatch_t *tx_smatch_regex(tx_t *t, const char *re);
pb_filter_t *tx_network_filter(tx_t *t, const char *name, const void *cfg);
pb_hfilter_t *tx_http_filter(tx_t *t, const char *name, const void *cfg);
/* Records a finished top-level resource (the first of a name wins); while a
 * scratch arena is lent it is serialized at once. */
void tx_emit(tx_t *t, xds_type_t type, const char *name, const void *msg);
/* Lends t->a a scratch arena for messages that are emitted before
 * tx_scratch_end() frees it (the outbound part's bulk: clusters and their
 * endpoints, one service at a time). Only for TX_OUTBOUND translations,
 * where nothing reads emitted messages back. */
void tx_scratch_begin(tx_t *t);
void tx_scratch_end(tx_t *t);
/* Emits the clusters and endpoints of service s with DestinationRule dro as
 * another outbound part of this cache built them; false when none did. */
bool tx_shared_replay(tx_t *t, const reg_service_t *s, const cfg_object_t *dro);
/* Starts recording what tx_emit gets, for tx_shared_record(). */
void tx_record_begin(tx_t *t, tx_rec_t *rec);
/* Stops recording and keeps what service s with dro emitted in the cache. */
void tx_shared_record(tx_t *t, const reg_service_t *s, const cfg_object_t *dro);
/* True when a resource of this type and name has been emitted. */
bool tx_emitted(const tx_t *t, xds_type_t type, const char *name);

/* The value of key, or NULL. */
void *tx_map_get(const tx_map_t *m, const char *key);
/* The value slot of key, added (NULL) when missing; key is borrowed. */
void **tx_map_slot(tx_t *t, tx_map_t *m, const char *key);

/* ---- lookups shared by the builders (translate.c) ---- */

/* The DestinationRule that applies to host for this proxy, or NULL. */
const cfg_DestinationRule *tx_dr_for(tx_t *t, const char *host, const cfg_object_t **obj);
/* The subset of a DestinationRule, or NULL. */
const cfg_Subset *tx_dr_subset(const cfg_DestinationRule *dr, const char *name);
/* True when the proxy's workload labels match a STRMAP selector. */
bool tx_proxy_selected(tx_t *t, const cfg_map_t *selector);
/* Service visible to the proxy with this hostname, or NULL. */
const reg_service_t *tx_service(tx_t *t, const char *host);

/* The traffic policy effective for a service port and subset, Istio-merged:
 * top level, its port-level entry, the subset's, the subset's port-level. */
typedef struct tx_policy {
    const cfg_LoadBalancerSettings *lb;
    const cfg_ConnectionPoolSettings *pool;
    const cfg_OutlierDetection *outlier;
    const cfg_ClientTLSSettings *tls;
} tx_policy_t;
void tx_policy_for(const cfg_DestinationRule *dr, const cfg_Subset *subset, uint32_t port,
                   tx_policy_t *out);

/* ---- the shared outbound part (translate.c; used by push.c) ----
 *
 * Everything a sidecar receives except its inbound part (outbound clusters,
 * EDS, outbound routes, virtualOutbound and the per-port outbound listeners)
 * depends only on the config snapshot and registry, the trust domain and
 * root namespace, and of the proxy on its namespace, the Sidecar resource
 * that applies to it and which label selectors of the outbound rules
 * (DestinationRule workloadSelector, VirtualService sourceLabels) it matches.
 * A tx_shared_t holds, for one snapshot and registry, that part serialized
 * once per such key; tx_translate_shared() serializes only the proxy's own
 * part (inbound clusters, virtualInbound, anything using its IP, labels,
 * PeerAuthentication or AuthorizationPolicy) and merges both into a result
 * byte-identical to xds_translate(). Routers (gateways and their secrets) and
 * proxyless gRPC clients are translated whole, never shared.
 *
 * Ownership: the cache is reference-counted and thread-safe (the push's worker
 * threads share it; one builds a key while the others wanting it wait). The
 * ADS server (push.c) makes one per push generation (new snapshot and
 * registry) when a translation first needs it, lends a reference to each
 * translation job, and drops its own when the next generation starts, when a
 * push completes, or when nothing was translated for a while (the interned
 * sets then hold what the proxies got); the last reference frees it. A
 * result it returned keeps the shared part it borrows alive on its own
 * (xds_resources_unref frees it). */
typedef struct tx_shared tx_shared_t;

/* A cache for this snapshot and registry (borrowed: the caller keeps them
 * alive while the cache is in use) and input options. */
tx_shared_t *tx_shared_new(const xds_input_t *in);
tx_shared_t *tx_shared_ref(tx_shared_t *c);
void tx_shared_unref(tx_shared_t *c);
/* What xds_translate(in, proxy) returns, with the outbound part taken from
 * (or added to) the cache. in must be the cache's input (else, or with c NULL,
 * a full translation). */
xds_resources_t *tx_translate_shared(tx_shared_t *c, const xds_input_t *in,
                                     const xds_proxy_t *proxy);
/* Outbound parts built and reused so far. */
void tx_shared_stats(tx_shared_t *c, uint64_t *built, uint64_t *reused);

/* ---- builders ---- */

void tx_build_clusters(tx_t *t); /* translate_cluster.c: CDS + EDS */
void tx_build_routes(tx_t *t); /* translate_route.c: RDS */
void tx_build_listeners(tx_t *t); /* translate_listener.c: LDS (+ security) */
void tx_build_grpc(tx_t *t); /* translate_grpc.c: everything a proxyless gRPC client receives */

/* translate_cluster.c */
/* The proxy's locality: what its node sent, else its pod's in the registry,
 * else "". */
const char *tx_proxy_locality(const reg_t *reg, const xds_proxy_t *px);
/* Applies a DestinationRule's localityLbSetting to a load assignment for
 * the proxy's locality, as Istio does: `distribute` reweights (and drops)
 * locality groups; otherwise, when outlier detection is on (outlier), groups
 * get failover priorities (0 same region/zone/subzone, then same zone, same
 * region, the `failover` region, the rest), renumbered without gaps. */
void tx_apply_locality(tx_t *t, pb_cla_t *cla, const cfg_LocalityLoadBalancerSetting *s, bool outlier);
/* With failoverPriority, the label rank comes first: endpoints agreeing on
 * all N labels get the first priority, then N-1, ..., then the rest; the
 * locality order above applies within a rank only when `failover` is also
 * set (as Istio orders them). */
/* The endpoints of a cluster (ready ones unless include_not_ready), grouped by
 * locality, each group weighted by the sum of its endpoints' weights. With
 * pol's failoverPriority in force (tx_failover_priority), endpoints are also
 * grouped by how many of its labels they share with the proxy, the rank
 * kept in each group's priority for tx_apply_locality. */
pb_cla_t *tx_load_assignment(tx_t *t, const char *name, const reg_service_t *s, uint32_t port,
                             const cfg_Subset *subset, bool include_not_ready, const tx_policy_t *pol);
/* The localityLbSetting whose failoverPriority orders a cluster's endpoints
 * under pol (outlier detection on, locality load balancing not turned off,
 * no `distribute`), or NULL. */
const cfg_LocalityLoadBalancerSetting *tx_failover_priority(const tx_policy_t *pol);
/* The proxy's values of the failoverPriority labels of a DestinationRule
 * (every traffic policy in it), hashed into buf ("" when it has none): what
 * endpoint priorities for the proxy depend on besides its locality. */
void tx_failover_labels(const xds_proxy_t *px, const cfg_DestinationRule *dr, char *buf, size_t size);
/* Sets a cluster's outlier_detection (and panic threshold) from a DestinationRule. */
void tx_apply_outlier(tx_t *t, pb_cluster_t *c, const cfg_OutlierDetection *od);

/* translate_route.c */
/* The default outbound route of a cluster (no VirtualService). */
pb_route_t *tx_default_route(tx_t *t, const char *cluster, const char *operation, bool hash_lb);
/* The default route of a service port (no VirtualService), with the hash
 * policy of its DestinationRule's consistentHash load balancer. */
pb_route_t *tx_service_default_route(tx_t *t, const reg_service_t *s, uint32_t port,
                                     const char *operation);
/* The hash policy of a consistentHash load balancer, or NULL when it names none. */
Envoy__Config__Route__V3__RouteAction__HashPolicy *tx_hash_policy(tx_t *t,
                                                                  const cfg_ConsistentHashLB *ch);
/* The first mesh-bound VirtualService visible to the proxy whose hosts match host. */
const cfg_object_t *tx_vs_for_host(tx_t *t, const char *host);
/* Appends a mesh-bound VirtualService's routes for a port; returns routes added. */
size_t tx_vs_mesh_routes(tx_t *t, const cfg_object_t *vs, uint32_t port, const char *operation,
                         pb_route_t ***out, size_t *n);
/* Istio's virtual-host domains of a service port (FQDN, short forms, address; each also with ":PORT"). */
void tx_service_domains(tx_t *t, pb_vhost_t *vh, const reg_service_t *s, uint32_t port);
/* The RouteConfiguration of a gateway port (router proxies). */
pb_rc_t *tx_gateway_routes(tx_t *t, const char *name, uint32_t port,
                           const cfg_object_t *const *gws, size_t ngws,
                           const cfg_Server *const *servers, size_t nservers);

/* translate_authz.c */
typedef struct tx_authz {
    const cfg_object_t *pa_workload, *pa_ns, *pa_mesh; /* PeerAuthentications in effect */
    pb_rbac_t *http[3]; /* LOG, DENY, ALLOW (NULL when none) */
    pb_rbac_t *tcp[3];
} tx_authz_t;
/* The effective mTLS mode (cfg_MtlsMode_STRICT/PERMISSIVE/DISABLE) of a port. */
int tx_mtls_mode(tx_t *t, uint32_t port);
/* Compiles the AuthorizationPolicies of the proxy into RBAC filters. */
void tx_authz_build(tx_t *t, tx_authz_t *out);
/* Builds an UpstreamTlsContext transport socket for ISTIO_MUTUAL. */
pb_tsock_t *tx_istio_mutual_upstream(tx_t *t, const char *sni, const reg_service_t *svc,
                                     bool h2);
/* A DownstreamTlsContext transport socket using the workload certificate. */
pb_tsock_t *tx_istio_mutual_downstream(tx_t *t, bool http);

#endif
