"""`make bench`: evaluation and LoRA-training throughput of simlab against the reference method, in one process.

The reference method is the code path of Cao et al. (github.com/yongcaoplus/SimLLMCultureDist:
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

All paths run on the same model object, dtype and thread count. ``--ablation`` walks from the reference to simlab a
step at a time (:data:`EVAL_LADDER`, :data:`TRAIN_LADDER`) to measure what each step contributes.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import statistics
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
import torch.nn.functional as F

from simlab import commandline
from simlab.data import SurveyDataModule
from simlab.data.batching import (
    EncodedDataset,
    EncodedRow,
    LengthGroupedBatchSampler,
    PadCollator,
    PrefixGroupedBatchSampler,
    SharedPrefixCollator,
    computed_tokens,
)
from simlab.metrics.divergences import masked_softmax
from simlab.model.scoring import option_logits
from simlab.training.losses import KLDivergenceLoss

REFERENCE_MAX_LENGTH = 512


# ---------------------------------------------------------------------------------------------- methods
@dataclass(frozen=True)
class Method:
    """How rows are batched and scored. The reference and simlab are the two ends; the ablation walks between.

    pad_to_max: pad every prompt to ``max_length`` (tokenizer ``padding="max_length"``) instead of to the
        batch's own longest prompt.
    length_grouped: batches of similar length (simlab's sampler) instead of the rows' order.
    cached: use the prompts tokenised once by the datamodule instead of tokenising in ``__getitem__`` every pass.
    full_vocab: ``model(...).logits`` over the whole vocabulary at every position instead of ``option_logits``.
    loop_loss: gather letters and compute the loss row by row in Python instead of the masked batch loss.
    inference_mode: ``torch.inference_mode`` instead of ``torch.no_grad`` for evaluation.
    threads: torch intra-op threads (None: the run's setting).
    shared_prefix: batches of one prompt prefix, the prefix run once per batch (needs ``cached``).
    """

    name: str
    pad_to_max: bool = True
    length_grouped: bool = False
    cached: bool = False
    full_vocab: bool = True
    loop_loss: bool = True
    inference_mode: bool = False
    threads: int | None = None
    shared_prefix: bool = False


REFERENCE = Method("reference")
SIMLAB = Method(
    "simlab", pad_to_max=False, length_grouped=True, cached=True, full_vocab=False, loop_loss=False,
    inference_mode=True,
)
SHARED = replace(SIMLAB, name="shared-prefix", shared_prefix=True)

# Each rung adds one step to the one before; the last two are simlab's path and simlab's path at 1 thread.
EVAL_LADDER = [
    REFERENCE,
    replace(REFERENCE, name="+ dynamic padding (batch's longest)", pad_to_max=False),
    replace(REFERENCE, name="+ length-grouped batches", pad_to_max=False, length_grouped=True),
    replace(REFERENCE, name="+ tokenised once (cached)", pad_to_max=False, length_grouped=True, cached=True),
    replace(SIMLAB, name="+ option logits only (no full vocab)", loop_loss=True, inference_mode=False),
    replace(SIMLAB, name="+ masked batch loss (no Python loop)", inference_mode=False),
    replace(SIMLAB, name="+ torch.inference_mode = simlab"),
    replace(SIMLAB, name="simlab at 1 thread", threads=1),
]
TRAIN_LADDER = [rung for rung in EVAL_LADDER if "inference_mode" not in rung.name]
TRAIN_LADDER[-2] = replace(TRAIN_LADDER[-2], name="+ masked batch loss = simlab")


# ---------------------------------------------------------------------------------------------- data
@dataclass
class BenchData:
    """The benchmark rows: the datamodule's encoded rows (simlab) and what the reference tokenises on the fly."""

    datamodule: SurveyDataModule
    subset: str
    max_length: int = REFERENCE_MAX_LENGTH

    def __post_init__(self) -> None:
        self.rows = self.datamodule.rows[self.subset]
        self.encoded: list[EncodedRow] = self.datamodule.datasets[self.subset].encoded
        self.tokenizer = self.datamodule.tokenizer
        self.prompt = self.datamodule.prompt
        self.pad_token_id = self.tokenizer.pad_token_id
        longest = max(len(e.input_ids) for e in self.encoded)
        if longest > self.max_length:
            raise ValueError(f"a prompt has {longest} tokens, more than the reference's max_length {self.max_length}")

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def lengths(self) -> list[int]:
        return [len(e.input_ids) for e in self.encoded]

    @property
    def groups(self) -> list[int]:
        return [e.prefix_group for e in self.encoded]

    def reference_item(self, index: int) -> dict:
        """What the reference dataset's ``__getitem__`` returns: the prompt rendered and tokenised now, padded."""
        row = self.rows[index]
        text = self.prompt.render(row, self.tokenizer)
        special = self.prompt.add_special_tokens
        input_ids = self.tokenizer(
            text, padding="max_length", max_length=self.max_length, truncation=True, add_special_tokens=special
        )["input_ids"]
        input_length = len(self.tokenizer(text, add_special_tokens=special)["input_ids"])
        example = torch.tensor(input_ids, dtype=torch.int64)
        return {"input_ids": example, "attention_mask": example.ge(0).long(), "input_length": input_length}

    def encode_now(self, index: int) -> EncodedRow:
        """The row tokenised now, as the datamodule does once in setup."""
        return self.datamodule.encode(self.rows[index])


def load_bench_data(
    tokenizer, *, root: str | None, rows: int, seed: int, prompt_style: str = "chat",
    file: str = "wvs7/sft_wvs_valid.json", data_type: str = "valid", subset: str = "C1-Q2",
    max_length: int = REFERENCE_MAX_LENGTH, prompt_order: str = "paper", sample: str = "rows",
) -> BenchData:
    """A seeded sample of ``rows`` rows of one subset, read and encoded by the library's datamodule.

    ``sample="rows"``: the datamodule's seeded row sample (``limit_per_subset``). ``sample="questions"``: whole
    questions (all their countries) in a seeded random order until ``rows`` rows, the last question cut short.
    """
    if sample not in ("rows", "questions"):
        raise ValueError(f"sample must be 'rows' or 'questions', got {sample!r}")
    datamodule = SurveyDataModule(
        tokenizer, files=[file], subset_names={data_type: subset}, train_subset=None, valid_subset=subset,
        test_subsets=[], root=root, prompt_style=prompt_style, limit_per_subset=rows if sample == "rows" else None,
        seed=seed, max_length=max_length, prompt_order=prompt_order,
    )
    datamodule.setup("validate")
    if sample == "questions":
        every = datamodule.rows[subset]
        by_question: dict[str, list[int]] = {}
        for position, row in enumerate(every):
            by_question.setdefault(row.question_id, []).append(position)
        questions = sorted(by_question)
        random.Random(f"bench:{seed}").shuffle(questions)
        keep: list[int] = []
        for question in questions:
            if len(keep) >= rows:
                break
            keep.extend(by_question[question][: rows - len(keep)])
        datamodule.rows[subset] = [every[i] for i in keep]
        datamodule.datasets[subset] = EncodedDataset([datamodule.datasets[subset].encoded[i] for i in keep])
    return BenchData(datamodule, subset, max_length=max_length)


def grouped_order(data: BenchData, seed: int) -> list[int]:
    """Every row position, questions in a seeded random order and each question's rows shuffled: the bench's
    evaluation chunks and training runs are cut from this order, so they hold whole questions (the same chunks
    whatever the prompt order, so the per-row path pads alike for both orders)."""
    rng = random.Random(seed)
    members: dict[str, list[int]] = {}
    for position, row in enumerate(data.rows):
        members.setdefault(row.question_id, []).append(position)
    keys = sorted(members)
    rng.shuffle(keys)
    order: list[int] = []
    for key in keys:
        rows = list(members[key])
        rng.shuffle(rows)
        order.extend(rows)
    return order


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
        collate = SharedPrefixCollator(data.pad_token_id)
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
            yield _reference_batch(data, group)
            continue
        encoded = [data.encoded[i] if method.cached else data.encode_now(i) for i in group]
        batch = collate(list(zip(group, encoded)))
        if method.pad_to_max:
            batch = _pad_to(batch, data.max_length, data.pad_token_id)
        yield batch


def _reference_batch(data: BenchData, group: list[int]) -> dict[str, torch.Tensor]:
    items = [data.reference_item(i) for i in group]
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


def _pad_to(batch: dict[str, torch.Tensor], width: int, pad_token_id: int) -> dict[str, torch.Tensor]:
    """A dynamically padded batch widened to ``width`` with the reference's all-ones attention mask."""
    extra = width - batch["input_ids"].shape[1]
    padded = dict(batch)
    padded["input_ids"] = F.pad(batch["input_ids"], (0, extra), value=pad_token_id)
    padded["attention_mask"] = torch.ones_like(padded["input_ids"])
    return padded


# ---------------------------------------------------------------------------------------------- scoring
def batch_scores(model, batch: dict[str, torch.Tensor], method: Method) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """(mean KL(human || model) over the batch's rows, each row's option probabilities) as ``method`` computes them."""
    if method.full_vocab:
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits  # [B, L, V]
    else:
        logits = option_logits(model, batch)  # [B, K]
    if method.loop_loss:
        losses, probs = [], []
        for i, (answer_index, letter_ids, mask, target) in enumerate(
            zip(batch["answer_index"], batch["letter_ids"], batch["option_mask"], batch["target"])
        ):
            if method.full_vocab:
                pred = torch.gather(logits[i, answer_index], dim=-1, index=letter_ids[mask])
            else:
                pred = logits[i][mask]
            log_q = F.log_softmax(pred.float(), dim=-1)
            losses.append(F.kl_div(log_q, target[mask], reduction="sum"))
            probs.append(log_q.exp())
        return torch.stack(losses).mean(), probs
    if method.full_vocab:
        rows = torch.arange(logits.shape[0])
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


def evaluate(
    model, data: BenchData, method: Method, indices: Sequence[int], batch_size: int, autocast: bool = False
) -> EvalResult:
    """Score ``indices`` with ``method`` (no gradients: ``no_grad`` or ``inference_mode``)."""
    model.eval()
    result = EvalResult()
    grad_mode = torch.inference_mode() if method.inference_mode else torch.no_grad()
    with _threads(method.threads), grad_mode, torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
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
    with _threads(method.threads):
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


# ---------------------------------------------------------------------------------------------- memory
class PeakRSS:
    """Peak resident set size above the level at entry, sampled by a thread every ``interval`` seconds.

    Why RSS sampling: torch's CPU tensors bypass ``tracemalloc``, and ``getrusage``'s ``ru_maxrss`` is a
    high-water mark for the whole process, so it cannot measure a second phase that peaks lower than the first.
    Sampling misses spikes shorter than the interval, which the large (whole-batch) tensors here are not.
    """

    def __init__(self, interval: float = 0.005):
        self.interval, self.peak, self.base = interval, 0, 0
        self._stop = threading.Event()
        self._page = os.sysconf("SC_PAGE_SIZE")

    def _rss(self) -> int:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * self._page

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakRSS:
        self.base = self.peak = self._rss()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())

    @property
    def delta_mib(self) -> float:
        return (self.peak - self.base) / 2**20


class CpuShare:
    """Wall time of a block, and the share of the machine's cores this process got during it (CPU time / wall /
    cores): well below 1 means other work competed for the CPU, which slows both paths of the comparison."""

    def __enter__(self) -> CpuShare:
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        self.wall = time.perf_counter() - self._wall
        self.cpu = time.process_time() - self._cpu
        self.value = self.cpu / max(self.wall, 1e-9) / (os.cpu_count() or 1)


# ---------------------------------------------------------------------------------------------- the benchmark
@dataclass
class Timed:
    seconds: list[float] = field(default_factory=list)
    rows: list[int] = field(default_factory=list)
    peak_mib: list[float] = field(default_factory=list)
    cpu_seconds: list[float] = field(default_factory=list)

    def add(self, seconds: float, rows: int, peak_mib: float, cpu_seconds: float) -> None:
        self.seconds.append(seconds)
        self.rows.append(rows)
        self.peak_mib.append(peak_mib)
        self.cpu_seconds.append(cpu_seconds)

    @property
    def cpu_rates(self) -> list[float]:
        """Rows per CPU-second: the work per row, less sensitive than wall time to other load on the machine."""
        return [n / s for n, s in zip(self.rows, self.cpu_seconds)]

    @property
    def rates(self) -> list[float]:
        return [n / s for n, s in zip(self.rows, self.seconds)]

    @property
    def median_rate(self) -> float:
        return statistics.median(self.rates)


def paired_speedup(slow: Timed, fast: Timed, cpu: bool = False) -> float:
    """Median over repeats of fast/slow throughput, each repeat timing both on the same rows back to back."""
    pairs = zip(fast.cpu_rates, slow.cpu_rates) if cpu else zip(fast.rates, slow.rates)
    return statistics.median(f / s for f, s in pairs)


def chunks(items: Sequence[int], count: int) -> list[list[int]]:
    size = (len(items) + count - 1) // count
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


def question_chunks(data: BenchData, order: Sequence[int], count: int) -> list[list[int]]:
    """``order`` (grouped by question) cut into ``count`` chunks of whole questions, about equal in rows, so no
    evaluation batch mixes the end of one question with the start of another (real evaluation batches hold rows of
    similar length; a chunk straddling a short and a long question would pad the per-row path unrealistically).
    With fewer questions than ``count``, :func:`chunks`."""
    runs: list[list[int]] = []
    for position in order:
        if runs and data.rows[runs[-1][-1]].question_id == data.rows[position].question_id:
            runs[-1].append(position)
        else:
            runs.append([position])
    if len(runs) < count:
        return chunks(order, count)
    target = len(order) / count
    result: list[list[int]] = [[]]
    for index, run in enumerate(runs):
        left = len(runs) - index  # questions still to place, the current one included
        if result[-1] and (len(result[-1]) + len(run) / 2 > target or left <= count - len(result)) \
                and len(result) < count:
            result.append([])
        result[-1].extend(run)
    return result


class Bench:
    """The model with a fresh LoRA adapter, the rows, and the initial adapter weights every training run restarts
    from."""

    def __init__(self, model, data: BenchData, *, lr: float, eval_batch: int, train_batch: int, autocast: bool):
        self.model, self.data, self.lr = model, data, lr
        self.eval_batch, self.train_batch, self.autocast = eval_batch, train_batch, autocast
        self.initial = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
        self.last_cpu_share = self.last_cpu_seconds = float("nan")

    def reset(self) -> torch.optim.Optimizer:
        """Restore the initial adapter and return a fresh AdamW on it, so every training run does the same work."""
        with torch.no_grad():
            for name, param in self.model.named_parameters():
                if name in self.initial:
                    param.copy_(self.initial[name])
        params = [p for p in self.model.parameters() if p.requires_grad]
        return torch.optim.AdamW(params, lr=self.lr, weight_decay=0.0)

    def time_eval(self, method: Method, indices: Sequence[int]) -> tuple[EvalResult, float, float]:
        with PeakRSS() as memory, CpuShare() as share:
            result = evaluate(self.model, self.data, method, indices, self.eval_batch, self.autocast)
        self.last_cpu_share, self.last_cpu_seconds = share.value, share.cpu
        return result, share.wall, memory.delta_mib

    def time_train(self, method: Method, indices: Sequence[int], seed: int) -> tuple[list[float], float, float]:
        optimizer = self.reset()
        with PeakRSS() as memory, CpuShare() as share:
            losses = train_steps(
                self.model, optimizer, self.data, method, indices, self.train_batch, seed=seed, autocast=self.autocast
            )
        self.last_cpu_share, self.last_cpu_seconds = share.value, share.cpu
        return losses, share.wall, memory.delta_mib

    def train_check(
        self, indices: Sequence[int], first: Method = REFERENCE, second: Method = SIMLAB
    ) -> tuple[float, float, float]:
        """One batch through two training paths with dropout off: (first loss, second loss, max grad diff)."""
        losses, grads = [], []
        for method in (first, second):
            self.reset()
            self.model.eval()  # LoRA dropout off, so both see the same function; gradients still flow
            batch = next(batches(self.data, method, indices, len(indices), train=True))
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.autocast):
                loss, _ = batch_scores(self.model, batch, method)
            loss.backward()
            losses.append(loss.item())
            grads.append({n: p.grad.detach().clone() for n, p in self.model.named_parameters() if p.requires_grad})
            self.model.zero_grad(set_to_none=True)
        diff = max(float((grads[0][n] - grads[1][n]).abs().max()) for n in grads[0])
        return losses[0], losses[1], diff


