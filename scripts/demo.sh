#!/usr/bin/env bash
# The end-to-end demo behind `make demo`: validate the public annotation files, build the
# tiny built-in zoo, train POSE on it, evaluate, calibrate and attribute a few images.
set -euo pipefail
cd "$(dirname "$0")/.."
OSMA=.venv/bin/osma
SHARED=../shared/pose_annotations
ZOO=${ZOO:-runs/zoo-tiny}
RUN=${RUN:-runs/demo-pose}
EPOCHS=${EPOCHS:-6}

echo "== 1. osma data check on the public POSE annotation files (split1, lists only)"
if [ -f "$SHARED/data_list.yaml" ]; then
  $OSMA data check "$SHARED/data_list.yaml" --split split1 --no-images
else
  echo "(../shared/pose_annotations not present: skipped)"
fi

echo; echo "== 2. the tiny built-in zoo (cached in $ZOO after the first build)"
$OSMA zoo build --preset tiny --out "$ZOO"
$OSMA data check "$ZOO/data_list.yaml" --split split1

echo; echo "== 3. train POSE on split1 ($EPOCHS epochs; resumes if interrupted)"
if [ -f "$RUN/model.json" ] && [ -f "$RUN/.demo-done" ]; then
  echo "(already trained: $RUN)"
else
  $OSMA train --data "$ZOO/data_list.yaml" --split split1 --method pose --out "$RUN" --epochs "$EPOCHS" --resume
  touch "$RUN/.demo-done"
fi

echo; echo "== 4. evaluate on known and unknown test images"
$OSMA evaluate "$RUN" --data "$ZOO/data_list.yaml" --split split1 --out "$RUN/report"
sed -n '1,40p' "$RUN/report/report.md"

echo; echo "== 4b. other knownness scores on the same network (fitted on the training images, no retraining)"
$OSMA evaluate "$RUN" --data "$ZOO/data_list.yaml" --split split1 --out "$RUN/scores" --no-plots \
    --score msp --score energy --score knn --score mahalanobis

echo; echo "== 5. calibrate the rejection threshold on validation data, then attribute a few images"
$OSMA calibrate "$RUN" --data "$ZOO/data_list.yaml" --split split1
python_pick() { .venv/bin/python - "$@" <<'PY'
import sys
from osma.data import load_split
s = load_split(sys.argv[1], "split1")
known = [str(x.path) for x in s.test[::max(1, len(s.test) // 4)][:4]]
unknown = [str(v[0].path) for v in s.test_out.values() if v]
print(" ".join(known + unknown))
PY
}
$OSMA attribute "$RUN" $(python_pick "$ZOO/data_list.yaml")
