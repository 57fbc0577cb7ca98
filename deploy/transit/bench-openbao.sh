#!/usr/bin/env bash
# Encrypt/Decrypt throughput and latency of the transit backend on a local
# OpenBao dev server (in memory, plain HTTP on loopback), beside the
# software backend, with the same `kms-plugin bench`; then the calls the
# plugin sent to the server (kms_plugin_backend_calls_total) per second of
# bench, and per second while only Status is polled.
# A dev server on loopback shows the plugin's own cost: a real server adds
# its network round trip and TLS to every call.
# Usage: deploy/transit/bench-openbao.sh
# Build first: cargo build --release -p kms-plugin; scripts/install-deps
# puts `bao` in the tests' virtualenv (BAO_BIN overrides).
set -euo pipefail
cd "$(dirname "$0")/../.."
K="${KMS_PLUGIN:-target/release/kms-plugin}"
VENV="${E2E_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/k8s-at-rest/venv}"
BAO="${BAO_BIN:-$VENV/bin/bao}"
W="$(mktemp -d -t kms-bench.XXXXXX)"
PORT="${BAO_PORT:-18211}"
ADDR="http://127.0.0.1:$PORT"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$W"
}
trap cleanup EXIT

api() { # METHOD PATH [JSON]: the API as root
  curl -sf -X "$1" -H "X-Vault-Token: bench-root" ${3:+-d "$3"} "$ADDR/v1/$2"
}
calls() { # the plugin's calls to Transit so far, all added up
  curl -s "http://127.0.0.1:8197/metrics" |
    awk '/^kms_plugin_backend_calls_total/ { n += $2 } END { print n + 0 }'
}

HOME="$W" "$BAO" server -dev -dev-listen-address="127.0.0.1:$PORT" \
  -dev-root-token-id=bench-root >"$W/bao.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do curl -sf "$ADDR/v1/sys/health" >/dev/null && break; sleep 0.1; done
api POST sys/mounts/transit '{"type":"transit"}' >/dev/null
api POST transit/keys/bench '{"type":"aes256-gcm96"}' >/dev/null
api PUT sys/policies/acl/kms-plugin "{\"policy\":\"path \\\"transit/encrypt/bench\\\" { capabilities = [\\\"update\\\"] }\\npath \\\"transit/decrypt/bench\\\" { capabilities = [\\\"update\\\"] }\\npath \\\"transit/keys/bench\\\" { capabilities = [\\\"read\\\"] }\"}" >/dev/null
(umask 077; api POST auth/token/create '{"policies":["kms-plugin"],"ttl":"1h"}' |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["auth"]["client_token"])' >"$W/token")

"$K" key init --keyring "$W/ring" >/dev/null
"$K" serve --keyring "$W/ring" --listen-addr "unix://$W/software.sock" 2>"$W/software.log" &
pids+=($!)
"$K" serve --backend transit --transit-addr "$ADDR" --transit-key bench \
  --transit-token-file "$W/token" --health-addr 127.0.0.1:8197 \
  --listen-addr "unix://$W/transit.sock" 2>"$W/transit.log" &
pids+=($!)
for s in software transit; do
  for _ in $(seq 100); do [ -S "$W/$s.sock" ] && break; sleep 0.1; done
done

echo "== software"
RUST_LOG=warn "$K" bench --listen-addr "unix://$W/software.sock" \
  --concurrency 1,16 --duration 5s --warmup 1s
echo "== transit"
before=$(calls); t0=$(date +%s.%N)
RUST_LOG=warn "$K" bench --listen-addr "unix://$W/transit.sock" \
  --concurrency 1,16 --duration 5s --warmup 1s
after=$(calls); t1=$(date +%s.%N)
echo "transit: $((after - before)) calls to the server in $(printf '%.1f' "$(echo "$t1 - $t0" | bc)") s of bench" \
  "($(echo "($after - $before) / ($t1 - $t0)" | bc) calls/s)"

# Idle, as kube-apiserver sees it, but polled far harder: the health
# verdict Status answers with (the same cache as /healthz) asked 10 times a
# second for 30 s. Only the self-test (once per --health-cache, 5 s:
# encrypt + decrypt) and the key refresh (every 5 s: sys/health + the key)
# reach the server.
before=$(calls)
for _ in $(seq 300); do
  curl -s -o /dev/null "http://127.0.0.1:8197/healthz"; sleep 0.1
done
after=$(calls)
echo "transit idle: $((after - before)) calls to the server in 30 s of 10 health polls/s" \
  "($(echo "scale=1; ($after - $before) / 30" | bc) calls/s)"
