#!/bin/sh
# mtls: the cost of mutual TLS between two sidecars. A client-side instance
# takes plaintext HTTP/1.1 from the app (wrk) and originates mTLS with the
# client's workload certificate to a server-side instance, which requires and
# verifies the client certificate, terminates TLS and forwards plaintext to
# the backend (build/backend, 200 + 1 KB body, keep-alive). Measured in the
# same run, one worker each, the same certificates (made here with openssl:
# a root and two workload certificates whose URI SANs are
# spiffe://cluster.local/ns/default/sa/client and .../sa/server):
#   mesh_mtls   a pair of meshproxy sidecars (--config-file, --cert-dir),
#               Istio's transport sockets (SDS "default"/"ROOTCA", SAN check,
#               SNI outbound_.PORT_._.FQDN, ALPN istio-peer-exchange,istio)
#   mesh_plain  the same two processes through a plaintext listener pair
#   haproxy     a pair of HAProxy instances doing the same
#   nginx       a pair of nginx instances doing the same
# The peers cannot match a URI SAN: their client side checks the server's
# name (SNI server.default.svc.cluster.local) against the certificate's CN,
# their server side checks the client's chain only (as Istio's inbound does).
# with wrk (HTTP/1.1 keep-alive), h2load --h1 --rps (latency at a fixed
# 1,000 requests/s), and build/bench/tls_handshakes (full and resumed TLS 1.3
# handshakes with the client certificate against each server-side instance's
# mTLS port, per second of that instance's CPU).
#
#   BUILD=build sh bench/mtls.sh
#
# Knobs (environment): MTLS_BENCH_RUNS (2), MTLS_BENCH_SECONDS (10),
# MTLS_BENCH_CONNS (32), MTLS_BENCH_HS_SECONDS (5), MTLS_BENCH_HS_CONNS (2),
# MTLS_BENCH_KEY ("ec", or "rsa" for RSA 2048 keys), MTLS_BENCH_PEERS
# ("mesh_mtls mesh_plain haproxy nginx").
# Everything listens on 127.0.0.x; every file lives in a temp dir removed at
# the end; every process started here is stopped on exit, failure included.
# Prints tables and key=value lines; returns non-zero when a step failed.
BUILD=${BUILD:-build}
RUNS=${MTLS_BENCH_RUNS:-2}
SECS=${MTLS_BENCH_SECONDS:-10}
CONNS=${MTLS_BENCH_CONNS:-32}
HS_SECS=${MTLS_BENCH_HS_SECONDS:-5}
HS_CONNS=${MTLS_BENCH_HS_CONNS:-2}
KEY=${MTLS_BENCH_KEY:-ec}
PEERS=${MTLS_BENCH_PEERS:-"mesh_mtls mesh_plain haproxy nginx"}
WARM=2

echo "== mtls: meshproxy sidecar pair with mTLS vs plaintext, HAProxy and nginx pairs (1 worker each, same run)"

case $KEY in
ec) KEYOPT="-newkey ec -pkeyopt ec_paramgen_curve:P-256" KEYNAME="ECDSA P-256" ;;
rsa) KEYOPT="-newkey rsa:2048" KEYNAME="RSA 2048" ;;
*)
    echo "!! MTLS_BENCH_KEY must be ec or rsa"
    exit 1
    ;;
esac

. "$(dirname "$0")/lib.sh"
need wrk h2load taskset openssl curl nginx haproxy
need_built "$BUILD/meshproxy" "$BUILD/backend" "$BUILD/bench/tls_handshakes"
bench_tmp mtls-bench

# both instances of a pair on CPU 1 (they take turns with each request)
pin "both instances of the pair under test" "load generator, handshake client and backend"
echo "load: wrk -t1 -c$CONNS, ${WARM} s warm-up then ${SECS} s measured; $RUNS run(s) each; certificates: $KEYNAME"
machine_line
echo "versions: $(nginx -v 2>&1 | sed 's/.*: //'), HAProxy $(haproxy -v 2>/dev/null | awk 'NR == 1 { print $3 }'), $(openssl version)"
echo "note: the machine is shared with other engineers' builds and tests"
echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"

# Ports: one base per run of this script, so two runs do not collide.
BASE=$((20000 + $$ % 9000 * 4))
BE=127.0.0.91:$BASE
MTLS_PORT=$((BASE + 1)) # every mTLS hop and the app-facing ports
PLAIN_PORT=$((BASE + 2))
FQDN=server.default.svc.cluster.local
SNI="outbound_.${MTLS_PORT}_._.$FQDN"
SERVER_ID=spiffe://cluster.local/ns/default/sa/server
HZ=$(getconf CLK_TCK)
failed=0

