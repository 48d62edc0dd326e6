/*
 * config: the proxy's compiled configuration (private to proxy/).
 *
 * A px_snapshot_t is built from a set of xDS resources (Listeners,
 * RouteConfigurations, Clusters, ClusterLoadAssignments as protobuf-c
 * messages) into plain structures the request path reads: route tables with
 * compiled regexes (PCRE2, with match limits), clusters with their healthy
 * endpoints and ring-hash rings. It is immutable and reference-counted: every
 * worker and connection holding it took a reference, and it is freed by the
 * last px_snapshot_unref(). All its memory lives in one arena (plus the PCRE2
 * codes, released with it).
 *
 * Building never half-applies: on any error it returns NULL with a message
 * naming the resource, the field and the reason (what a NACK carries), and the
 * caller keeps its previous snapshot.
 *
 * Load-balancer state (round-robin cursors, active request counts) is mutable
 * and per worker: px_lb_t, kept outside the snapshot.
 */
#ifndef MESH_PROXY_CONFIG_INTERNAL_H
#define MESH_PROXY_CONFIG_INTERNAL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <json-c/json.h>
#include <pcre2.h>
#include <protobuf-c/protobuf-c.h>

#include "../common/arena.h"
#include "http1_internal.h"

/* PCRE2 match limit per regex evaluation (a route regex cannot stall a worker). */
#define PX_REGEX_MATCH_LIMIT 10000u

typedef enum {
    PX_STR_EXACT,
    PX_STR_PREFIX,
    PX_STR_SUFFIX,
    PX_STR_CONTAINS,
    PX_STR_REGEX,
    PX_STR_PRESENT, /* header/query present (or absent when inverted) */
} px_str_kind_t;

typedef struct px_str_match {
    px_str_kind_t kind;
    const char *value;
    size_t value_len;
    bool ignore_case;
    pcre2_code *re;
} px_str_match_t;

/* Whether s (n bytes) satisfies m (PX_STR_PRESENT: always). Regexes are
 * evaluated as px_regex_eval does; "cannot tell" counts as no match. */
bool px_str_match(const px_str_match_t *m, const char *s, size_t n);

/* Who owns the regexes a compiler makes: keep_re(ud, code) takes the code
 * (even when it fails and returns -1). */
typedef int (*px_keep_re_fn)(void *ud, pcre2_code *re);

/* Compiles a regex with RE2's whole-value semantics (anchored at both ends,
 * UTF-8). 0, or -1 with the reason (pattern, offset, PCRE2's message) in why. */
int px_regex_compile(const char *pattern, bool caseless, px_keep_re_fn keep_re, void *ud, pcre2_code **out,
                     char *why, size_t whylen);
struct Envoy__Type__Matcher__V3__StringMatcher;
/* Compiles a StringMatcher (exact, prefix, suffix, contains, safe_regex;
 * ignore_case applies to all but safe_regex, as in Envoy). Strings from a.
 * 0, or -1 with the reason in why. */
int px_str_match_compile(arena_t *a, const struct Envoy__Type__Matcher__V3__StringMatcher *sm,
                         px_keep_re_fn keep_re, void *ud, px_str_match_t *m, char *why, size_t whylen);
/* Matches a compiled regex without allocating (PCRE2 works in a stack
 * buffer) and within PX_REGEX_MATCH_LIMIT: 1 match, 0 no match, -1 cannot
 * tell (a limit was hit, or the subject is not UTF-8). */
int px_regex_eval(const pcre2_code *re, const char *s, size_t n);

typedef struct px_header_match {
    const char *name; /* lower case; ":method", ":authority", ":path" are the pseudo-headers */
    px_str_match_t m;
    bool present; /* PX_STR_PRESENT: the wanted presence */
    bool invert;
} px_header_match_t;

typedef struct px_query_match {
    const char *name;
    px_str_match_t m; /* PX_STR_PRESENT: present_match */
} px_query_match_t;

typedef struct px_header_op {
    const char *name; /* lower case */
    const char *value;
    bool append; /* false: overwrite an existing value */
} px_header_op_t;

