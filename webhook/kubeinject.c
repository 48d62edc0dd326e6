/*
 * Offline injection (`meshctl kube-inject`): every pod template of a
 * manifest goes through the webhook's injection code; the result is written
 * back as YAML (block style, as kubectl writes it) or JSON.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/arena.h"
#include "../common/doc.h"
#include "../config/config.h"
#include "webhook_internal.h"

/* ---- YAML emitter ---- */

static bool is_plain_word(const char *s, size_t n)
{
    /* Words a YAML 1.1 reader (kubectl's) would not read as a string. */
    static const char *const words[] = {"y", "n", "yes", "no", "true", "false", "on", "off", "null", "~"};
    for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++)
        if (strlen(words[i]) == n && strncasecmp(words[i], s, n) == 0)
            return true;
    return false;
}

static bool looks_numeric(const char *s)
{
    const char *p = s;
    if (*p == '+' || *p == '-')
        p++;
    if (*p == '.')
        p++;
    if (isdigit((unsigned char)*p))
        return true;
    /* .inf, .nan and friends */
    return s[0] == '.' || ((s[0] == '+' || s[0] == '-') && s[1] == '.');
}

static bool needs_quotes(const char *s, size_t n)
{
    if (n == 0 || is_plain_word(s, n) || looks_numeric(s))
        return true;
    if (strchr("?:,[]{}#&*!|>'\"%@` \t", s[0]) != NULL)
        return true;
    if (s[0] == '-' && (n == 1 || s[1] == ' ' || strncmp(s, "---", 3) == 0))
        return true;
    if (s[n - 1] == ' ' || s[n - 1] == ':' || s[n - 1] == '\t')
        return true;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch < 0x20 || ch == 0x7f)
            return true;
        if (ch == ':' && i + 1 < n && (s[i + 1] == ' ' || s[i + 1] == '\t'))
            return true;
        if (ch == '#' && i > 0 && (s[i - 1] == ' ' || s[i - 1] == '\t'))
            return true;
    }
    return false;
}

static void write_quoted(FILE *out, const char *s, size_t n)
{
    fputc('"', out);
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        switch (ch) {
        case '"':
            fputs("\\\"", out);
            break;
        case '\\':
            fputs("\\\\", out);
            break;
        case '\n':
            fputs("\\n", out);
            break;
        case '\t':
            fputs("\\t", out);
            break;
        case '\r':
            fputs("\\r", out);
            break;
        default:
            if (ch < 0x20 || ch == 0x7f)
                fprintf(out, "\\x%02x", ch);
            else
                fputc(ch, out);
        }
    }
    fputc('"', out);
}

/* Multi-line text as a literal block when it can be one. */
static bool block_ok(const char *s, size_t n)
{
    if (n == 0 || memchr(s, '\n', n) == NULL || s[0] == ' ' || s[0] == '\n')
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if ((ch < 0x20 && ch != '\n') || ch == 0x7f)
            return false;
        if (ch == ' ' && (i + 1 == n || s[i + 1] == '\n'))
            return false; /* trailing spaces would be lost to a reader's eye */
    }
    return true;
}

static void write_block(FILE *out, const char *s, size_t n, int indent)
{
    size_t trailing = 0;
    while (trailing < n && s[n - 1 - trailing] == '\n')
        trailing++;
    fputs(trailing == 0 ? "|-" : trailing == 1 ? "|" : "|+", out);
    fputc('\n', out);
    size_t end = n - trailing;
    size_t i = 0;
    while (i < end) {
        const char *nl = memchr(s + i, '\n', end - i);
        size_t ll = nl ? (size_t)(nl - (s + i)) : end - i;
        if (ll > 0)
            fprintf(out, "%*s%.*s", indent, "", (int)ll, s + i);
        fputc('\n', out);
        i += ll + 1;
    }
    for (size_t t = 1; t < trailing; t++)
        fputc('\n', out);
}

static void write_string(FILE *out, const char *s, size_t n, int block_indent)
{
    if (block_indent >= 0 && block_ok(s, n)) {
        write_block(out, s, n, block_indent);
        return;
    }
    if (needs_quotes(s, n))
        write_quoted(out, s, n);
    else
        fwrite(s, 1, n, out);
    fputc('\n', out);
}

