"""The LightningModule: option-restricted next-token distributions, a swappable distribution loss,
and per-subset survey metrics."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Sequence

import pytorch_lightning as pl
import torch
from torch import nn

from simlab.metrics.divergences import masked_softmax
from simlab.metrics.registry import survey_metrics
from simlab.model.scoring import simulator_logits
from simlab.training.distributed import clean_param_name

VALID_SNAPSHOT_KEY = "simlab_valid_snapshot"

log = logging.getLogger(__name__)


class SurveyLitModule(pl.LightningModule):
    """Fine-tunes (or only evaluates) a causal LM as a survey-distribution simulator.

    Args:
        model: a transformers causal LM, usually wrapped by peft with LoRA (only trainable weights are
            optimised and checkpointed).
        loss: a module ``loss(logits, target, mask) -> scalar`` from :mod:`simlab.training.losses`.
        optimizer: ``optimizer(params) -> torch.optim.Optimizer`` (a partial, e.g. AdamW with lr 1e-4).
        scheduler: ``scheduler(optimizer, total_steps, steps_per_epoch) -> (lr scheduler, "step"|"epoch")``, a
            schedule of :mod:`simlab.training.schedules`; None keeps the learning rate constant.
        test_subsets: names of the test dataloaders, in order.
        compile: compile each decoder layer with ``torch.compile`` at setup (:mod:`simlab.model.compilation`; one
            process only): fused small operations, the first batches slower while it compiles.
        compile_mode: torch.compile's mode for that (None: its default; "reduce-overhead": CUDA graphs on a GPU,
            best with ``data.pack_length_multiple`` so that batches come in a few lengths).
    """

    def __init__(
        self,
        model: nn.Module,
        loss: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        test_subsets: Sequence[str] = (),
        scheduler: Callable | None = None,
        compile: bool = False,
        compile_mode: str | None = None,
    ):
        super().__init__()
        if compile_mode is not None and not compile:
            raise ValueError(f"module.compile_mode={compile_mode} compiles nothing without module.compile=true")
        self.model = model
        # transformers loads in eval mode; Lightning keeps submodule modes, so LoRA dropout needs this
        self.model.train()
        self.loss = loss
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.test_subsets = list(test_subsets)
        self.val_metrics = survey_metrics()
        self.test_metrics = nn.ModuleDict({name: survey_metrics() for name in self.test_subsets})
        self.test_results: dict[str, dict[str, float]] = {}
        self.test_predictions: dict[str, dict[int, list[float]]] = {name: {} for name in self.test_subsets}
        # The last validation's scores and per-row probabilities (saved in each checkpoint), and the test subsets
        # whose scores are taken from a checkpoint's instead of testing them again (simlab.training.reuse)
        self.valid_snapshot: dict | None = None
        self.reused_tests: dict[str, dict] = {}
        self._val_predictions: dict[int, list[float]] = {}
        # Checkpoints hold only the trainable (LoRA) weights; the frozen base comes from the model path.
        self.strict_loading = False
        self._bf16_cpu = False  # prepared for bf16 autocast on a CPU (setup): frozen weights stored in bf16
        self._compile, self._compile_mode = compile, compile_mode  # not self.compile: that is nn.Module's compile()
        self._compiled = False  # decoder layers compiled (setup)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Option probabilities [B, K] (exact zeros in padded slots)."""
        return masked_softmax(simulator_logits(self.model, batch), batch["option_mask"])

    def training_step(self, batch, batch_idx):
        logits = simulator_logits(self.model, batch)
        loss = self.loss(logits, batch["target"], batch["option_mask"])
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["target"]))
        return loss

    def validation_step(self, batch, batch_idx):
        logits = simulator_logits(self.model, batch)
        loss = self.loss(logits, batch["target"], batch["option_mask"])
        probs = masked_softmax(logits, batch["option_mask"])
        self.val_metrics.update(probs, batch["target"], batch["option_mask"])
        self.log("val/loss", loss, batch_size=len(batch["target"]))
        _record(self._val_predictions, batch["row_index"], probs, batch["option_mask"])

    def on_validation_epoch_start(self):
        self._val_predictions = {}

    def on_validation_epoch_end(self):
        values = {name: float(value) for name, value in self.val_metrics.compute().items()}
        for name, value in values.items():
            self.log(f"val/{name}", value, prog_bar=name == "one_minus_jsd")
        self.val_metrics.reset()
        sanity = self.trainer.sanity_checking if self._trainer is not None else False
        single = self._trainer is None or self.trainer.world_size == 1  # a rank's predictions are its shard only
        self.valid_snapshot = None if sanity or not single else {
            "step": int(self.global_step), "metrics": values, "predictions": self._val_predictions}
        self._val_predictions = {}

    @property
    def tested_subsets(self) -> list[str]:
        """The test subsets the test loaders hold, in order (those in ``reused_tests`` are not tested again)."""
        return [name for name in self.test_subsets if name not in self.reused_tests]

    def on_test_epoch_start(self):
        self.test_predictions = {name: {} for name in self.test_subsets}
        datamodule = getattr(self.trainer, "datamodule", None)
        # per loader, (subset, start, end) row ranges of its dataset: a merged loader holds several subsets
        self._test_parts = (datamodule.test_parts() if hasattr(datamodule, "test_parts")
                            else [[(subset, 0, sys.maxsize)] for subset in self.tested_subsets])

    def test_step(self, batch, batch_idx, dataloader_idx: int = 0):
        probs = self(batch)
        rows = batch["row_index"]
        for subset, start, end in self._test_parts[dataloader_idx]:
            index = ((rows >= start) & (rows < end)).nonzero().squeeze(1)
            if len(index):
                self.test_metrics[subset].update(probs[index], batch["target"][index], batch["option_mask"][index])
                _record(self.test_predictions[subset], rows[index] - start, probs[index], batch["option_mask"][index])

    def on_test_epoch_end(self):
        self._gather_test_predictions()
        for subset in self.test_subsets:
            metrics = self.test_metrics[subset]
            if subset in self.reused_tests:  # the same weights scored these rows in a validation
                values = self._take_reused(subset)
            else:
                values = {name: float(v) for name, v in metrics.compute().items()}
            values["n"] = len(self.test_predictions[subset])
            self.test_results[subset] = values
            for name, value in values.items():
                if name != "n":
                    self.log(f"test/{subset}/{name}", value, add_dataloader_idx=False)
            metrics.reset()

    def _take_reused(self, subset: str) -> dict[str, float]:
        reused = self.reused_tests[subset]
        self.test_predictions[subset] = {int(row): list(p) for row, p in reused["predictions"].items()}
        return dict(reused["metrics"])

    def take_reused_tests(self) -> None:
        """Scores and predictions of every test subset from ``reused_tests``, without a test loop: when all of them
        are reused (a recipe search tests C1-Q2 alone), Lightning would run no test hooks over zero loaders."""
        if self.tested_subsets:
            raise ValueError(f"test subsets {self.tested_subsets} are not reused: run the test loop")
        self.test_predictions = {name: {} for name in self.test_subsets}
        for subset in self.test_subsets:
            self.test_results[subset] = {**self._take_reused(subset), "n": len(self.test_predictions[subset])}

    def setup(self, stage: str) -> None:
        """Under bf16 autocast on one CPU, the frozen base weights are stored in bf16 once instead of being cast in
        every forward pass, and training steps run attention as matrix products
        (:func:`simlab.training.precision.prepare_for_bf16_cpu`). With ``compile``, the decoder layers are compiled
        (once, in one process)."""
        from pytorch_lightning.accelerators import CPUAccelerator

        from simlab.training.precision import prepare_for_bf16_cpu

        trainer = self.trainer
        bf16 = str(trainer.precision) == "bf16-mixed"
        if bf16 and isinstance(trainer.accelerator, CPUAccelerator) and trainer.world_size == 1:
            if not self._bf16_cpu:
                log.info("bf16 on a CPU: %s", prepare_for_bf16_cpu(self.model))
                self._bf16_cpu = True
        elif self._bf16_cpu:
            raise ValueError(f"this model's frozen weights were stored in bf16 for a bf16-mixed run on one CPU; "
                             f"it cannot run in precision {trainer.precision} (load the model again)")
        if self._compile and not self._compiled:
            from simlab.model.compilation import compile_decoder_layers

            if trainer.world_size != 1:
                raise ValueError(f"module.compile=true runs in one process; this trainer has {trainer.world_size} "
                                 f"(compiled layers under DDP/FSDP are not checked here): set module.compile=false")
            layers = compile_decoder_layers(self.model, mode=self._compile_mode)
            log.info("compiling %d decoder layers with torch.compile (dynamic shapes, mode %s): the first training "
                     "step and the first evaluation batch take longer while it compiles", layers,
                     self._compile_mode or "default")
            self._compiled = True

    def on_train_start(self) -> None:
        if self._compile_mode == "reduce-overhead":  # stable .grad buffers before a graph records (optimizer_zero_grad)
            for param in self.model.parameters():
                if param.requires_grad and param.grad is None:
                    param.grad = torch.zeros_like(param)

    def optimizer_zero_grad(self, epoch, batch_idx, optimizer) -> None:
        """Under CUDA graphs (``compile_mode="reduce-overhead"``) gradients are zeroed in place, never freed: a
        ``.grad`` first allocated by a recorded backward lives in the graphs' memory, which the next replay overwrites
        (gradient accumulation would then read overwritten values; torch raises)."""
        optimizer.zero_grad(set_to_none=self._compile_mode != "reduce-overhead")

    def configure_optimizers(self):
        if self.optimizer_factory is None:
            raise ValueError("no optimizer configured: this module was built for evaluation only")
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        if not trainable:
            raise ValueError("the model has no trainable parameters (attach a LoRA adapter to fine-tune)")
        optimizer = self.optimizer_factory(trainable)
        if self.scheduler_factory is None:
            return optimizer
        total = int(self.trainer.estimated_stepping_batches)
        per_epoch = max(1, total // max(1, self.trainer.max_epochs or 1))
        scheduler, interval = self.scheduler_factory(optimizer, total, per_epoch)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": interval}}

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        """Clip by norm under FSDP too: Lightning's FSDP precision plugin refuses to (the gradients are sharded, a
        local norm would be wrong), FSDP's own ``clip_grad_norm_`` computes the global norm across the shards."""
        from torch.distributed.fsdp import FullyShardedDataParallel

        wrapped = self.trainer.model
        by_norm = gradient_clip_algorithm in (None, "norm")
        if gradient_clip_val and by_norm and isinstance(wrapped, FullyShardedDataParallel):
            wrapped.clip_grad_norm_(gradient_clip_val)
            return
        super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)

    def _gather_test_predictions(self) -> None:
        """Each rank tested its share of the rows (the metrics sync themselves): merge every rank's predictions."""
        dist = torch.distributed
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return
        gathered = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, self.test_predictions)
        merged: dict[str, dict[int, list[float]]] = {name: {} for name in self.test_subsets}
        for part in gathered:
            for subset, rows in part.items():
                merged[subset].update(rows)
        self.test_predictions = merged

    def on_save_checkpoint(self, checkpoint):
        # names cleaned of FSDP / activation-checkpointing wrapper prefixes, as the state dict writes them
        trainable = {clean_param_name(name) for name, p in self.named_parameters() if p.requires_grad}
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in trainable}
        if self.valid_snapshot is not None:  # plain data: a weights_only load reads it
            checkpoint[VALID_SNAPSHOT_KEY] = self.valid_snapshot


def _record(predictions: dict[int, list[float]], rows: torch.Tensor, probs: torch.Tensor, mask: torch.Tensor) -> None:
    """Each row's option probabilities (its padded option slots dropped), by row index."""
    for row_index, row_probs, row_mask in zip(rows, probs, mask):
        predictions[int(row_index)] = row_probs[row_mask].double().tolist()
