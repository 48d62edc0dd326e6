/*
 * The informer loop: one thread, one libcurl multi handle, one transfer at a
 * time per kind (a LIST page or a WATCH), timers for backoff and for kinds
 * the server does not serve, and a helper thread for discovery.
 *
 * Per kind:  DISCOVER -> LIST (pages) -> WATCH -> WATCH ...
 *                  |          ^  410 Gone  |
 *                  v          +------------+
 *               ABSENT (retry with rediscovery)     BACKOFF -> LIST or WATCH
 *
 * Watch events are applied to the store as they arrive, one store batch per
 * chunk of the stream; a LIST's objects are applied in one batch when its
 * last page arrives, diffed against the store.
 */
#include <errno.h>
#include <inttypes.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../common/hmap.h"
#include "../common/log.h"
#include "informer_internal.h"

#define MAX_LIST_BODY (512u << 20) /* one LIST page */
#define MAX_ERROR_BODY (64u << 10) /* the body of a failed request we keep */
#define MAX_LINE (64u << 20) /* one watch event */
#define WATCH_GRACE_S 30 /* client-side limit past the server's timeoutSeconds */
#define SHORT_WATCH_MS 1000 /* a watch that ends sooner than this without events backs off */

enum wstate { W_DISCOVER, W_ABSENT, W_LIST, W_WATCH, W_BACKOFF };
static const char *const state_names[] = {"discovering", "absent", "listing", "watching", "backoff"};

/* Why the data callback stopped a watch. */
enum abort_reason { AB_NONE, AB_RELIST, AB_RESTART, AB_ERROR, AB_TOO_LONG };

typedef struct buf {
    char *p;
    size_t len, cap;
} buf_t;

struct watcher {
    informer_t *inf;
    cfg_kind_t kind;
    const cfg_kind_info_t *ki;
    informer_filter_fn keep;
    const char *label_selector, *field_selector;

    enum wstate state;
    enum wstate after_backoff; /* W_LIST or W_WATCH */
    char version[32];
    char api_version[160];
    char rv[64]; /* last resourceVersion seen */
    bool listed_once;
    bool synced;
    bool absent_logged;

    /* the current transfer */
    CURL *h;
    struct curl_slist *hdrs;
    char errbuf[CURL_ERROR_SIZE];
    long status;
    bool is_watch;
    buf_t body; /* a LIST page, or the body of a failed request */
    buf_t line; /* a watch event not yet complete */
    enum abort_reason abort;
    uint64_t started_ms;
    uint64_t lines; /* watch lines of this transfer */

    /* the LIST in progress */
    char *cont; /* continue token, NULL on the first page */
    unsigned pages;
    uint64_t list_started_ms;
    cfg_object_t **objs;
    size_t nobjs, capobjs;
    hmap_t seen; /* "ns/name" of every object the server listed (keys malloc'd) */
    uint32_t list_invalid;

    /* retries */
    uint64_t next_ms;
    int backoff_ms;
    uint64_t fails; /* consecutive failures */
    uint64_t last_log_ms;
    uint64_t suppressed;

    informer_kind_stats_t st; /* under inf->lock */
};

struct informer {
    informer_opts_t o;
    struct watcher *ws;
    size_t nw;
    CURLM *multi;
    pthread_t thread, disc_thread;
    bool thread_started, disc_started;
    atomic_bool stop;
    uint64_t rng;
    uint64_t started_ms;

    pthread_mutex_t lock; /* stats, synced, discovery hand-off */
    pthread_cond_t cond; /* synced changed */
    pthread_cond_t disc_cond; /* discovery requested */
    bool synced;
    bool disc_requested, disc_running, disc_done, disc_stop;
    int disc_rc;
    uint64_t disc_next_ms; /* retry of a failed discovery, 0 when none is due */
    int disc_backoff_ms;
    uint64_t disc_fails, disc_last_log_ms;
};

/* ---- small helpers ---- */

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static uint64_t rnd(informer_t *inf)
{
    uint64_t x = inf->rng;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    inf->rng = x;
    return x;
}

static bool buf_append(buf_t *b, const char *p, size_t n, size_t max)
{
    if (b->len + n > max)
        return false;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n + 1)
            cap *= 2;
        b->p = mesh_xrealloc(b->p, cap);
        b->cap = cap;
    }
    memcpy(b->p + b->len, p, n);
    b->len += n;
    b->p[b->len] = '\0';
    return true;
}

static void buf_free(buf_t *b)
{
    free(b->p);
    memset(b, 0, sizeof(*b));
}

static const char *kname(const struct watcher *w)
{
    return w->ki->name;
}

static void set_state(struct watcher *w, enum wstate s)
{
    w->state = s;
    pthread_mutex_lock(&w->inf->lock);
    snprintf(w->st.state, sizeof(w->st.state), "%s", state_names[s]);
    pthread_mutex_unlock(&w->inf->lock);
}

static void set_rv(struct watcher *w, const char *rv)
{
    if (rv == NULL || rv[0] == '\0')
        return;
    snprintf(w->rv, sizeof(w->rv), "%s", rv);
    pthread_mutex_lock(&w->inf->lock);
    snprintf(w->st.resource_version, sizeof(w->st.resource_version), "%s", rv);
    pthread_mutex_unlock(&w->inf->lock);
}

/* Adds n to one counter of the kind's statistics. */
#define STAT_ADD(w, field, n)                                                                      \
    do {                                                                                           \
        pthread_mutex_lock(&(w)->inf->lock);                                                       \
        (w)->st.field += (n);                                                                      \
        pthread_mutex_unlock(&(w)->inf->lock);                                                     \
    } while (0)

