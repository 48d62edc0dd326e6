#!/bin/sh
# The status port (15020 in a pod): the proxy's Istio metrics with the
# application's own metrics merged in, as the injector's prometheus.io
# annotations send scrapers there, and readiness. Loopback only (127.0.0.60-63,
# 127.0.0.1:29100); prints ok/not ok lines; stops every process it started.
set -u
. "$(dirname "$0")/../lib.sh"
PROXY="$BUILD/meshproxy"

# the application: its own /metrics on 127.0.0.1:29100 (in a pod the app is on localhost)
mkdir -p "$T/app"
printf '# TYPE app_orders_total counter\napp_orders_total{shop="a"} 42\n' >"$T/app/metrics"
start app python3 -m http.server 29100 --bind 127.0.0.1 --directory "$T/app"

cat >"$T/config.json" <<'JSON'
{"resources": [
 {"@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster", "name": "web", "type": "STATIC",
  "load_assignment": {"cluster_name": "web", "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {"address": "127.0.0.61", "port_value": 9100}}}}]}]}}
]}
JSON


# In a pod (PROXY_CONFIG set) the status port defaults to 15020; the app's
# annotations come in ISTIO_PROMETHEUS_ANNOTATIONS.
i=0
until curl -sf -o /dev/null -m 1 http://127.0.0.1:29100/metrics; do
    i=$((i + 1)); [ $i -lt 100 ] || break; sleep 0.1
done
start pod env PROXY_CONFIG='{"discoveryAddress": "unused:15010"}' \
    ISTIO_PROMETHEUS_ANNOTATIONS='{"scrape": "true", "port": "29100", "path": "/metrics"}' \
    "$PROXY" sidecar --config-file "$T/config.json" --bind 127.0.0.60 --stats-port 15090 --ready-port 15021 \
    --admin-port 0
if wait_url http://127.0.0.60:15020/healthz/ready; then
    ok status_port_default_in_pod
else
    notok status_port_default_in_pod "nothing on 127.0.0.60:15020: $(tail -3 "$T/pod.log")"
fi
curl -s -m 5 http://127.0.0.60:15020/stats/prometheus >"$T/merged"
grep -q 'app_orders_total{shop="a"} 42' "$T/merged" && ok status_port_merges_app_metrics ||
    notok status_port_merges_app_metrics "no app metric in: $(head -c 300 "$T/merged")"
curl -s -m 5 http://127.0.0.60:15090/stats/prometheus >"$T/own"
grep -q app_orders_total "$T/own" && notok stats_port_is_proxy_only "15090 serves the app's metrics" ||
    ok stats_port_is_proxy_only
# the proxy's own part is the same as 15090's
if [ -s "$T/own" ]; then
    head -1 "$T/own" >"$T/first"
    grep -qxF -f "$T/first" "$T/merged" && ok status_port_has_proxy_metrics ||
        notok status_port_has_proxy_metrics "15090's first line missing from 15020"
else
    ok status_port_has_proxy_metrics # no traffic yet: both empty of Istio series
fi

# the app goes away: the merge degrades to the proxy's own metrics, still 200
stop app
sleep 0.2
code=$(curl -s -m 8 -o "$T/merged2" -w '%{http_code}' http://127.0.0.60:15020/stats/prometheus)
if [ "$code" = 200 ] && ! grep -q app_orders_total "$T/merged2"; then
    ok status_port_survives_app_down
else
    notok status_port_survives_app_down "answered $code"
fi
grep -q "application metrics from http://127.0.0.1:29100/metrics" "$T/pod.log" && ok status_port_logs_scrape_failure ||
    notok status_port_logs_scrape_failure "no warning in the log"

# local mode (no PROXY_CONFIG): no status port unless asked for
start local "$PROXY" sidecar --config-file "$T/config.json" --bind 127.0.0.62 --stats-port 15090 \
    --ready-port 15021 --admin-port 0
wait_url http://127.0.0.62:15021/healthz/ready || notok local_ready "$(tail -3 "$T/local.log")"
curl -s -o /dev/null -m 1 http://127.0.0.62:15020/healthz/ready && notok status_port_off_locally "15020 answers" ||
    ok status_port_off_locally

# a malformed annotation is a clear start-up error
PROXY_CONFIG='{}' ISTIO_PROMETHEUS_ANNOTATIONS='{"port": "eighty"}' \
    "$PROXY" sidecar --config-file "$T/config.json" --bind 127.0.0.63 >"$T/bad.log" 2>&1
rc=$?
if [ $rc -eq 2 ] && grep -q 'ISTIO_PROMETHEUS_ANNOTATIONS: port: "eighty" is not a port' "$T/bad.log"; then
    ok bad_annotations_rejected
else
    notok bad_annotations_rejected "exit $rc: $(cat "$T/bad.log")"
fi
finish
