/*
 * xds_client: the proxy's ADS client (private to proxy/; see xds_client.c).
 * It owns a thread with its own loop, the accepted xDS resources and the
 * subscriptions; it hands warm snapshots to the engine with
 * px_server_apply().
 */
#ifndef MESH_PROXY_XDS_CLIENT_INTERNAL_H
#define MESH_PROXY_XDS_CLIENT_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

#include "proxy.h"

typedef struct px_xds px_xds_t;

/* Who the proxy is, as the control plane sees it (strings borrowed for the
 * client's lifetime). */
typedef struct px_xds_opts {
    const char *addr; /* "127.0.0.1:15010" */
    bool router;      /* node type router (gateway) instead of sidecar */
    const char *ip;   /* INSTANCE_IP */
    const char *pod;  /* POD_NAME */
    const char *ns;   /* POD_NAMESPACE */
    const char *service_account;
    const char *cluster_id;
    const char *workload; /* NULL: none */
    const char *labels;   /* "k=v,k2=v2" or NULL */
    /* TLS to the control plane (meshd's 15012): the mesh root to verify it
     * with, and the name its certificate must carry (NULL: the default
     * istiod.istio-system.svc). NULL root: plaintext (15010). */
    const char *tls_root_file;
    const char *tls_server_name;
} px_xds_opts_t;

/* Starts the client (connects in the background). NULL with err on failure. */
px_xds_t *px_xds_start(const px_xds_opts_t *o, px_server_t *srv, char *err, size_t errlen);
/* Stops and frees it (any thread but its own). */
void px_xds_stop(px_xds_t *x);
/* True once a first complete config was applied. Any thread. */
bool px_xds_ready(px_xds_t *x);

typedef struct px_xds_status {
    uint64_t acks, nacks, applies;
    char last_error[512]; /* the last NACK's reason ("" when none yet) */
} px_xds_status_t;
void px_xds_status(px_xds_t *x, px_xds_status_t *st);

/* Istio's peer metadata exchange: this proxy's node id and its metadata
 * (the Struct its Node carries, WORKLOAD_NAME included), base64-encoded, as
 * x-envoy-peer-metadata-id / x-envoy-peer-metadata carry them. malloc'd;
 * -1 on failure. */
int px_peer_metadata(const px_xds_opts_t *o, char **id, char **b64);

#endif
