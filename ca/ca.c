/*
 * ca: the CA object: where the root of trust comes from (plug-in directory
 * or Secret, persisted self-signed root), atomic bundle swaps on reload, the
 * background thread (source polling, root publication to namespaces) and the
 * signing entry points.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>
#include <openssl/crypto.h>

#include "../common/arena.h"
#include "../common/log.h"
#include "../controlplane/kube.h"
#include "ca_internal.h"

struct ca {
    char trust_domain[256];
    char ns[254];
    kube_client_t *kube;
    char *cacerts_dir;
    char *root_file;
    ca_key_type_t root_kt;
    int64_t root_ttl, max_ttl, default_ttl;
    int reload_ms;

    pthread_mutex_t mu; /* guards bundle and the work queue below */
    ca_bundle_t *bundle;

    /* background thread */
    pthread_t thr;
    bool thr_started;
    pthread_cond_t cv; /* work queued or stop */
    pthread_cond_t idle_cv; /* the thread went idle */
    bool stop, busy, want_reload, want_all;
    char **pending_ns;
    size_t npending, cap_pending;
    char last_reload_err[1024]; /* background thread only */

    _Atomic uint64_t csr_count, success, refused, errors, reloads, published;
};

static void ca_log_bundle(const char *what, const ca_bundle_t *b)
{
    char t[64] = "?";
    time_t na = (time_t)b->not_after;
    struct tm tm;
    if (gmtime_r(&na, &tm))
        strftime(t, sizeof t, "%Y-%m-%dT%H:%M:%SZ", &tm);
    log_info("ca: %s %s (%s key, valid until %s)", what, b->source, b->key_desc, t);
}

/* ---- sources ---- */

/* Loads a persisted self-signed root (certificate and key PEM in text). */
static ca_bundle_t *load_self_signed(const char *cert, const char *cert_name, const char *key, const char *key_name,
                                     const char *roots, const char *source, char *err, size_t errlen)
{
    ca_bundle_t *b = ca_bundle_from_pem(cert, cert_name, key, key_name, NULL, NULL, roots && *roots ? roots : cert,
                                        roots && *roots ? key_name : cert_name, err, errlen);
    if (b) {
        b->plugged = false;
        ca_set_source(b, source);
    }
    return b;
}

static int write_root_file(const char *path, const ca_bundle_t *b, bool exclusive, char *err, size_t errlen)
{
    char tmp[4200];
    char *key = ca_key_pem(b->key);
    int rc = -1, fd = -1;
    tmp[0] = 0;
    if (!key)
        return ca_err(err, errlen, "%s: cannot encode the key", path);
    snprintf(tmp, sizeof tmp, "%s.tmp.XXXXXX", path);
    fd = mkstemp(tmp); /* mode 0600 */
    if (fd < 0) {
        ca_err(err, errlen, "%s: cannot create: %s", tmp, strerror(errno));
        tmp[0] = 0;
        goto out;
    }
    size_t cl = strlen(b->cert_pem), kl = strlen(key);
    if (write(fd, b->cert_pem, cl) != (ssize_t)cl || write(fd, key, kl) != (ssize_t)kl || fsync(fd) != 0) {
        ca_err(err, errlen, "%s: cannot write: %s", tmp, strerror(errno));
        goto out;
    }
    close(fd);
    fd = -1;
    if (exclusive) {
        /* create-if-absent: link fails with EEXIST when another process won */
        if (link(tmp, path) != 0) {
            rc = errno == EEXIST ? 1 : ca_err(err, errlen, "%s: cannot create: %s", path, strerror(errno));
            goto out;
        }
    } else if (rename(tmp, path) != 0) {
        ca_err(err, errlen, "%s: cannot replace: %s", path, strerror(errno));
        goto out;
    }
    rc = 0;
out:
    if (fd >= 0)
        close(fd);
    if (tmp[0])
        unlink(tmp);
    ca_free_secret(key);
    return rc;
}

