#!/usr/bin/env bash
# Short training runs from the same weights (the shipped model) and seed, one arm per change, to compare
# held-out loss per CPU-hour before adopting a change. Each arm trains for MINUTES on one thread in its own
# work dir (sharing the corpus and tokenizer of WORK), then `scripts/compare_training.py` prints the table.
#   scripts/compare_training.sh [MINUTES] [WORK]
#   ARMS="scratch-small scratch-deep" scripts/compare_training.sh 15   # the model shape, from scratch
set -euo pipefail
cd "$(dirname "$0")/.."
minutes=${1:-6}
work=${2:-$HOME/dglsp-train}
root=${COMPARE_DIR:-/tmp/dglsp-compare}
common=(--threads 1 --max-prefix-tokens 256 --max-suffix-tokens 128 --eval-every 20 --eval-examples 48
        --checkpoint-minutes 1000 --export-minutes 1000 --no-progress --minutes "$minutes" --warmup-steps 20)
declare -A arms=(
  [baseline]=""
  [ar-weight-2]="--ar-weight 2.0"
  [ar-weight-0.5]="--ar-weight 0.5"
  [canvas-16]="--canvas-length 16"
  [batch-16-beta2]="--batch-size 16 --adam-beta2 0.9025"
  [muon]="--optimizer muon"
  # The shape: no shipped weights fit another shape, so both arms start from scratch (same seed, same time).
  [scratch-small]="--resume-from= --preset small --batch-size 16 --adam-beta2 0.9025 --ar-weight 2.0"
  [scratch-deep]="--resume-from= --preset deep --batch-size 16 --adam-beta2 0.9025 --ar-weight 2.0"
)
for arm in ${ARMS:-baseline ar-weight-2 ar-weight-0.5 canvas-16 batch-16-beta2 muon}; do
  dir="$root/$arm"
  rm -rf "$dir" && mkdir -p "$dir"
  ln -s "$work/corpus.jsonl.gz" "$dir/corpus.jsonl.gz"
  cp "$work/MANIFEST.json" "$dir/" && cp -r "$work/tokenizer" "$dir/"
  # shellcheck disable=SC2086
  nice -n 5 dglsp train --work-dir "$dir" "${common[@]}" ${arms[$arm]} > "$dir/stdout.log" 2>&1
  echo "$arm done"
done
python3 scripts/compare_training.py "$root"
