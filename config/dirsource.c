/*
 * The directory source: the YAML/JSON files of a directory tree, kept in sync
 * with a store through inotify.
 *
 * Every file has a record (struct dfile) listing the identities it defines.
 * Every identity (struct ident, "kind/namespace/name") lists the files that
 * define it with the object each one defines; the last definition is the one
 * in the store. So a deleted file removes exactly its objects, and when two
 * files define the same object, removing one brings back the other's version.
 *
 * A changed file is re-read as a whole. A rejected document whose identity
 * can be read keeps that object's previous version; a document whose identity
 * cannot be read at all (a YAML syntax error) keeps every previous object of
 * the file for that pass.
 *
 * Events are coalesced per file: a file is synced once it has been quiet for
 * QUIET_MS, or MAX_DELAY_MS after its first event. A timerfd tells the
 * caller's poll loop when that time comes; it and the inotify descriptor sit
 * behind one epoll descriptor (cfg_dir_fd).
 */
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "../common/hmap.h"
#include "../common/log.h"
#include "config.h"
#include "store.h"

#define QUIET_MS 50
#define MAX_DELAY_MS 500
#define SLACK_MS 10
#define MAX_DEPTH 32

#define WATCH_MASK                                                                                 \
    (IN_CLOSE_WRITE | IN_CREATE | IN_DELETE | IN_MODIFY | IN_ATTRIB | IN_MOVED_FROM | IN_MOVED_TO |  \
     IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR | IN_EXCL_UNLINK)

struct dfile;

struct idef {
    struct dfile *file;
    cfg_object_t *obj; /* a reference */
};

struct ident {
    cfg_kind_t kind;
    uint32_t n, cap; /* definitions; defs[n - 1] is the one in the store */
    uint32_t mark; /* generation of the reload that defined it */
    uint32_t keep; /* generation of the reload that rejected a new version */
    struct idef *defs; /* &one while cap == 1 */
    struct idef one;
    char key[]; /* "kind/namespace/name" */
};

struct dfile {
    char *path;
    struct ident **ids;
    uint32_t n;
    uint32_t rejected; /* rejected documents in the latest version */
};

struct pend {
    int64_t first, due; /* monotonic ms */
    char path[];
};

struct cfg_dir {
    char *root;
    cfg_store_t *store;
    char *default_ns;
    int ifd, tfd, efd;
    char **wds; /* directory of each watch descriptor */
    int nwds;
    hmap_t files; /* path -> struct dfile */
    hmap_t idents; /* key -> struct ident */
    hmap_t pending; /* path -> struct pend */
    uint32_t gen;
    uint32_t rejected; /* sum over files */
};

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static char *join(const char *dir, const char *name)
{
    size_t a = strlen(dir), b = strlen(name);
    char *p = mesh_xmalloc(a + b + 2);
    memcpy(p, dir, a);
    p[a] = '/';
    memcpy(p + a + 1, name, b + 1);
    return p;
}

/* True when path is prefix itself or lies under it. */
static bool under(const char *path, const char *prefix)
{
    size_t n = strlen(prefix);
    return strncmp(path, prefix, n) == 0 && (path[n] == '\0' || path[n] == '/');
}

