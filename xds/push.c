/*
 * ADS pushes: config store changes -> debounce -> one registry rebuild ->
 * one translation per distinct proxy (on the worker pool when there is one),
 * the outbound part of sidecars built once per namespace and Sidecar scope
 * and shared (srv->shared, a tx_shared_t of the generation), its resources
 * interned so that identical bytes are held once and identical sets are
 * shared -> responses only for the types whose content changed, a slice of
 * streams per loop round, holding back streams whose queue is full.
 */
#include <inttypes.h>
#include <malloc.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/log.h"
#include "server_internal.h"
#include "translate_internal.h"

const double xs_convergence_bounds[XS_NBUCKETS - 1] = {0.1, 0.5, 1, 3, 5, 10, 20, 30};
const double xs_push_time_bounds[XS_NBUCKETS - 1] = {0.01, 0.1, 0.5, 1, 3, 5, 10, 20};

void xs_hist_observe(xs_hist_t *h, const double *bounds, double v)
{
    int i = 0;
    while (i < XS_NBUCKETS - 1 && v > bounds[i])
        i++;
    h->counts[i]++;
    h->count++;
    h->sum += v;
}

/* ---- interned resources and sets ---- */

static const xds_resource_t *blob_intern(xds_server_t *srv, xds_type_t t,
                                         const xds_resource_t *r)
{
    size_t nl = strlen(r->name);
    char stackkey[256];
    size_t klen = nl + 24;
    char *key = klen <= sizeof(stackkey) ? stackkey : malloc(klen);
    if (key == NULL)
        abort();
    snprintf(key, klen, "%d:%016" PRIx64 ":%s", (int)t, r->hash, r->name);
    xs_blob_t *b = hmap_get(&srv->blobs, key);
    if (b != NULL) {
        b->refs++;
    } else {
        b = malloc(sizeof(*b) + nl + 1 + r->len + strlen(key) + 1);
        if (b == NULL)
            abort();
        char *p = (char *)(b + 1);
        memcpy(p, r->name, nl + 1);
        b->res.name = p;
        p += nl + 1;
        if (r->len)
            memcpy(p, r->data, r->len);
        b->res.data = (const uint8_t *)p;
        b->res.len = r->len;
        b->res.hash = r->hash;
        p += r->len;
        strcpy(p, key);
        b->key = p;
        b->refs = 1;
        hmap_put(&srv->blobs, b->key, b);
        srv->st.resources_interned++;
        srv->st.resources_bytes += r->len;
    }
    if (key != stackkey)
        free(key);
    return &b->res;
}

static void blob_unref(xds_server_t *srv, const xds_resource_t *r)
{
    xs_blob_t *b = (xs_blob_t *)((char *)r - offsetof(xs_blob_t, res));
    if (--b->refs > 0)
        return;
    hmap_del(&srv->blobs, b->key);
    srv->st.resources_interned--;
    srv->st.resources_bytes -= b->res.len;
    free(b);
}

static xs_set_t *set_intern(xds_server_t *srv, const xds_resources_t *r, xds_type_t t)
{
    uint64_t h = xds_resources_hash(r, t);
    char key[40];
    snprintf(key, sizeof(key), "%d:%016" PRIx64, (int)t, h);
    xs_set_t *s = hmap_get(&srv->sets, key);
    if (s != NULL) {
        s->refs++;
        return s;
    }
    uint32_t n;
    const xds_resource_t *res = xds_resources_get(r, t, &n);
    s = malloc(sizeof(*s) + (n ? n : 1) * sizeof(*s->res));
    if (s == NULL)
        abort();
    s->refs = 1;
    s->type = t;
    s->hash = h;
    s->n = n;
    s->res = (const xds_resource_t **)(s + 1);
    for (uint32_t i = 0; i < n; i++)
        s->res[i] = blob_intern(srv, t, &res[i]);
    memcpy(s->key, key, sizeof(key));
    hmap_put(&srv->sets, s->key, s);
    srv->st.sets_interned++;
    return s;
}

void xs_set_unref(xds_server_t *srv, xs_set_t *s)
{
    if (s == NULL || --s->refs > 0)
        return;
    hmap_del(&srv->sets, s->key);
    srv->st.sets_interned--;
    for (uint32_t i = 0; i < s->n; i++)
        blob_unref(srv, s->res[i]);
    free(s);
}

/* What translation reads of a proxy: its type, namespace, labels, service
 * account, version, flavour, and the service ports it serves (found by its
 * labels and IP). Proxies with equal keys receive equal resources. */
