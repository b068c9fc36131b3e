"""The reference method: the code path of Cao et al. (github.com/yongcaoplus/SimLLMCultureDist:
``custom_dataset.py``, ``inference.py``, ``llama_recipes/utils/train_utils.py``) re-implemented here:

* every prompt is tokenised in ``__getitem__`` at every pass with ``padding="max_length"`` to 512 tokens and an
  all-ones attention mask (``example.ge(0)``; right padding, so the pads never reach the answer slot),
* a plain ``model(...)`` forward returns logits for the whole vocabulary at every position,
* a Python loop per row reads ``logits[i, input_len - 1]``, gathers the option letters and computes
  ``F.kl_div(log_softmax(letters), human)`` (KL(human || model)), under ``torch.no_grad`` for evaluation.

Deliberate differences, so the two paths can be compared to 1e-4: the reference's ``kl_div`` with
``reduction="batchmean"`` divides a row's KL by its number of options; here it is the plain sum (simlab's loss).
Its letter ids ``tokenizer.encode(option[1:])[1]`` assume a BOS-prepending tokenizer (SmolLM2 has none), so both
paths use the letter ids simlab resolves in context.

:data:`simlab.devtools.bench.methods.REFERENCE` selects all of it; the ablation rungs drop it a piece at a time
(:func:`simlab.devtools.bench.paths.batches` and :func:`~simlab.devtools.bench.paths.batch_scores` choose).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from simlab.devtools.bench.workload import BenchData

REFERENCE_MAX_LENGTH = 512


def reference_item(data: BenchData, index: int) -> dict:
    """What the reference dataset's ``__getitem__`` returns: the prompt rendered and tokenised now, padded."""
    row = data.rows[index]
    text = data.prompt.render(row, data.tokenizer)
    special = data.prompt.add_special_tokens
    input_ids = data.tokenizer(
        text, padding="max_length", max_length=data.max_length, truncation=True, add_special_tokens=special
    )["input_ids"]
    input_length = len(data.tokenizer(text, add_special_tokens=special)["input_ids"])
    example = torch.tensor(input_ids, dtype=torch.int64)
    return {"input_ids": example, "attention_mask": example.ge(0).long(), "input_length": input_length}


def reference_batch(data: BenchData, group: list[int]) -> dict[str, torch.Tensor]:
    """The reference's batch of the rows at ``group``: its items stacked, with simlab's letter ids, option mask
    and targets (the per-row loop reads them)."""
    items = [reference_item(data, i) for i in group]
    options = max(len(data.encoded[i].letter_ids) for i in group)
    letter_ids = torch.zeros((len(group), options), dtype=torch.long)
    option_mask = torch.zeros((len(group), options), dtype=torch.bool)
    target = torch.zeros((len(group), options), dtype=torch.float32)
    for b, i in enumerate(group):
        k = len(data.encoded[i].letter_ids)
        letter_ids[b, :k] = torch.tensor(data.encoded[i].letter_ids)
        option_mask[b, :k] = True
        target[b, :k] = torch.tensor(data.rows[i].target)
    return {
        "row_index": torch.tensor(group, dtype=torch.long),
        "input_ids": torch.stack([item["input_ids"] for item in items]),
        "attention_mask": torch.stack([item["attention_mask"] for item in items]),
        "answer_index": torch.tensor([item["input_length"] - 1 for item in items]),
        "letter_ids": letter_ids,
        "option_mask": option_mask,
        "target": target,
    }


def pad_to(batch: dict[str, torch.Tensor], width: int, pad_token_id: int) -> dict[str, torch.Tensor]:
    """A dynamically padded batch widened to ``width`` with the reference's all-ones attention mask."""
    extra = width - batch["input_ids"].shape[1]
    padded = dict(batch)
    padded["input_ids"] = F.pad(batch["input_ids"], (0, extra), value=pad_token_id)
    padded["attention_mask"] = torch.ones_like(padded["input_ids"])
    return padded


def per_row_scores(
    logits: torch.Tensor, batch: dict[str, torch.Tensor], *, full_vocab: bool
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The reference's Python loop over the rows: each row's letters gathered from its answer slot (``full_vocab``:
    ``logits`` are [B, L, V]; otherwise option logits [B, K]), ``log_softmax`` and ``F.kl_div`` (the sum, see the
    module's note); (mean loss over the rows, each row's option probabilities)."""
    losses, probs = [], []
    for i, (answer_index, letter_ids, mask, target) in enumerate(
        zip(batch["answer_index"], batch["letter_ids"], batch["option_mask"], batch["target"])
    ):
        if full_vocab:
            pred = torch.gather(logits[i, answer_index], dim=-1, index=letter_ids[mask])
        else:
            pred = logits[i][mask]
        log_q = F.log_softmax(pred.float(), dim=-1)
        losses.append(F.kl_div(log_q, target[mask], reduction="sum"))
        probs.append(log_q.exp())
    return torch.stack(losses).mean(), probs
