#!/usr/bin/env bash
# Builds the Edge and starts it with a demo upstream (the fake OpenAI
# router), over TLS with a self-signed certificate made here. Ctrl-C stops
# both. Ports: HTTPS 8443, HTTP 8080 (redirects), fake router 8881 on
# loopback. Override with EDGE_HTTPS_PORT, EDGE_HTTP_PORT, ROUTER_PORT.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
https_port=${EDGE_HTTPS_PORT:-8443}
http_port=${EDGE_HTTP_PORT:-8080}
router_port=${ROUTER_PORT:-8881}
data="$repo/.demo"

bash deploy/setup.sh
bazel build //dataplane:eldric-edge //test/fake_router:fake-router

mkdir -p "$data"
if [ ! -s "$data/cert.pem" ] || [ ! -s "$data/key.pem" ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$data/key.pem" -out "$data/cert.pem" -days 365 -subj "/CN=localhost" \
    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" 2>/dev/null
fi

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

# A demo router: streams 24 tokens, 40 ms apart, like a small model would.
bazel-bin/test/fake_router/fake-router --port "$router_port" --bind 127.0.0.1 \
  --tokens 24 --token-delay-ms 40 --name demo-router >"$data/router.log" 2>&1 &
pids+=($!)

bazel-bin/dataplane/eldric-edge --port "$https_port" --http-port "$http_port" \
  --cert "$data/cert.pem" --key "$data/key.pem" \
  --routers "http://127.0.0.1:$router_port" \
  --access-log "$data/access.log" --data-dir "$data/edge-data" 2> >(tee "$data/edge.log" >&2) &
pids+=($!)

for _ in $(seq 1 50); do
  curl -s --cacert "$data/cert.pem" "https://localhost:$https_port/health" >/dev/null 2>&1 && break
  sleep 0.2
done

cat <<MSG

Eldric Edge is up (TLS, self-signed certificate at .demo/cert.pem).
  Web chat: https://localhost:$https_port/chat   (accept the self-signed certificate)
  Health:   curl --cacert .demo/cert.pem https://localhost:$https_port/health
  Models:   curl --cacert .demo/cert.pem https://localhost:$https_port/v1/models
  Chat:     curl --cacert .demo/cert.pem https://localhost:$https_port/v1/chat/completions \\
              -H 'Content-Type: application/json' \\
              -d '{"model":"llama3.2:3b","messages":[{"role":"user","content":"Hello!"}],"stream":true}'
  Metrics:  curl --cacert .demo/cert.pem https://localhost:$https_port/metrics
  HTTP:     curl -i http://localhost:$http_port/v1/models   (308 to HTTPS)
Access log: .demo/access.log. Press Ctrl-C to stop.
MSG

wait -n "${pids[@]}"