static bool has_suffix(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

/* A name the source reads: not hidden, and a YAML or JSON extension (which
 * also leaves out editor backups such as "x.yaml~" and "x.yaml.swp"). */
static bool config_name(const char *name)
{
    return name[0] != '.' &&
           (has_suffix(name, ".yaml") || has_suffix(name, ".yml") || has_suffix(name, ".json"));
}

static void describe(char *buf, size_t size, cfg_kind_t kind, const char *ns, const char *name)
{
    const cfg_kind_info_t *ki = cfg_kind_info(kind);
    if (ns != NULL && ns[0] != '\0')
        snprintf(buf, size, "%s %s/%s", ki ? ki->name : "object", ns, name);
    else
        snprintf(buf, size, "%s %s", ki ? ki->name : "object", name);
}

static void ident_key(char *buf, size_t size, cfg_kind_t kind, const char *ns, const char *name)
{
    snprintf(buf, size, "%d/%s/%s", (int)kind, ns ? ns : "", name ? name : "");
}

/* ---- identities ---- */

static struct ident *ident_get(cfg_dir_t *d, const char *key, cfg_kind_t kind)
{
    struct ident *id = hmap_get(&d->idents, key);
    if (id != NULL)
        return id;
    size_t len = strlen(key);
    id = mesh_xcalloc(1, sizeof(*id) + len + 1);
    memcpy(id->key, key, len + 1);
    id->kind = kind;
    id->defs = &id->one;
    id->cap = 1;
    hmap_put(&d->idents, id->key, id);
    return id;
}

static void ident_free(struct ident *id)
{
    for (uint32_t i = 0; i < id->n; i++)
        cfg_object_unref(id->defs[i].obj);
    if (id->defs != &id->one)
        free(id->defs);
    free(id);
}

static long def_index(const struct ident *id, const struct dfile *f)
{
    for (uint32_t i = 0; i < id->n; i++)
        if (id->defs[i].file == f)
            return i;
    return -1;
}

static void def_remove_at(struct ident *id, uint32_t i)
{
    memmove(&id->defs[i], &id->defs[i + 1], (id->n - i - 1) * sizeof(id->defs[0]));
    id->n--;
}

/* Makes obj (a reference, taken over) file f's definition and the one in
 * effect. */
static void def_set(struct ident *id, struct dfile *f, cfg_object_t *obj)
{
    long i = def_index(id, f);
    if (i >= 0) {
        cfg_object_unref(id->defs[i].obj);
        def_remove_at(id, (uint32_t)i);
    }
    if (id->n > 0) {
        char what[600];
        describe(what, sizeof(what), obj->kind, obj->namespace, obj->name);
        log_warn("%s:%u: %s is also defined in %s; using the definition in %s", f->path, obj->line,
                 what, id->defs[id->n - 1].file->path, f->path);
    }
    if (id->n == id->cap) {
        uint32_t cap = id->cap * 2;
        struct idef *defs = mesh_xmalloc(cap * sizeof(*defs));
        memcpy(defs, id->defs, id->n * sizeof(*defs));
        if (id->defs != &id->one)
            free(id->defs);
        id->defs = defs;
        id->cap = cap;
    }
    id->defs[id->n++] = (struct idef){f, obj};
}

/* Removes file f's definition; the store gets the previous definition back
 * (another file's) or loses the object. */
static void def_drop(cfg_dir_t *d, struct ident *id, struct dfile *f)
{
    long i = def_index(id, f);
    if (i < 0)
        return;
    cfg_object_t *obj = id->defs[i].obj;
    bool effective = (uint32_t)i == id->n - 1;
    def_remove_at(id, (uint32_t)i);
    if (id->n > 0) {
        if (effective)
            cfg_store_put(d->store, id->defs[id->n - 1].obj);
    } else {
        cfg_store_delete(d->store, obj->kind, obj->namespace, obj->name);
        hmap_del(&d->idents, id->key);
        ident_free(id);
    }
    cfg_object_unref(obj);
}

/* ---- loading one file ---- */

struct reload {
    cfg_dir_t *d;
    struct dfile *f;
    struct ident **ids; /* the file's identities after this pass */
    uint32_t n, cap;
    bool unreadable; /* a document whose identity cannot be read */
    uint32_t loaded, rejected;
};

static void reload_add(struct reload *r, struct ident *id)
{
    if (r->n == r->cap) {
        r->cap = r->cap ? r->cap * 2 : 8;
        r->ids = mesh_xrealloc(r->ids, r->cap * sizeof(*r->ids));
    }
    r->ids[r->n++] = id;
}

static void on_result(void *ud, cfg_object_t *obj, const cfg_diag_t *diag)
{
    struct reload *r = ud;
    cfg_dir_t *d = r->d;
    char key[600];

    if (obj != NULL) {
        for (uint32_t i = 0; i < diag->nwarnings; i++)
            log_warn("%s", diag->warnings[i]);
        ident_key(key, sizeof(key), obj->kind, obj->namespace, obj->name);
        struct ident *id = ident_get(d, key, obj->kind);
        if (id->mark == d->gen) {
            char what[600];
            describe(what, sizeof(what), obj->kind, obj->namespace, obj->name);
            log_warn("%s:%u: %s is defined more than once in this file; the last one is used",
                     r->f->path, obj->line, what);
        } else {
            id->mark = d->gen;
            reload_add(r, id);
        }
        def_set(id, r->f, obj);
        r->loaded++;
        return;
    }
    if (diag->nerrors == 0) {
        /* a kind the mesh does not read */
        for (uint32_t i = 0; i < diag->nwarnings; i++)
            log_debug("%s", diag->warnings[i]);
        return;
    }
    r->rejected++;
    for (uint32_t i = 0; i < diag->nerrors; i++)
        log_error("%s", diag->errors[i]);
    if (diag->truncated)
        log_error("%s:%u: more errors not shown", r->f->path, diag->line);
    if (diag->kind != CFG_KIND_NONE && diag->name[0] != '\0') {
        ident_key(key, sizeof(key), diag->kind, diag->namespace, diag->name);
        struct ident *id = hmap_get(&d->idents, key);
        if (id != NULL)
            id->keep = d->gen;
    } else {
        r->unreadable = true;
    }
}

static struct dfile *file_new(cfg_dir_t *d, const char *path)
{
    struct dfile *f = mesh_xcalloc(1, sizeof(*f));
    f->path = mesh_xstrdup(path);
    hmap_put(&d->files, f->path, f);
    return f;
}

/* Removes the file's record and its objects. */
static void file_gone(cfg_dir_t *d, struct dfile *f)
{
    log_debug("%s: removed (%u objects)", f->path, f->n);
    for (uint32_t i = 0; i < f->n; i++)
        def_drop(d, f->ids[i], f);
    d->rejected -= f->rejected;
    hmap_del(&d->files, f->path);
    free(f->ids);
    free(f->path);
    free(f);
}

/* Re-reads a file and applies the difference to the store (inside the
 * caller's batch). */
static void file_reload(cfg_dir_t *d, const char *path)
{
    struct dfile *f = hmap_get(&d->files, path);
    bool created = f == NULL;
    if (created)
        f = file_new(d, path);
    if (++d->gen == 0)
        d->gen = 1;

    struct reload r = {.d = d, .f = f};
    cfg_load_opts_t o = {.file = f->path, .default_namespace = d->default_ns};
    errno = 0;
    int rc = cfg_load_file(f->path, &o, on_result, &r);
    if (rc < 0) {
        int err = errno;
        struct stat st;
        if (stat(f->path, &st) != 0 && (errno == ENOENT || errno == ENOTDIR)) {
            file_gone(d, f);
        } else {
            log_error("cannot read %s%s%s", f->path, err ? ": " : "", err ? strerror(err) : "");
            if (created)
                file_gone(d, f);
        }
        free(r.ids);
        return;
    }

    /* Identities the file no longer defines: kept when their new version was
     * rejected (or could not be identified), dropped otherwise. */
    for (uint32_t i = 0; i < f->n; i++) {
        struct ident *id = f->ids[i];
        if (id->mark == d->gen)
            continue;
        if (r.unreadable || id->keep == d->gen) {
            id->mark = d->gen;
            reload_add(&r, id);
        } else {
            def_drop(d, id, f);
        }
    }
    free(f->ids);
    f->ids = r.ids;
    f->n = r.n;
    /* Publish the file's definitions (a no-op for the ones kept as they were). */
    for (uint32_t i = 0; i < f->n; i++) {
        struct ident *id = f->ids[i];
        if (id->defs[id->n - 1].file == f)
            cfg_store_put(d->store, id->defs[id->n - 1].obj);
    }
    d->rejected -= f->rejected;
    f->rejected = r.rejected;
    d->rejected += r.rejected;
    log_debug("%s: %u objects loaded, %u rejected%s", f->path, r.loaded, r.rejected,
              r.unreadable ? " (previous objects kept)" : "");
}

/* Brings one path in line with the file system. */
static void sync_path(cfg_dir_t *d, const char *path)
{
    struct stat st;
    int rc = stat(path, &st), err = errno;
    if (rc == 0 && S_ISREG(st.st_mode)) {
        file_reload(d, path);
        return;
    }
    struct dfile *f = hmap_get(&d->files, path);
    if (f == NULL)
        return;
    if (rc == 0 || err == ENOENT || err == ENOTDIR)
        file_gone(d, f); /* gone, or no longer a regular file */
    else
        log_error("cannot read %s: %s", path, strerror(err));
}

/* ---- watching ---- */

static void schedule(cfg_dir_t *d, const char *path)
{
    int64_t now = now_ms();
    struct pend *p = hmap_get(&d->pending, path);
    if (p == NULL) {
        size_t len = strlen(path);
        p = mesh_xmalloc(sizeof(*p) + len + 1);
        memcpy(p->path, path, len + 1);
        p->first = now;
        hmap_put(&d->pending, p->path, p);
    }
    p->due = now + QUIET_MS < p->first + MAX_DELAY_MS ? now + QUIET_MS : p->first + MAX_DELAY_MS;
}

static void watch_dir(cfg_dir_t *d, const char *dir)
{
    int wd = inotify_add_watch(d->ifd, dir, WATCH_MASK);
    if (wd < 0) {
        log_error("cannot watch %s: %s%s", dir, strerror(errno),
                  errno == ENOSPC ? " (raise fs.inotify.max_user_watches)" : "");
        return;
    }
    if (wd >= d->nwds) {
        int n = d->nwds ? d->nwds : 16;
        while (n <= wd)
            n *= 2;
        d->wds = mesh_xrealloc(d->wds, (size_t)n * sizeof(*d->wds));
        memset(d->wds + d->nwds, 0, (size_t)(n - d->nwds) * sizeof(*d->wds));
        d->nwds = n;
    }
    free(d->wds[wd]);
    d->wds[wd] = mesh_xstrdup(dir);
}

/* Watches dir and everything below it; config files are loaded at once
 * (load_now) or scheduled. */
static void walk(cfg_dir_t *d, const char *dir, bool load_now, int depth)
{
    if (depth > MAX_DEPTH) {
        log_warn("%s: deeper than %d levels; not read", dir, MAX_DEPTH);
        return;
    }
    watch_dir(d, dir);
    struct dirent **ents;
    int n = scandir(dir, &ents, NULL, alphasort);
    if (n < 0) {
        log_error("cannot read directory %s: %s", dir, strerror(errno));
        return;
    }
    for (int i = 0; i < n; i++) {
        const char *name = ents[i]->d_name;
        if (name[0] == '.')
            goto next;
        char *path = join(dir, name);
        struct stat st;
        if (lstat(path, &st) == 0) {
            if (S_ISDIR(st.st_mode)) {
                walk(d, path, load_now, depth + 1);
            } else if (config_name(name) && (S_ISREG(st.st_mode) || S_ISLNK(st.st_mode))) {
                /* a symbolic link counts when it leads to a regular file; links
                 * to directories are not followed */
                if (load_now)
                    sync_path(d, path);
                else
                    schedule(d, path);
            }
        }
        free(path);
    next:
        free(ents[i]);
    }
    free(ents);
}

/* Stops watching everything under dir and schedules its files (which will
 * be found gone, or back if they are). */
static void forget_tree(cfg_dir_t *d, const char *dir)
{
    for (int wd = 0; wd < d->nwds; wd++) {
        if (d->wds[wd] != NULL && under(d->wds[wd], dir)) {
            inotify_rm_watch(d->ifd, wd);
            free(d->wds[wd]);
            d->wds[wd] = NULL;
        }
    }
    size_t it = 0;
    const char *path;
    while (hmap_next(&d->files, &it, &path, NULL))
        if (under(path, dir))
            schedule(d, path);
}

/* Re-reads a whole subtree: its files present now and the ones known. */
static void resync(cfg_dir_t *d, const char *dir)
{
    size_t it = 0;
    const char *path;
    while (hmap_next(&d->files, &it, &path, NULL))
        if (under(path, dir))
            schedule(d, path);
    walk(d, dir, false, 0);
}

static void handle_event(cfg_dir_t *d, const struct inotify_event *ev)
{
    if (ev->mask & IN_Q_OVERFLOW) {
        log_warn("too many file changes at once under %s; reading the whole tree again", d->root);
        resync(d, d->root);
        return;
    }
    if (ev->wd < 0 || ev->wd >= d->nwds || d->wds[ev->wd] == NULL)
        return;
    if (ev->mask & IN_IGNORED) {
        free(d->wds[ev->wd]);
        d->wds[ev->wd] = NULL;
        return;
    }
    const char *dir = d->wds[ev->wd];
    if (ev->len == 0 || ev->name[0] == '\0') {
        if ((ev->mask & (IN_DELETE_SELF | IN_MOVE_SELF)) && strcmp(dir, d->root) == 0) {
            log_warn("config directory %s was removed or moved away", d->root);
            char *root = mesh_xstrdup(d->root);
            forget_tree(d, root);
            free(root);
        }
        return;
    }
    const char *name = ev->name;
    if (name[0] == '.') {
        /* Kubernetes volumes (ConfigMap, Secret) switch their content by
         * swapping the "..data" link: everything in the directory may have
         * changed. */
        if (strcmp(name, "..data") == 0 && (ev->mask & (IN_CREATE | IN_MOVED_TO))) {
            char *copy = mesh_xstrdup(dir);
            resync(d, copy);
            free(copy);
        }
        return;
    }
    char *path = join(dir, name);
    if (ev->mask & IN_ISDIR) {
        if (ev->mask & (IN_DELETE | IN_MOVED_FROM))
            forget_tree(d, path);
        if (ev->mask & (IN_CREATE | IN_MOVED_TO))
            walk(d, path, false, 0);
    } else if (config_name(name)) {
        schedule(d, path);
    }
    free(path);
}

static int read_events(cfg_dir_t *d)
{
    char buf[16384] __attribute__((aligned(__alignof__(struct inotify_event))));
    for (;;) {
        ssize_t n = read(d->ifd, buf, sizeof(buf));
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return 0;
            log_error("reading file events of %s: %s", d->root, strerror(errno));
            return -1;
        }
        if (n == 0)
            return 0;
        for (char *p = buf; p < buf + n;) {
            const struct inotify_event *ev = (const struct inotify_event *)p;
            handle_event(d, ev);
            p += sizeof(*ev) + ev->len;
        }
    }
}

