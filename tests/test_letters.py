"""Letters resolved to next-token ids after the answer prefix; tokenizers that cannot do that are errors."""

from __future__ import annotations

import string

import pytest
from conftest import paper_row
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from simlab.data.letters import LetterResolutionError, resolve_letter_ids, tokenizer_name
from simlab.data.prompts import PAPER_ANSWER_PREFIX, PromptFormat

LETTERS = string.ascii_uppercase


def _paper_prompt() -> str:
    row = paper_row()
    return PromptFormat().render_parts(row["instruction"], row["input"], row["options"])


def _wrap(tok: Tokenizer, name: str) -> PreTrainedTokenizerFast:
    fast = PreTrainedTokenizerFast(tokenizer_object=tok)
    fast.name_or_path = name
    return fast


@pytest.mark.parametrize("context", ["prompt", "prefix"])
def test_all_letters_single_distinct_ids(tiny_tokenizer, context):
    text = _paper_prompt() if context == "prompt" else PAPER_ANSWER_PREFIX
    assert text.endswith(PAPER_ANSWER_PREFIX)
    resolved = resolve_letter_ids(tiny_tokenizer, text, LETTERS)
    assert sorted(resolved) == list(LETTERS)
    assert len(set(resolved.values())) == 26
    base = tiny_tokenizer(text, add_special_tokens=False)["input_ids"]
    for letter, token_id in resolved.items():
        ids = tiny_tokenizer(text + letter, add_special_tokens=False)["input_ids"]
        assert ids[:-1] == base
        assert token_id == ids[-1]
        assert tiny_tokenizer.decode([token_id]) == letter


def test_subset_and_duplicates_of_letters(tiny_tokenizer):
    full = resolve_letter_ids(tiny_tokenizer, PAPER_ANSWER_PREFIX, LETTERS)
    some = resolve_letter_ids(tiny_tokenizer, PAPER_ANSWER_PREFIX, ["C", "A", "C", "X"])
    assert some == {"A": full["A"], "C": full["C"], "X": full["X"]}


def test_chat_prompt_letters(tiny_tokenizer):
    row = paper_row()
    fmt = PromptFormat(style="chat")
    text = fmt.render_parts(row["instruction"], row["input"], row["options"], tiny_tokenizer)
    resolved = resolve_letter_ids(tiny_tokenizer, text, LETTERS, add_special_tokens=fmt.add_special_tokens)
    assert len(set(resolved.values())) == 26
    assert resolved == resolve_letter_ids(tiny_tokenizer, PAPER_ANSWER_PREFIX, LETTERS)


def test_letter_merging_with_paren_fails():
    # no pre-tokenizer: BPE sees "(A" as one word and merges it into a single token
    vocab = {"(": 0, "A": 1, "B": 2, "(A": 3, "x": 4}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[("(", "A")]))
    fast = _wrap(tok, "merge-bpe")
    assert fast("x(A", add_special_tokens=False)["input_ids"] == [4, 3]
    with pytest.raises(LetterResolutionError) as info:
        resolve_letter_ids(fast, "x(", ["A", "B"])
    text = str(info.value)
    assert "merge-bpe" in text
    assert "'A'" in text
    # B alone is fine
    assert resolve_letter_ids(fast, "x(", ["B"]) == {"B": 2}


def test_letters_sharing_unk_fail():
    vocab = {"[UNK]": 0, "(": 1, "C": 2, "D": 3, "x": 4}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    fast = _wrap(tok, "unk-wordlevel")
    assert fast("x (A", add_special_tokens=False)["input_ids"] == [4, 1, 0]
    assert resolve_letter_ids(fast, "x (", ["C", "D"]) == {"C": 2, "D": 3}
    with pytest.raises(LetterResolutionError) as info:
        resolve_letter_ids(fast, "x (", ["A", "B", "C"])
    text = str(info.value)
    assert "share" in text
    assert "'A'" in text and "'B'" in text
    assert "unk-wordlevel" in text


def test_letter_splitting_into_two_tokens_fails(tiny_tokenizer):
    # a byte-level BPE that never saw "Ä" writes it as two byte tokens
    ids = tiny_tokenizer(PAPER_ANSWER_PREFIX + "Ä", add_special_tokens=False)["input_ids"]
    base = tiny_tokenizer(PAPER_ANSWER_PREFIX, add_special_tokens=False)["input_ids"]
    assert len(ids) == len(base) + 2
    with pytest.raises(LetterResolutionError, match="'Ä'"):
        resolve_letter_ids(tiny_tokenizer, PAPER_ANSWER_PREFIX, ["A", "Ä"])


def test_context_token_merging_with_letter_fails():
    # "ab" is one token, but "abA" becomes "a" + "bA": one more token than the context, yet the
    # context's own tokens changed, so the letter cannot be read off the next-token distribution
    vocab = {"a": 0, "b": 1, "A": 2, "B": 3, "ab": 4, "bA": 5}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[("b", "A"), ("a", "b")]))
    fast = _wrap(tok, "context-merge-bpe")
    assert fast("ab", add_special_tokens=False)["input_ids"] == [4]
    assert fast("abA", add_special_tokens=False)["input_ids"] == [0, 5]
    assert fast("abB", add_special_tokens=False)["input_ids"] == [4, 3]
    assert resolve_letter_ids(fast, "ab", ["B"]) == {"B": 3}
    with pytest.raises(LetterResolutionError) as info:
        resolve_letter_ids(fast, "ab", ["A", "B"])
    assert "'A'" in str(info.value)
    assert "context-merge-bpe" in str(info.value)


def test_tokenizer_name_falls_back_to_type():
    tok = Tokenizer(models.WordLevel(vocab={"[UNK]": 0, "A": 1}, unk_token="[UNK]"))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok)
    assert tokenizer_name(fast) == type(fast).__name__  # TokenizersBackend in transformers 5
    fast.name_or_path = "some/model"
    assert tokenizer_name(fast) == "some/model"
