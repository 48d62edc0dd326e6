/* Tests of the config store: snapshots, versions, batches, notifications,
 * references and concurrent readers. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../testutil.h"

/* A ConfigMap ns/name whose data.v is value; the caller owns the reference. */
static cfg_object_t *cm(const char *ns, const char *name, const char *value)
{
    char yaml[512];
    snprintf(yaml, sizeof(yaml),
             "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: %s\n  namespace: %s\n"
             "data:\n  v: \"%s\"\n",
             name, ns, value);
    tu_result_t r;
    tu_load(yaml, "store.yaml", &r);
    TU_EXPECT_OK(&r);
    assert_int_equal(r.nobjs, 1);
    cfg_object_t *o = cfg_object_ref(r.objs[0]);
    tu_free(&r);
    return o;
}

static cfg_object_t *namespace_obj(const char *name)
{
    char yaml[256];
    snprintf(yaml, sizeof(yaml), "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: %s\n", name);
    tu_result_t r;
    tu_load(yaml, "ns.yaml", &r);
    TU_EXPECT_OK(&r);
    assert_int_equal(r.nobjs, 1);
    cfg_object_t *o = cfg_object_ref(r.objs[0]);
    tu_free(&r);
    return o;
}

static uint32_t refs(const cfg_object_t *o)
{
    return atomic_load(&((cfg_object_t *)o)->_refs);
}

/* ---- recorded events ---- */

#define MAX_EVENTS 2048

struct recorder {
    int n;
    cfg_event_t ev[MAX_EVENTS];
    uint64_t seen_version[MAX_EVENTS]; /* snapshot version seen from the callback */
    cfg_store_t *store;
};

static void record(void *ud, const cfg_event_t *ev)
{
    struct recorder *r = ud;
    if (r->n >= MAX_EVENTS)
        return;
    r->ev[r->n] = *ev;
    cfg_snap_t *snap = cfg_store_snapshot(r->store);
    r->seen_version[r->n] = cfg_snap_version(snap);
    cfg_snap_release(snap);
    r->n++;
}

static void test_put_get_update_delete(void **state)
{
    (void)state;
    cfg_store_t *s = cfg_store_new();
    cfg_object_t *a = cm("default", "reviews", "1");
    cfg_object_t *a2 = cm("default", "reviews", "2");
    cfg_object_t *b = cm("prod", "reviews", "1");
    cfg_object_t *n = namespace_obj("prod");

    assert_int_equal(cfg_store_version(s), 0);
    assert_int_equal(cfg_store_put(s, a), 0);
    assert_int_equal(cfg_store_put(s, b), 0);
    assert_int_equal(cfg_store_put(s, n), 0);

    cfg_snap_t *snap = cfg_store_snapshot(s);
    assert_ptr_equal(cfg_snap_get(snap, CFG_ConfigMap, "default", "reviews"), a);
    assert_ptr_equal(cfg_snap_get(snap, CFG_ConfigMap, "prod", "reviews"), b);
    assert_null(cfg_snap_get(snap, CFG_ConfigMap, "other", "reviews"));
    assert_null(cfg_snap_get(snap, CFG_Secret, "default", "reviews"));
    /* cluster-scoped: no namespace, given as NULL or "" */
    assert_ptr_equal(cfg_snap_get(snap, CFG_Namespace, NULL, "prod"), n);
    assert_ptr_equal(cfg_snap_get(snap, CFG_Namespace, "", "prod"), n);
    assert_int_equal(cfg_snap_count(snap, CFG_ConfigMap), 2);
    assert_int_equal(cfg_snap_count(snap, CFG_Namespace), 1);
    assert_int_equal(cfg_snap_count(snap, CFG_KIND_NONE), 3);
    uint64_t v1 = cfg_snap_version(snap);
    assert_int_equal(v1, 3);
    assert_int_equal(a->version, 1);
    assert_int_equal(n->version, 3);
    cfg_snap_release(snap);

    /* update replaces the object with the same kind/namespace/name */
    assert_int_equal(cfg_store_put(s, a2), 0);
    snap = cfg_store_snapshot(s);
    assert_ptr_equal(cfg_snap_get(snap, CFG_ConfigMap, "default", "reviews"), a2);
    assert_int_equal(cfg_snap_count(snap, CFG_ConfigMap), 2);
    assert_true(cfg_snap_version(snap) > v1);
    assert_int_equal(a2->version, cfg_snap_version(snap));
    cfg_snap_release(snap);

    /* delete */
    assert_int_equal(cfg_store_delete(s, CFG_ConfigMap, "default", "reviews"), 0);
    assert_int_equal(cfg_store_delete(s, CFG_ConfigMap, "default", "reviews"), -1);
    assert_int_equal(cfg_store_delete(s, CFG_Namespace, NULL, "prod"), 0);
    snap = cfg_store_snapshot(s);
    assert_null(cfg_snap_get(snap, CFG_ConfigMap, "default", "reviews"));
    assert_ptr_equal(cfg_snap_get(snap, CFG_ConfigMap, "prod", "reviews"), b);
    assert_int_equal(cfg_snap_count(snap, CFG_ConfigMap), 1);
    assert_int_equal(cfg_snap_count(snap, CFG_Namespace), 0);
    assert_int_equal(cfg_snap_count(snap, CFG_KIND_NONE), 1);
    assert_int_equal(cfg_snap_version(snap), cfg_store_version(s));
    cfg_snap_release(snap);

    cfg_store_free(s);
    cfg_object_unref(a);
    cfg_object_unref(a2);
    cfg_object_unref(b);
    cfg_object_unref(n);
}

