/*
 * xds: meshd's side of Envoy's v3 xDS API.
 *
 * Owns: the .proto subset under xds/proto (compiled by protoc-c into
 * build/gen), the translation of a config snapshot plus the service registry
 * into the resources one proxy receives (listeners, routes, clusters,
 * endpoints) with Istio's names, the parsing of the proxy's Node, and a
 * protobuf -> proto3 JSON printer (config dumps, golden tests).
 *
 * Translation is a pure function: xds_translate(input, proxy) reads the
 * snapshot and registry and returns an immutable, reference-counted
 * xds_resources_t. Resources are serialized protobuf (the bytes an Any's value
 * carries), sorted by name, each with a content hash, so the ADS server can
 * compare and share identical results between proxies. Any thread may hold
 * and read a result; xds_resources_ref/unref are atomic.
 *
 * A proxyless gRPC client (proxy->proxyless: node metadata GENERATOR=grpc or
 * a gRPC user agent) gets what gRPC's xDS client accepts instead of Envoy's
 * socket listeners: API listeners named "HOST:PORT" (the FQDN and the
 * Kubernetes short forms a client may dial as xds:///HOST:PORT), route
 * configurations "FQDN:PORT", EDS clusters and endpoints (translate_grpc.c).
 */
#ifndef MESH_XDS_H
#define MESH_XDS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#include "../config/config.h"
#include "../controlplane/registry.h"

/* ---- resource types ---- */

typedef enum {
    XDS_LISTENER = 0,
    XDS_ROUTE,
    XDS_CLUSTER,
    XDS_ENDPOINT,
    XDS_SECRET, /* SDS: gateway credentials (kubernetes://NAME), router proxies only */
    XDS_NTYPES
} xds_type_t;

#define XDS_TYPE_PREFIX "type.googleapis.com/"
#define XDS_LISTENER_TYPE "type.googleapis.com/envoy.config.listener.v3.Listener"
#define XDS_ROUTE_TYPE "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
#define XDS_CLUSTER_TYPE "type.googleapis.com/envoy.config.cluster.v3.Cluster"
#define XDS_ENDPOINT_TYPE "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
#define XDS_SECRET_TYPE "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"

/* Type URL of a resource type. */
const char *xds_type_url(xds_type_t t);
/* The type of a type URL, or -1 when meshd does not serve it. */
int xds_type_from_url(const char *url);

/* ---- the proxy ---- */

typedef enum { XDS_SIDECAR, XDS_ROUTER } xds_node_type_t;

typedef struct xds_proxy {
    xds_node_type_t type;
    const char *id; /* the Node id as sent */
    const char *ip; /* first IP of the id or INSTANCE_IPS */
    const char **ips; /* INSTANCE_IPS, at least ip */
    uint32_t nips;
    const char *pod_name; /* from the id ("POD.NS") or NAME */
    const char *namespace;
    const char *dns_domain; /* "NS.svc.cluster.local" */
    const char *service_account; /* SERVICE_ACCOUNT, "default" when unset */
    const char *cluster_id; /* CLUSTER_ID, "Kubernetes" when unset */
    const char *istio_version;
    const char *workload_name;
    reg_labels_t labels; /* LABELS */
    /* Node.locality as "region/zone/subzone" (empty parts dropped from the
     * end), "" when the node sent none: translation then uses the locality
     * the registry knows for the proxy's pod. */
    const char *locality;
    bool proxyless; /* gRPC client (GENERATOR=grpc or user agent grpc) */
    arena_t *_arena;
} xds_proxy_t;

struct Envoy__Config__Core__V3__Node;

/* Reads a Node as Istio's agents (and gRPC's xDS client) send it: id
 * "sidecar~IP~POD.NS~NS.svc.cluster.local" or "router~...", metadata keys
 * NAMESPACE, SERVICE_ACCOUNT, LABELS, INSTANCE_IPS, CLUSTER_ID,
 * ISTIO_VERSION, NAME, WORKLOAD_NAME, GENERATOR. Returns NULL with a reason in
 * err when the id cannot be read. Free with xds_proxy_free(). */
xds_proxy_t *xds_proxy_from_node(const struct Envoy__Config__Core__V3__Node *node, char *err,
                                 size_t errlen);
/* Builds a proxy directly (tests, local tools); labels may be NULL. */
xds_proxy_t *xds_proxy_new(xds_node_type_t type, const char *ip, const char *pod_name,
                           const char *ns, const char *service_account, const cfg_map_t *labels);
void xds_proxy_free(xds_proxy_t *p);

/* ---- translation ---- */

typedef struct xds_input {
    const cfg_snap_t *snap;
    const reg_t *reg;
    const char *trust_domain; /* NULL: "cluster.local" */
    const char *root_namespace; /* NULL: "istio-system" (mesh-wide policies) */
} xds_input_t;

