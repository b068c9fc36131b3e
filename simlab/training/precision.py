"""Which numeric precision to train and test in, decided by what the hardware does fast.

bf16 autocast pays off only where the CPU multiplies bf16 natively (AVX512-BF16 or AMX): there it ran ~1.7x
faster than float32 here; on an AVX2-only CPU it is emulated and ran ~5x *slower* (a 720x576x1536 linear:
97 ms float32 vs 524 ms bf16). ``precision: auto`` picks per machine and says why.
"""

from __future__ import annotations

import logging

import torch

from simlab.runs.provenance import cpu_model

log = logging.getLogger(__name__)


def cpu_has_native_bf16() -> bool:
    """oneDNN's own test for native bf16 (AVX512-BF16 / AMX); False where it cannot tell."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_precision(precision: str | int, accelerator: str) -> tuple[str | int, str]:
    """(the Lightning precision to use, why). Anything but ``"auto"`` is kept as given."""
    if precision != "auto":
        return precision, "set in the trainer config"
    if accelerator == "cpu":
        capability = torch.backends.cpu.get_cpu_capability()
        if cpu_has_native_bf16():
            return "bf16-mixed", f"{cpu_model()} multiplies bf16 natively ({capability})"
        return "32-true", (f"{cpu_model()} has no native bf16 ({capability}): bf16 autocast would be emulated, "
                           f"several times slower than float32")
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16-mixed", f"{torch.cuda.get_device_name()} supports bf16"
    return "32-true", "no bf16-capable accelerator found"
