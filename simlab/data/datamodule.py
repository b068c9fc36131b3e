"""The paper's country x question splits as a LightningDataModule: train, valid and one named test
loader per subset, tokenized once, length-grouped and dynamically padded."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from simlab.data.batching import (
    PACK_MAX_TOKENS,
    EncodedDataset,
    EncodedRow,
    LengthGroupedBatchSampler,
    PadCollator,
    PrefixGroupedBatchSampler,
    SharedPrefixCollator,
)
from simlab.data.checks import check_rows
from simlab.data.letters import resolve_letter_ids
from simlab.data.option_orders import cyclic_shifts, given_order, merge_option_orders
from simlab.data.population_prompts import as_wording, controlled, render_instruction, subgroups
from simlab.data.prompts import ENGLISH_COUNTRY_PATTERN, PAPER_ANSWER_PREFIX, PromptFormat, PromptTooLongError
from simlab.data.rows import SurveyRow, read_rows
from simlab.data.selection import (
    check_files_exist,
    check_unique_cells,
    data_file,
    report_invalid_rows,
    row_limit,
    sample_rows,
)
from simlab.data.transforms import permuted, relabelled_letters, rotate_options, shuffle_options
from simlab.paths import data_root

log = logging.getLogger(__name__)


class SurveyDataModule(pl.LightningDataModule):
    """Rows from paper-format files, grouped into named subsets (``C1-Q1`` ... ``C3-Q3``) by ``data_type``.

    Args:
        tokenizer: the model's tokenizer (a pad token is taken from eos if it has none); None loads rows only.
        files: data files relative to ``root`` (or absolute); each is read as named, else with .xz or .gz added.
        root: the data folder; None: $SIMLAB_DATA, else the copy shipped in the package (see ``data_root``).
        survey: the survey the files' questions belong to (``wvs7``, ``pew``): a question is (survey, id).
        subset_names: data_type -> subset name, e.g. ``{"test_1": "C1-Q3"}``.
        train_subset / valid_subset / test_subsets: which subsets feed fit, validation and test.
        average_subsets: the subsets whose mean is reported as the paper's average.
        limit_per_subset: keep a seeded random sample of this many rows per subset (smoke runs).
        limit_eval_per_subset: the same for the valid and test subsets only, so the train subset (and the
            baselines fitted on it) stays whole while evaluation is cut down (the sized sweep tables).
        sample_unit: ``row`` (a limit samples rows) or ``cell`` (whole (country, question) cells: every subgroup of
            a drawn cell, so subgroups can be compared with each other).
        country_control: [ctrl]: each prompt names a random other country from the data (target unchanged).
        population_wording: how a subgroup row's prompt names its population (a
            :class:`~simlab.data.populations.PopulationWording` or its config; None: the paper's wording); a
            whole-country row keeps its instruction (:mod:`simlab.data.population_prompts`).
        attribute_control: attribute-[ctrl]: each subgroup row's prompt names a random other subgroup of the data
            with the same attribute names (target unchanged).
        shuffle_options: each row's options in a seeded random order, relabelled A, B, C...; "eval" shuffles
            the valid and test rows only (a model trained on the original order, tested on shuffled options);
            "train" the training rows only (option-order augmentation), one order per question
        max_length: a longer prompt is an error naming the row; prompts are never truncated.
        drop_invalid: skip bad rows (logged, saved to ``invalid_rows_file``) instead of failing on the first.
        renormalize: rescale rows whose shares sum to neither 100 nor 1 (by default such a row is an error).
        countries: the known countries (a countries.json under ``root``); None: ``wvs7/countries.json`` there, if
            any (else names go unchecked, a warning). unknown_countries: ``error`` (a row naming another country
            is an error, or dropped with ``drop_invalid``) or ``warn`` (kept, a warning). Warnings are logged and
            kept in ``data_warnings`` (a run records them in metrics.json); see :mod:`simlab.data.checks`.
        prompt_order: ``paper`` (country first, the paper's prompt) or ``question_first`` (question and options,
            then the country sentence; see :class:`~simlab.data.prompts.PromptFormat`).
        shared_prefix: batches of rows sharing a prompt prefix (:class:`.batching.PrefixGroupedBatchSampler`),
            each prefix computed once per batch (:mod:`simlab.model.shared_prefix`); same scores as per-row batches.
            pack_max_tokens: such a batch of at most this many tokens runs as one packed sequence instead of two
            passes (0: never), padded to a multiple of ``pack_length_multiple`` tokens (1: not; CUDA graphs' shapes).
            merge_test_subsets: with shared_prefix, the test subsets in one loader (:meth:`test_parts`): a question
            asked in several has its prefix computed once for all their countries; scores equal to float rounding.
        prior_subset: the subset whose rows a prior is built from (:meth:`set_prior`): read whole, whatever the
            task and the limits (the training subset, C1-Q1).
        test_option_orders: ``given`` (each test row as it is) or ``cyclic``: each test row is asked K times, its
            options cyclically shifted (A first, then B first...), and the K answers, mapped back to the options,
            are averaged (:meth:`merge_option_orders`); a letter-position bias then cancels out. Costs K passes.
    """

    def __init__(
        self,
        tokenizer,
        files: Sequence[str],
        subset_names: dict[str, str],
        train_subset: str | None,
        valid_subset: str | None,
        test_subsets: Sequence[str],
        average_subsets: Sequence[str] = (),
        root: str | None = None,
        survey: str = "wvs7",
        prompt_style: str = "plain",
        answer_prefix: str = PAPER_ANSWER_PREFIX,
        chat_template: str | None = None,
        country_pattern: str = ENGLISH_COUNTRY_PATTERN,
        batch_size: int = 8,
        eval_batch_size: int = 16,
        max_length: int = 512,
        num_workers: int = 0,
        limit_per_subset: int | None = None,
        limit_eval_per_subset: int | None = None,
        sample_unit: str = "row",
        seed: int = 0,
        drop_invalid: bool = False,
        renormalize: bool = False,
        invalid_rows_file: str | None = None,
        country_control: bool = False,
        shuffle_options: bool | str = False,
        prompt_order: str = "paper",
        shared_prefix: bool = False,
        pack_max_tokens: int = PACK_MAX_TOKENS,
        pack_length_multiple: int = 1,
        merge_test_subsets: bool = True,
        prior_subset: str | None = None,
        test_option_orders: str = "given",
        population_wording=None,
        attribute_control: bool = False,
        countries: str | None = None,
        unknown_countries: str = "error",
    ):
        super().__init__()
        self.set_tokenizer(tokenizer)  # None: rows only (baselines that need no language model)
        self.files = list(files)
        self.subset_names = dict(subset_names)
        self.train_subset, self.valid_subset = train_subset, valid_subset
        self.test_subsets = list(test_subsets)
        self.average_subsets = list(average_subsets)
        self.root, self.survey = root, survey
        self.prompt = PromptFormat(
            style=prompt_style, answer_prefix=answer_prefix, chat_template=chat_template, order=prompt_order
        )
        self.shared_prefix = bool(shared_prefix)
        self.pack_max_tokens, self.pack_length_multiple = int(pack_max_tokens), int(pack_length_multiple)
        self.merge_test_subsets = bool(merge_test_subsets)
        self._prefix_groups: dict[str, int] = {}
        self.country_pattern = country_pattern
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.max_length, self.num_workers, self.sample_unit = max_length, num_workers, sample_unit
        self.limit_per_subset, self.limit_eval_per_subset, self.seed = limit_per_subset, limit_eval_per_subset, seed
        check_sizes(batch_size=batch_size, eval_batch_size=eval_batch_size, max_length=max_length)
        check_sizes(optional=True, limit_per_subset=limit_per_subset, limit_eval_per_subset=limit_eval_per_subset)
        self.countries, self.unknown_countries = countries, unknown_countries
        self.data_warnings: list[str] = []
        check_shuffle_options(shuffle_options)
        self.drop_invalid, self.renormalize, self.invalid_rows_file = drop_invalid, renormalize, invalid_rows_file
        self.country_control, self.shuffle_options = country_control, shuffle_options
        self.wording, self.attribute_control = as_wording(population_wording), bool(attribute_control)
        self.rows: dict[str, list[SurveyRow]] = {}
        self.datasets: dict[str, EncodedDataset] = {}
        self.letter_ids: dict[str, int] = {}
        self.invalid_rows: list[dict] = []
        self._resume_position: tuple[int, int] | None = None  # (epoch, batches done) from a checkpoint
        self.prior_subset, self.prior, self.prior_rows = prior_subset, None, []
        if test_option_orders not in ("given", "cyclic"):
            raise ValueError(f"data.test_option_orders must be 'given' or 'cyclic', got {test_option_orders!r}")
        self.test_option_orders = test_option_orders
        self.test_datasets: dict[str, EncodedDataset] = {}
        self.reused_tests: set[str] = set()  # test subsets scored by a validation instead (simlab.training.reuse)
        self.test_variants: dict[str, list[tuple[int, tuple[int, ...]]]] = {}  # (row, order shown) per test item
        self.source_rows: dict[str, list[SurveyRow]] = {}  # each subset's rows before the [ctrl]/shuffle settings

    # ------------------------------------------------------------------ loading
    def needed_subsets(self) -> list[str]:
        wanted = [self.train_subset, self.valid_subset, *self.test_subsets]
        return list(dict.fromkeys(s for s in wanted if s))

    def setup(self, stage: str | None = None) -> None:
        """Read and check the rows (once), then encode them if a tokenizer is set (once)."""
        self.load_rows()
        if self.tokenizer is not None and not self.datasets:
            self._encode_all()

    def set_tokenizer(self, tokenizer) -> None:
        """The model's tokenizer, given after :meth:`load_rows` so bad data fails before a model is loaded."""
        if tokenizer is not None and tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.tokenizer = tokenizer
        self.datasets, self.test_datasets = {}, {}

    def load_rows(self) -> None:
        """Read, validate and sample every needed subset; the [ctrl] and shuffle settings are applied here."""
        if self.rows:
            return
        root = data_root(self.root)
        check_files_exist(self.files, root)
        by_subset = self._read_files(root)
        self._report_invalid()
        if self.prior_subset:
            if self.prior_subset not in by_subset:
                raise ValueError(
                    f"data.prior_subset {self.prior_subset!r} has no rows (subsets found: {sorted(by_subset)})")
            self.prior_rows = list(by_subset[self.prior_subset])
        countries = sorted({row.country for rows in by_subset.values() for row in rows})  # the [ctrl] pools
        groups = subgroups(row for rows in by_subset.values() for row in rows)
        if self.attribute_control and not groups:
            raise ValueError(f"data.attribute_control=true needs subgroup rows (a 'population' with attributes); "
                             f"{self.files} under {root} hold whole countries only")
        for subset in self.needed_subsets():
            if subset not in by_subset:
                raise ValueError(
                    f"subset {subset!r} has no rows in {self.files} under {root} "
                    f"(subsets found: {sorted(by_subset)})"
                )
            self._select(subset, by_subset[subset], countries, groups)

    def _read_files(self, root: Path) -> dict[str, list[SurveyRow]]:
        """Every file's rows by subset, checked across files (:func:`~simlab.data.checks.check_rows`); bad rows
        are kept in ``invalid_rows`` when ``drop_invalid``."""
        rows: list[SurveyRow] = []
        for name in self.files:
            loaded = read_rows(
                data_file(name, root), subset_names=self.subset_names, country_pattern=self.country_pattern,
                drop_invalid=self.drop_invalid, renormalize=self.renormalize, survey=self.survey, name=name,
            )
            rows += loaded.rows
            self.invalid_rows.extend(loaded.invalid)
        rows, invalid, self.data_warnings = check_rows(rows, root, self.countries, self.unknown_countries,
                                                       self.drop_invalid)
        self.invalid_rows.extend(invalid)
        for warning in self.data_warnings:
            log.warning("data: %s", warning)
        by_subset: dict[str, list[SurveyRow]] = {}
        for row in rows:  # a subgroup row's prompt: the configured wording's
            by_subset.setdefault(row.subset, []).append(render_instruction(row, self.wording))
        return by_subset

    def _select(self, subset: str, rows: list[SurveyRow], countries: list[str], groups: list) -> None:
        """One subset's rows: checked for repeated cells, sampled down to the limit, then the settings applied."""
        check_unique_cells(subset, rows)
        train = subset == self.train_subset
        rows = sample_rows(rows, row_limit(train, self.limit_per_subset, self.limit_eval_per_subset), self.seed, subset,
                           self.sample_unit)
        self.source_rows[subset] = rows
        self.rows[subset] = [self._apply_settings(row, countries, groups, train) for row in rows]

    def _apply_settings(self, row: SurveyRow, countries: list[str], groups: list, train: bool) -> SurveyRow:
        if self.country_control or self.attribute_control:
            row = controlled(row, seed=self.seed, wording=self.wording, country_pattern=self.country_pattern,
                             countries=countries if self.country_control else None,
                             groups=groups if self.attribute_control else None)
        if self.shuffle_options is True or (self.shuffle_options == "eval" and not train):
            row = shuffle_options(row, self.seed)
        elif self.shuffle_options == "train" and train:  # one order per question: its countries share a prefix
            row = shuffle_options(row, self.seed, key=f"{row.survey}:{row.question_id}")
        return row

    def set_prior(self, prior) -> None:
        """Anchor every row's prediction on ``prior`` (:class:`simlab.simulator.prior.SurveyPrior`; None: none)."""
        self.prior = prior
        self.datasets, self.test_datasets = {}, {}

    @property
    def settings(self) -> dict:
        """What was changed about the prompts, recorded in every output."""
        return {"country_control": self.country_control, "shuffle_options": self.shuffle_options, "seed": self.seed,
                "prompt_order": self.prompt.order, **({"attribute_control": True} if self.attribute_control else {})}

    def _report_invalid(self) -> None:
        report_invalid_rows(self.invalid_rows, self.invalid_rows_file)

    def _encode_all(self) -> None:
        all_rows = [row for rows in self.rows.values() for row in rows]
        letters = {letter for row in all_rows for letter in row.letters}
        if self.test_option_orders == "cyclic":  # rotated rows are relabelled A, B, C...: a row lettered A, B, D
            letters |= {letter for row in all_rows for letter in relabelled_letters(len(row.options))}  # asks C too
        context = self.prompt.render(all_rows[0], self.tokenizer)
        self.letter_ids = resolve_letter_ids(
            self.tokenizer, context, letters, add_special_tokens=self.prompt.add_special_tokens
        )
        for subset, rows in self.rows.items():
            self.datasets[subset] = EncodedDataset([self.encode(r, s) for r, s in zip(rows, self.source_rows[subset])])
        for subset in self.test_subsets:
            self.test_datasets[subset] = self._test_dataset(subset)

    def _test_dataset(self, subset: str) -> EncodedDataset:
        if self.test_option_orders == "given":
            self.test_variants[subset] = given_order(self.rows[subset])
            return self.datasets[subset]
        variants, encoded = [], []
        for i, (row, source) in enumerate(zip(self.rows[subset], self.source_rows[subset])):
            for shift, order in cyclic_shifts(len(row.options)):
                variants.append((i, order))
                encoded.append(self.encode(rotate_options(row, shift), source))
        self.test_variants[subset] = variants
        return EncodedDataset(encoded)

    def merge_option_orders(self, predictions: dict[str, list[list[float]]]) -> dict[str, list[list[float]]]:
        """Per test row, the mean of its items' predictions mapped back to the row's own option order (the test
        items are the rows themselves when ``test_option_orders`` is ``given``)."""
        return merge_option_orders(predictions, self.test_variants, self.rows)

    def log_prior(self, row: SurveyRow, source: SurveyRow) -> list[float] | None:
        """The row's log prior in its displayed option order. Under [ctrl] the prior is the prompt population's,
        and never holds the real country's own answers (its target)."""
        if self.prior is None:
            return None
        if row.prompt_country or row.prompt_attributes is not None:
            shown = replace(source, country=row.prompt_country or source.country,
                            attributes=source.attributes if row.prompt_attributes is None else row.prompt_attributes)
            shares = self.prior.prior(shown, exclude=(row.country,))
        else:
            shares = self.prior.prior(source)
        return np.log(permuted(shares, row.option_order)).tolist()

    def encode(self, row: SurveyRow, source: SurveyRow | None = None) -> EncodedRow:
        text = self.prompt.render(row, self.tokenizer)
        input_ids = self.tokenizer(text, add_special_tokens=self.prompt.add_special_tokens)["input_ids"]
        if len(input_ids) > self.max_length:
            raise PromptTooLongError(
                f"{row.source}: row {row.index} (id {row.question_id}, {row.population_key}): the prompt has "
                f"{len(input_ids)} tokens, more than data.max_length={self.max_length}; raise data.max_length "
                f"(prompts are never truncated)"
            )
        key = self.prompt.prefix_key(row.question, row.options)
        return EncodedRow(
            input_ids=list(input_ids), letter_ids=[self.letter_ids[l] for l in row.letters], target=list(row.target),
            prefix_group=self._prefix_groups.setdefault(key, len(self._prefix_groups)),
            log_prior=self.log_prior(row, source if source is not None else row),
        )

    # ------------------------------------------------------------------ loaders
    def _loader(self, subset: str, train: bool, dataset: EncodedDataset | None = None) -> DataLoader:
        dataset = dataset if dataset is not None else self.datasets[subset]
        batch_size = self.batch_size if train else self.eval_batch_size
        if self.shared_prefix:
            sampler = PrefixGroupedBatchSampler(dataset.lengths, dataset.prefix_groups, batch_size, shuffle=train,
                                                seed=self.seed)
            collate = SharedPrefixCollator(self.tokenizer.pad_token_id, pack_max_tokens=self.pack_max_tokens,
                                           pack_length_multiple=self.pack_length_multiple)
        else:
            sampler = LengthGroupedBatchSampler(dataset.lengths, batch_size, shuffle=train, seed=self.seed)
            collate = PadCollator(self.tokenizer.pad_token_id)
        if train and self._resume_position is not None:
            sampler.resume_at(*self._resume_position)
            self._resume_position = None
        # The loader's own generator: creating its iterator draws a worker seed, which would otherwise come from
        # the global RNG that LoRA dropout uses (and shift every dropout mask after a resume or a validation).
        return DataLoader(dataset, batch_sampler=sampler, collate_fn=collate, num_workers=self.num_workers,
                          generator=torch.Generator().manual_seed(self.seed))

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_subset, train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.valid_subset, train=False)

    def test_parts(self) -> list[list[tuple[str, int, int]]]:
        """Per test loader, its subsets as ``(subset, start, end)`` row ranges: one a loader, or all in one
        (``merge_test_subsets`` with shared prefixes); not those in ``reused_tests`` (simlab.training.reuse)."""
        sizes = [(s, len(self.test_datasets[s])) for s in self.test_subsets if s not in self.reused_tests]
        if not (self.shared_prefix and self.merge_test_subsets):
            return [[(subset, 0, size)] for subset, size in sizes]
        ends = np.cumsum([0] + [size for _, size in sizes]).tolist()
        return [[(subset, ends[i], ends[i + 1]) for i, (subset, _) in enumerate(sizes)]] if sizes else []

    def test_dataloader(self) -> list[DataLoader]:
        merged = [[row for subset, _, _ in parts for row in self.test_datasets[subset].encoded]
                  for parts in self.test_parts()]
        return [self._loader("", train=False, dataset=EncodedDataset(rows)) for rows in merged]

    # ------------------------------------------------------------------ resuming
    def state_dict(self) -> dict:
        """Where training is in the epoch's batch list, saved in every checkpoint: a resumed run skips exactly
        the batches already trained on (the list itself is rebuilt from the seed and the epoch)."""
        trainer = self.trainer
        if trainer is None or trainer.state.fn != "fit":
            return {}
        progress = trainer.fit_loop.epoch_loop.batch_progress.current
        return {"train_epoch": trainer.current_epoch, "train_batches_done": progress.processed}

    def load_state_dict(self, state_dict: dict) -> None:
        if "train_epoch" in state_dict:
            self._resume_position = (int(state_dict["train_epoch"]), int(state_dict["train_batches_done"]))


def check_sizes(optional: bool = False, **sizes: int | None) -> None:
    """Each of ``data.<name>`` a positive integer (or null, when ``optional``)."""
    for key, value in sizes.items():
        if optional and value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            also = " or null (every row)" if optional else ""
            raise ValueError(f"data.{key} must be a positive integer{also}, got {value!r}")


def check_shuffle_options(shuffle_options: bool | str) -> None:
    if shuffle_options not in (False, True, "eval", "train"):
        raise ValueError(f"data.shuffle_options must be false, true, 'eval' (valid/test only) or 'train' (training "
                         f"rows only, one order per question), got {shuffle_options!r}")
