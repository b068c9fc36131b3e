"""task=simulate end to end on a tiny random Llama, the notebook API, and every input error."""

import csv
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from conftest import REPO, read_data_json

QUESTIONS_YAML = """\
- id: cars
  text: Should cities ban private cars from their centres?
  options: [Agree strongly, Agree, Disagree, Disagree strongly]
- text: "Would you trust a computer to decide | for you?"
  options:
    - Yes
    - No
    - It depends
"""
COUNTRIES = ["Japan", "Kenya", "Brazil"]


def run_py(*overrides):
    return subprocess.run([sys.executable, "run.py", *overrides], cwd=REPO, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def questions_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("questions") / "questions.yaml"
    path.write_text(QUESTIONS_YAML, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def random_adapter(tmp_path_factory, tiny_llama_dir):
    """A LoRA adapter with random (non-zero) B, so it really changes the model's answers."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    config = LoraConfig(task_type="CAUSAL_LM", r=4, lora_alpha=16, target_modules=["q_proj", "v_proj"],
                        init_lora_weights=False)
    folder = tmp_path_factory.mktemp("adapter")
    get_peft_model(model, config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def simulate_dir(tmp_path_factory, tiny_llama_dir, random_adapter, questions_file, shared_data):
    out = tmp_path_factory.mktemp("simulate")
    result = run_py(
        "task=simulate", "model=hf", f"model.path={tiny_llama_dir}", f"model.adapter={random_adapter}",
        f"simulate.input={questions_file}", f"simulate.countries=[{','.join(COUNTRIES)}]", "simulate.batch_size=4",
        f"data.root={shared_data}", f"hydra.run.dir={out}",
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return out


def test_cli_writes_csv_markdown_and_pngs(simulate_dir, random_adapter):
    frame = pd.read_csv(simulate_dir / "simulation.csv", keep_default_na=False)
    assert list(frame.columns) == ["question_id", "country", "letter", "option", "share", "source"]
    assert len(frame) == 3 * (4 + 3) and set(frame["source"]) == {"simulated"}
    sums = frame.groupby(["question_id", "country"])["share"].sum()
    assert len(sums) == 2 * 3 and sums.to_numpy() == pytest.approx(1.0, abs=1e-6)
    assert frame["share"].between(0, 1).all()
    assert set(frame["question_id"]) == {"cars", "q2"}  # the second entry has no id: q<position>
    q2 = frame[(frame["question_id"] == "q2") & (frame["country"] == "Kenya")]
    assert list(q2["letter"]) == ["A", "B", "C"] and list(q2["option"]) == ["Yes", "No", "It depends"]

    meta = json.loads((simulate_dir / "simulation.meta.json").read_text())
    assert meta["model"] == "hf" and meta["adapter"] == str(random_adapter.resolve())
    assert "less diverse across countries" in meta["caution"] and meta["countries"] == COUNTRIES
    assert "observed" not in meta  # no simulate.observed

    md = (simulate_dir / "simulation.md").read_text()
    assert "## cars: Should cities ban private cars from their centres?" in md
    assert "| country | A: Agree strongly | B: Agree | C: Disagree | D: Disagree strongly |" in md
    assert "Would you trust a computer to decide \\| for you?" in md  # a '|' in text cannot break the table
    assert md.count("| Japan |") == md.count("| Kenya |") == md.count("| Brazil |") == 2
    assert str(random_adapter.resolve()) in md and "less diverse across countries" in md

    for name in meta["files"]["images"].values():
        png = simulate_dir / name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert sorted(p.name for p in simulate_dir.glob("*.png")) == ["simulation_01_cars.png", "simulation_02_q2.png"]


def test_markdown_orders_countries_by_first_option(simulate_dir):
    frame = pd.read_csv(simulate_dir / "simulation.csv", keep_default_na=False)
    first = frame[(frame["question_id"] == "cars") & (frame["letter"] == "A")].sort_values("share", ascending=False)
    md = (simulate_dir / "simulation.md").read_text().split("## q2")[0]
    assert [md.index(f"| {c} |") for c in first["country"]] == sorted(md.index(f"| {c} |") for c in COUNTRIES)


def test_api_returns_the_cli_numbers(simulate_dir, questions_file, tiny_llama_dir, random_adapter, shared_data):
    from simlab.simulate import Simulator, read_questions

    cli = pd.read_csv(simulate_dir / "simulation.csv", keep_default_na=False)
    from_run = Simulator.from_run(simulate_dir, batch_size=1)  # another batching, same numbers
    api = from_run.predict_questions(read_questions(questions_file), COUNTRIES)
    assert api.attrs["adapter"] == str(random_adapter.resolve()) and "less diverse" in api.attrs["caution"]
    columns = ["question_id", "country", "letter", "option"]
    assert api[columns].equals(cli[columns])
    assert api["share"].to_numpy() == pytest.approx(cli["share"].to_numpy(), abs=1e-6)

    direct = Simulator({"path": str(tiny_llama_dir)}, adapter=random_adapter, data_root=shared_data, device="cpu")
    one = direct.predict("Should cities ban private cars from their centres?",
                         ["Agree strongly", "Agree", "Disagree", "Disagree strongly"], COUNTRIES, id="cars")
    expected = cli[cli["question_id"] == "cars"].reset_index(drop=True)
    assert one["share"].to_numpy() == pytest.approx(expected["share"].to_numpy(), abs=1e-6)

    bare = Simulator({"path": str(tiny_llama_dir)}, data_root=shared_data)
    assert bare.provenance["adapter"] is None
    plain = bare.predict("Should cities ban private cars from their centres?",
                         ["Agree strongly", "Agree", "Disagree", "Disagree strongly"], COUNTRIES)
    assert abs(plain["share"].to_numpy() - one["share"].to_numpy()).max() > 1e-4  # the adapter is really applied


def test_prompt_is_the_papers(tiny_tokenizer):
    """A WVS row's question given as plain text + labels renders to exactly the evaluation prompt."""
    from simlab.data import PromptFormat
    from simlab.data.rows import OPTION_PATTERN
    from simlab.model import LanguageModel
    from simlab.simulate import Simulator, make_question

    row = read_data_json("wvs7/sft_wvs_valid.json")[0]
    labels = [OPTION_PATTERN.match(o).group("label") for o in row["options"]]
    text = row["input"].replace(" \nHere are the options: \n", "")
    question = make_question(text, labels)

    class Stub:  # the prompt needs only the tokenizer; no forward pass here
        config = type("Config", (), {"max_position_embeddings": 4096})()

        def to(self, device):
            return self

        def eval(self):
            return self

    for style in ("plain", "chat"):
        sim = Simulator(LanguageModel(Stub(), tiny_tokenizer, "stub"), prompt_style=style, known_countries=["Andorra"])
        expected = PromptFormat(style=style).render_parts(row["instruction"], row["input"], row["options"],
                                                          tiny_tokenizer)
        assert sim.prompt_text(question, "Andorra") == expected


def test_default_countries_are_every_wvs_country(shared_data, tiny_llama_dir):
    from simlab.simulate import Simulator, wvs_countries

    known = wvs_countries(shared_data)
    assert len(known) == 63 and {"Japan", "Kenya", "Czechia", "Puerto Rico"} <= set(known) and "India" not in known
    frame = Simulator({"path": str(tiny_llama_dir)}, data_root=shared_data, batch_size=32).predict("Q?", ["Yes", "No"])
    assert sorted(set(frame["country"])) == known and len(frame) == 2 * 63


def test_json_and_csv_inputs_read_like_yaml(tmp_path, questions_file):
    from simlab.simulate import read_questions

    expected = [(q.id, q.text, q.options) for q in read_questions(questions_file)]
    (tmp_path / "q.json").write_text(json.dumps({"questions": [
        {"id": "cars", "text": "Should cities ban private cars from their centres?",
         "options": ["Agree strongly", "Agree", "Disagree", "Disagree strongly"]},
        {"text": "Would you trust a computer to decide | for you?", "options": ["Yes", "No", "It depends"]},
    ]}))
    with open(tmp_path / "q.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "text", "option_1", "option_2", "option_3", "option_4"])
        writer.writerow(["cars", "Should cities ban private cars from their centres?", "Agree strongly", "Agree",
                         "Disagree", "Disagree strongly"])
        writer.writerow(["", "Would you trust a computer to decide | for you?", "Yes", "No", "It depends", ""])
    for name in ("q.json", "q.csv"):
        assert [(q.id, q.text, q.options) for q in read_questions(tmp_path / name)] == expected


ENTRY_ERRORS = [
    ("options: []", "field 'options': has no options"),
    ("options: [Yes]", "field 'options': has only one option ('Yes')"),
    ("options: [" + ", ".join(f"o{i}" for i in range(27)) + "]", "field 'options': has 27 options; at most 26"),
    ("options: [Yes, No, 'Yes']", "field 'options': option 'Yes' is repeated (positions 0 and 2)"),
    ("options: ['(A)Yes', '(B)No']", "field 'options': option 0 '(A)Yes' has a '(L)' prefix"),
    ("options: [Yes, '  ']", "field 'options': option 1 is empty"),
]


@pytest.mark.parametrize("options_line, message", ENTRY_ERRORS)
def test_bad_options_name_the_entry(tmp_path, options_line, message):
    from simlab.simulate import SimulationInputError, read_questions

    path = tmp_path / "bad.yaml"
    path.write_text(f"- text: fine\n  options: [a, b]\n- id: second\n  text: Is it?\n  {options_line}\n")
    with pytest.raises(SimulationInputError) as err:
        read_questions(path)
    assert str(err.value).startswith(f"{path}: entry 1 (id 'second'): ") and message in str(err.value)


@pytest.mark.parametrize("content, message", [
    ("- text: '  '\n  options: [a, b]\n", "entry 0: field 'text': is empty"),
    ("- id: x\n  text: ''\n  options: [a, b]\n", "entry 0 (id 'x'): field 'text': is empty"),
    ("- id: x\n  options: [a, b]\n", "entry 0 (id 'x'): field 'text': missing"),
    ("- id: x\n  text: Is it?\n", "entry 0 (id 'x'): field 'options': missing"),
    ("- id: x\n  text: Is it?\n  options: [a, b]\n  answer: a\n", "entry 0: field 'answer': unknown field"),
    ("- id: x\n  text: A?\n  options: [a, b]\n- id: x\n  text: B?\n  options: [a, b]\n",
     "entry 1 (id 'x'): field 'id': repeats the id of entry 0"),
    ("[]\n", "has no questions"),
])
def test_bad_entries_name_the_entry_and_field(tmp_path, content, message):
    from simlab.simulate import SimulationInputError, read_questions

    path = tmp_path / "bad.yaml"
    path.write_text(content)
    with pytest.raises(SimulationInputError) as err:
        read_questions(path)
    assert str(err.value).startswith(str(path)) and message in str(err.value)


def test_unknown_country_suggests_close_names(tiny_llama_dir, shared_data):
    from simlab.simulate import SimulationInputError, Simulator

    sim = Simulator({"path": str(tiny_llama_dir)}, data_root=shared_data)
    with pytest.raises(SimulationInputError, match=r"unknown country 'Japn' \(position 1\); did you mean 'Japan'"):
        sim.predict("Is it?", ["Yes", "No"], ["Kenya", "Japn"])
    with pytest.raises(SimulationInputError, match=r"unknown country 'south korea'.*'South Korea'"):
        sim.predict("Is it?", ["Yes", "No"], ["south korea"])
    with pytest.raises(SimulationInputError, match="country 'Kenya' is listed twice"):
        sim.predict("Is it?", ["Yes", "No"], ["Kenya", "Kenya"])


def test_cli_unknown_country_is_a_clear_error(tiny_llama_dir, questions_file, shared_data, tmp_path):
    result = run_py(
        "task=simulate", "model=hf", f"model.path={tiny_llama_dir}", f"simulate.input={questions_file}",
        "simulate.countries=[Japan,Kenia]", f"data.root={shared_data}", f"hydra.run.dir={tmp_path / 'out'}",
    )
    assert result.returncode != 0
    assert "simulate.countries: unknown country 'Kenia' (position 1); did you mean 'Kenya'" in result.stderr
    assert not (tmp_path / "out" / "simulation.csv").exists()


def test_too_long_prompt_is_an_error_never_truncated(tiny_llama_dir, shared_data, tmp_path):
    from simlab.data import PromptTooLongError  # the DataModule's class: one class for both raise-sites
    from simlab.simulate import Simulator, read_questions

    sim = Simulator({"path": str(tiny_llama_dir)}, data_root=shared_data)
    assert sim.max_length == 4096  # the tiny model's max_position_embeddings
    path = tmp_path / "long.yaml"
    path.write_text("- id: short\n  text: Is it?\n  options: [a, b]\n- id: long\n  text: '"
                    + "the people think " * 3000 + "'\n  options: [a, b]\n")
    with pytest.raises(PromptTooLongError, match=rf"{path}: entry 1 \(id 'long'\): field 'text': the prompt for Japan "
                                                 r"has \d+ tokens, more than the limit of 4096"):
        sim.predict_questions(read_questions(path), ["Japan"])


def test_observed_countries_are_the_prior_for_the_others(tiny_llama_dir, shared_data, tmp_path, questions_file):
    """We surveyed two countries; the others are simulated around what they answered, and the surveyed ones show
    what they answered (marked observed), not a simulation of it."""
    from simlab.simulate import Simulator, read_observed, read_questions

    observed = tmp_path / "observed.csv"
    observed.write_text("question_id,country,letter,share\n" + "".join(
        f"cars,{c},{l},{s}\n" for c, shares in (("Japan", (70, 20, 5, 5)), ("Kenya", (10, 20, 30, 40)))
        for l, s in zip("ABCD", shares)), encoding="utf-8")
    questions = read_questions(questions_file)
    known = ["Japan", "Kenya", "Brazil"]
    rows = read_observed(observed, questions, known)
    assert {(r.question_id, r.country, r.survey) for r in rows} == {("cars", "Japan", "simulate"),
                                                                    ("cars", "Kenya", "simulate")}
    model = {"path": str(tiny_llama_dir)}
    plain = Simulator(model, data_root=shared_data, known_countries=known).predict_questions(questions[:1], known)
    anchored = Simulator.from_config({"model": {"loader": {"path": str(tiny_llama_dir)}, "prompt_style": "plain"},
                                      "data": {"root": str(shared_data)}}, known_countries=known, observed=rows)
    frame = anchored.predict_questions(questions[:1], known)
    share = {c: frame[frame["country"] == c]["share"].to_numpy() for c in known}
    base = {c: plain[plain["country"] == c]["share"].to_numpy() for c in known}
    # q ∝ prior · p_model: Brazil's prior is the mean of Japan and Kenya
    expected = np.asarray([0.4, 0.2, 0.175, 0.225]) * 0.99 + 0.0025
    expected = expected * base["Brazil"] / (expected * base["Brazil"]).sum()
    assert share["Brazil"] == pytest.approx(expected, abs=1e-5)
    assert share["Japan"] == pytest.approx([0.7, 0.2, 0.05, 0.05])
    assert share["Kenya"] == pytest.approx([0.1, 0.2, 0.3, 0.4])
    assert {c: set(frame[frame["country"] == c]["source"]) for c in known} == {
        "Japan": {"observed"}, "Kenya": {"observed"}, "Brazil": {"simulated"}}

    bad = tmp_path / "bad.csv"
    bad.write_text("question_id,country,letter,share\ncars,Japan,A,50\ncars,Japan,B,20\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad.csv: .*Japan: letters \['A', 'B'\], expected all of"):
        read_observed(bad, questions, known)


def test_csv_cells_a_spreadsheet_would_run_are_escaped():
    import pandas as pd

    from simlab.simulate.outputs import spreadsheet_safe

    frame = pd.DataFrame({"option": ["=HYPERLINK(\"x\")", "+1", "-2", "@SUM(A1)", "Yes", "a=b"], "share": [0.1] * 6})
    safe = spreadsheet_safe(frame)
    assert list(safe["option"]) == ["'=HYPERLINK(\"x\")", "'+1", "'-2", "'@SUM(A1)", "Yes", "a=b"]
    assert list(safe["share"]) == [0.1] * 6 and list(frame["option"])[0].startswith("=")  # the frame is unchanged


def test_observed_files_that_say_nothing_or_too_much_are_refused(tmp_path, questions_file):
    from simlab.simulate import read_observed, read_questions

    questions, known = read_questions(questions_file), ["Japan", "Kenya"]
    header_only = tmp_path / "header.csv"
    header_only.write_text("question_id,country,letter,share\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"header.csv: no surveyed cells \(only a header\)"):
        read_observed(header_only, questions, known)
    extra = tmp_path / "extra.csv"
    extra.write_text("question_id,country,letter,share\ncars,Japan,A,50,oops\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"extra.csv: line 2: 1 cell\(s\) more than the header's 4"):
        read_observed(extra, questions, known)


def test_an_empty_country_list_is_an_error_not_every_country(questions_file, tmp_path):
    from simlab.simulate import simulate_task

    with pytest.raises(ValueError, match=r"simulate.countries=\[\] names no country"):
        simulate_task({"simulate": {"input": str(questions_file), "countries": []}, "data": {"root": None}},
                      tmp_path)
