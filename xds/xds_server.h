/*
 * xds_server: meshd's Aggregated Discovery Service, the part of xds that
 * streams config to proxies.
 *
 * It serves envoy.service.discovery.v3.AggregatedDiscoveryService
 * (StreamAggregatedResources, state of the world, and
 * DeltaAggregatedResources, incremental) on a grpc server that meshd owns
 * and hands in (15010 plaintext, 15012 TLS). Each stream's first request
 * carries the proxy's Node; xds_translate() turns the current config
 * snapshot and registry into that proxy's resources.
 *
 * Pushing (xds/push.c): the server subscribes to the config store; changes
 * are debounced (100 ms quiet, 10 s at most), then the registry is rebuilt
 * once and every connected proxy's resources are recomputed; only the types
 * whose content changed are sent, in the order CDS, EDS, LDS, RDS. Identical
 * resource sets of different proxies are kept once, and identical
 * state-of-the-world responses are encoded once and queued on every stream
 * as one shared grpc_buf_t. A stream whose send queue is above a limit gets
 * its next response only once it drained.
 *
 * Proxies that translation cannot tell apart (same type, namespace, labels,
 * service account and served ports) share one translation per push.
 *
 * Ownership and threads: the server, its streams and its caches belong to
 * the loop thread; translations run on opts.workq when given (else on the
 * loop, one stream per slice so I/O is served between them); the debug and
 * metrics handlers run on the debug servers' threads and read a state
 * guarded by one mutex.
 */
#ifndef MESH_XDS_SERVER_H
#define MESH_XDS_SERVER_H

#include <stddef.h>
#include <stdint.h>

#include "../common/grpc.h"
#include "../common/loop.h"
#include "../common/workq.h"
#include "../config/config.h"
#include "../controlplane/debug.h"
#include "xds.h"

#define XDS_ADS_SOTW_PATH "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"
#define XDS_ADS_DELTA_PATH "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources"

typedef struct xds_server xds_server_t;

typedef struct xds_server_opts {
    uint32_t debounce_ms;     /* quiet time after a change; 0: 100 */
    uint32_t debounce_max_ms; /* longest delay of a push under steady changes; 0: 10000 */
    size_t max_queued;        /* no new response while a stream has this many bytes queued; 0: 1 MiB */
    uint32_t push_batch;      /* streams recomputed per loop round during a push; 0: 64 */
    const char *trust_domain;   /* NULL: "cluster.local" */
    const char *root_namespace; /* NULL: "istio-system" */
    /* Translations run on this pool (borrowed; it must outlive the server
     * and its last jobs' completions); NULL: on the loop thread, one per
     * loop round. */
    workq_t *workq;
} xds_server_opts_t;

/* Counters, for tests and benchmarks (loop thread or any thread: a copy taken
 * under the server's lock). */
typedef struct xds_server_stats {
    uint64_t connected;         /* open ADS streams with a valid node */
    uint64_t pushes[XDS_NTYPES];  /* responses sent, by xds_type_t */
    uint64_t rejects[XDS_NTYPES]; /* NACKs received, by xds_type_t */
    uint64_t push_rounds;       /* debounced pushes run */
    uint64_t responses_encoded; /* state-of-the-world responses encoded */
    uint64_t responses_shared;  /* ... and sent again from the cache without encoding */
    uint64_t sets_interned;     /* distinct resource sets currently held */
    uint64_t translations;      /* xds_translate calls */
    uint64_t translations_shared; /* proxies served a translation made for another proxy */
    uint64_t resources_interned;  /* distinct resources currently held */
    uint64_t resources_bytes;     /* their serialized size */
} xds_server_stats_t;

/* Registers the ADS methods on grpc and subscribes to the store. Loop thread,
 * before or while the loop runs. opts may be NULL. NULL when a method is
 * already registered on grpc. */
xds_server_t *xds_server_start(loop_t *loop, grpc_server_t *grpc, cfg_store_t *store,
                               const xds_server_opts_t *opts);
/* Adds /debug/syncz (JSON: per proxy, per type sent/acked version and nonce,
 * NACK error) and /debug/config_dump?proxyID=ID to a debug server. */
void xds_server_add_debug(xds_server_t *srv, debug_server_t *dbg);
/* Adds /metrics (Prometheus text: pilot_xds, pilot_xds_pushes,
 * pilot_total_xds_rejects, pilot_proxy_convergence_time, pilot_xds_push_time). */
void xds_server_add_metrics(xds_server_t *srv, debug_server_t *metrics);
/* The same metrics text, appended to a malloc'd buffer (*buf, *len; *buf may
 * start NULL) for a caller that serves several parts' metrics on one page. */
void xds_server_metrics_text(xds_server_t *srv, char **buf, size_t *len);
/* Copies the counters. */
void xds_server_stats(xds_server_t *srv, xds_server_stats_t *st);
/* The config store version the server's current push generation was built
 * from (new proxies get that). Any thread. */
uint64_t xds_server_store_version(xds_server_t *srv);
/* Pushes now to every proxy (as if a change had just been debounced). Loop
 * thread. */
void xds_server_push_all(xds_server_t *srv);
/* Unsubscribes from the store and frees the server. Loop thread, after
 * grpc_server_free() closed its streams, with no store write in progress. */
void xds_server_stop(xds_server_t *srv);

#endif
