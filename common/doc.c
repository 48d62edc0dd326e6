#include "doc.h"

#include <errno.h>
#include <json-c/json.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

/* ---- scalar resolution (YAML 1.1 as kubectl reads it) ---- */

static bool eq_any(const char *s, size_t len, const char *const *words)
{
    for (; *words != NULL; words++)
        if (strlen(*words) == len && memcmp(s, *words, len) == 0)
            return true;
    return false;
}

static bool parse_int(const char *s, size_t len, int64_t *out)
{
    char buf[72];
    size_t j = 0;
    if (len == 0 || len >= sizeof(buf))
        return false;
    bool neg = false;
    size_t i = 0;
    if (s[0] == '+' || s[0] == '-') {
        neg = s[0] == '-';
        i = 1;
    }
    if (i >= len)
        return false;
    int base = 10;
    if (len - i > 2 && s[i] == '0' && (s[i + 1] == 'x' || s[i + 1] == 'X')) {
        base = 16;
        i += 2;
    } else if (len - i > 2 && s[i] == '0' && (s[i + 1] == 'o' || s[i + 1] == 'b')) {
        base = s[i + 1] == 'o' ? 8 : 2;
        i += 2;
    } else if (len - i > 1 && s[i] == '0') {
        base = 8;
        i += 1;
    }
    for (; i < len; i++) {
        char c = s[i];
        if (c == '_')
            continue;
        bool ok = (base == 16 && ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') ||
                                  (c >= 'A' && c <= 'F'))) ||
                  (base == 10 && c >= '0' && c <= '9') || (base == 8 && c >= '0' && c <= '7') ||
                  (base == 2 && (c == '0' || c == '1'));
        if (!ok)
            return false;
        buf[j++] = c;
    }
    if (j == 0) {
        if (base == 8) { /* a lone "0" */
            *out = 0;
            return true;
        }
        return false;
    }
    buf[j] = '\0';
    errno = 0;
    char *end;
    unsigned long long v = strtoull(buf, &end, base);
    if (errno != 0 || *end != '\0')
        return false;
    if (neg) {
        if (v > (unsigned long long)INT64_MAX + 1)
            return false;
        *out = (int64_t)(0 - v);
    } else {
        if (v > (unsigned long long)INT64_MAX)
            return false;
        *out = (int64_t)v;
    }
    return true;
}

static bool parse_float(const char *s, size_t len, double *out)
{
    static const char *const inf[] = {".inf", ".Inf", ".INF", "+.inf", "+.Inf", "+.INF", NULL};
    static const char *const ninf[] = {"-.inf", "-.Inf", "-.INF", NULL};
    static const char *const nan[] = {".nan", ".NaN", ".NAN", NULL};
    if (eq_any(s, len, inf)) {
        *out = INFINITY;
        return true;
    }
    if (eq_any(s, len, ninf)) {
        *out = -INFINITY;
        return true;
    }
    if (eq_any(s, len, nan)) {
        *out = NAN;
        return true;
    }
    /* [-+]?(\.[0-9]+|[0-9][0-9_]*(\.[0-9_]*)?)([eE][-+]?[0-9]+)? */
    char buf[128];
    size_t i = 0, j = 0;
    if (len == 0 || len >= sizeof(buf))
        return false;
    if (s[i] == '+' || s[i] == '-')
        buf[j++] = s[i++];
    size_t digits = 0;
    while (i < len && ((s[i] >= '0' && s[i] <= '9') || s[i] == '_')) {
        if (s[i] != '_') {
            buf[j++] = s[i];
            digits++;
        }
        i++;
    }
    if (i < len && s[i] == '.') {
        buf[j++] = s[i++];
        while (i < len && ((s[i] >= '0' && s[i] <= '9') || s[i] == '_')) {
            if (s[i] != '_') {
                buf[j++] = s[i];
                digits++;
            }
            i++;
        }
    }
    if (digits == 0)
        return false;
    if (i < len && (s[i] == 'e' || s[i] == 'E')) {
        buf[j++] = s[i++];
        if (i < len && (s[i] == '+' || s[i] == '-'))
            buf[j++] = s[i++];
        size_t ed = 0;
        while (i < len && s[i] >= '0' && s[i] <= '9') {
            buf[j++] = s[i++];
            ed++;
        }
        if (ed == 0)
            return false;
    }
    if (i != len)
        return false;
    buf[j] = '\0';
    *out = strtod(buf, NULL);
    return true;
}

