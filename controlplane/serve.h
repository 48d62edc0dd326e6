/*
 * serve: what meshd serves besides the config cache, on one loop thread —
 * xDS over gRPC (plaintext 15010, TLS 15012), the CA's CreateCertificate
 * (15012), the injection and validation webhooks (HTTPS 15017), and the
 * monitoring page (15014 /metrics). main.c builds the store and its source,
 * then calls serve_start(); serve_stop() tears everything down in order.
 * Owns: the loop and its thread, the worker pool, the gRPC servers, the CA,
 * its serving certificate, the xDS servers and the webhook server.
 */
#ifndef MESH_SERVE_H
#define MESH_SERVE_H

#include <stdbool.h>

#include "../config/config.h"
#include "debug.h"

struct kube_client;

typedef struct serve_opts {
    cfg_store_t *store; /* the config cache (borrowed) */
    struct kube_client *kube; /* kube mode; NULL in local mode (borrowed) */
    debug_server_t *debug; /* /debug/syncz, /debug/config_dump go here; may be NULL */
    const char *ns; /* meshd's namespace */
    const char *trust_domain; /* NULL: cluster.local */
    /* listen addresses: "HOST:PORT", ":PORT", or "off" */
    const char *grpc_addr; /* xDS, plaintext */
    const char *secure_grpc_addr; /* xDS and CA, TLS with meshd's CA-issued certificate */
    const char *webhook_addr; /* /inject and /validate over HTTPS */
    const char *monitoring_addr; /* /metrics */
    /* CA */
    const char *cacerts_dir; /* local mode plug-in CA */
    const char *ca_root_file; /* local mode self-signed root */
    bool ca_ecdsa; /* self-signed root key type */
    const char *jwt_key_file; /* local mode: keys that sign workload tokens */
    const char *jwt_issuer;
    /* webhooks */
    const char *injector_config; /* values file (local mode); kube mode reads the ConfigMap */
    const char *mutating_name; /* registration names (kube mode) */
    const char *validating_name;
    unsigned debounce_ms; /* xDS push debounce; 0: 100 */
    bool best_effort; /* a listener that cannot bind is logged and left off (local-mode defaults) */
} serve_opts_t;

typedef struct serve serve_t;

/* Starts everything that is not "off" and the loop thread. NULL with err
 * when a part cannot start (an address in use, a broken root of trust). */
serve_t *serve_start(const serve_opts_t *o, char *err, size_t errlen);
/* Ports actually bound (0 when off): for logs and tests. */
typedef struct serve_ports {
    int grpc, secure_grpc, webhook, monitoring;
} serve_ports_t;
void serve_ports(const serve_t *s, serve_ports_t *out);
/* Whether every xDS server serves a config built from store version
 * `version` or later (proxies that connect now get that config). */
bool serve_xds_at(serve_t *s, uint64_t version);
/* Stops serving and frees everything. NULL is ignored. */
void serve_stop(serve_t *s);

#endif
