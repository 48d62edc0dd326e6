#!/bin/sh
# The local demo: meshd on examples/demo in local mode.
# Today it shows the control plane's side: what meshd loads from the YAML and
# how it follows edits. The gateway and sidecar meshproxy, with real traffic
# through them, join this demo when meshproxy lands.
set -e
BUILD=${BUILD:-build}
DIR=$(cd "$(dirname "$0")" && pwd)

echo "== meshctl validate -f examples/demo"
"$BUILD/meshctl" validate -f "$DIR"
echo
echo "== meshd --config-dir examples/demo --once"
"$BUILD/meshd" --config-dir "$DIR" --once
echo
cat <<MSG
== meshd is now watching examples/demo (Ctrl-C stops it).
   Try, in another terminal:
     sed -i 's/weight: 90/weight: 50/; s/weight: 10/weight: 50/' examples/demo/routes.yaml
     sed -i 's/exact: jason/exakt: jason/' examples/demo/routes.yaml   # an invalid edit: reported, last good version kept
     git checkout examples/demo/routes.yaml
   and watch meshd log each change within a second.

   Not part of this demo yet: the ingress gateway and sidecar (meshproxy) on
   loopback with real traffic through them; they arrive with the data plane.
MSG
exec "$BUILD/meshd" --config-dir "$DIR"