static void set_last_error(struct watcher *w, const char *msg)
{
    size_t n = strnlen(msg, sizeof(w->st.last_error) - 1);
    pthread_mutex_lock(&w->inf->lock);
    memcpy(w->st.last_error, msg, n);
    w->st.last_error[n] = '\0';
    pthread_mutex_unlock(&w->inf->lock);
}

/* ---- failures, backoff and rate-limited logging ---- */

static int next_backoff(informer_t *inf, int *backoff_ms)
{
    int b = *backoff_ms ? *backoff_ms * 2 : inf->o.backoff_initial_ms;
    if (b > inf->o.backoff_max_ms)
        b = inf->o.backoff_max_ms;
    *backoff_ms = b;
    /* jitter: a delay between half and all of the backoff */
    return b / 2 + (int)(rnd(inf) % (uint64_t)(b / 2 + 1));
}

static void start_list(struct watcher *w);
static void start_watch(struct watcher *w);

/* A failed request: logs (at most once per interval per kind), counts, and
 * schedules `next` after the backoff. */
static void failed(struct watcher *w, enum wstate next, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void failed(struct watcher *w, enum wstate next, const char *fmt, ...)
{
    informer_t *inf = w->inf;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    int delay = next_backoff(inf, &w->backoff_ms);
    uint64_t now = now_ms();
    w->fails++;
    STAT_ADD(w, failures, 1);
    set_last_error(w, msg);
    if (w->last_log_ms == 0 || now - w->last_log_ms >= (uint64_t)inf->o.log_interval_ms) {
        if (w->suppressed > 0)
            log_warn("%s: %s; retrying in %d ms (%" PRIu64 " failures since the last message)",
                     kname(w), msg, delay, w->suppressed + 1);
        else
            log_warn("%s: %s; retrying in %d ms", kname(w), msg, delay);
        w->last_log_ms = now;
        w->suppressed = 0;
    } else {
        w->suppressed++;
    }
    w->after_backoff = next;
    w->next_ms = now + (uint64_t)delay;
    set_state(w, W_BACKOFF);
}

/* A request worked: forget the backoff, and say so if it had failed. */
static void recovered(struct watcher *w)
{
    if (w->fails > 0)
        log_info("%s: connected again after %" PRIu64 " failed attempt%s", kname(w), w->fails,
                 w->fails == 1 ? "" : "s");
    w->fails = 0;
    w->backoff_ms = 0;
    w->last_log_ms = 0;
    w->suppressed = 0;
}

/* Gives the memory a LIST's parsing used back to the system: the parse trees
 * are large and short-lived, the objects kept are small and long-lived, and
 * without this the heap keeps the difference as holes. */
static void release_parse_memory(void)
{
#ifdef __GLIBC__
    malloc_trim(0);
#endif
}

/* ---- sync state ---- */

static void update_synced(informer_t *inf)
{
    bool all = true;
    for (size_t i = 0; i < inf->nw; i++)
        all = all && inf->ws[i].synced;
    pthread_mutex_lock(&inf->lock);
    bool was = inf->synced;
    inf->synced = all;
    if (all && !was)
        pthread_cond_broadcast(&inf->cond);
    pthread_mutex_unlock(&inf->lock);
    if (all && !was) {
        release_parse_memory();
        cfg_snap_t *snap = cfg_store_snapshot(inf->o.store);
        log_info("informers synced: %zu objects of %zu kinds in %" PRIu64 " ms",
                 cfg_snap_count(snap, CFG_KIND_NONE), inf->nw, now_ms() - inf->started_ms);
        cfg_snap_release(snap);
    }
}

static void mark_synced(struct watcher *w)
{
    if (w->synced)
        return;
    w->synced = true;
    pthread_mutex_lock(&w->inf->lock);
    w->st.synced = true;
    pthread_mutex_unlock(&w->inf->lock);
    update_synced(w->inf);
}

/* ---- transfers ---- */

static size_t on_data(char *p, size_t size, size_t n, void *ud);

static void end_transfer(struct watcher *w)
{
    if (w->h != NULL) {
        curl_multi_remove_handle(w->inf->multi, w->h);
        curl_easy_cleanup(w->h);
        w->h = NULL;
    }
    curl_slist_free_all(w->hdrs);
    w->hdrs = NULL;
    w->body.len = 0;
    w->line.len = 0;
    if (w->line.cap > (1u << 20))
        buf_free(&w->line);
}

/* Appends "&name=<escaped value>" to q. */
static void add_param(CURL *h, char *q, size_t qsize, const char *name, const char *value)
{
    if (value == NULL || value[0] == '\0')
        return;
    char *esc = curl_easy_escape(h, value, 0);
    size_t l = strlen(q);
    snprintf(q + l, qsize - l, "%s%s=%s", l ? "&" : "", name, esc ? esc : "");
    curl_free(esc);
}

static bool begin_transfer(struct watcher *w, const char *query, bool watch, long timeout_s)
{
    informer_t *inf = w->inf;
    char path[8192];
    CURL *h = curl_easy_init();
    if (h == NULL) {
        failed(w, watch ? W_WATCH : W_LIST, "cannot create a transfer");
        return false;
    }
    if (kube_path(inf->o.client, w->ki->group, w->version, w->ki->plural, NULL, NULL, query, path,
                  sizeof(path)) != 0) {
        curl_easy_cleanup(h);
        failed(w, watch ? W_WATCH : W_LIST, "request path too long");
        return false;
    }
    struct curl_slist *hdrs = kube_prepare(inf->o.client, h, "GET", path, NULL);
    if (hdrs == NULL) {
        curl_easy_cleanup(h);
        failed(w, watch ? W_WATCH : W_LIST, "cannot prepare the request for %s", path);
        return false;
    }
    w->errbuf[0] = '\0';
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, w);
    curl_easy_setopt(h, CURLOPT_PRIVATE, w);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, w->errbuf);
    /* HTTP/1.1, one connection per kind: libcurl 7.88's HTTP/2 multiplexing
     * can stall a stream for good under the load of a large initial LIST. */
    curl_easy_setopt(h, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
    curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(h, CURLOPT_TCP_KEEPIDLE, 30L);
    curl_easy_setopt(h, CURLOPT_TCP_KEEPINTVL, 10L);
    if (watch)
        curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (timeout_s + WATCH_GRACE_S) * 1000L);
    w->h = h;
    w->hdrs = hdrs;
    w->status = 0;
    w->is_watch = watch;
    w->abort = AB_NONE;
    w->lines = 0;
    w->body.len = 0;
    w->line.len = 0;
    w->started_ms = now_ms();
    if (curl_multi_add_handle(inf->multi, h) != CURLM_OK) {
        end_transfer(w);
        failed(w, watch ? W_WATCH : W_LIST, "cannot start the request");
        return false;
    }
    set_state(w, watch ? W_WATCH : W_LIST);
    return true;
}

