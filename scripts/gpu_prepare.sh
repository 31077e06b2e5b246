#!/usr/bin/env bash
# Run HERE (a machine with PyPI and the training corpus) before a GPU session: it fills the two folders the
# GPU machine needs, which have no network there. Both are ignored by git (.git/info/exclude) and travel with
# the device tool's `carry`: ["/.whl", "/.shard"] (64 MiB in all).
#   .whl/   transformers==5.23.0 (the GPU image has 5.17; the rest of what dglsp train/bench import is there)
#   .shard/ train.pt: pre-tokenized training examples from this machine's corpus (dglsp train --make-shard)
set -euo pipefail
cd "$(dirname "$0")/.."
for folder in /.whl/ /.shard/; do
  grep -qxF "$folder" .git/info/exclude 2>/dev/null || echo "$folder" >> .git/info/exclude
done
mkdir -p .whl .shard
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .whl transformers==5.23.0
# 55,000 examples of ~450 tokens as int16: about 50 MB, leaving room for the wheel under the 64 MiB carry limit.
dglsp train --make-shard .shard/train.pt --shard-examples "${SHARD_EXAMPLES:-50000}" \
  --max-prefix-tokens 256 --max-suffix-tokens 128 --no-progress
du -sh .whl .shard