def _log(message: str) -> None:
    print(message, flush=True)


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), written beside every timing."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def path_tokens(data: BenchData, method: Method, indices: Sequence[int], batch_size: int, *, train: bool,
                seed: int = 0) -> int:
    """Token positions the decoder computes for ``indices`` on ``method``'s batches (padding and prefixes included)."""
    if method.pad_to_max:
        return len(list(indices)) * data.max_length
    return sum(computed_tokens(b) for b in batches(data, method, indices, batch_size, train=train, seed=seed))


def linear_flops_per_token(model) -> int:
    """Multiply-add FLOPs of the decoder's linear layers (LoRA branches included) per token position: 2 x weights."""
    from simlab.model.adapters import base_model

    decoder = base_model(model).get_decoder()
    return sum(2 * m.in_features * m.out_features for m in decoder.modules() if isinstance(m, torch.nn.Linear))


def matmul_peak(model, tokens: int = 2048, repeats: int = 5, autocast: bool = False) -> float:
    """GFLOP/s of ``F.linear`` on one decoder layer's weight shapes with ``tokens`` rows, best of ``repeats``: what
    this machine's matmul kernels reach on the model's shapes, in this process, at its thread count."""
    from simlab.model.adapters import base_model

    layer = base_model(model).get_decoder().layers[0]
    weights = [m.weight.detach() for n, m in layer.named_modules()
               if isinstance(m, torch.nn.Linear) and "lora_" not in n]
    inputs = {w.shape[1]: torch.randn(tokens, w.shape[1], dtype=w.dtype) for w in weights}
    flops = sum(2 * tokens * w.shape[0] * w.shape[1] for w in weights)
    best = float("inf")
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        for weight in weights:  # warm-up
            F.linear(inputs[weight.shape[1]], weight)
        for _ in range(repeats):
            started = time.perf_counter()
            for weight in weights:
                F.linear(inputs[weight.shape[1]], weight)
            best = min(best, time.perf_counter() - started)
    return flops / best / 1e9