static void clear_list(struct watcher *w)
{
    for (size_t i = 0; i < w->nobjs; i++)
        cfg_object_unref(w->objs[i]);
    w->nobjs = 0;
    size_t it = 0;
    const char *key;
    void *val;
    while (hmap_next(&w->seen, &it, &key, &val))
        free((char *)key);
    hmap_clear(&w->seen);
    free(w->cont);
    w->cont = NULL;
    w->pages = 0;
    w->list_invalid = 0;
}

/* Requests the next page of the LIST (the first when w->cont is NULL). */
static void start_list(struct watcher *w)
{
    informer_t *inf = w->inf;
    char q[4096 + 1024] = "";
    if (w->cont == NULL) {
        clear_list(w);
        w->list_started_ms = now_ms();
    }
    snprintf(q, sizeof(q), "limit=%d", inf->o.list_limit);
    CURL *tmp = curl_easy_init();
    if (tmp == NULL) {
        failed(w, W_LIST, "cannot create a transfer");
        return;
    }
    add_param(tmp, q, sizeof(q), "continue", w->cont);
    add_param(tmp, q, sizeof(q), "labelSelector", w->label_selector);
    add_param(tmp, q, sizeof(q), "fieldSelector", w->field_selector);
    curl_easy_cleanup(tmp);
    begin_transfer(w, q, false, 0);
}

static void start_watch(struct watcher *w)
{
    informer_t *inf = w->inf;
    int span = inf->o.watch_timeout_max_s - inf->o.watch_timeout_min_s;
    long timeout = inf->o.watch_timeout_min_s + (span > 0 ? (long)(rnd(inf) % (uint64_t)(span + 1)) : 0);
    char q[4096];
    snprintf(q, sizeof(q), "watch=1&allowWatchBookmarks=true&timeoutSeconds=%ld", timeout);
    CURL *tmp = curl_easy_init();
    if (tmp == NULL) {
        failed(w, W_WATCH, "cannot create a transfer");
        return;
    }
    add_param(tmp, q, sizeof(q), "resourceVersion", w->rv);
    add_param(tmp, q, sizeof(q), "labelSelector", w->label_selector);
    add_param(tmp, q, sizeof(q), "fieldSelector", w->field_selector);
    curl_easy_cleanup(tmp);
    if (begin_transfer(w, q, true, timeout))
        STAT_ADD(w, watches, 1);
}

/* ---- watch events ---- */

static bool store_has(informer_t *inf, cfg_kind_t kind, const char *ns, const char *name)
{
    cfg_snap_t *snap = cfg_store_snapshot(inf->o.store);
    bool has = cfg_snap_get(snap, kind, ns, name) != NULL;
    cfg_snap_release(snap);
    return has;
}

static void log_rejected(struct watcher *w, const char *ns, const char *name, const char *rv,
                         const char *error)
{
    bool kept = store_has(w->inf, w->kind, ns, name);
    char id[600];
    if (ns[0])
        snprintf(id, sizeof(id), "%s/%s", ns, name);
    else
        snprintf(id, sizeof(id), "%s", name);
    log_warn("rejected %s %s at resourceVersion %s (%s): %s", kname(w), id, rv,
             kept ? "its last good version stays in effect" : "skipped", error);
    char msg[512];
    snprintf(msg, sizeof(msg), "%s", error);
    set_last_error(w, msg);
    STAT_ADD(w, invalid, 1);
}

