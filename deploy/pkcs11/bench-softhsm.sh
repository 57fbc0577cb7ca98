#!/usr/bin/env bash
# Encrypt/Decrypt throughput and latency of the pkcs11 backend on a fresh
# SoftHSM2 token, beside the software backend, with the same `kms-plugin
# bench`. SoftHSM2 computes AES-GCM in this process with OpenSSL: what it
# shows is the backend's own cost (sessions, the blocking pool, one token
# call per wrap); a network HSM adds its round trip to every call.
# Usage: deploy/pkcs11/bench-softhsm.sh [--pkcs11-sessions N]
# Build first: cargo build --release -p kms-plugin
set -euo pipefail
cd "$(dirname "$0")/../.."
K="${KMS_PLUGIN:-target/release/kms-plugin}"
MODULE="${PKCS11_MODULE:-/usr/lib/softhsm/libsofthsm2.so}"
W="$(mktemp -d -t kms-bench.XXXXXX)"
PP=""
cleanup() {
  [ -n "$PP" ] && kill "$PP" 2>/dev/null || true
  rm -rf "$W"
}
trap cleanup EXIT
mkdir -p "$W/tokens"
printf 'directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n' "$W/tokens" >"$W/softhsm2.conf"
export SOFTHSM2_CONF="$W/softhsm2.conf"
softhsm2-util --init-token --free --label bench --pin 1234 --so-pin 5678 >/dev/null
(umask 077; echo 1234 >"$W/pin")
P11=(--pkcs11-module "$MODULE" --pkcs11-token-label bench --pkcs11-pin-file "$W/pin")
for b in software pkcs11; do
  if [ "$b" = software ]; then
    "$K" key init --keyring "$W/$b" >/dev/null
    flags=()
  else
    "$K" key init --keyring "$W/$b" --backend pkcs11 "${P11[@]}" >/dev/null
    flags=("${P11[@]}" "$@")
  fi
  "$K" serve --backend "$b" --keyring "$W/$b" "${flags[@]}" \
    --listen-addr "unix://$W/$b.sock" 2>"$W/$b.log" &
  PP=$!
  for _ in $(seq 100); do [ -S "$W/$b.sock" ] && break; sleep 0.1; done
  echo "== $b $*"
  RUST_LOG=warn "$K" bench --listen-addr "unix://$W/$b.sock" \
    --concurrency 1,16 --duration 5s --warmup 1s
  kill "$PP"; wait "$PP" 2>/dev/null || true; PP=""
done
