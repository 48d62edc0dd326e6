/*
 * The config store: copy-on-write snapshots of sharded, sorted tables.
 *
 * A snapshot is an array of kind tables; a kind table is an array of
 * SHARDS shard pointers; a shard is a sorted array of object pointers
 * (by namespace, then name) holding one reference per object. Every level
 * is reference-counted and immutable once published, so a change copies the
 * snapshot header, one kind table and one shard, and shares everything else
 * with the previous snapshot.
 *
 * While a batch is open the staged snapshot (`next`) is private to the
 * writer: kind tables and shards it already copied (the `fresh` marks) are
 * changed in place instead of being copied again.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "../common/hmap.h"
#include "config.h"
#include "store.h"

#define SHARD_BITS 6
#define SHARDS (1u << SHARD_BITS)

struct shard {
    _Atomic uint32_t refs;
    uint32_t n, cap;
    cfg_object_t *objs[];
};

struct kindtab {
    _Atomic uint32_t refs;
    uint32_t count;
    struct shard *shards[SHARDS];
};

struct cfg_snap {
    _Atomic uint32_t refs;
    uint64_t version;
    size_t total;
    struct kindtab *kinds[CFG_KIND_COUNT];
};

struct staged_event {
    cfg_event_type_t type;
    cfg_kind_t kind;
    cfg_object_t *old, *new; /* references held until delivered */
};

struct subscriber {
    cfg_event_cb cb;
    void *ud;
};

struct cfg_store {
    pthread_mutex_t lock; /* held only to read or swap `cur` */
    cfg_snap_t *cur;
    _Atomic uint64_t version;

    /* writer state */
    unsigned depth;
    cfg_snap_t *next;
    bool kind_fresh[CFG_KIND_COUNT];
    uint64_t shard_fresh[CFG_KIND_COUNT]; /* one bit per shard */
    struct staged_event *evs;
    size_t nev, capev;
    struct subscriber *subs;
    size_t nsubs;
};

_Static_assert(SHARDS <= 64, "shard_fresh holds one bit per shard");

/* ---- reference counting of the levels ---- */

static void shard_unref(struct shard *sh)
{
    if (sh == NULL || atomic_fetch_sub_explicit(&sh->refs, 1, memory_order_acq_rel) != 1)
        return;
    for (uint32_t i = 0; i < sh->n; i++)
        cfg_object_unref(sh->objs[i]);
    free(sh);
}

static void kindtab_unref(struct kindtab *kt)
{
    if (kt == NULL || atomic_fetch_sub_explicit(&kt->refs, 1, memory_order_acq_rel) != 1)
        return;
    for (unsigned i = 0; i < SHARDS; i++)
        shard_unref(kt->shards[i]);
    free(kt);
}

cfg_snap_t *cfg_snap_ref(cfg_snap_t *snap)
{
    if (snap != NULL)
        atomic_fetch_add_explicit(&snap->refs, 1, memory_order_relaxed);
    return snap;
}

void cfg_snap_release(cfg_snap_t *snap)
{
    if (snap == NULL || atomic_fetch_sub_explicit(&snap->refs, 1, memory_order_acq_rel) != 1)
        return;
    for (int k = 0; k < CFG_KIND_COUNT; k++)
        kindtab_unref(snap->kinds[k]);
    free(snap);
}

/* ---- lookup ---- */

static unsigned shard_of(const char *ns, const char *name)
{
    uint32_t h = hmap_hash(name, hmap_hash(ns, HMAP_SEED) * 16777619u);
    h ^= h >> 15;
    h *= 0x2c1b3c6du;
    h ^= h >> 12;
    return h & (SHARDS - 1);
}

static int key_cmp(const char *ns, const char *name, const cfg_object_t *o)
{
    int c = strcmp(ns, o->namespace ? o->namespace : "");
    return c ? c : strcmp(name, o->name ? o->name : "");
}

