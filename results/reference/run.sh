#!/usr/bin/env bash
# EW with MF and LightGCN on ml-100k and ciao from the CLI (issue 3's reference runs).
# Usage: bash results/reference/run.sh   (resumable: finished runs are returned, unfinished resumed)
set -euo pipefail
cd "$(dirname "$0")/../.."
for ds in ml-100k ciao; do
  for enc in mf lightgcn; do
    .venv/bin/pmtrec-lab train --set data.name=$ds --set data.data_dir=../shared/datasets \
      --set encoder.name=$enc --set optim.lr=0.003 --set optim.epochs=100 --set eval.patience=5 \
      --set data.aux_holdout=0 --set optim.task_gradients=autograd \
      --out results/reference/$ds-$enc-ew
  done
done
