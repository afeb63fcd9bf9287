#!/usr/bin/env bash
# Packs what the ViT face encoders (--face_encoder=gend|gend_dinov3|gend_pe|clip) import and the lent GPU
# machine's image lacks, for its Python 3.12: transformers (its CLIP and DINOv3 models only), huggingface_hub,
# safetensors and timm at requirements.txt's versions, and what they import at the versions main.sh installs
# with them, unpacked and xz-compressed into .gpu_vit/site.tar.xz (7 MiB, git-excluded). It runs
# ../shared/gpu/prepare.sh first, whose .gpu (62 MiB: the other wheels, PyAV, the test clips) leaves no room
# for it in one run's 64 MiB carry; so a device session runs twice, the second at once (a warm machine keeps
# the first's .gpu):
#   carry [".gpu"]:      source .gpu/setup.sh
#   carry [".gpu_vit"]:  source .gpu/setup.sh; tar -xJf .gpu_vit/site.tar.xz -C .gpu/site; python3 -m pytest -q tests
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
bash ../shared/gpu/prepare.sh
[ -d .git ] && { grep -qx '/.gpu_vit/' .git/info/exclude || echo '/.gpu_vit/' >> .git/info/exclude; }
pin() { grep -iE "^$1==" requirements.txt | sed 's/ .*//'; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 -d "$tmp/whl" \
  "$(pin transformers)" "$(pin huggingface_hub)" "$(pin safetensors)" "$(pin timm)" tokenizers==0.23.3 \
  regex==2026.12.2 pyyaml==6.0.4 httpx2==2.17.0 httpcore2==2.17.0 h11==0.16.0 idna==3.21 truststore==0.10.5 \
  2>&1 | grep -v WARNING || true
[ "$(ls "$tmp/whl" | wc -l)" = 12 ] || { echo "bench/gpu_wheels.sh: 12 wheels wanted, got: $(ls "$tmp/whl")" >&2; exit 1; }
mkdir "$tmp/site"
for wheel in "$tmp"/whl/*.whl; do
  (cd "$tmp/site" && unzip -qo "$wheel")
done
# 560 model families, 52 of transformers' 61 MB; its auto classes import the others' modules only by name
find "$tmp/site/transformers/models" -mindepth 1 -maxdepth 1 -type d ! -name auto ! -name clip ! -name dinov3_vit \
  -exec rm -rf {} +
mkdir -p .gpu_vit
out="$PWD/.gpu_vit/site.tar.xz"
(cd "$tmp/site" && tar -cf - . | xz -9 -T0 > "$out")
du -sh .gpu .gpu_vit | sed 's/\t/ /'