# The address the app (wrk) talks to.
addr_of() {
    case $1 in
    mesh_mtls) echo 127.0.0.92:$MTLS_PORT ;;
    mesh_plain) echo 127.0.0.92:$PLAIN_PORT ;;
    haproxy) echo 127.0.0.94:$MTLS_PORT ;;
    nginx) echo 127.0.0.96:$MTLS_PORT ;;
    backend) echo "$BE" ;;
    esac
}
# The server-side instance's mTLS address (the handshake target).
tls_addr_of() {
    case $1 in
    mesh_mtls) echo 127.0.0.93:$MTLS_PORT ;;
    haproxy) echo 127.0.0.95:$MTLS_PORT ;;
    nginx) echo 127.0.0.97:$MTLS_PORT ;;
    esac
}
# The processes of a pair (names of pid_ variables), client side first.
procs_of() {
    case $1 in
    mesh_mtls | mesh_plain) echo "meshcli meshsrv" ;;
    haproxy) echo "hacli hasrv" ;;
    nginx) echo "ngcli ngsrv" ;;
    esac
}
server_proc_of() { set -- $(procs_of "$1"); echo "$2"; }

# CPU ticks of every process of a pair.
pair_ticks() {
    s=0
    for n in $(procs_of "$1"); do
        s=$((s + $(cpu_ticks "$(eval echo "\$pid_$n")")))
    done
    echo $s
}
pair_rss() {
    s=0
    for n in $(procs_of "$1"); do
        s=$((s + $(rss_kb "$(eval echo "\$pid_$n")")))
    done
    echo $s
}

# ---- certificates ----

make_certs() {
    c=$TMP/certs
    mkdir -p "$c" || return 1
    # shellcheck disable=SC2086
    openssl req -x509 $KEYOPT -nodes -keyout "$c/root.key" -out "$c/root.pem" -days 2 -sha256 \
        -subj "/O=cluster.local/CN=mesh root" -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" >"$c/openssl.log" 2>&1 || return 1
    for w in client server; do
        # The CN carries the service name: nginx and HAProxy check a server's
        # name against DNS SANs or, without any, the CN; meshproxy checks the
        # URI SAN.
        # shellcheck disable=SC2086
        openssl req -new $KEYOPT -nodes -keyout "$c/$w.key" -out "$c/$w.csr" \
            -subj "/O=cluster.local/CN=$w.default.svc.cluster.local" >>"$c/openssl.log" 2>&1 || return 1
        printf 'subjectAltName=critical,URI:spiffe://cluster.local/ns/default/sa/%s\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth,clientAuth\n' \
            "$w" >"$c/$w.ext"
        openssl x509 -req -in "$c/$w.csr" -CA "$c/root.pem" -CAkey "$c/root.key" -CAcreateserial -days 2 \
            -sha256 -extfile "$c/$w.ext" -out "$c/$w.pem" >>"$c/openssl.log" 2>&1 || return 1
        # meshproxy --cert-dir: cert-chain.pem, key.pem, root-cert.pem
        mkdir -p "$c/$w.d"
        cp "$c/$w.pem" "$c/$w.d/cert-chain.pem"
        cp "$c/$w.key" "$c/$w.d/key.pem"
        cp "$c/root.pem" "$c/$w.d/root-cert.pem"
        # HAProxy: certificate and key in one file
        cat "$c/$w.pem" "$c/$w.key" >"$c/$w.full.pem"
    done
}

# ---- configs ----

LST='"@type": "type.googleapis.com/envoy.config.listener.v3.Listener"'
CLU='"@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster"'
HCM='"@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"'

# An HttpConnectionManager filter list routing everything to CLUSTER.
hcm_to() { # STAT_PREFIX CLUSTER
    printf '"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": {%s, ' "$HCM"
    printf '"stat_prefix": "%s", "route_config": {"name": "%s", "virtual_hosts": [{"name": "all", ' "$1" "$2"
    printf '"domains": ["*"], "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "%s"}}]}]}}}]' "$2"
}
static_cluster() { # NAME HOST:PORT [TRANSPORT_SOCKET_JSON]
    printf '{%s, "name": "%s", "type": "STATIC", "connect_timeout": "1s", ' "$CLU" "$1"
    printf '"load_assignment": {"cluster_name": "%s", "endpoints": [{"lb_endpoints": [{"endpoint": ' "$1"
    printf '{"address": {"socket_address": {"address": "%s", "port_value": %s}}}}]}]}' "${2%:*}" "${2#*:}"
    [ -n "$3" ] && printf ', "transport_socket": %s' "$3"
    printf '}'
}
listener() { # NAME HOST:PORT BODY
    printf '{%s, "name": "%s", "address": {"socket_address": {"address": "%s", "port_value": %s}}, %s}' \
        "$LST" "$1" "${2%:*}" "${2#*:}" "$3"
}

