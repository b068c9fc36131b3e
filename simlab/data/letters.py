"""Option letters resolved to token ids in context: the id a letter gets right after the prompt's '('."""

from __future__ import annotations

from collections.abc import Iterable


class LetterResolutionError(ValueError):
    """A letter that the tokenizer cannot score as one next token after the answer prefix."""


def tokenizer_name(tokenizer) -> str:
    return getattr(tokenizer, "name_or_path", None) or type(tokenizer).__name__


def resolve_letter_ids(
    tokenizer, context: str, letters: Iterable[str], *, add_special_tokens: bool = False
) -> dict[str, int]:
    """Map each letter to the single token it becomes when appended to ``context``.

    Tokenizing ``context + letter`` must give exactly the tokens of ``context`` plus one more; otherwise
    (the letter merges with '(' or splits into several tokens) the letter cannot be read off the next-token
    distribution, which is an error. Two letters sharing one id is an error too.
    """
    base = tokenizer(context, add_special_tokens=add_special_tokens)["input_ids"]
    resolved: dict[str, int] = {}
    for letter in sorted(set(letters)):
        ids = tokenizer(context + letter, add_special_tokens=add_special_tokens)["input_ids"]
        if ids[: len(base)] != base or len(ids) != len(base) + 1:
            tail = ids[len(base) - 1 :] if ids[: len(base) - 1] == base[:-1] else ids[-4:]
            raise LetterResolutionError(
                f"tokenizer {tokenizer_name(tokenizer)!r}: letter {letter!r} is not a single token after "
                f"{context[-12:]!r} (the prompt's end tokenizes to ...{base[-2:]} and with the letter to ...{tail})"
            )
        resolved[letter] = ids[-1]
    by_id: dict[int, str] = {}
    for letter, token_id in resolved.items():
        if token_id in by_id:
            raise LetterResolutionError(
                f"tokenizer {tokenizer_name(tokenizer)!r}: letters {by_id[token_id]!r} and {letter!r} "
                f"share token id {token_id}"
            )
        by_id[token_id] = letter
    return resolved
