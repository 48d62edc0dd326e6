/*
 * The generic decoder: a document tree (common/doc.h) into the typed structs
 * described by cfg_desc_t tables, strict like the API server's field
 * validation: unknown fields are refused with a hint, types must match.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config_internal.h"

/* ---- diagnostics and the validation context ---- */

void cfg_diag_init(cfg_diag_t *d, const char *file, uint32_t line)
{
    memset(d, 0, sizeof(*d));
    d->file = file;
    d->line = line;
}

void cfg_diag_clear(cfg_diag_t *d)
{
    for (uint32_t i = 0; i < d->nerrors; i++)
        free(d->errors[i]);
    for (uint32_t i = 0; i < d->nwarnings; i++)
        free(d->warnings[i]);
    d->nerrors = d->nwarnings = 0;
}

/* "file:line: Kind ns/name: " as far as it is known. */
static size_t diag_prefix(const cfg_diag_t *d, uint32_t line, char *buf, size_t size)
{
    size_t n = 0;
    if (d->file != NULL)
        n += (size_t)snprintf(buf + n, size - n, "%s:%u: ", d->file, line ? line : d->line);
    else if (line || d->line)
        n += (size_t)snprintf(buf + n, size - n, "line %u: ", line ? line : d->line);
    if (n < size && d->kind_name[0] != '\0') {
        if (d->namespace[0] != '\0')
            n += (size_t)snprintf(buf + n, size - n, "%s %s/%s: ", d->kind_name, d->namespace,
                                  d->name[0] ? d->name : "<unnamed>");
        else
            n += (size_t)snprintf(buf + n, size - n, "%s %s: ", d->kind_name,
                                  d->name[0] ? d->name : "<unnamed>");
    }
    return n < size ? n : size - 1;
}

static void diag_add(cfg_diag_t *d, bool warning, uint32_t line, const char *path, const char *fmt,
                     va_list ap) __attribute__((format(printf, 5, 0)));

static void diag_add(cfg_diag_t *d, bool warning, uint32_t line, const char *path, const char *fmt,
                     va_list ap)
{
    char buf[1024];
    size_t n = diag_prefix(d, line, buf, sizeof(buf));
    size_t reason = n;
    if (path != NULL && path[0] != '\0')
        n += (size_t)snprintf(buf + n, sizeof(buf) - n, "%s: ", path[0] == '.' ? path + 1 : path);
    if (n < sizeof(buf))
        vsnprintf(buf + n, sizeof(buf) - n, fmt, ap);
    if (warning) {
        if (d->nwarnings < sizeof(d->warnings) / sizeof(d->warnings[0]))
            d->warnings[d->nwarnings++] = mesh_xstrdup(buf);
        return;
    }
    if (d->nerrors < CFG_MAX_ERRORS) {
        d->reason_at[d->nerrors] = (uint16_t)reason;
        d->errors[d->nerrors++] = mesh_xstrdup(buf);
    }
    else
        d->truncated = true;
}

void cfg_diag_error(cfg_diag_t *d, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    diag_add(d, false, 0, NULL, fmt, ap);
    va_end(ap);
}

void cfg_diag_warn(cfg_diag_t *d, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    diag_add(d, true, 0, NULL, fmt, ap);
    va_end(ap);
}

size_t cfg_vpush(cfg_vctx_t *v, const char *fmt, ...)
{
    size_t mark = v->plen;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(v->path + v->plen, sizeof(v->path) - v->plen, fmt, ap);
    va_end(ap);
    if (n > 0)
        v->plen += (size_t)n;
    if (v->plen >= sizeof(v->path))
        v->plen = sizeof(v->path) - 1;
    return mark;
}

void cfg_vpop(cfg_vctx_t *v, size_t mark)
{
    v->plen = mark;
    v->path[mark] = '\0';
}

cfg_vmark_t cfg_venter(cfg_vctx_t *v, uint32_t line, const char *fmt, ...)
{
    cfg_vmark_t m = {v->plen, v->line};
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(v->path + v->plen, sizeof(v->path) - v->plen, fmt, ap);
    va_end(ap);
    if (n > 0)
        v->plen += (size_t)n;
    if (v->plen >= sizeof(v->path))
        v->plen = sizeof(v->path) - 1;
    if (line != 0)
        v->line = line;
    return m;
}