write_configs() {
    c=$TMP/certs
    out_cluster="outbound|$MTLS_PORT||$FQDN"
    in_cluster="inbound|$MTLS_PORT||"
    # What meshd sends a sidecar for ISTIO_MUTUAL (xds/translate_cluster.c).
    upstream_tls=$(printf '{"name": "envoy.transport_sockets.tls", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext", "common_tls_context": {"tls_certificate_sds_secret_configs": [{"name": "default"}], "combined_validation_context": {"default_validation_context": {"match_typed_subject_alt_names": [{"san_type": "URI", "matcher": {"exact": "%s"}}]}, "validation_context_sds_secret_config": {"name": "ROOTCA"}}, "alpn_protocols": ["istio-peer-exchange", "istio"]}, "sni": "%s"}}' "$SERVER_ID" "$SNI")
    downstream_tls='{"name": "envoy.transport_sockets.tls", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext", "common_tls_context": {"tls_certificate_sds_secret_configs": [{"name": "default"}], "combined_validation_context": {"default_validation_context": {}, "validation_context_sds_secret_config": {"name": "ROOTCA"}}, "alpn_protocols": ["h2", "http/1.1"]}, "require_client_certificate": true}}'
    {
        printf '{"resources": [\n'
        listener outbound_mtls "$(addr_of mesh_mtls)" "\"filter_chains\": [{$(hcm_to outbound_mtls "$out_cluster")}]"
        printf ',\n'
        listener outbound_plain "$(addr_of mesh_plain)" "\"filter_chains\": [{$(hcm_to outbound_plain outbound-plain)}]"
        printf ',\n'
        static_cluster "$out_cluster" "$(tls_addr_of mesh_mtls)" "$upstream_tls"
        printf ',\n'
        static_cluster outbound-plain 127.0.0.93:$PLAIN_PORT
        printf '\n]}\n'
    } >"$TMP/meshcli.json"
    # The server side: Istio's inbound chains (TLS with ALPN istio, TLS with
    # any ALPN, as virtualInbound's catch-all) behind the TLS inspector.
    {
        printf '{"resources": [\n'
        listener inbound_mtls "$(tls_addr_of mesh_mtls)" "\"listener_filters\": [{\"name\": \"envoy.filters.listener.tls_inspector\"}], \"filter_chains\": [
 {\"name\": \"inbound-mtls\", \"filter_chain_match\": {\"transport_protocol\": \"tls\", \"application_protocols\": [\"istio-peer-exchange\", \"istio\"]}, \"transport_socket\": $downstream_tls, $(hcm_to inbound_mtls "$in_cluster")},
 {\"name\": \"inbound-mtls-any\", \"filter_chain_match\": {\"transport_protocol\": \"tls\"}, \"transport_socket\": $downstream_tls, $(hcm_to inbound_mtls_any "$in_cluster")}]"
        printf ',\n'
        listener inbound_plain 127.0.0.93:$PLAIN_PORT "\"filter_chains\": [{$(hcm_to inbound_plain "$in_cluster")}]"
        printf ',\n'
        static_cluster "$in_cluster" "$BE"
        printf '\n]}\n'
    } >"$TMP/meshsrv.json"

    cat >"$TMP/hacli.cfg" <<EOF
global
    nbthread 1
    maxconn 4096
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    http-reuse always
frontend fe
    bind $(addr_of haproxy)
    default_backend be
backend be
    server s1 $(tls_addr_of haproxy) ssl crt $c/client.full.pem ca-file $c/root.pem verify required sni str($FQDN) alpn istio-peer-exchange,istio
EOF
    cat >"$TMP/hasrv.cfg" <<EOF
global
    nbthread 1
    maxconn 4096
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    http-reuse always
frontend fe
    bind $(tls_addr_of haproxy) ssl crt $c/server.full.pem ca-file $c/root.pem verify required alpn h2,http/1.1
    default_backend be
backend be
    server s1 $BE
EOF
    for n in ngcli ngsrv; do
        mkdir -p "$TMP/$n"
        if [ $n = ngcli ]; then
            upstream=$(tls_addr_of nginx)
            listen="listen $(addr_of nginx) backlog=1024;"
            tls_in=""
            tls_out="proxy_pass https://up;
            proxy_ssl_certificate $c/client.pem;
            proxy_ssl_certificate_key $c/client.key;
            proxy_ssl_trusted_certificate $c/root.pem;
            proxy_ssl_verify on;
            proxy_ssl_name $FQDN;
            proxy_ssl_server_name on;
            proxy_ssl_session_reuse on;"
        else
            upstream=$BE
            listen="listen $(tls_addr_of nginx) ssl backlog=1024;"
            tls_in="ssl_certificate $c/server.pem;
        ssl_certificate_key $c/server.key;
        ssl_client_certificate $c/root.pem;
        ssl_verify_client on;"
            tls_out="proxy_pass http://up;"
        fi
        cat >"$TMP/$n.conf" <<EOF
daemon off;
master_process off;
worker_processes 1;
pid $TMP/$n/nginx.pid;
error_log $TMP/$n/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path $TMP/$n/body;
    proxy_temp_path $TMP/$n/proxy;
    upstream up {
        server $upstream;
        keepalive 64;
        keepalive_requests 1000000;
    }
    server {
        $listen
        $tls_in
        location / {
            $tls_out
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
    done
}

start_proc() { # NAME -> sets pid_NAME
    case $1 in
    backend)
        $LOAD_CPU "$BUILD/backend" --listen "$BE" --name x --body-size 1024 >"$TMP/backend.log" 2>&1 &
        ;;
    meshcli | meshsrv)
        if [ "$1" = meshcli ]; then sa=client; else sa=server; fi
        $PROXY_CPU "$BUILD/meshproxy" sidecar --config-file "$TMP/$1.json" --cert-dir "$TMP/certs/$sa.d" \
            --namespace default --service-account $sa --concurrency 1 --no-access-log \
            --stats-port 0 --ready-port 0 --admin-port 0 --log-level warn >"$TMP/$1.log" 2>&1 &
        ;;
    hacli | hasrv)
        $PROXY_CPU haproxy -db -f "$TMP/$1.cfg" >"$TMP/$1.log" 2>&1 &
        ;;
    ngcli | ngsrv)
        $PROXY_CPU nginx -c "$TMP/$1.conf" -e "$TMP/$1/error.log" >"$TMP/$1.log" 2>&1 &
        ;;
    esac
    eval "pid_$1=$!"
    PIDS="$PIDS $!"
}

