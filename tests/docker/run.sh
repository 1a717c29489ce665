#!/usr/bin/env bash
# The Docker image, built and run as an operator would.
#
# 1. ../shared/tools/docker-check.sh: hadolint, `docker build` of ./Dockerfile
#    on a real engine, the image's own entrypoint answers /healthz.
# 2. Then the image again (dockerd on the same data root, so the image is
#    there): a config file mounted read-only and named by HUB_CONFIG, that
#    sets the port and defines the service `orders` with `token_env`, the
#    token given by `-e`, and
#    - the container's HEALTHCHECK (`socket-hub healthcheck`) turns healthy
#      (so it read the port from that file),
#    - it runs as uid 10001, not root,
#    - the test ops::through_the_docker_image_... opens two WebSocket sessions
#      to it, identifies, routes one frame, reads /status, and sees the demo
#      token refused (HUB_ENV=production),
#    - its log lines are JSON, name each session's connect/identify, and never
#      show the token,
#    - `docker stop` (SIGTERM) ends it with exit code 0.
#
# Usage: tests/docker/run.sh   (as root; DOCKER_CHECK=path overrides the script)
set -euo pipefail
cd "$(dirname "$0")/../.."

CHECK=${DOCKER_CHECK:-../shared/tools/docker-check.sh}
WORK=${WORK:-/var/tmp/docker-check}
IMAGE=docker-check/app:latest          # the tag docker-check.sh builds
TEST=ops::through_the_docker_image_a_session_identifies_routes_and_reads_status
t0=$(date +%s); step() { echo "== [docker $(( $(date +%s) - t0 ))s] $*"; }
fail() { echo "FAIL: $*"; exit 1; }

step "docker-check.sh (lint, build, run, /healthz)"
PORT=8080 HEALTH_PATH=/healthz EXPECT=ok LINT=1 WORK=$WORK "$CHECK" . Dockerfile

# docker-check.sh stops its dockerd when done; start one on the same data root.
SOCK=$WORK/dockerd.sock
export DOCKER_HOST=unix://$SOCK
D=/usr/bin/docker
NAME=socket-hub-ci-$$
TMP=$(mktemp -d)
DPID=
cleanup() {
  set +e
  if [ -n "$DPID" ]; then
    $D rm -f "$NAME" >/dev/null 2>&1
    kill "$DPID" 2>/dev/null; wait "$DPID" 2>/dev/null
  fi
  rm -rf "$TMP"
}
trap cleanup EXIT
step "start dockerd"
dockerd --host "unix://$SOCK" --data-root "$WORK/data" --exec-root "$WORK/exec" \
        --pidfile "$WORK/dockerd.pid" >"$WORK/dockerd-run.log" 2>&1 &
DPID=$!
for _ in $(seq 60); do $D version >/dev/null 2>&1 && break; sleep 0.5; done
$D version >/dev/null || { tail -20 "$WORK/dockerd-run.log"; fail "dockerd did not start"; }
step "image $IMAGE: $($D image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1/1e6}')"

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
TOKEN=ci-$(head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n')
cat >"$TMP/hub.toml" <<EOF
# Mounted at /etc/socket-hub/hub.toml and named by HUB_CONFIG, so that the
# HEALTHCHECK reads it too (the port is set only here); the token comes from
# the environment.
[server]
port = $PORT

[[services]]
name = "orders"
token_env = "ORDERS_TOKEN"
groups = ["docker"]
EOF
chmod 755 "$TMP"; chmod 644 "$TMP/hub.toml"

step "docker run with a mounted HUB_CONFIG file setting port $PORT and the token in ORDERS_TOKEN"
$D run -d --name "$NAME" --network host \
  -e HUB_CONFIG=/etc/socket-hub/hub.toml -e ORDERS_TOKEN="$TOKEN" \
  -v "$TMP/hub.toml:/etc/socket-hub/hub.toml:ro" \
  "$IMAGE" >/dev/null

health=
for _ in $(seq 120); do
  health=$($D inspect -f '{{.State.Health.Status}}' "$NAME")
  [ "$health" = healthy ] && break
  [ "$($D inspect -f '{{.State.Running}}' "$NAME")" = true ] || break
  sleep 0.5
done
[ "$health" = healthy ] || { $D logs "$NAME" 2>&1 | tail -20; fail "container health: $health"; }
step "HEALTHCHECK: $health"

uid=$($D exec "$NAME" id -u)
[ "$uid" = 10001 ] || fail "the hub runs as uid $uid, not 10001"
step "runs as uid $uid"

step "cargo test --test api $TEST"
out=$(SOCKET_HUB_DOCKER_URL="http://127.0.0.1:$PORT" SOCKET_HUB_DOCKER_TOKEN="$TOKEN" \
      cargo test --test api "$TEST" -- --exact 2>&1) || { echo "$out"; fail "the test through the container failed"; }
grep -q "test result: ok. 1 passed" <<<"$out" || { echo "$out"; fail "the test did not run"; }
echo "$out" | grep "^test "

$D logs "$NAME" >"$TMP/hub.log" 2>&1
python3 - "$TMP/hub.log" "$TOKEN" <<'EOF' || { cat "$TMP/hub.log"; fail "container logs"; }
import json, sys
path, token = sys.argv[1], sys.argv[2]
msgs = []
for line in open(path):
    assert token not in line, f"the token is in the log: {line}"
    msgs.append(json.loads(line)["msg"])   # every line is one JSON object
assert sum(m.startswith("identify: session ") and " service orders peer 127.0.0.1:" in m for m in msgs) == 2, msgs
assert sum(m.startswith("connect: session ") for m in msgs) == 3, msgs
print(f"   {len(msgs)} JSON log lines, 3 connects, 2 identifies of service orders, no token")
EOF

step "docker stop (SIGTERM)"
$D stop -t 10 "$NAME" >/dev/null
code=$($D inspect -f '{{.State.ExitCode}}' "$NAME")
[ "$code" = 0 ] || { $D logs "$NAME" 2>&1 | tail -5; fail "exit code $code after SIGTERM"; }
# Through a file: with pipefail, `docker logs | grep -q` fails whenever grep
# stops reading at the match before docker logs has written the lines after it.
$D logs "$NAME" >"$TMP/stopped.log" 2>&1
grep -q '"SIGTERM: draining"' "$TMP/stopped.log" || { tail -5 "$TMP/stopped.log"; fail "no drain on SIGTERM"; }
step "OK: stopped with exit code 0 after draining"
