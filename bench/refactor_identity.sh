#!/usr/bin/env bash
# Behaviour preserved across a refactoring: suite step 1 (softmax, pose, metric) and step 6's
# metric with the knn score, on one split, run by a baseline revision and by the working tree,
# then compared figure by figure (bench/compare_reports.py). Training is deterministic, so a
# refactoring that changes nothing gives identical figures.
#   bash bench/refactor_identity.sh ZOO_DATA_LIST BASELINE_REV OUT [SPLIT]
# e.g. bash bench/refactor_identity.sh runs/zoo-mini/data_list.yaml 46de851 runs/identity-mini split1
# The baseline is checked out with `git worktree` next to OUT and run with PYTHONPATH (same venv).
# Note: the baseline's bench/methods.py selects the knn score with --option score=knn; after
# 46de851 the flag is --score knn (both mean the same training and score).
set -euo pipefail
cd "$(dirname "$0")/.."
ZOO=$(realpath "$1"); REV=$2; OUT=$(realpath -m "$3"); SPLIT=${4:-split1}
PY="$PWD/.venv/bin/python"  # not realpath: the venv's python is a symlink to the system one
BASE="$OUT/baseline-src"
[ -d "$BASE" ] || git worktree add --detach "$BASE" "$REV" >/dev/null
COMMON=(--splits "$SPLIT" --epochs 6 --option batches_per_epoch=20 --no-plots)
(cd "$BASE" && PYTHONPATH=src "$PY" bench/methods.py "$ZOO" "${COMMON[@]}" --methods softmax,pose,metric \
    --method-epochs metric=30 --out "$OUT/before")
(cd "$BASE" && PYTHONPATH=src "$PY" bench/methods.py "$ZOO" "${COMMON[@]}" --methods metric --epochs 30 \
    --option score=knn --out "$OUT/before-knn")
"$PY" bench/methods.py "$ZOO" "${COMMON[@]}" --methods softmax,pose,metric --method-epochs metric=30 --out "$OUT/after"
"$PY" bench/methods.py "$ZOO" "${COMMON[@]}" --methods metric --epochs 30 --score knn --out "$OUT/after-knn"
"$PY" bench/compare_reports.py "$OUT/before" "$OUT/after"
"$PY" bench/compare_reports.py "$OUT/before-knn" "$OUT/after-knn"
