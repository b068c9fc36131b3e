"""The paper's prompt, written out literally, in plain and chat style."""

from __future__ import annotations

import re

import pytest
from conftest import CHATML_TEMPLATE, build_tokenizer, paper_row, read_data_json
from transformers import AutoTokenizer

from simlab.data.prompts import PAPER_ANSWER_PREFIX, PromptFormat
from simlab.data.rows import ENGLISH_COUNTRY_PATTERN, parse_row

# the first row of wvs7/sft_wvs_valid.json, as it is in the file
VALID_ROW_0 = {
    "id": "164",
    "instruction": "How would someone from Andorra answer the following question:\n\n",
    "input": "How important is God in your life? Please use this scale to indicate. 10 means 'very important' and "
    "1 means 'not at all important.' \nHere are the options: \n",
    "options": ["(A)Not at all important", "(B)2", "(C)3", "(D)4", "(E)5", "(F)6", "(G)7", "(H)8", "(I)9",
                "(J)Very important"],
    "options_dist": {"G": 8.132530120481928, "A": 25.502008032128515, "H": 10.240963855421686,
                     "D": 5.321285140562249, "C": 7.530120481927711, "E": 11.947791164658634,
                     "J": 10.341365461847388, "F": 5.72289156626506, "B": 9.538152610441768, "I": 5.72289156626506},
    "data_type": "valid",
}

VALID_ROW_0_PROMPT = (
    "How would someone from Andorra answer the following question:\n\n"
    "How important is God in your life? Please use this scale to indicate. 10 means 'very important' and 1 means "
    "'not at all important.' \nHere are the options: \n"
    "(A)Not at all important, (B)2, (C)3, (D)4, (E)5, (F)6, (G)7, (H)8, (I)9, (J)Very important"
    " If had to select one of the options, my answer would be ("
)

VALID_ROW_0_USER = VALID_ROW_0_PROMPT[: -len(" If had to select one of the options, my answer would be (")]


def _row(raw):
    return parse_row(raw, path="x.json", index=0, subset_names={"valid": "valid", "train": "train"},
                     country_pattern=re.compile(ENGLISH_COUNTRY_PATTERN))


def test_paper_answer_prefix_literal():
    assert PAPER_ANSWER_PREFIX == " If had to select one of the options, my answer would be ("


def test_plain_prompt_of_real_row():
    assert PromptFormat().render(_row(VALID_ROW_0)) == VALID_ROW_0_PROMPT
    assert PromptFormat(style="plain").render(_row(VALID_ROW_0), tokenizer=None) == VALID_ROW_0_PROMPT


def test_real_row_is_first_row_of_shared_file():
    rows = read_data_json("wvs7/sft_wvs_valid.json")
    assert rows[0] == VALID_ROW_0
    assert PromptFormat().render(_row(rows[0])) == VALID_ROW_0_PROMPT


def test_plain_prompt_of_made_up_row():
    raw = paper_row(
        instruction="How would someone from New Zealand answer the following question:\n\n",
        input="Do you like tea? \nHere are the options: \n",
        options=["(A)Yes", "(B)No", "(C)Hard to say"],
        options_dist={"A": 50, "B": 25, "C": 25},
    )
    expected = (
        "How would someone from New Zealand answer the following question:\n\n"
        "Do you like tea? \nHere are the options: \n"
        "(A)Yes, (B)No, (C)Hard to say If had to select one of the options, my answer would be ("
    )
    assert PromptFormat().render(_row(raw)) == expected
    assert PromptFormat().render_parts(raw["instruction"], raw["input"], raw["options"]) == expected
    assert PromptFormat().question_text(raw["instruction"], raw["input"], tuple(raw["options"])) == expected[
        : -len(PAPER_ANSWER_PREFIX)
    ]


def test_custom_separator_and_prefix():
    fmt = PromptFormat(option_separator="; ", answer_prefix=" Answer: (")
    assert fmt.render_parts("I: ", "Q? ", ["(A)x", "(B)y"]) == "I: Q? (A)x; (B)y Answer: ("


