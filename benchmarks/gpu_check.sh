#!/usr/bin/env bash
# The prepared GPU check (benchmarks/gpu_check.py): run on the GPU machine from the repository root, with `.gpu`
# (from benchmarks/gpu_wheels.sh) carried. Figures go to $OUT/gpu_check.json (else ./gpu_check.json), the log
# beside them. Extra arguments go to gpu_check.py (e.g. --n-queries 20000 for a shorter run).
#   device call: carry [".gpu"], command `bash benchmarks/gpu_check.sh`, timeout_s 540
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
if ls .whl/*.whl >/dev/null 2>&1; then  # wheels carried in this call
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 1
fi
[ -d /tmp/site ] && export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
args=()
[ -d .gpu/model ] && args+=(--model .gpu/model)
[ -d .gpu/scifact ] && args+=(--data .gpu/scifact)
out="${OUT:-.}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
# 480 s: the 8-minute budget; what finished is in the JSON even when the limit cuts the run short
timeout 480 python3 benchmarks/gpu_check.py "${args[@]}" --out "$out/gpu_check.json" "$@" 2>&1 \
  | grep -v "Loading weights" | tee "$out/gpu_check.log"
