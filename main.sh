#!/usr/bin/env bash
# The main job, from a fresh clone: a virtual environment with requirements.txt, the embedded sample
# dataset, and the pipeline's stages on it. Outputs go to out/. Rerunning it resumes (every stage does).
set -euo pipefail
cd "$(dirname "$0")"
[ -x .venv/bin/python ] || "${PYTHON:-python3}" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -r requirements.txt
PY=.venv/bin/python
DATA=data/sample
OUT=out
mkdir -p "$OUT"

$PY make_sample_dataset.py --output_dir=$DATA

# The real VGGFace2 embedder where its weights can be had; else say so and go on untrained (recorded
# in every table as embedder 'untrained(seed=0)').
if FACE_WEIGHTS_CHECK=$($PY -m common.weights face "${FACE_WEIGHTS:-vggface2}" 2>&1); then
    FACE=${FACE_WEIGHTS:-vggface2}
else
    echo "main.sh: ${FACE_WEIGHTS_CHECK#weights unavailable: } -- going on with an untrained embedder (FACE_WEIGHTS=/path/to/weights.pt bash main.sh to use a local copy)"
    FACE=none
fi

$PY create_video_embeddings.py --data_dir=$DATA --output=$OUT/video_embeddings.pkl --face_weights=$FACE
