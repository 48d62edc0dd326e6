/*
 * proto3 JSON -> protobuf-c message, driven by the generated descriptors:
 * how the proxy reads a static config file (--config-file). Field names are
 * accepted as written in the .proto (snake_case) or in lowerCamelCase; Any
 * values carry "@type" and are packed; Duration ("1.5s"), the wrapper types
 * and map fields use their JSON forms. Messages are allocated with the
 * protobuf-c default allocator: free with protobuf_c_message_free_unpacked().
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "../xds/xds.h"
#include "config_internal.h"
#include "google/protobuf/any.pb-c.h"
#include "google/protobuf/duration.pb-c.h"

#define PB_MAX_DEPTH 64

static int msg_from_json(const ProtobufCMessageDescriptor *d, json_object *j, ProtobufCMessage **out,
                         char *path, size_t plen, char *err, size_t errlen, int depth);

static void fail(char *err, size_t errlen, const char *path, const char *why)
{
    snprintf(err, errlen, "%s: %s", path[0] ? path : "(root)", why);
}

/* Appends ".name" (or "name" at the root) or "[i]" to the path; returns the
 * old length to restore. */
static size_t path_push(char *path, size_t plen, const char *name, size_t idx)
{
    size_t old = strlen(path);
    if (name)
        snprintf(path + old, plen - old, "%s%s", old ? "." : "", name);
    else
        snprintf(path + old, plen - old, "[%zu]", idx);
    return old;
}

/* The field of d that JSON key `key` names (proto name or lowerCamelCase). */
static const ProtobufCFieldDescriptor *find_field(const ProtobufCMessageDescriptor *d,
                                                   const char *key)
{
    const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field_by_name(d, key);
    if (f)
        return f;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const char *n = d->fields[i].name, *k = key;
        bool up = false;
        for (; *n && *k; n++) {
            if (*n == '_') {
                up = true;
                continue;
            }
            char want = up && *n >= 'a' && *n <= 'z' ? (char)(*n - 32) : *n;
            up = false;
            if (*k != want)
                break;
            k++;
        }
        if (*n == '\0' && *k == '\0')
            return &d->fields[i];
    }
    return NULL;
}

static int json_int64(json_object *v, int64_t *out)
{
    if (json_object_is_type(v, json_type_int)) {
        *out = json_object_get_int64(v);
        return 0;
    }
    if (json_object_is_type(v, json_type_double)) {
        double x = json_object_get_double(v);
        if (x != floor(x) || fabs(x) > 9.2e18)
            return -1;
        *out = (int64_t)x;
        return 0;
    }
    if (json_object_is_type(v, json_type_string)) {
        const char *s = json_object_get_string(v);
        char *end;
        errno = 0;
        long long x = strtoll(s, &end, 10);
        if (errno || end == s || *end)
            return -1;
        *out = x;
        return 0;
    }
    return -1;
}

static int json_uint64(json_object *v, uint64_t *out)
{
    if (json_object_is_type(v, json_type_string)) {
        const char *s = json_object_get_string(v);
        char *end;
        errno = 0;
        if (*s == '-')
            return -1;
        unsigned long long x = strtoull(s, &end, 10);
        if (errno || end == s || *end)
            return -1;
        *out = x;
        return 0;
    }
    int64_t x;
    if (json_int64(v, &x) < 0 || x < 0)
        return -1;
    *out = (uint64_t)x;
    return 0;
}

/* "1.5s" -> seconds and nanos. */
static int parse_duration(const char *s, int64_t *sec, int32_t *nanos)
{
    char *end;
    errno = 0;
    double x = strtod(s, &end);
    if (errno || end == s || strcmp(end, "s") != 0 || x < -315576000000.0 || x > 315576000000.0)
        return -1;
    *sec = (int64_t)x;
    *nanos = (int32_t)llround((x - (double)*sec) * 1e9);
    return 0;
}

