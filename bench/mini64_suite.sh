#!/usr/bin/env bash
# The runs behind the whole-image evidence and robustness tables of docs/real-images.md
# (issue 15), on the `mini64` zoo (64x64 images, training crop 32). Resumable: finished
# runs are skipped. Needs the zoo: `make zoo-mini64`. Run nothing else CPU-heavy meanwhile.
# Steps can be run alone: `bash bench/mini64_suite.sh 2 3`. Outputs go to $RES
# (bench/results/mini64/ by default); runs to $OUT.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
ZOO=${ZOO:-runs/zoo-mini64/data_list.yaml}
OUT=${OUT:-runs/bench-mini64}
RES=${RES:-bench/results/mini64}
SPLITS=${SPLITS:-split1,split2,split3,split4,split5}
STEPS=${*:-1 2 3 4}
want() { [[ " $STEPS " == *" $1 "* ]]; }
mkdir -p "$RES"

# 1. POSE and metric on every split, with the budget of the mini tables (bench/mini_suite.sh step 1)
if want 1; then
$PY bench/methods.py "$ZOO" --splits "$SPLITS" --methods pose,metric --epochs 6 \
    --option batches_per_epoch=20 --no-plots --method-epochs metric=30 --out "$OUT"
cp "$OUT/table.md" "$RES/methods.md"; cp "$OUT/table.json" "$RES/methods.json"
fi

# 2. one centre crop vs the 2x2 grid that covers the whole 64x64 image, every aggregation
if want 2; then
PYTHONPATH=src $PY bench/crops.py "$ZOO" --runs-root "$OUT" --splits "$SPLITS" --methods pose,metric \
    --crops 1,4 --agg mean,mean_score,vote,max --json "$RES/crops.json" | tee "$RES/crops.md"
fi

# 3. robustness of split1's POSE and metric, one crop and four (500 random images of every list)
if want 3; then
for m in pose metric; do
    for n in 1 4; do
        PYTHONPATH=src $PY bench/robustness.py "$OUT/runs/split1/$m" "$ZOO" --split split1 --crops "$n" --limit 500 \
            | tee "$RES/robustness_split1_${m}_crops$n.txt"
    done
done
fi

# 4. the zoo's sanity check (how separable its sources are), as for mini
if want 4; then
: > "$RES/sanity.txt"
for s in ${SPLITS//,/ }; do
    $PY bench/zoo_sanity.py "$ZOO" --split "$s" | tee -a "$RES/sanity.txt"
done
fi
