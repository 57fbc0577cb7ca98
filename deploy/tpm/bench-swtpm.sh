#!/usr/bin/env bash
# Encrypt/Decrypt throughput and latency of software, tpm-sealed and
# tpm-resident side by side, with the same `kms-plugin bench`, on one swtpm.
# Usage: deploy/tpm/bench-swtpm.sh [TCTI]   (default: a fresh swtpm)
# Build first: cargo build --release -p kms-plugin
set -euo pipefail
cd "$(dirname "$0")/../.."
K="${KMS_PLUGIN:-target/release/kms-plugin}"
W="$(mktemp -d -t kms-bench.XXXXXX)"
export TSS2_LOG=all+none
SW=""; PP=""
cleanup() {
  [ -n "$PP" ] && kill "$PP" 2>/dev/null || true
  [ -n "$SW" ] && kill "$SW" 2>/dev/null || true
  rm -rf "$W"
}
trap cleanup EXIT
if [ $# -ge 1 ]; then
  T="$1"
else
  PORT="${SWTPM_PORT:-23500}"
  swtpm socket --tpm2 --server "type=tcp,port=$PORT,bindaddr=127.0.0.1" \
    --ctrl "type=tcp,port=$((PORT + 1)),bindaddr=127.0.0.1" \
    --tpmstate "dir=$W" --flags not-need-init,startup-clear &
  SW=$!
  T="swtpm:host=127.0.0.1,port=$PORT"
  sleep 0.5
fi
for b in software tpm-sealed tpm-resident; do
  if [ "$b" = software ]; then
    "$K" key init --keyring "$W/$b" >/dev/null
  else
    "$K" key init --keyring "$W/$b" --backend "$b" --tcti "$T" >/dev/null
  fi
  "$K" serve --backend "$b" --tcti "$T" --keyring "$W/$b" \
    --listen-addr "unix://$W/$b.sock" 2>"$W/$b.log" &
  PP=$!
  for _ in $(seq 100); do [ -S "$W/$b.sock" ] && break; sleep 0.1; done
  echo "== $b"
  RUST_LOG=warn "$K" bench --listen-addr "unix://$W/$b.sock" \
    --concurrency 1,16 --duration 5s --warmup 1s
  kill "$PP"; wait "$PP" 2>/dev/null || true; PP=""
done