static char *proxy_key(const xds_server_t *srv, const xds_proxy_t *p)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (f == NULL)
        abort();
    fprintf(f, "%d|%s|%s|%s|%s|%d|", (int)p->type, p->namespace ? p->namespace : "",
            p->service_account ? p->service_account : "", p->cluster_id ? p->cluster_id : "",
            p->istio_version ? p->istio_version : "", (int)p->proxyless);
    for (uint32_t i = 0; i < p->labels.n; i++)
        fprintf(f, "%s=%s;", p->labels.v[i].key, p->labels.v[i].value);
    reg_target_t tg[64];
    uint32_t n = reg_targets(srv->reg, p->namespace, &p->labels, p->ip, tg, 64);
    if (n > 64) { /* too many to list: this proxy gets its own translation */
        fprintf(f, "|ip=%s", p->ip ? p->ip : "");
        n = 0;
    }
    for (uint32_t i = 0; i < n; i++)
        fprintf(f, "|%s:%u:%u:%u", tg[i].service ? tg[i].service->hostname : "",
                tg[i].port ? tg[i].port->port : 0, tg[i].target_port,
                tg[i].port ? (unsigned)tg[i].port->protocol : 0);
    const reg_workload_t *wl = p->ip ? reg_workload_by_ip(srv->reg, p->ip) : NULL;
    if (wl)
        fprintf(f, "|wl=%s/%s", wl->namespace, wl->locality ? wl->locality : "");
    fclose(f);
    return buf;
}

/* The generation's outbound cache, made when missing. */
static tx_shared_t *shared_get(xds_server_t *srv)
{
    if (srv->shared == NULL) {
        xds_input_t in = {.snap = srv->snap,
                          .reg = srv->reg,
                          .trust_domain = srv->opts.trust_domain,
                          .root_namespace = srv->opts.root_namespace};
        srv->shared = tx_shared_new(&in);
    }
    return srv->shared;
}

static void shared_drop(xds_server_t *srv)
{
    if (srv->shared == NULL)
        return;
    uint64_t built, reused;
    tx_shared_stats(srv->shared, &built, &reused);
    log_debug("ADS: generation %" PRIu64 ": %" PRIu64 " outbound parts built, %" PRIu64
              " reused",
              srv->gen, built, reused);
    tx_shared_unref(srv->shared);
    srv->shared = NULL;
}

static void shared_idle(loop_timer_t *t, void *arg)
{
    (void)t;
    xds_server_t *srv = arg;
    pthread_mutex_lock(&srv->mu);
    if (srv->njobs == 0 && srv->pqpos == srv->pqn && srv->shared != NULL) {
        shared_drop(srv);
        malloc_trim(0);
    }
    pthread_mutex_unlock(&srv->mu);
}

static void tcache_clear(xds_server_t *srv)
{
    size_t it = 0;
    const char *k;
    void *v;
    while (hmap_next(&srv->tcache, &it, &k, &v)) {
        xs_tcache_t *e = v;
        for (int t = 0; t < XDS_NTYPES; t++)
            xs_set_unref(srv, e->sets[t]);
        free(e->key);
        free(e);
    }
    hmap_clear(&srv->tcache);
}

void xs_stream_refresh(xds_server_t *srv, xs_stream_t *st)
{
    if (st->proxy == NULL || (st->gen == srv->gen && st->sets[0] != NULL))
        return;
    char *key = proxy_key(srv, st->proxy);
    xs_tcache_t *e = hmap_get(&srv->tcache, key);
    if (e != NULL) {
        free(key);
        if (e->made_for != st->proxy)
            srv->st.translations_shared++;
    } else {
        xds_input_t in = {.snap = srv->snap,
                          .reg = srv->reg,
                          .trust_domain = srv->opts.trust_domain,
                          .root_namespace = srv->opts.root_namespace};
        xds_resources_t *r = tx_translate_shared(shared_get(srv), &in, st->proxy);
        srv->st.translations++;
        e = calloc(1, sizeof(*e));
        if (e == NULL)
            abort();
        e->key = key;
        e->made_for = st->proxy;
        for (int t = 0; t < XDS_NTYPES; t++)
            e->sets[t] = set_intern(srv, r, (xds_type_t)t);
        xds_resources_unref(r);
        hmap_put(&srv->tcache, e->key, e);
    }
    for (int t = 0; t < XDS_NTYPES; t++) {
        e->sets[t]->refs++;
        xs_set_unref(srv, st->sets[t]);
        st->sets[t] = e->sets[t];
    }
    st->gen = srv->gen;
}

/* ---- the push queue ---- */