@dataclass
class Checks:
    """The training-step agreement checks on the warm-up rows (dropout off)."""

    ref_loss: float  # reference and simlab (nan with --no-reference)
    sim_loss: float
    grad_diff: float
    per_row_loss: float  # simlab and shared-prefix
    prefix_loss: float
    prefix_grad_diff: float


@dataclass
class Measurements:
    """What the timed phases measured, per path name."""

    names: list[str]
    timed: dict[str, Timed]  # evaluation
    results: dict[str, EvalResult]
    eval_tokens: dict[str, int]
    train_timed: dict[str, Timed]
    train_tokens: dict[str, int]
    peak_gflops: float  # the matmul throughput the FLOP rates are compared with
    flops_per_token: int  # the decoder linears' FLOPs per token position

    def gflops(self, name: str, train: bool) -> float:
        tokens = self.train_tokens[name] if train else self.eval_tokens[name]
        seconds = sum(self.train_timed[name].seconds if train else self.timed[name].seconds)
        return self.flops_per_token * tokens * (2 if train else 1) / seconds / 1e9  # training: + backward input grads


def run(args: argparse.Namespace) -> int:
    """The benchmark: set up, check the paths agree on a training step, time evaluation and training, report."""
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    model, data, bench = set_up(args)
    paths = ([REFERENCE] if not args.no_reference else []) + [SIMLAB, SHARED]
    order = grouped_order(data, args.seed)
    checks = warm_up_and_check(bench, paths, order, args)
    timed, results, eval_tokens = time_evaluation(bench, paths, order, args)
    train_timed, train_tokens = time_training(bench, paths, order, args)
    measured = Measurements([m.name for m in paths], timed, results, eval_tokens, train_timed, train_tokens,
                            peak_gflops=matmul_peak(model, tokens=args.matmul_tokens, autocast=bench.autocast),
                            flops_per_token=linear_flops_per_token(model))
    if args.ablation:
        ablation(bench, order[: args.ablation_rows], args)
    if args.profile:
        profile(bench, order[: args.eval_batch])
    pairs = ([("reference", "simlab")] if not args.no_reference else []) + [("simlab", "shared-prefix")]
    report_throughput(measured, pairs, args)
    failures = agreement_failures(measured.results, checks, args)
    _log(f"wall time {time.perf_counter() - started:.0f} s")
    if failures:
        print("BENCH FAILED: the paths disagree: " + "; ".join(failures), file=sys.stderr, flush=True)
        return 1
    report_speedups(measured, args)
    return 0


