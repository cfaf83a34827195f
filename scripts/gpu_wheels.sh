#!/usr/bin/env bash
# Wheels for a bare GPU machine whose Python (3.12, with torch, Lightning, joblib and PyYAML)
# lacks what sdexp needs from Hydra: hydra-core, omegaconf, antlr4-python3-runtime (and the
# joblib launcher for hydra/launcher=gpu_shared). wandb is not needed with logger=csv.
# Run where the package index answers; the wheels land in .whl/ (ignored by git), which goes to
# the GPU machine with the checkout and is installed there first:
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
# (the whole procedure: python scripts/gpu_check.py --help). About 0.5 MB in all.
set -euo pipefail
cd "$(dirname "$0")/.."
exclude=$(git rev-parse --git-path info/exclude)
mkdir -p "$(dirname "$exclude")"
grep -qx '/.whl/' "$exclude" 2>/dev/null || echo '/.whl/' >>"$exclude"
python=${PYTHON:-python3}
rm -rf .whl
mkdir -p .whl
# pure-Python wheels; one version of each (two stop the install there)
$python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d .whl \
  hydra-core==1.3.2 omegaconf==2.3.0 hydra-joblib-launcher==1.2.0
# antlr4-python3-runtime 4.9.3 (what omegaconf 2.3 needs) is published as a source archive only:
# build its pure-Python wheel here
$python -m pip wheel -q --no-deps --no-build-isolation -w .whl antlr4-python3-runtime==4.9.3
ls -l .whl
