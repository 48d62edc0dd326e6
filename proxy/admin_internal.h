/*
 * admin: the proxy's operations endpoints (private to proxy/; see admin.c).
 * Owns its thread, loop and listening sockets; reads the engine through
 * px_server_metrics() / px_server_counters() / px_server_snapshot().
 */
#ifndef MESH_PROXY_ADMIN_INTERNAL_H
#define MESH_PROXY_ADMIN_INTERNAL_H

#include <stdbool.h>

#include "proxy.h"
#include "xds_client_internal.h"

typedef struct px_admin px_admin_t;

typedef struct px_admin_opts {
    px_server_t *server;
    px_xds_t *xds;        /* NULL in static-config mode */
    const char *stats_ip; /* address of the stats and readiness ports (NULL: 0.0.0.0) */
    int stats_port;       /* /stats/prometheus; <= 0: off */
    int ready_port;       /* /healthz/ready; <= 0: off */
    int admin_port;       /* 127.0.0.1 only; <= 0: off */
    int status_port;      /* merged metrics and readiness (Istio's 15020); <= 0: off */
    /* The application's own metrics, appended to the status port's
     * /stats/prometheus (http://127.0.0.1:PORT/PATH); NULL: none. */
    const char *app_metrics_url;
    bool (*ready)(void *arg); /* NULL: always ready */
    void *ready_arg;
} px_admin_opts_t;

/* Binds the ports and starts the thread. NULL with err on failure. */
px_admin_t *px_admin_start(const px_admin_opts_t *o, char *err, size_t errlen);
void px_admin_stop(px_admin_t *a);

#endif
