#!/bin/sh
# tcp_bulk: bulk transfers through a plain TCP proxy, where meshproxy moves
# bytes with splice() once a connection is past its first 256 KiB. The same
# backend (build/backend, 200 + a 1 MiB body, keep-alive) behind: meshproxy
# (a TcpProxy listener), meshproxy --no-splice (the buffered path), and
# HAProxy in `mode tcp` with `option splice-auto`; one worker each, wrk
# -t1 -cN, in the same run. nginx's stream module is not in Debian's
# nginx-light, and h2o has no plain TCP proxy.
#
#   BUILD=build sh bench/tcp_bulk.sh
#
# Knobs: TCP_BENCH_RUNS (2), TCP_BENCH_SECONDS (10), TCP_BENCH_CONNS (8),
# TCP_BENCH_BODY (1048576). Everything listens on 127.0.0.x; every process
# started here is stopped on exit. Prints a table and key=value lines.
BUILD=${BUILD:-build}
RUNS=${TCP_BENCH_RUNS:-2}
SECS=${TCP_BENCH_SECONDS:-10}
CONNS=${TCP_BENCH_CONNS:-8}
BODY=${TCP_BENCH_BODY:-1048576}
PEERS="meshproxy meshproxy-copy haproxy"
WARM=2

echo "== tcp_bulk: $BODY-byte responses through a TCP proxy (splice vs buffers, 1 worker each)"
. "$(dirname "$0")/lib.sh"
need wrk taskset haproxy
need_built "$BUILD/meshproxy" "$BUILD/backend"
bench_tmp tcp-bench

pin "proxy under test" "wrk and the backend"
echo "load: wrk -t1 -c$CONNS, ${WARM} s warm-up then ${SECS} s measured; $RUNS run(s) each"
machine_line
echo "versions: HAProxy $(haproxy -v 2>/dev/null | awk 'NR == 1 { print $3 }')"
echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"

BASE=$((20000 + $$ % 9000 * 4))
BE=127.0.0.81:$BASE
HZ=$(getconf CLK_TCK)
addr_of() {
    case $1 in
    meshproxy) echo 127.0.0.82:$((BASE + 1)) ;;
    meshproxy-copy) echo 127.0.0.83:$((BASE + 1)) ;;
    haproxy) echo 127.0.0.84:$((BASE + 1)) ;;
    esac
}