static ca_bundle_t *load_root_file(ca_t *ca, bool create, char *err, size_t errlen)
{
    char src[4200];
    snprintf(src, sizeof src, "self-signed root file %s", ca->root_file);
    for (int attempt = 0; attempt < 3; attempt++) {
        size_t len = 0;
        char *text = ca_read_file(ca->root_file, &len);
        if (text) {
            struct stat st;
            if (stat(ca->root_file, &st) == 0 && (st.st_mode & 077))
                log_warn("ca: %s is readable by group or others (mode %03o); it holds the CA key, use 0600",
                         ca->root_file, (unsigned)(st.st_mode & 0777));
            ca_bundle_t *b = load_self_signed(text, ca->root_file, text, ca->root_file, NULL, src, err, errlen);
            if (b)
                ca_digest(b->digest, text, NULL, NULL, NULL);
            OPENSSL_cleanse(text, len);
            free(text);
            return b;
        }
        if (errno != ENOENT) {
            ca_err(err, errlen, "%s: cannot read: %s", ca->root_file, strerror(errno));
            return NULL;
        }
        if (!create) {
            ca_err(err, errlen, "%s: does not exist", ca->root_file);
            return NULL;
        }
        ca_bundle_t *b = ca_bundle_self_signed(ca->trust_domain, ca->root_kt, ca->root_ttl, err, errlen);
        if (!b)
            return NULL;
        int w = write_root_file(ca->root_file, b, true, err, errlen);
        ca_bundle_release(b);
        if (w < 0)
            return NULL;
        if (w == 0)
            log_info("ca: generated a self-signed root (O=%s) in %s", ca->trust_domain, ca->root_file);
        /* read back what is on disk: ours, or the winner's */
    }
    ca_err(err, errlen, "%s: cannot be created and read back", ca->root_file);
    return NULL;
}

static ca_bundle_t *bundle_from_secret(ca_t *ca, const kube_secret_t *s, bool plugged, char *err, size_t errlen)
{
    char n[4][512];
    const char *keys[4] = {"ca-cert.pem", "ca-key.pem", "cert-chain.pem", "root-cert.pem"};
    const char *name = plugged ? CA_PLUGIN_SECRET : CA_SELF_SIGNED_SECRET;
    const char *v[4];
    for (int i = 0; i < 4; i++) {
        snprintf(n[i], sizeof n[i], "secret %s/%s key %s", ca->ns, name, keys[i]);
        v[i] = (const char *)kube_secret_value(s, keys[i], NULL);
    }
    char src[600];
    ca_bundle_t *b;
    if (plugged) {
        if (!v[0] || !v[1] || !v[3]) {
            ca_err(err, errlen, "secret %s/%s: key %s is missing", ca->ns, name,
                   !v[0] ? keys[0] : !v[1] ? keys[1] : keys[3]);
            return NULL;
        }
        b = ca_bundle_from_pem(v[0], n[0], v[1], n[1], v[2], n[2], v[3], n[3], err, errlen);
        snprintf(src, sizeof src, "plug-in CA from secret %s/%s", ca->ns, name);
        if (b)
            ca_set_source(b, src);
        return b;
    }
    if (!v[0] || !v[1]) {
        ca_err(err, errlen, "secret %s/%s: key %s is missing", ca->ns, name, !v[0] ? keys[0] : keys[1]);
        return NULL;
    }
    snprintf(src, sizeof src, "self-signed root from secret %s/%s", ca->ns, name);
    b = load_self_signed(v[0], n[0], v[1], n[1], v[3], src, err, errlen);
    if (b)
        ca_digest(b->digest, v[0], v[1], v[3], NULL);
    return b;
}

