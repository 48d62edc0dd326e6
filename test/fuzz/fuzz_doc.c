/*
 * libFuzzer target: the document parser alone (common/doc.c), YAML and JSON.
 *
 * Every document tree is walked to the leaves (every string and key read to
 * its terminating NUL) and deep-copied into a fresh arena, so that a tree
 * pointing outside its arena, a cycle made by an alias or a broken copy shows
 * up here rather than later in the decoder.
 *
 * Build with `make fuzz`; run with test/fuzz/run.sh (see README.md there).
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "../../common/arena.h"
#include "../../common/doc.h"

struct walk {
    size_t nodes;
    size_t bytes;
};

/* Aliases share nodes, so a small input may stand for a huge tree: the walk
 * visits at most this many nodes per document. */
#define WALK_BUDGET 2000000u
/* Each level of nesting, aliases included, costs at least one input byte, so
 * an input of at most -max_len bytes cannot be deeper than this unless an
 * alias sits inside its own anchor (a cycle). */
#define MAX_ACYCLIC_DEPTH 65536u

struct step {
    const doc_node_t *node;
    uint32_t next; /* next child to visit */
};

static void visit(struct walk *w, const doc_node_t *n)
{
    if (n == NULL)
        __builtin_trap(); /* trees never hold NULL nodes */
    w->nodes++;
    if (n->type == DOC_STR && (doc_str(n) == NULL || n->str[n->len] != '\0'))
        __builtin_trap(); /* strings are C strings, NUL-terminated at len */
    if (n->str != NULL)
        w->bytes += n->len;
    if (n->type == DOC_MAP)
        for (uint32_t i = 0; i < n->v.map.n; i++) {
            const doc_pair_t *p = &n->v.map.pairs[i];
            if (p->key == NULL || p->key[p->key_len] != '\0')
                __builtin_trap(); /* keys too */
            w->bytes += p->key_len;
        }
}

/* Depth-first walk without recursion, so that the walk itself never runs out
 * of stack however deep the tree is. */
static void walk(struct walk *w, const doc_node_t *root)
{
    static struct step stack[MAX_ACYCLIC_DEPTH + 1];
    size_t depth = 0;
    visit(w, root);
    stack[depth++] = (struct step){root, 0};
    while (depth > 0 && w->nodes < WALK_BUDGET) {
        struct step *s = &stack[depth - 1];
        const doc_node_t *n = s->node, *child;
        if (n->type == DOC_SEQ && s->next < n->v.seq.n)
            child = n->v.seq.items[s->next++];
        else if (n->type == DOC_MAP && s->next < n->v.map.n)
            child = n->v.map.pairs[s->next++].value;
        else {
            depth--; /* every child visited */
            continue;
        }
        if (depth > MAX_ACYCLIC_DEPTH)
            __builtin_trap(); /* a cycle: an alias inside its own anchor */
        visit(w, child);
        stack[depth++] = (struct step){child, 0};
    }
}

static int on_doc(void *ud, const doc_t *d)
{
    struct walk *total = ud;
    if (d->root == NULL) {
        if (d->error == NULL)
            __builtin_trap(); /* a document without a tree says why */
        total->bytes += strlen(d->error);
        return 0;
    }
    struct walk w = {0};
    walk(&w, d->root);
    if (d->root->type == DOC_MAP)
        w.bytes += doc_map_get(d->root, "kind") != NULL;
    /* doc_copy expands aliases; NULL means the expansion was over its limit. */
    arena_t *a = arena_new(4096);
    const doc_node_t *copy = doc_copy(a, d->root);
    if (copy != NULL) {
        struct walk w2 = {0};
        walk(&w2, copy);
        if (w.nodes < WALK_BUDGET && w2.nodes != w.nodes)
            __builtin_trap(); /* a copy has the same shape as its source */
    }
    arena_free(a);
    total->nodes += w.nodes;
    total->bytes += w.bytes;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const doc_format_t formats[] = {DOC_FMT_AUTO, DOC_FMT_JSON, DOC_FMT_YAML};
    for (size_t f = 0; f < sizeof(formats) / sizeof(formats[0]); f++) {
        struct walk w = {0};
        int n = doc_parse((const char *)data, size, formats[f], on_doc, &w);
        if (n < 0)
            __builtin_trap();
    }
    return 0;
}
