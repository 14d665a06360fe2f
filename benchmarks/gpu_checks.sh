#!/usr/bin/env bash
# The agent's GPU checks in one go, on a machine with a CUDA GPU and this repository's
# environment: the CUDA tests, the throughput benchmark, then the paper-protocol sweep
# (resumable: run it again to finish an interrupted sweep). Logs go to $OUT (default
# ./gpu-checks). Usage: bash benchmarks/gpu_checks.sh [python]
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${1:-python3}
OUT=${OUT:-gpu-checks}
SWEEP_DB=${SWEEP_DB:-/tmp/pepr-paper-protocol.duckdb}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1

nvidia-smi --query-gpu=name,memory.total,driver_version,power.limit --format=csv | tee "$OUT/gpu.txt"
if [ ! -s "$SWEEP_DB" ]; then
  echo "== CUDA tests"
  timeout 240 "$PY" -m pytest -q -p no:cacheprovider -rs -s tests/agent/test_agent_gpu.py 2>&1 | tee "$OUT/cuda-tests.log" | tail -25
  echo "== throughput"
  timeout 150 "$PY" benchmarks/agent_throughput.py --device cuda:0 --epochs 1 --rounds 3 2>&1 \
    | grep -v Warning | tee "$OUT/throughput.log" | tail -6
fi
echo "== paper-protocol sweep"
"$PY" benchmarks/paper_protocol_sweep.py --device cuda:0 --db "$SWEEP_DB" --data /tmp/derma_like_224.npz 2>&1 \
  | tee "$OUT/sweep.log" | tail -30
cp "$SWEEP_DB" "$OUT/" 2>/dev/null || true
