/*
 * informer_internal: what the informer's own files share (the object decoder
 * used for both LIST items and watch events). Not for use outside informer*.c.
 */
#ifndef MESH_INFORMER_INTERNAL_H
#define MESH_INFORMER_INTERNAL_H

#include "informer.h"

/*
 * Decodes one object of kind as the API server sent it (a LIST item, or the
 * object of a watch event). apiVersion and kind are taken from api_version
 * and the kind when the object lacks them (LIST items of built-in kinds).
 * scratch is an arena that lives at least as long as item. Returns a new
 * object reference; NULL with *filtered set when keep() leaves it out, or NULL
 * with *error (malloc'd, every error line joined by "; ") when it is invalid.
 */
cfg_object_t *informer_decode_object(const doc_node_t *item, arena_t *scratch, cfg_kind_t kind,
                                     const char *api_version, informer_filter_fn keep,
                                     bool *filtered, char **error);

/* Copies metadata.namespace, metadata.name and metadata.resourceVersion of
 * an object's document tree ("" when absent). */
void informer_object_id(const doc_node_t *item, char *ns, size_t nslen, char *name, size_t namelen,
                        char *rv, size_t rvlen);

#endif
