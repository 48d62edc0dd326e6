/*
 * ADS streams: state of the world and delta, requests, ACK/NACK, response
 * encoding (written by hand: a DiscoveryResponse is a few length-delimited
 * fields around the serialized resources, so it is built straight into a
 * shared grpc_buf_t), debug pages and metrics.
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <json-c/json.h>

#include "../common/log.h"
#include "envoy/service/discovery/v3/discovery.pb-c.h"
#include "server_internal.h"

/* Push order: clusters warm before listeners. */
static const xds_type_t push_order[XDS_NTYPES] = {XDS_CLUSTER, XDS_ENDPOINT, XDS_LISTENER,
                                                  XDS_ROUTE, XDS_SECRET};

const char *xs_type_short(xds_type_t t)
{
    switch (t) {
    case XDS_LISTENER:
        return "lds";
    case XDS_ROUTE:
        return "rds";
    case XDS_CLUSTER:
        return "cds";
    case XDS_ENDPOINT:
        return "eds";
    case XDS_SECRET:
        return "sds";
    default:
        return "unknown";
    }
}

static bool type_is_wildcard(xds_type_t t)
{
    return t == XDS_LISTENER || t == XDS_CLUSTER;
}

/* ---- protobuf writing ---- */

static size_t vsize(uint64_t v)
{
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

static uint8_t *put_varint(uint8_t *p, uint64_t v)
{
    while (v >= 0x80) {
        *p++ = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    *p++ = (uint8_t)v;
    return p;
}

/* Size of a length-delimited field (field numbers < 16) of len bytes. */
static size_t ld_size(size_t len)
{
    return 1 + vsize(len) + len;
}

static uint8_t *put_ld(uint8_t *p, int field, const void *data, size_t len)
{
    *p++ = (uint8_t)(field << 3 | 2);
    p = put_varint(p, len);
    if (len)
        memcpy(p, data, len);
    return p + len;
}

static uint8_t *put_ld_hdr(uint8_t *p, int field, size_t len)
{
    *p++ = (uint8_t)(field << 3 | 2);
    return put_varint(p, len);
}

static size_t any_size(const char *url, size_t len)
{
    return ld_size(strlen(url)) + ld_size(len);
}

static uint8_t *put_any(uint8_t *p, int field, const char *url, const xds_resource_t *r)
{
    size_t ul = strlen(url);
    p = put_ld_hdr(p, field, any_size(url, r->len));
    p = put_ld(p, 1, url, ul);
    return put_ld(p, 2, r->data, r->len);
}

/* ---- selection of what a watch receives ---- */

static bool names_has(const xs_watch_t *w, const char *name)
{
    uint32_t lo = 0, hi = w->nnames;
    while (lo < hi) {
        uint32_t mid = (lo + hi) / 2;
        int c = strcmp(w->names[mid], name);
        if (c == 0)
            return true;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return false;
}

static bool selected(const xs_watch_t *w, const char *name)
{
    return w->wildcard || names_has(w, name);
}

static uint64_t fnv64(uint64_t h, const void *data, size_t len)
{
    const uint8_t *p = data;
    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= 1099511628211ull;
    }
    return h;
}

/* Hash of what the watch receives from the set. */
static uint64_t selection_hash(const xs_set_t *s, const xs_watch_t *w)
{
    if (w->wildcard)
        return s->hash;
    uint64_t h = fnv64(14695981039346656037ull, "sel", 3);
    /* both lists are sorted by name: one merge walk */
    for (uint32_t i = 0, j = 0; i < s->n && j < w->nnames;) {
        int c = strcmp(s->res[i]->name, w->names[j]);
        if (c < 0) {
            i++;
            continue;
        }
        if (c > 0) {
            j++;
            continue;
        }
        /* the content hash covers the name: every resource type carries it */
        h = (h ^ s->res[i]->hash) * 1099511628211ull;
        h ^= h >> 29;
        i++;
        j++;
    }
    return h;
}

static void new_nonce(xds_server_t *srv, char *buf, size_t size)
{
    snprintf(buf, size, "%" PRIx64, ++srv->nonce_seq);
}

/* A DiscoveryResponse with the selected resources of s. */
static grpc_buf_t *encode_sotw(const xs_set_t *s, const xs_watch_t *w, const char *version,
                               const char *nonce)
{
    const char *url = xds_type_url(s->type);
    size_t len = ld_size(strlen(version)) + ld_size(strlen(url)) + ld_size(strlen(nonce));
    for (uint32_t i = 0; i < s->n; i++)
        if (selected(w, s->res[i]->name))
            len += ld_size(any_size(url, s->res[i]->len));
    grpc_buf_t *b = grpc_buf_alloc(len);
    uint8_t *p = grpc_buf_data(b);
    p = put_ld(p, 1, version, strlen(version));
    for (uint32_t i = 0; i < s->n; i++)
        if (selected(w, s->res[i]->name))
            p = put_any(p, 2, url, s->res[i]);
    p = put_ld(p, 4, url, strlen(url));
    put_ld(p, 5, nonce, strlen(nonce));
    return b;
}

static void count_push(xds_server_t *srv, xds_type_t t)
{
    srv->st.pushes[t]++;
}

/* Sends the state of the world of type t if it changed (or is forced).
 * Returns false when nothing was sent. */
static bool send_sotw(xds_server_t *srv, xs_stream_t *st, xds_type_t t)
{
    xs_watch_t *w = &st->w[t];
    xs_set_t *s = st->sets[t];
    uint64_t h = selection_hash(s, w);
    if (w->sent && h == w->sent_hash && !w->force)
        return false;
    char key[32];
    snprintf(key, sizeof(key), "%d:%016" PRIx64, (int)t, h);
    xs_resp_t *rp = hmap_get(&srv->resps, key);
    if (rp != NULL && strcmp(rp->nonce, w->sent_nonce) == 0)
        rp = NULL; /* never the same nonce twice on a stream */
    grpc_buf_t *own = NULL;
    char version[20], nonce[24];
    snprintf(version, sizeof(version), "%016" PRIx64, h);
    if (rp != NULL) {
        srv->st.responses_shared++;
        memcpy(nonce, rp->nonce, sizeof(nonce));
    } else {
        new_nonce(srv, nonce, sizeof(nonce));
        own = encode_sotw(s, w, version, nonce);
        srv->st.responses_encoded++;
        size_t blen = grpc_buf_len(own);
        if (hmap_get(&srv->resps, key) == NULL && srv->resps_bytes + blen <= XS_RESP_CACHE_MAX) {
            srv->resps_bytes += blen;
            rp = calloc(1, sizeof(*rp));
            if (rp == NULL)
                abort();
            rp->buf = grpc_buf_ref(own);
            memcpy(rp->version, version, sizeof(version));
            memcpy(rp->nonce, nonce, sizeof(nonce));
            memcpy(rp->key, key, sizeof(key));
            hmap_put(&srv->resps, rp->key, rp);
        }
    }
    grpc_stream_send_buf(st->gs, own ? own : rp->buf);
    if (own)
        grpc_buf_unref(own);
    w->sent = true;
    w->force = false;
    w->sent_hash = h;
    memcpy(w->sent_version, version, sizeof(version));
    memcpy(w->sent_nonce, nonce, sizeof(nonce));
    count_push(srv, t);
    return true;
}

/* ---- delta ---- */

/* A delta watch's sent resources: name -> hash; the entry holds its key. */
typedef struct dsent_ent {
    uint64_t hash;
    char name[];
} dsent_ent_t;

static uint64_t *dsent_get(const xs_watch_t *w, const char *name)
{
    dsent_ent_t *e = hmap_get(&w->dsent, name);
    return e ? &e->hash : NULL;
}

static void dsent_set(xs_watch_t *w, const char *name, uint64_t h)
{
    dsent_ent_t *e = hmap_get(&w->dsent, name);
    if (e != NULL) {
        e->hash = h;
        return;
    }
    size_t nl = strlen(name) + 1;
    e = malloc(sizeof(*e) + nl);
    if (e == NULL)
        abort();
    e->hash = h;
    memcpy(e->name, name, nl);
    hmap_put(&w->dsent, e->name, e);
}

static void dsent_del(xs_watch_t *w, const char *name)
{
    free(hmap_del(&w->dsent, name));
}

static void dsent_clear(xs_watch_t *w)
{
    size_t it = 0;
    const char *k;
    void *v;
    while (hmap_next(&w->dsent, &it, &k, &v))
        free(v);
    hmap_clear(&w->dsent);
}

static bool send_delta(xds_server_t *srv, xs_stream_t *st, xds_type_t t)
{
    xs_watch_t *w = &st->w[t];
    xs_set_t *s = st->sets[t];
    const char *url = xds_type_url(t);
    /* changed or new resources */
    uint32_t nchanged = 0;
    size_t len = 0;
    for (uint32_t i = 0; i < s->n; i++) {
        const xds_resource_t *r = s->res[i];
        if (!selected(w, r->name))
            continue;
        uint64_t *v = dsent_get(w, r->name);
        if (v != NULL && *v == r->hash)
            continue;
        nchanged++;
        size_t inner = ld_size(16) + ld_size(any_size(url, r->len)) + ld_size(strlen(r->name));
        len += ld_size(inner);
    }
    /* removed: sent before, no longer in the set */
    const char **removed = NULL;
    uint32_t nremoved = 0;
    size_t it = 0;
    const char *k;
    void *v;
    while (hmap_next(&w->dsent, &it, &k, &v)) {
        bool found = false;
        uint32_t lo = 0, hi = s->n;
        while (lo < hi) {
            uint32_t mid = (lo + hi) / 2;
            int c = strcmp(s->res[mid]->name, k);
            if (c == 0) {
                found = true;
                break;
            }
            if (c < 0)
                lo = mid + 1;
            else
                hi = mid;
        }
        if (found)
            continue;
        removed = realloc(removed, (nremoved + 1) * sizeof(*removed));
        if (removed == NULL)
            abort();
        removed[nremoved++] = k;
        len += ld_size(strlen(k));
    }
    if (nchanged == 0 && nremoved == 0 && !w->force) {
        free(removed);
        return false;
    }
    char version[24], nonce[24];
    snprintf(version, sizeof(version), "%" PRIu64, srv->gen);
    new_nonce(srv, nonce, sizeof(nonce));
    len += ld_size(strlen(version)) + ld_size(strlen(url)) + ld_size(strlen(nonce));
    grpc_buf_t *b = grpc_buf_alloc(len);
    uint8_t *p = grpc_buf_data(b);
    p = put_ld(p, 1, version, strlen(version));
    for (uint32_t i = 0; i < s->n; i++) {
        const xds_resource_t *r = s->res[i];
        if (!selected(w, r->name))
            continue;
        uint64_t *sv = dsent_get(w, r->name);
        if (sv != NULL && *sv == r->hash)
            continue;
        char rv[17];
        snprintf(rv, sizeof(rv), "%016" PRIx64, r->hash);
        size_t inner = ld_size(16) + ld_size(any_size(url, r->len)) + ld_size(strlen(r->name));
        p = put_ld_hdr(p, 2, inner);
        p = put_ld(p, 1, rv, 16);
        p = put_any(p, 2, url, r);
        p = put_ld(p, 3, r->name, strlen(r->name));
        dsent_set(w, r->name, r->hash);
    }
    p = put_ld(p, 4, url, strlen(url));
    p = put_ld(p, 5, nonce, strlen(nonce));
    for (uint32_t i = 0; i < nremoved; i++)
        p = put_ld(p, 6, removed[i], strlen(removed[i]));
    /* forget removed names only after their bytes were written (removed[]
     * points at the entries' own names) */
    for (uint32_t i = 0; i < nremoved; i++)
        free(hmap_del(&w->dsent, removed[i]));
    free(removed);
    grpc_stream_send_buf(st->gs, b);
    grpc_buf_unref(b);
    w->sent = true;
    w->force = false;
    w->sent_hash = s->hash;
    snprintf(w->sent_version, sizeof(w->sent_version), "%016" PRIx64, s->hash);
    memcpy(w->sent_nonce, nonce, sizeof(nonce));
    count_push(srv, t);
    return true;
}

void xs_stream_flush(xds_server_t *srv, xs_stream_t *st)
{
    if (st->proxy == NULL || grpc_stream_closed(st->gs))
        return;
    if (!xs_stream_ready(srv, st)) { /* translate on a later round, not inside I/O */
        xs_push_enqueue(srv, st);
        return;
    }
    bool sent = false;
    for (int i = 0; i < XDS_NTYPES; i++) {
        xds_type_t t = push_order[i];
        xs_watch_t *w = &st->w[t];
        if (!w->requested)
            continue;
        if (grpc_stream_queued(st->gs) > srv->opts.max_queued) {
            w->pending = true;
            continue;
        }
        w->pending = false;
        sent |= st->delta ? send_delta(srv, st, t) : send_sotw(srv, st, t);
    }
    if (!sent && st->conv_start && grpc_stream_queued(st->gs) == 0)
        st->conv_start = 0; /* nothing changed for this proxy */
}

/* ---- requests ---- */

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Named subscriptions are interned: the sidecars of a namespace all ask EDS
 * for the same thousands of clusters, and hold one copy of the list. The
 * table serves every server of the process (names_mu). */
typedef struct xs_names {
    uint32_t refs;
    bool interned; /* in names_tab (not when its key collided) */
    char key[48];
    char *names[]; /* the strings follow the array, in this allocation */
} xs_names_t;

static pthread_mutex_t names_mu = PTHREAD_MUTEX_INITIALIZER;
static hmap_t names_tab; /* key -> xs_names_t */

static xs_names_t *names_of(char **names)
{
    return (xs_names_t *)((char *)names - offsetof(xs_names_t, names));
}

static void names_free(xs_watch_t *w)
{
    if (w->names != NULL) {
        xs_names_t *l = names_of(w->names);
        pthread_mutex_lock(&names_mu);
        if (--l->refs == 0) {
            if (l->interned)
                hmap_del(&names_tab, l->key);
            free(l);
        }
        pthread_mutex_unlock(&names_mu);
    }
    w->names = NULL;
    w->nnames = 0;
}

/* The shared list of these sorted, unique names (a new reference). */
static char **names_intern(char **v, size_t u)
{
    uint64_t h = 14695981039346656037ull;
    size_t bytes = 0;
    for (size_t i = 0; i < u; i++) {
        size_t l = strlen(v[i]) + 1;
        h = fnv64(h, v[i], l);
        bytes += l;
    }
    char key[48];
    snprintf(key, sizeof(key), "%016" PRIx64 ":%zu", h, u);
    pthread_mutex_lock(&names_mu);
    xs_names_t *l = hmap_get(&names_tab, key);
    bool same = l != NULL;
    for (size_t i = 0; same && i < u; i++)
        same = strcmp(l->names[i], v[i]) == 0;
    if (same) {
        l->refs++;
        pthread_mutex_unlock(&names_mu);
        return l->names;
    }
    bool collided = l != NULL;
    l = malloc(sizeof(*l) + (u ? u : 1) * sizeof(char *) + bytes);
    if (l == NULL)
        abort();
    l->refs = 1;
    memcpy(l->key, key, sizeof(key));
    char *p = (char *)(l->names + (u ? u : 1));
    for (size_t i = 0; i < u; i++) {
        size_t len = strlen(v[i]) + 1;
        memcpy(p, v[i], len);
        l->names[i] = p;
        p += len;
    }
    l->interned = !collided;
    if (l->interned)
        hmap_put(&names_tab, l->key, l);
    pthread_mutex_unlock(&names_mu);
    return l->names;
}

/* Replaces the named subscription; returns true when it changed. */
static bool names_set(xs_watch_t *w, char **names, size_t n)
{
    /* most requests repeat the subscription as it stands (ACKs) */
    bool same = n == w->nnames;
    for (size_t i = 0; same && i < n; i++)
        same = strcmp(names[i], w->names[i]) == 0;
    if (same)
        return false;
    char **v = calloc(n ? n : 1, sizeof(*v));
    if (v == NULL)
        abort();
    size_t m = 0;
    for (size_t i = 0; i < n; i++)
        v[m++] = names[i];
    qsort(v, m, sizeof(*v), cmp_str);
    size_t u = 0;
    for (size_t i = 0; i < m; i++)
        if (u == 0 || strcmp(v[u - 1], v[i]) != 0)
            v[u++] = v[i];
    bool changed = u != w->nnames;
    for (size_t i = 0; !changed && i < u; i++)
        changed = strcmp(v[i], w->names[i]) != 0;
    if (changed) { /* copy first: names may point into w->names */
        char **nv = names_intern(v, u);
        names_free(w);
        w->names = nv;
        w->nnames = (uint32_t)u;
    }
    free(v);
    return changed;
}

static void names_add(xs_watch_t *w, char **names, size_t n)
{
    size_t total = w->nnames + n;
    char **all = calloc(total ? total : 1, sizeof(*all));
    if (all == NULL)
        abort();
    for (uint32_t i = 0; i < w->nnames; i++)
        all[i] = w->names[i];
    for (size_t i = 0; i < n; i++)
        all[w->nnames + i] = names[i];
    names_set(w, all, total);
    free(all);
}

static void names_remove(xs_watch_t *w, char **names, size_t n)
{
    char **keep = calloc(w->nnames ? w->nnames : 1, sizeof(*keep));
    if (keep == NULL)
        abort();
    size_t m = 0;
    for (uint32_t i = 0; i < w->nnames; i++) {
        bool drop = false;
        for (size_t j = 0; j < n && !drop; j++)
            drop = strcmp(w->names[i], names[j]) == 0;
        if (!drop)
            keep[m++] = w->names[i];
    }
    names_set(w, keep, m);
    free(keep);
}

static void reject(xs_stream_t *st, const char *reason)
{
    log_warn("ADS: closing stream from %s: %s", grpc_stream_peer_addr(st->gs), reason);
    grpc_stream_finish(st->gs, GRPC_INVALID_ARGUMENT, reason);
}

/* The first request names the proxy. Returns 0, or -1 after finishing the
 * stream. */
static int stream_identify(xds_server_t *srv, xs_stream_t *st,
                           const Envoy__Config__Core__V3__Node *node)
{
    if (st->proxy != NULL)
        return 0;
    char err[256];
    if (node == NULL) {
        reject(st, "the first request carries no node");
        return -1;
    }
    xds_proxy_t *p = xds_proxy_from_node(node, err, sizeof(err));
    if (p == NULL) {
        reject(st, err);
        return -1;
    }
    st->proxy = p;
    st->connected_at = (int64_t)time(NULL);
    srv->st.connected++;
    log_info("ADS: %s connected (%s, %s)", p->id, st->delta ? "delta" : "sotw",
             grpc_stream_peer_addr(st->gs));
    return 0;
}

static void record_nack(xds_server_t *srv, xs_stream_t *st, xds_type_t t, const char *version,
                        const char *msg)
{
    xs_watch_t *w = &st->w[t];
    free(w->nack);
    w->nack = strdup(msg && *msg ? msg : "(no message)");
    srv->st.rejects[t]++;
    log_warn("ADS: %s rejected %s version %s: %s", st->proxy->id, xs_type_short(t),
             version && *version ? version : "-", w->nack);
}

static void record_ack(xds_server_t *srv, xs_stream_t *st, xds_type_t t, const char *version)
{
    xs_watch_t *w = &st->w[t];
    snprintf(w->acked_version, sizeof(w->acked_version), "%s", version);
    memcpy(w->acked_nonce, w->sent_nonce, sizeof(w->acked_nonce));
    free(w->nack);
    w->nack = NULL;
    if (st->conv_start && grpc_stream_queued(st->gs) == 0) {
        xs_hist_observe(&srv->convergence, xs_convergence_bounds,
                        (double)(loop_clock_ms() - st->conv_start) / 1000.0);
        st->conv_start = 0;
    }
}

/* What both protocols check first: the stream knows its proxy (from this
 * request's node the first time) and the type is one meshd serves. */
static int request_type(xds_server_t *srv, xs_stream_t *st,
                        const Envoy__Config__Core__V3__Node *node, const char *type_url,
                        xds_type_t *t)
{
    if (stream_identify(srv, st, node) < 0)
        return -1;
    int ti = xds_type_from_url(type_url);
    if (ti < 0) {
        log_debug("ADS: %s asked for %s, which meshd does not serve", st->proxy->id, type_url);
        return -1;
    }
    *t = (xds_type_t)ti;
    return 0;
}

static void handle_sotw(xds_server_t *srv, xs_stream_t *st, const uint8_t *msg, size_t len)
{
    Envoy__Service__Discovery__V3__DiscoveryRequest *req =
        envoy__service__discovery__v3__discovery_request__unpack(NULL, len, msg);
    if (req == NULL) {
        reject(st, "cannot decode DiscoveryRequest");
        return;
    }
    xds_type_t t;
    if (request_type(srv, st, req->node, req->type_url, &t) < 0)
        goto out;
    xs_watch_t *w = &st->w[t];
    bool initial = req->response_nonce == NULL || req->response_nonce[0] == 0;
    if (!initial && strcmp(req->response_nonce, w->sent_nonce) != 0) {
        log_debug("ADS: %s: stale nonce %s for %s (latest %s), ignored", st->proxy->id,
                  req->response_nonce, xs_type_short(t), w->sent_nonce);
        goto out;
    }
    if (!initial) {
        if (req->error_detail != NULL)
            record_nack(srv, st, t, req->version_info, req->error_detail->message);
        else
            record_ack(srv, st, t, req->version_info);
    }
    bool changed;
    if (type_is_wildcard(t) && req->n_resource_names == 0) {
        changed = !w->wildcard;
        w->wildcard = true;
        names_free(w);
    } else if (req->n_resource_names == 1 && strcmp(req->resource_names[0], "*") == 0) {
        changed = !w->wildcard;
        w->wildcard = true;
    } else {
        changed = w->wildcard;
        w->wildcard = false;
        changed |= names_set(w, req->resource_names, req->n_resource_names);
    }
    if (initial || !w->requested) {
        w->requested = true;
        w->force = true; /* a (re)request always gets an answer */
        w->sent = false;
    } else if (changed) {
        w->force = true;
    }
    if (w->force)
        xs_stream_flush(srv, st);
out:
    envoy__service__discovery__v3__discovery_request__free_unpacked(req, NULL);
}

static void handle_delta(xds_server_t *srv, xs_stream_t *st, const uint8_t *msg, size_t len)
{
    Envoy__Service__Discovery__V3__DeltaDiscoveryRequest *req =
        envoy__service__discovery__v3__delta_discovery_request__unpack(NULL, len, msg);
    if (req == NULL) {
        reject(st, "cannot decode DeltaDiscoveryRequest");
        return;
    }
    xds_type_t t;
    if (request_type(srv, st, req->node, req->type_url, &t) < 0)
        goto out;
    xs_watch_t *w = &st->w[t];
    bool initial = req->response_nonce == NULL || req->response_nonce[0] == 0;
    if (!initial) {
        if (strcmp(req->response_nonce, w->sent_nonce) != 0)
            log_debug("ADS: %s: stale nonce %s for %s (latest %s)", st->proxy->id,
                      req->response_nonce, xs_type_short(t), w->sent_nonce);
        else if (req->error_detail != NULL)
            record_nack(srv, st, t, w->sent_version, req->error_detail->message);
        else
            record_ack(srv, st, t, w->sent_version);
    }
    bool respond = false;
    if (!w->requested) {
        w->requested = true;
        respond = true;
        /* wildcard for LDS/CDS when nothing is named, or by "*" */
        w->wildcard = type_is_wildcard(t) && req->n_resource_names_subscribe == 0;
        for (size_t i = 0; i < req->n_initial_resource_versions; i++) {
            const char *v = req->initial_resource_versions[i]->value;
            char *end = NULL;
            uint64_t h = strtoull(v ? v : "", &end, 16);
            if (v && *v && end && *end == 0)
                dsent_set(w, req->initial_resource_versions[i]->key, h);
        }
    }
    for (size_t i = 0; i < req->n_resource_names_subscribe; i++) {
        if (strcmp(req->resource_names_subscribe[i], "*") == 0) {
            respond |= !w->wildcard;
            w->wildcard = true;
        }
    }
    if (req->n_resource_names_subscribe) {
        uint32_t before = w->nnames;
        names_add(w, req->resource_names_subscribe, req->n_resource_names_subscribe);
        respond |= w->nnames != before;
    }
    if (req->n_resource_names_unsubscribe) {
        for (size_t i = 0; i < req->n_resource_names_unsubscribe; i++) {
            const char *name = req->resource_names_unsubscribe[i];
            if (strcmp(name, "*") == 0)
                w->wildcard = false;
            dsent_del(w, name);
        }
        names_remove(w, req->resource_names_unsubscribe, req->n_resource_names_unsubscribe);
    }
    if (respond) {
        w->force = true;
        xs_stream_flush(srv, st);
    }
out:
    envoy__service__discovery__v3__delta_discovery_request__free_unpacked(req, NULL);
}

/* ---- grpc callbacks ---- */

static void ads_open(grpc_stream_t *gs, void *arg)
{
    xds_server_t *srv = arg;
    xs_stream_t *st = calloc(1, sizeof(*st));
    if (st == NULL)
        abort();
    st->srv = srv;
    st->gs = gs;
    st->delta = strcmp(grpc_stream_path(gs), XDS_ADS_DELTA_PATH) == 0;
    st->pq_index = -1;
    pthread_mutex_lock(&srv->mu);
    st->next = srv->streams;
    if (srv->streams)
        srv->streams->prev = st;
    srv->streams = st;
    srv->nstreams++;
    pthread_mutex_unlock(&srv->mu);
    grpc_stream_set_data(gs, st);
}

static void ads_message(grpc_stream_t *gs, void *data, const uint8_t *msg, size_t len)
{
    (void)gs;
    xs_stream_t *st = data;
    if (st == NULL)
        return;
    xds_server_t *srv = st->srv;
    pthread_mutex_lock(&srv->mu);
    if (st->delta)
        handle_delta(srv, st, msg, len);
    else
        handle_sotw(srv, st, msg, len);
    pthread_mutex_unlock(&srv->mu);
}

static void ads_half_close(grpc_stream_t *gs, void *data)
{
    (void)data;
    grpc_stream_finish(gs, GRPC_OK, NULL);
}

static void ads_writable(grpc_stream_t *gs, void *data)
{
    xs_stream_t *st = data;
    if (st == NULL)
        return;
    xds_server_t *srv = st->srv;
    pthread_mutex_lock(&srv->mu);
    if (st->conv_start && grpc_stream_queued(gs) == 0) {
        xs_hist_observe(&srv->convergence, xs_convergence_bounds,
                        (double)(loop_clock_ms() - st->conv_start) / 1000.0);
        st->conv_start = 0;
    }
    bool pending = false;
    for (int t = 0; t < XDS_NTYPES; t++)
        pending |= st->w[t].pending;
    if (pending)
        xs_stream_flush(srv, st);
    pthread_mutex_unlock(&srv->mu);
}

static void ads_close(grpc_stream_t *gs, void *data)
{
    (void)gs;
    xs_stream_t *st = data;
    if (st == NULL)
        return;
    xds_server_t *srv = st->srv;
    pthread_mutex_lock(&srv->mu);
    xs_push_forget(srv, st);
    if (st->prev)
        st->prev->next = st->next;
    else
        srv->streams = st->next;
    if (st->next)
        st->next->prev = st->prev;
    srv->nstreams--;
    if (st->proxy) {
        srv->st.connected--;
        log_info("ADS: %s disconnected", st->proxy->id);
        if (st->tjob != NULL)
            xs_tjob_detach(srv, st); /* the job frees the proxy */
        else
            xds_proxy_free(st->proxy);
    }
    for (int t = 0; t < XDS_NTYPES; t++) {
        xs_set_unref(srv, st->sets[t]);
        names_free(&st->w[t]);
        dsent_clear(&st->w[t]);
        free(st->w[t].nack);
    }
    pthread_mutex_unlock(&srv->mu);
    free(st);
}

static const grpc_method_t ads_method = {
    .on_open = ads_open,
    .on_message = ads_message,
    .on_half_close = ads_half_close,
    .on_writable = ads_writable,
    .on_close = ads_close,
};

/* ---- debug pages ---- */

static json_object *jstr(const char *s)
{
    return json_object_new_string(s ? s : "");
}

static void syncz(void *ud, const debug_req_t *req, debug_resp_t *resp)
{
    (void)req;
    xds_server_t *srv = ud;
    json_object *arr = json_object_new_array();
    pthread_mutex_lock(&srv->mu);
    for (xs_stream_t *st = srv->streams; st; st = st->next) {
        if (st->proxy == NULL)
            continue;
        json_object *o = json_object_new_object();
        json_object_object_add(o, "proxy", jstr(st->proxy->id));
        char name[256];
        snprintf(name, sizeof(name), "%s.%s", st->proxy->pod_name ? st->proxy->pod_name : "",
                 st->proxy->namespace ? st->proxy->namespace : "");
        json_object_object_add(o, "name", jstr(name));
        json_object_object_add(o, "protocol", jstr(st->delta ? "delta" : "sotw"));
        char ts[32];
        time_t tt = (time_t)st->connected_at;
        struct tm tm;
        gmtime_r(&tt, &tm);
        strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%SZ", &tm);
        json_object_object_add(o, "connected", jstr(ts));
        json_object_object_add(o, "istio_version", jstr(st->proxy->istio_version));
        for (int i = 0; i < XDS_NTYPES; i++) {
            xds_type_t t = push_order[i];
            const xs_watch_t *w = &st->w[t];
            json_object *tw = json_object_new_object();
            json_object_object_add(tw, "requested", json_object_new_boolean(w->requested));
            json_object_object_add(tw, "sent_version", jstr(w->sent_version));
            json_object_object_add(tw, "sent_nonce", jstr(w->sent_nonce));
            json_object_object_add(tw, "acked_version", jstr(w->acked_version));
            json_object_object_add(tw, "acked_nonce", jstr(w->acked_nonce));
            if (w->nack)
                json_object_object_add(tw, "nack", jstr(w->nack));
            json_object_object_add(o, xs_type_short(t), tw);
        }
        json_object_array_add(arr, o);
    }
    pthread_mutex_unlock(&srv->mu);
    const char *s = json_object_to_json_string_ext(arr, JSON_C_TO_STRING_PRETTY);
    debug_resp_text(resp, 200, "application/json", s);
    json_object_put(arr);
}

static void config_dump(void *ud, const debug_req_t *req, debug_resp_t *resp)
{
    xds_server_t *srv = ud;
    const char *id = debug_req_arg(req, "proxyID");
    if (id == NULL || *id == 0) {
        debug_resp_text(resp, 400, "text/plain", "proxyID is required\n");
        return;
    }
    static const char *const keys[XDS_NTYPES] = {"listeners", "routes", "clusters", "endpoints",
                                                 "secrets"};
    json_object *o = NULL;
    pthread_mutex_lock(&srv->mu);
    for (xs_stream_t *st = srv->streams; st && o == NULL; st = st->next) {
        if (st->proxy == NULL || strcmp(st->proxy->id, id) != 0)
            continue;
        xs_stream_refresh(srv, st);
        o = json_object_new_object();
        json_object_object_add(o, "proxy", jstr(st->proxy->id));
        for (int t = 0; t < XDS_NTYPES; t++) {
            json_object *arr = json_object_new_array();
            const xs_set_t *s = st->sets[t];
            for (uint32_t i = 0; s && i < s->n; i++) {
                if (!selected(&st->w[t], s->res[i]->name) && st->w[t].requested)
                    continue;
                json_object *e = json_object_new_object();
                json_object_object_add(e, "name", jstr(s->res[i]->name));
                char h[17];
                snprintf(h, sizeof(h), "%016" PRIx64, s->res[i]->hash);
                json_object_object_add(e, "version", jstr(h));
                json_object *body = xds_resource_to_json((xds_type_t)t, s->res[i]);
                if (body && t == XDS_SECRET)
                    xds_secret_redact_json(body); /* never a private key in clear */
                if (body)
                    json_object_object_add(e, "resource", body);
                json_object_array_add(arr, e);
            }
            json_object_object_add(o, keys[t], arr);
        }
    }
    pthread_mutex_unlock(&srv->mu);
    if (o == NULL) {
        char msg[512];
        snprintf(msg, sizeof(msg), "proxy %s is not connected\n", id);
        debug_resp_text(resp, 404, "text/plain", msg);
        return;
    }
    debug_resp_text(resp, 200, "application/json",
                    json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY));
    json_object_put(o);
}

void xds_server_add_debug(xds_server_t *srv, debug_server_t *dbg)
{
    debug_handle(dbg, "/debug/syncz", "ADS streams: per proxy and type, sent and acked versions",
                 syncz, srv);
    debug_handle(dbg, "/debug/config_dump", "what a proxy receives (?proxyID=ID)", config_dump,
                 srv);
}

/* ---- metrics ---- */

static void appendf(char **buf, size_t *len, size_t *cap, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void appendf(char **buf, size_t *len, size_t *cap, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(*buf ? *buf + *len : NULL, *buf ? *cap - *len : 0, fmt, ap);
        va_end(ap);
        if (n < 0)
            return;
        if (*buf && *len + (size_t)n < *cap) {
            *len += (size_t)n;
            return;
        }
        *cap = (*cap ? *cap * 2 : 4096) + (size_t)n;
        *buf = realloc(*buf, *cap);
        if (*buf == NULL)
            abort();
    }
}

static void hist_text(char **buf, size_t *len, size_t *cap, const char *name, const char *help,
                      const xs_hist_t *h, const double *bounds)
{
    appendf(buf, len, cap, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    uint64_t cum = 0;
    for (int i = 0; i < XS_NBUCKETS - 1; i++) {
        cum += h->counts[i];
        appendf(buf, len, cap, "%s_bucket{le=\"%g\"} %" PRIu64 "\n", name, bounds[i], cum);
    }
    cum += h->counts[XS_NBUCKETS - 1];
    appendf(buf, len, cap, "%s_bucket{le=\"+Inf\"} %" PRIu64 "\n", name, cum);
    appendf(buf, len, cap, "%s_sum %.6f\n%s_count %" PRIu64 "\n", name, h->sum, name, h->count);
}

void xds_server_metrics_text(xds_server_t *srv, char **buf, size_t *len)
{
    size_t cap = *buf ? *len + 1 : 0;
    pthread_mutex_lock(&srv->mu);
    xds_server_stats_t st = srv->st;
    xs_hist_t conv = srv->convergence, pt = srv->push_time;
    pthread_mutex_unlock(&srv->mu);
    if (*buf == NULL)
        *len = 0;
    appendf(buf, len, &cap,
            "# HELP pilot_xds Number of endpoints connected to this pilot using XDS.\n"
            "# TYPE pilot_xds gauge\npilot_xds %" PRIu64 "\n",
            st.connected);
    appendf(buf, len, &cap,
            "# HELP pilot_xds_pushes Pilot build and send errors for lds, rds, cds and eds.\n"
            "# TYPE pilot_xds_pushes counter\n");
    static const xds_type_t order[XDS_NTYPES] = {XDS_CLUSTER, XDS_ENDPOINT, XDS_LISTENER,
                                                 XDS_ROUTE, XDS_SECRET};
    for (int i = 0; i < XDS_NTYPES; i++)
        appendf(buf, len, &cap, "pilot_xds_pushes{type=\"%s\"} %" PRIu64 "\n",
                xs_type_short(order[i]), st.pushes[order[i]]);
    appendf(buf, len, &cap,
            "# HELP pilot_total_xds_rejects Total number of XDS responses from pilot rejected "
            "by proxy.\n# TYPE pilot_total_xds_rejects counter\n");
    for (int i = 0; i < XDS_NTYPES; i++)
        appendf(buf, len, &cap, "pilot_total_xds_rejects{type=\"%s\"} %" PRIu64 "\n",
                xs_type_short(order[i]), st.rejects[order[i]]);
    hist_text(buf, len, &cap, "pilot_proxy_convergence_time",
              "Delay in seconds between config change and a proxy receiving all required "
              "configuration.",
              &conv, xs_convergence_bounds);
    hist_text(buf, len, &cap, "pilot_xds_push_time",
              "Total time in seconds a push takes for every connected proxy.", &pt,
              xs_push_time_bounds);
}

static void metrics_page(void *ud, const debug_req_t *req, debug_resp_t *resp)
{
    (void)req;
    char *buf = NULL;
    size_t len = 0;
    xds_server_metrics_text(ud, &buf, &len);
    resp->status = 200;
    resp->body = buf;
    resp->len = len;
    resp->content_type = "text/plain; version=0.0.4";
}

void xds_server_add_metrics(xds_server_t *srv, debug_server_t *metrics)
{
    debug_handle(metrics, "/metrics", "Prometheus metrics", metrics_page, srv);
}

void xds_server_stats(xds_server_t *srv, xds_server_stats_t *st)
{
    pthread_mutex_lock(&srv->mu);
    *st = srv->st;
    pthread_mutex_unlock(&srv->mu);
}

/* ---- lifecycle ---- */

xds_server_t *xds_server_start(loop_t *loop, grpc_server_t *grpc, cfg_store_t *store,
                               const xds_server_opts_t *opts)
{
    xds_server_t *srv = calloc(1, sizeof(*srv));
    if (srv == NULL)
        return NULL;
    srv->loop = loop;
    srv->grpc = grpc;
    srv->store = store;
    if (opts)
        srv->opts = *opts;
    if (srv->opts.debounce_ms == 0)
        srv->opts.debounce_ms = 100;
    if (srv->opts.debounce_max_ms == 0)
        srv->opts.debounce_max_ms = 10000;
    if (srv->opts.max_queued == 0)
        srv->opts.max_queued = 1u << 20;
    if (srv->opts.push_batch == 0)
        srv->opts.push_batch = 64;
    pthread_mutexattr_t ma;
    pthread_mutexattr_init(&ma);
    pthread_mutexattr_settype(&ma, PTHREAD_MUTEX_RECURSIVE);
    pthread_mutex_init(&srv->mu, &ma);
    pthread_mutexattr_destroy(&ma);
    pthread_mutex_init(&srv->nmu, NULL);
    if (grpc_server_register(grpc, XDS_ADS_SOTW_PATH, &ads_method, srv) < 0 ||
        grpc_server_register(grpc, XDS_ADS_DELTA_PATH, &ads_method, srv) < 0) {
        log_error("ADS: the discovery methods are already registered on this grpc server");
        pthread_mutex_destroy(&srv->mu);
        pthread_mutex_destroy(&srv->nmu);
        free(srv);
        return NULL;
    }
    xs_push_init(srv);
    return srv;
}

void xds_server_stop(xds_server_t *srv)
{
    if (srv == NULL)
        return;
    if (xs_push_posted(srv))
        return; /* the posted notification finishes the stop */
    if (srv->njobs > 0) {
        srv->stop_pending = true; /* the last translation job finishes the stop */
        return;
    }
    while (srv->streams) { /* only when the grpc server still runs */
        xs_stream_t *st = srv->streams;
        grpc_stream_set_data(st->gs, NULL);
        grpc_stream_finish(st->gs, GRPC_UNAVAILABLE, "xDS server stopping");
        ads_close(st->gs, st);
    }
    xs_push_fini(srv);
    size_t it = 0;
    const char *k;
    void *v;
    while (hmap_next(&srv->sets, &it, &k, &v))
        free(v);
    hmap_clear(&srv->sets);
    it = 0;
    while (hmap_next(&srv->blobs, &it, &k, &v))
        free(v);
    hmap_clear(&srv->blobs);
    pthread_mutex_destroy(&srv->mu);
    pthread_mutex_destroy(&srv->nmu);
    free(srv);
}
