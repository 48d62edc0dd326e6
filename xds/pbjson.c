/*
 * A generic protobuf-c message -> proto3 JSON printer, driven by the
 * generated descriptors. Fields are printed in field-number order; proto3
 * fields with their default value are omitted, members of a oneof are
 * printed when set.
 */
#include <json-c/json.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "envoy/config/cluster/v3/cluster.pb-c.h"
#include "envoy/config/endpoint/v3/endpoint.pb-c.h"
#include "envoy/config/listener/v3/listener.pb-c.h"
#include "envoy/config/route/v3/route.pb-c.h"
#include "envoy/extensions/filters/http/cors/v3/cors.pb-c.h"
#include "envoy/extensions/filters/http/fault/v3/fault.pb-c.h"
#include "envoy/extensions/filters/http/rbac/v3/rbac.pb-c.h"
#include "envoy/extensions/filters/http/router/v3/router.pb-c.h"
#include "envoy/extensions/filters/listener/http_inspector/v3/http_inspector.pb-c.h"
#include "envoy/extensions/filters/listener/original_dst/v3/original_dst.pb-c.h"
#include "envoy/extensions/filters/listener/tls_inspector/v3/tls_inspector.pb-c.h"
#include "envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.pb-c.h"
#include "envoy/extensions/filters/network/rbac/v3/rbac.pb-c.h"
#include "envoy/extensions/filters/network/tcp_proxy/v3/tcp_proxy.pb-c.h"
#include "envoy/extensions/retry/host/previous_hosts/v3/previous_hosts.pb-c.h"
#include "envoy/extensions/retry/priority/previous_priorities/v3/previous_priorities_config.pb-c.h"
#include "envoy/extensions/transport_sockets/tls/v3/secret.pb-c.h"
#include "envoy/extensions/transport_sockets/tls/v3/tls.pb-c.h"
#include "envoy/extensions/upstreams/http/v3/http_protocol_options.pb-c.h"
#include "envoy/service/discovery/v3/discovery.pb-c.h"
#include "google/protobuf/any.pb-c.h"
#include "google/protobuf/duration.pb-c.h"
#include "google/protobuf/empty.pb-c.h"
#include "google/protobuf/struct.pb-c.h"
#include "google/protobuf/timestamp.pb-c.h"
#include "google/protobuf/wrappers.pb-c.h"
#include "xds.h"

/* Messages that may travel inside an Any. */
static const ProtobufCMessageDescriptor *const known[] = {
    &envoy__config__listener__v3__listener__descriptor,
    &envoy__config__route__v3__route_configuration__descriptor,
    &envoy__config__cluster__v3__cluster__descriptor,
    &envoy__config__endpoint__v3__cluster_load_assignment__descriptor,
    &envoy__extensions__transport_sockets__tls__v3__secret__descriptor,
    &envoy__extensions__transport_sockets__tls__v3__upstream_tls_context__descriptor,
    &envoy__extensions__transport_sockets__tls__v3__downstream_tls_context__descriptor,
    &envoy__extensions__filters__network__http_connection_manager__v3__http_connection_manager__descriptor,
    &envoy__extensions__filters__network__tcp_proxy__v3__tcp_proxy__descriptor,
    &envoy__extensions__filters__network__rbac__v3__rbac__descriptor,
    &envoy__extensions__filters__http__rbac__v3__rbac__descriptor,
    &envoy__extensions__filters__http__rbac__v3__rbacper_route__descriptor,
    &envoy__extensions__filters__http__router__v3__router__descriptor,
    &envoy__extensions__filters__http__fault__v3__httpfault__descriptor,
    &envoy__extensions__filters__http__cors__v3__cors__descriptor,
    &envoy__extensions__filters__http__cors__v3__cors_policy__descriptor,
    &envoy__extensions__filters__listener__original_dst__v3__original_dst__descriptor,
    &envoy__extensions__filters__listener__tls_inspector__v3__tls_inspector__descriptor,
    &envoy__extensions__filters__listener__http_inspector__v3__http_inspector__descriptor,
    &envoy__extensions__upstreams__http__v3__http_protocol_options__descriptor,
    &envoy__extensions__retry__host__previous_hosts__v3__previous_hosts_predicate__descriptor,
    &envoy__extensions__retry__priority__previous_priorities__v3__previous_priorities_config__descriptor,
    &envoy__service__discovery__v3__discovery_request__descriptor,
    &envoy__service__discovery__v3__discovery_response__descriptor,
    &google__protobuf__struct__descriptor,
    &google__protobuf__value__descriptor,
    &google__protobuf__duration__descriptor,
    &google__protobuf__timestamp__descriptor,
    &google__protobuf__empty__descriptor,
    &google__protobuf__uint32_value__descriptor,
    &google__protobuf__bool_value__descriptor,
    &google__protobuf__string_value__descriptor,
};