static void resolve_plain(doc_node_t *n)
{
    static const char *const nulls[] = {"", "~", "null", "Null", "NULL", NULL};
    static const char *const trues[] = {"y", "Y", "yes", "Yes", "YES", "true", "True", "TRUE",
                                        "on", "On", "ON", NULL};
    static const char *const falses[] = {"n", "N", "no", "No", "NO", "false", "False", "FALSE",
                                         "off", "Off", "OFF", NULL};
    const char *s = n->str;
    size_t len = n->len;
    n->type = DOC_STR;
    if (len == 0) {
        n->type = DOC_NULL;
        return;
    }
    /* Most scalars are names: only a few first characters can start a
     * null, a boolean or a number. */
    char c = s[0];
    bool word = len <= 5 && strchr("~nNyYtTfFoO", c) != NULL;
    bool number = (c >= '0' && c <= '9') || c == '-' || c == '+' || c == '.';
    if (!word && !number)
        return;
    if (word && eq_any(s, len, nulls)) {
        n->type = DOC_NULL;
    } else if (word && eq_any(s, len, trues)) {
        n->type = DOC_BOOL;
        n->v.b = true;
    } else if (word && eq_any(s, len, falses)) {
        n->type = DOC_BOOL;
        n->v.b = false;
    } else if (number && parse_int(s, len, &n->v.i)) {
        n->type = DOC_INT;
    } else if (number && parse_float(s, len, &n->v.f)) {
        n->type = DOC_FLOAT;
    }
}

/* ---- YAML ---- */

struct anchor {
    const char *name;
    doc_node_t *node;
    struct anchor *next;
};

struct frame {
    doc_node_t *node;
    /* growing children before they are frozen into the node */
    doc_node_t **items;
    doc_pair_t *pairs;
    uint32_t n, cap;
    const char *pending_key; /* maps: key waiting for its value */
    uint32_t pending_key_len, pending_line;
    bool expect_key;
    const char *anchor;
};

struct yctx {
    arena_t *arena;
    struct anchor *anchors;
    struct frame stack[DOC_MAX_DEPTH];
    int depth;
    uint32_t line_base;
    uint32_t nodes;
    char err[256];
    uint32_t err_line;
};

static doc_node_t *new_node(struct yctx *y, doc_type_t t, uint32_t line)
{
    doc_node_t *n = arena_alloc(y->arena, sizeof(*n));
    n->type = t;
    n->line = line;
    y->nodes++;
    return n;
}