static void test_same_pointer_is_a_no_op_same_content_is_not(void **state)
{
    (void)state;
    cfg_store_t *s = cfg_store_new();
    struct recorder *rec = calloc(1, sizeof(*rec));
    rec->store = s;
    cfg_store_subscribe(s, record, rec);
    cfg_object_t *a = cm("default", "x", "1");
    cfg_object_t *same = cm("default", "x", "1");

    assert_int_equal(cfg_store_put(s, a), 0);
    uint64_t v = cfg_store_version(s);
    assert_int_equal(cfg_store_put(s, a), 1);
    assert_int_equal(cfg_store_version(s), v);
    assert_int_equal(rec->n, 1);

    assert_int_equal(cfg_store_put(s, same), 0);
    assert_int_equal(cfg_store_version(s), v + 1);
    assert_int_equal(rec->n, 2);
    assert_int_equal(rec->ev[1].type, CFG_EVENT_UPDATE);

    cfg_store_free(s);
    cfg_object_unref(a);
    cfg_object_unref(same);
    free(rec);
}

static void test_notifications_in_order(void **state)
{
    (void)state;
    cfg_store_t *s = cfg_store_new();
    struct recorder *rec = calloc(1, sizeof(*rec));
    rec->store = s;
    cfg_store_subscribe(s, record, rec);
    cfg_object_t *a = cm("default", "a", "1");
    cfg_object_t *a2 = cm("default", "a", "2");
    cfg_object_t *b = cm("default", "b", "1");

    cfg_store_put(s, a);
    cfg_store_put(s, b);
    cfg_store_put(s, a2);
    cfg_store_delete(s, CFG_ConfigMap, "default", "b");
    cfg_store_delete(s, CFG_ConfigMap, "default", "nothing");

    assert_int_equal(rec->n, 4);
    assert_int_equal(rec->ev[0].type, CFG_EVENT_ADD);
    assert_null(rec->ev[0].old);
    assert_ptr_equal(rec->ev[0].new, a);
    assert_int_equal(rec->ev[0].kind, CFG_ConfigMap);
    assert_int_equal(rec->ev[1].type, CFG_EVENT_ADD);
    assert_ptr_equal(rec->ev[1].new, b);
    assert_int_equal(rec->ev[2].type, CFG_EVENT_UPDATE);
    assert_ptr_equal(rec->ev[2].old, a);
    assert_ptr_equal(rec->ev[2].new, a2);
    assert_int_equal(rec->ev[3].type, CFG_EVENT_DELETE);
    assert_ptr_equal(rec->ev[3].old, b);
    assert_null(rec->ev[3].new);
    for (int i = 0; i < rec->n; i++) {
        /* published before the callback runs */
        assert_int_equal(rec->seen_version[i], rec->ev[i].version);
        if (i > 0)
            assert_true(rec->ev[i].version > rec->ev[i - 1].version);
    }

    /* unsubscribed callbacks hear nothing more */
    cfg_store_unsubscribe(s, record, rec);
    cfg_store_put(s, b);
    assert_int_equal(rec->n, 4);

    cfg_store_free(s);
    cfg_object_unref(a);
    cfg_object_unref(a2);
    cfg_object_unref(b);
    free(rec);
}

