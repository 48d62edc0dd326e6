#!/bin/sh
# Traffic capture as an injected pod gets it: `meshproxy init` with the
# sidecar injector's flags inside a network namespace ("pod") joined by a
# veth pair to a second one ("peer"). Checks the nat table iptables-save
# shows, then real connections: outbound to 10.99.0.1:80 lands on 15001 with
# its original destination; the proxy's UID 1337, an excluded CIDR and
# localhost go straight through; inbound to 10.99.0.2:8080 lands on 15006 and
# an excluded inbound port does not; a second run changes nothing. Then the
# sidecar with the injector's flags and `meshproxy wait` in the same pod.
# Needs root, iproute2, iptables and python3; skipped when not root.
# Prints "ok NAME" / "not ok NAME" per check.
BUILD=${MESH_BUILD:-build}
case "$BUILD" in /*) ;; *) BUILD="$(pwd)/$BUILD" ;; esac
PROXY="$BUILD/meshproxy"

if [ "$(id -u)" -ne 0 ]; then
    echo "# skip test_capture: needs root (network namespaces and iptables)"
    exit 0
fi
if [ ! -x "$PROXY" ]; then
    echo "not ok meshproxy_built ($PROXY missing)"
    exit 1
fi
PATH="$PATH:/usr/sbin:/sbin"
for tool in ip iptables-restore iptables-save; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "not ok capture_tools_installed ($tool missing: Debian packages iproute2 and iptables)"
        exit 1
    fi
done
# The system python3: it stays readable after the client drops to UID 1337.
PY=/usr/bin/python3
[ -x "$PY" ] || PY=$(command -v python3 || true)
if [ -z "$PY" ]; then
    echo "not ok capture_tools_installed (python3 missing)"
    exit 1
fi

tmp=$(mktemp -d /tmp/meshcap.XXXXXX)
pod="meshcap-pod-$$"
peer="meshcap-peer-$$"
pod6="meshcap-pod6-$$"
pids=""
cleanup() {
    for p in $pids; do kill "$p" 2>/dev/null; done
    for p in $pids; do wait "$p" 2>/dev/null; done
    ip netns del "$pod" 2>/dev/null
    ip netns del "$peer" 2>/dev/null
    ip netns del "$pod6" 2>/dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

check() {
    name=$1
    shift
    if "$@" >/dev/null 2>&1; then echo "ok $name"; else echo "not ok $name"; fi
}

# listen HOST PORT FILE: records "orig=IP:PORT to=IP:PORT" per accepted
# connection (orig from SO_ORIGINAL_DST, "none" without conntrack NAT).
# connect IP PORT [UID]: one TCP connection, as UID if given.
cat >"$tmp/cap.py" <<'PY'
import os, socket, struct, sys
mode = sys.argv[1]
if mode == "listen":
    host, port, out = sys.argv[2], int(sys.argv[3]), sys.argv[4]
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, port))
    s.listen(16)
    open(out + ".up", "w").close()
    while True:
        c, _ = s.accept()
        try:
            raw = c.getsockopt(socket.SOL_IP, 80, 16)  # SO_ORIGINAL_DST
            oport, oip = struct.unpack("!2xH4s8x", raw)
            orig = "%s:%d" % (socket.inet_ntoa(oip), oport)
        except OSError:
            orig = "none"
        local = c.getsockname()
        with open(out, "a") as f:
            f.write("orig=%s to=%s:%d\n" % (orig, local[0], local[1]))
        c.close()
else:
    ip, port = sys.argv[2], int(sys.argv[3])
    if len(sys.argv) > 4:
        uid = int(sys.argv[4])
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
    c = socket.socket()
    c.settimeout(3)
    c.connect((ip, port))
    c.close()
PY
chmod 0755 "$tmp" "$tmp/cap.py"

listen() { # NETNS HOST PORT NAME
    ip netns exec "$1" "$PY" "$tmp/cap.py" listen "$2" "$3" "$tmp/$4" 2>>"$tmp/listen.err" &
    pids="$pids $!"
    i=0
    while [ ! -e "$tmp/$4.up" ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
}
conn() { # NETNS IP PORT [UID]
    ip netns exec "$1" "$PY" "$tmp/cap.py" connect "$2" "$3" $4
}
lines() { # NAME: connections recorded so far
    if [ -e "$tmp/$1" ]; then wc -l <"$tmp/$1"; else echo 0; fi
}

# Two namespaces: pod 10.99.0.2, peer 10.99.0.1 and 10.99.0.3.
ip netns add "$pod" && ip netns add "$peer" &&
    ip -n "$pod" link add eth0 type veth peer name eth0 netns "$peer" &&
    ip -n "$pod" addr add 10.99.0.2/24 dev eth0 &&
    ip -n "$peer" addr add 10.99.0.1/24 dev eth0 &&
    ip -n "$peer" addr add 10.99.0.3/24 dev eth0 &&
    ip -n "$pod" link set lo up && ip -n "$pod" link set eth0 up &&
    ip -n "$peer" link set lo up && ip -n "$peer" link set eth0 up &&
    ip -n "$pod" route add default via 10.99.0.1
check netns_setup test $? -eq 0

# The injector's arguments (webhook/inject.c), with an excluded CIDR.
INIT_ARGS="init -p 15001 -z 15006 -u 1337 -g 1337 -m REDIRECT -i * -x 10.99.0.3/32 -b * -d 15090,15021,15020"

# Refusals and the dry run change nothing.
set -f
ip netns exec "$pod" "$PROXY" init -p 15001 -z 15006 -m REDIRECT -i '*' -x 10.99.0.300/32 >"$tmp/out" 2>&1
check bad_cidr_exits_2 test $? -eq 2
check bad_cidr_names_flag_and_value grep -q -- '-x: "10.99.0.300/32" is not a CIDR' "$tmp/out"
ip netns exec "$pod" "$PROXY" init -m TPROXY >"$tmp/out" 2>&1
check tproxy_refused_clearly grep -q -- '-m: "TPROXY" is not supported' "$tmp/out"
ip netns exec "$pod" "$PROXY" $INIT_ARGS --dry-run >"$tmp/dry" 2>&1
check dry_run_exits_0 test $? -eq 0
check dry_run_prints_rules grep -qx -- '-A ISTIO_OUTPUT -j ISTIO_REDIRECT' "$tmp/dry"
ip netns exec "$pod" "$PROXY" $INIT_ARGS --skip-rule-apply --run-validation >"$tmp/out" 2>&1
check validation_fails_without_rules test $? -eq 1
check validation_failure_explained grep -q 'did not arrive on 127.0.0.1:15001 within 3 s: outbound capture is not working' \
    "$tmp/out"
ip netns exec "$pod" iptables-save -t nat >"$tmp/save0" 2>&1
check refusals_and_dry_run_apply_nothing sh -c "! grep -q ISTIO '$tmp/save0'"

# Apply, and check with a test connection as istio-iptables --run-validation does.
ip netns exec "$pod" "$PROXY" $INIT_ARGS --run-validation >"$tmp/init.out" 2>&1
rc=$?
set +f
check init_applies test $rc -eq 0
[ $rc -eq 0 ] || sed 's/^/# /' "$tmp/init.out"
check init_leaves_ipv6_alone grep -q 'no IPv6 range given' "$tmp/init.out"
check init_validation_passes grep -q 'validation: a connection to 198.51.100.1:80 arrived on 127.0.0.1:15001' \
    "$tmp/init.out"
ip netns exec "$pod" iptables-save -t nat >"$tmp/save1"
for rule in \
    '-A PREROUTING -p tcp -j ISTIO_INBOUND' \
    '-A OUTPUT -p tcp -j ISTIO_OUTPUT' \
    '-A ISTIO_INBOUND -p tcp -m tcp --dport 15008 -j RETURN' \
    '-A ISTIO_INBOUND -p tcp -m tcp --dport 15021 -j RETURN' \
    '-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT' \
    '-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006' \
    '-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001' \
    '-A ISTIO_OUTPUT -s 127.0.0.6/32 -o lo -j RETURN' \
    '-A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN' \
    '-A ISTIO_OUTPUT -m owner --gid-owner 1337 -j RETURN' \
    '-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN' \
    '-A ISTIO_OUTPUT -d 10.99.0.3/32 -j RETURN' \
    '-A ISTIO_OUTPUT -j ISTIO_REDIRECT'; do
    if grep -qxF -- "$rule" "$tmp/save1"; then echo "ok nat_has: $rule"; else echo "not ok nat_has: $rule"; fi
done

# Listeners: the proxy's capture ports in the pod, a server in the peer.
listen "$pod" 127.0.0.1 15001 out15001
listen "$pod" 0.0.0.0 15006 in15006
listen "$pod" 0.0.0.0 15020 direct15020
listen "$pod" 127.0.0.1 9000 local9000
listen "$peer" 0.0.0.0 80 peer80
check listeners_up test -e "$tmp/out15001.up" -a -e "$tmp/in15006.up" -a -e "$tmp/direct15020.up" \
    -a -e "$tmp/local9000.up" -a -e "$tmp/peer80.up"

# Outbound from the application (root here, not 1337): captured on 15001.
conn "$pod" 10.99.0.1 80
check outbound_connects test $? -eq 0
check outbound_lands_on_15001 grep -q 'orig=10.99.0.1:80 to=127.0.0.1:15001' "$tmp/out15001"
check outbound_not_at_peer test "$(lines peer80)" -eq 0

# The proxy's own UID goes straight out.
before=$(lines out15001)
conn "$pod" 10.99.0.1 80 1337
check uid_1337_connects test $? -eq 0
check uid_1337_reaches_peer grep -q 'to=10.99.0.1:80' "$tmp/peer80"
check uid_1337_not_captured test "$(lines out15001)" -eq "$before"

# An excluded CIDR goes straight out.
conn "$pod" 10.99.0.3 80
check excluded_cidr_connects test $? -eq 0
check excluded_cidr_reaches_peer grep -q 'to=10.99.0.3:80' "$tmp/peer80"
check excluded_cidr_not_captured test "$(lines out15001)" -eq "$before"

# Localhost stays direct.
conn "$pod" 127.0.0.1 9000
check localhost_direct grep -q 'to=127.0.0.1:9000' "$tmp/local9000"
check localhost_not_captured test "$(lines out15001)" -eq "$before"

# Inbound from the peer: captured on 15006, except the excluded ports.
conn "$peer" 10.99.0.2 8080
check inbound_connects test $? -eq 0
check inbound_lands_on_15006 grep -q 'orig=10.99.0.2:8080 to=10.99.0.2:15006' "$tmp/in15006"
conn "$peer" 10.99.0.2 15020
check excluded_inbound_port_direct grep -q 'to=10.99.0.2:15020' "$tmp/direct15020"
check excluded_inbound_port_not_captured test "$(grep -c 15020 "$tmp/in15006")" -eq 0

# Running init again (an init container restart) leaves one copy of each rule.
set -f
ip netns exec "$pod" "$PROXY" $INIT_ARGS >"$tmp/init2.out" 2>&1
check init_rerun_succeeds test $? -eq 0
set +f
ip netns exec "$pod" iptables-save -t nat >"$tmp/save2"
grep -v '^#' "$tmp/save1" >"$tmp/s1"
grep -v '^#' "$tmp/save2" >"$tmp/s2"
check init_rerun_same_rules cmp -s "$tmp/s1" "$tmp/s2"
n=$(lines out15001)
conn "$pod" 10.99.0.1 80
check capture_after_rerun test "$(lines out15001)" -eq $((n + 1))

# The sidecar with the injector's arguments, then `meshproxy wait`.
cat >"$tmp/proxy.json" <<'JSON'
{"resources": [
 {"@type": "type.googleapis.com/envoy.config.listener.v3.Listener", "name": "in",
  "address": {"socket_address": {"address": "127.0.0.1", "port_value": 8081}},
  "filter_chains": [{"filters": [{"name": "hcm", "typed_config": {
    "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
    "stat_prefix": "in", "rds": {"route_config_name": "r"}}}]}]},
 {"@type": "type.googleapis.com/envoy.config.route.v3.RouteConfiguration", "name": "r",
  "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "app"}}]}]},
 {"@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster", "name": "app", "type": "EDS"},
 {"@type": "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment", "clusterName": "app",
  "endpoints": [{"lbEndpoints": [{"endpoint": {"address": {"socketAddress": {"address": "127.0.0.1", "portValue": 9000}}}}]}]}
]}
JSON
ip netns exec "$pod" "$PROXY" wait --timeout-seconds 1 --period-ms 100 >"$tmp/wait0" 2>&1
check wait_times_out_before_proxy test $? -eq 1
check wait_timeout_message grep -q '127.0.0.1:15021/healthz/ready: not ready after 1 s' "$tmp/wait0"
POD_NAMESPACE=demo ip netns exec "$pod" "$PROXY" sidecar --domain '$(POD_NAMESPACE).svc.cluster.local' \
    --proxyLogLevel=warning --proxyComponentLogLevel=misc:error --config-file "$tmp/proxy.json" \
    --stats-port 0 --admin-port 0 --no-access-log >"$tmp/sidecar.log" 2>&1 &
sidecar=$!
pids="$pids $sidecar"
ip netns exec "$pod" "$PROXY" wait --timeout-seconds 10 >"$tmp/wait1" 2>&1
check wait_returns_when_ready test $? -eq 0
check wait_says_ready grep -q 'is ready' "$tmp/wait1"
check sidecar_accepts_injector_flags kill -0 "$sidecar"
check sidecar_domain_matches_namespace sh -c "! grep -q -- '--domain' '$tmp/sidecar.log'"
kill "$sidecar" 2>/dev/null
wait "$sidecar" 2>/dev/null

ip netns exec "$pod" "$PROXY" sidecar --proxyLogLevel=verbose --config-file "$tmp/proxy.json" >"$tmp/out" 2>&1
check bad_proxy_log_level_exits_2 test $? -eq 2
check bad_proxy_log_level_named grep -q -- '--proxyLogLevel: unknown level "verbose"' "$tmp/out"

# Without --xds-addr the sidecar asks PROXY_CONFIG's discoveryAddress.
PROXY_CONFIG='{"discoveryAddress":"127.0.0.1:15010"}' ip netns exec "$pod" "$PROXY" sidecar \
    --domain default.svc.cluster.local --proxyLogLevel=info --stats-port 0 --admin-port 0 --ready-port 0 \
    >"$tmp/xds.log" 2>&1 &
xds=$!
pids="$pids $xds"
i=0
while ! grep -q 'xDS from' "$tmp/xds.log" 2>/dev/null && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
check sidecar_uses_proxy_config_discovery grep -q 'xDS from 127.0.0.1:15010' "$tmp/xds.log"
kill "$xds" 2>/dev/null
wait "$xds" 2>/dev/null

# IPv6 ranges add the ip6tables rules and the passthrough address ::6 on lo.
ip netns add "$pod6" && ip -n "$pod6" link set lo up
set -f
ip netns exec "$pod6" "$PROXY" init -p 15001 -z 15006 -u 1337 -g 1337 -m REDIRECT -i '*' -x 10.0.0.1/32,fd00::/8 \
    -b '' -d 15090,15021,15020 >"$tmp/init6.out" 2>&1
check init_ipv6_applies test $? -eq 0
set +f
ip netns exec "$pod6" ip6tables-save -t nat >"$tmp/save6" 2>&1
check ipv6_nat_excludes_range grep -qxF -- '-A ISTIO_OUTPUT -d fd00::/8 -j RETURN' "$tmp/save6"
check ipv6_nat_captures_rest grep -qxF -- '-A ISTIO_OUTPUT -j ISTIO_REDIRECT' "$tmp/save6"
check ipv6_nat_has_no_ipv4 sh -c "! grep -q '10.0.0.1' '$tmp/save6'"
check ipv6_passthrough_address sh -c "ip -n '$pod6' -6 addr show dev lo | grep -q 'inet6 ::6/128'"
ip netns exec "$pod6" iptables-save -t nat >"$tmp/save6v4" 2>&1
check no_inbound_capture_without_ports sh -c "! grep -q -- '-j ISTIO_INBOUND' '$tmp/save6v4'"
set -f
ip netns exec "$pod6" "$PROXY" init -p 15001 -z 15006 -u 1337 -g 1337 -m REDIRECT -i '*' -x 10.0.0.1/32,fd00::/8 \
    -b '' -d 15090,15021,15020 >"$tmp/init6b.out" 2>&1
check init_ipv6_rerun_succeeds test $? -eq 0
set +f
ip netns exec "$pod6" ip6tables-save -t nat | grep -v '^#' >"$tmp/save6b"
grep -v '^#' "$tmp/save6" >"$tmp/save6a"
check init_ipv6_rerun_same_rules cmp -s "$tmp/save6a" "$tmp/save6b"