/* Applies one line of the watch stream; -1 stops the watch (w->abort says why). */
static int handle_line(struct watcher *w, const char *line, size_t len)
{
    informer_t *inf = w->inf;
    while (len > 0 && (line[len - 1] == '\r' || line[len - 1] == ' ' || line[len - 1] == '\t'))
        len--;
    if (len == 0)
        return 0;
    informer_event_t ev;
    char err[512];
    if (informer_decode_event(line, len, w->kind, w->api_version, w->keep, &ev, err, sizeof(err)) != 0) {
        STAT_ADD(w, malformed, 1);
        char msg[700];
        snprintf(msg, sizeof(msg), "malformed watch event (%s)", err);
        set_last_error(w, msg);
        log_warn("%s: %s; restarting the watch from resourceVersion %s", kname(w), msg, w->rv);
        w->abort = AB_RESTART;
        return -1;
    }
    int rc = 0;
    switch (ev.type) {
    case INFORMER_ADDED:
    case INFORMER_MODIFIED:
        if (ev.obj != NULL)
            cfg_store_put(inf->o.store, ev.obj);
        else if (ev.filtered)
            cfg_store_delete(inf->o.store, w->kind, ev.ns, ev.name);
        else
            log_rejected(w, ev.ns, ev.name, ev.resource_version, ev.error);
        set_rv(w, ev.resource_version);
        STAT_ADD(w, events, 1);
        break;
    case INFORMER_DELETED:
        cfg_store_delete(inf->o.store, w->kind, ev.ns, ev.name);
        set_rv(w, ev.resource_version);
        STAT_ADD(w, events, 1);
        break;
    case INFORMER_BOOKMARK:
        set_rv(w, ev.resource_version);
        STAT_ADD(w, bookmarks, 1);
        break;
    case INFORMER_ERROR: {
        char msg[600];
        snprintf(msg, sizeof(msg), "watch error %d: %s", ev.code, ev.error);
        set_last_error(w, msg);
        if (ev.code == 410) {
            log_info("%s: watch from resourceVersion %s expired (%s); relisting", kname(w), w->rv,
                     ev.error);
            w->abort = AB_RELIST;
        } else {
            w->abort = AB_ERROR;
        }
        rc = -1;
        break;
    }
    }
    informer_event_clear(&ev);
    return rc;
}

static size_t on_data(char *data, size_t size, size_t n, void *ud)
{
    struct watcher *w = ud;
    const char *p = data;
    size_t len = size * n;
    if (w->status == 0)
        curl_easy_getinfo(w->h, CURLINFO_RESPONSE_CODE, &w->status);
    if (!w->is_watch || w->status != 200) {
        size_t max = w->status == 200 ? MAX_LIST_BODY : MAX_ERROR_BODY;
        if (!buf_append(&w->body, p, len, max) && w->status == 200) {
            w->abort = AB_TOO_LONG;
            return 0;
        }
        return len;
    }
    /* A watch: complete lines are events; keep the partial one. */
    informer_t *inf = w->inf;
    int rc = 0;
    cfg_store_begin(inf->o.store);
    const char *end = p + len;
    while (p < end && rc == 0) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        if (nl == NULL) {
            if (!buf_append(&w->line, p, (size_t)(end - p), MAX_LINE)) {
                log_warn("%s: watch event longer than %u bytes; restarting the watch", kname(w),
                         MAX_LINE);
                STAT_ADD(w, malformed, 1);
                w->abort = AB_RESTART;
                rc = -1;
            }
            break;
        }
        if (w->line.len > 0) {
            if (!buf_append(&w->line, p, (size_t)(nl - p), MAX_LINE)) {
                w->abort = AB_RESTART;
                STAT_ADD(w, malformed, 1);
                rc = -1;
                break;
            }
            rc = handle_line(w, w->line.p, w->line.len);
            w->line.len = 0;
        } else {
            rc = handle_line(w, p, (size_t)(nl - p));
        }
        w->lines++;
        p = nl + 1;
    }
    cfg_store_commit(inf->o.store);
    if (rc == 0 && w->lines > 0 && w->fails > 0)
        recovered(w);
    return rc == 0 ? len : 0;
}

/* ---- LIST pages ---- */

struct page_ctx {
    struct watcher *w;
    char *cont;
    char rv[64];
    bool ok;
    char err[256];
};

static int on_page_doc(void *ud, const doc_t *d)
{
    struct page_ctx *c = ud;
    struct watcher *w = c->w;
    if (d->root == NULL || d->root->type != DOC_MAP) {
        snprintf(c->err, sizeof(c->err), "the LIST response is not a JSON object%s%s",
                 d->error ? ": " : "", d->error ? d->error : "");
        return 1;
    }
    const doc_node_t *meta = doc_map_get(d->root, "metadata");
    const doc_node_t *items = doc_map_get(d->root, "items");
    if (meta == NULL || meta->type != DOC_MAP || (items != NULL && items->type != DOC_SEQ &&
                                                  items->type != DOC_NULL)) {
        snprintf(c->err, sizeof(c->err), "the LIST response has no metadata or items");
        return 1;
    }
    const char *rv = doc_str(doc_map_get(meta, "resourceVersion"));
    const char *cont = doc_str(doc_map_get(meta, "continue"));
    snprintf(c->rv, sizeof(c->rv), "%s", rv ? rv : "");
    if (cont != NULL && cont[0] != '\0')
        c->cont = mesh_xstrdup(cont);
    uint32_t nitems = items && items->type == DOC_SEQ ? items->v.seq.n : 0;
    for (uint32_t i = 0; i < nitems; i++) {
        const doc_node_t *item = items->v.seq.items[i];
        char ns[254], name[254], irv[64];
        informer_object_id(item, ns, sizeof(ns), name, sizeof(name), irv, sizeof(irv));
        if (name[0] == '\0')
            continue;
        bool filtered = false;
        char *error = NULL;
        cfg_object_t *obj = informer_decode_object(item, d->arena, w->kind, w->api_version, w->keep,
                                                   &filtered, &error);
        if (filtered)
            continue; /* not seen: a stored copy goes away */
        char *key = mesh_xmalloc(strlen(ns) + strlen(name) + 2);
        sprintf(key, "%s/%s", ns, name);
        free(hmap_put(&w->seen, key, key)); /* a repeated item replaces its key */
        if (obj == NULL) {
            w->list_invalid++;
            log_rejected(w, ns, name, irv, error);
            free(error);
            continue;
        }
        if (w->nobjs == w->capobjs) {
            w->capobjs = w->capobjs ? w->capobjs * 2 : 64;
            w->objs = mesh_xrealloc(w->objs, w->capobjs * sizeof(*w->objs));
        }
        w->objs[w->nobjs++] = obj;
    }
    c->ok = true;
    return 1;
}