/* A scalar (or empty collection) with its newline; block_indent for text. */
static bool write_scalar(FILE *out, json_object *v, int block_indent)
{
    switch (json_object_get_type(v)) {
    case json_type_null:
        fputs("null\n", out);
        return true;
    case json_type_boolean:
        fputs(json_object_get_boolean(v) ? "true\n" : "false\n", out);
        return true;
    case json_type_int:
        fprintf(out, "%lld\n", (long long)json_object_get_int64(v));
        return true;
    case json_type_double:
        fprintf(out, "%s\n", json_object_to_json_string(v));
        return true;
    case json_type_string:
        write_string(out, json_object_get_string(v), (size_t)json_object_get_string_len(v), block_indent);
        return true;
    case json_type_object:
        if (json_object_object_length(v) == 0) {
            fputs("{}\n", out);
            return true;
        }
        return false;
    case json_type_array:
        if (json_object_array_length(v) == 0) {
            fputs("[]\n", out);
            return true;
        }
        return false;
    }
    return false;
}

static void emit_seq(FILE *out, json_object *a, int indent, bool inline_first);

static void emit_map(FILE *out, json_object *m, int indent, bool inline_first)
{
    bool first = true;
    json_object_object_foreach(m, k, v) {
        if (!(first && inline_first))
            fprintf(out, "%*s", indent, "");
        first = false;
        size_t kl = strlen(k);
        if (needs_quotes(k, kl))
            write_quoted(out, k, kl);
        else
            fputs(k, out);
        fputc(':', out);
        json_type t = json_object_get_type(v);
        if (t == json_type_object && json_object_object_length(v) > 0) {
            fputc('\n', out);
            emit_map(out, v, indent + 2, false);
        } else if (t == json_type_array && json_object_array_length(v) > 0) {
            fputc('\n', out);
            emit_seq(out, v, indent, false);
        } else {
            fputc(' ', out);
            write_scalar(out, v, indent + 2);
        }
    }
}

static void emit_seq(FILE *out, json_object *a, int indent, bool inline_first)
{
    for (size_t i = 0; i < json_object_array_length(a); i++) {
        json_object *v = json_object_array_get_idx(a, i);
        if (!(i == 0 && inline_first))
            fprintf(out, "%*s", indent, "");
        fputs("- ", out);
        json_type t = json_object_get_type(v);
        if (t == json_type_object && json_object_object_length(v) > 0)
            emit_map(out, v, indent + 2, true);
        else if (t == json_type_array && json_object_array_length(v) > 0)
            emit_seq(out, v, indent + 2, true);
        else
            write_scalar(out, v, indent + 2);
    }
}

int webhook_yaml_write(FILE *out, json_object *v)
{
    json_type t = json_object_get_type(v);
    if (t == json_type_object && json_object_object_length(v) > 0)
        emit_map(out, v, 0, false);
    else if (t == json_type_array && json_object_array_length(v) > 0)
        emit_seq(out, v, 0, false);
    else
        write_scalar(out, v, 0);
    return ferror(out) ? -1 : 0;
}

/* ---- the manifest ---- */

static json_object *get(json_object *o, const char *key)
{
    json_object *v = NULL;
    if (json_object_is_type(o, json_type_object))
        json_object_object_get_ex(o, key, &v);
    return v;
}

static const char *str(json_object *o, const char *key)
{
    json_object *v = get(o, key);
    return json_object_is_type(v, json_type_string) ? json_object_get_string(v) : NULL;
}

/* The pod template of a workload document, or NULL when it has none. */
static json_object *pod_template(json_object *doc, const char *kind)
{
    static const char *const with_template[] = {"Deployment", "StatefulSet", "DaemonSet",
                                                "Job", "ReplicaSet", "ReplicationController",
                                                "DeploymentConfig"};
    if (strcmp(kind, "Pod") == 0)
        return doc;
    if (strcmp(kind, "CronJob") == 0)
        return get(get(get(get(doc, "spec"), "jobTemplate"), "spec"), "template");
    for (size_t i = 0; i < sizeof(with_template) / sizeof(with_template[0]); i++)
        if (strcmp(kind, with_template[i]) == 0)
            return get(get(doc, "spec"), "template");
    return NULL;
}

