#!/usr/bin/env bash
# Prepares, on this (CPU) machine, what benchmarks/gpu_check.sh needs on the GPU machine and cannot find there
# (no network there; Python 3.12, torch, sentence-transformers, pyarrow, fsspec, pytest, pyyaml are installed):
#
#   .gpu/model/    all-MiniLM-L6-v2 with its weights stored in float16: 45 MB instead of the packaged 91 MB
#                  (the check and the encoder load it in float32 where float32 is meant: the float16 values are
#                  exact in float32, so every comparison inside the check uses the same weights)
#   .gpu/scifact/  a copy of a BEIR dataset (SciFact: 8 MB), with --data DIR
#   .whl/          faiss-cpu for CPython 3.12 manylinux x86_64 (about 30 MB), with --faiss
#
# usage: bash benchmarks/gpu_wheels.sh [--data DIR] [--faiss] [--faiss-version X.Y.Z]
#
# Both folders are in .gitignore (they travel only when a call names them in `carry`).
# A device call carries at most 64 MiB: `.gpu` (about 53 MB) travels in the check's call. `.whl` does not fit
# beside it; to compare with faiss, install it in a call of its own right before (the machine keeps /tmp while it
# is warm, 30 s after a call): carry [".whl"], command
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
# then the check's call (gpu_check.sh puts /tmp/site on PYTHONPATH when it is there). Without faiss the check
# compares torch-flat with torch-flat on the CPU and with a float64 numpy brute force instead.
set -euo pipefail
cd "$(dirname "$0")/.."
data="" faiss=0 faiss_version="1.12.0"
while [ $# -gt 0 ]; do
  case "$1" in
    --data) data="$2"; shift 2 ;;
    --faiss) faiss=1; shift ;;
    --faiss-version) faiss_version="$2"; shift 2 ;;
    *) echo "gpu_wheels.sh: error: unknown argument $1" >&2; exit 2 ;;
  esac
done
mkdir -p .gpu
python3 - <<'PY'
import os, shutil
import torch
from safetensors.torch import load_file, save_file
from streammine.encode.base import default_model_path
src, dst = default_model_path(), ".gpu/model"
shutil.rmtree(dst, ignore_errors=True)
shutil.copytree(src, dst, ignore=shutil.ignore_patterns("model.safetensors", "*.md", ".gitattributes",
                                                        "data_config.json", "onnx", "openvino", "*.onnx"))
weights = load_file(os.path.join(src, "model.safetensors"))
save_file({k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in weights.items()},
          os.path.join(dst, "model.safetensors"), metadata={"format": "pt"})
print("gpu_wheels.sh: .gpu/model", sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(dst) for f in fs),
      "bytes")
PY
if [ -n "$data" ]; then
  rm -rf .gpu/scifact && mkdir -p .gpu/scifact/qrels
  cp "$data"/corpus.jsonl "$data"/queries.jsonl .gpu/scifact/ && cp "$data"/qrels/*.tsv .gpu/scifact/qrels/
fi
if [ "$faiss" = 1 ]; then
  mkdir -p .whl
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl "faiss-cpu==$faiss_version"
fi
du -sh .gpu .whl 2>/dev/null || true