struct diff_ctx {
    struct watcher *w;
    cfg_store_t *store;
    size_t deleted;
};

static int delete_unseen(void *ud, cfg_object_t *obj)
{
    struct diff_ctx *c = ud;
    char key[600];
    snprintf(key, sizeof(key), "%s/%s", obj->namespace ? obj->namespace : "", obj->name);
    if (hmap_get(&c->w->seen, key) == NULL) {
        cfg_store_delete(c->store, obj->kind, obj->namespace, obj->name);
        c->deleted++;
    }
    return 0;
}

static bool same_rv(const cfg_object_t *a, const cfg_object_t *b)
{
    const char *ra = a->meta ? a->meta->resourceVersion : NULL;
    const char *rb = b->meta ? b->meta->resourceVersion : NULL;
    return ra != NULL && rb != NULL && strcmp(ra, rb) == 0;
}

/* The last page arrived: make the store's objects of this kind equal to the list. */
static void finish_list(struct watcher *w, const char *rv)
{
    informer_t *inf = w->inf;
    cfg_store_t *store = inf->o.store;
    cfg_snap_t *snap = cfg_store_snapshot(store);
    size_t added = 0, updated = 0;
    cfg_store_begin(store);
    for (size_t i = 0; i < w->nobjs; i++) {
        cfg_object_t *obj = w->objs[i];
        const cfg_object_t *old = cfg_snap_get(snap, w->kind, obj->namespace, obj->name);
        if (old != NULL && same_rv(old, obj))
            continue;
        cfg_store_put(store, obj);
        if (old != NULL)
            updated++;
        else
            added++;
    }
    struct diff_ctx dc = {w, store, 0};
    cfg_snap_each(snap, w->kind, delete_unseen, &dc);
    cfg_store_commit(store);
    cfg_snap_release(snap);

    bool relist = w->listed_once;
    STAT_ADD(w, lists, 1);
    if (relist)
        STAT_ADD(w, relists, 1);
    set_rv(w, rv);
    uint64_t ms = now_ms() - w->list_started_ms;
    if (relist)
        log_info("%s: relisted %zu objects at resourceVersion %s in %" PRIu64
                 " ms: %zu added, %zu updated, %zu deleted, %u rejected",
                 kname(w), w->nobjs + w->list_invalid, w->rv, ms, added, updated, dc.deleted,
                 w->list_invalid);
    else
        log_info("%s: listed %zu objects (%s) at resourceVersion %s in %u page%s, %" PRIu64
                 " ms%s",
                 kname(w), w->nobjs + w->list_invalid, w->api_version, w->rv, w->pages,
                 w->pages == 1 ? "" : "s", ms, w->list_invalid ? ", some rejected" : "");
    w->listed_once = true;
    clear_list(w);
    buf_free(&w->body);
    free(w->objs);
    w->objs = NULL;
    w->capobjs = 0;
    recovered(w);
    mark_synced(w);
    if (relist)
        release_parse_memory();
    start_watch(w);
}

/* The server does not serve the kind (any longer): its objects go away. */
static void kind_absent(struct watcher *w)
{
    informer_t *inf = w->inf;
    clear_list(w);
    cfg_snap_t *snap = cfg_store_snapshot(inf->o.store);
    struct diff_ctx dc = {w, inf->o.store, 0};
    cfg_store_begin(inf->o.store);
    cfg_snap_each(snap, w->kind, delete_unseen, &dc);
    cfg_store_commit(inf->o.store);
    cfg_snap_release(snap);
    if (!w->absent_logged || dc.deleted > 0)
        log_info("%s: not served by the API server (%s/%s not found; is its CRD installed?)%s; "
                 "checking again every %d s",
                 kname(w), w->ki->group[0] ? w->ki->group : "core", w->ki->plural,
                 dc.deleted ? ", its objects are gone" : "", inf->o.absent_retry_ms / 1000);
    w->absent_logged = true;
    w->rv[0] = '\0';
    w->version[0] = '\0';
    w->listed_once = false;
    w->next_ms = now_ms() + (uint64_t)inf->o.absent_retry_ms;
    pthread_mutex_lock(&inf->lock);
    w->st.version[0] = '\0';
    pthread_mutex_unlock(&inf->lock);
    set_state(w, W_ABSENT);
    mark_synced(w);
}

static const char *transport_error(struct watcher *w, CURLcode rc, char *buf, size_t len)
{
    return kube_transport_error(w->inf->o.client, w->h, rc, w->errbuf, buf, len);
}

static const char *status_error(struct watcher *w, const char *verb, char *buf, size_t len)
{
    kube_resp_t r = {.status = w->status, .body = w->body.p, .len = w->body.len};
    return kube_status_message(&r, verb, w->ki->plural, buf, len);
}

