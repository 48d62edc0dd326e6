/*
 * protobuf -> proto3 JSON: names, enums, 64-bit integers, bytes, Any,
 * Duration, Struct, maps and wrappers as a user reads them in a config dump.
 */
#include <json-c/json.h>
#include <stdlib.h>
#include <string.h>

#include "../../xds/xds.h"
#include "../testutil.h"
#include "envoy/config/cluster/v3/cluster.pb-c.h"
#include "envoy/config/core/v3/base.pb-c.h"
#include "envoy/config/listener/v3/listener.pb-c.h"
#include "envoy/extensions/filters/network/tcp_proxy/v3/tcp_proxy.pb-c.h"
#include "google/protobuf/any.pb-c.h"
#include "google/protobuf/duration.pb-c.h"
#include "google/protobuf/struct.pb-c.h"
#include "google/protobuf/wrappers.pb-c.h"

static void test_scalars_enums_wrappers(void **state)
{
    (void)state;
    Envoy__Config__Cluster__V3__Cluster c = ENVOY__CONFIG__CLUSTER__V3__CLUSTER__INIT;
    c.name = "outbound|80||a.b.svc.cluster.local";
    c.cluster_discovery_type_case = ENVOY__CONFIG__CLUSTER__V3__CLUSTER__CLUSTER_DISCOVERY_TYPE_TYPE;
    c.type = ENVOY__CONFIG__CLUSTER__V3__CLUSTER__DISCOVERY_TYPE__STATIC; /* 0, but a set oneof */
    c.lb_policy = ENVOY__CONFIG__CLUSTER__V3__CLUSTER__LB_POLICY__LEAST_REQUEST;
    Google__Protobuf__Duration d = GOOGLE__PROTOBUF__DURATION__INIT;
    d.seconds = 1;
    d.nanos = 500000000;
    c.connect_timeout = &d;
    Envoy__Config__Cluster__V3__Cluster__RingHashLbConfig rh = ENVOY__CONFIG__CLUSTER__V3__CLUSTER__RING_HASH_LB_CONFIG__INIT;
    Google__Protobuf__UInt64Value big = GOOGLE__PROTOBUF__UINT64_VALUE__INIT;
    big.value = 18446744073709551615ULL;
    rh.minimum_ring_size = &big;
    c.lb_config_case = ENVOY__CONFIG__CLUSTER__V3__CLUSTER__LB_CONFIG_RING_HASH_LB_CONFIG;
    c.ring_hash_lb_config = &rh;
    json_object *j = xds_pb_to_json(&c.base);
    json_object *v;
    assert_true(json_object_object_get_ex(j, "name", &v));
    assert_string_equal(json_object_get_string(v), "outbound|80||a.b.svc.cluster.local");
    assert_true(json_object_object_get_ex(j, "type", &v));
    assert_string_equal(json_object_get_string(v), "STATIC");
    assert_true(json_object_object_get_ex(j, "lbPolicy", &v));
    assert_string_equal(json_object_get_string(v), "LEAST_REQUEST");
    assert_true(json_object_object_get_ex(j, "connectTimeout", &v));
    assert_string_equal(json_object_get_string(v), "1.500s");
    assert_true(json_object_object_get_ex(j, "ringHashLbConfig", &v));
    assert_true(json_object_object_get_ex(v, "minimumRingSize", &v));
    assert_true(json_object_is_type(v, json_type_string));
    assert_string_equal(json_object_get_string(v), "18446744073709551615");
    /* defaults are omitted */
    assert_false(json_object_object_get_ex(j, "altStatName", &v));
    assert_false(json_object_object_get_ex(j, "respectDnsTtl", &v));
    json_object_put(j);
}

