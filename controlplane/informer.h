/*
 * informer: meshd's live cache of the cluster. For every kind meshd reads
 * (Namespaces, Services, EndpointSlices, Pods, ServiceAccounts, ConfigMaps,
 * Secrets, MutatingWebhookConfigurations and the mesh CRDs of the config
 * model) it LISTs the API server page by page, then WATCHes from the list's
 * resourceVersion, and keeps the config store equal to what the server holds:
 * every object is decoded with cfg_object_decode() (lenient for Kubernetes
 * kinds, strict and validated for mesh kinds); an invalid object is logged
 * with its error and skipped, its last good version staying in the store.
 *
 * A broken watch resumes from the last resourceVersion it saw; 410 Gone
 * relists and diffs against the store (adds, updates, and deletes of what
 * vanished while disconnected). Reconnects back off exponentially with
 * jitter; while the server is away the store keeps serving the last known
 * state. Kinds the server does not serve (a CRD not installed) are retried
 * with rediscovery until they appear. Versions (EndpointSlice v1 or v1beta1,
 * admissionregistration v1 ...) come from discovery.
 *
 * Threads and ownership: informer_start() runs every LIST and WATCH on ONE
 * thread of its own (libcurl multi), plus a helper thread that runs discovery
 * so that the loop never blocks on it. That thread is the store's writer:
 * store subscribers run on it. One informer per store, and nothing else may
 * write to that store while the informer runs. The informer borrows the
 * client and the store (both must outlive it); informer_stop() joins the
 * threads and leaves the objects in the store.
 */
#ifndef MESH_INFORMER_H
#define MESH_INFORMER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../config/config.h"
#include "kube.h"

typedef struct informer informer_t;

typedef struct informer_kind_opts {
    bool enabled;
    const char *label_selector; /* sent to the server (labelSelector=), or NULL */
    const char *field_selector; /* sent to the server (fieldSelector=), or NULL */
} informer_kind_opts_t;

typedef struct informer_opts {
    kube_client_t *client;
    cfg_store_t *store;
    informer_kind_opts_t kinds[CFG_KIND_COUNT]; /* indexed by cfg_kind_t */
    /* Keep only the Secrets meshd needs, filtered on the client because a
     * field selector cannot say "or": the names cacerts and istio-ca-secret
     * (the CA), type kubernetes.io/tls, and Opaque Secrets shaped like a
     * gateway credential (cert and key, tls.crt and tls.key, cacert or
     * ca.crt). Every other Secret is dropped before it is decoded. */
    bool secret_filter;
    int list_limit; /* objects per LIST page (500) */
    int watch_timeout_min_s, watch_timeout_max_s; /* timeoutSeconds of a watch, random in range (300..600) */
    int backoff_initial_ms, backoff_max_ms; /* reconnect delay: doubles from initial to max (100, 30000) */
    int absent_retry_ms; /* rediscovery of kinds the server does not serve (15000) */
    int log_interval_ms; /* at most one repeated failure line per kind per interval (30000) */
} informer_opts_t;

/* Defaults: every kind the brief of meshd reads (all kinds of the model but
 * the legacy Endpoints), the Secret filter on, the timings above. */
void informer_opts_default(informer_opts_t *o);

/* Starts the informer thread; it discovers, lists and watches on its own.
 * Returns NULL with err set on bad options or when a thread cannot start. */
informer_t *informer_start(const informer_opts_t *o, char *err, size_t errlen);
/* True once every enabled kind has completed its first LIST (a kind the
 * server does not serve counts once discovery has said so). Any thread. */
bool informer_synced(informer_t *inf);
/* Waits up to timeout_ms for informer_synced(); returns true when synced. */
bool informer_wait_synced(informer_t *inf, int timeout_ms);
/* Stops the threads, closes every watch and frees the informer. NULL is ignored. */
void informer_stop(informer_t *inf);

typedef struct informer_kind_stats {
    cfg_kind_t kind;
    char state[16]; /* "discovering", "absent", "listing", "watching", "backoff" */
    char version[32]; /* API version in use ("v1beta1"), "" until discovered */
    char resource_version[64]; /* last resourceVersion seen */
    bool synced;
    uint64_t objects; /* objects of the kind in the store now */
    uint64_t lists; /* LISTs completed (every page) */
    uint64_t relists; /* LISTs after the first: 410 Gone, a kind coming back */
    uint64_t watches; /* WATCH requests started */
    uint64_t watch_restarts; /* watches that ended early or broke, and were resumed */
    uint64_t events; /* watch events applied (bookmarks excluded) */
    uint64_t bookmarks;
    uint64_t invalid; /* objects rejected by the decoder or validator */
    uint64_t malformed; /* watch lines that were not events */
    uint64_t failures; /* failed requests (transport or HTTP status) */
    char last_error[512]; /* the latest failure or rejection, "" when none */
} informer_kind_stats_t;

/* Copies the statistics of every enabled kind into out (up to max entries);
 * returns how many were written. Any thread. */
size_t informer_stats(informer_t *inf, informer_kind_stats_t *out, size_t max);

/* ---- watch events (one line of a watch stream) ---- */

typedef enum {
    INFORMER_ADDED,
    INFORMER_MODIFIED,
    INFORMER_DELETED,
    INFORMER_BOOKMARK,
    INFORMER_ERROR
} informer_event_type_t;

typedef struct informer_event {
    informer_event_type_t type;
    char resource_version[64]; /* the object's (or bookmark's) resourceVersion */
    char ns[254]; /* the object's namespace ("" for cluster-scoped) */
    char name[254];
    cfg_object_t *obj; /* ADDED/MODIFIED: the decoded object (a reference), or NULL */
    bool filtered; /* ADDED/MODIFIED of an object the client-side filter leaves out */
    int code; /* ERROR: the Status code (410 for Gone) */
    char *error; /* ADDED/MODIFIED with obj NULL: the decoder's errors; ERROR: the message */
} informer_event_t;

/* Client-side filter: true to keep the object (its document tree). */
typedef bool (*informer_filter_fn)(const doc_node_t *obj);

/*
 * Decodes one line of a watch stream (a JSON object {"type": ..., "object":
 * {...}}) for kind, whose objects are served as api_version ("group/version"
 * or "v1"; used when an object lacks apiVersion/kind). keep may be NULL.
 * Returns 0 with ev filled (release with informer_event_clear), or -1 with
 * err set when the line is not a watch event. An object that fails to decode
 * or validate is still an event: obj NULL and error set.
 */
int informer_decode_event(const char *line, size_t len, cfg_kind_t kind, const char *api_version,
                          informer_filter_fn keep, informer_event_t *ev, char *err, size_t errlen);
void informer_event_clear(informer_event_t *ev);
/* The Secret filter of informer_opts_t.secret_filter. */
bool informer_secret_wanted(const doc_node_t *obj);

#endif
