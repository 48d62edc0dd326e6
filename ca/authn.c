/*
 * authn: who is calling the certificate service. Kube mode asks the API
 * server (TokenReview, audience istio-ca) and caches positive answers until
 * the token expires; local mode verifies the JWT against a key file that is
 * re-read when it changes.
 */
#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "../common/arena.h"
#include "../common/hmap.h"
#include "../common/log.h"
#include "../controlplane/kube.h"
#include "ca_internal.h"

#define AUTHN_UNKNOWN_EXP_CACHE_S 60

typedef struct cache_ent {
    char key[65]; /* hex SHA-256 of the token */
    ca_caller_t caller;
    int64_t until;
} cache_ent_t;

struct ca_authn {
    kube_client_t *kube;
    char *key_file;
    char *issuer;
    char audience[128];
    char trust_domain[256];
    size_t cache_max;

    pthread_mutex_t mu; /* guards the cache */
    hmap_t cache; /* key -> cache_ent_t */
    pthread_rwlock_t keys_lock; /* guards keys and their file's identity */
    ca_jwt_keys_t *keys;
    struct timespec keys_mtime;
    off_t keys_size;
};

static bool keys_fresh(ca_authn_t *a, const struct stat *st)
{
    return a->keys && st->st_mtim.tv_sec == a->keys_mtime.tv_sec && st->st_mtim.tv_nsec == a->keys_mtime.tv_nsec &&
           st->st_size == a->keys_size;
}

/* (Re-)reads the key file when it changed. Caller holds keys_lock for writing. */
static int load_keys(ca_authn_t *a, char *err, size_t errlen)
{
    struct stat st;
    if (stat(a->key_file, &st) != 0)
        return ca_err(err, errlen, "jwt key file %s: cannot read: %s", a->key_file, strerror(errno));
    if (keys_fresh(a, &st))
        return 0;
    size_t len = 0;
    char *text = ca_read_file(a->key_file, &len);
    if (!text)
        return ca_err(err, errlen, "jwt key file %s: cannot read: %s", a->key_file, strerror(errno));
    char e2[512];
    ca_jwt_keys_t *k = ca_jwt_keys_parse(text, len, e2, sizeof e2);
    free(text);
    if (!k)
        return ca_err(err, errlen, "jwt key file %s: %s", a->key_file, e2);
    ca_jwt_keys_free(a->keys);
    a->keys = k;
    a->keys_mtime = st.st_mtim;
    a->keys_size = st.st_size;
    return 0;
}

ca_authn_t *ca_authn_new(const ca_authn_opts_t *o, char *err, size_t errlen)
{
    if (!o->kube && !o->jwt_key_file) {
        ca_err(err, errlen, "ca authentication: give a Kubernetes client (TokenReview) or a JWT key file");
        return NULL;
    }
    ca_authn_t *a = mesh_xcalloc(1, sizeof *a);
    a->kube = o->kube;
    a->key_file = o->jwt_key_file ? mesh_xstrdup(o->jwt_key_file) : NULL;
    a->issuer = o->issuer ? mesh_xstrdup(o->issuer) : NULL;
    snprintf(a->audience, sizeof a->audience, "%s", o->audience && *o->audience ? o->audience : CA_DEFAULT_AUDIENCE);
    snprintf(a->trust_domain, sizeof a->trust_domain, "%s",
             o->trust_domain && *o->trust_domain ? o->trust_domain : CA_DEFAULT_TRUST_DOMAIN);
    a->cache_max = o->cache_max ? o->cache_max : 4096;
    pthread_mutex_init(&a->mu, NULL);
    pthread_rwlock_init(&a->keys_lock, NULL);
    if (!a->kube && load_keys(a, err, errlen) != 0) {
        ca_authn_free(a);
        return NULL;
    }
    return a;
}

void ca_authn_free(ca_authn_t *a)
{
    if (!a)
        return;
    size_t it = 0;
    const char *k;
    void *v;
    while (hmap_next(&a->cache, &it, &k, &v)) {
        OPENSSL_cleanse(v, sizeof(cache_ent_t));
        free(v);
    }
    hmap_clear(&a->cache);
    ca_jwt_keys_free(a->keys);
    free(a->key_file);
    free(a->issuer);
    pthread_mutex_destroy(&a->mu);
    pthread_rwlock_destroy(&a->keys_lock);
    free(a);
}

size_t ca_authn_cache_size(ca_authn_t *a)
{
    pthread_mutex_lock(&a->mu);
    size_t n = a->cache.n;
    pthread_mutex_unlock(&a->mu);
    return n;
}