static int set_err(struct yctx *y, uint32_t line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int set_err(struct yctx *y, uint32_t line, const char *fmt, ...)
{
    if (y->err[0] == '\0') {
        char msg[200];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        snprintf(y->err, sizeof(y->err), "line %u: %s", line, msg);
        y->err_line = line;
    }
    return -1;
}

static void frame_push_item(struct yctx *y, struct frame *f, doc_node_t *n)
{
    (void)y;
    if (f->n == f->cap) {
        f->cap = f->cap ? f->cap * 2 : 8;
        f->items = mesh_xrealloc(f->items, f->cap * sizeof(*f->items));
    }
    f->items[f->n++] = n;
}

static int frame_push_pair(struct yctx *y, struct frame *f, doc_node_t *v)
{
    (void)y;
    if (f->n == f->cap) {
        f->cap = f->cap ? f->cap * 2 : 8;
        f->pairs = mesh_xrealloc(f->pairs, f->cap * sizeof(*f->pairs));
    }
    doc_pair_t *p = &f->pairs[f->n++];
    p->key = f->pending_key;
    p->key_len = f->pending_key_len;
    p->line = f->pending_line;
    p->value = v;
    return 0;
}

static bool key_eq(const doc_pair_t *p, const char *k, uint32_t len)
{
    return p->key_len == len && memcmp(p->key, k, len) == 0;
}

/* Applies YAML merge keys ("<<": *anchor) and rejects duplicate keys. */
static int finish_map(struct yctx *y, struct frame *f)
{
    doc_pair_t *own = f->pairs;
    uint32_t n = f->n;
    doc_pair_t *out = arena_alloc(y->arena, (n ? n : 1) * sizeof(*out));
    uint32_t m = 0;
    for (uint32_t i = 0; i < n; i++) {
        if (key_eq(&own[i], "<<", 2))
            continue;
        for (uint32_t j = 0; j < m; j++)
            if (key_eq(&out[j], own[i].key, own[i].key_len))
                return set_err(y, own[i].line, "duplicate key \"%s\"", own[i].key);
        out[m++] = own[i];
    }
    for (uint32_t i = 0; i < n; i++) {
        if (!key_eq(&own[i], "<<", 2))
            continue;
        const doc_node_t *src = own[i].value;
        const doc_node_t *const *list = &src;
        uint32_t nl = 1;
        if (src->type == DOC_SEQ) {
            list = (const doc_node_t *const *)src->v.seq.items;
            nl = src->v.seq.n;
        }
        for (uint32_t k = 0; k < nl; k++) {
            const doc_node_t *mm = list[k];
            if (mm->type != DOC_MAP)
                return set_err(y, own[i].line, "merge key \"<<\" needs a mapping");
            for (uint32_t j = 0; j < mm->v.map.n; j++) {
                const doc_pair_t *p = &mm->v.map.pairs[j];
                bool have = false;
                for (uint32_t q = 0; q < m && !have; q++)
                    have = key_eq(&out[q], p->key, p->key_len);
                if (have)
                    continue;
                doc_pair_t *grown = arena_alloc(y->arena, (m + 1) * sizeof(*grown));
                memcpy(grown, out, m * sizeof(*grown));
                out = grown;
                out[m++] = *p;
            }
        }
    }
    f->node->v.map.pairs = out;
    f->node->v.map.n = m;
    return 0;
}

static void finish_seq(struct yctx *y, struct frame *f)
{
    doc_node_t **items = arena_alloc(y->arena, (f->n ? f->n : 1) * sizeof(*items));
    if (f->n)
        memcpy(items, f->items, f->n * sizeof(*items));
    f->node->v.seq.items = items;
    f->node->v.seq.n = f->n;
}

static void add_anchor(struct yctx *y, const char *name, doc_node_t *n)
{
    struct anchor *a = arena_alloc(y->arena, sizeof(*a));
    a->name = arena_strdup(y->arena, name);
    a->node = n;
    a->next = y->anchors;
    y->anchors = a;
}

/* Hands a finished node to its parent; returns the root when depth is 0. */
static int attach(struct yctx *y, doc_node_t *n, doc_node_t **root)
{
    if (y->depth == 0) {
        *root = n;
        return 0;
    }
    struct frame *f = &y->stack[y->depth - 1];
    if (f->node->type == DOC_SEQ) {
        frame_push_item(y, f, n);
        return 0;
    }
    if (f->expect_key) {
        if (n->type == DOC_MAP || n->type == DOC_SEQ)
            return set_err(y, n->line, "mapping keys must be scalars");
        f->pending_key = n->str;
        f->pending_key_len = n->len;
        f->pending_line = n->line;
        f->expect_key = false;
        return 0;
    }
    f->expect_key = true;
    return frame_push_pair(y, f, n);
}

static void free_frames(struct yctx *y)
{
    for (int i = 0; i < y->depth; i++) {
        free(y->stack[i].items);
        free(y->stack[i].pairs);
    }
    y->depth = 0;
}

static bool is_str_tag(const yaml_char_t *tag)
{
    return tag != NULL && strcmp((const char *)tag, YAML_STR_TAG) == 0;
}

/*
 * Parses one chunk of a stream (normally one document). Calls cb per document.
 * Returns <0 after reporting a syntax error, >0 if the callback stopped, 0 at end.
 */
/* A plain scalar in a flow collection that ends in ':' before ',' or ']'
 * (an IPv6 address such as "2001:db8::" in [a, b]) stops libyaml; kubectl's
 * reader takes it as a string. The caller quotes [start, end) and retries. */
struct flow_colon_fix {
    bool wanted;
    size_t start, end;
};

static int parse_yaml_chunk(const char *buf, size_t len, uint32_t line_base, doc_cb cb, void *ud,
                            int *ndocs, struct flow_colon_fix *fix)
{
    int delivered = 0;
    yaml_parser_t parser;
    yaml_event_t ev;
    struct yctx y;
    memset(&y, 0, sizeof(y));
    y.line_base = line_base;
    int rc = 0;
    doc_node_t *root = NULL;
    uint32_t doc_line = line_base + 1;
    bool in_doc = false;

    if (!yaml_parser_initialize(&parser))
        return -1;
    yaml_parser_set_input_string(&parser, (const unsigned char *)buf, len);
    for (;;) {
        if (!yaml_parser_parse(&parser, &ev)) {
            if (fix != NULL && delivered == 0 && parser.problem != NULL && parser.context != NULL &&
                strcmp(parser.problem, "found unexpected ':'") == 0 &&
                strcmp(parser.context, "while scanning a plain scalar") == 0 &&
                parser.context_mark.index < parser.problem_mark.index &&
                parser.problem_mark.index < len) {
                fix->wanted = true;
                fix->start = parser.context_mark.index;
                fix->end = parser.problem_mark.index + 1;
                goto out;
            }
            uint32_t line = line_base + (uint32_t)parser.problem_mark.line + 1;
            if (y.err[0] == '\0') {
                snprintf(y.err, sizeof(y.err), "line %u: %s%s%s", line,
                         parser.problem ? parser.problem : "invalid YAML",
                         parser.context ? " " : "", parser.context ? parser.context : "");
                y.err_line = line;
            }
            break;
        }
        uint32_t line = line_base + (uint32_t)ev.start_mark.line + 1;
        yaml_event_type_t t = ev.type;
        int st = 0;
        switch (t) {
        case YAML_DOCUMENT_START_EVENT:
            y.arena = arena_new(len + 256);
            y.anchors = NULL;
            y.nodes = 0;
            root = NULL;
            in_doc = true;
            doc_line = line;
            break;
        case YAML_SCALAR_EVENT: {
            doc_node_t *n = new_node(&y, DOC_STR, line);
            n->str = arena_strndup(y.arena, (const char *)ev.data.scalar.value, ev.data.scalar.length);
            n->len = (uint32_t)ev.data.scalar.length;
            if (ev.data.scalar.style == YAML_PLAIN_SCALAR_STYLE && !is_str_tag(ev.data.scalar.tag))
                resolve_plain(n);
            if (ev.data.scalar.anchor)
                add_anchor(&y, (const char *)ev.data.scalar.anchor, n);
            st = attach(&y, n, &root);
            break;
        }
        case YAML_ALIAS_EVENT: {
            struct anchor *a = y.anchors;
            while (a && strcmp(a->name, (const char *)ev.data.alias.anchor) != 0)
                a = a->next;
            bool open = false; /* an alias inside its own anchor would make a cycle */
            for (int i = 0; a != NULL && i < y.depth && !open; i++)
                open = y.stack[i].node == a->node;
            if (a == NULL)
                st = set_err(&y, line, "unknown anchor \"%s\"", (const char *)ev.data.alias.anchor);
            else if (open)
                st = set_err(&y, line, "alias \"%s\" refers to a node that contains it",
                             (const char *)ev.data.alias.anchor);
            else
                st = attach(&y, a->node, &root);
            break;
        }
        case YAML_SEQUENCE_START_EVENT:
        case YAML_MAPPING_START_EVENT: {
            if (y.depth >= DOC_MAX_DEPTH) {
                st = set_err(&y, line, "nesting deeper than %d levels", DOC_MAX_DEPTH);
                break;
            }
            bool map = t == YAML_MAPPING_START_EVENT;
            doc_node_t *n = new_node(&y, map ? DOC_MAP : DOC_SEQ, line);
            const yaml_char_t *anchor =
                map ? ev.data.mapping_start.anchor : ev.data.sequence_start.anchor;
            if (anchor)
                add_anchor(&y, (const char *)anchor, n);
            struct frame *f = &y.stack[y.depth++];
            memset(f, 0, sizeof(*f));
            f->node = n;
            f->expect_key = true;
            break;
        }
        case YAML_SEQUENCE_END_EVENT:
        case YAML_MAPPING_END_EVENT: {
            struct frame *f = &y.stack[y.depth - 1];
            if (f->node->type == DOC_MAP)
                st = finish_map(&y, f);
            else
                finish_seq(&y, f);
            doc_node_t *n = f->node;
            free(f->items);
            free(f->pairs);
            y.depth--;
            if (st == 0)
                st = attach(&y, n, &root);
            break;
        }
        case YAML_DOCUMENT_END_EVENT: {
            doc_t d = {.root = root, .line = doc_line, .arena = y.arena};
            if (root == NULL) { /* empty document: nothing to report */
                arena_free(y.arena);
                y.arena = NULL;
                in_doc = false;
                break;
            }
            (*ndocs)++;
            delivered++;
            int r = cb(ud, &d);
            arena_free(y.arena);
            y.arena = NULL;
            in_doc = false;
            if (r != 0) {
                rc = r;
                yaml_event_delete(&ev);
                goto out;
            }
            break;
        }
        default:
            break;
        }
        if (y.nodes > DOC_MAX_NODES && st == 0)
            st = set_err(&y, line, "document has too many nodes");
        yaml_event_delete(&ev);
        if (st != 0 || t == YAML_STREAM_END_EVENT)
            break;
    }
    if (y.err[0] != '\0') {
        if (!in_doc) {
            y.arena = arena_new(256);
            doc_line = y.err_line;
        }
        doc_t d = {.root = NULL, .line = doc_line, .error = y.err, .error_line = y.err_line,
                   .arena = y.arena};
        (*ndocs)++;
        rc = cb(ud, &d);
        if (rc == 0)
            rc = -1;
        arena_free(y.arena);
        y.arena = NULL;
    }
out:
    free_frames(&y);
    arena_free(y.arena);
    yaml_parser_delete(&parser);
    return rc;
}

/* Parses a chunk, quoting flow scalars that end in ':' (see flow_colon_fix). */
static int parse_yaml_fixing(const char *buf, size_t len, uint32_t line_base, doc_cb cb, void *ud,
                             int *ndocs)
{
    char *copy = NULL;
    int rc = 0;
    size_t done = 0; /* fixes only move forward: each quotes a later scalar */
    for (int tries = 0;; tries++) {
        struct flow_colon_fix fix = {0};
        rc = parse_yaml_chunk(buf, len, line_base, cb, ud, ndocs, tries < 16 ? &fix : NULL);
        if (!fix.wanted)
            break;
        bool plain = fix.start >= done;
        for (size_t i = fix.start; i < fix.end && plain; i++)
            plain = buf[i] != '"' && buf[i] != '\\' && buf[i] != '\n' && buf[i] != '\'';
        if (!plain) { /* not the IPv6-like case: report libyaml's error as it is */
            rc = parse_yaml_chunk(buf, len, line_base, cb, ud, ndocs, NULL);
            break;
        }
        char *next = mesh_xmalloc(len + 2);
        memcpy(next, buf, fix.start);
        next[fix.start] = '"';
        memcpy(next + fix.start + 1, buf + fix.start, fix.end - fix.start);
        next[fix.end + 1] = '"';
        memcpy(next + fix.end + 2, buf + fix.end, len - fix.end);
        len += 2;
        done = fix.end + 2;
        free(copy);
        copy = next;
        buf = copy;
    }
    free(copy);
    return rc;
}

static bool is_marker_line(const char *p, const char *end, char c)
{
    if (end - p < 3 || p[0] != c || p[1] != c || p[2] != c)
        return false;
    return end - p == 3 || p[3] == ' ' || p[3] == '\t' || p[3] == '\n' || p[3] == '\r';
}

/*
 * Splits the stream at "---" lines so that a syntax error in one document
 * cannot take the following ones down with it, then parses each chunk.
 */
static int parse_yaml(const char *buf, size_t len, doc_cb cb, void *ud)
{
    const char *end = buf + len;
    const char *chunk = buf;
    uint32_t chunk_line = 0, line = 0;
    int ndocs = 0;
    const char *p = buf;
    const char *directives = NULL; /* first of the '%' lines right before a marker */
    uint32_t directives_line = 0;
    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        const char *next = eol ? eol + 1 : end;
        if (*p == '%') {
            if (directives == NULL) {
                directives = p;
                directives_line = line;
            }
        } else if (is_marker_line(p, eol ? eol : end, '-') && p != chunk) {
            const char *cut = directives ? directives : p;
            uint32_t cut_line = directives ? directives_line : line;
            if (cut > chunk) {
                int r = parse_yaml_fixing(chunk, (size_t)(cut - chunk), chunk_line, cb, ud, &ndocs);
                if (r > 0)
                    return r;
            }
            chunk = cut;
            chunk_line = cut_line;
            directives = NULL;
        } else {
            directives = NULL;
        }
        p = next;
        line++;
    }
    if (chunk < end) {
        int r = parse_yaml_fixing(chunk, (size_t)(end - chunk), chunk_line, cb, ud, &ndocs);
        if (r > 0)
            return r;
    }
    return ndocs;
}

