#!/bin/sh
# Interop of common/grpc with a gRPC implementation written elsewhere
# (@grpc/grpc-js on Node.js): a grpc-js client calls the meshd test server
# and the meshd client calls a grpc-js server, over plaintext and TLS.
# The meshd side is build/test/common/test_grpc in its --serve/--call modes;
# the Node side is test/common/grpc_interop (npm ci --prefix installs it).
# Prints "ok ..." / "not ok ..." lines; exits non-zero on any failure.
set -u
BUILD=${MESH_BUILD:-build}
BIN=$BUILD/test/common/test_grpc
DIR=test/common/grpc_interop

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    echo "not ok grpc interop: node and npm are required (Debian: apt-get install nodejs npm)"
    exit 1
fi
if [ ! -x "$BIN" ]; then
    echo "not ok grpc interop: $BIN is not built (make $BIN)"
    exit 1
fi
if [ ! -d "$DIR/node_modules/@grpc/grpc-js" ] || [ ! -d "$DIR/node_modules/@grpc/proto-loader" ]; then
    if ! npm ci --prefix "$DIR" --no-audit --no-fund >/dev/null 2>&1; then
        echo "not ok grpc interop: npm ci --prefix $DIR failed (is the npm registry reachable?)"
        exit 1
    fi
fi

tmp=$(mktemp -d)
pids=""
cleanup() {
    exec 4>&- 5>&- 6>&- 7>&- 2>/dev/null
    for p in $pids; do kill "$p" 2>/dev/null; done
    for p in $pids; do wait "$p" 2>/dev/null; done
    rm -rf "$tmp"
}
trap cleanup EXIT INT TERM

# Waits for a port file written by a server; prints the port.
wait_port() {
    i=0
    while [ ! -s "$1" ] && [ $i -lt 200 ]; do
        sleep 0.05
        i=$((i + 1))
    done
    [ -s "$1" ] && cat "$1"
}

fail=0
"$BIN" --certs "$tmp" || { echo "not ok grpc interop: cannot write certificates"; exit 1; }

# Servers run until their stdin (a fifo held open here) closes.
mkfifo "$tmp/c1" "$tmp/c2" "$tmp/c3" "$tmp/c4"
"$BIN" --serve "$tmp" <"$tmp/c1" >"$tmp/meshd.log" 2>&1 &
pids="$pids $!"
exec 4>"$tmp/c1"
"$BIN" --serve "$tmp" --tls <"$tmp/c2" >"$tmp/meshd-tls.log" 2>&1 &
pids="$pids $!"
exec 5>"$tmp/c2"
node "$DIR/interop.js" server "$tmp" <"$tmp/c3" >"$tmp/node.log" 2>&1 &
pids="$pids $!"
exec 6>"$tmp/c3"
node "$DIR/interop.js" server "$tmp" --tls <"$tmp/c4" >"$tmp/node-tls.log" 2>&1 &
pids="$pids $!"
exec 7>"$tmp/c4"

port=$(wait_port "$tmp/port")
port_tls=$(wait_port "$tmp/port-tls")
nport=$(wait_port "$tmp/node-port")
nport_tls=$(wait_port "$tmp/node-port-tls")
if [ -z "$port" ] || [ -z "$port_tls" ] || [ -z "$nport" ] || [ -z "$nport_tls" ]; then
    echo "not ok grpc interop: a server did not start"
    cat "$tmp"/*.log
    exit 1
fi

# grpc-js client -> meshd server
node "$DIR/interop.js" client "127.0.0.1:$port" || fail=1
node "$DIR/interop.js" client "127.0.0.1:$port_tls" --tls "$tmp/ca.pem" || fail=1
# meshd client -> grpc-js server
"$BIN" --call "127.0.0.1:$nport" || fail=1
"$BIN" --call "127.0.0.1:$nport_tls" --tls "$tmp" || fail=1

# Every server is still up and stops cleanly when told.
exec 4>&- 5>&- 6>&- 7>&-
for p in $pids; do
    if ! wait "$p"; then
        echo "not ok grpc interop: server process $p exited with an error"
        cat "$tmp"/*.log
        fail=1
    fi
done
pids=""
[ $fail -eq 0 ] && echo "ok grpc interop: all servers stopped cleanly"
exit $fail
