/*
 * config: the mesh configuration model, its loader and its store.
 *
 * Owns: decoding YAML/JSON documents into typed, immutable, validated objects
 * (cfg_object_t, one arena each, reference-counted), the kinds table
 * (group, versions, plural, schema of each kind), the config store that holds
 * the current set of objects with change notifications, and the directory
 * source that feeds the store from files (local mode).
 *
 * Errors a user reads always name the document and the field:
 *   reviews.yaml:12: VirtualService default/reviews: spec.http[0].route[1].weight: must be >= 0
 */
#ifndef MESH_CONFIG_H
#define MESH_CONFIG_H

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>

#include "../common/arena.h"
#include "../common/doc.h"
#include "config_types.h"

/* ---- kinds ---- */

#define CFG_ALL_KINDS(X)                                                                           \
    X(VirtualService) X(DestinationRule) X(Gateway) X(ServiceEntry) X(Sidecar)                     \
    X(PeerAuthentication) X(AuthorizationPolicy) X(RequestAuthentication)                          \
    X(Namespace) X(Service) X(EndpointSlice) X(Endpoints) X(Pod) X(ServiceAccount) X(Secret)      \
    X(ConfigMap) X(MutatingWebhookConfiguration)

#define CFG_X_KIND_ENUM(K) CFG_##K,
typedef enum { CFG_KIND_NONE = 0, CFG_ALL_KINDS(CFG_X_KIND_ENUM) CFG_KIND_COUNT } cfg_kind_t;

typedef struct cfg_vctx cfg_vctx_t;

typedef struct cfg_kind_info {
    cfg_kind_t kind;
    const char *name; /* "VirtualService" */
    const char *group; /* "networking.istio.io"; "" for the core group */
    const char *plural; /* "virtualservices" */
    const char *const *versions; /* served versions, NULL-terminated */
    const char *storage_version;
    const char *const *short_names; /* NULL-terminated, may be NULL */
    bool namespaced;
    bool mesh; /* a kind of the mesh API: strict decoding, a CRD in crds/ */
    const cfg_desc_t *body; /* top-level fields besides apiVersion, kind, metadata */
    void (*validate)(cfg_vctx_t *v, const void *body);
    const char *doc;
} cfg_kind_info_t;

const cfg_kind_info_t *cfg_kind_info(cfg_kind_t k);
/* The kind named `kind` in group `group` (any version), or CFG_KIND_NONE. */
cfg_kind_t cfg_kind_find(const char *group, const char *kind);
/* The kind whose name is `name` ("VirtualService"), or CFG_KIND_NONE. */
cfg_kind_t cfg_kind_by_name(const char *name);

/* ---- objects ---- */

typedef struct cfg_object {
    cfg_kind_t kind;
    const char *api_version; /* as written: "networking.istio.io/v1alpha3" */
    const char *name;
    const char *namespace; /* "" for cluster-scoped kinds */
    const cfg_ObjectMeta *meta;
    const void *body; /* struct cfg_<Kind>Object */
    const char *file; /* source file, or NULL */
    uint32_t line; /* first line of the document in file */
    uint64_t version; /* store version that added it (0 outside a store) */
    arena_t *_arena;
    _Atomic uint32_t _refs;
} cfg_object_t;

#define CFG_BODY(o, K) ((const cfg_##K##Object *)(o)->body)

cfg_object_t *cfg_object_ref(cfg_object_t *o);
void cfg_object_unref(cfg_object_t *o);
/* Resident bytes held by the object (arena and header). */
size_t cfg_object_footprint(const cfg_object_t *o);

/* ---- diagnostics ---- */

#define CFG_MAX_ERRORS 32

/* What loading one document produced: its identity (when it could be read)
 * and formatted error and warning lines. */
typedef struct cfg_diag {
    cfg_kind_t kind;
    char kind_name[64];
    char namespace[254];
    char name[254];
    const char *file;
    uint32_t line;
    char *errors[CFG_MAX_ERRORS];
    uint16_t reason_at[CFG_MAX_ERRORS]; /* where the field path/reason starts in errors[i] */
    uint32_t nerrors;
    bool truncated;
    char *warnings[8];
    uint32_t nwarnings;
} cfg_diag_t;