static void arm_timer(cfg_dir_t *d)
{
    int64_t due = -1;
    size_t it = 0;
    void *val;
    while (hmap_next(&d->pending, &it, NULL, &val)) {
        const struct pend *p = val;
        if (due < 0 || p->due < due)
            due = p->due;
    }
    struct itimerspec its = {0};
    if (due >= 0) {
        its.it_value.tv_sec = due / 1000;
        its.it_value.tv_nsec = (due % 1000) * 1000000;
        if (its.it_value.tv_sec == 0 && its.it_value.tv_nsec == 0)
            its.it_value.tv_nsec = 1; /* zero would disarm */
    }
    timerfd_settime(d->tfd, TFD_TIMER_ABSTIME, &its, NULL);
}

static int cmp_pend(const void *a, const void *b)
{
    return strcmp((*(struct pend *const *)a)->path, (*(struct pend *const *)b)->path);
}

int cfg_dir_process(cfg_dir_t *d)
{
    uint64_t expirations;
    while (read(d->tfd, &expirations, sizeof(expirations)) < 0 && errno == EINTR)
        ;
    if (read_events(d) < 0)
        return -1;

    /* Files due now, and the ones due within SLACK_MS: the two halves of a
     * rename are handled in the same batch. */
    int64_t now = now_ms();
    struct pend **due = NULL;
    size_t n = 0, it = 0;
    void *val;
    while (hmap_next(&d->pending, &it, NULL, &val)) {
        struct pend *p = val;
        if (p->due <= now + SLACK_MS) {
            due = mesh_xrealloc(due, (n + 1) * sizeof(*due));
            due[n++] = p;
        }
    }
    if (n > 0) {
        qsort(due, n, sizeof(*due), cmp_pend);
        for (size_t i = 0; i < n; i++)
            hmap_del(&d->pending, due[i]->path);
        /* Files that went away first, so that an object moved to another
         * file is not seen as defined twice. */
        cfg_store_begin(d->store);
        for (size_t i = 0; i < n; i++) {
            struct stat st;
            if (stat(due[i]->path, &st) != 0 || !S_ISREG(st.st_mode)) {
                sync_path(d, due[i]->path);
                free(due[i]);
                due[i] = NULL;
            }
        }
        for (size_t i = 0; i < n; i++) {
            if (due[i] != NULL) {
                sync_path(d, due[i]->path);
                free(due[i]);
            }
        }
        cfg_store_commit(d->store);
    }
    free(due);
    arm_timer(d);
    return (int)n;
}

