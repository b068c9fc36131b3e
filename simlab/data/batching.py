"""Length-grouped batches with dynamic padding: prompts of similar length share a batch, so little
compute goes to padding, and nothing is ever padded to a fixed maximum length."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.data import Dataset, Sampler


@dataclass(frozen=True)
class EncodedRow:
    input_ids: list[int]
    letter_ids: list[int]  # token id of each option letter, in option order
    target: list[float]
    prefix_group: int = 0  # rows of one group share the start of their prompt (shared-prefix batching)
    log_prior: list[float] | None = None  # the prior-anchored simulator's log prior, in option order


class EncodedDataset(Dataset):
    def __init__(self, encoded: list[EncodedRow]):
        self.encoded = encoded

    def __len__(self) -> int:
        return len(self.encoded)

    def __getitem__(self, index: int) -> tuple[int, EncodedRow]:
        return index, self.encoded[index]

    @property
    def lengths(self) -> list[int]:
        return [len(e.input_ids) for e in self.encoded]

    @property
    def prefix_groups(self) -> list[int]:
        return [e.prefix_group for e in self.encoded]


class LengthGroupedBatchSampler(Sampler[list[int]]):
    """Batches of rows of similar length.

    Evaluation (``shuffle=False``): rows sorted by length, longest first, so a memory problem shows at once.
    Training: a seeded permutation per epoch, cut into mega-batches of ``group_factor`` batches, each sorted
    by length and cut into batches, whose order is shuffled again. ``set_epoch`` is called by Lightning.

    Distributed (DDP/FSDP, ``trainer.use_distributed_sampler=false``: Lightning cannot inject its sampler into a
    batch sampler): every rank builds the same batch list and takes batches ``rank, rank + R, ...``, so R ranks
    with accumulation A see, step by step, the batches one process sees with accumulation R x A. Training pads
    the list by repeating its first batches so every rank makes the same number of steps; evaluation does not
    pad, so each row is scored once. ``num_replicas``/``rank`` default to the initialized process group's.

    Resuming (:meth:`resume_at`): the batch list of an epoch depends only on (seed, epoch), so a run resumed
    mid-epoch skips the batches its checkpoint had already trained on and sees exactly the rest.
    """

    def __init__(
        self, lengths: list[int], batch_size: int, shuffle: bool, seed: int = 0, group_factor: int = 32,
        num_replicas: int | None = None, rank: int | None = None,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if num_replicas is not None and not 0 <= (rank or 0) < num_replicas:
            raise ValueError(f"rank must be in [0, {num_replicas}), got {rank}")
        self.lengths, self.batch_size, self.shuffle = list(lengths), batch_size, shuffle
        self.seed, self.group_factor, self.epoch = seed, group_factor, 0
        self.num_replicas, self.rank = num_replicas, rank
        self._resume: tuple[int, int] | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def resume_at(self, epoch: int, batches_done: int) -> None:
        """Start at ``epoch``, skipping (once) the first ``batches_done`` batches this rank yields in it."""
        if epoch < 0 or batches_done < 0:
            raise ValueError(f"cannot resume at epoch {epoch}, batch {batches_done}")
        self.epoch, self._resume = epoch, (epoch, batches_done)

    def _replicas(self) -> tuple[int, int]:
        """(number of ranks, this rank): the given ones, else the process group's (read late: the group is set
        up by the trainer after the loaders were made)."""
        if self.num_replicas is not None:
            return self.num_replicas, self.rank or 0
        dist = torch.distributed
        if dist.is_available() and dist.is_initialized():
            return dist.get_world_size(), dist.get_rank()
        return 1, 0

    def __len__(self) -> int:
        total = (len(self.lengths) + self.batch_size - 1) // self.batch_size
        replicas, rank = self._replicas()
        if self.shuffle:
            return (total + replicas - 1) // replicas
        return len(range(rank, total, replicas))

    def _cut(self, order: list[int]) -> list[list[int]]:
        return [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]

    def __iter__(self):
        replicas, rank = self._replicas()
        batches = list(self._batches())
        if self.shuffle and replicas > 1 and len(batches) % replicas:
            batches += batches[: replicas - len(batches) % replicas]
        mine = batches[rank::replicas]
        if self._resume is not None and self._resume[0] == self.epoch:
            mine, self._resume = mine[self._resume[1]:], None
        yield from mine

    def _batches(self):
        if not self.shuffle:
            order = sorted(range(len(self.lengths)), key=lambda i: (-self.lengths[i], i))
            yield from self._cut(order)
            return
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(len(self.lengths), generator=generator).tolist()
        mega = self.batch_size * self.group_factor
        batches: list[list[int]] = []
        for start in range(0, len(order), mega):
            group = sorted(order[start : start + mega], key=lambda i: -self.lengths[i])
            batches.extend(self._cut(group))
        for position in torch.randperm(len(batches), generator=generator).tolist():
            yield batches[position]


class PadCollator:
    """Right-pads a batch to its own longest prompt; the answer slot is each row's last real token."""

    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, items: list[tuple[int, EncodedRow]]) -> dict[str, torch.Tensor]:
        width = max(len(e.input_ids) for _, e in items)
        size = len(items)
        input_ids = torch.full((size, width), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((size, width), dtype=torch.long)
        for b, (_, e) in enumerate(items):
            input_ids[b, : len(e.input_ids)] = torch.tensor(e.input_ids)
            attention_mask[b, : len(e.input_ids)] = 1
        return {
            "row_index": torch.tensor([i for i, _ in items], dtype=torch.long),
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "answer_index": attention_mask.sum(dim=1) - 1,
            **option_tensors(items),
        }


def option_tensors(items: list[tuple[int, EncodedRow]]) -> dict[str, torch.Tensor]:
    """Each row's options padded to the batch's most: ``letter_ids``, ``option_mask``, ``target`` and, when the
    rows carry one, ``log_prior`` (0 in padded slots)."""
    size, options = len(items), max(len(e.letter_ids) for _, e in items)
    letter_ids = torch.zeros((size, options), dtype=torch.long)
    option_mask = torch.zeros((size, options), dtype=torch.bool)
    target = torch.zeros((size, options), dtype=torch.float32)
    with_prior = [e.log_prior is not None for _, e in items]
    if any(with_prior) and not all(with_prior):
        raise ValueError("a batch mixes rows with and without a prior")
    log_prior = torch.zeros((size, options), dtype=torch.float32) if all(with_prior) else None
    for b, (_, e) in enumerate(items):
        letter_ids[b, : len(e.letter_ids)] = torch.tensor(e.letter_ids)
        option_mask[b, : len(e.letter_ids)] = True
        target[b, : len(e.target)] = torch.tensor(e.target)
        if log_prior is not None:
            log_prior[b, : len(e.log_prior)] = torch.tensor(e.log_prior)
    tensors = {"letter_ids": letter_ids, "option_mask": option_mask, "target": target}
    if log_prior is not None:
        tensors["log_prior"] = log_prior
    return tensors


# ---------------------------------------------------------------------------------------------- shared prefix
class PrefixGroupedBatchSampler(LengthGroupedBatchSampler):
    """Batches of rows of one prefix group (``EncodedRow.prefix_group``), for shared-prefix execution.

    The interface is :class:`LengthGroupedBatchSampler`'s (``set_epoch``, ``__len__``, a deterministic
    ``__iter__`` given seed and epoch, ``num_replicas``/``rank`` sharding), so resuming and DDP work the same.

    Training (``shuffle=True``), per epoch with a generator seeded by ``seed + epoch``: each group's rows in a
    seeded random order, cut into mega-batches of ``group_factor`` batches sorted by length, cut into batches;
    every full batch holds one group. The rows left over (fewer than a batch per group) are pooled in group order
    and cut into batches, so a few batches hold the ends of several groups (each group a contiguous run, its own
    prefix); then the order of all batches is shuffled. The number of batches does not depend on the epoch:
    ``sum(n_g // B) + ceil(sum(n_g % B) / B)``. With one group (the paper's prompt, whose rows share only the
    chat template's head) the batches are exactly :class:`LengthGroupedBatchSampler`'s.

    Evaluation: each group's rows longest first, cut into batches; a group's last, short batch shares a batch
    with the next groups' when they fit (e.g. two 8-country questions in a batch of 16); batches longest first.
    """

    def __init__(
        self, lengths: list[int], groups: list[int], batch_size: int, shuffle: bool, seed: int = 0,
        group_factor: int = 32, num_replicas: int | None = None, rank: int | None = None,
    ):
        super().__init__(lengths, batch_size, shuffle, seed=seed, group_factor=group_factor,
                         num_replicas=num_replicas, rank=rank)
        if len(groups) != len(self.lengths):
            raise ValueError(f"{len(groups)} prefix groups for {len(self.lengths)} rows")
        self.groups = list(groups)
        self.members: dict[int, list[int]] = {}
        for index, group in enumerate(self.groups):
            self.members.setdefault(group, []).append(index)
        self._eval_batches: list[list[int]] | None = None

    def _total(self) -> int:
        if not self.shuffle:
            return len(self._evaluation_batches())
        sizes = [len(rows) for rows in self.members.values()]
        rest = sum(n % self.batch_size for n in sizes)
        return sum(n // self.batch_size for n in sizes) + (rest + self.batch_size - 1) // self.batch_size

    def __len__(self) -> int:
        total = self._total()
        replicas, rank = self._replicas()
        if self.shuffle:
            return (total + replicas - 1) // replicas
        return len(range(rank, total, replicas))

    def _batches(self):
        if not self.shuffle:
            yield from self._evaluation_batches()
            return
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        mega = self.batch_size * self.group_factor
        batches: list[list[int]] = []
        rest: list[int] = []
        for group in sorted(self.members):
            rows = self.members[group]
            order = [rows[i] for i in torch.randperm(len(rows), generator=generator).tolist()]
            for start in range(0, len(order), mega):
                chunk = sorted(order[start : start + mega], key=lambda i: -self.lengths[i])
                for batch in self._cut(chunk):
                    if len(batch) == self.batch_size:
                        batches.append(batch)
                    else:
                        rest.extend(batch)
        batches.extend(self._cut(rest))
        for position in torch.randperm(len(batches), generator=generator).tolist():
            yield batches[position]

    def _evaluation_batches(self) -> list[list[int]]:
        if self._eval_batches is None:
            longest = {g: max(self.lengths[i] for i in rows) for g, rows in self.members.items()}
            chunks: list[list[int]] = []
            for group in sorted(self.members, key=lambda g: (-longest[g], g)):
                rows = sorted(self.members[group], key=lambda i: (-self.lengths[i], i))
                chunks.extend(self._cut(rows))
            batches: list[list[int]] = []
            for chunk in chunks:
                if batches and len(batches[-1]) + len(chunk) <= self.batch_size:
                    batches[-1] = batches[-1] + chunk
                else:
                    batches.append(chunk)
            self._eval_batches = batches
        return self._eval_batches


def split_prefix(rows: list[list[int]]) -> int:
    """The number of leading token ids all ``rows`` share, leaving every row at least one token of its own
    (its answer slot must be computed per row)."""
    shortest = min(len(r) for r in rows)
    length = 0
    first = rows[0]
    while length < shortest - 1 and all(r[length] == first[length] for r in rows):
        length += 1
    return length


# Packed batches up to this many tokens. On 2 CPU cores (Xeon, AVX-512, float32, SmolLM2-135M) training batches of 8
# rows (~350 tokens) ran 1.11x faster packed (`make bench ARGS="--no-reference --two-pass"`); evaluation batches of
# 16 rows (~540 tokens) 1.02x, of 48 rows (~1,400 tokens) 0.82x: the packed attention grows with the square of the
# length (`--pack-max-tokens 100000 --eval-batch 16|48`; experiments/PERFORMANCE.md).
PACK_MAX_TOKENS = 640


class SharedPrefixCollator:
    """A batch split into shared prefixes and per-row suffixes (:func:`simlab.model.scoring.option_logits` runs it).

    Rows are grouped by ``prefix_group`` (in order of first appearance); each group's prefix is the longest
    common token prefix of its rows in this batch (every row keeps at least one token: its answer slot), so
    prefix + suffix is exactly the row's prompt, whatever the grouping. Two layouts:

    *Two passes* (the prefixes, then the suffixes attending to their prefix's keys/values). Keys:

    * ``prefix_ids`` [G, P] right-padded, ``prefix_mask`` [G, P], ``prefix_lengths`` [G];
    * ``input_ids`` / ``attention_mask`` [B, S]: each row's own tokens (the suffix), right-padded;
    * ``row_group`` [B]: the row's prefix; ``answer_index`` [B]: the answer slot within the suffix;
    * ``letter_ids``, ``option_mask``, ``target``, ``row_index`` as :class:`PadCollator`'s.

    *Packed* (one decoder pass over one sequence, no padding between prompts), when the prefixes and suffixes
    together hold at most ``pack_max_tokens`` tokens (0: never). Keys:

    * ``packed_ids`` / ``packed_positions`` [1, T]: every group's prefix, then every row's suffix; each token's
      position in its own row's prompt;
    * ``packed_group`` [T]: each token's group; ``packed_row`` [T]: a suffix token's row, -1 for prefix tokens
      (the attention mask is built from these two, :func:`simlab.model.shared_prefix.packed_attention_mask`);
    * ``answer_index`` [B]: each row's answer slot in the packed sequence; the option keys and ``row_index``.

    ``pack_length_multiple`` > 1 pads a packed sequence's end to a multiple of that many tokens (pads in a group of
    their own, -1, no real token sees): a few lengths, so CUDA graphs (``module.compile_mode=reduce-overhead``)
    replay rather than record one per length. Real tokens compute what they do unpadded, up to float rounding.

    A batch whose shared prefixes would save less than ``min_saved_fraction`` of its tokens (e.g. the plain paper
    prompt, whose rows share only "How would someone from") is returned as :class:`PadCollator` makes it: the
    second decoder pass costs more than it saves there (measured: training 9% slower at 4% of the tokens saved).
    """

    def __init__(self, pad_token_id: int, min_saved_fraction: float = 0.1, pack_max_tokens: int = PACK_MAX_TOKENS,
                 pack_length_multiple: int = 1):
        if pack_max_tokens < 0:
            raise ValueError(f"pack_max_tokens must be >= 0, got {pack_max_tokens}")
        if pack_length_multiple < 1:
            raise ValueError(f"pack_length_multiple must be >= 1, got {pack_length_multiple}")
        self.pad_token_id = pad_token_id
        self.min_saved_fraction = min_saved_fraction
        self.pack_max_tokens = pack_max_tokens
        self.pack_length_multiple = pack_length_multiple

    def __call__(self, items: list[tuple[int, EncodedRow]]) -> dict[str, torch.Tensor]:
        group_of: dict[int, int] = {}
        row_group = [group_of.setdefault(e.prefix_group, len(group_of)) for _, e in items]
        members: list[list[int]] = [[] for _ in group_of]
        for b, g in enumerate(row_group):
            members[g].append(b)
        prefix_lengths = [split_prefix([items[b][1].input_ids for b in rows]) for rows in members]
        saved = sum((len(rows) - 1) * length for rows, length in zip(members, prefix_lengths))
        if saved < self.min_saved_fraction * sum(len(e.input_ids) for _, e in items):
            return PadCollator(self.pad_token_id)(items)
        suffixes = [e.input_ids[prefix_lengths[g]:] for (_, e), g in zip(items, row_group)]
        if sum(prefix_lengths) + sum(len(s) for s in suffixes) <= self.pack_max_tokens:
            return self._packed(items, members, prefix_lengths, row_group, suffixes)
        size, groups = len(items), len(members)
        width, prefix_width = max(len(s) for s in suffixes), max(prefix_lengths)
        prefix_ids = torch.full((groups, prefix_width), self.pad_token_id, dtype=torch.long)
        prefix_mask = torch.zeros((groups, prefix_width), dtype=torch.long)
        for g, rows in enumerate(members):
            length = prefix_lengths[g]
            prefix_ids[g, :length] = torch.tensor(items[rows[0]][1].input_ids[:length], dtype=torch.long)
            prefix_mask[g, :length] = 1
        input_ids = torch.full((size, width), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((size, width), dtype=torch.long)
        for b, suffix in enumerate(suffixes):
            input_ids[b, : len(suffix)] = torch.tensor(suffix, dtype=torch.long)
            attention_mask[b, : len(suffix)] = 1
        return {
            "row_index": torch.tensor([i for i, _ in items], dtype=torch.long),
            "prefix_ids": prefix_ids,
            "prefix_mask": prefix_mask,
            "prefix_lengths": torch.tensor(prefix_lengths, dtype=torch.long),
            "row_group": torch.tensor(row_group, dtype=torch.long),
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "answer_index": attention_mask.sum(dim=1) - 1,
            **option_tensors(items),
        }


    def _packed(self, items, members: list[list[int]], prefix_lengths: list[int], row_group: list[int],
                suffixes: list[list[int]]) -> dict[str, torch.Tensor]:
        ids: list[int] = []
        positions: list[int] = []
        token_group: list[int] = []
        token_row: list[int] = []
        for g, rows in enumerate(members):
            length = prefix_lengths[g]
            ids.extend(items[rows[0]][1].input_ids[:length])
            positions.extend(range(length))
            token_group.extend([g] * length)
            token_row.extend([-1] * length)
        answer_index = []
        for b, (suffix, g) in enumerate(zip(suffixes, row_group)):
            ids.extend(suffix)
            positions.extend(range(prefix_lengths[g], prefix_lengths[g] + len(suffix)))
            token_group.extend([g] * len(suffix))
            token_row.extend([b] * len(suffix))
            answer_index.append(len(ids) - 1)
        padding = -len(ids) % self.pack_length_multiple  # its own group (-1): each pad sees earlier pads only
        ids.extend([self.pad_token_id] * padding)
        positions.extend([0] * padding)
        token_group.extend([-1] * padding)
        token_row.extend([-1] * padding)
        return {
            "row_index": torch.tensor([i for i, _ in items], dtype=torch.long),
            "packed_ids": torch.tensor([ids], dtype=torch.long),
            "packed_positions": torch.tensor([positions], dtype=torch.long),
            "packed_group": torch.tensor(token_group, dtype=torch.long),
            "packed_row": torch.tensor(token_row, dtype=torch.long),
            "answer_index": torch.tensor(answer_index, dtype=torch.long),
            **option_tensors(items),
        }


def computed_tokens(batch: dict[str, torch.Tensor]) -> int:
    """Token positions the decoder runs for a batch, padding included: B x width, plus G x P for shared prefixes;
    T for a packed one."""
    if "packed_ids" in batch:
        return int(batch["packed_ids"].numel())
    tokens = batch["input_ids"].numel()
    if "prefix_ids" in batch:
        tokens += batch["prefix_ids"].numel()
    return int(tokens)
