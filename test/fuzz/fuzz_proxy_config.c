/*
 * libFuzzer target: meshproxy's static configuration (--config-file) and the
 * compilation of xDS resources into a snapshot. The input is read as the
 * JSON/YAML bundle format; whatever decodes is compiled with
 * px_snapshot_build(), which must either build or refuse with a message.
 */
#include <stdint.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include "../../common/log.h"
#include "../../proxy/config_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int quiet;
    if (!quiet) {
        log_set_level(LOG_NONE);
        quiet = 1;
    }
    px_bundle_t b = {0};
    char err[512];
    px_bundle_load_json(&b, (const char *)data, size, err, sizeof(err));
    px_resources_t view;
    px_bundle_view(&b, &view);
    px_snapshot_t *s = px_snapshot_build(&view, err, sizeof(err));
    px_snapshot_unref(s);
    px_bundle_free(&b);
    return 0;
}