def set_up(args: argparse.Namespace) -> tuple[Any, BenchData, Bench]:
    """The embedded model with a fresh paper LoRA adapter, the sampled rows and the :class:`Bench`; logs them."""
    from simlab.model import PAPER_LORA, attach_lora, load_language_model, paper_lora_config

    lm = load_language_model(embedded=args.embedded, dtype="float32")
    if lm.tokenizer.pad_token_id is None:
        lm.tokenizer.pad_token = lm.tokenizer.eos_token
    model = attach_lora(lm.model, paper_lora_config())
    data = load_bench_data(lm.tokenizer, root=args.data_root, rows=args.rows, seed=args.seed,
                           prompt_style=args.prompt_style, prompt_order=args.prompt_order, sample=args.sample)
    bench = Bench(model, data, lr=1e-4, eval_batch=args.eval_batch, train_batch=args.train_batch,
                  autocast=args.precision == "bf16")
    lengths = data.lengths
    _log(
        f"simlab bench: {lm.source}, {len(data)} {data.subset} rows of {len({r.question_id for r in data.rows})} "
        f"questions ({args.prompt_style} {args.prompt_order} prompts, sampled by {args.sample}, seed {args.seed}; "
        f"prompt tokens min {min(lengths)} / mean {statistics.mean(lengths):.0f} / max {max(lengths)}), "
        f"precision {args.precision}, "
        f"{torch.get_num_threads()} threads, eval batch {args.eval_batch}, train batch {args.train_batch}, "
        f"LoRA r{PAPER_LORA['r']}/alpha{PAPER_LORA['lora_alpha']} on {','.join(PAPER_LORA['target_modules'])}"
    )
    _log(f"cpu: {cpu_model()} ({os.cpu_count()} logical CPUs), torch {torch.__version__}")
    return model, data, bench


