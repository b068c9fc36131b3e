"""The paper's seven model configs: each composes, and a tiny random twin of each family (same architecture
class, a tokenizer of the same kind, the family's chat template) trains a LoRA step through the real config."""

from __future__ import annotations

import math

import pytest
import pytorch_lightning as pl
import torch
from conftest import compose_config, tiny_dsqwen, tiny_llama3, tiny_vicuna
from hydra.utils import get_class, instantiate

from simlab.data.prompts import PAPER_ANSWER_PREFIX
from simlab.model import PAPER_LORA, ModelNotAvailable, attach_lora, load_language_model, paper_lora_config

PAPER_MODELS = {
    # config: (hub id, prompt style, architecture class, decoder layer class name)
    "vicuna7b": ("lmsys/vicuna-7b-v1.5", "chat", "LlamaForCausalLM", "LlamaDecoderLayer"),
    "vicuna13b": ("lmsys/vicuna-13b-v1.5", "chat", "LlamaForCausalLM", "LlamaDecoderLayer"),
    "llama3_base": ("meta-llama/Meta-Llama-3-8B", "plain", "LlamaForCausalLM", "LlamaDecoderLayer"),
    "llama3_instruct": ("meta-llama/Meta-Llama-3-8B-Instruct", "chat", "LlamaForCausalLM", "LlamaDecoderLayer"),
    "dsqwen7b": ("deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", "chat", "Qwen2ForCausalLM", "Qwen2DecoderLayer"),
    "dsqwen14b": ("deepseek-ai/DeepSeek-R1-Distill-Qwen-14B", "chat", "Qwen2ForCausalLM", "Qwen2DecoderLayer"),
    "dsqwen32b": ("deepseek-ai/DeepSeek-R1-Distill-Qwen-32B", "chat", "Qwen2ForCausalLM", "Qwen2DecoderLayer"),
}


@pytest.mark.parametrize("name", sorted(PAPER_MODELS))
def test_paper_model_config_composes(name, tmp_path):
    hub_id, style, _, layer = PAPER_MODELS[name]
    cfg = compose_config(f"model={name}", f"paths.output_dir={tmp_path}")
    model = cfg.model
    assert model.name == name and model.hub_id == hub_id and model.path is None
    assert model.prompt_style == style and cfg.data.prompt_style == style
    assert model.loader.hub_id == hub_id and model.loader.dtype == "bfloat16"
    assert get_class(model.decoder_layer).__name__ == layer
    lora = instantiate(model.lora, _convert_="all")
    assert (lora.r, lora.lora_alpha, lora.lora_dropout) == (8, 32, 0.05)
    assert set(lora.target_modules) == {"q_proj", "v_proj"}
    if name.startswith("vicuna"):
        assert "USER: " in model.chat_template and "ASSISTANT:" in model.chat_template
    if name.startswith("dsqwen"):
        assert "</think>" in model.chat_template


@pytest.mark.parametrize("name", [*sorted(PAPER_MODELS), "smollm2_135m", "hf"])
def test_every_model_takes_the_one_paper_lora(name, tmp_path):
    """conf/model/lora/paper.yaml is the model configs' LoRA, with the values the bench uses (PAPER_LORA)."""
    from conftest import REPO
    from omegaconf import OmegaConf

    shared = OmegaConf.to_container(OmegaConf.load(REPO / "conf/model/lora/paper.yaml"))
    assert shared == {"_target_": "peft.LoraConfig", **PAPER_LORA}
    cfg = compose_config(f"model={name}", "model.path=/models/x", f"paths.output_dir={tmp_path}")
    expected = {**shared, "target_modules": "all-linear"} if name == "hf" else shared
    assert OmegaConf.to_container(cfg.model.lora) == expected
    if name != "hf":
        assert instantiate(cfg.model.lora, _convert_="all") == paper_lora_config()


def test_missing_paper_model_names_the_hub_id(tmp_path):
    cfg = compose_config("model=dsqwen32b", f"paths.output_dir={tmp_path}")
    # Hydra's instantiate wraps errors: a sweep finds ModelNotAvailable as the cause
    with pytest.raises(Exception) as info:
        instantiate(cfg.model.loader)
    assert isinstance(info.value.__cause__, ModelNotAvailable) and issubclass(ModelNotAvailable, FileNotFoundError)
    assert "deepseek-ai/DeepSeek-R1-Distill-Qwen-32B" in str(info.value.__cause__)
    assert "HF_HUB_OFFLINE=1 forbids downloading it" in str(info.value.__cause__)  # tests download nothing