/* Parses one scalar or message value of field f into the storage at p. */
static int value_from_json(const ProtobufCFieldDescriptor *f, json_object *v, void *p, char *path,
                           size_t plen, char *err, size_t errlen, int depth)
{
    int64_t i64;
    uint64_t u64;
    switch (f->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
        if (json_int64(v, &i64) < 0 || i64 < INT32_MIN || i64 > INT32_MAX)
            goto bad_number;
        *(int32_t *)p = (int32_t)i64;
        return 0;
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
        if (json_uint64(v, &u64) < 0 || u64 > UINT32_MAX)
            goto bad_number;
        *(uint32_t *)p = (uint32_t)u64;
        return 0;
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
        if (json_int64(v, &i64) < 0)
            goto bad_number;
        *(int64_t *)p = i64;
        return 0;
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        if (json_uint64(v, &u64) < 0)
            goto bad_number;
        *(uint64_t *)p = u64;
        return 0;
    case PROTOBUF_C_TYPE_FLOAT:
    case PROTOBUF_C_TYPE_DOUBLE: {
        if (!json_object_is_type(v, json_type_int) && !json_object_is_type(v, json_type_double))
            goto bad_number;
        double x = json_object_get_double(v);
        if (f->type == PROTOBUF_C_TYPE_FLOAT)
            *(float *)p = (float)x;
        else
            *(double *)p = x;
        return 0;
    }
    case PROTOBUF_C_TYPE_BOOL:
        if (!json_object_is_type(v, json_type_boolean)) {
            fail(err, errlen, path, "must be a boolean");
            return -1;
        }
        *(protobuf_c_boolean *)p = json_object_get_boolean(v);
        return 0;
    case PROTOBUF_C_TYPE_ENUM: {
        const ProtobufCEnumDescriptor *ed = f->descriptor;
        if (json_object_is_type(v, json_type_string)) {
            const ProtobufCEnumValue *ev =
                protobuf_c_enum_descriptor_get_value_by_name(ed, json_object_get_string(v));
            if (ev == NULL) {
                char why[160];
                snprintf(why, sizeof(why), "unknown %s value \"%s\"", ed->short_name,
                         json_object_get_string(v));
                fail(err, errlen, path, why);
                return -1;
            }
            *(int *)p = ev->value;
            return 0;
        }
        if (json_int64(v, &i64) < 0 || i64 < INT32_MIN || i64 > INT32_MAX)
            goto bad_number;
        *(int *)p = (int)i64;
        return 0;
    }
    case PROTOBUF_C_TYPE_STRING:
        if (!json_object_is_type(v, json_type_string)) {
            fail(err, errlen, path, "must be a string");
            return -1;
        }
        *(char **)p = strdup(json_object_get_string(v));
        return *(char **)p ? 0 : -1;
    case PROTOBUF_C_TYPE_BYTES: {
        if (!json_object_is_type(v, json_type_string)) {
            fail(err, errlen, path, "must be a base64 string");
            return -1;
        }
        const char *s = json_object_get_string(v);
        size_t n = strlen(s);
        ProtobufCBinaryData *b = p;
        b->data = malloc(n / 4 * 3 + 3);
        if (b->data == NULL)
            return -1;
        size_t o = 0;
        unsigned acc = 0;
        int bits = 0;
        for (size_t i = 0; i < n; i++) {
            char c = s[i];
            int val = c >= 'A' && c <= 'Z'   ? c - 'A'
                      : c >= 'a' && c <= 'z' ? c - 'a' + 26
                      : c >= '0' && c <= '9' ? c - '0' + 52
                      : c == '+' || c == '-' ? 62
                      : c == '/' || c == '_' ? 63
                      : c == '='             ? -2
                                             : -1;
            if (val == -2)
                break;
            if (val < 0) {
                fail(err, errlen, path, "invalid base64");
                b->len = o;
                return -1;
            }
            acc = (acc << 6) | (unsigned)val;
            bits += 6;
            if (bits >= 8) {
                bits -= 8;
                b->data[o++] = (uint8_t)(acc >> bits);
            }
        }
        b->len = o;
        return 0;
    }
    case PROTOBUF_C_TYPE_MESSAGE:
        return msg_from_json(f->descriptor, v, (ProtobufCMessage **)p, path, plen, err, errlen,
                             depth + 1);
    }
    fail(err, errlen, path, "unsupported field type");
    return -1;
bad_number:
    fail(err, errlen, path, "must be an integer in range");
    return -1;
}

static size_t scalar_size(const ProtobufCFieldDescriptor *f)
{
    switch (f->type) {
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
    case PROTOBUF_C_TYPE_DOUBLE:
        return 8;
    case PROTOBUF_C_TYPE_BOOL:
        return sizeof(protobuf_c_boolean);
    case PROTOBUF_C_TYPE_ENUM:
        return sizeof(int);
    case PROTOBUF_C_TYPE_STRING:
        return sizeof(char *);
    case PROTOBUF_C_TYPE_BYTES:
        return sizeof(ProtobufCBinaryData);
    case PROTOBUF_C_TYPE_MESSAGE:
        return sizeof(void *);
    default:
        return 4;
    }
}

