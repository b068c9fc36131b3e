"""The paths run on the bench's rows: batches, scores, evaluation and LoRA training steps as a
:class:`~simlab.devtools.bench.methods.Method` makes them.

simlab's path is the library's: rows encoded once by :class:`~simlab.data.SurveyDataModule`, length-grouped
batches (:class:`~simlab.data.batching.LengthGroupedBatchSampler`) padded to their own longest prompt
(:class:`~simlab.data.batching.PadCollator`), :func:`simlab.model.scoring.option_logits` (no full-vocabulary logits),
the masked :class:`~simlab.training.losses.KLDivergenceLoss`, and ``torch.inference_mode`` for evaluation.

The shared-prefix path is simlab's with :class:`~simlab.data.batching.PrefixGroupedBatchSampler` and
:class:`~simlab.data.batching.SharedPrefixCollator`: rows of one prompt prefix batched together, the prefix run once
per batch (:mod:`simlab.model.shared_prefix`). By default the rows are question_first prompts
(:class:`~simlab.data.prompts.PromptFormat` ``order``) sampled by whole questions, so a batch's rows share the
question and its options; ``--prompt-order paper`` measures the paper's prompt, whose rows share only the chat
template's head.

The reference method's pieces are in :mod:`simlab.devtools.bench.reference`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch

from simlab.data.batching import LengthGroupedBatchSampler, PadCollator, PrefixGroupedBatchSampler, SharedPrefixCollator
from simlab.devtools.bench.methods import Method
from simlab.devtools.bench.reference import pad_to, per_row_scores, reference_batch
from simlab.devtools.bench.workload import BenchData
from simlab.metrics.divergences import masked_softmax
from simlab.model.scoring import option_logits
from simlab.training.losses import KLDivergenceLoss


def batches(
    data: BenchData, method: Method, indices: Sequence[int], batch_size: int, *, train: bool, seed: int = 0
) -> Iterator[dict[str, torch.Tensor]]:
    """The batches ``method`` builds from ``indices`` (row positions in ``data``), with their tensors."""
    indices = list(indices)
    if method.shared_prefix:
        lengths, prefix_groups = data.lengths, data.groups
        sampler = PrefixGroupedBatchSampler(
            [lengths[i] for i in indices], [prefix_groups[i] for i in indices], batch_size, shuffle=train, seed=seed,
            num_replicas=1, rank=0,
        )
        collate = SharedPrefixCollator(data.pad_token_id, pack_max_tokens=method.pack_max_tokens,
                                       pack_length_multiple=method.pack_length_multiple)
        for batch in sampler:
            group = [indices[j] for j in batch]
            yield collate([(i, data.encoded[i]) for i in group])
        return
    if method.length_grouped:
        lengths = data.lengths
        sampler = LengthGroupedBatchSampler([lengths[i] for i in indices], batch_size, shuffle=train, seed=seed)
        groups = [[indices[j] for j in batch] for batch in sampler]
    else:
        if train:  # the reference's shuffled training loader (order does not change its cost: all rows are 512 long)
            indices = [indices[j] for j in torch.randperm(len(indices), generator=torch.Generator().manual_seed(seed))]
        groups = [indices[i : i + batch_size] for i in range(0, len(indices), batch_size)]
    collate = PadCollator(data.pad_token_id)
    for group in groups:
        if method.pad_to_max and not method.cached:
            yield reference_batch(data, group)
            continue
        encoded = [data.encoded[i] if method.cached else data.encode_now(i) for i in group]
        batch = collate(list(zip(group, encoded)))
        if method.pad_to_max:
            batch = pad_to(batch, data.max_length, data.pad_token_id)
        yield batch


def batch_scores(model, batch: dict[str, torch.Tensor], method: Method) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """(mean KL(human || model) over the batch's rows, each row's option probabilities) as ``method`` computes them.
    The batch is built on the CPU and moved to the model's device here (a no-op on a CPU)."""
    device = next(model.parameters()).device
    batch = {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    if method.full_vocab:
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits  # [B, L, V]
    else:
        logits = option_logits(model, batch)  # [B, K]
    if method.loop_loss:
        return per_row_scores(logits, batch, full_vocab=method.full_vocab)
    if method.full_vocab:
        rows = torch.arange(logits.shape[0], device=logits.device)
        logits = logits[rows, batch["answer_index"]].gather(-1, batch["letter_ids"]).float()
    loss = KLDivergenceLoss()(logits, batch["target"], batch["option_mask"])
    probs = masked_softmax(logits, batch["option_mask"])
    return loss, [p[m] for p, m in zip(probs, batch["option_mask"])]


@contextlib.contextmanager
def _threads(count: int | None):
    before = torch.get_num_threads()
    if count is not None:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass
class EvalResult:
    probs: dict[int, torch.Tensor] = field(default_factory=dict)  # row position -> option probabilities
    loss_sum: float = 0.0  # sum over rows of KL(human || model)

    @property
    def loss(self) -> float:
        return self.loss_sum / max(len(self.probs), 1)


def execution(method: Method) -> contextlib.AbstractContextManager:
    """Compiled decoder layers run only for a ``compiled`` method; every other path runs them eagerly."""
    from simlab.model import compilation

    return contextlib.nullcontext() if method.compiled else compilation.eager()


def evaluate(
    model, data: BenchData, method: Method, indices: Sequence[int], batch_size: int, autocast: bool = False
) -> EvalResult:
    """Score ``indices`` with ``method`` (no gradients: ``no_grad`` or ``inference_mode``)."""
    model.eval()
    result = EvalResult()
    grad_mode = torch.inference_mode() if method.inference_mode else torch.no_grad()
    with (_threads(method.threads), execution(method), grad_mode,
          torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast)):
        for batch in batches(data, method, indices, batch_size, train=False):
            loss, probs = batch_scores(model, batch, method)
            result.loss_sum += float(loss) * len(probs)
            for row, p in zip(batch["row_index"].tolist(), probs):
                result.probs[row] = p.detach().float().clone()
    return result


def train_steps(
    model, optimizer, data: BenchData, method: Method, indices: Sequence[int], batch_size: int, *, seed: int,
    autocast: bool = False,
) -> list[float]:
    """One pass of LoRA training steps (forward, backward, optimizer step) over ``indices``; the step losses."""
    model.train()
    losses = []
    with _threads(method.threads), execution(method):
        for batch in batches(data, method, indices, batch_size, train=True, seed=seed):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                loss, _ = batch_scores(model, batch, method)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.item())
    return losses


def max_prob_difference(a: EvalResult, b: EvalResult) -> float:
    """Largest absolute difference of any option probability between two evaluations of the same rows."""
    if a.probs.keys() != b.probs.keys():
        raise ValueError("the two evaluations scored different rows")
    return max(float((a.probs[r] - b.probs[r]).abs().max()) for r in a.probs)

