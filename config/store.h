/*
 * config store and directory source.
 *
 * The store holds the current set of config objects keyed by
 * kind/namespace/name. Readers take immutable snapshots; a writer builds the
 * next snapshot off to the side (copying one shard of one kind per change,
 * sharing everything else with the previous snapshot) and publishes it with a
 * single pointer swap, so no reader ever waits on write work.
 *
 * Ownership: the store and every snapshot hold their own references to the
 * objects they contain (cfg_object_ref/unref). An object stays alive while
 * the store or any snapshot that contains it is alive.
 *
 * Threads: one writer thread at a time (cfg_store_put/delete/begin/commit,
 * subscribe); any number of reader threads (cfg_store_snapshot and cfg_snap_*).
 * Subscribers run on the writer's thread, after the snapshot that contains the
 * change is published, in the order of the changes; they may take snapshots
 * but must not write to the store.
 *
 * The directory source (cfg_dir_*) feeds a store from the YAML/JSON files of
 * a directory tree and keeps it in sync through inotify.
 *
 * This header is included at the end of config.h and relies on its types.
 */
#ifndef MESH_CONFIG_STORE_H
#define MESH_CONFIG_STORE_H

#include <stdint.h>

#include "config.h"

/* ---- store ---- */

typedef struct cfg_store cfg_store_t;
typedef struct cfg_snap cfg_snap_t;

typedef enum { CFG_EVENT_ADD, CFG_EVENT_UPDATE, CFG_EVENT_DELETE } cfg_event_type_t;

typedef struct cfg_event {
    cfg_event_type_t type;
    cfg_kind_t kind;
    cfg_object_t *old; /* NULL for ADD; borrowed for the duration of the callback */
    cfg_object_t *new; /* NULL for DELETE; borrowed for the duration of the callback */
    uint64_t version; /* the store version of the snapshot that holds the change */
} cfg_event_t;

typedef void (*cfg_event_cb)(void *ud, const cfg_event_t *ev);

/* A new, empty store (version 0). */
cfg_store_t *cfg_store_new(void);
/* Frees the store and its references; snapshots still held stay valid. An
 * uncommitted batch is discarded. NULL is ignored. */
void cfg_store_free(cfg_store_t *s);
/* Version of the last published snapshot. */
uint64_t cfg_store_version(const cfg_store_t *s);

/* Adds or replaces the object with obj's kind/namespace/name; the store takes
 * its own reference (the caller keeps its own). Putting the pointer already in
 * the store is a no-op. The first time an object is put, sets obj->version to
 * the version of the snapshot that will publish it. Outside a batch it is published at once. Returns 0, 1 when
 * it was a no-op, or -1 when obj has no valid kind or name. */
int cfg_store_put(cfg_store_t *s, cfg_object_t *obj);
/* Removes an object. Returns 0, or -1 when there was no such object. */
int cfg_store_delete(cfg_store_t *s, cfg_kind_t kind, const char *ns, const char *name);
/* Starts a batch: puts and deletes are staged and published as one snapshot
 * (one version) by the matching cfg_store_commit(). Batches nest; the
 * outermost commit publishes. */
void cfg_store_begin(cfg_store_t *s);
/* Publishes the batch (if it changed anything) and then notifies subscribers.
 * Returns the number of changes published. */
int cfg_store_commit(cfg_store_t *s);

/* A cfg_result_cb that puts each object that loads into the store given as
 * ud and drops the loader's reference; documents that fail are skipped. */
void cfg_store_put_result(void *store, cfg_object_t *obj, const cfg_diag_t *diag);
/* Loads a YAML stream into the store as one batch (one version). Returns the
 * number of documents that failed to load. */
int cfg_store_apply_yaml(cfg_store_t *s, const char *yaml);

/* Registers a change callback. Returns 0. */
int cfg_store_subscribe(cfg_store_t *s, cfg_event_cb cb, void *ud);
/* Removes a callback registered with the same cb and ud. */
void cfg_store_unsubscribe(cfg_store_t *s, cfg_event_cb cb, void *ud);

/* The current snapshot, a new reference: release with cfg_snap_release().
 * Never waits on a writer's work. */
cfg_snap_t *cfg_store_snapshot(cfg_store_t *s);
cfg_snap_t *cfg_snap_ref(cfg_snap_t *snap);
void cfg_snap_release(cfg_snap_t *snap);
uint64_t cfg_snap_version(const cfg_snap_t *snap);

/* The object, or NULL. Borrowed: valid while the snapshot is held (take a
 * reference with cfg_object_ref to keep it longer). ns is "" (or NULL) for
 * cluster-scoped kinds. */
cfg_object_t *cfg_snap_get(const cfg_snap_t *snap, cfg_kind_t kind, const char *ns,
                           const char *name);
/* Number of objects of a kind, or of every kind with CFG_KIND_NONE. */
size_t cfg_snap_count(const cfg_snap_t *snap, cfg_kind_t kind);

/* Calls cb for every object of a kind (order unspecified but the same for the
 * same content) until cb returns non-zero; returns that value or 0. */
typedef int (*cfg_snap_each_cb)(void *ud, cfg_object_t *obj);
int cfg_snap_each(const cfg_snap_t *snap, cfg_kind_t kind, cfg_snap_each_cb cb, void *ud);

/* ---- directory source ---- */

typedef struct cfg_dir cfg_dir_t;

typedef struct cfg_dir_stats {
    uint32_t files; /* config files known */
    uint32_t objects; /* objects the directory currently provides */
    uint32_t rejected; /* documents rejected in the files' latest versions */
} cfg_dir_stats_t;

/*
 * Loads every *.yaml, *.yml and *.json file under dir (recursively, skipping
 * hidden files and directories and editor backups) into the store in one
 * batch, logs every rejected document and a summary, and starts watching the
 * tree. opts->default_namespace applies to objects without a namespace
 * (opts may be NULL; opts->file is ignored). Returns NULL if dir cannot be
 * read or watched.
 */
cfg_dir_t *cfg_dir_open(const char *dir, cfg_store_t *store, const cfg_load_opts_t *opts);
/* A descriptor that polls readable when cfg_dir_process() has work. */
int cfg_dir_fd(const cfg_dir_t *d);
/*
 * Handles pending file-system events without blocking: a file is re-read
 * once its burst of events has been quiet for 50 ms (at most 500 ms after the
 * first event), its objects become store updates and deletes in one batch.
 * Returns the number of files synced, or -1 on a fatal error.
 */
int cfg_dir_process(cfg_dir_t *d);
void cfg_dir_stats(const cfg_dir_t *d, cfg_dir_stats_t *st);
/* Stops watching and frees the source. The objects stay in the store. */
void cfg_dir_close(cfg_dir_t *d);

#endif
