/*
 * Compaction: a decoded object is copied from the scratch arena it was
 * decoded in into an arena of exactly its size, so each object costs one
 * allocation and no chunk slack. Equal strings within one object (a host
 * named in hosts and in every destination, a namespace) are stored once.
 * The copy walks the same descriptors as the decoder; sizing and copying
 * must allocate the same blocks in the same way.
 */
#include <string.h>

#include "config_internal.h"

static size_t al(size_t n)
{
    return (n + 7u) & ~(size_t)7u;
}

/* Strings seen so far in this object: source text -> its copy (NULL while
 * sizing). A small open-addressing table; when full, strings are simply not
 * shared any more. */
#define SEEN_SLOTS 512

struct seen {
    const char *text[SEEN_SLOTS];
    char *copy[SEEN_SLOTS];
    uint32_t gen[SEEN_SLOTS]; /* a slot is in use when gen[i] == cur */
    uint32_t cur;
    uint32_t used;
};

/* Empties the table in O(1): bump the generation. */
static void seen_reset(struct seen *t)
{
    if (++t->cur == 0) {
        memset(t->gen, 0, sizeof(t->gen));
        t->cur = 1;
    }
    t->used = 0;
}

static _Thread_local struct seen *seen_current; /* set for the duration of one compaction */

static size_t str_hash(const char *s)
{
    size_t h = 1469598103934665603ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

/* Returns the slot holding s, or the empty slot where it goes, or -1 when full. */
static int seen_slot(struct seen *t, const char *s)
{
    size_t i = str_hash(s) & (SEEN_SLOTS - 1);
    for (uint32_t probes = 0; probes < SEEN_SLOTS; probes++, i = (i + 1) & (SEEN_SLOTS - 1)) {
        if (t->gen[i] != t->cur || strcmp(t->text[i], s) == 0)
            return (int)i;
    }
    return -1;
}

static size_t str_size(const char *s)
{
    if (s == NULL)
        return 0;
    struct seen *t = seen_current;
    int i = seen_slot(t, s);
    if (i >= 0 && t->gen[i] == t->cur)
        return 0; /* already counted */
    if (i >= 0 && t->used < SEEN_SLOTS * 3 / 4) {
        t->text[i] = s;
        t->gen[i] = t->cur;
        t->used++;
    }
    return al(strlen(s) + 1);
}

static char *str_copy(arena_t *a, const char *s)
{
    if (s == NULL)
        return NULL;
    struct seen *t = seen_current;
    int i = seen_slot(t, s);
    if (i >= 0 && t->gen[i] == t->cur)
        return t->copy[i];
    char *c = arena_strdup(a, s);
    if (i >= 0 && t->used < SEEN_SLOTS * 3 / 4) {
        t->text[i] = s;
        t->copy[i] = c;
        t->gen[i] = t->cur;
        t->used++;
    }
    return c;
}

static size_t doc_size(const doc_node_t *n)
{
    size_t sz = al(sizeof(*n)) + (n->str ? al((size_t)n->len + 1) : 0);
    if (n->type == DOC_SEQ) {
        sz += al((n->v.seq.n ? n->v.seq.n : 1) * sizeof(doc_node_t *));
        for (uint32_t i = 0; i < n->v.seq.n; i++)
            sz += doc_size(n->v.seq.items[i]);
    } else if (n->type == DOC_MAP) {
        sz += al((n->v.map.n ? n->v.map.n : 1) * sizeof(doc_pair_t));
        for (uint32_t i = 0; i < n->v.map.n; i++)
            sz += al((size_t)n->v.map.pairs[i].key_len + 1) + doc_size(n->v.map.pairs[i].value);
    }
    return sz;
}

static size_t contents_size(const cfg_desc_t *d, const void *m);

static size_t msg_size(const cfg_desc_t *d, const void *m)
{
    return m != NULL ? al(d->size) + contents_size(d, m) : 0;
}

static size_t contents_size(const cfg_desc_t *d, const void *m)
{
    const char *base = m;
    size_t sz = 0;
    for (uint32_t i = 0; i < d->nfields; i++) {
        const cfg_field_t *f = &d->fields[i];
        const void *at = base + f->offset;
        switch ((cfg_field_kind_t)f->kind) {
        case CFG_K_STR:
            sz += str_size(*(char *const *)at);
            break;
        case CFG_K_MSG:
            sz += msg_size(f->msg, *(void *const *)at);
            break;
        case CFG_K_RAW:
            if (*(doc_node_t *const *)at != NULL)
                sz += doc_size(*(doc_node_t *const *)at);
            break;
        case CFG_K_INTSTR:
            sz += str_size(((const cfg_intstr_t *)at)->str);
            break;
        case CFG_K_STRS: {
            const cfg_strlist_t *l = at;
            if (l->n)
                sz += al(l->n * sizeof(char *));
            for (uint32_t j = 0; j < l->n; j++)
                sz += str_size(l->v[j]);
            break;
        }
        case CFG_K_U32S: {
            const cfg_u32list_t *l = at;
            if (l->n)
                sz += al(l->n * sizeof(uint32_t));
            break;
        }
        case CFG_K_MSGS: {
            const cfg_list_t *l = at;
            if (l->n)
                sz += al(l->n * f->msg->size);
            for (uint32_t j = 0; j < l->n; j++)
                sz += contents_size(f->msg, (const char *)l->v + j * f->msg->size);
            break;
        }
        case CFG_K_STRMAP:
        case CFG_K_MSGMAP:
        case CFG_K_U32MAP: {
            const cfg_map_t *mp = at;
            if (mp->n)
                sz += al(mp->n * sizeof(cfg_mapent_t));
            for (uint32_t j = 0; j < mp->n; j++) {
                sz += str_size(mp->v[j].key);
                if (f->kind == CFG_K_STRMAP)
                    sz += str_size(mp->v[j].str);
                else if (f->kind == CFG_K_MSGMAP)
                    sz += msg_size(f->msg, mp->v[j].msg);
            }
            break;
        }
        default:
            break; /* scalars live inside the struct */
        }
    }
    return sz;
}

static void copy_contents(arena_t *a, const cfg_desc_t *d, void *dst);

static void *copy_msg(arena_t *a, const cfg_desc_t *d, const void *src)
{
    if (src == NULL)
        return NULL;
    void *m = arena_alloc(a, d->size);
    memcpy(m, src, d->size);
    copy_contents(a, d, m);
    return m;
}

/* dst holds a shallow copy; replaces every out-of-line pointer with a copy. */
static void copy_contents(arena_t *a, const cfg_desc_t *d, void *dst)
{
    char *base = dst;
    for (uint32_t i = 0; i < d->nfields; i++) {
        const cfg_field_t *f = &d->fields[i];
        void *at = base + f->offset;
        switch ((cfg_field_kind_t)f->kind) {
        case CFG_K_STR:
            *(char **)at = str_copy(a, *(char **)at);
            break;
        case CFG_K_MSG:
            *(void **)at = copy_msg(a, f->msg, *(void **)at);
            break;
        case CFG_K_RAW:
            if (*(doc_node_t **)at != NULL)
                *(doc_node_t **)at = doc_copy(a, *(doc_node_t **)at);
            break;
        case CFG_K_INTSTR:
            ((cfg_intstr_t *)at)->str = str_copy(a, ((cfg_intstr_t *)at)->str);
            break;
        case CFG_K_STRS: {
            cfg_strlist_t *l = at;
            char **src = l->v;
            l->v = NULL;
            if (l->n) {
                l->v = arena_alloc(a, l->n * sizeof(char *));
                for (uint32_t j = 0; j < l->n; j++)
                    l->v[j] = str_copy(a, src[j]);
            }
            break;
        }
        case CFG_K_U32S: {
            cfg_u32list_t *l = at;
            uint32_t *src = l->v;
            l->v = NULL;
            if (l->n) {
                l->v = arena_alloc(a, l->n * sizeof(uint32_t));
                memcpy(l->v, src, l->n * sizeof(uint32_t));
            }
            break;
        }
        case CFG_K_MSGS: {
            cfg_list_t *l = at;
            const char *src = l->v;
            l->v = NULL;
            if (l->n) {
                l->v = arena_alloc(a, l->n * f->msg->size);
                memcpy(l->v, src, l->n * f->msg->size);
                for (uint32_t j = 0; j < l->n; j++)
                    copy_contents(a, f->msg, (char *)l->v + j * f->msg->size);
            }
            break;
        }
        case CFG_K_STRMAP:
        case CFG_K_MSGMAP:
        case CFG_K_U32MAP: {
            cfg_map_t *mp = at;
            const cfg_mapent_t *src = mp->v;
            mp->v = NULL;
            if (mp->n) {
                mp->v = arena_alloc(a, mp->n * sizeof(cfg_mapent_t));
                for (uint32_t j = 0; j < mp->n; j++) {
                    mp->v[j] = src[j];
                    mp->v[j].key = str_copy(a, src[j].key);
                    if (f->kind == CFG_K_STRMAP)
                        mp->v[j].str = str_copy(a, src[j].str);
                    else if (f->kind == CFG_K_MSGMAP)
                        mp->v[j].msg = copy_msg(a, f->msg, src[j].msg);
                }
            }
            break;
        }
        default:
            break;
        }
    }
}

cfg_object_t *cfg_object_compact(const cfg_object_t *o)
{
    static _Thread_local struct seen table;
    const cfg_kind_info_t *ki = cfg_kind_info(o->kind);
    seen_reset(&table);
    seen_current = &table;
    bool own_ns = o->meta->namespace == NULL && o->namespace[0] != '\0';
    size_t total = al(sizeof(cfg_object_t)) + str_size(o->api_version) + str_size(o->file) +
                   msg_size(&cfg_ObjectMeta_desc, o->meta) + msg_size(ki->body, o->body) +
                   (own_ns ? str_size(o->namespace) : 0);
    seen_reset(&table); /* the copy pass sees the strings afresh */
    arena_t *a = arena_new(total);
    cfg_object_t *c = arena_alloc(a, sizeof(*c));
    c->kind = o->kind;
    c->line = o->line;
    c->version = o->version;
    c->_arena = a;
    atomic_init(&c->_refs, 1);
    c->api_version = str_copy(a, o->api_version);
    c->file = str_copy(a, o->file);
    c->meta = copy_msg(a, &cfg_ObjectMeta_desc, o->meta);
    c->body = copy_msg(a, ki->body, o->body);
    c->name = c->meta->name ? c->meta->name : "";
    if (own_ns)
        c->namespace = arena_strdup(a, o->namespace);
    else
        c->namespace = c->meta->namespace ? c->meta->namespace : "";
    seen_current = NULL;
    return c;
}