static void clear_resps(xds_server_t *srv)
{
    size_t it = 0;
    const char *k;
    void *v;
    while (hmap_next(&srv->resps, &it, &k, &v)) {
        xs_resp_t *rp = v;
        grpc_buf_unref(rp->buf);
        free(rp);
    }
    hmap_clear(&srv->resps);
    srv->resps_bytes = 0;
}

void xs_push_forget(xds_server_t *srv, xs_stream_t *st)
{
    if (st->pq_index >= 0 && (size_t)st->pq_index < srv->pqn && srv->pq[st->pq_index] == st)
        srv->pq[st->pq_index] = NULL;
    st->pq_index = -1;
}

static void push_done(xds_server_t *srv)
{
    double secs = (double)(loop_clock_ms() - srv->push_started_ms) / 1000.0;
    xs_hist_observe(&srv->push_time, xs_push_time_bounds, secs);
    srv->pushing = false;
    clear_resps(srv); /* every stream has its response queued: nothing left to share */
    shared_drop(srv); /* every proxy is translated: the interned sets hold the rest */
    malloc_trim(0); /* hand the translations' transient memory back to the system */
    log_debug("ADS: push %" PRIu64 " done in %.3f s (%u proxies)", srv->gen, secs,
              srv->nstreams);
    if (srv->dirty && !loop_timer_active(srv->debounce))
        loop_timer_start(srv->debounce, 0, 0);
}

void xs_push_enqueue(xds_server_t *srv, xs_stream_t *st)
{
    if (st->pq_index >= 0)
        return;
    if (srv->pqn == srv->pqcap) {
        srv->pqcap = srv->pqcap ? srv->pqcap * 2 : 256;
        srv->pq = realloc(srv->pq, srv->pqcap * sizeof(*srv->pq));
        if (srv->pq == NULL)
            abort();
    }
    st->pq_index = (long)srv->pqn;
    srv->pq[srv->pqn++] = st;
    if (!loop_timer_active(srv->pushtimer))
        loop_timer_start(srv->pushtimer, 0, 0);
}

bool xs_stream_ready(xds_server_t *srv, xs_stream_t *st)
{
    if (st->proxy == NULL)
        return false;
    if (st->gen == srv->gen && st->sets[0] != NULL)
        return true;
    char *key = proxy_key(srv, st->proxy);
    bool hit = hmap_get(&srv->tcache, key) != NULL;
    free(key);
    if (hit)
        xs_stream_refresh(srv, st);
    return hit;
}

/* ---- translation jobs (opts.workq) ---- */

typedef struct xs_tjob {
    xds_server_t *srv;
    char *key;
    uint64_t gen;
    xds_input_t in;
    cfg_snap_t *snap;
    reg_t *reg;
    tx_shared_t *shared;
    xds_proxy_t *proxy;
    bool own_proxy; /* the stream closed: the job frees the proxy */
    xs_stream_t *st;
    xds_resources_t *r;
} xs_tjob_t;

static void tjob_work(void *arg)
{
    xs_tjob_t *j = arg;
    j->r = tx_translate_shared(j->shared, &j->in, j->proxy);
}

static void tjob_done(void *arg)
{
    xs_tjob_t *j = arg;
    xds_server_t *srv = j->srv;
    pthread_mutex_lock(&srv->mu);
    if (hmap_get(&srv->tjobs, j->key) == j)
        hmap_del(&srv->tjobs, j->key);
    srv->njobs--;
    srv->st.translations++;
    if (j->gen == srv->gen && hmap_get(&srv->tcache, j->key) == NULL) {
        xs_tcache_t *e = calloc(1, sizeof(*e));
        if (e == NULL)
            abort();
        e->key = j->key;
        e->made_for = j->own_proxy ? NULL : j->proxy;
        j->key = NULL;
        for (int t = 0; t < XDS_NTYPES; t++)
            e->sets[t] = set_intern(srv, j->r, (xds_type_t)t);
        hmap_put(&srv->tcache, e->key, e);
    }
    xds_resources_unref(j->r);
    if (j->st)
        j->st->tjob = NULL;
    if (j->own_proxy)
        xds_proxy_free(j->proxy);
    tx_shared_unref(j->shared);
    reg_unref(j->reg);
    cfg_snap_release(j->snap);
    free(j->key);
    free(j);
    if (!srv->stop_pending) {
        for (xs_stream_t *st = srv->streams; st; st = st->next) {
            if (st->waiting) {
                st->waiting = false;
                xs_push_enqueue(srv, st);
            }
        }
        if (srv->pqn == srv->pqpos && srv->pushing && srv->njobs == 0)
            loop_timer_start(srv->pushtimer, 0, 0);
    }
    bool stop = srv->stop_pending && srv->njobs == 0;
    pthread_mutex_unlock(&srv->mu);
    if (stop)
        xds_server_stop(srv);
}

