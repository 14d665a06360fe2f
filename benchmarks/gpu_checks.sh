#!/usr/bin/env bash
# The agent's GPU checks in one go, on a machine with a CUDA GPU and this repository's
# environment: the CUDA tests, the throughput benchmark (with a profile of the meter's
# sampling unless PROFILE_METER=0), the agent's loop and its data path against plain steps and
# the meter's overhead, each in interleaved blocks, then the paper-protocol sweep (resumable:
# run it again to finish an interrupted sweep). Logs go to $OUT (default ./gpu-checks).
# Usage: [SWEEP_MODELS=a,b] [CHECKS_SECONDS=N] [ROUNDS=6] [OVERHEAD_SECONDS=150] [PROFILE_METER=0]
#        bash benchmarks/gpu_checks.sh [python]
# CHECKS_SECONDS: the sweep starts no run likely to end past N seconds from the start.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${1:-python3}
OUT=${OUT:-gpu-checks}
SWEEP_DB=${SWEEP_DB:-/tmp/pepr-paper-protocol.duckdb}
SWEEP_MODELS=${SWEEP_MODELS:-mobilenetv3_small_100,mobilenetv3_large_100,efficientnet_b0,resnet18,resnet34}
mkdir -p "$OUT"
BEGAN=$SECONDS
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1

nvidia-smi --query-gpu=name,memory.total,driver_version,power.limit --format=csv | tee "$OUT/gpu.txt"
nproc | sed 's/^/cpus: /' | tee -a "$OUT/gpu.txt"
ls /proc | grep -c '^[0-9]' | sed 's/^/processes: /' | tee -a "$OUT/gpu.txt"
echo "== CUDA tests"
timeout 200 "$PY" -m pytest -q -p no:cacheprovider -rs -s tests/agent/test_agent_gpu.py 2>&1 \
  | tee "$OUT/cuda-tests.log" | tail -25
echo "== throughput"
timeout 330 "$PY" benchmarks/agent_throughput.py --device cuda:0 --epochs 2 --rounds "${ROUNDS:-6}" \
  $([ "${PROFILE_METER:-1}" = 0 ] || echo --profile-meter) 2>&1 \
  | grep -v Warning | tee "$OUT/throughput.log" | grep -v '^round'
echo "== in alternating blocks of one loop: the agent's steps or plain ones; its batches or pinned slices; the meter sampling or paused"
timeout $(( 3 * ${OVERHEAD_SECONDS:-150} + 150 )) "$PY" benchmarks/agent_throughput.py --device cuda:0 --rounds 0 \
  --interleaved-seconds "${OVERHEAD_SECONDS:-150}" 2>&1 | grep -v Warning | tee "$OUT/overhead.log"
echo "== paper-protocol sweep"
"$PY" benchmarks/paper_protocol_sweep.py --device cuda:0 --db "$SWEEP_DB" --budget-s "$(( ${CHECKS_SECONDS:-100000} - (SECONDS - BEGAN) ))" \
  --data /tmp/derma_like_224.npz --models "$SWEEP_MODELS" 2>&1 | tee "$OUT/sweep.log" | tail -30
cp "$SWEEP_DB" "$OUT/" 2>/dev/null || true