def test_chat_prompt_exact(tiny_tokenizer):
    text = PromptFormat(style="chat").render(_row(VALID_ROW_0), tiny_tokenizer)
    expected = (
        "<|im_start|>user\n" + VALID_ROW_0_USER + "<|im_end|>\n<|im_start|>assistant\n"
        " If had to select one of the options, my answer would be ("
    )
    assert text == expected


def test_chat_without_template_names_saved_tokenizer(tmp_path):
    folder = tmp_path / "no-template-tok"
    build_tokenizer(chat_template=None).save_pretrained(folder)
    tok = AutoTokenizer.from_pretrained(folder)
    assert not getattr(tok, "chat_template", None)
    with pytest.raises(ValueError) as info:
        PromptFormat(style="chat").render(_row(VALID_ROW_0), tok)
    assert str(folder) in str(info.value)
    assert "chat template" in str(info.value)


def test_chat_without_template_names_in_code_tokenizer():
    tok = build_tokenizer(chat_template=None)
    assert tok.name_or_path == ""
    with pytest.raises(ValueError) as info:
        PromptFormat(style="chat").render(_row(VALID_ROW_0), tok)
    assert repr(type(tok).__name__) in str(info.value)


def test_chat_without_tokenizer_raises():
    with pytest.raises(ValueError, match="tokenizer"):
        PromptFormat(style="chat").render(_row(VALID_ROW_0))


def test_explicit_chat_template_overrides(tiny_tokenizer):
    vicuna_like = (
        "{% for message in messages %}{{ 'USER: ' + message['content'] + '\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ 'ASSISTANT: ' }}{% endif %}"
    )
    fmt = PromptFormat(style="chat", chat_template=vicuna_like)
    expected = "USER: " + VALID_ROW_0_USER + "\nASSISTANT:  If had to select one of the options, my answer would be ("
    assert fmt.render(_row(VALID_ROW_0), tiny_tokenizer) == expected
    # and it works for a tokenizer that ships no template at all
    bare = build_tokenizer(chat_template=None)
    assert fmt.render(_row(VALID_ROW_0), bare) == expected
    assert tiny_tokenizer.chat_template == CHATML_TEMPLATE  # the tokenizer itself is left alone


def test_add_special_tokens():
    assert PromptFormat().add_special_tokens is True
    assert PromptFormat(style="plain").add_special_tokens is True
    assert PromptFormat(style="chat").add_special_tokens is False


@pytest.mark.parametrize("style", ["xml", "Plain", "", None])
def test_invalid_style(style):
    with pytest.raises(ValueError, match="prompt_style"):
        PromptFormat(style=style)


def test_one_instruction_constant():
    """The instruction naming the country is written once (prompts.PAPER_INSTRUCTION), literally the paper's; the
    country pattern, the WVS builder, the Simulator and conf/data/wvs_en.yaml all follow it."""
    import importlib
    import inspect
    import pkgutil

    from conftest import REPO
    from omegaconf import OmegaConf

    from simlab import simulate
    from simlab.data import build_wvs
    from simlab.data.prompts import PAPER_INSTRUCTION

    assert PAPER_INSTRUCTION == "How would someone from {country} answer the following question:\n\n"
    assert ENGLISH_COUNTRY_PATTERN == r"How would someone from (?P<country>.+?) answer the following question"
    match = re.match(ENGLISH_COUNTRY_PATTERN, PAPER_INSTRUCTION.format(country="New Zealand"))
    assert match["country"] == "New Zealand"
    assert OmegaConf.load(REPO / "conf/data/wvs_en.yaml").country_pattern == ENGLISH_COUNTRY_PATTERN
    assert build_wvs.PAPER_INSTRUCTION is PAPER_INSTRUCTION
    assert inspect.signature(simulate.Simulator).parameters["instruction_template"].default is PAPER_INSTRUCTION
    parts = [importlib.import_module(f"simlab.simulate.{m.name}") for m in pkgutil.iter_modules(simulate.__path__)]
    for module in (simulate, *parts, build_wvs):
        assert "How would someone from" not in inspect.getsource(module)