static void list_done(struct watcher *w, CURLcode rc)
{
    char msg[512];
    if (rc != CURLE_OK) {
        if (w->abort == AB_TOO_LONG)
            snprintf(msg, sizeof(msg), "LIST page larger than %u bytes", MAX_LIST_BODY);
        else
            transport_error(w, rc, msg, sizeof(msg));
        end_transfer(w);
        free(w->cont);
        w->cont = NULL;
        failed(w, W_LIST, "list failed: %s", msg);
        return;
    }
    if (w->status == 404) {
        end_transfer(w);
        kind_absent(w);
        return;
    }
    if (w->status == 410 && w->cont != NULL) {
        /* the continue token expired: list again from the start */
        end_transfer(w);
        free(w->cont);
        w->cont = NULL;
        log_info("%s: list continuation expired; listing again", kname(w));
        start_list(w);
        return;
    }
    if (w->status != 200) {
        status_error(w, "list", msg, sizeof(msg));
        end_transfer(w);
        free(w->cont);
        w->cont = NULL;
        failed(w, W_LIST, "list failed: %s", msg);
        return;
    }
    struct page_ctx pc = {.w = w};
    doc_parse(w->body.p ? w->body.p : "", w->body.len, DOC_FMT_JSON, on_page_doc, &pc);
    end_transfer(w);
    free(w->cont);
    w->cont = NULL;
    if (!pc.ok) {
        free(pc.cont);
        failed(w, W_LIST, "list failed: %s", pc.err[0] ? pc.err : "unreadable response");
        return;
    }
    w->pages++;
    if (w->pages % 4 == 0)
        release_parse_memory();
    if (pc.cont != NULL) {
        w->cont = pc.cont;
        start_list(w);
        return;
    }
    finish_list(w, pc.rv);
}

static void watch_done(struct watcher *w, CURLcode rc)
{
    char msg[512];
    uint64_t lasted = now_ms() - w->started_ms;
    enum abort_reason why = w->abort;
    if (why == AB_RELIST || w->status == 410) {
        if (why != AB_RELIST)
            log_info("%s: watch from resourceVersion %s expired; relisting", kname(w), w->rv);
        end_transfer(w);
        start_list(w);
        return;
    }
    if (why == AB_RESTART || why == AB_ERROR) {
        const char *what = why == AB_RESTART ? "malformed watch stream" : "watch error";
        end_transfer(w);
        STAT_ADD(w, watch_restarts, 1);
        pthread_mutex_lock(&w->inf->lock);
        snprintf(msg, sizeof(msg), "%s", w->st.last_error);
        pthread_mutex_unlock(&w->inf->lock);
        failed(w, W_WATCH, "%s: %s", what, msg);
        return;
    }
    if (rc != CURLE_OK && rc != CURLE_OPERATION_TIMEDOUT) {
        transport_error(w, rc, msg, sizeof(msg));
        end_transfer(w);
        STAT_ADD(w, watch_restarts, 1);
        failed(w, W_WATCH, "watch broke: %s", msg);
        return;
    }
    if (w->status == 404) {
        end_transfer(w);
        kind_absent(w);
        return;
    }
    if (rc == CURLE_OK && w->status != 200) {
        status_error(w, "watch", msg, sizeof(msg));
        end_transfer(w);
        STAT_ADD(w, watch_restarts, 1);
        failed(w, W_WATCH, "watch failed: %s", msg);
        return;
    }
    /* The server closed the watch (timeoutSeconds), or our own guard did. */
    end_transfer(w);
    if (rc == CURLE_OPERATION_TIMEDOUT)
        log_info("%s: watch stalled; resuming from resourceVersion %s", kname(w), w->rv);
    if (lasted < SHORT_WATCH_MS && w->lines == 0) {
        STAT_ADD(w, watch_restarts, 1);
        failed(w, W_WATCH, "watch ended at once without events");
        return;
    }
    log_debug("%s: watch ended after %" PRIu64 " ms; resuming from resourceVersion %s", kname(w),
              lasted, w->rv);
    start_watch(w);
}

static void process_done(informer_t *inf)
{
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(inf->multi, &left)) != NULL) {
        if (m->msg != CURLMSG_DONE)
            continue;
        struct watcher *w = NULL;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&w);
        CURLcode rc = m->data.result;
        if (w == NULL || w->h != m->easy_handle)
            continue;
        curl_easy_getinfo(w->h, CURLINFO_RESPONSE_CODE, &w->status);
        if (w->is_watch)
            watch_done(w, rc);
        else
            list_done(w, rc);
    }
}

/* ---- discovery ---- */

static void *disc_main(void *arg)
{
    informer_t *inf = arg;
    pthread_mutex_lock(&inf->lock);
    for (;;) {
        while (!inf->disc_requested && !inf->disc_stop)
            pthread_cond_wait(&inf->disc_cond, &inf->lock);
        if (inf->disc_stop)
            break;
        inf->disc_requested = false;
        inf->disc_running = true;
        pthread_mutex_unlock(&inf->lock);
        int rc = kube_discover(inf->o.client);
        pthread_mutex_lock(&inf->lock);
        inf->disc_running = false;
        inf->disc_done = true;
        inf->disc_rc = rc;
        curl_multi_wakeup(inf->multi);
    }
    pthread_mutex_unlock(&inf->lock);
    return NULL;
}

