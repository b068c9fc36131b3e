#!/usr/bin/env bash
# The device check for a lent H100/H200 (no internet there), one 10-minute call. By default the paper-scale check
# (scripts/device_check.py, simlab.devtools.bench.paper_scale): random models of the exact shape of paper models
# (llama3_instruct 8B, then dsqwen32b; `architecture:` in conf/model/<name>.yaml), built on the GPU in bf16 with the
# paper's LoRA; the reference method, simlab per-row and simlab with shared prefixes on real WVS rows (training and
# evaluation rows/s and tokens/s, MFU against a measured bf16 matmul peak, peak memory, projected wall time of the
# paper's 5-epoch fine-tune and of the full test) and the largest training batch; a summary table and
# $OUT/device_check.json. No weights travel: the models are random, the rows ship in the package, the stand-in
# tokenizer (the embedded SmolLM2's, 3.5 MB) and the wheels are carried. Prepare here, once (docs/DISTRIBUTED.md):
#   scripts/device_check.sh --prepare      # wheels into .whl/, the stand-in tokenizer into .device/tokenizer/
# then on the device machine (run tool: command "bash scripts/device_check.sh", carry [".whl", ".device"],
# timeout_s 600):
#   bash scripts/device_check.sh [--models llama3_instruct,dsqwen32b] [--budget-s 500]   # scripts/device_check.py -h
#   (--compile [--compile-mode reduce-overhead --pack-length-multiple 32]: a compiled path too, with CUDA graphs)
#   bash scripts/device_check.sh --trainers   # instead: trainer=gpu and trainer=fsdp on a small random Llama
#                                             # (scripts/device_check_trainers.py; knobs STEPS, HIDDEN, LAYERS, BATCH)
# On a CPU, the same code at tiny shapes: python scripts/device_check.py --tiny (tests/test_device_check.py).
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ "${1:-}" == "--prepare" ]]; then
  mkdir -p .whl .device/tokenizer  # both git-ignored (.gitignore)
  # the stand-in tokenizer (simlab.devtools.bench.paper_models): the embedded SmolLM2's files, not its weights
  folder=$(${PYTHON:-.venv/bin/python} -c \
    "from simlab.model import embedded_model_dir as d; print(d('smollm2_135m_instruct'))")
  cp "$folder"/tokenizer.json "$folder"/tokenizer_config.json .device/tokenizer/
  if [[ -f "$folder/chat_template.jinja" ]]; then cp "$folder/chat_template.jinja" .device/tokenizer/; fi
  # what the device lacks (torch, transformers, peft are there); pure-Python wheels, pinned as in .venv
  download() {  # download FOLDER PACKAGE...: each at its version in .venv, a wheel for the device's Python 3.12
    local folder=$1 pkg version; shift
    mkdir -p "$folder"
    for pkg in "$@"; do
      version=$(${PYTHON:-.venv/bin/python} -c "import importlib.metadata as m; print(m.version('$pkg'))")
      python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        --platform any -d "$folder" "$pkg==$version" \
        || python3 -m pip wheel -q --no-deps -w "$folder" "$pkg==$version"  # an sdist only (antlr4): built here
    done
  }
  download .whl pytorch-lightning lightning-utilities torchmetrics hydra-core omegaconf antlr4-python3-runtime
  # the Hugging Face stack as pinned here: used only if the check fails with the device's own versions
  download .whl/pinned transformers peft huggingface-hub httpx2 httpcore2 truststore hf-xet tokenizers safetensors
  du -sh .whl .device
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
export PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True  # the largest-batch search runs into out-of-memory on purpose
if [[ "${1:-}" == "--trainers" ]]; then
  shift
  check() { python3 scripts/device_check_trainers.py "$@"; }
else
  check() { python3 scripts/device_check.py "$@"; }
fi
# Exit 3 from the paper-scale check: it ran to its summary, and a section failed or the paths disagreed (the
# summary says which); 2: a usage error. Neither is retried; any other failure (an import or set-up error) is run
# again with the pinned stack.
status=0; check "$@" || status=$?
if (( status != 0 && status != 2 && status != 3 )) && compgen -G ".whl/pinned/*.whl" > /dev/null; then
  echo "== the check failed ($status) with the device's packages: again with the Hugging Face stack pinned here"
  install .whl/pinned; versions
  status=0; check "$@" || status=$?
fi
exit $status