typedef struct px_header_ops {
    px_header_op_t *add;
    size_t nadd;
    const char **remove;
    size_t nremove;
} px_header_ops_t;

typedef enum { PX_PATH_PREFIX, PX_PATH_EXACT, PX_PATH_REGEX } px_path_kind_t;
typedef enum { PX_ACT_CLUSTER, PX_ACT_WEIGHTED, PX_ACT_REDIRECT, PX_ACT_DIRECT } px_action_kind_t;

typedef struct px_weighted {
    const char *cluster;
    uint32_t weight;
    px_header_ops_t req, resp;
} px_weighted_t;

/* Fault injection of a route (the envoy.filters.http.fault per-route config):
 * each fault applies to a request with probability ppm / 1e6. */
typedef struct px_fault {
    bool delay;
    uint64_t delay_ms;
    uint32_t delay_ppm;
    bool abort;
    int abort_http;  /* > 0: answer this status */
    int abort_grpc;  /* >= 0: answer a gRPC status (HTTP 200, grpc-status) */
    uint32_t abort_ppm;
} px_fault_t;

/* retry_on conditions (RetryPolicy.retry_on) */
enum {
    PX_RETRY_5XX = 1 << 0,
    PX_RETRY_GATEWAY = 1 << 1,     /* gateway-error: 502, 503, 504 */
    PX_RETRY_CONNECT = 1 << 2,     /* connect-failure (incl. connect timeout) */
    PX_RETRY_RESET = 1 << 3,       /* reset: disconnect / reset before the response head */
    PX_RETRY_REFUSED = 1 << 4,     /* refused-stream (HTTP/2 only: never seen on HTTP/1.1) */
    PX_RETRY_4XX = 1 << 5,         /* retriable-4xx: 409 */
    PX_RETRY_STATUS = 1 << 6,      /* retriable-status-codes */
    /* gRPC (the grpc-status of a trailers-only response) */
    PX_RETRY_GRPC_CANCELLED = 1 << 7, /* cancelled: 1 */
    PX_RETRY_GRPC_DEADLINE = 1 << 8,  /* deadline-exceeded: 4 */
    PX_RETRY_GRPC_EXHAUSTED = 1 << 9, /* resource-exhausted: 8 */
    PX_RETRY_GRPC_INTERNAL = 1 << 10, /* internal: 13 */
    PX_RETRY_GRPC_UNAVAILABLE = 1 << 11, /* unavailable: 14 */
};

/* A route's retry policy (the route's, else its virtual host's). */
typedef struct px_retry {
    bool set;
    uint32_t on; /* PX_RETRY_* */
    uint32_t num_retries;
    uint64_t per_try_timeout_ms; /* 0: none */
    uint64_t base_ms, max_ms;    /* backoff */
    uint32_t *codes;
    size_t ncodes;
    bool other_host; /* previous_hosts predicate: retry on another endpoint when possible */
    bool other_priority; /* previous_priorities: a retry avoids the priorities already tried */
    uint32_t host_attempts;
} px_retry_t;

/* Parses a retry_on list into PX_RETRY_* bits (unknown names are ignored). */
uint32_t px_retry_on_parse(const char *s);
/* Whether a response status is retriable under policy r. */
bool px_retry_status(const px_retry_t *r, int status);
/* Whether a gRPC status (grpc-status of a trailers-only answer) is. */
bool px_retry_grpc(const px_retry_t *r, int grpc_status);

/* A request mirror policy: a copy of ppm / 1e6 of the requests goes to
 * cluster, with "-shadow" appended to the host. */
typedef struct px_mirror {
    const char *cluster;
    uint32_t ppm;
} px_mirror_t;

/* A FractionalPercent as parts per million (numerator capped at the denominator). */
uint32_t px_fraction_ppm(uint32_t numerator, int denominator_type);

typedef enum { PX_HASH_NONE, PX_HASH_HEADER, PX_HASH_SOURCE_IP, PX_HASH_QUERY, PX_HASH_COOKIE } px_hash_kind_t;