void cfg_diag_init(cfg_diag_t *d, const char *file, uint32_t line);
void cfg_diag_clear(cfg_diag_t *d);
/* Adds an error line for the whole document (no field path). */
void cfg_diag_error(cfg_diag_t *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void cfg_diag_warn(cfg_diag_t *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ---- validation context (used by the decoder and every validator) ---- */

struct cfg_vctx {
    cfg_diag_t *diag;
    const cfg_object_t *obj; /* the object being checked */
    char path[512];
    size_t plen;
    uint32_t line; /* line of the message being checked, 0 if unknown */
};

/* Appends to the field path (".http[0]", ".route"); returns a mark for cfg_vpop. */
size_t cfg_vpush(cfg_vctx_t *v, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void cfg_vpop(cfg_vctx_t *v, size_t mark);
/* Error at the current path, or at path + "." + field when field is not NULL. */
void cfg_verr(cfg_vctx_t *v, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* A saved position: path length and the line errors point at. */
typedef struct cfg_vmark {
    size_t mark;
    uint32_t line;
} cfg_vmark_t;

/* Appends to the path and points errors at `line` (0 keeps the current
 * line); cfg_vleave() restores both. */
cfg_vmark_t cfg_venter(cfg_vctx_t *v, uint32_t line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void cfg_vleave(cfg_vctx_t *v, cfg_vmark_t m);

/* Warning at the current path (the document still loads). */
void cfg_vwarn(cfg_vctx_t *v, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* ---- loading ---- */

typedef struct cfg_load_opts {
    const char *file; /* for messages; NULL for "<stdin>" or API input */
    const char *default_namespace; /* for objects without one; "default" if NULL */
} cfg_load_opts_t;

/*
 * Called once per document. On success obj is a new reference owned by the
 * callee; on failure obj is NULL and diag has the errors. diag is valid only
 * during the call. Documents of kinds the mesh does not read come with obj
 * NULL, no errors and one warning.
 */
typedef void (*cfg_result_cb)(void *ud, cfg_object_t *obj, const cfg_diag_t *diag);

/* Decodes and validates every document of a YAML or JSON stream. Returns the
 * number of documents that failed. */
int cfg_load_buffer(const char *buf, size_t len, doc_format_t fmt, const cfg_load_opts_t *o,
                    cfg_result_cb cb, void *ud);
/* The same for a file (format by extension: .json is JSON). -1 if unreadable. */
int cfg_load_file(const char *path, const cfg_load_opts_t *o, cfg_result_cb cb, void *ud);
/* Decodes and validates one object from a document tree (API server input).
 * Returns NULL with diag filled on failure, or when the kind is not handled. */
cfg_object_t *cfg_object_decode(const doc_node_t *root, uint32_t line, const cfg_load_opts_t *o,
                                cfg_diag_t *diag);

/* ---- value parsers shared by the model and its users ---- */

/* Go-style duration: "5s", "0.1s", "100ms", "1h30m", "1.5us". Returns 0 or -1
 * with *err set. */
int cfg_parse_duration(const char *s, int64_t *ns, const char **err);
/* Formats a duration the way it would be written ("1.5s", "100ms", "1h0m0s" as Go does). */
void cfg_format_duration(int64_t ns, char *buf, size_t size);

/* ---- CustomResourceDefinitions (config/crd.c) ---- */

/* Writes the CRD of a mesh kind as YAML (apiextensions.k8s.io/v1, structural
 * OpenAPI v3 schema generated from the model, every served version).
 * Returns 0, or -1 if the kind is not a mesh kind or on a write error. */
int cfg_crd_write(FILE *out, cfg_kind_t kind);

#define CFG_NS_PER_MS 1000000LL
#define CFG_NS_PER_S 1000000000LL

#include "store.h"

/* ---- encoding back to JSON (config/encode.c) ---- */

struct json_object;

/* The object as JSON: apiVersion, kind, metadata (the modelled ObjectMeta
 * fields) and every present body field under its YAML name; durations as
 * Go-style strings, enums by name, free-form values as written. Decoding the
 * result gives an equal object. Returns a new json-c reference (json_object_put),
 * or NULL when o has no valid kind. */
struct json_object *cfg_object_to_json(const cfg_object_t *o);
/* The present fields of one message described by desc, as a JSON object. */
struct json_object *cfg_message_to_json(const cfg_desc_t *desc, const void *msg);
/* A document tree node as JSON (NULL for a null node). */
struct json_object *cfg_doc_to_json(const doc_node_t *n);

#endif
