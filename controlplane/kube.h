/*
 * kube: meshd's Kubernetes API client. It finds the cluster the way kubectl
 * does (explicit kubeconfig, $KUBECONFIG, ~/.kube/config, else in-cluster
 * service-account files), prepares libcurl handles for API requests (TLS,
 * client certificates, bearer token re-read when the token file rotates),
 * runs synchronous requests, discovers which API versions the server serves,
 * and performs the few writes meshd makes: ConfigMaps and Secrets it owns,
 * webhook caBundles, TokenReviews, and Lease-based leader election.
 *
 * Ownership: kube_client_t owns its credentials, discovery table and counters;
 * it is thread-safe (any thread may call kube_request, kube_prepare or the
 * writes at the same time). Callers own every kube_resp_t, kube_secret_t and
 * header list they are handed. The informers (LIST/WATCH) live in their own
 * part and use kube_prepare with curl multi.
 */
#ifndef MESH_KUBE_H
#define MESH_KUBE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <curl/curl.h>

struct json_object;

/* Return codes beyond 0 / -1. */
#define KUBE_ERR (-1)
#define KUBE_NOTFOUND (-2) /* the object does not exist (404) */
#define KUBE_EXISTS (-3)   /* create refused: AlreadyExists (409) */

/* Timeouts kube_prepare sets for non-watch requests (a watch overrides
 * CURLOPT_TIMEOUT_MS with 0 and sets its own low-speed limits). */
#define KUBE_CONNECT_TIMEOUT_MS 10000L
#define KUBE_REQUEST_TIMEOUT_MS 30000L

/* Environment variable naming the in-cluster service-account directory
 * (default /var/run/secrets/kubernetes.io/serviceaccount). */
#define KUBE_SA_DIR_ENV "MESH_SA_DIR"
#define KUBE_SA_DIR_DEFAULT "/var/run/secrets/kubernetes.io/serviceaccount"

typedef struct kube_client kube_client_t;

typedef struct kube_opts {
    const char *kubeconfig; /* a path, or NULL: $KUBECONFIG, ~/.kube/config, in-cluster */
    const char *context;    /* NULL: the kubeconfig's current-context */
} kube_opts_t;

typedef struct kube_resp {
    long status; /* HTTP status, 0 when the request never got an answer */
    char *body;  /* NUL-terminated response body (may be NULL when empty) */
    size_t len;
    char err[256]; /* transport failure when status is 0 */
} kube_resp_t;

/* Connecting */

/* Resolves the cluster and credentials and returns a client, or NULL with a
 * message in err ("kubeconfig /x: context \"y\" not found", ...). No request
 * is made. */
kube_client_t *kube_client_new(const kube_opts_t *o, char *err, size_t errlen);
void kube_client_free(kube_client_t *c);
/* The API server URL, e.g. "https://127.0.0.1:6443". */
const char *kube_client_server(const kube_client_t *c);
/* The in-cluster namespace, else the kubeconfig context's namespace, else "default". */
const char *kube_client_namespace(const kube_client_t *c);
/* Where the configuration came from: the kubeconfig path, or "in-cluster". */
const char *kube_client_source(const kube_client_t *c);

/* Requests */

/* Configures h for a request to path (which starts with '/', query included):
 * URL, method, TLS, client certificate, the current bearer token, Accept
 * JSON, User-Agent, connect and total timeouts (override them afterwards for
 * a watch). content_type may be NULL. Returns the header list, which must
 * outlive the transfer; free it with curl_slist_free_all(). NULL on error.
 * The handle refers to the client's TLS material: finish it before
 * kube_client_free. */
struct curl_slist *kube_prepare(kube_client_t *c, CURL *h, const char *method, const char *path,
                                const char *content_type);
/* Describes a failed transfer of a handle made by kube_prepare in words a user
 * can act on: "cannot connect to https://127.0.0.1:6443: Connection refused",
 * "TLS: certificate verify failed (...)". Returns buf. */
const char *kube_transport_error(kube_client_t *c, CURL *h, CURLcode rc, const char *errbuf,
                                 char *buf, size_t len);
/* A synchronous request; body and content_type may be NULL. Fills resp (free
 * with kube_resp_free) and returns 0 when an HTTP answer arrived (any
 * status), -1 with status 0 and resp->err on transport failure. */
int kube_request(kube_client_t *c, const char *method, const char *path, const char *body,
                 const char *content_type, kube_resp_t *resp);
void kube_resp_free(kube_resp_t *r);
/* A message a user can act on for a failed response: 401 "unauthorized: the
 * token was rejected", 403 "forbidden: cannot VERB RESOURCE in namespace NS:
 * <API message>", other statuses with the API's Status message. verb and
 * resource name what was attempted ("list", "configmaps"). Returns buf. */
const char *kube_status_message(const kube_resp_t *r, const char *verb, const char *resource,
                                char *buf, size_t len);

/* Discovery */

/* Reads /api, /apis and every group-version's resource list; may be called
 * again to see CRDs installed since. 0, or -1 when the server cannot be read. */
int kube_discover(kube_client_t *c);
/* The version to use for group/plural ("" or "core" for the core group):
 * GA over beta over alpha, higher numbers first. NULL when the server does
 * not serve it (or kube_discover never succeeded). The string lives as long
 * as the client. */
const char *kube_resource_version(kube_client_t *c, const char *group, const char *plural);
/* 1 when group/plural is namespaced, 0 when cluster-scoped, -1 when unknown. */
int kube_resource_namespaced(kube_client_t *c, const char *group, const char *plural);
/* Builds "/api/v1/namespaces/NS/PLURAL/NAME?QUERY" (core group) or
 * "/apis/G/V/...". ns, name and query may be NULL. 0, or -1 when buf is too small. */
