"""scripts/readme_figure.py on a tiny run folder: the rows it picks, their labels, and an image without paths."""

import importlib.util
import json
from pathlib import Path

import matplotlib.text
import pytest
import yaml

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "readme_figure.py"
spec = importlib.util.spec_from_file_location("readme_figure", SCRIPT)
readme_figure = importlib.util.module_from_spec(spec)
spec.loader.exec_module(readme_figure)

QUESTIONS = {  # id: (text as in the data, options)
    "1": ("For each of the following aspects, indicate how important it is in your life?- Family \n"
          "Here are the options: \n", ["(A)Very important", "(B)Rather important", "(C)Not very important"]),
    "2": ("How interested would you say you are in politics? \nHere are the options: \n",
          ["(A)Very interested", "(B)Not interested"]),
    "3": ("On a scale from 1 to 8, how happy are you? \nHere are the options: \n",
          [f"({chr(65 + i)}){i + 1}" for i in range(8)]),
}
COUNTRIES = ["Chile", "Peru", "Kenya"]


def _row(qid, country):
    text, options = QUESTIONS[qid]
    shares = {chr(65 + i): 1.0 / len(options) for i in range(len(options))}
    return {"id": qid, "instruction": f"How would someone from {country} answer the following question:\n\n",
            "input": text, "options": options, "options_dist": shares, "data_type": "test_1"}


def _prediction(qid, country, **extra):
    k = len(QUESTIONS[qid][1])
    human = [float(i + 1) for i in range(k)]
    human = [h / sum(human) for h in human]
    return {"subset": "S", "country": country, "question_id": qid, "letters": [chr(65 + i) for i in range(k)],
            "human": human, "predicted": human[::-1], **extra}


@pytest.fixture
def run(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "test.json").write_text(json.dumps([_row(q, c) for q in QUESTIONS for c in COUNTRIES]))
    folder = tmp_path / "some_machine_path" / "run"
    folder.mkdir(parents=True)
    config = {"data": {"root": str(data), "files": ["test.json"], "subset_names": {"test_1": "S"}}}
    (folder / "config_resolved.yaml").write_text(yaml.safe_dump(config))
    records = [_prediction(q, c) for q in QUESTIONS for c in COUNTRIES]
    (folder / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return folder


def test_picks_are_seeded_and_of_different_questions_and_countries(run):
    records = [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()]
    first = readme_figure.pick_rows(records, 2, seed=3, max_options=6)
    assert first == readme_figure.pick_rows(records, 2, seed=3, max_options=6)
    assert len({r["question_id"] for r in first}) == 2 and len({r["country"] for r in first}) == 2
    assert all(r["question_id"] != "3" for r in first)  # 8 options > max_options
    assert len(readme_figure.pick_rows(records, 5, seed=0, max_options=8)) == 3  # one row per question at most
    with pytest.raises(ValueError, match="at most 1 options"):
        readme_figure.pick_rows(records, 2, seed=0, max_options=1)


def test_question_text_and_labels_follow_the_data(run):
    texts = readme_figure.survey_texts(yaml.safe_load((run / "config_resolved.yaml").read_text()), None)
    question, labels = texts[("S", "Peru", "1")]
    assert question == "For each of the following aspects, indicate how important it is in your life?- Family"
    assert labels == ("Very important", "Rather important", "Not very important")
    assert readme_figure.heading_lines(question)[-1] == "→ Family"
    shuffled = _prediction("1", "Peru", option_order=[2, 0, 1])
    assert readme_figure.option_labels(shuffled, labels) == ["Not very important", "Very important",
                                                              "Rather important"]


def test_the_figure_names_countries_and_options_but_no_path(run, tmp_path):
    records = [_prediction("1", "Chile"), _prediction("2", "Kenya")]
    texts = readme_figure.survey_texts(yaml.safe_load((run / "config_resolved.yaml").read_text()), None)
    fig = readme_figure.draw(records, texts, "simlab")
    shown = "\n".join(t.get_text() for t in fig.findobj(matplotlib.text.Text))
    for expected in ("Chile", "Kenya", "→ Family", "Very interested", "people (survey)", "simlab", "1 − JSD"):
        assert expected in shown
    assert str(tmp_path) not in shown and "some_machine_path" not in shown and "/" not in shown


def test_main_writes_the_png_and_user_errors_are_one_line(run, tmp_path, capsys):
    out = tmp_path / "docs" / "figures" / "predicted_vs_human.png"
    assert readme_figure.main([str(run), "--out", str(out), "--rows", "2", "--seed", "1"]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and str(tmp_path).encode() not in out.read_bytes()
    assert readme_figure.main([str(tmp_path / "nowhere"), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("readme_figure: ") and "predictions.jsonl" in err and "\n" not in err