static bool is_map_entry(const ProtobufCFieldDescriptor *f)
{
    if (f->type != PROTOBUF_C_TYPE_MESSAGE || f->label != PROTOBUF_C_LABEL_REPEATED)
        return false;
    const ProtobufCMessageDescriptor *d = f->descriptor;
    size_t n = strlen(d->name);
    return n > 5 && strcmp(d->name + n - 5, "Entry") == 0 && d->n_fields == 2 &&
           strcmp(d->fields[0].name, "key") == 0 && strcmp(d->fields[1].name, "value") == 0;
}

/* Well-known types with a non-object JSON form. Returns 1 if handled. */
static int wkt_from_json(const ProtobufCMessageDescriptor *d, json_object *j, ProtobufCMessage *m,
                         char *path, size_t plen, char *err, size_t errlen, int depth, int *rc)
{
    const char *n = d->name;
    *rc = 0;
    if (strcmp(n, "google.protobuf.Duration") == 0) {
        Google__Protobuf__Duration *du = (Google__Protobuf__Duration *)m;
        if (!json_object_is_type(j, json_type_string) ||
            parse_duration(json_object_get_string(j), &du->seconds, &du->nanos) < 0) {
            fail(err, errlen, path, "must be a duration like \"1.5s\"");
            *rc = -1;
        }
        return 1;
    }
    if (strncmp(n, "google.protobuf.", 16) == 0 && strcmp(n + strlen(n) - 5, "Value") == 0 &&
        d->n_fields == 1 && strcmp(d->fields[0].name, "value") == 0) {
        /* UInt32Value, BoolValue, StringValue, ...: the bare value */
        *rc = value_from_json(&d->fields[0], j, (char *)m + d->fields[0].offset, path, plen, err,
                              errlen, depth);
        return 1;
    }
    if (strcmp(n, "google.protobuf.Struct") == 0 || strcmp(n, "google.protobuf.Value") == 0 ||
        strcmp(n, "google.protobuf.ListValue") == 0) {
        fail(err, errlen, path, "google.protobuf.Struct values are not supported here");
        *rc = -1;
        return 1;
    }
    if (strcmp(n, "google.protobuf.Any") == 0) {
        Google__Protobuf__Any *any = (Google__Protobuf__Any *)m;
        json_object *t;
        if (!json_object_is_type(j, json_type_object) ||
            !json_object_object_get_ex(j, "@type", &t) || !json_object_is_type(t, json_type_string)) {
            fail(err, errlen, path, "an Any needs \"@type\"");
            *rc = -1;
            return 1;
        }
        const char *url = json_object_get_string(t);
        const ProtobufCMessageDescriptor *inner = xds_descriptor_for_type_url(url);
        if (inner == NULL) {
            char why[300];
            snprintf(why, sizeof(why), "unknown type \"%s\"", url);
            fail(err, errlen, path, why);
            *rc = -1;
            return 1;
        }
        any->type_url = strdup(url);
        ProtobufCMessage *im = NULL;
        json_object *body = j;
        json_object *wrapped = NULL;
        /* Well-known types inside an Any hold their JSON under "value". */
        if (strncmp(inner->name, "google.protobuf.", 16) == 0 &&
            json_object_object_get_ex(j, "value", &wrapped))
            body = wrapped;
        if (msg_from_json(inner, body, &im, path, plen, err, errlen, depth + 1) < 0) {
            if (im != NULL) /* what was decoded before the error is ours to free */
                protobuf_c_message_free_unpacked(im, NULL);
            *rc = -1;
            return 1;
        }
        size_t sz = protobuf_c_message_get_packed_size(im);
        any->value.data = malloc(sz ? sz : 1);
        if (any->value.data == NULL) {
            protobuf_c_message_free_unpacked(im, NULL);
            *rc = -1;
            return 1;
        }
        any->value.len = protobuf_c_message_pack(im, any->value.data);
        protobuf_c_message_free_unpacked(im, NULL);
        return 1;
    }
    return 0;
}