void cfg_vleave(cfg_vctx_t *v, cfg_vmark_t m)
{
    cfg_vpop(v, m.mark);
    v->line = m.line;
}

static void vreport(cfg_vctx_t *v, bool warning, const char *field, const char *fmt, va_list ap)
    __attribute__((format(printf, 4, 0)));

static void vreport(cfg_vctx_t *v, bool warning, const char *field, const char *fmt, va_list ap)
{
    size_t mark = v->plen;
    if (field != NULL)
        cfg_vpush(v, ".%s", field);
    diag_add(v->diag, warning, v->line, v->path, fmt, ap);
    cfg_vpop(v, mark);
}

void cfg_verr(cfg_vctx_t *v, const char *field, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vreport(v, false, field, fmt, ap);
    va_end(ap);
}

void cfg_vwarn(cfg_vctx_t *v, const char *field, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vreport(v, true, field, fmt, ap);
    va_end(ap);
}

/* ---- durations ---- */

int cfg_parse_duration(const char *s, int64_t *ns, const char **err)
{
    static const struct {
        const char *unit;
        int64_t ns;
    } units[] = {{"ns", 1},
                 {"us", 1000},
                 {"\xc2\xb5s", 1000},
                 {"\xce\xbcs", 1000},
                 {"ms", 1000000},
                 {"s", 1000000000LL},
                 {"m", 60 * 1000000000LL},
                 {"h", 3600 * 1000000000LL}};
    const char *p = s;
    bool neg = false;
    double total = 0;
    if (*p == '-' || *p == '+')
        neg = *p++ == '-';
    if (strcmp(p, "0") == 0) {
        *ns = 0;
        return 0;
    }
    if (*p == '\0') {
        *err = "empty duration";
        return -1;
    }
    while (*p != '\0') {
        const char *start = p;
        double whole = 0, frac = 0, scale = 1;
        bool digits = false;
        while (*p >= '0' && *p <= '9') {
            whole = whole * 10 + (*p++ - '0');
            digits = true;
        }
        if (*p == '.') {
            p++;
            while (*p >= '0' && *p <= '9') {
                frac = frac * 10 + (*p++ - '0');
                scale *= 10;
                digits = true;
            }
        }
        if (!digits || p == start) {
            *err = "expected a number followed by a unit (ns, us, ms, s, m, h), as in \"5s\" or \"100ms\"";
            return -1;
        }
        size_t i, best = 0, best_len = 0;
        for (i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
            size_t l = strlen(units[i].unit);
            if (strncmp(p, units[i].unit, l) == 0 && l > best_len) {
                best = i;
                best_len = l;
            }
        }
        if (best_len == 0) {
            *err = *p == '\0' ? "missing unit (ns, us, ms, s, m, h), as in \"5s\""
                              : "unknown unit (use ns, us, ms, s, m or h)";
            return -1;
        }
        p += best_len;
        total += (whole + frac / scale) * (double)units[best].ns;
        if (total > 9.2e18) {
            *err = "duration out of range";
            return -1;
        }
    }
    *ns = (int64_t)llround(neg ? -total : total);
    return 0;
}

void cfg_format_duration(int64_t ns, char *buf, size_t size)
{
    const char *sign = ns < 0 ? "-" : "";
    uint64_t u = ns < 0 ? (uint64_t)0 - (uint64_t)ns : (uint64_t)ns;
    if (u == 0)
        snprintf(buf, size, "0s");
    else if (u % 3600000000000ULL == 0)
        snprintf(buf, size, "%s%lluh", sign, (unsigned long long)(u / 3600000000000ULL));
    else if (u % 60000000000ULL == 0)
        snprintf(buf, size, "%s%llum", sign, (unsigned long long)(u / 60000000000ULL));
    else if (u % 1000000000ULL == 0)
        snprintf(buf, size, "%s%llus", sign, (unsigned long long)(u / 1000000000ULL));
    else if (u % 1000000ULL == 0)
        snprintf(buf, size, "%s%llums", sign, (unsigned long long)(u / 1000000ULL));
    else if (u % 1000ULL == 0)
        snprintf(buf, size, "%s%lluus", sign, (unsigned long long)(u / 1000ULL));
    else
        snprintf(buf, size, "%s%lluns", sign, (unsigned long long)u);
}

