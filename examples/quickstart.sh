#!/usr/bin/env bash
# Builds fwatchdog and runs the API-key-protected function from the OpenFaaS secrets
# page on 127.0.0.1, with a throwaway secret, then calls it with the right key, a wrong
# key and no key, and stops it. Everything it starts is stopped by PID.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --quiet
bin=target/release/fwatchdog
work=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT

# What `faas-cli secret create` / `kubectl create secret` would mount in the container.
mkdir "$work/secrets"
head -c 18 /dev/urandom | base64 | tr -d '/+=' > "$work/secrets/secret-api-key"
key=$(cat "$work/secrets/secret-api-key")

# The example's own handler, as its Dockerfile sets it.
handler=$(sed -n 's/^ENV fprocess="\(.*\)" \\$/\1/p' examples/api-key-protected/protectedapi/Dockerfile)
[ -n "$handler" ] || handler="echo Unlocked the function!"

TMPDIR=$work port=0 healthcheck_interval=1s metrics_port=off bind_address=127.0.0.1 \
  "$bin" --fprocess "$handler" --api-key-secret secret-api-key --secrets-dir "$work/secrets" \
  2> "$work/log" &
pid=$!
for _ in $(seq 200); do grep -q 'Listening on port' "$work/log" && break; sleep 0.05; done
port=$(sed -n 's/.*Listening on port: \([0-9]*\).*/\1/p' "$work/log")
cat "$work/log"

echo "--- right key";  curl -s -w '%{http_code}\n' -H "X-Api-Key: $key" -d '' "http://127.0.0.1:$port/"
echo "--- wrong key";  curl -s -w '%{http_code}\n' -H "X-Api-Key: thisiswrong" -d '' "http://127.0.0.1:$port/"
echo "--- no key";     curl -s -w '%{http_code}\n' -d '' "http://127.0.0.1:$port/"
echo "--- health";     curl -s -w ' %{http_code}\n' "http://127.0.0.1:$port/_/health"
kill -TERM "$pid"; wait "$pid" || true
echo "--- log after SIGTERM"; tail -n 6 "$work/log"