# Starts a pair (once: mesh_mtls and mesh_plain share theirs) and checks
# that a request through it answers 200 from the backend.
start() {
    for n in $(procs_of "$1"); do
        if [ -z "$(eval echo "\${pid_$n:-}")" ]; then
            start_proc "$n"
        fi
    done
    if ! wait_http "$(addr_of "$1")"; then
        echo "!! $1 did not answer on $(addr_of "$1"); the output of its processes:"
        for n in $(procs_of "$1"); do
            echo "-- $n"
            tail -5 "$TMP/$n.log" 2>/dev/null
            tail -5 "$TMP/$n/error.log" 2>/dev/null
        done
        curl -sS -m 2 -o /dev/null -w 'curl: HTTP %{http_code}\n' "http://$(addr_of "$1")/" 2>&1 | tail -2
        return 1
    fi
    # the response must be the backend's 1 KB body
    size=$(curl -s -m 2 -o /dev/null -w '%{size_download}' "http://$(addr_of "$1")/")
    if [ "$size" != 1024 ]; then
        echo "!! $1 answered with a ${size}-byte body instead of the backend's 1,024 bytes"
        return 1
    fi
    return 0
}

# Runs wrk against NAME once; sets rps p50 p99 kcpu errs.
run_wrk() {
    url="http://$(addr_of "$1")/"
    $LOAD_CPU wrk -t1 -c"$CONNS" -d"${WARM}s" "$url" >/dev/null 2>&1
    if [ "$1" != backend ]; then
        c0=$(pair_ticks "$1")
        (sleep $((SECS / 2)) && pair_rss "$1" >"$TMP/rss_load") &
        sampler=$!
    fi
    $LOAD_CPU wrk -t1 -c"$CONNS" -d"${SECS}s" --latency "$url" >"$TMP/wrk.out" 2>&1
    rps=$(awk '/^Requests\/sec:/ { printf "%.0f", $2 }' "$TMP/wrk.out")
    reqs=$(awk '/requests in/ { print $1 }' "$TMP/wrk.out")
    p50=$(to_ms "$(awk '$1 == "50%" { print $2 }' "$TMP/wrk.out")")
    p99=$(to_ms "$(awk '$1 == "99%" { print $2 }' "$TMP/wrk.out")")
    errs=$(awk '/Non-2xx/ { n += $NF } /Socket errors/ { gsub(/,/, ""); n += $4 + $6 + $8 + $10 } END { print n + 0 }' "$TMP/wrk.out")
    kcpu=""
    rss_load=""
    if [ "$1" != backend ]; then
        c1=$(pair_ticks "$1")
        wait "$sampler"
        rss_load=$(cat "$TMP/rss_load" 2>/dev/null)
        if [ -n "$reqs" ] && [ "$reqs" -gt 0 ]; then
            kcpu=$(awk -v t=$((c1 - c0)) -v hz="$HZ" -v n="$reqs" 'BEGIN { printf "%.4f", t / hz * 1000 / n }')
        fi
    fi
    if [ -z "$rps" ] || [ -z "$reqs" ] || [ "$reqs" -eq 0 ]; then
        echo "!! wrk against $1 failed:"
        cat "$TMP/wrk.out"
        return 1
    fi
    if [ "$errs" -gt 0 ]; then
        echo "!! wrk against $1: $errs errors (non-2xx or socket errors):"
        grep -E 'Non-2xx|Socket errors' "$TMP/wrk.out"
    fi
    return 0
}

