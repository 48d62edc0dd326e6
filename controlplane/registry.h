/*
 * registry: the mesh's service registry, computed from one config snapshot.
 *
 * reg_build() is a pure function of a cfg_snap_t: it turns Kubernetes
 * Services (hostname NAME.NS.svc.cluster.local), their EndpointSlices (v1 and
 * v1beta1 shapes) or legacy Endpoints, the Pods behind them (labels, service
 * account, sidecar, locality) and ServiceEntries (hosts, ports, resolution,
 * inline endpoints or workloadSelector) into services, ports and endpoints,
 * with their namespace visibility (exportTo).
 *
 * Ownership: a reg_t is immutable once built and reference-counted; every
 * string and array it hands out lives as long as the registry (one arena).
 * reg_ref/reg_unref are atomic, so any thread may hold and read a registry.
 * The registry does not keep the snapshot alive.
 */
#ifndef MESH_REGISTRY_H
#define MESH_REGISTRY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../config/config.h"

#define REG_DOMAIN_SUFFIX "cluster.local"

/* Application protocol of a port, as Istio decides it. */
typedef enum {
    REG_PROTO_UNKNOWN = 0, /* not declared: sniffed by the proxy */
    REG_PROTO_HTTP,
    REG_PROTO_HTTP2,
    REG_PROTO_GRPC,
    REG_PROTO_GRPC_WEB,
    REG_PROTO_HTTPS,
    REG_PROTO_TCP,
    REG_PROTO_TLS,
    REG_PROTO_MONGO,
    REG_PROTO_REDIS,
    REG_PROTO_MYSQL,
    REG_PROTO_UDP,
} reg_protocol_t;

/* Protocol from a declared name ("HTTP", "grpc-web", "TCP"...), case-insensitive;
 * REG_PROTO_UNKNOWN when not recognised. */
reg_protocol_t reg_protocol_parse(const char *s);
/* Protocol of a Kubernetes service port: appProtocol, else the port name
 * prefix before '-' ("http-api" -> HTTP), UDP for protocol UDP. */
reg_protocol_t reg_protocol_infer(const char *name, const char *app_protocol,
                                  const char *l4_protocol);
/* "HTTP", "HTTP2", "GRPC", "TCP"... ("UnsupportedProtocol" for UNKNOWN). */
const char *reg_protocol_name(reg_protocol_t p);
/* HTTP-family protocols (HTTP, HTTP2, GRPC, GRPC-Web). */
bool reg_protocol_is_http(reg_protocol_t p);
/* Protocols routed as opaque TCP (TCP, TLS, HTTPS, Mongo, Redis, MySQL). */
bool reg_protocol_is_tcp(reg_protocol_t p);

typedef struct reg_label {
    const char *key;
    const char *value;
} reg_label_t;

/* Sorted by key, unique keys. */
typedef struct reg_labels {
    const reg_label_t *v;
    uint32_t n;
} reg_labels_t;

/* The value of key, or NULL. */
const char *reg_labels_get(const reg_labels_t *l, const char *key);
/* True when every entry of selector is in labels (an empty selector matches). */
bool reg_labels_match(const reg_labels_t *labels, const reg_labels_t *selector);
/* Same test against a config STRMAP selector. */
bool reg_labels_match_map(const reg_labels_t *labels, const cfg_map_t *selector);

typedef struct reg_port {
    const char *name; /* may be "" */
    uint32_t port; /* service port */
    uint32_t target_port; /* numeric target port, 0 when named or unknown */
    const char *target_port_name; /* named targetPort, or NULL */
    reg_protocol_t protocol;
} reg_port_t;

/* A workload (Pod or WorkloadEntry-like endpoint) known to the registry. */
typedef struct reg_workload {
    const char *name;
    const char *namespace;
    const char *ip;
    reg_labels_t labels;
    const char *service_account; /* short name, "default" when unset */
    const char *locality; /* "region/zone/subzone", "" when unknown */
    bool has_sidecar; /* sidecar.istio.io/status or security.istio.io/tlsMode=istio */
    const cfg_PodObject *pod; /* NULL for ServiceEntry endpoints */
} reg_workload_t;

/* One address:port behind one service port. */
typedef struct reg_endpoint {
    const char *address;
    uint32_t port; /* port on the endpoint */
    const char *service_port_name;
    uint32_t service_port;
    reg_labels_t labels;
    const char *namespace;
    const char *service_account;
    const char *locality;
    bool has_sidecar;
    bool ready;
    uint32_t weight; /* 0 = unset (1) */
    const reg_workload_t *workload; /* may be NULL */
} reg_endpoint_t;

