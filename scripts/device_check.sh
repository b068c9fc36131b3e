#!/usr/bin/env bash
# GPU check for a lent H100/H200 (no internet there): a few LoRA steps with trainer=gpu and trainer=fsdp on a
# small random Llama (built on the machine: the embedded SmolLM2 folder is 517 MB, over the 64 MiB carry limit),
# printing tokens/s and peak GPU memory for each. Prepare here, once (see docs/DISTRIBUTED.md):
#   scripts/device_check.sh --prepare      # downloads the wheels to .whl/ (the survey data ships in the package)
# then run on the device machine with carry [".whl"]:
#   bash scripts/device_check.sh
# Knobs: STEPS (default 10), HIDDEN (1024), LAYERS (12), BATCH (8).
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ "${1:-}" == "--prepare" ]]; then
  grep -qx '/.whl/' .git/info/exclude || echo /.whl/ >> .git/info/exclude
  mkdir -p .whl
  # what the device lacks (torch, transformers, peft are there); pure-Python wheels, pinned as in .venv
  download() {  # download FOLDER PACKAGE...: each at the version pinned in .venv, as a wheel for the device's Python 3.12
    local folder=$1 pkg version; shift
    mkdir -p "$folder"
    for pkg in "$@"; do
      version=$(.venv/bin/python -c "import importlib.metadata as m; print(m.version('$pkg'))")
      python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        --platform any -d "$folder" "$pkg==$version" \
        || python3 -m pip wheel -q --no-deps -w "$folder" "$pkg==$version"  # an sdist only (antlr4): built here, pure Python
    done
  }
  download .whl pytorch-lightning lightning-utilities torchmetrics hydra-core omegaconf antlr4-python3-runtime
  # the Hugging Face stack as pinned here: used only if the check fails with the device's own versions
  download .whl/pinned transformers peft huggingface-hub httpx2 httpcore2 truststore hf-xet tokenizers safetensors
  du -sh .whl
  exit 0
fi

install() {  # install FOLDER: its wheels into a new folder outside the repository, put first on PYTHONPATH
  local site; site=$(mktemp -d)
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" "$1"/*.whl
  export PYTHONPATH=$site:${PYTHONPATH:-}
}
if compgen -G ".whl/*.whl" > /dev/null; then install .whl; fi  # what the device lacks
export PYTHONPATH=$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1  # data: $SIMLAB_DATA if set, else the shipped copy
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
versions() {
  python3 -c "import importlib.metadata as m; print(', '.join(p + ' ' + m.version(p) for p in
    ('torch', 'transformers', 'peft', 'pytorch-lightning', 'torchmetrics', 'hydra-core')))"
}
versions
if ! python3 - < scripts/device_check.py; then
  if ! compgen -G ".whl/pinned/*.whl" > /dev/null; then exit 1; fi
  echo "== the check failed with the device's packages: again with the Hugging Face stack pinned as in .venv"
  install .whl/pinned; versions
  python3 - < scripts/device_check.py
fi