# h2load log (start-us, status, duration-us per request) -> "p50 p99" in ms.
percentiles() {
    awk '{ print $3 }' "$1" | sort -n | awk '{ v[NR] = $1 } END {
        if (NR == 0) { print "- -"; exit }
        i50 = int(NR * 0.50); if (i50 < 1) i50 = 1
        i99 = int(NR * 0.99); if (i99 < 1) i99 = 1
        printf "%.3f %.3f\n", v[i50] / 1000, v[i99] / 1000 }'
}

# HTTP/1.1 at a fixed 1,000 requests/s (10 connections x 100/s); sets fp50 fp99 fx_rate.
run_fixed() {
    rm -f "$TMP/fx.log"
    $LOAD_CPU h2load --h1 -t1 -c10 --rps=100 -D "$SECS" --log-file="$TMP/fx.log" "http://$(addr_of "$1")/" \
        >"$TMP/fx.out" 2>&1
    fok=$(awk '/^requests:/ { print $8 }' "$TMP/fx.out")
    fx_rate=$(awk '/^finished in/ { gsub(/,/, ""); printf "%.0f", $4 }' "$TMP/fx.out")
    set -- $(percentiles "$TMP/fx.log")
    fp50=$1
    fp99=$2
    [ -n "$fok" ] && [ "$fok" -gt 0 ]
}

# Handshakes against NAME's server-side mTLS port; MODE full|resumed; sets
# hs_n hs_rate hs_core (per second of the server instance's CPU) hs_out.
run_hs() {
    c=$TMP/certs
    srv=$(eval echo "\$pid_$(server_proc_of "$1")")
    flag=""
    [ "$2" = resumed ] && flag=--resume
    # The client hello each client-side instance sends: meshproxy Istio's SNI
    # and ALPN, HAProxy the service name and the same ALPN, nginx the service
    # name and no ALPN (nginx refuses a hello whose ALPN lacks http/1.1).
    case $1 in
    mesh_mtls) set -- "$1" "$2" --sni "$SNI" --alpn istio-peer-exchange,istio ;;
    haproxy) set -- "$1" "$2" --sni "$FQDN" --alpn istio-peer-exchange,istio ;;
    *) set -- "$1" "$2" --sni "$FQDN" ;;
    esac
    name=$1
    mode=$2
    shift 2
    c0=$(cpu_ticks "$srv")
    $LOAD_CPU "$BUILD/bench/tls_handshakes" --connect "$(tls_addr_of "$name")" --cert "$c/client.pem" \
        --key "$c/client.key" --ca "$c/root.pem" "$@" \
        --seconds "$HS_SECS" --conns "$HS_CONNS" $flag >"$TMP/hs.out" 2>"$TMP/hs.err"
    st=$?
    c1=$(cpu_ticks "$srv")
    hs_out=$(cat "$TMP/hs.out")
    if [ "$mode" = resumed ]; then
        hs_n=$(sed -n 's/.*resumed=\([0-9]*\).*/\1/p' "$TMP/hs.out")
    else
        hs_n=$(sed -n 's/^handshakes=\([0-9]*\).*/\1/p' "$TMP/hs.out")
    fi
    hs_fail=$(sed -n 's/.*failed=\([0-9]*\).*/\1/p' "$TMP/hs.out")
    hs_rate=$(sed -n 's/.*rate=\([0-9]*\).*/\1/p' "$TMP/hs.out")
    hs_core=$(awk -v n="${hs_n:-0}" -v t=$((c1 - c0)) -v hz="$HZ" 'BEGIN { if (t > 0) printf "%.0f", n / (t / hz); else print "-" }')
    hs_cpu=$(awk -v t=$((c1 - c0)) -v hz="$HZ" -v s="$HS_SECS" 'BEGIN { printf "%.0f", t / hz / s * 100 }')
    if [ $st -ne 0 ] || [ "${hs_fail:-1}" -gt 0 ]; then
        echo "!! handshakes ($mode) against $name at $(tls_addr_of "$name"): $hs_out"
        cat "$TMP/hs.err"
        return 1
    fi
    return 0
}