static int msg_from_json(const ProtobufCMessageDescriptor *d, json_object *j, ProtobufCMessage **out,
                         char *path, size_t plen, char *err, size_t errlen, int depth)
{
    if (depth > PB_MAX_DEPTH) {
        fail(err, errlen, path, "nested too deeply");
        return -1;
    }
    ProtobufCMessage *m = calloc(1, d->sizeof_message);
    if (m == NULL) {
        fail(err, errlen, path, "out of memory");
        return -1;
    }
    d->message_init(m);
    *out = m;
    int rc;
    if (wkt_from_json(d, j, m, path, plen, err, errlen, depth, &rc))
        return rc;
    if (!json_object_is_type(j, json_type_object)) {
        char why[200];
        snprintf(why, sizeof(why), "must be an object (%s)", d->name);
        fail(err, errlen, path, why);
        return -1;
    }
    json_object_object_foreach(j, key, v)
    {
        if (strcmp(key, "@type") == 0)
            continue;
        const ProtobufCFieldDescriptor *f = find_field(d, key);
        size_t old = path_push(path, plen, key, 0);
        if (f == NULL) {
            char why[200];
            snprintf(why, sizeof(why), "unknown field of %s", d->name);
            fail(err, errlen, path, why);
            return -1;
        }
        if (json_object_is_type(v, json_type_null)) {
            path[old] = '\0';
            continue;
        }
        char *slot = (char *)m + f->offset;
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t *np = (size_t *)((char *)m + f->quantifier_offset);
            size_t esz = scalar_size(f);
            if (is_map_entry(f) && json_object_is_type(v, json_type_object)) {
                const ProtobufCMessageDescriptor *ed = f->descriptor;
                size_t cnt = (size_t)json_object_object_length(v);
                void **arr = calloc(cnt ? cnt : 1, sizeof(void *));
                if (arr == NULL)
                    return -1;
                *(void ***)slot = arr;
                json_object_object_foreach(v, mk, mv)
                {
                    ProtobufCMessage *e = calloc(1, ed->sizeof_message);
                    if (e == NULL)
                        return -1;
                    ed->message_init(e);
                    arr[(*np)++] = e;
                    json_object *kj = json_object_new_string(mk);
                    int r = value_from_json(&ed->fields[0], kj, (char *)e + ed->fields[0].offset,
                                            path, plen, err, errlen, depth);
                    json_object_put(kj);
                    if (r < 0 || value_from_json(&ed->fields[1], mv,
                                                 (char *)e + ed->fields[1].offset, path, plen,
                                                 err, errlen, depth) < 0)
                        return -1;
                }
            } else {
                if (!json_object_is_type(v, json_type_array)) {
                    fail(err, errlen, path, "must be an array");
                    return -1;
                }
                size_t cnt = json_object_array_length(v);
                void *arr = calloc(cnt ? cnt : 1, esz);
                if (arr == NULL)
                    return -1;
                *(void **)slot = arr;
                for (size_t i = 0; i < cnt; i++) {
                    size_t o2 = path_push(path, plen, NULL, i);
                    /* count first so a failure frees what was set */
                    (*np)++;
                    if (value_from_json(f, json_object_array_get_idx(v, i), (char *)arr + i * esz,
                                        path, plen, err, errlen, depth) < 0)
                        return -1;
                    path[o2] = '\0';
                }
            }
        } else {
            if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
                uint32_t *cas = (uint32_t *)((char *)m + f->quantifier_offset);
                if (*cas != 0 && *cas != f->id) {
                    fail(err, errlen, path, "more than one field of a oneof is set");
                    return -1;
                }
                *cas = f->id;
            } else if (f->label == PROTOBUF_C_LABEL_OPTIONAL && f->type != PROTOBUF_C_TYPE_MESSAGE &&
                       f->type != PROTOBUF_C_TYPE_STRING) {
                *(protobuf_c_boolean *)((char *)m + f->quantifier_offset) = 1;
            }
            /* a repeated key in the JSON: drop the earlier value */
            if (f->type == PROTOBUF_C_TYPE_MESSAGE && *(ProtobufCMessage **)slot) {
                protobuf_c_message_free_unpacked(*(ProtobufCMessage **)slot, NULL);
                *(ProtobufCMessage **)slot = NULL;
            } else if (f->type == PROTOBUF_C_TYPE_STRING && *(char **)slot &&
                       *(char **)slot != (char *)f->default_value &&
                       *(char **)slot != protobuf_c_empty_string) {
                free(*(char **)slot);
                *(char **)slot = NULL;
            }
            if (value_from_json(f, v, slot, path, plen, err, errlen, depth) < 0)
                return -1;
        }
        path[old] = '\0';
    }
    return 0;
}

ProtobufCMessage *px_pb_from_json(const ProtobufCMessageDescriptor *d, json_object *j, char *err,
                                  size_t errlen)
{
    char path[512] = "";
    ProtobufCMessage *m = NULL;
    if (msg_from_json(d, j, &m, path, sizeof(path), err, errlen, 0) < 0) {
        if (m)
            protobuf_c_message_free_unpacked(m, NULL);
        return NULL;
    }
    return m;
}
