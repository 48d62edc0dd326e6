/*
 * doc: the generic document tree that YAML and JSON input become before the
 * config model decodes it. One code path for both formats: libyaml builds the
 * tree for YAML (multi-document streams, anchors, aliases, merge keys,
 * comments), json-c for JSON. Every node knows its line, so errors can point
 * at the text a user wrote.
 *
 * Scalars are resolved the way kubectl's YAML reader resolves them (YAML 1.1:
 * plain `80` is an integer, `yes`/`on` are booleans, quoted text is a string).
 * A document's nodes live in an arena owned by the parser for the duration of
 * the callback; copy what you keep.
 */
#ifndef MESH_DOC_H
#define MESH_DOC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "arena.h"

typedef enum { DOC_NULL, DOC_BOOL, DOC_INT, DOC_FLOAT, DOC_STR, DOC_SEQ, DOC_MAP } doc_type_t;

typedef struct doc_node doc_node_t;

typedef struct doc_pair {
    const char *key;
    uint32_t key_len;
    uint32_t line;
    doc_node_t *value;
} doc_pair_t;

struct doc_node {
    doc_type_t type;
    uint32_t line; /* 1-based, 0 when unknown */
    const char *str; /* scalars: the text as written (the value for DOC_STR) */
    uint32_t len;
    union {
        bool b;
        int64_t i;
        double f;
        struct {
            doc_node_t **items;
            uint32_t n;
        } seq;
        struct {
            doc_pair_t *pairs;
            uint32_t n;
        } map;
    } v;
};

/* One document of a stream, as handed to the callback. */
typedef struct doc {
    const doc_node_t *root; /* NULL when the document could not be parsed */
    uint32_t line; /* line where the document starts */
    const char *error; /* why it could not be parsed ("line 4: ...") or NULL */
    uint32_t error_line;
    arena_t *arena; /* owns root; freed after the callback returns */
} doc_t;

/* Return non-zero from the callback to stop the stream early. */
typedef int (*doc_cb)(void *ud, const doc_t *d);

typedef enum { DOC_FMT_AUTO, DOC_FMT_YAML, DOC_FMT_JSON } doc_format_t;

/*
 * Parses every document of buf[0..len) and calls cb once per document, also
 * for documents that fail to parse (root NULL, error set) so that one broken
 * document never hides the others. Returns the number of documents seen, or
 * the callback's non-zero value if it stopped the stream.
 */
int doc_parse(const char *buf, size_t len, doc_format_t fmt, doc_cb cb, void *ud);

/* The value of key in a map node, or NULL. */
const doc_node_t *doc_map_get(const doc_node_t *map, const char *key);
/* The string of a DOC_STR node, or NULL for any other node. */
const char *doc_str(const doc_node_t *n);
/* "string", "integer", "number", "boolean", "null", "array", "object". */
const char *doc_type_name(doc_type_t t);
/* Deep copy of a node into arena a (aliases become copies). NULL when the
 * copy would exceed DOC_MAX_COPY nodes (an alias bomb). */
doc_node_t *doc_copy(arena_t *a, const doc_node_t *n);

/* Limits against hostile input. */
#define DOC_MAX_DEPTH 128
#define DOC_MAX_NODES 2000000u
#define DOC_MAX_COPY 100000u

#endif
