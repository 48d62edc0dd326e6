/*
 * proxy: meshproxy's data plane (the `meshproxy sidecar` / `meshproxy router`
 * engine).
 *
 * A px_server_t owns N worker threads, each with its own event loop, its own
 * listening sockets (SO_REUSEPORT), its own upstream connection pools and
 * load-balancer state; nothing is locked on the request path. Configuration
 * arrives as immutable, reference-counted snapshots (proxy/config_internal.h)
 * through px_server_apply(): every worker picks the new snapshot up between
 * events, opens the listeners it adds, stops accepting on the ones it
 * removes (taking what is already queued), and never drops an accepted
 * connection. HTTP/1.1, HTTP/2 (h2c with prior knowledge, h2 by ALPN; to
 * HTTP/1.1 or HTTP/2 upstreams, gRPC trailers passed through) and TCP
 * proxying, TLS on both sides.
 *
 * Resilience, as Envoy defines it: fault injection (per-route HTTPFault:
 * delay, abort), retries (RetryPolicy, jittered backoff, per-try timeout,
 * x-envoy-attempt-count), circuit breakers (per cluster, shared by the
 * workers), request mirroring (fire-and-forget "-shadow" copies) and outlier
 * detection (consecutive 5xx / gateway failures; an ejection ends at the
 * first pick after its time). Delays and backoffs are timers; nothing blocks
 * a worker. MESHPROXY_SEED in the environment makes random choices repeatable.
 *
 * Between requests a keep-alive connection moves to the newest snapshot if
 * its listener is still in it (route and cluster updates reach existing
 * connections); a connection whose listener was removed finishes its
 * request on the old snapshot and is closed.
 *
 * Private parts: http1.c (codec), h2.c (HTTP/2 codec on nghttp2), config.c (snapshots, router, load
 * balancers), bundle.c + pbjson.c (resources from proto3 JSON or YAML),
 * engine.c (workers, listeners, connections, metrics), xds_client.c (ADS),
 * admin.c (stats, readiness, admin endpoints); main.c is the binary.
 */
#ifndef MESH_PROXY_H
#define MESH_PROXY_H

#include <stddef.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct px_server px_server_t;
struct px_snapshot;

typedef struct px_options {
    int concurrency;          /* worker threads; <= 0: the CPUs available */
    uint64_t drain_ms;        /* on stop: how long in-flight requests may finish */
    uint64_t idle_timeout_ms; /* downstream connection idle timeout (0: 1 hour) */
    int access_log_fd;        /* where access log lines go; -1: none */
    bool access_log_json;     /* one JSON object per line (Istio's accessLogEncoding JSON) */
    bool no_splice;           /* bulk plaintext tunnels keep copying through buffers */
    const char *bind_override; /* if set, every listener binds this IP instead (tests) */
    bool router;               /* gateway: reporter "source" on every listener */
    const char *workload;      /* this proxy's workload and namespace (metric labels) */
    const char *workload_namespace;
    /* this workload's app and version (its app/version labels, or Istio's
     * canonical-name/-revision labels), for the *_app, *_version and
     * *_canonical_* metric labels; NULL: unknown */
    const char *app, *version;
    const char *spiffe;        /* this proxy's SPIFFE ID (metrics, x-forwarded-client-cert); NULL: unknown */
    /* Istio's peer metadata exchange over mTLS: this workload's node id and
     * metadata (base64 of a google.protobuf.Struct: NAME, NAMESPACE,
     * WORKLOAD_NAME, LABELS, ...) for x-envoy-peer-metadata-id and
     * x-envoy-peer-metadata; NULL: not exchanged */
    const char *peer_metadata_id, *peer_metadata;
    struct px_secrets *secrets; /* the TLS secrets store (proxy/tls_internal.h); NULL: the server makes one */
} px_options_t;

/* Creates the server and starts its workers (no listeners until a snapshot
 * is applied). NULL on failure with err set. */