def warm_up_and_check(bench: Bench, paths: list[Method], order: list[int], args: argparse.Namespace) -> Checks:
    """Warm-up (allocator, oneDNN kernels) on a few rows of every path, then the training-step checks."""
    warm = order[: min(len(order), args.check_rows)]
    for method in paths:
        evaluate(bench.model, bench.data, method, warm, args.eval_batch, bench.autocast)
    ref_loss = sim_loss = grad_diff = float("nan")
    if not args.no_reference:
        ref_loss, sim_loss, grad_diff = bench.train_check(warm)
        _log(f"train check ({len(warm)} rows, dropout off): loss reference {ref_loss:.6f} simlab {sim_loss:.6f}, "
             f"max |grad difference| {grad_diff:.2e}")
    per_row_loss, prefix_loss, prefix_grad_diff = bench.train_check(warm, SIMLAB, SHARED)
    _log(f"train check ({len(warm)} rows, dropout off): loss simlab {per_row_loss:.6f} shared-prefix "
         f"{prefix_loss:.6f}, max |LoRA grad difference| {prefix_grad_diff:.2e}")
    return Checks(ref_loss, sim_loss, grad_diff, per_row_loss, prefix_loss, prefix_grad_diff)


def time_evaluation(
    bench: Bench, paths: list[Method], order: list[int], args: argparse.Namespace
) -> tuple[dict[str, Timed], dict[str, EvalResult], dict[str, int]]:
    """The rows in ``eval_repeats`` chunks (whole questions where they fit); each chunk timed with every path back
    to back (rotating which goes first), so every row is predicted once by each path."""
    timed = {m.name: Timed() for m in paths}
    results = {m.name: EvalResult() for m in paths}
    eval_tokens = {m.name: 0 for m in paths}
    for repeat, chunk in enumerate(question_chunks(bench.data, order, args.eval_repeats)):
        for method in paths[repeat % len(paths):] + paths[: repeat % len(paths)]:
            result, seconds, peak = bench.time_eval(method, chunk)
            timed[method.name].add(seconds, len(chunk), peak, bench.last_cpu_seconds)
            results[method.name].probs.update(result.probs)
            results[method.name].loss_sum += result.loss_sum
            eval_tokens[method.name] += path_tokens(bench.data, method, chunk, args.eval_batch, train=False)
            _log(f"  eval repeat {repeat + 1}: {method.name:13s} {len(chunk)} rows in {seconds:7.1f} s "
                 f"({len(chunk) / seconds:6.2f} prompts/s), peak RSS +{peak:.0f} MiB, "
                 f"CPU share {bench.last_cpu_share:.0%}")
    return timed, results, eval_tokens


