#!/usr/bin/env bash
# The runs behind the README's `mini` tables (resumable: finished runs are skipped).
# Needs the mini zoo: `make zoo-mini` (about 40 min on 2 CPU cores). Run nothing else
# CPU-heavy meanwhile: two torch processes on 2 cores slow each other down ~10x.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
ZOO=${ZOO:-runs/zoo-mini/data_list.yaml}
COMMON=(--epochs 6 --option batches_per_epoch=20 --no-plots)

# 1. every method on every split (metric's MISLNet epochs are cheap: 30 of them)
$PY bench/methods.py "$ZOO" --splits split1,split2,split3,split4,split5 "${COMMON[@]}" \
    --method-epochs metric=30 --out runs/bench-mini

# 2. why is metric learning behind here? one factor at a time, splits 1-2
$PY bench/methods.py "$ZOO" --splits split1,split2 --methods metric "${COMMON[@]}" --epochs 30 \
    --option augment=none --out runs/bench-mini-metric-noaug
$PY bench/methods.py "$ZOO" --splits split1,split2 --methods metric "${COMMON[@]}" --epochs 30 \
    --option pretrain_epochs=5 --out runs/bench-mini-metric-pretrain
$PY bench/methods.py "$ZOO" --splits split1,split2 --methods metric "${COMMON[@]}" --epochs 6 \
    --option backbone=simple_cnn --option augment=none --option input=dct --out runs/bench-mini-metric-simplecnn

# 3. enrollment of unseen generators from 10 / 50 / 200 images (metric model of split1)
$PY bench/enroll.py "$ZOO" runs/bench-mini/runs/split1/metric --sizes 10,50,200
$PY bench/enroll.py "$ZOO" runs/bench-mini/runs/split1/pose --sizes 10,50,200
$PY bench/enroll.py "$ZOO" runs/bench-mini/runs/split1/softmax --sizes 10,50,200

# 4. the diversity loss: longer training (12 epochs, more augmentation models) and a 100x
#    larger weight than the official 1e-4, splits 1-2 (pose-am ignores w_div)
$PY bench/methods.py "$ZOO" --splits split1,split2 --methods pose-am,pose --epochs 12 \
    --option batches_per_epoch=20 --option w_div=0.01 --no-plots --out runs/bench-mini-div
