/* Tests of the directory source: initial load and following the changes of
 * a real directory tree (inotify). Every wait is bounded and polls for the
 * expected state; nothing depends on exact timing. */
#include <errno.h>
#include <ftw.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../../common/log.h"
#include "../testutil.h"

#define WAIT_MS 3000

struct env {
    char base[64]; /* holds tree/ and out/ (same file system, for renames) */
    char tree[96];
    char out[96];
    cfg_store_t *store;
    cfg_dir_t *dir;
};

static void write_at(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(fwrite(text, 1, strlen(text), f), strlen(text));
    assert_int_equal(fclose(f), 0);
}

/* Writes tree/rel, creating the directories on the way. */
static void put_file(struct env *e, const char *rel, const char *text)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", e->tree, rel);
    for (char *p = path + strlen(e->tree) + 1; (p = strchr(p, '/')) != NULL; p++) {
        *p = '\0';
        if (mkdir(path, 0755) != 0)
            assert_int_equal(errno, EEXIST);
        *p = '/';
    }
    write_at(path, text);
}

static char *tpath(struct env *e, const char *rel)
{
    static char buf[4][512];
    static int slot;
    char *p = buf[slot++ % 4];
    snprintf(p, 512, "%s/%s", e->tree, rel);
    return p;
}

/* A ConfigMap document default/name (or ns/name) with data.v = value. */
static char *cm(const char *ns, const char *name, const char *value)
{
    static char buf[8][256];
    static int slot;
    char *p = buf[slot++ % 8];
    snprintf(p, 256, "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: %s\n  namespace: %s\ndata:\n  v: \"%s\"\n",
             name, ns, value);
    return p;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static int setup(void **state)
{
    struct env *e = calloc(1, sizeof(*e));
    snprintf(e->base, sizeof(e->base), "/tmp/meshd-dirsource-XXXXXX");
    if (mkdtemp(e->base) == NULL)
        return -1;
    snprintf(e->tree, sizeof(e->tree), "%s/tree", e->base);
    snprintf(e->out, sizeof(e->out), "%s/out", e->base);
    if (mkdir(e->tree, 0755) != 0 || mkdir(e->out, 0755) != 0)
        return -1;
    e->store = cfg_store_new();
    *state = e;
    return 0;
}

static int teardown(void **state)
{
    struct env *e = *state;
    cfg_dir_close(e->dir);
    cfg_store_free(e->store);
    nftw(e->base, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(e);
    return 0;
}

static void open_dir(struct env *e)
{
    cfg_load_opts_t o = {.default_namespace = "default"};
    e->dir = cfg_dir_open(e->tree, e->store, &o);
    assert_non_null(e->dir);
}

/* data.v of ConfigMap ns/name in the current snapshot (copied), or NULL. */
static const char *value_of(struct env *e, const char *ns, const char *name)
{
    static char buf[64];
    const char *v = NULL;
    cfg_snap_t *snap = cfg_store_snapshot(e->store);
    cfg_object_t *o = cfg_snap_get(snap, CFG_ConfigMap, ns, name);
    if (o != NULL) {
        const cfg_ConfigMapObject *b = CFG_BODY(o, ConfigMap);
        for (uint32_t i = 0; i < b->data.n; i++) {
            if (strcmp(b->data.v[i].key, "v") == 0) {
                snprintf(buf, sizeof(buf), "%s", b->data.v[i].str);
                v = buf;
            }
        }
        if (v == NULL)
            v = "";
    }
    cfg_snap_release(snap);
    return v;
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Feeds the source its events until ConfigMap default/name has data.v ==
 * want (NULL: absent), for at most WAIT_MS. */
static bool wait_value(struct env *e, const char *name, const char *want)
{
    int64_t deadline = mono_ms() + WAIT_MS;
    for (;;) {
        const char *v = value_of(e, "default", name);
        if (want == NULL ? v == NULL : v != NULL && strcmp(v, want) == 0)
            return true;
        int64_t left = deadline - mono_ms();
        if (left <= 0) {
            fprintf(stderr, "  ConfigMap default/%s: want %s, have %s\n", name,
                    want ? want : "(absent)", v ? v : "(absent)");
            return false;
        }
        struct pollfd p = {.fd = cfg_dir_fd(e->dir), .events = POLLIN};
        poll(&p, 1, (int)left);
        assert_true(cfg_dir_process(e->dir) >= 0);
    }
}

/* The same, until the source counts `want` rejected documents. */
static bool wait_rejected(struct env *e, uint32_t want)
{
    int64_t deadline = mono_ms() + WAIT_MS;
    for (;;) {
        cfg_dir_stats_t st;
        cfg_dir_stats(e->dir, &st);
        if (st.rejected == want)
            return true;
        int64_t left = deadline - mono_ms();
        if (left <= 0) {
            fprintf(stderr, "  rejected: want %u, have %u\n", want, st.rejected);
            return false;
        }
        struct pollfd p = {.fd = cfg_dir_fd(e->dir), .events = POLLIN};
        poll(&p, 1, (int)left);
        assert_true(cfg_dir_process(e->dir) >= 0);
    }
}

static size_t count(struct env *e)
{
    cfg_snap_t *snap = cfg_store_snapshot(e->store);
    size_t n = cfg_snap_count(snap, CFG_KIND_NONE);
    cfg_snap_release(snap);
    return n;
}

static void test_initial_load(void **state)
{
    struct env *e = *state;
    put_file(e, "top.yaml", cm("default", "top", "1"));
    put_file(e, "a/b/nested.yml", cm("default", "nested", "2"));
    put_file(e, "a/json.json",
             "{\"apiVersion\": \"v1\", \"kind\": \"ConfigMap\", \"metadata\": {\"name\": \"json\"},"
             " \"data\": {\"v\": \"3\"}}");
    char two[512];
    snprintf(two, sizeof(two), "%s---\n%s", cm("default", "first", "1"), cm("prod", "second", "2"));
    put_file(e, "a/two.yaml", two);
    /* not read: hidden files and directories, editor leftovers, other extensions */
    put_file(e, ".git/objects.yaml", cm("default", "git", "x"));
    put_file(e, ".top.yaml.swp", cm("default", "swap", "x"));
    put_file(e, "top.yaml~", cm("default", "backup", "x"));
    put_file(e, "notes.txt", cm("default", "notes", "x"));
    /* a kind meshd does not read is skipped without error */
    put_file(e, "deploy.yaml", "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n");

    open_dir(e);
    assert_int_equal(count(e), 5);
    assert_string_equal(value_of(e, "default", "top"), "1");
    assert_string_equal(value_of(e, "default", "nested"), "2");
    assert_string_equal(value_of(e, "default", "json"), "3"); /* default namespace applied */
    assert_string_equal(value_of(e, "default", "first"), "1");
    assert_string_equal(value_of(e, "prod", "second"), "2");
    assert_null(value_of(e, "default", "git"));
    assert_null(value_of(e, "default", "swap"));
    assert_null(value_of(e, "default", "backup"));
    cfg_dir_stats_t st;
    cfg_dir_stats(e->dir, &st);
    assert_int_equal(st.objects, 5);
    assert_int_equal(st.rejected, 0);
    assert_int_equal(st.files, 5); /* deploy.yaml is a config file without mesh objects */
    /* one batch: one version */
    assert_int_equal(cfg_store_version(e->store), 1);

    cfg_object_t *o;
    cfg_snap_t *snap = cfg_store_snapshot(e->store);
    o = cfg_snap_get(snap, CFG_ConfigMap, "default", "nested");
    assert_non_null(o);
    assert_string_equal(o->file, tpath(e, "a/b/nested.yml"));
    cfg_snap_release(snap);
}

static void test_create_edit_delete(void **state)
{
    struct env *e = *state;
    put_file(e, "keep.yaml", cm("default", "keep", "1"));
    open_dir(e);

    /* create, in the tree and in a new subdirectory */
    put_file(e, "new.yaml", cm("default", "new", "1"));
    assert_true(wait_value(e, "new", "1"));
    put_file(e, "sub/dir/deep.yaml", cm("default", "deep", "1"));
    assert_true(wait_value(e, "deep", "1"));

    /* edit: a changed object, a removed one, an added one */
    char two[512];
    snprintf(two, sizeof(two), "%s---\n%s", cm("default", "new", "1"), cm("default", "other", "1"));
    put_file(e, "new.yaml", two);
    assert_true(wait_value(e, "other", "1"));
    snprintf(two, sizeof(two), "%s---\n%s", cm("default", "new", "2"), cm("default", "third", "1"));
    put_file(e, "new.yaml", two);
    assert_true(wait_value(e, "third", "1"));
    assert_true(wait_value(e, "new", "2"));
    assert_true(wait_value(e, "other", NULL));

    /* delete */
    assert_int_equal(unlink(tpath(e, "new.yaml")), 0);
    assert_true(wait_value(e, "new", NULL));
    assert_true(wait_value(e, "third", NULL));
    assert_string_equal(value_of(e, "default", "keep"), "1");
    assert_string_equal(value_of(e, "default", "deep"), "1");

    /* a whole directory removed */
    assert_int_equal(unlink(tpath(e, "sub/dir/deep.yaml")), 0);
    assert_int_equal(rmdir(tpath(e, "sub/dir")), 0);
    assert_true(wait_value(e, "deep", NULL));
    assert_int_equal(count(e), 1);
}

static void test_renames(void **state)
{
    struct env *e = *state;
    put_file(e, "app.yaml", cm("default", "app", "1"));
    open_dir(e);

    /* an editor's save: write a hidden temporary file, rename it over the file */
    put_file(e, ".app.yaml.tmp", cm("default", "app", "2"));
    assert_int_equal(rename(tpath(e, ".app.yaml.tmp"), tpath(e, "app.yaml")), 0);
    assert_true(wait_value(e, "app", "2"));

    /* the backup-then-write pattern: rename the file away, write a new one */
    assert_int_equal(rename(tpath(e, "app.yaml"), tpath(e, "app.yaml~")), 0);
    put_file(e, "app.yaml", cm("default", "app", "3"));
    assert_true(wait_value(e, "app", "3"));

    /* renamed within the tree: the object stays, now owned by the new file */
    assert_int_equal(rename(tpath(e, "app.yaml"), tpath(e, "renamed.yaml")), 0);
    assert_true(wait_value(e, "app", "3"));
    put_file(e, "marker.yaml", cm("default", "marker", "1")); /* a later event, to sync on */
    assert_true(wait_value(e, "marker", "1"));
    assert_string_equal(value_of(e, "default", "app"), "3");
    assert_int_equal(unlink(tpath(e, "renamed.yaml")), 0);
    assert_true(wait_value(e, "app", NULL));

    /* a file moved out of the tree, and back in */
    char outside[512];
    snprintf(outside, sizeof(outside), "%s/marker.yaml", e->out);
    assert_int_equal(rename(tpath(e, "marker.yaml"), outside), 0);
    assert_true(wait_value(e, "marker", NULL));
    assert_int_equal(rename(outside, tpath(e, "back.yaml")), 0);
    assert_true(wait_value(e, "marker", "1"));

    /* a directory moved out of the tree, and one moved in */
    put_file(e, "team/a.yaml", cm("default", "team-a", "1"));
    put_file(e, "team/more/b.yaml", cm("default", "team-b", "1"));
    assert_true(wait_value(e, "team-a", "1"));
    assert_true(wait_value(e, "team-b", "1"));
    char outdir[512];
    snprintf(outdir, sizeof(outdir), "%s/team", e->out);
    assert_int_equal(rename(tpath(e, "team"), outdir), 0);
    assert_true(wait_value(e, "team-a", NULL));
    assert_true(wait_value(e, "team-b", NULL));
    /* changes outside the tree are not seen */
    char moved[600];
    snprintf(moved, sizeof(moved), "%s/a.yaml", outdir);
    write_at(moved, cm("default", "team-a", "outside"));
    assert_int_equal(rename(outdir, tpath(e, "team2")), 0);
    assert_true(wait_value(e, "team-a", "outside"));
    assert_true(wait_value(e, "team-b", "1"));
    /* and the moved-in directory is watched */
    put_file(e, "team2/more/b.yaml", cm("default", "team-b", "2"));
    assert_true(wait_value(e, "team-b", "2"));
}

static void test_broken_file_does_not_stop_the_others(void **state)
{
    struct env *e = *state;
    put_file(e, "good.yaml", cm("default", "good", "1"));
    put_file(e, "broken.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: broken\n  data: [\n");
    open_dir(e);
    assert_string_equal(value_of(e, "default", "good"), "1");
    assert_null(value_of(e, "default", "broken"));
    cfg_dir_stats_t st;
    cfg_dir_stats(e->dir, &st);
    assert_int_equal(st.rejected, 1);
    assert_int_equal(st.objects, 1);

    /* fixed */
    put_file(e, "broken.yaml", cm("default", "broken", "ok"));
    assert_true(wait_value(e, "broken", "ok"));
    assert_true(wait_rejected(e, 0));
}

static void test_good_version_kept_while_new_one_is_invalid(void **state)
{
    struct env *e = *state;
    char two[512];
    snprintf(two, sizeof(two), "%s---\n%s", cm("default", "svc", "1"), cm("default", "peer", "1"));
    put_file(e, "app.yaml", two);
    open_dir(e);
    assert_string_equal(value_of(e, "default", "svc"), "1");
    uint64_t version = cfg_store_version(e->store);

    /* svc's new version is invalid (bad label key); peer's is good: svc keeps
     * its previous version, peer is updated */
    snprintf(two, sizeof(two),
             "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: svc\n  labels: {\"bad key!\": x}\n"
             "data:\n  v: \"2\"\n---\n%s",
             cm("default", "peer", "2"));
    put_file(e, "app.yaml", two);
    assert_true(wait_rejected(e, 1));
    assert_true(wait_value(e, "peer", "2"));
    assert_string_equal(value_of(e, "default", "svc"), "1");
    assert_true(cfg_store_version(e->store) > version);

    /* a YAML syntax error: nothing of the file's previous objects goes away */
    put_file(e, "app.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: [\n");
    assert_true(wait_rejected(e, 1));
    put_file(e, "marker.yaml", cm("default", "marker", "1")); /* a later event, to sync on */
    assert_true(wait_value(e, "marker", "1"));
    assert_string_equal(value_of(e, "default", "svc"), "1");
    assert_string_equal(value_of(e, "default", "peer"), "2");

    /* fixed: the new version replaces the old one, and peer, no longer in
     * the file, goes away */
    put_file(e, "app.yaml", cm("default", "svc", "3"));
    assert_true(wait_value(e, "svc", "3"));
    assert_true(wait_value(e, "peer", NULL));
    assert_true(wait_rejected(e, 0));
}

static void test_object_in_two_files(void **state)
{
    struct env *e = *state;
    put_file(e, "a.yaml", cm("default", "dup", "a"));
    put_file(e, "b.yaml", cm("default", "dup", "b"));
    open_dir(e);
    assert_string_equal(value_of(e, "default", "dup"), "b"); /* the last one read wins */
    cfg_dir_stats_t st;
    cfg_dir_stats(e->dir, &st);
    assert_int_equal(st.objects, 1);

    /* removing the file in effect brings back the other's version */
    assert_int_equal(unlink(tpath(e, "b.yaml")), 0);
    assert_true(wait_value(e, "dup", "a"));
    assert_int_equal(unlink(tpath(e, "a.yaml")), 0);
    assert_true(wait_value(e, "dup", NULL));
}

struct counter {
    int add, update, del;
};

static void count_events(void *ud, const cfg_event_t *ev)
{
    struct counter *c = ud;
    if (ev->type == CFG_EVENT_ADD)
        c->add++;
    else if (ev->type == CFG_EVENT_UPDATE)
        c->update++;
    else
        c->del++;
}

static void test_burst_is_coalesced(void **state)
{
    struct env *e = *state;
    open_dir(e);
    struct counter c = {0};
    cfg_store_subscribe(e->store, count_events, &c);
    char v[16];
    for (int i = 0; i < 20; i++) {
        snprintf(v, sizeof(v), "%d", i);
        put_file(e, "burst.yaml", cm("default", "burst", v));
    }
    assert_true(wait_value(e, "burst", "19"));
    assert_int_equal(c.add, 1);
    /* twenty writes in a row become far fewer reloads */
    assert_true(c.update < 19);
    assert_int_equal(c.del, 0);
    cfg_store_unsubscribe(e->store, count_events, &c);
}

/* A Kubernetes ConfigMap volume: visible names are links through "..data" to a
 * hidden timestamped directory; an update swaps the "..data" link. */
static void test_configmap_volume_swap(void **state)
{
    struct env *e = *state;
    put_file(e, "..v1/mesh.yaml", cm("default", "vol", "1"));
    assert_int_equal(symlink("..v1", tpath(e, "..data")), 0);
    assert_int_equal(symlink("..data/mesh.yaml", tpath(e, "mesh.yaml")), 0);
    open_dir(e);
    assert_string_equal(value_of(e, "default", "vol"), "1");

    put_file(e, "..v2/mesh.yaml", cm("default", "vol", "2"));
    assert_int_equal(symlink("..v2", tpath(e, "..data_tmp")), 0);
    assert_int_equal(rename(tpath(e, "..data_tmp"), tpath(e, "..data")), 0);
    assert_true(wait_value(e, "vol", "2"));
    cfg_dir_stats_t st;
    cfg_dir_stats(e->dir, &st);
    assert_int_equal(st.files, 1); /* the hidden directories are not read */
}

static void test_missing_directory(void **state)
{
    struct env *e = *state;
    cfg_load_opts_t o = {0};
    char path[512];
    snprintf(path, sizeof(path), "%s/nope", e->base);
    assert_null(cfg_dir_open(path, e->store, &o));
    put_file(e, "file.yaml", cm("default", "f", "1"));
    assert_null(cfg_dir_open(tpath(e, "file.yaml"), e->store, &o));
}

int main(void)
{
    log_set_level(LOG_NONE);
    if (getenv("MESH_TEST_LOG"))
        log_set_level(LOG_DEBUG);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_initial_load, setup, teardown),
        cmocka_unit_test_setup_teardown(test_create_edit_delete, setup, teardown),
        cmocka_unit_test_setup_teardown(test_renames, setup, teardown),
        cmocka_unit_test_setup_teardown(test_broken_file_does_not_stop_the_others, setup, teardown),
        cmocka_unit_test_setup_teardown(test_good_version_kept_while_new_one_is_invalid, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_object_in_two_files, setup, teardown),
        cmocka_unit_test_setup_teardown(test_burst_is_coalesced, setup, teardown),
        cmocka_unit_test_setup_teardown(test_configmap_volume_swap, setup, teardown),
        cmocka_unit_test_setup_teardown(test_missing_directory, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
