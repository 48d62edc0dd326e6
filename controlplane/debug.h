/*
 * debug: meshd's debug HTTP server (libmicrohttpd, plain HTTP, port 8080 by
 * default). A small registry maps GET paths to handlers that produce a body
 * and a content type; parts register their own pages (/debug/syncz,
 * /debug/config_dump ...). Built in here: /debug/configz (what the config
 * store holds, as JSON), /ready (200 once the configuration sources have
 * synced), /debug/informerz (the informers' state) and /debug (the list of
 * pages).
 *
 * Threads and ownership: handlers run on the server's own thread, one request
 * at a time, so they must only read thread-safe state (store snapshots,
 * informer_stats ...). The server borrows every ud it is given; those must
 * outlive debug_server_stop(). Handlers may be added before or after start.
 */
#ifndef MESH_DEBUG_H
#define MESH_DEBUG_H

#include <stdbool.h>
#include <stddef.h>

#include "../config/config.h"
#include "informer.h"

typedef struct debug_server debug_server_t;
typedef struct debug_req debug_req_t;

/* What a handler answers: status (200 when left 0), a malloc'd body the server
 * frees, and a static content type ("application/json" when NULL). */
typedef struct debug_resp {
    int status;
    char *body;
    size_t len;
    const char *content_type;
} debug_resp_t;

typedef void (*debug_handler_fn)(void *ud, const debug_req_t *req, debug_resp_t *resp);

/* The value of query argument name ("?kind=Pod"), or NULL. */
const char *debug_req_arg(const debug_req_t *req, const char *name);
/* The request path without the query. */
const char *debug_req_path(const debug_req_t *req);

/* Sets the response to a copy of text with the given status and content type. */
void debug_resp_text(debug_resp_t *resp, int status, const char *content_type, const char *text);

/* Starts serving on addr ("127.0.0.1:8080", ":8080" for every IPv4 address,
 * "[::1]:8080"; port 0 picks a free port). NULL with err set when the address
 * is invalid or cannot be bound. */
debug_server_t *debug_server_start(const char *addr, char *err, size_t errlen);
/* The port actually bound. */
int debug_server_port(const debug_server_t *s);
/* Registers handler for GET path (exact match); a later registration of the
 * same path replaces it. doc is one line for the /debug index. Returns 0. */
int debug_handle(debug_server_t *s, const char *path, const char *doc, debug_handler_fn fn, void *ud);
/* Stops serving and frees the server. NULL is ignored. */
void debug_server_stop(debug_server_t *s);

/* ---- built-in pages ---- */

/* /debug/configz: every object of the store as a JSON array (cfg_object_to_json);
 * ?kind=VirtualService, ?namespace=NS and ?name=NAME filter. Secret values
 * are never shown (their keys are, with the value "<redacted>", and so is
 * kubectl's last-applied-configuration annotation of a Secret). */
void debug_add_configz(debug_server_t *s, cfg_store_t *store);

/* /ready: 200 "ready" when ready(ud) is true, else 503 "not ready". */
void debug_add_ready(debug_server_t *s, bool (*ready)(void *ud), void *ud);

/* /debug/informerz: the informers' per-kind state and counters, as JSON. */
void debug_add_informerz(debug_server_t *s, informer_t *inf);

#endif
