#!/bin/sh
# meshd as a user runs it: flags, --once, and following a directory's changes
# until SIGTERM. Prints "ok NAME" / "not ok NAME". Waits are bounded polls.
BUILD=${MESH_BUILD:-build}
MESHD="$BUILD/meshd"
tmp=$(mktemp -d /tmp/meshd-test.XXXXXX)
pid=
cleanup() {
    [ -n "$pid" ] && kill "$pid" 2>/dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT

check() { # NAME COMMAND...: ok when the command succeeds
    name=$1
    shift
    if "$@"; then echo "ok $name"; else echo "not ok $name"; fi
}

status_is() { # WANT COMMAND...
    want=$1
    shift
    "$@" >"$tmp/out" 2>&1
    [ $? -eq "$want" ] || { cat "$tmp/out"; return 1; }
}

# Waits up to 5 s for a line matching PATTERN in the log.
wait_log() {
    i=0
    while [ $i -lt 50 ]; do
        grep -q "$1" "$tmp/log" && return 0
        sleep 0.1
        i=$((i + 1))
    done
    echo "no \"$1\" in the log:"
    cat "$tmp/log"
    return 1
}

if [ ! -x "$MESHD" ]; then
    echo "not ok meshd_built ($MESHD missing)"
    exit 1
fi

cm() { # NAME VALUE
    printf 'apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: %s\ndata:\n  v: "%s"\n' "$1" "$2"
}

check version status_is 0 "$MESHD" --version
check version_text grep -q '^meshd ' "$tmp/out"
check help status_is 0 "$MESHD" --help
check unknown_flag_exits_2 status_is 2 "$MESHD" --config-dir "$tmp" --bogus
check unknown_flag_prints_usage grep -q 'usage: meshd' "$tmp/out"
check no_source_exits_2 status_is 2 "$MESHD"
check bad_log_level_exits_2 status_is 2 "$MESHD" --config-dir "$tmp" --log-level loud

mkdir -p "$tmp/good/sub" "$tmp/bad"
cm one 1 >"$tmp/good/one.yaml"
cm two 2 >"$tmp/good/sub/two.yml"
printf 'apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: p, namespace: prod}\nspec:\n  mtls: {mode: STRICT}\n' >"$tmp/good/peer.yaml"
check once_good_exits_0 status_is 0 "$MESHD" --config-dir "$tmp/good" --once
check once_counts_kinds grep -q 'ConfigMap *2' "$tmp/out"
check once_counts_peer grep -q 'PeerAuthentication *1' "$tmp/out"
cm fine 1 >"$tmp/bad/fine.yaml"
printf 'apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: p}\nspec:\n  mtls: {mode: SOMETIMES}\n' >"$tmp/bad/peer.yaml"
check once_rejected_exits_1 status_is 1 "$MESHD" --config-dir "$tmp/bad" --once
check once_rejected_names_the_file grep -q 'peer.yaml:5:.*PeerAuthentication default/p' "$tmp/out"
check missing_dir_fails status_is 1 "$MESHD" --config-dir "$tmp/nope" --once

# Watching: the changes of the tree show up in the log; SIGTERM ends it.
mkdir -p "$tmp/watch"
cm first 1 >"$tmp/watch/first.yaml"
"$MESHD" --config-dir "$tmp/watch" --namespace team >"$tmp/log" 2>&1 &
pid=$!
check watch_started wait_log 'watching'
check watch_initial_load wait_log 'loaded 1 objects'
cm second 1 >"$tmp/watch/second.yaml"
check watch_add wait_log 'ConfigMap team/second added (version 2)'
cm second 2 >"$tmp/watch/second.yaml"
check watch_update wait_log 'ConfigMap team/second updated (version 3)'
rm "$tmp/watch/second.yaml"
check watch_delete wait_log 'ConfigMap team/second deleted (version 4)'
kill -TERM "$pid"
i=0
while kill -0 "$pid" 2>/dev/null && [ $i -lt 50 ]; do
    sleep 0.1
    i=$((i + 1))
done
if kill -0 "$pid" 2>/dev/null; then
    echo "not ok sigterm_exits"
else
    wait "$pid"
    check sigterm_exits_0 [ $? -eq 0 ]
    pid=
fi
check sigterm_logged grep -q 'received SIGTERM' "$tmp/log"