typedef struct xds_resource {
    const char *name;
    const uint8_t *data; /* serialized resource */
    size_t len;
    uint64_t hash; /* FNV-1a 64 of data */
} xds_resource_t;

typedef struct xds_resources xds_resources_t;

/* Every resource the proxy receives, per type, sorted by name. Never NULL.
 * The result starts with one reference. */
xds_resources_t *xds_translate(const xds_input_t *in, const xds_proxy_t *proxy);
xds_resources_t *xds_resources_ref(xds_resources_t *r);
void xds_resources_unref(xds_resources_t *r);
/* The resources of a type (sorted by name); *n receives their count. */
const xds_resource_t *xds_resources_get(const xds_resources_t *r, xds_type_t t, uint32_t *n);
/* The resource of a type with this name, or NULL. */
const xds_resource_t *xds_resources_find(const xds_resources_t *r, xds_type_t t,
                                         const char *name);
/* Hash over every resource of a type (names and hashes); equal results of
 * two proxies have equal hashes. */
uint64_t xds_resources_hash(const xds_resources_t *r, xds_type_t t);
/* Human-readable warnings collected during translation (unknown hosts, ...). */
const char *const *xds_resources_warnings(const xds_resources_t *r, uint32_t *n);

/* ---- secrets (xds/translate_secret.c) ---- */

#define XDS_SDS_KUBERNETES_PREFIX "kubernetes://"
#define XDS_SDS_CA_SUFFIX "-cacert"

struct json_object;
/* Replaces private key material in the JSON of a Secret resource (as
 * xds_resource_to_json prints it) with "[redacted]", in place. */
void xds_secret_redact_json(struct json_object *secret);

/* ---- names (xds/names.c) ---- */

typedef enum { XDS_OUTBOUND, XDS_INBOUND } xds_direction_t;

/* "outbound|9080|v1|reviews.default.svc.cluster.local", "inbound|9080||".
 * Returns the length written (truncated to size). */
int xds_cluster_name(char *buf, size_t size, xds_direction_t dir, uint32_t port,
                     const char *subset, const char *host);
/* Parses a cluster name; fields point into buf (modified). 0 or -1. */
int xds_cluster_name_parse(char *buf, xds_direction_t *dir, uint32_t *port, const char **subset,
                           const char **host);
/* Istio's SNI for auto/ISTIO_MUTUAL: "outbound_.9080_.v1_.reviews.default.svc.cluster.local". */
int xds_sni(char *buf, size_t size, uint32_t port, const char *subset, const char *host);
/* "spiffe://TRUST_DOMAIN/ns/NS/sa/SA" */
int xds_spiffe_id(char *buf, size_t size, const char *trust_domain, const char *ns,
                  const char *sa);
/* Fully-qualified name of a host written in namespace ns: short names become
 * NAME.NS.svc.cluster.local; names with a dot or a wildcard stay. */
const char *xds_resolve_host(arena_t *a, const char *host, const char *ns);
/* True when host (may be a wildcard "*.foo.com" or "*") matches name. */
bool xds_host_match(const char *pattern, const char *name);

#define XDS_BLACKHOLE_CLUSTER "BlackHoleCluster"
#define XDS_PASSTHROUGH_CLUSTER "PassthroughCluster"
#define XDS_INBOUND_PASSTHROUGH_CLUSTER "InboundPassthroughCluster"
#define XDS_VIRTUAL_OUTBOUND "virtualOutbound"
#define XDS_VIRTUAL_INBOUND "virtualInbound"
#define XDS_OUTBOUND_PORT 15001
#define XDS_INBOUND_PORT 15006
#define XDS_SDS_DEFAULT "default"
#define XDS_SDS_ROOTCA "ROOTCA"

/* ---- protobuf JSON (xds/pbjson.c) ---- */

struct json_object;

/* The proto3 JSON mapping of a message: lowerCamel names, enums by name,
 * 64-bit integers as strings, bytes base64, Any expanded with "@type" when
 * its type is one of meshd's, Duration "1.5s", Struct/Value as JSON, wrappers
 * as their value. Returns a new json-c reference. */
struct json_object *xds_pb_to_json(const ProtobufCMessage *msg);
/* The same as an indented string (malloc'd, caller frees). */
char *xds_pb_to_json_string(const ProtobufCMessage *msg);
/* The descriptor of a message type URL ("type.googleapis.com/envoy...") among
 * the generated ones meshd knows, or NULL. */
const ProtobufCMessageDescriptor *xds_descriptor_for_type_url(const char *type_url);
/* A serialized resource of type t as proto3 JSON (new json-c reference), or
 * NULL when it does not parse. */
struct json_object *xds_resource_to_json(xds_type_t t, const xds_resource_t *res);

#endif