def time_training(
    bench: Bench, paths: list[Method], order: list[int], args: argparse.Namespace
) -> tuple[dict[str, Timed], dict[str, int]]:
    """``train_repeats`` runs of ``train_steps`` steps on consecutive rows of the question-grouped order, each from
    the same initial adapter."""
    train_timed = {m.name: Timed() for m in paths}
    train_tokens = {m.name: 0 for m in paths}
    per_run = args.train_steps * args.train_batch
    for repeat in range(args.train_repeats):
        rows = [order[(repeat * per_run + j) % len(order)] for j in range(per_run)]
        for method in paths[repeat % len(paths):] + paths[: repeat % len(paths)]:
            losses, seconds, peak = bench.time_train(method, rows, seed=args.seed + repeat)
            train_timed[method.name].add(seconds, len(rows), peak, bench.last_cpu_seconds)
            train_tokens[method.name] += path_tokens(bench.data, method, rows, args.train_batch, train=True,
                                                     seed=args.seed + repeat)
            _log(f"  train repeat {repeat + 1}: {method.name:13s} {len(rows)} rows in {seconds:7.1f} s "
                 f"({len(rows) / seconds:6.2f} rows/s), peak RSS +{peak:.0f} MiB, "
                 f"CPU share {bench.last_cpu_share:.0%}, losses "
                 + " ".join(f"{v:.4f}" for v in losses))
    return train_timed, train_tokens


def report_throughput(measured: Measurements, pairs: list[tuple[str, str]], args: argparse.Namespace) -> None:
    """The markdown table of every path's throughput, tokens, memory, FLOP rate and loss, then the matmul lines."""
    names, timed, train_timed = measured.names, measured.timed, measured.train_timed
    eval_rows = {n: sum(timed[n].rows) for n in names}
    train_rows = {n: sum(train_timed[n].rows) for n in names}
    _log("")
    _log(f"| measure | {' | '.join(names)} | {' | '.join(f'{b} / {a}' for a, b in pairs)} |")
    _log("|---|" + "---:|" * (len(names) + len(pairs)))

    def row(title: str, values: dict[str, float], fmt: str, paired: dict[str, Timed] | None = None,
            cpu: bool = False, ratio: bool = False) -> None:
        """One table row; the ratio columns are paired medians (``paired``) or the ratio of the values (``ratio``)."""
        if paired is not None:
            extra = [f"{paired_speedup(paired[a], paired[b], cpu=cpu):.2f}x" for a, b in pairs]
        elif ratio:
            extra = [f"{values[b] / values[a]:.2f}" for a, b in pairs]
        else:
            extra = [""] * len(pairs)
        _log(f"| {title} | {' | '.join(format(values[n], fmt) for n in names)} | {' | '.join(extra)} |")

    gflops = measured.gflops
    row(f"eval prompts/s (median of {args.eval_repeats})", {n: timed[n].median_rate for n in names}, ".2f", timed)
    row(f"train rows/s (median of {args.train_repeats}, {args.train_steps} steps each)",
        {n: train_timed[n].median_rate for n in names}, ".2f", train_timed)
    row("eval tokens computed per row", {n: measured.eval_tokens[n] / eval_rows[n] for n in names}, ".1f", ratio=True)
    row("train tokens computed per row", {n: measured.train_tokens[n] / train_rows[n] for n in names}, ".1f",
        ratio=True)
    for title, t in (("eval", timed), ("train", train_timed)):
        row(f"{title} peak RSS above start, MiB (max)", {n: max(t[n].peak_mib) for n in names}, ".0f")
    row("eval prompts per CPU-second (median)", {n: statistics.median(timed[n].cpu_rates) for n in names}, ".2f",
        timed, cpu=True)
    row("train rows per CPU-second (median)", {n: statistics.median(train_timed[n].cpu_rates) for n in names},
        ".2f", train_timed, cpu=True)
    row("eval model GFLOP/s (decoder linears)", {n: gflops(n, False) for n in names}, ".1f", ratio=True)
    row("train model GFLOP/s (decoder linears, fwd + input grads)", {n: gflops(n, True) for n in names}, ".1f",
        ratio=True)
    row("mean eval KL(human ‖ model)", {n: measured.results[n].loss for n in names}, ".6f")
    _log("")
    _log(f"matmul: float32 F.linear on one decoder layer's weight shapes x {args.matmul_tokens} tokens: "
         f"{measured.peak_gflops:.1f} GFLOP/s ({torch.get_num_threads()} threads); model FLOPs count the decoder's "
         f"linear layers, {measured.flops_per_token / 1e6:.3g} MFLOP per token position (x2 for a training step)")
    fractions = {n: (gflops(n, False) / measured.peak_gflops, gflops(n, True) / measured.peak_gflops) for n in names}
    _log("matmul_fraction: " + ", ".join(f"{n} eval {e:.2f} train {t:.2f}" for n, (e, t) in fractions.items()))


