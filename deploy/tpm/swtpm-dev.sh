#!/usr/bin/env bash
# A development setup without a TPM: starts swtpm (state in $WORK/tpm),
# creates a tpm-sealed or tpm-resident key ring on it and serves. Ctrl-C
# stops both. Usage:
#   deploy/tpm/swtpm-dev.sh [tpm-sealed|tpm-resident] [WORKDIR]
# Then, in another shell:
#   kms-plugin probe --listen-addr unix://$WORK/kms.sock
#   TPM2TOOLS_TCTI=swtpm:host=127.0.0.1,port=2321 tpm2_pcrread sha256:16
set -euo pipefail
BACKEND="${1:-tpm-sealed}"
WORK="${2:-$(mktemp -d -t kms-tpm-dev.XXXXXX)}"
PORT="${SWTPM_PORT:-2321}"
BIN="${KMS_PLUGIN:-kms-plugin}"
export TCTI="swtpm:host=127.0.0.1,port=$PORT"   # tpm2-tss 3.2 takes no unix-socket form
export TPM2TOOLS_TCTI="$TCTI" TSS2_LOG="all+none"

mkdir -p "$WORK/tpm"
swtpm socket --tpm2 \
  --server "type=tcp,port=$PORT,bindaddr=127.0.0.1" \
  --ctrl "type=tcp,port=$((PORT + 1)),bindaddr=127.0.0.1" \
  --tpmstate "dir=$WORK/tpm" \
  --flags not-need-init,startup-clear &
SWTPM=$!
trap 'kill $SWTPM 2>/dev/null || true' EXIT
for _ in $(seq 100); do tpm2_getrandom 4 >/dev/null 2>&1 && break; sleep 0.1; done

if [ ! -e "$WORK/ring/keyring.json" ]; then
  "$BIN" key init --backend "$BACKEND" --keyring "$WORK/ring" --shareable
fi
echo "swtpm state: $WORK/tpm   key ring: $WORK/ring   socket: $WORK/kms.sock"
"$BIN" serve --backend "$BACKEND" --keyring "$WORK/ring" \
  --listen-addr "unix://$WORK/kms.sock" --health-addr 127.0.0.1:8095
