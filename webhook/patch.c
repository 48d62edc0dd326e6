/*
 * JSONPatch (RFC 6902): the difference between the pod as it came and the
 * pod as injected, and (for tests and callers that check a patch) applying
 * one. Paths are JSON Pointers (RFC 6901): "/" in a key is "~1", "~" is "~0".
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/arena.h"
#include "webhook_internal.h"

struct path {
    char *buf;
    size_t len, cap;
};

static void path_grow(struct path *p, size_t more)
{
    if (p->len + more + 1 > p->cap) {
        p->cap = (p->len + more + 1) * 2;
        p->buf = mesh_xrealloc(p->buf, p->cap);
    }
}

static size_t path_key(struct path *p, const char *key)
{
    size_t mark = p->len;
    path_grow(p, 1 + 2 * strlen(key));
    p->buf[p->len++] = '/';
    for (const char *k = key; *k; k++) {
        if (*k == '~' || *k == '/') {
            p->buf[p->len++] = '~';
            p->buf[p->len++] = *k == '~' ? '0' : '1';
        } else {
            p->buf[p->len++] = *k;
        }
    }
    p->buf[p->len] = '\0';
    return mark;
}

static size_t path_idx(struct path *p, size_t i)
{
    size_t mark = p->len;
    path_grow(p, 24);
    p->len += (size_t)snprintf(p->buf + p->len, 24, "/%zu", i);
    return mark;
}

static void path_pop(struct path *p, size_t mark)
{
    p->len = mark;
    p->buf[mark] = '\0';
}

static void op(json_object *ops, const char *name, const struct path *p, json_object *value, bool has_value)
{
    json_object *o = json_object_new_object();
    json_object_object_add(o, "op", json_object_new_string(name));
    json_object_object_add(o, "path", json_object_new_string(p->buf));
    if (has_value)
        json_object_object_add(o, "value", json_object_get(value));
    json_object_array_add(ops, o);
}

static void diff(json_object *ops, struct path *p, json_object *a, json_object *b)
{
    if (a == b)
        return;
    /* Containers are compared by walking them (each node once); only
     * scalars and array items are compared whole. */
    if (json_object_is_type(a, json_type_object) && json_object_is_type(b, json_type_object)) {
        json_object_object_foreach(a, ka, va) {
            (void)va;
            if (!json_object_object_get_ex(b, ka, NULL)) {
                size_t m = path_key(p, ka);
                op(ops, "remove", p, NULL, false);
                path_pop(p, m);
            }
        }
        json_object_object_foreach(b, kb, vb) {
            json_object *old = NULL;
            size_t m = path_key(p, kb);
            if (!json_object_object_get_ex(a, kb, &old))
                op(ops, "add", p, vb, true);
            else
                diff(ops, p, old, vb);
            path_pop(p, m);
        }
        return;
    }
    if (json_object_is_type(a, json_type_array) && json_object_is_type(b, json_type_array)) {
        size_t na = json_object_array_length(a), nb = json_object_array_length(b);
        if (na == nb) {
            for (size_t i = 0; i < na; i++) {
                size_t m = path_idx(p, i);
                diff(ops, p, json_object_array_get_idx(a, i), json_object_array_get_idx(b, i));
                path_pop(p, m);
            }
            return;
        }
        if (nb > na) {
            size_t i, extra = nb - na;
            /* Items appended at the end. */
            for (i = 0; i < na && json_object_equal(json_object_array_get_idx(a, i), json_object_array_get_idx(b, i)); i++)
                ;
            if (i == na) {
                for (size_t j = na; j < nb; j++) {
                    size_t m = path_idx(p, j);
                    op(ops, "add", p, json_object_array_get_idx(b, j), true);
                    path_pop(p, m);
                }
                return;
            }
            /* Items inserted at the front. */
            for (i = 0; i < na && json_object_equal(json_object_array_get_idx(a, i),
                                                    json_object_array_get_idx(b, i + extra));
                 i++)
                ;
            if (i == na) {
                for (size_t j = 0; j < extra; j++) {
                    size_t m = path_idx(p, j);
                    op(ops, "add", p, json_object_array_get_idx(b, j), true);
                    path_pop(p, m);
                }
                return;
            }
        }
    }
    if (json_object_equal(a, b))
        return;
    op(ops, "replace", p, b, true);
}

json_object *webhook_patch_diff(json_object *from, json_object *to)
{
    json_object *ops = json_object_new_array();
    struct path p = {0};
    path_grow(&p, 64);
    p.buf[0] = '\0';
    diff(ops, &p, from, to);
    free(p.buf);
    return ops;
}

/* ---- applying ---- */

/* The next token of pointer *pp (unescaped into tok); false at the end. */
static bool next_token(const char **pp, char *tok, size_t size, bool *bad)
{
    const char *p = *pp;
    size_t n = 0;
    if (*p == '\0')
        return false;
    if (*p != '/') {
        *bad = true;
        return false;
    }
    for (p++; *p && *p != '/'; p++) {
        char ch = *p;
        if (ch == '~') {
            if (p[1] == '0')
                ch = '~';
            else if (p[1] == '1')
                ch = '/';
            else {
                *bad = true;
                return false;
            }
            p++;
        }
        if (n + 1 >= size) {
            *bad = true;
            return false;
        }
        tok[n++] = ch;
    }
    tok[n] = '\0';
    *pp = p;
    return true;
}