/* ---- JSON ---- */

static doc_node_t *from_json(arena_t *a, struct json_object *j, uint32_t line, uint32_t *count,
                             int depth)
{
    if (++*count > DOC_MAX_NODES || depth > DOC_MAX_DEPTH)
        return NULL;
    doc_node_t *n = arena_alloc(a, sizeof(*n));
    n->line = line;
    switch (json_object_get_type(j)) {
    case json_type_null:
        n->type = DOC_NULL;
        n->str = "null";
        n->len = 4;
        break;
    case json_type_boolean:
        n->type = DOC_BOOL;
        n->v.b = json_object_get_boolean(j);
        n->str = n->v.b ? "true" : "false";
        n->len = (uint32_t)strlen(n->str);
        break;
    case json_type_int:
    case json_type_double: {
        bool is_int = json_object_get_type(j) == json_type_int;
        const char *text = json_object_to_json_string_ext(j, JSON_C_TO_STRING_PLAIN);
        n->str = arena_strdup(a, text);
        n->len = (uint32_t)strlen(n->str);
        if (is_int) {
            n->type = DOC_INT;
            n->v.i = json_object_get_int64(j);
        } else {
            n->type = DOC_FLOAT;
            n->v.f = json_object_get_double(j);
        }
        break;
    }
    case json_type_string:
        n->type = DOC_STR;
        n->len = (uint32_t)json_object_get_string_len(j);
        n->str = arena_strndup(a, json_object_get_string(j), n->len);
        break;
    case json_type_array: {
        size_t len = json_object_array_length(j);
        n->type = DOC_SEQ;
        n->v.seq.items = arena_alloc(a, (len ? len : 1) * sizeof(doc_node_t *));
        for (size_t i = 0; i < len; i++) {
            doc_node_t *c = from_json(a, json_object_array_get_idx(j, i), line, count, depth + 1);
            if (c == NULL)
                return NULL;
            n->v.seq.items[n->v.seq.n++] = c;
        }
        break;
    }
    case json_type_object: {
        int len = json_object_object_length(j);
        n->type = DOC_MAP;
        n->v.map.pairs = arena_alloc(a, (size_t)(len > 0 ? len : 1) * sizeof(doc_pair_t));
        json_object_object_foreach(j, key, val)
        {
            doc_node_t *c = from_json(a, val, line, count, depth + 1);
            if (c == NULL)
                return NULL;
            doc_pair_t *p = &n->v.map.pairs[n->v.map.n++];
            p->key = arena_strdup(a, key);
            p->key_len = (uint32_t)strlen(key);
            p->line = line;
            p->value = c;
        }
        break;
    }
    }
    return n;
}