typedef struct px_route {
    const char *name;
    px_path_kind_t path_kind;
    const char *path; /* prefix or exact */
    size_t path_len;
    pcre2_code *path_re;
    bool case_sensitive;
    px_header_match_t *headers;
    size_t nheaders;
    px_query_match_t *query;
    size_t nquery;

    px_action_kind_t action;
    const char *cluster; /* PX_ACT_CLUSTER */
    px_weighted_t *weighted;
    size_t nweighted;
    uint32_t total_weight;
    const char *prefix_rewrite; /* NULL: none */
    const char *host_rewrite;   /* NULL: none */
    uint64_t timeout_ms;        /* 0: none */
    px_hash_kind_t hash;
    const char *hash_name; /* header, query parameter or cookie name */
    /* PX_HASH_COOKIE: a client without the cookie gets one (Set-Cookie) when
     * cookie_ttl_s > 0, with this path */
    uint64_t cookie_ttl_s;
    const char *cookie_path;

    /* redirect */
    const char *redirect_host, *redirect_path, *redirect_prefix, *redirect_scheme;
    uint32_t redirect_port;
    int redirect_code;
    bool strip_query;
    /* direct response */
    int direct_status;
    const char *direct_body;
    size_t direct_body_len;

    px_header_ops_t req, resp;
    px_fault_t fault;
    px_retry_t retry;
    px_mirror_t *mirrors; /* request_mirror_policies */
    size_t nmirrors;
} px_route_t;

typedef struct px_vhost {
    const char *name;
    const char **domains; /* lower case */
    size_t ndomains;
    px_route_t *routes;
    size_t nroutes;
    px_header_ops_t req, resp;
    bool attempt_count; /* include_request_attempt_count: x-envoy-attempt-count upstream */
    bool require_tls;   /* require_tls ALL or EXTERNAL_ONLY: plaintext requests get a 301 to https */
} px_vhost_t;

typedef struct px_route_config {
    const char *name;
    px_vhost_t *vhosts;
    size_t nvhosts;
    px_header_ops_t req, resp;
} px_route_config_t;

typedef enum { PX_LB_ROUND_ROBIN, PX_LB_LEAST_REQUEST, PX_LB_RANDOM, PX_LB_RING_HASH,
               PX_LB_ORIGINAL_DST } px_lb_policy_t;

typedef struct px_endpoint {
    const char *address; /* "ip:port" */
    struct sockaddr_storage sa;
    socklen_t salen;
    uint32_t weight; /* endpoint weight x locality weight, >= 1 */
    uint32_t priority; /* the locality group's (failover order; 0 first) */
} px_endpoint_t;

typedef struct px_ring_entry {
    uint64_t hash;
    uint32_t endpoint;
} px_ring_entry_t;

/* The endpoints of one priority: endpoints[first .. first + n). */
typedef struct px_level {
    uint32_t priority;
    size_t first, n;
    uint64_t total_weight;
    px_ring_entry_t *ring; /* RING_HASH: this level's ring */
    size_t nring;
} px_level_t;

