#!/usr/bin/env bash
# The end-to-end demo behind `make demo`. Grows as the issues land.
set -euo pipefail
cd "$(dirname "$0")/.."
OSMA=.venv/bin/osma
SHARED=../shared/pose_annotations
echo "== osma data check on the public POSE annotation files (split1, lists only)"
if [ -f "$SHARED/data_list.yaml" ]; then
  $OSMA data check "$SHARED/data_list.yaml" --split split1 --no-images
else
  echo "(../shared/pose_annotations not present: skipped)"
fi
