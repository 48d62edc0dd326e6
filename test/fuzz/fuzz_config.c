/*
 * libFuzzer target: YAML/JSON bytes through the whole loader into the config
 * model (doc parser, generic decoder, every kind's validator).
 *
 * The same input is loaded three times: with the format detected, as JSON and
 * as YAML. Every object is released and every diagnostic line is read, so
 * that leaks, use-after-free and unterminated strings in either are reported.
 * Objects that load are also put into a config store in one batch and looked
 * up again, the way the directory source feeds it.
 *
 * Build with `make fuzz`; run with test/fuzz/run.sh (see README.md there).
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "../../common/log.h"
#include "../../config/config.h"

struct fuzz_ctx {
    cfg_store_t *store;
    size_t objects;
    size_t bytes; /* sum of string lengths, so that reads are not optimized out */
};

static size_t str_len(const char *s)
{
    return s != NULL ? strlen(s) : 0;
}

static void on_result(void *ud, cfg_object_t *obj, const cfg_diag_t *diag)
{
    struct fuzz_ctx *c = ud;
    for (uint32_t i = 0; i < diag->nerrors && i < CFG_MAX_ERRORS; i++) {
        size_t n = str_len(diag->errors[i]);
        if (diag->reason_at[i] > n)
            __builtin_trap(); /* the reason must start inside the line */
        c->bytes += n;
    }
    for (uint32_t i = 0; i < diag->nwarnings && i < 8; i++)
        c->bytes += str_len(diag->warnings[i]);
    c->bytes += strlen(diag->kind_name) + strlen(diag->namespace) + strlen(diag->name);
    if (obj == NULL)
        return;
    if (diag->nerrors != 0)
        __builtin_trap(); /* an object is delivered only when it is valid */
    c->bytes += str_len(obj->name) + str_len(obj->namespace) + str_len(obj->api_version);
    c->bytes += cfg_object_footprint(obj) != 0;
    if (cfg_kind_info(obj->kind) == NULL)
        __builtin_trap();
    cfg_store_put(c->store, obj);
    c->objects++;
    cfg_object_unref(obj);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const doc_format_t formats[] = {DOC_FMT_AUTO, DOC_FMT_JSON, DOC_FMT_YAML};
    static int quiet;
    if (!quiet) {
        log_set_level(LOG_NONE);
        quiet = 1;
    }
    cfg_load_opts_t opts = {.file = "fuzz.yaml", .default_namespace = "fuzz"};
    for (size_t f = 0; f < sizeof(formats) / sizeof(formats[0]); f++) {
        struct fuzz_ctx c = {.store = cfg_store_new()};
        cfg_store_begin(c.store);
        int failed = cfg_load_buffer((const char *)data, size, formats[f], &opts, on_result, &c);
        if (failed < 0)
            __builtin_trap(); /* a count of documents, never negative */
        cfg_store_commit(c.store);
        cfg_snap_t *snap = cfg_store_snapshot(c.store);
        if (cfg_snap_count(snap, CFG_KIND_NONE) > c.objects)
            __builtin_trap(); /* the store cannot hold more than was put */
        cfg_snap_release(snap);
        cfg_store_free(c.store);
    }
    return 0;
}