/* Index of the object in the shard, or -(insertion point) - 1. */
static long shard_find(const struct shard *sh, const char *ns, const char *name)
{
    long lo = 0, hi = sh ? (long)sh->n : 0;
    while (lo < hi) {
        long mid = lo + (hi - lo) / 2;
        int c = key_cmp(ns, name, sh->objs[mid]);
        if (c == 0)
            return mid;
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return -lo - 1;
}

static bool kind_ok(cfg_kind_t kind)
{
    return kind > CFG_KIND_NONE && kind < CFG_KIND_COUNT;
}

cfg_object_t *cfg_snap_get(const cfg_snap_t *snap, cfg_kind_t kind, const char *ns,
                           const char *name)
{
    if (!kind_ok(kind) || name == NULL || snap->kinds[kind] == NULL)
        return NULL;
    if (ns == NULL)
        ns = "";
    const struct shard *sh = snap->kinds[kind]->shards[shard_of(ns, name)];
    long i = shard_find(sh, ns, name);
    return i >= 0 ? sh->objs[i] : NULL;
}

size_t cfg_snap_count(const cfg_snap_t *snap, cfg_kind_t kind)
{
    if (kind == CFG_KIND_NONE)
        return snap->total;
    if (!kind_ok(kind) || snap->kinds[kind] == NULL)
        return 0;
    return snap->kinds[kind]->count;
}

int cfg_snap_each(const cfg_snap_t *snap, cfg_kind_t kind, cfg_snap_each_cb cb, void *ud)
{
    if (!kind_ok(kind) || snap->kinds[kind] == NULL)
        return 0;
    const struct kindtab *kt = snap->kinds[kind];
    for (unsigned i = 0; i < SHARDS; i++) {
        const struct shard *sh = kt->shards[i];
        for (uint32_t j = 0; sh != NULL && j < sh->n; j++) {
            int rc = cb(ud, sh->objs[j]);
            if (rc != 0)
                return rc;
        }
    }
    return 0;
}

uint64_t cfg_snap_version(const cfg_snap_t *snap)
{
    return snap->version;
}

/* ---- store ---- */

cfg_store_t *cfg_store_new(void)
{
    cfg_store_t *s = mesh_xcalloc(1, sizeof(*s));
    pthread_mutex_init(&s->lock, NULL);
    s->cur = mesh_xcalloc(1, sizeof(*s->cur));
    atomic_init(&s->cur->refs, 1);
    atomic_init(&s->version, 0);
    return s;
}

static void drop_events(struct staged_event *evs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        cfg_object_unref(evs[i].old);
        cfg_object_unref(evs[i].new);
    }
}

void cfg_store_free(cfg_store_t *s)
{
    if (s == NULL)
        return;
    cfg_snap_release(s->next);
    cfg_snap_release(s->cur);
    drop_events(s->evs, s->nev);
    free(s->evs);
    free(s->subs);
    pthread_mutex_destroy(&s->lock);
    free(s);
}

uint64_t cfg_store_version(const cfg_store_t *s)
{
    return atomic_load(&s->version);
}

cfg_snap_t *cfg_store_snapshot(cfg_store_t *s)
{
    pthread_mutex_lock(&s->lock);
    cfg_snap_t *snap = cfg_snap_ref(s->cur);
    pthread_mutex_unlock(&s->lock);
    return snap;
}

int cfg_store_subscribe(cfg_store_t *s, cfg_event_cb cb, void *ud)
{
    s->subs = mesh_xrealloc(s->subs, (s->nsubs + 1) * sizeof(*s->subs));
    s->subs[s->nsubs++] = (struct subscriber){cb, ud};
    return 0;
}

void cfg_store_unsubscribe(cfg_store_t *s, cfg_event_cb cb, void *ud)
{
    for (size_t i = 0; i < s->nsubs; i++) {
        if (s->subs[i].cb == cb && s->subs[i].ud == ud) {
            memmove(&s->subs[i], &s->subs[i + 1], (s->nsubs - i - 1) * sizeof(*s->subs));
            s->nsubs--;
            return;
        }
    }
}

/* What the writer sees: the staged snapshot, or the published one. Only the
 * writer changes `cur`, so it reads it without the lock. */
static const cfg_snap_t *writer_view(const cfg_store_t *s)
{
    return s->next ? s->next : s->cur;
}

static cfg_snap_t *stage(cfg_store_t *s)
{
    if (s->next != NULL)
        return s->next;
    cfg_snap_t *n = mesh_xmalloc(sizeof(*n));
    const cfg_snap_t *cur = s->cur;
    atomic_init(&n->refs, 1);
    n->version = cur->version;
    n->total = cur->total;
    for (int k = 0; k < CFG_KIND_COUNT; k++) {
        n->kinds[k] = cur->kinds[k];
        if (n->kinds[k] != NULL)
            atomic_fetch_add_explicit(&n->kinds[k]->refs, 1, memory_order_relaxed);
    }
    memset(s->kind_fresh, 0, sizeof(s->kind_fresh));
    memset(s->shard_fresh, 0, sizeof(s->shard_fresh));
    s->next = n;
    return n;
}