/* ---- "did you mean" ---- */

/* Lowercase letters only: "mirror_percent" and "mirrorPercent" compare equal. */
static size_t fold(const char *s, char *out, size_t size)
{
    size_t n = 0;
    for (; *s && n + 1 < size; s++) {
        char c = *s;
        if (c == '_' || c == '-')
            continue;
        out[n++] = (char)(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
    }
    out[n] = '\0';
    return n;
}

static size_t edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la > 63 || lb > 63)
        return 99;
    size_t row[64];
    for (size_t j = 0; j <= lb; j++)
        row[j] = j;
    for (size_t i = 1; i <= la; i++) {
        size_t prev = row[0];
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t cur = row[j];
            size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
            size_t best = prev + cost;
            if (row[j] + 1 < best)
                best = row[j] + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            row[j] = best;
            prev = cur;
        }
    }
    return row[lb];
}

/* The field of desc whose name is nearest to `name`, or NULL if none is near. */
static const char *nearest_field(const cfg_desc_t *desc, const char *name)
{
    char fn[128], ff[128];
    size_t lf = fold(name, fn, sizeof(fn));
    const char *best = NULL;
    size_t best_d = 99;
    for (uint32_t i = 0; i < desc->nfields; i++) {
        fold(desc->fields[i].name, ff, sizeof(ff));
        size_t d = strcmp(fn, ff) == 0 ? 0 : edit_distance(fn, ff);
        size_t limit = lf <= 4 ? 1 : lf <= 8 ? 2 : 3;
        if (d <= limit && d < best_d) {
            best = desc->fields[i].name;
            best_d = d;
        }
    }
    return best;
}

/* ---- decoding ---- */

/* Path appends without formatting: the decoder extends the path for every
 * field it visits, and the path is only read when an error is reported. */
static size_t path_field(cfg_vctx_t *v, const char *name, size_t n)
{
    size_t mark = v->plen;
    if (v->plen + n + 2 < sizeof(v->path)) {
        v->path[v->plen++] = '.';
        memcpy(v->path + v->plen, name, n);
        v->plen += n;
        v->path[v->plen] = '\0';
    }
    return mark;
}

static size_t path_index(cfg_vctx_t *v, uint32_t i)
{
    size_t mark = v->plen;
    char digits[12];
    size_t n = 0;
    do {
        digits[n++] = (char)('0' + i % 10);
        i /= 10;
    } while (i != 0);
    if (v->plen + n + 3 < sizeof(v->path)) {
        v->path[v->plen++] = '[';
        while (n > 0)
            v->path[v->plen++] = digits[--n];
        v->path[v->plen++] = ']';
        v->path[v->plen] = '\0';
    }
    return mark;
}

struct dstate {
    cfg_vctx_t *v;
    arena_t *a;
    uint32_t visited;
    int errors;
};