static int create_self_signed_secret(ca_t *ca, const ca_bundle_t *b, char *err, size_t errlen)
{
    char *key = ca_key_pem(b->key);
    if (!key)
        return ca_err(err, errlen, "cannot encode the CA key");
    const char *keys[2] = {"ca-cert.pem", "ca-key.pem"};
    const unsigned char *vals[2] = {(const unsigned char *)b->cert_pem, (const unsigned char *)key};
    int rc = kube_secret_create(ca->kube, ca->ns, CA_SELF_SIGNED_SECRET, CA_SELF_SIGNED_SECRET_TYPE, keys, vals, NULL,
                                2, NULL, err, errlen);
    ca_free_secret(key);
    return rc;
}

static ca_bundle_t *load_kube(ca_t *ca, bool create, ca_bundle_t *current, char *err, size_t errlen)
{
    kube_secret_t s;
    int rc = kube_secret_get(ca->kube, ca->ns, CA_PLUGIN_SECRET, &s, err, errlen);
    if (rc == 0) {
        ca_bundle_t *b = bundle_from_secret(ca, &s, true, err, errlen);
        kube_secret_free(&s);
        return b;
    }
    if (rc != KUBE_NOTFOUND)
        return NULL;
    for (int attempt = 0; attempt < 3; attempt++) {
        rc = kube_secret_get(ca->kube, ca->ns, CA_SELF_SIGNED_SECRET, &s, err, errlen);
        if (rc == 0) {
            ca_bundle_t *b = bundle_from_secret(ca, &s, false, err, errlen);
            kube_secret_free(&s);
            return b;
        }
        if (rc != KUBE_NOTFOUND)
            return NULL;
        if (current && !current->plugged) {
            /* the secret was deleted: put the root in use back, never a new one */
            if (create_self_signed_secret(ca, current, err, errlen) == 0)
                log_warn("ca: secret %s/%s was missing; restored it with the root in use", ca->ns,
                         CA_SELF_SIGNED_SECRET);
            continue;
        }
        if (!create) {
            ca_err(err, errlen, "secret %s/%s does not exist", ca->ns, CA_SELF_SIGNED_SECRET);
            return NULL;
        }
        ca_bundle_t *b = ca_bundle_self_signed(ca->trust_domain, ca->root_kt, ca->root_ttl, err, errlen);
        if (!b)
            return NULL;
        rc = create_self_signed_secret(ca, b, err, errlen);
        ca_bundle_release(b);
        if (rc == 0)
            log_info("ca: generated a self-signed root (O=%s) in secret %s/%s", ca->trust_domain, ca->ns,
                     CA_SELF_SIGNED_SECRET);
        else if (rc != KUBE_EXISTS)
            return NULL;
        /* read back what the API server holds: ours, or another replica's */
    }
    ca_err(err, errlen, "secret %s/%s: cannot be created and read back", ca->ns, CA_SELF_SIGNED_SECRET);
    return NULL;
}

static ca_bundle_t *load_source(ca_t *ca, bool create, ca_bundle_t *current, char *err, size_t errlen)
{
    if (ca->kube)
        return load_kube(ca, create, current, err, errlen);
    if (ca->cacerts_dir)
        return ca_bundle_load_dir(ca->cacerts_dir, err, errlen);
    if (!current || current->plugged || access(ca->root_file, F_OK) == 0 || errno != ENOENT)
        return load_root_file(ca, create, err, errlen);
    /* the root file was removed: write the root in use back */
    char e2[256];
    if (write_root_file(ca->root_file, current, true, e2, sizeof e2) == 0)
        log_warn("ca: %s was missing; restored it with the root in use", ca->root_file);
    return load_root_file(ca, false, err, errlen);
}

/* ---- background thread ---- */

static void queue_locked(ca_t *ca, const char *ns)
{
    for (size_t i = 0; i < ca->npending; i++)
        if (!strcmp(ca->pending_ns[i], ns))
            return;
    if (ca->npending == ca->cap_pending) {
        ca->cap_pending = ca->cap_pending ? ca->cap_pending * 2 : 16;
        ca->pending_ns = mesh_xrealloc(ca->pending_ns, ca->cap_pending * sizeof *ca->pending_ns);
    }
    ca->pending_ns[ca->npending++] = mesh_xstrdup(ns);
    pthread_cond_signal(&ca->cv);
}