static uint32_t line_at(const char *buf, size_t off)
{
    uint32_t line = 1;
    for (size_t i = 0; i < off; i++)
        if (buf[i] == '\n')
            line++;
    return line;
}

/* End of the JSON value starting at off: matching bracket outside strings,
 * or the next white space for a bare scalar. json-c's strict mode refuses
 * trailing data, so a stream of values is cut up first. */
static size_t json_value_end(const char *buf, size_t len, size_t off)
{
    size_t depth = 0;
    bool in_str = false;
    for (size_t i = off; i < len; i++) {
        char c = buf[i];
        if (in_str) {
            if (c == '\\')
                i++;
            else if (c == '"')
                in_str = false;
            continue;
        }
        if (c == '"') {
            in_str = true;
        } else if (c == '{' || c == '[') {
            depth++;
        } else if (c == '}' || c == ']') {
            if (depth > 0 && --depth == 0)
                return i + 1;
        } else if (depth == 0 && (c == ' ' || c == '\n' || c == '\t' || c == '\r')) {
            return i;
        }
    }
    return len;
}

static int parse_json(const char *buf, size_t len, doc_cb cb, void *ud)
{
    struct json_tokener *tok = json_tokener_new_ex(DOC_MAX_DEPTH);
    if (tok == NULL)
        return -1;
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
    size_t off = 0;
    int ndocs = 0, rc = 0;
    while (off < len) {
        while (off < len && (buf[off] == ' ' || buf[off] == '\t' || buf[off] == '\n' ||
                             buf[off] == '\r'))
            off++;
        if (off >= len)
            break;
        uint32_t line = line_at(buf, off);
        size_t chunk = json_value_end(buf, len, off) - off;
        if (chunk > (size_t)INT32_MAX)
            chunk = (size_t)INT32_MAX;
        struct json_object *j = json_tokener_parse_ex(tok, buf + off, (int)chunk);
        enum json_tokener_error jerr = json_tokener_get_error(tok);
        doc_t d = {.line = line, .arena = arena_new(4096)};
        char err[256];
        if (jerr == json_tokener_continue) {
            snprintf(err, sizeof(err), "line %u: unexpected end of JSON input", line_at(buf, len));
            d.error = err;
            d.error_line = line_at(buf, len);
        } else if (jerr != json_tokener_success || j == NULL) {
            size_t at = off + json_tokener_get_parse_end(tok);
            snprintf(err, sizeof(err), "line %u: %s", line_at(buf, at), json_tokener_error_desc(jerr));
            d.error = err;
            d.error_line = line_at(buf, at);
        } else {
            uint32_t count = 0;
            d.root = from_json(d.arena, j, line, &count, 0);
            if (d.root == NULL) {
                snprintf(err, sizeof(err), "line %u: document too large or too deep", line);
                d.error = err;
                d.error_line = line;
            }
        }
        ndocs++;
        rc = cb(ud, &d);
        arena_free(d.arena);
        if (j)
            json_object_put(j);
        if (rc != 0 || d.error != NULL)
            break; /* after a JSON syntax error the rest of the stream is unknowable */
        off += chunk;
        json_tokener_reset(tok);
    }
    json_tokener_free(tok);
    return rc > 0 ? rc : ndocs;
}