def agreement_failures(results: dict[str, EvalResult], checks: Checks, args: argparse.Namespace) -> list[str]:
    """Log how far the paths' predictions, losses and gradients are apart; the disagreements beyond tolerance."""
    prefix_diff = max_prob_difference(results["simlab"], results["shared-prefix"])
    prefix_loss_diff = abs(results["simlab"].loss - results["shared-prefix"].loss)
    _log("")
    failures = []
    if not args.no_reference:
        eval_diff = max_prob_difference(results["reference"], results["simlab"])
        eval_losses = results["reference"].loss, results["simlab"].loss
        _log(f"predictions: max |p_reference - p_simlab| = {eval_diff:.2e} over {len(results['simlab'].probs)} rows "
             f"(tolerance {args.tolerance:g}); eval loss difference {abs(eval_losses[0] - eval_losses[1]):.2e}; "
             f"train-step loss difference {abs(checks.ref_loss - checks.sim_loss):.2e}")
        if eval_diff > args.tolerance:
            failures.append(f"option probabilities differ by {eval_diff:.3e} > {args.tolerance:g}")
        if abs(eval_losses[0] - eval_losses[1]) > args.tolerance:
            failures.append(f"eval losses differ: {eval_losses[0]:.6f} vs {eval_losses[1]:.6f}")
        if abs(checks.ref_loss - checks.sim_loss) > args.tolerance:
            failures.append(f"training-step losses differ: {checks.ref_loss:.6f} vs {checks.sim_loss:.6f}")
    step_diff = abs(checks.per_row_loss - checks.prefix_loss)
    _log(f"prefix_agreement: max |p_simlab - p_shared_prefix| = {prefix_diff:.2e} over "
         f"{len(results['shared-prefix'].probs)} rows; eval loss difference {prefix_loss_diff:.2e}; train-step loss "
         f"difference {step_diff:.2e}; max |LoRA grad difference| {checks.prefix_grad_diff:.2e} "
         f"(tolerance {args.prefix_tolerance:g})")
    for label, value in (("option probabilities", prefix_diff), ("eval losses", prefix_loss_diff),
                         ("training-step losses", step_diff),
                         ("LoRA gradients", checks.prefix_grad_diff)):
        if not value <= args.prefix_tolerance:
            failures.append(f"shared-prefix and per-row {label} differ by {value:.3e} > {args.prefix_tolerance:g}")
    return failures


def report_speedups(measured: Measurements, args: argparse.Namespace) -> None:
    """The closing lines (parsed by scripts): paired median speedups of simlab over the reference and of the
    shared-prefix path over simlab."""
    timed, train_timed = measured.timed, measured.train_timed
    if not args.no_reference:
        _log(f"eval_speedup: {paired_speedup(timed['reference'], timed['simlab']):.2f}")
        _log(f"train_speedup: {paired_speedup(train_timed['reference'], train_timed['simlab']):.2f}")
    _log(f"prefix_eval_speedup: {paired_speedup(timed['simlab'], timed['shared-prefix']):.2f}")
    _log(f"prefix_train_speedup: {paired_speedup(train_timed['simlab'], train_timed['shared-prefix']):.2f}")


