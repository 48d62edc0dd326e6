/*
 * xdsworld: a mesh config as meshd's translation sees it, for the tests of
 * xds/ and of meshproxy's compilation of it: a config store, its current
 * snapshot and the registry built from that snapshot.
 *
 *   xw_t w;
 *   xw_bookinfo(&w);                  bookinfo + its pods and EndpointSlices
 *   xw_text(&w, "...yaml...");        more objects
 *   xw_commit(&w);                    snapshot + registry of what is loaded
 *   xds_proxy_t *p = xw_pod_proxy(&w, "default", "reviews-v1-0", XDS_SIDECAR);
 *   ...
 *   xds_proxy_free(p);
 *   xw_close(&w);
 */
#ifndef MESH_TEST_XDSWORLD_H
#define MESH_TEST_XDSWORLD_H

#include "../config/config.h"
#include "../controlplane/registry.h"
#include "../xds/xds.h"

typedef struct xw {
    cfg_store_t *store;
    cfg_snap_t *snap; /* after xw_commit() */
    reg_t *reg;
} xw_t;

/* An empty store. */
void xw_open(xw_t *w);
/* xw_open() with bookinfo.yaml from the shared samples and its workloads
 * (test/xds/fixtures/bookinfo-workloads.yaml); the test fails if either is
 * unreadable or holds a document that does not load. */
void xw_bookinfo(xw_t *w);
/* Loads a file (fails the test if unreadable) or YAML text into the store;
 * documents that do not load are skipped. */
void xw_load(xw_t *w, const char *path);
void xw_text(xw_t *w, const char *yaml);
/* Takes the store's current snapshot and builds its registry (replacing
 * those of an earlier commit). */
void xw_commit(xw_t *w);
void xw_close(xw_t *w);

/* The proxy of the workload ns/pod as its node would announce it (IP,
 * service account, labels); the test fails if the registry has no such
 * workload. Free with xds_proxy_free(). */
xds_proxy_t *xw_pod_proxy(xw_t *w, const char *ns, const char *pod, xds_node_type_t type);
/* Translates for p with the committed snapshot and registry. */
xds_resources_t *xw_translate(xw_t *w, const xds_proxy_t *p);

#endif