typedef enum {
    REG_RES_CLIENT_SIDE_LB = 0, /* endpoints are known (EDS) */
    REG_RES_DNS, /* hostnames resolved by the proxy */
    REG_RES_DNS_ROUND_ROBIN,
    REG_RES_PASSTHROUGH, /* original destination */
} reg_resolution_t;

typedef enum { REG_SRC_KUBERNETES, REG_SRC_SERVICE_ENTRY } reg_source_t;

typedef struct reg_service {
    const char *hostname; /* "reviews.default.svc.cluster.local" or the SE host */
    const char *name; /* Service or ServiceEntry name */
    const char *namespace;
    const char *address; /* cluster IP / first SE address, "0.0.0.0" when none */
    reg_source_t source;
    reg_resolution_t resolution;
    bool mesh_external;
    bool headless;
    const reg_port_t *ports;
    uint32_t nports;
    const reg_endpoint_t *endpoints; /* sorted by service port, then address */
    uint32_t nendpoints;
    const char *const *export_to; /* NULL-terminated; NULL = everywhere */
    reg_labels_t selector; /* pod selector / workloadSelector; n = 0 when none */
    const char *external_name; /* ExternalName services, else NULL */
    const cfg_object_t *obj; /* the Service or ServiceEntry (valid with the snapshot) */
} reg_service_t;

typedef struct reg reg_t;

/* Builds the registry of a snapshot. Never fails (bad objects are skipped
 * with a debug log). The result starts with one reference. */
reg_t *reg_build(const cfg_snap_t *snap);
reg_t *reg_ref(reg_t *r);
void reg_unref(reg_t *r);

/* Every service, sorted by hostname then namespace. */
const reg_service_t *const *reg_services(const reg_t *r, uint32_t *n);
/* The service with this hostname that namespace `from_ns` may see (its own
 * namespace first, then others, as Istio prefers), or NULL. from_ns NULL
 * ignores visibility. */
const reg_service_t *reg_lookup(const reg_t *r, const char *hostname, const char *from_ns);
/* The Kubernetes Service `name` of namespace `ns`, or NULL. */
const reg_service_t *reg_lookup_short(const reg_t *r, const char *ns, const char *name);
/* The port of a service with that number, or NULL. */
const reg_port_t *reg_service_port(const reg_service_t *s, uint32_t port);
/* True when namespace ns may see the service (exportTo). */
bool reg_visible(const reg_service_t *s, const char *ns);
/* exportTo semantics shared by every mesh object: list NULL/empty = visible;
 * "*" all; "." the object's own namespace; "~" none; else namespace names. */
bool reg_export_visible(const char *const *list, uint32_t n, const char *obj_ns,
                        const char *ns);

/* The workload with this IP, or NULL. */
const reg_workload_t *reg_workload_by_ip(const reg_t *r, const char *ip);
/* The pod NAME of namespace NS, or NULL. */
const reg_workload_t *reg_workload_by_name(const reg_t *r, const char *ns, const char *name);

/* A service port served by a workload, for inbound configuration. */
typedef struct reg_target {
    const reg_service_t *service;
    const reg_port_t *port;
    uint32_t target_port; /* the port the application listens on */
} reg_target_t;

/* The service ports whose backends include a workload (namespace ns, labels,
 * ip): selector match for Services and workloadSelector ServiceEntries, or an
 * endpoint with that address. Writes at most max; returns the total found,
 * sorted by target port then hostname. */
uint32_t reg_targets(const reg_t *r, const char *ns, const reg_labels_t *labels, const char *ip,
                     reg_target_t *out, uint32_t max);

/* Namespace labels (for Sidecar/namespace selection); NULL when unknown. */
const reg_labels_t *reg_namespace_labels(const reg_t *r, const char *ns);

/* ---- Secrets (gateway credentials, read from the snapshot) ---- */

/* The Secret ns/name of a snapshot, or NULL. Borrowed from the snapshot. */
const cfg_object_t *reg_secret_get(const cfg_snap_t *snap, const char *ns, const char *name);
/* The value of key in a Secret: stringData as written (the API server merges
 * it over data), else data decoded from base64. Returns a malloc'd buffer
 * with a NUL after its *len bytes (release with reg_secret_value_free, which
 * wipes it), or NULL when the key is absent or (with *bad set) its data
 * value is not base64. bad may be NULL. */
unsigned char *reg_secret_value(const cfg_object_t *secret, const char *key, size_t *len,
                                bool *bad);
/* Wipes and frees a value of reg_secret_value(). NULL is ignored. */
void reg_secret_value_free(unsigned char *v, size_t len);

#endif
