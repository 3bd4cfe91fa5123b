#!/usr/bin/env bash
# The runs behind the README's `mini` tables (resumable: finished runs are skipped).
# Needs the mini zoo: `make zoo-mini` (about 55 min on 2 CPU cores with --jobs 2). Run
# nothing else CPU-heavy meanwhile: two torch processes on 2 cores slow each other ~10x.
# Steps can be run alone: `bash bench/mini_suite.sh 3 4`. Tables are copied by hand from
# runs/bench-mini*/table.md|json, printed output (steps 3-5) from stdout, to bench/results/.
# Steps 1, 4 and 6 were last run on the current mini (v3, bench/results/mini_*); steps 2, 3
# and 5 on the previous build (bench/results/mini-v2/, see its README).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
ZOO=${ZOO:-runs/zoo-mini/data_list.yaml}
COMMON=(--epochs 6 --option batches_per_epoch=20 --no-plots)
STEPS=${*:-1 2 3 4 5 6}
want() { [[ " $STEPS " == *" $1 "* ]]; }

# 1. every method on every split (metric's MISLNet epochs are cheap: 30 of them)
if want 1; then
$PY bench/methods.py "$ZOO" --splits split1,split2,split3,split4,split5 "${COMMON[@]}" \
    --method-epochs metric=30 --out runs/bench-mini
fi

# 2. the diversity loss: longer training (12 epochs, more augmentation models) and a 100x
#    larger weight than the official 1e-4, splits 1-2 (pose-am ignores w_div)
if want 2; then
$PY bench/methods.py "$ZOO" --splits split1,split2 --methods pose-am,pose --epochs 12 \
    --option batches_per_epoch=20 --option w_div=0.01 --no-plots --out runs/bench-mini-div
fi

# 3. why the diversity loss does nothing: the pull of each term of L_A on the augmentation
#    models, then two ways to give L_div a pull comparable to the reconstruction term's:
#    w_div = 1, or a floor under the reconstruction loss (mse_lowbound, official value 0)
if want 3; then
$PY bench/methods.py "$ZOO" --splits split1,split2 --methods pose "${COMMON[@]}" \
    --option w_div=1 --out runs/bench-mini-wdiv1
$PY bench/methods.py "$ZOO" --splits split1,split2 --methods pose-am,pose "${COMMON[@]}" \
    --option mse_lowbound=0.02 --out runs/bench-mini-lowbound
# run-to-run noise: the same two variants with another seed
$PY bench/methods.py "$ZOO" --splits split1,split2 --methods pose-am,pose "${COMMON[@]}" \
    --seed 1 --out runs/bench-mini-seed1
$PY bench/pose_augnets.py "$ZOO" split1 runs/bench-mini/runs/split1/pose-am runs/bench-mini/runs/split1/pose \
    runs/bench-mini-wdiv1/runs/split1/pose \
    runs/bench-mini-lowbound/runs/split1/pose-am runs/bench-mini-lowbound/runs/split1/pose
fi

# 4. enrollment of unseen generators from 10 / 50 / 200 images (models of split1)
if want 4; then
$PY bench/enroll.py "$ZOO" runs/bench-mini/runs/split1/metric --sizes 10,50,200
$PY bench/enroll.py "$ZOO" runs/bench-mini/runs/split1/pose --sizes 10,50,200
$PY bench/enroll.py "$ZOO" runs/bench-mini/runs/split1/softmax --sizes 10,50,200
fi

# 5. why is metric learning behind here? one factor at a time, splits 1-2
if want 5; then
$PY bench/methods.py "$ZOO" --splits split1,split2 --methods metric "${COMMON[@]}" --epochs 30 \
    --option augment=none --out runs/bench-mini-metric-noaug
$PY bench/methods.py "$ZOO" --splits split1,split2 --methods metric "${COMMON[@]}" --epochs 30 \
    --option pretrain_epochs=5 --out runs/bench-mini-metric-pretrain
$PY bench/methods.py "$ZOO" --splits split1,split2 --methods metric "${COMMON[@]}" --epochs 6 \
    --option backbone=simple_cnn --option augment=none --option input=dct --out runs/bench-mini-metric-simplecnn
# training length: the same simple_cnn variant for 30 epochs
$PY bench/methods.py "$ZOO" --splits split1,split2 --methods metric "${COMMON[@]}" --epochs 30 \
    --option backbone=simple_cnn --option augment=none --option input=dct --out runs/bench-mini-metric-simplecnn30
# ... and softmax and pose-base for the same 30 epochs (a fair length comparison)
$PY bench/methods.py "$ZOO" --splits split1,split2 --methods softmax,pose-base "${COMMON[@]}" --epochs 30 \
    --out runs/bench-mini-len30
# the ProxyNCA++ temperature T = 1 / proxy_scale^2 (default scale 3, T = 1/9), and the crop
for sc in 1 2; do
    $PY bench/methods.py "$ZOO" --splits split1,split2 --methods metric "${COMMON[@]}" --epochs 30 \
        --option backbone=simple_cnn --option augment=none --option input=dct --option proxy_scale=$sc \
        --out runs/bench-mini-metric-simplecnn30-s$sc
done
$PY bench/methods.py "$ZOO" --splits split1,split2 --methods metric "${COMMON[@]}" --epochs 30 \
    --option proxy_scale=1 --out runs/bench-mini-metric-s1
$PY bench/methods.py "$ZOO" --splits split1,split2 --methods metric "${COMMON[@]}" --epochs 30 \
    --option backbone=simple_cnn --option augment=none --option input=dct --option proxy_scale=1 --option crop=24 \
    --out runs/bench-mini-metric-simplecnn30-s1-crop24
# scoring separated from training: every score on the same trained networks (mini_scores.txt)
for s in split1 split2; do
    $PY bench/scores.py "$ZOO" runs/bench-mini-len30/runs/$s/softmax runs/bench-mini-len30/runs/$s/pose-base \
        runs/bench-mini-metric-simplecnn30/runs/$s/metric runs/bench-mini/runs/$s/metric \
        runs/bench-mini-metric-simplecnn30-s1/runs/$s/metric runs/bench-mini-metric-s1/runs/$s/metric --split $s
done
fi

# 6. what the step-5 findings give on all five splits: metric with score=knn (paper recipe,
#    then simple_cnn / DCT / T = 1 with centroids and with knn), softmax for the same 30 epochs
if want 6; then
ALL=(--splits split1,split2,split3,split4,split5 --methods)
$PY bench/methods.py "$ZOO" "${ALL[@]}" metric "${COMMON[@]}" --epochs 30 --option score=knn --out runs/bench-mini-metric-knn
BEST=(--option backbone=simple_cnn --option augment=none --option input=dct --option proxy_scale=1)
$PY bench/methods.py "$ZOO" "${ALL[@]}" metric "${COMMON[@]}" --epochs 30 "${BEST[@]}" --option score=knn \
    --out runs/bench-mini-metric-best-knn
$PY bench/methods.py "$ZOO" "${ALL[@]}" metric "${COMMON[@]}" --epochs 30 "${BEST[@]}" --out runs/bench-mini-metric-best
$PY bench/methods.py "$ZOO" "${ALL[@]}" softmax "${COMMON[@]}" --epochs 30 --out runs/bench-mini-len30
fi