/* ---- life cycle ---- */

cfg_dir_t *cfg_dir_open(const char *dir, cfg_store_t *store, const cfg_load_opts_t *opts)
{
    struct stat st;
    if (stat(dir, &st) != 0) {
        log_error("config directory %s: %s", dir, strerror(errno));
        return NULL;
    }
    if (!S_ISDIR(st.st_mode)) {
        log_error("config directory %s: not a directory", dir);
        return NULL;
    }
    cfg_dir_t *d = mesh_xcalloc(1, sizeof(*d));
    size_t len = strlen(dir);
    while (len > 1 && dir[len - 1] == '/')
        len--;
    d->root = mesh_xmalloc(len + 1);
    memcpy(d->root, dir, len);
    d->root[len] = '\0';
    d->store = store;
    d->default_ns = mesh_xstrdup(opts && opts->default_namespace ? opts->default_namespace
                                                                 : "default");
    d->ifd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    d->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    d->efd = epoll_create1(EPOLL_CLOEXEC);
    if (d->ifd < 0 || d->tfd < 0 || d->efd < 0) {
        log_error("cannot watch %s: %s", d->root, strerror(errno));
        goto fail;
    }
    struct epoll_event ev = {.events = EPOLLIN};
    ev.data.fd = d->ifd;
    if (epoll_ctl(d->efd, EPOLL_CTL_ADD, d->ifd, &ev) != 0)
        goto fail;
    ev.data.fd = d->tfd;
    if (epoll_ctl(d->efd, EPOLL_CTL_ADD, d->tfd, &ev) != 0)
        goto fail;

    /* Watch before reading, so that no change made during the scan is lost
     * (it is read again after the scan). */
    cfg_store_begin(store);
    walk(d, d->root, true, 0);
    cfg_store_commit(store);
    log_info("loaded %u objects from %s (%u rejected)", d->idents.n, d->root, d->rejected);
    return d;
fail:
    cfg_dir_close(d);
    return NULL;
}

int cfg_dir_fd(const cfg_dir_t *d)
{
    return d->efd;
}

void cfg_dir_stats(const cfg_dir_t *d, cfg_dir_stats_t *st)
{
    st->files = d->files.n;
    st->objects = d->idents.n;
    st->rejected = d->rejected;
}

void cfg_dir_close(cfg_dir_t *d)
{
    if (d == NULL)
        return;
    if (d->efd >= 0)
        close(d->efd);
    if (d->tfd >= 0)
        close(d->tfd);
    if (d->ifd >= 0)
        close(d->ifd);
    for (int i = 0; i < d->nwds; i++)
        free(d->wds[i]);
    free(d->wds);
    size_t it = 0;
    void *val;
    while (hmap_next(&d->pending, &it, NULL, &val))
        free(val);
    hmap_clear(&d->pending);
    it = 0;
    while (hmap_next(&d->files, &it, NULL, &val)) {
        struct dfile *f = val;
        free(f->ids);
        free(f->path);
        free(f);
    }
    hmap_clear(&d->files);
    it = 0;
    while (hmap_next(&d->idents, &it, NULL, &val))
        ident_free(val);
    hmap_clear(&d->idents);
    free(d->default_ns);
    free(d->root);
    free(d);
}
