"""The trainers check (``bash scripts/device_check.sh --trainers``): LoRA steps with trainer=gpu and trainer=fsdp
on a random Llama built here.

Run by scripts/device_check.sh on a lent GPU (it sets PYTHONPATH; the data is the copy shipped in the package unless
SIMLAB_DATA is set); knobs STEPS, HIDDEN, LAYERS, BATCH.
"""
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

sys.path.insert(0, "tests")
from conftest import build_tokenizer  # the in-code byte-level BPE of the test suite
from transformers import LlamaConfig, LlamaForCausalLM

from simlab.model import attach_lora

steps, hidden, layers, batch = (int(os.environ.get(k, d)) for k, d in
                                (("STEPS", 10), ("HIDDEN", 1024), ("LAYERS", 12), ("BATCH", 8)))
folder = Path(tempfile.mkdtemp()) / "model"
tokenizer = build_tokenizer(vocab_size=2000)
torch.manual_seed(0)
model = LlamaForCausalLM(LlamaConfig(
    vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=hidden * 4, num_hidden_layers=layers,
    num_attention_heads=hidden // 64, num_key_value_heads=hidden // 128, max_position_embeddings=4096,
    tie_word_embeddings=False, pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
    eos_token_id=tokenizer.eos_token_id,
))
model.save_pretrained(folder)
tokenizer.save_pretrained(folder)
params = sum(p.numel() for p in model.parameters()) / 1e6
print(f"model: random Llama {layers} layers x {hidden} hidden, {params:.0f}M parameters, bf16; "
      f"batch {batch}, {steps} optimizer steps")


class Throughput(pl.Callback):
    """Tokens (non-padding) per second over the optimizer steps after the first (warm-up) one."""
    def __init__(self):
        self.tokens, self.start = 0, None
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step >= 1:
            if self.start is None:
                torch.cuda.synchronize()
                self.start = time.perf_counter()
            self.tokens += int(batch["attention_mask"].sum()) * trainer.world_size
    def on_train_end(self, trainer, pl_module):
        torch.cuda.synchronize()
        self.seconds = time.perf_counter() - self.start


results = {}
for name in ("gpu", "fsdp"):
    with initialize_config_dir(config_dir=str(Path("conf").resolve()), version_base="1.3"):
        cfg = compose("config", overrides=[
            "model=hf", f"model.path={folder}", "model.loader.dtype=bfloat16",
            "model.decoder_layer=transformers.models.llama.modeling_llama.LlamaDecoderLayer",
            f"trainer={name}", "trainer.devices=1", f"data.batch_size={batch}", "data.max_length=2048",
            "data.test_subsets=[C1-Q2]", "logger=none", f"paths.output_dir={folder.parent / name}",
        ])
    pl.seed_everything(0)
    lm = instantiate(cfg.model.loader)
    lm.model = attach_lora(lm.model, instantiate(cfg.model.lora, _convert_="all"))
    datamodule = instantiate(cfg.data, tokenizer=lm.tokenizer)
    datamodule.setup()
    module = instantiate(cfg.module, model=lm.model, loss=instantiate(cfg.loss), test_subsets=datamodule.test_subsets)
    meter = Throughput()
    trainer = instantiate(cfg.trainer, max_steps=steps + 1, limit_val_batches=0, logger=False,
                          enable_checkpointing=False, enable_progress_bar=False, callbacks=[meter])
    torch.cuda.reset_peak_memory_stats()
    trainer.fit(module, datamodule=datamodule)
    peak = torch.cuda.max_memory_allocated() / 2**30
    rate = meter.tokens / meter.seconds
    results[name] = {"tokens_per_s": round(rate), "peak_memory_gib": round(peak, 2),
                     "accumulate": trainer.accumulate_grad_batches, "strategy": type(trainer.strategy).__name__,
                     "loss": float(trainer.callback_metrics["train/loss"])}
    print(f"{name}: {rate:,.0f} tokens/s, peak memory {peak:.2f} GiB ({results[name]})")
    del trainer, module, lm
    torch.cuda.empty_cache()
out = os.environ.get("OUT")
if out:
    Path(out, "device_check.json").write_text(json.dumps(results, indent=1))
