"""Multi-device training: a Trainer that reaches the paper's effective batch, a LoRA-safe FSDP strategy, and the
helpers that keep checkpoints and adapters right when the model is wrapped.

Everything takes plain arguments (class paths as strings), so configs build it with ``_target_``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import partial

import torch
from hydra.utils import get_class
from torch import nn

log = logging.getLogger(__name__)

# Prefixes that wrappers insert into parameter names (FSDP units, activation checkpointing, torch.compile);
# state dicts are written without them, so names must be cleaned before they are compared with state-dict keys.
WRAPPER_PREFIXES = ("_fsdp_wrapped_module.", "_checkpoint_wrapped_module.", "_orig_mod.")


def clean_param_name(name: str) -> str:
    """A parameter name as it appears in a state dict, whatever wrappers sit in the module tree."""
    for prefix in WRAPPER_PREFIXES:
        name = name.replace(prefix, "")
    return name


def accumulation_for(effective_batch_size: int, batch_size: int, devices: int, num_nodes: int = 1) -> int:
    """Micro-batches per optimizer step so that batch_size x devices x nodes x accumulation = effective batch."""
    for label, value in (("effective_batch_size", effective_batch_size), ("batch_size", batch_size),
                         ("devices", devices), ("num_nodes", num_nodes)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{label} must be a positive integer, got {value!r}")
    per_step = batch_size * devices * num_nodes
    if effective_batch_size % per_step:
        raise ValueError(
            f"effective batch {effective_batch_size} is not a multiple of batch {batch_size} x {devices} devices x "
            f"{num_nodes} nodes = {per_step}; change data.batch_size or trainer.devices, or set "
            f"trainer.accumulate_grad_batches yourself"
        )
    return effective_batch_size // per_step


def build_trainer(
    effective_batch_size: int | None = None,
    batch_size: int | None = None,
    accumulate_grad_batches: int | None = None,
    devices: int | str = 1,
    num_nodes: int = 1,
    precision: str | int = "auto",
    **trainer_kwargs,
):
    """A ``pytorch_lightning.Trainer`` whose gradient accumulation reaches ``effective_batch_size`` rows per
    optimizer step (the paper's 16) for any device count. An explicit ``accumulate_grad_batches`` wins.
    ``precision="auto"``: bf16 autocast where the hardware does bf16 natively, else float32 (logged, with why)."""
    import pytorch_lightning as pl

    from simlab.training.precision import resolve_precision

    precision, why = resolve_precision(precision, str(trainer_kwargs.get("accelerator", "auto")))
    log.info("precision %s: %s", precision, why)

    if accumulate_grad_batches is None:
        if effective_batch_size is None:
            accumulate_grad_batches = 1
        else:
            if batch_size is None:
                raise ValueError("effective_batch_size needs batch_size (data.batch_size) to derive the accumulation")
            if not isinstance(devices, int):
                raise ValueError(
                    f"effective_batch_size needs an integer trainer.devices to derive the accumulation, got {devices!r}"
                )
            accumulate_grad_batches = accumulation_for(effective_batch_size, batch_size, devices, num_nodes)
    return pl.Trainer(
        devices=devices, num_nodes=num_nodes, accumulate_grad_batches=accumulate_grad_batches, precision=precision,
        **trainer_kwargs,
    )


def _is_trainable_leaf(module: nn.Module) -> bool:
    """LoRA's A and B matrices: leaf modules whose weight is trained (peft's own FSDP policy uses this test)."""
    weight = getattr(module, "weight", None)
    return next(module.children(), None) is None and isinstance(weight, torch.Tensor) and weight.requires_grad


def fsdp_auto_wrap_policy(layer_classes: Sequence[type], wrap_trainable_leaves: bool = True):
    """One FSDP unit per decoder layer; with ``wrap_trainable_leaves`` also one per LoRA matrix.

    FSDP flattens each unit's parameters into one tensor, which needs one dtype. The frozen base is bf16 while
    peft keeps LoRA weights in fp32, so the LoRA matrices get their own (tiny) units; frozen and trainable
    parameters can still share a unit because ``use_orig_params=True``.
    """
    from torch.distributed.fsdp.wrap import _or_policy, lambda_auto_wrap_policy, transformer_auto_wrap_policy

    layers = partial(transformer_auto_wrap_policy, transformer_layer_cls=set(layer_classes))
    if not wrap_trainable_leaves:
        return layers
    leaves = partial(lambda_auto_wrap_policy, lambda_fn=_is_trainable_leaf)
    return partial(_or_policy, policies=[leaves, layers])


MIXED_PRECISION = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def fsdp_strategy(
    decoder_layer: str | Sequence[str] | None,
    mixed_precision: str | None = "bf16",
    activation_checkpointing: bool = True,
    wrap_trainable_leaves: bool = True,
    state_dict_type: str = "full",
    sharding_strategy: str = "FULL_SHARD",
    process_group_backend: str | None = None,
    cpu_offload: bool = False,
    limit_all_gathers: bool = True,
):
    """A LoRA-safe ``FSDPStrategy`` built from the model config's decoder-layer class path(s).

    - ``use_orig_params=True``: frozen and trainable weights may share a unit, and the optimizer (which
      Lightning builds after wrapping, in ``strategy.setup``) sees the original LoRA parameters;
    - auto-wrap and activation checkpointing by the decoder-layer class;
    - ``mixed_precision``: parameters all-gathered and computed in this dtype, gradients reduced in fp32;
    - ``state_dict_type="full"`` (rank 0 only, offloaded to CPU): the module's ``on_save_checkpoint`` keeps
      only the LoRA weights, so a checkpoint is the adapter alone. Lightning's ``"sharded"`` format saves
      the adapter alone too, but loads it back through torch.distributed.checkpoint with every key of the
      model required, so ``trainer.test(ckpt_path=best)`` and resuming would fail on the frozen weights.
    """
    from pytorch_lightning.strategies import FSDPStrategy
    from torch.distributed.fsdp import MixedPrecision

    if not decoder_layer:
        raise ValueError(
            "trainer=fsdp needs model.decoder_layer: the transformer block class to wrap and checkpoint, e.g. "
            "transformers.models.llama.modeling_llama.LlamaDecoderLayer"
        )
    if state_dict_type not in ("full", "sharded"):
        raise ValueError(f"state_dict_type must be 'full' or 'sharded', got {state_dict_type!r}")
    paths = [decoder_layer] if isinstance(decoder_layer, str) else list(decoder_layer)
    classes = [get_class(p) for p in paths]
    precision = None
    if mixed_precision is not None:
        if mixed_precision not in MIXED_PRECISION:
            raise ValueError(
                f"mixed_precision must be one of {sorted(MIXED_PRECISION)} or null, got {mixed_precision!r}")
        dtype = MIXED_PRECISION[mixed_precision]
        precision = MixedPrecision(param_dtype=dtype, reduce_dtype=torch.float32, buffer_dtype=dtype)
    return FSDPStrategy(
        auto_wrap_policy=fsdp_auto_wrap_policy(classes, wrap_trainable_leaves),
        activation_checkpointing_policy=set(classes) if activation_checkpointing else None,
        mixed_precision=precision,
        state_dict_type=state_dict_type,
        sharding_strategy=sharding_strategy,
        process_group_backend=process_group_backend,
        cpu_offload=cpu_offload,
        use_orig_params=True,
        limit_all_gathers=limit_all_gathers,
    )


def is_rank_zero() -> bool:
    """True on the process that writes outputs. Known from the environment before any process group exists
    (torchrun: RANK; SLURM/srun: SLURM_PROCID; Lightning's own launcher: LOCAL_RANK and NODE_RANK)."""
    from lightning_fabric.utilities.rank_zero import _get_rank

    return (_get_rank() or 0) == 0


def check_launch(trainer, multirun: bool) -> None:
    """Refuse a Hydra sweep (``-m``) whose trainer would start its own extra processes.

    Lightning's subprocess launcher re-runs the script with the original command line for ranks 1..N-1; in a
    sweep that line holds ``-m`` and every sweep value, so each extra rank would re-run the whole sweep (and
    join the wrong jobs' process groups). Processes started outside (torchrun, srun, hydra/launcher=submitit_slurm
    with one task per GPU) are fine, and so is a single run.
    """
    environment = trainer.strategy.cluster_environment if hasattr(trainer.strategy, "cluster_environment") else None
    spawns = trainer.world_size > 1 and environment is not None and not environment.creates_processes_externally
    if multirun and spawns:
        raise RuntimeError(
            f"a Hydra sweep (-m) cannot use a trainer that launches its own {trainer.world_size} processes: each "
            f"extra rank would re-run the whole sweep. Run each job with torchrun/srun, use "
            f"hydra/launcher=submitit_slurm with one task per GPU, or loop over single runs (docs/DISTRIBUTED.md)"
        )