static int inject_doc(const webhook_config_t *c, json_object *doc, int depth, const char *where, char *err,
                      size_t errlen)
{
    const char *kind = str(doc, "kind");
    if (kind == NULL || depth > 8)
        return 0;
    size_t kl = strlen(kind);
    json_object *items = get(doc, "items");
    if (kl >= 4 && strcmp(kind + kl - 4, "List") == 0 && json_object_is_type(items, json_type_array)) {
        for (size_t i = 0; i < json_object_array_length(items); i++) {
            char w[160];
            snprintf(w, sizeof(w), "%s: items[%zu]", where, i);
            if (inject_doc(c, json_object_array_get_idx(items, i), depth + 1, w, err, errlen) != 0)
                return -1;
        }
        return 0;
    }
    json_object *tmpl = pod_template(doc, kind);
    if (!json_object_is_type(tmpl, json_type_object))
        return 0;
    json_object *meta = get(doc, "metadata");
    const char *ns = str(meta, "namespace");
    const char *name = str(meta, "name");
    webhook_workload_t wl = {.ns = ns};
    if (strcmp(kind, "Pod") != 0) {
        wl.kind = kind;
        wl.name = name;
        wl.api_version = str(doc, "apiVersion");
    }
    webhook_decision_t d;
    if (!webhook_inject_decide(c, tmpl, ns, NULL, &d))
        return 0;
    char why[512];
    if (webhook_inject_pod(c, tmpl, &wl, why, sizeof(why)) != 0) {
        snprintf(err, errlen, "%s: %s %s%s%s: %s", where, kind, ns ? ns : "", ns ? "/" : "", name ? name : "<unnamed>",
                 why);
        return -1;
    }
    return 0;
}

struct kdocs {
    json_object *docs; /* array; null entries are empty documents */
    char err[512];
    bool failed;
};

static int collect(void *ud, const doc_t *d)
{
    struct kdocs *k = ud;
    if (k->failed)
        return 1;
    if (d->root == NULL) {
        snprintf(k->err, sizeof(k->err), "document at line %u: %s", d->line, d->error ? d->error : "cannot parse");
        k->failed = true;
        return 1;
    }
    doc_node_t *copy = doc_copy(d->arena, d->root);
    if (copy == NULL) {
        snprintf(k->err, sizeof(k->err), "document at line %u: too large once its aliases are expanded", d->line);
        k->failed = true;
        return 1;
    }
    json_object_array_add(k->docs, cfg_doc_to_json(copy));
    return 0;
}

int webhook_kube_inject(const webhook_config_t *c, const char *buf, size_t len, FILE *out, char *err,
                        size_t errlen)
{
    struct kdocs k = {.docs = json_object_new_array()};
    char *text = NULL;
    size_t tlen = 0;
    FILE *mem = NULL;
    int rc = -1;
    size_t i = 0;
    while (i < len && isspace((unsigned char)buf[i]))
        i++;
    bool json = i < len && (buf[i] == '{' || buf[i] == '[');
    doc_parse(buf, len, json ? DOC_FMT_JSON : DOC_FMT_YAML, collect, &k);
    if (k.failed) {
        snprintf(err, errlen, "%s", k.err);
        goto out;
    }
    for (i = 0; i < json_object_array_length(k.docs); i++) {
        char where[64];
        snprintf(where, sizeof(where), "document %zu", i + 1);
        if (inject_doc(c, json_object_array_get_idx(k.docs, i), 0, where, err, errlen) != 0)
            goto out;
    }
    mem = open_memstream(&text, &tlen);
    if (mem == NULL) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    bool first = true;
    for (i = 0; i < json_object_array_length(k.docs); i++) {
        json_object *d = json_object_array_get_idx(k.docs, i);
        if (d == NULL)
            continue;
        if (json) {
            fputs(json_object_to_json_string_ext(d, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED |
                                                        JSON_C_TO_STRING_NOSLASHESCAPE),
                  mem);
            fputc('\n', mem);
        } else {
            if (!first)
                fputs("---\n", mem);
            webhook_yaml_write(mem, d);
        }
        first = false;
    }
    if (fclose(mem) != 0) {
        mem = NULL;
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    mem = NULL;
    if (tlen > 0 && fwrite(text, 1, tlen, out) != tlen) {
        snprintf(err, errlen, "write error");
        goto out;
    }
    rc = 0;
out:
    if (mem != NULL)
        fclose(mem);
    free(text);
    json_object_put(k.docs);
    return rc;
}