static void derr(struct dstate *d, const doc_node_t *n, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void derr(struct dstate *d, const doc_node_t *n, const char *fmt, ...)
{
    uint32_t saved = d->v->line;
    if (n != NULL && n->line)
        d->v->line = n->line;
    va_list ap;
    va_start(ap, fmt);
    vreport(d->v, false, NULL, fmt, ap);
    va_end(ap);
    d->v->line = saved;
    d->errors++;
}

static void wrong_type(struct dstate *d, const doc_node_t *n, const char *want)
{
    if (n->type == DOC_STR || n->type == DOC_INT || n->type == DOC_FLOAT || n->type == DOC_BOOL)
        derr(d, n, "must be %s, got %s \"%.40s\"", want, doc_type_name(n->type), n->str);
    else
        derr(d, n, "must be %s, got %s", want, doc_type_name(n->type));
}

static void decode_msg(struct dstate *d, const cfg_desc_t *desc, const doc_node_t *n, void *out);

static char *decode_str(struct dstate *d, const doc_node_t *n, unsigned flags)
{
    if (n->type != DOC_STR) {
        wrong_type(d, n, "a string");
        return NULL;
    }
    if ((flags & CFG_NOEMPTY) && n->len == 0)
        derr(d, n, "must not be empty");
    if (memchr(n->str, '\0', n->len) != NULL) {
        derr(d, n, "must not contain NUL characters");
        return NULL;
    }
    return arena_strndup(d->a, n->str, n->len);
}

static bool decode_int(struct dstate *d, const doc_node_t *n, int64_t lo, int64_t hi, int64_t *out)
{
    if (n->type == DOC_FLOAT && isfinite(n->v.f) && n->v.f == floor(n->v.f) &&
        fabs(n->v.f) < 9.0e15) {
        *out = (int64_t)n->v.f; /* JSON writers sometimes emit 80.0 */
    } else if (n->type == DOC_INT) {
        *out = n->v.i;
    } else {
        wrong_type(d, n, "an integer");
        return false;
    }
    if (*out < lo || *out > hi) {
        if (lo == 0 && *out < 0)
            derr(d, n, "must be >= 0, got %lld", (long long)*out);
        else
            derr(d, n, "%lld is out of range (%lld to %lld)", (long long)*out, (long long)lo,
                 (long long)hi);
        return false;
    }
    return true;
}

static bool decode_enum(struct dstate *d, const doc_node_t *n, const cfg_enum_desc_t *e, int *out)
{
    if (n->type == DOC_INT && n->v.i >= 0 && (uint64_t)n->v.i < e->count) {
        *out = (int)n->v.i;
        return true;
    }
    if (n->type == DOC_STR) {
        for (uint32_t i = 0; i < e->count; i++)
            if (strcmp(n->str, e->values[i]) == 0) {
                *out = (int)i;
                return true;
            }
    }
    char list[512];
    size_t k = 0;
    for (uint32_t i = 0; i < e->count && k < sizeof(list) - 1; i++)
        k += (size_t)snprintf(list + k, sizeof(list) - k, "%s\"%s\"", i ? ", " : "", e->values[i]);
    derr(d, n, "Unsupported value: \"%.60s\": supported values: %s", n->str ? n->str : doc_type_name(n->type), list);
    return false;
}

static void *decode_sub(struct dstate *d, const cfg_desc_t *sub, const doc_node_t *n)
{
    if (n->type != DOC_MAP) {
        wrong_type(d, n, "an object");
        return NULL;
    }
    void *p = arena_alloc(d->a, sub->size);
    decode_msg(d, sub, n, p);
    return p;
}

static bool decode_map(struct dstate *d, const cfg_field_t *f, const doc_node_t *n, cfg_map_t *m)
{
    if (n->type != DOC_MAP) {
        wrong_type(d, n, "an object (map)");
        return false;
    }
    m->n = n->v.map.n;
    m->v = arena_alloc(d->a, (m->n ? m->n : 1) * sizeof(*m->v));
    for (uint32_t i = 0; i < n->v.map.n; i++) {
        const doc_pair_t *p = &n->v.map.pairs[i];
        cfg_mapent_t *e = &m->v[i];
        size_t mark = cfg_vpush(d->v, "[%.*s]", (int)(p->key_len > 100 ? 100 : p->key_len), p->key);
        e->key = arena_strndup(d->a, p->key, p->key_len);
        if (f->kind == CFG_K_STRMAP) {
            e->str = decode_str(d, p->value, f->flags & CFG_NOEMPTY);
        } else if (f->kind == CFG_K_U32MAP) {
            int64_t x = 0;
            if (decode_int(d, p->value, 0, UINT32_MAX, &x))
                e->u32 = (uint32_t)x;
        } else {
            e->msg = decode_sub(d, f->msg, p->value);
        }
        cfg_vpop(d->v, mark);
    }
    return true;
}

/* Decodes one field; returns true when the field counts as set. */
static bool decode_field(struct dstate *d, const cfg_field_t *f, const doc_node_t *n, char *base)
{
    void *at = base + f->offset;
    if (n->type == DOC_NULL && f->kind != CFG_K_RAW)
        return false; /* explicit null: the field is unset, as the API server reads it */
    switch ((cfg_field_kind_t)f->kind) {
    case CFG_K_STR:
        *(char **)at = decode_str(d, n, f->flags);
        return true;
    case CFG_K_BOOL:
        if (n->type != DOC_BOOL) {
            wrong_type(d, n, "a boolean (true or false)");
            return false;
        }
        *(bool *)at = n->v.b;
        return true;
    case CFG_K_I32: {
        int64_t x;
        if (!decode_int(d, n, INT32_MIN, INT32_MAX, &x))
            return false;
        *(int32_t *)at = (int32_t)x;
        return true;
    }
    case CFG_K_U32: {
        int64_t x;
        if (!decode_int(d, n, 0, UINT32_MAX, &x))
            return false;
        *(uint32_t *)at = (uint32_t)x;
        return true;
    }
    case CFG_K_I64:
        return decode_int(d, n, INT64_MIN, INT64_MAX, (int64_t *)at);
    case CFG_K_DBL:
        if (n->type == DOC_INT)
            *(double *)at = (double)n->v.i;
        else if (n->type == DOC_FLOAT && isfinite(n->v.f))
            *(double *)at = n->v.f;
        else {
            wrong_type(d, n, "a number");
            return false;
        }
        return true;
    case CFG_K_DUR: {
        const char *why = NULL;
        if (n->type != DOC_STR) {
            wrong_type(d, n, "a duration string such as \"5s\"");
            return false;
        }
        if (cfg_parse_duration(n->str, (int64_t *)at, &why) != 0) {
            derr(d, n, "invalid duration \"%.40s\": %s", n->str, why);
            return false;
        }
        return true;
    }
    case CFG_K_ENUM:
        return decode_enum(d, n, f->enm, (int *)at);
    case CFG_K_MSG:
        *(void **)at = decode_sub(d, f->msg, n);
        return *(void **)at != NULL;
    case CFG_K_RAW:
        if ((*(doc_node_t **)at = doc_copy(d->a, n)) == NULL) {
            derr(d, n, "value too large (more than %u nodes once aliases are expanded)",
                 DOC_MAX_COPY);
            return false;
        }
        return true;
    case CFG_K_INTSTR: {
        cfg_intstr_t *is = at;
        if (n->type == DOC_INT) {
            is->num = n->v.i;
        } else if (n->type == DOC_STR) {
            is->is_str = true;
            is->str = arena_strndup(d->a, n->str, n->len);
        } else {
            wrong_type(d, n, "an integer or a string");
            return false;
        }
        return true;
    }
    case CFG_K_STRS:
    case CFG_K_U32S:
    case CFG_K_MSGS: {
        if (n->type != DOC_SEQ) {
            wrong_type(d, n, "an array");
            return false;
        }
        uint32_t cnt = n->v.seq.n;
        size_t elem = f->kind == CFG_K_STRS ? sizeof(char *)
                      : f->kind == CFG_K_U32S ? sizeof(uint32_t)
                                              : f->msg->size;
        char *arr = arena_alloc(d->a, (cnt ? cnt : 1) * elem);
        for (uint32_t i = 0; i < cnt; i++) {
            const doc_node_t *it = n->v.seq.items[i];
            size_t mark = path_index(d->v, i);
            if (f->kind == CFG_K_STRS) {
                ((char **)arr)[i] = decode_str(d, it, f->flags);
            } else if (f->kind == CFG_K_U32S) {
                int64_t x = 0;
                if (decode_int(d, it, 0, UINT32_MAX, &x))
                    ((uint32_t *)arr)[i] = (uint32_t)x;
            } else if (it->type != DOC_MAP) {
                wrong_type(d, it, "an object");
            } else {
                decode_msg(d, f->msg, it, arr + i * elem);
            }
            cfg_vpop(d->v, mark);
        }
        cfg_list_t *l = at; /* all list members share this layout */
        l->v = arr;
        l->n = cnt;
        return true;
    }
    case CFG_K_STRMAP:
    case CFG_K_MSGMAP:
    case CFG_K_U32MAP:
        return decode_map(d, f, n, (cfg_map_t *)at);
    }
    return false;
}

static void decode_msg(struct dstate *d, const cfg_desc_t *desc, const doc_node_t *n, void *out)
{
    uint64_t *has = out;
    char *base = out;
    ((uint32_t *)(base + sizeof(uint64_t)))[0] = n->line; /* _line */
    uint32_t saved_line = d->v->line;
    uint64_t null_required = 0; /* required fields given as null: already reported */
    d->v->line = n->line;
    if (++d->visited > DOC_MAX_NODES) {
        if (d->visited == DOC_MAX_NODES + 1)
            derr(d, n, "document too large (aliases expand beyond %u nodes)", DOC_MAX_NODES);
        goto out;
    }
    for (uint32_t i = 0; i < n->v.map.n; i++) {
        const doc_pair_t *p = &n->v.map.pairs[i];
        const cfg_field_t *f = NULL;
        uint32_t fi;
        for (fi = 0; fi < desc->nfields; fi++) {
            if (strlen(desc->fields[fi].name) == p->key_len &&
                memcmp(desc->fields[fi].name, p->key, p->key_len) == 0) {
                f = &desc->fields[fi];
                break;
            }
        }
        if (f == NULL) {
            if (desc->flags & CFG_LENIENT)
                continue;
            char key[101];
            snprintf(key, sizeof(key), "%.*s", (int)(p->key_len > 100 ? 100 : p->key_len), p->key);
            const char *hint = nearest_field(desc, key);
            uint32_t saved = d->v->line;
            d->v->line = p->line;
            if (hint != NULL)
                cfg_verr(d->v, NULL, "unknown field \"%s\" (did you mean \"%s\"?)", key, hint);
            else
                cfg_verr(d->v, NULL, "unknown field \"%s\"", key);
            d->v->line = saved;
            d->errors++;
            continue;
        }
        size_t mark = path_field(d->v, p->key, p->key_len);
        d->v->line = p->line ? p->line : n->line;
        if (decode_field(d, f, p->value, base)) {
            *has |= 1ull << fi;
        } else if (p->value->type == DOC_NULL && (f->flags & CFG_REQ)) {
            cfg_verr(d->v, NULL, "must not be empty (it is required)");
            d->errors++;
            null_required |= 1ull << fi;
        }
        d->v->line = n->line;
        cfg_vpop(d->v, mark);
    }
    /* required fields and one-of groups */
    for (uint32_t fi = 0; fi < desc->nfields; fi++) {
        const cfg_field_t *f = &desc->fields[fi];
        if ((f->flags & CFG_REQ) && !(*has & (1ull << fi)) && !(null_required & (1ull << fi))) {
            cfg_verr(d->v, f->name, "required field is missing");
            d->errors++;
        }
        unsigned g = CFG_ONEOF_GROUP(f->flags);
        if (g == 0 || !(*has & (1ull << fi)))
            continue;
        for (uint32_t fj = fi + 1; fj < desc->nfields; fj++) {
            if (CFG_ONEOF_GROUP(desc->fields[fj].flags) == g && (*has & (1ull << fj))) {
                cfg_verr(d->v, NULL, "only one of \"%s\" and \"%s\" may be set", f->name,
                         desc->fields[fj].name);
                d->errors++;
            }
        }
    }
out:
    d->v->line = saved_line;
}

int cfg_decode_message(cfg_vctx_t *v, arena_t *a, const cfg_desc_t *desc, const doc_node_t *n,
                       void *out)
{
    struct dstate d = {.v = v, .a = a};
    if (n->type != DOC_MAP) {
        wrong_type(&d, n, "an object");
        return -1;
    }
    decode_msg(&d, desc, n, out);
    return d.errors ? -1 : 0;
}