px_server_t *px_server_new(const px_options_t *o, char *err, size_t errlen);
/* Hands a new snapshot to every worker (takes its own references; the caller
 * keeps its own). Returns 0, or -1 with err naming a listener that could not
 * be bound (the workers then keep serving the previous snapshot). */
int px_server_apply(px_server_t *s, struct px_snapshot *snap, char *err, size_t errlen);
/* Stops accepting, lets in-flight requests finish for up to drain_ms, then
 * stops the workers. Blocks until they have exited. */
void px_server_drain_and_stop(px_server_t *s);
void px_server_free(px_server_t *s);

/* The TLS secrets store the server reads (the options' or its own). */
struct px_secrets *px_server_secrets(px_server_t *s);

/* Counters summed over the workers. */
typedef struct px_counters {
    uint64_t downstream_cx_total, downstream_cx_active;
    uint64_t downstream_rq_total;
    uint64_t upstream_cx_total; /* upstream connections opened */
    uint64_t upstream_rq_total;
    uint64_t upstream_cx_reused; /* requests sent on a pooled connection */
    uint64_t rq_2xx, rq_3xx, rq_4xx, rq_5xx;
    uint64_t fault_abort, fault_delay; /* requests aborted / delayed by fault injection */
    uint64_t retry, retry_success, retry_exhausted; /* retries sent, succeeded, out of attempts */
    uint64_t cx_overflow;         /* requests that waited at max_connections */
    uint64_t rq_pending_overflow; /* requests answered 503 UO (max_pending_requests, max_requests) */
    uint64_t retry_overflow;      /* retries not sent (max_retries) */
    uint64_t shadow_sent, shadow_failed; /* mirrored requests sent / not delivered */
    uint64_t od_ejections, od_eject_5xx, od_eject_gw; /* outlier ejections: total, by cause */
    uint64_t od_overflow; /* ejections refused by max_ejection_percent */
    uint64_t ssl_handshake, ssl_fail; /* TLS handshakes completed / failed (both sides) */
    uint64_t rbac_allowed, rbac_denied, rbac_shadow_denied; /* authorization decisions */
    uint64_t no_filter_chain; /* connections closed because no filter chain matched */
    uint64_t tunnels_spliced; /* plaintext tunnels moved on by splice once bulk */
    uint64_t h2_streams_down, h2_streams_up; /* HTTP/2 streams from clients / to upstreams */
    uint64_t h2_rx_reset, h2_tx_reset;       /* RST_STREAM received / sent (both sides) */
    uint64_t h2_goaway_sent, h2_goaway_rx;   /* GOAWAY sent / received (both sides) */
} px_counters_t;
void px_server_counters(px_server_t *s, px_counters_t *out);

/* The snapshot the server serves new connections with (a new reference, or
 * NULL before the first apply). Any thread. */
struct px_snapshot *px_server_snapshot(px_server_t *s);

/* Istio's standard metrics, summed over the workers. */
#define PX_DUR_BUCKETS 19  /* istio_request_duration_milliseconds */
#define PX_SIZE_BUCKETS 8  /* istio_request_bytes / istio_response_bytes */
extern const double px_dur_bounds[PX_DUR_BUCKETS];
extern const double px_size_bounds[PX_SIZE_BUCKETS];

typedef struct px_metric {
    char *labels; /* reporter="source",source_workload="...",... */
    bool tcp;
    uint64_t requests;
    uint64_t dur[PX_DUR_BUCKETS + 1]; /* per bucket (last: +Inf), not cumulative */
    double dur_sum;
    uint64_t req_size[PX_SIZE_BUCKETS + 1], resp_size[PX_SIZE_BUCKETS + 1];
    uint64_t req_size_sum, resp_size_sum;
    uint64_t tcp_opened, tcp_closed, tcp_sent, tcp_received;
} px_metric_t;

/* Collects every worker's metrics (blocks up to ~1 s for the workers to
 * answer; call from a thread that is not a worker). *out is an array the
 * caller frees with px_metrics_free(). Returns the count. */
size_t px_server_metrics(px_server_t *s, px_metric_t **out);
void px_metrics_free(px_metric_t *m, size_t n);

#endif