const ProtobufCMessageDescriptor *xds_descriptor_for_type_url(const char *type_url)
{
    if (type_url == NULL)
        return NULL;
    const char *slash = strrchr(type_url, '/');
    const char *name = slash ? slash + 1 : type_url;
    for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
        if (strcmp(known[i]->name, name) == 0)
            return known[i];
    return NULL;
}

static json_object *msg_json(const ProtobufCMessage *m);

static char *camel(const char *s, char *buf, size_t size)
{
    size_t j = 0;
    bool up = false;
    for (size_t i = 0; s[i] && j + 1 < size; i++) {
        if (s[i] == '_') {
            up = true;
            continue;
        }
        buf[j++] = up && s[i] >= 'a' && s[i] <= 'z' ? (char)(s[i] - 32) : s[i];
        up = false;
    }
    buf[j] = 0;
    return buf;
}

static json_object *b64(const uint8_t *d, size_t len)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t olen = 4 * ((len + 2) / 3);
    char *o = malloc(olen + 1);
    size_t j = 0;
    for (size_t i = 0; i < len; i += 3) {
        uint32_t v = (uint32_t)d[i] << 16;
        if (i + 1 < len)
            v |= (uint32_t)d[i + 1] << 8;
        if (i + 2 < len)
            v |= d[i + 2];
        o[j++] = tab[(v >> 18) & 63];
        o[j++] = tab[(v >> 12) & 63];
        o[j++] = i + 1 < len ? tab[(v >> 6) & 63] : '=';
        o[j++] = i + 2 < len ? tab[v & 63] : '=';
    }
    o[j] = 0;
    json_object *r = json_object_new_string(o);
    free(o);
    return r;
}

static json_object *dbl(double v)
{
    if (isnan(v))
        return json_object_new_string("NaN");
    if (isinf(v))
        return json_object_new_string(v > 0 ? "Infinity" : "-Infinity");
    if (v == floor(v) && fabs(v) < 1e15)
        return json_object_new_int64((int64_t)v);
    return json_object_new_double(v);
}

static json_object *duration_str(int64_t s, int32_t ns)
{
    char buf[64];
    bool neg = s < 0 || ns < 0;
    uint64_t as = (uint64_t)(s < 0 ? -s : s);
    uint32_t ans = (uint32_t)(ns < 0 ? -ns : ns);
    if (ans == 0)
        snprintf(buf, sizeof(buf), "%s%llus", neg ? "-" : "", (unsigned long long)as);
    else if (ans % 1000000 == 0)
        snprintf(buf, sizeof(buf), "%s%llu.%03us", neg ? "-" : "", (unsigned long long)as,
                 ans / 1000000);
    else if (ans % 1000 == 0)
        snprintf(buf, sizeof(buf), "%s%llu.%06us", neg ? "-" : "", (unsigned long long)as,
                 ans / 1000);
    else
        snprintf(buf, sizeof(buf), "%s%llu.%09us", neg ? "-" : "", (unsigned long long)as, ans);
    return json_object_new_string(buf);
}

static json_object *value_json(const Google__Protobuf__Value *v);

static json_object *struct_json(const Google__Protobuf__Struct *s)
{
    json_object *o = json_object_new_object();
    for (size_t i = 0; i < s->n_fields; i++)
        json_object_object_add(o, s->fields[i]->key, value_json(s->fields[i]->value));
    return o;
}

static json_object *value_json(const Google__Protobuf__Value *v)
{
    if (v == NULL)
        return NULL;
    switch (v->kind_case) {
    case GOOGLE__PROTOBUF__VALUE__KIND_NUMBER_VALUE: return dbl(v->number_value);
    case GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE: return json_object_new_string(v->string_value);
    case GOOGLE__PROTOBUF__VALUE__KIND_BOOL_VALUE: return json_object_new_boolean(v->bool_value);
    case GOOGLE__PROTOBUF__VALUE__KIND_STRUCT_VALUE:
        return v->struct_value ? struct_json(v->struct_value) : json_object_new_object();
    case GOOGLE__PROTOBUF__VALUE__KIND_LIST_VALUE: {
        json_object *a = json_object_new_array();
        for (size_t i = 0; v->list_value && i < v->list_value->n_values; i++)
            json_object_array_add(a, value_json(v->list_value->values[i]));
        return a;
    }
    default: return NULL;
    }
}