static void publish_everywhere(ca_t *ca)
{
    kube_resp_t r;
    char err[512];
    if (kube_request(ca->kube, "GET", "/api/v1/namespaces", NULL, NULL, &r) != 0 || r.status != 200) {
        log_warn("ca: cannot list namespaces to publish the root: %s",
                 r.status ? kube_status_message(&r, "list", "namespaces", err, sizeof err) : r.err);
        kube_resp_free(&r);
        return;
    }
    struct json_object *doc = r.body ? json_tokener_parse(r.body) : NULL, *items = NULL;
    kube_resp_free(&r);
    if (doc && json_object_object_get_ex(doc, "items", &items) && json_object_is_type(items, json_type_array)) {
        pthread_mutex_lock(&ca->mu);
        for (size_t i = 0; i < json_object_array_length(items); i++) {
            struct json_object *it = json_object_array_get_idx(items, i), *md = NULL, *name = NULL, *del = NULL;
            if (!json_object_object_get_ex(it, "metadata", &md) || !json_object_object_get_ex(md, "name", &name))
                continue;
            if (json_object_object_get_ex(md, "deletionTimestamp", &del) && del)
                continue;
            queue_locked(ca, json_object_get_string(name));
        }
        pthread_mutex_unlock(&ca->mu);
    }
    json_object_put(doc);
}

static void do_reload(ca_t *ca)
{
    char err[1024];
    bool changed = false;
    if (ca_reload(ca, &changed, err, sizeof err) != 0) {
        /* say it once per distinct problem, not at every poll */
        if (strcmp(err, ca->last_reload_err) != 0)
            log_error("ca: reload failed, the current root of trust stays in force: %s", err);
        snprintf(ca->last_reload_err, sizeof ca->last_reload_err, "%s", err);
    } else {
        ca->last_reload_err[0] = 0;
    }
}

static void *ca_thread(void *arg)
{
    ca_t *ca = arg;
    char err[1024];
    pthread_mutex_lock(&ca->mu);
    while (!ca->stop) {
        if (ca->want_reload) {
            ca->want_reload = false;
            ca->busy = true;
            pthread_mutex_unlock(&ca->mu);
            do_reload(ca);
            pthread_mutex_lock(&ca->mu);
            continue;
        }
        if (ca->want_all && ca->kube) {
            ca->want_all = false;
            ca->busy = true;
            pthread_mutex_unlock(&ca->mu);
            publish_everywhere(ca);
            pthread_mutex_lock(&ca->mu);
            continue;
        }
        if (ca->npending && ca->kube) {
            char *ns = ca->pending_ns[0];
            memmove(ca->pending_ns, ca->pending_ns + 1, (ca->npending - 1) * sizeof *ca->pending_ns);
            ca->npending--;
            ca->busy = true;
            pthread_mutex_unlock(&ca->mu);
            if (ca_publish_root(ca, ca->kube, ns, err, sizeof err) != 0) {
                /* a namespace being deleted refuses new objects: not worth a warning */
                if (strstr(err, "terminat") || strstr(err, "not found"))
                    log_debug("ca: root certificate not published to namespace %s: %s", ns, err);
                else
                    log_warn("ca: cannot publish the root certificate to namespace %s: %s", ns, err);
            }
            free(ns);
            pthread_mutex_lock(&ca->mu);
            continue;
        }
        ca->want_all = false;
        ca->busy = false;
        pthread_cond_broadcast(&ca->idle_cv);
        if (ca->reload_ms > 0) {
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            ts.tv_sec += ca->reload_ms / 1000;
            ts.tv_nsec += (long)(ca->reload_ms % 1000) * 1000000L;
            if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
            }
            if (pthread_cond_timedwait(&ca->cv, &ca->mu, &ts) == ETIMEDOUT)
                ca->want_reload = true;
        } else {
            pthread_cond_wait(&ca->cv, &ca->mu);
        }
    }
    ca->busy = false;
    pthread_cond_broadcast(&ca->idle_cv);
    pthread_mutex_unlock(&ca->mu);
    return NULL;
}