# mTLS is really required: a client without a certificate gets no 200 from
# the server-side instance; one with the client certificate does.
check_mtls() {
    c=$TMP/certs
    sni=$FQDN
    alpn=""
    [ "$1" = mesh_mtls ] && sni=$SNI
    [ "$1" != nginx ] && alpn="-alpn istio-peer-exchange,istio"
    req='GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'
    # shellcheck disable=SC2086
    with=$( (printf "$req"; sleep 1) | timeout 5 openssl s_client -quiet -connect "$(tls_addr_of "$1")" \
        -servername "$sni" $alpn -CAfile "$c/root.pem" -cert "$c/client.pem" -key "$c/client.key" 2>/dev/null | head -1)
    # shellcheck disable=SC2086
    without=$( (printf "$req"; sleep 1) | timeout 5 openssl s_client -quiet -connect "$(tls_addr_of "$1")" \
        -servername "$sni" $alpn -CAfile "$c/root.pem" 2>/dev/null | head -1)
    case $with in
    *" 200 "*) ;;
    *)
        echo "!! $1: a request over mTLS with the client certificate did not get 200 (got: ${with:-nothing})"
        return 1
        ;;
    esac
    case $without in
    *" 200 "*)
        echo "!! $1: the server-side instance answered 200 to a client without a certificate"
        return 1
        ;;
    esac
    return 0
}

# ---- the run ----

make_certs || {
    echo "!! openssl could not make the certificates:"
    tail -5 "$TMP/certs/openssl.log"
    exit 1
}
write_configs
start_proc backend
if ! wait_http "$BE"; then
    echo "!! the backend did not answer on $BE"
    exit 1
fi
started=""
for p in $PEERS; do
    case $p in
    mesh_mtls | mesh_plain | haproxy | nginx) ;;
    *)
        echo "!! unknown pair: $p (known: mesh_mtls mesh_plain haproxy nginx)"
        failed=1
        continue
        ;;
    esac
    if start "$p"; then
        started="$started $p"
    else
        failed=1
    fi
done
for p in $started; do
    [ "$p" = mesh_plain ] && continue
    if check_mtls "$p"; then
        echo "checked: $p's server side answers a client with the certificate and refuses one without"
    else
        failed=1
    fi
done
sleep 1
for p in $started; do
    eval "idle_$p=$(pair_rss "$p")"
done