static void request_discovery(informer_t *inf)
{
    pthread_mutex_lock(&inf->lock);
    if (!inf->disc_running && !inf->disc_requested) {
        inf->disc_requested = true;
        pthread_cond_signal(&inf->disc_cond);
    }
    pthread_mutex_unlock(&inf->lock);
}

static bool model_serves(const cfg_kind_info_t *ki, const char *version)
{
    for (const char *const *v = ki->versions; *v; v++)
        if (strcmp(*v, version) == 0)
            return true;
    return false;
}

static void discovery_finished(informer_t *inf, int rc)
{
    uint64_t now = now_ms();
    if (rc != 0) {
        int delay = next_backoff(inf, &inf->disc_backoff_ms);
        inf->disc_fails++;
        if (inf->disc_last_log_ms == 0 || now - inf->disc_last_log_ms >= (uint64_t)inf->o.log_interval_ms) {
            log_warn("informer: cannot read the API server's discovery documents at %s; retrying in %d ms"
                     " (%" PRIu64 " attempt%s)",
                     kube_client_server(inf->o.client), delay, inf->disc_fails,
                     inf->disc_fails == 1 ? "" : "s");
            inf->disc_last_log_ms = now;
        }
        inf->disc_next_ms = now + (uint64_t)delay;
        return;
    }
    if (inf->disc_fails > 0)
        log_info("informer: discovery succeeded after %" PRIu64 " failed attempts", inf->disc_fails);
    inf->disc_fails = 0;
    inf->disc_backoff_ms = 0;
    inf->disc_last_log_ms = 0;
    inf->disc_next_ms = 0;
    for (size_t i = 0; i < inf->nw; i++) {
        struct watcher *w = &inf->ws[i];
        if (w->state != W_DISCOVER)
            continue;
        const char *v = kube_resource_version(inf->o.client, w->ki->group, w->ki->plural);
        if (v == NULL || !model_serves(w->ki, v)) {
            if (v != NULL && !w->absent_logged)
                log_warn("%s: the API server serves only version %s, which meshd does not read",
                         kname(w), v);
            kind_absent(w);
            continue;
        }
        bool was_absent = w->absent_logged;
        snprintf(w->version, sizeof(w->version), "%s", v);
        if (w->ki->group[0])
            snprintf(w->api_version, sizeof(w->api_version), "%s/%s", w->ki->group, v);
        else
            snprintf(w->api_version, sizeof(w->api_version), "%s", v);
        pthread_mutex_lock(&inf->lock);
        snprintf(w->st.version, sizeof(w->st.version), "%s", v);
        pthread_mutex_unlock(&inf->lock);
        if (was_absent)
            log_info("%s: now served by the API server as %s; listing", kname(w), w->api_version);
        w->absent_logged = false;
        start_list(w);
    }
}

/* ---- the loop ---- */

static void run_timers(informer_t *inf, uint64_t now)
{
    bool rediscover = false;
    for (size_t i = 0; i < inf->nw; i++) {
        struct watcher *w = &inf->ws[i];
        if ((w->state != W_BACKOFF && w->state != W_ABSENT) || w->next_ms > now)
            continue;
        if (w->state == W_ABSENT) {
            set_state(w, W_DISCOVER);
            rediscover = true;
        } else if (w->after_backoff == W_WATCH && w->rv[0] != '\0') {
            start_watch(w);
        } else {
            start_list(w);
        }
    }
    if (inf->disc_next_ms != 0 && inf->disc_next_ms <= now) {
        inf->disc_next_ms = 0;
        rediscover = true;
    }
    if (rediscover)
        request_discovery(inf);
}

static int next_timeout(informer_t *inf, uint64_t now)
{
    uint64_t next = now + 1000;
    for (size_t i = 0; i < inf->nw; i++) {
        const struct watcher *w = &inf->ws[i];
        if ((w->state == W_BACKOFF || w->state == W_ABSENT) && w->next_ms < next)
            next = w->next_ms;
    }
    if (inf->disc_next_ms != 0 && inf->disc_next_ms < next)
        next = inf->disc_next_ms;
    return next <= now ? 0 : (int)(next - now);
}

static void *informer_main(void *arg)
{
    informer_t *inf = arg;
    for (size_t i = 0; i < inf->nw; i++)
        set_state(&inf->ws[i], W_DISCOVER);
    request_discovery(inf);
    while (!atomic_load(&inf->stop)) {
        int running = 0;
        curl_multi_perform(inf->multi, &running);
        process_done(inf);
        pthread_mutex_lock(&inf->lock);
        bool done = inf->disc_done;
        int rc = inf->disc_rc;
        inf->disc_done = false;
        pthread_mutex_unlock(&inf->lock);
        if (done)
            discovery_finished(inf, rc);
        uint64_t now = now_ms();
        run_timers(inf, now);
        if (atomic_load(&inf->stop))
            break;
        curl_multi_poll(inf->multi, NULL, 0, next_timeout(inf, now_ms()), NULL);
    }
    for (size_t i = 0; i < inf->nw; i++)
        end_transfer(&inf->ws[i]);
    return NULL;
}

/* ---- public API ---- */

void informer_opts_default(informer_opts_t *o)
{
    memset(o, 0, sizeof(*o));
    for (int k = CFG_KIND_NONE + 1; k < CFG_KIND_COUNT; k++)
        o->kinds[k].enabled = k != CFG_Endpoints;
    o->secret_filter = true;
    o->list_limit = 500;
    o->watch_timeout_min_s = 300;
    o->watch_timeout_max_s = 600;
    o->backoff_initial_ms = 100;
    o->backoff_max_ms = 30000;
    o->absent_retry_ms = 15000;
    o->log_interval_ms = 30000;
}