static struct kindtab *writable_kind(cfg_store_t *s, cfg_kind_t k)
{
    cfg_snap_t *n = s->next;
    if (s->kind_fresh[k])
        return n->kinds[k];
    struct kindtab *old = n->kinds[k];
    struct kindtab *kt = mesh_xcalloc(1, sizeof(*kt));
    atomic_init(&kt->refs, 1);
    if (old != NULL) {
        kt->count = old->count;
        for (unsigned i = 0; i < SHARDS; i++) {
            kt->shards[i] = old->shards[i];
            if (kt->shards[i] != NULL)
                atomic_fetch_add_explicit(&kt->shards[i]->refs, 1, memory_order_relaxed);
        }
        kindtab_unref(old);
    }
    n->kinds[k] = kt;
    s->kind_fresh[k] = true;
    s->shard_fresh[k] = 0;
    return kt;
}

/* A private copy of shard i with room for `extra` more entries. */
static struct shard *writable_shard(cfg_store_t *s, struct kindtab *kt, cfg_kind_t k, unsigned i,
                                    uint32_t extra)
{
    struct shard *sh = kt->shards[i];
    uint64_t bit = 1ull << i;
    if (s->shard_fresh[k] & bit) {
        if (sh->n + extra > sh->cap) {
            uint32_t cap = sh->cap * 2 > sh->n + extra ? sh->cap * 2 : sh->n + extra;
            sh = mesh_xrealloc(sh, sizeof(*sh) + cap * sizeof(sh->objs[0]));
            sh->cap = cap;
            kt->shards[i] = sh;
        }
        return sh;
    }
    uint32_t n = sh ? sh->n : 0;
    uint32_t cap = n + extra;
    if (s->depth > 0 && cap < 4)
        cap = 4; /* a batch is likely to add more */
    struct shard *copy = mesh_xmalloc(sizeof(*copy) + (cap ? cap : 1) * sizeof(copy->objs[0]));
    atomic_init(&copy->refs, 1);
    copy->n = n;
    copy->cap = cap;
    for (uint32_t j = 0; j < n; j++)
        copy->objs[j] = cfg_object_ref(sh->objs[j]);
    shard_unref(sh);
    kt->shards[i] = copy;
    s->shard_fresh[k] |= bit;
    return copy;
}

static void stage_event(cfg_store_t *s, cfg_event_type_t type, cfg_kind_t kind, cfg_object_t *old,
                        cfg_object_t *new)
{
    if (s->nev == s->capev) {
        s->capev = s->capev ? s->capev * 2 : 16;
        s->evs = mesh_xrealloc(s->evs, s->capev * sizeof(*s->evs));
    }
    s->evs[s->nev++] = (struct staged_event){type, kind, old, new};
}

/* Trims the shards a batch grew, so that slack does not outlive the batch. */
static void trim(cfg_store_t *s)
{
    cfg_snap_t *n = s->next;
    for (int k = 0; k < CFG_KIND_COUNT; k++) {
        if (!s->kind_fresh[k] || n->kinds[k] == NULL)
            continue;
        struct kindtab *kt = n->kinds[k];
        for (unsigned i = 0; i < SHARDS; i++) {
            struct shard *sh = kt->shards[i];
            if ((s->shard_fresh[k] & (1ull << i)) && sh != NULL && sh->cap > sh->n) {
                sh = mesh_xrealloc(sh, sizeof(*sh) + sh->n * sizeof(sh->objs[0]));
                sh->cap = sh->n;
                kt->shards[i] = sh;
            }
        }
    }
}