int kube_path(kube_client_t *c, const char *group, const char *version, const char *plural,
              const char *ns, const char *name, const char *query, char *buf, size_t len);

/* Writes (optimistic concurrency; meshd changes only the keys it owns) */

/* Modifies an object in place: fn gets the parsed object and returns 0 to
 * write it back, 1 when nothing needs to change, -1 to give up (with a
 * reason in err). The PUT
 * carries the resourceVersion that was read; on 409 Conflict the object is
 * read again and fn runs again, a bounded number of times. 0, KUBE_NOTFOUND,
 * or -1 with err set. */
typedef int (*kube_mutate_fn)(void *ud, struct json_object *obj, char *err, size_t errlen);
int kube_update(kube_client_t *c, const char *path, const char *what, kube_mutate_fn fn, void *ud,
                char *err, size_t errlen);
/* Number of 409 Conflicts that writes of this client retried. */
unsigned long kube_client_conflicts(kube_client_t *c);

/* Creates or updates ConfigMap ns/name so that keys[i] = values[i]; other
 * data keys, labels and annotations are kept. labels: NULL-terminated
 * key, value, key, value ... list (may be NULL). 0 or -1 with err. */
int kube_configmap_apply(kube_client_t *c, const char *ns, const char *name,
                         const char *const *keys, const char *const *values, size_t n,
                         const char *const *labels, char *err, size_t errlen);

typedef struct kube_secret {
    char *type;
    size_t n;
    char **keys;
    unsigned char **values; /* decoded, each NUL-terminated for convenience */
    size_t *lens;
} kube_secret_t;

/* Reads Secret ns/name with its data decoded. 0, KUBE_NOTFOUND, or -1 with err. */
int kube_secret_get(kube_client_t *c, const char *ns, const char *name, kube_secret_t *out,
                    char *err, size_t errlen);
/* The decoded value of key (len may be NULL), or NULL. */
const unsigned char *kube_secret_value(const kube_secret_t *s, const char *key, size_t *len);
void kube_secret_free(kube_secret_t *s);
/* Creates Secret ns/name of the given type (NULL: Opaque) with keys[i] =
 * values[i] (lens NULL: strlen). Fails with KUBE_EXISTS when it exists. */
int kube_secret_create(kube_client_t *c, const char *ns, const char *name, const char *type,
                       const char *const *keys, const unsigned char *const *values,
                       const size_t *lens, size_t n, const char *const *labels, char *err,
                       size_t errlen);
/* Creates or updates: sets the given keys and labels, keeps the others. */
int kube_secret_apply(kube_client_t *c, const char *ns, const char *name, const char *type,
                      const char *const *keys, const unsigned char *const *values,
                      const size_t *lens, size_t n, const char *const *labels, char *err,
                      size_t errlen);

/* Sets clientConfig.caBundle of every webhook of the Mutating (kind
 * "mutating") or Validating ("validating") WebhookConfiguration name to
 * ca_pem. Uses admissionregistration v1 or v1beta1 as discovery says. */
int kube_webhook_patch_cabundle(kube_client_t *c, const char *kind, const char *name,
                                const char *ca_pem, char *err, size_t errlen);
/* Sets failurePolicy ("Fail" or "Ignore") on every webhook of the
 * ValidatingWebhookConfiguration name. */
int kube_webhook_set_failure_policy(kube_client_t *c, const char *name, const char *policy,
                                    char *err, size_t errlen);

#define KUBE_MAX_AUDIENCES 8

typedef struct kube_token_review {
    bool authenticated;
    char username[256]; /* system:serviceaccount:NS:SA */
    char uid[128];
    char ns[128]; /* parsed from a service-account username, else "" */
    char service_account[256];
    char audiences[KUBE_MAX_AUDIENCES][128];
    int naudiences;
    int64_t expiration; /* unix seconds from the token's exp claim, 0 when unknown */
    char error[256];    /* the API's reason when not authenticated, or the failure */
} kube_token_review_t;

/* Asks the API server whether token is valid for one of audiences
 * (NULL-terminated; NULL: the server's default). 0 when the review ran
 * (look at out->authenticated), -1 when it could not run (out->error). */
int kube_token_review(kube_client_t *c, const char *token, const char *const *audiences,
                      kube_token_review_t *out);

/* Leader election on a coordination.k8s.io/v1 Lease */

typedef struct kube_leader kube_leader_t;

typedef struct kube_leader_opts {
    const char *ns;
    const char *name;
    const char *identity;         /* unique per process, e.g. the pod name */
    int lease_duration_ms;        /* how long others wait after the last renewal (>= 1000) */
    int renew_deadline_ms;        /* the leader gives up when it cannot renew for this long */
    int retry_period_ms;          /* how often to try to acquire or renew */
    void (*on_started)(void *ud); /* became leader (called on the election thread) */
    void (*on_stopped)(void *ud); /* stopped leading (lost the lease or stopped) */
    void *ud;
} kube_leader_opts_t;

/* Starts campaigning on its own thread. NULL with err on bad options. */
kube_leader_t *kube_leader_start(kube_client_t *c, const kube_leader_opts_t *o, char *err,
                                 size_t errlen);
bool kube_leader_is_leader(kube_leader_t *l);
/* The current holder as last seen ("" when none); copies into buf. */
const char *kube_leader_holder(kube_leader_t *l, char *buf, size_t len);
/* Stops campaigning, releases the lease when held (on_stopped runs), frees l.
 * Never call it from on_started/on_stopped (they run on the thread it joins). */
void kube_leader_stop(kube_leader_t *l);

#endif
