#!/usr/bin/env bash
# The decodings of one model, side by side: pass@1, forward passes, ms and tokens per pass on HumanEval-Infilling,
# and the leading agreement with the greedy text. Usage: scripts/sweep_decodings.sh MODEL_DIR OUT_DIR [LIMIT]
# Each row is one `dglsp eval` run; OUT_DIR/NAME.json holds it. Runs one thread at `nice 5` (a training run at
# `nice 19` beside it yields).
set -euo pipefail
model=$1 out=$2 limit=${3:-100}
mkdir -p "$out"
eval_row() {  # NAME ARGS...
  local name=$1; shift
  [ -s "$out/$name.json" ] && return 0
  nice -n 5 dglsp eval --model "$model" --limit "$limit" --threads 1 --no-latency --json "$@" > "$out/$name.json.tmp"
  mv "$out/$name.json.tmp" "$out/$name.json"
}
eval_row reference --decoding diffusion --decoding autoregressive --decoding verified --sampling reference
eval_row fast --decoding diffusion --sampling fast
eval_row prefix90 --decoding diffusion --policy prefix --prefix-threshold 0.9 --eos-freeze true --max-steps 32
eval_row prefix70 --decoding diffusion --policy prefix --prefix-threshold 0.7 --eos-freeze true --max-steps 32
eval_row prefix50 --decoding diffusion --policy prefix --prefix-threshold 0.5 --eos-freeze true --max-steps 32
eval_row line16 --decoding diffusion --line-canvas-length 16
eval_row jacobi --decoding speculative --verify-steps 0
eval_row encoder-gate --decoding diffusion --gate encoder --calibrate
for mix in 0 0.25 0.5 0.75; do
  eval_row "speculative$mix" --decoding speculative --verify-mix "$mix"
done
[ -s "$out/agreement.json" ] || nice -n 5 dglsp eval agreement --model "$model" --limit 50 --threads 1 --json \
  --decoding diffusion --decoding verified --decoding speculative > "$out/agreement.json"
[ -s "$out/agreement-prefix.json" ] || nice -n 5 dglsp eval agreement --model "$model" --limit 50 --threads 1 --json \
  --decoding diffusion --policy prefix --eos-freeze true --max-steps 32 > "$out/agreement-prefix.json"