def ablation(bench: Bench, rows: list[int], args: argparse.Namespace) -> None:
    """Each rung of the ladders once per repeat on the same rows; the throughput and the step's own factor."""
    for title, ladder, unit in (("eval", EVAL_LADDER, "prompts/s"), ("train", TRAIN_LADDER, "rows/s")):
        rates: dict[str, list[float]] = {rung.name: [] for rung in ladder}
        cpu_rates: dict[str, list[float]] = {rung.name: [] for rung in ladder}
        for repeat in range(args.ablation_repeats):
            for rung in ladder:
                if title == "eval":
                    _, seconds, _ = bench.time_eval(rung, rows)
                else:
                    _, seconds, _ = bench.time_train(rung, rows, seed=args.seed + repeat)
                rates[rung.name].append(len(rows) / seconds)
                cpu_rates[rung.name].append(len(rows) / bench.last_cpu_seconds)
                _log(f"  ablation {title} repeat {repeat + 1}: {rung.name}: {len(rows) / seconds:.2f} {unit} "
                     f"(CPU share {bench.last_cpu_share:.0%})")
        _log("")
        _log(f"ablation, {title} ({len(rows)} rows, median of {args.ablation_repeats}):")
        _log(f"| step | {unit} | x previous | x reference | per CPU-second | x previous (CPU) |")
        _log("|---|---:|---:|---:|---:|---:|")
        previous = first = previous_cpu = None
        for rung in ladder:
            rate, cpu_rate = statistics.median(rates[rung.name]), statistics.median(cpu_rates[rung.name])
            first = first or rate
            step = f"{rate / previous:.2f}" if previous is not None else ""
            cpu_step = f"{cpu_rate / previous_cpu:.2f}" if previous_cpu is not None else ""
            _log(f"| {rung.name} | {rate:.2f} | {step} | {rate / first:.2f} | {cpu_rate:.2f} | {cpu_step} |")
            if rung.threads is None:  # the thread rung is compared with simlab's path, not chained
                previous, previous_cpu = rate, cpu_rate
        _log("")


def profile(bench: Bench, rows: list[int]) -> None:
    """torch.profiler over one evaluation batch of each path: where the time goes."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    for method in (REFERENCE, SIMLAB, SHARED):
        with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            evaluate(bench.model, bench.data, method, rows, bench.eval_batch, bench.autocast)
        _log(f"profile, eval, {method.name}, {len(rows)} rows:")
        _log(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = commandline.parser("bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=192, help="seeded sample of C1-Q2 valid rows (default 192)")
    parser.add_argument("--prompt-order", choices=["question_first", "paper"], default="question_first",
                        help="prompt order of the rows (default question_first: a question's rows share its prefix)")
    parser.add_argument("--prompt-style", choices=["chat", "plain"], default="chat",
                        help="chat: the tokenizer's chat template (the embedded model's config); "
                             "plain: the paper's string")
    parser.add_argument("--sample", choices=["questions", "rows"], default="questions",
                        help="questions: whole questions (all their countries) up to --rows; rows: random rows")
    parser.add_argument("--no-reference", action="store_true",
                        help="time simlab and the shared-prefix path only (the reference is ~5x slower than simlab)")
    parser.add_argument("--eval-repeats", type=int, default=4,
                        help="evaluation repeats: the rows are split into this many chunks, each timed with both paths")
    parser.add_argument("--train-repeats", type=int, default=3, help="training repeats, each from the same adapter")
    parser.add_argument("--train-steps", type=int, default=3, help="optimizer steps per training repeat")
    parser.add_argument("--eval-batch", type=int, default=48,
                        help="evaluation batch size (every path; 48, data.eval_batch_size's default)")
    parser.add_argument("--train-batch", type=int, default=8, help="training batch size (both paths)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads (both paths)")
    parser.add_argument("--precision", choices=["32", "bf16"], default="32",
                        help="32: float32; bf16: bf16 autocast (both paths; 1e-4 agreement is not expected)")
    parser.add_argument("--tolerance", type=float, default=1e-4, help="max allowed probability / loss difference")
    parser.add_argument("--prefix-tolerance", type=float, default=1e-5,
                        help="max allowed shared-prefix vs per-row probability / loss / LoRA-gradient difference")
    parser.add_argument("--matmul-tokens", type=int, default=2048, help="rows of the matmul throughput measurement")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-root", default=None, help="default: $SIMLAB_DATA, else ../shared/data")
    parser.add_argument("--embedded", default="smollm2_135m_instruct")
    parser.add_argument("--check-rows", type=int, default=8, help="rows of the warm-up and the training-step checks")
    parser.add_argument("--ablation", action="store_true", help="also time each step from the reference to simlab")
    parser.add_argument("--ablation-rows", type=int, default=32)
    parser.add_argument("--ablation-repeats", type=int, default=1)
    parser.add_argument("--profile", action="store_true", help="also print a torch.profiler table per path")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    return run(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