static bool parse_index(const char *tok, size_t max, size_t *out)
{
    size_t v = 0;
    if (tok[0] == '\0' || (tok[0] == '0' && tok[1] != '\0'))
        return false;
    for (const char *p = tok; *p; p++) {
        if (!isdigit((unsigned char)*p) || v > 100000000)
            return false;
        v = v * 10 + (size_t)(*p - '0');
    }
    if (v > max)
        return false;
    *out = v;
    return true;
}

static void array_insert(json_object *arr, size_t idx, json_object *v)
{
    size_t n = json_object_array_length(arr);
    if (idx >= n) {
        json_object_array_add(arr, v);
        return;
    }
    json_object_array_add(arr, json_object_get(json_object_array_get_idx(arr, n - 1)));
    for (size_t i = n - 1; i > idx; i--)
        json_object_array_put_idx(arr, i, json_object_get(json_object_array_get_idx(arr, i - 1)));
    json_object_array_put_idx(arr, idx, v);
}

static int apply_one(json_object **doc, json_object *o, char *err, size_t errlen)
{
    const char *name = json_object_get_string(json_object_object_get(o, "op"));
    const char *path = json_object_get_string(json_object_object_get(o, "path"));
    json_object *value = NULL;
    bool has_value = json_object_object_get_ex(o, "value", &value);
    char tok[1024], last[1024];
    bool bad = false;
    if (name == NULL || path == NULL) {
        snprintf(err, errlen, "an operation needs op and path");
        return -1;
    }
    bool is_add = strcmp(name, "add") == 0, is_rm = strcmp(name, "remove") == 0,
         is_rep = strcmp(name, "replace") == 0, is_test = strcmp(name, "test") == 0;
    if (!is_add && !is_rm && !is_rep && !is_test) {
        snprintf(err, errlen, "unsupported op \"%s\"", name);
        return -1;
    }
    if ((is_add || is_rep || is_test) && !has_value) {
        snprintf(err, errlen, "%s %s: missing value", name, path);
        return -1;
    }
    if (path[0] == '\0') {
        if (is_test) {
            if (!json_object_equal(*doc, value))
                goto test_failed;
            return 0;
        }
        if (is_rm) {
            snprintf(err, errlen, "remove: cannot remove the whole document");
            return -1;
        }
        json_object_put(*doc);
        *doc = json_object_get(value);
        return 0;
    }
    /* Walk to the parent of the last token. */
    json_object *parent = *doc;
    const char *p = path;
    if (!next_token(&p, last, sizeof(last), &bad))
        goto bad_path;
    while (next_token(&p, tok, sizeof(tok), &bad)) {
        json_object *child = NULL;
        size_t idx;
        if (json_object_is_type(parent, json_type_object)) {
            if (!json_object_object_get_ex(parent, last, &child))
                goto missing;
        } else if (json_object_is_type(parent, json_type_array)) {
            size_t n = json_object_array_length(parent);
            if (n == 0 || !parse_index(last, n - 1, &idx))
                goto missing;
            child = json_object_array_get_idx(parent, idx);
        } else {
            goto missing;
        }
        parent = child;
        memcpy(last, tok, strlen(tok) + 1);
    }
    if (bad)
        goto bad_path;
    if (json_object_is_type(parent, json_type_object)) {
        json_object *cur = NULL;
        bool exists = json_object_object_get_ex(parent, last, &cur);
        if ((is_rm || is_rep || is_test) && !exists)
            goto missing;
        if (is_test)
            return json_object_equal(cur, value) ? 0 : (snprintf(err, errlen, "test %s: value differs", path), -1);
        if (is_rm)
            json_object_object_del(parent, last);
        else
            json_object_object_add(parent, last, json_object_get(value));
        return 0;
    }
    if (json_object_is_type(parent, json_type_array)) {
        size_t n = json_object_array_length(parent), idx;
        if (is_add && strcmp(last, "-") == 0)
            idx = n;
        else if (!parse_index(last, is_add ? n : (n ? n - 1 : 0), &idx) || (!is_add && n == 0))
            goto missing;
        if (is_test)
            return json_object_equal(json_object_array_get_idx(parent, idx), value)
                       ? 0
                       : (snprintf(err, errlen, "test %s: value differs", path), -1);
        if (is_add)
            array_insert(parent, idx, json_object_get(value));
        else if (is_rm)
            json_object_array_del_idx(parent, idx, 1);
        else
            json_object_array_put_idx(parent, idx, json_object_get(value));
        return 0;
    }
missing:
    snprintf(err, errlen, "%s %s: the path does not exist", name, path);
    return -1;
bad_path:
    snprintf(err, errlen, "%s: \"%s\" is not a valid JSON pointer", name, path);
    return -1;
test_failed:
    snprintf(err, errlen, "test %s: value differs", path);
    return -1;
}

int webhook_patch_apply(json_object **doc, json_object *patch, char *err, size_t errlen)
{
    if (!json_object_is_type(patch, json_type_array)) {
        snprintf(err, errlen, "a JSONPatch is an array of operations");
        return -1;
    }
    for (size_t i = 0; i < json_object_array_length(patch); i++) {
        json_object *o = json_object_array_get_idx(patch, i);
        char why[512];
        if (!json_object_is_type(o, json_type_object)) {
            snprintf(err, errlen, "operation %zu: not an object", i);
            return -1;
        }
        if (apply_one(doc, o, why, sizeof(why)) != 0) {
            snprintf(err, errlen, "operation %zu: %s", i, why);
            return -1;
        }
    }
    return 0;
}