/* Starts (or joins) the translation of the stream's proxy on the pool; the
 * stream is queued again when it finishes. */
static void translate_async(xds_server_t *srv, xs_stream_t *st)
{
    st->waiting = true;
    if (st->tjob != NULL) /* its proxy is lent to a job still running */
        return;
    char *key = proxy_key(srv, st->proxy);
    if (hmap_get(&srv->tjobs, key) != NULL) { /* an equal proxy is being translated */
        free(key);
        return;
    }
    xs_tjob_t *j = calloc(1, sizeof(*j));
    if (j == NULL)
        abort();
    j->srv = srv;
    j->key = key;
    j->gen = srv->gen;
    j->snap = cfg_snap_ref(srv->snap);
    j->reg = reg_ref(srv->reg);
    j->shared = tx_shared_ref(shared_get(srv));
    j->in = (xds_input_t){.snap = j->snap,
                          .reg = j->reg,
                          .trust_domain = srv->opts.trust_domain,
                          .root_namespace = srv->opts.root_namespace};
    j->proxy = st->proxy;
    j->st = st;
    st->tjob = j;
    hmap_put(&srv->tjobs, j->key, j);
    srv->njobs++;
    if (workq_submit(srv->opts.workq, srv->loop, tjob_work, tjob_done, j) < 0) {
        tjob_work(j); /* the pool is shutting down: translate here */
        tjob_done(j);
    }
}

void xs_tjob_detach(xds_server_t *srv, xs_stream_t *st)
{
    (void)srv;
    if (st->tjob == NULL)
        return;
    st->tjob->st = NULL;
    st->tjob->own_proxy = true;
    st->tjob = NULL;
    st->proxy = NULL; /* now the job's */
}

/* Works through the queue a slice at a time (at most push_batch streams and,
 * past the first, 10 ms), so that the loop serves I/O between slices. */
static void push_step(loop_timer_t *t, void *arg)
{
    (void)t;
    xds_server_t *srv = arg;
    pthread_mutex_lock(&srv->mu);
    uint64_t start = loop_clock_ms();
    uint32_t done = 0;
    while (srv->pqpos < srv->pqn && done < srv->opts.push_batch &&
           (done == 0 || loop_clock_ms() - start < 10)) {
        xs_stream_t *st = srv->pq[srv->pqpos++];
        if (st == NULL)
            continue;
        st->pq_index = -1;
        done++;
        if (!xs_stream_ready(srv, st)) {
            if (srv->opts.workq != NULL) {
                translate_async(srv, st);
                continue;
            }
            xs_stream_refresh(srv, st);
        }
        xs_stream_flush(srv, st);
    }
    if (srv->pqpos < srv->pqn) {
        loop_timer_start(srv->pushtimer, 0, 0);
    } else {
        srv->pqn = srv->pqpos = 0;
        if (srv->pushing && srv->njobs == 0)
            push_done(srv);
        if (srv->njobs == 0 && srv->shared != NULL)
            loop_timer_start(srv->shared_idle, XS_SHARED_IDLE_MS, 0);
    }
    pthread_mutex_unlock(&srv->mu);
}

/* Starts a push generation: new snapshot and registry, every stream queued. */
static void push_start(xds_server_t *srv, uint64_t change_ms)
{
    pthread_mutex_lock(&srv->mu);
    cfg_snap_t *snap = cfg_store_snapshot(srv->store);
    reg_t *reg = reg_build(snap);
    shared_drop(srv); /* before the snapshot it borrows goes */
    if (srv->reg)
        reg_unref(srv->reg);
    if (srv->snap)
        cfg_snap_release(srv->snap);
    srv->snap = snap;
    srv->reg = reg;
    srv->gen++;
    srv->st.push_rounds++;
    clear_resps(srv);
    tcache_clear(srv);
    srv->push_change_ms = change_ms;
    srv->push_started_ms = loop_clock_ms();
    srv->pushing = true;
    size_t n = 0;
    for (xs_stream_t *st = srv->streams; st; st = st->next) {
        if (st->proxy == NULL)
            continue;
        if (st->conv_start == 0)
            st->conv_start = change_ms;
        xs_push_enqueue(srv, st);
        n++;
    }
    log_debug("ADS: push %" PRIu64 " to %zu proxies (store version %" PRIu64 ")", srv->gen, n,
              cfg_snap_version(snap));
    pthread_mutex_unlock(&srv->mu);
    push_step(srv->pushtimer, srv);
}