static void test_snapshot_is_immutable(void **state)
{
    (void)state;
    cfg_store_t *s = cfg_store_new();
    cfg_object_t *a = cm("default", "a", "1");
    cfg_object_t *a2 = cm("default", "a", "2");
    cfg_object_t *b = cm("default", "b", "1");
    cfg_store_put(s, a);
    cfg_store_put(s, b);

    cfg_snap_t *before = cfg_store_snapshot(s);
    cfg_store_put(s, a2);
    cfg_store_delete(s, CFG_ConfigMap, "default", "b");
    cfg_snap_t *after = cfg_store_snapshot(s);

    assert_ptr_equal(cfg_snap_get(before, CFG_ConfigMap, "default", "a"), a);
    assert_ptr_equal(cfg_snap_get(before, CFG_ConfigMap, "default", "b"), b);
    assert_int_equal(cfg_snap_count(before, CFG_ConfigMap), 2);
    assert_ptr_equal(cfg_snap_get(after, CFG_ConfigMap, "default", "a"), a2);
    assert_null(cfg_snap_get(after, CFG_ConfigMap, "default", "b"));
    assert_int_equal(cfg_snap_count(after, CFG_ConfigMap), 1);
    assert_true(cfg_snap_version(after) > cfg_snap_version(before));

    /* the old snapshot outlives the store */
    cfg_snap_release(after);
    cfg_store_free(s);
    assert_ptr_equal(cfg_snap_get(before, CFG_ConfigMap, "default", "b"), b);
    cfg_snap_release(before);

    cfg_object_unref(a);
    cfg_object_unref(a2);
    cfg_object_unref(b);
}

static void test_batch_publishes_once(void **state)
{
    (void)state;
    cfg_store_t *s = cfg_store_new();
    struct recorder *rec = calloc(1, sizeof(*rec));
    rec->store = s;
    cfg_store_subscribe(s, record, rec);
    enum { N = 500 };
    cfg_object_t *objs[N];
    char name[32];
    for (int i = 0; i < N; i++) {
        snprintf(name, sizeof(name), "cm-%d", i);
        objs[i] = cm(i % 2 ? "prod" : "default", name, "1");
    }

    cfg_store_begin(s);
    for (int i = 0; i < N; i++)
        assert_int_equal(cfg_store_put(s, objs[i]), 0);
    cfg_store_delete(s, CFG_ConfigMap, "default", "cm-0");
    cfg_snap_t *mid = cfg_store_snapshot(s);
    assert_int_equal(cfg_snap_count(mid, CFG_ConfigMap), 0); /* nothing published yet */
    assert_int_equal(rec->n, 0);
    assert_int_equal(cfg_store_commit(s), N + 1);
    cfg_snap_release(mid);

    assert_int_equal(cfg_store_version(s), 1);
    assert_int_equal(rec->n, N + 1);
    for (int i = 0; i < rec->n; i++)
        assert_int_equal(rec->ev[i].version, 1);
    assert_int_equal(rec->ev[N].type, CFG_EVENT_DELETE);

    cfg_snap_t *snap = cfg_store_snapshot(s);
    assert_int_equal(cfg_snap_count(snap, CFG_ConfigMap), N - 1);
    for (int i = 1; i < N; i++) {
        snprintf(name, sizeof(name), "cm-%d", i);
        assert_ptr_equal(cfg_snap_get(snap, CFG_ConfigMap, i % 2 ? "prod" : "default", name),
                         objs[i]);
        assert_int_equal(objs[i]->version, 1);
    }
    assert_null(cfg_snap_get(snap, CFG_ConfigMap, "default", "cm-0"));

    /* nested batches publish at the outermost commit; an empty batch publishes nothing */
    cfg_store_begin(s);
    cfg_store_begin(s);
    cfg_store_delete(s, CFG_ConfigMap, "prod", "cm-1");
    assert_int_equal(cfg_store_commit(s), 0);
    assert_int_equal(cfg_store_version(s), 1);
    assert_int_equal(cfg_store_commit(s), 1);
    assert_int_equal(cfg_store_version(s), 2);
    cfg_store_begin(s);
    assert_int_equal(cfg_store_commit(s), 0);
    assert_int_equal(cfg_store_version(s), 2);

    /* the snapshot taken before still sees cm-1 */
    assert_non_null(cfg_snap_get(snap, CFG_ConfigMap, "prod", "cm-1"));
    cfg_snap_release(snap);

    cfg_store_free(s);
    for (int i = 0; i < N; i++)
        cfg_object_unref(objs[i]);
    free(rec);
}

