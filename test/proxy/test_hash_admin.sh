#!/bin/sh
# Ring-hash affinity by cookie (generated for a client that has none, as
# Istio's consistentHash.httpCookie with a ttl) and by query parameter, and
# the admin page's /logging. meshproxy from a static config on 127.0.0.68,
# three backends on 127.0.0.69:8081-8083; ok/not ok lines.
set -u
. "$(dirname "$0")/../lib.sh"
EP='{"endpoint": {"address": {"socket_address": {"address": "127.0.0.69", "port_value": PORT}}}}'
cat >"$T/config.json" <<JSON
{"resources": [
 {"@type": "type.googleapis.com/envoy.config.listener.v3.Listener", "name": "in",
  "address": {"socket_address": {"address": "127.0.0.68", "port_value": 8080}},
  "filter_chains": [{"filters": [{"name": "hcm", "typed_config": {
    "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
    "stat_prefix": "in", "route_config": {"name": "r", "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
     {"match": {"prefix": "/q"}, "route": {"cluster": "web", "hash_policy": [{"query_parameter": {"name": "u"}}]}},
     {"match": {"prefix": "/"}, "route": {"cluster": "web", "hash_policy": [{"cookie": {"name": "user", "ttl": "3600s", "path": "/"}}]}}]}]}}}]}]},
 {"@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster", "name": "web", "type": "STATIC", "lb_policy": "RING_HASH",
  "load_assignment": {"cluster_name": "web", "endpoints": [{"lb_endpoints": [
   $(echo "$EP" | sed s/PORT/8081/), $(echo "$EP" | sed s/PORT/8082/), $(echo "$EP" | sed s/PORT/8083/)]}]}}
]}
JSON
for n in 1 2 3; do start "b$n" "$BUILD/backend" --listen "127.0.0.69:808$n" --name "b$n"; done
start proxy "$BUILD/meshproxy" sidecar --config-file "$T/config.json" --bind 127.0.0.68 --admin-port 25668 \
    --no-access-log --concurrency 1
wait_url http://127.0.0.68:15021/healthz/ready || { notok hash_ready "$(tail -3 "$T/proxy.log")"; exit 1; }
backend() { # extra curl args... -> the answering backend
    curl -s -m 3 -D - -o /dev/null "$@" | tr -d '\r' | sed -n 's/^x-backend: //Ip'
}

# no cookie: one is set, with the route's lifetime and path
curl -s -m 3 -D "$T/h" -o /dev/null http://127.0.0.68:8080/
cookie=$(tr -d '\r' <"$T/h" | sed -n 's/^set-cookie: user="\([0-9a-f]*\)".*/\1/Ip')
check hash_cookie_generated "$(cat "$T/h")" \
    grep -qi '^set-cookie: user="[0-9a-f]*"; Max-Age=3600; Path=/; HttpOnly' "$T/h"
# with it, always the same backend
first=$(backend -H "Cookie: user=\"$cookie\"" http://127.0.0.68:8080/)
same=1
for i in 1 2 3 4 5 6 7 8 9 10; do
    [ "$(backend -H "Cookie: a=b; user=\"$cookie\"" http://127.0.0.68:8080/)" = "$first" ] || same=0
done
check hash_cookie_sticks "cookie $cookie went to more than $first" test $same = 1 -a -n "$first"
# a client that has the cookie gets no new one
curl -s -m 3 -D "$T/h2" -o /dev/null -H "Cookie: user=abc" http://127.0.0.68:8080/
check hash_cookie_not_reset "$(cat "$T/h2")" sh -c "! grep -qi '^set-cookie' '$T/h2'"
# different users spread over the backends
seen=""
for u in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do
    seen="$seen $(backend -H "Cookie: user=u$u" http://127.0.0.68:8080/)"
done
distinct=$(echo "$seen" | tr ' ' '\n' | sort -u | grep -c .)
check hash_cookie_spreads "20 users reached $distinct backend(s)" test "$distinct" -ge 2
# query parameter hashing
q1=$(backend 'http://127.0.0.68:8080/q?x=1&u=alice')
qsame=1
for i in 1 2 3 4 5; do [ "$(backend "http://127.0.0.68:8080/q?u=alice&i=$i")" = "$q1" ] || qsame=0; done
check hash_query_sticks "u=alice went to more than $q1" test $qsame = 1 -a -n "$q1"

# /logging: POST changes the level, GET only shows it
code=$(curl -s -m 2 -o "$T/l" -w '%{http_code}' -X POST 'http://127.0.0.1:25668/logging?level=debug')
check admin_logging_set "$code: $(cat "$T/l")" test "$code" = 200
check admin_logging_shows "$(cat "$T/l")" grep -q 'meshproxy: debug' "$T/l"
code=$(curl -s -m 2 -o /dev/null -w '%{http_code}' 'http://127.0.0.1:25668/logging?level=info')
check admin_logging_get_refused "GET answered $code" test "$code" = 405
code=$(curl -s -m 2 -o "$T/l" -w '%{http_code}' -X POST 'http://127.0.0.1:25668/logging?level=loud')
check admin_logging_bad_level "$code: $(cat "$T/l")" test "$code" = 400
finish
