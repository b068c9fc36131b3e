"""The README's figure: human vs predicted answer shares for a few (question, country) rows of one run.

    python scripts/readme_figure.py <run dir> --out docs/figures/predicted_vs_human.png [--rows 4] [--seed 0]

The rows are drawn with ``--seed`` from the run's predictions.jsonl (one country per question, questions with at
most ``--max-options`` options, optionally one ``--subset``); the question text and option labels come from the
survey data files the run's config_resolved.yaml names (under ``--data-root``, else the run's data.root, else the
default data root). The image names no run folder or other machine path: only questions, options and countries.
Run it from the repository root (``PYTHONPATH=.`` if simlab is not installed).
"""

from __future__ import annotations

import argparse
import random
import re
import sys
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from simlab.data.rows import read_rows  # noqa: E402
from simlab.data.selection import data_file  # noqa: E402
from simlab.metrics.registry import one_minus_jsd  # noqa: E402
from simlab.paths import data_root  # noqa: E402
from simlab.runs.rundir import RunDir  # noqa: E402

# how a question text ends before its options in the paper's data (English, Chinese): not part of the question
_OPTIONS_INTRO = re.compile(r"\s*(Here are the options:|以下是选项：)\s*$")
# a battery question: the shared stem, then "- <item>" after its last sentence ("...at all?- Family")
_BATTERY_ITEM = re.compile(r"^(?P<stem>.*[.?!])\s*-\s*(?P<item>[^.?!]+)$")


def question_text(raw: str) -> str:
    """The question as a reader wants it: without the data's trailing "Here are the options:" line."""
    return " ".join(_OPTIONS_INTRO.sub("", raw).split())


def survey_texts(config: dict, root: str | None) -> dict[tuple[str, str, str], tuple[str, tuple[str, ...]]]:
    """(subset, country, question id) -> (question text, option labels in the data's order), from the data
    files the run read."""
    data = config.get("data") or {}
    for key in ("files", "subset_names"):
        if not data.get(key):
            raise ValueError(f"the run's config_resolved.yaml has no data.{key}: cannot find the question texts")
    folder = data_root(root if root is not None else data.get("root"))
    kwargs = {"country_pattern": data["country_pattern"]} if data.get("country_pattern") else {}
    texts = {}
    for name in data["files"]:
        # drop_invalid: a row the run dropped has no prediction, so it is never looked up here
        loaded = read_rows(data_file(name, folder), subset_names=data["subset_names"], drop_invalid=True,
                           renormalize=bool(data.get("renormalize")), **kwargs)
        for row in loaded.rows:
            texts[(row.subset, row.country, str(row.question_id))] = (question_text(row.question), row.labels)
    return texts


def pick_rows(records: list[dict], count: int, seed: int, max_options: int, subset: str | None = None) -> list[dict]:
    """``count`` records, each of a different question (and, while there are enough, a different country),
    drawn with ``seed`` among those with 2..``max_options`` options (of ``subset`` when given)."""
    pool = [r for r in records if (subset is None or r["subset"] == subset) and len(r["letters"]) <= max_options]
    if not pool:
        where = f"subset {subset}" if subset else "the run"
        raise ValueError(f"no row of {where} has at most {max_options} options (--max-options, --subset)")
    random.Random(seed).shuffle(pool)
    picked, questions, countries = [], set(), set()
    for strict in (True, False):  # first distinct countries too, then any country
        for record in pool:
            if len(picked) == count:
                break
            if record["question_id"] in questions or (strict and record["country"] in countries):
                continue
            picked.append(record)
            questions.add(record["question_id"])
            countries.add(record["country"])
    return picked


def heading_lines(question: str, width: int = 70, stem_lines: int = 3) -> list[str]:
    """The question wrapped to ``width``; a long stem is cut to ``stem_lines`` lines ("..."), but a battery
    question's item ("- Family") is always shown, on its own line, since it is what the row asks about."""
    match = _BATTERY_ITEM.match(question)
    stem, item = (match["stem"], match["item"].strip()) if match else (question, None)
    lines = textwrap.wrap(stem, width)
    if len(lines) > stem_lines:
        lines = lines[:stem_lines]
        lines[-1] = lines[-1][: width - 3].rstrip() + "..."
    if item:
        lines += textwrap.wrap(f"→ {item}", width)
    return lines