static int count_cb(void *ud, cfg_object_t *obj)
{
    int *n = ud;
    assert_int_equal(obj->kind, CFG_ConfigMap);
    return ++*n == 10 ? 7 : 0;
}

static int visit_cb(void *ud, cfg_object_t *obj)
{
    (void)obj;
    ++*(int *)ud;
    return 0;
}

static void test_each_visits_every_object(void **state)
{
    (void)state;
    cfg_store_t *s = cfg_store_new();
    char name[32];
    cfg_store_begin(s);
    for (int i = 0; i < 300; i++) {
        snprintf(name, sizeof(name), "cm-%d", i);
        cfg_object_t *o = cm("default", name, "v");
        cfg_store_put(s, o);
        cfg_object_unref(o); /* the store keeps its own reference */
    }
    cfg_store_commit(s);
    cfg_snap_t *snap = cfg_store_snapshot(s);
    int n = 0;
    assert_int_equal(cfg_snap_each(snap, CFG_ConfigMap, visit_cb, &n), 0);
    assert_int_equal(n, 300);
    n = 0;
    assert_int_equal(cfg_snap_each(snap, CFG_ConfigMap, count_cb, &n), 7); /* stops early */
    assert_int_equal(n, 10);
    n = 0;
    assert_int_equal(cfg_snap_each(snap, CFG_Gateway, visit_cb, &n), 0);
    assert_int_equal(n, 0);
    cfg_snap_release(snap);
    cfg_store_free(s);
}

static void test_references(void **state)
{
    (void)state;
    cfg_store_t *s = cfg_store_new();
    cfg_object_t *a = cm("default", "a", "1");
    cfg_object_t *a2 = cm("default", "a", "2");
    assert_int_equal(refs(a), 1);

    cfg_store_put(s, a);
    assert_int_equal(refs(a), 2); /* mine and the store's */
    cfg_snap_t *snap = cfg_store_snapshot(s);
    assert_int_equal(refs(a), 2); /* a snapshot shares the store's tables */

    cfg_store_put(s, a2);
    assert_int_equal(refs(a), 2); /* the old snapshot still holds it */
    assert_int_equal(refs(a2), 2);
    cfg_snap_release(snap);
    assert_int_equal(refs(a), 1); /* only mine */

    cfg_store_delete(s, CFG_ConfigMap, "default", "a");
    assert_int_equal(refs(a2), 1);
    cfg_store_put(s, a2);
    assert_int_equal(refs(a2), 2);
    cfg_store_free(s);
    assert_int_equal(refs(a2), 1);

    /* an uncommitted batch is dropped with its references */
    s = cfg_store_new();
    cfg_store_begin(s);
    cfg_store_put(s, a);
    assert_int_equal(refs(a), 3); /* mine, the staged table's, the pending event's */
    cfg_store_free(s);
    assert_int_equal(refs(a), 1);

    cfg_object_unref(a);
    cfg_object_unref(a2);
}