informer_t *informer_start(const informer_opts_t *o, char *err, size_t errlen)
{
    if (o == NULL || o->client == NULL || o->store == NULL) {
        snprintf(err, errlen, "informer: a client and a store are required");
        return NULL;
    }
    if (o->list_limit <= 0 || o->watch_timeout_min_s <= 0 ||
        o->watch_timeout_max_s < o->watch_timeout_min_s || o->backoff_initial_ms <= 0 ||
        o->backoff_max_ms < o->backoff_initial_ms || o->absent_retry_ms <= 0 || o->log_interval_ms < 0) {
        snprintf(err, errlen, "informer: invalid timing options");
        return NULL;
    }
    informer_t *inf = mesh_xcalloc(1, sizeof(*inf));
    inf->o = *o;
    inf->rng = (uint64_t)now_ms() * 0x9e3779b97f4a7c15ull ^ (uint64_t)getpid() ^ (uintptr_t)inf;
    if (inf->rng == 0)
        inf->rng = 1;
    inf->started_ms = now_ms();
    atomic_init(&inf->stop, false);
    pthread_mutex_init(&inf->lock, NULL);
    pthread_cond_init(&inf->cond, NULL);
    pthread_cond_init(&inf->disc_cond, NULL);
    inf->ws = mesh_xcalloc(CFG_KIND_COUNT, sizeof(*inf->ws));
    for (int k = CFG_KIND_NONE + 1; k < CFG_KIND_COUNT; k++) {
        if (!o->kinds[k].enabled)
            continue;
        struct watcher *w = &inf->ws[inf->nw++];
        w->inf = inf;
        w->kind = (cfg_kind_t)k;
        w->ki = cfg_kind_info(w->kind);
        w->label_selector = o->kinds[k].label_selector;
        w->field_selector = o->kinds[k].field_selector;
        w->keep = k == CFG_Secret && o->secret_filter ? informer_secret_wanted : NULL;
        w->st.kind = w->kind;
        snprintf(w->st.state, sizeof(w->st.state), "%s", state_names[W_DISCOVER]);
    }
    if (inf->nw == 0) {
        snprintf(err, errlen, "informer: no kind enabled");
        goto fail;
    }
    inf->multi = curl_multi_init();
    if (inf->multi == NULL) {
        snprintf(err, errlen, "informer: cannot create a libcurl multi handle");
        goto fail;
    }
    curl_multi_setopt(inf->multi, CURLMOPT_PIPELINING, CURLPIPE_MULTIPLEX);
    if (pthread_create(&inf->disc_thread, NULL, disc_main, inf) != 0) {
        snprintf(err, errlen, "informer: cannot start the discovery thread: %s", strerror(errno));
        goto fail;
    }
    inf->disc_started = true;
    if (pthread_create(&inf->thread, NULL, informer_main, inf) != 0) {
        snprintf(err, errlen, "informer: cannot start its thread: %s", strerror(errno));
        goto fail;
    }
    inf->thread_started = true;
    return inf;
fail:
    informer_stop(inf);
    return NULL;
}

bool informer_synced(informer_t *inf)
{
    pthread_mutex_lock(&inf->lock);
    bool s = inf->synced;
    pthread_mutex_unlock(&inf->lock);
    return s;
}

bool informer_wait_synced(informer_t *inf, int timeout_ms)
{
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += timeout_ms / 1000;
    deadline.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&inf->lock);
    while (!inf->synced) {
        if (pthread_cond_timedwait(&inf->cond, &inf->lock, &deadline) == ETIMEDOUT)
            break;
    }
    bool s = inf->synced;
    pthread_mutex_unlock(&inf->lock);
    return s;
}

size_t informer_stats(informer_t *inf, informer_kind_stats_t *out, size_t max)
{
    size_t n = 0;
    pthread_mutex_lock(&inf->lock);
    for (size_t i = 0; i < inf->nw && n < max; i++)
        out[n++] = inf->ws[i].st;
    pthread_mutex_unlock(&inf->lock);
    cfg_snap_t *snap = cfg_store_snapshot(inf->o.store);
    for (size_t i = 0; i < n; i++)
        out[i].objects = cfg_snap_count(snap, out[i].kind);
    cfg_snap_release(snap);
    return n;
}

void informer_stop(informer_t *inf)
{
    if (inf == NULL)
        return;
    atomic_store(&inf->stop, true);
    if (inf->thread_started) {
        curl_multi_wakeup(inf->multi);
        pthread_join(inf->thread, NULL);
    }
    if (inf->disc_started) {
        pthread_mutex_lock(&inf->lock);
        inf->disc_stop = true;
        pthread_cond_signal(&inf->disc_cond);
        pthread_mutex_unlock(&inf->lock);
        pthread_join(inf->disc_thread, NULL);
    }
    for (size_t i = 0; i < inf->nw; i++) {
        struct watcher *w = &inf->ws[i];
        end_transfer(w);
        clear_list(w);
        free(w->objs);
        buf_free(&w->body);
        buf_free(&w->line);
    }
    if (inf->multi != NULL)
        curl_multi_cleanup(inf->multi);
    free(inf->ws);
    pthread_cond_destroy(&inf->disc_cond);
    pthread_cond_destroy(&inf->cond);
    pthread_mutex_destroy(&inf->lock);
    free(inf);
}
