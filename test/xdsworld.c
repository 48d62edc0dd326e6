/* xdsworld: see xdsworld.h. */
#include <string.h>

#include "testutil.h"
#include "xdsworld.h"

void xw_open(xw_t *w)
{
    memset(w, 0, sizeof(*w));
    w->store = cfg_store_new();
}

void xw_load(xw_t *w, const char *path)
{
    if (cfg_load_file(path, NULL, cfg_store_put_result, w->store) < 0)
        fail_msg("cannot read %s", path);
}

void xw_text(xw_t *w, const char *yaml)
{
    cfg_load_buffer(yaml, strlen(yaml), DOC_FMT_YAML, NULL, cfg_store_put_result, w->store);
}

void xw_bookinfo(xw_t *w)
{
    xw_open(w);
    const char *files[] = {tu_shared("istio/samples/bookinfo/platform/kube/bookinfo.yaml"),
                           "test/xds/fixtures/bookinfo-workloads.yaml"};
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        int failed = cfg_load_file(files[i], NULL, cfg_store_put_result, w->store);
        if (failed != 0)
            fail_msg("%s: %s", files[i], failed < 0 ? "cannot read" : "a document does not load");
    }
}

void xw_commit(xw_t *w)
{
    if (w->snap)
        cfg_snap_release(w->snap);
    if (w->reg)
        reg_unref(w->reg);
    w->snap = cfg_store_snapshot(w->store);
    w->reg = reg_build(w->snap);
}

void xw_close(xw_t *w)
{
    if (w->reg)
        reg_unref(w->reg);
    if (w->snap)
        cfg_snap_release(w->snap);
    cfg_store_free(w->store);
    memset(w, 0, sizeof(*w));
}

xds_proxy_t *xw_pod_proxy(xw_t *w, const char *ns, const char *pod, xds_node_type_t type)
{
    const reg_workload_t *wl = reg_workload_by_name(w->reg, ns, pod);
    if (wl == NULL)
        fail_msg("no workload %s/%s", ns, pod);
    cfg_mapent_t ents[32];
    uint32_t n = 0;
    for (; n < wl->labels.n && n < 32; n++) {
        ents[n].key = (char *)wl->labels.v[n].key;
        ents[n].str = (char *)wl->labels.v[n].value;
    }
    cfg_map_t labels = {.v = ents, .n = n};
    return xds_proxy_new(type, wl->ip, pod, ns, wl->service_account, &labels);
}

xds_resources_t *xw_translate(xw_t *w, const xds_proxy_t *p)
{
    xds_input_t in = {.snap = w->snap, .reg = w->reg};
    return xds_translate(&in, p);
}