/* ---- one writer, several readers ---- */

enum { KEYS = 64, WRITES = 3000, READERS = 4 };

struct race {
    cfg_store_t *store;
    cfg_object_t *objs[2][KEYS];
    atomic_bool done;
    atomic_int failures;
    atomic_long reads;
};

static void *writer(void *arg)
{
    struct race *r = arg;
    for (int i = 0; i < WRITES; i++) {
        int key = (i * 7) % KEYS;
        if (i % 5 == 4) {
            char name[32];
            snprintf(name, sizeof(name), "k%d", key);
            cfg_store_delete(r->store, CFG_ConfigMap, "default", name);
        } else if (i % 50 == 0) {
            cfg_store_begin(r->store);
            for (int k = 0; k < KEYS; k++)
                cfg_store_put(r->store, r->objs[i % 2][k]);
            cfg_store_commit(r->store);
        } else {
            cfg_store_put(r->store, r->objs[i % 2][key]);
        }
    }
    atomic_store(&r->done, true);
    return NULL;
}

static void *reader(void *arg)
{
    struct race *r = arg;
    uint64_t last = 0;
    char name[32];
    for (long iter = 0; iter < 1000000 && (!atomic_load(&r->done) || iter < 100); iter++) {
        cfg_snap_t *snap = cfg_store_snapshot(r->store);
        uint64_t v = cfg_snap_version(snap);
        if (v < last)
            atomic_fetch_add(&r->failures, 1);
        last = v;
        size_t found = 0;
        for (int k = 0; k < KEYS; k++) {
            snprintf(name, sizeof(name), "k%d", k);
            cfg_object_t *o = cfg_snap_get(snap, CFG_ConfigMap, "default", name);
            if (o == NULL)
                continue;
            found++;
            if (strcmp(o->name, name) != 0 || o->version > v || (o != r->objs[0][k] && o != r->objs[1][k]))
                atomic_fetch_add(&r->failures, 1);
        }
        if (found != cfg_snap_count(snap, CFG_ConfigMap))
            atomic_fetch_add(&r->failures, 1);
        cfg_snap_release(snap);
        atomic_fetch_add(&r->reads, 1);
    }
    return NULL;
}

static void test_concurrent_readers(void **state)
{
    (void)state;
    struct race *r = calloc(1, sizeof(*r));
    r->store = cfg_store_new();
    char name[32];
    for (int k = 0; k < KEYS; k++) {
        snprintf(name, sizeof(name), "k%d", k);
        r->objs[0][k] = cm("default", name, "a");
        r->objs[1][k] = cm("default", name, "b");
    }
    pthread_t w, rd[READERS];
    for (int i = 0; i < READERS; i++)
        assert_int_equal(pthread_create(&rd[i], NULL, reader, r), 0);
    assert_int_equal(pthread_create(&w, NULL, writer, r), 0);
    pthread_join(w, NULL);
    for (int i = 0; i < READERS; i++)
        pthread_join(rd[i], NULL);
    assert_int_equal(atomic_load(&r->failures), 0);
    assert_true(atomic_load(&r->reads) >= READERS * 100);
    cfg_store_free(r->store);
    for (int k = 0; k < KEYS; k++) {
        /* nothing but the test holds them once the store is gone */
        assert_int_equal(refs(r->objs[0][k]), 1);
        assert_int_equal(refs(r->objs[1][k]), 1);
        cfg_object_unref(r->objs[0][k]);
        cfg_object_unref(r->objs[1][k]);
    }
    free(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_put_get_update_delete),
        cmocka_unit_test(test_same_pointer_is_a_no_op_same_content_is_not),
        cmocka_unit_test(test_notifications_in_order),
        cmocka_unit_test(test_snapshot_is_immutable),
        cmocka_unit_test(test_batch_publishes_once),
        cmocka_unit_test(test_each_visits_every_object),
        cmocka_unit_test(test_references),
        cmocka_unit_test(test_concurrent_readers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
