#!/usr/bin/env bash
# The main job, from a fresh clone: a virtual environment with requirements.txt (and
# requirements-nodeps.txt, installed without dependencies: see it), the embedded sample dataset, and
# every stage of the pipeline on it, through training, test.py's report and predict.py's submission.
# Outputs go to out/. Rerunning it resumes (every stage does) and redoes nothing.
set -euo pipefail
cd "$(dirname "$0")"
[ -x .venv/bin/python ] || "${PYTHON:-python3}" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -r requirements.txt
.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps -r requirements-nodeps.txt
PY=.venv/bin/python
DATA=data/sample
OUT=out
mkdir -p "$OUT"

$PY make_sample_dataset.py --output_dir=$DATA

# The real VGGFace2 embedder where its weights can be had; else say so and go on untrained (recorded
# in every table and report as embedder 'untrained(seed=0)').
if FACE_WEIGHTS_CHECK=$($PY -m common.weights face "${FACE_WEIGHTS:-vggface2}" 2>&1); then
    FACE=${FACE_WEIGHTS:-vggface2}
else
    echo "main.sh: ${FACE_WEIGHTS_CHECK#weights unavailable: } -- going on with an untrained embedder (FACE_WEIGHTS=/path/to/weights.pt bash main.sh to use a local copy)"
    FACE=none
fi

$PY create_video_embeddings.py --data_dir=$DATA --output=$OUT/video_embeddings.pkl --face_weights=$FACE
$PY extract_audio.py --data_dir=$DATA --audio_dir=$OUT/audio
$PY create_audio_embedding.py --audio_dir=$OUT/audio --output=$OUT/audio_embeddings.pkl
$PY merge_embeddings.py --video_table=$OUT/video_embeddings.pkl --audio_table=$OUT/audio_embeddings.pkl \
    --output=$OUT/merged.pkl
# four videos: the split holds out one original with its fake (the numbers only show that it runs)
$PY training.py --dataset=$OUT/merged.pkl --out_dir=$OUT/run --val_fraction=0.5 --max_epochs=20
$PY test.py --dataset=$OUT/merged.pkl --checkpoint=$OUT/run/best.pt --report=$OUT/report.json
$PY predict.py --input=$DATA --checkpoint=$OUT/run/best.pt --output=$OUT/submission.csv --face_weights=$FACE
echo "main.sh: done; the report is $OUT/report.json, the submission $OUT/submission.csv"
