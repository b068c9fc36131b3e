"""Regional compilation: each decoder layer through ``torch.compile``, so its small operations run fused.

Outside the linear layers a training step is dozens of small kernels per layer (RMSNorm, rotary embeddings, LoRA
dropout and scaling, SiLU times the up projection, residual adds), each dispatched from Python and each reading and
writing its activations. On a GPU at the paper's batch 8 that dispatch is the bottleneck: the 8B shape computed 13
ms of matrix work in a 190 ms step (experiments/PERFORMANCE.md, "Paper scale on one GPU"). ``torch.compile`` of each
decoder layer (``nn.Module.compile``: the layers share one compiled graph, the parameters stay where they are, so
checkpoints and adapters are unchanged) fuses those operations into a few generated kernels. Shapes are marked
dynamic from the start: every batch has its own length, and one graph serves them all. Random operations keep
torch's generator (inductor's ``fallback_random``), so LoRA dropout draws the masks an uncompiled run draws.

The shared-prefix two-pass layout passes each layer its prefix keys and values through a cache indexed by the
layer's number, which would compile one graph per layer; those calls run eagerly
(:func:`eager`, used by :func:`simlab.model.shared_prefix.answer_hidden_states`). Packed batches (every training
batch of the default recipe) and per-row batches run compiled.

``mode="reduce-overhead"`` (``module.compile_mode``) also records each layer's kernels as CUDA graphs on a GPU, so
a step replays them instead of launching each from Python: what a host-bound step needs. A graph is recorded per
input shape, so packed batches are padded to a few lengths (``data.pack_length_multiple``), and every decoder call
starts a new graph step (:func:`mark_step`, from :func:`simlab.model.scoring.option_logits`): the graphs' outputs
of the call before may then be overwritten. On a CPU torch records no CUDA graphs and the mode compiles as the
default one. Not measured on a GPU yet (experiments/PERFORMANCE.md, "Compiled decoder layers").

The first batch of each kind (training, evaluation) pays for the compilation (about 40 s for the embedded model on 2
CPU cores). On a CPU the generated kernels are C++, so a C++ compiler must be on the PATH; without one
:func:`compile_decoder_layers` says so before anything runs. Results equal eager ones up to float rounding
(tests/test_compilation.py); measured in experiments/PERFORMANCE.md ("Compiled decoder layers").
"""

from __future__ import annotations

import contextlib
import os
import shutil

import torch

# what torch's inductor looks for on a CPU, after $CXX
CPU_COMPILERS = ("g++", "clang++")
# torch.compile's modes (None: "default"); "reduce-overhead" adds CUDA graphs on a GPU
MODES = (None, "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
# set on the language model whose layers record CUDA graphs: its decoder calls mark graph steps (mark_step)
CUDA_GRAPHS_ATTRIBUTE = "_simlab_cuda_graph_steps"


class CompileUnavailable(RuntimeError):
    """torch.compile cannot run here (no C++ compiler for the CPU backend)."""


def check_compiler(device_type: str) -> None:
    """On a CPU, a C++ compiler for inductor's generated kernels ($CXX, else g++ or clang++ on the PATH)."""
    if device_type != "cpu":
        return
    candidates = ([os.environ["CXX"]] if os.environ.get("CXX") else []) + list(CPU_COMPILERS)
    if not any(shutil.which(name) for name in candidates):
        raise CompileUnavailable(
            f"module.compile=true: torch.compile's CPU backend needs a C++ compiler and none of "
            f"{', '.join(candidates)} is on the PATH (install g++ or set CXX, or run with module.compile=false)")


def decoder_layers(model) -> list[torch.nn.Module]:
    """The decoder's repeated layers of a transformers causal LM (peft-wrapped or not)."""
    from simlab.model.adapters import base_model

    layers = getattr(base_model(model).get_decoder(), "layers", None)
    if layers is None:
        raise ValueError(f"{type(base_model(model).get_decoder()).__name__} has no .layers to compile")
    return list(layers)


def compile_decoder_layers(model, mode: str | None = None) -> int:
    """Compile each decoder layer in place (dynamic shapes); the number of layers. ``mode`` is torch.compile's
    (None: its default; "reduce-overhead": CUDA graphs too; "max-autotune-no-cudagraphs" searches kernels longer)."""
    import torch._inductor.config as inductor_config

    from simlab.model.adapters import base_model

    if mode not in MODES:
        raise ValueError(f"compile mode {mode!r} is none of torch.compile's: {', '.join(str(m) for m in MODES)}")
    device = next(model.parameters()).device
    check_compiler(device.type)
    # random operations (LoRA dropout) through torch's own generator, as in eager mode: a compiled run draws the
    # same dropout masks as an uncompiled one with the same seed (inductor's own generator would draw others)
    inductor_config.fallback_random = True
    layers = decoder_layers(model)
    for layer in layers:
        layer.compile(dynamic=True, mode=mode)
    if mode == "reduce-overhead":
        setattr(base_model(model), CUDA_GRAPHS_ATTRIBUTE, True)
    return len(layers)


def mark_step(lm) -> None:
    """A new decoder call begins (``torch.compiler.cudagraph_mark_step_begin``) when ``lm``'s layers record CUDA
    graphs: the call before has consumed its graphs' outputs (its backward, if any, ran), so they may be reused."""
    if getattr(lm, CUDA_GRAPHS_ATTRIBUTE, False):
        torch.compiler.cudagraph_mark_step_begin()


def is_compiled(model) -> bool:
    """Whether every decoder layer runs compiled (``nn.Module.compile`` keeps the compiled call on the module)."""
    return all(getattr(layer, "_compiled_call_impl", None) is not None for layer in decoder_layers(model))


def eager() -> contextlib.AbstractContextManager:
    """Run compiled modules eagerly inside this block (``torch.compiler.set_stance("force_eager")``)."""
    return torch.compiler.set_stance("force_eager")
