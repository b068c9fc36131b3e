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
        options = max(len(e.letter_ids) for _, e in items)
        size = len(items)
        input_ids = torch.full((size, width), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((size, width), dtype=torch.long)
        letter_ids = torch.zeros((size, options), dtype=torch.long)
        option_mask = torch.zeros((size, options), dtype=torch.bool)
        target = torch.zeros((size, options), dtype=torch.float32)
        for b, (_, e) in enumerate(items):
            input_ids[b, : len(e.input_ids)] = torch.tensor(e.input_ids)
            attention_mask[b, : len(e.input_ids)] = 1
            letter_ids[b, : len(e.letter_ids)] = torch.tensor(e.letter_ids)
            option_mask[b, : len(e.letter_ids)] = True
            target[b, : len(e.target)] = torch.tensor(e.target)
        return {
            "row_index": torch.tensor([i for i, _ in items], dtype=torch.long),
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "answer_index": attention_mask.sum(dim=1) - 1,
            "letter_ids": letter_ids,
            "option_mask": option_mask,
            "target": target,
        }