static void debounce_fire(loop_timer_t *t, void *arg)
{
    (void)t;
    xds_server_t *srv = arg;
    if (!srv->dirty || srv->store == NULL) /* nothing to do, or stopping */
        return;
    if (srv->pushing) /* push_done re-arms us */
        return;
    uint64_t now = loop_clock_ms();
    uint64_t quiet_at = srv->last_change_ms + srv->opts.debounce_ms;
    uint64_t max_at = srv->first_change_ms + srv->opts.debounce_max_ms;
    if (now < quiet_at && now < max_at) {
        uint64_t at = quiet_at < max_at ? quiet_at : max_at;
        loop_timer_start(srv->debounce, at - now, 0);
        return;
    }
    srv->dirty = false;
    push_start(srv, srv->first_change_ms);
}

static void on_change_loop(void *arg)
{
    xds_server_t *srv = arg;
    pthread_mutex_lock(&srv->nmu);
    srv->posted = false;
    bool stopping = srv->stopping;
    uint64_t first = srv->n_first_ms;
    srv->n_first_ms = 0;
    pthread_mutex_unlock(&srv->nmu);
    if (stopping) {
        xds_server_stop(srv);
        return;
    }
    uint64_t now = loop_clock_ms();
    if (!srv->dirty) {
        srv->dirty = true;
        srv->first_change_ms = first ? first : now;
    }
    srv->last_change_ms = now;
    if (!srv->pushing)
        debounce_fire(srv->debounce, srv);
}

/* Store writer thread. */
static void on_store_event(void *ud, const cfg_event_t *ev)
{
    (void)ev;
    xds_server_t *srv = ud;
    pthread_mutex_lock(&srv->nmu);
    if (srv->n_first_ms == 0)
        srv->n_first_ms = loop_clock_ms();
    bool post = !srv->posted && !srv->stopping;
    if (post)
        srv->posted = true;
    pthread_mutex_unlock(&srv->nmu);
    if (post && loop_post(srv->loop, on_change_loop, srv) < 0) {
        pthread_mutex_lock(&srv->nmu);
        srv->posted = false;
        pthread_mutex_unlock(&srv->nmu);
    }
}

void xds_server_push_all(xds_server_t *srv)
{
    if (srv->store == NULL)
        return;
    if (srv->pushing) {
        srv->dirty = true;
        if (srv->first_change_ms == 0)
            srv->first_change_ms = loop_clock_ms();
        return;
    }
    srv->dirty = false;
    push_start(srv, loop_clock_ms());
}

void xs_push_init(xds_server_t *srv)
{
    srv->snap = cfg_store_snapshot(srv->store);
    srv->reg = reg_build(srv->snap);
    srv->gen = 1;
    srv->debounce = loop_timer_new(srv->loop, debounce_fire, srv);
    srv->pushtimer = loop_timer_new(srv->loop, push_step, srv);
    srv->shared_idle = loop_timer_new(srv->loop, shared_idle, srv);
    cfg_store_subscribe(srv->store, on_store_event, srv);
}

void xs_push_fini(xds_server_t *srv)
{
    loop_timer_free(srv->debounce);
    loop_timer_free(srv->pushtimer);
    loop_timer_free(srv->shared_idle);
    shared_drop(srv);
    clear_resps(srv);
    tcache_clear(srv);
    hmap_clear(&srv->tjobs); /* empty: stop waits for the last job */
    free(srv->pq);
    if (srv->reg)
        reg_unref(srv->reg);
    if (srv->snap)
        cfg_snap_release(srv->snap);
}

/* Unsubscribes and tells xds_server_stop whether a notification is still in
 * flight; if so, that notification finishes the stop when it runs. */
bool xs_push_posted(xds_server_t *srv)
{
    if (srv->store != NULL) {
        cfg_store_unsubscribe(srv->store, on_store_event, srv);
        srv->store = NULL;
    }
    pthread_mutex_lock(&srv->nmu);
    bool p = srv->posted;
    srv->stopping = true;
    pthread_mutex_unlock(&srv->nmu);
    return p;
}

uint64_t xds_server_store_version(xds_server_t *srv)
{
    pthread_mutex_lock(&srv->mu);
    uint64_t v = srv->snap ? cfg_snap_version(srv->snap) : 0;
    pthread_mutex_unlock(&srv->mu);
    return v;
}
