#!/usr/bin/env bash
# Single-task (main task only) MF and LightGCN on ml-100k and ciao, to separate the encoder's
# effect from EW's auxiliary tasks. Usage: bash results/reference/run_single_task.sh (resumable)
set -euo pipefail
cd "$(dirname "$0")/../.."
for ds in ml-100k ciao; do
  for enc in mf lightgcn; do
    .venv/bin/pmtrec-lab train --set data.name=$ds --set data.data_dir=../shared/datasets \
      --set encoder.name=$enc --set method.name=single-task --set optim.lr=0.003 \
      --set optim.epochs=100 --set eval.patience=5 --set data.aux_holdout=0 \
      --set optim.task_gradients=autograd --out results/reference/$ds-$enc-single-task
  done
done