typedef struct px_cluster {
    const char *name;
    px_lb_policy_t lb;
    uint64_t connect_timeout_ms;
    bool eds;
    const char *eds_name; /* the ClusterLoadAssignment name it reads */
    px_endpoint_t *endpoints; /* healthy (or unknown-health) endpoints only, by priority */
    size_t nendpoints;
    uint64_t total_weight;
    px_level_t *levels; /* one per priority present, in order */
    size_t nlevels;
    /* circuit breakers (thresholds of priority DEFAULT; Envoy's defaults
     * 1024 / 1024 / 1024 / 3), enforced over all workers */
    uint32_t max_connections, max_pending, max_requests, max_retries;
    /* retry_budget (replaces max_retries when set): concurrent retries up to
     * budget_pct % of the requests in flight and pending, at least min_retries */
    bool retry_budget;
    double budget_pct;
    uint32_t min_retries;
    /* outlier detection (consecutive 5xx / gateway failures; Envoy's defaults) */
    bool outlier;
    uint32_t od_consecutive_5xx, od_consecutive_gw;   /* thresholds */
    uint32_t od_enforce_5xx, od_enforce_gw;           /* percent of ejections enforced */
    uint64_t od_interval_ms, od_base_ejection_ms, od_max_ejection_ms;
    uint32_t od_max_ejection_pct;
    double panic_pct; /* common_lb_config.healthy_panic_threshold (Envoy's default 50) */
    /* connection pool (HttpProtocolOptions.common_http_protocol_options,
     * upstream_connection_options): 0 = unset */
    uint32_t max_requests_per_conn;
    uint64_t idle_timeout_ms; /* an idle pooled connection is closed after this (Envoy: 1 h) */
    bool keepalive;           /* SO_KEEPALIVE on upstream connections */
    uint32_t ka_probes, ka_time_s, ka_interval_s;
    const struct px_tls_cfg *tls; /* upstream TLS (transport_socket); NULL: plaintext */
    /* the first service of Istio's cluster metadata (inbound clusters), for
     * the destination_service labels; NULL when absent */
    const char *svc_host, *svc_name, *svc_ns;
    bool bind; /* upstream_bind_config: connections bind this source address first */
    struct sockaddr_storage bind_sa;
    socklen_t bind_salen;
    /* upstream HTTP/2 (HttpProtocolOptions explicit http2_protocol_options,
     * or use_downstream_protocol_config: h2 when the request came over h2) */
    bool http2, http2_downstream;
    uint32_t h2_max_streams; /* the cluster's http2 max_concurrent_streams; 0: the peer's */
} px_cluster_t;

typedef enum { PX_LISTENER_HTTP, PX_LISTENER_TCP } px_listener_kind_t;

struct px_tls_cfg;
struct px_rbac;
struct px_snapshot;

/* The SDS names of the proxy's own certificate and of the mesh root (made by
 * the proxy from its CA client, never fetched). */
#define PX_SDS_DEFAULT "default"
#define PX_SDS_ROOTCA "ROOTCA"

/* A CidrRange: family AF_INET / AF_INET6, the address bytes, the prefix length. */
typedef struct px_cidr {
    int family;
    uint8_t addr[16];
    uint32_t len;
} px_cidr_t;

/* Whether a socket address lies in a CIDR range. */
bool px_cidr_contains(const px_cidr_t *c, const struct sockaddr *sa);

/* FilterChainMatch: every criterion set must hold (Envoy's order of
 * precedence picks the most specific chain, see px_chain_select). */
typedef struct px_chain_match {
    uint32_t dport; /* 0: any */
    px_cidr_t *prefixes; /* destination prefix_ranges */
    size_t nprefixes;
    px_cidr_t *src_prefixes; /* source_prefix_ranges */
    size_t nsrc_prefixes;
    const char **server_names; /* lower case; "*.example.com" wildcards */
    size_t nserver_names;
    const char *transport; /* NULL: any; "tls" or "raw_buffer" */
    const char **alpn; /* application_protocols */
    size_t nalpn;
} px_chain_match_t;

/* One filter chain: how a matched connection is served. */
typedef struct px_chain {
    const char *name;
    px_chain_match_t match;
    px_listener_kind_t kind;
    const char *stat_prefix;
    const char *rds_name;                 /* HTTP with RDS */
    const px_route_config_t *route_config; /* HTTP: inline or resolved RDS */
    const char *tcp_cluster;              /* TCP */
    const struct px_tls_cfg *tls;         /* downstream TLS; NULL: plaintext */
    /* RBAC filters in order: network filters (TCP and HTTP chains), then the
     * HTTP filters (HTTP chains only) */
    const struct px_rbac **net_rbac;
    size_t nnet_rbac;
    const struct px_rbac **http_rbac;
    size_t nhttp_rbac;
    int xfcc; /* HCM forward_client_cert_details (the enum's value) */
    uint32_t h2_max_streams; /* HCM http2_protocol_options.max_concurrent_streams; 0: 100 */
} px_chain_t;