# HTTP/1.1 throughput: the backend alone first (the ceiling), then each pair,
# the order rotated between runs.
order="$started"
r=1
while [ $r -le "$RUNS" ]; do
    for p in backend $order; do
        if run_wrk "$p"; then
            eval "rps_${p}_$r=$rps p50_${p}_$r=$p50 p99_${p}_$r=$p99 kcpu_${p}_$r=$kcpu"
            eval "load_${p}_$r=${rss_load:-0} errs_${p}_$r=$errs"
            [ "$errs" -gt 0 ] && failed=1
        else
            failed=1
        fi
    done
    first=${order%% *}
    order="${order#* } $first"
    order=${order# }
    r=$((r + 1))
done

# The best run of each; the spread (worst/best) says how disturbed the runs were.
for p in backend $started; do
    b=0
    w=0
    br=1
    r=1
    while [ $r -le "$RUNS" ]; do
        v=$(eval echo "\${rps_${p}_$r:-0}")
        if [ "$v" -gt "$b" ]; then
            b=$v
            br=$r
        fi
        if [ $w -eq 0 ] || [ "$v" -lt "$w" ]; then
            w=$v
        fi
        r=$((r + 1))
    done
    eval "best_$p=$b worst_$p=$w bestrun_$p=$br"
done
mtls_rps=${best_mesh_mtls:-0}
plain_rps=${best_mesh_plain:-0}

echo
echo "HTTP/1.1 through the pair, wrk -t1 -c$CONNS -d${SECS}s (best of $RUNS; every run listed)"
printf '%-10s %9s %-19s %7s %9s %9s %8s %8s %11s %14s\n' pair "req/s" "runs" spread "vs mtls" "vs plain" "p50 ms" "p99 ms" "vCPU/krps" "RSS idle/load"
for p in backend $started; do
    b=$(eval echo "\$best_$p")
    br=$(eval echo "\$bestrun_$p")
    runs=""
    r=1
    while [ $r -le "$RUNS" ]; do
        runs="$runs${runs:+/}$(eval echo "\${rps_${p}_$r:--}")"
        r=$((r + 1))
    done
    spread=$(awk -v a="$(eval echo "\$worst_$p")" -v b="$b" 'BEGIN { if (b > 0) printf "%.0f%%", (b - a) * 100 / b; else print "-" }')
    vs_mtls=$(awk -v a="$b" -v b="$mtls_rps" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }')
    vs_plain=$(awk -v a="$b" -v b="$plain_rps" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }')
    p50=$(eval echo "\${p50_${p}_$br:--}")
    p99=$(eval echo "\${p99_${p}_$br:--}")
    kc=$(eval echo "\${kcpu_${p}_$br:--}")
    if [ "$p" = backend ]; then
        mem="-"
        vs_mtls="(direct)"
        vs_plain="-"
        kc="-"
    else
        mem="$(mb "$(eval echo "\$idle_$p")")/$(mb "$(eval echo "\${load_${p}_$br:-0}")") MB"
    fi
    printf '%-10s %9s %-19s %7s %9s %9s %8s %8s %11s %14s\n' "$p" "$b" "$runs" "$spread" "$vs_mtls" "$vs_plain" "$p50" "$p99" "$kc" "$mem"
done
echo "(spread: (best - worst) / best over the runs; vCPU/krps: CPU seconds of both instances of the pair per"
echo " 1,000 requests; RSS: both instances together; mesh_mtls and mesh_plain are the same two processes)"

# Latency at a fixed rate: h2load --h1 --rps paces the requests.
echo
echo "HTTP/1.1 at a fixed 1,000 requests/s (h2load --h1 -c10 --rps=100, ${SECS} s, $RUNS runs): latency added to the backend's"
printf '%-10s %8s %-15s %-15s %12s %12s\n' pair "req/s" "p50 ms (runs)" "p99 ms (runs)" "added p50" "added p99"
r=1
while [ $r -le "$RUNS" ]; do
    for p in backend $started; do
        if run_fixed "$p"; then
            eval "fx50_${p}_$r=$fp50 fx99_${p}_$r=$fp99 fxrate_${p}_$r=$fx_rate"
        else
            echo "!! h2load --h1 --rps against $p failed:"
            tail -5 "$TMP/fx.out"
            failed=1
        fi
    done
    r=$((r + 1))
done
# Per pair: the lower of the runs' p50 and p99 (the least disturbed), all listed.
for p in backend $started; do
    l50=""
    l99=""
    a50=""
    a99=""
    r=1
    while [ $r -le "$RUNS" ]; do
        v50=$(eval echo "\${fx50_${p}_$r:-}")
        v99=$(eval echo "\${fx99_${p}_$r:-}")
        l50="$l50${l50:+/}${v50:--}"
        l99="$l99${l99:+/}${v99:--}"
        r=$((r + 1))
    done
    m50=$(echo "$l50" | tr '/' '\n' | grep -v '^-$' | sort -n | head -1)
    m99=$(echo "$l99" | tr '/' '\n' | grep -v '^-$' | sort -n | head -1)
    eval "fxm50_$p=$m50 fxm99_$p=$m99"
    if [ "$p" = backend ]; then
        a50="-"
        a99="-"
    elif [ -n "$m50" ] && [ -n "$fxm50_backend" ]; then
        a50=$(awk -v a="$m50" -v b="$fxm50_backend" 'BEGIN { printf "%.3f", a - b }')
        a99=$(awk -v a="$m99" -v b="$fxm99_backend" 'BEGIN { printf "%.3f", a - b }')
    fi
    eval "fxa50_$p=$a50 fxa99_$p=$a99"
    printf '%-10s %8s %-15s %-15s %12s %12s\n' "$p" "$(eval echo "\${fxrate_${p}_1:--}")" "$l50" "$l99" "${a50:--}" "${a99:--}"
done
echo "(added = the lowest of the runs through the pair minus the lowest direct; two hops are added)"

# Handshakes per second of the server-side instance's CPU.
echo
echo "TLS 1.3 mTLS handshakes against the server-side instance (build/bench/tls_handshakes, $HS_CONNS client threads,"
echo "${HS_SECS} s, client certificate, SNI and ALPN as the client sidecar sends them, no request; $RUNS runs)"
printf '%-10s %-8s %-15s %-15s %-17s %s\n' server mode "per core" "per s (wall)" "server CPU" "runs (per core)"
for p in $started; do
    [ "$p" = mesh_plain ] && continue
    for mode in full resumed; do
        runs=""
        best=0
        bestw=""
        bestcpu=""
        r=1
        while [ $r -le "$RUNS" ]; do
            if run_hs "$p" "$mode"; then
                runs="$runs${runs:+/}$hs_core"
                if [ "$hs_core" != "-" ] && [ "$hs_core" -gt "$best" ]; then
                    best=$hs_core
                    bestw=$hs_rate
                    bestcpu=$hs_cpu
                fi
            else
                runs="$runs${runs:+/}-"
                failed=1
            fi
            r=$((r + 1))
        done
        eval "hs_${p}_$mode=$best hsw_${p}_$mode=${bestw:-} hsruns_${p}_$mode=$runs"
        printf '%-10s %-8s %-15s %-15s %-17s %s\n' "$p" "$mode" "$best" "${bestw:--}" "${bestcpu:--}% of a CPU" "$runs"
    done
done
echo "(per core: handshakes / CPU seconds of the server-side instance over the run; resumed: TLS 1.3 tickets"
echo " (PSK with ECDHE); every handshake verifies the client certificate against the root)"

# Machine-readable lines.
echo
echo "mtls_cpus=$(nproc) mtls_runs=$RUNS mtls_conns=$CONNS mtls_seconds=$SECS mtls_key=$KEY"
for p in backend $started; do
    br=$(eval echo "\$bestrun_$p")
    r=1
    while [ $r -le "$RUNS" ]; do
        echo "mtls_${p}_run${r}_rps=$(eval echo "\${rps_${p}_$r:-}") mtls_${p}_run${r}_vcpu_per_krps=$(eval echo "\${kcpu_${p}_$r:-}")"
        r=$((r + 1))
    done
    echo "mtls_${p}_rps=$(eval echo "\$best_$p") mtls_${p}_worst_rps=$(eval echo "\$worst_$p")"
    echo "mtls_${p}_p50_ms=$(eval echo "\${p50_${p}_$br:-}") mtls_${p}_p99_ms=$(eval echo "\${p99_${p}_$br:-}")"
    echo "mtls_${p}_errors=$(eval echo "\${errs_${p}_$br:-}")"
    echo "mtls_${p}_fixed1k_p50_ms=$(eval echo "\${fxm50_$p:-}") mtls_${p}_fixed1k_p99_ms=$(eval echo "\${fxm99_$p:-}") mtls_${p}_fixed1k_added_p50_ms=$(eval echo "\${fxa50_$p:-}") mtls_${p}_fixed1k_added_p99_ms=$(eval echo "\${fxa99_$p:-}")"
    [ "$p" = backend ] && continue
    echo "mtls_${p}_vs_mesh_mtls=$(awk -v a="$(eval echo "\$best_$p")" -v b="$mtls_rps" 'BEGIN { if (b > 0) printf "%.3f", a / b }')"
    echo "mtls_${p}_vcpu_per_krps=$(eval echo "\${kcpu_${p}_$br:-}")"
    echo "mtls_${p}_rss_idle_kb=$(eval echo "\$idle_$p") mtls_${p}_rss_load_kb=$(eval echo "\${load_${p}_$br:-}")"
    [ "$p" = mesh_plain ] && continue
    for mode in full resumed; do
        echo "mtls_${p}_handshakes_${mode}_per_core=$(eval echo "\${hs_${p}_$mode:-}") mtls_${p}_handshakes_${mode}_per_s=$(eval echo "\${hsw_${p}_$mode:-}") mtls_${p}_handshakes_${mode}_runs=$(eval echo "\${hsruns_${p}_$mode:-}")"
    done
done
if [ "$mtls_rps" -gt 0 ] && [ "$plain_rps" -gt 0 ]; then
    echo "mtls_cost_throughput=$(awk -v a="$mtls_rps" -v b="$plain_rps" 'BEGIN { printf "%.3f", 1 - a / b }') (the share of the plaintext pair's requests/s that mTLS costs)"
    echo "mtls_cost_vcpu_per_krps=$(awk -v a="$(eval echo "\${kcpu_mesh_mtls_${bestrun_mesh_mtls}:-0}")" -v b="$(eval echo "\${kcpu_mesh_plain_${bestrun_mesh_plain}:-0}")" 'BEGIN { printf "%.4f", a - b }')"
fi
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
exit $failed
