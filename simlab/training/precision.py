"""Which numeric precision to train and test in, decided by what the hardware does fast, measured on it.

bf16 autocast pays off only where bf16 matrix products run faster than float32 ones. Native bf16 is not enough:
on an AVX2-only CPU bf16 is emulated and ran ~5x *slower* (a 720x576x1536 linear: 97 ms float32 vs 524 ms bf16);
on an AVX512-BF16 CPU without AMX (`Intel(R) Xeon(R) Processor`, 2 threads, torch 2.13) a 2048^3 matmul ran at
155 GFLOP/s in bf16 against 263 in float32, and `make run` took 44.7 minutes under bf16 autocast. So on a CPU with
native bf16, ``precision: auto`` times a bf16 and a float32 matmul in turns (about 0.2 s) and takes bf16 only when
it is clearly faster (:data:`BF16_MIN_SPEEDUP`); it logs both speeds. A resumed run continues in its first choice,
read from its checkpoint rather than measured again (a busy machine can time the two otherwise:
:func:`simlab.training.callbacks.recorded_precision`); an explicitly different one is refused
(:class:`simlab.training.callbacks.ResumeCheckpoint`).
"""

from __future__ import annotations

import logging
import time

import torch

from simlab.runs.provenance import cpu_model

log = logging.getLogger(__name__)

# bf16 autocast also casts every weight and activation; below this matmul speed-up it is not worth it (and the
# margin keeps a machine from flipping between the two on timing noise)
BF16_MIN_SPEEDUP = 1.25


def cpu_has_native_bf16() -> bool:
    """oneDNN's own test for native bf16 (AVX512-BF16 / AMX); False where it cannot tell."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


PROBE_SIZE, PROBE_TOKENS = 1024, 512  # the probe's matmul: [tokens, size] x [size, size]


def matmul_gflops(dtype: torch.dtype, size: int = PROBE_SIZE, tokens: int = PROBE_TOKENS, repeats: int = 8,
                  device: torch.device | str = "cpu") -> float:
    """The best of ``repeats`` timings (after a warm-up) of a [tokens, size] x [size, size] matmul in ``dtype`` on
    ``device``, in GFLOP/s; on a CPU at torch's current thread count, the one training will use. Its own generator:
    drawing from torch's global one would shift every later random draw (LoRA dropout masks), so a run would depend
    on whether it measured."""
    return _best_gflops([dtype], size, tokens, repeats, torch.device(device))[0]


def bf16_cpu_speeds(repeats: int = 16) -> tuple[float, float]:
    """(bf16, float32) matmul GFLOP/s on this CPU, measured now, the two timed in turns (best of each): a burst of
    other work then slows both alike instead of only the one timed first. Timed one after the other, a run once
    measured bf16 at 214 GFLOP/s against 190 and trained in float32, on a CPU that had measured 405 against 160."""
    bf16, fp32 = _best_gflops([torch.bfloat16, torch.float32], PROBE_SIZE, PROBE_TOKENS, repeats, torch.device("cpu"))
    return bf16, fp32


def _best_gflops(dtypes: list[torch.dtype], size: int, tokens: int, repeats: int,
                 device: torch.device) -> list[float]:
    """GFLOP/s of a [tokens, size] x [size, size] matmul in each of ``dtypes``, best of ``repeats`` rounds that time
    each dtype once in turn, after one untimed round (the backend picks and caches its kernels)."""
    generator = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(tokens, size, generator=generator, device=device)
    b = torch.randn(size, size, generator=generator, device=device)
    operands = [(a.to(dtype), b.to(dtype)) for dtype in dtypes]
    best = [float("inf")] * len(dtypes)
    with torch.inference_mode():
        for repeat in range(repeats + 1):
            for index, (x, y) in enumerate(operands):
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                start = time.perf_counter()
                torch.mm(x, y)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                if repeat:
                    best[index] = min(best[index], time.perf_counter() - start)
    return [2 * tokens * size * size / max(seconds, 1e-9) / 1e9 for seconds in best]


def resolve_precision(precision: str | int, accelerator: str) -> tuple[str | int, str]:
    """(the Lightning precision to use, why). Anything but ``"auto"`` is kept as given."""
    if precision != "auto":
        return precision, "set in the trainer config"
    if accelerator == "cpu":
        capability = torch.backends.cpu.get_cpu_capability()
        if not cpu_has_native_bf16():
            return "32-true", (f"{cpu_model()} has no native bf16 ({capability}): bf16 autocast would be emulated, "
                               f"several times slower than float32")
        bf16, fp32 = bf16_cpu_speeds()
        speeds = (f"a bf16 matmul ran at {bf16:.0f} GFLOP/s against {fp32:.0f} in float32 "
                  f"({torch.get_num_threads()} threads, measured now)")
        if bf16 >= BF16_MIN_SPEEDUP * fp32:
            return "bf16-mixed", f"{cpu_model()} multiplies bf16 natively ({capability}) and faster: {speeds}"
        return "32-true", (f"{cpu_model()} multiplies bf16 natively ({capability}) but not faster than float32: "
                           f"{speeds}, under the {BF16_MIN_SPEEDUP}x that bf16 autocast needs to pay off")
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16-mixed", f"{torch.cuda.get_device_name()} supports bf16"
    return "32-true", "no bf16-capable accelerator found"


def prepare_for_bf16_cpu(model) -> dict[str, object]:
    """What a bf16 autocast run on one CPU changes in its model (same products, or bf16 rounding only): frozen linear
    weights stored in bf16 once (:func:`cast_frozen_linear_weights`) and attention run as matrix products while
    training (:mod:`simlab.model.cpu_attention`). Returns what it did, for the log."""
    from simlab.model import cpu_attention
    from simlab.model.adapters import base_model

    cast = cast_frozen_linear_weights(model)
    lm = base_model(model)
    cpu_attention.use_for_training(lm)  # only a model that runs sdpa switches
    return {"frozen_weights_in_bf16": cast, "attention": lm.config._attn_implementation}


def cast_frozen_linear_weights(model, dtype: torch.dtype = torch.bfloat16) -> int:
    """Store the frozen weights of the decoder's linear layers in ``dtype``, once; the number of tensors cast.

    Under autocast each linear layer casts its weight to bf16 on every call, and autocast's cache keeps only leaf
    tensors that require grad: the frozen base weights (all but LoRA's) were cast again in every forward pass (a
    copy of ~100M weights per batch; `copy_` was 10% of a bf16 evaluation's profile and 5% of a training step's on a
    2-core AVX512-BF16 CPU). Stored once, training ran ~5% faster there, evaluation no faster (its products read
    the weights from memory instead of from the fresh copy). Autocast's cast rounds exactly as this one does, so
    the products, and every prediction, are bit for bit the same. Only for
    passes that run under autocast: outside it a float32 input meets a bf16 weight. The embeddings (the output one
    is read by :func:`simlab.model.scoring.option_logits`, outside any linear layer) and trainable weights stay."""
    from simlab.model.adapters import base_model

    lm = base_model(model)
    embeddings = {id(module.weight) for module in (lm.get_input_embeddings(), lm.get_output_embeddings())
                  if module is not None and getattr(module, "weight", None) is not None}
    cast = 0
    for module in lm.get_decoder().modules():
        if not isinstance(module, torch.nn.Linear):
            continue
        for name in ("weight", "bias"):
            tensor = getattr(module, name)
            if (tensor is None or tensor.requires_grad or id(tensor) in embeddings or tensor.dtype == dtype
                    or not tensor.is_floating_point()):
                continue
            tensor.data = tensor.data.to(dtype)
            cast += 1
    return cast
