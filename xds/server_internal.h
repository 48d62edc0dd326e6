/*
 * Private to xds/server.c and xds/push.c: the ADS server's state.
 *
 * Everything here belongs to the loop thread; srv->mu (recursive) is held by
 * the loop thread while it changes streams, sets or counters and by the
 * debug handlers while they read them.
 */
#ifndef MESH_XDS_SERVER_INTERNAL_H
#define MESH_XDS_SERVER_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "../common/hmap.h"
#include "xds.h"
#include "xds_server.h"

/* An interned resource: one copy of identical bytes (same type, name and
 * hash) however many sets and proxies hold it. */
typedef struct xs_blob {
    xds_resource_t res; /* name and data live in this allocation */
    uint32_t refs;
    char *key;
} xs_blob_t;

/* An interned resource set: every resource of one type a proxy receives,
 * shared by every proxy whose set has the same hash. */
typedef struct xs_set {
    uint32_t refs;
    xds_type_t type;
    uint64_t hash;
    uint32_t n;
    const xds_resource_t **res; /* sorted by name; each the res of an xs_blob_t */
    char key[40];
} xs_set_t;

/* The sets of one translation, per generation, keyed by what translation
 * reads of a proxy (so replicas translate once). */
typedef struct xs_tcache {
    char *key;
    xs_set_t *sets[XDS_NTYPES];
    const xds_proxy_t *made_for; /* for the translations_shared counter */
} xs_tcache_t;

/* A cached state-of-the-world response (one push generation). */
typedef struct xs_resp {
    grpc_buf_t *buf;
    char version[20];
    char nonce[24];
    char key[32];
} xs_resp_t;

/* One type on one stream. */
typedef struct xs_watch {
    bool requested; /* the proxy asked for this type */
    bool wildcard;  /* every resource (LDS/CDS, or delta "*") */
    char **names;   /* named subscription, sorted, unique; interned (server.c):
                     * shared by equal subscriptions, never written */
    uint32_t nnames;
    bool sent;
    bool force; /* respond even when the content did not change */
    bool pending; /* a response is due once the queue drains */
    uint64_t sent_hash;
    char sent_version[20];
    char sent_nonce[24];
    char acked_version[20];
    char acked_nonce[24];
    char *nack; /* last NACK message, cleared by an ACK */
    hmap_t dsent; /* delta: name (malloc'd) -> resource hash (malloc'd uint64_t) */
} xs_watch_t;

struct xs_tjob;

typedef struct xs_stream {
    xds_server_t *srv;
    grpc_stream_t *gs;
    bool delta;
    xds_proxy_t *proxy; /* NULL until the first request */
    int64_t connected_at; /* wall clock, seconds */
    uint64_t gen; /* push generation of sets[] */
    xs_set_t *sets[XDS_NTYPES];
    xs_watch_t w[XDS_NTYPES];
    uint64_t conv_start; /* loop_clock_ms of the change being pushed, 0: none */
    long pq_index; /* slot in the push queue, -1 when not queued */
    bool waiting; /* for a translation job */
    struct xs_tjob *tjob; /* the job translating with this stream's proxy */
    struct xs_stream *next, *prev;
} xs_stream_t;

#define XS_NBUCKETS 9
/* How long the outbound parts of a generation are kept once nothing is being
 * translated (new proxies of the same generation reuse them meanwhile). */
#define XS_SHARED_IDLE_MS 2000
/* Encoded responses kept for sharing within one push generation. */
#define XS_RESP_CACHE_MAX (64u << 20)

typedef struct xs_hist {
    uint64_t counts[XS_NBUCKETS]; /* last bucket: +Inf */
    uint64_t count;
    double sum;
} xs_hist_t;

struct xds_server {
    loop_t *loop;
    grpc_server_t *grpc;
    cfg_store_t *store;
    xds_server_opts_t opts;
    pthread_mutex_t mu;

    xs_stream_t *streams;
    uint32_t nstreams;
    hmap_t sets;  /* key -> xs_set_t */
    hmap_t blobs; /* key -> xs_blob_t */
    hmap_t tcache; /* proxy key -> xs_tcache_t (current generation) */
    uint64_t blobs_bytes;
    hmap_t resps; /* key -> xs_resp_t (current generation) */
    size_t resps_bytes; /* their encoded size, bounded by XS_RESP_CACHE_MAX */
    cfg_snap_t *snap;
    reg_t *reg;
    uint64_t gen;
    /* The outbound parts of this generation's sidecars (translate_internal.h),
     * made on first use; dropped (jobs keep their references) when a new
     * generation starts, when a push completes, and when nothing has been
     * translated for XS_SHARED_IDLE_MS: the interned sets hold what proxies get. */
    struct tx_shared *shared;
    loop_timer_t *shared_idle;
    uint64_t nonce_seq;

    /* change notifications (store writer thread -> loop) */
    pthread_mutex_t nmu;
    bool posted;
    bool stopping;
    uint64_t n_first_ms; /* first change not yet seen by the loop */
    /* debounce (loop thread) */
    loop_timer_t *debounce;
    bool dirty;
    uint64_t first_change_ms;
    uint64_t last_change_ms;

    /* the push in progress */
    xs_stream_t **pq;
    size_t pqn, pqcap, pqpos;
    loop_timer_t *pushtimer;
    uint64_t push_change_ms;
    uint64_t push_started_ms;
    bool pushing;
    hmap_t tjobs; /* proxy key -> xs_tjob_t in flight */
    uint32_t njobs;
    bool stop_pending; /* xds_server_stop waits for the last job */

    xds_server_stats_t st;
    xs_hist_t convergence;
    xs_hist_t push_time;
};

/* push.c */
void xs_push_init(xds_server_t *srv);
void xs_push_fini(xds_server_t *srv);
bool xs_push_posted(xds_server_t *srv);
/* Brings st->sets up to the current generation (translating when needed). */
void xs_stream_refresh(xds_server_t *srv, xs_stream_t *st);
void xs_set_unref(xds_server_t *srv, xs_set_t *s);
/* Queues a stream for translation and a flush on a later loop round. */
void xs_push_enqueue(xds_server_t *srv, xs_stream_t *st);
/* True when the stream's sets are current, bringing them up to date when a
 * translation for an equal proxy is cached; false when one must be made
 * (the caller then queues the stream instead of translating inline). */
bool xs_stream_ready(xds_server_t *srv, xs_stream_t *st);
/* A closing stream hands its proxy to the job translating with it. */
void xs_tjob_detach(xds_server_t *srv, xs_stream_t *st);
/* Removes a closing stream from the push queue. */
void xs_push_forget(xds_server_t *srv, xs_stream_t *st);
void xs_hist_observe(xs_hist_t *h, const double *bounds, double v);
extern const double xs_convergence_bounds[XS_NBUCKETS - 1];
extern const double xs_push_time_bounds[XS_NBUCKETS - 1];

/* server.c */
/* Sends what each requested type of the stream is missing, in the order
 * CDS, EDS, LDS, RDS; stops (marking the rest pending) when the stream's
 * queue is over the limit. */
void xs_stream_flush(xds_server_t *srv, xs_stream_t *st);
const char *xs_type_short(xds_type_t t);

#endif