int ca_wait_idle(ca_t *ca, int timeout_ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += timeout_ms / 1000;
    ts.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    int rc = 0;
    pthread_mutex_lock(&ca->mu);
    while (ca->thr_started && !ca->stop &&
           (ca->busy || ca->want_reload || (ca->kube && (ca->npending || ca->want_all)))) {
        if (pthread_cond_timedwait(&ca->idle_cv, &ca->mu, &ts) == ETIMEDOUT) {
            rc = -1;
            break;
        }
    }
    pthread_mutex_unlock(&ca->mu);
    return rc;
}

/* ---- lifecycle ---- */

ca_t *ca_new(const ca_opts_t *o, char *err, size_t errlen)
{
    if (!o->kube && !o->cacerts_dir && !o->root_file) {
        ca_err(err, errlen, "ca: no root of trust: give a cacerts directory, a root file or a Kubernetes client");
        return NULL;
    }
    ca_t *ca = mesh_xcalloc(1, sizeof *ca);
    snprintf(ca->trust_domain, sizeof ca->trust_domain, "%s",
             o->trust_domain && *o->trust_domain ? o->trust_domain : CA_DEFAULT_TRUST_DOMAIN);
    snprintf(ca->ns, sizeof ca->ns, "%s", o->ns && *o->ns ? o->ns : CA_DEFAULT_NAMESPACE);
    ca->kube = o->kube;
    ca->cacerts_dir = o->cacerts_dir ? mesh_xstrdup(o->cacerts_dir) : NULL;
    ca->root_file = o->root_file ? mesh_xstrdup(o->root_file) : NULL;
    ca->root_kt = o->root_key_type;
    ca->root_ttl = o->root_ttl_s > 0 ? o->root_ttl_s : CA_ROOT_TTL_S;
    ca->max_ttl = o->max_ttl_s > 0 ? o->max_ttl_s : CA_DEFAULT_TTL_S;
    ca->reload_ms = o->reload_interval_ms ? o->reload_interval_ms : 5000;
    pthread_mutex_init(&ca->mu, NULL);
    pthread_condattr_t ca_attr;
    pthread_condattr_init(&ca_attr);
    pthread_condattr_setclock(&ca_attr, CLOCK_MONOTONIC);
    pthread_cond_init(&ca->cv, &ca_attr);
    pthread_cond_init(&ca->idle_cv, &ca_attr);
    pthread_condattr_destroy(&ca_attr);
    if (ca->max_ttl > CA_MAX_TTL_LIMIT_S) {
        ca_err(err, errlen, "ca: maximum certificate lifetime %llds is above the limit of 90 days",
               (long long)o->max_ttl_s);
        goto fail;
    }
    ca->default_ttl = o->default_ttl_s > 0 ? o->default_ttl_s : CA_DEFAULT_TTL_S;
    if (ca->default_ttl > ca->max_ttl)
        ca->default_ttl = ca->max_ttl;
    ca->bundle = load_source(ca, true, NULL, err, errlen);
    if (!ca->bundle)
        goto fail;
    ca_log_bundle("signing with", ca->bundle);
    if (ca->bundle->not_after - (int64_t)time(NULL) < ca->max_ttl)
        log_warn("ca: the signing certificate expires in less than the maximum certificate lifetime; "
                 "certificates are cut at its expiry");
    if (pthread_create(&ca->thr, NULL, ca_thread, ca) != 0) {
        ca_err(err, errlen, "ca: cannot start its thread: %s", strerror(errno));
        goto fail;
    }
    ca->thr_started = true;
    return ca;
fail:
    ca_free(ca);
    return NULL;
}

