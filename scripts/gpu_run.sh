#!/usr/bin/env bash
# Run ON THE GPU MACHINE (device tool, carry [".whl", ".shard"]), after scripts/gpu_prepare.sh here:
#   scripts/gpu_run.sh train MINUTES   resume the shipped model on the shard with a batch that fills the GPU,
#                                      export it into $OUT as export.tgz.* parts (each under the 16 MiB limit)
#   scripts/gpu_run.sh bench           the 26B-A4B's real shapes with random weights: prefill of 2k tokens, one
#                                      denoising step at canvas 32 and 256, eager and compiled, peak memory, the
#                                      out-of-memory retry; one JSON line, also in $OUT/shapes.json
# Both print as they go (PYTHONUNBUFFERED) and stay inside the device tool's 10-minute command limit when
# MINUTES <= 7 for train and alone for bench (about 3 minutes).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/dglsp-out}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_VERBOSITY=error
nvidia-smi --query-gpu=name,memory.total,memory.used --format=csv,noheader || true
case "${1:-}" in
  train)
    minutes=${2:-7}
    python3 -m dglsp train --device "${DEVICE:-cuda}" --shard .shard/train.pt --work-dir /tmp/dglsp-train \
      --export-dir /tmp/dglsp-export --batch-size "${BATCH:-256}" --lr "${LR:-0.001}" --warmup-steps 100 \
      --minutes "$minutes" --eval-every 100 --checkpoint-minutes 1000 --export-minutes 1000 --no-progress \
      2>&1 | tee "$OUT/train.log"
    tar czf - -C /tmp dglsp-export | split -b 15M - "$OUT/export.tgz."
    ls -la "$OUT"
    ;;
  bench)
    timeout 480 python3 -m dglsp bench --random-weights dglsp/tools/data/diffusiongemma-26B-A4B.json \
      --device cuda --oom-check | tee "$OUT/shapes.json"
    ;;
  *)
    echo "usage: scripts/gpu_run.sh train MINUTES | bench" >&2
    exit 2
    ;;
esac