static void test_any_struct_map(void **state)
{
    (void)state;
    /* a Listener whose filter carries a TcpProxy in an Any */
    Envoy__Extensions__Filters__Network__TcpProxy__V3__TcpProxy tp =
        ENVOY__EXTENSIONS__FILTERS__NETWORK__TCP_PROXY__V3__TCP_PROXY__INIT;
    tp.stat_prefix = "BlackHoleCluster";
    tp.cluster_specifier_case = ENVOY__EXTENSIONS__FILTERS__NETWORK__TCP_PROXY__V3__TCP_PROXY__CLUSTER_SPECIFIER_CLUSTER;
    tp.cluster = "BlackHoleCluster";
    uint8_t buf[256];
    size_t len = protobuf_c_message_pack(&tp.base, buf);
    Google__Protobuf__Any any = GOOGLE__PROTOBUF__ANY__INIT;
    any.type_url = "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy";
    any.value.data = buf;
    any.value.len = len;
    Envoy__Config__Listener__V3__Filter f = ENVOY__CONFIG__LISTENER__V3__FILTER__INIT;
    f.name = "envoy.filters.network.tcp_proxy";
    f.config_type_case = ENVOY__CONFIG__LISTENER__V3__FILTER__CONFIG_TYPE_TYPED_CONFIG;
    f.typed_config = &any;
    char *s = xds_pb_to_json_string(&f.base);
    assert_non_null(strstr(s, "\"@type\": \"type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy\""));
    assert_non_null(strstr(s, "\"statPrefix\": \"BlackHoleCluster\""));
    free(s);

    /* unknown type: @type and base64 value */
    uint8_t raw[3] = {0xfb, 0xff, 0x01};
    any.type_url = "type.googleapis.com/some.Unknown";
    any.value.data = raw;
    any.value.len = 3;
    s = xds_pb_to_json_string(&f.base);
    assert_non_null(strstr(s, "\"value\": \"+/8B\""));
    free(s);

    /* Metadata: map<string, Struct> with nested values */
    Google__Protobuf__Value num = GOOGLE__PROTOBUF__VALUE__INIT, str = GOOGLE__PROTOBUF__VALUE__INIT;
    num.kind_case = GOOGLE__PROTOBUF__VALUE__KIND_NUMBER_VALUE;
    num.number_value = 2.5;
    str.kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE;
    str.string_value = "istio";
    Google__Protobuf__Struct__FieldsEntry e1 = GOOGLE__PROTOBUF__STRUCT__FIELDS_ENTRY__INIT,
                                          e2 = GOOGLE__PROTOBUF__STRUCT__FIELDS_ENTRY__INIT;
    e1.key = "weight";
    e1.value = &num;
    e2.key = "tlsMode";
    e2.value = &str;
    Google__Protobuf__Struct__FieldsEntry *ents[2] = {&e1, &e2};
    Google__Protobuf__Struct st = GOOGLE__PROTOBUF__STRUCT__INIT;
    st.n_fields = 2;
    st.fields = ents;
    Envoy__Config__Core__V3__Metadata__FilterMetadataEntry fm = ENVOY__CONFIG__CORE__V3__METADATA__FILTER_METADATA_ENTRY__INIT;
    fm.key = "envoy.transport_socket_match";
    fm.value = &st;
    Envoy__Config__Core__V3__Metadata__FilterMetadataEntry *fms[1] = {&fm};
    Envoy__Config__Core__V3__Metadata md = ENVOY__CONFIG__CORE__V3__METADATA__INIT;
    md.n_filter_metadata = 1;
    md.filter_metadata = fms;
    json_object *j = xds_pb_to_json(&md.base);
    json_object *v;
    assert_true(json_object_object_get_ex(j, "filterMetadata", &v));
    assert_true(json_object_object_get_ex(v, "envoy.transport_socket_match", &v));
    json_object *w;
    assert_true(json_object_object_get_ex(v, "tlsMode", &w));
    assert_string_equal(json_object_get_string(w), "istio");
    assert_true(json_object_object_get_ex(v, "weight", &w));
    assert_true(json_object_get_double(w) == 2.5);
    json_object_put(j);
}

static void test_descriptor_lookup(void **state)
{
    (void)state;
    const ProtobufCMessageDescriptor *d = xds_descriptor_for_type_url(XDS_CLUSTER_TYPE);
    assert_non_null(d);
    assert_string_equal(d->name, "envoy.config.cluster.v3.Cluster");
    assert_non_null(xds_descriptor_for_type_url(XDS_LISTENER_TYPE));
    assert_non_null(xds_descriptor_for_type_url(XDS_ROUTE_TYPE));
    assert_non_null(xds_descriptor_for_type_url(XDS_ENDPOINT_TYPE));
    assert_non_null(xds_descriptor_for_type_url(XDS_SECRET_TYPE));
    assert_null(xds_descriptor_for_type_url("type.googleapis.com/no.Such"));
    assert_int_equal(xds_type_from_url(XDS_ROUTE_TYPE), XDS_ROUTE);
    assert_int_equal(xds_type_from_url("type.googleapis.com/x"), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_scalars_enums_wrappers),
        cmocka_unit_test(test_any_struct_map),
        cmocka_unit_test(test_descriptor_lookup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