mesh_config() { # FILE ADDR
    cat >"$1" <<JSON
{"resources": [
{"@type": "type.googleapis.com/envoy.config.listener.v3.Listener", "name": "tcp",
 "address": {"socket_address": {"address": "${2%:*}", "port_value": ${2#*:}}},
 "filter_chains": [{"filters": [{"name": "tcp", "typed_config": {
   "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
   "stat_prefix": "tcp", "cluster": "be"}}]}]},
{"@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster", "name": "be", "type": "STATIC",
 "connect_timeout": "1s", "load_assignment": {"cluster_name": "be", "endpoints": [{"lb_endpoints":
 [{"endpoint": {"address": {"socket_address": {"address": "${BE%:*}", "port_value": ${BE#*:}}}}}]}]}}
]}
JSON
}
mesh_config "$TMP/meshproxy.json" "$(addr_of meshproxy)"
mesh_config "$TMP/meshproxy-copy.json" "$(addr_of meshproxy-copy)"
cat >"$TMP/haproxy.cfg" <<EOF
global
    nbthread 1
    maxconn 4096
defaults
    mode tcp
    option splice-auto
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend fe
    bind $(addr_of haproxy)
    default_backend be
backend be
    server s1 $BE
EOF

start() { # NAME
    case $1 in
    backend) $LOAD_CPU "$BUILD/backend" --listen "$BE" --name x --body-size "$BODY" >"$TMP/backend.log" 2>&1 & ;;
    meshproxy) $PROXY_CPU "$BUILD/meshproxy" router --config-file "$TMP/meshproxy.json" --concurrency 1 \
        --no-access-log --stats-port 0 --ready-port 0 --admin-port 0 --log-level warn >"$TMP/$1.log" 2>&1 & ;;
    meshproxy-copy) $PROXY_CPU "$BUILD/meshproxy" router --config-file "$TMP/meshproxy-copy.json" --concurrency 1 \
        --no-access-log --no-splice --stats-port 0 --ready-port 0 --admin-port 0 --log-level warn \
        >"$TMP/$1.log" 2>&1 & ;;
    haproxy) $PROXY_CPU haproxy -db -f "$TMP/haproxy.cfg" >"$TMP/haproxy.log" 2>&1 & ;;
    esac
    PID=$!
    PIDS="$PIDS $PID"
    eval "pid_$(echo "$1" | tr - _)=$PID"
    a=$BE
    [ "$1" = backend ] || a=$(addr_of "$1")
    wait_http "$a" || { echo "!! $1 did not answer on $a:"; tail -5 "$TMP/$1.log"; return 1; }
}

# wrk once against NAME: sets rps mbps kcpu (proxy CPU seconds per GiB moved).
run_wrk() {
    url="http://$(addr_of "$1")/"
    $LOAD_CPU wrk -t1 -c"$CONNS" -d"${WARM}s" "$url" >/dev/null 2>&1
    pid=$(eval echo "\$pid_$(echo "$1" | tr - _)")
    c0=$(cpu_ticks "$pid")
    $LOAD_CPU wrk -t1 -c"$CONNS" -d"${SECS}s" "$url" >"$TMP/wrk.out" 2>&1
    c1=$(cpu_ticks "$pid")
    rps=$(awk '/^Requests\/sec:/ { printf "%.0f", $2 }' "$TMP/wrk.out")
    reqs=$(awk '/requests in/ { print $1 }' "$TMP/wrk.out")
    if [ -z "$reqs" ] || [ "$reqs" -eq 0 ]; then
        echo "!! wrk against $1 failed:"
        cat "$TMP/wrk.out"
        return 1
    fi
    mbps=$(awk -v r="$rps" -v b="$BODY" 'BEGIN { printf "%.0f", r * b / 1048576 }')
    kcpu=$(awk -v t=$((c1 - c0)) -v hz="$HZ" -v n="$reqs" -v b="$BODY" \
        'BEGIN { printf "%.3f", t / hz / (n * b / 1073741824) }')
}

start backend || exit 1
failed=0
for p in $PEERS; do
    start "$p" || failed=1
done
printf '%-16s %-22s %-14s %s\n' proxy "MiB/s (runs)" "req/s (best)" "proxy CPU s per GiB"
for p in $PEERS; do
    best="" bestr="" bestc="" runs=""
    i=0
    while [ $i -lt "$RUNS" ]; do
        if run_wrk "$p"; then
            runs="$runs $mbps"
            if [ -z "$best" ] || [ "$mbps" -gt "$best" ]; then
                best=$mbps bestr=$rps bestc=$kcpu
            fi
        else
            failed=1
        fi
        i=$((i + 1))
    done
    printf '%-16s %-22s %-14s %s\n' "$p" "${best:--} ($(echo $runs | tr ' ' '/'))" "${bestr:--}" "${bestc:--}"
    echo "tcp_bulk_${p}_mibps=$best tcp_bulk_${p}_cpu_per_gib=$bestc" | tr - _
    eval "best_$(echo "$p" | tr - _)=$best"
done
if [ -n "${best_meshproxy:-}" ] && [ -n "${best_haproxy:-}" ] && [ -n "${best_meshproxy_copy:-}" ]; then
    awk -v m="$best_meshproxy" -v c="$best_meshproxy_copy" -v h="$best_haproxy" 'BEGIN {
        printf "ratios: meshproxy / HAProxy %.2f, splice / buffers %.2f\n", m / h, m / c }'
fi
exit $failed
