"""The settings a simulation takes from a config (``simulate.batch_size`` / ``device`` / ``max_length``, the
adapter, the prompt), and the checks on them that must run before any model is loaded: torch would otherwise fail
only once the weights are moved or the first batch is made."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from simlab.data.prompts import PAPER_ANSWER_PREFIX
from simlab.simulator.bundle import DEFAULTS


def check_scoring_settings(batch_size: Any, device: Any) -> None:
    """``batch_size`` a positive integer and ``device`` one this machine has (None: CUDA when available), checked
    before any model is loaded: torch would fail only when the model is moved or the first batch is made."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size (simulate.batch_size) must be a positive integer, got {batch_size!r}")
    if device is None:
        return
    try:
        kind = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device={device!r} (simulate.device) is not a torch device ({err})") from None
    fallback = "use cpu, or leave simulate.device null (CUDA when available)"
    if kind.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} (simulate.device): CUDA is not available on this machine; {fallback}")
    if kind.type == "cuda" and kind.index is not None and kind.index >= torch.cuda.device_count():
        raise ValueError(f"device={device!r} (simulate.device): this machine has {torch.cuda.device_count()} CUDA "
                         f"device(s); {fallback}")
    if kind.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device={device!r} (simulate.device): MPS is not available on this machine; {fallback}")


def simulator_settings(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The Simulator's keyword arguments a resolved config sets: adapter, prompt, data root, name, and
    ``simulate.batch_size`` / ``device`` / ``max_length`` where given."""
    model_cfg, data_cfg = cfg["model"], cfg.get("data") or {}
    kwargs: dict[str, Any] = {
        "adapter": model_cfg.get("adapter"),
        "prompt_style": model_cfg.get("prompt_style", DEFAULTS["prompt_style"]),
        "chat_template": model_cfg.get("chat_template"),
        "answer_prefix": data_cfg.get("answer_prefix", PAPER_ANSWER_PREFIX),
        "prompt_order": data_cfg.get("prompt_order", DEFAULTS["prompt_order"]),
        "shared_prefix": bool(data_cfg.get("shared_prefix", False)),
        "data_root": data_cfg.get("root"),
        "name": model_cfg.get("name"),
    }
    simulate_cfg = cfg.get("simulate") or {}
    for key in ("batch_size", "device", "max_length"):
        if simulate_cfg.get(key) is not None:
            kwargs[key] = simulate_cfg[key]
    return kwargs