void ca_free(ca_t *ca)
{
    if (!ca)
        return;
    if (ca->thr_started) {
        pthread_mutex_lock(&ca->mu);
        ca->stop = true;
        pthread_cond_broadcast(&ca->cv);
        pthread_mutex_unlock(&ca->mu);
        pthread_join(ca->thr, NULL);
    }
    for (size_t i = 0; i < ca->npending; i++)
        free(ca->pending_ns[i]);
    free(ca->pending_ns);
    ca_bundle_release(ca->bundle);
    free(ca->cacerts_dir);
    free(ca->root_file);
    pthread_cond_destroy(&ca->cv);
    pthread_cond_destroy(&ca->idle_cv);
    pthread_mutex_destroy(&ca->mu);
    free(ca);
}

int ca_reload(ca_t *ca, bool *changed, char *err, size_t errlen)
{
    if (changed)
        *changed = false;
    ca_bundle_t *cur = ca_bundle_get(ca);
    ca_bundle_t *nb = load_source(ca, false, cur, err, errlen);
    if (!nb) {
        ca_bundle_release(cur);
        return -1;
    }
    bool same = memcmp(nb->digest, cur->digest, sizeof nb->digest) == 0;
    bool root_changed = strcmp(nb->root_pem, cur->root_pem) != 0;
    ca_bundle_release(cur);
    if (same) {
        ca_bundle_release(nb);
        return 0;
    }
    pthread_mutex_lock(&ca->mu);
    ca_bundle_t *old = ca->bundle;
    ca->bundle = nb;
    if (root_changed && ca->kube)
        ca->want_all = true;
    pthread_cond_signal(&ca->cv);
    pthread_mutex_unlock(&ca->mu);
    ca_bundle_release(old);
    atomic_fetch_add(&ca->reloads, 1);
    ca_log_bundle(root_changed ? "root of trust changed: now signing with" : "signing certificate changed: now using",
                  nb);
    if (changed)
        *changed = true;
    return 0;
}

ca_bundle_t *ca_bundle_get(ca_t *ca)
{
    pthread_mutex_lock(&ca->mu);
    ca_bundle_t *b = ca_bundle_ref(ca->bundle);
    pthread_mutex_unlock(&ca->mu);
    return b;
}

const char *ca_trust_domain(const ca_t *ca) { return ca->trust_domain; }
const char *ca_namespace(const ca_t *ca) { return ca->ns; }
int64_t ca_max_ttl(const ca_t *ca) { return ca->max_ttl; }

char *ca_root_pem(ca_t *ca)
{
    ca_bundle_t *b = ca_bundle_get(ca);
    char *s = mesh_xstrdup(b->root_pem);
    ca_bundle_release(b);
    return s;
}

int ca_spiffe_id(const ca_t *ca, const char *ns, const char *sa, char *buf, size_t len)
{
    if (!ns || !sa || !*ns || !*sa || strchr(ns, '/') || strchr(sa, '/'))
        return -1;
    int n = snprintf(buf, len, "spiffe://%s/ns/%s/sa/%s", ca->trust_domain, ns, sa);
    return n < 0 || (size_t)n >= len ? -1 : 0;
}

void ca_get_stats(ca_t *ca, ca_stats_t *out)
{
    out->csr_count = atomic_load(&ca->csr_count);
    out->success = atomic_load(&ca->success);
    out->refused = atomic_load(&ca->refused);
    out->errors = atomic_load(&ca->errors);
    out->reloads = atomic_load(&ca->reloads);
    out->published = atomic_load(&ca->published);
}

static int64_t clamp_ttl(const ca_t *ca, int64_t ttl_s)
{
    if (ttl_s <= 0)
        return ca->default_ttl;
    return ttl_s > ca->max_ttl ? ca->max_ttl : ttl_s;
}