typedef struct px_listener {
    const char *name;
    const char *address;
    uint32_t port;
    px_chain_t *chains;
    size_t nchains;
    const px_chain_t *default_chain; /* default_filter_chain, or NULL */
    bool bind;             /* bind_to_port (default true) */
    bool use_original_dst; /* hand captured connections to the listener of their original destination */
    bool original_dst;     /* the original_dst listener filter: the local address is SO_ORIGINAL_DST */
    bool tls_inspector;    /* peek the ClientHello (or some chain matches on TLS/SNI/ALPN) */
    bool http_inspector;   /* detect plaintext HTTP for application_protocols */
} px_listener_t;

/* What a filter chain is chosen by. */
typedef struct px_chain_input {
    const struct sockaddr *local;  /* destination address and port */
    const struct sockaddr *remote; /* source */
    const char *transport;         /* "tls" or "raw_buffer" */
    const char *sni;               /* "" or NULL: none */
    const char *const *alpn;       /* offered protocols */
    size_t nalpn;
} px_chain_input_t;

/* The filter chain Envoy would pick for a connection (destination port, then
 * destination IP, server name, transport protocol, application protocols,
 * source IP; at each step the most specific match, chains that do not set
 * the criterion as fallback), else the default chain, else NULL (the
 * connection is closed). */
const px_chain_t *px_chain_select(const px_listener_t *l, const px_chain_input_t *in);
/* The listener a captured connection with original destination dst belongs
 * to (exact address and port, else 0.0.0.0/[::] with the port), not the
 * capturing listener itself; NULL when none. */
const px_listener_t *px_listener_for_dst(const struct px_snapshot *s, const struct sockaddr *dst,
                                         const px_listener_t *self);

typedef struct px_snapshot {
    atomic_int _refs;
    arena_t *_arena;
    pcre2_code **_codes;
    size_t _ncodes, _capcodes;
    uint64_t generation;

    px_listener_t *listeners;
    size_t nlisteners;
    px_route_config_t *route_configs;
    size_t nroute_configs;
    px_cluster_t *clusters;
    size_t nclusters;
    /* the SDS secrets the config names that the proxy does not make itself
     * ("kubernetes://..."; not "default"/"ROOTCA"), for the xDS client */
    const char **sds_names;
    size_t nsds_names;
} px_snapshot_t;

/* The xDS resources a snapshot is built from (borrowed, not freed). */
typedef struct px_resources {
    const ProtobufCMessage *const *listeners; /* envoy.config.listener.v3.Listener */
    size_t nlisteners;
    const ProtobufCMessage *const *routes; /* RouteConfiguration */
    size_t nroutes;
    const ProtobufCMessage *const *clusters; /* Cluster */
    size_t nclusters;
    const ProtobufCMessage *const *endpoints; /* ClusterLoadAssignment */
    size_t nendpoints;
} px_resources_t;

/* Builds a snapshot. NULL on failure with err naming resource, field, reason. */
px_snapshot_t *px_snapshot_build(const px_resources_t *in, char *err, size_t errlen);
/* Takes / drops a reference (any thread). unref frees with the last one. */
px_snapshot_t *px_snapshot_ref(px_snapshot_t *s);
void px_snapshot_unref(px_snapshot_t *s);

const px_cluster_t *px_snapshot_cluster(const px_snapshot_t *s, const char *name);
const px_route_config_t *px_snapshot_route_config(const px_snapshot_t *s, const char *name);

/* The request as the router sees it. */
typedef struct px_route_req {
    const char *host; /* Host / :authority */
    size_t host_len;
    const char *method;
    size_t method_len;
    const char *path; /* the request target including the query */
    size_t path_len;
    const px_h1_header_t *headers;
    size_t nheaders;
} px_route_req_t;

/* Finds the virtual host and route for a request; NULL when nothing matches
 * (the proxy answers 404 with flag NR). *vh_out gets the virtual host. */
const px_route_t *px_route_match(const px_route_config_t *rc, const px_route_req_t *req,
                                 const px_vhost_t **vh_out);
/* The virtual host whose domains match host (Envoy's order: exact, longest
 * suffix wildcard, longest prefix wildcard, "*"), or NULL. */