static json_object *any_json(const Google__Protobuf__Any *a)
{
    json_object *o = NULL;
    const ProtobufCMessageDescriptor *d = xds_descriptor_for_type_url(a->type_url);
    ProtobufCMessage *inner = NULL;
    if (d)
        inner = protobuf_c_message_unpack(d, NULL, a->value.len, a->value.data);
    if (inner == NULL) {
        o = json_object_new_object();
        json_object_object_add(o, "@type", json_object_new_string(a->type_url));
        json_object_object_add(o, "value", b64(a->value.data, a->value.len));
        return o;
    }
    json_object *body = msg_json(inner);
    if (json_object_is_type(body, json_type_object)) {
        o = json_object_new_object();
        json_object_object_add(o, "@type", json_object_new_string(a->type_url));
        json_object_object_foreach(body, k, v) json_object_object_add(o, k, json_object_get(v));
        json_object_put(body);
    } else {
        /* well-known types with a non-object JSON form */
        o = json_object_new_object();
        json_object_object_add(o, "@type", json_object_new_string(a->type_url));
        json_object_object_add(o, "value", body);
    }
    protobuf_c_message_free_unpacked(inner, NULL);
    return o;
}

static json_object *scalar_json(const ProtobufCFieldDescriptor *f, const void *p)
{
    switch (f->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32: return json_object_new_int(*(const int32_t *)p);
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32: return json_object_new_int64(*(const uint32_t *)p);
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64: {
        char buf[32];
        snprintf(buf, sizeof(buf), "%lld", (long long)*(const int64_t *)p);
        return json_object_new_string(buf);
    }
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64: {
        char buf[32];
        snprintf(buf, sizeof(buf), "%llu", (unsigned long long)*(const uint64_t *)p);
        return json_object_new_string(buf);
    }
    case PROTOBUF_C_TYPE_FLOAT: return dbl(*(const float *)p);
    case PROTOBUF_C_TYPE_DOUBLE: return dbl(*(const double *)p);
    case PROTOBUF_C_TYPE_BOOL: return json_object_new_boolean(*(const protobuf_c_boolean *)p);
    case PROTOBUF_C_TYPE_ENUM: {
        int v = *(const int *)p;
        const ProtobufCEnumValue *ev =
            protobuf_c_enum_descriptor_get_value((const ProtobufCEnumDescriptor *)f->descriptor, v);
        return ev ? json_object_new_string(ev->name) : json_object_new_int(v);
    }
    case PROTOBUF_C_TYPE_STRING: {
        const char *s = *(char *const *)p;
        return json_object_new_string(s ? s : "");
    }
    case PROTOBUF_C_TYPE_BYTES: {
        const ProtobufCBinaryData *b = p;
        return b64(b->data, b->len);
    }
    case PROTOBUF_C_TYPE_MESSAGE: {
        const ProtobufCMessage *m = *(ProtobufCMessage *const *)p;
        return m ? msg_json(m) : NULL;
    }
    }
    return NULL;
}

static size_t elem_size(ProtobufCType t)
{
    switch (t) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
    case PROTOBUF_C_TYPE_FLOAT:
    case PROTOBUF_C_TYPE_ENUM: return 4;
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
    case PROTOBUF_C_TYPE_DOUBLE: return 8;
    case PROTOBUF_C_TYPE_BOOL: return sizeof(protobuf_c_boolean);
    case PROTOBUF_C_TYPE_STRING:
    case PROTOBUF_C_TYPE_MESSAGE: return sizeof(void *);
    case PROTOBUF_C_TYPE_BYTES: return sizeof(ProtobufCBinaryData);
    }
    return 0;
}

