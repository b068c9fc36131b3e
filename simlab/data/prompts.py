"""The paper's prompt, rendered either as plain text (base models) or through a chat template, in the paper's
order (country first) or question first (so rows of one question share everything up to the country)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from simlab.data.letters import tokenizer_name

if TYPE_CHECKING:  # rows imports this module's country pattern
    from simlab.data.rows import SurveyRow

# The paper's instruction naming the country (the WVS rows carry it formatted; build_wvs and the Simulator format
# it), and the pattern that reads the country back out of it (data.country_pattern of conf/data/wvs_en.yaml).
PAPER_INSTRUCTION = "How would someone from {country} answer the following question:\n\n"
ENGLISH_COUNTRY_PATTERN = PAPER_INSTRUCTION.split(":")[0].replace("{country}", "(?P<country>.+?)")
PAPER_ANSWER_PREFIX = " If had to select one of the options, my answer would be ("
PAPER_OPTION_SEPARATOR = ", "
QUESTION_FIRST_SEPARATOR = "\n\n"  # between the options and the country sentence in the question_first order
PROMPT_ORDERS = ("paper", "question_first")


class PromptTooLongError(ValueError):
    """A prompt with more tokens than the limit (data.max_length, or the model's context); prompts are never
    truncated. The one class raised by the DataModule and by the Simulator."""


@dataclass(frozen=True)
class PromptFormat:
    """How a row becomes model input.

    ``plain``: the paper's string exactly: instruction + question + options joined by ", " + answer prefix.
    ``chat``: instruction + question + options as the user turn of the tokenizer's chat template, then the
    same answer prefix (leading space included, as the reference code tokenizes it) opening the assistant turn.

    ``order``: ``paper`` (the default, byte-identical to the paper's prompt) puts the instruction naming the
    country first. ``question_first`` keeps the paper's wording but moves the instruction after the options:
    question + options + "\n\n" + instruction (its trailing whitespace dropped), then the answer prefix as above.
    Every row of one question then shares the whole question and its options as a prompt prefix, which
    shared-prefix execution (:mod:`simlab.model.shared_prefix`) computes once per batch.
    """

    style: Literal["plain", "chat"] = "plain"
    answer_prefix: str = PAPER_ANSWER_PREFIX
    option_separator: str = PAPER_OPTION_SEPARATOR
    chat_template: str | None = None  # overrides the tokenizer's own (e.g. Vicuna v1.1, which ships none)
    order: Literal["paper", "question_first"] = "paper"

    def __post_init__(self) -> None:
        if self.style not in ("plain", "chat"):
            raise ValueError(f"prompt_style must be 'plain' or 'chat', got {self.style!r}")
        if self.order not in PROMPT_ORDERS:
            raise ValueError(f"prompt_order must be one of {list(PROMPT_ORDERS)}, got {self.order!r}")

    def question_text(self, instruction: str, question: str, options: tuple[str, ...] | list[str]) -> str:
        if self.order == "question_first":
            return question + self.option_separator.join(options) + QUESTION_FIRST_SEPARATOR + instruction.rstrip()
        return instruction + question + self.option_separator.join(options)

    def prefix_key(self, question: str, options: tuple[str, ...] | list[str]) -> str:
        """What rows that share a prompt prefix have in common before their own part (the country): the question
        and options in the question_first order, nothing in the paper's (the country comes first; rows still share
        the chat template's head and the instruction's opening words). Rows with equal keys are batched together
        by shared-prefix execution, which then shares their longest common token prefix; the key only groups,
        exactness never depends on it."""
        if self.order == "question_first":
            return question + "\x1f" + "\x1f".join(options)
        return ""

    def render(self, row: SurveyRow, tokenizer=None) -> str:
        return self.render_parts(row.instruction, row.question, row.options, tokenizer)

    def render_parts(self, instruction: str, question: str, options, tokenizer=None) -> str:
        user = self.question_text(instruction, question, options)
        if self.style == "plain":
            return user + self.answer_prefix
        return self.chat_prefix(user, tokenizer) + self.answer_prefix

    def chat_prefix(self, user: str, tokenizer) -> str:
        if tokenizer is None:
            raise ValueError("prompt_style=chat needs the tokenizer to render its chat template")
        template = self.chat_template or getattr(tokenizer, "chat_template", None)
        if not template:
            raise ValueError(
                f"tokenizer {tokenizer_name(tokenizer)!r} has no chat template: use prompt_style=plain "
                f"or give model.chat_template"
            )
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": user}], chat_template=template, tokenize=False, add_generation_prompt=True
        )

    @property
    def add_special_tokens(self) -> bool:
        """Plain prompts get the tokenizer's BOS; a chat template writes its own special tokens."""
        return self.style == "plain"
