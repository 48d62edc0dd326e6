/*
 * The generic encoder: typed config objects back into JSON, walking the same
 * descriptor tables the decoder walks. Field names are the YAML names,
 * durations are written as Go-style strings, enums by name, free-form (RAW)
 * values as the JSON they were. Only fields that were present are written, so
 * decoding the output gives the same object again.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "config.h"

static json_object *msg_to_json(const cfg_desc_t *desc, const void *msg);

json_object *cfg_doc_to_json(const doc_node_t *n)
{
    if (n == NULL)
        return NULL;
    switch (n->type) {
    case DOC_NULL:
        return NULL;
    case DOC_BOOL:
        return json_object_new_boolean(n->v.b);
    case DOC_INT:
        return json_object_new_int64(n->v.i);
    case DOC_FLOAT:
        if (!isfinite(n->v.f)) /* YAML's .inf and .nan have no JSON form */
            return json_object_new_string_len(n->str ? n->str : "", n->str ? (int)n->len : 0);
        return json_object_new_double(n->v.f);
    case DOC_STR:
        return json_object_new_string_len(n->str, (int)n->len);
    case DOC_SEQ: {
        json_object *a = json_object_new_array_ext((int)n->v.seq.n);
        for (uint32_t i = 0; i < n->v.seq.n; i++)
            json_object_array_add(a, cfg_doc_to_json(n->v.seq.items[i]));
        return a;
    }
    case DOC_MAP: {
        json_object *o = json_object_new_object();
        for (uint32_t i = 0; i < n->v.map.n; i++) {
            const doc_pair_t *p = &n->v.map.pairs[i];
            char small[128];
            char *key = p->key_len < sizeof(small) ? small : mesh_xmalloc(p->key_len + 1u);
            memcpy(key, p->key, p->key_len);
            key[p->key_len] = '\0';
            json_object_object_add(o, key, cfg_doc_to_json(p->value));
            if (key != small)
                free(key);
        }
        return o;
    }
    }
    return NULL;
}

static json_object *str_or_empty(const char *s)
{
    return json_object_new_string(s ? s : "");
}

static json_object *map_to_json(const cfg_field_t *f, const cfg_map_t *m)
{
    json_object *o = json_object_new_object();
    for (uint32_t i = 0; i < m->n; i++) {
        const cfg_mapent_t *e = &m->v[i];
        json_object *v;
        if (f->kind == CFG_K_STRMAP)
            v = str_or_empty(e->str);
        else if (f->kind == CFG_K_U32MAP)
            v = json_object_new_int64(e->u32);
        else
            v = e->msg ? msg_to_json(f->msg, e->msg) : json_object_new_object();
        json_object_object_add(o, e->key ? e->key : "", v);
    }
    return o;
}

/* The JSON value of one present field, or NULL to leave it out. */
static json_object *field_to_json(const cfg_field_t *f, const char *base)
{
    const void *at = base + f->offset;
    switch ((cfg_field_kind_t)f->kind) {
    case CFG_K_STR:
        return *(char *const *)at ? json_object_new_string(*(char *const *)at) : NULL;
    case CFG_K_BOOL:
        return json_object_new_boolean(*(const bool *)at);
    case CFG_K_I32:
        return json_object_new_int64(*(const int32_t *)at);
    case CFG_K_U32:
        return json_object_new_int64(*(const uint32_t *)at);
    case CFG_K_I64:
        return json_object_new_int64(*(const int64_t *)at);
    case CFG_K_DBL:
        return json_object_new_double(*(const double *)at);
    case CFG_K_DUR: {
        char buf[64];
        cfg_format_duration(*(const int64_t *)at, buf, sizeof(buf));
        return json_object_new_string(buf);
    }
    case CFG_K_ENUM:
        return json_object_new_string(cfg_enum_name(f->enm, *(const int *)at));
    case CFG_K_MSG: {
        const void *sub = *(const void *const *)at;
        return sub ? msg_to_json(f->msg, sub) : NULL;
    }
    case CFG_K_RAW: {
        const doc_node_t *n = *(const doc_node_t *const *)at;
        return n ? cfg_doc_to_json(n) : NULL;
    }
    case CFG_K_INTSTR: {
        const cfg_intstr_t *is = at;
        return is->is_str ? str_or_empty(is->str) : json_object_new_int64(is->num);
    }
    case CFG_K_STRS: {
        const cfg_strlist_t *l = at;
        json_object *a = json_object_new_array_ext((int)l->n);
        for (uint32_t i = 0; i < l->n; i++)
            json_object_array_add(a, str_or_empty(l->v[i]));
        return a;
    }
    case CFG_K_U32S: {
        const cfg_u32list_t *l = at;
        json_object *a = json_object_new_array_ext((int)l->n);
        for (uint32_t i = 0; i < l->n; i++)
            json_object_array_add(a, json_object_new_int64(l->v[i]));
        return a;
    }
    case CFG_K_MSGS: {
        const cfg_list_t *l = at;
        json_object *a = json_object_new_array_ext((int)l->n);
        for (uint32_t i = 0; i < l->n; i++)
            json_object_array_add(a, msg_to_json(f->msg, (const char *)l->v + i * f->msg->size));
        return a;
    }
    case CFG_K_STRMAP:
    case CFG_K_MSGMAP:
    case CFG_K_U32MAP:
        return map_to_json(f, at);
    }
    return NULL;
}

/* Adds every present field of msg to the JSON object o. */
static void fields_into(json_object *o, const cfg_desc_t *desc, const void *msg)
{
    uint64_t has = *(const uint64_t *)msg;
    for (uint32_t i = 0; i < desc->nfields; i++) {
        if (!((has >> i) & 1u))
            continue;
        const cfg_field_t *f = &desc->fields[i];
        json_object *v = field_to_json(f, msg);
        /* A present RAW null stays an explicit null; other NULLs are absent. */
        if (v != NULL || f->kind == CFG_K_RAW)
            json_object_object_add(o, f->name, v);
    }
}

static json_object *msg_to_json(const cfg_desc_t *desc, const void *msg)
{
    json_object *o = json_object_new_object();
    fields_into(o, desc, msg);
    return o;
}

json_object *cfg_message_to_json(const cfg_desc_t *desc, const void *msg)
{
    if (desc == NULL || msg == NULL)
        return NULL;
    return msg_to_json(desc, msg);
}

json_object *cfg_object_to_json(const cfg_object_t *o)
{
    const cfg_kind_info_t *ki = o ? cfg_kind_info(o->kind) : NULL;
    if (ki == NULL)
        return NULL;
    json_object *root = json_object_new_object();
    json_object_object_add(root, "apiVersion", json_object_new_string(o->api_version ? o->api_version : ""));
    json_object_object_add(root, "kind", json_object_new_string(ki->name));
    json_object *meta = json_object_new_object();
    if (o->meta != NULL)
        fields_into(meta, &cfg_ObjectMeta_desc, o->meta);
    /* The namespace the object lives in, also when it was defaulted. */
    if (ki->namespaced && o->namespace != NULL && o->namespace[0] != '\0')
        json_object_object_add(meta, "namespace", json_object_new_string(o->namespace));
    json_object_object_add(root, "metadata", meta);
    if (o->body != NULL)
        fields_into(root, ki->body, o->body);
    return root;
}
