"""The rows the bench measures: a seeded sample of one subset, read and encoded by the library's datamodule, in an
order grouped by question (:func:`grouped_order`) and cut into chunks of whole questions (:func:`question_chunks`)."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from simlab.data import SurveyDataModule
from simlab.data.batching import EncodedDataset, EncodedRow
from simlab.devtools.bench.reference import REFERENCE_MAX_LENGTH


@dataclass
class BenchData:
    """The benchmark rows: the datamodule's encoded rows (simlab) and what the reference tokenises on the fly."""

    datamodule: SurveyDataModule
    subset: str
    max_length: int = REFERENCE_MAX_LENGTH
    population_lengths: list[int] | None = None  # every row of the subset, before sampling (tokens)

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
    population = [len(e.input_ids) for e in datamodule.datasets[subset].encoded]  # before a questions sample
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
    return BenchData(datamodule, subset, max_length=max_length, population_lengths=population)


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