static void token_key(const char *token, char out[65])
{
    unsigned char d[32];
    unsigned int n = 32;
    EVP_Digest(token, strlen(token), d, &n, EVP_sha256(), NULL);
    for (int i = 0; i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", d[i]);
}

/* Makes room for one entry: drops expired ones, then the one expiring first. */
static void cache_evict_locked(ca_authn_t *a, int64_t now)
{
    size_t it = 0;
    const char *k;
    void *v;
    cache_ent_t *dead[64];
    size_t nd = 0;
    cache_ent_t *oldest = NULL;
    while (hmap_next(&a->cache, &it, &k, &v)) {
        cache_ent_t *e = v;
        if (e->until <= now && nd < 64)
            dead[nd++] = e;
        if (!oldest || e->until < oldest->until)
            oldest = e;
    }
    if (nd == 0 && oldest && a->cache.n >= a->cache_max)
        dead[nd++] = oldest;
    for (size_t i = 0; i < nd; i++) {
        hmap_del(&a->cache, dead[i]->key);
        free(dead[i]);
    }
}

static int review(ca_authn_t *a, const char *token, int64_t now, ca_caller_t *out, char *err, size_t errlen)
{
    char key[65];
    token_key(token, key);
    pthread_mutex_lock(&a->mu);
    cache_ent_t *e = hmap_get(&a->cache, key);
    if (e && e->until > now) {
        *out = e->caller;
        pthread_mutex_unlock(&a->mu);
        return 0;
    }
    pthread_mutex_unlock(&a->mu);

    kube_token_review_t tr;
    const char *auds[2] = {a->audience, NULL};
    if (kube_token_review(a->kube, token, auds, &tr) != 0)
        return ca_err(err, errlen, "token review failed: %s", tr.error);
    if (!tr.authenticated)
        return ca_errc(CA_EAUTH, err, errlen, "the API server rejected the token: %s",
                       tr.error[0] ? tr.error : "not authenticated");
    if (tr.naudiences > 0) {
        bool ok = false;
        for (int i = 0; i < tr.naudiences && !ok; i++)
            ok = !strcmp(tr.audiences[i], a->audience);
        if (!ok)
            return ca_errc(CA_EAUTH, err, errlen, "the token is not meant for audience \"%s\"", a->audience);
    }
    int rc = ca_parse_sa_subject(tr.username, a->trust_domain, out, err, errlen);
    if (rc != 0)
        return rc;
    out->expires = tr.expiration;
    int64_t until = tr.expiration > 0 ? tr.expiration : now + AUTHN_UNKNOWN_EXP_CACHE_S;
    if (until <= now)
        return 0;
    pthread_mutex_lock(&a->mu);
    if (!hmap_get(&a->cache, key)) {
        if (a->cache.n >= a->cache_max)
            cache_evict_locked(a, now);
        if (a->cache.n < a->cache_max) {
            e = mesh_xcalloc(1, sizeof *e);
            memcpy(e->key, key, sizeof e->key);
            e->caller = *out;
            e->until = until;
            hmap_put(&a->cache, e->key, e);
        }
    } else {
        e = hmap_get(&a->cache, key);
        e->caller = *out;
        e->until = until;
    }
    pthread_mutex_unlock(&a->mu);
    return 0;
}

int ca_authn_check(ca_authn_t *a, const char *authorization, ca_caller_t *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    if (!authorization || !*authorization)
        return ca_errc(CA_EAUTH, err, errlen, "no authorization header (a \"Bearer <service-account token>\" is required)");
    const char *p = authorization;
    while (*p == ' ')
        p++;
    if (strncasecmp(p, "bearer ", 7) != 0)
        return ca_errc(CA_EAUTH, err, errlen, "authorization header is not \"Bearer <token>\"");
    p += 7;
    while (*p == ' ')
        p++;
    size_t len = strlen(p);
    while (len && isspace((unsigned char)p[len - 1]))
        len--;
    if (len == 0)
        return ca_errc(CA_EAUTH, err, errlen, "empty bearer token");
    if (len > 16384)
        return ca_errc(CA_EAUTH, err, errlen, "bearer token longer than 16384 bytes");
    char *token = mesh_xmalloc(len + 1);
    memcpy(token, p, len);
    token[len] = 0;
    int64_t now = (int64_t)time(NULL);
    int rc;
    if (a->kube) {
        rc = review(a, token, now, out, err, errlen);
    } else {
        struct stat st;
        bool stale = stat(a->key_file, &st) != 0;
        pthread_rwlock_rdlock(&a->keys_lock);
        stale = stale || !keys_fresh(a, &st);
        pthread_rwlock_unlock(&a->keys_lock);
        if (stale) {
            char e2[512];
            pthread_rwlock_wrlock(&a->keys_lock);
            if (load_keys(a, e2, sizeof e2) != 0)
                log_warn("ca: %s; keeping the keys read before", e2);
            pthread_rwlock_unlock(&a->keys_lock);
        }
        pthread_rwlock_rdlock(&a->keys_lock);
        rc = ca_jwt_verify(a->keys, token, now, a->issuer, a->audience, a->trust_domain, out, err, errlen);
        pthread_rwlock_unlock(&a->keys_lock);
    }
    OPENSSL_cleanse(token, len);
    free(token);
    return rc;
}