int doc_parse(const char *buf, size_t len, doc_format_t fmt, doc_cb cb, void *ud)
{
    if (fmt == DOC_FMT_AUTO) {
        size_t i = 0;
        while (i < len && (buf[i] == ' ' || buf[i] == '\t' || buf[i] == '\n' || buf[i] == '\r'))
            i++;
        fmt = (i < len && (buf[i] == '{' || buf[i] == '[')) ? DOC_FMT_JSON : DOC_FMT_YAML;
    }
    return fmt == DOC_FMT_JSON ? parse_json(buf, len, cb, ud) : parse_yaml(buf, len, cb, ud);
}

/* ---- helpers ---- */

const doc_node_t *doc_map_get(const doc_node_t *map, const char *key)
{
    if (map == NULL || map->type != DOC_MAP)
        return NULL;
    size_t len = strlen(key);
    for (uint32_t i = 0; i < map->v.map.n; i++)
        if (map->v.map.pairs[i].key_len == len && memcmp(map->v.map.pairs[i].key, key, len) == 0)
            return map->v.map.pairs[i].value;
    return NULL;
}

const char *doc_str(const doc_node_t *n)
{
    return n != NULL && n->type == DOC_STR ? n->str : NULL;
}

const char *doc_type_name(doc_type_t t)
{
    switch (t) {
    case DOC_NULL: return "null";
    case DOC_BOOL: return "boolean";
    case DOC_INT: return "integer";
    case DOC_FLOAT: return "number";
    case DOC_STR: return "string";
    case DOC_SEQ: return "array";
    case DOC_MAP: return "object";
    }
    return "unknown";
}