def test_missing_local_path_names_the_path(tmp_path):
    with pytest.raises(ModelNotAvailable, match=str(tmp_path / "nowhere")):
        load_language_model(path=str(tmp_path / "nowhere"), hub_id="lmsys/vicuna-7b-v1.5")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotAvailable, match="no config.json"):
        load_language_model(path=str(tmp_path / "empty"))


FAMILIES = {
    # config: (builder, the end of every rendered prompt)
    "vicuna7b": (tiny_vicuna, " ASSISTANT:" + PAPER_ANSWER_PREFIX),
    "llama3_instruct": (tiny_llama3, "<|start_header_id|>assistant<|end_header_id|>\n\n" + PAPER_ANSWER_PREFIX),
    "llama3_base": (tiny_llama3, None),  # plain: the paper's string, no template
    "dsqwen7b": (tiny_dsqwen, "<｜Assistant｜><think>\n\n</think>\n\n" + PAPER_ANSWER_PREFIX),
}


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_tiny_family_twin_trains_a_step_through_the_real_config(name, tmp_path, shared_data):
    builder, prompt_end = FAMILIES[name]
    folder = builder(tmp_path / "model")
    cfg = compose_config(
        f"model={name}", f"model.path={folder}", f"paths.output_dir={tmp_path / 'out'}", f"data.root={shared_data}",
        "data.limit_per_subset=8", "data.max_length=2048", "data.test_subsets=[C1-Q2]", "logger=none",
    )
    lm = instantiate(cfg.model.loader)
    assert lm.source == str(folder)  # model.path wins over the hub id
    assert type(lm.model).__name__ == PAPER_MODELS[name][2]
    assert lm.model.dtype == torch.bfloat16
    assert any(isinstance(m, get_class(cfg.model.decoder_layer)) for m in lm.model.modules())
    lm.model = attach_lora(lm.model, instantiate(cfg.model.lora, _convert_="all"))
    datamodule = instantiate(cfg.data, tokenizer=lm.tokenizer)
    datamodule.setup()

    row = datamodule.rows["C1-Q1"][0]
    text = datamodule.prompt.render(row, lm.tokenizer)
    ids = datamodule.encode(row).input_ids
    if cfg.model.prompt_style == "plain":
        assert text.endswith(row.question + ", ".join(row.options) + PAPER_ANSWER_PREFIX) and "<|" not in text
        assert ids[0] == lm.tokenizer.bos_token_id and ids.count(lm.tokenizer.bos_token_id) == 1
    else:
        assert text.endswith(prompt_end)
        assert ids[0] == lm.tokenizer.bos_token_id and ids.count(lm.tokenizer.bos_token_id) == 1  # no doubled BOS
    # letters resolved in context: each one is the single next token after the prompt
    for letter in row.letters:
        with_letter = lm.tokenizer(text + letter, add_special_tokens=datamodule.prompt.add_special_tokens)["input_ids"]
        assert with_letter == ids + [datamodule.letter_ids[letter]]
    assert len(set(datamodule.letter_ids.values())) == len(datamodule.letter_ids)

    module = instantiate(cfg.module, model=lm.model, loss=instantiate(cfg.loss), test_subsets=datamodule.test_subsets)
    trainable = {n: p.detach().clone() for n, p in module.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    losses = []

    class RecordLoss(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            losses.append(float(trainer.callback_metrics["train/loss"]))

    trainer = instantiate(
        cfg.trainer, max_steps=1, limit_val_batches=0, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, callbacks=[RecordLoss()],
    )
    trainer.fit(module, datamodule=datamodule)
    assert trainer.global_step == 1 and len(losses) == 1 and math.isfinite(losses[0]) and losses[0] > 0
    changed = [n for n, p in module.named_parameters() if p.requires_grad and not torch.equal(p.detach(), trainable[n])]
    assert changed, "no LoRA weight moved in the training step"