def option_labels(record: dict, labels: tuple[str, ...]) -> list[str]:
    """The labels in the order the record's shares are in (the run may have shown the options shuffled)."""
    order = record.get("option_order")
    shown = [labels[i] for i in order] if order else list(labels)
    if len(shown) != len(record["letters"]):
        raise ValueError(f"{record['country']}, question {record['question_id']}: the data has {len(labels)} "
                         f"options, the prediction {len(record['letters'])}")
    return shown


def draw(picks: list[dict], texts: dict, predicted_name: str = "predicted", title: str | None = None):
    """One panel per picked row: grouped bars of the human and predicted shares per option; returns the figure."""
    columns = 2 if len(picks) > 1 else 1
    rows = -(-len(picks) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(6.2 * columns, 3.6 * rows), squeeze=False, layout="constrained")
    for ax in axes.flat[len(picks):]:
        ax.set_visible(False)
    for ax, record in zip(axes.flat, picks):
        key = (record["subset"], record["country"], str(record["question_id"]))
        if key not in texts:
            raise ValueError(f"{record['country']}, question {record['question_id']} ({record['subset']}) is not in "
                             f"the run's data files: cannot label it (--data-root)")
        question, labels = texts[key]
        labels = option_labels(record, labels)
        human = np.asarray(record["human"], dtype=np.float64)
        predicted = np.asarray(record["predicted"], dtype=np.float64)
        x = np.arange(len(labels))
        ax.bar(x - 0.2, human, 0.4, label="people (survey)", color="#4C72B0")
        ax.bar(x + 0.2, predicted, 0.4, label=predicted_name, color="#DD8452")
        wrap = max(8, 70 // len(labels))
        ax.set_xticks(x, ["\n".join(textwrap.wrap(label, wrap)[:3]) for label in labels], fontsize=8)
        ax.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0, decimals=0))
        ax.set_ylim(0, min(1.0, 1.15 * max(human.max(), predicted.max())))
        ax.spines[["top", "right"]].set_visible(False)
        score = float(one_minus_jsd(human / human.sum(), predicted / predicted.sum()))
        heading = heading_lines(question)
        ax.set_title(f"{record['country']}   (1 − JSD {score:.2f})\n" + "\n".join(heading), fontsize=8.5, loc="left")
    axes.flat[0].set_ylabel("share of answers")
    handles, names = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="outside upper right", ncol=2, frameon=False, fontsize=9)
    fig.suptitle(title or "Answer shares: people vs the simulator, per question and country", fontsize=11,
                 x=0.01, ha="left")
    return fig


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python scripts/readme_figure.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", help="a run folder with predictions.jsonl and config_resolved.yaml")
    parser.add_argument("--out", required=True, help="the PNG to write, e.g. docs/figures/predicted_vs_human.png")
    parser.add_argument("--rows", type=int, default=4, help="how many (question, country) panels (default 4)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the row draw (default 0)")
    parser.add_argument("--subset", help="draw only from this subset, e.g. C2-Q1 (default: every tested subset)")
    parser.add_argument("--max-options", type=int, default=6, help="skip questions with more options (default 6)")
    parser.add_argument("--name", default="predicted", help="legend name of the predictions (default 'predicted')")
    parser.add_argument("--title", help="the figure's title")
    parser.add_argument("--data-root", help="survey data root (default: the run's data.root, else the default)")
    args = parser.parse_args(argv)
    if args.rows < 1:
        parser.error("--rows must be at least 1")
    try:
        run = RunDir(args.run_dir)
        picks = pick_rows(run.read_predictions(), args.rows, args.seed, args.max_options, args.subset)
        texts = survey_texts(run.read_config(), args.data_root)
        fig = draw(picks, texts, args.name, args.title)
    except (FileNotFoundError, ValueError) as err:
        print(f"readme_figure: {err}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=130, metadata={"Software": None})
    plt.close(fig)
    for record in picks:
        print(f"{record['subset']}  {record['country']}  question {record['question_id']}")
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
