"""A few LoRA training steps through the real config on CPU, for tests/test_distributed.py.

Run as a script (Lightning's DDP launcher re-runs this file once per extra rank, with the same arguments):

    python tests/distributed_worker.py OUT.json TRAINER DEVICES override ...

It composes conf/ with the Hydra compose API (no @hydra.main: the ranks must not make run directories),
trains on the real rows, tests one subset, and rank 0 writes OUT.json with every micro-batch loss (indexed as
the single-process run sees it), the test predictions, and the LoRA weights of the adapter written from the
last checkpoint.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # this checkout's simlab (Lightning re-runs this file per rank), whatever is installed


def main(out_file: str, trainer_name: str, devices: int, *overrides: str) -> None:
    import pytorch_lightning as pl
    import torch
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate
    from safetensors.torch import load_file

    from simlab.model import attach_lora
    from simlab.simulator.checkpoints import adapter_from_checkpoint

    out = Path(out_file)
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(
            "config",
            overrides=[
                f"trainer={trainer_name}", "trainer.accelerator=cpu", f"trainer.devices={devices}",
                "trainer.precision=32-true", "trainer.limit_val_batches=0", "trainer.log_every_n_steps=1",
                "logger=none", f"paths.output_dir={out.parent / out.stem}", *overrides,
            ],
        )
    pl.seed_everything(cfg.seed, workers=True)
    # one thread in every process: the single process and each rank then reduce in the same order (with the default
    # thread count, last-bit differences in the shared-prefix gradients grew through Adam to 3e-4 on 2 of 512 weights)
    torch.set_num_threads(1)
    lm = instantiate(cfg.model.loader)
    lm.model = attach_lora(lm.model, instantiate(cfg.model.lora, _convert_="all"))
    datamodule = instantiate(cfg.data, tokenizer=lm.tokenizer)
    datamodule.setup()
    module = instantiate(cfg.module, model=lm.model, loss=instantiate(cfg.loss), test_subsets=datamodule.test_subsets)

    losses: dict[int, float] = {}
    shared_prefix_batches: list[bool] = []

    class RecordLoss(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            shared_prefix_batches.append("prefix_ids" in batch or "packed_ids" in batch)
            # this rank's batch_idx-th batch is batch batch_idx * world + rank of the single-process order
            losses[batch_idx * trainer.world_size + trainer.global_rank] = float(trainer.callback_metrics["train/loss"])

    checkpoint = pl.callbacks.ModelCheckpoint(dirpath=str(out.parent / f"{out.stem}-ckpt"), save_last=True)
    trainer = instantiate(cfg.trainer, callbacks=[RecordLoss(), checkpoint], logger=False, enable_progress_bar=False)
    trainer.fit(module, datamodule=datamodule)
    trainer.test(module, datamodule=datamodule, verbose=False)

    gathered = [losses]
    if torch.distributed.is_initialized():
        gathered = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(gathered, losses)
    if trainer.is_global_zero:
        merged = {k: v for part in gathered for k, v in part.items()}
        adapter = adapter_from_checkpoint(module.model, checkpoint.last_model_path, out.parent / f"{out.stem}-adapter")
        weights = load_file(adapter / "adapter_model.safetensors")
        out.write_text(json.dumps({
            "world_size": trainer.world_size,
            "accumulate_grad_batches": trainer.accumulate_grad_batches,
            "optimizer_steps": trainer.global_step,
            "losses": [merged[k] for k in sorted(merged)],
            "predictions": {s: {str(i): p for i, p in rows.items()} for s, rows in module.test_predictions.items()},
            "test_results": module.test_results,
            "adapter": {k: v.float().flatten().tolist() for k, v in sorted(weights.items())},
            "shared_prefix_batches": all(shared_prefix_batches) if any(shared_prefix_batches) else False,
        }))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), *sys.argv[4:])
