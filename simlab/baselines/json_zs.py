"""The paper's JSON-ZS baseline: the model is asked for a JSON object of option percentages, greedy decoding."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tqdm.auto import tqdm

from simlab.baselines.base import Distribution
from simlab.baselines.common import Counts, row_key, uniform
from simlab.baselines.json_parse import parse_json_distribution
from simlab.data.prompts import PromptFormat
from simlab.data.rows import SurveyRow

JSON_INSTRUCTION = (
    "Answer with a JSON object mapping each option letter to the percentage of people who would choose it, "
    'e.g. {"A": 40, "B": 60}.'
)


class JsonZeroShotBaseline:
    """The paper's JSON-ZS: ask the model for a JSON object of option percentages and parse its greedy answer.

    The prompt is the row's instruction + question + options joined by ", " (the paper's text, without its
    answer prefix), a blank line, then ``JSON_INSTRUCTION``. ``prompt_style="plain"`` adds "\\nAnswer: " and the
    tokenizer's BOS; ``"chat"`` puts it in the user turn of the chat template (``chat_template`` overrides the
    tokenizer's own) and the model answers as the assistant. Generation is greedy (``do_sample=False``), batched,
    left-padded. Outputs that :func:`parse_json_distribution` cannot read get uniform; ``report()`` counts them
    and names their rows. ``generations`` keeps every (row, text) of the last ``predict`` call.

    The language model (a :class:`simlab.model.LanguageModel`) is passed as ``language_model=`` (e.g. to Hydra's
    ``instantiate``) or set later with :meth:`set_language_model`; ``fit`` learns nothing.
    """

    name = "json_zs"

    def __init__(
        self,
        max_new_tokens: int = 160,
        prompt_style: str = "plain",
        chat_template: str | None = None,
        batch_size: int = 8,
        language_model: Any = None,
        show_progress: bool = True,
    ) -> None:
        self.max_new_tokens, self.batch_size = int(max_new_tokens), int(batch_size)
        if self.max_new_tokens < 1 or self.batch_size < 1:
            raise ValueError("json_zs max_new_tokens and batch_size must be at least 1")
        self.prompt_format = PromptFormat(style=prompt_style, chat_template=chat_template)  # validates the style
        self.show_progress = show_progress
        self.language_model = language_model
        self.generations: list[dict[str, Any]] = []
        self._unparsed: list[dict[str, Any]] = []
        self._counts = Counts()

    def set_language_model(self, language_model: Any) -> JsonZeroShotBaseline:
        self.language_model = language_model
        return self

    def fit(self, train_rows: Sequence[SurveyRow] = ()) -> JsonZeroShotBaseline:
        return self

    def prompt(self, row: SurveyRow) -> str:
        user = self.prompt_format.question_text(row.instruction, row.question, row.options) + "\n\n" + JSON_INSTRUCTION
        if self.prompt_format.style == "plain":
            return user + "\nAnswer: "
        tokenizer = self.language_model.tokenizer if self.language_model is not None else None
        return self.prompt_format.chat_prefix(user, tokenizer)

    def generate(self, prompts: Sequence[str]) -> list[str]:
        """Greedy continuations of ``prompts`` (new text only), in batches of ``batch_size``."""
        import torch

        if self.language_model is None:
            raise RuntimeError(
                "json_zs needs a language model: JsonZeroShotBaseline(language_model=...) or set_language_model")
        model, tokenizer = self.language_model.model, self.language_model.tokenizer
        if tokenizer.pad_token_id is None:  # batching needs a pad token; as in the datamodule, reuse eos
            if tokenizer.eos_token is None:
                raise ValueError("json_zs: the tokenizer has neither a pad nor an eos token")
            tokenizer.pad_token = tokenizer.eos_token
        pad_id = tokenizer.pad_token_id
        device = next(model.parameters()).device
        was_training, old_side = model.training, tokenizer.padding_side
        model.eval()
        tokenizer.padding_side = "left"
        texts: list[str] = []
        try:
            starts = range(0, len(prompts), self.batch_size)
            for start in tqdm(starts, desc="json_zs: generating", unit="batch", disable=not self.show_progress):
                batch = list(prompts[start : start + self.batch_size])
                encoded = tokenizer(
                    batch,
                    return_tensors="pt",
                    padding=True,
                    add_special_tokens=self.prompt_format.add_special_tokens,
                    return_token_type_ids=False,
                )
                encoded = {name: tensor.to(device) for name, tensor in encoded.items()}
                with torch.no_grad():
                    output = model.generate(
                        **encoded,
                        max_new_tokens=self.max_new_tokens,
                        do_sample=False,
                        num_beams=1,
                        pad_token_id=pad_id,
                        use_cache=True,
                    )
                new_tokens = output[:, encoded["input_ids"].shape[1] :]
                texts.extend(tokenizer.batch_decode(new_tokens, skip_special_tokens=True))
        finally:
            tokenizer.padding_side = old_side
            model.train(was_training)
        return texts

    def predict(self, rows: Sequence[SurveyRow]) -> list[Distribution]:
        texts = self.generate([self.prompt(row) for row in rows])
        predictions: list[Distribution] = []
        self.generations = []
        for row, text in zip(rows, texts):
            self._counts.add(row.subset, "rows")
            distribution = parse_json_distribution(text, row.letters)
            self.generations.append({**row_key(row), "text": text, "parsed": distribution is not None})
            if distribution is None:
                self._counts.add(row.subset, "unparsed")
                self._unparsed.append(row_key(row))
                distribution = uniform(len(row.letters))
            predictions.append(distribution)
        return predictions

    def report(self) -> dict[str, Any]:
        return {
            "baseline": self.name,
            "prompt_style": self.prompt_format.style,
            "max_new_tokens": self.max_new_tokens,
            **self._counts.as_dict(["rows", "unparsed"]),
            "unparsed_rows": list(self._unparsed),
        }