static int publish(cfg_store_t *s)
{
    if (s->next == NULL)
        return 0;
    if (s->nev == 0) {
        cfg_snap_release(s->next);
        s->next = NULL;
        return 0;
    }
    trim(s);
    uint64_t version = atomic_load(&s->version) + 1;
    s->next->version = version;
    pthread_mutex_lock(&s->lock);
    cfg_snap_t *old = s->cur;
    s->cur = s->next;
    atomic_store(&s->version, version);
    pthread_mutex_unlock(&s->lock);
    s->next = NULL;
    cfg_snap_release(old);

    /* Detach the events so that the callbacks see a clean writer state. */
    struct staged_event *evs = s->evs;
    size_t nev = s->nev;
    s->evs = NULL;
    s->nev = s->capev = 0;
    for (size_t i = 0; i < nev; i++) {
        cfg_event_t ev = {evs[i].type, evs[i].kind, evs[i].old, evs[i].new, version};
        for (size_t j = 0; j < s->nsubs; j++)
            s->subs[j].cb(s->subs[j].ud, &ev);
    }
    drop_events(evs, nev);
    free(evs);
    return (int)nev;
}

void cfg_store_begin(cfg_store_t *s)
{
    s->depth++;
}

int cfg_store_commit(cfg_store_t *s)
{
    if (s->depth > 0 && --s->depth > 0)
        return 0;
    return publish(s);
}

int cfg_store_put(cfg_store_t *s, cfg_object_t *obj)
{
    cfg_kind_t k = obj->kind;
    if (!kind_ok(k) || obj->name == NULL)
        return -1;
    const char *ns = obj->namespace ? obj->namespace : "";
    if (cfg_snap_get(writer_view(s), k, ns, obj->name) == obj)
        return 1;
    /* Written only before the object is first published, so that readers of
     * older snapshots never see it change. */
    if (obj->version == 0)
        obj->version = atomic_load(&s->version) + 1;
    cfg_snap_t *n = stage(s);
    struct kindtab *kt = writable_kind(s, k);
    unsigned i = shard_of(ns, obj->name);
    struct shard *sh = writable_shard(s, kt, k, i, 1);
    long pos = shard_find(sh, ns, obj->name);
    if (pos >= 0) {
        cfg_object_t *old = sh->objs[pos];
        sh->objs[pos] = cfg_object_ref(obj);
        stage_event(s, CFG_EVENT_UPDATE, k, old, cfg_object_ref(obj));
    } else {
        uint32_t at = (uint32_t)(-pos - 1);
        memmove(&sh->objs[at + 1], &sh->objs[at], (sh->n - at) * sizeof(sh->objs[0]));
        sh->objs[at] = cfg_object_ref(obj);
        sh->n++;
        kt->count++;
        n->total++;
        stage_event(s, CFG_EVENT_ADD, k, NULL, cfg_object_ref(obj));
    }
    if (s->depth == 0)
        publish(s);
    return 0;
}

int cfg_store_delete(cfg_store_t *s, cfg_kind_t kind, const char *ns, const char *name)
{
    if (ns == NULL)
        ns = "";
    if (cfg_snap_get(writer_view(s), kind, ns, name) == NULL)
        return -1;
    cfg_snap_t *n = stage(s);
    struct kindtab *kt = writable_kind(s, kind);
    unsigned i = shard_of(ns, name);
    struct shard *sh = writable_shard(s, kt, kind, i, 0);
    long pos = shard_find(sh, ns, name);
    cfg_object_t *old = sh->objs[pos];
    memmove(&sh->objs[pos], &sh->objs[pos + 1], (sh->n - (uint32_t)pos - 1) * sizeof(sh->objs[0]));
    sh->n--;
    kt->count--;
    n->total--;
    if (sh->n == 0) {
        shard_unref(sh);
        kt->shards[i] = NULL;
        s->shard_fresh[kind] &= ~(1ull << i);
    }
    if (kt->count == 0) {
        kindtab_unref(kt);
        n->kinds[kind] = NULL;
        s->kind_fresh[kind] = false;
    }
    stage_event(s, CFG_EVENT_DELETE, kind, old, NULL);
    if (s->depth == 0)
        publish(s);
    return 0;
}

void cfg_store_put_result(void *store, cfg_object_t *obj, const cfg_diag_t *diag)
{
    (void)diag;
    if (obj == NULL)
        return;
    cfg_store_put(store, obj);
    cfg_object_unref(obj);
}

int cfg_store_apply_yaml(cfg_store_t *s, const char *yaml)
{
    cfg_store_begin(s);
    int failed = cfg_load_buffer(yaml, strlen(yaml), DOC_FMT_YAML, NULL, cfg_store_put_result, s);
    cfg_store_commit(s);
    return failed;
}