static doc_node_t *copy_bounded(arena_t *a, const doc_node_t *n, uint32_t *budget)
{
    if (*budget == 0)
        return NULL;
    (*budget)--;
    doc_node_t *c = arena_alloc(a, sizeof(*c));
    *c = *n;
    if (n->str)
        c->str = arena_strndup(a, n->str, n->len);
    if (n->type == DOC_SEQ) {
        c->v.seq.items = arena_alloc(a, (n->v.seq.n ? n->v.seq.n : 1) * sizeof(doc_node_t *));
        for (uint32_t i = 0; i < n->v.seq.n; i++)
            if ((c->v.seq.items[i] = copy_bounded(a, n->v.seq.items[i], budget)) == NULL)
                return NULL;
    } else if (n->type == DOC_MAP) {
        c->v.map.pairs = arena_alloc(a, (n->v.map.n ? n->v.map.n : 1) * sizeof(doc_pair_t));
        for (uint32_t i = 0; i < n->v.map.n; i++) {
            const doc_pair_t *p = &n->v.map.pairs[i];
            c->v.map.pairs[i] = *p;
            c->v.map.pairs[i].key = arena_strndup(a, p->key, p->key_len);
            if ((c->v.map.pairs[i].value = copy_bounded(a, p->value, budget)) == NULL)
                return NULL;
        }
    }
    return c;
}

doc_node_t *doc_copy(arena_t *a, const doc_node_t *n)
{
    uint32_t budget = DOC_MAX_COPY;
    return copy_bounded(a, n, &budget);
}
