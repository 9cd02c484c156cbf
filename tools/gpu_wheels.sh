#!/usr/bin/env bash
# Run with the project venv active (it pins the versions the tests used).
# Wheels a lent GPU machine lacks (Python 3.12 there; it has torch, timm, opencv, scikit-image,
# onnx, onnxruntime, safetensors, pyyaml, tqdm, pillow, scipy). Writes them to .whl/ (ignored);
# name .whl in the device call's `carry` and install there with
#   python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:src
set -euo pipefail
cd "$(dirname "$0")/.."
pkgs=(segmentation-models-pytorch albumentations albucore simsimd stringzilla pydantic pydantic-core
      annotated-types typing-inspection hydra-core omegaconf antlr4-python3-runtime==4.9.3 pytorch-msssim)
for p in "${pkgs[@]}"; do
  v=$(pip show "${p%%==*}" 2>/dev/null | awk '/^Version:/{print $2}')
  spec=$p; [[ $p != *==* && -n $v ]] && spec="$p==$v"   # the versions this venv tested
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any -d .whl "$spec" \
    || { rm -rf /tmp/sdist && python3 -m pip download -q --no-deps -d /tmp/sdist "$spec" \
         && python3 -m pip wheel -q --no-deps -w .whl /tmp/sdist/*; }   # sdist only (antlr4): pure Python
done
du -sh .whl
