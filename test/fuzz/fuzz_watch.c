/*
 * libFuzzer target: the informer's watch-event decoder
 * (controlplane/informer_decode.c), the function that turns one line of a
 * Kubernetes watch stream into an event and a typed object.
 *
 * The input is used twice: as a watch stream (split at newlines, each line
 * decoded for the kind the input's first byte picks), and wrapped as the
 * object of an ADDED event ({"type":"ADDED","object":<input>}), so that the
 * YAML/JSON seeds of the shared test data exercise the object decoding.
 *
 * Invariants checked with __builtin_trap(): a decoded event has a known type;
 * ADDED/MODIFIED carry exactly one of an object, an error, or the filtered
 * mark; an object is of the requested kind and has a name; every event but
 * ERROR has a resourceVersion.
 *
 * Build with `make fuzz`; run with test/fuzz/run.sh (see README.md there).
 */
#include <stddef.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../controlplane/informer.h"

static void check(const informer_event_t *ev, cfg_kind_t kind)
{
    switch (ev->type) {
    case INFORMER_ADDED:
    case INFORMER_MODIFIED: {
        int set = (ev->obj != NULL) + (ev->error != NULL) + (ev->filtered ? 1 : 0);
        if (set != 1)
            __builtin_trap();
        if (ev->obj != NULL && (ev->obj->kind != kind || ev->obj->name == NULL || ev->obj->name[0] == '\0'))
            __builtin_trap();
        if (ev->resource_version[0] == '\0' || ev->name[0] == '\0')
            __builtin_trap();
        break;
    }
    case INFORMER_DELETED:
        if (ev->obj != NULL || ev->name[0] == '\0' || ev->resource_version[0] == '\0')
            __builtin_trap();
        break;
    case INFORMER_BOOKMARK:
        if (ev->obj != NULL || ev->resource_version[0] == '\0')
            __builtin_trap();
        break;
    case INFORMER_ERROR:
        if (ev->obj != NULL || ev->error == NULL)
            __builtin_trap();
        break;
    default:
        __builtin_trap();
    }
}

static void decode(const char *line, size_t len, cfg_kind_t kind)
{
    const cfg_kind_info_t *ki = cfg_kind_info(kind);
    char av[128];
    if (ki->group[0])
        snprintf(av, sizeof(av), "%s/%s", ki->group, ki->storage_version);
    else
        snprintf(av, sizeof(av), "%s", ki->storage_version);
    informer_event_t ev;
    char err[256];
    informer_filter_fn keep = kind == CFG_Secret ? informer_secret_wanted : NULL;
    if (informer_decode_event(line, len, kind, av, keep, &ev, err, sizeof(err)) == 0) {
        check(&ev, kind);
        informer_event_clear(&ev);
    } else if (err[0] == '\0' || ev.obj != NULL || ev.error != NULL) {
        __builtin_trap(); /* a failure says why and leaves nothing behind */
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    cfg_kind_t kind = (cfg_kind_t)(1 + data[0] % (CFG_KIND_COUNT - 1));
    const char *p = (const char *)data, *end = p + size;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t len = nl ? (size_t)(nl - p) : (size_t)(end - p);
        if (len > 0)
            decode(p, len, kind);
        p += len + 1;
    }
    static const char head[] = "{\"type\":\"ADDED\",\"object\":";
    char *line = malloc(sizeof(head) + size + 1);
    if (line == NULL)
        return 0;
    memcpy(line, head, sizeof(head) - 1);
    memcpy(line + sizeof(head) - 1, data, size);
    line[sizeof(head) - 1 + size] = '}';
    for (int k = CFG_KIND_NONE + 1; k < CFG_KIND_COUNT; k += 5)
        decode(line, sizeof(head) + size, (cfg_kind_t)((k + data[0]) % (CFG_KIND_COUNT - 1) + 1));
    free(line);
    return 0;
}
