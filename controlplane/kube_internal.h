/*
 * kube_internal: what the kube_*.c files share and nobody else sees — the
 * client structure, credential loading and small JSON / base64 helpers.
 */
#ifndef MESH_KUBE_INTERNAL_H
#define MESH_KUBE_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <sys/types.h>
#include <time.h>

#include <json-c/json.h>

#include "../common/log.h"
#include "kube.h"

#define KUBE_POOL_MAX 8
#define KUBE_WRITE_ATTEMPTS 8

typedef struct kube_api_resource {
    char *group; /* "" for the core group */
    char *plural;
    const char *version; /* interned in the client */
    int priority;        /* kube_version_priority of version */
    bool namespaced;
} kube_api_resource_t;

struct kube_client {
    char *server; /* without a trailing '/' */
    char *source; /* kubeconfig path or "in-cluster" */
    char *ns;
    char *tls_server_name;

    /* TLS material (PEM), NULL when absent */
    char *ca;
    size_t ca_len;
    char *cert;
    size_t cert_len;
    char *key;
    size_t key_len;
    bool insecure;

    /* credentials: a static token, a token file re-read when it changes,
     * or basic auth */
    pthread_mutex_t mu;
    char *token;
    char *token_file;
    time_t token_checked;
    dev_t token_dev;
    ino_t token_ino;
    struct timespec token_mtime;
    off_t token_size;
    char *basic; /* "user:password" */

    /* idle easy handles, kept for their connection caches */
    CURL *pool[KUBE_POOL_MAX];
    int npool;

    /* discovery */
    pthread_mutex_t dmu;
    bool discovered;
    kube_api_resource_t *res;
    size_t nres;
    char **versions; /* interned version strings, never freed before the client */
    size_t nversions;

    atomic_ulong conflicts;
};

/* kube_config.c: fills c from a kubeconfig or the in-cluster files. */
int kube_config_load(kube_client_t *c, const kube_opts_t *o, char *err, size_t errlen);
/* Re-reads the token file when it changed (at most once a second unless
 * force). Call with c->mu held. */
void kube_token_refresh_locked(kube_client_t *c, bool force);
/* Reads a whole file; NUL-terminated. NULL with errno set on failure. */
char *kube_read_file(const char *path, size_t *len);

/* json helpers */
const char *kube_json_str(struct json_object *o, const char *key);
struct json_object *kube_json_path(struct json_object *o, ...); /* NULL-terminated keys */
/* The object at key of o, created as an empty object when missing. */
struct json_object *kube_json_obj(struct json_object *o, const char *key);
/* Parses resp->body; NULL when it is not a JSON object. */
struct json_object *kube_resp_json(const kube_resp_t *r);
/* The plural resource and namespace in an API path (for messages). */
void kube_path_parts(const char *path, char *plural, size_t plen, char *ns, size_t nslen);
/* "verb resource ns/name: <status message>" into err. */
void kube_fail(const kube_resp_t *r, const char *verb, const char *path, char *err, size_t errlen);

#endif
