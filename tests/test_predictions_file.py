"""predictions.jsonl has one owner (simlab.runs.predictions): the record of a row is defined once, written and
read back unchanged, keyed by row to compare runs, and checked against the rows to score them again."""

import json
import re
from pathlib import Path

import pytest

from simlab.data.rows import SurveyRow
from simlab.runs import predictions as predictions_file
from simlab.runs.rundir import RunDir


def _row(subset, question, country, index, target=(0.8, 0.2), option_order=None):
    return SurveyRow(subset, question, country, "", f"question {question}", ("(A)yes", "(B)no"), ("A", "B"), target,
                     None, "f", index, option_order=option_order)


ROWS = {"S1": [_row("S1", "1", "Japan", 0), _row("S1", "1", "Kenya", 1, (0.3, 0.7), option_order=(1, 0))],
        "S2": [_row("S2", "2", "Japan", 2)]}
PREDICTED = {"S1": [[0.6, 0.4], [0.1, 0.9]], "S2": [[0.5, 0.5]]}


def test_written_records_read_back_unchanged_in_row_order(tmp_path):
    run = RunDir(tmp_path)
    raw = {"S1": [[0.7, 0.3], [0.2, 0.8]], "S2": [[0.4, 0.6]]}
    assert run.write_predictions(ROWS, PREDICTED, predicted_uncalibrated=raw) == 3
    records = list(predictions_file.prediction_records(ROWS, PREDICTED, predicted_uncalibrated=raw))
    assert run.read_predictions() == records and run.count_predictions() == 3
    assert [r["country"] for r in records] == ["Japan", "Kenya", "Japan"]
    assert records[1]["option_order"] == [1, 0] and "option_order" not in records[0]
    assert records[1]["human"] == [0.3, 0.7] and records[1]["predicted_uncalibrated"] == [0.2, 0.8]
    assert run.read_predictions("S2") == records[2:]
    assert run.predictions_for_rows(ROWS) == PREDICTED
    with pytest.raises(RuntimeError, match="subset S2: 0 predictions for 1 rows"):
        run.write_predictions(ROWS, {"S2": []})
    assert run.count_predictions() == 3  # the refused write left the old file whole


def test_records_by_row_refuse_a_row_seen_twice(tmp_path):
    run = RunDir(tmp_path)
    run.write_predictions(ROWS, PREDICTED)
    assert list(run.records_by_row("S1")) == [("Japan", "1"), ("Kenya", "1")]
    assert run.records_by_row("S3") == {}
    lines = run.predictions_file.read_text().splitlines()
    run.predictions_file.write_text("\n".join([*lines, lines[0]]) + "\n")
    with pytest.raises(ValueError, match=r"line 4: row \('Japan', '1'\) of subset 'S1' appears twice"):
        run.records_by_row("S1")


def test_predictions_for_rows_check_every_line_against_its_row(tmp_path):
    run = RunDir(tmp_path)
    run.write_predictions(ROWS, PREDICTED)
    lines = [json.loads(line) for line in run.predictions_file.read_text().splitlines()]

    def rewrite(records):
        run.predictions_file.write_text("".join(json.dumps(r) + "\n" for r in records))

    rewrite([lines[1], lines[0], lines[2]])
    with pytest.raises(ValueError, match=r"line 1: field 'country' is 'Kenya', but row 0 of S1 has 'Japan'"):
        run.predictions_for_rows(ROWS)
    rewrite([lines[0], {**lines[1], "human": [0.5, 0.5]}, lines[2]])
    with pytest.raises(ValueError, match="line 2: field 'human' differs from row 1 of S1"):
        run.predictions_for_rows(ROWS)
    rewrite(lines[:1] + lines[2:])
    with pytest.raises(ValueError, match="1 predictions for the 2 rows of S1"):
        run.predictions_for_rows(ROWS)
    rewrite(lines)
    with pytest.raises(ValueError, match="line 3: subset 'S2' is not in the run's data config"):
        run.predictions_for_rows({"S1": ROWS["S1"]})


def test_copy_keeps_the_bytes(tmp_path):
    source, target = RunDir(tmp_path / "a"), RunDir(tmp_path / "b")
    source.path.mkdir(), target.path.mkdir()
    source.write_predictions(ROWS, PREDICTED)
    predictions_file.copy_predictions(source.predictions_file, target.predictions_file)
    assert target.predictions_file.read_bytes() == source.predictions_file.read_bytes()


def test_no_module_reads_or_writes_predictions_jsonl_but_its_owner():
    package = Path(predictions_file.__file__).resolve().parents[1]
    owner = {"runs/predictions.py", "runs/rundir.py", "runs/names.py"}
    direct = re.compile(r"PREDICTIONS_FILE|predictions_file\.(read_|open|write_)|json\.loads\([^)]*predictions")
    offenders = [str(p.relative_to(package)) for p in package.rglob("*.py")
                 if p.relative_to(package).as_posix() not in owner and direct.search(p.read_text(encoding="utf-8"))]
    assert offenders == []