int ca_sign_csr(ca_t *ca, const char *csr_pem, size_t csr_len, const char *identity, int64_t ttl_s,
                ca_chain_t *out, char *err, size_t errlen)
{
    atomic_fetch_add(&ca->csr_count, 1);
    ca_bundle_t *b = ca_bundle_get(ca);
    int rc = ca_bundle_sign_csr(b, csr_pem, csr_len, identity, clamp_ttl(ca, ttl_s), out, err, errlen);
    ca_bundle_release(b);
    if (rc == 0)
        atomic_fetch_add(&ca->success, 1);
    else if (rc == CA_EINVAL || rc == CA_EPERM)
        atomic_fetch_add(&ca->refused, 1);
    else
        atomic_fetch_add(&ca->errors, 1);
    return rc;
}

int ca_issue_serving(ca_t *ca, const char *const *dns, size_t ndns, const char *uri, int64_t ttl_s,
                     ca_key_type_t kt, char **key_pem, ca_chain_t *out, char *err, size_t errlen)
{
    ca_bundle_t *b = ca_bundle_get(ca);
    int rc = ca_bundle_issue_key(b, dns, ndns, uri, clamp_ttl(ca, ttl_s), kt, key_pem, out, err, errlen);
    ca_bundle_release(b);
    return rc;
}

/* ---- root publication ---- */

int ca_publish_root(ca_t *ca, kube_client_t *kc, const char *ns, char *err, size_t errlen)
{
    char *root = ca_root_pem(ca);
    const char *keys[1] = {"root-cert.pem"};
    const char *vals[1] = {root};
    const char *labels[] = {"istio.io/config", "true", NULL};
    int rc = kube_configmap_apply(kc, ns, CA_ROOT_CONFIGMAP, keys, vals, 1, labels, err, errlen);
    free(root);
    if (rc == 0)
        atomic_fetch_add(&ca->published, 1);
    return rc == 0 ? 0 : -1;
}

void ca_publish_all(ca_t *ca)
{
    pthread_mutex_lock(&ca->mu);
    ca->want_all = true;
    pthread_cond_signal(&ca->cv);
    pthread_mutex_unlock(&ca->mu);
}

static const char *strmap_get(const cfg_map_t *m, const char *key)
{
    for (uint32_t i = 0; i < m->n; i++)
        if (!strcmp(m->v[i].key, key))
            return m->v[i].str;
    return NULL;
}

void ca_on_store_event(void *ud, const cfg_event_t *ev)
{
    ca_t *ca = ud;
    const cfg_object_t *o = ev->new ? ev->new : ev->old;
    if (!o)
        return;
    if (ev->kind == CFG_Namespace) {
        if (ev->type == CFG_EVENT_ADD && !(o->meta && o->meta->deletionTimestamp)) {
            pthread_mutex_lock(&ca->mu);
            queue_locked(ca, o->name);
            pthread_mutex_unlock(&ca->mu);
        }
        return;
    }
    if (ev->kind == CFG_ConfigMap && !strcmp(o->name, CA_ROOT_CONFIGMAP)) {
        pthread_mutex_lock(&ca->mu);
        bool repair = ev->type == CFG_EVENT_DELETE;
        if (!repair) {
            const char *have = strmap_get(&CFG_BODY(o, ConfigMap)->data, "root-cert.pem");
            repair = !have || strcmp(have, ca->bundle->root_pem) != 0;
        }
        if (repair)
            queue_locked(ca, o->namespace);
        pthread_mutex_unlock(&ca->mu);
        return;
    }
    if (ev->kind == CFG_Secret && !strcmp(o->namespace, ca->ns) &&
        (!strcmp(o->name, CA_PLUGIN_SECRET) || !strcmp(o->name, CA_SELF_SIGNED_SECRET))) {
        pthread_mutex_lock(&ca->mu);
        ca->want_reload = true;
        pthread_cond_signal(&ca->cv);
        pthread_mutex_unlock(&ca->mu);
    }
}
