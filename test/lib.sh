# test/lib.sh: what the shell tests share. Source it first thing:
#   . "$(dirname "$0")/../lib.sh"        (test/AREA/test_x.sh)
#   . "$(dirname "$0")/../../test/lib.sh" (e2e/NAME/test_x.sh)
# It sets BUILD (from BUILD or MESH_BUILD, else build) and T, a temporary
# directory removed on exit, when every process started with `start` is
# stopped too. Checks print "ok NAME" / "not ok NAME - DETAIL"; end the
# script with `finish` for its exit status.
BUILD=${BUILD:-${MESH_BUILD:-build}}
T=$(mktemp -d /tmp/meshtest.XXXXXX) || exit 1
_pids=""
_fails=0
_cleanup() {
    for p in $_pids; do kill "$p" 2>/dev/null; done
    wait 2>/dev/null
    [ -n "${KEEP:-}" ] && cp -r "$T" "$T.kept" && echo "logs kept in $T.kept"
    rm -rf "$T"
}
trap _cleanup EXIT

ok() { echo "ok $1"; }
notok() {
    echo "not ok $1 - $2"
    _fails=$((_fails + 1))
}
# check NAME DETAIL COMMAND...: ok when the command succeeds
check() {
    _n=$1
    _d=$2
    shift 2
    if "$@"; then ok "$_n"; else notok "$_n" "$_d"; fi
}
# start NAME COMMAND...: in the background, output in $T/NAME.log
start() {
    _n=$1
    shift
    "$@" >"$T/$_n.log" 2>&1 &
    echo $! >"$T/$_n.pid"
    _pids="$_pids $!"
}
stop() { kill "$(cat "$T/$1.pid")" 2>/dev/null; }
# wait_url URL [TENTHS]: until URL answers 2xx (10 s by default)
wait_url() {
    _i=0
    until curl -sf -o /dev/null -m 1 "$1" 2>/dev/null; do
        _i=$((_i + 1))
        [ $_i -lt "${2:-100}" ] || return 1
        sleep 0.1
    done
}
finish() { [ $_fails -eq 0 ]; }