const px_vhost_t *px_vhost_match(const px_route_config_t *rc, const char *host, size_t host_len);
/* The cluster of a weighted route for a random value r (any uint32). */
const char *px_route_pick_weighted(const px_route_t *rt, uint32_t r);

/* Per-worker load-balancer state of one cluster. */
typedef struct px_lb {
    uint64_t rr_next;
    uint32_t *active; /* outstanding requests per endpoint */
    size_t nactive;
    uint64_t rng;
} px_lb_t;

void px_lb_init(px_lb_t *lb, const px_cluster_t *c, uint64_t seed);
void px_lb_free(px_lb_t *lb);
/* The endpoint index for the next request, or -1 when the cluster has no
 * healthy endpoint (503, flag UH). `hash` is used by RING_HASH. Picks among
 * the first priority only. */
long px_lb_pick(px_lb_t *lb, const px_cluster_t *c, uint64_t hash);
/* Whether endpoint ei may take a request now (not ejected, not in a priority
 * a retry goes past); arg is the caller's. */
typedef bool (*px_lb_avail_fn)(void *arg, const px_cluster_t *c, size_t ei);
/* The endpoint for the next request across priorities, as Envoy spreads
 * load: each priority is as healthy as its share of available endpoints,
 * times the overprovisioning factor 1.4 (so 5 of 7 is still 100 %); the
 * first priority takes what its health allows, the next the rest, and so
 * on; when the sum stays under 100 % the shares are scaled up. Within the
 * chosen priority the cluster's policy picks, passing over unavailable
 * endpoints and, while another is available there, `avoid` (the host a
 * retry should not reuse; -1: none), which leaves the priorities' load as it
 * is. When fewer than panic_pct % of the endpoints are available, or
 * none is, the plain pick stands (Envoy's panic mode). -1 only when the
 * cluster has no endpoint. */
long px_lb_pick_avail(px_lb_t *lb, const px_cluster_t *c, uint64_t hash, px_lb_avail_fn avail, void *arg,
                      long avoid);
/* 64-bit hash (FNV-1a) of bytes, for ring hashing. */
uint64_t px_hash64(const void *p, size_t n);

/* proto3 JSON -> protobuf-c message (proxy/pbjson.c). NULL on error with err
 * naming the field path. Free with protobuf_c_message_free_unpacked(). */
ProtobufCMessage *px_pb_from_json(const ProtobufCMessageDescriptor *d, json_object *j, char *err,
                                  size_t errlen);

/* A set of xDS resources owned by the proxy (from a config file or the
 * xDS client): decoded protobuf-c messages by type. */
enum { PX_RES_LISTENER, PX_RES_ROUTE, PX_RES_CLUSTER, PX_RES_ENDPOINT, PX_RES_SECRET, PX_RES_NTYPES };


typedef struct px_bundle {
    ProtobufCMessage **msgs[PX_RES_NTYPES];
    size_t n[PX_RES_NTYPES], cap[PX_RES_NTYPES];
} px_bundle_t;

/* Adds the resources of a JSON (or YAML) document: an object with
 * "resources" (a DiscoveryResponse in proto3 JSON, each resource an Any with
 * "@type"), or an array of such objects. Returns 0, or -1 with err naming the resource index,
 * the field path and the reason (the bundle then holds what came before). */
int px_bundle_load_json(px_bundle_t *b, const char *text, size_t len, char *err, size_t errlen);
/* Adds one decoded message of type t; the bundle takes ownership. */
int px_bundle_add(px_bundle_t *b, int t, ProtobufCMessage *m);
/* A view of the bundle for px_snapshot_build() (valid while b is unchanged). */
void px_bundle_view(const px_bundle_t *b, px_resources_t *out);
void px_bundle_free(px_bundle_t *b);

struct px_secrets;
/* Installs the Secret resources of a bundle (envoy...tls.v3.Secret:
 * tls_certificate or validation_context, inline or file) into the store.
 * 0, or -1 with err naming the secret and field. */
int px_bundle_install_secrets(const px_bundle_t *b, struct px_secrets *store, char *err, size_t errlen);

#endif