/* True when a proto3 scalar holds its default value. */
static bool is_default(const ProtobufCFieldDescriptor *f, const void *p)
{
    switch (f->type) {
    case PROTOBUF_C_TYPE_STRING: {
        const char *s = *(char *const *)p;
        return s == NULL || *s == 0;
    }
    case PROTOBUF_C_TYPE_BYTES: return ((const ProtobufCBinaryData *)p)->len == 0;
    case PROTOBUF_C_TYPE_MESSAGE: return *(void *const *)p == NULL;
    case PROTOBUF_C_TYPE_FLOAT: return *(const float *)p == 0;
    case PROTOBUF_C_TYPE_DOUBLE: return *(const double *)p == 0;
    case PROTOBUF_C_TYPE_BOOL: return *(const protobuf_c_boolean *)p == 0;
    default: {
        size_t sz = elem_size(f->type);
        return sz == 4 ? *(const uint32_t *)p == 0 : *(const uint64_t *)p == 0;
    }
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

static json_object *map_key_value(const ProtobufCMessage *entry, const char **key, char *kbuf,
                                  size_t ksize)
{
    const ProtobufCMessageDescriptor *d = entry->descriptor;
    const ProtobufCFieldDescriptor *kf = &d->fields[0], *vf = &d->fields[1];
    const char *base = (const char *)entry;
    if (kf->type == PROTOBUF_C_TYPE_STRING) {
        *key = *(char *const *)(base + kf->offset);
    } else {
        json_object *kj = scalar_json(kf, base + kf->offset);
        snprintf(kbuf, ksize, "%s", json_object_get_string(kj));
        json_object_put(kj);
        *key = kbuf;
    }
    json_object *v = scalar_json(vf, base + vf->offset);
    return v;
}

static json_object *wkt_json(const ProtobufCMessage *m, bool *handled)
{
    const char *n = m->descriptor->name;
    *handled = true;
    if (strcmp(n, "google.protobuf.Any") == 0)
        return any_json((const Google__Protobuf__Any *)m);
    if (strcmp(n, "google.protobuf.Duration") == 0) {
        const Google__Protobuf__Duration *d = (const void *)m;
        return duration_str(d->seconds, d->nanos);
    }
    if (strcmp(n, "google.protobuf.Timestamp") == 0) {
        const Google__Protobuf__Timestamp *t = (const void *)m;
        time_t secs = (time_t)t->seconds;
        struct tm tm;
        char buf[64];
        gmtime_r(&secs, &tm);
        strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
        return json_object_new_string(buf);
    }
    if (strcmp(n, "google.protobuf.Struct") == 0)
        return struct_json((const Google__Protobuf__Struct *)m);
    if (strcmp(n, "google.protobuf.Value") == 0)
        return value_json((const Google__Protobuf__Value *)m);
    if (strncmp(n, "google.protobuf.", 16) == 0 && strstr(n, "Value") != NULL &&
        strcmp(n, "google.protobuf.ListValue") != 0) {
        /* wrappers: one field "value" */
        const ProtobufCFieldDescriptor *f = &m->descriptor->fields[0];
        return scalar_json(f, (const char *)m + f->offset);
    }
    *handled = false;
    return NULL;
}

static json_object *msg_json(const ProtobufCMessage *m)
{
    bool handled;
    json_object *w = wkt_json(m, &handled);
    if (handled)
        return w;
    const ProtobufCMessageDescriptor *d = m->descriptor;
    const char *base = (const char *)m;
    json_object *o = json_object_new_object();
    char name[128];
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        const void *p = base + f->offset;
        json_object *v = NULL;
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t n = *(const size_t *)(base + f->quantifier_offset);
            if (n == 0)
                continue;
            const char *arr = *(char *const *)p;
            if (is_map_entry(f)) {
                v = json_object_new_object();
                for (size_t j = 0; j < n; j++) {
                    const ProtobufCMessage *e = ((ProtobufCMessage *const *)arr)[j];
                    const char *key;
                    char kbuf[64];
                    json_object *ev = map_key_value(e, &key, kbuf, sizeof(kbuf));
                    json_object_object_add(v, key, ev);
                }
            } else {
                v = json_object_new_array();
                size_t es = elem_size(f->type);
                for (size_t j = 0; j < n; j++)
                    json_object_array_add(v, scalar_json(f, arr + j * es));
            }
        } else {
            if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
                uint32_t which = *(const uint32_t *)(base + f->quantifier_offset);
                if (which != f->id)
                    continue;
            } else if (f->label == PROTOBUF_C_LABEL_OPTIONAL && f->type != PROTOBUF_C_TYPE_MESSAGE &&
                       f->type != PROTOBUF_C_TYPE_STRING && f->quantifier_offset) {
                if (!*(const protobuf_c_boolean *)(base + f->quantifier_offset))
                    continue;
            } else if (is_default(f, p)) {
                continue;
            }
            v = scalar_json(f, p);
            if (v == NULL && f->type == PROTOBUF_C_TYPE_MESSAGE && *(void *const *)p == NULL)
                continue;
        }
        json_object_object_add(o, camel(f->name, name, sizeof(name)), v);
    }
    return o;
}

json_object *xds_pb_to_json(const ProtobufCMessage *msg)
{
    return msg ? msg_json(msg) : NULL;
}

char *xds_pb_to_json_string(const ProtobufCMessage *msg)
{
    json_object *o = xds_pb_to_json(msg);
    if (o == NULL)
        return NULL;
    char *s = strdup(json_object_to_json_string_ext(
        o, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED | JSON_C_TO_STRING_NOSLASHESCAPE));
    json_object_put(o);
    return s;
}

json_object *xds_resource_to_json(xds_type_t t, const xds_resource_t *res)
{
    const ProtobufCMessageDescriptor *d = xds_descriptor_for_type_url(xds_type_url(t));
    if (d == NULL || res == NULL)
        return NULL;
    ProtobufCMessage *m = protobuf_c_message_unpack(d, NULL, res->len, res->data);
    if (m == NULL)
        return NULL;
    json_object *o = msg_json(m);
    protobuf_c_message_free_unpacked(m, NULL);
    return o;
}
